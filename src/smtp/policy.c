/*
 * policy.c - from verdict to reply. Every verdict other than "no opinion" is logged with the rule that gave it,
 * so that an administrator can tell which rule refused a client (SPEC section 8, logs).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "util.h"

enum pol_outcome
pol_reply(const char *logid, enum lb_stage st, const struct lb_verdict *v, const char *def, char *buf,
    size_t size)
{
	enum pol_outcome	 out;

	switch (v->kind) {
	case LB_V_NONE:
		util_strlcpy(buf, def, size);
		return POL_PASS;
	case LB_V_ACCEPT:
		util_strlcpy(buf, def, size);
		log_info("%s: stage=%s rule=%s verdict=accept", logid, lb_stage_name(st), v->rule);
		metrics_verdict(st, v->rule, MV_ACCEPT);
		return POL_PASS;
	case LB_V_REJECT:
	case LB_V_TEMPFAIL:
		snprintf(buf, size, "%d %s", v->code, v->text);
		out = POL_DENY;
		break;
	case LB_V_DISCONNECT:
		snprintf(buf, size, "%d %s", v->code, v->text);
		out = POL_CLOSE;
		break;
	case LB_V_ERROR:
		util_strlcpy(buf, "451 4.3.0 Error: policy rule failed, try again later", size);
		out = POL_DENY;
		break;
	default:	/* a router verdict at an SMTP stage */
		util_strlcpy(buf, "451 4.3.0 Error: policy rule returned a router verdict", size);
		log_error("%s: stage=%s rule=%s returned a router verdict", logid, lb_stage_name(st), v->rule);
		return POL_DENY;
	}
	metrics_verdict(st, v->rule, v->kind == LB_V_REJECT ? MV_REJECT : v->kind == LB_V_TEMPFAIL ? MV_TEMPFAIL :
	    v->kind == LB_V_DISCONNECT ? MV_DISCONNECT : MV_ERROR);
	log_info("%s: stage=%s rule=%s verdict=%s reply=\"%s\"", logid, lb_stage_name(st),
	    v->rule[0] ? v->rule : "?", v->kind == LB_V_REJECT ? "reject" : v->kind == LB_V_TEMPFAIL ?
	    "tempfail" : v->kind == LB_V_DISCONNECT ? "disconnect" : "error", buf);
	return out;
}
