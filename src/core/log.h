/*
 * log.h - one line per event, to stderr, a file or syslog (docs/admin.md, "Logs"). In file and syslog mode a line
 * is "<ident>/<service>[pid]: text" as Postfix writes it, so that grep on a queue ID shows a message's whole life
 * and fail2ban and pflogsumm read the log. Every line is made printable here, in one place: client-supplied text
 * can never start a line of its own.
 */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>

enum log_level { LOG_L_DEBUG, LOG_L_INFO, LOG_L_NOTICE, LOG_L_WARNING, LOG_L_ERROR };

/* Services named in the prefix of file and syslog lines (docs/admin.md lists which line comes from which). */
#define LOG_SVC_SMTPD	"smtpd"		/* inbound sessions (the workers' default) */
#define LOG_SVC_QMGR	"qmgr"		/* queue events (the router's default) */
#define LOG_SVC_SMTP	"smtp"		/* SMTP delivery */
#define LOG_SVC_LOCAL	"local"		/* Maildir delivery */
#define LOG_SVC_BOUNCE	"bounce"	/* delivery status notifications */
#define LOG_SVC_PICKUP	"pickup"	/* local submission (sendmail's maildrop) */

void	 log_init(const char *ident, int level, int use_syslog);	/* stderr (or syslog), before a config */
/*
 * log_setup - the destination of a loaded configuration: file (NULL: none), else syslog with facility (a name from
 * log_facility_from_name), else stderr. Returns 0, or -1 with err set when the file cannot be opened.
 */
int	 log_setup(const char *ident, int level, const char *file, int use_syslog, const char *facility, char *err,
	    size_t errsize);
void	 log_reopen(void);			/* file mode: open the path again (HUP, after logrotate) */
void	 log_set_role(const char *role);	/* "master", "worker 1", "router": the stderr tag; sets the service */
int	 log_enabled(enum log_level);
void	 log_set_fd(int fd);			/* where lines go when not to syslog (default stderr) */
int	 log_level_from_name(const char *);	/* -1 when unknown */
int	 log_facility_from_name(const char *);	/* LOG_MAIL, ...; -1 when unknown */
size_t	 log_printable(char *s, size_t len);	/* in place: controls and invalid UTF-8 become '?'; returns len */
void	 log_msg(enum log_level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_svc - a line in the name of another service than the process's own (the router's deliveries, bounces). */
void	 log_svc(const char *service, enum log_level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define	 log_debug(...)		log_msg(LOG_L_DEBUG, __VA_ARGS__)
#define	 log_info(...)		log_msg(LOG_L_INFO, __VA_ARGS__)
#define	 log_notice(...)	log_msg(LOG_L_NOTICE, __VA_ARGS__)
#define	 log_warn(...)		log_msg(LOG_L_WARNING, __VA_ARGS__)
#define	 log_error(...)		log_msg(LOG_L_ERROR, __VA_ARGS__)

/* fatal - startup errors only: log and exit(1). fatal_bug - impossible states: log and abort() for a core. */
void	 fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void	 fatal_bug(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
