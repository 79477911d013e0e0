/*
 * queueid.c - make queue IDs (see queueid.h). The counter breaks ties within one microsecond; the last ID's
 * time is remembered so that a clock that steps back still gives increasing IDs within a process.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "queueid.h"

void
queueid_new(char id[QUEUEID_SIZE])
{
	static unsigned long long	 last;		/* seconds * 1e6 + usec of the previous ID */
	static unsigned			 counter;
	struct timeval			 tv;
	unsigned long long		 now;

	gettimeofday(&tv, NULL);
	now = (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
	if (now <= last) {
		if (++counter > 0xff) {		/* 256 IDs in one microsecond: borrow the next one */
			counter = 0;
			now = last + 1;
		} else
			now = last;
	} else
		counter = 0;
	last = now;
	snprintf(id, QUEUEID_SIZE, "%08llX%05llX%05X%02X", (now / 1000000ULL) & 0xffffffffULL,
	    now % 1000000ULL, (unsigned)getpid() & 0xfffffu, counter & 0xffu);
}

int
queueid_valid(const char *s)
{
	size_t	 i;

	for (i = 0; i < QUEUEID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return s[QUEUEID_LEN] == '\0';
}
