/*
 * router_intake.h - which messages enter the router's active queue, and when (docs/admin.md, "The queue at
 * scale"). The router asks it for messages; it reads the spool's incoming/ and queue/ directories on the
 * router's I/O thread a batch at a time and never lets more than routing.active_limit messages be active.
 */
#ifndef ROUTER_INTAKE_H
#define ROUTER_INTAKE_H

#include <stddef.h>

struct event_base;
struct iothread;

/* intake_take_fn - start work on message id (the router's take); flush: even if its retry time has not come.
 * 1 when it did, 0 when not now (busy, scheduled, stopping). */
typedef int	 intake_take_fn(const char *id, int flush);
/* intake_active_fn - how many messages are active now. */
typedef size_t	 intake_active_fn(void);

/* intake_horizon_fn - the furthest ahead (seconds) a due time is trusted: a file due later than that was given
 * its mtime before the clock was set back, and is due now. */
typedef double	 intake_horizon_fn(void);

/* intake_init - spool is copied; iot is borrowed (the router's I/O thread). Starts the drain of incoming/ and
 * the first walk of queue/. */
void		 intake_init(struct event_base *, struct iothread *, const char *spool, size_t active_limit,
		    intake_take_fn *, intake_active_fn *, intake_horizon_fn *);
void		 intake_set_limit(size_t);	/* a reload changed routing.active_limit */
/* intake_hint - a worker committed id: take it now if there is room (else the drain finds it). */
void		 intake_hint(const char *id);
/* intake_room - a message left the active queue: take the next ones waiting. */
void		 intake_room(void);
/* intake_rescan - walk queue/ again for messages whose time has come; flush: every message, due or not. */
void		 intake_rescan(int flush);
/* intake_stop - no more jobs; a walk in progress is abandoned. */
void		 intake_stop(void);

#endif
