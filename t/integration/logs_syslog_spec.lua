-- t/integration/logs_syslog_spec.lua - log.syslog = true (docs/admin.md, "Logs"): every process sends to syslog
-- with the tag "<ident>/<service>", its pid and the facility of log.facility. The daemon runs in a private mount
-- namespace whose /dev/log is a datagram socket this spec reads, so the machine's syslog is never involved; that
-- needs root, as the tmpfs of diskfull_spec does.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local tools = require "t.helpers.tools"

local IS_ROOT = (server.run("id -u")):match("^0%s*$") ~= nil

-- The receiver: one line per datagram; it ends when the daemon (its parent, after the exec) is gone.
local RECEIVER = [[
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
s.settimeout(0.5)
parent = os.getppid()
with open(sys.argv[1], "ab", buffering=0) as out:
    while os.getppid() == parent:
        try:
            out.write(s.recv(65536).replace(b"\n", b"\\n") + b"\n")
        except socket.timeout:
            pass
]]

local SCRIPT = [[
set -e
mount -t tmpfs -o mode=755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
python3 "$1" "$2" &
i=0
while [ ! -S /dev/log ] && [ $i -lt 100 ]; do sleep 0.02; i=$((i + 1)); done
exec "$3" run -c "$4"
]]

describe("log.syslog", function()
  local srv, got

  setup(function()
    if not IS_ROOT then return end
    tools.need("unshare")
    tools.need("python3")
    srv = server.prepare { config = { log = { syslog = true, facility = "local3", ident = "mx-test" } } }
    got = srv.dir .. "/syslog.txt"
    local f = assert(io.open(srv.dir .. "/receiver.py", "w"))
    f:write(RECEIVER)
    f:close()
    f = assert(io.open(srv.dir .. "/ns.sh", "w"))
    f:write(SCRIPT)
    f:close()
    local q = server.sh_quote
    local cmd = ("exec setsid unshare -m sh %s %s %s %s %s >>%s 2>&1 </dev/null & echo $!"):format(
      q(srv.dir .. "/ns.sh"), q(srv.dir .. "/receiver.py"), q(got), q(server.BIN), q(srv.cfgfile), q(srv.stderrfile))
    local p = assert(io.popen("sh -c " .. q(cmd)))
    srv.pid = assert(tonumber(p:read("a"):match("%d+")))
    p:close()
    srv.pgid = srv.pid
    srv.logfile = got
    assert(srv:wait_log("/qmgr%[%d+%]: ready", 10), "no ready line:\n" .. srv:log() .. "\n" ..
      (server.read_file(srv.stderrfile) or ""))
    assert(srv:wait_log("/smtpd%[%d+%]: ready", 10), srv:log())
  end)

  teardown(function()
    if srv then srv:cleanup() end
  end)

  it("sends each line with the facility, the tag ident/service and the pid", function()
    if not IS_ROOT then
      pending("a private /dev/log needs root (a mount namespace)")
      return
    end
    local qid = sink.send(srv, "alice@example.org", { "jdoe@example.test" }, "by syslog")
    assert.truthy(srv:wait_log(qid .. ": removed", 10, 0, true), srv:log())
    local services = {}
    for line in srv:log():gmatch("[^\n]+") do
      -- <PRI>Mmm dd hh:mm:ss TAG[PID]: text, PRI = facility local3 (19) * 8 + severity
      local pri, tag, pid = line:match("^<(%d+)>%u%l%l [ %d]%d %d%d:%d%d:%d%d ([^%[]+)%[(%d+)%]: ")
      assert.truthy(pri, "not a syslog datagram: " .. line)
      assert.equal(19, tonumber(pri) // 8, line)
      local ident, service = tag:match("^(.-)/(%l+)$")
      assert.equal("mx-test", ident, line)
      services[service] = true
    end
    for _, s in ipairs { "master", "smtpd", "qmgr", "local" } do
      assert.truthy(services[s], "no line from " .. s .. ":\n" .. srv:log())
    end
    assert.truthy(srv:log():find("<158>[^\n]*mx%-test/local%[%d+%]: " .. qid .. ": to=<jdoe@example%.test>, "
      .. "relay=local,"), srv:log())
    assert.truthy(srv:log():find("mx%-test/smtpd%[%d+%]: " .. qid .. ": client=unknown%[127%.0%.0%.1%]"), srv:log())
  end)
end)
