-- "Verify sender's domain in DNS": a domain without MX, A or AAAA does not exist.
return {
  name = "sender: verify_domain refuses a sender domain that does not exist",
  config = { inbound = { sender = { verify_domain = true } } },
  session = { ip = "203.0.113.9", mail = "a@nowhere.test", rcpt = "jdoe@example.test" },
  expect = { mail = "550 5.1.8 Sender domain nowhere.test does not exist" },
}
