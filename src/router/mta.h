/*
 * mta.h - outbound SMTP and LMTP delivery: one transaction carries one message to one next hop with all its recipients.
 * The caller gives the addresses to try in order (already resolved: MX and A lookups happen in the router);
 * mta tries them until one takes a transaction, and answers with a result per recipient. Connections that end a
 * transaction cleanly are kept for a few seconds and reused for the same address (RSET first).
 */
#ifndef MTA_H
#define MTA_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define MTA_ADDRS_MAX	16	/* addresses tried for one transaction */
#define MTA_TEXT_MAX	900	/* a remote reply kept for logs and bounces */

struct mta_addr {
	char	 path[108];		/* a Unix socket (LMTP), or "" for ip and port */
	char	 ip[64];		/* numeric */
	int	 port;
	char	 host[256];		/* the name it came from (MX host or relay host), for logs and Remote-MTA */
};

/*
 * mta_read_fn - the transaction wants octets [off, off + max) of the message: the caller reads them off the loop
 * and answers, now or later, with mta_body(handle, ...). The body is never held whole: at most one chunk is
 * asked for at a time, and the next only once the connection has taken most of the last one.
 */
typedef void	 mta_read_fn(uint64_t cookie, uint64_t handle, unsigned long long off, size_t max);

struct mta_request {
	const char		*queue_id;
	const char		*helo;		/* our name in EHLO */
	const char		*sender;	/* "" for the null sender */
	const char *const	*rcpts;
	size_t			 nrcpts;
	const char		*data;		/* the message, CRLF lines, not dot-stuffed; borrowed until done */
	mta_read_fn		*read;		/* or NULL data: the message is read a chunk at a time */
	size_t			 len;		/* its length */
	int			 body_8bit;
	int			 smtputf8;
	struct mta_addr		 addrs[MTA_ADDRS_MAX];
	size_t			 naddrs;
	double			 connect_timeout;
	double			 reply_timeout;	/* each reply, and each block of data written */
	int			 tls;		/* MTA_TLS_*: routing.tls */
	int			 lmtp;		/* LMTP (RFC 2033): LHLO, and one reply per recipient after the data */
};

#define MTA_TLS_NONE		0	/* never STARTTLS */
#define MTA_TLS_OPPORTUNISTIC	1	/* STARTTLS when offered, no certificate check; plain if TLS fails */
#define MTA_TLS_REQUIRED	2	/* STARTTLS or no delivery; the certificate must verify for the host name */

enum mta_status { MTA_SENT, MTA_DEFERRED, MTA_BOUNCED };

struct mta_rcpt_result {
	enum mta_status	 status;
	char		 dsn[16];			/* "2.0.0", "4.4.1", "5.1.1" */
	char		 text[MTA_TEXT_MAX + 1];	/* the reply, or what went wrong */
};

struct mta_result {
	struct mta_rcpt_result	*rcpts;		/* nrcpts of them, in request order */
	size_t			 nrcpts;
	char			 relay[400];	/* "host[ip]:port" that was used, or "none" */
	char			 remote_host[256];
	char			 tls[160];	/* "TLSv1.2 <cipher>" (", verified" when checked), or "none" */
};

/* mta_done_fn - the transaction is over; res is borrowed for the call. */
typedef void	 mta_done_fn(uint64_t cookie, const struct mta_result *res);

void		 mta_init(struct event_base *);
/* mta_deliver - start; copies what it needs from req except data, which must stay valid until done runs. */
void		 mta_deliver(const struct mta_request *req, mta_done_fn *done, uint64_t cookie);
/* mta_body - the chunk that handle's read asked for (n octets; err an errno value if it could not be read).
 * A handle whose transaction has ended meanwhile is ignored. data is borrowed for the call. */
void		 mta_body(uint64_t handle, const char *data, size_t n, int err);
void		 mta_shutdown(void);	/* close idle connections; transactions in flight end deferred */
size_t		 mta_active(void);	/* transactions in flight */

/*
 * mta_stuff - append data to out with dot-stuffing (RFC 5321 4.5.2), one chunk of a message at a time: *state
 * starts at MTA_STUFF_START and carries what the chunks before ended with; mta_stuff_end adds the final CRLF
 * if the message lacks one.
 */
struct evbuffer;
#define MTA_STUFF_START	3
void		 mta_stuff(struct evbuffer *out, const char *data, size_t len, int *state);
void		 mta_stuff_end(struct evbuffer *out, int state);

#endif
