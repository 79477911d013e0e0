-- t/lua/dkim_config_spec.lua: the dkim section of the configuration (docs/dkim.md): keys per domain, each key
-- file read when the configuration loads, errors with file:line, the warning when the rule is off.
local config = require "luamta.config"

local FILE = "/etc/luamta/luamta.lua"
local OPTS = { hostname = "mx.example.test", ncpu = 1, sysconfdir = "/etc/luamta", datadir = "/usr/share/luamta" }

local function load(source)
  return config.load_string('server = { spool = "/s", listen = "127.0.0.1:25", extra_rules = "dkim_sign" }\n'
    .. source, "@" .. FILE, OPTS)
end

describe("dkim settings", function()
  local dir, key, pub

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    key, pub = dir .. "/k.pem", dir .. "/pub.pem"
    local f = assert(io.open(key, "w"))   -- only the shape is checked here; the rule parses it with mbedTLS
    f:write("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    f:close()
    f = assert(io.open(pub, "w"))
    f:write("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n")
    f:close()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("default to no keys", function()
    assert.same({ sign = {} }, assert(load("")).dkim)
  end)

  it("keep domains in lower case, with the key's place for the rule's errors", function()
    local cfg = assert(load('dkim = { sign = {\n  { domain = "Example.TEST.", selector = "s1", key = "' .. key
      .. '" },\n} }\n'))
    local e = cfg.dkim.sign[1]
    assert.same({ "example.test", "s1", key }, { e.domain, e.selector, e.key })
    assert.equal(FILE .. ":3: dkim.sign[1].key", e.where)
  end)

  it("refuse a missing key file, a public key, a bad selector and a domain listed twice, with file:line", function()
    local _, errors = load('dkim = { sign = {\n'
      .. '  { domain = "a.test", selector = "s1", key = "' .. dir .. '/none.pem" },\n'
      .. '  { domain = "b.test", selector = "s 1", key = "' .. pub .. '" },\n'
      .. '  { domain = "a.test", selector = "s2", key = "' .. key .. '" },\n'
      .. '  { selector = "s3", key = "' .. key .. '" },\n} }\n')
    local text = table.concat(errors, "\n")
    assert.matches(FILE .. ":3: dkim.sign[1].key: cannot read it (" .. dir .. "/none.pem", text, 1, true)
    assert.matches(FILE .. ":4: dkim.sign[2].selector: got string \"s 1\"; expected a selector", text, 1, true)
    assert.matches(FILE .. ":4: dkim.sign[2].key: a public key in " .. pub, text, 1, true)
    assert.matches('dkim.sign[3]: "a.test" is listed twice', text, 1, true)
    assert.matches("dkim.sign[4].domain: missing", text, 1, true)
  end)

  it("warn when keys are listed and the dkim_sign rule is off", function()
    local cfg, _, warnings = config.load_string('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
      .. 'dkim = { sign = { { domain = "a.test", selector = "s1", key = "' .. key .. '" } } }\n', "@" .. FILE, OPTS)
    assert.truthy(cfg)
    assert.matches("dkim.sign: keys are listed but the dkim_sign rule is off", table.concat(warnings, "\n"), 1, true)
  end)
end)
