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

struct queuectl_msg {
	struct spool_env	 env;
	char			**status;	/* per recipient: latest state line, or NULL (queued) */
	long long		 size;
	int			 held;
	char			*buf;
	size_t			 len;
};

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

static void
queuectl_msg_free(struct queuectl_msg *q)
{
	size_t	 i;

	for (i = 0; i < q->env.nrcpts; i++)
		free(q->status[i]);
	free(q->status);
	spool_env_free(&q->env);
	free(q->buf);
}

/* queuectl_load - read one message (the whole file when whole, else its envelope) and its state lines. */
static int
queuectl_load(const struct config *cfg, const char *dir, const char *id, int whole, struct queuectl_msg *q)
{
	char		 path[4400], state[4400], line[2048], err[256];
	struct stat	 st;
	ssize_t		 n;
	size_t		 want;
	FILE		*f;
	int		 fd;

	memset(q, 0, sizeof(*q));
	snprintf(path, sizeof(path), "%s/%s/%s", cfg->spool, dir, id);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	want = whole ? (size_t)st.st_size : (size_t)st.st_size < SPOOL_ENV_MAX ? (size_t)st.st_size : SPOOL_ENV_MAX;
	q->buf = xmalloc(want + 1);
	n = read(fd, q->buf, want);
	close(fd);
	if (n <= 0 || spool_env_parse(q->buf, (size_t)n, &q->env, err, sizeof(err)) == -1) {
		free(q->buf);
		return -1;
	}
	q->len = (size_t)n;
	q->buf[n] = '\0';
	q->size = (long long)st.st_size - (long long)q->env.body_offset;
	q->held = strcmp(dir, "hold") == 0;
	q->status = xcalloc(q->env.nrcpts, sizeof(*q->status));
	snprintf(state, sizeof(state), "%s/state/%s", cfg->spool, id);
	if ((f = fopen(state, "re")) != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			char		*end;
			unsigned long	 k = strtoul(line, &end, 10);

			line[strcspn(line, "\n")] = '\0';
			if (end != line && k < q->env.nrcpts && *end == ' ') {
				free(q->status[k]);
				q->status[k] = xstrdup(end + 1);
			}
		}
		fclose(f);
	}
	return 0;
}

static const char *
queuectl_status(const struct queuectl_msg *q, size_t i)
{
	if (q->status[i] != NULL)
		return q->status[i];
	return q->held ? "held" : "queued";
}

static void
queuectl_print(const struct queuectl_msg *q, int json, int first)
{
	char	 when[64];
	time_t	 t = (time_t)q->env.time;
	size_t	 i;

	if (json) {
		printf("%s{\"id\":\"%s\",\"size\":%lld,\"arrival\":%.0f,\"held\":%s,\"sender\":", first ? "" : ",",
		    q->env.id, q->size, q->env.time, q->held ? "true" : "false");
		queuectl_json_string(q->env.sender);
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
	printf("%-20s%s %8lld %s  <%s>\n", q->env.id, q->held ? "!" : " ", q->size, when, q->env.sender);
	for (i = 0; i < q->env.nrcpts; i++)
		printf("%22s<%s>  %s\n", "", q->env.rcpts[i], queuectl_status(q, i));
	printf("\n");
}

static int
queuectl_list(const struct config *cfg, int json)
{
	static const char *const dirs[] = { "queue", "hold" };
	char			 path[4200];
	DIR			*d;
	struct dirent		*de;
	struct queuectl_msg	 q;
	size_t			 k;
	int			 count = 0, held = 0;

	if (json)
		printf("[");
	for (k = 0; k < 2; k++) {
		snprintf(path, sizeof(path), "%s/%s", cfg->spool, dirs[k]);
		if ((d = opendir(path)) == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			if (!queueid_valid(de->d_name) || queuectl_load(cfg, dirs[k], de->d_name, 0, &q) == -1)
				continue;
			queuectl_print(&q, json, count == 0);
			held += q.held;
			queuectl_msg_free(&q);
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
	struct queuectl_msg	 q;

	if (!queueid_valid(id) || (queuectl_load(cfg, "queue", id, 1, &q) == -1 &&
	    queuectl_load(cfg, "hold", id, 1, &q) == -1)) {
		fprintf(stderr, "luamta queue show: no message %s in the queue\n", id);
		return 1;
	}
	queuectl_print(&q, 0, 1);
	fwrite(q.buf + q.env.body_offset, 1, q.len - q.env.body_offset, stdout);
	queuectl_msg_free(&q);
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
