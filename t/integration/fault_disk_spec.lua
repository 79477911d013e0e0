-- t/integration/fault_disk_spec.lua - disk errors at the commit of a message (docs/reliability.md, "Faults"),
-- injected with strace into the running worker (no special filesystem): fsync failing with EIO. The client gets
-- 451 4.3.0, never 250; the log says why; the spool keeps no half file; once the fault stops, the next message is
-- accepted and delivered. Under a file size limit (ulimit -f) a message too big gets 552 5.3.4, as Postfix's
-- queue_file_size_limit, and nothing else changes.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"

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
