/*
 * fuzz_config.c - libFuzzer target for the configuration loader: lb_gen_new() (src/lua/lb.c) running
 * lua/luamta/config.lua's checks and cfg_from_lua() (src/core/cfg.c) on a file written from the input. An input whose
 * first octet is even is turned into a file of section assignments (tables nested 4 deep of known section and key
 * names, numbers at their limits, strings of any octets, wrong types), so that every input is a file that loads
 * and the checks see every shape; an odd first octet writes the rest as the file itself (Lua source, which runs
 * in the loader's sandbox with its instruction budget). Either the file gives a generation and no errors, or
 * errors and no generation; nothing crashes, leaks or hangs. Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb.h"

#define FUZZ_OUT_MAX	16384	/* octets of a generated file */
#define FUZZ_DEPTH	4

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char	 fuzz_dir[64], fuzz_path[96];

static const char *const fuzz_sections[] = { "server", "tls", "dns", "log", "local_domains", "directory",
	"inbound", "routing", "delivery", "metrics", "trace", "http", "redis", "greylist", "ratelimit" };
static const char *const fuzz_keys[] = { "name", "address", "tls", "enabled", "delivery", "workers", "users",
	"spool", "rules_dir", "maildir", "listen", "key", "cert", "aliases", "action", "syslog", "relay", "enforce",
	"deny_to", "deny", "allow_from", "allow", "user", "smtp_outbound", "sites", "message", "log", "ident",
	"hosts", "hostname", "extra_rules", "bare_newline", "whitelist", "verify_ptr", "verify_local",
	"verify_hostname", "verify_domain", "tries", "timeout", "submission", "smart_host_all", "smart_host",
	"servers", "sender", "rules", "routes", "relay_host", "recipient", "precedence", "password", "max_errors",
	"lookup", "lmtp", "groups", "file", "facility", "exclude", "dnswl", "dnsbl", "deny_from", "connection",
	"blacklist", "authenticated", "allow_to", "max_message_size", "max_recipients", "timeouts", "command",
	"data", "port", "retry", "max_hops", "level", "max_junk_commands", "required", "tickets", "listen_backlog",
	"1", "" };
static const char *const fuzz_strings[] = { "127.0.0.1:2525", "[::1]:25", "0.0.0.0:0", "%d/%u", "<spool>/x",
	"", " , ", ",", "required", "starttls", "implicit", "none", "example.test", "*.example.test", "a@b",
	"192.0.2.0/24", "::/0", "/", "..", "debug", "mail", "local7", "reject", "tempfail", "accept", "$6$x$y",
	"25", "-1", "1e309", "nan", "inet6", "[192.0.2.1]", "lmtp:/tmp/x", "%", "%%", "%z" };
static const char *const fuzz_atoms[] = { "0/0", "1/0", "-1/0", "math.maxinteger", "math.mininteger", "nil",
	"0", "-0.0", "1e308", "2^63", "-2^63", "0x7fffffff", "4294967296", "0.5", "true", "false" };

#define FUZZ_N(a)	(sizeof(a) / sizeof((a)[0]))

struct fuzz_gen {
	const uint8_t	*p, *end;
	char		*out;
	size_t		 len;
};

static unsigned
fuzz_byte(struct fuzz_gen *g)
{
	return g->p < g->end ? *g->p++ : 0;
}

static void
fuzz_put(struct fuzz_gen *g, const char *s)
{
	size_t	 n = strlen(s);

	if (g->len + n < FUZZ_OUT_MAX) {
		memcpy(g->out + g->len, s, n);
		g->len += n;
		g->out[g->len] = '\0';
	}
}

/* fuzz_string - a Lua string literal of up to 63 input octets, every one escaped as \ddd. */
static void
fuzz_string(struct fuzz_gen *g)
{
	char		 esc[8];
	unsigned	 n = fuzz_byte(g) % 64, i;

	fuzz_put(g, "\"");
	for (i = 0; i < n && g->p < g->end; i++) {
		snprintf(esc, sizeof(esc), "\\%03u", fuzz_byte(g));
		fuzz_put(g, esc);
	}
	fuzz_put(g, "\"");
}

static void
fuzz_value(struct fuzz_gen *g, int depth)
{
	char		 num[64];
	unsigned	 kind = fuzz_byte(g) % 8, n, i;
	int32_t		 v;

	if (depth >= FUZZ_DEPTH && kind >= 5)
		kind = 2;
	switch (kind) {
	case 0:
		v = (int32_t)(fuzz_byte(g) | fuzz_byte(g) << 8 | fuzz_byte(g) << 16 | (uint32_t)fuzz_byte(g) << 24);
		snprintf(num, sizeof(num), "%d", (int)v);
		fuzz_put(g, num);
		break;
	case 1:
		fuzz_put(g, fuzz_atoms[fuzz_byte(g) % FUZZ_N(fuzz_atoms)]);
		break;
	case 2:
		fuzz_put(g, "\"");
		fuzz_put(g, fuzz_strings[fuzz_byte(g) % FUZZ_N(fuzz_strings)]);
		fuzz_put(g, "\"");
		break;
	case 3:
		fuzz_string(g);
		break;
	case 4:
		fuzz_put(g, fuzz_byte(g) & 1 ? "true" : "false");
		break;
	case 5:
	case 6:		/* a table of known keys */
		fuzz_put(g, "{ ");
		n = fuzz_byte(g) % 7;
		for (i = 0; i < n && g->p < g->end; i++) {
			fuzz_put(g, "[\"");
			fuzz_put(g, fuzz_keys[fuzz_byte(g) % FUZZ_N(fuzz_keys)]);
			fuzz_put(g, "\"] = ");
			fuzz_value(g, depth + 1);
			fuzz_put(g, ", ");
		}
		fuzz_put(g, "}");
		break;
	default:	/* a list */
		fuzz_put(g, "{ ");
		n = fuzz_byte(g) % 6;
		for (i = 0; i < n && g->p < g->end; i++) {
			fuzz_value(g, depth + 1);
			fuzz_put(g, ", ");
		}
		fuzz_put(g, "}");
		break;
	}
}

static void
fuzz_cleanup(void)
{
	unlink(fuzz_path);
	rmdir(fuzz_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* The Lua library of this source tree (the target is not src/luamta, which finds it by its own path). */
	setenv("LUAMTA_DATADIR", LUAMTA_SRCDIR, 0);
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/luamta-fuzzcfg.XXXXXX", "/tmp");
	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/luamta.lua", fuzz_dir);
	atexit(fuzz_cleanup);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	 out[FUZZ_OUT_MAX + 1];
	struct fuzz_gen	 g;
	struct lb_gen	*gen;
	char		*errors = NULL, *warnings = NULL;
	FILE		*f;
	unsigned	 n, i;

	if (size < 1 || size > FUZZ_OUT_MAX)
		return 0;
	g.p = data + 1;
	g.end = data + size;
	g.out = out;
	g.len = 0;
	out[0] = '\0';
	if (data[0] % 2 == 0) {
		n = 1 + fuzz_byte(&g) % 5;
		for (i = 0; i < n; i++) {
			fuzz_put(&g, fuzz_sections[fuzz_byte(&g) % FUZZ_N(fuzz_sections)]);
			fuzz_put(&g, " = ");
			fuzz_value(&g, 0);
			fuzz_put(&g, "\n");
		}
	} else {
		memcpy(out, data + 1, size - 1);
		g.len = size - 1;
	}
	if ((f = fopen(fuzz_path, "w")) == NULL)
		abort();
	fwrite(out, 1, g.len, f);
	fclose(f);

	gen = lb_gen_new(fuzz_path, LB_ROLE_CHECK, &errors, &warnings);
	if (gen != NULL) {
		assert(errors == NULL);
		assert(lb_gen_config(gen) != NULL);
		lb_gen_release(gen);
	} else
		assert(errors != NULL && errors[0] != '\0');
	free(errors);
	free(warnings);
	return 0;
}
