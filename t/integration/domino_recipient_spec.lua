-- t/integration/domino_recipient_spec.lua - Domino's recipient controls (SPEC 3.1 inbound.recipient.*, section 5
-- point 3) in a running server: the allow and deny lists (deny wins, before the directory), verify_local against
-- the directory with each directory.lookup mode, and the smart host rules (smart_host, smart_host_all).
local dns = require "t.helpers.dns"
local smtp = require "t.helpers.smtp"

local REJECTED = "554 5.7.1 Message rejected for policy reasons."

-- The directory of t/helpers/server.lua: postmaster@example.test, jdoe@example.test (alias john@example.test).
-- Both example.test and example.net are local here; example.net has no user of its own.
local LOCAL = { "example.test", "example.net" }

local function no_such_user(addr)
  return "550 5.1.1 " .. addr .. "... No such user"
end

-- rcpt(env, addr) -> code, reply line to RCPT TO:<addr> in a new session from 127.0.0.2
local function rcpt(env, addr)
  local c = env.session("127.0.0.2")
  assert.equal(250, (c:cmd("MAIL FROM:<sender@example.org>")))
  local code, lines = c:cmd("RCPT TO:<" .. addr .. ">")
  c:cmd("QUIT")
  c:close()
  return code, lines and lines[1]
end

describe("inbound.recipient.deny and verify_local (directory.lookup = full, smart_host set)", function()
  local env = dns.world({}, { config = {
    local_domains = LOCAL,
    directory = { lookup = "full" },
    routing = { smart_host = "[192.0.2.25]:25" },
    inbound = { recipient = { verify_local = true, deny = { "noreply@example.test" } } },
  } })

  it("refuses a denied recipient with 554 5.7.1 Message rejected for policy reasons. before the directory check",
    function()
      local mark = env.srv:log_mark()
      local code, line = rcpt(env, "noreply@example.test")
      assert.equal(554, code)
      assert.equal(REJECTED, line)
      assert.truthy(env.srv:wait_log("rule=recipient action=reject rcpt=<noreply@example.test> reason=deny", 2, mark,
        true), env.srv:log():sub(mark + 1))
    end)

  it("refuses a local recipient the directory does not know with 550 5.1.1 <addr>... No such user", function()
    local mark = env.srv:log_mark()
    local code, line = rcpt(env, "nobody@example.test")
    assert.equal(550, code)
    assert.equal(no_such_user("nobody@example.test"), line)
    assert.truthy(env.srv:wait_log("rule=recipient action=reject rcpt=<nobody@example.test> reason=verify_local", 2,
      mark, true), env.srv:log():sub(mark + 1))
  end)

  it("takes a directory alias (john@example.test) and delivers to its user's mailbox", function()
    local c = env.session("127.0.0.2")
    local code, lines = smtp.send_mail(c, "sender@example.org", "john@example.test",
      smtp.message({ "Subject: to the alias" }, "hello\r\n"))
    assert.equal(250, code, lines and lines.text)
    local files = env.srv:wait_maildir("jdoe", "example.test", 1)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("Subject: to the alias", 1, true))
  end)

  it("takes a known address in any case", function()
    local code, line = rcpt(env, "JDoe@Example.Test")
    assert.equal(250, code, line)
  end)

  it("with lookup = full, refuses a known local part in another local domain (jdoe@example.net)", function()
    local code, line = rcpt(env, "jdoe@example.net")
    assert.equal(550, code)
    assert.equal(no_such_user("jdoe@example.net"), line)
  end)
end)

describe("inbound.recipient.allow and verify_local (directory.lookup = localpart)", function()
  local env = dns.world({}, { config = {
    local_domains = LOCAL,
    directory = { lookup = "localpart" },
    inbound = { recipient = { verify_local = true, allow = { "@example.net", "jdoe@example.test" } } },
  } })

  it("takes a recipient in the allow list and the directory", function()
    local code, line = rcpt(env, "jdoe@example.test")
    assert.equal(250, code, line)
  end)

  it("refuses a local recipient the allow list does not name, though the directory knows it", function()
    local code, line = rcpt(env, "postmaster@example.test")
    assert.equal(554, code)
    assert.equal(REJECTED, line)
  end)

  it("with lookup = localpart, finds jdoe@example.net by its local part", function()
    local code, line = rcpt(env, "jdoe@example.net")
    assert.equal(250, code, line)
  end)

  it("refuses an allowed address that the directory does not know", function()
    local code, line = rcpt(env, "nobody@example.net")
    assert.equal(550, code)
    assert.equal(no_such_user("nobody@example.net"), line)
  end)

  it("does not apply the recipient lists to relay recipients (the relay controls answer)", function()
    local code, line = rcpt(env, "someone@elsewhere.test")
    assert.equal(554, code)
    assert.equal("554 5.7.1 Relay rejected for policy reasons.", line)
  end)
end)

describe("routing.smart_host without verify_local", function()
  local env = dns.world({}, { config = {
    local_domains = LOCAL,
    routing = { smart_host = "[192.0.2.25]:25" },
  } })

  it("takes an unknown local recipient (it is for the smart host)", function()
    local code, line = rcpt(env, "unknown@example.test")
    assert.equal(250, code, line)
  end)
end)

describe("routing.smart_host_all (directory.lookup = full_then_localpart, the default)", function()
  local env = dns.world({}, { config = {
    local_domains = LOCAL,
    routing = { smart_host = "[192.0.2.25]:25", smart_host_all = true },
  } })

  it("refuses an unknown local recipient with 550 5.1.1 <addr>... No such user, without verify_local", function()
    local mark = env.srv:log_mark()
    local code, line = rcpt(env, "unknown@example.test")
    assert.equal(550, code)
    assert.equal(no_such_user("unknown@example.test"), line)
    assert.truthy(env.srv:wait_log("rule=recipient action=reject rcpt=<unknown@example.test> reason=smart_host_all",
      2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("takes a known local recipient", function()
    local code, line = rcpt(env, "jdoe@example.test")
    assert.equal(250, code, line)
  end)

  it("finds jdoe@example.net through the local-part fallback", function()
    local code, line = rcpt(env, "jdoe@example.net")
    assert.equal(250, code, line)
  end)
end)
