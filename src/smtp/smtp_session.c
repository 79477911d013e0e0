/*
 * smtp_session.c - the inbound SMTP state machine (RFC 5321, with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
 * ENHANCEDSTATUSCODES and CHUNKING). It reads commands from a bufferevent, checks where each verb is valid with
 * one table, asks the rules at every stage (lb_run_start), receives the message into memory and hands it to the
 * spool; the 250 for a message is sent only from the spool's callback, after the file and its directory are on
 * disk. It never blocks: a rule that waits or a commit in flight sets s->waiting and pauses reading, and the
 * pipelined commands behind it stay in the input buffer until the answer comes.
 *	smtp_session_start()	serve a new connection
 *	smtp_session_find()	id -> session, for asynchronous answers
 *	smtp_session_shutdown()	graceful stop
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <lua.h>
#include <lauxlib.h>

#include "cfg.h"
#include "connlimit.h"
#include "dkim.h"
#include "lb.h"
#include "iothread.h"
#include "lb_types.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "policy.h"
#include "smtp_internal.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

#define SMTP_INPUT_HIGH	(256 * 1024)	/* stop reading while this much input waits (a client racing ahead) */
/* Stop reading while this much output waits (a client that never reads its replies); resume once it is out. */
#define SMTP_OUTPUT_HIGH	(64 * 1024)
#define SMTP_SHUTDOWN_REPLY	"421 4.3.2 Service shutting down, closing transmission channel"
/* DATA and BDAT get timeouts.data plus one second per this many octets received, as Postfix's
 * smtpd_min_data_rate (default 500) extends its per-request deadline: a slow link gets time in proportion. */
#define SMTP_MIN_DATA_RATE	500

struct smtp_cmd {
	enum proto_verb	 verb;
	unsigned	 states;	/* bit per enum smtp_state where the verb is valid */
	void		(*fn)(struct smtp_session *, const char *arg);
};

static struct idmap	*smtp_sessions;
static struct smtp_session *smtp_all;		/* list of every session, for shutdown */
static uint64_t		 smtp_next_id;
static int		 smtp_shutting_down;

static const char *const smtp_state_names[SMTP_S_COUNT] = {
	"CONNECT", "GREETED", "READY", "RCPT", "BODY", "BDAT", "REFUSED", "AUTH", "CLOSING"
};

static void	smtp_cmd_helo(struct smtp_session *, const char *);
static void	smtp_cmd_ehlo(struct smtp_session *, const char *);
static void	smtp_cmd_mail(struct smtp_session *, const char *);
static void	smtp_cmd_rcpt(struct smtp_session *, const char *);
static void	smtp_cmd_data(struct smtp_session *, const char *);
static void	smtp_cmd_bdat(struct smtp_session *, const char *);
static void	smtp_cmd_rset(struct smtp_session *, const char *);
static void	smtp_cmd_noop(struct smtp_session *, const char *);
static void	smtp_cmd_quit(struct smtp_session *, const char *);
static void	smtp_cmd_vrfy(struct smtp_session *, const char *);
static void	smtp_cmd_expn(struct smtp_session *, const char *);
static void	smtp_cmd_help(struct smtp_session *, const char *);
static void	smtp_cmd_starttls(struct smtp_session *, const char *);

#define IN(st)		(1u << (st))
#define GREETED_ON	(IN(SMTP_S_GREETED) | IN(SMTP_S_READY) | IN(SMTP_S_RCPT))
static const struct smtp_cmd smtp_cmds[] = {
	/* verb			valid in					handler */
	{ PROTO_V_HELO,		GREETED_ON,					smtp_cmd_helo },
	{ PROTO_V_EHLO,		GREETED_ON,					smtp_cmd_ehlo },
	{ PROTO_V_MAIL,		IN(SMTP_S_READY),				smtp_cmd_mail },
	{ PROTO_V_RCPT,		IN(SMTP_S_RCPT),				smtp_cmd_rcpt },
	{ PROTO_V_DATA,		IN(SMTP_S_RCPT),				smtp_cmd_data },
	/* BDAT is valid everywhere: its chunk must be read (and thrown away) even when the command fails. */
	{ PROTO_V_BDAT,		GREETED_ON | IN(SMTP_S_REFUSED),		smtp_cmd_bdat },
	{ PROTO_V_RSET,		GREETED_ON,					smtp_cmd_rset },
	{ PROTO_V_NOOP,		GREETED_ON,					smtp_cmd_noop },
	{ PROTO_V_QUIT,		GREETED_ON | IN(SMTP_S_REFUSED),		smtp_cmd_quit },
	{ PROTO_V_VRFY,		GREETED_ON,					smtp_cmd_vrfy },
	{ PROTO_V_EXPN,		GREETED_ON,					smtp_cmd_expn },
	{ PROTO_V_HELP,		GREETED_ON,					smtp_cmd_help },
	{ PROTO_V_STARTTLS,	GREETED_ON,					smtp_cmd_starttls },
	{ PROTO_V_AUTH,		IN(SMTP_S_READY),				smtp_cmd_auth },
};

static void	smtp_free(struct smtp_session *);
static void	smtp_policy_done(uint64_t, const struct lb_verdict *);
static void	smtp_greet(struct smtp_session *);
static void	smtp_read_cb(struct bufferevent *, void *);
static void	smtp_write_cb(struct bufferevent *, void *);
static void	smtp_event_cb(struct bufferevent *, short, void *);
static int	smtp_tls_start(struct smtp_session *, struct tls_conf *);
static size_t	smtp_output_pending(struct smtp_session *);

int
smtp_session_set_user(uint64_t id, const char *user)
{
	struct smtp_session	*s = smtp_session_find(id);

	if (s == NULL)
		return -1;
	util_strlcpy(s->user, user, sizeof(s->user));
	return 0;
}

int
smtp_session_set_local_user(uint64_t id, const char *user)
{
	struct smtp_session	*s = smtp_session_find(id);

	if (s == NULL)
		return -1;
	util_strlcpy(s->local_user, user, sizeof(s->local_user));
	return 0;
}

int
smtp_session_set_tls(uint64_t id, const char *desc)
{
	struct smtp_session	*s = smtp_session_find(id);

	if (s == NULL)
		return -1;
	s->tls = 1;
	util_strlcpy(s->tls_desc, desc, sizeof(s->tls_desc));
	return 0;
}

uint64_t
smtp_session_last_id(void)
{
	return smtp_all ? smtp_all->id : 0;
}

const char *
smtp_state_name(enum smtp_state st)
{
	return st < SMTP_S_COUNT ? smtp_state_names[st] : "?";
}

struct smtp_session *
smtp_session_find(uint64_t id)
{
	return smtp_sessions ? idmap_get(smtp_sessions, id) : NULL;
}

size_t
smtp_session_count(void)
{
	return smtp_sessions ? idmap_count(smtp_sessions) : 0;
}

/* smtp_logid - the queue ID inside a transaction, the session id outside one. */
static const char *
smtp_logid(const struct smtp_session *s)
{
	return s->tx ? s->tx->queue_id : s->idstr;
}

/* smtp_enter_state - the only writer of s->state. */
void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state == st)
		return;
	log_debug("%s: state=%s->%s", s->idstr, smtp_state_name(s->state), smtp_state_name(st));
	metrics_session_state(s->state, st);
	s->state = st;
}

void
smtp_timer_arm(struct smtp_session *s, double seconds)
{
	struct timeval	 tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(s->timer, &tv);
}

/* smtp_send - queue one reply line (no CRLF in line). The bufferevent writes it when the loop turns, so the
 * replies to a pipelined batch leave in one packet. */
void
smtp_send(struct smtp_session *s, const char *line)
{
	struct evbuffer	*out = bufferevent_get_output(s->bev);
	size_t		 len = strlen(line);

	/* The final reply to a command decides its count on the disconnect line: 2xx counts as done, 3xx waits
	 * for the next reply (DATA's 354, AUTH's 334), 4xx and 5xx end it. */
	if (s->cmd_cur != 0 && line[0] != '\0' && line[1] != '\0' && line[2] != '\0' && line[3] != '-' &&
	    line[0] != '3') {
		if (line[0] == '2')
			s->cmd_ok[s->cmd_cur - 1]++;
		s->cmd_cur = 0;
	}
	if (len == 3 || (len > 3 && line[3] != '-')) {	/* the last line of a reply */
		metrics_reply(s->reply_stage, line);
		trace_session(s->id, TR_REPLY, "%s", line);
	}
	evbuffer_add(out, line, len);
	evbuffer_add(out, "\r\n", 2);
}

void
smtp_log_reject(struct smtp_session *s, const char *stage, const char *reply, const char *rcpt)
{
	const char	*from = s->tx != NULL ? s->tx->sender.address : NULL;

	if (rcpt == NULL && s->tx != NULL && s->tx->nrcpts == 1)
		rcpt = s->tx->rcpts[0].address;
	log_info("NOQUEUE: reject: %s from " SMTP_CLIENT_FMT ": %s;%s%s%s%s%s%s proto=%s%s%s%s", stage,
	    SMTP_CLIENT(s), reply, from ? " from=<" : "", from ? from : "", from ? ">" : "", rcpt ? " to=<" : "",
	    rcpt ? rcpt : "", rcpt ? ">" : "", s->esmtp ? "ESMTP" : "SMTP", s->helo[0] ? " helo=<" : "", s->helo,
	    s->helo[0] ? ">" : "");
}

/* smtp_log_commands - Postfix's counters: "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4" (done/seen). */
static void
smtp_log_commands(struct smtp_session *s, char *buf, size_t size)
{
	static const enum proto_verb order[] = { PROTO_V_HELO, PROTO_V_EHLO, PROTO_V_STARTTLS, PROTO_V_AUTH,
	    PROTO_V_MAIL, PROTO_V_RCPT, PROTO_V_DATA, PROTO_V_BDAT, PROTO_V_RSET, PROTO_V_NOOP, PROTO_V_VRFY,
	    PROTO_V_EXPN, PROTO_V_HELP, PROTO_V_QUIT, PROTO_V_UNKNOWN };
	unsigned	 all = 0, ok = 0;
	size_t		 i, n = 0;
	char		 name[16];
	int		 m;

	buf[0] = '\0';
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		enum proto_verb	 v = order[i];
		size_t		 j;

		if (s->cmd_all[v] == 0)
			continue;
		all += s->cmd_all[v];
		ok += s->cmd_ok[v];
		util_strlcpy(name, proto_verb_name(v), sizeof(name));
		for (j = 0; name[j] != '\0'; j++)
			name[j] = (char)tolower((unsigned char)name[j]);
		if (s->cmd_ok[v] == s->cmd_all[v])
			m = snprintf(buf + n, size - n, " %s=%u", name, s->cmd_all[v]);
		else
			m = snprintf(buf + n, size - n, " %s=%u/%u", name, s->cmd_ok[v], s->cmd_all[v]);
		if (m < 0 || (size_t)m >= size - n)
			break;
		n += (size_t)m;
	}
	if (ok == all)
		snprintf(buf + n, size - n, " commands=%u", all);
	else
		snprintf(buf + n, size - n, " commands=%u/%u", ok, all);
}

/*
 * smtp_reply - send a reply, counting errors (SPEC section 5, point 5): the 4xx/5xx reply that would take the
 * count past max_errors is replaced by 421 and the connection closes. Returns 0, or -1 when it closed.
 */
int
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	char	 line[POL_REPLY_MAX];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if ((line[0] == '4' || line[0] == '5') && strncmp(line, "421", 3) != 0) {
		if (++s->errors > s->cfg->max_errors) {
			log_info("too many errors after %s from " SMTP_CLIENT_FMT,
			    s->cmd_cur ? proto_verb_name((enum proto_verb)(s->cmd_cur - 1)) : "CONNECT", SMTP_CLIENT(s));
			smtp_send(s, "421 4.7.0 SMTP service not available, closing transmission channel");
			smtp_close(s);
			return -1;
		}
	}
	smtp_send(s, line);
	if (strncmp(line, "421", 3) == 0) {
		smtp_close(s);
		return -1;
	}
	return 0;
}

static void
smtp_header_free_list(struct smtp_header *h)
{
	struct smtp_header	*next;

	for (; h != NULL; h = next) {
		next = h->next;
		free(h->line);
		free(h);
	}
}

static void
smtp_tx_free(struct smtp_session *s)
{
	struct smtp_tx	*tx = s->tx;

	if (tx == NULL)
		return;
	free(tx->rcpts);
	if (tx->data != NULL)
		evbuffer_free(tx->data);
	smtp_header_free_list(tx->headers);
	smtp_header_free_list(tx->signatures);
	dkim_body_free(tx->dkim_bh);
	free(tx);
	s->tx = NULL;
}

static struct smtp_tx *
smtp_tx_new(struct smtp_session *s)
{
	struct smtp_tx	*tx = xcalloc(1, sizeof(*tx));

	queueid_new(tx->queue_id);
	tx->data = evbuffer_new();
	tx->headers_tail = &tx->headers;
	smtp_hops_init(&tx->hops);
	s->tx = tx;
	return tx;
}

/* One wait per session at a time; kept outside struct smtp_session to keep the struct about the session. */
static struct idmap	*smtp_waits;

static int
smtp_push_session(lua_State *L, void *arg)
{
	struct smtp_session	*s = arg;

	lb_session_push(L, s->id);
	return 1;
}

static int
smtp_push_helo(lua_State *L, void *arg)
{
	struct smtp_session	*s = arg;
	struct smtp_wait	*w = idmap_get(smtp_waits, s->id);

	lb_session_push(L, s->id);
	lua_pushstring(L, w->helo);
	return 2;
}

static int
smtp_push_addr(lua_State *L, void *arg)
{
	struct smtp_session	*s = arg;
	struct smtp_wait	*w = idmap_get(smtp_waits, s->id);

	lb_session_push(L, s->id);
	lb_addr_push(L, &w->addr);
	return 2;
}

static int
smtp_push_message(lua_State *L, void *arg)
{
	struct smtp_session	*s = arg;

	lb_session_push(L, s->id);
	lb_message_push(L, s->id);
	return 2;
}

static void	smtp_after(struct smtp_session *, struct smtp_wait *, const struct lb_verdict *);

/*
 * smtp_ask - run a stage for s. w (owned by the caller until here; taken) says what to do with the verdict.
 * The verdict is acted on at once when no rule waits; otherwise reading pauses until smtp_policy_done().
 */
void
smtp_ask(struct smtp_session *s, struct smtp_wait *w)
{
	static lb_push_fn *const pushers[] = {
		[SMTP_AFTER_CONNECT] = smtp_push_session, [SMTP_AFTER_HELO] = smtp_push_helo,
		[SMTP_AFTER_MAIL] = smtp_push_addr, [SMTP_AFTER_RCPT] = smtp_push_addr,
		[SMTP_AFTER_DATA] = smtp_push_session, [SMTP_AFTER_BDAT] = smtp_push_session,
		[SMTP_AFTER_MESSAGE] = smtp_push_message, [SMTP_AFTER_AUTH] = smtp_push_helo,
	};
	struct lb_verdict	 v;
	struct lb_run		*run;

	/* A local submission (sendmail, through pickup) meets the message stage only, as Postfix's pickup never
	 * meets smtpd's restrictions: the connect, HELO, MAIL and RCPT rules are for clients (docs/admin.md,
	 * "sendmail and mailq"). */
	if (s->lsn->local && w->stage != LB_S_MESSAGE) {
		memset(&v, 0, sizeof(v));
		v.kind = LB_V_NONE;
		smtp_after(s, w, &v);
		free(w);
		return;
	}
	idmap_put(smtp_waits, s->id, w);
	if (lb_run_start(s->gen, s->host->base, w->stage, pushers[w->after], s, s->id, smtp_policy_done, &v,
	    &run) == 1) {
		s->run = run;
		s->waiting = 1;
		/* Pause the client while we wait, except before the greeting: input then is an early talker. The
		 * command timeout is for the client (RFC 5321 4.5.3.2.7), so it stops while our rules wait. */
		if (s->state != SMTP_S_CONNECT)
			bufferevent_disable(s->bev, EV_READ);
		if (!s->delaying)
			evtimer_del(s->timer);
		return;
	}
	idmap_del(smtp_waits, s->id);
	smtp_after(s, w, &v);
	free(w);
}

static void
smtp_policy_done(uint64_t id, const struct lb_verdict *v)
{
	struct smtp_session	*s;
	struct smtp_wait	*w;

	if ((s = smtp_session_find(id)) == NULL)
		return;		/* client left while we waited */
	w = idmap_get(smtp_waits, id);
	idmap_del(smtp_waits, id);
	s->run = NULL;
	s->waiting = 0;
	if (w == NULL)
		fatal_bug("%s: policy answer without a wait", s->idstr);
	smtp_after(s, w, v);
	free(w);
	if (s->state != SMTP_S_CLOSING && !s->delaying && !evtimer_pending(s->timer, NULL))
		smtp_timer_arm(s, s->state == SMTP_S_BODY || s->state == SMTP_S_BDAT ? s->cfg->timeout_data :
		    s->cfg->timeout_command);
	if (s->state != SMTP_S_CLOSING && !s->waiting) {
		bufferevent_enable(s->bev, EV_READ);
		smtp_process(s);
	}
}

struct smtp_wait *
smtp_wait_new(enum smtp_after after, enum lb_stage st, const char *def)
{
	struct smtp_wait	*w = xcalloc(1, sizeof(*w));

	w->after = after;
	w->stage = st;
	util_strlcpy(w->def, def, sizeof(w->def));
	return w;
}

/* Connection setup ------------------------------------------------------------------------------------------ */

static void
smtp_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session	*s = arg;

	if (s->state == SMTP_S_CONNECT) {
		/* RFC 5321 4.3.1: the client waits for the greeting. One that talks first is a bot. */
		log_info("%s: PREGREET after CONNECT from " SMTP_CLIENT_FMT ": input before the greeting", s->idstr,
		    SMTP_CLIENT(s));
		if (s->run != NULL) {
			lb_run_cancel(s->run);
			s->run = NULL;
			free(idmap_get(smtp_waits, s->id));
			idmap_del(smtp_waits, s->id);
			s->waiting = 0;
		}
		smtp_send(s, "554 5.5.0 Error: SMTP protocol synchronization: input before the greeting");
		smtp_close(s);
		return;
	}
	/* No timer here: a read does not buy time. A command line has timeouts.command from its start
	 * (smtp_process), DATA and BDAT have a deadline of their own (smtp_data_deadline), as Postfix's
	 * smtpd_per_request_deadline, so that a client that dribbles an octet at a time cannot hold the session. */
	smtp_process(s);
}

/* smtp_data_start - DATA's 354 is out, or a BDAT chunk begins: its deadline starts now. */
static void
smtp_data_start(struct smtp_session *s)
{
	s->data_start = util_monotonic();
	s->data_octets = 0;
	smtp_timer_arm(s, s->cfg->timeout_data);
	/* With dkim.sign keys, the body of mail that dkim_sign signs (authenticated or local) is hashed as it comes,
	 * so that signing at the message stage needs no pass over it (docs/dkim.md). */
	if (s->tx != NULL && s->tx->dkim_bh == NULL && s->cfg->dkim_sign && (s->user[0] || s->local_user[0]))
		s->tx->dkim_bh = dkim_body_new();
}

/* smtp_data_deadline - n more octets of DATA or BDAT came: timeouts.data from the start, plus their share. */
static void
smtp_data_deadline(struct smtp_session *s, size_t n)
{
	double	left;

	s->data_octets += n;
	left = s->data_start + s->cfg->timeout_data + (double)s->data_octets / SMTP_MIN_DATA_RATE -
	    util_monotonic();
	smtp_timer_arm(s, left > 0 ? left : 0);
}

/* smtp_output_pending - octets not yet handed to the kernel; with TLS, the socket's buffer under the filter
 * counts too, since the filter's buffer empties as soon as its records are made. */
static size_t
smtp_output_pending(struct smtp_session *s)
{
	size_t			 n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent	*under = s->tlsc != NULL ? bufferevent_get_underlying(s->bev) : NULL;

	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void
smtp_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session	*s = arg;

	if (s->state != SMTP_S_CLOSING) {
		/* The replies are out (with TLS: in the socket's buffer, which has a high-water mark of its own). */
		if (s->out_full) {
			s->out_full = 0;
			if (!s->waiting) {
				bufferevent_enable(s->bev, EV_READ);
				smtp_process(s);
			}
		}
		return;
	}
	if (smtp_output_pending(s) == 0)
		smtp_free(s);
	else
		smtp_timer_arm(s, 0.02);	/* TLS records still in the socket's buffer: look again soon */
}

static void
smtp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session	*s = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		/* An alert and the end of the socket often come in one read: the end is reported before the
		 * handshake's failure is announced, so say here why TLS did not come up. */
		if (s->tlsc != NULL && !s->tls && s->state != SMTP_S_CLOSING)
			log_info("%s: SSL_accept error from " SMTP_CLIENT_FMT ": TLS handshake failed: %s", s->idstr,
			    SMTP_CLIENT(s), tls_handshake_error(s->tlsc) ? tls_handshake_error(s->tlsc) :
			    "lost connection");
		else if (s->state != SMTP_S_CLOSING)
			log_info("%s: lost connection from " SMTP_CLIENT_FMT " in state %s%s%s", s->idstr,
			    SMTP_CLIENT(s), smtp_state_name(s->state), (what & BEV_EVENT_ERROR) ? ": " : "",
			    (what & BEV_EVENT_ERROR) ? strerror(EVUTIL_SOCKET_ERROR()) : "");
		smtp_free(s);
	}
}

static void
smtp_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session	*s = arg;
	char			 line[POL_REPLY_MAX];

	if (s->delaying) {
		s->delaying = 0;
		smtp_greet(s);
		return;
	}
	if (s->state == SMTP_S_CLOSING) {
		/* Free once everything is out, or when the client has not read its last reply for 10 seconds. */
		if (smtp_output_pending(s) > 0 && util_monotonic() < s->close_deadline) {
			smtp_timer_arm(s, 0.02);
			return;
		}
		smtp_free(s);
		return;
	}
	if (s->state == SMTP_S_BODY || s->state == SMTP_S_BDAT)
		log_info("%s: timeout from " SMTP_CLIENT_FMT " in state %s after %llu octets", smtp_logid(s),
		    SMTP_CLIENT(s), smtp_state_name(s->state), s->data_octets);
	else
		log_info("%s: timeout from " SMTP_CLIENT_FMT " in state %s", smtp_logid(s), SMTP_CLIENT(s),
		    smtp_state_name(s->state));
	snprintf(line, sizeof(line), "421 4.4.2 %s Error: Timeout", s->cfg->hostname);
	smtp_send(s, line);
	smtp_close(s);
}

/* The host of this process's sessions, for the end of jobs that outlive their session. */
static struct smtp_host	*smtp_process_host;

void
smtp_host_gone(void)
{
	if (smtp_process_host != NULL && smtp_process_host->gone != NULL)
		smtp_process_host->gone();
}

void
smtp_session_start(struct smtp_host *host, int fd, struct sockaddr *sa, socklen_t salen, const struct cfg_listen *lsn)
{
	struct smtp_session	*s;
	struct event_base	*base = host->base;
	unsigned long long	 key;
	const struct config	*cfg = lb_gen_config(host->gen);

	if (smtp_sessions == NULL) {
		smtp_sessions = idmap_new();
		smtp_waits = idmap_new();
	}
	smtp_process_host = host;
	if (connlimit_acquire(sa, cfg->max_connections_per_ip, cfg->max_connections, &key) == -1) {
		static const char	 busy[] = "421 4.7.0 Too many connections\r\n";
		char			 ip[INET6_ADDRSTRLEN] = "?";

		/* Best effort: the socket is new, so its send buffer has room for one line. */
		(void)!write(fd, busy, sizeof(busy) - 1);
		evutil_closesocket(fd);
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
		log_info("NOQUEUE: reject: CONNECT from " SMTP_CLIENT_FMT ": 421 4.7.0 Too many connections; "
		    "proto=SMTP", ip);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->id = ((uint64_t)getpid() << 32) | (++smtp_next_id & 0xffffffffu);
	snprintf(s->idstr, sizeof(s->idstr), "%016" PRIX64, s->id);
	s->connlimit_key = key;
	s->lsn = lsn;
	s->host = host;
	s->gen = host->gen;
	lb_gen_hold(s->gen);
	s->cfg = lb_gen_config(s->gen);
	s->vars_ref = LUA_NOREF;
	s->tags_tail = &s->tags;
	s->state = SMTP_S_CONNECT;
	s->reply_stage = MS_CONNECT;
	metrics_connection(lsn->text);
	metrics_session_state(-1, SMTP_S_CONNECT);
	memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, s->ip, sizeof(s->ip));
		s->port = ntohs(((struct sockaddr_in *)sa)->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, s->ip, sizeof(s->ip));
		s->port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
	}
	idmap_put(smtp_sessions, s->id, s);
	s->next = smtp_all;
	if (smtp_all != NULL)
		smtp_all->prev = s;
	smtp_all = s;
	s->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, smtp_read_cb, smtp_write_cb, smtp_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_INPUT_HIGH);
	bufferevent_enable(s->bev, EV_READ);	/* to catch early talkers */
	s->timer = evtimer_new(base, smtp_timer_cb, s);
	log_info("connect from " SMTP_CLIENT_FMT " session=%s", SMTP_CLIENT(s), s->idstr);
	log_debug("%s: client port %d, listener %s", s->idstr, s->port, lsn->text);
	trace_session(s->id, TR_CONNECT, "ip=%s port=%d listener=%s", s->ip, s->port, lsn->text);
	if (lsn->tls == CFG_TLS_IMPLICIT) {	/* port 465 style: TLS before anything else (RFC 8314) */
		if (s->host->tls == NULL) {
			log_error("%s: listener %s wants TLS but no certificate is loaded", s->idstr, lsn->text);
			smtp_close(s);
			return;
		}
		if (smtp_tls_start(s, s->host->tls) == -1)
			return;
	}

	smtp_timer_arm(s, s->cfg->timeout_command);
	smtp_ask(s, smtp_wait_new(SMTP_AFTER_CONNECT, LB_S_CONNECT, ""));
}

static void
smtp_greet(struct smtp_session *s)
{
	char	 line[POL_REPLY_MAX];

	if (s->state != SMTP_S_CONNECT)
		return;
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		smtp_read_cb(s->bev, s);	/* input arrived before the greeting: an early talker */
		return;
	}
	smtp_enter_state(s, SMTP_S_GREETED);
	snprintf(line, sizeof(line), "220 %s ESMTP luamta", s->cfg->hostname);
	smtp_send(s, line);
	smtp_timer_arm(s, s->cfg->timeout_command);
	smtp_process(s);
}

/* Commands ------------------------------------------------------------------------------------------------ */

static void
smtp_cmd_helo_common(struct smtp_session *s, const char *arg, int esmtp)
{
	struct smtp_wait	*w;
	char			 name[SMTP_HELO_MAX + 1];
	size_t			 n;

	/* Trailing spaces are common and harmless (Postfix ignores them too). */
	n = util_strlcpy(name, arg, sizeof(name));
	if (n >= sizeof(name)) {
		smtp_reply(s, "501 5.5.2 Invalid %s argument: too long", esmtp ? "EHLO" : "HELO");
		return;
	}
	while (n > 0 && name[n - 1] == ' ')
		name[--n] = '\0';
	arg = name;
	if (*arg == '\0') {
		smtp_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (!proto_helo_ok(arg)) {
		smtp_reply(s, "501 5.5.2 Invalid %s argument: expected a domain name or address literal",
		    esmtp ? "EHLO" : "HELO");
		return;
	}
	if (arg[strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:[]")] != '\0') {
		/* The name goes into the Received header of messages that may not be SMTPUTF8 (RFC 6531 3.7.3
		 * needs them to be ASCII), and into the logs: 8-bit names are refused, A-labels (xn--) pass. */
		smtp_reply(s, "501 5.5.2 Invalid %s argument: not ASCII (use the A-label form, RFC 5890)",
		    esmtp ? "EHLO" : "HELO");
		return;
	}
	w = smtp_wait_new(SMTP_AFTER_HELO, LB_S_HELO, "");
	util_strlcpy(w->helo, arg, sizeof(w->helo));
	w->esmtp = esmtp;
	smtp_ask(s, w);
}

static void
smtp_cmd_helo(struct smtp_session *s, const char *arg)
{
	smtp_cmd_helo_common(s, arg, 0);
}

static void
smtp_cmd_ehlo(struct smtp_session *s, const char *arg)
{
	smtp_cmd_helo_common(s, arg, 1);
}

static void
smtp_helo_accepted(struct smtp_session *s, struct smtp_wait *w)
{
	struct evbuffer	*out = bufferevent_get_output(s->bev);

	if (s->cmd_cur != 0) {		/* the 250 below is written here, not by smtp_send(): count it */
		s->cmd_ok[s->cmd_cur - 1]++;
		s->cmd_cur = 0;
	}
	/* RFC 5321 4.1.4: EHLO in a transaction resets it. */
	smtp_tx_free(s);
	util_strlcpy(s->helo, w->helo, sizeof(s->helo));
	s->esmtp = w->esmtp;
	smtp_enter_state(s, SMTP_S_READY);
	metrics_reply(MS_HELO, "250");		/* written here, not through smtp_send */
	trace_session(s->id, TR_REPLY, "250 %s", s->cfg->hostname);
	if (!w->esmtp) {
		evbuffer_add_printf(out, "250 %s\r\n", s->cfg->hostname);
		return;
	}
	{
		const char	*ext[10];
		char		 size[40];
		size_t		 n = 0, i;

		snprintf(size, sizeof(size), "SIZE %llu", s->cfg->max_message_size);
		ext[n++] = "PIPELINING";
		ext[n++] = size;
		ext[n++] = "ENHANCEDSTATUSCODES";
		ext[n++] = "8BITMIME";
		ext[n++] = "SMTPUTF8";
		ext[n++] = "CHUNKING";
		if (smtp_starttls_offered(s))
			ext[n++] = "STARTTLS";
		if (s->tls)		/* no password in the clear: AUTH only under TLS (SPEC section 8) */
			ext[n++] = "AUTH PLAIN LOGIN";
		evbuffer_add_printf(out, "250-%s\r\n", s->cfg->hostname);
		for (i = 0; i < n; i++)
			evbuffer_add_printf(out, "250%c%s\r\n", i + 1 < n ? '-' : ' ', ext[i]);
	}
}

/* smtp_xtext_ok - 1 when v is "<>" or xtext (RFC 3461 4: printable ASCII but "+" and "=", or "+" and two upper
 * hex digits). */
static int
smtp_xtext_ok(const char *v)
{
	static const char	 hex[] = "0123456789ABCDEF";

	if (strcmp(v, "<>") == 0)
		return 1;
	for (; *v != '\0'; v++) {
		if (*v == '+') {
			if (v[1] == '\0' || v[2] == '\0' || strchr(hex, v[1]) == NULL || strchr(hex, v[2]) == NULL)
				return 0;
			v += 2;
		} else if (*v < '!' || *v > '~' || *v == '=')
			return 0;
	}
	return 1;
}

/* smtp_mail_params - check MAIL parameters into tx. Returns NULL or the failure reply. Duplicates were refused
 * by proto_parse_path(). */
static const char *
smtp_mail_params(struct smtp_session *s, const struct proto_path *p, struct smtp_tx *tx)
{
	size_t	 i;

	for (i = 0; i < p->nparams; i++) {
		const struct proto_param	*pp = &p->params[i];

		if (!s->esmtp)
			return "555 5.5.4 Error: MAIL parameters need EHLO";
		if (strcmp(pp->key, "SIZE") == 0) {
			unsigned long long	 n = 0;
			size_t			 k;

			/* RFC 1870: digits only ("+100", "-1" and " 1" are not sizes); a size too big to
			 * count is too big to take. */
			if (!pp->has_value || pp->value[strspn(pp->value, "0123456789")] != '\0')
				return "501 5.5.4 Bad message size syntax";
			for (k = 0; pp->value[k] != '\0' && n <= s->cfg->max_message_size; k++) {
				if (n > (ULLONG_MAX - 9) / 10) {
					n = ULLONG_MAX;
					break;
				}
				n = n * 10 + (unsigned)(pp->value[k] - '0');
			}
			if (n > s->cfg->max_message_size)
				return "552 5.3.4 Message size exceeds fixed limit";
		} else if (strcmp(pp->key, "BODY") == 0) {
			if (strcasecmp(pp->value, "8BITMIME") == 0)
				tx->body_8bit = 1;
			else if (strcasecmp(pp->value, "7BIT") != 0)
				return "501 5.5.4 Bad BODY parameter: expected 7BIT or 8BITMIME";
		} else if (strcmp(pp->key, "SMTPUTF8") == 0) {
			if (pp->has_value)
				return "501 5.5.4 SMTPUTF8 takes no value";
			tx->smtputf8 = 1;
		} else if (strcmp(pp->key, "AUTH") == 0) {
			/* Only where AUTH is offered (under TLS), as Postfix does with SASL off; there RFC 4954 5
			 * wants it taken and ignored from a client that has not authenticated. */
			if (!s->tls)
				return "555 5.5.4 Unsupported option: AUTH";
			if (!pp->has_value || !smtp_xtext_ok(pp->value))
				return "501 5.5.4 Bad AUTH parameter syntax";
		} else
			return "555 5.5.4 Unsupported parameter";
	}
	return NULL;
}

static void
smtp_cmd_mail(struct smtp_session *s, const char *arg)
{
	struct proto_path	 p;
	struct smtp_tx		*tx;
	struct smtp_wait	*w;
	const char		*why;

	if (s->lsn->submission && s->user[0] == '\0') {
		smtp_reply(s, "530 5.7.0 Authentication required");
		return;
	}
	if (proto_parse_path(PROTO_V_MAIL, arg, &p, &why) == -1) {
		smtp_reply(s, "%s", why);
		return;
	}
	tx = smtp_tx_new(s);
	if ((why = smtp_mail_params(s, &p, tx)) == NULL && p.addr.is_utf8 && !tx->smtputf8)
		why = "553 5.6.7 Must declare SMTPUTF8 to send Unicode addresses";
	if (why != NULL) {
		smtp_tx_free(s);
		smtp_reply(s, "%s", why);
		return;
	}
	tx->sender = p.addr;
	w = smtp_wait_new(SMTP_AFTER_MAIL, LB_S_MAIL, "250 2.1.0 Ok");
	w->addr = p.addr;
	smtp_ask(s, w);
}

static void
smtp_cmd_rcpt(struct smtp_session *s, const char *arg)
{
	struct proto_path	 p;
	struct smtp_wait	*w;
	const char		*why;

	if (proto_parse_path(PROTO_V_RCPT, arg, &p, &why) == -1) {
		smtp_reply(s, "%s", why);
		return;
	}
	if (p.nparams > 0) {
		smtp_reply(s, "555 5.5.4 Unsupported parameter");
		return;
	}
	if (p.addr.is_utf8 && !s->tx->smtputf8) {
		smtp_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send Unicode addresses");
		return;
	}
	if ((int)s->tx->nrcpts >= s->cfg->max_recipients) {
		smtp_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	w = smtp_wait_new(SMTP_AFTER_RCPT, LB_S_RCPT, "250 2.1.5 Ok");
	w->addr = p.addr;
	smtp_ask(s, w);
}

static void
smtp_rcpt_accepted(struct smtp_session *s, const struct proto_addr *a)
{
	struct smtp_tx	*tx = s->tx;

	if (tx->nrcpts == tx->rcpt_cap) {
		tx->rcpt_cap = tx->rcpt_cap ? tx->rcpt_cap * 2 : 4;
		tx->rcpts = xrealloc(tx->rcpts, tx->rcpt_cap * sizeof(*tx->rcpts));
	}
	tx->rcpts[tx->nrcpts++] = *a;
}

static void
smtp_cmd_data(struct smtp_session *s, const char *arg)
{
	if (*arg != '\0') {
		smtp_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->tx->bdat_started) {		/* RFC 3030 2: no DATA in a BDAT transaction */
		smtp_reply(s, "503 5.5.1 Error: DATA after BDAT; send RSET first");
		return;
	}
	if (s->tx->nrcpts == 0) {
		smtp_reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	smtp_ask(s, smtp_wait_new(SMTP_AFTER_DATA, LB_S_DATA, "354 End data with <CR><LF>.<CR><LF>"));
}

static void
smtp_data_emit(void *ctx, const char *p, size_t n)
{
	struct smtp_session	*s = ctx;
	struct smtp_tx		*tx = s->tx;

	tx->size += n;
	smtp_hops_feed(&tx->hops, p, n);
	if (tx->too_big)
		return;
	if (tx->size > s->cfg->max_message_size) {
		/* Keep reading to the end so that the 552 comes where the client expects a reply. */
		tx->too_big = 1;
		evbuffer_drain(tx->data, evbuffer_get_length(tx->data));
		return;
	}
	evbuffer_add(tx->data, p, n);
	if (tx->dkim_bh != NULL)
		dkim_body_feed(tx->dkim_bh, p, n);
}

/* BDAT: a chunk is read raw (RFC 3030 2: no dot-stuffing); bare CR and LF are looked for as in DATA. */
static void
smtp_cmd_bdat(struct smtp_session *s, const char *arg)
{
	unsigned long long	 size;
	int			 last;

	if (proto_bdat_args(arg, &size, &last) == -1) {
		/* Without a valid size we cannot find the end of the chunk: the only safe answer is to close. */
		smtp_send(s, "501 5.5.4 Syntax: BDAT size [LAST], closing connection");
		smtp_close(s);
		return;
	}
	s->bdat_left = size;
	s->bdat_last = last;
	s->bdat_error[0] = '\0';
	if (s->state != SMTP_S_RCPT)
		util_strlcpy(s->bdat_error, s->state == SMTP_S_REFUSED ? "503 5.5.1 Error: bad sequence of commands" :
		    "503 5.5.1 Error: need MAIL command", sizeof(s->bdat_error));
	else if (s->tx->nrcpts == 0)
		util_strlcpy(s->bdat_error, "554 5.5.1 Error: no valid recipients", sizeof(s->bdat_error));
	else if (s->tx->bdat_failed)
		util_strlcpy(s->bdat_error, "503 5.5.1 Error: an earlier chunk failed; send RSET",
		    sizeof(s->bdat_error));
	s->bdat_resume = s->state;
	if (s->bdat_error[0] == '\0' && !s->tx->bdat_started) {
		s->tx->bdat_started = 1;
		smtp_ask(s, smtp_wait_new(SMTP_AFTER_BDAT, LB_S_DATA, ""));
		return;
	}
	smtp_enter_state(s, SMTP_S_BDAT);
	smtp_data_start(s);
}

static void
smtp_cmd_rset(struct smtp_session *s, const char *arg)
{
	smtp_tx_free(s);
	if (s->state != SMTP_S_GREETED)
		smtp_enter_state(s, SMTP_S_READY);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_noop(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_quit(struct smtp_session *s, const char *arg)
{
	smtp_send(s, "221 2.0.0 Bye");
	smtp_close(s);
}

static void
smtp_cmd_vrfy(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
smtp_cmd_expn(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "502 5.5.1 EXPN command is disabled");
}

static void
smtp_cmd_help(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
}

/* TLS -------------------------------------------------------------------------------------------------- */

int
smtp_starttls_offered(const struct smtp_session *s)
{
	return s->lsn->tls == CFG_TLS_STARTTLS && s->host->tls != NULL && !s->tls;
}

static void
smtp_tls_ready(void *arg, int ok, const char *why)
{
	struct smtp_session	*s = arg;	/* the TLS connection dies with s->bev, so s is alive here */

	if (!ok) {
		/* Nothing more can be said to this client; the filter does not report the error itself. */
		log_info("%s: SSL_accept error from " SMTP_CLIENT_FMT ": TLS handshake failed: %s", s->idstr,
		    SMTP_CLIENT(s), why);
		smtp_close(s);		/* TLS never came up, so nothing can be sent: it frees s on the next turn */
		return;
	}
	s->tls = 1;
	util_strlcpy(s->tls_desc, tls_describe(s->tlsc), sizeof(s->tls_desc));
	log_info("%s: TLS connection established from " SMTP_CLIENT_FMT ": %s", s->idstr, SMTP_CLIENT(s),
	    s->tls_desc);
	trace_session(s->id, TR_TLS, "%s", s->tls_desc);
}

/* smtp_tls_start - from now on the session reads and writes through TLS. 0, or -1 (s is closing). */
static int
smtp_tls_start(struct smtp_session *s, struct tls_conf *conf)
{
	struct tls_conn	*c = tls_wrap(s->host->base, s->bev, conf, NULL, smtp_tls_ready, s);

	if (c == NULL) {
		log_error("%s: cannot start TLS", s->idstr);
		smtp_send(s, "454 4.7.0 TLS not available due to temporary reason");
		smtp_close(s);
		return -1;
	}
	s->tlsc = c;
	s->bev = tls_bev(c);
	/* The filter stops making records while the socket's buffer holds this much, so the replies wait in
	 * the filter's output, where smtp_process() sees them and smtp_write_cb() sees them leave. */
	bufferevent_setwatermark(bufferevent_get_underlying(s->bev), EV_WRITE, 0, SMTP_OUTPUT_HIGH);
	bufferevent_setcb(s->bev, smtp_read_cb, smtp_write_cb, smtp_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_INPUT_HIGH);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 0;
}

static void
smtp_cmd_starttls(struct smtp_session *s, const char *arg)
{
	struct evbuffer	*in = bufferevent_get_input(s->bev);
	size_t		 injected;

	if (s->tls) {
		smtp_reply(s, "554 5.5.1 Error: TLS already active");
		return;
	}
	if (!smtp_starttls_offered(s)) {
		smtp_reply(s, "502 5.5.1 Error: STARTTLS is not offered here");
		return;
	}
	if (*arg != '\0') {
		smtp_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	smtp_send(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2 and CVE-2011-0411: what came after STARTTLS in the clear is never a command. */
	if ((injected = evbuffer_get_length(in)) > 0) {
		log_notice("%s: " SMTP_CLIENT_FMT ": discarded %zu octets sent after STARTTLS before TLS", s->idstr,
		    SMTP_CLIENT(s), injected);
		evbuffer_drain(in, injected);
	}
	/* And the session starts over: the client must say EHLO again, and nothing from before TLS counts. */
	smtp_tx_free(s);
	s->helo[0] = '\0';
	s->esmtp = 0;
	smtp_enter_state(s, SMTP_S_GREETED);
	smtp_tls_start(s, s->host->tls);
}

/* End of message -------------------------------------------------------------------------------------------- */

static void
smtp_add_header_line(struct evbuffer *head, const char *line)
{
	evbuffer_add(head, line, strlen(line));
	evbuffer_add(head, "\r\n", 2);
}

static const char *
smtp_protocol_name(const struct smtp_session *s)
{
	/* RFC 3848 and RFC 6531 with-protocol names. */
	if (s->tx->smtputf8)
		return s->tls ? (s->user[0] ? "UTF8SMTPSA" : "UTF8SMTPS") : (s->user[0] ? "UTF8SMTPA" : "UTF8SMTP");
	if (!s->esmtp)
		return "SMTP";
	return s->tls ? (s->user[0] ? "ESMTPSA" : "ESMTPS") : (s->user[0] ? "ESMTPA" : "ESMTP");
}

/* smtp_build_head - the envelope (queue_file.h) followed by our Received header, the session's tags and the headers
 * that rules added, all before the message as the client sent it. The envelope's size is the message as queued
 * (those headers included), as Postfix's size= is. */
static struct evbuffer *
smtp_build_head(struct smtp_session *s)
{
	struct smtp_tx		*tx = s->tx;
	struct evbuffer		*head, *added = evbuffer_new();
	struct smtp_header	*h;
	struct qf_env		 env;
	char			 date[64], err[128];
	size_t			 i;

	for (h = tx->signatures; h != NULL; h = h->next)	/* DKIM-Signature first (docs/dkim.md) */
		smtp_add_header_line(added, h->line);
	util_rfc5322_date(date, sizeof(date), util_now());
	evbuffer_add_printf(added, "Received: from %s (%s%s%s)\r\n", s->helo[0] ? s->helo : "unknown",
	    strchr(s->ip, ':') ? "[IPv6:" : "[", s->ip, "]");
	if (s->tls)
		evbuffer_add_printf(added, "\t(using %s)\r\n", s->tls_desc);
	evbuffer_add_printf(added, "\tby %s (luamta) with %s id %s", s->cfg->hostname, smtp_protocol_name(s),
	    tx->queue_id);
	if (tx->nrcpts == 1)	/* one recipient only: more would tell each of them about the others */
		evbuffer_add_printf(added, "\r\n\tfor <%s>", tx->rcpts[0].address);
	evbuffer_add_printf(added, "; %s\r\n", date);
	for (h = s->tags; h != NULL; h = h->next)
		smtp_add_header_line(added, h->line);
	for (h = tx->headers; h != NULL; h = h->next)
		smtp_add_header_line(added, h->line);

	memset(&env, 0, sizeof(env));
	util_strlcpy(env.id, tx->queue_id, sizeof(env.id));
	env.time = util_now();
	util_strlcpy(env.client_ip, s->ip, sizeof(env.client_ip));
	env.client_port = s->port;
	util_strlcpy(env.helo, s->helo, sizeof(env.helo));
	util_strlcpy(env.proto, smtp_protocol_name(s), sizeof(env.proto));
	util_strlcpy(env.auth, s->user, sizeof(env.auth));
	env.size = tx->size + evbuffer_get_length(added);
	util_strlcpy(env.sender, tx->sender.address, sizeof(env.sender));
	env.body_8bit = tx->body_8bit;
	env.smtputf8 = tx->smtputf8;
	env.nrcpts = tx->nrcpts;
	env.rcpts = xcalloc(tx->nrcpts ? tx->nrcpts : 1, sizeof(*env.rcpts));
	for (i = 0; i < tx->nrcpts; i++)
		env.rcpts[i] = tx->rcpts[i].address;
	head = evbuffer_new();
	i = spool_head_add(head, &env, err, sizeof(err));
	free(env.rcpts);	/* the addresses are borrowed */
	if (i != 0) {
		evbuffer_free(head);
		evbuffer_free(added);
		log_error("%s: client=[%s] cannot write the envelope: %s", tx->queue_id, s->ip, err);
		return NULL;
	}
	evbuffer_add_buffer(head, added);
	evbuffer_free(added);
	return head;
}

static void
smtp_commit_done(uint64_t id, const char *queue_id, int err)
{
	struct smtp_session	*s = smtp_session_find(id);

	if (err == 0 && s != NULL) {
		/* Before the router hears of it, so that client= comes before the router's from= line.
		 * pflogsumm counts a message received on this line; the router logs from=, size=, nrcpt=. */
		log_info("%s: client=" SMTP_CLIENT_FMT "%s%s%s%s, session=%s", queue_id, SMTP_CLIENT(s),
		    s->user[0] ? ", sasl_method=" : "", s->user[0] && s->auth_mech ? s->auth_mech : "",
		    s->user[0] ? ", sasl_username=" : "", s->user, s->idstr);
		if (s->tx->msgid[0] != '\0')
			log_info("%s: message-id=%s", queue_id, s->tx->msgid);
	}
	if (err == 0) {
		if (s->host->queued != NULL)
			s->host->queued(queue_id);
	}
	if (s == NULL) {
		if (err == 0)	/* queued, but the client left before the 250: it may send it again */
			log_notice("%s: queued, but the client left before the reply", queue_id);
		smtp_host_gone();	/* when stopping, this may have been the last thing to wait for */
		return;
	}
	s->waiting = 0;
	if (err != 0) {
		log_error("%s: queue file write failed: %s, from " SMTP_CLIENT_FMT, queue_id, strerror(err),
		    SMTP_CLIENT(s));
		smtp_tx_free(s);
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "%s", spool_reply_for(err));
	} else {
		metrics_accepted();
		trace_session(s->id, TR_QUEUED, "qid=%s from=%s size=%llu nrcpt=%zu", queue_id,
		    s->tx->sender.address, s->tx->size, s->tx->nrcpts);
		metrics_commit_seconds(util_monotonic() - s->tx->dot_time);
		s->messages++;
		s->junk = 0;		/* as Postfix: a message received forgives the junk before it */
		smtp_tx_free(s);
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", queue_id);
	}
	if (s->state == SMTP_S_CLOSING)
		return;
	smtp_timer_arm(s, s->cfg->timeout_command);
	bufferevent_enable(s->bev, EV_READ);
	smtp_process(s);
}

/* smtp_find_msgid - the Message-ID field of the message's header (its first 8 KiB), for the log; "" if none. */
static void
smtp_find_msgid(struct evbuffer *data, char *out, size_t size)
{
	char		 head[8192];
	ev_ssize_t	 n = evbuffer_copyout(data, head, sizeof(head) - 1);
	char		*p, *end, *v;

	out[0] = '\0';
	if (n <= 0)
		return;
	head[n] = '\0';
	for (p = head; *p != '\0' && *p != '\r' && *p != '\n'; p = end + 1) {
		if ((end = strchr(p, '\n')) == NULL)
			return;
		if (strncasecmp(p, "Message-ID:", 11) != 0)
			continue;
		for (v = p + 11; v < end && (*v == ' ' || *v == '\t'); v++)
			;
		if (v == end || *v == '\r')		/* folded: the value is on the next line */
			for (v = end + 1; *v == ' ' || *v == '\t'; v++)
				;
		if ((end = strpbrk(v, "\r\n")) == NULL)
			return;
		while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		snprintf(out, size, "%.*s", (int)(end - v), v);
		return;
	}
}

static void
smtp_commit(struct smtp_session *s)
{
	struct evbuffer	*head = smtp_build_head(s);
	struct evbuffer	*body = s->tx->data;

	if (head == NULL) {	/* logged */
		smtp_tx_free(s);
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "%s", spool_reply_for(EINVAL));
		return;
	}
	if (s->host->dry_run) {
		struct smtp_header	*h;

		for (h = s->tags; h != NULL; h = h->next)	/* what the rules added, for luamta test */
			log_info("%s: tag: %s", s->tx->queue_id, h->line);
		log_info("%s: from=<%s>, size=%llu, nrcpt=%zu: would be queued (simulation)", s->tx->queue_id,
		    s->tx->sender.address, s->tx->size, s->tx->nrcpts);
		evbuffer_free(head);
		smtp_tx_free(s);
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "250 2.0.0 Ok: would be queued (simulation, nothing was queued)");
		return;
	}
	smtp_find_msgid(body, s->tx->msgid, sizeof(s->tx->msgid));
	s->tx->data = evbuffer_new();	/* the spool takes the message */
	s->waiting = 1;
	bufferevent_disable(s->bev, EV_READ);
	evtimer_del(s->timer);		/* our disk, not the client: smtp_commit_done() arms it again */
	spool_commit(s->host->iot, s->cfg->spool, s->tx->queue_id, head, body, smtp_commit_done, s->id);
}

/* smtp_end_of_data - the final dot (or BDAT LAST) arrived: decide, then queue or refuse. */
static void
smtp_end_of_data(struct smtp_session *s, int bare_lf, int bare_cr)
{
	s->tx->dot_time = util_monotonic();
	s->reply_stage = MS_MESSAGE;
	smtp_enter_state(s, SMTP_S_READY);
	smtp_timer_arm(s, s->cfg->timeout_command);
	if (s->tx->too_big) {
		log_info("%s: message of %llu octets exceeds the limit of %llu", s->tx->queue_id, s->tx->size,
		    s->cfg->max_message_size);
		smtp_log_reject(s, "END-OF-MESSAGE", "552 5.3.4 Message size exceeds fixed limit", NULL);
		smtp_tx_free(s);
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	if (s->tx->hops.hops >= (unsigned)s->cfg->max_hops) {
		/* A mail loop: with ours, the message would carry more than max_hops Received fields. */
		log_info("%s: %u Received headers (server.max_hops = %d), mail loop?", s->tx->queue_id,
		    s->tx->hops.hops, s->cfg->max_hops);
		smtp_log_reject(s, "END-OF-MESSAGE", "554 5.4.6 Too many hops", NULL);
		smtp_tx_free(s);
		smtp_reply(s, "554 5.4.6 Too many hops");
		return;
	}
	if ((bare_lf || bare_cr) && !s->cfg->bare_normalize) {
		log_info("%s: bare %s in message", s->tx->queue_id, bare_lf ? "LF" : "CR");
		smtp_log_reject(s, "END-OF-MESSAGE", "550 5.5.2 Message contains bare CR or LF characters "
		    "(RFC 5321 2.3.8)", NULL);
		smtp_tx_free(s);
		smtp_reply(s, "550 5.5.2 Message contains bare CR or LF characters (RFC 5321 2.3.8)");
		return;
	}
	/* The message stays in state READY while the message rules and the commit run; reading is paused. */
	smtp_ask(s, smtp_wait_new(SMTP_AFTER_MESSAGE, LB_S_MESSAGE, ""));
}

/* smtp_after - act on a stage's verdict. */
static void
smtp_after(struct smtp_session *s, struct smtp_wait *w, const struct lb_verdict *v)
{
	char			 reply[POL_REPLY_MAX];
	enum pol_outcome	 out;
	double			 left;

	out = pol_reply(smtp_logid(s), w->stage, v, w->def, reply, sizeof(reply));
	if (v->kind != LB_V_NONE)
		trace_session(s->id, TR_VERDICT, "stage=%s rule=%s verdict=%s reply=%s", lb_stage_name(w->stage),
		    v->rule[0] ? v->rule : "?", lb_verdict_name(v->kind), v->kind == LB_V_ACCEPT ? "" : reply);
	if (out == POL_CLOSE) {
		smtp_send(s, reply);
		smtp_close(s);
		return;
	}
	switch (w->after) {
	case SMTP_AFTER_CONNECT:
		s->connect_done = 1;
		if (out == POL_DENY) {
			if (reply[0] == '4') {		/* a temporary refusal: 421 and close (RFC 5321 3.1) */
				smtp_log_reject(s, "CONNECT", reply, NULL);
				smtp_send(s, reply);
				smtp_close(s);
				return;
			}
			smtp_enter_state(s, SMTP_S_REFUSED);
			smtp_log_reject(s, "CONNECT", reply, NULL);
			smtp_reply(s, "%s", reply);	/* a refusal counts towards max_errors (SPEC section 5) */
			return;
		}
		left = s->cfg->greeting_delay;
		if (left > 0) {
			s->delaying = 1;
			smtp_timer_arm(s, left);
			return;
		}
		smtp_greet(s);
		return;
	case SMTP_AFTER_HELO:
		if (out == POL_DENY) {
			smtp_log_reject(s, w->esmtp ? "EHLO" : "HELO", reply, NULL);
			smtp_reply(s, "%s", reply);
		}
		else
			smtp_helo_accepted(s, w);
		return;
	case SMTP_AFTER_MAIL:
		if (out == POL_DENY) {
			smtp_log_reject(s, "MAIL", reply, NULL);
			smtp_tx_free(s);
			smtp_reply(s, "%s", reply);
			return;
		}
		smtp_enter_state(s, SMTP_S_RCPT);
		smtp_reply(s, "%s", reply);
		return;
	case SMTP_AFTER_RCPT:
		if (out == POL_PASS)
			smtp_rcpt_accepted(s, &w->addr);
		else
			smtp_log_reject(s, "RCPT", reply, w->addr.address);
		smtp_reply(s, "%s", reply);
		return;
	case SMTP_AFTER_DATA:
		if (out == POL_DENY) {
			smtp_log_reject(s, "DATA", reply, NULL);
			smtp_reply(s, "%s", reply);
			return;
		}
		if (smtp_reply(s, "%s", reply) == -1)
			return;
		smtp_data_init(&s->tx->scan, s->cfg->bare_normalize);
		smtp_enter_state(s, SMTP_S_BODY);
		smtp_data_start(s);
		return;
	case SMTP_AFTER_BDAT:
		if (out == POL_DENY) {
			smtp_log_reject(s, "BDAT", reply, NULL);
			util_strlcpy(s->bdat_error, reply, sizeof(s->bdat_error));
			s->tx->bdat_failed = 1;
		}
		smtp_enter_state(s, SMTP_S_BDAT);
		smtp_data_start(s);
		return;
	case SMTP_AFTER_MESSAGE:
		if (out == POL_DENY) {
			smtp_log_reject(s, "END-OF-MESSAGE", reply, NULL);
			smtp_tx_free(s);
			smtp_reply(s, "%s", reply);
			return;
		}
		smtp_commit(s);
		return;
	case SMTP_AFTER_AUTH:
		if (out == POL_DENY) {
			log_info("%s: " SMTP_CLIENT_FMT ": AUTH for sasl_username=%s refused by the rules", s->idstr,
			    SMTP_CLIENT(s), w->helo);
			smtp_reply(s, "%s", reply);
			return;
		}
		util_strlcpy(s->user, w->helo, sizeof(s->user));
		log_info("%s: " SMTP_CLIENT_FMT ": AUTH sasl_method=%s, sasl_username=%s", s->idstr, SMTP_CLIENT(s),
		    s->auth_mech ? s->auth_mech : "", s->user);
		trace_session(s->id, TR_AUTH, "user=%s", s->user);
		smtp_reply(s, "%s", reply);
		return;
	}
}

/* Input --------------------------------------------------------------------------------------------------- */

/* smtp_body_read - feed DATA input to the scanner. Returns 1 to go on, 0 when more input is needed. */
static int
smtp_body_read(struct smtp_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec	 v;
	size_t			 used;

	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
		return 0;
	used = smtp_data_feed(&s->tx->scan, v.iov_base, v.iov_len, smtp_data_emit, s);
	evbuffer_drain(in, used);
	if (s->tx->scan.done)
		smtp_end_of_data(s, s->tx->scan.bare_lf, s->tx->scan.bare_cr);
	else
		smtp_data_deadline(s, used);
	return 1;
}

/* smtp_bdat_read - take octets of the current chunk. Returns 1 to go on, 0 when more input is needed. */
static int
smtp_bdat_read(struct smtp_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec	 v;
	size_t			 n, i;
	int			 failed = s->bdat_error[0] != '\0';

	if (s->bdat_left > 0) {
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return 0;
		n = v.iov_len < s->bdat_left ? v.iov_len : (size_t)s->bdat_left;
		if (!failed) {
			const unsigned char	*p = v.iov_base;

			for (i = 0; i < n; i++) {
				if (p[i] == '\n' && s->bdat_prev != '\r')
					s->tx->scan.bare_lf = 1;
				if (s->bdat_prev == '\r' && p[i] != '\n')
					s->tx->scan.bare_cr = 1;
				s->bdat_prev = p[i];
			}
			smtp_data_emit(s, v.iov_base, n);
		}
		evbuffer_drain(in, n);
		s->bdat_left -= n;
		if (s->bdat_left > 0) {
			smtp_data_deadline(s, n);
			return 1;
		}
	}
	/* The chunk is complete. */
	if (failed) {
		enum smtp_state	 back = s->bdat_resume == SMTP_S_BDAT ? SMTP_S_RCPT : s->bdat_resume;

		smtp_enter_state(s, back);
		smtp_timer_arm(s, s->cfg->timeout_command);
		smtp_reply(s, "%s", s->bdat_error);
		return 1;
	}
	if (!s->bdat_last) {
		smtp_enter_state(s, SMTP_S_RCPT);
		smtp_timer_arm(s, s->cfg->timeout_command);
		smtp_reply(s, "250 2.0.0 Ok: %llu octets received", s->tx->size);
		return 1;
	}
	if (s->bdat_prev == '\r')
		s->tx->scan.bare_cr = 1;
	s->bdat_prev = 0;
	smtp_end_of_data(s, s->tx->scan.bare_lf, s->tx->scan.bare_cr);
	return 1;
}

/*
 * smtp_non_smtp - an HTTP request, a header line or a TLS handshake where a command should be: not a mail client
 * that went wrong, so do as Postfix does (a warning, "221 2.7.0 Error: I can break rules, too. Goodbye.") and
 * close at once. what is the line (log.c makes it printable) or a description of it.
 */
static void
smtp_non_smtp(struct smtp_session *s, const char *what)
{
	log_warn("%s: non-SMTP command from " SMTP_CLIENT_FMT ": %.100s", s->idstr, SMTP_CLIENT(s), what);
	smtp_send(s, "221 2.7.0 Error: I can break rules, too. Goodbye.");
	smtp_close(s);
}

/*
 * smtp_junk - count a command that moves no mail forward (Postfix's smtpd_junk_command_limit): past
 * inbound.connection.max_junk_commands since the last message, each one counts as an error, so that a client
 * that only says NOOP is closed by max_errors. Returns 0, or -1 when it closed.
 */
static int
smtp_junk(struct smtp_session *s, enum proto_verb verb)
{
	if (verb != PROTO_V_HELO && verb != PROTO_V_EHLO && verb != PROTO_V_RSET && verb != PROTO_V_NOOP &&
	    verb != PROTO_V_VRFY && verb != PROTO_V_HELP)
		return 0;
	if (++s->junk <= s->cfg->max_junk)
		return 0;
	if (++s->errors > s->cfg->max_errors) {
		log_info("too many errors after %s from " SMTP_CLIENT_FMT, proto_verb_name(verb), SMTP_CLIENT(s));
		log_info("%s: %d errors after %d junk commands (inbound.connection.max_junk_commands = %d), closing",
		    s->idstr, s->errors - 1, s->junk, s->cfg->max_junk);
		smtp_send(s, "421 4.7.0 SMTP service not available, closing transmission channel");
		smtp_close(s);
		return -1;
	}
	return 0;
}

/* smtp_reply_stage - the stage label of the replies to a command (luamta_replies_total, docs/admin.md). */
static enum metrics_stage
smtp_reply_stage(enum proto_verb verb)
{
	switch (verb) {
	case PROTO_V_HELO:
	case PROTO_V_EHLO:
		return MS_HELO;
	case PROTO_V_AUTH:
		return MS_AUTH;
	case PROTO_V_MAIL:
		return MS_MAIL;
	case PROTO_V_RCPT:
		return MS_RCPT;
	case PROTO_V_DATA:
	case PROTO_V_BDAT:
		return MS_DATA;
	case PROTO_V_STARTTLS:
		return MS_STARTTLS;
	default:
		return MS_OTHER;
	}
}

static void
smtp_dispatch(struct smtp_session *s, const char *line, size_t len)
{
	const struct smtp_cmd	*c = NULL;
	enum proto_verb		 verb;
	const char		*arg;
	size_t			 i;

	verb = proto_verb_of(line, len, &arg);
	s->cmd_all[verb]++;
	s->cmd_cur = (int)verb + 1;
	s->reply_stage = smtp_reply_stage(verb);
	if (verb == PROTO_V_AUTH)	/* the mechanism, never the credentials */
		trace_session(s->id, TR_CMD, "AUTH %.*s%s", (int)strcspn(arg, " "), arg,
		    arg[strcspn(arg, " ")] ? " ****" : "");
	else
		trace_session(s->id, TR_CMD, "%.*s", (int)(len > 512 ? 512 : len), line);
	for (i = 0; i < sizeof(smtp_cmds) / sizeof(smtp_cmds[0]); i++)
		if (smtp_cmds[i].verb == verb)
			c = &smtp_cmds[i];
	if (c == NULL) {
		if (proto_non_smtp(line, len))
			smtp_non_smtp(s, line);
		else
			smtp_reply(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	if (smtp_junk(s, verb) == -1)
		return;
	if (!(c->states & IN(s->state))) {
		if (s->state == SMTP_S_REFUSED)
			smtp_reply(s, "503 5.5.1 Error: connection refused, only QUIT is served");
		else if (s->state == SMTP_S_GREETED && (verb == PROTO_V_MAIL || verb == PROTO_V_RCPT ||
		    verb == PROTO_V_DATA))
			smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		else if (verb == PROTO_V_RCPT || verb == PROTO_V_DATA)
			smtp_reply(s, "503 5.5.1 Error: need MAIL command");
		else if (verb == PROTO_V_MAIL)
			smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
		else
			smtp_reply(s, "503 5.5.1 Error: bad sequence of commands");
		return;
	}
	c->fn(s, arg);
}

/*
 * smtp_line_error - a line that cannot be a command (too long, bare LF or CR, NUL). Inside AUTH it was meant as
 * a response: it ends the exchange (RFC 4954 4 leaves nothing else to do), and the session is back to READY.
 */
static void
smtp_line_error(struct smtp_session *s, const char *why)
{
	if (s->state == SMTP_S_AUTH) {
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "500 5.5.6 Error: authentication exchange line is %s",
		    strcmp(why, "line too long") == 0 ? "too long" : "malformed");
		return;
	}
	smtp_reply(s, "500 5.5.2 Error: %s", why);
}

/*
 * smtp_line_read - take one command line. Returns 1 when a line was handled, 0 when more input is needed.
 * A line longer than its limit (PROTO_LINE_MAX; PROTO_AUTH_LINE_MAX for AUTH and its responses) is answered
 * once, after its end arrives, and never parsed. A TLS handshake in the clear is seen at its first two octets,
 * since it may never hold a LF.
 */
static int
smtp_line_read(struct smtp_session *s, struct evbuffer *in)
{
	char			 line[PROTO_AUTH_LINE_MAX + 1];
	unsigned char		 head[5];
	struct evbuffer_ptr	 eol;
	size_t			 eol_len = 0, len, max, avail = evbuffer_get_length(in);
	ev_ssize_t		 nhead;

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (s->discard_line) {
		if (eol.pos < 0) {
			evbuffer_drain(in, avail);
			return 0;
		}
		evbuffer_drain(in, (size_t)eol.pos + eol_len);
		s->discard_line = 0;
		s->line_open = 0;
		smtp_line_error(s, "line too long");
		return 1;
	}
	nhead = evbuffer_copyout(in, head, sizeof(head));
	if (nhead >= 2 && head[0] == 0x16 && head[1] == 0x03 && s->state != SMTP_S_AUTH) {
		smtp_non_smtp(s, "a TLS handshake (the client wants implicit TLS)");
		return 1;
	}
	max = s->state == SMTP_S_AUTH ? PROTO_AUTH_LINE_MAX :
	    proto_line_max((const char *)head, nhead > 0 ? (size_t)nhead : 0);
	len = eol.pos < 0 ? avail : (size_t)eol.pos;
	if (len > max - 1) {		/* complete or not, it is too long (max with the CRLF) */
		if (eol.pos < 0) {
			evbuffer_drain(in, avail);
			s->discard_line = 1;
			return 0;
		}
		evbuffer_drain(in, len + eol_len);
		s->line_open = 0;
		smtp_line_error(s, "line too long");
		return 1;
	}
	if (eol.pos < 0)
		return 0;			/* no full line yet */
	evbuffer_remove(in, line, len + 1);	/* the line and its LF */
	line[len] = '\0';
	s->line_open = 0;			/* the next line's deadline starts when we look for it */
	if (len == 0 || line[len - 1] != '\r') {
		if (s->state != SMTP_S_AUTH && proto_verb_of(line, len, NULL) == PROTO_V_UNKNOWN &&
		    strlen(line) == len && proto_non_smtp(line, len)) {
			smtp_non_smtp(s, line);		/* an HTTP client ends its lines with LF alone */
			return 1;
		}
		smtp_line_error(s, "bare LF in command line");
		explicit_bzero(line, len);
		return 1;
	}
	line[--len] = '\0';
	if (len > max - 2 || memchr(line, '\r', len) != NULL || strlen(line) != len) {
		smtp_line_error(s, strlen(line) != len ? "NUL in command line" :
		    memchr(line, '\r', len) ? "bare CR in command line" : "line too long");
		explicit_bzero(line, len);
		return 1;
	}
	if (s->state == SMTP_S_AUTH)
		smtp_auth_line(s, line);
	else
		smtp_dispatch(s, line, len);
	explicit_bzero(line, len);	/* it may have been a password */
	return 1;
}

/* smtp_process - handle what the client sent, in order, until we must wait or need more input. */
void
smtp_process(struct smtp_session *s)
{
	struct evbuffer	*in;
	int		 more = 1;

	while (more && !s->waiting && s->bev != NULL) {
		in = bufferevent_get_input(s->bev);	/* STARTTLS replaces the bufferevent */
		if (s->state == SMTP_S_CONNECT || s->state == SMTP_S_CLOSING)
			return;
		if (smtp_output_pending(s) > SMTP_OUTPUT_HIGH) {
			/* The output's high-water mark: the client does not read its replies, so we stop reading
			 * its commands until they are out (smtp_write_cb), and the command timeout runs on. */
			s->out_full = 1;
			bufferevent_disable(s->bev, EV_READ);
			return;
		}
		switch (s->state) {
		case SMTP_S_BODY:
			more = smtp_body_read(s, in);
			break;
		case SMTP_S_BDAT:
			more = smtp_bdat_read(s, in);
			break;
		default:
			if (smtp_shutting_down && s->state != SMTP_S_RCPT) {
				smtp_send(s, SMTP_SHUTDOWN_REPLY);
				smtp_close(s);
				return;
			}
			if (!s->line_open) {
				/* A new command line: timeouts.command bounds the whole of it (a deadline, not a
				 * gap between reads). The command's reply is out or queued by now. */
				s->line_open = 1;
				smtp_timer_arm(s, s->cfg->timeout_command);
			}
			more = smtp_line_read(s, in);
			break;
		}
	}
}

/* Teardown ------------------------------------------------------------------------------------------------ */

void
smtp_close(struct smtp_session *s)
{
	if (s->state == SMTP_S_CLOSING)
		return;
	smtp_enter_state(s, SMTP_S_CLOSING);
	bufferevent_disable(s->bev, EV_READ);
	if (s->run != NULL) {
		lb_run_cancel(s->run);
		s->run = NULL;
		free(idmap_get(smtp_waits, s->id));
		idmap_del(smtp_waits, s->id);
		s->waiting = 0;
	}
	/* Never free here: callers up the stack still hold s. The write callback or the timer frees s once the
	 * last reply is out, or after 10 seconds when the client never reads it. */
	/* In the middle of a TLS handshake nothing can be sent any more: close at once. */
	s->close_deadline = util_monotonic() + (s->tlsc != NULL && !s->tls ? 0 : 10);
	if (s->tls) {
		bufferevent_flush(s->bev, EV_WRITE, BEV_FLUSH);	/* the last replies, then the alert */
		tls_close_notify(s->tlsc);
	}
	smtp_timer_arm(s, 0);
}

static void
smtp_close_done(uint64_t id, const struct lb_verdict *v)
{
	/* Nothing to answer: the connection is gone. The session was kept only for the rules to read. */
	struct smtp_session	*s = smtp_session_find(id);

	if (s != NULL) {
		s->run = NULL;
		smtp_free(s);
	}
}

static void
smtp_free(struct smtp_session *s)
{
	struct lb_verdict	 v;
	struct lb_run		*run;

	metrics_session_state(s->state, -1);
	trace_session(s->id, TR_CLOSE, "messages=%u errors=%d", s->messages, s->errors);
	if (s->bev != NULL) {
		char	 counts[256];

		smtp_log_commands(s, counts, sizeof(counts));
		log_info("disconnect from " SMTP_CLIENT_FMT "%s", SMTP_CLIENT(s), counts);
		tls_detach(s->tlsc);		/* its handshake timer must not find s after this */
		bufferevent_free(s->bev);	/* with TLS, this frees the TLS connection and the socket */
		s->bev = NULL;
		s->tlsc = NULL;
		event_del(s->timer);
		if (s->auth_delay != NULL)
			event_del(s->auth_delay);
		if (s->run != NULL) {
			lb_run_cancel(s->run);
			s->run = NULL;
		}
		free(idmap_get(smtp_waits, s->id));
		idmap_del(smtp_waits, s->id);
		connlimit_release(s->connlimit_key);
		s->connlimit_key = 0;
		if (s->connect_done &&
		    lb_run_start(s->gen, s->host->base, LB_S_CLOSE, smtp_push_session, s, s->id, smtp_close_done,
		    &v, &run) == 1) {
			s->run = run;	/* the close rules wait for something; free when they finish */
			return;
		}
	} else if (s->run != NULL) {
		lb_run_cancel(s->run);	/* the worker is stopping while a close rule waits */
		s->run = NULL;
	}
	smtp_tx_free(s);
	smtp_header_free_list(s->tags);
	if (s->timer != NULL)
		event_free(s->timer);
	if (s->auth_delay != NULL)
		event_free(s->auth_delay);
	lb_session_forget(lb_gen_state(s->gen), s);
	idmap_del(smtp_sessions, s->id);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		smtp_all = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	lb_gen_release(s->gen);
	free(s);
	smtp_host_gone();
}

/* smtp_shutdown_one - say goodbye to a session that is between transactions; busy ones finish first. */
static void
smtp_shutdown_one(struct smtp_session *s)
{
	if (s->bev == NULL || s->state == SMTP_S_CLOSING || s->waiting)
		return;
	if (s->state == SMTP_S_BODY || s->state == SMTP_S_BDAT || s->state == SMTP_S_RCPT)
		return;
	smtp_send(s, SMTP_SHUTDOWN_REPLY);
	smtp_close(s);
}

/* smtp_snapshot - the sessions as an array, so that closing some while walking is safe. */
static size_t
smtp_snapshot(struct smtp_session ***out)
{
	size_t			 n = 0;
	struct smtp_session	*s, **list;

	list = xcalloc(smtp_session_count() + 1, sizeof(*list));
	for (s = smtp_all; s != NULL; s = s->next)
		list[n++] = s;
	*out = list;
	return n;
}

void
smtp_session_shutdown(void)
{
	struct smtp_session	**list;
	size_t			  i, n;

	smtp_shutting_down = 1;
	if (smtp_sessions == NULL)
		return;
	n = smtp_snapshot(&list);
	for (i = 0; i < n; i++)
		if (smtp_session_find(list[i]->id) == list[i])
			smtp_shutdown_one(list[i]);
	free(list);
}

void
smtp_session_close_all(void)
{
	struct smtp_session	**list;
	size_t			  i, n;

	if (smtp_sessions == NULL)
		return;
	n = smtp_snapshot(&list);
	for (i = 0; i < n; i++) {
		if (smtp_session_find(list[i]->id) != list[i])
			continue;
		if (list[i]->bev != NULL)
			smtp_send(list[i], SMTP_SHUTDOWN_REPLY);
		smtp_free(list[i]);
	}
	free(list);
}
