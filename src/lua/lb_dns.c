/*
 * lb_dns.c - mta.dns.a/aaaa/mx/ptr/txt/cname for rules. A cached answer returns at once; otherwise the
 * calling coroutine yields and lb_dns_done() resumes it with the answer (records, or nil and "nxdomain",
 * "nodata", "timeout" or "servfail"). The query carries the run's id, not a pointer: an answer for a run that
 * was cancelled (the client left) is dropped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "dns.h"
#include "lb.h"
#include "lb_types.h"
#include "trace.h"
#include "util.h"

/* lb_dns_push - push the Lua form of res on L; returns the number of values (1, or 2 for nil, err). */
static int
lb_dns_push(lua_State *L, enum dns_type type, const struct dns_result *res)
{
	size_t	 i;

	if (res->status != DNS_OK) {
		lua_pushnil(L);
		lua_pushstring(L, dns_status_name(res->status));
		return 2;
	}
	lua_createtable(L, (int)res->n, 0);			/* [.. list] */
	for (i = 0; i < res->n; i++) {
		if (type == DNS_T_MX) {
			lua_createtable(L, 0, 2);		/* [.. list mx] */
			lua_pushinteger(L, res->pref[i]);
			lua_setfield(L, -2, "preference");
			lua_pushstring(L, res->rec[i]);
			lua_setfield(L, -2, "exchange");
		} else
			lua_pushstring(L, res->rec[i]);		/* [.. list rec] */
		lua_rawseti(L, -2, (lua_Integer)i + 1);		/* [.. list] */
	}
	return 1;
}

/* The names of the questions out, by wait id, for the trace of their answers (a miss only loses the name). */
#define LB_DNS_NAMES	256
static struct {
	uint64_t	 id;
	char		 name[DNS_NAME_MAX + 1];
} lb_dns_names[LB_DNS_NAMES];

/* lb_dns_trace - the answer a rule used, in its session's trace (docs/investigating.md). */
static void
lb_dns_trace(lua_State *L, enum dns_type type, const char *name, const struct dns_result *res, int cached)
{
	char	 recs[512];
	size_t	 i, o = 0;
	uint64_t owner = lb_run_owner_of(L);

	if (owner == 0)
		return;
	recs[0] = '\0';
	for (i = 0; i < res->n && o + 2 < sizeof(recs); i++) {
		int	 w;

		if (type == DNS_T_MX)
			w = snprintf(recs + o, sizeof(recs) - o, "%s%d %s", i ? "," : "", res->pref[i], res->rec[i]);
		else
			w = snprintf(recs + o, sizeof(recs) - o, "%s%s", i ? "," : "", res->rec[i]);
		if (w < 0 || (size_t)w >= sizeof(recs) - o)
			break;
		o += (size_t)w;
	}
	trace_session(owner, TR_DNS, "type=%s name=%s result=%s ttl=%u cached=%d records=%s", dns_type_name(type),
	    name, dns_status_name(res->status), res->ttl, cached, recs);
}

static void
lb_dns_done(uint64_t cookie, const struct dns_result *res)
{
	struct lua_State	*co;
	enum dns_type		 type;

	if ((co = lb_run_waiting(cookie, (int *)&type)) == NULL)
		return;		/* the run was cancelled while we waited */
	lb_dns_trace(co, type, lb_dns_names[cookie % LB_DNS_NAMES].id == cookie ?
	    lb_dns_names[cookie % LB_DNS_NAMES].name : "?", res, 0);
	lb_run_wake(cookie, lb_dns_push(co, type, res));
}

static int
lb_dns_lookup(lua_State *L, enum dns_type type)
{
	const char		*name = luaL_checkstring(L, 1);
	char			 rev[128];
	const struct dns_result	*cached;
	uint64_t		 id;
	unsigned char		 addr[16];

	if (type == DNS_T_PTR && (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1)) {
		if (dns_reverse_name(name, rev, sizeof(rev)) == 0)
			name = rev;
	}
	if ((cached = dns_cached(type, name)) != NULL) {
		lb_dns_trace(L, type, name, cached, 1);
		return lb_dns_push(L, type, cached);
	}
	if ((id = lb_run_prepare_wait(L, (int)type)) == 0)
		return luaL_error(L, "mta.dns: only a stage handler can look up DNS");
	lb_dns_names[id % LB_DNS_NAMES].id = id;
	util_strlcpy(lb_dns_names[id % LB_DNS_NAMES].name, name, sizeof(lb_dns_names[0].name));
	if (dns_query(type, name, lb_dns_done, id) == -1) {
		lb_run_cancel_wait(L);
		lua_pushnil(L);
		lua_pushliteral(L, "servfail");		/* an invalid name: no server would answer it */
		return 2;
	}
	return lb_run_yield(L);	/* lb_dns_done() gives the answer, maybe before this returns */
}

static int lb_dns_a(lua_State *L) { return lb_dns_lookup(L, DNS_T_A); }
static int lb_dns_aaaa(lua_State *L) { return lb_dns_lookup(L, DNS_T_AAAA); }
static int lb_dns_mx(lua_State *L) { return lb_dns_lookup(L, DNS_T_MX); }
static int lb_dns_ptr(lua_State *L) { return lb_dns_lookup(L, DNS_T_PTR); }
static int lb_dns_txt(lua_State *L) { return lb_dns_lookup(L, DNS_T_TXT); }
static int lb_dns_cname(lua_State *L) { return lb_dns_lookup(L, DNS_T_CNAME); }

/* ip_equal(a, b): the same address however it is written ("::1" and "0::1"). */
static int
lb_dns_ip_equal(lua_State *L)
{
	const char	*a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
	unsigned char	 x[16], y[16];

	if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
		lua_pushboolean(L, memcmp(x, y, 4) == 0);
	else if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
		lua_pushboolean(L, memcmp(x, y, 16) == 0);
	else
		lua_pushboolean(L, 0);
	return 1;
}

/* is_hostname(name): a name a rule may use as a host name (dns_hostname_ok()). */
static int
lb_dns_is_hostname(lua_State *L)
{
	size_t		 len;
	const char	*name = lua_tolstring(L, 1, &len);

	/* a string with a NUL inside is never a host name, whatever comes before it */
	lua_pushboolean(L, name != NULL && lua_type(L, 1) == LUA_TSTRING && strlen(name) == len &&
	    dns_hostname_ok(name));
	return 1;
}

void
lb_dns_register(lua_State *L)
{
	static const luaL_Reg	 fns[] = {
		{ "a", lb_dns_a }, { "aaaa", lb_dns_aaaa }, { "mx", lb_dns_mx }, { "ptr", lb_dns_ptr },
		{ "txt", lb_dns_txt }, { "cname", lb_dns_cname }, { "ip_equal", lb_dns_ip_equal },
		{ "is_hostname", lb_dns_is_hostname },
		{ NULL, NULL }
	};

	luaL_newlib(L, fns);					/* [.. core dns] */
	lua_setfield(L, -2, "dns");				/* [.. core] */
}
