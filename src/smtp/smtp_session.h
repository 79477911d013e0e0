/*
 * smtp_session.h - one inbound SMTP connection: reads commands, asks the rules (policy via lb), streams DATA
 * into memory, commits to the spool, answers. The struct is visible to lb_session.c/lb_message.c, which show
 * it to Lua through id handles; nobody else touches its fields.
 */
#ifndef SMTP_SESSION_H
#define SMTP_SESSION_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lb.h"
#include "queueid.h"
#include "smtp_data.h"
#include "smtp_proto.h"

struct bufferevent;
struct event;
struct evbuffer;
struct cfg_listen;
struct tls_conn;
struct dkim_body;

#define SMTP_HELO_MAX		255
#define SMTP_HEADER_MAX		998	/* one added header line, RFC 5322 2.1.1 */

enum smtp_state {
	SMTP_S_CONNECT,		/* connect policy and greeting delay pending; no banner yet */
	SMTP_S_GREETED,		/* banner sent; want EHLO or HELO */
	SMTP_S_READY,		/* greeted, no transaction open */
	SMTP_S_RCPT,		/* MAIL accepted; taking RCPT */
	SMTP_S_BODY,		/* reading DATA lines */
	SMTP_S_BDAT,		/* reading BDAT chunks (between BDAT commands the state is SMTP_S_RCPT) */
	SMTP_S_REFUSED,		/* connect policy said no: only QUIT is served */
	SMTP_S_AUTH,		/* AUTH: reading the client's responses to 334 challenges */
	SMTP_S_CLOSING,		/* last reply queued; free once flushed */
	SMTP_S_COUNT
};

/* An added header: from s:tag() (whole session) or msg:add_header() (one message). */
struct smtp_header {
	char			*line;		/* owns: "Name: value" without CRLF */
	struct smtp_header	*next;
};

/* Per-message data: created at MAIL, freed at RSET, at the end of DATA or on error. */
struct smtp_tx {
	char			 queue_id[QUEUEID_SIZE];
	struct proto_addr	 sender;
	int			 body_8bit;
	int			 smtputf8;
	struct proto_addr	*rcpts;		/* owns nrcpts */
	size_t			 nrcpts, rcpt_cap;
	struct evbuffer		*data;		/* owns: the message as received, unstuffed */
	struct smtp_data_scan	 scan;
	struct smtp_hops	 hops;		/* Received: fields so far (server.max_hops) */
	unsigned long long	 size;		/* message octets received (counted even past the limit) */
	int			 too_big;	/* the data passed max_message_size: 552 at the end */
	int			 bdat_started;	/* the data stage ran for the first chunk */
	int			 bdat_failed;	/* a chunk failed: later chunks are swallowed and refused */
	struct smtp_header	*headers;	/* owns: added by msg:add_header, in order */
	char			 msgid[256];	/* the Message-ID field, for the log; "" if none */
	struct smtp_header	**headers_tail;
	double			 dot_time;	/* monotonic, when the final dot arrived */
	struct dkim_body	*dkim_bh;	/* owns: the DKIM body hash, fed as the data arrives; or NULL */
	struct smtp_header	*signatures;	/* owns: msg:dkim_sign fields, written above everything else */
};

struct smtp_session {
	uint64_t		 id;
	char			 idstr[17];		/* hex id for logs before a queue id exists */
	enum smtp_state		 state;
	int			 reply_stage;		/* enum metrics_stage of the replies being sent */
	struct bufferevent	*bev;			/* owns */
	const struct cfg_listen	*lsn;			/* borrowed; the listener's config lives as long as gen */
	struct lb_gen		*gen;			/* held: the policy this session started with */
	const struct config	*cfg;			/* borrowed from gen */
	struct sockaddr_storage	 peer;
	char			 ip[INET6_ADDRSTRLEN];
	int			 port;
	char			 helo[SMTP_HELO_MAX + 1];
	int			 esmtp;
	int			 tls;			/* 1 once the TLS handshake is over */
	char			 user[PROTO_ADDR_MAX + 1];	/* authenticated user, "" if none */
	char			 local_user[64];	/* the local user of a sendmail submission (pickup), or "" */
	const char		*auth_mech;		/* static: "PLAIN" or "LOGIN", the mechanism of the last AUTH */
	unsigned		 cmd_all[PROTO_V_COUNT];	/* commands seen, per verb, for the disconnect line */
	unsigned		 cmd_ok[PROTO_V_COUNT];	/* ... of which succeeded (2xx) */
	int			 cmd_cur;		/* verb + 1 whose final reply is still to come; 0: none */
	int			 errors;		/* 4xx/5xx replies so far */
	int			 waiting;		/* a policy run or spool commit is pending: reading paused */
	int			 discard_line;		/* skipping the rest of an over-long command line */
	int			 line_open;		/* the deadline of the command line being read runs */
	int			 junk;			/* HELO/EHLO/RSET/NOOP/VRFY/HELP since the last message */
	double			 data_start;		/* when DATA's 354 or the BDAT command came (monotonic) */
	unsigned long long	 data_octets;		/* octets read since data_start, for its deadline */
	int			 out_full;		/* reading paused: too many replies wait to be sent */
	struct smtp_tx		*tx;			/* owned; NULL outside a transaction */
	struct smtp_header	*tags;			/* owns: s:tag() headers, added to every message */
	struct smtp_header	**tags_tail;
	struct lb_run		*run;			/* borrowed: the policy run we wait for, or NULL */
	struct event		*timer;			/* owned: command/data timeout, greeting delay */
	int			 delaying;		/* the timer is the greeting delay */
	int			 connect_done;		/* connect policy has answered */
	int			 vars_ref;		/* Lua registry reference of s.vars, or LUA_NOREF */
	unsigned		 messages;		/* messages accepted in this session */
	unsigned long long	 connlimit_key;		/* for connlimit_release() */
	unsigned long long	 bdat_left;		/* octets of the current BDAT chunk still to read */
	int			 bdat_last;		/* the current chunk is BDAT ... LAST */
	int			 bdat_prev;		/* last octet of the previous chunk, for bare CR/LF */
	enum smtp_state		 bdat_resume;		/* state to go back to after a refused chunk */
	char			 bdat_error[512];	/* reply for the chunk being swallowed, "" if none */
	struct tls_conn		*tlsc;			/* borrowed: lives as long as bev; NULL without TLS */
	char			 tls_desc[128];		/* "TLSv1.2 <cipher>" once TLS is up */
	int			 auth_step;		/* SMTP_S_AUTH: what the next line is (see smtp_auth_line) */
	char			 auth_name[PROTO_ADDR_MAX + 1];	/* AUTH LOGIN: the user name given */
	struct event		*auth_delay;		/* owned: holds a failed AUTH's reply back (brute force) */
	double			 close_deadline;	/* CLOSING: free by then even if the client does not read */
	struct smtp_session	*prev, *next;		/* all sessions of this worker */
	struct smtp_host	*host;			/* borrowed */
};

/*
 * struct smtp_host - what sessions need from the process that runs them (worker.c, or simulate's embedding),
 * filled by that process and borrowed by every session: the session asks it, and never calls back into the
 * worker. gen and tls change when the process reloads; a session keeps the generation it started on.
 */
struct smtp_host {
	struct event_base	*base;
	struct lb_gen		*gen;		/* borrowed: the generation new sessions start on */
	struct iothread		*iot;		/* commits */
	struct iothread		*auth_iot;	/* password checks (crypt(3) is slow on purpose); NULL until the first
						 * AUTH, when smtp_auth.c makes it; the host frees it */
	struct tls_conf		*tls;		/* borrowed; NULL when TLS is not configured */
	void			(*queued)(const char *id);	/* a message is committed: tell the router */
	void			(*gone)(void);	/* a session or its last job ended (a stopping process may exit) */
	int			 dry_run;	/* luamta simulate: decide everything, queue nothing */
};

/* smtp_session_start - take a connected socket (fd) and serve it with host (borrowed for the session's life). */
void			 smtp_session_start(struct smtp_host *, int fd, struct sockaddr *sa, socklen_t salen,
			    const struct cfg_listen *);
/* smtp_host_gone - a job that outlived its session ended: tell the host (smtp_auth.c, smtp_session.c). */
void			 smtp_host_gone(void);
/* smtp_session_find - the live session with this id, or NULL (it left while we waited). */
struct smtp_session	*smtp_session_find(uint64_t id);
/* smtp_session_shutdown - stop: idle sessions get 421 and close now, busy ones after their transaction. */
void			 smtp_session_shutdown(void);
void			 smtp_session_close_all(void);	/* the deadline passed: close everything */
size_t			 smtp_session_count(void);
const char		*smtp_state_name(enum smtp_state);
int			 smtp_session_set_user(uint64_t id, const char *user);
int			 smtp_session_set_tls(uint64_t id, const char *desc);	/* as if STARTTLS had succeeded */
int			 smtp_session_set_local_user(uint64_t id, const char *user);	/* pickup: s.local_user */
uint64_t		 smtp_session_last_id(void);

#endif
