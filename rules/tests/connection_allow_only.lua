-- "Allow connections only from the following hosts": everybody else is refused.
return {
  name = "connection: allow lists the only hosts that may connect",
  config = { inbound = { connection = { allow = { "[198.51.100.1-30]" } } } },
  session = { ip = "198.51.100.31", mail = "a@partner.test", rcpt = "jdoe@example.test" },
  expect = { connect = "554 5.7.1" },
}
