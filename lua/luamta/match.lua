-- luamta.match: the list entries of SPEC section 4 (Domino's inbound-control fields), each list compiled once.
--
-- match.compile(list, family, keypath, groups) -> matcher, or raises "<keypath>[<i>]: <what is wrong>; expected
-- <what>" (an entry of a group: "directory.groups.<Name>[<j>]: …"). list is an array of strings (or one string
-- with entries separated by commas, semicolons or newlines), family one of
--   "A"  relay destinations (inbound.relay.allow_to/deny_to); candidate: the full recipient address
--   "B"  relay sources and exclusions   \
--   "C"  connection lists                > candidate: the client IP, then the client's verified host name
--   "D"  private black/white lists      /
--   "E"  sender and recipient lists; candidate: the full address
-- keypath names the list in messages ("inbound.relay.allow_to") and groups is directory.groups (name -> array of
-- entries; nil for none).
--
-- Entries: "*" (everything), "[ip]" in the forms [192.0.2.7] [192.0.2.*] [192.0.2.1-30] [192.0.2.0/24]
-- [2001:db8::1] [2001:db8::/32] (all families; in A and E they match an address literal u@[192.0.2.7]),
-- "@xyz.com" exact domain (A, E), "joe@xyz.com" exact address (E), "%AcmeEast" Domino domain (A), "xyz.com" or
-- ".xyz.com" string suffix of the candidate (all), "Name" (no dot, no @) a group, matched by the same rules.
-- An unbracketed IP, a malformed bracket, a "*" outside brackets and an entry of a kind the family cannot use are
-- errors; inside a group, an entry of a kind the family cannot use is only a warning (groups serve several lists).
-- Matching is ASCII case-insensitive and domains lose one trailing dot. The null sender "" matches nothing.
--
-- Matcher methods (no parsing of entries happens here; each match returns true, origin or false, where origin
-- names the entry that matched, e.g. 'inbound.relay.deny_to[1] "*"'):
--   m:match_ip(ip)          "*" or an IP entry covers ip (text, IPv4 or IPv6; ::ffff:a.b.c.d counts as IPv4)
--   m:match_host(name)      "*" or a host-name (suffix) entry matches the verified name; false for nil
--   m:match_address(addr)   families A/E: addr is "u@d" or an address table { address = … }
--   m:has_ip_entries()      "*" or at least one IP entry
--   m:has_host_entries()    at least one host-name entry (so a host name is worth looking up)
--   m:has_star()            "*" is in the list (directly or through a group)
--   m:is_empty()            the configured list has no entries at all (an unknown group still counts as one)
--   m:warnings()            array of "<keypath>[<i>]: …" strings for `luamta check`
-- Helper: match.parse_ip(text) -> "ipv4", { 4 octets } | "ipv6", { 8 words } | nil.
local ip = require "luamta.ip"
local M = {}

local FAMILIES = { A = "address", B = "host", C = "host", D = "host", E = "address" }

local IP_EXPECT = "an IP entry such as [192.0.2.7], [192.0.2.*], [192.0.2.1-30], [192.0.2.0/24], [2001:db8::1] "
                  .. "or [2001:db8::/32]"

-- IP text -------------------------------------------------------------------------------------------------------

local parse_ipv4, parse_ipv6 = ip.parse_ipv4, ip.parse_ipv6

-- M.parse_ip - "ipv4", octets or "ipv6", words; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv4.
function M.parse_ip(text)
  if type(text) ~= "string" then return nil end
  local v4 = parse_ipv4(text)
  if v4 then return "ipv4", v4 end
  local v6 = parse_ipv6(text)
  if not v6 then return nil end
  if v6[1] == 0 and v6[2] == 0 and v6[3] == 0 and v6[4] == 0 and v6[5] == 0 and v6[6] == 0xffff then
    return "ipv4", { v6[7] >> 8, v6[7] & 0xff, v6[8] >> 8, v6[8] & 0xff }
  end
  return "ipv6", v6
end

-- Entries -------------------------------------------------------------------------------------------------------

local function strip_dot(d)
  if d:sub(-1) == "." then return d:sub(1, -2) end
  return d
end

-- is_domain_text - letters, digits, "-", "_" and non-ASCII octets in dot-separated labels, no empty label.
local function is_domain_text(d)
  if d == "" or d:find("[^%w%-_%.\128-\255]") then return false end
  if d:find("..", 1, true) or d:sub(1, 1) == "." or d:sub(-1) == "." then return false end
  return true
end

-- looks_like_ip - an entry that is an IP address (or an IP pattern) without its brackets.
local function looks_like_ip(e)
  local body = e:match("^[Ii][Pp][Vv]6:(.*)$") or e
  if body:match("^[%d%.%*%-/]+$") and body:find("%d") and body:find(".", 1, true) then return true end
  if body:find(":", 1, true) and body:match("^[%x:%./]+$") then return true end
  return false
end

-- octet_range - one octet of an IPv4 entry: a number, "*" or "n-m". Returns lo, hi or nil, why.
local function octet_range(part)
  if part == "*" then return 0, 255 end
  local lo, hi = part:match("^(%d+)%-(%d+)$")
  if lo then
    if #lo > 3 or #hi > 3 or tonumber(lo) > 255 or tonumber(hi) > 255 then
      return nil, 'an octet over 255 ("' .. part .. '")'
    end
    if tonumber(lo) > tonumber(hi) then return nil, 'a range from high to low ("' .. part .. '")' end
    return tonumber(lo), tonumber(hi)
  end
  if part:find("*", 1, true) and part:find("-", 1, true) then
    return nil, 'a wildcard inside a range ("' .. part .. '")'
  end
  if part:match("^%d+$") then
    if #part > 3 or tonumber(part) > 255 then return nil, 'an octet over 255 ("' .. part .. '")' end
    return tonumber(part), tonumber(part)
  end
  if part == "" then return nil, "an empty octet" end
  return nil, 'a malformed octet ("' .. part .. '")'
end

-- parse_ip_entry - the text inside [ ]: { kind = "ip4", ranges = {8 numbers} } or { kind = "ip6", words, bits },
-- plus note (a warning) when a prefix has host bits set; or nil, why.
local function parse_ip_entry(inner)
  if inner == "" then return nil, "empty brackets" end
  local v6text = inner:match("^[Ii][Pp][Vv]6:(.*)$")
  if v6text or inner:find(":", 1, true) then
    v6text = v6text or inner
    local addr, bits = v6text:match("^([^/]*)/(.*)$")
    addr = addr or v6text
    local words = parse_ipv6(addr)
    if not words then return nil, "a malformed IPv6 address" end
    local n = 128
    if bits then
      if not bits:match("^%d%d?%d?$") or tonumber(bits) > 128 then
        return nil, "a prefix length outside 0-128"
      end
      n = tonumber(bits)
    end
    local note
    for k = 1, 8 do
      local b = math.max(0, math.min(16, n - 16 * (k - 1)))
      local mask = (0xffff << (16 - b)) & 0xffff
      if words[k] & mask ~= words[k] then note = "host bits set after the prefix length" end
      words[k] = words[k] & mask
    end
    return { kind = "ip6", words = words, bits = n, note = note }
  end
  local addr, bits = inner:match("^([^/]*)/(.*)$")
  if addr then
    local o = parse_ipv4(addr)
    if not o then
      if addr:find("[%*%-]") then return nil, "a wildcard or range together with a prefix length" end
      return nil, "a malformed address before the prefix length"
    end
    if not bits:match("^%d%d?$") or tonumber(bits) > 32 then return nil, "a prefix length outside 0-32" end
    local n, ranges, note = tonumber(bits), {}, nil
    for k = 1, 4 do
      local b = math.max(0, math.min(8, n - 8 * (k - 1)))
      local mask = (0xff << (8 - b)) & 0xff
      local lo = o[k] & mask
      if lo ~= o[k] then note = "host bits set after the prefix length" end
      ranges[2 * k - 1], ranges[2 * k] = lo, lo | (~mask & 0xff)
    end
    return { kind = "ip4", ranges = ranges, note = note }
  end
  local parts = {}
  for p in (inner .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = p end
  if #parts ~= 4 then return nil, "not four octets" end
  local ranges = {}
  for k = 1, 4 do
    local lo, hi = octet_range(parts[k])
    if not lo then return nil, hi end
    ranges[2 * k - 1], ranges[2 * k] = lo, hi
  end
  return { kind = "ip4", ranges = ranges }
end

-- classify - what an entry is. Returns an entry table { kind, value, … } or nil, why, expected.
-- kind: star, ip4, ip6, domino, domain (exact), address (exact), suffix, group.
local function classify(text, family)
  local hosts = FAMILIES[family] == "host"
  if text == "*" then return { kind = "star" } end
  local first = text:sub(1, 1)
  if first == "[" then
    local inner = text:match("^%[([^%[%]]*)%]$")
    if not inner then
      if not text:find("]", 1, true) then return nil, 'a "[" without its "]"', IP_EXPECT end
      return nil, "a malformed bracket", IP_EXPECT
    end
    local e, why = parse_ip_entry(inner)
    if not e then return nil, why, IP_EXPECT end
    return e
  end
  if text:find("]", 1, true) then return nil, 'a "]" without its "["', IP_EXPECT end
  if looks_like_ip(text) then
    local body = text:match("^[Ii][Pp][Vv]6:(.*)$") or text
    return nil, "an IP address without brackets", "[" .. body .. "]"
  end
  if first == "*" then
    return nil, 'a "*" outside brackets', '"*" alone, a suffix such as xyz.com, or an IP entry such as [192.0.2.*]'
  end
  if text:find("[%s,;<>\"()*\\/]") then
    return nil, "characters that no host name, address or group has",
           hosts and "a host name such as mail.xyz.com, a group name or " .. IP_EXPECT
           or "an address, a domain such as xyz.com or @xyz.com, or a group name"
  end
  if text:find(":", 1, true) then
    return nil, "a colon (ports do not belong in this list)", "a host name such as mail.xyz.com or " .. IP_EXPECT
  end
  if first == "%" then
    local name = text:sub(2)
    if name == "" or name:find("[%.@%%]") then
      return nil, "a malformed Domino domain", 'a dotless Domino domain name such as "%AcmeEast"'
    end
    return { kind = "domino", value = name:lower(), only = "A",
             why = "a Domino domain only means something in relay destinations (family A)" }
  end
  if text:find("@", 1, true) then
    local lp, d = text:match("^(.*)@([^@]*)$")
    d = strip_dot(d)
    if not is_domain_text(d) then
      return nil, "a malformed domain after the @", '"@xyz.com" or "joe@xyz.com"'
    end
    if lp == "" then
      return { kind = "domain", value = d:lower(), only = "AE",
               why = "an exact domain (@) only matches addresses, not host names" }
    end
    if lp:find("@", 1, true) then return nil, 'more than one "@"', '"joe@xyz.com"' end
    return { kind = "address", value = (lp .. "@" .. d):lower(), only = "E",
             why = family == "A" and "a full address in a list of destination domains"
                   or "an address only matches senders and recipients, not hosts" }
  end
  if not text:find(".", 1, true) then
    if first == "%" or first == "-" then return nil, "a malformed group name", "a group of directory.groups" end
    return { kind = "group", value = text }
  end
  local d = strip_dot(text)
  local body = d:sub(1, 1) == "." and d:sub(2) or d
  if not is_domain_text(body) then
    return nil, "a malformed domain or host name",
           hosts and "a host name such as mail.xyz.com or a suffix such as xyz.com"
           or "a domain such as xyz.com or @xyz.com"
  end
  return { kind = "suffix", value = d:lower(), leading_dot = d:sub(1, 1) == "." }
end

-- Matchers ------------------------------------------------------------------------------------------------------

local Matcher = {}
Matcher.__index = Matcher

local function quoted(text)
  return '"' .. text .. '"'
end

-- ip_hit - the origin of the first IP entry that covers the parsed candidate, or nil.
local function ip_hit(self, kind, v)
  if kind == "ipv4" then
    local list = self.ip4
    for i = 1, #list do
      local r = list[i].ranges
      if v[1] >= r[1] and v[1] <= r[2] and v[2] >= r[3] and v[2] <= r[4]
         and v[3] >= r[5] and v[3] <= r[6] and v[4] >= r[7] and v[4] <= r[8] then
        return list[i].origin
      end
    end
  elseif kind == "ipv6" then
    local list = self.ip6
    for i = 1, #list do
      local e = list[i]
      local ok = true
      for k = 1, 8 do
        local b = e.bits - 16 * (k - 1)
        if b <= 0 then break end
        if b > 16 then b = 16 end
        local mask = (0xffff << (16 - b)) & 0xffff
        if v[k] & mask ~= e.words[k] then
          ok = false
          break
        end
      end
      if ok then return e.origin end
    end
  end
  return nil
end

local function suffix_hit(self, text)
  local list = self.suffix
  for i = 1, #list do
    local suf = list[i].value
    if #text >= #suf and text:sub(-#suf) == suf then return list[i].origin end
  end
  return nil
end

function Matcher:match_ip(ip)
  if self.star then return true, self.star end
  local kind, v = M.parse_ip(ip)
  if not kind then return false end
  local origin = ip_hit(self, kind, v)
  if origin then return true, origin end
  return false
end

function Matcher:match_host(name)
  if type(name) ~= "string" or name == "" then return false end
  if self.star then return true, self.star end
  local origin = suffix_hit(self, strip_dot(name:lower()))
  if origin then return true, origin end
  return false
end

function Matcher:match_address(addr)
  if type(addr) == "table" then addr = addr.address end
  if type(addr) ~= "string" or addr == "" then return false end   -- the null sender matches no entry
  if self.star then return true, self.star end
  local text = addr:lower()
  local lp, domain = text:match("^(.*)@([^@]*)$")
  if lp then
    domain = strip_dot(domain)
    text = lp .. "@" .. domain
  else
    domain = ""
  end
  local origin = self.address[text] or self.domain[domain]
  if origin then return true, origin end
  if domain ~= "" and not domain:find(".", 1, true) and self.domino[domain] then return true, self.domino[domain] end
  local literal = domain:match("^%[(.*)%]$")
  if literal then
    literal = literal:match("^ipv6:(.*)$") or literal
    local kind, v = M.parse_ip(literal)
    origin = kind and ip_hit(self, kind, v)
    if origin then return true, origin end
  end
  origin = suffix_hit(self, text)
  if origin then return true, origin end
  return false
end

function Matcher:has_ip_entries()
  return self.star ~= nil or #self.ip4 > 0 or #self.ip6 > 0
end

function Matcher:has_host_entries()
  return #self.suffix > 0
end

function Matcher:has_star()
  return self.star ~= nil
end

function Matcher:is_empty()
  return self.count == 0
end

function Matcher:warnings()
  local out = {}
  for i, w in ipairs(self.warning_list) do out[i] = w end
  return out
end

-- Compiling -----------------------------------------------------------------------------------------------------

local function to_list(list, keypath)
  if list == nil then return {} end
  if type(list) == "string" then
    local out = {}
    for raw in list:gmatch("[^,;\r\n]+") do
      local s = raw:match("^%s*(.-)%s*$")
      if s ~= "" then out[#out + 1] = s end
    end
    return out
  end
  if type(list) ~= "table" then
    error(keypath .. ": got a " .. type(list) .. "; expected a list of strings", 0)
  end
  local out = {}
  for i, v in ipairs(list) do
    if type(v) ~= "string" then
      error(keypath .. "[" .. i .. "]: got a " .. type(v) .. "; expected a string", 0)
    end
    out[#out + 1] = v
  end
  return out
end

-- suffix_warning - what a string-suffix entry also matches, for check.
local function suffix_warning(where, e, hosts)
  local v = e.value
  if e.leading_dot then
    return where .. ": " .. quoted(v) .. " has a leading dot, so it matches mail" .. v .. " but never "
           .. v:sub(2) .. " itself; expected " .. v:sub(2) .. " to include " .. v:sub(2)
  end
  if hosts then
    return where .. ": " .. quoted(v) .. " is a string suffix: it also matches the host not" .. v
           .. "; expected ." .. v .. " if only names under " .. v .. " are meant"
  end
  return where .. ": " .. quoted(v) .. " is a string suffix: it also matches u@uvw" .. v .. " and u@not" .. v
         .. "; expected @" .. v .. " for exactly that domain"
end

-- M.compile - see the top of the file.
function M.compile(list, family, keypath, groups)
  if FAMILIES[family] == nil then
    error('match.compile: family must be "A", "B", "C", "D" or "E", got ' .. tostring(family), 2)
  end
  if type(keypath) ~= "string" then error("match.compile: keypath must be a string", 2) end
  if groups ~= nil and type(groups) ~= "table" then error("match.compile: groups must be a table or nil", 2) end
  groups = groups or {}
  local entries = to_list(list, keypath)
  local hosts = FAMILIES[family] == "host"

  local by_lower = {}
  for name in pairs(groups) do
    if type(name) == "string" then
      local l = name:lower()
      if by_lower[l] == nil then by_lower[l] = name end
    end
  end

  local self = setmetatable({
    family = family, keypath = keypath, count = #entries, star = nil,
    ip4 = {}, ip6 = {}, suffix = {}, domain = {}, address = {}, domino = {},
    warning_list = {},
  }, Matcher)
  local seen_warning = {}
  local function warn(text)
    if not seen_warning[text] then
      seen_warning[text] = true
      self.warning_list[#self.warning_list + 1] = text
    end
  end

  -- add - one entry. where is its key path, origin what logs call it, stack the groups being expanded.
  local function add(text, where, origin, stack, used_by)
    text = text:match("^%s*(.-)%s*$")
    if text == "" then return end
    local tail = used_by and (" (in the group, as used by " .. used_by .. ")") or ""
    local e, why, expected = classify(text, family)
    if not e then
      error(where .. ": got " .. quoted(text) .. ", " .. why .. "; expected " .. expected .. tail, 0)
    end
    if e.only and not e.only:find(family, 1, true) then
      if not used_by then
        error(where .. ": got " .. quoted(text) .. ", " .. e.why .. "; expected "
              .. (hosts and "a host name, a group, * or " .. IP_EXPECT
                  or family == "A" and 'a domain (xyz.com, @xyz.com), a Domino domain (%AcmeEast), a group or *'
                  or "an address, a domain (xyz.com, @xyz.com), a group or *"), 0)
      end
      warn(where .. ": " .. quoted(text) .. " cannot match in " .. keypath .. " (" .. e.why
           .. "); it is ignored there; expected entries that " .. keypath .. " can use" .. tail)
      return
    end
    origin = origin .. " " .. quoted(text)
    local kind = e.kind
    if kind == "star" then
      self.star = self.star or origin
    elseif kind == "ip4" or kind == "ip6" then
      if e.note then
        warn(where .. ": " .. quoted(text) .. " has " .. e.note .. "; expected the network address" .. tail)
      end
      local list = kind == "ip4" and self.ip4 or self.ip6
      list[#list + 1] = { ranges = e.ranges, words = e.words, bits = e.bits, origin = origin }
    elseif kind == "suffix" then
      warn(suffix_warning(where, e, hosts) .. tail)
      self.suffix[#self.suffix + 1] = { value = e.value, origin = origin }
    elseif kind == "domain" or kind == "address" or kind == "domino" then
      local set = self[kind]
      if set[e.value] == nil then set[e.value] = origin end
    elseif kind == "group" then
      local name = groups[e.value] ~= nil and e.value or by_lower[e.value:lower()]
      if name == nil then
        warn(where .. ": unknown group " .. quoted(e.value) .. " matches nothing; expected a group of directory.groups"
             .. tail)
        return
      end
      for i, g in ipairs(stack) do
        if g == name then
          local chain = {}
          for j = i, #stack do chain[#chain + 1] = stack[j] end
          chain[#chain + 1] = name
          error(where .. ": group " .. quoted(name) .. " contains itself (" .. table.concat(chain, " -> ")
                .. "); expected groups without cycles" .. tail, 0)
        end
      end
      local members = to_list(groups[name], "directory.groups." .. name)
      if #members == 0 then
        warn(where .. ": group " .. quoted(name) .. " is empty and matches nothing; expected members" .. tail)
        return
      end
      stack[#stack + 1] = name
      for j, member in ipairs(members) do
        add(member, "directory.groups." .. name .. "[" .. j .. "]", origin .. " >", stack, used_by or where)
      end
      stack[#stack] = nil
    end
  end

  for i, text in ipairs(entries) do
    local where = keypath .. "[" .. i .. "]"
    add(text, where, where, {}, nil)
  end
  return self
end

return M
