-- t/integration/examples_spec.lua: the configurations in examples/ check clean, and the quickstart boots as
-- shipped (moved to this test's port and directory) and does what README.md promises.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

describe("examples/", function()
  for _, name in ipairs({ "quickstart", "domino" }) do
    it(name .. ".lua passes luamta check without an error", function()
      local out, rc = server.luamta("check -c examples/" .. name .. ".lua")
      assert.equal(0, rc, out)
      assert.matches("configuration and rules OK", out)
    end)
  end

  describe("quickstart.lua as shipped", function()
    local srv

    setup(function()
      srv = server.prepare({})
      -- Only the port and the run/ directory change: everything else is the file a new user starts.
      local text = read("examples/quickstart.lua")
      text = text:gsub('"127%.0%.0%.1:2525"', '"127.0.0.1:' .. srv.port .. '"')
      text = text:gsub('"%.%./run', '"' .. srv.dir)
      write(srv.cfgfile, text)
      srv.workers = 2
      srv:launch()
    end)

    teardown(function()
      if srv then srv:cleanup() end
    end)

    it("delivers a message for postmaster@example.test to its Maildir", function()
      local c = smtp.session(srv.host, srv.port)
      local code, lines = smtp.send_mail(c, "someone@elsewhere.test", "postmaster@example.test",
        smtp.message({ "Subject: hello" }, "first message\n"))
      c:close()
      assert.equal(250, code, lines and lines.text)
      local files = srv:wait_maildir("postmaster", "example.test")
      assert.equal(1, #files)
      assert.truthy(files[1].content:find("Subject: hello", 1, true))
    end)

    it("refuses to relay for a stranger, as the bundled relay rule does by default", function()
      local c = smtp.session(srv.host, srv.port)
      assert.equal(250, (c:cmd("MAIL FROM:<someone@elsewhere.test>")))
      local code, lines = c:cmd("RCPT TO:<victim@far.test>")
      c:close()
      assert.equal(554, code)
      assert.equal("554 5.7.1 Relay rejected for policy reasons.", lines[1])
    end)

    it("answers an edited rule after luamta reload, on the next connection", function()
      write(srv.dir .. "/rules/relay.lua", [[
local mta = require "luamta"
return { rcpt = function(s, rcpt)
  if rcpt.localpart == "jdoe" then return mta.reject(550, "5.7.1 jdoe is on holiday") end
end }
]])
      local out, rc = srv:luamta("reload")
      assert.equal(0, rc, out)
      assert.truthy(srv:wait_log("worker 2: reload", 5))
      local c = smtp.session(srv.host, srv.port)
      assert.equal(250, (c:cmd("MAIL FROM:<someone@elsewhere.test>")))
      local code, lines = c:cmd("RCPT TO:<jdoe@example.test>")
      c:close()
      assert.equal(550, code)
      assert.equal("550 5.7.1 jdoe is on holiday", lines[1])
    end)
  end)
end)
