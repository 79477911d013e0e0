/*
 * router.h - the router process (Domino's Router task): takes messages from the spool and delivers them. This
 * first version delivers local recipients to Maildir; remote recipients stay queued until the SMTP client
 * arrives (issue: the router).
 */
#ifndef ROUTER_H
#define ROUTER_H

struct lb_gen;

/* router_main - run the router; takes gen; notify_fd receives queue IDs from the workers. */
int	 router_main(struct lb_gen *gen, int notify_fd);

#endif
