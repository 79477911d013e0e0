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
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "explain.h"
#include "lb.h"
#include "log.h"
#include "master.h"
#include "proctitle.h"
#include "queuectl.h"
#include "queueid.h"
#include "scenario.h"
#include "sendmail.h"
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
	    "       luamta queue    [-c FILE] list [--json] [--pending] [SELECTOR ...] | show ID | flush\n"
	    "       luamta queue    [-c FILE] delete|hold|release|flush|requeue [--dry-run] SELECTOR ...\n"
	    "                       SELECTOR: ID ... | ALL [deferred|held|active|queued] | --from ADDR | --to ADDR |\n"
	    "                       --domain DOMAIN | --older-than DURATION | --state deferred|held|active|queued\n"
	    "       luamta simulate [-c FILE] --ip ADDR --from ADDR --to ADDR ...\n"
	    "       luamta test     [-c FILE] [--junit FILE] [SCENARIO ...]   run policy scenarios\n"
	    "       luamta explain  [-c FILE] [--json] ID   what happened to a session or message\n"
	    "       luamta sendmail [-c FILE] [-t] [-i] [-f SENDER] [-F NAME] [-bs] [-bp] [RCPT ...]\n"
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

/*
 * main_as_user - run fn(path) as server.user when one is set and we are root, in a child, so that what check and
 * reload validate is what the running server can load (a key only root reads fails here, not at the next start).
 * Otherwise fn runs here, as the caller. Returns fn's result.
 */
static int
main_as_user(const char *path, int (*fn)(const char *), FILE *errf)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL, *user, err[512];
	pid_t		 pid;
	int		 status;

	if (geteuid() != 0)
		return fn(path);
	g = lb_gen_new(path, LB_ROLE_CHECK, &errors, &warnings);
	free(errors);
	free(warnings);
	if (g == NULL || lb_gen_config(g)->user == NULL) {
		lb_gen_release(g);
		return fn(path);	/* it says what is wrong itself */
	}
	user = xstrdup(lb_gen_config(g)->user);
	lb_gen_release(g);
	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1) {
		fprintf(errf, "error: %s: fork: %s\n", path, strerror(errno));
		free(user);
		return 1;
	}
	if (pid == 0) {
		if (master_become_user(user, err, sizeof(err)) == -1) {
			fprintf(errf, "error: %s: %s\n", path, err);
			fflush(errf);
			_exit(1);
		}
		status = fn(path);
		fflush(stdout);
		fflush(stderr);
		_exit(status);
	}
	free(user);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return 1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* main_router_errors - what the router would say about path (it loads the "routing" module, which the
 * workers do not), or NULL when it loads; the caller frees. */
static char *
main_router_errors(const char *path)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL;

	g = lb_gen_new(path, LB_ROLE_ROUTER, &errors, &warnings);
	free(warnings);
	if (g != NULL) {
		lb_gen_release(g);
		free(errors);
		return NULL;
	}
	return errors ? errors : xstrdup("the router cannot load the configuration");
}

static int
main_check_here(const char *path)
{
	struct lb_gen	*g;
	char		*errors = NULL, *warnings = NULL, *line, *save = NULL;
	int		 nwarn = 0;

	g = lb_gen_new(path, LB_ROLE_CHECK, &errors, &warnings);
	if (g != NULL && (errors = main_router_errors(path)) != NULL) {
		lb_gen_release(g);
		g = NULL;
	}
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

static int
main_check(const char *path)
{
	return main_as_user(path, main_check_here, stdout);
}

/* main_server_pid - the master of the instance that holds <spool>/luamta.pid locked; -1 when none runs. */
static pid_t
main_server_pid(const struct config *cfg)
{
	char	 path[4200], buf[32];
	int	 fd, n;

	master_pid_path(cfg->spool, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {	/* nobody holds it: a file left by a crash */
		close(fd);
		return -1;
	}
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

/* main_reload_status - the first line of <spool>/reload.status into line; the rest of the file, or NULL. */
static char *
main_reload_status(const char *spool, char *line, size_t size)
{
	char	 path[4200], buf[8192];
	FILE	*f;
	size_t	 n;

	line[0] = '\0';
	master_status_path(spool, path, sizeof(path));
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	n = strcspn(buf, "\n");
	if (buf[n] != '\n')
		return NULL;	/* not written whole: never, since it is renamed into place */
	buf[n] = '\0';
	util_strlcpy(line, buf, size);
	return xstrdup(buf + n + 1);
}

/* main_reload_validate - what check validates, before anything is sent. */
static int
main_reload_validate(const char *path)
{
	struct lb_gen	*g = main_load(path, 0);
	char		*errors;

	if (g != NULL && (errors = main_router_errors(path)) != NULL) {
		fprintf(stderr, "%s%s", errors, errors[0] && errors[strlen(errors) - 1] == '\n' ? "" : "\n");
		free(errors);
		lb_gen_release(g);
		g = NULL;
	}
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
	lb_gen_release(g);
	return 0;
}

#define MAIN_RELOAD_WAIT	30	/* seconds; the master gives its children 25 */

/*
 * main_reload - validate as server.user, send HUP to the master and wait for its answer in reload.status:
 * 0 only when every worker and the router loaded the new configuration.
 */
static int
main_reload(const char *path)
{
	struct lb_gen	*g;
	struct timespec	 nap = { 0, 50 * 1000 * 1000 };
	char		 before[128], now[128], want[32], *rest = NULL, *line, *save = NULL;
	pid_t		 pid;
	int		 i, failed;

	if (main_as_user(path, main_reload_validate, stderr) != 0)
		return 1;
	if ((g = main_load(path, 1)) == NULL)
		return 1;
	if ((pid = main_server_pid(lb_gen_config(g))) <= 0) {
		fprintf(stderr, "luamta reload: no running server found for spool %s\n", lb_gen_config(g)->spool);
		lb_gen_release(g);
		return 1;
	}
	free(main_reload_status(lb_gen_config(g)->spool, before, sizeof(before)));
	if (kill(pid, SIGHUP) == -1) {
		fprintf(stderr, "luamta reload: cannot signal %ld: %s\n", (long)pid, strerror(errno));
		lb_gen_release(g);
		return 1;
	}
	snprintf(want, sizeof(want), "%ld ", (long)pid);
	for (i = 0; i < MAIN_RELOAD_WAIT * 20; i++) {
		nanosleep(&nap, NULL);
		free(rest);
		rest = main_reload_status(lb_gen_config(g)->spool, now, sizeof(now));
		if (rest != NULL && strcmp(now, before) != 0 && strncmp(now, want, strlen(want)) == 0)
			break;
	}
	lb_gen_release(g);
	if (rest == NULL || strcmp(now, before) == 0) {
		fprintf(stderr, "luamta reload: sent SIGHUP to %ld, but no answer within %d seconds\n", (long)pid,
		    MAIN_RELOAD_WAIT);
		free(rest);
		return 1;
	}
	failed = strncmp(rest, "ok\n", 3) != 0;
	if (failed) {
		line = strtok_r(rest, "\n", &save);	/* "failed" */
		while ((line = strtok_r(NULL, "\n", &save)) != NULL)
			fprintf(stderr, "error: %s\n", line);
		fprintf(stderr, "luamta reload: sent SIGHUP to %ld; a process kept its old state (see above)\n",
		    (long)pid);
	} else
		printf("luamta reload: sent SIGHUP to %ld; every process loaded the new configuration\n", (long)pid);
	free(rest);
	return failed ? 1 : 0;
}

int
main(int argc, char **argv)
{
	const char	*cmd, *path = MAIN_DEFAULT_CONFIG;
	int		 i, rc, own_args;
	struct lb_gen	*g;

	argv = proctitle_init(argc, argv);	/* the original area becomes the process title of `run` */
	log_init("luamta", LOG_L_INFO, 0);
	{
		/* Installed as sendmail or mailq (make install-mta-links), the binary is that command. */
		const char	*base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];

		if (strcmp(base, "sendmail") == 0 || strcmp(base, "mailq") == 0)
			return sendmail_main(path, argc - 1, argv + 1, strcmp(base, "mailq") == 0);
	}
	if (argc < 2) {
		main_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	own_args = strcmp(cmd, "simulate") == 0 || strcmp(cmd, "queue") == 0 || strcmp(cmd, "test") == 0 ||
	    strcmp(cmd, "explain") == 0 || strcmp(cmd, "sendmail") == 0;	/* they parse the rest */
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
	if (strcmp(cmd, "sendmail") == 0)
		return sendmail_main(path, argc - 2, argv + 2, 0);
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		main_usage(stdout);
		return 0;
	}
	fprintf(stderr, "luamta: unknown command %s\n", cmd);
	main_usage(stderr);
	return 2;
}
