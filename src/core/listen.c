/*
 * listen.c - bind (master) and accept (workers). Accept errors such as EMFILE are logged and the listener
 * pauses for a moment instead of spinning.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "cfg.h"
#include "listen.h"
#include "log.h"
#include "smtp_session.h"
#include "util.h"

struct lsn {
	struct evconnlistener	*ev;
	const struct cfg_listen	*cfg;		/* borrowed */
	struct smtp_host	*host;		/* borrowed */
	struct event		*pause;		/* owned: resume accepting after an error */
};

int
lsn_bind(const struct cfg_listen *c, char *err, size_t errsize)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	int			 fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if (c->family == AF_INET6) {
		struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)c->port);
		if (inet_pton(AF_INET6, c->host, &sin6->sin6_addr) != 1)
			goto bad;
		sslen = sizeof(*sin6);
	} else {
		struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)c->port);
		if (inet_pton(AF_INET, c->host, &sin->sin_addr) != 1)
			goto bad;
		sslen = sizeof(*sin);
	}
	if ((fd = socket(c->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errsize, "listen %s: socket: %s", c->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (c->family == AF_INET6)	/* "[::]:25" is IPv6 only; list "0.0.0.0:25" too for IPv4 */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1 || listen(fd, 1024) == -1) {
		snprintf(err, errsize, "listen %s: %s", c->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
bad:
	snprintf(err, errsize, "listen %s: not a numeric address", c->text);
	return -1;
}

static void
lsn_accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct lsn	*l = arg;

	smtp_session_start(l->host, fd, sa, (socklen_t)salen, l->cfg);
}

static void
lsn_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lsn	*l = arg;

	evconnlistener_enable(l->ev);
}

static void
lsn_error_cb(struct evconnlistener *ev, void *arg)
{
	struct lsn	*l = arg;
	struct timeval	 tv = { 0, 100000 };
	int		 err = EVUTIL_SOCKET_ERROR();

	if (err == EAGAIN || err == EINTR || err == ECONNABORTED)
		return;	/* another worker took it, or the client gave up */
	log_warn("listen %s: accept: %s; pausing for 100 ms", l->cfg->text, strerror(err));
	evconnlistener_disable(ev);
	evtimer_add(l->pause, &tv);
}

struct lsn *
lsn_start(struct event_base *base, int fd, const struct cfg_listen *cfg, struct smtp_host *host)
{
	struct lsn	*l = xcalloc(1, sizeof(*l));

	l->cfg = cfg;
	l->host = host;
	/* No LEV_OPT_CLOSE_ON_FREE: the master keeps the socket for the workers it starts later. */
	l->ev = evconnlistener_new(base, lsn_accept_cb, l, LEV_OPT_REUSEABLE, 0, fd);	/* 0: already listening */
	if (l->ev == NULL)
		fatal("listen %s: cannot accept: %s", cfg->text, strerror(errno));
	evconnlistener_set_error_cb(l->ev, lsn_error_cb);
	l->pause = evtimer_new(base, lsn_resume_cb, l);
	return l;
}

void
lsn_stop(struct lsn *l)
{
	if (l == NULL)
		return;
	evconnlistener_free(l->ev);
	event_free(l->pause);
	free(l);
}
