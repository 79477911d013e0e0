-- t/rules/filters_spec.lua
local fake = require "t.helpers.fake"

local IP = "198.51.100.7"
local REV = "7.100.51.198."
local LISTED = { a = { "127.0.0.2" } }

local function verdict(v)
  if v == nil then return nil end
  return { v.action, v.code, v.text }
end

-- rule - the filters rule for inbound (merged into a configuration with example.org local) and a DNS script.
local function rule(inbound, dns, extra)
  local cfg = extra or {}
  cfg.local_domains = { "example.org" }
  cfg.inbound = inbound
  return fake.load_rule("filters", cfg, { dns = dns })
end

local function logged(s, text)
  for _, line in ipairs(s.logs) do
    if line:find(text, 1, true) then return true end
  end
  return false
end

describe("rules.filters", function()
  describe("when nothing applies", function()
    it("does nothing and asks no DNS when no filter is enabled", function()
      local r, mta = rule({ dnsbl = { sites = { "bl.test" } } })
      local s = fake.session { ip = IP }
      assert.is_nil(r.connect(s))
      assert.same({}, mta.fake.queries)
      assert.equal(0, s.hostname_calls)
    end)
    it("skips IPv6 clients entirely", function()
      local r, mta = rule({ blacklist = { enabled = true, hosts = { "[2001:db8::/32]" }, action = "tag" },
                            dnsbl = { enabled = true, sites = { "bl.test" }, action = "tag" } })
      local s = fake.session { ip = "2001:db8::7" }
      assert.is_nil(r.connect(s))
      assert.same({}, s.tags)
      assert.same({}, mta.fake.queries)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("skips internal hosts, which are not subject to relay enforcement", function()
      local r, mta = rule({ dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" } },
                          { [REV .. "bl.test"] = LISTED })
      local s = fake.session { ip = IP, host = "mx2.example.org" }
      r.connect(s)
      assert.same({}, mta.fake.queries)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("skips hosts in relay.exclude and every host with enforce = none", function()
      local bl = { enabled = true, hosts = { "[198.51.100.0/24]" }, action = "tag" }
      local s = fake.session { ip = IP }
      rule({ blacklist = bl, relay = { exclude = { "[198.51.100.7]" } } }).connect(s)
      assert.same({}, s.tags)
      rule({ blacklist = bl, relay = { enforce = "none" } }).connect(s)
      assert.same({}, s.tags)
    end)
    it("applies to internal hosts too with enforce = all", function()
      local s = fake.session { ip = IP, host = "mx2.example.org" }
      rule({ blacklist = { enabled = true, hosts = { "[198.51.100.7]" }, action = "tag" }, relay = { enforce = "all" } })
        .connect(s)
      assert.same({ { "X-DNSBLSite", "PrivateBlacklist" } }, s.tags)
    end)
  end)

  describe("the private whitelist", function()
    local both = function(action)
      return { whitelist = { enabled = true, hosts = { "[198.51.100.7]" }, action = action },
               blacklist = { enabled = true, hosts = { "[198.51.100.0/24]" }, action = "reject" },
               dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" } }
    end
    it("skips the other filters silently with action skip", function()
      local r, mta = rule(both("skip"), { [REV .. "bl.test"] = LISTED })
      local s = fake.session { ip = IP }
      assert.is_nil(r.connect(s))
      assert.same({}, s.logs)
      assert.same({}, s.tags)
      assert.same({}, mta.fake.queries)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("logs the IP and the verified name with action log, and skips the rest", function()
      local r = rule(both("log"))
      local s = fake.session { ip = IP, host = "mx.partner.test" }
      r.connect(s)
      assert.is_true(logged(s, "whitelist listed ip=198.51.100.7 name=mx.partner.test site=PrivateWhitelist"))
      assert.same({}, s.tags)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("tags messages X-DNSWLSite: PrivateWhitelist with action tag", function()
      local s = fake.session { ip = IP }
      rule(both("tag")).connect(s)
      assert.same({ { "X-DNSWLSite", "PrivateWhitelist" } }, s.tags)
      assert.is_true(logged(s, "site=PrivateWhitelist"))
    end)
    it("matches host-name entries against the verified name", function()
      local s = fake.session { ip = IP, host = "mx.partner.test" }
      rule({ whitelist = { enabled = true, hosts = { "partner.test" }, action = "tag" } }).connect(s)
      assert.same({ { "X-DNSWLSite", "PrivateWhitelist" } }, s.tags)
    end)
  end)

  describe("the private blacklist", function()
    local function bl(action, message)
      return { blacklist = { enabled = true, hosts = { "[198.51.100.0/24]", "spam.test" }, action = action,
                             message = message } }
    end
    it("logs with action log and lets the mail through", function()
      local r = rule(bl("log"))
      local s = fake.session { ip = IP }
      assert.is_nil(r.connect(s))
      assert.is_true(logged(s, "blacklist listed ip=198.51.100.7 name=- site=PrivateBlacklist action=log"))
      assert.same({}, s.tags)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("tags messages X-DNSBLSite: PrivateBlacklist with action tag", function()
      local s = fake.session { ip = IP }
      rule(bl("tag")).connect(s)
      assert.same({ { "X-DNSBLSite", "PrivateBlacklist" } }, s.tags)
    end)
    it("rejects MAIL with 550 5.7.1 and the default text with action reject", function()
      local r = rule(bl("reject"))
      local s = fake.session { ip = IP }
      assert.is_nil(r.connect(s))      -- the greeting is not refused; MAIL is
      assert.same({ "reject", 550, "5.7.1 Connection denied for policy reasons" }, verdict(r.mail(s, fake.addr "a@b.test")))
      assert.same({ "reject", 550, "5.7.1 Connection denied for policy reasons" }, verdict(r.mail(s, fake.addr "")))
      assert.is_true(logged(s, "action=reject ip=198.51.100.7 reason=blacklist site=PrivateBlacklist"))
    end)
    it("puts the IP into the one %s of the custom text and leaves the rest literal", function()
      local r = rule(bl("reject", "Host %s is blacklisted (%s, 100%d%%)"))
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.same({ "reject", 550, "5.7.1 Host 198.51.100.7 is blacklisted (%s, 100%d%%)" },
                  verdict(r.mail(s, fake.addr "a@b.test")))
    end)
    it("matches host-name entries against the verified name", function()
      local s = fake.session { ip = "192.0.2.7", host = "relay.spam.test" }
      rule(bl("tag")).connect(s)
      assert.same({ { "X-DNSBLSite", "PrivateBlacklist" } }, s.tags)
    end)
    it("does not match a host-name entry when the name lookup timed out", function()
      local s = fake.session { ip = "192.0.2.7", host_error = "timeout" }
      rule(bl("tag")).connect(s)
      assert.same({}, s.tags)
    end)
    it("decides before the DNS lists, which are then not asked", function()
      local cfg = bl("tag")
      cfg.dnswl = { enabled = true, sites = { "wl.test" } }
      local r, mta = rule(cfg, { [REV .. "wl.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.same({ { "X-DNSBLSite", "PrivateBlacklist" } }, s.tags)
      assert.same({}, mta.fake.queries)
    end)
    it("lifts the reject once the client authenticates with authenticated = allow; tags stay", function()
      local cfg = bl("reject")
      local r = rule(cfg)
      local s = fake.session { ip = IP }
      r.connect(s)
      s.user = "jdoe@example.org"
      assert.is_nil(r.mail(s, fake.addr "jdoe@example.org"))
    end)
    it("keeps the reject for an authenticated client with authenticated = check", function()
      local cfg = bl("reject")
      cfg.relay = { authenticated = "check" }
      local r = rule(cfg)
      local s = fake.session { ip = IP }
      r.connect(s)
      s.user = "jdoe@example.org"
      assert.same({ "reject", 550, "5.7.1 Connection denied for policy reasons" },
                  verdict(r.mail(s, fake.addr "jdoe@example.org")))
    end)
  end)

  describe("the DNS whitelist", function()
    local function wl(action)
      return { dnswl = { enabled = true, sites = { "wl.test" }, action = action },
               dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" } }
    end
    local dns = { [REV .. "wl.test"] = LISTED, [REV .. "bl.test"] = LISTED }
    it("queries the A record of the reversed IP under the site", function()
      local r, mta = rule(wl("skip"), dns)
      r.connect(fake.session { ip = IP })
      assert.same({ "a 7.100.51.198.wl.test" }, mta.fake.queries)
    end)
    it("skips the DNS blacklist silently with action skip", function()
      local r = rule(wl("skip"), dns)
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.same({}, s.logs)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("logs the site with action log, and skips the DNS blacklist", function()
      local r = rule(wl("log"), dns)
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.is_true(logged(s, "dnswl listed ip=198.51.100.7 name=- site=wl.test action=log"))
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("tags messages X-DNSWLSite: <site> with action tag", function()
      local s = fake.session { ip = IP }
      rule(wl("tag"), dns).connect(s)
      assert.same({ { "X-DNSWLSite", "wl.test" } }, s.tags)
    end)
    it("lets the DNS blacklist decide when the client is not listed", function()
      local r = rule(wl("skip"), { [REV .. "bl.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.equal(550, r.mail(s, fake.addr "a@b.test").code)
    end)
  end)

  describe("the DNS blacklist", function()
    local function dnsbl(action, message, sites)
      return { dnsbl = { enabled = true, sites = sites or { "bl1.test", "bl2.test" }, action = action,
                         message = message } }
    end
    it("logs the IP, the verified name and the site with action log", function()
      local r = rule(dnsbl("log"), { [REV .. "bl1.test"] = LISTED })
      local s = fake.session { ip = IP, host = "dyn-7.isp.test" }
      assert.is_nil(r.connect(s))
      assert.is_true(logged(s, "dnsbl listed ip=198.51.100.7 name=dyn-7.isp.test site=bl1.test action=log"))
      assert.same({}, s.tags)
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("tags messages X-DNSBLSite: <site> with action tag", function()
      local s = fake.session { ip = IP }
      rule(dnsbl("tag"), { [REV .. "bl1.test"] = LISTED }).connect(s)
      assert.same({ { "X-DNSBLSite", "bl1.test" } }, s.tags)
    end)
    it("asks the sites in order and the first that lists the client wins", function()
      local r, mta = rule(dnsbl("tag", nil, { "bl1.test", "bl2.test", "bl3.test" }),
                          { [REV .. "bl2.test"] = LISTED, [REV .. "bl3.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.same({ { "X-DNSBLSite", "bl2.test" } }, s.tags)
      assert.same({ "a 7.100.51.198.bl1.test", "a 7.100.51.198.bl2.test" }, mta.fake.queries)
    end)
    it("counts any address answer as listed", function()
      local s = fake.session { ip = IP }
      rule(dnsbl("tag"), { [REV .. "bl1.test"] = { a = { "127.0.0.10", "127.0.0.4" } } }).connect(s)
      assert.same({ { "X-DNSBLSite", "bl1.test" } }, s.tags)
    end)
    it("counts NXDOMAIN and NODATA as not listed, without a log line", function()
      local s = fake.session { ip = IP }
      rule(dnsbl("tag"), { [REV .. "bl1.test"] = { txt = { "listed" } } }).connect(s)
      assert.same({}, s.tags)
      assert.same({}, s.logs)
    end)
    it("counts a timeout as not listed, logs it and asks the next site", function()
      local s = fake.session { ip = IP }
      rule(dnsbl("tag"), { [REV .. "bl1.test"] = "timeout", [REV .. "bl2.test"] = LISTED }).connect(s)
      assert.is_true(logged(s, "site=bl1.test ip=198.51.100.7 lookup=timeout counted as not listed"))
      assert.same({ { "X-DNSBLSite", "bl2.test" } }, s.tags)
    end)
    it("counts SERVFAIL as not listed and logs it", function()
      local r = rule(dnsbl("reject"), { [REV .. "bl1.test"] = { a = "servfail" } })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.is_true(logged(s, "lookup=servfail"))
      assert.is_nil(r.mail(s, fake.addr "a@b.test"))
    end)
    it("rejects MAIL with 550 5.7.1 and the default text with action reject", function()
      local r = rule(dnsbl("reject"), { [REV .. "bl1.test"] = LISTED })
      local s = fake.session { ip = IP }
      assert.is_nil(r.connect(s))
      assert.same({ "reject", 550, "5.7.1 Connection denied for policy reasons" }, verdict(r.mail(s, fake.addr "a@b.test")))
    end)
    it("puts the IP and then the site into the custom text (the help page's example)", function()
      local r = rule(dnsbl("reject", "Host %s was found on the DNS blacklist at %s."), { [REV .. "bl2.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.same({ "reject", 550, "5.7.1 Host 198.51.100.7 was found on the DNS blacklist at bl2.test." },
                  verdict(r.mail(s, fake.addr "a@b.test")))
    end)
    it("leaves a third %s and other % sequences literal, never a format string", function()
      local r = rule(dnsbl("reject", "%s %s %s %d %q %% %"), { [REV .. "bl1.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      assert.equal("5.7.1 198.51.100.7 bl1.test %s %d %q %% %", r.mail(s, fake.addr "a@b.test").text)
    end)
    it("lifts the reject for a client that authenticates with authenticated = allow", function()
      local r = rule(dnsbl("reject"), { [REV .. "bl1.test"] = LISTED })
      local s = fake.session { ip = IP }
      r.connect(s)
      s.user = "jdoe@example.org"
      assert.is_nil(r.mail(s, fake.addr "jdoe@example.org"))
    end)
    it("takes sites written with a trailing dot", function()
      local r, mta = rule(dnsbl("log", nil, { "bl1.test." }))
      r.connect(fake.session { ip = IP })
      assert.same({ "a 7.100.51.198.bl1.test" }, mta.fake.queries)
    end)
    it("looks up the client's name once, whatever the filters ask", function()
      local cfg = dnsbl("tag")
      cfg.whitelist = { enabled = true, hosts = { "partner.test" } }
      cfg.blacklist = { enabled = true, hosts = { "spam.test" } }
      local s = fake.session { ip = IP, host = "mx.isp.test" }
      rule(cfg, { [REV .. "bl1.test"] = LISTED }).connect(s)
      assert.equal(1, s.hostname_calls)
      assert.same({ { "X-DNSBLSite", "bl1.test" } }, s.tags)
    end)
  end)

  describe("loading", function()
    it("refuses a malformed private list entry with its key path", function()
      assert.has_error(function() rule({ blacklist = { hosts = { "192.0.2.7" } } }) end,
        'inbound.blacklist.hosts[1]: got "192.0.2.7", an IP address without brackets; expected [192.0.2.7]')
    end)
  end)

  describe("check_warnings", function()
    it("warns about enabled lists with nothing in them", function()
      local w = rule({ dnsbl = { enabled = true }, whitelist = { enabled = true } }).check_warnings()
      assert.equal(2, #w)
      assert.matches("^inbound%.whitelist%.hosts: empty while inbound%.whitelist%.enabled = true", w[1])
      assert.matches("^inbound%.dnsbl%.sites: empty while inbound%.dnsbl%.enabled = true", w[2])
    end)
    it("warns about suffix entries and PTR-only host names", function()
      local r = rule({ blacklist = { enabled = true, hosts = { "spam.test" } } }, nil, { dns = { verify_ptr = "ptr_only" } })
      local w = r.check_warnings()
      assert.matches('^inbound%.blacklist%.hosts%[1%]: "spam%.test" is a string suffix', w[1])
      assert.matches("^inbound%.blacklist%.hosts: host%-name entries are trusted on the PTR record alone", w[2])
    end)
  end)
end)
