-- t/integration/scenario_spec.lua - `luamta test` (docs/rules.md, "Policy tests"): the bundled scenarios pass
-- through the real binary; a wrong expectation fails with "not ok" and exit 1; a DNS name a scenario does not
-- declare is NXDOMAIN; scenarios in server.rules_dir/tests run against the site's configuration; --junit writes
-- XML that a real parser reads; a broken scenario is reported with its file and key.
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"

describe("luamta test", function()
  local dir

  before_each(function()
    dir = server.tempdir()
    assert(require("lfs").mkdir(dir .. "/rules"))
    assert(require("lfs").mkdir(dir .. "/rules/tests"))
  end)

  after_each(function()
    if dir and not os.getenv("LUAMTA_KEEP_TMP") then server.run("rm -rf " .. server.sh_quote(dir)) end
  end)

  local SITE = [[
server = {
  hostname = "mx.site.test",
  listen = { "127.0.0.1:2525" },
  spool = "spool",
  workers = 1,
  rules_dir = "rules",
}
local_domains = { "site.test" }
directory = { users = { { address = "ann@site.test" } } }
inbound = { sender = { deny = { "@banned.test" } } }
]]

  local function write(name, text)
    local path = dir .. "/" .. name
    server.write_file(path, text)
    return path
  end

  local function count_lines(out, pattern)
    local n = 0
    for _ in out:gmatch(pattern) do n = n + 1 end
    return n
  end

  it("passes every bundled scenario and prints TAP", function()
    local out, rc = server.luamta("test")
    assert.equal(0, rc, out)
    local plan = tonumber(out:match("^1%.%.(%d+)\n"))
    assert.truthy(plan and plan >= 25, out)
    assert.equal(plan, count_lines(out, "\nok %d+ %- "), out)
    assert.falsy(out:find("not ok", 1, true), out)
    -- the Domino examples of the help pages are among them
    for _, name in ipairs { "\"abc.com\"", "\"@xyz.com\"", "\"%AcmeEast\"", "precedence \"deny\"", "dnsbl",
      "dnswl", "verify_local", "verify_domain", "verify_hostname" } do
      assert.truthy(out:find(name, 1, true), name .. "\n" .. out)
    end
  end)

  it("fails a wrong expectation with not ok, the reason and the transcript, and exits 1", function()
    local cfg = write("luamta.lua", SITE)
    local scn = write("wrong.lua", [[
return {
  name = "a wrong expectation",
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "x@elsewhere.test" },
  expect = { rcpt = "250" },
}
]])
    local out, rc = server.luamta("test -c " .. server.sh_quote(cfg) .. " " .. server.sh_quote(scn))
    assert.equal(1, rc, out)
    assert.truthy(out:find("not ok 1 - a wrong expectation", 1, true), out)
    assert.truthy(out:find('rcpt x@elsewhere.test: expected "250", got "554 5.7.1 Relay rejected', 1, true), out)
    assert.truthy(out:find("C: RCPT TO:<x@elsewhere.test>", 1, true), out)
  end)

  it("answers a DNS name the scenario does not declare with NXDOMAIN, and declared ones from the fixtures", function()
    local cfg = write("luamta.lua", SITE .. "inbound.sender.verify_domain = true\n")
    local undeclared = write("undeclared.lua", [[
return {
  session = { ip = "203.0.113.9", mail = "a@undeclared.test", rcpt = "ann@site.test" },
  expect = { mail = "550 5.1.8 Sender domain undeclared.test does not exist", log = { "MX undeclared%.test: nxdomain" } },
}
]])
    local declared = write("declared.lua", [[
return {
  dns = { ["declared.test/A"] = "192.0.2.1" },
  session = { ip = "203.0.113.9", mail = "a@declared.test", rcpt = "ann@site.test" },
  expect = { mail = "250", rcpt = "250", data = "250" },
}
]])
    local out, rc = server.luamta("test -c " .. server.sh_quote(cfg) .. " " .. server.sh_quote(undeclared) .. " "
      .. server.sh_quote(declared))
    assert.equal(0, rc, out)
    assert.equal(2, count_lines(out, "\nok %d+ %- "), out)
  end)

  it("runs the site's scenarios from server.rules_dir/tests against the site's configuration", function()
    local cfg = write("luamta.lua", SITE)
    write("rules/tests/banned.lua", [[
return {
  name = "site: the banned domain is refused",
  session = { ip = "203.0.113.9", mail = "x@banned.test", rcpt = "ann@site.test" },
  expect = { mail = "554 5.7.1 Mail from x@banned.test rejected for policy reasons." },
}
]])
    write("rules/tests/_helper.lua", "return 'not a scenario: names starting with _ are left out'\n")
    local out, rc = server.luamta("test -c " .. server.sh_quote(cfg))
    assert.equal(0, rc, out)
    assert.truthy(out:find("ok %d+ %- site: the banned domain is refused"), out)
    assert.falsy(out:find("_helper", 1, true), out)
  end)

  it("reports a scenario with an unknown key or a bad value with its file and key", function()
    local cfg = write("luamta.lua", SITE)
    local scn = write("broken.lua", [[
return {
  session = { ip = "203.0.113.9", mail = "a@x.test", rcpt = "ann@site.test", colour = "red" },
  dns = { ["x.test/MX"] = "mx.x.test" },
  expect = { rcpt = "ok" },
}
]])
    local out, rc = server.luamta("test -c " .. server.sh_quote(cfg) .. " " .. server.sh_quote(scn))
    assert.equal(1, rc, out)
    assert.truthy(out:find(scn .. ": session: unknown key colour", 1, true), out)
    assert.truthy(out:find('MX record "mx.x.test": expected "PREFERENCE HOST"', 1, true), out)
    assert.truthy(out:find(scn .. ": expect.rcpt: expected a reply", 1, true), out)
  end)

  it("lays the scenario's config over the file's, and --junit writes XML that parses", function()
    tools.need("python3")
    local cfg = write("luamta.lua", SITE)
    local scn = write("overlay.lua", [[
return {
  name = "overlay: a scenario opens relaying for one domain",
  config = { inbound = { relay = { allow_to = { "@partner.test" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = { "x@partner.test", "x@other.test" } },
  expect = { rcpt = { "250", "250" } },
}
]])
    local xml = dir .. "/junit.xml"
    local out, rc = server.luamta("test -c " .. server.sh_quote(cfg) .. " --junit " .. server.sh_quote(xml) .. " "
      .. server.sh_quote(scn))
    assert.equal(1, rc, out)     -- x@other.test is still refused: the overlay changed only allow_to
    assert.truthy(out:find('rcpt x@other.test: expected "250", got "554 5.7.1', 1, true), out)
    assert.falsy(out:find("rcpt x@partner.test", 1, true), out)
    local parsed = server.run("python3 -c " .. server.sh_quote([[
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot().find("testsuite")
print(s.get("tests"), s.get("failures"), s.find("testcase").get("name"))
]]) .. " " .. server.sh_quote(xml))
    assert.equal("1 1 overlay: a scenario opens relaying for one domain", (parsed:gsub("%s+$", "")))
  end)
end)
