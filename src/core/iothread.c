/*
 * iothread.c - one disk thread per process. The loop hands it jobs under a mutex; the thread takes the pending
 * jobs, at most IOT_BATCH_MAX at a time (a batch), runs each, fsyncs each distinct sync_dir once, then hands the
 * batch back and writes one byte to a pipe that the loop watches. The cap keeps results flowing: a burst of ten
 * thousand loads after a restart comes back 64 at a time, not after the last one (docs/admin.md, "The queue at
 * scale"). Only iothread.c crosses the thread boundary.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "iothread.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define IOT_DIRS_MAX	8	/* distinct directories synced per batch; more fall back to one sync each */
#define IOT_BATCH_MAX	64	/* jobs per batch: commits still share an fsync, results do not wait long */

struct iot_job {
	iot_work_fn	*work;
	iot_done_fn	*done;
	void		*arg;
	const char	*sync_dir;
	int		 err;
	struct iot_job	*next;
};

struct iothread {
	pthread_t	 thread;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	struct iot_job	*todo, **todo_tail;	/* guarded by mu */
	struct iot_job	*done, **done_tail;	/* guarded by mu */
	int		 stop;			/* guarded by mu */
	int		 pending;		/* loop only */
	int		 pipe[2];
	struct event	*ev;
	int		 commit_metrics;	/* set before the first job: batches count as group commits */
	size_t		 batch_max;		/* set before the first job: jobs per batch (IOT_BATCH_MAX) */
};

/* iot_sync_batch - fsync each distinct sync_dir of the batch once; returns how many jobs waited for a sync. */
static size_t
iot_sync_batch(struct iot_job *batch)
{
	const char	*dirs[IOT_DIRS_MAX];
	int		 errs[IOT_DIRS_MAX];
	size_t		 ndirs = 0, i, synced = 0;
	struct iot_job	*j;

	for (j = batch; j != NULL; j = j->next) {
		if (j->sync_dir == NULL || j->err != 0)
			continue;
		synced++;
		for (i = 0; i < ndirs; i++)
			if (strcmp(dirs[i], j->sync_dir) == 0)
				break;
		if (i == ndirs) {
			if (ndirs == IOT_DIRS_MAX) {
				j->err = util_fsync_dir(j->sync_dir) == 0 ? 0 : errno;
				continue;
			}
			dirs[ndirs] = j->sync_dir;
			errs[ndirs] = util_fsync_dir(j->sync_dir) == 0 ? 0 : errno;
			ndirs++;
		}
		if (errs[i] != 0)
			j->err = errs[i];
	}
	return synced;
}

static void *
iot_main(void *arg)
{
	struct iothread	*t = arg;
	struct iot_job	*batch, *j, *last;
	size_t		 synced, n;
	char		 one = 1;

	for (;;) {
		pthread_mutex_lock(&t->mu);
		while (t->todo == NULL && !t->stop)
			pthread_cond_wait(&t->cv, &t->mu);
		if (t->todo == NULL && t->stop) {
			pthread_mutex_unlock(&t->mu);
			return NULL;
		}
		batch = t->todo;
		for (n = 1, last = batch; last->next != NULL && n < t->batch_max; last = last->next)
			n++;
		t->todo = last->next;
		last->next = NULL;
		if (t->todo == NULL)
			t->todo_tail = &t->todo;
		pthread_mutex_unlock(&t->mu);

		for (j = batch; j != NULL; j = j->next)
			j->err = j->work(j->arg);
		synced = iot_sync_batch(batch);
		if (t->commit_metrics && synced > 0)
			metrics_commit_batch(synced);

		for (last = batch; last->next != NULL; last = last->next)
			;
		pthread_mutex_lock(&t->mu);
		*t->done_tail = batch;
		t->done_tail = &last->next;
		pthread_mutex_unlock(&t->mu);
		while (write(t->pipe[1], &one, 1) == -1 && errno == EINTR)
			;
	}
}

void
iot_count_commits(struct iothread *t)
{
	t->commit_metrics = 1;
}

void
iot_batch_max(struct iothread *t, int n)
{
	t->batch_max = n > 0 ? (size_t)n : 1;
}

static void
iot_wake(evutil_socket_t fd, short what, void *arg)
{
	struct iothread	*t = arg;
	struct iot_job	*list, *j;
	char		 buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&t->mu);
	list = t->done;
	t->done = NULL;
	t->done_tail = &t->done;
	pthread_mutex_unlock(&t->mu);
	while ((j = list) != NULL) {
		list = j->next;
		t->pending--;
		j->done(j->arg, j->err);
		free(j);
	}
}

struct iothread *
iot_new(struct event_base *base)
{
	struct iothread	*t = xcalloc(1, sizeof(*t));

	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	t->todo_tail = &t->todo;
	t->done_tail = &t->done;
	t->batch_max = IOT_BATCH_MAX;
	if (pipe2(t->pipe, O_NONBLOCK | O_CLOEXEC) == -1)
		fatal("iothread: pipe: %s", strerror(errno));
	t->ev = event_new(base, t->pipe[0], EV_READ | EV_PERSIST, iot_wake, t);
	event_add(t->ev, NULL);
	if ((errno = pthread_create(&t->thread, NULL, iot_main, t)) != 0)
		fatal("iothread: pthread_create: %s", strerror(errno));
	return t;
}

void
iot_submit(struct iothread *t, iot_work_fn *work, iot_done_fn *done, void *arg, const char *sync_dir)
{
	struct iot_job	*j = xcalloc(1, sizeof(*j));

	j->work = work;
	j->done = done;
	j->arg = arg;
	j->sync_dir = sync_dir;
	t->pending++;
	pthread_mutex_lock(&t->mu);
	*t->todo_tail = j;
	t->todo_tail = &j->next;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

int
iot_pending(struct iothread *t)
{
	return t->pending;
}

void
iot_free(struct iothread *t)
{
	struct iot_job	*j;

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = 1;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	while ((j = t->done) != NULL) {
		t->done = j->next;
		free(j);
	}
	event_free(t->ev);
	close(t->pipe[0]);
	close(t->pipe[1]);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
}
