-- A PTR name that does not resolve back to the client is not verified, so it matches no host-name entry.
return {
  name = "connection: a PTR name that does not resolve back matches no host-name entry",
  config = { inbound = { connection = { allow = { "partner.test" } } } },
  dns = { ["9.113.0.203.in-addr.arpa/PTR"] = "fake.partner.test", ["fake.partner.test/A"] = "192.0.2.1" },
  session = { ip = "203.0.113.9", mail = "a@partner.test", rcpt = "jdoe@example.test" },
  expect = { connect = "554 5.7.1 Connection refused for policy reasons" },
}
