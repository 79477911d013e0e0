/*
 * notify.h - the service manager's readiness protocol (sd_notify(3)): READY=1, RELOADING=1, STOPPING=1, STATUS=.
 */
#ifndef NOTIFY_H
#define NOTIFY_H

/* notify_send - send the newline-separated assignments; does nothing without $NOTIFY_SOCKET. 0, or -1 */
int	 notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* notify_forget - unset $NOTIFY_SOCKET (children: only the master talks to the service manager) */
void	 notify_forget(void);

#endif
