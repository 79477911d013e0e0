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
