-- t/lua/config_spec.lua
local config = require "luamta.config"

local FILE = "/etc/luamta/luamta.lua"

-- load - load a configuration given as a string, as if it were the file FILE.
local function load(source, opts)
  return config.load_string(source, "@" .. FILE, opts)
end

-- errors_of - the errors of a configuration that must fail to load.
local function errors_of(source, opts)
  local cfg, errors = load(source, opts)
  assert.is_nil(cfg)
  assert.is_table(errors)
  return errors
end

local function write_file(file, text)
  local f = assert(io.open(file, "w"))
  f:write(text)
  f:close()
end

local function basename(file)
  return file:match("[^/]+$")
end

local function dirname(file)
  return file:match("^(.*)/[^/]*$")
end

describe("luamta.config", function()
  describe("defaults", function()
    it("fills in every section and key of SPEC section 3 when only the spool is set", function()
      local cfg, _, warnings = load('server = { spool = "/var/spool/luamta", listen = "127.0.0.1:25" }')
      assert.same({}, warnings)
      assert.same({
        hostname = "localhost",
        listen = { { text = "127.0.0.1:25", host = "127.0.0.1", port = 25, family = "inet", tls = "none",
                     submission = false } },
        spool = "/var/spool/luamta",
        workers = 1,
        rules = { "connection", "filters", "sender", "relay", "recipient" },
        extra_rules = {},
        rules_dir = "/etc/luamta/rules",
        max_message_size = 26214400,
        max_recipients = 100,
        max_hops = 50,
        max_connections = 2000,
        max_connections_per_ip = 50,
        timeouts = { command = 300, data = 600 },
        bare_newline = "reject",
        greeting_delay = 0,
      }, cfg.server)
      assert.same({ certs = {}, pairs = {}, ticket_period = 43200 }, cfg.tls)
      assert.same({ timeout = 5, tries = 2, verify_ptr = "forward_confirmed" }, cfg.dns)
      assert.same({ level = "info", syslog = false, facility = "mail", ident = "luamta" }, cfg.log)
      assert.same({}, cfg.local_domains)
      assert.same({ users = {}, groups = {}, lookup = "full_then_localpart" }, cfg.directory)
      assert.same({
        smtp_outbound = true, smart_host_all = false, routes = {}, port = 25,
        retry = { 60, 300, 900, 1800, 3600 }, max_queue_time = 432000, delay_warning = 14400,
        max_per_domain = 10, active_limit = 10000, tls = "opportunistic", timeouts = { connect = 30, reply = 300 },
      }, cfg.routing)
      assert.same({ maildir = "/var/spool/luamta/mailboxes/%d/%u" }, cfg.delivery)
      assert.same({}, cfg.metrics)
      assert.same({ enabled = true, keep_days = 7, max_mb = 1024 }, cfg.trace)
    end)

    it("fills in the inbound controls with the defaults of SPEC sections 3.1 and 5", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25" }')
      assert.same({
        relay = { allow_to = {}, deny_to = { "*" }, allow_from = {}, deny_from = {}, precedence = "allow",
                  enforce = "external", authenticated = "allow", exclude = {} },
        blacklist = { enabled = false, hosts = {}, action = "log" },
        whitelist = { enabled = false, hosts = {}, action = "skip" },
        dnsbl = { enabled = false, sites = {}, action = "log" },
        dnswl = { enabled = false, sites = {}, action = "skip" },
        connection = { verify_hostname = false, allow = {}, deny = {}, max_errors = 20, max_junk_commands = 100 },
        sender = { verify_domain = false, allow = {}, deny = {} },
        recipient = { verify_local = false, allow = {}, deny = {} },
      }, cfg.inbound)
    end)

    it("fills in the rest of an inbound table that sets only some keys", function()
      local cfg = load([[
server = { spool = "/s", listen = "127.0.0.1:25" }
inbound = { dnsbl = { enabled = true, sites = "zen.spamhaus.org" }, relay = { deny_to = {} } }
]])
      assert.same({ enabled = true, sites = { "zen.spamhaus.org" }, action = "log" }, cfg.inbound.dnsbl)
      assert.same({}, cfg.inbound.relay.deny_to)
      assert.equal("external", cfg.inbound.relay.enforce)
    end)

    it("listens on 0.0.0.0:25 and [::]:25 by default and warns that neither has TLS", function()
      local cfg, _, warnings = load('server = { spool = "/s" }')
      assert.same({ "0.0.0.0:25", "[::]:25" }, { cfg.server.listen[1].text, cfg.server.listen[2].text })
      assert.same({ "inet", "::", "inet6" },
                  { cfg.server.listen[1].family, cfg.server.listen[2].host, cfg.server.listen[2].family })
      assert.equal(2, #warnings)
      assert.matches("^/etc/luamta/luamta.lua:1: server.listen%[1%]: listening on a public address without TLS",
                     warnings[1])
    end)

    it("takes the host name, CPU count and sysconfdir from opts", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25", workers = 0 }',
                       { hostname = "mx.example.org", ncpu = 8, sysconfdir = "/usr/local/etc" })
      assert.equal("mx.example.org", cfg.server.hostname)
      assert.equal(8, cfg.server.workers)
      assert.equal("/usr/local/etc/luamta/rules", cfg.server.rules_dir)
    end)

    it("keeps a worker count other than 0", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25", workers = 3 }', { ncpu = 8 })
      assert.equal(3, cfg.server.workers)
    end)

    it("leaves dns.servers unset so that /etc/resolv.conf is used", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25" }')
      assert.is_nil(cfg.dns.servers)
    end)

    it("makes listeners starttls by default when tls has a certificate and a key", function()
      local cfg, _, warnings = load([[
server = { spool = "/s", listen = { "0.0.0.0:25", { "0.0.0.0:465", tls = "implicit" },
                                    { "[::]:587", submission = true }, { "[::]:26", tls = "none" } } }
tls = { cert = "cert.pem", key = "/etc/ssl/private/key.pem" }
]])
      assert.same({ "starttls", "implicit", "starttls", "none" }, {
        cfg.server.listen[1].tls, cfg.server.listen[2].tls, cfg.server.listen[3].tls, cfg.server.listen[4].tls })
      assert.same({ false, false, true, false }, {
        cfg.server.listen[1].submission, cfg.server.listen[2].submission, cfg.server.listen[3].submission,
        cfg.server.listen[4].submission })
      assert.same({ cert = "/etc/luamta/cert.pem", key = "/etc/ssl/private/key.pem", certs = {},
        pairs = { { cert = "/etc/luamta/cert.pem", key = "/etc/ssl/private/key.pem" } }, ticket_period = 43200 },
        cfg.tls)
      assert.equal(1, #warnings)
      assert.matches("server.listen%[4%]: listening on a public address without TLS", warnings[1])
    end)

    it("normalises a listen entry into text, host, port, family, tls and submission", function()
      local cfg = load('server = { spool = "/s", listen = { " [::1]:2525 ", { "127.0.0.2:587", submission = true } } }')
      assert.same({
        { text = "[::1]:2525", host = "::1", port = 2525, family = "inet6", tls = "none", submission = false },
        { text = "127.0.0.2:587", host = "127.0.0.2", port = 587, family = "inet", tls = "none", submission = true },
      }, cfg.server.listen)
    end)
  end)

  describe("errors", function()
    it("reports an unknown top-level name with its line and the nearest valid name", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\n\nserer = { workers = 2 }\n')
      assert.same({ '/etc/luamta/luamta.lua:3: serer: unknown name; did you mean "server"?' }, errors)
    end)

    it("lists the valid names when an unknown top-level name is nothing like any of them", function()
      local errors = errors_of('server = { spool = "/s" }\nzzzzzz = 1\n')
      assert.equal('/etc/luamta/luamta.lua:2: zzzzzz: unknown name; expected one of server, tls, dns, log, '
                   .. "local_domains, directory, inbound, routing, delivery, metrics, trace, http, redis, greylist, "
                   .. "ratelimit, auth_throttle, dkim, rspamd", errors[1])
    end)

    it("stops at a read of an undefined name and says where it is", function()
      local errors = errors_of('server = { spool = "/s" }\nlocal x = foo\n')
      assert.same({ "/etc/luamta/luamta.lua:2: unknown name 'foo'" }, errors)
    end)

    it("reports an unknown nested key at its line with the nearest valid key", function()
      local errors = errors_of([[
server = {
  spool = "/s",
  listn = "127.0.0.1:25",
}
]])
      assert.same({ '/etc/luamta/luamta.lua:3: server.listn: unknown key; did you mean "listen"?' }, errors)
    end)

    it("reports an unknown key two levels down with its full path", function()
      local errors = errors_of([[
server = { spool = "/s", listen = "127.0.0.1:25" }
inbound = {
  relay = {
    enforse = "all",
  },
}
]])
      assert.same({ '/etc/luamta/luamta.lua:4: inbound.relay.enforse: unknown key; did you mean "enforce"?' },
                  errors)
    end)

    it("reports a wrong type with what it got and what is expected", function()
      local errors = errors_of([[
server = {
  spool = "/s",
  max_recipients = "ten",
}
]])
      assert.same({ '/etc/luamta/luamta.lua:3: server.max_recipients: got string "ten"; '
                    .. "expected a whole number >= 1" }, errors)
    end)

    it("refuses a number below the minimum and a fraction where a whole number is needed", function()
      local errors = errors_of('server = { spool = "/s", max_message_size = 100, max_connections = 2.5 }')
      assert.equal(2, #errors)
      assert.matches("server.max_message_size: got number 100; expected a whole number >= 1024", errors[1], 1, true)
      assert.matches("server.max_connections: got number 2.5; expected a whole number >= 1", errors[2], 1, true)
    end)

    it("lists the allowed values of an enum and suggests the nearest", function()
      local errors = errors_of([[
server = { spool = "/s", bare_newline = "normalise" }
]])
      assert.same({ '/etc/luamta/luamta.lua:1: server.bare_newline: got string "normalise"; '
                    .. 'expected one of "reject", "normalize" (did you mean "normalize"?)' }, errors)
    end)

    it("refuses a listen entry that is not ipv4:port or [ipv6]:port", function()
      local errors = errors_of([[
server = {
  spool = "/s",
  listen = { "127.0.0.1:2525",
             "localhost:25" },
}
]])
      assert.same({ '/etc/luamta/luamta.lua:4: server.listen[2]: got string "localhost:25"; '
                    .. 'expected "ipv4:port" or "[ipv6]:port", such as "127.0.0.1:2525" or "[::1]:2525"' }, errors)
    end)

    it("refuses a listen address without a port, a bad octet and an IPv6 address without brackets", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1, 256.0.0.1:25, ::1:25" }')
      assert.equal(3, #errors)
      assert.matches("server.listen[1]: got string \"127.0.0.1\"", errors[1], 1, true)
      assert.matches("server.listen[2]: got string \"256.0.0.1:25\"", errors[2], 1, true)
      assert.matches("server.listen[3]: got string \"::1:25\"", errors[3], 1, true)
    end)

    it("refuses a port outside 1..65535 in a listen entry", function()
      local errors = errors_of('server = { spool = "/s", listen = { "127.0.0.1:0", "[::1]:65536" } }')
      assert.same({
        '/etc/luamta/luamta.lua:1: server.listen[1]: got string "127.0.0.1:0", a bad port; '
          .. "expected a port from 1 to 65535",
        '/etc/luamta/luamta.lua:1: server.listen[2]: got string "[::1]:65536", a bad port; '
          .. "expected a port from 1 to 65535",
      }, errors)
    end)

    it("refuses a port outside 1..65535 in routing.port", function()
      local errors = errors_of('server = { spool = "/s" }\nrouting = { port = 70000 }')
      assert.same({ "/etc/luamta/luamta.lua:2: routing.port: got number 70000; "
                    .. "expected a whole number from 1 to 65535" }, errors)
    end)

    it("refuses a TLS listener when tls has no certificate", function()
      local errors = errors_of([[
server = {
  spool = "/s",
  listen = {
    { "127.0.0.1:465", tls = "implicit" },
  },
}
]])
      assert.same({ '/etc/luamta/luamta.lua:4: server.listen[1].tls: got "implicit" but no certificate is '
                    .. "configured; expected tls = { cert = …, key = … } to be set" }, errors)
    end)

    it("refuses a certificate without a key", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\ntls = { cert = "c.pem" }\n')
      assert.same({ "/etc/luamta/luamta.lua:2: tls.key: missing; expected the private key file that goes "
                    .. "with tls.cert" }, errors)
    end)

    it("refuses unknown keys in a listener table", function()
      local errors = errors_of('server = { spool = "/s", listen = { { "127.0.0.1:25", submision = true } } }')
      assert.same({ '/etc/luamta/luamta.lua:1: server.listen[1].submision: unknown key; '
                    .. 'did you mean "submission"?' }, errors)
    end)

    it("requires server.spool", function()
      local errors = errors_of('server = {\n  listen = "127.0.0.1:25",\n}\n')
      assert.same({ '/etc/luamta/luamta.lua:1: server.spool: missing; expected the spool directory, as in '
                    .. 'spool = "/var/spool/luamta"' }, errors)
    end)

    it("requires server.spool even when the file sets no server table", function()
      local errors = errors_of("log = { level = 'debug' }")
      assert.same({ '/etc/luamta/luamta.lua: server.spool: missing; expected the spool directory, as in '
                    .. 'spool = "/var/spool/luamta"' }, errors)
    end)

    it("stops a configuration that loops forever", function()
      local errors = errors_of('server = { spool = "/s" }\nlocal n = 0\nwhile true do\n  n = n + 1\nend\n')
      assert.equal(1, #errors)
      assert.matches("^/etc/luamta/luamta.lua:%d: configuration runs too long$", errors[1])
    end)

    it("stops a runaway loop even when the file catches errors with pcall", function()
      local errors = errors_of('while true do pcall(function() while true do end end) end')
      assert.equal(1, #errors)
      assert.matches("configuration runs too long", errors[1], 1, true)
    end)

    it("passes a syntax error through with its line", function()
      local errors = errors_of('server = {\n  spool = "/s"\n  listen = "127.0.0.1:25",\n}\n')
      assert.equal(1, #errors)
      assert.matches("^/etc/luamta/luamta.lua:3: '}' expected %(to close '{' at line 1%) near 'listen'$",
                     errors[1])
    end)

    it("passes a runtime error through with its line", function()
      local errors = errors_of('server = { spool = "/s" }\nlocal t = nil\nlocal x = t.field\n')
      assert.equal(1, #errors)
      assert.matches("^/etc/luamta/luamta.lua:3: attempt to index a nil value", errors[1])
    end)

    it("passes an error() of the file through", function()
      local errors = errors_of('error("no spool chosen yet")')
      assert.same({ "/etc/luamta/luamta.lua:1: no spool chosen yet" }, errors)
    end)

    it("collects every error of a file, in line order", function()
      local errors = errors_of([[
server = {
  spool = "/s",
  listen = { "127.0.0.1:25" },
  workers = -1,
  bare_newline = "rejet",
}
log = { level = "loud" }
routing = { relay_host = "[not an ip]:25", retry = {} }
delivery = { maildir = "/m/%x/%u" }
lokal_domains = "example.org"
]])
      assert.same({
        "/etc/luamta/luamta.lua:4: server.workers: got number -1; expected a whole number >= 0",
        '/etc/luamta/luamta.lua:5: server.bare_newline: got string "rejet"; expected one of "reject", '
          .. '"normalize" (did you mean "reject"?)',
        '/etc/luamta/luamta.lua:7: log.level: got string "loud"; expected one of "debug", "info", "notice", '
          .. '"warning", "error"',
        '/etc/luamta/luamta.lua:8: routing.relay_host: got string "[not an ip]:25"; '
          .. 'expected an IP address inside the brackets, as in "[192.0.2.9]:25"',
        "/etc/luamta/luamta.lua:8: routing.retry: got a table; expected a non-empty list of seconds "
          .. "(numbers > 0)",
        '/etc/luamta/luamta.lua:9: delivery.maildir: got "%x" in "/m/%x/%u"; expected only %d (domain), '
          .. "%u (local part) or %%",
        '/etc/luamta/luamta.lua:10: lokal_domains: unknown name; did you mean "local_domains"?',
      }, errors)
    end)

    it("collects the names assigned before a runtime error together with it", function()
      local errors = errors_of('sever = {}\nlocal x = y\n')
      assert.same({
        '/etc/luamta/luamta.lua:1: sever: unknown name; did you mean "server"?',
        "/etc/luamta/luamta.lua:2: unknown name 'y'",
      }, errors)
    end)

    it("finds the line of a key set in its own statement after the section", function()
      local errors = errors_of([[
server = {}
server.spool = "/s"
server.listen = "127.0.0.1:25"
server.timeouts = { command = 0 }
]])
      assert.same({ "/etc/luamta/luamta.lua:4: server.timeouts.command: got number 0; expected a number > 0" },
                  errors)
    end)

    it("refuses log.file together with log.syslog, an unknown facility and a bad ident", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
        .. 'log = { file = "/var/log/luamta.log", syslog = true, facility = "mial", ident = "a b" }\n')
      assert.same({
        '/etc/luamta/luamta.lua:2: log.facility: got string "mial"; expected one of "mail", "daemon", "user", '
          .. '"auth", "authpriv", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7" '
          .. '(did you mean "mail"?)',
        '/etc/luamta/luamta.lua:2: log.ident: got string "a b"; expected a syslog tag such as "luamta" or '
          .. '"postfix" (letters, digits, "-", "_", ".")',
        '/etc/luamta/luamta.lua:2: log.file: log.file and log.syslog = true both name a destination; expected '
          .. 'one of them',
      }, errors)
    end)

    it("refuses a section that is not a table", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\nlog = "debug"\n')
      assert.same({ '/etc/luamta/luamta.lua:2: log: got string "debug"; expected a table with the keys level, '
                    .. "syslog, file, facility, ident" }, errors)
    end)

    it("refuses a directory user without an address and an address without @", function()
      local errors = errors_of([[
server = { spool = "/s", listen = "127.0.0.1:25" }
directory = {
  users = {
    { name = "Nobody" },
    { address = "jdoe" },
  },
}
]])
      assert.same({
        '/etc/luamta/luamta.lua:4: directory.users[1].address: missing; expected an address such as '
          .. 'address = "jdoe@example.com"',
        '/etc/luamta/luamta.lua:5: directory.users[2].address: got string "jdoe"; expected an address such as '
          .. '"jdoe@example.com"',
      }, errors)
    end)

    it("refuses an address used by two users", function()
      local errors = errors_of([[
server = { spool = "/s", listen = "127.0.0.1:25" }
directory = { users = { { address = "jdoe@example.org" },
                        { address = "john@example.org", aliases = "JDoe@example.org" } } }
]])
      assert.equal(1, #errors)
      assert.matches('directory.users[2]: "JDoe@example.org" belongs to two users', errors[1], 1, true)
    end)

    it("refuses a group name that could not be written as a list entry", function()
      local errors = errors_of([[
server = { spool = "/s", listen = "127.0.0.1:25" }
directory = { groups = { ["Allow.Mail"] = "a.example" } }
]])
      assert.equal(1, #errors)
      assert.matches('directory.groups["Allow.Mail"]: bad group name', errors[1], 1, true)
    end)

    it("refuses bad routing host values and route destinations", function()
      local errors = errors_of([[
server = { spool = "/s", listen = "127.0.0.1:25" }
routing = {
  smart_host = "192.0.2.9:25",
  routes = { ["bad domain"] = "hub.example", ["%AcmeEast"] = "hub.example:99999" },
}
]])
      assert.same({
        '/etc/luamta/luamta.lua:3: routing.smart_host: got string "192.0.2.9:25"; expected an IP address in brackets, '
          .. 'as in "[192.0.2.9]:25"',
        '/etc/luamta/luamta.lua:4: routing.routes["%AcmeEast"]: got string "hub.example:99999"; '
          .. "expected a port from 1 to 65535 after the colon",
        '/etc/luamta/luamta.lua:4: routing.routes["bad domain"]: bad destination; expected a domain such as '
          .. '["partner.example"] or a Domino domain such as ["%AcmeEast"]',
      }, errors)
    end)

    it("refuses a name server that is not an IP address with an optional port", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                               .. 'dns = { servers = "127.0.0.1:53, [2001:db8::53]:53, 192.0.2.53, ns.example" }')
      assert.same({ '/etc/luamta/luamta.lua:2: dns.servers[4]: got string "ns.example"; '
                    .. 'expected "ip", "ip:port" or "[ipv6]:port"' }, errors)
    end)

    it("refuses a rule module name with a slash and a module listed twice", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25", '
                               .. 'rules = "connection, ../evil, relay, relay" }')
      assert.equal(2, #errors)
      assert.matches('server.rules[2]: got string "../evil"; expected a rule module name', errors[1], 1, true)
      assert.matches('server.rules[4]: "relay" is listed twice', errors[2], 1, true)
    end)

    it("refuses a non-string list entry and names its index", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                               .. 'local_domains = { "example.org", 42 }')
      assert.same({ "/etc/luamta/luamta.lua:2: local_domains[2]: got number 42; expected a string" }, errors)
    end)

    it("refuses named keys inside a list", function()
      local errors = errors_of('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                               .. 'inbound = { sender = { deny = { "@spam.example", primary = "x" } } }')
      assert.equal(1, #errors)
      assert.matches("inbound.sender.deny.primary: unexpected named key in a list", errors[1], 1, true)
    end)
  end)

  describe("warnings", function()
    it("warns that enforce = \"none\" makes an open relay", function()
      local cfg, _, warnings = load('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                                 .. 'inbound = { relay = { enforce = "none" } }')
      assert.is_table(cfg)
      assert.equal(1, #warnings)
      assert.matches('^/etc/luamta/luamta.lua:2: inbound.relay.enforce: open relay', warnings[1])
    end)

    it("does not warn about listeners on loopback addresses", function()
      local _, _, warnings = load('server = { spool = "/s", listen = "127.0.0.1:25, [::1]:25, 127.9.9.9:2525" }')
      assert.same({}, warnings)
    end)

    it("returns warnings along with errors", function()
      local cfg, errors, warnings = load('server = { listen = "192.0.2.1:25" }')
      assert.is_nil(cfg)
      assert.equal(1, #errors)
      assert.equal(1, #warnings)
      assert.matches("listening on a public address without TLS", warnings[1], 1, true)
    end)
  end)

  describe("lists", function()
    it("splits a string on commas, semicolons and newlines, trims entries and drops empty ones", function()
      local cfg = load([[
server = { spool = "/s", listen = "127.0.0.1:25" }
local_domains = "example.org, *.example.org;example.net,,"
inbound = { relay = { allow_from = [=[
  [192.0.2.0/24]
  partner.example ;  ; AllowMail
]=] } }
]])
      assert.same({ "example.org", "*.example.org", "example.net" }, cfg.local_domains)
      assert.same({ "[192.0.2.0/24]", "partner.example", "AllowMail" }, cfg.inbound.relay.allow_from)
    end)

    it("trims the entries of an array and drops empty ones", function()
      local cfg = load([[
server = { spool = "/s", listen = "127.0.0.1:25" }
directory = { groups = { AllowMail = { " partner.example ", "", "@vendor.example" } },
              users = { { address = "a@example.org", aliases = "b@example.org; c@example.org" } } }
]])
      assert.same({ AllowMail = { "partner.example", "@vendor.example" } }, cfg.directory.groups)
      assert.same({ "b@example.org", "c@example.org" }, cfg.directory.users[1].aliases)
    end)

    it("accepts the listen list and name servers as one string", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25; [::1]:25" }\n'
                       .. 'dns = { servers = "127.0.0.1:53\\n[::1]:53" }')
      assert.same({ "127.0.0.1:25", "[::1]:25" }, { cfg.server.listen[1].text, cfg.server.listen[2].text })
      assert.same({ "127.0.0.1:53", "[::1]:53" }, cfg.dns.servers)
    end)

    it("does not parse the grammar of inbound list entries", function()
      local cfg = load('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                       .. 'inbound = { connection = { deny = "[123.123.12-*.123]" } }')
      assert.same({ "[123.123.12-*.123]" }, cfg.inbound.connection.deny)
    end)

    it("offers split_list to other modules", function()
      assert.same({ "a", "b", "c", "d" }, config.split_list("a, b;c\n d ,"))
      assert.same({ "a", "b" }, config.split_list({ " a", "", "b " }))
      local list, err = config.split_list({ "a", 2 })
      assert.is_nil(list)
      assert.matches("expected a string", err, 1, true)
      assert.is_nil((config.split_list(42)))
    end)
  end)

  describe("paths", function()
    it("resolves relative paths against the directory of the configuration file", function()
      local cfg = load([[
server = { spool = "../spool", rules_dir = "rules", listen = "127.0.0.1:25" }
tls = { cert = "./tls/cert.pem", key = "/etc/ssl/private/../private/key.pem" }
]])
      assert.equal("/etc/spool", cfg.server.spool)
      assert.equal("/etc/luamta/rules", cfg.server.rules_dir)
      assert.equal("/etc/luamta/tls/cert.pem", cfg.tls.cert)
      assert.equal("/etc/ssl/private/key.pem", cfg.tls.key)
    end)

    it("resolves relative paths against opts.basedir when it is given", function()
      local cfg = config.load_string('server = { spool = "spool", listen = "127.0.0.1:25" }', "=(test)",
                                     { basedir = "/srv/mail" })
      assert.equal("/srv/mail/spool", cfg.server.spool)
    end)

    it("puts the default Maildir under the resolved spool", function()
      local cfg = load('server = { spool = "spool", listen = "127.0.0.1:25" }')
      assert.equal("/etc/luamta/spool/mailboxes/%d/%u", cfg.delivery.maildir)
    end)

    it("replaces <spool> in a Maildir template and resolves a relative template", function()
      local a = load('server = { spool = "/var/spool/luamta", listen = "127.0.0.1:25" }\n'
                     .. 'delivery = { maildir = "<spool>/md/%d/%u" }')
      local b = load('server = { spool = "/var/spool/luamta", listen = "127.0.0.1:25" }\n'
                     .. 'delivery = { maildir = "../mail/%d/%u" }')
      assert.equal("/var/spool/luamta/md/%d/%u", a.delivery.maildir)
      assert.equal("/etc/mail/%d/%u", b.delivery.maildir)
    end)

    it("warns when the Maildir template has no %u", function()
      local cfg, _, warnings = load('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                                 .. 'delivery = { maildir = "/mail/%d" }')
      assert.is_table(cfg)
      assert.equal(1, #warnings)
      assert.matches("delivery.maildir: no %u", warnings[1], 1, true)
    end)
  end)

  describe("config.load", function()
    local files = {}
    local function tmpfile(content)
      local name = os.tmpname()
      files[#files + 1] = name
      write_file(name, content)
      return name
    end
    after_each(function()
      for _, f in ipairs(files) do os.remove(f) end
      files = {}
    end)

    it("reads a file and names it in its messages", function()
      local file = tmpfile('server = { spool = "spool", listen = "127.0.0.1:25" }\nlog = { levl = "debug" }\n')
      local cfg, errors = config.load(file)
      assert.is_nil(cfg)
      assert.same({ file .. ':2: log.levl: unknown key; did you mean "level"?' }, errors)
    end)

    it("resolves relative paths against the file's directory", function()
      local file = tmpfile('server = { spool = "spool", listen = "127.0.0.1:25" }\n')
      local cfg = config.load(file)
      assert.equal(dirname(file) .. "/spool", cfg.server.spool)
    end)

    it("returns nil and the reason when the file cannot be read", function()
      local cfg, errors, warnings = config.load("/nonexistent/luamta.lua")
      assert.is_nil(cfg)
      assert.matches("^/nonexistent/luamta.lua: No such file or directory", errors[1])
      assert.same({}, warnings)
    end)

    it("loads directory.file and merges its users and groups after the inline ones", function()
      local dir = tmpfile([[
-- users from the HR system
local domain = "example.org"
return {
  users = {
    { address = "jdoe@" .. domain, aliases = "john@example.org", password = "$6$x$y" },
  },
  groups = { Partners = "partner.example, @vendor.example" },
}
]])
      local file = tmpfile(string.format([[
server = { spool = "/s", listen = "127.0.0.1:25" }
directory = {
  users = { { address = "postmaster@example.org" } },
  groups = { AllowMail = { "[192.0.2.*]" } },
  file = %q,
  lookup = "full",
}
]], basename(dir)))
      local cfg, errors = config.load(file)
      assert.is_table(cfg, errors and errors[1])
      assert.same({
        users = {
          { address = "postmaster@example.org", aliases = {} },
          { address = "jdoe@example.org", aliases = { "john@example.org" }, password = "$6$x$y" },
        },
        groups = { AllowMail = { "[192.0.2.*]" }, Partners = { "partner.example", "@vendor.example" } },
        file = dir,
        lookup = "full",
      }, cfg.directory)
    end)

    it("reports errors inside directory.file with that file's name and line", function()
      local dir = tmpfile('return {\n  users = {\n    { adress = "jdoe@example.org" },\n  },\n}\n')
      local file = tmpfile(string.format('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                                         .. 'directory = { file = %q }\n', dir))
      local cfg, errors = config.load(file)
      assert.is_nil(cfg)
      assert.same({
        dir .. ':3: directory.users[1].adress: unknown key; did you mean "address"?',
        dir .. ':3: directory.users[1].address: missing; expected an address such as address = "jdoe@example.com"',
      }, errors)
    end)

    it("refuses a directory file that sets names instead of returning a table", function()
      local dir = tmpfile('users = {}\n')
      local file = tmpfile(string.format('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                                         .. 'directory = { file = %q }\n', dir))
      local _, errors = config.load(file)
      assert.equal(1, #errors)
      assert.matches("^" .. dir:gsub("%p", "%%%0") .. ":1: cannot set 'users'", errors[1])
    end)

    it("refuses a group defined both inline and in directory.file", function()
      local dir = tmpfile('return { groups = {\n  AllowMail = "a.example" } }\n')
      local file = tmpfile(string.format('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                                         .. 'directory = { groups = { AllowMail = "b.example" }, file = %q }\n',
                                         dir))
      local _, errors = config.load(file)
      assert.same({ dir .. ':2: directory.groups.AllowMail: "AllowMail" is also defined inline; '
                    .. "expected each group once" }, errors)
    end)

    it("reports a directory.file that cannot be read at the line that names it", function()
      local file = tmpfile('server = { spool = "/s", listen = "127.0.0.1:25" }\n'
                           .. 'directory = {\n  file = "/nonexistent/users.lua",\n}\n')
      local _, errors = config.load(file)
      assert.equal(1, #errors)
      assert.matches("^" .. file:gsub("%p", "%%%0") .. ":3: directory.file: cannot read it", errors[1])
    end)
  end)

  describe("routing host values", function()
    it("normalises relay_host, smart_host and routes, filling in routing.port", function()
      local cfg = load([[
server = { spool = "/s", listen = "127.0.0.1:25" }
routing = {
  relay_host = "relay.example.net",
  smart_host = "[2001:db8::25]:2525",
  routes = { ["partner.example"] = "[192.0.2.9]", ["%AcmeEast"] = "hub.example:26" },
  port = 587,
}
]])
      assert.same({ text = "relay.example.net", host = "relay.example.net", port = 587, literal = false },
                  cfg.routing.relay_host)
      assert.same({ text = "[2001:db8::25]:2525", host = "2001:db8::25", port = 2525, literal = true },
                  cfg.routing.smart_host)
      assert.same({
        ["partner.example"] = { text = "[192.0.2.9]", host = "192.0.2.9", port = 587, literal = true },
        ["%AcmeEast"] = { text = "hub.example:26", host = "hub.example", port = 26, literal = false },
      }, cfg.routing.routes)
    end)

    it("offers parse_host, which leaves the port out when the value names none", function()
      assert.same({ text = "mx.example.org", host = "mx.example.org", literal = false },
                  config.parse_host("mx.example.org"))
      assert.same({ text = "[192.0.2.1]:25", host = "192.0.2.1", port = 25, literal = true },
                  config.parse_host(" [192.0.2.1]:25 "))
    end)

    it("refuses host values that are not name, name:port or [ip]:port", function()
      for _, bad in ipairs({ "", "a b", "host:", "host:0", "[192.0.2.1", "[192.0.2.300]:25", "[::1]25",
                             "192.0.2.1", "2001:db8::1", "-bad.example" }) do
        local h, err = config.parse_host(bad)
        assert.is_nil(h, bad)
        assert.matches("^expected ", err)
      end
    end)
  end)

  describe("suggest", function()
    it("suggests the nearest candidate within two edits, ignoring case", function()
      assert.equal("listen", config.suggest("listn", { "spool", "listen" }))
      assert.equal("server", config.suggest("sevrer", { "server", "tls" }))
      assert.equal("server", config.suggest("Server", { "server", "tls" }))
    end)

    it("suggests nothing for a name that is far from every candidate", function()
      assert.is_nil(config.suggest("workforce", { "workers", "spool" }))
      assert.is_nil(config.suggest("xy", { "log", "tls" }))
    end)

    it("accepts a table whose keys are the candidates", function()
      assert.equal("timeout", config.suggest("timout", { timeout = true, tries = true }))
    end)
  end)

  describe("sandbox", function()
    it("gives the file no print, io, os, require or load", function()
      for _, name in ipairs({ "print", "io", "os", "require", "load", "dofile", "debug", "setmetatable" }) do
        local errors = errors_of("local x = " .. name .. "\n")
        assert.matches("unknown name '" .. name .. "'", errors[1], 1, true)
      end
    end)

    it("gives the file string, table, math and the basic functions", function()
      local cfg = load([[
local parts = {}
for _, d in ipairs({ "org", "net" }) do parts[#parts + 1] = string.format("example.%s", d) end
server = { spool = "/s", listen = "127.0.0.1:25", max_recipients = math.floor(10.5) * 10 }
local_domains = table.concat(parts, ",")
local ok = pcall(error, "x")
assert(not ok and type(tonumber("3")) == "number" and select("#", 1, 2) == 2 and utf8.char(65) == "A")
]])
      assert.same({ "example.org", "example.net" }, cfg.local_domains)
      assert.equal(100, cfg.server.max_recipients)
    end)

    it("keeps the server's own libraries safe from the file", function()
      local format = string.format
      load('string.format = nil\ntable.concat = nil\nserver = { spool = "/s", listen = "127.0.0.1:25" }')
      assert.equal(format, string.format)
      assert.is_function(table.concat)
    end)

    it("lets the file read back a section it assigned", function()
      local cfg = load('server = { spool = "/s" }\nserver.listen = { "127.0.0.1:25" }\n')
      assert.equal("127.0.0.1:25", cfg.server.listen[1].text)
    end)

    it("refuses bytecode", function()
      local bytecode = string.dump(function() end)
      local errors = errors_of(bytecode)
      assert.matches("binary", errors[1])
    end)
  end)

  describe("examples/quickstart.lua", function()
    it("loads without errors or warnings", function()
      local cfg, _, warnings = config.load("examples/quickstart.lua", { hostname = "build.example", ncpu = 4 })
      assert.is_table(cfg, warnings and warnings[1])
      assert.same({}, warnings)
    end)

    it("listens on 127.0.0.1:2525 and keeps its files under run/ at the top of the tree", function()
      local pwd = assert(io.popen("pwd")):read("l")
      local cfg = assert(config.load(pwd .. "/examples/quickstart.lua"))
      assert.same({ { text = "127.0.0.1:2525", host = "127.0.0.1", port = 2525, family = "inet", tls = "none",
                      submission = false } }, cfg.server.listen)
      assert.equal(pwd .. "/run/spool", cfg.server.spool)
      assert.equal(pwd .. "/run/rules", cfg.server.rules_dir)
      assert.equal(pwd .. "/run/mailboxes/%d/%u", cfg.delivery.maildir)
      assert.equal("quickstart.example.test", cfg.server.hostname)
      assert.equal(2, cfg.server.workers)
    end)

    it("receives mail for example.test, for postmaster and jdoe (also known as john)", function()
      local cfg = assert(config.load("examples/quickstart.lua"))
      assert.same({ "example.test" }, cfg.local_domains)
      assert.same({ "postmaster@example.test", "jdoe@example.test" },
                  { cfg.directory.users[1].address, cfg.directory.users[2].address })
      assert.same({ "john@example.test" }, cfg.directory.users[2].aliases)
    end)
  end)
end)

describe("luamta.config submission listeners", function()
  it("warns that a submission listener without TLS can take no mail, since AUTH needs TLS", function()
    local config = require "luamta.config"
    local cfg, _, warnings = config.load_string(
      'server = { spool = "/tmp/x", listen = { { "127.0.0.1:2587", submission = true } } }', "@/etc/luamta/l.lua")
    assert.truthy(cfg)
    local found
    for _, w in ipairs(warnings or {}) do
      if w:find("a submission listener without TLS", 1, true) then found = w end
    end
    assert.truthy(found, table.concat(warnings or {}, "\n"))
  end)
end)
