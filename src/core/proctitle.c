/*
 * proctitle.c - process titles. Linux shows a process's argv area in /proc/PID/cmdline and ps -o args, so the
 * title is written over the original argv strings (and the environment strings that follow them, once both are
 * copied to the heap); prctl(PR_SET_NAME) sets the short name that ps -o comm and top show. It never changes
 * what the program reads: proctitle_init() returns a heap copy of argv for that.
 *	proctitle_init()	copy argv and environ away; remember the area that can be overwritten
 *	proctitle_set()		write a title into that area
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "proctitle.h"
#include "util.h"

extern char	**environ;

static char	*proctitle_area;	/* the original argv[0]; NULL until proctitle_init() */
static size_t	 proctitle_size;	/* octets from argv[0] to the end of the last contiguous string */

char **
proctitle_init(int argc, char **argv)
{
	char	**copy, **env, *end;
	int	 i, n;

	copy = xcalloc((size_t)argc + 1, sizeof(*copy));
	for (i = 0; i < argc; i++)
		copy[i] = xstrdup(argv[i]);
	if (argc == 0 || argv[0] == NULL)
		return copy;
	/* The kernel lays out the argv strings, then the environment strings, one after the other. */
	end = argv[0] + strlen(argv[0]) + 1;
	for (i = 1; i < argc; i++)
		if (argv[i] == end)
			end = argv[i] + strlen(argv[i]) + 1;
	for (n = 0; environ[n] != NULL; n++)
		continue;
	env = xcalloc((size_t)n + 1, sizeof(*env));
	for (i = 0; i < n; i++) {
		if (environ[i] == end)
			end = environ[i] + strlen(environ[i]) + 1;
		env[i] = xstrdup(environ[i]);
	}
	environ = env;
	proctitle_area = argv[0];
	proctitle_size = (size_t)(end - argv[0]);
	return copy;
}

void
proctitle_set(const char *title)
{
	size_t	 len;

#ifdef __linux__
	(void)prctl(PR_SET_NAME, title, 0, 0, 0);
#endif
	if (proctitle_area == NULL || proctitle_size < 2)
		return;
	len = strlen(title);
	if (len > proctitle_size - 1)
		len = proctitle_size - 1;
	memcpy(proctitle_area, title, len);
	/* The rest stays NUL, so that /proc/PID/cmdline ends with the title (ps shows no stale arguments). */
	memset(proctitle_area + len, '\0', proctitle_size - len);
}
