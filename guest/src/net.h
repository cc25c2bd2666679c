/* Static network setup for the VM (no DHCP): lo, and eth0 when the kernel
 * command line carries boxlite.ip. */
#ifndef BOXLITE_NET_H
#define BOXLITE_NET_H

/* Brings lo up. Returns 0 or -1 (logged). */
int net_up_loopback(void);
/* Configures ifname with cidr ("192.168.127.2/24") and a default route via gw
 * (NULL or "" for none). Waits up to wait_ms for the interface to exist. */
int net_up_interface(const char *ifname, const char *cidr, const char *gw, unsigned wait_ms);

#endif
