/*
 * router.c - the router process. router_intake.c decides when a message enters (a worker's datagram, the drain
 * of incoming/, the walk of queue/, retry timers, `luamta queue flush`), within routing.active_limit. One attempt:
 *  1. load (I/O thread): the queue file (admitted from incoming/ to queue/ first) and the recipient state file
 *     <spool>/state/<id>; a file that is not a queue file moves to corrupt/;
 *  2. route (loop): the route stage (rules/routing.lua) decides each open recipient: Maildir, SMTP (by MX, to a
 *     relay or smart host, or to an address), bounce, defer or hold; SMTP recipients are grouped per next hop;
 *  3. deliver: Maildir writes with step 4; for each SMTP group, DNS (MX, then A and AAAA) and one transaction
 *     (mta.c), at most routing.max_per_domain at a time per next hop; a next hop that is one of our own
 *     listening addresses is never connected to (router_group_drop_self: 5.4.6, loops back to myself);
 *  4. record (the record thread, a second disk thread that never loads): bounces are queued first (RFC 3464,
 *     never for the null sender), then one state line per final outcome is appended and fsynced; a message
 *     whose every recipient has an outcome is removed, its queue file first. Lines an append could not write
 *     (ENOSPC) stay in memory and are appended at the message's next load, before its state is read, so that
 *     nobody is delivered twice and no outcome is lost while the router runs (docs/reliability.md, "Faults").
 * Deferred recipients are tried again after routing.retry[attempt] seconds, until routing.max_queue_time, when
 * they bounce; a delay warning goes out once after routing.delay_warning. A crash between a delivery and its
 * state line delivers that recipient again after restart (docs/reliability.md). At start, a sweep on the I/O
 * thread removes what a crash leaves behind: state files of finished messages and partial Maildir files.
 * The next hops are router_nexthop.c's, the start-up sweep router_sweep.c's, the control socket
 * router_control.c's, and when a message enters router_intake.c's (router_priv.h).
 *	router_main()	the process
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <lua.h>

#include "dns.h"
#include "dsn.h"
#include "iothread.h"
#include "lb.h"
#include "log.h"
#include "maildir.h"
#include "master.h"
#include "metrics.h"
#include "router_intake.h"
#include "router_priv.h"
#include "smtp_proto.h"
#include "trace.h"
#include "util.h"

struct event_base		*router_base;
static struct lb_gen		*router_gen;
struct iothread			*router_io;	/* loads, control commands, the start-up sweep */
static struct iothread		*router_rec;	/* records only: outcomes never wait behind loads */
struct iothread			*router_body;	/* chunks of messages being sent: never behind a walk or a load */
struct idmap			*router_busy;	/* id hash -> message being worked on */
static struct idmap		*router_later;	/* id hash -> (void *) timer event for its next attempt */
static struct idmap		*router_unrecorded;	/* id hash -> (char *) state lines not on disk yet */
struct idmap			*router_groups;	/* group id -> group */
static uint64_t			 router_next_gid;
const struct config		*router_cfg;
int				 router_stop;

void
router_control_path(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/control.sock", spool);
}

uint64_t
router_key(const char *s)
{
	return util_hash64(s, 0);
}

/* Load ----------------------------------------------------------------------------------------------------- */

/* router_load_work - I/O thread: read the queue file and the state file; the state lines say who is done. */
static int
router_load_work(void *arg)
{
	struct router_msg	*m = arg;
	size_t			 i;
	int			 err;

	if ((err = spool_admit(m->spool, m->id)) != 0 && err != ENOENT)
		return err;
	/* The last attempt's outcomes first: the state read below must know who is done. */
	if (m->unrecorded != NULL && spool_where(m->spool, m->id) == SPOOL_W_NONE) {
		free(m->unrecorded);	/* finished or deleted meanwhile: nothing left to record */
		m->unrecorded = NULL;
	}
	if (m->unrecorded != NULL) {
		if ((err = spool_state_append(m->spool, m->id, m->unrecorded, strlen(m->unrecorded))) != 0)
			return err;
		free(m->unrecorded);
		m->unrecorded = NULL;
	}
	/*
	 * The walk of queue/ read this file's mtime before the record thread set a later retry time on it (the
	 * attempt before this one ended in between, and had no timer left: routing.active_limit): it is not due.
	 * A due time further ahead than the longest retry interval is not ours but a clock set back: tried.
	 */
	if (!m->flush) {
		double	 due = spool_due(m->spool, m->id);

		if (due > m->taken + 1 && due <= m->taken + m->due_cap) {
			m->not_due = 1;
			return EAGAIN;
		}
	}
	/* The envelope, the state and the start of the message (for a bounce's copy of the header); the rest is
	 * read a chunk at a time when it is delivered. */
	if ((err = spool_load(m->spool, m->id, 0, SPOOL_LOAD_HEAD, &m->q, m->why, sizeof(m->why))) != 0) {
		/* Not a queue file we can read: kept for a person in corrupt/, so it is not read at every walk. */
		if (err == EINVAL && (m->quarantine_err = spool_quarantine(m->spool, m->id)) == 0)
			m->quarantined = 1;
		return err;
	}
	m->rcpts = xcalloc(m->q.env.nrcpts, sizeof(*m->rcpts));
	m->attempts = m->q.state.attempts;
	m->warned = m->q.state.warned;
	for (i = 0; i < m->q.env.nrcpts; i++) {
		const struct qf_rcpt_status	*st = &m->q.state.rcpts[i];

		if (st->state == QF_DELIVERED)
			m->rcpts[i].outcome = R_DONE;
		else if (st->state == QF_BOUNCED)
			m->rcpts[i].outcome = R_BOUNCED;
		else if (st->state == QF_DEFERRED)
			util_strlcpy(m->rcpts[i].text, st->detail, sizeof(m->rcpts[i].text));
	}
	return 0;
}

/* router_unrecorded_keep - keep state lines (owned) for the message's next load, after any kept before. */
static void
router_unrecorded_keep(const char *id, char *lines)
{
	char	*before = idmap_get(router_unrecorded, router_key(id));

	if (before != NULL) {
		size_t	 n = strlen(before), k = strlen(lines);

		before = xrealloc(before, n + k + 1);
		memcpy(before + n, lines, k + 1);
		free(lines);
		lines = before;
	}
	idmap_put(router_unrecorded, router_key(id), lines);
}

static void
router_msg_free(struct router_msg *m)
{
	size_t	 i;

	if (m->unrecorded != NULL && !m->deleted)
		router_unrecorded_keep(m->id, m->unrecorded);
	else
		free(m->unrecorded);
	idmap_del(router_busy, router_key(m->id));
	for (i = 0; i < m->ngroups; i++) {
		idmap_del(router_groups, m->groups[i]->id);
		free(m->groups[i]->found);
		free(m->groups[i]->idx);
		free(m->groups[i]);
	}
	free(m->groups);
	spool_msg_free(&m->q);
	free(m->maildir);
	free(m->hostname);
	free(m->spool);
	free(m->rcpts);
	free(m);
	intake_room();
}

/* Record ----------------------------------------------------------------------------------------------------- */

/* router_bounce_write - record thread: queue one report about the recipients in state st (failed or delayed). */
static int
router_bounce_write(struct router_msg *m, int delayed)
{
	struct dsn_rcpt		*dr;
	struct dsn_info		 info;
	struct evbuffer		*buf;
	struct qf_env		 env;
	char			 id[QUEUEID_SIZE], *rcpt;
	size_t			 i, n = 0;
	int			 err = 0;

	if (m->q.env.sender[0] == '\0')
		return 0;		/* never a bounce for a bounce (RFC 5321 6.1) */
	dr = xcalloc(m->q.env.nrcpts, sizeof(*dr));
	for (i = 0; i < m->q.env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];

		if (delayed ? r->outcome != R_DEFERRED : r->outcome != R_FAILED)
			continue;
		dr[n].address = m->q.env.rcpts[i];
		dr[n].action = delayed ? "delayed" : "failed";
		dr[n].status = r->dsn;
		dr[n].diagnostic = r->text[0] ? r->text : NULL;
		dr[n].remote_mta = r->remote[0] ? r->remote : NULL;
		n++;
	}
	if (n == 0) {
		free(dr);
		return 0;
	}
	memset(&info, 0, sizeof(info));
	info.hostname = m->hostname;
	info.queue_id = m->id;
	info.arrival = m->q.env.time;
	info.now = util_now();
	info.expires = delayed ? m->q.env.time + m->max_queue_time : 0;
	info.sender = m->q.env.sender;
	info.rcpts = dr;
	info.nrcpts = n;
	info.orig = m->q.data + m->q.env.body_offset;
	info.orig_len = m->q.len - m->q.env.body_offset;
	info.delayed = delayed;
	buf = evbuffer_new();
	if (dsn_build(&info, buf) == -1) {
		evbuffer_free(buf);
		free(dr);
		return 0;	/* nothing usable to report: the recipients still get their state lines */
	}
	free(dr);
	memset(&env, 0, sizeof(env));
	queueid_new(env.id);
	env.time = util_now();
	util_strlcpy(env.client_ip, "127.0.0.1", sizeof(env.client_ip));
	util_strlcpy(env.helo, m->hostname, sizeof(env.helo));
	util_strlcpy(env.proto, "LOCAL", sizeof(env.proto));
	env.size = evbuffer_get_length(buf);
	env.body_8bit = 1;
	rcpt = m->q.env.sender;
	env.rcpts = &rcpt;
	env.nrcpts = 1;
	err = spool_write_message(m->spool, &env, buf);
	util_strlcpy(id, env.id, sizeof(id));
	evbuffer_free(buf);
	if (err == 0)	/* the loop takes it at once */
		util_strlcpy(delayed ? m->warning_id : m->bounce_id, id, QUEUEID_SIZE);
	return err;
}

/* router_maildir_read - record thread: the message for maildir_deliver, a chunk at a time from the queue file. */
static int
router_maildir_read(void *arg, unsigned long long off, char *buf, size_t size, size_t *got)
{
	struct router_msg	*m = arg;
	size_t			 len = router_body_len(m);
	int			 err;

	if (off >= len) {
		*got = 0;
		return 0;
	}
	if (size > len - off)
		size = (size_t)(len - off);
	if ((err = spool_read_body(m->spool, m->id, m->q.env.body_offset, off, buf, size, got)) == 0 && *got == 0)
		err = EIO;	/* shorter than when it was loaded */
	return err;
}

/* router_record_work - record thread: Maildir deliveries, bounces, state lines, and removal of a finished message. */
static int
router_record_work(void *arg)
{
	struct router_msg	*m = arg;
	size_t			 i;
	int			 open_left = 0, err;
	char			 dir[4200], unique[64], prefix[1200], line[MTA_TEXT_MAX + 600];
	struct evbuffer		*state = evbuffer_new();

	m->bounce_id[0] = m->warning_id[0] = '\0';
	for (i = 0; i < m->q.env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];

		if (r->outcome != R_LOCAL)
			continue;
		if (maildir_path(m->maildir, r->mailbox, dir, sizeof(dir)) == -1)
			err = ENAMETOOLONG;
		else {
			snprintf(unique, sizeof(unique), "%s.%zu", m->id, i);
			snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\nDelivered-To: %s\n", m->q.env.sender,
			    r->mailbox);
			err = maildir_deliver(dir, unique, prefix, router_maildir_read, m);
		}
		if (err == 0) {
			r->outcome = R_SENT;
			util_strlcpy(r->dsn, "2.0.0", sizeof(r->dsn));
			snprintf(r->text, sizeof(r->text), "delivered to maildir of %s", r->mailbox);
		} else {
			r->outcome = R_DEFERRED;
			util_strlcpy(r->dsn, "4.3.0", sizeof(r->dsn));
			snprintf(r->text, sizeof(r->text), "maildir write failed: %s", strerror(err));
		}
	}
	/* Bounces first: a recipient is marked bounced only once its report is safely queued. */
	if ((err = router_bounce_write(m, 0)) != 0) {
		for (i = 0; i < m->q.env.nrcpts; i++) {
			struct router_rcpt	*r = &m->rcpts[i];
			char			 last[MTA_TEXT_MAX - 64];

			if (r->outcome != R_FAILED)
				continue;
			r->outcome = R_DEFERRED;	/* try the bounce again next time */
			util_strlcpy(last, r->text, sizeof(last));
			snprintf(r->text, sizeof(r->text), "%s; its bounce cannot be queued: %s", last, strerror(err));
		}
	}
	if (m->want_warning && router_bounce_write(m, 1) == 0)
		evbuffer_add(state, line, qf_state_event(line, sizeof(line), "warned", util_now()));
	for (i = 0; i < m->q.env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];
		enum qf_rcpt_state	 st = r->outcome == R_SENT ? QF_DELIVERED : r->outcome == R_FAILED ?
			    QF_BOUNCED : r->outcome == R_DEFERRED ? QF_DEFERRED : r->outcome == R_HOLD ? QF_HELD :
			    QF_QUEUED;

		evbuffer_add(state, line, qf_state_line(line, sizeof(line), i, st, r->dsn, r->text));
		if (r->outcome == R_DEFERRED || r->outcome == R_HOLD || r->outcome == R_OPEN)
			open_left = 1;
	}
	if (!open_left) {
		/*
		 * Every recipient has its outcome (a bounce is queued by now): removing the queue file is the record,
		 * with no state line first (docs/reliability.md, "Duplicates"). A crash before the removal delivers
		 * again, exactly as a crash before a state line would; the line would only cost a file created,
		 * fsynced and removed per message. Postfix's qmgr likewise just removes a finished queue file.
		 */
		evbuffer_free(state);
		return spool_finish(m->spool, m->id);
	}
	evbuffer_add(state, line, qf_state_event(line, sizeof(line), "attempt", util_now()));
	err = spool_state_append(m->spool, m->id, (const char *)evbuffer_pullup(state, -1),
	    evbuffer_get_length(state));
	if (err != 0) {
		/* Not on disk (and taken back whole): kept for the next load, which appends it first. */
		size_t	 n = evbuffer_get_length(state);

		m->unrecorded = xmalloc(n + 1);
		evbuffer_remove(state, m->unrecorded, n);
		m->unrecorded[n] = '\0';
	}
	evbuffer_free(state);
	if (err != 0)
		return err;
	/* Its next attempt, for the walk of queue/ (a timer may come first; after a restart only this is left). */
	for (i = 0; i < m->q.env.nrcpts && m->rcpts[i].outcome != R_DEFERRED && m->rcpts[i].outcome != R_OPEN; i++)
		;
	spool_set_due(m->spool, m->id, i < m->q.env.nrcpts ? m->due_retry : m->due_hold);
	return 0;
}

static double
router_retry_delay(int attempts)
{
	size_t	 i;

	if (router_cfg->nretry == 0)
		return 300;
	i = attempts < 1 ? 0 : (size_t)attempts - 1;
	if (i >= router_cfg->nretry)
		i = router_cfg->nretry - 1;
	return router_cfg->retry[i];
}

/* router_retry_longest - the longest wait this router sets (a due time beyond it is a clock set back). */
static double
router_retry_longest(void)
{
	double	 longest = ROUTER_HOLD_RECHECK > router_retry_delay(1) ? ROUTER_HOLD_RECHECK : router_retry_delay(1);
	size_t	 i;

	for (i = 0; i < router_cfg->nretry; i++)
		if (router_cfg->retry[i] > longest)
			longest = router_cfg->retry[i];
	return longest;
}

/* router_due_horizon - how far ahead a due time on a queue file is believed (router_load_work, router_intake.c). */
static double
router_due_horizon(void)
{
	return router_retry_longest() + 60;
}

static void
router_later_cb(evutil_socket_t fd, short what, void *arg)
{
	char		*id = arg;
	struct event	*ev = idmap_get(router_later, router_key(id));

	idmap_del(router_later, router_key(id));
	if (ev != NULL)
		event_free(ev);		/* a one-shot timer may free itself in its callback */
	if (router_active() < router_cfg->active_limit)
		router_take(id, 0);
	else
		intake_rescan(0);	/* no room: the walk of queue/ finds it due (its mtime) */
	free(id);
}

/* router_schedule - the message's next attempt in seconds (the timer owns a copy of the id). */
static void
router_schedule(const char *id, double seconds)
{
	struct timeval	 tv;
	char		*copy = xstrdup(id);
	struct event	*ev;

	if (idmap_get(router_later, router_key(id)) != NULL) {
		free(copy);
		return;
	}
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	ev = evtimer_new(router_base, router_later_cb, copy);
	idmap_put(router_later, router_key(id), ev);
	evtimer_add(ev, &tv);
}

static void
router_record_done(void *arg, int err)
{
	struct router_msg	*m = arg;
	double			 delay = util_now() - m->q.env.time;
	double			 attempt = util_monotonic() - m->started;
	size_t			 i;
	int			 open_left = 0, held = 0;

	for (i = 0; i < m->q.env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];
		const char		*status;

		switch (r->outcome) {
		case R_SENT:
			status = "sent";
			break;
		case R_FAILED:
			status = "bounced";
			break;
		case R_DEFERRED:
			status = "deferred";
			open_left = 1;
			break;
		case R_HOLD:
			status = "held";
			held = 1;
			break;
		default:
			continue;
		}
		if (r->outcome != R_HOLD)
			metrics_delivery(strcmp(r->relay, "local") == 0 ? MT_LOCAL : strncmp(r->relay, "lmtp[", 5) == 0 ?
			    MT_LMTP : MT_SMTP, r->outcome ==
			    R_FAILED ? MD_BOUNCED : r->outcome == R_DEFERRED ? MD_DEFERRED : MD_SENT);
		trace_message(m->id, TR_ATTEMPT, "to=%s relay=%s delay=%.2f dsn=%s status=%s reply=%s", m->q.env.rcpts[i],
		    r->relay[0] ? r->relay : "none", delay, r->dsn[0] ? r->dsn : "4.0.0", status, r->text);
		/* Postfix's delays=a/b/c/d: a is the time before this attempt, d the attempt (connection set-up and
		 * transmission are not told apart yet, so c is 0, as is b, the wait inside the router). */
		log_svc(strcmp(r->relay, "local") == 0 ? LOG_SVC_LOCAL : LOG_SVC_SMTP, LOG_L_INFO,
		    "%s: to=<%s>, relay=%s, delay=%.2f, delays=%.2f/0/0/%.2f, dsn=%s, status=%s (%s)%s%s", m->id,
		    m->q.env.rcpts[i], r->relay[0] ? r->relay : "none", delay, delay > attempt ? delay - attempt : 0,
		    attempt < delay ? attempt : delay, r->dsn[0] ? r->dsn : "4.0.0", status, r->text,
		    r->tls[0] ? ", tls=" : "", r->tls);
	}
	if (m->bounce_id[0] != '\0') {
		log_svc(LOG_SVC_BOUNCE, LOG_L_INFO, "%s: sender non-delivery notification: %s", m->id, m->bounce_id);
		intake_hint(m->bounce_id);
	}
	if (m->warning_id[0] != '\0') {
		log_svc(LOG_SVC_BOUNCE, LOG_L_INFO, "%s: sender delay notification: %s", m->id, m->warning_id);
		intake_hint(m->warning_id);
	}
	if (err != 0)
		log_error("%s: cannot record delivery state: %s; trying again later", m->id, strerror(err));
	else if (!open_left && !held) {
		log_info("%s: removed", m->id);
		trace_message(m->id, TR_REMOVED, "delivery finished");
	}
	if (m->deleted)
		router_delete_files(m->id);	/* the delete may have come after the record job ran */
	/* Timers for at most routing.active_limit messages; the others wait for the walk of queue/ to find them due
	 * (their mtime), at most ROUTER_RESCAN seconds late. */
	if (idmap_count(router_later) >= router_cfg->active_limit || m->deleted)
		;
	else if (open_left || err != 0)
		router_schedule(m->id, router_retry_delay(m->attempts + 1));
	else if (held)
		router_schedule(m->id, ROUTER_HOLD_RECHECK);
	router_msg_free(m);
}

/* router_msg_step_done - one job or group of this attempt finished; the last one records the outcomes. */
void
router_msg_step_done(struct router_msg *m)
{
	size_t	 i;

	if (--m->pending > 0)
		return;
	/* Past routing.max_queue_time, a recipient that failed again for now bounces (Postfix's
	 * maximal_queue_lifetime): it had its last attempt just now. Held recipients wait for the administrator. */
	if (m->max_queue_time > 0 && util_now() - m->q.env.time > m->max_queue_time)
		for (i = 0; i < m->q.env.nrcpts; i++) {
			struct router_rcpt	*r = &m->rcpts[i];
			char			 last[MTA_TEXT_MAX - 64];

			if (r->outcome != R_DEFERRED)
				continue;
			util_strlcpy(last, r->text, sizeof(last));
			r->outcome = R_FAILED;
			util_strlcpy(r->dsn, "4.4.7", sizeof(r->dsn));
			snprintf(r->text, sizeof(r->text), "message delayed too long in the queue%s%s",
			    last[0] ? ": " : "", last);
		}
	/* A delay warning, once, when recipients are still deferred after routing.delay_warning. */
	if (!m->warned && router_cfg->delay_warning > 0 && util_now() - m->q.env.time >= router_cfg->delay_warning &&
	    m->q.env.sender[0] != '\0')
		for (i = 0; i < m->q.env.nrcpts; i++)
			if (m->rcpts[i].outcome == R_DEFERRED)
				m->want_warning = 1;
	m->due_retry = util_now() + router_retry_delay(m->attempts + 1);
	m->due_hold = util_now() + ROUTER_HOLD_RECHECK;
	/* Its own thread: a state line after a next hop's 250 is the end of a duplicate window (docs/reliability.md)
	 * and must not wait behind the loads of a large queue. Records never race with a load of the same message
	 * (it is busy until record_done), nor with control commands, which leave busy messages alone. */
	iot_submit(router_rec, router_record_work, router_record_done, m, NULL);
}

/* Route ------------------------------------------------------------------------------------------------------ */

static int
router_push_route(lua_State *L, void *arg)
{
	struct router_msg	*m = arg;
	const char		*rcpt = m->q.env.rcpts[m->route_i], *at = strrchr(rcpt, '@');
	struct proto_addr	 a;

	memset(&a, 0, sizeof(a));
	util_strlcpy(a.address, rcpt, sizeof(a.address));
	if (at != NULL) {
		size_t	 n = (size_t)(at - rcpt) < sizeof(a.local) - 1 ? (size_t)(at - rcpt) : sizeof(a.local) - 1;

		memcpy(a.local, rcpt, n);
		util_strlcpy(a.domain, at + 1, sizeof(a.domain));
	} else
		util_strlcpy(a.local, rcpt, sizeof(a.local));
	/* The router's message object is a plain table: queue_id, sender, size. */
	lua_createtable(L, 0, 3);
	lua_pushstring(L, m->id);
	lua_setfield(L, -2, "queue_id");
	lua_pushstring(L, m->q.env.sender);
	lua_setfield(L, -2, "sender");
	lua_pushinteger(L, (lua_Integer)m->q.env.size);
	lua_setfield(L, -2, "size");
	lb_addr_push(L, &a);
	return 2;
}

static void
router_route_abandoned(uint64_t owner, const struct lb_verdict *v)
{
	/* Not reached: waiting route rules are cancelled (see router_route). */
}

/* router_split_dsn - "4.3.2 text" gives dsn "4.3.2" and the text after it; without a code, def and all of it. */
static void
router_split_dsn(const char *in, const char *def, char *dsn, size_t dsnsize, char *text, size_t textsize)
{
	size_t	 n = strspn(in, "0123456789.");

	if (n >= 5 && n < dsnsize && (in[0] == '4' || in[0] == '5') && in[1] == '.' && in[n] == ' ') {
		memcpy(dsn, in, n);
		dsn[n] = '\0';
		util_strlcpy(text, in + n + 1, textsize);
		return;
	}
	util_strlcpy(dsn, def, dsnsize);
	util_strlcpy(text, in, textsize);
}

static struct router_group *
router_group_for(struct router_msg *m, const struct lb_verdict *v)
{
	char			 key[540];
	size_t			 i;
	struct router_group	*g;

	snprintf(key, sizeof(key), "%d:%s:%d", (int)v->mode, v->arg, v->port);
	for (i = 0; i < m->ngroups; i++)
		if (strcasecmp(m->groups[i]->key, key) == 0)
			return m->groups[i];
	g = xcalloc(1, sizeof(*g));
	g->id = ++router_next_gid;
	g->m = m;
	g->mode = v->mode;
	util_strlcpy(g->host, v->arg, sizeof(g->host));
	g->port = v->port;
	util_strlcpy(g->key, key, sizeof(g->key));
	g->idx = xcalloc(m->q.env.nrcpts, sizeof(*g->idx));
	idmap_put(router_groups, g->id, g);
	m->groups = xrealloc(m->groups, (m->ngroups + 1) * sizeof(*m->groups));
	m->groups[m->ngroups++] = g;
	return g;
}

/* router_lmtp_group - the message's group for delivery.lmtp. */
static struct router_group *
router_lmtp_group(struct router_msg *m)
{
	struct lb_verdict	 v;
	struct router_group	*g;

	memset(&v, 0, sizeof(v));
	v.mode = LB_RELAY_IP;
	snprintf(v.arg, sizeof(v.arg), "lmtp %s", router_cfg->lmtp);	/* its key: no next hop is called that */
	g = router_group_for(m, &v);
	g->lmtp = 1;
	return g;
}

/* router_route - ask the rules about every open recipient, then start the deliveries. */
static void
router_route(struct router_msg *m)
{
	size_t	 i;
	for (i = 0; i < m->q.env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];
		struct lb_verdict	 v;
		struct lb_run		*run;
		char			 last[MTA_TEXT_MAX - 64];

		if (r->outcome != R_OPEN)
			continue;
		m->route_i = i;
		if (lb_run_start(router_gen, router_base, LB_S_ROUTE, router_push_route, m, 0,
		    router_route_abandoned, &v, &run) == 1) {
			lb_run_cancel(run);
			v.kind = LB_V_DEFER;
			snprintf(v.text, sizeof(v.text), "4.3.0 route rules may not wait");
		}
		r->text[0] = '\0';
		switch (v.kind) {
		case LB_V_LOCAL:
			util_strlcpy(r->mailbox, v.arg, sizeof(r->mailbox));
			if (router_cfg->lmtp != NULL) {	/* delivery.lmtp: one LMTP transaction for them all */
				struct router_group	*g = router_lmtp_group(m);

				r->outcome = R_RELAY;
				g->idx[g->n++] = i;
				break;
			}
			r->outcome = R_LOCAL;
			util_strlcpy(r->relay, "local", sizeof(r->relay));
			break;
		case LB_V_RELAY: {
			struct router_group	*g = router_group_for(m, &v);

			r->outcome = R_RELAY;
			g->idx[g->n++] = i;
			break;
		}
		case LB_V_BOUNCE:
		case LB_V_REJECT:
			r->outcome = R_FAILED;
			router_split_dsn(v.text, "5.0.0", r->dsn, sizeof(r->dsn), last, sizeof(last));
			snprintf(r->text, sizeof(r->text), "%d %s %s", v.code, r->dsn, last);
			break;
		case LB_V_HOLD:
			r->outcome = R_HOLD;
			router_split_dsn(v.text, "4.3.2", r->dsn, sizeof(r->dsn), r->text, sizeof(r->text));
			break;
		case LB_V_ERROR:
			r->outcome = R_DEFERRED;
			util_strlcpy(r->dsn, "4.3.0", sizeof(r->dsn));
			snprintf(r->text, sizeof(r->text), "route rule %s failed", v.rule[0] ? v.rule : "?");
			break;
		default:
			r->outcome = R_DEFERRED;
			router_split_dsn(v.kind == LB_V_DEFER ? v.text : "no route for this recipient", "4.4.0",
			    r->dsn, sizeof(r->dsn), r->text, sizeof(r->text));
			break;
		}
	}
	/* pending counts this routing step, then every group; the last to finish records. */
	m->pending = 1 + (int)m->ngroups;
	for (i = 0; i < m->ngroups; i++)
		router_group_start(m->groups[i]);
	router_msg_step_done(m);
}

static void
router_load_done(void *arg, int err)
{
	struct router_msg	*m = arg;

	if (err != 0) {
		if (m->not_due)
			;	/* the walk finds it again when its time comes (or its timer, if it has one) */
		else if (m->quarantined)
			log_error("%s: cannot read queue file: %s; moved to %s/corrupt/", m->id, m->why, m->spool);
		else if (err == EINVAL)
			log_error("%s: cannot read queue file: %s (and cannot move it to corrupt/: %s)", m->id, m->why,
			    strerror(m->quarantine_err));
		else if (m->unrecorded != NULL) {	/* the last attempt's lines could not be appended */
			log_error("%s: cannot record delivery state: %s; trying again later", m->id, strerror(err));
			if (idmap_count(router_later) < router_cfg->active_limit)
				router_schedule(m->id, router_retry_delay(1));
		} else if (err != ENOENT)	/* ENOENT: delivered and removed by an earlier pass, or deleted */
			log_error("%s: cannot read queue file: %s", m->id, strerror(err));
		router_msg_free(m);
		return;
	}
	log_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", m->id, m->q.env.sender, m->q.env.size,
	    m->q.env.nrcpts);
	router_route(m);
}

/* router_take - start an attempt on message id (router_intake.c decides when; flush: even before its retry
 * time). 1 if it started. */
int
router_take(const char *id, int flush)
{
	struct router_msg	*m;

	if (router_stop || !queueid_valid(id) || idmap_get(router_busy, router_key(id)) != NULL)
		return 0;
	if (flush)
		router_unschedule(id);
	else if (idmap_get(router_later, router_key(id)) != NULL)
		return 0;		/* its retry time has not come */
	m = xcalloc(1, sizeof(*m));
	util_strlcpy(m->id, id, sizeof(m->id));
	if ((m->unrecorded = idmap_get(router_unrecorded, router_key(id))) != NULL)
		idmap_del(router_unrecorded, router_key(id));
	m->maildir = xstrdup(router_cfg->maildir);
	m->hostname = xstrdup(router_cfg->hostname);
	m->spool = xstrdup(router_cfg->spool);
	m->max_queue_time = router_cfg->max_queue_time;
	m->started = util_monotonic();
	m->flush = flush;
	m->taken = util_now();
	m->due_cap = router_due_horizon();
	idmap_put(router_busy, router_key(id), m);
	iot_submit(router_io, router_load_work, router_load_done, m, NULL);
	return 1;
}

size_t
router_active(void)
{
	return idmap_count(router_busy);
}

/* router_unschedule - forget a message's retry time, so that the next take tries it at once. */
void
router_unschedule(const char *id)
{
	struct event	*ev = idmap_get(router_later, router_key(id));

	if (ev == NULL)
		return;
	idmap_del(router_later, router_key(id));
	free(event_get_callback_arg(ev));
	event_free(ev);
}

static void
router_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	char	 buf[QUEUEID_SIZE + 8];
	ssize_t	 n;

	while ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[n] = '\0';
		intake_hint(buf);	/* only a hint: router_intake.c drains incoming/ every second as well */
	}
}

static void
router_rescan_cb(evutil_socket_t fd, short what, void *arg)
{
	intake_rescan(0);
}

/*
 * router_gauges_cb - once a second, what the queue holds for luamta_queue_messages (docs/investigating.md,
 * "Metrics").
 */
static void
router_gauges_cb(evutil_socket_t fd, short what, void *arg)
{
	metrics_queue_set(MQ_ACTIVE, (long)idmap_count(router_busy));
	metrics_queue_set(MQ_DEFERRED, (long)idmap_count(router_later));
}

/* Process --------------------------------------------------------------------------------------------------- */

static void
router_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;

	if (sig == SIGHUP) {
		log_reopen();
		g = lb_gen_new(router_cfg->path, LB_ROLE_ROUTER, &errors, &warnings);
		free(warnings);
		if (g == NULL) {
			log_error("router reload failed; keeping policy generation %u. %s",
			    lb_gen_number(router_gen), errors ? errors : "");
			metrics_reload(0);
			master_report_reload(0, errors);
			free(errors);
			return;
		}
		log_info("router reload: policy generation %u", lb_gen_number(g));
		metrics_reload(1);
		/* Messages in flight keep copies of what they need from the old configuration. */
		lb_gen_release(router_gen);
		router_gen = g;
		router_cfg = lb_gen_config(g);
		router_self_load();	/* interfaces may have changed */
		intake_set_limit(router_cfg->active_limit);
		intake_rescan(1);	/* held recipients may have a route now */
		master_report_reload(1, NULL);
		return;
	}
	router_stop = 1;
	event_base_loopexit(router_base, NULL);	/* iot_free() below finishes the disk work under way */
}

int
router_main(struct lb_gen *gen, int notify_fd)
{
	struct event		*notify, *rescan, *gauges, *sigs[3];
	struct evconnlistener	*ctl;
	struct timeval		 tv = { ROUTER_RESCAN, 0 }, second = { 1, 0 };
	char			 path[4200];
	int			 i;

	log_set_role("router");
	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned)getpid() ^ (unsigned)util_now());
	router_gen = gen;
	router_cfg = lb_gen_config(gen);
	if (spool_mkdirs(router_cfg->spool, path, sizeof(path)) == -1)
		fatal("router: %s", path);
	router_base = event_base_new();
	router_io = iot_new(router_base);
	router_rec = iot_new(router_base);
	router_body = iot_new(router_base);
	if (dns_init(router_base, router_cfg->dns_servers, router_cfg->dns_timeout, router_cfg->dns_tries, path,
	    sizeof(path)) == -1)
		fatal("%s", path);
	mta_init(router_base);
	router_busy = idmap_new();
	router_later = idmap_new();
	router_unrecorded = idmap_new();
	router_groups = idmap_new();
	notify = event_new(router_base, notify_fd, EV_READ | EV_PERSIST, router_notify_cb, NULL);
	event_add(notify, NULL);
	rescan = event_new(router_base, -1, EV_PERSIST, router_rescan_cb, NULL);
	event_add(rescan, &tv);
	gauges = event_new(router_base, -1, EV_PERSIST, router_gauges_cb, NULL);
	event_add(gauges, &second);
	sigs[0] = evsignal_new(router_base, SIGHUP, router_signal_cb, NULL);
	sigs[1] = evsignal_new(router_base, SIGTERM, router_signal_cb, NULL);
	sigs[2] = evsignal_new(router_base, SIGINT, router_signal_cb, NULL);
	for (i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	ctl = router_ctl_listen();
	if (router_cfg->trace_enabled && trace_open(router_base, router_cfg->trace_dir, router_cfg->trace_keep_days,
	    router_cfg->trace_max_mb, "router", 0, path, sizeof(path)) == -1)
		log_warn("%s; deliveries are not traced", path);
	router_self_load();
	router_sweep_start();	/* on the I/O thread, ahead of the intake's first batches */
	log_info("ready: resuming the queue in %s/queue", router_cfg->spool);
	master_report_ready();
	intake_init(router_base, router_io, router_cfg->spool, router_cfg->active_limit, router_take, router_active,
	    router_due_horizon);

	event_base_dispatch(router_base);

	/* Transactions in flight end here; their recipients were never recorded, so the next start retries them. */
	if (ctl != NULL)
		evconnlistener_free(ctl);
	router_control_path(router_cfg->spool, path, sizeof(path));
	unlink(path);
	intake_stop();
	mta_shutdown();
	iot_free(router_rec);
	iot_free(router_body);
	iot_free(router_io);
	dns_shutdown();
	trace_close();
	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(notify);
	event_free(rescan);
	event_free(gauges);
	lb_gen_release(router_gen);
	router_self_forget();
	log_info("stopped");
	return 0;
}

