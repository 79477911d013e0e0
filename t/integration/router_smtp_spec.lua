-- t/integration/router_smtp_spec.lua - the router's SMTP delivery (SPEC section 6) against real next hops: Postfix's
-- smtp-sink (which dumps every transaction it takes), a second luamta, and a listener that never speaks. Next hops
-- are pinned with routing.routes ("[ip]:port", and "%DominoDomain" for a dotless domain) or routing.relay_host;
-- DNS-based routing is in router_dns_spec.lua. Each next hop listens on its own 127.0.0.x address.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local sink = require "t.helpers.sink"

-- bounces(srv, user) -> the reports in user@example.test's Maildir (messages from MAILER-DAEMON)
local function bounces(srv, user)
  local out = {}
  for _, f in ipairs(srv:maildir_files(user or "jdoe")) do
    if f.content:find("\nFrom: Mail Delivery System <MAILER-DAEMON@", 1, true) then out[#out + 1] = f end
  end
  return out
end

local function wait_bounces(srv, n, timeout, user)
  server.wait_until(function() return #bounces(srv, user) >= n end, timeout or 5, 0.05)
  return bounces(srv, user)
end

local function sorted(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c
end

describe("the router with next hops pinned by routing.routes", function()
  local srv, one, two, refuser, dropper, silent, nopipe, old, dotfail, mailsoft
  local PORT_CLOSED   -- a port where nothing listens on 127.0.0.26

  setup(function()
    one = sink.start { ip = "127.0.0.21", hostname = "one.sink.test" }
    two = sink.start { ip = "127.0.0.22", hostname = "two.sink.test" }
    refuser = sink.start { ip = "127.0.0.23", reject = { "RCPT" },
                           hard_reply = "550 5.1.1 No such user here (sink)" }
    dropper = sink.start { ip = "127.0.0.24", drop = { "." } }
    silent = sink.silent { ip = "127.0.0.25" }
    PORT_CLOSED = sink.free_port { "127.0.0.26" }
    nopipe = sink.start { ip = "127.0.0.28", args = { "-p" } }
    old = sink.start { ip = "127.0.0.29", reject = { "EHLO" } }
    dotfail = sink.start { ip = "127.0.0.30", reject = { "." }, hard_reply = "554 5.7.1 Message content rejected" }
    mailsoft = sink.start { ip = "127.0.0.38", tempfail = { "MAIL" }, soft_reply = "452 4.3.1 Insufficient storage" }
    srv = server.start { config = sink.router_config {
      routing = { routes = {
        ["one.test"] = one.literal,
        ["two.test"] = two.literal,
        ["refuse.test"] = refuser.literal,
        ["drop.test"] = dropper.literal,
        ["silent.test"] = silent.literal,
        ["closed.test"] = "[127.0.0.26]:" .. PORT_CLOSED,
        ["%AcmeEast"] = one.literal,
        ["nopipe.test"] = nopipe.literal,
        ["old.test"] = old.literal,
        ["dotfail.test"] = dotfail.literal,
        ["mailsoft.test"] = mailsoft.literal,
      } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    for _, s in pairs { one, two, refuser, dropper, silent, nopipe, old, dotfail, mailsoft } do s:stop() end
  end)

  it("delivers a local recipient to its Maildir and logs relay=local, status=sent", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "local only")
    local files = srv:wait_maildir("jdoe", nil, 1, 5)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("^Return%-Path: <alice@example%.org>\nDelivered%-To: jdoe@example%.test\n"),
      files[1].content)
    assert.truthy(files[1].content:find("\nSubject: local only\n", 1, true), files[1].content)
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<jdoe@example.test>, relay=local,", "dsn=2.0.0, status=sent" },
      5, mark), srv:log():sub(mark + 1))
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), "the message leaves the queue")
    os.remove(files[1].path)
  end)

  it("splits a message for three domains: the Maildir and one transaction per next hop with all its recipients",
    function()
      local mark = srv:log_mark()
      local rcpts = { "a1@one.test", "jdoe@example.test", "b1@two.test", "a2@one.test", "b2@two.test",
                      "a3@ONE.test" }
      local qid = sink.send(srv, "alice@example.org", rcpts, "three domains",
        "one body for all\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n")
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 10, mark), srv:log():sub(mark + 1))
      local got1, got2 = one:wait_messages(1, 2), two:wait_messages(1, 2)
      assert.equal(1, #got1, "one transaction to one.test's next hop")
      assert.equal(1, #got2, "one transaction to two.test's next hop")
      assert.same({ "a1@one.test", "a2@one.test", "a3@ONE.test" }, got1[1].rcpts)
      assert.same({ "b1@two.test", "b2@two.test" }, got2[1].rcpts)
      for _, m in ipairs { got1[1], got2[1] } do
        assert.equal("alice@example.org", m.sender, m.raw)
        assert.equal("mx.example.test", m.helo, "EHLO says server.hostname")
        assert.truthy(m.message:find("\nSubject: three domains\n", 1, true), m.raw)
        assert.truthy(m.message:find("\n\none body for all\n.leading dot\n..two dots\n.\nlast\n", 1, true),
          "the body arrives intact (dot-stuffed on the wire):\n" .. m.raw)
        assert.truthy(m.message:find("^Received: from client%.test"), "the message keeps our Received header")
      end
      local files = srv:wait_maildir("jdoe", nil, 1, 5)
      assert.equal(1, #files)
      assert.truthy(files[1].content:find("\nSubject: three domains\n", 1, true))
      for _, r in ipairs(rcpts) do
        local line = sink.log_line(srv, { qid .. ": to=<" .. r .. ">", "status=sent" }, mark)
        assert.truthy(line, "a status=sent line for " .. r .. "\n" .. srv:log():sub(mark + 1))
      end
      assert.truthy(sink.log_line(srv, { qid .. ": to=<b1@two.test>", "relay=127.0.0.22[127.0.0.22]:" .. two.port,
        "dsn=2.0.0" }, mark), srv:log():sub(mark + 1))
      os.remove(files[1].path)
    end)

  it("sends a dotless recipient domain along its %DominoDomain route", function()
    local before = #one:messages()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "jane@AcmeEast" }, "domino domain")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<jane@AcmeEast>", "status=sent" }, 5, mark),
      srv:log():sub(mark + 1))
    assert.equal(before + 1, #one:wait_messages(before + 1, 2))
    local got = one:find("jane@AcmeEast")
    assert.equal(1, #got)
    assert.same({ "jane@AcmeEast" }, got[1].rcpts)
  end)

  it("bounces a recipient the next hop refuses with 5xx: an RFC 3464 report lands in the sender's Maildir",
    function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "jdoe@example.test", { "nobody@refuse.test" }, "refused rcpt")
      local line = sink.wait_line(srv, { qid .. ": to=<nobody@refuse.test>", "status=bounced" }, 5, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find("dsn=5.1.1,", 1, true), line)
      assert.truthy(line:find("550 5.1.1 No such user here (sink)", 1, true), line)
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
      local b = wait_bounces(srv, 1, 5)
      assert.equal(1, #b, "one bounce")
      local text = b[1].content
      assert.truthy(text:find("^Return%-Path: <>\n"), "the bounce has the null envelope sender:\n" .. text)
      assert.truthy(text:find("\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.test>\n", 1, true), text)
      assert.truthy(text:find("\nTo: <jdoe@example.test>\n", 1, true), text)
      assert.truthy(text:find("\nSubject: Undelivered Mail Returned to Sender\n", 1, true), text)
      assert.truthy(text:find("\nContent-Type: multipart/report; report-type=delivery-status;", 1, true), text)
      assert.truthy(text:find("\nContent-Type: message/delivery-status\n", 1, true), text)
      assert.truthy(text:find("\nFinal-Recipient: rfc822; nobody@refuse.test\n", 1, true), text)
      assert.truthy(text:find("\nAction: failed\n", 1, true), text)
      assert.truthy(text:find("\nStatus: 5.1.1\n", 1, true), text)
      assert.truthy(text:find("\nDiagnostic%-Code: smtp; 550 5%.1%.1 No such user here %(sink%)"), text)
      assert.truthy(text:find("\nSubject: refused rcpt\n", 1, true), "the report carries the original header")
      assert.equal(0, #refuser:messages(), "no transaction was completed at the refusing next hop")
      os.remove(b[1].path)
    end)

  it("sends no bounce when the null sender's message fails (MAIL FROM:<>)", function()
    local mark = srv:log_mark()
    local before = #srv:maildir_files("postmaster") + #srv:maildir_files("jdoe")
    local qid = sink.send(srv, "", { "nobody@refuse.test" }, "bounce of a bounce")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<nobody@refuse.test>", "status=bounced" }, 5, mark),
      srv:log():sub(mark + 1))
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    assert.is_nil(sink.log_line(srv, "sender non-delivery notification", mark), srv:log():sub(mark + 1))
    require("socket").sleep(0.5)
    assert.equal(before, #srv:maildir_files("postmaster") + #srv:maildir_files("jdoe"))
    assert.same({}, srv:queue_files(), "nothing is left queued, no bounce either")
  end)

  it("defers when the next hop drops the connection after the message data, and delivers once it behaves",
    function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@example.org", { "x@drop.test", "y@drop.test" }, "dropped data")
      local line = sink.wait_line(srv, { qid .. ": to=<x@drop.test>", "status=deferred" }, 5, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find("lost connection while sending the message", 1, true), line)
      assert.truthy(line:find("dsn=4.4.2,", 1, true), line)
      assert.truthy(sink.log_line(srv, { qid .. ": to=<y@drop.test>", "status=deferred" }, mark))
      assert.equal(1, #dropper:wait_messages(1, 2), "the data reached the sink, which hung up before its reply")
      dropper:restart {}
      local got = dropper:wait_messages(1, 8)
      assert.equal(1, #got, "delivered on a retry")
      assert.same({ "x@drop.test", "y@drop.test" }, got[1].rcpts)
      assert.truthy(sink.wait_line(srv, { qid .. ": to=<x@drop.test>", "status=sent" }, 5, mark))
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
    end)

  it("defers with \"timed out\" in the log when the next hop accepts the connection and never speaks", function()
    local mark = srv:log_mark()
    local t0 = require("socket").gettime()
    local qid = sink.send(srv, "alice@example.org", { "x@silent.test" }, "silent hop")
    local line = sink.wait_line(srv, { qid .. ": to=<x@silent.test>", "status=deferred" }, 6, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("timed out while waiting for the greeting", 1, true), line)
    assert.truthy(require("socket").gettime() - t0 >= 1.5, "after routing.timeouts.reply (2 s), not before")
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
  end)

  it("defers when the next hop refuses connections, and logs why", function()
    local mark = srv:log_mark()
    local before = #bounces(srv, "jdoe")
    local qid = sink.send(srv, "jdoe@example.test", { "x@closed.test" }, "closed port")
    local line = sink.wait_line(srv, { qid .. ": to=<x@closed.test>", "status=deferred" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("connect failed: Connection refused", 1, true), line)
    assert.truthy(line:find("relay=none,", 1, true) or line:find("127.0.0.26", 1, true), line)
    require("socket").sleep(0.3)
    assert.equal(before, #bounces(srv, "jdoe"), "a deferral sends no bounce")
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
  end)

  it("retries after routing.retry[1], then retry[2], then retry[2] again (the last one repeats)", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "y@closed.test" }, "retry schedule")
    local function times()
      local out = {}
      for line in srv:log():sub(mark + 1):gmatch("[^\n]+") do
        if line:find(qid .. ": to=<y@closed.test>", 1, true) and line:find("status=deferred", 1, true) then
          local h, m, sec = line:match("T(%d+):(%d+):([%d.]+)")
          out[#out + 1] = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(sec)
        end
      end
      return out
    end
    assert.truthy(server.wait_until(function() return #times() >= 4 end, 8, 0.05), srv:log():sub(mark + 1))
    local t = times()
    local gaps = { t[2] - t[1], t[3] - t[2], t[4] - t[3] }
    local want = { 1, 2, 2 }
    for i = 1, 3 do
      assert.truthy(math.abs(gaps[i] - want[i]) < 0.5, ("gap %d: %.2f s, expected %d s"):format(i, gaps[i], want[i]))
    end
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
  end)

  it("sends MAIL, each RCPT and DATA one at a time to a next hop without PIPELINING, in one transaction", function()
    local mark = srv:log_mark()
    local rcpts = { "a@nopipe.test", "b@nopipe.test", "c@nopipe.test" }
    local qid = sink.send(srv, "alice@example.org", rcpts, "no pipelining")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    local got = nopipe:wait_messages(1, 2)
    assert.equal(1, #got)
    assert.same(rcpts, got[1].rcpts)
  end)

  it("falls back to HELO when the next hop refuses EHLO with 5xx", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@old.test" }, "old server")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<a@old.test>", "status=sent" }, 5, mark),
      srv:log():sub(mark + 1))
    local got = old:wait_messages(1, 2)
    assert.equal(1, #got)
    assert.equal("mx.example.test", got[1].helo)
    assert.truthy(got[1].raw:find("\nX%-Client%-Proto: SMTP\n"), got[1].raw)
  end)

  it("bounces every recipient of the transaction, in one report, when the next hop refuses the data with 5xx",
    function()
      local mark = srv:log_mark()
      local before = #bounces(srv)
      local qid = sink.send(srv, "jdoe@example.test", { "a@dotfail.test", "b@dotfail.test" }, "refused content")
      for _, r in ipairs { "a@dotfail.test", "b@dotfail.test" } do
        local line = sink.wait_line(srv, { qid .. ": to=<" .. r .. ">", "status=bounced" }, 5, mark)
        assert.truthy(line, srv:log():sub(mark + 1))
        assert.truthy(line:find("dsn=5.7.1,", 1, true), line)
      end
      local b = wait_bounces(srv, before + 1, 5)
      assert.equal(before + 1, #b)
      local report
      for _, f in ipairs(b) do
        if f.content:find("\nSubject: refused content\n", 1, true) then report = f.content end
      end
      assert.truthy(report, "the report about this message")
      assert.truthy(report:find("\nFinal-Recipient: rfc822; a@dotfail.test\n", 1, true), report)
      assert.truthy(report:find("\nFinal-Recipient: rfc822; b@dotfail.test\n", 1, true), report)
      assert.truthy(report:find("\nDiagnostic%-Code: smtp; 554 5%.7%.1 Message content rejected"), report)
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
    end)

  it("defers every recipient when the next hop answers MAIL FROM with 4xx", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@mailsoft.test", "b@mailsoft.test" }, "soft mail")
    for _, r in ipairs { "a@mailsoft.test", "b@mailsoft.test" } do
      local line = sink.wait_line(srv, { qid .. ": to=<" .. r .. ">", "status=deferred" }, 5, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find("452 4.3.1 Insufficient storage", 1, true), line)
      assert.truthy(line:find("dsn=4.3.1,", 1, true), line)
    end
    assert.is_nil(sink.log_line(srv, { qid, "status=bounced" }, mark))
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
  end)

  it("sends the bounce for a remote sender by SMTP, with MAIL FROM:<>", function()
    local mark = srv:log_mark()
    local before = #one:messages()
    local qid = sink.send(srv, "alice@one.test", { "nobody@refuse.test" }, "remote sender bounce")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<nobody@refuse.test>", "status=bounced" }, 5, mark))
    local got = one:wait_messages(before + 1, 5)
    assert.equal(before + 1, #got, srv:log():sub(mark + 1))
    local report = one:find("alice@one.test")
    assert.equal(1, #report)
    assert.equal("<>", report[1].mail:match("^(%S+)"), "the null envelope sender: " .. report[1].mail)
    assert.truthy(report[1].message:find("\nFinal%-Recipient: rfc822; nobody@refuse%.test\n"), report[1].raw)
    assert.truthy(report[1].message:find("\nSubject: Undelivered Mail Returned to Sender\n", 1, true))
  end)

  it("bounces an unknown local recipient with 5.1.1 when there is no smart host", function()
    local mark = srv:log_mark()
    local before = #bounces(srv)
    local qid = sink.send(srv, "jdoe@example.test", { "ghost@example.test" }, "unknown local")
    local line = sink.wait_line(srv, { qid .. ": to=<ghost@example.test>", "status=bounced" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.1.1,", 1, true), line)
    local b = wait_bounces(srv, before + 1, 5)
    assert.equal(before + 1, #b)
  end)

  it("bounces with 5.6.7 a message that needs SMTPUTF8 when the next hop does not offer it", function()
    local mark = srv:log_mark()
    local before = #bounces(srv)
    local c = smtp.session("127.0.0.1", srv.port)
    assert.equal(250, (c:cmd("MAIL FROM:<jdoe@example.test> SMTPUTF8")))
    assert.equal(250, (c:cmd("RCPT TO:<j\195\188rgen@one.test>")))
    assert.equal(354, (c:cmd("DATA")))
    c:send("Subject: utf8\r\n\r\nhi\r\n.\r\n")
    local code, lines = c:read_reply()
    c:close()
    assert.equal(250, code, lines and lines.text)
    local qid = lines[1]:match("queued as (%x+)")
    local line = sink.wait_line(srv, { qid .. ": to=<j\195\188rgen@one.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.6.7, status=bounced", 1, true), line)
    assert.equal(0, #one:find("j\195\188rgen@one.test"), "nothing was sent")
    assert.equal(before + 1, #wait_bounces(srv, before + 1, 5))
  end)
end)

describe("the router with routing.relay_host = \"[127.0.0.1]:PORT\"", function()
  local srv, relay, other

  setup(function()
    relay = sink.start { ip = "127.0.0.1", hostname = "relay.sink.test" }
    other = sink.start { ip = "127.0.0.27" }
    srv = server.start { config = sink.router_config {
      routing = { relay_host = relay.literal, routes = { ["pinned.test"] = other.literal } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if relay then relay:stop() end
    if other then other:stop() end
  end)

  it("sends every external recipient, whatever its domain, to the relay host in one transaction", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "x@far.test", "jdoe@example.test", "y@other.test" },
      "via the relay")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    local got = relay:wait_messages(1, 2)
    assert.equal(1, #got)
    assert.same({ "x@far.test", "y@other.test" }, sorted(got[1].rcpts))
    assert.truthy(sink.log_line(srv, { qid .. ": to=<x@far.test>", "relay=127.0.0.1[127.0.0.1]:" .. relay.port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
    assert.equal(1, #srv:wait_maildir("jdoe"), "the local recipient still goes to the Maildir")
    os.remove(srv:maildir_files("jdoe")[1].path)
  end)

  it("lets a routes entry win over the relay host", function()
    local mark = srv:log_mark()
    local before = #relay:messages()
    local qid = sink.send(srv, "alice@example.org", { "x@pinned.test" }, "pinned beats relay")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    assert.equal(1, #other:wait_messages(1, 2))
    assert.equal(before, #relay:messages())
  end)
end)

describe("a second luamta as the next hop: it greylists the first RCPT and knows only bob@remote.test", function()
  local srv, hop

  -- The next hop's first RCPT gets 451; every later one goes through (a module-level counter: one worker).
  local GREYLIST = [[
local mta = require "luamta"
local seen = 0
return { rcpt = function(s, rcpt)
  seen = seen + 1
  if seen == 1 then return mta.tempfail(451, "4.7.1 Greylisted, come back later") end
end }
]]

  setup(function()
    hop = server.start {
      config = {
        server = { hostname = "mx.remote.test",
                   rules = { "greylist", "connection", "filters", "sender", "relay", "recipient" } },
        local_domains = { "remote.test" },
        directory = { users = { { address = "bob@remote.test", name = "Bob" } } },
        inbound = { recipient = { verify_local = true } },
      },
      files = { ["rules/greylist.lua"] = GREYLIST },
    }
    srv = server.start { config = sink.router_config {
      routing = { routes = { ["remote.test"] = "[127.0.0.1]:" .. hop.port } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:cleanup() end
  end)

  it("is retried: the log shows status=deferred with the 451, then status=sent, and the mail arrives", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "bob@remote.test" }, "greylisted once")
    local deferred = sink.wait_line(srv, { qid .. ": to=<bob@remote.test>", "status=deferred" }, 5, mark)
    assert.truthy(deferred, srv:log():sub(mark + 1))
    assert.truthy(deferred:find("451 4.7.1 Greylisted, come back later", 1, true), deferred)
    assert.truthy(deferred:find("dsn=4.7.1,", 1, true), deferred)
    local sent = sink.wait_line(srv, { qid .. ": to=<bob@remote.test>", "status=sent" }, 8, mark)
    assert.truthy(sent, srv:log():sub(mark + 1))
    assert.truthy(sent:find("relay=127.0.0.1[127.0.0.1]:" .. hop.port, 1, true), sent)
    assert.truthy(sent:find("250 2.0.0 Ok: queued as ", 1, true), sent)
    local log = srv:log():sub(mark + 1)
    assert.truthy(log:find("status=deferred", 1, true) < log:find("status=sent", 1, true), "deferred before sent")
    local files = hop:wait_maildir("bob", "remote.test", 1, 5)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("\nSubject: greylisted once\n", 1, true), files[1].content)
    assert.truthy(files[1].content:find("^Return%-Path: <alice@example%.org>\n"), files[1].content)
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
    assert.same({}, srv:maildir_files("jdoe"), "no bounce, no warning")
  end)

  it("delivers the recipients it accepts and bounces the one it refuses with 5xx, from the same transaction",
    function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "jdoe@example.test", { "nobody@remote.test", "bob@remote.test" }, "half known")
      local bounced = sink.wait_line(srv, { qid .. ": to=<nobody@remote.test>", "status=bounced" }, 5, mark)
      assert.truthy(bounced, srv:log():sub(mark + 1))
      assert.truthy(bounced:find("dsn=5.1.1,", 1, true), bounced)
      assert.truthy(bounced:find("550 5.1.1 nobody@remote.test... No such user", 1, true), bounced)
      assert.truthy(sink.wait_line(srv, { qid .. ": to=<bob@remote.test>", "status=sent" }, 5, mark),
        srv:log():sub(mark + 1))
      local files = hop:wait_maildir("bob", "remote.test", 2, 5)
      assert.equal(2, #files)
      local b = srv:wait_maildir("jdoe", nil, 1, 5)
      assert.equal(1, #b)
      assert.truthy(b[1].content:find("\nFinal%-Recipient: rfc822; nobody@remote%.test\n"), b[1].content)
      assert.truthy(b[1].content:find("\nDiagnostic%-Code: smtp; 550 5%.1%.1 nobody@remote%.test%.%.%. No such user"),
        b[1].content)
      assert.is_nil(b[1].content:find("Final-Recipient: rfc822; bob@remote.test", 1, true), "bob was delivered")
    end)
end)

describe("routing.smart_host = \"[127.0.0.1]:PORT\"", function()
  local srv, smart

  setup(function()
    smart = sink.start { ip = "127.0.0.1", hostname = "smart.sink.test" }
    srv = server.start { config = sink.router_config { routing = { smart_host = smart.literal } } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if smart then smart:stop() end
  end)

  it("takes a local recipient the directory does not know; a known one still goes to its Maildir", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "ghost@example.test", "jdoe@example.test" }, "smart host")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    local got = smart:wait_messages(1, 2)
    assert.equal(1, #got)
    assert.same({ "ghost@example.test" }, got[1].rcpts)
    assert.equal(1, #srv:wait_maildir("jdoe"))
  end)
end)

describe("routing.max_per_domain = 1 with a slow next hop", function()
  local srv, slow

  setup(function()
    slow = sink.start { ip = "127.0.0.39", args = { "-w", "1" } }   -- one second before the 354 to DATA
    srv = server.start { config = sink.router_config {
      routing = { max_per_domain = 1, routes = { ["slow.test"] = slow.literal } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if slow then slow:stop() end
  end)

  -- connections() -> how many TCP connections to the slow next hop are established now
  local function connections()
    local out = server.run("ss -Htn state established dst " .. slow.address)
    local n = 0
    for _ in out:gmatch("[^\n]+") do n = n + 1 end
    return n
  end

  it("opens one connection at a time and still delivers every message", function()
    local mark = srv:log_mark()
    local qids = {}
    for i = 1, 3 do qids[i] = sink.send(srv, "alice@example.org", { "r" .. i .. "@slow.test" }, "slow " .. i) end
    local most = 0
    server.wait_until(function()
      most = math.max(most, connections())
      return #slow:messages() >= 3
    end, 10, 0.02)
    assert.equal(3, #slow:wait_messages(3, 2), srv:log():sub(mark + 1))
    assert.equal(1, most, "at most one connection to the next hop at a time")
    for i = 1, 3 do
      assert.truthy(sink.wait_line(srv, { qids[i] .. ": to=<r" .. i .. "@slow.test>", "status=sent" }, 5, mark))
    end
  end)
end)
