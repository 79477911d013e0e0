-- t/rules/dkim_sign_spec.lua: which messages rules/dkim_sign.lua signs, with which key, and what it says when it
-- cannot (docs/dkim.md). The keys and msg:dkim_sign are fakes; the signature itself is checked against a real
-- verifier in t/integration/dkim_sign_spec.lua.
local fake = require "t.helpers.fake"

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)t/rules/dkim_sign_spec%.lua$") or "")

describe("rules.dkim_sign", function()
  local dir, keyfile

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    keyfile = dir .. "/k.pem"       -- the loader checks the PEM shape; the fake key loader does the rest
    local f = assert(io.open(keyfile, "w"))
    f:write("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    f:close()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  -- load(sign, bits, fail) -> the rule, and the paths mta.dkim.key was asked for
  local function load(sign, bits, fail)
    local mta = fake.mta({ server = { extra_rules = { "dkim_sign" } }, dkim = { sign = sign } })
    local asked = {}
    mta.dkim.key = function(path)
      asked[#asked + 1] = path
      if fail then return nil, "cannot load " .. path .. ": bad input" end
      return { path = path, bits = function() return bits or 2048 end }
    end
    local chunk = assert(loadfile(ROOT .. "rules/dkim_sign.lua"))
    local saved = package.loaded.luamta
    package.loaded.luamta = mta
    local ok, rule = pcall(chunk, "dkim_sign")
    package.loaded.luamta = saved
    if not ok then error(rule, 0) end
    return rule, asked
  end

  local function entries()
    return { { domain = "example.test", selector = "s1", key = keyfile },
             { domain = "other.test", selector = "s2", key = keyfile } }
  end

  -- message(froms, result) -> a fake msg whose From fields are froms; msg.signed records dkim_sign calls
  local function message(froms, ok, err)
    local msg = { signed = {} }
    function msg:headers(name)
      assert(name == "From")
      return froms
    end
    function msg:dkim_sign(key, domain, selector)
      self.signed[#self.signed + 1] = { key.path, domain, selector }
      if ok == false then return nil, err end
      return true
    end
    return msg
  end

  it("loads each key once, when the rule loads", function()
    local _, asked = load(entries())
    assert.same({ keyfile, keyfile }, asked)
  end)

  it("signs an authenticated user's message with the key of its From domain, and logs it", function()
    local rule = load(entries())
    local s = fake.session { user = "jdoe@example.test" }
    local msg = message { '"Doe, John" (work) <jdoe@Example.TEST>' }
    assert.is_nil(rule.message(s, msg))
    assert.same({ { keyfile, "example.test", "s1" } }, msg.signed)
    assert.same({ "rule=dkim_sign action=sign d=example.test s=s1" }, s.logs)
  end)

  it("signs a local submission, and takes a bare address", function()
    local rule = load(entries())
    local s = fake.session {}
    s.local_user = "cron"
    local msg = message { "root@other.test" }
    rule.message(s, msg)
    assert.same({ { keyfile, "other.test", "s2" } }, msg.signed)
  end)

  it("does not sign a session without AUTH", function()
    local rule = load(entries())
    local msg = message { "jdoe@example.test" }
    rule.message(fake.session {}, msg)
    assert.same({}, msg.signed)
  end)

  it("does not sign a From domain without a key, nor a sub-domain of one", function()
    local rule = load(entries())
    local msg = message { "a@nokey.test" }
    rule.message(fake.session { user = "a@nokey.test" }, msg)
    msg = message { "a@sub.example.test" }
    rule.message(fake.session { user = "a@sub.example.test" }, msg)
    assert.same({}, msg.signed)
  end)

  it("does not sign a message with several From fields, and says why", function()
    local rule = load(entries())
    local s = fake.session { user = "jdoe@example.test" }
    local msg = message { "jdoe@example.test", "boss@example.test" }
    rule.message(s, msg)
    assert.same({}, msg.signed)
    assert.same({ "rule=dkim_sign action=none reason=several From fields" }, s.logs)
  end)

  it("logs a signature that fails and lets the message go", function()
    local rule = load(entries())
    local s = fake.session { user = "jdoe@example.test" }
    assert.is_nil(rule.message(s, message({ "jdoe@example.test" }, false, "the message has no From field")))
    assert.same({ "rule=dkim_sign action=none d=example.test reason=the message has no From field" }, s.logs)
  end)

  it("fails to load when a key does not load, naming its place in the configuration", function()
    local ok, err = pcall(load, entries(), 2048, true)
    assert.is_false(ok)
    assert.matches("^%(fake config%):%d+: dkim%.sign%[1%]%.key: cannot load ", err)
    assert.matches(keyfile, err, 1, true)
  end)

  it("warns about short keys and about no keys at all", function()
    local rule = load(entries(), 1024)
    local w = rule.check_warnings()
    assert.equal(2, #w)
    assert.matches("1024-bit key; RFC 8301 recommends 2048 bits", w[1], 1, true)
    rule = load({})
    assert.matches("no key is listed, so nothing is signed", rule.check_warnings()[1], 1, true)
  end)
end)
