-- t/helpers/certs.lua - throwaway TLS material for integration specs, made with the openssl(1) command line in a
-- temp dir, and TLS clients (openssl s_client, Python's ssl/smtplib, swaks, a client-side TLS proxy) run as child
-- processes, bounded.
--
--   local certs = require "t.helpers.certs"
--   local pki = certs.new { cn = "mx.example.test" }   -- a self-signed certificate (no CA) and its key
--   pki.cert, pki.key                -- PEM files: the pair (EC P-256, SAN DNS:<cn>, IP:127.0.0.1, 30 days)
--   pki.other_key                    -- a PEM key that belongs to no certificate here
--   pki.expired_cert, pki.expired_key  -- a pair whose certificate expired in 2020, or nil (pki.expired_why says
--                                      why: this openssl could not back-date one); certs.new { expired = false }
--                                      does not make it
--   pki:pair(name, opts) -> cert, key  -- one more self-signed pair in the dir (opts.cn, opts.days; opts.rsa: an
--                                      RSA-2048 key instead of EC P-256)
--   pki:install(cert, key, dest_cert, dest_key)  -- copy a pair over the files a server reads (for reload)
--   pki:cleanup()                    -- removes the temp dir (unless LUAMTA_KEEP_TMP is set)
--
--   certs.fingerprint(cert_file) / certs.fingerprint_pem(pem_text) -> hex SHA-256 of the DER certificate
--   certs.crypt(password, salt) -> a SHA-512 crypt(3) hash ("$6$...") for directory.users[].password
--   certs.peer(port, opts) -> what Python's ssl sees at 127.0.0.1:port, TLS at once or (opts.starttls) after
--     EHLO and STARTTLS: { ok = boolean, error =, fingerprint =, version = "TLSv1.2", cipher =,
--     greeting = the first line over TLS (implicit TLS only), before = what came in the clear, raw = output }
--   certs.s_client(port, opts) -> output, exit code of openssl s_client -showcerts (opts.starttls: -starttls smtp;
--     opts.input: what it sends after the handshake, default "QUIT"; opts.args: more arguments)
--   certs.swaks(args, timeout) -> output, exit code of swaks with args (a list, quoted here)
--   certs.python(script, args, timeout) -> output (stdout and stderr), exit code of python3 running script
--   certs.fields(output) -> the "key<TAB>value" lines a script printed (\r, \n, \\ escaped), as a table
--   certs.background(script, args, opts) -> a Python script in the background that printed "port N":
--     b.port, b:log(), b:stop()
--   certs.proxy(port, mode, opts) -> a client-side TLS proxy to 127.0.0.1:port (see PROXY below): p.port takes
--     plain connections; mode "starttls" (default) or "implicit"; opts.bind: the address it connects from
--   certs.session(proxy, opts) -> a t.helpers.smtp client through the proxy, under TLS, that said EHLO again
--   certs.stop_all()                 -- every background script still running (a safety net)
--   certs.OPENSSL, certs.SWAKS, certs.PYTHON: the programs (env LUAMTA_OPENSSL, LUAMTA_SWAKS, LUAMTA_PYTHON)
--
-- Every child process runs under timeout(1): nothing here can hang a spec.
local server = require "t.helpers.server"

local sh_quote, run, read_file, write_file = server.sh_quote, server.run, server.read_file, server.write_file

local tools = require "t.helpers.tools"
local M = {}

M.OPENSSL = os.getenv("LUAMTA_OPENSSL") or "openssl"
M.SWAKS = os.getenv("LUAMTA_SWAKS") or "swaks"
M.PYTHON = os.getenv("LUAMTA_PYTHON") or "python3"

local OPENSSL_TIMEOUT = 20

-- openssl(args) -> output, exit code (args: a list of words, each quoted here)
local function openssl(args, input)
  if not os.getenv("LUAMTA_OPENSSL") then tools.need("openssl") end
  local q = {}
  for i, a in ipairs(args) do q[i] = sh_quote(a) end
  local cmd = "timeout -k 2 " .. OPENSSL_TIMEOUT .. " " .. sh_quote(M.OPENSSL) .. " " .. table.concat(q, " ")
  if input then cmd = cmd .. " <" .. sh_quote(input) else cmd = cmd .. " </dev/null" end
  return run(cmd)
end
M.openssl = openssl

local function must(what, out, rc)
  if rc ~= 0 then error("certs helper: " .. what .. " failed (exit " .. tostring(rc) .. "):\n" .. out, 3) end
  return out
end

local Pki = {}
Pki.__index = Pki

-- newkey(path, rsa): an EC P-256 (or with rsa, an RSA-2048) private key, PKCS#8 PEM without a passphrase
function Pki:newkey(path, rsa)
  if rsa then
    must("openssl genpkey", openssl { "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
      "-out", path })
  else
    must("openssl genpkey",
      openssl { "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path })
  end
  return path
end

-- pair(name, opts) -> cert path, key path: a new self-signed certificate (and key) <name>.crt / <name>.key
function Pki:pair(name, opts)
  opts = opts or {}
  local cn = opts.cn or self.cn
  local key = self:newkey(self.dir .. "/" .. name .. ".key", opts.rsa)
  local cert = self.dir .. "/" .. name .. ".crt"
  must("openssl req -x509",
    openssl { "req", "-new", "-x509", "-key", key, "-out", cert, "-days", tostring(opts.days or 30), "-sha256",
              "-subj", "/CN=" .. cn, "-addext", "subjectAltName=DNS:" .. cn .. ",IP:127.0.0.1" })
  return cert, key
end

-- expired(): a pair whose certificate was valid in January 2020 only. `openssl req -x509` takes no past date
-- before OpenSSL 3.4 (-not_before/-not_after); `openssl ca -selfsign` takes -startdate/-enddate everywhere.
function Pki:expired()
  local help = openssl { "req", "-help" }
  local key = self:newkey(self.dir .. "/expired.key")
  local cert = self.dir .. "/expired.crt"
  local subj = "/CN=" .. self.cn
  if help:find("not_before", 1, true) then
    local out, rc = openssl { "req", "-new", "-x509", "-key", key, "-out", cert, "-subj", subj,
                              "-not_before", "20200101000000Z", "-not_after", "20200201000000Z" }
    if rc == 0 then return cert, key end
    self.expired_why = out
  end
  local ca = self.dir .. "/expired-ca"
  run("mkdir -p " .. sh_quote(ca))
  write_file(ca .. "/index.txt", "")
  write_file(ca .. "/serial", "01\n")
  write_file(ca .. "/ca.cnf", table.concat({
    "[ ca ]", "default_ca = d", "[ d ]",
    "database = " .. ca .. "/index.txt", "new_certs_dir = " .. ca, "serial = " .. ca .. "/serial",
    "default_md = sha256", "policy = p", "unique_subject = no", "[ p ]", "commonName = supplied", "",
  }, "\n"))
  local csr = ca .. "/req.csr"
  local out, rc = openssl { "req", "-new", "-key", key, "-subj", subj, "-out", csr }
  if rc == 0 then
    out, rc = openssl { "ca", "-batch", "-config", ca .. "/ca.cnf", "-selfsign", "-keyfile", key, "-in", csr,
                        "-out", cert, "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext" }
  end
  if rc ~= 0 then
    self.expired_why = "openssl cannot back-date a certificate here: " .. out
    return nil
  end
  return cert, key
end

-- new(opts) -> the material described at the top of the file. opts.cn: the certificate's name
-- (default "mx.example.test"); opts.expired = false: do not make the expired pair.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ cn = opts.cn or "mx.example.test" }, Pki)
  self.dir = server.tempdir()
  local ok, err = pcall(function()
    self.cert, self.key = self:pair("server", opts)
    self.other_key = self:newkey(self.dir .. "/other.key")
    if opts.expired ~= false then self.expired_cert, self.expired_key = self:expired() end
  end)
  if not ok then
    self:cleanup()
    error(err, 2)
  end
  return self
end

-- install(cert, key, dest_cert, dest_key): copy a pair over other files (atomically, by rename)
function Pki:install(cert, key, dest_cert, dest_key)
  for _, p in ipairs { { cert, dest_cert }, { key, dest_key } } do
    write_file(p[2] .. ".new", assert(read_file(p[1]), "certs helper: cannot read " .. p[1]))
    assert(os.rename(p[2] .. ".new", p[2]))
  end
end

function Pki:cleanup()
  if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(self.dir)) end
  self.dir = nil
end

-- fingerprint(cert_pem) -> lower-case hex SHA-256 of the DER certificate, no colons
function M.fingerprint(cert)
  local out = must("openssl x509", openssl { "x509", "-in", cert, "-noout", "-fingerprint", "-sha256" })
  local hex = assert(out:match("=%s*([%x:]+)"), "certs helper: no fingerprint in: " .. out)
  return (hex:gsub(":", ""):lower())
end

-- fingerprint_pem(text) -> the same for a certificate given as PEM text (e.g. cut from s_client's output)
function M.fingerprint_pem(text)
  local dir = server.tempdir()
  write_file(dir .. "/cert.pem", text .. "\n")
  local ok, fp = pcall(M.fingerprint, dir .. "/cert.pem")
  run("rm -rf " .. sh_quote(dir))
  if not ok then error(fp, 2) end
  return fp
end

-- crypt(password) -> "$6$<salt>$<hash>" (SHA-512 crypt), made with openssl passwd
function M.crypt(password, salt)
  local out = must("openssl passwd", openssl { "passwd", "-6", "-salt", salt or "luamtaspec", password })
  return (out:gsub("%s+$", ""))
end

-- python(script, args, timeout) -> output (stdout and stderr), exit code
function M.python(script, args, timeout)
  if not os.getenv("LUAMTA_PYTHON") then tools.need("python3") end
  local dir = server.tempdir()
  local path = dir .. "/script.py"
  write_file(path, script)
  local q = {}
  for i, a in ipairs(args or {}) do q[i] = sh_quote(a) end
  local out, rc = run("timeout -k 2 " .. (timeout or 20) .. " " .. sh_quote(M.PYTHON) .. " " .. sh_quote(path)
    .. " " .. table.concat(q, " ") .. " </dev/null")
  run("rm -rf " .. sh_quote(dir))
  return out, rc
end

-- What a TLS client sees: the certificate, version and cipher, over implicit TLS or after STARTTLS.
local PEER = [==[
import hashlib, socket, ssl, sys
port, starttls = int(sys.argv[1]), sys.argv[2] == "1"
res = {"ok": False, "before": ""}
try:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = raw.makefile("rb")
    if starttls:
        res["before"] += f.readline().decode()
        raw.sendall(b"EHLO client.test\r\n")
        while True:
            line = f.readline().decode()
            res["before"] += line
            if not line or line[3:4] != "-":
                break
        raw.sendall(b"STARTTLS\r\n")
        res["before"] += f.readline().decode()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(raw, server_hostname="mx.example.test")
    der = tls.getpeercert(binary_form=True)
    res["fingerprint"] = hashlib.sha256(der).hexdigest()
    res["version"] = tls.version()
    res["cipher"] = tls.cipher()[0]
    tf = tls.makefile("rb")
    if not starttls:
        res["greeting"] = tf.readline().decode().rstrip("\r\n")
    tls.sendall(b"QUIT\r\n")
    res["ok"] = True
except Exception as e:
    res["error"] = type(e).__name__ + ": " + str(e)
for k, v in res.items():
    v = str(v).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    print("%s\t%s" % (k, v))
]==]

-- fields(out) -> the "key<TAB>value" lines the Python scripts print (\r, \n and \\ escaped), as a table
local function fields(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^([%w_]+)\t(.*)$")
    if k then t[k] = v:gsub("\\(.)", { r = "\r", n = "\n", ["\\"] = "\\" }) end
  end
  return t
end
M.fields = fields

-- peer(port, opts) -> { ok, error, fingerprint, version, cipher, greeting, before, raw }
function M.peer(port, opts)
  opts = opts or {}
  local out, rc = M.python(PEER, { tostring(port), opts.starttls and "1" or "0" }, opts.timeout or 15)
  local t = fields(out)
  t.ok = t.ok == "True"
  if rc ~= 0 and not t.error then t.error = "exit " .. tostring(rc) .. ": " .. out end
  t.raw = out
  return t
end

-- s_client(port, opts) -> output, exit code of `openssl s_client` to 127.0.0.1:port; opts.starttls = true adds
-- -starttls smtp; opts.input: text sent after the handshake (default "QUIT\n", which -crlf makes CRLF);
-- opts.args: more arguments
function M.s_client(port, opts)
  opts = opts or {}
  local dir = server.tempdir()
  write_file(dir .. "/in", opts.input or "QUIT\n")
  local args = { "s_client", "-connect", "127.0.0.1:" .. port, "-servername", "mx.example.test", "-showcerts",
                 "-crlf", "-ign_eof" }
  if opts.starttls then
    args[#args + 1] = "-starttls"
    args[#args + 1] = "smtp"
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local q = {}
  for i, a in ipairs(args) do q[i] = sh_quote(a) end
  local out, rc = run("timeout -k 2 " .. (opts.timeout or 15) .. " " .. sh_quote(M.OPENSSL) .. " "
    .. table.concat(q, " ") .. " <" .. sh_quote(dir .. "/in"))
  run("rm -rf " .. sh_quote(dir))
  return out, rc
end

-- swaks(args, timeout) -> output, exit code
function M.swaks(args, timeout)
  local q = {}
  if not os.getenv("LUAMTA_SWAKS") then tools.need("swaks") end
  for i, a in ipairs(args) do
    q[i] = sh_quote(a)
    if a:match("^%-%-tls") then tools.need_perl("Net::SSLeay") end   -- swaks speaks TLS through Net::SSLeay
  end
  return run("timeout -k 2 " .. (timeout or 30) .. " " .. sh_quote(M.SWAKS) .. " " .. table.concat(q, " ")
    .. " </dev/null")
end

-- The TLS proxy -------------------------------------------------------------------------------------------------

-- A client-side TLS terminator: it accepts plain connections on 127.0.0.1 and, for each, connects to the target.
-- implicit: TLS to the target at once. starttls: bytes pass through in the clear until the client has sent a
-- "STARTTLS" line and the target answered it with 220; that reply goes to the client, and from then on the proxy
-- speaks TLS to the target while the client goes on in the clear. Everything the client sent goes to the target
-- exactly as sent (one recv, one sendall), so a command pipelined after STARTTLS reaches the server in the clear,
-- before the handshake, as an attacker's would (CVE-2011-0411). The log says "tls <version> <cipher>" per
-- handshake, or "handshake failed: <why>".
local PROXY = [==[
import re, select, socket, ssl, sys, threading
target, mode, bind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
STARTTLS = re.compile(rb"(^|\n)STARTTLS\r\n", re.I)

def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()

def wrap(sock):
    try:
        t = ctx.wrap_socket(sock, server_hostname="mx.example.test")
        log("tls %s %s" % (t.version(), t.cipher()[0]))
        return t
    except Exception as e:
        log("handshake failed: %s: %s" % (type(e).__name__, e))
        return None

def handle(cli):
    srv = None
    try:
        srv = socket.create_connection(("127.0.0.1", target), timeout=60, source_address=(bind, 0))
        tls = False
        if mode == "implicit":
            srv = wrap(srv)
            if srv is None:
                return
            tls = True
        pending, buf = False, b""
        while True:
            ready = []
            if not (tls and srv.pending()):
                ready, _, _ = select.select([cli, srv], [], [], 300)
                if not ready:
                    return
            if cli in ready:
                data = cli.recv(65536)
                if not data:
                    return
                if not tls and STARTTLS.search(data):
                    pending = True
                srv.sendall(data)
            if srv in ready or (tls and srv.pending()):
                data = srv.recv(65536)
                if not data:
                    if buf:
                        cli.sendall(buf)
                    return
                if not pending:
                    cli.sendall(data)
                    continue
                buf += data
                while pending and b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cli.sendall(line + b"\n")
                    if line.startswith(b"220 "):
                        pending = False
                        srv = wrap(srv)
                        if srv is None:
                            return
                        tls = True
                if not pending and buf:
                    cli.sendall(buf)
                    buf = b""
    except Exception as e:
        log("connection: %s: %s" % (type(e).__name__, e))
    finally:
        for s in (cli, srv):
            try:
                s.close()
            except Exception:
                pass

lsn = socket.socket()
lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsn.bind(("127.0.0.1", 0))
lsn.listen(64)
log("port %d" % lsn.getsockname()[1])
while True:
    c, _ = lsn.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=handle, args=(c,), daemon=True).start()
]==]

local Background = {}
Background.__index = Background

local running = {}   -- background scripts still running, for stop_all()

-- background(script, args, opts) -> a Python script running in its own process group under timeout(1), once it
-- printed "port N" (N becomes b.port): b.dir, b:log() (its output), b:stop(). opts.lifetime: seconds before
-- timeout(1) ends it (default 300); opts.name: its file name in the temp dir.
function M.background(script, args, opts)
  opts = opts or {}
  if not os.getenv("LUAMTA_PYTHON") then tools.need("python3") end
  local self = setmetatable({ dir = server.tempdir() }, Background)
  local name = opts.name or "script"
  self.logfile = self.dir .. "/" .. name .. ".log"
  write_file(self.dir .. "/" .. name .. ".py", script)
  local q = {}
  for i, a in ipairs(args or {}) do q[i] = sh_quote(a) end
  local line = string.format("exec setsid timeout -k 2 %d %s -u %s %s >>%s 2>&1 </dev/null & echo $!",
    opts.lifetime or 300, sh_quote(M.PYTHON), sh_quote(self.dir .. "/" .. name .. ".py"), table.concat(q, " "),
    sh_quote(self.logfile))
  local out = run("sh -c " .. sh_quote(line))
  self.pgid = assert(tonumber(out:match("(%d+)")), "certs helper: no pid from the shell: " .. out)
  running[self] = true
  local port = server.wait_until(function()
    return tonumber((read_file(self.logfile) or ""):match("port (%d+)"))
  end, 10, 0.02)
  if not port then
    local log = self:log()
    self:stop()
    error("certs helper: " .. name .. " did not start:\n" .. log, 2)
  end
  self.port = port
  return self
end

function Background:log()
  return read_file(self.logfile) or ""
end

function Background:stop()
  if self.pgid then
    local pgid = self.pgid
    run("kill -TERM -" .. pgid)
    if not server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02) then
      run("kill -KILL -" .. pgid)
      server.wait_until(function() return #server.group_members(pgid) == 0 end, 3, 0.02)
    end
    self.pgid = nil
  end
  running[self] = nil
  if self.dir and not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(self.dir)) end
  self.dir = nil
end

-- proxy(target_port, mode, opts) -> a running proxy (a background script): p.port (plain, on 127.0.0.1), p.mode,
-- p:log(), p:stop(). mode: "starttls" (default) or "implicit"; opts.bind: the address it connects from (default
-- 127.0.0.1), so that a spec can be a client of its own; opts.lifetime as for background().
function M.proxy(target_port, mode, opts)
  opts = opts or {}
  local p = M.background(PROXY, { tostring(target_port), mode or "starttls", opts.bind or "127.0.0.1" },
    { lifetime = opts.lifetime, name = "proxy" })
  p.mode = mode or "starttls"
  return p
end

-- session(px, opts) -> a t.helpers.smtp client through proxy px that is under TLS and has said EHLO again:
-- greeting, EHLO, STARTTLS (220), EHLO for a "starttls" proxy; greeting and EHLO for an "implicit" one.
-- Raises when a step fails. opts.helo: the EHLO name (default client.test); opts.timeout: per operation.
function M.session(px, opts)
  opts = opts or {}
  local smtp = require "t.helpers.smtp"
  local c = assert(smtp.connect("127.0.0.1", px.port, { timeout = opts.timeout or 5 }))
  local helo = opts.helo or "client.test"
  c:greet(helo)
  if px.mode ~= "implicit" then
    local code, lines = c:cmd("STARTTLS")
    assert(code == 220, "STARTTLS: " .. tostring(lines and lines.text or lines))
    code, lines = c:cmd("EHLO " .. helo)
    assert(code == 250, "EHLO after STARTTLS: " .. tostring(lines and lines.text or lines))
  end
  return c
end

function M.stop_all()
  for p in pairs(running) do pcall(p.stop, p) end
end

-- have(program) -> true when program is on PATH
function M.have(program)
  local _, rc = run("command -v " .. sh_quote(program) .. " >/dev/null")
  return rc == 0
end

-- The last safety net: when the test runner's Lua state closes, any background script a spec forgot is stopped.
M._sentinel = setmetatable({}, { __gc = function() M.stop_all() end })

return M
