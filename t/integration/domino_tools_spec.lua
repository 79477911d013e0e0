-- t/integration/domino_tools_spec.lua - the Domino controls through the tools (SPEC sections 2 and 7):
-- `luamta simulate` runs one transaction through the bundled rules with the configured DNS (the same dnsmasq) and
-- prints each rule's verdict and the replies; a bundled rule shadowed from server.rules_dir takes effect at
-- `luamta reload` for new sessions, while an open session keeps the old rules and is not dropped.
local dns = require "t.helpers.dns"

local RELAY_REJECTED = "554 5.7.1 Relay rejected for policy reasons."

-- 127.0.0.3 is gw.trusted.test (PTR and A agree); 127.0.0.5 is listed at bl.one.test; 127.0.0.30 is denied.
local RECORDS = {
  hosts = { ["gw.trusted.test"] = "127.0.0.3" },
  lists = { ["bl.one.test"] = { "127.0.0.5" } },
}

local CONFIG = { inbound = {
  connection = { deny = { "[127.0.0.30]" } },
  relay = { allow_from = { "gw.trusted.test" } },
  dnsbl = { enabled = true, sites = { "bl.one.test" }, action = "reject" },
} }

describe("luamta simulate with the Domino controls", function()
  local env = dns.world(RECORDS, { start = false, config = CONFIG })

  local function simulate(args)
    return env.srv:luamta("simulate " .. args)
  end

  it("prints the relay rule's verdict and the 554 reply, and exits 1, for a stranger relaying", function()
    local out, rc = simulate("--ip 127.0.0.2 --from sender@example.org --to someone@elsewhere.test")
    assert.equal(1, rc, out)
    assert.truthy(out:find('stage=rcpt rule=relay verdict=reject reply="' .. RELAY_REJECTED .. '"', 1, true), out)
    assert.truthy(out:find("\nS: " .. RELAY_REJECTED .. "\n", 1, true), out)
    assert.truthy(out:find("result: the message would not be queued; 0 of 1 recipient accepted", 1, true), out)
  end)

  it("prints 250 for the final dot and exits 0 for a message to a local recipient, and queues nothing", function()
    local out, rc = simulate("--ip 127.0.0.2 --from sender@example.org --to jdoe@example.test")
    assert.equal(0, rc, out)
    assert.truthy(out:find("\nS: 250 2.0.0 Ok: would be queued (simulation, nothing was queued)\n", 1, true), out)
    assert.truthy(out:find("result: the message would be queued; 1 of 1 recipient accepted", 1, true), out)
    assert.same({}, env.srv:queue_files())
  end)

  it("exits 1 when one of two recipients is refused", function()
    local out, rc = simulate("--ip 127.0.0.2 --from sender@example.org --to jdoe@example.test "
                             .. "--to someone@elsewhere.test")
    assert.equal(1, rc, out)
    assert.truthy(out:find("\nS: " .. RELAY_REJECTED .. "\n", 1, true), out)
  end)

  it("uses the configured DNS: a client with the forward-confirmed name gw.trusted.test may relay", function()
    local mark = env.ns:mark()
    local out, rc = simulate("--ip 127.0.0.3 --from sender@example.org --to someone@elsewhere.test")
    assert.equal(0, rc, out)
    assert.truthy(env.ns:asked(dns.reverse("127.0.0.3"), "PTR", mark), "simulate asked the test's dnsmasq")
  end)

  it("prints the refused greeting and exits 1 for a denied client", function()
    local out, rc = simulate("--ip 127.0.0.30 --from sender@example.org --to jdoe@example.test")
    assert.equal(1, rc, out)
    assert.truthy(out:find("\nS: 554 5.7.1 Connection refused for policy reasons\n", 1, true), out)
    assert.truthy(out:find("stage=connect rule=connection verdict=reject", 1, true), out)
  end)

  it("prints the DNSBL refusal at MAIL with the default text for a listed client, and exits 1", function()
    local out, rc = simulate("--ip 127.0.0.5 --from sender@example.org --to jdoe@example.test")
    assert.equal(1, rc, out)
    assert.truthy(out:find("\nS: 550 5.7.1 Connection denied for policy reasons\n", 1, true), out)
  end)
end)

-- A relay.lua in server.rules_dir that shadows the bundled one: every relay is allowed.
local OPEN_RELAY = [[
local M = {}
function M.rcpt(s, rcpt)
  s:log("site relay.lua: no relay control")
end
return M
]]

describe("a bundled rule shadowed from server.rules_dir, taken at luamta reload", function()
  local env = dns.world(RECORDS, { config = CONFIG })

  -- relay(c) -> code, reply line of RCPT to a relay recipient in a new transaction on c
  local function relay(c)
    assert.equal(250, (c:cmd("RSET")))
    assert.equal(250, (c:cmd("MAIL FROM:<sender@example.org>")))
    local code, lines = c:cmd("RCPT TO:<someone@elsewhere.test>")
    return code, lines and lines[1]
  end

  it("changes the next session's behaviour, while the open session keeps the bundled rule", function()
    local a = env.session("127.0.0.2")
    local code, line = relay(a)
    assert.equal(554, code)
    assert.equal(RELAY_REJECTED, line)

    env.srv:write_rule("relay", OPEN_RELAY)
    local mark = env.srv:log_mark()
    local out, rc = env.srv:luamta("reload")
    assert.equal(0, rc, out)
    assert.truthy(env.srv:wait_log("worker 1: reload: policy generation", 5, mark, true), env.srv:log():sub(mark + 1))

    local b = env.session("127.0.0.2")
    code, line = relay(b)
    assert.equal(250, code, line)
    assert.truthy(env.srv:wait_log("site relay.lua: no relay control", 2, mark, true), env.srv:log():sub(mark + 1))

    assert.equal(250, (a:cmd("NOOP")), "the open session was not dropped")
    code, line = relay(a)
    assert.equal(554, code, "the open session keeps the rules it started with")
    assert.equal(RELAY_REJECTED, line)
    assert.equal(221, (a:cmd("QUIT")))
    assert.equal(221, (b:cmd("QUIT")))
  end)

  it("keeps the other bundled rules: the DNSBL still refuses a listed client after the reload", function()
    local c = env.session("127.0.0.5")
    local code, lines = c:cmd("MAIL FROM:<sender@example.org>")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Connection denied for policy reasons", lines[1])
  end)

  it("goes back to the bundled rule when the override is removed and the server reloads", function()
    os.remove(env.srv.rules_dir .. "/relay.lua")
    local log = env.srv:reload()
    assert.truthy(log:find("reload: policy generation", 1, true), log)
    local c = env.session("127.0.0.2")
    local code, line = relay(c)
    assert.equal(554, code)
    assert.equal(RELAY_REJECTED, line)
  end)
end)
