-- t/integration/domino_relay_spec.lua - Domino's inbound relay controls (SPEC 3.1 inbound.relay.*, section 5
-- point 3) in a running server with real DNS: allow_to/deny_to, allow_from/deny_from with IP and forward-confirmed
-- host-name entries, precedence "allow" (Domino 6) and "deny" (Domino 5), enforce "external" and "all", exclude.
-- Clients bind 127.0.0.x to be different hosts; dnsmasq gives them names.
local dns = require "t.helpers.dns"

local REJECTED = "554 5.7.1 Relay rejected for policy reasons."

-- The hosts of this file:
--   127.0.0.2   a stranger, no PTR
--   127.0.0.3   gw.trusted.test (PTR and A agree)
--   127.0.0.4   PTR says gw.trusted.test, whose A record is 127.0.0.3 only: no verified name
--   127.0.0.6   listed by IP in allow_from
--   127.0.0.7   listed by IP in exclude
--   127.0.0.8   listed by IP in deny_from
--   127.0.0.10  host.example.test (PTR and A agree): an internal host, example.test is the local domain
--   127.0.0.11  PTR says fake.example.test, which has no A record: external
--   ::1         v6host.example.test (PTR and AAAA agree): an internal IPv6 host
local RECORDS = {
  hosts = { ["gw.trusted.test"] = "127.0.0.3", ["host.example.test"] = "127.0.0.10", ["v6host.example.test"] = "::1" },
  ptr = { ["127.0.0.4"] = "gw.trusted.test", ["127.0.0.11"] = "fake.example.test" },
}

-- try(env, ip, rcpt) -> code, reply line of RCPT rcpt in a new session from ip (127.0.0.x or ::1)
local function try(env, ip, rcpt)
  local c = env.session(ip)
  assert.equal(250, (c:cmd("MAIL FROM:<sender@example.org>")))
  local code, lines = c:cmd("RCPT TO:<" .. rcpt .. ">")
  c:cmd("QUIT")
  c:close()
  return code, lines and lines[1]
end

local function assert_relayed(env, ip, rcpt)
  local code, line = try(env, ip, rcpt)
  assert.equal(250, code, ip .. " -> " .. rcpt .. ": " .. tostring(line))
end

local function assert_refused(env, ip, rcpt)
  local code, line = try(env, ip, rcpt)
  assert.equal(554, code, ip .. " -> " .. rcpt .. ": " .. tostring(line))
  assert.equal(REJECTED, line)
end

describe("inbound.relay with allow_to, allow_from and exclude (precedence allow, enforce external)", function()
  local env = dns.world(RECORDS, { ipv6 = true, config = {
    directory = { groups = { ExcludedHosts = { "[127.0.0.7]" } } },
    inbound = { relay = {
      allow_to = { "@partner.test", "%AcmeEast" },
      allow_from = { "[127.0.0.6]", "gw.trusted.test" },
      exclude = { "ExcludedHosts" },
    } },
  } })

  it("refuses a stranger relaying to a non-local domain with 554 5.7.1 and logs the rule's verdict", function()
    local mark = env.srv:log_mark()
    assert_refused(env, "127.0.0.2", "someone@elsewhere.test")
    local line = env.srv:wait_log('stage=rcpt rule=relay verdict=reject reply="' .. REJECTED .. '"', 2, mark, true)
    assert.truthy(line, env.srv:log():sub(mark + 1))
    assert.truthy(env.srv:wait_log("rule=relay action=reject ip=127.0.0.2 rcpt=<someone@elsewhere.test> reason=deny_to",
      2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("accepts and delivers a stranger's message to a local recipient, next to a refused relay recipient", function()
    local smtp = require "t.helpers.smtp"
    local c = env.session("127.0.0.2")
    assert.equal(250, (c:cmd("MAIL FROM:<sender@example.org>")))
    local code, lines = c:cmd("RCPT TO:<someone@elsewhere.test>")
    assert.equal(554, code)
    assert.equal(REJECTED, lines[1])
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
    assert.equal(354, (c:cmd("DATA")))
    c:send(smtp.message({ "Subject: relay spec" }, "hello\r\n") .. ".\r\n")
    assert.equal(250, (c:read_reply()))
    local files = env.srv:wait_maildir("jdoe", "example.test", 1)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("Subject: relay spec", 1, true))
  end)

  it("lets a stranger relay to an allow_to domain (@partner.test), but not to a name under it", function()
    assert_relayed(env, "127.0.0.2", "someone@partner.test")
    assert_refused(env, "127.0.0.2", "someone@sub.partner.test")
  end)

  it("lets a client whose IP is in allow_from ([127.0.0.6]) relay anywhere", function()
    assert_relayed(env, "127.0.0.6", "someone@elsewhere.test")
  end)

  it("lets a client whose forward-confirmed name (PTR, then A) is in allow_from relay anywhere", function()
    assert_relayed(env, "127.0.0.3", "someone@elsewhere.test")
  end)

  it("refuses a client whose PTR claims an allow_from name that does not point back to it", function()
    assert_refused(env, "127.0.0.4", "someone@elsewhere.test")
  end)

  it("lets an internal host (verified name host.example.test, under a local domain) relay", function()
    assert_relayed(env, "127.0.0.10", "someone@elsewhere.test")
  end)

  it("lets an internal IPv6 host (::1, verified by PTR and AAAA as v6host.example.test) relay", function()
    assert_relayed(env, "::1", "someone@elsewhere.test")
  end)

  it("treats a host whose PTR claims a local name without an A record as external", function()
    assert_refused(env, "127.0.0.11", "someone@elsewhere.test")
  end)

  it("never checks a client in exclude (through the group ExcludedHosts = { \"[127.0.0.7]\" })", function()
    assert_relayed(env, "127.0.0.7", "someone@elsewhere.test")
  end)

  it("matches allow_to without regard to case or one trailing dot", function()
    assert_relayed(env, "127.0.0.2", "someone@PARTNER.Test.")
    assert_refused(env, "127.0.0.2", "someone@elsewhere.test.")
  end)

  it("lets a stranger relay to the Domino domain of a %AcmeEast entry (a dotless domain)", function()
    assert_relayed(env, "127.0.0.2", "someone@AcmeEast")
    assert_refused(env, "127.0.0.2", "someone@AcmeWest")
  end)

  it("ignores a source route: <@mx.example.test:someone@elsewhere.test> is a relay, refused", function()
    assert_refused(env, "127.0.0.2", "@mx.example.test:someone@elsewhere.test")
  end)

  it("never routes on %, ! or a quoted @ in the local part of a local address: no relay", function()
    assert_relayed(env, "127.0.0.2", "someone%elsewhere.test@example.test")
    assert_relayed(env, "127.0.0.2", "elsewhere.test!someone@example.test")
    assert_relayed(env, "127.0.0.2", '"someone@elsewhere.test"@example.test')
  end)

  -- authenticated = "allow" and "check" need STARTTLS and AUTH: t/integration/tls_auth_spec.lua tests them.
end)

describe("inbound.relay with enforce = all and dns.verify_ptr = ptr_only", function()
  local env = dns.world(RECORDS, { config = {
    dns = { verify_ptr = "ptr_only" },
    inbound = { relay = {
      enforce = "all",
      allow_from = { "[127.0.0.6]", "gw.trusted.test" },
      exclude = { "[127.0.0.7]" },
    } },
  } })

  it("refuses an internal host (host.example.test) relaying, and still takes its local mail", function()
    assert_refused(env, "127.0.0.10", "someone@elsewhere.test")
    assert_relayed(env, "127.0.0.10", "jdoe@example.test")
  end)

  it("still never checks a client in exclude", function()
    assert_relayed(env, "127.0.0.7", "someone@elsewhere.test")
  end)

  it("still lets a client in allow_from relay", function()
    assert_relayed(env, "127.0.0.6", "someone@elsewhere.test")
  end)

  it("trusts the PTR name alone, as Domino does: 127.0.0.4 claiming gw.trusted.test may relay", function()
    assert_relayed(env, "127.0.0.4", "someone@elsewhere.test")
  end)

  it("still refuses a stranger", function()
    assert_refused(env, "127.0.0.2", "someone@elsewhere.test")
  end)
end)

-- Both precedences with the same lists. sA: 127.0.0.6, sD: 127.0.0.8; dA: @partner.test, dD: @blocked.test.
local LISTS = {
  allow_to = { "@partner.test" },
  deny_to = { "@blocked.test" },
  allow_from = { "[127.0.0.6]" },
  deny_from = { "[127.0.0.8]" },
}
-- { client, recipient, what it exercises, reply with precedence "allow", with precedence "deny" }
local CASES = {
  { "127.0.0.6", "u@partner.test", "sA and dA", 250, 250 },
  { "127.0.0.6", "u@blocked.test", "sA and dD", 250, 554 },
  { "127.0.0.6", "u@other.test", "sA, allow_to not matched", 250, 554 },
  { "127.0.0.2", "u@partner.test", "dA, allow_from not matched", 250, 554 },
  { "127.0.0.2", "u@other.test", "no list matches, allow lists not empty", 554, 554 },
  { "127.0.0.8", "u@other.test", "sD", 554, 554 },
}

for _, p in ipairs({ { "allow", 4, "Domino 6 and later" }, { "deny", 5, "Domino 5" } }) do
  local precedence, column, label = p[1], p[2], p[3]
  describe('inbound.relay.precedence = "' .. precedence .. '" (' .. label .. ")", function()
    local relay = { precedence = precedence }
    for k, v in pairs(LISTS) do relay[k] = v end
    local env = dns.world(RECORDS, { config = { inbound = { relay = relay } } })

    if precedence == "allow" then
      it("IBM's example: a host in Deny-from ([127.0.0.8]) may still relay to an Allow-to domain (@partner.test)",
        function()
          assert_relayed(env, "127.0.0.8", "u@partner.test")
        end)
    else
      it("IBM's example: a host in Deny-from ([127.0.0.8]) may not relay even to an Allow-to domain (@partner.test)",
        function()
          assert_refused(env, "127.0.0.8", "u@partner.test")
        end)
    end

    for _, case in ipairs(CASES) do
      local ip, rcpt, what, want = case[1], case[2], case[3], case[column]
      it((want == 250 and "allows" or "refuses") .. " " .. ip .. " -> " .. rcpt .. " (" .. what .. ")", function()
        if want == 250 then assert_relayed(env, ip, rcpt) else assert_refused(env, ip, rcpt) end
      end)
    end
  end)
end

describe("local internet domains without local_domains (the hostname fallback)", function()
  local server = require "t.helpers.server"
  -- server.hostname is mx.example.test: example.test and every name under it are local
  local env = dns.world(RECORDS, { config = { local_domains = server.NIL } })

  it("takes a name under the hostname's parent domain (mailhost3.example.test) as local", function()
    assert_relayed(env, "127.0.0.2", "jdoe@mailhost3.example.test")
    assert_relayed(env, "127.0.0.2", "jdoe@example.test")
  end)

  it("still refuses a stranger relaying elsewhere", function()
    assert_refused(env, "127.0.0.2", "someone@example.org")
  end)

  it("takes host.example.test as an internal host, which may relay", function()
    assert_relayed(env, "127.0.0.10", "someone@example.org")
  end)
end)
