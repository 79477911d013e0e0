-- t/integration/fault_clock_spec.lua - the wall clock jumps under a running daemon (issue 8, docs/reliability.md
-- "Faults"). The daemon runs with libfaketime preloaded (package faketime): FAKETIME_TIMESTAMP_FILE holds the
-- offset ("+0", "+2d", "-2d"), read again at every clock call (FAKETIME_NO_CACHE=1), so the spec moves the clock
-- by rewriting that file. Only the wall clock moves (FAKETIME_DONT_FAKE_MONOTONIC=1), as when NTP steps it or an
-- administrator sets the date: timers run on the monotonic clock, the queue's due times and a message's age on
-- the wall clock.
--  - forward by days past routing.max_queue_time: a deferred message bounces with 4.4.7 at its next attempt,
--    and once;
--  - backward by days: deferred messages are still retried, also the ones that have no retry timer (beyond
--    routing.active_limit) and wait for the walk of queue/, whose due times (file mtimes) now lie days ahead.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local tools = require "t.helpers.tools"
local socket = require "socket"

local sh_quote, run, write_file = server.sh_quote, server.run, server.write_file

-- the multi-threaded libfaketime (the daemon has disk threads), wherever the faketime package put it
local function libfaketime()
  tools.need("faketime")
  local out = run("for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do "
    .. "[ -f \"$f\" ] && echo \"$f\"; done")
  local path = out:match("(/[^\n]+)")
  if not path then error("install faketime (libfaketimeMT.so.1 is missing)", 2) end
  return path
end

-- with_clock() -> clock: server.BIN is replaced by a wrapper that runs the daemon under libfaketime (until
-- clock:restore()); clock:set("+2d") moves its wall clock (the file is renamed into place: never half-written).
local function with_clock()
  local clock = { dir = server.tempdir(), real_bin = server.BIN }
  clock.file = clock.dir .. "/faketime"
  function clock:set(offset)
    write_file(self.file .. ".tmp", offset .. "\n")
    assert(os.rename(self.file .. ".tmp", self.file))
  end
  function clock:restore()
    server.BIN = self.real_bin
    if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(self.dir)) end
    self.dir = nil
  end
  clock:set("+0")
  local wrapper = clock.dir .. "/luamta"
  write_file(wrapper, table.concat({
    "#!/bin/sh",
    "LD_PRELOAD=" .. sh_quote(libfaketime()) .. " FAKETIME_TIMESTAMP_FILE=" .. sh_quote(clock.file)
      .. " FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1",
    -- Under an ASan build (make check-sanitizers) libfaketime comes before ASan's runtime, which ASan refuses
    -- unless told; the option is ignored by a normal build.
    'ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"',
    "export LD_PRELOAD FAKETIME_TIMESTAMP_FILE FAKETIME_NO_CACHE FAKETIME_DONT_FAKE_MONOTONIC ASAN_OPTIONS",
    "exec " .. sh_quote(clock.real_bin) .. ' "$@"',
  }, "\n") .. "\n")
  run("chmod +x " .. sh_quote(wrapper))
  server.BIN = wrapper
  return clock
end

local BOUNCED = "Undelivered Mail Returned to Sender"

local function reports(srv, subject)
  local out = {}
  for _, f in ipairs(srv:maildir_files("jdoe")) do
    if f.content:find("\nSubject: " .. subject .. "\n", 1, true) then out[#out + 1] = f end
  end
  return out
end

describe("the wall clock jumps forward by two days, past routing.max_queue_time (one day)", function()
  local clock, srv

  setup(function()
    clock = with_clock()
    local closed = "[127.0.0.71]:" .. sink.free_port { "127.0.0.71" }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 1 }, max_queue_time = 86400, routes = { ["late.test"] = closed } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if clock then clock:restore() end
  end)

  it("bounces the deferred message with 4.4.7 at its next attempt, once", function()
    local mark = srv:log_mark()
    local qid = sink.send(srv, "jdoe@example.test", { "a@late.test" }, "before the jump")
    assert.truthy(server.wait_until(function()
      return sink.count_lines(srv, { qid .. ": to=<a@late.test>", "status=deferred" }, mark) >= 2
    end, 6, 0.05), srv:log():sub(mark + 1))
    assert.same({}, reports(srv, BOUNCED), "not expired before the jump")
    clock:set("+2d")
    local line = sink.wait_line(srv, { qid .. ": to=<a@late.test>", "status=bounced" }, 6, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("dsn=4.4.7,", 1, true), line)
    assert.truthy(line:find("message delayed too long in the queue", 1, true), line)
    assert.truthy(sink.wait_line(srv, qid .. ": removed", 5, mark), srv:log():sub(mark + 1))
    assert.truthy(server.wait_until(function() return #reports(srv, BOUNCED) >= 1 end, 5, 0.05))
    socket.sleep(2)   -- two more retry intervals: nothing more may come
    local b = reports(srv, BOUNCED)
    assert.equal(1, #b, "one bounce")
    assert.truthy(b[1].content:find("\nStatus: 4.4.7\n", 1, true), b[1].content)
    assert.equal(1, sink.count_lines(srv, { qid .. ": to=<a@late.test>", "status=bounced" }, mark), "bounced once")
    assert.same({}, srv:queue_files())
  end)
end)

describe("the wall clock jumps backward by two days, with routing.active_limit = 1", function()
  local clock, srv, nexthop, port

  setup(function()
    clock = with_clock()
    port = sink.free_port { "127.0.0.72" }
    srv = server.start { config = sink.router_config {
      routing = { retry = { 1 }, active_limit = 1, routes = { ["back.test"] = "[127.0.0.72]:" .. port } },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if nexthop then nexthop:stop() end
    if clock then clock:restore() end
  end)

  -- One retry timer at most (routing.active_limit): the first message keeps it, the second is left to the walk
  -- of queue/ (every 60 s), which finds it by its file's mtime, now two days ahead of the clock.
  it("still retries deferred messages, also the one that waits for the walk of queue/", function()
    local mark = srv:log_mark()
    local first = sink.send(srv, "jdoe@example.test", { "a@back.test" }, "timer")
    local second = sink.send(srv, "jdoe@example.test", { "b@back.test" }, "walk")
    for _, x in ipairs { { first, "a" }, { second, "b" } } do
      assert.truthy(sink.wait_line(srv, { x[1] .. ": to=<" .. x[2] .. "@back.test>", "status=deferred" }, 6, mark),
        srv:log():sub(mark + 1))
    end
    clock:set("-2d")
    nexthop = sink.start { ip = "127.0.0.72", port = port }
    assert.truthy(sink.wait_line(srv, { first .. ": to=<a@back.test>", "status=sent" }, 6, mark),
      srv:log():sub(mark + 1))
    -- the walk runs every 60 s from the router's start: the second message is due at the first one after the jump
    local sent = sink.wait_line(srv, { second .. ": to=<b@back.test>", "status=sent" }, 75, mark)
    assert.truthy(sent, "not retried after the clock went back\n" .. srv:log():sub(mark + 1))
    socket.sleep(0.3)
    assert.equal(1, #nexthop:find("a@back.test"))
    assert.equal(1, #nexthop:find("b@back.test"))
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "both messages done")
  end)
end)
