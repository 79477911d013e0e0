-- t/integration/hostile_auth_spec.lua - hostile AUTH responses (issue 8): credentials with a NUL inside or a PLAIN
-- response with more than three fields are malformed (501), never cut at the NUL and checked; AUTH lines and the
-- answers to 334 may be 12 288 octets long (RFC 4954 4) while other command lines keep 512; an answer longer than
-- that ends the AUTH exchange, and the session takes commands again. Under TLS through t/helpers/certs.lua's
-- proxy; every test that could fail an AUTH connects from its own 127.0.0.x (failures are counted per address).
local server = require "t.helpers.server"
local certs = require "t.helpers.certs"
local mime = require "mime"

local PASSWORD = "Tr0ub4dor&3-spec"
local MALFORMED = "501 5.5.2 Error: malformed AUTH response"
local MALFORMED_PLAIN = "501 5.5.2 Error: malformed AUTH PLAIN response"

local function b64(s) return (mime.b64(s)) end

describe("hostile AUTH responses", function()
  local w = { clients = {}, proxies = {} }

  setup(function()
    w.pki = certs.new { expired = false }
    w.srv = server.start { config = {
      tls = { cert = w.pki.cert, key = w.pki.key },
      directory = { users = {
        { address = "postmaster@example.test" },
        { address = "jdoe@example.test", password = certs.crypt(PASSWORD) },
      } },
    } }
  end)
  teardown(function()
    for _, c in ipairs(w.clients) do c:close() end
    for _, p in pairs(w.proxies) do p:stop() end
    if w.srv then w.srv:cleanup() end
    if w.pki then w.pki:cleanup() end
  end)

  -- tls(ip) -> a client under TLS (EHLO said again), connecting from ip
  local function tls(ip)
    ip = ip or "127.0.0.1"
    if not w.proxies[ip] then w.proxies[ip] = certs.proxy(w.srv.port, "starttls", { bind = ip }) end
    local c = certs.session(w.proxies[ip])
    w.clients[#w.clients + 1] = c
    return c
  end

  it("the right password still logs in (the baseline for what follows)", function()
    local c = tls()
    assert.equal(235, (c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0" .. PASSWORD))))
  end)

  it("AUTH PLAIN with a fourth field after the password is malformed: 501, not logged in", function()
    local c = tls("127.0.0.41")
    local code, lines = c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0" .. PASSWORD .. "\0junk"))
    assert.equal(501, code, lines and lines.text)
    assert.equal(MALFORMED_PLAIN, lines[1])
    -- not authenticated: a second AUTH is allowed (it would be 503 already authenticated)
    assert.equal(235, (c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0" .. PASSWORD))))
  end)

  it("AUTH PLAIN with a NUL inside the password (after a 334) is malformed", function()
    local c = tls("127.0.0.42")
    assert.equal(334, (c:cmd("AUTH PLAIN")))
    local code, lines = c:cmd(b64("jdoe@example.test\0jdoe@example.test\0" .. PASSWORD .. "\0\0"))
    assert.equal(501, code, lines and lines.text)
    assert.equal(MALFORMED_PLAIN, lines[1])
  end)

  it("AUTH PLAIN with an authzid that differs from the authcid is refused with 501", function()
    local c = tls("127.0.0.43")
    local code, lines = c:cmd("AUTH PLAIN " .. b64("jdoe@example.test.evil\0jdoe@example.test\0" .. PASSWORD))
    assert.equal(501, code, lines and lines.text)
  end)

  it("AUTH LOGIN with a password followed by NUL and junk is malformed: 501, not logged in", function()
    local c = tls("127.0.0.44")
    assert.equal(334, (c:cmd("AUTH LOGIN")))
    assert.equal(334, (c:cmd(b64("jdoe@example.test"))))
    local code, lines = c:cmd(b64(PASSWORD .. "\0junk"))
    assert.equal(501, code, lines and lines.text)
    assert.equal(MALFORMED, lines[1])
    assert.equal(235, (c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0" .. PASSWORD))), "not logged in before")
  end)

  it("AUTH LOGIN with a NUL in the user name is malformed", function()
    local c = tls("127.0.0.45")
    local code, lines = c:cmd("AUTH LOGIN " .. b64("jdoe@example.test\0x"))
    assert.equal(501, code, lines and lines.text)
    assert.equal(MALFORMED, lines[1])
    assert.equal(250, (c:cmd("NOOP")), "the AUTH exchange is over")
  end)

  it("takes an AUTH PLAIN line of 1 200 octets (RFC 4954: up to 12 288), while NOOP keeps its 512", function()
    local c = tls("127.0.0.46")
    local line = "AUTH PLAIN " .. b64(("x"):rep(800) .. "\0jdoe@example.test\0" .. PASSWORD)
    assert.is_true(#line > 1000)
    local code, lines = c:cmd(line)
    assert.equal(MALFORMED_PLAIN, lines[1], "parsed, not refused as too long")
    code, lines = c:cmd("NOOP " .. ("x"):rep(600))
    assert.equal(500, code)
    assert.equal("500 5.5.2 Error: line too long", lines[1])
    code, lines = c:cmd("AUTH PLAIN " .. ("QUFB"):rep(3100))   -- 12 411 octets with the CRLF
    assert.equal(500, code, lines and lines.text)
    assert.equal("500 5.5.2 Error: line too long", lines[1])
    assert.equal(250, (c:cmd("NOOP")))
  end)

  it("takes a 5 000-octet answer to 334 as the answer", function()
    local c = tls("127.0.0.47")
    assert.equal(334, (c:cmd("AUTH PLAIN")))
    local code, lines = c:cmd(b64(("y"):rep(3600) .. "\0jdoe@example.test\0" .. PASSWORD))
    assert.equal(MALFORMED_PLAIN, lines[1], "parsed, not refused as too long")
    assert.equal(501, code)
  end)

  it("an answer to 334 over 12 288 octets ends the AUTH exchange: 500, and the next NOOP gets 250", function()
    local c = tls("127.0.0.48")
    assert.equal(334, (c:cmd("AUTH PLAIN")))
    local code, lines = c:cmd(("QUFB"):rep(3500))
    assert.equal(500, code, lines and lines.text)
    assert.equal("500 5.5.6 Error: authentication exchange line is too long", lines[1])
    code, lines = c:cmd("NOOP")
    assert.equal(250, code, lines and lines.text)
    assert.equal(235, (c:cmd("AUTH PLAIN " .. b64("\0jdoe@example.test\0" .. PASSWORD))))
  end)
end)
