/*
 * dns.h - asynchronous DNS: a c-ares channel driven by the process's libevent loop (no threads, no blocking),
 * with a bounded cache that keeps answers for their TTL. One channel per process.
 */
#ifndef DNS_H
#define DNS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

enum dns_type { DNS_T_A, DNS_T_AAAA, DNS_T_MX, DNS_T_PTR, DNS_T_TXT, DNS_T_CNAME, DNS_T_COUNT };

enum dns_status {
	DNS_OK,			/* records in the result */
	DNS_NXDOMAIN,		/* the name does not exist */
	DNS_NODATA,		/* the name exists, without records of this type */
	DNS_TIMEOUT,		/* no answer in time (or no server reachable) */
	DNS_SERVFAIL,		/* the server failed, refused, or sent an answer we cannot read */
};

#define DNS_NAME_MAX	255
#define DNS_HOSTNAME_MAX	253	/* a host name as text, without the root's dot (RFC 1035 2.3.4: 255 on the wire) */
#define DNS_LABEL_MAX	63
#define DNS_RECORDS_MAX	64	/* records kept per answer; more are dropped */

struct dns_result {
	enum dns_status	 status;
	size_t		 n;
	char		*rec[DNS_RECORDS_MAX];	/* owns: addresses, names or TXT strings */
	int		 pref[DNS_RECORDS_MAX];	/* MX preference */
	unsigned	 ttl;
	const char	*error;		/* DNS_TIMEOUT, DNS_SERVFAIL: why, for a log line ("SERVFAIL", "REFUSED",
					 * "timeout", ...); a static string, else NULL */
};

/* dns_done_fn - the answer for cookie; res is borrowed for the call. */
typedef void	 dns_done_fn(uint64_t cookie, const struct dns_result *res);

/*
 * dns_init - set up the channel. servers is a comma-separated "ip", "ip:port" or "[ipv6]:port" list, or NULL for
 * /etc/resolv.conf. 0, or -1 with err.
 */
int		 dns_init(struct event_base *, const char *servers, double timeout, int tries, char *err,
		    size_t errsize);
void		 dns_shutdown(void);
/* dns_cached - a fresh cached answer, or NULL. The pointer is good until the next dns_* call. */
const struct dns_result *dns_cached(enum dns_type, const char *name);
/* dns_query - ask; done(cookie, res) runs later from the loop, exactly once. 0, or -1 when name is invalid. */
int		 dns_query(enum dns_type, const char *name, dns_done_fn *done, uint64_t cookie);
/*
 * dns_hostname_ok - 1 when name is a host name (RFC 1123 2.1: letters, digits and hyphens, no hyphen at either end
 * of a label, labels of 1 to 63 octets, at most 253 octets, one trailing dot allowed), else 0. A PTR answer is
 * only data until it passes: it may hold spaces, angle brackets, CR, LF, NUL or non-ASCII octets.
 */
int		 dns_hostname_ok(const char *name);
/* dns_reverse_name - "7.2.0.192.in-addr.arpa" or the ip6.arpa name for an address. 0 or -1. */
int		 dns_reverse_name(const char *ip, char *out, size_t size);
const char	*dns_status_name(enum dns_status);	/* "ok", "nxdomain", "nodata", "timeout", "servfail" */
const char	*dns_type_name(enum dns_type);
/*
 * dns_answer_scan - walk the answer section of a raw reply (bounded, fuzzable): the smallest TTL of its
 * records, and for CNAME the target names (given to names, at most max). Returns the number of answer records
 * read, or -1 when the packet is malformed.
 */
int		 dns_answer_scan(const unsigned char *abuf, int alen, int want_type, unsigned *min_ttl,
		    char **names, size_t max, size_t *nnames);
void		 dns_result_clear(struct dns_result *);
/*
 * dns_answer_fn - fill out (status, records as xstrdup'ed strings, MX preferences, ttl) for a question; the
 * name is lower case without the trailing dot. -1 means NXDOMAIN.
 */
typedef int	 dns_answer_fn(enum dns_type, const char *name, struct dns_result *out);
/* dns_set_answerer - from now on fn answers every question and nothing goes to the network (luamta test). */
void		 dns_set_answerer(dns_answer_fn *fn);

#endif
