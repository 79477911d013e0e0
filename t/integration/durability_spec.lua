-- t/integration/durability_spec.lua - the promises of SPEC sections 2 and 8 about stopping: every message that
-- got 250 survives kill -9 of every process and is delivered after a restart, and SIGTERM stops the server
-- gracefully (idle sessions get 421 4.3.2, a transaction in progress may finish, the pid file goes).
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

-- A rules_dir override of the bundled routing module that keeps every message queued.
local HOLD_ROUTING = [[
local mta = require "luamta"
return { route = function(msg, rcpt) return mta.defer("4.4.0 held by the integration test") end }
]]

describe("a crash (kill -9 of the master and all children)", function()
  local srv
  local clients = {}

  before_each(function()
    srv = server.start {}
  end)

  after_each(function()
    for _, c in ipairs(clients) do c:close() end
    clients = {}
    if srv then srv:cleanup() end
    srv = nil
  end)

  local function send_one(subject)
    local c = smtp.session("127.0.0.1", srv.port)
    clients[#clients + 1] = c
    local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test",
      smtp.message({ "From: alice@example.org", "Subject: " .. subject }, "keep me\r\n"))
    assert.equal(250, code, lines and tostring(lines.text or lines))
    return assert(lines[1]:match("queued as (%w+)"))
  end

  it("right after the 250 for DATA loses nothing: the held message is delivered after restart", function()
    srv:write_rule("routing", HOLD_ROUTING)
    srv:reload()
    assert.truthy(srv:wait_log("router reload: policy generation", 5, nil, true))
    local mark = srv:log_mark()
    local qid = send_one("held across a crash")
    assert.truthy(srv:wait_log(qid .. ": to=<jdoe@example%.test>,[^\n]*status=deferred", 5,
      mark), srv:log())
    assert.same({ qid }, srv:queue_files())
    -- The queue file is the envelope of spool.h followed by the message.
    local qf = server.read_file(srv:spool_file("queue", qid))
    local env = qf:match("^(.-\nend\n)")
    assert.truthy(env, qf)
    assert.matches("^LUAMTA%-QUEUE 1\nid " .. qid .. "\n", env)
    assert.truthy(env:find("\nsender alice@example.org\n", 1, true), env)
    assert.truthy(env:find("\nrcpt jdoe@example.test\n", 1, true), env)
    assert.truthy(env:find("\nhelo client.test\n", 1, true), env)
    assert.truthy(qf:sub(#env + 1):find("^Received: from client%.test"), qf)
    assert.truthy(qf:find("\r\nSubject: held across a crash\r\n", 1, true), "the message keeps CRLF in the queue")
    local out, rc = srv:luamta("queue list --json")
    assert.equal(0, rc, out)
    assert.truthy(out:find('"id":"' .. qid .. '"', 1, true), out)

    srv:kill9()
    assert.same({}, srv:processes())
    assert.same({}, srv:maildir_files("jdoe"))

    os.remove(srv.rules_dir .. "/routing.lua")   -- the bundled routing delivers to the Maildir
    srv:restart()
    local files = srv:wait_maildir("jdoe", nil, 1, 10)
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("\nSubject: held across a crash\n", 1, true), files[1].content)
    assert.truthy(files[1].content:find("\n\nkeep me\n", 1, true))
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
  end)

  it("right after the 250, without holding, still ends with the message in the Maildir after restart", function()
    local qid = send_one("unheld")
    srv:kill9()
    srv:restart()
    local files = srv:wait_maildir("jdoe", nil, 1, 10)
    assert.is_true(#files >= 1, "the message " .. qid .. " is delivered")
    assert.truthy(files[1].content:find("\nSubject: unheld\n", 1, true))
  end)
end)

describe("luamta queue list", function()
  local srv

  setup(function()
    srv = server.start { files = { ["rules/routing.lua"] = HOLD_ROUTING } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("shows a held message with its sender and each recipient's status and last reply", function()
    local c = smtp.session("127.0.0.1", srv.port)
    local code, lines = smtp.send_mail(c, "alice@example.org", { "jdoe@example.test", "postmaster@example.test" },
      smtp.message({ "Subject: listed" }, "x\r\n"))
    c:close()
    assert.equal(250, code)
    local qid = lines[1]:match("queued as (%w+)")
    assert.truthy(srv:wait_log(qid .. ": to=<postmaster@example%.test>,[^\n]*status=deferred",
      5))
    local out, rc = srv:luamta("queue list")
    assert.equal(0, rc, out)
    assert.matches("^" .. qid .. "%s+%d+ .-<alice@example%.org>\n", out)
    assert.truthy(out:find("-- 1 message in the queue", 1, true), out)
    for _, rcpt in ipairs { "jdoe@example.test", "postmaster@example.test" } do
      local line = out:match("\n%s+<" .. rcpt:gsub("%p", "%%%0") .. ">([^\n]*)")
      assert.truthy(line, out)
      assert.truthy(line:find("deferred", 1, true) and line:find("4.4.0 held by the integration test", 1, true),
        "the recipient line shows its status and last reply, got: <" .. rcpt .. ">" .. line)
    end
  end)
end)

describe("a worker that dies", function()
  local srv

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("killed with SIGKILL is started again and the port keeps answering", function()
    local mark = srv:log_mark()
    local worker
    for _, pid in ipairs(srv:processes()) do
      local cmdline = server.read_file("/proc/" .. pid .. "/stat") or ""
      local ppid = tonumber(cmdline:match("^%d+ %b() %S (%d+)"))
      if ppid == srv.pid and pid ~= srv.pid then
        -- the router and the worker are both children: the worker is the one that logged "worker 1: ready"
        if srv:log():find("luamta%[" .. pid .. "%] worker 1: ready") then worker = pid end
      end
    end
    assert.truthy(worker, "the worker's pid")
    server.run("kill -KILL " .. worker)
    assert.truthy(srv:wait_log("worker 1 died", 5, mark, true), srv:log():sub(mark + 1))
    assert.truthy(srv:wait_log("worker 1: ready", 5, mark, true), srv:log():sub(mark + 1))
    local c = smtp.session("127.0.0.1", srv.port)
    local code = smtp.send_mail(c, "alice@example.org", "jdoe@example.test",
      smtp.message({ "Subject: after the respawn" }, "x\r\n"))
    c:close()
    assert.equal(250, code)
    assert.equal(1, #srv:wait_maildir("jdoe"))
  end)
end)

describe("a graceful stop (SIGTERM)", function()
  local srv
  local clients = {}

  before_each(function()
    srv = server.start {}
  end)

  after_each(function()
    for _, c in ipairs(clients) do c:close() end
    clients = {}
    if srv then srv:cleanup() end
    srv = nil
  end)

  local function session()
    local c = smtp.session("127.0.0.1", srv.port)
    clients[#clients + 1] = c
    return c
  end

  it("gives an idle session 421 4.3.2, exits and removes the pid file", function()
    local c = session()
    local pidfile = srv.spool .. "/luamta.pid"
    assert.equal(srv.pid, srv:master_pid())
    server.run("kill -TERM " .. srv.pid)
    local code, lines = c:read_reply(5)
    assert.equal(421, code)
    assert.matches("^421 4%.3%.2 ", lines[1])
    assert.is_true((c:expect_closed(2)))
    assert.is_true(srv:wait_gone(10), "every process exits")
    assert.is_nil(io.open(pidfile), "the pid file is removed")
    assert.truthy(srv:wait_log("master: stopped", 2, nil, true))
  end)

  it("lets a transaction in progress finish, then says 421 4.3.2 and keeps the message for the next start",
    function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<alice@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
      local mark = srv:log_mark()
      server.run("kill -TERM " .. srv.pid)
      assert.truthy(srv:wait_log("worker 1: stop: no longer accepting", 5, mark, true))
      assert.equal(354, (c:cmd("DATA")))
      c:send("Subject: finished during the stop\r\n\r\nlast words\r\n.\r\n")
      local code, lines = c:read_reply(5)
      assert.equal(250, code, lines and tostring(lines.text or lines))
      code, lines = c:read_reply(5)
      assert.equal(421, code, lines and tostring(lines.text or lines))
      assert.matches("^421 4%.3%.2 ", lines[1])
      assert.is_true(srv:wait_gone(10), "every process exits")
      srv:stop()
      srv:restart()
      local files = srv:wait_maildir("jdoe", nil, 1, 10)
      assert.equal(1, #files)
      assert.truthy(files[1].content:find("\nSubject: finished during the stop\n", 1, true))
    end)
end)
