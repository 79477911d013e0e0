-- rules/sender.lua: Domino's inbound sender controls (SPEC section 5, mail): the sender allow/deny lists for
-- sessions that have not authenticated (deny wins), then verify_domain (MX, CNAME, A or AAAA must exist).
local mta = require "luamta"
local match = require "luamta.match"

local cfg = mta.config.inbound.sender
local groups = mta.config.directory.groups
local allow = match.compile(cfg.allow, "E", "inbound.sender.allow", groups)
local deny = match.compile(cfg.deny, "E", "inbound.sender.deny", groups)
local has_lists = not allow:is_empty() or not deny:is_empty()
local QUERIES = { "mx", "cname", "a", "aaaa" }   -- SPEC: MX, CNAME, A or AAAA

local M = {}

local function refuse(s, sender, why)
  s:log("rule=sender action=reject from=<" .. sender.address .. "> reason=" .. why)
  return mta.reject(554, "5.7.1 Mail from " .. sender.address .. " rejected for policy reasons.")
end

-- domain_exists - true, false (the name has none of the records) or nil, err (DNS could not say).
local function domain_exists(s, domain)
  local unsure
  for _, rr in ipairs(QUERIES) do
    local answer, err = mta.dns[rr](domain)
    if type(answer) == "table" and #answer > 0 then return true end
    if err == "nxdomain" then return false end      -- the name does not exist: no record of any type
    if err ~= nil and err ~= "nodata" then
      s:log("rule=sender verify_domain=" .. domain .. " query=" .. rr .. " lookup=" .. tostring(err))
      unsure = unsure or err
    end
  end
  if unsure then return nil, unsure end
  return false
end

-- On a submission listener (server.listen { ..., submission = true }) an authenticated user may send only as
-- one of its own addresses (its primary address or an alias). A site rule placed before this module can
-- allow more with mta.accept().
local function owns(user, address)
  local owner = mta.directory.lookup(address)
  return owner ~= nil and owner.address:lower() == user:lower()
end

function M.mail(s, sender)                           -- stage: mail
  if s.submission and s.user and not owns(s.user, sender.address) then
    s:log("sender: " .. s.user .. " may not send as <" .. sender.address .. ">")
    return mta.reject(553, "5.7.1 <" .. sender.address .. ">: Sender address rejected: not owned by user "
                           .. s.user)
  end
  if has_lists and s.user == nil then
    local denied, origin = deny:match_address(sender)
    if denied then return refuse(s, sender, "deny " .. origin) end
    if not allow:is_empty() and not allow:match_address(sender) then
      return refuse(s, sender, "not in inbound.sender.allow")
    end
  end
  if cfg.verify_domain and sender.address ~= "" then
    local domain = (sender.domain or ""):lower():gsub("%.$", "")
    if domain == "" or domain:sub(1, 1) == "[" then return end   -- no domain, or an address literal: not DNS
    local exists, err = domain_exists(s, domain)
    if exists == false then
      s:log("rule=sender action=reject from=<" .. sender.address .. "> reason=verify_domain: no MX, CNAME, A or AAAA")
      return mta.reject(550, "5.1.8 Sender domain " .. sender.domain .. " does not exist")
    elseif exists == nil then
      s:log("rule=sender action=tempfail from=<" .. sender.address .. "> reason=verify_domain: " .. err)
      return mta.tempfail(451, "4.1.8 Sender domain " .. sender.domain .. " could not be verified")
    end
  end
end

-- M.check_warnings - what `luamta check` should say about this module's settings.
function M.check_warnings()
  local out = {}
  for _, m in ipairs({ allow, deny }) do
    for _, w in ipairs(m:warnings()) do out[#out + 1] = w end
  end
  if not allow:is_empty() then
    out[#out + 1] = "inbound.sender.allow: not empty, so unauthenticated mail from the null sender <> (bounces and "
                    .. "delivery reports) is rejected, since <> matches no entry; expected an empty list if "
                    .. "bounces must arrive"
  end
  return out
end

return M
