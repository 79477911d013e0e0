-- t/helpers/fake.lua: a fake luamta module, sessions and scripted DNS, so that rule specs run without the C core.
--
-- fake.mta(cfg, opts) -> a luamta module built by the real lua/luamta/init.lua over a fake luamta.core: cfg (a
--   configuration table as a file would write it; server.spool is filled in) goes through the real
--   config.load_string, so rules see the real normalisation and defaults, and a bad configuration raises.
--   opts.hostname: what server.hostname defaults to (default "mx.example.org"); opts.dns: a DNS script;
--   opts.directory_error: make mta.directory.lookup answer nil, err (a directory that cannot answer).
--   The module gets mta.dns.a/aaaa/mx/cname/txt/ptr answering from the script, and mta.fake =
--   { cfg, warnings, dns = script, queries = { "a 7.2.0.192.bl.test", … }, logs = { … }, methods = the session
--   methods init.lua added (hostname) }.
-- DNS script: { ["name"] = { a = { "127.0.0.2" }, mx = { { preference = 10, exchange = "mx.x.test" } } } }. A
--   record list answers; a string answers nil, that string ("timeout", "servfail", "nodata", "nxdomain"); a
--   name whose value is a string answers every type so; a name without that type is "nodata"; a name not in the
--   script is "nxdomain". Names are case-insensitive and lose one trailing dot. mta.dns.ptr is asked with the IP
--   text (as the real one is), so a PTR answer goes under ["192.0.2.7"] = { ptr = { "mail.x.test" } }.
-- fake.load_rule(name, cfg, opts) -> rule module, mta: loads rules/<name>.lua with the fake in
--   package.loaded.luamta, then puts the previous value back (also when loading fails; the error is raised again).
-- fake.session(t) -> a session: t.ip (default "198.51.100.7"), t.user, t.helo, t.port, t.host (the verified
--   name s:hostname() gives) or t.host_error ("timeout" or "none", the default when there is no t.host), or
--   t.mta (a fake.mta): s:hostname() is then init.lua's own verification (PTR, then A/AAAA) over its DNS script.
--   Recorded: s.tags ({ { name, value } … }), s.logs (strings), s.hostname_calls (a number).
-- fake.addr(text) -> an address table { address, localpart, domain }; "" is the null sender.
local match = require "luamta.match"

local M = {}

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)t/helpers/fake%.lua$") or "")

-- serialize - a Lua expression for a value made of tables, strings, numbers and booleans.
local function serialize(v, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" then
    return math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then error("fake: cannot write a " .. t .. " into a configuration", 3) end
  indent = indent or ""
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = serialize(v[i], indent .. "  ") end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. serialize(k) .. "]")
    parts[#parts + 1] = key .. " = " .. serialize(v[k], indent .. "  ")
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

local function config_source(cfg)
  local source = {}
  local server = {}
  for k, v in pairs(cfg.server or {}) do server[k] = v end
  server.spool = server.spool or "/var/spool/luamta"
  server.listen = server.listen or "127.0.0.1:25"
  source[#source + 1] = "server = " .. serialize(server)
  local names = {}
  for k in pairs(cfg) do
    if k ~= "server" then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do source[#source + 1] = k .. " = " .. serialize(cfg[k]) end
  return table.concat(source, "\n")
end

-- M.config - the normalised configuration for cfg, and the loader's warnings; raises on a bad configuration.
function M.config(cfg, opts)
  local config = require "luamta.config"
  local out, errors, warnings = config.load_string(config_source(cfg or {}), "=(fake config)",
                                                   { hostname = (opts or {}).hostname or "mx.example.org" })
  if not out then error("fake: configuration does not load: " .. table.concat(errors, "; "), 2) end
  return out, warnings
end

local function norm_name(name)
  name = tostring(name):lower()
  if name:sub(-1) == "." then name = name:sub(1, -2) end
  return name
end

-- dns_library - mta.dns over a script; each query is recorded as "<type> <name>".
local function dns_library(state)
  local dns = {}
  function dns.ip_equal(x, y)
    local fx, wx = match.parse_ip(x)
    local fy, wy = match.parse_ip(y)
    if not fx or fx ~= fy then return false end
    for i = 1, #wx do
      if wx[i] ~= wy[i] then return false end
    end
    return true
  end
  function dns.is_hostname(name)                  -- as dns_hostname_ok() in src/core/dns.c (RFC 1123 2.1)
    if type(name) ~= "string" then return false end
    name = name:gsub("%.$", "")
    if #name == 0 or #name > 253 then return false end
    for label in (name .. "."):gmatch("(.-)%.") do
      if #label == 0 or #label > 63 or not label:match("^[%w-]+$") or label:match("^%-") or label:match("%-$") then
        return false
      end
    end
    return true
  end
  for _, rr in ipairs({ "a", "aaaa", "mx", "cname", "txt", "ptr" }) do
    dns[rr] = function(name)
      state.queries[#state.queries + 1] = rr .. " " .. norm_name(name)
      local entry
      for k, v in pairs(state.dns) do
        if norm_name(k) == norm_name(name) then entry = v end
      end
      if entry == nil then return nil, "nxdomain" end
      if type(entry) == "string" then return nil, entry end
      local answer = entry[rr]
      if answer == nil then return nil, "nodata" end
      if type(answer) == "string" then return nil, answer end
      return answer
    end
  end
  return dns
end

function M.mta(cfg, opts)
  opts = opts or {}
  local normal, warnings = M.config(cfg, opts)
  local state = { cfg = normal, warnings = warnings, dns = opts.dns or {}, queries = {}, logs = {} }
  local dns = dns_library(state)
  local methods, private = {}, setmetatable({}, { __mode = "k" })
  local core = setmetatable({
    config = function() return normal end,
    log = function(level, text) state.logs[#state.logs + 1] = level .. ": " .. text end,
    sleep = function() end,
    dns = dns,
    session_methods = function() return methods end,
    session_private = function(s)
      private[s] = private[s] or {}
      return private[s]
    end,
  }, {
    -- whatever else init.lua asks the core for answers "not available" instead of breaking every spec
    __index = function() return function() return nil, "not available in the fake" end end,
  })
  local path = assert(package.searchpath("luamta", package.path))
  local chunk = assert(loadfile(path))
  local saved = package.loaded["luamta.core"]
  package.loaded["luamta.core"] = core
  local ok, mta = pcall(chunk, "luamta")
  package.loaded["luamta.core"] = saved
  if not ok then error(mta, 0) end
  mta.dns = dns
  if opts.directory_error then
    mta.directory.lookup = function() return nil, opts.directory_error end
  end
  state.methods = methods
  mta.fake = state
  return mta
end

function M.load_rule(name, cfg, opts)
  local mta = M.mta(cfg, opts)
  local chunk = assert(loadfile(ROOT .. "rules/" .. name .. ".lua"))
  local saved = package.loaded.luamta
  package.loaded.luamta = mta
  local ok, rule = pcall(chunk, name)
  package.loaded.luamta = saved
  if not ok then error(rule, 0) end
  return rule, mta
end

local Session = {}
Session.__index = Session

function Session:hostname()
  self.hostname_calls = self.hostname_calls + 1
  if self._host then return self._host end
  if self._mta and self._host_error == nil then return self._mta.fake.methods.hostname(self) end
  return nil, self._host_error or "none"
end

function Session:tag(name, value)
  self.tags[#self.tags + 1] = { name, value }
  return true
end

function Session:log(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  self.logs[#self.logs + 1] = table.concat(parts, " ", 1, parts.n)
end

function M.session(t)
  t = t or {}
  return setmetatable({
    ip = t.ip or "198.51.100.7", port = t.port or 40000, user = t.user, helo = t.helo, tls = t.tls or false,
    id = "fake", vars = {}, tags = {}, logs = {}, hostname_calls = 0,
    _host = t.host, _host_error = t.host_error, _mta = t.mta,
  }, Session)
end

function M.addr(text)
  local lp, domain = text:match("^(.*)@([^@]*)$")
  return { address = text, localpart = lp or text, domain = domain or "" }
end

return M
