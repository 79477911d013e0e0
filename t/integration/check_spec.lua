-- t/integration/check_spec.lua - `luamta check -c FILE` (SPEC section 2): exit 0 for a good configuration, exit 1
-- with file:line (or the key path) and what is expected for a bad one, including a rule that does not compile.
local server = require "t.helpers.server"

describe("luamta check", function()
  local dir

  before_each(function()
    dir = server.tempdir()
    assert(require("lfs").mkdir(dir .. "/rules"))
  end)

  after_each(function()
    if dir and not os.getenv("LUAMTA_KEEP_TMP") then server.run("rm -rf " .. server.sh_quote(dir)) end
  end)

  -- check(source, rules) -> output, exit code, config path
  local function check(source, rules)
    local path = dir .. "/luamta.lua"
    server.write_file(path, source)
    for name, text in pairs(rules or {}) do server.write_file(dir .. "/rules/" .. name .. ".lua", text) end
    local out, rc = server.luamta("check -c " .. server.sh_quote(path))
    return out, rc, path
  end

  local GOOD = [[
server = {
  hostname = "mx.example.test",
  listen = { "127.0.0.1:2525" },
  spool = "spool",
  workers = 1,
  rules_dir = "rules",
}
local_domains = { "example.test" }
directory = { users = { { address = "jdoe@example.test" } } }
]]

  it("exits 0 for a good configuration", function()
    local out, rc, path = check(GOOD)
    assert.equal(0, rc, out)
    assert.truthy(out:find(path .. ": configuration and rules OK", 1, true), out)
  end)

  it("exits 0 for the quickstart example", function()
    local out, rc = server.luamta("check -c examples/quickstart.lua")
    assert.equal(0, rc, out)
  end)

  it("exits 0 with a site rule that loads, added after the defaults by server.extra_rules", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  extra_rules = { \"mine\" },")
    local out, rc = check(source, { mine = "return { rcpt = function(s, r) end }\n" })
    assert.equal(0, rc, out)
  end)

  it("exits 1 when server.rules leaves out every module that enforces relay control", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"mine\" },")
    local out, rc, path = check(source, { mine = "return { rcpt = function(s, r) end }\n" })
    assert.equal(1, rc, out)
    assert.truthy(out:find(path .. ": server.rules: no rule module enforces relay control", 1, true), out)
    assert.truthy(out:find("server.extra_rules", 1, true), out)
  end)

  it("exits 0 when a site module that replaces the list says it enforces relay control", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"mine\" },")
    local out, rc = check(source, { mine = "return { enforces_relay = true, rcpt = function(s, r) end }\n" })
    assert.equal(0, rc, out)
  end)

  it("exits 0 without a relay module when inbound.relay.enforce = \"none\", and prints the open-relay warning",
    function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"mine\" },")
      .. 'inbound = { relay = { enforce = "none" } }\n'
    local out, rc, path = check(source, { mine = "return { rcpt = function(s, r) end }\n" })
    assert.equal(0, rc, out)
    local line = out:match("warning: [^\n]*inbound%.relay%.enforce: open relay[^\n]*") or ""
    assert.truthy(line:find("warning: " .. path .. ":", 1, true), out)
  end)

  it("prints the loader's warning for a public listener without TLS", function()
    local source = GOOD:gsub('listen = { "127.0.0.1:2525" }', 'listen = { "192.0.2.1:25" }')
    local out, rc, path = check(source)
    assert.equal(0, rc, out)
    local line = out:match("warning: [^\n]*server%.listen%[1%]: listening on a public address without TLS[^\n]*") or ""
    assert.truthy(line:find("warning: " .. path .. ":", 1, true), out)
  end)

  it("refuses to run a configuration whose rules do not enforce relay control", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"mine\" },")
    local path = dir .. "/luamta.lua"
    server.write_file(path, source)
    server.write_file(dir .. "/rules/mine.lua", "return { rcpt = function(s, r) end }\n")
    local out, rc = server.luamta("run -c " .. server.sh_quote(path))
    assert.equal(1, rc, out)
    assert.truthy(out:find("no rule module enforces relay control", 1, true), out)
  end)

  it("an unknown key exits 1 with file:line and the nearest valid key", function()
    local source = [[
server = {
  hostname = "mx.example.test",
  spool = "spool",
  max_recipents = 10,
}
]]
    local out, rc, path = check(source)
    assert.equal(1, rc, out)
    assert.truthy(out:find(path .. ":4:", 1, true), out)
    assert.truthy(out:find("max_recipents", 1, true), out)
    assert.truthy(out:find('"max_recipients"', 1, true), out)
  end)

  it("an unknown section exits 1 with file:line and the nearest section", function()
    local out, rc, path = check(GOOD .. "delivry = { maildir = \"x\" }\n")
    assert.equal(1, rc, out)
    assert.truthy(out:find(path .. ":10:", 1, true), out)
    assert.truthy(out:find('"delivery"', 1, true), out)
  end)

  it("a value of the wrong kind exits 1 with file:line", function()
    local out, rc, path = check((GOOD:gsub("workers = 1", "workers = \"many\"")))
    assert.equal(1, rc, out)
    assert.truthy(out:find(path .. ":5:", 1, true), out)
    assert.truthy(out:find("workers", 1, true), out)
  end)

  it("a configuration without a spool exits 1 and names server.spool", function()
    local out, rc = check("server = { hostname = \"mx.example.test\" }\n")
    assert.equal(1, rc, out)
    assert.truthy(out:find("spool", 1, true), out)
  end)

  it("a rule with a syntax error exits 1 with the rule's file:line", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"broken\" },")
    local out, rc = check(source, { broken = "local M = {}\nfunction M.rcpt(s, r)\n  if then\nend\nreturn M\n" })
    assert.equal(1, rc, out)
    assert.truthy(out:find(dir .. "/rules/broken.lua:3:", 1, true), out)
  end)

  it("a rule module that is not found exits 1 and says where it looked", function()
    local source = GOOD:gsub("rules_dir = \"rules\",", "rules_dir = \"rules\",\n  rules = { \"missing\" },")
    local out, rc = check(source)
    assert.equal(1, rc, out)
    assert.truthy(out:find("missing", 1, true), out)
    assert.truthy(out:find("not found", 1, true), out)
  end)
end)
