/*
 * smtp_proto.h - pure SMTP syntax: classify command lines, parse MAIL/RCPT paths and their ESMTP parameters,
 * check HELO/EHLO arguments. No I/O, no allocation, no global state: every function is bounded by the named
 * limits below and is a fuzz target (t/fuzz/fuzz_smtp_proto.c).
 */
#ifndef SMTP_PROTO_H
#define SMTP_PROTO_H

#include <stddef.h>

#define PROTO_LINE_MAX		512	/* RFC 5321 4.5.3.1.4: a command line, CRLF included */
#define PROTO_AUTH_LINE_MAX	12288	/* RFC 4954 4: an AUTH command line or a response to 334, CRLF included */
#define PROTO_LOCAL_MAX		255	/* RFC says 64; real senders (VERP, SRS) go past it */
#define PROTO_DOMAIN_MAX	255	/* RFC 5321 4.5.3.1.2 */
#define PROTO_ADDR_MAX		(PROTO_LOCAL_MAX + 1 + PROTO_DOMAIN_MAX)
#define PROTO_PARAMS_MAX	16	/* ESMTP parameters on one MAIL or RCPT */
#define PROTO_PARAM_KEY_MAX	32
#define PROTO_PARAM_VALUE_MAX	255

enum proto_verb {
	PROTO_V_UNKNOWN = 0,
	PROTO_V_HELO, PROTO_V_EHLO, PROTO_V_MAIL, PROTO_V_RCPT, PROTO_V_DATA, PROTO_V_BDAT,
	PROTO_V_RSET, PROTO_V_NOOP, PROTO_V_QUIT, PROTO_V_VRFY, PROTO_V_EXPN, PROTO_V_HELP,
	PROTO_V_STARTTLS, PROTO_V_AUTH,
	PROTO_V_COUNT
};

struct proto_addr {
	int	 is_null;			/* the null path "<>" (MAIL only) */
	int	 is_utf8;			/* octets >= 0x80 present (needs SMTPUTF8) */
	char	 local[PROTO_LOCAL_MAX + 1];	/* as sent; a quoted local part keeps its quotes */
	char	 domain[PROTO_DOMAIN_MAX + 1];	/* as sent, one trailing dot removed; "[..]" literals keep brackets;
						   "" for RCPT TO:<postmaster> */
	char	 address[PROTO_ADDR_MAX + 1];	/* local@domain, or local alone when domain is "" ; "" when null */
};

struct proto_param {
	char	 key[PROTO_PARAM_KEY_MAX + 1];		/* upper-cased */
	char	 value[PROTO_PARAM_VALUE_MAX + 1];	/* "" when has_value is 0 */
	int	 has_value;
};

struct proto_path {
	struct proto_addr	 addr;
	struct proto_param	 params[PROTO_PARAMS_MAX];
	size_t			 nparams;
};

/*
 * proto_verb_of - classify a command line. line is the line without its CRLF, len its length (<= PROTO_LINE_MAX,
 * no NUL, CR or LF inside: the session checks that first). The verb is matched case-insensitively and must be
 * followed by a space or the end of the line. *arg is set to the text after the verb and the spaces that follow
 * it ("" when there is none); it points into line, so line must have a NUL at line[len] for *arg to be read as a
 * string. Trailing spaces stay in *arg ("NOOP x  " gives "x  ", "DATA " gives ""): proto_parse_path() and
 * proto_bdat_args() accept them, proto_helo_ok() does not. For PROTO_V_UNKNOWN, *arg is line + len. Only the
 * space separates: "HELO\tx" is PROTO_V_UNKNOWN.
 */
enum proto_verb	 proto_verb_of(const char *line, size_t len, const char **arg);

/* proto_verb_name - "EHLO" etc., for logs; "UNKNOWN" for PROTO_V_UNKNOWN. */
const char	*proto_verb_name(enum proto_verb);

/*
 * proto_parse_path - parse the argument of MAIL ("FROM:<a@b> SIZE=10") when verb is PROTO_V_MAIL, or of RCPT
 * ("TO:<a@b>") when verb is PROTO_V_RCPT, as proto_verb_of() returned it. Accepts: "FROM:" / "TO:" in any case,
 * optional spaces after the colon (as Postfix does), the null path <> (MAIL only), RCPT TO:<postmaster> (any case,
 * no domain), source routes "<@a,@b:u@c>" (the route is dropped), quoted local parts, address literals
 * ([192.0.2.1], [IPv6:...]), UTF-8 in local part and domain (is_utf8 set), and a path without angle brackets when
 * it contains no space. Parameters are KEY[=VALUE] separated by spaces; keys are upper-cased. The local part is
 * a dot-atom (RFC 5322 atext, UTF-8) or a quoted string; the domain is LDH labels (underscore and UTF-8 tolerated,
 * labels of at most 63) or an address literal checked with inet_pton(). Control octets never pass.
 * Returns 0 (with *why set to NULL), or -1 with *why set to a static, complete SMTP reply without CRLF, for example
 * "501 5.1.7 Bad sender address syntax" or "501 5.1.3 Bad recipient address syntax" or
 * "501 5.5.4 Syntax: MAIL FROM:<address>" or "555 5.5.4 Unsupported parameter syntax" (or "... Too many
 * parameters"), or "501 5.5.4 Duplicate parameter" when a key comes twice ("SIZE=1 SIZE=2"). An address with
 * octets >= 0x80 that are not well-formed UTF-8 is a bad address (501 5.1.7 / 5.1.3). Every reply starts with
 * 501 or 555 and an enhanced status code. On failure *out is unspecified.
 */
int		 proto_parse_path(enum proto_verb verb, const char *arg, struct proto_path *out, const char **why);

/*
 * proto_helo_ok - 1 when arg is an acceptable HELO/EHLO argument: a domain name (letters, digits, hyphens,
 * underscores, dots, UTF-8 octets; labels of at most 63 octets; at most PROTO_DOMAIN_MAX) or an address literal
 * ("[192.0.2.1]", "[IPv6:2001:db8::1]"); 0 otherwise (empty included).
 */
int		 proto_helo_ok(const char *arg);

/*
 * proto_bdat_args - parse "SIZE [LAST]" of BDAT (RFC 3030). Returns 0 and sets *size and *last, or -1.
 * size must be digits only and at most 999999999999; LAST is matched in any case; trailing spaces are allowed.
 */
int		 proto_bdat_args(const char *arg, unsigned long long *size, int *last);

/*
 * proto_line_max - the longest command line allowed (CRLF included) for a line whose first n octets are at head:
 * PROTO_AUTH_LINE_MAX for "AUTH " in any case (RFC 4954 4: an initial response makes it long), else
 * PROTO_LINE_MAX. Responses to 334 have PROTO_AUTH_LINE_MAX too; the session knows when it reads one.
 */
size_t		 proto_line_max(const char *head, size_t n);

/*
 * proto_non_smtp - 1 when the line (len octets, no CRLF) is not SMTP but an HTTP request ("GET ", "POST ",
 * "CONNECT ", any case) or a header line ("Host: x", "User-Agent: y": a first word of printable ASCII that
 * ends with ":"), as Postfix's smtpd_forbidden_commands and is_header() find them; 0 otherwise. Only meant for
 * lines whose verb is PROTO_V_UNKNOWN ("MAIL FROM:<a>" starts with a verb and is never asked about).
 */
int		 proto_non_smtp(const char *line, size_t len);

/*
 * proto_utf8_ok - 1 when the n octets at s are well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF); ASCII is. proto_parse_path() refuses an address that is not.
 */
int		 proto_utf8_ok(const char *s, size_t n);

#endif
