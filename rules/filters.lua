-- rules/filters.lua: Domino's private white/blacklists and DNS white/blacklists (SPEC section 5). At connect, for
-- IPv4 clients subject to relay enforcement, the first list that matches decides: private whitelist, private
-- blacklist, DNSWL, DNSBL. A blacklist "reject" is answered at MAIL, until the client authenticates.
local mta = require "luamta"
local match = require "luamta.match"
local domino = require "luamta.domino"

local inbound = mta.config.inbound
local groups = mta.config.directory.groups
local dom = domino.new(mta)
local DEFAULT_TEXT = "Connection denied for policy reasons"

local whitelist = inbound.whitelist.enabled and inbound.whitelist
local blacklist = inbound.blacklist.enabled and inbound.blacklist
local dnswl = inbound.dnswl.enabled and inbound.dnswl
local dnsbl = inbound.dnsbl.enabled and inbound.dnsbl
local white_hosts = match.compile(inbound.whitelist.hosts, "D", "inbound.whitelist.hosts", groups)
local black_hosts = match.compile(inbound.blacklist.hosts, "D", "inbound.blacklist.hosts", groups)

-- sites_of - the DNS list zones as query suffixes: no leading or trailing dot.
local function sites_of(list)
  local out = {}
  for _, site in ipairs(list) do
    site = site:gsub("^%.+", ""):gsub("%.+$", "")
    if site ~= "" then out[#out + 1] = site end
  end
  return out
end
local wl_sites = sites_of(inbound.dnswl.sites)
local bl_sites = sites_of(inbound.dnsbl.sites)
local any_filter = (whitelist or blacklist or dnswl or dnsbl) and true or false

local M = {}

-- listed - the first site of sites that lists the IPv4 client (A record of d.c.b.a.<site>), or nil.
-- NXDOMAIN and NODATA mean not listed; a timeout or SERVFAIL also counts as not listed, and is logged.
local function listed(s, kind, sites, octets)
  local reversed = octets[4] .. "." .. octets[3] .. "." .. octets[2] .. "." .. octets[1] .. "."
  for _, site in ipairs(sites) do
    local answer, err = mta.dns.a(reversed .. site)
    if type(answer) == "table" and #answer > 0 then return site end
    if err ~= nil and err ~= "nxdomain" and err ~= "nodata" then
      s:log("rule=filters " .. kind .. " site=" .. site .. " ip=" .. s.ip .. " lookup=" .. tostring(err)
            .. " counted as not listed")
    end
  end
  return nil
end

-- act - what a list that matched does. header is X-DNSBLSite or X-DNSWLSite, site the zone or the private list
-- name. A blacklist reject is remembered for mail.
local function act(s, kind, action, header, site, text, values)
  if action == "skip" then return end
  local name = dom:hostname(s)
  s:log("rule=filters " .. kind .. " listed ip=" .. s.ip .. " name=" .. (name or "-") .. " site=" .. site
        .. " action=" .. action)
  if action == "tag" then
    s:tag(header, site)
  elseif action == "reject" then
    s.vars["filters.reject"] = { text = domino.fill(text, values), site = site, kind = kind }
  end
end

function M.connect(s)                                -- stage: connect
  if not any_filter then return end
  local family, octets = match.parse_ip(s.ip)
  if family ~= "ipv4" then return end               -- the filters are IPv4 only
  if not dom:is_enforced(s) then return end
  if whitelist and dom:match_client(white_hosts, s) then
    return act(s, "whitelist", whitelist.action, "X-DNSWLSite", "PrivateWhitelist")
  end
  if blacklist and dom:match_client(black_hosts, s) then
    return act(s, "blacklist", blacklist.action, "X-DNSBLSite", "PrivateBlacklist",
               blacklist.message or DEFAULT_TEXT, { s.ip })
  end
  if dnswl then
    local site = listed(s, "dnswl", wl_sites, octets)
    if site then return act(s, "dnswl", dnswl.action, "X-DNSWLSite", site) end
  end
  if dnsbl then
    local site = listed(s, "dnsbl", bl_sites, octets)
    if site then
      return act(s, "dnsbl", dnsbl.action, "X-DNSBLSite", site, dnsbl.message or DEFAULT_TEXT, { s.ip, site })
    end
  end
end

function M.mail(s, sender)                           -- stage: mail
  local r = s.vars["filters.reject"]
  if r == nil then return end
  if not dom:is_enforced(s) then return end         -- authenticated with authenticated = "allow"
  s:log("rule=filters action=reject ip=" .. s.ip .. " reason=" .. r.kind .. " site=" .. r.site)
  return mta.reject(550, "5.7.1 " .. r.text)
end

-- M.check_warnings - what `luamta check` should say about this module's settings.
function M.check_warnings()
  local out = domino.list_warnings({ white_hosts, black_hosts }, mta.config.dns.verify_ptr)
  for _, key in ipairs({ "whitelist", "blacklist" }) do
    if inbound[key].enabled and #inbound[key].hosts == 0 then
      out[#out + 1] = "inbound." .. key .. ".hosts: empty while inbound." .. key .. ".enabled = true, so the "
                      .. "filter never matches; expected hosts to list"
    end
  end
  for _, key in ipairs({ "dnswl", "dnsbl" }) do
    if inbound[key].enabled and #(key == "dnswl" and wl_sites or bl_sites) == 0 then
      out[#out + 1] = "inbound." .. key .. ".sites: empty while inbound." .. key .. ".enabled = true, so the "
                      .. "filter never matches; expected sites to query"
    end
  end
  return out
end

return M
