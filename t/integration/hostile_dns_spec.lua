-- t/integration/hostile_dns_spec.lua - DNS answers and names chosen by an attacker (issue 8): a PTR name too long
-- to look up, a sender domain c-ares refuses to send (its callback runs inside the query call), and PTR names
-- that are not host names. Each gets a normal reply, and the worker survives to serve the next session.
local dns = require "t.helpers.dns"
local smtp = require "t.helpers.smtp"

-- 254 octets as text (labels of 63, 63, 63, 57 and 4): SMTP takes it as a domain (RFC 5321 allows 255), dnsmasq
-- serves it as a PTR target, but no DNS query can carry it (256 octets on the wire), so c-ares refuses it inside
-- ares_query() and calls back at once
local LONG = ("a"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." .. ("d"):rep(57) .. ".test"
assert(#LONG == 254)

-- The hosts of this file:
--   127.0.0.3   mail.partner.test (PTR and A agree)
--   127.0.0.40  its PTR is LONG
--   127.0.0.43, 44  PTR names that are not host names. dnsmasq serves only these two of the hostile kinds: it
--                   refuses to serve names with spaces or angle brackets and turns UTF-8 into punycode, so those
--                   (and CR/LF, NUL) are covered by t/unit/test_dns.c
local ODD = { ["127.0.0.43"] = "x_y.test", ["127.0.0.44"] = "-bad.test" }
local RECORDS = {
  hosts = { ["mail.partner.test"] = "127.0.0.3" },
  ptr = { ["127.0.0.40"] = LONG },
}
for ip, name in pairs(ODD) do RECORDS.ptr[ip] = name end

describe("a client whose PTR is a 254-octet name, with a host-name entry in the deny list", function()
  local env = dns.world(RECORDS, { config = {
    inbound = { connection = { deny = "bad.example.org" } },
    server = { workers = 1 },
  } })

  it("gets the normal greeting, and the worker serves the next session (no abort)", function()
    for _ = 1, 2 do
      local c = env.connect("127.0.0.40")
      local code, lines = c:read_reply(5)
      assert.equal(220, code, (lines and lines.text or "") .. env.srv:log())
      assert.equal(250, (c:cmd("EHLO client.test")))
      assert.equal(221, (c:cmd("QUIT")))
      c:close()
    end
    local c = env.session("127.0.0.3")
    assert.equal(221, (c:cmd("QUIT")))
    local log = env.srv:log()
    assert.is_nil(log:find("double free", 1, true), log)
    assert.is_nil(log:find("non-suspended", 1, true), log)
  end)
end)

describe("a sender domain too long for a DNS query, with verify_domain", function()
  local env = dns.world(RECORDS, { config = {
    inbound = { sender = { verify_domain = true } },
    server = { workers = 1, max_connections_per_ip = 3 },
  } })

  it("gets a 4xx reply to MAIL, QUIT is answered, and a fourth session from the same IP is served", function()
    for i = 1, 4 do
      local c = env.session("127.0.0.3")
      local code, lines = c:cmd("MAIL FROM:<x@" .. LONG .. ">", 5)
      assert.equal(451, code, tostring(lines and lines.text) .. env.srv:log())
      local qcode = c:cmd("QUIT", 5)
      assert.equal(221, qcode, "session " .. i)
      c:close()
    end
    local c = env.session("127.0.0.3")
    assert.equal(250, (c:cmd("MAIL FROM:<x@mail.partner.test>", 5)))
    c:close()
    local log = env.srv:log()
    assert.is_nil(log:find("non-suspended", 1, true), log)
  end)
end)

describe("PTR names that are not host names (dns.verify_ptr = ptr_only)", function()
  local env = dns.world(RECORDS, {
    config = { dns = { verify_ptr = "ptr_only" }, server = { workers = 1, rules = { "showname" } }, inbound = { relay = { enforce = "none" } } },
    files = { ["rules/showname.lua"] = [[
local mta = require "luamta"
return { helo = function(s)
  local name, err = s:hostname()
  return mta.reject(550, "5.0.0 hostname=" .. tostring(name) .. " err=" .. tostring(err))
end }
]] },
  })

  it("gives a client with a real host name that name", function()
    local c = env.connect("127.0.0.3")
    assert.equal(220, (c:read_reply(5)))
    local _, lines = c:cmd("EHLO client.test", 5)
    assert.equal("550 5.0.0 hostname=mail.partner.test err=nil", lines[1])
  end)

  for ip, name in pairs(ODD) do
    it("treats the PTR name " .. name .. " as no name (" .. ip .. ")", function()
      local c = env.connect(ip)
      assert.equal(220, (c:read_reply(5)))
      local _, lines = c:cmd("EHLO client.test", 5)
      assert.equal("550 5.0.0 hostname=nil err=none", lines[1])
    end)
  end
end)
