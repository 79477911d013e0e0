/*
 * dns.c - c-ares on libevent. c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB); we
 * give each one a persistent event and keep one timer at ares_timeout(). Answers are parsed with c-ares's
 * parsers plus a small bounded walker for TTLs and CNAME targets, and cached by (type, lower-cased name) in a
 * fixed-size table: positive answers for their TTL (at most a day), negative ones for a minute. A question
 * already on the wire is not asked twice: later askers wait for the same answer.
 *	dns_init()/dns_shutdown()	the channel
 *	dns_cached()/dns_query()	look up; the answer arrives by callback
 *	dns_hostname_ok()		is a name (a PTR answer) a host name we may use
 *	dns_set_answerer()		answer every question in the process instead of the network (luamta test)
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>
#include <arpa/nameser.h>
#include <event2/event.h>

#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define DNS_CACHE_SLOTS		8192	/* entries; a new one replaces whatever sits in its slot */
#define DNS_TTL_MAX		86400
#define DNS_TTL_NEGATIVE	60
#define DNS_FDS_MAX		64

struct dns_cache_entry {
	enum dns_type		 type;
	char			 name[DNS_NAME_MAX + 1];
	double			 expires;	/* monotonic; 0 = empty */
	struct dns_result	 res;
};

struct dns_fd {
	ares_socket_t	 fd;
	struct event	*ev;
};

struct dns_waiter {
	dns_done_fn		*done;
	uint64_t		 cookie;
	struct dns_waiter	*next;
};

/* One question on the wire; everyone who asks it while it is out waits for the same answer. */
struct dns_query {
	enum dns_type		 type;
	char			 name[DNS_NAME_MAX + 1];
	uint64_t		 key;		/* in dns_inflight */
	struct dns_waiter	*waiters;	/* owns */
};

static ares_channel		 dns_chan;
static int			 dns_ready;
static struct event_base	*dns_base;
static struct event		*dns_timer;
static struct dns_fd		 dns_fds[DNS_FDS_MAX];
static struct dns_cache_entry	*dns_cache;
static struct idmap		*dns_inflight;	/* (type, name) hash -> struct dns_query */
static dns_answer_fn		*dns_answerer;	/* set: no question leaves the process */

static const char *const dns_status_names[] = { "ok", "nxdomain", "nodata", "timeout", "servfail" };
static const char *const dns_type_names[] = { "A", "AAAA", "MX", "PTR", "TXT", "CNAME" };
static const int dns_rr_types[] = { ns_t_a, ns_t_aaaa, ns_t_mx, ns_t_ptr, ns_t_txt, ns_t_cname };

const char *
dns_status_name(enum dns_status st)
{
	return (size_t)st < sizeof(dns_status_names) / sizeof(dns_status_names[0]) ? dns_status_names[st] : "?";
}

const char *
dns_type_name(enum dns_type t)
{
	return t < DNS_T_COUNT ? dns_type_names[t] : "?";
}

void
dns_result_clear(struct dns_result *r)
{
	size_t	 i;

	for (i = 0; i < r->n; i++)
		free(r->rec[i]);
	memset(r, 0, sizeof(*r));
}

static void
dns_timer_reset(void)
{
	struct timeval	 tv, *tvp;

	tvp = ares_timeout(dns_chan, NULL, &tv);
	if (tvp != NULL)
		evtimer_add(dns_timer, tvp);
	else
		evtimer_del(dns_timer);
}

static void
dns_io_cb(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(dns_chan, (what & EV_READ) ? fd : ARES_SOCKET_BAD, (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_timer_reset();
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	ares_process_fd(dns_chan, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_reset();
}

static void
dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_fd	*slot = NULL, *free_slot = NULL;
	size_t		 i;

	for (i = 0; i < DNS_FDS_MAX; i++) {
		if (dns_fds[i].ev != NULL && dns_fds[i].fd == fd)
			slot = &dns_fds[i];
		else if (dns_fds[i].ev == NULL && free_slot == NULL)
			free_slot = &dns_fds[i];
	}
	if (slot != NULL) {
		event_free(slot->ev);
		slot->ev = NULL;
	}
	if (!readable && !writable)
		return;
	if (slot == NULL)
		slot = free_slot;
	if (slot == NULL) {
		log_error("dns: more than %d sockets open; a query will time out", DNS_FDS_MAX);
		return;
	}
	slot->fd = fd;
	slot->ev = event_new(dns_base, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) | EV_PERSIST,
	    dns_io_cb, NULL);
	event_add(slot->ev, NULL);
}

int
dns_init(struct event_base *base, const char *servers, double timeout, int tries, char *err, size_t errsize)
{
	struct ares_options	 opts;
	int			 rc;

	if (!dns_ready && (rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, errsize, "dns: %s", ares_strerror(rc));
		return -1;
	}
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = dns_sock_state_cb;
	opts.timeout = (int)(timeout * 1000);
	opts.tries = tries;
	opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	if ((rc = ares_init_options(&dns_chan, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	    ARES_OPT_FLAGS)) != ARES_SUCCESS) {
		snprintf(err, errsize, "dns: cannot start the resolver: %s", ares_strerror(rc));
		return -1;
	}
	if (servers != NULL && *servers != '\0' &&
	    (rc = ares_set_servers_ports_csv(dns_chan, servers)) != ARES_SUCCESS) {
		snprintf(err, errsize, "dns.servers: %s: %s", servers, ares_strerror(rc));
		ares_destroy(dns_chan);
		return -1;
	}
	dns_base = base;
	dns_timer = evtimer_new(base, dns_timer_cb, NULL);
	if (dns_cache == NULL)
		dns_cache = xcalloc(DNS_CACHE_SLOTS, sizeof(*dns_cache));
	dns_ready = 1;
	return 0;
}

void
dns_shutdown(void)
{
	size_t	 i;

	if (!dns_ready)
		return;
	ares_destroy(dns_chan);		/* runs every pending callback with ARES_EDESTRUCTION */
	event_free(dns_timer);
	for (i = 0; i < DNS_FDS_MAX; i++)
		if (dns_fds[i].ev != NULL) {
			event_free(dns_fds[i].ev);
			dns_fds[i].ev = NULL;
		}
	for (i = 0; i < DNS_CACHE_SLOTS; i++)
		dns_result_clear(&dns_cache[i].res);
	free(dns_cache);
	dns_cache = NULL;
	dns_ready = 0;
}

/* dns_normalize - lower case without the trailing dot; -1 when the name is empty, too long or has bad octets. */
static int
dns_normalize(const char *name, char *out, size_t size)
{
	size_t	 i, n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_NAME_MAX || n >= size)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char	 c = (unsigned char)name[i];

		if (c <= ' ' || c == 0x7f)
			return -1;
		out[i] = (char)tolower(c);
	}
	out[n] = '\0';
	return 0;
}

static size_t
dns_slot(enum dns_type type, const char *name)
{
	return (size_t)(util_hash64(name, (uint64_t)type) % DNS_CACHE_SLOTS);
}

/* dns_question_key - a 64-bit key for (type, name) in dns_inflight; never 0. */
static uint64_t
dns_question_key(enum dns_type type, const char *name)
{
	return util_hash64(name, (uint64_t)type + 1);
}

const struct dns_result *
dns_cached(enum dns_type type, const char *name)
{
	char			 key[DNS_NAME_MAX + 1];
	struct dns_cache_entry	*e;

	if (!dns_ready || dns_normalize(name, key, sizeof(key)) == -1)
		return NULL;
	e = &dns_cache[dns_slot(type, key)];
	if (e->expires == 0 || e->type != type || strcmp(e->name, key) != 0)
		return NULL;
	if (e->expires < util_monotonic()) {
		dns_result_clear(&e->res);
		e->expires = 0;
		return NULL;
	}
	return &e->res;
}

static void
dns_cache_put(enum dns_type type, const char *key, const struct dns_result *r)
{
	struct dns_cache_entry	*e;
	unsigned		 ttl;
	size_t			 i;

	if (r->status == DNS_TIMEOUT || r->status == DNS_SERVFAIL)
		return;		/* a failure says nothing about the name: ask again next time */
	ttl = r->status == DNS_OK ? r->ttl : DNS_TTL_NEGATIVE;
	if (ttl == 0)
		return;
	if (ttl > DNS_TTL_MAX)
		ttl = DNS_TTL_MAX;
	e = &dns_cache[dns_slot(type, key)];
	dns_result_clear(&e->res);
	e->type = type;
	util_strlcpy(e->name, key, sizeof(e->name));
	e->expires = util_monotonic() + ttl;
	e->res.status = r->status;
	e->res.ttl = ttl;
	e->res.n = r->n;
	for (i = 0; i < r->n; i++) {
		e->res.rec[i] = xstrdup(r->rec[i]);
		e->res.pref[i] = r->pref[i];
	}
}

/* dns_skip_name - the length of the (possibly compressed) name at p, or -1. */
static long
dns_skip_name(const unsigned char *p, const unsigned char *abuf, int alen)
{
	char	*name = NULL;
	long	 len = 0;

	if (p < abuf || p >= abuf + alen)
		return -1;
	if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
		return -1;
	ares_free_string(name);
	return len;
}

int
dns_answer_scan(const unsigned char *abuf, int alen, int want_type, unsigned *min_ttl, char **names, size_t max,
    size_t *nnames)
{
	const unsigned char	*p, *end = abuf + alen;
	unsigned		 qd, an, i;
	long			 len;

	*min_ttl = DNS_TTL_MAX;
	if (nnames)
		*nnames = 0;
	if (alen < NS_HFIXEDSZ)
		return -1;
	qd = (unsigned)(abuf[4] << 8 | abuf[5]);
	an = (unsigned)(abuf[6] << 8 | abuf[7]);
	p = abuf + NS_HFIXEDSZ;
	for (i = 0; i < qd; i++) {
		if ((len = dns_skip_name(p, abuf, alen)) < 0 || end - p < len + NS_QFIXEDSZ)
			return -1;
		p += len + NS_QFIXEDSZ;
	}
	for (i = 0; i < an; i++) {
		unsigned	 type, ttl, rdlen;

		if ((len = dns_skip_name(p, abuf, alen)) < 0 || end - p < len + NS_RRFIXEDSZ)
			return -1;
		p += len;
		type = (unsigned)(p[0] << 8 | p[1]);
		ttl = (unsigned)p[4] << 24 | (unsigned)p[5] << 16 | (unsigned)p[6] << 8 | (unsigned)p[7];
		rdlen = (unsigned)(p[8] << 8 | p[9]);
		p += NS_RRFIXEDSZ;
		if (end - p < (long)rdlen)
			return -1;
		if (ttl < *min_ttl)
			*min_ttl = ttl;
		if ((int)type == want_type && want_type == ns_t_cname && names != NULL && *nnames < max) {
			char	*target = NULL;

			if (ares_expand_name(p, abuf, alen, &target, &len) != ARES_SUCCESS)
				return -1;
			names[(*nnames)++] = xstrdup(target);
			ares_free_string(target);
		}
		p += rdlen;
	}
	return (int)an;
}

static void
dns_add(struct dns_result *r, const char *s, int pref)
{
	if (r->n >= DNS_RECORDS_MAX)
		return;
	r->pref[r->n] = pref;
	r->rec[r->n++] = xstrdup(s);
}

/* dns_parse - turn a raw answer into r (status DNS_OK with records, or DNS_NODATA / DNS_SERVFAIL). */
static void
dns_parse(enum dns_type type, const unsigned char *abuf, int alen, struct dns_result *r)
{
	char	 text[INET6_ADDRSTRLEN];
	size_t	 i;
	int	 n, rc = ARES_SUCCESS;

	if (dns_answer_scan(abuf, alen, dns_rr_types[type], &r->ttl, type == DNS_T_CNAME ? r->rec : NULL,
	    DNS_RECORDS_MAX, &r->n) == -1) {
		r->status = DNS_SERVFAIL;
		r->error = "unreadable answer";
		return;
	}
	switch (type) {
	case DNS_T_A: {
		struct ares_addrttl	 a[DNS_RECORDS_MAX];

		n = DNS_RECORDS_MAX;
		if ((rc = ares_parse_a_reply(abuf, alen, NULL, a, &n)) == ARES_SUCCESS)
			for (i = 0; i < (size_t)n; i++)
				if (inet_ntop(AF_INET, &a[i].ipaddr, text, sizeof(text)))
					dns_add(r, text, 0);
		break;
	}
	case DNS_T_AAAA: {
		struct ares_addr6ttl	 a[DNS_RECORDS_MAX];

		n = DNS_RECORDS_MAX;
		if ((rc = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n)) == ARES_SUCCESS)
			for (i = 0; i < (size_t)n; i++)
				if (inet_ntop(AF_INET6, &a[i].ip6addr, text, sizeof(text)))
					dns_add(r, text, 0);
		break;
	}
	case DNS_T_MX: {
		struct ares_mx_reply	*mx = NULL, *m;

		if ((rc = ares_parse_mx_reply(abuf, alen, &mx)) == ARES_SUCCESS)
			for (m = mx; m != NULL; m = m->next)
				dns_add(r, m->host, m->priority);
		ares_free_data(mx);
		break;
	}
	case DNS_T_PTR: {
		struct hostent	*he = NULL;
		unsigned char	 dummy[16] = { 0 };

		if ((rc = ares_parse_ptr_reply(abuf, alen, dummy, 4, AF_INET, &he)) == ARES_SUCCESS) {
			dns_add(r, he->h_name, 0);
			for (i = 0; he->h_aliases != NULL && he->h_aliases[i] != NULL; i++)
				if (strcasecmp(he->h_aliases[i], he->h_name) != 0)
					dns_add(r, he->h_aliases[i], 0);
			ares_free_hostent(he);
		}
		break;
	}
	case DNS_T_TXT: {
		struct ares_txt_ext	*txt = NULL, *t;
		char			 buf[4096];
		size_t			 len = 0;

		/* A TXT record is several strings: join them, as SPF and DNSBL readers do. */
		if ((rc = ares_parse_txt_reply_ext(abuf, alen, &txt)) == ARES_SUCCESS) {
			for (t = txt; t != NULL; t = t->next) {
				if (t->record_start && len > 0) {
					buf[len] = '\0';
					dns_add(r, buf, 0);
					len = 0;
				}
				if (len + t->length < sizeof(buf)) {
					memcpy(buf + len, t->txt, t->length);
					len += t->length;
				}
			}
			if (txt != NULL) {
				buf[len] = '\0';
				dns_add(r, buf, 0);
			}
		}
		ares_free_data(txt);
		break;
	}
	case DNS_T_CNAME:
	default:
		break;
	}
	if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && r->n == 0))
		r->status = DNS_NODATA;
	else if (rc != ARES_SUCCESS) {
		r->status = DNS_SERVFAIL;
		r->error = "unreadable answer";
	} else
		r->status = DNS_OK;
}

static void
dns_query_free(struct dns_query *q)
{
	struct dns_waiter	*w;

	if (dns_inflight != NULL && idmap_get(dns_inflight, q->key) == q)
		idmap_del(dns_inflight, q->key);
	while ((w = q->waiters) != NULL) {
		q->waiters = w->next;
		free(w);
	}
	free(q);
}

/* dns_deliver - cache r (taken) and give it to everyone waiting for q; frees q. */
static void
dns_deliver(struct dns_query *q, struct dns_result *r)
{
	struct dns_waiter	*w;

	if (r->status != DNS_OK) {
		enum dns_status	 st = r->status;
		const char	*error = r->error;

		dns_result_clear(r);
		r->status = st;
		r->error = error;
	}
	dns_cache_put(q->type, q->name, r);	/* keeps answers and negative answers, never failures */
	metrics_dns(q->type, r->status);
	log_debug("dns: %s %s: %s (%zu record(s))%s%s", dns_type_name(q->type), q->name, dns_status_name(r->status),
	    r->n, r->error ? ": " : "", r->error ? r->error : "");
	if (idmap_get(dns_inflight, q->key) == q)
		idmap_del(dns_inflight, q->key);	/* a new question from a callback goes out afresh */
	for (w = q->waiters; w != NULL; w = w->next)
		w->done(w->cookie, r);
	dns_result_clear(r);
	dns_query_free(q);
}

/*
 * dns_ares_error - the words a log line gives for why c-ares found no answer: the RCODE when c-ares says which
 * (newer releases), else what it does say. c-ares 1.18 reports a SERVFAIL or REFUSED answer from the last
 * server tried, and a server it cannot reach, all as ARES_ECONNREFUSED.
 */
static const char *
dns_ares_error(int status)
{
	switch (status) {
	case ARES_ESERVFAIL:	return "SERVFAIL";
	case ARES_EREFUSED:	return "REFUSED";
	case ARES_EFORMERR:	return "FORMERR";
	case ARES_ENOTIMP:	return "NOTIMP";
	case ARES_ECONNREFUSED:	return "SERVFAIL or REFUSED, or no server reachable";
	case ARES_EBADRESP:	return "unreadable answer";
	default:		return ares_strerror(status);	/* a static string */
	}
}

static void
dns_answer_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query	*q = arg;
	struct dns_result	 r;

	memset(&r, 0, sizeof(r));
	switch (status) {
	case ARES_SUCCESS:
		dns_parse(q->type, abuf, alen, &r);
		break;
	case ARES_ENOTFOUND:
		r.status = DNS_NXDOMAIN;
		break;
	case ARES_ENODATA:
		r.status = DNS_NODATA;
		break;
	case ARES_ETIMEOUT:
		r.status = DNS_TIMEOUT;
		r.error = "timeout (no answer)";
		break;
	case ARES_EDESTRUCTION:		/* shutting down: nobody waits any more */
	case ARES_ECANCELLED:
		dns_query_free(q);
		return;
	default:			/* SERVFAIL, REFUSED, an unreachable server, an answer we cannot read */
		r.status = DNS_SERVFAIL;
		r.error = dns_ares_error(status);
		break;
	}
	dns_deliver(q, &r);
}

/* dns_answer_local - the answerer's reply to q, given from the loop as the network's would be. */
static void
dns_answer_local(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query	*q = arg;
	struct dns_result	 r;

	memset(&r, 0, sizeof(r));
	if (dns_answerer(q->type, q->name, &r) == -1) {
		dns_result_clear(&r);
		r.status = DNS_NXDOMAIN;
	}
	dns_deliver(q, &r);
}

int
dns_query(enum dns_type type, const char *name, dns_done_fn *done, uint64_t cookie)
{
	struct dns_query	*q;

	if (!dns_ready || type >= DNS_T_COUNT)
		return -1;
	char			 key[DNS_NAME_MAX + 1];
	struct dns_waiter	*w;

	if (dns_normalize(name, key, sizeof(key)) == -1)
		return -1;
	w = xcalloc(1, sizeof(*w));
	w->done = done;
	w->cookie = cookie;
	if (dns_inflight == NULL)
		dns_inflight = idmap_new();
	q = idmap_get(dns_inflight, dns_question_key(type, key));
	if (q != NULL && q->type == type && strcmp(q->name, key) == 0) {
		w->next = q->waiters;		/* the same question is out already: wait for its answer */
		q->waiters = w;
		return 0;
	}
	q = xcalloc(1, sizeof(*q));
	util_strlcpy(q->name, key, sizeof(q->name));
	q->type = type;
	q->waiters = w;
	q->key = dns_question_key(type, key);
	if (idmap_get(dns_inflight, q->key) == NULL)	/* a colliding question is simply not shared */
		idmap_put(dns_inflight, q->key, q);
	if (dns_answerer != NULL) {
		struct timeval	 now = { 0, 0 };

		event_base_once(dns_base, -1, EV_TIMEOUT, dns_answer_local, q, &now);
		return 0;
	}
	ares_query(dns_chan, q->name, ns_c_in, dns_rr_types[type], dns_answer_cb, q);
	dns_timer_reset();
	return 0;
}

void
dns_set_answerer(dns_answer_fn *fn)
{
	dns_answerer = fn;
}

int
dns_hostname_ok(const char *name)
{
	size_t	 i, label = 0, n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;				/* the root */
	if (n == 0 || n > DNS_HOSTNAME_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char	 c = (unsigned char)name[i];

		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')	/* "..", ".a", "a-.b" */
				return 0;
			label = 0;
			continue;
		}
		if (c == '-') {
			if (label == 0)				/* "-a" */
				return 0;
		} else if (!isascii(c) || !isalnum(c))
			return 0;
		if (++label > DNS_LABEL_MAX)
			return 0;
	}
	return label > 0 && name[n - 1] != '-';
}

int
dns_reverse_name(const char *ip, char *out, size_t size)
{
	unsigned char	 a[16];
	size_t		 pos = 0;
	int		 i, n;

	if (inet_pton(AF_INET, ip, a) == 1) {
		n = snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
		return n > 0 && (size_t)n < size ? 0 : -1;
	}
	if (inet_pton(AF_INET6, ip, a) != 1 || size < 74)
		return -1;
	for (i = 15; i >= 0; i--) {
		static const char	 hex[] = "0123456789abcdef";

		out[pos++] = hex[a[i] & 0xf];
		out[pos++] = '.';
		out[pos++] = hex[a[i] >> 4];
		out[pos++] = '.';
	}
	memcpy(out + pos, "ip6.arpa", 9);
	return 0;
}
