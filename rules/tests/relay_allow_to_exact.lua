-- "@xyz.com" matches addresses whose domain is exactly xyz.com.
return {
  name = "relay: allow_to \"@xyz.com\" matches xyz.com exactly, not sub.xyz.com",
  config = { inbound = { relay = { allow_to = { "@xyz.com" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = { "u@xyz.com", "u@sub.xyz.com" } },
  expect = { rcpt = { "250", "554 5.7.1 Relay rejected for policy reasons." } },
}
