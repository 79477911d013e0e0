-- rules/rspamd.lua: scan each message with rspamd (docs/callouts.md, "rspamd") through its HTTP protocol (POST
-- /checkv2 with the envelope in request headers) at the message stage, and turn its verdict into the reply: reject
-- gives 554 5.7.1 with rspamd's message, soft reject and greylist 451 4.7.1, rewrite subject a new Subject, add
-- header the spam header; the header changes of its milter block (remove_headers, add_headers, among them
-- Authentication-Results) and its DKIM-Signature are applied to a message that is accepted. A message larger than
-- rspamd.max_size is not scanned, so that a scan holds at most about twice max_size in memory per session. A
-- failed call (rspamd down, timeout, a reply that is not rspamd's) gives rspamd.on_error (mta.on_error).
local mta = require "luamta"

local cfg = mta.config.rspamd
local M = {}

-- The url names the server; /checkv2 is rspamd's endpoint when the url gives no path of its own.
local URL = cfg.url
if not URL:match("^%a+://[^/]+/.") then URL = URL:gsub("/$", "") .. "/checkv2" end
local SERVICE = "rspamd " .. URL                -- in the callout log line of mta.on_error
local LOG_SYMBOLS_MAX = 3000                    -- octets of symbols in the log line (log lines are 4 KiB)
local REPLY_TEXT_MAX = 400                      -- octets of rspamd's message in an SMTP reply

-- JSON, as rspamd writes it. A reply is at most http.max_response octets; nesting is bounded too.
local json_decode
do
  local MAX_DEPTH = 32
  local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
  local value

  local function skip(str, i)
    return str:find("[^ \t\r\n]", i) or #str + 1
  end

  local function fail(what, i)
    error(("%s at octet %d"):format(what, i), 0)
  end

  local function str_at(str, i)                 -- str:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
      local k = str:find('["\\]', j)
      if not k then fail("unterminated string", i) end
      out[#out + 1] = str:sub(j, k - 1)
      if str:byte(k) == 34 then return table.concat(out), k + 1 end
      local c = str:sub(k + 1, k + 1)
      if c == "u" then
        local hex = str:match("^%x%x%x%x", k + 2)
        if not hex then fail("bad \\u escape", k) end
        local cp, nexti = tonumber(hex, 16), k + 6
        local lo = cp >= 0xD800 and cp <= 0xDBFF and str:match("^\\u(%x%x%x%x)", nexti)
        if lo and tonumber(lo, 16) >= 0xDC00 and tonumber(lo, 16) <= 0xDFFF then
          cp, nexti = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(lo, 16) - 0xDC00), nexti + 6
        end
        out[#out + 1] = utf8.char(cp)
        j = nexti
      else
        out[#out + 1] = ESCAPES[c] or fail("bad escape", k)
        j = k + 2
      end
    end
  end

  function value(str, i, depth)
    if depth > MAX_DEPTH then fail("nested too deep", i) end
    i = skip(str, i)
    local c = str:sub(i, i)
    if c == "{" then
      local obj = {}
      i = skip(str, i + 1)
      if str:sub(i, i) == "}" then return obj, i + 1 end
      while true do
        if str:sub(i, i) ~= '"' then fail("expected a key", i) end
        local key
        key, i = str_at(str, i)
        i = skip(str, i)
        if str:sub(i, i) ~= ":" then fail("expected ':'", i) end
        obj[key], i = value(str, i + 1, depth + 1)
        i = skip(str, i)
        c = str:sub(i, i)
        if c == "}" then return obj, i + 1 end
        if c ~= "," then fail("expected ',' or '}'", i) end
        i = skip(str, i + 1)
      end
    elseif c == "[" then
      local arr, n = {}, 0
      i = skip(str, i + 1)
      if str:sub(i, i) == "]" then return arr, i + 1 end
      while true do
        n = n + 1
        arr[n], i = value(str, i, depth + 1)
        i = skip(str, i)
        c = str:sub(i, i)
        if c == "]" then return arr, i + 1 end
        if c ~= "," then fail("expected ',' or ']'", i) end
        i = i + 1
      end
    elseif c == '"' then
      return str_at(str, i)
    elseif str:find("^true", i) then
      return true, i + 4
    elseif str:find("^false", i) then
      return false, i + 5
    elseif str:find("^null", i) then
      return nil, i + 4
    end
    local num = str:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or not tonumber(num) then fail("unexpected input", i) end
    return tonumber(num), i + #num
  end

  -- json_decode(text) -> the value, or nil, why
  function json_decode(text)
    local ok, v, i = pcall(value, text, 1, 0)
    if not ok then return nil, v end
    if skip(text, i) <= #text then return nil, "trailing data after the reply" end
    return v
  end
end

-- reply_text(message, default) - rspamd's message as SMTP reply text: one line of printable ASCII, bounded.
local function reply_text(message, default)
  if type(message) ~= "string" or message == "" then return default end
  message = message:gsub("[^\32-\126]", " "):sub(1, REPLY_TEXT_MAX)
  return message
end

-- field_value(v) - a header value from rspamd as one line: a folded value is unfolded (the fold's white space
-- stays, so relaxed DKIM canonicalization, which rspamd signs with, sees the same header).
local function field_value(v)
  return (v:gsub("\r?\n([ \t])", "%1"):gsub("[\r\n]", " "))
end

-- add(s, msg, name, value) - add a header that rspamd gave; one it cannot be (a bad name, over 998 octets) is
-- logged and left out, the message goes on.
local function add(s, msg, name, value)
  if type(name) ~= "string" or type(value) ~= "string" then return end
  local ok, err = pcall(msg.add_header, msg, name, field_value(value))
  if not ok then s:log(("rspamd header %s left out: %s"):format(name, tostring(err))) end
end

-- request_headers(s, msg) - the envelope for rspamd's protocol (https://rspamd.com/doc/architecture/protocol.html).
-- The recipients go in one Rcpt field, separated by commas, which rspamd splits: mta.http.request sends one
-- field per name.
local function request_headers(s, msg)
  local rcpts = {}
  for i, r in ipairs(s.rcpts) do rcpts[i] = r.address end
  local sender = s.sender and s.sender.address or ""
  local h = {
    ["IP"] = s.ip,
    ["Helo"] = s.helo,
    ["From"] = sender ~= "" and sender or "<>",
    ["Rcpt"] = #rcpts > 0 and table.concat(rcpts, ",") or nil,
    ["Queue-Id"] = msg.queue_id,
    ["User"] = s.user,
    ["MTA-Name"] = mta.config.server.hostname,    -- the authserv-id of rspamd's Authentication-Results
    ["TLS-Cipher"] = s.tls and s.tls_cipher or nil,
  }
  local host = s:hostname()                     -- only a verified name; may wait for DNS
  if host then h["Hostname"] = host end
  return h
end

-- log_result(s, reply) - one line: the action, the score and the symbols with their scores.
local function log_result(s, reply)
  local names, parts, len = {}, {}, 0
  if type(reply.symbols) == "table" then
    for name in pairs(reply.symbols) do
      if type(name) == "string" then names[#names + 1] = name end
    end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local sym = reply.symbols[name]
    local part = ("%s(%.2f)"):format(name, type(sym) == "table" and tonumber(sym.score) or 0)
    if len + #part > LOG_SYMBOLS_MAX then
      parts[#parts + 1] = "..."
      break
    end
    parts[#parts + 1] = part
    len = len + #part + 1
  end
  s:log(("rspamd action=%q score=%.2f required=%.2f symbols=%s"):format(reply.action,
    tonumber(reply.score) or 0, tonumber(reply.required_score) or 0, table.concat(parts, ",")))
end

-- apply_milter(s, msg, reply) - rspamd's header changes: remove_headers { name = n } (n as msg:remove_header
-- counts), add_headers { name = value | { value = v } | { { value = v }, ... } }, and its DKIM-Signature.
local function apply_milter(s, msg, reply)
  local milter = type(reply.milter) == "table" and reply.milter or {}
  if type(milter.remove_headers) == "table" then
    for name, n in pairs(milter.remove_headers) do
      if type(name) == "string" and math.type(n) == "integer" then msg:remove_header(name, n) end
    end
  end
  if type(milter.add_headers) == "table" then
    for name, v in pairs(milter.add_headers) do
      if type(v) == "string" then
        add(s, msg, name, v)
      elseif type(v) == "table" and v.value ~= nil then
        add(s, msg, name, v.value)
      elseif type(v) == "table" then
        for _, one in ipairs(v) do
          add(s, msg, name, type(one) == "table" and one.value or one)
        end
      end
    end
  end
  local dkim = reply["dkim-signature"]
  if type(dkim) == "string" then
    add(s, msg, "DKIM-Signature", dkim)
  elseif type(dkim) == "table" then
    for _, sig in ipairs(dkim) do add(s, msg, "DKIM-Signature", sig) end
  end
end

function M.message(s, msg)                       -- stage: message
  local size = msg.size
  if size > cfg.max_size then
    s:log(("rspamd not scanned: size=%d over rspamd.max_size=%d"):format(size, cfg.max_size))
    return
  end
  local status, headers, body = mta.http.request { method = "POST", url = URL, headers = request_headers(s, msg),
    body = msg:text(), timeout = cfg.timeout }
  if not status then return mta.on_error(cfg.on_error, SERVICE, headers) end
  if status ~= 200 then return mta.on_error(cfg.on_error, SERVICE, "HTTP status " .. tostring(status)) end
  local reply, err = json_decode(body)
  if type(reply) ~= "table" or type(reply.action) ~= "string" then
    return mta.on_error(cfg.on_error, SERVICE, "not an rspamd reply: " .. (err or "no action"))
  end
  log_result(s, reply)
  local action = reply.action
  local message = type(reply.messages) == "table" and reply.messages.smtp_message or nil
  if action == "reject" then
    return mta.reject(554, "5.7.1 " .. reply_text(message, "Spam message rejected"))
  elseif action == "soft reject" then
    return mta.tempfail(451, "4.7.1 " .. reply_text(message, "Try again later"))
  elseif action == "greylist" then
    return mta.tempfail(451, "4.7.1 " .. reply_text(message, "Greylisted, please try again later"))
  end
  -- Accepted: headers that claim a verdict come from us only, never from the sender.
  if cfg.spam_header then msg:remove_header(cfg.spam_header) end
  if cfg.score_header then msg:remove_header(cfg.score_header) end
  apply_milter(s, msg, reply)
  if action == "rewrite subject" and type(reply.subject) == "string" then
    msg:remove_header("Subject", 1)
    add(s, msg, "Subject", reply.subject)
  elseif action == "add header" and cfg.spam_header then
    local flag = type(reply.milter) == "table" and reply.milter.spam_header
    add(s, msg, cfg.spam_header, type(flag) == "string" and flag or "Yes")
  end
  if cfg.score_header then
    add(s, msg, cfg.score_header, ("%.2f / %.2f"):format(tonumber(reply.score) or 0,
      tonumber(reply.required_score) or 0))
  end
end

-- A host that is loopback or a private network (RFC 1918, RFC 4193): the message travels in clear text.
local function is_private(host)
  host = host:lower():gsub("^%[", ""):gsub("%]$", "")
  if host == "localhost" or host == "::1" or host:match("^127%.") or host:match("^10%.") then return true end
  if host:match("^192%.168%.") or host:match("^f[cd]%x%x:") then return true end
  local b = tonumber(host:match("^172%.(%d+)%."))
  return b ~= nil and b >= 16 and b <= 31
end

function M.check_warnings()
  local w = {}
  local host = cfg.url:match("^%a+://%[([^%]]+)%]") or cfg.url:match("^%a+://([^/:]+)")
  if cfg.url:match("^[hH][tT][tT][pP]://") and host and not is_private(host) then
    w[#w + 1] = ("rspamd: rspamd.url %s is not on loopback or a private network, and every message goes to it "
      .. "over plain http"):format(cfg.url)
  end
  if cfg.on_error == "reject" then
    w[#w + 1] = 'rspamd: rspamd.on_error = "reject" refuses every message for good while rspamd is down or slow; '
      .. '"tempfail" makes senders retry, "accept" lets mail in unscanned'
  end
  if cfg.max_size < 1048576 then
    w[#w + 1] = ("rspamd: rspamd.max_size = %d, so messages over it (and most with attachments) are not scanned")
      :format(cfg.max_size)
  end
  return w
end

return M
