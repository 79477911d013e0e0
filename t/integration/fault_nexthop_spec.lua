-- t/integration/fault_nexthop_spec.lua - hostile next hops (docs/reliability.md, "Faults"): a next hop that sends
-- a 1 MiB reply line, a reply that never ends, its banner and then silence, a 250 to DATA before the data, a 354
-- to RCPT, or resets the connection in the middle of the data. Each time the recipient is deferred with a clear
-- reason in the log, the queue file stays, the router's memory stays bounded, and the retry delivers the message
-- once to the same next hop behaving well (t/opt/hostile_hop.py misbehaves on its first connection only).
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local tools = require "t.helpers.tools"

local SRCDIR = os.getenv("PWD")

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- router_rss(srv) -> the router's resident set in KiB (its title names it)
local function router_rss(srv)
  for _, pid in ipairs(srv:processes()) do
    local cmd = read("/proc/" .. pid .. "/cmdline")
    if cmd:find("router", 1, true) then
      return tonumber(read("/proc/" .. pid .. "/status"):match("VmRSS:%s*(%d+)"))
    end
  end
end

local CASES = {
  { mode = "longline", ip = "127.0.0.61", why = "sent a reply line that is too long" },
  { mode = "endless", ip = "127.0.0.62", why = "timed out while sending EHLO" },
  { mode = "silence", ip = "127.0.0.63", why = "timed out while sending EHLO" },
  { mode = "data250", ip = "127.0.0.64", why = 'answered DATA with "250 2.0.0 Ok: queued before the data", not 354' },
  { mode = "rcpt354", ip = "127.0.0.65", why = "354 go ahead" },
  { mode = "reset", ip = "127.0.0.66", why = "lost connection while sending the message" },
}

describe("a hostile next hop", function()
  local srv, dir
  local pids = {}

  setup(function()
    local python = tools.need("python3")
    dir = server.tempdir()
    local routes = {}
    for _, c in ipairs(CASES) do
      c.port = sink.free_port { c.ip }
      c.dump = dir .. "/" .. c.mode .. ".dump"
      local p = io.popen(("%s %s/t/opt/hostile_hop.py %s %d %s %s >%s/%s.out 2>&1 & echo $!"):format(python,
        SRCDIR, c.ip, c.port, c.mode, c.dump, dir, c.mode))
      pids[#pids + 1] = tonumber(p:read("l"))
      p:close()
      routes[c.mode .. ".test"] = "[" .. c.ip .. "]:" .. c.port
    end
    for _, c in ipairs(CASES) do
      assert(server.wait_until(function() return read(dir .. "/" .. c.mode .. ".out"):find("ready") end, 10, 0.05),
        c.mode .. " hop did not start")
    end
    srv = server.start { config = sink.router_config { routing = { routes = routes, retry = { 1, 1 } } } }
  end)

  teardown(function()
    if srv then srv:stop() srv:cleanup() end
    for _, pid in ipairs(pids) do os.execute("kill " .. pid .. " 2>/dev/null") end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  for _, c in ipairs(CASES) do
    it(c.mode .. ": deferred with a clear reason, kept, delivered once on retry, router memory bounded", function()
      local mark = srv:log_mark()
      local rss0 = router_rss(srv)
      local qid = sink.send(srv, "alice@example.org", { "x@" .. c.mode .. ".test" }, "hostile " .. c.mode)
      local line = sink.wait_line(srv, { qid .. ": to=<x@" .. c.mode .. ".test>", "status=deferred" }, 15, mark)
      assert.truthy(line, srv:log():sub(mark + 1))
      assert.truthy(line:find(c.why, 1, true), line)
      assert.is_nil(line:find("status=sent", 1, true))
      local kept = false
      for _, f in ipairs(srv:queue_files()) do if f:find(qid, 1, true) then kept = true end end
      assert.truthy(kept, "the queue file stays while the recipient is deferred")
      local rss1 = router_rss(srv)
      assert.truthy(rss0 and rss1 and rss1 - rss0 < 20 * 1024, ("router RSS %s -> %s KiB"):format(rss0, rss1))
      local sent = sink.wait_line(srv, { qid .. ": to=<x@" .. c.mode .. ".test>", "status=sent" }, 15, mark)
      assert.truthy(sent, srv:log():sub(mark + 1))
      assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark))
      local got = read(c.dump)
      local _, copies = got:gsub("Subject: hostile " .. c.mode, "")
      assert.equal(1, copies, got)
    end)
  end
end)
