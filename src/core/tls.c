/*
 * tls.c - mbedTLS under libevent (see tls.h). A connection is a bufferevent_filter over the socket bufferevent.
 * The input filter feeds ciphertext from the socket's input buffer to mbedTLS (handshake, then records) and
 * moves plaintext up; the output filter encrypts plaintext into the socket's output buffer. mbedTLS's send
 * callback appends to that output buffer and its receive callback takes from the input buffer, so it never
 * touches the socket and never waits. The handshake's end is announced from a zero timer, outside the filter
 * callbacks, because the owner may want to write (EHLO) or flush at that point.
 *	tls_server_new()/tls_client_new()	configurations (refcounted); tls_client_new_ca() with a CA file
 *	tls_wrap()				a TLS connection on a bufferevent
 *	tls_tickets_init()			session-ticket keys every worker shares (before the first fork)
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_MAJOR >= 3 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include "log.h"
#include "metrics.h"
#include "tls.h"
#include "util.h"

#define TLS_CA_FILE	"/etc/ssl/certs/ca-certificates.crt"	/* Debian's system CA store */
#define TLS_CHUNK	16384					/* one TLS record of plaintext */
#define TLS_TICKET_LIFE	86400
#define TLS_ALERT_WAIT	2	/* seconds a failed handshake's alert may take to leave before we close anyway */
#define TLS_TICKET_HEAD	18	/* key name (4), nonce (12), length of the sealed session (2) */
#define TLS_TICKET_TAG	16

struct tls_conf {
	int				 refs;
	int				 server;
	int				 verify;	/* client: peers' certificates are checked */
	mbedtls_ssl_config		 conf;
	mbedtls_entropy_context		 entropy;
	mbedtls_ctr_drbg_context	 drbg;
	mbedtls_x509_crt		 cert[TLS_PAIRS_MAX];
	mbedtls_pk_context		 key[TLS_PAIRS_MAX];
	size_t				 npairs;
	unsigned			 ticket_period;	/* shared ticket keys: seconds each key is issued */
	mbedtls_x509_crt		 ca;
	mbedtls_ssl_ticket_context	 ticket;
	int				 ciphers[32];
};

/* Key exchange groups, cheapest strong one first: mbedTLS 2.28's default order starts with secp521r1, which
 * made every handshake several times dearer than it needs to be (bench/tls). */
#if MBEDTLS_VERSION_MAJOR >= 3
static const uint16_t tls_groups[] = {
	MBEDTLS_SSL_IANA_TLS_GROUP_X25519, MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1, MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1,
	MBEDTLS_SSL_IANA_TLS_GROUP_NONE
};
#else
static const mbedtls_ecp_group_id tls_groups[] = {
#ifdef MBEDTLS_ECP_DP_CURVE25519_ENABLED
	MBEDTLS_ECP_DP_CURVE25519,
#endif
	MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE
};
#endif

struct tls_conn {
	mbedtls_ssl_context	 ssl;
	struct tls_conf		*conf;		/* held */
	struct bufferevent	*under;		/* borrowed: the filter owns it */
	struct bufferevent	*filter;
	struct evbuffer		*src;		/* ciphertext being read, during the input filter only */
	struct event		*after;		/* owned: announces the end of the handshake */
	struct evbuffer_cb_entry *alert_cb;	/* while a failed handshake's alert waits to be written */
	int			 done;		/* handshake over */
	int			 failed;
	char			 why[160];
	char			 desc[128];
	tls_ready_fn		*ready;
	void			*arg;
};

/* ECDHE key exchange (forward secrecy) with AEAD ciphers only; the TLS 1.3 suites when the library has them. */
static const char *const tls_cipher_names[] = {
	"TLS1-3-AES-256-GCM-SHA384", "TLS1-3-CHACHA20-POLY1305-SHA256", "TLS1-3-AES-128-GCM-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
	"TLS-DHE-RSA-WITH-AES-256-GCM-SHA384", "TLS-DHE-RSA-WITH-AES-128-GCM-SHA256",
};

static void
tls_strerror(int rc, char *buf, size_t size)
{
	char	 text[120];

	mbedtls_strerror(rc, text, sizeof(text));
	snprintf(buf, size, "%s (-0x%04x)", text, (unsigned)-rc);
}

static int
tls_conf_common(struct tls_conf *t, int endpoint, char *err, size_t errsize)
{
	static const char	 pers[] = "luamta";
	size_t			 i, n = 0;
	int			 rc;

	mbedtls_ssl_config_init(&t->conf);
	mbedtls_entropy_init(&t->entropy);
	mbedtls_ctr_drbg_init(&t->drbg);
	for (i = 0; i < TLS_PAIRS_MAX; i++) {
		mbedtls_x509_crt_init(&t->cert[i]);
		mbedtls_pk_init(&t->key[i]);
	}
	mbedtls_x509_crt_init(&t->ca);
	mbedtls_ssl_ticket_init(&t->ticket);
	if ((rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, (const unsigned char *)pers,
	    sizeof(pers) - 1)) != 0 || (rc = mbedtls_ssl_config_defaults(&t->conf, endpoint,
	    MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		tls_strerror(rc, err, errsize);
		return -1;
	}
	mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
#if MBEDTLS_VERSION_MAJOR >= 3 && defined(MBEDTLS_PSA_CRYPTO_C)
	(void)psa_crypto_init();	/* mbedTLS 3's TLS 1.3 code works through PSA; calling it again is harmless */
#endif
#if MBEDTLS_VERSION_MAJOR >= 3
	mbedtls_ssl_conf_min_tls_version(&t->conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
	mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
	for (i = 0; i < sizeof(tls_cipher_names) / sizeof(tls_cipher_names[0]); i++) {
		int	 id = mbedtls_ssl_get_ciphersuite_id(tls_cipher_names[i]);	/* 0: not in this build */

		if (id != 0 && n < sizeof(t->ciphers) / sizeof(t->ciphers[0]) - 1)
			t->ciphers[n++] = id;
	}
	t->ciphers[n] = 0;
	if (n > 0)
		mbedtls_ssl_conf_ciphersuites(&t->conf, t->ciphers);
#if MBEDTLS_VERSION_MAJOR >= 3
	mbedtls_ssl_conf_groups(&t->conf, tls_groups);
#else
	mbedtls_ssl_conf_curves(&t->conf, tls_groups);
#endif
	return 0;
}

static int
tls_load_pair(struct tls_conf *t, size_t i, const char *cert, const char *key, char *err, size_t errsize)
{
	int	 rc;

	if ((rc = mbedtls_x509_crt_parse_file(&t->cert[i], cert)) != 0) {
		char	 e[160];

		tls_strerror(rc, e, sizeof(e));
		snprintf(err, errsize, "tls.cert: cannot load %s: %s; expected a PEM certificate (chain)", cert, e);
		return -1;
	}
#if MBEDTLS_VERSION_MAJOR >= 3
	rc = mbedtls_pk_parse_keyfile(&t->key[i], key, NULL, mbedtls_ctr_drbg_random, &t->drbg);
#else
	rc = mbedtls_pk_parse_keyfile(&t->key[i], key, NULL);
#endif
	if (rc != 0) {
		char	 e[160];

		tls_strerror(rc, e, sizeof(e));
		snprintf(err, errsize, "tls.key: cannot load %s: %s; expected a PEM private key without a passphrase",
		    key, e);
		return -1;
	}
#if MBEDTLS_VERSION_MAJOR >= 3
	rc = mbedtls_pk_check_pair(&t->cert[i].pk, &t->key[i], mbedtls_ctr_drbg_random, &t->drbg);
#else
	rc = mbedtls_pk_check_pair(&t->cert[i].pk, &t->key[i]);
#endif
	if (rc != 0) {
		snprintf(err, errsize, "tls.key: %s does not belong to the certificate in %s", key, cert);
		return -1;
	}
	return 0;
}

static void
tls_conf_free(struct tls_conf *t)
{
	size_t	 i;

	mbedtls_ssl_ticket_free(&t->ticket);
	mbedtls_x509_crt_free(&t->ca);
	for (i = 0; i < TLS_PAIRS_MAX; i++) {
		mbedtls_pk_free(&t->key[i]);
		mbedtls_x509_crt_free(&t->cert[i]);
	}
	mbedtls_ssl_config_free(&t->conf);
	mbedtls_ctr_drbg_free(&t->drbg);
	mbedtls_entropy_free(&t->entropy);
	free(t);
}

/*
 * Session tickets (RFC 5077) whose keys every worker shares, so that a client resumes whichever worker it lands
 * on. The master draws a secret before the first fork; every process derives the key of a period (ticket_period
 * seconds) from it with HMAC-SHA-256, issues tickets under the current period's key and takes those of the
 * current and the previous period, so a ticket lives at most two periods and keys rotate with no message
 * between processes. A ticket is: key name (4) | nonce (12) | length (2) | the session sealed with AES-256-GCM,
 * the first 18 octets as associated data | tag (16).
 */
static unsigned char	 tls_ticket_secret[32];
static int		 tls_ticket_have;

int
tls_tickets_init(void)
{
	size_t	 got = 0;

	while (got < sizeof(tls_ticket_secret)) {
		ssize_t	 n = getrandom(tls_ticket_secret + got, sizeof(tls_ticket_secret) - got, 0);

		if (n <= 0 && errno != EINTR)
			return -1;
		if (n > 0)
			got += (size_t)n;
	}
	tls_ticket_have = 1;
	return 0;
}

/* tls_ticket_key - the key name and key of period p. */
static int
tls_ticket_key(uint64_t p, unsigned char name[4], unsigned char key[32])
{
	const mbedtls_md_info_t	*md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
	unsigned char		 in[32], out[32];
	int			 i;

	memset(in, 0, sizeof(in));
	memcpy(in, "luamta ticket key", 17);
	for (i = 0; i < 8; i++)
		in[24 + i] = (unsigned char)(p >> (56 - 8 * i));
	if (md == NULL || mbedtls_md_hmac(md, tls_ticket_secret, sizeof(tls_ticket_secret), in, sizeof(in), key) != 0)
		return -1;
	in[17] = 'n';	/* "luamta ticket keyn": the name comes from a different input than the key */
	if (mbedtls_md_hmac(md, tls_ticket_secret, sizeof(tls_ticket_secret), in, sizeof(in), out) != 0)
		return -1;
	memcpy(name, out, 4);
	return 0;
}

static int
tls_ticket_write(void *arg, const mbedtls_ssl_session *session, unsigned char *start, const unsigned char *end,
    size_t *tlen, uint32_t *lifetime)
{
	struct tls_conf		*t = arg;
	mbedtls_gcm_context	 gcm;
	unsigned char		 key[32];
	size_t			 clear = 0, room = (size_t)(end - start);
	uint64_t		 p = (uint64_t)time(NULL) / t->ticket_period;
	int			 rc;

	if (room < TLS_TICKET_HEAD + TLS_TICKET_TAG)
		return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
	if (tls_ticket_key(p, start, key) != 0)
		return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
	if ((rc = mbedtls_ctr_drbg_random(&t->drbg, start + 4, 12)) != 0)
		return rc;
	if ((rc = mbedtls_ssl_session_save(session, start + TLS_TICKET_HEAD, room - TLS_TICKET_HEAD - TLS_TICKET_TAG,
	    &clear)) != 0)
		return rc;
	if (clear > 0xffff)
		return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
	start[16] = (unsigned char)(clear >> 8);
	start[17] = (unsigned char)clear;
	mbedtls_gcm_init(&gcm);
	if ((rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256)) == 0)
		rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, clear, start + 4, 12, start, TLS_TICKET_HEAD,
		    start + TLS_TICKET_HEAD, start + TLS_TICKET_HEAD, TLS_TICKET_TAG, start + TLS_TICKET_HEAD + clear);
	mbedtls_gcm_free(&gcm);
	mbedtls_platform_zeroize(key, sizeof(key));
	if (rc != 0)
		return rc;
	*tlen = TLS_TICKET_HEAD + clear + TLS_TICKET_TAG;
	*lifetime = 2 * t->ticket_period;
	return 0;
}

static int
tls_ticket_parse(void *arg, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
	struct tls_conf		*t = arg;
	mbedtls_gcm_context	 gcm;
	unsigned char		 name[4], key[32];
	uint64_t		 p = (uint64_t)time(NULL) / t->ticket_period;
	size_t			 clear;
	int			 rc, i, found = 0;

	if (len < TLS_TICKET_HEAD + TLS_TICKET_TAG)
		return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
	clear = ((size_t)buf[16] << 8) | buf[17];
	if (len != TLS_TICKET_HEAD + clear + TLS_TICKET_TAG)
		return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
	for (i = 0; i < 2 && !found; i++)	/* this period's key, then the last one's */
		if (p >= (uint64_t)i && tls_ticket_key(p - (uint64_t)i, name, key) == 0 && memcmp(name, buf, 4) == 0)
			found = 1;
	if (!found)
		return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;	/* an old key, or another server's: full handshake */
	mbedtls_gcm_init(&gcm);
	if ((rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256)) == 0)
		rc = mbedtls_gcm_auth_decrypt(&gcm, clear, buf + 4, 12, buf, TLS_TICKET_HEAD,
		    buf + TLS_TICKET_HEAD + clear, TLS_TICKET_TAG, buf + TLS_TICKET_HEAD, buf + TLS_TICKET_HEAD);
	mbedtls_gcm_free(&gcm);
	mbedtls_platform_zeroize(key, sizeof(key));
	if (rc != 0)
		return MBEDTLS_ERR_SSL_INVALID_MAC;
	return mbedtls_ssl_session_load(session, buf + TLS_TICKET_HEAD, clear);
}

struct tls_conf *
tls_server_new(const char *const *certs, const char *const *keys, size_t npairs, unsigned ticket_period, char *err,
    size_t errsize)
{
	struct tls_conf	*t = xcalloc(1, sizeof(*t));
	size_t		 i;
	int		 rc;

	t->refs = 1;
	t->server = 1;
	if (npairs == 0 || npairs > TLS_PAIRS_MAX) {
		snprintf(err, errsize, "tls: %zu certificates; expected 1 to %d", npairs, TLS_PAIRS_MAX);
		free(t);
		return NULL;
	}
	if (tls_conf_common(t, MBEDTLS_SSL_IS_SERVER, err, errsize) == -1) {
		tls_conf_free(t);
		return NULL;
	}
	/* Several pairs (an ECDSA and an RSA certificate): mbedTLS picks, for the cipher suite it chooses, the first
	 * pair whose key fits it, and our suite list puts ECDSA first, so a client that can do ECDSA gets it. */
	for (i = 0; i < npairs; i++) {
		if (tls_load_pair(t, i, certs[i], keys[i], err, errsize) == -1) {
			tls_conf_free(t);
			return NULL;
		}
		t->npairs++;
		if ((rc = mbedtls_ssl_conf_own_cert(&t->conf, &t->cert[i], &t->key[i])) != 0) {
			tls_strerror(rc, err, errsize);
			tls_conf_free(t);
			return NULL;
		}
	}
	t->ticket_period = ticket_period;
	if (tls_ticket_have && ticket_period > 0)
		mbedtls_ssl_conf_session_tickets_cb(&t->conf, tls_ticket_write, tls_ticket_parse, t);
	else if (mbedtls_ssl_ticket_setup(&t->ticket, mbedtls_ctr_drbg_random, &t->drbg, MBEDTLS_CIPHER_AES_256_GCM,
	    TLS_TICKET_LIFE) == 0)	/* no shared secret (one process): mbedTLS's own keys */
		mbedtls_ssl_conf_session_tickets_cb(&t->conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
		    &t->ticket);
	return t;
}

struct tls_conf *
tls_client_new(int verify, char *err, size_t errsize)
{
	return tls_client_new_ca(verify, NULL, err, errsize);
}

struct tls_conf *
tls_client_new_ca(int verify, const char *ca_file, char *err, size_t errsize)
{
	struct tls_conf	*t = xcalloc(1, sizeof(*t));
	int		 rc;

	t->refs = 1;
	if (ca_file == NULL)
		ca_file = TLS_CA_FILE;
	if (tls_conf_common(t, MBEDTLS_SSL_IS_CLIENT, err, errsize) == -1) {
		tls_conf_free(t);
		return NULL;
	}
	if (verify) {
		/* > 0: that many certificates of the file could not be parsed; the others are used */
		if ((rc = mbedtls_x509_crt_parse_file(&t->ca, ca_file)) < 0) {
			char	 e[160];

			tls_strerror(rc, e, sizeof(e));
			snprintf(err, errsize, "cannot load the CA store %s: %s", ca_file, e);
			tls_conf_free(t);
			return NULL;
		}
		mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
		mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
		t->verify = 1;
	} else
		mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_NONE);
	return t;
}

void
tls_conf_hold(struct tls_conf *t)
{
	t->refs++;
}

void
tls_conf_release(struct tls_conf *t)
{
	if (t != NULL && --t->refs == 0)
		tls_conf_free(t);
}

int
tls_check_files(const char *cert, const char *key, char *err, size_t errsize, char *warn, size_t warnsize)
{
	struct tls_conf	*t = tls_server_new(&cert, &key, 1, 0, err, errsize);

	if (warn != NULL && warnsize > 0)
		warn[0] = '\0';
	if (t == NULL)
		return -1;
	if (warn != NULL && mbedtls_x509_time_is_past(&t->cert[0].valid_to))
		snprintf(warn, warnsize, "tls.cert: the certificate in %s has expired; expected a current one", cert);
	else if (warn != NULL && mbedtls_x509_time_is_future(&t->cert[0].valid_from))
		snprintf(warn, warnsize, "tls.cert: the certificate in %s is not valid yet", cert);
	tls_conf_release(t);
	return 0;
}

static void	tls_alert_forget(struct tls_conn *);

void
tls_detach(struct tls_conn *c)
{
	/* libevent may free the filter later than bufferevent_free() returns: the owner must not hear from us. */
	if (c == NULL)
		return;
	evtimer_del(c->after);
	tls_alert_forget(c);
	c->ready = NULL;
	c->arg = NULL;
}

void
tls_close_notify(struct tls_conn *c)
{
	/* RFC 5246 7.2.1: say goodbye, so that the peer can tell our close from a cut connection. */
	if (c != NULL && c->done && !c->failed)
		(void)mbedtls_ssl_close_notify(&c->ssl);
}

/* The BIO: mbedTLS writes records into the socket's output buffer and reads them from its input buffer. */
static int
tls_bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct tls_conn	*c = ctx;

	if (evbuffer_add(bufferevent_get_output(c->under), buf, len) == -1)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	return (int)len;
}

static int
tls_bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct tls_conn	*c = ctx;
	int		 n;

	if (c->src == NULL || evbuffer_get_length(c->src) == 0)
		return MBEDTLS_ERR_SSL_WANT_READ;
	n = evbuffer_remove(c->src, buf, len);
	return n > 0 ? n : MBEDTLS_ERR_SSL_WANT_READ;
}

static void
tls_alert_forget(struct tls_conn *c)
{
	if (c->alert_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(c->under), c->alert_cb);
	c->alert_cb = NULL;
}

/* The socket took the last of the alert: the failure can be announced (the owner will close at once). */
static void
tls_alert_sent_cb(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
	struct tls_conn	*c = arg;
	struct timeval	 now = { 0, 0 };

	if (info->n_deleted > 0 && evbuffer_get_length(out) == 0) {
		tls_alert_forget(c);
		evtimer_add(c->after, &now);
	}
}

static void
tls_after_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tls_conn	*c = arg;

	tls_alert_forget(c);
	if (!c->failed)		/* plaintext written while the handshake ran can go now */
		bufferevent_flush(c->filter, EV_WRITE, BEV_NORMAL);
	if (c->ready != NULL)
		c->ready(c->arg, !c->failed, c->why);
}

/*
 * tls_handshake_over - announce the end of the handshake from a zero timer. A failed handshake usually leaves a
 * fatal alert in the socket's output buffer, and the owner closes the connection as soon as it hears of the
 * failure: closing then would throw the alert away (and with unread input, send a reset), so the peer would see
 * a cut connection instead of the reason. The failure is therefore announced once the socket has taken the
 * alert, or after TLS_ALERT_WAIT if the peer does not read.
 */
static void
tls_handshake_over(struct tls_conn *c, int ok)
{
	struct timeval		 now = { 0, 0 }, wait = { TLS_ALERT_WAIT, 0 };
	struct evbuffer		*out = bufferevent_get_output(c->under);

	c->done = ok;
	c->failed = !ok;
	metrics_tls_handshake(ok);
	if (ok)
		snprintf(c->desc, sizeof(c->desc), "%s %s", mbedtls_ssl_get_version(&c->ssl),
		    mbedtls_ssl_get_ciphersuite(&c->ssl));
	if (!ok && evbuffer_get_length(out) > 0 && c->alert_cb == NULL &&
	    (c->alert_cb = evbuffer_add_cb(out, tls_alert_sent_cb, c)) != NULL) {
		evtimer_add(c->after, &wait);
		return;
	}
	evtimer_add(c->after, &now);
}

static enum bufferevent_filter_result
tls_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit, enum bufferevent_flush_mode mode, void *ctx)
{
	struct tls_conn	*c = ctx;
	unsigned char	 buf[TLS_CHUNK];
	int		 rc, got = 0;

	if (c->failed)
		return BEV_ERROR;
	c->src = src;
	if (!c->done) {
		rc = mbedtls_ssl_handshake(&c->ssl);
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
			c->src = NULL;
			return BEV_NEED_MORE;
		}
		if (rc != 0) {
			tls_strerror(rc, c->why, sizeof(c->why));
			c->src = NULL;
			tls_handshake_over(c, 0);
			return BEV_ERROR;
		}
		tls_handshake_over(c, 1);
	}
	for (;;) {
		rc = mbedtls_ssl_read(&c->ssl, buf, sizeof(buf));
		if (rc > 0) {
			evbuffer_add(dst, buf, (size_t)rc);
			got = 1;
			if (limit > 0 && (ev_ssize_t)evbuffer_get_length(dst) >= limit)
				break;
			continue;
		}
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == 0 ||
		    rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
			break;		/* more later, or the peer is closing: the socket's EOF follows */
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
		if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
			continue;
#endif
		tls_strerror(rc, c->why, sizeof(c->why));
		c->failed = 1;
		c->src = NULL;
		return BEV_ERROR;
	}
	c->src = NULL;
	return got ? BEV_OK : BEV_NEED_MORE;
}

static enum bufferevent_filter_result
tls_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit, enum bufferevent_flush_mode mode, void *ctx)
{
	struct tls_conn	*c = ctx;
	size_t		 len;
	int		 rc;

	if (c->failed)
		return BEV_ERROR;
	if (!c->done)
		return BEV_NEED_MORE;	/* kept until the handshake is over; tls_after_cb flushes it */
	while ((len = evbuffer_get_length(src)) > 0) {
		if (len > TLS_CHUNK)
			len = TLS_CHUNK;
		rc = mbedtls_ssl_write(&c->ssl, evbuffer_pullup(src, (ev_ssize_t)len), len);
		if (rc > 0) {
			evbuffer_drain(src, (size_t)rc);
			continue;
		}
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
			break;
		tls_strerror(rc, c->why, sizeof(c->why));
		c->failed = 1;
		return BEV_ERROR;
	}
	return BEV_OK;
}

static void
tls_conn_free(void *ctx)
{
	struct tls_conn	*c = ctx;

	/* The owner called tls_detach() before freeing the filter, which dropped alert_cb: the socket's buffer
	 * may already be gone here. */
	event_free(c->after);
	mbedtls_ssl_free(&c->ssl);
	tls_conf_release(c->conf);
	free(c);
}

struct tls_conn *
tls_wrap(struct event_base *base, struct bufferevent *bev, struct tls_conf *conf, const char *host,
    tls_ready_fn *ready, void *arg)
{
	struct tls_conn	*c = xcalloc(1, sizeof(*c));
	int		 rc;

	mbedtls_ssl_init(&c->ssl);
	if (mbedtls_ssl_setup(&c->ssl, &conf->conf) != 0) {
		mbedtls_ssl_free(&c->ssl);
		free(c);
		return NULL;
	}
	if (host != NULL && !conf->server)
		mbedtls_ssl_set_hostname(&c->ssl, host);
	tls_conf_hold(conf);
	c->conf = conf;
	c->under = bev;
	c->ready = ready;
	c->arg = arg;
	c->after = evtimer_new(base, tls_after_cb, c);
	mbedtls_ssl_set_bio(&c->ssl, c, tls_bio_send, tls_bio_recv, NULL);
	c->filter = bufferevent_filter_new(bev, tls_input, tls_output, BEV_OPT_CLOSE_ON_FREE, tls_conn_free, c);
	if (c->filter == NULL) {
		tls_conn_free(c);
		return NULL;
	}
	if (!conf->server) {		/* a client speaks first: the ClientHello goes out now */
		rc = mbedtls_ssl_handshake(&c->ssl);
		if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE && rc != 0) {
			tls_strerror(rc, c->why, sizeof(c->why));
			tls_handshake_over(c, 0);
		}
	}
	return c;
}

struct bufferevent *
tls_bev(struct tls_conn *c)
{
	return c->filter;
}

const char *
tls_describe(struct tls_conn *c)
{
	return c->done ? c->desc : "";
}

const char *
tls_handshake_error(struct tls_conn *c)
{
	return c != NULL && c->failed ? c->why : NULL;
}

int
tls_verified(struct tls_conn *c)
{
	return c->done && c->conf->verify && mbedtls_ssl_get_verify_result(&c->ssl) == 0;
}

int
tls_verify_error(struct tls_conn *c, char *buf, size_t size)
{
	uint32_t	 flags;
	char		 info[512], *p, *nl;
	size_t		 n = 0;
	int		 len;

	if (c == NULL || !c->conf->verify || size == 0 || (flags = mbedtls_ssl_get_verify_result(&c->ssl)) == 0 ||
	    flags == (uint32_t)-1)
		return 0;
	if ((len = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags)) < 0)
		info[0] = '\0';
	buf[0] = '\0';
	for (p = info; *p != '\0' && n + 1 < size; p = nl) {	/* one line per problem: join with "; " */
		if ((nl = strchr(p, '\n')) != NULL)
			*nl++ = '\0';
		else
			nl = p + strlen(p);
		len = snprintf(buf + n, size - n, "%s%s", n > 0 ? "; " : "", p);
		n = len < 0 ? size : n + (size_t)len;
	}
	return 1;
}
