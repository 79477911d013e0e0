/*
 * pickup.c - the pickup service (docs/admin.md, "sendmail and mailq"): worker 1 takes the files `luamta sendmail`
 * left in <spool>/maildrop/, one at a time, within a second and at start. Each goes through a real SMTP session
 * of this worker on a socketpair (sim_start, on a listener marked local: only the message-stage rules run, with
 * s.local_user set), so it is queued, committed and logged as any message is; the file is removed only after
 * the 250, that is after the queued copy is durable. What the server refuses with 5xx comes back to the sender
 * as a notice (a new maildrop file from the null sender); a 4xx leaves the file for a later try; a malformed
 * file moves to <spool>/corrupt/. Directory listing, reading and removing run on an I/O thread of our own.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "iothread.h"
#include "log.h"
#include "maildrop.h"
#include "pickup.h"
#include "simulate.h"
#include "smtp_session.h"
#include "util.h"

#define PICKUP_RETRY		60	/* seconds before a file that got 4xx is tried again */
#define PICKUP_LATER_MAX	64	/* files waiting for a retry that we remember; more are simply tried again */
#define PICKUP_TIMEOUT		300	/* seconds for one file's session */
#define PICKUP_SLACK		65536	/* octets of envelope and added headers over server.max_message_size */

struct pickup_later {
	char	 name[72];
	time_t	 until;
};

/* The one file in flight, and what the I/O thread did with it. */
struct pickup_job {
	char			 name[72];
	char			 path[4300];
	char			*data;		/* owns: the file */
	size_t			 len;
	int			 found;		/* a file was taken */
	int			 too_big;
	char			 owner[64];	/* the file owner's user name */
	struct pickup_later	 later[PICKUP_LATER_MAX];	/* a copy for the I/O thread: files not to take */
	/* quarantine or removal */
	int			 quarantine;
	struct maildrop_msg	 notice;	/* a notice to write first (notice.message owned), or nrcpts 0 */
	char			*notice_text;
};

static struct {
	struct event_base	*base;
	struct smtp_host	*host;		/* borrowed: the worker's, for the sessions */
	struct iothread		*iot;
	struct event		*timer;
	char			 spool[4096];
	char			 hostname[256];
	unsigned long long	 max_size;
	int			 busy;
	unsigned long		 serial;	/* with the time and pid, makes Message-IDs unique */
	struct pickup_later	 later[PICKUP_LATER_MAX];
	/* the session of the file in flight */
	struct pickup_job	*job;
	struct maildrop_msg	 msg;
	struct sim_script	 script;
	struct sim_replies	 got;
	char			*text;		/* the message with the headers pickup adds */
} pk;

static struct cfg_listen pickup_lsn = { .text = "pickup", .host = "127.0.0.1", .local = 1 };

static void	pickup_next(void);

static int
pickup_is_later(const struct pickup_later *later, const char *name, time_t now)
{
	int	 i;

	for (i = 0; i < PICKUP_LATER_MAX; i++)
		if (later[i].until > now && strcmp(later[i].name, name) == 0)
			return 1;
	return 0;
}

static void
pickup_retry_later(const char *name)
{
	time_t	 now = time(NULL);
	int	 i, slot = 0;

	for (i = 0; i < PICKUP_LATER_MAX; i++)
		if (pk.later[i].until <= now || strcmp(pk.later[i].name, name) == 0) {
			slot = i;
			break;
		}
	util_strlcpy(pk.later[slot].name, name, sizeof(pk.later[slot].name));
	pk.later[slot].until = now + PICKUP_RETRY;
}

/* pickup_take_work - on the I/O thread: the oldest finished file not waiting for a retry, read whole. */
static int
pickup_take_work(void *arg)
{
	struct pickup_job	*j = arg;
	char			 dir[4200], best[72] = "";
	DIR			*d;
	struct dirent		*de;
	struct stat		 st;
	struct passwd		 pwbuf, *pw = NULL;
	char			 pwtext[1024];
	time_t			 now = time(NULL);
	int			 fd, scanned = 0;

	maildrop_dir(pk.spool, dir, sizeof(dir));
	if ((d = opendir(dir)) == NULL)
		return errno == ENOENT ? 0 : errno;
	while ((de = readdir(d)) != NULL && scanned++ < 100000) {
		if (!maildrop_name_ok(de->d_name) || strlen(de->d_name) >= sizeof(best) ||
		    pickup_is_later(j->later, de->d_name, now))
			continue;
		if (best[0] == '\0' || strcmp(de->d_name, best) < 0)	/* names begin with the time */
			util_strlcpy(best, de->d_name, sizeof(best));
	}
	closedir(d);
	if (best[0] == '\0')
		return 0;
	util_strlcpy(j->name, best, sizeof(j->name));
	snprintf(j->path, sizeof(j->path), "%s/%s", dir, best);
	if ((fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return 0;	/* gone meanwhile */
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		j->found = 1;
		j->quarantine = 1;
		return 0;
	}
	j->found = 1;
	(void)getpwuid_r(st.st_uid, &pwbuf, pwtext, sizeof(pwtext), &pw);
	snprintf(j->owner, sizeof(j->owner), "%s", pw != NULL ? pw->pw_name : "nobody");
	if ((unsigned long long)st.st_size > pk.max_size + PICKUP_SLACK) {
		j->too_big = 1;
		close(fd);
		return 0;
	}
	j->data = xmalloc((size_t)st.st_size + 1);
	while (j->len < (size_t)st.st_size) {
		ssize_t	 n = read(fd, j->data + j->len, (size_t)st.st_size - j->len);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		j->len += (size_t)n;
	}
	j->data[j->len] = '\0';
	close(fd);
	return 0;
}

/* pickup_finish_work - on the I/O thread: write the notice, if any, then remove or quarantine the file. */
static int
pickup_finish_work(void *arg)
{
	struct pickup_job	*j = arg;
	char			 err[512], corrupt[4200], to[4400], dir[4200];

	if (j->notice.nrcpts > 0 && maildrop_write(pk.spool, &j->notice, err, sizeof(err)) != 0)
		return EAGAIN;		/* keep the original: it is tried again, and the notice with it */
	maildrop_dir(pk.spool, dir, sizeof(dir));
	if (j->quarantine) {
		snprintf(corrupt, sizeof(corrupt), "%s/corrupt", pk.spool);
		if (util_mkdirs(corrupt, 0750) == -1)
			return errno;
		snprintf(to, sizeof(to), "%s/maildrop-%s", corrupt, j->name);
		if (rename(j->path, to) == -1)
			return errno;
		(void)util_fsync_dir(corrupt);
	} else if (unlink(j->path) == -1 && errno != ENOENT)
		return errno;
	(void)util_fsync_dir(dir);
	return 0;
}

static void
pickup_job_free(struct pickup_job *j)
{
	free(j->data);
	free(j->notice_text);
	maildrop_msg_clear(&j->notice);
	free(j);
}

static void
pickup_finish_done(void *arg, int err)
{
	struct pickup_job	*j = arg;

	if (err != 0) {
		log_error("pickup: %s: %s; it is tried again later", j->name, strerror(err));
		pickup_retry_later(j->name);
	} else if (j->quarantine)
		log_warn("pickup: %s: moved to %s/corrupt/maildrop-%s", j->name, pk.spool, j->name);
	pickup_job_free(j);
	pk.job = NULL;
	pk.busy = 0;
	pickup_next();		/* the next file at once: a burst drains without waiting for the timer */
}

static void
pickup_finish(struct pickup_job *j)
{
	iot_submit(pk.iot, pickup_finish_work, pickup_finish_done, j, NULL);
}

/* pickup_has_header - whether the header section of msg has a field called name ("Date"). */
static int
pickup_has_header(const char *msg, size_t len, const char *name)
{
	const char	*p = msg, *end = msg + len;
	size_t		 n = strlen(name);

	while (p < end && *p != '\n' && !(*p == '\r' && p + 1 < end && p[1] == '\n')) {
		const char	*nl = memchr(p, '\n', (size_t)(end - p));

		if ((size_t)(end - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':')
			return 1;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return 0;
}

/* pickup_headers - the message with what Postfix's cleanup adds when missing: From, Date, Message-ID. */
static char *
pickup_headers(const struct maildrop_msg *m)
{
	char	 date[64], add[1400];
	size_t	 n = 0;
	char	*out;

	add[0] = '\0';
	if (!pickup_has_header(m->message, m->len, "From")) {
		if (m->sender[0] == '\0')
			n += (size_t)snprintf(add + n, sizeof(add) - n, "From: MAILER-DAEMON@%s\n", pk.hostname);
		else if (m->fullname[0] != '\0')
			n += (size_t)snprintf(add + n, sizeof(add) - n, "From: %s <%s>\n", m->fullname, m->sender);
		else
			n += (size_t)snprintf(add + n, sizeof(add) - n, "From: %s\n", m->sender);
	}
	if (n < sizeof(add) && !pickup_has_header(m->message, m->len, "Date")) {
		util_rfc5322_date(date, sizeof(date), m->time > 0 ? (double)m->time : util_now());
		n += (size_t)snprintf(add + n, sizeof(add) - n, "Date: %s\n", date);
	}
	if (n < sizeof(add) && !pickup_has_header(m->message, m->len, "Message-ID"))
		n += (size_t)snprintf(add + n, sizeof(add) - n, "Message-ID: <%ld.%ld.%lu@%s>\n", m->time,
		    (long)getpid(), ++pk.serial, pk.hostname);
	if (n >= sizeof(add))
		n = sizeof(add) - 1;
	out = xmalloc(n + m->len + 1);
	memcpy(out, add, n);
	memcpy(out + n, m->message, m->len);
	out[n + m->len] = '\0';
	return out;
}

/* pickup_notice - a notice to the sender of what was refused, into j->notice (not for the null sender). */
static void
pickup_notice(struct pickup_job *j, const char *why)
{
	const struct maildrop_msg	*m = &pk.msg;
	char				 date[64], head[2048];
	size_t				 hl = 0, len;
	const char			*p = m->message;

	if (m->sender[0] == '\0') {
		log_warn("pickup: %s: refused, and its sender is <>, so nobody is told: %s", j->name, why);
		return;
	}
	util_rfc5322_date(date, sizeof(date), util_now());
	/* the original's headers, cut at the first empty line or 1 KiB */
	while (hl < m->len && hl < 1024 && !(p[hl] == '\n' && (hl == 0 || p[hl - 1] == '\n')))
		hl++;
	snprintf(head, sizeof(head), "From: MAILER-DAEMON@%s (Mail Delivery System)\nTo: <%s>\n"
	    "Subject: Undelivered Mail Returned to Sender\nDate: %s\nAuto-Submitted: auto-replied\n\n"
	    "This is the mail system at host %s.\n\nYour message could not be queued:\n\n%s\n\n"
	    "The headers of your message:\n\n", pk.hostname, m->sender, date, pk.hostname, why);
	len = strlen(head) + hl + 2;
	j->notice_text = xmalloc(len + 1);
	snprintf(j->notice_text, len + 1, "%s%.*s\n", head, (int)hl, p);
	util_strlcpy(j->notice.sender, "", sizeof(j->notice.sender));
	util_strlcpy(j->notice.user, "MAILER-DAEMON", sizeof(j->notice.user));
	j->notice.time = (long)time(NULL);
	j->notice.rcpts = xcalloc(1, sizeof(char *));
	j->notice.rcpts[0] = xstrdup(m->sender);
	j->notice.nrcpts = 1;
	j->notice.message = j->notice_text;
	j->notice.len = strlen(j->notice_text);
}

static void
pickup_session_done(void *arg, struct sim_replies *got)
{
	struct pickup_job	*j = pk.job;
	char			 why[4096];
	size_t			 n = 0;
	int			 i, temp = got->timed_out;
	const char		*final = got->reply[SIM_S_MESSAGE];

	why[0] = '\0';
	for (i = 0; i < pk.script.nto; i++) {
		const char	*r = got->rcpt[i];

		if (r == NULL || (r[0] != '4' && r[0] != '5'))
			continue;
		if (r[0] == '4' && !got->queued)
			temp = 1;	/* the whole file is tried again */
		else if (n < sizeof(why))	/* refused while the others were queued: the sender is told */
			n += (size_t)snprintf(why + n, sizeof(why) - n, "  <%s>: %s\n", pk.script.to[i], r);
	}
	if (!got->queued) {
		const char	*last = final ? final : got->reply[got->reached];

		if (last == NULL || last[0] != '5')
			temp = 1;
		else if (n < sizeof(why))
			n += (size_t)snprintf(why + n, sizeof(why) - n, "  %s\n", last);
	}
	if (temp && !got->queued) {
		log_warn("pickup: %s: not queued for now (%s); tried again in %d s", j->name,
		    got->timed_out ? "no answer in time" : final ? final : got->reply[got->reached] ?
		    got->reply[got->reached] : "the session ended", PICKUP_RETRY);
		pickup_retry_later(j->name);
		pickup_job_free(j);
		pk.job = NULL;
		pk.busy = 0;
	} else {
		if (got->queued)
			log_info("pickup: %s: uid %s from=<%s>: %s", j->name, j->owner, pk.msg.sender, final);
		if (why[0] != '\0') {
			log_warn("pickup: %s: refused for some or all recipients; the sender is told", j->name);
			pickup_notice(j, why);
		}
		pickup_finish(j);
	}
	sim_replies_free(&pk.got);
	maildrop_msg_clear(&pk.msg);
	free(pk.text);
	pk.text = NULL;
}

static void
pickup_take_done(void *arg, int err)
{
	struct pickup_job	*j = arg;
	char			 why[256];
	size_t			 i;

	if (err != 0 || !j->found) {
		if (err != 0)
			log_error("pickup: cannot read the maildrop: %s", strerror(err));
		pickup_job_free(j);
		pk.busy = 0;
		return;
	}
	pk.job = j;
	if (j->quarantine || j->too_big || maildrop_parse(j->data, j->len, &pk.msg, why, sizeof(why)) == -1) {
		log_warn("pickup: %s: malformed (%s); quarantined", j->name, j->too_big ?
		    "bigger than server.max_message_size" : j->quarantine ? "not a regular file" : why);
		j->quarantine = 1;
		pickup_finish(j);
		return;
	}
	memset(&pk.script, 0, sizeof(pk.script));
	pk.script.ip = "127.0.0.1";
	pk.script.helo = "localhost";
	pk.script.local_user = j->owner;	/* the file's owner, not what the file says */
	pk.script.from = pk.msg.sender;
	for (i = 0; i < pk.msg.nrcpts && i < SIM_RCPTS_MAX; i++)
		pk.script.to[pk.script.nto++] = pk.msg.rcpts[i];
	pk.text = pickup_headers(&pk.msg);
	pk.script.message_text = pk.text;
	if (sim_start(pk.host, &pickup_lsn, &pk.script, &pk.got, PICKUP_TIMEOUT, pickup_session_done, NULL) == -1) {
		log_error("pickup: %s: cannot start a session: %s", j->name, strerror(errno));
		pickup_retry_later(j->name);
		maildrop_msg_clear(&pk.msg);
		free(pk.text);
		pk.text = NULL;
		pickup_job_free(j);
		pk.job = NULL;
		pk.busy = 0;
	}
}

static void
pickup_next(void)
{
	struct pickup_job	*j;

	if (pk.busy)
		return;
	pk.busy = 1;
	j = xcalloc(1, sizeof(*j));
	memcpy(j->later, pk.later, sizeof(j->later));
	iot_submit(pk.iot, pickup_take_work, pickup_take_done, j, NULL);
}

static void
pickup_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	pickup_next();
}

int
pickup_start(struct smtp_host *host, const struct config *cfg, char *err, size_t errsize)
{
	struct event_base	*base = host->base;
	struct timeval		 second = { 1, 0 };

	if (maildrop_prepare(cfg->spool, err, errsize) == -1)
		return -1;
	pk.base = base;
	pk.host = host;
	util_strlcpy(pk.spool, cfg->spool, sizeof(pk.spool));
	util_strlcpy(pk.hostname, cfg->hostname, sizeof(pk.hostname));
	pk.max_size = cfg->max_message_size;
	pk.iot = iot_new(base);
	pk.timer = event_new(base, -1, EV_PERSIST, pickup_timer_cb, NULL);
	event_add(pk.timer, &second);
	pickup_next();		/* what was dropped while the server was stopped */
	return 0;
}

void
pickup_stop(void)
{
	if (pk.timer == NULL)
		return;
	event_free(pk.timer);
	pk.timer = NULL;
	iot_free(pk.iot);
	pk.iot = NULL;
}
