-- luamta: the API rules see (SPEC section 7): verdicts, the configuration, logging, waiting, local domains
-- and the directory. Loaded once per policy state, after the configuration (require "luamta").
local core = require "luamta.core"

local M = {}

M.config = core.config()

local function check_code(name, code, lo, hi, default)
  if code == nil then return default end
  if math.type(code) ~= "integer" or code < lo or code > hi then
    error(("%s: code must be a whole number from %d to %d, got %s"):format(name, lo, hi, tostring(code)), 3)
  end
  return code
end

local function check_text(name, text, default)
  if text == nil then return default end
  if type(text) ~= "string" then error(name .. ": text must be a string", 3) end
  return text
end

-- Verdicts. A handler returns one of these to decide, or nothing to let the next rule speak.
function M.accept()
  return { action = "accept" }
end

function M.reject(code, text)
  return { action = "reject", code = check_code("mta.reject", code, 500, 599, 550),
           text = check_text("mta.reject", text, "5.7.1 Rejected by policy") }
end

function M.tempfail(code, text)
  return { action = "tempfail", code = check_code("mta.tempfail", code, 400, 499, 451),
           text = check_text("mta.tempfail", text, "4.7.1 Try again later") }
end

function M.disconnect(code, text)
  return { action = "disconnect", code = check_code("mta.disconnect", code, 400, 599, 421),
           text = check_text("mta.disconnect", text, "4.7.0 Closing connection") }
end

-- Router verdicts (route stage).
function M.deliver_local(mailbox)
  if type(mailbox) ~= "string" or not mailbox:find("@", 1, true) then
    error("mta.deliver_local: expected a mailbox address", 2)
  end
  return { action = "local", mailbox = mailbox }
end

function M.bounce(code, text)
  return { action = "bounce", code = check_code("mta.bounce", code, 500, 599, 550),
           text = check_text("mta.bounce", text, "5.0.0 Delivery failed") }
end

-- mta.deliver_mx(domain): SMTP to the domain's MX hosts (or its A/AAAA when it has no MX), port routing.port.
function M.deliver_mx(domain, port)
  if type(domain) ~= "string" or domain == "" then error("mta.deliver_mx: expected a domain", 2) end
  return { action = "relay", mode = "mx", host = domain, port = port or M.config.routing.port }
end

-- mta.relay(host): SMTP to a relay or smart host: a host value of the configuration ({ host, port, literal }),
-- or a string "name", "name:port" or "[ip]:port". A name is resolved by MX, then A (SPEC section 6).
function M.relay(host)
  if type(host) == "string" then
    local parsed = require("luamta.config").parse_host(host)
    if not parsed then error("mta.relay: expected \"name\", \"name:port\" or \"[ip]:port\", got " .. host, 2) end
    host = parsed
  end
  if type(host) ~= "table" or type(host.host) ~= "string" then error("mta.relay: expected a host", 2) end
  return { action = "relay", mode = host.literal and "ip" or "host", host = host.host,
           port = host.port or M.config.routing.port }
end

-- mta.hold(text): keep the recipient queued until an administrator flushes or releases it.
function M.hold(text)
  return { action = "hold", code = 451, text = check_text("mta.hold", text, "4.3.2 Held in the queue") }
end

function M.defer(text)
  return { action = "defer", code = 451, text = check_text("mta.defer", text, "4.0.0 Deferred") }
end

-- mta.sleep(seconds): wait without blocking the server (the stage's coroutine yields to the event loop).
function M.sleep(seconds)
  return core.sleep(seconds)
end

-- mta.dns.a/aaaa/mx/ptr/txt/cname(name) -> records | nil, err (err: "nxdomain", "nodata", "timeout",
-- "servfail"). A cached answer comes at once; otherwise the handler waits without blocking the server.
-- mx gives { preference = n, exchange = "host" } tables; ptr also takes an IP address.
M.dns = core.dns

-- Call outs (docs/callouts.md) ---------------------------------------------------------------------------------
-- mta.http.request{ method, url, headers, body, timeout, verify, ca_file } -> status, headers, body | nil, err.
-- Waits without blocking; the host name is looked up with mta.dns (an IP address is used as it is); connections
-- are kept. https checks the certificate (system CA store, or ca_file / http.ca_file) unless verify = false.
-- Errors: "timeout", "response too large", "connection failed", "connection closed", "circuit open", ...
local http_cfg = M.config.http or {}
M.http = {}
function M.http.request(req)
  if type(req) ~= "table" then error("mta.http.request: expected a table { url = …, … }", 2) end
  local url = req.url
  if type(url) ~= "string" then error("mta.http.request: url must be a string", 2) end
  local method = req.method or (req.body and "POST" or "GET")
  if type(method) ~= "string" then error("mta.http.request: method must be a string", 2) end
  if req.headers ~= nil and type(req.headers) ~= "table" then error("mta.http.request: headers must be a table", 2) end
  if req.body ~= nil and type(req.body) ~= "string" then error("mta.http.request: body must be a string", 2) end
  if req.verify ~= nil and type(req.verify) ~= "boolean" then error("mta.http.request: verify must be a boolean", 2) end
  if req.ca_file ~= nil and type(req.ca_file) ~= "string" then error("mta.http.request: ca_file must be a string", 2) end
  local timeout = req.timeout or http_cfg.timeout or 10
  if type(timeout) ~= "number" or timeout <= 0 or timeout > 3600 then
    error("mta.http.request: timeout must be a number of seconds from 0 to 3600", 2)
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "invalid url" end
  local host = rest:match("^%[([^%]]+)%]") or rest:match("^([^/:?#]+)")
  if not host then return nil, "invalid url" end
  local connect = host
  if not (core.dns.ip_equal(host, host)) then
    local addrs, err = M.dns.a(host)
    if not addrs or #addrs == 0 then return nil, "cannot resolve " .. host .. ": " .. tostring(err or "nodata") end
    connect = addrs[1]
  end
  return core.http_request { method = method:upper(), url = url, connect = connect, headers = req.headers,
    body = req.body, timeout = timeout, max_response = http_cfg.max_response or 1048576,
    failures = http_cfg.failures or 5, cooldown = http_cfg.cooldown or 30, verify = req.verify ~= false,
    ca_file = req.ca_file or http_cfg.ca_file }
end

-- mta.redis(NAME) -> a client for redis.NAME of the configuration: r:call(cmd, ...) and r:eval(script, keys,
-- args) give the reply (a string, an integer, a table, or nil for Redis's nil) or nil, err.
function M.redis(name)
  if type(name) ~= "string" then error("mta.redis: expected the name of a redis server", 2) end
  if not (M.config.redis or {})[name] then error(("mta.redis: no redis.%s in the configuration"):format(name), 2) end
  return core.redis(name)
end

-- mta.dkim.key(path) -> a private key for msg:dkim_sign(key, domain, selector) | nil, err (docs/dkim.md). Load
-- keys when the rule loads (once per Lua state), never in a handler: it reads a file.
M.dkim = { key = core.dkim_key }

-- mta.on_error(policy, service, err) -> the verdict of a failed call out (docs/callouts.md, "Failure policy"):
-- "accept" gives nothing (the check is skipped and the next rule speaks), "tempfail" 451 4.3.0, "reject" 554
-- 5.3.0. The failure is logged either way.
function M.on_error(policy, service, err)
  core.log("warning", ("callout service=%q error=%q on_error=%s"):format(tostring(service), tostring(err),
    tostring(policy)))
  if policy == "tempfail" then
    return M.tempfail(451, "4.3.0 Temporary failure, try again later")
  elseif policy == "reject" then
    return M.reject(554, "5.3.0 Cannot check this message")
  end
  return nil
end

-- s:hostname() -> the verified client host name, or nil, why ("none" or "timeout"). SPEC section 4: by
-- default forward-confirmed (a PTR name whose A/AAAA records contain the client address); with
-- dns.verify_ptr = "ptr_only" the first PTR name, as Domino does. Looked up once per session.
local HOSTNAME_CANDIDATES = 10     -- PTR names tried at most; a long PTR list is a trick, not a host
local verify_ptr = (M.config.dns or {}).verify_ptr or "forward_confirmed"

local function strip_dot(name)
  name = name:lower()
  if name:sub(-1) == "." then name = name:sub(1, -2) end
  return name
end

-- A PTR answer is whatever the owner of the reverse zone wrote: only a valid host name (core.dns.is_hostname:
-- LDH labels of at most 63 octets, 253 in all) is a candidate, never a name with spaces, brackets, CR/LF, NUL or
-- non-ASCII octets, nor one too long to look up. A client with no valid name has none ("none").
local function verify_host(ip)
  local answer, err = M.dns.ptr(ip)
  if not answer then
    return nil, (err == "timeout" or err == "servfail") and "timeout" or "none"
  end
  local names = {}
  for _, name in ipairs(answer) do
    if core.dns.is_hostname(name) then names[#names + 1] = name end
  end
  if #names == 0 then return nil, "none" end
  if verify_ptr == "ptr_only" then return strip_dot(names[1]) end
  local lookup = ip:find(":", 1, true) and M.dns.aaaa or M.dns.a
  local failed = false
  for i = 1, math.min(#names, HOSTNAME_CANDIDATES) do
    local addrs, aerr = lookup(names[i])
    if addrs then
      for _, addr in ipairs(addrs) do
        if core.dns.ip_equal(addr, ip) then return strip_dot(names[i]) end
      end
    elseif aerr == "timeout" or aerr == "servfail" then
      failed = true
    end
  end
  return nil, failed and "timeout" or "none"
end

local session_methods = core.session_methods()
function session_methods.hostname(s)
  local private, err = core.session_private(s)
  if not private then return nil, err end
  if not private.hostname_done then
    private.hostname, private.hostname_err = verify_host(s.ip)
    private.hostname_done = true
  end
  return private.hostname, private.hostname_err
end

-- mta.log(...): one log line at info level.
function M.log(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  core.log("info", table.concat(parts, " ", 1, parts.n))
end

-- Local internet domains (SPEC section 5): local_domains entries are exact names or "*.x" for every name
-- under x (not x itself). With none configured, the hostname, its parent domain and every name under the
-- parent are local, as Domino does without a Global Domain document.
local function norm_domain(d)
  d = d:lower()
  if d:sub(-1) == "." then d = d:sub(1, -2) end
  return d
end

local exact_local, suffix_local = {}, {}
do
  local list = M.config.local_domains or {}
  if #list == 0 then
    local host = norm_domain(M.config.server.hostname)
    exact_local[host] = true
    local parent = host:match("^[^.]+%.(.+)$")
    if parent and parent:find(".", 1, true) then
      exact_local[parent] = true
      suffix_local[#suffix_local + 1] = "." .. parent
    end
  else
    for _, entry in ipairs(list) do
      entry = norm_domain(entry)
      if entry:sub(1, 2) == "*." then
        suffix_local[#suffix_local + 1] = entry:sub(2)
      else
        exact_local[entry] = true
      end
    end
  end
end

function M.is_local(domain)
  if type(domain) ~= "string" or domain == "" then return false end
  domain = norm_domain(domain)
  if exact_local[domain] then return true end
  for i = 1, #suffix_local do
    local suffix = suffix_local[i]
    if #domain > #suffix and domain:sub(-#suffix) == suffix then return true end
  end
  return false
end

-- The directory (Domino Directory): users with aliases, and groups. Compiled once per state.
M.directory = {}
local by_full, by_localpart = {}, {}
do
  local dir = M.config.directory or {}
  for _, user in ipairs(dir.users or {}) do
    local names = { user.address }
    for _, alias in ipairs(user.aliases or {}) do names[#names + 1] = alias end
    for _, name in ipairs(names) do
      local lname = name:lower()
      by_full[lname] = by_full[lname] or user
      local lp = lname:match("^(.*)@[^@]*$")
      if lp then by_localpart[lp] = by_localpart[lp] or user end
    end
  end
end

-- lookup(address) -> user table { address, aliases, name } or nil, as directory.lookup says:
-- "full" (the whole address), "localpart" (the part before @, in a local domain) or "full_then_localpart".
function M.directory.lookup(address)
  if type(address) ~= "string" then return nil end
  local mode = (M.config.directory or {}).lookup or "full_then_localpart"
  local laddr = address:lower()
  if mode ~= "localpart" then
    local user = by_full[laddr]
    if user or mode == "full" then return user end
  end
  local lp, domain = laddr:match("^(.*)@([^@]*)$")
  if lp and M.is_local(domain) then return by_localpart[lp] end
  return nil
end

-- group(name) -> the member list, or nil when there is no such group.
function M.directory.group(name)
  local groups = (M.config.directory or {}).groups or {}
  return groups[name]
end

return M
