/*
 * scenario.h - `luamta test`: policy scenarios run through the real session code with DNS answered from each
 * scenario's fixtures (docs/rules.md, "Policy tests").
 */
#ifndef SCENARIO_H
#define SCENARIO_H

/* scenario_main - argv after "test"; prints TAP; 0 when every scenario passed, 1 when one failed, 2 on a usage
 * or configuration error. */
int	 scenario_main(const char *cfgpath, int argc, char **argv);

#endif
