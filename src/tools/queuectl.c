/*
 * queuectl.c - the queue command (docs/admin.md, "Queue commands"). It reads the queue through the spool
 * module and holds one message at a time: a directory is walked (spool_walk_*) as the command goes, never listed
 * first. `list` prints one block per message, mailq style (queue ID, size, arrival, sender, then each recipient
 * with its status and last reply); `--json` gives the same for scripts, with each recipient's state, DSN and
 * reply apart. `show` prints a message with its envelope. delete, hold, release, flush and requeue pick messages
 * with selectors (IDs, ALL, --from, --to, --domain, --older-than, --state; all must match) and send one control
 * command per message to the running router, which does the file work, so that nothing races with a delivery;
 * --dry-run prints what would be picked and sends nothing. It never changes a spool file itself.
 *	queuectl_main()		the command
 *	queuectl_parse()	the command line -> subcommand and selectors
 *	queuectl_duration()	"2h", "3d", "1h30m" -> seconds
 *	queuectl_states()	"deferred,held" -> QCTL_ bits
 *	queuectl_sel_match()	does a message match the selectors
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "queuectl.h"
#include "queueid.h"
#include "router.h"
#include "spool.h"
#include "util.h"

#define QUEUECTL_ANSWER_MAX	512
#define QUEUECTL_DURATION_MAX	(100.0 * 366 * 86400)	/* a longer --older-than is a typing error */

/* The commands that change the queue, and the messages each may act on. */
struct queuectl_op {
	const char	*name;
	const char	*done;		/* summary: "Deleted: 3 messages" */
	const char	*verb;		/* "would be deleted", "not deleted" */
	unsigned	 states;	/* QCTL_ states it applies to: hold/ is only for release and delete */
};

static const struct queuectl_op queuectl_ops[] = {
	{ "delete",	"Deleted",	"deleted",	QCTL_FILES | QCTL_ACTIVE },
	{ "hold",	"Held",		"held",		QCTL_QUEUED | QCTL_DEFERRED | QCTL_ACTIVE },
	{ "release",	"Released",	"released",	QCTL_HELD },
	{ "flush",	"Flushed",	"flushed",	QCTL_QUEUED | QCTL_DEFERRED | QCTL_ACTIVE },
	{ "requeue",	"Requeued",	"requeued",	QCTL_QUEUED | QCTL_DEFERRED | QCTL_ACTIVE },
};

/* One run of a command over the selected messages. */
struct queuectl_run {
	const struct config		*cfg;		/* borrowed */
	const struct queuectl_args	*a;		/* borrowed */
	const struct queuectl_op	*op;		/* NULL for list */
	double				 now;
	size_t				 selected;
	size_t				 acted;		/* the router answered ok */
	size_t				 failed;	/* it answered an error, or the ID is in no queue */
	size_t				 held;		/* list: of the selected, how many are held */
	int				 broken;	/* the router could not be reached: stop */
};

/* Parsers ---------------------------------------------------------------------------------------------------- */

int
queuectl_duration(const char *s, double *seconds)
{
	const char	*p = s;
	double		 total = 0, unit;
	int		 parts = 0;

	if (s == NULL || *s == '\0')
		return -1;
	while (*p != '\0') {
		unsigned long	 n = 0;
		int		 digits = 0;

		for (; *p >= '0' && *p <= '9'; p++) {
			if (++digits > 9)
				return -1;
			n = n * 10 + (unsigned long)(*p - '0');
		}
		if (digits == 0)
			return -1;
		switch (*p) {
		case 's':	unit = 1;	break;
		case 'm':	unit = 60;	break;
		case 'h':	unit = 3600;	break;
		case 'd':	unit = 86400;	break;
		case 'w':	unit = 604800;	break;
		case '\0':	/* seconds, but only alone: "1h30" is ambiguous */
			if (parts > 0)
				return -1;
			unit = 1;
			break;
		default:
			return -1;
		}
		if (*p != '\0')
			p++;
		total += (double)n * unit;
		parts++;
	}
	if (total > QUEUECTL_DURATION_MAX)
		return -1;
	*seconds = total;
	return 0;
}

unsigned
queuectl_states(const char *s)
{
	static const struct { const char *name; unsigned bit; } names[] = {
		{ "queued", QCTL_QUEUED }, { "deferred", QCTL_DEFERRED }, { "held", QCTL_HELD },
		{ "hold", QCTL_HELD }, { "active", QCTL_ACTIVE },
	};
	unsigned	 bits = 0;
	size_t		 i, n;

	while (s != NULL && *s != '\0') {
		n = strcspn(s, ",");
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].name) == n && strncmp(s, names[i].name, n) == 0)
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return 0;
		bits |= names[i].bit;
		s += n;
		if (*s == ',' && *++s == '\0')
			return 0;	/* a trailing comma */
	}
	return bits;
}

/* queuectl_value - the value of option argv[*i]: the next argument, once. 0, or -1 with err. */
static int
queuectl_value(int argc, char **argv, int *i, const char **slot, char *err, size_t errsize)
{
	if (*slot != NULL) {
		snprintf(err, errsize, "%s given twice", argv[*i]);
		return -1;
	}
	if (*i + 1 >= argc || strcmp(argv[*i + 1], "-c") == 0) {	/* -c FILE is main()'s */
		snprintf(err, errsize, "%s needs a value", argv[*i]);
		return -1;
	}
	*slot = argv[++*i];
	return 0;
}

int
queuectl_parse(int argc, char **argv, struct queuectl_args *a, char *err, size_t errsize)
{
	struct queuectl_sel	*sel = &a->sel;
	const char		*older = NULL, *state = NULL;
	int			 i;

	memset(a, 0, sizeof(*a));
	sel->ids = xcalloc((size_t)argc + 1, sizeof(*sel->ids));
	for (i = 0; i < argc; i++) {
		const char	*arg = argv[i];

		if (strcmp(arg, "-c") == 0)
			i++;		/* main() took it */
		else if (strcmp(arg, "--json") == 0)
			a->json = 1;
		else if (strcmp(arg, "--pending") == 0)
			a->pending = 1;
		else if (strcmp(arg, "--dry-run") == 0 || strcmp(arg, "-n") == 0)
			a->dry_run = 1;
		else if (strcmp(arg, "--from") == 0) {
			if (queuectl_value(argc, argv, &i, &sel->from, err, errsize) == -1)
				goto fail;
		} else if (strcmp(arg, "--to") == 0) {
			if (queuectl_value(argc, argv, &i, &sel->to, err, errsize) == -1)
				goto fail;
		} else if (strcmp(arg, "--domain") == 0) {
			if (queuectl_value(argc, argv, &i, &sel->domain, err, errsize) == -1)
				goto fail;
		} else if (strcmp(arg, "--older-than") == 0) {
			if (queuectl_value(argc, argv, &i, &older, err, errsize) == -1)
				goto fail;
			if (queuectl_duration(older, &sel->older_than) == -1) {
				snprintf(err, errsize, "--older-than %s: expected a duration such as 90s, 15m, 2h, 3d "
				    "or 1h30m", older);
				goto fail;
			}
			sel->has_older = 1;
		} else if (strcmp(arg, "--state") == 0) {
			if (queuectl_value(argc, argv, &i, &state, err, errsize) == -1)
				goto fail;
			if ((sel->states = queuectl_states(state)) == 0) {
				snprintf(err, errsize, "--state %s: expected queued, deferred, held or active "
				    "(several with commas)", state);
				goto fail;
			}
		} else if (arg[0] == '-') {
			snprintf(err, errsize, "unknown option %s", arg);
			goto fail;
		} else if (a->sub == NULL)
			a->sub = arg;
		else if (strcmp(arg, "ALL") == 0) {
			sel->all = 1;
			/* postsuper's "ALL deferred": a queue name right after ALL */
			if (i + 1 < argc && state == NULL && queuectl_states(argv[i + 1]) != 0) {
				state = argv[++i];
				sel->states = queuectl_states(state);
			}
		} else
			sel->ids[sel->nids++] = arg;	/* checked when it is used, so that it is reported */
	}
	return 0;
fail:
	queuectl_args_free(a);
	return -1;
}

void
queuectl_args_free(struct queuectl_args *a)
{
	free(a->sel.ids);
	a->sel.ids = NULL;
	a->sel.nids = 0;
}

/* queuectl_sel_filters - a selector other than IDs was given. */
static int
queuectl_sel_filters(const struct queuectl_sel *sel)
{
	return sel->all || sel->from != NULL || sel->to != NULL || sel->domain != NULL || sel->has_older ||
	    sel->states != 0;
}

int
queuectl_sel_any(const struct queuectl_sel *sel)
{
	return sel->nids > 0 || queuectl_sel_filters(sel);
}

/* Matching --------------------------------------------------------------------------------------------------- */

unsigned
queuectl_msg_state(const struct spool_msg *q)
{
	size_t	 i;

	if (q->held)
		return QCTL_HELD;
	if (q->state.attempts > 0)
		return QCTL_DEFERRED;
	for (i = 0; i < q->env.nrcpts && i < q->state.nrcpts; i++)
		if (q->state.rcpts[i].state == QF_DEFERRED || q->state.rcpts[i].state == QF_HELD)
			return QCTL_DEFERRED;
	return QCTL_QUEUED;
}

int
queuectl_rcpt_pending(const struct spool_msg *q, size_t i)
{
	if (i >= q->state.nrcpts)
		return 1;
	return q->state.rcpts[i].state != QF_DELIVERED && q->state.rcpts[i].state != QF_BOUNCED;
}

/* queuectl_addr_is - address a is the selector's s: case aside, and "<>" (or "") for the null sender. */
static int
queuectl_addr_is(const char *s, const char *a)
{
	size_t	 n = strlen(s);

	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	return strlen(a) == n && strncasecmp(s, a, n) == 0;
}

/* queuectl_domain_is - address a is in domain d ("example.org" or "@example.org"), case aside. */
static int
queuectl_domain_is(const char *d, const char *a)
{
	const char	*at = strrchr(a, '@');

	if (d[0] == '@')
		d++;
	return at != NULL && strcasecmp(at + 1, d) == 0;
}

int
queuectl_sel_match(const struct queuectl_sel *sel, const struct spool_msg *q, double now)
{
	size_t		 i;
	int		 to = sel->to == NULL, domain = sel->domain == NULL;

	if (sel->nids > 0) {
		for (i = 0; i < sel->nids; i++)
			if (strcmp(sel->ids[i], q->env.id) == 0)
				break;
		if (i == sel->nids)
			return 0;
	}
	if (sel->from != NULL && !queuectl_addr_is(sel->from, q->env.sender))
		return 0;
	if (sel->has_older && !(now - q->env.time > sel->older_than))
		return 0;
	/* Recipients that are done do not count: a message is for a domain while it still has mail for it. */
	for (i = 0; i < q->env.nrcpts && (!to || !domain); i++) {
		if (!queuectl_rcpt_pending(q, i))
			continue;
		if (!to && queuectl_addr_is(sel->to, q->env.rcpts[i]))
			to = 1;
		if (!domain && queuectl_domain_is(sel->domain, q->env.rcpts[i]))
			domain = 1;
	}
	if (!to || !domain)
		return 0;
	if (sel->states == 0 || (sel->states & queuectl_msg_state(q)))
		return 1;
	return (sel->states & QCTL_ACTIVE) ? -1 : 0;
}

/* Control socket --------------------------------------------------------------------------------------------- */

/*
 * queuectl_ask - send "cmd[ id]" to the router and read its one-line answer into answer (without its LF).
 * 0, or -1 when no router answers (said on stderr).
 */
static int
queuectl_ask(const struct config *cfg, const char *cmd, const char *id, char *answer, size_t size)
{
	struct sockaddr_un	 sun;
	ssize_t			 n;
	size_t			 got = 0;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	router_control_path(cfg->spool, sun.sun_path, sizeof(sun.sun_path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "luamta queue %s: no running server answers at %s (%s)\n", cmd, sun.sun_path,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	dprintf(fd, "%s%s%s\n", cmd, id ? " " : "", id ? id : "");
	while (got < size - 1 && (n = read(fd, answer + got, size - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	answer[got] = '\0';
	answer[strcspn(answer, "\r\n")] = '\0';
	if (got == 0)
		util_strlcpy(answer, "error: the router closed the connection without an answer", size);
	return 0;
}

/* queuectl_is_active - ask the router whether it is delivering message id now: 1, 0, or -1 (no router). */
static int
queuectl_is_active(struct queuectl_run *r, const char *id)
{
	char	 answer[QUEUECTL_ANSWER_MAX];

	if (queuectl_ask(r->cfg, "active", id, answer, sizeof(answer)) == -1) {
		r->broken = 1;
		return -1;
	}
	return strcmp(answer, "ok: active") == 0;
}

/* Output ----------------------------------------------------------------------------------------------------- */

static void
queuectl_json_string(const char *s)
{
	if (s == NULL) {
		printf("null");
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static const char *
queuectl_status(const struct spool_msg *q, size_t i)
{
	if (q->state.rcpts[i].last != NULL)
		return q->state.rcpts[i].last;
	return q->held ? "held" : "queued";
}

static int
queuectl_is_dsn(const char *s, size_t n)
{
	size_t	 dots = 0, k;

	if (n < 5 || n > 11 || (s[0] < '2' || s[0] > '5') || s[1] != '.')
		return 0;
	for (k = 1; k < n; k++)
		if (s[k] == '.')
			dots++;
		else if (s[k] < '0' || s[k] > '9')
			return 0;
	return dots == 2 && s[n - 1] != '.';
}

/*
 * queuectl_rcpt_parts - recipient i's state word, DSN (into dsn; "" if none) and last reply (NULL if none), from
 * its state line: "<dsn> <reply>" after the word, except that a delivered line keeps the reply only (its DSN is
 * the reply's enhanced code, or 2.0.0).
 */
static const char *
queuectl_rcpt_parts(const struct spool_msg *q, size_t i, char *dsn, size_t dsnsize, const char **reply)
{
	static const char *const words[] = { "queued", "delivered", "bounced", "deferred", "held" };
	const struct qf_rcpt_status	*st = &q->state.rcpts[i];
	const char			*d = st->detail ? st->detail : "";
	size_t				 n;

	dsn[0] = '\0';
	*reply = NULL;
	if (st->state == QF_QUEUED || st->last == NULL)
		return words[QF_QUEUED];
	*reply = d;
	if (st->state == QF_DELIVERED) {
		/* "250 2.0.0 Ok: queued as ..." */
		if (strlen(d) > 4 && d[3] == ' ' && (n = strcspn(d + 4, " ")) > 0 && queuectl_is_dsn(d + 4, n) &&
		    n < dsnsize) {
			memcpy(dsn, d + 4, n);
			dsn[n] = '\0';
		} else
			util_strlcpy(dsn, "2.0.0", dsnsize);
	} else if ((n = strcspn(d, " ")) > 0 && queuectl_is_dsn(d, n) && n < dsnsize) {
		memcpy(dsn, d, n);
		dsn[n] = '\0';
		*reply = d[n] == ' ' ? d + n + 1 : d + n;
	}
	return words[st->state];
}

static const char *
queuectl_state_word(unsigned st)
{
	return st == QCTL_HELD ? "held" : st == QCTL_DEFERRED ? "deferred" : "queued";
}

static void
queuectl_print(const struct spool_msg *q, int json, int first, int pending)
{
	char	 when[64], dsn[16];
	time_t	 t = (time_t)q->env.time;
	size_t	 i, k = 0;

	if (json) {
		printf("%s{\"id\":\"%s\",\"size\":%llu,\"arrival\":%.0f,\"held\":%s,\"state\":\"%s\",\"sender\":",
		    first ? "" : ",", q->env.id, q->env.size, q->env.time, q->held ? "true" : "false",
		    queuectl_state_word(queuectl_msg_state(q)));
		queuectl_json_string(q->env.sender);
		printf(",\"auth\":");
		queuectl_json_string(q->env.auth[0] != '\0' ? q->env.auth : NULL);
		printf(",\"recipients\":[");
		for (i = 0; i < q->env.nrcpts; i++) {
			const char	*word, *reply;

			if (pending && !queuectl_rcpt_pending(q, i))
				continue;
			word = queuectl_rcpt_parts(q, i, dsn, sizeof(dsn), &reply);
			printf("%s{\"address\":", k++ ? "," : "");
			queuectl_json_string(q->env.rcpts[i]);
			printf(",\"status\":");
			queuectl_json_string(queuectl_status(q, i));
			printf(",\"state\":\"%s\",\"dsn\":", word);
			queuectl_json_string(dsn[0] ? dsn : NULL);
			printf(",\"reply\":");
			queuectl_json_string(reply);
			printf("}");
		}
		printf("]}");
		return;
	}
	strftime(when, sizeof(when), "%a %b %d %H:%M:%S", localtime(&t));
	printf("%-20s%s %8llu %s  <%s>\n", q->env.id, q->held ? "!" : " ", q->env.size, when, q->env.sender);
	for (i = 0; i < q->env.nrcpts; i++)
		if (!pending || queuectl_rcpt_pending(q, i))
			printf("%22s<%s>  %s\n", "", q->env.rcpts[i], queuectl_status(q, i));
	printf("\n");
}

/* Selection -------------------------------------------------------------------------------------------------- */

/* queuectl_one - message q is selected: list it, or act on it (or say what would be done). */
static void
queuectl_one(struct queuectl_run *r, const struct spool_msg *q)
{
	char	 answer[QUEUECTL_ANSWER_MAX];

	r->selected++;
	if (r->op == NULL) {
		queuectl_print(q, r->a->json, r->selected == 1, r->a->pending);
		r->held += q->held;
		return;
	}
	if (r->a->dry_run) {
		printf("%s: would be %s (%s, from <%s>)\n", q->env.id, r->op->verb,
		    queuectl_state_word(queuectl_msg_state(q)), q->env.sender);
		return;
	}
	if (queuectl_ask(r->cfg, r->op->name, q->env.id, answer, sizeof(answer)) == -1) {
		r->broken = 1;
		return;
	}
	printf("%s: %s\n", q->env.id, answer);
	if (strncmp(answer, "ok", 2) == 0)
		r->acted++;
	else
		r->failed++;
}

/* queuectl_consider - message q (loaded) against the selectors, and the command's own states. */
static void
queuectl_consider(struct queuectl_run *r, const struct spool_msg *q, unsigned states)
{
	int	 m = queuectl_sel_match(&r->a->sel, q, r->now);

	if (m == 0)
		return;
	if (!(states & queuectl_msg_state(q))) {
		if (!(states & QCTL_ACTIVE) || q->held)
			return;
		m = -1;		/* only what the router has now */
	}
	if (m == -1 && queuectl_is_active(r, q->env.id) != 1)
		return;
	queuectl_one(r, q);
}

/*
 * queuectl_select - every selected message, one at a time: the IDs named (in that order), or what queue/ and
 * hold/ hold, read as it goes. states: the command's own limit (QCTL_ bits, --state narrows it further).
 */
static void
queuectl_select(struct queuectl_run *r, unsigned states)
{
	static const enum spool_dir dirs[] = { SPOOL_D_INCOMING, SPOOL_D_QUEUE, SPOOL_D_HOLD };
	const struct queuectl_sel	*sel = &r->a->sel;
	char				 id[QUEUEID_SIZE], why[256];
	struct spool_msg		 q;
	struct spool_walk		*w;
	double				 mtime;
	size_t				 i, k;
	int				 err;

	if (sel->nids > 0) {
		for (i = 0; i < sel->nids && !r->broken; i++) {
			if (!queueid_valid(sel->ids[i])) {
				printf("%s: error: not a queue ID\n", sel->ids[i]);
				r->failed++;
				continue;
			}
			if ((err = spool_load(r->cfg->spool, sel->ids[i], 1, SPOOL_LOAD_ENVELOPE, &q, why,
			    sizeof(why))) != 0) {
				printf("%s: error: no message %s in the queue%s%s\n", sel->ids[i], sel->ids[i],
				    err == ENOENT ? "" : ": ", err == ENOENT ? "" : err == EINVAL ? why :
				    strerror(err));
				r->failed++;
				continue;
			}
			queuectl_consider(r, &q, states);
			spool_msg_free(&q);
		}
		return;
	}
	for (k = 0; k < sizeof(dirs) / sizeof(dirs[0]) && !r->broken; k++) {
		if (dirs[k] == SPOOL_D_HOLD ? !(states & QCTL_HELD) : !(states & ~QCTL_HELD))
			continue;
		if ((w = spool_walk_open(r->cfg->spool, dirs[k])) == NULL)
			continue;
		while (!r->broken && spool_walk_next(w, id, &mtime)) {
			/* A message released or held meanwhile is found in the other directory (any): it is
			 * considered there, if at all. (One that the router admits from incoming/ to queue/ while
			 * both are read can be seen in each.) */
			if (spool_load(r->cfg->spool, id, 1, SPOOL_LOAD_ENVELOPE, &q, why, sizeof(why)) != 0)
				continue;
			if (q.held == (dirs[k] == SPOOL_D_HOLD))
				queuectl_consider(r, &q, states);
			spool_msg_free(&q);
		}
		spool_walk_close(w);
	}
}

static int
queuectl_list(const struct config *cfg, const struct queuectl_args *a)
{
	struct queuectl_run	 r;
	unsigned		 states = QCTL_FILES | (a->sel.states & QCTL_ACTIVE);

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	r.a = a;
	r.now = util_now();
	if (a->json)
		printf("[");
	queuectl_select(&r, states);
	if (a->json)
		printf("]\n");
	else if (queuectl_sel_any(&a->sel))
		printf("-- %zu message%s selected\n", r.selected, r.selected == 1 ? "" : "s");
	else
		printf("-- %zu message%s in the queue%s\n", r.selected, r.selected == 1 ? "" : "s",
		    r.held ? " (! = held: luamta queue release ID)" : "");
	return r.broken || r.failed ? 1 : 0;
}

static int
queuectl_show(const struct config *cfg, const struct queuectl_args *a)
{
	struct spool_msg	 q;
	char			 why[256];
	const char		*id = a->sel.ids[0];

	if (spool_load(cfg->spool, id, 1, 0, &q, why, sizeof(why)) != 0) {
		fprintf(stderr, "luamta queue show: no message %s in the queue\n", id);
		return 1;
	}
	queuectl_print(&q, 0, 1, 0);
	fwrite(q.data + q.env.body_offset, 1, q.len - q.env.body_offset, stdout);
	spool_msg_free(&q);
	return 0;
}

/* queuectl_change - delete, hold, release, flush or requeue the selected messages; then how many it did. */
static int
queuectl_change(const struct config *cfg, const struct queuectl_args *a, const struct queuectl_op *op)
{
	const struct queuectl_sel	*sel = &a->sel;
	struct queuectl_run		 r;
	char				 answer[QUEUECTL_ANSWER_MAX];
	size_t				 i;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	r.a = a;
	r.op = op;
	r.now = util_now();
	if (!a->dry_run && !queuectl_sel_filters(sel)) {
		/* IDs alone: the router decides each, and one ID's answer is printed as it is. */
		for (i = 0; i < sel->nids; i++) {
			if (!queueid_valid(sel->ids[i]))
				snprintf(answer, sizeof(answer), "error: %s is not a queue ID", sel->ids[i]);
			else if (queuectl_ask(cfg, op->name, sel->ids[i], answer, sizeof(answer)) == -1)
				return 1;
			printf("%s%s%s\n", sel->nids > 1 ? sel->ids[i] : "", sel->nids > 1 ? ": " : "", answer);
			if (strncmp(answer, "ok", 2) == 0)
				r.acted++;
			else
				r.failed++;
		}
	} else
		queuectl_select(&r, op->states & (sel->states ? sel->states : ~0u));
	if (r.broken)
		return 1;
	if (a->dry_run)
		printf("luamta queue: dry run: %zu message%s would be %s; nothing changed\n", r.selected,
		    r.selected == 1 ? "" : "s", op->verb);
	else {
		printf("luamta queue: %s: %zu message%s\n", op->done, r.acted, r.acted == 1 ? "" : "s");
		if (r.failed > 0)
			printf("luamta queue: not %s: %zu message%s (see above)\n", op->verb, r.failed,
			    r.failed == 1 ? "" : "s");
	}
	return r.failed > 0 ? 1 : 0;
}

static int
queuectl_usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "luamta queue: %s\n", why);
	fprintf(stderr, "usage: luamta queue [-c FILE] list [--json] [--pending] [SELECTOR ...] | show ID |\n"
	    "         delete|hold|release|flush|requeue [--dry-run] SELECTOR ... | flush\n"
	    "  SELECTOR: ID ... | ALL [deferred|held|active|queued] | --from ADDR | --to ADDR | --domain DOMAIN |\n"
	    "            --older-than DURATION (90s, 15m, 2h, 3d) | --state deferred|held|active|queued[,...]\n");
	return 2;
}

int
queuectl_main(const struct config *cfg, int argc, char **argv)
{
	struct queuectl_args	 a;
	char			 err[256], answer[QUEUECTL_ANSWER_MAX];
	size_t			 i;
	int			 rc;

	if (queuectl_parse(argc, argv, &a, err, sizeof(err)) == -1)
		return queuectl_usage(err);
	rc = -1;
	if (a.sub == NULL || strcmp(a.sub, "list") == 0)
		rc = queuectl_list(cfg, &a);
	else if (strcmp(a.sub, "show") == 0 && a.sel.nids == 1 && !queuectl_sel_filters(&a.sel))
		rc = queuectl_show(cfg, &a);
	else if (strcmp(a.sub, "flush") == 0 && !queuectl_sel_any(&a.sel) && !a.dry_run) {
		/* flush alone: the router tries the whole queue now, in one command (postqueue -f). */
		if (queuectl_ask(cfg, "flush", NULL, answer, sizeof(answer)) == -1)
			rc = 1;
		else {
			printf("%s\n", answer);
			rc = strncmp(answer, "ok", 2) == 0 ? 0 : 1;
		}
	} else
		for (i = 0; i < sizeof(queuectl_ops) / sizeof(queuectl_ops[0]); i++)
			if (strcmp(a.sub, queuectl_ops[i].name) == 0 && queuectl_sel_any(&a.sel)) {
				rc = queuectl_change(cfg, &a, &queuectl_ops[i]);
				break;
			}
	queuectl_args_free(&a);
	if (rc == -1)
		return queuectl_usage(NULL);
	return rc;
}
