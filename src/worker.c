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

static struct event_base	*worker_evbase;
static struct lb_gen		*worker_current;	/* held */
static struct iothread		*worker_io;
static struct iothread		*worker_auth_io;	/* password hashes: not behind (or in front of) commits */
static struct lsn		**worker_lsns;
static struct cfg_listen	*worker_lcfg;		/* owned copy: sessions borrow it for their lifetime */
static int			 worker_nlsn;
static int			 worker_stop;
static int			 worker_router_fd = -1;
static struct event		*worker_drain_ev;
static struct tls_conf		*worker_tlsconf;	/* held; NULL without tls.cert/tls.key */

struct event_base *
worker_base(void)
{
	return worker_evbase;
}

struct lb_gen *
worker_gen(void)
{
	return worker_current;
}

struct iothread *
worker_iot(void)
{
	return worker_io;
}

struct iothread *
worker_auth_iot(void)
{
	if (worker_auth_io == NULL)	/* made on the first AUTH: most workers never see one */
		worker_auth_io = iot_new(worker_evbase);
	return worker_auth_io;
}

struct tls_conf *
worker_tls(void)
{
	return worker_tlsconf;
}

/* worker_tls_load - the certificate and key of gen; keeps the current ones if they do not load (-1, with err). */
static int
worker_tls_load(const struct config *cfg, char *err, size_t errsize)
{
	struct tls_conf	*t;

	if (cfg->ntls_pairs == 0) {
		tls_conf_release(worker_tlsconf);
		worker_tlsconf = NULL;
		return 0;
	}
	if ((t = tls_server_new((const char *const *)cfg->tls_certs, (const char *const *)cfg->tls_keys,
	    cfg->ntls_pairs, cfg->tls_ticket_period, err, errsize)) == NULL) {
		log_error("tls: %s; %s", err, worker_tlsconf ? "keeping the certificate already loaded" :
		    "STARTTLS and implicit TLS are off");
		return -1;
	}
	tls_conf_release(worker_tlsconf);	/* connections hold their own reference */
	worker_tlsconf = t;
	return 0;
}

int
worker_stopping(void)
{
	return worker_stop;
}

void
worker_message_queued(const char *id)
{
	/* A datagram per message; if the router's buffer is full it finds the file on its next scan. */
	if (worker_router_fd != -1)
		(void)!send(worker_router_fd, id, strlen(id), MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void
worker_maybe_exit(void)
{
	if (worker_stop && smtp_session_count() == 0 && iot_pending(worker_io) == 0 &&
	    (worker_auth_io == NULL || iot_pending(worker_auth_io) == 0))
		event_base_loopexit(worker_evbase, NULL);
}

void
worker_session_gone(void)
{
	worker_maybe_exit();
}

static void
worker_reload(void)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL, err[512], why[600];

	g = lb_gen_new(lb_gen_config(worker_current)->path, LB_ROLE_WORKER, &errors, &warnings);
	if (g == NULL) {
		log_error("reload failed; keeping policy generation %u. %s", lb_gen_number(worker_current),
		    errors ? errors : "");
		metrics_reload(0);
		master_report_reload(0, errors);
		free(errors);
		free(warnings);
		return;
	}
	free(warnings);
	log_info("reload: policy generation %u replaces %u; open sessions finish on the old one",
	    lb_gen_number(g), lb_gen_number(worker_current));
	metrics_reload(1);
	lb_gen_release(worker_current);
	worker_current = g;
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
	event_base_loopexit(worker_evbase, NULL);
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
	worker_drain_ev = evtimer_new(worker_evbase, worker_drain_cb, NULL);
	evtimer_add(worker_drain_ev, &tv);
	worker_maybe_exit();
}

void
worker_embed(struct event_base *base, struct lb_gen *gen)
{
	char	 err[512];

	worker_evbase = base;
	worker_current = gen;
	worker_io = iot_new(base);
	(void)worker_tls_load(lb_gen_config(gen), err, sizeof(err));
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
	worker_current = gen;
	worker_router_fd = router_fd;
	if ((worker_evbase = event_base_new()) == NULL)
		fatal("worker: cannot create an event base");
	worker_io = iot_new(worker_evbase);
	iot_count_commits(worker_io);
	(void)worker_tls_load(cfg, err, sizeof(err));
	if (dns_init(worker_evbase, cfg->dns_servers, cfg->dns_timeout, cfg->dns_tries, err, sizeof(err)) == -1)
		fatal("%s", err);
	if (cfg->trace_enabled && trace_open(worker_evbase, cfg->trace_dir, cfg->trace_keep_days, cfg->trace_max_mb,
	    role, 1, err, sizeof(err)) == -1)
		log_warn("%s; sessions are not traced", err);
	worker_lcfg = xcalloc((size_t)nfds, sizeof(*worker_lcfg));
	worker_lsns = xcalloc((size_t)nfds, sizeof(*worker_lsns));
	for (i = 0; i < nfds && (size_t)i < cfg->nlisten; i++) {
		worker_lcfg[i] = cfg->listen[i];
		worker_lsns[i] = lsn_start(worker_evbase, fds[i], &worker_lcfg[i]);
	}
	worker_nlsn = i;
	sigs[0] = evsignal_new(worker_evbase, SIGHUP, worker_signal_cb, NULL);
	sigs[1] = evsignal_new(worker_evbase, SIGTERM, worker_signal_cb, NULL);
	sigs[2] = evsignal_new(worker_evbase, SIGINT, worker_signal_cb, NULL);
	for (i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	if (number == 1 && pickup_start(worker_evbase, cfg, err, sizeof(err)) == -1)	/* one pickup per server */
		log_error("pickup: %s; sendmail's messages wait in the maildrop", err);
	log_info("ready: policy generation %u, %d listener(s)", lb_gen_number(gen), worker_nlsn);
	master_report_ready();

	event_base_dispatch(worker_evbase);

	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	if (worker_drain_ev != NULL)
		event_free(worker_drain_ev);
	iot_free(worker_io);
	iot_free(worker_auth_io);
	pickup_stop();
	dns_shutdown();
	trace_close();
	tls_conf_release(worker_tlsconf);
	lb_gen_release(worker_current);
	event_base_free(worker_evbase);
	log_info("stopped");
	return 0;
}
