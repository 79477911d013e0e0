/*
 * spool.c - queue files: commit on the I/O thread (write, fsync, rename, directory fsync), and parse an
 * envelope back. It never answers SMTP and never runs on the loop except to hand work over and back.
 *	spool_prepare()		create the directories, sweep tmp/ (startup)
 *	spool_commit()		make a message durable; the result arrives by callback
 *	spool_env_parse()	read an envelope (router, queue command)
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "iothread.h"
#include "log.h"
#include "spool.h"
#include "util.h"

struct spool_job {
	char		 id[QUEUEID_SIZE];
	char		 tmp[4200];
	char		 final[4200];
	char		 queue_dir[4200];
	struct evbuffer	*head;		/* owned */
	struct evbuffer	*body;		/* owned */
	spool_done_fn	*done;
	uint64_t	 owner;
};

int
spool_prepare(const char *spool, char *err, size_t errsize)
{
	static const char *const subdirs[] = { "tmp", "queue" };
	char		 path[4200];
	DIR		*d;
	struct dirent	*de;
	size_t		 i;
	int		 swept = 0;

	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", spool, subdirs[i]);
		if (util_mkdirs(path, 0700) == -1) {
			snprintf(err, errsize, "cannot create %s: %s", path, strerror(errno));
			return -1;
		}
	}
	/* A file in tmp/ never got its 250: the client will send it again. */
	snprintf(path, sizeof(path), "%s/tmp", spool);
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			if (unlinkat(dirfd(d), de->d_name, 0) == 0)
				swept++;
		}
		closedir(d);
	}
	if (swept > 0)
		log_notice("spool: removed %d unfinished file(s) from %s", swept, path);
	return 0;
}

static int
spool_write_all(int fd, struct evbuffer *buf)
{
	while (evbuffer_get_length(buf) > 0) {
		int	 n = evbuffer_write(buf, fd);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		if (n == 0)
			return EIO;
	}
	return 0;
}

/* spool_commit_work - on the I/O thread. Leaves either the final file or nothing at all. */
static int
spool_commit_work(void *arg)
{
	struct spool_job	*j = arg;
	int			 fd, err;

	if ((fd = open(j->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1)
		return errno;
	if ((err = spool_write_all(fd, j->head)) == 0 && (err = spool_write_all(fd, j->body)) == 0)
		if (fsync(fd) == -1)
			err = errno;
	if (close(fd) == -1 && err == 0)
		err = errno;
	if (err == 0 && rename(j->tmp, j->final) == -1)
		err = errno;
	if (err != 0)
		unlink(j->tmp);
	return err;
}

static void
spool_commit_done(void *arg, int err)
{
	struct spool_job	*j = arg;

	if (err != 0) {
		/* A failed directory sync leaves a file whose durability we cannot promise: take it back. */
		unlink(j->final);
		log_error("%s: spool commit failed: %s", j->id, strerror(err));
	}
	evbuffer_free(j->head);
	evbuffer_free(j->body);
	j->done(j->owner, j->id, err);
	free(j);
}

void
spool_commit(struct iothread *iot, const char *spool, const char *id, struct evbuffer *head, struct evbuffer *body,
    spool_done_fn *done, uint64_t owner)
{
	struct spool_job	*j = xcalloc(1, sizeof(*j));

	util_strlcpy(j->id, id, sizeof(j->id));
	snprintf(j->tmp, sizeof(j->tmp), "%s/tmp/%s", spool, id);
	snprintf(j->final, sizeof(j->final), "%s/queue/%s", spool, id);
	snprintf(j->queue_dir, sizeof(j->queue_dir), "%s/queue", spool);
	j->head = head;
	j->body = body;
	j->done = done;
	j->owner = owner;
	iot_submit(iot, spool_commit_work, spool_commit_done, j, j->queue_dir);
}

const char *
spool_reply_for(int err)
{
	if (err == ENOSPC || err == EDQUOT)
		return "452 4.3.1 Insufficient system storage";
	return "451 4.3.0 Queue file write error";
}

/* spool_line - the next LF-terminated line of buf from *pos; NULL at the end or when a line has no LF. */
static const char *
spool_line(const char *buf, size_t len, size_t *pos, size_t *linelen)
{
	const char	*start = buf + *pos, *nl;

	if (*pos >= len)
		return NULL;
	if ((nl = memchr(start, '\n', len - *pos)) == NULL)
		return NULL;
	*linelen = (size_t)(nl - start);
	*pos += *linelen + 1;
	return start;
}

static void
spool_copy_field(char *dst, size_t size, const char *p, size_t n)
{
	if (n >= size)
		n = size - 1;
	memcpy(dst, p, n);
	dst[n] = '\0';
}

int
spool_env_parse(const char *buf, size_t len, struct spool_env *env, char *err, size_t errsize)
{
	const char	*line;
	size_t		 pos = 0, n, cap = 0;
	int		 ended = 0;

	memset(env, 0, sizeof(*env));
	if (len > SPOOL_ENV_MAX + 64 * 1024 * 1024)
		len = SPOOL_ENV_MAX;
	line = spool_line(buf, len, &pos, &n);
	if (line == NULL || n != strlen(SPOOL_MAGIC) || memcmp(line, SPOOL_MAGIC, n) != 0) {
		snprintf(err, errsize, "not a luamta queue file");
		return -1;
	}
	while (!ended && pos < SPOOL_ENV_MAX && (line = spool_line(buf, len, &pos, &n)) != NULL) {
		if (n == 3 && memcmp(line, "end", 3) == 0)
			ended = 1;
		else if (n > 3 && memcmp(line, "id ", 3) == 0)
			spool_copy_field(env->id, sizeof(env->id), line + 3, n - 3);
		else if (n > 5 && memcmp(line, "time ", 5) == 0) {
			char	 num[64];

			spool_copy_field(num, sizeof(num), line + 5, n - 5);
			env->time = strtod(num, NULL);
		} else if (n >= 7 && memcmp(line, "client ", 7) == 0)
			spool_copy_field(env->client, sizeof(env->client), line + 7, n - 7);
		else if (n >= 5 && memcmp(line, "helo ", 5) == 0)
			spool_copy_field(env->helo, sizeof(env->helo), line + 5, n - 5);
		else if (n >= 7 && memcmp(line, "sender ", 7) == 0)
			spool_copy_field(env->sender, sizeof(env->sender), line + 7, n - 7);
		else if (n > 5 && memcmp(line, "rcpt ", 5) == 0) {
			if (env->nrcpts == SPOOL_RCPTS_MAX)
				break;
			if (env->nrcpts == cap) {
				cap = cap ? cap * 2 : 8;
				env->rcpts = xrealloc(env->rcpts, cap * sizeof(*env->rcpts));
			}
			env->rcpts[env->nrcpts] = xmalloc(n - 5 + 1);
			spool_copy_field(env->rcpts[env->nrcpts], n - 5 + 1, line + 5, n - 5);
			env->nrcpts++;
		}
		/* Other lines (proto, param, later additions) are kept in the file and ignored here. */
	}
	if (!ended || !queueid_valid(env->id) || env->nrcpts == 0) {
		snprintf(err, errsize, "%s", !ended ? "envelope has no end line" :
		    env->nrcpts == 0 ? "envelope has no recipient" : "envelope has no valid id");
		spool_env_free(env);
		return -1;
	}
	env->body_offset = pos;
	return 0;
}

void
spool_env_free(struct spool_env *env)
{
	size_t	 i;

	for (i = 0; i < env->nrcpts; i++)
		free(env->rcpts[i]);
	free(env->rcpts);
	env->rcpts = NULL;
	env->nrcpts = 0;
}
