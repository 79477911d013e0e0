/*
 * lb_message.c - the message object of the message stage (SPEC section 7): msg.size, msg.queue_id,
 * msg:header(name), msg:headers(name), msg:add_header(name, value), msg:remove_header(name, index),
 * msg:body(), msg:text(), msg:dkim_sign(key, domain, selector) (lb_dkim.c). It reads the message the session
 * holds in memory; headers added here are written above the message when it is queued, and msg:remove_header()
 * takes fields out of the message itself (the header fields of the message as received, not those added by
 * rules). Like the session, the userdata holds the session id and answers nil, "session closed" once the
 * session is gone.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>

#include "lb_types.h"
#include "smtp_session.h"
#include "util.h"

#define LB_MESSAGE_MT	"luamta.message"
#define LB_HEADERS_MAX	1000		/* header fields looked at; the rest of a huge header is not parsed */

struct lb_message_handle {
	uint64_t	 id;
};

static struct smtp_tx *
lb_message_check(lua_State *L, int idx)
{
	struct lb_message_handle	*h = luaL_checkudata(L, idx, LB_MESSAGE_MT);
	struct smtp_session		*s = smtp_session_find(h->id);

	return s ? s->tx : NULL;
}

static int
lb_message_closed(lua_State *L)
{
	lua_pushnil(L);
	lua_pushliteral(L, "session closed");
	return 2;
}

/* lb_message_text - the message as one string in memory, and its length. */
static const char *
lb_message_text(struct smtp_tx *tx, size_t *len)
{
	*len = evbuffer_get_length(tx->data);
	return *len ? (const char *)evbuffer_pullup(tx->data, -1) : "";
}

/* lb_header_end - offset of the first octet after the header section (after the empty line), or len. */
static size_t
lb_header_end(const char *p, size_t len)
{
	size_t	 i = 0;

	while (i < len) {
		const char	*nl = memchr(p + i, '\n', len - i);
		size_t		 linelen;

		if (nl == NULL)
			return len;
		linelen = (size_t)(nl - (p + i));
		if (linelen == 0 || (linelen == 1 && p[i] == '\r'))
			return i + linelen + 1;
		i += linelen + 1;
	}
	return len;
}

/*
 * lb_message_next_field - the field that starts at *i (before hend): its start and end (after its last line's
 * LF) in *start and *end, and *i moved past it. Returns 0 at the end of the header section.
 */
static int
lb_message_next_field(const char *p, size_t hend, size_t *i, size_t *start, size_t *end)
{
	if (*i >= hend)
		return 0;
	*start = *i;
	/* A field runs until a line that does not start with white space. */
	do {
		const char	*nl = memchr(p + *i, '\n', hend - *i);

		*i = nl ? (size_t)(nl - p) + 1 : hend;
	} while (*i < hend && (p[*i] == ' ' || p[*i] == '\t'));
	*end = *i;
	return 1;
}

/* lb_message_field_is - the field at p[start..end) is called name (nlen octets), in any case. */
static int
lb_message_field_is(const char *p, size_t start, size_t end, const char *name, size_t nlen)
{
	return end - start > nlen && strncasecmp(p + start, name, nlen) == 0 && p[start + nlen] == ':';
}

/*
 * lb_message_find_headers - push the values of every field called name (or only the first when first_only),
 * unfolded (CRLF + WSP becomes the WSP) and with leading white space removed. Returns how many were pushed
 * into the table on top of the stack.
 */
static int
lb_message_find_headers(lua_State *L, struct smtp_tx *tx, const char *name, int first_only)
{
	size_t		 len, hend, i = 0, start, end, nlen = strlen(name);
	const char	*p = lb_message_text(tx, &len);
	int		 found = 0, fields = 0;

	hend = lb_header_end(p, len);
	while (fields++ < LB_HEADERS_MAX && lb_message_next_field(p, hend, &i, &start, &end)) {
		if (lb_message_field_is(p, start, end, name, nlen)) {
			luaL_Buffer	 b;
			size_t		 k = start + nlen + 1;

			while (k < end && (p[k] == ' ' || p[k] == '\t'))
				k++;
			luaL_buffinit(L, &b);
			for (; k < end; k++)
				if (p[k] != '\r' && p[k] != '\n')
					luaL_addchar(&b, p[k]);
			luaL_pushresult(&b);
			lua_rawseti(L, -2, ++found);
			if (first_only)
				break;
		}
	}
	return found;
}

static int
lb_message_header(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	const char	*name = luaL_checkstring(L, 2);

	if (tx == NULL)
		return lb_message_closed(L);
	lua_newtable(L);
	if (lb_message_find_headers(L, tx, name, 1) == 0)
		return 0;
	lua_rawgeti(L, -1, 1);
	return 1;
}

static int
lb_message_headers(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	const char	*name = luaL_checkstring(L, 2);

	if (tx == NULL)
		return lb_message_closed(L);
	lua_newtable(L);
	lb_message_find_headers(L, tx, name, 0);
	return 1;
}

static int
lb_message_add_header(lua_State *L)
{
	struct smtp_tx		*tx = lb_message_check(L, 1);
	struct smtp_header	*h;
	char			*line;

	if (tx == NULL)
		return lb_message_closed(L);
	line = lb_header_line(L, 2, 3);		/* raises on a bad header, before anything is allocated */
	h = xcalloc(1, sizeof(*h));
	h->line = line;
	*tx->headers_tail = h;
	tx->headers_tail = &h->next;
	lua_pushboolean(L, 1);
	return 1;
}

static int
lb_message_body(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	size_t		 len, hend;
	const char	*p;

	if (tx == NULL)
		return lb_message_closed(L);
	p = lb_message_text(tx, &len);
	hend = lb_header_end(p, len);
	lua_pushlstring(L, p + hend, len - hend);
	return 1;
}

/* msg:dkim_sign(key, domain, selector): lb_dkim.c (docs/dkim.md) */
static int
lb_message_dkim_sign(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);

	if (tx == NULL)
		return lb_message_closed(L);
	return lb_dkim_sign(L, tx);
}

/* msg:text() - the whole message as received (header and body), as one string. */
static int
lb_message_text_fn(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	size_t		 len;
	const char	*p;

	if (tx == NULL)
		return lb_message_closed(L);
	p = lb_message_text(tx, &len);
	lua_pushlstring(L, p, len);
	return 1;
}

/*
 * msg:remove_header(name [, index]) - take fields called name out of the message: index 0 (the default) every
 * one, n > 0 the n-th, n < 0 the n-th from the end (as rspamd's milter reply counts). Returns how many were
 * removed. The message is copied without them into a new buffer, which replaces the old one.
 */
static int
lb_message_remove_header(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	const char	*name = luaL_checkstring(L, 2);
	lua_Integer	 index = luaL_optinteger(L, 3, 0);
	size_t		 len, hend, i = 0, start, end, kept = 0, nlen = strlen(name);
	struct evbuffer	*out;
	const char	*p;
	lua_Integer	 count = 0, n = 0, want;
	int		 fields = 0, removed = 0;

	if (tx == NULL)
		return lb_message_closed(L);
	if (nlen == 0)
		return luaL_argerror(L, 2, "header name must not be empty");
	p = lb_message_text(tx, &len);
	hend = lb_header_end(p, len);
	while (fields++ < LB_HEADERS_MAX && lb_message_next_field(p, hend, &i, &start, &end))
		if (lb_message_field_is(p, start, end, name, nlen))
			count++;
	want = index < 0 ? count + index + 1 : index;
	if (count == 0 || (index < 0 && want < 1) || want > count) {	/* -n past the first is none, not all */
		lua_pushinteger(L, 0);
		return 1;
	}
	out = evbuffer_new();
	i = 0;
	fields = 0;
	while (fields++ < LB_HEADERS_MAX && lb_message_next_field(p, hend, &i, &start, &end)) {
		if (!lb_message_field_is(p, start, end, name, nlen))
			continue;
		n++;
		if (want != 0 && n != want)
			continue;
		evbuffer_add(out, p + kept, start - kept);	/* what comes before this field */
		kept = end;
		removed++;
	}
	evbuffer_add(out, p + kept, len - kept);
	evbuffer_free(tx->data);
	tx->data = out;
	lua_pushinteger(L, removed);
	return 1;
}

static int
lb_message_index(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);
	const char	*key = luaL_checkstring(L, 2);

	lua_getmetatable(L, 1);					/* [m key mt] */
	lua_getfield(L, -1, "methods");				/* [m key mt methods] */
	lua_getfield(L, -1, key);				/* [m key mt methods fn] */
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 3);
	if (tx == NULL)
		return 0;
	if (strcmp(key, "size") == 0)
		lua_pushinteger(L, (lua_Integer)evbuffer_get_length(tx->data));
	else if (strcmp(key, "queue_id") == 0)
		lua_pushstring(L, tx->queue_id);
	else
		return 0;
	return 1;
}

static int
lb_message_tostring(lua_State *L)
{
	struct smtp_tx	*tx = lb_message_check(L, 1);

	if (tx == NULL)
		lua_pushliteral(L, "message (closed)");
	else
		lua_pushfstring(L, "message %s", tx->queue_id);
	return 1;
}

void
lb_message_open(lua_State *L)
{
	static const luaL_Reg	 methods[] = {
		{ "header", lb_message_header },
		{ "headers", lb_message_headers },
		{ "add_header", lb_message_add_header },
		{ "body", lb_message_body },
		{ "dkim_sign", lb_message_dkim_sign },
		{ "text", lb_message_text_fn },
		{ "remove_header", lb_message_remove_header },
		{ NULL, NULL }
	};

	luaL_newmetatable(L, LB_MESSAGE_MT);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "methods");
	lua_pushcfunction(L, lb_message_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, lb_message_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "locked");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
}

void
lb_message_push(lua_State *L, uint64_t id)
{
	struct lb_message_handle	*h = lua_newuserdatauv(L, sizeof(*h), 0);

	h->id = id;
	luaL_setmetatable(L, LB_MESSAGE_MT);
}
