/*
 * smtp_data.c - the DATA stream scanner. One pass per octet through a small state machine finds the end of data,
 * removes the dot of dot-stuffed lines, flags bare CR and bare LF and, when asked, writes them out as CRLF. It never
 * does I/O, never allocates and never looks at an octet twice across calls: what it must remember (a CR at the end
 * of a chunk, a dot at the start of a line) lives in the state, so any split of the input gives the same output.
 *	smtp_data_init()	start at the beginning of the data
 *	smtp_data_feed()	consume a chunk; emits message octets; stops after CRLF "." CRLF
 *	smtp_hops_feed()	count the Received: fields of the header section (the hop count)
 *
 * The end of data is CRLF "." CRLF and nothing else (RFC 5321 4.1.1.4): the "." must open a line that follows a
 * CRLF (or open the data), and must be followed by CR then LF. A line that follows a bare LF or a bare CR can never
 * end the data, whatever the normalize setting, so "\n.\n", "\n.\r\n", "\r.\r" or "\r\n.\r" followed by anything
 * but LF cannot split one message into two (SMTP smuggling).
 *
 * Dot-stuffing (RFC 5321 4.5.2): the first octet of a line is dropped when it is a "." and the line is not the
 * terminator. A line starts after CRLF and at the start of the data; with normalize set, it also starts after a
 * bare LF or bare CR, because those are written out as CRLF and the output must read as CRLF lines throughout.
 * Without normalize the message keeps its bare LF and bare CR as they came (the session rejects it anyway), and a
 * dot after them is kept.
 */
#include <stddef.h>
#include <stdlib.h>
#include <strings.h>

#include "smtp_data.h"

enum smtp_data_state {
	SMTP_DATA_S_BOL = 0,	/* at the start of a line that follows CRLF, or at the start of the data */
	SMTP_DATA_S_BOL_BARE,	/* at the start of a line that follows a bare LF or a bare CR */
	SMTP_DATA_S_LINE,	/* inside a line */
	SMTP_DATA_S_CR,		/* a CR was seen (and emitted); a LF makes it a CRLF, anything else a bare CR */
	SMTP_DATA_S_DOT,	/* a "." opened a line after CRLF; it was dropped */
	SMTP_DATA_S_DOT_CR,	/* ".\r" opened a line after CRLF; neither emitted yet: a LF ends the data */
	SMTP_DATA_S_DONE	/* CRLF "." CRLF consumed */
};

/* The octets of the current call that are still to be emitted as they are: in[start .. i). */
struct smtp_data_run {
	const char		*in;
	size_t			 start;
	smtp_data_emit_fn	*emit;
	void			*ctx;
};

static void
smtp_data_out(struct smtp_data_scan *s, struct smtp_data_run *r, const char *p, size_t n)
{
	if (n == 0)
		return;
	s->octets += n;
	if (r->emit != NULL)
		r->emit(r->ctx, p, n);
}

/* smtp_data_flush - emit the run up to (not including) in[i]; the next run starts at i. */
static void
smtp_data_flush(struct smtp_data_scan *s, struct smtp_data_run *r, size_t i)
{
	smtp_data_out(s, r, r->in + r->start, i - r->start);
	r->start = i;
}

/* smtp_data_drop - in[i] is not part of the message: emit what came before it and skip it. */
static void
smtp_data_drop(struct smtp_data_scan *s, struct smtp_data_run *r, size_t i)
{
	smtp_data_flush(s, r, i);
	r->start = i + 1;
}

/* smtp_data_in_line - the octet c (in[i]) inside a line, or at a line start when it is not a dot to remove. */
static void
smtp_data_in_line(struct smtp_data_scan *s, struct smtp_data_run *r, size_t i, unsigned char c)
{
	if (c == '\r')
		s->state = SMTP_DATA_S_CR;	/* CRLF or bare CR: the CR is message content either way */
	else if (c == '\n') {
		s->bare_lf = 1;
		if (s->normalize) {
			smtp_data_drop(s, r, i);
			smtp_data_out(s, r, "\r\n", 2);
		}
		s->state = SMTP_DATA_S_BOL_BARE;
	} else
		s->state = SMTP_DATA_S_LINE;
}

void
smtp_data_init(struct smtp_data_scan *s, int normalize)
{
	s->state = SMTP_DATA_S_BOL;
	s->normalize = normalize ? 1 : 0;
	s->bare_lf = 0;
	s->bare_cr = 0;
	s->done = 0;
	s->octets = 0;
}

size_t
smtp_data_feed(struct smtp_data_scan *s, const char *in, size_t len, smtp_data_emit_fn *emit, void *ctx)
{
	struct smtp_data_run	 r;
	size_t			 i;
	unsigned char		 c;

	if (s->done || s->state == SMTP_DATA_S_DONE)
		return 0;
	r.in = in;
	r.start = 0;
	r.emit = emit;
	r.ctx = ctx;
	for (i = 0; i < len; i++) {
		c = (unsigned char)in[i];
again:
		switch (s->state) {
		case SMTP_DATA_S_BOL:
			if (c == '.') {
				smtp_data_drop(s, &r, i);
				s->state = SMTP_DATA_S_DOT;
			} else
				smtp_data_in_line(s, &r, i, c);
			break;
		case SMTP_DATA_S_BOL_BARE:
			if (c == '.' && s->normalize) {
				/* the line reads as one after CRLF in the output: unstuff it, but it never ends data */
				smtp_data_drop(s, &r, i);
				s->state = SMTP_DATA_S_LINE;
			} else
				smtp_data_in_line(s, &r, i, c);
			break;
		case SMTP_DATA_S_LINE:
			smtp_data_in_line(s, &r, i, c);
			break;
		case SMTP_DATA_S_CR:
			if (c == '\n') {
				s->state = SMTP_DATA_S_BOL;
				break;
			}
			/* The CR, already emitted (maybe by an earlier call), was bare. */
			s->bare_cr = 1;
			if (s->normalize) {
				smtp_data_flush(s, &r, i);
				smtp_data_out(s, &r, "\n", 1);
			}
			s->state = SMTP_DATA_S_BOL_BARE;
			goto again;
		case SMTP_DATA_S_DOT:
			if (c == '\r') {
				smtp_data_drop(s, &r, i);	/* held until we know whether LF follows */
				s->state = SMTP_DATA_S_DOT_CR;
			} else
				smtp_data_in_line(s, &r, i, c);	/* "..", ".x", ".\n" */
			break;
		case SMTP_DATA_S_DOT_CR:
			if (c == '\n') {
				smtp_data_flush(s, &r, i);
				s->state = SMTP_DATA_S_DONE;
				s->done = 1;
				return i + 1;
			}
			/* ".\r" then not LF: a dot-stuffed line holding a bare CR. */
			s->bare_cr = 1;
			smtp_data_flush(s, &r, i);
			if (s->normalize)
				smtp_data_out(s, &r, "\r\n", 2);
			else
				smtp_data_out(s, &r, "\r", 1);
			s->state = SMTP_DATA_S_BOL_BARE;
			goto again;
		default:
			/* SMTP_DATA_S_DONE returned above, and only this file writes the state. */
			abort();
		}
	}
	smtp_data_flush(s, &r, len);
	return len;
}

/* The hop counter: at the start of a line, inside a field name, in the rest of a line, or in the body. */
enum smtp_hops_state { SMTP_HOPS_BOL = 0, SMTP_HOPS_NAME, SMTP_HOPS_REST, SMTP_HOPS_BODY };

void
smtp_hops_init(struct smtp_hops *h)
{
	h->state = SMTP_HOPS_BOL;
	h->n = 0;
	h->hops = 0;
}

void
smtp_hops_feed(struct smtp_hops *h, const char *in, size_t len)
{
	size_t		 i;
	unsigned char	 c;

	for (i = 0; i < len && h->state != SMTP_HOPS_BODY; i++) {
		c = (unsigned char)in[i];
		switch (h->state) {
		case SMTP_HOPS_BOL:
			if (c == '\r' || c == '\n') {
				h->state = SMTP_HOPS_BODY;	/* the empty line: the header section is over */
				break;
			}
			h->n = 0;
			h->state = SMTP_HOPS_NAME;
			/* FALLTHROUGH */
		case SMTP_HOPS_NAME:
			if (c == ':') {
				while (h->n > 0 && (h->name[h->n - 1] == ' ' || h->name[h->n - 1] == '\t'))
					h->n--;	/* RFC 5322 4.5.8: obsolete space before the colon */
				h->name[h->n] = '\0';
				if (strcasecmp(h->name, "Received") == 0)
					h->hops++;
				h->state = SMTP_HOPS_REST;
			} else if (c == '\n')
				h->state = SMTP_HOPS_BOL;
			else if (h->n + 1 < sizeof(h->name))
				h->name[h->n++] = (char)c;
			else
				h->state = SMTP_HOPS_REST;	/* a longer name is not Received */
			break;
		case SMTP_HOPS_REST:
			if (c == '\n')
				h->state = SMTP_HOPS_BOL;
			break;
		}
	}
}
