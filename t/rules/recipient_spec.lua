-- t/rules/recipient_spec.lua
local fake = require "t.helpers.fake"

local REJECTED = { "reject", 554, "5.7.1 Message rejected for policy reasons." }
local USERS = {
  { address = "jdoe@example.test", aliases = { "john@example.test" } },
  { address = "ann@example.test" },
}

local function verdict(v)
  if v == nil then return nil end
  return { v.action, v.code, v.text }
end

local function no_such_user(addr)
  return { "reject", 550, "5.1.1 " .. addr .. "... No such user" }
end

local function rule(recipient, extra, opts)
  local cfg = extra or {}
  cfg.local_domains = { "example.test" }
  cfg.directory = cfg.directory or { users = USERS }
  cfg.inbound = { recipient = recipient }
  return (fake.load_rule("recipient", cfg, opts))
end

local function session()
  return fake.session { ip = "203.0.113.9" }
end

describe("rules.recipient", function()
  describe("the recipient lists", function()
    it("have no opinion for a recipient outside the local domains", function()
      assert.is_nil(rule({ deny = { "*" }, verify_local = true }).rcpt(session(), fake.addr "a@elsewhere.test"))
    end)
    it("reject a local recipient in the deny list with 554 5.7.1 and log the entry", function()
      local s = session()
      assert.same(REJECTED, verdict(rule({ deny = { "ann@example.test" } }).rcpt(s, fake.addr "Ann@Example.test")))
      assert.matches('inbound%.recipient%.deny%[1%] "ann@example%.test"', s.logs[1])
    end)
    it("let deny win over allow", function()
      local r = rule({ allow = { "@example.test" }, deny = { "ann@example.test" } })
      assert.same(REJECTED, verdict(r.rcpt(session(), fake.addr "ann@example.test")))
      assert.is_nil(r.rcpt(session(), fake.addr "jdoe@example.test"))
    end)
    it("reject a local recipient that a non-empty allow list does not name", function()
      local r = rule({ allow = { "Reachable" } }, { directory = { users = USERS, groups = { Reachable = { "jdoe@example.test" } } } })
      assert.is_nil(r.rcpt(session(), fake.addr "jdoe@example.test"))
      assert.same(REJECTED, verdict(r.rcpt(session(), fake.addr "ann@example.test")))
    end)
    it("apply to authenticated sessions too", function()
      assert.same(REJECTED, verdict(rule({ deny = { "ann@example.test" } }).rcpt(
        fake.session { user = "jdoe@example.test" }, fake.addr "ann@example.test")))
    end)
    it("have no opinion for <postmaster> without a domain", function()
      assert.is_nil(rule({ allow = { "jdoe@example.test" }, verify_local = true }).rcpt(session(),
        { address = "postmaster", localpart = "postmaster", domain = "" }))
    end)
  end)

  describe("verify_local", function()
    it("accepts a recipient the directory knows, by address or alias", function()
      local r = rule({ verify_local = true })
      assert.is_nil(r.rcpt(session(), fake.addr "jdoe@example.test"))
      assert.is_nil(r.rcpt(session(), fake.addr "John@example.test"))
    end)
    it("rejects an unknown local recipient with 550 5.1.1 <addr>... No such user", function()
      local s = session()
      assert.same({ "reject", 550, "5.1.1 nobody@example.test... No such user" },
                  verdict(rule({ verify_local = true }).rcpt(s, fake.addr "nobody@example.test")))
      assert.matches("reason=verify_local: not in the directory", s.logs[1])
    end)
    it("runs after the lists", function()
      assert.same(REJECTED, verdict(rule({ verify_local = true, deny = { "nobody@example.test" } }).rcpt(
        session(), fake.addr "nobody@example.test")))
    end)
    it("accepts when the directory lookup cannot complete, and logs it", function()
      local s = session()
      assert.is_nil(rule({ verify_local = true }, nil, { directory_error = "unavailable" }).rcpt(s,
        fake.addr "nobody@example.test"))
      assert.matches("directory lookup failed: unavailable; accepted", s.logs[1])
    end)
    it("accepts when the directory lookup raises an error", function()
      local r, mta = fake.load_rule("recipient", { local_domains = { "example.test" },
                                                    inbound = { recipient = { verify_local = true } } })
      mta.directory.lookup = function() error("directory went away") end
      assert.is_nil(r.rcpt(session(), fake.addr "nobody@example.test"))
    end)
    it("accepts unknown recipients when it is off", function()
      assert.is_nil(rule({}).rcpt(session(), fake.addr "nobody@example.test"))
    end)
  end)

  describe("with a smart host", function()
    local smart = { smart_host = "smart.example.test" }
    it("accepts unknown local recipients for the smart host when verify_local is off", function()
      assert.is_nil(rule({}, { routing = smart }).rcpt(session(), fake.addr "nobody@example.test"))
    end)
    it("rejects unknown local recipients when verify_local is on", function()
      assert.same(no_such_user("nobody@example.test"),
                  verdict(rule({ verify_local = true }, { routing = smart }).rcpt(session(), fake.addr "nobody@example.test")))
    end)
    it("with smart_host_all, accepts only known recipients, even with verify_local off", function()
      local r = rule({}, { routing = { smart_host = "smart.example.test", smart_host_all = true } })
      assert.same(no_such_user("nobody@example.test"), verdict(r.rcpt(session(), fake.addr "nobody@example.test")))
      assert.is_nil(r.rcpt(session(), fake.addr "jdoe@example.test"))
    end)
    it("with smart_host_all, accepts when the directory cannot answer", function()
      local r = rule({}, { routing = { smart_host = "smart.example.test", smart_host_all = true } },
                     { directory_error = "timeout" })
      assert.is_nil(r.rcpt(session(), fake.addr "nobody@example.test"))
    end)
  end)

  describe("loading and check_warnings", function()
    it("refuses a malformed entry with its key path", function()
      assert.has_error(function() rule({ allow = { "[192.0.2.300]" } }) end,
        'inbound.recipient.allow[1]: got "[192.0.2.300]", an octet over 255 ("300"); expected an IP entry such as '
        .. "[192.0.2.7], [192.0.2.*], [192.0.2.1-30], [192.0.2.0/24], [2001:db8::1] or [2001:db8::/32]")
    end)
    it("warns about suffix entries and empty groups", function()
      local w = rule({ deny = { "example.test", "Gone" } }, { directory = { users = USERS, groups = { Gone = {} } } })
        .check_warnings()
      assert.matches('^inbound%.recipient%.deny%[1%]: "example%.test" is a string suffix', w[1])
      assert.matches('^inbound%.recipient%.deny%[2%]: group "Gone" is empty', w[2])
    end)
    it("warns that verify_local with an empty directory rejects every local recipient", function()
      local w = rule({ verify_local = true }, { directory = {} }).check_warnings()
      assert.same({ "inbound.recipient.verify_local: the directory has no users, so every local recipient is "
                    .. "rejected with 550 5.1.1; expected directory.users or directory.file" }, w)
    end)
  end)
end)
