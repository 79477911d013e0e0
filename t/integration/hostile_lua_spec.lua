-- t/integration/hostile_lua_spec.lua - rules that try to escape their limits (issue 8): runaway code the count
-- hook cannot see (coroutines, pcall, finalizers, pattern backtracking), verdicts that would make the core say
-- 250 for nothing, reply texts with line breaks, binary chunks, and the sandbox at a module's top level. Each
-- one costs the client a 451 4.3.0 (or the verdict's default), in a few seconds, and the one worker goes on.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

local RULE = [[
local mta = require "luamta"
local top_exec, top_open = os.execute, io and io.open   -- what a module's top level can keep for its handlers
local M = {}

local function spin() while true do end end

local runaway = {
  wrap = function() coroutine.wrap(spin)() end,
  resume = function() while true do coroutine.resume(coroutine.create(spin)) end end,
  gc = function()
    setmetatable({}, { __gc = spin })
    collectgarbage()
  end,
  collect = function() while true do collectgarbage() end end,
  pattern = function() return ("a"):rep(40):match(("a*"):rep(40) .. "b") end,
  gsub = function() coroutine.wrap(function() ("x"):rep(10):gsub(".", spin) end)() end,
  pcall = function() while true do pcall(spin) end end,
  xpcall = function() while true do xpcall(spin, spin) end end,
  load = function() while true do load(spin) end end,
  huge = function()
    local t = {}
    for i = 1, 1e9 do t[i] = ("x"):rep(200) .. i end
  end,
}

local verdicts = {
  ["reject-250"] = { action = "reject", code = 250, text = "2.0.0 Ok" },
  ["tempfail-nocode"] = { action = "tempfail" },
  ["reject-nocode"] = { action = "reject" },
  ["tempfail-550"] = { action = "tempfail", code = 550 },
  ["reject-float"] = { action = "reject", code = 550.5 },
  ["reject-crlf"] = { action = "reject", code = 550, text = "5.7.1 one\r\n250 2.0.0 two" },
  ["reject-class"] = { action = "reject", code = 550, text = "2.0.0 Ok" },
}

function M.rcpt(s, rcpt)
  local lp = rcpt.localpart
  if runaway[lp] then runaway[lp]() return mta.accept() end
  if verdicts[lp] then return verdicts[lp] end
  if lp == "binary" then
    local f = load(string.dump(function() return 1 end))
    local g = pcall(load, string.dump(function() return 1 end), "x", "b")
    return mta.reject(550, "5.0.0 binary=" .. tostring(f ~= nil) .. " mode_b=" .. tostring(g))
  end
  if lp == "toplevel" then
    return mta.reject(550, "5.0.0 exec=" .. type(top_exec) .. " open=" .. type(top_open))
  end
end

function M.message(s, msg)
  if msg:header("Subject") == "fake" then return { action = "reject", code = 250, text = "2.0.0 Ok: queued as FAKE" } end
end

return M
]]

describe("hostile rules (one worker)", function()
  local srv
  local clients = {}

  setup(function()
    srv = server.start { config = { server = { workers = 1 } }, rules = { { "hostile", RULE } } }
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
  end)

  local function session()
    local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 20 }))
    clients[#clients + 1] = c
    c:greet("client.test")
    assert.equal(250, (c:cmd("MAIL FROM:<a@example.org>")))
    return c
  end

  -- rcpt(localpart) -> code, first line of the RCPT reply, seconds it took, client
  local function rcpt(lp)
    local c = session()
    local t0 = socket.gettime()
    local code, lines = c:cmd("RCPT TO:<" .. lp .. "@example.test>", 20)
    return code, lines and lines[1], socket.gettime() - t0, c
  end

  local function worker_serves()
    local c = session()
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>", 5)), "the worker serves the next session")
    assert.equal(221, (c:cmd("QUIT", 5)))
  end

  local RULE_FAILED = "451 4.3.0 Error: policy rule failed, try again later"

  for _, case in ipairs {
    { "wrap", "loops inside coroutine.wrap(...)()" },
    { "resume", "loops in coroutines resumed again and again" },
    { "gc", "sets a __gc metamethod that loops, then calls collectgarbage()" },
    { "collect", "calls collectgarbage() in a loop" },
    { "pattern", "matches (\"a*\"):rep(40) .. \"b\" against forty a's" },
    { "gsub", "loops in a gsub callback inside a coroutine" },
    { "pcall", "catches the budget's error with pcall and loops again" },
    { "xpcall", "catches the budget's error with xpcall (whose handler loops too)" },
    { "load", "loops in load's reader function, which load calls in protected mode" },
  } do
    it("gets 451 4.3.0 within a few seconds when a rule " .. case[2], function()
      local mark = srv:log_mark()
      local code, line, secs, c = rcpt(case[1])
      assert.equal(RULE_FAILED, line, case[1] .. " took " .. secs .. " s")
      assert.truthy(secs < 5, case[1] .. " took " .. secs .. " s")
      assert.equal(250, (c:cmd("NOOP", 5)), "the session goes on")
      assert.truthy(srv:wait_log("lua rule=hostile stage=rcpt error", 2, mark, true), srv:log():sub(mark + 1))
      worker_serves()
    end)
  end

  it("gives the memory of a rule that builds a huge table back after its 451", function()
    local code, line, secs = rcpt("huge")
    assert.equal(RULE_FAILED, line, "took " .. secs .. " s")
    local pid = srv:log():match("luamta%[(%d+)%] worker 1: ready")
    local status = assert(io.open("/proc/" .. pid .. "/status")):read("a")
    local rss = tonumber(status:match("VmRSS:%s*(%d+)"))
    assert.truthy(rss < 100 * 1024, "worker RSS " .. rss .. " KiB after the run")
    worker_serves()
  end)

  describe("verdicts and reply texts", function()
    for _, case in ipairs {
      { "reject-250", RULE_FAILED, "a reject with code 250" },
      { "tempfail-550", RULE_FAILED, "a tempfail with code 550" },
      { "reject-float", RULE_FAILED, "a reject with code 550.5" },
      { "reject-class", RULE_FAILED, "a reject 550 whose text starts 2.0.0" },
      { "tempfail-nocode", "451 4.7.1 Try again later", "a tempfail without code or text" },
      { "reject-nocode", "550 5.7.1 Rejected by policy", "a reject without code or text" },
    } do
      it("answers RCPT with " .. case[2] .. " for " .. case[3], function()
        local _, line = rcpt(case[1])
        assert.equal(case[2], line)
      end)
    end

    it("keeps a reply text with CR LF on one line", function()
      local c = session()
      c:send("RCPT TO:<reject-crlf@example.test>\r\nNOOP\r\n")
      local code, lines = c:read_reply(5)
      assert.equal(550, code)
      assert.equal(1, #lines, lines.text)
      assert.equal("550 5.7.1 one  250 2.0.0 two", lines[1])
      local ncode, nlines = c:read_reply(5)
      assert.equal(250, ncode, "the next reply is NOOP's")
      assert.matches("^250 2%.0%.0", nlines[1])
    end)

    it("answers the final dot with 451 4.3.0 for a message-stage reject with code 250, and queues nothing",
      function()
        local mark = srv:log_mark()
        local before = #srv:maildir_files("jdoe")
        local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 5 }))
        clients[#clients + 1] = c
        c:greet("client.test")
        local code, lines = smtp.send_mail(c, "a@example.org", "jdoe@example.test",
          smtp.message({ "Subject: fake" }, "body\r\n"))
        assert.equal(RULE_FAILED, lines and lines[1], tostring(code))
        assert.truthy(srv:wait_log("rule=hostile stage=message error: rule hostile returned reject with a code " ..
          "outside 500-599", 2, mark, true), srv:log():sub(mark + 1))
        socket.sleep(0.3)
        assert.equal(before, #srv:maildir_files("jdoe"))
      end)
  end)

  describe("the sandbox", function()
    it("refuses binary chunks in load", function()
      local _, line = rcpt("binary")
      assert.equal("550 5.0.0 binary=false mode_b=false", line)
    end)

    it("gives a module's top level no os.execute and no io.open to keep for its handlers", function()
      local _, line = rcpt("toplevel")
      assert.equal("550 5.0.0 exec=nil open=nil", line)
    end)
  end)
end)
