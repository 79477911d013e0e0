-- DNS blacklist with action "tag": every message of the session gets X-DNSBLSite.
return {
  name = "dnsbl: action \"tag\" adds X-DNSBLSite to the message",
  config = { inbound = { dnsbl = { enabled = true, sites = { "bl1.test", "bl2.test" }, action = "tag" } } },
  dns = { ["9.113.0.203.bl2.test/A"] = "127.0.0.4" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { data = "250", tags = { "X-DNSBLSite: bl2.test" } },
}
