-- DNS whitelist with action "log": the hit is logged, no header is added, and the remaining filters are skipped.
return {
  name = "dnswl: action \"log\" logs the hit and skips the DNS blacklist",
  config = { inbound = { dnswl = { enabled = true, sites = { "wl.test" }, action = "log" },
    dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" } } },
  dns = { ["9.113.0.203.wl.test/A"] = "127.0.0.5", ["9.113.0.203.bl.test/A"] = "127.0.0.2" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "250", data = "250", tags = {}, log = { "wl%.test" } },
}
