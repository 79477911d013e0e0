/*
 * router_priv.h - what the files of the router process share (router.c: the process, load, route, record;
 * router_nexthop.c: SMTP and LMTP groups, next-hop DNS, connection slots, the body read for delivery;
 * router_self.c: is a next hop this server; router_sweep.c: the start-up sweep; router_control.c: the control
 * socket). Nothing outside the router includes it.
 */
#ifndef ROUTER_PRIV_H
#define ROUTER_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "lb_types.h"
#include "mta.h"
#include "queueid.h"
#include "spool.h"

struct event_base;
struct evconnlistener;
struct idmap;
struct iothread;

#define ROUTER_RESCAN		60	/* seconds between two looks at the whole queue */
#define ROUTER_HOLD_RECHECK	3600	/* a held recipient is routed again after this, or on flush/reload */
#define ROUTER_MX_MAX		8	/* MX hosts looked up per destination */
#define ROUTER_CTL_LINE		256

enum router_outcome {
	R_OPEN,		/* nothing decided yet in this attempt */
	R_LOCAL,	/* for the Maildir job */
	R_RELAY,	/* in an SMTP group */
	R_SENT,		/* delivered by SMTP in this attempt: to record */
	R_FAILED,	/* failed in this attempt: to bounce and record */
	R_DEFERRED,	/* to try again later */
	R_HOLD,		/* kept by the route rule until an administrator acts */
	R_DONE,		/* delivered, on record */
	R_BOUNCED,	/* failed, on record (and bounced) */
};

struct router_rcpt {
	enum router_outcome	 outcome;
	char			 mailbox[512];		/* R_LOCAL: the Maildir owner */
	char			 dsn[16];
	char			 text[MTA_TEXT_MAX + 1];	/* reply or reason */
	char			 relay[400];		/* "host[ip]:port", "local" or "none" */
	char			 remote[256];		/* next hop name for the bounce */
	char			 tls[160];		/* SMTP: what TLS the transaction used, or "none" */
};

struct router_msg;

/* One SMTP transaction: the recipients of one message that go to one next hop. */
struct router_group {
	uint64_t		 id;		/* for DNS answers and the mta callback */
	struct router_msg	*m;		/* borrowed: the message waits for all its groups */
	enum lb_relay_mode	 mode;
	char			 host[256];
	int			 port;
	char			 key[540];	/* the next hop, for routing.max_per_domain */
	size_t			*idx;		/* owns n recipient indexes */
	size_t			 n;
	/* DNS: MX hosts in order, then their addresses */
	char			 mx[ROUTER_MX_MAX][256];
	int			 mxpref[ROUTER_MX_MAX];	/* MX preference; 0 for a host used without MX */
	int			 mxfailed[ROUTER_MX_MAX];	/* its address lookup failed for now */
	size_t			 nmx;
	struct mta_addr		(*found)[4];	/* owns nmx rows: per MX host, A then AAAA answers (sized to
						 * the MX list: a waiting group is small) */
	size_t			 nfound[ROUTER_MX_MAX];
	int			 dns_pending;
	int			 dns_failed;	/* a lookup timed out or failed */
	char			 dns_error[320];	/* the first that did: "MX lookup of x.test: SERVFAIL" */
	int			 dns_nxdomain;	/* every address lookup said the name does not exist */
	struct router_group	*next_wait;	/* waiting for a connection slot */
	int			 ready;		/* DNS is done; the transaction ran or runs */
	int			 lmtp;		/* local recipients to delivery.lmtp: their mailboxes, over LMTP */
};

struct router_msg {
	char			 id[QUEUEID_SIZE];
	struct spool_msg	 q;		/* owns: the queue file (whole), its envelope and state */
	struct router_rcpt	*rcpts;		/* owns env.nrcpts */
	char			*maildir;	/* owns: delivery.maildir when the message was taken */
	char			*hostname;	/* owns: server.hostname, for bounces */
	char			*spool;		/* owns: server.spool (a reload may free the configuration) */
	double			 max_queue_time;
	int			 attempts;	/* attempts on record (state file) */
	int			 warned;	/* a delay warning went out */
	int			 want_warning;	/* this attempt sends one */
	int			 pending;	/* jobs and groups still running in this attempt */
	int			 err;
	char			 why[256];
	char			 bounce_id[QUEUEID_SIZE];	/* reports queued by this attempt, for the loop */
	char			 warning_id[QUEUEID_SIZE];
	struct router_group	**groups;	/* owns ngroups */
	size_t			 ngroups;
	int			 deleted;	/* `luamta queue delete` arrived while busy */
	int			 expired;	/* past routing.max_queue_time */
	double			 started;
	size_t			 route_i;	/* recipient index the route stage is looking at */
	double			 due_retry;	/* when the next attempt is if recipients are deferred */
	double			 due_hold;	/* ... if they are only held */
	int			 flush;		/* taken before its retry time (start, `luamta queue flush`) */
	double			 taken;		/* wall clock when it was taken */
	double			 due_cap;	/* a due time further ahead than this is a clock that went back */
	int			 not_due;	/* the load found a newer retry time: not tried now */
	int			 quarantined;	/* the load moved an unreadable file to corrupt/ */
	int			 quarantine_err;
	char			*unrecorded;	/* owns: state lines no append could write yet (router.c) */
};

/* router.c: the process's state (the loop's alone). */
extern struct event_base	*router_base;
extern const struct config	*router_cfg;
extern struct iothread		*router_io;	/* loads, control commands, the start-up sweep, the intake */
extern struct iothread		*router_body;	/* chunks of messages being sent */
extern struct idmap		*router_busy;	/* id hash -> message being worked on */
extern struct idmap		*router_groups;	/* group id -> group */
extern int			 router_stop;

uint64_t	 router_key(const char *);
int		 router_take(const char *id, int flush);	/* 1 if an attempt started */
size_t		 router_active(void);
void		 router_unschedule(const char *id);
void		 router_delete_files(const char *id);
/* router_msg_step_done - one job or group of this attempt finished; the last one records the outcomes. */
void		 router_msg_step_done(struct router_msg *);

/* router_nexthop.c */
void		 router_group_start(struct router_group *);	/* find the addresses, then deliver */
void		 router_group_finish(struct router_group *, enum router_outcome, const char *dsn, const char *text);
size_t		 router_body_len(const struct router_msg *);	/* octets of the message after the envelope */

/* router_self.c */
void		 router_self_load(void);	/* read the interface addresses (start, reload) */
int		 router_is_self(const char *ip, int port);
void		 router_self_forget(void);

/* router_sweep.c */
void		 router_sweep_start(void);

/* router_control.c */
struct evconnlistener *router_ctl_listen(void);

#endif
