-- DNS blacklist with action "log": the hit is logged, the mail accepted untouched.
return {
  name = "dnsbl: action \"log\" logs the hit and accepts the mail",
  config = { inbound = { dnsbl = { enabled = true, sites = { "bl.test" }, action = "log" } } },
  dns = { ["9.113.0.203.bl.test/A"] = "127.0.0.2" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { data = "250", tags = {}, log = { "bl%.test" } },
}
