/*
 * queue_file.c - the envelope and the state lines of a queued message, as text (the format is in
 * queue_file.h). Pure: it never touches a file, never logs, and reports a failed allocation instead of
 * aborting, so that it links alone into its fuzz target. spool.c reads and writes the files with it.
 *	qf_env_parse()		envelope text -> struct qf_env
 *	qf_env_format()		struct qf_env -> envelope text
 *	qf_state_parse()	state lines -> the status of each recipient
 *	qf_state_line()		one recipient's state line
 *	qf_state_event()	an attempt or warned line
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_file.h"

/* qf_line - the next LF-terminated line of buf from *pos; NULL at the end or when a line has no LF. */
static const char *
qf_line(const char *buf, size_t len, size_t *pos, size_t *linelen)
{
	const char	*start = buf + *pos, *nl;

	if (*pos >= len)
		return NULL;
	if ((nl = memchr(start, '\n', len - *pos)) == NULL)
		return NULL;
	*linelen = (size_t)(nl - start);
	*pos += *linelen + 1;
	return start;
}

static void
qf_copy(char *dst, size_t size, const char *p, size_t n)
{
	if (n >= size)
		n = size - 1;
	memcpy(dst, p, n);
	dst[n] = '\0';
}

/* qf_is - the line is word alone or word, a space and a value; the value's length in *vlen (it ends the line). */
static int
qf_is(const char *line, size_t n, const char *word, size_t *vlen)
{
	size_t	 w = strlen(word);

	if (n < w || memcmp(line, word, w) != 0 || (n > w && line[w] != ' '))
		return 0;
	*vlen = n > w ? n - w - 1 : 0;
	return 1;
}

static int
qf_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* qf_xtext_decode - RFC 3461 xtext ("+XX" for octets outside '!'..'~', '+' and '='); a bad escape stays as is. */
static void
qf_xtext_decode(char *dst, size_t size, const char *p, size_t n)
{
	size_t	 i, o = 0;

	for (i = 0; i < n && o + 1 < size; i++) {
		int	 hi, lo;

		if (p[i] == '+' && i + 2 < n && (hi = qf_hexval((unsigned char)p[i + 1])) >= 0 &&
		    (lo = qf_hexval((unsigned char)p[i + 2])) >= 0 && (hi || lo)) {
			dst[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else
			dst[o++] = p[i];
	}
	dst[o] = '\0';
}

static int
qf_parse_fail(struct qf_env *env, char *err, size_t errsize, const char *why)
{
	snprintf(err, errsize, "%s", why);
	qf_env_free(env);
	return -1;
}

int
qf_env_parse(const char *buf, size_t len, struct qf_env *env, char *err, size_t errsize)
{
	const char	*line, *v;
	size_t		 pos = 0, n, vl, cap = 0;
	int		 ended = 0;

	memset(env, 0, sizeof(*env));
	line = qf_line(buf, len, &pos, &n);
	if (line == NULL || n != strlen(QF_MAGIC) || memcmp(line, QF_MAGIC, n) != 0)
		return qf_parse_fail(env, err, errsize, "not a luamta queue file");
	while (!ended && pos < QF_ENV_MAX && (line = qf_line(buf, len, &pos, &n)) != NULL) {
		if (memchr(line, '\0', n) != NULL)
			return qf_parse_fail(env, err, errsize, "envelope holds a NUL");
		v = line + n;	/* the value, once a qf_is() below matched */
		if (n == 3 && memcmp(line, "end", 3) == 0)
			ended = 1;
		else if (qf_is(line, n, "id", &vl))
			qf_copy(env->id, sizeof(env->id), v - vl, vl);
		else if (qf_is(line, n, "time", &vl)) {
			char	 num[64];

			qf_copy(num, sizeof(num), v - vl, vl);
			env->time = strtod(num, NULL);
		} else if (qf_is(line, n, "client", &vl)) {
			char		 c[128], *sp;

			qf_copy(c, sizeof(c), v - vl, vl);
			if ((sp = strrchr(c, ' ')) != NULL) {
				*sp++ = '\0';
				env->client_port = atoi(sp);
			}
			qf_copy(env->client_ip, sizeof(env->client_ip), c, strlen(c));
		} else if (qf_is(line, n, "helo", &vl))
			qf_copy(env->helo, sizeof(env->helo), v - vl, vl);
		else if (qf_is(line, n, "proto", &vl))
			qf_copy(env->proto, sizeof(env->proto), v - vl, vl);
		else if (qf_is(line, n, "auth", &vl))
			qf_xtext_decode(env->auth, sizeof(env->auth), v - vl, vl);
		else if (qf_is(line, n, "size", &vl)) {
			char	 num[32], *end;

			qf_copy(num, sizeof(num), v - vl, vl);
			env->size = strtoull(num, &end, 10);
			env->has_size = end != num && *end == '\0';
			if (!env->has_size)
				env->size = 0;
		} else if (qf_is(line, n, "sender", &vl))
			qf_copy(env->sender, sizeof(env->sender), v - vl, vl);
		else if (qf_is(line, n, "param", &vl)) {
			if (vl == 13 && memcmp(v - vl, "BODY=8BITMIME", 13) == 0)
				env->body_8bit = 1;
			else if (vl == 8 && memcmp(v - vl, "SMTPUTF8", 8) == 0)
				env->smtputf8 = 1;
		} else if (qf_is(line, n, "rcpt", &vl)) {
			char	*r;

			if (env->nrcpts == QF_RCPTS_MAX)
				return qf_parse_fail(env, err, errsize, "envelope has too many recipients");
			if (env->nrcpts == cap) {
				size_t	 ncap = cap ? cap * 2 : 8;
				char	**p = realloc(env->rcpts, ncap * sizeof(*p));

				if (p == NULL)
					return qf_parse_fail(env, err, errsize, "out of memory");
				env->rcpts = p;
				cap = ncap;
			}
			if ((r = malloc(vl + 1)) == NULL)
				return qf_parse_fail(env, err, errsize, "out of memory");
			qf_copy(r, vl + 1, v - vl, vl);
			env->rcpts[env->nrcpts++] = r;
		}
		/* Other lines (later additions) are kept in the file and ignored here. */
	}
	if (!ended)
		return qf_parse_fail(env, err, errsize, "envelope has no end line");
	if (env->nrcpts == 0)
		return qf_parse_fail(env, err, errsize, "envelope has no recipient");
	if (strlen(env->id) != QUEUEID_LEN)
		return qf_parse_fail(env, err, errsize, "envelope has no valid id");
	env->body_offset = pos;
	return 0;
}

void
qf_env_free(struct qf_env *env)
{
	size_t	 i;

	for (i = 0; i < env->nrcpts; i++)
		free(env->rcpts[i]);
	free(env->rcpts);
	env->rcpts = NULL;
	env->nrcpts = 0;
}

/* The envelope being formatted: a growing string, or failed. */
struct qf_out {
	char		*s;
	size_t		 len, cap;
	int		 failed;
};

static void
qf_add(struct qf_out *o, const char *p, size_t n)
{
	if (o->failed)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t	 cap = o->cap ? o->cap : 512;
		char	*s;

		while (cap < o->len + n + 1)
			cap *= 2;
		if ((s = realloc(o->s, cap)) == NULL) {
			o->failed = 1;
			return;
		}
		o->s = s;
		o->cap = cap;
	}
	memcpy(o->s + o->len, p, n);
	o->len += n;
	o->s[o->len] = '\0';
}

/* qf_field - "word value\n"; 0, or -1 when the value cannot be one line. */
static int
qf_field(struct qf_out *o, const char *word, const char *value)
{
	if (strpbrk(value, "\r\n") != NULL)
		return -1;
	qf_add(o, word, strlen(word));
	qf_add(o, " ", 1);
	qf_add(o, value, strlen(value));
	qf_add(o, "\n", 1);
	return 0;
}

static void
qf_xtext_add(struct qf_out *o, const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char	 c = (unsigned char)*s;
		char		 e[3];

		if (c < '!' || c > '~' || c == '+' || c == '=') {
			e[0] = '+';
			e[1] = hex[c >> 4];
			e[2] = hex[c & 15];
			qf_add(o, e, 3);
		} else
			qf_add(o, (const char *)&c, 1);
	}
}

int
qf_env_format(const struct qf_env *env, char **out, size_t *outlen, char *err, size_t errsize)
{
	struct qf_out	 o;
	char		 num[128];
	size_t		 i;
	int		 bad = 0;

	memset(&o, 0, sizeof(o));
	*out = NULL;
	*outlen = 0;
	if (env->nrcpts == 0) {
		snprintf(err, errsize, "no recipient");
		return -1;
	}
	qf_add(&o, QF_MAGIC "\n", strlen(QF_MAGIC) + 1);
	bad |= qf_field(&o, "id", env->id);
	snprintf(num, sizeof(num), "%.6f", env->time);
	bad |= qf_field(&o, "time", num);
	snprintf(num, sizeof(num), "%.64s %d", env->client_ip, env->client_port);
	bad |= qf_field(&o, "client", num);
	bad |= qf_field(&o, "helo", env->helo);
	bad |= qf_field(&o, "proto", env->proto);
	if (env->auth[0] != '\0') {
		qf_add(&o, "auth ", 5);
		qf_xtext_add(&o, env->auth);
		qf_add(&o, "\n", 1);
	}
	snprintf(num, sizeof(num), "%llu", env->size);
	bad |= qf_field(&o, "size", num);
	bad |= qf_field(&o, "sender", env->sender);
	if (env->body_8bit)
		qf_add(&o, "param BODY=8BITMIME\n", 20);
	if (env->smtputf8)
		qf_add(&o, "param SMTPUTF8\n", 15);
	for (i = 0; i < env->nrcpts; i++)
		bad |= qf_field(&o, "rcpt", env->rcpts[i]);
	qf_add(&o, "end\n", 4);
	if (bad || o.failed) {
		snprintf(err, errsize, "%s", o.failed ? "out of memory" : "an envelope field holds CR or LF");
		free(o.s);
		return -1;
	}
	*out = o.s;
	*outlen = o.len;
	return 0;
}

/* State lines ------------------------------------------------------------------------------------------------ */

static const struct {
	const char		*word;
	enum qf_rcpt_state	 state;
} qf_states[] = {
	{ "delivered", QF_DELIVERED }, { "bounced", QF_BOUNCED }, { "deferred", QF_DEFERRED }, { "held", QF_HELD },
};

/* qf_state_one - one complete line (n octets, no LF). 0 if it has a known shape, -1 if not, -2 no memory. */
static int
qf_state_one(struct qf_state *st, const char *line, size_t n)
{
	size_t			 i, k, idx = 0, wl;
	struct qf_rcpt_status	*r;
	char			*copy;

	if (memchr(line, '\0', n) != NULL)
		return -1;
	if (n > 8 && memcmp(line, "attempt ", 8) == 0) {
		st->attempts++;
		return 0;
	}
	if (n > 7 && memcmp(line, "warned ", 7) == 0) {
		st->warned = 1;
		return 0;
	}
	for (i = 0; i < n && line[i] >= '0' && line[i] <= '9'; i++) {
		if (idx > QF_RCPTS_MAX)
			return -1;
		idx = idx * 10 + (size_t)(line[i] - '0');
	}
	if (i == 0 || i == n || line[i] != ' ' || idx >= st->nrcpts)
		return -1;
	i++;
	for (k = 0; k < sizeof(qf_states) / sizeof(qf_states[0]); k++) {
		wl = strlen(qf_states[k].word);
		if (n - i >= wl && memcmp(line + i, qf_states[k].word, wl) == 0 && (n - i == wl || line[i + wl] == ' '))
			break;
	}
	if (k == sizeof(qf_states) / sizeof(qf_states[0]))
		return -1;
	if ((copy = malloc(n - i + 1)) == NULL)
		return -2;
	memcpy(copy, line + i, n - i);
	copy[n - i] = '\0';
	r = &st->rcpts[idx];
	free(r->last);
	r->last = copy;
	r->detail = copy + wl + (copy[wl] == ' ');
	if (r->state != QF_DELIVERED && r->state != QF_BOUNCED)
		r->state = qf_states[k].state;
	return 0;
}

int
qf_state_parse(const char *buf, size_t len, size_t nrcpts, struct qf_state *st, char *err, size_t errsize)
{
	size_t	 pos = 0, n;
	const char *line;
	int	 rc;

	memset(st, 0, sizeof(*st));
	st->nrcpts = nrcpts;
	if (nrcpts > 0 && (st->rcpts = calloc(nrcpts, sizeof(*st->rcpts))) == NULL) {
		snprintf(err, errsize, "out of memory");
		return -1;
	}
	/* A line without its LF is the tail of an append a crash cut short: it never happened. */
	while ((line = qf_line(buf, len, &pos, &n)) != NULL) {
		if ((rc = qf_state_one(st, line, n)) == -2) {
			snprintf(err, errsize, "out of memory");
			qf_state_free(st);
			return -1;
		}
		if (rc == -1)
			st->bad++;
	}
	return 0;
}

void
qf_state_free(struct qf_state *st)
{
	size_t	 i;

	for (i = 0; i < st->nrcpts && st->rcpts != NULL; i++)
		free(st->rcpts[i].last);
	free(st->rcpts);
	st->rcpts = NULL;
	st->nrcpts = 0;
}

size_t
qf_state_line(char *buf, size_t size, size_t idx, enum qf_rcpt_state state, const char *dsn, const char *text)
{
	char	 clean[QF_TEXT_MAX + 1];
	size_t	 k;
	int	 n;

	if (state == QF_QUEUED || size < 2)
		return 0;
	snprintf(clean, sizeof(clean), "%s", text);
	for (k = 0; clean[k]; k++)
		if ((unsigned char)clean[k] < 0x20 || clean[k] == 0x7f)
			clean[k] = ' ';
	if (state == QF_DELIVERED)
		n = snprintf(buf, size, "%zu delivered %s\n", idx, clean);
	else
		n = snprintf(buf, size, "%zu %s %s %s\n", idx, qf_states[state - 1].word, dsn, clean);
	if (n < 0)
		return 0;
	if ((size_t)n >= size) {	/* cut: keep the line ending */
		buf[size - 2] = '\n';
		return size - 1;
	}
	return (size_t)n;
}

size_t
qf_state_event(char *buf, size_t size, const char *what, double t)
{
	int	 n = snprintf(buf, size, "%s %.0f\n", what, t);

	return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}
