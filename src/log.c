/*
 * log.c - the log sink. Each call writes one whole line with a single write(2), so lines from the master,
 * the workers and the router never interleave mid-line on a shared stderr.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char	*log_progname = "luamta";
static char		 log_role[32] = "";
static int		 log_min = LOG_L_INFO;
static int		 log_syslog;
static int		 log_fd = STDERR_FILENO;

static const char *const log_names[] = { "debug", "info", "notice", "warning", "error" };

void
log_init(const char *progname, int level, int use_syslog)
{
	log_progname = progname;
	log_min = level;
	if (use_syslog && !log_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
	log_syslog = use_syslog;
}

int
log_enabled(enum log_level level)
{
	return (int)level >= log_min;
}

void
log_set_fd(int fd)
{
	log_fd = fd;
}

void
log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

int
log_level_from_name(const char *name)
{
	size_t	 i;

	for (i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++)
		if (strcasecmp(name, log_names[i]) == 0)
			return (int)i;
	return -1;
}

static void
log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR };
	char		 line[4096];
	int		 n, m;
	struct timespec	 ts;
	struct tm	 tm;
	char		 stamp[32];

	if ((int)level < log_min)
		return;
	if (log_syslog) {
		vsnprintf(line, sizeof(line), fmt, ap);
		syslog(prio[level], "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ld %s[%d]%s%s: %s%s", stamp, ts.tv_nsec / 1000000L,
	    log_progname, (int)getpid(), log_role[0] ? " " : "", log_role,
	    level >= LOG_L_WARNING ? log_names[level] : "", level >= LOG_L_WARNING ? ": " : "");
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	if ((size_t)(n + m) > sizeof(line) - 2)
		m = (int)sizeof(line) - 2 - n;	/* truncated: keep one whole line */
	line[n + m] = '\n';
	(void)!write(log_fd, line, n + m + 1);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_L_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatal_bug(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_L_ERROR, fmt, ap);
	va_end(ap);
	abort();
}
