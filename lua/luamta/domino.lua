-- luamta.domino: Domino's shared inbound-control logic (SPEC section 5): internal hosts, relay enforcement, the
-- relay decision, and the client matching that every host list (families B, C, D) uses.
--
-- domino.new(mta) -> d, built once per Lua state (it compiles inbound.relay.exclude; a bad entry raises):
--   d:hostname(s)              -> verified name | nil, err ("timeout" or "none"); s:hostname() asked once per
--                                 session, the answer kept in s.vars["domino.hostname"]
--   d:is_local(domain)         -> boolean: a local internet domain (mta.is_local)
--   d:is_internal(s)           -> boolean: the verified name is a local internet domain or under one
--   d:is_enforced(s)           -> boolean, reason: the session is subject to relay enforcement. Not when
--                                 enforce = "none", when authenticated with authenticated = "allow" (checked on
--                                 every call: it holds from AUTH on), when the client matches relay.exclude, or
--                                 with enforce = "external" for an internal host. The part that does not depend
--                                 on AUTH is kept in s.vars["domino.enforced"].
--   d:match_client(m, s)       -> true, origin | false: the client IP against m's IP entries, then (only when m
--                                 has host-name entries and no IP entry matched) the verified name
--   d.exclude                  the compiled relay.exclude matcher
-- Pure helpers:
--   domino.relay_decision(precedence, sA, sD, dA, dD, has_allow_from, has_allow_to) -> allowed, reason
--   domino.fill(template, values) -> template with each "%s", in order, replaced by the next value (plain text)
local match = require "luamta.match"

local M = {}

local Domino = {}
Domino.__index = Domino

function M.new(mta)
  if type(mta) ~= "table" or type(mta.config) ~= "table" or type(mta.is_local) ~= "function" then
    error("domino.new: expected the luamta module", 2)
  end
  local cfg = mta.config.inbound.relay
  local groups = (mta.config.directory or {}).groups
  return setmetatable({
    mta = mta,
    relay = cfg,
    exclude = match.compile(cfg.exclude, "B", "inbound.relay.exclude", groups),
  }, Domino)
end

function Domino:hostname(s)
  local vars = s.vars
  local v = vars["domino.hostname"]
  if v == nil then
    local name, err = s:hostname()
    if type(name) == "string" and name ~= "" then
      v = { name = name }
    else
      v = { err = err or "none" }
      if err == "timeout" then s:log("dns: host name of " .. tostring(s.ip) .. " timed out; no verified name") end
    end
    vars["domino.hostname"] = v
  end
  return v.name, v.err
end

function Domino:is_local(domain)
  return self.mta.is_local(domain)
end

function Domino:is_internal(s)
  local name = self:hostname(s)
  if not name then return false end
  name = name:lower()
  if name:sub(-1) == "." then name = name:sub(1, -2) end
  -- the name itself, then every parent: mail.sub.example.com is under example.com
  local d = name
  while d do
    if self.mta.is_local(d) then return true end
    d = d:match("^[^.]*%.(.+)$")
  end
  return false
end

function Domino:match_client(m, s)
  local ok, origin = m:match_ip(s.ip)
  if ok then return true, origin end
  if not m:has_host_entries() then return false end
  local name = self:hostname(s)
  if not name then return false end
  return m:match_host(name)
end

function Domino:is_enforced(s)
  local cfg = self.relay
  if cfg.enforce == "none" then return false, "enforce=none" end
  if s.user ~= nil and cfg.authenticated == "allow" then return false, "authenticated" end
  local v = s.vars["domino.enforced"]
  if v == nil then
    v = { enforced = true, reason = "enforce=" .. cfg.enforce }
    local excluded, origin = self:match_client(self.exclude, s)
    if excluded then
      v = { enforced = false, reason = "excluded by " .. origin }
    elseif cfg.enforce == "external" and self:is_internal(s) then
      v = { enforced = false, reason = "internal host" }
    end
    s.vars["domino.enforced"] = v
  end
  return v.enforced, v.reason
end

-- M.relay_decision - SPEC section 5, rcpt. sA/sD: the client matches allow_from/deny_from; dA/dD: the recipient
-- matches allow_to/deny_to; has_allow_from/has_allow_to: those lists are not empty. Precedence "allow" (Domino 6
-- and later): an allow match wins over a deny match. Precedence "deny" (Domino 5): a deny match wins, and each
-- non-empty allow list must be matched.
function M.relay_decision(precedence, sA, sD, dA, dD, has_allow_from, has_allow_to)
  if precedence == "deny" then
    if sD then return false, "deny_from" end
    if dD then return false, "deny_to" end
    if has_allow_from and not sA then return false, "not in allow_from" end
    if has_allow_to and not dA then return false, "not in allow_to" end
    return true, (sA and "allow_from") or (dA and "allow_to") or "no list applies"
  elseif precedence == "allow" then
    if sA then return true, "allow_from" end
    if dA then return true, "allow_to" end
    if sD then return false, "deny_from" end
    if dD then return false, "deny_to" end
    if has_allow_from then return false, "not in allow_from" end
    if has_allow_to then return false, "not in allow_to" end
    return true, "no list applies"
  end
  error('domino.relay_decision: precedence must be "allow" or "deny", got ' .. tostring(precedence), 2)
end

-- M.fill - replace "%s" in template, first to last, by values[1], values[2], …; the rest of the text (further
-- "%s", "%d", "%%") stays as it is. Plain search: the template is user text, never a format string.
function M.fill(template, values)
  local out, pos = {}, 1
  for i = 1, #values do
    local at = template:find("%s", pos, true)
    if not at then break end
    out[#out + 1] = template:sub(pos, at - 1)
    out[#out + 1] = tostring(values[i])
    pos = at + 2
  end
  out[#out + 1] = template:sub(pos)
  return table.concat(out)
end

-- domino.list_warnings(matchers, verify_ptr, out) -> out with each matcher's own warnings, and for host lists
-- with host-name entries the warning that dns.verify_ptr = "ptr_only" trusts names the client's DNS controls.
function M.list_warnings(matchers, verify_ptr, out)
  out = out or {}
  for _, m in ipairs(matchers) do
    for _, w in ipairs(m:warnings()) do out[#out + 1] = w end
    if m:has_host_entries() and verify_ptr == "ptr_only" then
      out[#out + 1] = m.keypath .. ': host-name entries are trusted on the PTR record alone (dns.verify_ptr = '
                      .. '"ptr_only"), which the client\'s DNS controls; expected dns.verify_ptr = "forward_confirmed"'
    end
  end
  return out
end

return M
