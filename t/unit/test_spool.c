/*
 * test_spool.c - the spool (src/queue/spool.c): spool_state_append() when the disk refuses part of an append:
 * under a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored as the daemon does) a write is cut short and the next
 * one fails with EFBIG, a real partial append. The append is taken back whole, so the state file never ends in a
 * cut line that would swallow the next append's first line (docs/reliability.md, "Faults").
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_file.h"
#include "spool.h"
#include "tap.h"

#define ID	"0123456789ABCDEF0123"

/* state_of - the state file of ID parsed for two recipients; its size in *size. */
static int
state_of(const char *spool, struct qf_state *st, off_t *size)
{
	char		 path[SPOOL_PATH_MAX], buf[8192], err[128];
	FILE		*f;
	size_t		 n;
	struct stat	 sb;

	spool_path(spool, SPOOL_D_STATE, ID, path, sizeof(path));
	if ((f = fopen(path, "rb")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	*size = stat(path, &sb) == 0 ? sb.st_size : -1;
	return qf_state_parse(buf, n, 2, st, err, sizeof(err));
}

static void
test_partial_append(const char *spool)
{
	char		 lines[1024], line[512];
	size_t		 n;
	off_t		 before, after;
	struct qf_state	 st;
	struct rlimit	 rl, low;
	int		 err;

	n = qf_state_line(line, sizeof(line), 0, QF_DEFERRED, "4.4.1", "connection refused");
	ok(spool_state_append(spool, ID, line, n) == 0, "a first line");
	ok(state_of(spool, &st, &before) == 0 && before == (off_t)n, "the file holds it");
	qf_state_free(&st);

	/* Room for ten more octets: the first write of the next append is cut there, the second fails. */
	getrlimit(RLIMIT_FSIZE, &rl);
	low = rl;
	low.rlim_cur = (rlim_t)before + 10;
	ok(setrlimit(RLIMIT_FSIZE, &low) == 0, "setrlimit: %s", strerror(errno));
	n = qf_state_line(lines, sizeof(lines), 0, QF_DELIVERED, "2.0.0", "delivered to maildir of jdoe");
	n += qf_state_line(lines + n, sizeof(lines) - n, 1, QF_DEFERRED, "4.4.1", "connection refused");
	err = spool_state_append(spool, ID, lines, n);
	setrlimit(RLIMIT_FSIZE, &rl);
	ok(err == EFBIG, "the append fails: %s", strerror(err));
	ok(state_of(spool, &st, &after) == 0, "the file reads");
	ok(after == before, "taken back whole: %lld octets, was %lld", (long long)after, (long long)before);
	ok(st.rcpts[0].state == QF_DEFERRED && st.bad == 0, "nothing of it is left");
	qf_state_free(&st);

	/* The caller appends the same lines again once there is room: each one counts. */
	ok(spool_state_append(spool, ID, lines, n) == 0, "appended again");
	ok(state_of(spool, &st, &after) == 0, "the file reads");
	ok(st.bad == 0, "no broken line: %zu", st.bad);
	ok(st.rcpts[0].state == QF_DELIVERED && st.rcpts[1].state == QF_DEFERRED, "both outcomes are on record");
	qf_state_free(&st);
}

int
main(void)
{
	char	 dir[] = "/tmp/luamta-test-spool.XXXXXX", err[256], cmd[128];

	signal(SIGXFSZ, SIG_IGN);	/* as the daemon: EFBIG, not death */
	if (mkdtemp(dir) == NULL || spool_mkdirs(dir, err, sizeof(err)) == -1) {
		printf("cannot make a spool in %s: %s\n", dir, strerror(errno));
		return 1;
	}
	test_partial_append(dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("cannot remove %s\n", dir);
	return tap_done();
}
