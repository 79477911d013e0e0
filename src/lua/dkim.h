/*
 * dkim.h - DKIM signing (RFC 6376): rsa-sha256, relaxed/relaxed. The body hash is computed incrementally from the
 * message octets as they arrive (the header section is skipped by the hasher itself), so signing never needs the
 * body in one piece; the signature over the header fields is made at the message stage. The crypto is mbedTLS's
 * (pk, md); nothing here does I/O except dkim_key_load(), which reads one file at configuration time. The RSA
 * signature costs milliseconds (more for a 4096-bit key), so lb_dkim.c makes it on a thread of its own.
 */
#ifndef DKIM_H
#define DKIM_H

#include <stddef.h>

#define DKIM_HASH_LEN		32		/* SHA-256 */
#define DKIM_HEAD_MAX		(256 * 1024)	/* octets of header section we sign; a longer one is not signed */
#define DKIM_FIELDS_MAX		1000		/* header fields looked at */
#define DKIM_KEY_BITS_MIN	1024		/* RFC 8301 3.2: signers MUST use at least 1024 bits */

/* out - receives canonical octets, in order. */
typedef void	 dkim_out_fn(void *ctx, const char *p, size_t n);

/*
 * The relaxed body canonicaliser (RFC 6376 3.4.4), one octet at a time with no look-back: white space at the
 * end of a line is dropped, runs of SP and HTAB become one SP, empty lines at the end of the body are dropped,
 * and a non-empty body always ends with CRLF. A line ends at LF (CRLF, or a bare LF); a CR not followed by LF is
 * content; a last line without CRLF keeps its trailing white space as one SP (as dkimpy does). Any split of the
 * input gives the same output. The fields are private to dkim.c.
 */
struct dkim_canon {
	int			 cr;		/* a CR was seen; is a LF next? */
	int			 wsp;		/* a run of white space is pending */
	int			 content;	/* the current line has content */
	unsigned long long	 empty;		/* empty lines held back: dropped if nothing follows them */
	dkim_out_fn		*out;
	void			*ctx;
	size_t			 n;
	char			 buf[4096];	/* output is handed on in blocks */
};

void	 dkim_canon_init(struct dkim_canon *, dkim_out_fn *out, void *ctx);
void	 dkim_canon_feed(struct dkim_canon *, const char *p, size_t n);	/* body octets */
void	 dkim_canon_end(struct dkim_canon *);				/* the body is over */

/*
 * dkim_canon_header - the relaxed canonical form of one header field (RFC 6376 3.4.2), given as it is in the
 * message (name, colon, value, its folds, with or without its final CRLF): the name in lower case, the value
 * unfolded, runs of white space made one SP, white space around the colon and at the end removed. crlf: end the
 * output with CRLF (0 only for the DKIM-Signature field being signed).
 */
void	 dkim_canon_header(const char *field, size_t len, int crlf, dkim_out_fn *out, void *ctx);

/* The body hash of a message fed from its first octet: dkim_body_feed() skips the header section itself. */
struct dkim_body;

struct dkim_body *dkim_body_new(void);			/* never NULL (allocation failure is fatal) */
void	 dkim_body_feed(struct dkim_body *, const char *p, size_t n);
/* dkim_body_hash - the SHA-256 of the canonical body; the first call ends the hash, later calls give the same. */
const unsigned char *dkim_body_hash(struct dkim_body *);
void	 dkim_body_free(struct dkim_body *);		/* accepts NULL */

/* A private key, loaded once per configuration generation and reference-counted: a signature being made on
 * the signing thread holds its key, so a reload that drops the generation (and its key) while the signature is in
 * flight frees the key only after it. Holds and releases may come from any thread. */
struct dkim_key;

/* dkim_key_load - an RSA private key (PEM or DER, no passphrase) of at least DKIM_KEY_BITS_MIN bits, with one
 * reference; NULL with a message in err. */
struct dkim_key	*dkim_key_load(const char *path, char *err, size_t errsize);
size_t	 dkim_key_bits(const struct dkim_key *);
struct dkim_key	*dkim_key_hold(struct dkim_key *);		/* one more reference; gives the key */
void	 dkim_key_release(struct dkim_key *);	/* frees the key with the last reference; accepts NULL */

/* dkim_name_ok - a selector or domain we can put in a tag: letters, digits, '-' and '.', 253 octets at most. */
int	 dkim_name_ok(const char *);

/*
 * dkim_sign - the DKIM-Signature field for the message whose header section is head (headlen octets, up to and
 * without the empty line) and whose body hash is bh: d=domain, s=selector, t=now, the standard header set
 * (From, To, Cc, Subject, Date, Message-ID, Reply-To, In-Reply-To, References, MIME-Version, Content-Type,
 * Content-Transfer-Encoding: every instance present, and From once more so that no From can be added). Gives a
 * malloc'd "DKIM-Signature: ..." folded with CRLF HTAB, without a final CRLF; or NULL with a message in err.
 * It touches nothing but its arguments, the key (one signature at a time per key) and the process's random
 * generator (under a lock), so it may run on any thread; the caller holds the key meanwhile.
 */
char	*dkim_sign(struct dkim_key *, const char *domain, const char *selector, const char *head,
	    size_t headlen, const unsigned char bh[DKIM_HASH_LEN], long long now, char *err, size_t errsize);

#endif
