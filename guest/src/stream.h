/* Exec streams: one per EXEC, keyed by stream id. Moves bytes between the
 * child's stdio and the link under the WINDOW flow control of
 * docs/protocol.md section 5, and reports STARTED / EOFs / EXIT. */
#ifndef BOXLITE_STREAM_H
#define BOXLITE_STREAM_H

#include <poll.h>
#include <stdint.h>
#include <sys/types.h>

#include "exec.h"
#include "proto.h"

#define STREAMS_MAX 1024
#define STREAMS_POLL_MAX (STREAMS_MAX * 4)

struct stream_env {
	const int *ns_fds;       /* container namespaces to join; NULL in host mode */
	const char *ptmx;        /* ptmx for TTY executions */
	int switch_user;         /* honour EXEC user */
	int drop_caps;           /* capability baseline */
	int tools_fd;            /* toolbox directory (EXEC flag TOOL); -1: none */
	int root_fd;             /* the executions' root (O_PATH) for user lookups; -1: none */
	const char *unavailable; /* non-NULL: why executions cannot start */
	/* EXEC flag MAIN: starts the container with that process as its init (VM
	 * mode); NULL: a MAIN runs like any execution (host mode). */
	int (*start_main)(struct exec_spec *s, struct exec_child *out, struct exec_failure *f);
};

void streams_configure(const struct stream_env *env);

/* Stream-level frames from the host (EXEC, STDIN, SIGNAL, RESIZE, WINDOW, ...). */
void streams_on_frame(const struct proto_msg *m);

/* Appends the fds to poll; returns how many were added (at most max). */
int streams_poll_fill(struct pollfd *pfd, int max);
/* Handles the revents of the n entries streams_poll_fill() added. */
void streams_on_poll(const struct pollfd *pfd, int n);
/* A reaped child: returns 1 if it was an execution's main process. */
int streams_on_child_exit(pid_t pid, int wstatus);
/* Timeouts, draining after exit, EXIT reports. Call once per loop. */
void streams_tick(void);
/* Milliseconds until the next timeout (-1: none). */
int streams_timeout_ms(uint64_t now);
/* SIGKILL every running execution's process group. */
void streams_kill_all(void);
/* A forked VM (RESUME with boxlite.fork): every stream was the old host's.
 * Executions are killed; the main process runs on: re-keyed to stream
 * main_id for the new host (STARTED again, fresh credit), or, with main_id 0,
 * detached (never read again). main_id without a main process: ERROR on it. */
void streams_detach_all(uint32_t main_id);

#endif
