/*
 * test_smtp_proto.c - unit tests for src/smtp/smtp_proto.c: verbs, MAIL/RCPT paths and parameters, HELO arguments and
 * BDAT arguments. Each table holds {name, input, want}; a path result is compared as one summary string.
 */
#include <stdio.h>
#include <string.h>

#include "smtp_proto.h"
#include "tap.h"

#define M	PROTO_V_MAIL
#define R	PROTO_V_RCPT

static const struct {
	const char	*name;
	const char	*input;
	enum proto_verb	 want;
	const char	*arg;
} verb_cases[] = {
	{ "HELO with a name",		"HELO mx.example.org",	PROTO_V_HELO,	"mx.example.org" },
	{ "EHLO with a name",		"EHLO mx.example.org",	PROTO_V_EHLO,	"mx.example.org" },
	{ "MAIL FROM",			"MAIL FROM:<a@b.test>",	PROTO_V_MAIL,	"FROM:<a@b.test>" },
	{ "RCPT TO",			"RCPT TO:<a@b.test>",	PROTO_V_RCPT,	"TO:<a@b.test>" },
	{ "DATA",			"DATA",			PROTO_V_DATA,	"" },
	{ "BDAT",			"BDAT 100 LAST",	PROTO_V_BDAT,	"100 LAST" },
	{ "RSET",			"RSET",			PROTO_V_RSET,	"" },
	{ "NOOP with text",		"NOOP hello",		PROTO_V_NOOP,	"hello" },
	{ "QUIT",			"QUIT",			PROTO_V_QUIT,	"" },
	{ "VRFY",			"VRFY user",		PROTO_V_VRFY,	"user" },
	{ "EXPN",			"EXPN list",		PROTO_V_EXPN,	"list" },
	{ "HELP",			"HELP",			PROTO_V_HELP,	"" },
	{ "STARTTLS",			"STARTTLS",		PROTO_V_STARTTLS, "" },
	{ "AUTH",			"AUTH PLAIN AGFAAGI=",	PROTO_V_AUTH,	"PLAIN AGFAAGI=" },
	{ "lower case",			"ehlo x.test",		PROTO_V_EHLO,	"x.test" },
	{ "mixed case",			"MaIl FrOm:<>",		PROTO_V_MAIL,	"FrOm:<>" },
	{ "starttls lower case",	"starttls",		PROTO_V_STARTTLS, "" },
	{ "several spaces after verb",	"MAIL   FROM:<>",	PROTO_V_MAIL,	"FROM:<>" },
	{ "trailing space only",	"DATA ",		PROTO_V_DATA,	"" },
	{ "trailing spaces are kept",	"NOOP x  ",		PROTO_V_NOOP,	"x  " },
	{ "verb glued to text",		"EHLOX",		PROTO_V_UNKNOWN, "" },
	{ "verb glued to colon",	"MAIL:FROM:<>",		PROTO_V_UNKNOWN, "" },
	{ "tab after verb",		"HELO\tx.test",		PROTO_V_UNKNOWN, "" },
	{ "leading space",		" QUIT",		PROTO_V_UNKNOWN, "" },
	{ "unknown verb",		"XYZZY",		PROTO_V_UNKNOWN, "" },
	{ "short line",			"QUI",			PROTO_V_UNKNOWN, "" },
	{ "empty line",			"",			PROTO_V_UNKNOWN, "" },
	{ "START is not STARTTLS",	"START",		PROTO_V_UNKNOWN, "" },
	{ "STARTTLSX",			"STARTTLSX",		PROTO_V_UNKNOWN, "" },
	{ "HTTP request",		"GET / HTTP/1.0",	PROTO_V_UNKNOWN, "" },
};

/* Summaries: "addr=<address> local=<..> domain=<..> null=N utf8=N params=[K=V K]" or "ERR <code> <enhanced>". */
static const struct {
	const char	*name;
	enum proto_verb	 verb;
	const char	*input;
	const char	*want;
} path_cases[] = {
	{ "plain sender", M, "FROM:<a@example.org>",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "plain recipient", R, "TO:<b@example.org>",
	  "addr=<b@example.org> local=<b> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "lower-case from:", M, "from:<a@example.org>",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "lower-case to:", R, "tO:<a@example.org>",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "space after colon", M, "FROM: <a@example.org>",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "trailing spaces", R, "TO:<a@example.org>   ",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "null sender", M, "FROM:<>", "addr=<> local=<> domain=<> null=1 utf8=0 params=[]" },
	{ "null sender with SIZE", M, "FROM:<> SIZE=1000",
	  "addr=<> local=<> domain=<> null=1 utf8=0 params=[SIZE=1000]" },
	{ "null recipient", R, "TO:<>", "ERR 501 5.1.3" },
	{ "postmaster recipient", R, "TO:<postmaster>",
	  "addr=<postmaster> local=<postmaster> domain=<> null=0 utf8=0 params=[]" },
	{ "Postmaster in any case", R, "TO:<PostMaster>",
	  "addr=<PostMaster> local=<PostMaster> domain=<> null=0 utf8=0 params=[]" },
	{ "postmaster as sender", M, "FROM:<postmaster>", "ERR 501 5.1.7" },
	{ "recipient without domain", R, "TO:<joe>", "ERR 501 5.1.3" },
	{ "sender without domain", M, "FROM:<joe>", "ERR 501 5.1.7" },
	{ "quoted postmaster", R, "TO:<\"postmaster\">", "ERR 501 5.1.3" },
	{ "postmaster with domain", R, "TO:<postmaster@example.org>",
	  "addr=<postmaster@example.org> local=<postmaster> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "source route", R, "TO:<@a.test,@b.test:u@c.test>",
	  "addr=<u@c.test> local=<u> domain=<c.test> null=0 utf8=0 params=[]" },
	{ "source route of one hop", M, "FROM:<@a.test:u@c.test>",
	  "addr=<u@c.test> local=<u> domain=<c.test> null=0 utf8=0 params=[]" },
	{ "source route with a literal", R, "TO:<@[192.0.2.1],@[IPv6:2001:db8::1]:u@c.test>",
	  "addr=<u@c.test> local=<u> domain=<c.test> null=0 utf8=0 params=[]" },
	{ "source route without colon", R, "TO:<@a.test,u@c.test>", "ERR 501 5.1.3" },
	{ "source route with empty hop", R, "TO:<@a.test,:u@c.test>", "ERR 501 5.1.3" },
	{ "source route with bad domain", R, "TO:<@a..test:u@c.test>", "ERR 501 5.1.3" },
	{ "source route alone", R, "TO:<@a.test:>", "ERR 501 5.1.3" },
	{ "quoted local part with @", R, "TO:<\"u@ext\"@example.org>",
	  "addr=<\"u@ext\"@example.org> local=<\"u@ext\"> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "quoted local part with space and escape", R, "TO:<\"a b\\\"c\"@example.org>",
	  "addr=<\"a b\\\"c\"@example.org> local=<\"a b\\\"c\"> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "quoted local part with >", R, "TO:<\"a>b\"@example.org>",
	  "addr=<\"a>b\"@example.org> local=<\"a>b\"> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "empty quoted local part", R, "TO:<\"\"@example.org>",
	  "addr=<\"\"@example.org> local=<\"\"> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "unterminated quote", R, "TO:<\"abc@example.org>", "ERR 501 5.1.3" },
	{ "tab in quoted local part", R, "TO:<\"a\tb\"@example.org>", "ERR 501 5.1.3" },
	{ "escaped control in quotes", R, "TO:<\"a\\\x01\"@example.org>", "ERR 501 5.1.3" },
	{ "percent hack stays local", R, "TO:<u%ext@example.org>",
	  "addr=<u%ext@example.org> local=<u%ext> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "bang path stays local", R, "TO:<ext!u@example.org>",
	  "addr=<ext!u@example.org> local=<ext!u> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "atext specials", M, "FROM:<a+b=c/d{e}|~'#$&*?^_`-@example.org>",
	  "addr=<a+b=c/d{e}|~'#$&*?^_`-@example.org> local=<a+b=c/d{e}|~'#$&*?^_`-> domain=<example.org> null=0 "
	  "utf8=0 params=[]" },
	{ "dotted local part", R, "TO:<first.last@example.org>",
	  "addr=<first.last@example.org> local=<first.last> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "leading dot in local part", R, "TO:<.a@example.org>", "ERR 501 5.1.3" },
	{ "trailing dot in local part", R, "TO:<a.@example.org>", "ERR 501 5.1.3" },
	{ "double dot in local part", R, "TO:<a..b@example.org>", "ERR 501 5.1.3" },
	{ "two @", R, "TO:<a@b@example.org>", "ERR 501 5.1.3" },
	{ "empty local part", R, "TO:<@example.org>", "ERR 501 5.1.3" },
	{ "empty domain", R, "TO:<a@>", "ERR 501 5.1.3" },
	{ "space in local part", R, "TO:<a b@example.org>", "ERR 501 5.1.3" },
	{ "comma in local part", R, "TO:<a,b@example.org>", "ERR 501 5.1.3" },
	{ "control in local part", R, "TO:<a\x01@example.org>", "ERR 501 5.1.3" },
	{ "DEL in local part", R, "TO:<a\x7f@example.org>", "ERR 501 5.1.3" },
	{ "control in domain", R, "TO:<a@exa\x1fmple.org>", "ERR 501 5.1.3" },
	{ "IPv4 literal", R, "TO:<u@[192.0.2.1]>",
	  "addr=<u@[192.0.2.1]> local=<u> domain=<[192.0.2.1]> null=0 utf8=0 params=[]" },
	{ "IPv6 literal", R, "TO:<u@[IPv6:2001:db8::1]>",
	  "addr=<u@[IPv6:2001:db8::1]> local=<u> domain=<[IPv6:2001:db8::1]> null=0 utf8=0 params=[]" },
	{ "IPv6 tag in lower case", R, "TO:<u@[ipv6:::1]>",
	  "addr=<u@[ipv6:::1]> local=<u> domain=<[ipv6:::1]> null=0 utf8=0 params=[]" },
	{ "IPv6 with embedded IPv4", R, "TO:<u@[IPv6:::ffff:192.0.2.1]>",
	  "addr=<u@[IPv6:::ffff:192.0.2.1]> local=<u> domain=<[IPv6:::ffff:192.0.2.1]> null=0 utf8=0 params=[]" },
	{ "IPv4 literal out of range", R, "TO:<u@[192.0.2.256]>", "ERR 501 5.1.3" },
	{ "IPv4 literal with three parts", R, "TO:<u@[192.0.2]>", "ERR 501 5.1.3" },
	{ "IPv4 literal with a name", R, "TO:<u@[mail.example.org]>", "ERR 501 5.1.3" },
	{ "IPv6 literal without tag", R, "TO:<u@[2001:db8::1]>", "ERR 501 5.1.3" },
	{ "IPv6 literal with two ::", R, "TO:<u@[IPv6:2001::db8::1]>", "ERR 501 5.1.3" },
	{ "IPv6 literal with bad digit", R, "TO:<u@[IPv6:2001:db8::g]>", "ERR 501 5.1.3" },
	{ "IPv6 tag alone", R, "TO:<u@[IPv6:]>", "ERR 501 5.1.3" },
	{ "empty literal", R, "TO:<u@[]>", "ERR 501 5.1.3" },
	{ "unclosed literal", R, "TO:<u@[192.0.2.1>", "ERR 501 5.1.3" },
	{ "general literal", R, "TO:<u@[x400:abc]>", "ERR 501 5.1.3" },
	{ "literal then text", R, "TO:<u@[192.0.2.1]x>", "ERR 501 5.1.3" },
	{ "UTF-8 local part", R, "TO:<j\xc3\xb8rn@example.org>",
	  "addr=<j\xc3\xb8rn@example.org> local=<j\xc3\xb8rn> domain=<example.org> null=0 utf8=1 params=[]" },
	{ "UTF-8 domain", M, "FROM:<a@b\xc3\xbc" "cher.example> SMTPUTF8",
	  "addr=<a@b\xc3\xbc" "cher.example> local=<a> domain=<b\xc3\xbc" "cher.example> null=0 utf8=1 "
	  "params=[SMTPUTF8]" },
	{ "UTF-8 in quotes", R, "TO:<\"\xc3\xa9 x\"@example.org>",
	  "addr=<\"\xc3\xa9 x\"@example.org> local=<\"\xc3\xa9 x\"> domain=<example.org> null=0 utf8=1 params=[]" },
	{ "trailing dot in domain", R, "TO:<a@example.org.>",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "two trailing dots", R, "TO:<a@example.org..>", "ERR 501 5.1.3" },
	{ "domain of one dot", R, "TO:<a@.>", "ERR 501 5.1.3" },
	{ "leading dot in domain", R, "TO:<a@.example.org>", "ERR 501 5.1.3" },
	{ "empty label", R, "TO:<a@example..org>", "ERR 501 5.1.3" },
	{ "underscore in domain", R, "TO:<a@_dmarc.example.org>",
	  "addr=<a@_dmarc.example.org> local=<a> domain=<_dmarc.example.org> null=0 utf8=0 params=[]" },
	{ "single-label domain", R, "TO:<a@localhost>",
	  "addr=<a@localhost> local=<a> domain=<localhost> null=0 utf8=0 params=[]" },
	{ "bad character in domain", R, "TO:<a@exa!mple.org>", "ERR 501 5.1.3" },
	{ "no angle brackets", M, "FROM:a@example.org",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[]" },
	{ "no angle brackets with param", M, "FROM:a@example.org SIZE=5",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[SIZE=5]" },
	{ "no angle brackets postmaster", R, "TO:postmaster",
	  "addr=<postmaster> local=<postmaster> domain=<> null=0 utf8=0 params=[]" },
	{ "missing closing bracket", R, "TO:<a@example.org", "ERR 501 5.1.3" },
	{ "missing opening bracket", R, "TO:a@example.org>", "ERR 501 5.1.3" },
	{ "missing closing bracket on null", M, "FROM:<", "ERR 501 5.1.7" },
	{ "text right after bracket", M, "FROM:<a@example.org>SIZE=5", "ERR 501 5.1.7" },
	{ "double bracket", M, "FROM:<<a@example.org>>", "ERR 501 5.1.7" },
	{ "no FROM:", M, "<a@example.org>", "ERR 501 5.5.4" },
	{ "FROM without colon", M, "FROM <a@example.org>", "ERR 501 5.5.4" },
	{ "space before colon", M, "FROM :<a@example.org>", "ERR 501 5.5.4" },
	{ "TO: on MAIL", M, "TO:<a@example.org>", "ERR 501 5.5.4" },
	{ "FROM: on RCPT", R, "FROM:<a@example.org>", "ERR 501 5.5.4" },
	{ "no TO:", R, "", "ERR 501 5.5.4" },
	{ "FROM: and nothing", M, "FROM:", "ERR 501 5.5.4" },
	{ "FROM: and spaces", M, "FROM:   ", "ERR 501 5.5.4" },
	{ "truncated FROM", M, "FRO", "ERR 501 5.5.4" },
	{ "SIZE and BODY", M, "FROM:<a@example.org> SIZE=12345 BODY=8BITMIME",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[SIZE=12345 BODY=8BITMIME]" },
	{ "keys are upper-cased", M, "FROM:<a@example.org> size=1 body=7bit smtputf8",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[SIZE=1 BODY=7bit SMTPUTF8]" },
	{ "SMTPUTF8 without value", M, "FROM:<a@example.org> SMTPUTF8",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[SMTPUTF8]" },
	{ "params with many spaces", M, "FROM:<a@example.org>   SIZE=1    SMTPUTF8  ",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[SIZE=1 SMTPUTF8]" },
	{ "RCPT params", R, "TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40example.org",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 "
	  "params=[NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40example.org]" },
	{ "key with hyphen", M, "FROM:<a@example.org> X-FOO=1",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[X-FOO=1]" },
	{ "empty value", M, "FROM:<a@example.org> SIZE=", "ERR 555 5.5.4" },
	{ "value with =", M, "FROM:<a@example.org> SIZE=1=2", "ERR 555 5.5.4" },
	{ "empty key", M, "FROM:<a@example.org> =1", "ERR 555 5.5.4" },
	{ "key starting with hyphen", M, "FROM:<a@example.org> -X=1", "ERR 555 5.5.4" },
	{ "bad key character", M, "FROM:<a@example.org> SI:ZE=1", "ERR 555 5.5.4" },
	{ "control in value", M, "FROM:<a@example.org> X=a\x01", "ERR 555 5.5.4" },
	{ "DEL in value", M, "FROM:<a@example.org> X=a\x7f", "ERR 555 5.5.4" },
	{ "tab between params", M, "FROM:<a@example.org> SIZE=1\tBODY=7BIT", "ERR 555 5.5.4" },
	{ "UTF-8 in value", M, "FROM:<a@example.org> X=\xc3\xa9",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 params=[X=\xc3\xa9]" },
	{ "16 params", M, "FROM:<a@example.org> A B C D E F G H I J K L M N O P",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 "
	  "params=[A B C D E F G H I J K L M N O P]" },
	{ "17 params", M, "FROM:<a@example.org> A B C D E F G H I J K L M N O P Q", "ERR 555 5.5.4" },
	{ "key of 32", M, "FROM:<a@example.org> ABCDEFGHIJKLMNOPQRSTUVWXYZ012345=1",
	  "addr=<a@example.org> local=<a> domain=<example.org> null=0 utf8=0 "
	  "params=[ABCDEFGHIJKLMNOPQRSTUVWXYZ012345=1]" },
	{ "key of 33", M, "FROM:<a@example.org> ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456=1", "ERR 555 5.5.4" },
	{ "duplicate SIZE", M, "FROM:<a@example.org> SIZE=1 SIZE=2", "ERR 501 5.5.4" },
	{ "duplicate BODY in other case", M, "FROM:<a@example.org> BODY=8BITMIME body=7BIT", "ERR 501 5.5.4" },
	{ "duplicate flag", M, "FROM:<a@example.org> SMTPUTF8 SMTPUTF8", "ERR 501 5.5.4" },
	{ "duplicate on RCPT", R, "TO:<a@example.org> NOTIFY=NEVER NOTIFY=NEVER", "ERR 501 5.5.4" },
	{ "truncated UTF-8 in local part", M, "FROM:<j\xc3rn@example.org>", "ERR 501 5.1.7" },
	{ "0xff in local part", R, "TO:<\xff@example.org>", "ERR 501 5.1.3" },
	{ "overlong UTF-8 in domain", M, "FROM:<a@b\xc0\xaf" "c.example>", "ERR 501 5.1.7" },
	{ "UTF-8 surrogate", M, "FROM:<\xed\xa0\x80@example.org>", "ERR 501 5.1.7" },
	{ "UTF-8 past U+10FFFF", M, "FROM:<a@\xf4\x90\x80\x80.example>", "ERR 501 5.1.7" },
	{ "4-octet UTF-8", R, "TO:<\xf0\x9f\x98\x80@example.org>",
	  "addr=<\xf0\x9f\x98\x80@example.org> local=<\xf0\x9f\x98\x80> domain=<example.org> null=0 utf8=1 "
	  "params=[]" },
};

static const struct {
	const char	*name;
	const char	*input;
	int		 want;
} helo_cases[] = {
	{ "a host name",		"mx.example.org",		1 },
	{ "upper case",			"MX.EXAMPLE.ORG",		1 },
	{ "single label",		"localhost",			1 },
	{ "trailing dot",		"mx.example.org.",		1 },
	{ "underscore",			"my_host.example.org",		1 },
	{ "hyphen and digits",		"mx-01.example.org",		1 },
	{ "UTF-8",			"m\xc3\xbcnchen.example",	1 },
	{ "IPv4 literal",		"[192.0.2.1]",			1 },
	{ "IPv6 literal",		"[IPv6:2001:db8::1]",		1 },
	{ "empty",			"",				0 },
	{ "only a dot",			".",				0 },
	{ "leading dot",		".example.org",			0 },
	{ "empty label",		"a..example.org",		0 },
	{ "two trailing dots",		"example.org..",		0 },
	{ "space inside",		"mx example.org",		0 },
	{ "trailing space",		"mx.example.org ",		0 },
	{ "bare IPv4",			"192.0.2.1",			1 },	/* digits and dots are a valid name */
	{ "bad IPv4 literal",		"[192.0.2.300]",		0 },
	{ "IPv6 literal without tag",	"[2001:db8::1]",		0 },
	{ "unclosed literal",		"[192.0.2.1",			0 },
	{ "literal and more",		"[192.0.2.1]x",			0 },
	{ "slash",			"mx/example.org",		0 },
	{ "at sign",			"user@example.org",		0 },
	{ "control",			"mx\x01.example.org",		0 },
	{ "DEL",			"mx\x7f.example.org",		0 },
};

static const struct {
	const char	*name;
	const char	*input;
	const char	*want;
} bdat_cases[] = {
	{ "size",			"100",				"size=100 last=0" },
	{ "size and LAST",		"100 LAST",			"size=100 last=1" },
	{ "last in lower case",		"0 last",			"size=0 last=1" },
	{ "many spaces",		"7   LAST  ",			"size=7 last=1" },
	{ "trailing space",		"7 ",				"size=7 last=0" },
	{ "largest size",		"999999999999",			"size=999999999999 last=0" },
	{ "leading zeros",		"0000000000000042",		"size=42 last=0" },
	{ "too large",			"1000000000000",		"ERR" },
	{ "huge",			"99999999999999999999999999",	"ERR" },
	{ "empty",			"",				"ERR" },
	{ "no size",			"LAST",				"ERR" },
	{ "negative",			"-1",				"ERR" },
	{ "plus sign",			"+1",				"ERR" },
	{ "hex",			"0x10",				"ERR" },
	{ "leading space",		" 10",				"ERR" },
	{ "unknown word",		"10 FIRST",			"ERR" },
	{ "LAST glued",			"10 LASTX",			"ERR" },
	{ "LAST twice",			"10 LAST LAST",			"ERR" },
	{ "short word",			"10 LA",			"ERR" },
	{ "tab",			"10\tLAST",			"ERR" },
};

/* test_path_summary - the result of proto_parse_path() as one string, compared with the tables' want. */
static void
test_path_summary(enum proto_verb verb, const char *input, char *buf, size_t size)
{
	static struct proto_path	 p;
	const char			*why = NULL;
	size_t				 i, off;
	int				 n;

	if (proto_parse_path(verb, input, &p, &why) == -1) {
		snprintf(buf, size, "ERR %.9s", why != NULL ? why : "(null)");
		return;
	}
	n = snprintf(buf, size, "addr=<%s> local=<%s> domain=<%s> null=%d utf8=%d params=[", p.addr.address,
	    p.addr.local, p.addr.domain, p.addr.is_null, p.addr.is_utf8);
	off = (n > 0 && (size_t)n < size) ? (size_t)n : size - 1;
	for (i = 0; i < p.nparams; i++) {
		n = snprintf(buf + off, size - off, "%s%s%s%s", i ? " " : "", p.params[i].key,
		    p.params[i].has_value ? "=" : "", p.params[i].value);
		off = (n > 0 && (size_t)n < size - off) ? off + (size_t)n : size - 1;
	}
	snprintf(buf + off, size - off, "]");
}

static void
test_verbs(void)
{
	const char	*arg;
	size_t		 i;
	enum proto_verb	 v;

	for (i = 0; i < sizeof(verb_cases) / sizeof(verb_cases[0]); i++) {
		arg = NULL;
		v = proto_verb_of(verb_cases[i].input, strlen(verb_cases[i].input), &arg);
		ok(v == verb_cases[i].want, "verb %s: got %s", verb_cases[i].name, proto_verb_name(v));
		if (v != PROTO_V_UNKNOWN)
			ok(arg != NULL && strcmp(arg, verb_cases[i].arg) == 0, "verb %s: arg <%s>",
			    verb_cases[i].name, arg ? arg : "(null)");
	}

	/* The length is what counts, not a NUL: "QUIT" inside a longer buffer. */
	v = proto_verb_of("QUITTING", 4, &arg);
	ok(v == PROTO_V_QUIT, "verb honours len");

	ok(strcmp(proto_verb_name(PROTO_V_UNKNOWN), "UNKNOWN") == 0, "name of UNKNOWN");
	ok(strcmp(proto_verb_name(PROTO_V_COUNT), "UNKNOWN") == 0, "name out of range");
	for (v = PROTO_V_HELO; v < PROTO_V_COUNT; v++) {
		const char	*name = proto_verb_name(v);
		char		 line[32];

		snprintf(line, sizeof(line), "%s x", name);
		ok(proto_verb_of(line, strlen(line), &arg) == v, "verb %s round-trips", name);
	}
}

static void
test_paths(void)
{
	char	buf[2048];
	size_t	i;

	for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		test_path_summary(path_cases[i].verb, path_cases[i].input, buf, sizeof(buf));
		ok(strcmp(buf, path_cases[i].want) == 0, "path %s: got %s", path_cases[i].name, buf);
	}
}

/* Lengths at and just past each limit, built at run time. */
static void
test_path_limits(void)
{
	static struct proto_path	 p;
	char				 local[PROTO_LOCAL_MAX + 2], domain[4 * 64 + 8];
	char				 arg[1024], label[70];
	const char			*why;
	int				 rc;

	memset(local, 'a', sizeof(local));
	local[PROTO_LOCAL_MAX] = '\0';
	snprintf(arg, sizeof(arg), "FROM:<%s@example.org>", local);
	rc = proto_parse_path(M, arg, &p, &why);
	ok(rc == 0 && strlen(p.addr.local) == PROTO_LOCAL_MAX, "local part of %d accepted", PROTO_LOCAL_MAX);
	local[PROTO_LOCAL_MAX] = 'a';
	local[PROTO_LOCAL_MAX + 1] = '\0';
	snprintf(arg, sizeof(arg), "FROM:<%s@example.org>", local);
	rc = proto_parse_path(M, arg, &p, &why);
	ok(rc == -1 && strncmp(why, "501 5.1.7", 9) == 0, "local part of %d refused for MAIL", PROTO_LOCAL_MAX + 1);
	snprintf(arg, sizeof(arg), "TO:<%s@example.org>", local);
	rc = proto_parse_path(R, arg, &p, &why);
	ok(rc == -1 && strncmp(why, "501 5.1.3", 9) == 0, "local part of %d refused for RCPT", PROTO_LOCAL_MAX + 1);

	/* A quoted local part of exactly the limit, quotes included, and one more. */
	memset(local, 'q', sizeof(local));
	local[0] = '"';
	local[PROTO_LOCAL_MAX - 1] = '"';
	local[PROTO_LOCAL_MAX] = '\0';
	snprintf(arg, sizeof(arg), "TO:<%s@example.org>", local);
	ok(proto_parse_path(R, arg, &p, &why) == 0, "quoted local part of %d accepted", PROTO_LOCAL_MAX);
	local[PROTO_LOCAL_MAX - 1] = 'q';
	local[PROTO_LOCAL_MAX] = '"';
	local[PROTO_LOCAL_MAX + 1] = '\0';
	snprintf(arg, sizeof(arg), "TO:<%s@example.org>", local);
	ok(proto_parse_path(R, arg, &p, &why) == -1, "quoted local part of %d refused", PROTO_LOCAL_MAX + 1);

	/* 63 + 1 + 63 + 1 + 63 + 1 + 63 = 255 octets of domain. */
	memset(label, 'd', 63);
	label[63] = '\0';
	snprintf(domain, sizeof(domain), "%.63s.%.63s.%.63s.%.63s", label, label, label, label);
	ok(strlen(domain) == PROTO_DOMAIN_MAX, "domain built to the limit");
	snprintf(arg, sizeof(arg), "TO:<u@%s>", domain);
	rc = proto_parse_path(R, arg, &p, &why);
	ok(rc == 0 && strcmp(p.addr.domain, domain) == 0, "domain of %d accepted", PROTO_DOMAIN_MAX);
	ok(proto_helo_ok(domain) == 1, "HELO of %d accepted", PROTO_DOMAIN_MAX);
	snprintf(arg, sizeof(arg), "TO:<u@%s.>", domain);
	rc = proto_parse_path(R, arg, &p, &why);
	ok(rc == 0 && strcmp(p.addr.domain, domain) == 0, "domain of %d and a trailing dot accepted",
	    PROTO_DOMAIN_MAX);
	snprintf(arg, sizeof(arg), "TO:<%s@%s>", local, domain);
	rc = proto_parse_path(R, arg, &p, &why);
	ok(rc == -1, "long local part and long domain refused");

	snprintf(domain, sizeof(domain), "%.63s.%.63s.%.63s.%.62s.a", label, label, label, label);
	snprintf(arg, sizeof(arg), "TO:<u@%s>", domain);
	rc = proto_parse_path(R, arg, &p, &why);
	ok(rc == -1 && strncmp(why, "501 5.1.3", 9) == 0, "domain of %d refused", PROTO_DOMAIN_MAX + 1);
	ok(proto_helo_ok(domain) == 0, "HELO of %d refused", PROTO_DOMAIN_MAX + 1);

	snprintf(arg, sizeof(arg), "TO:<u@%s.example.org>", label);
	ok(proto_parse_path(R, arg, &p, &why) == 0, "label of 63 accepted");
	snprintf(arg, sizeof(arg), "TO:<u@%sd.example.org>", label);
	ok(proto_parse_path(R, arg, &p, &why) == -1, "label of 64 refused");
	snprintf(arg, sizeof(arg), "%sd.example.org", label);
	ok(proto_helo_ok(arg) == 0, "HELO label of 64 refused");

	/* Longest address: local and domain at their limits fit in address[]. */
	memset(local, 'a', sizeof(local));
	local[PROTO_LOCAL_MAX] = '\0';
	snprintf(domain, sizeof(domain), "%.63s.%.63s.%.63s.%.63s", label, label, label, label);
	snprintf(arg, sizeof(arg), "FROM:<%s@%s>", local, domain);
	rc = proto_parse_path(M, arg, &p, &why);
	ok(rc == 0 && strlen(p.addr.address) == PROTO_ADDR_MAX, "address of %d accepted", PROTO_ADDR_MAX);

	/* A value of 255 and one of 256. */
	memset(local, 'v', sizeof(local));
	local[PROTO_PARAM_VALUE_MAX] = '\0';
	snprintf(arg, sizeof(arg), "FROM:<a@example.org> X=%s", local);
	rc = proto_parse_path(M, arg, &p, &why);
	ok(rc == 0 && p.nparams == 1 && strlen(p.params[0].value) == PROTO_PARAM_VALUE_MAX, "value of 255");
	snprintf(arg, sizeof(arg), "FROM:<a@example.org> X=%sv", local);
	rc = proto_parse_path(M, arg, &p, &why);
	ok(rc == -1 && strncmp(why, "555 5.5.4", 9) == 0, "value of 256 refused");

	/* Not MAIL or RCPT, and no argument. */
	ok(proto_parse_path(PROTO_V_HELO, "FROM:<a@b>", &p, &why) == -1 && why != NULL, "wrong verb refused");
	ok(proto_parse_path(M, NULL, &p, &why) == -1 && why != NULL, "NULL argument refused");
}

static void
test_helo(void)
{
	size_t	i;

	for (i = 0; i < sizeof(helo_cases) / sizeof(helo_cases[0]); i++)
		ok(proto_helo_ok(helo_cases[i].input) == helo_cases[i].want, "helo %s", helo_cases[i].name);
	ok(proto_helo_ok(NULL) == 0, "helo NULL");
}

static void
test_bdat(void)
{
	unsigned long long	 size;
	char			 buf[64];
	size_t			 i;
	int			 last;

	for (i = 0; i < sizeof(bdat_cases) / sizeof(bdat_cases[0]); i++) {
		size = 12345;
		last = 7;
		if (proto_bdat_args(bdat_cases[i].input, &size, &last) == -1)
			snprintf(buf, sizeof(buf), "ERR");
		else
			snprintf(buf, sizeof(buf), "size=%llu last=%d", size, last);
		ok(strcmp(buf, bdat_cases[i].want) == 0, "bdat %s: got %s", bdat_cases[i].name, buf);
	}
	ok(proto_bdat_args(NULL, &size, &last) == -1, "bdat NULL");
}

static void
test_line_max(void)
{
	ok(proto_line_max("AUTH ", 5) == PROTO_AUTH_LINE_MAX, "line max: AUTH");
	ok(proto_line_max("auth PLAIN", 10) == PROTO_AUTH_LINE_MAX, "line max: auth in lower case");
	ok(proto_line_max("AUTHX", 5) == PROTO_LINE_MAX, "line max: AUTHX");
	ok(proto_line_max("AUT", 3) == PROTO_LINE_MAX, "line max: short");
	ok(proto_line_max("NOOP ", 5) == PROTO_LINE_MAX, "line max: NOOP");
	ok(proto_line_max("", 0) == PROTO_LINE_MAX, "line max: nothing yet");
}

static void
test_non_smtp(void)
{
	static const struct {
		const char	*input;
		int		 want;
	} cases[] = {
		{ "GET / HTTP/1.1", 1 }, { "get /", 1 }, { "POST /x HTTP/1.0", 1 },
		{ "CONNECT mx.example.org:25 HTTP/1.1", 1 }, { "Host: mx.example.org", 1 },
		{ "User-Agent: curl/8.0", 1 }, { "X-Thing:", 1 }, { "FROM:<a@b>", 1 },
		{ "GETX /", 0 }, { "GET", 0 }, { "XYZZY", 0 }, { "XYZZY a:b", 0 }, { ":x", 0 }, { "", 0 },
		{ " Host: x", 0 },
	};
	size_t	i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(proto_non_smtp(cases[i].input, strlen(cases[i].input)) == cases[i].want, "non-SMTP %s",
		    cases[i].input);
}

static void
test_utf8(void)
{
	ok(proto_utf8_ok("abc", 3) == 1, "utf8 ASCII");
	ok(proto_utf8_ok("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9) == 1, "utf8 2, 3 and 4 octets");
	ok(proto_utf8_ok("\xc3", 1) == 0, "utf8 truncated");
	ok(proto_utf8_ok("\x80", 1) == 0, "utf8 continuation first");
	ok(proto_utf8_ok("\xc1\xbf", 2) == 0, "utf8 overlong 2");
	ok(proto_utf8_ok("\xe0\x80\xaf", 3) == 0, "utf8 overlong 3");
	ok(proto_utf8_ok("\xed\xbf\xbf", 3) == 0, "utf8 surrogate");
	ok(proto_utf8_ok("\xf4\x90\x80\x80", 4) == 0, "utf8 past U+10FFFF");
	ok(proto_utf8_ok("\xf5\x80\x80\x80", 4) == 0, "utf8 0xf5");
	ok(proto_utf8_ok("\xc3\x28", 2) == 0, "utf8 bad continuation");
}

int
main(void)
{
	test_verbs();
	test_paths();
	test_path_limits();
	test_helo();
	test_bdat();
	test_line_max();
	test_non_smtp();
	test_utf8();
	return tap_done();
}
