-- Domino 6 and later: a match in an Allow field wins over a match in a Deny field.
return {
  name = "relay: precedence \"allow\": allow_to wins over deny_from",
  config = { inbound = { relay = { precedence = "allow", allow_to = { "@partner.test" },
    deny_from = { "[203.0.113.*]" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = { "x@partner.test", "x@other.test" } },
  expect = { rcpt = { "250", "554 5.7.1" } },
}
