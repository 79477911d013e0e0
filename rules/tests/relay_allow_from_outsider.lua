-- A non-empty allow_from refuses every client it does not list.
return {
  name = "relay: a client outside allow_from may not relay",
  config = { inbound = { relay = { allow_from = { "Partners" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "x@elsewhere.test" },
  expect = { rcpt = "554 5.7.1 Relay rejected for policy reasons." },
}
