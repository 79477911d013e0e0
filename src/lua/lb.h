/*
 * lb.h - the Lua bridge. A generation (struct lb_gen) is one Lua state built from the configuration file and the
 * rule modules; it is reference counted so that a reload builds a new one while sessions that started on the old
 * one finish there. Stages run as coroutines with an instruction budget; a rule that waits (mta.sleep, later DNS)
 * yields, and the run resumes from a libevent callback.
 */
#ifndef LB_H
#define LB_H

#include <stdint.h>

#include "cfg.h"

struct event_base;
struct lua_State;
struct lb_gen;
struct lb_run;

enum lb_stage {
	LB_S_CONNECT, LB_S_HELO, LB_S_AUTH, LB_S_MAIL, LB_S_RCPT, LB_S_DATA, LB_S_MESSAGE, LB_S_CLOSE,
	LB_S_ROUTE,
	LB_S_AUTH_ATTEMPT,	/* AUTH, before the password is checked: the rules may refuse the attempt */
	LB_S_AUTH_FAILED,	/* AUTH, after a wrong password: for counting (the verdict is not used) */
	LB_S_COUNT
};

enum lb_verdict_kind {
	LB_V_NONE,		/* no rule had an opinion */
	LB_V_ACCEPT,		/* mta.accept() */
	LB_V_REJECT,		/* mta.reject(5xx, text) */
	LB_V_TEMPFAIL,		/* mta.tempfail(4xx, text) */
	LB_V_DISCONNECT,	/* mta.disconnect(code, text): reply, then close */
	LB_V_ERROR,		/* the rule raised an error or ran out of budget: 451 4.3.0 */
	LB_V_LOCAL,		/* router: deliver to the Maildir of arg */
	LB_V_BOUNCE,		/* router: fail the recipient with code and text */
	LB_V_DEFER,		/* router: leave the recipient queued; text says why */
	LB_V_RELAY,		/* router: SMTP to host (mode says how to find its addresses) */
	LB_V_HOLD,		/* router: keep the recipient queued until an administrator acts */
};

enum lb_relay_mode {
	LB_RELAY_MX,		/* host is a mail domain: its MX records, else its A/AAAA (RFC 5321 5.1) */
	LB_RELAY_HOST,		/* host is a relay or smart host name: MX first, then A/AAAA (SPEC section 6) */
	LB_RELAY_IP,		/* host is an IP address: no DNS */
};

#define LB_TEXT_MAX	480	/* reply text after the code; longer texts are cut, never split */
#define LB_BUDGET	20000000	/* instructions per stage run: about a tenth of a second */
#define LB_BUDGET_TEXT	"20000000"	/* the same, for messages */

struct lb_verdict {
	enum lb_verdict_kind	 kind;
	int			 code;
	char			 text[LB_TEXT_MAX + 1];	/* no CR or LF */
	char			 rule[64];		/* the module that decided, "" for none */
	char			 arg[512];		/* LB_V_LOCAL: the mailbox address; LB_V_RELAY: the host */
	int			 port;			/* LB_V_RELAY */
	enum lb_relay_mode	 mode;			/* LB_V_RELAY */
};

/* lb_push_fn - push the stage's arguments on L (a coroutine); return how many were pushed. */
typedef int	 lb_push_fn(struct lua_State *L, void *arg);
/* lb_done_fn - an asynchronous run has finished; owner is the id given to lb_run_start(). */
typedef void	 lb_done_fn(uint64_t owner, const struct lb_verdict *);

/*
 * lb_gen_new - build a generation from the configuration file: load and check the configuration, load the rule
 * modules (names from server.rules, or the router's "routing" when role is LB_ROLE_ROUTER), freeze the globals.
 * Returns NULL with *errors set to a malloc'd text, one problem per line, file:line first. *warnings (may be
 * NULL) receives a malloc'd text of warnings or NULL.
 */
enum lb_role { LB_ROLE_CHECK, LB_ROLE_WORKER, LB_ROLE_ROUTER };
struct lb_gen	*lb_gen_new(const char *cfgpath, enum lb_role, char **errors, char **warnings);
/* lb_set_scenario - later generations lay this scenario file's `config` table over the configuration file
 * (luamta test; docs/rules.md, "Policy tests"). path is borrowed and must outlive them. */
void		 lb_set_scenario(const char *path);
void		 lb_gen_hold(struct lb_gen *);
void		 lb_gen_release(struct lb_gen *);	/* frees the state with the last reference */
const struct config *lb_gen_config(const struct lb_gen *);
struct lua_State *lb_gen_state(const struct lb_gen *);
int		 lb_gen_has_stage(const struct lb_gen *, enum lb_stage);
unsigned	 lb_gen_number(const struct lb_gen *);

/*
 * lb_run_start - run one stage through the rules. Returns 0 when the run finished at once (the verdict is in
 * *out and done is never called), or 1 when a rule is waiting: then done(owner, verdict) is called later from
 * the event loop, unless lb_run_cancel() is called first. *pending receives the run handle in that case.
 * The generation is held until the run ends.
 */
int		 lb_run_start(struct lb_gen *, struct event_base *, enum lb_stage, lb_push_fn *, void *arg,
		    uint64_t owner, lb_done_fn *done, struct lb_verdict *out, struct lb_run **pending);
void		 lb_run_cancel(struct lb_run *);

/*
 * Waiting from C functions called by rules (mta.sleep, mta.dns.*, and every later asynchronous call):
 * lb_run_prepare_wait() marks the run of the coroutine L as waiting and gives its id (0 when L cannot wait: not
 * a stage coroutine); the C function starts its operation and ends with `return lb_run_yield(L)`. The waker
 * finds the coroutine with lb_run_waiting(id) (NULL when the run is gone), pushes the results on it and calls
 * lb_run_wake(id, nresults). The waker may run before the C function returns (c-ares answers a name it refuses
 * inside ares_query()): then lb_run_yield() returns the results at once instead of yielding, so a running
 * coroutine is never resumed.
 */
uint64_t	 lb_run_prepare_wait(struct lua_State *L, int tag);
void		 lb_run_cancel_wait(struct lua_State *L);
int		 lb_run_yield(struct lua_State *L);
struct lua_State *lb_run_waiting(uint64_t id, int *tag);
void		 lb_run_wake(uint64_t id, int nargs);
/* lb_run_base - the event loop the run of coroutine L waits on (call outs start their I/O there); NULL when L is
 * not a stage coroutine or the run has no loop. */
struct event_base *lb_run_base(struct lua_State *L);

/*
 * lb_budget_charge - count n instructions' worth of work done in C (pattern matching) against the budget of the
 * running Lua code; raises the budget's error in L once it is spent. Nothing happens outside a budget.
 */
void		 lb_budget_charge(struct lua_State *L, long n);

/* lb_datadir - where lua/ and rules/ are: $LUAMTA_DATADIR, the source tree for an uninstalled build, or
 * $(pkgdatadir). */
const char	*lb_datadir(void);

/*
 * lb_directory_password - the directory user that name (an address or alias) belongs to: its primary address in
 * addr and its password hash in hash ("" when it has none). 0, or -1 when there is no such user.
 */
int		 lb_directory_password(struct lb_gen *, const char *name, char *addr, size_t addrsize, char *hash,
		    size_t hashsize);

/* lb_stage_name - "connect", "helo", ... */
const char	*lb_stage_name(enum lb_stage);
const char	*lb_verdict_name(enum lb_verdict_kind);	/* "accept", "reject", ... */
/* lb_run_owner_of - the owner id given to lb_run_start() for the run coroutine L belongs to, or 0. */
uint64_t	 lb_run_owner_of(struct lua_State *L);

#endif
