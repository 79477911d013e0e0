-- t/helpers/redis.lua - a real redis-server for the call-out specs: on a free loopback port, without
-- persistence, in its own directory, stopped by PID.
--
--   local redis = require "t.helpers.redis"
--   local r = redis.start()   -- r.port, r.address ("127.0.0.1:<port>"), r.dir; fails "install redis-server"
--   r:stop()                  -- kill it and wait until its port is closed (a spec's "Redis is down")
--   r:restart()               -- the same port and directory again
--   r:cleanup()               -- stop it if it runs, remove its directory (teardown)
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"
local socket = require "socket"

local M = {}
local Redis = {}
Redis.__index = Redis

-- wait_port(port, up) -> true once 127.0.0.1:port takes connections (up) or refuses them (not up), within 10 s
local function wait_port(port, up)
  local deadline = socket.gettime() + 10
  repeat
    local c = socket.connect("127.0.0.1", port)
    if c then c:close() end
    if (c ~= nil) == up then return true end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return false
end

function Redis:restart()
  local out = server.run(("setsid %s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
    .. ">/dev/null 2>&1 & echo $!"):format(tools.need("redis-server"), self.port, server.sh_quote(self.dir)))
  self.pid = tonumber(out:match("(%d+)"))
  assert(wait_port(self.port, true), "redis-server did not start")
  return self
end

function Redis:stop()
  if not self.pid then return end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  assert(wait_port(self.port, false), "redis-server did not stop")
  self.pid = nil
end

function Redis:cleanup()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  self.pid = nil
  server.run("rm -rf " .. server.sh_quote(self.dir))
end

function M.start()
  local r = setmetatable({ port = server.free_port(), dir = server.tempdir() }, Redis)
  r.address = "127.0.0.1:" .. r.port
  return r:restart()
end

return M
