/*
 * metrics.c - the server's counters (see metrics.h) and their Prometheus text exposition (docs/admin.md,
 * "Metrics"). One MAP_SHARED region holds a slot per process: the router's, then one per worker. A slot has one
 * writer, the process it belongs to (and within it, the batch histogram is written by the spool's I/O thread
 * only, every other field by the event loop only), so a count is a relaxed load and store, never a lock; the
 * master reads every slot with relaxed loads when it renders. A respawned child keeps its slot, so counters
 * only grow; its gauges are cleared when it dies. The only lock guards the table of rule and listener names,
 * taken when a name is first seen.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "dns.h"
#include "lb.h"
#include "metrics.h"
#include "smtp_session.h"
#include "util.h"

#define METRICS_WORKERS_MAX	256
#define METRICS_NAMES		32	/* rule names and listener names each; more count as "other" */
#define METRICS_NAME_MAX	48
#define METRICS_CODES		400	/* reply codes 200..599 */
#define METRICS_DNS_STATUSES	5
#define METRICS_SPINS_MAX	100000L		/* tries for the name lock before asking whether its holder lives */

static const double	 metrics_commit_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 };
static const double	 metrics_batch_le[] = { 1, 2, 4, 8, 16, 32, 64, 128 };
#define N_COMMIT_LE	(sizeof(metrics_commit_le) / sizeof(metrics_commit_le[0]))
#define N_BATCH_LE	(sizeof(metrics_batch_le) / sizeof(metrics_batch_le[0]))

struct metrics_hist_commit {
	uint64_t	 bucket[N_COMMIT_LE + 1];	/* the last one is +Inf */
	uint64_t	 count;
	double		 sum;
};

struct metrics_hist_batch {
	uint64_t	 bucket[N_BATCH_LE + 1];
	uint64_t	 count;
	double		 sum;
};

struct metrics_slot {
	uint64_t	 connections[METRICS_NAMES + 1];
	int64_t		 sessions[SMTP_S_COUNT];
	uint64_t	 accepted;
	uint64_t	 replies[MS_COUNT][METRICS_CODES];
	uint64_t	 verdicts[LB_S_COUNT][METRICS_NAMES + 1][MV_COUNT];
	uint64_t	 deliveries[MT_COUNT][MD_COUNT];
	int64_t		 queue[MQ_COUNT];
	struct metrics_hist_commit commit;
	struct metrics_hist_batch batch;
	uint64_t	 dns[DNS_T_COUNT][METRICS_DNS_STATUSES];
	uint64_t	 tls[2];
	uint64_t	 reloads[2];
};

struct metrics_names {
	int		 n;
	char		 name[METRICS_NAMES][METRICS_NAME_MAX];
};

struct metrics_region {
	int			 lock;		/* guards the name tables: 0, or the pid holding it */
	struct metrics_names	 rules, listeners;
	int			 nslots;
	struct metrics_slot	 slot[];	/* [0] the router, [1 + n] worker n */
};

static struct metrics_region	*metrics_r;
static evutil_socket_t		 metrics_fd = -1;	/* the master's listening socket */
static struct metrics_slot	*metrics_self;

static const char *const metrics_stage_names[MS_COUNT] = { "connect", "helo", "auth", "mail", "rcpt", "data",
	"message", "starttls", "other" };
static const char *const metrics_verdict_names[MV_COUNT] = { "accept", "reject", "tempfail", "disconnect",
	"error" };
static const char *const metrics_transport_names[MT_COUNT] = { "smtp", "local", "lmtp" };
static const char *const metrics_delivery_names[MD_COUNT] = { "sent", "deferred", "bounced" };
static const char *const metrics_queue_names[MQ_COUNT] = { "active", "deferred", "held" };

/* The single writer's increment: no lock prefix, and the reader never sees a torn value. */
#define BUMP(field, by)	__atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (by), \
	__ATOMIC_RELAXED)
#define READ(field)	__atomic_load_n(&(field), __ATOMIC_RELAXED)

int
metrics_init(int nworkers)
{
	size_t	 size;

	if (nworkers < 1 || nworkers > METRICS_WORKERS_MAX)
		return -1;
	size = sizeof(*metrics_r) + sizeof(struct metrics_slot) * (size_t)(nworkers + 1);
	metrics_r = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (metrics_r == MAP_FAILED) {
		metrics_r = NULL;
		return -1;
	}
	metrics_r->nslots = nworkers + 1;
	return 0;
}

void
metrics_forget(void)
{
	if (metrics_fd != -1)
		close(metrics_fd);	/* a child: the master alone answers on the metrics port */
	metrics_fd = -1;
}

void
metrics_select(int worker)
{
	if (metrics_r != NULL && worker + 1 < metrics_r->nslots)
		metrics_self = &metrics_r->slot[worker < 0 ? 0 : worker + 1];
}

void
metrics_reset_gauges(int worker)
{
	struct metrics_slot	*sl;
	int			 i;

	if (metrics_r == NULL || worker + 1 >= metrics_r->nslots)
		return;
	sl = &metrics_r->slot[worker < 0 ? 0 : worker + 1];
	for (i = 0; i < SMTP_S_COUNT; i++)
		__atomic_store_n(&sl->sessions[i], 0, __ATOMIC_RELAXED);
	for (i = 0; i < MQ_COUNT; i++)
		__atomic_store_n(&sl->queue[i], 0, __ATOMIC_RELAXED);
}

/* metrics_name_index - the index of name in t, added when new; METRICS_NAMES ("other") when t is full. */
static int
metrics_name_index(struct metrics_names *t, const char *name)
{
	int	 i, n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
	long	 spins;

	for (i = 0; i < n; i++)
		if (strncmp(t->name[i], name, METRICS_NAME_MAX - 1) == 0)
			return i;
	/* Held for a few compares, only when a name is new, by the pid in it. A holder killed inside would hold it
	 * for ever, so a waiter that has waited long checks that the holder lives, and takes the lock from a dead
	 * one. */
	for (spins = 0;; spins++) {
		int	 free_ = 0, holder;

		if (__atomic_compare_exchange_n(&metrics_r->lock, &free_, (int)getpid(), 0, __ATOMIC_ACQUIRE,
		    __ATOMIC_RELAXED))
			break;
		holder = free_;
		if (spins >= METRICS_SPINS_MAX && kill((pid_t)holder, 0) == -1 && errno == ESRCH &&
		    __atomic_compare_exchange_n(&metrics_r->lock, &holder, (int)getpid(), 0, __ATOMIC_ACQUIRE,
		    __ATOMIC_RELAXED))
			break;
	}
	n = t->n;
	for (i = 0; i < n; i++)
		if (strncmp(t->name[i], name, METRICS_NAME_MAX - 1) == 0)
			break;
	if (i == n && n < METRICS_NAMES) {
		util_strlcpy(t->name[n], name, METRICS_NAME_MAX);
		__atomic_store_n(&t->n, n + 1, __ATOMIC_RELEASE);
	} else if (i == n)
		i = METRICS_NAMES;
	__atomic_store_n(&metrics_r->lock, 0, __ATOMIC_RELEASE);
	return i;
}

void
metrics_connection(const char *listener)
{
	if (metrics_self != NULL)
		BUMP(metrics_self->connections[metrics_name_index(&metrics_r->listeners, listener)], 1);
}

void
metrics_session_state(int from, int to)
{
	if (metrics_self == NULL)
		return;
	if (from >= 0 && from < SMTP_S_COUNT)
		BUMP(metrics_self->sessions[from], -1);
	if (to >= 0 && to < SMTP_S_COUNT)
		BUMP(metrics_self->sessions[to], 1);
}

void
metrics_reply(enum metrics_stage st, const char *reply)
{
	int	 code;

	if (metrics_self == NULL || st >= MS_COUNT || reply[0] < '2' || reply[0] > '5' || reply[1] < '0' ||
	    reply[1] > '9' || reply[2] < '0' || reply[2] > '9')
		return;
	code = (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
	BUMP(metrics_self->replies[st][code - 200], 1);
}

void
metrics_accepted(void)
{
	if (metrics_self != NULL)
		BUMP(metrics_self->accepted, 1);
}

void
metrics_verdict(int lb_stage, const char *rule, enum metrics_verdict v)
{
	if (metrics_self == NULL || lb_stage < 0 || lb_stage >= LB_S_COUNT || v >= MV_COUNT)
		return;
	BUMP(metrics_self->verdicts[lb_stage][metrics_name_index(&metrics_r->rules, rule[0] ? rule : "?")][v], 1);
}

void
metrics_delivery(enum metrics_transport t, enum metrics_delivery d)
{
	if (metrics_self != NULL && t < MT_COUNT && d < MD_COUNT)
		BUMP(metrics_self->deliveries[t][d], 1);
}

void
metrics_queue_set(enum metrics_queue q, long n)
{
	if (metrics_self != NULL && q < MQ_COUNT)
		__atomic_store_n(&metrics_self->queue[q], (int64_t)n, __ATOMIC_RELAXED);
}

/* metrics_add_double - the single writer's add to a double, as BUMP is for integers. */
static void
metrics_add_double(double *p, double by)
{
	double	 v;

	__atomic_load(p, &v, __ATOMIC_RELAXED);
	v += by;
	__atomic_store(p, &v, __ATOMIC_RELAXED);
}

static double
metrics_read_double(double *p)
{
	double	 v;

	__atomic_load(p, &v, __ATOMIC_RELAXED);
	return v;
}

void
metrics_commit_seconds(double seconds)
{
	struct metrics_hist_commit	*h;
	size_t				 i;

	if (metrics_self == NULL)
		return;
	h = &metrics_self->commit;
	for (i = 0; i < N_COMMIT_LE && seconds > metrics_commit_le[i]; i++)
		;
	BUMP(h->bucket[i], 1);
	BUMP(h->count, 1);
	metrics_add_double(&h->sum, seconds);
}

void
metrics_commit_batch(size_t n)
{
	struct metrics_hist_batch	*h;
	size_t				 i;

	if (metrics_self == NULL)
		return;
	h = &metrics_self->batch;
	for (i = 0; i < N_BATCH_LE && (double)n > metrics_batch_le[i]; i++)
		;
	BUMP(h->bucket[i], 1);
	BUMP(h->count, 1);
	metrics_add_double(&h->sum, (double)n);
}

void
metrics_dns(int type, int status)
{
	if (metrics_self != NULL && type >= 0 && type < DNS_T_COUNT && status >= 0 && status < METRICS_DNS_STATUSES)
		BUMP(metrics_self->dns[type][status], 1);
}

void
metrics_tls_handshake(int ok)
{
	if (metrics_self != NULL)
		BUMP(metrics_self->tls[ok ? 0 : 1], 1);
}

void
metrics_reload(int ok)
{
	if (metrics_self != NULL)
		BUMP(metrics_self->reloads[ok ? 0 : 1], 1);
}

/* Rendering ------------------------------------------------------------------------------------------------ */

/* metrics_label - name as a label value: backslash, double quote and newline escaped (the text format). */
static void
metrics_label(struct evbuffer *b, const char *name)
{
	for (; *name != '\0'; name++) {
		if (*name == '\\' || *name == '"')
			evbuffer_add_printf(b, "\\%c", *name);
		else if (*name == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, name, 1);
	}
}

static void
metrics_head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The sum over every slot of the integer at byte offset off of struct metrics_slot. */
static uint64_t
metrics_sum(size_t off)
{
	uint64_t	 t = 0;
	int		 i;

	for (i = 0; i < metrics_r->nslots; i++)
		t += __atomic_load_n((uint64_t *)(void *)((char *)&metrics_r->slot[i] + off), __ATOMIC_RELAXED);
	return t;
}

static double
metrics_sum_double(size_t off)
{
	double	 t = 0;
	int	 i;

	for (i = 0; i < metrics_r->nslots; i++)
		t += metrics_read_double((double *)(void *)((char *)&metrics_r->slot[i] + off));
	return t;
}

#define OFF(field)	offsetof(struct metrics_slot, field)

static void
metrics_names_label(struct evbuffer *b, const struct metrics_names *t, int i)
{
	metrics_label(b, i < METRICS_NAMES ? t->name[i] : "other");
}

static void
metrics_render_hist(struct evbuffer *b, const char *name, const char *help, size_t off_bucket, size_t off_count,
    size_t off_sum, const double *le, size_t nle)
{
	uint64_t	 cum = 0;
	size_t		 i;

	metrics_head(b, name, "histogram", help);
	for (i = 0; i <= nle; i++) {
		cum += metrics_sum(off_bucket + i * sizeof(uint64_t));
		if (i < nle)
			evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, le[i], (unsigned long long)cum);
		else
			evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, metrics_sum_double(off_sum), name,
	    (unsigned long long)metrics_sum(off_count));
}

char *
metrics_render(void)
{
	struct evbuffer	*b = evbuffer_new();
	char		*out;
	size_t		 len;
	int		 i, j, k, n;

	if (metrics_r == NULL) {
		evbuffer_free(b);
		return xstrdup("");
	}
	metrics_head(b, "luamta_connections_total", "counter", "SMTP connections accepted, by listener.");
	n = __atomic_load_n(&metrics_r->listeners.n, __ATOMIC_ACQUIRE);
	for (i = 0; i <= METRICS_NAMES; i++) {
		uint64_t	 v = metrics_sum(OFF(connections) + (size_t)i * sizeof(uint64_t));

		if (i >= n && (i < METRICS_NAMES || v == 0))
			continue;
		evbuffer_add(b, "luamta_connections_total{listener=\"", 35);
		metrics_names_label(b, &metrics_r->listeners, i);
		evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)v);
	}
	metrics_head(b, "luamta_sessions", "gauge", "SMTP sessions open now, by state.");
	for (i = 0; i < SMTP_S_COUNT; i++) {
		int64_t	 v = (int64_t)metrics_sum(OFF(sessions) + (size_t)i * sizeof(int64_t));

		evbuffer_add_printf(b, "luamta_sessions{state=\"%s\"} %lld\n", smtp_state_name((enum smtp_state)i),
		    (long long)(v < 0 ? 0 : v));
	}
	metrics_head(b, "luamta_messages_accepted_total", "counter", "Messages queued after the final dot.");
	evbuffer_add_printf(b, "luamta_messages_accepted_total %llu\n", (unsigned long long)metrics_sum(OFF(accepted)));
	metrics_head(b, "luamta_replies_total", "counter", "SMTP replies sent, by the stage they answer and code.");
	for (i = 0; i < MS_COUNT; i++)
		for (j = 0; j < METRICS_CODES; j++) {
			uint64_t	 v = metrics_sum(OFF(replies) + ((size_t)i * METRICS_CODES + (size_t)j) *
			    sizeof(uint64_t));

			if (v > 0)
				evbuffer_add_printf(b, "luamta_replies_total{stage=\"%s\",code=\"%d\"} %llu\n",
				    metrics_stage_names[i], j + 200, (unsigned long long)v);
		}
	metrics_head(b, "luamta_rule_verdicts_total", "counter", "Rule verdicts, by stage, rule and verdict.");
	n = __atomic_load_n(&metrics_r->rules.n, __ATOMIC_ACQUIRE);
	for (i = 0; i < LB_S_COUNT; i++)
		for (j = 0; j <= METRICS_NAMES; j++)
			for (k = 0; k < MV_COUNT; k++) {
				uint64_t	 v;

				if (j >= n && j < METRICS_NAMES)
					continue;
				v = metrics_sum(OFF(verdicts) + (((size_t)i * (METRICS_NAMES + 1) + (size_t)j) * MV_COUNT +
				    (size_t)k) * sizeof(uint64_t));
				if (v == 0)
					continue;
				evbuffer_add_printf(b, "luamta_rule_verdicts_total{stage=\"%s\",rule=\"",
				    lb_stage_name((enum lb_stage)i));
				metrics_names_label(b, &metrics_r->rules, j);
				evbuffer_add_printf(b, "\",verdict=\"%s\"} %llu\n", metrics_verdict_names[k],
				    (unsigned long long)v);
			}
	metrics_head(b, "luamta_rule_errors_total", "counter", "Rules that raised an error or ran out of budget.");
	for (j = 0; j <= METRICS_NAMES; j++) {
		uint64_t	 v = 0;

		if (j >= n && j < METRICS_NAMES)
			continue;
		for (i = 0; i < LB_S_COUNT; i++)
			v += metrics_sum(OFF(verdicts) + (((size_t)i * (METRICS_NAMES + 1) + (size_t)j) * MV_COUNT +
			    MV_ERROR) * sizeof(uint64_t));
		if (j == METRICS_NAMES && v == 0)
			continue;
		evbuffer_add(b, "luamta_rule_errors_total{rule=\"", 31);
		metrics_names_label(b, &metrics_r->rules, j);
		evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)v);
	}
	metrics_head(b, "luamta_deliveries_total", "counter", "Delivery outcomes per recipient, by transport and status.");
	for (i = 0; i < MT_COUNT; i++)
		for (j = 0; j < MD_COUNT; j++)
			evbuffer_add_printf(b, "luamta_deliveries_total{transport=\"%s\",status=\"%s\"} %llu\n",
			    metrics_transport_names[i], metrics_delivery_names[j], (unsigned long long)metrics_sum(
			    OFF(deliveries) + ((size_t)i * MD_COUNT + (size_t)j) * sizeof(uint64_t)));
	metrics_head(b, "luamta_queue_messages", "gauge", "Messages in the queue, by state.");
	for (i = 0; i < MQ_COUNT; i++)
		evbuffer_add_printf(b, "luamta_queue_messages{state=\"%s\"} %lld\n", metrics_queue_names[i],
		    (long long)metrics_sum(OFF(queue) + (size_t)i * sizeof(int64_t)));
	metrics_render_hist(b, "luamta_commit_seconds", "Time from a message's final dot to its durable commit.",
	    OFF(commit.bucket), OFF(commit.count), OFF(commit.sum), metrics_commit_le, N_COMMIT_LE);
	metrics_render_hist(b, "luamta_commit_batch_size", "Messages made durable by one group commit.",
	    OFF(batch.bucket), OFF(batch.count), OFF(batch.sum), metrics_batch_le, N_BATCH_LE);
	metrics_head(b, "luamta_dns_queries_total", "counter", "DNS answers, by query type and result.");
	for (i = 0; i < DNS_T_COUNT; i++)
		for (j = 0; j < METRICS_DNS_STATUSES; j++) {
			uint64_t	 v = metrics_sum(OFF(dns) + ((size_t)i * METRICS_DNS_STATUSES + (size_t)j) *
			    sizeof(uint64_t));

			if (v > 0)
				evbuffer_add_printf(b, "luamta_dns_queries_total{type=\"%s\",result=\"%s\"} %llu\n",
				    dns_type_name((enum dns_type)i), dns_status_name((enum dns_status)j),
				    (unsigned long long)v);
		}
	metrics_head(b, "luamta_tls_handshakes_total", "counter", "TLS handshakes, by result.");
	evbuffer_add_printf(b, "luamta_tls_handshakes_total{result=\"ok\"} %llu\n"
	    "luamta_tls_handshakes_total{result=\"failed\"} %llu\n", (unsigned long long)metrics_sum(OFF(tls)),
	    (unsigned long long)metrics_sum(OFF(tls) + sizeof(uint64_t)));
	metrics_head(b, "luamta_reloads_total", "counter", "Policy reloads in a process, by result.");
	evbuffer_add_printf(b, "luamta_reloads_total{result=\"ok\"} %llu\n"
	    "luamta_reloads_total{result=\"failed\"} %llu\n", (unsigned long long)metrics_sum(OFF(reloads)),
	    (unsigned long long)metrics_sum(OFF(reloads) + sizeof(uint64_t)));
	len = evbuffer_get_length(b);
	out = xmalloc(len + 1);
	evbuffer_remove(b, out, len);
	out[len] = '\0';
	evbuffer_free(b);
	return out;
}

/* HTTP ----------------------------------------------------------------------------------------------------- */

static void
metrics_free_text(const void *data, size_t len, void *extra)
{
	free((void *)(uintptr_t)data);
}

static void
metrics_http_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer	*b;
	const char	*path = evhttp_request_get_uri(req);
	char		*text;

	if (path == NULL || (strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0)) {
		evhttp_send_error(req, 404, "only /metrics is served");
		return;
	}
	text = metrics_render();
	b = evbuffer_new();
	evbuffer_add_reference(b, text, strlen(text), metrics_free_text, NULL);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

int
metrics_listen(struct event_base *base, const char *hostport, char *err, size_t errsize)
{
	struct evhttp	*http;
	struct evhttp_bound_socket *bound;
	char		 host[256];
	const char	*colon = strrchr(hostport, ':');
	size_t		 hl;
	long		 port;

	if (colon == NULL || (port = strtol(colon + 1, NULL, 10)) <= 0 || port > 65535) {
		snprintf(err, errsize, "metrics.listen: %s: expected \"host:port\"", hostport);
		return -1;
	}
	hl = (size_t)(colon - hostport);
	if (hl >= 2 && hostport[0] == '[' && hostport[hl - 1] == ']') {
		hostport++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		snprintf(err, errsize, "metrics.listen: %s: host too long", hostport);
		return -1;
	}
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	if ((http = evhttp_new(base)) == NULL) {
		snprintf(err, errsize, "metrics: cannot start the HTTP server");
		return -1;
	}
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(http, 8192);
	evhttp_set_max_body_size(http, 1024);
	evhttp_set_timeout(http, 10);
	evhttp_set_gencb(http, metrics_http_cb, NULL);
	if ((bound = evhttp_bind_socket_with_handle(http, host, (unsigned short)port)) == NULL) {
		snprintf(err, errsize, "metrics.listen: cannot listen on %s", hostport);
		evhttp_free(http);
		return -1;
	}
	metrics_fd = evhttp_bound_socket_get_fd(bound);
	return 0;
}
