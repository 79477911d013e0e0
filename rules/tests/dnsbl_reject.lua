-- DNS blacklist with action "reject" and a custom text: the first %s is the client IP, the second the site.
return {
  name = "dnsbl: a listed client is refused at MAIL with the custom text",
  config = { inbound = { dnsbl = { enabled = true, sites = { "bl.test" }, action = "reject",
    message = "%s is listed at %s; 100% sure" } } },
  dns = { ["9.113.0.203.bl.test/A"] = "127.0.0.2" },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { connect = "220", mail = "550 5.7.1 203.0.113.9 is listed at bl.test; 100% sure" },
}
