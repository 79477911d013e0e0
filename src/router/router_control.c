/*
 * router_control.c - the router's control socket (<spool>/control.sock), through which `luamta queue`
 * flushes, deletes, holds, releases and requeues messages without racing a delivery (router_priv.h).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "iothread.h"
#include "lb.h"
#include "log.h"
#include "router.h"
#include "router_intake.h"
#include "router_priv.h"
#include "util.h"

/* Control socket: `luamta queue flush|delete|hold|release`. One line in, one line out. The file work (does the
 * message exist, move it, remove it) runs on the I/O thread; the answer goes out when it is done. */

struct router_ctl {
	uint64_t		 id;
	struct bufferevent	*bev;		/* owns */
};

static struct idmap	*router_ctls;
static uint64_t		 router_next_ctl;

enum router_op { ROUTER_OP_FLUSH, ROUTER_OP_DELETE, ROUTER_OP_HOLD, ROUTER_OP_RELEASE };

struct router_move {
	enum router_op	 op;
	char		 id[QUEUEID_SIZE];
	char		*spool;		/* owns: server.spool when it was asked */
	uint64_t	 ctl;		/* who gets the answer; 0 for none */
	int		 busy;		/* the message is being delivered: delete marks it instead */
	char		 answer[200];
};

static void
router_ctl_answer(uint64_t ctl, const char *answer)
{
	struct router_ctl	*c = ctl ? idmap_get(router_ctls, ctl) : NULL;

	if (c == NULL)
		return;		/* the client went away */
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\n", answer);
	bufferevent_disable(c->bev, EV_READ);	/* the write callback closes once the answer is out */
}

static int
router_move_work(void *arg)
{
	struct router_move	*mv = arg;
	enum spool_where	 w = spool_where(mv->spool, mv->id);
	int			 in_queue = w == SPOOL_W_QUEUE || w == SPOOL_W_INCOMING, in_hold = w == SPOOL_W_HOLD, err;

	switch (mv->op) {
	case ROUTER_OP_FLUSH:
		snprintf(mv->answer, sizeof(mv->answer), in_queue ? "ok: flushing" : in_hold ?
		    "error: %s is held; release it first" : "error: no message %s in the queue", mv->id);
		return 0;
	case ROUTER_OP_DELETE:
		if (!in_queue && !in_hold)
			break;
		if (mv->busy) {
			snprintf(mv->answer, sizeof(mv->answer), "ok: deleted once the delivery in progress ends");
			return 0;
		}
		if ((err = spool_delete(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: deleted");
		return 0;
	case ROUTER_OP_HOLD:
		if (!in_queue)
			break;
		if ((err = spool_hold(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: held");
		return 0;
	case ROUTER_OP_RELEASE:
		if (!in_hold)
			break;
		if ((err = spool_release(mv->spool, mv->id)) != 0)
			return err;
		snprintf(mv->answer, sizeof(mv->answer), "ok: released");
		return 0;
	}
	snprintf(mv->answer, sizeof(mv->answer), "error: no message %s %s", mv->id,
	    mv->op == ROUTER_OP_RELEASE ? "is held" : "in the queue");
	return 0;
}

static void
router_move_done(void *arg, int err)
{
	struct router_move	*mv = arg;
	static const char *const verbs[] = { "flushed", "deleted", "held", "released" };
	char			 answer[300];

	if (err != 0)
		snprintf(answer, sizeof(answer), "error: %s", strerror(err));
	else
		util_strlcpy(answer, mv->answer, sizeof(answer));
	if (err == 0 && strncmp(answer, "ok", 2) == 0) {
		if (mv->op != ROUTER_OP_FLUSH)
			log_info("%s: %s by the administrator", mv->id, verbs[mv->op]);
		if (mv->op == ROUTER_OP_FLUSH || mv->op == ROUTER_OP_RELEASE)
			router_take(mv->id, 1);
		if (mv->op == ROUTER_OP_DELETE && mv->busy) {
			struct router_msg	*m = idmap_get(router_busy, router_key(mv->id));

			if (m != NULL)
				m->deleted = 1;
			else
				router_delete_files(mv->id);	/* it finished meanwhile */
		}
	}
	router_ctl_answer(mv->ctl, answer);
	free(mv->spool);
	free(mv);
}

void
router_delete_files(const char *id)
{
	struct router_move	*mv = xcalloc(1, sizeof(*mv));

	mv->op = ROUTER_OP_DELETE;
	util_strlcpy(mv->id, id, sizeof(mv->id));
	mv->spool = xstrdup(router_cfg->spool);
	iot_submit(router_io, router_move_work, router_move_done, mv, NULL);
}

/* router_requeue_done - a requeue is a flush that says so: the attempt routes each open recipient with the rules
 * loaded now (the router keeps no routing decision between attempts). */
static void
router_requeue_done(void *arg, int err)
{
	struct router_move	*mv = arg;

	if (err == 0 && strncmp(mv->answer, "ok", 2) == 0) {
		log_info("%s: requeued by the administrator", mv->id);
		util_strlcpy(mv->answer, "ok: requeued", sizeof(mv->answer));
	}
	router_move_done(mv, err);
}

static void
router_control(uint64_t ctl, const char *cmd, const char *id)
{
	static const struct { const char *name; enum router_op op; } ops[] = {
		{ "flush", ROUTER_OP_FLUSH }, { "delete", ROUTER_OP_DELETE }, { "hold", ROUTER_OP_HOLD },
		{ "release", ROUTER_OP_RELEASE }, { "requeue", ROUTER_OP_FLUSH },
	};
	struct router_move	*mv;
	size_t			 i;

	if (strcmp(cmd, "flush") == 0 && id == NULL) {
		intake_rescan(1);
		router_ctl_answer(ctl, "ok: flushing the whole queue");
		return;
	}
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(cmd, ops[i].name) == 0)
			break;
	if (i == sizeof(ops) / sizeof(ops[0]) && strcmp(cmd, "active") != 0) {
		router_ctl_answer(ctl, "error: unknown command; expected flush, delete, hold, release, requeue or "
		    "active");
		return;
	}
	if (id == NULL || !queueid_valid(id)) {
		router_ctl_answer(ctl, "error: expected a queue ID");
		return;
	}
	if (strcmp(cmd, "active") == 0) {	/* luamta queue --state active: is it being delivered now? */
		router_ctl_answer(ctl, idmap_get(router_busy, router_key(id)) != NULL ? "ok: active" :
		    "ok: not active");
		return;
	}
	mv = xcalloc(1, sizeof(*mv));
	mv->op = ops[i].op;
	mv->ctl = ctl;
	util_strlcpy(mv->id, id, sizeof(mv->id));
	mv->spool = xstrdup(router_cfg->spool);
	mv->busy = idmap_get(router_busy, router_key(id)) != NULL;
	/* A flush or requeue of a message in the middle of an attempt would do nothing: say so. */
	if ((mv->op == ROUTER_OP_HOLD || mv->op == ROUTER_OP_FLUSH) && mv->busy) {
		free(mv->spool);
		free(mv);
		router_ctl_answer(ctl, "error: being delivered now; try again in a moment");
		return;
	}
	if (mv->op != ROUTER_OP_RELEASE)
		router_unschedule(id);
	iot_submit(router_io, router_move_work, strcmp(cmd, "requeue") == 0 ? router_requeue_done :
	    router_move_done, mv, NULL);
}

static void
router_ctl_close(struct router_ctl *c)
{
	idmap_del(router_ctls, c->id);
	bufferevent_free(c->bev);
	free(c);
}

static void
router_ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct router_ctl	*c = arg;
	char			*line, *cmd, *id, *save = NULL;
	size_t			 len;

	if ((line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_ANY)) == NULL) {
		if (evbuffer_get_length(bufferevent_get_input(bev)) > ROUTER_CTL_LINE)
			router_ctl_close(c);
		return;
	}
	bufferevent_disable(bev, EV_READ);	/* one command per connection */
	cmd = strtok_r(line, " ", &save);
	id = strtok_r(NULL, " ", &save);
	if (cmd == NULL)
		router_ctl_answer(c->id, "error: empty command");
	else
		router_control(c->id, cmd, id);
	free(line);
}

static void
router_ctl_write_cb(struct bufferevent *bev, void *arg)
{
	struct router_ctl	*c = arg;

	if (!(bufferevent_get_enabled(bev) & EV_READ) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		router_ctl_close(c);	/* the answer is out */
}

static void
router_ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	router_ctl_close(arg);
}

static void
router_ctl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct router_ctl	*c = xcalloc(1, sizeof(*c));

	c->id = ++router_next_ctl;
	c->bev = bufferevent_socket_new(router_base, fd, BEV_OPT_CLOSE_ON_FREE);
	idmap_put(router_ctls, c->id, c);
	bufferevent_setcb(c->bev, router_ctl_read_cb, router_ctl_write_cb, router_ctl_event_cb, c);
	bufferevent_enable(c->bev, EV_READ);
}

struct evconnlistener *
router_ctl_listen(void)
{
	struct sockaddr_un	 sun;
	struct evconnlistener	*l;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	router_control_path(router_cfg->spool, sun.sun_path, sizeof(sun.sun_path));
	unlink(sun.sun_path);
	router_ctls = idmap_new();
	l = evconnlistener_new_bind(router_base, router_ctl_accept, NULL, LEV_OPT_CLOSE_ON_FREE, 16,
	    (struct sockaddr *)&sun, sizeof(sun));
	if (l == NULL)
		log_error("router: cannot listen on %s: %s; luamta queue flush/delete/hold/release will not work",
		    sun.sun_path, strerror(errno));
	else
		chmod(sun.sun_path, 0600);
	return l;
}

