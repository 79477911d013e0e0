-- t/integration/dns_spec.lua: the resolver in the core asks a question once, however many sessions wait for it.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local dns = require "t.helpers.dns"

describe("DNS in the core", function()
  local hole, srv

  setup(function()
    hole = dns.blackhole()
    srv = server.start({
      config = {
        dns = { servers = { hole.server }, timeout = 2, tries = 1 },
      },
      rules = { { "lookup", [[
local mta = require "luamta"
return { helo = function(s, name)
  local addrs, err = mta.dns.a("slow.example.test")
  return mta.reject(550, "5.0.0 lookup said " .. tostring(err))
end }
]] } },
    })
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if hole then hole:stop() end
  end)

  it("sends one query for the same name asked by three sessions at once, and all three get its answer", function()
    local clients = {}
    for i = 1, 3 do
      clients[i] = assert(smtp.connect(srv.host, srv.port))
      assert.equal(220, (clients[i]:read_reply()))
    end
    for i = 1, 3 do clients[i]:send("EHLO client" .. i .. ".test\r\n") end
    for i = 1, 3 do
      local code, lines = clients[i]:read_reply(5)
      assert.equal(550, code)
      assert.equal("550 5.0.0 lookup said timeout", lines[1])
      clients[i]:close()
    end
    assert.equal(1, hole:received())
  end)
end)
