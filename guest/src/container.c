#include "container.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

#define READY_TIMEOUT_MS 15000

/* ---- inside the container init ---- */

static char setup_error[256];

static int fail(const char *f, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *f, ...)
{
	int e = errno;
	char what[160];
	va_list ap;
	va_start(ap, f);
	vsnprintf(what, sizeof(what), f, ap);
	va_end(ap);
	snprintf(setup_error, sizeof(setup_error), "%s: %s", what, strerror(e));
	return -1;
}

static int mount_at(const char *src, const char *dst, const char *type, unsigned long flags, const char *data,
		    mode_t dirmode)
{
	if (mkdir(dst, dirmode) < 0 && errno != EEXIST)
		return fail("mkdir %s", dst);
	if (mount(src, dst, type, flags, data) < 0)
		return fail("mount %s on %s", type ? type : src, dst);
	return 0;
}

/* /dev is a nodev tmpfs too: there is no device cgroup, so a node the
 * container makes with its CAP_MKNOD (docker's baseline) must not open,
 * wherever it is made. The nodes it does get are made on a staging tmpfs and
 * bind-mounted over empty files (a bind keeps the flags of its source mount);
 * the binds keep the staging tmpfs alive once it is detached. */
static int make_dev(void)
{
	static const struct {
		const char *name;
		unsigned maj, min;
	} nodes[] = {
		{ "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 },
		{ "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
	};
	static const struct {
		const char *target, *link;
	} links[] = {
		{ "/proc/self/fd", "/dev/fd" },
		{ "/proc/self/fd/0", "/dev/stdin" },
		{ "/proc/self/fd/1", "/dev/stdout" },
		{ "/proc/self/fd/2", "/dev/stderr" },
		{ "pts/ptmx", "/dev/ptmx" },
	};
	const char *stage = "/dev/.boxlite-nodes";

	if (mount_at("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k", 0755) <
	    0)
		return -1;
	if (mount_at("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=16k", 0755) < 0)
		return -1;
	int rc = -1;
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		char node[64], path[64];
		snprintf(node, sizeof(node), "%s/%s", stage, nodes[i].name);
		snprintf(path, sizeof(path), "/dev/%s", nodes[i].name);
		if (mknod(node, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0) {
			fail("mknod %s", node);
			goto out;
		}
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0) {
			fail("create %s", path);
			goto out;
		}
		close(fd);
		if (mount(node, path, NULL, MS_BIND, NULL) < 0) {
			fail("bind %s", path);
			goto out;
		}
	}
	rc = 0;
out:
	if (umount2(stage, MNT_DETACH) < 0 && rc == 0)
		rc = fail("umount %s", stage);
	if (rmdir(stage) < 0 && rc == 0)
		rc = fail("rmdir %s", stage);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i].target, links[i].link) < 0)
			return fail("symlink %s", links[i].link);
	if (mount_at("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		     "newinstance,ptmxmode=0666,mode=0620,gid=5", 0755) < 0)
		return -1;
	if (mount_at("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k",
		     01777) < 0)
		return -1;
	if (mount_at("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0755) < 0)
		log_warn("container: %s (continuing)", setup_error);
	return 0;
}

/* Bind-mounts src over dst, creating dst in the image if it is missing. Runs
 * after pivot_root, so a symlink at dst resolves inside the container. */
static int bind_file(const char *src, const char *dst)
{
	int fd = open(dst, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
	if (fd < 0) {
		struct stat st;
		/* A symlink to nowhere (e.g. resolv.conf -> ../run/systemd/...). */
		if (lstat(dst, &st) < 0 || !S_ISLNK(st.st_mode) || unlink(dst) < 0)
			return fail("create %s", dst);
		fd = open(dst, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
		if (fd < 0)
			return fail("create %s", dst);
	}
	close(fd);
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		return fail("bind %s", dst);
	return 0;
}

/* /etc/hostname, /etc/hosts and /etc/resolv.conf come from a tmpfs that is
 * only mounted while the files are bound; the binds keep it alive. */
static int make_etc(const struct container_config *cfg)
{
	char hosts[512], resolv[128], hostname[80];
	const char *stage = "/tmp";
	int n = snprintf(hosts, sizeof(hosts), "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
			 cfg->hostname);
	int resolv_conf = cfg->networking && cfg->dns && *cfg->dns;
	if (cfg->networking && cfg->host_alias && *cfg->host_alias)
		snprintf(hosts + n, sizeof(hosts) - (size_t)n, "%s\thost.boxlite.internal\n", cfg->host_alias);
	snprintf(resolv, sizeof(resolv), "nameserver %s\n", resolv_conf ? cfg->dns : "");
	snprintf(hostname, sizeof(hostname), "%s\n", cfg->hostname);

	if (mkdir("/etc", 0755) < 0 && errno != EEXIST)
		return fail("mkdir /etc");
	if (mount_at("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=64k", 01777) < 0)
		return -1;
	int rc = -1;
	if (write_small_file("/tmp/hostname", hostname, 0644) < 0 || write_small_file("/tmp/hosts", hosts, 0644) < 0 ||
	    (resolv_conf && write_small_file("/tmp/resolv.conf", resolv, 0644) < 0)) {
		fail("write /etc files");
		goto out;
	}
	if (bind_file("/tmp/hostname", "/etc/hostname") < 0 || bind_file("/tmp/hosts", "/etc/hosts") < 0)
		goto out;
	if (resolv_conf && bind_file("/tmp/resolv.conf", "/etc/resolv.conf") < 0)
		goto out;
	rc = 0;
out:
	if (umount2(stage, MNT_DETACH) < 0 && rc == 0)
		rc = fail("umount %s", stage);
	return rc;
}

/* The trust-store files of the usual distributions (Go's crypto/x509 list). The
 * first is always provided (created when the image has none); the others only
 * where the image has them, so nothing new appears in foreign layouts. */
static const char *const trust_paths[] = {
	"/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Alpine, Arch */
	"/etc/pki/tls/certs/ca-bundle.crt",                  /* Fedora, RHEL */
	"/etc/ssl/ca-bundle.pem",                            /* openSUSE */
	"/etc/pki/tls/cacert.pem",                           /* OpenELEC */
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7+ */
	"/etc/ssl/cert.pem",                                 /* Alpine, LibreSSL */
};
#define TRUST_IMAGE_MAX (4u << 20)

/* Appends the image's own bundle (the first trust path that is a regular file)
 * to fd; bounded, so a huge or special file cannot stall the boot. */
static int copy_image_bundle(int out)
{
	static char buf[65536];
	for (size_t i = 0; i < sizeof(trust_paths) / sizeof(trust_paths[0]); i++) {
		int fd = open(trust_paths[i], O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
			close(fd);
			continue;
		}
		size_t total = 0;
		char last = '\n';
		ssize_t n;
		while (total < TRUST_IMAGE_MAX && (n = read(fd, buf, sizeof(buf))) > 0) {
			if (write_all(out, buf, (size_t)n) < 0) {
				close(fd);
				return fail("write trust bundle");
			}
			last = buf[n - 1];
			total += (size_t)n;
		}
		close(fd);
		if (last != '\n' && write_all(out, "\n", 1) < 0)
			return fail("write trust bundle");
		return 0;
	}
	return 0;
}

/* The box's CA (TRUST from the host, for secret substitution): a bundle of the
 * image's certificates plus the CA on a staging tmpfs, bound over every trust
 * path the image has (and the Debian one in any case). The image is not
 * modified: a new boot gets a new CA and the old one is simply gone. */
static int make_trust(const struct container_config *cfg)
{
	const char *stage = "/tmp";
	if (mount_at("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=8m", 01777) < 0)
		return -1;
	int rc = -1;
	int fd = open("/tmp/ca-bundle.crt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fail("create trust bundle");
		goto out;
	}
	if (copy_image_bundle(fd) < 0 || write_all(fd, cfg->trust_pem, cfg->trust_len) < 0) {
		if (!setup_error[0])
			fail("write trust bundle");
		close(fd);
		goto out;
	}
	close(fd);
	if (mkdir_p("/etc/ssl/certs", 0755) < 0) {
		fail("mkdir /etc/ssl/certs");
		goto out;
	}
	for (size_t i = 0; i < sizeof(trust_paths) / sizeof(trust_paths[0]); i++) {
		struct stat st;
		if (i > 0 && stat(trust_paths[i], &st) < 0)
			continue;
		if (bind_file("/tmp/ca-bundle.crt", trust_paths[i]) < 0)
			goto out;
	}
	rc = 0;
out:
	if (umount2(stage, MNT_DETACH) < 0 && rc == 0)
		rc = fail("umount %s", stage);
	return rc;
}

/* Host volumes: virtio-9p shares (QEMU enforces read-only too), mounted
 * after pivot_root so the path resolves inside the container; mounted last
 * so nothing of ours covers them. The path is created when missing. */
static int mount_volumes(const struct container_config *cfg)
{
	for (int i = 0; i < cfg->nvols; i++) {
		const struct boot_volume *v = &cfg->vols[i];
		unsigned long flags = MS_NOSUID | MS_NODEV | (v->readonly ? MS_RDONLY : 0);
		if (mkdir_p(v->path, 0755) < 0)
			return fail("volume: mkdir %s", v->path);
		if (mount(v->tag, v->path, "9p", flags, "trans=virtio,version=9p2000.L,msize=512000,cache=mmap") < 0)
			return fail("volume: mount %s on %s", v->tag, v->path);
	}
	return 0;
}

static int setup(const struct container_config *cfg)
{
	if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) < 0)
		return fail("unshare");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail("make mounts private");
	if (mount(cfg->rootdir, cfg->rootdir, NULL, MS_BIND | MS_REC, NULL) < 0)
		return fail("bind %s", cfg->rootdir);
	/* The image is nodev whatever it was mounted with (see make_dev). */
	if (mount(NULL, cfg->rootdir, NULL, MS_REMOUNT | MS_BIND | MS_NODEV, NULL) < 0)
		return fail("remount %s nodev", cfg->rootdir);
	if (chdir(cfg->rootdir) < 0)
		return fail("chdir %s", cfg->rootdir);
	/* pivot_root(".", "."): the old root ends up stacked on "." and is detached. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return fail("pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		return fail("detach old root");
	if (chdir("/") < 0)
		return fail("chdir /");

	if (mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555) < 0)
		return -1;
	if (mount_at("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555) < 0)
		log_warn("container: %s (continuing)", setup_error);
	if (make_dev() < 0)
		return -1;
	if (make_etc(cfg) < 0)
		return -1;
	if (cfg->trust_len && make_trust(cfg) < 0)
		return -1;
	if (mount_at("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777) < 0)
		return -1;
	if (mount_volumes(cfg) < 0)
		return -1;
	if (sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
		return fail("sethostname");
	return 0;
}

static void init_main(const struct container_config *cfg, int ready_fd)
{
	prctl(PR_SET_NAME, "boxlite-init", 0, 0, 0);
	umask(0);
	int rc = setup(cfg);
	umask(022);
	if (rc < 0) {
		(void)write_all(ready_fd, setup_error, strlen(setup_error));
		_exit(1);
	}
	(void)write_all(ready_fd, "ok", 2);
	/* Nothing of the agent's (signalfd, log, stdio) stays open in here. */
	syscall(SYS_close_range, 0u, ~0u, 0u);

	/* PID 1 of the container: reap orphans, forever. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_SETMASK, &chld, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		sigwaitinfo(&chld, NULL);
	}
}

/* ---- the main process as the container init ---- */

struct main_ctx {
	const struct container_config *cfg;
	int ready_w; /* "ok" or the setup error, to the agent */
	int go_r;    /* from the agent: the pty number (u32), UINT32_MAX for none */
	int tty;
};

/* exec_spec.prepare of the main process: runs in the fork that is PID 1 of
 * the new pid namespace, builds the container, then carries on as an
 * ordinary execution (user, cwd, limits, capabilities, execve): the image's
 * command becomes the container's init, as in docker. */
static int main_prepare(void *arg, unsigned *pts, char *err, size_t errlen)
{
	struct main_ctx *x = arg;
	/* A workload, unlike the agent: the OOM killer may take it. Written while
	 * /proc is still the agent's. */
	int ofd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (ofd >= 0) {
		if (write(ofd, "0", 1) != 1)
			(void)0; /* lowering our own exemption is always allowed */
		close(ofd);
	}
	prctl(PR_SET_NAME, "boxlite-main", 0, 0, 0);
	umask(0);
	int rc = setup(x->cfg);
	umask(022);
	if (rc < 0) {
		(void)write_all(x->ready_w, setup_error, strlen(setup_error));
		snprintf(err, errlen, "container setup: %s", setup_error);
		return -1;
	}
	(void)write_all(x->ready_w, "ok", 2);
	close(x->ready_w);
	uint32_t n = UINT32_MAX;
	size_t got = 0;
	while (got < sizeof(n)) {
		ssize_t r = read(x->go_r, (char *)&n + got, sizeof(n) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "the agent did not complete the container start");
			return -1;
		}
		got += (size_t)r;
	}
	close(x->go_r);
	if (x->tty) {
		if (n == UINT32_MAX) {
			snprintf(err, errlen, "allocate a pty in the container failed");
			return -1;
		}
		*pts = n;
	}
	return 0;
}

/* ---- in the agent ---- */

static int open_ns(pid_t pid, const char *name)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Reads the init's setup report ("ok" or an error) into msg, bounded. */
static void wait_ready(int fd, pid_t pid, char *msg, size_t cap)
{
	size_t got = 0;
	uint64_t deadline = now_ms() + READY_TIMEOUT_MS;
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		if (now >= deadline || poll(&pf, 1, (int)(deadline - now)) == 0) {
			snprintf(msg, cap, "container init did not report within %d ms", READY_TIMEOUT_MS);
			kill(pid, SIGKILL);
			return;
		}
		ssize_t r = read(fd, msg + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == cap - 1)
			break;
	}
	msg[got] = '\0';
	if (!got)
		snprintf(msg, cap, "container init died during setup");
}

/* The init's root, taken while it is still the one pivot_root made (the root
 * setns gives an execution): the agent reads users through it (exec.c). */
static int open_root(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static int open_container_ns(struct container *c, pid_t pid)
{
	c->init_pid = pid;
	c->ns_ipc = open_ns(pid, "ipc");
	c->ns_uts = open_ns(pid, "uts");
	c->ns_mnt = open_ns(pid, "mnt");
	c->root_fd = open_root(pid); /* optional: without it executions read users themselves */
	if (c->ns_ipc < 0 || c->ns_uts < 0 || c->ns_mnt < 0) {
		snprintf(c->error, sizeof(c->error), "open namespaces of %d: %s", (int)pid, strerror(errno));
		container_kill(c);
		return -1;
	}
	return 0;
}

int container_start_main(const struct container_config *cfg, struct container *c, struct exec_spec *s,
			 struct exec_child *out, struct exec_failure *f)
{
	c->init_pid = -1;
	c->ns_ipc = c->ns_uts = c->ns_mnt = c->root_fd = -1;
	c->error[0] = '\0';
	int rp[2] = { -1, -1 }, gp[2] = { -1, -1 };
	int tty = (s->m->u.exec.flags & PROTO_EXEC_TTY) != 0;
	if (pipe2(rp, O_CLOEXEC) < 0 || pipe2(gp, O_CLOEXEC) < 0) {
		f->code = 125;
		snprintf(f->message, sizeof(f->message), "pipe: %s", strerror(errno));
		goto fail;
	}
	/* The fork below becomes PID 1 of a new pid namespace, and every later
	 * child of the agent (the executions) lands in it too. */
	if (unshare(CLONE_NEWPID) < 0) {
		f->code = 125;
		snprintf(f->message, sizeof(f->message), "unshare pid namespace: %s", strerror(errno));
		goto fail;
	}
	struct main_ctx x = { .cfg = cfg, .ready_w = rp[1], .go_r = gp[0], .tty = tty };
	s->prepare = main_prepare;
	s->prepare_arg = &x;
	if (exec_spawn(s, out, f) < 0)
		goto fail;
	close(rp[1]);
	close(gp[0]);
	rp[1] = gp[0] = -1;

	char msg[256];
	wait_ready(rp[0], out->pid, msg, sizeof(msg));
	close(rp[0]);
	rp[0] = -1;
	if (strcmp(msg, "ok") != 0) {
		/* The child reports its failure on the status pipe (EXIT reason 3). */
		snprintf(c->error, sizeof(c->error), "%s", msg);
		close(gp[1]);
		return 0;
	}
	/* The namespaces are opened while the child still waits for the go below:
	 * once released it may exec and exit at once, and a dead process's
	 * namespaces can no longer be opened. Without them no execution could join
	 * the container, so the child is then not released: it reports the failure
	 * on its status pipe (reason 3) instead of running with the box unusable. */
	c->ns_ipc = open_ns(out->pid, "ipc");
	c->ns_uts = open_ns(out->pid, "uts");
	c->ns_mnt = open_ns(out->pid, "mnt");
	c->root_fd = open_root(out->pid);
	if (c->ns_ipc < 0 || c->ns_uts < 0 || c->ns_mnt < 0) {
		snprintf(c->error, sizeof(c->error), "open namespaces of %d: %s", (int)out->pid, strerror(errno));
		container_kill(c); /* closes the fds; init_pid is not set yet, so nothing is killed */
		close(gp[1]);
		return 0;
	}
	uint32_t pts = UINT32_MAX;
	if (tty) {
		char ptmx[64];
		unsigned n = 0;
		int unlock = 0;
		snprintf(ptmx, sizeof(ptmx), "/proc/%d/root/dev/pts/ptmx", (int)out->pid);
		int master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
		int dup_out = -1;
		if (master >= 0 && ioctl(master, TIOCSPTLCK, &unlock) == 0 && ioctl(master, TIOCGPTN, &n) == 0 &&
		    exec_set_winsize(master, s->m->u.exec.rows, s->m->u.exec.cols) == 0 &&
		    (dup_out = fcntl(master, F_DUPFD_CLOEXEC, 3)) >= 0) {
			out->stdin_fd = master;
			out->stdout_fd = dup_out;
			set_nonblock(dup_out);
			pts = n;
		} else {
			log_warn("main process: allocate a pty (%s): %s", ptmx, strerror(errno));
			if (master >= 0)
				close(master);
		}
	} else {
		pts = 0;
	}
	(void)write_all(gp[1], &pts, sizeof(pts));
	close(gp[1]);
	c->init_pid = out->pid;
	return 0;
fail:
	for (int *fd = rp; fd < rp + 2; fd++)
		if (*fd >= 0)
			close(*fd);
	for (int *fd = gp; fd < gp + 2; fd++)
		if (*fd >= 0)
			close(*fd);
	return -1;
}

int container_start(const struct container_config *cfg, struct container *c)
{
	c->init_pid = -1;
	c->ns_ipc = c->ns_uts = c->ns_mnt = c->root_fd = -1;
	c->error[0] = '\0';

	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(c->error, sizeof(c->error), "pipe: %s", strerror(errno));
		return -1;
	}
	/* The next child becomes PID 1 of a new pid namespace, and so do all
	 * later children of the agent land in it, while the agent stays out. */
	if (unshare(CLONE_NEWPID) < 0) {
		snprintf(c->error, sizeof(c->error), "unshare pid namespace: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(c->error, sizeof(c->error), "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		init_main(cfg, p[1]);
		_exit(1);
	}
	close(p[1]);

	char msg[256];
	wait_ready(p[0], pid, msg, sizeof(msg));
	close(p[0]);
	if (strcmp(msg, "ok") != 0) {
		snprintf(c->error, sizeof(c->error), "%s", msg);
		return -1; /* the init exits; the agent's reaper collects it */
	}
	return open_container_ns(c, pid);
}

void container_kill(struct container *c)
{
	if (c->init_pid > 0)
		kill(c->init_pid, SIGKILL);
	c->init_pid = -1;
	int *fds[] = { &c->ns_ipc, &c->ns_uts, &c->ns_mnt, &c->root_fd };
	for (size_t i = 0; i < 4; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}
