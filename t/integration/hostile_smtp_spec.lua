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
  local env = with_server { server = { timeouts = { command = 30 } } }

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
