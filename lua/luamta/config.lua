-- luamta.config: run the Lua configuration file in a sandbox, check it against SPEC section 3, fill in defaults.
--
-- config.load(path, opts) and config.load_string(source, chunkname, opts) return cfg, nil, warnings on success
-- and nil, errors, warnings on failure (one shape, the same as engine.boot's); errors and warnings are arrays of strings of the form
-- "<file>:<line>: <key.path>: <what is wrong>; expected <what>" (the line is left out when nothing in the file
-- says where, e.g. for a missing section). Syntax and runtime errors of the file are passed on as Lua words them.
-- Every error is collected, not only the first.
--
-- opts (all optional): hostname (default "localhost", the default of server.hostname), ncpu (default 1, what
-- server.workers = 0 means), sysconfdir (default "/etc", for server.rules_dir), basedir (overrides the directory
-- that relative paths are resolved against).
--
-- The sandbox: the file sees string, table, math, utf8, pairs, ipairs, next, select, type, tostring, tonumber,
-- error, assert and pcall (copies, so the file cannot change the server's own libraries), nothing else: no
-- print, io, os, require or load. It may assign only the globals server, tls, dns, log, local_domains, directory,
-- inbound, routing, delivery, metrics, trace, http, redis, greylist, ratelimit, auth_throttle, dkim and rspamd;
-- assigning any other name is an error (with the nearest valid name suggested), reading an undefined name stops the file. It runs
-- with a budget of about 10 million VM instructions.
-- directory.file is loaded the same way and must return { users = …, groups = … }.
--
-- Paths: a relative server.spool, server.rules_dir, tls.cert, tls.key, directory.file, dkim.sign[i].key or
-- delivery.maildir is resolved against the directory of the configuration file (opts.basedir if given), and every
-- path is cleaned lexically ("a/./b/../c" becomes "a/c"). A configuration loaded through a relative file name therefore gives
-- relative paths, relative to the current directory of the caller. delivery.maildir may start with "<spool>",
-- which stands for the resolved server.spool.
--
-- The normalised cfg has every section and key, with the defaults of SPEC sections 3 and 3.1. Lists are always
-- arrays of trimmed, non-empty strings. Shapes that differ from what the file says:
--   server.listen[i] = { text = "127.0.0.1:2525", host = "127.0.0.1", port = 2525, family = "inet"|"inet6",
--                        tls = "starttls"|"implicit"|"none", submission = boolean }   (IPv6 host without brackets)
--   routing.relay_host, routing.smart_host, routing.routes[key] =
--                      { text = "[192.0.2.9]:25", host = "192.0.2.9", port = 25, literal = boolean }
--                      (port is routing.port when the value names none; literal is true for a bracketed IP)
--   server.workers is never 0 (opts.ncpu instead); dns.servers stays nil when not set (use /etc/resolv.conf).
--   dkim.sign[i] = { domain = lower case, selector = …, key = path, where = "file:line: dkim.sign[i].key" }.
--   directory.users[i] = { address = …, aliases = { … }, name = …|nil, password = …|nil }, with the users and
--   groups of directory.file merged in after the inline ones.
--
-- Helpers used elsewhere: M.suggest(name, candidates), M.split_list(value), M.parse_host(value).
local ip = require "luamta.ip"
local M = {}

local BUDGET = 10000000     -- VM instructions a configuration file may run
local HOOK_STEP = 1000      -- the count hook runs every HOOK_STEP instructions

local SECTIONS = { "server", "tls", "dns", "log", "local_domains", "directory", "inbound", "routing", "delivery",
  "metrics", "trace", "http", "redis", "greylist", "ratelimit", "auth_throttle", "dkim", "rspamd" }
local IS_SECTION = {}
for _, name in ipairs(SECTIONS) do IS_SECTION[name] = true end

local LIBRARY_NAMES = { "string", "table", "math", "utf8", "pairs", "ipairs", "next", "select", "type",
                        "tostring", "tonumber", "error", "assert", "pcall" }

-- Small string helpers ------------------------------------------------------------------------------------------

local function trim(s)
  return s:match("^%s*(.-)%s*$")
end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function quote(s)
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

-- describe - a value as an error message names it: string "ten", number 0, boolean true, a table.
local function describe(v)
  local t = type(v)
  if t == "string" then return "string " .. quote(v) end
  if t == "number" then
    return "number " .. (math.type(v) == "integer" and tostring(v) or string.format("%.14g", v))
  end
  if t == "boolean" then return "boolean " .. tostring(v) end
  if t == "nil" then return "nothing" end
  if t == "table" then return "a table" end
  return "a " .. t
end

local function quoted_list(values)
  local out = {}
  for i, v in ipairs(values) do out[i] = '"' .. v .. '"' end
  return table.concat(out, ", ")
end

-- Suggestions ---------------------------------------------------------------------------------------------------

-- distance - Damerau-Levenshtein distance (optimal string alignment: one transposition counts as one edit).
local function distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 1, lb do d[0][j] = j end
  for i = 1, la do
    local ca = a:byte(i)
    for j = 1, lb do
      local cb = b:byte(j)
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ca == cb and 0 or 1))
      if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

-- M.suggest - the candidate nearest to name (case-insensitive), or nil when none is close enough to be a typo:
-- at most 2 edits, 1 for names of up to 3 characters. candidates is an array, or a table whose keys are the names.
function M.suggest(name, candidates)
  if type(name) ~= "string" or type(candidates) ~= "table" then return nil end
  local list = candidates
  if candidates[1] == nil then
    list = {}
    for k in pairs(candidates) do
      if type(k) == "string" then list[#list + 1] = k end
    end
    table.sort(list)
  end
  local lname = name:lower()
  local best, best_d
  for _, c in ipairs(list) do
    if type(c) == "string" then
      local d = distance(lname, c:lower())
      if not best_d or d < best_d then best, best_d = c, d end
    end
  end
  local limit = #name <= 3 and 1 or 2
  if best and best_d <= limit and best_d < #name then return best end
  return nil
end

-- Lists ---------------------------------------------------------------------------------------------------------

local SEPARATORS = "[^,;\r\n]+"

-- M.split_list - a list value as an array of trimmed, non-empty strings. value is an array of strings or one
-- string whose entries are separated by commas, semicolons or newlines. Returns the array, or nil, err.
function M.split_list(value)
  local out = {}
  if type(value) == "string" then
    for raw in value:gmatch(SEPARATORS) do
      local s = trim(raw)
      if s ~= "" then out[#out + 1] = s end
    end
    return out
  end
  if type(value) ~= "table" then
    return nil, "got " .. describe(value) .. "; expected a list of strings"
  end
  local n = 0
  for k in next, value do
    if math.type(k) ~= "integer" or k < 1 then
      return nil, "got key " .. describe(k) .. "; expected a list of strings"
    end
    if k > n then n = k end
  end
  for i = 1, n do
    local v = value[i]
    if v ~= nil then
      if type(v) ~= "string" then
        return nil, "got " .. describe(v) .. " at [" .. i .. "]; expected a string"
      end
      local s = trim(v)
      if s ~= "" then out[#out + 1] = s end
    end
  end
  return out
end

-- Addresses and host values -------------------------------------------------------------------------------------

local parse_ipv4, parse_ipv6 = ip.parse_ipv4, ip.parse_ipv6

local function is_ip(s)
  return parse_ipv4(s) ~= nil or parse_ipv6(s) ~= nil
end

local function is_loopback(host, family)
  if family == "inet" then return parse_ipv4(host)[1] == 127 end
  local w = parse_ipv6(host)
  for i = 1, 7 do
    if w[i] ~= 0 then return false end
  end
  return w[8] == 1
end

local function parse_port(text)
  local port = text and text:match("^%d+$") and tonumber(text)
  if not port or port < 1 or port > 65535 then return nil end
  return math.tointeger(port)
end

local function is_hostname(s)
  s = s:gsub("%.$", "")
  if s == "" or #s > 253 then return false end
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if #label < 1 or #label > 63 or not label:match("^[%w_][%w_%-]*$") or label:match("%-$") then
      return false
    end
  end
  return true
end

local HOST_EXPECT = 'expected "name", "name:port" or "[ip]:port"'

-- M.parse_host - a host value (routing.relay_host, smart_host, routes values): "name", "name:port", "[ip]" or
-- "[ip]:port". Returns { text = value, host = name or ip (no brackets), port = number or nil, literal = boolean },
-- or nil, err where err says what was expected.
function M.parse_host(value)
  if type(value) ~= "string" then return nil, "expected a string" end
  local s = trim(value)
  local host, port_text, literal
  local ip, rest = s:match("^%[([^%]]*)%](.*)$")
  if ip then
    if not is_ip(ip) then return nil, 'expected an IP address inside the brackets, as in "[192.0.2.9]:25"' end
    host, literal = ip, true
    if rest ~= "" then
      port_text = rest:match("^:(.*)$")
      if not port_text then return nil, HOST_EXPECT end
    end
  else
    host, port_text = s:match("^([^:]*):(.*)$")
    if not host then host = s end
    if parse_ipv4(host) or parse_ipv6(s) then
      return nil, 'expected an IP address in brackets, as in "[192.0.2.9]:25"'
    end
    if not is_hostname(host) then return nil, HOST_EXPECT end
    literal = false
  end
  local port
  if port_text then
    port = parse_port(port_text)
    if not port then return nil, "expected a port from 1 to 65535 after the colon" end
  end
  return { text = s, host = host, port = port, literal = literal }
end

-- Paths ---------------------------------------------------------------------------------------------------------

-- clean_path - remove "." segments, empty segments and "name/.." pairs; keeps leading ".." of a relative path.
local function clean_path(p)
  local absolute = p:sub(1, 1) == "/"
  local out = {}
  for seg in p:gmatch("[^/]+") do
    if seg == ".." then
      if #out > 0 and out[#out] ~= ".." then
        out[#out] = nil
      elseif not absolute then
        out[#out + 1] = ".."
      end
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  local s = table.concat(out, "/")
  if absolute then return "/" .. s end
  return s == "" and "." or s
end

local function resolve_path(basedir, p)
  if p:sub(1, 1) == "/" then return clean_path(p) end
  return clean_path(basedir .. "/" .. p)
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function display_name(chunkname)
  local c = chunkname:sub(1, 1)
  if c == "@" or c == "=" then return chunkname:sub(2) end
  return chunkname
end

-- Where errors happen -------------------------------------------------------------------------------------------
--
-- A ctx describes one file: ctx.file (the name used in messages), ctx.code (its lines, comments removed),
-- ctx.top[name] = { first = line, last = line } for each top-level assignment, or ctx.whole for a file that
-- returns its table. A node is a place in the configuration: { ctx, parent, key, value }.

local function strip_comment(line)
  local i, n, q = 1, #line, nil
  while i <= n do
    local c = line:sub(i, i)
    if q then
      if c == "\\" then i = i + 1 elseif c == q then q = nil end
    elseif c == '"' or c == "'" then
      q = c
    elseif c == "-" and line:sub(i + 1, i + 1) == "-" then
      return line:sub(1, i - 1)
    end
    i = i + 1
  end
  return line
end

local function new_ctx(file, source, basedir, opts, state)
  local code = {}
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do code[#code + 1] = strip_comment(line) end
  return { file = file, code = code, top = {}, basedir = basedir, opts = opts, state = state }
end

local function child(at, key, value)
  return { ctx = at.ctx, parent = at, key = key, value = value }
end

local function keys_of(at)
  local keys, nodes = {}, {}
  while at and at.key ~= nil do
    table.insert(keys, 1, at.key)
    table.insert(nodes, 1, at)
    at = at.parent
  end
  return keys, nodes
end

local function path_text(at)
  local keys = keys_of(at)
  local out = {}
  for i, k in ipairs(keys) do
    if i == 1 then
      out[1] = tostring(k)
    elseif math.type(k) == "integer" then
      out[#out + 1] = "[" .. k .. "]"
    elseif is_identifier(k) then
      out[#out + 1] = "." .. k
    else
      out[#out + 1] = "[" .. (type(k) == "string" and quote(k) or tostring(k)) .. "]"
    end
  end
  return table.concat(out)
end

local function escape_pattern(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- find_line - the first line in first..last matching one of the plain strings or patterns.
local function find_line(code, first, last, plains, patterns)
  for l = first, math.min(last, #code) do
    local line = code[l]
    for _, p in ipairs(plains) do
      if line:find(p, 1, true) then return l end
    end
    for _, p in ipairs(patterns) do
      if line:find(p) then return l end
    end
  end
  return nil
end

-- value_hint - text that shows where a list entry is in the file: a string entry, or a string inside a table
-- entry ({ "addr:port", … }, { address = … }, else any string value).
local function value_hint(v)
  if type(v) == "string" then return v end
  if type(v) ~= "table" then return nil end
  local h = rawget(v, 1)
  if type(h) ~= "string" then h = rawget(v, "address") end
  if type(h) == "string" then return h end
  local keys = {}
  for k, x in next, v do
    if type(k) == "string" and type(x) == "string" and x ~= "" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys[1] and v[keys[1]]
end

-- line_of - best-effort line of a node: start at the top-level assignment and look forward for each key in turn.
local function line_of(at)
  local ctx = at.ctx
  local keys, nodes = keys_of(at)
  local range = ctx.top[keys[1]] or ctx.whole
  if not range then return nil end
  local line, last = range.first, range.last
  for i = 2, #keys do
    local k = keys[i]
    local found
    if i == #keys and nodes[i].value == nil then
      break   -- a missing key: its parent is the place to look
    elseif type(k) == "string" then
      local plains = { '["' .. k .. '"]', "['" .. k .. "']" }
      local patterns = {}
      if is_identifier(k) then patterns[1] = "%f[%w_]" .. k .. "%s*=%f[^=]" end
      found = find_line(ctx.code, line, last, plains, patterns)
      if not found and i == 2 and is_identifier(k) and is_identifier(keys[1]) then
        -- assigned in a statement of its own after the section: server.listen = { … }
        found = find_line(ctx.code, last + 1, #ctx.code, {},
                          { "%f[%w_]" .. keys[1] .. "%s*%.%s*" .. k .. "%f[^%w_]" })
        if found then last = #ctx.code end
      end
    else
      local hint = value_hint(nodes[i].value)
      if hint and hint ~= "" then found = find_line(ctx.code, line, last, { hint }, {}) end
    end
    if not found then break end
    line = found
  end
  return line
end

local function report(list, at, text)
  local ctx = at.ctx
  local line = line_of(at)
  list[#list + 1] = {
    file = ctx.file, rank = ctx.rank or 1, line = line,
    text = ctx.file .. (line and (":" .. line) or "") .. ": " .. path_text(at) .. ": " .. text,
  }
end

local function err(at, text) report(at.ctx.state.errors, at, text) end
local function warn(at, text) report(at.ctx.state.warnings, at, text) end

local function type_error(at, v, expected)
  err(at, "got " .. describe(v) .. "; expected " .. expected)
  return nil
end

-- Schema checks -------------------------------------------------------------------------------------------------
--
-- A check is function(value, node) -> the normalised value, or nil after reporting an error. Records call a
-- field's check only when the value is present; a missing field gets its default (a function is called with the
-- node, so nested records fill their own defaults).

local function whole(min, max)
  local expect = max and string.format("a whole number from %d to %d", min, max)
                 or string.format("a whole number >= %d", min)
  return function(v, at)
    local n = type(v) == "number" and math.tointeger(v)
    if not n or n < min or (max and n > max) then return type_error(at, v, expect) end
    return n
  end
end

local function number(min, strict)
  local expect = string.format("a number %s %d", strict and ">" or ">=", min)
  return function(v, at)
    if type(v) ~= "number" or v ~= v or v == math.huge or v < min or (strict and v == min) then
      return type_error(at, v, expect)
    end
    return v
  end
end

local function boolean(v, at)
  if type(v) ~= "boolean" then return type_error(at, v, "true or false") end
  return v
end

local function text(v, at)
  if type(v) ~= "string" or v == "" then return type_error(at, v, "a non-empty string") end
  return v
end

local function path(v, at)
  if type(v) ~= "string" or trim(v) == "" or v:find("\0", 1, true) then
    return type_error(at, v, "a path (a non-empty string)")
  end
  return resolve_path(at.ctx.basedir, trim(v))
end

local function enum(...)
  local values = { ... }
  local expect = "one of " .. quoted_list(values)
  return function(v, at)
    for _, x in ipairs(values) do
      if v == x then return v end
    end
    local msg = "got " .. describe(v) .. "; expected " .. expect
    local near = type(v) == "string" and M.suggest(v, values)
    if near then msg = msg .. ' (did you mean "' .. near .. '"?)' end
    err(at, msg)
    return nil
  end
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

-- list_keys - the integer keys 1..n of an array, after reporting every other key as an error.
local function list_length(v, at, what)
  local n = 0
  for _, k in ipairs(sorted_keys(v)) do
    if math.type(k) == "integer" and k >= 1 then
      if k > n then n = k end
    else
      err(child(at, k, v[k]), "unexpected named key in a list; expected " .. what)
    end
  end
  return n
end

-- list - a list field: an array of entries or one string with entries separated by commas, semicolons or
-- newlines. Strings are trimmed and empties dropped; item (optional) checks and converts each string entry;
-- with accept_tables, table entries go to item too. Returns the entries and, in parallel, their nodes.
local function list(item, what, accept_tables)
  what = what or "a string"
  local expect = "a list of " .. (what:gsub("^an? ", "")) .. " entries, or one string with entries separated by commas"
  return function(v, at)
    local out, nodes = {}, {}
    local function add(entry, node)
      if item then entry = item(entry, node) end
      if entry ~= nil then
        out[#out + 1] = entry
        nodes[#out] = node
      end
    end
    if type(v) == "string" then
      local i = 0
      for raw in v:gmatch(SEPARATORS) do
        local s = trim(raw)
        if s ~= "" then
          i = i + 1
          add(s, child(at, i, s))
        end
      end
      return out, nodes
    end
    if type(v) ~= "table" then return type_error(at, v, expect) end
    for i = 1, list_length(v, at, what) do
      local e = v[i]
      local node = child(at, i, e)
      if type(e) == "string" then
        local s = trim(e)
        if s ~= "" then add(s, node) end
      elseif type(e) == "table" and accept_tables then
        add(e, node)
      elseif e ~= nil then
        type_error(node, e, what)
      end
    end
    return out, nodes
  end
end

-- array - an array (no string form) whose entries all go to item.
local function array(item, what, non_empty)
  return function(v, at)
    if type(v) ~= "table" then return type_error(at, v, "a list of " .. what) end
    local n = list_length(v, at, what)
    local out = {}
    for i = 1, n do
      local e = v[i]
      if e ~= nil then out[#out + 1] = item(e, child(at, i, e)) end
    end
    if non_empty and next(v) == nil then return type_error(at, v, "a non-empty list of " .. what) end
    return out
  end
end

-- unknown_keys - report each key of v that names no field, suggesting the nearest field.
local function unknown_keys(v, at, known, names)
  for _, k in ipairs(sorted_keys(v)) do
    if not known[k] then
      local node = child(at, k, v[k])
      if type(k) == "string" then
        local near = M.suggest(k, names)
        if near then
          err(node, 'unknown key; did you mean "' .. near .. '"?')
        else
          err(node, "unknown key; expected one of " .. table.concat(names, ", "))
        end
      else
        err(node, "unexpected list entry; expected named keys: " .. table.concat(names, ", "))
      end
    end
  end
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- record - a table of named fields: { name, check, default = value or function(node), required = "what" }.
local function record(fields, post)
  local known, names = {}, {}
  for _, f in ipairs(fields) do
    known[f[1]] = true
    names[#names + 1] = f[1]
  end
  local function check(v, at)
    if type(v) ~= "table" then return type_error(at, v, "a table with the keys " .. table.concat(names, ", ")) end
    unknown_keys(v, at, known, names)
    local out = {}
    for _, f in ipairs(fields) do
      local name, x = f[1], v[f[1]]
      if x ~= nil then
        out[name] = f[2](x, child(at, name, x))
      elseif f.required then
        err(child(at, name), "missing; expected " .. f.required)
      elseif type(f.default) == "function" then
        out[name] = f.default(child(at, name))
      else
        out[name] = copy(f.default)
      end
    end
    if post then post(out, at, v) end
    return out
  end
  return check
end

-- filled - the default of a nested record: the record checked as if it were empty.
local function filled(check)
  return function(at) return check({}, at) end
end

-- map - a table from names to values; key checks (and may rename) the key, value the value.
local function map(key, value, what)
  return function(v, at)
    if type(v) ~= "table" then return type_error(at, v, what) end
    local out = {}
    for _, k in ipairs(sorted_keys(v)) do
      local node = child(at, k, v[k])
      local name = key(k, node)
      if name ~= nil then out[name] = value(v[k], node) end
    end
    return out
  end
end

-- Section schemas -----------------------------------------------------------------------------------------------

local LISTEN_EXPECT = '"ipv4:port" or "[ipv6]:port", such as "127.0.0.1:2525" or "[::1]:2525"'

local function parse_listen(s, at)
  local host, port_text = s:match("^%[([^%]]*)%]:([^:]*)$")
  local family = "inet6"
  if host then
    if not parse_ipv6(host) then return type_error(at, s, LISTEN_EXPECT) end
  else
    host, port_text = s:match("^([%d%.]+):([^:]*)$")
    family = "inet"
    if not host or not parse_ipv4(host) then return type_error(at, s, LISTEN_EXPECT) end
  end
  local port = parse_port(port_text)
  if not port then
    err(at, "got " .. describe(s) .. ", a bad port; expected a port from 1 to 65535")
    return nil
  end
  return { text = s, host = host, port = port, family = family }
end

local listener_options = record {
  { "tls", enum("starttls", "implicit", "none") },
  { "submission", boolean, default = false },
}

local function listener(v, at)
  local ctx = at.ctx
  local addr, opts_v = v, {}
  if type(v) == "table" then
    addr = v[1]
    opts_v = {}
    for k, x in pairs(v) do
      if k ~= 1 then opts_v[k] = x end
    end
    if type(addr) ~= "string" then
      return type_error(child(at, 1, addr), addr, "the address first: { \"addr:port\", tls = …, submission = … }")
    end
  end
  local l = parse_listen(trim(addr), at)
  local o = listener_options(opts_v, at)
  if not l or not o then return nil end
  l.submission = o.submission
  if o.tls and o.tls ~= "none" and not ctx.has_tls then
    err(child(at, "tls"), 'got "' .. o.tls .. '" but no certificate is configured; '
        .. "expected tls = { cert = …, key = … } to be set")
  end
  l.tls = o.tls or (ctx.has_tls and "starttls" or "none")
  if l.submission and l.tls == "none" then
    warn(at, "a submission listener without TLS: AUTH is offered only under TLS, so no client can send here; "
         .. "expected tls = { cert = …, key = … } and tls = \"starttls\" or \"implicit\"")
  elseif l.tls == "none" and not is_loopback(l.host, l.family) then
    warn(at, "listening on a public address without TLS; expected tls = { cert = …, key = … } "
         .. "or a loopback address")
  end
  return l
end

local function listen_post(list_out, nodes)
  local seen = {}
  for i, l in ipairs(list_out) do
    local key = l.family .. " " .. l.host .. " " .. l.port
    if seen[key] then err(nodes[i], "listed twice; expected each address once") end
    seen[key] = true
  end
end

local function name_entry(v, at)
  if not v:match("^[%w_][%w_%-]*$") then
    return type_error(at, v, "a rule module name (letters, digits, _ and -)")
  end
  return v
end

local function unique(check, what)
  return function(v, at)
    local out, nodes = check(v, at)
    if out then
      local seen = {}
      for i, x in ipairs(out) do
        if seen[x] then err(nodes[i], '"' .. x .. '" is listed twice; expected each ' .. what .. " once") end
        seen[x] = true
      end
    end
    return out
  end
end

local listen_list = list(listener, '"addr:port" or { "addr:port", tls = …, submission = … }', true)

local server = record({
  { "hostname", function(v, at)
      if type(v) ~= "string" or not is_hostname(trim(v)) then return type_error(at, v, "a host name") end
      return trim(v)
    end, default = function(at) return at.ctx.opts.hostname end },
  { "listen", function(v, at)
      local out, nodes = listen_list(v, at)
      if out then listen_post(out, nodes) end
      return out
    end, default = function(at) return listen_list({ "0.0.0.0:25", "[::]:25" }, at) end },
  { "spool", path, required = "the spool directory, as in spool = \"/var/spool/luamta\"" },
  { "user", text },
  { "workers", whole(0) },
  { "rules", unique(list(name_entry, "a rule module name"), "module"),
    default = { "connection", "filters", "sender", "relay", "recipient" } },
  { "extra_rules", unique(list(name_entry, "a rule module name"), "module"), default = {} },
  { "rules_dir", path, default = function(at) return clean_path(at.ctx.opts.sysconfdir .. "/luamta/rules") end },
  { "max_message_size", whole(1024), default = 26214400 },
  { "max_recipients", whole(1), default = 100 },
  { "max_hops", whole(1), default = 50 },
  { "max_connections", whole(1), default = 2000 },
  { "max_connections_per_ip", whole(1), default = 50 },
  { "timeouts", record {
      { "command", number(0, true), default = 300 },
      { "data", number(0, true), default = 600 },
    }, default = { command = 300, data = 600 } },
  { "bare_newline", enum("reject", "normalize"), default = "reject" },
  { "greeting_delay", number(0), default = 0 },
}, function(out, at)
  if out.workers == nil or out.workers == 0 then out.workers = at.ctx.opts.ncpu end
end)

-- tls.certs: more certificate/key pairs next to tls.cert/tls.key (an ECDSA and an RSA certificate side by side;
-- docs/tls.md, "Several certificates"). At most 4 pairs in all.
local tls_pair = record {
  { "cert", path, required = "the certificate file of the pair" },
  { "key", path, required = "the private key file of the pair" },
}
local TLS_PAIRS_MAX = 4

local tls = record({
  { "cert", path },
  { "key", path },
  { "certs", array(tls_pair, "pair tables { cert = …, key = … }"), default = {} },
  { "ticket_period", whole(1, 604800), default = 43200 },
}, function(out, at)
  if out.cert and not out.key then
    err(child(at, "key"), "missing; expected the private key file that goes with tls.cert")
  elseif out.key and not out.cert then
    err(child(at, "cert"), "missing; expected the certificate file that goes with tls.key")
  end
  -- pairs: every pair, tls.cert/tls.key first, for the C core
  out.pairs = {}
  if out.cert and out.key then out.pairs[1] = { cert = out.cert, key = out.key } end
  for _, p in ipairs(out.certs) do
    if p.cert and p.key then out.pairs[#out.pairs + 1] = p end
  end
  if #out.pairs > TLS_PAIRS_MAX then
    err(child(at, "certs"), ("got %d certificates in all; expected at most %d"):format(#out.pairs, TLS_PAIRS_MAX))
  end
  if not out.cert and out.pairs[1] then      -- the first pair is the one check and the workers name first
    out.cert, out.key = out.pairs[1].cert, out.pairs[1].key
  end
end)

local function dns_server(v, at)
  local ok = is_ip(v)
  if not ok then
    local ip, port = v:match("^([%d%.]+):([^:]*)$")
    if not ip then ip, port = v:match("^%[([^%]]*)%]:([^:]*)$") end
    if not ip then ip = v:match("^%[([^%]]*)%]$") end
    ok = ip and is_ip(ip) and (port == nil or parse_port(port) ~= nil)
  end
  if not ok then return type_error(at, v, '"ip", "ip:port" or "[ipv6]:port"') end
  return v
end

local dns = record {
  { "servers", list(dns_server, "a name server address") },
  { "timeout", number(0, true), default = 5 },
  { "tries", whole(1), default = 2 },
  { "verify_ptr", enum("forward_confirmed", "ptr_only"), default = "forward_confirmed" },
}

-- The syslog facilities log.c knows (log_facility_from_name), and the tag: it becomes "<ident>/<service>[pid]:".
local FACILITIES = { "mail", "daemon", "user", "auth", "authpriv", "local0", "local1", "local2", "local3", "local4",
  "local5", "local6", "local7" }

local function log_ident(v, at)
  if type(v) ~= "string" or not v:match("^[%w][%w_.%-]*$") or #v > 31 then
    return type_error(at, v, 'a syslog tag such as "luamta" or "postfix" (letters, digits, "-", "_", ".")')
  end
  return v
end

local log = record({
  { "level", enum("debug", "info", "notice", "warning", "error"), default = "info" },
  { "syslog", boolean, default = false },
  { "file", path },
  { "facility", enum(table.unpack(FACILITIES)), default = "mail" },
  { "ident", log_ident, default = "luamta" },
}, function(out, at)
  if out.file and out.syslog then
    err(child(at, "file", out.file), "log.file and log.syslog = true both name a destination; expected one of them")
  end
end)

local strings = list()

local function address(v, at)
  if type(v) ~= "string" or not trim(v):match("^[^@%s]+@[^@%s]+$") then
    return type_error(at, v, 'an address such as "jdoe@example.com"')
  end
  return trim(v)
end

local user = record {
  { "address", address, required = 'an address such as address = "jdoe@example.com"' },
  { "aliases", list(address, "an address"), default = {} },
  { "name", text },
  { "password", text },
}

local function group_name(k, at)
  if type(k) ~= "string" or k == "" or k:find("[%.@%s,;]") or k:find("^[%%%[%*]") then
    err(at, "bad group name; expected a name without dots, \"@\", spaces, or a leading \"%\", \"[\" or \"*\"")
    return nil
  end
  return k
end

local users = array(user, "user tables { address = … }")
local groups = map(group_name, strings, "a table of groups: { Name = { \"entry\", … } }")

local directory_file = record {
  { "users", users, default = {} },
  { "groups", groups, default = {} },
}

local load_directory_file -- defined with the sandbox below

local directory = record({
  { "users", users, default = {} },
  { "groups", groups, default = {} },
  { "file", path },
  { "lookup", enum("full", "localpart", "full_then_localpart"), default = "full_then_localpart" },
}, function(out, at)
  local inline_users = #out.users
  if out.file then
    local extra = load_directory_file(out.file, child(at, "file", out.file))
    if extra then
      for _, u in ipairs(extra.users) do out.users[#out.users + 1] = u end
      for name, members in pairs(extra.groups) do
        if out.groups[name] then
          err(child(extra.at_groups, name, members),
              '"' .. name .. '" is also defined inline; expected each group once')
        else
          out.groups[name] = members
        end
      end
    end
  end
  -- AUTH names and lookups must lead to one user
  local seen = {}
  for i, u in ipairs(out.users) do
    local names = { u.address }
    for _, a in ipairs(u.aliases or {}) do names[#names + 1] = a end
    for _, n in ipairs(names) do
      local key = n:lower()
      if seen[key] and seen[key] ~= i then
        local where = i <= inline_users and child(child(at, "users"), i, u) or child(at, "file", out.file)
        err(where, '"' .. n .. '" belongs to two users; expected each address and alias once')
      end
      seen[key] = i
    end
  end
end)

local relay = record {
  { "allow_to", strings, default = {} },
  { "deny_to", strings, default = { "*" } },
  { "allow_from", strings, default = {} },
  { "deny_from", strings, default = {} },
  { "precedence", enum("allow", "deny"), default = "allow" },
  { "enforce", function(v, at)
      local e = enum("external", "all", "none")(v, at)
      if e == "none" then
        warn(at, 'open relay: anyone may send mail anywhere through this server; expected "external" or "all"')
      end
      return e
    end, default = "external" },
  { "authenticated", enum("allow", "check"), default = "allow" },
  { "exclude", strings, default = {} },
}

local blacklist = record {
  { "enabled", boolean, default = false },
  { "hosts", strings, default = {} },
  { "action", enum("log", "tag", "reject"), default = "log" },
  { "message", text },
}

local whitelist = record {
  { "enabled", boolean, default = false },
  { "hosts", strings, default = {} },
  { "action", enum("skip", "log", "tag"), default = "skip" },
}

local dnsbl = record {
  { "enabled", boolean, default = false },
  { "sites", strings, default = {} },
  { "action", enum("log", "tag", "reject"), default = "log" },
  { "message", text },
}

local dnswl = record {
  { "enabled", boolean, default = false },
  { "sites", strings, default = {} },
  { "action", enum("skip", "log", "tag"), default = "skip" },
}

local connection = record {
  { "verify_hostname", boolean, default = false },
  { "allow", strings, default = {} },
  { "deny", strings, default = {} },
  { "max_errors", whole(1), default = 20 },
  -- Postfix's smtpd_junk_command_limit: HELO/EHLO/RSET/NOOP/VRFY/HELP beyond it count as errors.
  { "max_junk_commands", whole(0), default = 100 },
}

local sender = record {
  { "verify_domain", boolean, default = false },
  { "allow", strings, default = {} },
  { "deny", strings, default = {} },
}

local recipient = record {
  { "verify_local", boolean, default = false },
  { "allow", strings, default = {} },
  { "deny", strings, default = {} },
}

local inbound = record {
  { "relay", relay, default = filled(relay) },
  { "blacklist", blacklist, default = filled(blacklist) },
  { "whitelist", whitelist, default = filled(whitelist) },
  { "dnsbl", dnsbl, default = filled(dnsbl) },
  { "dnswl", dnswl, default = filled(dnswl) },
  { "connection", connection, default = filled(connection) },
  { "sender", sender, default = filled(sender) },
  { "recipient", recipient, default = filled(recipient) },
}

local function host_value(v, at)
  local h, why = M.parse_host(v)
  if not h then return type_error(at, v, (why:gsub("^expected ", ""))) end
  return h
end

local function route_key(k, at)
  if type(k) == "string" and (k:match("^%%[%w_][%w_%-]*$") or (is_hostname(k) and not is_ip(k))) then
    return k
  end
  err(at, 'bad destination; expected a domain such as ["partner.example"] '
      .. 'or a Domino domain such as ["%AcmeEast"]')
  return nil
end

local routing = record({
  { "smtp_outbound", boolean, default = true },
  { "relay_host", host_value },
  { "smart_host", host_value },
  { "smart_host_all", boolean, default = false },
  { "routes", map(route_key, host_value, 'a table such as { ["partner.example"] = "[192.0.2.9]:25" }'),
    default = {} },
  { "port", whole(1, 65535), default = 25 },
  { "retry", array(number(0, true), "seconds (numbers > 0)", true), default = { 60, 300, 900, 1800, 3600 } },
  { "max_queue_time", number(0, true), default = 432000 },
  { "delay_warning", number(0), default = 14400 },
  { "max_per_domain", whole(1), default = 10 },
  -- Postfix's qmgr_message_active_limit: messages the router holds in memory at once.
  { "active_limit", whole(1), default = 10000 },
  { "tls", enum("opportunistic", "required", "none"), default = "opportunistic" },
  -- Not in SPEC (it is silent): Postfix's smtp_connect_timeout and its reply timeouts.
  { "timeouts", record {
      { "connect", number(0, true), default = 30 },
      { "reply", number(0, true), default = 300 },
    }, default = { connect = 30, reply = 300 } },
}, function(out)
  local port = out.port or 25
  local hosts = { out.relay_host, out.smart_host }
  for _, h in pairs(out.routes or {}) do hosts[#hosts + 1] = h end
  for _, h in pairs(hosts) do
    if h.port == nil then h.port = port end
  end
end)

local function maildir(v, at)
  if type(v) ~= "string" or trim(v) == "" then
    return type_error(at, v, 'a path template such as "<spool>/mailboxes/%d/%u"')
  end
  v = trim(v)
  for seq in v:gmatch("%%(.?)") do
    if seq ~= "d" and seq ~= "u" and seq ~= "%" then
      err(at, 'got "%' .. seq .. '" in ' .. quote(v) .. "; expected only %d (domain), %u (local part) or %%")
      return nil
    end
  end
  if not v:find("%%u") then
    warn(at, "no %u in the template: every user of a domain shares one Maildir; expected a template with %u")
  end
  return v
end

-- delivery.lmtp: local recipients go to this LMTP server instead of the Maildir (docs/admin.md, "LMTP").
local LMTP_EXPECT = '"unix:/path/to/socket", "ipv4:port" or "[ipv6]:port", such as "unix:/run/dovecot/lmtp"'
local function lmtp(v, at)
  if type(v) ~= "string" then return type_error(at, v, LMTP_EXPECT) end
  local sock = v:match("^unix:(.+)$")
  if sock then
    if sock:sub(1, 1) ~= "/" then sock = resolve_path(at.ctx.basedir, sock) end
    if #sock > 107 then
      err(at, "got a socket path of " .. #sock .. " octets; expected at most 107 (the limit of a Unix socket)")
      return nil
    end
    return "unix:" .. sock
  end
  local l = parse_listen(v, at)
  return l and l.text or nil
end

local delivery = record {
  { "maildir", maildir },
  { "lmtp", lmtp },
}

-- metrics.listen: where the master serves GET /metrics (docs/investigating.md, "Metrics"); off when absent.
local function metrics_listen(v, at)
  if type(v) ~= "string" then return type_error(at, v, LISTEN_EXPECT) end
  local l = parse_listen(v, at)
  if not l then return nil end
  if not is_loopback(l.host, l.family) then
    warn(at, "the metrics endpoint on " .. v .. " is open to anyone who can reach it; prefer a loopback "
      .. "address, or a firewall")
  end
  return l.text
end

local metrics = record {
  { "listen", metrics_listen },
}

-- trace: the records luamta explain reads (docs/investigating.md).
local trace = record {
  { "enabled", boolean, default = true },
  { "keep_days", whole(1, 366), default = 7 },
  { "max_mb", whole(1), default = 1024 },
}

-- Call outs (docs/callouts.md): mta.http.request and mta.redis(NAME). ------------------------------------------
local http = record {
  { "timeout", number(0, true), default = 10 },
  { "max_response", whole(1), default = 1048576 },
  { "failures", whole(0), default = 5 },      -- circuit breaker: failures in a row that open it (0: never)
  { "cooldown", number(0, true), default = 30 },
  { "ca_file", path },                        -- https: CA certificates (PEM) instead of the system store
}

-- A Redis address: "ip:port", "[ipv6]:port" or "unix:/path". No host names: hiredis would resolve them with
-- getaddrinfo() on the event loop.
local function redis_address(v, at)
  if type(v) == "string" then
    local sock = v:match("^unix:(/.+)$")
    if sock then return v end
    local h, port = v:match("^([%d%.]+):(%d+)$")
    if not h then h, port = v:match("^%[([^%]]*)%]:(%d+)$") end
    if h and is_ip(h) and parse_port(port) then return v end
  end
  return type_error(at, v, '"ip:port", "[ipv6]:port" or "unix:/path" (an address, not a host name)')
end

local redis_server = record {
  { "address", redis_address, required = '"ip:port" or "unix:/path"' },
  { "password", text },
  { "db", whole(0, 1000), default = 0 },
  { "timeout", number(0, true), default = 1 },
  { "pool", whole(1, 8), default = 2 },
  { "failures", whole(0), default = 5 },
  { "cooldown", number(0, true), default = 30 },
}

local function redis_name(k, at)
  if type(k) ~= "string" or not k:match("^[%w_%-]+$") or #k > 63 then
    return type_error(at, k, "a name of letters, digits, _ and - (redis = { default = { address = … } })")
  end
  return k
end
local redis = map(redis_name, redis_server, 'a table of Redis servers: { NAME = { address = "127.0.0.1:6379" } }')

-- Bundled rules that call out (docs/callouts.md): settings of rules/greylist.lua.
local on_error = enum("accept", "tempfail", "reject")
local greylist = record {
  { "delay", whole(0), default = 300 },
  { "window", whole(1), default = 14400 },
  { "pass", whole(1), default = 3110400 },
  { "redis", text },                          -- a name in redis = { … }; none: in memory
  { "on_error", on_error, default = "accept" },
}

-- Settings of rules/ratelimit.lua.
local rate_limit = record({
  { "key", enum("ip", "sender", "user"), required = '"ip", "sender" or "user"' },
  { "messages", whole(1) },
  { "recipients", whole(1) },
  { "window", whole(1), default = 3600 },
}, function(out, at)
  if out.messages == nil and out.recipients == nil then
    err(at, "expected messages = N, recipients = N or both")
  end
end)
local ratelimit = record {
  { "redis", text },
  { "on_error", on_error, default = "accept" },
  { "limits", array(rate_limit, "limits { key = …, messages = N, recipients = N, window = SECONDS }"), default = {} },
}

-- dkim: the keys of rules/dkim_sign.lua (docs/dkim.md). Each key file is read here (as server.user, for luamta
-- check), so an unreadable file or one that is no PEM private key is an error with its line; the rule parses the
-- key with mbedTLS when it loads, and names `where` in its error.
local DKIM_KEY_EXPECT = "a PEM RSA private key without a passphrase (openssl genrsa -out FILE 2048)"

local function dkim_key_file(v, at)
  local file = path(v, at)
  if not file then return nil end
  local f, msg = io.open(file, "rb")
  if not f then
    err(at, "cannot read it (" .. tostring(msg) .. "); expected " .. DKIM_KEY_EXPECT .. " that server.user can read")
    return nil
  end
  local head = f:read(65536) or ""
  f:close()
  if head:find("ENCRYPTED", 1, true) then
    err(at, "the key has a passphrase; expected " .. DKIM_KEY_EXPECT)
  elseif not head:find("-----BEGIN [%u ]*PRIVATE KEY-----") then
    err(at, (head:find("-----BEGIN [%u ]*PUBLIC KEY-----") and "a public key" or "no PEM private key")
      .. " in " .. file .. "; expected " .. DKIM_KEY_EXPECT)
  end
  return file
end

local function dkim_name(what)
  return function(v, at)
    local s = type(v) == "string" and trim(v):lower():gsub("%.$", "")
    if not s or s == "" or #s > 253 or not s:match("^[%w][%w%-%.]*$") or s:find("..", 1, true)
      or s:match("[%-%.]$") then
      return type_error(at, v, what)
    end
    return s
  end
end

local dkim_entry = record({
  { "domain", dkim_name("a domain name, as in \"example.com\""), required = 'the From: domain it signs, as in "example.com"' },
  { "selector", dkim_name("a selector of letters, digits, - and ., as in \"s1\""),
    required = 'the selector published in DNS, as in "s1" for s1._domainkey.example.com' },
  { "key", dkim_key_file, required = "the private key file" },
}, function(out, at)
  local key_at = child(at, "key", out.key)
  local line = line_of(key_at)
  out.where = at.ctx.file .. (line and (":" .. line) or "") .. ": " .. path_text(key_at)
end)

local dkim = record {
  { "sign", function(v, at)
      local out = array(dkim_entry, "keys { domain = …, selector = …, key = … }")(v, at)
      local seen = {}
      for i, e in ipairs(out or {}) do
        if e.domain and seen[e.domain] then
          err(child(at, i, v[i]), ('"%s" is listed twice; expected one key per domain'):format(e.domain))
        end
        if e.domain then seen[e.domain] = true end
      end
      return out
    end, default = {} },
}

-- Settings of rules/auth_throttle.lua.
local auth_throttle = record {
  { "redis", text },                          -- a name in redis = { … }; the rule needs one
  { "on_error", on_error, default = "accept" },
  { "failures", whole(1), default = 10 },     -- failed AUTH attempts from one address ...
  { "window", whole(1), default = 900 },      -- ... within this many seconds, then AUTH is refused
}

-- Settings of rules/rspamd.lua. A header name, or false for none.
local function header_name(v, at)
  if v == false then return false end
  if type(v) ~= "string" or not v:match("^[!-9;-~]+$") or #v > 76 then
    return type_error(at, v, "a header field name (printable ASCII without ':' or spaces), or false for none")
  end
  return v
end
local function http_url(v, at)
  if type(v) ~= "string" or not v:match("^[hH][tT][tT][pP][sS]?://[^/%s]+[^%s]*$") then
    return type_error(at, v, 'an http url, as in "http://127.0.0.1:11333"')
  end
  return v
end
local rspamd = record({
  { "url", http_url, default = "http://127.0.0.1:11333" },   -- /checkv2 is added when the url has no path
  { "timeout", number(0, true), default = 5 },
  { "max_size", whole(1), default = 10485760 },               -- larger messages are not scanned
  { "on_error", on_error, default = "accept" },
  { "spam_header", header_name, default = "X-Spam" },         -- "Yes" on the add header action
  { "score_header", header_name, default = "X-Spam-Score" },  -- on every scanned message
}, function(out, at)
  if out.timeout and out.timeout > 3600 then err(child(at, "timeout", out.timeout), "expected at most 3600 seconds") end
end)

local SCHEMA = {
  server = server, tls = tls, dns = dns, log = log, local_domains = strings, directory = directory,
  inbound = inbound, routing = routing, delivery = delivery, metrics = metrics, trace = trace, http = http,
  redis = redis, greylist = greylist, ratelimit = ratelimit, auth_throttle = auth_throttle, dkim = dkim,
  rspamd = rspamd,
}

-- The sandbox ---------------------------------------------------------------------------------------------------

local function copy_library(lib)
  local out = {}
  for k, v in pairs(lib) do out[k] = v end
  return out
end

-- base_env - the names a configuration file may read. pcall cannot swallow the end of the budget.
local function base_env(run)
  local env = {
    string = copy_library(string), table = copy_library(table), math = copy_library(math),
    utf8 = copy_library(utf8),
    pairs = pairs, ipairs = ipairs, next = next, select = select, type = type, tostring = tostring,
    tonumber = tonumber, error = error, assert = assert,
  }
  env.pcall = function(...)
    local r = table.pack(pcall(...))
    if run.exhausted then error(run.exhausted, 0) end
    return table.unpack(r, 1, r.n)
  end
  return env
end

-- statement_start - the line where the assignment to name that ended at line starts (Lua reports the last line
-- of a multi-line table constructor).
local function statement_start(code, name, line)
  for l = line, 1, -1 do
    if code[l] and code[l]:find("^%s*" .. escape_pattern(name) .. "%s*=%f[^=]") then return l end
  end
  return line
end

-- run_sandboxed - run source in env under the instruction budget. Returns true, result or false, message.
local function run_sandboxed(source, chunkname, env, run)
  if source:sub(1, 1) == "#" then source = "--" .. source end  -- a #! line; keeps line numbers
  local fn, msg = load(source, chunkname, "t", env)
  if not fn then return false, msg end
  local co = coroutine.create(fn)
  local count = 0
  debug.sethook(co, function()
    count = count + HOOK_STEP
    if count > BUDGET then
      if not run.exhausted then
        local info = debug.getinfo(2, "Sl")
        run.exhausted = (info and info.currentline and info.currentline > 0)
                        and (info.short_src .. ":" .. info.currentline .. ": configuration runs too long")
                        or (display_name(chunkname) .. ": configuration runs too long")
      end
      error(run.exhausted, 0)
    end
  end, "", HOOK_STEP)
  local ok, result = coroutine.resume(co)
  if ok and coroutine.status(co) ~= "dead" then return false, display_name(chunkname) .. ": the file yielded" end
  if not ok then
    if type(result) ~= "string" then
      result = display_name(chunkname) .. ": error object is " .. describe(result)
    end
    return false, result
  end
  return true, result
end

local function read_file(file)
  local f, msg = io.open(file, "rb")
  if not f then return nil, msg end
  local source, rmsg = f:read("a")
  f:close()
  if not source then return nil, file .. ": " .. (rmsg or "cannot read") end
  return source
end

-- load_directory_file - run directory.file and check what it returns. at is the directory.file node of the
-- main configuration. Returns { users, groups, at_groups } or nil after reporting errors.
function load_directory_file(file, at)
  local state = at.ctx.state
  local source, msg = read_file(file)
  if not source then
    err(at, "cannot read it (" .. msg .. "); expected a readable Lua file")
    return nil
  end
  local ctx = new_ctx(file, source, dirname(file), at.ctx.opts, state)
  ctx.rank = (at.ctx.rank or 1) + 1
  ctx.whole = { first = 1, last = #ctx.code }
  local run = {}
  local env = base_env(run)
  setmetatable(env, {
    __index = function(_, k)
      error("unknown name '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function(_, k)
      error("cannot set '" .. tostring(k) .. "': a directory file sets no names, it returns "
            .. "{ users = …, groups = … }", 2)
    end,
  })
  local ok, result = run_sandboxed(source, "@" .. file, env, run)
  if not ok then
    state.errors[#state.errors + 1] = { file = file, rank = ctx.rank, text = result }
    return nil
  end
  local root = child({ ctx = ctx }, "directory")
  if type(result) ~= "table" then
    err(root, "the file returned " .. describe(result) .. "; expected return { users = …, groups = … }")
    return nil
  end
  local out = directory_file(result, root)
  out.at_groups = child(root, "groups")
  return out
end

-- Loading -------------------------------------------------------------------------------------------------------

local function check_opts(opts, who)
  if opts ~= nil and type(opts) ~= "table" then error(who .. ": opts must be a table", 3) end
  opts = opts or {}
  local out = {
    hostname = opts.hostname or "localhost",
    ncpu = opts.ncpu or 1,
    sysconfdir = opts.sysconfdir or "/etc",
    basedir = opts.basedir,
    overlay = opts.overlay,
  }
  if type(out.hostname) ~= "string" then error(who .. ": opts.hostname must be a string", 3) end
  if math.type(out.ncpu) ~= "integer" or out.ncpu < 1 then error(who .. ": opts.ncpu must be an integer >= 1", 3) end
  if type(out.sysconfdir) ~= "string" then error(who .. ": opts.sysconfdir must be a string", 3) end
  if out.basedir ~= nil and type(out.basedir) ~= "string" then error(who .. ": opts.basedir must be a string", 3) end
  if out.overlay ~= nil and type(out.overlay) ~= "table" then error(who .. ": opts.overlay must be a table", 3) end
  return out
end

local function finish(list)
  for i, e in ipairs(list) do e.seq = i end
  table.sort(list, function(a, b)
    if a.rank ~= b.rank then return (a.rank or 1) < (b.rank or 1) end
    local la, lb = a.line or math.huge, b.line or math.huge
    if la ~= lb then return la < lb end
    return a.seq < b.seq
  end)
  local out = {}
  for i, e in ipairs(list) do out[i] = e.text end
  return out
end

-- lay_over(into, over): over's values replace into's, key by key; a table that is not a list (no [1]) is merged
-- into a table of the same key, a list replaces the whole list.
local function lay_over(into, over)
  for k, v in pairs(over) do
    if type(v) == "table" and v[1] == nil and type(into[k]) == "table" and into[k][1] == nil then
      lay_over(into[k], v)
    else
      into[k] = copy(v)
    end
  end
end

local function load_source(source, chunkname, opts)
  local file = display_name(chunkname)
  local basedir = opts.basedir
  if not basedir then
    basedir = chunkname:sub(1, 1) == "@" and dirname(file) or "."
  end
  local state = { errors = {}, warnings = {} }
  local ctx = new_ctx(file, source, basedir, opts, state)
  local root = { ctx = ctx }

  -- Run the file. Top-level assignments go to `assigned`, so that every assignment passes through __newindex.
  local assigned = {}
  local run = {}
  local env = base_env(run)
  local readable = {}
  for _, k in ipairs(LIBRARY_NAMES) do readable[#readable + 1] = k end
  for _, k in ipairs(SECTIONS) do readable[#readable + 1] = k end
  local libs = env
  env = setmetatable({}, {
    __index = function(_, k)
      if libs[k] ~= nil then return libs[k] end
      if IS_SECTION[k] then return assigned[k] end
      local near = M.suggest(k, readable)
      error("unknown name '" .. tostring(k) .. "'" .. (near and ("; did you mean '" .. near .. "'?") or ""), 2)
    end,
    __newindex = function(_, k, v)
      local line = debug.getinfo(2, "l").currentline
      if IS_SECTION[k] then
        assigned[k] = v
        ctx.top[k] = { first = statement_start(ctx.code, k, line), last = line }
        return
      end
      local node = child(root, k)
      local name = type(k) == "string" and k or tostring(k)
      ctx.top[k] = { first = statement_start(ctx.code, name, line), last = line }
      local near = M.suggest(k, SECTIONS)
      if near then
        err(node, 'unknown name; did you mean "' .. near .. '"?')
      else
        err(node, "unknown name; expected one of " .. table.concat(SECTIONS, ", "))
      end
      ctx.top[k] = nil
    end,
  })
  local ok, msg = run_sandboxed(source, chunkname, env, run)
  if not ok then
    local errors = {}
    for _, e in ipairs(state.errors) do errors[#errors + 1] = e.text end
    errors[#errors + 1] = msg
    return nil, errors, finish(state.warnings)
  end

  -- A scenario of `luamta test` lays its own values over the file's (docs/rules.md, "Policy tests").
  if opts.overlay then lay_over(assigned, opts.overlay) end

  -- Check the sections, those the file assigned in its order, then the rest (for their defaults).
  local order = {}
  for _, name in ipairs(SECTIONS) do order[#order + 1] = name end
  table.sort(order, function(a, b)
    local la = ctx.top[a] and ctx.top[a].first or math.huge
    local lb = ctx.top[b] and ctx.top[b].first or math.huge
    if la ~= lb then return la < lb end
    return a < b
  end)
  local raw_tls = assigned.tls
  ctx.has_tls = type(raw_tls) == "table" and ((raw_tls.cert ~= nil and raw_tls.key ~= nil) or
    (type(raw_tls.certs) == "table" and raw_tls.certs[1] ~= nil))
  local cfg = {}
  for _, name in ipairs(order) do
    local v = assigned[name]
    if v == nil then v = {} end
    cfg[name] = SCHEMA[name](v, child(root, name, v))
  end

  -- delivery.maildir depends on server.spool.
  if cfg.delivery and cfg.server and cfg.server.spool then
    local m = cfg.delivery.maildir
    if m == nil then
      cfg.delivery.maildir = cfg.server.spool .. "/mailboxes/%d/%u"
    elseif m:sub(1, 7) == "<spool>" then
      cfg.delivery.maildir = clean_path(cfg.server.spool .. "/" .. m:sub(8))
    else
      cfg.delivery.maildir = resolve_path(basedir, m)
    end
  end

  -- dkim.sign without the rule that uses it signs nothing (docs/dkim.md).
  if cfg.dkim and cfg.server and #cfg.dkim.sign > 0 then
    local on = false
    for _, list in ipairs { cfg.server.rules or {}, cfg.server.extra_rules or {} } do
      for _, name in ipairs(list) do on = on or name == "dkim_sign" end
    end
    if not on then
      warn(child(child(root, "dkim", assigned.dkim), "sign", (assigned.dkim or {}).sign),
        'keys are listed but the dkim_sign rule is off, so nothing is signed; expected "dkim_sign" in '
        .. "server.extra_rules")
    end
  end

  local warnings = finish(state.warnings)
  if #state.errors > 0 then return nil, finish(state.errors), warnings end
  return cfg, nil, warnings
end

-- M.load_string - load a configuration from source. chunkname names it as for load() ("@/etc/luamta/luamta.lua");
-- relative paths are resolved against that file's directory, opts.basedir, or the current directory.
function M.load_string(source, chunkname, opts)
  if type(source) ~= "string" then error("config.load_string: source must be a string", 2) end
  if chunkname ~= nil and type(chunkname) ~= "string" then
    error("config.load_string: chunkname must be a string", 2)
  end
  return load_source(source, chunkname or "=(config)", check_opts(opts, "config.load_string"))
end

-- M.load - load the configuration file at path. Returns cfg, warnings or nil, errors, warnings.
function M.load(path_name, opts)
  if type(path_name) ~= "string" then error("config.load: path must be a string", 2) end
  opts = check_opts(opts, "config.load")
  local source, msg = read_file(path_name)
  if not source then return nil, { msg }, {} end
  return load_source(source, "@" .. path_name, opts)
end

return M
