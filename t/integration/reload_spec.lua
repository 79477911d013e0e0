-- t/integration/reload_spec.lua - hot reload (SPEC sections 2 and 7): SIGHUP or `luamta reload` builds a new
-- policy; open sessions finish on the policy they started with, new sessions get the new one, no connection is
-- dropped, and a policy that fails to load leaves the old one in place with the reason in the log.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

local function policy(text)
  return ([[
local mta = require "luamta"
return {
  rcpt = function(s, rcpt)
    if rcpt.address == "x@example.test" then return mta.reject(550, "5.7.1 %s") end
  end,
}
]]):format(text)
end

local BROKEN = [[
local mta = require "luamta"
return {
  rcpt = function(s, rcpt)
    if rcpt.address == "x@example.test" then return mta.reject(550, "5.7.1 broken") end
  end
  -- a missing closing brace
]]

-- with_policy_server(): a describe block's daemon running policy v1, cleaned up whatever happens.
local function with_policy_server()
  local env = { clients = {} }
  setup(function()
    env.srv = server.start { rules = { { "policy", policy("v1") } } }
  end)
  teardown(function()
    for _, c in ipairs(env.clients) do c:close() end
    if env.srv then env.srv:cleanup() end
  end)
  function env.session()
    local c = smtp.session("127.0.0.1", env.srv.port)
    env.clients[#env.clients + 1] = c
    return c
  end
  -- rcpt_x(c) -> the reply line to RCPT x@example.test in a new transaction on c
  function env.rcpt_x(c)
    assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    local code, lines = c:cmd("RCPT TO:<x@example.test>")
    assert.equal(550, code, lines and tostring(lines.text or lines))
    assert.equal(250, (c:cmd("RSET")))
    return lines[1]
  end
  return env
end

describe("a reload during an open session", function()
  local env = with_policy_server()

  it("lets the open session finish on the old rules while a new session gets the new ones", function()
    local a = env.session()
    assert.equal("550 5.7.1 v1", env.rcpt_x(a))
    env.srv:write_rule("policy", policy("v2"))
    local log = env.srv:reload()
    assert.matches("reload: policy generation %d+ replaces %d+", log)
    assert.equal("550 5.7.1 v1", env.rcpt_x(a), "session A keeps the policy it started with")
    local b = env.session()
    assert.equal("550 5.7.1 v2", env.rcpt_x(b), "session B gets the new policy")
    assert.equal(250, (a:cmd("NOOP")), "session A was not dropped")
    assert.equal("550 5.7.1 v1", env.rcpt_x(a))
    assert.equal(221, (a:cmd("QUIT")))
  end)
end)

describe("a reload with a rule that does not compile", function()
  local env = with_policy_server()

  it("keeps the old policy for new sessions and logs why, with file:line", function()
    env.srv:write_rule("policy", BROKEN)
    local log = env.srv:reload()
    assert.truthy(log:find("reload failed", 1, true), log)
    assert.matches("policy%.lua:%d+:", log)
    local b = env.session()
    assert.equal("550 5.7.1 v1", env.rcpt_x(b))
  end)

  it("takes the fixed rule at the next reload", function()
    env.srv:write_rule("policy", policy("v3"))
    local log = env.srv:reload()
    assert.matches("reload: policy generation", log)
    local c = env.session()
    assert.equal("550 5.7.1 v3", env.rcpt_x(c))
  end)
end)

describe("luamta reload", function()
  local env = with_policy_server()

  it("sends SIGHUP to the server found through the spool and exits 0", function()
    env.srv:write_rule("policy", policy("v4"))
    local mark = env.srv:log_mark()
    local out, rc = env.srv:luamta("reload")
    assert.equal(0, rc, out)
    assert.matches("sent SIGHUP to " .. env.srv.pid, out)
    assert.truthy(env.srv:wait_log("worker 1: reload: policy generation", 5, mark, true), env.srv:log())
    local c = env.session()
    assert.equal("550 5.7.1 v4", env.rcpt_x(c))
  end)

  it("does not signal the server when the new rules do not compile, and exits 1", function()
    env.srv:write_rule("policy", BROKEN)
    local mark = env.srv:log_mark()
    local out, rc = env.srv:luamta("reload")
    assert.equal(1, rc, out)
    assert.matches("policy%.lua:%d+:", out)
    local c = env.session()
    assert.equal("550 5.7.1 v4", env.rcpt_x(c))
    assert.is_nil(env.srv:log():sub(mark + 1):find("reload", 1, true))
  end)
end)
