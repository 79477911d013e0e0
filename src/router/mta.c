/*
 * mta.c - the outbound SMTP client (RFC 5321, with PIPELINING, SIZE, 8BITMIME and SMTPUTF8). A transaction
 * (struct mta_tx) walks its list of addresses: a connection that fails, or a server that does not greet or
 * answer EHLO/HELO, sends it to the next address. Once MAIL has been sent, what happens is final for this
 * attempt: every recipient ends sent, deferred or bounced, and the router decides about retries. Replies are
 * read in order; with PIPELINING, MAIL, every RCPT and DATA go out in one write (RFC 2920). Connections that
 * end a transaction cleanly wait MTA_IDLE seconds for another transaction to the same address (RSET first).
 * With req.lmtp the same client speaks LMTP (RFC 2033), to a Unix socket or host:port: LHLO instead of EHLO (no
 * HELO fallback, no STARTTLS), and after the final dot one reply for each recipient the server accepted, in
 * order, which decides that recipient alone.
 * Nothing here blocks: connect, reads, writes and timers are libevent's.
 *	mta_deliver()	run one transaction; the results arrive by callback
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "mta.h"
#include "tls.h"
#include "util.h"

#define MTA_IDLE	5		/* seconds a clean connection waits to be reused */
#define MTA_REPLY_MAX	8192		/* octets of one reply line we accept before giving up on the server */
#define MTA_CHUNK	65536		/* octets of the message asked for at a time */
#define MTA_OUT_LOW	32768		/* the next chunk is asked for when the output is down to this */

enum mta_state {
	MTA_S_CONNECT, MTA_S_GREETING, MTA_S_EHLO, MTA_S_HELO, MTA_S_RSET, MTA_S_MAIL, MTA_S_RCPT, MTA_S_DATA,
	MTA_S_BODY, MTA_S_IDLE, MTA_S_QUIT, MTA_S_STARTTLS, MTA_S_HANDSHAKE,
};

static const char *const mta_state_names[] = {
	"connecting", "waiting for the greeting", "sending EHLO", "sending HELO", "sending RSET", "sending MAIL FROM",
	"sending RCPT TO", "sending DATA", "sending the message", "idle", "sending QUIT", "sending STARTTLS",
	"in the TLS handshake",
};

struct mta_tx;

struct mta_conn {
	struct bufferevent	*bev;		/* owns */
	struct event		*timer;		/* owns */
	struct mta_addr		 addr;
	char			 key[128];	/* "ip:port" or the socket path: what a transaction may reuse */
	enum mta_state		 state;
	int			 pipelining, eightbit, smtputf8, starttls, size;
	unsigned long long	 size_max;	/* 0: no SIZE limit announced */
	struct mta_tx		*tx;		/* borrowed; NULL while idle */
	char			 reply[MTA_TEXT_MAX + 1];	/* the reply being read, lines joined by spaces */
	size_t			 reply_len;
	struct mta_conn		*next;		/* idle list */
	struct tls_conn		*tlsc;		/* borrowed: lives as long as bev; NULL in the clear */
	int			 dead;		/* freed at the next turn of the loop; callbacks up the stack see it */
};

struct mta_tx {
	uint64_t		 cookie;
	mta_done_fn		*done;
	struct mta_request	 req;		/* strings below are owned copies, except req.data */
	char			*queue_id, *helo, *sender;
	char			**rcpts;
	int			*decided;	/* per recipient: its result is final for this attempt */
	struct mta_result	 res;
	size_t			 addr_i;	/* the address being tried */
	size_t			 rcpt_replied;	/* RCPT replies read */
	size_t			 rcpt_sent;	/* RCPT commands sent (without PIPELINING, one at a time) */
	size_t			 rcpt_ok;	/* recipients the server accepted */
	int			 mail_ok;
	int			 mail_sent;	/* after MAIL, failures are final for this attempt */
	char			 last_error[MTA_TEXT_MAX + 1];
	char			 last_dsn[16];
	size_t			 plain_at;	/* 1 + the address whose TLS handshake failed: try it in the clear */
	struct mta_conn		*conn;		/* borrowed */
	uint64_t		 handle;	/* for mta_body */
	unsigned long long	 body_off;	/* octets of the message written so far */
	int			 body_state;	/* mta_stuff's */
	int			 body_asked;	/* a chunk was asked for and has not come */
};

static struct event_base	*mta_base;
static struct tls_conf		*mta_tls_plain;		/* held: no certificate check */
static struct tls_conf		*mta_tls_verify;	/* held: system CA store and host name */
static struct mta_conn		*mta_idle;
static size_t			 mta_inflight;
static struct idmap		*mta_txs;		/* handle -> transaction, for mta_body */
static uint64_t			 mta_next_handle;

static void	mta_try_next(struct mta_tx *);
static void	mta_conn_free(struct mta_conn *);
static void	mta_tx_start(struct mta_conn *);

void
mta_init(struct event_base *base)
{
	mta_base = base;
	mta_txs = idmap_new();
}

/* mta_tls_conf - the client configuration for a mode, made when first needed. NULL with why. */
static struct tls_conf *
mta_tls_conf(int mode, char *why, size_t size)
{
	struct tls_conf	**slot = mode == MTA_TLS_REQUIRED ? &mta_tls_verify : &mta_tls_plain;

	if (*slot == NULL)
		*slot = tls_client_new(mode == MTA_TLS_REQUIRED, why, size);
	return *slot;
}

size_t
mta_active(void)
{
	return mta_inflight;
}

/*
 * The stuffing state: 0 at the start of a line (after CRLF), 1 after a CR, 2 inside a line, MTA_STUFF_START
 * before the first octet (a line start that still needs its CRLF at the end).
 */
void
mta_stuff(struct evbuffer *out, const char *data, size_t len, int *state)
{
	size_t	 start = 0, i;
	int	 st = *state;

	for (i = 0; i < len; i++) {
		if ((st == 0 || st == MTA_STUFF_START) && data[i] == '.') {
			evbuffer_add(out, data + start, i - start);
			evbuffer_add(out, ".", 1);
			start = i;
		}
		st = data[i] == '\r' ? 1 : data[i] == '\n' && st == 1 ? 0 : 2;
	}
	evbuffer_add(out, data + start, len - start);
	*state = st;
}

void
mta_stuff_end(struct evbuffer *out, int state)
{
	if (state != 0)
		evbuffer_add(out, "\r\n", 2);
}

/*
 * mta_status_of - what a reply decides: only a 2xx accepts and only a 5xx refuses for good; anything else (a
 * 4xx, or a 1xx, 3xx or 6xx-9xx where none belongs: "354" to RCPT) defers, so that no server's odd reply can
 * stand for a delivery.
 */
static enum mta_status
mta_status_of(int code)
{
	return code / 100 == 2 ? MTA_SENT : code / 100 == 5 ? MTA_BOUNCED : MTA_DEFERRED;
}

/*
 * mta_dsn_of - the enhanced status code at the start of a reply text, or one derived from the code: its class is
 * always the one of mta_status_of(code).
 */
static void
mta_dsn_of(int code, const char *text, char *dsn, size_t size)
{
	const char	*p = text;
	size_t		 n = 2, d;
	int		 part, ok = 1;

	/* RFC 3463 2: class "." subject "." detail, subject and detail of 1 to 3 digits. */
	if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && p[0] == '0' + code / 100) {
		for (part = 0; part < 2 && ok; part++) {
			for (d = 0; isdigit((unsigned char)p[n]) && d < 4; d++)
				n++;
			ok = d >= 1 && d <= 3 && (part == 1 || p[n++] == '.');
		}
		if (ok && n < size && (p[n] == ' ' || p[n] == '\0')) {
			memcpy(dsn, p, n);
			dsn[n] = '\0';
			return;
		}
	}
	snprintf(dsn, size, "%d.0.0", code / 100 == 2 || code / 100 == 5 ? code / 100 : 4);
}

static void
mta_rcpt_set(struct mta_tx *tx, size_t i, enum mta_status st, const char *dsn, const char *text)
{
	struct mta_rcpt_result	*r = &tx->res.rcpts[i];

	if (tx->decided[i])
		return;
	tx->decided[i] = 1;
	r->status = st;
	util_strlcpy(r->dsn, dsn, sizeof(r->dsn));
	util_strlcpy(r->text, text, sizeof(r->text));
}

/* mta_rcpt_reply - decide recipient i from an SMTP reply. */
static void
mta_rcpt_reply(struct mta_tx *tx, size_t i, int code, const char *reply)
{
	char	 dsn[16];

	mta_dsn_of(code, reply + (strlen(reply) > 4 ? 4 : strlen(reply)), dsn, sizeof(dsn));
	mta_rcpt_set(tx, i, mta_status_of(code), dsn, reply);
}

/* mta_tx_finish - every undecided recipient gets (st, dsn, text); the caller hears about it; tx is freed. */
static void
mta_tx_finish(struct mta_tx *tx, enum mta_status st, const char *dsn, const char *text)
{
	size_t	 i;

	for (i = 0; i < tx->req.nrcpts; i++)
		mta_rcpt_set(tx, i, st, dsn, text);
	if (tx->conn != NULL)
		tx->conn->tx = NULL;
	idmap_del(mta_txs, tx->handle);
	mta_inflight--;
	tx->done(tx->cookie, &tx->res);
	for (i = 0; i < tx->req.nrcpts; i++)
		free(tx->rcpts[i]);
	free(tx->rcpts);
	free(tx->decided);
	free(tx->res.rcpts);
	free(tx->queue_id);
	free(tx->helo);
	free(tx->sender);
	free(tx);
}

static void
mta_timer_arm(struct mta_conn *c, double seconds)
{
	struct timeval	 tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(c->timer, &tv);
}

static void
mta_send(struct mta_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
mta_send(struct mta_conn *c, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
	evbuffer_add(bufferevent_get_output(c->bev), "\r\n", 2);
}

/* mta_conn_park - the transaction ended cleanly: keep the connection for the next one to this address. */
static void
mta_conn_park(struct mta_conn *c)
{
	c->tx = NULL;
	c->state = MTA_S_IDLE;
	c->next = mta_idle;
	mta_idle = c;
	mta_timer_arm(c, MTA_IDLE);
}

static void
mta_conn_unlink_idle(struct mta_conn *c)
{
	struct mta_conn	**pp;

	for (pp = &mta_idle; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->next = NULL;
}

/*
 * mta_conn_fail - the connection is unusable. Before MAIL, the transaction moves to the next address; after it,
 * every open recipient is deferred with why.
 */
static void
mta_conn_fail(struct mta_conn *c, const char *why)
{
	struct mta_tx	*tx = c->tx;
	char		 text[MTA_TEXT_MAX + 1];

	c->tx = NULL;
	mta_conn_free(c);	/* freed at the next turn of the loop: c->state stays readable below */
	if (tx == NULL)
		return;
	tx->conn = NULL;
	snprintf(text, sizeof(text), "%s[%s]:%d %s", tx->req.addrs[tx->addr_i].host, tx->req.addrs[tx->addr_i].ip,
	    tx->req.addrs[tx->addr_i].port, why);
	if (!tx->mail_sent) {
		util_strlcpy(tx->last_error, text, sizeof(tx->last_error));
		if (c->state == MTA_S_HANDSHAKE && tx->req.tls == MTA_TLS_OPPORTUNISTIC && tx->plain_at == 0) {
			/* Opportunistic TLS that fails is no reason not to deliver: the same address, in the clear. */
			log_svc(LOG_SVC_SMTP, LOG_L_INFO, "%s: %s; trying again without TLS", tx->queue_id, text);
			tx->plain_at = tx->addr_i + 1;
			mta_try_next(tx);
			return;
		}
		if (c->state != MTA_S_RSET)	/* a reused connection that died: a new one to the same address */
			tx->addr_i++;
		mta_try_next(tx);
		return;
	}
	mta_tx_finish(tx, MTA_DEFERRED, "4.4.2", text);
}

/* mta_tx_end - the server answered the end of a transaction: park or close the connection, report. */
static void
mta_tx_end(struct mta_conn *c, enum mta_status st, const char *dsn, const char *text)
{
	struct mta_tx	*tx = c->tx;

	mta_conn_park(c);
	tx->conn = NULL;
	mta_tx_finish(tx, st, dsn, text);
}

static void
mta_send_rcpt(struct mta_conn *c, size_t i)
{
	mta_send(c, "RCPT TO:<%s>", c->tx->rcpts[i]);
}

/* mta_tx_start - greeted (or RSET): send MAIL, and with PIPELINING every RCPT and DATA too. */
static void
mta_tx_start(struct mta_conn *c)
{
	struct mta_tx	*tx = c->tx;
	struct evbuffer	*out = bufferevent_get_output(c->bev);
	char		 text[MTA_TEXT_MAX + 1];
	size_t		 i;

	if (tx->req.smtputf8 && !c->smtputf8) {
		snprintf(text, sizeof(text), "%s[%s] does not offer SMTPUTF8, which this message needs",
		    c->addr.host, c->addr.ip);
		mta_tx_end(c, MTA_BOUNCED, "5.6.7", text);
		return;
	}
	if (c->size_max > 0 && tx->req.len > c->size_max) {
		snprintf(text, sizeof(text), "message of %zu octets exceeds the limit of %llu at %s[%s]",
		    tx->req.len, c->size_max, c->addr.host, c->addr.ip);
		mta_tx_end(c, MTA_BOUNCED, "5.3.4", text);
		return;
	}
	tx->mail_sent = 1;
	evbuffer_add_printf(out, "MAIL FROM:<%s>", tx->sender);
	if (c->size)		/* only where SIZE was offered (RFC 1870): Dovecot's LMTP refuses it otherwise */
		evbuffer_add_printf(out, " SIZE=%zu", tx->req.len);
	if (tx->req.body_8bit && c->eightbit)
		evbuffer_add_printf(out, " BODY=8BITMIME");
	if (tx->req.smtputf8)
		evbuffer_add_printf(out, " SMTPUTF8");
	evbuffer_add(out, "\r\n", 2);
	c->state = MTA_S_MAIL;
	if (c->pipelining) {
		for (i = 0; i < tx->req.nrcpts; i++)
			mta_send_rcpt(c, i);
		tx->rcpt_sent = tx->req.nrcpts;
		mta_send(c, "DATA");
	}
	mta_timer_arm(c, tx->req.reply_timeout);
}

/* mta_ehlo_line - note the extensions of one EHLO reply line ("250-PIPELINING", "250 SIZE 1000"). */
static void
mta_ehlo_line(struct mta_conn *c, const char *line)
{
	const char	*kw = line + 4;

	if (strlen(line) < 5)
		return;
	if (strcasecmp(kw, "PIPELINING") == 0)
		c->pipelining = 1;
	else if (strcasecmp(kw, "8BITMIME") == 0)
		c->eightbit = 1;
	else if (strcasecmp(kw, "SMTPUTF8") == 0)
		c->smtputf8 = 1;
	else if (strcasecmp(kw, "STARTTLS") == 0)
		c->starttls = 1;
	else if (strncasecmp(kw, "SIZE", 4) == 0 && (kw[4] == ' ' || kw[4] == '\0')) {
		c->size = 1;
		c->size_max = strtoull(kw + 4, NULL, 10);
	}
}

static void	mta_read_cb(struct bufferevent *, void *);
static void	mta_event_cb(struct bufferevent *, short, void *);

static void
mta_tls_ready(void *arg, int ok, const char *why)
{
	struct mta_conn	*c = arg;	/* the TLS connection dies with c->bev, so c is alive here */
	char		 text[300];

	if (!ok) {
		snprintf(text, sizeof(text), "TLS handshake failed: %s", why);
		mta_conn_fail(c, text);
		return;
	}
	if (c->tx == NULL)
		return;
	util_strlcpy(c->tx->res.tls, tls_describe(c->tlsc), sizeof(c->tx->res.tls));
	if (tls_verified(c->tlsc))
		strncat(c->tx->res.tls, ", verified", sizeof(c->tx->res.tls) - strlen(c->tx->res.tls) - 1);
	/* RFC 3207 4.2: forget what the server said before TLS and greet it again. */
	c->pipelining = c->eightbit = c->smtputf8 = c->starttls = 0;
	c->size_max = 0;
	c->state = MTA_S_EHLO;
	mta_send(c, "EHLO %s", c->tx->helo);
	mta_timer_arm(c, c->tx->req.reply_timeout);
}

/* mta_after_ehlo - greeted: STARTTLS first when we may and it is offered, else the transaction. */
static void
mta_after_ehlo(struct mta_conn *c)
{
	struct mta_tx	*tx = c->tx;
	int		 mode = tx->req.tls;

	if (c->tlsc == NULL && mode != MTA_TLS_NONE && tx->plain_at != tx->addr_i + 1) {
		if (c->starttls) {
			c->state = MTA_S_STARTTLS;
			mta_send(c, "STARTTLS");
			return;
		}
		if (mode == MTA_TLS_REQUIRED) {
			mta_conn_fail(c, "does not offer STARTTLS, and routing.tls = \"required\"");
			return;
		}
	}
	mta_tx_start(c);
}

static void
mta_starttls(struct mta_conn *c, int code, const char *reply)
{
	struct mta_tx	*tx = c->tx;
	struct tls_conf	*conf;
	char		 why[300];

	if (code != 220) {
		if (tx->req.tls == MTA_TLS_REQUIRED) {
			snprintf(why, sizeof(why), "refused STARTTLS (%s), and routing.tls = \"required\"", reply);
			mta_conn_fail(c, why);
		} else
			mta_tx_start(c);	/* opportunistic: carry on in the clear */
		return;
	}
	/* What the server sent after its 220 in the clear is no reply of its (RFC 3207 4.2, the other way). */
	evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
	if ((conf = mta_tls_conf(tx->req.tls, why, sizeof(why))) == NULL ||
	    (c->tlsc = tls_wrap(mta_base, c->bev, conf, c->addr.host, mta_tls_ready, c)) == NULL) {
		mta_conn_fail(c, conf == NULL ? why : "cannot start TLS");
		return;
	}
	c->bev = tls_bev(c->tlsc);
	bufferevent_setcb(c->bev, mta_read_cb, NULL, mta_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->state = MTA_S_HANDSHAKE;
	mta_timer_arm(c, tx->req.reply_timeout);
}

/* mta_reply - one complete reply (code, text joined) in the connection's current state. */
/* mta_body_want - ask for the next chunk of the message, or end it when it is all out. */
static void
mta_body_want(struct mta_conn *c)
{
	struct mta_tx	*tx = c->tx;
	size_t		 max = MTA_CHUNK;

	if (tx->body_off >= tx->req.len) {
		mta_stuff_end(bufferevent_get_output(c->bev), tx->body_state);
		evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
		return;
	}
	if (tx->req.len - tx->body_off < max)
		max = (size_t)(tx->req.len - tx->body_off);
	tx->body_asked = 1;
	tx->req.read(tx->cookie, tx->handle, tx->body_off, max);	/* may answer before it returns */
}

/* mta_write_cb - the output is down to MTA_OUT_LOW while the message goes out: the next chunk. */
static void
mta_write_cb(struct bufferevent *bev, void *arg)
{
	struct mta_conn	*c = arg;

	bufferevent_setcb(bev, mta_read_cb, NULL, mta_event_cb, c);
	if (c->dead || c->tx == NULL || c->state != MTA_S_BODY || c->tx->body_asked)
		return;
	mta_body_want(c);
}

void
mta_body(uint64_t handle, const char *data, size_t n, int err)
{
	struct mta_tx	*tx = idmap_get(mta_txs, handle);
	struct mta_conn	*c;
	char		 why[160];

	if (tx == NULL || !tx->body_asked)
		return;		/* it ended meanwhile */
	tx->body_asked = 0;
	if ((c = tx->conn) == NULL || c->dead || c->state != MTA_S_BODY)
		return;
	if (err != 0 || n == 0) {
		snprintf(why, sizeof(why), "cannot read the message from the queue: %s",
		    err != 0 ? strerror(err) : "shorter than its envelope says");
		mta_conn_fail(c, why);
		return;
	}
	mta_stuff(bufferevent_get_output(c->bev), data, n, &tx->body_state);
	tx->body_off += n;
	mta_timer_arm(c, tx->req.reply_timeout);	/* each block of data written */
	if (tx->body_off < tx->req.len && evbuffer_get_length(bufferevent_get_output(c->bev)) > MTA_OUT_LOW) {
		bufferevent_setwatermark(c->bev, EV_WRITE, MTA_OUT_LOW, 0);
		bufferevent_setcb(c->bev, mta_read_cb, mta_write_cb, mta_event_cb, c);
		return;
	}
	mta_body_want(c);
}

static void
mta_reply(struct mta_conn *c, int code, const char *reply)
{
	struct mta_tx	*tx = c->tx;
	char		 dsn[16], why[MTA_TEXT_MAX + 1];
	size_t		 i;

	if (tx == NULL) {		/* idle or quitting: the server said something on its own */
		mta_conn_unlink_idle(c);
		mta_conn_free(c);
		return;
	}
	mta_timer_arm(c, tx->req.reply_timeout);
	switch (c->state) {
	case MTA_S_GREETING:
		if (code / 100 != 2) {
			snprintf(why, sizeof(why), "refused to talk to me: %s", reply);
			mta_conn_fail(c, why);
			return;
		}
		c->state = MTA_S_EHLO;
		mta_send(c, "%s %s", tx->req.lmtp ? "LHLO" : "EHLO", tx->helo);
		return;
	case MTA_S_EHLO:
		if (code / 100 == 2) {
			mta_after_ehlo(c);
			return;
		}
		if (code / 100 == 5 && !tx->req.lmtp) {		/* an old server: try HELO */
			c->state = MTA_S_HELO;
			mta_send(c, "HELO %s", tx->helo);
			return;
		}
		snprintf(why, sizeof(why), "refused %s: %s", tx->req.lmtp ? "LHLO" : "EHLO", reply);
		mta_conn_fail(c, why);
		return;
	case MTA_S_HELO:
		if (code / 100 == 2) {
			if (tx->req.tls == MTA_TLS_REQUIRED) {
				mta_conn_fail(c, "knows no EHLO, so no STARTTLS, and routing.tls = \"required\"");
				return;
			}
			mta_tx_start(c);
			return;
		}
		snprintf(why, sizeof(why), "refused HELO: %s", reply);
		mta_conn_fail(c, why);
		return;
	case MTA_S_STARTTLS:
		mta_starttls(c, code, reply);
		return;
	case MTA_S_RSET:
		if (code / 100 == 2) {
			mta_tx_start(c);
			return;
		}
		mta_conn_fail(c, "refused RSET on a reused connection");
		return;
	case MTA_S_MAIL:
		if (code / 100 == 2)
			tx->mail_ok = 1;
		else {
			for (i = 0; i < tx->req.nrcpts; i++)
				mta_rcpt_reply(tx, i, code, reply);
		}
		if (!c->pipelining) {
			if (!tx->mail_ok) {
				c->state = MTA_S_RSET;
				mta_tx_end(c, MTA_DEFERRED, "4.0.0", reply);
				return;
			}
			mta_send_rcpt(c, tx->rcpt_sent++);
		}
		c->state = MTA_S_RCPT;
		return;
	case MTA_S_RCPT:
		if (tx->mail_ok) {
			if (code / 100 == 2)
				tx->rcpt_ok++;
			else
				mta_rcpt_reply(tx, tx->rcpt_replied, code, reply);
		}
		tx->rcpt_replied++;
		if (tx->rcpt_replied < tx->req.nrcpts) {
			if (!c->pipelining)
				mta_send_rcpt(c, tx->rcpt_sent++);
			return;
		}
		c->state = MTA_S_DATA;
		if (!c->pipelining) {
			if (tx->rcpt_ok == 0) {
				mta_tx_end(c, MTA_DEFERRED, "4.0.0", "no recipient accepted");
				return;
			}
			mta_send(c, "DATA");
		}
		return;
	case MTA_S_DATA:
		if (code == 354) {
			c->state = MTA_S_BODY;
			if (tx->rcpt_ok == 0 || !tx->mail_ok) {
				/* Pipelined, every recipient refused, and yet 354: end an empty message at once. */
				evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
				return;
			}
			tx->body_off = 0;
			tx->body_state = MTA_STUFF_START;
			if (tx->req.read != NULL) {
				mta_body_want(c);
				return;
			}
			mta_stuff(bufferevent_get_output(c->bev), tx->req.data, tx->req.len, &tx->body_state);
			mta_stuff_end(bufferevent_get_output(c->bev), tx->body_state);
			evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
			return;
		}
		if (code / 100 != 4 && code / 100 != 5) {	/* "250" before the data was sent: no delivery */
			snprintf(why, sizeof(why), "answered DATA with \"%s\", not 354", reply);
			mta_tx_end(c, MTA_DEFERRED, "4.5.0", why);
			return;
		}
		mta_dsn_of(code, strlen(reply) > 4 ? reply + 4 : "", dsn, sizeof(dsn));
		mta_tx_end(c, code / 100 == 5 ? MTA_BOUNCED : MTA_DEFERRED, dsn, reply);
		return;
	case MTA_S_BODY:
		mta_dsn_of(code, strlen(reply) > 4 ? reply + 4 : "", dsn, sizeof(dsn));
		if (tx->req.lmtp && tx->rcpt_ok > 0 && tx->mail_ok) {
			/* LMTP: this reply is the next accepted recipient's (the undecided ones, in order). */
			for (i = 0; i < tx->req.nrcpts && tx->decided[i]; i++)
				;
			if (i < tx->req.nrcpts)
				mta_rcpt_reply(tx, i, code, reply);
			for (; i < tx->req.nrcpts && tx->decided[i]; i++)
				;
			if (i == tx->req.nrcpts)	/* the last one: the transaction is over */
				mta_tx_end(c, MTA_SENT, dsn, reply);
			return;
		}
		if (tx->rcpt_ok == 0 || !tx->mail_ok)
			mta_tx_end(c, MTA_DEFERRED, "4.0.0", "no recipient accepted");
		else
			mta_tx_end(c, mta_status_of(code), dsn, reply);
		return;
	default:
		mta_conn_fail(c, "sent a reply we did not ask for");
		return;
	}
}

static void
mta_read_cb(struct bufferevent *bev, void *arg)
{
	struct mta_conn	*c = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	char		*line;
	size_t		 len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		int	 last, code;

		if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-')) {
			free(line);
			mta_conn_fail(c, "sent a malformed reply");
			return;
		}
		/* Every line of a multiline reply has the same code (RFC 5321 4.2.1): else which one would count? */
		if (c->reply_len > 0 && memcmp(c->reply, line, 3) != 0) {
			free(line);
			mta_conn_fail(c, "sent a multiline reply with different codes");
			return;
		}
		last = len == 3 || line[3] == ' ';
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (c->state == MTA_S_EHLO && c->reply_len > 0)
			mta_ehlo_line(c, line);
		if (c->reply_len == 0)
			c->reply_len = util_strlcpy(c->reply, line, sizeof(c->reply));
		else if (c->reply_len < sizeof(c->reply) - 2 && len > 4) {	/* continuation: join the text */
			c->reply[c->reply_len++] = ' ';
			c->reply_len += util_strlcpy(c->reply + c->reply_len, line + 4, sizeof(c->reply) - c->reply_len);
		}
		if (c->reply_len >= sizeof(c->reply))
			c->reply_len = sizeof(c->reply) - 1;
		free(line);
		if (!last)
			continue;
		c->reply[c->reply_len] = '\0';
		c->reply_len = 0;
		mta_reply(c, code, c->reply);
		if (c->dead || c->state == MTA_S_IDLE)
			return;		/* closed, or parked with nothing more to read */
	}
	if (evbuffer_get_length(in) > MTA_REPLY_MAX)
		mta_conn_fail(c, "sent a reply line that is too long");
}

static void
mta_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct mta_conn	*c = arg;
	char		 why[256];

	if (what & BEV_EVENT_CONNECTED) {
		c->state = MTA_S_GREETING;
		mta_timer_arm(c, c->tx ? c->tx->req.reply_timeout : 300);
		return;
	}
	if (c->tx == NULL) {			/* an idle connection closed by the server */
		mta_conn_unlink_idle(c);
		mta_conn_free(c);
		return;
	}
	if (tls_handshake_error(c->tlsc) != NULL) {
		/* The server hung up on our alert before the failure was announced: the reason is ours. */
		mta_tls_ready(c, 0, tls_handshake_error(c->tlsc));
		return;
	}
	if (c->state == MTA_S_CONNECT)
		snprintf(why, sizeof(why), "connect failed: %s", strerror(EVUTIL_SOCKET_ERROR()));
	else
		snprintf(why, sizeof(why), "lost connection while %s", mta_state_names[c->state]);
	mta_conn_fail(c, why);
}

static void
mta_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mta_conn	*c = arg;
	char		 why[128];

	if (c->state == MTA_S_IDLE) {		/* nobody needed it: close (servers accept a close without QUIT) */
		mta_conn_unlink_idle(c);
		mta_conn_free(c);
		return;
	}
	snprintf(why, sizeof(why), "timed out while %s", mta_state_names[c->state]);
	mta_conn_fail(c, why);
}

static void
mta_conn_reap(evutil_socket_t fd, short what, void *arg)
{
	struct mta_conn	*c = arg;

	if (c->timer != NULL)
		event_free(c->timer);
	free(c);
}

/* mta_conn_free - close now, free later: a callback further up the stack may still hold c. */
static void
mta_conn_free(struct mta_conn *c)
{
	struct timeval	 now = { 0, 0 };

	if (c->dead)
		return;
	c->dead = 1;
	tls_detach(c->tlsc);		/* no handshake callback after this */
	c->tlsc = NULL;
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	c->bev = NULL;
	evtimer_del(c->timer);
	event_base_once(mta_base, -1, EV_TIMEOUT, mta_conn_reap, c, &now);
}

/* mta_try_next - the next address: an idle connection to it, or a new one. */
static void
mta_try_next(struct mta_tx *tx)
{
	struct mta_conn		*c, **pp;
	struct mta_addr		*a;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	char			 key[128], dsn[16];

	if (tx->addr_i >= tx->req.naddrs) {
		util_strlcpy(dsn, tx->req.naddrs == 0 ? "4.4.4" : "4.4.1", sizeof(dsn));
		if (tx->last_error[0] == '\0')
			util_strlcpy(tx->last_error, "no address to deliver to", sizeof(tx->last_error));
		snprintf(tx->res.relay, sizeof(tx->res.relay), "none");
		mta_tx_finish(tx, MTA_DEFERRED, dsn, tx->last_error);
		return;
	}
	a = &tx->req.addrs[tx->addr_i];
	if (a->path[0] != '\0') {
		snprintf(tx->res.relay, sizeof(tx->res.relay), "%s[%s]", a->host, a->path);
		snprintf(key, sizeof(key), "%s", a->path);
	} else {
		snprintf(tx->res.relay, sizeof(tx->res.relay), "%s[%s]:%d", a->host, a->ip, a->port);
		snprintf(key, sizeof(key), "%s:%d", a->ip, a->port);
	}
	util_strlcpy(tx->res.tls, "none", sizeof(tx->res.tls));
	util_strlcpy(tx->res.remote_host, a->host, sizeof(tx->res.remote_host));
	for (pp = &mta_idle; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->key, key) == 0) {
			c = *pp;
			*pp = c->next;
			c->next = NULL;
			c->tx = tx;
			tx->conn = c;
			c->state = MTA_S_RSET;
			if (c->tlsc != NULL)
				util_strlcpy(tx->res.tls, tls_describe(c->tlsc), sizeof(tx->res.tls));
			mta_send(c, "RSET");
			mta_timer_arm(c, tx->req.reply_timeout);
			return;
		}
	}
	memset(&ss, 0, sizeof(ss));
	if (a->path[0] != '\0') {
		struct sockaddr_un	*sun = (struct sockaddr_un *)&ss;

		sun->sun_family = AF_UNIX;
		util_strlcpy(sun->sun_path, a->path, sizeof(sun->sun_path));
		sslen = sizeof(*sun);
	} else if (inet_pton(AF_INET, a->ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)a->port);
		sslen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, a->ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)a->port);
		sslen = sizeof(struct sockaddr_in6);
	} else {
		snprintf(tx->last_error, sizeof(tx->last_error), "%s: not an IP address", a->ip);
		tx->addr_i++;
		mta_try_next(tx);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->addr = *a;
	c->timer = NULL;
	util_strlcpy(c->key, key, sizeof(c->key));
	c->tx = tx;
	tx->conn = c;
	c->state = MTA_S_CONNECT;
	c->timer = evtimer_new(mta_base, mta_timer_cb, c);
	c->bev = bufferevent_socket_new(mta_base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, mta_read_cb, NULL, mta_event_cb, c);
	bufferevent_enable(c->bev, EV_READ);
	mta_timer_arm(c, tx->req.connect_timeout);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sslen) == -1) {
		/* An immediate failure (no route, no buffers): the event callback will not run. */
		c->tx = NULL;
		tx->conn = NULL;
		mta_conn_free(c);
		snprintf(tx->last_error, sizeof(tx->last_error), "%s connect failed: %s", tx->res.relay,
		    strerror(errno));
		tx->addr_i++;
		mta_try_next(tx);
	}
}

void
mta_deliver(const struct mta_request *req, mta_done_fn *done, uint64_t cookie)
{
	struct mta_tx	*tx = xcalloc(1, sizeof(*tx));
	size_t		 i;

	tx->cookie = cookie;
	tx->done = done;
	tx->req = *req;
	tx->queue_id = xstrdup(req->queue_id);
	tx->helo = xstrdup(req->helo);
	tx->sender = xstrdup(req->sender);
	tx->rcpts = xcalloc(req->nrcpts, sizeof(*tx->rcpts));
	for (i = 0; i < req->nrcpts; i++)
		tx->rcpts[i] = xstrdup(req->rcpts[i]);
	tx->decided = xcalloc(req->nrcpts, sizeof(*tx->decided));
	tx->res.rcpts = xcalloc(req->nrcpts, sizeof(*tx->res.rcpts));
	tx->res.nrcpts = req->nrcpts;
	tx->handle = ++mta_next_handle;
	idmap_put(mta_txs, tx->handle, tx);
	mta_inflight++;
	mta_try_next(tx);
}

void
mta_shutdown(void)
{
	struct mta_conn	*c;

	while ((c = mta_idle) != NULL) {
		mta_idle = c->next;
		mta_conn_free(c);
	}
	tls_conf_release(mta_tls_plain);
	tls_conf_release(mta_tls_verify);
	mta_tls_plain = mta_tls_verify = NULL;
}
