/*
 * lb_redis.c - mta.redis(NAME) for rules (docs/callouts.md): a client of the Redis (or Valkey) server that
 * redis.NAME names in the configuration, on hiredis's asynchronous API and its libevent adapter. r:call(cmd, ...)
 * and r:eval(script, keys, args) make the rule's coroutine wait (lb_run_prepare_wait()/lb_run_yield(), as
 * mta.dns does); lb_redis_reply() resumes it with the reply, or nil and an error ("timeout", "connection lost",
 * "not connected", "circuit open", or Redis's own "ERR ..."). eval sends EVALSHA and falls back to EVAL when the
 * server answers NOSCRIPT (EVAL loads the script for the next time). Each worker keeps a small pool of
 * connections per name, opened on first use and again after a failure, no sooner than a backoff that doubles
 * up to LB_REDIS_BACKOFF_MAX. hiredis here has no TLS and resolves no names: the address is an IP and port, or
 * a Unix socket, on a private network. A command carries the run's id, not a pointer: an answer for a run that
 * was cancelled is dropped.
 *	lb_redis_register()	core.redis
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <lauxlib.h>
#include <lua.h>
#include <mbedtls/sha1.h>

#include "lb.h"
#include "lb_callout.h"
#include "log.h"
#include "util.h"

#define LB_REDIS_MT		"luamta.redis"
#define LB_REDIS_POOLS		32	/* names per process */
#define LB_REDIS_CONNS		8	/* connections per name at most (redis.NAME.pool) */
#define LB_REDIS_NAME_MAX	64
#define LB_REDIS_ARGS_MAX	1024	/* arguments of one command */
#define LB_REDIS_DEPTH_MAX	8	/* nesting of array replies given to Lua */
#define LB_REDIS_BACKOFF_MIN	0.1	/* seconds before the first reconnect */
#define LB_REDIS_BACKOFF_MAX	5.0

struct lb_redis_pool;

struct lb_redis_conn {
	redisAsyncContext	*ac;		/* owned by hiredis once attached; NULL when closed */
	struct lb_redis_pool	*pool;		/* borrowed: pools live as long as the process */
};

struct lb_redis_pool {
	char			 name[LB_REDIS_NAME_MAX];
	char			 address[300];	/* "ip:port", "[ip6]:port" or "unix:/path" */
	char			 password[256];
	int			 db;
	int			 size;		/* connections used */
	double			 timeout;	/* seconds per command */
	int			 failures;	/* breaker */
	double			 cooldown;
	struct lb_redis_conn	 conns[LB_REDIS_CONNS];
	int			 next;		/* round robin */
	double			 retry_at;	/* no new connection before (monotonic) */
	double			 backoff;
	struct lb_breaker	*breaker;	/* borrowed */
	struct event_base	*base;		/* borrowed */
};

struct lb_redis_cmd {
	uint64_t		 run;
	struct lb_redis_pool	*pool;		/* borrowed */
	struct event		*timer;		/* owned */
	int			 abandoned;	/* timed out: the reply, when it comes, is dropped */
	int			 evalsha;	/* argv[0] is EVALSHA; script is what EVAL sends on NOSCRIPT */
	char			*script;	/* owned */
	size_t			 script_len;
	int			 argc;
	char			**argv;		/* owned, with each argument */
	size_t			*argvlen;	/* owned */
};

struct lb_redis_handle {
	char			 name[LB_REDIS_NAME_MAX];
};

static struct lb_redis_pool	*lb_redis_pools[LB_REDIS_POOLS];
static int			 lb_redis_npools;

static void
lb_redis_cmd_free(struct lb_redis_cmd *c)
{
	int	 i;

	if (c->timer != NULL)
		event_free(c->timer);
	for (i = 0; i < c->argc; i++)
		free(c->argv[i]);
	free(c->argv);
	free(c->argvlen);
	free(c->script);
	free(c);
}

/* lb_redis_drop - forget a connection and close it; hiredis fails its pending commands (reply NULL). */
static void
lb_redis_drop(struct lb_redis_conn *conn)
{
	redisAsyncContext	*ac = conn->ac;

	if (ac == NULL)
		return;
	conn->ac = NULL;	/* first: the failed commands may resume rules that ask for a connection */
	ac->data = NULL;
	redisAsyncFree(ac);
}

static void
lb_redis_connected(const redisAsyncContext *ac, int status)
{
	struct lb_redis_conn	*conn = ac->data;
	struct lb_redis_pool	*p;

	if (conn == NULL)
		return;
	p = conn->pool;
	if (status != REDIS_OK) {
		log_warn("redis name=%s address=%s cannot connect: %s; next try in %gs", p->name, p->address,
		    ac->errstr, p->backoff);
		if (conn->ac == ac)
			conn->ac = NULL;	/* hiredis frees ac after this callback */
		p->retry_at = lb_callout_now() + p->backoff;
		p->backoff = p->backoff * 2 > LB_REDIS_BACKOFF_MAX ? LB_REDIS_BACKOFF_MAX : p->backoff * 2;
		return;
	}
	p->backoff = LB_REDIS_BACKOFF_MIN;
	log_info("redis name=%s address=%s connected", p->name, p->address);
}

static void
lb_redis_disconnected(const redisAsyncContext *ac, int status)
{
	struct lb_redis_conn	*conn = ac->data;

	if (conn == NULL || conn->ac != ac)
		return;
	conn->ac = NULL;
	if (status != REDIS_OK) {
		log_warn("redis name=%s address=%s connection lost: %s", conn->pool->name, conn->pool->address,
		    ac->errstr);
		conn->pool->retry_at = lb_callout_now() + conn->pool->backoff;
	}
}

/* lb_redis_setup_reply - the answer to AUTH or SELECT sent on connecting: a refusal closes the connection. */
static void
lb_redis_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply		*reply = r;
	struct lb_redis_conn	*conn = ac->data;

	if (conn == NULL || reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return;
	log_error("redis name=%s address=%s %s refused: %s", conn->pool->name, conn->pool->address,
	    (const char *)privdata, reply->str);
	redisAsyncDisconnect(ac);
}

static int
lb_redis_open(struct lb_redis_conn *conn)
{
	struct lb_redis_pool	*p = conn->pool;
	redisAsyncContext	*ac;
	char			 host[300], db[16], *colon;
	int			 port;

	if (strncmp(p->address, "unix:", 5) == 0)
		ac = redisAsyncConnectUnix(p->address + 5);
	else {
		util_strlcpy(host, p->address[0] == '[' ? p->address + 1 : p->address, sizeof(host));
		if ((colon = strrchr(host, ':')) == NULL)
			return -1;
		*colon = '\0';
		port = atoi(colon + 1);
		if (colon > host && colon[-1] == ']')
			colon[-1] = '\0';
		ac = redisAsyncConnect(host, port);	/* an IP address (config.lua): hiredis resolves nothing */
	}
	if (ac == NULL || ac->err) {
		log_warn("redis name=%s address=%s cannot connect: %s", p->name, p->address,
		    ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		p->retry_at = lb_callout_now() + p->backoff;
		p->backoff = p->backoff * 2 > LB_REDIS_BACKOFF_MAX ? LB_REDIS_BACKOFF_MAX : p->backoff * 2;
		return -1;
	}
	ac->data = conn;
	redisLibeventAttach(ac, p->base);
	redisAsyncSetConnectCallback(ac, lb_redis_connected);
	redisAsyncSetDisconnectCallback(ac, lb_redis_disconnected);
	conn->ac = ac;
	/* Sent first on the connection, so they run before any command queued after them. */
	if (p->password[0] != '\0')
		redisAsyncCommand(ac, lb_redis_setup_reply, "AUTH", "AUTH %s", p->password);
	if (p->db != 0) {
		snprintf(db, sizeof(db), "%d", p->db);
		redisAsyncCommand(ac, lb_redis_setup_reply, "SELECT", "SELECT %s", db);
	}
	return 0;
}

/* lb_redis_conn_get - a connection of the pool: round robin over the open ones, opening one when it may. */
static struct lb_redis_conn *
lb_redis_conn_get(struct lb_redis_pool *p)
{
	struct lb_redis_conn	*conn;
	int			 i;

	for (i = 0; i < p->size; i++) {
		conn = &p->conns[(p->next + i) % p->size];
		if (conn->ac == NULL && lb_callout_now() >= p->retry_at)
			lb_redis_open(conn);
		if (conn->ac != NULL) {
			p->next = (p->next + i + 1) % p->size;
			return conn;
		}
	}
	return NULL;
}

/* lb_redis_pool_get - the pool for redis[name] of the running configuration, made or refreshed. */
static struct lb_redis_pool *
lb_redis_pool_get(lua_State *L, const char *name)
{
	struct lb_redis_pool	*p = NULL;
	const char		*address, *password;
	char			 bname[LB_BREAKER_NAME];
	int			 i, db, size;

	lua_getfield(L, LUA_REGISTRYINDEX, "luamta.config");	/* [.. cfg] */
	lua_getfield(L, -1, "redis");				/* [.. cfg redis] */
	if (!lua_istable(L, -1) || lua_getfield(L, -1, name) != LUA_TTABLE) {	/* [.. cfg redis r] */
		lua_pop(L, 3);
		return NULL;
	}
	lua_getfield(L, -1, "address");
	lua_getfield(L, -2, "password");
	lua_getfield(L, -3, "db");
	lua_getfield(L, -4, "pool");				/* [.. cfg redis r addr pw db pool] */
	address = lua_tostring(L, -4);
	password = lua_isstring(L, -3) ? lua_tostring(L, -3) : "";
	db = (int)lua_tointeger(L, -2);
	size = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 2;
	if (size < 1 || size > LB_REDIS_CONNS)
		size = 2;
	if (address == NULL) {
		lua_pop(L, 7);
		return NULL;
	}
	for (i = 0; i < lb_redis_npools; i++)
		if (strcmp(lb_redis_pools[i]->name, name) == 0)
			p = lb_redis_pools[i];
	if (p == NULL) {
		if (lb_redis_npools == LB_REDIS_POOLS) {
			lua_pop(L, 7);
			return NULL;
		}
		p = lb_redis_pools[lb_redis_npools++] = xcalloc(1, sizeof(*p));
		util_strlcpy(p->name, name, sizeof(p->name));
		for (i = 0; i < LB_REDIS_CONNS; i++)
			p->conns[i].pool = p;
		p->backoff = LB_REDIS_BACKOFF_MIN;
		snprintf(bname, sizeof(bname), "redis %s", name);
		p->breaker = lb_breaker_get(bname);
	}
	if (strcmp(p->address, address) != 0 || strcmp(p->password, password) != 0 || p->db != db ||
	    p->size != size) {
		/* A reload changed the server: the old connections go (their commands fail). */
		for (i = 0; i < LB_REDIS_CONNS; i++)
			lb_redis_drop(&p->conns[i]);
		util_strlcpy(p->address, address, sizeof(p->address));
		util_strlcpy(p->password, password, sizeof(p->password));
		p->db = db;
		p->size = size;
		p->retry_at = 0;
		p->backoff = LB_REDIS_BACKOFF_MIN;
	}
	lua_pop(L, 4);						/* [.. cfg redis r] */
	lua_getfield(L, -1, "timeout");
	lua_getfield(L, -2, "failures");
	lua_getfield(L, -3, "cooldown");			/* [.. cfg redis r t f c] */
	p->timeout = luaL_optnumber(L, -3, 1);
	p->failures = (int)luaL_optinteger(L, -2, 5);
	p->cooldown = luaL_optnumber(L, -1, 30);
	lua_pop(L, 6);						/* [..] */
	p->base = lb_run_base(L);
	return p;
}

/* lb_redis_push - the Lua value of reply on co: nil, a string, an integer or a table (false for a nil inside). */
static void
lb_redis_push(lua_State *co, const redisReply *reply, int depth)
{
	size_t	 i;

	switch (reply->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
		lua_pushlstring(co, reply->str, reply->len);
		break;
	case REDIS_REPLY_INTEGER:
		lua_pushinteger(co, (lua_Integer)reply->integer);
		break;
	case REDIS_REPLY_ARRAY:
		if (depth >= LB_REDIS_DEPTH_MAX) {
			lua_pushboolean(co, 0);
			break;
		}
		luaL_checkstack(co, 4, "redis reply");
		lua_createtable(co, (int)reply->elements, 0);		/* [.. t] */
		for (i = 0; i < reply->elements; i++) {
			if (reply->element[i]->type == REDIS_REPLY_NIL)
				lua_pushboolean(co, 0);
			else
				lb_redis_push(co, reply->element[i], depth + 1);	/* [.. t v] */
			lua_rawseti(co, -2, (lua_Integer)i + 1);		/* [.. t] */
		}
		break;
	default:
		lua_pushnil(co);
		break;
	}
}

static void
lb_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply		*reply = r;
	struct lb_redis_cmd	*c = privdata;
	uint64_t		 run = c->run;
	lua_State		*co;
	int			 nres;

	if (c->abandoned) {
		lb_redis_cmd_free(c);
		return;
	}
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && c->evalsha &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && ac->data != NULL) {
		/* The server does not have the script (a restart, SCRIPT FLUSH): EVAL sends and loads it. */
		free(c->argv[0]);
		free(c->argv[1]);
		c->argv[0] = xstrdup("EVAL");
		c->argvlen[0] = 4;
		c->argv[1] = c->script;
		c->argvlen[1] = c->script_len;
		c->script = NULL;
		c->evalsha = 0;
		if (redisAsyncCommandArgv(ac, lb_redis_reply, c, c->argc, (const char **)c->argv, c->argvlen) ==
		    REDIS_OK)
			return;
		reply = NULL;
	}
	lb_breaker_result(c->pool->breaker, reply != NULL, c->pool->failures, c->pool->cooldown);
	if ((co = lb_run_waiting(run, NULL)) == NULL) {
		lb_redis_cmd_free(c);	/* the run was cancelled while we waited */
		return;
	}
	if (reply == NULL) {
		lua_pushnil(co);
		lua_pushliteral(co, "connection lost");
		nres = 2;
	} else if (reply->type == REDIS_REPLY_ERROR) {
		lua_pushnil(co);
		lua_pushlstring(co, reply->str, reply->len);
		nres = 2;
	} else {
		lb_redis_push(co, reply, 0);
		nres = 1;
	}
	lb_redis_cmd_free(c);
	lb_run_wake(run, nres);
}

static void
lb_redis_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lb_redis_cmd	*c = arg;
	struct lb_redis_pool	*p = c->pool;
	uint64_t		 run = c->run;
	lua_State		*co;
	int			 i;

	c->abandoned = 1;	/* lb_redis_reply() frees it when hiredis lets go of it */
	event_free(c->timer);
	c->timer = NULL;
	lb_breaker_result(p->breaker, 0, p->failures, p->cooldown);
	if ((co = lb_run_waiting(run, NULL)) != NULL) {
		lua_pushnil(co);
		lua_pushliteral(co, "timeout");
		lb_run_wake(run, 2);
	}
	/* A server that does not answer in time is stuck or gone: start afresh on new connections. */
	for (i = 0; i < LB_REDIS_CONNS; i++)
		lb_redis_drop(&p->conns[i]);
}

static int
lb_redis_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

static void
lb_redis_arg(lua_State *L, struct lb_redis_cmd *c, int idx)
{
	size_t		 len;
	const char	*s;

	if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
		luaL_error(L, "redis: arguments must be strings or numbers, got %s", luaL_typename(L, idx));
	if (c->argc >= LB_REDIS_ARGS_MAX)
		luaL_error(L, "redis: more than %d arguments", LB_REDIS_ARGS_MAX);
	lua_pushvalue(L, idx);			/* a copy: tolstring converts numbers in place */
	s = lua_tolstring(L, -1, &len);
	c->argv[c->argc] = xmalloc(len + 1);
	memcpy(c->argv[c->argc], s, len);
	c->argv[c->argc][len] = '\0';
	c->argvlen[c->argc++] = len;
	lua_pop(L, 1);
}

/* lb_redis_send - send c on a connection of p and wait; frees c on every path. */
static int
lb_redis_send(lua_State *L, struct lb_redis_pool *p, struct lb_redis_cmd *c)
{
	struct lb_redis_conn	*conn;
	struct timeval		 tv;

	c->pool = p;
	if (!lb_breaker_allow(p->breaker)) {
		lb_redis_cmd_free(c);
		return lb_redis_fail(L, "circuit open");
	}
	if ((conn = lb_redis_conn_get(p)) == NULL) {
		lb_redis_cmd_free(c);
		lb_breaker_result(p->breaker, 0, p->failures, p->cooldown);
		return lb_redis_fail(L, "not connected");
	}
	if ((c->run = lb_run_prepare_wait(L, 0)) == 0) {
		lb_redis_cmd_free(c);
		return luaL_error(L, "redis: only a stage handler can wait");
	}
	c->timer = evtimer_new(p->base, lb_redis_timeout, c);
	tv.tv_sec = (time_t)p->timeout;
	tv.tv_usec = (suseconds_t)((p->timeout - (double)tv.tv_sec) * 1e6);
	evtimer_add(c->timer, &tv);
	if (redisAsyncCommandArgv(conn->ac, lb_redis_reply, c, c->argc, (const char **)c->argv, c->argvlen) !=
	    REDIS_OK) {
		uint64_t	 run = c->run;

		lb_redis_cmd_free(c);
		lb_breaker_result(p->breaker, 0, p->failures, p->cooldown);
		lua_pushnil(L);
		lua_pushliteral(L, "connection lost");
		lb_run_wake(run, 2);
	}
	return lb_run_yield(L);	/* lb_redis_reply() or lb_redis_timeout() gives the answer */
}

static struct lb_redis_pool *
lb_redis_check(lua_State *L)
{
	struct lb_redis_handle	*h = luaL_checkudata(L, 1, LB_REDIS_MT);
	struct lb_redis_pool	*p;

	if (lb_run_base(L) == NULL)
		luaL_error(L, "redis: only a stage handler can wait");
	if ((p = lb_redis_pool_get(L, h->name)) == NULL)
		luaL_error(L, "redis: no redis.%s in the configuration", h->name);
	return p;
}

static struct lb_redis_cmd *
lb_redis_cmd_new(int nargs)
{
	struct lb_redis_cmd	*c = xcalloc(1, sizeof(*c));

	c->argv = xcalloc((size_t)nargs + 1, sizeof(*c->argv));
	c->argvlen = xcalloc((size_t)nargs + 1, sizeof(*c->argvlen));
	return c;
}

/* r:call(cmd, ...) -> the reply, or nil, err */
static int
lb_redis_call(lua_State *L)
{
	struct lb_redis_pool	*p = lb_redis_check(L);
	int			 i, n = lua_gettop(L);
	struct lb_redis_cmd	*c;

	luaL_checkstring(L, 2);
	if (n - 1 > LB_REDIS_ARGS_MAX)
		return luaL_error(L, "redis: more than %d arguments", LB_REDIS_ARGS_MAX);
	c = lb_redis_cmd_new(n - 1);
	for (i = 2; i <= n; i++) {
		if (lua_type(L, i) != LUA_TSTRING && lua_type(L, i) != LUA_TNUMBER) {
			lb_redis_cmd_free(c);
			return luaL_argerror(L, i, "a string or a number");
		}
		lb_redis_arg(L, c, i);
	}
	return lb_redis_send(L, p, c);
}

/* r:eval(script, keys, args) -> the reply, or nil, err; EVALSHA first, EVAL when the server lacks the script */
static int
lb_redis_eval(lua_State *L)
{
	struct lb_redis_pool	*p = lb_redis_check(L);
	size_t			 slen, nkeys, nargs, i;
	const char		*script = luaL_checklstring(L, 2, &slen);
	unsigned char		 sha[20];
	char			 hex[41], num[24];
	struct lb_redis_cmd	*c;

	if (!lua_isnoneornil(L, 3))			/* keys and args: tables, or nil */
		luaL_checktype(L, 3, LUA_TTABLE);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TTABLE);
	nkeys = lua_istable(L, 3) ? lua_rawlen(L, 3) : 0;
	nargs = lua_istable(L, 4) ? lua_rawlen(L, 4) : 0;
	if (nkeys + nargs + 3 > LB_REDIS_ARGS_MAX)
		return luaL_error(L, "redis: more than %d arguments", LB_REDIS_ARGS_MAX);
#if MBEDTLS_VERSION_MAJOR >= 3
	mbedtls_sha1((const unsigned char *)script, slen, sha);
#else
	mbedtls_sha1_ret((const unsigned char *)script, slen, sha);
#endif
	for (i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", sha[i]);
	c = lb_redis_cmd_new((int)(nkeys + nargs + 3));
	c->evalsha = 1;
	c->script = xmalloc(slen + 1);
	memcpy(c->script, script, slen);
	c->script[slen] = '\0';
	c->script_len = slen;
	c->argv[0] = xstrdup("EVALSHA");
	c->argvlen[0] = 7;
	c->argv[1] = xstrdup(hex);
	c->argvlen[1] = 40;
	snprintf(num, sizeof(num), "%zu", nkeys);
	c->argv[2] = xstrdup(num);
	c->argvlen[2] = strlen(num);
	c->argc = 3;
	for (i = 1; i <= nkeys + nargs; i++) {
		int	 t = i <= nkeys ? 3 : 4;

		lua_rawgeti(L, t, (lua_Integer)(i <= nkeys ? i : i - nkeys));	/* [.. v] */
		if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
			lb_redis_cmd_free(c);
			return luaL_error(L, "redis: eval keys and args must be strings or numbers");
		}
		lb_redis_arg(L, c, -1);
		lua_pop(L, 1);
	}
	return lb_redis_send(L, p, c);
}

static int
lb_redis_tostring(lua_State *L)
{
	struct lb_redis_handle	*h = luaL_checkudata(L, 1, LB_REDIS_MT);

	lua_pushfstring(L, "redis(%s)", h->name);
	return 1;
}

/* core.redis(name) -> a client for redis[name]; the configuration is read again at each call */
static int
lb_redis_new(lua_State *L)
{
	size_t			 len;
	const char		*name = luaL_checklstring(L, 1, &len);
	struct lb_redis_handle	*h;

	luaL_argcheck(L, len > 0 && len < LB_REDIS_NAME_MAX, 1, "a redis name");
	h = lua_newuserdatauv(L, sizeof(*h), 0);		/* [.. h] */
	util_strlcpy(h->name, name, sizeof(h->name));
	luaL_setmetatable(L, LB_REDIS_MT);
	return 1;
}

void
lb_redis_register(lua_State *L)
{
	static const luaL_Reg	 methods[] = {
		{ "call", lb_redis_call },
		{ "eval", lb_redis_eval },
		{ NULL, NULL }
	};

	if (luaL_newmetatable(L, LB_REDIS_MT)) {		/* [.. core mt] */
		luaL_newlib(L, methods);			/* [.. core mt methods] */
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, lb_redis_tostring);
		lua_setfield(L, -2, "__tostring");
		lua_pushliteral(L, "locked");
		lua_setfield(L, -2, "__metatable");
	}
	lua_pop(L, 1);						/* [.. core] */
	lua_pushcfunction(L, lb_redis_new);
	lua_setfield(L, -2, "redis");				/* [.. core] */
}
