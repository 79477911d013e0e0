-- t/integration/hostile_params_spec.lua - MAIL/RCPT parameters and HELO names that are accepted by a lax parser
-- but should not be (issue 8), answered as Postfix does: duplicate parameters (501 5.5.4), AUTH= where AUTH is not
-- offered (555 5.5.4), SIZE that is not all digits (501 5.5.4) or does not fit (552 5.3.4), addresses that are not
-- UTF-8 under SMTPUTF8 (501 5.1.7 / 5.1.3), and 8-bit HELO/EHLO names (501 5.5.2), which would otherwise be
-- written raw into the Received header.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"

describe("hostile MAIL and RCPT parameters", function()
  local srv, clients = nil, {}

  setup(function() srv = server.start {} end)
  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if srv then srv:cleanup() end
  end)

  local function session(helo)
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    clients[#clients + 1] = c
    c:greet(helo)
    return c
  end

  -- mail(args) -> code, first line of the reply to MAIL FROM:<alice@example.org> args, in a new session
  local function mail(args)
    local c = session()
    local code, lines = c:cmd("MAIL FROM:<alice@example.org>" .. args)
    return code, lines and lines[1], c
  end

  it("refuses a duplicate parameter with 501 5.5.4", function()
    for _, args in ipairs { " SIZE=1 SIZE=2", " BODY=8BITMIME BODY=7BIT", " SMTPUTF8 SMTPUTF8",
                            " SIZE=10 BODY=7BIT size=10" } do
      local code, line = mail(args)
      assert.equal(501, code, args)
      assert.equal("501 5.5.4 Duplicate parameter", line, args)
    end
    local code, line = mail(" SIZE=1 BODY=7BIT")
    assert.equal(250, code, line)
  end)

  it("refuses AUTH= where AUTH is not offered (in the clear) with 555 5.5.4, as Postfix without SASL", function()
    local code, line = mail(" AUTH=<>")
    assert.equal(555, code, line)
    assert.equal("555 5.5.4 Unsupported option: AUTH", line)
  end)

  it("takes only digits in SIZE: 501 5.5.4 Bad message size syntax", function()
    for _, v in ipairs { "+100", "-1", "-99999999999999999999", "1e3", "0x10", "12a" } do
      local code, line = mail(" SIZE=" .. v)
      assert.equal(501, code, v)
      assert.equal("501 5.5.4 Bad message size syntax", line, v)
    end
    local code, line = mail(" SIZE")
    assert.equal(501, code, line)
  end)

  it("refuses a SIZE too big to count with 552 5.3.4, and takes a small one", function()
    for _, v in ipairs { "18446744073709551616", "99999999999999999999999999999999" } do
      local code, line = mail(" SIZE=" .. v)
      assert.equal(552, code, v)
      assert.equal("552 5.3.4 Message size exceeds fixed limit", line, v)
    end
    assert.equal(250, (mail(" SIZE=0")))
    assert.equal(250, (mail(" SIZE=000100")))
  end)

  it("refuses an address that is not UTF-8 under SMTPUTF8 (501), and takes one that is", function()
    for _, a in ipairs { "j\195rn@example.org", "\255@example.org", "a@b\192\175c.example",
                         "\237\160\128@example.org", "a@\244\144\128\128.example" } do
      local c = session()
      local code, lines = c:cmd("MAIL FROM:<" .. a .. "> SMTPUTF8")
      assert.equal(501, code, a)
      assert.equal("501 5.1.7 Bad sender address syntax", lines[1])
    end
    local c = session()
    assert.equal(250, (c:cmd("MAIL FROM:<j\195\182rg@example.org> SMTPUTF8")))
    local code, lines = c:cmd("RCPT TO:<\254\254@example.test>")
    assert.equal(501, code)
    assert.equal("501 5.1.3 Bad recipient address syntax", lines[1])
    assert.equal(250, (c:cmd("RCPT TO:<jdoe@example.test>")))
  end)

  it("refuses an 8-bit HELO or EHLO name with 501 5.5.2, and takes its A-label", function()
    for _, verb in ipairs { "HELO", "EHLO" } do
      local c = assert(smtp.connect("127.0.0.1", srv.port))
      clients[#clients + 1] = c
      assert.equal(220, (c:read_reply()))
      for _, name in ipairs { "m\195\188nchen.example", "bad\255name.example" } do
        local code, lines = c:cmd(verb .. " " .. name)
        assert.equal(501, code, name)
        assert.matches("^501 5%.5%.2 ", lines[1])
      end
      assert.equal(503, (c:cmd("MAIL FROM:<alice@example.org>")), "no HELO was taken")
    end
    local c = session("xn--mnchen-3ya.example")
    local code, lines = smtp.send_mail(c, "alice@example.org", "jdoe@example.test", smtp.message({ "Subject: x" }, "x\r\n"))
    assert.equal(250, code, lines and lines.text)
    local files = srv:wait_maildir("jdoe", nil, 1, 5)
    local m = assert(files[1], "delivered").content
    assert.truthy(m:find("Received: from xn--mnchen-3ya.example (", 1, true), m)
  end)
end)
