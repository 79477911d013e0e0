-- rules/recipient.lua: Domino's inbound recipient controls (SPEC section 5, rcpt) for local recipients: the
-- recipient allow/deny lists (deny wins), then, last, verify_local against the directory, with the smart host
-- rules of SPEC section 5 point 3.
local mta = require "luamta"
local match = require "luamta.match"

local cfg = mta.config.inbound.recipient
local routing = mta.config.routing
local groups = mta.config.directory.groups
local allow = match.compile(cfg.allow, "E", "inbound.recipient.allow", groups)
local deny = match.compile(cfg.deny, "E", "inbound.recipient.deny", groups)
local has_lists = not allow:is_empty() or not deny:is_empty()
-- Unknown local recipients are refused with verify_local, and always with smart_host_all (only known ones go to
-- the smart host). With smart_host alone they are accepted and routed there.
local check_directory = cfg.verify_local or routing.smart_host_all

local M = {}

local function refuse(s, rcpt, why)
  s:log("rule=recipient action=reject rcpt=<" .. rcpt.address .. "> reason=" .. why)
  return mta.reject(554, "5.7.1 Message rejected for policy reasons.")
end

function M.rcpt(s, rcpt)                             -- stage: rcpt
  -- RFC 5321 4.5.1: <postmaster> without a domain must be accepted; relays are rules/relay.lua's
  if rcpt.domain == nil or rcpt.domain == "" or not mta.is_local(rcpt.domain) then return end
  if has_lists then
    local denied, origin = deny:match_address(rcpt)
    if denied then return refuse(s, rcpt, "deny " .. origin) end
    if not allow:is_empty() and not allow:match_address(rcpt) then
      return refuse(s, rcpt, "not in inbound.recipient.allow")
    end
  end
  if not check_directory then return end
  local ok, user, err = pcall(mta.directory.lookup, rcpt.address)
  if not ok or (user == nil and err ~= nil) then
    -- Domino accepts when the directory cannot answer, so that an outage loses no mail
    s:log("rule=recipient rcpt=<" .. rcpt.address .. "> directory lookup failed: " .. tostring(ok and err or user)
          .. "; accepted")
    return
  end
  if user == nil then
    s:log("rule=recipient action=reject rcpt=<" .. rcpt.address .. "> reason="
          .. (cfg.verify_local and "verify_local" or "smart_host_all") .. ": not in the directory")
    return mta.reject(550, "5.1.1 " .. rcpt.address .. "... No such user")
  end
end

-- M.check_warnings - what `luamta check` should say about this module's settings.
function M.check_warnings()
  local out = {}
  for _, m in ipairs({ allow, deny }) do
    for _, w in ipairs(m:warnings()) do out[#out + 1] = w end
  end
  if check_directory and #mta.config.directory.users == 0 then
    out[#out + 1] = (cfg.verify_local and "inbound.recipient.verify_local" or "routing.smart_host_all")
                    .. ": the directory has no users, so every local recipient is rejected with 550 5.1.1; "
                    .. "expected directory.users or directory.file"
  end
  return out
end

return M
