-- t/integration/tls_tickets_spec.lua - several certificates and shared session tickets (docs/tls.md): with an RSA
-- and an ECDSA certificate side by side, a client that offers only RSA suites gets the RSA certificate and one that
-- can do ECDSA gets the ECDSA one; a session ticket from one worker resumes on every other (openssl s_client
-- -sess_out / -sess_in over STARTTLS, four workers); a ticket older than two ticket periods is refused with a full
-- handshake; check names a broken or extra pair.
local server = require "t.helpers.server"
local certs = require "t.helpers.certs"

describe("tls certificates and session tickets", function()
  local pki, srv, rsa_cert, rsa_key

  setup(function()
    pki = certs.new { expired = false }
    rsa_cert, rsa_key = pki:pair("rsa", { rsa = true })
  end)

  teardown(function()
    if pki then pki:cleanup() end
  end)

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  local function start(extra)
    local tls = { cert = rsa_cert, key = rsa_key, certs = { { cert = pki.cert, key = pki.key } } }
    for k, v in pairs(extra or {}) do tls[k] = v end
    srv = server.start { config = { server = { workers = 4 }, tls = tls } }
    return srv
  end

  -- hello(args) -> what openssl s_client said about one STARTTLS handshake
  local function hello(args)
    local out = certs.s_client(srv.port, { starttls = true, args = args })
    return out
  end

  it("gives an RSA-only client the RSA certificate and an ECDSA-capable one the ECDSA certificate", function()
    start()
    local out = hello { "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256" }
    assert.truthy(out:find("Server public key is 2048 bit", 1, true), out)
    assert.truthy(out:find("Cipher is ECDHE-RSA-AES128-GCM-SHA256", 1, true), out)
    out = hello { "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" }
    assert.truthy(out:find("Server public key is 256 bit", 1, true), out)
    assert.truthy(out:find("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", 1, true), out)
  end)

  it("resumes a session from its ticket whichever worker the client lands on", function()
    start()
    local sess = srv.dir .. "/session.pem"
    local mark = srv:log_mark()
    local out = hello { "-tls1_2", "-sess_out", sess }
    assert.truthy(out:find("New, TLSv1.2", 1, true), out)
    local reused = 0
    for _ = 1, 12 do
      out = hello { "-tls1_2", "-sess_in", sess }
      if out:find("Reused, TLSv1.2", 1, true) then reused = reused + 1 end
    end
    -- the connections were spread over the workers: otherwise this would prove nothing
    local workers = {}
    for w in srv:log():sub(mark + 1):gmatch("worker (%d+)[^\n]*TLS connection established") do workers[w] = true end
    local n = 0
    for _ in pairs(workers) do n = n + 1 end
    assert.truthy(n >= 2, "every handshake landed on one worker:\n" .. srv:log():sub(mark + 1))
    assert.equal(12, reused)
  end)

  it("does not resume from a ticket older than two ticket periods", function()
    start { ticket_period = 1 }
    local sess = srv.dir .. "/session.pem"
    assert.truthy(hello({ "-tls1_2", "-sess_out", sess }):find("New, TLSv1.2", 1, true))
    assert.truthy(hello({ "-tls1_2", "-sess_in", sess }):find("Reused, TLSv1.2", 1, true))
    require("socket").sleep(2.5)
    local out = hello { "-tls1_2", "-sess_in", sess }
    assert.truthy(out:find("New, TLSv1.2", 1, true), out)
  end)

  it("check names a pair whose key does not fit, and refuses more than four pairs", function()
    local dir = server.tempdir()
    finally(function() server.run("rm -rf " .. server.sh_quote(dir)) end)
    local function check(tls)
      local cfg = server.defaults(dir, server.free_port())
      cfg.tls = tls
      local path = dir .. "/luamta.lua"
      server.write_file(path, server.config_source(cfg))
      return server.luamta("check -c " .. server.sh_quote(path))
    end
    local out, rc = check { cert = rsa_cert, key = rsa_key, certs = { { cert = pki.cert, key = pki.other_key } } }
    assert.equal(1, rc, out)
    assert.truthy(out:find(pki.other_key .. " does not belong to the certificate in " .. pki.cert, 1, true), out)
    local five = {}
    for i = 1, 5 do five[i] = { cert = pki.cert, key = pki.key } end
    out, rc = check { certs = five }
    assert.equal(1, rc, out)
    assert.truthy(out:find("tls.certs: got 5 certificates in all; expected at most 4", 1, true), out)
  end)
end)
