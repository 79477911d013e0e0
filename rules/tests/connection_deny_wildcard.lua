-- "[127.*.0.1]": a wildcard octet in an address entry.
return {
  name = "connection: deny \"[198.*.100.20]\" refuses the client at the greeting",
  config = { inbound = { connection = { deny = { "[198.*.100.20]" } } } },
  session = { ip = "198.51.100.20", mail = "a@partner.test", rcpt = "jdoe@example.test" },
  expect = { connect = "554 5.7.1 Connection refused for policy reasons" },
}
