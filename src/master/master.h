/*
 * master.h - `luamta run`: the parent process that binds, forks the workers and the router, forwards signals
 * and replaces children that die.
 */
#ifndef MASTER_H
#define MASTER_H

int	 master_run(const char *cfgpath);	/* returns the exit status */
/* master_pid_path - "<spool>/luamta.pid" */
void	 master_pid_path(const char *spool, char *buf, size_t size);
/* master_status_path - "<spool>/reload.status": "<master pid> <round>", then ok|failed, then one line per why */
void	 master_status_path(const char *spool, char *buf, size_t size);
/* master_become_user - drop root for user (groups, gid, uid); 0, or -1 with err */
int	 master_become_user(const char *user, char *err, size_t errsize);
/* In a child: tell the master that its state is loaded, or how a reload went (why: what kept the old state,
 * file:line as `luamta check` says it). No-ops outside a child of `luamta run`. */
void	 master_report_ready(void);
void	 master_report_reload(int ok, const char *why);

#endif
