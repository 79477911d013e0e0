-- t/integration/callout_http_spec.lua: mta.http.request against a Python HTTP server started here (docs/callouts.md).
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local tools = require "t.helpers.tools"
local socket = require "socket"

-- A keep-alive HTTP/1.1 server: /fast, /slow (3 s), /big (200000 octets), /peer (the client's port); /close (a
-- body that ends at the close), /drop (a kept-alive answer, then the server closes anyway), /bad (no HTTP),
-- /chunkbig (chunked, 120000 octets).
local PY = [[
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("X-Test", "yes")
            self.end_headers()
            self.wfile.write(b"closed")
            self.close_connection = True
            return
        if self.path == "/bad":
            self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True
            return
        if self.path == "/chunkbig":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(2):
                self.wfile.write(b"%x\r\n%s\r\n" % (60000, b"y" * 60000))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/drop": self.close_connection = True
        if self.path == "/slow": time.sleep(3); body = b"slow"
        elif self.path == "/big": body = b"x" * 200000
        elif self.path == "/peer": body = str(self.client_address[1]).encode()
        else: body = b"fast"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        if self.path != "/echo": return self.do_GET()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        body += b" " + (self.headers["Content-Type"] or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
]]

local RULE = [[
local mta = require "luamta"
return { helo = function(s, name)
  local path, timeout = name:match("^([a-z]+)%.(%d*)")
  local port = path == "down" and DOWN or PORT
  local post = path == "echo"
  local status, headers, body = mta.http.request { url = "http://127.0.0.1:" .. port .. "/" .. path,
    timeout = tonumber(timeout), body = post and "posted body" or nil,
    headers = post and { ["Content-Type"] = "text/plain" } or nil }
  if not status then return mta.reject(550, "5.0.0 http error " .. headers) end
  return mta.reject(550, ("5.0.0 http %d %s %s"):format(status, tostring(headers["x-test"]), body))
end }
]]

describe("mta.http.request", function()
  local srv, pypid, port, down

  setup(function()
    local python = tools.need("python3")
    port, down = server.free_port(), server.free_port()
    local dir = server.tempdir()
    server.write_file(dir .. "/httpd.py", PY)
    local out = server.run(("setsid %s %s %d >/dev/null 2>&1 & echo $!"):format(python,
      server.sh_quote(dir .. "/httpd.py"), port))
    pypid = tonumber(out:match("(%d+)"))
    local deadline = socket.gettime() + 10
    repeat
      local c = socket.connect("127.0.0.1", port)
      if c then c:close() break end
      socket.sleep(0.1)
    until socket.gettime() > deadline
    srv = server.start({
      config = { http = { max_response = 100000, failures = 2, cooldown = 2 } },
      rules = { { "caller", (RULE:gsub("DOWN", tostring(down)):gsub("PORT", tostring(port))) } },
    })
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if pypid then os.execute("kill " .. pypid .. " 2>/dev/null") end
  end)

  local function ehlo(c, name, timeout)
    c:send("EHLO " .. name .. "\r\n")
    local code, lines = c:read_reply(timeout or 10)
    return code, lines and lines[1]
  end

  it("gives status, headers and body", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.same({ 550, "550 5.0.0 http 200 yes fast" }, { ehlo(c, "fast.test") })
    c:close()
  end)

  it("does not block another session on the same worker while one waits for a slow answer", function()
    local a = assert(smtp.connect(srv.host, srv.port))
    local b = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (a:read_reply()))
    assert.equal(220, (b:read_reply()))
    local t0 = socket.gettime()
    a:send("EHLO slow.test\r\n")
    socket.sleep(0.2)
    assert.same({ 550, "550 5.0.0 http 200 yes fast" }, { ehlo(b, "fast.test") })
    assert.is_true(socket.gettime() - t0 < 2, "the fast answer waited for the slow one")
    local code, lines = a:read_reply(10)
    assert.equal("550 5.0.0 http 200 yes slow", lines[1])
    assert.is_true(socket.gettime() - t0 >= 2.5)
    a:close()
    b:close()
  end)

  it("reuses its connection for the next request", function()
    local ports = {}
    for i = 1, 2 do
      local c = assert(smtp.connect(srv.host, srv.port))
      assert.equal(220, (c:read_reply()))
      local _, line = ehlo(c, "peer.test")
      ports[i] = line:match("yes (%d+)$")
      assert(ports[i], line)
      c:close()
    end
    assert.is_not_nil(ports[1])
    assert.equal(ports[1], ports[2])
  end)

  it("gives up after the timeout", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    local t0 = socket.gettime()
    assert.same({ 550, "550 5.0.0 http error timeout" }, { ehlo(c, "slow.1.test") })
    local took = socket.gettime() - t0
    assert.is_true(took >= 0.9 and took < 2.5, "took " .. took)
    c:close()
  end)

  it("cuts a response over http.max_response with an error", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.same({ 550, "550 5.0.0 http error response too large" }, { ehlo(c, "big.test") })
    c:close()
  end)

  it("sends a POST body with its headers, twice on the kept connection", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    for _ = 1, 2 do
      assert.same({ 550, "550 5.0.0 http 200 yes posted body text/plain" }, { ehlo(c, "echo.test") })
    end
    c:close()
  end)

  it("reads a body that ends when the server closes the connection", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.same({ 550, "550 5.0.0 http 200 yes closed" }, { ehlo(c, "close.test") })
    assert.same({ 550, "550 5.0.0 http 200 yes fast" }, { ehlo(c, "fast.test") })
    c:close()
  end)

  it("opens a new connection when the server closed the one it kept alive", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    for _ = 1, 3 do
      assert.same({ 550, "550 5.0.0 http 200 yes fast" }, { ehlo(c, "drop.test") })
    end
    assert.same({ 550, "550 5.0.0 http 200 yes fast" }, { ehlo(c, "fast.test") })
    c:close()
  end)

  it("gives an error for an answer that is not HTTP", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.same({ 550, "550 5.0.0 http error invalid response" }, { ehlo(c, "bad.test") })
    c:close()
  end)

  it("cuts a chunked response over http.max_response with an error", function()
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.same({ 550, "550 5.0.0 http error response too large" }, { ehlo(c, "chunkbig.test") })
    c:close()
  end)

  it("opens the circuit breaker after http.failures failures in a row, and closes it after the cool-down", function()
    local replies = {}
    for i = 1, 3 do
      local c = assert(smtp.connect(srv.host, srv.port))
      assert.equal(220, (c:read_reply()))
      replies[i] = select(2, ehlo(c, "down.test"))
      c:close()
    end
    assert.same({ "550 5.0.0 http error connection failed", "550 5.0.0 http error connection failed",
      "550 5.0.0 http error circuit open" }, replies)
    assert.truthy(srv:wait_log('service="http 127.0.0.1:' .. down .. '" breaker=open failures=2', 5, nil, true))
    socket.sleep(2.2)
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    assert.equal("550 5.0.0 http error connection failed", select(2, ehlo(c, "down.test")))
    c:close()
  end)
end)

-- https: a test CA and a server certificate it signed for api.example.test, a self-signed one, and Python https
-- servers (certs.background) on free ports; dnsmasq gives api.example.test and other.example.test 127.0.0.1.
local certs = require "t.helpers.certs"
local dns = require "t.helpers.dns"

local HTTPS_PY = [[
import ssl, sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/slow": time.sleep(3); body = b"slow"
        elif self.path == "/peer": body = str(self.client_address[1]).encode()
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"chun", b"ked"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        else: body = b"fast"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
def serve(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("port %d" % srv.server_address[1], flush=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
serve(sys.argv[1], sys.argv[2])
time.sleep(3600)
]]

-- helo <path>.<case>.test: case "ca" (the CA-signed server, ca_file = the test CA), "self" (the self-signed one,
-- system CA store), "wrong" (the CA-signed server under another name), "noverify" (self-signed, verify = false).
local HTTPS_RULE = [[
local mta = require "luamta"
local urls = { ca = "https://api.example.test:GOOD/", wrong = "https://other.example.test:GOOD/",
  self = "https://api.example.test:SELF/", noverify = "https://api.example.test:SELF/",
  noca = "https://api.example.test:GOOD/" }
return { helo = function(s, name)
  local path, case = name:match("^([a-z]+)%.([a-z]+)%.test$")
  local status, headers, body = mta.http.request { url = urls[case] .. path, timeout = 8,
    ca_file = (case == "ca" or case == "wrong") and "CAFILE" or case == "noca" and "/nonexistent/ca.pem" or nil,
    verify = case ~= "noverify" }
  if not status then return mta.on_error("tempfail", "api", headers) end
  return mta.reject(550, ("5.0.0 https %d %s"):format(status, body))
end }
]]

describe("mta.http.request over https", function()
  local srv, ns, pki, good, self_signed

  setup(function()
    pki = certs.new { cn = "api.example.test", expired = false }
    local dir = pki.dir
    local ca_key = pki:newkey(dir .. "/ca.key")
    local function ok(out, rc) assert(rc == 0, out) end
    ok(certs.openssl { "req", "-new", "-x509", "-key", ca_key, "-out", dir .. "/ca.crt", "-days", "30", "-sha256",
      "-subj", "/CN=luamta test CA", "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign" })
    local key = pki:newkey(dir .. "/api.key")
    ok(certs.openssl { "req", "-new", "-key", key, "-subj", "/CN=api.example.test", "-out", dir .. "/api.csr" })
    server.write_file(dir .. "/ext.cnf", "subjectAltName=DNS:api.example.test\nbasicConstraints=CA:FALSE\n")
    ok(certs.openssl { "x509", "-req", "-in", dir .. "/api.csr", "-CA", dir .. "/ca.crt", "-CAkey", ca_key,
      "-CAcreateserial", "-out", dir .. "/api.crt", "-days", "30", "-sha256", "-extfile", dir .. "/ext.cnf" })
    good = certs.background(HTTPS_PY, { dir .. "/api.crt", key }, { name = "good" })
    self_signed = certs.background(HTTPS_PY, { pki.cert, pki.key }, { name = "self" })
    ns = dns.start { hosts = { ["api.example.test"] = "127.0.0.1", ["other.example.test"] = "127.0.0.1" } }
    local rule = HTTPS_RULE:gsub("GOOD", tostring(good.port)):gsub("SELF", tostring(self_signed.port))
      :gsub("CAFILE", dir .. "/ca.crt")
    srv = server.start({ config = { dns = ns:daemon_config(), server = { workers = 1 } },
      rules = { { "caller", rule } } })
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if good then good:stop() end
    if self_signed then self_signed:stop() end
    if ns then ns:stop() end
    if pki then pki:cleanup() end
  end)

  local function ehlo(name, timeout)
    local c = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (c:read_reply()))
    c:send("EHLO " .. name .. "\r\n")
    local code, lines = c:read_reply(timeout or 15)
    c:close()
    return code, lines and lines[1]
  end

  it("succeeds against a server whose certificate the test CA signed, given that CA as ca_file", function()
    assert.same({ 550, "550 5.0.0 https 200 fast" }, { ehlo("fast.ca.test") })
    assert.same({ 550, "550 5.0.0 https 200 chunked" }, { ehlo("chunked.ca.test") })
  end)

  it("reuses its https connection for the next request", function()
    local _, a = ehlo("peer.ca.test")
    local _, b = ehlo("peer.ca.test")
    assert.truthy(a:match("200 %d+$"), a)
    assert.equal(a, b)
  end)

  it("gives a self-signed server's certificate a verification error, and the rule's failure policy applies", function()
    assert.same({ 451, "451 4.3.0 Temporary failure, try again later" }, { ehlo("fast.self.test") })
    assert.truthy(srv:wait_log('callout service="api" error="certificate verification failed: ', 5, nil, true))
    assert.truthy(srv:wait_log('callout service="https api.example.test:' .. self_signed.port
      .. '" error="certificate verification failed: ', 5, nil, true))
  end)

  it("refuses a certificate for another name than the URL's host", function()
    assert.same({ 451, "451 4.3.0 Temporary failure, try again later" }, { ehlo("fast.wrong.test") })
    assert.truthy(srv:wait_log('service="https other.example.test:' .. good.port
      .. '" error="certificate verification failed: The certificate Common Name (CN) does not match', 5, nil, true))
  end)

  it("gives an error for a ca_file it cannot read", function()
    assert.same({ 451, "451 4.3.0 Temporary failure, try again later" }, { ehlo("fast.noca.test") })
    assert.truthy(srv:wait_log('callout service="api" error="cannot load the CA store /nonexistent/ca.pem: ', 5,
      nil, true))
  end)

  it("talks to a self-signed server only when the call says verify = false", function()
    assert.same({ 550, "550 5.0.0 https 200 fast" }, { ehlo("fast.noverify.test") })
  end)

  it("does not block another session on the same worker while one waits for a slow https answer", function()
    local a = assert(smtp.connect(srv.host, srv.port))
    assert.equal(220, (a:read_reply()))
    local t0 = socket.gettime()
    a:send("EHLO slow.ca.test\r\n")
    socket.sleep(0.2)
    assert.same({ 550, "550 5.0.0 https 200 fast" }, { ehlo("fast.ca.test") })
    assert.is_true(socket.gettime() - t0 < 2, "the fast answer waited for the slow one")
    local _, lines = a:read_reply(10)
    assert.equal("550 5.0.0 https 200 slow", lines[1])
    assert.is_true(socket.gettime() - t0 >= 2.5)
    a:close()
  end)
end)
