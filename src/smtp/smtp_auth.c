/*
 * smtp_auth.c - SMTP AUTH (RFC 4954) for the inbound session: PLAIN (RFC 4616) and LOGIN, offered only under
 * TLS. The password is checked against the directory user's crypt(3) hash on a thread of its own (never on the
 * loop, and never in front of the spool's commits); the auth rules have the last word; failures from one address
 * get answers that wait longer each time. Rules may take part (docs/rules.md): the auth_attempt stage runs before
 * the password is checked and may refuse the attempt, the auth_failed stage after a wrong password (the bundled
 * auth_throttle counts failures in Redis there, so that every node refuses a brute-forcing address).
 * A credential is never cut short: one that holds a NUL, a PLAIN response with other than three fields, or a
 * name or password longer than we keep is malformed (501), as a truncated one could match a shorter password.
 *	smtp_cmd_auth()		the AUTH command
 *	smtp_auth_line()	the client's answers to 334 challenges
 */
#include "config.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <mbedtls/base64.h>

#include <lua.h>

#include "iothread.h"
#include "lb.h"
#include "lb_types.h"
#include "log.h"
#include "policy.h"
#include "trace.h"
#include "smtp_internal.h"
#include "smtp_session.h"
#include "util.h"

enum smtp_auth_step { SMTP_AUTH_PLAIN = 1, SMTP_AUTH_LOGIN_USER, SMTP_AUTH_LOGIN_PASS };

#define SMTP_AUTH_FAIL_FORGET	900	/* seconds after which an address's failed AUTH attempts are forgotten */
#define SMTP_AUTH_PASSWORD_MAX	1024	/* octets of a password; longer is malformed */
/* A decoded response: an AUTH line of PROTO_AUTH_LINE_MAX holds at most this much base64's worth. */
#define SMTP_AUTH_DECODED_MAX	(PROTO_AUTH_LINE_MAX / 4 * 3 + 1)
#define SMTP_AUTH_MALFORMED	"501 5.5.2 Error: malformed AUTH response"

struct smtp_auth_job {
	uint64_t	 session;
	char		 name[PROTO_ADDR_MAX + 1];	/* what the client gave */
	char		 user[PROTO_ADDR_MAX + 1];	/* the directory user's primary address, "" if none */
	char		 hash[256];
	char		 password[SMTP_AUTH_PASSWORD_MAX + 1];
	int		 ok;
};

struct smtp_auth_fails {
	int	 count;
	double	 last;
};

static struct idmap	*smtp_auth_failures;	/* client IP hash -> struct smtp_auth_fails */
static struct idmap	*smtp_auth_asking;	/* session id -> struct smtp_auth_job, while auth_attempt runs */

/* The arguments of the auth_attempt and auth_failed stages: s and the name the client gave. */
struct smtp_auth_args {
	uint64_t	 session;
	const char	*name;
};

static uint64_t
smtp_ip_key(const char *ip)
{
	return util_hash64(ip, 0);
}

/* smtp_auth_equal - compare in time that does not depend on where the strings differ. */
static int
smtp_auth_equal(const char *a, const char *b)
{
	size_t		 la = strlen(a), lb = strlen(b), i;
	unsigned char	 diff = la != lb;

	for (i = 0; i < la && i < lb; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

static int
smtp_auth_work(void *arg)
{
	struct smtp_auth_job	*j = arg;
	struct crypt_data	*cd = xcalloc(1, sizeof(*cd));
	const char		*out;

	/* An unknown user costs a hash too, so that timing does not tell which users exist. */
	out = crypt_r(j->password, j->hash[0] ? j->hash : "$6$luamta$", cd);
	j->ok = j->user[0] != '\0' && j->hash[0] != '\0' && out != NULL && out[0] != '*' &&
	    smtp_auth_equal(out, j->hash);
	explicit_bzero(j->password, sizeof(j->password));
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return 0;
}

/* smtp_auth_iot - the host's password thread, made on the first AUTH: most processes never see one. */
static struct iothread *
smtp_auth_iot(struct smtp_host *host)
{
	if (host->auth_iot == NULL)
		host->auth_iot = iot_new(host->base);
	return host->auth_iot;
}

static void
smtp_auth_fail_reply(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session	*s = arg;

	s->waiting = 0;
	if (smtp_reply(s, "535 5.7.8 Error: authentication failed") == -1)
		return;
	bufferevent_enable(s->bev, EV_READ);
	smtp_process(s);
}

static int
smtp_auth_push(lua_State *L, void *arg)
{
	struct smtp_auth_args	*a = arg;

	lb_session_push(L, a->session);		/* [.. s] */
	lua_pushstring(L, a->name);		/* [.. s name] */
	return 2;
}

/* smtp_auth_failed_done - the auth_failed rules are done; what they say does not change the 535. */
static void
smtp_auth_failed_done(uint64_t owner, const struct lb_verdict *v)
{
	(void)owner;
	(void)v;
}

static void
smtp_auth_failed(struct smtp_session *s, const char *name)
{
	struct smtp_auth_args	 args = { s->id, name };
	struct lb_verdict	 v;
	struct lb_run		*run;
	struct smtp_auth_fails	*f;
	uint64_t		 key = smtp_ip_key(s->ip);
	struct timeval		 tv;
	double			 delay;

	if (smtp_auth_failures == NULL)
		smtp_auth_failures = idmap_new();
	if ((f = idmap_get(smtp_auth_failures, key)) == NULL) {
		f = xcalloc(1, sizeof(*f));
		idmap_put(smtp_auth_failures, key, f);
	}
	if (util_now() - f->last > SMTP_AUTH_FAIL_FORGET)
		f->count = 0;
	f->count++;
	f->last = util_now();
	/* Each failure from an address doubles the wait for the answer: 0.25 s, 0.5 s, ... up to 8 s. */
	delay = 0.25 * (double)(1u << (f->count - 1 < 5 ? f->count - 1 : 5));
	/* Postfix's wording: fail2ban's postfix[mode=auth] and contrib/fail2ban/filter.d/luamta.conf read it. */
	log_warn(SMTP_CLIENT_FMT ": SASL %s authentication failed: authentication failure, sasl_username=%s, "
	    "session=%s (failure %d from this address; answer in %.2f s)", SMTP_CLIENT(s),
	    s->auth_mech ? s->auth_mech : "PLAIN", name, s->idstr, f->count, delay);
	trace_session(s->id, TR_AUTH, "failed user=%s", name);
	/* The rules count the failure while the answer is held back; the run goes on by itself, and finds the
	 * session closed if the client leaves. */
	if (lb_gen_has_stage(s->gen, LB_S_AUTH_FAILED))
		(void)lb_run_start(s->gen, s->host->base, LB_S_AUTH_FAILED, smtp_auth_push, &args, s->id,
		    smtp_auth_failed_done, &v, &run);
	if (s->auth_delay == NULL)
		s->auth_delay = evtimer_new(s->host->base, smtp_auth_fail_reply, s);
	tv.tv_sec = (time_t)delay;
	tv.tv_usec = (suseconds_t)((delay - (double)tv.tv_sec) * 1e6);
	s->waiting = 1;
	bufferevent_disable(s->bev, EV_READ);
	evtimer_add(s->auth_delay, &tv);
}

static void
smtp_auth_done(void *arg, int err)
{
	struct smtp_auth_job	*j = arg;
	struct smtp_session	*s = smtp_session_find(j->session);
	struct smtp_wait	*w;

	if (s == NULL || s->bev == NULL) {	/* the client left while the password was checked */
		free(j);
		smtp_host_gone();		/* a stopping worker may have waited for this job alone */
		return;
	}
	s->waiting = 0;
	smtp_enter_state(s, SMTP_S_READY);
	if (!j->ok) {
		smtp_auth_failed(s, j->name);
		free(j);
		return;
	}
	/* The password is right; the auth rules may still say no. */
	w = smtp_wait_new(SMTP_AFTER_AUTH, LB_S_AUTH, "235 2.7.0 Authentication successful");
	util_strlcpy(w->helo, j->user, sizeof(w->helo));
	free(j);
	smtp_ask(s, w);
	if (s->state != SMTP_S_CLOSING && !s->waiting) {
		bufferevent_enable(s->bev, EV_READ);
		smtp_process(s);
	}
}

static void
smtp_auth_job_free(struct smtp_auth_job *j)
{
	explicit_bzero(j->password, sizeof(j->password));
	free(j);
}

/*
 * smtp_auth_attempt_end - the auth_attempt rules have spoken: check the password, or answer with their reply.
 * later: they waited, so the session's input must be taken up again here (otherwise smtp_process() is running).
 */
static void
smtp_auth_attempt_end(uint64_t owner, const struct lb_verdict *v, int later)
{
	struct smtp_auth_job	*j = idmap_get(smtp_auth_asking, owner);
	struct smtp_session	*s = smtp_session_find(owner);
	char			 reply[POL_REPLY_MAX];
	enum pol_outcome	 out;

	if (j == NULL)
		fatal_bug("session %llu: auth_attempt answer without a job", (unsigned long long)owner);
	idmap_del(smtp_auth_asking, owner);
	if (s == NULL || s->bev == NULL) {	/* the client left while the rules ran */
		smtp_auth_job_free(j);
		smtp_host_gone();
		return;
	}
	if ((out = pol_reply(s->idstr, LB_S_AUTH_ATTEMPT, v, "", reply, sizeof(reply))) == POL_PASS) {
		iot_submit(smtp_auth_iot(s->host), smtp_auth_work, smtp_auth_done, j, NULL);
		return;
	}
	log_info("%s: " SMTP_CLIENT_FMT ": AUTH for sasl_username=%s refused by the rules before the password check",
	    s->idstr, SMTP_CLIENT(s), j->name);
	trace_session(s->id, TR_AUTH, "refused user=%s", j->name);
	smtp_auth_job_free(j);
	s->waiting = 0;
	if (smtp_reply(s, "%s", reply) == -1)
		return;
	if (out == POL_CLOSE) {
		smtp_close(s);
		return;
	}
	bufferevent_enable(s->bev, EV_READ);
	if (later)
		smtp_process(s);
}

static void
smtp_auth_attempt_done(uint64_t owner, const struct lb_verdict *v)
{
	smtp_auth_attempt_end(owner, v, 1);
}

/*
 * smtp_auth_check - verify name and password off the loop, after the auth_attempt rules if there are any. Takes
 * nothing; password is wiped by the caller.
 */
static void
smtp_auth_check(struct smtp_session *s, const char *name, const char *password)
{
	struct smtp_auth_job	*j = xcalloc(1, sizeof(*j));
	struct smtp_auth_args	 args = { s->id, name };
	struct lb_verdict	 v;
	struct lb_run		*run;

	j->session = s->id;
	util_strlcpy(j->name, name, sizeof(j->name));
	if (lb_directory_password(s->gen, name, j->user, sizeof(j->user), j->hash, sizeof(j->hash)) == -1)
		j->user[0] = '\0';
	util_strlcpy(j->password, password, sizeof(j->password));
	s->waiting = 1;
	bufferevent_disable(s->bev, EV_READ);
	/* The client's deadline stops while we check and hold back a failure; the next line gets a new one. */
	evtimer_del(s->timer);
	if (!lb_gen_has_stage(s->gen, LB_S_AUTH_ATTEMPT)) {
		iot_submit(smtp_auth_iot(s->host), smtp_auth_work, smtp_auth_done, j, NULL);
		return;
	}
	if (smtp_auth_asking == NULL)
		smtp_auth_asking = idmap_new();
	idmap_put(smtp_auth_asking, s->id, j);
	if (lb_run_start(s->gen, s->host->base, LB_S_AUTH_ATTEMPT, smtp_auth_push, &args, s->id,
	    smtp_auth_attempt_done, &v, &run) == 0)
		smtp_auth_attempt_end(s->id, &v, 0);	/* no rule waited */
}

/* smtp_auth_field_ok - 1 when n octets at p can be used whole as a name (max PROTO_ADDR_MAX) or password. */
static int
smtp_auth_field_ok(const char *p, size_t n, size_t max)
{
	return n <= max && memchr(p, '\0', n) == NULL;
}

/* smtp_b64 - decode a client response; -1 when it is not base64 (or too long). */
static int
smtp_b64(const char *in, char *out, size_t size, size_t *len)
{
	if (mbedtls_base64_decode((unsigned char *)out, size - 1, len, (const unsigned char *)in, strlen(in)) != 0)
		return -1;
	out[*len] = '\0';
	return 0;
}

static void
smtp_auth_plain(struct smtp_session *s, const char *b64)
{
	char		 buf[SMTP_AUTH_DECODED_MAX];
	size_t		 len, nz, nc, np;
	const char	*authz, *authc, *pass, *end;

	smtp_enter_state(s, SMTP_S_READY);
	if (smtp_b64(b64, buf, sizeof(buf), &len) == -1) {
		smtp_reply(s, "501 5.5.2 Error: cannot decode the AUTH response");
		return;
	}
	/* authzid NUL authcid NUL password (RFC 4616 2): exactly two NULs, so three fields, none of them cut. */
	end = buf + len;
	authz = buf;
	authc = memchr(authz, '\0', len);
	pass = authc != NULL ? memchr(authc + 1, '\0', (size_t)(end - authc - 1)) : NULL;
	if (authc != NULL)
		authc++;
	if (pass != NULL)
		pass++;
	nz = authc != NULL ? (size_t)(authc - 1 - authz) : 0;
	nc = pass != NULL ? (size_t)(pass - 1 - authc) : 0;
	np = pass != NULL ? (size_t)(end - pass) : 0;
	if (authc == NULL || pass == NULL || nc == 0 || !smtp_auth_field_ok(pass, np, SMTP_AUTH_PASSWORD_MAX) ||
	    nz > PROTO_ADDR_MAX || nc > PROTO_ADDR_MAX || (nz > 0 && (nz != nc || memcmp(authz, authc, nz) != 0))) {
		explicit_bzero(buf, sizeof(buf));
		smtp_reply(s, "501 5.5.2 Error: malformed AUTH PLAIN response");
		return;
	}
	smtp_auth_check(s, authc, pass);
	explicit_bzero(buf, sizeof(buf));
}

/* smtp_auth_line - the client's answer to a 334 challenge. */
void
smtp_auth_line(struct smtp_session *s, const char *line)
{
	char	 buf[SMTP_AUTH_DECODED_MAX];
	size_t	 len;

	if (strcmp(line, "*") == 0) {
		smtp_enter_state(s, SMTP_S_READY);
		smtp_reply(s, "501 5.7.0 Authentication aborted");
		return;
	}
	switch (s->auth_step) {
	case SMTP_AUTH_PLAIN:
		smtp_auth_plain(s, line);
		return;
	case SMTP_AUTH_LOGIN_USER:
		if (smtp_b64(line, buf, sizeof(buf), &len) == -1 || len == 0) {
			smtp_enter_state(s, SMTP_S_READY);
			smtp_reply(s, "501 5.5.2 Error: cannot decode the AUTH response");
			return;
		}
		if (!smtp_auth_field_ok(buf, len, PROTO_ADDR_MAX)) {
			explicit_bzero(buf, sizeof(buf));
			smtp_enter_state(s, SMTP_S_READY);
			smtp_reply(s, SMTP_AUTH_MALFORMED);
			return;
		}
		util_strlcpy(s->auth_name, buf, sizeof(s->auth_name));
		s->auth_step = SMTP_AUTH_LOGIN_PASS;
		smtp_send(s, "334 UGFzc3dvcmQ6");	/* "Password:" */
		return;
	default:
		smtp_enter_state(s, SMTP_S_READY);
		if (smtp_b64(line, buf, sizeof(buf), &len) == -1) {
			smtp_reply(s, "501 5.5.2 Error: cannot decode the AUTH response");
			return;
		}
		if (!smtp_auth_field_ok(buf, len, SMTP_AUTH_PASSWORD_MAX)) {
			explicit_bzero(buf, sizeof(buf));
			smtp_reply(s, SMTP_AUTH_MALFORMED);
			return;
		}
		smtp_auth_check(s, s->auth_name, buf);
		explicit_bzero(buf, sizeof(buf));
		return;
	}
}

void
smtp_cmd_auth(struct smtp_session *s, const char *arg)
{
	char		 mech[32];
	const char	*ir;
	size_t		 n;

	if (!s->tls) {
		smtp_reply(s, "%s", smtp_starttls_offered(s) ? "530 5.7.0 Must issue a STARTTLS command first" :
		    "503 5.5.1 Error: authentication not enabled");
		return;
	}
	if (s->user[0] != '\0') {
		smtp_reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	n = strcspn(arg, " ");
	if (n == 0 || n >= sizeof(mech)) {
		smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	memcpy(mech, arg, n);
	mech[n] = '\0';
	ir = arg[n] == ' ' ? arg + n + 1 : NULL;
	if (strcasecmp(mech, "PLAIN") == 0) {
		s->auth_mech = "PLAIN";
		s->auth_step = SMTP_AUTH_PLAIN;
		if (ir != NULL && strcmp(ir, "=") != 0) {
			smtp_auth_plain(s, ir);
			return;
		}
		smtp_enter_state(s, SMTP_S_AUTH);
		smtp_send(s, "334 ");
	} else if (strcasecmp(mech, "LOGIN") == 0) {
		s->auth_mech = "LOGIN";
		smtp_enter_state(s, SMTP_S_AUTH);
		s->auth_step = SMTP_AUTH_LOGIN_USER;
		if (ir != NULL) {
			smtp_auth_line(s, ir);
			return;
		}
		smtp_send(s, "334 VXNlcm5hbWU6");	/* "Username:" */
	} else
		smtp_reply(s, "504 5.5.4 Error: unsupported authentication mechanism");
}

