-- t/integration/queue_stream_spec.lua - the router streams a message from its queue file a chunk at a time
-- (docs/admin.md, "The queue at scale"): large messages with dot lines on every side of a chunk's edge arrive
-- intact at the next hop and in the Maildir, and the router's memory does not grow with their size.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local smtp = require "t.helpers.smtp"

local MIB = 1024 * 1024

-- peak_kib(pid) -> VmHWM, the process's resident set at its largest, in KiB
local function peak_kib(pid)
  local s = server.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+) kB"))
end

-- big_body(n, seed) -> about n octets of CRLF lines, many of them starting with '.', of varied lengths so that
-- chunk edges fall everywhere
local function big_body(n, seed)
  local parts, len, i = {}, 0, seed
  while len < n do
    i = i + 1
    local line = (i % 3 == 0 and "." or "") .. ("x"):rep((i * 7919) % 997) .. " " .. i
    parts[#parts + 1] = line
    len = len + #line + 2
  end
  return table.concat(parts, "\r\n") .. "\r\n"
end

local function send(srv, rcpts, subject, body)
  local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 30 }))
  c:greet("client.test")
  local code, lines = smtp.send_mail(c, "alice@example.org", rcpts,
    smtp.message({ "From: <alice@example.org>", "Subject: " .. subject }, body))
  c:cmd("QUIT", 1)
  c:close()
  assert.equal(250, code, lines and (lines.text or lines[1]))
end

describe("a large message", function()
  local srv, hop

  setup(function()
    hop = sink.start { ip = "127.0.0.52" }
    srv = server.start { config = sink.router_config {
      server = { max_message_size = 20 * MIB },
      routing = { relay_host = hop.literal },
    } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:stop() end
  end)

  it("reaches the next hop and the Maildir intact, dot lines unstuffed, and the router stays small", function()
    local pid = assert(srv:process_titled("luamta: router"), "no router process")
    local before = peak_kib(pid)
    local bodies = {}
    for i = 1, 3 do
      bodies[i] = big_body(8 * MIB, i * 1000)
      send(srv, { "far" .. i .. "@outside.test", "jdoe@example.test" }, "big " .. i, bodies[i])
    end
    local got = hop:wait_messages(3, 60)
    assert.equal(3, #got, srv:log())
    local files = srv:wait_maildir("jdoe", nil, 3, 30)
    assert.equal(3, #files)
    for i = 1, 3 do
      local m = hop:find("far" .. i .. "@outside.test")[1]
      assert.truthy(m, "message " .. i .. " at the next hop")
      -- smtp-sink's dump has LF line ends; the Maildir copy too
      local want = bodies[i]:gsub("\r\n", "\n")
      assert.truthy(m.message:find("\n\n" .. want, 1, true), "message " .. i .. " arrived intact at the next hop")
      local found = false
      for _, f in ipairs(files) do
        if f.content:find("Subject: big " .. i .. "\n", 1, true) then
          found = f.content:find("\n\n" .. want, 1, true) ~= nil
        end
      end
      assert.truthy(found, "message " .. i .. " is intact in the Maildir")
    end
    -- 24 MiB went through; the router reads 64 KiB at a time, so its peak grows by far less than one message.
    local grown = peak_kib(pid) - before
    assert.truthy(grown < 4 * 1024, "the router's peak RSS grew by " .. grown .. " KiB")
  end)
end)
