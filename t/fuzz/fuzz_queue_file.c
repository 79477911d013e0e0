/*
 * fuzz_queue_file.c - libFuzzer target for src/queue/queue_file.c. The first octet picks the parser: even, the input
 * is a queue file (envelope and message); odd, state lines for a message of a few recipients. Checks that the
 * parsers stay inside the input, that every field ends with a NUL inside its bounds, that an envelope that
 * parses formats and parses again to the same fields, and that state lines agree with the recipient count.
 * Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue_file.h"

#define FUZZ_IN_MAX	65536

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_bounded(const char *field, size_t size)
{
	assert(memchr(field, '\0', size) != NULL);
}

static void
fuzz_env(const char *buf, size_t len)
{
	struct qf_env	 env, again;
	char		 err[128], *text;
	size_t		 tlen, i;

	if (qf_env_parse(buf, len, &env, err, sizeof(err)) == -1) {
		fuzz_bounded(err, sizeof(err));
		assert(env.rcpts == NULL && env.nrcpts == 0);
		return;
	}
	assert(env.body_offset <= len && env.nrcpts > 0 && env.nrcpts <= QF_RCPTS_MAX);
	fuzz_bounded(env.id, sizeof(env.id));
	fuzz_bounded(env.client_ip, sizeof(env.client_ip));
	fuzz_bounded(env.helo, sizeof(env.helo));
	fuzz_bounded(env.proto, sizeof(env.proto));
	fuzz_bounded(env.auth, sizeof(env.auth));
	fuzz_bounded(env.sender, sizeof(env.sender));
	/* Fields came from single lines, so they format; the client field may have lost a trailing space. */
	if (qf_env_format(&env, &text, &tlen, err, sizeof(err)) == 0) {
		assert(strlen(text) == tlen);
		assert(qf_env_parse(text, tlen, &again, err, sizeof(err)) == 0);
		assert(strcmp(again.id, env.id) == 0 && strcmp(again.sender, env.sender) == 0);
		assert(strcmp(again.helo, env.helo) == 0 && strcmp(again.auth, env.auth) == 0);
		assert(again.size == env.size && again.nrcpts == env.nrcpts && again.body_offset == tlen);
		for (i = 0; i < env.nrcpts; i++)
			assert(strcmp(again.rcpts[i], env.rcpts[i]) == 0);
		qf_env_free(&again);
		free(text);
	}
	qf_env_free(&env);
}

static void
fuzz_state(const char *buf, size_t len, size_t nrcpts)
{
	struct qf_state	 st;
	char		 err[128], line[QF_TEXT_MAX + 64];
	size_t		 i, n;

	assert(qf_state_parse(buf, len, nrcpts, &st, err, sizeof(err)) == 0);
	assert(st.nrcpts == nrcpts);
	for (i = 0; i < nrcpts; i++) {
		const struct qf_rcpt_status	*r = &st.rcpts[i];

		assert((r->last == NULL) == (r->state == QF_QUEUED));
		if (r->last != NULL) {
			assert(r->detail >= r->last && r->detail <= r->last + strlen(r->last));
			n = qf_state_line(line, sizeof(line), i, r->state, "4.0.0", r->detail);
			assert(n > 0 && n == strlen(line) && line[n - 1] == '\n');
			assert(memchr(line, '\n', n - 1) == NULL);
		}
	}
	qf_state_free(&st);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*buf;

	if (size < 1 || size > FUZZ_IN_MAX)
		return 0;
	/* A copy of exactly the input, no NUL after it: a read past the end is an ASan error. */
	buf = malloc(size - 1 ? size - 1 : 1);
	memcpy(buf, data + 1, size - 1);
	if (data[0] % 2 == 0)
		fuzz_env(buf, size - 1);
	else
		fuzz_state(buf, size - 1, (size_t)(data[0] >> 1) % 8);
	free(buf);
	return 0;
}
