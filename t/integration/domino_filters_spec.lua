-- t/integration/domino_filters_spec.lua - Domino's DNS blacklist/whitelist filters and private black/white lists
-- (SPEC 3.1 inbound.dnsbl/dnswl/blacklist/whitelist, section 5 points 1 and 2) in a running server with a real
-- dnsmasq serving the lists: actions reject (custom text with %s, default text), tag, log and skip; the order
-- private whitelist -> private blacklist -> DNSWL -> DNSBL; first site wins; a list that times out.
local dns = require "t.helpers.dns"
local smtp = require "t.helpers.smtp"
local server = require "t.helpers.server"

-- The hosts of this file:
--   127.0.0.2   not listed anywhere, no PTR
--   127.0.0.5   dyn5.isp.test; listed at bl.one.test and bl.two.test
--   127.0.0.9   listed at bl.two.test only (answer 127.0.0.4)
--   127.0.0.10  host.example.test: internal (example.test is local); listed at bl.one.test
--   127.0.0.11  listed at wl.dnswl.test and bl.one.test
--   127.0.0.12  private whitelist (file 1), also in the private blacklist range and at bl.one.test
--   127.0.0.13  private blacklist range (file 1), also at wl.dnswl.test
--   127.0.0.15  spammer.isp.test: private blacklist by host name (file 1)
--   127.0.1.5   private blacklist CIDR (file 1); 127.0.2.9 private blacklist wildcard (file 1)
--   127.0.0.20  private blacklist; 127.0.0.21 private whitelist (tag and log describes)
local RECORDS = {
  hosts = { ["dyn5.isp.test"] = "127.0.0.5", ["host.example.test"] = "127.0.0.10",
            ["spammer.isp.test"] = "127.0.0.15" },
  lists = {
    ["bl.one.test"] = { "127.0.0.5", "127.0.0.10", "127.0.0.11", "127.0.0.12" },
    ["bl.two.test"] = { "127.0.0.5", ["127.0.0.9"] = "127.0.0.4" },   -- any address answer means listed
    ["wl.dnswl.test"] = { "127.0.0.11", "127.0.0.13" },
  },
}

local function mail_reply(env, ip)
  local c = env.session(ip)
  local code, lines = c:cmd("MAIL FROM:<sender@example.org>")
  return code, lines and lines[1], c
end

-- deliver(env, ip, subjects) -> the delivered texts (LF line ends) of messages with those subjects, sent in one
-- session from ip
local function deliver(env, ip, subjects)
  local c = env.session(ip)
  for _, subject in ipairs(subjects) do
    local code, lines = smtp.send_mail(c, "sender@example.org", "jdoe@example.test",
      smtp.message({ "Subject: " .. subject }, "filters spec\r\n"))
    assert.equal(250, code, ip .. ": " .. tostring(lines and lines.text))
  end
  c:cmd("QUIT")
  local out = {}
  for i, subject in ipairs(subjects) do
    out[i] = server.wait_until(function()
      for _, f in ipairs(env.srv:maildir_files("jdoe", "example.test")) do
        local text = f.content:gsub("\r\n", "\n")   -- Maildir files have LF line ends
        if text:find("\nSubject: " .. subject .. "\n", 1, true) then return text end
      end
    end, 5)
    assert.truthy(out[i], "no delivered message with Subject: " .. subject)
  end
  return out
end

-- header_block(text) -> the header section of a delivered message
local function header_block(text)
  return "\n" .. (text:match("^(.-\n)\n") or text)
end

-- asked_lists(env, ip, mark) -> the list zones dnsmasq was asked about ip (A d.c.b.a.<zone>) since mark
local function asked_lists(env, ip, mark)
  local a, b, c, d = ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  local prefix = d .. "." .. c .. "." .. b .. "." .. a .. "."
  local out = {}
  for _, q in ipairs(env.ns:queries(mark)) do
    if q.type == "A" and q.name:sub(1, #prefix) == prefix then out[#out + 1] = q.name:sub(#prefix + 1) end
  end
  return out
end

describe("inbound.dnsbl reject with a custom text, and the order of the four lists", function()
  local env = dns.world(RECORDS, { ipv6 = true, config = { inbound = {
    dnsbl = { enabled = true, sites = { "bl.one.test", "bl.two.test" }, action = "reject",
              message = "%s is listed at %s; %d and %s stay as they are" },
    dnswl = { enabled = true, sites = { "wl.dnswl.test" } },
    whitelist = { enabled = true, hosts = { "[127.0.0.12]" } },
    blacklist = { enabled = true, action = "reject", message = "Host %s is on our private blacklist (%s, 100%)",
                  hosts = { "[127.0.0.12-14]", "[127.0.1.0/24]", "[127.0.2.*]", "[::1]", "spammer.isp.test" } },
  } } })

  it("greets a listed client, then refuses its MAIL with 550 5.7.1 and the text (IP, then site; %d stays)",
    function()
      local mark = env.srv:log_mark()
      local code, line, c = mail_reply(env, "127.0.0.5")
      assert.equal(550, code)
      assert.equal("550 5.7.1 127.0.0.5 is listed at bl.one.test; %d and %s stay as they are", line)
      assert.truthy(env.srv:wait_log("rule=filters dnsbl listed ip=127.0.0.5 name=dyn5.isp.test site=bl.one.test "
        .. "action=reject", 2, mark, true), env.srv:log():sub(mark + 1))
      assert.equal(250, (c:cmd("RSET")))
      code, line = c:cmd("MAIL FROM:<other@example.org>")
      assert.equal(550, code, "the session may send no mail at all")
      assert.equal("550 5.7.1 127.0.0.5 is listed at bl.one.test; %d and %s stay as they are", line[1])
    end)

  it("stops at the first site that lists the client: bl.two.test is not asked about 127.0.0.5", function()
    local mark = env.ns:mark()
    mail_reply(env, "127.0.0.5")
    assert.same({ "bl.one.test" }, asked_lists(env, "127.0.0.5", mark))
  end)

  it("names the second site when only the second site lists the client (with any address as the answer)", function()
    local code, line = mail_reply(env, "127.0.0.9")
    assert.equal(550, code)
    assert.equal("550 5.7.1 127.0.0.9 is listed at bl.two.test; %d and %s stay as they are", line)
  end)

  it("takes mail from a client that no list names", function()
    local code, line, c = mail_reply(env, "127.0.0.2")
    assert.equal(250, code, line)
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
  end)

  it("does not check a DNSWL-listed client (skip) against the DNSBL, though it is listed there", function()
    local mark = env.ns:mark()
    local code, line = mail_reply(env, "127.0.0.11")
    assert.equal(250, code, line)
    assert.same({ "wl.dnswl.test" }, asked_lists(env, "127.0.0.11", mark))
  end)

  it("lets the private whitelist decide first: 127.0.0.12 (also blacklisted, also at bl.one.test) is not checked",
    function()
      local mark = env.ns:mark()
      local code, line = mail_reply(env, "127.0.0.12")
      assert.equal(250, code, line)
      assert.same({}, asked_lists(env, "127.0.0.12", mark))
    end)

  it("lets the private blacklist (range [127.0.0.12-14]) decide before the DNSWL, with one %s <- the IP", function()
    local mark, logmark = env.ns:mark(), env.srv:log_mark()
    local code, line = mail_reply(env, "127.0.0.13")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Host 127.0.0.13 is on our private blacklist (%s, 100%)", line)
    assert.same({}, asked_lists(env, "127.0.0.13", mark))
    assert.truthy(env.srv:wait_log("rule=filters blacklist listed ip=127.0.0.13 name=- site=PrivateBlacklist "
      .. "action=reject", 2, logmark, true), env.srv:log():sub(logmark + 1))
  end)

  it("matches a CIDR entry of the private blacklist ([127.0.1.0/24])", function()
    local code, line = mail_reply(env, "127.0.1.5")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Host 127.0.1.5 is on our private blacklist (%s, 100%)", line)
  end)

  it("matches a per-octet wildcard entry of the private blacklist ([127.0.2.*])", function()
    local code, line = mail_reply(env, "127.0.2.9")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Host 127.0.2.9 is on our private blacklist (%s, 100%)", line)
  end)

  it("matches a host-name entry of the private blacklist against the verified name (spammer.isp.test)", function()
    local code, line = mail_reply(env, "127.0.0.15")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Host 127.0.0.15 is on our private blacklist (%s, 100%)", line)
  end)

  it("does not filter an internal host (not subject to relay enforcement) though it is listed", function()
    local mark = env.ns:mark()
    local code, line = mail_reply(env, "127.0.0.10")
    assert.equal(250, code, line)
    assert.same({}, asked_lists(env, "127.0.0.10", mark))
  end)

  it("does not filter an IPv6 client ([::1] in the private blacklist): the filters are IPv4 only", function()
    local c = env.connect("::1")
    c:greet("v6.client.test")
    local code, lines = c:cmd("MAIL FROM:<sender@example.org>")
    assert.equal(250, code, lines and lines.text)
  end)
end)

describe("the filters' tag action", function()
  local env = dns.world(RECORDS, { config = { inbound = {
    dnsbl = { enabled = true, sites = { "bl.one.test" }, action = "tag" },
    dnswl = { enabled = true, sites = { "wl.dnswl.test" }, action = "tag" },
    blacklist = { enabled = true, hosts = { "[127.0.0.20]" }, action = "tag" },
    whitelist = { enabled = true, hosts = { "[127.0.0.21]" }, action = "tag" },
  } } })

  it("adds X-DNSBLSite: <site> to every message of a DNSBL-listed client's session", function()
    local mark = env.srv:log_mark()
    local texts = deliver(env, "127.0.0.5", { "dnsbl tag 1", "dnsbl tag 2" })
    for _, t in ipairs(texts) do
      assert.truthy(header_block(t):find("\nX-DNSBLSite: bl.one.test\n", 1, true), t)
      assert.is_nil(header_block(t):find("X-DNSWLSite", 1, true), t)
    end
    assert.truthy(env.srv:wait_log("rule=filters dnsbl listed ip=127.0.0.5 name=dyn5.isp.test site=bl.one.test "
      .. "action=tag", 2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("adds X-DNSWLSite: <site> for a DNSWL-listed client, and no X-DNSBLSite though it is at bl.one.test", function()
    local t = deliver(env, "127.0.0.11", { "dnswl tag" })[1]
    assert.truthy(header_block(t):find("\nX-DNSWLSite: wl.dnswl.test\n", 1, true), t)
    assert.is_nil(header_block(t):find("X-DNSBLSite", 1, true), t)
  end)

  it("adds X-DNSBLSite: PrivateBlacklist for the private blacklist", function()
    local t = deliver(env, "127.0.0.20", { "private blacklist tag" })[1]
    assert.truthy(header_block(t):find("\nX-DNSBLSite: PrivateBlacklist\n", 1, true), t)
  end)

  it("adds X-DNSWLSite: PrivateWhitelist for the private whitelist", function()
    local t = deliver(env, "127.0.0.21", { "private whitelist tag" })[1]
    assert.truthy(header_block(t):find("\nX-DNSWLSite: PrivateWhitelist\n", 1, true), t)
  end)

  it("adds no tag for a client that no list names", function()
    local t = deliver(env, "127.0.0.2", { "no tag" })[1]
    assert.is_nil(t:find("X-DNS", 1, true), t)
  end)
end)

describe("the filters with the default text, a DNSBL that times out and the private blacklist's log action",
  function()
    local records = {}
    for k, v in pairs(RECORDS) do records[k] = v end
    records.timeout = { "bl.slow.test" }
    -- bl.unserved.example is in no zone of the dnsmasq: it answers REFUSED, which luamta counts as SERVFAIL
    local env = dns.world(records, { config = { inbound = {
      dnsbl = { enabled = true, sites = { "bl.slow.test", "bl.unserved.example", "bl.one.test" }, action = "reject" },
      blacklist = { enabled = true, hosts = { "[127.0.0.20]" } },
    } } })

    it("counts a site that times out as not listing the client, logs it, and takes and delivers the mail", function()
      local mark = env.srv:log_mark()
      local texts = deliver(env, "127.0.0.2", { "slow list" })
      assert.equal(1, #texts)
      assert.truthy(env.srv:wait_log("rule=filters dnsbl site=bl.slow.test ip=127.0.0.2 lookup=timeout counted as "
        .. "not listed", 2, mark, true), env.srv:log():sub(mark + 1))
    end)

    it("counts a site that answers SERVFAIL as not listing the client, and logs it", function()
      local mark = env.srv:log_mark()
      local code, line = mail_reply(env, "127.0.0.2")
      assert.equal(250, code, line)
      assert.truthy(env.srv:wait_log("rule=filters dnsbl site=bl.unserved.example ip=127.0.0.2 lookup=servfail "
        .. "counted as not listed", 2, mark, true), env.srv:log():sub(mark + 1))
    end)

    it("asks the next site after a timeout, and refuses with the default text 550 5.7.1 Connection denied for "
       .. "policy reasons", function()
      local code, line = mail_reply(env, "127.0.0.5")
      assert.equal(550, code)
      assert.equal("550 5.7.1 Connection denied for policy reasons", line)
    end)

    it("logs a private blacklist match with the default action (log), takes the mail and asks no DNSBL", function()
      local mark, nsmark = env.srv:log_mark(), env.ns:mark()
      deliver(env, "127.0.0.20", { "private blacklist log" })
      assert.truthy(env.srv:wait_log("rule=filters blacklist listed ip=127.0.0.20 name=- site=PrivateBlacklist "
        .. "action=log", 2, mark, true), env.srv:log():sub(mark + 1))
      assert.same({}, asked_lists(env, "127.0.0.20", nsmark))
    end)
  end)

describe("the filters' log action (the default for inbound.dnsbl)", function()
  local env = dns.world(RECORDS, { config = { inbound = {
    dnsbl = { enabled = true, sites = { "bl.one.test" } },
    dnswl = { enabled = true, sites = { "wl.dnswl.test" }, action = "log" },
  } } })

  it("takes a DNSBL-listed client's mail, untagged, and logs its IP, verified name and site", function()
    local mark = env.srv:log_mark()
    local t = deliver(env, "127.0.0.5", { "dnsbl log" })[1]
    assert.is_nil(t:find("X-DNS", 1, true), t)
    assert.truthy(env.srv:wait_log("rule=filters dnsbl listed ip=127.0.0.5 name=dyn5.isp.test site=bl.one.test "
      .. "action=log", 2, mark, true), env.srv:log():sub(mark + 1))
  end)

  it("logs a DNSWL-listed client and then asks no DNSBL (the first list that matches decides)", function()
    local mark, nsmark = env.srv:log_mark(), env.ns:mark()
    deliver(env, "127.0.0.11", { "dnswl log" })
    assert.truthy(env.srv:wait_log("rule=filters dnswl listed ip=127.0.0.11 name=- site=wl.dnswl.test action=log",
      2, mark, true), env.srv:log():sub(mark + 1))
    assert.same({ "wl.dnswl.test" }, asked_lists(env, "127.0.0.11", nsmark))
  end)
end)
