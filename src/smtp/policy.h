/*
 * policy.h - turn a rule verdict into the SMTP reply a client sees, and log the verdict.
 */
#ifndef POLICY_H
#define POLICY_H

#include <stddef.h>

#include "lb.h"

#define POL_REPLY_MAX	512

enum pol_outcome {
	POL_PASS,		/* no rule objected: go on with the default reply */
	POL_DENY,		/* send the reply; the command failed */
	POL_CLOSE,		/* send the reply, then close the connection */
};

/*
 * pol_reply - the reply for verdict v at a stage. def is the reply when the command goes on. A reject carries
 * a 5xx code and a tempfail a 4xx code (lb_verdict_read() in lb.c makes any other verdict a rule error); a rule
 * error becomes 451 4.3.0. logid names the session or message in the log line.
 */
enum pol_outcome	 pol_reply(const char *logid, enum lb_stage, const struct lb_verdict *v, const char *def,
			    char *buf, size_t size);

#endif
