-- t/helpers/dns.lua - real DNS for integration specs: a dnsmasq serving a Lua description of records on
-- 127.0.0.1 and a free port (UDP and TCP), and a "black hole" resolver that reads every query and never answers.
--
--   local dns = require "t.helpers.dns"
--   local ns = dns.start {
--     hosts = { ["mail.partner.test"] = "127.0.0.3", ["v6.test"] = { "192.0.2.9", "2001:db8::9" } },
--                                                    -- A/AAAA records; each address also gets the PTR back to
--                                                    -- the name, unless ptr below names that address
--     ptr = { ["127.0.0.4"] = "liar.partner.test",   -- PTR of an IPv4 or IPv6 address (4.0.0.127.in-addr.arpa);
--             ["127.0.0.9"] = { "a.test", "b.test" } },  -- several names
--     mx = { ["mxonly.test"] = "mx.elsewhere.test" },   -- preference 10; or { { "mx1.x.test", 10 }, { "mx2…", 20 } }
--     txt = { ["txt.test"] = "v=spf1 -all" },        -- or a list of strings
--     cname = { ["alias.test"] = "mail.partner.test" },  -- the target must be a name of hosts (dnsmasq's rule)
--     lists = { ["bl.dnsbl.test"] = { "127.0.0.5",    -- DNSBL/DNSWL zones: A 5.0.0.127.bl.dnsbl.test = 127.0.0.2
--               ["127.0.0.6"] = "127.0.0.4" } },      --   or the answer address given
--     timeout = { "slow.test", "7.0.0.127.in-addr.arpa" },  -- zones forwarded to a black hole: never answered
--     zones = { "example.org" },                      -- more zones that answer NXDOMAIN for unknown names
--     lifetime = 600,                                 -- seconds before timeout(1) kills it whatever happens
--   }
--   ns.port, ns.server ("127.0.0.1:<port>"), ns.dir (its temp dir, with dnsmasq.log)
--   ns:daemon_config(extra) -> { servers = { ns.server }, timeout = 1, tries = 1 } for luamta's dns section
--   ns:mark(), ns:queries(mark) -> every query dnsmasq logged after mark, as { { type = "PTR", name = … } }
--   ns:asked(name, qtype, mark) -> whether dnsmasq was asked for name (of type qtype, when given) after mark
--   ns:stop()                                         -- no process left (its black hole too), temp dir removed
--
--   local bh = dns.blackhole()   -- bh.port, bh.server, bh:received() (queries swallowed), bh:stop(): a UDP
--                                -- socket (and a TCP listener that never accepts) that drops every query
--   dns.world(records, opts)     -- inside describe(): a dnsmasq and a luamta that uses it, started in setup()
--                                -- and stopped in teardown() (see below)
--   dns.reverse(ip), dns.list_name(ip, site), dns.query(port, name) -- names and a raw A query, for specs
--   dns.stop_all()               -- stops everything still running (a safety net)
--
-- Zones: a name outside every zone dnsmasq knows gets REFUSED (which luamta counts as SERVFAIL), so the top-level
-- label of every name given, "in-addr.arpa", "ip6.arpa" and desc.zones are made local (local=/zone/): unknown
-- names there get NXDOMAIN. Local records have TTL 0, so luamta does not cache them; luamta keeps a negative
-- answer for a minute, so a spec does not change records under a running daemon.
--
-- Each process runs in its own process group (setsid) under timeout(1), and is stopped by that group's id.
local socket = require "socket"
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"

local M = {}

M.DNSMASQ = os.getenv("DNSMASQ") or "/usr/sbin/dnsmasq"
M.LISTED = "127.0.0.2"          -- what a DNS list answers for a listed address, unless told otherwise

local sh_quote, run, read_file = server.sh_quote, server.run, server.read_file
local running = {}

-- Small utilities -------------------------------------------------------------------------------------------

local function is_ipv4(s)
  return type(s) == "string" and s:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
end

local function is_ipv6(s)
  return type(s) == "string" and s:find(":", 1, true) ~= nil and s:match("^[%x:%.]+$") ~= nil
end

local function list_of(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

-- expand_ipv6(text) -> the 32 hex digits of an IPv6 address, or raises
local function expand_ipv6(ip)
  local head, tail = ip:match("^(.-)::(.*)$")
  local function groups(part)
    local out = {}
    for g in part:gmatch("[^:]+") do out[#out + 1] = g end
    return out
  end
  local h, t = groups(head or ip), groups(tail or "")
  local words = {}
  for _, g in ipairs(h) do words[#words + 1] = g end
  if head then
    for _ = 1, 8 - #h - #t do words[#words + 1] = "0" end
  end
  for _, g in ipairs(t) do words[#words + 1] = g end
  assert(#words == 8, "dns helper: cannot expand IPv6 address " .. ip)
  local out = {}
  for _, w in ipairs(words) do out[#out + 1] = ("%04x"):format(tonumber(w, 16)) end
  return table.concat(out)
end

-- M.reverse(ip) -> the PTR owner name of an IPv4 or IPv6 address (5.0.0.127.in-addr.arpa)
function M.reverse(ip)
  if is_ipv4(ip) then
    local a, b, c, d = ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    return ("%s.%s.%s.%s.in-addr.arpa"):format(d, c, b, a)
  end
  local hex = expand_ipv6(ip)
  local out = {}
  for i = #hex, 1, -1 do out[#out + 1] = hex:sub(i, i) end
  return table.concat(out, ".") .. ".ip6.arpa"
end

-- M.list_name(ip, site) -> the name a DNS list is asked for ip: d.c.b.a.<site>
function M.list_name(ip, site)
  local a, b, c, d = assert(ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$"))
  return ("%s.%s.%s.%s.%s"):format(d, c, b, a, site)
end

-- free_port() -> a port on 127.0.0.1 that is free for UDP and TCP a moment ago
local function free_port()
  for _ = 1, 20 do
    local u = socket.udp()
    assert(u:setsockname("127.0.0.1", 0))
    local _, port = u:getsockname()
    local t = socket.tcp()
    local ok = t:bind("127.0.0.1", tonumber(port))
    t:close()
    u:close()
    if ok then return tonumber(port) end
  end
  error("dns helper: no free UDP+TCP port")
end
M.free_port = free_port

-- query(port, name) -> the rcode of a DNS answer from 127.0.0.1:port for name (type A), or nil on no answer
local function query(port, name, timeout)
  local u = socket.udp()
  u:settimeout(timeout or 0.3)
  local id = math.random(0, 65535)
  local parts = { string.pack(">I2I2I2I2I2I2", id, 0x0100, 1, 0, 0, 0) }
  for label in name:gmatch("[^.]+") do parts[#parts + 1] = string.char(#label) .. label end
  parts[#parts + 1] = "\0" .. string.pack(">I2I2", 1, 1)
  u:setpeername("127.0.0.1", port)
  u:send(table.concat(parts))
  local answer = u:receive()
  u:close()
  if not answer or #answer < 12 then return nil end
  local rid, flags = string.unpack(">I2I2", answer)
  if rid ~= id then return nil end
  return flags & 0xf
end
M.query = query

-- spawn(cmd, logfile, lifetime) -> pid (= process group) of cmd started under setsid and timeout(1)
local function spawn(cmd, logfile, lifetime)
  local line = string.format("exec setsid timeout -k 2 %d %s >>%s 2>&1 </dev/null & echo $!", lifetime, cmd,
    sh_quote(logfile))
  local out = run("sh -c " .. sh_quote(line))
  return assert(tonumber(out:match("(%d+)")), "dns helper: no pid from the shell: " .. out)
end

-- Process objects ---------------------------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

-- stop(): TERM to the process group, then KILL when it lingers; waits (bounded) until nothing is left.
-- Safe to call twice.
function Proc:stop()
  if self.pgid then
    local pgid = self.pgid
    run("kill -TERM -" .. pgid)
    if not server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02) then
      run("kill -KILL -" .. pgid)
      server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02)
    end
    self.pgid = nil
  end
  running[self] = nil
  if self.blackhole then                       -- a dnsmasq's black hole for its timeout zones
    self.blackhole:stop()
    self.blackhole = nil
  end
  if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then
    run("rm -rf " .. sh_quote(self.dir))
    self.dir = nil
  end
end

function Proc:is_running()
  return self.pgid ~= nil and #server.group_members(self.pgid) > 0
end

-- daemon_config(extra) -> a luamta dns section that uses this server, with a short timeout and one try
function Proc:daemon_config(extra)
  local out = { servers = { self.server }, timeout = 1, tries = 1 }
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

-- mark() / queries(from) -> the queries dnsmasq logged, { { type = "A", name = "5.0.0.127.bl.dnsbl.test" } }
function Proc:mark()
  return #(read_file(self.logfile) or "")
end

function Proc:queries(from)
  local out = {}
  local text = (read_file(self.logfile) or ""):sub((from or 0) + 1)
  for qtype, name in text:gmatch("query%[(%w+)%] (%S+) from") do
    out[#out + 1] = { type = qtype, name = name:lower() }
  end
  return out
end

-- asked(name, qtype, from) -> true when dnsmasq was asked for name (and type qtype, when given) after from
function Proc:asked(name, qtype, from)
  for _, q in ipairs(self:queries(from)) do
    if q.name == name:lower() and (qtype == nil or q.type == qtype) then return true end
  end
  return false
end

function Proc:log()
  return read_file(self.logfile) or ""
end

-- The black hole ------------------------------------------------------------------------------------------------

local BLACKHOLE = [[
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
port = u.getsockname()[1]
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    t.bind(("127.0.0.1", port))
    t.listen(64)
except OSError:
    pass
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(port))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
u.settimeout(0.5)
n = 0
while True:
    try:
        u.recvfrom(65535)
        n += 1
        with open(sys.argv[2], "w") as f:
            f.write(str(n))
    except socket.timeout:
        pass
]]

-- M.blackhole(opts) -> a resolver that never answers. opts.lifetime (seconds, default 600).
function M.blackhole(opts)
  opts = opts or {}
  local self = setmetatable({ kind = "blackhole" }, Proc)
  self.dir = server.tempdir()
  local script, portfile = self.dir .. "/blackhole.py", self.dir .. "/port"
  self.countfile = self.dir .. "/count"
  self.logfile = self.dir .. "/blackhole.log"
  server.write_file(script, BLACKHOLE)
  tools.need("python3")
  self.pgid = spawn("python3 " .. sh_quote(script) .. " " .. sh_quote(portfile) .. " " .. sh_quote(self.countfile),
    self.logfile, opts.lifetime or 600)
  running[self] = true
  local port = server.wait_until(function()
    local s = read_file(portfile)
    return s and tonumber(s)
  end, 10, 0.02)
  if not port then
    local log = self:log()
    self:stop()
    error("dns helper: the black hole did not start\n" .. log, 2)
  end
  self.port = port
  self.server = "127.0.0.1:" .. port
  return self
end

-- received() -> how many queries the black hole swallowed so far
function Proc:received()
  return tonumber(read_file(self.countfile or "") or "") or 0
end

-- dnsmasq -------------------------------------------------------------------------------------------------------

local function top_label(name)
  return name:lower():gsub("%.$", ""):match("([^.]+)$")
end

-- options(desc, port, bh_port) -> the dnsmasq command-line options for a record description
local function options(desc, port, bh_port)
  local o = {
    "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file=", "--port=" .. port,
    "--listen-address=127.0.0.1", "--bind-interfaces", "--log-queries", "--cache-size=0", "--no-negcache",
  }
  local zones, seen_zone = {}, {}
  local function zone(z)
    z = z:lower():gsub("^%.+", ""):gsub("%.+$", "")
    if z ~= "" and not seen_zone[z] then
      seen_zone[z] = true
      zones[#zones + 1] = z
    end
  end
  zone("in-addr.arpa")
  zone("ip6.arpa")
  if desc.local_ttl then
    -- dnsmasq answers from its own records with TTL 0 by default, which nobody caches
    o[#o + 1] = "--local-ttl=" .. math.tointeger(desc.local_ttl)
  end
  for _, z in ipairs(desc.zones or {}) do zone(z) end
  local function named(name)
    zone(top_label(name))
    return name
  end

  local ptr_set = {}
  for ip, names in pairs(desc.ptr or {}) do
    ptr_set[ip] = true
    for _, n in ipairs(list_of(names)) do
      o[#o + 1] = "--ptr-record=" .. M.reverse(ip) .. "," .. named(n)
    end
  end
  -- sorted, so that the command line (and dnsmasq's order of answers) does not depend on pairs()
  local function sorted_keys(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end
  for _, name in ipairs(sorted_keys(desc.hosts)) do
    local v4, v6 = {}, {}
    for _, ip in ipairs(list_of(desc.hosts[name])) do
      if is_ipv4(ip) then v4[#v4 + 1] = ip
      elseif is_ipv6(ip) then v6[#v6 + 1] = ip
      else error("dns helper: hosts[" .. name .. "]: not an address: " .. tostring(ip), 3) end
    end
    -- one host-record per address: dnsmasq takes at most one IPv4 and one IPv6 address per record
    for i = 1, math.max(#v4, #v6) do
      local rec = { named(name) }
      if v4[i] then rec[#rec + 1] = v4[i] end
      if v6[i] then rec[#rec + 1] = v6[i] end
      o[#o + 1] = "--host-record=" .. table.concat(rec, ",")
    end
  end
  for _, name in ipairs(sorted_keys(desc.mx)) do
    local v = desc.mx[name]
    if type(v) == "string" then v = { { v, 10 } } end
    for _, mx in ipairs(v) do
      if type(mx) == "string" then mx = { mx, 10 } end
      o[#o + 1] = "--mx-host=" .. named(name) .. "," .. mx[1] .. "," .. (mx[2] or 10)
    end
  end
  for _, name in ipairs(sorted_keys(desc.txt)) do
    local parts = {}
    for _, t in ipairs(list_of(desc.txt[name])) do
      -- dnsmasq reads its command line as it is: quotes would be part of the text, and a comma always starts
      -- the next string (only its configuration files know quoting)
      if t:find(",", 1, true) then error("dns helper: txt[" .. name .. "]: a comma cannot be given to dnsmasq", 3) end
      parts[#parts + 1] = t
    end
    o[#o + 1] = "--txt-record=" .. named(name) .. "," .. table.concat(parts, ",")
  end
  for _, name in ipairs(sorted_keys(desc.cname)) do
    o[#o + 1] = "--cname=" .. named(name) .. "," .. desc.cname[name]
  end
  for _, site in ipairs(sorted_keys(desc.lists)) do
    named(site)
    for k, v in pairs(desc.lists[site]) do
      local ip, answer = v, M.LISTED
      if type(k) == "string" then ip, answer = k, v end
      o[#o + 1] = "--address=/" .. M.list_name(ip, site) .. "/" .. answer
    end
  end
  for _, z in ipairs(zones) do o[#o + 1] = "--local=/" .. z .. "/" end
  for _, z in ipairs(list_of(desc.timeout)) do
    assert(bh_port, "dns helper: timeout zones need the black hole")
    o[#o + 1] = "--server=/" .. z .. "/127.0.0.1#" .. bh_port
  end
  return o
end
M.options = options

-- M.start(desc) -> a running dnsmasq for the records of desc (see the top of the file). Raises when it does not
-- answer within a few seconds, after cleaning up.
function M.start(desc)
  desc = desc or {}
  local self = setmetatable({ kind = "dnsmasq" }, Proc)
  if desc.timeout and #list_of(desc.timeout) > 0 then
    self.blackhole = M.blackhole { lifetime = desc.lifetime }
  end
  self.dir = server.tempdir()
  self.logfile = self.dir .. "/dnsmasq.log"
  local last_err
  for _ = 1, 5 do
    local port = free_port()
    local args = {}
    for _, a in ipairs(options(desc, port, self.blackhole and self.blackhole.port)) do
      args[#args + 1] = sh_quote(a)
    end
    args[#args + 1] = sh_quote("--log-facility=" .. self.logfile)
    local mark = self:mark()
    if not os.getenv("DNSMASQ") then tools.need("dnsmasq", M.DNSMASQ) end
    self.pgid = spawn(sh_quote(M.DNSMASQ) .. " " .. table.concat(args, " "), self.logfile, desc.lifetime or 600)
    running[self] = true
    local up = server.wait_until(function()
      if not server.alive(self.pgid) then return "dead" end
      if query(port, "luamta-helper-ready.in-addr.arpa", 0.2) ~= nil then return "up" end
    end, 5, 0.02)
    if up == "up" then
      self.port = port
      self.server = "127.0.0.1:" .. port
      return self
    end
    last_err = self:log():sub(mark + 1)
    local pgid = self.pgid
    run("kill -KILL -" .. pgid)
    server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02)
    self.pgid = nil
    if not last_err:find("in use", 1, true) then break end   -- only a port race is worth another try
  end
  self:stop()
  error("dns helper: dnsmasq did not start\n" .. tostring(last_err), 2)
end

function M.stop_all()
  for p in pairs(running) do p:stop() end
end

-- A daemon and its DNS, for one describe block ---------------------------------------------------------------

-- M.world(records, opts) - call inside describe(): setup() starts a dnsmasq for records (see M.start) and a luamta
-- whose dns section uses it (timeout 1, tries 1), teardown() closes the clients and stops both. opts.config is
-- merged into t/helpers/server.lua's defaults; opts.ipv6 = true also listens on [::1] (same port); opts.start =
-- false writes the configuration without starting the daemon (for `luamta simulate`). Returns env:
--   env.ns, env.srv                      the dnsmasq and the server
--   env.connect(ip, opts) -> client      connected from 127.0.0.x (ip), greeting not read; ip "::1" connects over
--                                        IPv6 (needs opts.ipv6)
--   env.session(ip, helo) -> client      greeting read and EHLO said (both must succeed)
function M.world(records, opts)
  opts = opts or {}
  local smtp = require "t.helpers.smtp"
  local busted = require "busted"            -- setup/teardown of the describe block that calls world()
  local env = { clients = {} }
  busted.setup(function()
    env.ns = M.start(records)
    -- only the dns (and server.listen) keys are filled in here: server.prepare merges the rest into its defaults,
    -- so that server.NIL still removes a default key
    local cfg = {}
    for k, v in pairs(opts.config or {}) do cfg[k] = v end
    cfg.dns = server.merge(env.ns:daemon_config(), (opts.config or {}).dns or {})
    local port = server.free_port()
    if opts.ipv6 then
      cfg.server = server.merge(cfg.server or {}, { listen = { "127.0.0.1:" .. port, "[::1]:" .. port } })
    end
    local ok, err = pcall(function()
      if opts.start == false then
        env.srv = server.prepare { port = port, config = cfg, files = opts.files }
      else
        env.srv = server.start { port = port, config = cfg, files = opts.files }
      end
    end)
    if not ok then
      env.ns:stop()
      error(err, 0)
    end
  end)
  busted.teardown(function()
    for _, c in ipairs(env.clients) do c:close() end
    if env.srv then env.srv:cleanup() end
    if env.ns then env.ns:stop() end
  end)
  function env.connect(ip, copts)
    copts = copts or {}
    local c
    if ip == "::1" then
      c = assert(smtp.connect("::1", env.srv.port, { timeout = copts.timeout or 5 }))
    else
      c = assert(smtp.connect("127.0.0.1", env.srv.port, { bind = ip, timeout = copts.timeout or 5 }))
    end
    env.clients[#env.clients + 1] = c
    return c
  end
  function env.session(ip, helo)
    local c = env.connect(ip)
    c:greet(helo or "client.test")
    return c
  end
  return env
end

return M
