/*
 * smtp_data.h - the DATA stream scanner: finds the end of data, undoes dot-stuffing and notices bare CR and
 * bare LF, byte by byte, with no I/O and no allocation. The only end of data is CRLF "." CRLF (RFC 5321
 * 4.1.1.4); "\n.\n", "\n.\r\n", "\r.\r" and their mixes never end it, so SMTP smuggling cannot split one
 * message into two. Fuzz target: t/fuzz/fuzz_smtp_data.c.
 */
#ifndef SMTP_DATA_H
#define SMTP_DATA_H

#include <stddef.h>

/* emit - receives message octets, already unstuffed (and normalised when asked). */
typedef void	 smtp_data_emit_fn(void *ctx, const char *p, size_t n);

struct smtp_data_scan {
	int		 state;		/* private to smtp_data.c */
	int		 normalize;	/* 1: every bare CR or bare LF is written out as CRLF */
	int		 bare_lf;	/* set when a LF not preceded by CR was seen */
	int		 bare_cr;	/* set when a CR not followed by LF was seen */
	int		 done;		/* set when CRLF.CRLF was consumed */
	unsigned long long octets;	/* message octets emitted so far */
};

/* smtp_data_init - start scanning right after the 354 reply, that is at the start of a line that follows CRLF. */
void		 smtp_data_init(struct smtp_data_scan *, int normalize);

/*
 * smtp_data_feed - consume up to len octets of in. Message octets go to emit(ctx, …) in order, with the line
 * terminators as they were received (CRLF stays CRLF; a bare LF stays a bare LF unless normalize is set), and with
 * the leading dot of a dot-stuffed line removed. The terminating ".\r\n" and the CRLF before it that belongs to
 * the terminator are not part of the message: the message ends with the CRLF of its last line.
 * Returns the number of octets consumed: len, or fewer when the end of data was reached (then s->done is 1 and
 * the octets after the terminator belong to the next command). A CR at the very end of in is held back in the
 * state until the next call shows what follows it.
 */
size_t		 smtp_data_feed(struct smtp_data_scan *, const char *in, size_t len, smtp_data_emit_fn *emit, void *ctx);

#endif
