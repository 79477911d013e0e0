-- luamta.ip: IP address text to numbers, for the configuration loader and the list matcher. Pure and bounded.
local M = {}

-- parse_ipv4(text) -> { a, b, c, d } (numbers 0-255) or nil. Octets of one to three digits, no sign, no space.
function M.parse_ipv4(s)
  local a, b, c, d = s:match("^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
  if not a then return nil end
  local out = { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
  for i = 1, 4 do
    if out[i] > 255 then return nil end
  end
  return out
end

local function split_groups(part)
  local out = {}
  if part == "" then return out end
  for g in (part .. ":"):gmatch("([^:]*):") do out[#out + 1] = g end
  return out
end

-- parse_ipv6(text) -> the eight 16-bit words of an IPv6 address ("::" and a trailing dotted quad allowed), or nil.
function M.parse_ipv6(s)
  if s == "" or s:find("[^%x:%.]") then return nil end
  local head, tail = s:match("^(.-)::(.*)$")
  local h, t
  if head then
    if tail:find("::", 1, true) then return nil end
    h, t = split_groups(head), split_groups(tail)
  else
    h, t = split_groups(s), {}
  end
  local function words(list, may_end_in_ipv4)
    local out = {}
    for i, g in ipairs(list) do
      if g:find(".", 1, true) then
        local q = may_end_in_ipv4 and i == #list and M.parse_ipv4(g)
        if not q then return nil end
        out[#out + 1] = q[1] * 256 + q[2]
        out[#out + 1] = q[3] * 256 + q[4]
      elseif #g < 1 or #g > 4 then
        return nil
      else
        out[#out + 1] = tonumber(g, 16)
      end
    end
    return out
  end
  local hw = words(h, #t == 0)
  local tw = words(t, true)
  if not hw or not tw then return nil end
  local total = #hw + #tw
  if (head and total > 7) or (not head and total ~= 8) then return nil end
  local out = hw
  for _ = 1, 8 - total do out[#out + 1] = 0 end
  for _, w in ipairs(tw) do out[#out + 1] = w end
  return out
end

return M
