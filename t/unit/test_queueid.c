/* test_queueid.c - queue IDs have the documented shape and never repeat within a process. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "queueid.h"
#include "tap.h"

static int
cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

int
main(void)
{
	static const struct { const char *name, *input; int want; } shapes[] = {
		{ "a valid id", "0123456789ABCDEF0123", 1 },
		{ "lower case", "0123456789abcdef0123", 0 },
		{ "too short", "0123456789ABCDEF012", 0 },
		{ "too long", "0123456789ABCDEF01234", 0 },
		{ "path tricks", "../../../etc/passwd0", 0 },
	};
	static char	 ids[20000][QUEUEID_SIZE];
	size_t		 i, n = sizeof(ids) / sizeof(ids[0]);
	int		 sorted = 1, dups = 0;

	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		ok(queueid_valid(shapes[i].input) == shapes[i].want, "%s", shapes[i].name);
	for (i = 0; i < n; i++) {
		queueid_new(ids[i]);
		if (!queueid_valid(ids[i]))
			break;
		if (i > 0 && strcmp(ids[i - 1], ids[i]) >= 0)
			sorted = 0;
	}
	ok(i == n, "every new id is valid");
	ok(sorted, "ids made in a row increase");
	qsort(ids, n, QUEUEID_SIZE, cmp);
	for (i = 1; i < n; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			dups++;
	ok(dups == 0, "20000 ids made at full speed are distinct (%d repeats)", dups);
	return tap_done();
}
