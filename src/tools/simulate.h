/*
 * simulate.h - `luamta simulate`: one SMTP transaction through the real session code and the configured
 * policy and DNS, over a socketpair, queueing nothing. sim_run() plays the client of that transaction and
 * records every reply; `luamta test` (scenario.c) uses it too.
 */
#ifndef SIMULATE_H
#define SIMULATE_H

#include <stdio.h>

struct lb_gen;

#define SIM_RCPTS_MAX	100

/* What the client says: an address to connect from, EHLO, and one transaction. */
struct sim_script {
	const char	*ip;
	const char	*helo;
	const char	*auth;			/* authenticated as this user after EHLO, or NULL */
	const char	*local_user;		/* a local submission by this user (pickup), or NULL */
	int		 tls;			/* TLS on after EHLO, as if STARTTLS had succeeded */
	const char	*from;			/* "" for the null sender */
	const char	*to[SIM_RCPTS_MAX];
	int		 nto;
	const char	*message_text;		/* the message (lines end in LF or CRLF), or NULL */
	const char	*message_file;		/* without text: this file, or NULL for a small built-in one */
};

/* The stages of the dialogue, in order. */
enum sim_stage { SIM_S_CONNECT, SIM_S_HELO, SIM_S_MAIL, SIM_S_RCPT, SIM_S_DATA, SIM_S_MESSAGE, SIM_S_QUIT,
	SIM_S_DONE };

/* What the server answered: the last line of each reply (owned), NULL for a stage never reached. */
struct sim_replies {
	char		*reply[SIM_S_QUIT];	/* indexed by stage; [SIM_S_RCPT] unused */
	char		*rcpt[SIM_RCPTS_MAX];	/* one per recipient sent */
	enum sim_stage	 reached;		/* the last stage that got a reply */
	int		 accepted;		/* recipients that got 2xx */
	int		 refused;		/* anything 4xx/5xx, or the connection lost */
	int		 queued;		/* the message got 2xx after its final dot */
	int		 timed_out;
};

/* simulate_main - argv after "simulate"; returns 0 (accepted for every recipient), 1 (something refused or
 * deferred) or 2 (usage or configuration error). */
int		 simulate_main(const char *cfgpath, int argc, char **argv);
/* sim_run - the dialogue on a new event base with g (taken), echoed to echo when not NULL. 0, or -1 (said on
 * stderr) when it could not start. Once per process: the session code it drives is the process's. */
int		 sim_run(struct lb_gen *g, const struct sim_script *, struct sim_replies *, FILE *echo);
void		 sim_replies_free(struct sim_replies *);
/* sim_done_fn - a sim_start() dialogue is over; got is the caller's. */
typedef void	 sim_done_fn(void *arg, struct sim_replies *got);
struct cfg_listen;
struct smtp_host;
/*
 * sim_start - the same dialogue on the caller's loop (a worker's: the session is a real one that queues, on
 * host), with the session believing it came in on lsn; done(arg, got) runs once when it is over or after
 * timeout seconds. sc and got must live until then. 0, or -1 when it could not start.
 */
int		 sim_start(struct smtp_host *, const struct cfg_listen *lsn, const struct sim_script *sc,
		    struct sim_replies *got, double timeout, sim_done_fn *done, void *arg);
const char	*sim_stage_name(enum sim_stage);

#endif
