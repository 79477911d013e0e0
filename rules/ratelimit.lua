-- rules/ratelimit.lua: rate limits (docs/callouts.md, "ratelimit"): messages (MAIL commands) and recipients (RCPT
-- commands) per window, counted per client IP, sender or AUTH user; over a limit the command gets 450 4.7.1. The
-- counters are in Redis when ratelimit.redis names a server (one atomic script per count, shared by every node),
-- otherwise in this worker's memory. Fixed windows: a counter starts at the first count and lasts window seconds.
local mta = require "luamta"

local cfg = mta.config.ratelimit
local M = {}

local client
if cfg.redis then
  if not mta.config.redis[cfg.redis] then
    error(("ratelimit.redis: no redis.%s in the configuration"):format(cfg.redis), 0)
  end
  client = mta.redis(cfg.redis)
end

-- KEYS[1] the counter; ARGV[1] the window. Returns the count after this one.
local SCRIPT = [[
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
]]

local counters = {}   -- in memory: key -> { ends = time, n = count }

local function count(key, window)
  if client then
    local n, err = client:eval(SCRIPT, { key }, { window })
    if n == nil then return nil, err end
    return n
  end
  local now = os.time()
  local c = counters[key]
  if not c or now >= c.ends then
    c = { ends = now + window, n = 0 }
    counters[key] = c
  end
  c.n = c.n + 1
  return c.n
end

local function subject(s, kind, sender)
  if kind == "ip" then return s.ip end
  if kind == "user" then return s.user end
  local addr = sender and sender.address or (s.sender and s.sender.address)
  if addr and addr ~= "" then return addr:lower() end
  return nil
end

-- check(s, what, sender) - count one message or recipient against every limit that counts it.
local function check(s, what, sender)
  for i, limit in ipairs(cfg.limits) do
    local max = limit[what]
    local who = max and subject(s, limit.key, sender)
    if who then
      local n, err = count(("ratelimit:%d:%s:%s:%s"):format(i, limit.key, what, who), limit.window)
      if n == nil then return mta.on_error(cfg.on_error, "ratelimit redis " .. cfg.redis, err) end
      if n > max then
        s:log(("ratelimit key=%s subject=%s %s=%d limit=%d window=%d"):format(limit.key, who, what, n, max,
          limit.window))
        return mta.tempfail(450, "4.7.1 Rate limit exceeded, please try again later")
      end
    end
  end
end

function M.mail(s, sender)                           -- stage: mail
  return check(s, "messages", sender)
end

function M.rcpt(s, rcpt)                             -- stage: rcpt
  return check(s, "recipients")
end

function M.check_warnings()
  local w = {}
  if #cfg.limits == 0 then w[#w + 1] = "ratelimit: ratelimit.limits is empty, so nothing is limited" end
  if not cfg.redis and mta.config.server.workers ~= 1 then
    w[#w + 1] = "ratelimit: no ratelimit.redis, so each worker counts on its own and the limits are per worker"
  end
  return w
end

return M
