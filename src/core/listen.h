/*
 * listen.h - listening sockets. The master binds them (before dropping privileges) and every worker accepts on
 * the same descriptors; the kernel hands each new connection to one of them.
 */
#ifndef LISTEN_H
#define LISTEN_H

#include <stddef.h>

struct cfg_listen;
struct event_base;
struct lsn;
struct smtp_host;

/* lsn_bind - bind and listen; the descriptor, or -1 with err set. */
int		 lsn_bind(const struct cfg_listen *, char *err, size_t errsize);
/* lsn_start - accept on fd in this process; each connection goes to smtp_session_start() with host. Borrows
 * cfg and host. */
struct lsn	*lsn_start(struct event_base *, int fd, const struct cfg_listen *cfg, struct smtp_host *host);
void		 lsn_stop(struct lsn *);	/* stop accepting; the descriptor stays open for the master */

#endif
