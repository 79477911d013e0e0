/*
 * worker.c - a listener process. It owns the event loop, the current Lua generation (replaced on SIGHUP if
 * the new one loads), the disk thread, and the accept side of the shared listening sockets. On SIGTERM it
 * stops accepting, lets open transactions finish (up to WORKER_DRAIN seconds), and exits.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "dns.h"
#include "iothread.h"
#include "lb.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "pickup.h"
#include "trace.h"
#include "master.h"
#include "smtp_session.h"
#include "tls.h"
#include "util.h"
#include "worker.h"

#define WORKER_DRAIN	60	/* seconds open sessions get to finish after SIGTERM */

/* What the sessions borrow (smtp_session.h): the loop, the generation (held), the disk thread, the password
 * thread (not behind, or in front of, commits; made by the first AUTH), the TLS configuration (held). */
static struct smtp_host		 worker_host;
static struct lsn		**worker_lsns;
static struct cfg_listen	*worker_lcfg;		/* owned copy: sessions borrow it for their lifetime */
static int			 worker_nlsn;
static int			 worker_stop;
static int			 worker_router_fd = -1;
static struct event		*worker_drain_ev;

/* worker_tls_load - the certificate and key of gen; keeps the current ones if they do not load (-1, with err). */
static int
worker_tls_load(const struct config *cfg, char *err, size_t errsize)
{
	struct tls_conf	*t;

	if (cfg->ntls_pairs == 0) {
		tls_conf_release(worker_host.tls);
		worker_host.tls = NULL;
		return 0;
	}
	if ((t = tls_server_new((const char *const *)cfg->tls_certs, (const char *const *)cfg->tls_keys,
	    cfg->ntls_pairs, cfg->tls_ticket_period, err, errsize)) == NULL) {
		log_error("tls: %s; %s", err, worker_host.tls ? "keeping the certificate already loaded" :
		    "STARTTLS and implicit TLS are off");
		return -1;
	}
	tls_conf_release(worker_host.tls);	/* connections hold their own reference */
	worker_host.tls = t;
	return 0;
}

/* worker_message_queued - tell the router, best effort: it drains incoming/ every second anyway. */
static void
worker_message_queued(const char *id)
{
	if (worker_router_fd != -1)
		(void)!send(worker_router_fd, id, strlen(id), MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void
worker_maybe_exit(void)
{
	if (worker_stop && smtp_session_count() == 0 && iot_pending(worker_host.iot) == 0 &&
	    (worker_host.auth_iot == NULL || iot_pending(worker_host.auth_iot) == 0))
		event_base_loopexit(worker_host.base, NULL);
}

static void
worker_session_gone(void)
{
	worker_maybe_exit();
}

static void
worker_reload(void)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL, err[512], why[600];

	g = lb_gen_new(lb_gen_config(worker_host.gen)->path, LB_ROLE_WORKER, &errors, &warnings);
	if (g == NULL) {
		log_error("reload failed; keeping policy generation %u. %s", lb_gen_number(worker_host.gen),
		    errors ? errors : "");
		metrics_reload(0);
		master_report_reload(0, errors);
		free(errors);
		free(warnings);
		return;
	}
	free(warnings);
	log_info("reload: policy generation %u replaces %u; open sessions finish on the old one",
	    lb_gen_number(g), lb_gen_number(worker_host.gen));
	metrics_reload(1);
	lb_gen_release(worker_host.gen);
	worker_host.gen = g;
	/* A renewed certificate takes effect for new connections. */
	if (worker_tls_load(lb_gen_config(g), err, sizeof(err)) == -1) {
		snprintf(why, sizeof(why), "%s: tls: %s; kept the certificate already loaded",
		    lb_gen_config(g)->path, err);
		master_report_reload(0, why);
	} else
		master_report_reload(1, NULL);
}

static void
worker_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	log_notice("stop: %zu session(s) still open after %d seconds; closing them", smtp_session_count(),
	    WORKER_DRAIN);
	smtp_session_close_all();
	event_base_loopexit(worker_host.base, NULL);
}

static void
worker_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval	 tv = { WORKER_DRAIN, 0 };
	int		 i;

	if (sig == SIGHUP) {
		log_reopen();
		worker_reload();
		return;
	}
	if (worker_stop)
		return;
	worker_stop = 1;
	log_info("stop: no longer accepting; %zu session(s) open", smtp_session_count());
	for (i = 0; i < worker_nlsn; i++)
		lsn_stop(worker_lsns[i]);
	worker_nlsn = 0;
	smtp_session_shutdown();
	worker_drain_ev = evtimer_new(worker_host.base, worker_drain_cb, NULL);
	evtimer_add(worker_drain_ev, &tv);
	worker_maybe_exit();
}

struct smtp_host *
worker_embed(struct event_base *base, struct lb_gen *gen)
{
	char	 err[512];

	worker_host.base = base;
	worker_host.gen = gen;
	worker_host.iot = iot_new(base);
	worker_host.gone = worker_session_gone;
	worker_host.queued = NULL;
	(void)worker_tls_load(lb_gen_config(gen), err, sizeof(err));
	return &worker_host;
}

int
worker_main(int number, struct lb_gen *gen, int *fds, int nfds, int router_fd)
{
	const struct config	*cfg = lb_gen_config(gen);
	struct event		*sigs[3];
	char			 role[32], err[512];
	int			 i;

	snprintf(role, sizeof(role), "worker %d", number);
	log_set_role(role);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);	/* a file over RLIMIT_FSIZE fails with EFBIG (a 4xx), never kills */
	worker_host.gen = gen;
	worker_router_fd = router_fd;
	if ((worker_host.base = event_base_new()) == NULL)
		fatal("worker: cannot create an event base");
	worker_host.iot = iot_new(worker_host.base);
	iot_count_commits(worker_host.iot);
	worker_host.queued = worker_message_queued;
	worker_host.gone = worker_session_gone;
	(void)worker_tls_load(cfg, err, sizeof(err));
	if (dns_init(worker_host.base, cfg->dns_servers, cfg->dns_timeout, cfg->dns_tries, err, sizeof(err)) == -1)
		fatal("%s", err);
	if (cfg->trace_enabled && trace_open(worker_host.base, cfg->trace_dir, cfg->trace_keep_days, cfg->trace_max_mb,
	    role, 1, err, sizeof(err)) == -1)
		log_warn("%s; sessions are not traced", err);
	worker_lcfg = xcalloc((size_t)nfds, sizeof(*worker_lcfg));
	worker_lsns = xcalloc((size_t)nfds, sizeof(*worker_lsns));
	for (i = 0; i < nfds && (size_t)i < cfg->nlisten; i++) {
		worker_lcfg[i] = cfg->listen[i];
		worker_lsns[i] = lsn_start(worker_host.base, fds[i], &worker_lcfg[i], &worker_host);
	}
	worker_nlsn = i;
	sigs[0] = evsignal_new(worker_host.base, SIGHUP, worker_signal_cb, NULL);
	sigs[1] = evsignal_new(worker_host.base, SIGTERM, worker_signal_cb, NULL);
	sigs[2] = evsignal_new(worker_host.base, SIGINT, worker_signal_cb, NULL);
	for (i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	if (number == 1 && pickup_start(&worker_host, cfg, err, sizeof(err)) == -1)	/* one pickup per server */
		log_error("pickup: %s; sendmail's messages wait in the maildrop", err);
	log_info("ready: policy generation %u, %d listener(s)", lb_gen_number(gen), worker_nlsn);
	master_report_ready();

	event_base_dispatch(worker_host.base);

	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	if (worker_drain_ev != NULL)
		event_free(worker_drain_ev);
	iot_free(worker_host.iot);
	iot_free(worker_host.auth_iot);
	pickup_stop();
	dns_shutdown();
	trace_close();
	tls_conf_release(worker_host.tls);
	lb_gen_release(worker_host.gen);
	event_base_free(worker_host.base);
	log_info("stopped");
	return 0;
}
