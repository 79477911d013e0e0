/*
 * router_intake.c - which messages enter the router's active queue, and when (router_intake.h; docs/admin.md,
 * "The queue at scale"). Two sources, both read on the router's I/O thread a batch at a time, never as a whole
 * listing:
 *  - incoming/: what the workers committed and the router has not taken yet. A worker's datagram names each new
 *    message so that the router takes it at once, but the datagram is only a hint (a worker drops it when the
 *    router's socket buffer is full), so incoming/ is drained every second as well: no message waits longer
 *    than that for want of a wake-up (Postfix's qmgr scans incoming/ on its trigger and on a timer alike).
 *  - queue/: messages taken before, deferred or left by a stop, each due at its file's mtime (spool.h). Walked
 *    at start (every message, due or not: a stop or crash may have cut an attempt short), every ROUTER_RESCAN
 *    seconds once the last walk has ended (the messages whose time has come), and from the start on flush.
 *    A due time further ahead than the router's horizon (its longest retry interval + 60 s) is not one the
 *    router set but a clock set back since (docs/reliability.md, "Faults"): that message is due now, not in
 *    days, as router_load_work() also decides.
 * At most routing.active_limit messages are active (taken and not finished) at once. The names a batch finds
 * beyond the room wait in a list of at most INTAKE_BATCH names, and no further batch is read until that list is
 * empty, so memory follows the limit, not the queue. New mail goes first: incoming/ is drained before the walk
 * of queue/ goes on.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "iothread.h"
#include "queueid.h"
#include "router_intake.h"
#include "spool.h"
#include "util.h"

#define INTAKE_BATCH	512	/* names read per job */
#define INTAKE_STEP	4096	/* directory entries looked at per job, taken or not */
#define INTAKE_TICK	1	/* seconds between two drains of incoming/ */

enum intake_src { INTAKE_INCOMING, INTAKE_QUEUE };

struct intake_job {
	enum intake_src		 src;
	char			*spool;		/* borrowed from the intake */
	struct spool_walk	*walk;		/* INTAKE_QUEUE: the walk in progress (NULL: begin one) */
	int			 flush;		/* take messages that are not due yet */
	int			 ended;		/* the walk reached the end of queue/ */
	double			 now;
	double			 horizon;	/* a due time beyond now + horizon is a clock set back: due */
	size_t			 want;
	size_t			 n;
	int			 more;		/* INTAKE_INCOMING: the batch was full */
	char			 ids[INTAKE_BATCH][QUEUEID_SIZE];
};

static struct {
	struct event_base	*base;
	struct iothread		*iot;
	char			*spool;		/* owns */
	size_t			 limit;
	intake_take_fn		*take;
	intake_active_fn	*active;
	intake_horizon_fn	*horizon;
	struct intake_job	*job;		/* owns: the one job in flight, or NULL */
	char			 pending[INTAKE_BATCH][QUEUEID_SIZE];	/* found, waiting for room */
	size_t			 npending, next_pending;
	int			 pending_flush;	/* they came from a flush */
	int			 incoming_due;	/* drain incoming/ when there is room */
	int			 walking;	/* a walk of queue/ is under way */
	int			 walk_flush;
	int			 walk_restart;	/* a flush came during a job: begin again when it is back */
	struct spool_walk	*walk;		/* owns (touched on the I/O thread only inside a job) */
	struct event		*tick;
	int			 stopped;
} in;

static void	intake_pump(void);

static int
intake_room_left(void)
{
	return in.active() < in.limit;
}

static int
intake_work(void *arg)
{
	struct intake_job	*j = arg;
	struct spool_walk	*w;
	double			 mtime;
	size_t			 looked = 0;

	if (j->src == INTAKE_INCOMING) {
		if ((w = spool_walk_open(j->spool, SPOOL_D_INCOMING)) == NULL)
			return 0;
		while (j->n < j->want && spool_walk_next(w, j->ids[j->n], &mtime))
			j->n++;
		j->more = j->n == j->want;
		spool_walk_close(w);
		return 0;
	}
	if (j->walk == NULL && (j->walk = spool_walk_open(j->spool, SPOOL_D_QUEUE)) == NULL) {
		j->ended = 1;
		return 0;
	}
	while (j->n < j->want && looked++ < INTAKE_STEP) {
		if (!spool_walk_next(j->walk, j->ids[j->n], &mtime)) {
			spool_walk_close(j->walk);
			j->walk = NULL;
			j->ended = 1;
			break;
		}
		if (j->flush || mtime <= j->now || mtime > j->now + j->horizon)
			j->n++;
	}
	return 0;
}

static void
intake_done(void *arg, int err)
{
	struct intake_job	*j = arg;
	size_t			 i;

	in.job = NULL;
	for (i = 0; i < j->n; i++)
		memcpy(in.pending[i], j->ids[i], QUEUEID_SIZE);
	in.npending = j->n;
	in.next_pending = 0;
	in.pending_flush = j->flush;
	if (j->src == INTAKE_INCOMING)
		in.incoming_due = j->more;
	else {
		in.walk = j->walk;
		if (j->ended)
			in.walking = 0;
		if (in.walk_restart) {
			spool_walk_close(in.walk);
			in.walk = NULL;
			in.walking = 1;
			in.walk_flush = 1;
			in.walk_restart = 0;
		}
	}
	free(j);
	intake_pump();
}

static void
intake_submit(enum intake_src src)
{
	struct intake_job	*j = xcalloc(1, sizeof(*j));
	size_t			 room = in.limit - in.active();

	j->src = src;
	j->spool = in.spool;
	j->want = room < INTAKE_BATCH ? room : INTAKE_BATCH;
	j->now = util_now();
	j->horizon = in.horizon();	/* on the loop: a reload may change routing.retry */
	if (src == INTAKE_QUEUE) {
		j->walk = in.walk;
		j->flush = in.walk_flush;
		in.walk = NULL;		/* the job has it until it is back */
	}
	in.job = j;
	iot_submit(in.iot, intake_work, intake_done, j, NULL);
}

/* intake_pump - take what waits while there is room; then read the next batch, new mail first. */
static void
intake_pump(void)
{
	if (in.stopped)
		return;
	while (in.next_pending < in.npending && intake_room_left())
		in.take(in.pending[in.next_pending++], in.pending_flush);
	if (in.next_pending < in.npending || in.job != NULL || !intake_room_left())
		return;
	if (in.incoming_due)
		intake_submit(INTAKE_INCOMING);
	else if (in.walking)
		intake_submit(INTAKE_QUEUE);
}

static void
intake_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	in.incoming_due = 1;
	intake_pump();
}

void
intake_init(struct event_base *base, struct iothread *iot, const char *spool, size_t active_limit,
    intake_take_fn *take, intake_active_fn *active, intake_horizon_fn *horizon)
{
	struct timeval	 tv = { INTAKE_TICK, 0 };

	in.base = base;
	in.iot = iot;
	in.spool = xstrdup(spool);
	in.limit = active_limit ? active_limit : 1;
	in.take = take;
	in.active = active;
	in.horizon = horizon;
	in.tick = event_new(base, -1, EV_PERSIST, intake_tick_cb, NULL);
	event_add(in.tick, &tv);
	in.incoming_due = 1;
	in.walking = 1;
	in.walk_flush = 1;	/* at start every message is tried once, due or not (docs/admin.md) */
	intake_pump();
}

void
intake_set_limit(size_t limit)
{
	in.limit = limit ? limit : 1;
	intake_pump();
}

void
intake_hint(const char *id)
{
	if (!in.stopped && intake_room_left())
		in.take(id, 0);
}

void
intake_room(void)
{
	intake_pump();
}

void
intake_rescan(int flush)
{
	if (in.stopped)
		return;
	if (flush) {
		in.incoming_due = 1;
		if (in.job != NULL && in.job->src == INTAKE_QUEUE)
			in.walk_restart = 1;	/* the walk is out on the I/O thread */
		else {
			spool_walk_close(in.walk);
			in.walk = NULL;
			in.walking = 1;
			in.walk_flush = 1;
		}
	} else if (!in.walking) {
		in.walking = 1;
		in.walk_flush = 0;
	}
	intake_pump();
}

void
intake_stop(void)
{
	in.stopped = 1;
	if (in.tick != NULL) {
		event_free(in.tick);
		in.tick = NULL;
	}
	/* A job in flight is never run to its done callback (iot_free); its walk goes with the process. */
	spool_walk_close(in.walk);
	in.walk = NULL;
}
