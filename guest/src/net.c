#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

static int set_flags_up(int s, const char *ifname)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void set_sin(struct sockaddr *sa, struct in_addr addr)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr = addr;
	memcpy(sa, &sin, sizeof(sin));
}

int net_up_loopback(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_err("socket: %s", strerror(errno));
		return -1;
	}
	int rc = set_flags_up(s, "lo");
	if (rc < 0)
		log_err("bring up lo: %s", strerror(errno));
	close(s);
	return rc;
}

static int parse_cidr(const char *cidr, struct in_addr *addr, struct in_addr *mask)
{
	char ip[64];
	unsigned prefix = 24;
	if (fmt(ip, sizeof(ip), "%s", cidr) < 0)
		return -1;
	char *slash = strchr(ip, '/');
	if (slash) {
		*slash = '\0';
		char *end;
		unsigned long p = strtoul(slash + 1, &end, 10);
		if (*end || end == slash + 1 || p > 32)
			return -1;
		prefix = (unsigned)p;
	}
	if (inet_pton(AF_INET, ip, addr) != 1)
		return -1;
	mask->s_addr = htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
	return 0;
}

int net_up_interface(const char *ifname, const char *cidr, const char *gw, unsigned wait_ms)
{
	struct in_addr addr, mask, gwaddr;
	if (parse_cidr(cidr, &addr, &mask) < 0) {
		log_err("bad boxlite.ip %s", cidr);
		return -1;
	}
	if (gw && *gw && inet_pton(AF_INET, gw, &gwaddr) != 1) {
		log_err("bad boxlite.gw %s", gw);
		return -1;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_err("socket: %s", strerror(errno));
		return -1;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);

	/* The NIC's driver was just loaded; give the device a moment to register. */
	uint64_t deadline = now_ms() + wait_ms;
	while (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		if (errno != ENODEV || now_ms() >= deadline) {
			log_err("%s: %s", ifname, strerror(errno));
			close(s);
			return -1;
		}
		sleep_ms(20);
	}

	int rc = -1;
	set_sin(&ifr.ifr_addr, addr);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
		log_err("set %s address: %s", ifname, strerror(errno));
		goto out;
	}
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
		log_err("set %s netmask: %s", ifname, strerror(errno));
		goto out;
	}
	if (set_flags_up(s, ifname) < 0) {
		log_err("bring up %s: %s", ifname, strerror(errno));
		goto out;
	}
	if (gw && *gw) {
		struct rtentry rt;
		struct in_addr any = { 0 };
		memset(&rt, 0, sizeof(rt));
		set_sin(&rt.rt_dst, any);
		set_sin(&rt.rt_genmask, any);
		set_sin(&rt.rt_gateway, gwaddr);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
			log_err("default route via %s: %s", gw, strerror(errno));
			goto out;
		}
	}
	rc = 0;
	log_info("%s %s gw %s", ifname, cidr, gw && *gw ? gw : "none");
out:
	close(s);
	return rc;
}
