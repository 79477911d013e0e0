/*
 * explain.c - `luamta explain [-c FILE] [--json] ID` (docs/investigating.md): the story of a session
 * or a message, told from its trace records after the fact. explain_render() is also how `luamta simulate` ends,
 * so that what simulate shows before a change and what explain shows after it read the same.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"
#include "explain.h"
#include "lb.h"
#include "trace.h"
#include "util.h"

static void
explain_clock(FILE *f, double t)
{
	time_t		 s = (time_t)t;
	struct tm	 tm;

	gmtime_r(&s, &tm);
	fprintf(f, "  %02d:%02d:%02d.%03d  ", tm.tm_hour, tm.tm_min, tm.tm_sec, (int)((t - (double)s) * 1000) % 1000);
}

static const char *
explain_get(const struct trace_rec *r, const char *key, char *buf, size_t size)
{
	const char	*v = trace_field(r->text, key, buf, size);

	return v ? v : "?";
}

/* explain_line - one record as a sentence. */
static void
explain_line(FILE *f, const struct trace_rec *r)
{
	char		 a[256], b[256], c[256], d[256], e[64];
	const char	*rest;

	explain_clock(f, r->time);
	switch (r->ev) {
	case TR_CONNECT:
		fprintf(f, "connected from %s port %s to %s\n", explain_get(r, "ip", a, sizeof(a)),
		    explain_get(r, "port", b, sizeof(b)), explain_get(r, "listener", c, sizeof(c)));
		break;
	case TR_TLS:
		fprintf(f, "TLS started: %s\n", r->text);
		break;
	case TR_AUTH:
		if (strncmp(r->text, "failed", 6) == 0)
			fprintf(f, "AUTH failed for user %s\n", explain_get(r, "user", a, sizeof(a)));
		else
			fprintf(f, "authenticated as %s\n", explain_get(r, "user", a, sizeof(a)));
		break;
	case TR_CMD:
		fprintf(f, "client: %s\n", r->text);
		break;
	case TR_REPLY:
		fprintf(f, "server: %s\n", r->text);
		break;
	case TR_VERDICT:
		rest = trace_rest(r->text, "reply");
		fprintf(f, "rule %s decided at %s: %s%s%s\n", explain_get(r, "rule", a, sizeof(a)),
		    explain_get(r, "stage", b, sizeof(b)), explain_get(r, "verdict", c, sizeof(c)),
		    rest ? " -> " : "", rest ? rest : "");
		break;
	case TR_RULE:
		fprintf(f, "a rule logged: %s\n", r->text);
		break;
	case TR_DNS:
		rest = trace_rest(r->text, "records");
		fprintf(f, "DNS %s %s: %s%s%s (%s, ttl %s)\n", explain_get(r, "type", a, sizeof(a)),
		    explain_get(r, "name", b, sizeof(b)), explain_get(r, "result", c, sizeof(c)),
		    rest && *rest ? " " : "", rest ? rest : "",
		    strcmp(explain_get(r, "cached", e, sizeof(e)), "1") == 0 ? "from the cache" : "from the network",
		    explain_get(r, "ttl", d, sizeof(d)));
		break;
	case TR_TAG:
		fprintf(f, "a rule tagged the session: %s\n", r->text);
		break;
	case TR_QUEUED:
		fprintf(f, "queued as %s: from=<%s>, %s recipient(s), %s octets\n", explain_get(r, "qid", a, sizeof(a)),
		    trace_field(r->text, "from", b, sizeof(b)) ? b : "", explain_get(r, "nrcpt", c, sizeof(c)),
		    explain_get(r, "size", d, sizeof(d)));
		break;
	case TR_CLOSE:
		fprintf(f, "disconnected after %s message(s) and %s error reply(s)\n",
		    explain_get(r, "messages", a, sizeof(a)), explain_get(r, "errors", b, sizeof(b)));
		break;
	case TR_ATTEMPT:
		rest = trace_rest(r->text, "reply");
		fprintf(f, "to=<%s>: %s via %s after %s s (dsn %s)%s%s\n", explain_get(r, "to", a, sizeof(a)),
		    explain_get(r, "status", b, sizeof(b)), explain_get(r, "relay", c, sizeof(c)),
		    explain_get(r, "delay", d, sizeof(d)), explain_get(r, "dsn", e, sizeof(e)), rest ? ": " : "",
		    rest ? rest : "");
		break;
	case TR_REMOVED:
		fprintf(f, "removed from the queue (%s)\n", r->text);
		break;
	default:
		fprintf(f, "%s %s\n", trace_event_name(r->ev), r->text);
		break;
	}
}

static void
explain_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		unsigned char	 c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

void
explain_render(FILE *f, const struct trace_rec *recs, size_t n, int json)
{
	size_t		 i, j;
	char		 seen[64][24];
	size_t		 nseen = 0;

	if (json) {
		fputs("{\"records\":[", f);
		for (i = 0; i < n; i++) {
			fprintf(f, "%s\n{\"time\":%.3f,\"kind\":\"%s\",\"id\":", i ? "," : "", recs[i].time,
			    recs[i].kind == 'S' ? "session" : "message");
			explain_json_string(f, recs[i].id);
			fputs(",\"event\":", f);
			explain_json_string(f, trace_event_name(recs[i].ev));
			fputs(",\"text\":", f);
			explain_json_string(f, recs[i].text);
			fputs(",\"source\":", f);
			explain_json_string(f, recs[i].source);
			fputc('}', f);
		}
		fputs("\n]}\n", f);
		return;
	}
	/* Sessions first, then messages, each in time order: a story per ID. */
	for (j = 0; j < 2; j++)
		for (i = 0; i < n; i++) {
			const struct trace_rec	*r = &recs[i];
			size_t			 k;

			if (r->kind != (j == 0 ? 'S' : 'M'))
				continue;
			for (k = 0; k < nseen && strcmp(seen[k], r->id) != 0; k++)
				;
			if (k < nseen || nseen == sizeof(seen) / sizeof(seen[0]))
				continue;
			util_strlcpy(seen[nseen++], r->id, sizeof(seen[0]));
			{
				time_t		 t = (time_t)r->time;
				struct tm	 tm;
				size_t		 m;

				gmtime_r(&t, &tm);
				fprintf(f, "%s %s, %s, %04d-%02d-%02d (UTC)\n", r->kind == 'S' ? "Session" : "Message",
				    r->id, r->source, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
				for (m = i; m < n; m++)
					if (recs[m].kind == r->kind && strcmp(recs[m].id, r->id) == 0)
						explain_line(f, &recs[m]);
			}
		}
}

static int
explain_usage(const char *why)
{
	fprintf(stderr, "luamta explain: %s\nusage: luamta explain [-c FILE] [--json] ID\n", why);
	return 2;
}

int
explain_main(const char *cfgpath, int argc, char **argv)
{
	struct lb_gen		*g;
	const struct config	*cfg;
	struct trace_rec	*recs;
	const char		*id = NULL;
	char			*errors = NULL, *warnings = NULL, err[512];
	size_t			 n, i;
	int			 json = 0, status;

	for (i = 0; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "-c") == 0)
			i++;
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-')
			return explain_usage("unknown option");
		else if (id != NULL)
			return explain_usage("one ID at a time");
		else
			id = argv[i];
	}
	if (id == NULL)
		return explain_usage("which session or queue ID?");
	for (i = 0; id[i] != '\0'; i++)
		if (!isalnum((unsigned char)id[i]))
			break;
	if (id[i] != '\0' || i < 8 || i > 23)
		return explain_usage("an ID is the session ID or queue ID of a log line (8 to 23 letters and digits)");
	if ((g = lb_gen_new(cfgpath, LB_ROLE_CHECK, &errors, &warnings)) == NULL) {
		fprintf(stderr, "%s\n", errors);
		free(errors);
		free(warnings);
		return 2;
	}
	free(warnings);
	cfg = lb_gen_config(g);
	/* Every way out below frees what it found: an exit with memory still held is a leak to LSan. */
	if (trace_find(cfg->trace_dir, id, &recs, &n, err, sizeof(err)) == -1) {
		fprintf(stderr, "luamta explain: %s\n", err);
		status = 1;
	} else if (n == 0) {
		fprintf(stderr, "luamta explain: no trace of %s in %s: unknown, or older than trace.keep_days (%d days)\n",
		    id, cfg->trace_dir, cfg->trace_keep_days);
		status = 1;
	} else {
		explain_render(stdout, recs, n, json);
		status = 0;
	}
	trace_free(recs, n);
	lb_gen_release(g);
	return status;
}
