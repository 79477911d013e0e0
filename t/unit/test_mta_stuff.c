/*
 * test_mta_stuff.c - dot-stuffing a message a chunk at a time (mta.h) gives what RFC 5321 4.5.2 asks for, wherever
 * the chunks are cut: a line that starts with '.' gets one more, and a message without a final CRLF gets one.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mta.h"
#include "tap.h"

/* reference - the stuffed form, line by line (a line ends at CRLF). */
static size_t
reference(const char *in, size_t len, char *out)
{
	size_t	 i, o = 0;
	int	 bol = 1;

	for (i = 0; i < len; i++) {
		if (bol && in[i] == '.')
			out[o++] = '.';
		out[o++] = in[i];
		bol = in[i] == '\n' && i > 0 && in[i - 1] == '\r';
	}
	if (len < 2 || in[len - 2] != '\r' || in[len - 1] != '\n') {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	return o;
}

/* stuffed - in, cut into chunks of step octets (0: one chunk), through mta_stuff. */
static size_t
stuffed(const char *in, size_t len, size_t step, char *out)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 off = 0, n;
	int		 state = MTA_STUFF_START;

	do {
		n = step == 0 || len - off < step ? len - off : step;
		mta_stuff(b, in + off, n, &state);
		off += n;
	} while (off < len);
	mta_stuff_end(b, state);
	n = evbuffer_get_length(b);
	evbuffer_remove(b, out, n);
	evbuffer_free(b);
	return n;
}

int
main(void)
{
	static const struct { const char *name, *in, *want; } cases[] = {
		{ "empty", "", "\r\n" },
		{ "a dot line", ".\r\n", "..\r\n" },
		{ "dots inside", "a.b\r\n.c\r\n..\r\n", "a.b\r\n..c\r\n...\r\n" },
		{ "no final CRLF", "x\r\n.y", "x\r\n..y\r\n" },
		{ "a lone CR at the end", "x\r", "x\r\r\n" },
		{ "a bare LF is no line end", "x\n.y\r\n", "x\n.y\r\n" },
	};
	static const size_t steps[] = { 0, 1, 2, 3, 7, 64 };
	char		 in[4096], out[9000], ref[9000];
	size_t		 i, k, n, r, bad;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
			n = stuffed(cases[i].in, strlen(cases[i].in), steps[k], out);
			ok(n == strlen(cases[i].want) && memcmp(out, cases[i].want, n) == 0, "%s, chunks of %zu",
			    cases[i].name, steps[k]);
		}
	/* Random messages of CR, LF, '.' and 'a', cut at every chunk size up to 9. */
	srandom(7);
	bad = 0;
	for (i = 0; i < 2000; i++) {
		size_t	 len = (size_t)random() % sizeof(in);

		for (k = 0; k < len; k++)
			in[k] = "\r\n.a"[random() % 4];
		r = reference(in, len, ref);
		for (k = 0; k < 10; k++) {
			n = stuffed(in, len, k, out);
			if (n != r || memcmp(out, ref, n) != 0)
				bad++;
		}
	}
	ok(bad == 0, "2000 random messages, every cut, match the line-by-line stuffing (%zu differ)", bad);
	return tap_done();
}
