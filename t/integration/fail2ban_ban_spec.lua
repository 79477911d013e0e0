-- t/integration/fail2ban_ban_spec.lua - fail2ban bans a host that fails AUTH (docs/admin.md, "fail2ban and
-- pflogsumm"): a real fail2ban-server, started by the test in its own directory with the shipped
-- contrib/fail2ban filter and a jail on luamta's log.file, sees three failed AUTH from one address and bans it.
-- The ban action is fail2ban's own "dummy" (it writes "+IP" to a file), so no firewall is touched.
local server = require "t.helpers.server"
local certs = require "t.helpers.certs"
local tools = require "t.helpers.tools"
local mime = require "mime"

local PASSWORD = "s3cret-ban-spec"
local F2B_ETC = "/etc/fail2ban"

local write = server.write_file
local function read(path) return server.read_file(path) or "" end
local function run(cmd) return (server.run(cmd)) end   -- the output only

describe("fail2ban with the shipped luamta filter", function()
  local dir, pki, srv, px, f2b_pid, sock

  setup(function()
    local bin = tools.need("fail2ban-server")
    dir = server.tempdir()
    pki = certs.new { expired = false }
    srv = server.start { config = {
      log = { file = dir .. "/mail.log" },
      tls = { cert = pki.cert, key = pki.key },
      directory = { users = { { address = "jdoe@example.test", password = certs.crypt(PASSWORD) } } },
    } }
    px = certs.proxy(srv.port, "starttls", { bind = "127.0.0.22" })
    -- fail2ban's own configuration, in the test's directory: the shipped filter, fail2ban's common.conf and
    -- dummy action, and a jail on the log with maxretry 3 and no ignored addresses
    local conf = dir .. "/f2b"
    assert(os.execute("mkdir -p " .. conf .. "/filter.d " .. conf .. "/action.d"))
    assert(os.execute(("cp %s/filter.d/common.conf %s/filter.d/ && cp %s/action.d/dummy.conf %s/action.d/ && "
      .. "cp contrib/fail2ban/filter.d/luamta.conf %s/filter.d/"):format(F2B_ETC, conf, F2B_ETC, conf, conf)))
    sock = dir .. "/f2b.sock"
    write(conf .. "/fail2ban.conf", ("[Definition]\nloglevel = INFO\nlogtarget = %s/f2b.log\nsocket = %s\n"
      .. "pidfile = %s/f2b.pid\ndbfile = :memory:\n"):format(dir, sock, dir))
    write(conf .. "/jail.conf", ("[DEFAULT]\nignoreip =\nbackend = polling\n\n[luamta]\nenabled = true\n"
      .. "filter = luamta\nlogpath = %s/mail.log\nmaxretry = 3\nfindtime = 600\nbantime = 600\n"
      .. "action = dummy[target=%s/banned]\n"):format(dir, dir))
    -- in the foreground, in its own process group, under timeout(1): stopped by PID in teardown
    local out = run(("setsid timeout 120 %s -f -x -c %s -s %s -p %s/f2b.pid >%s/f2b.out 2>&1 & echo $!"):format(
      bin, conf, sock, dir, dir))
    f2b_pid = tonumber(out:match("(%d+)"))
    assert(server.wait_until(function() return read(dir .. "/f2b.log"):find("Jail 'luamta' started", 1, true) end,
      20, 0.1), "fail2ban did not start its jail: " .. read(dir .. "/f2b.log") .. read(dir .. "/f2b.out"))
  end)

  teardown(function()
    -- the server's own pid (its pidfile), and the timeout(1) wrapper's group
    local pid = tonumber(read(dir .. "/f2b.pid"):match("%d+"))
    if pid then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    if f2b_pid then os.execute("kill -TERM -" .. f2b_pid .. " " .. f2b_pid .. " 2>/dev/null") end
    if pid then server.wait_until(function() return not read("/proc/" .. pid .. "/stat"):find("%S") end, 5, 0.1) end
    if px then px:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  it("bans the address after three failed AUTH", function()
    local c = certs.session(px)
    for i = 1, 3 do
      assert.equal(535, (c:cmd("AUTH PLAIN " .. (mime.b64("\0jdoe@example.test\0wrong" .. i)), 10)))
    end
    c:close()
    assert.truthy(server.wait_until(function() return read(dir .. "/banned"):find("+127.0.0.22\n", 1, true) end,
      20, 0.2), "no ban: " .. read(dir .. "/f2b.log"))
    local status = run(("timeout 10 %s -s %s status luamta"):format(tools.need("fail2ban-client"), sock))
    assert.truthy(status:find("Banned IP list:%s+127%.0%.0%.22"), status)
    assert.truthy(status:find("Total failed:%s+3"), status)
  end)
end)
