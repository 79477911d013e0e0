/*
 * connlimit.h - connection counts shared by all workers: total and per client IP. Counters live in a shared
 * anonymous mapping made by the master before it forks, one region per worker slot, so that the master can
 * zero the counts of a worker that died without touching the others. Per-IP counts are a count-min sketch
 * (two hashed slots per address, the smaller count wins): a fixed-size table that never needs cleaning, where
 * a collision can only over-count, erring towards refusing and never towards exceeding a limit. Workers check
 * and count without a lock, so concurrent accepts in two workers may pass a limit by one each.
 */
#ifndef CONNLIMIT_H
#define CONNLIMIT_H

#include <sys/socket.h>

#define CONNLIMIT_WORKERS_MAX	64

int	 connlimit_init(int nworkers);		/* master, before fork: 0 or -1 */
void	 connlimit_select(int worker);		/* worker: count in this region (0-based) */
void	 connlimit_reset(int worker);		/* master: the worker died; forget its connections */
/* connlimit_acquire - count a new connection. 0 and *key set, or -1 (over a limit; nothing counted). */
int	 connlimit_acquire(const struct sockaddr *, int per_ip_max, int total_max, unsigned long long *key);
void	 connlimit_release(unsigned long long key);

#endif
