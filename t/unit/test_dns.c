/* test_dns.c - dns_hostname_ok(): which PTR answers may be used as a client's host name (RFC 1123 2.1). */
#include "config.h"

#include <string.h>

#include "dns.h"
#include "tap.h"

int
main(void)
{
	static char	 max[DNS_HOSTNAME_MAX + 2], over[DNS_HOSTNAME_MAX + 2], label[80];
	static const struct { const char *name, *input; int want; } cases[] = {
		{ "a host name", "mail.partner.test", 1 },
		{ "a trailing dot", "mail.partner.test.", 1 },
		{ "one label", "localhost", 1 },
		{ "digits and hyphens inside labels", "a-1.b2-c.test", 1 },
		{ "upper case", "MAIL.Partner.TEST", 1 },
		{ "empty", "", 0 },
		{ "only the root", ".", 0 },
		{ "a space", "a b.test", 0 },
		{ "angle brackets", "<script>.test", 0 },
		{ "CR LF", "a.test\r\n250 ok", 0 },
		{ "a tab", "a\t.test", 0 },
		{ "non-ASCII octets", "caf\xc3\xa9.test", 0 },
		{ "an underscore", "x_y.test", 0 },
		{ "an empty label", "a..test", 0 },
		{ "a leading dot", ".a.test", 0 },
		{ "two trailing dots", "a.test..", 0 },
		{ "a label starting with a hyphen", "-a.test", 0 },
		{ "a label ending with a hyphen", "a-.test", 0 },
		{ "a name ending with a hyphen", "a.test-", 0 },
		{ "a backslash escape", "a\\032b.test", 0 },
		{ "a slash", "a/b.test", 0 },
	};
	size_t	 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(dns_hostname_ok(cases[i].input) == cases[i].want, "%s (%s)", cases[i].name, cases[i].input);

	memset(label, 'a', 63);
	label[63] = '\0';
	ok(dns_hostname_ok(label), "a label of 63 octets");
	label[63] = 'a';
	label[64] = '\0';
	ok(!dns_hostname_ok(label), "a label of 64 octets");

	/* 253 octets: labels of 63, 63, 63 and 61 */
	memset(max, 'a', DNS_HOSTNAME_MAX);
	max[63] = max[127] = max[191] = '.';
	max[DNS_HOSTNAME_MAX] = '\0';
	ok(strlen(max) == 253 && dns_hostname_ok(max), "253 octets");
	memcpy(over, max, sizeof(max));
	over[DNS_HOSTNAME_MAX] = '.';
	ok(dns_hostname_ok(over), "253 octets and the root's dot");
	over[DNS_HOSTNAME_MAX] = 'a';
	over[DNS_HOSTNAME_MAX + 1] = '\0';
	ok(!dns_hostname_ok(over), "254 octets (no DNS query can carry it)");
	return tap_done();
}
