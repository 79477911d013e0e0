-- DNS whitelist with action "tag": X-DNSWLSite is added and the remaining filters are skipped.
return {
  name = "dnswl: action \"tag\" adds X-DNSWLSite",
  config = { inbound = { dnswl = { enabled = true, sites = { "wl.test" }, action = "tag" } } },
  dns = { ["9.113.0.203.wl.test/A"] = "127.0.0.5" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { data = "250", tags = { "X-DNSWLSite: wl.test" } },
}
