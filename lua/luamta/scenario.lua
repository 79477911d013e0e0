-- luamta.scenario: the policy-test scenario format of `luamta test` (docs/rules.md, "Policy tests"). This module
-- is the format's only reader: it loads a scenario file, checks every key (file and key in each error), gives
-- the C runner (src/tools/scenario.c) the session to play and the DNS fixtures in flat form, and compares what the
-- server answered with what the scenario expects.
--
--   load(path)              -> scenario | nil, err
--   flat(scenario)          -> { ip, helo, tls, auth, mail, rcpt = {...}, message, dns = { {type, name, status,
--                                records = {...}, prefs = {...}, ttl}, ... } }
--   compare(scenario, seen) -> { failure text, ... } (empty when every expectation holds)
local M = {}

local TYPES = { A = true, AAAA = true, MX = true, PTR = true, TXT = true, CNAME = true }
local STATUSES = { nxdomain = true, nodata = true, timeout = true, servfail = true }
local TOP = { name = true, config = true, dns = true, session = true, expect = true }
local SESSION = { ip = true, helo = true, tls = true, auth = true, mail = true, rcpt = true, message = true }
local EXPECT = { connect = true, helo = true, mail = true, rcpt = true, data = true, tags = true, log = true,
  no_log = true }
local STAGES = { "connect", "helo", "mail", "rcpt", "data" }   -- in the order a session reaches them
local FIXTURE_TTL = 300

local function keys_known(t, known, where, errs)
  for k in pairs(t) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      errs[#errs + 1] = ("%s: unknown key %s; expected one of %s"):format(where, tostring(k), table.concat(names, ", "))
    end
  end
end

local function is_list_of_strings(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
  end
  return true
end

local function check_dns(dns, file, errs)
  for key, v in pairs(dns) do
    local where = ("%s: dns[%q]"):format(file, tostring(key))
    local name, rtype = tostring(key):match("^(.+)/(%u+)$")
    if not name or not TYPES[rtype] then
      errs[#errs + 1] = where .. ': expected "NAME/TYPE" with TYPE one of A, AAAA, MX, PTR, TXT, CNAME'
    elseif type(v) == "string" and STATUSES[v] then
      -- a failure or negative answer
    elseif type(v) ~= "string" and not is_list_of_strings(v) then
      errs[#errs + 1] = where .. ': expected a record, a list of records, or one of "nxdomain", "nodata", '
        .. '"timeout", "servfail"'
    elseif rtype == "MX" then
      for _, r in ipairs(type(v) == "string" and { v } or v) do
        if not r:match("^%d+%s+%S+$") then
          errs[#errs + 1] = ("%s: MX record %q: expected \"PREFERENCE HOST\", e.g. \"10 mx.example.com\"")
            :format(where, r)
        end
      end
    end
  end
end

local function check_reply(v, where, errs)
  if type(v) ~= "string" or not v:match("^%d%d%d") then
    errs[#errs + 1] = where .. ": expected a reply such as \"250\" or \"554 5.7.1\" (its first characters)"
  end
end

-- load(path): run the file (text only, with no library but string, table and math: a scenario is data) and
-- check it.
function M.load(path)
  local f, msg = io.open(path, "r")
  if not f then return nil, msg end
  local source = f:read("a")
  f:close()
  local env = { string = string, table = table, math = math, ipairs = ipairs, pairs = pairs, tostring = tostring }
  local chunk, err = load(source, "@" .. path, "t", env)
  if not chunk then return nil, err end
  local ok, scn = pcall(chunk)
  if not ok then return nil, tostring(scn) end
  if type(scn) ~= "table" then
    return nil, ("%s: the file returned %s; expected a table { name, config, dns, session, expect }")
      :format(path, type(scn))
  end
  local errs = {}
  keys_known(scn, TOP, path, errs)
  scn.name = scn.name or path:match("([^/]+)%.lua$") or path
  if type(scn.name) ~= "string" then errs[#errs + 1] = path .. ": name: expected a string" end
  if scn.config ~= nil and type(scn.config) ~= "table" then errs[#errs + 1] = path .. ": config: expected a table" end
  scn.dns = scn.dns or {}
  if type(scn.dns) ~= "table" then errs[#errs + 1] = path .. ": dns: expected a table" else check_dns(scn.dns, path, errs) end
  local s = scn.session
  if type(s) ~= "table" then
    errs[#errs + 1] = path .. ": session: expected a table { ip, helo, tls, auth, mail, rcpt, message }"
    s = {}
    scn.session = s
  end
  keys_known(s, SESSION, path .. ": session", errs)
  if type(s.ip) ~= "string" then errs[#errs + 1] = path .. ": session.ip: expected the client's address" end
  if s.helo ~= nil and type(s.helo) ~= "string" then errs[#errs + 1] = path .. ": session.helo: expected a string" end
  if s.tls ~= nil and type(s.tls) ~= "boolean" then errs[#errs + 1] = path .. ": session.tls: expected a boolean" end
  if s.auth ~= nil and type(s.auth) ~= "string" then errs[#errs + 1] = path .. ": session.auth: expected a user name" end
  if s.mail ~= nil and type(s.mail) ~= "string" then errs[#errs + 1] = path .. ": session.mail: expected an address" end
  if type(s.rcpt) == "string" then s.rcpt = { s.rcpt } end
  if s.rcpt ~= nil and (not is_list_of_strings(s.rcpt) or #s.rcpt == 0 or #s.rcpt > 100) then
    errs[#errs + 1] = path .. ": session.rcpt: expected an address or a list of 1 to 100 addresses"
  end
  if s.message ~= nil and type(s.message) ~= "string" then errs[#errs + 1] = path .. ": session.message: expected text" end
  local e = scn.expect
  if type(e) ~= "table" then
    errs[#errs + 1] = path .. ": expect: expected a table { connect, helo, mail, rcpt, data, tags, log, no_log }"
    e = {}
    scn.expect = e
  end
  keys_known(e, EXPECT, path .. ": expect", errs)
  for _, stage in ipairs { "connect", "helo", "mail", "data" } do
    if e[stage] ~= nil then check_reply(e[stage], path .. ": expect." .. stage, errs) end
  end
  if e.rcpt ~= nil then
    if type(e.rcpt) == "string" then
      check_reply(e.rcpt, path .. ": expect.rcpt", errs)
    elseif is_list_of_strings(e.rcpt) then
      for i, r in ipairs(e.rcpt) do check_reply(r, ("%s: expect.rcpt[%d]"):format(path, i), errs) end
      if s.rcpt and #e.rcpt ~= #s.rcpt then
        errs[#errs + 1] = ("%s: expect.rcpt: %d replies for %d recipients"):format(path, #e.rcpt, #s.rcpt)
      end
    else
      errs[#errs + 1] = path .. ": expect.rcpt: expected a reply, or a list with one reply per recipient"
    end
  end
  for _, key in ipairs { "tags", "log", "no_log" } do
    if type(e[key]) == "string" then e[key] = { e[key] } end
    if e[key] ~= nil and not is_list_of_strings(e[key]) then
      errs[#errs + 1] = ("%s: expect.%s: expected a list of strings"):format(path, key)
    end
  end
  for _, key in ipairs { "log", "no_log" } do
    for i, pat in ipairs(e[key] or {}) do
      if not pcall(string.find, "", pat) then
        errs[#errs + 1] = ("%s: expect.%s[%d]: %q is not a valid Lua pattern"):format(path, key, i, pat)
      end
    end
  end
  if (e.mail or e.rcpt or e.data) and not (s.mail and s.rcpt) then
    errs[#errs + 1] = path .. ": expect.mail, rcpt and data need session.mail and session.rcpt"
  end
  if #errs > 0 then return nil, table.concat(errs, "\n") end
  return scn
end

-- flat(scn): what the runner plays, and the DNS fixtures with lower-case names without the trailing dot.
function M.flat(scn)
  local s = scn.session
  local mail = s.mail
  if mail == "<>" then mail = "" end
  local out = { ip = s.ip, helo = s.helo or "client.test", tls = s.tls == true, auth = s.auth, mail = mail,
    rcpt = s.rcpt or {}, message = s.message, dns = {} }
  for key, v in pairs(scn.dns) do
    local name, rtype = key:match("^(.+)/(%u+)$")
    local fx = { type = rtype, name = name:lower():gsub("%.$", ""), status = "ok", records = {}, prefs = {},
      ttl = FIXTURE_TTL }
    if type(v) == "string" and STATUSES[v] then
      fx.status = v
    else
      for _, r in ipairs(type(v) == "string" and { v } or v) do
        if rtype == "MX" then
          local pref, host = r:match("^(%d+)%s+(%S+)$")
          fx.prefs[#fx.prefs + 1] = tonumber(pref)
          fx.records[#fx.records + 1] = host:lower():gsub("%.$", "")
        else
          fx.prefs[#fx.prefs + 1] = 0
          fx.records[#fx.records + 1] = r
        end
      end
    end
    out.dns[#out.dns + 1] = fx
  end
  table.sort(out.dns, function(a, b) return a.name .. "/" .. a.type < b.name .. "/" .. b.type end)
  return out
end

local function matches(reply, want)
  return reply ~= nil and reply:sub(1, #want) == want
end

-- compare(scn, seen): seen = { connect, helo, mail, data = last reply lines or nil, rcpt = { ... }, reached =
-- the last stage answered, tags = { header lines the rules added }, log = the log text of the session }.
function M.compare(scn, seen)
  local e, fails = scn.expect, {}
  local function not_reached(stage)
    return ("%s: expected a reply, but the session ended after %s"):format(stage, seen.reached or "nothing")
  end
  for _, stage in ipairs(STAGES) do
    local want = e[stage]
    if stage == "rcpt" and want ~= nil then
      local list = type(want) == "string" and {} or want
      if type(want) == "string" then
        for i = 1, #scn.session.rcpt do list[i] = want end
      end
      for i, w in ipairs(list) do
        local got = seen.rcpt[i]
        if got == nil then
          fails[#fails + 1] = ("rcpt %s: expected %q, but it was never sent (the session ended after %s)")
            :format(scn.session.rcpt[i], w, seen.reached or "nothing")
        elseif not matches(got, w) then
          fails[#fails + 1] = ("rcpt %s: expected %q, got %q"):format(scn.session.rcpt[i], w, got)
        end
      end
    elseif want ~= nil then
      local got = seen[stage]
      if got == nil then
        fails[#fails + 1] = not_reached(stage)
      elseif not matches(got, want) then
        fails[#fails + 1] = ("%s: expected %q, got %q"):format(stage, want, got)
      end
    end
  end
  if e.tags then
    if #e.tags == 0 and #seen.tags > 0 then
      fails[#fails + 1] = ("tags: expected none, got %q"):format(table.concat(seen.tags, "; "))
    end
    for _, want in ipairs(e.tags) do
      local found = false
      for _, line in ipairs(seen.tags) do
        if line:sub(1, #want) == want then found = true break end
      end
      if not found then
        fails[#fails + 1] = ("tags: expected a header starting %q, got %s"):format(want,
          #seen.tags > 0 and ("%q"):format(table.concat(seen.tags, "; ")) or "none")
      end
    end
  end
  for _, pat in ipairs(e.log or {}) do
    if not seen.log:find(pat) then fails[#fails + 1] = ("log: no line matches %q"):format(pat) end
  end
  for _, pat in ipairs(e.no_log or {}) do
    local line = seen.log:match("[^\n]*" .. pat .. "[^\n]*")
    if seen.log:find(pat) then fails[#fails + 1] = ("no_log: %q matches %q"):format(pat, line or pat) end
  end
  return fails
end

return M
