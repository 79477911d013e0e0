/*
 * iothread.h - a thread that does the disk work the event loop must never wait for (write, fsync, rename,
 * unlink). Jobs run in the order submitted; completions come back to the loop through a pipe. Jobs that ask
 * for a directory sync share one fsync of that directory per batch, so a burst of commits costs one
 * directory flush, not one each. Other slow work that must stay off the loop gets an iothread of its own
 * (password checks in smtp_auth.c, DKIM signatures in lb_dkim.c), so that it never waits behind the disk.
 */
#ifndef IOTHREAD_H
#define IOTHREAD_H

struct event_base;
struct iothread;

/* iot_work_fn - runs on the I/O thread; returns 0 or an errno value. It must not touch loop-owned data. */
typedef int	 iot_work_fn(void *arg);
/* iot_done_fn - runs on the loop after the work (and the directory sync, if asked); err is 0 or errno. */
typedef void	 iot_done_fn(void *arg, int err);

struct iothread	*iot_new(struct event_base *);
/* iot_count_commits - t's batches are the spool's group commits: count their sizes (luamta_commit_batch_size). */
void		 iot_count_commits(struct iothread *);
/* iot_batch_max - at most n jobs per batch (set before the first job): 1 for jobs that take long each (a DKIM
 * signature), so that each result comes back as soon as it is made, not with the rest of its batch. */
void		 iot_batch_max(struct iothread *, int n);
/* iot_submit - queue a job. sync_dir (borrowed until done runs; may be NULL) is fsynced after the batch. */
void		 iot_submit(struct iothread *, iot_work_fn *, iot_done_fn *, void *arg, const char *sync_dir);
int		 iot_pending(struct iothread *);	/* jobs not yet completed on the loop */
void		 iot_free(struct iothread *);	/* waits for queued jobs; their done callbacks are not run */

#endif
