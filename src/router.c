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
 *     whose every recipient has an outcome is removed, its queue file first.
 * Deferred recipients are tried again after routing.retry[attempt] seconds, until routing.max_queue_time, when
 * they bounce; a delay warning goes out once after routing.delay_warning. A crash between a delivery and its
 * state line delivers that recipient again after restart (docs/reliability.md). At start, a sweep on the I/O
 * thread removes what a crash leaves behind: state files of finished messages and partial Maildir files.
 *	router_main()	the process
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <lauxlib.h>
#include <lua.h>

#include "cfg.h"
#include "dns.h"
#include "dsn.h"
#include "iothread.h"
#include "lb.h"
#include "lb_types.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "master.h"
#include "maildir.h"
#include "mta.h"
#include "queueid.h"
#include "router.h"
#include "router_intake.h"
#include "smtp_proto.h"
#include "spool.h"
#include "util.h"

#define ROUTER_RESCAN		60	/* seconds between two looks at the whole queue */
#define ROUTER_HOLD_RECHECK	3600	/* a held recipient is routed again after this, or on flush/reload */
#define ROUTER_MX_MAX		8	/* MX hosts looked up per destination */
#define ROUTER_CTL_LINE		256

enum router_outcome {
	R_OPEN,		/* nothing decided yet in this attempt */
	R_LOCAL,	/* for the Maildir job */
	R_RELAY,	/* in an SMTP group */
	R_SENT,		/* delivered by SMTP in this attempt: to record */
	R_FAILED,	/* failed in this attempt: to bounce and record */
	R_DEFERRED,	/* to try again later */
	R_HOLD,		/* kept by the route rule until an administrator acts */
	R_DONE,		/* delivered, on record */
	R_BOUNCED,	/* failed, on record (and bounced) */
};

struct router_rcpt {
	enum router_outcome	 outcome;
	char			 mailbox[512];		/* R_LOCAL: the Maildir owner */
	char			 dsn[16];
	char			 text[MTA_TEXT_MAX + 1];	/* reply or reason */
	char			 relay[400];		/* "host[ip]:port", "local" or "none" */
	char			 remote[256];		/* next hop name for the bounce */
	char			 tls[160];		/* SMTP: what TLS the transaction used, or "none" */
};

struct router_msg;

/* One SMTP transaction: the recipients of one message that go to one next hop. */
struct router_group {
	uint64_t		 id;		/* for DNS answers and the mta callback */
	struct router_msg	*m;		/* borrowed: the message waits for all its groups */
	enum lb_relay_mode	 mode;
	char			 host[256];
	int			 port;
	char			 key[540];	/* the next hop, for routing.max_per_domain */
	size_t			*idx;		/* owns n recipient indexes */
	size_t			 n;
	/* DNS: MX hosts in order, then their addresses */
	char			 mx[ROUTER_MX_MAX][256];
	int			 mxpref[ROUTER_MX_MAX];	/* MX preference; 0 for a host used without MX */
	int			 mxfailed[ROUTER_MX_MAX];	/* its address lookup failed for now */
	size_t			 nmx;
	struct mta_addr		(*found)[4];	/* owns nmx rows: per MX host, A then AAAA answers (sized to
						 * the MX list: a waiting group is small) */
	size_t			 nfound[ROUTER_MX_MAX];
	int			 dns_pending;
	int			 dns_failed;	/* a lookup timed out or failed */
	int			 dns_nxdomain;	/* every address lookup said the name does not exist */
	struct router_group	*next_wait;	/* waiting for a connection slot */
	int			 ready;		/* DNS is done; the transaction ran or runs */
	int			 lmtp;		/* local recipients to delivery.lmtp: their mailboxes, over LMTP */
};

struct router_msg {
	char			 id[QUEUEID_SIZE];
	struct spool_msg	 q;		/* owns: the queue file (whole), its envelope and state */
	struct router_rcpt	*rcpts;		/* owns env.nrcpts */
	char			*maildir;	/* owns: delivery.maildir when the message was taken */
	char			*hostname;	/* owns: server.hostname, for bounces */
	char			*spool;		/* owns: server.spool (a reload may free the configuration) */
	double			 max_queue_time;
	int			 attempts;	/* attempts on record (state file) */
	int			 warned;	/* a delay warning went out */
	int			 want_warning;	/* this attempt sends one */
	int			 pending;	/* jobs and groups still running in this attempt */
	int			 err;
	char			 why[256];
	char			 bounce_id[QUEUEID_SIZE];	/* reports queued by this attempt, for the loop */
	char			 warning_id[QUEUEID_SIZE];
	struct router_group	**groups;	/* owns ngroups */
	size_t			 ngroups;
	int			 deleted;	/* `luamta queue delete` arrived while busy */
	int			 expired;	/* past routing.max_queue_time */
	double			 started;
	size_t			 route_i;	/* recipient index the route stage is looking at */
	double			 due_retry;	/* when the next attempt is if recipients are deferred */
	double			 due_hold;	/* ... if they are only held */
	int			 quarantined;	/* the load moved an unreadable file to corrupt/ */
	int			 quarantine_err;
};

static struct event_base	*router_base;
static struct lb_gen		*router_gen;
static struct iothread		*router_io;	/* loads, control commands, the start-up sweep */
static struct iothread		*router_rec;	/* records only: outcomes never wait behind loads */
static struct iothread		*router_body;	/* chunks of messages being sent: never behind a walk or a load */
static struct idmap		*router_busy;	/* id hash -> message being worked on */
static struct idmap		*router_later;	/* id hash -> (void *) timer event for its next attempt */
static struct idmap		*router_groups;	/* group id -> group */
static uint64_t			 router_next_gid;
static const struct config	*router_cfg;
static int			 router_stop;
static struct router_group	*router_waiting;	/* groups waiting for a connection slot */
static struct idmap		*router_dest;	/* next hop key hash -> (intptr_t) transactions in flight */

static int	router_take(const char *id, int flush);
static size_t	router_active(void);
static size_t	router_body_len(const struct router_msg *);
static void	router_delete_files(const char *id);
static void	router_unschedule(const char *id);
static void	router_group_ready(struct router_group *);
static void	router_msg_step_done(struct router_msg *);

void
router_control_path(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/control.sock", spool);
}

static uint64_t
router_key(const char *s)
{
	return util_hash64(s, 0);
}

/* Our own addresses ------------------------------------------------------------------------------------------- */

/*
 * A next hop is this server when its address and port are one of server.listen's: the address itself, or for a
 * wildcard listener (0.0.0.0, [::]) any address of the machine's interfaces or of loopback (127.0.0.0/8, ::1),
 * and 0.0.0.0 or :: as a next hop, which connect() takes to mean this machine. The same address on another port
 * is someone else (a second MTA on 127.0.0.1, as the tests use). The interface addresses are read when the
 * router starts and at every reload; an address added in between is not known until then.
 */
struct router_ifaddr {
	int		 family;
	unsigned char	 addr[16];
};

static struct router_ifaddr	*router_ifaddrs;	/* owns router_nifaddrs */
static size_t			 router_nifaddrs;

/* router_self_load - read the interface addresses (getifaddrs is a netlink question, answered from memory). */
static void
router_self_load(void)
{
	struct ifaddrs	*ifa, *p;
	size_t		 n = 0;

	free(router_ifaddrs);
	router_ifaddrs = NULL;
	router_nifaddrs = 0;
	if (getifaddrs(&ifa) == -1) {
		log_error("router: cannot read the interface addresses: %s; only server.listen and loopback count as "
		    "this server", strerror(errno));
		return;
	}
	for (p = ifa; p != NULL; p = p->ifa_next)
		if (p->ifa_addr != NULL && (p->ifa_addr->sa_family == AF_INET || p->ifa_addr->sa_family == AF_INET6))
			n++;
	router_ifaddrs = xcalloc(n ? n : 1, sizeof(*router_ifaddrs));
	for (p = ifa; p != NULL; p = p->ifa_next) {
		struct router_ifaddr	*a = &router_ifaddrs[router_nifaddrs];

		if (p->ifa_addr == NULL)
			continue;
		if (p->ifa_addr->sa_family == AF_INET) {
			a->family = AF_INET;
			memcpy(a->addr, &((struct sockaddr_in *)(void *)p->ifa_addr)->sin_addr, 4);
		} else if (p->ifa_addr->sa_family == AF_INET6) {
			a->family = AF_INET6;
			memcpy(a->addr, &((struct sockaddr_in6 *)(void *)p->ifa_addr)->sin6_addr, 16);
		} else
			continue;
		router_nifaddrs++;
	}
	freeifaddrs(ifa);
}

/* router_parse_ip - a numeric address; an IPv4-mapped IPv6 address is taken as the IPv4 one. Family, or 0. */
static int
router_parse_ip(const char *ip, unsigned char out[16])
{
	static const unsigned char	 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (inet_pton(AF_INET, ip, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, ip, out) != 1)
		return 0;
	if (memcmp(out, mapped, sizeof(mapped)) == 0) {
		memmove(out, out + 12, 4);
		return AF_INET;
	}
	return AF_INET6;
}

static int
router_ip_any(int family, const unsigned char *a)
{
	static const unsigned char	 zero[16];

	return memcmp(a, zero, family == AF_INET ? 4 : 16) == 0;
}

static int
router_ip_loopback(int family, const unsigned char *a)
{
	static const unsigned char	 one[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };

	return family == AF_INET ? a[0] == 127 : memcmp(a, one, 16) == 0;
}

/* router_is_self - is ip:port (a numeric next hop) one of our own listening addresses? */
static int
router_is_self(const char *ip, int port)
{
	unsigned char	 a[16], la[16];
	int		 fam, lfam;
	size_t		 i, k, len;

	if ((fam = router_parse_ip(ip, a)) == 0)
		return 0;
	len = fam == AF_INET ? 4 : 16;
	for (i = 0; i < router_cfg->nlisten; i++) {
		const struct cfg_listen	*l = &router_cfg->listen[i];

		if (l->port != port || (lfam = router_parse_ip(l->host, la)) != fam)
			continue;
		if (memcmp(a, la, len) == 0)
			return 1;
		if (!router_ip_any(fam, la))
			continue;
		/* A wildcard listener takes connections to every local address. */
		if (router_ip_any(fam, a) || router_ip_loopback(fam, a))
			return 1;
		for (k = 0; k < router_nifaddrs; k++)
			if (router_ifaddrs[k].family == fam && memcmp(router_ifaddrs[k].addr, a, len) == 0)
				return 1;
	}
	/* 0.0.0.0 and :: as a destination reach this machine's loopback. */
	if (router_ip_any(fam, a)) {
		for (i = 0; i < router_cfg->nlisten; i++) {
			const struct cfg_listen	*l = &router_cfg->listen[i];

			if (l->port == port && (lfam = router_parse_ip(l->host, la)) == fam && router_ip_loopback(fam, la))
				return 1;
		}
	}
	return 0;
}

/* Start-up sweep --------------------------------------------------------------------------------------------- */

/*
 * What a crash can leave that no later step removes, swept once when the router starts (docs/reliability.md):
 *  - state/<id> with neither incoming/<id>, queue/<id> nor hold/<id>: a finished (or deleted) message whose queue file went
 *    first, as it must (the other order would deliver it again to every recipient), and the kill landed
 *    before its state file followed;
 *  - in every Maildir of delivery.maildir, tmp/ files of our own name pattern and host (maildir_name_ours())
 *    whose writer is no longer running (a router killed inside maildir_deliver(); the recipient is delivered
 *    again under a new name, so the partial file can never complete), or that are older than 36 hours, as
 *    Maildir allows. Files of other programs and hosts are left alone.
 * The sweep runs on the I/O thread in steps of ROUTER_SWEEP_STEP directory entries, each its own job, so loads,
 * records and control commands go between two steps; it holds one open directory per level of the walk and
 * never a listing. It shares the I/O thread with the control commands, so hold and release (renames between
 * queue/ and hold/) never run in the middle of its look at a message.
 */
#define ROUTER_SWEEP_STEP	256
#define ROUTER_SWEEP_DEPTH	16		/* template levels below the first one with a '%' */
#define ROUTER_SWEEP_LOG	50		/* removals logged one by one; the rest are counted */
#define ROUTER_TMP_AGE		(36 * 3600)	/* seconds (Maildir: "a file in tmp/ untouched for 36 hours") */

struct router_sweep_level {
	DIR		*d;		/* owns */
	size_t		 comp;		/* the template component its entries stand for; ncomps: a tmp/ directory */
	size_t		 len;		/* length of path at this level */
};

struct router_sweep {
	char			 spool[4200];
	char			 path[4400];
	char			 tmpl[4200];		/* delivery.maildir, cut into components at each '/' */
	char			*comps[ROUTER_SWEEP_DEPTH];
	size_t			 ncomps;
	char			 host[256];
	int			 phase;			/* 0 not begun, 1 state/, 2 the Maildirs, 3 done */
	int			 relative;		/* delivery.maildir does not start with '/' */
	struct router_sweep_level lv[ROUTER_SWEEP_DEPTH + 2];
	size_t			 depth;
	unsigned long		 states, partials;
	struct evbuffer		*log;			/* lines for the loop to log after each step */
	unsigned		 logged;
	time_t			 now;
};

static void
router_sweep_note(struct router_sweep *sw, const char *line)
{
	if (sw->logged++ < ROUTER_SWEEP_LOG)
		evbuffer_add_printf(sw->log, "%s\n", line);
}

/* router_sweep_open - push the directory at path (its length len) for component comp; 0, or -1 if absent. */
static int
router_sweep_open(struct router_sweep *sw, size_t comp, size_t len)
{
	DIR	*d;

	if (sw->depth == sizeof(sw->lv) / sizeof(sw->lv[0]) || (d = opendir(sw->path)) == NULL)
		return -1;
	sw->lv[sw->depth].d = d;
	sw->lv[sw->depth].comp = comp;
	sw->lv[sw->depth].len = len;
	sw->depth++;
	return 0;
}

/* router_sweep_descend - path names a directory for components [0, comp): add the literal components that
 * follow, then open it for the next wildcard one, or its tmp/ when the template is used up. */
static void
router_sweep_descend(struct router_sweep *sw, size_t comp)
{
	size_t	 len = strlen(sw->path);
	int	 n;

	for (; comp < sw->ncomps && strchr(sw->comps[comp], '%') == NULL; comp++) {
		n = snprintf(sw->path + len, sizeof(sw->path) - len, "/%s", sw->comps[comp]);
		if (n < 0 || (size_t)n >= sizeof(sw->path) - len)
			return;
		len += (size_t)n;
	}
	if (comp == sw->ncomps) {
		n = snprintf(sw->path + len, sizeof(sw->path) - len, "/tmp");
		if (n < 0 || (size_t)n >= sizeof(sw->path) - len)
			return;
		len += (size_t)n;
	}
	router_sweep_open(sw, comp, len);
}

/* router_sweep_tmp_file - one entry of a Maildir's tmp/ (path ends with "/tmp"). */
static void
router_sweep_tmp_file(struct router_sweep *sw, DIR *d, const char *name)
{
	struct stat	 st;
	char		 qid[QUEUEID_SIZE], line[4600];
	long		 pid;
	int		 gone;

	if (!maildir_name_ours(name, sw->host, &pid, qid))
		return;
	if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(st.st_mode))
		return;
	gone = pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) == -1 && errno == ESRCH;
	if (!gone && sw->now - st.st_mtime <= ROUTER_TMP_AGE)
		return;		/* its writer may still be at work */
	if (unlinkat(dirfd(d), name, 0) == -1)
		return;
	sw->partials++;
	snprintf(line, sizeof(line), "%s: removed a partial Maildir file %s/%s (%s)", qid, sw->path, name,
	    gone ? "its writer is gone" : "older than 36 hours");
	router_sweep_note(sw, line);
}

/* router_sweep_state - one entry of state/. */
static void
router_sweep_state(struct router_sweep *sw, DIR *d, const char *name)
{
	char		 p[4300];

	if (!spool_state_sweep(sw->spool, name))
		return;
	sw->states++;
	snprintf(p, sizeof(p), "%s: removed the state file of a finished message (no queue file)", name);
	router_sweep_note(sw, p);
}

static int
router_sweep_work(void *arg)
{
	struct router_sweep	*sw = arg;
	struct dirent		*de;
	size_t			 n = 0;

	while (n < ROUTER_SWEEP_STEP && sw->phase < 3) {
		struct router_sweep_level	*lv;

		if (sw->depth == 0) {
			/* The next phase: state/, then the Maildir template from its fixed part. */
			if (++sw->phase == 1) {
				spool_dir_path(sw->spool, SPOOL_D_STATE, sw->path, sizeof(sw->path));
				router_sweep_open(sw, 0, strlen(sw->path));
			} else if (sw->phase == 2 && sw->ncomps > 0) {
				util_strlcpy(sw->path, sw->relative ? "." : "", sizeof(sw->path));
				router_sweep_descend(sw, 0);
			}
			continue;
		}
		lv = &sw->lv[sw->depth - 1];
		if ((de = readdir(lv->d)) == NULL) {
			closedir(lv->d);
			sw->depth--;
			continue;
		}
		n++;
		if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
			continue;
		sw->path[lv->len] = '\0';
		if (sw->phase == 1)
			router_sweep_state(sw, lv->d, de->d_name);
		else if (lv->comp == sw->ncomps)
			router_sweep_tmp_file(sw, lv->d, de->d_name);
		else if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN || de->d_type == DT_LNK) {
			size_t	 len = lv->len;
			int	 k = snprintf(sw->path + len, sizeof(sw->path) - len, "/%s", de->d_name);

			if (k > 0 && (size_t)k < sizeof(sw->path) - len)
				router_sweep_descend(sw, lv->comp + 1);
		}
	}
	return 0;
}

static void
router_sweep_done(void *arg, int err)
{
	struct router_sweep	*sw = arg;
	char			*line;

	while ((line = evbuffer_readln(sw->log, NULL, EVBUFFER_EOL_LF)) != NULL) {
		log_notice("%s", line);
		free(line);
	}
	if (sw->phase < 3 && !router_stop) {
		iot_submit(router_io, router_sweep_work, router_sweep_done, sw, NULL);
		return;
	}
	if (sw->states > 0 || sw->partials > 0)
		log_notice("start-up sweep removed %lu state file(s) of finished messages and %lu partial "
		    "Maildir file(s)", sw->states, sw->partials);
	while (sw->depth > 0)
		closedir(sw->lv[--sw->depth].d);
	evbuffer_free(sw->log);
	free(sw);
}

/* router_sweep_start - the start-up sweep (above), for the configuration at start. */
static void
router_sweep_start(void)
{
	struct router_sweep	*sw = xcalloc(1, sizeof(*sw));
	char			*p, *save = NULL;

	util_strlcpy(sw->spool, router_cfg->spool, sizeof(sw->spool));
	maildir_host(sw->host, sizeof(sw->host));
	sw->now = time(NULL);
	sw->log = evbuffer_new();
	/* Maildirs: the template's components ("/srv/mail/%d/%u" -> "srv" "mail" "%d" "%u"); an absolute one
	 * starts from "/" (path "" + "/srv"), a relative one from the working directory. */
	util_strlcpy(sw->tmpl, router_cfg->maildir ? router_cfg->maildir : "", sizeof(sw->tmpl));
	sw->relative = sw->tmpl[0] != '/';
	for (p = strtok_r(sw->tmpl, "/", &save); p != NULL; p = strtok_r(NULL, "/", &save)) {
		if (sw->ncomps == ROUTER_SWEEP_DEPTH) {
			log_error("router: delivery.maildir has more than %d levels; its tmp/ directories are not swept",
			    ROUTER_SWEEP_DEPTH);
			sw->ncomps = 0;
			break;
		}
		sw->comps[sw->ncomps++] = p;
	}
	iot_submit(router_io, router_sweep_work, router_sweep_done, sw, NULL);
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

static void
router_msg_free(struct router_msg *m)
{
	size_t	 i;

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
		for (i = 0; i < m->q.env.nrcpts; i++)
			if (m->rcpts[i].outcome == R_FAILED)
				m->rcpts[i].outcome = R_DEFERRED;	/* try the bounce again next time */
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
	if (open_left)
		evbuffer_add(state, line, qf_state_event(line, sizeof(line), "attempt", util_now()));
	err = spool_state_append(m->spool, m->id, (const char *)evbuffer_pullup(state, -1),
	    evbuffer_get_length(state));
	evbuffer_free(state);
	if (err != 0)
		return err;
	if (!open_left)	/* every recipient has its outcome on disk: the message goes */
		return spool_finish(m->spool, m->id);
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
static void
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

/* SMTP groups ------------------------------------------------------------------------------------------------ */

static void
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
	intptr_t	 n = (intptr_t)idmap_get(router_dest, k) + delta;

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

/* router_group_send - one SMTP transaction for the group, or wait for a slot to its next hop. */
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

static size_t
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
	char	 text[600];

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
		    "server: temporary DNS failure", g->host);
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
	char	 text[600];

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
		snprintf(text, sizeof(text), "Host or domain name lookup failed for %s: temporary DNS failure", g->host);
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
			g->dns_failed = 1;
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
		else if (res->status == DNS_TIMEOUT || res->status == DNS_SERVFAIL)
			g->dns_failed = g->mxfailed[i] = 1;
	}
	if (g->dns_pending == 0)
		router_group_ready(g);
}

/* router_group_start - find the next hop's addresses (or use the literal one), then deliver. */
static void
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
		if (m->quarantined)
			log_error("%s: cannot read queue file: %s; moved to %s/corrupt/", m->id, m->why, m->spool);
		else if (err == EINVAL)
			log_error("%s: cannot read queue file: %s (and cannot move it to corrupt/: %s)", m->id, m->why,
			    strerror(m->quarantine_err));
		else if (err != ENOENT)	/* ENOENT: delivered and removed by an earlier pass, or deleted */
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
static int
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
	m->maildir = xstrdup(router_cfg->maildir);
	m->hostname = xstrdup(router_cfg->hostname);
	m->spool = xstrdup(router_cfg->spool);
	m->max_queue_time = router_cfg->max_queue_time;
	m->started = util_monotonic();
	idmap_put(router_busy, router_key(id), m);
	iot_submit(router_io, router_load_work, router_load_done, m, NULL);
	return 1;
}

static size_t
router_active(void)
{
	return idmap_count(router_busy);
}

/* router_unschedule - forget a message's retry time, so that the next take tries it at once. */
static void
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

/* router_gauges_cb - once a second, what the queue holds for luamta_queue_messages (docs/investigating.md, "Metrics"). */
static void
router_gauges_cb(evutil_socket_t fd, short what, void *arg)
{
	metrics_queue_set(MQ_ACTIVE, (long)idmap_count(router_busy));
	metrics_queue_set(MQ_DEFERRED, (long)idmap_count(router_later));
}

/* Control socket: `luamta queue flush|delete|hold|release`. One line in, one line out. The file work (does the
 * message exist, move it, remove it) runs on the I/O thread; the answer goes out when it is done. */

struct router_ctl {
	uint64_t		 id;
	struct bufferevent	*bev;		/* owns */
};

static struct idmap	*router_ctls;
static uint64_t		 router_next_ctl;

enum router_op { ROUTER_OP_FLUSH, ROUTER_OP_DELETE, ROUTER_OP_HOLD, ROUTER_OP_RELEASE };

struct router_move {
	enum router_op	 op;
	char		 id[QUEUEID_SIZE];
	char		*spool;		/* owns: server.spool when it was asked */
	uint64_t	 ctl;		/* who gets the answer; 0 for none */
	int		 busy;		/* the message is being delivered: delete marks it instead */
	char		 answer[200];
};

static void
router_ctl_answer(uint64_t ctl, const char *answer)
{
	struct router_ctl	*c = ctl ? idmap_get(router_ctls, ctl) : NULL;

	if (c == NULL)
		return;		/* the client went away */
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\n", answer);
	bufferevent_disable(c->bev, EV_READ);	/* the write callback closes once the answer is out */
}

static int
router_move_work(void *arg)
{
	struct router_move	*mv = arg;
	enum spool_where	 w = spool_where(mv->spool, mv->id);
	int			 in_queue = w == SPOOL_W_QUEUE || w == SPOOL_W_INCOMING, in_hold = w == SPOOL_W_HOLD, err;

	switch (mv->op) {
	case ROUTER_OP_FLUSH:
		snprintf(mv->answer, sizeof(mv->answer), in_queue ? "ok: flushing" : in_hold ?
		    "error: %s is held; release it first" : "error: no message %s in the queue", mv->id);
		return 0;
	case ROUTER_OP_DELETE:
		if (!in_queue && !in_hold)
			break;
		if (mv->busy) {
			snprintf(mv->answer, sizeof(mv->answer), "ok: deleted once the delivery in progress ends");
			return 0;
		}
		if ((err = spool_delete(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: deleted");
		return 0;
	case ROUTER_OP_HOLD:
		if (!in_queue)
			break;
		if ((err = spool_hold(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: held");
		return 0;
	case ROUTER_OP_RELEASE:
		if (!in_hold)
			break;
		if ((err = spool_release(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: released");
		return 0;
	}
	snprintf(mv->answer, sizeof(mv->answer), "error: no message %s %s", mv->id,
	    mv->op == ROUTER_OP_RELEASE ? "is held" : "in the queue");
	return 0;
}

static void
router_move_done(void *arg, int err)
{
	struct router_move	*mv = arg;
	static const char *const verbs[] = { "flushed", "deleted", "held", "released" };
	char			 answer[300];

	if (err != 0)
		snprintf(answer, sizeof(answer), "error: %s", strerror(err));
	else
		util_strlcpy(answer, mv->answer, sizeof(answer));
	if (err == 0 && strncmp(answer, "ok", 2) == 0) {
		if (mv->op != ROUTER_OP_FLUSH)
			log_info("%s: %s by the administrator", mv->id, verbs[mv->op]);
		if (mv->op == ROUTER_OP_FLUSH || mv->op == ROUTER_OP_RELEASE)
			router_take(mv->id, 1);
		if (mv->op == ROUTER_OP_DELETE && mv->busy) {
			struct router_msg	*m = idmap_get(router_busy, router_key(mv->id));

			if (m != NULL)
				m->deleted = 1;
			else
				router_delete_files(mv->id);	/* it finished meanwhile */
		}
	}
	router_ctl_answer(mv->ctl, answer);
	free(mv->spool);
	free(mv);
}

static void
router_delete_files(const char *id)
{
	struct router_move	*mv = xcalloc(1, sizeof(*mv));

	mv->op = ROUTER_OP_DELETE;
	util_strlcpy(mv->id, id, sizeof(mv->id));
	mv->spool = xstrdup(router_cfg->spool);
	iot_submit(router_io, router_move_work, router_move_done, mv, NULL);
}

/* router_requeue_done - a requeue is a flush that says so: the attempt routes each open recipient with the rules
 * loaded now (the router keeps no routing decision between attempts). */
static void
router_requeue_done(void *arg, int err)
{
	struct router_move	*mv = arg;

	if (err == 0 && strncmp(mv->answer, "ok", 2) == 0) {
		log_info("%s: requeued by the administrator", mv->id);
		util_strlcpy(mv->answer, "ok: requeued", sizeof(mv->answer));
	}
	router_move_done(mv, err);
}

static void
router_control(uint64_t ctl, const char *cmd, const char *id)
{
	static const struct { const char *name; enum router_op op; } ops[] = {
		{ "flush", ROUTER_OP_FLUSH }, { "delete", ROUTER_OP_DELETE }, { "hold", ROUTER_OP_HOLD },
		{ "release", ROUTER_OP_RELEASE }, { "requeue", ROUTER_OP_FLUSH },
	};
	struct router_move	*mv;
	size_t			 i;

	if (strcmp(cmd, "flush") == 0 && id == NULL) {
		intake_rescan(1);
		router_ctl_answer(ctl, "ok: flushing the whole queue");
		return;
	}
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(cmd, ops[i].name) == 0)
			break;
	if (i == sizeof(ops) / sizeof(ops[0]) && strcmp(cmd, "active") != 0) {
		router_ctl_answer(ctl, "error: unknown command; expected flush, delete, hold, release, requeue or "
		    "active");
		return;
	}
	if (id == NULL || !queueid_valid(id)) {
		router_ctl_answer(ctl, "error: expected a queue ID");
		return;
	}
	if (strcmp(cmd, "active") == 0) {	/* luamta queue --state active: is it being delivered now? */
		router_ctl_answer(ctl, idmap_get(router_busy, router_key(id)) != NULL ? "ok: active" :
		    "ok: not active");
		return;
	}
	mv = xcalloc(1, sizeof(*mv));
	mv->op = ops[i].op;
	mv->ctl = ctl;
	util_strlcpy(mv->id, id, sizeof(mv->id));
	mv->spool = xstrdup(router_cfg->spool);
	mv->busy = idmap_get(router_busy, router_key(id)) != NULL;
	/* A flush or requeue of a message in the middle of an attempt would do nothing: say so. */
	if ((mv->op == ROUTER_OP_HOLD || mv->op == ROUTER_OP_FLUSH) && mv->busy) {
		free(mv->spool);
		free(mv);
		router_ctl_answer(ctl, "error: being delivered now; try again in a moment");
		return;
	}
	if (mv->op != ROUTER_OP_RELEASE)
		router_unschedule(id);
	iot_submit(router_io, router_move_work, strcmp(cmd, "requeue") == 0 ? router_requeue_done :
	    router_move_done, mv, NULL);
}

static void
router_ctl_close(struct router_ctl *c)
{
	idmap_del(router_ctls, c->id);
	bufferevent_free(c->bev);
	free(c);
}

static void
router_ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct router_ctl	*c = arg;
	char			*line, *cmd, *id, *save = NULL;
	size_t			 len;

	if ((line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_ANY)) == NULL) {
		if (evbuffer_get_length(bufferevent_get_input(bev)) > ROUTER_CTL_LINE)
			router_ctl_close(c);
		return;
	}
	bufferevent_disable(bev, EV_READ);	/* one command per connection */
	cmd = strtok_r(line, " ", &save);
	id = strtok_r(NULL, " ", &save);
	if (cmd == NULL)
		router_ctl_answer(c->id, "error: empty command");
	else
		router_control(c->id, cmd, id);
	free(line);
}

static void
router_ctl_write_cb(struct bufferevent *bev, void *arg)
{
	struct router_ctl	*c = arg;

	if (!(bufferevent_get_enabled(bev) & EV_READ) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		router_ctl_close(c);	/* the answer is out */
}

static void
router_ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	router_ctl_close(arg);
}

static void
router_ctl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct router_ctl	*c = xcalloc(1, sizeof(*c));

	c->id = ++router_next_ctl;
	c->bev = bufferevent_socket_new(router_base, fd, BEV_OPT_CLOSE_ON_FREE);
	idmap_put(router_ctls, c->id, c);
	bufferevent_setcb(c->bev, router_ctl_read_cb, router_ctl_write_cb, router_ctl_event_cb, c);
	bufferevent_enable(c->bev, EV_READ);
}

static struct evconnlistener *
router_ctl_listen(void)
{
	struct sockaddr_un	 sun;
	struct evconnlistener	*l;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	router_control_path(router_cfg->spool, sun.sun_path, sizeof(sun.sun_path));
	unlink(sun.sun_path);
	router_ctls = idmap_new();
	l = evconnlistener_new_bind(router_base, router_ctl_accept, NULL, LEV_OPT_CLOSE_ON_FREE, 16,
	    (struct sockaddr *)&sun, sizeof(sun));
	if (l == NULL)
		log_error("router: cannot listen on %s: %s; luamta queue flush/delete/hold/release will not work",
		    sun.sun_path, strerror(errno));
	else
		chmod(sun.sun_path, 0600);
	return l;
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
	router_groups = idmap_new();
	router_dest = idmap_new();
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
	intake_init(router_base, router_io, router_cfg->spool, router_cfg->active_limit, router_take, router_active);

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
	free(router_ifaddrs);
	log_info("stopped");
	return 0;
}
