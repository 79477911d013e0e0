/*
 * log.c - the log sink. Each call writes one whole line with a single write(2), so lines from the master,
 * the workers and the router never interleave mid-line on a shared file or stderr.
 *	log_init()	stderr (or syslog) with a level, before the configuration is read
 *	log_setup()	the destination the configuration names: log.file, log.syslog or stderr
 *	log_reopen()	log.file again under the same path (HUP, after logrotate renamed it)
 *	log_msg()	one line in the process's service; log_svc() in another one's
 *	log_printable()	the one escaping rule, applied to the text of every line
 * Destinations (docs/admin.md, "Logs"):
 *	stderr	"2026-12-06T21:33:13.042 luamta[8440] worker 1: text" (journald adds its own prefix)
 *	file	"Dec  6 21:33:13 mx luamta/smtpd[8440]: text", the shape of /var/log/mail.log
 *	syslog	tag "luamta/smtpd", pid, facility log.facility
 * The text of a line is printable ASCII or valid UTF-8, nothing else: CR, LF, TAB, NUL and every other control
 * octet (C0, DEL, and C1 as UTF-8), and octets that are not part of a valid UTF-8 sequence, become '?', as
 * Postfix's printable() does with smtputf8_enable. Client-supplied strings (AUTH user names, HELO, addresses,
 * next-hop replies, PTR names, rule reasons) therefore cannot forge a line, and callers never escape themselves.
 * This file never allocates and never blocks the event loop beyond one write(2) or syslog(3) per line.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX	4096
#define LOG_TAG_MAX	64
#define LOG_NTAGS	12

static char		 log_ident[32] = "luamta";
static char		 log_role[32] = "";
static char		 log_service[16] = "master";
static int		 log_min = LOG_L_INFO;
static int		 log_syslog;
static int		 log_facility = LOG_MAIL;
static int		 log_fd = STDERR_FILENO;
static int		 log_file;			/* log_fd is log_path, opened by us */
static char		 log_path[4096];
static char		 log_host[64];
/* syslog(3) keeps the pointer given to openlog(): one stable "ident/service" string per service. */
static char		 log_tags[LOG_NTAGS][LOG_TAG_MAX];
static const char	*log_tag_now;

static const char *const log_names[] = { "debug", "info", "notice", "warning", "error" };

static const struct {
	const char	*name;
	int		 facility;
} log_facilities[] = {
	{ "mail", LOG_MAIL }, { "daemon", LOG_DAEMON }, { "user", LOG_USER }, { "auth", LOG_AUTH },
	{ "authpriv", LOG_AUTHPRIV }, { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },
	{ "local7", LOG_LOCAL7 },
};

void
log_init(const char *ident, int level, int use_syslog)
{
	snprintf(log_ident, sizeof(log_ident), "%s", ident);
	log_min = level;
	log_syslog = use_syslog;
}

int
log_setup(const char *ident, int level, const char *file, int use_syslog, const char *facility, char *err,
    size_t errsize)
{
	int	 fd, fac = facility ? log_facility_from_name(facility) : LOG_MAIL;
	char	*dot;

	log_init(ident, level, 0);
	log_facility = fac < 0 ? LOG_MAIL : fac;
	if (gethostname(log_host, sizeof(log_host)) == -1 || log_host[0] == '\0')
		snprintf(log_host, sizeof(log_host), "localhost");
	log_host[sizeof(log_host) - 1] = '\0';
	if ((dot = strchr(log_host, '.')) != NULL)
		*dot = '\0';			/* the short name, as rsyslog writes it */
	if (file != NULL && file[0] != '\0') {
		if ((fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)) == -1) {
			snprintf(err, errsize, "log.file %s: %s", file, strerror(errno));
			return -1;
		}
		snprintf(log_path, sizeof(log_path), "%s", file);
		log_fd = fd;
		log_file = 1;
		return 0;
	}
	log_syslog = use_syslog;
	return 0;
}

void
log_reopen(void)
{
	int	 fd;

	if (!log_file)
		return;
	if ((fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		log_error("log.file %s: cannot open it again: %s; writing to the old file", log_path,
		    strerror(errno));
		return;
	}
	/* dup2 swaps the descriptor in one step: a line written meanwhile goes to one file or the other. */
	if (dup2(fd, log_fd) == -1)
		log_error("log.file %s: dup2: %s", log_path, strerror(errno));
	close(fd);
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
	log_file = 0;
}

void
log_set_role(const char *role)
{
	const char	*svc = role;

	snprintf(log_role, sizeof(log_role), "%s", role);
	if (strncmp(role, "worker", 6) == 0)
		svc = LOG_SVC_SMTPD;
	else if (strcmp(role, "router") == 0)
		svc = LOG_SVC_QMGR;
	snprintf(log_service, sizeof(log_service), "%s", svc);
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

int
log_facility_from_name(const char *name)
{
	size_t	 i;

	for (i = 0; i < sizeof(log_facilities) / sizeof(log_facilities[0]); i++)
		if (strcasecmp(name, log_facilities[i].name) == 0)
			return log_facilities[i].facility;
	return -1;
}

/* log_utf8_len - the length of the valid UTF-8 sequence at s (at most n octets), or 0. C1 controls count as
 * invalid: a terminal may act on them. */
static size_t
log_utf8_len(const unsigned char *s, size_t n)
{
	unsigned int	 cp, min;
	size_t		 len, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
		min = 0xa0;			/* U+0080..U+009F are the C1 controls */
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

size_t
log_printable(char *s, size_t len)
{
	unsigned char	*p = (unsigned char *)s;
	size_t		 i = 0, n;

	while (i < len) {
		if (p[i] >= 0x20 && p[i] < 0x7f) {
			i++;
			continue;
		}
		if (p[i] >= 0x80 && (n = log_utf8_len(p + i, len - i)) > 0) {
			i += n;
			continue;
		}
		p[i++] = '?';
	}
	return len;
}

/* log_tag - the stable "ident/service" string for syslog(3). */
static const char *
log_tag(const char *service)
{
	char	 want[LOG_TAG_MAX];
	size_t	 i;

	snprintf(want, sizeof(want), "%s/%s", log_ident, service);
	for (i = 0; i < LOG_NTAGS && log_tags[i][0] != '\0'; i++)
		if (strcmp(log_tags[i], want) == 0)
			return log_tags[i];
	if (i == LOG_NTAGS)
		i = LOG_NTAGS - 1;		/* more services than slots: reuse the last one */
	memcpy(log_tags[i], want, sizeof(want));
	return log_tags[i];
}

/* log_echo - in file and syslog mode, the master's errors go to stderr too: whoever ran `luamta run` sees why
 * it did not start. */
static void
log_echo(enum log_level level, const char *text, size_t len)
{
	char	 line[LOG_LINE_MAX + 32];
	int	 n;

	if ((!log_file && !log_syslog) || level < LOG_L_ERROR || strcmp(log_service, "master") != 0)
		return;
	n = snprintf(line, sizeof(line), "%s: %.*s\n", log_ident, (int)len, text);
	if (n > 0)
		(void)!write(STDERR_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void
log_vwrite(const char *service, enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR };
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
	    "Nov", "Dec" };
	char		 line[LOG_LINE_MAX];
	const char	*tag, *lv;
	int		 n, m;
	struct timespec	 ts;
	struct tm	 tm;
	char		 stamp[32];

	if ((int)level < log_min)
		return;
	if (service == NULL)
		service = log_service;
	lv = level >= LOG_L_WARNING ? log_names[level] : "";
	if (log_syslog) {
		n = snprintf(line, sizeof(line), "%s%s", lv, lv[0] ? ": " : "");
		m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (m < 0)
			m = 0;
		if ((size_t)(n + m) >= sizeof(line))
			m = (int)sizeof(line) - 1 - n;
		log_printable(line + n, (size_t)m);
		if ((tag = log_tag(service)) != log_tag_now) {
			openlog(tag, LOG_PID | LOG_NDELAY, log_facility);
			log_tag_now = tag;
		}
		syslog(prio[level], "%s", line);
		log_echo(level, line + n, (size_t)m);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	if (log_file) {
		snprintf(stamp, sizeof(stamp), "%s %2d %02d:%02d:%02d", mon[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec);
		n = snprintf(line, sizeof(line), "%s %s %s/%s[%d]: %s%s", stamp, log_host, log_ident, service,
		    (int)getpid(), lv, lv[0] ? ": " : "");
	} else {
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(line, sizeof(line), "%s.%03ld %s[%d]%s%s: %s%s", stamp, ts.tv_nsec / 1000000L,
		    log_ident, (int)getpid(), log_role[0] ? " " : "", log_role, lv, lv[0] ? ": " : "");
	}
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	if ((size_t)(n + m) > sizeof(line) - 2)
		m = (int)sizeof(line) - 2 - n;	/* truncated: keep one whole line */
	log_printable(line + n, (size_t)m);
	line[n + m] = '\n';
	(void)!write(log_fd, line, n + m + 1);
	log_echo(level, line + n, (size_t)m);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(NULL, level, fmt, ap);
	va_end(ap);
}

void
log_svc(const char *service, enum log_level level, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(service, level, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(NULL, LOG_L_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatal_bug(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(NULL, LOG_L_ERROR, fmt, ap);
	va_end(ap);
	abort();
}
