/* Small helpers shared by the agent's modules: logging, files, time, fds. */
#ifndef BOXLITE_UTIL_H
#define BOXLITE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_VERSION "0.1.0"

/* Severity (kernel numbering); debug lines only with --debug / boxlite.debug. */
#define LOG_LVL_ERR 3
#define LOG_LVL_WARN 4
#define LOG_LVL_INFO 6
#define LOG_LVL_DEBUG 7

/* Log to /dev/console once log_open_console() succeeded, else to stderr. */
void log_open_console(void);
void log_set_debug(int on);
void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) logmsg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) logmsg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) logmsg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) logmsg(LOG_LVL_DEBUG, __VA_ARGS__)

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t now_ms(void);
void sleep_ms(unsigned ms);

int set_nonblock(int fd);
/* Writes all of buf, retrying on EINTR; -1 on error. Blocking fds only. */
int write_all(int fd, const void *buf, size_t n);
/* Reads up to cap-1 bytes of a small file and NUL-terminates; -1 on error. */
ssize_t read_small_file(const char *path, char *buf, size_t cap);
/* Creates/truncates path with the given content. */
int write_small_file(const char *path, const char *content, mode_t mode);
/* mkdir -p; existing directories are fine. */
int mkdir_p(const char *path, mode_t mode);

/* snprintf that reports truncation as failure (returns -1). */
int fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));

#endif
