/*
 * tls.h - TLS with mbedTLS on top of libevent bufferevents, without blocking: a filter bufferevent runs the
 * handshake and the records, and mbedTLS reads and writes through memory (the underlying socket bufferevent's
 * buffers), so WANT_READ/WANT_WRITE never wait. Builds against mbedTLS 2.28 and 3.x.
 */
#ifndef TLS_H
#define TLS_H

#include <stddef.h>

struct bufferevent;
struct event_base;
struct tls_conf;
struct tls_conn;

/* tls_ready_fn - the handshake finished. ok is 0 when it failed (then why says how); the bufferevent's event
 * callback also reports an error in that case. */
typedef void	 tls_ready_fn(void *arg, int ok, const char *why);

#define TLS_PAIRS_MAX	4

/* tls_server_new - npairs certificate chains and their keys (PEM files), e.g. an ECDSA and an RSA one; NULL with
 * err. Checks that each key fits its certificate. TLS 1.2 minimum (1.3 too with mbedTLS 3), ECDHE with AEAD
 * ciphers, session tickets: with keys every worker shares when tls_tickets_init() ran in the master and
 * ticket_period (seconds a ticket key is issued; tickets are taken for two) is not 0, else this process's own. */
struct tls_conf	*tls_server_new(const char *const *certs, const char *const *keys, size_t npairs,
		    unsigned ticket_period, char *err, size_t errsize);
/* tls_tickets_init - draw the secret the ticket keys of every worker derive from; call before forking. 0 or -1. */
int		 tls_tickets_init(void);
/* tls_client_new - for the router's outbound STARTTLS. verify: check the next hop's certificate against the
 * system CA store and its name; otherwise encrypt without checking (opportunistic TLS, RFC 7435). */
struct tls_conf	*tls_client_new(int verify, char *err, size_t errsize);
/* tls_client_new_ca - the same, checking against the CA certificates in ca_file (PEM) instead of the system
 * store when ca_file is not NULL (mta.http.request's https; docs/callouts.md). */
struct tls_conf	*tls_client_new_ca(int verify, const char *ca_file, char *err, size_t errsize);
void		 tls_conf_hold(struct tls_conf *);
void		 tls_conf_release(struct tls_conf *);

/*
 * tls_wrap - put TLS on bev (taken: freeing the returned bufferevent frees it). A client conf starts the
 * handshake at once, naming host (SNI, and the name checked when verifying). ready(arg, ...) runs from the loop
 * when the handshake is over. Returns the connection; tls_bev() is the bufferevent to use from now on. The
 * connection lives as long as that bufferevent.
 */
struct tls_conn	*tls_wrap(struct event_base *, struct bufferevent *bev, struct tls_conf *, const char *host,
		    tls_ready_fn *ready, void *arg);
struct bufferevent *tls_bev(struct tls_conn *);
/* tls_describe - "TLSv1.2 TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384" once the handshake is over, else "". */
const char	*tls_describe(struct tls_conn *);
int		 tls_verified(struct tls_conn *);	/* 1 when the peer's certificate was checked and good */
/* tls_verify_error - 1 when the peer's certificate was checked and found bad; buf gets mbedTLS's reasons
 * ("The certificate is not correctly signed by the trusted CA; ..."). 0 otherwise. */
int		 tls_verify_error(struct tls_conn *, char *buf, size_t size);
/* tls_handshake_error - why the handshake failed, or NULL when it has not failed (yet), for an owner that hears
 * of the socket's end before the failure is announced. */
const char	*tls_handshake_error(struct tls_conn *);

/* tls_check_files - what `luamta check` says about tls.cert and tls.key: 0 (warn gets a warning or ""), or -1
 * with err. */
int		 tls_check_files(const char *cert, const char *key, char *err, size_t errsize, char *warn,
		    size_t warnsize);
/* tls_detach - the owner is about to free the bufferevent: no ready callback may come after this. */
void		 tls_detach(struct tls_conn *);
/* tls_close_notify - queue the close_notify alert; the caller lets the socket's buffer drain before freeing. */
void		 tls_close_notify(struct tls_conn *);

#endif
