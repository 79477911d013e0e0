-- t/integration/dkim_sign_spec.lua - the bundled dkim_sign rule (docs/dkim.md): mail that an authenticated user
-- submits, or that comes through sendmail, with a From: domain in dkim.sign reaches the next hop (Postfix's
-- smtp-sink) with a DKIM-Signature as its first header, and an independent verifier (dkimpy, Debian python3-dkim,
-- with a DNS function that answers the selector's TXT record with the test's public key) accepts it, also with
-- long folded headers and trailing white space and blank lines; the same message with its body changed fails
-- (so the check can fail). Unauthenticated mail and a From: domain without a key are not signed. luamta check
-- names a key that cannot be read, or is no key, with its file:line. The RSA signature is made off the event loop
-- (docs/rules.md): while a dozen messages are signed with a 4096-bit key, another session's NOOP is answered long
-- before the last of them, and every signature still verifies; from a coroutine the rule made (which cannot wait)
-- msg:dkim_sign gives nil and why.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local sink = require "t.helpers.sink"
local certs = require "t.helpers.certs"
local mime = require "mime"
local socket = require "socket"

local PYTHON = os.getenv("LUAMTA_DKIM_PYTHON") or "/usr/bin/python3"   -- Debian's, where python3-dkim lives
local PASSWORD = "dkim-spec-Secret-1"

-- The verifier: argv[1] the message file, argv[2] the public key (base64 DER), argv[3] the TXT name it answers.
local VERIFY = [[
import sys, dkim
msg = open(sys.argv[1], "rb").read()
want = sys.argv[3].encode()
asked = []
def txt(name, timeout=5):
    asked.append(name)
    if name.rstrip(b".") == want:
        return b"v=DKIM1; k=rsa; p=" + sys.argv[2].encode()
    return None
ok = dkim.verify(msg, dnsfunc=txt)
print("verify=" + ("pass" if ok else "fail"), "asked=" + b",".join(asked).decode())
]]

local function need_dkimpy()
  local out, rc = server.run("timeout 10 " .. server.sh_quote(PYTHON) .. " -c 'import dkim'")
  if rc ~= 0 then error("install python3-dkim (" .. PYTHON .. " cannot import dkim: " .. out .. ")", 2) end
end

-- The message as delivered, with CRLF line ends again (smtp-sink dumps it with LF).
local function crlf(text)
  return (text:gsub("\r?\n", "\r\n"))
end

-- signer(bits) -> { dir =, key = (the private key file), pub = (base64 DER) } in a new directory with the verifier
local function signer(bits)
  need_dkimpy()
  local k = { dir = server.tempdir() }
  server.write_file(k.dir .. "/verify.py", VERIFY)
  k.key = k.dir .. "/example.test.key"
  local o, rc = certs.openssl { "genrsa", "-out", k.key, tostring(bits) }
  assert(rc == 0, o)
  o, rc = certs.openssl { "rsa", "-in", k.key, "-pubout", "-outform", "DER", "-out", k.dir .. "/pub.der" }
  assert(rc == 0, o)
  k.pub = (mime.b64(server.read_file(k.dir .. "/pub.der")))
  return k
end

-- verify_with(k, text) -> "pass" or "fail", and the names the verifier asked DNS for
local function verify_with(k, text)
  local file = k.dir .. "/msg.eml"
  server.write_file(file, crlf(text))
  local res, rc = server.run("timeout 20 " .. server.sh_quote(PYTHON) .. " " .. server.sh_quote(k.dir .. "/verify.py")
    .. " " .. server.sh_quote(file) .. " " .. server.sh_quote(k.pub) .. " s1._domainkey.example.test")
  assert(rc == 0, res)
  return res:match("verify=(%a+)"), res:match("asked=(%S*)")
end

describe("the dkim_sign rule", function()
  local srv, out, pki, proxy, k, dir
  local clients = {}
  local sent = 0

  -- find(text) -> the dumped message that contains text, once it is there
  local function find(text)
    local m = server.wait_until(function()
      for _, x in ipairs(out:wait_messages(1, 0.2)) do
        if x.message and x.message:find(text, 1, true) then return x.message end
      end
    end, 10, 0.05)
    return assert(m, "nothing reached the next hop with " .. text .. "\n" .. srv:log())
  end

  local function verify(text) return verify_with(k, text) end

  -- submit(headers, body) -> the dumped message of one AUTH'd submission to outside.test
  local function submit(headers, body, opts)
    opts = opts or {}
    local c
    if opts.auth == false then
      c = smtp.session("127.0.0.1", srv.port)
    else
      c = certs.session(proxy)
      local code, lines = c:cmd("AUTH PLAIN " .. mime.b64("\0jdoe@example.test\0" .. PASSWORD))
      assert(code == 235, "AUTH: " .. tostring(lines and lines.text or lines))
    end
    clients[#clients + 1] = c
    sent = sent + 1
    local tag = "X-Test-Id: " .. sent         -- not signed: finds this message among the dumps
    local all = { table.unpack(headers) }
    all[#all + 1] = tag
    local code, lines = smtp.send_mail(c, opts.from or "jdoe@example.test", { opts.rcpt or "friend@outside.test" },
      smtp.message(all, body))
    assert(code == 250, "not queued: " .. tostring(lines and (lines.text or lines[1]) or lines))
    c:cmd("QUIT", 2)
    return find(tag)
  end

  setup(function()
    k = signer(2048)
    dir = k.dir
    pki = certs.new { expired = false }
    out = sink.start { ip = "127.0.0.1" }
    srv = server.start { config = sink.router_config {
      tls = { cert = pki.cert, key = pki.key },
      server = { extra_rules = { "dkim_sign" } },
      directory = { users = {
        { address = "postmaster@example.test" },
        { address = "jdoe@example.test", name = "John Doe", password = certs.crypt(PASSWORD) },
      } },
      dkim = { sign = { { domain = "example.test", selector = "s1", key = k.key } } },
      routing = { routes = { ["outside.test"] = out.literal } },
    } }
    proxy = certs.proxy(srv.port, "starttls")
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if proxy then proxy:stop() end
    if srv then srv:cleanup() end
    if out then out:stop() end
    if pki then pki:cleanup() end
    if dir then server.run("rm -rf " .. server.sh_quote(dir)) end
  end)

  it("signs an authenticated user's message, and the verifier accepts it with the selector's key", function()
    local m = submit({ "From: John Doe <jdoe@example.test>", "To: <friend@outside.test>", "Subject: signed",
      "Date: Mon, 07 Dec 2026 09:00:00 +0000", "Message-ID: <signed-1@example.test>" }, "Hello,\nthis is signed.\n")
    assert.truthy(m:find("^DKIM%-Signature: v=1; a=rsa%-sha256; c=relaxed/relaxed; d=example%.test; s=s1;"), m)
    local h = m:match("^DKIM%-Signature:(.-)\n[^ \t]")
    assert.truthy(h:find("h=from:to:subject:date:message-id:from;", 1, true), h)
    assert.truthy(h:find(" t=%d+;"), h)
    local verdict, asked = verify(m)
    assert.equal("pass", verdict, m)
    assert.equal("s1._domainkey.example.test.", asked)
    assert.truthy(srv:wait_log("rule: rule=dkim_sign action=sign d=example.test s=s1", 5, nil, true))
  end)

  it("fails verification when the body is changed after signing", function()
    local m = submit({ "From: jdoe@example.test", "To: friend@outside.test", "Subject: tamper" },
      "Pay 10 EUR to the usual account.\n")
    assert.equal("pass", (verify(m)))
    local changed = m:gsub("Pay 10 EUR", "Pay 1000 EUR")
    assert.are_not.equal(m, changed)
    assert.equal("fail", (verify(changed)))
    local reheaded = m:gsub("Subject: tamper", "Subject: tampered")
    assert.equal("fail", (verify(reheaded)))
  end)

  it("still verifies with long folded headers, trailing white space and blank lines at the end of the body", function()
    local rcpts = {}
    for i = 1, 12 do rcpts[#rcpts + 1] = ("Person Number %d <person%d@outside.test>"):format(i, i) end
    local m = submit({
      "From: \"Doe, John\" (the sender) <jdoe@EXAMPLE.test>",
      "To: " .. table.concat(rcpts, ",\r\n\t"),
      "Subject: a subject that is long enough to be folded\r\n   over   three\r\n\tlines  ",
      "References: <a@example.test>\r\n <b@example.test>\r\n <c@example.test>",
      "MIME-Version: 1.0",
      "Content-Type: text/plain;\r\n\tcharset=utf-8",
      "X-Not-Signed: anything",
    }, "line with trailing spaces   \nline\twith \t tabs\t\n\n  indented\n\n\n\n")
    local h = m:match("^DKIM%-Signature:(.-)\n[^ \t]")
    assert.truthy(h and h:gsub("%s", ""):find("h=from:to:subject:references:mime-version:content-type:from;", 1,
      true), h)
    assert.equal("pass", (verify(m)), m)
  end)

  it("does not sign a message that came without AUTH", function()
    local m = submit({ "From: jdoe@example.test", "To: friend@outside.test", "Subject: inbound" }, "hi\n",
      { auth = false, from = "someone@client.test" })
    assert.falsy(m:find("DKIM-Signature", 1, true), m)
  end)

  it("does not sign a From: domain that has no key", function()
    local m = submit({ "From: jdoe@nokey.test", "To: friend@outside.test", "Subject: no key" }, "hi\n")
    assert.falsy(m:find("DKIM-Signature", 1, true), m)
  end)

  it("signs a local submission through sendmail", function()
    local file = dir .. "/stdin"
    server.write_file(file, "From: jdoe@example.test\nTo: friend@outside.test\nSubject: from cron\n\nnightly\n")
    local o, rc = server.run("timeout 10 " .. server.sh_quote(server.BIN) .. " sendmail -c "
      .. server.sh_quote(srv.cfgfile) .. " -f jdoe@example.test friend@outside.test < " .. server.sh_quote(file))
    assert.equal(0, rc, o)
    local m = find("Subject: from cron")
    assert.truthy(m:find("^DKIM%-Signature: "), m)
    assert.equal("pass", (verify(m)), m)
  end)
end)

-- A site rule that signs every message with one key, loaded when the module loads.
local SLOW_SIGN = [[
local mta = require "luamta"
local key = assert(mta.dkim.key(%q))
local M = {}
function M.message(s, msg)
  local sign = function() return msg:dkim_sign(key, "example.test", "s1") end
  local ok, err
  if msg:header("Subject") == "from a coroutine" then   -- it cannot wait there: nil, err, and no signature
    local _
    _, ok, err = coroutine.resume(coroutine.create(sign))
  else
    ok, err = sign()
  end
  s:log(ok and "slow_sign=signed" or ("slow_sign=unsigned " .. tostring(err)))
end
return M
]]

describe("msg:dkim_sign on a slow key", function()
  local N = 12           -- messages signed at once: about 17 ms of CPU each with a 4096-bit key, on one thread
  local srv, k
  local clients = {}

  setup(function()
    k = signer(4096)
    srv = server.start { config = { server = { workers = 1 } }, rules = { { "slow_sign", SLOW_SIGN:format(k.key) } } }
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
    if k then server.run("rm -rf " .. server.sh_quote(k.dir)) end
  end)

  it("answers another session's NOOP while a dozen messages are signed with a 4096-bit key", function()
    local senders = {}
    for i = 1, N do    -- each transaction up to the final dot
      local c = smtp.session("127.0.0.1", srv.port, { timeout = 30 })
      clients[#clients + 1] = c
      assert.equal(250, (c:cmd("MAIL FROM:<sender" .. i .. "@client.test>")))
      assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
      assert.equal(354, (c:cmd("DATA")))
      assert(c:send(smtp.message({ "From: <sender" .. i .. "@example.test>", "To: <jdoe@example.test>",
        "Subject: slow key " .. i, "Message-ID: <slow-" .. i .. "@example.test>" }, "signed off the loop\n")))
      senders[i] = c
    end
    local probe = smtp.session("127.0.0.1", srv.port, { timeout = 30 })
    clients[#clients + 1] = probe

    local t0 = socket.gettime()
    for _, c in ipairs(senders) do assert(c:send(".\r\n")) end
    assert(probe:send("NOOP\r\n"))
    assert.equal(250, (probe:read_reply()))
    local noop = socket.gettime() - t0
    local last = 0
    for i, c in ipairs(senders) do
      local code, lines = c:read_reply()
      assert.equal(250, code, "message " .. i .. ": " .. tostring(lines and lines.text or lines))
      last = socket.gettime() - t0
    end
    -- Signed on the loop, the NOOP waited for every signature (0.203 s against 0.214 s for the last 250); off
    -- the loop it is answered at once. A third of the signing time leaves room for a loaded machine.
    local figures = ("NOOP %.3f s, last 250 %.3f s"):format(noop, last)
    assert.is_true(noop < last / 3, figures)

    local files = srv:wait_maildir("jdoe", "example.test", N, 20)
    assert.equal(N, #files, srv:log())
    for _, f in ipairs(files) do
      assert.truthy(f.content:find("DKIM-Signature: v=1; a=rsa-sha256;", 1, true), f.content)
      assert.equal("pass", (verify_with(k, f.content)), f.content)
    end
  end)

  it("does not sign from a coroutine the rule made, which cannot wait for the signing thread", function()
    local mark = srv:log_mark()
    local c = smtp.session("127.0.0.1", srv.port)
    clients[#clients + 1] = c
    local code, lines = smtp.send_mail(c, "sender@client.test", { "postmaster@example.test" },
      smtp.message({ "From: <sender@example.test>", "Subject: from a coroutine" }, "not signed\n"))
    assert.equal(250, code, lines and lines.text)
    assert.truthy(srv:wait_log("slow_sign=unsigned msg:dkim_sign must be called by the stage handler itself", 5,
      mark, true), srv:log())
    local files = srv:wait_maildir("postmaster", "example.test", 1, 10)
    assert.equal(1, #files, srv:log())
    assert.falsy(files[1].content:find("DKIM-Signature", 1, true), files[1].content)
  end)
end)

describe("luamta check with dkim.sign", function()
  local srv

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  it("names a key file that cannot be read with its file:line", function()
    srv = server.prepare { config = { server = { extra_rules = { "dkim_sign" } },
      dkim = { sign = { { domain = "example.test", selector = "s1", key = "/nonexistent/dkim.key" } } } } }
    local o, rc = srv:luamta("check")
    assert.are_not.equal(0, rc)
    assert.truthy(o:find("luamta.lua:%d+: dkim%.sign%[1%]%.key: cannot read it %(/nonexistent/dkim%.key"), o)
  end)

  it("names a file that is no key, and a key that mbedTLS cannot load", function()
    srv = server.prepare { config = { server = { extra_rules = { "dkim_sign" } },
      dkim = { sign = { { domain = "example.test", selector = "s1", key = "not-a-key.pem" } } } },
      files = { ["not-a-key.pem"] = "hello\n" } }
    local o, rc = srv:luamta("check")
    assert.are_not.equal(0, rc)
    assert.truthy(o:find("dkim.sign[1].key: no PEM private key in", 1, true), o)
    server.write_file(srv.dir .. "/not-a-key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    o, rc = srv:luamta("check")
    assert.are_not.equal(0, rc)
    assert.truthy(o:find("luamta.lua:%d+: dkim%.sign%[1%]%.key: cannot load .*not%-a%-key%.pem"), o)
  end)

  it("warns when keys are listed but the rule is off", function()
    local dir = server.tempdir()
    local o, rc = certs.openssl { "genrsa", "-out", dir .. "/k.pem", "2048" }
    assert(rc == 0, o)
    srv = server.prepare { config = { dkim = { sign = { { domain = "example.test", selector = "s1",
      key = dir .. "/k.pem" } } } } }
    o, rc = srv:luamta("check")
    server.run("rm -rf " .. server.sh_quote(dir))
    assert.equal(0, rc, o)
    assert.truthy(o:find("dkim.sign: keys are listed but the dkim_sign rule is off", 1, true), o)
  end)
end)
