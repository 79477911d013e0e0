-- rules/auth_throttle.lua: the AUTH-failure throttle shared by every node (docs/callouts.md, "auth_throttle").
-- Failed AUTH attempts are counted per client IP address in Redis (one atomic script per check, with a TTL);
-- once an address has had auth_throttle.failures of them within auth_throttle.window seconds, every node that
-- names the same Redis refuses its AUTH attempts with 454 4.7.0 before any password is checked, until the window
-- ends. The core's own throttle (per worker, in memory: each failure's answer waits longer) applies as well, and
-- is all there is without this rule.
local mta = require "luamta"

local cfg = mta.config.auth_throttle
local M = {}

if not cfg.redis then
  error("auth_throttle.redis: missing; expected the name of a redis = { … } entry (without Redis, leave this rule "
    .. "out: the built-in per-worker AUTH throttle applies)", 0)
end
if not mta.config.redis[cfg.redis] then
  error(("auth_throttle.redis: no redis.%s in the configuration"):format(cfg.redis), 0)
end
local client = mta.redis(cfg.redis)
local service = "auth_throttle redis " .. cfg.redis

-- KEYS[1] the address's counter. Returns the failures counted in the current window (0 when none).
local CHECK = [[
return tonumber(redis.call('GET', KEYS[1]) or '0')
]]

-- KEYS[1] the address's counter; ARGV[1] the window. Counts one failure; the window starts at the first.
local COUNT = [[
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
]]

local function key(s)
  return "auth_throttle:ip:" .. s.ip
end

function M.auth_attempt(s, name)                     -- stage: auth_attempt (before the password is checked)
  local n, err = client:eval(CHECK, { key(s) }, {})
  if n == nil then return mta.on_error(cfg.on_error, service, err) end
  if n >= cfg.failures then
    s:log(("auth_throttle ip=%s failures=%d limit=%d window=%d"):format(s.ip, n, cfg.failures, cfg.window))
    return mta.tempfail(454, "4.7.0 Too many failed authentication attempts, try again later")
  end
end

function M.auth_failed(s, name)                      -- stage: auth_failed (after a wrong password)
  local n, err = client:eval(COUNT, { key(s) }, { cfg.window })
  if n == nil then mta.on_error(cfg.on_error, service, err) end   -- logged; the answer is 535 whatever it says
end

function M.check_warnings()
  local w = {}
  if not mta.config.tls.cert then
    w[#w + 1] = "auth_throttle: no tls.cert, so AUTH is never offered (it needs TLS) and there is nothing to throttle"
  end
  return w
end

return M
