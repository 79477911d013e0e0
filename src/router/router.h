/*
 * router.h - the router process (Domino's Router task): takes messages from the spool and delivers them, local
 * recipients to Maildir and the others by SMTP; retries, bounces and the queue commands (control socket).
 */
#ifndef ROUTER_H
#define ROUTER_H

struct lb_gen;

/* router_main - run the router; takes gen; notify_fd receives queue IDs from the workers. */
int	 router_main(struct lb_gen *gen, int notify_fd);

/* router_control_path - "<spool>/control.sock", where `luamta queue` reaches the router. */
void	 router_control_path(const char *spool, char *buf, size_t size);

#endif
