-- "[127.*.0.1]" does not match 127.5.0.2: the client is greeted.
return {
  name = "connection: deny \"[127.*.0.1]\" lets 127.5.0.2 in",
  config = { inbound = { connection = { deny = { "[127.*.0.1]" } } } },
  session = { ip = "127.5.0.2", mail = "a@stranger.test", rcpt = "jdoe@example.test" },
  expect = { connect = "220", rcpt = "250" },
}
