/*
 * master.h - `luamta run`: the parent process that binds, forks the workers and the router, forwards signals
 * and replaces children that die.
 */
#ifndef MASTER_H
#define MASTER_H

int	 master_run(const char *cfgpath);	/* returns the exit status */
/* master_pid_path - "<spool>/luamta.pid" */
void	 master_pid_path(const char *spool, char *buf, size_t size);

#endif
