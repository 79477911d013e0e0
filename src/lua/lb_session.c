/*
 * lb_session.c - the session object rules see (SPEC section 7): s.ip, s.port, s.helo, s.tls, s.user,
 * s.sender, s.rcpts, s.vars, s:hostname(), s:tag(), s:log(). The userdata holds the session id; every access
 * looks the session up, so a rule that keeps s past the session's end gets nil, "session closed", never a
 * dangling pointer. Also the address tables ({ address, localpart, domain }) used for senders and recipients.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lb_types.h"
#include "trace.h"
#include "log.h"
#include "smtp_session.h"
#include "util.h"

#define LB_SESSION_MT	"luamta.session"
#define LB_VARS_KEY	"luamta.vars"		/* registry: session id -> s.vars table */
#define LB_PRIVATE_KEY	"luamta.private"	/* registry: session id -> the library's own per-session table */

struct lb_session_handle {
	uint64_t	 id;
};

static struct smtp_session *
lb_session_check(lua_State *L, int idx)
{
	struct lb_session_handle	*h = luaL_checkudata(L, idx, LB_SESSION_MT);

	return smtp_session_find(h->id);
}

void
lb_addr_push(lua_State *L, const struct proto_addr *a)
{
	lua_createtable(L, 0, 3);			/* [.. addr] */
	lua_pushstring(L, a->address);
	lua_setfield(L, -2, "address");
	lua_pushstring(L, a->local);
	lua_setfield(L, -2, "localpart");
	lua_pushstring(L, a->domain);
	lua_setfield(L, -2, "domain");
}

static int
lb_session_closed(lua_State *L)
{
	lua_pushnil(L);
	lua_pushliteral(L, "session closed");
	return 2;
}

static int
lb_header_name_ok(const char *name)
{
	const unsigned char	*p;

	if (*name == '\0' || strlen(name) > 76)
		return 0;
	for (p = (const unsigned char *)name; *p; p++)	/* RFC 5322 3.6.8 ftext */
		if (*p < 33 || *p > 126 || *p == ':')
			return 0;
	return 1;
}

/* lb_header_line - "Name: value" checked for a header: one line, bounded. Raises a Lua error otherwise. */
char *
lb_header_line(lua_State *L, int name_idx, int value_idx)
{
	const char	*name = luaL_checkstring(L, name_idx);
	size_t		 vlen;
	const char	*value = luaL_checklstring(L, value_idx, &vlen);
	char		 line[SMTP_HEADER_MAX + 1];
	size_t		 i;

	if (!lb_header_name_ok(name))
		luaL_argerror(L, name_idx, "header name must be printable ASCII without ':' or spaces");
	for (i = 0; i < vlen; i++)
		if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
			luaL_argerror(L, value_idx, "header value must be one line");
	if ((size_t)snprintf(line, sizeof(line), "%s: %s", name, value) >= sizeof(line))
		luaL_argerror(L, value_idx, "header longer than 998 octets");
	return xstrdup(line);
}

static int
lb_session_tag(lua_State *L)
{
	struct smtp_session	*s = lb_session_check(L, 1);
	struct smtp_header	*h, *it;
	char			*line;

	if (s == NULL)
		return lb_session_closed(L);
	line = lb_header_line(L, 2, 3);
	for (it = s->tags; it != NULL; it = it->next) {
		if (strcmp(it->line, line) == 0) {	/* the same tag twice is one header */
			free(line);
			lua_pushboolean(L, 1);
			return 1;
		}
	}
	h = xcalloc(1, sizeof(*h));
	h->line = line;
	trace_session(s->id, TR_TAG, "%s", line);
	*s->tags_tail = h;
	s->tags_tail = &h->next;
	lua_pushboolean(L, 1);
	return 1;
}

static int
lb_session_log(lua_State *L)
{
	struct smtp_session	*s = lb_session_check(L, 1);
	luaL_Buffer		 b;
	int			 i, n = lua_gettop(L);

	luaL_buffinit(L, &b);
	for (i = 2; i <= n; i++) {
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
		if (i < n)
			luaL_addchar(&b, ' ');
	}
	luaL_pushresult(&b);
	log_info("%s: rule: %s", s == NULL ? "-" : (s->tx ? s->tx->queue_id : s->idstr), lua_tostring(L, -1));
	if (s != NULL)
		trace_session(s->id, TR_RULE, "%s", lua_tostring(L, -1));
	return 0;
}

static void
lb_session_table(lua_State *L, struct smtp_session *s, const char *key)
{
	lua_getfield(L, LUA_REGISTRYINDEX, key);		/* [.. vars] */
	lua_rawgeti(L, -1, (lua_Integer)s->id);			/* [.. vars v] */
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);				/* [.. vars v] */
		lua_pushvalue(L, -1);
		lua_rawseti(L, -3, (lua_Integer)s->id);
	}
	lua_remove(L, -2);					/* [.. v] */
}

void
lb_session_forget(lua_State *L, struct smtp_session *s)
{
	lua_getfield(L, LUA_REGISTRYINDEX, LB_VARS_KEY);	/* [.. vars] */
	lua_pushnil(L);
	lua_rawseti(L, -2, (lua_Integer)s->id);
	lua_getfield(L, LUA_REGISTRYINDEX, LB_PRIVATE_KEY);	/* [.. vars private] */
	lua_pushnil(L);
	lua_rawseti(L, -2, (lua_Integer)s->id);
	lua_pop(L, 2);
}

/* core.session_private(s) - a table the luamta library keeps per session (rules cannot reach it through s). */
static int
lb_session_private(lua_State *L)
{
	struct smtp_session	*s = lb_session_check(L, 1);

	if (s == NULL)
		return lb_session_closed(L);
	lb_session_table(L, s, LB_PRIVATE_KEY);
	return 1;
}

/* core.session_methods() - the methods table, so that lua/luamta/init.lua can add methods written in Lua. */
static int
lb_session_methods(lua_State *L)
{
	luaL_getmetatable(L, LB_SESSION_MT);			/* [mt] */
	lua_getfield(L, -1, "methods");				/* [mt methods] */
	return 1;
}

void
lb_session_core(lua_State *L)
{
	lua_pushcfunction(L, lb_session_private);
	lua_setfield(L, -2, "session_private");
	lua_pushcfunction(L, lb_session_methods);
	lua_setfield(L, -2, "session_methods");
}

static int
lb_session_index(lua_State *L)
{
	struct smtp_session	*s = lb_session_check(L, 1);
	const char		*key = luaL_checkstring(L, 2);
	size_t			 i;

	/* Methods first: they exist even when the session is gone, and answer nil, "session closed". */
	lua_getmetatable(L, 1);					/* [s key mt] */
	lua_getfield(L, -1, "methods");				/* [s key mt methods] */
	lua_getfield(L, -1, key);				/* [s key mt methods fn] */
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 3);						/* [s key] */
	if (s == NULL)
		return 0;
	if (strcmp(key, "ip") == 0)
		lua_pushstring(L, s->ip);
	else if (strcmp(key, "port") == 0)
		lua_pushinteger(L, s->port);
	else if (strcmp(key, "helo") == 0)
		s->helo[0] ? lua_pushstring(L, s->helo) : lua_pushnil(L);
	else if (strcmp(key, "tls") == 0)
		lua_pushboolean(L, s->tls);
	else if (strcmp(key, "user") == 0)
		s->user[0] ? lua_pushstring(L, s->user) : lua_pushnil(L);
	else if (strcmp(key, "local_user") == 0)
		s->local_user[0] ? lua_pushstring(L, s->local_user) : lua_pushnil(L);
	else if (strcmp(key, "id") == 0)
		lua_pushstring(L, s->idstr);
	else if (strcmp(key, "queue_id") == 0)
		s->tx ? lua_pushstring(L, s->tx->queue_id) : lua_pushnil(L);
	else if (strcmp(key, "sender") == 0) {
		if (s->tx == NULL)
			return 0;
		lb_addr_push(L, &s->tx->sender);
	} else if (strcmp(key, "rcpts") == 0) {
		lua_createtable(L, s->tx ? (int)s->tx->nrcpts : 0, 0);
		for (i = 0; s->tx != NULL && i < s->tx->nrcpts; i++) {
			lb_addr_push(L, &s->tx->rcpts[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
	} else if (strcmp(key, "vars") == 0)
		lb_session_table(L, s, LB_VARS_KEY);
	else if (strcmp(key, "listener") == 0)
		lua_pushstring(L, s->lsn->text);
	else if (strcmp(key, "submission") == 0)
		lua_pushboolean(L, s->lsn->submission);
	else if (strcmp(key, "tls_cipher") == 0)
		s->tls ? lua_pushstring(L, s->tls_desc) : lua_pushnil(L);
	else
		return 0;
	return 1;
}

static int
lb_session_newindex(lua_State *L)
{
	return luaL_error(L, "session fields are read-only (use s.vars for your own data)");
}

static int
lb_session_tostring(lua_State *L)
{
	struct smtp_session	*s = lb_session_check(L, 1);

	if (s == NULL)
		lua_pushliteral(L, "session (closed)");
	else
		lua_pushfstring(L, "session %s [%s]:%d", s->idstr, s->ip, s->port);
	return 1;
}

void
lb_session_open(lua_State *L)
{
	static const luaL_Reg	 methods[] = {
		{ "tag", lb_session_tag },
		{ "log", lb_session_log },
		{ NULL, NULL }
	};

	luaL_newmetatable(L, LB_SESSION_MT);			/* [mt] */
	luaL_newlib(L, methods);				/* [mt methods] */
	lua_setfield(L, -2, "methods");
	lua_pushcfunction(L, lb_session_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, lb_session_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, lb_session_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "locked");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);						/* [] */
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, LB_VARS_KEY);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, LB_PRIVATE_KEY);
}

void
lb_session_push(lua_State *L, uint64_t id)
{
	struct lb_session_handle	*h = lua_newuserdatauv(L, sizeof(*h), 0);	/* [.. s] */

	h->id = id;
	luaL_setmetatable(L, LB_SESSION_MT);
}
