-- Private whitelist with a mask, action "skip": it is tried first, so the private blacklist is skipped.
return {
  name = "whitelist: a private whitelist mask skips the private blacklist",
  config = { inbound = { whitelist = { enabled = true, hosts = { "[203.0.113.0/28]" }, action = "skip" },
    blacklist = { enabled = true, hosts = { "[203.0.113.9]" }, action = "reject" } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { mail = "250", rcpt = "250" },
}
