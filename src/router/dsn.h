/*
 * dsn.h - delivery status notifications: the RFC 3464 report (multipart/report, RFC 6522) that tells an envelope
 * sender that mail failed or is delayed. Building the message is all this module does; the caller queues it with
 * the null envelope sender, to info->sender, and never builds one for a message whose sender was null.
 */
#ifndef DSN_H
#define DSN_H

#include <stddef.h>

struct evbuffer;

#define DSN_LINE_MAX		998		/* octets per line without CRLF (RFC 5322 2.1.1) */
#define DSN_ADDR_MAX		512		/* an address longer than this is cut */
#define DSN_HOST_MAX		255		/* a host name longer than this is cut (RFC 1035 2.3.4) */
#define DSN_DIAG_MAX		900		/* a diagnostic longer than this is cut */
#define DSN_HEADER_MAX		(64 * 1024)	/* octets of the original header returned in part 3 */
#define DSN_BOUNDARY_MAX	70		/* RFC 2046 5.1.1 */

struct dsn_rcpt {
	const char	*address;	/* final recipient, e.g. "jdoe@example.org"; required */
	const char	*action;	/* "failed" or "delayed" (RFC 3464 2.3.3); NULL or unknown: from info->delayed */
	const char	*status;	/* "5.1.1", "4.4.1" (RFC 3463); NULL or malformed: 5.0.0, or 4.0.0 if delayed */
	const char	*diagnostic;	/* the remote reply ("550 5.1.1 <jdoe@example.org>: no such user"), or NULL */
	const char	*remote_mta;	/* next hop host name, or NULL */
};

struct dsn_info {
	const char		*hostname;	/* reporting MTA: From: MAILER-DAEMON@hostname, Reporting-MTA */
	const char		*queue_id;	/* the original message's queue id */
	double			 arrival;	/* arrival time of the original, Unix seconds */
	double			 now;		/* report time: Date, Last-Attempt-Date, Message-ID, boundary */
	double			 expires;	/* delayed only: when the queue gives up; 0 if not to be said */
	const char		*sender;	/* the original envelope sender, the report's recipient; never "" */
	const struct dsn_rcpt	*rcpts;		/* borrowed, nrcpts entries */
	size_t			 nrcpts;
	const char		*orig;		/* borrowed: the original message, header and body, CRLF lines */
	size_t			 orig_len;
	int			 delayed;	/* 1: a delay warning (still being retried); 0: a bounce */
};

/*
 * dsn_build - append the complete report (header and body, CRLF line ends, no line over DSN_LINE_MAX octets) to
 * out. Borrows info. Returns 0, or -1 with out unchanged when info is unusable: no hostname or queue id, a null
 * or empty sender ("" or "<>"), no recipients, or a recipient without an address. Part 3 declares
 * Content-Transfer-Encoding: 8bit when the original header has 8-bit octets; such a report needs BODY=8BITMIME.
 */
int	 dsn_build(const struct dsn_info *info, struct evbuffer *out);

/*
 * dsn_boundary - candidate n of the MIME boundary for queue_id at time now, in buf (DSN_BOUNDARY_MAX + 1 octets
 * or more). dsn_build() takes the first candidate that appears nowhere in the report's parts. 0, or -1 if it did
 * not fit. Offered for the tests.
 */
int	 dsn_boundary(char *buf, size_t size, const char *queue_id, double now, unsigned n);

#endif
