/* test_log.c - log_printable(), the one escaping rule of src/core/log.c, and whole lines: one call, one line. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"

int
main(void)
{
	static const struct { const char *name, *input, *want; } cases[] = {
		{ "printable ASCII stays", "jdoe@example.test <x> [1.2.3.4]", "jdoe@example.test <x> [1.2.3.4]" },
		{ "LF and CR", "a\nb\r\nc", "a?b??c" },
		{ "TAB, ESC, DEL and other C0", "\t\033[31m\177\001", "??[31m??" },
		{ "valid two-octet UTF-8 stays", "j\303\274rgen", "j\303\274rgen" },
		{ "valid three- and four-octet UTF-8 stay", "\342\202\254 \360\237\230\200", "\342\202\254 \360\237\230\200" },
		{ "a C1 control as UTF-8", "a\302\205b", "a??b" },
		{ "a lone continuation octet", "a\200b", "a?b" },
		{ "a lone lead octet", "a\303", "a?" },
		{ "an overlong slash", "\300\257", "??" },
		{ "an overlong three-octet form", "\340\200\257", "???" },
		{ "a UTF-16 surrogate", "\355\240\200", "???" },
		{ "past U+10FFFF", "\364\220\200\200", "????" },
		{ "Latin-1, not UTF-8", "caf\351", "caf?" },
	};
	char	 buf[256], out[4096];
	size_t	 i;
	int	 fds[2], lines = 0;
	ssize_t	 n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", cases[i].input);
		ok(log_printable(buf, strlen(buf)) == strlen(cases[i].input), "%s: length kept", cases[i].name);
		ok(strcmp(buf, cases[i].want) == 0, "%s: got \"%s\"", cases[i].name, buf);
	}

	/* a whole line with a forged one inside: one line comes out */
	if (pipe(fds) == -1)
		return 1;
	log_init("luamta", LOG_L_INFO, 0);
	log_set_fd(fds[1]);
	log_info("%s: AUTH user=%s", "SID", "x\nDec  6 21:33:13 mx luamta/smtpd[1]: Q: from=<ceo@example.test>");
	close(fds[1]);
	n = read(fds[0], out, sizeof(out) - 1);
	out[n > 0 ? n : 0] = '\0';
	for (i = 0; out[i] != '\0'; i++)
		lines += out[i] == '\n';
	ok(lines == 1, "one line, not %d: %s", lines, out);
	ok(strstr(out, "user=x?Dec  6") != NULL, "the LF is a '?': %s", out);
	return tap_done();
}
