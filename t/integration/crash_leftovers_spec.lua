-- t/integration/crash_leftovers_spec.lua - what a crash leaves behind that no later step would remove, and the
-- router's start-up sweep that removes it (docs/reliability.md): a state file whose message is finished (its
-- queue file went first, the kill landed before the state file followed), and partial files in Maildir tmp/
-- from deliveries killed half-way. Each case stops the server, puts the leftovers on disk exactly as the router
-- would have left them, starts it again, and looks at what is left. A partial file's writer is gone when its pid
-- is not a running luamta router: absent, a zombie, or a live process of another program (pids are reused).
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local tools = require "t.helpers.tools"
local lfs = require "lfs"

local function exists(path)
  return lfs.attributes(path) ~= nil
end

local function write(path, text)
  server.run("mkdir -p " .. server.sh_quote(path:match("^(.*)/[^/]*$")))
  server.write_file(path, text or "partial")
end

-- a queue ID of the form the daemon makes (20 upper-case hex digits)
local function fake_qid(n)
  return ("6B16000000000000%04X"):format(n)
end

-- the host part of our Maildir names: gethostname() with '/' and ':' as '_'
local HOST = (server.run("hostname"):gsub("%s+$", ""):gsub("[/:]", "_"))

-- dead_pid() -> the pid of a process that has exited
local function dead_pid()
  return tonumber((server.run("sh -c 'echo $$'")):match("%d+"))
end

-- titled_router(python) -> the pid of a live process titled "luamta: router" (its argv[0]), as a router is
local function titled_router(python)
  local script = [[import os; os.execvp("sleep", ["luamta: router", "60"])]]
  local pid = tonumber(assert(server.run(python .. " -c " .. server.sh_quote(script) .. " >/dev/null 2>&1 & echo $!")
    :match("%d+")))
  for _ = 1, 250 do     -- python3 may be a wrapper script that takes a while to exec
    local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
    local title = f and f:read("a") or ""
    if f then f:close() end
    if title:find("luamta: router\0", 1, true) == 1 then return pid end
    server.run("sleep 0.02")
  end
  error("the titled process did not start")
end

-- zombie_router() -> the pid of a zombie whose comm name is "luamta: router", and of its parent that never reaps
-- it (to kill when done): an exited router whose pid is still taken
local function zombie_router(python)
  local script = [[
import ctypes, os, time
zombie = os.fork()
if zombie == 0:
    ctypes.CDLL(None).prctl(15, b"luamta: router", 0, 0, 0)     # PR_SET_NAME, as proctitle_set() does
    os._exit(0)
os.waitid(os.P_PID, zombie, os.WEXITED | os.WNOWAIT)                # exited, and left unreaped
print(zombie, os.getpid(), flush=True)
for fd in (0, 1, 2):
    os.close(fd)
time.sleep(60)
]]
  local out = server.run(python .. " -c " .. server.sh_quote(script) .. " &")
  local zombie, parent = out:match("(%d+) (%d+)")
  assert(zombie, out)
  return tonumber(zombie), tonumber(parent)
end

local function ours(pid, qid, i, host)
  return ("1796000000.M000123P%d_%s.%d.%s"):format(pid, qid, i or 0, host or HOST)
end

describe("the router's start-up sweep", function()
  local srv, hop_port

  setup(function()
    hop_port = sink.free_port { "127.0.0.61" }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 60 }, routes = { ["later.test"] = "[127.0.0.61]:" .. hop_port } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("removes a state file whose message is finished, and keeps those of queued and held messages", function()
    -- a message still queued (deferred: nothing listens at its next hop) and one held by the administrator
    local mark = srv:log_mark()
    local queued = sink.send(srv, "alice@example.org", { "q@later.test", "jdoe@example.test" }, "still queued")
    local held = sink.send(srv, "alice@example.org", { "h@later.test" }, "held")
    assert.truthy(sink.wait_line(srv, { queued .. ": to=<q@later.test>", "status=deferred" }, 5, mark))
    assert.truthy(sink.wait_line(srv, { held .. ": to=<h@later.test>", "status=deferred" }, 5, mark))
    local out, rc = srv:luamta("queue hold " .. held)
    assert.equal(0, rc, out)
    srv:stop()
    assert.truthy(exists(srv:spool_file("state", queued)))
    assert.truthy(exists(srv:spool_file("state", held)))
    -- what the router leaves when the kill lands between removing the queue file and the state file
    local orphan = fake_qid(1)
    write(srv:spool_file("state", orphan), "0 delivered delivered to maildir of jdoe@example.test\n")

    mark = srv:log_mark()
    srv:restart()
    assert.truthy(srv:wait_log(orphan .. ": removed the state file of a finished message", 5, mark, true),
      srv:log():sub(mark + 1))
    assert.is_false(exists(srv:spool_file("state", orphan)))
    assert.truthy(exists(srv:spool_file("state", queued)), "a queued message keeps its state file")
    assert.truthy(exists(srv:spool_file("state", held)), "a held message keeps its state file")
    assert.truthy(srv:wait_log("start-up sweep removed 1 state file(s)", 5, mark, true), srv:log():sub(mark + 1))
    -- the queued message's delivered recipient stays delivered: its state was not lost
    assert.equal(1, #srv:maildir_files("jdoe"))
    srv:luamta("queue delete " .. queued)
    srv:luamta("queue delete " .. held)
  end)

  it("removes our partial Maildir files whose writer is gone or that are 36 hours old, and nothing else",
    function()
      local python = tools.need("python3")
      local mark = srv:log_mark()
      local qid = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "delivered before the crash")
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
      srv:stop()
      local jdoe, other = srv:maildir("jdoe"), srv:maildir("u", "other.test")
      local live = titled_router(python)
      local stranger = tonumber(assert(server.run("sh -c 'sleep 60 >/dev/null 2>&1 & echo $!'"):match("%d+")))
      local zombie, zombie_parent = zombie_router(python)
      finally(function() server.run(("kill %d %d %d"):format(live, stranger, zombie_parent)) end)
      local files = {
        dead = jdoe .. "/tmp/" .. ours(dead_pid(), qid),                     -- killed half-way: removed
        deep = other .. "/tmp/" .. ours(dead_pid(), fake_qid(2), 3),         -- another domain's Maildir
        live = jdoe .. "/tmp/" .. ours(live, fake_qid(3)),                   -- a router runs with it: kept
        reused = jdoe .. "/tmp/" .. ours(stranger, fake_qid(6)),             -- its pid went to sleep(1): removed
        zombie = jdoe .. "/tmp/" .. ours(zombie, fake_qid(7)),               -- its router exited: removed
        old = jdoe .. "/tmp/" .. ours(live, fake_qid(4)),                    -- 40 hours old: removed
        foreign = jdoe .. "/tmp/1796000000.M1P1.mutt-host",                  -- another program's: kept
        foreign_old = jdoe .. "/tmp/1796000001.M2P2.mutt-host",              -- even when old: kept
        other_host = jdoe .. "/tmp/" .. ours(dead_pid(), fake_qid(5), 0, "nfs-peer.test"),  -- kept
      }
      for _, path in pairs(files) do write(path) end
      server.run("touch -d '40 hours ago' " .. server.sh_quote(files.old) .. " " .. server.sh_quote(files.foreign_old))
      local delivered = {}
      for _, f in ipairs(srv:maildir_files("jdoe")) do delivered[#delivered + 1] = f.name end
      assert.truthy(#delivered >= 1)

      mark = srv:log_mark()
      srv:restart()
      assert.truthy(srv:wait_log("start-up sweep removed 0 state file(s) of finished messages and 5 partial", 5,
        mark, true), srv:log():sub(mark + 1))
      assert.is_false(exists(files.dead), "a dead writer's partial file")
      assert.is_false(exists(files.reused), "a partial file whose writer's pid runs another program")
      assert.is_false(exists(files.zombie), "a partial file whose writer is a zombie")
      assert.is_false(exists(files.deep), "a partial file in another domain's Maildir")
      assert.is_false(exists(files.old), "a partial file older than 36 hours")
      assert.truthy(exists(files.live), "a running router's file")
      assert.truthy(exists(files.foreign), "another program's file")
      assert.truthy(exists(files.foreign_old), "another program's old file")
      assert.truthy(exists(files.other_host), "another host's file")
      assert.truthy(sink.log_line(srv, { qid .. ": removed a partial Maildir file " .. files.dead,
        "(its writer is gone)" }, mark), srv:log():sub(mark + 1))
      assert.truthy(sink.log_line(srv, { "removed a partial Maildir file " .. files.old, "(older than 36 hours)" },
        mark), srv:log():sub(mark + 1))
      local now = {}
      for _, f in ipairs(srv:maildir_files("jdoe")) do now[#now + 1] = f.name end
      assert.same(delivered, now, "new/ is untouched")
    end)

  it("sweeps more partial files than one step takes, and keeps delivering meanwhile", function()
    srv:stop()
    local tmp = srv:maildir("many") .. "/tmp/"
    server.run("mkdir -p " .. server.sh_quote(tmp))
    local pid = dead_pid()
    for i = 1, 700 do server.write_file(tmp .. ours(pid, fake_qid(10), i), "x") end
    local mark = srv:log_mark()
    srv:restart()
    local qid = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "during the sweep")
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    local n = srv:wait_log("start%-up sweep removed %d+ state file%(s%) of finished messages and (%d+) partial", 10, mark)
    assert.truthy(n and tonumber(n) >= 700, srv:log():sub(mark + 1))   -- and the previous case's live file
    local left = 0
    for name in lfs.dir(tmp) do if name ~= "." and name ~= ".." then left = left + 1 end end
    assert.equal(0, left)
    assert.is_true(sink.count_lines(srv, "removed a partial Maildir file", mark) <= 50, "the log is bounded")
  end)
end)
