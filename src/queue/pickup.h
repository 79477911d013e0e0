/*
 * pickup.h - the pickup service: worker 1 queues what `luamta sendmail` left in the maildrop (docs/admin.md,
 * "sendmail and mailq").
 */
#ifndef PICKUP_H
#define PICKUP_H

#include <stddef.h>

struct config;
struct smtp_host;

/* pickup_start - create the maildrop when missing and take its files, now and every second. 0, or -1 with err. */
int	 pickup_start(struct smtp_host *, const struct config *, char *err, size_t errsize);
void	 pickup_stop(void);

#endif
