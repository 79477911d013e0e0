/*
 * test_queuectl.c - the selectors of `luamta queue` (src/tools/queuectl.c): durations ("2h", "1h30m"), state names,
 * the command line (ALL, postsuper's "ALL deferred", options given twice or without a value), and which
 * messages match (sender, pending recipients only, domain, age, state, every selector at once).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "queuectl.h"
#include "spool.h"
#include "tap.h"

#define ID1	"0123456789ABCDEF0123"
#define ID2	"0123456789ABCDEF0124"

static void
test_durations(void)
{
	static const struct { const char *name, *input; int want; double seconds; } cases[] = {
		{ "bare seconds", "90", 0, 90 },
		{ "seconds", "90s", 0, 90 },
		{ "minutes", "15m", 0, 900 },
		{ "hours", "2h", 0, 7200 },
		{ "days", "3d", 0, 259200 },
		{ "weeks", "1w", 0, 604800 },
		{ "hours and minutes", "1h30m", 0, 5400 },
		{ "zero", "0", 0, 0 },
		{ "empty", "", -1, 0 },
		{ "a unit alone", "h", -1, 0 },
		{ "an unknown unit", "2x", -1, 0 },
		{ "a bare number after a unit", "1h30", -1, 0 },
		{ "a sign", "-2h", -1, 0 },
		{ "a space", "2 h", -1, 0 },
		{ "a fraction", "1.5h", -1, 0 },
		{ "too many digits", "1234567890s", -1, 0 },
		{ "more than a century", "99999w", -1, 0 },
	};
	size_t	 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double	 got = -1;
		int	 rc = queuectl_duration(cases[i].input, &got);

		ok(rc == cases[i].want, "duration %s (\"%s\"): rc %d", cases[i].name, cases[i].input, rc);
		if (rc == 0 && cases[i].want == 0)
			ok(got == cases[i].seconds, "duration %s: %.0f s, want %.0f", cases[i].name, got,
			    cases[i].seconds);
		if (rc == -1)
			ok(got == -1, "duration %s: nothing set on error", cases[i].name);
	}
}

static void
test_states(void)
{
	static const struct { const char *name, *input; unsigned want; } cases[] = {
		{ "deferred", "deferred", QCTL_DEFERRED },
		{ "held", "held", QCTL_HELD },
		{ "hold, as Postfix names the queue", "hold", QCTL_HELD },
		{ "active", "active", QCTL_ACTIVE },
		{ "queued", "queued", QCTL_QUEUED },
		{ "two with a comma", "deferred,held", QCTL_DEFERRED | QCTL_HELD },
		{ "an unknown name", "bounced", 0 },
		{ "a prefix of a name", "defer", 0 },
		{ "a trailing comma", "held,", 0 },
		{ "empty", "", 0 },
	};
	size_t	 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(queuectl_states(cases[i].input) == cases[i].want, "state %s", cases[i].name);
}

static int
parse(const char *line, struct queuectl_args *a, char *err, size_t errsize)
{
	static char	 buf[512];
	char		*argv[32], *p, *save = NULL;
	int		 argc = 0;

	snprintf(buf, sizeof(buf), "%s", line);
	for (p = strtok_r(buf, " ", &save); p != NULL && argc < 32; p = strtok_r(NULL, " ", &save))
		argv[argc++] = p;
	return queuectl_parse(argc, argv, a, err, errsize);
}

static void
test_parse(void)
{
	static const struct { const char *name, *input; int want; } cases[] = {
		{ "delete ALL deferred", "delete ALL deferred", 0 },
		{ "every selector at once", "hold --from a@example.org --to b@example.test --domain example.test "
		    "--older-than 2h --state deferred,queued --dry-run", 0 },
		{ "-c FILE anywhere", "list -c /etc/luamta.lua --pending --json", 0 },
		{ "an option given twice", "delete --from a@example.org --from b@example.org", -1 },
		{ "an option without its value", "delete --domain", -1 },
		{ "a bad duration", "delete --older-than soon", -1 },
		{ "a bad state", "delete --state bounced", -1 },
		{ "an unknown option", "delete --everything", -1 },
		{ "ALL deferred, then --state", "delete ALL deferred --state held", -1 },
	};
	struct queuectl_args	 a;
	char			 err[256];
	size_t			 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		ok(parse(cases[i].input, &a, err, sizeof(err)) == cases[i].want, "parse %s (%s)", cases[i].name,
		    err);
		if (cases[i].want == 0)
			queuectl_args_free(&a);
		else
			ok(err[0] != '\0', "parse %s: says why", cases[i].name);
	}
	ok(parse("delete ALL deferred", &a, err, sizeof(err)) == 0 && a.sel.all && a.sel.states == QCTL_DEFERRED &&
	    strcmp(a.sub, "delete") == 0 && a.sel.nids == 0, "ALL deferred is ALL --state deferred");
	queuectl_args_free(&a);
	ok(parse("hold " ID1 " " ID2 " --dry-run", &a, err, sizeof(err)) == 0 && a.sel.nids == 2 && a.dry_run &&
	    strcmp(a.sel.ids[1], ID2) == 0 && queuectl_sel_any(&a.sel), "IDs are selectors");
	queuectl_args_free(&a);
	ok(parse("delete --dry-run", &a, err, sizeof(err)) == 0 && !queuectl_sel_any(&a.sel),
	    "--dry-run alone selects nothing");
	queuectl_args_free(&a);
	ok(parse("list --older-than 1h30m", &a, err, sizeof(err)) == 0 && a.sel.has_older &&
	    a.sel.older_than == 5400, "--older-than keeps its seconds");
	queuectl_args_free(&a);
}

/*
 * msg - a message from sender to rcpts (comma-separated), arrived at t, with the state lines in state, held
 * or not. The caller frees it with spool_msg_free().
 */
static void
msg(struct spool_msg *q, const char *sender, const char *rcpts, double t, const char *state, int held)
{
	char	 buf[1024], err[128];
	char	*list, *p, *save = NULL;
	int	 n;

	n = snprintf(buf, sizeof(buf), "LUAMTA-QUEUE 1\nid %s\ntime %.0f\nclient 192.0.2.1 25\nhelo c.test\n"
	    "proto ESMTP\nsender %s\n", ID1, t, sender);
	list = strdup(rcpts);
	for (p = strtok_r(list, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save))
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "rcpt %s\n", p);
	free(list);
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "end\nSubject: x\r\n\r\nx\r\n");
	memset(q, 0, sizeof(*q));
	if (qf_env_parse(buf, (size_t)n, &q->env, err, sizeof(err)) == -1)
		ok(0, "test message: %s", err);
	if (qf_state_parse(state, strlen(state), q->env.nrcpts, &q->state, err, sizeof(err)) == -1)
		ok(0, "test state: %s", err);
	q->held = held;
}

static void
test_match(void)
{
	static const char *const deferred = "0 delivered 250 2.0.0 Ok\n1 deferred 4.4.1 connect failed\n"
	    "attempt 1700000100\n";
	static const struct {
		const char	*name, *args;
		const char	*sender, *rcpts, *state;
		int		 held;
		int		 want;
	} cases[] = {
		{ "ALL matches a fresh message", "delete ALL", "a@example.org", "x@one.test", "", 0, 1 },
		{ "--from matches the sender, case aside", "delete --from A@Example.ORG", "a@example.org",
		    "x@one.test", "", 0, 1 },
		{ "--from does not match another sender", "delete --from b@example.org", "a@example.org",
		    "x@one.test", "", 0, 0 },
		{ "--from <> matches the null sender", "delete --from <>", "", "x@one.test", "", 0, 1 },
		{ "--from <> does not match a sender", "delete --from <>", "a@example.org", "x@one.test", "", 0, 0 },
		{ "--to matches a pending recipient", "delete --to y@two.test", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 1 },
		{ "--to does not match a delivered recipient", "delete --to x@one.test", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 0 },
		{ "--domain matches a pending recipient's domain", "delete --domain TWO.test", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 1 },
		{ "--domain @domain works too", "delete --domain @two.test", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 1 },
		{ "--domain is not a suffix match", "delete --domain wo.test", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 0 },
		{ "--domain does not match a delivered recipient's domain", "delete --domain one.test",
		    "a@example.org", "x@one.test,y@two.test", deferred, 0, 0 },
		{ "--older-than matches an old message", "delete --older-than 1h", "a@example.org", "x@one.test",
		    "", 0, 1 },
		{ "--older-than does not match a newer one", "delete --older-than 1d", "a@example.org",
		    "x@one.test", "", 0, 0 },
		{ "--state deferred matches after an attempt", "delete --state deferred", "a@example.org",
		    "x@one.test,y@two.test", deferred, 0, 1 },
		{ "--state deferred does not match a fresh message", "delete --state deferred", "a@example.org",
		    "x@one.test", "", 0, 0 },
		{ "--state queued matches a fresh message", "delete --state queued", "a@example.org", "x@one.test",
		    "", 0, 1 },
		{ "--state held matches a message in hold/", "delete ALL hold", "a@example.org",
		    "x@one.test,y@two.test", deferred, 1, 1 },
		{ "--state deferred does not match a held message", "delete ALL deferred", "a@example.org",
		    "x@one.test,y@two.test", deferred, 1, 0 },
		{ "a recipient the rules held makes the message deferred", "delete --state deferred",
		    "a@example.org", "x@one.test", "0 held 4.3.2 external delivery is off\n", 0, 1 },
		{ "--state active is the router's to say", "delete --state active", "a@example.org", "x@one.test",
		    "", 0, -1 },
		{ "--state active,queued matches a fresh message at once", "delete --state active,queued",
		    "a@example.org", "x@one.test", "", 0, 1 },
		{ "every selector, all true", "delete --from a@example.org --domain two.test --to y@two.test "
		    "--older-than 30m --state deferred", "a@example.org", "x@one.test,y@two.test", deferred, 0, 1 },
		{ "every selector, one false", "delete --from a@example.org --domain two.test --to y@two.test "
		    "--older-than 3h --state deferred", "a@example.org", "x@one.test,y@two.test", deferred, 0, 0 },
		{ "an ID matches its message", "delete " ID1, "a@example.org", "x@one.test", "", 0, 1 },
		{ "an ID does not match another", "delete " ID2, "a@example.org", "x@one.test", "", 0, 0 },
		{ "an ID and a selector that fails", "delete " ID1 " --from b@example.org", "a@example.org",
		    "x@one.test", "", 0, 0 },
	};
	double			 now = 1700007200;	/* two hours after the arrival below */
	struct queuectl_args	 a;
	struct spool_msg	 q;
	char			 err[256];
	size_t			 i;
	int			 got;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (parse(cases[i].args, &a, err, sizeof(err)) == -1) {
			ok(0, "match %s: %s", cases[i].name, err);
			continue;
		}
		msg(&q, cases[i].sender, cases[i].rcpts, 1700000000, cases[i].state, cases[i].held);
		got = queuectl_sel_match(&a.sel, &q, now);
		ok(got == cases[i].want, "match %s: %d, want %d", cases[i].name, got, cases[i].want);
		spool_msg_free(&q);
		queuectl_args_free(&a);
	}
	msg(&q, "a@example.org", "x@one.test,y@two.test", 1700000000, deferred, 0);
	ok(!queuectl_rcpt_pending(&q, 0) && queuectl_rcpt_pending(&q, 1), "delivered is not pending, deferred is");
	ok(queuectl_msg_state(&q) == QCTL_DEFERRED, "an attempt on record: deferred");
	spool_msg_free(&q);
}

int
main(void)
{
	test_durations();
	test_states();
	test_parse();
	test_match();
	return tap_done();
}
