/*
 * sendmail.c - `luamta sendmail` (also the binary invoked as sendmail) and `mailq` (docs/admin.md, "sendmail and
 * mailq"): Postfix's sendmail(1) command line for cron, scripts and PHP's mail(). It reads a message on stdin
 * and leaves it in <spool>/maildrop/ (maildrop.c), durable before it exits 0, whether the server runs or not;
 * the pickup service queues it. Exit codes are sysexits(3)'s.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "lb.h"
#include "maildrop.h"
#include "queuectl.h"
#include "sendmail.h"
#include "util.h"

#define EX_OK		0
#define EX_USAGE	64
#define EX_DATAERR	65
#define EX_SOFTWARE	70
#define EX_TEMPFAIL	75
#define EX_CONFIG	78

struct sm_opts {
	int		 extract;	/* -t */
	int		 ignore_dots;	/* -i, -oi */
	int		 smtp;		/* -bs */
	const char	*sender;	/* -f */
	const char	*fullname;	/* -F */
};

struct sm_buf {
	char	*p;
	size_t	 len, cap;
};

static void
sm_add(struct sm_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sm_rcpt_add(struct maildrop_msg *m, const char *a, size_t n)
{
	char	*r;

	while (n > 0 && isspace((unsigned char)*a)) {
		a++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)a[n - 1]))
		n--;
	if (n == 0 || m->nrcpts == MAILDROP_RCPTS_MAX)
		return;
	r = xmalloc(n + 1);
	memcpy(r, a, n);
	r[n] = '\0';
	m->rcpts = xrealloc(m->rcpts, (m->nrcpts + 1) * sizeof(*m->rcpts));
	m->rcpts[m->nrcpts++] = r;
}

/*
 * sm_addresses - the addresses of an address-list header value (RFC 5322 3.4): "a@b, Name <c@d>, (comment)
 * e@f". Commas inside quotes, angle brackets or comments do not split; of a part with <...>, the inside counts.
 */
static void
sm_addresses(struct maildrop_msg *m, const char *v)
{
	const char	*start = v, *lt = NULL, *p;
	int		 quote = 0, angle = 0, paren = 0;

	for (p = v;; p++) {
		if (*p == '\0' || (*p == ',' && !quote && !angle && !paren)) {
			if (lt != NULL) {
				const char	*gt = memchr(lt, '>', (size_t)(p - lt));

				if (gt != NULL)
					sm_rcpt_add(m, lt + 1, (size_t)(gt - lt - 1));
			} else {
				char	 part[MAILDROP_ADDR_MAX];
				size_t	 n = 0;
				int	 depth = 0;
				const char *q;

				for (q = start; q < p && n + 1 < sizeof(part); q++) {	/* without (comments) */
					if (*q == '(')
						depth++;
					else if (*q == ')' && depth > 0)
						depth--;
					else if (depth == 0)
						part[n++] = *q;
				}
				sm_rcpt_add(m, part, n);
			}
			if (*p == '\0')
				return;
			start = p + 1;
			lt = NULL;
			continue;
		}
		if (*p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '"' && !paren)
			quote = !quote;
		else if (quote)
			continue;
		else if (*p == '(')
			paren++;
		else if (*p == ')' && paren > 0)
			paren--;
		else if (*p == '<' && !paren) {
			angle = 1;
			lt = p;
		} else if (*p == '>')
			angle = 0;
	}
}

/*
 * sm_extract - -t: the recipients of the To, Cc and Bcc headers (continuation lines included), and the message
 * without its Bcc headers. in is LF-terminated lines.
 */
static void
sm_extract(struct maildrop_msg *m, const char *in, size_t len, struct sm_buf *out)
{
	const char	*p = in, *end = in + len;
	int		 in_head = 1;

	while (p < end) {
		const char	*nl = memchr(p, '\n', (size_t)(end - p));
		const char	*next = nl ? nl + 1 : end, *fend;
		struct sm_buf	 field = { NULL, 0, 0 };
		int		 bcc, want;

		if (!in_head || p == next - 1 || (*p == '\r' && p + 1 == next - 1)) {
			in_head = 0;			/* the empty line: the body follows, copied as it is */
			sm_add(out, p, (size_t)(end - p));
			return;
		}
		/* one header field: this line and its continuations */
		fend = next;
		while (fend < end && (*fend == ' ' || *fend == '\t')) {
			const char	*n2 = memchr(fend, '\n', (size_t)(end - fend));

			fend = n2 ? n2 + 1 : end;
		}
		bcc = strncasecmp(p, "Bcc:", 4) == 0;
		want = bcc || strncasecmp(p, "To:", 3) == 0 || strncasecmp(p, "Cc:", 3) == 0;
		if (want) {
			const char	*q;

			for (q = strchr(p, ':') + 1; q < fend; q++)
				if (*q != '\r' && *q != '\n')
					sm_add(&field, q, 1);
			if (field.p != NULL)
				sm_addresses(m, field.p);
			free(field.p);
		}
		if (!bcc)
			sm_add(out, p, (size_t)(fend - p));
		p = fend;
	}
}

/* sm_read_message - in up to a lone "." (unless ignore_dots) or EOF, undoing dot-stuffing when unstuff (-bs); -1
 * when it is bigger than max. */
static int
sm_read_message(FILE *in, int ignore_dots, int unstuff, unsigned long long max, struct sm_buf *b)
{
	char	 line[8192];

	while (fgets(line, sizeof(line), in) != NULL) {
		size_t	 n = strlen(line);

		if (!ignore_dots && (strcmp(line, ".\n") == 0 || strcmp(line, ".\r\n") == 0))
			break;
		if (unstuff && line[0] == '.')
			sm_add(b, line + 1, n - 1);	/* -bs: dot-stuffed */
		else
			sm_add(b, line, n);
		if (b->len > max)
			return -1;
	}
	if (b->len > 0 && b->p[b->len - 1] != '\n')
		sm_add(b, "\n", 1);
	return 0;
}

static int
sm_drop(const struct config *cfg, struct maildrop_msg *m, const char *message, size_t len)
{
	char	 err[512];

	m->message = message;
	m->len = len;
	if (maildrop_write(cfg->spool, m, err, sizeof(err)) != 0) {
		fprintf(stderr, "luamta sendmail: %s\n", err);
		return EX_TEMPFAIL;
	}
	return EX_OK;
}

/* sm_user - the invoking user's name, and the default sender user@server.hostname into sender. */
static void
sm_identity(const struct config *cfg, const struct sm_opts *o, struct maildrop_msg *m)
{
	struct passwd	*pw = getpwuid(getuid());

	snprintf(m->user, sizeof(m->user), "%s", pw != NULL ? pw->pw_name : "nobody");
	if (o->sender != NULL)
		util_strlcpy(m->sender, strcmp(o->sender, "<>") == 0 ? "" : o->sender, sizeof(m->sender));
	else
		snprintf(m->sender, sizeof(m->sender), "%s@%s", m->user, cfg->hostname);
	util_strlcpy(m->fullname, o->fullname != NULL ? o->fullname : "", sizeof(m->fullname));
	m->time = (long)time(NULL);
}

/* sm_path - the address inside "FROM:<a@b> ..." or "TO:<a@b>"; NULL when there is none. */
static const char *
sm_path(char *arg, const char *prefix)
{
	char	*lt, *gt;

	if (strncasecmp(arg, prefix, strlen(prefix)) != 0 || (lt = strchr(arg, '<')) == NULL ||
	    (gt = strchr(lt, '>')) == NULL)
		return NULL;
	*gt = '\0';
	return lt + 1;
}

/* sm_smtp - -bs: a small SMTP server on stdin/stdout whose messages go to the maildrop. */
static int
sm_smtp(const struct config *cfg, const struct sm_opts *o)
{
	struct maildrop_msg	 m;
	char			 line[1024];
	int			 have_mail = 0;

	memset(&m, 0, sizeof(m));
	printf("220 %s ESMTP luamta (sendmail -bs)\r\n", cfg->hostname);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		const char	*a;

		line[strcspn(line, "\r\n")] = '\0';
		if (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0)
			printf("250 %s\r\n", cfg->hostname);
		else if (strncasecmp(line, "MAIL ", 5) == 0 && (a = sm_path(line + 5, "FROM:")) != NULL) {
			struct sm_opts	 oo = *o;

			maildrop_msg_clear(&m);
			oo.sender = *a == '\0' ? "<>" : a;
			sm_identity(cfg, &oo, &m);
			have_mail = 1;
			printf("250 2.1.0 Ok\r\n");
		} else if (strncasecmp(line, "RCPT ", 5) == 0 && have_mail && (a = sm_path(line + 5, "TO:")) != NULL &&
		    *a != '\0') {
			sm_rcpt_add(&m, a, strlen(a));
			printf("250 2.1.5 Ok\r\n");
		} else if (strcasecmp(line, "DATA") == 0 && have_mail && m.nrcpts > 0) {
			struct sm_buf	 b = { NULL, 0, 0 };
			int		 rc;

			printf("354 End data with <CR><LF>.<CR><LF>\r\n");
			fflush(stdout);
			if (sm_read_message(stdin, 0, 1, cfg->max_message_size, &b) == -1) {
				printf("552 5.3.4 Message size exceeds fixed limit\r\n");
				free(b.p);
				fflush(stdout);
				return EX_DATAERR;
			}
			rc = sm_drop(cfg, &m, b.p ? b.p : "", b.len);
			free(b.p);
			printf(rc == EX_OK ? "250 2.0.0 Ok: queued in the maildrop\r\n" :
			    "451 4.3.0 Error: cannot write to the maildrop\r\n");
			maildrop_msg_clear(&m);
			have_mail = 0;
		} else if (strcasecmp(line, "RSET") == 0) {
			maildrop_msg_clear(&m);
			have_mail = 0;
			printf("250 2.0.0 Ok\r\n");
		} else if (strcasecmp(line, "NOOP") == 0)
			printf("250 2.0.0 Ok\r\n");
		else if (strcasecmp(line, "QUIT") == 0) {
			printf("221 2.0.0 Bye\r\n");
			break;
		} else
			printf("502 5.5.2 Error: command not recognized or out of sequence\r\n");
		fflush(stdout);
	}
	fflush(stdout);
	maildrop_msg_clear(&m);
	return EX_OK;
}

static int
sm_usage(const char *why)
{
	fprintf(stderr, "luamta sendmail: %s\nusage: sendmail [-c FILE] [-t] [-i] [-f SENDER] [-F NAME] [-bs] [-bp] "
	    "[--] [RECIPIENT ...]\n", why);
	return EX_USAGE;
}

int
sendmail_main(const char *cfgpath, int argc, char **argv, int as_mailq)
{
	struct sm_opts		 o;
	struct maildrop_msg	 m;
	struct lb_gen		*g;
	const struct config	*cfg;
	struct sm_buf		 in = { NULL, 0, 0 }, out = { NULL, 0, 0 };
	char			*errors = NULL, *warnings = NULL, err[512], list[] = "list";
	char			*qargv[2] = { list, NULL };
	int			 i, rc, listq = as_mailq, first_rcpt = argc;

	memset(&o, 0, sizeof(o));
	for (i = 0; i < argc; i++) {
		const char	*a = argv[i];

		if (a[0] != '-' || strcmp(a, "-") == 0) {
			first_rcpt = i;
			break;
		}
		if (strcmp(a, "--") == 0) {
			first_rcpt = i + 1;
			break;
		}
		if (strcmp(a, "-c") == 0 || strcmp(a, "-C") == 0) {
			if (++i == argc)
				return sm_usage("-c needs a file");
			cfgpath = argv[i];
		} else if (strncmp(a, "-C", 2) == 0 && a[2] != '\0')
			cfgpath = a + 2;
		else if (strcmp(a, "-t") == 0)
			o.extract = 1;
		else if (strcmp(a, "-i") == 0 || strcmp(a, "-oi") == 0)
			o.ignore_dots = 1;
		else if (strcmp(a, "-bs") == 0)
			o.smtp = 1;
		else if (strcmp(a, "-bp") == 0)
			listq = 1;
		else if (strcmp(a, "-bm") == 0)
			;	/* read the message from stdin: what we do anyway */
		else if (strcmp(a, "-f") == 0 || strcmp(a, "-r") == 0 || strcmp(a, "-F") == 0) {
			if (i + 1 == argc)
				return sm_usage("an option needs a value");
			*(a[1] == 'F' ? &o.fullname : &o.sender) = argv[++i];
		} else if ((a[1] == 'f' || a[1] == 'r' || a[1] == 'F') && a[2] != '\0')
			*(a[1] == 'F' ? &o.fullname : &o.sender) = a + 2;
		else if (strchr("BNRVLh", a[1]) != NULL && a[2] == '\0') {
			if (++i == argc)	/* Postfix's options with a value that we accept and ignore */
				return sm_usage("an option needs a value");
		} else if (a[1] == 'o' || a[1] == 'B' || a[1] == 'N' || a[1] == 'R' || a[1] == 'V' || a[1] == 'L' ||
		    a[1] == 'h' || a[1] == 'e' || strcmp(a, "-v") == 0 || strcmp(a, "-n") == 0 || strcmp(a, "-U") == 0 ||
		    strcmp(a, "-G") == 0 || strncmp(a, "-od", 3) == 0)
			;	/* accepted and ignored, as Postfix's sendmail does */
		else
			return sm_usage("unknown option");
	}
	if ((g = lb_gen_new(cfgpath, LB_ROLE_CHECK, &errors, &warnings)) == NULL) {
		fprintf(stderr, "luamta sendmail: %s\n", errors);
		return EX_CONFIG;
	}
	free(warnings);
	cfg = lb_gen_config(g);
	if (listq) {
		rc = queuectl_main(cfg, 1, qargv);
		lb_gen_release(g);
		return rc;
	}
	if (o.smtp) {
		rc = sm_smtp(cfg, &o);
		lb_gen_release(g);
		return rc;
	}
	memset(&m, 0, sizeof(m));
	sm_identity(cfg, &o, &m);
	for (i = first_rcpt; i < argc; i++)
		sm_addresses(&m, argv[i]);
	if (!o.extract && m.nrcpts == 0) {
		lb_gen_release(g);
		return sm_usage("no recipients given (name them, or use -t)");
	}
	if (sm_read_message(stdin, o.ignore_dots, 0, cfg->max_message_size, &in) == -1) {
		fprintf(stderr, "luamta sendmail: the message is bigger than server.max_message_size (%llu)\n",
		    cfg->max_message_size);
		rc = EX_DATAERR;
		goto done;
	}
	if (o.extract) {
		sm_extract(&m, in.p ? in.p : "", in.len, &out);
		if (m.nrcpts == 0) {
			fprintf(stderr, "luamta sendmail: no recipient addresses found in the message headers\n");
			rc = EX_DATAERR;
			goto done;
		}
	}
	maildrop_dir(cfg->spool, err, sizeof(err));
	if (access(err, F_OK) == -1 && maildrop_prepare(cfg->spool, err, sizeof(err)) == -1) {
		/* the server makes it at start; before the first start, only the spool's owner can */
		fprintf(stderr, "luamta sendmail: %s\n", err);
		rc = EX_TEMPFAIL;
		goto done;
	}
	rc = o.extract ? sm_drop(cfg, &m, out.p ? out.p : "", out.len) : sm_drop(cfg, &m, in.p ? in.p : "",
	    in.len);
done:
	free(in.p);
	free(out.p);
	maildrop_msg_clear(&m);
	lb_gen_release(g);
	return rc;
}
