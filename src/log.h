/*
 * log.h - one line per event, to stderr or syslog. Lines are "luamta[pid]: <id>: key=value, ..." in the
 * spirit of Postfix's logs, so that grep on a queue ID shows a message's whole life.
 */
#ifndef LOG_H
#define LOG_H

enum log_level { LOG_L_DEBUG, LOG_L_INFO, LOG_L_NOTICE, LOG_L_WARNING, LOG_L_ERROR };

void	 log_init(const char *progname, int level, int use_syslog);
void	 log_set_role(const char *role);
int	 log_enabled(enum log_level);
void	 log_set_fd(int fd);			/* where lines go when not to syslog (default stderr) */	/* "master", "worker 1", "router": shown in each line */
int	 log_level_from_name(const char *);	/* -1 when unknown */
void	 log_msg(enum log_level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define	 log_debug(...)		log_msg(LOG_L_DEBUG, __VA_ARGS__)
#define	 log_info(...)		log_msg(LOG_L_INFO, __VA_ARGS__)
#define	 log_notice(...)	log_msg(LOG_L_NOTICE, __VA_ARGS__)
#define	 log_warn(...)		log_msg(LOG_L_WARNING, __VA_ARGS__)
#define	 log_error(...)		log_msg(LOG_L_ERROR, __VA_ARGS__)

/* fatal - startup errors only: log and exit(1). fatal_bug - impossible states: log and abort() for a core. */
void	 fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void	 fatal_bug(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
