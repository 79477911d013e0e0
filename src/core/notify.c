/*
 * notify.c - tells the service manager how the server is doing (docs/admin.md, "The systemd unit"). A message is
 * one datagram of newline-separated assignments to the socket named by $NOTIFY_SOCKET, a path or, when it
 * starts with '@', an abstract socket. With libsystemd (found by configure) sd_notify() sends it; without, the
 * same datagram is sent here. Sending never blocks and a failure is never fatal: the server works unmanaged.
 *	notify_send()	READY=1, RELOADING=1, STOPPING=1, STATUS=..., MAINPID=...
 *	notify_forget()	for children, which must not speak for the service
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"

#ifndef HAVE_LIBSYSTEMD
/* notify_datagram - what sd_notify(0, state) does: one datagram to $NOTIFY_SOCKET. */
static int
notify_datagram(const char *state)
{
	struct sockaddr_un	 sun;
	const char		*path = getenv("NOTIFY_SOCKET");
	socklen_t		 len;
	size_t			 n;
	int			 fd, rc;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return 0;
	n = strlen(path);
	if (n < 2 || n >= sizeof(sun.sun_path))
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, n);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';		/* abstract: the name is not NUL-terminated */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	rc = sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sun, len) == -1 ?
	    -1 : 0;
	close(fd);
	return rc;
}
#endif

int
notify_send(const char *fmt, ...)
{
	char	 state[1024];
	va_list	 ap;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return 0;
	va_start(ap, fmt);
	vsnprintf(state, sizeof(state), fmt, ap);
	va_end(ap);
#ifdef HAVE_LIBSYSTEMD
	return sd_notify(0, state) < 0 ? -1 : 0;
#else
	return notify_datagram(state);
#endif
}

void
notify_forget(void)
{
	unsetenv("NOTIFY_SOCKET");
}
