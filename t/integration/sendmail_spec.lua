-- t/integration/sendmail_spec.lua - local submission (docs/admin.md, "sendmail and mailq"): `luamta sendmail`
-- works while the server is stopped and leaves a durable maildrop file; the pickup service queues it at start
-- with From/Date/Message-ID added, Bcc removed, -f and -F honoured; -bs speaks SMTP on stdin; the binary
-- invoked as sendmail or mailq is that command; only the message-stage rules run, with s.local_user set, and
-- what they refuse comes back to the sender; a malformed maildrop file goes to <spool>/corrupt/ and the rest is
-- delivered; bad options and missing recipients exit with sysexits' codes.
local server = require "t.helpers.server"

describe("sendmail and pickup", function()
  local srv
  local ME = (server.run("id -un"):gsub("%s+$", ""))   -- the submitting user: sendmail's default sender

  after_each(function()
    if srv then srv:cleanup() end
    srv = nil
  end)

  -- sendmail(args, input) -> output, exit code of `luamta sendmail -c <cfg> args` with input on stdin
  local function sendmail(args, input, bin)
    local file = srv.dir .. "/stdin"
    server.write_file(file, input)
    return server.run("timeout 10 " .. server.sh_quote(bin or server.BIN) .. (bin and "" or " sendmail") .. " -c "
      .. server.sh_quote(srv.cfgfile) .. " " .. args .. " < " .. server.sh_quote(file))
  end

  local function maildrop()
    local out = server.run("ls -a " .. server.sh_quote(srv.spool .. "/maildrop") .. " 2>/dev/null")
    local names = {}
    for name in out:gmatch("[^\n]+") do
      if name ~= "." and name ~= ".." then names[#names + 1] = name end
    end
    return names
  end

  it("takes a message while the server is stopped and delivers it at start, with the headers cleanup adds", function()
    srv = server.start {}
    srv:stop()
    local out, rc = sendmail("-t -i -F 'Cron Daemon'",
      "Subject: nightly\nTo: jdoe@example.test\nBcc: postmaster@example.test\n\nall is well\n.\nnot the end\n")
    assert.equal(0, rc, out)
    local files = maildrop()
    assert.equal(1, #files, table.concat(files, " "))
    assert.falsy(files[1]:find("^%."), "a file still being written: " .. files[1])
    srv:restart()
    local jdoe = srv:wait_maildir("jdoe", "example.test", 1, 5)
    local pm = srv:wait_maildir("postmaster", "example.test", 1, 5)
    assert.equal(1, #jdoe)
    assert.equal(1, #pm)
    local m = jdoe[1].content
    assert.truthy(m:find("\nFrom: Cron Daemon <" .. ME .. "@mx.example.test>", 1, true), m)
    assert.truthy(m:find("\nDate: %a%a%a, %d%d %a%a%a %d%d%d%d "), m)
    assert.truthy(m:find("\nMessage%-ID: <[^>]+@mx%.example%.test>"), m)
    assert.truthy(m:find("Return-Path: <" .. ME .. "@mx.example.test>", 1, true), m)
    assert.falsy(m:find("Bcc:", 1, true), m)
    assert.truthy(m:find("\n%.\r?\nnot the end"), m)     -- -i: a lone dot is text
    assert.truthy(server.wait_until(function() return #maildrop() == 0 end, 5, 0.05))
  end)

  it("honours -f and recipients on the command line, and -bs speaks SMTP on stdin", function()
    srv = server.start {}
    local out, rc = sendmail("-f app@example.test -- jdoe@example.test", "Subject: one\n\nbody one\n")
    assert.equal(0, rc, out)
    local files = srv:wait_maildir("jdoe", "example.test", 1, 5)
    assert.truthy(files[1].content:find("Return-Path: <app@example.test>", 1, true), files[1].content)
    assert.truthy(files[1].content:find("\nFrom: app@example.test\r?\n"), files[1].content)
    out, rc = sendmail("-bs", "EHLO me\r\nMAIL FROM:<bs@example.test>\r\nRCPT TO:<jdoe@example.test>\r\nDATA\r\n"
      .. "Subject: two\r\n\r\n..dotted\r\n.\r\nQUIT\r\n")
    assert.equal(0, rc, out)
    assert.truthy(out:find("250 2.0.0 Ok: queued in the maildrop", 1, true), out)
    files = srv:wait_maildir("jdoe", "example.test", 2, 5)
    assert.equal(2, #files)
    local two = files[1].content:find("Subject: two", 1, true) and files[1].content or files[2].content
    assert.truthy(two:find("Return-Path: <bs@example.test>", 1, true), two)
    assert.truthy(two:find("\n%.dotted\r?\n"), two)
  end)

  it("is sendmail and mailq when invoked by those names", function()
    srv = server.start {}
    local bin = srv.dir .. "/bin"
    server.run("mkdir -p " .. server.sh_quote(bin) .. " && ln -s " .. server.sh_quote(server.BIN) .. " "
      .. server.sh_quote(bin .. "/sendmail") .. " && ln -s " .. server.sh_quote(server.BIN) .. " "
      .. server.sh_quote(bin .. "/mailq"))
    local out, rc = sendmail("-oi jdoe@example.test", "Subject: by name\n\nhi\n", bin .. "/sendmail")
    assert.equal(0, rc, out)
    assert.equal(1, #srv:wait_maildir("jdoe", "example.test", 1, 5))
    out, rc = server.run(server.sh_quote(bin .. "/mailq") .. " -c " .. server.sh_quote(srv.cfgfile))
    assert.equal(0, rc, out)
    local q = server.luamta("queue -c " .. server.sh_quote(srv.cfgfile) .. " list")
    assert.equal(q, out)
  end)

  it("runs only the message-stage rules, with s.local_user, and tells the sender what they refused", function()
    srv = server.start {
      config = { inbound = { connection = { deny = { "[127.0.0.1]" } } } },   -- a client rule: not for pickup
      rules = { { "localcheck", [[
local mta = require "luamta"
return {
  message = function(s, msg)
    s:log("local_user=" .. tostring(s.local_user))
    if msg:header("Subject") == "forbidden" then return mta.reject(550, "5.7.1 no forbidden mail from " .. s.local_user) end
  end,
}
]] } },
    }
    local out, rc = sendmail("jdoe@example.test", "Subject: allowed\n\nok\n")
    assert.equal(0, rc, out)
    assert.equal(1, #srv:wait_maildir("jdoe", "example.test", 1, 5))
    assert.truthy(srv:wait_log("local_user=" .. ME, 5, nil, true), srv:log())
    out, rc = sendmail("-f postmaster@example.test jdoe@example.test", "Subject: forbidden\n\nno\n")
    assert.equal(0, rc, out)
    local notice = srv:wait_maildir("postmaster", "example.test", 1, 5)
    assert.equal(1, #notice, srv:log())
    assert.truthy(notice[1].content:find("550 5.7.1 no forbidden mail from " .. ME, 1, true), notice[1].content)
    assert.truthy(notice[1].content:find("Subject: forbidden", 1, true), notice[1].content)
    assert.equal(1, #srv:maildir_files("jdoe", "example.test"))
  end)

  it("quarantines a malformed maildrop file and delivers the rest", function()
    srv = server.start {}
    srv:stop()
    server.run("mkdir -p " .. server.sh_quote(srv.spool .. "/maildrop"))
    server.write_file(srv.spool .. "/maildrop/1000-1-1", "this is not a maildrop file\n")
    assert.equal(0, select(2, sendmail("jdoe@example.test", "Subject: good\n\ngood\n")))
    srv:restart()
    assert.equal(1, #srv:wait_maildir("jdoe", "example.test", 1, 5))
    assert.truthy(srv:wait_log("pickup: 1000%-1%-1: malformed", 5), srv:log())
    assert.truthy(server.wait_until(function()
      return server.read_file(srv.spool .. "/corrupt/maildrop-1000-1-1")
    end, 5, 0.05))
    assert.equal("this is not a maildrop file\n", server.read_file(srv.spool .. "/corrupt/maildrop-1000-1-1"))
  end)

  it("exits with sysexits codes: 64 for a bad option or no recipient, 65 for -t without recipients", function()
    srv = server.start {}
    local out, rc = sendmail("-Z jdoe@example.test", "x\n")
    assert.equal(64, rc, out)
    out, rc = sendmail("", "x\n")
    assert.equal(64, rc, out)
    out, rc = sendmail("-t", "Subject: nobody\n\nx\n")
    assert.equal(65, rc, out)
    assert.truthy(out:find("no recipient addresses found", 1, true), out)
    out, rc = sendmail("-oem -odi -B 8BITMIME -N never jdoe@example.test", "Subject: ignored options\n\nx\n")
    assert.equal(0, rc, out)
  end)
end)
