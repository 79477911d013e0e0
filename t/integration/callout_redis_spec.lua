-- t/integration/callout_redis_spec.lua: mta.redis against a redis-server started here (docs/callouts.md).
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local redis = require "t.helpers.redis"
local tools = require "t.helpers.tools"
local socket = require "socket"

local RULE = [[
local mta = require "luamta"
local r = mta.redis("default")
local SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
return { helo = function(s, name)
  local what = name:match("^([a-z]+)%.")
  local v, err
  if what == "set" then
    v, err = r:call("SET", "k", name)
  elseif what == "get" then
    v, err = r:call("GET", "k")
  elseif what == "missing" then
    v, err = r:call("GET", "no-such-key")
  elseif what == "eval" then
    v, err = r:eval(SCRIPT, { "counter" }, { 5 })
  elseif what == "list" then
    v, err = r:call("LRANGE", "l", 0, -1)
    if v then v = table.concat(v, ",") end
  elseif what == "bad" then
    v, err = r:call("NOSUCHCOMMAND")
  elseif what == "policy" then
    v, err = r:call("PING")
    if not v then return mta.on_error("tempfail", "redis default", err) end
  end
  return mta.reject(550, "5.0.0 redis " .. tostring(v) .. " " .. tostring(err))
end }
]]

describe("mta.redis", function()
  local srv, rs

  setup(function()
    rs = redis.start()
    srv = server.start({
      config = { redis = { default = { address = rs.address, timeout = 1, failures = 3, cooldown = 2 } } },
      rules = { { "caller", RULE } },
    })
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if rs then rs:cleanup() end
  end)

  local function ask(name)
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    c:send("EHLO " .. name .. "\r\n")
    local _, lines = c:read_reply(10)
    c:close()
    return lines and lines[1]
  end

  it("calls commands and gives their replies", function()
    assert.equal("550 5.0.0 redis OK nil", ask("set.test"))
    assert.equal("550 5.0.0 redis set.test nil", ask("get.test"))
    assert.equal("550 5.0.0 redis nil nil", ask("missing.test"))
    assert.matches("^550 5.0.0 redis nil ERR unknown command", ask("bad.test"))
  end)

  it("runs a script with EVALSHA, and loads it again after SCRIPT FLUSH", function()
    assert.equal("550 5.0.0 redis 5 nil", ask("eval.test"))
    assert.equal("550 5.0.0 redis 10 nil", ask("eval.test"))
    server.run(("%s -p %d SCRIPT FLUSH"):format(tools.need("redis-cli"), rs.port))
    assert.equal("550 5.0.0 redis 15 nil", ask("eval.test"))
  end)

  it("fails calls while Redis is down, opens the breaker, and reconnects when it is back", function()
    assert.equal("550 5.0.0 redis PONG nil", ask("policy.test"))
    rs:stop()
    local r1 = ask("policy.test")
    assert.equal("451 4.3.0 Temporary failure, try again later", r1)
    ask("policy.test")
    ask("policy.test")
    assert.truthy(srv:wait_log('service="redis default" breaker=open failures=3', 5, nil, true))
    local t0 = socket.gettime()
    assert.equal("451 4.3.0 Temporary failure, try again later", ask("policy.test"))
    assert.is_true(socket.gettime() - t0 < 0.5)
    assert.truthy(srv:wait_log('callout service="redis default" error="circuit open" on_error=tempfail', 5, nil, true))
    rs:restart()
    socket.sleep(2.5)
    local back
    for _ = 1, 20 do
      back = ask("policy.test")
      if back == "550 5.0.0 redis PONG nil" then break end
      socket.sleep(0.3)
    end
    assert.equal("550 5.0.0 redis PONG nil", back)
    assert.truthy(srv:wait_log('service="redis default" breaker=closed', 5, nil, true))
  end)
end)
