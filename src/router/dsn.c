/*
 * dsn.c - delivery status notifications. Builds the RFC 3464 report that goes back to an envelope sender when mail
 * failed or is delayed: a multipart/report (RFC 6522) with a human explanation in the style of Postfix's bounce,
 * a message/delivery-status part and the original message's header as text/rfc822-headers. It never sends,
 * queues or logs anything and never decides who gets a report: the caller queues the result with the null envelope
 * sender, and never asks for a report on a message whose sender was null.
 *	dsn_build()	append the whole report message to an evbuffer
 *	dsn_boundary()	the MIME boundary candidates, offered for the tests
 *
 * Every value that reaches a header line or a DSN field comes from a peer in the end (a remote reply, an address),
 * so each is cleaned first: control octets become spaces, runs of blanks become one, and the value is cut to a
 * named bound. Nothing can start a new header line, and with the bounds no line passes 998 octets. Parts 1 and 2
 * are declared US-ASCII, so 8-bit octets in them become "?". The returned header is copied line by line as it
 * was, except that every line ends in CRLF, a NUL or stray CR becomes a space and an over-long line is folded.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "dsn.h"
#include "log.h"
#include "util.h"

#define DSN_WRAP	72	/* the text part wraps at this column, as mail text does */
#define DSN_QID_MAX	32	/* the part of the queue id used in Message-ID and the boundary */
#define DSN_DATE_MAX	64
#define DSN_TIME_MAX	1e12	/* seconds; keeps times printable as a long long with room to spare */

/* One recipient's values, cleaned and bounded, as both parts show them. */
struct dsn_r {
	char		 addr[DSN_ADDR_MAX + 1];
	char		 diag[DSN_DIAG_MAX + 1];
	char		 remote[DSN_HOST_MAX + 1];
	const char	*action;	/* from dsn_actions */
	const char	*status;	/* a valid status code: the caller's or a default */
	const char	*diag_type;	/* "smtp" for an SMTP reply, else "X-Luamta" */
};

/* What every part needs, cleaned once. */
struct dsn_ctx {
	const struct dsn_info	*info;
	char			 host[DSN_HOST_MAX + 1];
	char			 qid[DSN_QID_MAX + 1];		/* letters and digits only */
	char			 sender[DSN_ADDR_MAX + 1];	/* 8-bit kept: the To: header */
	char			 sender7[DSN_ADDR_MAX + 1];	/* 8-bit as "?": the US-ASCII parts */
	char			 now[DSN_DATE_MAX];
	char			 arrival[DSN_DATE_MAX];
	char			 expires[DSN_DATE_MAX];		/* "" when not to be said */
	int			 eightbit;			/* the returned header has 8-bit octets */
};

/* RFC 3464 2.3.3 */
static const char *const dsn_actions[] = { "failed", "delayed", "delivered", "relayed", "expanded" };

/*
 * dsn_clean - copy src to dst (size octets with the NUL) as one clean line: control octets and blanks become one
 * space between words, none at the ends; with ascii, 8-bit octets become "?". Cut to size - 1. Returns the length.
 * dst may equal src or lie before it: the write position never passes the read position.
 */
static size_t
dsn_clean(char *dst, size_t size, const char *src, int ascii)
{
	size_t		 n = 0;
	int		 blank = 0;
	unsigned char	 c;

	if (size == 0)
		return 0;
	for (; src != NULL && *src != '\0'; src++) {
		c = (unsigned char)*src;
		if (c <= ' ' || c == 0x7f) {
			blank = n > 0;		/* leading blanks are dropped; trailing ones never get written */
			continue;
		}
		if (n + (size_t)blank + 1 > size - 1)
			break;
		if (blank)
			dst[n++] = ' ';
		blank = 0;
		dst[n++] = (ascii && c >= 0x80) ? '?' : (char)c;
	}
	dst[n] = '\0';
	return n;
}

/* dsn_addr - clean an address and drop one pair of angle brackets around it, so "<>" comes out empty. */
static size_t
dsn_addr(char *dst, size_t size, const char *src, int ascii)
{
	size_t	 n;

	n = dsn_clean(dst, size, src, ascii);
	if (n >= 2 && dst[0] == '<' && dst[n - 1] == '>') {
		dst[n - 1] = '\0';
		n = dsn_clean(dst, size, dst + 1, ascii);
	}
	return n;
}

/* dsn_status_valid - class "." subject "." detail: [245] "." 1*3DIGIT "." 1*3DIGIT (RFC 3463 3.1). */
static int
dsn_status_valid(const char *s)
{
	size_t	 i, n;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	s += 2;
	for (i = 0; i < 2; i++) {
		for (n = 0; s[n] >= '0' && s[n] <= '9'; n++)
			;
		if (n < 1 || n > 3)
			return 0;
		s += n;
		if (i == 0 && *s++ != '.')
			return 0;
	}
	return *s == '\0';
}

/* dsn_is_reply - the text starts like an SMTP reply ("550 ...", "421-..."), so its Diagnostic-Code type is smtp. */
static int
dsn_is_reply(const char *s)
{
	return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' &&
	    (s[3] == '\0' || s[3] == ' ' || s[3] == '-');
}

static void
dsn_rcpt_resolve(const struct dsn_ctx *c, size_t i, struct dsn_r *r)
{
	const struct dsn_rcpt	*in = &c->info->rcpts[i];
	size_t			 k;

	dsn_addr(r->addr, sizeof(r->addr), in->address, 1);
	dsn_clean(r->diag, sizeof(r->diag), in->diagnostic, 1);
	dsn_clean(r->remote, sizeof(r->remote), in->remote_mta, 1);
	r->action = c->info->delayed ? "delayed" : "failed";
	for (k = 0; in->action != NULL && k < sizeof(dsn_actions) / sizeof(dsn_actions[0]); k++)
		if (strcasecmp(in->action, dsn_actions[k]) == 0)
			r->action = dsn_actions[k];
	if (dsn_status_valid(in->status))
		r->status = in->status;
	else
		r->status = strcmp(r->action, "delayed") == 0 ? "4.0.0" : "5.0.0";
	r->diag_type = dsn_is_reply(r->diag) ? "smtp" : "X-Luamta";
}

/* dsn_secs - a time as whole seconds and microseconds, clamped to something printable. */
static void
dsn_secs(double t, long long *sec, long *usec)
{
	if (!(t >= 0))				/* negative or NaN */
		t = 0;
	if (t > DSN_TIME_MAX)
		t = DSN_TIME_MAX;
	*sec = (long long)t;
	*usec = (long)((t - (double)*sec) * 1e6);
	if (*usec < 0 || *usec > 999999)
		*usec = 0;
}

static void
dsn_date(char *buf, size_t size, double t)
{
	long long	 sec;
	long		 usec;

	dsn_secs(t, &sec, &usec);
	util_rfc5322_date(buf, size, (double)sec);
}

/* dsn_qid - the letters and digits of a queue id, cut to size - 1: safe in a Message-ID and a MIME boundary. */
static size_t
dsn_qid(char *dst, size_t size, const char *src)
{
	size_t	 n = 0;

	if (size == 0)
		return 0;
	for (; src != NULL && *src != '\0' && n < size - 1; src++)
		if ((*src >= '0' && *src <= '9') || (*src >= 'A' && *src <= 'Z') || (*src >= 'a' && *src <= 'z'))
			dst[n++] = *src;
	dst[n] = '\0';
	return n;
}

int
dsn_boundary(char *buf, size_t size, const char *queue_id, double now, unsigned n)
{
	char		 qid[DSN_QID_MAX + 1];
	long long	 sec;
	long		 usec;
	int		 len;

	dsn_qid(qid, sizeof(qid), queue_id);
	dsn_secs(now, &sec, &usec);
	/* n comes first, followed by ".": no candidate can then be a prefix of another. */
	len = snprintf(buf, size, "=_%u.%s.%lld.%06ld", n, qid, sec, usec);
	if (len < 0 || (size_t)len >= size || len > DSN_BOUNDARY_MAX)
		return -1;
	return 0;
}

/*
 * dsn_wrap - write text (clean: single spaces, no controls) as lines of at most DSN_WRAP columns, the second and
 * later ones indented. A word longer than a line gets a line of its own; clean values are bounded, so even that
 * line stays far below DSN_LINE_MAX.
 */
static void
dsn_wrap(struct evbuffer *out, const char *text, size_t indent)
{
	static const char	 spaces[] = "        ";
	size_t			 col = 0, wl;
	int			 bol = 1;

	if (indent > sizeof(spaces) - 1)
		indent = sizeof(spaces) - 1;
	while (*text != '\0') {
		wl = strcspn(text, " ");
		if (!bol && col + 1 + wl > DSN_WRAP) {
			evbuffer_add(out, "\r\n", 2);
			evbuffer_add(out, spaces, indent);
			col = indent;
			bol = 1;
		}
		if (!bol) {
			evbuffer_add(out, " ", 1);
			col++;
		}
		evbuffer_add(out, text, wl);
		col += wl;
		bol = 0;
		text += wl;
		while (*text == ' ')
			text++;
	}
	evbuffer_add(out, "\r\n", 2);
}

/* dsn_delay_text - how long the message has waited, in words: "3 hour(s)". */
static void
dsn_delay_text(char *buf, size_t size, double waited)
{
	long long	 s;
	long		 usec;
	int		 len;

	dsn_secs(waited, &s, &usec);
	if (s < 2 * 3600)
		len = snprintf(buf, size, "%lld minute(s)", s / 60);
	else if (s < 2 * 86400)
		len = snprintf(buf, size, "%lld hour(s)", s / 3600);
	else
		len = snprintf(buf, size, "%lld day(s)", s / 86400);
	if (len < 0 || (size_t)len >= size)
		fatal_bug("dsn: delay text does not fit (%d)", len);
}

/* Part 1: what happened, for people. */
static void
dsn_part_text(struct evbuffer *p, const struct dsn_ctx *c)
{
	const struct dsn_info	*info = c->info;
	struct dsn_r		 r;
	char			 para[DSN_ADDR_MAX + DSN_HOST_MAX + DSN_DIAG_MAX + 64];
	char			 waited[64];
	size_t			 i;
	int			 len;

	evbuffer_add_printf(p, "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
	evbuffer_add_printf(p, "This is the mail system at host %s.\r\n\r\n", c->host);
	if (info->delayed) {
		evbuffer_add_printf(p,
		    "####################################################################\r\n"
		    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
		    "####################################################################\r\n\r\n");
		dsn_delay_text(waited, sizeof(waited), info->now - info->arrival);
		if (c->expires[0] != '\0')
			len = snprintf(para, sizeof(para), "Your message has not yet been delivered to one or more "
			    "recipients after more than %s. The mail system will keep trying until %s. The header "
			    "of your message is attached below.", waited, c->expires);
		else
			len = snprintf(para, sizeof(para), "Your message has not yet been delivered to one or more "
			    "recipients after more than %s. The mail system will keep trying to deliver it. The "
			    "header of your message is attached below.", waited);
	} else
		len = snprintf(para, sizeof(para), "I'm sorry to have to inform you that your message could not be "
		    "delivered to one or more recipients. The header of your message is attached below.");
	if (len < 0 || (size_t)len >= sizeof(para))
		fatal_bug("dsn: text does not fit (%d)", len);
	dsn_wrap(p, para, 0);
	evbuffer_add_printf(p, "\r\nFor further assistance, please send mail to postmaster.\r\n\r\n"
	    "If you do so, please include this problem report.\r\n\r\n"
	    "                   The mail system\r\n");
	for (i = 0; i < info->nrcpts; i++) {
		dsn_rcpt_resolve(c, i, &r);
		if (r.diag[0] != '\0')
			len = snprintf(para, sizeof(para), "<%s>: %s%s%s%s", r.addr,
			    r.remote[0] != '\0' ? "host " : "", r.remote,
			    r.remote[0] == '\0' ? "" : dsn_is_reply(r.diag) ? " said: " : ": ", r.diag);
		else
			len = snprintf(para, sizeof(para), "<%s>: %s%s%sstatus %s", r.addr,
			    r.remote[0] != '\0' ? "host " : "", r.remote, r.remote[0] != '\0' ? ": " : "",
			    r.status);
		if (len < 0 || (size_t)len >= sizeof(para))
			fatal_bug("dsn: recipient text does not fit (%d)", len);
		evbuffer_add(p, "\r\n", 2);
		dsn_wrap(p, para, 4);
	}
}

/* Part 2: the same, for programs (RFC 3464 2.2 and 2.3). */
static void
dsn_part_status(struct evbuffer *p, const struct dsn_ctx *c)
{
	const struct dsn_info	*info = c->info;
	struct dsn_r		 r;
	size_t			 i;

	evbuffer_add_printf(p, "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n");
	evbuffer_add_printf(p, "Reporting-MTA: dns; %s\r\n", c->host);
	evbuffer_add_printf(p, "X-Luamta-Queue-ID: %s\r\n", c->qid);
	evbuffer_add_printf(p, "X-Luamta-Sender: rfc822; %s\r\n", c->sender7);
	if (c->arrival[0] != '\0')
		evbuffer_add_printf(p, "Arrival-Date: %s\r\n", c->arrival);
	for (i = 0; i < info->nrcpts; i++) {
		dsn_rcpt_resolve(c, i, &r);
		evbuffer_add_printf(p, "\r\nFinal-Recipient: rfc822; %s\r\n", r.addr);
		evbuffer_add_printf(p, "Action: %s\r\n", r.action);
		evbuffer_add_printf(p, "Status: %s\r\n", r.status);
		if (r.remote[0] != '\0')
			evbuffer_add_printf(p, "Remote-MTA: dns; %s\r\n", r.remote);
		if (r.diag[0] != '\0')
			evbuffer_add_printf(p, "Diagnostic-Code: %s; %s\r\n", r.diag_type, r.diag);
		if (c->now[0] != '\0')
			evbuffer_add_printf(p, "Last-Attempt-Date: %s\r\n", c->now);
		if (c->expires[0] != '\0' && strcmp(r.action, "delayed") == 0)
			evbuffer_add_printf(p, "Will-Retry-Until: %s\r\n", c->expires);
	}
}

/*
 * dsn_header_line - write one line of the original header (without its line end) as CRLF lines: a NUL or CR becomes
 * a space, and a line longer than DSN_LINE_MAX is folded, each continuation starting with a space.
 */
static void
dsn_header_line(struct evbuffer *p, const char *s, size_t n, int *eightbit)
{
	char	 line[DSN_LINE_MAX + 2];
	size_t	 len = 0, i;

	for (i = 0; i < n; i++) {
		if (len == DSN_LINE_MAX) {
			memcpy(line + len, "\r\n", 2);
			evbuffer_add(p, line, len + 2);
			line[0] = ' ';
			len = 1;
		}
		if (s[i] == '\0' || s[i] == '\r')
			line[len++] = ' ';
		else
			line[len++] = s[i];
		if ((unsigned char)s[i] >= 0x80)
			*eightbit = 1;
	}
	memcpy(line + len, "\r\n", 2);
	evbuffer_add(p, line, len + 2);
}

/*
 * dsn_copy_header - the header section of the original: every line up to the first empty one, or all of it when
 * there is none, but no more than DSN_HEADER_MAX octets of it, cut at a line end (or inside the first line when
 * that alone is longer). Lines end at LF; one CR before the LF belongs to the line end.
 */
static void
dsn_copy_header(struct evbuffer *p, const char *orig, size_t len, int *eightbit)
{
	const char	*lf;
	size_t		 off = 0, end, n, cap = len < DSN_HEADER_MAX ? len : DSN_HEADER_MAX;

	while (off < cap) {
		lf = memchr(orig + off, '\n', len - off);
		end = lf != NULL ? (size_t)(lf - orig) + 1 : len;	/* one past this line's LF */
		if (end > cap) {
			if (off > 0)
				break;		/* the next line would pass the cap */
			end = cap;		/* one line longer than the cap: its start */
			lf = NULL;
		}
		n = end - off;
		if (lf != NULL)
			n--;
		if (lf != NULL && n > 0 && orig[off + n - 1] == '\r')
			n--;
		if (n == 0 && lf != NULL)
			break;			/* the empty line that ends the header */
		if (n > 0)
			dsn_header_line(p, orig + off, n, eightbit);
		off = end;
	}
}

/* Part 3: the original header. The part's own header comes last: it depends on what the copy found. */
static void
dsn_part_headers(struct evbuffer *p, struct dsn_ctx *c)
{
	const struct dsn_info	*info = c->info;
	struct evbuffer		*body;

	if ((body = evbuffer_new()) == NULL)
		fatal("out of memory");
	if (info->orig != NULL)
		dsn_copy_header(body, info->orig, info->orig_len, &c->eightbit);
	evbuffer_add_printf(p, "Content-Description: %s Message Headers\r\n"
	    "Content-Type: text/rfc822-headers\r\n%s\r\n", info->delayed ? "Delayed" : "Undelivered",
	    c->eightbit ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	evbuffer_add_buffer(p, body);
	evbuffer_free(body);
}

/* dsn_absent - the boundary occurs in none of the parts (RFC 2046 5.1.1). */
static int
dsn_absent(struct evbuffer *const *parts, size_t nparts, const char *b)
{
	size_t	 i;

	for (i = 0; i < nparts; i++)
		if (evbuffer_search(parts[i], b, strlen(b), NULL).pos != -1)
			return 0;
	return 1;
}

int
dsn_build(const struct dsn_info *info, struct evbuffer *out)
{
	struct dsn_ctx	 c;
	struct evbuffer	*parts[3];
	char		 boundary[DSN_BOUNDARY_MAX + 1], msgid[DSN_QID_MAX + DSN_HOST_MAX + 64];
	long long	 sec;
	long		 usec;
	size_t		 i;
	unsigned	 n;
	int		 len;

	if (info == NULL || out == NULL || info->nrcpts == 0 || info->rcpts == NULL)
		return -1;
	memset(&c, 0, sizeof(c));
	c.info = info;
	if (dsn_clean(c.host, sizeof(c.host), info->hostname, 1) == 0 ||
	    dsn_qid(c.qid, sizeof(c.qid), info->queue_id) == 0 ||
	    dsn_addr(c.sender, sizeof(c.sender), info->sender, 0) == 0)
		return -1;
	dsn_addr(c.sender7, sizeof(c.sender7), info->sender, 1);
	for (i = 0; i < info->nrcpts; i++) {
		char	 a[DSN_ADDR_MAX + 1];

		if (dsn_addr(a, sizeof(a), info->rcpts[i].address, 1) == 0)
			return -1;
	}
	dsn_date(c.now, sizeof(c.now), info->now);
	if (info->arrival > 0)
		dsn_date(c.arrival, sizeof(c.arrival), info->arrival);
	if (info->delayed && info->expires > 0)
		dsn_date(c.expires, sizeof(c.expires), info->expires);

	for (i = 0; i < 3; i++)
		if ((parts[i] = evbuffer_new()) == NULL)
			fatal("out of memory");
	dsn_part_text(parts[0], &c);
	dsn_part_status(parts[1], &c);
	dsn_part_headers(parts[2], &c);
	/*
	 * Each position in the parts can match at most one candidate (none is a prefix of another), so some
	 * candidate among the first (octets in the parts + 1) is absent; in practice the first one is.
	 */
	for (n = 0;; n++) {
		if (dsn_boundary(boundary, sizeof(boundary), info->queue_id, info->now, n) == -1)
			fatal_bug("dsn: boundary %u does not fit", n);
		if (dsn_absent(parts, 3, boundary))
			break;
	}

	dsn_secs(info->now, &sec, &usec);
	len = snprintf(msgid, sizeof(msgid), "<%s.%lld.%06ld@%s>", c.qid, sec, usec, c.host);
	if (len < 0 || (size_t)len >= sizeof(msgid))
		fatal_bug("dsn: Message-ID does not fit (%d)", len);
	evbuffer_add_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", c.host);
	evbuffer_add_printf(out, "To: <%s>\r\n", c.sender);
	evbuffer_add_printf(out, "Subject: %s\r\n",
	    info->delayed ? "Delayed Mail (still being retried)" : "Undelivered Mail Returned to Sender");
	if (c.now[0] != '\0')
		evbuffer_add_printf(out, "Date: %s\r\n", c.now);
	evbuffer_add_printf(out, "Message-ID: %s\r\n", msgid);
	evbuffer_add_printf(out, "MIME-Version: 1.0\r\n");
	evbuffer_add_printf(out, "Auto-Submitted: auto-replied\r\n");
	evbuffer_add_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", boundary);
	evbuffer_add_printf(out, "\r\nThis is a MIME-encapsulated message.\r\n");
	for (i = 0; i < 3; i++) {
		evbuffer_add_printf(out, "\r\n--%s\r\n", boundary);
		evbuffer_add_buffer(out, parts[i]);
		evbuffer_free(parts[i]);
	}
	evbuffer_add_printf(out, "\r\n--%s--\r\n", boundary);
	return 0;
}
