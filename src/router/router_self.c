/*
 * router_self.c - is a next hop this server (docs/admin.md, "Delivery"): the machine's interface addresses and
 * server.listen's, for the rule that the router never connects to itself (router_priv.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/listener.h>

#include "lb.h"
#include "log.h"
#include "router_priv.h"
#include "util.h"

/* Our own addresses ------------------------------------------------------------------------------------------- */

/*
 * A next hop is this server when its address and port are one of server.listen's: the address itself, or for a
 * wildcard listener (0.0.0.0, [::]) any address of the machine's interfaces or of loopback (127.0.0.0/8, ::1),
 * and 0.0.0.0 or :: as a next hop, which connect() takes to mean this machine. The same address on another port
 * is someone else (a second MTA on 127.0.0.1, as the tests use). The interface addresses are read when the
 * router starts and at every reload; an address added in between is not known until then.
 */
struct router_ifaddr {
	int		 family;
	unsigned char	 addr[16];
};

static struct router_ifaddr	*router_ifaddrs;	/* owns router_nifaddrs */
static size_t			 router_nifaddrs;

/* router_self_load - read the interface addresses (getifaddrs is a netlink question, answered from memory). */
void
router_self_load(void)
{
	struct ifaddrs	*ifa, *p;
	size_t		 n = 0;

	free(router_ifaddrs);
	router_ifaddrs = NULL;
	router_nifaddrs = 0;
	if (getifaddrs(&ifa) == -1) {
		log_error("router: cannot read the interface addresses: %s; only server.listen and loopback count as "
		    "this server", strerror(errno));
		return;
	}
	for (p = ifa; p != NULL; p = p->ifa_next)
		if (p->ifa_addr != NULL && (p->ifa_addr->sa_family == AF_INET || p->ifa_addr->sa_family == AF_INET6))
			n++;
	router_ifaddrs = xcalloc(n ? n : 1, sizeof(*router_ifaddrs));
	for (p = ifa; p != NULL; p = p->ifa_next) {
		struct router_ifaddr	*a = &router_ifaddrs[router_nifaddrs];

		if (p->ifa_addr == NULL)
			continue;
		if (p->ifa_addr->sa_family == AF_INET) {
			a->family = AF_INET;
			memcpy(a->addr, &((struct sockaddr_in *)(void *)p->ifa_addr)->sin_addr, 4);
		} else if (p->ifa_addr->sa_family == AF_INET6) {
			a->family = AF_INET6;
			memcpy(a->addr, &((struct sockaddr_in6 *)(void *)p->ifa_addr)->sin6_addr, 16);
		} else
			continue;
		router_nifaddrs++;
	}
	freeifaddrs(ifa);
}

/* router_parse_ip - a numeric address; an IPv4-mapped IPv6 address is taken as the IPv4 one. Family, or 0. */
static int
router_parse_ip(const char *ip, unsigned char out[16])
{
	static const unsigned char	 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (inet_pton(AF_INET, ip, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, ip, out) != 1)
		return 0;
	if (memcmp(out, mapped, sizeof(mapped)) == 0) {
		memmove(out, out + 12, 4);
		return AF_INET;
	}
	return AF_INET6;
}

static int
router_ip_any(int family, const unsigned char *a)
{
	static const unsigned char	 zero[16];

	return memcmp(a, zero, family == AF_INET ? 4 : 16) == 0;
}

static int
router_ip_loopback(int family, const unsigned char *a)
{
	static const unsigned char	 one[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };

	return family == AF_INET ? a[0] == 127 : memcmp(a, one, 16) == 0;
}

/* router_is_self - is ip:port (a numeric next hop) one of our own listening addresses? */
int
router_is_self(const char *ip, int port)
{
	unsigned char	 a[16], la[16];
	int		 fam, lfam;
	size_t		 i, k, len;

	if ((fam = router_parse_ip(ip, a)) == 0)
		return 0;
	len = fam == AF_INET ? 4 : 16;
	for (i = 0; i < router_cfg->nlisten; i++) {
		const struct cfg_listen	*l = &router_cfg->listen[i];

		if (l->port != port || (lfam = router_parse_ip(l->host, la)) != fam)
			continue;
		if (memcmp(a, la, len) == 0)
			return 1;
		if (!router_ip_any(fam, la))
			continue;
		/* A wildcard listener takes connections to every local address. */
		if (router_ip_any(fam, a) || router_ip_loopback(fam, a))
			return 1;
		for (k = 0; k < router_nifaddrs; k++)
			if (router_ifaddrs[k].family == fam && memcmp(router_ifaddrs[k].addr, a, len) == 0)
				return 1;
	}
	/* 0.0.0.0 and :: as a destination reach this machine's loopback. */
	if (router_ip_any(fam, a)) {
		for (i = 0; i < router_cfg->nlisten; i++) {
			const struct cfg_listen	*l = &router_cfg->listen[i];

			if (l->port == port && (lfam = router_parse_ip(l->host, la)) == fam && router_ip_loopback(fam, la))
				return 1;
		}
	}
	return 0;
}

void
router_self_forget(void)
{
	free(router_ifaddrs);
	router_ifaddrs = NULL;
	router_nifaddrs = 0;
}
