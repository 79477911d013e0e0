-- t/integration/domino_example_spec.lua - examples/domino.lua as shipped (every Domino field set), booted with only
-- its paths, its SMTP port and its resolver (127.0.0.1:5353 in the file) moved to the test's temp dir, a free
-- port and the test's dnsmasq: `luamta check` passes and the controls answer as docs/domino.md says.
local dns = require "t.helpers.dns"
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

local EXAMPLE = "examples/domino.lua"

-- 127.0.0.5 is listed at bl.dnsbl.test and 127.0.0.11 at wl.dnswl.test (the example's sites); partner.test and
-- acme.test have MX records, so that verify_domain takes their senders.
local RECORDS = {
  mx = { ["partner.test"] = "mx.partner.test", ["acme.test"] = "mailhub.acme.test" },
  lists = { ["bl.dnsbl.test"] = { "127.0.0.5", "127.0.0.11" }, ["wl.dnswl.test"] = { "127.0.0.11" } },
}

-- replace_once(text, old, new) -> text with the one occurrence of old replaced; fails when the example changed
local function replace_once(text, old, new)
  local i, j = text:find(old, 1, true)
  assert(i, EXAMPLE .. " no longer contains " .. old)
  assert(not text:find(old, j + 1, true), EXAMPLE .. " contains " .. old .. " twice")
  return text:sub(1, i - 1) .. new .. text:sub(j + 1)
end

describe(EXAMPLE, function()
  local ns, srv
  local clients = {}

  setup(function()
    ns = dns.start(RECORDS)
    local ok, err = pcall(function()
      srv = server.prepare {}
      local text = assert(server.read_file(EXAMPLE))
      text = replace_once(text, '"127.0.0.1:2526"', '"127.0.0.1:' .. srv.port .. '"')
      text = replace_once(text, '"../run/domino-spool"', '"' .. srv.spool .. '"')
      text = replace_once(text, '"../run/domino-rules"', '"' .. srv.rules_dir .. '"')
      text = replace_once(text, '"../run/domino-mailboxes/%d/%u"', '"' .. srv.dir .. '/mailboxes/%d/%u"')
      text = replace_once(text, '"127.0.0.1:5353"', '"' .. ns.server .. '"')
      server.write_file(srv.cfgfile, text)
      srv:launch()
    end)
    if not ok then
      if srv then srv:cleanup() end
      ns:stop()
      error(err, 0)
    end
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
    if ns then ns:stop() end
  end)

  local function session(ip)
    local c = assert(smtp.connect("127.0.0.1", srv.port, { bind = ip }))
    clients[#clients + 1] = c
    c:greet("client.test")
    return c
  end

  -- transaction(ip, from, rcpt) -> code, reply line of the first command that is not accepted (or of RCPT)
  local function transaction(ip, from, rcpt)
    local c = session(ip)
    local code, lines = c:cmd("MAIL FROM:<" .. from .. ">")
    if code == 250 then code, lines = c:cmd("RCPT TO:<" .. rcpt .. ">") end
    c:cmd("QUIT")
    c:close()
    return code, lines and lines[1]
  end

  it("passes luamta check", function()
    local out, rc = srv:luamta("check")
    assert.equal(0, rc, out)
  end)

  it("delivers a stranger's message to jdoe@acme.test", function()
    local c = session("127.0.0.2")
    local code, lines = smtp.send_mail(c, "someone@partner.test", "jdoe@acme.test",
      smtp.message({ "Subject: example" }, "hello\r\n"))
    assert.equal(250, code, lines and lines.text)
    assert.equal(1, #srv:wait_maildir("jdoe", "acme.test", 1))
  end)

  it("refuses a stranger's relay, except to @partner.test", function()
    local code, line = transaction("127.0.0.2", "someone@partner.test", "someone@elsewhere.test")
    assert.equal(554, code)
    assert.equal("554 5.7.1 Relay rejected for policy reasons.", line)
    code, line = transaction("127.0.0.2", "someone@partner.test", "other@partner.test")
    assert.equal(250, code, line)
  end)

  it("lets the excluded host [127.0.0.1] relay", function()
    local code, line = transaction("127.0.0.1", "someone@partner.test", "someone@elsewhere.test")
    assert.equal(250, code, line)
  end)

  it("refuses a DNSBL-listed client at MAIL with the example's text", function()
    local code, line = transaction("127.0.0.5", "someone@partner.test", "jdoe@acme.test")
    assert.equal(550, code)
    assert.equal("550 5.7.1 Your host 127.0.0.5 is listed at bl.dnsbl.test", line)
  end)

  it("skips the DNSBL for a DNSWL-listed client", function()
    local code, line = transaction("127.0.0.11", "someone@partner.test", "jdoe@acme.test")
    assert.equal(250, code, line)
  end)

  it("refuses a denied sender domain, and a sender domain that does not exist", function()
    local code, line = transaction("127.0.0.2", "x@spam.test", "jdoe@acme.test")
    assert.equal(554, code)
    assert.equal("554 5.7.1 Mail from x@spam.test rejected for policy reasons.", line)
    code, line = transaction("127.0.0.2", "x@nowhere.test", "jdoe@acme.test")
    assert.equal(550, code)
    assert.equal("550 5.1.8 Sender domain nowhere.test does not exist", line)
  end)

  it("refuses the denied recipient noreply@acme.test and an unknown local recipient", function()
    local code, line = transaction("127.0.0.2", "someone@partner.test", "noreply@acme.test")
    assert.equal(554, code)
    assert.equal("554 5.7.1 Message rejected for policy reasons.", line)
    code, line = transaction("127.0.0.2", "someone@partner.test", "nobody@acme.test")
    assert.equal(550, code)
    assert.equal("550 5.1.1 nobody@acme.test... No such user", line)
  end)
end)
