-- t/integration/router_queue_spec.lua - the queue as the administrator sees it (SPEC sections 2 and 6):
-- routing.smtp_outbound = false holds external recipients, `luamta queue list`, `list --json` and `show ID` print
-- them, and `hold`, `release`, `delete` and `flush` act on a message whose next hop is down (with a retry time
-- far away, so that only the command can make it go).
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local socket = require "socket"
local json = require "dkjson"

-- recipient_line(out, rcpt) -> the text after "<rcpt>" on its line of `queue list` output
local function recipient_line(out, rcpt)
  return out:match("\n%s+<" .. rcpt:gsub("%p", "%%%0") .. ">%s+([^\n]*)")
end

describe("routing.smtp_outbound = false", function()
  local srv, hop

  setup(function()
    hop = sink.start { ip = "127.0.0.41" }
    srv = server.start { config = sink.router_config {
      routing = { smtp_outbound = false, relay_host = hop.literal },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:stop() end
  end)

  local qid, mark

  it("holds an external recipient in the queue and delivers nothing for it, while the local one is delivered",
    function()
      mark = srv:log_mark()
      qid = sink.send(srv, "alice@example.org", { "x@outside.test", "jdoe@example.test" }, "held outbound",
        "line one\r\n.leading dot\r\n")
      local line = sink.wait_line(srv, { qid .. ": to=<x@outside.test>", "status=held" }, 5, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find("external delivery is off", 1, true), line)
      assert.equal(1, #srv:wait_maildir("jdoe"), "the local recipient is delivered")
      socket.sleep(0.5)
      assert.same({}, hop:messages(), "nothing reached the relay host")
      assert.same({ qid }, srv:queue_files())
    end)

  it("lists the held message: queue ID, size, sender, each recipient with its status and last reply", function()
    local out, rc = srv:luamta("queue list")
    assert.equal(0, rc, out)
    assert.matches("^" .. qid .. "%s+%d+ %a%a%a %a%a%a +%d+ %d%d:%d%d:%d%d  <alice@example%.org>\n", out)
    local x = recipient_line(out, "x@outside.test")
    assert.truthy(x, out)
    assert.truthy(x:find("^held"), "a held recipient says held, as the log does: " .. x)
    assert.truthy(x:find("external delivery is off", 1, true), x)
    assert.is_nil(x:find("4.3.2 4.3.2", 1, true), "the status code once: " .. x)
    local j = recipient_line(out, "jdoe@example.test")
    assert.truthy(j, out)
    assert.truthy(j:find("^delivered"), j)
    assert.truthy(out:find("\n%-%- 1 message in the queue\n"), out)
  end)

  it("lists the same with --json, for scripts", function()
    local out, rc = srv:luamta("queue list --json")
    assert.equal(0, rc, out)
    local list, _, err = json.decode(out)
    assert.is_nil(err, out)
    assert.equal(1, #list)
    local m = list[1]
    assert.equal(qid, m.id)
    assert.equal("alice@example.org", m.sender)
    assert.is_false(m.held)
    assert.equal("number", type(m.size))
    assert.truthy(math.abs(m.arrival - os.time()) < 60, "arrival is a Unix time")
    assert.equal(2, #m.recipients)
    assert.equal("x@outside.test", m.recipients[1].address)
    assert.truthy(m.recipients[1].status:find("external delivery is off", 1, true), m.recipients[1].status)
    assert.equal("jdoe@example.test", m.recipients[2].address)
    assert.truthy(m.recipients[2].status:find("^delivered"), m.recipients[2].status)
  end)

  it("shows one message: its envelope block, then the message as queued", function()
    local out, rc = srv:luamta("queue show " .. qid)
    assert.equal(0, rc, out)
    assert.matches("^" .. qid .. "%s+%d+ .-<alice@example%.org>\n", out)
    assert.truthy(recipient_line(out, "x@outside.test"), out)
    assert.truthy(out:find("\nReceived: from client.test", 1, true), out)
    assert.truthy(out:find("\nSubject: held outbound\r?\n"), out)
    assert.truthy(out:find("\n\r?\nline one\r?\n%.leading dot\r?\n"), "the body, unstuffed:\n" .. out)
    local none, rc2 = srv:luamta("queue show 00000000000000000000")
    assert.equal(1, rc2, none)
    assert.truthy(none:find("no message 00000000000000000000 in the queue", 1, true), none)
  end)

  it("delivers the held recipient once a reload turns smtp_outbound on", function()
    local cfg = server.merge(srv.config, { routing = { smtp_outbound = true } })
    server.write_file(srv.cfgfile, server.config_source(cfg))
    local m = srv:log_mark()
    srv:reload()
    local got = hop:wait_messages(1, 5)
    assert.equal(1, #got, srv:log():sub(m + 1))
    assert.same({ "x@outside.test" }, got[1].rcpts, "only the recipient still open")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, m), srv:log():sub(m + 1))
    assert.equal(1, #srv:maildir_files("jdoe"), "the local recipient is not delivered twice")
  end)
end)

describe("luamta queue hold, release, delete and flush, with the next hop down and retry = { 60 }", function()
  local srv, ip, port, hop

  setup(function()
    ip = "127.0.0.42"
    port = sink.free_port { ip }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 60 }, routes = { ["down.test"] = "[" .. ip .. "]:" .. port } },
    } }
  end)

  after_each(function()
    if hop then hop:stop() end
    hop = nil
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  -- deferred(rcpt, subject) -> the queue ID of a message to rcpt once its first attempt is deferred
  local function deferred(rcpt, subject)
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { rcpt }, subject)
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<" .. rcpt .. ">", "status=deferred" }, 5, mark),
      srv:log():sub(mark + 1))
    return qid
  end

  it("flush ID sends a deferred message now, long before its retry time", function()
    local qid = deferred("a@down.test", "flush me")
    hop = sink.start { ip = ip, port = port }
    local mark = srv:log_mark()
    local out, rc = srv:luamta("queue flush " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(out:find("^ok"), out)
    assert.equal(1, #hop:wait_messages(1, 5), srv:log():sub(mark + 1))
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<a@down.test>", "status=sent" }, 5, mark))
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
  end)

  it("hold ID takes the message out of the queue: listed with !, not delivered even by a flush", function()
    local qid = deferred("b@down.test", "hold me")
    local out, rc = srv:luamta("queue hold " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(out:find("^ok: held"), out)
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "moved out of queue/")
    assert.truthy(server.read_file(srv.spool .. "/hold/" .. qid), "into hold/")
    local list = srv:luamta("queue list")
    assert.matches("^" .. qid .. "! ", list)
    assert.truthy(list:find("luamta queue release ID", 1, true), list)
    local j = json.decode((srv:luamta("queue list --json")))
    assert.equal(1, #j)
    assert.is_true(j[1].held)
    hop = sink.start { ip = ip, port = port }
    local mark = srv:log_mark()
    out, rc = srv:luamta("queue flush")
    assert.equal(0, rc, out)
    out, rc = srv:luamta("queue flush " .. qid)
    socket.sleep(1.5)
    assert.same({}, hop:messages(), "a held message is not delivered")
    assert.is_nil(sink.log_line(srv, qid .. ": to=", mark), srv:log():sub(mark + 1))

    out, rc = srv:luamta("queue release " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(out:find("^ok: released"), out)
    local got = hop:wait_messages(1, 5)
    assert.equal(1, #got, srv:log():sub(mark + 1))
    assert.same({ "b@down.test" }, got[1].rcpts)
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
    assert.is_nil(server.read_file(srv.spool .. "/hold/" .. qid), "hold/ is empty again")
  end)

  it("delete ID removes the message and its state: not listed, never delivered", function()
    local qid = deferred("c@down.test", "delete me")
    assert.truthy(server.read_file(srv:spool_file("state", qid)), "the first attempt is on record")
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(out:find("^ok: deleted"), out)
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5))
    assert.truthy(server.wait_until(function() return server.read_file(srv:spool_file("state", qid)) == nil end, 5),
      "the state file goes too")
    local list = srv:luamta("queue list")
    assert.is_nil(list:find(qid, 1, true), list)
    assert.truthy(list:find("-- 0 messages in the queue", 1, true), list)
    hop = sink.start { ip = ip, port = port }
    out, rc = srv:luamta("queue flush")
    assert.equal(0, rc, out)
    socket.sleep(1.5)
    assert.same({}, hop:messages(), "a deleted message is never delivered")
  end)

  it("answers a malformed queue ID with an error and exit code 1, a missing one with usage and exit code 2",
    function()
      local out, rc = srv:luamta("queue hold nonsense")
      assert.equal(1, rc, out)
      assert.truthy(out:find("^error"), out)
      out, rc = srv:luamta("queue release")
      assert.equal(2, rc, out)
      assert.truthy(out:find("usage", 1, true), out)
    end)

  it("answers hold, release and delete of a queue ID that is in no queue with an error and exit code 1", function()
    local mark = srv:log_mark()
    local ghost = "6B07F766882B10364A00"   -- well formed, never queued here
    for _, cmd in ipairs { "hold", "release", "delete" } do
      local out, rc = srv:luamta("queue " .. cmd .. " " .. ghost)
      assert.equal(1, rc, cmd .. " said: " .. out)
      assert.truthy(out:find("^error"), cmd .. " said: " .. out)
    end
    socket.sleep(0.2)
    assert.is_nil(sink.log_line(srv, ghost .. ": held by the administrator", mark),
      "the log does not claim an action that did not happen")
  end)
end)

describe("luamta queue delete while a delivery is in progress (a next hop that never answers)", function()
  local srv, silent

  setup(function()
    silent = sink.silent { ip = "127.0.0.43" }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 1 }, routes = { ["mute.test"] = silent.literal } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if silent then silent:stop() end
  end)

  it("removes the message once the attempt ends, and it is not tried again", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@mute.test" }, "delete in flight")
    assert.truthy(server.wait_until(function()
      return server.run("ss -Htn state established dst " .. silent.address):find("%S") ~= nil
    end, 5, 0.02), "the router is connected, waiting for the greeting")
    local out, rc = srv:luamta("queue delete " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(out:find("^ok: deleted once the delivery in progress ends"), out)
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<a@mute.test>", "status=deferred" }, 5, mark))
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 3), "the queue file goes")
    socket.sleep(2.5)
    assert.equal(1, sink.count_lines(srv, { qid .. ": to=<a@mute.test>" }, mark), "no second attempt")
    assert.is_nil(server.read_file(srv:spool_file("state", qid)), "no state file left")
    local list = srv:luamta("queue list")
    assert.is_nil(list:find(qid, 1, true), list)
  end)

  it("survives a reload during a delivery in progress: the attempt ends and is recorded, the next one comes",
    function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@example.org", { "b@mute.test" }, "reload in flight")
      assert.truthy(server.wait_until(function()
        return server.run("ss -Htn state established dst " .. silent.address):find("%S") ~= nil
      end, 5, 0.02), "the router is connected, waiting for the greeting")
      srv:reload()
      assert.truthy(sink.wait_line(srv, "router reload: policy generation", 3, mark), srv:log():sub(mark + 1))
      assert.truthy(sink.wait_line(srv, { qid .. ": to=<b@mute.test>", "status=deferred" }, 5, mark),
        srv:log():sub(mark + 1))
      assert.truthy(server.wait_until(function()
        return sink.count_lines(srv, { qid .. ": to=<b@mute.test>", "status=deferred" }, mark) >= 2
      end, 6, 0.05), "a second attempt after the retry time\n" .. srv:log():sub(mark + 1))
      assert.is_nil(sink.log_line(srv, "died", mark), srv:log():sub(mark + 1))
      local out, rc = srv:luamta("queue delete " .. qid)
      assert.equal(0, rc, out)
    end)
end)
