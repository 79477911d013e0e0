-- rules/tests/_base.lua - the configuration the bundled scenarios of `luamta test` run against (docs/rules.md,
-- "Policy tests"). Each scenario lays its own `config` over this file, so that the bundled scenarios state the
-- bundled rules' meaning whatever the site's own configuration says. Nothing here is ever written to: a test
-- queues nothing, and every DNS answer comes from the scenario.
server = {
  hostname = "mx.example.test",
  listen = { "127.0.0.1:2525" },
  spool = "/nonexistent/luamta-test-spool",
}
local_domains = { "example.test" }
directory = {
  users = {
    { address = "postmaster@example.test" },
    { address = "jdoe@example.test", aliases = { "john@example.test" } },
  },
  groups = {
    Partners = { "[198.51.100.0/24]", "partner.test" },
  },
}
