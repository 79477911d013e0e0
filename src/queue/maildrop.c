/*
 * maildrop.c - maildrop files (see maildrop.h). Format, version 1: text lines, then an empty line, then the
 * message exactly as sendmail read it (LF line ends):
 *	luamta-maildrop 1
 *	sender <address>	("sender " alone for the null sender)
 *	user <name>
 *	time <unix seconds>
 *	fullname <text>		(optional: -F)
 *	rcpt <address>		(one or more)
 *
 *	<message>
 * A header line longer than MAILDROP_ADDR_MAX, an unknown key, a missing sender, user or recipient, a NUL in
 * the message, or more than MAILDROP_RCPTS_MAX recipients makes the file malformed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE	/* O_CLOEXEC under -std=c11, without config.h: the fuzz target builds from this file alone */
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "maildrop.h"
#include "util.h"

#define MAILDROP_MAGIC	"luamta-maildrop 1\n"

void
maildrop_dir(const char *spool, char *buf, size_t size)
{
	snprintf(buf, size, "%s/maildrop", spool);
}

int
maildrop_prepare(const char *spool, char *err, size_t errsize)
{
	char	 dir[4200];

	maildrop_dir(spool, dir, sizeof(dir));
	if (mkdir(dir, 01733) == -1 && errno != EEXIST) {
		snprintf(err, errsize, "%s: %s", dir, strerror(errno));
		return -1;
	}
	/* mkdir applies the umask; the directory must be writable by all and sticky */
	if (chmod(dir, 01733) == -1) {
		snprintf(err, errsize, "%s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

int
maildrop_name_ok(const char *name)
{
	size_t	 i;

	if (name[0] == '.' || name[0] == '\0' || strlen(name) > 64)
		return 0;
	for (i = 0; name[i] != '\0'; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'A' && name[i] <= 'Z') ||
		    (name[i] >= 'a' && name[i] <= 'z') || name[i] == '-' || name[i] == '.'))
			return 0;
	return 1;
}

static int
maildrop_clean(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

static int
maildrop_put(int fd, const void *p, size_t n)
{
	const char	*c = p;

	while (n > 0) {
		ssize_t	 w = write(fd, c, n);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return w == 0 ? EIO : errno;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int
maildrop_write(const char *spool, const struct maildrop_msg *msg, char *err, size_t errsize)
{
	char		 dir[4200], tmp[4300], final[4300], head[2048];
	struct timespec	 ts;
	size_t		 i;
	int		 fd, e = 0, n;

	err[0] = '\0';
	if (!maildrop_clean(msg->sender) || !maildrop_clean(msg->fullname) || !maildrop_clean(msg->user)) {
		snprintf(err, errsize, "a control character in the sender, user or full name");
		return EINVAL;
	}
	maildrop_dir(spool, dir, sizeof(dir));
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(final, sizeof(final), "%s/%lld-%09ld-%ld", dir, (long long)ts.tv_sec, ts.tv_nsec, (long)getpid());
	snprintf(tmp, sizeof(tmp), "%s/.%lld-%09ld-%ld", dir, (long long)ts.tv_sec, ts.tv_nsec, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1) {
		e = errno;
		snprintf(err, errsize, "cannot create a file in %s: %s", dir, strerror(e));
		return e;
	}
	n = snprintf(head, sizeof(head), MAILDROP_MAGIC "sender %s\nuser %s\ntime %ld\n", msg->sender, msg->user,
	    msg->time);
	e = maildrop_put(fd, head, (size_t)n);
	if (e == 0 && msg->fullname[0] != '\0') {
		n = snprintf(head, sizeof(head), "fullname %s\n", msg->fullname);
		e = maildrop_put(fd, head, (size_t)n);
	}
	for (i = 0; e == 0 && i < msg->nrcpts; i++) {
		if (!maildrop_clean(msg->rcpts[i]) || strlen(msg->rcpts[i]) >= MAILDROP_ADDR_MAX) {
			e = EINVAL;
			snprintf(err, errsize, "recipient %zu: too long or with a control character", i + 1);
			break;
		}
		n = snprintf(head, sizeof(head), "rcpt %s\n", msg->rcpts[i]);
		e = maildrop_put(fd, head, (size_t)n);
	}
	if (e == 0)
		e = maildrop_put(fd, "\n", 1);
	if (e == 0)
		e = maildrop_put(fd, msg->message, msg->len);
	if (e == 0 && fsync(fd) == -1)
		e = errno;
	if (close(fd) == -1 && e == 0)
		e = errno;
	if (e == 0 && rename(tmp, final) == -1)
		e = errno;
	if (e == 0 && util_fsync_dir(dir) == -1)
		e = errno;
	if (e != 0) {
		unlink(tmp);
		if (err[0] == '\0' || e != EINVAL)
			snprintf(err, errsize, "cannot write to %s: %s", dir, strerror(e));
	}
	return e;
}

void
maildrop_msg_clear(struct maildrop_msg *msg)
{
	size_t	 i;

	for (i = 0; i < msg->nrcpts; i++)
		free(msg->rcpts[i]);
	free(msg->rcpts);
	memset(msg, 0, sizeof(*msg));
}

int
maildrop_parse(const char *buf, size_t len, struct maildrop_msg *msg, char *err, size_t errsize)
{
	const char	*p = buf, *end = buf + len, *nl;
	int		 have_sender = 0, have_user = 0;

	memset(msg, 0, sizeof(*msg));
	if (len < sizeof(MAILDROP_MAGIC) - 1 || memcmp(buf, MAILDROP_MAGIC, sizeof(MAILDROP_MAGIC) - 1) != 0) {
		snprintf(err, errsize, "not a luamta maildrop file (version 1)");
		return -1;
	}
	p += sizeof(MAILDROP_MAGIC) - 1;
	for (;;) {
		char		 line[MAILDROP_ADDR_MAX + 16];
		size_t		 n;
		const char	*v;

		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			snprintf(err, errsize, "the envelope has no end");
			goto bad;
		}
		n = (size_t)(nl - p);
		if (n == 0) {
			p = nl + 1;
			break;
		}
		if (n >= sizeof(line) || memchr(p, '\0', n) != NULL) {
			snprintf(err, errsize, "an envelope line is too long or holds a NUL");
			goto bad;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		p = nl + 1;
		if ((v = strchr(line, ' ')) == NULL) {
			snprintf(err, errsize, "envelope line without a value: %.40s", line);
			goto bad;
		}
		v++;
		if (strncmp(line, "sender ", 7) == 0) {
			util_strlcpy(msg->sender, v, sizeof(msg->sender));
			have_sender = 1;
		} else if (strncmp(line, "user ", 5) == 0) {
			util_strlcpy(msg->user, v, sizeof(msg->user));
			have_user = 1;
		} else if (strncmp(line, "time ", 5) == 0)
			msg->time = strtol(v, NULL, 10);
		else if (strncmp(line, "fullname ", 9) == 0)
			util_strlcpy(msg->fullname, v, sizeof(msg->fullname));
		else if (strncmp(line, "rcpt ", 5) == 0) {
			if (msg->nrcpts == MAILDROP_RCPTS_MAX || *v == '\0') {
				snprintf(err, errsize, "an empty recipient, or more than %d", MAILDROP_RCPTS_MAX);
				goto bad;
			}
			msg->rcpts = xrealloc(msg->rcpts, (msg->nrcpts + 1) * sizeof(*msg->rcpts));
			msg->rcpts[msg->nrcpts++] = xstrdup(v);
		} else {
			snprintf(err, errsize, "unknown envelope line: %.40s", line);
			goto bad;
		}
	}
	if (!have_sender || !have_user || msg->nrcpts == 0) {
		snprintf(err, errsize, "the envelope lacks %s", !have_sender ? "a sender" : !have_user ? "a user" :
		    "a recipient");
		goto bad;
	}
	if (memchr(p, '\0', (size_t)(end - p)) != NULL) {
		snprintf(err, errsize, "the message holds a NUL octet");
		goto bad;
	}
	msg->message = p;
	msg->len = (size_t)(end - p);
	return 0;
bad:
	maildrop_msg_clear(msg);
	return -1;
}
