/*
 * explain.h - `luamta explain`: the story of a session or message from its trace records (docs/admin.md,
 * "Investigating mail"), and the renderer simulate shares.
 */
#ifndef EXPLAIN_H
#define EXPLAIN_H

#include <stddef.h>
#include <stdio.h>

struct trace_rec;

/* explain_main - argv after "explain"; 0 when the ID was found, 1 when it was not, 2 on a usage error. */
int	 explain_main(const char *cfgpath, int argc, char **argv);
/* explain_render - recs (sorted by time) as a story per session and message, or as JSON. */
void	 explain_render(FILE *, const struct trace_rec *recs, size_t n, int json);

#endif
