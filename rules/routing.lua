-- rules/routing.lua: the router's decision for one recipient (SPEC section 6), stage route(msg, rcpt).
-- Local recipients known to the directory go to their Maildir; unknown local ones bounce with 5.1.1.
-- Remote recipients stay queued until the SMTP client of the router issue exists.
local mta = require "luamta"

local M = {}

local has_users = #((mta.config.directory or {}).users or {}) > 0

function M.route(msg, rcpt)
  if not mta.is_local(rcpt.domain) then
    return mta.defer("4.4.0 remote delivery is not available yet; the message stays queued")
  end
  local user = mta.directory.lookup(rcpt.address)
  if user then return mta.deliver_local(user.address) end
  if not has_users then return mta.deliver_local(rcpt.address) end   -- no directory: every local address
  return mta.bounce(550, "5.1.1 <" .. rcpt.address .. ">... No such user")
end

return M
