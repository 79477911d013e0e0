-- A host-name entry matches only a verified (forward-confirmed) name of the client.
return {
  name = "connection: allow \"partner.test\" admits a client whose verified name ends with it",
  config = { inbound = { connection = { allow = { "partner.test" } } } },
  dns = { ["20.100.51.198.in-addr.arpa/PTR"] = "mx1.partner.test",
    ["mx1.partner.test/A"] = "198.51.100.20" },
  session = { ip = "198.51.100.20", mail = "a@partner.test", rcpt = "jdoe@example.test" },
  expect = { connect = "220", rcpt = "250" },
}
