/*
 * fuzz_dns.c - libFuzzer target for the DNS-derived names of src/core/dns.c: dns_hostname_ok() (is a PTR answer a
 * host name we may use) against a reference written another way (split into labels), and dns_reverse_name()
 * (the PTR query name of a client address). Built and run by t/fuzz/run.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns.h"

#define FUZZ_IN_MAX	1024

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* fuzz_label_ok - RFC 1123 2.1: 1 to 63 letters, digits and hyphens, no hyphen first or last. */
static int
fuzz_label_ok(const char *l, size_t n)
{
	size_t	 i;

	if (n == 0 || n > DNS_LABEL_MAX || l[0] == '-' || l[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!((l[i] >= 'a' && l[i] <= 'z') || (l[i] >= 'A' && l[i] <= 'Z') || (l[i] >= '0' && l[i] <= '9') ||
		    l[i] == '-'))
			return 0;
	return 1;
}

/* fuzz_hostname_ref - the reference: labels between dots, one trailing dot allowed, 253 octets at most. */
static int
fuzz_hostname_ref(const char *name)
{
	size_t		 n = strlen(name);
	const char	*p, *dot, *end;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_HOSTNAME_MAX)
		return 0;
	end = name + n;
	for (p = name; p <= end; p = dot + 1) {
		dot = memchr(p, '.', (size_t)(end - p));
		if (dot == NULL)
			dot = end;
		if (!fuzz_label_ok(p, (size_t)(dot - p)))
			return 0;
	}
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	 buf[FUZZ_IN_MAX + 2], out[128];
	size_t		 n = size < FUZZ_IN_MAX ? size : FUZZ_IN_MAX, len;
	unsigned char	 a[16];
	int		 ok, r;

	memcpy(buf, data, n);
	buf[n] = '\0';

	ok = dns_hostname_ok(buf);
	assert(ok == 0 || ok == 1);
	assert(ok == fuzz_hostname_ref(buf));
	if (ok) {
		len = strlen(buf);
		assert(strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == len);
		if (buf[len - 1] != '.' && len < DNS_HOSTNAME_MAX + 1) {
			buf[len] = '.';		/* the same name with the root's dot */
			buf[len + 1] = '\0';
			assert(dns_hostname_ok(buf) == 1);
			buf[len] = '\0';
		}
	}

	/* The reverse name: exactly for what inet_pton() takes as an address, and bounded. */
	memset(out, 0x5a, sizeof(out));
	r = dns_reverse_name(buf, out, sizeof(out));
	if (inet_pton(AF_INET, buf, a) == 1) {
		assert(r == 0);
		len = strlen(out);
		assert(len < sizeof(out) && len > 13 && strcmp(out + len - 13, ".in-addr.arpa") == 0);
		assert(dns_hostname_ok(out) == 1);
	} else if (inet_pton(AF_INET6, buf, a) == 1) {
		assert(r == 0);
		assert(strlen(out) == 72 && strcmp(out + 64, "ip6.arpa") == 0);
		assert(dns_hostname_ok(out) == 1);
	} else
		assert(r == -1);
	/* Too small an output is refused, never overrun. */
	memset(out, 0x5a, sizeof(out));
	r = dns_reverse_name(buf, out, 16);
	assert(r == -1 || strlen(out) < 16);
	assert((unsigned char)out[16] == 0x5a);
	return 0;
}
