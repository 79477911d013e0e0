-- "Verify connecting host name in DNS": a client without a verified name is refused at MAIL.
return {
  name = "connection: verify_hostname refuses a client without a verified name at MAIL",
  config = { inbound = { connection = { verify_hostname = true } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { connect = "220", mail = "550 5.7.1 Cannot verify your host name 203.0.113.9" },
}
