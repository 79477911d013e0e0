-- t/integration/fault_disk_spec.lua - disk errors, one system call at a time (docs/reliability.md, "Faults"),
-- injected with strace into the running daemon (no special filesystem, no privileges beyond tracing our own
-- processes). fsync failing with EIO at the commit: 451 4.3.0, never 250; the log says why; the spool keeps no
-- half file; once the fault stops, the next message is accepted and delivered. Under a file size limit (ulimit -f)
-- a message too big gets 552 5.3.4, as Postfix's queue_file_size_limit, and nothing else changes.
-- ENOSPC (and one EIO) in the ONE thread that makes the call, found by tracing a first message: the commit's
-- writev and rename (worker's disk thread), the admission rename incoming/ -> queue/ (router's load thread), and
-- on the router's record thread the mkdir of a new Maildir, the write in its tmp/, the fsync of its new/, the
-- state-line append and the bounce's writev. Each time: what the client or the log says, what the spool and the
-- Maildir keep, and that the message is delivered exactly once after.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"
local sink = require "t.helpers.sink"
local socket = require "socket"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function worker_pid(srv)
  for _, pid in ipairs(srv:processes()) do
    if read("/proc/" .. pid .. "/cmdline"):find("worker", 1, true) then return pid end
  end
end

local function tracer_of(pid)
  return tonumber(read("/proc/" .. pid .. "/status"):match("TracerPid:%s*(%d+)"))
end

local function count(dir)
  local p = io.popen("ls -A '" .. dir .. "' 2>/dev/null")
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

local function send(srv, subject)
  local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 10 }))
  c:greet("client.test")
  local code, lines = smtp.send_mail(c, "alice@client.test", { "jdoe@example.test" },
    smtp.message({ "From: <alice@client.test>", "Subject: " .. subject }, "disk fault\r\n"))
  c:cmd("QUIT", 1)
  c:close()
  return code, lines
end

describe("a disk error at the commit of a message", function()
  local srv, strace_pid

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if strace_pid then os.execute("kill " .. strace_pid .. " 2>/dev/null") end
    if srv then srv:stop() srv:cleanup() end
  end)

  it("fsync failing with EIO: 451 4.3.0, logged, nothing half-written; accepted and delivered once it stops", function()
    local strace = tools.need("strace")
    local pid = assert(worker_pid(srv), "no worker")
    local p = io.popen(("%s -f -qq -p %d -e trace=fsync -e inject=fsync:error=EIO -o /dev/null >/dev/null 2>&1 & echo $!")
      :format(strace, pid))
    strace_pid = tonumber(p:read("l"))
    p:close()
    assert.truthy(server.wait_until(function() return (tracer_of(pid) or 0) ~= 0 end, 10, 0.05), "strace attached")
    require("socket").sleep(0.3)	-- every thread attached
    local mark = srv:log_mark()
    local queued = count(srv.spool .. "/queue")
    local code, lines = send(srv, "under EIO")
    assert.equal(451, code, lines and lines.text)
    assert.truthy(lines.text:find("4.3.0", 1, true), lines.text)
    assert.truthy(srv:wait_log("spool commit failed: Input/output error", 5, mark, true), srv:log():sub(mark + 1))
    assert.equal(0, count(srv.spool .. "/tmp"), "no half file in tmp/")
    assert.equal(queued, count(srv.spool .. "/queue"), "nothing queued")

    os.execute("kill " .. strace_pid)
    assert.truthy(server.wait_until(function() return (tracer_of(pid) or 0) == 0 end, 10, 0.05), "strace gone")
    strace_pid = nil
    code, lines = send(srv, "after EIO")
    assert.equal(250, code, lines and lines.text)
    local files = srv:wait_maildir("jdoe", nil, 1, 10)
    local got = {}
    for _, f in ipairs(srv:maildir_files("jdoe")) do got[#got + 1] = f.content end
    got = table.concat(got, "\n")
    assert.truthy(got:find("Subject: after EIO", 1, true), got)
    assert.is_nil(got:find("Subject: under EIO", 1, true), "the refused message is never delivered")
    assert.truthy(files)
  end)
end)

describe("a file size limit (ulimit -f) on the daemon", function()
  local srv, dir

  setup(function()
    dir = server.tempdir()
    local wrapper = dir .. "/luamta"
    local f = assert(io.open(wrapper, "w"))
    f:write("#!/bin/sh\nulimit -f 64\nexec '" .. server.BIN .. "' \"$@\"\n")
    f:close()
    os.execute("chmod +x '" .. wrapper .. "'")
    local bin = server.BIN
    server.BIN = wrapper
    local ok, s = pcall(server.start, {})
    server.BIN = bin
    assert(ok, s)
    srv = s
  end)

  teardown(function()
    if srv then srv:stop() srv:cleanup() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("a message over it: 552 5.3.4 (EFBIG), the worker lives, no half file; a small one is delivered", function()
    local mark = srv:log_mark()
    local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 10 }))
    c:greet("client.test")
    local code, lines = smtp.send_mail(c, "alice@client.test", { "jdoe@example.test" },
      smtp.message({ "Subject: too big" }, string.rep(string.rep("y", 70) .. "\r\n", 3000)))
    assert.equal(552, code, lines and (lines.text or lines[1]))
    assert.truthy(lines.text:find("5.3.4 Message size exceeds fixed limit", 1, true), lines.text)
    -- the same session goes on
    assert.equal(250, (c:cmd("NOOP")))
    c:cmd("QUIT", 1)
    c:close()
    assert.truthy(srv:wait_log("spool commit failed: File too large", 5, mark, true), srv:log():sub(mark + 1))
    assert.is_nil(srv:log():sub(mark + 1):find("died", 1, true), srv:log():sub(mark + 1))
    assert.equal(0, count(srv.spool .. "/tmp"), "no half file in tmp/")
    code, lines = send(srv, "small")
    assert.equal(250, code, lines and lines.text)
    assert.truthy(srv:wait_maildir("jdoe", nil, 1, 10))
  end)
end)

-- The threads ---------------------------------------------------------------------------------------------------

local function process_titled(srv, word)
  for _, pid in ipairs(srv:processes()) do
    if read("/proc/" .. pid .. "/cmdline"):find(word, 1, true) then return pid end
  end
end

local function tasks_of(pid)
  local out = {}
  local p = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  for l in p:lines() do out[#out + 1] = tonumber(l) end
  p:close()
  return out
end

local function task_tracer(pid, tid)
  return tonumber(read("/proc/" .. pid .. "/task/" .. tid .. "/status"):match("TracerPid:%s*(%d+)")) or 0
end

local function stop_strace(spid, pid, tids)
  os.execute("kill " .. spid .. " 2>/dev/null")
  assert.truthy(server.wait_until(function()
    for _, t in ipairs(tids) do if task_tracer(pid, t) ~= 0 then return false end end
    return true
  end, 10, 0.05), "strace gone")
end

-- strace_tid(pid, tid, args) -> the pid of an strace attached to that one thread (not -f: its siblings run free)
local function strace_tid(pid, tid, args)
  local p = io.popen(("%s -qq -p %d %s -o /dev/null >/dev/null 2>&1 & echo $!"):format(tools.need("strace"), tid,
    args))
  local spid = tonumber(p:read("l"))
  p:close()
  assert.truthy(server.wait_until(function() return task_tracer(pid, tid) ~= 0 end, 10, 0.05), "strace attached")
  return spid
end

describe("ENOSPC one system call at a time, in the one thread that makes it", function()
  local srv, bad, down_ip, down_port, hop, worker, router, th, spid, spid_of
  local RENAMES = "rename,renameat,renameat2"

  -- threads() -> the disk threads, seen at work on one message: the worker's commit (write(v) and the rename
  -- tmp/ -> incoming/), the router's load (the rename incoming/ -> queue/) and record (tmp/ -> new/ of a Maildir)
  local function threads()
    local out = srv.dir .. "/threads.trace"
    local pids = { worker, router }
    local all = {}
    for _, pid in ipairs(pids) do for _, t in ipairs(tasks_of(pid)) do all[#all + 1] = { pid, t } end end
    local p = io.popen(("%s -f -qq -p %d -p %d -e trace=%s,write,writev,mkdir,fsync -o %s >/dev/null 2>&1 & echo $!")
      :format(tools.need("strace"), worker, router, RENAMES, out))
    local tracer = tonumber(p:read("l"))
    p:close()
    assert.truthy(server.wait_until(function()
      for _, pt in ipairs(all) do if task_tracer(pt[1], pt[2]) == 0 then return false end end
      return true
    end, 10, 0.05), "strace attached to every thread")
    local qid = sink.send(srv, "alice@client.test", { "jdoe@example.test" }, "find the threads")
    assert.truthy(srv:wait_log(qid .. ": removed", 10, 0, true))
    os.execute("kill " .. tracer)
    for _, pt in ipairs(all) do
      assert.truthy(server.wait_until(function() return task_tracer(pt[1], pt[2]) == 0 end, 10, 0.05))
    end
    local found, text = {}, read(out)
    for tid, from, to in text:gmatch("(%d+) +rename%w*%([^\"]*\"([^\"]+)\", [^\"]*\"([^\"]+)\"") do
      if from:find("/spool/tmp/" .. qid, 1, true) then found.commit = tonumber(tid)
      elseif from:find("/spool/incoming/" .. qid, 1, true) then found.load = tonumber(tid)
      elseif from:find("/mailboxes/", 1, true) and to:find("/new/", 1, true) then found.record = tonumber(tid) end
    end
    -- which calls each makes: the commit writes with writev (evbuffer_write), no disk thread makes a directory
    -- but the record thread, for a Maildir (util_mkdirs)
    found.trace = text
    assert.truthy(found.commit and found.load and found.record, text)
    return found
  end

  local function inject(pid, tid, args)
    spid = strace_tid(pid, tid, args)
    spid_of = { pid, tid }
  end

  local function uninject()
    if spid then stop_strace(spid, spid_of[1], { spid_of[2] }) end
    spid = nil
  end

  local function contents(user)
    local got = {}
    for _, f in ipairs(srv:maildir_files(user)) do got[#got + 1] = f.content end
    return table.concat(got, "\n")
  end

  local function copies(user, subject)
    local n = 0
    for _, f in ipairs(srv:maildir_files(user)) do
      if f.content:find("Subject: " .. subject .. "\n", 1, true) then n = n + 1 end
    end
    return n
  end

  local function spool_empty(what)
    for _, d in ipairs { "tmp", "incoming" } do assert.equal(0, count(srv.spool .. "/" .. d), d .. "/ " .. what) end
    assert.same({}, srv:queue_files(), "queue/ " .. what)
  end

  setup(function()
    bad = sink.start { ip = "127.0.0.61", reject = { "RCPT" }, hard_reply = "550 5.1.1 No such user here" }
    down_ip = "127.0.0.62"
    down_port = sink.free_port { down_ip }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 1 }, routes = { ["bad.test"] = bad.literal,
        ["down.test"] = "[" .. down_ip .. "]:" .. down_port } },
    } }
    worker = assert(process_titled(srv, "worker"), "no worker")
    router = assert(process_titled(srv, "router"), "no router")
    th = threads()
  end)

  teardown(function()
    if spid then os.execute("kill " .. spid .. " 2>/dev/null") end
    if hop then hop:stop() end
    if bad then bad:stop() end
    if srv then srv:stop() srv:cleanup() end
  end)

  after_each(function()
    if spid then uninject() end
  end)

  -- refused(syscall, subject): the commit's syscall fails with ENOSPC on the worker's disk thread
  local function refused(syscall, subject)
    inject(worker, th.commit, ("-e trace=%s -e inject=%s:error=ENOSPC"):format(syscall, syscall))
    local mark = srv:log_mark()
    local code, lines = send(srv, subject)
    assert.equal(452, code, lines and lines.text)
    assert.truthy(lines.text:find("4.3.1", 1, true), lines.text)
    assert.truthy(srv:wait_log("spool commit failed: No space left on device", 5, mark, true),
      srv:log():sub(mark + 1))
    spool_empty("keeps nothing of the refused message")
    uninject()
    code, lines = send(srv, "after " .. subject)
    assert.equal(250, code, lines and lines.text)
    assert.truthy(server.wait_until(function() return copies("jdoe", "after " .. subject) == 1 end, 10, 0.05),
      contents("jdoe"))
    assert.equal(0, copies("jdoe", subject), "the refused message is never delivered")
  end

  it("the commit's writev: 452 4.3.1, nothing kept in tmp/, incoming/ or queue/; the next one is delivered",
    function()
      assert.truthy(th.trace:find(th.commit .. " +writev%(") , "the commit writes with writev:\n" .. th.trace)
      refused("writev", "writev ENOSPC")
    end)

  it("the commit's rename tmp/ -> incoming/: 452 4.3.1, nothing kept; the next one is delivered", function()
    refused(RENAMES, "rename ENOSPC")
  end)

  it("the router's admission rename incoming/ -> queue/: the message waits in incoming/, delivered once after",
    function()
      inject(router, th.load, ("-e trace=%s -e inject=%s:error=ENOSPC"):format(RENAMES, RENAMES))
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@client.test", { "jdoe@example.test" }, "admission ENOSPC")
      assert.truthy(srv:wait_log(qid .. ": cannot read queue file: No space left on device", 5, mark, true),
        srv:log():sub(mark + 1))
      socket.sleep(1.5)	-- the drain of incoming/ tries again every second
      assert.truthy(read(srv:spool_file("incoming", qid)):find("Subject: admission ENOSPC", 1, true), "in incoming/")
      assert.equal(0, copies("jdoe", "admission ENOSPC"), "not delivered while it cannot be admitted")
      uninject()
      assert.truthy(srv:wait_log(qid .. ": removed", 10, mark, true), srv:log():sub(mark + 1))
      assert.equal(1, copies("jdoe", "admission ENOSPC"), contents("jdoe"))
      spool_empty("after the delivery")
    end)

  it("mkdir of a new Maildir (the only disk thread that makes directories): deferred, delivered once after",
    function()
      for tid in th.trace:gmatch("(%d+) +mkdir%(") do
        assert.equal(th.record, tonumber(tid), "only the record thread makes directories:\n" .. th.trace)
      end
      assert.is_nil(io.open(srv:maildir("postmaster")), "a new mailbox")
      inject(router, th.record, "-e trace=mkdir -e inject=mkdir:error=ENOSPC")
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@client.test", { "postmaster@example.test" }, "mkdir ENOSPC")
      local line = sink.wait_line(srv, { qid .. ": to=<postmaster@example.test>", "status=deferred" }, 5, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find("dsn=4.3.0", 1, true) and line:find("No space left on device", 1, true), line)
      assert.is_nil(io.open(srv:maildir("postmaster")), "no Maildir made")
      uninject()
      assert.truthy(srv:wait_log(qid .. ": removed", 10, mark, true), srv:log():sub(mark + 1))
      assert.equal(1, copies("postmaster", "mkdir ENOSPC"), contents("postmaster"))
    end)

  -- maildir_fault(args, subject, why): the record thread's call fails once; deferred, then delivered once
  local function maildir_fault(args, subject, why)
    inject(router, th.record, args)
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@client.test", { "jdoe@example.test" }, subject)
    local line = sink.wait_line(srv, { qid .. ": to=<jdoe@example.test>", "status=deferred" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=4.3.0", 1, true) and line:find("maildir write failed: " .. why, 1, true), line)
    assert.truthy(srv:wait_log(qid .. ": removed", 10, mark, true), srv:log():sub(mark + 1))
    socket.sleep(0.3)
    assert.equal(1, copies("jdoe", subject), "delivered exactly once:\n" .. contents("jdoe"))
    assert.equal(0, count(srv:maildir("jdoe") .. "/tmp"), "the Maildir's tmp/ is clean")
    spool_empty("after the delivery")
  end

  it("the write of the file in the Maildir's tmp/: deferred 4.3.0, tmp/ clean, delivered once after", function()
    -- the record thread's first write after the attach is the Maildir file's (then the pipe to the loop)
    maildir_fault("-e trace=write -e inject=write:error=ENOSPC:when=1", "maildir write ENOSPC",
      "No space left on device")
  end)

  it("the fsync of the Maildir's new/ (EIO): deferred, the file taken back out of new/, delivered once after",
    function()
      -- the record thread's fsyncs: the file, then new/ (util_fsync_dir)
      maildir_fault("-e trace=fsync -e inject=fsync:error=EIO:when=2", "new fsync EIO", "Input/output error")
    end)

  it("the state-line append: the outcome kept in memory and appended at the next load, never delivered twice",
    function()
      -- jdoe is delivered (the file's write and its one chunk), down.test deferred: the third write is the append
      inject(router, th.record, "-e trace=write -e inject=write:error=ENOSPC:when=3")
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@client.test", { "jdoe@example.test", "x@down.test" }, "state ENOSPC")
      assert.truthy(srv:wait_log(qid .. ": cannot record delivery state: No space left on device", 5, mark, true),
        srv:log():sub(mark + 1))
      assert.equal(1, copies("jdoe", "state ENOSPC"))
      -- the next attempts (retry = { 1 }) find jdoe done although no line of the first one reached the disk
      assert.truthy(server.wait_until(function()
        return sink.count_lines(srv, { qid .. ": to=<x@down.test>", "status=deferred" }, mark) >= 3
      end, 10, 0.05), srv:log():sub(mark + 1))
      assert.equal(1, copies("jdoe", "state ENOSPC"), "never delivered twice:\n" .. contents("jdoe"))
      local state = read(srv:spool_file("state", qid))
      assert.truthy(state:find("\n?0 delivered") or state:find("delivered"), state)
      assert.equal("\n", state:sub(-1), "the state file ends with a whole line")
      uninject()
      hop = sink.start { ip = down_ip, port = down_port }
      assert.truthy(srv:wait_log(qid .. ": removed", 10, mark, true), srv:log():sub(mark + 1))
      assert.equal(1, #hop:find("x@down.test"), "the deferred recipient once")
      assert.equal(1, copies("jdoe", "state ENOSPC"), contents("jdoe"))
      hop:stop()
      hop = nil
    end)

  it("the bounce's writev: the failed recipient waits, its bounce is queued once the fault stops", function()
    -- the record thread writes Maildir files and state lines with write; only a bounce (spool_write_message) writev
    inject(router, th.record, "-e trace=writev -e inject=writev:error=ENOSPC")
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "y@bad.test" }, "bounce ENOSPC")
    local line = sink.wait_line(srv, { qid .. ": to=<y@bad.test>", "status=deferred" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("No space left on device", 1, true), line)
    assert.equal(0, count(srv.spool .. "/tmp"), "no half bounce in tmp/")
    assert.is_nil(srv:log():sub(mark + 1):find("sender non-delivery notification", 1, true))
    uninject()
    assert.truthy(srv:wait_log(qid .. ": removed", 10, mark, true), srv:log():sub(mark + 1))
    assert.truthy(server.wait_until(function()
      return #srv:log_lines(qid .. ": sender non-delivery notification", mark) == 1 and
        contents("jdoe"):find(qid, 1, true) ~= nil
    end, 10, 0.05), srv:log():sub(mark + 1))
    socket.sleep(0.5)
    assert.equal(1, #srv:log_lines(qid .. ": sender non-delivery notification", mark), "one bounce")
    spool_empty("after the bounce")
  end)
end)
