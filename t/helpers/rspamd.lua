-- t/helpers/rspamd.lua - run a real rspamd (Debian `rspamd`) for an integration spec, on a loopback port, with a
-- minimal configuration in a temp directory: only the normal worker (no controller, no proxy, no fuzzy), no Redis,
-- its own dbdir, rundir and log, a tiny TLD list and no hyperscan (so that it starts in about two seconds instead
-- of half a minute compiling), DNS pointed at a closed port (answers fail fast, nothing leaves the machine).
--
--   local rspamd = require "t.helpers.rspamd"
--   local r = rspamd.start { local_d = { ["actions.conf"] = "..." }, dkim = { domain = "example.test",
--                            selector = "s1" } }
--   ... r.port, r.url, r.dir, r:log(), r.dkim_public (base64 of the DKIM public key, for a TXT record) ...
--   r:stop()                 -- SIGTERM to its process group, then SIGKILL; waits until no process is left
--
-- The test's rules (local.d/rspamd.lua) add a prefilter: a message with a header "X-Test-Action: <action>" gets
-- that action from rspamd ("soft reject", "add header", "rewrite subject", "greylist", ...), with the message
-- "test action <action>". GTUBE is rspamd's own: it gives "reject" with "Gtube pattern". A postfilter asks (in the
-- milter block of every answer) to add "X-Test-Envelope: helo=<Helo> hostname=<Hostname> user=<User>", what
-- rspamd was told ("nil" for a field it did not get).
-- opts.nameserver ("127.0.0.1:port", a t/helpers/dns.lua dnsmasq): rspamd's DNS, and SPF and DMARC are checked
-- for loopback clients too, so that a spec can see SPF and DMARC verdicts in Authentication-Results.
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"
local socket = require "socket"
local lfs = require "lfs"

local M = {}
M.START_TIMEOUT = 20       -- seconds rspamd may take to answer /ping; it takes about 2 on an idle machine

local RULES = [[
rspamd_config:register_symbol {
  name = 'LUAMTA_TEST_ACTION',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local action = task:get_header('X-Test-Action')
    if action then
      task:set_pre_result { action = action, message = 'test action ' .. action, module = 'luamta_test' }
    end
  end,
}
rspamd_config:register_symbol {
  name = 'LUAMTA_TEST_ENVELOPE',
  type = 'postfilter',
  priority = 10,
  callback = function(task)
    task:set_milter_reply { add_headers = { ['X-Test-Envelope'] = string.format('helo=%s hostname=%s user=%s',
      tostring(task:get_helo()), tostring(task:get_hostname()), tostring(task:get_user())) } }
  end,
}
]]

local function conf(dir, port, nameserver)
  return ([[
.include "$CONFDIR/common.conf"
options {
  pidfile = "%s/run/rspamd.pid";
  filters = "chartable,dkim,regexp";
  url_tld = "%s/tld.dat";
  disable_hyperscan = true;
  cache_file = "%s/db/symbols.cache";
  dynamic_conf = "%s/db/rspamd_dynamic";
  tempdir = "%s/run";
  explicit_modules = ["settings"];
  dns { nameserver = ["%s"]; timeout = %s; retransmits = 1; }
}
logging { type = "file"; filename = "%s/rspamd.log"; level = "info"; }
worker "normal" { bind_socket = "127.0.0.1:%d"; count = 1; task_timeout = 8s; }
]]):format(dir, dir, dir, dir, dir, nameserver or "127.0.0.1:9", nameserver and "1s" or "0.1s", dir, port)
end

-- The modules that would only wait for DNS answers that never come, off; milter_headers adds
-- Authentication-Results for every client, loopback included.
local LOCAL_D = {
  ["rbl.conf"] = "enabled = false;\n",
  ["asn.conf"] = "enabled = false;\n",
  ["hfilter.conf"] = "enabled = false;\n",
  ["mx_check.conf"] = "enabled = false;\n",
  ["milter_headers.conf"] = 'use = ["authentication-results"];\nskip_local = false;\nskip_authenticated = false;\n',
}

local function http_get(port, path)
  local c = socket.connect("127.0.0.1", port)
  if not c then return nil end
  c:settimeout(2)
  c:send("GET " .. path .. " HTTP/1.0\r\n\r\n")
  local data = c:receive("*a")
  c:close()
  return data
end

local Rspamd = {}
Rspamd.__index = Rspamd

-- rspamd.start(opts) -> a running rspamd. opts.local_d: more files for local.d/ (they replace the defaults above);
-- opts.dkim = { domain, selector }: a new RSA key, signing mail whose From is in that domain (sign_local).
function M.start(opts)
  opts = opts or {}
  local bin = tools.need("rspamd")
  local self = setmetatable({}, Rspamd)
  self.dir = server.tempdir()
  self.port = server.free_port()
  self.url = "http://127.0.0.1:" .. self.port
  for _, sub in ipairs { "db", "run", "local.d", "dkim" } do lfs.mkdir(self.dir .. "/" .. sub) end
  server.write_file(self.dir .. "/tld.dat", "test\norg\ncom\nnet\n")
  server.write_file(self.dir .. "/rspamd.conf", conf(self.dir, self.port, opts.nameserver))
  local files = {}
  for k, v in pairs(LOCAL_D) do files[k] = v end
  files["rspamd.lua"] = RULES
  if opts.dkim then
    local openssl = tools.need("openssl")
    local key = ("%s/dkim/%s.%s.key"):format(self.dir, opts.dkim.domain, opts.dkim.selector)
    local out, rc = server.run(("%s genrsa -out %s 2048 && %s rsa -in %s -pubout -outform DER 2>/dev/null | base64 -w0")
      :format(openssl, server.sh_quote(key), openssl, server.sh_quote(key)))
    assert(rc == 0, "openssl: " .. out)
    self.dkim_public = out:match("([A-Za-z0-9+/=]+)%s*$")
    files["dkim_signing.conf"] = ('path = "%s/dkim/$domain.$selector.key";\nselector = "%s";\nsign_local = true;\n'
      .. "allow_hdrfrom_mismatch = true;\n"):format(self.dir, opts.dkim.selector)
  end
  if opts.nameserver then
    files["spf.conf"] = "check_local = true;\n"
    files["dmarc.conf"] = "check_local = true;\n"
  end
  for k, v in pairs(opts.local_d or {}) do files[k] = v end
  for k, v in pairs(files) do server.write_file(self.dir .. "/local.d/" .. k, v) end
  local vars = ("--var=LOCAL_CONFDIR=%s --var=DBDIR=%s/db --var=RUNDIR=%s/run --var=LOGDIR=%s"):format(self.dir,
    self.dir, self.dir, self.dir)
  -- One simple command in the background, so that $! is setsid's pid, which then is rspamd's main process and
  -- the id of its own process group (setsid execs it; it is not a group leader, as job control is off).
  local out = server.run(("setsid %s -f -u root -g root --insecure -c %s/rspamd.conf %s >%s/stdout.log 2>&1 & "
    .. "echo $!"):format(bin, self.dir, vars, self.dir))
  self.pid = tonumber(out:match("(%d+)"))
  assert(self.pid, "rspamd did not start: " .. out)
  local up = server.wait_until(function()
    local r = http_get(self.port, "/ping")
    return r and r:find("pong", 1, true)
  end, M.START_TIMEOUT, 0.1)
  self.main = tonumber(server.read_file(self.dir .. "/run/rspamd.pid") or "")   -- the same pid, as rspamd says
  if not up then
    local log = self:log()
    self:stop()
    -- The port came from bind(0) and was free then; another process's connection may have taken it since.
    local tries = (opts.tries or 0) + 1
    if log:find("Address already in use", 1, true) and tries < 3 then
      local again = {}
      for k, v in pairs(opts) do again[k] = v end
      again.tries = tries
      server.run("rm -rf " .. server.sh_quote(self.dir))
      return M.start(again)
    end
    error(("rspamd did not answer /ping within %d s; its log ends with:\n%s"):format(M.START_TIMEOUT,
      log:sub(-2000)))
  end
  return self
end

function Rspamd:log()
  return (server.read_file(self.dir .. "/rspamd.log") or "") .. (server.read_file(self.dir .. "/stdout.log") or "")
end

-- stop(): the main process and its workers (one process group, from setsid), by PID; bounded. Raises when a
-- process is left, so that a spec never leaves an rspamd behind without saying so.
function Rspamd:stop()
  if not self.pid then return end
  local function left()
    local n = #server.group_members(self.pid)
    if self.main and self.main ~= self.pid and server.alive(self.main) then n = n + 1 end
    return n
  end
  local function signal(sig)
    server.run(("kill -%s -%d"):format(sig, self.pid))   -- dash: no "--"
    if self.main and self.main ~= self.pid then server.run(("kill -%s %d"):format(sig, self.main)) end
  end
  signal("TERM")
  if not server.wait_until(function() return left() == 0 end, 5, 0.05) then signal("KILL") end
  local gone = server.wait_until(function() return left() == 0 end, 5, 0.05)
  local pid = self.pid
  self.pid = nil
  assert(gone, ("rspamd (process group %d) is still running"):format(pid))
end

function Rspamd:cleanup()
  local ok, err = pcall(self.stop, self)
  server.run("rm -rf " .. server.sh_quote(self.dir))
  if not ok then error(err, 0) end
end

return M
