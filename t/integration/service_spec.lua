-- t/integration/service_spec.lua - luamta as a service (docs/admin.md, "Running it as a service"): children exit
-- with the master, process titles, one instance per spool (the locked pid file), `luamta reload` saying whether
-- every process took the new configuration, check and reload validating as server.user, and the service
-- manager's notifications (READY=1, RELOADING=1, STOPPING=1, STATUS=) read from a datagram socket we own.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"
local socket = require "socket"
local lfs = require "lfs"

local sh_quote, run, read_file, write_file = server.sh_quote, server.run, server.read_file, server.write_file
local SRC = (debug.getinfo(1, "S").source:match("^@(.*)t/integration/service_spec%.lua$") or "./")

-- cmdline(pid) -> /proc/PID/cmdline with NULs as spaces, trimmed (what ps -o args shows)
local function cmdline(pid)
  local s = read_file("/proc/" .. pid .. "/cmdline") or ""
  return (s:gsub("%z+$", ""):gsub("%z", " "))
end

local function accepts(port)
  local c = socket.tcp()
  c:settimeout(0.3)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok and true or false
end

-- with_env(dir, env, fn): fn() with server.BIN replaced by a wrapper that sets env (launch() runs server.BIN)
local function with_env(dir, env, fn)
  local lines = { "#!/bin/sh" }
  for k, v in pairs(env) do lines[#lines + 1] = ("%s=%s; export %s"):format(k, sh_quote(v), k) end
  lines[#lines + 1] = "exec " .. sh_quote(server.BIN) .. " \"$@\""
  local wrapper = dir .. "/luamta-env.sh"
  write_file(wrapper, table.concat(lines, "\n") .. "\n")
  run("chmod 755 " .. sh_quote(wrapper))
  local real = server.BIN
  server.BIN = wrapper
  local ok, err = pcall(fn)
  server.BIN = real
  if not ok then error(err, 0) end
end

describe("luamta run as a service", function()
  local srv

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  it("titles its processes luamta: master, luamta: worker N and luamta: router", function()
    srv = server.start { config = { server = { workers = 2 } } }
    local titles = {}
    for _, pid in ipairs(srv:processes()) do titles[cmdline(pid)] = pid end
    local seen = {}
    for t in pairs(titles) do seen[#seen + 1] = t end
    table.sort(seen)
    local all = table.concat(seen, " | ")
    for _, want in ipairs { "luamta: master", "luamta: worker 1", "luamta: worker 2", "luamta: router" } do
      assert.truthy(titles[want], "no process titled " .. want .. ": " .. all)
    end
    assert.equal(srv.pid, titles["luamta: master"])
    local ps = tools.need("ps")
    local out = run(ps .. " -o args= -p " .. srv.pid)
    assert.equal("luamta: master", (out:gsub("%s+$", "")))
  end)

  it("takes every child down within 2 s when the master is killed, and starts again on the same port", function()
    srv = server.start { config = { server = { workers = 2 } } }
    local port, pgid = srv.port, srv.pgid
    assert.equal(4, #srv:processes())
    run("kill -KILL " .. srv.pid)
    local gone = server.wait_until(function() return #server.group_members(pgid) == 0 end, 2, 0.02)
    assert.truthy(gone, "left serving: " .. table.concat(server.group_members(pgid), " "))
    assert.is_false(accepts(port), "something still accepts on port " .. port)
    -- the pid file still names the dead master; the lock, not the pid, says nobody runs
    assert.truthy(srv:master_pid())
    srv.pgid, srv.pid = nil, nil
    srv:launch(10)
    assert.is_true(accepts(port))
    assert.equal(srv.pid, srv:master_pid())
  end)

  it("starts when a stale pid file names a live process that is not luamta", function()
    srv = server.prepare {}
    lfs.mkdir(srv.spool)
    write_file(srv.spool .. "/luamta.pid", "1\n")
    srv:launch(10)
    assert.is_true(accepts(srv.port))
    assert.equal(srv.pid, srv:master_pid())
  end)

  it("refuses a second run on the same spool with exit 1, before touching the first one's files", function()
    srv = server.start {}
    local inflight = srv.spool .. "/tmp/inflight-of-the-first"
    write_file(inflight, "a message the first instance is still receiving\n")
    local cfg2 = srv.dir .. "/second.lua"
    -- the same spool, another port: only the spool is shared
    local c = server.merge(srv.config, { server = { listen = { "127.0.0.1:" .. server.free_port() } } })
    write_file(cfg2, server.config_source(c))
    local out, rc = run("timeout 10 " .. sh_quote(server.BIN) .. " run -c " .. sh_quote(cfg2) .. " </dev/null")
    assert.equal(1, rc, out)
    assert.truthy(out:find("another luamta (pid " .. srv.pid .. ") runs on spool " .. srv.spool, 1, true), out)
    assert.truthy(read_file(inflight), "the second instance swept the first one's tmp/")
    assert.equal(srv.pid, srv:master_pid())
    assert.is_true(accepts(srv.port))
    assert.equal(3, #srv:processes())  -- master, worker, router
  end)
end)

describe("luamta reload", function()
  local srv

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  it("exits 0 and says so when every worker and the router loaded the new configuration", function()
    srv = server.start { config = { server = { workers = 2 } } }
    local out, rc = srv:luamta("reload")
    assert.equal(0, rc, out)
    assert.truthy(out:find("sent SIGHUP to " .. srv.pid .. "; every process loaded the new configuration", 1,
      true), out)
  end)

  it("exits 1 with file:line when a worker kept its old state", function()
    -- The server runs on its own copy of the library; a broken module there passes the validation that
    -- `luamta reload` does (with this tree's copy) but not the workers' load: what they say must come back.
    srv = server.prepare { config = { server = { workers = 2 } } }
    local lib = srv.dir .. "/datadir"
    run("mkdir -p " .. sh_quote(lib) .. " && cp -r " .. sh_quote(SRC .. "lua") .. " " .. sh_quote(SRC .. "rules")
      .. " " .. sh_quote(lib))
    with_env(srv.dir, { LUAMTA_DATADIR = lib }, function() srv:launch(10) end)
    write_file(lib .. "/rules/sender.lua", "local M = {}\nlocal x = = 1\nreturn M\n")
    local out, rc = srv:luamta("reload")
    assert.equal(1, rc, out)
    local where = lib .. "/rules/sender.lua:2:"
    assert.truthy(out:find("error: worker 1: [^\n]*" .. where:gsub("%p", "%%%0")), out)
    assert.truthy(out:find("error: worker 2: [^\n]*" .. where:gsub("%p", "%%%0")), out)
    assert.falsy(out:find("router:", 1, true), out)
    assert.truthy(out:find("a process kept its old state", 1, true), out)
    -- and they do keep it: mail is still taken
    assert.is_true(accepts(srv.port))
  end)

  it("and check exit 1 for a routing module that only the router loads and that does not compile", function()
    srv = server.prepare {}
    srv:write_rule("routing", "local M = {}\nfunction M.route(m, r) return = end\nreturn M\n")
    local where = (srv.rules_dir .. "/routing.lua:2:"):gsub("%p", "%%%0")
    local out, rc = srv:luamta("check")
    assert.equal(1, rc, out)
    assert.truthy(out:find("error: [^\n]*" .. where), out)
    out, rc = srv:luamta("reload")
    assert.equal(1, rc, out)
    assert.truthy(out:find(where), out)
    assert.truthy(out:find("not sent", 1, true), out)
  end)

  it("exits 1 when no server runs on the spool", function()
    srv = server.prepare {}
    local out, rc = srv:luamta("reload")
    assert.equal(1, rc, out)
    assert.truthy(out:find("no running server found for spool " .. srv.spool, 1, true), out)
  end)
end)

describe("check and reload validate as server.user", function()
  local certs = require "t.helpers.certs"
  local pki, srv

  setup(function() pki = certs.new { expired = false } end)
  teardown(function() if pki then pki:cleanup() end end)
  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  -- as_nobody(opts) -> a prepared server whose files nobody can read, but for the key when key_mode says so
  local function as_nobody(key_mode)
    local s = server.prepare { config = { server = { user = "nobody" }, tls = { cert = pki.cert, key = pki.key } } }
    run("chmod 755 " .. sh_quote(s.dir) .. " " .. sh_quote(s.rules_dir) .. " " .. sh_quote(pki.dir)
      .. " && chmod 644 " .. sh_quote(pki.cert) .. " " .. sh_quote(s.cfgfile) .. " && chown root "
      .. sh_quote(pki.key) .. " && chmod " .. key_mode .. " " .. sh_quote(pki.key))
    return s
  end

  -- Switching users needs root; the test machines (CI) run the suite as root.
  local root = (run("id -u"):match("%d+")) == "0"

  it("as server.user, a message is taken into the hashed queue and delivered", function()
    if not root then return pending("needs root to switch to server.user") end
    srv = as_nobody("644")
    run("mkdir -p " .. sh_quote(srv.dir .. "/mailboxes") .. " && chown nobody " .. sh_quote(srv.dir .. "/mailboxes"))
    srv:launch(10)
    local c = smtp.session(srv.host, srv.port)
    local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test",
      smtp.message({ "Subject: as nobody" }, "hello\r\n"))
    c:close()
    assert.equal(250, code, lines and lines.text)
    local files = srv:wait_maildir("jdoe", nil, 1, 10)
    assert.equal(1, #files, srv:log())
    assert.truthy(server.wait_until(function() return #srv:queue_files() == 0 end, 5), "the queue empties")
  end)

  it("check fails on a TLS key that only root can read", function()
    if not root then return pending("needs root to switch to server.user") end
    srv = as_nobody("600")
    local out, rc = srv:luamta("check")
    assert.equal(1, rc, out)
    assert.truthy(out:find("error: " .. srv.cfgfile .. ": tls.key: cannot load " .. pki.key, 1, true), out)
  end)

  it("reload exits 1, sends nothing and keeps the certificate when server.user cannot read the new key", function()
    if not root then return pending("needs root to switch to server.user") end
    srv = as_nobody("644")
    local out, rc = srv:luamta("check")
    assert.equal(0, rc, out)
    srv:launch(10)
    run("chmod 600 " .. sh_quote(pki.key))
    local mark = srv:log_mark()
    out, rc = srv:luamta("reload")
    run("chmod 644 " .. sh_quote(pki.key))
    assert.equal(1, rc, out)
    assert.truthy(out:find("tls.key: cannot load " .. pki.key, 1, true), out)
    assert.truthy(out:find("not sent", 1, true), out)
    socket.sleep(0.3)
    assert.same({}, srv:log_lines("reload", mark))
  end)
end)

describe("the service manager's notifications", function()
  local srv, listener

  -- listen(addr, out) -> a Python process that appends every datagram sent to addr ("@name": abstract) to out
  local function listen(addr, out)
    tools.need("python3")
    local script = [[
import socket, sys
addr, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
open(out + ".up", "w").close()
while True:
    d = s.recv(65536)
    with open(out, "a") as f:
        f.write(d.decode() + "\n--\n")
]]
    local p = assert(io.popen("sh -c " .. sh_quote("timeout 60 python3 -c " .. sh_quote(script) .. " "
      .. sh_quote(addr) .. " " .. sh_quote(out) .. " >/dev/null 2>&1 & echo $!")))
    local pid = tonumber(p:read("a"):match("%d+"))
    p:close()
    assert(server.wait_until(function() return read_file(out .. ".up") end, 5), "the listener did not start")
    return { pid = pid, out = out }
  end

  local function messages(l)
    local list = {}
    for m in (read_file(l.out) or ""):gmatch("(.-)\n%-%-\n") do list[#list + 1] = m end
    return list
  end

  after_each(function()
    if srv then srv:cleanup() end
    if listener then run("kill " .. listener.pid) end
    srv, listener = nil, nil
  end)

  for _, kind in ipairs { "path", "abstract" } do
    it("sends READY=1 with MAINPID, RELOADING=1 then READY=1, and STOPPING=1, in order (" .. kind .. " socket)",
      function()
        srv = server.prepare { config = { server = { workers = 2 } } }
        local addr = kind == "path" and srv.dir .. "/notify.sock" or "@luamta-test-" .. srv.dir:match("[^/]+$")
        listener = listen(addr, srv.dir .. "/notify.out")
        with_env(srv.dir, { NOTIFY_SOCKET = addr }, function() srv:launch(10) end)
        local m = server.wait_until(function() local l = messages(listener); return #l >= 1 and l end, 5)
        assert.truthy(m, "no notification")
        assert.matches("^READY=1\nMAINPID=" .. srv.pid .. "\nSTATUS=2 worker%(s%) and the router running; 0 "
          .. "message%(s%) in the queue$", m[1])
        local out, rc = srv:luamta("reload")
        assert.equal(0, rc, out)
        m = server.wait_until(function() local l = messages(listener); return #l >= 3 and l end, 5)
        assert.truthy(m, table.concat(messages(listener), " | "))
        assert.matches("^RELOADING=1\n", m[2])
        assert.matches("^READY=1\nSTATUS=", m[3])
        local pid = srv.pid
        assert.is_true(srv:stop(10))
        m = server.wait_until(function() local l = messages(listener); return #l >= 4 and l end, 5)
        assert.truthy(m, table.concat(messages(listener), " | "))
        assert.matches("^STOPPING=1\n", m[4])
        assert.equal(4, #m, table.concat(m, " | "))
        -- only the master speaks: children do not even see the variable
        assert.truthy(pid)
      end)
  end

  it("counts the queue for STATUS= on its I/O thread: READY=1 says how many messages wait at start", function()
    local sink = require "t.helpers.sink"
    srv = server.prepare { config = sink.router_config {
      routing = { relay_host = "[127.0.0.1]:" .. server.free_port(), retry = { 3600 } },
    } }
    srv:launch(10)
    for i = 1, 3 do sink.send(srv, "alice@client.test", { "far@outside.test" }, "waiting " .. i) end
    assert.truthy(server.wait_until(function() return srv:log():find("status=deferred.-status=deferred.-status=deferred") end,
      10), "three deferred")
    assert.is_true(srv:stop(10))
    local addr = "@luamta-test-q-" .. srv.dir:match("[^/]+$")
    listener = listen(addr, srv.dir .. "/notify.out")
    with_env(srv.dir, { NOTIFY_SOCKET = addr }, function() srv:launch(10) end)
    local m = server.wait_until(function() local l = messages(listener); return #l >= 1 and l end, 5)
    assert.truthy(m, "no notification")
    assert.matches("^READY=1\nMAINPID=%d+\nSTATUS=1 worker%(s%) and the router running; 3 message%(s%) in the queue$",
      m[1])
  end)
end)
