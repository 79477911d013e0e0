-- Without a custom text the reply is "Connection denied for policy reasons".
return {
  name = "blacklist: the default text of a private blacklist reject",
  config = { inbound = { blacklist = { enabled = true, hosts = { "[203.0.113.9]" }, action = "reject" } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "550 5.7.1 Connection denied for policy reasons" },
}
