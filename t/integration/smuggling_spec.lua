-- t/integration/smuggling_spec.lua - SMTP smuggling (SPEC section 8): DATA ends only at CRLF.CRLF. A body that
-- holds a lone dot between bare LFs or CRs, followed by a second transaction, must never become two messages:
-- with bare_newline = "reject" the whole thing gets 550 5.5.2 after the real end and nothing is queued; with
-- "normalize" it is one message that carries the smuggled commands as body text.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

-- The fake end of data, as written in a test name, and as sent.
local SEPARATORS = {
  { [[\n.\n]], "\n.\n" },
  { [[\n.\r\n]], "\n.\r\n" },
  { [[\r\n.\n]], "\r\n.\n" },
  { [[\r.\r\n]], "\r.\r\n" },
  { [[\r.\r]], "\r.\r" },
  { [[\r\n.\r]], "\r\n.\r" },
}

local SMUGGLED = "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
  .. "Subject: smuggled\r\n\r\nevil body\r\n"

local function users()
  local out = { { address = "victim@example.test" }, { address = "chunked@example.test" } }
  for i = 1, #SEPARATORS do out[#out + 1] = { address = "rcpt" .. i .. "@example.test" } end
  return out
end

-- smuggle(c, i) -> code, lines of the reply after the real CRLF.CRLF, and any reply that came before it
local function smuggle(c, i)
  assert.equal(250, (c:cmd("MAIL FROM:<alice@example.org>")))
  assert.equal(250, (c:cmd("RCPT TO:<rcpt" .. i .. "@example.test>")))
  assert.equal(354, (c:cmd("DATA")))
  c:send("Subject: real\r\n\r\nhello" .. SEPARATORS[i][2] .. SMUGGLED)
  local early = c:read_reply(0.3)   -- nothing may be answered before the real end of data
  c:send(".\r\n")
  local code, lines = c:read_reply()
  return code, lines, early
end

for _, mode in ipairs { "reject", "normalize" } do
  describe("with bare_newline = \"" .. mode .. "\"", function()
    local srv
    local clients = {}

    setup(function()
      srv = server.start { config = { server = { bare_newline = mode }, directory = { users = users() } } }
    end)

    teardown(function()
      for _, c in ipairs(clients) do c:close() end
      if srv then srv:cleanup() end
    end)

    local function session()
      local c = smtp.session("127.0.0.1", srv.port)
      clients[#clients + 1] = c
      return c
    end

    it("a BDAT chunk that holds CRLF.CRLF and a smuggled MAIL/RCPT/DATA is one message that holds the smuggled "
      .. "text", function()
      local c = session()
      local mark = srv:log_mark()
      assert.equal(250, (c:cmd("MAIL FROM:<alice@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<chunked@example.test>")))
      local chunk = "Subject: chunk\r\n\r\nhello\r\n.\r\n" .. SMUGGLED
      c:send("BDAT " .. #chunk .. " LAST\r\n" .. chunk)
      local code, lines = c:read_reply()
      assert.equal(250, code, lines and lines.text)
      assert.matches("queued as", lines[1])
      assert.equal("250 2.0.0 Ok", select(2, c:cmd("NOOP"))[1])
      local files = srv:wait_maildir("chunked")
      assert.equal(1, #files)
      assert.truthy(files[1].content:find("\nhello\n.\nMAIL FROM:<evil@example.org>\n", 1, true), files[1].content)
      assert.same({}, srv:maildir_files("victim"))
      assert.equal(1, #srv:log_lines("nrcpt=", mark))
    end)

    for i, sep in ipairs(SEPARATORS) do
      if mode == "reject" then
        it("a body with \"" .. sep[1] .. "\" and a smuggled MAIL/RCPT/DATA gets one 550 5.5.2 after the real "
          .. "CRLF.CRLF and queues nothing", function()
          local c = session()
          local mark = srv:log_mark()
          local code, lines, early = smuggle(c, i)
          assert.is_nil(early, "no reply before the real end of data")
          assert.equal(550, code, lines and lines.text)
          assert.matches("^550 5%.5%.2 ", lines[1])
          -- The next reply is the NOOP's: the smuggled commands were never read as commands.
          local code2, lines2 = c:cmd("NOOP")
          assert.equal(250, code2)
          assert.equal("250 2.0.0 Ok", lines2[1])
          socket.sleep(0.3)
          assert.same({}, srv:queue_files())
          assert.same({}, srv:maildir_files("rcpt" .. i))
          assert.same({}, srv:maildir_files("victim"))
          assert.is_nil(srv:log():sub(mark + 1):find("nrcpt=", 1, true))
        end)
      else
        it("a body with \"" .. sep[1] .. "\" and a smuggled MAIL/RCPT/DATA is one message that holds the "
          .. "smuggled text", function()
          local c = session()
          local mark = srv:log_mark()
          local code, lines, early = smuggle(c, i)
          assert.is_nil(early, "no reply before the real end of data")
          assert.equal(250, code, lines and lines.text)
          assert.matches("queued as", lines[1])
          local code2, lines2 = c:cmd("NOOP")
          assert.equal(250, code2)
          assert.equal("250 2.0.0 Ok", lines2[1])
          local files = srv:wait_maildir("rcpt" .. i)
          socket.sleep(0.2)
          files = srv:maildir_files("rcpt" .. i)
          assert.equal(1, #files)
          local m = files[1].content
          assert.truthy(m:find("MAIL FROM:<evil@example.org>\nRCPT TO:<victim@example.test>\nDATA\n"
            .. "Subject: smuggled\n\nevil body\n", 1, true), m)
          assert.truthy(m:find("\nSubject: real\n", 1, true), m)
          assert.same({}, srv:maildir_files("victim"))
          assert.equal(1, #srv:log_lines("nrcpt=", mark))
        end)
      end
    end
  end)
end
