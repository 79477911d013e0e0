-- t/integration/router_crash_spec.lua - the router's durability promise (SPEC section 8): after kill -9 of the
-- master and every child while deliveries are pending, a restart delivers each recipient exactly once: the ones
-- already delivered (on record in <spool>/state/<id>) are not delivered again, and none is lost.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local socket = require "socket"

describe("kill -9 of every process while a remote delivery is deferred", function()
  local srv, hop, ip, port

  setup(function()
    ip = "127.0.0.45"
    port = sink.free_port { ip }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 60 }, routes = { ["later.test"] = "[" .. ip .. "]:" .. port } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:stop() end
  end)

  it("delivers after restart, once, every recipient that was still open, and the delivered ones not again",
    function()
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@example.org", { "a@later.test", "jdoe@example.test", "b@later.test" },
        "across a crash")
      assert.truthy(sink.wait_line(srv, { qid .. ": to=<b@later.test>", "status=deferred" }, 5, mark),
        srv:log():sub(mark + 1))
      assert.equal(1, #srv:wait_maildir("jdoe"), "the local recipient is delivered before the crash")
      assert.same({ qid }, srv:queue_files())

      srv:kill9()
      assert.same({}, srv:processes(), "no process left")
      hop = sink.start { ip = ip, port = port }
      mark = srv:log_mark()
      srv:restart()

      local got = hop:wait_messages(1, 10)
      assert.equal(1, #got, srv:log():sub(mark + 1))
      assert.same({ "a@later.test", "b@later.test" }, got[1].rcpts, "one transaction with both open recipients")
      assert.equal("alice@example.org", got[1].sender)
      assert.truthy(got[1].message:find("\nSubject: across a crash\n", 1, true), got[1].raw)
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
      assert.is_nil(sink.log_line(srv, qid .. ": to=<jdoe@example.test>", mark),
        "the recipient on record as delivered is not routed again")
      socket.sleep(1.5)
      assert.equal(1, #hop:messages(), "exactly once at the next hop")
      assert.equal(1, #srv:maildir_files("jdoe"), "exactly once in the Maildir")
      assert.same({}, srv:queue_files())
      assert.is_nil(server.read_file(srv:spool_file("state", qid)), "the state file is gone with the message")
    end)

  it("keeps a message held by the administrator in hold/ across kill -9; release then delivers it", function()
    if hop then hop:stop() end
    hop = nil
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "h@later.test" }, "held across a crash")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<h@later.test>", "status=deferred" }, 5, mark),
      srv:log():sub(mark + 1))
    local out, rc = srv:luamta("queue hold " .. qid)
    assert.equal(0, rc, out)
    assert.truthy(server.wait_until(function() return server.read_file(srv.spool .. "/hold/" .. qid) end, 5))

    srv:kill9()
    hop = sink.start { ip = ip, port = port }
    srv:restart()
    socket.sleep(1)
    assert.same({}, hop:messages(), "still held after the restart")
    out = srv:luamta("queue list")
    assert.matches("^" .. qid .. "! ", out)

    out, rc = srv:luamta("queue release " .. qid)
    assert.equal(0, rc, out)
    local got = hop:wait_messages(1, 5)
    assert.equal(1, #got, srv:log():sub(mark + 1))
    assert.same({ "h@later.test" }, got[1].rcpts)
  end)

  it("delivers once after restart a message whose transaction was cut by kill -9 before the data went out",
    function()
      if hop then hop:stop() end
      hop = sink.start { ip = ip, port = port, args = { "-w", "5" } }   -- DATA waits 5 s for its 354
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@example.org", { "w@later.test" }, "cut in flight")
      assert.truthy(server.wait_until(function()
        return server.run("ss -Htn state established dst " .. hop.address):find("%S") ~= nil
      end, 5, 0.02), "the router is connected to the next hop")
      socket.sleep(0.3)
      assert.is_nil(sink.log_line(srv, qid .. ": to=<w@later.test>", mark), "no outcome yet")
      srv:kill9()
      hop:restart {}
      mark = srv:log_mark()
      srv:restart()
      local got = hop:wait_messages(1, 10)
      assert.equal(1, #got, srv:log():sub(mark + 1))
      assert.same({ "w@later.test" }, got[1].rcpts)
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
      socket.sleep(1)
      assert.equal(1, #hop:messages(), "exactly once")
    end)
end)
