/*
 * test_dsn.c - delivery status notifications: the report's header, its multipart/report structure, the DSN fields
 * per recipient, header injection, the bounds on values and lines, the returned header, the delay warning, the
 * refusals, and a seeded run of random reports that must all keep the same shape.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "dsn.h"
#include "tap.h"
#include "util.h"

#define NOW	1700000000.25
#define ARRIVED	(NOW - 3 * 3600)

static const char	 orig_simple[] =
    "Received: from client.example (client.example [192.0.2.1])\r\n"
    "\tby mx.example.org with ESMTP id 0123456789ABCDEF0123\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: jdoe@example.org\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "BODY-SECRET line one\r\n"
    "\r\n"
    "X-Not-A-Header: in the body\r\n";

static const struct dsn_rcpt	 rcpt_one[] = {
	{ "jdoe@example.org", "failed", "5.1.1", "550 5.1.1 <jdoe@example.org>: no such user", "mx.example.org" },
};

static const struct dsn_rcpt	 rcpt_three[] = {
	{ "a@one.example", "failed", "5.1.1", "550 5.1.1 <a@one.example>: no such user", "mx.one.example" },
	{ "b@two.example", "failed", "5.7.1", "554 5.7.1 relay denied", NULL },
	{ "c@three.example", "failed", "5.4.4", NULL, NULL },
};

static struct dsn_info
info_base(const struct dsn_rcpt *r, size_t n)
{
	struct dsn_info	 info;

	memset(&info, 0, sizeof(info));
	info.hostname = "mail.example.net";
	info.queue_id = "0123456789ABCDEF0123";
	info.arrival = ARRIVED;
	info.now = NOW;
	info.sender = "alice@example.com";
	info.rcpts = r;
	info.nrcpts = n;
	info.orig = orig_simple;
	info.orig_len = sizeof(orig_simple) - 1;
	return info;
}

/* build - run dsn_build; the report as a string (free it), or NULL when it refused. *rc gets the result. */
static char *
build(const struct dsn_info *info, int *rc)
{
	struct evbuffer	*out = evbuffer_new();
	size_t		 len;
	char		*s = NULL;

	*rc = dsn_build(info, out);
	len = evbuffer_get_length(out);
	if (*rc == 0) {
		s = xmalloc(len + 1);
		evbuffer_remove(out, s, len);
		s[len] = '\0';
	} else if (len != 0)
		*rc = -2;		/* refused but wrote something */
	evbuffer_free(out);
	return s;
}

/* lines_ok - every line ends in CRLF, no CR or LF stands alone, no line is over 998 octets, no NUL. */
static int
lines_ok(const char *s, size_t *longest)
{
	size_t	 col = 0;

	*longest = 0;
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (*s == '\r') {
			if (s[1] != '\n')
				return 0;
			if (col > *longest)
				*longest = col;
			col = 0;
			s++;
		} else if (*s == '\n')
			return 0;
		else
			col++;
	}
	return col == 0 && *longest <= 998;
}

/* line_count - how many lines equal line exactly. */
static int
line_count(const char *s, const char *line)
{
	size_t		 n = strlen(line);
	const char	*p = s;
	int		 count = 0;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == s || p[-1] == '\n') && p[n] == '\r' && p[n + 1] == '\n')
			count++;
		p += n;
	}
	return count;
}

static int
has_line(const char *s, const char *line)
{
	return line_count(s, line) > 0;
}

/* prefix_count - how many lines start with prefix. */
static int
prefix_count(const char *s, const char *prefix)
{
	size_t		 n = strlen(prefix);
	const char	*p;
	int		 count = 0;

	for (p = s; p != NULL && *p != '\0'; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
		if (strncmp(p, prefix, n) == 0)
			count++;
	return count;
}

static int
has_line_prefix(const char *s, const char *prefix)
{
	return prefix_count(s, prefix) > 0;
}

/* line_with - a copy of the first line that starts with prefix (without CRLF), or "" (static buffer). */
static const char *
line_with(const char *s, const char *prefix)
{
	static char	 buf[4096];
	size_t		 n = strlen(prefix), len;
	const char	*p, *e;

	buf[0] = '\0';
	for (p = s; p != NULL && *p != '\0'; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
		if (strncmp(p, prefix, n) == 0) {
			e = strstr(p, "\r\n");
			len = e ? (size_t)(e - p) : strlen(p);
			if (len >= sizeof(buf))
				len = sizeof(buf) - 1;
			memcpy(buf, p, len);
			buf[len] = '\0';
			break;
		}
	return buf;
}

/* header_of - a copy of the header section of s (up to and without the empty line); free it. */
static char *
header_of(const char *s)
{
	const char	*e = strstr(s, "\r\n\r\n");
	size_t		 len = e ? (size_t)(e - s) + 2 : strlen(s);
	char		*h = xmalloc(len + 1);

	memcpy(h, s, len);
	h[len] = '\0';
	return h;
}

/* fields_only - the header section has exactly the fields in want (a NULL-ended list), in any order. */
static int
fields_only(const char *hdr, const char *const *want)
{
	const char	*p, *colon;
	size_t		 i, n, seen = 0, nwant = 0;

	while (want[nwant] != NULL)
		nwant++;
	for (p = hdr; p != NULL && *p != '\0'; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
		if (*p == ' ' || *p == '\t' || *p == '\0')
			continue;		/* a continuation */
		if ((colon = strchr(p, ':')) == NULL)
			return 0;
		n = (size_t)(colon - p);
		for (i = 0; i < nwant; i++)
			if (strlen(want[i]) == n && strncmp(p, want[i], n) == 0)
				break;
		if (i == nwant)
			return 0;
		seen++;
	}
	return seen == nwant;
}

/* boundary_of - the boundary parameter of the top-level Content-Type (static buffer), or "". */
static const char *
boundary_of(const char *s)
{
	static char	 buf[128];
	const char	*p = strstr(s, "boundary=\""), *e;

	buf[0] = '\0';
	if (p == NULL || (e = strchr(p + 10, '"')) == NULL || (size_t)(e - p - 10) >= sizeof(buf))
		return buf;
	memcpy(buf, p + 10, (size_t)(e - p - 10));
	buf[e - p - 10] = '\0';
	return buf;
}

/* part_of - a copy of part k (0-based) of the multipart s: its header and body; free it. NULL if missing. */
static char *
part_of(const char *s, const char *b, int k)
{
	char		 delim[160];
	const char	*p = s, *e;
	char		*part;
	int		 i;

	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", b);
	for (i = 0; i <= k; i++) {
		if ((p = strstr(p, delim)) == NULL)
			return NULL;
		p += strlen(delim);
	}
	snprintf(delim, sizeof(delim), "\r\n--%s", b);
	if ((e = strstr(p, delim)) == NULL)
		return NULL;
	part = xmalloc((size_t)(e - p) + 3);
	memcpy(part, p, (size_t)(e - p));
	memcpy(part + (e - p), "\r\n", 3);		/* the CRLF before a delimiter belongs to it */
	return part;
}

/* structure_ok - three parts in report order, each delimiter once, the closing one last, boundary in no part. */
static int
structure_ok(const char *s)
{
	const char	*b = boundary_of(s);
	char		 line[160], *part, *h;
	int		 i, good = 1;
	static const char *const types[] = {
		"Content-Type: text/plain; charset=us-ascii",
		"Content-Type: message/delivery-status",
		"Content-Type: text/rfc822-headers",
	};

	if (b[0] == '\0' || strlen(b) > 70)
		return 0;
	snprintf(line, sizeof(line), "--%s", b);
	if (line_count(s, line) != 3)
		return 0;
	snprintf(line, sizeof(line), "\r\n--%s--\r\n", b);
	if (strstr(s, line) == NULL || strcmp(strstr(s, line), line) != 0)
		return 0;
	for (i = 0; i < 3; i++) {
		if ((part = part_of(s, b, i)) == NULL)
			return 0;
		h = header_of(part);
		if (!has_line(h, types[i]) || strstr(part, b) != NULL)
			good = 0;
		free(h);
		free(part);
	}
	return good;
}

static void
test_header(void)
{
	struct dsn_info	 info = info_base(rcpt_one, 1);
	char		*s, *h;
	size_t		 longest;
	int		 rc;
	static const char *const fields[] = { "From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
	    "Auto-Submitted", "Content-Type", NULL };

	s = build(&info, &rc);
	ok(rc == 0 && s != NULL, "a bounce is built");
	if (s == NULL)
		return;
	h = header_of(s);
	ok(has_line(h, "From: Mail Delivery System <MAILER-DAEMON@mail.example.net>"), "From: MAILER-DAEMON");
	ok(has_line(h, "To: <alice@example.com>"), "To: the envelope sender");
	ok(has_line(h, "Subject: Undelivered Mail Returned to Sender"), "Subject of a bounce");
	ok(has_line(h, "Auto-Submitted: auto-replied"), "Auto-Submitted: auto-replied (RFC 3834)");
	ok(has_line(h, "MIME-Version: 1.0"), "MIME-Version");
	ok(has_line_prefix(h, "Date: ") && strlen(line_with(h, "Date: ")) > 20, "Date: %s", line_with(h, "Date: "));
	ok(has_line(h, "Message-ID: <0123456789ABCDEF0123.1700000000.250000@mail.example.net>"),
	    "Message-ID from queue id, time and host: %s", line_with(h, "Message-ID: "));
	ok(has_line_prefix(h, "Content-Type: multipart/report; report-type=delivery-status;"),
	    "Content-Type multipart/report; report-type=delivery-status");
	ok(fields_only(h, fields), "the header has exactly the expected fields");
	ok(lines_ok(s, &longest), "CRLF lines of at most 998 octets (longest %zu)", longest);
	ok(structure_ok(s), "three parts, delimiters and the closing delimiter");
	ok(has_line(s, "This is the mail system at host mail.example.net."), "text part opens like Postfix's");
	ok(strstr(s, "your message could not be delivered") != NULL, "text part says it failed");
	ok(has_line(s, "<jdoe@example.org>: host mx.example.org said: 550 5.1.1"), "text part: who said what");
	ok(has_line(s, "    <jdoe@example.org>: no such user"), "text part: wrapped lines are indented");
	free(h);
	free(s);

	info.now = NOW + 1;
	s = build(&info, &rc);
	ok(s != NULL && has_line(s, "Message-ID: <0123456789ABCDEF0123.1700000001.250000@mail.example.net>"),
	    "another time, another Message-ID");
	free(s);
	info.sender = "<alice@example.com>";
	s = build(&info, &rc);
	ok(s != NULL && has_line(s, "To: <alice@example.com>"), "a bracketed sender is not bracketed twice");
	free(s);
}

static void
test_rcpts(void)
{
	static const struct {
		const char		*name;
		const struct dsn_rcpt	*rcpts;
		size_t			 n;
		const char		*want[3][5];	/* per recipient: Final-Recipient, Action, Status, Remote, Diag */
	} cases[] = {
		{ "one recipient", rcpt_one, 1, {
			{ "Final-Recipient: rfc822; jdoe@example.org", "Action: failed", "Status: 5.1.1",
			  "Remote-MTA: dns; mx.example.org",
			  "Diagnostic-Code: smtp; 550 5.1.1 <jdoe@example.org>: no such user" } } },
		{ "three recipients", rcpt_three, 3, {
			{ "Final-Recipient: rfc822; a@one.example", "Action: failed", "Status: 5.1.1",
			  "Remote-MTA: dns; mx.one.example",
			  "Diagnostic-Code: smtp; 550 5.1.1 <a@one.example>: no such user" },
			{ "Final-Recipient: rfc822; b@two.example", "Action: failed", "Status: 5.7.1", NULL,
			  "Diagnostic-Code: smtp; 554 5.7.1 relay denied" },
			{ "Final-Recipient: rfc822; c@three.example", "Action: failed", "Status: 5.4.4", NULL, NULL } } },
	};
	size_t		 i, j, k;
	char		*s, *p2, *p1, *block, *next, *end;
	int		 rc, found;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_info	 info = info_base(cases[i].rcpts, cases[i].n);

		s = build(&info, &rc);
		ok(s != NULL, "%s: built", cases[i].name);
		if (s == NULL)
			continue;
		ok(structure_ok(s), "%s: structure", cases[i].name);
		p1 = part_of(s, boundary_of(s), 0);
		p2 = part_of(s, boundary_of(s), 1);
		ok(p2 != NULL && has_line(p2, "Reporting-MTA: dns; mail.example.net"), "%s: Reporting-MTA",
		    cases[i].name);
		ok(p2 != NULL && has_line(p2, "X-Luamta-Queue-ID: 0123456789ABCDEF0123"), "%s: queue id",
		    cases[i].name);
		ok(p2 != NULL && has_line_prefix(p2, "Arrival-Date: "), "%s: Arrival-Date", cases[i].name);
		ok(p2 != NULL && prefix_count(p2, "Final-Recipient: ") == (int)cases[i].n &&
		    prefix_count(p2, "Last-Attempt-Date: ") == (int)cases[i].n, "%s: one block per recipient",
		    cases[i].name);
		/* Walk the per-recipient blocks in order: each begins with Final-Recipient after an empty line. */
		block = p2 ? strstr(p2, "\r\n\r\nFinal-Recipient:") : NULL;
		for (j = 0; j < cases[i].n; j++) {
			if (block == NULL) {
				ok(0, "%s: block %zu missing", cases[i].name, j);
				break;
			}
			block += 4;
			next = strstr(block, "\r\n\r\n");
			end = next ? next + 2 : block + strlen(block);
			*end = '\0';
			for (k = 0; k < 5; k++) {
				static const char *const pre[] = { "Final-Recipient:", "Action:", "Status:",
				    "Remote-MTA:", "Diagnostic-Code:" };

				found = has_line_prefix(block, pre[k]);
				if (cases[i].want[j][k] == NULL)
					ok(!found, "%s: recipient %zu has no %s", cases[i].name, j, pre[k]);
				else
					ok(has_line(block, cases[i].want[j][k]), "%s: recipient %zu: %s",
					    cases[i].name, j, cases[i].want[j][k]);
			}
			ok(has_line_prefix(block, "Last-Attempt-Date: "), "%s: recipient %zu Last-Attempt-Date",
			    cases[i].name, j);
			ok(!has_line_prefix(block, "Will-Retry-Until:"), "%s: no Will-Retry-Until in a bounce",
			    cases[i].name);
			block = next;
			if (next != NULL)
				*end = '\r';
		}
		for (j = 0; j < cases[i].n; j++) {
			char	 want[600];

			snprintf(want, sizeof(want), "<%s>: ", cases[i].rcpts[j].address);
			ok(p1 != NULL && has_line_prefix(p1, want), "%s: text part lists %s", cases[i].name,
			    cases[i].rcpts[j].address);
		}
		if (cases[i].rcpts == rcpt_three) {
			ok(p1 != NULL && has_line(p1, "<b@two.example>: 554 5.7.1 relay denied"),
			    "%s: a reply without a host", cases[i].name);
			ok(p1 != NULL && has_line(p1, "<c@three.example>: status 5.4.4"),
			    "%s: no diagnostic: the status", cases[i].name);
		}
		free(p1);
		free(p2);
		free(s);
	}
}

static void
test_injection(void)
{
	static const struct dsn_rcpt	 evil[] = {
		{ "jdoe@example.org\r\nBcc: x@y", "failed", "5.1.1", "550 oops\r\nBcc: x@y", "mx\r\nBcc: x@y" },
		{ "k@example.org", "failed\r\nBcc: x@y", "5.1.1\r\nBcc: x@y", "550 a\nb\rc\td\x01" "e\x7f" "f", NULL },
	};
	struct dsn_info	 info = info_base(evil, 2);
	char		*s, *h, *p2;
	size_t		 longest;
	int		 rc;
	static const char *const fields[] = { "From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
	    "Auto-Submitted", "Content-Type", NULL };

	info.sender = "alice@example.com\r\nBcc: x@y";
	info.hostname = "mail.example.net\r\nBcc: x@y";
	s = build(&info, &rc);
	ok(s != NULL, "injection: built");
	if (s == NULL)
		return;
	h = header_of(s);
	ok(fields_only(h, fields), "injection: no field added to the header");
	ok(has_line(h, "To: <alice@example.com Bcc: x@y>"), "injection: To: stays on one line");
	ok(!has_line_prefix(s, "Bcc:"), "injection: no line starts with Bcc:");
	ok(lines_ok(s, &longest), "injection: CRLF lines only");
	ok(structure_ok(s), "injection: structure");
	p2 = part_of(s, boundary_of(s), 1);
	ok(p2 != NULL && has_line(p2, "Diagnostic-Code: smtp; 550 oops Bcc: x@y"),
	    "injection: the diagnostic stays on one line: %s", line_with(p2 ? p2 : "", "Diagnostic-Code:"));
	ok(p2 != NULL && has_line(p2, "Diagnostic-Code: smtp; 550 a b c d e f"),
	    "injection: LF, CR, TAB, ^A and DEL become single spaces");
	ok(p2 != NULL && has_line(p2, "Final-Recipient: rfc822; jdoe@example.org Bcc: x@y"),
	    "injection: the recipient stays on one line");
	ok(p2 != NULL && has_line(p2, "Remote-MTA: dns; mx Bcc: x@y"), "injection: the remote MTA too");
	ok(p2 != NULL && line_count(p2, "Action: failed") == 2, "injection: a bad action becomes the default");
	ok(p2 != NULL && line_count(p2, "Status: 5.1.1") == 1 && line_count(p2, "Status: 5.0.0") == 1,
	    "injection: a bad status becomes 5.0.0");
	ok(p2 != NULL && has_line(p2, "Reporting-MTA: dns; mail.example.net Bcc: x@y"),
	    "injection: the host name stays on one line");
	free(p2);
	free(h);
	free(s);
}

static void
test_bounds(void)
{
	struct dsn_rcpt	 r[1];
	struct dsn_info	 info;
	char		*diag, *addr, *host, *s, *p2;
	const char	*l;
	size_t		 longest;
	int		 rc;

	diag = xmalloc(5001);
	memset(diag, 'D', 5000);
	memcpy(diag, "550 ", 4);
	diag[5000] = '\0';
	addr = xmalloc(3001);
	memset(addr, 'a', 3000);
	addr[3000] = '\0';
	host = xmalloc(3001);
	memset(host, 'h', 3000);
	host[3000] = '\0';
	r[0] = (struct dsn_rcpt){ addr, "failed", "5.1.1", diag, host };
	info = info_base(r, 1);
	info.sender = addr;
	info.hostname = host;
	s = build(&info, &rc);
	ok(s != NULL, "bounds: built");
	if (s == NULL)
		goto done;
	ok(lines_ok(s, &longest), "bounds: every line at most 998 octets (longest %zu)", longest);
	ok(structure_ok(s), "bounds: structure");
	p2 = part_of(s, boundary_of(s), 1);
	l = line_with(p2 ? p2 : "", "Diagnostic-Code: smtp; ");
	ok(strlen(l) == strlen("Diagnostic-Code: smtp; ") + DSN_DIAG_MAX, "bounds: diagnostic cut to %d (%zu)",
	    DSN_DIAG_MAX, strlen(l));
	l = line_with(p2 ? p2 : "", "Final-Recipient: rfc822; ");
	ok(strlen(l) == strlen("Final-Recipient: rfc822; ") + DSN_ADDR_MAX, "bounds: address cut to %d (%zu)",
	    DSN_ADDR_MAX, strlen(l));
	l = line_with(p2 ? p2 : "", "Remote-MTA: dns; ");
	ok(strlen(l) == strlen("Remote-MTA: dns; ") + DSN_HOST_MAX, "bounds: remote MTA cut to %d (%zu)",
	    DSN_HOST_MAX, strlen(l));
	ok(strlen(line_with(s, "To: <")) == strlen("To: <>") + DSN_ADDR_MAX, "bounds: To: cut to %d",
	    DSN_ADDR_MAX);
	free(p2);
	free(s);
done:
	free(diag);
	free(addr);
	free(host);
}

static void
test_orig_header(void)
{
	static const struct {
		const char	*name, *orig;
		const char	*want[4];	/* lines in part 3 */
		const char	*absent;	/* text not in part 3, or NULL */
	} cases[] = {
		{ "header without the body", orig_simple,
		    { "Subject: hello", "\tby mx.example.org with ESMTP id 0123456789ABCDEF0123",
		      "From: Alice <alice@example.com>", NULL }, "BODY-SECRET" },
		{ "bare LF becomes CRLF", "Subject: lf\nX-A: 1\n\nbody-lf\n", { "Subject: lf", "X-A: 1", NULL },
		    "body-lf" },
		{ "no empty line: all of it", "Subject: all\r\nX-B: 2", { "Subject: all", "X-B: 2", NULL }, NULL },
		{ "mixed line ends", "Subject: mix\r\nX-C: 3\n\r\nbody-mix\r\n", { "Subject: mix", "X-C: 3", NULL },
		    "body-mix" },
		{ "stray CR and NUL become spaces", "Subject: a\rb\r\n\r\n", { "Subject: a b", NULL }, NULL },
		{ "8-bit kept", "Subject: caf\xc3\xa9\r\n\r\n", { "Subject: caf\xc3\xa9",
		    "Content-Transfer-Encoding: 8bit", NULL }, NULL },
		{ "empty header", "\r\nbody-only\r\n", { "Content-Type: text/rfc822-headers", NULL }, "body-only" },
	};
	size_t		 i, j, longest;
	char		*s, *p3;
	int		 rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_info	 info = info_base(rcpt_one, 1);

		info.orig = cases[i].orig;
		info.orig_len = strlen(cases[i].orig);
		s = build(&info, &rc);
		ok(s != NULL && lines_ok(s, &longest) && structure_ok(s), "%s: built, CRLF lines, structure",
		    cases[i].name);
		if (s == NULL)
			continue;
		p3 = part_of(s, boundary_of(s), 2);
		for (j = 0; cases[i].want[j] != NULL; j++)
			ok(p3 != NULL && has_line(p3, cases[i].want[j]), "%s: has \"%s\"", cases[i].name,
			    cases[i].want[j]);
		if (cases[i].absent != NULL)
			ok(p3 != NULL && strstr(p3, cases[i].absent) == NULL, "%s: no \"%s\"", cases[i].name,
			    cases[i].absent);
		if (strstr(cases[i].name, "8-bit") == NULL)
			ok(p3 != NULL && strstr(p3, "Content-Transfer-Encoding") == NULL, "%s: no CTE for 7-bit",
			    cases[i].name);
		free(p3);
		free(s);
	}
	/* The NUL case needs a length. */
	{
		static const char	 nul[] = "Subject: x\0y\r\n\r\n";
		struct dsn_info		 info = info_base(rcpt_one, 1);

		info.orig = nul;
		info.orig_len = sizeof(nul) - 1;
		s = build(&info, &rc);
		ok(s != NULL && has_line(s, "Subject: x y"), "a NUL in the header becomes a space");
		free(s);
	}
}

static void
test_orig_limits(void)
{
	struct dsn_info	 info = info_base(rcpt_one, 1);
	char		*big, *s, *p3;
	size_t		 off = 0, longest, n = 0;
	int		 rc;

	/* A 100 KiB header of 100-octet lines, then a marker line past the cap. */
	big = xmalloc(200 * 1024);
	while (off < 100 * 1024) {
		snprintf(big + off, 101, "X-Filler-%06zu: %-81s\r\n", n++, "x");
		off += 100;
	}
	off += (size_t)snprintf(big + off, 64, "X-Last: past the cap\r\n\r\nbody\r\n");
	info.orig = big;
	info.orig_len = off;
	s = build(&info, &rc);
	ok(s != NULL && lines_ok(s, &longest) && structure_ok(s), "huge header: built");
	p3 = s ? part_of(s, boundary_of(s), 2) : NULL;
	ok(p3 != NULL && strlen(p3) <= DSN_HEADER_MAX + 200, "huge header: part 3 capped (%zu)",
	    p3 ? strlen(p3) : 0);
	ok(p3 != NULL && has_line_prefix(p3, "X-Filler-000000: ") && has_line_prefix(p3, "X-Filler-000654: ") &&
	    !has_line_prefix(p3, "X-Filler-000655: ") && strstr(p3, "X-Last") == NULL,
	    "huge header: cut at a line end below 64 KiB");
	free(p3);
	free(s);

	/* One 3000-octet header line is folded, not passed through. */
	memset(big, 'v', 3000);
	memcpy(big, "X-Long: ", 8);
	memcpy(big + 3000, "\r\n\r\n", 4);
	info.orig_len = 3004;
	s = build(&info, &rc);
	ok(s != NULL && lines_ok(s, &longest) && longest <= 998, "long header line folded (longest %zu)", longest);
	p3 = s ? part_of(s, boundary_of(s), 2) : NULL;
	ok(p3 != NULL && has_line_prefix(p3, "X-Long: vvv") && has_line_prefix(p3, " vvv"),
	    "long header line: continuation lines start with a space");
	free(p3);
	free(s);

	/* One line longer than the cap, no LF at all. */
	memset(big, 'w', 100 * 1024);
	memcpy(big, "X-Huge: ", 8);
	info.orig_len = 100 * 1024;
	s = build(&info, &rc);
	ok(s != NULL && lines_ok(s, &longest) && structure_ok(s), "one huge line: built, folded");
	p3 = s ? part_of(s, boundary_of(s), 2) : NULL;
	ok(p3 != NULL && strlen(p3) <= DSN_HEADER_MAX + 300 && strlen(p3) > DSN_HEADER_MAX,
	    "one huge line: its first 64 KiB (%zu)", p3 ? strlen(p3) : 0);
	free(p3);
	free(s);
	free(big);
}

static void
test_boundary(void)
{
	char		 b0[DSN_BOUNDARY_MAX + 1], bn[DSN_BOUNDARY_MAX + 1], *orig, *s;
	struct dsn_rcpt	 r[1];
	struct dsn_info	 info = info_base(rcpt_one, 1);
	size_t		 off = 0, longest;
	unsigned	 n;
	int		 rc;

	ok(dsn_boundary(b0, sizeof(b0), info.queue_id, info.now, 0) == 0, "candidate 0: %s", b0);
	ok(dsn_boundary(bn, sizeof(bn), info.queue_id, info.now, 1) == 0 && strcmp(b0, bn) != 0,
	    "candidate 1 differs: %s", bn);
	ok(dsn_boundary(bn, sizeof(bn), "../\"x y\r\n", 1e300, 4000000000u) == 0 &&
	    strspn(bn, "=_.0123456789xy") == strlen(bn), "odd input still gives bchars: %s", bn);
	ok(dsn_boundary(bn, 10, info.queue_id, info.now, 0) == -1, "too small a buffer is refused");

	s = build(&info, &rc);
	ok(s != NULL && strcmp(boundary_of(s), b0) == 0, "plain report uses candidate 0");
	free(s);

	/* The original's header holds candidates 0 to 9. */
	orig = xmalloc(4096);
	for (n = 0; n < 10; n++) {
		dsn_boundary(bn, sizeof(bn), info.queue_id, info.now, n);
		off += (size_t)snprintf(orig + off, 4096 - off, "X-Trap-%u: --%s\r\n", n, bn);
	}
	off += (size_t)snprintf(orig + off, 4096 - off, "\r\nbody\r\n");
	info.orig = orig;
	info.orig_len = off;
	s = build(&info, &rc);
	ok(s != NULL && structure_ok(s) && lines_ok(s, &longest), "candidates in the original: structure");
	ok(s != NULL && strstr(orig, boundary_of(s)) == NULL, "the boundary %s is not in the original",
	    s ? boundary_of(s) : "");
	ok(s != NULL && has_line_prefix(s, "X-Trap-9: --"), "the trap lines were returned");
	free(s);

	/* A diagnostic holds candidate 0. */
	snprintf(orig, 4096, "550 5.1.1 --%s", b0);
	r[0] = (struct dsn_rcpt){ "jdoe@example.org", "failed", "5.1.1", orig, NULL };
	info = info_base(r, 1);
	s = build(&info, &rc);
	ok(s != NULL && structure_ok(s) && strcmp(boundary_of(s), b0) != 0,
	    "a diagnostic with candidate 0 makes the boundary vary");
	free(s);
	free(orig);
}

static void
test_delayed(void)
{
	static const struct dsn_rcpt	 r[] = {
		{ "slow@example.org", "delayed", "4.4.1", "421 4.4.1 try later", "mx.slow.example" },
		{ "quiet@example.org", NULL, NULL, NULL, NULL },
	};
	struct dsn_info	 info = info_base(r, 2);
	char		*s, *p1, *p2, *p3;
	size_t		 longest;
	int		 rc;

	info.delayed = 1;
	info.expires = ARRIVED + 5 * 86400;
	s = build(&info, &rc);
	ok(s != NULL && lines_ok(s, &longest) && structure_ok(s), "delayed: built");
	if (s == NULL)
		return;
	p1 = part_of(s, boundary_of(s), 0);
	p2 = part_of(s, boundary_of(s), 1);
	p3 = part_of(s, boundary_of(s), 2);
	ok(has_line(s, "Subject: Delayed Mail (still being retried)"), "delayed: Subject");
	ok(p1 != NULL && strstr(p1, "THIS IS A WARNING ONLY") != NULL, "delayed: a warning only");
	ok(p1 != NULL && strstr(p1, "has not yet been delivered") != NULL, "delayed: not yet delivered");
	ok(p1 != NULL && strstr(p1, "3 hour(s)") != NULL, "delayed: says how long it waited");
	ok(p1 != NULL && strstr(p1, "will keep trying until") != NULL, "delayed: says until when");
	ok(p1 != NULL && strstr(p1, "could not be delivered") == NULL, "delayed: does not say it failed");
	ok(p2 != NULL && line_count(p2, "Action: delayed") == 2, "delayed: Action: delayed, also by default");
	ok(p2 != NULL && has_line(p2, "Status: 4.4.1") && has_line(p2, "Status: 4.0.0"),
	    "delayed: Status 4.4.1 and the default 4.0.0");
	ok(p2 != NULL && has_line(p2, "Diagnostic-Code: smtp; 421 4.4.1 try later"), "delayed: Diagnostic-Code");
	ok(p2 != NULL && prefix_count(p2, "Will-Retry-Until: ") == 2, "delayed: Will-Retry-Until per recipient");
	ok(p3 != NULL && has_line(p3, "Content-Description: Delayed Message Headers"), "delayed: part 3 named");
	free(p1);
	free(p2);
	free(p3);
	free(s);

	info.expires = 0;
	s = build(&info, &rc);
	ok(s != NULL && strstr(s, "will keep trying to deliver it") != NULL && strstr(s, "Will-Retry-Until") == NULL,
	    "delayed without an expiry: no date promised");
	free(s);
}

static void
test_defaults(void)
{
	static const struct {
		const char	*name;
		struct dsn_rcpt	 r;
		const char	*want;
	} cases[] = {
		{ "bad status", { "a@b.example", "failed", "abc", NULL, NULL }, "Status: 5.0.0" },
		{ "status class 3", { "a@b.example", "failed", "3.1.1", NULL, NULL }, "Status: 5.0.0" },
		{ "status too long", { "a@b.example", "failed", "5.1234.1", NULL, NULL }, "Status: 5.0.0" },
		{ "status trailing junk", { "a@b.example", "failed", "5.1.1x", NULL, NULL }, "Status: 5.0.0" },
		{ "three-digit status", { "a@b.example", "failed", "5.123.456", NULL, NULL }, "Status: 5.123.456" },
		{ "no action", { "a@b.example", NULL, "5.1.1", NULL, NULL }, "Action: failed" },
		{ "action in capitals", { "a@b.example", "DELAYED", "4.4.1", NULL, NULL }, "Action: delayed" },
		{ "unknown action", { "a@b.example", "exploded", "5.1.1", NULL, NULL }, "Action: failed" },
		{ "non-SMTP diagnostic", { "a@b.example", "failed", "4.4.1", "connection timed out", "mx.b.example" },
		    "Diagnostic-Code: X-Luamta; connection timed out" },
		{ "bracketed address", { "<a@b.example>", "failed", "5.1.1", NULL, NULL },
		    "Final-Recipient: rfc822; a@b.example" },
		{ "8-bit diagnostic", { "a@b.example", "failed", "5.1.1", "550 caf\xc3\xa9", NULL },
		    "Diagnostic-Code: smtp; 550 caf??" },
		{ "blank diagnostic", { "a@b.example", "failed", "5.1.1", " \r\n ", NULL }, "Status: 5.1.1" },
	};
	size_t		 i;
	char		*s, *p2;
	int		 rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_info	 info = info_base(&cases[i].r, 1);

		s = build(&info, &rc);
		p2 = s ? part_of(s, boundary_of(s), 1) : NULL;
		ok(p2 != NULL && has_line(p2, cases[i].want), "%s: %s", cases[i].name, cases[i].want);
		if (strcmp(cases[i].name, "non-SMTP diagnostic") == 0)
			ok(s != NULL && has_line(s, "<a@b.example>: host mx.b.example: connection timed out"),
			    "non-SMTP diagnostic: the host did not say it");
		if (strcmp(cases[i].name, "blank diagnostic") == 0)
			ok(p2 != NULL && strstr(p2, "Diagnostic-Code") == NULL, "blank diagnostic: left out");
		free(p2);
		free(s);
	}
}

static void
test_refusals(void)
{
	static const struct dsn_rcpt	 noaddr[] = { { NULL, "failed", "5.1.1", NULL, NULL } };
	static const struct dsn_rcpt	 blankaddr[] = { { " <> ", "failed", "5.1.1", NULL, NULL } };
	static const struct {
		const char		*name, *sender, *hostname, *queue_id;
		const struct dsn_rcpt	*rcpts;
		size_t			 n;
	} cases[] = {
		{ "empty sender", "", "h.example", "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "null sender <>", "<>", "h.example", "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "blank sender", " \r\n", "h.example", "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "NULL sender", NULL, "h.example", "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "no recipients", "a@b.example", "h.example", "0123456789ABCDEF0123", rcpt_one, 0 },
		{ "NULL recipients", "a@b.example", "h.example", "0123456789ABCDEF0123", NULL, 1 },
		{ "recipient without address", "a@b.example", "h.example", "0123456789ABCDEF0123", noaddr, 1 },
		{ "recipient <>", "a@b.example", "h.example", "0123456789ABCDEF0123", blankaddr, 1 },
		{ "no hostname", "a@b.example", NULL, "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "empty hostname", "a@b.example", "", "0123456789ABCDEF0123", rcpt_one, 1 },
		{ "no queue id", "a@b.example", "h.example", NULL, rcpt_one, 1 },
		{ "queue id of punctuation", "a@b.example", "h.example", "../..", rcpt_one, 1 },
	};
	size_t	 i;
	char	*s;
	int	 rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_info	 info = info_base(cases[i].rcpts, cases[i].n);

		info.sender = cases[i].sender;
		info.hostname = cases[i].hostname;
		info.queue_id = cases[i].queue_id;
		s = build(&info, &rc);
		ok(s == NULL && rc == -1, "%s: -1 and nothing written (rc %d)", cases[i].name, rc);
		free(s);
	}
	ok(dsn_build(NULL, NULL) == -1, "NULL info: -1");
}

/* A small generator, so the random run is the same every time. */
static unsigned long	 rnd_state = 12345;

static unsigned
rnd(unsigned n)
{
	rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)((rnd_state >> 33) % n);
}

/* rnd_text - up to max octets from a mix built to hurt: CR, LF, NUL-free controls, 8-bit, "--", ":". */
static void
rnd_text(char *buf, size_t max)
{
	static const char	 alpha[] = "\r\n\t\x01\x7f\x80\xff --:<>@.aZ09=_\"; ";
	size_t			 n = rnd((unsigned)max), i;

	for (i = 0; i < n; i++)
		buf[i] = rnd(4) == 0 ? alpha[rnd(sizeof(alpha) - 1)] : (char)('a' + rnd(26));
	buf[n] = '\0';
}

/* part2_ok - every line of part 2 is empty, a part header, or a known DSN field. */
static int
part2_ok(const char *p2)
{
	static const char *const known[] = { "Content-Description: ", "Content-Type: ", "Reporting-MTA: dns; ",
	    "X-Luamta-Queue-ID: ", "X-Luamta-Sender: rfc822; ", "Arrival-Date: ", "Final-Recipient: rfc822; ",
	    "Action: ", "Status: ", "Remote-MTA: dns; ", "Diagnostic-Code: ", "Last-Attempt-Date: ",
	    "Will-Retry-Until: " };
	const char	*p, *e;
	size_t		 k;

	for (p = p2; *p != '\0'; p = e + 2) {
		if ((e = strstr(p, "\r\n")) == NULL)
			return 0;
		if (e == p)
			continue;
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strncmp(p, known[k], strlen(known[k])) == 0)
				break;
		if (k == sizeof(known) / sizeof(known[0]))
			return 0;
	}
	return 1;
}

static void
test_random(void)
{
	static const char *const fields[] = { "From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
	    "Auto-Submitted", "Content-Type", NULL };
	static char	 addr[4][700], diag[4][1200], remote[4][400], status[4][16], sender[700], host[400];
	static char	 orig[3000];
	struct dsn_rcpt	 r[4];
	size_t		 i, j, k, n, longest, bad_lines = 0, bad_fields = 0, bad_struct = 0, bad_p2 = 0, built = 0;
	char		*s, *h, *p2;
	int		 rc;

	for (i = 0; i < 3000; i++) {
		struct dsn_info	 info;

		n = 1 + rnd(4);
		for (j = 0; j < n; j++) {
			rnd_text(addr[j], rnd(2) ? 40 : sizeof(addr[j]) - 1);
			rnd_text(diag[j], rnd(2) ? 60 : sizeof(diag[j]) - 1);
			rnd_text(remote[j], rnd(2) ? 20 : sizeof(remote[j]) - 1);
			snprintf(status[j], sizeof(status[j]), "%u.%u.%u", rnd(7), rnd(20), rnd(1200));
			r[j] = (struct dsn_rcpt){ addr[j], rnd(2) ? "failed" : "delayed", status[j],
			    rnd(4) ? diag[j] : NULL, rnd(2) ? remote[j] : NULL };
		}
		rnd_text(sender, rnd(2) ? 30 : sizeof(sender) - 1);
		rnd_text(host, rnd(2) ? 30 : sizeof(host) - 1);
		for (k = 0, j = rnd(sizeof(orig)); k < j; k++)
			orig[k] = rnd(8) == 0 ? "\r\n\0\x80-"[rnd(5)] : (char)('A' + rnd(26));
		info = (struct dsn_info){ host, "0123456789ABCDEF0123", rnd(2) ? NOW - rnd(900000) : 0,
		    NOW + rnd(1000), rnd(2) ? NOW + rnd(500000) : 0, sender, r, n, orig, j, (int)rnd(2) };
		s = build(&info, &rc);
		if (s == NULL)
			continue;
		built++;
		h = header_of(s);
		p2 = part_of(s, boundary_of(s), 1);
		if (!lines_ok(s, &longest))
			bad_lines++;
		if (!fields_only(h, fields))
			bad_fields++;
		if (!structure_ok(s))
			bad_struct++;
		if (p2 == NULL || !part2_ok(p2))
			bad_p2++;
		free(p2);
		free(h);
		free(s);
	}
	ok(built > 2000, "random: most reports built (%zu of 3000)", built);
	ok(bad_lines == 0, "random: CRLF lines of at most 998 octets (%zu bad)", bad_lines);
	ok(bad_fields == 0, "random: the header never gains a field (%zu bad)", bad_fields);
	ok(bad_struct == 0, "random: three parts, boundary in none (%zu bad)", bad_struct);
	ok(bad_p2 == 0, "random: part 2 holds only DSN fields (%zu bad)", bad_p2);
}

int
main(void)
{
	test_header();
	test_rcpts();
	test_injection();
	test_bounds();
	test_orig_header();
	test_orig_limits();
	test_boundary();
	test_delayed();
	test_defaults();
	test_refusals();
	test_random();
	return tap_done();
}
