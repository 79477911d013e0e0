/*
 * simulate.h - `luamta simulate`: one SMTP transaction through the real session code and the configured
 * policy and DNS, over a socketpair, queueing nothing.
 */
#ifndef SIMULATE_H
#define SIMULATE_H

/* simulate_main - argv after "simulate"; returns 0 (accepted for every recipient), 1 (something refused or
 * deferred) or 2 (usage or configuration error). */
int	 simulate_main(const char *cfgpath, int argc, char **argv);

#endif
