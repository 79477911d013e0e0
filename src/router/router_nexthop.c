/*
 * router_nexthop.c - where a message's recipients go out (router_priv.h; docs/admin.md, "Delivery"): the
 * recipients of one message for one next hop form a group; its MX and address lookups, the rule that we never
 * connect to ourselves, at most routing.max_per_domain transactions per next hop, the transaction itself
 * (mta.c, SMTP or LMTP) and the message body read for it from the queue file, a chunk at a time.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <event2/listener.h>
#include <lua.h>

#include "dns.h"
#include "iothread.h"
#include "lb.h"
#include "log.h"
#include "router_priv.h"
#include "util.h"

static struct router_group	*router_waiting;	/* groups waiting for a connection slot */
static struct idmap		*router_dest;	/* next hop key hash -> (intptr_t) transactions in flight */

static void	router_group_ready(struct router_group *);

/* SMTP groups ------------------------------------------------------------------------------------------------ */

void
router_group_finish(struct router_group *g, enum router_outcome outcome, const char *dsn, const char *text)
{
	size_t	 i;

	for (i = 0; i < g->n; i++) {
		struct router_rcpt	*r = &g->m->rcpts[g->idx[i]];

		if (r->outcome != R_RELAY)
			continue;
		r->outcome = outcome;
		util_strlcpy(r->dsn, dsn, sizeof(r->dsn));
		util_strlcpy(r->text, text, sizeof(r->text));
		if (r->relay[0] == '\0')
			util_strlcpy(r->relay, "none", sizeof(r->relay));
	}
	router_msg_step_done(g->m);
}

static intptr_t
router_dest_count(const char *key, int delta)
{
	uint64_t	 k = router_key(key);
	intptr_t	 n;

	if (router_dest == NULL)
		router_dest = idmap_new();
	n = (intptr_t)idmap_get(router_dest, k) + delta;

	if (n <= 0)
		idmap_del(router_dest, k);
	else
		idmap_put(router_dest, k, (void *)n);
	return n < 0 ? 0 : n;
}

static void	router_group_send(struct router_group *);

static void
router_mta_done(uint64_t cookie, const struct mta_result *res)
{
	struct router_group	*g = idmap_get(router_groups, cookie);
	struct router_group	**pp, *w;
	size_t			 i;

	if (g == NULL)
		return;
	for (i = 0; i < g->n && i < res->nrcpts; i++) {
		struct router_rcpt		*r = &g->m->rcpts[g->idx[i]];
		const struct mta_rcpt_result	*x = &res->rcpts[i];

		r->outcome = x->status == MTA_SENT ? R_SENT : x->status == MTA_BOUNCED ? R_FAILED : R_DEFERRED;
		util_strlcpy(r->dsn, x->dsn, sizeof(r->dsn));
		util_strlcpy(r->text, x->text, sizeof(r->text));
		util_strlcpy(r->relay, res->relay, sizeof(r->relay));
		util_strlcpy(r->remote, res->remote_host, sizeof(r->remote));
		util_strlcpy(r->tls, res->tls, sizeof(r->tls));
	}
	router_dest_count(g->key, -1);
	/* A slot to this next hop is free: the first group waiting for it goes. */
	for (pp = &router_waiting; (w = *pp) != NULL; pp = &w->next_wait) {
		if (strcmp(w->key, g->key) == 0) {
			*pp = w->next_wait;
			w->next_wait = NULL;
			router_group_send(w);
			break;
		}
	}
	router_msg_step_done(g->m);
}

/* The body of a message goes out a chunk at a time, read on the body thread (mta.h, mta_read_fn). */
struct router_chunk {
	uint64_t		 handle;
	char			 id[QUEUEID_SIZE];
	char			*spool;		/* owns */
	size_t			 body_offset;
	unsigned long long	 off;
	size_t			 max, got;
	char			*buf;		/* owns max */
};

size_t
router_body_len(const struct router_msg *m)
{
	return (size_t)(m->q.file_size - m->q.env.body_offset);
}

static int
router_chunk_work(void *arg)
{
	struct router_chunk	*ch = arg;

	return spool_read_body(ch->spool, ch->id, ch->body_offset, ch->off, ch->buf, ch->max, &ch->got);
}

static void
router_chunk_done(void *arg, int err)
{
	struct router_chunk	*ch = arg;

	mta_body(ch->handle, ch->buf, ch->got, err);
	free(ch->buf);
	free(ch->spool);
	free(ch);
}

static void
router_body_read(uint64_t cookie, uint64_t handle, unsigned long long off, size_t max)
{
	struct router_group	*g = idmap_get(router_groups, cookie);
	struct router_chunk	*ch;

	if (g == NULL) {
		mta_body(handle, NULL, 0, ENOENT);
		return;
	}
	ch = xcalloc(1, sizeof(*ch));
	ch->handle = handle;
	util_strlcpy(ch->id, g->m->id, sizeof(ch->id));
	ch->spool = xstrdup(g->m->spool);
	ch->body_offset = g->m->q.env.body_offset;
	ch->off = off;
	ch->max = max;
	ch->buf = xmalloc(max ? max : 1);
	iot_submit(router_body, router_chunk_work, router_chunk_done, ch, NULL);
}

/* router_group_send - one SMTP transaction for the group, or wait for a slot to its next hop. */
static void
router_group_send(struct router_group *g)
{
	struct router_msg	*m = g->m;
	struct mta_request	 req;
	const char		**rcpts;
	size_t			 i, k;

	if (router_dest_count(g->key, 0) >= router_cfg->max_per_domain) {
		g->next_wait = router_waiting;
		router_waiting = g;
		return;
	}
	memset(&req, 0, sizeof(req));
	for (i = 0; i < g->nmx && req.naddrs < MTA_ADDRS_MAX; i++)
		for (k = 0; k < g->nfound[i] && req.naddrs < MTA_ADDRS_MAX; k++)
			req.addrs[req.naddrs++] = g->found[i][k];
	rcpts = xcalloc(g->n, sizeof(*rcpts));
	for (i = 0; i < g->n; i++)	/* LMTP: the mailbox the route rule chose (an alias resolved) */
		rcpts[i] = g->lmtp ? m->rcpts[g->idx[i]].mailbox : m->q.env.rcpts[g->idx[i]];
	req.queue_id = m->id;
	req.helo = m->hostname;
	req.sender = m->q.env.sender;
	req.rcpts = rcpts;
	req.nrcpts = g->n;
	req.read = router_body_read;	/* a chunk at a time from the queue file, never the whole message */
	req.len = router_body_len(m);
	req.body_8bit = m->q.env.body_8bit;
	req.smtputf8 = m->q.env.smtputf8;
	req.connect_timeout = router_cfg->connect_timeout;
	req.reply_timeout = router_cfg->reply_timeout;
	req.tls = g->lmtp ? MTA_TLS_NONE : router_cfg->routing_tls;
	req.lmtp = g->lmtp;
	router_dest_count(g->key, +1);
	mta_deliver(&req, router_mta_done, g->id);
	free(rcpts);
}

/*
 * router_group_drop_self - never connect to ourselves (Postfix's rule, smtp_addr.c): when an address of an MX
 * host is one of ours, that host and every MX of the same or a worse preference are dropped, since we are as
 * good a destination as they are; when nothing better is left, the recipients bounce with 5.4.6 "mail for X
 * loops back to myself" (deferred instead while a better MX host's lookup failed for now: it may be the way).
 * The same holds for a relay host or route, whose addresses all have preference 0. Returns -1 when it decided
 * the group, else 0 with only the addresses worth trying left.
 */
static int
router_group_drop_self(struct router_group *g)
{
	int	 self = INT_MAX, better_failed = 0;
	size_t	 i, k, left = 0;
	char	 text[MTA_TEXT_MAX + 1];

	for (i = 0; i < g->nmx; i++)
		for (k = 0; k < g->nfound[i]; k++)
			if (g->mxpref[i] < self && router_is_self(g->found[i][k].ip, g->found[i][k].port))
				self = g->mxpref[i];
	if (self == INT_MAX)
		return 0;
	for (i = 0; i < g->nmx; i++) {
		if (g->mxpref[i] >= self)
			g->nfound[i] = 0;
		else if (g->mxfailed[i])
			better_failed = 1;
		left += g->nfound[i];
	}
	if (left > 0)
		return 0;
	if (better_failed) {
		snprintf(text, sizeof(text), "Host or domain name lookup failed for a better MX host of %s than this "
		    "server: temporary DNS failure (%s)", g->host, g->dns_error);
		router_group_finish(g, R_DEFERRED, "4.4.3", text);
	} else {
		snprintf(text, sizeof(text), "mail for %s loops back to myself", g->host);
		router_group_finish(g, R_FAILED, "5.4.6", text);
	}
	return -1;
}

/* router_group_ready - DNS is done (or not needed): deliver, or decide the recipients without a connection. */
static void
router_group_ready(struct router_group *g)
{
	size_t	 i, naddrs = 0;
	char	 text[MTA_TEXT_MAX + 1];

	if (g->ready)
		fatal_bug("router: group %llu of %s is ready twice", (unsigned long long)g->id, g->m->id);
	g->ready = 1;

	if (!g->lmtp && router_group_drop_self(g) == -1)	/* an LMTP server is ours to name, not an MX */
		return;
	for (i = 0; i < g->nmx; i++)
		naddrs += g->nfound[i];
	if (naddrs > 0) {
		router_group_send(g);
		return;
	}
	if (g->dns_failed) {
		snprintf(text, sizeof(text), "Host or domain name lookup failed for %s: temporary DNS failure (%s)",
		    g->host, g->dns_error);
		router_group_finish(g, R_DEFERRED, "4.4.3", text);
	} else if (g->dns_nxdomain && g->mode == LB_RELAY_MX) {
		snprintf(text, sizeof(text), "Host or domain name not found. Name service error for name=%s", g->host);
		router_group_finish(g, R_FAILED, "5.1.2", text);
	} else {
		snprintf(text, sizeof(text), "no address found for %s", g->host);
		router_group_finish(g, g->mode == LB_RELAY_MX ? R_FAILED : R_DEFERRED,
		    g->mode == LB_RELAY_MX ? "5.4.4" : "4.4.4", text);
	}
}

/* The DNS cookie packs the group id and what was asked: (gid << 8) | (mx index << 1) | is_aaaa; 0xff = MX. */
#define ROUTER_Q_MX	0xff

static void	router_dns_done(uint64_t cookie, const struct dns_result *res);

/* router_dns_failed - a lookup failed for now: the recipients are deferred (4.4.3, never bounced), and their
 * log line names the first lookup that failed and why, so that the administrator knows which name to check. */
static void
router_dns_failed(struct router_group *g, enum dns_type type, const char *name, const struct dns_result *res)
{
	g->dns_failed = 1;
	if (g->dns_error[0] != '\0')
		return;
	snprintf(g->dns_error, sizeof(g->dns_error), "%s lookup of %s: %s", dns_type_name(type), name,
	    res->error != NULL ? res->error : dns_status_name(res->status));
}

static void
router_ask(struct router_group *g, enum dns_type type, const char *name, unsigned tag)
{
	const struct dns_result	*cached = dns_cached(type, name);
	uint64_t		 cookie = (g->id << 8) | tag;

	g->dns_pending++;
	if (cached != NULL) {
		router_dns_done(cookie, cached);
		return;
	}
	if (dns_query(type, name, router_dns_done, cookie) == -1) {
		struct dns_result	 r;

		memset(&r, 0, sizeof(r));
		r.status = DNS_NXDOMAIN;	/* a name no server could answer for */
		router_dns_done(cookie, &r);
	}
}

static void
router_mx_sort(struct router_group *g, const struct dns_result *res)
{
	size_t	 order[DNS_RECORDS_MAX], i, j, n = res->n;

	for (i = 0; i < n; i++)
		order[i] = i;
	/* Lowest preference first, random among equals (RFC 5321 5.1): shuffle, then a stable sort. */
	for (i = n; i > 1; i--) {
		size_t	 k = (size_t)random() % i, t = order[i - 1];

		order[i - 1] = order[k];
		order[k] = t;
	}
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && res->pref[order[j - 1]] > res->pref[order[j]]; j--) {
			size_t	 t = order[j];

			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (i = 0; i < n && g->nmx < ROUTER_MX_MAX; i++) {
		g->mxpref[g->nmx] = res->pref[order[i]];
		util_strlcpy(g->mx[g->nmx++], res->rec[order[i]], sizeof(g->mx[0]));
	}
}

static void
router_dns_done(uint64_t cookie, const struct dns_result *res)
{
	struct router_group	*g = idmap_get(router_groups, cookie >> 8);
	unsigned		 tag = (unsigned)(cookie & 0xff);
	size_t			 i;

	if (g == NULL)
		return;
	g->dns_pending--;
	if (tag == ROUTER_Q_MX) {
		if (res->status == DNS_OK && res->n == 1 && (res->rec[0][0] == '\0' || strcmp(res->rec[0], ".") == 0)) {
			char	 text[400];

			/* RFC 7505: a null MX says the domain takes no mail. */
			snprintf(text, sizeof(text), "Domain %s does not accept mail (null MX)", g->host);
			router_group_finish(g, R_FAILED, "5.1.10", text);
			return;
		}
		if (res->status == DNS_OK)
			router_mx_sort(g, res);
		else if (res->status == DNS_NODATA || (res->status == DNS_NXDOMAIN && g->mode == LB_RELAY_HOST))
			util_strlcpy(g->mx[g->nmx++], g->host, sizeof(g->mx[0]));	/* no MX: the name itself */
		else if (res->status == DNS_NXDOMAIN) {
			g->dns_nxdomain = 1;
			router_group_ready(g);
			return;
		} else {
			router_dns_failed(g, DNS_T_MX, g->host, res);
			router_group_ready(g);
			return;
		}
		g->found = xcalloc(g->nmx ? g->nmx : 1, sizeof(*g->found));
		g->dns_nxdomain = 1;	/* until an address lookup finds the name */
		/* Hold the count up while asking: a cached answer comes back inside router_ask(), and must not
		 * find the count at zero before the other questions are even asked. */
		g->dns_pending++;
		for (i = 0; i < g->nmx; i++) {
			router_ask(g, DNS_T_A, g->mx[i], (unsigned)(i << 1));
			router_ask(g, DNS_T_AAAA, g->mx[i], (unsigned)(i << 1) | 1);
		}
		if (--g->dns_pending == 0)
			router_group_ready(g);
		return;
	}
	i = tag >> 1;
	if (i < g->nmx) {
		if (res->status == DNS_OK) {
			size_t	 k;

			g->dns_nxdomain = 0;
			for (k = 0; k < res->n && g->nfound[i] < 4; k++) {
				struct mta_addr	*a = &g->found[i][g->nfound[i]++];

				util_strlcpy(a->ip, res->rec[k], sizeof(a->ip));
				util_strlcpy(a->host, g->mx[i], sizeof(a->host));
				a->port = g->port;
			}
		} else if (res->status == DNS_NODATA)
			g->dns_nxdomain = 0;
		else if (res->status == DNS_TIMEOUT || res->status == DNS_SERVFAIL) {
			g->mxfailed[i] = 1;
			router_dns_failed(g, (tag & 1) ? DNS_T_AAAA : DNS_T_A, g->mx[i], res);
		}
	}
	if (g->dns_pending == 0)
		router_group_ready(g);
}

/* router_group_start - find the next hop's addresses (or use the literal one), then deliver. */
void
router_group_start(struct router_group *g)
{
	if (g->lmtp) {		/* "unix:/path" or "ip:port" / "[ip6]:port", checked by the loader */
		const char	*a = router_cfg->lmtp;
		struct mta_addr	*f;
		const char	*colon = strrchr(a, ':');

		g->found = xcalloc(1, sizeof(*g->found));
		f = &g->found[0][0];

		util_strlcpy(g->mx[0], "lmtp", sizeof(g->mx[0]));
		g->nmx = 1;
		util_strlcpy(f->host, "lmtp", sizeof(f->host));
		if (strncmp(a, "unix:", 5) == 0)
			util_strlcpy(f->path, a + 5, sizeof(f->path));
		else if (colon != NULL) {
			size_t	 hl = (size_t)(colon - a);

			if (a[0] == '[' && hl >= 2) {
				a++;
				hl -= 2;
			}
			snprintf(f->ip, sizeof(f->ip), "%.*s", (int)hl, a);
			f->port = atoi(colon + 1);
		}
		g->nfound[0] = 1;
		router_group_ready(g);
		return;
	}
	if (g->mode == LB_RELAY_IP) {
		g->found = xcalloc(1, sizeof(*g->found));
		util_strlcpy(g->mx[0], g->host, sizeof(g->mx[0]));
		g->nmx = 1;
		util_strlcpy(g->found[0][0].ip, g->host, sizeof(g->found[0][0].ip));
		util_strlcpy(g->found[0][0].host, g->host, sizeof(g->found[0][0].host));
		g->found[0][0].port = g->port;
		g->nfound[0] = 1;
		router_group_ready(g);
		return;
	}
	router_ask(g, DNS_T_MX, g->host, ROUTER_Q_MX);
}

