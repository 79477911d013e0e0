-- The help page's own example of a wildcard entry: "[127.*.0.1]" matches 127.5.0.1 but not 127.5.0.2.
return {
  name = "connection: deny \"[127.*.0.1]\" refuses 127.5.0.1",
  config = { inbound = { connection = { deny = { "[127.*.0.1]" } } } },
  session = { ip = "127.5.0.1", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { connect = "554 5.7.1 Connection refused for policy reasons" },
}
