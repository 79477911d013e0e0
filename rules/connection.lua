-- rules/connection.lua: Domino's inbound connection controls (SPEC section 5, connect and mail): the connection
-- allow/deny lists (IP entries first, the verified host name only when needed; deny wins) and verify_hostname.
local mta = require "luamta"
local match = require "luamta.match"
local domino = require "luamta.domino"

local cfg = mta.config.inbound.connection
local groups = mta.config.directory.groups
local allow = match.compile(cfg.allow, "C", "inbound.connection.allow", groups)
local deny = match.compile(cfg.deny, "C", "inbound.connection.deny", groups)
local dom = domino.new(mta)
local has_lists = not allow:is_empty() or not deny:is_empty()
local needs_name = allow:has_host_entries() or deny:has_host_entries()

local M = {}

local function refuse(s, why)
  s:log("rule=connection action=reject ip=" .. s.ip .. " reason=" .. why)
  return mta.reject(554, "5.7.1 Connection refused for policy reasons")
end

function M.connect(s)                                -- stage: connect
  if not has_lists then return end
  local denied, origin = deny:match_ip(s.ip)
  if denied then return refuse(s, "deny " .. origin) end
  if allow:match_ip(s.ip) then return end
  if needs_name then
    local name, err = dom:hostname(s)
    if name then
      denied, origin = deny:match_host(name)
      if denied then return refuse(s, "deny " .. origin .. " name=" .. name) end
      if allow:match_host(name) then return end
    elseif err == "timeout" then
      if not allow:is_empty() and not allow:has_host_entries() then
        return refuse(s, "not in inbound.connection.allow")   -- refused whatever the name would be
      end
      -- the answer depends on a name we could not get: ask the client to come back, never a 5xx for a timeout
      s:log("rule=connection action=tempfail ip=" .. s.ip .. " reason=host name lookup timed out")
      return mta.tempfail(421, "4.7.1 Cannot verify your host name " .. s.ip)
    end
  end
  if not allow:is_empty() then return refuse(s, "not in inbound.connection.allow") end
end

function M.mail(s, sender)                           -- stage: mail
  if not cfg.verify_hostname then return end
  local name, err = dom:hostname(s)
  if name then return end
  if err == "timeout" then
    s:log("rule=connection action=tempfail ip=" .. s.ip .. " reason=verify_hostname: lookup timed out")
    return mta.tempfail(450, "4.7.1 Cannot verify your host name " .. s.ip)
  end
  s:log("rule=connection action=reject ip=" .. s.ip .. " reason=verify_hostname: no verified host name")
  return mta.reject(550, "5.7.1 Cannot verify your host name " .. s.ip)
end

-- M.check_warnings - what `luamta check` should say about this module's settings.
function M.check_warnings()
  local out = domino.list_warnings({ allow, deny }, mta.config.dns.verify_ptr)
  return out
end

return M
