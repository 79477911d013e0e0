-- t/integration/tls_auth_spec.lua - SMTP AUTH (SPEC sections 3 and 8): PLAIN and LOGIN only under TLS, the replies
-- to each step and to hostile or out-of-order AUTH commands, the growing delay after failures, the submission
-- listener (AUTH before MAIL, a user sends only as its own addresses) and inbound.relay.authenticated. Dialogues
-- under TLS go through t/helpers/certs.lua's proxy; a test whose AUTH fails connects from its own 127.0.0.x, since
-- the server counts failures per client address.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"
local socket = require "socket"
local mime = require "mime"

local PASSWORD = "Tr0ub4dor&3-spec"
local MARY_PASSWORD = "correct horse battery staple"
local FAILED = "535 5.7.8 Error: authentication failed"
local RELAY_REJECTED = "554 5.7.1 Relay rejected for policy reasons."

local function b64(s) return (mime.b64(s)) end
local function plain(user, password, authz) return b64((authz or "") .. "\0" .. user .. "\0" .. password) end

-- a test world: one server with a STARTTLS listener and a submission listener, and proxies made on demand
local function world(over)
  local w = { clients = {}, proxies = {} }
  w.pki = certs.new { expired = false }
  w.SUB = server.free_port()
  local plain_port = server.free_port()
  w.srv = server.start { config = server.merge({
    tls = { cert = w.pki.cert, key = w.pki.key },
    server = { listen = { "127.0.0.1:" .. plain_port, { "127.0.0.1:" .. w.SUB, submission = true } } },
    directory = { users = {
      { address = "postmaster@example.test" },
      { address = "jdoe@example.test", name = "John Doe", aliases = { "john@example.test" },
        password = certs.crypt(PASSWORD) },
      { address = "mary@example.test", password = certs.crypt(MARY_PASSWORD, "marysalt") },
      { address = "nopass@example.test" },
    } },
    inbound = { relay = { enforce = "all" } },
  }, over or {}) }
  -- proxy(port, ip) -> a STARTTLS proxy to port that connects from ip (default 127.0.0.1)
  function w.proxy(port, ip)
    local key = (port or w.srv.port) .. "/" .. (ip or "127.0.0.1")
    if not w.proxies[key] then w.proxies[key] = certs.proxy(port or w.srv.port, "starttls", { bind = ip }) end
    return w.proxies[key]
  end
  -- tls(opts) -> a client under TLS that has said EHLO again; opts.port (default the STARTTLS listener), opts.ip
  function w.tls(opts)
    opts = opts or {}
    local c = certs.session(w.proxy(opts.port, opts.ip))
    w.clients[#w.clients + 1] = c
    return c
  end
  -- clear(port) -> a client in the clear that has said EHLO
  function w.clear(port)
    local c = smtp.session("127.0.0.1", port or w.srv.port)
    w.clients[#w.clients + 1] = c
    return c
  end
  -- login(c, user, password) -> asserts 235 for AUTH PLAIN
  function w.login(c, user, password)
    local code, lines = c:cmd("AUTH PLAIN " .. plain(user, password))
    assert(code == 235, "AUTH PLAIN " .. user .. ": " .. tostring(lines and lines.text or lines))
  end
  function w.cleanup()
    for _, c in ipairs(w.clients) do c:close() end
    for _, p in pairs(w.proxies) do p:stop() end
    if w.srv then w.srv:cleanup() end
    if w.pki then w.pki:cleanup() end
  end
  return w
end

-- timed(c, line) -> code, lines, seconds until the reply
local function timed(c, line)
  local t0 = socket.gettime()
  local code, lines = c:cmd(line, 15)
  return code, lines, socket.gettime() - t0
end

describe("SMTP AUTH", function()
  local w

  setup(function() w = world() end)
  teardown(function() if w then w.cleanup() end end)

  describe("PLAIN and LOGIN under TLS", function()
    it("accepts AUTH PLAIN with an initial response with 235 2.7.0 and logs sasl_username=", function()
      local mark = w.srv:log_mark()
      local c = w.tls()
      local code, lines = c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))
      assert.equal(235, code)
      assert.equal("235 2.7.0 Authentication successful", lines[1])
      assert.truthy(w.srv:wait_log("unknown[127.0.0.1]: AUTH sasl_method=PLAIN, sasl_username=jdoe@example.test", 2,
        mark, true))
    end)

    it("accepts AUTH PLAIN with the response after an empty 334 challenge", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH PLAIN")
      assert.equal(334, code)
      assert.equal("334 ", lines[1])
      code, lines = c:cmd(plain("mary@example.test", MARY_PASSWORD))
      assert.equal(235, code)
      assert.equal("235 2.7.0 Authentication successful", lines[1])
    end)

    it("accepts AUTH LOGIN with the Username: and Password: challenges", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH LOGIN")
      assert.equal("334 VXNlcm5hbWU6", lines[1])
      code, lines = c:cmd(b64("jdoe@example.test"))
      assert.equal(334, code)
      assert.equal("334 UGFzc3dvcmQ6", lines[1])
      code, lines = c:cmd(b64(PASSWORD))
      assert.equal(235, code)
      assert.equal("235 2.7.0 Authentication successful", lines[1])
    end)

    it("accepts AUTH LOGIN with the user name as initial response, asking only for the password", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH LOGIN " .. b64("mary@example.test"))
      assert.equal(334, code)
      assert.equal("334 UGFzc3dvcmQ6", lines[1])
      assert.equal(235, (c:cmd(b64(MARY_PASSWORD))))
    end)

    it("accepts a login with an alias and knows the user by its primary address", function()
      local mark = w.srv:log_mark()
      local c = w.tls()
      assert.equal(235, (c:cmd("AUTH PLAIN " .. plain("john@example.test", PASSWORD))))
      assert.truthy(w.srv:wait_log("AUTH sasl_method=PLAIN, sasl_username=jdoe@example.test", 2, mark, true),
        w.srv:log():sub(mark + 1))
    end)

    it("never writes a password or an AUTH response to the log", function()
      local mark = w.srv:log_mark()
      local c = w.tls()
      assert.equal(235, (c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))))
      c = w.tls()
      c:cmd("AUTH LOGIN")
      c:cmd(b64("mary@example.test"))
      assert.equal(235, (c:cmd(b64(MARY_PASSWORD))))
      c = w.tls { ip = "127.0.0.31" }
      assert.equal(535, (c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", "not-" .. PASSWORD), 10)))
      assert.truthy(w.srv:wait_log("SASL PLAIN authentication failed: authentication failure, "
        .. "sasl_username=jdoe@example.test", 2, mark, true))
      local log = w.srv:log():sub(mark + 1)
      assert.truthy(log:find("AUTH sasl_method=LOGIN, sasl_username=mary@example.test", 1, true), log)
      for _, secret in ipairs { PASSWORD, MARY_PASSWORD, b64(PASSWORD), b64(MARY_PASSWORD),
                                plain("jdoe@example.test", PASSWORD), "not-" .. PASSWORD } do
        assert.is_nil(log:find(secret, 1, true), "the log shows " .. secret)
      end
    end)
  end)

  describe("failures", function()
    it("answers a wrong password with 535 5.7.8, and the second failure later than the first", function()
      local mark = w.srv:log_mark()
      local c = w.tls { ip = "127.0.0.21" }
      local code1, lines1, t1 = timed(c, "AUTH PLAIN " .. plain("jdoe@example.test", "wrong"))
      assert.equal(535, code1)
      assert.equal(FAILED, lines1[1])
      local code2, lines2, t2 = timed(c, "AUTH PLAIN " .. plain("jdoe@example.test", "wrong again"))
      assert.equal(535, code2)
      assert.equal(FAILED, lines2[1])
      assert.is_true(t1 >= 0.2, string.format("the first failure was answered after %.2f s", t1))
      assert.is_true(t2 >= 0.45 and t2 > t1,
        string.format("the failures were answered after %.2f s, then %.2f s", t1, t2))
      assert.truthy(w.srv:wait_log("warning: unknown[127.0.0.21]: SASL PLAIN authentication failed: "
        .. "authentication failure, sasl_username=jdoe@example.test, session=", 2, mark, true),
        w.srv:log():sub(mark + 1))
      assert.truthy(w.srv:wait_log("(failure 1 from this address; answer in 0.25 s)", 2, mark, true),
        w.srv:log():sub(mark + 1))
      assert.truthy(w.srv:wait_log("(failure 2 from this address; answer in 0.50 s)", 2, mark, true))
      assert.equal(250, (c:cmd("NOOP")), "the session goes on")
    end)

    it("answers an unknown user with the same 535 5.7.8 as a wrong password", function()
      local c = w.tls { ip = "127.0.0.22" }
      local code, lines = c:cmd("AUTH PLAIN " .. plain("nobody@example.test", PASSWORD), 10)
      assert.equal(535, code)
      assert.equal(FAILED, lines[1])
    end)

    it("answers a directory user without a password with 535 5.7.8", function()
      local c = w.tls { ip = "127.0.0.23" }
      local code, lines = c:cmd("AUTH PLAIN " .. plain("nopass@example.test", ""), 10)
      assert.equal(535, code)
      assert.equal(FAILED, lines[1])
    end)

    it("answers AUTH LOGIN with a wrong password with 535 5.7.8", function()
      local c = w.tls { ip = "127.0.0.24" }
      c:cmd("AUTH LOGIN")
      c:cmd(b64("mary@example.test"))
      local code, lines = c:cmd(b64(PASSWORD), 10)
      assert.equal(535, code)
      assert.equal(FAILED, lines[1])
    end)

    it("answers AUTH in the clear with 530 5.7.0 Must issue a STARTTLS command first, and checks nothing", function()
      local mark = w.srv:log_mark()
      local c = w.clear()
      local code, lines = c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))
      assert.equal(530, code)
      assert.equal("530 5.7.0 Must issue a STARTTLS command first", lines[1])
      code, lines = c:cmd("AUTH LOGIN")
      assert.equal("530 5.7.0 Must issue a STARTTLS command first", lines[1])
      socket.sleep(0.2)
      assert.is_nil(w.srv:log():sub(mark + 1):find("AUTH", 1, true))
      assert.is_nil(w.srv:log():sub(mark + 1):find("authentication failed", 1, true))
    end)

    it("aborts AUTH PLAIN and AUTH LOGIN on \"*\" with 501 5.7.0, and AUTH works afterwards", function()
      local c = w.tls()
      assert.equal(334, (c:cmd("AUTH PLAIN")))
      local code, lines = c:cmd("*")
      assert.equal(501, code)
      assert.equal("501 5.7.0 Authentication aborted", lines[1])
      assert.equal(334, (c:cmd("AUTH LOGIN")))
      assert.equal(334, (c:cmd(b64("jdoe@example.test"))))
      code, lines = c:cmd("*")
      assert.equal("501 5.7.0 Authentication aborted", lines[1])
      assert.equal(235, (c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))))
    end)

    it("answers a second AUTH with 503 5.5.1 Error: already authenticated", function()
      local c = w.tls()
      w.login(c, "jdoe@example.test", PASSWORD)
      local code, lines = c:cmd("AUTH PLAIN " .. plain("mary@example.test", MARY_PASSWORD))
      assert.equal(503, code)
      assert.equal("503 5.5.1 Error: already authenticated", lines[1])
    end)

    it("answers AUTH inside a transaction with 503 5.5.1", function()
      local c = w.tls()
      assert.equal(250, (c:cmd("MAIL FROM:<someone@example.org>")))
      local code, lines = c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))
      assert.equal(503, code)
      assert.equal("503 5.5.1 Error: bad sequence of commands", lines[1])
      assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")), "the transaction goes on")
    end)

    it("answers an unknown mechanism with 504 5.5.4", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH CRAM-MD5")
      assert.equal(504, code)
      assert.equal("504 5.5.4 Error: unsupported authentication mechanism", lines[1])
    end)

    it("answers a response that is not base64 with 501 5.5.2", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH PLAIN !!not-base64!!")
      assert.equal(501, code)
      assert.equal("501 5.5.2 Error: cannot decode the AUTH response", lines[1])
    end)

    it("answers AUTH PLAIN for another authorization identity with 501 5.5.2", function()
      local c = w.tls()
      local code, lines = c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD, "mary@example.test"))
      assert.equal(501, code)
      assert.equal("501 5.5.2 Error: malformed AUTH PLAIN response", lines[1])
    end)
  end)

  describe("the submission listener (submission = true)", function()
    it("answers MAIL before AUTH with 530 5.7.0 Authentication required, in the clear and under TLS", function()
      local c = w.clear(w.SUB)
      local code, lines = c:cmd("MAIL FROM:<jdoe@example.test>")
      assert.equal(530, code)
      assert.equal("530 5.7.0 Authentication required", lines[1])
      c = w.tls { port = w.SUB }
      code, lines = c:cmd("MAIL FROM:<jdoe@example.test>")
      assert.equal(530, code)
      assert.equal("530 5.7.0 Authentication required", lines[1])
    end)

    it("takes mail from an authenticated user's own address and delivers it with ESMTPSA", function()
      local c = w.tls { port = w.SUB }
      w.login(c, "jdoe@example.test", PASSWORD)
      local code, lines = smtp.send_mail(c, "jdoe@example.test", "mary@example.test",
        smtp.message({ "From: <jdoe@example.test>", "Subject: submitted" }, "from the submission port\r\n"))
      assert.equal(250, code, lines and lines.text)
      local files = w.srv:wait_maildir("mary")
      assert.equal(1, #files)
      assert.truthy(files[1].content:find("with ESMTPSA id " .. lines[1]:match("queued as (%x+)"), 1, true),
        files[1].content)
    end)

    it("takes mail from an alias of the authenticated user", function()
      local c = w.tls { port = w.SUB }
      w.login(c, "jdoe@example.test", PASSWORD)
      local code, lines = c:cmd("MAIL FROM:<john@example.test>")
      assert.equal(250, code, lines and lines.text)
    end)

    it("refuses another user's address with 553 5.7.1 ... not owned by user", function()
      local c = w.tls { port = w.SUB }
      w.login(c, "john@example.test", PASSWORD)
      local code, lines = c:cmd("MAIL FROM:<mary@example.test>")
      assert.equal(553, code)
      assert.equal("553 5.7.1 <mary@example.test>: Sender address rejected: not owned by user jdoe@example.test",
        lines[1])
      code, lines = c:cmd("MAIL FROM:<someone@example.org>")
      assert.equal(553, code)
      assert.equal("553 5.7.1 <someone@example.org>: Sender address rejected: not owned by user jdoe@example.test",
        lines[1])
    end)

    it("does not restrict the sender of an authenticated user on a listener without submission", function()
      local c = w.tls()
      w.login(c, "jdoe@example.test", PASSWORD)
      assert.equal(250, (c:cmd("MAIL FROM:<mary@example.test>")))
    end)
  end)

  describe("inbound.relay.authenticated = \"allow\" (enforce = \"all\")", function()
    it("lets an authenticated client relay to an external domain", function()
      local c = w.tls()
      w.login(c, "jdoe@example.test", PASSWORD)
      assert.equal(250, (c:cmd("MAIL FROM:<jdoe@example.test>")))
      local code, lines = c:cmd("RCPT TO:<x@far.test>")
      assert.equal(250, code, lines and lines.text)
      c:cmd("RSET")
    end)

    it("refuses relaying for an unauthenticated client, under TLS too, with 554 5.7.1", function()
      local c = w.tls()
      assert.equal(250, (c:cmd("MAIL FROM:<jdoe@example.test>")))
      local code, lines = c:cmd("RCPT TO:<x@far.test>")
      assert.equal(554, code)
      assert.equal(RELAY_REJECTED, lines[1])
    end)
  end)
end)

describe("SMTP AUTH with inbound.relay.authenticated = \"check\"", function()
  local w

  setup(function() w = world { inbound = { relay = { enforce = "all", authenticated = "check" } } } end)
  teardown(function() if w then w.cleanup() end end)

  it("refuses relaying for an authenticated client too, with 554 5.7.1", function()
    local c = w.tls()
    w.login(c, "jdoe@example.test", PASSWORD)
    assert.equal(250, (c:cmd("MAIL FROM:<jdoe@example.test>")))
    local code, lines = c:cmd("RCPT TO:<x@far.test>")
    assert.equal(554, code)
    assert.equal(RELAY_REJECTED, lines[1])
    assert.equal(250, (c:cmd("RCPT TO:<mary@example.test>")), "a local recipient is still fine")
  end)
end)

describe("SMTP AUTH on a server without a certificate", function()
  local srv

  setup(function()
    srv = server.start { config = { directory = { users = {
      { address = "jdoe@example.test", password = certs.crypt(PASSWORD) } } } } }
  end)
  teardown(function() if srv then srv:cleanup() end end)

  it("lists neither STARTTLS nor AUTH, and answers AUTH with 503 5.5.1 Error: authentication not enabled", function()
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    c:read_reply()
    local _, lines = c:cmd("EHLO client.test")
    assert.is_nil(lines.text:find("STARTTLS", 1, true), lines.text)
    assert.is_nil(lines.text:find("AUTH", 1, true), lines.text)
    local code
    code, lines = c:cmd("AUTH PLAIN " .. plain("jdoe@example.test", PASSWORD))
    assert.equal(503, code)
    assert.equal("503 5.5.1 Error: authentication not enabled", lines[1])
    c:close()
  end)
end)
