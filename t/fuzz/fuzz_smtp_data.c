/*
 * fuzz_smtp_data.c - libFuzzer target for src/smtp/smtp_data.c. The first input octet picks normalize and seeds the
 * chunk sizes; the rest is the data stream. Checks: any split gives the same result as one call; the data ends
 * exactly at the first CRLF "." CRLF (or ".\r\n" at the very start) and never elsewhere; the output equals a slow
 * reference written from the rules in smtp_data.c; with normalize, the output has no bare CR or bare LF.
 * Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

#define FUZZ_IN_MAX	8192
#define FUZZ_OUT_MAX	(2 * FUZZ_IN_MAX)	/* normalize at most doubles: LF -> CRLF */

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct fuzz_sink {
	char	buf[FUZZ_OUT_MAX];
	size_t	len;
};

struct fuzz_result {
	struct fuzz_sink	out;
	size_t			consumed;
	int			done, bare_lf, bare_cr;
	unsigned long long	octets;
};

static void
fuzz_emit(void *ctx, const char *p, size_t n)
{
	struct fuzz_sink	*k = ctx;

	assert(n > 0);
	assert(n <= sizeof(k->buf) - k->len);
	memcpy(k->buf + k->len, p, n);
	k->len += n;
}

/* fuzz_scan - feed in chunks whose sizes come from a small generator seeded by seed; seed 0 means one call. */
static void
fuzz_scan(const char *in, size_t len, int normalize, unsigned seed, struct fuzz_result *r)
{
	struct smtp_data_scan	s;
	size_t			off = 0, chunk, n;

	r->out.len = 0;
	r->consumed = 0;
	smtp_data_init(&s, normalize);
	while (!s.done) {
		if (seed == 0)
			chunk = len - off;
		else {
			seed = seed * 1103515245u + 12345u;
			chunk = (seed >> 16) % 7;	/* 0..6, empty calls included */
			if (chunk > len - off)
				chunk = len - off;
		}
		n = smtp_data_feed(&s, in + off, chunk, fuzz_emit, &r->out);
		assert(n <= chunk);
		assert(n == chunk || s.done);		/* short only when done */
		off += n;
		if (off == len && !s.done)
			break;
	}
	assert(smtp_data_feed(&s, in + off, len - off, fuzz_emit, &r->out) == (s.done ? 0 : len - off));
	r->consumed = off;
	r->done = s.done;
	r->bare_lf = s.bare_lf;
	r->bare_cr = s.bare_cr;
	r->octets = s.octets;
	assert(r->octets == r->out.len);
}

/* fuzz_crlf_start - position q opens a line that follows CRLF, or opens the data. */
static int
fuzz_crlf_start(const char *in, size_t q)
{
	return q == 0 || (q >= 2 && in[q - 2] == '\r' && in[q - 1] == '\n');
}

/* fuzz_reference - what smtp_data_feed() must do, written the slow way over the whole input. */
static void
fuzz_reference(const char *in, size_t len, int normalize, struct fuzz_result *r)
{
	size_t	p, q, end;
	int	start;

	memset(r, 0, sizeof(*r));
	end = len;
	for (p = 0; p + 3 <= len; p++)
		if (memcmp(in + p, ".\r\n", 3) == 0 && fuzz_crlf_start(in, p)) {
			r->done = 1;
			end = p;
			break;
		}
	r->consumed = r->done ? end + 3 : len;

	for (q = 0; q < end; q++) {
		start = fuzz_crlf_start(in, q) ||
		    (normalize && (in[q - 1] == '\n' || (in[q - 1] == '\r' && in[q] != '\n')));
		if (in[q] == '.' && start) {
			/* dropped; if it opens ".\r" at the very end, that CR is still held */
			if (!r->done && fuzz_crlf_start(in, q) && q + 2 == len && in[q + 1] == '\r')
				break;
			continue;
		}
		if (in[q] == '\n' && (q == 0 || in[q - 1] != '\r')) {
			r->bare_lf = 1;
			if (normalize) {
				memcpy(r->out.buf + r->out.len, "\r\n", 2);
				r->out.len += 2;
				continue;
			}
		} else if (in[q] == '\r' && q + 1 < len && in[q + 1] != '\n') {
			r->bare_cr = 1;
			if (normalize) {
				memcpy(r->out.buf + r->out.len, "\r\n", 2);
				r->out.len += 2;
				continue;
			}
		}
		/* a CR at the very end is emitted at once; what follows it is not known yet */
		r->out.buf[r->out.len++] = in[q];
	}
	r->octets = r->out.len;
}

static void
fuzz_same(const struct fuzz_result *a, const struct fuzz_result *b)
{
	assert(a->out.len == b->out.len);
	assert(memcmp(a->out.buf, b->out.buf, a->out.len) == 0);
	assert(a->consumed == b->consumed);
	assert(a->done == b->done);
	assert(a->bare_lf == b->bare_lf);
	assert(a->bare_cr == b->bare_cr);
	assert(a->octets == b->octets);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_result	 whole, part, ref;
	const char			*in;
	size_t				 len, i;
	unsigned			 seed;
	int				 normalize;

	if (size == 0)
		return 0;
	normalize = data[0] & 1;
	seed = (unsigned)data[0] | 1u;
	in = (const char *)data + 1;
	len = size - 1 < FUZZ_IN_MAX ? size - 1 : FUZZ_IN_MAX;

	fuzz_scan(in, len, normalize, 0, &whole);
	fuzz_scan(in, len, normalize, seed, &part);
	fuzz_same(&whole, &part);
	fuzz_scan(in, len, normalize, seed * 7919u, &part);
	fuzz_same(&whole, &part);
	fuzz_reference(in, len, normalize, &ref);
	fuzz_same(&whole, &ref);

	if (whole.done) {
		assert(whole.consumed >= 3 && whole.consumed <= len);
		assert(memcmp(in + whole.consumed - 3, ".\r\n", 3) == 0);
	} else
		assert(whole.consumed == len);

	if (normalize) {
		/* CRLF only: each LF after a CR, each CR before a LF (but a CR at the very end may await its LF). */
		for (i = 0; i < whole.out.len; i++) {
			if (whole.out.buf[i] == '\n')
				assert(i > 0 && whole.out.buf[i - 1] == '\r');
			if (whole.out.buf[i] == '\r' && i + 1 < whole.out.len)
				assert(whole.out.buf[i + 1] == '\n');
		}
	}
	if (!whole.bare_lf && !whole.bare_cr && whole.done)
		/* a clean message is its input less the terminator and the stuffing dots */
		assert(whole.out.len <= whole.consumed - 3);
	return 0;
}
