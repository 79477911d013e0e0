-- t/integration/rspamd_spec.lua: the bundled rspamd rule (docs/callouts.md, "rspamd") against a real rspamd started
-- here (t/helpers/rspamd.lua), and against an rspamd that is down or does not answer.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local rspamd = require "t.helpers.rspamd"
local dns = require "t.helpers.dns"
local certs = require "t.helpers.certs"
local mime = require "mime"
local socket = require "socket"

-- DKIM_VERIFY: exit 0 when the message on stdin carries a DKIM signature that python3-dkim accepts, with the public
-- key (base64, argv[1]) as the selector's TXT record.
local DKIM_VERIFY = [[
import sys, dkim
key = sys.argv[1].encode()
msg = sys.stdin.buffer.read()
ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: b"v=DKIM1; k=rsa; p=" + key)
sys.exit(0 if ok else 1)
]]
local PYTHON = "/usr/bin/python3"   -- Debian's, where python3-dkim is installed

-- dkim_verifies(text, public) -> true when an independent verifier (python3-dkim) accepts text's DKIM-Signature
local function dkim_verifies(dir, text, public)
  local out, rc = server.run(PYTHON .. " -c 'import dkim'")
  if rc ~= 0 then error("install python3-dkim (Python's dkim is missing: " .. out .. ")") end
  server.write_file(dir .. "/verify.py", DKIM_VERIFY)
  server.write_file(dir .. "/message.eml", text)
  out, rc = server.run(("%s %s/verify.py %s < %s/message.eml"):format(PYTHON, dir, public, dir))
  return rc == 0, out
end

local GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
local n = 0

-- message(extra, body) -> a message from alice@example.test to jdoe, with the header fields in extra first
local function message(extra, body)
  n = n + 1
  local h = {}
  for _, x in ipairs(extra or {}) do h[#h + 1] = x end
  for _, x in ipairs { "From: Alice <alice@example.test>", "To: John Doe <jdoe@example.test>",
    "Subject: lunch on friday", "Date: Mon, 07 Dec 2026 10:00:00 +0000",
    ("Message-ID: <rspamd-spec-%d-%d@example.test>"):format(os.time(), n), "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii" } do
    h[#h + 1] = x
  end
  return smtp.message(h, body or "Shall we meet at noon?\nJohn\n")
end

-- send(srv, text, rcpts) -> code, reply text to the final dot
local function send(srv, text, rcpts)
  local c = smtp.session("127.0.0.1", srv.port, { helo = "client.example.org", timeout = 20 })
  local code, lines = smtp.send_mail(c, "alice@example.test", rcpts or { "jdoe@example.test" }, text)
  c:cmd("QUIT")
  c:close()
  return code, lines and lines.text or tostring(lines)
end

-- header(text, name) -> the values of every field called name in the header of text, unfolded
local function headers(text, name)
  local out = {}
  local head = text:match("^(.-)\r?\n\r?\n") or text
  head = head:gsub("\r?\n[ \t]+", " ")
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do
    local k, v = line:match("^([^:]+):%s*(.-)\r?$")
    if k and k:lower() == name:lower() then out[#out + 1] = v end
  end
  return out
end

-- fetch(srv, user, reply) -> the content of the message that got this reply ("250 ... queued as ID"), once it is
-- in user's Maildir (found by the id in luamta's Received field)
local function fetch(srv, user, reply)
  local qid = assert(reply:match("queued as (%S+)"), reply)
  local found = server.wait_until(function()
    for _, f in ipairs(srv:maildir_files(user, "example.test")) do
      if f.content and f.content:find(" id " .. qid, 1, true) then return f.content end
    end
  end, 10)
  assert(found, "message " .. qid .. " is not in the Maildir of " .. user)
  return found
end

describe("rspamd, running", function()
  local PASSWORD = "rspamd-spec-Pa55"
  local r, srv, pki, proxy

  setup(function()
    r = rspamd.start { dkim = { domain = "example.test", selector = "s1" } }
    pki = certs.new { expired = false }
    srv = server.start { config = { server = { extra_rules = { "rspamd" } }, tls = { cert = pki.cert, key = pki.key },
      directory = { users = { { address = "postmaster@example.test" },
        { address = "jdoe@example.test", password = certs.crypt(PASSWORD) } } },
      rspamd = { url = r.url, timeout = 10, on_error = "tempfail" } } }
  end)

  teardown(function()
    if proxy then proxy:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
    if r then r:cleanup() end       -- last: it raises if rspamd does not stop
  end)

  it("rejects GTUBE with 554 5.7.1 and rspamd's message, and logs the score and symbols", function()
    local code, text = send(srv, message(nil, "Hello\n" .. GTUBE .. "\n"))
    assert.equal(554, code, text)
    assert.equal("554 5.7.1 Gtube pattern", text)
    assert.truthy(srv:wait_log('rule: rspamd action="reject" score=', 5, nil, true))
    assert.matches('rspamd action="reject" score=%d+%.%d%d required=%d+%.%d%d symbols=[^\n]*GTUBE%(', srv:log())
  end)

  it("delivers a clean message with rspamd's Authentication-Results and DKIM-Signature and our X-Spam-Score",
    function()
    local code, text = send(srv, message { "Authentication-Results: mx.example.test; spf=pass (forged)",
      "X-Spam-Score: -100.00 / 15.00" })
    assert.equal(250, code, text)
    local mail = fetch(srv, "jdoe", text)
    local ar = headers(mail, "Authentication-Results")
    assert.equal(1, #ar, mail)                       -- the forged one is gone (rspamd's remove_headers)
    assert.matches("^mx%.example%.test;", ar[1])     -- authserv-id from the MTA-Name we sent
    assert.is_nil(ar[1]:find("forged", 1, true))
    local score = headers(mail, "X-Spam-Score")
    assert.equal(1, #score, mail)
    assert.matches("^%-?%d+%.%d%d / %d+%.%d%d$", score[1])
    assert.not_equal("-100.00 / 15.00", score[1])
    local dkim = headers(mail, "DKIM-Signature")
    assert.equal(1, #dkim, mail)
    assert.matches("d=example%.test;", dkim[1])
    assert.matches("s=s1;", dkim[1])
    assert.truthy(dkim_verifies(srv.dir, mail, r.dkim_public))
    local broken = mail:gsub("noon", "one")
    assert.falsy(dkim_verifies(srv.dir, broken, r.dkim_public))
    assert.same({}, headers(mail, "X-Spam"))
    assert.truthy(srv:log():find('rspamd action="no action"', 1, true))
  end)

  it("gives rspamd the envelope: every recipient, the queue id, the client and its HELO", function()
    local code, text = send(srv, message(), { "jdoe@example.test", "postmaster@example.test" })
    assert.equal(250, code, text)
    local qid = text:match("queued as (%S+)")
    local line = server.wait_until(function()
      for l in r:log():gmatch("[^\n]+") do
        if l:find("qid: <" .. qid .. ">", 1, true) then return l end
      end
    end, 5)
    assert.truthy(line, r:log():sub(-3000))
    assert.matches("ip: 127%.0%.0%.1", line)
    assert.matches("from: <alice@example%.test>", line)
    assert.matches("rcpts: <jdoe@example%.test,postmaster@example%.test>", line)
    local mail = fetch(srv, "jdoe", text)
    assert.same({ "helo=client.example.org hostname=nil user=nil" }, headers(mail, "X-Test-Envelope"))
  end)

  it("tells rspamd the AUTH user, which rspamd signs for and names in Authentication-Results", function()
    proxy = certs.proxy(srv.port, "starttls")
    local c = certs.session(proxy, { helo = "laptop.example.test", timeout = 20 })
    local code, lines = c:cmd("AUTH PLAIN " .. mime.b64("\0jdoe@example.test\0" .. PASSWORD))
    assert.equal(235, code, lines and lines.text)
    local text = smtp.message({ "From: John <jdoe@example.test>", "To: postmaster@example.test", "Subject: report",
      "Date: Mon, 07 Dec 2026 10:00:00 +0000", "Message-ID: <rspamd-spec-auth@example.test>" }, "Numbers.\n")
    code, lines = smtp.send_mail(c, "jdoe@example.test", { "postmaster@example.test" }, text)
    c:cmd("QUIT")
    c:close()
    assert.equal(250, code, lines and lines.text)
    local mail = fetch(srv, "postmaster", lines.text)
    assert.same({ "helo=laptop.example.test hostname=nil user=jdoe@example.test" }, headers(mail, "X-Test-Envelope"))
    assert.matches("smtp.auth=jdoe@example.test", headers(mail, "Authentication-Results")[1], 1, true)
    assert.equal(1, #headers(mail, "DKIM-Signature"))
    assert.truthy(dkim_verifies(srv.dir, mail, r.dkim_public))
  end)

  it("tempfails with 451 4.7.1 on soft reject", function()
    local code, text = send(srv, message { "X-Test-Action: soft reject" })
    assert.equal(451, code, text)
    assert.equal("451 4.7.1 test action soft reject", text)
  end)

  it("tempfails with 451 4.7.1 on greylist", function()
    local code, text = send(srv, message { "X-Test-Action: greylist" })
    assert.equal(451, code, text)
    assert.equal("451 4.7.1 test action greylist", text)
  end)

  it("adds X-Spam: Yes on add header, in place of one the sender wrote", function()
    local code, text = send(srv, message { "X-Test-Action: add header", "X-Spam: No" })
    assert.equal(250, code, text)
    local mail = fetch(srv, "jdoe", text)
    assert.same({ "Yes" }, headers(mail, "X-Spam"))
    assert.equal(1, #headers(mail, "X-Spam-Score"))
  end)

  it("rewrites the subject on rewrite subject", function()
    local code, text = send(srv, message { "X-Test-Action: rewrite subject" })
    assert.equal(250, code, text)
    local subject = headers(fetch(srv, "jdoe", text), "Subject")
    assert.equal(1, #subject)
    assert.matches("lunch on friday", subject[1], 1, true)
    assert.not_equal("lunch on friday", subject[1])
  end)
end)

describe("rspamd with DNS", function()
  local ns, r, srv

  setup(function()
    ns = dns.start {
      hosts = { ["client.example.test"] = "127.0.0.1" },      -- and the PTR of 127.0.0.1 back to it
      txt = { ["example.test"] = "v=spf1 ip4:127.0.0.0/8 -all", ["_dmarc.example.test"] = "v=DMARC1; p=reject" },
      zones = { "example.test", "example.org" },
    }
    r = rspamd.start { nameserver = ns.server }
    srv = server.start { config = { server = { extra_rules = { "rspamd" } }, dns = ns:daemon_config(),
      rspamd = { url = r.url, timeout = 10, on_error = "tempfail" } } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if ns then ns:stop() end
    if r then r:cleanup() end       -- last: it raises if rspamd does not stop
  end)

  it("brings SPF and DMARC verdicts in Authentication-Results, and tells rspamd the verified client name", function()
    local code, text = send(srv, message())
    assert.equal(250, code, text)
    local mail = fetch(srv, "jdoe", text)
    local ar = headers(mail, "Authentication-Results")
    assert.equal(1, #ar, mail)
    assert.matches("spf=pass (mx.example.test: domain of alice@example.test designates 127.0.0.1 as permitted "
      .. "sender) smtp.mailfrom=alice@example.test", ar[1], 1, true)
    assert.matches("dmarc=pass", ar[1], 1, true)
    assert.same({ "helo=client.example.org hostname=client.example.test user=nil" }, headers(mail, "X-Test-Envelope"))
  end)
end)

describe("rspamd, unreachable", function()
  local srv

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  it("applies on_error = \"tempfail\" when rspamd is down: 451 4.3.0, logged", function()
    local port = server.free_port()
    srv = server.start { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "http://127.0.0.1:" .. port, on_error = "tempfail" } } }
    local code, text = send(srv, message())
    assert.equal(451, code, text)
    assert.equal("451 4.3.0 Temporary failure, try again later", text)
    assert.truthy(srv:wait_log(('callout service="rspamd http://127.0.0.1:%d/checkv2" error="connection failed" '
      .. "on_error=tempfail"):format(port), 5, nil, true))
  end)

  it("applies on_error = \"accept\" when rspamd is down: delivered unscanned", function()
    srv = server.start { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "http://127.0.0.1:" .. server.free_port() } } }
    local code, text = send(srv, message())
    assert.equal(250, code, text)
    local mail = fetch(srv, "jdoe", text)
    assert.same({}, headers(mail, "X-Spam-Score"))
  end)

  it("gives up after rspamd.timeout when rspamd does not answer", function()
    local silent = assert(socket.bind("127.0.0.1", 0))   -- accepts connections (the kernel does), never answers
    local _, port = silent:getsockname()
    srv = server.start { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "http://127.0.0.1:" .. port, timeout = 1, on_error = "tempfail" } } }
    local t0 = socket.gettime()
    local code, text = send(srv, message())
    local took = socket.gettime() - t0
    silent:close()
    assert.equal(451, code, text)
    assert.truthy(took >= 0.9 and took < 8, "took " .. took)
    assert.truthy(srv:wait_log('error="timeout" on_error=tempfail', 5, nil, true))
  end)

  it("does not scan a message over rspamd.max_size", function()
    srv = server.start { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "http://127.0.0.1:" .. server.free_port(), on_error = "tempfail", max_size = 100 } } }
    local code, text = send(srv, message())
    assert.equal(250, code, text)
    assert.truthy(srv:wait_log("rspamd not scanned: size=", 5, nil, true))
  end)
end)

describe("rspamd settings", function()
  it("are checked with file:line, and luamta check warns about risky ones", function()
    local p = server.prepare { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "ftp://127.0.0.1", timeout = 0, spam_header = "X Spam" } } }
    local out, rc = p:luamta("check")
    assert.are_not.equal(0, rc)
    local at = p.cfgfile:gsub("%p", "%%%0")
    assert.matches(at .. ":%d+: rspamd%.url: got string \"ftp://127%.0%.0%.1\"; expected an http url", out)
    assert.matches("rspamd.timeout: got number 0; expected a number > 0", out, 1, true)
    assert.matches('rspamd.spam_header: got string "X Spam"; expected a header field name', out, 1, true)
    p:cleanup()
    p = server.prepare { config = { server = { extra_rules = { "rspamd" } },
      rspamd = { url = "http://203.0.113.7:11333", on_error = "reject" } } }
    out, rc = p:luamta("check")
    assert.equal(0, rc, out)
    assert.matches("rspamd: rspamd.url http://203.0.113.7:11333 is not on loopback or a private network", out, 1, true)
    assert.matches('rspamd: rspamd.on_error = "reject" refuses every message', out, 1, true)
    p:cleanup()
  end)
end)

-- The message methods the rule stands on (docs/rules.md): msg:remove_header counts as rspamd's milter does.
describe("msg:remove_header and msg:text", function()
  local PROBE = [[
return { message = function(s, msg)
  local name, index = msg:header("X-Remove"):match("^(%S+) (%S+)$")
  local before = #msg:text()
  local n = msg:remove_header(name, tonumber(index))
  msg:add_header("X-Removed", ("%d text=%d size=%d"):format(n, before - #msg:text(), before - msg.size))
end }
]]
  local srv

  setup(function()
    srv = server.start { rules = { { "probe", PROBE } } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  -- remove(index) -> the X-A values left and the X-Removed value, for a message with three X-A fields
  local function remove(index)
    local text = smtp.message({ "X-Remove: X-A " .. index, "X-A: one", "Subject: s", "x-a: two,", "\tfolded",
      "X-A: three" }, "X-A: not a header\n")
    local code, reply = send(srv, text)
    assert.equal(250, code, reply)
    local mail = fetch(srv, "jdoe", reply)
    assert.matches("X-A: not a header", mail, 1, true)
    return table.concat(headers(mail, "X-A"), "|"), headers(mail, "X-Removed")[1]
  end

  it("removes every field of the name with index 0, folded lines and all", function()
    local left, removed = remove(0)
    assert.equal("", left)
    assert.matches("^3 text=(%d+) size=%1$", removed)
  end)

  it("removes the n-th field with index n, in any case of the name", function()
    assert.equal("one|three", (remove(2)))
  end)

  it("removes the n-th from the end with index -n", function()
    assert.equal("one|two, folded", (remove(-1)))
  end)

  it("removes nothing when the index is past the fields, either way", function()
    assert.equal("one|two, folded|three", (remove(4)))
    local left, removed = remove(-4)
    assert.equal("one|two, folded|three", left)
    assert.matches("^0 text=0 size=0$", removed)
  end)
end)
