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
 * the leading dot of a dot-stuffed line removed. The terminating ".\r\n" is not part of the message, and the
 * message ends with the CRLF of its last line: "a\r\n.\r\n" gives "a\r\n"; ".\r\n" at once gives nothing.
 * A line starts after CRLF or at the start of the data; with normalize, also after a bare LF or bare CR, so a dot
 * there is removed too (a dot after a bare LF or CR is kept without normalize). Only a line that starts after CRLF
 * (or at the start) can end the data.
 * Returns the number of octets consumed: len, or fewer when the end of data was reached (then s->done is 1 and
 * the octets after the terminator belong to the next command); 0 once done. A CR at the very end of in is held in
 * the state until the next call shows what follows it: an ordinary CR is emitted at once (CRLF or bare, it is
 * message content; with normalize the "\n" that completes a bare CR comes on the next call), while the CR of a
 * line that is "." so far is emitted only once it is known not to end the data. Any split of the input into calls
 * gives the same octets. emit may be NULL (octets are then only counted).
 */
size_t		 smtp_data_feed(struct smtp_data_scan *, const char *in, size_t len, smtp_data_emit_fn *emit, void *ctx);

/*
 * The hop count: Received: header fields in the message's header section (Postfix's hopcount_limit counts the
 * same). smtp_hops_feed takes the message octets as smtp_data_feed emits them (or a BDAT chunk's), in any split;
 * it stops looking at the first empty line, where the body starts. Field names are matched without regard to
 * case, continuation lines are skipped.
 */
struct smtp_hops {
	int		 state;		/* private to smtp_data.c */
	size_t		 n;		/* octets of the current field name seen so far */
	char		 name[16];
	unsigned	 hops;		/* Received: fields so far */
};

void		 smtp_hops_init(struct smtp_hops *);
void		 smtp_hops_feed(struct smtp_hops *, const char *in, size_t len);

#endif
