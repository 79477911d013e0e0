/*
 * cfg.c - copy the normalised configuration table (built by lua/luamta/config.lua) into struct config. It never
 * validates what config.lua already validated; a missing field here is a bug, reported as such.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "cfg.h"
#include "log.h"
#include "util.h"

struct cfg_ctx {
	lua_State	*L;
	char		*err;
	size_t		 errsize;
	int		 failed;
};

static void
cfg_missing(struct cfg_ctx *x, const char *path)
{
	if (!x->failed)
		snprintf(x->err, x->errsize, "configuration field %s missing or of the wrong type", path);
	x->failed = 1;
}

/* Each getter reads field name of the table on top of the stack and leaves the stack as it found it. */
static double
cfg_num(struct cfg_ctx *x, const char *name, const char *path)
{
	double	 v = 0;

	lua_getfield(x->L, -1, name);		/* [.. t v] */
	if (lua_type(x->L, -1) == LUA_TNUMBER)
		v = lua_tonumber(x->L, -1);
	else
		cfg_missing(x, path);
	lua_pop(x->L, 1);			/* [.. t] */
	return v;
}

static int
cfg_bool(struct cfg_ctx *x, const char *name)
{
	int	 v;

	lua_getfield(x->L, -1, name);		/* [.. t v] */
	v = lua_toboolean(x->L, -1);
	lua_pop(x->L, 1);
	return v;
}

/* cfg_str - a copy of the string field, or NULL when absent and optional. */
static char *
cfg_str(struct cfg_ctx *x, const char *name, const char *path, int optional)
{
	char	*v = NULL;

	lua_getfield(x->L, -1, name);		/* [.. t v] */
	if (lua_type(x->L, -1) == LUA_TSTRING)
		v = xstrdup(lua_tostring(x->L, -1));
	else if (!(optional && lua_isnil(x->L, -1)))
		cfg_missing(x, path);
	lua_pop(x->L, 1);
	return v;
}

static int
cfg_table(struct cfg_ctx *x, const char *name, const char *path)
{
	lua_getfield(x->L, -1, name);		/* [.. t sub] */
	if (lua_istable(x->L, -1))
		return 1;
	lua_pop(x->L, 1);
	cfg_missing(x, path);
	return 0;
}

static void
cfg_listeners(struct cfg_ctx *x, struct config *c)
{
	lua_State	*L = x->L;
	size_t		 i, n;

	if (!cfg_table(x, "listen", "server.listen"))
		return;
	n = lua_rawlen(L, -1);
	c->listen = xcalloc(n, sizeof(*c->listen));
	for (i = 0; i < n; i++) {
		struct cfg_listen	*l = &c->listen[i];
		const char		*s;

		lua_rawgeti(L, -1, (lua_Integer)i + 1);	/* [.. listen entry] */
		if (!lua_istable(L, -1)) {
			lua_pop(L, 1);
			cfg_missing(x, "server.listen[]");
			continue;
		}
		lua_getfield(L, -1, "text");
		util_strlcpy(l->text, luaL_optstring(L, -1, "?"), sizeof(l->text));
		lua_getfield(L, -2, "host");
		util_strlcpy(l->host, luaL_optstring(L, -1, ""), sizeof(l->host));
		lua_getfield(L, -3, "family");
		s = luaL_optstring(L, -1, "inet");
		l->family = strcmp(s, "inet6") == 0 ? AF_INET6 : AF_INET;
		lua_getfield(L, -4, "tls");
		s = luaL_optstring(L, -1, "none");
		l->tls = strcmp(s, "starttls") == 0 ? CFG_TLS_STARTTLS :
		    strcmp(s, "implicit") == 0 ? CFG_TLS_IMPLICIT : CFG_TLS_NONE;
		lua_pop(L, 4);				/* [.. listen entry] */
		l->port = (int)cfg_num(x, "port", "server.listen[].port");
		l->submission = cfg_bool(x, "submission");
		lua_pop(L, 1);				/* [.. listen] */
		c->nlisten++;
	}
	lua_pop(L, 1);
}

int
cfg_from_lua(lua_State *L, int idx, const char *path, struct config *c, char *err, size_t errsize)
{
	struct cfg_ctx	 x = { L, err, errsize, 0 };
	char		*s;

	memset(c, 0, sizeof(*c));
	c->path = xstrdup(path);
	lua_pushvalue(L, idx);				/* [.. cfg] */
	if (cfg_table(&x, "server", "server")) {	/* [.. cfg server] */
		c->hostname = cfg_str(&x, "hostname", "server.hostname", 0);
		c->spool = cfg_str(&x, "spool", "server.spool", 0);
		c->rules_dir = cfg_str(&x, "rules_dir", "server.rules_dir", 1);
		c->user = cfg_str(&x, "user", "server.user", 1);
		c->workers = (int)cfg_num(&x, "workers", "server.workers");
		c->max_message_size = (unsigned long long)cfg_num(&x, "max_message_size",
		    "server.max_message_size");
		c->max_recipients = (int)cfg_num(&x, "max_recipients", "server.max_recipients");
		c->max_hops = (int)cfg_num(&x, "max_hops", "server.max_hops");
		c->max_connections = (int)cfg_num(&x, "max_connections", "server.max_connections");
		c->max_connections_per_ip = (int)cfg_num(&x, "max_connections_per_ip",
		    "server.max_connections_per_ip");
		c->greeting_delay = cfg_num(&x, "greeting_delay", "server.greeting_delay");
		s = cfg_str(&x, "bare_newline", "server.bare_newline", 0);
		c->bare_normalize = s != NULL && strcmp(s, "normalize") == 0;
		free(s);
		if (cfg_table(&x, "timeouts", "server.timeouts")) {
			c->timeout_command = cfg_num(&x, "command", "server.timeouts.command");
			c->timeout_data = cfg_num(&x, "data", "server.timeouts.data");
			lua_pop(L, 1);
		}
		cfg_listeners(&x, c);
		lua_pop(L, 1);				/* [.. cfg] */
	}
	if (cfg_table(&x, "log", "log")) {
		s = cfg_str(&x, "level", "log.level", 0);
		c->log_level = s ? log_level_from_name(s) : LOG_L_INFO;
		if (c->log_level < 0)
			c->log_level = LOG_L_INFO;
		free(s);
		c->log_syslog = cfg_bool(&x, "syslog");
		c->log_file = cfg_str(&x, "file", "log.file", 1);
		c->log_facility = cfg_str(&x, "facility", "log.facility", 0);
		c->log_ident = cfg_str(&x, "ident", "log.ident", 0);
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "trace", "trace")) {
		c->trace_enabled = cfg_bool(&x, "enabled");
		c->trace_keep_days = (int)cfg_num(&x, "keep_days", "trace.keep_days");
		c->trace_max_mb = (long)cfg_num(&x, "max_mb", "trace.max_mb");
		lua_pop(L, 1);
	}
	if (c->spool != NULL) {
		size_t	 n = strlen(c->spool) + sizeof("/trace");

		c->trace_dir = xmalloc(n);
		snprintf(c->trace_dir, n, "%s/trace", c->spool);
	}
	if (cfg_table(&x, "metrics", "metrics")) {
		c->metrics_listen = cfg_str(&x, "listen", "metrics.listen", 1);
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "inbound", "inbound")) {
		if (cfg_table(&x, "connection", "inbound.connection")) {
			c->max_errors = (int)cfg_num(&x, "max_errors", "inbound.connection.max_errors");
			c->max_junk = (int)cfg_num(&x, "max_junk_commands",
			    "inbound.connection.max_junk_commands");
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "dns", "dns")) {
		c->dns_timeout = cfg_num(&x, "timeout", "dns.timeout");
		c->dns_tries = (int)cfg_num(&x, "tries", "dns.tries");
		lua_getfield(L, -1, "servers");			/* [.. dns servers] */
		if (lua_istable(L, -1) && lua_rawlen(L, -1) > 0) {
			luaL_Buffer	 b;
			size_t		 i, n = lua_rawlen(L, -1);
			int		 list = lua_absindex(L, -1);	/* the buffer may use stack slots */

			luaL_buffinit(L, &b);
			for (i = 1; i <= n; i++) {
				lua_rawgeti(L, list, (lua_Integer)i);
				if (i > 1)
					luaL_addchar(&b, ',');
				luaL_addvalue(&b);
			}
			luaL_pushresult(&b);			/* [.. dns servers csv] */
			c->dns_servers = xstrdup(lua_tostring(L, -1));
			lua_pop(L, 1);
		}
		lua_pop(L, 2);					/* [.. cfg] */
	}
	if (cfg_table(&x, "tls", "tls")) {
		c->tls_cert = cfg_str(&x, "cert", "tls.cert", 1);
		c->tls_key = cfg_str(&x, "key", "tls.key", 1);
		c->tls_ticket_period = (unsigned)cfg_num(&x, "ticket_period", "tls.ticket_period");
		if (cfg_table(&x, "pairs", "tls.pairs")) {
			size_t	 i, n = lua_rawlen(L, -1);

			for (i = 0; i < n && i < CFG_TLS_PAIRS_MAX; i++) {
				lua_rawgeti(L, -1, (lua_Integer)i + 1);	/* [.. pairs pair] */
				c->tls_certs[c->ntls_pairs] = cfg_str(&x, "cert", "tls.certs[].cert", 0);
				c->tls_keys[c->ntls_pairs] = cfg_str(&x, "key", "tls.certs[].key", 0);
				c->ntls_pairs++;
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "routing", "routing")) {
		size_t	 i;

		s = cfg_str(&x, "tls", "routing.tls", 0);
		c->routing_tls = s == NULL ? 1 : strcmp(s, "none") == 0 ? 0 : strcmp(s, "required") == 0 ? 2 : 1;
		free(s);
		c->max_queue_time = cfg_num(&x, "max_queue_time", "routing.max_queue_time");
		c->delay_warning = cfg_num(&x, "delay_warning", "routing.delay_warning");
		c->max_per_domain = (int)cfg_num(&x, "max_per_domain", "routing.max_per_domain");
		c->active_limit = (size_t)cfg_num(&x, "active_limit", "routing.active_limit");
		if (cfg_table(&x, "retry", "routing.retry")) {
			c->nretry = lua_rawlen(L, -1);
			c->retry = xcalloc(c->nretry ? c->nretry : 1, sizeof(*c->retry));
			for (i = 0; i < c->nretry; i++) {
				lua_rawgeti(L, -1, (lua_Integer)i + 1);
				c->retry[i] = lua_tonumber(L, -1);
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		}
		if (cfg_table(&x, "timeouts", "routing.timeouts")) {
			c->connect_timeout = cfg_num(&x, "connect", "routing.timeouts.connect");
			c->reply_timeout = cfg_num(&x, "reply", "routing.timeouts.reply");
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "delivery", "delivery")) {
		c->maildir = cfg_str(&x, "maildir", "delivery.maildir", 0);
		c->lmtp = cfg_str(&x, "lmtp", "delivery.lmtp", 1);
		lua_pop(L, 1);
	}
	if (cfg_table(&x, "dkim", "dkim")) {
		if (cfg_table(&x, "sign", "dkim.sign")) {
			c->dkim_sign = lua_rawlen(L, -1) > 0;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);					/* [..] */
	if (x.failed) {
		cfg_free(c);
		return -1;
	}
	return 0;
}

void
cfg_free(struct config *c)
{
	size_t	 i;

	if (c == NULL)
		return;
	free(c->path);
	free(c->hostname);
	free(c->listen);
	free(c->spool);
	free(c->rules_dir);
	free(c->metrics_listen);
	free(c->trace_dir);
	free(c->user);
	free(c->maildir);
	free(c->lmtp);
	free(c->log_file);
	free(c->log_facility);
	free(c->log_ident);
	free(c->dns_servers);
	free(c->retry);
	free(c->tls_cert);
	free(c->tls_key);
	for (i = 0; i < c->ntls_pairs; i++) {
		free(c->tls_certs[i]);
		free(c->tls_keys[i]);
	}
	memset(c, 0, sizeof(*c));
}
