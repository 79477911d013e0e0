/*
 * smtp_proto.c - pure SMTP syntax. Classifies command lines, parses the paths and ESMTP parameters of MAIL and
 * RCPT, checks HELO/EHLO arguments and BDAT arguments. It never does I/O, never allocates, keeps no state and never
 * reads past the NUL (or the length) it is given; every output buffer is bounded by a PROTO_*_MAX limit. It never
 * routes: "%", "!" and a quoted "@" stay inside the local part, and a source route is checked, then dropped.
 *	proto_verb_of()		which command a line holds, and where its argument starts
 *	proto_verb_name()	the verb's name, for logs
 *	proto_parse_path()	MAIL FROM:<...> / RCPT TO:<...> with parameters, or a static SMTP reply
 *	proto_helo_ok()		is this a usable HELO/EHLO argument
 *	proto_bdat_args()	BDAT SIZE [LAST]
 *	proto_line_max()	the length limit of the command line that starts with these octets
 *	proto_non_smtp()	is this an HTTP request or a header line, not an SMTP command
 *	proto_utf8_ok()		is this well-formed UTF-8
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "smtp_proto.h"

#define PROTO_LABEL_MAX		63	/* RFC 1035 2.3.4 */
#define PROTO_LITERAL_MAX	64	/* "IPv6:" and the longest IPv6 text form (45) fit */
#define PROTO_BDAT_SIZE_MAX	999999999999ULL

static const char	proto_e_syntax[] = "501 5.5.4 Syntax error in parameters or arguments";
static const char	proto_e_mail[] = "501 5.5.4 Syntax: MAIL FROM:<address>";
static const char	proto_e_rcpt[] = "501 5.5.4 Syntax: RCPT TO:<address>";
static const char	proto_e_sender[] = "501 5.1.7 Bad sender address syntax";
static const char	proto_e_rcptaddr[] = "501 5.1.3 Bad recipient address syntax";
static const char	proto_e_param[] = "555 5.5.4 Unsupported parameter syntax";
static const char	proto_e_nparams[] = "555 5.5.4 Too many parameters";
static const char	proto_e_dup[] = "501 5.5.4 Duplicate parameter";

static const struct proto_verb_entry {
	const char	*name;
	size_t		 len;
	enum proto_verb	 verb;
} proto_verbs[] = {
	{ "HELO",	4,	PROTO_V_HELO },
	{ "EHLO",	4,	PROTO_V_EHLO },
	{ "MAIL",	4,	PROTO_V_MAIL },
	{ "RCPT",	4,	PROTO_V_RCPT },
	{ "DATA",	4,	PROTO_V_DATA },
	{ "BDAT",	4,	PROTO_V_BDAT },
	{ "RSET",	4,	PROTO_V_RSET },
	{ "NOOP",	4,	PROTO_V_NOOP },
	{ "QUIT",	4,	PROTO_V_QUIT },
	{ "VRFY",	4,	PROTO_V_VRFY },
	{ "EXPN",	4,	PROTO_V_EXPN },
	{ "HELP",	4,	PROTO_V_HELP },
	{ "STARTTLS",	8,	PROTO_V_STARTTLS },
	{ "AUTH",	4,	PROTO_V_AUTH },
};

/* Character classes by hand: <ctype.h> depends on the locale and is undefined for negative chars. */
static int
proto_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
proto_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char
proto_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/*
 * proto_ieq - 1 when the n octets at a equal the upper-case ASCII word w (n octets), in any case. It stops at the
 * first difference, so a NUL in a (which never equals a letter of w) ends the comparison: safe on short strings.
 */
static int
proto_ieq(const char *a, const char *w, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (proto_upper((unsigned char)a[i]) != (unsigned char)w[i])
			return 0;
	return 1;
}

/* atext of RFC 5322 3.2.3, plus any octet >= 0x80 (RFC 6531 3.3, UTF-8 in the local part). */
static int
proto_is_atext(unsigned char c)
{
	if (proto_is_alpha(c) || proto_is_digit(c) || c >= 0x80)
		return 1;
	return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != '\0';
}

/* A domain octet other than the dot: LDH, underscore (seen in real names), UTF-8 (RFC 6531). */
static int
proto_is_dchar(unsigned char c)
{
	return proto_is_alpha(c) || proto_is_digit(c) || c == '-' || c == '_' || c >= 0x80;
}

/*
 * proto_literal_ok - 1 when the n octets at s (the text between "[" and "]") are a dotted-quad IPv4 address or
 * "IPv6:" and an IPv6 address. General address literals (RFC 5321 4.1.3, "tag:content") are refused.
 */
static int
proto_literal_ok(const char *s, size_t n)
{
	char			buf[PROTO_LITERAL_MAX + 1];
	struct in6_addr		a6;
	struct in_addr		a4;

	if (n == 0 || n > PROTO_LITERAL_MAX)
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (strlen(buf) != n)			/* a NUL inside */
		return 0;
	if (n > 5 && proto_ieq(buf, "IPV6:", 5))
		return inet_pton(AF_INET6, buf + 5, &a6) == 1;
	return inet_pton(AF_INET, buf, &a4) == 1;
}

/*
 * proto_domain_ok - 1 when the n octets at s are a domain or an address literal. *keep is set to the length to
 * keep: n, less one trailing dot. *utf8 is set to 1 when an octet >= 0x80 is seen (it is never cleared).
 */
static int
proto_domain_ok(const char *s, size_t n, size_t *keep, int *utf8)
{
	size_t	i, label;

	if (n == 0)
		return 0;
	if (s[0] == '[') {
		if (n < 2 || s[n - 1] != ']' || !proto_literal_ok(s + 1, n - 2))
			return 0;
		*keep = n;
		return 1;
	}
	if (s[n - 1] == '.')
		n--;				/* the root: "example.org." */
	if (n == 0 || n > PROTO_DOMAIN_MAX)
		return 0;
	label = 0;
	for (i = 0; i < n; i++) {
		unsigned char	c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)		/* ".a", "a..b" */
				return 0;
			label = 0;
			continue;
		}
		if (!proto_is_dchar(c) || ++label > PROTO_LABEL_MAX)
			return 0;
		if (c >= 0x80)
			*utf8 = 1;
	}
	if (label == 0)				/* "a.." less one dot */
		return 0;
	*keep = n;
	return 1;
}

/*
 * proto_domain_span - the length of the domain or literal that starts at s: up to and including "]" for a literal
 * (0 when there is no "]"), else the run of domain octets and dots. The caller checks the span.
 */
static size_t
proto_domain_span(const char *s)
{
	size_t	i;

	if (s[0] == '[') {
		for (i = 1; s[i] != '\0' && s[i] != ']'; i++)
			if (i > PROTO_LITERAL_MAX)
				return 0;
		return s[i] == ']' ? i + 1 : 0;
	}
	for (i = 0; s[i] == '.' || proto_is_dchar((unsigned char)s[i]); i++)
		;
	return i;
}

/*
 * proto_local_span - the length of the local part at s: a quoted string with its quotes (RFC 5321 4.1.2
 * Quoted-string, UTF-8 allowed inside) or a dot-atom. 0 when neither, or when longer than PROTO_LOCAL_MAX.
 * *utf8 is set to 1 when an octet >= 0x80 is seen.
 */
static size_t
proto_local_span(const char *s, int *utf8)
{
	size_t		i, atom;
	unsigned char	c;

	if (s[0] == '"') {
		for (i = 1; i <= PROTO_LOCAL_MAX; i++) {
			c = (unsigned char)s[i];
			if (c == '"')
				return i + 1 <= PROTO_LOCAL_MAX ? i + 1 : 0;
			if (c == '\\') {
				/* quoted-pairSMTP: a backslash and one printable ASCII octet */
				c = (unsigned char)s[++i];
				if (c < 0x20 || c > 0x7e)
					return 0;
				continue;
			}
			if (c < 0x20 || c == 0x7f)	/* NUL included: no closing quote */
				return 0;
			if (c >= 0x80)
				*utf8 = 1;
		}
		return 0;
	}
	atom = 0;
	for (i = 0; s[i] != '\0'; i++) {
		c = (unsigned char)s[i];
		if (c == '.') {
			if (atom == 0)
				return 0;	/* ".a", "a..b" */
			atom = 0;
		} else if (proto_is_atext(c)) {
			atom++;
			if (c >= 0x80)
				*utf8 = 1;
		} else
			break;
		if (i + 1 > PROTO_LOCAL_MAX)
			return 0;
	}
	if (atom == 0)				/* empty, or "a." */
		return 0;
	return i;
}

/*
 * proto_route_skip - skip a source route "@a,@b:" (RFC 5321 4.1.2 A-d-l; obsolete, accepted and ignored, RFC 5321
 * C). Returns the octets skipped, 0 when there is no route, or (size_t)-1 when the route is malformed.
 */
static size_t
proto_route_skip(const char *s)
{
	size_t	i, n, keep;
	int	utf8 = 0;

	if (s[0] != '@')
		return 0;
	i = 0;
	for (;;) {
		if (s[i] != '@')
			return (size_t)-1;
		i++;
		n = proto_domain_span(s + i);
		if (n == 0 || !proto_domain_ok(s + i, n, &keep, &utf8))
			return (size_t)-1;
		i += n;
		if (s[i] == ':')
			return i + 1;
		if (s[i] != ',')
			return (size_t)-1;
		i++;
	}
}

int
proto_utf8_ok(const char *s, size_t n)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0, k, len;
	unsigned		 c, min;

	while (i < n) {
		c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			c &= 0x1f;
			min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			c &= 0x0f;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			c &= 0x07;
			min = 0x10000;
		} else
			return 0;		/* a continuation octet first, C0/C1 (overlong), or > U+10FFFF */
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			c = (c << 6) | (p[i + k] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return 0;		/* overlong, too large, or a surrogate */
		i += len;
	}
	return 1;
}

/* proto_is_postmaster - the n octets at s are "postmaster" in any case (RFC 5321 4.5.1). */
static int
proto_is_postmaster(const char *s, size_t n)
{
	return n == 10 && proto_ieq(s, "POSTMASTER", 10);
}

/*
 * proto_mailbox - parse the mailbox at *sp (after "<" when bracketed), leaving *sp on the octet that ends it.
 * Fills a->local, a->domain, a->address and a->is_utf8. Returns 0 or -1.
 */
static int
proto_mailbox(enum proto_verb verb, const char **sp, int bracketed, struct proto_addr *a)
{
	const char	*s = *sp;
	size_t		 n, dn, keep;
	size_t		 r;
	int		 utf8 = 0, w;

	if ((r = proto_route_skip(s)) == (size_t)-1)
		return -1;
	s += r;
	if ((n = proto_local_span(s, &utf8)) == 0)
		return -1;
	memcpy(a->local, s, n);
	a->local[n] = '\0';
	if (s[n] != '@') {
		/* Only RCPT TO:<postmaster> may go without a domain. */
		if (verb != PROTO_V_RCPT || !proto_is_postmaster(s, n))
			return -1;
		if (bracketed ? s[n] != '>' : (s[n] != ' ' && s[n] != '\0'))
			return -1;
		a->domain[0] = '\0';
		w = snprintf(a->address, sizeof(a->address), "%s", a->local);
		if (w < 0 || (size_t)w >= sizeof(a->address))
			return -1;
		a->is_utf8 = utf8;
		*sp = s + n;
		return 0;
	}
	s += n + 1;
	dn = proto_domain_span(s);
	if (dn == 0 || !proto_domain_ok(s, dn, &keep, &utf8))
		return -1;
	memcpy(a->domain, s, keep);
	a->domain[keep] = '\0';
	s += dn;
	if (bracketed ? *s != '>' : (*s != ' ' && *s != '\0'))
		return -1;
	w = snprintf(a->address, sizeof(a->address), "%s@%s", a->local, a->domain);
	if (w < 0 || (size_t)w >= sizeof(a->address))
		return -1;
	if (utf8 && !proto_utf8_ok(a->address, (size_t)w))
		return -1;		/* RFC 6531 3.3: octets >= 0x80 must be UTF-8 */
	a->is_utf8 = utf8;
	*sp = s;
	return 0;
}

/*
 * proto_param - parse one "KEY[=VALUE]" of n octets at s into p (RFC 5321 4.1.2 esmtp-param; UTF-8 allowed in
 * the value as RFC 6531 3.3 does). Returns 0 or -1.
 */
static int
proto_param(const char *s, size_t n, struct proto_param *p)
{
	size_t		i, k, v;
	unsigned char	c;

	for (k = 0; k < n && s[k] != '='; k++) {
		c = (unsigned char)s[k];
		if (!proto_is_alpha(c) && !proto_is_digit(c) && !(c == '-' && k > 0))
			return -1;
	}
	if (k == 0 || k > PROTO_PARAM_KEY_MAX)
		return -1;
	for (i = 0; i < k; i++)
		p->key[i] = (char)proto_upper((unsigned char)s[i]);
	p->key[k] = '\0';
	p->value[0] = '\0';
	p->has_value = 0;
	if (k == n)
		return 0;
	v = n - k - 1;				/* after "=" */
	if (v == 0 || v > PROTO_PARAM_VALUE_MAX)
		return -1;
	for (i = k + 1; i < n; i++) {
		c = (unsigned char)s[i];
		if (c == '=' || c <= 0x20 || c == 0x7f)
			return -1;
	}
	memcpy(p->value, s + k + 1, v);
	p->value[v] = '\0';
	p->has_value = 1;
	return 0;
}

int
proto_parse_path(enum proto_verb verb, const char *arg, struct proto_path *out, const char **why)
{
	const char	*s, *bad, *e_syntax;
	size_t		 n, i;
	int		 bracketed;

	*why = proto_e_syntax;
	if (arg == NULL || (verb != PROTO_V_MAIL && verb != PROTO_V_RCPT))
		return -1;
	out->addr.is_null = out->addr.is_utf8 = 0;
	out->addr.local[0] = out->addr.domain[0] = out->addr.address[0] = '\0';
	out->nparams = 0;

	if (verb == PROTO_V_MAIL) {
		e_syntax = proto_e_mail;
		bad = proto_e_sender;
		n = 5;
		if (!proto_ieq(arg, "FROM:", n)) {	/* stops at the NUL: it never matches */
			*why = e_syntax;
			return -1;
		}
	} else {
		e_syntax = proto_e_rcpt;
		bad = proto_e_rcptaddr;
		n = 3;
		if (!proto_ieq(arg, "TO:", n)) {
			*why = e_syntax;
			return -1;
		}
	}
	s = arg + n;
	while (*s == ' ')			/* "MAIL FROM: <a@b>", as Postfix allows */
		s++;
	if (*s == '\0') {
		*why = e_syntax;
		return -1;
	}
	bracketed = (*s == '<');
	if (bracketed)
		s++;
	if (bracketed && *s == '>') {
		if (verb != PROTO_V_MAIL) {	/* RCPT TO:<> */
			*why = bad;
			return -1;
		}
		out->addr.is_null = 1;
	} else if (proto_mailbox(verb, &s, bracketed, &out->addr) == -1) {
		*why = bad;
		return -1;
	}
	if (bracketed)
		s++;				/* the ">" proto_mailbox() stopped on */
	if (*s != '\0' && *s != ' ') {		/* "<a@b>SIZE=1" */
		*why = bad;
		return -1;
	}

	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			break;
		for (n = 0; s[n] != '\0' && s[n] != ' '; n++)
			if (n > PROTO_PARAM_KEY_MAX + 1 + PROTO_PARAM_VALUE_MAX) {
				*why = proto_e_param;
				return -1;
			}
		if (out->nparams == PROTO_PARAMS_MAX) {
			*why = proto_e_nparams;
			return -1;
		}
		if (proto_param(s, n, &out->params[out->nparams]) == -1) {
			*why = proto_e_param;
			return -1;
		}
		for (i = 0; i < out->nparams; i++)
			if (strcmp(out->params[i].key, out->params[out->nparams].key) == 0) {
				*why = proto_e_dup;	/* "SIZE=1 SIZE=2": which one would count? */
				return -1;
			}
		out->nparams++;
		s += n;
	}
	*why = NULL;
	return 0;
}

enum proto_verb
proto_verb_of(const char *line, size_t len, const char **arg)
{
	const struct proto_verb_entry	*v;
	size_t				 i, pos;

	if (arg != NULL)
		*arg = line + len;
	for (i = 0; i < sizeof(proto_verbs) / sizeof(proto_verbs[0]); i++) {
		v = &proto_verbs[i];
		if (len < v->len || !proto_ieq(line, v->name, v->len))
			continue;
		if (len > v->len && line[v->len] != ' ')
			continue;		/* "EHLOX", "MAIL:FROM" */
		pos = v->len;
		while (pos < len && line[pos] == ' ')
			pos++;
		if (arg != NULL)
			*arg = line + pos;
		return v->verb;
	}
	return PROTO_V_UNKNOWN;
}

const char *
proto_verb_name(enum proto_verb verb)
{
	size_t	i;

	for (i = 0; i < sizeof(proto_verbs) / sizeof(proto_verbs[0]); i++)
		if (proto_verbs[i].verb == verb)
			return proto_verbs[i].name;
	return "UNKNOWN";
}

int
proto_helo_ok(const char *arg)
{
	size_t	n, keep;
	int	utf8 = 0;

	if (arg == NULL)
		return 0;
	for (n = 0; n <= PROTO_DOMAIN_MAX + 1 && arg[n] != '\0'; n++)
		;
	if (n > PROTO_DOMAIN_MAX + 1)		/* + 1: a trailing dot */
		return 0;
	if (proto_domain_span(arg) != n)
		return 0;
	return proto_domain_ok(arg, n, &keep, &utf8);
}

int
proto_bdat_args(const char *arg, unsigned long long *size, int *last)
{
	unsigned long long	v = 0;
	size_t			i = 0;

	if (arg == NULL || !proto_is_digit((unsigned char)arg[0]))
		return -1;
	for (; proto_is_digit((unsigned char)arg[i]); i++) {
		v = v * 10 + (unsigned long long)(arg[i] - '0');
		if (v > PROTO_BDAT_SIZE_MAX)	/* checked each digit, so v * 10 cannot overflow */
			return -1;
	}
	*last = 0;
	if (arg[i] == ' ') {
		while (arg[i] == ' ')
			i++;
		if (arg[i] != '\0') {
			if (!proto_ieq(arg + i, "LAST", 4) ||
			    (arg[i + 4] != '\0' && arg[i + 4] != ' '))
				return -1;
			*last = 1;
			i += 4;
			while (arg[i] == ' ')
				i++;
		}
	}
	if (arg[i] != '\0')
		return -1;
	*size = v;
	return 0;
}

size_t
proto_line_max(const char *head, size_t n)
{
	/* "AUTH" and a space, or the whole line so far when it is shorter ("AUT" may still become "AUTH ..."). */
	if (n >= 5 && proto_ieq(head, "AUTH ", 5))
		return PROTO_AUTH_LINE_MAX;
	return PROTO_LINE_MAX;
}

int
proto_non_smtp(const char *line, size_t len)
{
	static const char *const	http[] = { "GET ", "POST ", "CONNECT " };
	size_t				i, n;

	for (i = 0; i < sizeof(http) / sizeof(http[0]); i++) {
		n = strlen(http[i]);
		if (len >= n && proto_ieq(line, http[i], n))
			return 1;
	}
	/* A header field ("Host: x", "User-Agent: y"): a first word of printable octets that ends with ":". */
	for (n = 0; n < len && line[n] > 0x20 && line[n] < 0x7f; n++)
		if (line[n] == ':')
			return n > 0;
	return 0;
}
