-- t/integration/domino_connection_spec.lua - Domino's connection controls (SPEC 3.1 inbound.connection.*, section
-- 5 points 1, 2 and 5) in a running server with real DNS: the allow and deny lists (IP entries, forward-confirmed
-- host names, deny wins), verify_hostname (no name: 550, DNS timeout: 450) and the error limit max_errors.
local dns = require "t.helpers.dns"
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

local REFUSED = "554 5.7.1 Connection refused for policy reasons"
local TOO_MANY = "421 4.7.0 SMTP service not available, closing transmission channel"

-- The hosts of this file:
--   127.0.0.2   no PTR
--   127.0.0.3   mail.partner.test (PTR and A agree)
--   127.0.0.4   PTR says liar.partner.test, which has no A record: no verified name
--   127.0.0.6   listed by IP in an allow list
--   127.0.0.7   its PTR query is never answered (a black hole behind dnsmasq)
--   127.0.0.8   PTR says host.slow.test, whose A query is never answered
--   127.0.0.30  listed by IP in a deny list
--   127.0.0.31  bad.example.org (PTR and A agree), listed by name in a deny list
--   127.0.0.32  gw.partner.test (PTR and A agree)
--   127.0.0.33  listed by IP in both allow and deny
--   127.0.0.34  notpartner.test; 127.0.0.35 mx.evil.test; 127.0.0.36 evil.test (PTR and A agree)
local RECORDS = {
  hosts = { ["mail.partner.test"] = "127.0.0.3", ["bad.example.org"] = "127.0.0.31",
            ["gw.partner.test"] = "127.0.0.32", ["notpartner.test"] = "127.0.0.34", ["mx.evil.test"] = "127.0.0.35",
            ["evil.test"] = "127.0.0.36" },
  ptr = { ["127.0.0.4"] = "liar.partner.test", ["127.0.0.8"] = "host.slow.test" },
  timeout = { dns.reverse("127.0.0.7"), "slow.test" },
}

-- greeting(env, ip) -> code, first line of the greeting, client
local function greeting(env, ip)
  local c = env.connect(ip)
  local code, lines = c:read_reply(4)
  return code, lines and lines[1], c
end

local function mail_reply(env, ip)
  local c = env.session(ip)
  local code, lines = c:cmd("MAIL FROM:<sender@example.org>", 4)
  return code, lines and lines[1], c
end

describe("inbound.connection.deny with IP and host-name entries (one string), and verify_hostname", function()
  local env = dns.world(RECORDS, { config = { inbound = { connection = {
    deny = "[127.0.0.30], bad.example.org; .evil.test; [::1]",   -- Domino's multi-value field: one string
    verify_hostname = true,
  } } }, ipv6 = true })

  it("greets a denied IP with 554 5.7.1 Connection refused for policy reasons, then serves only QUIT", function()
    local mark = env.srv:log_mark()
    local code, line, c = greeting(env, "127.0.0.30")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
    for _, cmd in ipairs({ "EHLO client.test", "HELO client.test", "MAIL FROM:<sender@example.org>",
                           "RCPT TO:<jdoe@example.test>", "DATA" }) do
      local rc, lines = c:cmd(cmd)
      assert.equal(503, rc, cmd .. ": " .. tostring(lines and lines.text))
    end
    local rc, lines = c:cmd("QUIT")
    assert.equal(221, rc, lines and lines.text)
    assert.is_true((c:expect_closed(2)))
    assert.truthy(env.srv:wait_log("rule=connection action=reject ip=127.0.0.30 reason=deny inbound.connection.deny[1]",
      2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("refuses an IPv6 client by an IPv6 entry ([::1])", function()
    local code, line = greeting(env, "::1")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
  end)

  it("refuses a client whose forward-confirmed name is in the deny list", function()
    local code, line = greeting(env, "127.0.0.31")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
  end)

  it("refuses a name under a leading-dot entry (.evil.test: mx.evil.test) but not the name itself (evil.test)",
    function()
      local code, line = greeting(env, "127.0.0.35")
      assert.equal(554, code)
      assert.equal(REFUSED, line)
      code, line = greeting(env, "127.0.0.36")
      assert.equal(220, code, line)
    end)

  it("greets a client without a PTR, then refuses its MAIL with 550 5.7.1 Cannot verify your host name <ip>",
    function()
      local mark = env.srv:log_mark()
      local code, line, c = mail_reply(env, "127.0.0.2")
      assert.equal(550, code)
      assert.equal("550 5.7.1 Cannot verify your host name 127.0.0.2", line)
      assert.truthy(env.srv:wait_log("rule=connection action=reject ip=127.0.0.2 reason=verify_hostname", 2, mark,
        true), env.srv:log():sub(mark + 1))
      assert.equal(250, (c:cmd("NOOP")), "the session goes on")
    end)

  it("refuses MAIL from a client whose PTR name does not point back to it", function()
    local code, line = mail_reply(env, "127.0.0.4")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Cannot verify your host name 127.0.0.4", line)
  end)

  it("takes MAIL from a client with a forward-confirmed name", function()
    local code, line = mail_reply(env, "127.0.0.3")
    assert.equal(250, code, line)
  end)

  it("greets with 421 4.7.1 (come back later) when the deny list needs a name whose lookup times out", function()
    local code, line, c = greeting(env, "127.0.0.7")
    assert.equal(421, code)
    assert.equal("421 4.7.1 Cannot verify your host name 127.0.0.7", line)
    assert.is_true((c:expect_closed(2)))
  end)
end)

describe("inbound.connection with IP entries only, verify_hostname and max_errors = 3", function()
  local env = dns.world(RECORDS, { config = { inbound = { connection = {
    deny = { "[127.0.0.30]" },
    verify_hostname = true,
    max_errors = 3,
  } } } })

  it("does not look up a name at connect, and answers MAIL with 450 4.7.1 when the PTR lookup times out",
    function()
      local mark = env.srv:log_mark()
      local code, line = mail_reply(env, "127.0.0.7")
      assert.equal(450, code)
      assert.equal("450 4.7.1 Cannot verify your host name 127.0.0.7", line)
      assert.truthy(env.srv:wait_log("rule=connection action=tempfail ip=127.0.0.7", 2, mark, true),
        env.srv:log():sub(mark + 1))
    end)

  it("answers MAIL with 450 4.7.1 when the PTR answers but the name's A query times out", function()
    local code, line = mail_reply(env, "127.0.0.8")
    assert.equal(450, code)
    assert.equal("450 4.7.1 Cannot verify your host name 127.0.0.8", line)
  end)

  it("answers the fourth policy error (relay refusals) with 421 4.7.0 and closes the connection", function()
    local mark = env.srv:log_mark()
    local c = env.session("127.0.0.3")
    assert.equal(250, (c:cmd("MAIL FROM:<sender@example.org>")))
    for i = 1, 3 do
      local code, lines = c:cmd("RCPT TO:<someone" .. i .. "@elsewhere.test>")
      assert.equal(554, code)
      assert.equal("554 5.7.1 Relay rejected for policy reasons.", lines[1])
    end
    local code, lines = c:cmd("RCPT TO:<someone4@elsewhere.test>")
    assert.equal(421, code)
    assert.equal(TOO_MANY, lines[1])
    assert.is_true((c:expect_closed(2)))
    assert.truthy(env.srv:wait_log("too many errors after %u+ from unknown%[127%.0%.0%.3%]\n", 2, mark),
      env.srv:log():sub(mark + 1))
  end)

  it("counts the refused greeting and the 503 replies after it as errors", function()
    local code, line, c = greeting(env, "127.0.0.30")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
    local lines
    code, lines = c:cmd("EHLO client.test")
    assert.equal(503, code, lines and lines.text)
    code, lines = c:cmd("EHLO client.test")
    assert.equal(503, code, lines and lines.text)
    code, lines = c:cmd("EHLO client.test")
    assert.equal(421, code, lines and lines.text)
    assert.equal(TOO_MANY, lines[1])
    assert.is_true((c:expect_closed(2)))
  end)

  it("counts verify_hostname refusals as errors too", function()
    local c = env.session("127.0.0.2")
    for _ = 1, 3 do
      local code, lines = c:cmd("MAIL FROM:<sender@example.org>")
      assert.equal(550, code)
      assert.equal("550 5.7.1 Cannot verify your host name 127.0.0.2", lines[1])
    end
    local code, lines = c:cmd("MAIL FROM:<sender@example.org>")
    assert.equal(421, code)
    assert.equal(TOO_MANY, lines[1])
    assert.is_true((c:expect_closed(2)))
  end)
end)

describe("inbound.connection.allow with IP and host-name entries, and a deny list", function()
  local env = dns.world(RECORDS, { config = { inbound = { connection = {
    allow = { "[127.0.0.6]", "[127.0.0.33]", "partner.test" },
    deny = { "[127.0.0.33]", "gw.partner.test" },
  } } } })

  it("greets a client whose IP is in the allow list, without asking DNS for its name", function()
    local mark = env.ns:mark()
    local code, line, c = greeting(env, "127.0.0.6")
    assert.equal(220, code, line)
    assert.equal(221, (c:cmd("QUIT")))
    assert.is_false(env.ns:asked(dns.reverse("127.0.0.6"), "PTR", mark))
  end)

  it("greets a client whose forward-confirmed name matches a host-name entry (partner.test)", function()
    local code, line = greeting(env, "127.0.0.3")
    assert.equal(220, code, line)
  end)

  it("matches a host-name entry as a string suffix, as Domino does: notpartner.test matches partner.test", function()
    local code, line = greeting(env, "127.0.0.34")
    assert.equal(220, code, line)
  end)

  it("refuses a client that nothing in the allow list matches", function()
    local code, line = greeting(env, "127.0.0.2")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
  end)

  it("refuses a client whose PTR claims an allowed name that does not point back", function()
    local code, line = greeting(env, "127.0.0.4")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
  end)

  it("refuses a client in both lists: deny wins, by name (gw.partner.test) and by IP ([127.0.0.33])", function()
    local code, line = greeting(env, "127.0.0.32")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
    code, line = greeting(env, "127.0.0.33")
    assert.equal(554, code)
    assert.equal(REFUSED, line)
  end)
end)

describe("verify_hostname with a resolver that never answers", function()
  local bh, srv
  local clients = {}

  setup(function()
    bh = dns.blackhole()
    srv = server.start { config = {
      dns = { servers = { bh.server }, timeout = 1, tries = 1 },
      inbound = { connection = { verify_hostname = true } },
    } }
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
    if bh then bh:stop() end
  end)

  it("answers MAIL with 450 4.7.1 Cannot verify your host name <ip>, never a 5xx", function()
    local c = smtp.session("127.0.0.1", srv.port, { bind = "127.0.0.2" })
    clients[#clients + 1] = c
    local code, lines = c:cmd("MAIL FROM:<sender@example.org>", 4)
    assert.equal(450, code)
    assert.equal("450 4.7.1 Cannot verify your host name 127.0.0.2", lines[1])
    assert.is_true(bh:received() > 0, "the query went to the black hole")
  end)
end)
