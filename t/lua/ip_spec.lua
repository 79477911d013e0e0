-- t/lua/ip_spec.lua
local ip = require "luamta.ip"

describe("luamta.ip", function()
  local v4 = {
    { "192.0.2.7", { 192, 0, 2, 7 } }, { "0.0.0.0", { 0, 0, 0, 0 } }, { "255.255.255.255", { 255, 255, 255, 255 } },
    { "256.1.1.1", nil }, { "1.2.3", nil }, { "1.2.3.4.5", nil }, { "01234.1.1.1", nil }, { " 1.2.3.4", nil },
    { "1.2.3.-4", nil }, { "", nil },
  }
  for _, case in ipairs(v4) do
    it("reads " .. string.format("%q", case[1]) .. (case[2] and " as an IPv4 address" or " as no IPv4 address"),
      function() assert.same(case[2], ip.parse_ipv4(case[1])) end)
  end

  local v6 = {
    { "2001:db8::1", { 0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 } }, { "::", { 0, 0, 0, 0, 0, 0, 0, 0 } },
    { "::1", { 0, 0, 0, 0, 0, 0, 0, 1 } }, { "::ffff:192.0.2.7", { 0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0207 } },
    { "1:2:3:4:5:6:7:8", { 1, 2, 3, 4, 5, 6, 7, 8 } }, { "1:2:3:4:5:6:7:8:9", nil }, { "1::2::3", nil },
    { "12345::1", nil }, { "g::1", nil }, { "1:2:3:4:5:6:7", nil }, { "", nil }, { "1:2:3:4:5:6:7::8", nil },
  }
  for _, case in ipairs(v6) do
    it("reads " .. string.format("%q", case[1]) .. (case[2] and " as an IPv6 address" or " as no IPv6 address"),
      function() assert.same(case[2], ip.parse_ipv6(case[1])) end)
  end
end)
