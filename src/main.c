/*
 * main.c - the command line (docs/admin.md): run, check, reload, queue, simulate, test, version.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "explain.h"
#include "lb.h"
#include "log.h"
#include "master.h"
#include "queuectl.h"
#include "queueid.h"
#include "scenario.h"
#include "simulate.h"
#include "tls.h"
#include "spool.h"
#include "util.h"

#include <lua.h>

#define MAIN_DEFAULT_CONFIG	LUAMTA_SYSCONFDIR "/luamta/luamta.lua"

static void
main_usage(FILE *f)
{
	fprintf(f,
	    "usage: luamta run      [-c FILE]   run in the foreground\n"
	    "       luamta check    [-c FILE]   check the configuration and the rules\n"
	    "       luamta reload   [-c FILE]   make the running server reload (SIGHUP)\n"
	    "       luamta queue    [-c FILE] list [--json] | show ID | flush [ID] | delete ID | hold ID | release ID\n"
	    "       luamta simulate [-c FILE] --ip ADDR --from ADDR --to ADDR ...\n"
	    "       luamta test     [-c FILE] [--junit FILE] [SCENARIO ...]   run policy scenarios\n"
	    "       luamta explain  [-c FILE] [--json] ID   what happened to a session or message\n"
	    "       luamta version\n"
	    "The default FILE is %s.\n", MAIN_DEFAULT_CONFIG);
}

/* main_load - a generation for a command that only reads the configuration; prints errors itself. */
static struct lb_gen *
main_load(const char *path, int quiet_warnings)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;

	g = lb_gen_new(path, LB_ROLE_CHECK, &errors, &warnings);
	if (warnings && !quiet_warnings)
		fprintf(stderr, "%s", warnings);
	if (g == NULL)
		fprintf(stderr, "%s%s", errors, errors[0] && errors[strlen(errors) - 1] == '\n' ? "" : "\n");
	free(errors);
	free(warnings);
	return g;
}

static int
main_check(const char *path)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL, *line, *save = NULL;
	int		 nwarn = 0;

	g = lb_gen_new(path, LB_ROLE_CHECK, &errors, &warnings);
	for (line = warnings ? strtok_r(warnings, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		printf("warning: %s\n", line);
		nwarn++;
	}
	if (g != NULL && lb_gen_config(g)->user == NULL && geteuid() == 0) {
		printf("warning: %s: server.user: not set, so luamta keeps running as root; expected an "
		    "unprivileged user such as \"luamta\"\n", path);
		nwarn++;
	}
	if (g == NULL) {
		save = NULL;
		for (line = strtok_r(errors, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			printf("error: %s\n", line);
		free(errors);
		free(warnings);
		return 1;
	}
	if (lb_gen_config(g)->tls_cert != NULL || lb_gen_config(g)->tls_key != NULL) {
		char	 err[600];

		if (lb_gen_config(g)->tls_cert == NULL || lb_gen_config(g)->tls_key == NULL) {
			printf("error: %s: tls: cert and key go together; expected both\n", path);
			free(warnings);
			lb_gen_release(g);
			return 1;
		}
		char	 warn[600];
		size_t	 i;

		for (i = 0; i < lb_gen_config(g)->ntls_pairs; i++) {	/* tls.cert/tls.key, then tls.certs */
			if (tls_check_files(lb_gen_config(g)->tls_certs[i], lb_gen_config(g)->tls_keys[i], err,
			    sizeof(err), warn, sizeof(warn)) == -1) {
				printf("error: %s: %s\n", path, err);
				free(warnings);
				lb_gen_release(g);
				return 1;
			}
			if (warn[0] != '\0') {
				printf("warning: %s: %s\n", path, warn);
				nwarn++;
			}
		}
	}
	printf("%s: configuration and rules OK (%d warning%s)\n", path, nwarn, nwarn == 1 ? "" : "s");
	free(warnings);
	lb_gen_release(g);
	return 0;
}

static pid_t
main_server_pid(const struct config *cfg)
{
	char	 path[4200], buf[32];
	int	 fd, n;

	master_pid_path(cfg->spool, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

static int
main_reload(const char *path)
{
	struct lb_gen	*g = main_load(path, 0);
	pid_t		 pid;

	if (g == NULL) {
		fprintf(stderr, "luamta reload: not sent: the running server would keep its old policy\n");
		return 1;
	}
	if (lb_gen_config(g)->tls_cert != NULL && lb_gen_config(g)->tls_key != NULL) {
		char	 err[600];

		if (tls_check_files(lb_gen_config(g)->tls_cert, lb_gen_config(g)->tls_key, err, sizeof(err), NULL,
		    0) == -1) {
			fprintf(stderr, "%s: %s\nluamta reload: not sent: the running server would keep its old "
			    "certificate\n", path, err);
			lb_gen_release(g);
			return 1;
		}
	}
	pid = main_server_pid(lb_gen_config(g));
	if (pid <= 0 || kill(pid, SIGHUP) == -1) {
		fprintf(stderr, "luamta reload: no running server found for spool %s\n", lb_gen_config(g)->spool);
		lb_gen_release(g);
		return 1;
	}
	printf("luamta reload: sent SIGHUP to %ld\n", (long)pid);
	lb_gen_release(g);
	return 0;
}

int
main(int argc, char **argv)
{
	const char	*cmd, *path = MAIN_DEFAULT_CONFIG;
	int		 i, rc, own_args;
	struct lb_gen	*g;

	log_init("luamta", LOG_L_INFO, 0);
	if (argc < 2) {
		main_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	own_args = strcmp(cmd, "simulate") == 0 || strcmp(cmd, "queue") == 0 || strcmp(cmd, "test") == 0 ||
	    strcmp(cmd, "explain") == 0;	/* they parse the rest */
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (!own_args) {
			fprintf(stderr, "luamta %s: unexpected argument %s\n", cmd, argv[i]);
			main_usage(stderr);
			return 2;
		}
	}
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("luamta %s (%s)\n", PACKAGE_VERSION, LUA_RELEASE);
		return 0;
	}
	if (strcmp(cmd, "run") == 0)
		return master_run(path);
	if (strcmp(cmd, "check") == 0)
		return main_check(path);
	if (strcmp(cmd, "reload") == 0)
		return main_reload(path);
	if (strcmp(cmd, "queue") == 0) {
		if ((g = main_load(path, 1)) == NULL)
			return 2;
		rc = queuectl_main(lb_gen_config(g), argc - 2, argv + 2);
		lb_gen_release(g);
		return rc;
	}
	if (strcmp(cmd, "simulate") == 0)
		return simulate_main(path, argc - 2, argv + 2);
	if (strcmp(cmd, "test") == 0)
		return scenario_main(path, argc - 2, argv + 2);
	if (strcmp(cmd, "explain") == 0)
		return explain_main(path, argc - 2, argv + 2);
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		main_usage(stdout);
		return 0;
	}
	fprintf(stderr, "luamta: unknown command %s\n", cmd);
	main_usage(stderr);
	return 2;
}
