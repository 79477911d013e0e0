/*
 * fuzz_smtp_proto.c - libFuzzer target for src/smtp/smtp_proto.c. Feeds arbitrary octets to every function and checks
 * that outputs stay NUL-terminated inside their bounds, that errors carry a reply, and that an accepted path parses
 * again to the same address; proto_line_max(), proto_non_smtp() and proto_utf8_ok() are compared with references
 * written another way (RFC 3629's table of well-formed sequences for UTF-8). Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtp_proto.h"

#define FUZZ_IN_MAX	4096

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* fuzz_bounded - the field holds a NUL inside its size; returns its length. */
static size_t
fuzz_bounded(const char *field, size_t size)
{
	const char	*nul = memchr(field, '\0', size);

	assert(nul != NULL);
	return (size_t)(nul - field);
}

static void
fuzz_check_reply(const char *why)
{
	assert(why != NULL);
	assert(why[0] == '5' && why[3] == ' ');
	assert(why[4] == '5' && why[5] == '.');
	assert(strchr(why, '\r') == NULL && strchr(why, '\n') == NULL);
}

static void
fuzz_path(enum proto_verb verb, const char *arg)
{
	static struct proto_path	 p, q;
	static char			 again[PROTO_ADDR_MAX + 16];
	const char			*why = NULL;
	size_t				 i, ll, dl, al, n;
	int				 w;

	/* Poison the output so that an unterminated field shows. */
	memset(&p, 0xa5, sizeof(p));
	if (proto_parse_path(verb, arg, &p, &why) == -1) {
		fuzz_check_reply(why);
		return;
	}
	ll = fuzz_bounded(p.addr.local, sizeof(p.addr.local));
	dl = fuzz_bounded(p.addr.domain, sizeof(p.addr.domain));
	al = fuzz_bounded(p.addr.address, sizeof(p.addr.address));
	assert(p.nparams <= PROTO_PARAMS_MAX);
	for (i = 0; i < p.nparams; i++) {
		const char	*k = p.params[i].key;

		n = fuzz_bounded(k, sizeof(p.params[i].key));
		assert(n > 0);
		for (; *k != '\0'; k++)
			assert(!(*k >= 'a' && *k <= 'z'));
		n = fuzz_bounded(p.params[i].value, sizeof(p.params[i].value));
		assert(p.params[i].has_value ? n > 0 : n == 0);
	}
	for (i = 0; i < ll; i++)
		assert((unsigned char)p.addr.local[i] >= 0x20 && p.addr.local[i] != 0x7f);
	for (i = 0; i < dl; i++)
		assert((unsigned char)p.addr.domain[i] > 0x20 && p.addr.domain[i] != 0x7f);
	if (p.addr.is_null) {
		assert(verb == PROTO_V_MAIL);
		assert(ll == 0 && dl == 0 && al == 0);
		return;
	}
	assert(ll > 0);
	if (dl == 0) {
		assert(verb == PROTO_V_RCPT);
		assert(strcmp(p.addr.address, p.addr.local) == 0);
	} else {
		assert(al == ll + 1 + dl);
		assert(memcmp(p.addr.address, p.addr.local, ll) == 0 && p.addr.address[ll] == '@');
		assert(strcmp(p.addr.address + ll + 1, p.addr.domain) == 0);
		assert(p.addr.domain[dl - 1] != '.' || p.addr.domain[0] == '[');
	}

	/* What was accepted is accepted again, unchanged, once written back between brackets. */
	w = snprintf(again, sizeof(again), "%s:<%s>", verb == PROTO_V_MAIL ? "FROM" : "TO", p.addr.address);
	assert(w > 0 && (size_t)w < sizeof(again));
	memset(&q, 0x5a, sizeof(q));
	assert(proto_parse_path(verb, again, &q, &why) == 0);
	assert(strcmp(q.addr.address, p.addr.address) == 0);
	assert(strcmp(q.addr.local, p.addr.local) == 0);
	assert(strcmp(q.addr.domain, p.addr.domain) == 0);
	assert(q.addr.is_utf8 == p.addr.is_utf8 && q.nparams == 0);
}

/* fuzz_utf8_ref - RFC 3629 4 (Unicode Table 3-7): the well-formed byte sequences, one row at a time. */
static int
fuzz_utf8_ref(const unsigned char *s, size_t n)
{
	size_t	 i = 0, k, len;
	unsigned char lo, hi;

	while (i < n) {
		unsigned char	 c = s[i];

		lo = 0x80;
		hi = 0xbf;
		if (c < 0x80)
			len = 1;
		else if (c >= 0xc2 && c <= 0xdf)
			len = 2;
		else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			if (c == 0xe0)
				lo = 0xa0;	/* overlong */
			else if (c == 0xed)
				hi = 0x9f;	/* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			if (c == 0xf0)
				lo = 0x90;	/* overlong */
			else if (c == 0xf4)
				hi = 0x8f;	/* past U+10FFFF */
		} else
			return 0;
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++) {
			unsigned char	 lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xbf;

			if (s[i + k] < lo_k || s[i + k] > hi_k)
				return 0;
		}
		i += len;
	}
	return 1;
}

/* fuzz_non_smtp_ref - an HTTP method first, or a first word of printable ASCII ending in ":" (a header). */
static int
fuzz_non_smtp_ref(const char *line, size_t len)
{
	size_t	 w;

	if ((len >= 4 && strncasecmp(line, "GET ", 4) == 0) || (len >= 5 && strncasecmp(line, "POST ", 5) == 0) ||
	    (len >= 8 && strncasecmp(line, "CONNECT ", 8) == 0))
		return 1;
	for (w = 0; w < len && line[w] > 0x20 && line[w] < 0x7f; w++)
		;
	return w > 1 && memchr(line, ':', w) != NULL && memchr(line, ':', w) != line;
}

/* The line-level checks of the session: how long a line may be, non-SMTP clients, UTF-8. */
static void
fuzz_line(const char *buf, size_t n)
{
	size_t	 max, k;
	int	 r;

	max = proto_line_max(buf, n);
	assert(max == (n >= 5 && strncasecmp(buf, "AUTH ", 5) == 0 ? PROTO_AUTH_LINE_MAX : PROTO_LINE_MAX));
	for (k = 0; k < n && k < 8; k++)	/* a shorter head never allows more than the whole one */
		assert(proto_line_max(buf, k) <= (size_t)PROTO_AUTH_LINE_MAX && proto_line_max(buf, k) >= PROTO_LINE_MAX);

	r = proto_non_smtp(buf, n);
	assert(r == 0 || r == 1);
	assert(r == fuzz_non_smtp_ref(buf, n));

	r = proto_utf8_ok(buf, n);
	assert(r == 0 || r == 1);
	assert(r == fuzz_utf8_ref((const unsigned char *)buf, n));
	if (r && n > 0)			/* a well-formed string cut before a lead octet stays well-formed */
		for (k = n - 1; k > 0; k--)
			if (((unsigned char)buf[k] & 0xc0) != 0x80) {
				assert(proto_utf8_ok(buf, k) == 1);
				break;
			}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char		 buf[FUZZ_IN_MAX + 1];
	const char		*arg;
	unsigned long long	 bsize;
	size_t			 n = size < FUZZ_IN_MAX ? size : FUZZ_IN_MAX;
	enum proto_verb		 v;
	int			 last, h;

	memcpy(buf, data, n);
	buf[n] = '\0';

	fuzz_line(buf, n);

	/* The raw line, NULs and all: only len bounds the verb match. */
	arg = NULL;
	v = proto_verb_of(buf, n, &arg);
	assert(v >= PROTO_V_UNKNOWN && v < PROTO_V_COUNT);
	assert(proto_verb_name(v) != NULL);
	assert(arg != NULL && arg >= buf && arg <= buf + n);
	if (v != PROTO_V_UNKNOWN) {
		assert(arg == buf + n || arg[-1] == ' ' || arg - buf == 4 || arg - buf == 8);
		assert(strcmp(proto_verb_name(v), "UNKNOWN") != 0);
	}

	/* The argument as the session would pass it, and the whole input as an argument. */
	fuzz_path(PROTO_V_MAIL, arg);
	fuzz_path(PROTO_V_RCPT, arg);
	fuzz_path(PROTO_V_MAIL, buf);
	fuzz_path(PROTO_V_RCPT, buf);
	fuzz_path(v, buf);

	h = proto_helo_ok(buf);
	assert(h == 0 || h == 1);
	if (h)
		assert(strlen(buf) > 0 && strlen(buf) <= PROTO_DOMAIN_MAX + 1);
	h = proto_helo_ok(arg);
	assert(h == 0 || h == 1);

	bsize = 0;
	last = -1;
	if (proto_bdat_args(buf, &bsize, &last) == 0) {
		assert(bsize <= 999999999999ULL);
		assert(last == 0 || last == 1);
		assert(buf[0] >= '0' && buf[0] <= '9');
	}
	return 0;
}
