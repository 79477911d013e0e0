/*
 * queuectl.h - `luamta queue`: list and show read the spool directly; flush, delete, hold and release ask the
 * running router through <spool>/control.sock.
 */
#ifndef QUEUECTL_H
#define QUEUECTL_H

struct config;

/* queuectl_main - argv after "queue" (with -c FILE still in it); returns the exit status. */
int	 queuectl_main(const struct config *, int argc, char **argv);

#endif
