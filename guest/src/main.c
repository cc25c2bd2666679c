/* boxlite-guest: PID 1 of the BoxLite VM, serving docs/protocol.md on the
 * virtio-serial port "boxlite.agent".
 *
 *   boxlite-guest                          as /init in the VM (must be PID 1)
 *   boxlite-guest --host-mode --socket P   as an ordinary process: connects to
 *        the unix socket P instead of the port; no mounts, modules, network,
 *        container or power-off; commands run directly on the host.
 *        --features MASK advertises only those HELLO bits (tests of hosts
 *        against an older agent).
 *
 * One thread, one poll loop; signals arrive through a signalfd and are
 * handled in the loop like any other event. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdint.h>
#include <sys/syscall.h>

#include "boot.h"
#include "container.h"
#include "link.h"
#include "net.h"
#include "stream.h"
#include "util.h"

#define ROOT_MOUNT "/mnt/root"
#define PORT_NAME "boxlite.agent"

static int host_mode;
static int sigfd = -1;
static struct container ctr = { .init_pid = -1, .ns_ipc = -1, .ns_uts = -1, .ns_mnt = -1, .root_fd = -1 };
static int ns_fds[3];
static char ptmx_path[64] = "/dev/ptmx";
static struct stream_env senv = { .tools_fd = -1, .root_fd = -1 };
/* boxlite.main: the container is created by the main process (EXEC flag MAIN). */
static struct boot_config bc;
static struct container_config main_cfg_store;
static const struct container_config *main_cfg;
static int main_started;
/* boxlite.trust: the box's CA (TRUST, sent by the host right after the
 * handshake) goes into the container's trust store, so an exec-only box's
 * container starts only once it is here; a main box's starts with its init. */
static char trust_pem[PROTO_MAX_PAYLOAD];
static size_t trust_len;
static int trust_waiting;
static struct container_config trust_cfg_store;
/* boxlite.template: booted as a template, the box's config comes in RESUME. */
static int resume_pending;
static int template_networking;
/* boxlite.template.mounted: the template's root disk is mounted (and synced);
 * a box restored from it brings a copy of that disk, so no mount, no cache drop. */
static int template_mounted;

static void usage(void)
{
	fprintf(stderr, "usage: boxlite-guest                     (as PID 1 in the VM)\n"
			"       boxlite-guest --host-mode --socket PATH [--features MASK] [--debug]\n");
}

static void shutdown_now(void) __attribute__((noreturn));
static void shutdown_now(void)
{
	log_info("shutting down");
	streams_kill_all();
	container_kill(&ctr);
	/* Give the killed processes a moment to die (bounded: a process stuck
	 * in the kernel must not keep the VM from powering off). */
	uint64_t deadline = now_ms() + 2000;
	for (;;) {
		pid_t pid = waitpid(-1, NULL, WNOHANG);
		if (pid > 0)
			continue;
		if (pid < 0 || now_ms() >= deadline)
			break;
		sleep_ms(5);
	}
	if (host_mode)
		exit(0);
	boot_poweroff(ROOT_MOUNT);
}

/* Executions join the running container's namespaces from now on. */
static void adopt_container(void)
{
	ns_fds[0] = ctr.ns_ipc;
	ns_fds[1] = ctr.ns_uts;
	ns_fds[2] = ctr.ns_mnt;
	snprintf(ptmx_path, sizeof(ptmx_path), "/proc/%d/root/dev/pts/ptmx", (int)ctr.init_pid);
	senv.ns_fds = ns_fds;
	senv.root_fd = ctr.root_fd;
	senv.unavailable = NULL;
}

static int looks_like_pem(const uint8_t *p, uint32_t n)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	return n > sizeof(begin) - 1 && n < sizeof(trust_pem) && memcmp(p, begin, sizeof(begin) - 1) == 0 &&
	       memchr(p, 0, n) == NULL;
}

static void on_trust(struct proto_bytes d)
{
	if (trust_len) {
		log_warn("TRUST: the box already has its CA; ignoring another");
		return;
	}
	if (!looks_like_pem(d.ptr, d.len)) {
		/* Not ours to guess at: the container starts without it, HTTPS to
		 * secret hosts will then fail verification (visible, not silent). */
		log_err("TRUST: not a PEM certificate (%u bytes); ignored", (unsigned)d.len);
	} else {
		memcpy(trust_pem, d.ptr, d.len);
		trust_len = d.len;
		main_cfg_store.trust_pem = trust_cfg_store.trust_pem = trust_pem;
		main_cfg_store.trust_len = trust_cfg_store.trust_len = trust_len;
		log_info("TRUST: %u bytes of CA certificates for the container's trust store", (unsigned)d.len);
	}
	if (host_mode)
		return;
	if (trust_waiting) {
		trust_waiting = 0;
		if (container_start(&trust_cfg_store, &ctr) == 0) {
			log_info("container ready (init pid %d)", (int)ctr.init_pid);
			adopt_container();
		} else {
			log_err("container: %s", ctr.error);
			senv.unavailable = ctr.error;
		}
		streams_configure(&senv);
	} else if (!main_cfg || main_started) {
		log_warn("TRUST after the container started (booted without boxlite.trust): not installed");
	}
}

static void boot_container(int networking);

/* RESUME: this VM was restored from a template; the payload holds the boot
 * words (boxlite.root=, .ip=, .main, …) the box would have had on its
 * command line, plus its clock and entropy. */
static void on_resume(struct proto_bytes d)
{
	if (!resume_pending && !host_mode && d.len < PROTO_MAX_PAYLOAD && memmem(d.ptr, d.len, "boxlite.fork", 12)) {
		/* box.fork(): this VM is a copy of a running one, under a new host. */
		static char fw[PROTO_MAX_PAYLOAD + 1];
		struct boot_config fb;
		memset(&fb, 0, sizeof(fb));
		memcpy(fw, d.ptr, d.len);
		fw[d.len] = 0;
		/* boxlite.fork.main=<id>: the new host adopts the main process on that
		 * stream. Read before boot_parse_words(), which cuts the words up. */
		const char *mw = strstr(fw, "boxlite.fork.main=");
		uint32_t main_id = mw ? (uint32_t)strtoul(mw + 18, NULL, 10) : 0;
		boot_parse_words(&fb, fw);
		boot_reset_identity(&fb);
		streams_detach_all(main_id);
		log_info("RESUME: forked (clock, entropy reset; the old host's executions dropped; main %s)",
			 main_id ? "adopted" : "detached");
		return;
	}
	if (!resume_pending || host_mode) {
		log_warn("RESUME: not a template boot, or already resumed; ignored");
		return;
	}
	static char words[PROTO_MAX_PAYLOAD + 1];
	memcpy(words, d.ptr, d.len);
	words[d.len] = 0;
	resume_pending = 0;
	boot_parse_words(&bc, words);
	log_set_debug(bc.debug);
	boot_reset_identity(&bc);
	int networking = template_networking;
	if (bc.ip[0] && !networking)
		networking = net_up_interface("eth0", bc.ip, bc.gw, 5000) == 0;
	if (!template_mounted)
		boot_forget_disk(bc.root);
	/* A console line of its own: the bench tells this part from the mount by it. */
	log_info(template_mounted ? "RESUME: clock, entropy reset (root already mounted)" : "RESUME: clock, entropy and disk cache reset");
	senv.unavailable = NULL;
	boot_container(networking);
	streams_configure(&senv);
	log_info("resumed from a template");
}

static void on_frame(const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_HELLO:
		log_info("host hello: protocol %u.%u, features 0x%x, version %.*s", m->u.hello.major,
			 m->u.hello.minor, m->u.hello.features, (int)m->u.hello.version.len,
			 (const char *)m->u.hello.version.ptr);
		link_send_hello();
		break;
	case PROTO_PING: {
		struct proto_msg pong = *m;
		pong.type = PROTO_PONG;
		link_send(&pong);
		break;
	}
	case PROTO_PONG:
		break;
	case PROTO_TRUST:
		on_trust(m->u.data);
		break;
	case PROTO_RESUME:
		on_resume(m->u.data);
		break;
	case PROTO_SHUTDOWN:
		shutdown_now();
	case PROTO_ERROR:
		if (m->stream == 0) {
			log_warn("host reported an error: %.*s", (int)m->u.error.message.len,
				 (const char *)m->u.error.message.ptr);
			break;
		}
		streams_on_frame(m);
		break;
	default:
		streams_on_frame(m);
		break;
	}
}

static void reap(void)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		/* The init first: the main process is also a stream, whose EXIT the
		 * host needs, and with it the container is gone (the kernel killed
		 * everything in its pid namespace). */
		if (pid == ctr.init_pid) {
			if (main_cfg)
				log_info("main process exited (status 0x%x); no further executions", st);
			else
				log_err("container init exited (status 0x%x); no further executions", st);
			ctr.init_pid = -1; /* reaped: its pid is free, container_kill must not signal it */
			container_kill(&ctr);
			snprintf(ctr.error, sizeof(ctr.error), "%s", main_cfg ? "the main process exited" : "container init exited");
			senv.unavailable = ctr.error;
			senv.ns_fds = NULL;
			senv.root_fd = -1; /* closed by container_kill */
			streams_configure(&senv);
		}
		streams_on_child_exit(pid, st);
	}
}

/* stream_env.start_main in the VM: once per boot, for a box booted with
 * boxlite.main (its container waits for this process to be its init). */
static int start_main(struct exec_spec *s, struct exec_child *out, struct exec_failure *f)
{
	if (!main_cfg || main_started) {
		f->code = 125;
		/* booted with boxlite.main but the root disk did not mount: say that */
		snprintf(f->message, sizeof(f->message), "%s",
			 main_started ? "the main process was already started"
			 : bc.main    ? ctr.error
				      : "this box was booted without a main process");
		return -1;
	}
	main_started = 1;
	if (container_start_main(main_cfg, &ctr, s, out, f) < 0) {
		/* Later executions say why, not "has not started yet" forever. */
		snprintf(ctr.error, sizeof(ctr.error), "the main process could not start: %.200s", f->message);
		senv.unavailable = ctr.error;
		streams_configure(&senv);
		return -1;
	}
	if (ctr.init_pid > 0) {
		log_info("container ready (main process, pid %d)", (int)ctr.init_pid);
		ns_fds[0] = ctr.ns_ipc;
		ns_fds[1] = ctr.ns_uts;
		ns_fds[2] = ctr.ns_mnt;
		snprintf(ptmx_path, sizeof(ptmx_path), "/proc/%d/root/dev/pts/ptmx", (int)ctr.init_pid);
		senv.ns_fds = ns_fds;
		senv.root_fd = ctr.root_fd;
		senv.unavailable = NULL;
	} else {
		log_err("container: %s", ctr.error);
		senv.unavailable = ctr.error;
	}
	streams_configure(&senv);
	return 0;
}

static void handle_signals(void)
{
	struct signalfd_siginfo si;
	int chld = 0;
	while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			chld = 1;
		else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			shutdown_now();
	}
	if (chld)
		reap();
}

static void setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		log_err("signalfd: %s", strerror(errno));
		exit(1);
	}
	signal(SIGPIPE, SIG_IGN);
}

/* The box-specific part of the boot: the root disk, the container (or its
 * config, for a main process or a CA still to come), the execution policy. */
static void boot_container(int networking)
{
	if (template_mounted || boot_mount_root(bc.root, ROOT_MOUNT, 10000) == 0) {
		struct container_config cfg = {
			.rootdir = ROOT_MOUNT,
			.hostname = "boxlite",
			.networking = networking,
			.host_alias = bc.host,
			.dns = bc.dns,
			.vols = bc.vols,
			.nvols = bc.nvols,
		};
		if (bc.main) {
			/* The image's main process will be the init; the host sends it
			 * (EXEC flag MAIN) right after the handshake. */
			main_cfg_store = cfg;
			main_cfg = &main_cfg_store;
			snprintf(ctr.error, sizeof(ctr.error), "the main process has not started yet");
		} else if (bc.trust) {
			trust_cfg_store = cfg;
			trust_waiting = 1;
			snprintf(ctr.error, sizeof(ctr.error), "the container has not started yet: it waits for the box's CA (TRUST)");
		} else if (container_start(&cfg, &ctr) == 0)
			log_info("container ready (init pid %d)", (int)ctr.init_pid);
		else
			log_err("container: %s", ctr.error);
	} else {
		snprintf(ctr.error, sizeof(ctr.error), "root disk %s could not be mounted", bc.root);
	}

	if (ctr.init_pid > 0) {
		ns_fds[0] = ctr.ns_ipc;
		ns_fds[1] = ctr.ns_uts;
		ns_fds[2] = ctr.ns_mnt;
		snprintf(ptmx_path, sizeof(ptmx_path), "/proc/%d/root/dev/pts/ptmx", (int)ctr.init_pid);
		senv.ns_fds = ns_fds;
		senv.root_fd = ctr.root_fd;
	} else {
		senv.unavailable = ctr.error;
	}
	senv.ptmx = ptmx_path;
	senv.start_main = start_main;
	senv.switch_user = 1;
	senv.drop_caps = 1;
	if (bc.have_caps)
		exec_set_capabilities(bc.caps);
	exec_set_limits(bc.limits, bc.nlimits);
}

static void vm_boot(void)
{
	boot_early_mounts();
	log_open_console();
	log_info("starting, version %s", AGENT_VERSION);
	/* Neither the agent nor the container init (forked from it, so it
	 * inherits this) may be the OOM killer's victim; executions reset it. */
	if (write_small_file("/proc/self/oom_score_adj", "-1000", 0644) < 0)
		log_warn("oom_score_adj: %s", strerror(errno));
	boot_load_modules("/lib/boxlite/modules");
	boot_parse_cmdline(&bc);
	log_set_debug(bc.debug);
	senv.tools_fd = boot_open_tools();
	if (boot_leave_initramfs() < 0)
		log_err("staying on the initramfs root; the container will not start");

	net_up_loopback();
	int networking = 0;
	if (bc.ip[0])
		networking = net_up_interface("eth0", bc.ip, bc.gw, 5000) == 0;
	link_add_features(PROTO_FEAT_FORK | PROTO_FEAT_FORK_MAIN);
	if (bc.template_boot) {
		/* A template: everything up to here is the same for every box of
		 * its shape; the host saves the VM now and each restore continues
		 * in on_resume() with the box's own words. */
		template_networking = networking;
		resume_pending = 1;
		snprintf(ctr.error, sizeof(ctr.error), "the box has not been resumed from its template yet");
		senv.unavailable = ctr.error;
		senv.ptmx = ptmx_path;
		link_add_features(PROTO_FEAT_RESUME);
		char cl[4096];
		if (read_small_file("/proc/cmdline", cl, sizeof(cl)) > 0 && strstr(cl, "boxlite.template.mounted")) {
			if (boot_mount_root(bc.root, ROOT_MOUNT, 10000) == 0 && boot_sync_root(bc.root, ROOT_MOUNT) == 0) {
				template_mounted = 1;
				/* The image is this template's own (its digest is in the key):
				 * its shell and user database read now are in every restored
				 * box's page cache, as they are on its disk copy. */
				static const char *warm[] = { "/bin/sh", "/etc/passwd", "/etc/group" };
				int rootfd = open(ROOT_MOUNT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				for (size_t i = 0; rootfd >= 0 && i < sizeof(warm) / sizeof(warm[0]); i++) {
					static char buf[65536];
					/* The image's symlinks (/bin/sh -> /bin/busybox) resolve inside it. */
					struct { uint64_t flags, mode, resolve; } how = { O_RDONLY | O_CLOEXEC, 0, 0x10 /* RESOLVE_IN_ROOT */ };
					int wf = (int)syscall(437 /* openat2, every architecture */, rootfd, warm[i] + 1, &how, sizeof(how));
					while (wf >= 0 && read(wf, buf, sizeof(buf)) > 0)
						;
					if (wf >= 0)
						close(wf);
				}
				if (rootfd >= 0)
					close(rootfd);
				/* The host's builder waits for this line before it saves. */
				log_info("template boot: root mounted and synced");
			} else
				log_err("template boot: root not mounted; this template must not be saved");
		}
		/* No zeroing of free memory: the host keeps a template's RAM in
		 * a sparse file of its own, read by restores as pages are touched. */
		log_info("template boot: waiting for RESUME");
	} else
		boot_container(networking);

	while (link_open_port(PORT_NAME, 30000) < 0)
		log_err("no virtio port named %s yet; still waiting", PORT_NAME);
}

static void host_setup(const char *socket_path, pid_t parent)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
	/* Like tini's subreaper mode: orphans of executions are ours to reap.
	 * And when whoever started us goes away, so do we (SIGTERM = shutdown). */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
	if (getppid() != parent)
		exit(0);
	link_use_socket(socket_path);
	senv.ptmx = "/dev/ptmx";
	senv.tools_fd = open("/lib/boxlite/tools", O_PATH | O_DIRECTORY | O_CLOEXEC);
	senv.switch_user = geteuid() == 0;
	senv.drop_caps = geteuid() == 0;
	/* Executions see the host's root here: users come from its /etc. */
	senv.root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	log_info("host mode, version %s, socket %s", AGENT_VERSION, socket_path);
}

static int min_timeout(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

static void serve(void) __attribute__((noreturn));
static void serve(void)
{
	static struct pollfd pfd[STREAMS_POLL_MAX + 2];
	for (;;) {
		int n = 0;
		pfd[n++] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
		short lev = 0;
		int lfd = link_poll_fd(&lev);
		int link_idx = -1;
		if (lfd >= 0) {
			link_idx = n;
			pfd[n++] = (struct pollfd){ .fd = lfd, .events = lev };
		}
		int sbase = n;
		int ns = streams_poll_fill(pfd + n, STREAMS_POLL_MAX);
		n += ns;

		uint64_t now = now_ms();
		int timeout = min_timeout(link_timeout_ms(now), streams_timeout_ms(now));
		int r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0 && errno != EINTR) {
			log_err("poll: %s", strerror(errno));
			sleep_ms(10);
		}
		if (r > 0) {
			streams_on_poll(pfd + sbase, ns);
			if (pfd[0].revents)
				handle_signals();
			if (link_idx >= 0 && pfd[link_idx].revents)
				link_on_poll(pfd[link_idx].revents);
		}
		streams_tick();
		link_tick();
	}
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL;
	int debug = 0;
	unsigned long features = PROTO_FEAT_ALL;
	pid_t parent = getppid();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--host-mode") == 0) {
			host_mode = 1;
		} else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
			socket_path = argv[++i];
		} else if (strcmp(argv[i], "--features") == 0 && i + 1 < argc) {
			features = strtoul(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--debug") == 0) {
			debug = 1;
		} else if (getpid() == 1) {
			continue; /* the kernel passes unknown command-line words to init */
		} else {
			usage();
			return 2;
		}
	}
	if (host_mode && !socket_path) {
		usage();
		return 2;
	}
	if (!host_mode && getpid() != 1) {
		fprintf(stderr, "boxlite-guest: not PID 1; outside the VM use --host-mode --socket PATH\n");
		return 2;
	}
	log_set_debug(debug);
	setup_signals();
	if (host_mode) {
		host_setup(socket_path, parent);
		link_withhold_features(PROTO_FEAT_ALL & ~(uint32_t)features);
	}
	else
		vm_boot();
	streams_configure(&senv);
	link_set_handler(on_frame);
	serve();
}
