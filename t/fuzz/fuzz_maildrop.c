/*
 * fuzz_maildrop.c - libFuzzer target for maildrop_parse() in src/queue/maildrop.c: any input is parsed or refused,
 * never read out of bounds; what parses has a user, a sender line and 1 to MAILDROP_RCPTS_MAX recipients, and
 * its message lies inside the input and holds no NUL. The util.c functions maildrop.c uses are defined here, so
 * that the target links with maildrop.c alone. Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maildrop.h"
#include "util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

void *
xrealloc(void *p, size_t n)
{
	void	*q = realloc(p, n);

	if (q == NULL)
		abort();
	return q;
}

char *
xstrdup(const char *s)
{
	char	*p = strdup(s);

	if (p == NULL)
		abort();
	return p;
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t	 n = strlen(src);

	if (size > 0) {
		size_t	 c = n < size - 1 ? n : size - 1;

		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

int
util_fsync_dir(const char *path)
{
	(void)path;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct maildrop_msg	 m;
	char			 err[256];
	char			*buf = malloc(len + 1);

	assert(buf != NULL);
	memcpy(buf, data, len);
	buf[len] = '\0';
	if (maildrop_parse(buf, len, &m, err, sizeof(err)) == 0) {
		assert(m.nrcpts >= 1 && m.nrcpts <= MAILDROP_RCPTS_MAX);
		assert(m.message >= buf && m.message + m.len == buf + len);
		assert(memchr(m.message, '\0', m.len) == NULL);
		maildrop_msg_clear(&m);
	} else
		assert(err[0] != '\0');
	free(buf);
	return 0;
}
