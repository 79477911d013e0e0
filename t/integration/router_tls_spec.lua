-- t/integration/router_tls_spec.lua - STARTTLS from the router to the next hop (SPEC section 6, routing.tls):
-- "opportunistic" (the default) uses it when offered and goes on in the clear when it is not, "none" never uses
-- it, and "required" never sends a message in the clear nor to a next hop whose certificate does not verify.
-- The TLS next hop is a second luamta with a self-signed certificate; the plain one is smtp-sink.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local socket = require "socket"

describe("routing.tls", function()
  local certdir, hop, plain, srv

  setup(function()
    certdir = server.tempdir()
    local out, rc = server.run(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      .. "-keyout %s/key.pem -out %s/cert.pem -days 2 -subj /CN=mx.tls.test "
      .. "-addext subjectAltName=DNS:mx.tls.test"):format(certdir, certdir))
    assert(rc == 0, "openssl: " .. out)
    hop = server.start { config = {
      server = { hostname = "mx.tls.test" },
      tls = { cert = certdir .. "/cert.pem", key = certdir .. "/key.pem" },
      local_domains = { "tls.test" },
      directory = { users = { { address = "bob@tls.test", name = "Bob" } } },
    } }
    plain = sink.start { ip = "127.0.0.46" }
  end)

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hop then hop:cleanup() end
    if plain then plain:stop() end
    if certdir then server.run("rm -rf " .. server.sh_quote(certdir)) end
  end)

  local function start_router(mode)
    srv = server.start { config = sink.router_config { routing = {
      tls = mode,
      routes = { ["tls.test"] = "[127.0.0.1]:" .. hop.port, ["plain.test"] = plain.literal },
    } } }
  end

  -- at_hop(subject, timeout) -> the file in bob@tls.test's Maildir with that subject, waiting up to timeout s (5)
  local function at_hop(subject, timeout)
    return server.wait_until(function()
      for _, f in ipairs(hop:maildir_files("bob", "tls.test")) do
        if f.content:find("\nSubject: " .. subject .. "\n", 1, true) then return f end
      end
    end, timeout or 5, 0.05)
  end

  it("\"opportunistic\" (the default) uses STARTTLS when the next hop offers it", function()
    start_router(nil)
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "bob@tls.test" }, "opportunistic tls")
    local line = sink.wait_line(srv, { qid .. ": to=<bob@tls.test>", "status=sent" }, 8, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find(", tls=TLSv1%.[23] "), "the log names the TLS version: " .. line)
    local f = at_hop("opportunistic tls")
    assert.truthy(f, hop:log())
    assert.truthy(f.content:find("by mx.tls.test (luamta) with ESMTPS id ", 1, true),
      "the hop's Received header says ESMTPS:\n" .. f.content)
  end)

  it("\"opportunistic\" sends in the clear to a next hop that does not offer STARTTLS", function()
    start_router("opportunistic")
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "x@plain.test" }, "clear is fine")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<x@plain.test>", "status=sent" }, 5, mark),
      srv:log():sub(mark + 1))
    assert.equal(1, #plain:find("x@plain.test"))
  end)

  it("\"none\" never uses STARTTLS, even when offered", function()
    start_router("none")
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "bob@tls.test" }, "no tls wanted")
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<bob@tls.test>", "status=sent" }, 5, mark),
      srv:log():sub(mark + 1))
    local f = at_hop("no tls wanted")
    assert.truthy(f, hop:log())
    assert.truthy(f.content:find("by mx.tls.test (luamta) with ESMTP id ", 1, true), f.content)
  end)

  it("\"required\" defers, and sends nothing, when the next hop does not offer STARTTLS", function()
    start_router("required")
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "y@plain.test" }, "tls or nothing")
    local line = sink.wait_line(srv, { qid .. ": to=<y@plain.test>", "status=" }, 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("status=deferred", 1, true), line)
    assert.truthy(line:find("does not offer STARTTLS", 1, true), line)
    socket.sleep(0.3)
    assert.equal(0, #plain:find("y@plain.test"), "nothing in the clear")
  end)

  it("\"required\" defers, and sends nothing, when the next hop's certificate does not verify", function()
    start_router("required")
    local mark = srv:log_mark()
    local qid = sink.send(srv, "alice@example.org", { "bob@tls.test" }, "unverified cert")
    local line = sink.wait_line(srv, { qid .. ": to=<bob@tls.test>", "status=" }, 8, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    assert.truthy(line:find("status=deferred", 1, true), line)
    assert.truthy(line:find("TLS handshake failed", 1, true) and line:find("verification", 1, true), line)
    assert.is_nil(at_hop("unverified cert", 0.5), "nothing delivered")
  end)
end)
