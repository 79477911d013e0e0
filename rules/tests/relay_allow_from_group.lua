-- A group name in a host list stands for its members, each matched as an entry of the same list.
return {
  name = "relay: allow_from a group of hosts lets its members relay",
  config = { inbound = { relay = { allow_from = { "Partners" } } } },
  session = { ip = "198.51.100.20", mail = "a@partner.test", rcpt = "x@elsewhere.test" },
  expect = { rcpt = "250", data = "250" },
}
