/*
 * queue_file.h - the text of the two spool files, and nothing else: no I/O, no allocation that can abort, no
 * other module (so that the parsers can be fuzzed alone). spool.c is the only caller; it reads and writes the
 * files.
 *
 * A queue file is an envelope followed by the message:
 *	LUAMTA-QUEUE 1
 *	id <queue id>
 *	time <arrival, Unix seconds>
 *	client <ip> <port>
 *	helo <name>
 *	proto <ESMTP|SMTP|...>
 *	auth <user, xtext (RFC 3461)>	(only after AUTH)
 *	size <octets>			(the message as queued, our headers included; older files have none)
 *	sender <address>		(empty after the space for the null sender)
 *	param <KEY[=VALUE]>		(zero or more: BODY=8BITMIME, SMTPUTF8)
 *	rcpt <address>			(one or more)
 *	end
 *	<the message, CRLF line ends, trace headers first>
 * Unknown lines before "end" are ignored, so that a later version may add some.
 *
 * A state file (<spool>/state/<id>) is appended to, one line per event, each write fsynced:
 *	<index> delivered <text>
 *	<index> bounced <dsn> <text>
 *	<index> deferred <dsn> <text>
 *	<index> held <dsn> <text>
 *	attempt <Unix seconds>		(an attempt ended with recipients left)
 *	warned <Unix seconds>		(the delay warning went out)
 * <index> counts the rcpt lines of the envelope from 0. delivered and bounced are final.
 */
#ifndef QUEUE_FILE_H
#define QUEUE_FILE_H

#include <stddef.h>

#include "queueid.h"

#define QF_MAGIC		"LUAMTA-QUEUE 1"
#define QF_ENV_MAX		(1024 * 1024)	/* an envelope larger than this is corrupt */
#define QF_RCPTS_MAX		100000
#define QF_TEXT_MAX		1024		/* of a state line's text; longer text is cut */

struct qf_env {
	char		 id[QUEUEID_SIZE];
	double		 time;
	char		 client_ip[64];
	int		 client_port;
	char		 helo[256];
	char		 proto[16];
	char		 auth[512];	/* the authenticated (SASL) user, "" if none */
	unsigned long long size;	/* message octets as queued; from the file length for old files */
	int		 has_size;	/* the envelope had a size line */
	char		 sender[512];
	int		 body_8bit;	/* param BODY=8BITMIME */
	int		 smtputf8;	/* param SMTPUTF8 */
	char		**rcpts;	/* owns nrcpts strings */
	size_t		 nrcpts;
	size_t		 body_offset;	/* where the message starts in the file */
};

/*
 * qf_env_parse - parse an envelope from buf (the start of a queue file, len octets, no NUL needed). 0, or -1
 * with a reason in err. The id is checked for length only; spool.c checks its shape. On -1 nothing is owned.
 */
int		 qf_env_parse(const char *buf, size_t len, struct qf_env *, char *err, size_t errsize);
/*
 * qf_env_format - the envelope text of env into a new string *out (malloc, NUL-terminated, *outlen octets).
 * 0, or -1 with err: a field holds CR, LF or NUL (never from our SMTP parser), no recipient, or no memory.
 */
int		 qf_env_format(const struct qf_env *, char **out, size_t *outlen, char *err, size_t errsize);
void		 qf_env_free(struct qf_env *);

enum qf_rcpt_state {
	QF_QUEUED,	/* no line yet */
	QF_DELIVERED,
	QF_BOUNCED,
	QF_DEFERRED,
	QF_HELD,
};

struct qf_rcpt_status {
	enum qf_rcpt_state	 state;		/* the latest line's, except that delivered and bounced stay */
	char			*last;		/* owns: the latest line after "<index> ", or NULL */
	const char		*detail;	/* into last: after the state word and its space ("" if none) */
};

struct qf_state {
	struct qf_rcpt_status	*rcpts;		/* owns nrcpts */
	size_t			 nrcpts;
	int			 attempts;	/* attempt lines */
	int			 warned;	/* a warned line */
	size_t			 bad;		/* lines of no known shape (ignored); a torn last line is not one */
};

/* qf_state_parse - parse the state lines in buf for a message of nrcpts recipients. 0, or -1 (no memory). */
int		 qf_state_parse(const char *buf, size_t len, size_t nrcpts, struct qf_state *, char *err,
		    size_t errsize);
void		 qf_state_free(struct qf_state *);
/*
 * qf_state_line - one state line for recipient idx into buf (size octets, with its LF); dsn is ignored for
 * delivered; control characters in text become spaces. Returns its length, or 0 when state is QF_QUEUED.
 */
size_t		 qf_state_line(char *buf, size_t size, size_t idx, enum qf_rcpt_state, const char *dsn,
		    const char *text);
/* qf_state_event - "attempt <t>\n" or "warned <t>\n" (what is "attempt" or "warned") into buf; its length. */
size_t		 qf_state_event(char *buf, size_t size, const char *what, double t);

#endif
