#include "boot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

#define NEWROOT "/boxlite-root"

static void mount_or_log(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mkdir(dst, 0755) < 0 && errno != EEXIST)
		log_err("mkdir %s: %s", dst, strerror(errno));
	if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY)
		log_err("mount %s on %s: %s", type, dst, strerror(errno));
}

void boot_early_mounts(void)
{
	mount_or_log("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_log("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_log("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	/* Without /dev/console in the initramfs the kernel leaves 0-2 closed;
	 * make sure later opens never land there. */
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int c = open("/dev/console", O_RDWR | O_NOCTTY);
		if (c < 0)
			c = open("/dev/null", O_RDWR);
		if (c >= 0 && c != fd) {
			dup2(c, fd);
			close(c);
		}
	}
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void boot_load_modules(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			log_err("open %s: %s", dir, strerror(errno));
		return;
	}
	char *names[256];
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < sizeof(names) / sizeof(names[0])) {
		if (e->d_name[0] == '.')
			continue;
		names[n] = strdup(e->d_name);
		if (names[n])
			n++;
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_names);

	unsigned loaded = 0;
	for (size_t i = 0; i < n; i++) {
		char path[512];
		if (fmt(path, sizeof(path), "%s/%s", dir, names[i]) < 0) {
			free(names[i]);
			continue;
		}
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			log_err("module %s: %s", path, strerror(errno));
		} else if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
			log_err("module %s: %s", names[i], strerror(errno));
		} else {
			loaded++;
		}
		if (fd >= 0)
			close(fd);
		/* Loaded (or not loadable): the file is dead weight in the
		 * initramfs's RAM for the box's whole life, and in every
		 * template's saved state (each restore reads it back). */
		unlink(path);
		free(names[i]);
	}
	log_info("loaded %u of %zu kernel modules", loaded, n);
}

static void set_value(char *dst, size_t cap, const char *val)
{
	if (fmt(dst, cap, "%s", val) < 0) {
		log_err("kernel command line value too long: %s", val);
		dst[0] = '\0';
	}
}

/* The C library has no kernel headers here: the ioctl numbers of
 * <linux/fs.h> and <linux/random.h>. */
#ifndef BLKFLSBUF
#define BLKFLSBUF _IO(0x12, 97)
#endif
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* boxlite.vol=<n>:<ro|rw>:<path>; the path is %XX-escaped by the host. */
static void parse_volume(struct boot_config *bc, const char *val)
{
	if (bc->nvols >= BOOT_MAX_VOLUMES) {
		log_err("too many volumes; ignoring boxlite.vol=%s", val);
		return;
	}
	struct boot_volume *v = &bc->vols[bc->nvols];
	char *end = NULL;
	unsigned long n = strtoul(val, &end, 10);
	if (end == val || *end != ':' || n > 999 || (strncmp(end + 1, "ro:", 3) != 0 && strncmp(end + 1, "rw:", 3) != 0)) {
		log_err("bad boxlite.vol=%s", val);
		return;
	}
	v->readonly = end[2] == 'o';
	const char *src = end + 4;
	size_t o = 0;
	for (; *src; src++) {
		int c = (unsigned char)*src;
		if (c == '%') {
			int hi = hexval(src[1]), lo = hi < 0 ? -1 : hexval(src[2]);
			if (lo < 0) {
				log_err("bad escape in boxlite.vol=%s", val);
				return;
			}
			c = hi * 16 + lo;
			src += 2;
		}
		if (c == 0 || o + 1 >= sizeof(v->path)) {
			log_err("bad path in boxlite.vol=%s", val);
			return;
		}
		v->path[o++] = (char)c;
	}
	v->path[o] = '\0';
	if (v->path[0] != '/') {
		log_err("volume path must be absolute: boxlite.vol=%s", val);
		return;
	}
	snprintf(v->tag, sizeof(v->tag), "boxlite-v%lu", n);
	bc->nvols++;
}

/* boxlite.caps=<hex mask>, computed by the host from the box's capability policy. */
static void parse_caps(struct boot_config *bc, const char *val)
{
	char *end = NULL;
	errno = 0;
	unsigned long long mask = strtoull(val, &end, 16);
	if (end == val || *end || errno) {
		log_err("bad boxlite.caps=%s; keeping the default capabilities", val);
		return;
	}
	bc->caps = mask;
	bc->have_caps = 1;
}

/* boxlite.rlimit=<name>:<value>; a repeated name replaces the earlier value. */
static void parse_limit(struct boot_config *bc, const char *val)
{
	static const struct {
		const char *name;
		int resource;
	} names[] = {
		{ "nofile", RLIMIT_NOFILE }, { "fsize", RLIMIT_FSIZE }, { "nproc", RLIMIT_NPROC },
		{ "as", RLIMIT_AS },         { "cpu", RLIMIT_CPU },
	};
	const char *colon = strchr(val, ':');
	int resource = -1;
	for (size_t i = 0; colon && i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i].name) == (size_t)(colon - val) && strncmp(val, names[i].name, (size_t)(colon - val)) == 0)
			resource = names[i].resource;
	char *end = NULL;
	errno = 0;
	unsigned long long v = colon ? strtoull(colon + 1, &end, 10) : 0;
	if (resource < 0 || end == colon + 1 || *end || errno || colon[1] == '-') {
		log_err("bad boxlite.rlimit=%s", val);
		return;
	}
	int i = 0;
	while (i < bc->nlimits && bc->limits[i].resource != resource)
		i++;
	if (i == EXEC_MAX_LIMITS)
		return;
	bc->limits[i].resource = resource;
	bc->limits[i].value = v;
	if (i == bc->nlimits)
		bc->nlimits++;
}

void boot_parse_cmdline(struct boot_config *bc)
{
	char line[4096];
	if (read_small_file("/proc/cmdline", line, sizeof(line)) < 0) {
		memset(bc, 0, sizeof(*bc));
		snprintf(bc->root, sizeof(bc->root), "/dev/vda");
		log_err("read /proc/cmdline: %s", strerror(errno));
		return;
	}
	boot_parse_words(bc, line);
}

void boot_parse_words(struct boot_config *bc, char *line)
{
	memset(bc, 0, sizeof(*bc));
	snprintf(bc->root, sizeof(bc->root), "/dev/vda");
	char *save = NULL;
	for (char *tok = strtok_r(line, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (strncmp(tok, "boxlite.root=", 13) == 0)
			set_value(bc->root, sizeof(bc->root), tok + 13);
		else if (strncmp(tok, "boxlite.ip=", 11) == 0)
			set_value(bc->ip, sizeof(bc->ip), tok + 11);
		else if (strncmp(tok, "boxlite.gw=", 11) == 0)
			set_value(bc->gw, sizeof(bc->gw), tok + 11);
		else if (strncmp(tok, "boxlite.dns=", 12) == 0)
			set_value(bc->dns, sizeof(bc->dns), tok + 12);
		else if (strncmp(tok, "boxlite.host=", 13) == 0)
			set_value(bc->host, sizeof(bc->host), tok + 13);
		else if (strncmp(tok, "boxlite.vol=", 12) == 0)
			parse_volume(bc, tok + 12);
		else if (strncmp(tok, "boxlite.caps=", 13) == 0)
			parse_caps(bc, tok + 13);
		else if (strncmp(tok, "boxlite.rlimit=", 15) == 0)
			parse_limit(bc, tok + 15);
		else if (strcmp(tok, "boxlite.main") == 0 || strcmp(tok, "boxlite.main=1") == 0)
			bc->main = 1;
		else if (strcmp(tok, "boxlite.trust") == 0 || strcmp(tok, "boxlite.trust=1") == 0)
			bc->trust = 1;
		else if (strcmp(tok, "boxlite.debug") == 0 || strcmp(tok, "boxlite.debug=1") == 0)
			bc->debug = 1;
		else if (strcmp(tok, "boxlite.template") == 0)
			bc->template_boot = 1;
		else if (strncmp(tok, "boxlite.time=", 13) == 0)
			bc->time_ns = strtoull(tok + 13, NULL, 10);
		else if (strncmp(tok, "boxlite.seed=", 13) == 0)
			set_value(bc->seed, sizeof(bc->seed), tok + 13);
	}
}

int boot_open_tools(void)
{
	int fd = open("/lib/boxlite/tools", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		log_warn("no toolbox at /lib/boxlite/tools: %s", strerror(errno));
	return fd;
}

int boot_leave_initramfs(void)
{
	static const char *const carried[] = { "/proc", "/sys", "/dev" };
	if (mkdir(NEWROOT, 0755) < 0 && errno != EEXIST) {
		log_err("mkdir %s: %s", NEWROOT, strerror(errno));
		return -1;
	}
	if (mount("tmpfs", NEWROOT, "tmpfs", 0, "mode=0755") < 0) {
		log_err("mount tmpfs on %s: %s", NEWROOT, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof(carried) / sizeof(carried[0]); i++) {
		char dst[64];
		snprintf(dst, sizeof(dst), NEWROOT "%s", carried[i]);
		if (mkdir(dst, 0755) < 0 || mount(carried[i], dst, NULL, MS_MOVE, NULL) < 0) {
			log_err("move %s: %s", carried[i], strerror(errno));
			return -1;
		}
	}
	/* switch_root: the tmpfs becomes / (a mount with a parent, so the
	 * container's pivot_root works); the initramfs stays underneath. */
	if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		log_err("switch root: %s", strerror(errno));
		return -1;
	}
	mount_or_log("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	if (mkdir_p("/mnt/root", 0755) < 0)
		log_err("mkdir /mnt/root: %s", strerror(errno));
	return 0;
}

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

/* diskSizeGb: the host made the disk bigger than the image's ext4; grow the
 * file system online to fill it (no resize2fs needed). Best effort. */
static void grow_fs(const char *dev, const char *target)
{
	uint64_t bytes = 0;
	struct statvfs sv;
	int dfd = open(dev, O_RDONLY | O_CLOEXEC);
	if (dfd < 0 || ioctl(dfd, BLKGETSIZE64, &bytes) < 0) {
		log_warn("size of %s: %s", dev, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return;
	}
	close(dfd);
	int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstatvfs(fd, &sv) < 0 || sv.f_frsize == 0) {
		log_warn("statvfs %s: %s", target, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	uint64_t blocks = bytes / sv.f_frsize;
	/* f_blocks excludes the metadata overhead, so it is below the block
	 * count even when there is nothing to grow; the ioctl is then a no-op. */
	if (blocks > (uint64_t)sv.f_blocks) {
		if (ioctl(fd, EXT4_IOC_RESIZE_FS, &blocks) < 0)
			log_warn("grow %s to %llu blocks: %s", target, (unsigned long long)blocks, strerror(errno));
		else
			log_debug("%s grown to %llu blocks of %lu", target, (unsigned long long)blocks, sv.f_frsize);
	}
	close(fd);
}

int boot_mount_root(const char *dev, const char *target, unsigned wait_ms)
{
	struct stat st;
	uint64_t deadline = now_ms() + wait_ms;
	while (stat(dev, &st) < 0) {
		if (now_ms() >= deadline) {
			log_err("root disk %s did not appear within %u ms", dev, wait_ms);
			return -1;
		}
		sleep_ms(10);
	}
	if (mkdir_p(target, 0755) < 0) {
		log_err("mkdir %s: %s", target, strerror(errno));
		return -1;
	}
	/* nodev: the container keeps CAP_MKNOD (docker's baseline); a node made
	 * on the image (e.g. for this very disk) must not open. */
	if (mount(dev, target, "ext4", MS_NODEV, NULL) < 0) {
		log_err("mount %s on %s: %s", dev, target, strerror(errno));
		return -1;
	}
	log_info("root disk %s mounted on %s", dev, target);
	grow_fs(dev, target);
	return 0;
}

void boot_poweroff(const char *target)
{
	sync();
	if (target && umount2(target, 0) < 0 && errno != EINVAL) {
		log_warn("umount %s: %s; detaching lazily", target, strerror(errno));
		umount2(target, MNT_DETACH);
	}
	sync();
	log_info("powering off");
	reboot(RB_POWER_OFF);
	/* QEMU runs with -no-reboot: a reboot request ends it too. */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

void boot_reset_identity(const struct boot_config *bc)
{
	/* The saved guest's clock stopped when the template was saved. */
	if (bc->time_ns) {
		struct timespec ts = { .tv_sec = (time_t)(bc->time_ns / 1000000000ull),
				       .tv_nsec = (long)(bc->time_ns % 1000000000ull) };
		if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			log_err("clock_settime: %s", strerror(errno));
	}
	/* Every restore starts with the template's CRNG state: without fresh
	 * input and a forced reseed, two boxes would draw the same numbers. */
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[128];
	} e = { 0 };
	size_t n = strlen(bc->seed) / 2;
	if (n > sizeof(e.buf))
		n = sizeof(e.buf);
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(bc->seed[2 * i]), lo = hexval(bc->seed[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			n = i;
			break;
		}
		e.buf[i] = (unsigned char)(hi << 4 | lo);
	}
	if (n == 0) {
		log_err("RESUME without boxlite.seed: the RNG keeps the template's state");
		return;
	}
	e.buf_size = (int)n;
	e.entropy_count = (int)n * 8;
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		log_err("open /dev/urandom: %s", strerror(errno));
		return;
	}
	if (ioctl(fd, RNDADDENTROPY, &e) < 0)
		log_err("RNDADDENTROPY: %s", strerror(errno));
	if (ioctl(fd, RNDRESEEDCRNG) < 0)
		log_err("RNDRESEEDCRNG: %s", strerror(errno));
	close(fd);
	memset(&e, 0, sizeof(e));
}

void boot_forget_disk(const char *dev)
{
	/* The template VM probed its own disk (partition scan): drop whatever
	 * the block device's cache holds, so the box's disk is read afresh. */
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (ioctl(fd, BLKFLSBUF, 0) < 0)
		log_warn("BLKFLSBUF %s: %s", dev, strerror(errno));
	close(fd);
}

int boot_sync_root(const char *dev, const char *target)
{
	/* A template saved with its root mounted: every page the guest wrote is
	 * on the disk and the journal is committed before the save, so a copy of
	 * the template's overlay is the disk this page cache describes. */
	int rc = 0;
	int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syscall(SYS_syncfs, fd) < 0) {
		log_err("syncfs %s: %s", target, strerror(errno));
		rc = -1;
	}
	if (fd >= 0)
		close(fd);
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		log_err("fsync %s: %s", dev, strerror(errno));
		rc = -1;
	}
	if (fd >= 0)
		close(fd);
	return rc;
}
