-- rules/routing.lua: the router's decision for one recipient (SPEC section 6), stage route(msg, rcpt).
-- Local recipients known to the directory go to their Maildir; unknown ones to the smart host if there is one,
-- else they bounce with 5.1.1; smart_host_all sends every local recipient to the smart host. External ones go
-- to a pinned route (routing.routes, by domain or %DominoDomain), else are held when smtp_outbound is off, else
-- go to the relay host, else to the domain's MX hosts.
local mta = require "luamta"

local M = {}

local cfg = mta.config.routing
local has_users = #((mta.config.directory or {}).users or {}) > 0

-- Route keys as written ("partner.example", "%AcmeEast"), compiled once to lower case.
local routes = {}
for key, host in pairs(cfg.routes or {}) do routes[key:lower()] = host end

local function pinned_route(domain)
  domain = domain:lower():gsub("%.$", "")
  if routes[domain] then return routes[domain] end
  if not domain:find(".", 1, true) then return routes["%" .. domain] end   -- a Domino domain is dotless
  return nil
end

function M.route(msg, rcpt)
  local domain = rcpt.domain
  if domain == "" or mta.is_local(domain) then
    if cfg.smart_host and cfg.smart_host_all then return mta.relay(cfg.smart_host) end
    local user = mta.directory.lookup(rcpt.address)
    if user then return mta.deliver_local(user.address) end
    if cfg.smart_host then return mta.relay(cfg.smart_host) end
    if not has_users and domain ~= "" then return mta.deliver_local(rcpt.address) end   -- no directory: any address
    return mta.bounce(550, "5.1.1 <" .. rcpt.address .. ">... No such user")
  end
  local pinned = pinned_route(domain)
  if pinned then return mta.relay(pinned) end
  if not cfg.smtp_outbound then
    return mta.hold("4.3.2 external delivery is off (routing.smtp_outbound = false): held in the queue")
  end
  if cfg.relay_host then return mta.relay(cfg.relay_host) end
  return mta.deliver_mx(domain)
end

return M
