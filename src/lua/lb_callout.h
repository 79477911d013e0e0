/*
 * lb_callout.h - what the call outs of rules share (docs/callouts.md): mta.http (lb_http.c), mta.redis
 * (lb_redis.c) and the per-service circuit breaker (lb_callout.c). A breaker counts the failures in a row of one
 * service (an HTTP host:port, a Redis name); after `failures` of them it opens and every call fails at once with
 * "circuit open" for `cooldown` seconds, then lets calls through again (one success closes it). It is per
 * worker process: each worker learns on its own that a service is down.
 */
#ifndef LB_CALLOUT_H
#define LB_CALLOUT_H

struct lua_State;

#define LB_BREAKER_NAME	128

struct lb_breaker {
	char	 name[LB_BREAKER_NAME];	/* "http 127.0.0.1:8080", "redis default" */
	int	 fails;			/* failures in a row */
	int	 open;			/* 1 while calls fail at once */
	double	 open_until;		/* monotonic seconds */
	long	 trips;			/* times it opened, for logs */
};

/* lb_breaker_get - the breaker of a service, made on first use; never freed (one per service). */
struct lb_breaker	*lb_breaker_get(const char *name);
/* lb_breaker_allow - 1 when a call may go out, 0 while the breaker is open. */
int			 lb_breaker_allow(struct lb_breaker *);
/* lb_breaker_result - count the outcome of one call; failures and cooldown come from the service's settings. */
void			 lb_breaker_result(struct lb_breaker *, int ok, int failures, double cooldown);
double			 lb_callout_now(void);		/* monotonic seconds */

void	 lb_http_register(struct lua_State *L);		/* core.http_request into [.. core] */
void	 lb_redis_register(struct lua_State *L);	/* core.redis into [.. core] */

#endif
