-- Inbound relay controls with their defaults: deny_to is "*", so an external client may not relay, and mail
-- for the local internet domain is accepted.
return {
  name = "relay: by default an external client may not relay, local mail is accepted",
  session = { ip = "203.0.113.9", helo = "stranger.test", mail = "a@stranger.test",
    rcpt = { "jdoe@example.test", "x@elsewhere.test" } },
  expect = { connect = "220", mail = "250", rcpt = { "250", "554 5.7.1 Relay rejected for policy reasons." },
    data = "250", log = { "rule=relay action=reject" } },
}
