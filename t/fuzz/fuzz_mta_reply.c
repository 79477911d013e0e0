/*
 * fuzz_mta_reply.c - libFuzzer target for the outbound client's reply parser and state machine (src/router/mta.c). A
 * next hop on a Unix socket in the same event loop plays the input as its whole side of the conversation (it is
 * read in order, however early it comes), then closes; mta_deliver() carries one message for 1 to 3 recipients,
 * over SMTP or LMTP, with or without PIPELINING offered by the input. Checks: the transaction ends exactly once,
 * within its timeouts; every recipient has an outcome; "sent" only on the server's 2xx reply (a "354" to RCPT or a
 * "250" to DATA once stood for a delivery), and each DSN's class matches its outcome; texts stay inside their bounds. Built and run by t/fuzz/run.
 */
#include <assert.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "mta.h"

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct event_base	*fuzz_base;
static struct event		*fuzz_accept_ev;
static char			 fuzz_dir[64], fuzz_sock[108];
static const uint8_t		*fuzz_script;
static size_t			 fuzz_script_len;
static int			 fuzz_done, fuzz_peers;
static size_t			 fuzz_nrcpts;

static void
fuzz_peer_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
	fuzz_peers--;
}

static void
fuzz_peer_read(struct bufferevent *bev, void *arg)
{
	evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

/* The script is out: close our side for writing, and keep reading until the client goes. */
static void
fuzz_peer_written(struct bufferevent *bev, void *arg)
{
	shutdown(bufferevent_getfd(bev), SHUT_WR);
	bufferevent_setcb(bev, fuzz_peer_read, NULL, fuzz_peer_event, NULL);
}

static void
fuzz_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct bufferevent	*bev;
	int			 fd;

	if ((fd = accept(lfd, NULL, NULL)) == -1)
		return;
	evutil_make_socket_nonblocking(fd);
	bev = bufferevent_socket_new(fuzz_base, fd, BEV_OPT_CLOSE_ON_FREE);
	fuzz_peers++;
	bufferevent_setcb(bev, fuzz_peer_read, fuzz_peer_written, fuzz_peer_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	if (fuzz_script_len > 0)
		bufferevent_write(bev, fuzz_script, fuzz_script_len);
	else
		fuzz_peer_written(bev, NULL);
}

static void
fuzz_rmdir(void)
{
	unlink(fuzz_sock);
	rmdir(fuzz_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_un	 sun;
	int			 fd;

	snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/luamta-fuzzmta.XXXXXX");
	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	snprintf(fuzz_sock, sizeof(fuzz_sock), "%s/s", fuzz_dir);
	atexit(fuzz_rmdir);
	fuzz_base = event_base_new();
	mta_init(fuzz_base);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fuzz_sock);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fd, 16) == -1)
		abort();
	evutil_make_socket_nonblocking(fd);
	fuzz_accept_ev = event_new(fuzz_base, fd, EV_READ | EV_PERSIST, fuzz_accept, NULL);
	event_add(fuzz_accept_ev, NULL);
	return 0;
}

/* fuzz_dsn_ok - "C.S.D": class C as given, subject and detail of 1 to 3 digits. */
static int
fuzz_dsn_ok(const char *dsn, char class)
{
	size_t	 i = 2, d;
	int	 part;

	if (dsn[0] != class || dsn[1] != '.')
		return 0;
	for (part = 0; part < 2; part++) {
		for (d = 0; dsn[i] >= '0' && dsn[i] <= '9'; d++, i++)
			;
		if (d < 1 || d > 3)
			return 0;
		if (part == 0 && dsn[i++] != '.')
			return 0;
	}
	return dsn[i] == '\0';
}

static void
fuzz_result(uint64_t cookie, const struct mta_result *res)
{
	size_t	 i;

	assert(!fuzz_done);
	fuzz_done = 1;
	assert(res->nrcpts == fuzz_nrcpts);
	assert(memchr(res->relay, '\0', sizeof(res->relay)) != NULL);
	assert(memchr(res->tls, '\0', sizeof(res->tls)) != NULL);
	for (i = 0; i < res->nrcpts; i++) {
		const struct mta_rcpt_result	*r = &res->rcpts[i];

		assert(memchr(r->dsn, '\0', sizeof(r->dsn)) != NULL);
		assert(memchr(r->text, '\0', sizeof(r->text)) != NULL);
		switch (r->status) {
		case MTA_SENT:		/* decided by the server's own 2xx, never by anything else */
			assert(fuzz_dsn_ok(r->dsn, '2'));
			assert(r->text[0] == '2');
			break;
		case MTA_BOUNCED:	/* a 5xx, or our own refusal (SMTPUTF8 not offered): 5.x.x */
			assert(fuzz_dsn_ok(r->dsn, '5'));
			break;
		case MTA_DEFERRED:
			assert(fuzz_dsn_ok(r->dsn, '4'));
			break;
		default:
			assert(0);
		}
	}
}

/* Input: one octet of settings (LMTP, number of recipients, 8-bit), then the next hop's octets. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const	 rcpts[] = { "a@remote.test", "b@remote.test", "c@remote.test" };
	static const char		 msg[] = "Subject: fuzz\r\n\r\nbody\r\n.leading dot\r\n";
	struct mta_request		 req;
	int				 i;

	if (size < 1 || size > 65536)
		return 0;
	memset(&req, 0, sizeof(req));
	req.queue_id = "FUZZ";
	req.helo = "client.test";
	req.sender = data[0] & 8 ? "" : "s@client.test";
	req.rcpts = rcpts;
	req.nrcpts = fuzz_nrcpts = 1 + (data[0] >> 1 & 3) % 3;
	req.data = msg;
	req.len = sizeof(msg) - 1;
	req.body_8bit = data[0] >> 4 & 1;
	req.smtputf8 = data[0] >> 5 & 1;
	req.lmtp = data[0] & 1;
	req.tls = MTA_TLS_NONE;
	req.connect_timeout = 2;
	req.reply_timeout = 2;
	snprintf(req.addrs[0].path, sizeof(req.addrs[0].path), "%s", fuzz_sock);
	snprintf(req.addrs[0].host, sizeof(req.addrs[0].host), "fuzz.test");
	req.naddrs = 1;
	fuzz_script = data + 1;
	fuzz_script_len = size - 1;
	fuzz_done = 0;

	mta_deliver(&req, fuzz_result, 1);
	while (!fuzz_done)
		event_base_loop(fuzz_base, EVLOOP_ONCE);
	/* Close what was kept for reuse, and let both sides finish closing. */
	mta_shutdown();
	for (i = 0; i < 1000 && (fuzz_peers > 0 || mta_active() > 0); i++)
		event_base_loop(fuzz_base, EVLOOP_ONCE);
	event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
	assert(mta_active() == 0);
	return 0;
}
