/*
 * spool.c - the spool on disk (spool.h): the directory list and paths, the commit of a message (write, fsync,
 * rename, directory fsync on an I/O thread), reading a message and its state back, appending state lines, and
 * every rename and removal. The text of the files is queue_file.c's. It never answers SMTP and never does file
 * work on the loop except at start.
 *	spool_prepare()		create the directories, sweep tmp/ (startup)
 *	spool_head_add()	the envelope of a message to commit
 *	spool_commit()		make a message durable; the result arrives by callback
 *	spool_write_message()	the same, blocking (the router's record thread: bounces)
 *	spool_load()		read a message (or its start) and its state lines (router, queue command)
 *	spool_read_body()	a chunk of a message, for delivery
 *	spool_state_append()	record outcomes
 *	spool_admit()		incoming/ -> queue/, when the router takes a message
 *	spool_finish(), spool_delete(), spool_hold(), spool_release(), spool_state_sweep(), spool_set_due(),
 *	spool_quarantine()
 *	spool_walk_*()		one directory, entry by entry
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "iothread.h"
#include "log.h"
#include "spool.h"
#include "util.h"

const char *const spool_dirs[SPOOL_NDIRS] = { "tmp", "incoming", "queue", "hold", "state", "corrupt" };

void
spool_dir_path(const char *spool, enum spool_dir d, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", spool, spool_dirs[d]);
}

/* The hashed directories (spool.h): queue/ and state/, one sub-directory per last hex digit of the ID. */
static const char	 spool_hex[] = "0123456789ABCDEF";

static int
spool_hashed(enum spool_dir d)
{
	return d == SPOOL_D_QUEUE || d == SPOOL_D_STATE;
}

void
spool_path(const char *spool, enum spool_dir d, const char *id, char *buf, size_t size)
{
	size_t	 n = strlen(id);

	if (spool_hashed(d) && n > 0)
		snprintf(buf, size, "%s/%s/%c/%s", spool, spool_dirs[d], id[n - 1], id);
	else
		snprintf(buf, size, "%s/%s/%s", spool, spool_dirs[d], id);
}

struct spool_job {
	char		 id[QUEUEID_SIZE];
	char		 tmp[SPOOL_PATH_MAX];
	char		 final[SPOOL_PATH_MAX];
	char		 queue_dir[SPOOL_PATH_MAX];
	struct evbuffer	*head;		/* owned */
	struct evbuffer	*body;		/* owned */
	spool_done_fn	*done;
	uint64_t	 owner;
};

int
spool_mkdirs(const char *spool, char *err, size_t errsize)
{
	char	 path[SPOOL_PATH_MAX];
	size_t	 i, k, n;

	for (i = 0; i < SPOOL_NDIRS; i++) {
		spool_dir_path(spool, (enum spool_dir)i, path, sizeof(path));
		if (util_mkdirs(path, 0700) == -1) {
			snprintf(err, errsize, "cannot create %s: %s", path, strerror(errno));
			return -1;
		}
		for (k = 0; spool_hashed((enum spool_dir)i) && k < 16; k++) {
			spool_dir_path(spool, (enum spool_dir)i, path, sizeof(path));
			n = strlen(path);
			snprintf(path + n, sizeof(path) - n, "/%c", spool_hex[k]);
			if (util_mkdirs(path, 0700) == -1) {
				snprintf(err, errsize, "cannot create %s: %s", path, strerror(errno));
				return -1;
			}
		}
	}
	return 0;
}

int
spool_chown(const char *spool, uid_t uid, gid_t gid, char *err, size_t errsize)
{
	char	 path[SPOOL_PATH_MAX];
	size_t	 i, k, n;

	if (chown(spool, uid, gid) == -1) {
		snprintf(err, errsize, "chown %s: %s", spool, strerror(errno));
		return -1;
	}
	for (i = 0; i < SPOOL_NDIRS; i++)
		for (k = 0; k < (spool_hashed((enum spool_dir)i) ? 17 : 1); k++) {
			spool_dir_path(spool, (enum spool_dir)i, path, sizeof(path));
			if (k > 0) {
				n = strlen(path);
				snprintf(path + n, sizeof(path) - n, "/%c", spool_hex[k - 1]);
			}
			if (chown(path, uid, gid) == -1 && errno != ENOENT) {
				snprintf(err, errsize, "chown %s: %s", path, strerror(errno));
				return -1;
			}
		}
	return 0;
}

/* spool_rehash - move the files a flat queue/ or state/ of an older version holds into their sub-directories. */
static void
spool_rehash(const char *spool, enum spool_dir dir)
{
	char		 path[SPOOL_PATH_MAX], to[SPOOL_PATH_MAX];
	DIR		*d;
	struct dirent	*de;
	int		 moved = 0;

	spool_dir_path(spool, dir, path, sizeof(path));
	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!queueid_valid(de->d_name))
			continue;
		spool_path(spool, dir, de->d_name, to, sizeof(to));
		if (renameat(dirfd(d), de->d_name, AT_FDCWD, to) == 0)
			moved++;
	}
	closedir(d);
	if (moved > 0) {
		util_fsync_dir(path);
		log_notice("spool: moved %d file(s) of %s into its hashed sub-directories", moved, path);
	}
}

int
spool_prepare(const char *spool, char *err, size_t errsize)
{
	char		 path[SPOOL_PATH_MAX];
	DIR		*d;
	struct dirent	*de;
	int		 swept = 0;

	if (spool_mkdirs(spool, err, errsize) == -1)
		return -1;
	spool_rehash(spool, SPOOL_D_QUEUE);
	spool_rehash(spool, SPOOL_D_STATE);
	/* A file in tmp/ never got its 250: the client will send it again. */
	spool_dir_path(spool, SPOOL_D_TMP, path, sizeof(path));
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

/* spool_write_file - write head then body to tmp, fsync, rename to final. Leaves either final or nothing. */
static int
spool_write_file(const char *tmp, const char *final, struct evbuffer *head, struct evbuffer *body)
{
	int	 fd, err;

	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1)
		return errno;
	if ((err = spool_write_all(fd, head)) == 0 && (err = spool_write_all(fd, body)) == 0)
		if (fsync(fd) == -1)
			err = errno;
	if (close(fd) == -1 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, final) == -1)
		err = errno;
	if (err != 0)
		unlink(tmp);
	return err;
}

/* spool_commit_work - on the I/O thread; the directory sync follows for the whole batch (iothread.h). */
static int
spool_commit_work(void *arg)
{
	struct spool_job	*j = arg;

	return spool_write_file(j->tmp, j->final, j->head, j->body);
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
	spool_path(spool, SPOOL_D_TMP, id, j->tmp, sizeof(j->tmp));
	spool_path(spool, SPOOL_D_INCOMING, id, j->final, sizeof(j->final));
	spool_dir_path(spool, SPOOL_D_INCOMING, j->queue_dir, sizeof(j->queue_dir));
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
	if (err == EFBIG)	/* the file size limit (ulimit -f, or SPOOL_FILE_MAX): sending again cannot help */
		return "552 5.3.4 Message size exceeds fixed limit";
	return "451 4.3.0 Queue file write error";
}

int
spool_head_add(struct evbuffer *head, const struct qf_env *env, char *err, size_t errsize)
{
	char	*text;
	size_t	 len;

	if (qf_env_format(env, &text, &len, err, errsize) == -1)
		return -1;
	evbuffer_add(head, text, len);
	free(text);
	return 0;
}

int
spool_write_message(const char *spool, const struct qf_env *env, struct evbuffer *body)
{
	char		 tmp[SPOOL_PATH_MAX], final[SPOOL_PATH_MAX], qdir[SPOOL_PATH_MAX], why[128];
	struct evbuffer	*head = evbuffer_new();
	int		 err;

	if (spool_head_add(head, env, why, sizeof(why)) == -1) {
		evbuffer_free(head);
		return EINVAL;
	}
	spool_path(spool, SPOOL_D_TMP, env->id, tmp, sizeof(tmp));
	spool_path(spool, SPOOL_D_INCOMING, env->id, final, sizeof(final));
	spool_dir_path(spool, SPOOL_D_INCOMING, qdir, sizeof(qdir));
	err = spool_write_file(tmp, final, head, body);
	if (err == 0 && util_fsync_dir(qdir) == -1) {
		err = errno;
		unlink(final);
	}
	evbuffer_free(head);
	return err;
}

/* spool_read - up to max octets of path (all of it when max is 0) into a new NUL-terminated buffer. 0 or errno. */
static int
spool_read(const char *path, size_t max, char **data, size_t *len, unsigned long long *file_size)
{
	struct stat	 st;
	size_t		 want, got = 0;
	int		 fd;

	*data = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return errno;
	if (fstat(fd, &st) == -1) {
		close(fd);
		return errno;
	}
	*file_size = (unsigned long long)st.st_size;
	if ((unsigned long long)st.st_size > SPOOL_FILE_MAX) {
		close(fd);
		return EFBIG;
	}
	want = (size_t)st.st_size;
	if (max > 0 && want > max)
		want = max;
	*data = xmalloc(want + 1);
	while (got < want) {
		ssize_t	 n = read(fd, *data + got, want - got);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			int	 e = n == 0 ? EIO : errno;

			close(fd);
			free(*data);
			*data = NULL;
			return e;
		}
		got += (size_t)n;
	}
	close(fd);
	(*data)[got] = '\0';
	*len = got;
	return 0;
}

int
spool_load(const char *spool, const char *id, int any, size_t max, struct spool_msg *m, char *why, size_t whysize)
{
	char			 path[SPOOL_PATH_MAX];
	char			*state;
	size_t			 slen;
	unsigned long long	 ssize;
	int			 err;

	memset(m, 0, sizeof(*m));
	snprintf(why, whysize, "cannot read it");
	if (!queueid_valid(id))
		return ENOENT;
	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	err = spool_read(path, max, &m->data, &m->len, &m->file_size);
	if (err == ENOENT) {
		spool_path(spool, SPOOL_D_INCOMING, id, path, sizeof(path));
		err = spool_read(path, max, &m->data, &m->len, &m->file_size);
	}
	if (err == ENOENT && any) {
		spool_path(spool, SPOOL_D_HOLD, id, path, sizeof(path));
		if ((err = spool_read(path, max, &m->data, &m->len, &m->file_size)) == 0)
			m->held = 1;
	}
	if (err != 0)
		return err;
	if (qf_env_parse(m->data, m->len, &m->env, why, whysize) == -1) {
		spool_msg_free(m);
		return EINVAL;
	}
	if (!queueid_valid(m->env.id) || strcmp(m->env.id, id) != 0) {
		snprintf(why, whysize, "envelope has no valid id");
		spool_msg_free(m);
		return EINVAL;
	}
	if (!m->env.has_size)	/* written before the size line: the message as stored */
		m->env.size = m->file_size - m->env.body_offset;
	spool_path(spool, SPOOL_D_STATE, id, path, sizeof(path));
	if ((err = spool_read(path, 0, &state, &slen, &ssize)) != 0 && err != ENOENT) {
		snprintf(why, whysize, "cannot read its state file: %s", strerror(err));
		spool_msg_free(m);
		return err;
	}
	err = qf_state_parse(state ? state : "", slen, m->env.nrcpts, &m->state, why, whysize);
	free(state);
	if (err == -1) {
		spool_msg_free(m);
		return ENOMEM;
	}
	return 0;
}

int
spool_read_body(const char *spool, const char *id, size_t body_offset, unsigned long long off, char *buf,
    size_t size, size_t *got)
{
	char	 path[SPOOL_PATH_MAX];
	ssize_t	 n;
	int	 fd, err = 0;

	*got = 0;
	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return errno;
	while (*got < size) {
		n = pread(fd, buf + *got, size - *got, (off_t)(body_offset + off + *got));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			err = errno;
			break;
		}
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	close(fd);
	return err;
}

void
spool_msg_free(struct spool_msg *m)
{
	qf_env_free(&m->env);
	qf_state_free(&m->state);
	free(m->data);
	m->data = NULL;
}

int
spool_state_append(const char *spool, const char *id, const char *buf, size_t len)
{
	char		 path[SPOOL_PATH_MAX];
	struct stat	 st;
	size_t		 off = 0;
	int		 fd, err = 0;

	spool_path(spool, SPOOL_D_STATE, id, path, sizeof(path));
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) == -1)
		return errno;
	if (fstat(fd, &st) == -1) {
		err = errno;
		close(fd);
		return err;
	}
	while (off < len) {
		ssize_t	 n = write(fd, buf + off, len - off);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n == 0 ? EIO : errno;
			break;
		}
		off += (size_t)n;
	}
	if (err == 0 && fsync(fd) == -1)
		err = errno;
	/*
	 * A failed append (a short write then ENOSPC or EFBIG, or an fsync error) is taken back whole: a line cut
	 * short would swallow the first line of the next append, and the caller keeps these lines to append them
	 * again (docs/reliability.md, "Faults"). Shrinking a file needs no room.
	 */
	if (err != 0 && ftruncate(fd, st.st_size) == 0)
		(void)fsync(fd);
	close(fd);
	return err;
}

enum spool_where
spool_where(const char *spool, const char *id)
{
	char		 path[SPOOL_PATH_MAX];
	struct stat	 st;

	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	if (stat(path, &st) == 0)
		return SPOOL_W_QUEUE;
	spool_path(spool, SPOOL_D_INCOMING, id, path, sizeof(path));
	if (stat(path, &st) == 0)
		return SPOOL_W_INCOMING;
	spool_path(spool, SPOOL_D_HOLD, id, path, sizeof(path));
	if (stat(path, &st) == 0)
		return SPOOL_W_HOLD;
	return SPOOL_W_NONE;
}

/* spool_where_dir - the directory of a place spool_where found. */
static enum spool_dir
spool_where_dir(enum spool_where w)
{
	return w == SPOOL_W_HOLD ? SPOOL_D_HOLD : w == SPOOL_W_INCOMING ? SPOOL_D_INCOMING : SPOOL_D_QUEUE;
}

int
spool_finish(const char *spool, const char *id)
{
	char	 path[SPOOL_PATH_MAX];

	/* The queue file first: the other order would deliver it again to every recipient after a crash. */
	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	if (unlink(path) == -1) {
		if (errno != ENOENT)
			return errno;
		spool_path(spool, SPOOL_D_INCOMING, id, path, sizeof(path));
		if (unlink(path) == -1 && errno != ENOENT)
			return errno;
	}
	spool_path(spool, SPOOL_D_STATE, id, path, sizeof(path));
	unlink(path);
	return 0;
}

int
spool_delete(const char *spool, const char *id)
{
	char	 path[SPOOL_PATH_MAX];

	spool_path(spool, spool_where_dir(spool_where(spool, id)), id, path, sizeof(path));
	if (unlink(path) == -1)
		return errno;
	spool_path(spool, SPOOL_D_STATE, id, path, sizeof(path));
	unlink(path);
	return 0;
}

static int
spool_move(const char *spool, const char *id, enum spool_dir from, enum spool_dir to)
{
	char	 a[SPOOL_PATH_MAX], b[SPOOL_PATH_MAX];

	spool_path(spool, from, id, a, sizeof(a));
	spool_path(spool, to, id, b, sizeof(b));
	return rename(a, b) == -1 ? errno : 0;
}

int
spool_hold(const char *spool, const char *id)
{
	int	 err = spool_move(spool, id, SPOOL_D_QUEUE, SPOOL_D_HOLD);

	return err == ENOENT ? spool_move(spool, id, SPOOL_D_INCOMING, SPOOL_D_HOLD) : err;
}

/* spool_release - back through incoming/, so that the router's drain finds it even without a word from us. */
int
spool_release(const char *spool, const char *id)
{
	return spool_move(spool, id, SPOOL_D_HOLD, SPOOL_D_INCOMING);
}

int
spool_admit(const char *spool, const char *id)
{
	return spool_move(spool, id, SPOOL_D_INCOMING, SPOOL_D_QUEUE);
}

int
spool_set_due(const char *spool, const char *id, double when)
{
	char		 path[SPOOL_PATH_MAX];
	struct timespec	 ts[2];

	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	ts[0].tv_sec = ts[1].tv_sec = (time_t)when;
	ts[0].tv_nsec = ts[1].tv_nsec = (long)((when - (double)(time_t)when) * 1e9);
	return utimensat(AT_FDCWD, path, ts, 0) == -1 ? errno : 0;
}

double
spool_due(const char *spool, const char *id)
{
	char		 path[SPOOL_PATH_MAX];
	struct stat	 st;

	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	if (stat(path, &st) == -1)
		return -1;
	return (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
}

int
spool_quarantine(const char *spool, const char *id)
{
	char	 a[SPOOL_PATH_MAX], b[SPOOL_PATH_MAX];
	int	 err;

	if ((err = spool_move(spool, id, SPOOL_D_QUEUE, SPOOL_D_CORRUPT)) == ENOENT)
		err = spool_move(spool, id, SPOOL_D_INCOMING, SPOOL_D_CORRUPT);
	if (err != 0)
		return err;
	spool_path(spool, SPOOL_D_STATE, id, a, sizeof(a));
	snprintf(b, sizeof(b), "%s/%s/%s.state", spool, spool_dirs[SPOOL_D_CORRUPT], id);
	if (rename(a, b) == -1 && errno != ENOENT)
		return errno;
	return 0;
}

struct spool_walk {
	char	 path[SPOOL_PATH_MAX];	/* the directory */
	int	 hashed;
	int	 sub;			/* hashed: the sub-directory being read (16: done) */
	DIR	*d;			/* owns: the directory being read, or NULL */
};

/* spool_walk_dir - open the next directory of the walk; 0, or -1 when there is none left. */
static int
spool_walk_dir(struct spool_walk *w)
{
	char	 p[SPOOL_PATH_MAX + 4];

	if (w->d != NULL) {
		closedir(w->d);
		w->d = NULL;
	}
	if (!w->hashed)
		return -1;
	while (w->sub < 16) {
		snprintf(p, sizeof(p), "%s/%c", w->path, spool_hex[w->sub++]);
		if ((w->d = opendir(p)) != NULL)
			return 0;
	}
	return -1;
}

struct spool_walk *
spool_walk_open(const char *spool, enum spool_dir dir)
{
	struct spool_walk	*w = xcalloc(1, sizeof(*w));

	spool_dir_path(spool, dir, w->path, sizeof(w->path));
	if ((w->hashed = spool_hashed(dir)))
		spool_walk_dir(w);
	else
		w->d = opendir(w->path);
	if (w->d == NULL) {
		free(w);
		return NULL;
	}
	return w;
}

int
spool_walk_next(struct spool_walk *w, char id[QUEUEID_SIZE], double *mtime)
{
	struct dirent	*de;
	struct stat	 st;

	while (w->d != NULL) {
		if ((de = readdir(w->d)) == NULL) {
			if (spool_walk_dir(w) == -1)
				return 0;
			continue;
		}
		if (!queueid_valid(de->d_name))
			continue;
		if (fstatat(dirfd(w->d), de->d_name, &st, 0) == -1)
			continue;	/* gone meanwhile */
		util_strlcpy(id, de->d_name, QUEUEID_SIZE);
		*mtime = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
		return 1;
	}
	return 0;
}

long
spool_count_queued(const char *spool)
{
	static const enum spool_dir dirs[] = { SPOOL_D_INCOMING, SPOOL_D_QUEUE };
	char		 path[SPOOL_PATH_MAX + 4];
	DIR		*d;
	struct dirent	*de;
	long		 n = 0;
	size_t		 k;
	int		 sub;

	for (k = 0; k < 2; k++)
		for (sub = spool_hashed(dirs[k]) ? 0 : -1; sub < 16; sub++) {
			spool_dir_path(spool, dirs[k], path, sizeof(path));
			if (sub >= 0) {
				size_t	 len = strlen(path);

				snprintf(path + len, sizeof(path) - len, "/%c", spool_hex[sub]);
			}
			if ((d = opendir(path)) == NULL) {
				if (sub < 0)
					break;
				continue;
			}
			while ((de = readdir(d)) != NULL)
				n += queueid_valid(de->d_name);
			closedir(d);
			if (sub < 0)
				break;
		}
	return n;
}

void
spool_walk_close(struct spool_walk *w)
{
	if (w == NULL)
		return;
	if (w->d != NULL)
		closedir(w->d);
	free(w);
}

int
spool_state_sweep(const char *spool, const char *id)
{
	char		 path[SPOOL_PATH_MAX];
	struct stat	 st;

	if (!queueid_valid(id))
		return 0;
	spool_path(spool, SPOOL_D_QUEUE, id, path, sizeof(path));
	if (stat(path, &st) == 0 || errno != ENOENT)
		return 0;
	spool_path(spool, SPOOL_D_INCOMING, id, path, sizeof(path));
	if (stat(path, &st) == 0 || errno != ENOENT)
		return 0;
	spool_path(spool, SPOOL_D_HOLD, id, path, sizeof(path));
	if (stat(path, &st) == 0 || errno != ENOENT)
		return 0;
	spool_path(spool, SPOOL_D_STATE, id, path, sizeof(path));
	return unlink(path) == 0;
}
