-- t/integration/auth_throttle_spec.lua: the AUTH-failure throttle in Redis (rules/auth_throttle.lua,
-- docs/callouts.md): two luamta nodes and one real redis-server started here; failures on node A make node B
-- refuse the same client address before any password is checked; with Redis stopped, on_error decides. AUTH is
-- under TLS through t/helpers/certs.lua's proxy, each test from its own 127.0.0.x (counts are per address).
local server = require "t.helpers.server"
local certs = require "t.helpers.certs"
local redis = require "t.helpers.redis"
local mime = require "mime"

local PASSWORD = "c0rrect-h0rse-spec"
local THROTTLED = "454 4.7.0 Too many failed authentication attempts, try again later"

local function plain(user, password) return "AUTH PLAIN " .. (mime.b64("\0" .. user .. "\0" .. password)) end

describe("auth_throttle on two nodes with one Redis", function()
  local pki, a, b, rs
  local proxies, clients = {}, {}

  setup(function()
    rs = redis.start()
    pki = certs.new { expired = false }
    local config = {
      server = { extra_rules = { "auth_throttle" } },
      tls = { cert = pki.cert, key = pki.key },
      directory = { users = { { address = "jdoe@example.test", password = certs.crypt(PASSWORD) } } },
      redis = { shared = { address = rs.address, failures = 100, timeout = 1 } },
      auth_throttle = { redis = "shared", failures = 3, window = 60, on_error = "tempfail" },
    }
    a = server.start({ config = config })
    b = server.start({ config = config })
  end)

  teardown(function()
    for _, c in ipairs(clients) do c:close() end
    for _, p in pairs(proxies) do p:stop() end
    for _, s in ipairs { a, b } do if s then s:cleanup() end end
    if rs then rs:cleanup() end
    if pki then pki:cleanup() end
  end)

  -- session(node, ip) -> a client of node under TLS, connecting from ip
  local function session(node, ip)
    local k = node.port .. " " .. ip
    if not proxies[k] then proxies[k] = certs.proxy(node.port, "starttls", { bind = ip }) end
    local c = certs.session(proxies[k], { timeout = 15 })
    clients[#clients + 1] = c
    return c
  end

  local function auth(c, password)
    local _, lines = c:cmd(plain("jdoe@example.test", password), 15)
    return lines and lines[1]
  end

  it("refuses on node B an address that failed on node A, before checking the password", function()
    local ca = session(a, "127.0.0.61")
    for _ = 1, 3 do
      assert.equal("535 5.7.8 Error: authentication failed", auth(ca, "wrong"))
    end
    local cb = session(b, "127.0.0.61")
    assert.equal(THROTTLED, auth(cb, PASSWORD))
    assert.truthy(b:wait_log("auth_throttle ip=127.0.0.61 failures=3 limit=3 window=60", 5, nil, true))
    assert.truthy(b:wait_log("AUTH for sasl_username=jdoe@example.test refused by the rules before the password "
      .. "check", 5, nil, true))
    -- node A refuses it too, and another address still logs in on node B
    assert.equal(THROTTLED, auth(session(a, "127.0.0.61"), PASSWORD))
    assert.matches("^235 ", auth(session(b, "127.0.0.62"), PASSWORD))
  end)

  it("lets an address under the limit log in on the other node", function()
    local ca = session(a, "127.0.0.63")
    assert.equal("535 5.7.8 Error: authentication failed", auth(ca, "wrong"))
    assert.matches("^235 ", auth(session(b, "127.0.0.63"), PASSWORD))
  end)

  it("makes luamta check refuse auth_throttle without Redis or with an unknown one", function()
    local p = server.prepare({ config = { server = { extra_rules = { "auth_throttle" } } } })
    local out, rc = p:luamta("check")
    assert.are_not.equal(0, rc)
    assert.matches("auth_throttle.redis: missing", out, 1, true)
    p:cleanup()
    local q = server.prepare({ config = { server = { extra_rules = { "auth_throttle" } },
      auth_throttle = { redis = "nope" } } })
    out, rc = q:luamta("check")
    assert.are_not.equal(0, rc)
    assert.matches("auth_throttle.redis: no redis.nope in the configuration", out, 1, true)
    q:cleanup()
  end)

  it("applies auth_throttle.on_error when Redis is down", function()
    rs:stop()
    assert.equal("451 4.3.0 Temporary failure, try again later", auth(session(b, "127.0.0.64"), PASSWORD))
    assert.truthy(b:wait_log('callout service="auth_throttle redis shared"', 5, nil, true))
  end)
end)
