-- t/lua/domino_spec.lua
local fake = require "t.helpers.fake"
local match = require "luamta.match"
local domino = require "luamta.domino"

-- build - a domino object over a fake luamta built from cfg.
local function build(cfg)
  return domino.new(fake.mta(cfg))
end

-- relays - would the lists of the seed's examples relay rcpt for client ({ ip, name })? Uses the same pieces as
-- rules/relay.lua: the matchers and the decision.
local function relays(lists, client, rcpt, precedence)
  local groups = lists.groups
  local allow_to = match.compile(lists.allow_to or {}, "A", "inbound.relay.allow_to", groups)
  local deny_to = match.compile(lists.deny_to or {}, "A", "inbound.relay.deny_to", groups)
  local allow_from = match.compile(lists.allow_from or {}, "B", "inbound.relay.allow_from", groups)
  local deny_from = match.compile(lists.deny_from or {}, "B", "inbound.relay.deny_from", groups)
  local function from(m)
    return m:match_ip(client.ip) or (client.name ~= nil and m:match_host(client.name))
  end
  return (domino.relay_decision(precedence or "allow", from(allow_from), from(deny_from),
                                allow_to:match_address(rcpt), deny_to:match_address(rcpt),
                                not allow_from:is_empty(), not allow_to:is_empty()))
end

local STRANGER = { ip = "203.0.113.9", name = "mail.stranger.test" }

describe("luamta.domino", function()
  describe("relay_decision", function()
    -- sA sD dA dD, then the verdict for: precedence allow with only matched allow lists non-empty, allow with
    -- both allow lists non-empty, deny with only matched lists non-empty, deny with both non-empty.
    local VECTORS = {
      { "0000", "ADAD" }, { "0001", "DDDD" }, { "0010", "AAAD" }, { "0011", "AADD" },
      { "0100", "DDDD" }, { "0101", "DDDD" }, { "0110", "AADD" }, { "0111", "AADD" },
      { "1000", "AAAD" }, { "1001", "AADD" }, { "1010", "AAAA" }, { "1011", "AADD" },
      { "1100", "AADD" }, { "1101", "AADD" }, { "1110", "AADD" }, { "1111", "AADD" },
    }
    local MODES = {
      { "allow", "only the matched allow lists non-empty", false },
      { "allow", "both allow lists non-empty", true },
      { "deny", "only the matched allow lists non-empty", false },
      { "deny", "both allow lists non-empty", true },
    }
    for _, v in ipairs(VECTORS) do
      local bits = v[1]
      local sA, sD, dA, dD = bits:sub(1, 1) == "1", bits:sub(2, 2) == "1", bits:sub(3, 3) == "1", bits:sub(4, 4) == "1"
      for i, mode in ipairs(MODES) do
        local want = v[2]:sub(i, i) == "A"
        local name = ("%s for sA=%s sD=%s dA=%s dD=%s, precedence %s, %s"):format(want and "allows" or "denies",
          bits:sub(1, 1), bits:sub(2, 2), bits:sub(3, 3), bits:sub(4, 4), mode[1], mode[2])
        it(name, function()
          local has_from, has_to = sA or mode[3], dA or mode[3]
          assert.equal(want, (domino.relay_decision(mode[1], sA, sD, dA, dD, has_from, has_to)))
        end)
      end
    end
    it("allows everything when no list says anything, in both precedences", function()
      assert.is_true((domino.relay_decision("allow", false, false, false, false, false, false)))
      assert.is_true((domino.relay_decision("deny", false, false, false, false, false, false)))
    end)
    it("says why it decided", function()
      assert.same({ false, "deny_to" }, { domino.relay_decision("allow", false, false, false, true, false, false) })
      assert.same({ true, "allow_to" }, { domino.relay_decision("allow", false, false, true, true, false, true) })
      assert.same({ false, "not in allow_from" },
                  { domino.relay_decision("deny", false, false, true, false, true, true) })
    end)
    it("refuses an unknown precedence", function()
      assert.has_error(function() domino.relay_decision("maybe", false, false, false, false, false, false) end)
    end)
  end)

  describe("the examples of the Domino help page", function()
    it("relays only to abc.com and xyz.com when allow_to lists them", function()
      local lists = { allow_to = { "abc.com", "xyz.com" } }
      for _, p in ipairs({ "allow", "deny" }) do
        assert.is_true(relays(lists, STRANGER, "u@abc.com", p))
        assert.is_true(relays(lists, STRANGER, "u@mail.xyz.com", p))
        assert.is_false(relays(lists, STRANGER, "u@other.test", p))
      end
    end)
    it("relays to User@xyz.com but not User@uvwxyz.com or User@abc.xyz.com for allow_to @xyz.com", function()
      local lists = { allow_to = { "@xyz.com" } }
      assert.is_true(relays(lists, STRANGER, "User@xyz.com"))
      assert.is_false(relays(lists, STRANGER, "User@uvwxyz.com"))
      assert.is_false(relays(lists, STRANGER, "User@abc.xyz.com"))
    end)
    it("relays to the Domino domain AcmeEast for allow_to %AcmeEast", function()
      local lists = { allow_to = { "%AcmeEast" } }
      assert.is_true(relays(lists, STRANGER, "jdoe@AcmeEast"))
      assert.is_false(relays(lists, STRANGER, "jdoe@other.test"))
    end)
    it("relays to no external domain for deny_to *", function()
      assert.is_false(relays({ deny_to = { "*" } }, STRANGER, "u@other.test"))
      assert.is_false(relays({ deny_to = { "*" } }, STRANGER, "u@AcmeEast"))
    end)
    it("relays to every domain but abc.com for deny_to abc.com", function()
      local lists = { deny_to = { "abc.com" } }
      assert.is_false(relays(lists, STRANGER, "u@abc.com"))
      assert.is_true(relays(lists, STRANGER, "u@other.test"))
    end)
    it("rejects user@xyz.com and relays user@server.xyz.com for deny_to @xyz.com", function()
      local lists = { deny_to = { "@xyz.com" } }
      assert.is_false(relays(lists, STRANGER, "user@xyz.com"))
      assert.is_true(relays(lists, STRANGER, "user@server.xyz.com"))
    end)
    it("relays only for hosts ending in lotus.com or ibm.com for allow_from lotus.com, ibm.com", function()
      local lists = { allow_from = { "lotus.com", "ibm.com" } }
      for _, p in ipairs({ "allow", "deny" }) do
        assert.is_true(relays(lists, { ip = "192.0.2.1", name = "smtp.lotus.com" }, "u@other.test", p))
        assert.is_true(relays(lists, { ip = "192.0.2.2", name = "mx.ibm.com" }, "u@other.test", p))
        assert.is_false(relays(lists, STRANGER, "u@other.test", p))
        assert.is_false(relays(lists, { ip = "192.0.2.3" }, "u@other.test", p))   -- no verified name
      end
    end)
    it("relays for every host but those ending in lotus.com for deny_from lotus.com", function()
      local lists = { deny_from = { "lotus.com" } }
      assert.is_false(relays(lists, { ip = "192.0.2.1", name = "smtp.lotus.com" }, "u@other.test"))
      assert.is_true(relays(lists, STRANGER, "u@other.test"))
    end)
    it("relays for no host subject to enforcement for deny_from *", function()
      assert.is_false(relays({ deny_from = { "*" } }, STRANGER, "u@other.test"))
    end)
    it("takes a group name in the relay fields", function()
      local lists = { allow_to = { "AllowMail" }, deny_to = { "*" }, groups = { AllowMail = { "@partner.test" } } }
      assert.is_true(relays(lists, STRANGER, "u@partner.test"))
      assert.is_false(relays(lists, STRANGER, "u@other.test"))
    end)
    it("lets allow win a conflict in Domino 6 (precedence allow) and deny win in Domino 5 (precedence deny)", function()
      local lists = { allow_to = { "xyz.com" }, deny_to = { "*" } }
      assert.is_true(relays(lists, STRANGER, "u@xyz.com", "allow"))
      assert.is_false(relays(lists, STRANGER, "u@xyz.com", "deny"))
      local hosts = { allow_from = { "[192.0.2.*]" }, deny_from = { "[192.0.2.7]" } }
      assert.is_true(relays(hosts, { ip = "192.0.2.7" }, "u@other.test", "allow"))
      assert.is_false(relays(hosts, { ip = "192.0.2.7" }, "u@other.test", "deny"))
    end)
  end)

  describe("relay enforcement", function()
    local cfg = { local_domains = { "example.org" } }
    it("applies to an external host by default", function()
      local d = build(cfg)
      assert.is_true((d:is_enforced(fake.session { ip = "203.0.113.9", host = "mail.stranger.test" })))
    end)
    it("applies to a host with no verified name", function()
      assert.is_true((build(cfg):is_enforced(fake.session { ip = "203.0.113.9" })))
    end)
    it("applies to a host whose name lookup timed out, and logs it", function()
      local s = fake.session { ip = "203.0.113.9", host_error = "timeout" }
      assert.is_true((build(cfg):is_enforced(s)))
      assert.matches("timed out", s.logs[1])
    end)
    it("does not apply to an internal host with enforce = external", function()
      local d = build(cfg)
      assert.same({ false, "internal host" }, { d:is_enforced(fake.session { host = "mx1.example.org" }) })
      assert.is_false((d:is_enforced(fake.session { host = "example.org" })))
    end)
    it("applies to internal hosts too with enforce = all", function()
      local d = build { local_domains = { "example.org" }, inbound = { relay = { enforce = "all" } } }
      assert.is_true((d:is_enforced(fake.session { host = "mx1.example.org" })))
    end)
    it("never applies with enforce = none", function()
      local d = build { local_domains = { "example.org" }, inbound = { relay = { enforce = "none" } } }
      local s = fake.session { ip = "203.0.113.9" }
      assert.is_false((d:is_enforced(s)))
      assert.equal(0, s.hostname_calls)
    end)
    it("does not apply to a host in relay.exclude, by IP without a name lookup", function()
      local d = build { local_domains = { "example.org" }, inbound = { relay = { exclude = { "[203.0.113.0/24]" } } } }
      local s = fake.session { ip = "203.0.113.9" }
      assert.is_false((d:is_enforced(s)))
      assert.equal(0, s.hostname_calls)
    end)
    it("does not apply to a host in relay.exclude by verified name", function()
      local d = build { local_domains = { "example.org" }, inbound = { relay = { exclude = { "partner.test" } } } }
      assert.is_false((d:is_enforced(fake.session { host = "mx.partner.test" })))
      assert.is_true((d:is_enforced(fake.session { host = "mx.stranger.test" })))
    end)
    it("does not apply once the client authenticated, with authenticated = allow", function()
      local d = build(cfg)
      local s = fake.session { ip = "203.0.113.9" }
      assert.is_true((d:is_enforced(s)))
      s.user = "jdoe@example.org"
      assert.same({ false, "authenticated" }, { d:is_enforced(s) })
    end)
    it("still applies to an authenticated client with authenticated = check", function()
      local d = build { local_domains = { "example.org" }, inbound = { relay = { authenticated = "check" } } }
      assert.is_true((d:is_enforced(fake.session { ip = "203.0.113.9", user = "jdoe@example.org" })))
    end)
    it("looks the host name up once per session", function()
      local d = build(cfg)
      local s = fake.session { ip = "203.0.113.9", host = "mail.stranger.test" }
      d:is_enforced(s)
      d:is_enforced(s)
      assert.is_true(d:is_internal(s) == false)
      assert.equal(1, s.hostname_calls)
    end)
  end)

  describe("internal hosts", function()
    it("are those whose verified name is a local domain or under one", function()
      local d = build { local_domains = { "example.org", "*.example.net" } }
      assert.is_true(d:is_internal(fake.session { host = "example.org" }))
      assert.is_true(d:is_internal(fake.session { host = "a.b.example.org" }))
      assert.is_true(d:is_internal(fake.session { host = "mx.sub.example.net" }))
      assert.is_false(d:is_internal(fake.session { host = "notexample.org" }))
      assert.is_false(d:is_internal(fake.session {}))
    end)
    it("follow the hostname when local_domains is empty (mailhub.acme.com makes mailhost3.acme.com local)", function()
      local d = build { server = { hostname = "mailhub.acme.com" } }
      assert.is_true(d:is_local("mailhost3.acme.com"))
      assert.is_true(d:is_internal(fake.session { host = "mailhost3.acme.com" }))
      assert.is_false(d:is_internal(fake.session { host = "mail.acme.org" }))
    end)
  end)

  describe("match_client", function()
    local d = build {}
    it("matches the IP first and does not look the name up then", function()
      local s = fake.session { ip = "192.0.2.7", host = "mail.xyz.com" }
      assert.is_true((d:match_client(match.compile({ "[192.0.2.7]", "xyz.com" }, "D", "k"), s)))
      assert.equal(0, s.hostname_calls)
    end)
    it("does not look the name up for a list without host-name entries", function()
      local s = fake.session { ip = "192.0.2.8", host = "mail.xyz.com" }
      assert.is_false(d:match_client(match.compile({ "[192.0.2.7]" }, "D", "k"), s))
      assert.equal(0, s.hostname_calls)
    end)
    it("matches the verified name when no IP entry matched", function()
      local s = fake.session { ip = "192.0.2.8", host = "mail.xyz.com" }
      assert.is_true((d:match_client(match.compile({ "[192.0.2.7]", "xyz.com" }, "D", "k"), s)))
    end)
    it("uses the real forward-confirmed name (PTR and A) and refuses a PTR that does not point back", function()
      local mta = fake.mta({}, { dns = {
        ["192.0.2.7"] = { ptr = { "mail.xyz.com" } },
        ["mail.xyz.com"] = { a = { "192.0.2.99" } },
      } })
      local m = match.compile({ "xyz.com" }, "D", "k")
      local dd = domino.new(mta)
      assert.is_false(dd:match_client(m, fake.session { ip = "192.0.2.7", mta = mta }))
      mta.fake.dns["mail.xyz.com"].a = { "192.0.2.7" }
      assert.is_true((dd:match_client(m, fake.session { ip = "192.0.2.7", mta = mta })))
    end)
  end)

  describe("with dns.verify_ptr = ptr_only", function()
    it("trusts a PTR name that does not point back, as Domino does", function()
      local mta = fake.mta({ dns = { verify_ptr = "ptr_only" } }, { dns = {
        ["192.0.2.7"] = { ptr = { "mail.xyz.com" } },
        ["mail.xyz.com"] = { a = { "192.0.2.99" } },
      } })
      local m = match.compile({ "xyz.com" }, "D", "k")
      assert.is_true((domino.new(mta):match_client(m, fake.session { ip = "192.0.2.7", mta = mta })))
    end)
  end)

  describe("fill", function()
    it("puts the values into the %s, first to last", function()
      assert.equal("Host 127.0.0.2 is listed on bl.test",
                   domino.fill("Host %s is listed on %s", { "127.0.0.2", "bl.test" }))
    end)
    it("leaves a further %s and other % sequences as they are", function()
      assert.equal("a 192.0.2.7 b bl.test c %s %d 100%% %", domino.fill("a %s b %s c %s %d 100%% %", { "192.0.2.7", "bl.test" }))
    end)
    it("does not look for %s inside a value it put in", function()
      assert.equal("x %s y z", domino.fill("x %s y %s", { "%s", "z" }))
    end)
    it("leaves a text without %s alone", function()
      assert.equal("Go away", domino.fill("Go away", { "192.0.2.7" }))
    end)
  end)

  describe("new", function()
    it("refuses a bad relay.exclude entry with its key path", function()
      assert.has_error(function() build { inbound = { relay = { exclude = { "[123.123.12-*.123]" } } } } end,
        'inbound.relay.exclude[1]: got "[123.123.12-*.123]", a wildcard inside a range ("12-*"); expected an IP '
        .. "entry such as [192.0.2.7], [192.0.2.*], [192.0.2.1-30], [192.0.2.0/24], [2001:db8::1] or [2001:db8::/32]")
    end)
  end)
end)
