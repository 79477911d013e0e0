-- Private blacklist: ranges and masks are allowed in the private lists; the custom text's %s is the IP.
return {
  name = "blacklist: a private blacklist range refuses the client with its custom text",
  config = { inbound = { blacklist = { enabled = true, hosts = { "[203.0.113.1-30]" }, action = "reject",
    message = "Go away, %s" } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "550 5.7.1 Go away, 203.0.113.9" },
}
