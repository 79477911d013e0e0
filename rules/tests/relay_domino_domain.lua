-- "%AcmeEast" names a Domino domain: a dotless recipient domain.
return {
  name = "relay: allow_to \"%AcmeEast\" lets mail for the Domino domain AcmeEast relay",
  config = { inbound = { relay = { allow_to = { "%AcmeEast" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = { "jane@AcmeEast", "jane@AcmeWest" } },
  expect = { rcpt = { "250", "554 5.7.1" } },
}
