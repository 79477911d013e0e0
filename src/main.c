/*
 * main.c - the command line (SPEC section 2): run, check, reload, queue, simulate, version.
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
#include "lb.h"
#include "log.h"
#include "master.h"
#include "queueid.h"
#include "simulate.h"
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
	    "       luamta queue    [-c FILE] list [--json]\n"
	    "       luamta simulate [-c FILE] --ip ADDR --from ADDR --to ADDR ...\n"
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

static void
main_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* main_queue_list - mailq-style listing of <spool>/queue with each recipient's recorded state. */
static int
main_queue_list(const struct config *cfg, int json)
{
	char		 dir[4200], path[4400], state[4400], err[256], when[64], line[1024];
	DIR		*d;
	struct dirent	*de;
	int		 count = 0;

	snprintf(dir, sizeof(dir), "%s/queue", cfg->spool);
	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "luamta queue: cannot read %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (json)
		printf("[");
	while ((de = readdir(d)) != NULL) {
		struct spool_env	 env;
		struct stat		 st;
		char			*buf;
		char			**status;
		FILE			*f;
		ssize_t			 n;
		int			 fd;
		size_t			 i;
		time_t			 t;

		if (!queueid_valid(de->d_name))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path))
			continue;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) == -1) {
			if (fd != -1)
				close(fd);
			continue;
		}
		buf = xmalloc(SPOOL_ENV_MAX + 1);
		n = read(fd, buf, SPOOL_ENV_MAX);
		close(fd);
		if (n <= 0 || spool_env_parse(buf, (size_t)n, &env, err, sizeof(err)) == -1) {
			free(buf);
			continue;
		}
		status = xcalloc(env.nrcpts, sizeof(*status));
		snprintf(state, sizeof(state), "%s/state/%s", cfg->spool, env.id);
		if ((f = fopen(state, "re")) != NULL) {
			while (fgets(line, sizeof(line), f) != NULL) {
				char		*end;
				unsigned long	 k = strtoul(line, &end, 10);

				line[strcspn(line, "\n")] = '\0';
				if (end != line && k < env.nrcpts && *end == ' ') {
					free(status[k]);
					status[k] = xstrdup(end + 1);
				}
			}
			fclose(f);
		}
		t = (time_t)env.time;
		strftime(when, sizeof(when), "%a %b %d %H:%M:%S", localtime(&t));
		if (json) {
			printf("%s{\"id\":\"%s\",\"size\":%lld,\"arrival\":%.0f,\"sender\":", count ? "," : "",
			    env.id, (long long)(st.st_size - (off_t)env.body_offset), env.time);
			main_json_string(env.sender);
			printf(",\"recipients\":[");
			for (i = 0; i < env.nrcpts; i++) {
				printf("%s{\"address\":", i ? "," : "");
				main_json_string(env.rcpts[i]);
				printf(",\"status\":");
				main_json_string(status[i] ? status[i] : "queued");
				printf("}");
			}
			printf("]}");
		} else {
			printf("%-20s %8lld %s  <%s>\n", env.id, (long long)(st.st_size - (off_t)env.body_offset),
			    when, env.sender);
			for (i = 0; i < env.nrcpts; i++)
				printf("%*s <%s>  %s\n", 20, "", env.rcpts[i], status[i] ? status[i] : "queued");
		}
		for (i = 0; i < env.nrcpts; i++)
			free(status[i]);
		free(status);
		spool_env_free(&env);
		free(buf);
		count++;
	}
	closedir(d);
	if (json)
		printf("]\n");
	else
		printf("-- %d message%s in the queue\n", count, count == 1 ? "" : "s");
	return 0;
}

int
main(int argc, char **argv)
{
	const char	*cmd, *path = MAIN_DEFAULT_CONFIG;
	int		 i, json = 0, rc;
	const char	*sub = NULL;
	struct lb_gen	*g;

	log_init("luamta", LOG_L_INFO, 0);
	if (argc < 2) {
		main_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (sub == NULL && argv[i][0] != '-')
			sub = argv[i];
		else if (strcmp(cmd, "simulate") != 0) {
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
		if (sub == NULL || strcmp(sub, "list") != 0) {
			fprintf(stderr, "luamta queue: only \"list\" exists so far; show, flush, delete, hold and "
			    "release come with the router\n");
			return 2;
		}
		if ((g = main_load(path, 1)) == NULL)
			return 2;
		rc = main_queue_list(lb_gen_config(g), json);
		lb_gen_release(g);
		return rc;
	}
	if (strcmp(cmd, "simulate") == 0)
		return simulate_main(path, argc - 2, argv + 2);
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		main_usage(stdout);
		return 0;
	}
	fprintf(stderr, "luamta: unknown command %s\n", cmd);
	main_usage(stderr);
	return 2;
}
