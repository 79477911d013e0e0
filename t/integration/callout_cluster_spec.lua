-- t/integration/callout_cluster_spec.lua: two luamta nodes share greylisting through one redis-server (docs/callouts.md).
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local redis = require "t.helpers.redis"
local socket = require "socket"

local function rcpt_reply(srv, from, to)
  local c = assert(smtp.connect(srv.host, srv.port))
  assert.equal(220, (c:read_reply()))
  c:send("EHLO client.test\r\n")
  assert.equal(250, (c:read_reply(10)))
  c:send("MAIL FROM:<" .. from .. ">\r\n")
  assert.equal(250, (c:read_reply(10)))
  c:send("RCPT TO:<" .. to .. ">\r\n")
  local _, lines = c:read_reply(10)
  c:close()
  return lines and lines[1]
end

describe("greylist on two nodes with one Redis", function()
  local a, b, mem, rs

  setup(function()
    rs = redis.start()
    local config = {
      server = { extra_rules = { "greylist" } },
      inbound = { relay = { enforce = "all" } },
      redis = { shared = { address = rs.address, failures = 100 } },
      greylist = { delay = 1, redis = "shared", on_error = "tempfail" },
    }
    a = server.start({ config = config })
    b = server.start({ config = config })
    mem = server.start({ config = { server = { extra_rules = { "greylist" } }, inbound = { relay = { enforce = "all" } },
      greylist = { delay = 1 } } })
  end)

  teardown(function()
    for _, s in ipairs { a, b, mem } do s:cleanup() end
    if rs then rs:cleanup() end
  end)

  it("answers 451 on node A and accepts the retry after the delay on node B", function()
    assert.equal("451 4.7.1 Greylisted, please try again later", rcpt_reply(a, "x@sender.test", "jdoe@example.test"))
    socket.sleep(1.3)
    assert.matches("^250 ", rcpt_reply(b, "x@sender.test", "jdoe@example.test"))
    assert.matches("^250 ", rcpt_reply(a, "x@sender.test", "jdoe@example.test"))
    assert.truthy(a:log():find("greylist triplet=127.0.0.0/24,x@sender.test,jdoe@example.test", 1, true))
  end)

  it("keeps the state in memory without greylist.redis", function()
    assert.equal("451 4.7.1 Greylisted, please try again later", rcpt_reply(mem, "y@sender.test", "jdoe@example.test"))
    socket.sleep(1.3)
    assert.matches("^250 ", rcpt_reply(mem, "y@sender.test", "jdoe@example.test"))
  end)

  it("applies greylist.on_error when Redis is down", function()
    rs:stop()
    assert.equal("451 4.3.0 Temporary failure, try again later", rcpt_reply(a, "z@sender.test", "jdoe@example.test"))
    assert.truthy(a:wait_log('callout service="greylist redis shared"', 5, nil, true))
  end)

  it("makes luamta check warn about a greylist in memory with several workers, and refuse an unknown redis", function()
    local p = server.prepare({ config = { server = { workers = 2, extra_rules = { "greylist" } } } })
    local out, rc = p:luamta("check")
    assert.equal(0, rc, out)
    assert.matches("greylist: no greylist.redis, so each worker keeps its own greylist", out, 1, true)
    p:cleanup()
    local q = server.prepare({ config = { server = { extra_rules = { "greylist" } }, greylist = { redis = "nope" } } })
    out, rc = q:luamta("check")
    assert.are_not.equal(0, rc)
    assert.matches("greylist.redis: no redis.nope in the configuration", out, 1, true)
    q:cleanup()
  end)
end)

describe("ratelimit on two nodes with one Redis", function()
  local a, b, rs

  setup(function()
    rs = redis.start()
    local config = {
      server = { extra_rules = { "ratelimit" } },
      redis = { default = { address = rs.address } },
      ratelimit = { redis = "default", limits = { { key = "ip", messages = 3, window = 60 },
        { key = "sender", recipients = 2, window = 60 } } },
    }
    a = server.start({ config = config })
    b = server.start({ config = config })
  end)

  teardown(function()
    for _, s in ipairs { a, b } do s:cleanup() end
    if rs then rs:cleanup() end
  end)

  local function mail(c, from)
    c:send("MAIL FROM:<" .. from .. ">\r\n")
    local _, lines = c:read_reply(10)
    return lines[1]
  end

  it("counts messages per client IP across both nodes", function()
    local ca, cb = assert(smtp.connect(a.host, a.port)), assert(smtp.connect(b.host, b.port))
    for _, c in ipairs { ca, cb } do
      assert.equal(220, (c:read_reply()))
      c:send("EHLO client.test\r\n")
      assert.equal(250, (c:read_reply(10)))
    end
    assert.matches("^250 ", mail(ca, "one@sender.test"))
    ca:send("RSET\r\n") ca:read_reply(10)
    assert.matches("^250 ", mail(cb, "two@sender.test"))
    cb:send("RSET\r\n") cb:read_reply(10)
    assert.matches("^250 ", mail(ca, "three@sender.test"))
    ca:send("RSET\r\n") ca:read_reply(10)
    assert.equal("450 4.7.1 Rate limit exceeded, please try again later", mail(cb, "four@sender.test"))
    assert.truthy(b:wait_log("ratelimit key=ip subject=127.0.0.1 messages=4 limit=3", 5, nil, true))
    ca:close()
    cb:close()
  end)

  it("lets mail through when Redis is down and on_error is accept", function()
    rs:stop()
    local c = assert(smtp.connect(a.host, a.port))
    assert.equal(220, (c:read_reply()))
    c:send("EHLO client.test\r\n")
    assert.equal(250, (c:read_reply(10)))
    assert.matches("^250 ", mail(c, "five@sender.test"))
    c:close()
    assert.truthy(a:wait_log('callout service="ratelimit redis default"', 5, nil, true))
    assert.truthy(a:log():find("on_error=accept", 1, true))
  end)
end)
