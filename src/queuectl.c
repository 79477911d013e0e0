/*
 * queuectl.c - the queue command. `list` prints one block per message, mailq style (queue ID, size, arrival,
 * sender, then each recipient with its status and last reply); `--json` gives the same for scripts. `show`
 * prints a message with its envelope. The commands that change the queue go to the router over the control
 * socket, so that they never race with a delivery in progress.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "queuectl.h"
#include "queueid.h"
#include "router.h"
#include "spool.h"
#include "util.h"

static void
queuectl_json_string(const char *s)
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

static const char *
queuectl_status(const struct spool_msg *q, size_t i)
{
	if (q->state.rcpts[i].last != NULL)
		return q->state.rcpts[i].last;
	return q->held ? "held" : "queued";
}

static void
queuectl_print(const struct spool_msg *q, int json, int first)
{
	char	 when[64];
	time_t	 t = (time_t)q->env.time;
	size_t	 i;

	if (json) {
		printf("%s{\"id\":\"%s\",\"size\":%llu,\"arrival\":%.0f,\"held\":%s,\"sender\":", first ? "" : ",",
		    q->env.id, q->env.size, q->env.time, q->held ? "true" : "false");
		queuectl_json_string(q->env.sender);
		printf(",\"auth\":");
		if (q->env.auth[0] != '\0')
			queuectl_json_string(q->env.auth);
		else
			printf("null");
		printf(",\"recipients\":[");
		for (i = 0; i < q->env.nrcpts; i++) {
			printf("%s{\"address\":", i ? "," : "");
			queuectl_json_string(q->env.rcpts[i]);
			printf(",\"status\":");
			queuectl_json_string(queuectl_status(q, i));
			printf("}");
		}
		printf("]}");
		return;
	}
	strftime(when, sizeof(when), "%a %b %d %H:%M:%S", localtime(&t));
	printf("%-20s%s %8llu %s  <%s>\n", q->env.id, q->held ? "!" : " ", q->env.size, when, q->env.sender);
	for (i = 0; i < q->env.nrcpts; i++)
		printf("%22s<%s>  %s\n", "", q->env.rcpts[i], queuectl_status(q, i));
	printf("\n");
}

static int
queuectl_list(const struct config *cfg, int json)
{
	static const enum spool_dir dirs[] = { SPOOL_D_INCOMING, SPOOL_D_QUEUE, SPOOL_D_HOLD };
	char			 path[SPOOL_PATH_MAX], why[256];
	DIR			*d;
	struct dirent		*de;
	struct spool_msg	 q;
	size_t			 k;
	int			 count = 0, held = 0;

	if (json)
		printf("[");
	for (k = 0; k < sizeof(dirs) / sizeof(dirs[0]); k++) {
		spool_dir_path(cfg->spool, dirs[k], path, sizeof(path));
		if ((d = opendir(path)) == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			/* A message released or held meanwhile is found in the other directory (any). */
			memset(&q, 0, sizeof(q));
			if (!queueid_valid(de->d_name) || spool_load(cfg->spool, de->d_name, 1, SPOOL_LOAD_ENVELOPE, &q, why,
			    sizeof(why)) != 0 || (q.held != (dirs[k] == SPOOL_D_HOLD))) {
				if (q.data != NULL)
					spool_msg_free(&q);
				continue;
			}
			queuectl_print(&q, json, count == 0);
			held += q.held;
			spool_msg_free(&q);
			count++;
		}
		closedir(d);
	}
	if (json)
		printf("]\n");
	else
		printf("-- %d message%s in the queue%s\n", count, count == 1 ? "" : "s",
		    held ? " (! = held: luamta queue release ID)" : "");
	return 0;
}

static int
queuectl_show(const struct config *cfg, const char *id)
{
	struct spool_msg	 q;
	char			 why[256];

	if (!queueid_valid(id) || spool_load(cfg->spool, id, 1, 0, &q, why, sizeof(why)) != 0) {
		fprintf(stderr, "luamta queue show: no message %s in the queue\n", id);
		return 1;
	}
	queuectl_print(&q, 0, 1);
	fwrite(q.data + q.env.body_offset, 1, q.len - q.env.body_offset, stdout);
	spool_msg_free(&q);
	return 0;
}

static int
queuectl_ask(const struct config *cfg, const char *cmd, const char *id)
{
	struct sockaddr_un	 sun;
	char			 answer[512];
	ssize_t			 n;
	size_t			 got = 0;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	router_control_path(cfg->spool, sun.sun_path, sizeof(sun.sun_path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "luamta queue %s: no running server answers at %s (%s)\n", cmd, sun.sun_path,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return 1;
	}
	dprintf(fd, "%s%s%s\n", cmd, id ? " " : "", id ? id : "");
	while (got < sizeof(answer) - 1 && (n = read(fd, answer + got, sizeof(answer) - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	answer[got] = '\0';
	printf("%s", answer);
	return strncmp(answer, "ok", 2) == 0 ? 0 : 1;
}

int
queuectl_main(const struct config *cfg, int argc, char **argv)
{
	const char	*sub = NULL, *id = NULL;
	int		 i, json = 0;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0)
			i++;
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (sub == NULL)
			sub = argv[i];
		else if (id == NULL)
			id = argv[i];
		else {
			fprintf(stderr, "luamta queue: unexpected argument %s\n", argv[i]);
			return 2;
		}
	}
	if (sub == NULL || strcmp(sub, "list") == 0)
		return queuectl_list(cfg, json);
	if (strcmp(sub, "show") == 0 && id != NULL)
		return queuectl_show(cfg, id);
	if (strcmp(sub, "flush") == 0)
		return queuectl_ask(cfg, sub, id);
	if ((strcmp(sub, "delete") == 0 || strcmp(sub, "hold") == 0 || strcmp(sub, "release") == 0) && id != NULL)
		return queuectl_ask(cfg, sub, id);
	fprintf(stderr, "usage: luamta queue [-c FILE] list [--json] | show ID | flush [ID] | delete ID | hold ID | "
	    "release ID\n");
	return 2;
}
