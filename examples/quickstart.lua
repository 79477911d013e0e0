-- examples/quickstart.lua - a luamta configuration to try the server on one machine, as it is.
--
-- Start it from the top of the source tree with `src/luamta run -c examples/quickstart.lua` and talk to it
-- with any SMTP client on 127.0.0.1 port 2525. Nothing here needs root, a real domain or the network.
--
-- This file is Lua. It assigns a few tables (server, local_domains, directory, delivery, ...); every key you
-- leave out keeps its default (see SPEC.md section 3). `luamta check -c examples/quickstart.lua` prints what
-- is wrong, with the line. Relative paths are taken from the directory of this file, so "../run" is the run/
-- directory at the top of the source tree.

server = {
  -- The name the server gives itself in its greeting, in EHLO replies and in bounces.
  -- Default: the machine's own name.
  hostname = "quickstart.example.test",

  -- Where to accept connections: "address:port". 127.0.0.1 means this machine only, and a port above 1024
  -- needs no root. A real server listens on "0.0.0.0:25" and "[::]:25", with tls = { cert = …, key = … }.
  listen = { "127.0.0.1:2525" },

  -- The queue: messages wait here, written safely to disk, until they are delivered. Required.
  spool = "../run/spool",

  -- How many listener processes share the port. 0 means one per CPU core.
  workers = 2,

  -- A directory for your own rule files. A file named like a bundled rule ("relay.lua") replaces it;
  -- it may be empty or missing.
  rules_dir = "../run/rules",
}

-- The mail domains this server receives mail for. Mail to any other domain would be relayed; the bundled
-- relay rule (inbound.relay, left at its defaults here) refuses that to strangers.
local_domains = { "example.test" }

-- The people who receive mail here. aliases are more addresses for the same mailbox. A user who should log in
-- with AUTH (offered only under TLS) also needs password = "<crypt(3) hash>".
directory = {
  users = {
    { address = "postmaster@example.test", name = "Postmaster" },
    { address = "jdoe@example.test", name = "John Doe", aliases = { "john@example.test" } },
  },
}

-- Where local mail ends up: one Maildir per user. %d is the domain and %u the local part of the user's address,
-- so jdoe@example.test gets run/mailboxes/example.test/jdoe.
delivery = {
  maildir = "../run/mailboxes/%d/%u",
}
