/*
 * lb_dkim.c - DKIM for rules (docs/dkim.md): mta.dkim.key(path) loads a private key into a "luamta.dkim_key"
 * userdata (rules/dkim_sign.lua does it once, when the Lua state is built, so a key is read once per
 * configuration generation), and msg:dkim_sign(key, domain, selector) signs the message of the message stage.
 * The userdata holds one reference to the key (released by __gc, at the latest when the generation's state
 * closes). The signature goes above every other header of the queued message; the body hash is the one the
 * session computed as the data arrived (src/smtp/smtp_session.c), or, for a session that did not compute one,
 * one pass over the message held in memory now.
 * The RSA signature is never made on the event loop (docs/rules.md, "Objects"): msg:dkim_sign copies what it
 * signs (the header section, the body hash, the names) into a job, holds the key, and hands the job to the
 * process's signing thread (an iothread of its own, so signatures never wait behind the spool's fsyncs, nor
 * commits behind signatures); the rule's coroutine yields and lb_dkim_sign_done() resumes it on the loop. The job
 * carries the run's wait id and the session id, never a pointer into either: when the client left or the run
 * was cancelled meanwhile, the signature is dropped; a reload meanwhile is safe because the job holds the key.
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
#include "iothread.h"
#include "lb.h"
#include "lb_types.h"
#include "smtp_session.h"
#include "util.h"

#define LB_DKIM_KEY_MT	"luamta.dkim_key"

struct lb_dkim_key {
	struct dkim_key	*key;		/* one reference (jobs in flight hold their own) */
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

	dkim_key_release(k->key);
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

/* One signature job: everything dkim_sign() needs, owned, so that the thread touches nothing of the loop's. */
struct lb_dkim_job {
	uint64_t	 wait;		/* the run's wait id (lb_run_prepare_wait()) */
	uint64_t	 session;	/* whose transaction gets the signature */
	char		 queue_id[QUEUEID_SIZE];	/* ... if it is still this one */
	struct dkim_key	*key;		/* held until the job is freed */
	char		 domain[256], selector[256];
	char		*head;		/* owns: a copy of the header section */
	size_t		 headlen;
	unsigned char	 bh[DKIM_HASH_LEN];
	long long	 now;
	char		*sig;		/* owns: the result, or NULL with err */
	char		 err[256];
};

/* The signing thread, made on the first signature: most processes never sign. `luamta test` runs each scenario
 * on a loop of its own, so a new loop gets a new thread (the old loop has ended; iot_free() waits for its jobs). */
static struct {
	struct event_base	*base;
	struct iothread		*iot;
} lb_dkim_signer;

static struct iothread *
lb_dkim_signer_for(struct event_base *base)
{
	if (lb_dkim_signer.iot != NULL && lb_dkim_signer.base == base)
		return lb_dkim_signer.iot;
	iot_free(lb_dkim_signer.iot);
	lb_dkim_signer.base = base;
	lb_dkim_signer.iot = iot_new(base);
	iot_batch_max(lb_dkim_signer.iot, 1);	/* each signature is answered as soon as it is made */
	return lb_dkim_signer.iot;
}

static void
lb_dkim_job_free(struct lb_dkim_job *j)
{
	dkim_key_release(j->key);
	free(j->head);
	free(j->sig);
	free(j);
}

/* lb_dkim_sign_work - on the signing thread: the RSA signature. */
static int
lb_dkim_sign_work(void *arg)
{
	struct lb_dkim_job	*j = arg;

	j->sig = dkim_sign(j->key, j->domain, j->selector, j->head, j->headlen, j->bh, j->now, j->err,
	    sizeof(j->err));
	return 0;
}

/* lb_dkim_sign_done - on the loop: put the signature on the transaction and resume the rule with true, or
 * nil, err; nothing when the run is gone (the client left, or the run was cancelled). */
static void
lb_dkim_sign_done(void *arg, int err)
{
	struct lb_dkim_job	*j = arg;
	struct smtp_session	*s;
	struct smtp_header	*h;
	lua_State		*co;
	uint64_t		 wait;
	int			 nres = 1;

	(void)err;
	if ((co = lb_run_waiting(j->wait, NULL)) == NULL) {
		lb_dkim_job_free(j);
		return;
	}
	s = smtp_session_find(j->session);
	if (s == NULL || s->tx == NULL || strcmp(s->tx->queue_id, j->queue_id) != 0) {
		lua_pushnil(co);
		lua_pushliteral(co, "session closed");
		nres = 2;
	} else if (j->sig == NULL) {
		lua_pushnil(co);
		lua_pushstring(co, j->err);
		nres = 2;
	} else {
		h = xcalloc(1, sizeof(*h));	/* the newest signature goes on top */
		h->line = j->sig;
		j->sig = NULL;
		h->next = s->tx->signatures;
		s->tx->signatures = h;
		lua_pushboolean(co, 1);
	}
	wait = j->wait;
	lb_dkim_job_free(j);	/* the rule goes on in the wake, and may end the run: nothing of j is needed there */
	lb_run_wake(wait, nres);
}

/*
 * lb_dkim_sign - msg:dkim_sign(key, domain, selector) -> true | nil, err, for the message of tx (the session
 * whose id is lb_run_owner_of(L)). The header section and the body hash are taken now; the signature is made on
 * the signing thread while the rule's coroutine waits.
 */
int
lb_dkim_sign(lua_State *L, struct smtp_tx *tx)
{
	struct lb_dkim_key	*k = lb_dkim_key_check(L, 2);
	const char		*domain = luaL_checkstring(L, 3);
	const char		*selector = luaL_checkstring(L, 4);
	size_t			 len = evbuffer_get_length(tx->data), n = len < DKIM_HEAD_MAX ? len : DKIM_HEAD_MAX;
	const char		*p;
	struct lb_dkim_job	*j;
	struct smtp_session	*s;
	struct event_base	*base;
	uint64_t		 wait, owner;
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
	if ((owner = lb_run_owner_of(L)) == 0)
		goto nowait;
	/* The signature goes to the running session's transaction: a msg kept from another session is not signed. */
	if ((s = smtp_session_find(owner)) == NULL || s->tx != tx) {
		lua_pushnil(L);
		lua_pushliteral(L, "not the message of this stage");
		return 2;
	}
	if ((wait = lb_run_prepare_wait(L, 0)) == 0)
		goto nowait;
	if ((base = lb_run_base(L)) == NULL) {
		lb_run_cancel_wait(L);
		goto nowait;
	}
	if (tx->dkim_bh == NULL)
		tx->dkim_bh = lb_dkim_body_now(tx->data);
	j = xcalloc(1, sizeof(*j));
	j->wait = wait;
	j->session = owner;
	util_strlcpy(j->queue_id, tx->queue_id, sizeof(j->queue_id));
	j->key = dkim_key_hold(k->key);
	util_strlcpy(j->domain, domain, sizeof(j->domain));
	util_strlcpy(j->selector, selector, sizeof(j->selector));
	j->headlen = (size_t)hlen;
	j->head = xmalloc(j->headlen + 1);
	memcpy(j->head, p, j->headlen);
	memcpy(j->bh, dkim_body_hash(tx->dkim_bh), DKIM_HASH_LEN);
	j->now = (long long)util_now();
	iot_submit(lb_dkim_signer_for(base), lb_dkim_sign_work, lb_dkim_sign_done, j, NULL);
	/* The answer comes through the loop, so after this returns; were it to come first, lb_run_yield() returns
	 * it at once instead of yielding (src/lb.h). */
	return lb_run_yield(L);

nowait:
	/* Only the handler's own coroutine can wait; signing here would hold the loop (docs/rules.md, "Objects"). */
	lua_pushnil(L);
	lua_pushliteral(L, "msg:dkim_sign must be called by the stage handler itself, not from a coroutine it made");
	return 2;
}
