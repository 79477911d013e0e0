/*
 * connlimit.c - shared connection counters (see connlimit.h). Atomic adds on MAP_SHARED memory: no locks, no
 * messages between workers.
 */
#include "config.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "connlimit.h"

#define CONNLIMIT_SLOTS	65536

struct connlimit_region {
	int	 total;
	int	 slot[CONNLIMIT_SLOTS];
};

static struct connlimit_region	*connlimit_r;		/* nworkers regions */
static int			 connlimit_n;
static int			 connlimit_self = -1;

int
connlimit_init(int nworkers)
{
	if (nworkers < 1 || nworkers > CONNLIMIT_WORKERS_MAX)
		return -1;
	connlimit_r = mmap(NULL, sizeof(*connlimit_r) * nworkers, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (connlimit_r == MAP_FAILED) {
		connlimit_r = NULL;
		return -1;
	}
	connlimit_n = nworkers;
	return 0;
}

void
connlimit_select(int worker)
{
	connlimit_self = worker;
}

void
connlimit_reset(int worker)
{
	if (connlimit_r != NULL && worker >= 0 && worker < connlimit_n)
		memset(&connlimit_r[worker], 0, sizeof(connlimit_r[worker]));
}

static uint64_t
connlimit_hash(const struct sockaddr *sa)
{
	const unsigned char	*p;
	size_t			 n, i;
	uint64_t		 h = 1469598103934665603ULL;	/* FNV-1a */

	if (sa->sa_family == AF_INET6) {
		p = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		n = 16;
	} else {
		p = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		n = 4;
	}
	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static int
connlimit_sum(size_t off)
{
	int	 i, sum = 0;

	for (i = 0; i < connlimit_n; i++)
		sum += __atomic_load_n((int *)((char *)&connlimit_r[i] + off), __ATOMIC_RELAXED);
	return sum;
}

int
connlimit_acquire(const struct sockaddr *sa, int per_ip_max, int total_max, unsigned long long *key)
{
	struct connlimit_region	*me;
	uint64_t		 h;
	unsigned		 a, b;
	int			 na, nb;

	*key = 0;
	if (connlimit_r == NULL || connlimit_self < 0)
		return 0;
	me = &connlimit_r[connlimit_self];
	h = connlimit_hash(sa);
	a = (unsigned)(h & (CONNLIMIT_SLOTS - 1));
	b = (unsigned)((h >> 32) & (CONNLIMIT_SLOTS - 1));
	if (connlimit_sum(offsetof(struct connlimit_region, total)) >= total_max)
		return -1;
	na = connlimit_sum(offsetof(struct connlimit_region, slot) + a * sizeof(int));
	nb = connlimit_sum(offsetof(struct connlimit_region, slot) + b * sizeof(int));
	if ((na < nb ? na : nb) >= per_ip_max)
		return -1;
	__atomic_add_fetch(&me->total, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&me->slot[a], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&me->slot[b], 1, __ATOMIC_RELAXED);
	*key = ((unsigned long long)a << 32) | b | (1ULL << 63);
	return 0;
}

void
connlimit_release(unsigned long long key)
{
	struct connlimit_region	*me;
	unsigned		 a, b;

	if (connlimit_r == NULL || connlimit_self < 0 || key == 0)
		return;
	me = &connlimit_r[connlimit_self];
	a = (unsigned)((key >> 32) & (CONNLIMIT_SLOTS - 1));
	b = (unsigned)(key & (CONNLIMIT_SLOTS - 1));
	__atomic_sub_fetch(&me->slot[a], 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&me->slot[b], 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&me->total, 1, __ATOMIC_RELAXED);
}
