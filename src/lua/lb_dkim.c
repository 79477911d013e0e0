/*
 * lb_dkim.c - DKIM for rules (docs/dkim.md): mta.dkim.key(path) loads a private key into a "luamta.dkim_key"
 * userdata (rules/dkim_sign.lua does it once, when the Lua state is built, so a key is read once per
 * configuration generation), and msg:dkim_sign(key, domain, selector) signs the message of the message stage.
 * The key is plain memory, freed with the userdata (at the latest when the generation's state closes). The
 * signature goes above every other header of the queued message; the body hash is the one the session computed
 * as the data arrived (src/smtp/smtp_session.c), or, for a session that did not compute one, one pass over the message
 * held in memory now.
 *	lb_dkim_register()	core.dkim_key into [.. core]
 *	lb_dkim_sign()		msg:dkim_sign, for lb_message.c
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>

#include "dkim.h"
#include "lb_types.h"
#include "smtp_session.h"
#include "util.h"

#define LB_DKIM_KEY_MT	"luamta.dkim_key"

struct lb_dkim_key {
	struct dkim_key	*key;		/* owns */
	char		 path[256];	/* for __tostring */
};

static struct lb_dkim_key *
lb_dkim_key_check(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, LB_DKIM_KEY_MT);
}

/* core.dkim_key(path) -> key | nil, err */
static int
lb_dkim_key_load(lua_State *L)
{
	const char		*path = luaL_checkstring(L, 1);
	struct lb_dkim_key	*k;
	char			 err[512];

	k = lua_newuserdatauv(L, sizeof(*k), 0);		/* [.. k] */
	k->key = NULL;
	util_strlcpy(k->path, path, sizeof(k->path));
	luaL_setmetatable(L, LB_DKIM_KEY_MT);
	if ((k->key = dkim_key_load(path, err, sizeof(err))) == NULL) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

static int
lb_dkim_key_bits(lua_State *L)
{
	struct lb_dkim_key	*k = lb_dkim_key_check(L, 1);

	lua_pushinteger(L, k->key ? (lua_Integer)dkim_key_bits(k->key) : 0);
	return 1;
}

static int
lb_dkim_key_gc(lua_State *L)
{
	struct lb_dkim_key	*k = lb_dkim_key_check(L, 1);

	dkim_key_free(k->key);
	k->key = NULL;
	return 0;
}

static int
lb_dkim_key_tostring(lua_State *L)
{
	struct lb_dkim_key	*k = lb_dkim_key_check(L, 1);

	lua_pushfstring(L, "dkim key %s (%d bits)", k->path, k->key ? (int)dkim_key_bits(k->key) : 0);
	return 1;
}

void
lb_dkim_register(lua_State *L)
{
	static const luaL_Reg	 methods[] = {
		{ "bits", lb_dkim_key_bits },
		{ NULL, NULL }
	};

	luaL_newmetatable(L, LB_DKIM_KEY_MT);			/* [.. core mt] */
	luaL_newlib(L, methods);				/* [.. core mt methods] */
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, lb_dkim_key_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, lb_dkim_key_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "locked");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);						/* [.. core] */
	lua_pushcfunction(L, lb_dkim_key_load);
	lua_setfield(L, -2, "dkim_key");
}

/* lb_dkim_head_len - octets of the header section at the start of p (n octets of a message of len), without the
 * empty line that ends it; n when the whole message is header; -1 when the header goes on past n. */
static long
lb_dkim_head_len(const char *p, size_t n, size_t len)
{
	size_t	 i = 0;

	while (i < n) {
		const char	*nl = memchr(p + i, '\n', n - i);
		size_t		 linelen;

		if (nl == NULL)
			break;
		linelen = (size_t)(nl - (p + i));
		if (linelen == 0 || (linelen == 1 && p[i] == '\r'))
			return (long)i;
		i += linelen + 1;
	}
	return n == len ? (long)n : -1;
}

/* lb_dkim_body_now - the body hash of a message whose session did not hash it on the way in. */
static struct dkim_body *
lb_dkim_body_now(struct evbuffer *data)
{
	struct dkim_body	*b = dkim_body_new();
	struct evbuffer_iovec	*v;
	int			 n, i;

	n = evbuffer_peek(data, -1, NULL, NULL, 0);
	if (n <= 0)
		return b;
	v = xcalloc((size_t)n, sizeof(*v));
	n = evbuffer_peek(data, -1, NULL, v, n);
	for (i = 0; i < n; i++)
		dkim_body_feed(b, v[i].iov_base, v[i].iov_len);
	free(v);
	return b;
}

/* lb_dkim_sign - msg:dkim_sign(key, domain, selector) -> true | nil, err, for the message of tx. */
int
lb_dkim_sign(lua_State *L, struct smtp_tx *tx)
{
	struct lb_dkim_key	*k = lb_dkim_key_check(L, 2);
	const char		*domain = luaL_checkstring(L, 3);
	const char		*selector = luaL_checkstring(L, 4);
	struct smtp_header	*h;
	size_t			 len = evbuffer_get_length(tx->data), n = len < DKIM_HEAD_MAX ? len : DKIM_HEAD_MAX;
	const char		*p;
	char			*sig, err[256];
	long			 hlen;

	luaL_argcheck(L, k->key != NULL, 2, "a key that did not load");
	luaL_argcheck(L, dkim_name_ok(domain), 3, "a domain name");
	luaL_argcheck(L, dkim_name_ok(selector), 4, "a selector (letters, digits, '-' and '.')");
	p = n > 0 ? (const char *)evbuffer_pullup(tx->data, (ev_ssize_t)n) : "";
	if ((hlen = lb_dkim_head_len(p, n, len)) < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "the header section is longer than %d octets", DKIM_HEAD_MAX);
		return 2;
	}
	if (tx->dkim_bh == NULL)
		tx->dkim_bh = lb_dkim_body_now(tx->data);
	if ((sig = dkim_sign(k->key, domain, selector, p, (size_t)hlen, dkim_body_hash(tx->dkim_bh),
	    (long long)util_now(), err, sizeof(err))) == NULL) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	h = xcalloc(1, sizeof(*h));	/* the newest signature goes on top */
	h->line = sig;
	h->next = tx->signatures;
	tx->signatures = h;
	lua_pushboolean(L, 1);
	return 1;
}
