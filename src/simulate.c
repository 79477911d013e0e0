/*
 * simulate.c - luamta simulate. The session side is the server's own smtp_session.c, started on one end of a
 * socketpair as if a client had connected from --ip; this file plays the client on the other end and prints
 * the dialogue, while the rules' verdicts are logged to stdout between the lines. The spool is never touched
 * (smtp_session_dry_run). DNS goes to the configured servers, so list and DNSBL answers are the real ones.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "cfg.h"
#include "dns.h"
#include "lb.h"
#include "log.h"
#include "simulate.h"
#include "smtp_session.h"
#include "util.h"
#include "worker.h"

#define SIM_RCPTS_MAX	100
#define SIM_TIMEOUT	60	/* seconds for the whole dialogue */

enum sim_step { SIM_GREETING, SIM_EHLO, SIM_MAIL, SIM_RCPT, SIM_DATA, SIM_BODY, SIM_QUIT, SIM_DONE };

struct sim {
	const char		*helo;
	const char		*auth;
	const char		*from;
	const char		*to[SIM_RCPTS_MAX];
	int			 nto;
	const char		*message;	/* file, or NULL for a small built-in message */
	enum sim_step		 step;
	int			 rcpt;		/* next recipient to send */
	int			 accepted;	/* recipients that got 2xx */
	int			 refused;	/* anything 4xx/5xx on the way */
	int			 queued;
	struct bufferevent	*bev;
	struct event_base	*base;
};

static void
sim_send(struct sim *m, const char *fmt, const char *arg)
{
	char	 line[1024];

	snprintf(line, sizeof(line), fmt, arg);
	printf("C: %s\n", line);
	fflush(stdout);
	evbuffer_add_printf(bufferevent_get_output(m->bev), "%s\r\n", line);
}

/* sim_send_message - the message, dot-stuffed, then the final dot. */
static int
sim_send_message(struct sim *m)
{
	struct evbuffer	*out = bufferevent_get_output(m->bev);
	char		 line[8192];
	FILE		*f;
	int		 lines = 0;

	if (m->message == NULL) {
		evbuffer_add_printf(out, "From: <%s>\r\nTo: <%s>\r\nSubject: luamta simulate\r\n\r\nA test message.\r\n",
		    m->from, m->to[0]);
		lines = 5;
	} else {
		if ((f = fopen(m->message, "r")) == NULL) {
			fprintf(stderr, "luamta simulate: --message %s: %s\n", m->message, strerror(errno));
			return -1;
		}
		while (fgets(line, sizeof(line), f) != NULL) {
			size_t	 n = strcspn(line, "\r\n");

			line[n] = '\0';
			evbuffer_add_printf(out, "%s%s\r\n", line[0] == '.' ? "." : "", line);
			lines++;
		}
		fclose(f);
	}
	evbuffer_add(out, ".\r\n", 3);
	printf("C: (%d line%s of message)\nC: .\n", lines, lines == 1 ? "" : "s");
	fflush(stdout);
	return 0;
}

static void
sim_next(struct sim *m, int code)
{
	int	 ok = code >= 200 && code < 400;

	if (!ok && m->step != SIM_QUIT)
		m->refused = 1;
	switch (m->step) {
	case SIM_GREETING:
		if (code != 220)
			goto quit;
		m->step = SIM_EHLO;
		sim_send(m, "EHLO %s", m->helo);
		return;
	case SIM_EHLO:
		if (!ok)
			goto quit;
		if (m->auth != NULL) {
			smtp_session_set_user(smtp_session_last_id(), m->auth);
			printf("   (authenticated as %s, as if AUTH had succeeded)\n", m->auth);
		}
		m->step = SIM_MAIL;
		sim_send(m, "MAIL FROM:<%s>", m->from);
		return;
	case SIM_MAIL:
		if (!ok)
			goto quit;
		m->step = SIM_RCPT;
		sim_send(m, "RCPT TO:<%s>", m->to[m->rcpt++]);
		return;
	case SIM_RCPT:
		if (ok)
			m->accepted++;
		if (m->rcpt < m->nto) {
			sim_send(m, "RCPT TO:<%s>", m->to[m->rcpt++]);
			return;
		}
		if (m->accepted == 0)
			goto quit;
		m->step = SIM_DATA;
		sim_send(m, "%s", "DATA");
		return;
	case SIM_DATA:
		if (code != 354)
			goto quit;
		m->step = SIM_BODY;
		if (sim_send_message(m) == -1) {
			m->refused = 1;
			goto quit;
		}
		return;
	case SIM_BODY:
		m->queued = ok;
		goto quit;
	case SIM_QUIT:
	case SIM_DONE:
		m->step = SIM_DONE;
		event_base_loopexit(m->base, NULL);
		return;
	}
quit:
	m->step = SIM_QUIT;
	sim_send(m, "%s", "QUIT");
}

static void
sim_read_cb(struct bufferevent *bev, void *arg)
{
	struct sim	*m = arg;
	char		*line;
	size_t		 len;

	while ((line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_CRLF)) != NULL) {
		printf("S: %s\n", line);
		fflush(stdout);
		if (len >= 4 && line[3] == ' ')		/* the last line of a reply */
			sim_next(m, atoi(line));
		else if (len == 3)
			sim_next(m, atoi(line));
		free(line);
		if (m->step == SIM_DONE)
			return;
	}
}

static void
sim_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sim	*m = arg;

	if (m->step != SIM_DONE) {
		printf("   (the server closed the connection)\n");
		if (m->step != SIM_QUIT)
			m->refused = 1;
	}
	m->step = SIM_DONE;
	event_base_loopexit(m->base, NULL);
}

static int
sim_usage(const char *why)
{
	fprintf(stderr, "luamta simulate: %s\nusage: luamta simulate [-c FILE] --ip ADDR [--helo NAME] [--auth USER] "
	    "--from ADDR --to ADDR [--to ADDR ...] [--message FILE]\n", why);
	return 2;
}

int
simulate_main(const char *cfgpath, int argc, char **argv)
{
	struct sim		 m;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	static struct cfg_listen lsn = { .text = "simulate", .host = "", .port = 0 };
	const char		*ip = NULL;
	const struct config	*cfg;
	struct lb_gen		*g;
	struct event_base	*base;
	char			*errors = NULL, *warnings = NULL, err[512];
	struct timeval		 tv = { SIM_TIMEOUT, 0 };
	int			 fds[2], i;

	memset(&m, 0, sizeof(m));
	m.helo = "client.simulate.test";
	for (i = 0; i < argc; i++) {
		const char	*opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(opt, "-c") == 0 || strcmp(opt, "simulate") == 0) {
			i += strcmp(opt, "-c") == 0;
			continue;
		}
		if (val == NULL)
			return sim_usage("an option needs a value");
		if (strcmp(opt, "--ip") == 0)
			ip = val;
		else if (strcmp(opt, "--helo") == 0)
			m.helo = val;
		else if (strcmp(opt, "--auth") == 0)
			m.auth = val;
		else if (strcmp(opt, "--from") == 0)
			m.from = strcmp(val, "<>") == 0 ? "" : val;
		else if (strcmp(opt, "--to") == 0) {
			if (m.nto == SIM_RCPTS_MAX)
				return sim_usage("too many --to");
			m.to[m.nto++] = val;
		} else if (strcmp(opt, "--message") == 0)
			m.message = val;
		else
			return sim_usage("unknown option");
		i++;
	}
	if (ip == NULL || m.from == NULL || m.nto == 0)
		return sim_usage("--ip, --from and at least one --to are needed");
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		sslen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		sslen = sizeof(struct sockaddr_in6);
	} else
		return sim_usage("--ip must be an IPv4 or IPv6 address");

	if ((g = lb_gen_new(cfgpath, LB_ROLE_WORKER, &errors, &warnings)) == NULL) {
		fprintf(stderr, "%s\n", errors);
		free(errors);
		free(warnings);
		return 2;
	}
	free(warnings);
	cfg = lb_gen_config(g);
	log_init("luamta", LOG_L_DEBUG, 0);	/* every rule's answer, DNS lookups and state changes */
	log_set_fd(STDOUT_FILENO);
	log_set_role("simulate");
	base = event_base_new();
	if (dns_init(base, cfg->dns_servers, cfg->dns_timeout, cfg->dns_tries, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	smtp_session_dry_run();
	worker_embed(base, g);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == -1) {
		fprintf(stderr, "luamta simulate: socketpair: %s\n", strerror(errno));
		return 2;
	}
	printf("luamta simulate: client [%s] helo %s, configuration %s\n", ip, m.helo, cfgpath);
	fflush(stdout);
	m.base = base;
	m.bev = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(m.bev, sim_read_cb, NULL, sim_event_cb, &m);
	bufferevent_enable(m.bev, EV_READ);
	smtp_session_start(fds[0], (struct sockaddr *)&ss, sslen, &lsn);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	if (m.step != SIM_DONE) {
		printf("   (no answer within %d seconds)\n", SIM_TIMEOUT);
		m.refused = 1;
	}
	printf("result: %s; %d of %d recipient%s accepted\n", m.queued ? "the message would be queued" :
	    "the message would not be queued", m.accepted, m.nto, m.nto == 1 ? "" : "s");
	return m.queued && !m.refused ? 0 : 1;
}
