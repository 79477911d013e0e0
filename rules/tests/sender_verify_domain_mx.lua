-- A sender domain with an MX record exists.
return {
  name = "sender: verify_domain accepts a sender domain with an MX record",
  config = { inbound = { sender = { verify_domain = true } } },
  dns = { ["stranger.test/MX"] = "10 mx.stranger.test" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "250", rcpt = "250" },
}
