/*
 * tap.h - the smallest test harness: ok() records one check; tap_done() prints "N passed, N failed" and gives the
 * exit status. Test files keep tables of {name, input, want} cases and loop over them.
 */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>

static int	tap_passed, tap_failed;

#define ok(cond, ...) do {						\
	if (cond) { tap_passed++; }					\
	else {								\
		tap_failed++;						\
		fprintf(stdout, "not ok: %s:%d: ", __FILE__, __LINE__);	\
		fprintf(stdout, __VA_ARGS__);				\
		fputc('\n', stdout);					\
	}								\
} while (0)

static int
tap_done(void)
{
	printf("%d passed, %d failed\n", tap_passed, tap_failed);
	return tap_failed ? 1 : 0;
}

#endif
