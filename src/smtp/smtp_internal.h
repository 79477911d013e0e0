/*
 * smtp_internal.h - what the files of the inbound SMTP session share among themselves (smtp_session.c, the state
 * machine; smtp_auth.c, AUTH). Nothing outside src/smtp_*.c includes it.
 */
#ifndef SMTP_INTERNAL_H
#define SMTP_INTERNAL_H

#include "lb.h"
#include "policy.h"
#include "smtp_session.h"

/* Pending policy runs. The stage and what to do with the verdict are kept in the session while we wait. */
enum smtp_after {
	SMTP_AFTER_CONNECT, SMTP_AFTER_HELO, SMTP_AFTER_MAIL, SMTP_AFTER_RCPT, SMTP_AFTER_DATA,
	SMTP_AFTER_BDAT, SMTP_AFTER_MESSAGE, SMTP_AFTER_AUTH
};

struct smtp_wait {
	enum smtp_after		 after;
	enum lb_stage		 stage;
	struct proto_addr	 addr;		/* MAIL/RCPT: the address being decided */
	char			 helo[SMTP_HELO_MAX + 1];
	int			 esmtp;
	char			 def[POL_REPLY_MAX];	/* the reply when the rules pass */
};

/* How log lines name the client: Postfix's NAME[IP], with NAME "unknown" until a host name is verified. */
#define SMTP_CLIENT_FMT		"unknown[%s]"
#define SMTP_CLIENT(s)		(s)->ip

void		 smtp_enter_state(struct smtp_session *, enum smtp_state);	/* the only writer of s->state */
/* smtp_log_reject - Postfix's "NOQUEUE: reject: STAGE from NAME[IP]: reply; from=<> to=<> proto= helo=<>". */
void		 smtp_log_reject(struct smtp_session *, const char *stage, const char *reply, const char *rcpt);
void		 smtp_timer_arm(struct smtp_session *, double seconds);
void		 smtp_send(struct smtp_session *, const char *line);		/* a reply line, not counted */
/* smtp_reply - send a reply, counting 4xx/5xx towards max_errors; 0, or -1 when the session closed. */
int		 smtp_reply(struct smtp_session *, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct smtp_wait *smtp_wait_new(enum smtp_after, enum lb_stage, const char *def);
/* smtp_ask - run a stage; takes w. The verdict is acted on at once, or when the waiting rule answers. */
void		 smtp_ask(struct smtp_session *, struct smtp_wait *w);
void		 smtp_process(struct smtp_session *);	/* handle buffered input until we must wait */
void		 smtp_close(struct smtp_session *);	/* last reply queued: close once it is out */
int		 smtp_starttls_offered(const struct smtp_session *);

/* smtp_auth.c */
void		 smtp_cmd_auth(struct smtp_session *, const char *arg);
void		 smtp_auth_line(struct smtp_session *, const char *line);	/* a response to a 334 challenge */

#endif
