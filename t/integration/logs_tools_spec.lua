-- t/integration/logs_tools_spec.lua - the real tools read luamta's log (docs/admin.md, "Logs"). A realistic mix
-- (messages accepted and delivered, a relay refused, a connection refused, a Postfix-worded DNSBL-style reject,
-- failed AUTH under TLS, a next hop that defers and one that refuses, so a bounce) is written with log.file, then
-- fail2ban-regex runs Debian 12's postfix filter (normal and SASL mode) and the shipped
-- contrib/fail2ban/filter.d/luamta.conf over it, and pflogsumm summarises it, and the figures they print are
-- the ones the mix made.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"
local tools = require "t.helpers.tools"
local mime = require "mime"

local PASSWORD = "s3cret-tools-spec"
local FILTER_DIR = "/etc/fail2ban/filter.d"

local function b64(s) return (mime.b64(s)) end
local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local t = f:read("a")
  f:close()
  return t
end

local RULE = [[
  local mta = require "luamta"
  return { rcpt = function(s, r)
    if r.address == "spamtrap@example.test" then
      return mta.reject(554, "5.7.1 Service unavailable; Client host [" .. s.ip .. "] blocked using bl.example.test")
    end
  end }
]]

-- world(ident) -> a server writing log.file with ident, its next hops and TLS proxy; w.cleanup()
local function world(ident)
  local w = {}
  w.dir = server.tempdir()
  w.log = w.dir .. "/mail.log"
  w.pki = certs.new { expired = false }
  w.later = sink.start { tempfail = { "RCPT" }, soft_reply = "450 4.2.0 Try again later" }
  w.refuse = sink.start { reject = { "RCPT" }, hard_reply = "550 5.1.1 No such user here" }
  w.srv = server.start { config = sink.router_config {
    log = { file = w.log, ident = ident },
    tls = { cert = w.pki.cert, key = w.pki.key },
    directory = { users = {
      { address = "postmaster@example.test" },
      { address = "jdoe@example.test", password = certs.crypt(PASSWORD) },
      { address = "spamtrap@example.test" },
    } },
    inbound = { connection = { deny = { "[127.0.0.30]" } } },
    routing = { routes = { ["later.test"] = w.later.literal, ["refuse.test"] = w.refuse.literal } },
  }, rules = { { "trap", RULE } } }
  w.px = certs.proxy(w.srv.port, "starttls", { bind = "127.0.0.21" })
  function w.cleanup()
    if w.px then w.px:stop() end
    if w.srv then w.srv:cleanup() end
    if w.later then w.later:stop() end
    if w.refuse then w.refuse:stop() end
    if w.pki then w.pki:cleanup() end
    os.execute("rm -rf '" .. w.dir .. "'")
  end
  return w
end

-- mix(w) -> the queue IDs; the log then has every kind of line the tools count
local function mix(w)
  local srv = w.srv
  local ids = {}
  ids.one = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "one")
  ids.two = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "two")
  ids.later = sink.send(srv, "jdoe@example.test", { "x@later.test" }, "deferred")
  ids.refuse = sink.send(srv, "jdoe@example.test", { "nobody@refuse.test" }, "bounced")
  -- a relay refused, from an address that may not relay
  local c = assert(smtp.session("127.0.0.1", srv.port, { bind = "127.0.0.40" }))
  assert.equal(250, (c:cmd("MAIL FROM:<spammer@example.org>")))
  assert.equal(554, (c:cmd("RCPT TO:<victim@elsewhere.test>")))
  assert.equal(554, (c:cmd("RCPT TO:<spamtrap@example.test>")))
  c:cmd("QUIT")
  c:close()
  -- a connection refused
  c = assert(smtp.connect("127.0.0.1", srv.port, { bind = "127.0.0.30" }))
  assert.equal(554, (c:read_reply()))
  c:cmd("QUIT")
  c:close()
  -- three failed AUTH under TLS
  c = certs.session(w.px)
  for i = 1, 3 do
    assert.equal(535, (c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0wrong" .. i), 10)))
  end
  c:cmd("QUIT")
  c:close()
  assert.truthy(sink.wait_line(srv, { ids.refuse .. ": to=<nobody@refuse.test>", "status=bounced" }, 10),
    srv:log())
  assert.truthy(sink.wait_line(srv, { ids.later .. ": to=<x@later.test>", "status=deferred" }, 10), srv:log())
  assert.truthy(sink.wait_line(srv, { ids.two .. ": removed" }, 10), srv:log())
  local bounce = sink.wait_line(srv, { ids.refuse .. ": sender non-delivery notification: " }, 10)
  assert.truthy(bounce, srv:log())
  ids.bounce = bounce:match("notification: (%x+)")
  assert.truthy(sink.wait_line(srv, { ids.bounce .. ": removed" }, 10), srv:log())
  return ids
end

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- regex(log, filter) -> lines matched by fail2ban-regex, and its output
local function regex(log, filter)
  local bin = tools.need("fail2ban-regex")
  local out = run(("timeout 60 %s %s %s"):format(bin, server.sh_quote(log), server.sh_quote(filter)))
  return tonumber(out:match("Lines: %d+ lines, %d+ ignored, (%d+) matched")), out
end

describe("the log, read by the real tools", function()
  describe("with log.ident = \"postfix\"", function()
    local w

    setup(function()
      w = world("postfix")
      mix(w)
    end)

    teardown(function()
      if w then w.cleanup() end
    end)

    it("fail2ban's postfix filter in SASL mode matches each failed AUTH", function()
      local n, out = regex(w.log, "postfix[mode=auth]")
      assert.equal(3, n, out)
    end)

    it("fail2ban's postfix filter matches the reject worded as Postfix words it, and no other", function()
      local n, out = regex(w.log, FILTER_DIR .. "/postfix.conf")
      assert.equal(1, n, out .. "\n" .. read(w.log))
    end)

    it("pflogsumm counts what was received, delivered, deferred, bounced and rejected", function()
      local bin = tools.need("pflogsumm")
      local out = run(("timeout 60 %s %s"):format(bin, server.sh_quote(w.log)))
      local function count(what) return tonumber(out:match("\n%s*(%d+)%s+" .. what)) end
      assert.equal(4, count("received"), out)
      assert.equal(3, count("delivered"), out)     -- two messages and the bounce, to jdoe
      assert.equal(1, count("bounced"), out)
      assert.equal(1, count("deferred"), out)
      assert.equal(3, count("rejected"), out)      -- the relay, the spam trap, the refused connection
      assert.equal(2, count("senders"), out)      -- alice@example.org and jdoe@example.test
      assert.truthy(out:find("Relay rejected for policy reasons", 1, true), out)
    end)
  end)

  describe("with the default log.ident", function()
    local w, filter

    setup(function()
      w = world(nil)
      mix(w)
      if os.getenv("LOGS_DUMP") then io.stderr:write(read(w.log)) end
      -- the shipped filter, next to fail2ban's common.conf, as /etc/fail2ban/filter.d holds it once installed
      filter = w.dir .. "/filter.d/luamta.conf"
      os.execute(("mkdir -p %s/filter.d && cp %s/common.conf %s/filter.d/ && cp %s %s"):format(w.dir, FILTER_DIR,
        w.dir, "contrib/fail2ban/filter.d/luamta.conf", filter))
    end)

    teardown(function()
      if w then w.cleanup() end
    end)

    it("writes luamta/<service>[pid] lines", function()
      assert.truthy(read(w.log):find(" luamta/smtpd%[%d+%]: NOQUEUE: reject: RCPT from unknown%[127%.0%.0%.40%]: "
        .. "554 5%.7%.1 Relay rejected for policy reasons%.; from=<spammer@example%.org> to=<victim@elsewhere%.test> "
        .. "proto=ESMTP helo=<client%.test>\n"), read(w.log))
      assert.truthy(read(w.log):find(" luamta/smtpd%[%d+%]: NOQUEUE: reject: CONNECT from unknown%[127%.0%.0%.30%]: "
        .. "554 5%.7%.1 Connection refused for policy reasons; proto=SMTP\n"), read(w.log))
    end)

    it("the shipped luamta filter matches the refusals and the failed AUTH, and nothing else", function()
      local n, out = regex(w.log, filter)
      assert.equal(6, n, out .. "\n" .. read(w.log))
      for _, ip in ipairs { "127.0.0.21", "127.0.0.30", "127.0.0.40" } do
        assert.truthy(run(("%s %s %s --print-all-matched"):format(tools.need("fail2ban-regex"),
          server.sh_quote(w.log), server.sh_quote(filter))):find("[" .. ip .. "]", 1, true), ip)
      end
    end)

    it("the shipped jail example names the filter", function()
      local jail = read("contrib/fail2ban/jail.d/luamta.conf")
      assert.truthy(jail:find("\nfilter%s*=%s*luamta\n"), jail)
    end)

    it("pflogsumm reads it with --syslog-name=luamta", function()
      local out = run(("timeout 60 %s --syslog-name=luamta %s"):format(tools.need("pflogsumm"),
        server.sh_quote(w.log)))
      assert.equal(4, tonumber(out:match("\n%s*(%d+)%s+received")), out)
      assert.equal(3, tonumber(out:match("\n%s*(%d+)%s+delivered")), out)
    end)
  end)
end)
