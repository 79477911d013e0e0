-- t/integration/loops_spec.lua - mail that would loop back to this server (docs/admin.md "Delivery", and
-- docs/reliability.md): a next hop that is one of our own listening address:port pairs is never connected to.
-- When the best MX (or the relay host, or a route) is us, the recipient bounces with Postfix's text
-- "5.4.6 mail for <domain> loops back to myself"; an MX of ours at a worse preference is dropped from the list.
-- The server under test listens on 127.0.0.1:<port> with routing.port = <port>, and dnsmasq gives loop.test an MX
-- whose address is 127.0.0.1, so without the check one message is copied hundreds of times in seconds.
local server = require "t.helpers.server"
local dns = require "t.helpers.dns"
local sink = require "t.helpers.sink"
local socket = require "socket"

-- The hosts of this file, all on the server's own port (routing.port):
--   127.0.0.1   the server itself: mx.loop.test
--   127.0.0.52  mx.primary.test, preference 10 for backup.test (a sink); we are preference 20
--   127.0.0.53  mx.down.test, preference 10 for downbackup.test: nothing listens; we are preference 20
local RECORDS = {
  hosts = {
    ["mx.loop.test"] = "127.0.0.1",
    ["mx.primary.test"] = "127.0.0.52",
    ["mx.down.test"] = "127.0.0.53",
  },
  mx = {
    ["loop.test"] = "mx.loop.test",
    ["backup.test"] = { { "mx.loop.test", 20 }, { "mx.primary.test", 10 } },
    ["downbackup.test"] = { { "mx.loop.test", 20 }, { "mx.down.test", 10 } },
  },
}

-- queued(srv, from) -> how many messages the listener took (one "QID: client=" line each) after log offset from
local function queued(srv, from)
  return sink.count_lines(srv, ": client=unknown[", from)
end

-- connects_after(srv, qid, from) -> how many SMTP connections the listener took after it queued qid (the test
-- client's own message; the start-up probe's connection may be logged after from)
local function connects_after(srv, qid, from)
  local text = srv:log():sub((from or 0) + 1)
  local at = assert(text:find(qid .. ": client=[^\n]*\n"), "no client= line for " .. qid)
  return sink.count_lines(srv, ": connect from ", (from or 0) + at)
end

local function reports(srv, user)
  local out = {}
  for _, f in ipairs(srv:maildir_files(user)) do
    if f.content:find("\nFrom: Mail Delivery System <MAILER-DAEMON@", 1, true) then out[#out + 1] = f end
  end
  return out
end

describe("a next hop that is this server", function()
  local ns, port, srv, primary, other

  setup(function()
    ns = dns.start(RECORDS)
    port = sink.free_port { "127.0.0.1", "127.0.0.52", "127.0.0.53" }
    primary = sink.start { ip = "127.0.0.52", port = port }
    other = sink.start { ip = "127.0.0.1" }     -- a second MTA on our address, another port
    srv = server.start { port = port, config = sink.router_config {
      dns = ns:daemon_config(),
      routing = { port = port, routes = { ["other.test"] = other.literal,
                                          ["self.test"] = "[127.0.0.1]:" .. port } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if primary then primary:stop() end
    if other then other:stop() end
    if ns then ns:stop() end
  end)

  it("bounces with 5.4.6 when the best MX is us: one report to the sender, no copy of the message", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "x@loop.test" }, "mx loops back")
    local line = sink.wait_line(srv, { qid .. ": to=<x@loop.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("relay=none", 1, true), line)
    assert.truthy(line:find("dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)", 1, true), line)
    local files = srv:wait_maildir("jdoe", nil, 1, 5)
    assert.equal(1, #files)
    local text = files[1].content
    assert.truthy(text:find("\nFinal-Recipient: rfc822; x@loop.test\n", 1, true), text)
    assert.truthy(text:find("\nStatus: 5.4.6\n", 1, true), text)
    assert.truthy(text:find("loops back to myself", 1, true), text)
    socket.sleep(3)     -- a loop makes a copy every few milliseconds
    assert.equal(1, queued(srv, mark), "only the client's message was taken:\n" .. srv:log():sub(mark + 1))
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
    assert.equal(1, #srv:maildir_files("jdoe"), "exactly one message: the report")
    assert.same({}, srv:queue_files())
  end)

  it("bounces with 5.4.6 for a route to our own [address]:port", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "y@self.test" }, "route loops back")
    local line = sink.wait_line(srv, { qid .. ": to=<y@self.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.4.6, status=bounced (mail for 127.0.0.1 loops back to myself)", 1, true), line)
    socket.sleep(1)
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
  end)

  it("delivers to our own address on another port: that is another MTA", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "z@other.test" }, "same ip other port")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    assert.equal(1, #other:wait_messages(1, 5))
    assert.truthy(sink.log_line(srv, { qid .. ": to=<z@other.test>", "relay=127.0.0.1[127.0.0.1]:" .. other.port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
  end)

  it("drops itself from the MX list when it is a backup MX, and delivers to the better one", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "b@backup.test" }, "we are the backup")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    assert.equal(1, #primary:find("b@backup.test"))
    assert.truthy(sink.log_line(srv, { qid .. ": to=<b@backup.test>", "relay=mx.primary.test[127.0.0.52]:" .. port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
  end)

  it("defers, without connecting to itself, when the better MX is down", function()
    local mark, before = srv:log_mark(), #reports(srv, "jdoe")
    local qid = sink.send(srv, "jdoe@example.test", { "d@downbackup.test" }, "better mx down")
    local line = sink.wait_line(srv, { qid .. ": to=<d@downbackup.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("status=deferred", 1, true), line)
    assert.truthy(line:find("127.0.0.53", 1, true), line)
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
    assert.equal(before, #reports(srv, "jdoe"), "no bounce yet")
  end)
end)

describe("a bounce to a sender whose domain loops back, with the default relay settings", function()
  local ns, port, srv

  setup(function()
    -- 127.0.0.1 is mx.example.test, forward-confirmed: under a local domain, so an internal host that may relay
    -- (Domino's enforce = "external", the default). The server, connecting to itself, would relay the report.
    local records = server.merge(RECORDS, {})
    records.hosts = server.merge(RECORDS.hosts, { ["mx.example.test"] = "127.0.0.1" })
    records.ptr = { ["127.0.0.1"] = "mx.example.test" }
    ns = dns.start(records)
    port = sink.free_port { "127.0.0.1" }
    srv = server.start { port = port, config = {
      dns = ns:daemon_config(),
      routing = { port = port, retry = { 1, 2 }, timeouts = { connect = 2, reply = 2 } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if ns then ns:stop() end
  end)

  it("bounces the report too (5.4.6) and sends no report about the report: no copies circulate", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "x@loop.test", { "nobody@example.test" }, "unknown local user")
    local line = sink.wait_line(srv, { qid .. ": to=<nobody@example.test>", "status=bounced" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.1.1", 1, true), line)
    local notice = sink.wait_line(srv, qid .. ": sender non-delivery notification: ", 5, mark)
    assert.truthy(notice, srv:log():sub(mark + 1))
    local bid = notice:match("notification: (%x+)")
    line = sink.wait_line(srv, { bid .. ": to=<x@loop.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)", 1, true), line)
    assert.truthy(sink.wait_line(srv, bid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    socket.sleep(3)
    assert.equal(1, queued(srv, mark), "only the client's message was taken:\n" .. srv:log():sub(mark + 1))
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
    assert.is_nil(sink.log_line(srv, bid .. ": sender non-delivery notification", mark), "no report of a report")
    assert.same({}, srv:queue_files())
  end)
end)

describe("a wildcard listener", function()
  local port, srv, ifaddr

  setup(function()
    port = sink.free_port { "127.0.0.1" }
    -- a non-loopback address of this machine's interfaces, if it has one
    ifaddr = (server.run("hostname -I 2>/dev/null") or ""):match("(%d+%.%d+%.%d+%.%d+)")
    local routes = { ["lo.test"] = "[127.0.0.77]:" .. port, ["zero.test"] = "[0.0.0.0]:" .. port }
    if ifaddr then routes["if.test"] = "[" .. ifaddr .. "]:" .. port end
    srv = server.start { port = port, config = sink.router_config {
      server = { listen = { "0.0.0.0:" .. port } },
      routing = { port = port, routes = routes },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("counts every loopback address, 0.0.0.0 and the interface addresses on its port as itself", function()
    local mark = srv:log_mark()
    local rcpts = { "a@lo.test", "b@zero.test" }
    if ifaddr then rcpts[#rcpts + 1] = "c@if.test" end
    local qid = sink.send(srv, "alice@example.org", rcpts, "wildcard loops")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    for _, r in ipairs(rcpts) do
      local line = sink.log_line(srv, { qid .. ": to=<" .. r .. ">" }, mark)
      assert.truthy(line and line:find("dsn=5.4.6, status=bounced", 1, true), tostring(line))
    end
    socket.sleep(1)
    assert.equal(0, connects_after(srv, qid, mark), "the router never connected to us")
  end)
end)
