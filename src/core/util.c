/*
 * util.c - checked allocation (out of memory is fatal: an MTA that half-allocates loses mail), bounded copies,
 * clocks, mkdir -p, directory fsync and the id->pointer map used for asynchronous answers.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void *
xmalloc(size_t n)
{
	void	*p = malloc(n ? n : 1);

	if (p == NULL)
		fatal("out of memory (%zu octets)", n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void	*p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		fatal("out of memory (%zu x %zu octets)", n, size);
	return p;
}

void *
xrealloc(void *old, size_t n)
{
	void	*p = realloc(old, n ? n : 1);

	if (p == NULL)
		fatal("out of memory (%zu octets)", n);
	return p;
}

char *
xstrdup(const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t	 len = strlen(src);

	if (size > 0) {
		size_t	 n = len < size - 1 ? len : size - 1;

		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

double
util_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

double
util_monotonic(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
util_mkdirs(const char *path, int mode)
{
	char	 buf[4096];
	char	*p;

	if (util_strlcpy(buf, path, sizeof(buf)) >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

int
util_fsync_dir(const char *path)
{
	int	 fd, rc;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

void
util_rfc5322_date(char *buf, size_t size, double t)
{
	time_t		 tt = (time_t)t;
	struct tm	 tm;

	localtime_r(&tt, &tm);
	if (strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0 && size > 0)
		buf[0] = '\0';
}

uint64_t
util_hash64(const char *s, uint64_t seed)
{
	uint64_t	 h = 1469598103934665603ULL ^ (seed * 0x9e3779b97f4a7c15ULL);	/* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

/* Open addressing with linear probing; 0 is the empty key, deleted slots are tombstones (key 0, p != NULL). */
struct idmap_slot {
	uint64_t	 id;
	void		*p;
};

struct idmap {
	struct idmap_slot	*slots;
	size_t			 cap;		/* power of two */
	size_t			 count;		/* live entries */
	size_t			 used;		/* live + tombstones */
};

static const char	 idmap_tomb;

static size_t
idmap_hash(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id;
}

struct idmap *
idmap_new(void)
{
	struct idmap	*m = xcalloc(1, sizeof(*m));

	m->cap = 64;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	return m;
}

static void
idmap_grow(struct idmap *m)
{
	struct idmap_slot	*old = m->slots;
	size_t			 oldcap = m->cap, i;

	if (m->count * 2 >= m->cap)
		m->cap *= 2;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	m->count = m->used = 0;
	for (i = 0; i < oldcap; i++)
		if (old[i].id != 0)
			idmap_put(m, old[i].id, old[i].p);
	free(old);
}

void
idmap_put(struct idmap *m, uint64_t id, void *p)
{
	size_t	 i;

	if ((m->used + 1) * 4 >= m->cap * 3)
		idmap_grow(m);
	for (i = idmap_hash(id) & (m->cap - 1); m->slots[i].id != 0 || m->slots[i].p != NULL;
	    i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].id == id) {
			m->slots[i].p = p;
			return;
		}
	}
	m->slots[i].id = id;
	m->slots[i].p = p;
	m->count++;
	m->used++;
}

void *
idmap_get(struct idmap *m, uint64_t id)
{
	size_t	 i;

	if (id == 0)
		return NULL;
	for (i = idmap_hash(id) & (m->cap - 1); m->slots[i].id != 0 || m->slots[i].p != NULL;
	    i = (i + 1) & (m->cap - 1))
		if (m->slots[i].id == id)
			return m->slots[i].p;
	return NULL;
}

void
idmap_del(struct idmap *m, uint64_t id)
{
	size_t	 i;

	if (id == 0)
		return;
	for (i = idmap_hash(id) & (m->cap - 1); m->slots[i].id != 0 || m->slots[i].p != NULL;
	    i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].id == id) {
			m->slots[i].id = 0;
			m->slots[i].p = (void *)&idmap_tomb;
			m->count--;
			return;
		}
	}
}

size_t
idmap_count(struct idmap *m)
{
	return m->count;
}
