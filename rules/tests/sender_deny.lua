-- "Deny messages from the following external internet addresses/domains".
return {
  name = "sender: deny \"@spam.test\" refuses that sender at MAIL",
  config = { inbound = { sender = { deny = { "@spam.test" } } } },
  session = { ip = "203.0.113.9", mail = "bulk@spam.test", rcpt = "jdoe@example.test" },
  expect = { mail = "554 5.7.1 Mail from bulk@spam.test rejected for policy reasons." },
}
