-- "Verify that local domain recipients exist in the Domino Directory": aliases count.
return {
  name = "recipient: verify_local refuses unknown local users and accepts users and aliases",
  config = { inbound = { recipient = { verify_local = true } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test",
    rcpt = { "jdoe@example.test", "john@example.test", "nobody@example.test" } },
  expect = { rcpt = { "250", "250", "550 5.1.1 nobody@example.test... No such user" } },
}
