-- t/helpers/server.lua - run a real luamta daemon for an integration spec.
--
--   local server = require "t.helpers.server"
--   local srv = server.start {
--     config = { server = { max_recipients = 3 } },        -- merged into the defaults below
--     rules = { { "policy", "return { rcpt = function() end }" } },  -- written to rules_dir, added to server.rules
--   }
--   ... srv.port, srv.dir, srv:log(), srv:wait_log("queued"), srv:maildir_files("jdoe", "example.test") ...
--   srv:cleanup()                                          -- stop (no process left) and remove the temp dir
--
-- The daemon runs in its own process group (setsid), so that stop() and kill9() can always take every process
-- it started (master, workers, router). Everything here is time-bounded.
local socket = require "socket"
local lfs = require "lfs"

local M = {}

-- The binary under test: t/run sets LUAMTA_BIN to the build tree's; run by hand, it is src/luamta of this tree.
M.BIN = os.getenv("LUAMTA_BIN") or ((debug.getinfo(1, "S").source:match("^@(.*)t/helpers/server%.lua$") or "./")
  .. "src/luamta")
M.NIL = setmetatable({}, { __tostring = function() return "server.NIL" end })  -- removes a default key

local running = {}   -- every server started and not yet stopped, so that stop_all() can take them

-- Small utilities -------------------------------------------------------------------------------------------

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

-- run(cmd) -> stdout, exit code (of sh -c cmd, stderr merged into stdout)
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  return out, rc
end
M.run = run

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end
M.write_file = write_file

local function now() return socket.gettime() end

-- wait_until(fn, timeout, step) -> the first true value fn returns, or nil after timeout seconds
local function wait_until(fn, timeout, step)
  local deadline = now() + (timeout or 5)
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(step or 0.02)
  until now() > deadline
  return fn()
end
M.wait_until = wait_until

-- free_port() -> a TCP port on 127.0.0.1 that nobody listened on a moment ago
function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- proc_state(pid) -> the state letter of /proc/<pid>/stat ("R", "S", "Z", ...), and the process group; nil when gone
local function proc_stat(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local rest = s:match("^%d+ %b() (.*)$") or s:match("%) (.*)$")
  if not rest then return nil end
  local state, _ppid, pgrp = rest:match("^(%S) (%d+) (%d+)")
  return state, tonumber(pgrp), tonumber(_ppid)
end

local function alive(pid)
  local state = pid and proc_stat(pid)
  return state ~= nil and state ~= "Z" and state ~= "X"
end
M.alive = alive

-- group_members(pgid) -> pids (not zombies) of process group pgid
local function group_members(pgid)
  local out = {}
  for name in lfs.dir("/proc") do
    local pid = tonumber(name)
    if pid then
      local state, pgrp = proc_stat(pid)
      if state and state ~= "Z" and state ~= "X" and pgrp == pgid then out[#out + 1] = pid end
    end
  end
  return out
end
M.group_members = group_members

local function kill(sig, target)
  run("kill -" .. sig .. " " .. tostring(target))
end

-- Configuration -----------------------------------------------------------------------------------------------

local function is_array(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

-- merge(base, over): over's keys into a copy of base; records merge, arrays and scalars replace; M.NIL removes.
local function merge(base, over)
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  for k, v in pairs(over or {}) do
    if v == M.NIL then
      out[k] = nil
    elseif type(v) == "table" and type(out[k]) == "table" and not is_array(v) and not is_array(out[k]) then
      out[k] = merge(out[k], v)
    else
      out[k] = v
    end
  end
  return out
end
M.merge = merge

local SECTION_ORDER = { "server", "tls", "dns", "log", "local_domains", "directory", "inbound", "routing",
                        "delivery" }

local function serialize(v, indent)
  indent = indent or ""
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local inner = indent .. "  "
  local parts = {}
  local n = #v
  for i = 1, n do parts[#parts + 1] = inner .. serialize(v[i], inner) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. serialize(k) .. "]")
    parts[#parts + 1] = inner .. key .. " = " .. serialize(v[k], inner)
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. ",\n" .. indent .. "}"
end
M.serialize = serialize

-- config_source(cfg) -> the text of a configuration file that assigns each section of cfg
function M.config_source(cfg)
  local out, done = { "-- written by t/helpers/server.lua" }, {}
  for _, name in ipairs(SECTION_ORDER) do
    if cfg[name] ~= nil then
      out[#out + 1] = name .. " = " .. serialize(cfg[name])
      done[name] = true
    end
  end
  for name, v in pairs(cfg) do
    if not done[name] then out[#out + 1] = name .. " = " .. serialize(v) end
  end
  return table.concat(out, "\n") .. "\n"
end

-- defaults(dir, port) -> a quickstart-like configuration: local domain example.test, two directory users
function M.defaults(dir, port)
  return {
    server = {
      hostname = "mx.example.test",
      listen = { "127.0.0.1:" .. port },
      spool = dir .. "/spool",
      workers = 1,
      rules_dir = dir .. "/rules",
      timeouts = { command = 30, data = 30 },
    },
    local_domains = { "example.test" },
    directory = {
      users = {
        { address = "postmaster@example.test", name = "Postmaster" },
        { address = "jdoe@example.test", name = "John Doe", aliases = { "john@example.test" } },
      },
    },
    delivery = { maildir = dir .. "/mailboxes/%d/%u" },
  }
end

M.BUNDLED_RULES = { "connection", "filters", "sender", "relay", "recipient" }

-- tempdir() -> a new empty directory under $TMPDIR or /tmp
function M.tempdir()
  local out, rc = run("mktemp -d \"${TMPDIR:-/tmp}/luamta-it.XXXXXX\"")
  assert(rc == 0, "mktemp failed: " .. out)
  return (out:gsub("%s+$", ""))
end

-- The server object ---------------------------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- server.prepare(opts) -> a server object with its directory and configuration written, not started.
-- opts.config: overrides merged into M.defaults; opts.rules: { { name, source }, ... } written to rules_dir and
-- named in server.extra_rules (after the bundled modules) unless opts.config.server.rules is given;
-- opts.files: { [relative path] = text } written into the temp dir (e.g. rules_dir overrides of bundled modules).
function M.prepare(opts)
  opts = opts or {}
  local self = setmetatable({}, Server)
  self.dir = M.tempdir()
  self.port = opts.port or M.free_port()
  self.rules_dir = self.dir .. "/rules"
  self.spool = self.dir .. "/spool"
  self.logfile = self.dir .. "/luamta.log"
  self.stderrfile = self.logfile
  self.cfgfile = self.dir .. "/luamta.lua"
  lfs.mkdir(self.rules_dir)
  local cfg = merge(M.defaults(self.dir, self.port), opts.config or {})
  self.default_listen = not (opts.config and opts.config.server and opts.config.server.listen)
  if opts.rules and #opts.rules > 0 and not (opts.config and opts.config.server and opts.config.server.rules) then
    local names = {}
    for _, r in ipairs(opts.rules) do names[#names + 1] = r[1] end
    cfg.server.extra_rules = names      -- after the bundled modules, which stay the default server.rules
  end
  for _, r in ipairs(opts.rules or {}) do self:write_rule(r[1], r[2]) end
  for rel, text in pairs(opts.files or {}) do write_file(self.dir .. "/" .. rel, text) end
  self.config = cfg
  -- With log.file, the daemon's own lines go there (stderr keeps only what comes before the log is open).
  if cfg.log and cfg.log.file then self.logfile = cfg.log.file end
  self.workers = cfg.server.workers or 1
  self.host = "127.0.0.1"
  local first = type(cfg.server.listen) == "table" and cfg.server.listen[1]
  if type(first) == "table" then first = first[1] end
  local host, port = tostring(first):match("^([%d%.]+):(%d+)$")
  if host then
    self.host = host == "0.0.0.0" and "127.0.0.1" or host
    self.port = tonumber(port)
  end
  write_file(self.cfgfile, M.config_source(cfg))
  return self
end

-- server.start(opts) -> a running server (see prepare). Raises, after cleaning up, when it does not come up.
function M.start(opts)
  opts = opts or {}
  local self = M.prepare(opts)
  local ok, err
  for _ = 1, 3 do
    ok, err = pcall(self.launch, self, opts.start_timeout)
    if ok then break end
    local log = self:log()
    if log:find("failed to execute", 1, true) then
      -- A binary being rebuilt under us (make in another shell) cannot be executed for a moment: try again.
      self:stop(2)
      socket.sleep(1)
    elseif log:find("in use", 1, true) and self.default_listen and not opts.port then
      -- Another test run took the free port between our probe and the bind: take another one.
      self:stop(2)
      self.port = M.free_port()
      self.config.server.listen = { "127.0.0.1:" .. self.port }
      write_file(self.cfgfile, M.config_source(self.config))
    else
      break
    end
  end
  if not ok then
    local log = self:log()
    self:cleanup()
    error(tostring(err) .. "\n--- server log ---\n" .. log, 2)
  end
  return self
end

-- launch(timeout): start the daemon and wait until every worker and the router said "ready" and the port accepts.
function Server:launch(timeout)
  timeout = timeout or 10
  local mark = self:log_mark()
  local cmd = string.format("exec setsid %s run -c %s >>%s 2>&1 </dev/null & echo $!", sh_quote(M.BIN),
    sh_quote(self.cfgfile), sh_quote(self.stderrfile))
  local p = assert(io.popen("sh -c " .. sh_quote(cmd)))
  local out = p:read("a")
  p:close()
  self.pid = assert(tonumber(out:match("(%d+)")), "no pid from the shell: " .. out)
  self.pgid = self.pid
  running[self] = true
  local want = self.workers
  local up = wait_until(function()
    if not alive(self.pid) then return "dead" end
    local text = self:log():sub(mark + 1)
    local n = 0
    for _ in text:gmatch("worker %d+: ready: policy generation") do n = n + 1 end
    for _ in text:gmatch("/smtpd%[%d+%]: ready: policy generation") do n = n + 1 end   -- log.file
    if n >= want and (text:find("router: ready", 1, true) or text:find("/qmgr%[%d+%]: ready")) then return "up" end
  end, timeout, 0.02)
  if up ~= "up" then
    error(up == "dead" and "luamta exited at start-up" or "luamta did not become ready in time")
  end
  local accepted = wait_until(function()
    local c = socket.tcp()
    c:settimeout(0.5)
    local ok = c:connect(self.host, self.port)
    c:close()
    return ok
  end, timeout, 0.05)
  if not accepted then error("the port " .. self.port .. " does not accept connections") end
  local master = self:master_pid()
  if master and master ~= self.pid and alive(master) then
    local _, pgrp = proc_stat(master)
    self.pid, self.pgid = master, pgrp or self.pgid
  end
  return self
end

-- master_pid() -> the pid the daemon wrote to <spool>/luamta.pid, or nil
function Server:master_pid()
  local s = read_file(self.spool .. "/luamta.pid")
  return s and tonumber(s:match("%d+"))
end

-- processes() -> the pids of the daemon's processes (master included), not zombies
function Server:processes()
  if not self.pgid then return {} end
  return group_members(self.pgid)
end

-- process_titled(title) -> the pid of the daemon's process with that title ("luamta: router"), or nil
function Server:process_titled(title)
  for _, pid in ipairs(self:processes()) do
    if (read_file("/proc/" .. pid .. "/cmdline") or ""):find(title, 1, true) then return pid end
  end
end

function Server:is_running()
  return #self:processes() > 0
end

-- wait_gone(timeout) -> true when no process of the daemon is left
function Server:wait_gone(timeout)
  return wait_until(function() return #self:processes() == 0 end, timeout or 10, 0.02) and true or false
end

-- wait_reaped(): when the pid file still names the dead master, wait (bounded) until init has reaped it: the
-- next start checks that pid with kill(pid, 0), which a zombie would pass.
function Server:wait_reaped()
  if self:master_pid() == self.pid then
    wait_until(function() return proc_stat(self.pid) == nil end, 5, 0.02)
  end
end

-- stop(timeout): SIGTERM to the master, wait (bounded) for every process to exit, then SIGKILL the group.
-- Returns true when the daemon stopped on its own.
function Server:stop(timeout)
  if not self.pgid then return true end
  local graceful = true
  if alive(self.pid) then kill("TERM", self.pid) end
  if not self:wait_gone(timeout or 10) then
    graceful = false
    kill("KILL", "-" .. self.pgid)
    for _, pid in ipairs(self:processes()) do kill("KILL", pid) end
    if not self:wait_gone(5) then
      error("luamta processes left after SIGKILL: " .. table.concat(self:processes(), " "))
    end
  end
  self:wait_reaped()
  running[self] = nil
  self.pgid, self.pid = nil, nil
  return graceful
end

-- kill9(): SIGKILL the master and all its children at once (a crash), and wait until they are gone.
function Server:kill9()
  if not self.pgid then return end
  kill("KILL", "-" .. self.pgid)
  for _, pid in ipairs(self:processes()) do kill("KILL", pid) end
  self:wait_gone(5)
  self:wait_reaped()
  running[self] = nil
  self.pgid, self.pid = nil, nil
end

-- restart(): stop when running, then start again on the same directory, configuration and port.
function Server:restart(timeout)
  if self.pgid then self:stop() end
  self:launch(timeout)
  return self
end

-- reload(): SIGHUP to the master; waits until every worker has either reloaded or logged the failure.
-- Returns the log text written since the signal.
function Server:reload(timeout)
  local mark = self:log_mark()
  kill("HUP", self.pid)
  local want = self.workers
  wait_until(function()
    local text = self:log():sub(mark + 1)
    local n = 0
    for _ in text:gmatch("worker %d+: reload") do n = n + 1 end
    for _ in text:gmatch("/smtpd%[%d+%]: reload") do n = n + 1 end   -- log.file
    return n >= want
  end, timeout or 5, 0.02)
  return self:log():sub(mark + 1)
end

-- cleanup(): stop (no process left) and remove the temp dir, unless LUAMTA_KEEP_TMP is set.
function Server:cleanup()
  self:stop(5)
  if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then
    run("rm -rf " .. sh_quote(self.dir))
  end
end

-- Logs -------------------------------------------------------------------------------------------------------

function Server:log()
  return read_file(self.logfile) or ""
end

-- log_mark() -> the current length of the log, for wait_log(..., from)
function Server:log_mark()
  return #self:log()
end

-- wait_log(pattern, timeout, from, plain) -> the first match (or the whole matching line with plain) of a Lua
-- pattern in the log after offset from, or nil after timeout seconds.
function Server:wait_log(pattern, timeout, from, plain)
  return wait_until(function()
    local text = self:log():sub((from or 0) + 1)
    if plain then
      local i = text:find(pattern, 1, true)
      if i then
        local s = text:sub(1, i):match(".*\n()") or 1
        return text:match("[^\n]*", s)
      end
      return nil
    end
    return text:match(pattern)
  end, timeout or 5, 0.02)
end

-- log_lines(pattern, from) -> every log line (after offset from) that contains plain text pattern
function Server:log_lines(text, from)
  local out = {}
  for line in self:log():sub((from or 0) + 1):gmatch("[^\n]+") do
    if line:find(text, 1, true) then out[#out + 1] = line end
  end
  return out
end

-- Files --------------------------------------------------------------------------------------------------------

local function list_dir(dir)
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

function Server:maildir(user, domain)
  return self.dir .. "/mailboxes/" .. (domain or "example.test") .. "/" .. user
end

-- maildir_files(user, domain) -> { { name =, path =, content = }, ... } in <maildir>/new, sorted by name
function Server:maildir_files(user, domain)
  local dir = self:maildir(user, domain) .. "/new"
  local out = {}
  for _, name in ipairs(list_dir(dir)) do
    out[#out + 1] = { name = name, path = dir .. "/" .. name, content = read_file(dir .. "/" .. name) }
  end
  return out
end

-- wait_maildir(user, domain, n, timeout) -> the files once there are at least n (default 1), or what is there
function Server:wait_maildir(user, domain, n, timeout)
  n = n or 1
  wait_until(function() return #self:maildir_files(user, domain) >= n end, timeout or 5, 0.02)
  return self:maildir_files(user, domain)
end

-- spool_file(dir, id) -> the path of message id's file in <spool>/<dir>: queue/ and state/ are hashed by the
-- ID's last digit (docs/admin.md, "The spool")
function Server:spool_file(dir, id)
  if dir == "queue" or dir == "state" then return self.spool .. "/" .. dir .. "/" .. id:sub(-1) .. "/" .. id end
  return self.spool .. "/" .. dir .. "/" .. id
end

-- queue_files() -> the names of the queued messages: <spool>/incoming (not yet taken by the router) and
-- <spool>/queue's sub-directories, sorted
function Server:queue_files()
  local names = list_dir(self.spool .. "/incoming")
  for _, sub in ipairs(list_dir(self.spool .. "/queue")) do
    for _, n in ipairs(list_dir(self.spool .. "/queue/" .. sub)) do names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

-- write_rule(name, source): <rules_dir>/<name>.lua
function Server:write_rule(name, source)
  write_file(self.rules_dir .. "/" .. name .. ".lua", source)
end

-- luamta(args) -> output, exit code of `luamta <args>` (args is a string, already quoted by the caller)
function M.luamta(args)
  return run(sh_quote(M.BIN) .. " " .. args)
end

function Server:luamta(subcommand)
  return M.luamta(subcommand .. " -c " .. sh_quote(self.cfgfile))
end

-- stop_all(): stop every server still running (a safety net for teardown)
function M.stop_all()
  for srv in pairs(running) do pcall(srv.cleanup, srv) end
end

-- The last safety net: when the test runner's Lua state closes (busted exits with os.exit(code, true)), any
-- daemon a spec forgot is stopped.
M._sentinel = setmetatable({}, { __gc = function() M.stop_all() end })

return M
