-- t/integration/limits_spec.lua - the limits that end a session (SPEC sections 5 and 8): the error count,
-- connections per client IP, command and data timeouts, and clients that talk before the greeting.
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
  return env
end

describe("the error limit (inbound.connection.max_errors = 3)", function()
  local env = with_server { inbound = { connection = { max_errors = 3 } } }

  it("the 4th error reply is replaced by 421 4.7.0 and the connection closes", function()
    local c = env.connect()
    c:greet()
    for i = 1, 3 do
      local code, lines = c:cmd("BOGUS " .. i)
      assert.equal(500, code, lines and lines.text)
    end
    local code, lines = c:cmd("BOGUS 4")
    assert.equal(421, code)
    assert.equal("421 4.7.0 SMTP service not available, closing transmission channel", lines[1])
    assert.is_true((c:expect_closed(2)))
  end)

  it("counts every 4xx and 5xx reply, not only unknown commands", function()
    local c = env.connect()
    c:greet()
    assert.equal(503, (c:cmd("RCPT TO:<jdoe@example.test>")))
    assert.equal(500, (c:cmd("NOOP\rx")))
    assert.equal(250, (c:cmd("NOOP")), "a success does not count")
    assert.equal(501, (c:cmd("MAIL FROM:<not an address")))
    local code, lines = c:cmd("DATA")
    assert.equal(421, code)
    assert.equal("421 4.7.0 SMTP service not available, closing transmission channel", lines[1])
    assert.is_true((c:expect_closed(2)))
  end)

  it("ten bad commands in one write get three 500s, one 421 and nothing more", function()
    local c = env.connect()
    c:greet()
    c:send(string.rep("BOGUS\r\n", 10))
    local codes = {}
    for i = 1, 4 do codes[i] = (c:read_reply()) end
    assert.same({ 500, 500, 500, 421 }, codes)
    local closed, extra = c:expect_closed(2)
    assert.is_true(closed)
    assert.same({}, extra)
  end)

  it("lets a session with 3 errors go on", function()
    local c = env.connect()
    c:greet()
    for i = 1, 3 do assert.equal(500, (c:cmd("BOGUS " .. i))) end
    assert.equal(250, (c:cmd("NOOP")))
    assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
  end)
end)

describe("the connection limit per IP (server.max_connections_per_ip = 2)", function()
  local env = with_server { server = { max_connections_per_ip = 2 } }

  it("a third connection from 127.0.0.2 gets 421 4.7.0 Too many connections while 127.0.0.3 still connects",
    function()
      local a = env.connect { bind = "127.0.0.2" }
      assert.equal(220, (a:read_reply()))
      local b = env.connect { bind = "127.0.0.2" }
      assert.equal(220, (b:read_reply()))
      local third = env.connect { bind = "127.0.0.2" }
      local code, lines = third:read_reply()
      assert.equal(421, code)
      assert.equal("421 4.7.0 Too many connections", lines[1])
      assert.is_true((third:expect_closed(2)))
      local other = env.connect { bind = "127.0.0.3" }
      assert.equal(220, (other:read_reply()))
      -- The two sessions from 127.0.0.2 are not disturbed.
      assert.equal(250, (a:cmd("NOOP")))
      assert.equal(250, (b:cmd("NOOP")))
      a:cmd("QUIT")
      b:cmd("QUIT")
      other:cmd("QUIT")
    end)

  it("accepts 127.0.0.2 again once one of its sessions has ended", function()
    local a = env.connect { bind = "127.0.0.2" }
    assert.equal(220, (a:read_reply()))
    local b = env.connect { bind = "127.0.0.2" }
    assert.equal(220, (b:read_reply()))
    assert.equal(221, (a:cmd("QUIT")))
    assert.is_true((a:expect_closed(2)))
    -- The server frees the slot when it sees the close; give it a moment.
    local code
    for _ = 1, 20 do
      local c = env.connect { bind = "127.0.0.2" }
      code = c:read_reply()
      c:close()
      if code == 220 then break end
      socket.sleep(0.05)
    end
    assert.equal(220, code)
  end)
end)

describe("the connection limit per IP with two workers (max_connections_per_ip = 2, workers = 2)", function()
  local env = with_server { server = { max_connections_per_ip = 2, workers = 2 } }

  it("counts the connections of every worker: the third from 127.0.0.2 gets 421 4.7.0", function()
    -- Whatever worker takes each connection, the limit is the server's, not the worker's.
    for round = 1, 3 do
      local a = env.connect { bind = "127.0.0.2" }
      assert.equal(220, (a:read_reply()))
      local b = env.connect { bind = "127.0.0.2" }
      assert.equal(220, (b:read_reply()))
      local third = env.connect { bind = "127.0.0.2" }
      local code, lines = third:read_reply()
      assert.equal(421, code, "round " .. round .. ": " .. tostring(lines and lines.text or lines))
      assert.equal("421 4.7.0 Too many connections", lines[1])
      assert.equal(221, (a:cmd("QUIT")))
      assert.equal(221, (b:cmd("QUIT")))
      a:expect_closed(2)
      b:expect_closed(2)
      third:close()
      socket.sleep(0.1)
    end
  end)
end)

describe("the connection limit of the server (server.max_connections = 2)", function()
  local env = with_server { server = { max_connections = 2 } }

  it("a third connection, from another IP, gets 421 4.7.0 Too many connections", function()
    local a = env.connect { bind = "127.0.0.4" }
    assert.equal(220, (a:read_reply()))
    local b = env.connect { bind = "127.0.0.5" }
    assert.equal(220, (b:read_reply()))
    local c = env.connect { bind = "127.0.0.6" }
    local code, lines = c:read_reply()
    assert.equal(421, code)
    assert.equal("421 4.7.0 Too many connections", lines[1])
    assert.is_true((c:expect_closed(2)))
  end)
end)

describe("the timeouts (server.timeouts = { command = 1, data = 1 })", function()
  local env = with_server({ server = { timeouts = { command = 1, data = 1 } } }, { { "slow", [[
local mta = require "luamta"
return { rcpt = function(s, rcpt) if rcpt.localpart == "slow" then mta.sleep(1.5) end end }
]] } })

  it("a client that stays silent after the greeting gets 421 4.4.2 Timeout and is disconnected", function()
    local c = env.connect()
    assert.equal(220, (c:read_reply()))
    local t0 = socket.gettime()
    local code, lines = c:read_reply(5)
    local waited = socket.gettime() - t0
    assert.equal(421, code)
    assert.matches("^421 4%.4%.2 .*Timeout", lines[1])
    assert.is_true(waited >= 0.8 and waited < 4, "waited " .. waited .. " s")
    assert.is_true((c:expect_closed(2)))
  end)

  it("a client that stops in the middle of DATA gets 421 4.4.2 Timeout and nothing is queued", function()
    local c = env.connect()
    c:greet()
    assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
    assert.equal(354, (c:cmd("DATA")))
    c:send("Subject: half\r\n\r\nand then nothing")
    local code, lines = c:read_reply(5)
    assert.equal(421, code)
    assert.matches("^421 4%.4%.2 .*Timeout", lines[1])
    assert.is_true((c:expect_closed(2)))
    assert.same({}, env.srv:queue_files())
    assert.same({}, env.srv:maildir_files("jdoe"))
  end)

  it("a client that waits 1.5 s for a sleeping RCPT rule is not timed out: it gets the rule's answer", function()
    -- The command timeout is how long the server waits for the client (RFC 5321 4.5.3.2.7), not for its rules.
    local c = env.connect()
    c:greet()
    assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    local code, lines = c:cmd("RCPT TO:<slow@example.test>", 5)
    assert.equal(250, code, lines and tostring(lines.text or lines))
  end)

  it("a client that keeps talking is not timed out", function()
    local c = env.connect()
    c:greet()
    for _ = 1, 4 do
      socket.sleep(0.5)
      assert.equal(250, (c:cmd("NOOP")))
    end
  end)
end)

describe("the greeting delay (server.greeting_delay = 1)", function()
  local env = with_server { server = { greeting_delay = 1 } }

  it("a client that sends EHLO before the banner gets 554 5.5.0 and is disconnected", function()
    local c = env.connect()
    c:send("EHLO early.test\r\n")
    local code, lines = c:read_reply(5)
    assert.equal(554, code, lines and lines.text)
    assert.matches("^554 5%.5%.0 ", lines[1])
    assert.is_true((c:expect_closed(2)))
  end)

  it("a patient client gets the 220 after the delay", function()
    local c = env.connect()
    local t0 = socket.gettime()
    local code = c:read_reply(5)
    assert.equal(220, code)
    assert.is_true(socket.gettime() - t0 >= 0.9)
    assert.equal(250, (c:cmd("EHLO patient.test")))
  end)
end)
