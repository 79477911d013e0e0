-- "*" matches every sender, but the null sender matches no entry at all.
return {
  name = "sender: deny \"*\" refuses every sender but the null sender",
  config = { inbound = { sender = { deny = { "*" } } } },
  session = { ip = "203.0.113.9", mail = "<>", rcpt = "jdoe@example.test" },
  expect = { mail = "250", rcpt = "250" },
}
