/*
 * proctitle.h - process titles shown by ps(1): "luamta: master", "luamta: worker 1", "luamta: router".
 */
#ifndef PROCTITLE_H
#define PROCTITLE_H

/* proctitle_init - call first in main(): moves argv and environ to the heap and returns the copy of argv, so
 * that the original area can be overwritten; every later use of argv must go through the copy. */
char	**proctitle_init(int argc, char **argv);
/* proctitle_set - the title, also as the thread name (comm, truncated to 15 octets by the kernel) */
void	 proctitle_set(const char *title);

#endif
