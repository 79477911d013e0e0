/*
 * util.h - small helpers every module uses: checked allocation, bounded string copies, clocks, an id->pointer map.
 */
#ifndef UTIL_H
#define UTIL_H

#include <stddef.h>
#include <stdint.h>

void		*xmalloc(size_t);
void		*xcalloc(size_t, size_t);
void		*xrealloc(void *, size_t);
char		*xstrdup(const char *);
/* util_strlcpy - copy with truncation; returns strlen(src) so that >= size means truncated. */
size_t		 util_strlcpy(char *dst, const char *src, size_t size);
double		 util_now(void);		/* wall clock, seconds */
double		 util_monotonic(void);		/* monotonic clock, seconds */
int		 util_mkdirs(const char *path, int mode);	/* mkdir -p; 0 or -1 */
int		 util_fsync_dir(const char *path);	/* open the directory and fsync it; 0 or -1 */
void		 util_rfc5322_date(char *buf, size_t size, double t);
/* util_hash64 - FNV-1a of a string, mixed with seed; never 0 (0 is the empty key of an idmap). */
uint64_t	 util_hash64(const char *s, uint64_t seed);

/*
 * idmap - maps 64-bit ids to borrowed pointers, so that an asynchronous answer carries an id and finds its owner
 * only if the owner still exists (STYLE.md: "an async answer carries an id, not a pointer").
 */
struct idmap;
struct idmap	*idmap_new(void);
void		 idmap_put(struct idmap *, uint64_t id, void *p);
void		*idmap_get(struct idmap *, uint64_t id);
void		 idmap_del(struct idmap *, uint64_t id);
size_t		 idmap_count(struct idmap *);

#endif
