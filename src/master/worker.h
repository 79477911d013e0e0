/*
 * worker.h - a listener process: one event loop, one current Lua generation, the listening sockets it
 * inherited from the master, its sessions and its disk thread. The sessions get what they need from it as a
 * struct smtp_host (smtp_session.h) and never call into it.
 */
#ifndef WORKER_H
#define WORKER_H

struct event_base;
struct lb_gen;
struct smtp_host;

/* worker_main - run a worker until it is told to stop; returns the exit status. Takes gen. */
int			 worker_main(int number, struct lb_gen *gen, int *fds, int nfds, int router_fd);
/* worker_embed - a host for sessions on base with gen, without listening or a router (luamta simulate and
 * test); pass it to smtp_session_start(). Takes gen. */
struct smtp_host	*worker_embed(struct event_base *base, struct lb_gen *gen);

#endif
