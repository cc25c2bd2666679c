/* PID-1 boot duties in the VM: early mounts, kernel modules, the kernel
 * command line, leaving the initramfs, the root disk, power-off. */
#ifndef BOXLITE_BOOT_H
#define BOXLITE_BOOT_H

#include "exec.h"

#define BOOT_MAX_VOLUMES 16

/* One boxlite.vol=<n>:<ro|rw>:<guest path, %XX-escaped>: the 9p share with
 * mount tag boxlite-v<n>, mounted in the container at path. */
struct boot_volume {
	char tag[24];
	char path[256];
	int readonly;
};

struct boot_config {
	char root[128]; /* boxlite.root, default /dev/vda */
	char ip[64];    /* boxlite.ip (CIDR); empty: no network besides lo */
	char gw[64];    /* boxlite.gw */
	char dns[64];   /* boxlite.dns */
	char host[64];  /* boxlite.host: the address of host.boxlite.internal */
	int debug;      /* boxlite.debug */
	int main;       /* boxlite.main: the container's init is the main process (EXEC flag MAIN) */
	int trust;      /* boxlite.trust: the container waits for the host's TRUST (the box's CA) */
	struct boot_volume vols[BOOT_MAX_VOLUMES];
	int nvols;
	int have_caps;           /* boxlite.caps given */
	unsigned long long caps; /* boxlite.caps=<hex>: bit n keeps capability n */
	struct exec_limit limits[EXEC_MAX_LIMITS]; /* boxlite.rlimit=<nofile|fsize|nproc|as|cpu>:<n> */
	int nlimits;
	/* Fast start (docs/fast-start.md): boxlite.template on the template VM's
	 * command line stops the boot before the root disk; the rest of the
	 * config arrives in RESUME after each restore, with these words. */
	int template_boot;        /* boxlite.template */
	unsigned long long time_ns; /* boxlite.time=<ns since the epoch>: the host's clock */
	char seed[260];           /* boxlite.seed=<hex>: host entropy for the guest's RNG */
};

/* /proc, /sys, /dev (devtmpfs); makes sure fds 0-2 are open. */
void boot_early_mounts(void);
/* finit_module() for every file in dir, in lexical order. */
void boot_load_modules(const char *dir);
void boot_parse_cmdline(struct boot_config *bc);
/* The same words from a writable line (RESUME's payload); resets bc first. */
void boot_parse_words(struct boot_config *bc, char *line);
/* After a restore from a template: the host's clock, then its entropy mixed
 * into the RNG and the CRNG reseeded, so no two restores share a stream. */
void boot_reset_identity(const struct boot_config *bc);
/* Drops the block device's cached blocks (BLKFLSBUF). */
void boot_forget_disk(const char *dev);
/* Moves / from the initramfs (rootfs, which pivot_root refuses) onto a
 * tmpfs, carrying /proc, /sys and /dev along; then mounts /run. */
int boot_leave_initramfs(void);

/* The toolbox directory of the initramfs (/lib/boxlite/tools), opened before
 * boot_leave_initramfs() hides it; -1 when missing. */
int boot_open_tools(void);
/* Waits up to wait_ms for dev, then mounts it (ext4) on target and grows the
 * file system online to fill the device (EXT4_IOC_RESIZE_FS). */
int boot_mount_root(const char *dev, const char *target, unsigned wait_ms);
int boot_sync_root(const char *dev, const char *target);
/* sync, unmount target (lazily if busy), power off; never returns. */
void boot_poweroff(const char *target) __attribute__((noreturn));

#endif
