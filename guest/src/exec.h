/* Spawning one execution: pipes or a pty, fork, and in the child: join the
 * container, session, user, working directory, capabilities, execvp. */
#ifndef BOXLITE_EXEC_H
#define BOXLITE_EXEC_H

#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

struct exec_spec {
	const struct proto_msg *m; /* the EXEC message */
	const int *ns_fds;         /* ipc, uts, mnt to setns into; NULL: stay in ours */
	const char *ptmx;          /* ptmx of the devpts the child will see as /dev/pts */
	int switch_user;           /* resolve m->user and switch to it */
	int drop_caps;             /* apply the capability baseline */
	int tools_fd;              /* directory of the agent's toolbox (EXEC flag TOOL); -1: none */
	/* The root the child will see (O_PATH): /etc/passwd and /etc/group are
	 * read through it by the agent, cached until they change; -1: the child
	 * reads them itself after joining the container. */
	int root_fd;
	/* Runs in the child first (the container init builds the container here).
	 * With a TTY it returns the number of the pty the child then opens as its
	 * terminal (the pty lives in the container's devpts, which only exists
	 * once it ran, so exec_spawn allocates none); <0 fails with err (125). */
	int (*prepare)(void *arg, unsigned *pts, char *err, size_t errlen);
	void *prepare_arg;
};

struct exec_child {
	pid_t pid;     /* in the agent's pid namespace */
	int stdin_fd;  /* to the child's stdin: pipe, or the pty master */
	int stdout_fd; /* from the child's stdout: pipe, or a dup of the pty master */
	int stderr_fd; /* from the child's stderr: pipe; -1 with a TTY */
	int status_fd; /* end of file once execvp succeeded, a failure record otherwise */
	uint32_t nspid; /* the pid inside the child's pid namespace; 0: not known (exec_namespace_pid) */
	int status_ready; /* the child has exec'd or failed already: status_fd reads final */
};

struct exec_failure {
	int32_t code; /* 125, 126 or 127 */
	char message[256];
};

#define EXEC_MAX_LIMITS 8

struct exec_limit {
	int resource; /* RLIMIT_* */
	unsigned long long value;
};

/* The box's policy for every later execution: the capabilities kept in the
 * bounding set where the baseline applies (bit n = capability n; without a
 * call, docker's set) and rlimits set as soft and hard limit (at most
 * EXEC_MAX_LIMITS). */
void exec_set_capabilities(unsigned long long mask);
void exec_set_limits(const struct exec_limit *limits, int n);

/* Returns 0 with *out filled (all fds non-blocking, close-on-exec), or -1
 * with *f describing why nothing was started. */
int exec_spawn(const struct exec_spec *s, struct exec_child *out, struct exec_failure *f);

/* Reads the spawn status: 1 = failed (*f filled), 0 = exec succeeded,
 * -1 = not known yet. */
int exec_read_status(int status_fd, struct exec_failure *f);

/* The pid as seen inside the child's pid namespace (NSpid, last field). */
uint32_t exec_namespace_pid(pid_t pid);

/* TIOCSWINSZ; 0 rows or cols mean 24 or 80. */
int exec_set_winsize(int master_fd, uint16_t rows, uint16_t cols);

#endif
