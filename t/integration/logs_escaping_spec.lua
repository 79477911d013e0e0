-- t/integration/logs_escaping_spec.lua - nothing a client sends can forge a log line (docs/admin.md, "Logs"):
-- src/core/log.c makes the text of every line printable, so an AUTH user name with CR/LF, a rule's mta.log text
-- with control octets or invalid UTF-8 come out on their own line with '?' in place of each such octet,
-- while valid UTF-8 stays as it is.
local server = require "t.helpers.server"
local certs = require "t.helpers.certs"
local mime = require "mime"

local function b64(s) return (mime.b64(s)) end

local FORGED = "ceo@example.test>, size=999, nrcpt=1 (queue active)"

describe("log escaping", function()
  local pki, srv, px, c

  setup(function()
    pki = certs.new { expired = false }
    srv = server.start {
      config = {
        tls = { cert = pki.cert, key = pki.key },
        directory = { users = {
          { address = "postmaster@example.test" },
          { address = "jdoe@example.test", password = certs.crypt("secret-spec") },
        } },
      },
      rules = { { "noisy", [[
        local mta = require "luamta"
        return { rcpt = function(s, r)
          if r.address:match("^noisy@") then
            mta.log("info", "rule says <" .. s.sender.address .. ">\r\n"
              .. "ABCDEF: removed\1\27[31m\255\192\128.")
            return { action = "reject", code = 550, text = "5.7.1 no" }
          end
        end }
      ]] } },
    }
    px = certs.proxy(srv.port, "starttls")
  end)

  teardown(function()
    if c then c:close() end
    if px then px:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  it("writes an AUTH user name with LF and CR on one line, each control octet as '?'", function()
    local mark = srv:log_mark()
    c = certs.session(px)
    local user = "mallory\nDec  6 21:33:13 mx luamta/smtpd[1]: 0123456789AB: from=<" .. FORGED .. "\r\nx"
    local code = c:cmd("AUTH PLAIN " .. b64("\0" .. user .. "\0wrong"), 15)
    assert.equal(535, code)
    assert.truthy(srv:wait_log("mallory?Dec  6", 5, mark, true))
    local text = srv:log():sub(mark + 1)
    for line in text:gmatch("[^\n]+") do
      assert.falsy(line:match("^Dec  6 21:33:13 mx luamta/smtpd"), "a forged line: " .. line)
      if line:find(FORGED, 1, true) then
        assert.truthy(line:find("mallory?Dec  6 21:33:13", 1, true), line)
        assert.truthy(line:find(FORGED .. "??x", 1, true), line)
      end
    end
    assert.equal(1, #srv:log_lines(FORGED, mark))
    c:close()
    c = nil
  end)

  it("escapes control octets and invalid UTF-8, and keeps valid UTF-8", function()
    local mark = srv:log_mark()
    c = certs.session(px)
    assert.equal(250, (c:cmd("MAIL FROM:<j\195\188rgen@example.org> SMTPUTF8")))
    local code = c:cmd("RCPT TO:<noisy@example.test>")
    assert.equal(550, code)
    local line = srv:wait_log("ABCDEF: removed", 5, mark, true)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("org>??ABCDEF: removed??[31m???.", 1, true), line)
    assert.falsy(line:find("\27", 1, true))
    assert.equal(0, #srv:log_lines("\nABCDEF", mark))
    assert.truthy(line:find("j\195\188rgen@example.org", 1, true), line)
    c:close()
    c = nil
  end)
end)
