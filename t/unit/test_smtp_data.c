/*
 * test_smtp_data.c - unit tests for src/smtp/smtp_data.c: end of data, dot-stuffing, bare CR and bare LF, normalize
 * mode, and the same result for every way of cutting the input into chunks. Each case is {name, input, want}.
 */
#include <stdio.h>
#include <string.h>

#include "smtp_data.h"
#include "tap.h"

#define OUT_MAX	1024

struct test_sink {
	char	 buf[OUT_MAX];
	size_t	 len;
	int	 overflow;	/* more than OUT_MAX, or a broken contract */
};

struct test_result {
	struct test_sink	 out;
	size_t			 consumed;
	int			 done, bare_lf, bare_cr;
	unsigned long long	 octets;
};

static const struct {
	const char	*name;
	const char	*input;
	int		 normalize;
	const char	*want;		/* emitted octets */
	int		 done;
	const char	*rest;		/* input left unconsumed */
	int		 bare_lf, bare_cr;
} cases[] = {
	/* name, input, normalize, want, done, rest, bare_lf, bare_cr */
	{ "plain message", "Subject: x\r\n\r\nbody\r\n.\r\n", 0, "Subject: x\r\n\r\nbody\r\n", 1, "", 0, 0 },
	{ "one line", "a\r\n.\r\n", 0, "a\r\n", 1, "", 0, 0 },
	{ "empty message", ".\r\n", 0, "", 1, "", 0, 0 },
	{ "one empty line", "\r\n.\r\n", 0, "\r\n", 1, "", 0, 0 },
	{ "two empty lines", "\r\n\r\n.\r\n", 0, "\r\n\r\n", 1, "", 0, 0 },
	{ "no end yet", "a\r\nb\r\n", 0, "a\r\nb\r\n", 0, "", 0, 0 },
	{ "nothing", "", 0, "", 0, "", 0, 0 },
	{ "dot-stuffed line", "..a\r\n.\r\n", 0, ".a\r\n", 1, "", 0, 0 },
	{ "dot-stuffed lone dot", "a\r\n..\r\n.\r\n", 0, "a\r\n.\r\n", 1, "", 0, 0 },
	{ "dot-stuffed three dots", "...\r\n.\r\n", 0, "..\r\n", 1, "", 0, 0 },
	{ "dot and text at start", ".a\r\n.\r\n", 0, "a\r\n", 1, "", 0, 0 },
	{ "dot inside a line", "a.b\r\n.\r\n", 0, "a.b\r\n", 1, "", 0, 0 },
	{ "dot and space", "a\r\n. \r\n.\r\n", 0, "a\r\n \r\n", 1, "", 0, 0 },
	{ "bytes after end", "a\r\n.\r\nMAIL FROM:<>\r\n", 0, "a\r\n", 1, "MAIL FROM:<>\r\n", 0, 0 },
	{ "end then X", "\r\n.\r\nX", 0, "\r\n", 1, "X", 0, 0 },
	{ "second end left", ".\r\n.\r\n", 0, "", 1, ".\r\n", 0, 0 },
	/* SMTP smuggling: a dot line after a bare LF or bare CR never ends the data. */
	{ "LF dot LF", "a\n.\nb\r\n.\r\n", 0, "a\n.\nb\r\n", 1, "", 1, 0 },
	{ "LF dot LF normalized", "a\n.\nb\r\n.\r\n", 1, "a\r\n\r\nb\r\n", 1, "", 1, 0 },
	{ "LF dot CRLF", "\n.\r\n", 0, "\n.\r\n", 0, "", 1, 0 },
	{ "LF dot CRLF normalized", "\n.\r\n", 1, "\r\n\r\n", 0, "", 1, 0 },
	{ "CR dot CR", "\r.\r", 0, "\r.\r", 0, "", 0, 1 },
	{ "CR dot CR then X", "\r.\rX", 0, "\r.\rX", 0, "", 0, 1 },
	{ "CR dot CR normalized", "\r.\rX", 1, "\r\n\r\nX", 0, "", 0, 1 },
	{ "CRLF dot LF", "\r\n.\n", 0, "\r\n\n", 0, "", 1, 0 },
	{ "CRLF dot LF normalized", "\r\n.\nX", 1, "\r\n\r\nX", 0, "", 1, 0 },
	{ "CRLF dot CR X", "\r\n.\rX", 0, "\r\n\rX", 0, "", 0, 1 },
	{ "CRLF dot CR X normalized", "\r\n.\rX", 1, "\r\n\r\nX", 0, "", 0, 1 },
	{ "CRLF dot CR CR LF", "a\r\n.\r\r\n.\r\n", 0, "a\r\n\r\r\n", 1, "", 0, 1 },
	{ "CRLF dot CRLF X", "\r\n.\r\nX", 0, "\r\n", 1, "X", 0, 0 },
	{ "bare LF then CRLF dot CRLF", "a\nb\r\n.\r\n", 0, "a\nb\r\n", 1, "", 1, 0 },
	{ "bare LF before dot CRLF", "a\n.\r\nb\r\n.\r\n", 0, "a\n.\r\nb\r\n", 1, "", 1, 0 },
	{ "CR before CRLF dot CRLF", "a\r\r\n.\r\n", 0, "a\r\r\n", 1, "", 0, 1 },
	{ "CR before CRLF normalized", "a\r\r\n.\r\n", 1, "a\r\n\r\n", 1, "", 0, 1 },
	{ "LF LF", "a\n\nb\r\n.\r\n", 1, "a\r\n\r\nb\r\n", 1, "", 1, 0 },
	{ "CR CR", "a\r\rb\r\n.\r\n", 1, "a\r\n\r\nb\r\n", 1, "", 0, 1 },
	{ "LF CR", "a\n\rb\r\n.\r\n", 1, "a\r\n\r\nb\r\n", 1, "", 1, 1 },
	{ "bare CR at the start", "\rX\r\n.\r\n", 0, "\rX\r\n", 1, "", 0, 1 },
	{ "bare LF at the start", "\nX\r\n.\r\n", 1, "\r\nX\r\n", 1, "", 1, 0 },
	{ "dot after bare LF kept", "a\n..b\r\n.\r\n", 0, "a\n..b\r\n", 1, "", 1, 0 },
	{ "dot after bare LF removed", "a\n..b\r\n.\r\n", 1, "a\r\n.b\r\n", 1, "", 1, 0 },
	{ "dot after bare CR removed", "a\r.b\r\n.\r\n", 1, "a\r\nb\r\n", 1, "", 0, 1 },
	{ "normalize keeps CRLF", "a\r\n..b\r\n.\r\n", 1, "a\r\n.b\r\n", 1, "", 0, 0 },
	{ "trailing CR held", "a\r", 0, "a\r", 0, "", 0, 0 },
	{ "trailing CR held normalized", "a\r", 1, "a\r", 0, "", 0, 0 },
	{ "trailing dot CR held", "a\r\n.\r", 0, "a\r\n", 0, "", 0, 0 },
	{ "dot LF at start", ".\n.\r\n", 0, "\n.\r\n", 0, "", 1, 0 },
	{ "8-bit octets", "\xc3\xa9\xff\x01\r\n.\r\n", 0, "\xc3\xa9\xff\x01\r\n", 1, "", 0, 0 },
};

static void
test_sink_emit(void *ctx, const char *p, size_t n)
{
	struct test_sink	*k = ctx;

	if (n > sizeof(k->buf) - k->len) {
		k->overflow = 1;
		return;
	}
	memcpy(k->buf + k->len, p, n);
	k->len += n;
}

/*
 * test_scan - feed input in chunks: cuts[] (ascending, ncuts of them) are the offsets where a new call starts. Stops
 * feeding once the scanner is done, as the session does.
 */
static void
test_scan(const char *in, size_t len, int normalize, const size_t *cuts, size_t ncuts,
    struct test_result *r)
{
	struct smtp_data_scan	s;
	size_t			from, to, k, n;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&s, normalize);
	from = 0;
	for (k = 0; k <= ncuts && !s.done; k++) {
		to = (k < ncuts) ? cuts[k] : len;
		n = smtp_data_feed(&s, in + from, to - from, test_sink_emit, &r->out);
		r->consumed += n;
		if (n < to - from && !s.done)
			r->out.overflow = 1;	/* a short count without done breaks the contract */
		from = to;
	}
	r->done = s.done;
	r->bare_lf = s.bare_lf;
	r->bare_cr = s.bare_cr;
	r->octets = s.octets;
}

static int
test_same(const struct test_result *a, const struct test_result *b)
{
	return a->out.len == b->out.len && memcmp(a->out.buf, b->out.buf, a->out.len) == 0 &&
	    a->consumed == b->consumed && a->done == b->done && a->bare_lf == b->bare_lf &&
	    a->bare_cr == b->bare_cr && a->octets == b->octets && !a->out.overflow && !b->out.overflow;
}

static void
test_cases(void)
{
	struct test_result	r;
	size_t			i, len;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i].input);
		test_scan(cases[i].input, len, cases[i].normalize, NULL, 0, &r);
		ok(r.out.len == strlen(cases[i].want) && memcmp(r.out.buf, cases[i].want, r.out.len) == 0,
		    "%s: output (%zu octets) differs", cases[i].name, r.out.len);
		ok(r.done == cases[i].done, "%s: done=%d", cases[i].name, r.done);
		ok(r.consumed == len - strlen(cases[i].rest) &&
		    strcmp(cases[i].input + r.consumed, cases[i].rest) == 0,
		    "%s: consumed %zu of %zu", cases[i].name, r.consumed, len);
		ok(r.bare_lf == cases[i].bare_lf && r.bare_cr == cases[i].bare_cr, "%s: bare_lf=%d bare_cr=%d",
		    cases[i].name, r.bare_lf, r.bare_cr);
		ok(r.octets == r.out.len, "%s: octets=%llu", cases[i].name, r.octets);
	}
}

/* Every case, cut once at every offset, cut twice at every pair of offsets, and fed one octet at a time. */
static void
test_splits(void)
{
	struct test_result	whole, part;
	size_t			i, a, b, len, cuts[2], bytes[128];
	int			norm, bad;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i].input);
		for (norm = 0; norm <= 1; norm++) {
			test_scan(cases[i].input, len, norm, NULL, 0, &whole);
			bad = 0;
			for (a = 0; a <= len; a++) {
				cuts[0] = a;
				test_scan(cases[i].input, len, norm, cuts, 1, &part);
				bad += !test_same(&whole, &part);
				for (b = a; b <= len; b++) {
					cuts[1] = b;
					test_scan(cases[i].input, len, norm, cuts, 2, &part);
					bad += !test_same(&whole, &part);
				}
			}
			ok(bad == 0, "%s (normalize=%d): %d splits differ from the whole", cases[i].name, norm, bad);
			if (len > sizeof(bytes) / sizeof(bytes[0]))
				continue;		/* keep the cases short */
			for (a = 0; a + 1 < len; a++)
				bytes[a] = a + 1;	/* a call per octet */
			test_scan(cases[i].input, len, norm, bytes, len > 0 ? len - 1 : 0, &part);
			ok(test_same(&whole, &part), "%s (normalize=%d): octet by octet differs", cases[i].name, norm);
		}
	}
}

/* Once done, the scanner takes nothing more; and emit may be NULL. */
static void
test_after_done(void)
{
	struct smtp_data_scan	s;
	struct test_sink	k;

	memset(&k, 0, sizeof(k));
	smtp_data_init(&s, 0);
	ok(smtp_data_feed(&s, "x\r\n.\r\nMAIL", 10, test_sink_emit, &k) == 6, "stops after the terminator");
	ok(s.done == 1, "done after the terminator");
	ok(smtp_data_feed(&s, "more\r\n.\r\n", 9, test_sink_emit, &k) == 0, "consumes nothing once done");
	ok(k.len == 3 && memcmp(k.buf, "x\r\n", 3) == 0, "nothing emitted once done");

	smtp_data_init(&s, 1);
	ok(smtp_data_feed(&s, "ab\ncd\r\n.\r\n", 10, NULL, NULL) == 10 && s.done, "NULL emit still scans");
	ok(s.octets == 8 && s.bare_lf == 1, "NULL emit still counts: %llu", s.octets);

	/* A NUL is an ordinary octet. */
	memset(&k, 0, sizeof(k));
	smtp_data_init(&s, 0);
	ok(smtp_data_feed(&s, "a\0b\r\n.\r\n", 8, test_sink_emit, &k) == 8 && s.done, "NUL in data");
	ok(k.len == 5 && memcmp(k.buf, "a\0b\r\n", 5) == 0, "NUL passed through");

	/* 300 stuffed lines in one call: every dot goes, every other octet is counted. */
	memset(&k, 0, sizeof(k));
	smtp_data_init(&s, 0);
	{
		static char	big[OUT_MAX * 4];
		size_t		n = 0, i;

		for (i = 0; i < 300; i++) {
			memcpy(big + n, "..xy\r\n", 6);
			n += 6;
		}
		memcpy(big + n, ".\r\n", 3);
		n += 3;
		ok(smtp_data_feed(&s, big, n, NULL, NULL) == n && s.done, "300 stuffed lines end");
		ok(s.octets == 300 * 5, "300 stuffed lines emit %llu octets", s.octets);
	}
}

/* The hop count: Received: fields of the header section only, in any case, in any split of the input. */
static void
test_hops(void)
{
	static const struct {
		const char	*name;
		const char	*input;
		unsigned	 want;
	} hc[] = {
		{ "none", "Subject: x\r\n\r\nbody\r\n", 0 },
		{ "two", "Received: a\r\nreceived: b\r\n\tcontinued\r\nSubject: x\r\n\r\n", 2 },
		{ "not in the body", "Received: a\r\n\r\nReceived: b\r\n", 1 },
		{ "not a prefix", "Received-SPF: pass\r\nXReceived: x\r\n\r\n", 0 },
		{ "obsolete space", "Received : y\r\n\r\n", 1 },
		{ "long name", "Received-But-Longer-Than-Sixteen: x\r\nReceived:x\r\n", 1 },
		{ "bare LF lines", "Received: a\nReceived: b\n\nReceived: c\n", 2 },
		{ "no header section", "\r\nReceived: a\r\n", 0 },
	};
	struct smtp_hops	 h;
	size_t			 i, j, len;

	for (i = 0; i < sizeof(hc) / sizeof(hc[0]); i++) {
		len = strlen(hc[i].input);
		smtp_hops_init(&h);
		smtp_hops_feed(&h, hc[i].input, len);
		ok(h.hops == hc[i].want, "hops: %s: %u", hc[i].name, h.hops);
		smtp_hops_init(&h);
		for (j = 0; j < len; j++)
			smtp_hops_feed(&h, hc[i].input + j, 1);
		ok(h.hops == hc[i].want, "hops: %s, one octet at a time: %u", hc[i].name, h.hops);
	}
}

int
main(void)
{
	test_cases();
	test_splits();
	test_after_done();
	test_hops();
	return tap_done();
}
