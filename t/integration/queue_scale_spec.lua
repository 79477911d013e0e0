-- t/integration/queue_scale_spec.lua - the queue at scale (docs/admin.md, "The queue at scale"): a message whose
-- wake-up datagram was dropped still reaches the router within a second or two, the router never holds more than
-- routing.active_limit messages even when it restarts on a larger queue, and a queue file corrupted while the
-- server was stopped is moved to corrupt/ while everything else is delivered.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

local function signal(sig, pid)
  assert(os.execute("kill -" .. sig .. " " .. pid))
end

-- send_many(srv, n, rcpt, tag) -> the queue IDs of n messages sent in one session
local function send_many(srv, n, rcpt, tag)
  local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 10 }))
  c:greet("client.test")
  local ids = {}
  for i = 1, n do
    local code, lines = smtp.send_mail(c, "alice@example.org", rcpt,
      smtp.message({ "From: <alice@example.org>", "Subject: " .. tag .. " " .. i }, "body " .. i .. "\r\n"))
    assert.equal(250, code, lines and (lines.text or lines[1]))
    ids[#ids + 1] = lines[1]:match("queued as (%x+)")
  end
  c:cmd("QUIT", 1)
  c:close()
  return ids
end

-- queued_then_stopped(srv, n, tag) -> the IDs of n messages to jdoe that a routing rule deferred, once they are on
-- record as deferred and the server is stopped; the bundled routing (Maildir) is back for the next start
local function queued_then_stopped(srv, n, tag)
  srv:write_rule("routing", [[
local mta = require "luamta"
return { route = function(msg, rcpt) return mta.defer("4.4.0 held by the integration test") end }
]])
  srv:reload()
  local mark = srv:log_mark()
  local ids = send_many(srv, n, "jdoe@example.test", tag)
  for _, id in ipairs(ids) do
    assert.truthy(srv:wait_log(id .. ": to=<jdoe@example%.test>,[^\n]*status=deferred", 5, mark), srv:log())
  end
  srv:stop()
  os.remove(srv.rules_dir .. "/routing.lua")
  return ids
end

describe("the router's wake-up", function()
  local srv, stopped
  local N = 800

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if stopped then os.execute("kill -CONT " .. stopped) end
    if srv then srv:cleanup() end
  end)

  it("takes every committed message within seconds although most of the workers' datagrams were dropped",
    function()
      -- A stopped router reads nothing: the workers' socket to it fills (its send buffer holds a few hundred
      -- datagrams) and they drop the rest, as they do when a busy router falls behind.
      stopped = assert(srv:process_titled("luamta: router"), "no router process")
      signal("STOP", stopped)
      local ids = send_many(srv, N, "jdoe@example.test", "woken")
      assert.equal(N, #ids)
      local mark = srv:log_mark()
      signal("CONT", stopped)
      stopped = nil
      -- every one taken within a few seconds, well before the rescan of the whole queue (60 s) would find them
      local taken = 0
      server.wait_until(function()
        taken = select(2, srv:log():sub(mark + 1):gsub("%(queue active%)", ""))
        return taken >= N
      end, 5, 0.1)
      assert.equal(N, taken, "taken by the router within 5 s")
      local files = srv:wait_maildir("jdoe", nil, N, 60)
      assert.equal(N, #files)
      assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
    end)
end)

describe("routing.active_limit", function()
  local srv, hop

  setup(function()
    hop = sink.start { ip = "127.0.0.51", args = { "-w", "1" } }   -- each DATA waits 1 s for its 354
    srv = server.start { config = sink.router_config {
      routing = { relay_host = hop.literal, active_limit = 4, max_per_domain = 20 },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:stop() end
  end)

  it("after a restart on a queue of 20, holds at most 4 messages at a time and delivers them all", function()
    local pid = assert(srv:process_titled("luamta: router"), "no router process")
    signal("STOP", pid)
    local ids = send_many(srv, 20, "far@outside.test", "limited")
    srv:kill9()   -- the 20 never reached the router: they wait in incoming/
    assert.equal(20, #srv:queue_files())
    local mark = srv:log_mark()
    srv:restart()
    local got = hop:wait_messages(20, 30)
    assert.equal(20, #got, srv:log():sub(mark + 1))
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
    -- A message is active from before its "(queue active)" line until after its "removed" line, so the lines
    -- counted in log order are a lower bound of what the router held.
    local active, peak, seen = 0, 0, {}
    for line in srv:log():sub(mark + 1):gmatch("[^\n]+") do
      local id = line:match(": (%x+): from=<[^>]*>, size=%d+, nrcpt=%d+ %(queue active%)")
      if id then
        active, seen[id] = active + 1, true
        if active > peak then peak = active end
      elseif line:match(": %x+: removed$") then
        active = active - 1
      end
    end
    for _, id in ipairs(ids) do assert.truthy(seen[id], id .. " was never taken") end
    assert.truthy(peak >= 2 and peak <= 4, "at most 4 active at once, seen " .. peak)
  end)
end)

describe("a queue file corrupted while the server was stopped", function()
  local srv

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("is moved to corrupt/ with its state file, and the other messages are delivered", function()
    local ids = queued_then_stopped(srv, 3, "kept")
    local bad = ids[2]
    local f = assert(io.open(srv:spool_file("queue", bad), "wb"))
    f:write("this is not a luamta queue file\n")
    f:close()
    local mark = srv:log_mark()
    srv:restart()
    local files = srv:wait_maildir("jdoe", nil, 2, 10)
    assert.equal(2, #files, srv:log():sub(mark + 1))
    local line = srv:wait_log(bad .. ": cannot read queue file: [^\n]*; moved to [^\n]*/corrupt/", 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(server.read_file(srv.spool .. "/corrupt/" .. bad), "the file is kept in corrupt/")
    assert.truthy(server.read_file(srv.spool .. "/corrupt/" .. bad .. ".state"), "with its state file")
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
    -- read once, not at every walk of the queue
    socket.sleep(1.5)
    local n = select(2, srv:log():sub(mark + 1):gsub(bad .. ": cannot read queue file", ""))
    assert.equal(1, n)
  end)
end)

describe("a spool of an older version, with flat queue/ and state/", function()
  local srv

  setup(function()
    srv = server.start {}
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("is moved into the hashed sub-directories at start and its messages are delivered", function()
    local ids = queued_then_stopped(srv, 2, "flat")
    for _, id in ipairs(ids) do   -- where an older version kept them
      for _, dir in ipairs { "queue", "state" } do
        assert(os.rename(srv:spool_file(dir, id), srv.spool .. "/" .. dir .. "/" .. id))
      end
    end
    local mark = srv:log_mark()
    srv:restart()
    local files = srv:wait_maildir("jdoe", nil, 2, 10)
    assert.equal(2, #files, srv:log():sub(mark + 1))
    assert.truthy(srv:wait_log("spool: moved 2 file%(s%) of [^\n]*/queue into its hashed sub%-directories", 5, mark),
      srv:log():sub(mark + 1))
    assert.truthy(srv:wait_log("spool: moved 2 file%(s%) of [^\n]*/state into", 5, mark))
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
    local n = 0
    for name in require("lfs").dir(srv.spool .. "/queue") do
      if name:match("^%x$") then n = n + 1 end
    end
    assert.equal(16, n, "sixteen sub-directories")
  end)
end)
