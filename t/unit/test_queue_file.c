/*
 * test_queue_file.c - the envelope and the state lines (src/queue/queue_file.c): what qf_env_format() writes,
 * qf_env_parse() reads back the same; files written before the size and auth lines still parse; truncated and
 * garbage input is refused with a reason (envelope) or counted and skipped (state lines), never read past.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "queue_file.h"
#include "tap.h"

#define ID	"0123456789ABCDEF0123"

static void
test_round_trip(void)
{
	struct qf_env	 in, out;
	char		*rcpts[] = { "one@example.test", "two@example.test", "\"odd % + = name\"@example.test" };
	char		*text, *file, err[128];
	size_t		 len, i;

	memset(&in, 0, sizeof(in));
	strcpy(in.id, ID);
	in.time = 1700000000.25;
	strcpy(in.client_ip, "2001:db8::1");
	in.client_port = 41234;
	strcpy(in.helo, "client.example.test");
	strcpy(in.proto, "ESMTPSA");
	strcpy(in.auth, "jdoe+x=y z\001\xc3\xa9");	/* SASL gives any octets: stored as xtext */
	in.size = 123456789012ULL;
	strcpy(in.sender, "alice@example.org");
	in.body_8bit = 1;
	in.smtputf8 = 1;
	in.rcpts = rcpts;
	in.nrcpts = 3;
	ok(qf_env_format(&in, &text, &len, err, sizeof(err)) == 0, "format: %s", err);
	ok(strlen(text) == len, "format: the length is the string's");
	ok(strstr(text, "\nauth jdoe+2Bx+3Dy+20z+01+C3+A9\n") != NULL, "format: auth is xtext: %s", text);
	ok(strncmp(text, QF_MAGIC "\nid " ID "\n", strlen(QF_MAGIC) + 25) == 0, "format: magic line, then id");
	file = malloc(len + 8);
	memcpy(file, text, len);
	memcpy(file + len, "body\r\n", 7);
	ok(qf_env_parse(file, len + 6, &out, err, sizeof(err)) == 0, "parse what format wrote: %s", err);
	ok(strcmp(out.id, in.id) == 0, "round trip: id");
	ok(out.time == in.time, "round trip: time");
	ok(strcmp(out.client_ip, in.client_ip) == 0 && out.client_port == in.client_port, "round trip: client");
	ok(strcmp(out.helo, in.helo) == 0 && strcmp(out.proto, in.proto) == 0, "round trip: helo, proto");
	ok(strcmp(out.auth, in.auth) == 0, "round trip: auth (%s)", out.auth);
	ok(out.has_size && out.size == in.size, "round trip: size");
	ok(strcmp(out.sender, in.sender) == 0, "round trip: sender");
	ok(out.body_8bit && out.smtputf8, "round trip: params");
	ok(out.nrcpts == 3, "round trip: three recipients");
	for (i = 0; i < out.nrcpts && i < 3; i++)
		ok(strcmp(out.rcpts[i], rcpts[i]) == 0, "round trip: recipient %zu", i);
	ok(out.body_offset == len, "the message starts after the end line");
	qf_env_free(&out);

	/* The null sender and no auth, no params. */
	in.sender[0] = in.auth[0] = '\0';
	in.body_8bit = in.smtputf8 = 0;
	free(text);
	ok(qf_env_format(&in, &text, &len, err, sizeof(err)) == 0, "format: null sender");
	ok(strstr(text, "\nsender \n") != NULL && strstr(text, "\nauth") == NULL && strstr(text, "\nparam") == NULL,
	    "format: empty sender line, no auth, no param: %s", text);
	ok(qf_env_parse(text, len, &out, err, sizeof(err)) == 0 && out.sender[0] == '\0' && out.auth[0] == '\0' &&
	    !out.body_8bit, "round trip: null sender");
	qf_env_free(&out);
	free(text);
	free(file);

	/* What cannot be one line is refused, not written. */
	strcpy(in.helo, "evil\r\nrcpt x@y");
	ok(qf_env_format(&in, &text, &len, err, sizeof(err)) == -1 && text == NULL, "format: CR LF in a field");
	strcpy(in.helo, "ok");
	in.nrcpts = 0;
	ok(qf_env_format(&in, &text, &len, err, sizeof(err)) == -1, "format: no recipient");
}

static void
test_env_bad(void)
{
	static const struct { const char *name, *input, *why; } cases[] = {
		{ "empty", "", "not a luamta" },
		{ "other magic", "LUAMTA-QUEUE 2\nid " ID "\nrcpt a@b\nend\n", "not a luamta" },
		{ "magic without LF", "LUAMTA-QUEUE 1", "not a luamta" },
		{ "no end line", QF_MAGIC "\nid " ID "\nrcpt a@b\n", "no end line" },
		{ "cut inside a line", QF_MAGIC "\nid " ID "\nrcpt a@b\nen", "no end line" },
		{ "no recipient", QF_MAGIC "\nid " ID "\nsender a@b\nend\n", "no recipient" },
		{ "no id", QF_MAGIC "\nrcpt a@b\nend\n", "no valid id" },
		{ "short id", QF_MAGIC "\nid 0123\nrcpt a@b\nend\n", "no valid id" },
		{ "binary", "\x00\xff\xfe\n\n\n", "not a luamta" },
	};
	struct qf_env	 env;
	char		 err[128];
	size_t		 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		ok(qf_env_parse(cases[i].input, strlen(cases[i].input) + (i == 8 ? 6 : 0), &env, err,
		    sizeof(err)) == -1, "refused: %s", cases[i].name);
		ok(strstr(err, cases[i].why) != NULL, "%s: reason \"%s\"", cases[i].name, err);
		ok(env.rcpts == NULL && env.nrcpts == 0, "%s: nothing owned", cases[i].name);
	}
	/* A NUL inside the envelope. */
	{
		static const char	 nul[] = QF_MAGIC "\nid " ID "\nrcpt a\0@b\nend\n";

		ok(qf_env_parse(nul, sizeof(nul) - 1, &env, err, sizeof(err)) == -1, "refused: a NUL in a line");
	}
	/* Files from before the size and auth lines; unknown lines are skipped. */
	{
		static const char	 old[] = QF_MAGIC "\nid " ID "\ntime 1.5\nclient 127.0.0.1 25\nhelo h\nproto SMTP\n"
		    "sender \nparam BODY=8BITMIME\nlater-addition x y z\nrcpt a@b\nend\nmsg";

		ok(qf_env_parse(old, sizeof(old) - 1, &env, err, sizeof(err)) == 0, "an older envelope: %s", err);
		ok(!env.has_size && env.size == 0 && env.auth[0] == '\0', "an older envelope: no size, no auth");
		ok(env.body_8bit && !env.smtputf8 && env.client_port == 25, "an older envelope: fields");
		ok(env.body_offset == sizeof(old) - 1 - 3, "an older envelope: the body offset");
		qf_env_free(&env);
	}
}

static void
test_state(void)
{
	static const char	 lines[] =
	    "0 deferred 4.4.1 connect to mx: refused\n"
	    "attempt 1700000000\n"
	    "1 bounced 5.1.1 550 no such user\n"
	    "0 delivered 250 ok\n"
	    "0 deferred 4.0.0 after delivered: ignored for the state\n"
	    "2 held 4.3.2 external delivery is off\n"
	    "warned 1700000100\n"
	    "attempt 1700000200\n"
	    "7 delivered out of range\n"
	    "x garbage\n"
	    "3 arrived a word we do not know\n"
	    "3 deferred 4.4.2 torn";	/* no LF: the append never finished */
	struct qf_state	 st;
	char		 err[128], buf[64];
	size_t		 n;

	ok(qf_state_parse(lines, sizeof(lines) - 1, 4, &st, err, sizeof(err)) == 0, "state lines parse");
	ok(st.attempts == 2 && st.warned == 1, "attempts %d, warned %d", st.attempts, st.warned);
	ok(st.rcpts[0].state == QF_DELIVERED, "delivered stays delivered");
	ok(st.rcpts[0].last != NULL && strcmp(st.rcpts[0].last, "deferred 4.0.0 after delivered: ignored for the "
	    "state") == 0, "the latest line is kept for display");
	ok(st.rcpts[1].state == QF_BOUNCED && strcmp(st.rcpts[1].detail, "5.1.1 550 no such user") == 0,
	    "bounced, with its detail");
	ok(st.rcpts[2].state == QF_HELD && strcmp(st.rcpts[2].last, "held 4.3.2 external delivery is off") == 0,
	    "held");
	ok(st.rcpts[3].state == QF_QUEUED && st.rcpts[3].last == NULL, "a torn last line never happened");
	ok(st.bad == 3, "three lines of no known shape (%zu)", st.bad);
	qf_state_free(&st);

	ok(qf_state_parse("", 0, 2, &st, err, sizeof(err)) == 0 && st.rcpts[1].state == QF_QUEUED &&
	    st.attempts == 0, "no state file: all queued");
	qf_state_free(&st);
	ok(qf_state_parse("\x00\x01\n\xff\xfe\n", 6, 1, &st, err, sizeof(err)) == 0 && st.bad == 2 &&
	    st.rcpts[0].state == QF_QUEUED, "binary garbage is counted, not read as outcomes");
	qf_state_free(&st);
	ok(qf_state_parse("99999999999999999999999 delivered x\n", 36, 1, &st, err, sizeof(err)) == 0 &&
	    st.bad == 1, "an index that overflows is garbage");
	qf_state_free(&st);

	/* Writing: what qf_state_line writes, qf_state_parse reads. */
	n = qf_state_line(buf, sizeof(buf), 1, QF_DEFERRED, "4.4.1", "line one\r\nline two");
	ok(n == strlen(buf) && strcmp(buf, "1 deferred 4.4.1 line one  line two\n") == 0, "deferred line: %s", buf);
	ok(qf_state_parse(buf, n, 2, &st, err, sizeof(err)) == 0 && st.rcpts[1].state == QF_DEFERRED &&
	    strcmp(st.rcpts[1].detail, "4.4.1 line one  line two") == 0, "round trip: deferred");
	qf_state_free(&st);
	n = qf_state_line(buf, sizeof(buf), 0, QF_DELIVERED, "2.0.0", "250 ok");
	ok(strcmp(buf, "0 delivered 250 ok\n") == 0, "delivered line: no dsn");
	n = qf_state_line(buf, 24, 0, QF_BOUNCED, "5.0.0", "a text much longer than the buffer it goes into");
	ok(n == 23 && buf[22] == '\n' && buf[23] == '\0', "a cut line keeps its LF");
	ok(qf_state_line(buf, sizeof(buf), 0, QF_QUEUED, "", "") == 0, "no line for queued");
	n = qf_state_event(buf, sizeof(buf), "attempt", 1700000000.4);
	ok(strcmp(buf, "attempt 1700000000\n") == 0 && n == 19, "attempt line");
}

int
main(void)
{
	test_round_trip();
	test_env_bad();
	test_state();
	return tap_done();
}
