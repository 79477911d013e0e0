-- t/integration/session_spec.lua - the SMTP dialogue as a client sees it (SPEC sections 3 and 8): greeting, EHLO,
-- a transaction to a directory user's Maildir, pipelining, the small commands, hostile command lines, sizes,
-- recipient limits and BDAT.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

local MAX_SIZE = 10000

describe("an SMTP session", function()
  local srv
  local clients = {}

  -- Every test mails its own directory user, so that "nothing was delivered" is about that test alone.
  local users = {}
  for _, u in ipairs { "jdoe", "pipe", "after", "stuffed", "big", "many", "bdat", "bdat2", "bdat3", "null", "two1",
                       "two2", "exact", "over", "empty", "utf8", "hangup" } do
    users[#users + 1] = { address = u .. "@example.test", aliases = u == "jdoe" and { "john@example.test" } or nil }
  end

  setup(function()
    srv = server.start {
      config = {
        server = { max_message_size = MAX_SIZE, max_recipients = 3 },
        directory = { users = users },
      },
    }
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
  end)

  local function connect(opts)
    local c = assert(smtp.connect("127.0.0.1", srv.port, opts))
    clients[#clients + 1] = c
    return c
  end

  local function session()
    local c = connect()
    c:greet("client.test")
    return c
  end

  -- sized(subject, n) -> a message of exactly n octets (CRLF line ends, the last line ends with CRLF)
  local function sized(subject, n)
    local head = "Subject: " .. subject .. "\r\n\r\n"
    local left = n - #head
    local parts = { head }
    while left > 0 do
      local len = math.min(100, left)
      if left - len > 0 and left - len < 3 then len = left - 3 end   -- keep room for a last "x\r\n"
      parts[#parts + 1] = string.rep("x", len - 2) .. "\r\n"
      left = left - len
    end
    local text = table.concat(parts)
    assert(#text == n)
    return text
  end

  -- assert_nothing_delivered(user, mark): no message for user arrives, and the log has no queued message after mark.
  local function assert_nothing_delivered(user, mark)
    socket.sleep(0.3)
    assert.same({}, srv:maildir_files(user))
    assert.is_nil(srv:log():sub(mark + 1):find("nrcpt=", 1, true))
  end

  describe("the greeting and EHLO", function()
    it("greets with 220 and the configured hostname", function()
      local c = connect()
      local code, lines = c:read_reply()
      assert.equal(220, code)
      assert.equal("220 mx.example.test ESMTP luamta", lines[1])
    end)

    it("lists PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and CHUNKING after EHLO", function()
      local c = connect()
      c:read_reply()
      local code, lines = c:cmd("EHLO client.test")
      assert.equal(250, code)
      assert.equal("250-mx.example.test", lines[1])
      local ext = {}
      for i = 2, #lines do ext[lines[i]:sub(5)] = true end
      for _, want in ipairs { "PIPELINING", "SIZE " .. MAX_SIZE, "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                              "CHUNKING" } do
        assert.is_true(ext[want] == true, want .. " is not in " .. lines.text)
      end
      assert.matches("^250 ", lines[#lines])
    end)

    it("answers HELO with one 250 line and then accepts mail", function()
      local c = connect()
      c:read_reply()
      local code, lines = c:cmd("HELO client.test")
      assert.equal(250, code)
      assert.same({ "250 mx.example.test" }, { lines[1] })
      assert.equal(1, #lines)
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    end)
  end)

  describe("a complete transaction", function()
    it("lands in the directory user's Maildir with Received, Return-Path and Delivered-To", function()
      local c = session()
      local text = smtp.message({ "From: Alice <alice@example.org>", "To: jdoe@example.test",
                                  "Subject: hello" }, "Hi John,\r\nthis is a test.\r\n")
      local mark = srv:log_mark()
      local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test", text)
      assert.equal(250, code)
      local qid = lines[1]:match("^250 2%.0%.0 Ok: queued as (%w+)$")
      assert.truthy(qid, lines[1])
      assert.equal(221, (c:cmd("QUIT")))

      local files = srv:wait_maildir("jdoe")
      assert.equal(1, #files)
      local m = files[1].content
      assert.matches("^Return%-Path: <alice@example%.org>\nDelivered%-To: jdoe@example%.test\n", m)
      assert.matches("\nReceived: from client%.test %(%[127%.0%.0%.1%]%)\n"
        .. "\tby mx%.example%.test %(luamta%) with ESMTP id " .. qid, m)
      assert.matches("\nSubject: hello\n", m, 1, true)
      assert.matches("\n\nHi John,\nthis is a test.\n$", m)
      assert.is_nil(m:find("\r", 1, true), "CRLF is converted to LF in the Maildir")

      local line = srv:wait_log(qid .. ": from=<alice@example%.org>, size=%d+, nrcpt=1", 5, mark)
      assert.truthy(line, srv:log())
      -- size= is the message as queued, as in Postfix: what the client sent with our Received field on top
      local stored = m:sub((m:find("Received: ", 1, true))):gsub("\n", "\r\n")
      assert.equal(#stored, tonumber(line:match("size=(%d+)")))
      assert.truthy(#stored > #text)
    end)

    it("gives each of two recipients a copy with its own Delivered-To, and no \"for\" in Received", function()
      local c = session()
      local code = smtp.send_mail(c, "alice@example.org", { "two1@example.test", "two2@example.test" },
        smtp.message({ "Subject: for two" }, "shared\r\n"))
      assert.equal(250, code)
      for _, u in ipairs { "two1", "two2" } do
        local files = srv:wait_maildir(u)
        assert.equal(1, #files)
        assert.matches("^Return%-Path: <alice@example%.org>\nDelivered%-To: " .. u .. "@example%.test\n",
          files[1].content)
        local received = files[1].content:match("\nReceived: (.-)\n%S")
        assert.truthy(received, files[1].content)
        assert.is_nil(received:find("for <", 1, true), received)
      end
    end)

    it("delivers a message from the null sender <> with Return-Path: <>", function()
      local c = session()
      local code = smtp.send_mail(c, "", "null@example.test", smtp.message({ "Subject: bounce" }, "report\r\n"))
      assert.equal(250, code)
      local files = srv:wait_maildir("null")
      assert.equal(1, #files)
      assert.matches("^Return%-Path: <>\nDelivered%-To: null@example%.test\n", files[1].content)
    end)

    it("keeps a message for a user's alias in the user's Maildir", function()
      local c = session()
      local code = smtp.send_mail(c, "alice@example.org", "john@example.test",
        smtp.message({ "Subject: alias" }, "to the alias\r\n"))
      assert.equal(250, code)
      local files = srv:wait_maildir("jdoe", nil, 2)
      assert.equal(2, #files)
    end)
  end)

  describe("pipelining", function()
    it("answers MAIL, RCPT, RCPT and DATA sent in one write in order", function()
      local c = session()
      c:send("MAIL FROM:<a@example.org>\r\nRCPT TO:<pipe@example.test>\r\nRCPT TO:<jdoe@example.test>\r\nDATA\r\n")
      local codes = {}
      for i = 1, 4 do codes[i] = (c:read_reply()) end
      assert.same({ 250, 250, 250, 354 }, codes)
      c:send("Subject: pipelined\r\n\r\nbody\r\n.\r\n")
      assert.equal(250, (c:read_reply()))
      assert.equal(1, #srv:wait_maildir("pipe"))
    end)

    it("answers the commands pipelined after the final dot", function()
      local c = session()
      c:send("MAIL FROM:<a@example.org>\r\nRCPT TO:<after@example.test>\r\nDATA\r\n")
      assert.same({ 250, 250, 354 }, { (c:read_reply()), (c:read_reply()), (c:read_reply()) })
      c:send("Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<after@example.test>\r\n"
        .. "DATA\r\n")
      local code, lines = c:read_reply()
      assert.equal(250, code, lines and lines.text)
      assert.matches("queued as", lines[1])
      assert.same({ 250, 250, 354 }, { (c:read_reply()), (c:read_reply()), (c:read_reply()) })
      c:send("Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
      assert.equal(250, (c:read_reply()))
      assert.equal(221, (c:read_reply()))
      assert.equal(2, #srv:wait_maildir("after", nil, 2))
    end)
  end)

  describe("the small commands", function()
    it("forgets the transaction at a second EHLO", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("EHLO again.test")))
      assert.equal(503, (c:cmd("RCPT TO:<jdoe@example.test>")))
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")), "a new MAIL is not nested")
    end)

    it("answers RSET with 250 and forgets the transaction", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      local code, lines = c:cmd("RSET")
      assert.equal(250, code)
      assert.equal("250 2.0.0 Ok", lines[1])
      code, lines = c:cmd("RCPT TO:<jdoe@example.test>")
      assert.equal(503, code)
      assert.matches("^503 5%.5%.1 ", lines[1])
    end)

    it("answers NOOP with 250 2.0.0", function()
      local c = session()
      local code, lines = c:cmd("NOOP")
      assert.equal(250, code)
      assert.equal("250 2.0.0 Ok", lines[1])
    end)

    it("answers VRFY with 252", function()
      local c = session()
      local code, lines = c:cmd("VRFY jdoe")
      assert.equal(252, code)
      assert.matches("^252 2%.5%.2 ", lines[1])
    end)

    it("answers EXPN with 502", function()
      local c = session()
      local code, lines = c:cmd("EXPN staff")
      assert.equal(502, code)
      assert.matches("^502 5%.5%.1 ", lines[1])
    end)

    it("answers HELP with 214", function()
      local c = session()
      local code = c:cmd("HELP")
      assert.equal(214, code)
    end)

    it("answers QUIT with 221 and closes", function()
      local c = session()
      local code = c:cmd("QUIT")
      assert.equal(221, code)
      assert.is_true((c:expect_closed(2)))
    end)
  end)

  describe("hostile and mistaken command lines", function()
    it("an unknown command gets 500 5.5.2", function()
      local c = session()
      local code, lines = c:cmd("FROBNICATE now")
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
    end)

    it("RCPT before MAIL gets 503 5.5.1", function()
      local c = session()
      local code, lines = c:cmd("RCPT TO:<jdoe@example.test>")
      assert.equal(503, code)
      assert.matches("^503 5%.5%.1 ", lines[1])
    end)

    it("DATA before MAIL gets 503 5.5.1", function()
      local c = session()
      local code, lines = c:cmd("DATA")
      assert.equal(503, code)
      assert.matches("^503 5%.5%.1 ", lines[1])
    end)

    it("MAIL before EHLO gets 503 5.5.1", function()
      local c = connect()
      assert.equal(220, (c:read_reply()))
      local code, lines = c:cmd("MAIL FROM:<a@example.org>")
      assert.equal(503, code)
      assert.matches("^503 5%.5%.1 ", lines[1])
    end)

    it("a 5000-octet command gets 500 5.5.2 and the session goes on", function()
      local c = session()
      local code, lines = c:cmd("NOOP " .. string.rep("x", 4995))
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
      assert.equal(250, (c:cmd("NOOP")))
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    end)

    it("a 5000-octet command sent in pieces gets one 500 5.5.2", function()
      local c = session()
      c:send("NOOP " .. string.rep("y", 2000))
      socket.sleep(0.1)
      c:send(string.rep("y", 2995) .. "\r\nNOOP\r\n")
      local code, lines = c:read_reply()
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
      assert.equal(250, (c:read_reply()))
    end)

    it("a 512-octet command line (CRLF included) is accepted", function()
      local c = session()
      local code, lines = c:cmd("NOOP " .. string.rep("x", 505))
      assert.equal(250, code, lines and lines.text)
    end)

    it("a 513-octet command line (CRLF included) gets 500 5.5.2", function()
      local c = session()
      local code, lines = c:cmd("NOOP " .. string.rep("x", 506))
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
      assert.equal(250, (c:cmd("NOOP")))
    end)

    it("a command with a bare LF gets 500 5.5.2", function()
      local c = session()
      c:send("NOOP\n")
      local code, lines = c:read_reply()
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
      assert.equal(250, (c:cmd("NOOP")))
    end)

    it("a command with a bare CR gets 500 5.5.2", function()
      local c = session()
      local code, lines = c:cmd("NOOP\rMAIL FROM:<a@example.org>")
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
    end)

    it("a command with a NUL gets 500 5.5.2", function()
      local c = session()
      local code, lines = c:cmd("NOOP\0x")
      assert.equal(500, code)
      assert.matches("^500 5%.5%.2 ", lines[1])
    end)
  end)

  describe("message content", function()
    it("a line '..x' arrives as '.x' (dot-stuffing)", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<stuffed@example.test>")))
      assert.equal(354, (c:cmd("DATA")))
      c:send("Subject: dots\r\n\r\n..x\r\n...\r\n.\r\n")
      assert.equal(250, (c:read_reply()))
      local files = srv:wait_maildir("stuffed")
      assert.equal(1, #files)
      assert.matches("\n\n%.x\n%.%.\n$", files[1].content)
    end)
  end)

  describe("message content, edge cases", function()
    it("an empty message (the final dot right after 354) is accepted and delivered", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<empty@example.test>")))
      assert.equal(354, (c:cmd("DATA")))
      local code, lines = c:cmd(".")
      assert.equal(250, code, lines and lines.text)
      local files = srv:wait_maildir("empty")
      assert.equal(1, #files)
      assert.matches("^Return%-Path: <a@example%.org>\nDelivered%-To: empty@example%.test\nReceived: ", files[1].content)
    end)

    it("a UTF-8 sender with SMTPUTF8 and BODY=8BITMIME is accepted and delivered with UTF8SMTP in Received",
      function()
        local c = session()
        assert.equal(250, (c:cmd("MAIL FROM:<j\195\182rg@example.org> SMTPUTF8 BODY=8BITMIME")))
        assert.equal(250, (c:cmd("RCPT TO:<utf8@example.test>")))
        assert.equal(354, (c:cmd("DATA")))
        c:send("Subject: gr\195\188\195\159e\r\n\r\n8-bit body \195\169\r\n.\r\n")
        assert.equal(250, (c:read_reply()))
        local files = srv:wait_maildir("utf8")
        assert.equal(1, #files)
        local m = files[1].content
        assert.matches("^Return%-Path: <j\195\182rg@example%.org>\n", m)
        assert.truthy(m:find("with UTF8SMTP id", 1, true), m)
        assert.truthy(m:find("\n\n8-bit body \195\169\n", 1, true), m)
      end)

    it("a UTF-8 sender without SMTPUTF8 gets 553 5.6.7", function()
      local c = session()
      local code, lines = c:cmd("MAIL FROM:<j\195\182rg@example.org>")
      assert.equal(553, code)
      assert.matches("^553 5%.6%.7 ", lines[1])
    end)

    it("MAIL with SIZE= after HELO (not EHLO) gets 555 5.5.4", function()
      local c = connect()
      c:read_reply()
      assert.equal(250, (c:cmd("HELO client.test")))
      local code, lines = c:cmd("MAIL FROM:<a@example.org> SIZE=100")
      assert.equal(555, code)
      assert.matches("^555 5%.5%.4 ", lines[1])
    end)

    it("the client hangs up in the middle of DATA, and nothing is queued", function()
      local mark = srv:log_mark()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<hangup@example.test>")))
      assert.equal(354, (c:cmd("DATA")))
      c:send("Subject: cut\r\n\r\nhalf a message\r\n")
      c:close()
      assert.truthy(srv:wait_log("lost connection from unknown[127.0.0.1] in state BODY", 2, mark, true),
        srv:log():sub(mark + 1))
      assert_nothing_delivered("hangup", mark)
      local c2 = session()
      assert.equal(250, (c2:cmd("NOOP")), "the server goes on")
    end)
  end)

  describe("sizes and limits", function()
    it("SIZE over the limit on MAIL gets 552 5.3.4", function()
      local c = session()
      local code, lines = c:cmd("MAIL FROM:<a@example.org> SIZE=" .. (MAX_SIZE + 1))
      assert.equal(552, code)
      assert.matches("^552 5%.3%.4 ", lines[1])
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org> SIZE=" .. MAX_SIZE)))
    end)

    it("DATA that grows past max_message_size gets 552 5.3.4 after the final dot and nothing is delivered",
      function()
        local c = session()
        local mark = srv:log_mark()
        assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
        assert.equal(250, (c:cmd("RCPT TO:<big@example.test>")))
        assert.equal(354, (c:cmd("DATA")))
        local line = string.rep("z", 70) .. "\r\n"
        c:send("Subject: big\r\n\r\n" .. string.rep(line, math.ceil(MAX_SIZE / #line) + 10))
        -- No reply may come before the final dot.
        local early = c:read_reply(0.3)
        assert.is_nil(early)
        c:send(".\r\n")
        local code, lines = c:read_reply()
        assert.equal(552, code)
        assert.matches("^552 5%.3%.4 ", lines[1])
        assert.equal(250, (c:cmd("NOOP")), "the session goes on")
        assert_nothing_delivered("big", mark)
      end)

    it("a message of exactly max_message_size octets is accepted", function()
      local c = session()
      local code, lines = smtp.send_mail(c, "a@example.org", "exact@example.test", sized("exact", MAX_SIZE))
      assert.equal(250, code, lines and lines.text)
      assert.equal(1, #srv:wait_maildir("exact"))
    end)

    it("a message one octet over max_message_size gets 552 5.3.4 and nothing is delivered", function()
      local c = session()
      local mark = srv:log_mark()
      local code, lines = smtp.send_mail(c, "a@example.org", "over@example.test", sized("over", MAX_SIZE + 1))
      assert.equal(552, code, lines and lines.text)
      assert.matches("^552 5%.3%.4 ", lines[1])
      assert_nothing_delivered("over", mark)
    end)

    it("the recipient past max_recipients gets 452 4.5.3", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      for _ = 1, 3 do assert.equal(250, (c:cmd("RCPT TO:<many@example.test>"))) end
      local code, lines = c:cmd("RCPT TO:<jdoe@example.test>")
      assert.equal(452, code)
      assert.matches("^452 4%.5%.3 ", lines[1])
      assert.equal(354, (c:cmd("DATA")), "the transaction goes on with the accepted recipients")
      c:send("Subject: many\r\n\r\nx\r\n.\r\n")
      assert.equal(250, (c:read_reply()))
    end)
  end)

  describe("BDAT (CHUNKING)", function()
    it("delivers a message sent as one BDAT n LAST chunk", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<bdat@example.test>")))
      local text = "Subject: chunked\r\n\r\n.a line with a dot\r\none chunk\r\n"
      c:send("BDAT " .. #text .. " LAST\r\n" .. text)
      local code, lines = c:read_reply()
      assert.equal(250, code, lines and lines.text)
      assert.matches("queued as", lines[1])
      local files = srv:wait_maildir("bdat")
      assert.equal(1, #files)
      assert.matches("\nSubject: chunked\n\n%.a line with a dot\none chunk\n$", files[1].content)
    end)

    it("answers MAIL, RCPT, BDAT LAST and QUIT sent in one write in order", function()
      local c = session()
      local text = "Subject: one write\r\n\r\nall at once\r\n"
      c:send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bdat3@example.test>\r\nBDAT " .. #text .. " LAST\r\n" .. text
        .. "QUIT\r\n")
      local codes = {}
      for i = 1, 4 do codes[i] = (c:read_reply()) end
      assert.same({ 250, 250, 250, 221 }, codes)
      assert.equal(1, #srv:wait_maildir("bdat3"))
    end)

    it("BDAT before MAIL gets 503 5.5.1 and its octets are not read as commands", function()
      local c = session()
      local chunk = "MAIL FROM:<x@example.org>\r\nRCPT TO:<bdat@example.test>\r\n"
      c:send("BDAT " .. #chunk .. " LAST\r\n" .. chunk)
      local code, lines = c:read_reply()
      assert.equal(503, code, lines and lines.text)
      assert.matches("^503 5%.5%.1 ", lines[1])
      local code2, lines2 = c:cmd("NOOP")
      assert.equal(250, code2)
      assert.equal("250 2.0.0 Ok", lines2[1], "the next reply is the NOOP's, not a MAIL's or RCPT's")
    end)

    it("DATA after a BDAT chunk gets 503 5.5.1 (RFC 3030 section 2)", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<bdat@example.test>")))
      c:send("BDAT 5\r\nabcde")
      assert.equal(250, (c:read_reply()))
      local code, lines = c:cmd("DATA")
      if code == 354 then c:send("Subject: mixed\r\n\r\nx\r\n.\r\n") c:read_reply() end
      assert.equal(503, code, lines and lines.text)
      assert.matches("^503 5%.5%.1 ", lines[1])
    end)

    it("delivers a message sent in two chunks", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<bdat2@example.test>")))
      local one, two = "Subject: two chunks\r\n\r\nfirst half, ", "second half\r\n"
      c:send("BDAT " .. #one .. "\r\n" .. one)
      local code, lines = c:read_reply()
      assert.equal(250, code, lines and lines.text)
      c:send("BDAT " .. #two .. " LAST\r\n" .. two)
      code, lines = c:read_reply()
      assert.equal(250, code, lines and lines.text)
      assert.matches("queued as", lines[1])
      local files = srv:wait_maildir("bdat2")
      assert.equal(1, #files)
      assert.matches("\n\nfirst half, second half\n$", files[1].content)
    end)
  end)
end)
