/*
 * router_sweep.c - the router's start-up sweep of what a crash leaves behind (router_priv.h,
 * docs/reliability.md), on the router's I/O thread a few hundred entries at a time.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <lauxlib.h>

#include "iothread.h"
#include "lb.h"
#include "log.h"
#include "maildir.h"
#include "router_priv.h"
#include "util.h"

/* Start-up sweep --------------------------------------------------------------------------------------------- */

/*
 * What a crash can leave that no later step removes, swept once when the router starts (docs/reliability.md):
 *  - state/<id> with neither incoming/<id>, queue/<id> nor hold/<id>: a finished (or deleted) message whose
 *    queue file went first, as it must (the other order would deliver it again to every recipient), and the
 *    kill landed before its state file followed;
 *  - in every Maildir of delivery.maildir, tmp/ files of our own name pattern and host (maildir_name_ours())
 *    whose writer is no longer running (a router killed inside maildir_deliver(); the recipient is delivered
 *    again under a new name, so the partial file can never complete), or that are older than 36 hours, as
 *    Maildir allows. Files of other programs and hosts are left alone. A writer is gone when its pid is not
 *    a running luamta router (router_sweep_writer_runs()): pids are reused within minutes, so a live pid alone
 *    proves nothing.
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
	struct spool_walk	*states_walk;		/* owns: phase 1 */
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

/*
 * router_sweep_writer_runs - may pid be a router still writing a Maildir file (docs/reliability.md,
 * "Leftovers")? No if the pid does not exist; no if it is a zombie (it has exited and writes nothing, but its pid
 * stays taken until it is reaped); no if it is a live process not titled "luamta: router" (the title that
 * master.c gives the router, docs/admin.md "Processes"): the pid went to another program. The title is the
 * first string of /proc/PID/cmdline, or the comm name (which the title sets too, through PR_SET_NAME), so a
 * router whose argv area was too short for its whole title is still recognised. Without /proc only kill(pid, 0)
 * can tell, and an existing pid counts as a running writer. On the I/O thread: these are disk reads.
 */
#define ROUTER_SWEEP_TITLE	"luamta: router"

static int
router_sweep_proc_read(long pid, const char *what, char *buf, size_t size)
{
	char	 path[64];
	ssize_t	 n;
	int	 fd;

	snprintf(path, sizeof(path), "/proc/%ld/%s", pid, what);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

static int
router_sweep_writer_runs(long pid)
{
	char	 stat[512], cmdline[sizeof(ROUTER_SWEEP_TITLE) + 1], *open_paren, *close_paren;

	if (kill((pid_t)pid, 0) == -1 && errno == ESRCH)
		return 0;
	if (router_sweep_proc_read(pid, "stat", stat, sizeof(stat)) == -1)
		return access("/proc/self/stat", F_OK) == -1;	/* no /proc: it exists; or it has just exited */
	/* "pid (comm) S ...": comm may hold spaces and parentheses, so the state follows the last ')' */
	open_paren = strchr(stat, '(');
	close_paren = strrchr(stat, ')');
	if (open_paren == NULL || close_paren == NULL || close_paren < open_paren)
		return 1;
	if (close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X'))
		return 0;
	*close_paren = '\0';
	if (strcmp(open_paren + 1, ROUTER_SWEEP_TITLE) == 0)
		return 1;
	/* cmdline's first string; it is NUL-terminated within the buffer when it is the title */
	if (router_sweep_proc_read(pid, "cmdline", cmdline, sizeof(cmdline)) > 0 &&
	    strcmp(cmdline, ROUTER_SWEEP_TITLE) == 0)
		return 1;
	return 0;
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
	gone = pid > 0 && pid != (long)getpid() && !router_sweep_writer_runs(pid);
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
router_sweep_state(struct router_sweep *sw, const char *name)
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
		char				 id[QUEUEID_SIZE];
		double				 mtime;

		if (sw->phase == 1 && sw->states_walk != NULL) {
			/* state/ and its hashed sub-directories, through the spool's walk */
			if (spool_walk_next(sw->states_walk, id, &mtime)) {
				n++;
				router_sweep_state(sw, id);
				continue;
			}
			spool_walk_close(sw->states_walk);
			sw->states_walk = NULL;
		}
		if (sw->depth == 0) {
			/* The next phase: state/, then the Maildir template from its fixed part. */
			if (++sw->phase == 1)
				sw->states_walk = spool_walk_open(sw->spool, SPOOL_D_STATE);
			else if (sw->phase == 2 && sw->ncomps > 0) {
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
		if (lv->comp == sw->ncomps)
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
void
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

