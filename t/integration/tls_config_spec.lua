-- t/integration/tls_config_spec.lua - the certificate and key in the configuration (SPEC sections 2 and 3, tls =
-- { cert, key }): `luamta check` on good and bad pairs, a daemon that will not start on a bad pair, listeners that
-- want TLS without a certificate, and `luamta reload` with a renewed certificate (new connections see it, open
-- sessions go on, a bad renewal keeps the old certificate).
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"

describe("luamta check with tls = { cert, key }", function()
  local pki
  local dirs = {}

  setup(function() pki = certs.new { expired = false } end)
  teardown(function()
    for _, d in ipairs(dirs) do server.run("rm -rf " .. server.sh_quote(d)) end
    if pki then pki:cleanup() end
  end)

  -- check(config) -> output, exit code of `luamta check` on a configuration (merged into the defaults)
  local function check(config)
    local s = server.prepare { config = config }
    dirs[#dirs + 1] = s.dir
    return s:luamta("check")
  end

  -- errors(out) -> the "error: " lines of check's output
  local function errors(out)
    local t = {}
    for l in out:gmatch("[^\n]+") do
      if l:find("^error: ") then t[#t + 1] = l end
    end
    return t
  end

  it("exits 0 for a certificate and its own key", function()
    local out, rc = check { tls = { cert = pki.cert, key = pki.key } }
    assert.equal(0, rc, out)
    assert.truthy(out:find("configuration and rules OK", 1, true), out)
  end)

  it("exits 1 for a key that does not belong to the certificate, naming tls.key and both files", function()
    local out, rc = check { tls = { cert = pki.cert, key = pki.other_key } }
    assert.equal(1, rc, out)
    local e = errors(out)
    assert.equal(1, #e, out)
    assert.truthy(e[1]:find("tls.key: " .. pki.other_key .. " does not belong to the certificate in " .. pki.cert,
      1, true), out)
  end)

  it("exits 1 for a certificate file that does not exist, naming tls.cert", function()
    local missing = pki.dir .. "/missing.crt"
    local out, rc = check { tls = { cert = missing, key = pki.key } }
    assert.equal(1, rc, out)
    local e = errors(out)
    assert.equal(1, #e, out)
    assert.truthy(e[1]:find("tls.cert: cannot load " .. missing, 1, true), out)
  end)

  it("exits 1 for a key file that does not exist, naming tls.key", function()
    local missing = pki.dir .. "/missing.key"
    local out, rc = check { tls = { cert = pki.cert, key = missing } }
    assert.equal(1, rc, out)
    assert.truthy(out:find("tls.key: cannot load " .. missing, 1, true), out)
  end)

  it("exits 1 when cert and key are swapped, naming tls.cert", function()
    local out, rc = check { tls = { cert = pki.key, key = pki.cert } }
    assert.equal(1, rc, out)
    assert.truthy(out:find("error: [^\n]*tls%.cert: cannot load " .. pki.key:gsub("%p", "%%%0")), out)
  end)

  it("exits 1 for a cert without a key, naming tls.key", function()
    local out, rc = check { tls = { cert = pki.cert } }
    assert.equal(1, rc, out)
    assert.truthy(out:find("tls.key: missing; expected the private key file that goes with tls.cert", 1, true), out)
  end)

  it("exits 1 for a listener with tls = \"implicit\" and no certificate", function()
    local out, rc = check { server = { listen = { { "127.0.0.1:" .. server.free_port(), tls = "implicit" } } } }
    assert.equal(1, rc, out)
    assert.truthy(out:find('tls: got "implicit" but no certificate is configured', 1, true), out)
  end)

  it("warns about a certificate that has expired, and still exits 0", function()
    local old = certs.new {}
    finally(function() old:cleanup() end)
    if not old.expired_cert then
      pending(old.expired_why or "this openssl cannot back-date a certificate")
      return
    end
    local out, rc = check { tls = { cert = old.expired_cert, key = old.expired_key } }
    assert.equal(0, rc, out)
    assert.truthy(out:find("warning: [^\n]*tls.cert: the certificate in " .. old.expired_cert:gsub("%p", "%%%0")
      .. " has expired"), out)
  end)

  it("will not start when server.user cannot read the key, instead of running without TLS", function()
    -- Everything else is readable by nobody, so only the key stands in the way of the workers.
    local s = server.prepare { config = { server = { user = "nobody" }, tls = { cert = pki.cert, key = pki.key } } }
    dirs[#dirs + 1] = s.dir
    server.run("chmod 755 " .. server.sh_quote(s.dir) .. " " .. server.sh_quote(s.rules_dir) .. " "
      .. server.sh_quote(pki.dir) .. " && chmod 644 " .. server.sh_quote(pki.cert) .. " && chmod 600 "
      .. server.sh_quote(pki.key))
    local ok, err = pcall(s.launch, s, 5)
    local log = s:log()
    s:stop(5)
    assert.is_false(ok, log)
    assert.truthy(log:find("tls.key: cannot load " .. pki.key, 1, true), log)
  end)

  it("will not start the daemon with a key that does not belong to the certificate, and says why", function()
    local ok, err = pcall(server.start, { config = { tls = { cert = pki.cert, key = pki.other_key } } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("does not belong to the certificate", 1, true), tostring(err))
  end)
end)

describe("luamta reload with a renewed certificate", function()
  local pki, srv, px, CERT, KEY
  local clients = {}

  setup(function()
    pki = certs.new { expired = false }
    CERT, KEY = pki.dir .. "/live.crt", pki.dir .. "/live.key"
    pki:install(pki.cert, pki.key, CERT, KEY)
    local IMPLICIT = server.free_port()
    srv = server.start { config = {
      tls = { cert = CERT, key = KEY },
      server = { listen = { "127.0.0.1:" .. server.free_port(), { "127.0.0.1:" .. IMPLICIT, tls = "implicit" } } },
    } }
    srv.implicit = IMPLICIT
    px = certs.proxy(srv.port, "starttls")
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    if px then px:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  -- reload() -> the log text the reload wrote, once the worker has reloaded (raises when `luamta reload` fails)
  local function reload()
    local mark = srv:log_mark()
    local out, rc = srv:luamta("reload")
    assert(rc == 0, "luamta reload: " .. out)
    assert(srv:wait_log("worker %d+: reload", 5, mark), "no reload in the log:\n" .. srv:log():sub(mark + 1))
    return srv:log():sub(mark + 1)
  end

  it("shows new connections the renewed certificate, over STARTTLS and implicit TLS", function()
    local before = certs.peer(srv.port, { starttls = true })
    assert.is_true(before.ok, before.raw)
    assert.equal(certs.fingerprint(pki.cert), before.fingerprint)
    -- a session under TLS opened before the reload
    local open = certs.session(px)
    clients[#clients + 1] = open

    local cert2, key2 = pki:pair("renewed")
    pki:install(cert2, key2, CERT, KEY)
    reload()

    local after = certs.peer(srv.port, { starttls = true })
    assert.is_true(after.ok, after.raw)
    assert.equal(certs.fingerprint(cert2), after.fingerprint)
    local implicit = certs.peer(srv.implicit)
    assert.equal(certs.fingerprint(cert2), implicit.fingerprint)
    local out = certs.s_client(srv.port, { starttls = true })
    local pem = out:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
    assert.truthy(pem, out)
    assert.equal(certs.fingerprint(cert2), certs.fingerprint_pem(pem))

    -- the session opened before goes on under TLS
    local code, lines = smtp.send_mail(open, "someone@example.org", "jdoe@example.test",
      smtp.message({ "Subject: across a reload" }, "still encrypted\r\n"))
    assert.equal(250, code, lines and lines.text)
    local files = srv:wait_maildir("jdoe")
    assert.equal(1, #files)
    assert.truthy(files[1].content:find("(using TLSv1.2 ", 1, true), files[1].content)
  end)

  it("keeps the certificate it has when the renewed key does not match, and says so in the log", function()
    local current = certs.peer(srv.port, { starttls = true }).fingerprint
    assert.truthy(current)
    local cert3 = pki:pair("third")
    pki:install(cert3, pki.other_key, CERT, KEY)
    -- luamta reload checks the pair first and does not send the signal ...
    local out, rc = srv:luamta("reload")
    assert.are_not.equal(0, rc, out)
    assert.truthy(out:find("tls.key", 1, true), out)
    -- ... and a bare SIGHUP (kill -HUP) leaves the running server on the certificate it has.
    local mark = srv:log_mark()
    srv:reload()
    assert(srv:wait_log("worker %d+: reload", 5, mark), "no reload in the log:\n" .. srv:log():sub(mark + 1))
    local log = srv:log():sub(mark + 1)
    assert.truthy(server.wait_until(function()
      return srv:log():find("keeping the certificate already loaded", 1, true)
    end, 2), log)
    local r = certs.peer(srv.port, { starttls = true })
    assert.is_true(r.ok, r.raw)
    assert.equal(current, r.fingerprint)
  end)
end)
