-- t/integration/router_dns_spec.lua - the router's next hops found through DNS (SPEC section 6), with a real
-- dnsmasq: routing.relay_host by name (MX, then A), delivery by MX (lowest preference first, the next MX when the
-- first refuses connections), no MX (the domain's A), a null MX (RFC 7505: bounce at once with 5.1.10) and a
-- domain that does not exist. Every next hop listens on routing.port at its own 127.0.0.x address.
local server = require "t.helpers.server"
local dns = require "t.helpers.dns"
local sink = require "t.helpers.sink"
local socket_sleep = require("socket").sleep

-- The hosts of this file (every one on the same port, routing.port):
--   127.0.0.31  mx.relay.test, the MX of relay.test (routing.relay_host = "relay.test")
--   127.0.0.32  arelay.test, a relay host name with an A record and no MX
--   127.0.0.33  mx10.pref.test, preference 10 for pref.test
--   127.0.0.34  mx20.pref.test, preference 20 for pref.test
--   127.0.0.35  down.fallback.test, preference 10 for fallback.test: nothing listens
--   127.0.0.36  up.fallback.test, preference 20 for fallback.test
--   127.0.0.37  bare.test: no MX, an A record
local IPS = { "127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34", "127.0.0.35", "127.0.0.36", "127.0.0.37" }

local RECORDS = {
  hosts = {
    ["mx.relay.test"] = "127.0.0.31",
    ["arelay.test"] = "127.0.0.32",
    ["mx10.pref.test"] = "127.0.0.33",
    ["mx20.pref.test"] = "127.0.0.34",
    ["down.fallback.test"] = "127.0.0.35",
    ["up.fallback.test"] = "127.0.0.36",
    ["bare.test"] = "127.0.0.37",
  },
  mx = {
    ["relay.test"] = "mx.relay.test",
    -- the higher preference is listed first, so that dnsmasq's order of answers does not decide
    ["pref.test"] = { { "mx20.pref.test", 20 }, { "mx10.pref.test", 10 } },
    ["fallback.test"] = { { "up.fallback.test", 20 }, { "down.fallback.test", 10 } },
    ["nullmx.test"] = { { ".", 0 } },
  },
  timeout = { "slowdns.test" },   -- every query there is swallowed: the lookup times out
}

describe("the router with DNS", function()
  local ns, port, sinks = nil, nil, {}
  local srv

  local function start_server(routing)
    srv = server.start { config = sink.router_config {
      dns = ns:daemon_config(),
      routing = server.merge({ port = port }, routing or {}),
    } }
    return srv
  end

  setup(function()
    ns = dns.start(RECORDS)
    port = sink.free_port(IPS)
    for _, ip in ipairs(IPS) do
      if ip ~= "127.0.0.35" then sinks[ip] = sink.start { ip = ip, port = port } end
    end
  end)

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  teardown(function()
    if srv then srv:cleanup() end
    for _, s in pairs(sinks) do s:stop() end
    if ns then ns:stop() end
  end)

  -- delivered_to(ip, rcpt) -> the transactions for rcpt that the sink at ip took (waits up to 5 s for one)
  local function delivered_to(ip, rcpt)
    server.wait_until(function() return #sinks[ip]:find(rcpt) > 0 end, 5, 0.05)
    return sinks[ip]:find(rcpt)
  end

  -- nobody_else(ip, rcpt) -> true when no sink but the one at ip took rcpt
  local function nobody_else(ip, rcpt)
    for other, s in pairs(sinks) do
      if other ~= ip and #s:find(rcpt) > 0 then return false, other end
    end
    return true
  end

  it("sends every external recipient to relay_host \"relay.test\", found by its MX", function()
    start_server { relay_host = "relay.test" }
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "x@far.test", "y@pref.test" }, "relay by mx")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 8, mark), srv:log():sub(mark + 1))
    local got = delivered_to("127.0.0.31", "x@far.test")
    assert.equal(1, #got)
    assert.same({ "x@far.test", "y@pref.test" }, got[1].rcpts, "one transaction with both recipients")
    assert.truthy(sink.log_line(srv, { qid .. ": to=<x@far.test>", "relay=mx.relay.test[127.0.0.31]:" .. port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
    assert.truthy(nobody_else("127.0.0.31", "y@pref.test"), "the relay host wins over the recipient's MX")
    assert.truthy(ns:asked("relay.test", "MX"), "the relay host's MX was asked")
    assert.is_false(ns:asked("far.test", "MX"), "the recipient's domain is never looked up")
  end)

  it("sends to relay_host \"arelay.test\" at its A record when it has no MX", function()
    start_server { relay_host = "arelay.test" }
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "x@far2.test" }, "relay by a")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 8, mark), srv:log():sub(mark + 1))
    assert.equal(1, #delivered_to("127.0.0.32", "x@far2.test"))
    assert.truthy(sink.log_line(srv, { qid .. ": to=<x@far2.test>", "relay=arelay.test[127.0.0.32]:" .. port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
  end)

  it("delivers by MX to the lowest preference first", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@pref.test", "b@pref.test" }, "lowest preference")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 8, mark), srv:log():sub(mark + 1))
    local got = delivered_to("127.0.0.33", "a@pref.test")
    assert.equal(1, #got)
    assert.same({ "a@pref.test", "b@pref.test" }, got[1].rcpts)
    assert.truthy(nobody_else("127.0.0.33", "a@pref.test"), "the preference-20 MX saw nothing")
    assert.truthy(sink.log_line(srv, { qid .. ": to=<a@pref.test>", "relay=mx10.pref.test[127.0.0.33]:" .. port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
  end)

  it("delivers a second message to the same domain once, from cached MX and address records", function()
    -- Records with a real TTL, so that the router caches the MX and both address answers of the first message.
    local cached = dns.start { hosts = { ["mx.cache.test"] = "127.0.0.33" }, mx = { ["cache.test"] = "mx.cache.test" },
                               local_ttl = 300 }
    finally(function() cached:stop() end)
    srv = server.start { config = sink.router_config {
      dns = cached:daemon_config(), routing = { port = port },
    } }
    local mark = srv:log_mark()
    local first = sink.send(srv, "alice@example.org", { "c1@cache.test" }, "first, asks DNS")
    assert.truthy(sink.wait_line(srv, first .. ": removed", 8, mark), srv:log():sub(mark + 1))
    local second = sink.send(srv, "alice@example.org", { "c2@cache.test" }, "second, from the cache")
    assert.truthy(sink.wait_line(srv, second .. ": removed", 8, mark), srv:log():sub(mark + 1))
    socket_sleep(0.5)   -- a duplicate transaction would arrive right after the first
    assert.equal(1, #delivered_to("127.0.0.33", "c1@cache.test"))
    assert.equal(1, #delivered_to("127.0.0.33", "c2@cache.test"))
    assert.is_nil(srv:log():sub(mark + 1):find("died", 1, true), srv:log():sub(mark + 1))
  end)

  it("falls back to the next MX when the first refuses connections", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@fallback.test" }, "fallback mx")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 8, mark), srv:log():sub(mark + 1))
    assert.equal(1, #delivered_to("127.0.0.36", "a@fallback.test"))
    local line = sink.log_line(srv, { qid .. ": to=<a@fallback.test>", "status=sent" }, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("relay=up.fallback.test[127.0.0.36]:" .. port, 1, true), line)
    assert.is_nil(sink.log_line(srv, { qid, "status=deferred" }, mark), "no deferral on the way")
  end)

  it("delivers to the domain's A record when it has no MX", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "a@bare.test" }, "no mx")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 8, mark), srv:log():sub(mark + 1))
    assert.equal(1, #delivered_to("127.0.0.37", "a@bare.test"))
    assert.truthy(sink.log_line(srv, { qid .. ": to=<a@bare.test>", "relay=bare.test[127.0.0.37]:" .. port,
      "status=sent" }, mark), srv:log():sub(mark + 1))
  end)

  it("bounces at once with 5.1.10 for a domain with a null MX, into the sender's Maildir", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "a@nullmx.test" }, "null mx")
    local line = sink.wait_line(srv, { qid .. ": to=<a@nullmx.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.1.10, status=bounced", 1, true), line)
    assert.truthy(line:find("null MX", 1, true), line)
    local files = srv:wait_maildir("jdoe", nil, 1, 5)
    assert.equal(1, #files)
    local text = files[1].content
    assert.truthy(text:find("\nSubject: Undelivered Mail Returned to Sender\n", 1, true), text)
    assert.truthy(text:find("\nFinal-Recipient: rfc822; a@nullmx.test\n", 1, true), text)
    assert.truthy(text:find("\nAction: failed\n", 1, true), text)
    assert.truthy(text:find("\nStatus: 5.1.10\n", 1, true), text)
    assert.is_false(ns:asked("nullmx.test", "A"), "no address lookup for a null MX domain")
    -- the bounce's queue file goes just after its Maildir file appears
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5),
      "the message and its bounce are both done")
  end)

  it("defers with 4.4.3 when the MX lookup times out", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "a@slowdns.test" }, "dns timeout")
    local line = sink.wait_line(srv, { qid .. ": to=<a@slowdns.test>", "status=" }, 6, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=4.4.3, status=deferred", 1, true), line)
    assert.truthy(line:find("temporary DNS failure", 1, true), line)
    assert.same({}, srv:maildir_files("jdoe"), "no bounce")
  end)

  it("bounces with 5.1.2 for a domain that does not exist", function()
    start_server()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "a@nowhere.test" }, "no such domain")
    local line = sink.wait_line(srv, { qid .. ": to=<a@nowhere.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=5.1.2, status=bounced", 1, true), line)
    local files = srv:wait_maildir("jdoe", nil, 1, 5)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("\nStatus: 5.1.2\n", 1, true), files[1].content)
  end)
end)
