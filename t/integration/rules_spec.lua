-- t/integration/rules_spec.lua - site rules in a running server (SPEC section 7): a verdict at every stage is
-- what the client sees and the log names the rule; a rule that fails or runs away costs one 451 4.3.0; a rule
-- that sleeps does not block the worker; tags and added headers end up in the delivered message.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

local POLICY = [[
local mta = require "luamta"
local M = {}

function M.connect(s)
  if s.ip == "127.0.0.9" then return mta.reject(554, "5.7.1 connect refused by the test rule") end
  if s.ip == "127.0.0.8" then mta.sleep(0.5) end
  s:tag("X-Test-Tag", "v")
end

function M.helo(s, name)
  if name == "reject.test" then return mta.reject(550, "5.7.1 helo refused by the test rule") end
  s.vars.helo_seen = name
end

function M.mail(s, sender)
  if sender.localpart == "reject-mail" then return mta.reject(553, "5.7.1 sender refused by the test rule") end
  if sender.localpart == "later" then return mta.tempfail(450, "4.7.1 sender deferred by the test rule") end
end

function M.rcpt(s, rcpt)
  local lp = rcpt.localpart
  if lp == "reject-rcpt" then return mta.reject(550, "5.1.1 recipient refused by the test rule") end
  if lp == "boom" then error("boom") end
  if lp == "loop" then while true do end end
  if lp == "sleep" then mta.sleep(0.5) end
  if lp == "bye" then return mta.disconnect(421, "4.7.0 the test rule hangs up") end
end

function M.data(s)
  if s.sender.localpart == "reject-data" then return mta.reject(554, "5.7.1 data refused by the test rule") end
  s.vars.rcpts = #s.rcpts
end

function M.message(s, msg)
  local subject = msg:header("Subject")
  if subject == "reject me" then return mta.reject(550, "5.7.1 message refused by the test rule") end
  msg:add_header("X-Seen-Subject", subject or "(none)")
  msg:add_header("X-Seen-Helo", s.vars.helo_seen or "(none)")
  msg:add_header("X-Seen-Session", ("ip=%s helo=%s sender=%s rcpts=%s host=%s"):format(s.ip, s.helo,
    s.sender.address, tostring(s.vars.rcpts), mta.config.server.hostname))
  s:log("message rule saw subject", subject)
end

return M
]]

describe("site rules", function()
  local srv
  local clients = {}

  setup(function()
    srv = server.start {
      config = { server = { workers = 1 } },
      rules = { { "policy", POLICY } },
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

  local function session(helo)
    local c = connect()
    c:greet(helo or "client.test")
    return c
  end

  -- the log (after mark) has a verdict line for stage from rule "policy"
  local function assert_logged(stage, mark)
    local line = srv:wait_log("stage=" .. stage .. " rule=policy verdict=", 2, mark, true)
    assert.truthy(line, "no verdict line for stage " .. stage .. " in:\n" .. srv:log():sub(mark + 1))
  end

  describe("a rule that rejects", function()
    it("at connect: the greeting is the rule's 554 and then only QUIT is served", function()
      local mark = srv:log_mark()
      local c = connect { bind = "127.0.0.9" }
      local code, lines = c:read_reply()
      assert.equal(554, code)
      assert.equal("554 5.7.1 connect refused by the test rule", lines[1])
      for _, cmd in ipairs { "EHLO client.test", "HELO client.test", "MAIL FROM:<a@example.org>" } do
        code, lines = c:cmd(cmd)
        assert.equal(503, code, cmd .. ": " .. tostring(lines and lines.text))
        assert.matches("^503 5%.5%.1 ", lines[1])
      end
      assert.equal(221, (c:cmd("QUIT")))
      assert.is_true((c:expect_closed(2)))
      assert_logged("connect", mark)
    end)

    it("at connect: NOOP and RSET get 503 too, since only QUIT is served (RFC 5321 3.1)", function()
      local c = connect { bind = "127.0.0.9" }
      assert.equal(554, (c:read_reply()))
      local got = {}
      for _, cmd in ipairs { "NOOP", "RSET" } do
        local code, lines = c:cmd(cmd)
        got[#got + 1] = cmd .. " -> " .. tostring(lines and lines[1] or code)
      end
      assert.equal(221, (c:cmd("QUIT")))
      assert.same({ "NOOP -> 503", "RSET -> 503" }, { got[1]:sub(1, 11), got[2]:sub(1, 11) }, table.concat(got, "; "))
    end)

    it("at HELO: the client gets the rule's code and text", function()
      local mark = srv:log_mark()
      local c = connect()
      assert.equal(220, (c:read_reply()))
      local code, lines = c:cmd("EHLO reject.test")
      assert.equal(550, code)
      assert.equal("550 5.7.1 helo refused by the test rule", lines[1])
      assert_logged("helo", mark)
      assert.equal(250, (c:cmd("EHLO client.test")), "another name is accepted")
    end)

    it("at MAIL: the client gets the rule's code and text", function()
      local mark = srv:log_mark()
      local c = session()
      local code, lines = c:cmd("MAIL FROM:<reject-mail@example.org>")
      assert.equal(553, code)
      assert.equal("553 5.7.1 sender refused by the test rule", lines[1])
      assert_logged("mail", mark)
      assert.equal(503, (c:cmd("RCPT TO:<jdoe@example.test>")), "there is no transaction")
    end)

    it("at MAIL with a tempfail: the client gets the rule's 4xx", function()
      local c = session()
      local code, lines = c:cmd("MAIL FROM:<later@example.org>")
      assert.equal(450, code)
      assert.equal("450 4.7.1 sender deferred by the test rule", lines[1])
    end)

    it("at RCPT: the client gets the rule's code and text, and the other recipients stay", function()
      local mark = srv:log_mark()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      local code, lines = c:cmd("RCPT TO:<reject-rcpt@example.test>")
      assert.equal(550, code)
      assert.equal("550 5.1.1 recipient refused by the test rule", lines[1])
      assert_logged("rcpt", mark)
      assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
    end)

    it("at DATA: the client gets the rule's code and text instead of 354", function()
      local mark = srv:log_mark()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<reject-data@example.org>")))
      assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
      local code, lines = c:cmd("DATA")
      assert.equal(554, code)
      assert.equal("554 5.7.1 data refused by the test rule", lines[1])
      assert_logged("data", mark)
    end)

    it("at the end of the message: the reply to the final dot is the rule's, and nothing is delivered", function()
      local mark = srv:log_mark()
      local before = #srv:maildir_files("postmaster")
      local c = session()
      local code, lines = smtp.send_mail(c, "a@example.org", "postmaster@example.test",
        smtp.message({ "Subject: reject me" }, "no\r\n"))
      assert.equal(550, code)
      assert.equal("550 5.7.1 message refused by the test rule", lines[1])
      assert_logged("message", mark)
      assert.equal(250, (c:cmd("NOOP")))
      socket.sleep(0.3)
      assert.equal(before, #srv:maildir_files("postmaster"))
      assert.is_nil(srv:log():sub(mark + 1):find("nrcpt=", 1, true))
    end)

    it("with mta.disconnect: the client gets the rule's 421 and the connection closes", function()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      local code, lines = c:cmd("RCPT TO:<bye@example.test>")
      assert.equal(421, code)
      assert.equal("421 4.7.0 the test rule hangs up", lines[1])
      assert.is_true((c:expect_closed(2)))
    end)
  end)

  describe("a rule that fails", function()
    it("with error(\"boom\") gets 451 4.3.0 for that command, logs the traceback and the server goes on",
      function()
        local mark = srv:log_mark()
        local c = session()
        assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
        local code, lines = c:cmd("RCPT TO:<boom@example.test>")
        assert.equal(451, code)
        assert.matches("^451 4%.3%.0 ", lines[1])
        local line = srv:wait_log("lua rule=policy stage=rcpt error: [^\n]*boom", 2, mark)
        assert.truthy(line, srv:log():sub(mark + 1))
        assert.truthy(srv:log():sub(mark + 1):find("stack traceback", 1, true), "the traceback is logged")
        assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")), "the same session goes on")
        local c2 = session()
        assert.equal(250, (c2:cmd("MAIL FROM:<a@example.org>")))
        assert.equal(250, (c2:cmd("RCPT TO:<jdoe@example.test>")), "and so does the next one")
      end)

    it("with an endless loop gets 451 4.3.0 in bounded time and the server goes on", function()
      local mark = srv:log_mark()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      local t0 = socket.gettime()
      local code, lines = c:cmd("RCPT TO:<loop@example.test>", 10)
      local took = socket.gettime() - t0
      assert.equal(451, code, lines and tostring(lines.text or lines))
      assert.matches("^451 4%.3%.0 ", lines[1])
      assert.is_true(took < 5, "took " .. took .. " s")
      assert.truthy(srv:wait_log("instruction budget", 2, mark))
      local c2 = session()
      assert.equal(250, (c2:cmd("NOOP")))
    end)
  end)

  describe("a rule that sleeps", function()
    it("with mta.sleep(0.5) answers after 0.5 s while a second session is served meanwhile", function()
      local c1 = session()
      assert.equal(250, (c1:cmd("MAIL FROM:<a@example.org>")))
      local t0 = socket.gettime()
      c1:send("RCPT TO:<sleep@example.test>\r\n")
      local c2 = session("second.test")
      local code2 = c2:cmd("MAIL FROM:<b@example.org>")
      local served_after = socket.gettime() - t0
      assert.equal(250, code2)
      assert.is_nil((c1:read_reply(0.01)), "the sleeping RCPT is unanswered while the second session is served")
      assert.is_true(served_after < 0.5, "the second session waited " .. served_after .. " s")
      local code1 = c1:read_reply(5)
      local answered_after = socket.gettime() - t0
      assert.equal(250, code1)
      -- 10 ms of slack: the loop's cached clock may start the rule's timer a little before the read we time.
      assert.is_true(answered_after >= 0.49, "answered after " .. answered_after .. " s")
      assert.is_true(answered_after < 3, "answered after " .. answered_after .. " s")
    end)
  end)

  describe("a rule that sleeps, with a hostile client", function()
    it("a client that sends EHLO while the connect rule sleeps gets 554 5.5.0 and is disconnected", function()
      local c = connect { bind = "127.0.0.8" }
      c:send("EHLO early.test\r\n")
      local code, lines = c:read_reply(5)
      assert.equal(554, code, lines and tostring(lines.text or lines))
      assert.matches("^554 5%.5%.0 ", lines[1])
      assert.is_true((c:expect_closed(2)))
    end)

    it("a client that waits for the sleeping connect rule gets its 220", function()
      local c = connect { bind = "127.0.0.8" }
      local t0 = socket.gettime()
      assert.equal(220, (c:read_reply(5)))
      assert.is_true(socket.gettime() - t0 >= 0.45, "the greeting waited for the connect rule")
    end)

    it("commands pipelined behind a sleeping RCPT rule are answered in order after it", function()
      local c = session()
      c:send("MAIL FROM:<a@example.org>\r\nRCPT TO:<sleep@example.test>\r\nRCPT TO:<jdoe@example.test>\r\n"
        .. "RCPT TO:<reject-rcpt@example.test>\r\nNOOP\r\n")
      local got = {}
      for i = 1, 5 do
        local code, lines = c:read_reply(5)
        got[i] = lines and lines[1] or tostring(code)
      end
      assert.same({ "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "550 5.1.1 recipient refused by the test rule",
                    "250 2.0.0 Ok" }, got)
    end)

    it("the client hangs up while a RCPT rule sleeps, and the server goes on", function()
      local mark = srv:log_mark()
      local c = session()
      assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
      c:send("RCPT TO:<sleep@example.test>\r\n")
      c:close()
      socket.sleep(0.8)   -- past the end of the sleep: the rule's answer finds no session
      assert.truthy(srv:wait_log("lost connection", 2, mark, true), srv:log():sub(mark + 1))
      local c2 = session()
      assert.equal(250, (c2:cmd("MAIL FROM:<a@example.org>")))
      assert.equal(250, (c2:cmd("RCPT TO:<jdoe@example.test>")))
      assert.is_true(srv:is_running())
      assert.is_nil(srv:log():sub(mark + 1):find("died", 1, true), "no process died")
    end)
  end)

  describe("tags and headers", function()
    it("puts the connect tag, the added headers and the values the rules read into the delivered message",
      function()
        local mark = srv:log_mark()
        local c = session("tagger.test")
        local code = smtp.send_mail(c, "a@example.org", "jdoe@example.test",
          smtp.message({ "From: a@example.org", "Subject: tagged" }, "body\r\n"))
        assert.equal(250, code)
        local files = srv:wait_maildir("jdoe")
        assert.equal(1, #files)
        local m = files[1].content
        local head = m:match("^(.-)\n\n")
        assert.truthy(head:find("\nX-Test-Tag: v\n", 1, true), m)
        assert.truthy(head:find("\nX-Seen-Subject: tagged\n", 1, true), m)
        assert.truthy(head:find("\nX-Seen-Helo: tagger.test\n", 1, true), m)
        assert.truthy(head:find("\nX-Seen-Session: ip=127.0.0.1 helo=tagger.test sender=a@example.org rcpts=1 "
          .. "host=mx.example.test\n", 1, true), m)
        assert.truthy(srv:wait_log("rule: message rule saw subject tagged", 2, mark, true))
      end)
  end)
end)
