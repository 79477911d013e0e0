/*
 * test_dkim.c - unit tests for src/lua/dkim.c: the relaxed body and header canonicalisation of RFC 6376 3.4.2 and
 * 3.4.4 (the wants agree with dkimpy's Relaxed.canonicalize_body/headers), the same output for every way of
 * cutting the input into chunks, and the body hash skipping the header section. Each case is {name, input, want}.
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "dkim.h"
#include "tap.h"

#define OUT_MAX	1024

struct test_sink {
	char	 buf[OUT_MAX];
	size_t	 len;
	int	 overflow;
};

static void
test_out(void *ctx, const char *p, size_t n)
{
	struct test_sink	*s = ctx;

	if (s->len + n > sizeof(s->buf)) {
		s->overflow = 1;
		return;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

static const struct {
	const char	*name;
	const char	*input;
	const char	*want;
} body_cases[] = {
	{ "empty body", "", "" },
	{ "one empty line", "\r\n", "" },
	{ "only empty lines", "\r\n\r\n\r\n", "" },
	{ "only white space lines", " \r\n\t\r\n  \t \r\n", "" },
	{ "one line", "a\r\n", "a\r\n" },
	{ "no final CRLF", "a", "a\r\n" },
	{ "runs of white space", "a  b\t c \r\n", "a b c\r\n" },
	{ "leading white space", "  lead\r\n", " lead\r\n" },
	{ "trailing empty lines", "a\r\n\r\n\r\n", "a\r\n" },
	{ "white space lines inside", "a\r\n \r\n\t\r\nb\r\n", "a\r\n\r\n\r\nb\r\n" },
	{ "empty lines inside and after", "a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n" },
	{ "last line white space, no CRLF", "a \t", "a \r\n" },
	{ "white space after the last CRLF", "a\r\n  ", "a\r\n \r\n" },
	{ "bare CR inside a line", "x\ry\r\n", "x\ry\r\n" },
	{ "bare CR at the end", "a\r", "a\r\r\n" },
	{ "bare LF ends a line", "a \nb\n\n", "a\r\nb\r\n" },
	{ "trailing white space before CRLF", "end of line \t \r\nnext\r\n", "end of line\r\nnext\r\n" },
};

static const struct {
	const char	*name;
	const char	*input;
	const char	*want;
} header_cases[] = {
	{ "plain field", "Subject: Hello\r\n", "subject:Hello\r\n" },
	{ "runs of white space", "Subject:  Hello  World \r\n", "subject:Hello World\r\n" },
	{ "upper-case name", "MESSAGE-ID: <a@b>\r\n", "message-id:<a@b>\r\n" },
	{ "space before the colon", "Subject \t: x\r\n", "subject:x\r\n" },
	{ "folded field", "Subject:\r\n\t folded\r\n  line  \r\n", "subject:folded line\r\n" },
	{ "no final CRLF", "To: a@b.test", "to:a@b.test\r\n" },
	{ "empty value", "Cc:\r\n", "cc:\r\n" },
	{ "fold inside a word list", "To: a@b.test,\r\n c@d.test\r\n", "to:a@b.test, c@d.test\r\n" },
};

/* canon - the body case fed in chunks of size step (0: all at once). */
static void
canon(const char *in, size_t step, struct test_sink *out)
{
	struct dkim_canon	c;
	size_t			len = strlen(in), i;

	memset(out, 0, sizeof(*out));
	dkim_canon_init(&c, test_out, out);
	if (step == 0)
		dkim_canon_feed(&c, in, len);
	else
		for (i = 0; i < len; i += step)
			dkim_canon_feed(&c, in + i, len - i < step ? len - i : step);
	dkim_canon_end(&c);
}

static void
b64_hash(struct dkim_body *b, char *out, size_t size)
{
	size_t	 n = 0;

	if (mbedtls_base64_encode((unsigned char *)out, size, &n, dkim_body_hash(b), DKIM_HASH_LEN) != 0)
		n = 0;
	out[n] = '\0';
}

/* body_hash - the base64 body hash of a whole message fed in chunks of size step. */
static void
body_hash(const char *msg, size_t step, char *out, size_t size)
{
	struct dkim_body	*b = dkim_body_new();
	size_t			 len = strlen(msg), i;

	for (i = 0; i < len; i += step)
		dkim_body_feed(b, msg + i, len - i < step ? len - i : step);
	b64_hash(b, out, size);
	dkim_body_free(b);
}

int
main(void)
{
	struct test_sink	 out;
	size_t			 i, step;
	char			 h1[64], h2[64];

	for (i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
		for (step = 0; step <= 3; step++) {
			canon(body_cases[i].input, step, &out);
			ok(!out.overflow && out.len == strlen(body_cases[i].want) &&
			    memcmp(out.buf, body_cases[i].want, out.len) == 0,
			    "body %s (chunks of %zu): got \"%.*s\"", body_cases[i].name, step, (int)out.len, out.buf);
		}
	}
	for (i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]); i++) {
		memset(&out, 0, sizeof(out));
		dkim_canon_header(header_cases[i].input, strlen(header_cases[i].input), 1, test_out, &out);
		ok(out.len == strlen(header_cases[i].want) && memcmp(out.buf, header_cases[i].want, out.len) == 0,
		    "header %s: got \"%.*s\"", header_cases[i].name, (int)out.len, out.buf);
	}
	memset(&out, 0, sizeof(out));
	dkim_canon_header("DKIM-Signature: v=1;\r\n\tb=", 25, 0, test_out, &out);
	ok(out.len == 22 && memcmp(out.buf, "dkim-signature:v=1; b=", 22) == 0,
	    "the signature field is canonicalised without CRLF: got \"%.*s\"", (int)out.len, out.buf);

	/* The body hash: sha256("") for an empty body (RFC 6376 3.4.4 relaxed), sha256("body\r\n") otherwise. */
	for (step = 1; step <= 7; step += 3) {
		body_hash("Subject: x\r\n\r\n", step, h1, sizeof(h1));
		ok(strcmp(h1, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0,
		    "an empty body hashes as the empty string (chunks of %zu): %s", step, h1);
		body_hash("Subject: x\r\nTo: y\r\n\r\nbody \r\n\r\n\r\n", step, h1, sizeof(h1));
		ok(strcmp(h1, "Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=") == 0,
		    "the header section is skipped and trailing lines dropped (chunks of %zu): %s", step, h1);
		body_hash("Subject: x\n\nbody\n", step, h2, sizeof(h2));
		ok(strcmp(h2, "Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=") == 0,
		    "a LF-only message hashes as its CRLF form (chunks of %zu): %s", step, h2);
	}
	body_hash("Subject: x\r\nX-Long: a\r\n b\r\n", 5, h1, sizeof(h1));
	ok(strcmp(h1, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0,
	    "a message with no empty line has an empty body: %s", h1);
	body_hash("Subject: x\r\n\r\nbody\r\n", 100, h1, sizeof(h1));
	body_hash("Subject: x\r\n\r\nbody\r\nmore\r\n", 100, h2, sizeof(h2));
	ok(strcmp(h1, h2) != 0, "a changed body gives another hash");

	ok(dkim_name_ok("example.test") && dkim_name_ok("s1-2026.a") && !dkim_name_ok("") &&
	    !dkim_name_ok("a;b") && !dkim_name_ok("a b") && !dkim_name_ok("a\r\nb"), "names that fit in a tag");
	return tap_done();
}
