-- t/integration/queue_surgery_spec.lua - queue surgery as an administrator does it with Postfix's postsuper and
-- postqueue (docs/admin.md, "Queue commands"): `luamta queue delete|hold|release|flush|requeue` and `list` take
-- selectors (IDs, ALL, --from, --to, --domain, --older-than, --state), all of which must match, through the real
-- daemon. The queue holds deferred messages (next hops on closed ports, retry an hour away, so that only a
-- command makes them go), one held by the administrator and one fresh message in its first delivery (to a next
-- hop that never speaks), from different senders to different domains. Each selector picks exactly the right
-- IDs (queue list --json and the dry run say the same), --dry-run changes nothing, a message being delivered
-- is reported, flush --domain delivers only that domain, requeue delivers once the next hop is back, and
-- delete ALL deferred leaves the held message.
local server = require "t.helpers.server"
local sink = require "t.helpers.sink"
local socket = require "socket"
local json = require "dkjson"

local DOWN_IP, OTHER_IP, MUTE_IP = "127.0.0.61", "127.0.0.62", "127.0.0.63"

describe("luamta queue selectors, over held, deferred and fresh messages", function()
  local srv, silent, down, other, down_port, other_port
  local ids, names = {}, {}   -- ids.a1 = queue ID; names[queue ID] = "a1"
  local t_split                -- between the messages sent first and those sent 3 s later

  -- deferred(name, from, rcpts) queues a message and waits until the attempt defers its down.test/other.test
  -- recipient
  local function deferred(name, from, rcpts)
    local mark = srv:log_mark()
    local qid = sink.send(srv, from, rcpts, "surgery " .. name)
    local last = rcpts[#rcpts]
    assert.truthy(sink.wait_line(srv, { qid .. ": to=<" .. last .. ">", "status=deferred" }, 5, mark),
      srv:log():sub(mark + 1))
    ids[name], names[qid] = qid, name
    return qid
  end

  -- listed(args) -> the names of the messages `queue list --json ARGS` gives, sorted, and the list itself
  local function listed(args)
    local out, rc = srv:luamta("queue list --json " .. (args or ""))
    assert.equal(0, rc, out)
    local list, _, err = json.decode(out)
    assert.is_nil(err, out)
    local got = {}
    for _, m in ipairs(list) do got[#got + 1] = names[m.id] or m.id end
    table.sort(got)
    return got, list
  end

  -- dry(cmd, args) -> the names a dry run of cmd picks, sorted, and its output
  local function dry(cmd, args)
    local out, rc = srv:luamta("queue " .. cmd .. " --dry-run " .. args)
    assert.equal(0, rc, out)
    local got = {}
    for qid in out:gmatch("(%x+): would be ") do got[#got + 1] = names[qid] or qid end
    table.sort(got)
    return got, out
  end

  -- find(list, name) -> the message of list --json called name
  local function find(list, name)
    for _, m in ipairs(list) do if m.id == ids[name] then return m end end
  end

  setup(function()
    down_port = sink.free_port { DOWN_IP }
    other_port = sink.free_port { OTHER_IP }
    silent = sink.silent { ip = MUTE_IP }
    srv = server.start { config = sink.router_config {
      routing = {
        retry = { 3600 },
        timeouts = { connect = 2, reply = 120 },   -- the fresh message stays in its first delivery
        routes = {
          ["down.test"] = "[" .. DOWN_IP .. "]:" .. down_port,
          ["other.test"] = "[" .. OTHER_IP .. "]:" .. other_port,
          ["mute.test"] = silent.literal,
        },
      },
    } }
    deferred("a1", "alice@example.org", { "a1@down.test" })
    deferred("a3", "alice@example.org", { "jdoe@example.test", "a3@down.test" })   -- jdoe: delivered
    deferred("h1", "carol@example.org", { "h1@down.test" })
    local out, rc = srv:luamta("queue hold " .. ids.h1)
    assert.equal(0, rc, out)
    assert.truthy(server.wait_until(function() return server.read_file(srv.spool .. "/hold/" .. ids.h1) end, 5))
    socket.sleep(1.5)
    t_split = socket.gettime()
    socket.sleep(1.5)
    deferred("b1", "bob@example.net", { "b1@down.test" })
    deferred("a2", "alice@example.org", { "a2@other.test" })
    local qid = sink.send(srv, "dave@example.org", { "f1@mute.test" }, "surgery f1")
    ids.f1, names[qid] = qid, "f1"
    assert.truthy(server.wait_until(function()
      return server.run("ss -Htn state established dst " .. silent.address):find("%S") ~= nil
    end, 5, 0.02), "the router is connected to the silent next hop: f1 is being delivered")
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if silent then silent:stop() end
    if down then down:stop() end
    if other then other:stop() end
  end)

  it("lists each message's state, and each recipient's state, DSN and last reply as separate fields", function()
    local got, list = listed()
    assert.same({ "a1", "a2", "a3", "b1", "f1", "h1" }, got)
    local a3 = find(list, "a3")
    assert.equal("deferred", a3.state)
    assert.is_false(a3.held)
    assert.equal("jdoe@example.test", a3.recipients[1].address)
    assert.equal("delivered", a3.recipients[1].state)
    assert.equal("2.0.0", a3.recipients[1].dsn)
    assert.truthy(a3.recipients[1].reply:find("maildir", 1, true), a3.recipients[1].reply)
    local r = a3.recipients[2]
    assert.equal("a3@down.test", r.address)
    assert.equal("deferred", r.state)
    assert.matches("^4%.%d+%.%d+$", r.dsn)
    assert.truthy(r.reply:find("Connection refused", 1, true), r.reply)
    assert.is_nil(r.reply:find(r.dsn, 1, true), "the DSN is not repeated in the reply: " .. r.reply)
    assert.equal("deferred " .. r.dsn .. " " .. r.reply, r.status, "the old status field stays as it was")
    local h1 = find(list, "h1")
    assert.equal("held", h1.state)
    assert.is_true(h1.held)
    local f1 = find(list, "f1")
    assert.equal("queued", f1.state)
    assert.equal("queued", f1.recipients[1].state)
    assert.is_nil(f1.recipients[1].dsn, "null")
    assert.is_nil(f1.recipients[1].reply, "null")
  end)

  it("lists only the recipients still to deliver with --pending", function()
    local out, rc = srv:luamta("queue list --pending")
    assert.equal(0, rc, out)
    assert.truthy(out:find("<a3@down.test>", 1, true), out)
    assert.is_nil(out:find("<jdoe@example.test>", 1, true), "the delivered recipient is left out:\n" .. out)
    local _, list = listed("--pending --to a3@down.test")
    assert.equal(1, #list)
    assert.equal(1, #list[1].recipients)
    assert.equal("a3@down.test", list[1].recipients[1].address)
    out = srv:luamta("queue list")
    assert.truthy(out:find("<jdoe@example.test>", 1, true), "without --pending it is there:\n" .. out)
  end)

  it("picks exactly the right messages with each selector and with several at once", function()
    -- --older-than OLDER splits the messages sent before t_split from those sent 1.5 s after it; the figure is
    -- worked out again for each command, as every message grows older while the cases run.
    local function older() return ("%ds"):format(math.floor(socket.gettime() - t_split)) end
    local cases = {
      { "ALL", { "a1", "a2", "a3", "b1", "f1", "h1" } },
      { "--from bob@example.net", { "b1" } },
      { "--from ALICE@example.org", { "a1", "a2", "a3" } },
      { "--to a1@down.test", { "a1" } },
      { "--to jdoe@example.test", {} },            -- delivered: no longer waiting for anything
      { "--domain down.test", { "a1", "a3", "b1", "h1" } },
      { "--domain other.test", { "a2" } },
      { "--older-than OLDER", { "a1", "a3", "h1" } },
      { "--state deferred", { "a1", "a2", "a3", "b1" } },
      { "--state held", { "h1" } },
      { "--state queued", { "f1" } },
      { "--state active", { "f1" } },
      { "--state held,queued", { "f1", "h1" } },
      { "ALL deferred", { "a1", "a2", "a3", "b1" } },
      { "--from alice@example.org --domain down.test", { "a1", "a3" } },
      { "--domain down.test --state deferred --older-than OLDER", { "a1", "a3" } },
      { "--from alice@example.org --state held", {} },
      { ids.b1 .. " " .. ids.a2 .. " --domain down.test", { "b1" } },
    }
    for _, c in ipairs(cases) do
      local sel = c[1]:gsub("OLDER", older)
      assert.same(c[2], (listed(sel)), "queue list --json " .. sel)
      sel = c[1]:gsub("OLDER", older)
      local got, out = dry("delete", sel)
      assert.same(c[2], got, "queue delete --dry-run " .. sel .. ":\n" .. out)
      assert.truthy(out:find(("dry run: %d messages? would be deleted; nothing changed"):format(#c[2])), out)
    end
    -- Each command keeps to the messages it can act on: hold/ is only for release and delete.
    assert.same({ "a1", "a2", "a3", "b1", "f1" }, (dry("hold", "ALL")))
    assert.same({ "h1" }, (dry("release", "ALL")))
    assert.same({ "a2" }, (dry("flush", "--domain other.test")))
    assert.same({ "a1", "a2", "a3", "b1", "f1" }, (dry("requeue", "ALL")))
  end)

  it("changes nothing with --dry-run: the same messages in the same states, nothing in the log", function()
    local mark = srv:log_mark()
    for _, cmd in ipairs { "delete ALL", "hold ALL", "release ALL", "flush ALL", "requeue ALL" } do
      local out, rc = srv:luamta("queue " .. cmd .. " --dry-run")
      assert.equal(0, rc, out)
      assert.truthy(out:find("nothing changed", 1, true), out)
    end
    socket.sleep(0.5)
    local got, list = listed()
    assert.same({ "a1", "a2", "a3", "b1", "f1", "h1" }, got)
    assert.equal("held", find(list, "h1").state)
    assert.equal("deferred", find(list, "a1").state)
    assert.is_nil(sink.log_line(srv, "by the administrator", mark), srv:log():sub(mark + 1))
    assert.is_nil(sink.log_line(srv, "to=<", mark), "no delivery attempt:\n" .. srv:log():sub(mark + 1))
  end)

  it("reports a message being delivered now instead of skipping it", function()
    local out, rc = srv:luamta("queue hold --state active")
    assert.equal(1, rc, out)
    assert.truthy(out:find(ids.f1 .. ": error: being delivered now", 1, true), out)
    assert.truthy(out:find("luamta queue: Held: 0 messages", 1, true), out)
    assert.truthy(out:find("luamta queue: not held: 1 message", 1, true), out)
    out, rc = srv:luamta("queue requeue " .. ids.f1)
    assert.equal(1, rc, out)
    assert.truthy(out:find("^error: being delivered now"), out)
    local in_queue = false
    for _, qid in ipairs(srv:queue_files()) do in_queue = in_queue or qid == ids.f1 end
    assert.is_true(in_queue, "f1 is still in queue/")
    assert.is_nil(server.read_file(srv.spool .. "/hold/" .. ids.f1), "f1 was not held")
  end)

  it("flush --domain delivers only that domain's messages, with both next hops up", function()
    down = sink.start { ip = DOWN_IP, port = down_port }
    other = sink.start { ip = OTHER_IP, port = other_port }
    local mark = srv:log_mark()
    local out, rc = srv:luamta("queue flush --domain other.test")
    assert.equal(0, rc, out)
    assert.truthy(out:find(ids.a2 .. ": ok", 1, true), out)
    assert.truthy(out:find("luamta queue: Flushed: 1 message\n", 1, true), out)
    local got = other:wait_messages(1, 5)
    assert.equal(1, #got, srv:log():sub(mark + 1))
    assert.same({ "a2@other.test" }, got[1].rcpts)
    assert.truthy(sink.wait_line(srv, ids.a2 .. ": removed", 5, mark), srv:log():sub(mark + 1))
    socket.sleep(1.5)
    assert.same({}, down:messages(), "nothing went to down.test")
    assert.is_nil(sink.log_line(srv, "@down.test>", mark), srv:log():sub(mark + 1))
  end)

  it("requeue routes a message again now that its next hop is back: only the one selected", function()
    local mark = srv:log_mark()
    local out, rc = srv:luamta("queue requeue --from bob@example.net")
    assert.equal(0, rc, out)
    assert.truthy(out:find(ids.b1 .. ": ok: requeued", 1, true), out)
    assert.truthy(out:find("luamta queue: Requeued: 1 message\n", 1, true), out)
    local got = down:wait_messages(1, 5)
    assert.equal(1, #got, srv:log():sub(mark + 1))
    assert.same({ "b1@down.test" }, got[1].rcpts)
    assert.truthy(sink.log_line(srv, ids.b1 .. ": requeued by the administrator", mark), srv:log():sub(mark + 1))
    assert.truthy(sink.wait_line(srv, { ids.b1 .. ": to=<b1@down.test>", "status=sent" }, 5, mark))
    assert.truthy(sink.wait_line(srv, ids.b1 .. ": removed", 5, mark), srv:log():sub(mark + 1))
    socket.sleep(1)
    assert.equal(1, #down:messages(), "a1 and a3 still wait for their retry time")
  end)

  it("delete ALL deferred deletes the deferred messages and leaves the held one and the one in delivery", function()
    local mark = srv:log_mark()
    local out, rc = srv:luamta("queue delete ALL deferred")
    assert.equal(0, rc, out)
    assert.truthy(out:find("luamta queue: Deleted: 2 messages\n", 1, true), out)
    assert.truthy(server.wait_until(function() return #listed() == 2 end, 5))
    assert.same({ "f1", "h1" }, (listed()))
    for _, name in ipairs { "a1", "a3" } do
      assert.truthy(sink.log_line(srv, ids[name] .. ": deleted by the administrator", mark), name)
    end
    assert.is_nil(sink.log_line(srv, ids.h1 .. ": deleted", mark), srv:log():sub(mark + 1))
    assert.equal(1, #down:messages(), "nothing deleted was delivered")
  end)

  it("release ALL hold puts the held message back, and it is delivered", function()
    local mark = srv:log_mark()
    local out, rc = srv:luamta("queue release ALL hold")
    assert.equal(0, rc, out)
    assert.truthy(out:find("luamta queue: Released: 1 message\n", 1, true), out)
    assert.truthy(server.wait_until(function() return #down:messages() == 2 end, 5), srv:log():sub(mark + 1))
    assert.truthy(down:find("h1@down.test")[1], "h1 reached its next hop")
    assert.truthy(sink.wait_line(srv, ids.h1 .. ": removed", 5, mark))
    assert.same({ "f1" }, (listed()))
  end)

  it("refuses a command without a selector, and a bad selector, with usage and exit code 2", function()
    for _, args in ipairs { "delete", "hold --dry-run", "delete --older-than soon", "delete --state bounced",
                            "delete --from", "delete --from a@b.test --from c@d.test", "requeue --everything" } do
      local out, rc = srv:luamta("queue " .. args)
      assert.equal(2, rc, args .. ": " .. out)
      assert.truthy(out:find("usage", 1, true), args .. ": " .. out)
    end
    local out = srv:luamta("queue delete --older-than soon")
    assert.truthy(out:find("--older-than soon: expected a duration", 1, true), out)
    assert.same({ "f1" }, (listed()), "nothing changed")
  end)
end)
