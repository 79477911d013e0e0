-- "Deny messages intended for the following internet addresses"; deny wins over allow.
return {
  name = "recipient: deny wins over allow",
  config = { inbound = { recipient = { allow = { "@example.test" }, deny = { "postmaster@example.test" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = { "jdoe@example.test", "postmaster@example.test" } },
  expect = { rcpt = { "250", "554 5.7.1 Message rejected for policy reasons." } },
}
