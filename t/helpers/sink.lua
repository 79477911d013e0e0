-- t/helpers/sink.lua - next hops for the router's integration specs: Postfix's smtp-sink, which takes mail and
-- dumps each transaction to a file, and a "silent" listener that takes connections and never says a word.
--
--   local sink = require "t.helpers.sink"
--   local s = sink.start { ip = "127.0.0.11", port = 2525,     -- default ip 127.0.0.1, default port a free one
--                          reject = { "RCPT" },                -- -f: 5xx for these commands (implies no PIPELINING)
--                          tempfail = { "RCPT" },              -- -r: 4xx for these commands (implies no PIPELINING)
--                          hard_reply = "550 5.1.1 No such user here",  -- -B: the text of those 5xx replies
--                          soft_reply = "450 4.2.0 Try later",         -- -b: the text of those 4xx replies
--                          drop = { "." },                     -- -q: hang up without a reply after these commands
--                          hostname = "sink1.test",            -- -h: the name in the greeting
--                          args = { "-e" } }                   -- any other smtp-sink options
--   s.ip, s.port, s.address ("127.0.0.11:2525"), s.literal ("[127.0.0.11]:2525"), s.dumpdir
--   s:messages() -> every transaction dumped so far, oldest first:
--     { path =, name =, raw = the whole dump file, helo = "mx.example.test", mail = "<a@b.test> SIZE=42",
--       sender = "a@b.test", rcpts = { "x@c.test", ... } (the X-Rcpt-Args, in order, without brackets),
--       message = the message as received (after smtp-sink's own headers, LF line ends) }
--   s:find(rcpt) -> the messages whose X-Rcpt-Args include rcpt
--   s:wait_messages(n, timeout) -> the messages once there are at least n complete ones (default 1), or what is
--                                  there after timeout seconds (default 5)
--   s:restart(opts) -> the same ip and port, new options (same keys as start), a new empty dump directory
--   s:stop()                                          -- no process left; the dump directory is removed
--
--   local q = sink.silent { ip = "127.0.0.12", port = 2525 } -- q.ip, q.port, q.address, q.literal; q:stop()
--     a listening socket that is never accept()ed: the kernel completes every handshake, nobody ever speaks
--   sink.free_port(ips) -> a TCP port free on every address of ips (default { "127.0.0.1" })
--   sink.stop_all()                                   -- stops every sink still running (teardown safety net)
--
-- smtp-sink runs in its own process group under timeout(1) (at most opts.lifetime seconds, default 300) and is
-- stopped by process-group id. As root it runs as nobody (-u nobody), so its dump directory belongs to nobody.
local socket = require "socket"
local lfs = require "lfs"
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"

local M = {}

M.SMTP_SINK = os.getenv("SMTP_SINK") or "/usr/sbin/smtp-sink"

local sh_quote, run, read_file = server.sh_quote, server.run, server.read_file
local running = {}

local IS_ROOT = (run("id -u")):match("^0%s*$") ~= nil

-- free_port(ips) -> a port nobody listens on at any address of ips a moment ago
function M.free_port(ips)
  ips = ips or { "127.0.0.1" }
  for _ = 1, 50 do
    local s = assert(socket.bind(ips[1], 0))
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    local ok = true
    for i = 2, #ips do
      local t = socket.tcp()
      if not t:bind(ips[i], port) then ok = false end
      t:close()
    end
    if ok then return port end
  end
  error("sink helper: no port free on " .. table.concat(ips, ", "))
end

-- can_connect(ip, port) -> true when a TCP connection to ip:port succeeds now
local function can_connect(ip, port)
  local c = socket.tcp()
  c:settimeout(0.3)
  local ok = c:connect(ip, port)
  c:close()
  return ok ~= nil
end

local function list_dir(dir)
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then out[#out + 1] = name end
  end
  return out
end

-- parse(raw) -> the fields of one smtp-sink dump (see the top of the file)
local function parse(raw)
  local m = { raw = raw, rcpts = {} }
  local pos = 1
  while pos <= #raw do
    local line, nxt = raw:match("^([^\n]*)\n()", pos)
    if not line then break end
    if line:find("^Received: from ") then
      -- smtp-sink's Received header has three lines; the message starts after them
      local after = raw:match("^[^\n]*\n[^\n]*\n()", nxt)
      m.message = after and raw:sub(after) or ""
      break
    end
    local name, value = line:match("^(X%-[%w%-]+): (.*)$")
    if name == "X-Helo-Args" then m.helo = value
    elseif name == "X-Mail-Args" then
      m.mail = value
      m.sender = value:match("^<([^>]*)>")
    elseif name == "X-Rcpt-Args" then m.rcpts[#m.rcpts + 1] = value:match("^<([^>]*)>") or value
    elseif name == "X-Client-Addr" then m.client = value end
    pos = nxt
  end
  return m
end
M.parse = parse

local function list_of(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

-- Sinks ----------------------------------------------------------------------------------------------------------

local Sink = {}
Sink.__index = Sink

-- command(opts) -> the smtp-sink command line for the options of start()
function Sink:command(opts)
  if not os.getenv("SMTP_SINK") then tools.need("smtp-sink", M.SMTP_SINK) end
  local a = { sh_quote(M.SMTP_SINK) }
  local function opt(flag, value)
    a[#a + 1] = flag
    if value ~= nil then a[#a + 1] = sh_quote(value) end
  end
  if IS_ROOT then opt("-u", "nobody") end
  opt("-d", self.dumpdir .. "/%Y%m%d%H%M%S.")
  opt("-h", opts.hostname or ("sink-" .. self.ip .. ".test"))
  opt("-t", tostring(opts.timeout or 30))
  if #list_of(opts.reject) > 0 then opt("-f", table.concat(list_of(opts.reject), ",")) end
  if #list_of(opts.tempfail) > 0 then opt("-r", table.concat(list_of(opts.tempfail), ",")) end
  if #list_of(opts.drop) > 0 then opt("-q", table.concat(list_of(opts.drop), ",")) end
  if opts.hard_reply then opt("-B", opts.hard_reply) end
  if opts.soft_reply then opt("-b", opts.soft_reply) end
  for _, x in ipairs(opts.args or {}) do a[#a + 1] = sh_quote(x) end
  a[#a + 1] = sh_quote(self.ip .. ":" .. self.port)
  a[#a + 1] = "64"
  return table.concat(a, " ")
end

-- launch(opts): a new dump directory, then smtp-sink; waits (bounded) until the port accepts connections.
function Sink:launch(opts)
  self.gen = (self.gen or 0) + 1
  self.dumpdir = self.dir .. "/dump" .. self.gen
  lfs.mkdir(self.dumpdir)
  if IS_ROOT then run("chown nobody " .. sh_quote(self.dumpdir)) end
  local last
  for _ = 1, 5 do
    local mark = #(read_file(self.logfile) or "")
    local line = string.format("exec setsid timeout -k 2 %d %s >>%s 2>&1 </dev/null & echo $!",
      opts.lifetime or 300, self:command(opts), sh_quote(self.logfile))
    local out = run("sh -c " .. sh_quote(line))
    self.pgid = assert(tonumber(out:match("(%d+)")), "sink helper: no pid from the shell: " .. out)
    running[self] = true
    local up = server.wait_until(function()
      -- the pid, not the group: until setsid() runs, the new process is still in the shell's group
      if not server.alive(self.pgid) then return "dead" end
      if can_connect(self.ip, self.port) then return "up" end
    end, 5, 0.02)
    if up == "up" then return self end
    last = (read_file(self.logfile) or ""):sub(mark + 1)
    self:kill()
    if not last:find("in use", 1, true) then break end   -- the port lingers after a stop: try again
    socket.sleep(0.2)
  end
  error("sink helper: smtp-sink did not start on " .. self.address .. "\n" .. tostring(last), 3)
end

-- kill(): the process group, TERM then KILL; waits (bounded) until nothing is left.
function Sink:kill()
  if not self.pgid then return end
  local pgid = self.pgid
  run("kill -TERM -" .. pgid)
  if not server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02) then
    run("kill -KILL -" .. pgid)
    server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02)
  end
  self.pgid = nil
end

-- start(opts) -> a running smtp-sink (see the top of the file)
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({}, Sink)
  self.ip = opts.ip or "127.0.0.1"
  self.port = opts.port or M.free_port { self.ip }
  self.address = self.ip .. ":" .. self.port
  self.literal = "[" .. self.ip .. "]:" .. self.port
  self.dir = server.tempdir()
  if IS_ROOT then run("chmod 755 " .. sh_quote(self.dir)) end   -- nobody must reach the dump directory
  self.logfile = self.dir .. "/smtp-sink.log"
  local ok, err = pcall(self.launch, self, opts)
  if not ok then
    self:stop()
    error(err, 2)
  end
  return self
end

-- restart(opts): stop, then start again on the same address with opts and a new empty dump directory
function Sink:restart(opts)
  self:kill()
  return self:launch(opts or {})
end

function Sink:is_running()
  return self.pgid ~= nil and #server.group_members(self.pgid) > 0
end

function Sink:log()
  return read_file(self.logfile) or ""
end

-- messages() -> every transaction in the current dump directory, oldest first (see the top of the file)
function Sink:messages()
  local files = {}
  for _, name in ipairs(list_dir(self.dumpdir or "")) do
    local path = self.dumpdir .. "/" .. name
    files[#files + 1] = { name = name, path = path, mtime = lfs.attributes(path, "modification") or 0 }
  end
  table.sort(files, function(a, b)
    if a.mtime ~= b.mtime then return a.mtime < b.mtime end
    return a.name < b.name
  end)
  local out = {}
  for _, f in ipairs(files) do
    local raw = read_file(f.path) or ""
    if raw ~= "" then   -- smtp-sink opens the file at MAIL, and removes it when the transaction is abandoned
      local m = parse(raw)
      m.name, m.path = f.name, f.path
      out[#out + 1] = m
    end
  end
  return out
end

-- find(rcpt) -> the dumped transactions that carry recipient rcpt (exact text of X-Rcpt-Args, without brackets)
function Sink:find(rcpt)
  local out = {}
  for _, m in ipairs(self:messages()) do
    for _, r in ipairs(m.rcpts) do
      if r == rcpt then
        out[#out + 1] = m
        break
      end
    end
  end
  return out
end

-- wait_messages(n, timeout) -> the messages once at least n are there and complete (their dumps stopped growing:
-- smtp-sink keeps a file open while the transaction is in progress), or what there is after timeout seconds
function Sink:wait_messages(n, timeout)
  n = n or 1
  local last_sizes
  server.wait_until(function()
    local msgs = self:messages()
    if #msgs < n then
      last_sizes = nil
      return false
    end
    local sizes = {}
    for i, m in ipairs(msgs) do sizes[i] = #m.raw end
    local same = last_sizes ~= nil and #last_sizes == #sizes
    if same then
      for i = 1, #sizes do
        if sizes[i] ~= last_sizes[i] or sizes[i] == 0 then same = false end
      end
    end
    last_sizes = sizes
    return same
  end, timeout or 5, 0.05)
  return self:messages()
end

-- stop(): no process left, the temp dir removed (unless LUAMTA_KEEP_TMP is set)
function Sink:stop()
  self:kill()
  running[self] = nil
  if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then
    run("rm -rf " .. sh_quote(self.dir))
    self.dir = nil
  end
end

-- The silent listener ------------------------------------------------------------------------------------------------

local Silent = {}
Silent.__index = Silent

-- silent(opts) -> a listener on opts.ip (default 127.0.0.1) and opts.port (default a free one) that never accepts:
-- clients connect (the kernel completes the handshake) and then wait for a greeting that never comes
function M.silent(opts)
  opts = opts or {}
  local self = setmetatable({}, Silent)
  self.ip = opts.ip or "127.0.0.1"
  self.port = opts.port or M.free_port { self.ip }
  self.sock = assert(socket.bind(self.ip, self.port, 64))
  self.address = self.ip .. ":" .. self.port
  self.literal = "[" .. self.ip .. "]:" .. self.port
  running[self] = true
  return self
end

function Silent:stop()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
  running[self] = nil
end

function M.stop_all()
  for p in pairs(running) do pcall(p.stop, p) end
end

-- Router spec utilities -------------------------------------------------------------------------------------------

-- router_config(over) -> server overrides for a router spec: the test client (127.0.0.1) may relay, retries and
-- SMTP timeouts are short; over is merged on top (server.merge rules: arrays replace, records merge)
function M.router_config(over)
  return server.merge({
    inbound = { relay = { exclude = { "[127.0.0.1]" } } },
    routing = { retry = { 1, 2 }, timeouts = { connect = 2, reply = 2 } },
  }, over or {})
end

-- send(srv, from, rcpts, subject, body) -> the queue ID of a message submitted to srv from 127.0.0.1 (raises
-- when it is not accepted)
function M.send(srv, from, rcpts, subject, body)
  local smtp = require "t.helpers.smtp"
  local c = assert(smtp.connect("127.0.0.1", srv.port, { timeout = 5 }))
  local ok, code, lines = pcall(function()
    c:greet("client.test")
    return smtp.send_mail(c, from, rcpts, smtp.message({ "From: <" .. (from ~= "" and from or "nobody@client.test")
      .. ">", "Subject: " .. subject, "Message-ID: <" .. subject:gsub("%W", "-") .. "@client.test>" },
      body or "hello from the router spec\r\n"))
  end)
  c:cmd("QUIT", 1)
  c:close()
  assert(ok, code)
  assert(code == 250, "the message was not accepted: " .. tostring(lines and (lines.text or lines[1]) or lines))
  return assert(lines[1]:match("queued as (%x+)"), lines[1])
end

-- log_line(srv, texts, from) -> the first log line after offset from that contains every plain text of texts
function M.log_line(srv, texts, from)
  if type(texts) == "string" then texts = { texts } end
  for line in srv:log():sub((from or 0) + 1):gmatch("[^\n]+") do
    local all = true
    for _, t in ipairs(texts) do
      if not line:find(t, 1, true) then
        all = false
        break
      end
    end
    if all then return line end
  end
  return nil
end

-- wait_line(srv, texts, timeout, from) -> log_line once it exists, or nil after timeout seconds (default 5)
function M.wait_line(srv, texts, timeout, from)
  return server.wait_until(function() return M.log_line(srv, texts, from) end, timeout or 5, 0.05)
end

-- count_lines(srv, texts, from) -> how many log lines after from contain every plain text of texts
function M.count_lines(srv, texts, from)
  if type(texts) == "string" then texts = { texts } end
  local n = 0
  for line in srv:log():sub((from or 0) + 1):gmatch("[^\n]+") do
    local all = true
    for _, t in ipairs(texts) do
      if not line:find(t, 1, true) then
        all = false
        break
      end
    end
    if all then n = n + 1 end
  end
  return n
end

-- The last safety net: when the test runner's Lua state closes, any sink a spec forgot is stopped.
M._sentinel = setmetatable({}, { __gc = function() M.stop_all() end })

return M
