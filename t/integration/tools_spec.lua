-- t/integration/tools_spec.lua - a fresh machine passes the tests: every program a test runs comes from a package
-- that ./bootstrap installs, and a missing one fails its spec with "install PACKAGE" (t/helpers/tools.lua).
local tools = require "t.helpers.tools"
local server = require "t.helpers.server"

-- bootstrap_packages() -> set of the packages in ./bootstrap's PACKAGES list
local function bootstrap_packages()
  local text = assert(server.read_file("bootstrap"), "./bootstrap is missing")
  local list = assert(text:match('\nPACKAGES="(.-)"'), "./bootstrap has no PACKAGES=\"...\" list")
  local set = {}
  for p in list:gmatch("%S+") do set[p] = true end
  return set
end

describe("the tools the tests run", function()
  it("come from packages that ./bootstrap installs", function()
    local listed = bootstrap_packages()
    for _, p in ipairs(tools.packages()) do
      assert.is_true(listed[p] or false, "t/helpers/tools.lua needs " .. p .. ", which ./bootstrap does not install")
    end
  end)

  it("fail a spec with the package's name when a program is missing", function()
    tools.PROGRAMS["luamta-no-such-tool"] = "luamta-no-such-package"
    local ok, err = pcall(tools.need, "luamta-no-such-tool")
    tools.PROGRAMS["luamta-no-such-tool"] = nil
    assert.is_false(ok)
    assert.truthy(tostring(err):find("install luamta-no-such-package", 1, true), err)
  end)

  it("fail a spec with the package's name when a program is not where it is expected", function()
    local ok, err = pcall(tools.need, "dnsmasq", "/nonexistent/dnsmasq")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("install dnsmasq-base", 1, true), err)
  end)

  it("find every program on this machine (./bootstrap ran)", function()
    for program in pairs(tools.PROGRAMS) do
      local path = ({ dnsmasq = "/usr/sbin/dnsmasq", ["smtp-sink"] = "/usr/sbin/smtp-sink",
        ["smtp-source"] = "/usr/sbin/smtp-source", dovecot = "/usr/sbin/dovecot",
        ["dovecot-lmtp"] = "/usr/lib/dovecot/lmtp" })[program]
      tools.need(program, path)
    end
    for module in pairs(tools.PERL) do tools.need_perl(module) end
    for module in pairs(tools.PYTHON) do tools.need_python(module) end
  end)
end)
