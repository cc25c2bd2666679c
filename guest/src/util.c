#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int console_fd = -1;
static int debug_on;

void log_open_console(void)
{
	/* Not /dev/kmsg: the kernel rate-limits writes to it (10 per 5 s by
	 * default) and drops the rest. Non-blocking: a slow console loses log
	 * lines rather than stalling PID 1. */
	console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
}

void log_set_debug(int on) { debug_on = on; }

void logmsg(int level, const char *f, ...)
{
	if (level >= LOG_LVL_DEBUG && !debug_on)
		return;
	char buf[1024];
	int off;
	if (console_fd >= 0) {
		/* Kernel-style uptime stamp, so lines sort in with the kernel's. */
		struct timespec ts;
		clock_gettime(CLOCK_BOOTTIME, &ts);
		off = snprintf(buf, sizeof(buf), "[%5ld.%06ld] boxlite-guest: %s", (long)ts.tv_sec, ts.tv_nsec / 1000,
			       level <= LOG_LVL_ERR ? "error: " : "");
	} else {
		off = snprintf(buf, sizeof(buf), "boxlite-guest: %s", level <= LOG_LVL_ERR ? "error: " : "");
	}
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf + off, sizeof(buf) - (size_t)off - 1, f, ap);
	va_end(ap);
	size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
	if (len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	ssize_t w = write(console_fd >= 0 ? console_fd : STDERR_FILENO, buf, len);
	(void)w;
}

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000u, (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

ssize_t read_small_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off + 1 < cap) {
		ssize_t r = read(fd, buf + off, cap - 1 - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		off += (size_t)r;
	}
	close(fd);
	buf[off] = '\0';
	return (ssize_t)off;
}

int write_small_file(const char *path, const char *content, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	int rc = write_all(fd, content, strlen(content));
	if (close(fd) < 0)
		rc = -1;
	return rc;
}

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	if (fmt(tmp, sizeof(tmp), "%s", path) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int fmt(char *buf, size_t cap, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, cap, f, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return n;
}
