-- t/integration/diskfull_spec.lua: a full disk under the spool gives 452 4.3.1, leaves nothing half-written, and
-- mail flows again once there is room (SPEC section 8). The spool is a 256 KiB tmpfs, so this needs root.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

-- files_in(dir) -> how many files dir and its sub-directories hold
local function files_in(dir)
  local out = sh("find " .. dir .. " -type f")
  local n = 0
  for line in out:gmatch("[^\n]+") do
    if not line:match("^rc=") then n = n + 1 end
  end
  return n
end

describe("a full disk under the spool", function()
  local mnt, srv, mounted

  setup(function()
    mnt = server.tempdir()
    local _, rc = sh("mount -t tmpfs -o size=256k tmpfs " .. mnt)
    mounted = rc == 0
    if not mounted then return end
    srv = server.start { config = { server = { spool = mnt .. "/spool" } } }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if mounted then sh("umount " .. mnt) end
    sh("rmdir " .. mnt)
  end)

  it("answers 452 4.3.1 to a message that does not fit, keeps nothing of it, and takes the next one", function()
    if not mounted then
      pending("mounting a tmpfs needs root")
      return
    end
    local c = smtp.session(srv.host, srv.port)
    local big = smtp.message({ "Subject: too big for the disk" }, ("x"):rep(76) .. "\n"):rep(1)
      .. (("y"):rep(998) .. "\r\n"):rep(400)             -- about 400 KiB: more than the 256 KiB tmpfs
    local code, lines = smtp.send_mail(c, "someone@elsewhere.test", "postmaster@example.test", big)
    assert.equal(452, code, lines and lines.text)
    assert.equal("452 4.3.1 Insufficient system storage", lines[1])
    assert.equal(0, files_in(mnt .. "/spool/tmp"), "a half-written file was left in tmp/")
    assert.equal(0, files_in(mnt .. "/spool/incoming") + files_in(mnt .. "/spool/queue"), "something was queued")
    -- the session goes on, and a message that fits is queued and delivered
    code, lines = smtp.send_mail(c, "someone@elsewhere.test", "postmaster@example.test",
      smtp.message({ "Subject: small" }, "fits\n"))
    c:close()
    assert.equal(250, code, lines and lines.text)
    assert.truthy(srv:wait_log("write failed: No space left on device", 2))
  end)
end)
