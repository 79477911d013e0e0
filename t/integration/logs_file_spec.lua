-- t/integration/logs_file_spec.lua - log.file (docs/admin.md, "Logs"): every line has the syslog time stamp, the
-- host name and "<ident>/<service>[pid]:", with the service of the process or job that wrote it (smtpd, qmgr,
-- local, master); HUP after a rename (what logrotate does) makes every process write to a new file; log.ident
-- changes the tag.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local socket = require "socket"

local PREFIX = "^(%u%l%l [ %d]%d %d%d:%d%d:%d%d) (%S+) ([%w_.%-]+)/(%l+)%[(%d+)%]: "

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local t = f:read("a")
  f:close()
  return t
end

local function host()
  local p = io.popen("hostname")
  local h = p:read("l")
  p:close()
  return (h:gsub("%..*", ""))
end

-- lines(path) -> every line of the file, split into { stamp, host, ident, service, pid, text }
local function lines(path)
  local out = {}
  for line in read(path):gmatch("[^\n]+") do
    local stamp, h, ident, service, pid = line:match(PREFIX)
    out[#out + 1] = { line = line, stamp = stamp, host = h, ident = ident, service = service, pid = pid,
      text = line:match(PREFIX .. "(.*)$") and line:gsub(PREFIX, "") }
  end
  return out
end

local function wait_for(path, pattern, timeout)
  return server.wait_until(function() return read(path):match(pattern) end, timeout or 5, 0.02)
end

local function send(srv, rcpt, subject)
  local c = assert(smtp.session("127.0.0.1", srv.port))
  local code, lines_ = smtp.send_mail(c, "alice@example.org", { rcpt }, "Subject: " .. subject .. "\r\n\r\nhi\r\n")
  c:cmd("QUIT")
  c:close()
  assert.equal(250, code, lines_ and lines_.text)
  return lines_.text:match("queued as (%x+)")
end

describe("log.file", function()
  local srv, path, dir

  setup(function()
    dir = server.tempdir()
    path = dir .. "/mail.log"
    srv = server.start { config = { log = { file = path } } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("writes syslog-shaped lines with the service of each process", function()
    local qid = send(srv, "jdoe@example.test", "one")
    assert.truthy(wait_for(path, qid .. ": removed"), read(path))
    local seen, me = {}, host()
    for _, l in ipairs(lines(path)) do
      assert.truthy(l.stamp, "not a syslog line: " .. l.line)
      assert.equal(me, l.host)
      assert.equal("luamta", l.ident)
      seen[l.service] = seen[l.service] or {}
      table.insert(seen[l.service], l.text)
    end
    local function has(service, text)
      for _, t in ipairs(seen[service] or {}) do
        if t:find(text, 1, true) then return true end
      end
      return false
    end
    assert.truthy(has("master", "starting:"), read(path))
    assert.truthy(has("smtpd", "ready: policy generation"), read(path))
    assert.truthy(has("qmgr", "ready: resuming the queue"), read(path))
    assert.truthy(has("smtpd", "connect from unknown[127.0.0.1]"), read(path))
    assert.truthy(has("local", qid .. ": to=<jdoe@example.test>, relay=local"), read(path))
    assert.truthy(has("qmgr", qid .. ": removed"), read(path))
    assert.equal("", read(srv.stderrfile), "nothing on stderr")
  end)

  it("opens the file again on HUP, in every process", function()
    assert.truthy(os.rename(path, path .. ".1"))
    local old = #read(path .. ".1")
    local master = srv:master_pid()
    assert.truthy(os.execute("kill -HUP " .. master))
    assert.truthy(wait_for(path, "/qmgr%[%d+%]: router reload"), read(path))
    assert.truthy(wait_for(path, "/smtpd%[%d+%]: reload"), read(path))
    assert.truthy(wait_for(path, "/master%[" .. master .. "%]: reload"), read(path))
    local qid = send(srv, "jdoe@example.test", "two")
    assert.truthy(wait_for(path, qid .. ": removed"), read(path))
    local text = read(path)
    assert.truthy(text:find("/smtpd%[%d+%]: " .. qid .. ": client="), text)
    assert.truthy(text:find("/local%[%d+%]: " .. qid .. ": to=<jdoe@example.test>"), text)
    socket.sleep(0.2)
    assert.equal(old, #read(path .. ".1"), "the old file took no more lines")
  end)
end)

describe("log.file at start-up", function()
  it("writes the master's errors to stderr too, so that whoever ran luamta run sees why it stopped", function()
    local dir = server.tempdir()
    local busy = assert(socket.bind("127.0.0.1", 0))
    local _, port = busy:getsockname()
    local srv = server.prepare { config = { log = { file = dir .. "/mail.log" },
      server = { listen = { "127.0.0.1:" .. port } } } }
    local out, rc = server.run("(timeout 10 " .. server.sh_quote(server.BIN) .. " run -c "
      .. server.sh_quote(srv.cfgfile) .. " 2>&1 >/dev/null)")
    busy:close()
    local text = read(dir .. "/mail.log")
    srv:cleanup()
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(1, rc)
    assert.truthy(out:find("luamta: listen 127.0.0.1:" .. port .. ": Address already in use", 1, true), out)
    assert.truthy(text:find("luamta/master%[%d+%]: error: listen 127%.0%.0%.1:" .. port .. ": Address already in use"),
      text)
  end)
end)

describe("log.ident", function()
  it("changes the tag of every line", function()
    local dir = server.tempdir()
    local path = dir .. "/mail.log"
    local srv = server.start { config = { log = { file = path, ident = "postfix" } } }
    local ok, err = pcall(function()
      local qid = send(srv, "jdoe@example.test", "three")
      assert.truthy(wait_for(path, qid .. ": removed"), read(path))
      for _, l in ipairs(lines(path)) do assert.equal("postfix", l.ident, l.line) end
      assert.truthy(read(path):find("postfix/smtpd%[%d+%]: " .. qid .. ": client=unknown%[127%.0%.0%.1%]"))
    end)
    srv:cleanup()
    os.execute("rm -rf '" .. dir .. "'")
    assert(ok, err)
  end)
end)
