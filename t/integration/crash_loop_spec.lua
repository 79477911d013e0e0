-- t/integration/crash_loop_spec.lua - the short crash loop of docs/reliability.md: 30 kill -9 (of the whole tree,
-- the router alone, one worker) at random moments while clients send messages with unique tokens to a Maildir
-- and a next hop; then Jepsen's set checker (t/helpers/crashloop.py): every acknowledged token delivered to
-- every recipient, no refused one delivered, no copy corrupted, duplicates only where a router ended between the
-- start of one copy and the end of the next, every killed child back within 60 s, the queue drained, nothing left
-- in tmp/. The long run (>= 1000 kills) is `make crash-loop` (t/opt/crashloop).
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)t/integration/crash_loop_spec%.lua$") or "./"

describe("the crash loop", function()
  it("loses nothing acknowledged, delivers nothing refused, corrupts nothing, leaves nothing behind", function()
    local python = tools.need("python3")
    tools.need("smtp-sink", "/usr/sbin/smtp-sink")
    tools.need("setsid")
    local kills = tonumber(os.getenv("CRASHLOOP_KILLS") or "") or 30
    -- gaps of at most 0.5 s after each return (the master takes 1 s to start a child again): within 60 s
    local out, rc = server.run(("timeout -k 5 170 %s %s --bin %s --kills %d --max-gap 0.5"):format(python,
      server.sh_quote(HERE .. "t/helpers/crashloop.py"), server.sh_quote(server.BIN), kills))
    local summary = out:match("(%b{})%s*$") or out
    print("crash loop: " .. summary)
    assert.equal(0, rc, out)
    assert.truthy(summary:find('"problems": []', 1, true), summary)
    assert.truthy(summary:find('"ok": [1-9]'), "no message was acknowledged: " .. summary)
  end)
end)
