/*
 * lb.c - Lua states ("generations") and stage runs. A generation is built by lua/luamta/engine.lua's boot(),
 * which loads the configuration and the rule modules and then closes the sandbox (no io, no debug, frozen
 * globals). Runs are coroutines of the generation's state with a count hook that stops a rule after LB_BUDGET
 * instructions; a yield ("sleep", seconds) arms a libevent timer and the run resumes from it. Nothing here
 * blocks: a rule that waits yields.
 *	lb_gen_new()/lb_gen_hold()/lb_gen_release()	build, share and free a generation
 *	lb_run_start()/lb_run_cancel()			run a stage; the verdict comes back at once or by callback
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cfg.h"
#include "lb.h"
#include "lb_callout.h"
#include "lb_types.h"
#include "log.h"
#include "util.h"

#define LB_HOOK_STEP	10000			/* instructions between two budget checks */
#define LB_MEM_MAX	(512UL * 1024 * 1024)	/* octets one state may allocate */

struct lb_gen {
	lua_State	*L;		/* owns */
	struct config	 cfg;		/* owns */
	int		 refs;
	unsigned	 number;	/* 1, 2, ... per process, for logs */
	int		 engine_ref;	/* registry: the luamta.engine table */
	int		 run_ref;	/* registry: engine.run */
	unsigned	 stages;	/* bit per enum lb_stage that some rule handles */
	size_t		 mem;		/* octets allocated by L */
};

/* An instruction budget: one per stage run, and one for loading the rule modules. */
struct lb_budget {
	long		 used;		/* instructions so far */
	long		 limit;
	int		 over;		/* spent: every thread raises at its next instruction until the code ends */
	const char	*what;		/* the error message */
};

struct lb_run {
	uint64_t	 id;		/* for asynchronous answers (lb_runs) */
	int		 pending;	/* a C function prepared a wait (lb_run_prepare_wait()); no answer yet */
	int		 yielded;	/* ... and the coroutine has yielded (lb_run_yield()) */
	int		 early;		/* the answer came before the yield: early_nargs results wait on co */
	int		 early_nargs;
	int		 wait_tag;	/* what it waits for (the DNS type), for the waker */
	struct lb_gen	*gen;		/* held */
	lua_State	*co;		/* borrowed from the registry ref below */
	int		 co_ref;	/* registry reference that keeps co alive */
	enum lb_stage	 stage;
	uint64_t	 owner;
	lb_done_fn	*done;
	struct event	*timer;		/* owned; armed while the rule sleeps */
	struct event_base *base;	/* borrowed: the loop the run waits on (lb_run_base()) */
	struct lb_budget budget;
	int		 collect;	/* ended over budget or out of memory: collect garbage when freed */
};

static const char *const lb_stage_names[LB_S_COUNT] = {
	"connect", "helo", "auth", "mail", "rcpt", "data", "message", "close", "route", "auth_attempt", "auth_failed"
};
static unsigned	 lb_generations;
static struct idmap	*lb_runs;	/* id -> run, so that a late answer finds only live runs */
static struct lb_budget	*lb_budget_now;	/* the budget of the Lua code running now; NULL for the library's own */
static struct lb_budget	 lb_load_budget;
static uint64_t		 lb_next_run;

static void	lb_hook(lua_State *, lua_Debug *);
static void	lb_run_free(struct lb_run *);
static int	lb_run_resume(struct lb_run *, int nargs, struct lb_verdict *);

int
lb_directory_password(struct lb_gen *g, const char *name, char *addr, size_t addrsize, char *hash, size_t hashsize)
{
	lua_State	*L = g->L;
	int		 found = -1;

	addr[0] = hash[0] = '\0';
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);		/* [loaded] */
	lua_getfield(L, -1, "luamta");					/* [loaded mta] */
	if (!lua_istable(L, -1)) {
		lua_pop(L, 2);
		return -1;
	}
	lua_getfield(L, -1, "directory");				/* [loaded mta dir] */
	lua_getfield(L, -1, "lookup");					/* [loaded mta dir lookup] */
	lua_pushstring(L, name);
	if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {	/* [loaded mta dir user] */
		lua_getfield(L, -1, "address");
		lua_getfield(L, -2, "password");			/* [.. user address password] */
		if (lua_isstring(L, -2)) {
			util_strlcpy(addr, lua_tostring(L, -2), addrsize);
			if (lua_isstring(L, -1))
				util_strlcpy(hash, lua_tostring(L, -1), hashsize);
			found = 0;
		}
		lua_pop(L, 2);
	}
	lua_pop(L, 4);							/* [] */
	return found;
}

const char *
lb_stage_name(enum lb_stage st)
{
	return st < LB_S_COUNT ? lb_stage_names[st] : "?";
}

const char *
lb_verdict_name(enum lb_verdict_kind k)
{
	static const char *const names[] = { "none", "accept", "reject", "tempfail", "disconnect", "error", "local",
		"bounce", "defer", "relay", "hold" };

	return (size_t)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

static int
lb_is_file(const char *path)
{
	struct stat	 st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A scenario file whose `config` table is laid over the configuration file (luamta test). */
static const char	*lb_overlay;

void
lb_set_scenario(const char *path)
{
	lb_overlay = path;
}

const char *
lb_datadir(void)
{
	static char	 dir[4096];
	const char	*env;
	char		 exe[4096], probe[4200];
	ssize_t		 n;

	if (dir[0] != '\0')
		return dir;
	if ((env = getenv("LUAMTA_DATADIR")) != NULL && *env != '\0') {
		util_strlcpy(dir, env, sizeof(dir));
		return dir;
	}
	/* An uninstalled binary (in the build tree) uses the source tree, so `make && src/luamta run` works. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		snprintf(probe, sizeof(probe), "%s/src/", LUAMTA_BUILDDIR);
		if (strncmp(exe, probe, strlen(probe)) == 0) {
			snprintf(probe, sizeof(probe), "%s/lua/luamta/init.lua", LUAMTA_SRCDIR);
			if (lb_is_file(probe)) {
				util_strlcpy(dir, LUAMTA_SRCDIR, sizeof(dir));
				return dir;
			}
		}
	}
	util_strlcpy(dir, LUAMTA_DATADIR, sizeof(dir));
	return dir;
}

/* lb_alloc - the state's allocator, capped so that one runaway rule cannot take the worker's memory. */
static void *
lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lb_gen	*g = ud;

	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		g->mem -= osize;
		return NULL;
	}
	if (nsize > osize && g->mem + (nsize - osize) > LB_MEM_MAX)
		return NULL;
	ptr = realloc(ptr, nsize);
	if (ptr != NULL)
		g->mem = g->mem - osize + nsize;
	return ptr;
}

/* Every thread of a state shares the main thread's extra space at creation; runs overwrite theirs. */
static struct lb_run **
lb_run_slot(lua_State *L)
{
	return (struct lb_run **)lua_getextraspace(L);
}

uint64_t
lb_run_owner_of(lua_State *L)
{
	struct lb_run	*run = *lb_run_slot(L);

	return run != NULL ? run->owner : 0;
}

/*
 * lb_budget_spent - the running code is over its budget: mark it, make L raise at each of its next instructions
 * (so that a pcall, xpcall, coroutine.resume or load in the rule that catches this error gets no further than
 * its caller's next instruction; other threads raise at their next hook), and raise.
 */
static int
lb_budget_spent(lua_State *L, struct lb_budget *b)
{
	b->over = 1;
	lua_sethook(L, lb_hook, LUA_MASKCOUNT, 1);
	return luaL_error(L, "%s", b->what);
}

/*
 * lb_hook - the count hook of every thread of a state: the main thread gets it when the state is made, stage
 * coroutines when they start, and every coroutine a rule makes inherits it from the thread that made it
 * (lua_newthread() copies the hook). It charges the budget of whatever runs now.
 */
static void
lb_hook(lua_State *L, lua_Debug *ar)
{
	struct lb_budget	*b = lb_budget_now;

	if (b == NULL || !b->over) {
		if (lua_gethookcount(L) != LB_HOOK_STEP) {	/* left at 1 by a spent budget */
			lua_sethook(L, lb_hook, LUA_MASKCOUNT, LB_HOOK_STEP);
			return;
		}
		if (b == NULL)
			return;
		b->used += LB_HOOK_STEP;
		if (b->used <= b->limit)
			return;
	}
	lb_budget_spent(L, b);
}

void
lb_budget_charge(lua_State *L, long n)
{
	struct lb_budget	*b = lb_budget_now;

	if (b == NULL)
		return;
	b->used += n;
	if (b->over || b->used > b->limit)
		lb_budget_spent(L, b);
}

/* core.budget_spent() - is the running code over its budget? (The sandbox's xpcall asks: see engine.lua.) */
static int
lb_core_budget_spent(lua_State *L)
{
	lua_pushboolean(L, lb_budget_now != NULL && lb_budget_now->over);
	return 1;
}

/* core.budget(n) - run what follows (loading a rule module) under a budget of n instructions; core.budget()
 * ends it. Returns whether the budget was spent. */
static int
lb_core_budget(lua_State *L)
{
	int	 over = lb_load_budget.over;

	if (lua_isnoneornil(L, 1)) {
		if (lb_budget_now == &lb_load_budget)
			lb_budget_now = NULL;
		lua_sethook(L, lb_hook, LUA_MASKCOUNT, LB_HOOK_STEP);
		lua_pushboolean(L, over);
		return 1;
	}
	memset(&lb_load_budget, 0, sizeof(lb_load_budget));
	lb_load_budget.limit = (long)luaL_checkinteger(L, 1);
	lb_load_budget.what = "rule module takes too long to load";
	lua_sethook(L, lb_hook, LUA_MASKCOUNT, LB_HOOK_STEP);
	lb_budget_now = &lb_load_budget;
	lua_pushboolean(L, 0);
	return 1;
}

/* luamta.core: the few functions the Lua library needs from C. */
static int
lb_core_sleep(lua_State *L)
{
	lua_Number	 sec = luaL_checknumber(L, 1);
	struct lb_run	*run = *lb_run_slot(L);
	struct timeval	 tv;

	luaL_argcheck(L, sec >= 0 && sec <= 3600, 1, "seconds between 0 and 3600");
	if (run == NULL || run->timer == NULL || lb_run_prepare_wait(L, 0) == 0)
		return luaL_error(L, "mta.sleep: only a stage handler can wait");
	tv.tv_sec = (time_t)sec;
	tv.tv_usec = (suseconds_t)((sec - (double)tv.tv_sec) * 1e6);
	evtimer_add(run->timer, &tv);
	return lb_run_yield(L);		/* lb_timer_cb() resumes with no values */
}

static int
lb_core_log(lua_State *L)
{
	const char	*level = luaL_checkstring(L, 1);
	const char	*msg = luaL_checkstring(L, 2);
	int		 lv = log_level_from_name(level);

	log_msg(lv < 0 ? LOG_L_INFO : (enum log_level)lv, "%s", msg);
	return 0;
}

static int
lb_core_debugging(lua_State *L)
{
	lua_pushboolean(L, log_enabled(LOG_L_DEBUG));
	return 1;
}

static int
lb_core_config(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "luamta.config");	/* [cfg] */
	return 1;
}

static int
lb_core_set_config(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushvalue(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, "luamta.config");
	return 0;
}

static int
lb_core_datadir(lua_State *L)
{
	lua_pushstring(L, lb_datadir());
	return 1;
}

static int
lb_core_open(lua_State *L)
{
	static const luaL_Reg	 fns[] = {
		{ "sleep", lb_core_sleep },
		{ "log", lb_core_log },
		{ "debugging", lb_core_debugging },
		{ "config", lb_core_config },
		{ "set_config", lb_core_set_config },
		{ "datadir", lb_core_datadir },
		{ "budget", lb_core_budget },
		{ "budget_spent", lb_core_budget_spent },
		{ NULL, NULL }
	};

	luaL_newlib(L, fns);					/* [core] */
	lb_dns_register(L);
	lb_session_core(L);
	lb_http_register(L);		/* call outs: lb_http.c, lb_redis.c */
	lb_redis_register(L);
	lb_dkim_register(L);		/* mta.dkim.key: lb_dkim.c */
	return 1;
}

static char *
lb_join_list(lua_State *L, int idx)
{
	luaL_Buffer	 b;
	size_t		 i, n;
	char		*out;

	idx = lua_absindex(L, idx);	/* the buffer below may push onto the stack */
	if (!lua_istable(L, idx))
		return NULL;
	n = lua_rawlen(L, idx);
	if (n == 0)
		return NULL;
	luaL_buffinit(L, &b);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, idx, (lua_Integer)i);
		luaL_addvalue(&b);
		luaL_addchar(&b, '\n');
	}
	luaL_pushresult(&b);
	out = xstrdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	return out;
}

static int
lb_traceback(lua_State *L)
{
	luaL_traceback(L, L, lua_tostring(L, 1), 1);
	return 1;
}

struct lb_gen *
lb_gen_new(const char *cfgpath, enum lb_role role, char **errors, char **warnings)
{
	static const char *const role_names[] = { "check", "worker", "router" };
	struct lb_gen	*g = xcalloc(1, sizeof(*g));
	lua_State	*L;
	char		 err[512], host[256], abspath[PATH_MAX];
	int		 i;
	long		 ncpu;

	*errors = NULL;
	if (warnings)
		*warnings = NULL;
	if ((L = lua_newstate(lb_alloc, g)) == NULL) {
		*errors = xstrdup("cannot create a Lua state");
		free(g);
		return NULL;
	}
	g->L = L;
	*lb_run_slot(L) = NULL;
	lua_sethook(L, lb_hook, LUA_MASKCOUNT, LB_HOOK_STEP);	/* inherited by every thread made from here */
	luaL_openlibs(L);
	lb_string_open(L);
	luaL_requiref(L, "luamta.core", lb_core_open, 0);
	lua_pop(L, 1);
	lb_session_open(L);
	lb_message_open(L);

	lua_getglobal(L, "package");				/* [package] */
	lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", lb_datadir(), lb_datadir());
	lua_setfield(L, -2, "path");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "cpath");
	lua_pop(L, 1);						/* [] */

	lua_pushcfunction(L, lb_traceback);			/* [tb] */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "luamta.engine");
	if (lua_pcall(L, 1, 1, -3) != LUA_OK) {			/* [tb engine|err] */
		lua_pushfstring(L, "cannot load the Lua library from %s: %s", lb_datadir(), lua_tostring(L, -1));
		*errors = xstrdup(lua_tostring(L, -1));
		lua_close(L);
		free(g);
		return NULL;
	}
	lua_getfield(L, -1, "boot");				/* [tb engine boot] */
	lua_pushstring(L, cfgpath);
	lua_newtable(L);					/* [tb engine boot path opts] */
	if (gethostname(host, sizeof(host)) != 0)
		util_strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	lua_pushstring(L, host);
	lua_setfield(L, -2, "hostname");
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	lua_pushinteger(L, ncpu > 0 ? ncpu : 1);
	lua_setfield(L, -2, "ncpu");
	lua_pushstring(L, LUAMTA_SYSCONFDIR);
	lua_setfield(L, -2, "sysconfdir");
	lua_pushstring(L, lb_datadir());
	lua_setfield(L, -2, "datadir");
	lua_pushstring(L, role_names[role]);
	lua_setfield(L, -2, "role");
	if (lb_overlay != NULL) {
		lua_pushstring(L, lb_overlay);
		lua_setfield(L, -2, "scenario");
	}
	/* Relative paths in the file are taken from its directory, made absolute here so that they do not depend
	 * on the directory the server was started from. */
	if (realpath(cfgpath, abspath) != NULL) {
		char	*slash = strrchr(abspath, '/');

		if (slash != NULL)
			*(slash == abspath ? slash + 1 : slash) = '\0';
		lua_pushstring(L, abspath);
		lua_setfield(L, -2, "basedir");
	}
	if (lua_pcall(L, 2, 3, -5) != LUA_OK) {			/* [tb engine cfg errs warns] or [tb engine err] */
		*errors = xstrdup(lua_tostring(L, -1));
		lua_close(L);
		free(g);
		return NULL;
	}
	if (warnings)
		*warnings = lb_join_list(L, -1);
	if (lua_isnil(L, -3)) {
		*errors = lb_join_list(L, -2);
		if (*errors == NULL)
			*errors = xstrdup("configuration failed to load");
		lua_close(L);
		free(g);
		return NULL;
	}
	if (cfg_from_lua(L, -3, cfgpath, &g->cfg, err, sizeof(err)) == -1) {
		*errors = xstrdup(err);
		lua_close(L);
		free(g);
		return NULL;
	}
	lua_pop(L, 3);						/* [tb engine] */
	for (i = 0; i < LB_S_COUNT; i++) {
		lua_getfield(L, -1, "has");			/* [tb engine has] */
		lua_pushstring(L, lb_stage_names[i]);
		lua_call(L, 1, 1);
		if (lua_toboolean(L, -1))
			g->stages |= 1u << i;
		lua_pop(L, 1);
	}
	lua_getfield(L, -1, "run");				/* [tb engine run] */
	g->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);		/* [tb engine] */
	g->engine_ref = luaL_ref(L, LUA_REGISTRYINDEX);		/* [tb] */
	lua_pop(L, 1);
	g->refs = 1;
	g->number = ++lb_generations;
	return g;
}

void
lb_gen_hold(struct lb_gen *g)
{
	g->refs++;
}

void
lb_gen_release(struct lb_gen *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	log_debug("lua generation=%u released", g->number);
	lua_close(g->L);
	cfg_free(&g->cfg);
	free(g);
}

const struct config *
lb_gen_config(const struct lb_gen *g)
{
	return &g->cfg;
}

lua_State *
lb_gen_state(const struct lb_gen *g)
{
	return g->L;
}

int
lb_gen_has_stage(const struct lb_gen *g, enum lb_stage st)
{
	return (g->stages & (1u << st)) != 0;
}

unsigned
lb_gen_number(const struct lb_gen *g)
{
	return g->number;
}

/* lb_clean_text - a reply text is one line of printable characters; anything else becomes a space. */
static void
lb_clean_text(char *dst, size_t size, const char *src)
{
	size_t	 i;

	util_strlcpy(dst, src, size);
	for (i = 0; dst[i] != '\0'; i++)
		if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
			dst[i] = ' ';
}

/* lb_rule_of - the name of the rule that co is running, from engine.current_rule(co); "" when unknown. */
static void
lb_rule_of(struct lb_run *run, char *buf, size_t size)
{
	lua_State	*L = run->gen->L;

	buf[0] = '\0';
	lua_rawgeti(L, LUA_REGISTRYINDEX, run->gen->engine_ref);	/* [engine] */
	lua_getfield(L, -1, "current_rule");				/* [engine fn] */
	lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);			/* [engine fn co] */
	if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1))
		util_strlcpy(buf, lua_tostring(L, -1), size);
	lua_pop(L, 2);							/* [] */
}

/* lb_verdict_bad - v becomes a rule error (451 4.3.0); the log says which rule and why. */
static void
lb_verdict_bad(struct lb_run *run, struct lb_verdict *v, const char *why)
{
	v->kind = LB_V_ERROR;
	v->code = 0;
	snprintf(v->text, sizeof(v->text), "rule %s %s", v->rule, why);
	log_error("lua rule=%s stage=%s error: %s", v->rule, lb_stage_name(run->stage), v->text);
}

/*
 * lb_verdict_kinds - the actions a rule may return, with the codes each may carry and the reply used when the
 * rule gives none. A code outside the range, or an enhanced status code (RFC 3463) of another class than the
 * reply code, is a rule error (451 4.3.0): a rule can never make the core say 250 for a message it did not take.
 */
static const struct lb_kind {
	const char		*name;
	enum lb_verdict_kind	 kind;
	int			 lo, hi;	/* 0, 0: the verdict carries no reply */
	int			 def;
	const char		*text;
} lb_verdict_kinds[] = {
	{ "accept", LB_V_ACCEPT, 0, 0, 0, "" },
	{ "reject", LB_V_REJECT, 500, 599, 550, "5.7.1 Rejected by policy" },
	{ "tempfail", LB_V_TEMPFAIL, 400, 499, 451, "4.7.1 Try again later" },
	{ "disconnect", LB_V_DISCONNECT, 400, 599, 421, "4.7.0 Closing connection" },
	{ "local", LB_V_LOCAL, 0, 0, 0, "" },
	{ "bounce", LB_V_BOUNCE, 500, 599, 550, "5.0.0 Delivery failed" },
	{ "defer", LB_V_DEFER, 451, 451, 451, "4.0.0 Deferred" },
	{ "relay", LB_V_RELAY, 0, 0, 0, "" },
	{ "hold", LB_V_HOLD, 451, 451, 451, "4.3.2 Held in the queue" },
};

/* lb_text_class_ok - 0 when text starts with an enhanced status code ("5.7.1 ...") whose class is not code's. */
static int
lb_text_class_ok(const char *text, int code)
{
	const char	*p = text;

	if (!(p[0] >= '0' && p[0] <= '9' && p[1] == '.'))
		return 1;			/* no enhanced status code: nothing to compare */
	for (p += 2; *p >= '0' && *p <= '9'; p++)
		;
	if (*p != '.' || p[-1] == '.')
		return 1;
	return text[0] - '0' == code / 100;
}

/* lb_verdict_read - turn the run's results (rule name, verdict table) into v. A bad verdict becomes LB_V_ERROR
 * with the reason in v->text, logged with the rule's name. */
static void
lb_verdict_read(struct lb_run *run, int nres, struct lb_verdict *v)
{
	lua_State		*co = run->co;
	const struct lb_kind	*k = NULL;
	const char		*action;
	lua_Integer		 code = 0;
	int			 has_code, is_int = 0;
	size_t			 i;

	memset(v, 0, sizeof(*v));
	if (nres != 2 || !lua_istable(co, -1)) {
		v->kind = LB_V_NONE;
		return;
	}
	util_strlcpy(v->rule, luaL_optstring(co, -nres, "?"), sizeof(v->rule));
	lua_getfield(co, -nres + 1, "action");			/* [.. name verdict action] */
	action = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
	for (i = 0; action != NULL && i < sizeof(lb_verdict_kinds) / sizeof(lb_verdict_kinds[0]); i++)
		if (strcmp(action, lb_verdict_kinds[i].name) == 0)
			k = &lb_verdict_kinds[i];
	lua_getfield(co, -nres, "code");			/* [.. name verdict action code] */
	has_code = !lua_isnil(co, -1);
	if (has_code)
		code = lua_tointegerx(co, -1, &is_int);
	lua_getfield(co, -nres - 1, "text");
	lb_clean_text(v->text, sizeof(v->text), lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) :
	    k != NULL ? k->text : "");
	if (v->text[0] == '\0' && k != NULL)
		util_strlcpy(v->text, k->text, sizeof(v->text));
	lua_getfield(co, -nres - 2, "mailbox");
	lb_clean_text(v->arg, sizeof(v->arg), lua_isstring(co, -1) ? lua_tostring(co, -1) : "");
	lua_pop(co, 4);						/* [.. name verdict] */
	if (k == NULL) {
		lb_verdict_bad(run, v, "returned an unknown action");
		return;
	}
	v->kind = k->kind;
	if (k->lo != 0) {
		if (has_code && (!is_int || code < k->lo || code > k->hi)) {
			char	 why[128];

			snprintf(why, sizeof(why), "returned %s with a code outside %d-%d", k->name, k->lo, k->hi);
			lb_verdict_bad(run, v, why);
			return;
		}
		v->code = has_code ? (int)code : k->def;
		if (!lb_text_class_ok(v->text, v->code)) {
			lb_verdict_bad(run, v, "returned a reply text whose enhanced status code is not of the code's class");
			return;
		}
	}
	if (v->kind == LB_V_RELAY) {
		const char	*mode;

		lua_getfield(co, -1, "host");
		lb_clean_text(v->arg, sizeof(v->arg), lua_isstring(co, -1) ? lua_tostring(co, -1) : "");
		lua_getfield(co, -2, "port");
		v->port = (int)lua_tointeger(co, -1);
		lua_getfield(co, -3, "mode");
		mode = lua_isstring(co, -1) ? lua_tostring(co, -1) : "mx";
		v->mode = strcmp(mode, "ip") == 0 ? LB_RELAY_IP : strcmp(mode, "host") == 0 ? LB_RELAY_HOST :
		    LB_RELAY_MX;
		lua_pop(co, 3);
		if (v->arg[0] == '\0' || v->port < 1 || v->port > 65535)
			lb_verdict_bad(run, v, "returned a relay verdict without host or port");
	}
}

static void
lb_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lb_run	*run = arg;

	lb_run_wake(run->id, 0);
}

uint64_t
lb_run_prepare_wait(lua_State *L, int tag)
{
	struct lb_run	*run = *lb_run_slot(L);

	/* Only the run's own coroutine may wait: a yield from a coroutine the rule made itself would go there. */
	if (run == NULL || run->co != L || !lua_isyieldable(L) || run->pending)
		return 0;
	luaL_checkstack(L, LUA_MINSTACK, "wait");	/* room for an answer pushed before the yield */
	run->pending = 1;
	run->yielded = 0;
	run->early = 0;
	run->wait_tag = tag;
	return run->id;
}

void
lb_run_cancel_wait(lua_State *L)
{
	struct lb_run	*run = *lb_run_slot(L);

	if (run != NULL)
		run->pending = run->early = 0;
}

/*
 * lb_run_yield - the end of every C function that waits: yield, or, when the answer already came (the waker ran
 * inside the call that started the wait, as c-ares does for a name it refuses), return that answer now. A
 * coroutine that is still running must never be resumed: this is the one place that decides.
 */
int
lb_run_yield(lua_State *L)
{
	struct lb_run	*run = *lb_run_slot(L);

	if (run == NULL || run->co != L)
		return luaL_error(L, "wait outside a stage handler");
	if (run->early) {
		run->early = 0;
		return run->early_nargs;	/* the waker's values are on top of L */
	}
	if (!run->pending)
		return luaL_error(L, "wait without lb_run_prepare_wait()");
	run->yielded = 1;
	return lua_yield(L, 0);
}

struct event_base *
lb_run_base(lua_State *L)
{
	struct lb_run	*run = *lb_run_slot(L);

	return run != NULL && run->co == L ? run->base : NULL;
}

lua_State *
lb_run_waiting(uint64_t id, int *tag)
{
	struct lb_run	*run = lb_runs ? idmap_get(lb_runs, id) : NULL;

	if (run == NULL || !run->pending)
		return NULL;
	if (tag != NULL)
		*tag = run->wait_tag;
	return run->co;
}

void
lb_run_wake(uint64_t id, int nargs)
{
	struct lb_run		*run = lb_runs ? idmap_get(lb_runs, id) : NULL;
	struct lb_verdict	 v;

	if (run == NULL || !run->pending)
		return;
	run->pending = 0;
	if (!run->yielded) {		/* still inside the C function that waits: lb_run_yield() returns these */
		run->early = 1;
		run->early_nargs = nargs;
		return;
	}
	run->yielded = 0;
	if (lb_run_resume(run, nargs, &v) == 1)
		return;				/* waiting again */
	run->done(run->owner, &v);
	lb_run_free(run);
}

/*
 * lb_run_resume - resume the coroutine. Returns 0 when it finished (verdict in *v), 1 when it waits again.
 */
static int
lb_run_resume(struct lb_run *run, int nargs, struct lb_verdict *v)
{
	lua_State	*co = run->co;
	struct lb_budget *prev;
	int		 status, nres = 0;
	char		 rule[64];

	prev = lb_budget_now;
	lb_budget_now = &run->budget;
	status = lua_resume(co, run->gen->L, nargs, &nres);
	lb_budget_now = prev;
	if (run->budget.over || status == LUA_ERRMEM)
		run->collect = 1;	/* give the memory of a runaway rule back when the run ends */
	if (run->budget.over && (status == LUA_OK || status == LUA_YIELD)) {
		/* The rule caught the budget's error (pcall, coroutine.resume, ...) and went on: still a 451. */
		lua_pop(co, nres);
		lb_rule_of(run, rule, sizeof(rule));
		memset(v, 0, sizeof(*v));
		v->kind = LB_V_ERROR;
		util_strlcpy(v->rule, rule, sizeof(v->rule));
		snprintf(v->text, sizeof(v->text), "%s", run->budget.what);
		log_error("lua rule=%s stage=%s error: %s", rule[0] ? rule : "?", lb_stage_name(run->stage),
		    run->budget.what);
		return 0;
	}
	if (status == LUA_YIELD) {
		lua_pop(co, nres);
		if (run->pending)
			return 1;
		lb_rule_of(run, rule, sizeof(rule));
		memset(v, 0, sizeof(*v));
		v->kind = LB_V_ERROR;
		util_strlcpy(v->rule, rule, sizeof(v->rule));
		snprintf(v->text, sizeof(v->text), "rule yielded outside mta.sleep or mta.dns");
		log_error("lua rule=%s stage=%s error: yielded outside mta.sleep or mta.dns", rule,
		    lb_stage_name(run->stage));
		return 0;
	}
	if (status == LUA_OK) {
		lb_verdict_read(run, nres, v);
		lua_pop(co, nres);
		return 0;
	}
	/* An error: the coroutine is dead but its stack is still there for the traceback. */
	lb_rule_of(run, rule, sizeof(rule));
	luaL_traceback(run->gen->L, co, lua_tostring(co, -1), 0);	/* [.. tb] on the main thread */
	log_error("lua rule=%s stage=%s error: %s", rule[0] ? rule : "?", lb_stage_name(run->stage),
	    lua_tostring(run->gen->L, -1));
	lua_pop(run->gen->L, 1);
	memset(v, 0, sizeof(*v));
	v->kind = LB_V_ERROR;
	util_strlcpy(v->rule, rule, sizeof(v->rule));
	snprintf(v->text, sizeof(v->text), "rule error");
	return 0;
}

int
lb_run_start(struct lb_gen *g, struct event_base *base, enum lb_stage st, lb_push_fn *push, void *arg,
    uint64_t owner, lb_done_fn *done, struct lb_verdict *out, struct lb_run **pending)
{
	struct lb_run	*run;
	lua_State	*L = g->L;
	int		 nargs;

	*pending = NULL;
	if (!lb_gen_has_stage(g, st)) {
		memset(out, 0, sizeof(*out));
		out->kind = LB_V_NONE;
		return 0;
	}
	run = xcalloc(1, sizeof(*run));
	if (lb_runs == NULL)
		lb_runs = idmap_new();
	run->id = ++lb_next_run;
	idmap_put(lb_runs, run->id, run);
	run->gen = g;
	lb_gen_hold(g);
	run->stage = st;
	run->owner = owner;
	run->done = done;
	run->co = lua_newthread(L);				/* [co] */
	run->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);		/* [] */
	run->base = base;
	if (base != NULL)
		run->timer = evtimer_new(base, lb_timer_cb, run);
	*lb_run_slot(run->co) = run;
	run->budget.limit = LB_BUDGET;
	run->budget.what = "instruction budget exceeded (" LB_BUDGET_TEXT " instructions)";
	lua_sethook(run->co, lb_hook, LUA_MASKCOUNT, LB_HOOK_STEP);
	lua_rawgeti(run->co, LUA_REGISTRYINDEX, g->run_ref);	/* co: [run] */
	lua_pushstring(run->co, lb_stage_names[st]);		/* co: [run stage] */
	nargs = push ? push(run->co, arg) : 0;			/* co: [run stage args..] */
	if (lb_run_resume(run, nargs + 1, out) == 1) {
		*pending = run;
		return 1;
	}
	lb_run_free(run);
	return 0;
}

static void
lb_run_free(struct lb_run *run)
{
	if (run->timer != NULL)
		event_free(run->timer);
	idmap_del(lb_runs, run->id);
	*lb_run_slot(run->co) = NULL;
	luaL_unref(run->gen->L, LUA_REGISTRYINDEX, run->co_ref);
	if (run->collect) {
		/* What a runaway rule built is garbage now that its coroutine is gone: collect it and give the
		 * pages back, so that one bad run does not leave the worker at hundreds of megabytes. */
		lua_gc(run->gen->L, LUA_GCCOLLECT);
#ifdef __GLIBC__
		malloc_trim(0);
#endif
		log_info("lua generation=%u: collected after a runaway rule; %zu KiB in use", run->gen->number,
		    run->gen->mem / 1024);
	}
	lb_gen_release(run->gen);
	free(run);
}

void
lb_run_cancel(struct lb_run *run)
{
	if (run != NULL)
		lb_run_free(run);
}
