/*
 * worker.h - a listener process: one event loop, one current Lua generation, the listening sockets it
 * inherited from the master, its sessions and its disk thread.
 */
#ifndef WORKER_H
#define WORKER_H

struct event_base;
struct iothread;
struct lb_gen;
struct tls_conf;

/* worker_main - run a worker until it is told to stop; returns the exit status. Takes gen. */
int			 worker_main(int number, struct lb_gen *gen, int *fds, int nfds, int router_fd);
/* worker_embed - serve sessions on base with gen without listening (luamta simulate). Takes gen. */
void			 worker_embed(struct event_base *base, struct lb_gen *gen);
struct event_base	*worker_base(void);
struct lb_gen		*worker_gen(void);		/* borrowed: the generation new sessions start on */
struct iothread		*worker_iot(void);
struct iothread		*worker_auth_iot(void);	/* the thread that checks passwords (crypt(3) is slow on purpose) */
struct tls_conf		*worker_tls(void);		/* borrowed; NULL when TLS is not configured */
int			 worker_stopping(void);
void			 worker_message_queued(const char *id);	/* tell the router (best effort) */
void			 worker_session_gone(void);	/* a session ended: maybe it was the last one */

#endif
