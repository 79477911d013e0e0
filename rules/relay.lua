-- rules/relay.lua: Domino's inbound relay controls (SPEC section 5, rcpt): a recipient outside the local internet
-- domains, in a session subject to relay enforcement, is relayed only as allow_to/deny_to, allow_from/deny_from
-- and the precedence say.
local mta = require "luamta"
local match = require "luamta.match"
local domino = require "luamta.domino"

local cfg = mta.config.inbound.relay
local groups = mta.config.directory.groups
local allow_to = match.compile(cfg.allow_to, "A", "inbound.relay.allow_to", groups)
local deny_to = match.compile(cfg.deny_to, "A", "inbound.relay.deny_to", groups)
local allow_from = match.compile(cfg.allow_from, "B", "inbound.relay.allow_from", groups)
local deny_from = match.compile(cfg.deny_from, "B", "inbound.relay.deny_from", groups)
local dom = domino.new(mta)

local M = {}
M.enforces_relay = true   -- luamta refuses to start when no loaded module says this (docs/admin.md, "Relay control")

-- client - which source lists the client matches; the client does not change, so once per session.
local function client(s)
  local c = s.vars["relay.client"]
  if c == nil then
    local sA, a_origin = dom:match_client(allow_from, s)
    local sD, d_origin = dom:match_client(deny_from, s)
    c = { sA = sA, sD = sD, allow = a_origin, deny = d_origin }
    s.vars["relay.client"] = c
  end
  return c
end

function M.rcpt(s, rcpt)                             -- stage: rcpt
  -- RFC 5321 4.5.1: <postmaster> without a domain is this server's, never a relay
  if rcpt.domain == nil or rcpt.domain == "" or dom:is_local(rcpt.domain) then return end
  if not dom:is_enforced(s) then return end
  local c = client(s)
  local dA, a_origin = allow_to:match_address(rcpt)
  local dD, d_origin = deny_to:match_address(rcpt)
  local ok, reason = domino.relay_decision(cfg.precedence, c.sA, c.sD, dA, dD,
                                           not allow_from:is_empty(), not allow_to:is_empty())
  if ok then return end
  local entry = (reason == "deny_from" and c.deny) or (reason == "deny_to" and d_origin) or nil
  s:log("rule=relay action=reject ip=" .. s.ip .. " rcpt=<" .. rcpt.address .. "> reason=" .. reason
        .. (entry and (" " .. entry) or "") .. " precedence=" .. cfg.precedence)
  return mta.reject(554, "5.7.1 Relay rejected for policy reasons.")
end

-- M.check_warnings - what `luamta check` should say about this module's settings.
function M.check_warnings()
  local out = {}
  for _, m in ipairs({ allow_to, deny_to, allow_from, deny_from, dom.exclude }) do
    for _, w in ipairs(m:warnings()) do out[#out + 1] = w end
  end
  -- enforce = "none" is warned about by the configuration loader, with its line.
  if allow_to:has_star() then
    out[#out + 1] = 'inbound.relay.allow_to: "*" allows relaying to every domain'
                    .. (cfg.precedence == "allow" and ", which makes an open relay" or "")
                    .. "; expected the destinations that may be relayed to"
  end
  if allow_from:has_star() then
    out[#out + 1] = 'inbound.relay.allow_from: "*" allows every host to relay'
                    .. (cfg.precedence == "allow" and ", which makes an open relay" or "")
                    .. "; expected the hosts that may relay"
  end
  if dom.exclude:has_star() then
    out[#out + 1] = 'inbound.relay.exclude: "*" exempts every host from relay checks, which makes an open relay; '
                    .. "expected the hosts that may relay"
  end
  if mta.config.dns.verify_ptr == "ptr_only" then
    for _, m in ipairs({ allow_from, deny_from, dom.exclude }) do
      if m:has_host_entries() then
        out[#out + 1] = m.keypath .. ': host-name entries are trusted on the PTR record alone (dns.verify_ptr = '
                        .. '"ptr_only"), which the client\'s DNS controls; expected dns.verify_ptr = '
                        .. '"forward_confirmed"'
      end
    end
  end
  return out
end

return M
