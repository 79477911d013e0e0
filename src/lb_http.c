/*
 * lb_http.c - core.http_request for mta.http.request (docs/callouts.md). The request goes out on libevent's
 * evhttp client; the rule's coroutine waits (lb_run_prepare_wait()/lb_run_yield(), as mta.dns does) and
 * lb_http_done() resumes it with status, headers, body, or nil and an error ("timeout", "response too large",
 * "connection failed", "circuit open", ...). It never resolves names: luamta's Lua side looks the host up
 * through mta.dns and gives the address to connect to, so that nothing here calls getaddrinfo() on the loop.
 * Connections are kept per address and port (keep-alive), up to LB_HTTP_PER_PEER in parallel so that one slow
 * answer does not hold the requests of other sessions behind it. The request carries the run's id, not a
 * pointer: an answer for a run that was cancelled is dropped. Only http: https is not offered yet.
 *	lb_http_register()	core.http_request
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lauxlib.h>
#include <lua.h>

#include "lb.h"
#include "lb_callout.h"
#include "log.h"
#include "util.h"

#define LB_HTTP_CONNS		64	/* kept connections per process */
#define LB_HTTP_PER_PEER	8	/* connections to one address:port */
#define LB_HTTP_KEY_MAX		80	/* "address port" */
#define LB_HTTP_HEADERS_MAX	65536	/* octets of response header */

struct lb_http_conn {
	char			 key[LB_HTTP_KEY_MAX];	/* "" for a free slot */
	struct evhttp_connection *evcon;		/* owned */
	int			 busy;			/* requests in flight on it */
};

struct lb_http_req {
	uint64_t		 run;		/* the waiting run, found again with lb_run_waiting() */
	struct evhttp_request	*evreq;		/* borrowed: evhttp frees it after lb_http_done() */
	struct lb_http_conn	*conn;		/* borrowed */
	struct event		*timer;		/* owned */
	struct lb_breaker	*breaker;	/* borrowed; lives as long as the process */
	int			 failures;	/* breaker settings of the call */
	double			 cooldown;
	int			 error;		/* from lb_http_error(), -1 for none */
	int			 cancelled;	/* timed out: the error callback of the cancel is ours */
	size_t			 max_response;
};

static struct lb_http_conn	 lb_http_conns[LB_HTTP_CONNS];

/* lb_http_conn_get - a connection to addr:port: an idle one, a new one, or the least busy one. */
static struct lb_http_conn *
lb_http_conn_get(struct event_base *base, const char *addr, int port, size_t max_response)
{
	struct lb_http_conn	*c, *idle = NULL, *least = NULL, *slot = NULL, *evict = NULL;
	char			 key[LB_HTTP_KEY_MAX];
	int			 i, n = 0;

	snprintf(key, sizeof(key), "%s %d", addr, port);
	for (i = 0; i < LB_HTTP_CONNS; i++) {
		c = &lb_http_conns[i];
		if (c->key[0] == '\0') {
			if (slot == NULL)
				slot = c;
			continue;
		}
		if (strcmp(c->key, key) != 0) {
			if (c->busy == 0 && evict == NULL)
				evict = c;
			continue;
		}
		n++;
		if (c->busy == 0 && idle == NULL)
			idle = c;
		if (least == NULL || c->busy < least->busy)
			least = c;
	}
	if (idle != NULL)
		c = idle;
	else if (n >= LB_HTTP_PER_PEER || (slot == NULL && evict == NULL))
		c = least;		/* queued behind a request on that connection; NULL when there is none */
	else {
		if ((c = slot) == NULL) {
			c = evict;	/* an idle connection to another peer makes room */
			evhttp_connection_free(c->evcon);
			memset(c, 0, sizeof(*c));
		}
		c->evcon = evhttp_connection_base_new(base, NULL, addr, (unsigned short)port);
		if (c->evcon == NULL)
			return NULL;
		util_strlcpy(c->key, key, sizeof(c->key));
		evhttp_connection_set_max_headers_size(c->evcon, LB_HTTP_HEADERS_MAX);
		evhttp_connection_set_retries(c->evcon, 0);
	}
	if (c != NULL)
		evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)max_response);
	return c;
}

static void
lb_http_req_free(struct lb_http_req *r)
{
	if (r->timer != NULL)
		event_free(r->timer);
	if (r->conn != NULL)
		r->conn->busy--;
	free(r);
}

static const char *
lb_http_error_text(int error)
{
	switch (error) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid response";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection failed";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "response too large";
	default:
		return "connection failed";
	}
}

static void
lb_http_error(enum evhttp_request_error error, void *arg)
{
	struct lb_http_req	*r = arg;

	if (!r->cancelled)
		r->error = (int)error;	/* lb_http_done() follows with no request */
}

/* lb_http_push - status, headers, body of a response on co; returns 3. */
static int
lb_http_push(lua_State *co, struct evhttp_request *evreq)
{
	struct evkeyvalq	*hdrs = evhttp_request_get_input_headers(evreq);
	struct evkeyval		*kv;
	struct evbuffer		*in = evhttp_request_get_input_buffer(evreq);
	char			 name[256];
	size_t			 i, len;

	lua_pushinteger(co, evhttp_request_get_response_code(evreq));	/* [.. status] */
	lua_newtable(co);						/* [.. status hdrs] */
	TAILQ_FOREACH(kv, hdrs, next) {
		for (i = 0; kv->key[i] != '\0' && i < sizeof(name) - 1; i++)
			name[i] = (char)tolower((unsigned char)kv->key[i]);
		name[i] = '\0';
		if (lua_getfield(co, -1, name) == LUA_TSTRING) {	/* [.. status hdrs old] */
			lua_pushliteral(co, ", ");
			lua_pushstring(co, kv->value);
			lua_concat(co, 3);				/* [.. status hdrs joined] */
		} else {
			lua_pop(co, 1);
			lua_pushstring(co, kv->value);			/* [.. status hdrs value] */
		}
		lua_setfield(co, -2, name);				/* [.. status hdrs] */
	}
	len = evbuffer_get_length(in);
	lua_pushlstring(co, (const char *)evbuffer_pullup(in, (ev_ssize_t)len), len);	/* [.. status hdrs body] */
	return 3;
}

static void
lb_http_done(struct evhttp_request *evreq, void *arg)
{
	struct lb_http_req	*r = arg;
	lua_State		*co;
	uint64_t		 run = r->run;
	int			 ok = evreq != NULL && evhttp_request_get_response_code(evreq) != 0, nres;

	lb_breaker_result(r->breaker, ok, r->failures, r->cooldown);
	if (!ok)
		log_info("callout service=\"%s\" error=\"%s\"", r->breaker->name, lb_http_error_text(r->error));
	if ((co = lb_run_waiting(run, NULL)) == NULL) {
		lb_http_req_free(r);	/* the run was cancelled while we waited */
		return;
	}
	if (ok)
		nres = lb_http_push(co, evreq);
	else {
		lua_pushnil(co);
		lua_pushstring(co, lb_http_error_text(r->error));
		nres = 2;
	}
	/* Free before waking: the resumed rule may start the next request on this connection. */
	lb_http_req_free(r);
	lb_run_wake(run, nres);
}

static void
lb_http_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lb_http_req	*r = arg;
	uint64_t		 run = r->run;
	lua_State		*co;

	r->cancelled = 1;
	evhttp_cancel_request(r->evreq);	/* no lb_http_done() after this; lb_http_error() ignores it */
	lb_breaker_result(r->breaker, 0, r->failures, r->cooldown);
	lb_http_req_free(r);
	if ((co = lb_run_waiting(run, NULL)) == NULL)
		return;
	lua_pushnil(co);
	lua_pushliteral(co, "timeout");
	lb_run_wake(run, 2);
}

static int
lb_http_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

static int
lb_http_method(const char *m, enum evhttp_cmd_type *type)
{
	static const struct {
		const char		*name;
		enum evhttp_cmd_type	 type;
	} methods[] = {
		{ "GET", EVHTTP_REQ_GET }, { "POST", EVHTTP_REQ_POST }, { "HEAD", EVHTTP_REQ_HEAD },
		{ "PUT", EVHTTP_REQ_PUT }, { "DELETE", EVHTTP_REQ_DELETE }, { "PATCH", EVHTTP_REQ_PATCH },
		{ "OPTIONS", EVHTTP_REQ_OPTIONS },
	};
	size_t	 i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(m, methods[i].name) == 0) {
			*type = methods[i].type;
			return 0;
		}
	return -1;
}

static int
lb_http_field_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s == '\r' || *s == '\n')
			return 0;
	return 1;
}

static const char *
lb_http_optstring(lua_State *L, const char *key, const char *def)
{
	const char	*v;

	lua_getfield(L, 1, key);
	v = lua_isnil(L, -1) ? def : luaL_checkstring(L, -1);
	lua_pop(L, 1);	/* the string stays alive in the argument table */
	return v;
}

static lua_Number
lb_http_optnumber(lua_State *L, const char *key, lua_Number def)
{
	lua_Number	 v;

	lua_getfield(L, 1, key);
	v = luaL_optnumber(L, -1, def);
	lua_pop(L, 1);
	return v;
}

/*
 * core.http_request{ method, url, connect, headers, body, timeout, max_response, failures, cooldown } - the
 * request checked by mta.http.request (lua/luamta/init.lua); connect is the address to connect to.
 */
static int
lb_http_request(lua_State *L)
{
	const char		*method, *url, *addr, *body, *path, *query, *host;
	char			 target[4096], hostval[300], bname[LB_BREAKER_NAME], ip[64];
	struct evhttp_uri	*uri;
	struct lb_http_req	*r;
	struct evkeyvalq	*out;
	struct lb_breaker	*br;
	struct timeval		 tv;
	enum evhttp_cmd_type	 type;
	size_t			 blen = 0;
	uint64_t		 run;
	double			 timeout;
	int			 port;

	luaL_checktype(L, 1, LUA_TTABLE);
	method = lb_http_optstring(L, "method", "GET");
	url = lb_http_optstring(L, "url", NULL);
	addr = lb_http_optstring(L, "connect", NULL);
	timeout = lb_http_optnumber(L, "timeout", 10);
	if (url == NULL || addr == NULL)
		return luaL_error(L, "core.http_request: url and connect are required");
	if (lb_http_method(method, &type) == -1)
		return luaL_error(L, "mta.http.request: unknown method %s", method);
	lua_getfield(L, 1, "body");			/* [t .. body] */
	body = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &blen);
	lua_pop(L, 1);

	if ((uri = evhttp_uri_parse(url)) == NULL)
		return lb_http_fail(L, "invalid url");
	if (evhttp_uri_get_scheme(uri) == NULL || strcmp(evhttp_uri_get_scheme(uri), "http") != 0 ||
	    (host = evhttp_uri_get_host(uri)) == NULL) {
		evhttp_uri_free(uri);
		return lb_http_fail(L, "only http:// urls are supported");
	}
	port = evhttp_uri_get_port(uri);
	if (port == -1)
		port = 80;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/", query ? "?" : "",
	    query ? query : "") >= (int)sizeof(target) ||
	    snprintf(hostval, sizeof(hostval), port == 80 ? "%s" : "%s:%d", host, port) >= (int)sizeof(hostval)) {
		evhttp_uri_free(uri);
		return lb_http_fail(L, "url too long");
	}
	evhttp_uri_free(uri);
	util_strlcpy(ip, addr[0] == '[' ? addr + 1 : addr, sizeof(ip));
	if (strchr(ip, ']') != NULL)
		*strchr(ip, ']') = '\0';

	if (lb_run_base(L) == NULL)
		return luaL_error(L, "mta.http.request: only a stage handler can wait");
	snprintf(bname, sizeof(bname), "http %.120s", hostval);
	br = lb_breaker_get(bname);
	if (!lb_breaker_allow(br))
		return lb_http_fail(L, "circuit open");

	r = xcalloc(1, sizeof(*r));
	r->breaker = br;
	r->error = -1;
	r->failures = (int)lb_http_optnumber(L, "failures", 5);
	r->cooldown = lb_http_optnumber(L, "cooldown", 30);
	r->max_response = (size_t)lb_http_optnumber(L, "max_response", 1048576);
	if ((r->conn = lb_http_conn_get(lb_run_base(L), ip, port, r->max_response)) == NULL) {
		free(r);
		return lb_http_fail(L, "connection failed");
	}
	r->conn->busy++;
	if ((r->evreq = evhttp_request_new(lb_http_done, r)) == NULL) {
		lb_http_req_free(r);
		return lb_http_fail(L, "out of memory");
	}
	evhttp_request_set_error_cb(r->evreq, lb_http_error);
	out = evhttp_request_get_output_headers(r->evreq);
	evhttp_add_header(out, "Host", hostval);
	evhttp_add_header(out, "User-Agent", "luamta/" PACKAGE_VERSION);
	lua_getfield(L, 1, "headers");			/* [t .. headers] */
	if (lua_istable(L, -1)) {
		lua_pushnil(L);				/* [t .. headers nil] */
		while (lua_next(L, -2) != 0) {		/* [t .. headers k v] */
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
			    lb_http_field_ok(lua_tostring(L, -2)) && lb_http_field_ok(lua_tostring(L, -1)) &&
			    strcasecmp(lua_tostring(L, -2), "Host") != 0)
				evhttp_add_header(out, lua_tostring(L, -2), lua_tostring(L, -1));
			lua_pop(L, 1);			/* [t .. headers k] */
		}
	}
	lua_pop(L, 1);					/* [t ..] */
	if (body != NULL && blen > 0)
		evbuffer_add(evhttp_request_get_output_buffer(r->evreq), body, blen);

	if ((r->run = lb_run_prepare_wait(L, 0)) == 0) {
		evhttp_request_free(r->evreq);
		lb_http_req_free(r);
		return luaL_error(L, "mta.http.request: only a stage handler can wait");
	}
	r->timer = evtimer_new(lb_run_base(L), lb_http_timeout, r);
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
	evtimer_add(r->timer, &tv);
	run = r->run;
	if (evhttp_make_request(r->conn->evcon, r->evreq, type, target) == -1) {
		/* evhttp has failed the request (and may have called lb_http_done() already, which woke the run
		 * early and freed r); otherwise wake it here. */
		if (lb_run_waiting(run, NULL) != NULL) {
			lb_http_req_free(r);
			lua_pushnil(L);
			lua_pushliteral(L, "connection failed");
			lb_run_wake(run, 2);
		}
	}
	return lb_run_yield(L);	/* lb_http_done() or lb_http_timeout() gives the answer, maybe before this returns */
}

void
lb_http_register(lua_State *L)
{
	lua_pushcfunction(L, lb_http_request);		/* [.. core fn] */
	lua_setfield(L, -2, "http_request");		/* [.. core] */
}
