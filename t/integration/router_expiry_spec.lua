-- t/integration/router_expiry_spec.lua - what the router tells a sender whose mail waits (SPEC section 6):
-- routing.delay_warning sends one "Delayed Mail" report (RFC 3464, Action: delayed), and only one; past
-- routing.max_queue_time the recipient bounces with 4.4.7. The next hop refuses connections throughout; the
-- sender is a local user, so the reports land in a Maildir.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local socket = require "socket"

-- reports(srv, subject) -> the files in jdoe@example.test's Maildir whose Subject is subject
local function reports(srv, subject)
  local out = {}
  for _, f in ipairs(srv:maildir_files("jdoe")) do
    if f.content:find("\nSubject: " .. subject .. "\n", 1, true) then out[#out + 1] = f end
  end
  return out
end

local DELAYED = "Delayed Mail (still being retried)"
local BOUNCED = "Undelivered Mail Returned to Sender"

describe("a next hop that refuses connections, with routing.delay_warning = 2 and max_queue_time = 5", function()
  local srv, closed

  setup(function()
    closed = "[127.0.0.51]:" .. sink.free_port { "127.0.0.51" }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 1 }, delay_warning = 2, max_queue_time = 5, routes = { ["late.test"] = closed } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("sends the sender one Delayed Mail report with Action: delayed after delay_warning, and only one", function()
    local mark = srv:log_mark()
    local t0 = socket.gettime()
    local qid = sink.send(srv, "jdoe@example.test", { "a@late.test" }, "slow one")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<a@late.test>", "status=deferred" }, 5, mark))
    server.wait_until(function() return #reports(srv, DELAYED) >= 1 end, 5, 0.05)
    local warned = reports(srv, DELAYED)
    assert.equal(1, #warned, srv:log():sub(mark + 1))
    assert.truthy(socket.gettime() - t0 >= 1.9, "not before delay_warning")
    local text = warned[1].content
    assert.truthy(text:find("^Return%-Path: <>\n"), text)
    assert.truthy(text:find("\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.test>\n", 1, true), text)
    assert.truthy(text:find("\nContent-Type: multipart/report; report-type=delivery-status;", 1, true), text)
    assert.truthy(text:find("THIS IS A WARNING ONLY", 1, true), text)
    assert.truthy(text:find("\nFinal-Recipient: rfc822; a@late.test\n", 1, true), text)
    assert.truthy(text:find("\nAction: delayed\n", 1, true), text)
    assert.truthy(text:find("\nStatus: 4%.%d+%.%d+\n"), text)
    assert.truthy(text:find("\nDiagnostic%-Code: [^\n]*Connection refused"), text)
    assert.truthy(text:find("\nWill%-Retry%-Until: "), text)
    assert.truthy(text:find("\nSubject: slow one\n", 1, true), "the report carries the original header")
    -- two more attempts at least (retry every second), still deferred, and no second warning
    local attempts = sink.count_lines(srv, { qid .. ": to=<a@late.test>", "status=deferred" }, mark)
    assert.truthy(server.wait_until(function()
      return sink.count_lines(srv, { qid .. ": to=<a@late.test>", "status=deferred" }, mark) >= attempts + 2
    end, 4, 0.05), srv:log():sub(mark + 1))
    assert.equal(1, #reports(srv, DELAYED), "exactly one warning")
    assert.equal(0, #reports(srv, BOUNCED), "no bounce yet")
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
    for _, f in ipairs(warned) do os.remove(f.path) end
  end)

  it("bounces with 4.4.7 once max_queue_time has passed, with the last reason, and then stops trying", function()
    local mark = srv:log_mark()
    local t0 = socket.gettime()
    local qid = sink.send(srv, "jdoe@example.test", { "b@late.test" }, "too slow")
    local line = sink.wait_line(srv, { qid .. ": to=<b@late.test>", "status=bounced" }, 10, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(socket.gettime() - t0 >= 4.9, "not before max_queue_time")
    assert.truthy(line:find("dsn=4.4.7,", 1, true), line)
    assert.truthy(line:find("message delayed too long in the queue", 1, true), line)
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    server.wait_until(function() return #reports(srv, BOUNCED) >= 1 end, 5, 0.05)
    local b = reports(srv, BOUNCED)
    assert.equal(1, #b)
    local text = b[1].content
    assert.truthy(text:find("\nFinal-Recipient: rfc822; b@late.test\n", 1, true), text)
    assert.truthy(text:find("\nAction: failed\n", 1, true), text)
    assert.truthy(text:find("\nStatus: 4.4.7\n", 1, true), text)
    assert.truthy(text:find("\nDiagnostic%-Code: [^\n]*message delayed too long in the queue"), text)
    assert.truthy(text:find("Connection refused", 1, true), "the last reason is in the report")
    socket.sleep(1.5)
    assert.equal(0, sink.count_lines(srv, { qid .. ": to=<b@late.test>" }, srv:log():find(qid .. ": removed", 1,
      true)), "no attempt after the bounce")
    assert.same({}, srv:queue_files())
  end)
end)

describe("a message with one recipient deferred and one that fails later, with delay_warning = 2 and retry = { 3 }",
  function()
    local srv, flip, closed, flip_port

    setup(function()
      closed = "[127.0.0.52]:" .. sink.free_port { "127.0.0.52" }
      flip_port = sink.free_port { "127.0.0.53" }
      srv = server.start { config = sink.router_config {
        routing = { retry = { 3 }, delay_warning = 2, routes = { ["late.test"] = closed,
                                                                 ["flip.test"] = "[127.0.0.53]:" .. flip_port } },
      } }
    end)

    teardown(function()
      if srv then srv:cleanup() end
      if flip then flip:stop() end
    end)

    it("gets the bounce and the delay warning of the same attempt, both at once", function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "jdoe@example.test", { "a@late.test", "b@flip.test" }, "mixed fates")
      assert.truthy(sink.wait_line(srv, { qid .. ": to=<b@flip.test>", "status=deferred" }, 5, mark))
      -- b's next hop comes up refusing b; the second attempt (at 3 s, past delay_warning) bounces b, warns about a
      flip = sink.start { ip = "127.0.0.53", port = flip_port, reject = { "RCPT" },
                          hard_reply = "550 5.1.1 b is unknown" }
      local line = sink.wait_line(srv, { qid .. ": to=<b@flip.test>", "status=bounced" }, 6, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      server.wait_until(function() return #reports(srv, BOUNCED) >= 1 and #reports(srv, DELAYED) >= 1 end, 5, 0.05)
      assert.equal(1, #reports(srv, DELAYED), "the warning about a@late.test\n" .. srv:log():sub(mark + 1))
      assert.equal(1, #reports(srv, BOUNCED), "the bounce about b@flip.test, without waiting for a rescan\n"
        .. srv:log():sub(mark + 1))
      assert.truthy(reports(srv, BOUNCED)[1].content:find("\nFinal-Recipient: rfc822; b@flip.test\n", 1, true))
      assert.truthy(reports(srv, DELAYED)[1].content:find("\nFinal-Recipient: rfc822; a@late.test\n", 1, true))
      assert.is_nil(reports(srv, DELAYED)[1].content:find("b@flip.test", 1, true),
        "the warning is only about the recipient still waiting")
    end)

    it("sends no second warning after a kill -9 and a restart (the warning is on record)", function()
      assert.equal(1, #reports(srv, DELAYED))
      srv:kill9()
      local mark = srv:log_mark()
      srv:restart()
      -- the restart tries the message at once, then again 3 s later
      assert.truthy(server.wait_until(function()
        return sink.count_lines(srv, { ": to=<a@late.test>", "status=deferred" }, mark) >= 2
      end, 6, 0.05), srv:log():sub(mark + 1))
      socket.sleep(0.3)
      assert.equal(1, #reports(srv, DELAYED), "still one warning")
      assert.equal(1, #reports(srv, BOUNCED), "and the bounce is not sent again")
    end)
  end)

describe("a message past routing.max_queue_time whose next hop came back", function()
  local srv, up
  local port = sink.free_port { "127.0.0.54" }

  setup(function()
    srv = server.start { config = sink.router_config {
      routing = { retry = { 4 }, max_queue_time = 2, routes = { ["back.test"] = "[127.0.0.54]:" .. port } },
    } }
  end)

  teardown(function()
    if up then up:stop() end
    if srv then srv:cleanup() end
  end)

  it("gets one last attempt, and is delivered instead of bounced (Postfix's maximal_queue_lifetime)", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "b@back.test" }, "late but alive")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<b@back.test>", "status=deferred" }, 5, mark))
    up = sink.start { ip = "127.0.0.54", port = port }      -- the next hop is back before the retry at 4 s
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<b@back.test>", "status=sent" }, 8, mark),
      srv:log():sub(mark + 1))
    assert.equal(1, #up:find("b@back.test"))
    assert.equal(0, #reports(srv, BOUNCED), "no bounce for a message that was delivered")
  end)
end)
