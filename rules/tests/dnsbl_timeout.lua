-- A DNS list that does not answer counts as "not listed".
return {
  name = "dnsbl: a DNS list that times out counts as not listed",
  config = { inbound = { dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject" } } },
  dns = { ["9.113.0.203.bl.test/A"] = "timeout" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "250", rcpt = "250" },
}
