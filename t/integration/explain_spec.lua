-- t/integration/explain_spec.lua - traces and `luamta explain ID` (docs/investigating.md): after the
-- fact, with no debug logging, explain tells who connected, what each rule decided and why, which DNS answers it
-- saw, what the client was told and what became of each recipient, for a queue ID or a session ID; traces survive
-- a reload; old and excess trace files are pruned; AUTH credentials never reach a trace; unknown IDs exit 1.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local dns = require "t.helpers.dns"

-- send(port, from, rcpts, opts) -> the queue ID of the accepted message, or nil; the replies seen
local function send(port, from, rcpts, opts)
  local c = assert(smtp.connect("127.0.0.1", port, opts))
  local seen = {}
  local code, lines = c:read_reply()
  seen[#seen + 1] = lines and lines.text
  assert.equal(250, (c:cmd("EHLO client.test")))
  code, lines = c:cmd("MAIL FROM:<" .. from .. ">")
  seen[#seen + 1] = lines.text
  local any = false
  for _, r in ipairs(rcpts) do
    code, lines = c:cmd("RCPT TO:<" .. r .. ">")
    seen[#seen + 1] = lines.text
    any = any or code == 250
  end
  local qid
  if any then
    assert.equal(354, (c:cmd("DATA")))
    code, lines = c:cmd("Subject: explain\r\nMessage-ID: <m1@client.test>\r\n\r\nhello\r\n.")
    qid = lines.text:match("queued as (%w+)")
  end
  c:cmd("QUIT")
  c:close()
  return qid, seen
end

-- session_ids(srv, from) -> the session IDs of the connections logged after offset from
local function session_ids(srv, from)
  local ids = {}
  for line in srv:log():sub((from or 0) + 1):gmatch("[^\n]+") do
    local sid = line:match("connect from .* session=(%x+)") or line:match("(%x+): connect from %[")
    if sid then ids[#ids + 1] = sid end
  end
  return ids
end

local function explain(srv, args)
  return server.luamta("explain -c " .. server.sh_quote(srv.cfgfile) .. " " .. args)
end

-- explained(srv, id, want) -> the output once every plain text of want is in it (traces reach disk within 1 s)
local function explained(srv, id, want)
  local out, rc
  server.wait_until(function()
    out, rc = explain(srv, id)
    for _, w in ipairs(want) do
      if not out:find(w, 1, true) then return false end
    end
    return true
  end, 5, 0.2)
  return out, rc
end

local function assert_has(out, list)
  for _, w in ipairs(list) do assert.truthy(out:find(w, 1, true), "missing: " .. w .. "\n" .. out) end
end

describe("luamta explain", function()
  local srv

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  it("tells the story of a delivered message by queue ID and by session ID, in text and JSON", function()
    srv = server.start {}
    local mark = srv:log_mark()
    local qid = send(srv.port, "a@client.test", { "jdoe@example.test" })
    assert.truthy(qid)
    assert.truthy(srv:wait_maildir("jdoe", "example.test", 1, 10))
    local want = { "connected from 127.0.0.1", "client: MAIL FROM:<a@client.test>", "server: 250 2.1.5",
      "queued as " .. qid .. ": from=<a@client.test>, 1 recipient(s)", "Message " .. qid,
      "to=<jdoe@example.test>: sent via local", "removed from the queue" }
    local out, rc = explained(srv, qid, want)
    assert.equal(0, rc, out)
    assert_has(out, want)
    local ids = session_ids(srv, mark)
    local sid = ids[#ids]             -- the last one: the helper's start-up probe may be logged after mark
    assert.truthy(sid, srv:log())
    local by_session = explained(srv, sid, want)
    assert_has(by_session, want)
    assert_has(by_session, { "Session " .. sid })

    local file = srv.dir .. "/explain.json"
    server.run(server.sh_quote(server.BIN) .. " explain -c " .. server.sh_quote(srv.cfgfile) .. " --json " .. qid
      .. " > " .. server.sh_quote(file))
    local parsed = server.run("python3 -c " .. server.sh_quote([[
import json, sys
d = json.load(open(sys.argv[1]))
print(len(d["records"]), sorted(set(r["event"] for r in d["records"]))[:3])
]]) .. " " .. server.sh_quote(file))
    assert.truthy(parsed:match("^%d+ %['attempt', 'close', 'cmd'%]"), parsed)
  end)

  it("explains a relay-rejected session: the rule, its reason and the reply", function()
    srv = server.start {}
    local mark = srv:log_mark()
    local qid = send(srv.port, "a@client.test", { "x@elsewhere.test" })
    assert.is_nil(qid)
    local sid = server.wait_until(function()
      local ids = session_ids(srv, mark)
      return ids[#ids]
    end, 5, 0.05)
    local want = { "client: RCPT TO:<x@elsewhere.test>",
      "a rule logged: rule=relay action=reject", "reason=deny_to inbound.relay.deny_to[1]",
      "rule relay decided at rcpt: reject -> 554 5.7.1 Relay rejected for policy reasons.",
      "server: 554 5.7.1 Relay rejected for policy reasons.", "disconnected after 0 message(s) and 1 error" }
    local out, rc = explained(srv, sid, want)
    assert.equal(0, rc, out)
    assert_has(out, want)
  end)

  it("shows the DNS answers a rule used and the tag it added (a DNSBL with action tag)", function()
    local ns = dns.start { lists = { ["bl.dnsbl.test"] = { "127.0.0.1" } } }
    finally(function() ns:stop() end)
    srv = server.start {
      config = {
        dns = ns:daemon_config(),
        inbound = { dnsbl = { enabled = true, sites = { "bl.dnsbl.test" }, action = "tag" } },
      },
    }
    local qid = send(srv.port, "a@client.test", { "jdoe@example.test" })
    assert.truthy(qid)
    local want = { "DNS A 1.0.0.127.bl.dnsbl.test: ok 127.0.0.2 (from the network",
      "a rule tagged the session: X-DNSBLSite: bl.dnsbl.test", "queued as " .. qid }
    local out = explained(srv, qid, want)
    assert_has(out, want)
  end)

  it("shows a deferral and a bounce with the next hop's reply", function()
    srv = server.start {
      config = {
        inbound = { relay = { allow_from = { "[127.0.0.1]" } } },
        routing = { relay_host = "[127.0.0.1]:" .. server.free_port() },   -- nobody listens
      },
    }
    local deferred = send(srv.port, "a@client.test", { "x@remote.test" })
    local bounced = send(srv.port, "b@client.test", { "nobody@example.test" })
    assert.truthy(deferred and bounced)
    local out = explained(srv, deferred, { "to=<x@remote.test>: deferred via" })
    assert_has(out, { "to=<x@remote.test>: deferred via", "(dsn 4." })
    out = explained(srv, bounced, { "to=<nobody@example.test>: bounced" })
    assert_has(out, { "to=<nobody@example.test>: bounced", "(dsn 5.1.1)" })
  end)

  it("keeps tracing across a reload, and never writes AUTH credentials", function()
    srv = server.start {}
    local before = send(srv.port, "a@client.test", { "jdoe@example.test" })
    srv:reload()
    local after = send(srv.port, "b@client.test", { "jdoe@example.test" })
    local c = assert(smtp.connect("127.0.0.1", srv.port))
    c:read_reply()
    c:cmd("EHLO client.test")
    c:cmd("AUTH PLAIN AGpkb2UAc2VjcmV0cGFzcw==")
    c:cmd("QUIT")
    c:close()
    assert_has(explained(srv, before, { "queued as " .. before }), { "client: MAIL FROM:<a@client.test>" })
    assert_has(explained(srv, after, { "queued as " .. after }), { "client: MAIL FROM:<b@client.test>" })
    assert.truthy(server.wait_until(function()
      return server.run("cat " .. server.sh_quote(srv.spool) .. "/trace/*.trc"):find("AUTH PLAIN ****", 1, true)
    end, 5, 0.2))
    local all = server.run("cat " .. server.sh_quote(srv.spool) .. "/trace/*.trc")
    assert.falsy(all:find("AGpkb2UAc2VjcmV0cGFzcw", 1, true), "the credentials reached a trace")
  end)

  it("prunes trace files older than trace.keep_days and the oldest past trace.max_mb", function()
    local dir = server.tempdir()
    finally(function() server.run("rm -rf " .. server.sh_quote(dir)) end)
    srv = server.start { dir = dir, config = { trace = { keep_days = 2, max_mb = 1 } } }
    local tdir = srv.spool .. "/trace"
    server.run("mkdir -p " .. server.sh_quote(tdir))
    server.write_file(tdir .. "/2026010100-1.trc", "#luamta-trace 1 old[1]\n")
    server.run("touch -d '10 days ago' " .. server.sh_quote(tdir .. "/2026010100-1.trc"))
    server.run("head -c 2000000 /dev/zero > " .. server.sh_quote(tdir .. "/2000010100-2.trc"))
    server.write_file(tdir .. "/keep.txt", "not a trace file\n")
    srv:restart()                      -- a new process starts a new hourly file: that is when pruning runs
    assert.truthy(send(srv.port, "a@client.test", { "jdoe@example.test" }))
    assert.truthy(server.wait_until(function()
      local ls = server.run("ls " .. server.sh_quote(tdir))
      return not ls:find("2026010100-1.trc", 1, true) and not ls:find("2000010100-2.trc", 1, true)
    end, 5, 0.2), server.run("ls -l " .. server.sh_quote(tdir)))
    assert.truthy(server.run("ls " .. server.sh_quote(tdir)):find("keep.txt", 1, true))
  end)

  it("exits 1 for an ID it has no trace of, and 2 for something that is not an ID", function()
    srv = server.start {}
    local out, rc = explain(srv, "0123456789ABCDEF")
    assert.equal(1, rc, out)
    assert.truthy(out:find("no trace of 0123456789ABCDEF", 1, true), out)
    out, rc = explain(srv, "'x; rm'")
    assert.equal(2, rc, out)
  end)
end)
