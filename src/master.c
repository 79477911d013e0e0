/*
 * master.c - the parent process. It checks the configuration, prepares the spool, binds the listeners, drops
 * privileges, writes <spool>/luamta.pid and starts the children: server.workers listener processes and one
 * router. HUP is passed to every child (each reloads its own policy); TERM and INT are passed on and the master
 * waits for its children before it removes the pid file. A child that dies unexpectedly is started again after
 * a second.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "connlimit.h"
#include "lb.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "master.h"
#include "router.h"
#include "spool.h"
#include "tls.h"
#include "util.h"
#include "worker.h"

#define MASTER_ROUTER	(-1)	/* child slot number of the router */

struct master_child {
	pid_t	 pid;		/* 0 when not running */
	int	 slot;		/* worker number (0-based) or MASTER_ROUTER */
};

static const char		*master_cfgpath;
static struct master_child	*master_children;	/* workers, then the router */
static int			 master_nchildren;
static int			*master_fds;
static int			 master_nfds;
static int			 master_notify[2] = { -1, -1 };	/* [0] router reads, [1] workers write */
static int			 master_stopping;
static struct event_base	*master_base;
static char			 master_pidfile[4200];

void
master_pid_path(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/luamta.pid", spool);
}

/* master_child_exec - the code a child runs after fork(); it never returns. */
static void
master_child_exec(int slot)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;
	int		 status;

	event_reinit(master_base);
	event_base_free(master_base);	/* the child builds its own loop */
	master_base = NULL;
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
}

static void
master_respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct master_child	*c = arg;

	if (!master_stopping && c->pid == 0)
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
		for (i = 0; i < master_nchildren; i++)
			if (master_children[i].pid > 0)
				kill(master_children[i].pid, SIGHUP);
		return;
	case SIGTERM:
	case SIGINT:
		if (!master_stopping)
			log_info("stop: passing SIGTERM to the children");
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
		break;
	}
	for (i = 0; i < master_nchildren; i++)
		if (master_children[i].pid > 0)
			alive++;
	if (master_stopping && alive == 0)
		event_base_loopexit(master_base, NULL);
}

/* master_pidfile_take - write our pid, refusing to run twice on one spool. */
static int
master_pidfile_take(const char *spool)
{
	char	 buf[32];
	int	 fd, n;
	long	 other;

	master_pid_path(spool, master_pidfile, sizeof(master_pidfile));
	if ((fd = open(master_pidfile, O_RDONLY | O_CLOEXEC)) != -1) {
		n = (int)read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			other = strtol(buf, NULL, 10);
			if (other > 0 && other != (long)getpid() && kill((pid_t)other, 0) == 0) {
				log_error("another luamta (pid %ld) runs on spool %s", other, spool);
				return -1;
			}
		}
	}
	if ((fd = open(master_pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) == -1) {
		log_error("cannot write %s: %s", master_pidfile, strerror(errno));
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	(void)!write(fd, buf, (size_t)n);
	close(fd);
	return 0;
}

/* master_drop_privileges - become server.user, after binding, with the spool handed over to it. */
static int
master_drop_privileges(const struct config *cfg)
{
	struct passwd	*pw;
	char		 path[4200];
	static const char *const dirs[] = { "", "/tmp", "/queue", "/state", "/hold", "/mailboxes" };
	size_t		 i;

	if (cfg->user == NULL)
		return 0;
	if ((pw = getpwnam(cfg->user)) == NULL) {
		log_error("server.user: no user %s", cfg->user);
		return -1;
	}
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", cfg->spool, dirs[i]);
		if (chown(path, pw->pw_uid, pw->pw_gid) == -1 && errno != ENOENT)
			log_warn("chown %s: %s", path, strerror(errno));
	}
	if (chown(master_pidfile, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s: %s", master_pidfile, strerror(errno));
	if (setgroups(0, NULL) == -1 || setgid(pw->pw_gid) == -1 || initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_error("cannot become user %s: %s", cfg->user, strerror(errno));
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
	struct event		*sigs[4];
	static const int	 signums[4] = { SIGHUP, SIGTERM, SIGINT, SIGCHLD };
	size_t			 i;

	master_cfgpath = cfgpath;
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
		return 1;
	}
	log_set_role("master");
	if (warnings != NULL) {
		char	*line, *save = NULL;

		for (line = strtok_r(warnings, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_warn("%s", line);
		free(warnings);
	}
	if (spool_prepare(cfg->spool, err, sizeof(err)) == -1) {
		log_error("%s", err);
		return 1;
	}
	if (master_pidfile_take(cfg->spool) == -1)
		return 1;
	master_fds = xcalloc(cfg->nlisten, sizeof(*master_fds));
	for (i = 0; i < cfg->nlisten; i++) {
		if ((master_fds[i] = lsn_bind(&cfg->listen[i], err, sizeof(err))) == -1) {
			log_error("%s", err);
			unlink(master_pidfile);
			return 1;
		}
		master_nfds++;
	}
	if (master_drop_privileges(cfg) == -1) {
		unlink(master_pidfile);
		return 1;
	}
	/* Checked as the user the workers run as, since they load the pair themselves: a key only root can
	 * read must stop the start, not quietly turn TLS off. At reload a bad pair keeps the old one. */
	if (cfg->tls_cert != NULL && cfg->tls_key != NULL &&
	    tls_check_files(cfg->tls_cert, cfg->tls_key, err, sizeof(err), NULL, 0) == -1) {
		log_error("%s", err);
		unlink(master_pidfile);
		return 1;
	}
	if (connlimit_init(cfg->workers) == -1)
		fatal("cannot set up shared connection counters for %d workers", cfg->workers);
	if (metrics_init(cfg->workers) == -1)
		fatal("cannot set up shared metrics for %d workers", cfg->workers);
	if (tls_tickets_init() == -1)	/* every worker's ticket keys derive from it (docs/tls.md) */
		log_warn("tls: no random secret for shared session tickets: each worker issues its own");
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, master_notify) == -1)
		fatal("socketpair: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	if ((master_base = event_base_new()) == NULL)
		fatal("cannot create an event base");
	for (i = 0; i < 4; i++) {
		sigs[i] = evsignal_new(master_base, signums[i], master_signal_cb, NULL);
		evsignal_add(sigs[i], NULL);
	}
	/* The master serves the metrics: it outlives every child, and serving never competes with SMTP. */
	if (cfg->metrics_listen != NULL && metrics_listen(master_base, cfg->metrics_listen, err, sizeof(err)) == -1) {
		log_error("%s", err);
		unlink(master_pidfile);
		return 1;
	}
	master_nchildren = cfg->workers + 1;
	master_children = xcalloc((size_t)master_nchildren, sizeof(*master_children));
	for (i = 0; i < (size_t)cfg->workers; i++)
		master_children[i].slot = (int)i;
	master_children[cfg->workers].slot = MASTER_ROUTER;
	log_info("starting: %d worker(s) and the router; listening on %zu address(es); spool %s", cfg->workers,
	    cfg->nlisten, cfg->spool);
	for (i = 0; i < (size_t)master_nchildren; i++)
		master_spawn(&master_children[i]);

	event_base_dispatch(master_base);

	for (i = 0; i < 4; i++)
		event_free(sigs[i]);
	unlink(master_pidfile);
	log_info("stopped");
	lb_gen_release(g);
	return 0;
}
