-- t/integration/tls_session_spec.lua - TLS on the SMTP listener (SPEC sections 3 and 8) as clients see it: STARTTLS
-- in the EHLO list and its replies, the session starting over under TLS, commands pipelined in the clear after
-- STARTTLS (CVE-2011-0411), an implicit-TLS listener (port 465 style), real clients (swaks, Python's smtplib,
-- openssl s_client), and handshakes that stall. Dialogues under TLS go through t/helpers/certs.lua's proxy, which
-- does the client's TLS and lets the spec speak plain SMTP to it.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"
local socket = require "socket"

local PASSWORD = "Tr0ub4dor&3-spec"

-- received(content) -> luamta's Received header of a delivered message (the first one), unfolded
local function received(content)
  local head = ("\n" .. content):match("\n(Received:.-)\r?\n%S") or ""
  return (head:gsub("\r?\n[ \t]+", " "))
end

-- queue_id(reply_line) -> the ID in "250 2.0.0 Ok: queued as <id>"
local function queue_id(line)
  return line and line:match("queued as (%x+)")
end

-- CLOSE_NOTIFY: QUIT over implicit TLS, then how the server ended the TLS session ("close_notify", or the error
-- Python's ssl raises for a TCP close without the alert)
local CLOSE_NOTIFY = [==[
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5),
                    suppress_ragged_eofs=False)
f = s.makefile("rb")
f.readline()
s.sendall(b"QUIT\r\n")
print("quit\t" + f.readline().decode().rstrip("\r\n"))
try:
    rest = s.recv(1000)
    print("end\t" + ("close_notify" if rest == b"" else "more data: %r" % rest))
except Exception as e:
    print("end\t%s: %s" % (type(e).__name__, e))
]==]

describe("TLS on the SMTP listener", function()
  local pki, srv, px, ipx, IMPLICIT, NOTLS
  local clients = {}

  setup(function()
    pki = certs.new { expired = false }
    -- each delivery test mails its own user, so that what arrives is about that test alone
    local users = { { address = "jdoe@example.test", aliases = { "john@example.test" },
                      password = certs.crypt(PASSWORD) } }
    for _, u in ipairs { "swaks", "swaksauth", "smtplib", "smtpssl", "implicit", "injected" } do
      users[#users + 1] = { address = u .. "@example.test" }
    end
    IMPLICIT, NOTLS = server.free_port(), server.free_port()
    local plain = server.free_port()
    srv = server.start { config = {
      tls = { cert = pki.cert, key = pki.key },
      server = { listen = { "127.0.0.1:" .. plain, { "127.0.0.1:" .. IMPLICIT, tls = "implicit" },
                            { "127.0.0.1:" .. NOTLS, tls = "none" } } },
      directory = { users = users },
    } }
    px = certs.proxy(srv.port, "starttls")
    ipx = certs.proxy(IMPLICIT, "implicit")
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if px then px:stop() end
    if ipx then ipx:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  local function keep(c)
    clients[#clients + 1] = c
    return c
  end

  -- clear(port) -> a client in the clear that has read the greeting and said EHLO
  local function clear(port)
    return keep(smtp.session("127.0.0.1", port or srv.port))
  end

  -- tls(proxy) -> a client under TLS (through the proxy) that has said EHLO again
  local function tls(p)
    return keep(certs.session(p or px))
  end

  local function has_line(lines, text)
    for _, l in ipairs(lines) do
      if l:sub(5) == text then return true end
    end
    return false
  end

  describe("EHLO and STARTTLS", function()
    it("lists STARTTLS and not AUTH in the EHLO reply before TLS", function()
      local c = keep(assert(smtp.connect("127.0.0.1", srv.port)))
      c:read_reply()
      local code, lines = c:cmd("EHLO client.test")
      assert.equal(250, code)
      assert.is_true(has_line(lines, "STARTTLS"), lines.text)
      assert.is_nil(lines.text:find("AUTH", 1, true), lines.text)
    end)

    it("lists AUTH PLAIN LOGIN and not STARTTLS in the EHLO reply under TLS", function()
      local c = keep(assert(smtp.connect("127.0.0.1", px.port)))
      c:greet()
      assert.equal(220, (c:cmd("STARTTLS")))
      local code, lines = c:cmd("EHLO client.test")
      assert.equal(250, code)
      assert.is_true(has_line(lines, "AUTH PLAIN LOGIN"), lines.text)
      assert.is_nil(lines.text:find("STARTTLS", 1, true), lines.text)
    end)

    it("answers STARTTLS with 220 2.0.0 and logs the handshake with the protocol version and cipher", function()
      local mark = srv:log_mark()
      local c = keep(assert(smtp.connect("127.0.0.1", px.port)))
      c:greet()
      local code, lines = c:cmd("STARTTLS")
      assert.equal(220, code)
      assert.equal("220 2.0.0 Ready to start TLS", lines[1])
      assert.equal(250, (c:cmd("NOOP")))
      assert.truthy(srv:wait_log("TLS connection established from unknown%[127%.0%.0%.1%]: TLSv1%.2 TLS%-ECDHE%-", 3,
        mark),
        srv:log():sub(mark + 1))
      assert.truthy(px:log():find("tls TLSv1.2 ECDHE-", 1, true), px:log())
    end)

    it("answers a second STARTTLS under TLS with 554 5.5.1 Error: TLS already active", function()
      local c = tls()
      local code, lines = c:cmd("STARTTLS")
      assert.equal(554, code)
      assert.equal("554 5.5.1 Error: TLS already active", lines[1])
      assert.equal(250, (c:cmd("NOOP")), "the session goes on under TLS")
    end)

    it("answers STARTTLS with an argument with 501 5.5.4 and stays in the clear", function()
      local c = clear()
      local code, lines = c:cmd("STARTTLS now")
      assert.equal(501, code)
      assert.equal("501 5.5.4 Syntax: STARTTLS", lines[1])
      code, lines = c:cmd("NOOP")
      assert.equal(250, code, "a cleartext command still works")
      assert.equal("250 2.0.0 Ok", lines[1])
    end)

    it("closes the connection when the client answers 220 with something other than a TLS handshake", function()
      local mark = srv:log_mark()
      local c = clear()
      assert.equal(220, (c:cmd("STARTTLS")))
      c:send("EHLO not-tls.test\r\n")
      local closed = c:expect_closed(3)
      assert.truthy(srv:wait_log("SSL_accept error from unknown[127.0.0.1]: TLS handshake failed: ", 2, mark, true),
        srv:log():sub(mark + 1))
      assert.is_true(closed, "the connection is still open 3 s after the handshake failed")
    end)

    it("offers no STARTTLS on a listener with tls = \"none\" and answers it with 502 5.5.1", function()
      local c = clear(NOTLS)
      local _, lines = c:cmd("EHLO client.test")
      assert.is_nil(lines.text:find("STARTTLS", 1, true), lines.text)
      local code
      code, lines = c:cmd("STARTTLS")
      assert.equal(502, code)
      assert.equal("502 5.5.1 Error: STARTTLS is not offered here", lines[1])
    end)
  end)

  describe("after STARTTLS the session starts over", function()
    it("answers MAIL without a new EHLO with 503 5.5.1", function()
      local c = keep(assert(smtp.connect("127.0.0.1", px.port)))
      c:greet()
      assert.equal(220, (c:cmd("STARTTLS")))
      local code, lines = c:cmd("MAIL FROM:<someone@example.org>")
      assert.equal(503, code)
      assert.equal("503 5.5.1 Error: send HELO/EHLO first", lines[1])
    end)

    it("forgets a transaction begun in the clear: RCPT under TLS gets 503 5.5.1 need MAIL", function()
      local c = keep(assert(smtp.connect("127.0.0.1", px.port)))
      c:greet()
      assert.equal(250, (c:cmd("MAIL FROM:<someone@example.org>")))
      assert.equal(220, (c:cmd("STARTTLS")))
      assert.equal(250, (c:cmd("EHLO client.test")))
      local code, lines = c:cmd("RCPT TO:<jdoe@example.test>")
      assert.equal(503, code)
      assert.equal("503 5.5.1 Error: need MAIL command", lines[1])
    end)
  end)

  describe("commands pipelined in the clear after STARTTLS (CVE-2011-0411)", function()
    it("does not run \"STARTTLS\\r\\nMAIL FROM:<evil@x.test>\\r\\n\" sent in one packet, and logs the discarded octets",
      function()
      local mark = srv:log_mark()
      local c = keep(assert(smtp.connect("127.0.0.1", px.port)))
      c:greet()
      local injected = "MAIL FROM:<evil@x.test>\r\n"
      assert(c:send("STARTTLS\r\n" .. injected))
      local code, lines = c:read_reply()
      assert.equal(220, code)
      assert.equal("220 2.0.0 Ready to start TLS", lines[1])
      -- no reply to the injected MAIL, in the clear or under TLS
      assert.same({ nil, "timeout" }, { c:read_reply(0.5) })
      code, lines = c:cmd("NOOP")
      assert.equal(250, code, "the first reply under TLS answers the first command sent under TLS")
      assert.equal("250 2.0.0 Ok", lines[1])
      code, lines = c:cmd("MAIL FROM:<a@example.org>")
      assert.equal(503, code, "MAIL under TLS before EHLO: the EHLO from the clear no longer counts")
      assert.equal("503 5.5.1 Error: send HELO/EHLO first", lines[1])
      assert.equal(250, (c:cmd("EHLO client.test")))
      code, lines = c:cmd("RCPT TO:<injected@example.test>")
      assert.equal(503, code, "no transaction was opened by the injected MAIL")
      assert.equal("503 5.5.1 Error: need MAIL command", lines[1])
      assert.truthy(srv:wait_log("unknown[127.0.0.1]: discarded " .. #injected
        .. " octets sent after STARTTLS before TLS", 2, mark, true), srv:log():sub(mark + 1))
      assert.is_nil(srv:log():sub(mark + 1):find("evil@x.test", 1, true))
    end)
  end)

  describe("an implicit-TLS listener (tls = \"implicit\")", function()
    it("greets a TLS client (Python's ssl) with 220 over TLS, with the configured certificate", function()
      local r = certs.peer(IMPLICIT)
      assert.is_true(r.ok, r.raw)
      assert.equal("220 mx.example.test ESMTP luamta", r.greeting)
      assert.equal("TLSv1.2", r.version)
      assert.equal(certs.fingerprint(pki.cert), r.fingerprint)
    end)

    it("shows openssl s_client -connect the certificate and then the greeting", function()
      local out = certs.s_client(IMPLICIT)   -- its exit code is about close_notify: see the test below
      assert.truthy(out:find("subject=CN = mx.example.test", 1, true), out)
      assert.truthy(out:find("Protocol  : TLSv1.2", 1, true), out)
      assert.truthy(out:find("\n220 mx.example.test ESMTP luamta", 1, true), out)
      assert.truthy(out:find("\n221 ", 1, true), out)
    end)

    it("ends a session after QUIT with a TLS close_notify alert, not a bare TCP close (RFC 5246 7.2.1)", function()
      local out = certs.python(CLOSE_NOTIFY, { tostring(IMPLICIT) })
      local r = certs.fields(out)
      assert.equal("221 2.0.0 Bye", r.quit, out)
      assert.equal("close_notify", r["end"], out)
    end)

    it("says nothing in the clear, and a cleartext EHLO ends the connection with a failed handshake", function()
      local mark = srv:log_mark()
      local c = keep(assert(smtp.connect("127.0.0.1", IMPLICIT)))
      assert.same({ nil, "timeout" }, { c:read_reply(0.7) })
      c:send("EHLO client.test\r\n")
      local closed, extra = c:expect_closed(3)
      assert.is_true(closed, "the connection is still open 3 s after the handshake failed")
      for _, l in ipairs(extra) do assert.is_nil(l:match("^%d%d%d[ -]"), "a cleartext reply: " .. l) end
      assert.truthy(srv:wait_log("TLS handshake failed", 2, mark, true), srv:log():sub(mark + 1))
    end)

    it("lists AUTH and not STARTTLS, and answers STARTTLS with 554 5.5.1", function()
      local c = tls(ipx)
      local code, lines = c:cmd("EHLO client.test")
      assert.equal(250, code)
      assert.is_true(has_line(lines, "AUTH PLAIN LOGIN"), lines.text)
      assert.is_nil(lines.text:find("STARTTLS", 1, true), lines.text)
      code, lines = c:cmd("STARTTLS")
      assert.equal("554 5.5.1 Error: TLS already active", lines[1])
    end)

    it("delivers a message taken over implicit TLS, with ESMTPS and the cipher in Received", function()
      local c = tls(ipx)
      local code, lines = smtp.send_mail(c, "someone@example.org", "implicit@example.test",
        smtp.message({ "Subject: implicit" }, "over port 465 style\r\n"))
      assert.equal(250, code, lines and lines.text)
      local files = srv:wait_maildir("implicit")
      assert.equal(1, #files)
      local r = received(files[1].content)
      assert.truthy(r:find("(using TLSv1.2 TLS-ECDHE-", 1, true), r)
      assert.truthy(r:find(" with ESMTPS id " .. queue_id(lines[1]), 1, true), r)
    end)
  end)

  describe("key exchange", function()
    it("chooses X25519 for a client that offers it, not the dearer secp521r1 mbedTLS 2.28 puts first", function()
      local p = io.popen("echo QUIT | timeout 5 openssl s_client -starttls smtp -tls1_2 -connect 127.0.0.1:"
        .. srv.port .. " 2>&1")
      local out = p:read("a")
      p:close()
      assert.truthy(out:find("Server Temp Key: X25519", 1, true), out)
    end)
  end)

  describe("clients that hang up in the handshake", function()
    it("survive: a worker is not hurt by clients that reject the certificate and close (testssl.sh does this)",
      function()
      local mark = srv:log_mark()
      for _ = 1, 8 do
        for _, args in ipairs { "-starttls smtp -connect 127.0.0.1:" .. srv.port, "-connect 127.0.0.1:" .. IMPLICIT } do
          local p = io.popen("echo QUIT | timeout 5 openssl s_client -verify_return_error " .. args .. " 2>&1")
          p:read("a")
          p:close()
        end
      end
      local log = srv:log():sub(mark + 1)
      assert.is_nil(log:find("died", 1, true), log)
      -- and the same worker still takes mail
      local c = keep(assert(smtp.connect(srv.host, srv.port)))
      assert.equal(220, (c:read_reply()))
      assert.equal(250, (c:cmd("EHLO after.test")))
      c:close()
    end)
  end)

  describe("real clients", function()
    it("swaks --tls delivers over STARTTLS, and the message says ESMTPS and the TLS version", function()
      local out, rc = certs.swaks { "--server", "127.0.0.1:" .. srv.port, "--tls", "--helo", "swaks.test",
                                    "--from", "someone@example.org", "--to", "swaks@example.test",
                                    "--header", "Subject: swaks over TLS" }
      assert.equal(0, rc, out)
      assert.truthy(out:find("<-  250 STARTTLS", 1, true), out)
      assert.truthy(out:find("<-  220 2.0.0 Ready to start TLS", 1, true), out)
      assert.truthy(out:find("=== TLS started with cipher TLSv1.2:", 1, true), out)
      local id = out:match("<~  250 2%.0%.0 Ok: queued as (%x+)")
      assert.truthy(id, out)
      local files = srv:wait_maildir("swaks")
      assert.equal(1, #files)
      local r = received(files[1].content)
      assert.truthy(r:find("from swaks.test ([127.0.0.1]) (using TLSv1.", 1, true), r)
      assert.truthy(r:find(" with ESMTPS id " .. id, 1, true), r)
    end)

    it("swaks --tls --auth LOGIN authenticates and delivers with ESMTPSA", function()
      local out, rc = certs.swaks { "--server", "127.0.0.1:" .. srv.port, "--tls", "--helo", "swaks.test",
                                    "--from", "jdoe@example.test", "--to", "swaksauth@example.test",
                                    "--auth", "LOGIN", "--auth-user", "jdoe@example.test",
                                    "--auth-password", PASSWORD }
      assert.equal(0, rc, out)
      assert.truthy(out:find("<~  250 AUTH PLAIN LOGIN", 1, true), out)
      assert.truthy(out:find("<~  235 2.7.0 Authentication successful", 1, true), out)
      local id = out:match("<~  250 2%.0%.0 Ok: queued as (%x+)")
      assert.truthy(id, out)
      local files = srv:wait_maildir("swaksauth")
      assert.equal(1, #files)
      local r = received(files[1].content)
      assert.truthy(r:find("(using TLSv1.", 1, true), r)
      assert.truthy(r:find(" with ESMTPSA id " .. id, 1, true), r)
    end)

    -- SMTPLIB: starttls() or SMTP_SSL, login(), sendmail(); prints what each step answered.
    local SMTPLIB = [==[
import smtplib, ssl, sys
port, (mode, user, password, sender, rcpt) = int(sys.argv[1]), sys.argv[2:7]
def out(k, v):
    print("%s\t%s" % (k, str(v).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
class Recording:
    def data(self, msg):
        r = super().data(msg)
        out("data", "%d %s" % (r[0], r[1].decode()))
        return r
class C(Recording, smtplib.SMTP): pass
class S(Recording, smtplib.SMTP_SSL): pass
try:
    s = S("127.0.0.1", port, context=ctx, timeout=10) if mode == "implicit" else C("127.0.0.1", port, timeout=10)
    s.ehlo("smtplib.test")
    out("features", " ".join(sorted(s.esmtp_features)))
    if mode == "starttls":
        code, msg = s.starttls(context=ctx)
        out("starttls", "%d %s" % (code, msg.decode()))
        out("cipher", s.sock.version())
        s.ehlo("smtplib.test")
        out("features_tls", " ".join(sorted(s.esmtp_features)))
    code, msg = s.login(user, password)
    out("login", "%d %s" % (code, msg.decode()))
    refused = s.sendmail(sender, [rcpt], "From: <%s>\r\nSubject: smtplib\r\n\r\nfrom Python\r\n" % sender)
    out("refused", len(refused))
    s.quit()
    out("ok", "True")
except Exception as e:
    out("error", type(e).__name__ + ": " + str(e))
]==]

    it("Python's smtplib starttls(), login() and sendmail() deliver with ESMTPSA", function()
      local out = certs.python(SMTPLIB, { tostring(srv.port), "starttls", "jdoe@example.test", PASSWORD,
                                          "jdoe@example.test", "smtplib@example.test" })
      local r = certs.fields(out)
      assert.equal("True", r.ok, out)
      assert.truthy(r.features:find("starttls", 1, true), out)
      assert.is_nil(r.features:find("auth", 1, true), out)
      assert.equal("220 2.0.0 Ready to start TLS", r.starttls)
      assert.equal("TLSv1.2", r.cipher)
      assert.truthy(r.features_tls:find("auth", 1, true), out)
      assert.equal("235 2.7.0 Authentication successful", r.login)
      assert.equal("0", r.refused)
      local id = queue_id(r.data)
      assert.truthy(id, out)
      local files = srv:wait_maildir("smtplib")
      assert.equal(1, #files)
      local h = received(files[1].content)
      assert.truthy(h:find("from smtplib.test ([127.0.0.1]) (using TLSv1.2 ", 1, true), h)
      assert.truthy(h:find(" with ESMTPSA id " .. id, 1, true), h)
    end)

    it("Python's smtplib.SMTP_SSL on the implicit-TLS port logs in and delivers with ESMTPSA", function()
      local out = certs.python(SMTPLIB, { tostring(IMPLICIT), "implicit", "john@example.test", PASSWORD,
                                          "john@example.test", "smtpssl@example.test" })
      local r = certs.fields(out)
      assert.equal("True", r.ok, out)
      assert.equal("235 2.7.0 Authentication successful", r.login)
      local id = queue_id(r.data)
      assert.truthy(id, out)
      local files = srv:wait_maildir("smtpssl")
      assert.equal(1, #files)
      assert.truthy(received(files[1].content):find(" with ESMTPSA id " .. id, 1, true), files[1].content)
    end)

    it("openssl s_client -starttls smtp gets the certificate the server is configured with", function()
      local out = certs.s_client(srv.port, { starttls = true })
      local pem = out:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
      assert.truthy(pem, out)
      assert.equal(certs.fingerprint(pki.cert), certs.fingerprint_pem(pem))
    end)
  end)
end)

describe("a TLS handshake that stalls (server.timeouts.command = 2, one worker)", function()
  local pki, srv, IMPLICIT
  local TIMEOUT = 2
  local clients = {}

  setup(function()
    pki = certs.new { expired = false }
    IMPLICIT = server.free_port()
    srv = server.start { config = {
      tls = { cert = pki.cert, key = pki.key },
      server = { listen = { "127.0.0.1:" .. server.free_port(), { "127.0.0.1:" .. IMPLICIT, tls = "implicit" } },
                 workers = 1, timeouts = { command = TIMEOUT, data = TIMEOUT } },
    } }
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  -- transaction_time() -> seconds a whole transaction in the clear takes on the same worker
  local function transaction_time()
    local t0 = socket.gettime()
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    clients[#clients + 1] = c
    c:greet()
    local code, lines = smtp.send_mail(c, "someone@example.org", "jdoe@example.test",
      smtp.message({ "Subject: while a handshake stalls" }, "hello\r\n"))
    assert.equal(250, code, lines and lines.text)
    c:cmd("QUIT")
    return socket.gettime() - t0
  end

  -- assert_closed_by_timeout(c, t0, mark): the server hangs up about TIMEOUT seconds after t0, and logs the timeout
  local function assert_closed_by_timeout(c, t0, mark)
    local closed = c:expect_closed(TIMEOUT + 2 - (socket.gettime() - t0))
    local waited = socket.gettime() - t0
    assert.is_true(closed, string.format("still open %.1f s after the client went silent (timeouts.command = %d)",
      waited, TIMEOUT))
    assert.is_true(waited >= TIMEOUT - 0.3, string.format("closed after %.2f s", waited))
    assert.truthy(srv:wait_log("timeout from unknown[127.0.0.1] in state", 1, mark, true), srv:log():sub(mark + 1))
  end

  it("closes a connection to the implicit-TLS port that never sends a ClientHello, and serves others meanwhile",
    function()
    local mark = srv:log_mark()
    local t0 = socket.gettime()
    local c = assert(smtp.connect("127.0.0.1", IMPLICIT))
    clients[#clients + 1] = c
    assert.is_true(transaction_time() < 1.5, "a transaction in the clear waited for the stalled handshake")
    assert_closed_by_timeout(c, t0, mark)
  end)

  it("closes a connection that sends STARTTLS and then nothing, and serves others meanwhile", function()
    local mark = srv:log_mark()
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    clients[#clients + 1] = c
    c:greet()
    assert.equal(220, (c:cmd("STARTTLS")))
    local t0 = socket.gettime()
    assert.is_true(transaction_time() < 1.5, "a transaction in the clear waited for the stalled handshake")
    assert_closed_by_timeout(c, t0, mark)
  end)
end)
