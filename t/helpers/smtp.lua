-- t/helpers/smtp.lua - a small, time-bounded SMTP client for integration specs, over luasocket.
--
--   local smtp = require "t.helpers.smtp"
--   local c = assert(smtp.connect("127.0.0.1", srv.port, { bind = "127.0.0.2", timeout = 5 }))
--   local code, lines = c:read_reply()          -- 220, { "220 mx.example.test ESMTP luamta" }
--   code, lines = c:cmd("EHLO client.test")      -- sends the line with CRLF, reads the (multi-line) reply
--   c:send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")  -- raw octets, nothing added
--   c:close()
--
-- A reply is returned as code (a number) and lines (every line as sent, without CRLF; lines.text is the lines
-- joined with "\n"). On a timeout or a closed connection read_reply returns nil, "timeout" | "closed".
local socket = require "socket"

local M = {}

local Client = {}
Client.__index = Client

-- connect(host, port, opts) -> client, or nil, error. opts.bind: local address; opts.timeout: seconds per
-- operation (default 5).
function M.connect(host, port, opts)
  opts = opts or {}
  local sock = socket.tcp()
  local timeout = opts.timeout or 5
  sock:settimeout(timeout)
  if opts.bind then
    local ok, err = sock:bind(opts.bind, 0)
    if not ok then
      sock:close()
      return nil, "bind " .. opts.bind .. ": " .. tostring(err)
    end
  end
  local ok, err = sock:connect(host, port)
  if not ok then
    sock:close()
    return nil, "connect: " .. tostring(err)
  end
  return setmetatable({ sock = sock, timeout = timeout, transcript = {} }, Client)
end

-- settimeout(seconds): the default bound for the following reads and writes
function Client:settimeout(seconds)
  self.timeout = seconds
end

-- read_line(timeout) -> one line without its CRLF, or nil, "timeout" | "closed"
function Client:read_line(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  local partial = ""
  while true do
    local left = deadline - socket.gettime()
    if left <= 0 then
      self.pending = partial
      return nil, "timeout"
    end
    self.sock:settimeout(left)
    local line, err, part = self.sock:receive("*l", self.pending)
    self.pending = nil
    if line then
      self.transcript[#self.transcript + 1] = "S: " .. line
      return line
    end
    partial = part or ""
    if err == "closed" then
      if partial ~= "" then
        self.transcript[#self.transcript + 1] = "S: " .. partial
        self.pending = nil
        return partial
      end
      return nil, "closed"
    end
    if err ~= "timeout" then return nil, err end
    self.pending = partial
  end
end

-- read_reply(timeout) -> code, lines | nil, "timeout" | "closed". Multi-line replies ("250-...") are read to
-- their last line ("250 ..."). The timeout bounds the whole reply.
function Client:read_reply(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  local lines = {}
  while true do
    local line, err = self:read_line(math.max(0.001, deadline - socket.gettime()))
    if not line then
      if #lines > 0 then
        lines.text = table.concat(lines, "\n")
        return nil, err, lines
      end
      return nil, err
    end
    lines[#lines + 1] = line
    local code, sep = line:match("^(%d%d%d)([ %-]?)")
    if not code or sep ~= "-" then
      lines.text = table.concat(lines, "\n")
      return tonumber(code), lines
    end
  end
end

-- send(raw) -> true | nil, error. Sends the octets as they are.
function Client:send(raw)
  self.transcript[#self.transcript + 1] = "C: " .. raw
  self.sock:settimeout(self.timeout)
  local i = 1
  while i <= #raw do
    local last, err, partial = self.sock:send(raw, i)
    if not last then
      if err ~= "timeout" or (partial or i - 1) < i then return nil, err end
      last = partial
    end
    i = last + 1
  end
  return true
end

-- cmd(line, timeout) -> code, lines: send line .. CRLF and read the reply.
function Client:cmd(line, timeout)
  local ok, err = self:send(line .. "\r\n")
  if not ok then return nil, err end
  return self:read_reply(timeout)
end

-- expect_closed(timeout) -> true when the server closes the connection within timeout seconds (anything it
-- still sends is returned as a second value).
function Client:expect_closed(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  local extra = {}
  while socket.gettime() < deadline do
    local line, err = self:read_line(math.max(0.001, deadline - socket.gettime()))
    if not line then
      return err == "closed" or err == "connection reset by peer", extra
    end
    extra[#extra + 1] = line
  end
  return false, extra
end

function Client:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
end

-- greet(name) -> the EHLO reply: reads the greeting and says EHLO; raises when either is not 2xx.
function Client:greet(name)
  local code, lines = self:read_reply()
  assert(code == 220, "greeting: " .. tostring(lines and lines.text or lines))
  code, lines = self:cmd("EHLO " .. (name or "client.test"))
  assert(code == 250, "EHLO: " .. tostring(lines and lines.text or lines))
  return code, lines
end

-- session(host, port, opts) -> a connected client that has read the greeting and said EHLO.
function M.session(host, port, opts)
  local c = assert(M.connect(host, port, opts))
  c:greet(opts and opts.helo)
  return c
end

-- message(headers, body) -> a message text with CRLF line ends (headers: array of "Name: value")
function M.message(headers, body)
  local out = {}
  for _, h in ipairs(headers or {}) do out[#out + 1] = h end
  out[#out + 1] = ""
  out[#out + 1] = (body or ""):gsub("\r?\n", "\r\n")
  return table.concat(out, "\r\n")
end

-- send_mail(client, from, rcpts, text) -> code, lines of the reply to the final dot (or to the first failing
-- command). text has CRLF line ends and no final dot; leading dots are stuffed here.
function M.send_mail(c, from, rcpts, text)
  local code, lines = c:cmd("MAIL FROM:<" .. from .. ">")
  if code ~= 250 then return code, lines end
  if type(rcpts) == "string" then rcpts = { rcpts } end
  for _, r in ipairs(rcpts) do
    code, lines = c:cmd("RCPT TO:<" .. r .. ">")
    if code ~= 250 then return code, lines end
  end
  code, lines = c:cmd("DATA")
  if code ~= 354 then return code, lines end
  text = text:gsub("^%.", ".."):gsub("\n%.", "\n..")
  if text:sub(-2) ~= "\r\n" then text = text .. "\r\n" end
  c:send(text .. ".\r\n")
  return c:read_reply()
end

return M
