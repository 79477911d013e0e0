-- t/lua/callout_config_spec.lua: the http and redis sections of the configuration (docs/callouts.md).
local config = require "luamta.config"

local FILE = "/etc/luamta/luamta.lua"
local OPTS = { hostname = "mx.example.test", ncpu = 2, sysconfdir = "/etc/luamta", datadir = "/usr/share/luamta" }

local function load(source)
  return config.load_string('server = { spool = "/s" }\n' .. source, "@" .. FILE, OPTS)
end

describe("call out settings", function()
  it("fill the defaults", function()
    local cfg = assert(load('redis = { default = { address = "127.0.0.1:6379" } }\n'))
    assert.same({ timeout = 10, max_response = 1048576, failures = 5, cooldown = 30 }, cfg.http)
    assert.same({ address = "127.0.0.1:6379", db = 0, timeout = 1, pool = 2, failures = 5, cooldown = 30 },
      cfg.redis.default)
    assert.same({}, assert(load("")).redis)
  end)

  it("take a Unix socket", function()
    local cfg = assert(load('redis = { r = { address = "unix:/run/redis/redis.sock", password = "pw", db = 2 } }\n'))
    assert.equal("unix:/run/redis/redis.sock", cfg.redis.r.address)
    assert.equal(2, cfg.redis.r.db)
  end)

  it("refuse a host name, a missing address and unknown keys, with file:line", function()
    local _, errors = load('redis = {\n  default = { address = "redis.example.test:6379" },\n'
      .. '  other = { db = 1 },\n  third = { address = "127.0.0.1:6379", tiemout = 1 },\n}\n')
    local text = table.concat(errors, "\n")
    assert.matches(FILE .. ":3: redis.default.address: got string \"redis.example.test:6379\"; expected \"ip:port\"", text,
      1, true)
    assert.matches(FILE .. ":4: redis.other.address: missing", text, 1, true)
    assert.matches('redis.third.tiemout: unknown key; did you mean "timeout"?', text, 1, true)
  end)

  it("fill the rspamd defaults and take false for a header that is not wanted", function()
    assert.same({ url = "http://127.0.0.1:11333", timeout = 5, max_size = 10485760, on_error = "accept",
      spam_header = "X-Spam", score_header = "X-Spam-Score" }, assert(load("")).rspamd)
    local cfg = assert(load('rspamd = { url = "http://[::1]:11333/checkv2", score_header = false, timeout = 0.5 }\n'))
    assert.is_false(cfg.rspamd.score_header)
    assert.equal(0.5, cfg.rspamd.timeout)
    local _, errors = load("rspamd = {\n  timeout = 7200,\n  on_error = \"drop\",\n}\n")
    local text = table.concat(errors, "\n")
    assert.matches(FILE .. ":3: rspamd.timeout: expected at most 3600 seconds", text, 1, true)
    assert.matches('rspamd.on_error: got string "drop"; expected one of', text, 1, true)
  end)

  it("check http.max_response", function()
    local _, errors = load("http = { max_response = 0 }\n")
    assert.matches("http.max_response: got number 0; expected a whole number >= 1", errors[1], 1, true)
  end)

  it("check ratelimit limits", function()
    local _, errors = load('ratelimit = { limits = {\n  { key = "ip", window = 60 },\n  { key = "helo", messages = 1 },\n} }\n')
    local text = table.concat(errors, "\n")
    assert.matches(FILE .. ":3: ratelimit.limits[1]: expected messages = N, recipients = N or both", text, 1, true)
    assert.matches('ratelimit.limits[2].key: got string "helo"; expected one of', text, 1, true)
    local cfg = assert(load('ratelimit = { limits = { { key = "user", recipients = 5 } } }\n'))
    assert.same({ key = "user", recipients = 5, window = 3600 }, cfg.ratelimit.limits[1])
    assert.equal("accept", cfg.ratelimit.on_error)
  end)
end)
