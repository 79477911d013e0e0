-- examples/domino.lua - every field of Domino's "SMTP Inbound Controls" tab and Router/SMTP settings, as luamta
-- keys. Each comment quotes the Domino label (English, then the Japanese label of the Domino help page), so an
-- administrator moving from Domino can copy values field by field. docs/domino.md explains each one.
--
-- It starts as it is, from the top of the source tree: src/luamta run -c examples/domino.lua
-- (SMTP on 127.0.0.1:2526; DNS from a resolver on 127.0.0.1:5353, such as the dnsmasq the tests start; with no
-- resolver there, DNS lookups time out, and every control treats a timeout as SPEC section 5 says).

server = {
  hostname = "mailhub.acme.test",
  listen = { "127.0.0.1:2526" },
  spool = "../run/domino-spool",
  workers = 1,
  rules_dir = "../run/domino-rules",
  -- The bundled rule modules, in the order the controls apply (SPEC section 5).
  rules = { "connection", "filters", "sender", "relay", "recipient" },
}

dns = {
  servers = { "127.0.0.1:5353" },
  timeout = 2,
  tries = 1,
  -- Domino trusts the PTR name alone; luamta by default also checks that the name points back to the address.
  verify_ptr = "forward_confirmed",
}

-- Global Domain document: "Local primary Internet domain" and "Internet domain aliases".
local_domains = { "acme.test", "*.acme.test", "acme-east.test" }

-- Domino Directory: people (with their Internet addresses) and groups.
directory = {
  users = {
    { address = "jdoe@acme.test", name = "John Doe", aliases = { "john.doe@acme.test" } },
    { address = "postmaster@acme.test", name = "Postmaster" },
  },
  groups = {
    -- A group can be named in any list instead of its members (nested groups are allowed).
    TrustedRelays = { "[192.0.2.0/24]", "gw.partner.test" },
    Partners = { "@partner.test", "vendor.test" },
  },
  lookup = "full_then_localpart",
}

inbound = {
  relay = {
    -- "Allow messages only to the following external internet domains"
    -- (次の拡張インターネットドメイン宛てのメッセージのみを許可)
    allow_to = { "@partner.test" },
    -- "Deny messages to the following external internet domains" (* = all)
    -- (次の拡張インターネットドメイン宛てのメッセージを拒否)
    deny_to = { "*" },
    -- "Allow messages only from the following internet hosts to be sent to external internet domains"
    -- (次のインターネットホストからのメールのみ、拡張インターネットドメインへの送信を許可)
    allow_from = { "TrustedRelays" },
    -- "Deny messages from the following internet hosts to be sent to external internet domains" (* = all)
    -- (次のインターネットホストからの拡張インターネットドメイン宛てメッセージを拒否)
    deny_from = { "[198.51.100.0/24]" },
    -- notes.ini SMTPRelayHostsandDomains: "allow" (Domino 6 and later: Allow wins) or "deny" (Domino 5)
    precedence = "allow",
    -- "Perform anti-relay enforcement for these connecting hosts"
    -- (指定した接続ホストへアンチリレー制限を実施する): "external", "all" or "none"
    enforce = "external",
    -- "Exceptions for authenticated users" (認証ユーザーの例外): "allow" (authenticated users may relay)
    -- or "check" (they are checked like everyone else)
    authenticated = "allow",
    -- "Exclude these connecting hosts from anti-relay checks" (指定した接続ホストをアンチリレーチェックから除外する)
    exclude = { "[127.0.0.1]" },
  },
  -- "DNS blacklist filters" / "DNS blacklist sites" / "Desired action when a connecting host is found in a DNS
  -- blacklist" / "Custom SMTP error response for denied connections" (DNS ブラックリストフィルタ)
  dnsbl = {
    enabled = true,
    sites = { "bl.dnsbl.test" },
    action = "reject",                 -- "log", "tag" or "reject"
    message = "Your host %s is listed at %s",   -- 1st %s: client IP, 2nd %s: the site
  },
  -- "DNS whitelist filters" / "DNS whitelist sites" / "Desired action ..." (DNS ホワイトリストフィルタ)
  dnswl = {
    enabled = true,
    sites = { "wl.dnswl.test" },
    action = "skip",                   -- "skip", "log" or "tag"
  },
  -- "Private blacklist filters" / hosts / action / custom error (個人ブラックリストのフィルタ)
  blacklist = {
    enabled = true,
    hosts = { "[203.0.113.0/24]", "spammer.test" },
    action = "reject",
    message = "Host %s is on our private blacklist",   -- %s: client IP
  },
  -- "Private whitelist filters" / hosts / action (個人ホワイトリストのフィルタ)
  whitelist = {
    enabled = true,
    hosts = { "[192.0.2.10]" },
    action = "skip",
  },
  connection = {
    -- "Verify connecting host name in DNS" (接続するホスト名を DNS で確認)
    verify_hostname = false,
    -- "Allow connections only from the following SMTP internet host names/IP addresses"
    -- (次のホスト名、IP アドレスの SMTP ホストからの接続のみを許可)
    allow = {},
    -- "Deny connections from the following SMTP internet host names/IP addresses"
    -- (次の SMTP インターネットホスト名/IP アドレスからの接続を拒否)
    deny = { "[192.0.2.66]" },
    -- "Error limit before connection is terminated" (接続が終了されるエラー数制限)
    max_errors = 20,
  },
  sender = {
    -- "Verify sender's domain in DNS" (送信者のドメインを DNS で確認)
    verify_domain = true,
    -- "Allow messages only from the following external internet addresses/domains"
    -- (次の外部インターネットアドレス/ドメインからのメールのみを許可)
    allow = {},
    -- "Deny messages from the following external internet addresses/domains"
    -- (次の外部インターネットアドレス/ドメインからのメールを拒否)
    deny = { "@spam.test", "bad.sender@example.test" },
  },
  recipient = {
    -- "Verify that local domain recipients exist in the Domino Directory"
    -- (Domino ディレクトリにあるローカルドメイン受信者を確認)
    verify_local = true,
    -- "Allow messages intended only for the following internet addresses"
    -- (次のインターネットアドレスへのみ、メールを許可)
    allow = {},
    -- "Deny messages intended for the following internet addresses"
    -- (次のインターネットアドレス宛てのメールを拒否)
    deny = { "noreply@acme.test" },
  },
}

routing = {
  -- "SMTP used when sending messages outside the local internet domain"
  -- (ローカルインターネットドメイン外にメールを送信するとき、SMTP を使用)
  smtp_outbound = true,
  -- "Relay host for messages leaving the local internet domain"
  -- (ローカルインターネットドメインから送信されるメールのリレーホスト)
  relay_host = nil,
  -- "Local internet domain smart host" (ローカルインターネットドメインスマートホスト)
  smart_host = nil,
  -- "Smart host is used for all local internet domain recipients"
  -- (すべてのローカルインターネットドメイン受信者用にスマートホストを使用)
  smart_host_all = false,
  -- Foreign SMTP Domain / Connection documents: a domain or a Domino domain pinned to a next hop.
  routes = { ["%AcmeEast"] = "hub.acme-east.test" },
}

delivery = {
  maildir = "../run/domino-mailboxes/%d/%u",
}
