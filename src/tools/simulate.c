/*
 * simulate.c - luamta simulate. The session side is the server's own smtp_session.c, started on one end of a
 * socketpair as if a client had connected from --ip; this file plays the client on the other end and prints
 * the dialogue, while the rules' verdicts are logged to stdout between the lines. The spool is never touched
 * (the host's dry_run). DNS goes to the configured servers, so list and DNSBL answers are the real ones.
 * sim_run() is the dialogue itself, shared with `luamta test` (scenario.c), which records the replies instead
 * of printing them and answers DNS from the scenario's fixtures.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
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
#include "explain.h"
#include "lb.h"
#include "log.h"
#include "simulate.h"
#include "smtp_session.h"
#include "trace.h"
#include "util.h"
#include "worker.h"

#define SIM_TIMEOUT	60	/* seconds for the whole dialogue */

struct sim {
	const struct sim_script	*script;
	struct sim_replies	*got;
	FILE			*echo;		/* the dialogue as "C: "/"S: " lines, or NULL */
	enum sim_stage		 step;
	int			 rcpt;		/* next recipient to send */
	struct bufferevent	*bev;
	struct event_base	*base;
	struct event		*timer;		/* sim_start: the whole dialogue's deadline */
	sim_done_fn		*done;		/* sim_start: told once when the dialogue is over */
	void			*done_arg;
};

/* sim_finish - the dialogue is over: stop the loop (sim_run) or tell the owner (sim_start) and free. */
static void
sim_finish(struct sim *m)
{
	if (m->done == NULL) {
		event_base_loopexit(m->base, NULL);
		return;
	}
	bufferevent_free(m->bev);
	event_free(m->timer);
	m->done(m->done_arg, m->got);
	free(m);
}

static void
sim_say(struct sim *m, const char *fmt, ...)
{
	va_list	 ap;

	if (m->echo == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(m->echo, fmt, ap);
	va_end(ap);
	fflush(m->echo);
}

static void
sim_send(struct sim *m, const char *fmt, const char *arg)
{
	char	 line[1024];

	snprintf(line, sizeof(line), fmt, arg);
	sim_say(m, "C: %s\n", line);
	evbuffer_add_printf(bufferevent_get_output(m->bev), "%s\r\n", line);
}

/* sim_add_line - one line of the message, dot-stuffed, with CRLF. */
static void
sim_add_line(struct evbuffer *out, const char *line, size_t n)
{
	if (n > 0 && line[0] == '.')
		evbuffer_add(out, ".", 1);
	evbuffer_add(out, line, n);
	evbuffer_add(out, "\r\n", 2);
}

/* sim_send_message - the message, dot-stuffed, then the final dot. */
static int
sim_send_message(struct sim *m)
{
	const struct sim_script	*sc = m->script;
	struct evbuffer		*out = bufferevent_get_output(m->bev);
	char			 line[8192];
	FILE			*f;
	int			 lines = 0;

	if (sc->message_text != NULL) {
		const char	*p = sc->message_text;

		while (*p != '\0') {
			size_t	 n = strcspn(p, "\r\n");

			sim_add_line(out, p, n);
			lines++;
			p += n;
			if (*p == '\r' && p[1] == '\n')
				p++;
			if (*p != '\0')
				p++;
		}
	} else if (sc->message_file == NULL) {
		evbuffer_add_printf(out, "From: <%s>\r\nTo: <%s>\r\nSubject: luamta simulate\r\n\r\nA test message.\r\n",
		    sc->from, sc->to[0]);
		lines = 5;
	} else {
		if ((f = fopen(sc->message_file, "r")) == NULL) {
			fprintf(stderr, "luamta: message %s: %s\n", sc->message_file, strerror(errno));
			return -1;
		}
		while (fgets(line, sizeof(line), f) != NULL) {
			sim_add_line(out, line, strcspn(line, "\r\n"));
			lines++;
		}
		fclose(f);
	}
	evbuffer_add(out, ".\r\n", 3);
	sim_say(m, "C: (%d line%s of message)\nC: .\n", lines, lines == 1 ? "" : "s");
	return 0;
}

/*
 * sim_next - the server's reply to what was sent last: send the next command. 1 when the dialogue is over, and
 * then m may be gone already (sim_start's sim_finish() frees it, with its bufferevent), so the caller must not
 * touch m again; else 0.
 */
static int
sim_next(struct sim *m, int code, const char *line)
{
	const struct sim_script	*sc = m->script;
	struct sim_replies	*got = m->got;
	int			 ok = code >= 200 && code < 400;

	if (!ok && m->step != SIM_S_QUIT)
		got->refused = 1;
	if (m->step < SIM_S_QUIT) {
		if (m->step == SIM_S_RCPT)
			got->rcpt[m->rcpt - 1] = xstrdup(line);
		else
			got->reply[m->step] = xstrdup(line);
		got->reached = m->step;
	}
	switch (m->step) {
	case SIM_S_CONNECT:
		if (code != 220)
			goto quit;
		m->step = SIM_S_HELO;
		sim_send(m, "EHLO %s", sc->helo);
		return 0;
	case SIM_S_HELO:
		if (!ok)
			goto quit;
		if (sc->tls) {
			smtp_session_set_tls(smtp_session_last_id(), "TLS (simulated)");
			sim_say(m, "   (TLS is on, as if STARTTLS had succeeded)\n");
		}
		if (sc->local_user != NULL)
			smtp_session_set_local_user(smtp_session_last_id(), sc->local_user);
		if (sc->auth != NULL) {
			smtp_session_set_user(smtp_session_last_id(), sc->auth);
			sim_say(m, "   (authenticated as %s, as if AUTH had succeeded)\n", sc->auth);
		}
		m->step = SIM_S_MAIL;
		sim_send(m, "MAIL FROM:<%s>", sc->from);
		return 0;
	case SIM_S_MAIL:
		if (!ok)
			goto quit;
		m->step = SIM_S_RCPT;
		sim_send(m, "RCPT TO:<%s>", sc->to[m->rcpt++]);
		return 0;
	case SIM_S_RCPT:
		if (ok)
			got->accepted++;
		if (m->rcpt < sc->nto) {
			sim_send(m, "RCPT TO:<%s>", sc->to[m->rcpt++]);
			return 0;
		}
		if (got->accepted == 0)
			goto quit;
		m->step = SIM_S_DATA;
		sim_send(m, "%s", "DATA");
		return 0;
	case SIM_S_DATA:
		if (code != 354)
			goto quit;
		m->step = SIM_S_MESSAGE;
		if (sim_send_message(m) == -1) {
			got->refused = 1;
			goto quit;
		}
		return 0;
	case SIM_S_MESSAGE:
		got->queued = ok;
		goto quit;
	case SIM_S_QUIT:
	case SIM_S_DONE:
		m->step = SIM_S_DONE;
		sim_finish(m);
		return 1;
	}
quit:
	m->step = SIM_S_QUIT;
	sim_send(m, "%s", "QUIT");
	return 0;
}

static void
sim_read_cb(struct bufferevent *bev, void *arg)
{
	struct sim	*m = arg;
	char		*line;
	size_t		 len;
	int		 over = 0;

	while (!over && (line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_CRLF)) != NULL) {
		sim_say(m, "S: %s\n", line);
		if ((len >= 4 && line[3] == ' ') || len == 3)	/* the last line of a reply */
			over = sim_next(m, atoi(line), line);	/* over: m may be freed, and bev with it */
		free(line);
	}
}

static void
sim_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sim	*m = arg;

	if (m->step != SIM_S_DONE) {
		sim_say(m, "   (the server closed the connection)\n");
		if (m->step != SIM_S_QUIT)
			m->got->refused = 1;
	}
	m->step = SIM_S_DONE;
	sim_finish(m);
}

static void
sim_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim	*m = arg;

	m->got->refused = 1;
	m->got->timed_out = 1;
	m->step = SIM_S_DONE;
	sim_finish(m);
}

/* sim_addr - sc->ip as a socket address; 0 or -1. */
static int
sim_addr(const struct sim_script *sc, struct sockaddr_storage *ss, socklen_t *sslen)
{
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, sc->ip, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		*sslen = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, sc->ip, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
		*sslen = sizeof(struct sockaddr_in6);
		return 0;
	}
	return -1;
}

int
sim_start(struct smtp_host *host, const struct cfg_listen *lsn, const struct sim_script *sc,
    struct sim_replies *got, double timeout, sim_done_fn *done, void *arg)
{
	struct event_base	*base = host->base;
	struct sim		*m;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	struct timeval		 tv;
	int			 fds[2];

	memset(got, 0, sizeof(*got));
	if (sim_addr(sc, &ss, &sslen) == -1 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == -1)
		return -1;
	m = xcalloc(1, sizeof(*m));
	m->script = sc;
	m->got = got;
	m->base = base;
	m->done = done;
	m->done_arg = arg;
	m->bev = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(m->bev, sim_read_cb, NULL, sim_event_cb, m);
	bufferevent_enable(m->bev, EV_READ);
	m->timer = evtimer_new(base, sim_timeout_cb, m);
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
	evtimer_add(m->timer, &tv);
	smtp_session_start(host, fds[0], (struct sockaddr *)&ss, sslen, lsn);
	return 0;
}

const char *
sim_stage_name(enum sim_stage st)
{
	static const char *const names[] = { "connect", "helo", "mail", "rcpt", "data", "message", "quit", "done" };

	return st <= SIM_S_DONE ? names[st] : "?";
}

void
sim_replies_free(struct sim_replies *got)
{
	int	 i;

	for (i = 0; i < SIM_S_QUIT; i++)
		free(got->reply[i]);
	for (i = 0; i < SIM_RCPTS_MAX; i++)
		free(got->rcpt[i]);
	memset(got, 0, sizeof(*got));
}

int
sim_run(struct lb_gen *g, const struct sim_script *sc, struct sim_replies *got, FILE *echo)
{
	struct sim		 m;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	static struct cfg_listen lsn = { .text = "simulate", .host = "", .port = 0 };
	const struct config	*cfg = lb_gen_config(g);
	struct event_base	*base;
	struct smtp_host	*host;
	char			 err[512];
	struct timeval		 tv = { SIM_TIMEOUT, 0 };
	int			 fds[2];

	memset(got, 0, sizeof(*got));
	if (sim_addr(sc, &ss, &sslen) == -1) {
		fprintf(stderr, "luamta: %s is not an IPv4 or IPv6 address\n", sc->ip);
		return -1;
	}
	base = event_base_new();
	if (dns_init(base, cfg->dns_servers, cfg->dns_timeout, cfg->dns_tries, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	host = worker_embed(base, g);
	host->dry_run = 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == -1) {
		fprintf(stderr, "luamta: socketpair: %s\n", strerror(errno));
		return -1;
	}
	memset(&m, 0, sizeof(m));
	m.script = sc;
	m.got = got;
	m.echo = echo;
	m.base = base;
	m.bev = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(m.bev, sim_read_cb, NULL, sim_event_cb, &m);
	bufferevent_enable(m.bev, EV_READ);
	smtp_session_start(host, fds[0], (struct sockaddr *)&ss, sslen, &lsn);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	if (m.step != SIM_S_DONE) {
		sim_say(&m, "   (no answer within %d seconds)\n", SIM_TIMEOUT);
		got->refused = 1;
		got->timed_out = 1;
	}
	return 0;
}

static int
sim_usage(const char *why)
{
	fprintf(stderr, "luamta simulate: %s\nusage: luamta simulate [-c FILE] --ip ADDR [--helo NAME] [--auth USER] "
	    "[--tls] --from ADDR --to ADDR [--to ADDR ...] [--message FILE]\n", why);
	return 2;
}

int
simulate_main(const char *cfgpath, int argc, char **argv)
{
	struct sim_script	 sc;
	struct sim_replies	 got;
	struct lb_gen		*g;
	char			*errors = NULL, *warnings = NULL;
	int			 i, status;

	memset(&sc, 0, sizeof(sc));
	sc.helo = "client.simulate.test";
	for (i = 0; i < argc; i++) {
		const char	*opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(opt, "-c") == 0 || strcmp(opt, "simulate") == 0) {
			i += strcmp(opt, "-c") == 0;
			continue;
		}
		if (strcmp(opt, "--tls") == 0) {
			sc.tls = 1;
			continue;
		}
		if (val == NULL)
			return sim_usage("an option needs a value");
		if (strcmp(opt, "--ip") == 0)
			sc.ip = val;
		else if (strcmp(opt, "--helo") == 0)
			sc.helo = val;
		else if (strcmp(opt, "--auth") == 0)
			sc.auth = val;
		else if (strcmp(opt, "--from") == 0)
			sc.from = strcmp(val, "<>") == 0 ? "" : val;
		else if (strcmp(opt, "--to") == 0) {
			if (sc.nto == SIM_RCPTS_MAX)
				return sim_usage("too many --to");
			sc.to[sc.nto++] = val;
		} else if (strcmp(opt, "--message") == 0)
			sc.message_file = val;
		else
			return sim_usage("unknown option");
		i++;
	}
	if (sc.ip == NULL || sc.from == NULL || sc.nto == 0)
		return sim_usage("--ip, --from and at least one --to are needed");
	{
		struct in6_addr	 a6;

		if (inet_pton(AF_INET, sc.ip, &a6) != 1 && inet_pton(AF_INET6, sc.ip, &a6) != 1)
			return sim_usage("--ip must be an IPv4 or IPv6 address");
	}
	if ((g = lb_gen_new(cfgpath, LB_ROLE_WORKER, &errors, &warnings)) == NULL) {
		fprintf(stderr, "%s\n", errors);
		free(errors);
		free(warnings);
		return 2;
	}
	free(warnings);
	log_init("luamta", LOG_L_DEBUG, 0);	/* every rule's answer, DNS lookups and state changes */
	log_set_fd(STDOUT_FILENO);
	log_set_role("simulate");
	printf("luamta simulate: client [%s] helo %s, configuration %s\n", sc.ip, sc.helo, cfgpath);
	fflush(stdout);
	trace_memory();
	if (sim_run(g, &sc, &got, stdout) == -1)
		return 2;
	{
		struct trace_rec	*recs;
		size_t			 n;

		/* the same story luamta explain tells after the fact */
		trace_take(&recs, &n);
		printf("\nas luamta explain tells it:\n");
		explain_render(stdout, recs, n, 0);
		trace_free(recs, n);
	}
	printf("result: %s; %d of %d recipient%s accepted\n", got.queued ? "the message would be queued" :
	    "the message would not be queued", got.accepted, sc.nto, sc.nto == 1 ? "" : "s");
	status = got.queued && !got.refused ? 0 : 1;
	sim_replies_free(&got);	/* nothing holds them once we return: LSan would count them as leaked */
	return status;
}
