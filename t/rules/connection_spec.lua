-- t/rules/connection_spec.lua
local fake = require "t.helpers.fake"

local REFUSED = { "reject", 554, "5.7.1 Connection refused for policy reasons" }

local function verdict(v)
  if v == nil then return nil end
  return { v.action, v.code, v.text }
end

local function rule(connection, extra)
  local cfg = extra or {}
  cfg.local_domains = cfg.local_domains or { "example.org" }
  cfg.inbound = { connection = connection }
  return (fake.load_rule("connection", cfg))
end

local function logged(s, text)
  for _, line in ipairs(s.logs) do
    if line:find(text, 1, true) then return true end
  end
  return false
end

describe("rules.connection", function()
  describe("connect", function()
    it("has no opinion and looks nothing up when both lists are empty", function()
      local s = fake.session { ip = "192.0.2.7" }
      assert.is_nil(rule({}).connect(s))
      assert.equal(0, s.hostname_calls)
    end)
    it("refuses an IP in the deny list with 554 5.7.1 and logs the entry", function()
      local s = fake.session { ip = "192.0.2.7" }
      assert.same(REFUSED, verdict(rule({ deny = { "[192.0.2.*]" } }).connect(s)))
      assert.is_true(logged(s, 'inbound.connection.deny[1] "[192.0.2.*]"'))
    end)
    it("lets deny win over allow for the same client", function()
      local r = rule({ allow = { "[192.0.2.0/24]" }, deny = { "[192.0.2.7]" } })
      assert.same(REFUSED, verdict(r.connect(fake.session { ip = "192.0.2.7" })))
      assert.is_nil(r.connect(fake.session { ip = "192.0.2.8" }))
    end)
    it("refuses a client that a non-empty allow list does not name", function()
      local s = fake.session { ip = "198.51.100.7" }
      assert.same(REFUSED, verdict(rule({ allow = { "[192.0.2.0/24]" } }).connect(s)))
      assert.is_true(logged(s, "not in inbound.connection.allow"))
    end)
    it("accepts a client in the allow list by IP without looking its name up", function()
      local s = fake.session { ip = "192.0.2.7", host = "mail.spam.test" }
      assert.is_nil(rule({ allow = { "[192.0.2.7]" }, deny = { "spam.test" } }).connect(s))
      assert.equal(0, s.hostname_calls)
    end)
    it("refuses a client whose verified name is in the deny list", function()
      local s = fake.session { ip = "198.51.100.7", host = "mail.spam.test" }
      assert.same(REFUSED, verdict(rule({ deny = { "spam.test" } }).connect(s)))
      assert.is_true(logged(s, "name=mail.spam.test"))
    end)
    it("accepts a client whose verified name is in the allow list", function()
      local s = fake.session { ip = "198.51.100.7", host = "smtp.abc.com" }
      assert.is_nil(rule({ allow = { "abc.com" } }).connect(s))
    end)
    it("refuses a client with no verified name when the allow list names hosts", function()
      local s = fake.session { ip = "198.51.100.7", host_error = "none" }
      assert.same(REFUSED, verdict(rule({ allow = { "abc.com" } }).connect(s)))
    end)
    it("accepts a client with no verified name when only the deny list names hosts", function()
      assert.is_nil(rule({ deny = { "spam.test" } }).connect(fake.session { ip = "198.51.100.7" }))
    end)
    it("does not trust a name for a leading-dot entry's bare domain", function()
      local r = rule({ deny = { ".abc.com" } })
      assert.is_nil(r.connect(fake.session { host = "abc.com" }))
      assert.same(REFUSED, verdict(r.connect(fake.session { host = "mail.abc.com" })))
    end)
    it("answers 421 4.7.1 when the host name needed for the decision timed out", function()
      local s = fake.session { ip = "198.51.100.7", host_error = "timeout" }
      assert.same({ "tempfail", 421, "4.7.1 Cannot verify your host name 198.51.100.7" },
                  verdict(rule({ allow = { "abc.com" } }).connect(s)))
      assert.same({ "tempfail", 421, "4.7.1 Cannot verify your host name 198.51.100.7" },
                  verdict(rule({ deny = { "spam.test" } }).connect(fake.session { host_error = "timeout" })))
    end)
    it("still refuses with 554 on a timeout when no name could have helped", function()
      local s = fake.session { ip = "198.51.100.7", host_error = "timeout" }
      assert.same(REFUSED, verdict(rule({ allow = { "[192.0.2.7]" }, deny = { "spam.test" } }).connect(s)))
    end)
    it("matches IPv6 clients against IPv6 entries", function()
      local r = rule({ deny = { "[2001:db8::/32]" } })
      assert.same(REFUSED, verdict(r.connect(fake.session { ip = "2001:db8::25" })))
      assert.is_nil(r.connect(fake.session { ip = "2001:db9::25" }))
    end)
    it("takes groups from the directory", function()
      local r = rule({ deny = { "Spammers" } }, { directory = { groups = { Spammers = { "[192.0.2.7]", "spam.test" } } } })
      assert.same(REFUSED, verdict(r.connect(fake.session { ip = "192.0.2.7" })))
      assert.same(REFUSED, verdict(r.connect(fake.session { ip = "198.51.100.1", host = "x.spam.test" })))
      assert.is_nil(r.connect(fake.session { ip = "198.51.100.1", host = "x.ham.test" }))
    end)
    it("refuses everyone for deny = *, without a name lookup", function()
      local s = fake.session { ip = "198.51.100.7" }
      assert.same(REFUSED, verdict(rule({ deny = { "*" } }).connect(s)))
      assert.equal(0, s.hostname_calls)
    end)
  end)

  describe("mail", function()
    it("has no opinion when verify_hostname is off", function()
      local s = fake.session { ip = "198.51.100.7" }
      assert.is_nil(rule({}).mail(s, fake.addr "a@b.test"))
      assert.equal(0, s.hostname_calls)
    end)
    it("accepts a client with a verified name when verify_hostname is on", function()
      assert.is_nil(rule({ verify_hostname = true }).mail(fake.session { host = "mx.b.test" }, fake.addr "a@b.test"))
    end)
    it("rejects a client without a verified name with 550 5.7.1", function()
      local s = fake.session { ip = "198.51.100.7" }
      assert.same({ "reject", 550, "5.7.1 Cannot verify your host name 198.51.100.7" },
                  verdict(rule({ verify_hostname = true }).mail(s, fake.addr "a@b.test")))
      assert.is_true(logged(s, "verify_hostname"))
    end)
    it("answers 450 4.7.1 when the name lookup timed out", function()
      local s = fake.session { ip = "198.51.100.7", host_error = "timeout" }
      assert.same({ "tempfail", 450, "4.7.1 Cannot verify your host name 198.51.100.7" },
                  verdict(rule({ verify_hostname = true }).mail(s, fake.addr "a@b.test")))
    end)
    it("names an IPv6 client as it is", function()
      local s = fake.session { ip = "2001:db8::25" }
      assert.same({ "reject", 550, "5.7.1 Cannot verify your host name 2001:db8::25" },
                  verdict(rule({ verify_hostname = true }).mail(s, fake.addr "")))
    end)
  end)

  describe("loading", function()
    it("refuses a malformed entry with its key path", function()
      assert.has_error(function() rule({ allow = { "[192.0.2.7]", "[300.1.1.1]" } }) end,
        'inbound.connection.allow[2]: got "[300.1.1.1]", an octet over 255 ("300"); expected an IP entry such as '
        .. "[192.0.2.7], [192.0.2.*], [192.0.2.1-30], [192.0.2.0/24], [2001:db8::1] or [2001:db8::/32]")
    end)
    it("refuses an unbracketed IP", function()
      assert.has_error(function() rule({ deny = { "192.0.2.7" } }) end,
        'inbound.connection.deny[1]: got "192.0.2.7", an IP address without brackets; expected [192.0.2.7]')
    end)
  end)

  describe("check_warnings", function()
    it("names string-suffix and leading-dot entries with their key paths", function()
      local w = rule({ allow = { "abc.com" }, deny = { ".spam.test" } }).check_warnings()
      assert.equal(2, #w)
      assert.matches('^inbound%.connection%.allow%[1%]: "abc%.com" is a string suffix', w[1])
      assert.matches('^inbound%.connection%.deny%[1%]: "%.spam%.test" has a leading dot', w[2])
    end)
    it("warns that host names are trusted on PTR alone with dns.verify_ptr = ptr_only", function()
      local w = rule({ allow = { "[192.0.2.7]", "mail.abc.com" } }, { dns = { verify_ptr = "ptr_only" } }).check_warnings()
      assert.matches('^inbound%.connection%.allow: host%-name entries are trusted on the PTR record alone', w[#w])
    end)
    it("warns about an unknown group", function()
      local w = rule({ deny = { "Nobody" } }).check_warnings()
      assert.same({ 'inbound.connection.deny[1]: unknown group "Nobody" matches nothing; expected a group of '
                    .. "directory.groups" }, w)
    end)
    it("is empty for IP entries", function()
      assert.same({}, rule({ allow = { "[192.0.2.0/24]" } }).check_warnings())
    end)
  end)
end)
