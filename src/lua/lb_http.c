/*
 * lb_http.c - core.http_request for mta.http.request (docs/callouts.md): a small HTTP/1.1 client on libevent
 * bufferevents, with https through tls.c (mbedTLS on a filter bufferevent). The rule's coroutine waits
 * (lb_run_prepare_wait()/lb_run_yield(), as mta.dns does) and the answer resumes it with status, headers, body,
 * or nil and an error ("timeout", "response too large", "connection failed", "certificate verification failed:
 * ...", "circuit open", ...). It never resolves names: luamta's Lua side looks the host up through mta.dns and
 * gives the address to connect to, so that nothing here calls getaddrinfo() on the loop.
 * One request at a time per connection (no pipelining). Connections are kept per address, port, scheme and, for
 * https, the name checked and the CA file (keep-alive), up to LB_HTTP_PER_PEER in parallel so that one slow
 * answer does not hold the requests of other sessions behind it; past that a request waits in a queue for the
 * next free connection. https checks the server's certificate against the system CA store or the given CA file
 * and the URL's host name (sent as SNI too), unless the call says verify = false. The request carries the run's
 * id, not a pointer: an answer for a run that was cancelled is dropped.
 *	lb_http_register()	core.http_request
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <lauxlib.h>
#include <lua.h>

#include "lb.h"
#include "lb_callout.h"
#include "log.h"
#include "tls.h"
#include "util.h"

#define LB_HTTP_CONNS		64	/* kept connections per process */
#define LB_HTTP_PER_PEER	8	/* connections to one peer (address, port, scheme, TLS settings) */
#define LB_HTTP_KEY_MAX		1200	/* "https address port host ca_file" */
#define LB_HTTP_HEADERS_MAX	65536	/* octets of response header (status line and trailers included) */
#define LB_HTTP_LINE_MAX	1024	/* octets of a chunk-size line */
#define LB_HTTP_IDLE		30	/* seconds an unused kept connection stays open */
#define LB_HTTP_TLS_CONFS	8	/* https settings (verify, CA file) kept per process */
#define LB_HTTP_PATH_MAX	1024	/* octets of a ca_file path */

enum lb_http_state {
	LB_HTTP_S_FREE,		/* an unused slot */
	LB_HTTP_S_STATUS,	/* connecting, or the request is out: waiting for the status line */
	LB_HTTP_S_HEADERS,	/* reading header lines */
	LB_HTTP_S_BODY,		/* Content-Length octets left in body_left */
	LB_HTTP_S_CHUNK,	/* waiting for a chunk-size line */
	LB_HTTP_S_CHUNK_DATA,	/* body_left octets of chunk left */
	LB_HTTP_S_CHUNK_END,	/* the CRLF after a chunk's data */
	LB_HTTP_S_TRAILER,	/* trailer lines after the last chunk */
	LB_HTTP_S_TO_CLOSE,	/* the body ends when the server closes */
	LB_HTTP_S_IDLE,		/* kept for the next request */
};

struct lb_http_req;

struct lb_http_conn {
	char			 key[LB_HTTP_KEY_MAX];
	enum lb_http_state	 state;
	struct bufferevent	*bev;		/* owned: the socket's, or the TLS filter that owns the socket's */
	struct tls_conn		*tls;		/* borrowed: lives as long as bev; NULL for http */
	struct event		*idle;		/* owned: closes a kept connection nobody uses */
	struct lb_http_req	*req;		/* borrowed: the request in flight, NULL when idle */
	int			 connected;	/* the TCP connection is up */
	int			 reused;	/* has given a response before: a close may be the server's idle one */
	int			 got;		/* reads that brought this response's octets */
	int			 got_line;	/* an empty line came before the status line */
	int			 version;	/* 0 or 1: HTTP/1.<version> */
	int			 status;
	int			 keepalive;	/* the connection may serve the next request */
	int			 chunked;
	int			 has_length;
	size_t			 header_octets;
	size_t			 body_left;
	struct evbuffer		*headers;	/* owned: "name\0value\0" pairs, names in lower case */
	struct evbuffer		*body;		/* owned */
};

struct lb_http_req {
	uint64_t		 run;		/* the waiting run, found again with lb_run_waiting() */
	TAILQ_ENTRY(lb_http_req) entry;		/* in lb_http_queue while no connection is free */
	int			 queued;
	char			 key[LB_HTTP_KEY_MAX];
	struct sockaddr_storage	 sa;		/* the address to connect to */
	socklen_t		 salen;
	char			 host[256];	/* https: the name checked and sent as SNI */
	struct tls_conf		*tls;		/* borrowed from lb_http_tls (kept for the process); NULL: http */
	struct evbuffer		*out;		/* owned: the request, written when a connection takes it */
	struct lb_http_conn	*conn;		/* borrowed; NULL while queued */
	struct event		*timer;		/* owned */
	struct lb_breaker	*breaker;	/* borrowed; lives as long as the process */
	int			 failures;	/* breaker settings of the call */
	double			 cooldown;
	size_t			 max_response;
	int			 head;		/* HEAD: a response without a body */
	int			 retried;	/* sent again after a kept connection turned out closed */
};

static struct lb_http_conn	 lb_http_conns[LB_HTTP_CONNS];
static TAILQ_HEAD(, lb_http_req) lb_http_queue = TAILQ_HEAD_INITIALIZER(lb_http_queue);
static struct {
	int		 verify;
	char		 ca_file[LB_HTTP_PATH_MAX];	/* "" for the system store */
	struct tls_conf	*conf;				/* held for the process */
} lb_http_tls[LB_HTTP_TLS_CONFS];

static void	lb_http_start(struct event_base *, struct lb_http_req *);
static void	lb_http_kick(struct event_base *);

/* lb_http_tls_conf - the client TLS settings for (verify, ca_file), loaded on first use and kept. */
static struct tls_conf *
lb_http_tls_conf(int verify, const char *ca_file, char *err, size_t errsize)
{
	char	 why[300];
	int	 i;

	for (i = 0; i < LB_HTTP_TLS_CONFS && lb_http_tls[i].conf != NULL; i++)
		if (lb_http_tls[i].verify == verify && strcmp(lb_http_tls[i].ca_file, ca_file) == 0)
			return lb_http_tls[i].conf;
	if (i == LB_HTTP_TLS_CONFS) {
		snprintf(err, errsize, "too many different https settings (ca_file, verify) in use");
		return NULL;
	}
	/* Reads the CA file on the loop, once per process and settings: a few milliseconds for the system store. */
	if ((lb_http_tls[i].conf = tls_client_new_ca(verify, ca_file[0] != '\0' ? ca_file : NULL, why,
	    sizeof(why))) == NULL) {
		snprintf(err, errsize, "%s", why);
		return NULL;
	}
	lb_http_tls[i].verify = verify;
	util_strlcpy(lb_http_tls[i].ca_file, ca_file, sizeof(lb_http_tls[i].ca_file));
	return lb_http_tls[i].conf;
}

static void
lb_http_req_free(struct lb_http_req *r)
{
	if (r->queued)
		TAILQ_REMOVE(&lb_http_queue, r, entry);
	if (r->timer != NULL)
		event_free(r->timer);
	if (r->out != NULL)
		evbuffer_free(r->out);
	free(r);
}

/* lb_http_conn_close - close c and free its slot; its request, if any, is the caller's to answer. */
static void
lb_http_conn_close(struct lb_http_conn *c)
{
	if (c->req != NULL)
		c->req->conn = NULL;
	if (c->tls != NULL)
		tls_detach(c->tls);	/* no handshake news after this */
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->idle != NULL)
		event_free(c->idle);
	if (c->headers != NULL)
		evbuffer_free(c->headers);
	if (c->body != NULL)
		evbuffer_free(c->body);
	memset(c, 0, sizeof(*c));
}

/*
 * lb_http_finish - the request on c is over: err is NULL for a response. Gives the answer to the run, keeps c
 * for the next request or closes it, and starts a queued request. answered: the server sent a status line (the
 * breaker counts that as the service being up, even when the body is then cut).
 */
static void
lb_http_finish(struct lb_http_conn *c, const char *err, int answered)
{
	struct lb_http_req	*r = c->req;
	struct event_base	*base = bufferevent_get_base(c->bev);
	struct timeval		 idle = { LB_HTTP_IDLE, 0 };
	const char		*p, *end, *name, *value;
	lua_State		*co;
	size_t			 len;
	int			 nres = 0;

	c->req = NULL;
	r->conn = NULL;
	lb_breaker_result(r->breaker, err == NULL || answered, r->failures, r->cooldown);
	if (err != NULL)
		log_info("callout service=\"%s\" error=\"%s\"", r->breaker->name, err);
	/* The answer goes on the coroutine before c is reused or closed: the body lives in c. */
	if ((co = lb_run_waiting(r->run, NULL)) != NULL && err == NULL) {
		lua_pushinteger(co, c->status);					/* [.. status] */
		lua_newtable(co);						/* [.. status hdrs] */
		len = evbuffer_get_length(c->headers);
		p = (const char *)evbuffer_pullup(c->headers, (ev_ssize_t)len);
		for (end = p + len; p != NULL && p < end; p = value + strlen(value) + 1) {
			name = p;
			value = name + strlen(name) + 1;
			if (lua_getfield(co, -1, name) == LUA_TSTRING) {	/* [.. status hdrs old] */
				lua_pushliteral(co, ", ");
				lua_pushstring(co, value);
				lua_concat(co, 3);				/* [.. status hdrs joined] */
			} else {
				lua_pop(co, 1);
				lua_pushstring(co, value);			/* [.. status hdrs value] */
			}
			lua_setfield(co, -2, name);				/* [.. status hdrs] */
		}
		len = evbuffer_get_length(c->body);
		lua_pushlstring(co, (const char *)evbuffer_pullup(c->body, (ev_ssize_t)len), len);
		nres = 3;							/* [.. status hdrs body] */
	} else if (co != NULL) {
		lua_pushnil(co);
		lua_pushstring(co, err);
		nres = 2;							/* [.. nil err] */
	}
	if (err == NULL && c->keepalive && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
		c->state = LB_HTTP_S_IDLE;
		c->reused = 1;
		evbuffer_drain(c->body, evbuffer_get_length(c->body));
		evbuffer_drain(c->headers, evbuffer_get_length(c->headers));
		evtimer_add(c->idle, &idle);
	} else
		lb_http_conn_close(c);
	/* Before waking: the resumed rule may start the next request, which must find the slot as it is now. */
	lb_http_kick(base);
	if (co != NULL) {
		uint64_t	 run = r->run;

		lb_http_req_free(r);
		lb_run_wake(run, nres);
	} else
		lb_http_req_free(r);	/* the run was cancelled while we waited */
}

/* lb_http_fail_req - answer r (on no connection) with err at once. */
static void
lb_http_fail_req(struct lb_http_req *r, const char *err)
{
	lua_State	*co;
	uint64_t	 run = r->run;

	lb_breaker_result(r->breaker, 0, r->failures, r->cooldown);
	log_info("callout service=\"%s\" error=\"%s\"", r->breaker->name, err);
	lb_http_req_free(r);
	if ((co = lb_run_waiting(run, NULL)) == NULL)
		return;
	lua_pushnil(co);
	lua_pushstring(co, err);
	lb_run_wake(run, 2);
}

static int
lb_http_token_has(const char *value, const char *token)
{
	size_t		 n = strlen(token);
	const char	*p;

	for (p = value; (p = strcasestr(p, token)) != NULL; p += n)
		if ((p == value || p[-1] == ',' || p[-1] == ' ' || p[-1] == '\t') &&
		    (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
			return 1;
	return 0;
}

/* lb_http_status_line - "HTTP/1.1 200 OK". 0 or -1. */
static int
lb_http_status_line(struct lb_http_conn *c, const char *line)
{
	if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
	    !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
	    !isdigit((unsigned char)line[11]) || (line[12] != ' ' && line[12] != '\0'))
		return -1;
	c->version = line[7] - '0';
	c->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	if (c->status < 100)
		return -1;
	c->keepalive = c->version == 1;
	c->chunked = c->has_length = 0;
	c->body_left = 0;
	evbuffer_drain(c->headers, evbuffer_get_length(c->headers));
	return 0;
}

/* lb_http_header_line - one "Name: value" line, kept with its name in lower case. 0 or -1. */
static int
lb_http_header_line(struct lb_http_conn *c, char *line)
{
	char		*colon, *v, *e, *p;
	unsigned long long n;

	if ((colon = strchr(line, ':')) == NULL || colon == line)
		return -1;		/* also a folded line (RFC 9112 5.2 lets a client refuse it) */
	*colon = '\0';
	for (p = line; *p != '\0'; p++) {
		if (*p == ' ' || *p == '\t' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			return -1;
		*p = (char)tolower((unsigned char)*p);
	}
	for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
		;
	for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); e--)
		;
	*e = '\0';
	if (c->state == LB_HTTP_S_TRAILER)
		return 0;		/* trailers are read and dropped */
	if (strcmp(line, "connection") == 0) {
		if (lb_http_token_has(v, "close"))
			c->keepalive = 0;
		else if (lb_http_token_has(v, "keep-alive"))
			c->keepalive = 1;
	} else if (strcmp(line, "transfer-encoding") == 0) {
		if (e - v >= 7 && strcasecmp(e - 7, "chunked") == 0)
			c->chunked = 1;
		else
			c->chunked = -1;	/* another coding last: the body ends at the close (RFC 9112 6.3) */
	} else if (strcmp(line, "content-length") == 0) {
		if (*v == '\0' || strspn(v, "0123456789") != strlen(v) || strlen(v) > 15)
			return -1;
		n = strtoull(v, NULL, 10);
		if (c->has_length && c->body_left != (size_t)n)
			return -1;	/* two different lengths: smuggling or a broken server */
		c->has_length = 1;
		c->body_left = (size_t)n;
	}
	evbuffer_add(c->headers, line, strlen(line) + 1);
	evbuffer_add(c->headers, v, strlen(v) + 1);
	return 0;
}

/* lb_http_headers_done - the empty line after the headers: choose how the body ends (RFC 9112 6.3). */
static const char *
lb_http_headers_done(struct lb_http_conn *c)
{
	struct lb_http_req	*r = c->req;

	if (c->status < 200) {			/* 100 Continue and the like: the real status line follows */
		if (c->status == 101)
			return "invalid response";
		c->state = LB_HTTP_S_STATUS;
		return NULL;
	}
	if (r->head || c->status == 204 || c->status == 304) {
		c->state = LB_HTTP_S_IDLE;	/* no body */
		return NULL;
	}
	if (c->chunked == 1) {
		c->state = LB_HTTP_S_CHUNK;
		return NULL;
	}
	if (c->chunked == 0 && c->has_length) {
		if (c->body_left > r->max_response)
			return "response too large";
		c->state = c->body_left > 0 ? LB_HTTP_S_BODY : LB_HTTP_S_IDLE;
		return NULL;
	}
	c->keepalive = 0;
	c->state = LB_HTTP_S_TO_CLOSE;
	return NULL;
}

/* lb_http_take - move up to n octets of body from in; NULL, or the error when the body passes the cap. */
static const char *
lb_http_take(struct lb_http_conn *c, struct evbuffer *in, size_t n)
{
	if (evbuffer_get_length(c->body) + n > c->req->max_response)
		return "response too large";
	evbuffer_remove_buffer(in, c->body, n);
	return NULL;
}

/*
 * lb_http_parse - run the response parser over what arrived. Returns 1 when the response is complete, 0 when
 * more is needed, -1 with *err on a bad or oversized response.
 */
static int
lb_http_parse(struct lb_http_conn *c, struct evbuffer *in, const char **err)
{
	struct evbuffer_ptr	 eol;
	size_t			 len, eol_len, max, avail;
	char			*line, *end;
	unsigned long		 n;
	int			 rc;

	*err = NULL;
	for (;;) {
		switch (c->state) {
		case LB_HTTP_S_STATUS:
		case LB_HTTP_S_HEADERS:
		case LB_HTTP_S_CHUNK:
		case LB_HTTP_S_CHUNK_END:
		case LB_HTTP_S_TRAILER:
			eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
			len = eol.pos < 0 ? evbuffer_get_length(in) : (size_t)eol.pos;
			max = c->state == LB_HTTP_S_CHUNK || c->state == LB_HTTP_S_CHUNK_END ? LB_HTTP_LINE_MAX :
			    LB_HTTP_HEADERS_MAX - c->header_octets;
			if (len > max) {	/* complete or not, it is too long */
				*err = c->state == LB_HTTP_S_CHUNK || c->state == LB_HTTP_S_CHUNK_END ?
				    "invalid response" : "response too large";
				return -1;
			}
			if (eol.pos < 0)
				return 0;
			line = xmalloc(len + 1);
			evbuffer_remove(in, line, len);
			line[len] = '\0';
			evbuffer_drain(in, eol_len);
			if (c->state != LB_HTTP_S_CHUNK && c->state != LB_HTTP_S_CHUNK_END)
				c->header_octets += len + eol_len;
			rc = 0;
			switch (c->state) {
			case LB_HTTP_S_STATUS:
				if (len == 0 && c->got_line == 0)
					c->got_line = 1;	/* one empty line first is tolerated (RFC 9112 2.2) */
				else if ((rc = lb_http_status_line(c, line)) == 0)
					c->state = LB_HTTP_S_HEADERS;
				break;
			case LB_HTTP_S_HEADERS:
				if (len == 0)
					*err = lb_http_headers_done(c);
				else
					rc = lb_http_header_line(c, line);
				break;
			case LB_HTTP_S_CHUNK:
				errno = 0;
				n = strtoul(line, &end, 16);
				if (end == line || errno != 0 || (*end != '\0' && *end != ';' && *end != ' ' &&
				    *end != '\t'))
					rc = -1;
				else if (n == 0)
					c->state = LB_HTTP_S_TRAILER;
				else if (n > c->req->max_response)
					*err = "response too large";
				else {
					c->body_left = n;
					c->state = LB_HTTP_S_CHUNK_DATA;
				}
				break;
			case LB_HTTP_S_CHUNK_END:
				if (len != 0)
					rc = -1;
				else
					c->state = LB_HTTP_S_CHUNK;
				break;
			case LB_HTTP_S_TRAILER:
				if (len == 0)
					c->state = LB_HTTP_S_IDLE;
				else
					rc = lb_http_header_line(c, line);
				break;
			default:
				break;
			}
			free(line);
			if (rc == -1)
				*err = "invalid response";
			if (*err != NULL)
				return -1;
			break;
		case LB_HTTP_S_BODY:
		case LB_HTTP_S_CHUNK_DATA:
			if ((avail = evbuffer_get_length(in)) == 0)
				return 0;
			if (avail > c->body_left)
				avail = c->body_left;
			if ((*err = lb_http_take(c, in, avail)) != NULL)
				return -1;
			if ((c->body_left -= avail) == 0)
				c->state = c->state == LB_HTTP_S_BODY ? LB_HTTP_S_IDLE : LB_HTTP_S_CHUNK_END;
			break;
		case LB_HTTP_S_TO_CLOSE:
			if ((avail = evbuffer_get_length(in)) == 0)
				return 0;
			if ((*err = lb_http_take(c, in, avail)) != NULL)
				return -1;
			return 0;
		case LB_HTTP_S_IDLE:
			return 1;
		case LB_HTTP_S_FREE:
			fatal_bug("lb_http_parse: a free slot");
		}
	}
}

static void
lb_http_read(struct bufferevent *bev, void *arg)
{
	struct lb_http_conn	*c = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	const char		*err;
	int			 rc;

	if (c->req == NULL) {		/* an idle connection the server talks on: not ours to understand */
		lb_http_conn_close(c);
		lb_http_kick(bufferevent_get_base(bev));
		return;
	}
	c->connected = 1;
	c->got += evbuffer_get_length(in) > 0;
	if ((rc = lb_http_parse(c, in, &err)) == 0)
		return;
	if (rc == -1)
		c->keepalive = 0;
	lb_http_finish(c, rc == 1 ? NULL : err, c->status != 0);
}

/* lb_http_tls_error - what a failed handshake on c gives the rule, in buf; NULL when it has not failed. */
static const char *
lb_http_tls_error(struct lb_http_conn *c, char *buf, size_t size)
{
	char		 info[300];
	const char	*why;

	if (c->tls == NULL)
		return NULL;
	if (tls_verify_error(c->tls, info, sizeof(info))) {
		snprintf(buf, size, "certificate verification failed: %s", info);
		return buf;
	}
	if ((why = tls_handshake_error(c->tls)) == NULL)
		return NULL;
	snprintf(buf, size, "tls handshake failed: %s", why);
	return buf;
}

static void
lb_http_event(struct bufferevent *bev, short what, void *arg)
{
	struct lb_http_conn	*c = arg;
	struct lb_http_req	*r = c->req;
	struct event_base	*base = bufferevent_get_base(bev);
	const char		*err;
	char			 buf[400];

	if (what & BEV_EVENT_CONNECTED) {
		c->connected = 1;
		return;
	}
	if (r == NULL) {		/* the server closed a kept connection */
		lb_http_conn_close(c);
		lb_http_kick(base);
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->state == LB_HTTP_S_TO_CLOSE) {
		lb_http_read(bev, c);	/* what is left in the input, then the close ends the body */
		if (c->req == r && c->state == LB_HTTP_S_TO_CLOSE) {
			c->state = LB_HTTP_S_IDLE;
			lb_http_finish(c, NULL, 1);
		}
		return;
	}
	if (c->reused && c->got == 0 && !r->retried && lb_http_tls_error(c, buf, sizeof(buf)) == NULL) {
		/* The server closed the kept connection as we sent on it: once more on a new one (RFC 9112 9.3.1). */
		r->retried = 1;
		lb_http_conn_close(c);
		lb_http_start(base, r);
		return;
	}
	if ((err = lb_http_tls_error(c, buf, sizeof(buf))) == NULL)
		err = !c->connected ? "connection failed" : "connection closed";
	c->keepalive = 0;
	lb_http_finish(c, err, c->status != 0);
}

/* lb_http_tls_ready - the handshake of c is over; a failure answers the request (the event may come later). */
static void
lb_http_tls_ready(void *arg, int ok, const char *why)
{
	struct lb_http_conn	*c = arg;
	char			 buf[400];
	const char		*err;

	if (ok || c->req == NULL)
		return;
	if ((err = lb_http_tls_error(c, buf, sizeof(buf))) == NULL) {
		snprintf(buf, sizeof(buf), "tls handshake failed: %s", why);
		err = buf;
	}
	c->keepalive = 0;
	lb_http_finish(c, err, 0);
}

static void
lb_http_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lb_http_conn	*c = arg;

	if (c->req == NULL && c->state == LB_HTTP_S_IDLE)
		lb_http_conn_close(c);
}

/* lb_http_send - put r on the connection c (idle, or just opened) and send it. */
static void
lb_http_send(struct lb_http_conn *c, struct lb_http_req *r)
{
	c->req = r;
	r->conn = c;
	c->state = LB_HTTP_S_STATUS;
	c->got = c->got_line = 0;
	c->status = 0;
	c->header_octets = 0;
	evbuffer_drain(c->headers, evbuffer_get_length(c->headers));
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	evtimer_del(c->idle);
	/* A copy: r->out is sent again if a kept connection turns out closed. https holds it until the handshake
	 * is over. */
	bufferevent_write(c->bev, evbuffer_pullup(r->out, -1), evbuffer_get_length(r->out));
}

/* lb_http_open - a new connection in slot c for r's peer; -1 when it cannot even start. */
static int
lb_http_open(struct event_base *base, struct lb_http_conn *c, struct lb_http_req *r)
{
	struct bufferevent	*sock;

	memset(c, 0, sizeof(*c));
	if ((sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		return -1;
	/* A refused connection is reported through the event callback, not here. */
	if (bufferevent_socket_connect(sock, (struct sockaddr *)&r->sa, (int)r->salen) == -1) {
		bufferevent_free(sock);
		return -1;
	}
	if (r->tls != NULL) {
		if ((c->tls = tls_wrap(base, sock, r->tls, r->host, lb_http_tls_ready, c)) == NULL) {
			bufferevent_free(sock);
			return -1;
		}
		c->bev = tls_bev(c->tls);
	} else
		c->bev = sock;
	util_strlcpy(c->key, r->key, sizeof(c->key));
	c->idle = evtimer_new(base, lb_http_idle_timeout, c);
	c->headers = evbuffer_new();
	c->body = evbuffer_new();
	bufferevent_setcb(c->bev, lb_http_read, NULL, lb_http_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return 0;
}

/*
 * lb_http_start - send r on an idle connection to its peer, or on a new one while the peer has fewer than
 * LB_HTTP_PER_PEER; else r waits in the queue. An idle connection to another peer makes room when every slot
 * is taken.
 */
static void
lb_http_start(struct event_base *base, struct lb_http_req *r)
{
	struct lb_http_conn	*c, *idle = NULL, *slot = NULL, *evict = NULL;
	int			 i, n = 0;

	for (i = 0; i < LB_HTTP_CONNS; i++) {
		c = &lb_http_conns[i];
		if (c->state == LB_HTTP_S_FREE) {
			if (slot == NULL)
				slot = c;
		} else if (strcmp(c->key, r->key) != 0) {
			if (c->state == LB_HTTP_S_IDLE && evict == NULL)
				evict = c;
		} else {
			n++;
			if (c->state == LB_HTTP_S_IDLE && idle == NULL)
				idle = c;
		}
	}
	if (r->queued) {
		TAILQ_REMOVE(&lb_http_queue, r, entry);
		r->queued = 0;
	}
	if (idle != NULL) {
		lb_http_send(idle, r);
		return;
	}
	if (n >= LB_HTTP_PER_PEER || (slot == NULL && evict == NULL)) {
		TAILQ_INSERT_TAIL(&lb_http_queue, r, entry);	/* lb_http_kick() tries again as connections free up */
		r->queued = 1;
		return;
	}
	if (slot == NULL) {
		lb_http_conn_close(evict);
		slot = evict;
	}
	if (lb_http_open(base, slot, r) == -1) {
		memset(slot, 0, sizeof(*slot));
		lb_http_fail_req(r, "connection failed");
		return;
	}
	lb_http_send(slot, r);
}

/* lb_http_kick - a connection was freed or became idle: start the queued requests that can go now. */
static void
lb_http_kick(struct event_base *base)
{
	struct lb_http_req	*r;
	int			 n = 0;

	TAILQ_FOREACH(r, &lb_http_queue, entry)
		n++;
	/* Each turn takes the head: it goes, fails, or is back at the tail; what a woken rule adds waits. */
	while (n-- > 0 && (r = TAILQ_FIRST(&lb_http_queue)) != NULL)
		lb_http_start(base, r);
}

static void
lb_http_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lb_http_req	*r = arg;
	struct lb_http_conn	*c = r->conn;

	if (c != NULL) {		/* half a response, or none: the connection cannot serve another */
		c->keepalive = 0;
		lb_http_finish(c, "timeout", c->status != 0);
		return;
	}
	lb_http_fail_req(r, "timeout");	/* still queued */
}

static int
lb_http_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

static int
lb_http_method_ok(const char *m)
{
	static const char *const methods[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS" };
	size_t	 i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(m, methods[i]) == 0)
			return 1;
	return 0;
}

/* lb_http_name_ok - a header name a rule may send: a token, and not one this file writes itself. */
static int
lb_http_name_ok(const char *s)
{
	static const char *const ours[] = { "Host", "Content-Length", "Transfer-Encoding", "Connection" };
	size_t	 i;

	if (*s == '\0' || strspn(s, "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
	    != strlen(s))
		return 0;
	for (i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		if (strcasecmp(s, ours[i]) == 0)
			return 0;
	return 1;
}

static int
lb_http_value_ok(const char *s)
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

/* lb_http_sockaddr - addr (an IPv4 or IPv6 address, maybe in brackets) and port into r. 0 or -1. */
static int
lb_http_sockaddr(struct lb_http_req *r, const char *addr, int port, char *ip, size_t ipsize)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&r->sa;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&r->sa;

	util_strlcpy(ip, addr[0] == '[' ? addr + 1 : addr, ipsize);
	if (strchr(ip, ']') != NULL)
		*strchr(ip, ']') = '\0';
	memset(&r->sa, 0, sizeof(r->sa));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		r->salen = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		r->salen = sizeof(*sin6);
		return 0;
	}
	return -1;
}

/*
 * core.http_request{ method, url, connect, headers, body, timeout, max_response, failures, cooldown, verify,
 * ca_file } - the request checked by mta.http.request (lua/luamta/init.lua); connect is the address to connect
 * to, verify and ca_file the https settings.
 */
static int
lb_http_request(lua_State *L)
{
	const char		*method, *url, *addr, *body, *path, *query, *host, *scheme, *ca_file;
	char			 target[4096], hostval[300], bname[LB_BREAKER_NAME], ip[64], err[400];
	struct evhttp_uri	*uri;
	struct lb_http_req	*r;
	struct lb_breaker	*br;
	struct timeval		 tv;
	struct event_base	*base;
	size_t			 blen = 0;
	double			 timeout;
	int			 port, tls, verify, defport;

	luaL_checktype(L, 1, LUA_TTABLE);
	method = lb_http_optstring(L, "method", "GET");
	url = lb_http_optstring(L, "url", NULL);
	addr = lb_http_optstring(L, "connect", NULL);
	ca_file = lb_http_optstring(L, "ca_file", "");
	timeout = lb_http_optnumber(L, "timeout", 10);
	lua_getfield(L, 1, "verify");			/* [t .. verify] */
	verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (url == NULL || addr == NULL)
		return luaL_error(L, "core.http_request: url and connect are required");
	if (!lb_http_method_ok(method))
		return luaL_error(L, "mta.http.request: unknown method %s", method);
	if (strlen(ca_file) >= LB_HTTP_PATH_MAX)
		return luaL_error(L, "mta.http.request: ca_file is too long");
	lua_getfield(L, 1, "body");			/* [t .. body] */
	body = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &blen);
	lua_pop(L, 1);
	if ((base = lb_run_base(L)) == NULL)
		return luaL_error(L, "mta.http.request: only a stage handler can wait");

	if ((uri = evhttp_uri_parse(url)) == NULL)
		return lb_http_fail(L, "invalid url");
	if ((scheme = evhttp_uri_get_scheme(uri)) == NULL || (strcasecmp(scheme, "http") != 0 &&
	    strcasecmp(scheme, "https") != 0) || (host = evhttp_uri_get_host(uri)) == NULL || *host == '\0' ||
	    strlen(host) >= sizeof(r->host)) {
		evhttp_uri_free(uri);
		return lb_http_fail(L, "only http:// and https:// urls are supported");
	}
	tls = strcasecmp(scheme, "https") == 0;
	defport = tls ? 443 : 80;
	if ((port = evhttp_uri_get_port(uri)) == -1)
		port = defport;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/", query ? "?" : "",
	    query ? query : "") >= (int)sizeof(target) ||
	    snprintf(hostval, sizeof(hostval), port == defport ? "%s" : "%s:%d", host, port) >= (int)sizeof(hostval)) {
		evhttp_uri_free(uri);
		return lb_http_fail(L, "url too long");
	}

	r = xcalloc(1, sizeof(*r));
	util_strlcpy(r->host, host, sizeof(r->host));
	evhttp_uri_free(uri);
	if (lb_http_sockaddr(r, addr, port, ip, sizeof(ip)) == -1) {
		free(r);
		return luaL_error(L, "core.http_request: connect must be an IP address");
	}
	if (tls && (r->tls = lb_http_tls_conf(verify, ca_file, err, sizeof(err))) == NULL) {
		free(r);
		return lb_http_fail(L, err);
	}
	/* The peer: a kept connection serves only requests that would have opened it the same way. */
	if (snprintf(r->key, sizeof(r->key), "%s %s %d %s %d %s", tls ? "https" : "http", ip, port,
	    tls ? r->host : "", verify, tls ? ca_file : "") >= (int)sizeof(r->key)) {
		free(r);
		return lb_http_fail(L, "url too long");
	}
	snprintf(bname, sizeof(bname), "%s %.120s", tls ? "https" : "http", hostval);
	br = lb_breaker_get(bname);
	if (!lb_breaker_allow(br)) {
		free(r);
		return lb_http_fail(L, "circuit open");
	}
	r->breaker = br;
	r->failures = (int)lb_http_optnumber(L, "failures", 5);
	r->cooldown = lb_http_optnumber(L, "cooldown", 30);
	r->max_response = (size_t)lb_http_optnumber(L, "max_response", 1048576);
	r->head = strcmp(method, "HEAD") == 0;
	r->out = evbuffer_new();
	evbuffer_add_printf(r->out, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: luamta/" PACKAGE_VERSION "\r\n",
	    method, target, hostval);
	lua_getfield(L, 1, "headers");			/* [t .. headers] */
	if (lua_istable(L, -1)) {
		lua_pushnil(L);				/* [t .. headers nil] */
		while (lua_next(L, -2) != 0) {		/* [t .. headers k v] */
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
			    lb_http_name_ok(lua_tostring(L, -2)) && lb_http_value_ok(lua_tostring(L, -1)))
				evbuffer_add_printf(r->out, "%s: %s\r\n", lua_tostring(L, -2), lua_tostring(L, -1));
			lua_pop(L, 1);			/* [t .. headers k] */
		}
	}
	lua_pop(L, 1);					/* [t ..] */
	if (body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
	    strcmp(method, "PATCH") == 0)
		evbuffer_add_printf(r->out, "Content-Length: %zu\r\n", blen);
	evbuffer_add(r->out, "\r\n", 2);
	if (body != NULL && blen > 0)
		evbuffer_add(r->out, body, blen);

	if ((r->run = lb_run_prepare_wait(L, 0)) == 0) {
		lb_http_req_free(r);
		return luaL_error(L, "mta.http.request: only a stage handler can wait");
	}
	r->timer = evtimer_new(base, lb_http_timeout, r);
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
	evtimer_add(r->timer, &tv);
	lb_http_start(base, r);	/* may answer at once (a connection that cannot start) */
	return lb_run_yield(L);	/* lb_http_finish() or lb_http_fail_req() gives the answer, maybe before this */
}

void
lb_http_register(lua_State *L)
{
	lua_pushcfunction(L, lb_http_request);		/* [.. core fn] */
	lua_setfield(L, -2, "http_request");		/* [.. core] */
}
