/*
 * fuzz_smtp_auth.c - libFuzzer target for the AUTH responses of src/smtp/smtp_auth.c (PLAIN, RFC 4616; LOGIN). The
 * file is included whole; the session around it is replaced by stubs that record the reply and the credential
 * handed to the password check. Checks: a response is either refused with a 501 or checked, never both; what is
 * checked is exactly what the client encoded (no field cut at a NUL, none truncated, PLAIN with exactly three
 * fields and authzid empty or equal to authcid); the exchange ends unless a 334 asked for more. Built and run by
 * t/fuzz/run.
 */
#include "../../src/smtp/smtp_auth.c"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct event_base	*fuzz_base;
static char			 fuzz_replied[512];	/* the last reply, "" if none */
static int			 fuzz_checked;		/* the password check was asked for */
static char			 fuzz_name[PROTO_ADDR_MAX + 1];
static char			 fuzz_pass[SMTP_AUTH_PASSWORD_MAX + 1];

/* The session around smtp_auth.c. */
void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	s->state = st;
}

void
smtp_send(struct smtp_session *s, const char *line)
{
	assert(fuzz_replied[0] == '\0');
	util_strlcpy(fuzz_replied, line, sizeof(fuzz_replied));
}

int
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list	 ap;

	assert(fuzz_replied[0] == '\0');
	va_start(ap, fmt);
	vsnprintf(fuzz_replied, sizeof(fuzz_replied), fmt, ap);
	va_end(ap);
	return 0;
}

int
smtp_starttls_offered(const struct smtp_session *s)
{
	return 1;
}

void
iot_submit(struct iothread *t, iot_work_fn *work, iot_done_fn *done, void *arg, const char *sync_dir)
{
	struct smtp_auth_job	*j = arg;

	assert(!fuzz_checked);
	fuzz_checked = 1;
	util_strlcpy(fuzz_name, j->name, sizeof(fuzz_name));
	util_strlcpy(fuzz_pass, j->password, sizeof(fuzz_pass));
	free(j);
}

int
lb_directory_password(struct lb_gen *g, const char *name, char *addr, size_t addrsize, char *hash, size_t hashsize)
{
	return -1;
}

void
smtp_host_gone(void)
{
}

/* No auth_attempt or auth_failed stage: the rules are not what this target is about. */
int
lb_gen_has_stage(const struct lb_gen *g, enum lb_stage st)
{
	return 0;
}

int
lb_run_start(struct lb_gen *g, struct event_base *b, enum lb_stage st, lb_push_fn *push, void *arg, uint64_t owner,
    lb_done_fn *done, struct lb_verdict *out, struct lb_run **pending)
{
	abort();
}

void
lb_session_push(struct lua_State *L, uint64_t session_id)
{
	abort();
}

/* The host's password thread is set in fuzz_reset, so smtp_auth.c never makes one. */
struct iothread *
iot_new(struct event_base *b)
{
	abort();
}

/* Never reached from a response: only a finished check (which the stub above never runs) gets there. */
struct smtp_session *
smtp_session_find(uint64_t id)
{
	abort();
}

struct smtp_wait *
smtp_wait_new(enum smtp_after after, enum lb_stage st, const char *def)
{
	abort();
}

void
smtp_ask(struct smtp_session *s, struct smtp_wait *w)
{
	abort();
}

void
smtp_process(struct smtp_session *s)
{
	abort();
}

/* fuzz_b64 - base64 of n octets at p into out (NUL-terminated). */
static void
fuzz_b64(const uint8_t *p, size_t n, char *out, size_t size)
{
	size_t	 olen;

	assert(mbedtls_base64_encode((unsigned char *)out, size, &olen, p, n) == 0);
	out[olen] = '\0';
}

/* fuzz_same - the checked field is exactly the n octets at p. */
static int
fuzz_same(const char *checked, const uint8_t *p, size_t n)
{
	return strlen(checked) == n && memcmp(checked, p, n) == 0;
}

/* A PLAIN response's decoded octets: checked exactly when they are authz NUL authc NUL pass, whole. */
static void
fuzz_plain_expect(const uint8_t *d, size_t n)
{
	const uint8_t	*z1, *z2;
	size_t		 nz, nc, np;

	z1 = memchr(d, '\0', n);
	z2 = z1 != NULL ? memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - d)) : NULL;
	if (z2 == NULL) {
		assert(!fuzz_checked && strncmp(fuzz_replied, "501 ", 4) == 0);
		return;
	}
	nz = (size_t)(z1 - d);
	nc = (size_t)(z2 - z1 - 1);
	np = n - (size_t)(z2 + 1 - d);
	if (!fuzz_checked) {
		assert(strncmp(fuzz_replied, "501 ", 4) == 0);
		return;
	}
	/* Checked: three fields, none with a NUL, none cut, authzid empty or the same as authcid. */
	assert(memchr(z2 + 1, '\0', np) == NULL);
	assert(nc > 0 && nc <= PROTO_ADDR_MAX && np <= SMTP_AUTH_PASSWORD_MAX);
	assert(nz == 0 || (nz == nc && memcmp(d, z1 + 1, nc) == 0));
	assert(fuzz_same(fuzz_name, z1 + 1, nc));
	assert(fuzz_same(fuzz_pass, z2 + 1, np));
}

static void
fuzz_reset(struct smtp_session *s)
{
	static struct bufferevent	*bev;
	static struct event		*timer;
	static struct smtp_host		 host;

	if (fuzz_base == NULL) {
		fuzz_base = event_base_new();
		bev = bufferevent_socket_new(fuzz_base, -1, 0);
		timer = evtimer_new(fuzz_base, smtp_auth_fail_reply, NULL);
		host.base = fuzz_base;
		host.auth_iot = (struct iothread *)&host;	/* never used: iot_submit above is a stub */
	}
	memset(s, 0, sizeof(*s));
	s->host = &host;
	s->tls = 1;
	s->bev = bev;
	s->timer = timer;
	s->state = SMTP_S_READY;
	fuzz_replied[0] = '\0';
	fuzz_checked = 0;
	fuzz_name[0] = fuzz_pass[0] = '\0';
}

/* The input: one mode octet, then octets. Mode picks raw client lines or octets the fuzzer wants encoded. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_session	 s;
	static char			 line[PROTO_AUTH_LINE_MAX + 64], b64[PROTO_AUTH_LINE_MAX + 64];
	const uint8_t			*d;
	const char			*nl;
	size_t				 n, half;

	if (size < 1)
		return 0;
	d = data + 1;
	n = size - 1;
	if (n > SMTP_AUTH_DECODED_MAX - 1)
		n = SMTP_AUTH_DECODED_MAX - 1;
	fuzz_reset(&s);
	switch (data[0] % 5) {
	case 0:		/* AUTH PLAIN <encoded octets>: the decoded response */
		fuzz_b64(d, n, b64, sizeof(b64));
		snprintf(line, sizeof(line), "PLAIN %s", b64);
		smtp_cmd_auth(&s, line);
		fuzz_plain_expect(d, n);
		assert(s.state == SMTP_S_READY);
		break;
	case 1:		/* AUTH PLAIN, 334, then the encoded octets */
		smtp_cmd_auth(&s, "PLAIN");
		assert(strcmp(fuzz_replied, "334 ") == 0 && s.state == SMTP_S_AUTH);
		fuzz_replied[0] = '\0';
		fuzz_b64(d, n, b64, sizeof(b64));
		smtp_auth_line(&s, b64);
		if (strcmp(b64, "*") != 0)
			fuzz_plain_expect(d, n);
		assert(s.state == SMTP_S_READY);
		break;
	case 2:		/* AUTH LOGIN: user and password encoded, split at the first LF of the octets */
		nl = memchr(d, '\n', n);
		half = nl != NULL ? (size_t)((const uint8_t *)nl - d) : n / 2;
		smtp_cmd_auth(&s, "LOGIN");
		assert(strncmp(fuzz_replied, "334 ", 4) == 0);
		fuzz_replied[0] = '\0';
		fuzz_b64(d, half, b64, sizeof(b64));
		smtp_auth_line(&s, b64);
		if (s.state != SMTP_S_AUTH) {	/* the name was refused */
			assert(strncmp(fuzz_replied, "501 ", 4) == 0 && !fuzz_checked);
			assert(half == 0 || half > PROTO_ADDR_MAX || memchr(d, '\0', half) != NULL);
			break;
		}
		assert(half > 0 && half <= PROTO_ADDR_MAX && memchr(d, '\0', half) == NULL);
		assert(strcmp(fuzz_replied, "334 UGFzc3dvcmQ6") == 0);
		fuzz_replied[0] = '\0';
		if (nl != NULL)
			half++;
		fuzz_b64(d + half, n - half, b64, sizeof(b64));
		smtp_auth_line(&s, b64);
		assert(s.state == SMTP_S_READY);
		if (fuzz_checked) {
			assert(fuzz_same(fuzz_name, d, nl != NULL ? half - 1 : half));
			assert(fuzz_same(fuzz_pass, d + half, n - half));
		} else {
			assert(strncmp(fuzz_replied, "501 ", 4) == 0);
			assert(n - half > SMTP_AUTH_PASSWORD_MAX || memchr(d + half, '\0', n - half) != NULL);
		}
		break;
	default:	/* raw lines as a client sends them: the AUTH command, then answers to 334 */
		n = size - 1 < sizeof(line) - 1 ? size - 1 : sizeof(line) - 1;
		memcpy(line, d, n);
		line[n] = '\0';
		nl = strchr(line, '\n');
		if (nl != NULL)
			line[nl - line] = '\0';
		smtp_cmd_auth(&s, line);
		while (nl != NULL && s.state == SMTP_S_AUTH && !fuzz_checked) {
			const char	*next = nl + 1;

			assert(strncmp(fuzz_replied, "334 ", 4) == 0);
			fuzz_replied[0] = '\0';
			nl = strchr(next, '\n');
			if (nl != NULL)
				line[nl - line] = '\0';
			smtp_auth_line(&s, next);
		}
		/* Every line got its one answer: a 334, a refusal, or a check. */
		assert(fuzz_checked ? fuzz_replied[0] == '\0' : fuzz_replied[0] != '\0');
		assert(!fuzz_checked || (strlen(fuzz_name) > 0 && strlen(fuzz_name) <= PROTO_ADDR_MAX));
		break;
	}
	return 0;
}
