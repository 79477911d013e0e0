/*
 * queuectl.h - `luamta queue`: list and show read the spool directly; delete, hold, release, flush and requeue
 * pick messages with selectors and ask the running router, one message at a time, through
 * <spool>/control.sock. The parsers below are pure, for t/unit/test_queuectl.c.
 */
#ifndef QUEUECTL_H
#define QUEUECTL_H

#include <stddef.h>

struct config;
struct spool_msg;

/* A message's state as selectors see it (docs/admin.md, "Queue commands"); --state takes several. */
#define QCTL_QUEUED	0x1u	/* in queue/, no attempt on record yet */
#define QCTL_DEFERRED	0x2u	/* in queue/, an attempt left recipients open (deferred, or held by the rules) */
#define QCTL_HELD	0x4u	/* in hold/ (luamta queue hold) */
#define QCTL_ACTIVE	0x8u	/* the router is delivering it now; only the router knows */
#define QCTL_FILES	(QCTL_QUEUED | QCTL_DEFERRED | QCTL_HELD)

/* The selectors of one command; every one given must match (AND). */
struct queuectl_sel {
	int		 all;		/* ALL */
	const char	**ids;		/* owns the array (nids), borrows the strings (argv) */
	size_t		 nids;
	const char	*from;		/* borrowed; "" for the null sender */
	const char	*to;		/* borrowed: a pending recipient, whole address */
	const char	*domain;	/* borrowed: a pending recipient's domain */
	double		 older_than;	/* seconds since arrival, when has_older */
	int		 has_older;
	unsigned	 states;	/* QCTL_* bits, any of them; 0 for any state */
};

/* The command line after "queue" (-c FILE skipped). */
struct queuectl_args {
	const char		*sub;		/* borrowed: list, show, delete, ...; NULL for list */
	struct queuectl_sel	 sel;
	int			 json;
	int			 pending;	/* list: only recipients not yet delivered or bounced */
	int			 dry_run;
};

/* queuectl_main - argv after "queue" (with -c FILE still in it); returns the exit status. */
int		 queuectl_main(const struct config *, int argc, char **argv);

/* queuectl_duration - "90", "90s", "15m", "2h", "3d", "1w", "1h30m" into *seconds. 0, or -1 (nothing set). */
int		 queuectl_duration(const char *, double *seconds);
/*
 * queuectl_states - "deferred", "held" (or "hold"), "active", "queued", or several with commas, as QCTL_ bits;
 * 0 if bad.
 */
unsigned	 queuectl_states(const char *);
/*
 * queuectl_parse - argv into a (borrows argv, which must outlive a). 0, or -1 with err (a usage error); on -1
 * nothing is owned. queuectl_args_free() releases a after 0.
 */
int		 queuectl_parse(int argc, char **argv, struct queuectl_args *a, char *err, size_t errsize);
void		 queuectl_args_free(struct queuectl_args *);
/* queuectl_sel_any - the selectors pick messages (an ID, ALL, or a filter); 0 when none was given. */
int		 queuectl_sel_any(const struct queuectl_sel *);
/* queuectl_msg_state - QCTL_QUEUED, QCTL_DEFERRED or QCTL_HELD, from the files alone. */
unsigned	 queuectl_msg_state(const struct spool_msg *);
/* queuectl_rcpt_pending - recipient i has no final outcome (neither delivered nor bounced). */
int		 queuectl_rcpt_pending(const struct spool_msg *, size_t i);
/*
 * queuectl_sel_match - message q against sel at time now: 1 it matches, 0 it does not, -1 it matches only if
 * the router is delivering it now (--state active and its state in the files is not one asked for).
 */
int		 queuectl_sel_match(const struct queuectl_sel *, const struct spool_msg *q, double now);

#endif
