/*
 * master.c - the parent process. It checks the configuration, takes <spool>/luamta.pid (written, and locked
 * with flock(2) for as long as any process of this instance lives, so that a second `luamta run` on the spool
 * refuses to start before it touches anything and a pid file left by kill -9 does not stop a restart), prepares
 * the spool, binds the listeners, drops privileges and starts the children: server.workers listener processes
 * and one router. Children exit when the master dies (PR_SET_PDEATHSIG, and a check that it still lives right
 * after fork). Each child reports on a datagram socket when it has loaded its state and how each reload went;
 * the master tells the service manager (READY=1 once all are up; RELOADING=1, then READY=1 when every child
 * answered a HUP; STOPPING=1) and writes <spool>/reload.status for `luamta reload`. TERM and INT are passed on
 * and the master waits for its children before it removes the pid file. A child that dies unexpectedly is
 * started again after a second.
 *	master_run()		`luamta run`
 *	master_report_ready(), master_report_reload()	called by a child
 *	master_pid_path(), master_status_path(), master_become_user()	shared with `luamta check` and `reload`
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "connlimit.h"
#include "iothread.h"
#include "lb.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "master.h"
#include "notify.h"
#include "proctitle.h"
#include "router.h"
#include "spool.h"
#include "tls.h"
#include "util.h"
#include "worker.h"

#define MASTER_ROUTER	(-1)	/* child slot number of the router */
#define MASTER_RELOAD_WAIT	25	/* seconds a reload waits for every child's answer */
#define MASTER_STATUS_EVERY	60	/* seconds between STATUS= updates */
#define MASTER_WHY_MAX		1024

enum master_reload {
	MASTER_RL_NONE,		/* no reload asked since the last round */
	MASTER_RL_PENDING,	/* sent HUP, no answer yet */
	MASTER_RL_OK,		/* loaded the new configuration */
	MASTER_RL_FAILED,	/* kept its old state; why says why */
};

struct master_child {
	pid_t			 pid;		/* 0 when not running */
	int			 slot;		/* worker number (0-based) or MASTER_ROUTER */
	int			 ready;		/* reported its state loaded since it was started */
	enum master_reload	 reload;
	char			 why[MASTER_WHY_MAX];
};

static const char		*master_cfgpath;
static struct master_child	*master_children;	/* workers, then the router */
static int			 master_nchildren;
static int			*master_fds;
static int			 master_nfds;
static int			 master_notify[2] = { -1, -1 };	/* [0] router reads, [1] workers write */
static int			 master_stopping;
static struct event_base	*master_base;
static struct iothread		*master_iot;	/* counts the queue for STATUS=, off the loop */
static long			 master_queued = -1;	/* the last count; -1 before the first */
static int			 master_counting;
static char			 master_pidfile[4200];
static int			 master_lockfd = -1;	/* the locked pid file; children share the lock */
static int			 master_status[2] = { -1, -1 };	/* [0] the master reads, [1] children write */
static int			 master_slot = -2;	/* in a child: its slot; -2 in the master */
static pid_t			 master_pid;
static const char		*master_spool;
static int			 master_ready_sent;	/* READY=1 went out once every child was up */
static unsigned			 master_reload_seq;
static int			 master_reloading;	/* a round waits for answers */
static struct event		*master_reload_timer;

void
master_pid_path(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/luamta.pid", spool);
}

void
master_status_path(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/reload.status", spool);
}

int
master_become_user(const char *user, char *err, size_t errsize)
{
	struct passwd	*pw;

	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errsize, "server.user: no user %s", user);
		return -1;
	}
	if (setgroups(0, NULL) == -1 || setgid(pw->pw_gid) == -1 || initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		snprintf(err, errsize, "cannot become user %s: %s", user, strerror(errno));
		return -1;
	}
	return 0;
}

/* master_child_send - one report from a child; lost reports only delay READY or fail a reload. */
static void
master_child_send(const char *fmt, ...)
{
	char	 buf[MASTER_WHY_MAX + 32];
	va_list	 ap;
	int	 n;

	if (master_status[1] == -1 || master_slot == -2)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	(void)!send(master_status[1], buf, (size_t)n, MSG_NOSIGNAL);
}

void
master_report_ready(void)
{
	master_child_send("R %d", master_slot);
}

void
master_report_reload(int ok, const char *why)
{
	master_child_send("H %d %d %s", master_slot, ok ? 1 : 0, why ? why : "");
}

/* master_child_name - "worker 2" or "router" */
static const char *
master_child_name(const struct master_child *c, char *buf, size_t size)
{
	if (c->slot == MASTER_ROUTER)
		snprintf(buf, size, "router");
	else
		snprintf(buf, size, "worker %d", c->slot + 1);
	return buf;
}

/* master_notify_status - STATUS= with the last count of the queue (prefix: READY=1 and the like, or ""). */
static void
master_notify_status(const char *prefix)
{
	if (master_queued < 0)
		notify_send("%sSTATUS=%d worker(s) and the router running; the queue not counted yet", prefix,
		    master_nchildren - 1);
	else
		notify_send("%sSTATUS=%d worker(s) and the router running; %ld message(s) in the queue", prefix,
		    master_nchildren - 1, master_queued);
}

/*
 * The count reads incoming/ and queue/ a name at a time: seconds with a million messages, so it runs on the
 * master's I/O thread and STATUS= says what the last count found (docs/admin.md, "Running as a service").
 */
static int
master_count_work(void *arg)
{
	long	*n = arg;

	*n = spool_count_queued(master_spool);
	return 0;
}

static void
master_count_done(void *arg, int err)
{
	long	*n = arg;

	master_queued = *n;
	free(n);
	master_counting = 0;
	if (master_ready_sent && !master_reloading && !master_stopping)
		master_notify_status("");
}

static void
master_count_start(void)
{
	if (master_counting || master_iot == NULL)
		return;
	master_counting = 1;
	iot_submit(master_iot, master_count_work, master_count_done, xcalloc(1, sizeof(long)), NULL);
}

static void
master_status_cb(evutil_socket_t fd, short what, void *arg)
{
	master_count_start();
}

/* master_reload_write - <spool>/reload.status for `luamta reload`: "<pid> <seq>", ok|failed, one line per why. */
static void
master_reload_write(int failed)
{
	char	 path[4200], tmp[4300], name[32];
	FILE	*f;
	int	 i;

	master_status_path(master_spool, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((f = fopen(tmp, "w")) == NULL) {
		log_error("reload: cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	fprintf(f, "%ld %u\n%s\n", (long)master_pid, master_reload_seq, failed ? "failed" : "ok");
	for (i = 0; i < master_nchildren; i++) {
		struct master_child	*c = &master_children[i];
		char			*line, *save = NULL;

		if (c->reload != MASTER_RL_FAILED)
			continue;
		for (line = strtok_r(c->why, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			fprintf(f, "%s: %s\n", master_child_name(c, name, sizeof(name)), line);
	}
	if (fclose(f) != 0 || rename(tmp, path) == -1)
		log_error("reload: cannot write %s: %s", path, strerror(errno));
}

/* master_reload_check - end the round once no child is pending. */
static void
master_reload_check(void)
{
	int	 i, failed = 0;
	char	 name[32];

	if (!master_reloading)
		return;
	for (i = 0; i < master_nchildren; i++) {
		if (master_children[i].reload == MASTER_RL_PENDING)
			return;
		if (master_children[i].reload == MASTER_RL_FAILED)
			failed++;
	}
	master_reloading = 0;
	evtimer_del(master_reload_timer);
	if (failed == 0)
		log_info("reload: every process loaded the new configuration");
	else
		for (i = 0; i < master_nchildren; i++)
			if (master_children[i].reload == MASTER_RL_FAILED)
				log_error("reload: %s kept its old state: %s",
				    master_child_name(&master_children[i], name, sizeof(name)), master_children[i].why);
	master_reload_write(failed);
	for (i = 0; i < master_nchildren; i++)
		master_children[i].reload = MASTER_RL_NONE;
	if (!master_stopping)
		master_notify_status("READY=1\n");
}

static void
master_reload_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	int	 i;

	for (i = 0; i < master_nchildren; i++)
		if (master_children[i].reload == MASTER_RL_PENDING) {
			master_children[i].reload = MASTER_RL_FAILED;
			snprintf(master_children[i].why, sizeof(master_children[i].why),
			    "no answer within %d seconds", MASTER_RELOAD_WAIT);
		}
	master_reload_check();
}

/* master_reload_start - HUP to every child; the round ends when each answered, died or timed out. */
static void
master_reload_start(void)
{
	struct timeval	 tv = { MASTER_RELOAD_WAIT, 0 };
	int		 i;

	notify_send("RELOADING=1\nSTATUS=reloading the configuration");
	master_reload_seq++;
	master_reloading = 1;
	for (i = 0; i < master_nchildren; i++) {
		struct master_child	*c = &master_children[i];

		c->reload = MASTER_RL_PENDING;	/* one not running loads the new configuration when it starts */
		c->why[0] = '\0';
		if (c->pid > 0)
			kill(c->pid, SIGHUP);
	}
	evtimer_add(master_reload_timer, &tv);
}

static struct master_child *
master_child_by_slot(int slot)
{
	int	 i;

	for (i = 0; i < master_nchildren; i++)
		if (master_children[i].slot == slot)
			return &master_children[i];
	return NULL;
}

/* master_report_cb - a child's report: "R <slot>" (state loaded) or "H <slot> <ok> <why>" (a reload). */
static void
master_report_cb(evutil_socket_t fd, short what, void *arg)
{
	char			 buf[MASTER_WHY_MAX + 64], ready[64];
	struct master_child	*c;
	ssize_t			 n;
	int			 slot, ok, used = 0, i, all;

	while ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[n] = '\0';
		if (buf[0] == 'R' && sscanf(buf, "R %d", &slot) == 1 && (c = master_child_by_slot(slot)) != NULL) {
			c->ready = 1;
			if (c->reload == MASTER_RL_PENDING)
				c->reload = MASTER_RL_OK;	/* started after the HUP: loaded the new file */
		} else if (buf[0] == 'H' && sscanf(buf, "H %d %d %n", &slot, &ok, &used) == 2 &&
		    (c = master_child_by_slot(slot)) != NULL) {
			if (c->reload != MASTER_RL_PENDING)
				continue;
			c->reload = ok ? MASTER_RL_OK : MASTER_RL_FAILED;
			snprintf(c->why, sizeof(c->why), "%s", used > 0 ? buf + used : "");
		}
	}
	if (!master_ready_sent && !master_stopping) {
		for (i = 0, all = 1; i < master_nchildren; i++)
			all = all && master_children[i].ready;
		if (all) {
			master_ready_sent = 1;
			log_info("ready: every worker and the router loaded their state");
			snprintf(ready, sizeof(ready), "READY=1\nMAINPID=%ld\n", (long)master_pid);
			master_notify_status(ready);
		}
	}
	master_reload_check();
}

/* master_child_exec - the code a child runs after fork(); it never returns. */
static void
master_child_exec(int slot)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;
	int		 status;
	char		 title[64];

	/* Die with the master: an orphan would keep the port and the spool (docs/admin.md, "Processes"). The
	 * master may be gone before prctl() took effect, so look once more. */
#ifdef __linux__
	(void)prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
#endif
	if (getppid() != master_pid)
		_exit(1);
	master_slot = slot;
	notify_forget();
	if (slot == MASTER_ROUTER)
		snprintf(title, sizeof(title), "luamta: router");
	else
		snprintf(title, sizeof(title), "luamta: worker %d", slot + 1);
	proctitle_set(title);
	event_reinit(master_base);
	event_base_free(master_base);	/* the child builds its own loop */
	master_base = NULL;
	master_iot = NULL;	/* its thread stayed in the master; the child never touches it */
	/* Only now: closed before event_reinit(), the fd number would go to the new epoll fd, and the reinit
	 * would add the report event on it (EINVAL, and libevent's warnings on stderr). */
	close(master_status[0]);
	metrics_forget();
	signal(SIGHUP, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	metrics_select(slot == MASTER_ROUTER ? -1 : slot);
	g = lb_gen_new(master_cfgpath, slot == MASTER_ROUTER ? LB_ROLE_ROUTER : LB_ROLE_WORKER, &errors,
	    &warnings);
	free(warnings);
	if (g == NULL) {
		log_error("%s: cannot load the configuration: %s", slot == MASTER_ROUTER ? "router" : "worker",
		    errors);
		_exit(1);
	}
	if (slot == MASTER_ROUTER) {
		close(master_notify[1]);
		status = router_main(g, master_notify[0]);
	} else {
		close(master_notify[0]);
		connlimit_select(slot);
		status = worker_main(slot + 1, g, master_fds, master_nfds, master_notify[1]);
	}
	_exit(status);
}

static void
master_spawn(struct master_child *c)
{
	pid_t	 pid = fork();

	if (pid == -1) {
		log_error("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0)
		master_child_exec(c->slot);
	c->pid = pid;
	c->ready = 0;
}

static void
master_respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct master_child	*c = arg;
	struct timeval		 soon = { 0, 50 * 1000 };

	if (master_stopping || c->pid != 0)
		return;
	/* Fork only while the I/O thread is idle: a child inherits an allocator lock that thread held at fork()
	 * and waits on it forever (GCC's ASan does not lock its allocator around fork(); docs/reliability.md). */
	if (master_counting) {
		event_base_once(master_base, -1, EV_TIMEOUT, master_respawn_cb, c, &soon);
		return;
	}
	master_spawn(c);
}

static void
master_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	int	 i, status, alive = 0;
	pid_t	 pid;

	switch (sig) {
	case SIGHUP:
		log_reopen();
		log_info("reload: passing SIGHUP to the workers and the router");
		master_reload_start();
		return;
	case SIGTERM:
	case SIGINT:
		if (!master_stopping) {
			log_info("stop: passing SIGTERM to the children");
			notify_send("STOPPING=1\nSTATUS=stopping: open sessions finish");
		}
		master_stopping = 1;
		for (i = 0; i < master_nchildren; i++)
			if (master_children[i].pid > 0)
				kill(master_children[i].pid, SIGTERM);
		break;
	case SIGCHLD:
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < master_nchildren; i++) {
				struct master_child	*c = &master_children[i];
				struct timeval		 tv = { 1, 0 };

				if (c->pid != pid)
					continue;
				c->pid = 0;
				c->ready = 0;
				if (c->reload == MASTER_RL_PENDING) {
					c->reload = MASTER_RL_FAILED;
					snprintf(c->why, sizeof(c->why), "exited during the reload (%s %d)",
					    WIFSIGNALED(status) ? "signal" : "exit status",
					    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
				}
				if (master_stopping)
					break;
				log_error("%s %d died (%s %d); starting it again", c->slot == MASTER_ROUTER ?
				    "router" : "worker", c->slot == MASTER_ROUTER ? 0 : c->slot + 1,
				    WIFSIGNALED(status) ? "signal" : "exit status",
				    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
				if (c->slot != MASTER_ROUTER)
					connlimit_reset(c->slot);
				metrics_reset_gauges(c->slot == MASTER_ROUTER ? -1 : c->slot);
				event_base_once(master_base, -1, EV_TIMEOUT, master_respawn_cb, c, &tv);
			}
		}
		master_reload_check();
		break;
	}
	for (i = 0; i < master_nchildren; i++)
		if (master_children[i].pid > 0)
			alive++;
	if (master_stopping && alive == 0)
		event_base_loopexit(master_base, NULL);
}

/* master_pidfile_take - lock and write <spool>/luamta.pid, refusing to run twice on one spool. The lock, not
 * the pid in the file, says whether an instance lives: a file left by kill -9 is not locked. */
static int
master_pidfile_take(const struct config *cfg)
{
	struct stat	 a, b;
	char		 buf[32];
	int		 fd, n, tries;

	master_pid_path(cfg->spool, master_pidfile, sizeof(master_pidfile));
	if (util_mkdirs(cfg->spool, 0700) == -1) {
		log_error("cannot create %s: %s", cfg->spool, strerror(errno));
		return -1;
	}
	for (tries = 0; tries < 5; tries++) {
		if ((fd = open(master_pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1) {
			log_error("cannot open %s: %s", master_pidfile, strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
			n = errno == EWOULDBLOCK ? (int)read(fd, buf, sizeof(buf) - 1) : -1;
			buf[n > 0 ? n : 0] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			if (cfg->log_syslog)
				fprintf(stderr, "luamta: another luamta (pid %s) runs on spool %s; not starting\n",
				    buf[0] ? buf : "?", cfg->spool);
			log_error("another luamta (pid %s) runs on spool %s; not starting", buf[0] ? buf : "?",
			    cfg->spool);
			close(fd);
			return -1;
		}
		/* The instance that held it may have removed the file between our open() and flock(). */
		if (fstat(fd, &a) == 0 && stat(master_pidfile, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			break;
		close(fd);
		fd = -1;
	}
	if (fd == -1) {
		log_error("cannot lock %s: it keeps changing", master_pidfile);
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)n, 0) != n) {
		log_error("cannot write %s: %s", master_pidfile, strerror(errno));
		close(fd);
		return -1;
	}
	master_lockfd = fd;	/* held (and inherited by the children) until the last process exits */
	return 0;
}

/* master_drop_privileges - become server.user, after binding, with the spool handed over to it. */
static int
master_drop_privileges(const struct config *cfg)
{
	struct passwd	*pw;
	char		 path[4200], err[512];

	if (cfg->user == NULL)
		return 0;
	if ((pw = getpwnam(cfg->user)) == NULL) {
		log_error("server.user: no user %s", cfg->user);
		return -1;
	}
	/* The spool and every directory in it (spool.h), and the default Maildir root. */
	if (spool_chown(cfg->spool, pw->pw_uid, pw->pw_gid, err, sizeof(err)) == -1)
		log_warn("%s", err);
	snprintf(path, sizeof(path), "%s/mailboxes", cfg->spool);
	if (chown(path, pw->pw_uid, pw->pw_gid) == -1 && errno != ENOENT)
		log_warn("chown %s: %s", path, strerror(errno));
	if (chown(master_pidfile, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s: %s", master_pidfile, strerror(errno));
	if (master_become_user(cfg->user, err, sizeof(err)) == -1) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

int
master_run(const char *cfgpath)
{
	struct lb_gen		*g;
	const struct config	*cfg;
	char			*errors = NULL, *warnings = NULL, err[512];
	struct event		*sigs[4], *report, *status;
	static const int	 signums[4] = { SIGHUP, SIGTERM, SIGINT, SIGCHLD };
	struct timeval		 every = { MASTER_STATUS_EVERY, 0 };
	size_t			 i, nsigs = 0;

	master_cfgpath = cfgpath;
	proctitle_set("luamta: master");
	if ((g = lb_gen_new(cfgpath, LB_ROLE_CHECK, &errors, &warnings)) == NULL) {
		fprintf(stderr, "luamta: configuration errors:\n%s", errors);
		free(errors);
		free(warnings);
		return 1;
	}
	cfg = lb_gen_config(g);
	if (log_setup(cfg->log_ident, cfg->log_level, cfg->log_file, cfg->log_syslog, cfg->log_facility, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "luamta: %s\n", err);
		goto fail;
	}
	log_set_role("master");
	if (warnings != NULL) {
		char	*line, *save = NULL;

		for (line = strtok_r(warnings, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_warn("%s", line);
	}
	/* The lock comes first: a second instance must not sweep the first one's tmp/. */
	if (master_pidfile_take(cfg) == -1)
		goto fail;
	master_spool = cfg->spool;
	master_pid = getpid();
	master_status_path(cfg->spool, err, sizeof(err));
	unlink(err);	/* a previous instance's answer must not pass for ours */
	if (spool_prepare(cfg->spool, err, sizeof(err)) == -1) {
		log_error("%s", err);
		goto fail;
	}
	master_fds = xcalloc(cfg->nlisten, sizeof(*master_fds));
	for (i = 0; i < cfg->nlisten; i++) {
		if ((master_fds[i] = lsn_bind(&cfg->listen[i], err, sizeof(err))) == -1) {
			log_error("%s", err);
			goto fail;
		}
		master_nfds++;
	}
	if (master_drop_privileges(cfg) == -1)
		goto fail;
	/* Checked as the user the workers run as, since they load the pair themselves: a key only root can
	 * read must stop the start, not quietly turn TLS off. At reload a bad pair keeps the old one. */
	if (cfg->tls_cert != NULL && cfg->tls_key != NULL &&
	    tls_check_files(cfg->tls_cert, cfg->tls_key, err, sizeof(err), NULL, 0) == -1) {
		log_error("%s", err);
		goto fail;
	}
	if (connlimit_init(cfg->workers) == -1)
		fatal("cannot set up shared connection counters for %d workers", cfg->workers);
	if (metrics_init(cfg->workers) == -1)
		fatal("cannot set up shared metrics for %d workers", cfg->workers);
	if (tls_tickets_init() == -1)	/* every worker's ticket keys derive from it (docs/tls.md) */
		log_warn("tls: no random secret for shared session tickets: each worker issues its own");
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, master_notify) == -1 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, master_status) == -1)
		fatal("socketpair: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);	/* a file over RLIMIT_FSIZE fails with EFBIG (a 4xx), never kills */

	if ((master_base = event_base_new()) == NULL)
		fatal("cannot create an event base");
	for (nsigs = 0; nsigs < 4; nsigs++) {
		sigs[nsigs] = evsignal_new(master_base, signums[nsigs], master_signal_cb, NULL);
		evsignal_add(sigs[nsigs], NULL);
	}
	/* The master serves the metrics: it outlives every child, and serving never competes with SMTP. */
	if (cfg->metrics_listen != NULL && metrics_listen(master_base, cfg->metrics_listen, err, sizeof(err)) == -1) {
		log_error("%s", err);
		goto fail;
	}
	report = event_new(master_base, master_status[0], EV_READ | EV_PERSIST, master_report_cb, NULL);
	event_add(report, NULL);
	status = event_new(master_base, -1, EV_PERSIST, master_status_cb, NULL);
	event_add(status, &every);
	master_reload_timer = evtimer_new(master_base, master_reload_timeout_cb, NULL);
	master_nchildren = cfg->workers + 1;
	master_children = xcalloc((size_t)master_nchildren, sizeof(*master_children));
	for (i = 0; i < (size_t)cfg->workers; i++)
		master_children[i].slot = (int)i;
	master_children[cfg->workers].slot = MASTER_ROUTER;
	log_info("starting: %d worker(s) and the router; listening on %zu address(es); spool %s", cfg->workers,
	    cfg->nlisten, cfg->spool);
	for (i = 0; i < (size_t)master_nchildren; i++)
		master_spawn(&master_children[i]);
	/* The I/O thread starts after the forks, and counts only while none runs (master_respawn_cb()): a thread
	 * busy in the allocator at fork() leaves the child its lock. The count is done long before the children
	 * are ready, unless the queue is huge. */
	master_iot = iot_new(master_base);
	master_count_start();

	event_base_dispatch(master_base);

	iot_free(master_iot);	/* a count under way finishes first */
	master_iot = NULL;
	for (i = 0; i < 4; i++)
		event_free(sigs[i]);
	event_free(report);
	event_free(status);
	event_free(master_reload_timer);
	master_status_path(cfg->spool, err, sizeof(err));
	unlink(err);
	unlink(master_pidfile);
	close(master_lockfd);
	log_info("stopped");
	free(warnings);
	lb_gen_release(g);
	return 0;

fail:
	/* A failed start gives back what it took, so that the exit frees everything (LSan counts what it does
	 * not); the pid file goes only if this instance holds its lock. No child was started yet. */
	for (i = 0; i < nsigs; i++)
		event_free(sigs[i]);
	if (master_base != NULL)
		event_base_free(master_base);
	master_base = NULL;
	for (i = 0; i < (size_t)master_nfds; i++)
		close(master_fds[i]);
	free(master_fds);
	master_fds = NULL;
	master_nfds = 0;
	if (master_lockfd != -1) {
		unlink(master_pidfile);
		close(master_lockfd);
		master_lockfd = -1;
	}
	free(warnings);
	lb_gen_release(g);
	return 1;
}
