-- t/integration/domino_sender_spec.lua - Domino's sender controls (SPEC 3.1 inbound.sender.*, section 5 point 2)
-- in a running server with real DNS: the allow and deny lists (deny wins, the null sender matches no entry) and
-- verify_domain (no MX, CNAME, A or AAAA: 550 5.1.8; DNS timeout: 451 4.1.8; never for <>).
local dns = require "t.helpers.dns"

-- Sender domains of this file: mxonly.test has only an MX record, aonly.test only A, v6only.test only AAAA,
-- alias.test only a CNAME (to target.test), nowhere.test nothing; names under slow.test are never answered.
local RECORDS = {
  mx = { ["mxonly.test"] = "mx.elsewhere.test" },
  hosts = { ["aonly.test"] = "192.0.2.10", ["v6only.test"] = "2001:db8::10", ["target.test"] = "192.0.2.11" },
  cname = { ["alias.test"] = "target.test" },
  timeout = { "slow.test" },
}

-- mail(env, from, timeout) -> code, reply line to MAIL FROM:<from> in a new session from 127.0.0.2
local function mail(env, from, timeout)
  local c = env.session("127.0.0.2")
  local code, lines = c:cmd("MAIL FROM:<" .. from .. ">", timeout)
  c:cmd("QUIT")
  c:close()
  return code, lines and lines[1]
end

local function refused_text(addr)
  return "554 5.7.1 Mail from " .. addr .. " rejected for policy reasons."
end

describe("inbound.sender.deny and verify_domain", function()
  local env = dns.world(RECORDS, { config = { inbound = { sender = {
    deny = { "@spam.test", "bad.sender@mxonly.test" },
    verify_domain = true,
  } } } })

  it("refuses a sender of a denied domain (@spam.test) with 554 5.7.1 Mail from <addr> ..., and logs it", function()
    local mark = env.srv:log_mark()
    local code, line = mail(env, "x@spam.test")
    assert.equal(554, code)
    assert.equal(refused_text("x@spam.test"), line)
    assert.truthy(env.srv:wait_log("rule=sender action=reject from=<x@spam.test> reason=deny inbound.sender.deny[1]",
      2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("matches the deny list without regard to case", function()
    local code, line = mail(env, "X@Spam.Test")
    assert.equal(554, code)
    assert.equal(refused_text("X@Spam.Test"), line)
  end)

  it("refuses an exact denied address, and takes another sender of the same domain", function()
    local code, line = mail(env, "bad.sender@mxonly.test")
    assert.equal(554, code)
    assert.equal(refused_text("bad.sender@mxonly.test"), line)
    code, line = mail(env, "good.sender@mxonly.test")
    assert.equal(250, code, line)
  end)

  it("refuses a sender whose domain does not exist with 550 5.1.8 Sender domain <d> does not exist", function()
    local mark = env.srv:log_mark()
    local code, line = mail(env, "a@nowhere.test")
    assert.equal(550, code)
    assert.equal("550 5.1.8 Sender domain nowhere.test does not exist", line)
    assert.truthy(env.srv:wait_log("rule=sender action=reject from=<a@nowhere.test> reason=verify_domain", 2, mark,
      true), env.srv:log():sub(mark + 1))
  end)

  for _, d in ipairs({ { "mxonly.test", "only an MX record" }, { "aonly.test", "only an A record" },
                       { "v6only.test", "only an AAAA record" }, { "alias.test", "only a CNAME" } }) do
    it("takes a sender whose domain has " .. d[2] .. " (" .. d[1] .. ")", function()
      local code, line = mail(env, "a@" .. d[1])
      assert.equal(250, code, line)
    end)
  end

  it("answers 451 4.1.8 when the sender's domain cannot be looked up (DNS timeout)", function()
    local code, line = mail(env, "a@host.slow.test", 10)
    assert.equal(451, code, line)
    assert.matches("^451 4%.1%.8 Sender domain host%.slow%.test ", line)
  end)

  it("never checks the null sender <>", function()
    local code, line = mail(env, "")
    assert.equal(250, code, line)
  end)
end)

describe("inbound.sender.allow and deny together", function()
  local env = dns.world(RECORDS, { config = { inbound = { sender = {
    allow = { "@partner.test" },
    deny = { "spammer@partner.test" },
  } } } })

  it("takes a sender the allow list names", function()
    local code, line = mail(env, "someone@partner.test")
    assert.equal(250, code, line)
  end)

  it("refuses a sender the allow list does not name", function()
    local code, line = mail(env, "someone@other.test")
    assert.equal(554, code)
    assert.equal(refused_text("someone@other.test"), line)
  end)

  it("refuses a sender in both lists: deny wins", function()
    local code, line = mail(env, "spammer@partner.test")
    assert.equal(554, code)
    assert.equal(refused_text("spammer@partner.test"), line)
  end)

  it("refuses the null sender <>, which matches no entry of the allow list", function()
    local code, line = mail(env, "")
    assert.equal(554, code)
    assert.equal(refused_text(""), line)
  end)
end)
