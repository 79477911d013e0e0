-- "Exclude these connecting hosts from anti-relay checks".
return {
  name = "relay: an excluded host is never checked",
  config = { inbound = { relay = { exclude = { "[192.0.2.0/24]" } } } },
  session = { ip = "192.0.2.7", mail = "app@example.test", rcpt = "x@elsewhere.test" },
  expect = { rcpt = "250" },
}
