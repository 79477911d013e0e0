/*
 * maildir.h - local delivery into a Maildir (tmp/, fsync, rename into new/, fsync new/). The write runs on
 * the I/O thread; maildir_path() is pure.
 */
#ifndef MAILDIR_H
#define MAILDIR_H

#include <stddef.h>

/*
 * maildir_path - expand delivery.maildir for mailbox ("user@domain"): %d is the domain (lower case), %u the
 * local part, %% a percent sign. A '/' in a value becomes '_' and a value starting with '.' gets a '_' in front,
 * so no address can climb out of the template. 0, or -1 when the result does not fit.
 */
int	 maildir_path(const char *tmpl, const char *mailbox, char *out, size_t size);

/*
 * maildir_read_fn - up to size octets of the message from offset off into buf; *got is 0 at its end. 0 or errno.
 */
typedef int	 maildir_read_fn(void *arg, unsigned long long off, char *buf, size_t size, size_t *got);

/*
 * maildir_deliver - write prefix (header lines, LF ends) then the message that read gives, a chunk at a time
 * (CRLF ends become LF, as Maildir readers expect), as one new file of the Maildir dir, creating
 * dir/{tmp,new,cur} as needed. unique makes the file name unique. Returns 0 once the file and new/ are on disk,
 * or an errno value with nothing left behind.
 */
int	 maildir_deliver(const char *dir, const char *unique, const char *prefix, maildir_read_fn *read, void *arg);

/* maildir_host - this machine's name as maildir_deliver() writes it into file names ('/' and ':' become '_'). */
void	 maildir_host(char *out, size_t size);

/*
 * maildir_name_ours - is name one that maildir_deliver() makes on host (as maildir_host() gives it), with a
 * unique of the router's form "<queue ID>.<recipient index>"? 1 with the writer's pid and the queue ID (qid
 * has QUEUEID_SIZE bytes), else 0. Files of other programs and other hosts are never ours.
 */
int	 maildir_name_ours(const char *name, const char *host, long *pid, char *qid);

#endif
