/*
 * spool.h - the spool on disk: its directories, the queue files and state files in them, and every change to
 * them. A message is written to <spool>/tmp/<id>, fsynced, renamed into <spool>/incoming/<id>, and that
 * directory is fsynced, all on an I/O thread; only then does the caller hear about it (and only then may it
 * answer 250). The router admits a message from incoming/ into queue/ when it takes it (as Postfix's qmgr moves
 * incoming to active), so incoming/ holds only what the router has not seen yet and a drain of it never reads
 * the whole queue. No other code names, reads, writes, renames or removes spool files; the text of the files
 * (envelope and state lines) is queue_file.h's.
 *
 *	<spool>/tmp/		messages being written; swept at start (they never got their 250)
 *	<spool>/incoming/	committed messages the router has not taken yet
 *	<spool>/queue/X/	messages the router has taken (being delivered, or deferred); a file's mtime is
 *				the time of its next attempt (as Postfix's deferred queue), arrival before its first.
 *				X is the last hex digit of the ID (Postfix's hash_queue_depth 1): no directory holds
 *				more than a sixteenth of a large queue; spool_prepare() moves an older flat queue in
 *	<spool>/hold/		messages an administrator held (luamta queue hold)
 *	<spool>/state/X/	one state file per message with recorded outcomes, hashed as queue/
 *	<spool>/corrupt/	files the router could not read, kept for a person to look at
 */
#ifndef SPOOL_H
#define SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue_file.h"
#include "queueid.h"

struct evbuffer;
struct iothread;

#define SPOOL_PATH_MAX		4400
#define SPOOL_FILE_MAX		(1024ULL * 1024 * 1024)	/* a larger queue file is refused (EFBIG) */

enum spool_dir {
	SPOOL_D_TMP,
	SPOOL_D_INCOMING,
	SPOOL_D_QUEUE,
	SPOOL_D_HOLD,
	SPOOL_D_STATE,
	SPOOL_D_CORRUPT,
	SPOOL_NDIRS
};

/* spool_dirs - the names of the directories above, in enum order (for chown at start). */
extern const char *const spool_dirs[SPOOL_NDIRS];

/* spool_dir_path - <spool>/<dir> into buf. */
void		 spool_dir_path(const char *spool, enum spool_dir, char *buf, size_t size);
/* spool_path - the file of message id in dir into buf. */
void		 spool_path(const char *spool, enum spool_dir, const char *id, char *buf, size_t size);

/* spool_done_fn - the commit finished: err is 0 (on disk, 250 may be sent) or an errno value. */
typedef void	 spool_done_fn(uint64_t owner, const char *id, int err);

/* spool_mkdirs - create every spool directory that is missing. 0, or -1 with err. */
int		 spool_mkdirs(const char *spool, char *err, size_t errsize);
/* spool_chown - hand the spool and every directory in it (the hashed ones too) to uid:gid. 0, or -1 with err. */
int		 spool_chown(const char *spool, uid_t uid, gid_t gid, char *err, size_t errsize);
/* spool_prepare - create every spool directory and remove what a crash left in tmp/. Startup only. */
int		 spool_prepare(const char *spool, char *err, size_t errsize);

/* spool_head_add - append the envelope of env to head. 0, or -1 with err (a field cannot be stored). */
int		 spool_head_add(struct evbuffer *head, const struct qf_env *env, char *err, size_t errsize);

/*
 * spool_commit - write head then body as queue file id. Takes head and body (frees them). spool is borrowed
 * and must outlive the commit. done(owner, id, err) runs on the loop.
 */
void		 spool_commit(struct iothread *, const char *spool, const char *id, struct evbuffer *head,
		    struct evbuffer *body, spool_done_fn *done, uint64_t owner);

/*
 * spool_write_message - the same as a commit, done on the calling thread (never the loop): envelope env and
 * body (emptied) become queue file env->id, durable when it returns 0 (else an errno value, nothing left).
 */
int		 spool_write_message(const char *spool, const struct qf_env *env, struct evbuffer *body);

/* spool_reply_for - the SMTP reply for a failed commit: 452 4.3.1 for a full disk, 552 5.3.4 for a file over the
 * size limit (EFBIG, as Postfix's queue_file_size_limit), 451 4.3.0 otherwise. */
const char	*spool_reply_for(int err);

/* A message read back: its envelope, its state lines and (some of) its file. */
struct spool_msg {
	struct qf_env		 env;
	struct qf_state		 state;
	char			*data;		/* owns: the file or its first octets (spool_load's max), NUL-terminated */
	size_t			 len;
	unsigned long long	 file_size;
	int			 held;		/* found in hold/ */
};

enum spool_where { SPOOL_W_NONE, SPOOL_W_QUEUE, SPOOL_W_INCOMING, SPOOL_W_HOLD };

/*
 * spool_load - read message id from queue/ or incoming/ (or hold/ as well when any) with its state lines, and at
 * most max octets of the file (0: all of it; SPOOL_LOAD_ENVELOPE: only as much as an envelope may take;
 * SPOOL_LOAD_HEAD: the envelope and the first SPOOL_HEAD_MAX octets of the message, enough for the header a
 * bounce quotes). Blocking: an I/O thread or a command. 0, or an errno value: ENOENT (gone), EINVAL (not a
 * queue file; why says what is wrong), EFBIG, or a read error.
 */
#define SPOOL_HEAD_MAX		65536
#define SPOOL_LOAD_ENVELOPE	QF_ENV_MAX
#define SPOOL_LOAD_HEAD		(QF_ENV_MAX + SPOOL_HEAD_MAX)
int		 spool_load(const char *spool, const char *id, int any, size_t max, struct spool_msg *, char *why,
		    size_t whysize);
/*
 * spool_read_body - up to size octets of message id (in queue/) from offset off of its message (the octets after
 * the envelope, which starts at body_offset) into buf; *got is 0 at the end. Blocking, for an I/O thread: a
 * message is delivered a chunk at a time, never held whole. 0 or an errno value.
 */
int		 spool_read_body(const char *spool, const char *id, size_t body_offset, unsigned long long off,
		    char *buf, size_t size, size_t *got);
void		 spool_msg_free(struct spool_msg *);

/*
 * spool_state_append - append len octets of state lines to id's state file and fsync it. 0 or errno; on an
 * error the file is truncated back to its size before the append (nothing of it is left).
 */
int		 spool_state_append(const char *spool, const char *id, const char *buf, size_t len);

/* The changes below are blocking file operations for an I/O thread. Each returns 0 or an errno value. */
enum spool_where spool_where(const char *spool, const char *id);
int		 spool_finish(const char *spool, const char *id);	/* done: queue file, then state file */
int		 spool_delete(const char *spool, const char *id);	/* from queue/ or hold/, and its state */
int		 spool_hold(const char *spool, const char *id);		/* queue/ -> hold/ */
int		 spool_release(const char *spool, const char *id);	/* hold/ -> incoming/ */
/* spool_admit - the router takes id: incoming/ -> queue/. 0, or ENOENT when it is not in incoming/. No
 * directory sync: a crash leaves the file in one of the two, and the router takes it from either. */
int		 spool_admit(const char *spool, const char *id);
/* spool_set_due - record when id's next attempt is (the queue file's mtime). */
int		 spool_set_due(const char *spool, const char *id, double when);
/* spool_due - when id's next attempt is (the mtime of its file in queue/); -1 when it is not in queue/. */
double		 spool_due(const char *spool, const char *id);
/* spool_quarantine - id's queue file (and state file, as <id>.state) move to corrupt/. */
int		 spool_quarantine(const char *spool, const char *id);

/*
 * A walk through one spool directory, for an I/O thread or a command: one open directory, never a listing.
 * spool_walk_next gives the next queue ID (other names are skipped) and the file's mtime; 1, or 0 at the end.
 */
struct spool_walk;
struct spool_walk *spool_walk_open(const char *spool, enum spool_dir);	/* NULL when it cannot be read */
int		 spool_walk_next(struct spool_walk *, char id[QUEUEID_SIZE], double *mtime);
void		 spool_walk_close(struct spool_walk *);
/* spool_count_queued - messages in incoming/ and queue/ (names only, no stat). Blocking. */
long		 spool_count_queued(const char *spool);
/* spool_state_sweep - remove id's state file if it has no queue file in queue/ or hold/ (it finished); 1 if so. */
int		 spool_state_sweep(const char *spool, const char *id);

#endif
