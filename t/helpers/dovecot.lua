-- t/helpers/dovecot.lua - a real Dovecot LMTP server for the router's LMTP specs, in a temp directory: its own
-- configuration, users and Maildirs, a Unix socket and a TCP port on 127.0.0.1.
--
--   local dovecot = require "t.helpers.dovecot"
--   local d = dovecot.start { users = { "jdoe@example.test" } }  -- the users Dovecot knows; others get 550 5.1.1
--   d.socket ("/tmp/…/lmtp"), d.port, d.address ("127.0.0.1:port")
--   d:messages(user) -> the files in that user's Maildir new/, as { { path =, content = } }
--   d:wait_messages(user, n, timeout) -> the same once there are at least n (default 1)
--   d:stop(), d:restart()                        -- down (the socket goes) and up again, same paths and port
--   d:cleanup()                                  -- stopped, temp dir removed
--
-- Dovecot refuses to deliver as root, so mail is stored as the user nobody when the tests run as root, and as
-- the user running them otherwise. It runs in the foreground (-F) in its own process group under timeout(1),
-- and is stopped by that group's id.
local lfs = require "lfs"
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"

local M = {}

local sh_quote, run, read_file, write_file = server.sh_quote, server.run, server.read_file, server.write_file
local running = {}

local D = {}
D.__index = D

function M.start(opts)
  opts = opts or {}
  local bin = tools.need("dovecot", "/usr/sbin/dovecot")
  tools.need("dovecot-lmtp", "/usr/lib/dovecot/lmtp")
  local self = setmetatable({ dir = server.tempdir(), port = server.free_port() }, D)
  self.socket = self.dir .. "/lmtp"
  self.address = "127.0.0.1:" .. self.port
  self.bin = bin
  local uid, gid, user, group
  if (run("id -u"):gsub("%s+$", "")) == "0" then
    user, group = "nobody", "nogroup"
    uid, gid = (run("id -u nobody"):gsub("%s+$", "")), (run("id -g nobody"):gsub("%s+$", ""))
  else
    user, group = (run("id -un"):gsub("%s+$", "")), (run("id -gn"):gsub("%s+$", ""))
    uid, gid = (run("id -u"):gsub("%s+$", "")), (run("id -g"):gsub("%s+$", ""))
  end
  -- the mail user must reach the Maildirs through the temp dir, which mktemp makes 0700
  run("chmod 0755 " .. sh_quote(self.dir) .. " && mkdir -p " .. sh_quote(self.dir .. "/mail") .. " && chown "
    .. user .. " " .. sh_quote(self.dir .. "/mail"))
  local users = {}
  for _, u in ipairs(opts.users or {}) do
    users[#users + 1] = ("%s::%s:%s::%s/mail/%s::"):format(u, uid, gid, self.dir, u)
  end
  write_file(self.dir .. "/users", table.concat(users, "\n") .. "\n")
  local me = (run("id -un"):gsub("%s+$", ""))
  local megroup = (run("id -gn"):gsub("%s+$", ""))
  write_file(self.dir .. "/dovecot.conf", table.concat({
    "base_dir = " .. self.dir .. "/run",
    "state_dir = " .. self.dir .. "/state",
    "log_path = " .. self.dir .. "/dovecot.log",
    "protocols = lmtp", "ssl = no", "listen = 127.0.0.1",
    "mail_location = maildir:" .. self.dir .. "/mail/%u",
    "first_valid_uid = 1", "mail_uid = " .. user, "mail_gid = " .. group,
    "default_internal_user = " .. me, "default_internal_group = " .. megroup, "default_login_user = " .. me,
    "passdb {", "  driver = passwd-file", "  args = " .. self.dir .. "/users", "}",
    "userdb {", "  driver = passwd-file", "  args = " .. self.dir .. "/users", "}",
    "service lmtp {", "  unix_listener " .. self.socket .. " {", "    mode = 0666", "  }",
    "  inet_listener lmtp {", "    address = 127.0.0.1", "    port = " .. self.port, "  }", "}",
    "",
  }, "\n"))
  running[self] = true
  self:launch()
  return self
end

function D:launch()
  local line = string.format("exec setsid timeout -k 2 300 %s -F -c %s >>%s 2>&1 </dev/null & echo $!",
    sh_quote(self.bin), sh_quote(self.dir .. "/dovecot.conf"), sh_quote(self.dir .. "/stderr"))
  self.pgid = assert(tonumber(run("sh -c " .. sh_quote(line)):match("(%d+)")))
  local up = server.wait_until(function()
    return run("test -S " .. sh_quote(self.socket) .. " && echo yes"):find("yes", 1, true)
  end, 10, 0.05)
  assert(up, "dovecot helper: no LMTP socket after 10 s:\n" .. (read_file(self.dir .. "/stderr") or "")
    .. (read_file(self.dir .. "/dovecot.log") or ""))
end

function D:stop()
  if not self.pgid then return end
  local pgid = self.pgid
  run("kill -TERM -" .. pgid)
  if not server.wait_until(function() return #server.group_members(pgid) == 0 end, 5, 0.05) then
    run("kill -KILL -" .. pgid)
    server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.05)
  end
  run("rm -f " .. sh_quote(self.socket))
  self.pgid = nil
end

function D:restart()
  self:stop()
  self:launch()
end

function D:messages(user)
  local dir = self.dir .. "/mail/" .. user .. "/new"
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." then
      out[#out + 1] = { path = dir .. "/" .. name, content = read_file(dir .. "/" .. name) }
    end
  end
  table.sort(out, function(a, b) return a.path < b.path end)
  return out
end

function D:wait_messages(user, n, timeout)
  n = n or 1
  server.wait_until(function() return #self:messages(user) >= n end, timeout or 5, 0.05)
  return self:messages(user)
end

function D:log()
  return read_file(self.dir .. "/dovecot.log") or ""
end

function D:cleanup()
  self:stop()
  running[self] = nil
  if not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(self.dir)) end
end

function M.stop_all()
  for d in pairs(running) do pcall(d.cleanup, d) end
end

return M
