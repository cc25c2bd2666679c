/* The container: one "container init" process, PID 1 of its own pid, mount,
 * UTS and IPC namespaces, whose root is the image disk (pivot_root). The
 * agent stays outside; executions join these namespaces (exec.c). */
#ifndef BOXLITE_CONTAINER_H
#define BOXLITE_CONTAINER_H

#include <stddef.h>
#include <sys/types.h>

#include "boot.h"
#include "exec.h"

struct container_config {
	const char *rootdir;  /* mounted image root, e.g. /mnt/root */
	const char *hostname; /* "boxlite" */
	int networking;         /* write host.boxlite.internal and resolv.conf */
	const char *host_alias; /* address for host.boxlite.internal; NULL or "": none */
	const char *dns;        /* nameserver; NULL or "": no resolv.conf */
	const struct boot_volume *vols; /* 9p shares mounted last, at their paths */
	int nvols;
	const char *trust_pem; /* extra CA certificates (PEM) for the trust store; NULL: none */
	size_t trust_len;
};

struct container {
	pid_t init_pid; /* in the agent's pid namespace; -1 when there is none */
	int ns_ipc, ns_uts, ns_mnt; /* O_CLOEXEC namespace fds for setns */
	int root_fd;                /* O_PATH: the root an execution sees after setns; -1: none */
	char error[256];            /* why there is no container */
};

/* Starts the container init and waits until its namespaces are ready.
 * Afterwards the agent's own children are created in the container's pid
 * namespace (the agent itself stays outside it). Returns 0 or -1 with
 * c->error set. */
int container_start(const struct container_config *cfg, struct container *c);

/* Starts the container with the main process (EXEC flag MAIN) as its init:
 * exec_spawn of s, whose child builds the container (PID 1 of a new pid
 * namespace) and then execs the command. Returns 0 with *out filled and, once
 * the container is up, c->init_pid and the namespace fds set (on a setup
 * failure c->error says why and the child reports it on its status pipe);
 * -1 with *f filled when nothing was started. */
int container_start_main(const struct container_config *cfg, struct container *c, struct exec_spec *s,
			 struct exec_child *out, struct exec_failure *f);

/* Kills the container init (and with it every process in its namespace). */
void container_kill(struct container *c);

#endif
