-- "abc.com" in a list is Domino's string suffix: it matches abc.com and every name that ends with it.
return {
  name = "relay: allow_to \"abc.com\" lets mail to abc.com and to xyzabc.com relay, not to abc.com.org",
  config = { inbound = { relay = { allow_to = { "abc.com" } } } },
  session = { ip = "203.0.113.9", mail = "a@stranger.test",
    rcpt = { "u@abc.com", "u@xyzabc.com", "u@abc.com.org" } },
  expect = { rcpt = { "250", "250", "554 5.7.1" } },
}
