-- A DNS timeout is never a permanent refusal.
return {
  name = "connection: verify_hostname with a PTR lookup that times out defers with 450",
  config = { inbound = { connection = { verify_hostname = true } } },
  dns = { ["9.113.0.203.in-addr.arpa/PTR"] = "timeout" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "450 4.7.1" },
}
