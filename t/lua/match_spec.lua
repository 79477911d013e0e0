-- t/lua/match_spec.lua
local match = require "luamta.match"

-- compiled - a matcher for list in family, under the key path "k".
local function compiled(list, family, groups)
  return match.compile(list, family, "k", groups)
end

-- error_of - the message of the error that compiling raises.
local function error_of(list, family, groups, keypath)
  local ok, msg = pcall(match.compile, list, family, keypath or "inbound.connection.deny", groups)
  assert.is_false(ok)
  return msg
end

local function has_warning(m, pattern)
  for _, w in ipairs(m:warnings()) do
    if w:find(pattern, 1, true) then return true end
  end
  return false
end

describe("luamta.match", function()
  describe("domain suffixes", function()
    local m = compiled({ "xyz.com" }, "A")
    it("matches an address whose text ends with the entry, as Domino does (u@uvwxyz.com)", function()
      assert.is_true(m:match_address("u@uvwxyz.com"))
      assert.is_true(m:match_address("u@abc.xyz.com"))
      assert.is_true(m:match_address("u@xyz.com"))
    end)
    it("does not match an address that ends otherwise", function()
      assert.is_false(m:match_address("u@xyz.com.au"))
      assert.is_false(m:match_address("u@xyz.org"))
    end)
    it("matches a host name that ends with the entry, notxyz.com included", function()
      local h = compiled({ "xyz.com" }, "C")
      assert.is_true(h:match_host("smtp.xyz.com"))
      assert.is_true(h:match_host("notxyz.com"))
      assert.is_false(h:match_host("xyz.community"))
    end)
    it("warns that a suffix matches more than it looks, with the key path", function()
      assert.is_true(has_warning(m, 'k[1]: "xyz.com" is a string suffix'))
      assert.is_true(has_warning(m, "u@uvwxyz.com"))
      assert.is_true(has_warning(compiled({ "xyz.com" }, "B"), "notxyz.com"))
    end)
    it("ignores ASCII case in entries and candidates", function()
      assert.is_true(compiled({ "XYZ.Com" }, "A"):match_address("User@Mail.xyz.COM"))
      assert.is_true(compiled({ "xyz.com" }, "D"):match_host("MAIL.XYZ.COM"))
    end)
    it("drops one trailing dot from the entry and from the candidate's domain", function()
      assert.is_true(compiled({ "xyz.com." }, "A"):match_address("u@xyz.com"))
      assert.is_true(compiled({ "xyz.com" }, "A"):match_address("u@xyz.com."))
      assert.is_true(compiled({ "xyz.com" }, "C"):match_host("mail.xyz.com."))
    end)
    it("returns the entry that matched, with its key path", function()
      local ok, origin = compiled({ "abc.com", "xyz.com" }, "A"):match_address("u@xyz.com")
      assert.is_true(ok)
      assert.equal('k[2] "xyz.com"', origin)
    end)
  end)

  describe("leading dots", function()
    local m = compiled({ ".abc.com" }, "C")
    it("match names under the domain", function()
      assert.is_true(m:match_host("mail.abc.com"))
    end)
    it("never match the domain itself", function()
      assert.is_false(m:match_host("abc.com"))
    end)
    it("get a warning", function()
      assert.is_true(has_warning(m, 'k[1]: ".abc.com" has a leading dot'))
    end)
  end)

  describe("exact domains (@)", function()
    local m = compiled({ "@xyz.com" }, "A")
    it("match an address whose domain is exactly the entry", function()
      assert.is_true(m:match_address("User@xyz.com"))
      assert.is_true(m:match_address("User@XYZ.COM"))
    end)
    it("do not match other domains that end with it (User@uvwxyz.com, User@abc.xyz.com)", function()
      assert.is_false(m:match_address("User@uvwxyz.com"))
      assert.is_false(m:match_address("User@abc.xyz.com"))
    end)
    it("work for senders and recipients (family E) too", function()
      assert.is_true(compiled({ "@xyz.com" }, "E"):match_address("joe@xyz.com"))
    end)
    it("give no warning", function()
      assert.same({}, m:warnings())
    end)
  end)

  describe("exact addresses (family E)", function()
    local m = compiled({ "joe@xyz.com" }, "E")
    it("match the whole address, ignoring case", function()
      assert.is_true(m:match_address("joe@xyz.com"))
      assert.is_true(m:match_address("Joe@XYZ.com"))
    end)
    it("do not match a longer address that ends with it", function()
      assert.is_false(m:match_address("bigjoe@xyz.com"))
      assert.is_false(m:match_address("joe@mail.xyz.com"))
    end)
    it("take an address table as well as a string", function()
      assert.is_true(m:match_address({ address = "joe@xyz.com", localpart = "joe", domain = "xyz.com" }))
    end)
  end)

  describe("Domino domains (%)", function()
    local m = compiled({ "%AcmeEast" }, "A")
    it("match recipients whose domain is the dotless Domino domain, in any case", function()
      assert.is_true(m:match_address("jdoe@AcmeEast"))
      assert.is_true(m:match_address("jdoe@acmeeast"))
    end)
    it("do not match internet domains", function()
      assert.is_false(m:match_address("jdoe@acmeeast.com"))
      assert.is_false(m:match_address("jdoe@sub.AcmeEast"))
      assert.is_false(m:match_address("jdoe@AcmeWest"))
    end)
  end)

  describe("all (*)", function()
    it("matches every address, IP and host name", function()
      local a = compiled({ "*" }, "A")
      assert.is_true(a:match_address("u@anything.test"))
      local h = compiled({ "*" }, "B")
      assert.is_true(h:match_ip("192.0.2.7"))
      assert.is_true(h:match_ip("2001:db8::7"))
      assert.is_true(h:match_host("mail.anything.test"))
      assert.is_true(h:has_star())
      assert.is_true(h:has_ip_entries())
    end)
    it("does not match the null sender", function()
      assert.is_false(compiled({ "*" }, "E"):match_address(""))
      assert.is_false(compiled({ "*" }, "E"):match_address({ address = "", localpart = "", domain = "" }))
    end)
  end)

  describe("the null sender", function()
    it("matches no entry of any kind", function()
      local m = compiled({ "*", "@xyz.com", "xyz.com", "joe@xyz.com", "G" }, "E", { G = { "@abc.com" } })
      assert.is_false(m:match_address(""))
    end)
  end)

  describe("groups", function()
    local groups = {
      AllowMail = { "partner.example", "@vendor.example", "[192.0.2.*]" },
      Outer = { "Inner", "@outer.test" },
      Inner = { "Deepest", "inner.test" },
      Deepest = { "joe@deep.test" },
      Empty = {},
      A1 = { "Shared" }, A2 = { "Shared" }, Both = { "A1", "A2" }, Shared = { "@shared.test" },
    }
    it("match by their members, each by the field's own rules", function()
      local m = compiled({ "AllowMail" }, "E", groups)
      assert.is_true(m:match_address("u@mail.partner.example"))
      assert.is_true(m:match_address("u@vendor.example"))
      assert.is_false(m:match_address("u@sub.vendor.example"))
    end)
    it("may contain groups, to any depth", function()
      local m = compiled({ "Outer" }, "E", groups)
      assert.is_true(m:match_address("u@outer.test"))
      assert.is_true(m:match_address("u@x.inner.test"))
      assert.is_true(m:match_address("joe@deep.test"))
      assert.is_false(m:match_address("ann@deep.test"))
    end)
    it("may be reached twice through different groups without being a cycle", function()
      assert.is_true(compiled({ "Both" }, "E", groups):match_address("u@shared.test"))
    end)
    it("are found whatever the case of the name", function()
      assert.is_true(compiled({ "allowmail" }, "A", groups):match_address("u@vendor.example"))
    end)
    it("give IP members to host lists and ignore address members there, with a warning", function()
      local m = compiled({ "AllowMail" }, "C", groups)
      assert.is_true(m:match_ip("192.0.2.200"))
      assert.is_true(m:match_host("mx.partner.example"))
      assert.is_true(has_warning(m, 'directory.groups.AllowMail[2]: "@vendor.example" cannot match in k'))
    end)
    it("name the group in the origin of a match", function()
      local _, origin = compiled({ "AllowMail" }, "C", groups):match_ip("192.0.2.9")
      assert.equal('k[1] "AllowMail" > "[192.0.2.*]"', origin)
    end)
    it("are an error when they contain themselves", function()
      local msg = error_of({ "Loop1" }, "E", { Loop1 = { "Loop2" }, Loop2 = { "x.test", "Loop1" } }, "inbound.sender.deny")
      assert.equal('directory.groups.Loop2[2]: group "Loop1" contains itself (Loop1 -> Loop2 -> Loop1); '
                   .. "expected groups without cycles (in the group, as used by inbound.sender.deny[1])", msg)
    end)
    it("are an error when a group names itself", function()
      assert.matches('group "Self" contains itself %(Self %-> Self%)', error_of({ "Self" }, "E", { Self = { "Self" } }))
    end)
    it("match nothing when unknown, with a warning that names the entry", function()
      local m = compiled({ "Nobody", "@xyz.com" }, "E", groups)
      assert.is_false(m:match_address("u@nobody.test"))
      assert.is_true(m:match_address("u@xyz.com"))
      assert.is_true(has_warning(m, 'k[1]: unknown group "Nobody" matches nothing'))
      assert.is_false(m:is_empty())
    end)
    it("match nothing when empty, with a warning", function()
      local m = compiled({ "Empty" }, "E", groups)
      assert.is_false(m:match_address("u@x.test"))
      assert.is_true(has_warning(m, 'k[1]: group "Empty" is empty'))
    end)
    it("report a bad member with the group's key path", function()
      local msg = error_of({ "Bad" }, "C", { Bad = { "ok.test", "[300.1.1.1]" } })
      assert.matches('^directory%.groups%.Bad%[2%]: got "%[300%.1%.1%.1%]", an octet over 255', msg)
      assert.matches("used by inbound%.connection%.deny%[1%]", msg)
    end)
  end)

  describe("IP entries", function()
    it("match a single IPv4 address", function()
      local m = compiled({ "[192.0.2.7]" }, "C")
      assert.is_true(m:match_ip("192.0.2.7"))
      assert.is_false(m:match_ip("192.0.2.8"))
    end)
    it("match a per-octet wildcard, in any octet", function()
      local m = compiled({ "[127.*.0.1]" }, "B")
      assert.is_true(m:match_ip("127.5.0.1"))
      assert.is_false(m:match_ip("127.5.1.1"))
      assert.is_true(compiled({ "[192.0.2.*]" }, "C"):match_ip("192.0.2.255"))
    end)
    it("match a per-octet range, ends included", function()
      local m = compiled({ "[192.0.2.1-30]" }, "D")
      assert.is_true(m:match_ip("192.0.2.1"))
      assert.is_true(m:match_ip("192.0.2.30"))
      assert.is_false(m:match_ip("192.0.2.31"))
      assert.is_false(m:match_ip("192.0.2.0"))
    end)
    it("match a CIDR block", function()
      local m = compiled({ "[192.0.2.0/24]" }, "C")
      assert.is_true(m:match_ip("192.0.2.0"))
      assert.is_true(m:match_ip("192.0.2.255"))
      assert.is_false(m:match_ip("192.0.3.0"))
    end)
    it("match a CIDR block that does not end on an octet boundary", function()
      local m = compiled({ "[198.51.96.0/20]" }, "C")
      assert.is_true(m:match_ip("198.51.96.1"))
      assert.is_true(m:match_ip("198.51.111.254"))
      assert.is_false(m:match_ip("198.51.112.0"))
      assert.is_true(compiled({ "[0.0.0.0/0]" }, "C"):match_ip("203.0.113.9"))
    end)
    it("warn about a CIDR block with host bits set, and match its network", function()
      local m = compiled({ "[192.0.2.7/24]" }, "C")
      assert.is_true(m:match_ip("192.0.2.200"))
      assert.is_true(has_warning(m, "host bits set"))
    end)
    it("match a single IPv6 address in any spelling", function()
      local m = compiled({ "[2001:db8::1]" }, "C")
      assert.is_true(m:match_ip("2001:db8::1"))
      assert.is_true(m:match_ip("2001:0DB8:0:0:0:0:0:0001"))
      assert.is_false(m:match_ip("2001:db8::2"))
    end)
    it("match an IPv6 prefix", function()
      local m = compiled({ "[2001:db8::/32]" }, "C")
      assert.is_true(m:match_ip("2001:db8:ffff::1"))
      assert.is_false(m:match_ip("2001:db9::1"))
      local m64 = compiled({ "[2001:db8:1:2::/64]" }, "C")
      assert.is_true(m64:match_ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"))
      assert.is_false(m64:match_ip("2001:db8:1:3::1"))
      assert.is_true(compiled({ "[2001:db8::/33]" }, "C"):match_ip("2001:db8:7fff::1"))
      assert.is_false(compiled({ "[2001:db8::/33]" }, "C"):match_ip("2001:db8:8000::1"))
    end)
    it("keep IPv4 entries for IPv4 clients and IPv6 entries for IPv6 clients", function()
      assert.is_false(compiled({ "[192.0.2.7]" }, "C"):match_ip("2001:db8::7"))
      assert.is_false(compiled({ "[2001:db8::/32]" }, "C"):match_ip("192.0.2.7"))
    end)
    it("treat an IPv4-mapped IPv6 client as IPv4", function()
      assert.is_true(compiled({ "[192.0.2.*]" }, "C"):match_ip("::ffff:192.0.2.7"))
    end)
    it("match an address literal in address lists", function()
      local m = compiled({ "[192.0.2.0/24]", "[2001:db8::/32]" }, "A")
      assert.is_true(m:match_address("u@[192.0.2.9]"))
      assert.is_true(m:match_address("u@[IPv6:2001:db8::9]"))
      assert.is_false(m:match_address("u@[198.51.100.9]"))
    end)
    it("are accepted in every list, not only the private ones", function()
      for _, family in ipairs({ "A", "B", "C", "D", "E" }) do
        assert.has_no.errors(function() compiled({ "[192.0.2.1-30]", "[192.0.2.0/24]" }, family) end)
      end
    end)
  end)

  describe("the split between IP and host-name entries", function()
    local m = compiled({ "[192.0.2.7]", "mail.xyz.com" }, "C")
    it("lets match_ip see only IP entries", function()
      assert.is_false(m:match_ip("198.51.100.1"))
      assert.is_true(m:match_ip("192.0.2.7"))
    end)
    it("lets match_host see only host-name entries", function()
      assert.is_true(m:match_host("mail.xyz.com"))
      assert.is_false(m:match_host("192.0.2.7"))
      assert.is_false(m:match_host(nil))
    end)
    it("says which kinds a list has", function()
      assert.is_true(m:has_ip_entries())
      assert.is_true(m:has_host_entries())
      assert.is_false(compiled({ "[192.0.2.7]" }, "C"):has_host_entries())
      assert.is_false(compiled({ "mail.xyz.com" }, "C"):has_ip_entries())
      assert.is_false(compiled({ "*" }, "C"):has_host_entries())
    end)
    it("says whether the list is empty", function()
      assert.is_true(compiled({}, "C"):is_empty())
      assert.is_true(compiled(nil, "C"):is_empty())
      assert.is_false(m:is_empty())
      assert.is_false(compiled({}, "C"):match_ip("192.0.2.7"))
    end)
  end)

  describe("list values", function()
    it("accept one string with entries separated by commas, semicolons or newlines", function()
      local m = compiled("a.test, @b.test;\nc@d.test", "E")
      assert.is_true(m:match_address("u@a.test"))
      assert.is_true(m:match_address("u@b.test"))
      assert.is_true(m:match_address("c@d.test"))
    end)
    it("refuse a family that does not exist", function()
      assert.has_error(function() match.compile({}, "Z", "k") end)
    end)
  end)

  describe("invalid entries", function()
    local cases = {
      { "[123.123.12-*.123]", "C", 'got "[123.123.12-*.123]", a wildcard inside a range ("12-*")' },
      { "[300.1.1.1]", "D", 'got "[300.1.1.1]", an octet over 255 ("300")' },
      { "[192.0.2.1-300]", "D", 'an octet over 255 ("1-300")' },
      { "[192.0.2.30-1]", "D", 'a range from high to low ("30-1")' },
      { "[192.0.2]", "C", "not four octets" },
      { "[192.0.2.7.1]", "C", "not four octets" },
      { "[192.0..7]", "C", "an empty octet" },
      { "[192.0.2.x]", "C", 'a malformed octet ("x")' },
      { "[192.0.2.0/33]", "C", "a prefix length outside 0-32" },
      { "[192.0.2.*/24]", "C", "a wildcard or range together with a prefix length" },
      { "[2001:db8::/129]", "C", "a prefix length outside 0-128" },
      { "[2001:db8:::1]", "C", "a malformed IPv6 address" },
      { "[192.0.2.7", "C", 'a "[" without its "]"' },
      { "192.0.2.7]", "C", 'a "]" without its "["' },
      { "[]", "C", "empty brackets" },
      { "[[192.0.2.7]]", "C", "a malformed bracket" },
      { "127.0.0.1", "B", 'got "127.0.0.1", an IP address without brackets; expected [127.0.0.1]' },
      { "192.0.2.*", "C", "an IP address without brackets; expected [192.0.2.*]" },
      { "192.0.2.0/24", "D", "an IP address without brackets; expected [192.0.2.0/24]" },
      { "2001:db8::1", "C", "an IP address without brackets; expected [2001:db8::1]" },
      { "127.0.0.1", "A", "an IP address without brackets" },
      { "*.xyz.com", "C", 'a "*" outside brackets' },
      { "mail.xyz.com:25", "C", "a colon" },
      { "bad host.test", "C", "characters that no host name, address or group has" },
      { "xyz..com", "A", "a malformed domain or host name" },
      { "@", "E", "a malformed domain after the @" },
      { "@xyz..com", "E", "a malformed domain after the @" },
      { "a@b@c.test", "E", 'more than one "@"' },
      { "%", "A", "a malformed Domino domain" },
      { "%Acme.East", "A", "a malformed Domino domain" },
      { "@xyz.com", "C", "an exact domain (@) only matches addresses, not host names" },
      { "joe@xyz.com", "B", "an address only matches senders and recipients, not hosts" },
      { "joe@xyz.com", "A", "a full address in a list of destination domains" },
      { "%AcmeEast", "E", "a Domino domain only means something in relay destinations" },
      { "%AcmeEast", "D", "a Domino domain only means something in relay destinations" },
    }
    for _, c in ipairs(cases) do
      local entry, family, want = c[1], c[2], c[3]
      it("refuses " .. entry .. " in family " .. family .. " with its key path and index", function()
        local msg = error_of({ "ok.test", entry }, family, nil, "inbound.relay.exclude")
        assert.equal("inbound.relay.exclude[2]: ", msg:sub(1, #"inbound.relay.exclude[2]: "))
        assert.truthy(msg:find(want, 1, true), msg)
        assert.truthy(msg:find("; expected ", 1, true), msg)
      end)
    end
    it("accepts the valid examples of the Domino help page ([127.0.0.1], [127.*.0.1])", function()
      assert.has_no.errors(function() compiled({ "[127.0.0.1]", "[127.*.0.1]" }, "B") end)
    end)
    it("refuses a list that is not a list of strings", function()
      assert.has_error(function() match.compile({ 7 }, "C", "k") end, "k[1]: got a number; expected a string")
    end)
  end)

  describe("match.parse_ip", function()
    it("tells IPv4 from IPv6 and refuses other text", function()
      assert.same({ "ipv4", { 192, 0, 2, 7 } }, { match.parse_ip("192.0.2.7") })
      assert.equal("ipv6", (match.parse_ip("2001:db8::7")))
      assert.equal("ipv4", (match.parse_ip("::ffff:192.0.2.7")))
      assert.is_nil(match.parse_ip("mail.xyz.com"))
      assert.is_nil(match.parse_ip("256.1.1.1"))
    end)
  end)
end)
