/*
 * maildir.c - Maildir delivery (see maildir.h). File names follow the Maildir convention
 * time.MusecPpid_unique.host so that other tools sort and recognise them, and so that the router's start-up
 * sweep can tell its own partial files in tmp/ from anyone else's (maildir_name_ours()).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "maildir.h"
#include "queueid.h"
#include "util.h"

static int
maildir_put(char *out, size_t size, size_t *pos, const char *val, size_t n, int lower)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		char	 c = val[i];

		if (*pos + 2 >= size)
			return -1;
		if (i == 0 && c == '.')
			out[(*pos)++] = '_';
		if (c == '/' || c == '\0')
			c = '_';
		out[(*pos)++] = lower ? (char)tolower((unsigned char)c) : c;
	}
	return 0;
}

int
maildir_path(const char *tmpl, const char *mailbox, char *out, size_t size)
{
	const char	*at = strrchr(mailbox, '@');
	const char	*p;
	size_t		 pos = 0;

	if (at == NULL || at == mailbox || at[1] == '\0')
		return -1;
	for (p = tmpl; *p; p++) {
		if (*p == '%' && p[1] == 'd') {
			if (maildir_put(out, size, &pos, at + 1, strlen(at + 1), 1) == -1)
				return -1;
			p++;
		} else if (*p == '%' && p[1] == 'u') {
			if (maildir_put(out, size, &pos, mailbox, (size_t)(at - mailbox), 0) == -1)
				return -1;
			p++;
		} else if (*p == '%' && p[1] == '%') {
			if (pos + 2 >= size)
				return -1;
			out[pos++] = '%';
			p++;
		} else {
			if (pos + 2 >= size)
				return -1;
			out[pos++] = *p;
		}
	}
	out[pos] = '\0';
	return 0;
}

static int
maildir_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t	 w = write(fd, p, n);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

#define MAILDIR_CHUNK	65536

/*
 * maildir_write_lf - copy the message from read to fd with every CRLF turned into LF, one write(2) per chunk.
 * A CR at the end of a chunk waits to see whether the next one starts with LF.
 */
static int
maildir_write_lf(int fd, maildir_read_fn *read, void *arg)
{
	char			*in = xmalloc(MAILDIR_CHUNK), *out = xmalloc(MAILDIR_CHUNK + 1);
	unsigned long long	 off = 0;
	size_t			 got, i, o;
	int			 cr = 0, err;

	for (;;) {
		if ((err = read(arg, off, in, MAILDIR_CHUNK, &got)) != 0 || got == 0)
			break;
		off += got;
		o = 0;
		for (i = 0; i < got; i++) {
			if (cr && in[i] != '\n')
				out[o++] = '\r';
			cr = in[i] == '\r';
			if (!cr)
				out[o++] = in[i];
		}
		if ((err = maildir_write_all(fd, out, o)) != 0)
			break;
	}
	if (err == 0 && cr)
		err = maildir_write_all(fd, "\r", 1);
	free(in);
	free(out);
	return err;
}

void
maildir_host(char *out, size_t size)
{
	size_t	 i;

	if (gethostname(out, size) != 0)
		util_strlcpy(out, "localhost", size);
	out[size - 1] = '\0';
	for (i = 0; out[i]; i++)	/* '/' and ':' have meanings in Maildir names */
		if (out[i] == '/' || out[i] == ':')
			out[i] = '_';
}

/* maildir_digits - skip a run of min to max digits at *p; 0 (and *p unmoved) when the run is shorter or longer. */
static int
maildir_digits(const char **p, size_t min, size_t max)
{
	size_t	 n = 0;

	while ((*p)[n] >= '0' && (*p)[n] <= '9')
		n++;
	if (n < min || n > max)
		return 0;
	*p += n;
	return 1;
}

int
maildir_name_ours(const char *name, const char *host, long *pid, char *qid)
{
	const char	*p = name, *start;

	/* <sec>.M<usec>P<pid>_<queue ID>.<index>.<host> */
	if (!maildir_digits(&p, 1, 20) || *p++ != '.' || *p++ != 'M' || !maildir_digits(&p, 6, 6) || *p++ != 'P')
		return 0;
	start = p;
	if (!maildir_digits(&p, 1, 10) || *p != '_')
		return 0;
	*pid = strtol(start, NULL, 10);
	p++;
	if (strlen(p) < QUEUEID_LEN || p[QUEUEID_LEN] != '.')
		return 0;
	memcpy(qid, p, QUEUEID_LEN);
	qid[QUEUEID_LEN] = '\0';
	if (!queueid_valid(qid))
		return 0;
	p += QUEUEID_LEN + 1;
	if (!maildir_digits(&p, 1, 20) || *p++ != '.')
		return 0;
	return strcmp(p, host) == 0;
}

int
maildir_deliver(const char *dir, const char *unique, const char *prefix, maildir_read_fn *read, void *arg)
{
	char		 tmp[4400], new[4400], sub[4300], host[256];
	struct timeval	 tv;
	int		 fd, err = 0;
	size_t		 i;
	static const char *const subs[] = { "tmp", "new", "cur" };

	for (i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
		if (util_mkdirs(sub, 0700) == -1)
			return errno;
	}
	maildir_host(host, sizeof(host));
	gettimeofday(&tv, NULL);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%lld.M%06ldP%d_%s.%s", dir, (long long)tv.tv_sec, (long)tv.tv_usec,
	    (int)getpid(), unique, host);
	snprintf(new, sizeof(new), "%s/new/%lld.M%06ldP%d_%s.%s", dir, (long long)tv.tv_sec, (long)tv.tv_usec,
	    (int)getpid(), unique, host);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1)
		return errno;
	if ((err = maildir_write_all(fd, prefix, strlen(prefix))) == 0 &&
	    (err = maildir_write_lf(fd, read, arg)) == 0 && fsync(fd) == -1)
		err = errno;
	if (close(fd) == -1 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, new) == -1)
		err = errno;
	if (err != 0) {
		unlink(tmp);
		return err;
	}
	snprintf(sub, sizeof(sub), "%s/new", dir);
	if (util_fsync_dir(sub) == -1) {
		/* The name in new/ may not survive a crash, and the message is deferred: a file left there would be a
		 * second copy once the retry delivers (docs/reliability.md, "Faults"). */
		err = errno;
		unlink(new);
		return err;
	}
	return 0;
}
