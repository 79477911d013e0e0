-- t/integration/hostile_smtp_spec.lua - clients that attack the session rather than talk to it (issue 8): one
-- that never reads its replies, messages that loop, forged log lines, NUL in AUTH, slow dribblers, junk and
-- non-SMTP commands. Each test asserts what the attacker (or the log) sees.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

-- with_server(config, rules): a describe block's daemon and its clients, cleaned up whatever happens.
local function with_server(config, rules)
  local env = { clients = {} }
  setup(function()
    env.srv = server.start { config = config, rules = rules }
  end)
  teardown(function()
    for _, c in ipairs(env.clients) do c:close() end
    if env.srv then env.srv:cleanup() end
  end)
  function env.connect(opts)
    local c = assert(smtp.connect("127.0.0.1", env.srv.port, opts))
    env.clients[#env.clients + 1] = c
    return c
  end
  function env.session(opts)
    local c = env.connect(opts)
    c:greet()
    return c
  end
  return env
end

-- worker_pid(srv) -> the pid of worker 1 (a child of the master that logged "worker 1: ready")
local function worker_pid(srv)
  for _, pid in ipairs(srv:processes()) do
    local stat = server.read_file("/proc/" .. pid .. "/stat") or ""
    local ppid = tonumber(stat:match("^%d+ %b() %S (%d+)"))
    if ppid == srv.pid and pid ~= srv.pid and srv:log():find("luamta%[" .. pid .. "%] worker 1: ready") then
      return pid
    end
  end
end

-- rss_kib(pid) -> VmRSS of pid in KiB
local function rss_kib(pid)
  local status = server.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmRSS:%s*(%d+)"))
end

describe("a client that never reads its replies", function()
  -- HELP is a junk command: without a huge max_junk_commands the session would close after 120 of them.
  local env = with_server { server = { timeouts = { command = 30 } },
                            inbound = { connection = { max_junk_commands = 1000000000 } } }

  it("cannot grow the worker: reading stops while the replies wait, and others are served", function()
    local pid = assert(worker_pid(env.srv), "the worker's pid")
    local c = env.session()
    local before = assert(rss_kib(pid))
    local chunk = string.rep("HELP\r\n", 10000)		-- 60 000 octets, 10 000 replies of 78 octets
    local sent, deadline = 0, socket.gettime() + 6
    c.sock:settimeout(0.2)
    while sent < 20 * 1024 * 1024 and socket.gettime() < deadline do
      local last, err, partial = c.sock:send(chunk)
      sent = sent + (last or partial or 0)
      if not last and err ~= "timeout" then break end
    end
    local growth = (rss_kib(pid) - before) / 1024
    assert.is_true(growth < 30, ("the worker grew by %.1f MiB after %d octets of HELP"):format(growth, sent))
    local other = env.session()
    assert.equal(250, (other:cmd("NOOP")))
    other:close()
  end)
end)

describe("a mail loop (server.max_hops, default 50)", function()
  local env = with_server {}

  local function received(n)
    local h = {}
    for i = 1, n do h[i] = ("Received: from hop%d.example.org by hop%d.example.org; Mon, 7 Dec 2026 00:00:00 +0000"):format(i, i + 1) end
    h[#h + 1] = "Subject: loop"
    return h
  end

  it("a message with 120 Received headers gets 554 5.4.6 Too many hops and nothing is queued", function()
    local c = env.session()
    local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test", smtp.message(received(120), "x\r\n"))
    assert.equal(554, code, lines and lines.text)
    assert.equal("554 5.4.6 Too many hops", lines[1])
    assert.equal(250, (c:cmd("NOOP")), "the session goes on")
    assert.same({}, env.srv:queue_files())
    assert.same({}, env.srv:maildir_files("jdoe"))
  end)

  it("49 Received headers (ours makes 50) and Received text in the body are accepted", function()
    local c = env.session()
    local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test",
      smtp.message(received(49), string.rep("Received: in the body\r\n", 80)))
    assert.equal(250, code, lines and lines.text)
    assert.truthy(env.srv:wait_maildir("jdoe", nil, 1, 5))
  end)
end)

-- dribble(c, text, gap) -> the first line the server sent while text went out one octet every gap seconds, and
-- the seconds from the first octet to that line (nil when all was sent and nothing came)
local function dribble(c, text, gap)
  local t0 = socket.gettime()
  for i = 1, #text do
    if not c:send(text:sub(i, i)) then break end
    local line = c:read_line(gap)
    if line then return line, socket.gettime() - t0 end
  end
  local line = c:read_line(gap)
  return line, line and socket.gettime() - t0
end

describe("a client that dribbles one octet every 0.8 s (server.timeouts = { command = 2, data = 2 })", function()
  local env = with_server { server = { timeouts = { command = 2, data = 2 } } }

  it("cannot keep a command line open past timeouts.command: 421 4.4.2, logged", function()
    local c = env.session()
    local mark = env.srv:log_mark()
    local line, after = dribble(c, "NOOP dribbling along\r\n", 0.8)
    assert.truthy(line, "an answer")
    assert.matches("^421 4%.4%.2 .*Timeout", line)
    assert.is_true(after < 3.5, ("the 421 came %.1f s after the first octet"):format(after))
    assert.is_true((c:expect_closed(2)))
    assert.truthy(env.srv:wait_log("timeout from unknown%[[%d.]+%] in state READY", 2, mark))
  end)

  it("cannot keep DATA open past timeouts.data: 421 4.4.2 after the deadline, nothing queued", function()
    local c = env.session()
    assert.equal(250, (c:cmd("MAIL FROM:<alice@example.org>")))
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
    assert.equal(354, (c:cmd("DATA")))
    local mark = env.srv:log_mark()
    local line, after = dribble(c, "Subject: slow\r\n\r\nall of this, one octet at a time\r\n.\r\n", 0.8)
    assert.truthy(line, "an answer")
    assert.matches("^421 4%.4%.2 .*Timeout", line)
    assert.is_true(after < 3.5, ("the 421 came %.1f s after the first octet"):format(after))
    assert.truthy(env.srv:wait_log("timeout from unknown%[[%d.]+%] in state BODY after", 2, mark))
    assert.same({}, env.srv:queue_files())
  end)

  it("cannot keep a BDAT chunk open past timeouts.data either", function()
    local c = env.session()
    assert.equal(250, (c:cmd("MAIL FROM:<alice@example.org>")))
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
    c:send("BDAT 40 LAST\r\n")
    local line, after = dribble(c, ("x"):rep(40), 0.8)
    assert.truthy(line, "an answer")
    assert.matches("^421 4%.4%.2 .*Timeout", line)
    assert.is_true(after < 3.5, ("the 421 came %.1f s after the first octet"):format(after))
  end)

  it("a client that sends whole commands in time is served past timeouts.command", function()
    local c = env.session()
    for _ = 1, 3 do
      socket.sleep(1)
      assert.equal(250, (c:cmd("NOOP")))
    end
  end)
end)

describe("junk commands (inbound.connection.max_junk_commands, default 100)", function()
  local env = with_server {}

  it("pipelined NOOPs: 100 junk commands are free (EHLO is one), 20 more count as errors, then 421", function()
    local c = env.session()
    local mark = env.srv:log_mark()
    c.sock:settimeout(5)
    -- 200 (not 10 000): read in one go, so that no unread input turns the server's close into a reset that
    -- could take the last replies with it
    c.sock:send(string.rep("NOOP\r\n", 200))
    local ok, last = 0, nil
    while true do
      local code, lines = c:read_reply(5)
      if code ~= 250 then last = lines and lines[1]; break end
      ok = ok + 1
    end
    assert.equal(99 + 20, ok)		-- EHLO was the first junk command; max_errors is 20
    assert.equal("421 4.7.0 SMTP service not available, closing transmission channel", last)
    assert.truthy(env.srv:wait_log("junk commands (inbound.connection.max_junk_commands = 100), closing", 2,
      mark, true))
  end)

  it("a message received forgives the junk before it (as Postfix)", function()
    local c = env.session()
    for _ = 1, 100 do c:send("RSET\r\n") end
    for _ = 1, 100 do assert.equal(250, (c:read_reply())) end
    local code = smtp.send_mail(c, "alice@example.org", "jdoe@example.test", smtp.message({ "Subject: j" }, "x\r\n"))
    assert.equal(250, code)
    for _ = 1, 100 do c:send("NOOP\r\n") end
    for _ = 1, 100 do assert.equal(250, (c:read_reply())) end
    assert.equal(221, (c:cmd("QUIT")))
  end)
end)

describe("inbound.connection = { max_junk_commands = 3, max_errors = 2 }", function()
  local env = with_server { inbound = { connection = { max_junk_commands = 3, max_errors = 2 } } }

  it("the sixth junk command (EHLO counts) gets 421", function()
    local c = env.session()		-- EHLO: 1
    for i = 2, 5 do assert.equal(i == 3 and 214 or 250, (c:cmd(i == 3 and "HELP" or "NOOP")), i) end
    local code, lines = c:cmd("VRFY x")
    assert.equal(421, code, lines and lines.text)
    assert.is_true((c:expect_closed(2)))
  end)
end)

describe("non-SMTP input on a plain port", function()
  local env = with_server {}

  for _, line in ipairs { "GET / HTTP/1.1", "POST /cgi-bin/x HTTP/1.0", "CONNECT mx.example.org:25 HTTP/1.1",
                          "User-Agent: curl/8.0", "Host: mx.example.test", "GET /index.html HTTP/1.0\n" } do
    it(("%q is logged as non-SMTP and the connection closes at once"):format((line:gsub("\n", "LF"))), function()
      local c = env.connect()
      assert.equal(220, (c:read_reply()))
      local mark = env.srv:log_mark()
      local code, lines
      if line:sub(-1) == "\n" then		-- an HTTP client's bare LF
        c:send(line)
        code, lines = c:read_reply()
      else
        code, lines = c:cmd(line)
      end
      assert.equal(221, code, lines and lines.text)
      assert.equal("221 2.7.0 Error: I can break rules, too. Goodbye.", lines[1])
      assert.is_true((c:expect_closed(2)))
      assert.truthy(env.srv:wait_log("non-SMTP command from unknown[127.0.0.1]: " .. line:gsub("\n$", ""), 2, mark,
        true))
    end)
  end

  it("a TLS ClientHello (no LF in it) is seen at once, not after the command timeout", function()
    local c = env.connect()
    assert.equal(220, (c:read_reply()))
    local mark = env.srv:log_mark()
    local t0 = socket.gettime()
    c:send("\22\3\1\0\165\1\0\0\161\3\3" .. ("\0"):rep(32))
    assert.is_true((c:expect_closed(3)))
    assert.is_true(socket.gettime() - t0 < 2)
    assert.truthy(env.srv:wait_log("non-SMTP command from unknown[127.0.0.1]: a TLS handshake", 2, mark, true))
  end)

  it("an unknown command is still only a 500", function()
    local c = env.session()
    assert.equal(500, (c:cmd("XYZZY")))
    assert.equal(250, (c:cmd("NOOP")))
  end)
end)

-- Over TLS the replies wait in the TLS filter's buffer and the socket's: the same high-water mark must hold there.
-- Python's ssl writes HELP lines for up to 6 s without reading a reply, then reports the worker's RSS before it
-- lets go of the connection.
local NO_READ_TLS = [==[
import socket, ssl, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
raw = socket.create_connection(("127.0.0.1", port), timeout=5)
f = raw.makefile("rb")
def reply(f):
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line
reply(f)
raw.sendall(b"EHLO client.test\r\n"); reply(f)
raw.sendall(b"STARTTLS\r\n"); reply(f)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
tls = ctx.wrap_socket(raw, server_hostname="mx.example.test")
tf = tls.makefile("rb")
tls.sendall(b"EHLO client.test\r\n"); reply(tf)
before = rss()
chunk = b"HELP\r\n" * 10000
sent, deadline = 0, time.time() + 6
tls.settimeout(0.2)
while sent < 20 * 1024 * 1024 and time.time() < deadline:
    try:
        sent += tls.send(chunk)
    except (socket.timeout, ssl.SSLWantWriteError):
        pass
    except OSError as e:
        print("error\t%s" % e)
        break
time.sleep(0.5)
print("before\t%d" % before)
print("after\t%d" % rss())
print("sent\t%d" % sent)
]==]

describe("a client that never reads its replies, over TLS", function()
  local certs = require "t.helpers.certs"
  local pki = certs.new { expired = false }
  local env = with_server { tls = { cert = pki.cert, key = pki.key }, server = { timeouts = { command = 30 } },
                            inbound = { connection = { max_junk_commands = 1000000000 } } }
  teardown(function() pki:cleanup() end)

  it("cannot grow the worker either: the output high-water mark counts the TLS buffers", function()
    local pid = assert(worker_pid(env.srv), "the worker's pid")
    local out = certs.python(NO_READ_TLS, { tostring(env.srv.port), tostring(pid) }, 30)
    local r = certs.fields(out)
    assert.truthy(r.after, out)
    local growth = (tonumber(r.after) - tonumber(r.before)) / 1024
    assert.is_nil(r.error, "the connection stays open, it is only not read: " .. out)
    assert.is_true(tonumber(r.sent) > 256 * 1024, "sent only " .. r.sent .. " octets: " .. out)
    assert.is_true(growth < 30, ("the worker grew by %.1f MiB after %s octets of HELP"):format(growth, r.sent))
    local other = env.session()
    assert.equal(250, (other:cmd("NOOP")))
  end)
end)
