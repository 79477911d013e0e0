/*
 * scenario.c - luamta test: policy scenarios through the real session code (docs/rules.md, "Policy tests").
 * Each scenario runs in a child process of its own, so that one scenario's policy state, DNS cache and
 * session numbering never leak into the next: the child lays the scenario's config over the configuration
 * (lb_set_scenario), answers DNS only from the scenario's fixtures (dns_set_answerer; an unlisted name is
 * NXDOMAIN), plays the session with sim_run() (simulate.c), and hands its verdict to the parent over a pipe.
 * The parent prints TAP (and JUnit XML with --junit) and exits 0 only when every scenario passed.
 * The scenario format itself belongs to lua/luamta/scenario.lua: this file only reads its flat form.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cfg.h"
#include "dns.h"
#include "lb.h"
#include "log.h"
#include "scenario.h"
#include "simulate.h"
#include "util.h"

#define SCN_MAX		4096		/* scenarios in one run */
#define SCN_REPORT_MAX	(64 * 1024)	/* what a child may tell the parent */
#define SCN_DIAG_LINES	80		/* transcript and log lines shown for a failed scenario */
#define SCN_CHILD_LIMIT	90		/* seconds before a child that hangs is killed */

struct scn_fixture {
	enum dns_type	 type;
	char		*name;
	enum dns_status	 status;
	size_t		 n;
	char		*rec[DNS_RECORDS_MAX];
	int		 pref[DNS_RECORDS_MAX];
	unsigned	 ttl;
};

struct scn_item {
	char		*path;
	const char	*config;	/* the configuration it runs against */
};

struct scn_result {
	char		*name;
	char		*failures;	/* lines, or "" */
	char		*diag;		/* transcript and log of a failed scenario */
	int		 passed;
};

static struct scn_fixture	*scn_fixtures;
static size_t			 scn_nfixtures;

/* scn_path - "a/b" in new memory. */
static char *
scn_path(const char *a, const char *b)
{
	size_t	 n = strlen(a) + strlen(b) + 2;
	char	*p = xmalloc(n);

	snprintf(p, n, "%s/%s", a, b);
	return p;
}

static char *
scn_strndup(const char *s, size_t n)
{
	char	*p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/*
 * scn_answer - the fixture for a question. A name the scenario lists with other types only exists, so it has no
 * data of this type (NODATA), as a real zone answers; a name it does not list at all is -1 (NXDOMAIN).
 */
static int
scn_answer(enum dns_type type, const char *name, struct dns_result *out)
{
	size_t	 i, j;
	int	 exists = 0;

	for (i = 0; i < scn_nfixtures; i++) {
		struct scn_fixture	*fx = &scn_fixtures[i];

		if (strcmp(fx->name, name) != 0)
			continue;
		if (fx->type != type) {
			exists |= fx->status == DNS_OK || fx->status == DNS_NODATA;
			continue;
		}
		out->status = fx->status;
		out->ttl = fx->ttl;
		for (j = 0; j < fx->n; j++) {
			out->rec[j] = xstrdup(fx->rec[j]);
			out->pref[j] = fx->pref[j];
		}
		out->n = fx->n;
		return 0;
	}
	if (!exists)
		return -1;
	out->status = DNS_NODATA;
	out->ttl = 300;
	return 0;
}

static int
scn_type(const char *s, enum dns_type *t)
{
	int	 i;

	for (i = 0; i < DNS_T_COUNT; i++)
		if (strcmp(dns_type_name((enum dns_type)i), s) == 0) {
			*t = (enum dns_type)i;
			return 0;
		}
	return -1;
}

static enum dns_status
scn_status(const char *s)
{
	if (strcmp(s, "nxdomain") == 0)
		return DNS_NXDOMAIN;
	if (strcmp(s, "nodata") == 0)
		return DNS_NODATA;
	if (strcmp(s, "timeout") == 0)
		return DNS_TIMEOUT;
	if (strcmp(s, "servfail") == 0)
		return DNS_SERVFAIL;
	return DNS_OK;
}

static const char *
scn_field(lua_State *L, int t, const char *key)
{
	const char	*v;

	lua_getfield(L, t, key);
	v = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
	lua_pop(L, 1);		/* the string stays alive: it is still referenced by the table */
	return v;
}

/* scn_read - the flat scenario on top of L into sc and the fixtures. */
static void
scn_read(lua_State *L, struct sim_script *sc)
{
	int	 t = lua_gettop(L), i, n;

	memset(sc, 0, sizeof(*sc));
	sc->ip = scn_field(L, t, "ip");
	sc->helo = scn_field(L, t, "helo");
	sc->auth = scn_field(L, t, "auth");
	sc->from = scn_field(L, t, "mail");
	sc->message_text = scn_field(L, t, "message");
	lua_getfield(L, t, "tls");
	sc->tls = lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, t, "rcpt");
	n = (int)luaL_len(L, -1);
	for (i = 1; i <= n && sc->nto < SIM_RCPTS_MAX; i++) {
		lua_geti(L, -1, i);
		sc->to[sc->nto++] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	lua_getfield(L, t, "dns");
	n = (int)luaL_len(L, -1);
	scn_fixtures = xcalloc((size_t)n + 1, sizeof(*scn_fixtures));
	for (i = 1; i <= n; i++) {
		struct scn_fixture	*fx = &scn_fixtures[scn_nfixtures];
		int			 j, nrec;

		lua_geti(L, -1, i);
		if (scn_type(scn_field(L, -1, "type"), &fx->type) == -1) {
			lua_pop(L, 1);
			continue;
		}
		fx->name = xstrdup(scn_field(L, -1, "name"));
		fx->status = scn_status(scn_field(L, -1, "status"));
		lua_getfield(L, -1, "ttl");
		fx->ttl = (unsigned)lua_tointeger(L, -1);
		lua_pop(L, 1);
		lua_getfield(L, -1, "records");
		lua_getfield(L, -2, "prefs");
		nrec = (int)luaL_len(L, -2);
		for (j = 1; j <= nrec && fx->n < DNS_RECORDS_MAX; j++) {
			lua_geti(L, -2, j);
			lua_geti(L, -2, j);
			fx->rec[fx->n] = xstrdup(lua_tostring(L, -2));
			fx->pref[fx->n] = (int)lua_tointeger(L, -1);
			fx->n++;
			lua_pop(L, 2);
		}
		lua_pop(L, 3);
		scn_nfixtures++;
	}
	lua_pop(L, 1);
}

/* scn_slurp - the whole of f (rewound), NUL-terminated, at most max octets. */
static char *
scn_slurp(FILE *f, size_t max)
{
	char	*buf = xcalloc(1, max + 1);
	size_t	 n;

	fflush(f);
	rewind(f);
	n = fread(buf, 1, max, f);
	buf[n] = '\0';
	return buf;
}

/* scn_push_seen - what the server answered, as luamta.scenario's compare() reads it. */
static void
scn_push_seen(lua_State *L, const struct sim_script *sc, const struct sim_replies *got, const char *log)
{
	const char	*data;
	const char	*p;
	int		 i, ntags = 0;

	lua_newtable(L);
	if (got->reply[SIM_S_CONNECT])
		lua_pushstring(L, got->reply[SIM_S_CONNECT]), lua_setfield(L, -2, "connect");
	if (got->reply[SIM_S_HELO])
		lua_pushstring(L, got->reply[SIM_S_HELO]), lua_setfield(L, -2, "helo");
	if (got->reply[SIM_S_MAIL])
		lua_pushstring(L, got->reply[SIM_S_MAIL]), lua_setfield(L, -2, "mail");
	/* "data" is the reply after the final dot, or the refusal of DATA itself. */
	data = got->reply[SIM_S_MESSAGE];
	if (data == NULL && got->reply[SIM_S_DATA] != NULL && strncmp(got->reply[SIM_S_DATA], "354", 3) != 0)
		data = got->reply[SIM_S_DATA];
	if (data)
		lua_pushstring(L, data), lua_setfield(L, -2, "data");
	lua_newtable(L);
	for (i = 0; i < sc->nto; i++)
		if (got->rcpt[i] != NULL) {
			lua_pushstring(L, got->rcpt[i]);
			lua_seti(L, -2, i + 1);
		}
	lua_setfield(L, -2, "rcpt");
	lua_pushstring(L, sim_stage_name(got->reached == SIM_S_RCPT ? SIM_S_RCPT : got->reached));
	lua_setfield(L, -2, "reached");
	lua_newtable(L);
	for (p = log; (p = strstr(p, ": tag: ")) != NULL; ) {	/* smtp_session.c logs them in a dry run */
		size_t	 n;

		p += strlen(": tag: ");
		n = strcspn(p, "\n");
		lua_pushlstring(L, p, n);
		lua_seti(L, -2, ++ntags);
		p += n;
	}
	lua_setfield(L, -2, "tags");
	lua_pushstring(L, log);
	lua_setfield(L, -2, "log");
}

static void
scn_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = xrealloc(*buf, *cap);
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/*
 * scn_child - run one scenario; the report goes to fd: "P" or "F", the name, then failure lines, a line "--",
 * and the diagnostics. Never returns.
 */
static void
scn_child(const struct scn_item *it, int fd)
{
	lua_State		*L;
	struct sim_script	 sc;
	struct sim_replies	 got;
	struct lb_gen		*g;
	char			*errors = NULL, *warnings = NULL, *log = NULL, *talk = NULL, *rep = NULL;
	size_t			 len = 0, cap = 0;
	FILE			*logf, *talkf;
	const char		*name = it->path;
	int			 nfail = 0, i, n, passed = 0;

	L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", lb_datadir(), lb_datadir());
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	scn_append(&rep, &len, &cap, "F", 1);
	if (luaL_dostring(L, "return (require('luamta.scenario'))") != LUA_OK) {
		scn_append(&rep, &len, &cap, name, strlen(name));
		scn_append(&rep, &len, &cap, "\n", 1);
		scn_append(&rep, &len, &cap, lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
		goto report;
	}
	lua_getfield(L, -1, "load");
	lua_pushstring(L, it->path);
	if (lua_pcall(L, 1, 2, 0) != LUA_OK)
		lua_pushnil(L), lua_insert(L, -2);		/* [mod nil err] */
								/* [mod scn|nil err] */
	if (lua_isnil(L, -2)) {
		scn_append(&rep, &len, &cap, name, strlen(name));
		scn_append(&rep, &len, &cap, "\n", 1);
		scn_append(&rep, &len, &cap, lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
		goto report;
	}
	lua_pop(L, 1);						/* [mod scn] */
	lua_getfield(L, -1, "name");
	name = lua_tostring(L, -1);				/* referenced by scn, which stays on the stack */
	lua_pop(L, 1);
	scn_append(&rep, &len, &cap, name, strlen(name));
	scn_append(&rep, &len, &cap, "\n", 1);
	lua_getfield(L, -2, "flat");
	lua_pushvalue(L, -2);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {			/* [mod scn flat] */
		scn_append(&rep, &len, &cap, lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
		goto report;
	}
	scn_read(L, &sc);

	lb_set_scenario(it->path);
	if ((g = lb_gen_new(it->config, LB_ROLE_WORKER, &errors, &warnings)) == NULL) {
		scn_append(&rep, &len, &cap, "the configuration does not load: ", 33);
		scn_append(&rep, &len, &cap, errors, strlen(errors));
		goto report;
	}
	if ((logf = tmpfile()) == NULL || (talkf = tmpfile()) == NULL) {
		scn_append(&rep, &len, &cap, "cannot make a temporary file", 28);
		goto report;
	}
	log_init("luamta", LOG_L_DEBUG, 0);	/* every rule's answer, as simulate shows it */
	log_set_fd(fileno(logf));
	log_set_role("test");
	dns_set_answerer(scn_answer);
	if (sim_run(g, &sc, &got, talkf) == -1) {
		scn_append(&rep, &len, &cap, "the session could not start", 27);
		goto report;
	}
	log = scn_slurp(logf, SCN_REPORT_MAX);
	talk = scn_slurp(talkf, SCN_REPORT_MAX / 2);

	lua_getfield(L, -3, "compare");				/* [mod scn flat compare] */
	lua_pushvalue(L, -3);
	scn_push_seen(L, &sc, &got, log);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK) {			/* [mod scn flat fails] */
		scn_append(&rep, &len, &cap, lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
		goto report;
	}
	n = (int)luaL_len(L, -1);
	for (i = 1; i <= n; i++) {
		lua_geti(L, -1, i);
		scn_append(&rep, &len, &cap, lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
		scn_append(&rep, &len, &cap, "\n", 1);
		lua_pop(L, 1);
		nfail++;
	}
	if (got.timed_out) {
		scn_append(&rep, &len, &cap, "the session did not finish in time\n", 35);
		nfail++;
	}
	if (nfail == 0) {
		rep[0] = 'P';
		passed = 1;
	} else {
		scn_append(&rep, &len, &cap, "--\n", 3);
		scn_append(&rep, &len, &cap, talk, strlen(talk));
		scn_append(&rep, &len, &cap, log, strlen(log));
	}
report:
	if (len > SCN_REPORT_MAX)
		len = SCN_REPORT_MAX;
	for (i = 0; (size_t)i < len; ) {
		ssize_t	 w = write(fd, rep + i, len - (size_t)i);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		i += (int)w;
	}
	_exit(passed ? 0 : 1);
}

/* scn_run_one - fork the child, read its report, wait for it. */
static void
scn_run_one(const struct scn_item *it, struct scn_result *r)
{
	char	*buf = xcalloc(1, SCN_REPORT_MAX + 1), *nl, *sep;
	size_t	 len = 0;
	ssize_t	 n;
	int	 p[2], status;
	pid_t	 pid;
	time_t	 start = time(NULL);

	memset(r, 0, sizeof(*r));
	if (pipe(p) == -1 || (pid = fork()) == -1) {
		r->name = xstrdup(it->path);
		r->failures = xstrdup("cannot start the scenario: fork failed\n");
		r->diag = xstrdup("");
		free(buf);
		return;
	}
	if (pid == 0) {
		close(p[0]);
		alarm(SCN_CHILD_LIMIT);
		scn_child(it, p[1]);
	}
	close(p[1]);
	while (len < SCN_REPORT_MAX && (n = read(p[0], buf + len, SCN_REPORT_MAX - len)) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)n;
	}
	close(p[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	buf[len] = '\0';
	if (len == 0) {
		r->name = xstrdup(it->path);
		if (WIFSIGNALED(status)) {
			char	 why[128];

			snprintf(why, sizeof(why), "the scenario's process died of signal %d after %lld s\n",
			    WTERMSIG(status), (long long)(time(NULL) - start));
			r->failures = xstrdup(why);
		} else
			r->failures = xstrdup("the scenario's process said nothing\n");
		r->diag = xstrdup("");
		free(buf);
		return;
	}
	r->passed = buf[0] == 'P' && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	nl = strchr(buf + 1, '\n');
	if (nl == NULL)
		nl = buf + len;
	r->name = scn_strndup(buf + 1, (size_t)(nl - buf - 1));
	if (*nl == '\n')
		nl++;
	sep = strstr(nl, "--\n");
	if (sep != NULL) {
		r->failures = scn_strndup(nl, (size_t)(sep - nl));
		r->diag = xstrdup(sep + 3);
	} else {
		r->failures = xstrdup(nl);
		r->diag = xstrdup("");
	}
	if (!r->passed && r->failures[0] == '\0') {
		free(r->failures);
		r->failures = xstrdup("the scenario failed without saying why\n");
	}
	free(buf);
}

/* scn_print_lines - each line of text with prefix, at most max lines. */
static void
scn_print_lines(const char *prefix, const char *text, int max)
{
	int	 lines = 0;

	while (*text != '\0') {
		size_t	 n = strcspn(text, "\n");

		if (lines++ == max) {
			printf("%s(more lines cut)\n", prefix);
			return;
		}
		printf("%s%.*s\n", prefix, (int)n, text);
		text += n;
		if (*text == '\n')
			text++;
	}
}

static void
scn_xml(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char	 c = (unsigned char)*s;

		if (c == '<')
			fputs("&lt;", f);
		else if (c == '>')
			fputs("&gt;", f);
		else if (c == '&')
			fputs("&amp;", f);
		else if (c == '"')
			fputs("&quot;", f);
		else if (c < 0x20 && c != '\n' && c != '\t')
			fputc('?', f);		/* not allowed in XML 1.0 */
		else
			fputc(c, f);
	}
}

static int
scn_junit(const char *path, const struct scn_item *items, const struct scn_result *res, size_t n)
{
	FILE	*f;
	size_t	 i, failed = 0;

	for (i = 0; i < n; i++)
		failed += !res[i].passed;
	if ((f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "luamta test: --junit %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n"
	    "<testsuite name=\"luamta test\" tests=\"%zu\" failures=\"%zu\">\n", n, failed);
	for (i = 0; i < n; i++) {
		fputs("<testcase classname=\"", f);
		scn_xml(f, items[i].path);
		fputs("\" name=\"", f);
		scn_xml(f, res[i].name);
		fputs("\">", f);
		if (!res[i].passed) {
			fputs("<failure message=\"", f);
			scn_xml(f, res[i].failures);
			fputs("\">", f);
			scn_xml(f, res[i].diag);
			fputs("</failure>", f);
		}
		fputs("</testcase>\n", f);
	}
	fputs("</testsuite>\n</testsuites>\n", f);
	return fclose(f) == 0 ? 0 : -1;
}

static int
scn_cmp(const void *a, const void *b)
{
	return strcmp(((const struct scn_item *)a)->path, ((const struct scn_item *)b)->path);
}

/*
 * scn_add - path (a scenario file, or a directory whose *.lua files are scenarios, those starting with '_'
 * left out) against config. 0, or -1 when the path is missing and must not be.
 */
static int
scn_add(struct scn_item *items, size_t *n, const char *path, const char *config, int must)
{
	struct stat	 st;
	DIR		*d;
	struct dirent	*de;
	size_t		 first = *n;

	if (stat(path, &st) == -1) {
		if (must)
			fprintf(stderr, "luamta test: %s: %s\n", path, strerror(errno));
		return must ? -1 : 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (*n == SCN_MAX)
			return -1;
		items[*n].path = xstrdup(path);
		items[(*n)++].config = config;
		return 0;
	}
	if ((d = opendir(path)) == NULL) {
		fprintf(stderr, "luamta test: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		size_t	 l = strlen(de->d_name);

		if (de->d_name[0] == '_' || de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0)
			continue;
		if (*n == SCN_MAX)
			break;
		items[*n].path = scn_path(path, de->d_name);
		items[(*n)++].config = config;
	}
	closedir(d);
	qsort(items + first, *n - first, sizeof(*items), scn_cmp);
	return 0;
}

static int
scn_usage(const char *why)
{
	fprintf(stderr, "luamta test: %s\nusage: luamta test [-c FILE] [--junit FILE] [SCENARIO ...]\n", why);
	return 2;
}

int
scenario_main(const char *cfgpath, int argc, char **argv)
{
	struct scn_item		*items = xcalloc(SCN_MAX, sizeof(*items));
	struct scn_result	*res = NULL;
	const char		*junit = NULL;
	char			*bundled_dir = NULL, *bundled_cfg = NULL, *site = NULL;
	size_t			 n = 0, i, failed = 0;
	int			 explicit_cfg = 0, nargs = 0, status = 2;

	for (i = 0; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < (size_t)argc) {
			explicit_cfg = 1;
			i++;
		} else if (strcmp(argv[i], "--junit") == 0) {
			if (i + 1 == (size_t)argc) {
				status = scn_usage("--junit needs a file");
				goto out;
			}
			junit = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			status = scn_usage("unknown option");
			goto out;
		}
	}
	for (i = 0; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--junit") == 0) {
			i++;
			continue;
		}
		nargs++;
	}
	if (nargs > 0 && access(cfgpath, R_OK) == -1) {
		fprintf(stderr, "luamta test: %s: %s; name the configuration the scenarios run against with -c FILE\n",
		    cfgpath, strerror(errno));
		goto out;
	}
	nargs = 0;
	for (i = 0; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--junit") == 0) {
			i++;
			continue;
		}
		if (scn_add(items, &n, argv[i], cfgpath, 1) == -1)
			goto out;
		nargs++;
	}
	if (nargs == 0) {
		/* The bundled scenarios state the bundled rules' semantics, so they run against the bundled base
		 * configuration, whatever the site's; the site's own scenarios run against the site's file. */
		bundled_dir = scn_path(lb_datadir(), "rules/tests");
		bundled_cfg = scn_path(lb_datadir(), "rules/tests/_base.lua");
		if (scn_add(items, &n, bundled_dir, bundled_cfg, 1) == -1)
			goto out;
		if (access(cfgpath, R_OK) == 0) {
			struct lb_gen	*g;
			char		*errors = NULL, *warnings = NULL;

			g = lb_gen_new(cfgpath, LB_ROLE_CHECK, &errors, &warnings);
			free(warnings);
			if (g == NULL) {
				fprintf(stderr, "%s\n", errors);
				free(errors);
				goto out;
			}
			if (lb_gen_config(g)->rules_dir != NULL) {
				site = scn_path(lb_gen_config(g)->rules_dir, "tests");
				scn_add(items, &n, site, cfgpath, 0);
			}
			lb_gen_release(g);
		} else if (explicit_cfg) {
			fprintf(stderr, "luamta test: %s: %s\n", cfgpath, strerror(errno));
			goto out;
		}
	}
	if (n == 0) {
		fprintf(stderr, "luamta test: no scenarios found\n");
		goto out;
	}
	fflush(stdout);
	res = xcalloc(n, sizeof(*res));
	printf("1..%zu\n", n);
	for (i = 0; i < n; i++) {
		fflush(stdout);
		scn_run_one(&items[i], &res[i]);
		printf("%s %zu - %s\n", res[i].passed ? "ok" : "not ok", i + 1, res[i].name);
		if (!res[i].passed) {
			failed++;
			printf("#   %s\n", items[i].path);
			scn_print_lines("#   ", res[i].failures, SCN_DIAG_LINES);
			scn_print_lines("#     | ", res[i].diag, SCN_DIAG_LINES);
		}
	}
	printf("# %zu passed, %zu failed\n", n - failed, failed);
	fflush(stdout);
	if (junit != NULL && scn_junit(junit, items, res, n) == -1)
		goto out;
	status = failed == 0 ? 0 : 1;
out:
	/* Every way out frees the run: what is still held when main returns is a leak to LSan. */
	for (i = 0; i < n; i++) {
		free(items[i].path);
		if (res != NULL) {
			free(res[i].name);
			free(res[i].failures);
			free(res[i].diag);
		}
	}
	free(items);
	free(res);
	free(bundled_dir);
	free(bundled_cfg);
	free(site);
	return status;
}
