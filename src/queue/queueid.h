/*
 * queueid.h - queue IDs: unique across the workers of one host and sortable by arrival. Twenty upper-case hex
 * digits: seconds (8), microseconds (5), process id (5), a per-process counter (2). The spool creates files
 * with O_EXCL, so even a clash (a pid reused within the same microsecond) cannot overwrite a message.
 */
#ifndef QUEUEID_H
#define QUEUEID_H

#define QUEUEID_LEN	20
#define QUEUEID_SIZE	(QUEUEID_LEN + 1)

void	 queueid_new(char id[QUEUEID_SIZE]);
int	 queueid_valid(const char *);	/* 1 when the string has the shape of a queue ID */

#endif
