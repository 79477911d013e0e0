/*
 * cfg.h - the C core's view of a loaded configuration. The configuration is a Lua file checked and normalised by
 * lua/luamta/config.lua; cfg_from_lua() copies the fields the core needs out of that table, so that C code never
 * touches the Lua state to read a limit. A struct config belongs to one Lua generation (lb.c) and lives as long
 * as it.
 */
#ifndef CFG_H
#define CFG_H

#include <stddef.h>

struct lua_State;

enum cfg_tls { CFG_TLS_NONE, CFG_TLS_STARTTLS, CFG_TLS_IMPLICIT };

struct cfg_listen {
	char		 text[128];		/* "127.0.0.1:2525", as configured, for logs */
	char		 host[64];		/* numeric address */
	int		 port;
	int		 family;		/* AF_INET or AF_INET6 */
	enum cfg_tls	 tls;
	int		 submission;
	int		 local;			/* pickup's local submissions: only the message stage asks the rules */
};

#define CFG_TLS_PAIRS_MAX	4	/* as TLS_PAIRS_MAX in tls.h */

struct config {
	char			*path;			/* owns: the configuration file */
	char			*hostname;		/* owns */
	struct cfg_listen	*listen;		/* owns nlisten entries */
	size_t			 nlisten;
	char			*spool;			/* owns: absolute */
	char			*rules_dir;		/* owns: absolute, or NULL */
	char			*metrics_listen;	/* owns: "host:port" of GET /metrics, or NULL */
	int			 trace_enabled;
	int			 trace_keep_days;
	long			 trace_max_mb;
	char			*trace_dir;		/* owns: <spool>/trace */
	char			*user;			/* owns; NULL = stay as started */
	int			 workers;
	unsigned long long	 max_message_size;
	int			 max_recipients;
	int			 max_hops;		/* Received: fields that make a loop */
	int			 max_connections;
	int			 max_connections_per_ip;
	double			 timeout_command;
	double			 timeout_data;
	double			 greeting_delay;
	int			 bare_normalize;	/* bare_newline = "normalize" */
	int			 max_errors;		/* inbound.connection.max_errors */
	int			 max_junk;		/* inbound.connection.max_junk_commands */
	int			 log_level;		/* enum log_level */
	int			 log_syslog;
	char			*log_file;		/* owns: log.file, or NULL */
	char			*log_facility;		/* owns: log.facility */
	char			*log_ident;		/* owns: log.ident */
	char			*maildir;		/* owns: delivery.maildir template */
	char			*lmtp;			/* owns: delivery.lmtp ("unix:/path" or "ip:port"), or NULL */
	char			*tls_cert;		/* owns: tls.cert, or NULL */
	char			*tls_key;		/* owns: tls.key, or NULL */
	char			*tls_certs[CFG_TLS_PAIRS_MAX];	/* owns: every pair, tls.cert/tls.key first */
	char			*tls_keys[CFG_TLS_PAIRS_MAX];
	size_t			 ntls_pairs;
	unsigned		 tls_ticket_period;	/* seconds a shared session-ticket key is issued */
	int			 routing_tls;		/* 0 none, 1 opportunistic, 2 required */
	char			*dns_servers;		/* owns: "ip:port,..." for c-ares, or NULL (resolv.conf) */
	double			 dns_timeout;
	int			 dns_tries;
	double			*retry;			/* owns nretry: routing.retry */
	size_t			 nretry;
	double			 max_queue_time;
	double			 delay_warning;		/* 0 = never */
	int			 max_per_domain;
	size_t			 active_limit;		/* routing.active_limit: messages in the router at once */
	double			 connect_timeout;	/* routing.timeouts.connect */
	double			 reply_timeout;		/* routing.timeouts.reply */
	int			 dkim_sign;		/* dkim.sign lists keys: hash signable bodies as they arrive */
};

/*
 * cfg_from_lua - fill c from the normalised configuration table at index idx. Returns 0, or -1 with a message in
 * err when a field the core needs is missing (a bug in config.lua rather than in the user's file).
 */
int		 cfg_from_lua(struct lua_State *L, int idx, const char *path, struct config *c, char *err, size_t errsize);
void		 cfg_free(struct config *);

#endif
