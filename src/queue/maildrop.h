/*
 * maildrop.h - the files `luamta sendmail` leaves in <spool>/maildrop/ for the pickup service (docs/admin.md,
 * "sendmail and mailq"). maildrop.c owns the format: it is the only writer and the only reader.
 *
 * A file is written under a dot name, fsynced, renamed to its final name and the directory fsynced, so a file
 * with a final name is whole and durable. The directory is sticky and writable by all (mode 1733), as Postfix's
 * historic maildrop: anyone may drop a file, nobody may list or take another's. The file's owner names the
 * submitting user; the uid written inside is only what sendmail believed.
 */
#ifndef MAILDROP_H
#define MAILDROP_H

#include <stddef.h>
#include <sys/types.h>

#define MAILDROP_RCPTS_MAX	1000
#define MAILDROP_ADDR_MAX	512

struct maildrop_msg {
	char		 sender[MAILDROP_ADDR_MAX];	/* "" for the null sender */
	char		 fullname[256];			/* -F, or "" */
	char		 user[64];			/* the submitting user's name */
	long		 time;
	char		**rcpts;			/* owns nrcpts, each owned */
	size_t		 nrcpts;
	const char	*message;			/* borrowed from the parsed buffer: the message, LF lines */
	size_t		 len;
};

/* maildrop_dir - "<spool>/maildrop" into buf. */
void	 maildrop_dir(const char *spool, char *buf, size_t size);
/* maildrop_prepare - create the directory (mode 1733) when missing. 0, or -1 with err. */
int	 maildrop_prepare(const char *spool, char *err, size_t errsize);
/*
 * maildrop_write - a durable maildrop file for msg (its message and len are what is written). Blocking: for
 * sendmail and the pickup's I/O thread. 0, or an errno value with err.
 */
int	 maildrop_write(const char *spool, const struct maildrop_msg *msg, char *err, size_t errsize);
/*
 * maildrop_parse - buf (NUL-terminated, len octets, kept by the caller while msg lives) into msg. 0, or -1 with
 * err saying what is malformed.
 */
int	 maildrop_parse(const char *buf, size_t len, struct maildrop_msg *msg, char *err, size_t errsize);
void	 maildrop_msg_clear(struct maildrop_msg *);
/* maildrop_name_ok - a name in the directory that is a finished file (not a dot file being written). */
int	 maildrop_name_ok(const char *name);

#endif
