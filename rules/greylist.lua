-- rules/greylist.lua: greylisting (docs/callouts.md, "greylist"): the first delivery attempt of a triplet (client
-- /24 or /64, sender, recipient) gets 451 4.7.1; a retry after greylist.delay seconds and within greylist.window
-- passes, and the triplet then passes at once for greylist.pass seconds. Authenticated sessions and hosts that are
-- not subject to relay enforcement skip it. The state is in Redis when greylist.redis names a server (shared by
-- every node, with TTLs, one atomic script per check), otherwise in this worker's memory.
local mta = require "luamta"
local domino = require "luamta.domino"

local cfg = mta.config.greylist
local dom = domino.new(mta)
local M = {}

local client
if cfg.redis then
  if not mta.config.redis[cfg.redis] then
    error(("greylist.redis: no redis.%s in the configuration"):format(cfg.redis), 0)
  end
  client = mta.redis(cfg.redis)
end

-- KEYS[1] the triplet's first attempt, KEYS[2] its pass; ARGV delay, window, pass. Returns 1 to pass, else the
-- seconds still to wait. The server's clock, so that every node counts the same time.
local SCRIPT = [[
local now = tonumber(redis.call('TIME')[1])
local delay, window, pass = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], pass)
  return -1
end
local first = redis.call('GET', KEYS[1])
if not first then
  redis.call('SET', KEYS[1], now, 'EX', window)
  return delay
end
local left = delay - (now - tonumber(first))
if left > 0 then return left end
redis.call('SET', KEYS[2], '1', 'EX', pass)
redis.call('DEL', KEYS[1])
return -1
]]

local first_seen, passed = {}, {}   -- in memory: triplet -> time

local function memory_check(triplet)
  local now = os.time()
  local p = passed[triplet]
  if p and now - p < cfg.pass then
    passed[triplet] = now
    return -1
  end
  local first = first_seen[triplet]
  if not first or now - first >= cfg.window then
    first_seen[triplet] = now
    return cfg.delay
  end
  local left = cfg.delay - (now - first)
  if left > 0 then return left end
  first_seen[triplet] = nil
  passed[triplet] = now
  return -1
end

local function network(ip)
  local a, b, c = ip:match("^(%d+)%.(%d+)%.(%d+)%.%d+$")
  if a then return a .. "." .. b .. "." .. c .. ".0/24" end
  -- IPv6: the first four groups of the address as written (a /64); "::" forms count as their own network
  local groups = {}
  for g in (ip:lower() .. ":"):gmatch("([^:]*):") do groups[#groups + 1] = g end
  return table.concat(groups, ":", 1, math.min(4, #groups)) .. "::/64"
end

function M.rcpt(s, rcpt)                             -- stage: rcpt
  if s.user or not dom:is_enforced(s) then return end
  local sender = s.sender and s.sender.address or ""
  local triplet = network(s.ip) .. "," .. sender:lower() .. "," .. rcpt.address:lower()
  local result, err
  if client then
    result, err = client:eval(SCRIPT, { "greylist:t:" .. triplet, "greylist:p:" .. triplet },
      { cfg.delay, cfg.window, cfg.pass })
    if result == nil then return mta.on_error(cfg.on_error, "greylist redis " .. cfg.redis, err) end
  else
    result = memory_check(triplet)
  end
  if result == -1 then return end
  s:log(("greylist triplet=%s retry_in=%d"):format(triplet, result))
  return mta.tempfail(451, "4.7.1 Greylisted, please try again later")
end

function M.check_warnings()
  local w = {}
  if not cfg.redis and mta.config.server.workers ~= 1 then
    w[#w + 1] = "greylist: no greylist.redis, so each worker keeps its own greylist in memory and a retry may "
      .. "land on a worker that has not seen the first attempt; set greylist.redis to share it"
  end
  return w
end

return M
