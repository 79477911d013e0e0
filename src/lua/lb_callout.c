/*
 * lb_callout.c - the circuit breakers of the call outs (docs/callouts.md, "Failure policy"). One breaker per
 * service name, kept for the life of the worker process, so that a reload does not forget that a service is
 * down. Opening and closing are logged: `callout service="redis default" breaker=open failures=5 cooldown=30`.
 *	lb_breaker_get()	the breaker of a service
 *	lb_breaker_allow()	may a call go out now?
 *	lb_breaker_result()	count a success or a failure
 */
#include "config.h"

#include <string.h>
#include <time.h>

#include "lb_callout.h"
#include "log.h"
#include "util.h"

#define LB_BREAKERS_MAX	256	/* services per process; more names share the last slot's fate: none */

static struct lb_breaker	*lb_breakers[LB_BREAKERS_MAX];
static int			 lb_nbreakers;

double
lb_callout_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct lb_breaker *
lb_breaker_get(const char *name)
{
	static struct lb_breaker	 spare;		/* past LB_BREAKERS_MAX: a breaker that is shared */
	struct lb_breaker		*b;
	int				 i;

	for (i = 0; i < lb_nbreakers; i++)
		if (strcmp(lb_breakers[i]->name, name) == 0)
			return lb_breakers[i];
	if (lb_nbreakers == LB_BREAKERS_MAX) {
		util_strlcpy(spare.name, "(too many services)", sizeof(spare.name));
		return &spare;
	}
	b = xcalloc(1, sizeof(*b));
	util_strlcpy(b->name, name, sizeof(b->name));
	lb_breakers[lb_nbreakers++] = b;
	return b;
}

int
lb_breaker_allow(struct lb_breaker *b)
{
	if (!b->open)
		return 1;
	if (lb_callout_now() < b->open_until)
		return 0;
	/* Cool-down over: let calls through; the next failure opens it again at once (fails is still high). */
	b->open = 0;
	log_notice("callout service=\"%s\" breaker=half-open", b->name);
	return 1;
}

void
lb_breaker_result(struct lb_breaker *b, int ok, int failures, double cooldown)
{
	if (ok) {
		if (b->fails >= failures && failures > 0)
			log_notice("callout service=\"%s\" breaker=closed", b->name);
		b->fails = 0;
		return;
	}
	b->fails++;
	if (failures > 0 && b->fails >= failures && !b->open) {
		b->open = 1;
		b->trips++;
		b->open_until = lb_callout_now() + cooldown;
		log_warn("callout service=\"%s\" breaker=open failures=%d cooldown=%g trips=%ld", b->name, b->fails,
		    cooldown, b->trips);
	}
}
