-- Domino 5 (SMTPRelayHostsandDomains): a match in a Deny field wins.
return {
  name = "relay: precedence \"deny\": deny_from wins over allow_to",
  config = { inbound = { relay = { precedence = "deny", allow_to = { "@partner.test" },
    deny_from = { "[203.0.113.*]" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "x@partner.test" },
  expect = { rcpt = "554 5.7.1 Relay rejected for policy reasons." },
}
