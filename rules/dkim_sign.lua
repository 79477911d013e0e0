-- rules/dkim_sign.lua: DKIM-sign (RFC 6376, rsa-sha256, relaxed/relaxed) the mail of authenticated users (SMTP
-- AUTH) and of local submission (sendmail, through pickup) whose From: domain has a key in dkim.sign
-- (docs/dkim.md). Off by default: turned on by naming it in server.extra_rules. The keys are loaded once, when the
-- Lua state is built; a key that does not load fails the load (luamta check, reload). The rule never refuses a
-- message: one it cannot sign goes out unsigned, and the log says why.
local mta = require "luamta"

local cfg = mta.config.dkim
local M = {}

local keys = {}     -- domain (lower case) -> { key = …, domain = …, selector = … }
local weak = {}     -- where, for keys under 2048 bits
for _, e in ipairs(cfg.sign) do
  local key, err = mta.dkim.key(e.key)
  if not key then
    error(("%s: %s; expected an RSA private key of 1024 bits or more (2048 recommended), PEM without a "
      .. "passphrase"):format(e.where, err), 0)
  end
  if key:bits() < 2048 then   -- luamta check puts the file name in front itself
    weak[#weak + 1] = ("%s: %d-bit key"):format(e.where:match(": (dkim%.sign.*)$") or e.where, key:bits())
  end
  keys[e.domain] = { key = key, domain = e.domain, selector = e.selector }
end

-- check_warnings - what luamta check says about this configuration.
function M.check_warnings()
  local out = {}
  if #cfg.sign == 0 then
    out[#out + 1] = "dkim.sign: the dkim_sign rule is on but no key is listed, so nothing is signed; expected "
      .. "dkim = { sign = { { domain = …, selector = …, key = … } } }"
  end
  for _, w in ipairs(weak) do
    out[#out + 1] = w .. "; RFC 8301 recommends 2048 bits, and some receivers ignore shorter keys"
  end
  return out
end

-- from_domain(value) -> the domain of the first address of a From: field (lower case), or nil
local function from_domain(value)
  local v = value:gsub("\\.", "x"):gsub('"[^"]*"', '""'):gsub("%b()", " ")   -- quoted pairs, strings, comments
  local addr = v:match("<([^>]*)>") or v:match("([^%s,;:<>]+@[^%s,;:<>]+)")
  local domain = addr and addr:match("@([^@]+)$")
  if not domain then return nil end
  return (domain:gsub("%s", ""):gsub("%.$", ""):lower())
end

function M.message(s, msg)                            -- stage: message
  if not s.user and not s.local_user then return end
  local froms = msg:headers("From")
  if not froms or #froms ~= 1 then
    if froms and #froms > 1 then s:log("rule=dkim_sign action=none reason=several From fields") end
    return
  end
  local domain = from_domain(froms[1])
  local k = domain and keys[domain]
  if not k then return end
  local ok, err = msg:dkim_sign(k.key, k.domain, k.selector)
  if ok then
    s:log(("rule=dkim_sign action=sign d=%s s=%s"):format(k.domain, k.selector))
  else
    s:log(("rule=dkim_sign action=none d=%s reason=%s"):format(k.domain, tostring(err)))
  end
end

return M
