-- t/integration/fault_dns_spec.lua - DNS servers that fail (issue 8, docs/reliability.md "Faults"): a real DNS
-- server written for the test (t/helpers/dnsfault.py) answers REFUSED or SERVFAIL, never answers (a black hole),
-- or truncates its UDP answers (TC), for one name or for the whole run, and luamta's resolver (dns.servers)
-- uses it and nothing else. What a user sees:
--  - outbound, the router's MX and address lookups of a next hop: the recipient is deferred with 4.4.3 and a log
--    line naming the lookup and its error, never bounced, and delivered once (exactly one copy) when DNS answers;
--  - inbound, the rules that look names up (verify_hostname's PTR, verify_domain, a DNSBL with action reject):
--    each does what it says for a lookup that failed for now (450 4.7.1, 451 4.1.8, "counted as not listed"),
--    within the session's timeouts, and the worker lives on;
--  - TC: the resolver asks again over TCP and uses that answer; when TCP is refused too, deferred 4.4.3.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"
local socket = require "socket"

local sh_quote, run, read_file, write_file = server.sh_quote, server.run, server.read_file, server.write_file
local SCRIPT = (debug.getinfo(1, "S").source:match("^@(.*)t/integration/fault_dns_spec%.lua$") or "./")
  .. "t/helpers/dnsfault.py"

-- json(v) -> v as JSON text (tables with [1] are arrays; only what the control file holds)
local function json(v)
  local t = type(v)
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  elseif t == "number" then
    return tostring(math.tointeger(v) or v)
  elseif t == "table" then
    local out = {}
    if v[1] ~= nil then
      for _, x in ipairs(v) do out[#out + 1] = json(x) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do out[#out + 1] = json(tostring(k)) .. ":" .. json(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  error("json: cannot encode a " .. t)
end

-- The DNS server: fault_dns(control) -> ns with ns.server ("127.0.0.1:port"), ns:set(control) (atomic: the
-- server reads the file again when it changes), ns:queries() (its query log lines), ns:stop().
local function fault_dns(control)
  tools.need("python3")
  local ns = { dir = server.tempdir() }
  ns.control, ns.portfile, ns.qlog = ns.dir .. "/control.json", ns.dir .. "/port", ns.dir .. "/queries.log"
  function ns:set(c)
    write_file(self.control .. ".tmp", json(c))
    assert(os.rename(self.control .. ".tmp", self.control))
  end
  function ns:queries() return read_file(self.qlog) or "" end
  function ns:stop()
    if self.pgid then
      run("kill -TERM -" .. self.pgid)
      server.wait_until(function() return #server.group_members(self.pgid) == 0 end, 3, 0.02)
      run("kill -KILL -" .. self.pgid .. " 2>/dev/null")
      self.pgid = nil
    end
    if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(self.dir)) end
    self.dir = nil
  end
  ns:set(control)
  local line = string.format("exec setsid timeout -k 2 600 python3 %s %s %s %s >>%s 2>&1 </dev/null & echo $!",
    sh_quote(SCRIPT), sh_quote(ns.control), sh_quote(ns.portfile), sh_quote(ns.qlog), sh_quote(ns.dir .. "/err"))
  ns.pgid = assert(tonumber((run("sh -c " .. sh_quote(line))):match("(%d+)")))
  local port = server.wait_until(function() return tonumber(read_file(ns.portfile) or "") end, 10, 0.05)
  if not port then
    local err = read_file(ns.dir .. "/err") or ""
    ns:stop()
    error("dnsfault.py did not start: " .. err, 2)
  end
  ns.server = "127.0.0.1:" .. port
  return ns
end

-- Outbound ----------------------------------------------------------------------------------------------------

-- Every next hop is the sink at 127.0.0.61 (routing.port). Each domain <d>.test has MX mx.<d>.test, A 127.0.0.61;
-- a fault on <d>.test covers both names.
local SINK_IP = "127.0.0.61"
-- c-ares 1.18 (Debian 12) reports a SERVFAIL answer, a REFUSED answer and an unreachable server alike
-- (ARES_ECONNREFUSED), so the log line can say no more than this for the first two (src/dns.c)
local REFUSED = "SERVFAIL or REFUSED, or no server reachable"
local DOMAINS = { "refused", "servfail", "blackhole", "afail", "tc", "tcr" }

local function outbound_records()
  local r = {}
  for _, d in ipairs(DOMAINS) do
    r[d .. ".test"] = { MX = { { 10, "mx." .. d .. ".test" } } }
    r["mx." .. d .. ".test"] = { A = { SINK_IP } }
  end
  return r
end

describe("the router with a DNS server that fails", function()
  local ns, srv, nexthop, port
  local records = outbound_records()

  setup(function()
    ns = fault_dns { records = records, faults = {}, mode = "answer" }
    port = sink.free_port { SINK_IP }
    nexthop = sink.start { ip = SINK_IP, port = port }
    srv = server.start { config = sink.router_config {
      dns = { servers = { ns.server }, timeout = 1, tries = 1 },
      routing = { port = port, retry = { 1 } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if nexthop then nexthop:stop() end
    if ns then ns:stop() end
  end)

  -- defer_then_deliver(domain, faults, lookup) - with faults on, a message to a@<domain> is deferred 4.4.3 with
  -- a log line that has lookup in it; with them off, it is delivered once, and its sender never gets a bounce.
  local function defer_then_deliver(domain, faults, lookup)
    ns:set { records = records, faults = faults }
    local mark = srv:log_mark()
    local rcpt = "a@" .. domain
    local t0 = socket.gettime()
    local qid = sink.send(srv, "jdoe@example.test", { rcpt }, "dns fault " .. domain)
    local line = sink.wait_line(srv, { qid .. ": to=<" .. rcpt .. ">", "status=" }, 8, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(socket.gettime() - t0 < 6, "the lookup ended within dns.timeout (1 s), not later")
    assert.truthy(line:find("dsn=4.4.3, status=deferred", 1, true), line)
    assert.truthy(line:find("temporary DNS failure (" .. lookup .. ")", 1, true), line)
    -- a second attempt (retry = { 1 }) while the fault lasts is deferred again, never bounced
    assert.truthy(server.wait_until(function()
      return sink.count_lines(srv, { qid .. ": to=<" .. rcpt .. ">", "status=deferred" }, mark) >= 2
    end, 6, 0.05), srv:log():sub(mark + 1))
    ns:set { records = records, faults = {} }
    local sent = sink.wait_line(srv, { qid .. ": to=<" .. rcpt .. ">", "status=sent" }, 8, mark)
    assert.truthy(sent, srv:log():sub(mark + 1))
    assert.truthy(sent:find("relay=mx." .. domain .. "[" .. SINK_IP .. "]:" .. port, 1, true), sent)
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    socket.sleep(0.3)
    assert.equal(1, #nexthop:find(rcpt), "exactly one copy")
    assert.equal(0, sink.count_lines(srv, { qid, "status=bounced" }, mark), "never bounced")
    assert.same({}, srv:maildir_files("jdoe"), "no bounce for the sender")
  end

  it("defers with 4.4.3 naming the MX lookup while the server answers REFUSED, and delivers once it answers",
    function()
      defer_then_deliver("refused.test", { ["refused.test"] = "refused" }, "MX lookup of refused.test: " .. REFUSED)
    end)

  it("defers with 4.4.3 naming the MX lookup while the server answers SERVFAIL, and delivers once it answers",
    function()
      defer_then_deliver("servfail.test", { ["servfail.test"] = "servfail" }, "MX lookup of servfail.test: " .. REFUSED)
    end)

  it("defers with 4.4.3 naming the MX lookup while the server never answers, and delivers once it answers",
    function()
      defer_then_deliver("blackhole.test", { ["blackhole.test"] = "blackhole" },
        "MX lookup of blackhole.test: timeout (no answer)")
    end)

  it("defers with 4.4.3 naming the MX host's address lookup when only that one fails", function()
    defer_then_deliver("afail.test", { ["mx.afail.test"] = "servfail" }, "A lookup of mx.afail.test: " .. REFUSED)
  end)

  it("asks again over TCP when the UDP answer is truncated, and delivers with that answer", function()
    ns:set { records = records, faults = { ["tc.test"] = "tc" } }
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "a@tc.test" }, "dns truncated")
    local line = sink.wait_line(srv, { qid .. ": to=<a@tc.test>", "status=" }, 8, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("relay=mx.tc.test[" .. SINK_IP .. "]:" .. port, 1, true), line)
    assert.truthy(line:find("status=sent", 1, true), line)
    local q = ns:queries()
    assert.truthy(q:find("udp MX tc.test truncated", 1, true), q)
    assert.truthy(q:find("tcp MX tc.test answer 1", 1, true), q)
    assert.truthy(q:find("tcp A mx.tc.test answer 1", 1, true), q)
  end)

  it("defers with 4.4.3 when the answer is truncated and TCP is refused, and delivers once it answers", function()
    defer_then_deliver("tcr.test", { ["tcr.test"] = "tc_tcp_refused" }, "MX lookup of tcr.test: " .. REFUSED)
    assert.truthy(ns:queries():find("tcp MX tcr.test refused", 1, true), ns:queries())
  end)
end)

-- Inbound -----------------------------------------------------------------------------------------------------

-- Clients: 127.0.0.62 (PTR client62.ok.test, which has A 127.0.0.62: forward-confirmed when DNS answers) and
-- 127.0.0.63 (likewise). Under fault: 127.0.0.62's PTR, the sender domain bad.sender.test and the DNSBL zone
-- bl.test (whose lookups for .63 are 63.0.0.127.bl.test). good.sender.test always answers.
local INBOUND = {
  ["62.0.0.127.in-addr.arpa"] = { PTR = { "client62.ok.test" } },
  ["63.0.0.127.in-addr.arpa"] = { PTR = { "client63.ok.test" } },
  ["client62.ok.test"] = { A = { "127.0.0.62" } },
  ["client63.ok.test"] = { A = { "127.0.0.63" } },
  ["good.sender.test"] = { MX = { { 10, "mx.good.sender.test" } } },
  ["bad.sender.test"] = { MX = { { 10, "mx.bad.sender.test" } } },
  ["mx.good.sender.test"] = { A = { "192.0.2.1" } },
}

describe("inbound checks that look names up, with a DNS server that fails", function()
  local ns, srv

  setup(function()
    ns = fault_dns { records = INBOUND, faults = {} }
    srv = server.start { config = {
      dns = { servers = { ns.server }, timeout = 1, tries = 1 },
      inbound = {
        connection = { verify_hostname = true },
        sender = { verify_domain = true },
        dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" },
      },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if ns then ns:stop() end
  end)

  -- timed(c, line) -> code, reply text, seconds it took
  local function timed(c, line)
    local t0 = socket.gettime()
    local code, lines = c:cmd(line, 10)
    return code, lines and lines.text or tostring(lines), socket.gettime() - t0
  end

  local function connect(ip)
    local c = assert(smtp.connect("127.0.0.1", srv.port, { bind = ip, timeout = 10 }))
    local t0 = socket.gettime()
    local code, lines = c:read_reply(10)
    return c, code, lines and lines.text or tostring(lines), socket.gettime() - t0
  end

  for _, case in ipairs {
    { fault = "refused", err = "servfail" },
    { fault = "servfail", err = "servfail" },
    { fault = "blackhole", err = "timeout" },
  } do
    it("answers as each rule says for a lookup that failed for now (" .. case.fault .. "), within the timeouts",
      function()
        ns:set { records = INBOUND, faults = { ["62.0.0.127.in-addr.arpa"] = case.fault,
                                               ["bad.sender.test"] = case.fault, ["bl.test"] = case.fault } }
        local mark = srv:log_mark()
        local pids = srv:processes()
        -- verify_hostname: the PTR of 127.0.0.62 cannot be had, so MAIL is refused for now, never with a 5xx
        local c, code, text, took = connect("127.0.0.62")
        assert.equal(220, code, text)
        assert.truthy(took < 5, "greeting after " .. took .. " s")
        assert.equal(250, (timed(c, "EHLO client.test")))
        code, text, took = timed(c, "MAIL FROM:<x@good.sender.test>")
        assert.equal(450, code, text .. "\n" .. srv:log():sub(mark + 1))
        assert.truthy(text:find("4.7.1 Cannot verify your host name 127.0.0.62", 1, true), text)
        assert.truthy(took < 5, "MAIL answered after " .. took .. " s")
        assert.equal(221, (timed(c, "QUIT")))
        c:close()
        -- DNSBL with action reject: a list that cannot be asked is not a listing; verify_domain: 451 4.1.8
        c, code, text, took = connect("127.0.0.63")
        assert.equal(220, code, text .. "\n" .. srv:log():sub(mark + 1))
        assert.truthy(took < 5, "greeting after " .. took .. " s")
        assert.equal(250, (timed(c, "EHLO client.test")))
        code, text, took = timed(c, "MAIL FROM:<x@bad.sender.test>")
        assert.equal(451, code, text .. "\n" .. srv:log():sub(mark + 1))
        assert.truthy(text:find("4.1.8 Sender domain bad.sender.test could not be verified", 1, true), text)
        assert.truthy(took < 8, "MAIL answered after " .. took .. " s (four lookups of at most 1 s)")
        code, text = timed(c, "MAIL FROM:<x@good.sender.test>")
        assert.equal(250, code, text)
        assert.equal(250, (timed(c, "RCPT TO:<jdoe@example.test>")))
        assert.equal(221, (timed(c, "QUIT")))
        c:close()
        local log = srv:log():sub(mark + 1)
        assert.truthy(log:find("rule=filters dnsbl site=bl.test ip=127.0.0.63 lookup=" .. case.err
          .. " counted as not listed", 1, true), log)
        assert.truthy(log:find("verify_domain=bad.sender.test query=mx lookup=" .. case.err, 1, true), log)
        assert.is_nil(log:find("died", 1, true), log)
        assert.same(pids, srv:processes(), "no process was restarted")
      end)
  end

  it("accepts the same sessions once DNS answers again", function()
    ns:set { records = INBOUND, faults = {} }
    local c, code = connect("127.0.0.62")
    assert.equal(220, code)
    assert.equal(250, (timed(c, "EHLO client.test")))
    local text
    code, text = timed(c, "MAIL FROM:<x@good.sender.test>")
    assert.equal(250, code, text)
    c:close()
  end)
end)
