/*
 * trace.c - trace records (see trace.h): the format, its writer and its reader.
 *
 * Format, version 1. A file is "<dir>/<YYYYMMDDHH>-<pid>.trc": hourly, one writer each. Its first line is
 *	#luamta-trace 1 <role>[<pid>]
 * and every other line one record:
 *	<unix time, ms> <S|M> <id> <event> <text>
 * where S records belong to a session (id: its 16 hex digits) and M records to a message (id: its queue ID).
 * The text is printable ASCII: octets below 0x20, 0x7f and above, and the backslash are written as \xHH, so
 * that no client data can break a line. Readers skip lines they do not understand, so later versions may add
 * events. Pruning runs on the I/O thread each time a new hourly file starts: files older than keep_days go,
 * then the oldest until the directory is within max_mb.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "iothread.h"
#include "log.h"
#include "trace.h"
#include "util.h"

#define TRACE_VERSION		1
#define TRACE_TEXT_MAX		1024		/* octets of one record's text; longer is cut */
#define TRACE_BUFFER_MAX	(4 * 1024 * 1024)	/* buffered and not yet written; past it records are dropped */
#define TRACE_LINE_MAX		(TRACE_TEXT_MAX * 4 + 128)
#define TRACE_FILES_MAX		100000		/* files looked at by one prune or one search */

static const char *const trace_names[TR_COUNT] = { "connect", "tls", "auth", "cmd", "reply", "verdict", "rule",
	"dns", "tag", "queued", "close", "attempt", "removed" };

/* The writer's state: one per process. */
static struct {
	int			 on;		/* trace_open() or trace_memory() ran */
	int			 memory;
	int			 sessions;
	char			*dir;
	char			 role[40];
	int			 keep_days;
	long			 max_mb;
	struct evbuffer		*buf;		/* records not yet handed to the I/O thread */
	struct iothread		*iot;
	struct event		*timer;
	int			 writing;	/* a write job is out */
	unsigned long		 dropped;
	long			 flushed_hour;	/* loop: the hour of the last job, to prune once per new hour */
	long			 hour;		/* I/O thread: of the open file, as YYYYMMDDHH */
	int			 fd;		/* I/O thread only */
	struct trace_rec	*mem;		/* trace_memory() */
	size_t			 nmem, capmem;
} tr = { .fd = -1 };

struct trace_job {
	struct evbuffer	*data;
	long		 hour;
	int		 prune;
};

const char *
trace_event_name(enum trace_event ev)
{
	return ev < TR_COUNT ? trace_names[ev] : "?";
}

static long
trace_hour_of(time_t t)
{
	struct tm	 tm;

	gmtime_r(&t, &tm);
	return (long)(tm.tm_year + 1900) * 1000000 + (tm.tm_mon + 1) * 10000 + tm.tm_mday * 100 + tm.tm_hour;
}

struct trace_file {
	char	 name[64];
	off_t	 size;
};

static int
trace_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct trace_file *)a)->name, ((const struct trace_file *)b)->name);
}

/* trace_prune - on the I/O thread: old files first, then the oldest until the total is within max_mb. */
static void
trace_prune(void)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	char		 path[4200];
	struct trace_file *files = NULL;
	size_t		 n = 0, cap = 0, i;
	off_t		 total = 0;
	time_t		 cutoff = time(NULL) - (time_t)tr.keep_days * 86400;

	if ((d = opendir(tr.dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL && n < TRACE_FILES_MAX) {
		size_t	 l = strlen(de->d_name);

		if (l < 5 || l >= 64 || strcmp(de->d_name + l - 4, ".trc") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tr.dir, de->d_name);
		if (stat(path, &st) == -1)
			continue;
		if (st.st_mtime < cutoff) {
			unlink(path);
			continue;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			files = xrealloc(files, cap * sizeof(*files));
		}
		util_strlcpy(files[n].name, de->d_name, sizeof(files[n].name));
		files[n].size = st.st_size;
		total += st.st_size;
		n++;
	}
	closedir(d);
	/* Names start with the hour, so name order is age order. (No files: files is NULL, which qsort may not get.) */
	if (n > 0)
		qsort(files, n, sizeof(*files), trace_name_cmp);
	for (i = 0; i < n && total > (off_t)tr.max_mb * 1024 * 1024; i++) {
		snprintf(path, sizeof(path), "%s/%s", tr.dir, files[i].name);
		if (unlink(path) == 0)
			total -= files[i].size;
	}
	free(files);
}

/* trace_write_work - on the I/O thread: append the batch to the hour's file (opened, with its header, when new). */
static int
trace_write_work(void *arg)
{
	struct trace_job	*j = arg;
	char			 path[4200], head[128];
	int			 err = 0;

	if (j->prune)
		trace_prune();
	if (tr.fd == -1 || j->hour != tr.hour) {
		if (tr.fd != -1)
			close(tr.fd);
		snprintf(path, sizeof(path), "%s/%ld-%ld.trc", tr.dir, j->hour, (long)getpid());
		tr.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (tr.fd == -1)
			return errno;
		tr.hour = j->hour;
		if (lseek(tr.fd, 0, SEEK_END) == 0) {
			snprintf(head, sizeof(head), "#luamta-trace %d %s[%ld]\n", TRACE_VERSION, tr.role, (long)getpid());
			if (write(tr.fd, head, strlen(head)) == -1)
				err = errno;
		}
	}
	while (err == 0 && evbuffer_get_length(j->data) > 0)
		if (evbuffer_write(j->data, tr.fd) == -1 && errno != EINTR)
			err = errno;
	return err;
}

static void
trace_write_done(void *arg, int err)
{
	struct trace_job	*j = arg;

	tr.writing = 0;
	if (err != 0)
		log_warn("trace: cannot write to %s: %s; records are lost until it works again", tr.dir,
		    strerror(err));
	evbuffer_free(j->data);
	free(j);
}

/* trace_flush - hand the buffer to the I/O thread (one job at a time). */
static void
trace_flush(void)
{
	struct trace_job	*j;
	long			 hour = trace_hour_of(time(NULL));

	if (tr.writing || evbuffer_get_length(tr.buf) == 0)
		return;
	j = xcalloc(1, sizeof(*j));
	j->data = evbuffer_new();
	evbuffer_add_buffer(j->data, tr.buf);
	j->hour = hour;
	j->prune = hour != tr.flushed_hour;
	tr.flushed_hour = hour;
	tr.writing = 1;
	iot_submit(tr.iot, trace_write_work, trace_write_done, j, NULL);
}

static void
trace_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	if (tr.dropped > 0) {
		log_warn("trace: %lu record(s) dropped: the disk did not keep up", tr.dropped);
		tr.dropped = 0;
	}
	trace_flush();
}

int
trace_open(struct event_base *base, const char *dir, int keep_days, long max_mb, const char *role, int sessions,
    char *err, size_t errsize)
{
	struct timeval	 second = { 1, 0 };

	if (util_mkdirs(dir, 0750) == -1) {
		snprintf(err, errsize, "trace: cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	tr.dir = xstrdup(dir);
	util_strlcpy(tr.role, role, sizeof(tr.role));
	tr.keep_days = keep_days;
	tr.max_mb = max_mb;
	tr.sessions = sessions;
	tr.buf = evbuffer_new();
	tr.iot = iot_new(base);
	tr.timer = event_new(base, -1, EV_PERSIST, trace_timer_cb, NULL);
	event_add(tr.timer, &second);
	tr.on = 1;
	return 0;
}

void
trace_memory(void)
{
	tr.on = tr.memory = tr.sessions = 1;
}

void
trace_close(void)
{
	struct trace_job	 j;

	if (!tr.on || tr.memory)
		return;
	if (tr.timer != NULL)
		event_free(tr.timer);
	tr.timer = NULL;
	if (tr.iot != NULL)
		iot_free(tr.iot);		/* waits for a write that is out */
	tr.iot = NULL;
	memset(&j, 0, sizeof(j));
	j.data = tr.buf;
	j.hour = trace_hour_of(time(NULL));
	(void)trace_write_work(&j);
	if (tr.fd != -1)
		close(tr.fd);
	tr.fd = -1;
	tr.on = 0;
}

/* trace_escape - text made printable (see the format above) into out. */
static void
trace_escape(const char *text, char *out, size_t size)
{
	size_t	 o = 0;

	for (; *text != '\0' && o + 5 < size; text++) {
		unsigned char	 c = (unsigned char)*text;

		if (c < 0x20 || c >= 0x7f || c == '\\') {
			snprintf(out + o, size - o, "\\x%02x", c);
			o += 4;
		} else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

static void
trace_unescape(char *s)
{
	char	*o = s;

	for (; *s != '\0'; s++) {
		unsigned	 c;

		if (s[0] == '\\' && s[1] == 'x' && sscanf(s + 2, "%2x", &c) == 1 && s[2] != '\0' && s[3] != '\0') {
			*o++ = (char)c;
			s += 3;
		} else
			*o++ = *s;
	}
	*o = '\0';
}

static void
trace_keep(char kind, const char *id, enum trace_event ev, const char *text)
{
	struct trace_rec	*r;

	if (tr.nmem == tr.capmem) {
		tr.capmem = tr.capmem ? tr.capmem * 2 : 64;
		tr.mem = xrealloc(tr.mem, tr.capmem * sizeof(*tr.mem));
	}
	r = &tr.mem[tr.nmem++];
	memset(r, 0, sizeof(*r));
	r->time = util_now();
	r->kind = kind;
	util_strlcpy(r->id, id, sizeof(r->id));
	r->ev = ev;
	r->text = xstrdup(text);
	util_strlcpy(r->source, "simulate", sizeof(r->source));
}

static void
trace_add(char kind, const char *id, enum trace_event ev, const char *fmt, va_list ap)
{
	char	 text[TRACE_TEXT_MAX], clean[TRACE_TEXT_MAX * 4 + 1];
	double	 now;

	vsnprintf(text, sizeof(text), fmt, ap);
	if (tr.memory) {
		trace_keep(kind, id, ev, text);
		return;
	}
	if (evbuffer_get_length(tr.buf) > TRACE_BUFFER_MAX) {
		tr.dropped++;
		return;
	}
	trace_escape(text, clean, sizeof(clean));
	now = util_now();
	evbuffer_add_printf(tr.buf, "%.3f %c %s %s %s\n", now, kind, id, trace_names[ev], clean);
}

void
trace_session(uint64_t sid, enum trace_event ev, const char *fmt, ...)
{
	va_list	 ap;
	char	 id[24];

	if (!tr.on || !tr.sessions || ev >= TR_COUNT)
		return;
	snprintf(id, sizeof(id), "%016" PRIX64, sid);
	va_start(ap, fmt);
	trace_add('S', id, ev, fmt, ap);
	va_end(ap);
}

void
trace_message(const char *qid, enum trace_event ev, const char *fmt, ...)
{
	va_list	 ap;

	if (!tr.on || ev >= TR_COUNT || qid == NULL || *qid == '\0' || strchr(qid, ' ') != NULL)
		return;
	va_start(ap, fmt);
	trace_add('M', qid, ev, fmt, ap);
	va_end(ap);
}

/* Reading -------------------------------------------------------------------------------------------------- */

const char *
trace_field(const char *text, const char *key, char *buf, size_t size)
{
	size_t		 kl = strlen(key), n;
	const char	*p = text;

	while ((p = strstr(p, key)) != NULL) {
		if ((p == text || p[-1] == ' ') && p[kl] == '=') {
			p += kl + 1;
			n = strcspn(p, " ");
			if (n >= size)
				n = size - 1;
			memcpy(buf, p, n);
			buf[n] = '\0';
			return buf;
		}
		p += kl;
	}
	return NULL;
}

const char *
trace_rest(const char *text, const char *key)
{
	size_t		 kl = strlen(key);
	const char	*p = text;

	while ((p = strstr(p, key)) != NULL) {
		if ((p == text || p[-1] == ' ') && p[kl] == '=')
			return p + kl + 1;
		p += kl;
	}
	return NULL;
}

static enum trace_event
trace_event_of(const char *name)
{
	int	 i;

	for (i = 0; i < TR_COUNT; i++)
		if (strcmp(trace_names[i], name) == 0)
			return (enum trace_event)i;
	return TR_COUNT;
}

/* trace_parse - one record line into r (text unescaped, owned). 0, or -1 for a line that is not a record. */
static int
trace_parse(char *line, struct trace_rec *r, const char *source)
{
	char	*f[5], *save = NULL, *p = line;
	int	 i;

	line[strcspn(line, "\n")] = '\0';
	if (line[0] == '#' || line[0] == '\0')
		return -1;
	for (i = 0; i < 4; i++) {
		f[i] = strtok_r(i == 0 ? p : NULL, " ", &save);
		if (f[i] == NULL)
			return -1;
	}
	f[4] = strtok_r(NULL, "", &save);
	memset(r, 0, sizeof(*r));
	r->time = strtod(f[0], NULL);
	if ((f[1][0] != 'S' && f[1][0] != 'M') || f[1][1] != '\0' || strlen(f[2]) >= sizeof(r->id))
		return -1;
	if ((r->ev = trace_event_of(f[3])) == TR_COUNT)
		return -1;
	r->kind = f[1][0];
	util_strlcpy(r->id, f[2], sizeof(r->id));
	r->text = xstrdup(f[4] ? f[4] : "");
	trace_unescape(r->text);
	util_strlcpy(r->source, source, sizeof(r->source));
	return 0;
}

struct trace_ids {
	char	 ids[64][24];
	size_t	 n;
};

static int
trace_ids_has(const struct trace_ids *t, const char *id)
{
	size_t	 i;

	for (i = 0; i < t->n; i++)
		if (strcmp(t->ids[i], id) == 0)
			return 1;
	return 0;
}

static void
trace_ids_add(struct trace_ids *t, const char *id)
{
	if (!trace_ids_has(t, id) && t->n < sizeof(t->ids) / sizeof(t->ids[0]))
		util_strlcpy(t->ids[t->n++], id, sizeof(t->ids[0]));
}

/* trace_scan - one pass over every file of dir; records of ids go to out; links between a session and the
 * messages it queued add the other side's ID to ids. Returns the number of IDs added, or -1. */
static int
trace_scan(const char *dir, struct trace_ids *ids, struct trace_rec **out, size_t *n, size_t *cap, int collect)
{
	DIR		*d;
	struct dirent	*de;
	char		 path[4200], line[TRACE_LINE_MAX], source[48], qid[32];
	size_t		 before = ids->n, files = 0;
	FILE		*f;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL && files++ < TRACE_FILES_MAX) {
		size_t	 l = strlen(de->d_name);

		if (l < 5 || strcmp(de->d_name + l - 4, ".trc") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		util_strlcpy(source, "?", sizeof(source));
		while (fgets(line, sizeof(line), f) != NULL) {
			struct trace_rec	 r;
			char			*sp;

			if (strncmp(line, "#luamta-trace ", 14) == 0) {
				if ((sp = strchr(line + 14, ' ')) != NULL) {
					util_strlcpy(source, sp + 1, sizeof(source));
					source[strcspn(source, "\n")] = '\0';
				}
				continue;
			}
			if (strchr(line, '\n') == NULL) {	/* longer than any record we write: skip the rest */
				int	 c;

				while ((c = fgetc(f)) != EOF && c != '\n')
					;
				continue;
			}
			/* cheap test before parsing: is one of the IDs on the line at all? */
			{
				size_t	 i;
				int	 hit = 0;

				for (i = 0; i < ids->n && !hit; i++)
					hit = strstr(line, ids->ids[i]) != NULL;
				if (!hit)
					continue;
			}
			if (trace_parse(line, &r, source) == -1)
				continue;
			if (!trace_ids_has(ids, r.id)) {
				/* a session record that names one of the messages: "queued qid=..." */
				if (r.kind == 'S' && r.ev == TR_QUEUED && trace_field(r.text, "qid", qid, sizeof(qid)) &&
				    trace_ids_has(ids, qid))
					trace_ids_add(ids, r.id);
				free(r.text);
				continue;
			}
			if (r.kind == 'S' && r.ev == TR_QUEUED && trace_field(r.text, "qid", qid, sizeof(qid)))
				trace_ids_add(ids, qid);
			if (!collect) {
				free(r.text);
				continue;
			}
			if (*n == *cap) {
				*cap = *cap ? *cap * 2 : 64;
				*out = xrealloc(*out, *cap * sizeof(**out));
			}
			(*out)[(*n)++] = r;
		}
		fclose(f);
	}
	closedir(d);
	return (int)(ids->n - before);
}

static int
trace_cmp(const void *a, const void *b)
{
	const struct trace_rec	*x = a, *y = b;

	return x->time < y->time ? -1 : x->time > y->time ? 1 : 0;
}

int
trace_find(const char *dir, const char *id, struct trace_rec **out, size_t *n, char *err, size_t errsize)
{
	struct trace_ids	 ids;
	size_t			 cap = 0;
	int			 added, rounds = 0;

	*out = NULL;
	*n = 0;
	memset(&ids, 0, sizeof(ids));
	trace_ids_add(&ids, id);
	/* Follow the links (session -> its messages -> their session) until nothing new turns up, then read. */
	do {
		if ((added = trace_scan(dir, &ids, out, n, &cap, 0)) == -1) {
			snprintf(err, errsize, "cannot read the traces in %s: %s", dir, strerror(errno));
			return -1;
		}
	} while (added > 0 && ++rounds < 4);
	if (trace_scan(dir, &ids, out, n, &cap, 1) == -1) {
		snprintf(err, errsize, "cannot read the traces in %s: %s", dir, strerror(errno));
		return -1;
	}
	if (*n > 0)	/* nothing found: *out is NULL, which qsort may not get (C11 7.22.5) */
		qsort(*out, *n, sizeof(**out), trace_cmp);
	return 0;
}

void
trace_take(struct trace_rec **out, size_t *n)
{
	*out = tr.mem;
	*n = tr.nmem;
	tr.mem = NULL;
	tr.nmem = tr.capmem = 0;
	if (*n > 0)	/* nothing recorded: *out is NULL, which qsort may not get */
		qsort(*out, *n, sizeof(**out), trace_cmp);
}

void
trace_free(struct trace_rec *r, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(r[i].text);
	free(r);
}
