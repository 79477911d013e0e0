-- t/integration/logs_wording_spec.lua - the lines the mail ecosystem parses, token for token in Postfix's
-- wording (docs/admin.md, "Logs"): connect (with the session ID), the client= line with the SASL user and the
-- session ID, message-id=, the router's from= (queue active), to= with relay, delay, delays, dsn and status,
-- removed, disconnect with per-command counters, and NOQUEUE rejects at the CONNECT, MAIL, RCPT, DATA and
-- END-OF-MESSAGE stages.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"
local mime = require "mime"

local PASSWORD = "wording-spec-pw"

local RULE = [[
  local mta = require "luamta"
  return {
    mail = function(s, sender)
      if sender.address == "bad@spam.test" then return mta.reject(554, "5.7.1 no mail from you") end
    end,
    rcpt = function(s, r)
      if r.address == "nobody@example.test" then
        return mta.reject(550, "5.1.1 <nobody@example.test>... No such user")
      end
    end,
    data = function(s)
      if s.sender.address == "nodata@example.org" then return mta.reject(554, "5.7.1 no data today") end
    end,
    message = function(s, msg)
      if s.sender.address == "nomsg@example.org" then return mta.reject(550, "5.7.1 not this message") end
    end,
  }
]]

local SID = "%x+"

describe("the Postfix wording of the log", function()
  local pki, srv, px

  setup(function()
    pki = certs.new { expired = false }
    srv = server.start {
      config = {
        tls = { cert = pki.cert, key = pki.key },
        directory = { users = {
          { address = "postmaster@example.test" },
          { address = "jdoe@example.test", password = certs.crypt(PASSWORD) },
        } },
        inbound = { connection = { deny = { "[127.0.0.30]" } } },
      },
      rules = { { "wording", RULE } },
    }
    px = certs.proxy(srv.port, "starttls")
  end)

  teardown(function()
    if px then px:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  it("follows a message from connect to removed, with the SASL user and the session ID", function()
    local mark = srv:log_mark()
    local c = certs.session(px)
    assert.equal(235, (c:cmd("AUTH PLAIN " .. mime.b64("\0jdoe@example.test\0" .. PASSWORD))))
    local code, lines = smtp.send_mail(c, "jdoe@example.test", { "postmaster@example.test" },
      smtp.message({ "Subject: words", "Message-ID: <words.1@client.test>" }, "hello\r\n"))
    assert.equal(250, code)
    local qid = lines[1]:match("queued as (%x+)")
    assert.equal(221, (c:cmd("QUIT")))
    c:close()
    assert.truthy(srv:wait_log(qid .. ": removed", 5, mark, true), srv:log():sub(mark + 1))
    local line = srv:wait_log("disconnect from unknown%[127%.0%.0%.1%][^\n]*", 5, mark)
    local text = srv:log():sub(mark + 1)
    local sid = assert(text:match(": connect from unknown%[127%.0%.0%.1%] session=(" .. SID .. ")\n"), text)
    assert.truthy(text:find(": " .. qid .. ": client=unknown[127.0.0.1], sasl_method=PLAIN, "
      .. "sasl_username=jdoe@example.test, session=" .. sid .. "\n", 1, true), text)
    assert.truthy(text:find(": " .. qid .. ": message-id=<words.1@client.test>\n", 1, true), text)
    assert.truthy(text:find(": " .. qid .. ": from=<jdoe@example%.test>, size=%d+, nrcpt=1 %(queue active%)\n"),
      text)
    assert.truthy(text:find(": " .. qid .. ": to=<postmaster@example%.test>, relay=local, delay=[%d.]+, "
      .. "delays=[%d.]+/[%d.]+/[%d.]+/[%d.]+, dsn=2%.0%.0, status=sent %(delivered to maildir[^\n]*%)\n"), text)
    assert.truthy(text:find(": " .. qid .. ": removed\n", 1, true), text)
    assert.equal("disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 "
      .. "commands=8", line)
  end)

  it("logs NOQUEUE: reject: at the MAIL, RCPT, DATA and END-OF-MESSAGE stages, and counts the failures", function()
    local mark = srv:log_mark()
    local c = assert(smtp.session("127.0.0.1", srv.port, { helo = "words.test" }))
    assert.equal(554, (c:cmd("MAIL FROM:<bad@spam.test>")))
    assert.equal(250, (c:cmd("MAIL FROM:<nodata@example.org>")))
    assert.equal(550, (c:cmd("RCPT TO:<nobody@example.test>")))
    assert.equal(250, (c:cmd("RCPT TO:<postmaster@example.test>")))
    assert.equal(554, (c:cmd("DATA")))
    assert.equal(250, (c:cmd("RSET")))
    assert.equal(250, (c:cmd("MAIL FROM:<nomsg@example.org>")))
    assert.equal(250, (c:cmd("RCPT TO:<postmaster@example.test>")))
    assert.equal(354, (c:cmd("DATA")))
    assert.equal(550, (c:cmd("Subject: no\r\n\r\nbody\r\n.")))
    assert.equal(221, (c:cmd("QUIT")))
    c:close()
    local line = srv:wait_log("disconnect from unknown%[127%.0%.0%.1%][^\n]*", 5, mark)
    local text = srv:log():sub(mark + 1)
    local function has(s) assert.truthy(text:find(s, 1, true), s .. "\n---\n" .. text) end
    has(": NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 554 5.7.1 no mail from you; from=<bad@spam.test> "
      .. "proto=ESMTP helo=<words.test>\n")
    has(": NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody@example.test>... No such user; "
      .. "from=<nodata@example.org> to=<nobody@example.test> proto=ESMTP helo=<words.test>\n")
    has(": NOQUEUE: reject: DATA from unknown[127.0.0.1]: 554 5.7.1 no data today; from=<nodata@example.org> "
      .. "to=<postmaster@example.test> proto=ESMTP helo=<words.test>\n")
    has(": NOQUEUE: reject: END-OF-MESSAGE from unknown[127.0.0.1]: 550 5.7.1 not this message; "
      .. "from=<nomsg@example.org> to=<postmaster@example.test> proto=ESMTP helo=<words.test>\n")
    assert.equal("disconnect from unknown[127.0.0.1] ehlo=1 mail=2/3 rcpt=2/3 data=0/2 rset=1 quit=1 "
      .. "commands=7/11", line)
  end)

  it("logs NOQUEUE: reject: CONNECT for a refused client", function()
    local mark = srv:log_mark()
    local c = assert(smtp.connect("127.0.0.1", srv.port, { bind = "127.0.0.30" }))
    assert.equal(554, (c:read_reply()))
    assert.equal(221, (c:cmd("QUIT")))
    c:close()
    assert.truthy(srv:wait_log("NOQUEUE: reject: CONNECT from unknown[127.0.0.30]: 554 5.7.1 Connection refused for "
      .. "policy reasons; proto=SMTP\n", 5, mark, true), srv:log():sub(mark + 1))
    assert.truthy(srv:wait_log("disconnect from unknown[127.0.0.30] quit=1 commands=1\n", 5, mark, true))
  end)
end)
