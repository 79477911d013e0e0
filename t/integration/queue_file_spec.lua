-- t/integration/queue_file_spec.lua - what the queue file keeps about a message, as `luamta queue list` shows it
-- (docs/admin.md, "The queue"): the user who authenticated (SMTP AUTH) and one size, the same in the log's
-- "queued" line, in `queue list` and in `queue list --json`. The message waits in the queue because
-- routing.smtp_outbound = false holds its external recipient.
local server = require "t.helpers.server"
local smtp = require "t.helpers.smtp"
local certs = require "t.helpers.certs"
local mime = require "mime"
local json = require "dkjson"

local PASSWORD = "Tr0ub4dor&3-queue"

describe("the queue file", function()
  local pki, srv, proxy, sub

  setup(function()
    pki = certs.new { expired = false }
    sub = server.free_port()
    srv = server.start { config = {
      tls = { cert = pki.cert, key = pki.key },
      server = { listen = { "127.0.0.1:" .. server.free_port(), { "127.0.0.1:" .. sub, submission = true } } },
      directory = { users = {
        { address = "postmaster@example.test" },
        { address = "jdoe@example.test", password = certs.crypt(PASSWORD) },
      } },
      routing = { smtp_outbound = false },
    } }
    proxy = certs.proxy(sub, "starttls")
  end)

  teardown(function()
    if proxy then proxy:stop() end
    if srv then srv:cleanup() end
    if pki then pki:cleanup() end
  end)

  it("keeps the authenticated user and one size: the log's, queue list's and queue list --json's", function()
    local c = certs.session(proxy)
    local code, lines = c:cmd("AUTH PLAIN " .. mime.b64("\0jdoe@example.test\0" .. PASSWORD))
    assert.equal(235, code, lines and lines.text)
    local mark = srv:log_mark()
    local text = smtp.message({ "From: <jdoe@example.test>", "Subject: to the outside" },
      "this waits in the queue\r\n")
    code, lines = smtp.send_mail(c, "jdoe@example.test", "someone@outside.test", text)
    assert.equal(250, code, lines and lines.text)
    local qid = lines[1]:match("queued as (%x+)")
    c:close()

    local line = srv:wait_log(qid .. ": from=<jdoe@example%.test>, size=%d+", 5, mark)
    assert.truthy(line, srv:log():sub(mark + 1))
    local size = tonumber(line:match("size=(%d+)"))
    -- the message as queued, as Postfix counts it: what the client sent with our Received field on top
    assert.truthy(size > #text and size < #text + 400, "size=" .. size .. " for " .. #text .. " octets sent")
    assert.truthy(srv:wait_log(qid .. ": to=<someone@outside%.test>.*status=held", 5, mark), srv:log())

    local out, rc = srv:luamta("queue list --json")
    assert.equal(0, rc, out)
    local list = json.decode(out)
    assert.equal(1, #list, out)
    assert.equal(qid, list[1].id)
    assert.equal("jdoe@example.test", list[1].auth)
    assert.equal(size, list[1].size, "queue list --json gives the log's size")

    out, rc = srv:luamta("queue list")
    assert.equal(0, rc, out)
    assert.truthy(out:find("^" .. qid .. "%s+" .. size .. " "), out)
  end)
end)
