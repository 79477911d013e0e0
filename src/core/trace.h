/*
 * trace.h - the trace records `luamta explain` reads (docs/investigating.md). Every session and
 * every message leaves a compact record of what happened to it: connect facts, commands and replies, every rule
 * verdict and what the rule logged, every DNS answer a rule used, tags, the queue IDs it produced, and each
 * delivery attempt. trace.c owns the format: it is the only writer and the only reader.
 *
 * Writing costs the loop a formatted append to a memory buffer; the buffer goes to disk from an I/O thread of
 * the trace's own, once a second, never fsynced (a trace is an aid, not a promise: a crash loses the last
 * second). Files are hourly per process, kept trace.keep_days and within trace.max_mb.
 */
#ifndef TRACE_H
#define TRACE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

enum trace_event {
	TR_CONNECT,	/* ip= port= listener= */
	TR_TLS,		/* the protocol and cipher */
	TR_AUTH,	/* user=, or "failed user=" */
	TR_CMD,		/* a command line as received (AUTH arguments masked) */
	TR_REPLY,	/* the last line of a reply */
	TR_VERDICT,	/* stage= rule= verdict= reply= */
	TR_RULE,	/* what a rule logged with s:log() */
	TR_DNS,		/* type= name= result= ttl= cached=0|1 records= */
	TR_TAG,		/* a header line a rule added */
	TR_QUEUED,	/* qid= from=<> size= nrcpt= */
	TR_CLOSE,	/* messages= errors= */
	TR_ATTEMPT,	/* a message's delivery attempt: to=<> relay= delay= dsn= status= reply= */
	TR_REMOVED,	/* the message left the queue */
	TR_COUNT
};

/* One record line as read back. */
struct trace_rec {
	double			 time;		/* wall clock */
	char			 kind;		/* 'S' session, 'M' message */
	char			 id[24];	/* session ID (16 hex digits) or queue ID */
	enum trace_event	 ev;
	char			*text;		/* owns */
	char			 source[48];	/* the writer: "worker 1[4242]", "router[4243]", ... */
};

/*
 * trace_open - write this process's records under dir (created when missing) as role ("worker 1", "router").
 * sessions: 0 when the process has no SMTP sessions (the router), so that session events are not written.
 * 0, or -1 with err.
 */
int		 trace_open(struct event_base *, const char *dir, int keep_days, long max_mb, const char *role,
		    int sessions, char *err, size_t errsize);
/* trace_memory - keep records in memory instead (luamta simulate), for trace_take(). */
void		 trace_memory(void);
/* trace_close - write what is buffered (blocking: at exit only). */
void		 trace_close(void);
/* trace_session - an event of session sid; trace_message - an event of queue ID qid. printf-like text. */
void		 trace_session(uint64_t sid, enum trace_event, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
void		 trace_message(const char *qid, enum trace_event, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));

/*
 * trace_find - every record under dir that belongs to id: a session ID finds the session's records and those of
 * the messages it queued; a queue ID finds the message's records and those of the session that queued it.
 * *out is sorted by time; free it with trace_free(). 0 (*n may be 0: unknown or expired), or -1 with err.
 */
int		 trace_find(const char *dir, const char *id, struct trace_rec **out, size_t *n, char *err,
		    size_t errsize);
/* trace_take - the records kept by trace_memory(), sorted; the caller frees them with trace_free(). */
void		 trace_take(struct trace_rec **out, size_t *n);
void		 trace_free(struct trace_rec *, size_t n);
const char	*trace_event_name(enum trace_event);
/* trace_field - the value of "key=" in a record's text, up to the next space, copied into buf; NULL when absent.
 * trace_rest - everything after "key=" (the free text that ends a record: reply=, records=); NULL when absent. */
const char	*trace_field(const char *text, const char *key, char *buf, size_t size);
const char	*trace_rest(const char *text, const char *key);

#endif
