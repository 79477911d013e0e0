/*
 * dkim.c - DKIM signatures (RFC 6376), rsa-sha256 with relaxed/relaxed canonicalisation (docs/dkim.md). It
 * canonicalises and hashes; it never reads the message from anywhere itself, never does I/O on the event loop
 * (dkim_key_load() reads its file while a configuration generation is built) and never writes RSA or SHA-256 of
 * its own: the hashes are mbedtls_md's, the signature is mbedtls_pk_sign's (PKCS#1 v1.5).
 *	dkim_canon_*()		the relaxed body and header canonicalisation (unit-tested in t/unit/test_dkim.c)
 *	dkim_body_*()		the body hash, fed as the message arrives: memory is fixed, whatever the size
 *	dkim_key_load()		an RSA private key file
 *	dkim_key_hold/release()	its reference count: a signature in flight keeps the key of a replaced generation
 *	dkim_sign()		the DKIM-Signature field for a header section and a body hash; any thread may call it
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/version.h>

#include "dkim.h"
#include "log.h"
#include "util.h"

#define DKIM_FOLD	76	/* fold the signature's lines near this column */

/* The header fields we sign when present (docs/dkim.md), in the order they go into h=. */
static const char *const dkim_std_headers[] = {
	"from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
	"mime-version", "content-type", "content-transfer-encoding"
};

/* Relaxed body canonicalisation ------------------------------------------------------------------------------ */

static void
dkim_canon_flush(struct dkim_canon *c)
{
	if (c->n > 0)
		c->out(c->ctx, c->buf, c->n);
	c->n = 0;
}

static void
dkim_canon_put(struct dkim_canon *c, const char *p, size_t n)
{
	while (n > 0) {
		size_t	 room = sizeof(c->buf) - c->n, k = n < room ? n : room;

		memcpy(c->buf + c->n, p, k);
		c->n += k;
		p += k;
		n -= k;
		if (c->n == sizeof(c->buf))
			dkim_canon_flush(c);
	}
}

/* dkim_canon_content - a content octet: the empty lines held back were not at the end, nor the white space. */
static void
dkim_canon_content(struct dkim_canon *c, char ch)
{
	if (!c->content) {
		for (; c->empty > 0; c->empty--)
			dkim_canon_put(c, "\r\n", 2);
		c->content = 1;
	}
	if (c->wsp) {
		dkim_canon_put(c, " ", 1);
		c->wsp = 0;
	}
	if (c->n < sizeof(c->buf))
		c->buf[c->n++] = ch;
	if (c->n == sizeof(c->buf))
		dkim_canon_flush(c);
}

/* dkim_canon_eol - the end of a line: white space before it goes; an empty line waits to see what follows. */
static void
dkim_canon_eol(struct dkim_canon *c)
{
	c->wsp = 0;
	if (c->content)
		dkim_canon_put(c, "\r\n", 2);
	else
		c->empty++;
	c->content = 0;
}

void
dkim_canon_init(struct dkim_canon *c, dkim_out_fn *out, void *ctx)
{
	memset(c, 0, offsetof(struct dkim_canon, buf));
	c->out = out;
	c->ctx = ctx;
}

void
dkim_canon_feed(struct dkim_canon *c, const char *p, size_t n)
{
	size_t	 i, j;

	for (i = 0; i < n; i++) {
		char	 ch = p[i];

		if (c->content && !c->cr && !c->wsp && ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
			/* inside a line with nothing pending: the run up to the next special octet goes as it is */
			for (j = i + 1; j < n && p[j] != ' ' && p[j] != '\t' && p[j] != '\r' && p[j] != '\n'; j++)
				;
			dkim_canon_put(c, p + i, j - i);
			i = j - 1;
			continue;
		}
		if (c->cr) {
			c->cr = 0;
			if (ch == '\n') {
				dkim_canon_eol(c);
				continue;
			}
			dkim_canon_content(c, '\r');	/* a bare CR is content */
		}
		switch (ch) {
		case ' ':
		case '\t':
			c->wsp = 1;
			break;
		case '\r':
			c->cr = 1;
			break;
		case '\n':
			dkim_canon_eol(c);	/* a bare LF ends a line as CRLF does */
			break;
		default:
			dkim_canon_content(c, ch);
			break;
		}
	}
}

void
dkim_canon_end(struct dkim_canon *c)
{
	if (c->cr) {
		c->cr = 0;
		dkim_canon_content(c, '\r');
	}
	if (c->wsp) {		/* a last line without CRLF keeps its white space as one SP, as dkimpy does */
		c->wsp = 0;
		dkim_canon_content(c, ' ');
	}
	if (c->content)		/* RFC 6376 3.4.4: a non-empty body ends with CRLF */
		dkim_canon_eol(c);
	c->empty = 0;		/* empty lines at the end are ignored */
	dkim_canon_flush(c);
}

/* Relaxed header canonicalisation ---------------------------------------------------------------------------- */

void
dkim_canon_header(const char *f, size_t len, int crlf, dkim_out_fn *out, void *ctx)
{
	char	*buf = xmalloc(len + 3);
	size_t	 i = 0, n = 0;
	int	 wsp = 0;

	for (; i < len && f[i] != ':'; i++)	/* the name, in lower case, without white space before the colon */
		if (f[i] != ' ' && f[i] != '\t' && f[i] != '\r' && f[i] != '\n')
			buf[n++] = (f[i] >= 'A' && f[i] <= 'Z') ? (char)(f[i] - 'A' + 'a') : f[i];
	buf[n++] = ':';
	for (i++; i < len && (f[i] == ' ' || f[i] == '\t' || f[i] == '\r' || f[i] == '\n'); i++)
		;				/* white space after the colon */
	for (; i < len; i++) {
		char	 ch = f[i];

		if (ch == '\r' || ch == '\n')	/* unfold: the CRLF goes, the WSP after it is kept (as one SP) */
			continue;
		if (ch == ' ' || ch == '\t') {
			wsp = 1;
			continue;
		}
		if (wsp)
			buf[n++] = ' ';
		wsp = 0;
		buf[n++] = ch;
	}
	if (crlf) {
		buf[n++] = '\r';
		buf[n++] = '\n';
	}
	out(ctx, buf, n);
	free(buf);
}

/* The body hash ---------------------------------------------------------------------------------------------- */

enum dkim_head_state { DKIM_H_BOL, DKIM_H_LINE, DKIM_H_CR_BOL, DKIM_H_BODY };

struct dkim_body {
	enum dkim_head_state	 head;		/* where we are in the header section, until the body starts */
	int			 done;
	mbedtls_md_context_t	 md;
	struct dkim_canon	 canon;
	unsigned char		 hash[DKIM_HASH_LEN];
};

static void
dkim_body_out(void *ctx, const char *p, size_t n)
{
	struct dkim_body	*b = ctx;

	mbedtls_md_update(&b->md, (const unsigned char *)p, n);
}

struct dkim_body *
dkim_body_new(void)
{
	struct dkim_body	*b = xcalloc(1, sizeof(*b));

	mbedtls_md_init(&b->md);
	if (mbedtls_md_setup(&b->md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0 ||
	    mbedtls_md_starts(&b->md) != 0)
		fatal_bug("dkim: cannot set up SHA-256");
	dkim_canon_init(&b->canon, dkim_body_out, b);
	return b;
}

void
dkim_body_feed(struct dkim_body *b, const char *p, size_t n)
{
	size_t	 i;

	if (b->done)
		return;
	/* The header section ends with its first empty line (CRLF CRLF, or a lone LF): lb_message.c's rule too. */
	for (i = 0; i < n && b->head != DKIM_H_BODY; i++) {
		switch (b->head) {
		case DKIM_H_BOL:
			b->head = p[i] == '\n' ? DKIM_H_BODY : p[i] == '\r' ? DKIM_H_CR_BOL : DKIM_H_LINE;
			break;
		case DKIM_H_CR_BOL:
			b->head = p[i] == '\n' ? DKIM_H_BODY : DKIM_H_LINE;
			break;
		case DKIM_H_LINE:
			if (p[i] == '\n')
				b->head = DKIM_H_BOL;
			break;
		case DKIM_H_BODY:
			break;
		}
	}
	if (i < n)
		dkim_canon_feed(&b->canon, p + i, n - i);
}

const unsigned char *
dkim_body_hash(struct dkim_body *b)
{
	if (!b->done) {
		dkim_canon_end(&b->canon);
		mbedtls_md_finish(&b->md, b->hash);
		b->done = 1;
	}
	return b->hash;
}

void
dkim_body_free(struct dkim_body *b)
{
	if (b == NULL)
		return;
	mbedtls_md_free(&b->md);
	free(b);
}

/* Keys ------------------------------------------------------------------------------------------------------- */

struct dkim_key {
	mbedtls_pk_context	 pk;
	atomic_int		 refs;		/* the Lua userdata's, and one per signature in flight */
	pthread_mutex_t		 mu;		/* one signature at a time: RSA blinding updates the context */
};

/* One random generator per process, seeded on first use: RSA blinding (and key parsing in mbedTLS 3). The loop
 * (key loading) and the signing thread (lb_dkim.c) both draw from it, so every draw takes dkim_rng_mu. */
static mbedtls_entropy_context	 dkim_entropy;
static mbedtls_ctr_drbg_context	 dkim_drbg;
static int			 dkim_drbg_ready;	/* guarded by dkim_rng_mu */
static pthread_mutex_t		 dkim_rng_mu = PTHREAD_MUTEX_INITIALIZER;

/* dkim_rng - mbedtls_ctr_drbg_random under dkim_rng_mu: the f_rng given to mbedTLS. */
static int
dkim_rng(void *ctx, unsigned char *out, size_t len)
{
	int	 rc;

	pthread_mutex_lock(&dkim_rng_mu);
	rc = mbedtls_ctr_drbg_random(ctx, out, len);
	pthread_mutex_unlock(&dkim_rng_mu);
	return rc;
}

/* dkim_rng_seed - seed the generator once; dkim_rng_mu is held. */
static int
dkim_rng_seed(void)
{
	static const char	 pers[] = "luamta dkim";

	if (dkim_drbg_ready)
		return 0;
	mbedtls_entropy_init(&dkim_entropy);
	mbedtls_ctr_drbg_init(&dkim_drbg);
	if (mbedtls_ctr_drbg_seed(&dkim_drbg, mbedtls_entropy_func, &dkim_entropy, (const unsigned char *)pers,
	    sizeof(pers) - 1) != 0) {
		mbedtls_ctr_drbg_free(&dkim_drbg);
		mbedtls_entropy_free(&dkim_entropy);
		return -1;
	}
	dkim_drbg_ready = 1;
	return 0;
}

static int
dkim_rng_ready(void)
{
	int	 rc;

	pthread_mutex_lock(&dkim_rng_mu);
	rc = dkim_rng_seed();
	pthread_mutex_unlock(&dkim_rng_mu);
	return rc;
}

struct dkim_key *
dkim_key_load(const char *path, char *err, size_t errsize)
{
	struct dkim_key	*k;
	char		 e[160];
	int		 rc;

	if (dkim_rng_ready() == -1) {
		snprintf(err, errsize, "cannot seed the random generator");
		return NULL;
	}
	k = xcalloc(1, sizeof(*k));
	mbedtls_pk_init(&k->pk);
	atomic_init(&k->refs, 1);
	pthread_mutex_init(&k->mu, NULL);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	rc = mbedtls_pk_parse_keyfile(&k->pk, path, NULL, dkim_rng, &dkim_drbg);
#else
	rc = mbedtls_pk_parse_keyfile(&k->pk, path, NULL);
#endif
	if (rc != 0) {
		mbedtls_strerror(rc, e, sizeof(e));
		snprintf(err, errsize, "cannot load %s: %s", path, e);
		dkim_key_release(k);
		return NULL;
	}
	if (!mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_RSA)) {
		snprintf(err, errsize, "%s is a %s key, not RSA", path, mbedtls_pk_get_name(&k->pk));
		dkim_key_release(k);
		return NULL;
	}
	if (mbedtls_pk_get_bitlen(&k->pk) < DKIM_KEY_BITS_MIN) {
		snprintf(err, errsize, "%s has %zu bits, fewer than %d (RFC 8301)", path, mbedtls_pk_get_bitlen(&k->pk),
		    DKIM_KEY_BITS_MIN);
		dkim_key_release(k);
		return NULL;
	}
	return k;
}

size_t
dkim_key_bits(const struct dkim_key *k)
{
	return mbedtls_pk_get_bitlen(&k->pk);
}

struct dkim_key *
dkim_key_hold(struct dkim_key *k)
{
	atomic_fetch_add(&k->refs, 1);
	return k;
}

void
dkim_key_release(struct dkim_key *k)
{
	if (k == NULL || atomic_fetch_sub(&k->refs, 1) > 1)
		return;
	mbedtls_pk_free(&k->pk);
	pthread_mutex_destroy(&k->mu);
	free(k);
}

/* Signing ---------------------------------------------------------------------------------------------------- */

int
dkim_name_ok(const char *s)
{
	size_t	 i;

	if (s == NULL || *s == '\0' || strlen(s) > 253)
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '-' || s[i] == '.'))
			return 0;
	return 1;
}

/* A growing string: the signature field. */
struct dkim_str {
	char	*p;
	size_t	 len, cap, col;	/* col: octets since the last fold */
};

static void
dkim_str_add(struct dkim_str *s, const char *p, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		s->cap = (s->len + n + 1) * 2;
		s->p = xrealloc(s->p, s->cap);
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = '\0';
	s->col += n;
}

static void
dkim_str_cat(struct dkim_str *s, const char *p)
{
	dkim_str_add(s, p, strlen(p));
}

/* dkim_str_fold - start a new line (CRLF HTAB) when n more octets would pass DKIM_FOLD. */
static void
dkim_str_fold(struct dkim_str *s, size_t n)
{
	if (s->col + n <= DKIM_FOLD)
		return;
	dkim_str_add(s, "\r\n\t", 3);
	s->col = 1;
}

struct dkim_field {
	const char	*p;
	size_t		 len;		/* the whole field, its final CRLF included */
	size_t		 namelen;	/* 0: no colon, not a field we can match */
	int		 used;
};

/* dkim_fields - split the header section into fields; returns how many (at most max). */
static size_t
dkim_fields(const char *head, size_t len, struct dkim_field *f, size_t max)
{
	size_t	 i = 0, n = 0;

	while (i < len && n < max) {
		size_t	 start = i, k;

		do {		/* a field runs until a line that does not start with white space */
			const char	*nl = memchr(head + i, '\n', len - i);

			i = nl ? (size_t)(nl - head) + 1 : len;
		} while (i < len && (head[i] == ' ' || head[i] == '\t'));
		f[n].p = head + start;
		f[n].len = i - start;
		f[n].used = 0;
		f[n].namelen = 0;
		for (k = start; k < i && head[k] != ':' && head[k] != '\n'; k++)
			;
		if (k < i && head[k] == ':') {
			while (k > start && (head[k - 1] == ' ' || head[k - 1] == '\t'))
				k--;	/* RFC 5322 4.5.8: obsolete white space before the colon */
			f[n].namelen = k - start;
		}
		n++;
	}
	return n;
}

static int
dkim_field_is(const struct dkim_field *f, const char *name)
{
	return f->namelen == strlen(name) && strncasecmp(f->p, name, f->namelen) == 0;
}

static void
dkim_md_out(void *ctx, const char *p, size_t n)
{
	mbedtls_md_update(ctx, (const unsigned char *)p, n);
}

char *
dkim_sign(struct dkim_key *key, const char *domain, const char *selector, const char *head, size_t headlen,
    const unsigned char bh[DKIM_HASH_LEN], long long now, char *err, size_t errsize)
{
	struct dkim_field	*f = xcalloc(DKIM_FIELDS_MAX, sizeof(*f));
	struct dkim_str		 s = { NULL, 0, 0, 0 };
	mbedtls_md_context_t	 md;
	unsigned char		 hash[DKIM_HASH_LEN], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
	unsigned char		 b64[((MBEDTLS_PK_SIGNATURE_MAX_SIZE + 2) / 3) * 4 + 1];
	char			 tag[600];
	size_t			 nf, i, j, siglen = 0, b64len = 0, nfrom = 0, signlen;
	int			 rc, first = 1;

	if (!dkim_name_ok(domain) || !dkim_name_ok(selector)) {
		snprintf(err, errsize, "bad domain or selector");
		free(f);
		return NULL;
	}
	nf = dkim_fields(head, headlen, f, DKIM_FIELDS_MAX);
	for (i = 0; i < nf; i++)
		nfrom += dkim_field_is(&f[i], "from");
	if (nfrom == 0) {	/* RFC 6376 5.4: the From field MUST be signed */
		snprintf(err, errsize, "the message has no From field");
		free(f);
		return NULL;
	}

	snprintf(tag, sizeof(tag), "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=%s;", domain,
	    selector);
	dkim_str_cat(&s, tag);
	snprintf(tag, sizeof(tag), " t=%lld;", now);
	dkim_str_fold(&s, strlen(tag));
	dkim_str_cat(&s, tag);
	dkim_str_fold(&s, 3);
	dkim_str_cat(&s, " h=");
	/* h=: each standard name once per instance present, then From once more (over-signed: RFC 6376 8.15). */
	for (j = 0; j < sizeof(dkim_std_headers) / sizeof(dkim_std_headers[0]); j++) {
		const char	*name = dkim_std_headers[j];

		for (i = 0; i < nf; i++) {
			if (!dkim_field_is(&f[i], name))
				continue;
			dkim_str_fold(&s, strlen(name) + 1);
			if (!first)
				dkim_str_cat(&s, ":");
			dkim_str_cat(&s, name);
			first = 0;
		}
	}
	dkim_str_fold(&s, 6);
	dkim_str_cat(&s, ":from;");
	dkim_str_fold(&s, 4 + 44 + 1);
	dkim_str_cat(&s, " bh=");
	if (mbedtls_base64_encode(b64, sizeof(b64), &b64len, bh, DKIM_HASH_LEN) != 0)
		fatal_bug("dkim: base64 of the body hash");
	dkim_str_add(&s, (const char *)b64, b64len);
	dkim_str_cat(&s, ";");
	dkim_str_fold(&s, 3 + 1);
	dkim_str_cat(&s, " b=");
	signlen = s.len;

	/* The header hash (RFC 6376 3.7): the signed fields, bottom-most unused instance first, then our field with an
	 * empty b= and no final CRLF. A name with no instance left (the extra From) contributes nothing. */
	mbedtls_md_init(&md);
	if (mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0 || mbedtls_md_starts(&md) != 0)
		fatal_bug("dkim: cannot set up SHA-256");
	for (j = 0; j < sizeof(dkim_std_headers) / sizeof(dkim_std_headers[0]); j++) {
		for (i = 0; i < nf; i++) {
			size_t	 k;

			if (!dkim_field_is(&f[i], dkim_std_headers[j]))
				continue;
			for (k = nf; k-- > 0;)
				if (!f[k].used && dkim_field_is(&f[k], dkim_std_headers[j]))
					break;
			f[k].used = 1;	/* there is one: f[i] at least */
			dkim_canon_header(f[k].p, f[k].len, 1, dkim_md_out, &md);
		}
	}
	dkim_canon_header(s.p, signlen, 0, dkim_md_out, &md);
	mbedtls_md_finish(&md, hash);
	mbedtls_md_free(&md);
	free(f);

	pthread_mutex_lock(&key->mu);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	rc = mbedtls_pk_sign(&key->pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, sizeof(sig), &siglen, dkim_rng,
	    &dkim_drbg);
#else
	rc = mbedtls_pk_sign(&key->pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, &siglen, dkim_rng, &dkim_drbg);
#endif
	pthread_mutex_unlock(&key->mu);
	if (rc != 0 || mbedtls_base64_encode(b64, sizeof(b64), &b64len, sig, siglen) != 0) {
		char	 e[160];

		mbedtls_strerror(rc, e, sizeof(e));
		snprintf(err, errsize, "cannot sign: %s", e);
		free(s.p);
		return NULL;
	}
	/* b= is left out of the hash whole, folds included, so it may be folded anywhere. */
	for (i = 0; i < b64len; i += j) {
		j = DKIM_FOLD > s.col ? DKIM_FOLD - s.col : 0;
		if (j == 0) {
			dkim_str_add(&s, "\r\n\t", 3);
			s.col = 1;
			continue;
		}
		if (j > b64len - i)
			j = b64len - i;
		dkim_str_add(&s, (const char *)b64 + i, j);
	}
	return s.p;
}
