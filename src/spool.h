/*
 * spool.h - message files on disk. A message is written to <spool>/tmp/<id>, fsynced, renamed into
 * <spool>/queue/<id>, and the queue directory is fsynced, all on the I/O thread; only then does the caller
 * hear about it (and only then may it answer 250). No other code renames spool files.
 *
 * A queue file is an envelope followed by the message:
 *	LUAMTA-QUEUE 1
 *	id <queue id>
 *	time <arrival, Unix seconds>
 *	client <ip> <port>
 *	helo <name>
 *	proto <ESMTP|SMTP|...>
 *	sender <address>		(empty after the space for the null sender)
 *	param <KEY[=VALUE]>		(zero or more: BODY=8BITMIME, SMTPUTF8)
 *	rcpt <address>			(one or more)
 *	end
 *	<the message, CRLF line ends, trace headers first>
 */
#ifndef SPOOL_H
#define SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "queueid.h"

struct evbuffer;
struct iothread;

#define SPOOL_MAGIC		"LUAMTA-QUEUE 1"
#define SPOOL_ENV_MAX		(1024 * 1024)	/* an envelope larger than this is corrupt */
#define SPOOL_RCPTS_MAX		100000

/* spool_done_fn - the commit finished: err is 0 (on disk, 250 may be sent) or an errno value. */
typedef void	 spool_done_fn(uint64_t owner, const char *id, int err);

/* spool_prepare - create <spool>/{tmp,queue} and remove what a crash left in tmp/. Startup only. */
int		 spool_prepare(const char *spool, char *err, size_t errsize);

/*
 * spool_commit - write head then body as queue file id. Takes head and body (frees them). spool is borrowed
 * and must outlive the commit. done(owner, id, err) runs on the loop.
 */
void		 spool_commit(struct iothread *, const char *spool, const char *id, struct evbuffer *head,
		    struct evbuffer *body, spool_done_fn *done, uint64_t owner);

/* spool_reply_for - the SMTP reply for a failed commit: 452 4.3.1 for a full disk, 451 4.3.0 otherwise. */
const char	*spool_reply_for(int err);

struct spool_env {
	char		 id[QUEUEID_SIZE];
	double		 time;
	char		 client[64];
	char		 helo[256];
	char		 sender[512];
	char		**rcpts;	/* owns nrcpts strings */
	size_t		 nrcpts;
	size_t		 body_offset;	/* where the message starts in the file */
};

/* spool_env_parse - parse an envelope from buf (the start of a queue file). 0, or -1 with err. */
int		 spool_env_parse(const char *buf, size_t len, struct spool_env *, char *err, size_t errsize);
void		 spool_env_free(struct spool_env *);

#endif
