-- t/integration/lmtp_spec.lua - delivery.lmtp (docs/admin.md, "LMTP") against a real Dovecot LMTP server: two
-- local recipients in one message, one of them unknown to Dovecot, get one reply each after the data (the known
-- one delivered into Dovecot's Maildir, the other bounced with Dovecot's 5.1.1); with Dovecot down the message is
-- deferred and delivered on a flush once it is back; the TCP form works too; the loader checks the value.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local dovecot = require "t.helpers.dovecot"

describe("LMTP delivery", function()
  local srv, dv

  after_each(function()
    if srv then srv:cleanup() end
    if dv then dv:cleanup() end
    srv, dv = nil, nil
  end)

  local function send(port, rcpts, subject)
    local c = assert(smtp.connect("127.0.0.1", port))
    assert.equal(220, (c:read_reply()))
    assert.equal(250, (c:cmd("EHLO client.test")))
    assert.equal(250, (c:cmd("MAIL FROM:<sender@client.test>")))
    for _, r in ipairs(rcpts) do assert.equal(250, (c:cmd("RCPT TO:<" .. r .. ">"))) end
    assert.equal(354, (c:cmd("DATA")))
    local code, lines = c:cmd("Subject: " .. subject .. "\r\n\r\nover LMTP\r\n.")
    assert.equal(250, code, lines and lines.text)
    c:cmd("QUIT")
    c:close()
  end

  local function start(lmtp)
    srv = server.start {
      config = {
        delivery = { lmtp = lmtp },
        routing = { retry = { 1, 2 }, timeouts = { connect = 2, reply = 5 } },
      },
    }
  end

  it("gives each recipient its own reply: one delivered into Dovecot, one bounced", function()
    dv = dovecot.start { users = { "jdoe@example.test" } }       -- postmaster is ours, not Dovecot's
    start("unix:" .. dv.socket)
    send(srv.port, { "jdoe@example.test", "postmaster@example.test" }, "two users")
    local got = dv:wait_messages("jdoe@example.test", 1, 10)
    assert.equal(1, #got, dv:log())
    assert.truthy(got[1].content:find("Subject: two users", 1, true))
    assert.truthy(srv:wait_log("to=<jdoe@example%.test>, relay=lmtp%[[^%]]+%][^\n]*status=sent", 5), srv:log())
    assert.truthy(srv:wait_log("to=<postmaster@example%.test>, relay=lmtp[^\n]*dsn=5%.1%.1[^\n]*status=bounced", 5),
      srv:log())
    assert.equal(0, #srv:maildir_files("jdoe", "example.test"))   -- not the Maildir luamta writes itself
  end)

  it("defers while Dovecot is down and delivers once it is back", function()
    dv = dovecot.start { users = { "jdoe@example.test" } }
    dv:stop()
    start("unix:" .. dv.socket)
    send(srv.port, { "jdoe@example.test" }, "later")
    assert.truthy(srv:wait_log("to=<jdoe@example%.test>[^\n]*status=deferred %(lmtp%[", 10), srv:log())
    dv:restart()
    srv:luamta("queue flush")
    local got = dv:wait_messages("jdoe@example.test", 1, 10)
    assert.equal(1, #got, srv:log())
    assert.truthy(srv:wait_log("to=<jdoe@example%.test>, relay=lmtp[^\n]*status=sent", 5), srv:log())
  end)

  it("speaks LMTP over TCP too", function()
    dv = dovecot.start { users = { "jdoe@example.test" } }
    start(dv.address)
    send(srv.port, { "john@example.test" }, "alias over tcp")      -- john is jdoe's alias: LMTP gets the mailbox
    local got = dv:wait_messages("jdoe@example.test", 1, 10)
    assert.equal(1, #got, srv:log() .. dv:log())
  end)

  it("is checked by the loader", function()
    local dir = server.tempdir()
    finally(function() server.run("rm -rf " .. server.sh_quote(dir)) end)
    local cfg = server.defaults(dir, server.free_port())
    cfg.delivery.lmtp = "dovecot.example:24"
    local path = dir .. "/luamta.lua"
    server.write_file(path, server.config_source(cfg))
    local out, rc = server.luamta("check -c " .. server.sh_quote(path))
    assert.equal(1, rc, out)
    assert.truthy(out:find("delivery.lmtp", 1, true), out)
  end)
end)
