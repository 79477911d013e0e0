/*
 * metrics.h - counters of the whole server for Prometheus (docs/investigating.md, "Metrics"). Every process counts in a
 * slot of its own in memory the master maps before it forks, with plain single-writer stores: counting costs a
 * load and a store, never a lock or a message. The master sums every slot when /metrics is scraped. Label sets
 * are bounded: stages, codes, verdicts, transports and results are fixed lists; rule and listener names come
 * from the configuration and are capped (names past the cap count as "other").
 *
 * Every counting function does nothing until metrics_init() ran (luamta check, simulate and test count nothing).
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>

struct event_base;
struct evhttp;

/* The stage a reply answers (luamta_replies_total{stage}). */
enum metrics_stage { MS_CONNECT, MS_HELO, MS_AUTH, MS_MAIL, MS_RCPT, MS_DATA, MS_MESSAGE, MS_STARTTLS, MS_OTHER,
	MS_COUNT };
enum metrics_verdict { MV_ACCEPT, MV_REJECT, MV_TEMPFAIL, MV_DISCONNECT, MV_ERROR, MV_COUNT };
enum metrics_transport { MT_SMTP, MT_LOCAL, MT_LMTP, MT_COUNT };
enum metrics_delivery { MD_SENT, MD_DEFERRED, MD_BOUNCED, MD_COUNT };
enum metrics_queue { MQ_ACTIVE, MQ_DEFERRED, MQ_HELD, MQ_COUNT };

/* metrics_init - map the shared counters for nworkers workers (before the first fork). 0 or -1. */
int		 metrics_init(int nworkers);
/* metrics_forget - in a child after fork: close the master's metrics listener. */
void		 metrics_forget(void);
/* metrics_select - this process counts in the router's slot (worker < 0) or worker's (0-based). */
void		 metrics_select(int worker);
/* metrics_reset_gauges - a child died: its gauges (sessions, queue sizes) no longer hold; counters stay. */
void		 metrics_reset_gauges(int worker);
/* metrics_listen - serve GET /metrics on "host:port" from base (the master). 0, or -1 with err. */
int		 metrics_listen(struct event_base *base, const char *hostport, char *err, size_t errsize);
/* metrics_render - the Prometheus text exposition of every slot's sum into a malloc'd string. */
char		*metrics_render(void);

void		 metrics_connection(const char *listener);
void		 metrics_session_state(int from, int to);	/* smtp_state values; -1 = none */
void		 metrics_reply(enum metrics_stage, const char *reply);
void		 metrics_accepted(void);
void		 metrics_verdict(int lb_stage, const char *rule, enum metrics_verdict);
void		 metrics_delivery(enum metrics_transport, enum metrics_delivery);
void		 metrics_queue_set(enum metrics_queue, long n);
void		 metrics_commit_seconds(double seconds);
void		 metrics_commit_batch(size_t n);
void		 metrics_dns(int dns_type, int dns_status);
void		 metrics_tls_handshake(int ok);
void		 metrics_reload(int ok);

#endif
