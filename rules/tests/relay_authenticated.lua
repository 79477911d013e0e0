-- "Exceptions for authenticated users: allow": an authenticated session is not checked.
return {
  name = "relay: an authenticated user may relay",
  session = { ip = "203.0.113.9", tls = true, auth = "jdoe@example.test", mail = "jdoe@example.test",
    rcpt = "x@elsewhere.test" },
  expect = { rcpt = "250", data = "250" },
}
