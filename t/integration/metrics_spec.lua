-- t/integration/metrics_spec.lua - GET /metrics (docs/investigating.md, "Metrics"): after a known mix of traffic the
-- counters equal what was sent (connections, replies per stage and code, rule verdicts and errors, accepted
-- messages, local deliveries and SMTP deferrals, commit histograms), every process's counters summed; the output
-- passes the real `promtool check metrics`; the endpoint answers while a rule holds a session; a worker killed
-- with a session open leaves no session counted.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"
local socket = require "socket"

-- scrape(port) -> the body of GET /metrics, with a bounded wait
local function scrape(port)
  local c = assert(socket.tcp())
  c:settimeout(3)
  assert(c:connect("127.0.0.1", port))
  assert(c:send("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
  local data = c:receive("*a")
  c:close()
  local status = data:match("^HTTP/1%.%d (%d+)")
  assert(status == "200", "GET /metrics: " .. tostring(data):sub(1, 200))
  return data:match("\r\n\r\n(.*)$")
end

-- value(text, series) -> the number of one series (name with its labels, as printed), or nil
local function value(text, series)
  for line in text:gmatch("[^\n]+") do
    local name, v = line:match("^(%S+) (%S+)$")
    if name == series then return tonumber(v) end
  end
  return nil
end

-- delta(base, text, series) -> how much a series grew between two scrapes
local function delta(base, text, series)
  return (value(text, series) or 0) - (value(base, series) or 0)
end

local function session(port, mail, rcpts, opts)
  local c = assert(smtp.connect("127.0.0.1", port, opts))
  local code = c:read_reply()
  if code ~= 220 then c:close() return code end
  assert.equal(250, (c:cmd("EHLO client.test")))
  code = c:cmd("MAIL FROM:<" .. mail .. ">")
  if code == 250 then
    local any = false
    for _, r in ipairs(rcpts) do
      if c:cmd("RCPT TO:<" .. r .. ">") == 250 then any = true end
    end
    if any then
      assert.equal(354, (c:cmd("DATA")))
      assert.equal(250, (c:cmd("Subject: metrics\r\n\r\nhello\r\n.")))
    end
  end
  c:cmd("QUIT")
  c:close()
end

describe("metrics", function()
  local srv, mport

  local BROKEN = [[
return {
  rcpt = function(s, r)
    if r.address == "boom@example.test" then error("a deliberate rule error") end
  end,
  mail = function(s, m)
    if m.address == "slow@client.test" then mta.sleep(3) end
  end,
}
]]

  before_each(function()
    mport = server.free_port()
    srv = server.start {
      config = {
        server = { workers = 2 },
        metrics = { listen = "127.0.0.1:" .. mport },
        inbound = {
          connection = { deny = { "[127.0.0.2]" } },
          sender = { deny = { "@spam.test" } },
          relay = { allow_from = { "[127.0.0.1]" } },
        },
        routing = { relay_host = "[127.0.0.1]:" .. server.free_port() },   -- nobody listens: deferred
      },
      rules = { { "broken", BROKEN } },
    }
  end)

  after_each(function()
    if srv then srv:cleanup() end
  end)

  it("counts a known mix of traffic, summed over every process, and promtool accepts the output", function()
    local promtool = tools.need("promtool")
    local base = scrape(mport)     -- the start-up probe of the test helper connected already
    session(srv.port, "a@client.test", { "jdoe@example.test" })                       -- accepted, delivered
    session(srv.port, "b@client.test", { "jdoe@example.test", "boom@example.test" })  -- one rule error
    session(srv.port, "c@spam.test", { "jdoe@example.test" })                         -- MAIL refused
    session(srv.port, "d@client.test", { "x@remote.test" })                           -- relayed, deferred
    session(srv.port, "e@client.test", {}, { bind = "127.0.0.2" })                    -- refused at connect
    assert.truthy(srv:wait_log("to=<x@remote.test>.*status=deferred", 10))
    assert.truthy(srv:wait_maildir("jdoe", "example.test", 2, 10))

    local text
    assert.truthy(server.wait_until(function()
      text = scrape(mport)
      return value(text, 'luamta_deliveries_total{transport="local",status="sent"}') == 2
    end, 5, 0.2), text)
    assert.equal(5, delta(base, text, 'luamta_connections_total{listener="127.0.0.1:' .. srv.port .. '"}'))
    assert.equal(3, delta(base, text, "luamta_messages_accepted_total"))
    assert.equal(4, delta(base, text, 'luamta_replies_total{stage="connect",code="220"}'))
    assert.equal(1, delta(base, text, 'luamta_replies_total{stage="connect",code="554"}'))
    assert.equal(4, delta(base, text, 'luamta_replies_total{stage="helo",code="250"}'))
    assert.equal(1, delta(base, text, 'luamta_replies_total{stage="mail",code="554"}'))
    assert.equal(1, delta(base, text, 'luamta_replies_total{stage="rcpt",code="451"}'))
    assert.equal(3, delta(base, text, 'luamta_replies_total{stage="message",code="250"}'))
    assert.equal(1, delta(base, text, 'luamta_rule_verdicts_total{stage="mail",rule="sender",verdict="reject"}'))
    assert.equal(1, delta(base, text, 'luamta_rule_verdicts_total{stage="connect",rule="connection",verdict="reject"}'))
    assert.equal(1, delta(base, text, 'luamta_rule_errors_total{rule="broken"}'))
    assert.equal(0, delta(base, text, 'luamta_rule_errors_total{rule="relay"}'))
    assert.truthy(delta(base, text, 'luamta_deliveries_total{transport="smtp",status="deferred"}') >= 1, text)
    assert.equal(3, delta(base, text, "luamta_commit_seconds_count"))
    assert.equal(3, delta(base, text, 'luamta_commit_seconds_bucket{le="+Inf"}'))
    assert.equal(3, delta(base, text, "luamta_commit_batch_size_sum"))
    assert.equal(0, delta(base, text, 'luamta_sessions{state="READY"}'))

    local out, rc = server.run("printf '%s' " .. server.sh_quote(text) .. " | " .. promtool .. " check metrics")
    assert.equal(0, rc, out)
  end)

  it("answers while a rule holds a session, and forgets the sessions of a worker that was killed", function()
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    assert.equal(220, (c:read_reply()))
    assert.equal(250, (c:cmd("EHLO client.test")))
    c:send("MAIL FROM:<slow@client.test>\r\n")    -- the rule sleeps 3 s before it answers
    local t0 = socket.gettime()
    local text = scrape(mport)
    local greetings = value(text, 'luamta_replies_total{stage="connect",code="220"}')
    assert.truthy(socket.gettime() - t0 < 1, "the scrape waited for the rule")
    assert.equal(1, value(text, 'luamta_sessions{state="READY"}'), text)
    -- kill every child (the worker that serves the session among them): gauges go, counters stay
    local master = srv:master_pid()
    for _, pid in ipairs(srv:processes()) do
      if pid ~= master then server.run("kill -9 " .. pid) end
    end
    c:close()
    assert.truthy(server.wait_until(function()
      text = scrape(mport)
      return value(text, 'luamta_sessions{state="READY"}') == 0
    end, 5, 0.1), text)
    assert.equal(greetings, value(text, 'luamta_replies_total{stage="connect",code="220"}'))
  end)

  it("is off without metrics.listen, and check warns about a public address", function()
    local out, rc = server.luamta("check -c " .. server.sh_quote(srv.cfgfile))
    assert.equal(0, rc, out)
    local path = srv.dir .. "/public.lua"
    server.write_file(path, (server.read_file(srv.cfgfile):gsub('listen = "127%.0%.0%.1:' .. mport .. '"',
      'listen = "0.0.0.0:' .. mport .. '"')))
    out, rc = server.luamta("check -c " .. server.sh_quote(path))
    assert.truthy(out:find("metrics.listen", 1, true) and out:find("open to anyone", 1, true), out)
  end)
end)
