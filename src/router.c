/*
 * router.c - the router process. A message enters when a worker sends its queue ID (a datagram), at start-up,
 * and at every rescan (ROUTER_RESCAN seconds). For each message: the I/O thread reads the queue file and the
 * recipient state file (<spool>/state/<id>); the loop asks the route stage (rules/routing.lua) about every
 * recipient still open; the I/O thread delivers the local ones to Maildir, appends one line per final outcome
 * to the state file (fsynced), and removes the message once every recipient has one. A crash between a
 * Maildir write and its state line delivers that recipient again after restart: the one documented window for
 * a duplicate. Remote recipients are deferred (logged) until the SMTP client exists.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "cfg.h"
#include "dns.h"
#include "iothread.h"
#include "lb.h"
#include "lb_types.h"
#include "log.h"
#include "maildir.h"
#include "queueid.h"
#include "router.h"
#include "smtp_proto.h"
#include "spool.h"
#include "util.h"

#define ROUTER_RESCAN		60		/* seconds between two looks at the whole queue */
#define ROUTER_FILE_MAX		(1024ULL * 1024 * 1024)	/* a queue file larger than this is left alone */

enum router_outcome { ROUTER_OPEN, ROUTER_LOCAL, ROUTER_DONE, ROUTER_BOUNCED, ROUTER_DEFERRED };

struct router_rcpt {
	enum router_outcome	 outcome;
	char			 mailbox[512];	/* ROUTER_LOCAL: where to deliver */
	char			 text[LB_TEXT_MAX + 8];	/* reply or reason for logs and the state file */
	int			 err;		/* delivery errno */
};

struct router_msg {
	char			 id[QUEUEID_SIZE];
	char			 path[4200];
	char			 state_path[4200];
	char			*data;		/* owns: the whole queue file */
	size_t			 len;
	struct spool_env	 env;
	struct router_rcpt	*rcpts;		/* owns env.nrcpts */
	int			 err;
	char			 why[256];
	char			*maildir;	/* owns: delivery.maildir when the message was taken */
	double			 started;
};

static struct event_base	*router_base;
static struct lb_gen		*router_gen;
static struct iothread		*router_io;
static struct idmap		*router_busy;	/* id hash -> 1 while a message is being worked on */
static const struct config	*router_cfg;
static int			 router_stop;

static uint64_t
router_key(const char *id)
{
	uint64_t	 h = 1469598103934665603ULL;

	for (; *id; id++) {
		h ^= (unsigned char)*id;
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

/* router_load_work - I/O thread: read the queue file and the state file. */
static int
router_load_work(void *arg)
{
	struct router_msg	*m = arg;
	struct stat		 st;
	FILE			*f;
	char			 line[1024];
	int			 fd;
	size_t			 got = 0;

	if ((fd = open(m->path, O_RDONLY | O_CLOEXEC)) == -1)
		return errno;
	if (fstat(fd, &st) == -1 || (unsigned long long)st.st_size > ROUTER_FILE_MAX) {
		close(fd);
		return EFBIG;
	}
	m->len = (size_t)st.st_size;
	m->data = xmalloc(m->len + 1);
	while (got < m->len) {
		ssize_t	 n = read(fd, m->data + got, m->len - got);

		if (n <= 0) {
			close(fd);
			return n == 0 ? EIO : errno;
		}
		got += (size_t)n;
	}
	close(fd);
	m->data[m->len] = '\0';
	if (spool_env_parse(m->data, m->len, &m->env, m->why, sizeof(m->why)) == -1)
		return EINVAL;
	m->rcpts = xcalloc(m->env.nrcpts, sizeof(*m->rcpts));
	/* State lines: "<index> <outcome> <text>"; a later line for the same index wins. */
	if ((f = fopen(m->state_path, "re")) != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			char		*end;
			unsigned long	 i = strtoul(line, &end, 10);

			if (end == line || i >= m->env.nrcpts)
				continue;
			if (strncmp(end, " delivered", 10) == 0)
				m->rcpts[i].outcome = ROUTER_DONE;
			else if (strncmp(end, " bounced", 8) == 0)
				m->rcpts[i].outcome = ROUTER_BOUNCED;
		}
		fclose(f);
	}
	return 0;
}

static void
router_msg_free(struct router_msg *m)
{
	idmap_del(router_busy, router_key(m->id));
	spool_env_free(&m->env);
	free(m->maildir);
	free(m->rcpts);
	free(m->data);
	free(m);
}

/* router_deliver_work - I/O thread: Maildir writes, state lines, and the removal of a finished message. */
static int
router_deliver_work(void *arg)
{
	struct router_msg	*m = arg;
	const char		*body = m->data + m->env.body_offset;
	size_t			 blen = m->len - m->env.body_offset, i;
	int			 fd, open_left = 0, wrote = 0;
	char			 dir[4200], unique[64], prefix[1200], line[LB_TEXT_MAX + 64];

	if ((fd = open(m->state_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) == -1)
		return errno;
	for (i = 0; i < m->env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];
		int			 n = 0;

		if (r->outcome == ROUTER_LOCAL) {
			if (maildir_path(m->maildir, r->mailbox, dir, sizeof(dir)) == -1)
				r->err = ENAMETOOLONG;
			else {
				snprintf(unique, sizeof(unique), "%s.%zu", m->id, i);
				snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\nDelivered-To: %s\n",
				    m->env.sender, r->mailbox);
				r->err = maildir_deliver(dir, unique, prefix, body, blen);
			}
			if (r->err == 0) {
				r->outcome = ROUTER_DONE;
				n = snprintf(line, sizeof(line), "%zu delivered %s\n", i, r->mailbox);
			}
		} else if (r->outcome == ROUTER_BOUNCED)
			n = snprintf(line, sizeof(line), "%zu bounced %s\n", i, r->text);
		if (n > 0) {
			if ((size_t)n >= sizeof(line))
				line[sizeof(line) - 2] = '\n', n = (int)sizeof(line) - 1;
			(void)!write(fd, line, (size_t)n);
			wrote = 1;
		}
		if (r->outcome != ROUTER_DONE && r->outcome != ROUTER_BOUNCED)
			open_left = 1;
	}
	if (wrote && fsync(fd) == -1) {
		close(fd);
		return errno;
	}
	close(fd);
	if (!open_left) {
		/* Every recipient has its outcome on disk: the message can go (queue file first). */
		unlink(m->path);
		unlink(m->state_path);
	}
	return 0;
}

static void
router_deliver_done(void *arg, int err)
{
	struct router_msg	*m = arg;
	double			 delay = util_now() - m->env.time;
	size_t			 i;

	for (i = 0; i < m->env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];

		if (r->outcome == ROUTER_DONE && r->mailbox[0] != '\0')
			log_info("%s: to=<%s>, relay=local, delay=%.2f, dsn=2.0.0, status=sent (delivered to "
			    "maildir of %s)", m->id, m->env.rcpts[i], delay, r->mailbox);
		else if (r->outcome == ROUTER_LOCAL)
			log_warn("%s: to=<%s>, relay=local, delay=%.2f, dsn=4.3.0, status=deferred (maildir "
			    "write failed: %s)", m->id, m->env.rcpts[i], delay, strerror(r->err));
		else if (r->outcome == ROUTER_BOUNCED && r->text[0] != '\0')
			log_info("%s: to=<%s>, relay=none, delay=%.2f, status=bounced (%s)", m->id,
			    m->env.rcpts[i], delay, r->text);
		else if (r->outcome == ROUTER_DEFERRED)
			log_info("%s: to=<%s>, relay=none, delay=%.2f, status=deferred (%s)", m->id,
			    m->env.rcpts[i], delay, r->text);
	}
	if (err != 0)
		log_error("%s: cannot record delivery state: %s", m->id, strerror(err));
	router_msg_free(m);
}

static int
router_push_route(lua_State *L, void *arg)
{
	struct router_msg	*m = arg;
	size_t			 i = (size_t)(m->err);	/* the recipient index, passed through err */
	const char		*rcpt = m->env.rcpts[i], *at = strrchr(rcpt, '@');
	struct proto_addr	 a;

	memset(&a, 0, sizeof(a));
	util_strlcpy(a.address, rcpt, sizeof(a.address));
	if (at != NULL) {
		size_t	 n = (size_t)(at - rcpt) < sizeof(a.local) - 1 ? (size_t)(at - rcpt) : sizeof(a.local) - 1;

		memcpy(a.local, rcpt, n);
		util_strlcpy(a.domain, at + 1, sizeof(a.domain));
	} else
		util_strlcpy(a.local, rcpt, sizeof(a.local));
	/* The router's message object is a plain table for now: queue_id, sender, size. */
	lua_createtable(L, 0, 3);
	lua_pushstring(L, m->id);
	lua_setfield(L, -2, "queue_id");
	lua_pushstring(L, m->env.sender);
	lua_setfield(L, -2, "sender");
	lua_pushinteger(L, (lua_Integer)(m->len - m->env.body_offset));
	lua_setfield(L, -2, "size");
	lb_addr_push(L, &a);
	return 2;
}

static void
router_route_abandoned(uint64_t owner, const struct lb_verdict *v)
{
	/* Not reached: waiting route rules are cancelled (see router_route). */
}

/* router_route - ask the rules about every open recipient, then hand the message to the I/O thread. */
static void
router_route(struct router_msg *m)
{
	size_t	 i;

	for (i = 0; i < m->env.nrcpts; i++) {
		struct router_rcpt	*r = &m->rcpts[i];
		struct lb_verdict	 v;
		struct lb_run		*run;

		if (r->outcome != ROUTER_OPEN)
			continue;
		m->err = (int)i;
		if (lb_run_start(router_gen, router_base, LB_S_ROUTE, router_push_route, m, 0,
		    router_route_abandoned, &v, &run) == 1) {
			lb_run_cancel(run);
			v.kind = LB_V_DEFER;
			snprintf(v.text, sizeof(v.text), "4.3.0 route rules may not wait yet");
		}
		switch (v.kind) {
		case LB_V_LOCAL:
			r->outcome = ROUTER_LOCAL;
			util_strlcpy(r->mailbox, v.arg, sizeof(r->mailbox));
			break;
		case LB_V_BOUNCE:
		case LB_V_REJECT:
			r->outcome = ROUTER_BOUNCED;
			snprintf(r->text, sizeof(r->text), "%d %s", v.code, v.text);
			break;
		case LB_V_ERROR:
			r->outcome = ROUTER_DEFERRED;
			snprintf(r->text, sizeof(r->text), "4.3.0 route rule failed");
			break;
		default:
			r->outcome = ROUTER_DEFERRED;
			snprintf(r->text, sizeof(r->text), "%s", v.kind == LB_V_DEFER ? v.text :
			    "4.4.0 no route for this recipient");
			break;
		}
	}
	m->err = 0;
	iot_submit(router_io, router_deliver_work, router_deliver_done, m, NULL);
}

static void
router_load_done(void *arg, int err)
{
	struct router_msg	*m = arg;

	if (err != 0) {
		if (err != ENOENT)	/* ENOENT: delivered and removed by an earlier pass */
			log_error("%s: cannot read queue file: %s", m->id, err == EINVAL ? m->why : strerror(err));
		router_msg_free(m);
		return;
	}
	router_route(m);
}

static void
router_take(const char *id)
{
	struct router_msg	*m;

	if (router_stop || !queueid_valid(id) || idmap_get(router_busy, router_key(id)) != NULL)
		return;
	m = xcalloc(1, sizeof(*m));
	util_strlcpy(m->id, id, sizeof(m->id));
	snprintf(m->path, sizeof(m->path), "%s/queue/%s", router_cfg->spool, id);
	snprintf(m->state_path, sizeof(m->state_path), "%s/state/%s", router_cfg->spool, id);
	m->maildir = xstrdup(router_cfg->maildir);
	m->started = util_monotonic();
	idmap_put(router_busy, router_key(id), m);
	iot_submit(router_io, router_load_work, router_load_done, m, NULL);
}

/* router_scan - every message in the queue. Reading a directory is quick next to delivering, so it stays on
 * the loop; the file work itself goes to the I/O thread. */
static void
router_scan(void)
{
	char		 path[4200];
	DIR		*d;
	struct dirent	*de;

	snprintf(path, sizeof(path), "%s/queue", router_cfg->spool);
	if ((d = opendir(path)) == NULL) {
		log_error("router: cannot read %s: %s", path, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL)
		router_take(de->d_name);
	closedir(d);
}

static void
router_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	char	 buf[QUEUEID_SIZE + 8];
	ssize_t	 n;

	while ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[n] = '\0';
		router_take(buf);
	}
}

static void
router_rescan_cb(evutil_socket_t fd, short what, void *arg)
{
	router_scan();
}

static void
router_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;

	if (sig == SIGHUP) {
		g = lb_gen_new(router_cfg->path, LB_ROLE_ROUTER, &errors, &warnings);
		free(warnings);
		if (g == NULL) {
			log_error("router reload failed; keeping policy generation %u. %s",
			    lb_gen_number(router_gen), errors ? errors : "");
			free(errors);
			return;
		}
		log_info("router reload: policy generation %u", lb_gen_number(g));
		lb_gen_release(router_gen);
		router_gen = g;
		router_cfg = lb_gen_config(g);
		return;
	}
	router_stop = 1;
	event_base_loopexit(router_base, NULL);	/* iot_free() below finishes the disk work under way */
}

int
router_main(struct lb_gen *gen, int notify_fd)
{
	struct event	*notify, *rescan, *sigs[3];
	struct timeval	 tv = { ROUTER_RESCAN, 0 };
	char		 path[4200];
	int		 i;

	log_set_role("router");
	signal(SIGPIPE, SIG_IGN);
	router_gen = gen;
	router_cfg = lb_gen_config(gen);
	snprintf(path, sizeof(path), "%s/state", router_cfg->spool);
	if (util_mkdirs(path, 0700) == -1)
		fatal("router: cannot create %s: %s", path, strerror(errno));
	router_base = event_base_new();
	router_io = iot_new(router_base);
	if (dns_init(router_base, router_cfg->dns_servers, router_cfg->dns_timeout, router_cfg->dns_tries, path,
	    sizeof(path)) == -1)
		fatal("%s", path);
	router_busy = idmap_new();
	notify = event_new(router_base, notify_fd, EV_READ | EV_PERSIST, router_notify_cb, NULL);
	event_add(notify, NULL);
	rescan = event_new(router_base, -1, EV_PERSIST, router_rescan_cb, NULL);
	event_add(rescan, &tv);
	sigs[0] = evsignal_new(router_base, SIGHUP, router_signal_cb, NULL);
	sigs[1] = evsignal_new(router_base, SIGTERM, router_signal_cb, NULL);
	sigs[2] = evsignal_new(router_base, SIGINT, router_signal_cb, NULL);
	for (i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	log_info("ready: resuming the queue in %s/queue", router_cfg->spool);
	router_scan();

	event_base_dispatch(router_base);

	iot_free(router_io);
	dns_shutdown();
	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(notify);
	event_free(rescan);
	lb_gen_release(router_gen);
	event_base_free(router_base);
	log_info("stopped");
	return 0;
}
