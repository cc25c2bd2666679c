#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define MAX_GROUPS 256

/* Docker's default capability set (DEFAULT_CAPABILITIES in src/runtime/
 * capabilities.ts), unless boxlite.caps= replaced it; everything else leaves
 * the bounding set. */
static const int kept_caps[] = {
	0,  /* CHOWN */
	1,  /* DAC_OVERRIDE */
	3,  /* FOWNER */
	4,  /* FSETID */
	5,  /* KILL */
	6,  /* SETGID */
	7,  /* SETUID */
	8,  /* SETPCAP */
	10, /* NET_BIND_SERVICE */
	13, /* NET_RAW */
	18, /* SYS_CHROOT */
	27, /* MKNOD */
	29, /* AUDIT_WRITE */
	31, /* SETFCAP */
};

static unsigned long long cap_mask;
static int cap_mask_set;
static struct exec_limit limits[EXEC_MAX_LIMITS];
static int nlimits;

void exec_set_capabilities(unsigned long long mask)
{
	cap_mask = mask;
	cap_mask_set = 1;
}

void exec_set_limits(const struct exec_limit *l, int n)
{
	nlimits = n < EXEC_MAX_LIMITS ? n : EXEC_MAX_LIMITS;
	memcpy(limits, l, (size_t)nlimits * sizeof(*l));
}

static const char *limit_name(int resource)
{
	switch (resource) {
	case RLIMIT_NOFILE: return "RLIMIT_NOFILE";
	case RLIMIT_FSIZE: return "RLIMIT_FSIZE";
	case RLIMIT_NPROC: return "RLIMIT_NPROC";
	case RLIMIT_AS: return "RLIMIT_AS";
	case RLIMIT_CPU: return "RLIMIT_CPU";
	default: return "?";
	}
}

/* ---- user lookup (container /etc/passwd and /etc/group) ---- */

struct ids {
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_GROUPS];
	int ngroups;
};

/* Decimal id in [0, 2^31); returns 1 if s is one. */
static int parse_id(const char *s, unsigned long *out)
{
	if (!*s)
		return 0;
	unsigned long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		v = v * 10u + (unsigned long)(*p - '0');
		if (v > 0x7fffffffUL)
			return 0;
	}
	*out = v;
	return 1;
}

/* Splits a colon-separated line in place into at most max fields. */
static int split_fields(char *line, char **f, int max)
{
	int n = 0;
	line[strcspn(line, "\n")] = '\0';
	while (n < max) {
		f[n++] = line;
		char *c = strchr(line, ':');
		if (!c)
			break;
		*c = '\0';
		line = c + 1;
	}
	return n;
}

/* First passwd entry whose name is `arg`, or whose uid is `arg` when numeric. */
static int find_passwd(const char *arg, char *name, size_t namecap, uid_t *uid, gid_t *gid)
{
	FILE *fp = fopen("/etc/passwd", "re");
	if (!fp)
		return 0;
	unsigned long num, v1, v2;
	int numeric = parse_id(arg, &num);
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (!found && getline(&line, &cap, fp) >= 0) {
		char *f[7];
		if (split_fields(line, f, 7) < 4 || !parse_id(f[2], &v1) || !parse_id(f[3], &v2))
			continue;
		if (strcmp(f[0], arg) == 0 || (numeric && v1 == num)) {
			snprintf(name, namecap, "%s", f[0]);
			*uid = (uid_t)v1;
			*gid = (gid_t)v2;
			found = 1;
		}
	}
	free(line);
	fclose(fp);
	return found;
}

/* With want_group: the gid of the group named (or numbered) `want_group`.
 * Otherwise: collects the groups that list `member` into ids->groups. */
static int scan_groups(const char *want_group, const char *member, struct ids *ids, gid_t *gid_out)
{
	FILE *fp = fopen("/etc/group", "re");
	if (!fp)
		return 0;
	unsigned long num, v;
	int numeric = want_group && parse_id(want_group, &num);
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (getline(&line, &cap, fp) >= 0) {
		char *f[4];
		int n = split_fields(line, f, 4);
		if (n < 3 || !parse_id(f[2], &v))
			continue;
		if (want_group) {
			if (strcmp(f[0], want_group) == 0 || (numeric && v == num)) {
				*gid_out = (gid_t)v;
				found = 1;
				break;
			}
			continue;
		}
		if (n < 4)
			continue;
		for (char *m = f[3], *next; m && *m; m = next) {
			next = strchr(m, ',');
			if (next)
				*next++ = '\0';
			if (strcmp(m, member) == 0 && ids->ngroups < MAX_GROUPS) {
				ids->groups[ids->ngroups++] = (gid_t)v;
				break;
			}
		}
	}
	free(line);
	fclose(fp);
	return found;
}

/* "", "uid", "uid:gid", "name", "name:group" (docs/protocol.md, EXEC fields).
 * Like runc: an explicit group replaces the supplementary groups; otherwise a
 * named user gets the groups that list it. */
static int resolve_user(const char *spec, struct ids *ids, char *err, size_t errlen)
{
	char buf[512];
	if (fmt(buf, sizeof(buf), "%s", spec) < 0) {
		snprintf(err, errlen, "user name too long");
		return -1;
	}
	char *group = strchr(buf, ':');
	if (group)
		*group++ = '\0';
	const char *user = buf[0] ? buf : "0";

	char name[256];
	unsigned long num;
	memset(ids, 0, sizeof(*ids));
	int matched = find_passwd(user, name, sizeof(name), &ids->uid, &ids->gid);
	if (!matched) {
		if (!parse_id(user, &num)) {
			snprintf(err, errlen, "unable to find user %.200s: no matching entries in passwd file", user);
			return -1;
		}
		ids->uid = (uid_t)num;
		ids->gid = 0;
	}
	if (group && *group) {
		gid_t gid;
		if (scan_groups(group, NULL, ids, &gid))
			ids->gid = gid;
		else if (parse_id(group, &num))
			ids->gid = (gid_t)num;
		else {
			snprintf(err, errlen, "unable to find group %.200s: no matching entries in group file", group);
			return -1;
		}
	} else if (matched) {
		scan_groups(NULL, name, ids, NULL);
	}
	return 0;
}

/* ---- the child ---- */

static void child_fail(int status_fd, int code, const char *f, ...) __attribute__((noreturn, format(printf, 3, 4)));
static void child_fail(int status_fd, int code, const char *f, ...)
{
	struct exec_failure rec;
	memset(&rec, 0, sizeof(rec));
	rec.code = code;
	va_list ap;
	va_start(ap, f);
	vsnprintf(rec.message, sizeof(rec.message), f, ap);
	va_end(ap);
	(void)write_all(status_fd, &rec, sizeof(rec));
	_exit(code);
}

static int drop_bounding_caps(void)
{
	for (int cap = 0; cap < 64; cap++) {
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
			break; /* past the kernel's last capability */
		int keep = 0;
		if (cap_mask_set)
			keep = (cap_mask >> cap) & 1;
		else
			for (size_t i = 0; i < sizeof(kept_caps) / sizeof(kept_caps[0]); i++)
				keep |= kept_caps[i] == cap;
		if (!keep && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			return -1;
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return 0;
}

/* execvp() with the PATH of envp (not of our own environment), and without
 * glibc's fallback of running ENOEXEC files with /bin/sh, so that behaviour
 * does not depend on the libc. Returns the errno that explains the failure. */
static int exec_path(char **argv, char **envp)
{
	const char *file = argv[0];
	if (!*file)
		return ENOENT;
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return errno;
	}
	const char *path = "/usr/local/bin:/usr/bin:/bin";
	for (char **e = envp; *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5;
	size_t flen = strlen(file);
	int seen_eacces = 0;
	for (const char *p = path;; p++) {
		const char *end = strchr(p, ':');
		size_t dlen = end ? (size_t)(end - p) : strlen(p);
		char buf[4096];
		if (dlen + 1 + flen + 1 <= sizeof(buf)) {
			memcpy(buf, p, dlen);
			size_t off = dlen;
			if (dlen)
				buf[off++] = '/'; /* an empty PATH entry means the cwd */
			memcpy(buf + off, file, flen + 1);
			execve(buf, argv, envp);
			if (errno == EACCES)
				seen_eacces = 1;
			else if (errno != ENOENT && errno != ENOTDIR)
				return errno;
		}
		if (!end)
			break;
		p = end;
	}
	return seen_eacces ? EACCES : ENOENT;
}

/* A toolbox name: ^[a-z0-9_-]+$ (no path, no dots). */
static int valid_tool_name(const char *n)
{
	if (!*n || strlen(n) > 64)
		return 0;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			return 0;
	return 1;
}

struct child_args {
	const struct exec_spec *s;
	char **argv, **envp;
	const char *user, *cwd;
	int tty, tool;
	unsigned pts;
	int in_fd, out_fd, err_fd; /* child ends (pipes) */
	int status_fd;
};

static void run_child(const struct child_args *a) __attribute__((noreturn));
static void run_child(const struct child_args *a)
{
	int sfd = a->status_fd;

	/* The agent blocks some signals for its signalfd and ignores SIGPIPE;
	 * none of that may leak into the workload. */
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	unsigned pts = a->pts;
	if (a->s->prepare) {
		char err[256] = "";
		if (a->s->prepare(a->s->prepare_arg, &pts, err, sizeof(err)) < 0)
			child_fail(sfd, 125, "%s", err);
	}

	/* A toolbox program is opened here, before joining the container, so the
	 * image can neither see nor substitute it; it runs from the fd below. */
	int tool_fd = -1;
	if (a->tool) {
		if (a->s->tools_fd < 0)
			child_fail(sfd, 127, "tool not found: %s (the agent has no toolbox)", a->argv[0]);
		tool_fd = openat(a->s->tools_fd, a->argv[0], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (tool_fd < 0)
			child_fail(sfd, 127, "tool not found: %s", a->argv[0]);
	}

	if (a->s->ns_fds) {
		/* The agent is exempt from the OOM killer (-1000); workloads are not.
		 * Written before setns: /proc is still the agent's here. */
		int ofd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
		if (ofd >= 0) {
			if (write(ofd, "0", 1) != 1)
				(void)0; /* raising it is always allowed; nothing to report */
			close(ofd);
		}
		static const int types[3] = { CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNS };
		for (int i = 0; i < 3; i++)
			if (setns(a->s->ns_fds[i], types[i]) < 0)
				child_fail(sfd, 125, "cannot enter the container: setns: %s", strerror(errno));
	}
	if (setsid() < 0)
		child_fail(sfd, 125, "setsid: %s", strerror(errno));

	if (a->tty) {
		char path[32];
		snprintf(path, sizeof(path), "/dev/pts/%u", pts);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			child_fail(sfd, 125, "open %s: %s", path, strerror(errno));
		if (ioctl(fd, TIOCSCTTY, 0) < 0)
			child_fail(sfd, 125, "set controlling terminal: %s", strerror(errno));
		for (int i = 0; i < 3; i++)
			if (dup2(fd, i) < 0)
				child_fail(sfd, 125, "dup2: %s", strerror(errno));
	} else {
		if (dup2(a->in_fd, 0) < 0 || dup2(a->out_fd, 1) < 0 || dup2(a->err_fd, 2) < 0)
			child_fail(sfd, 125, "dup2: %s", strerror(errno));
	}
	/* Whatever else is open (e.g. inherited by a host-mode agent) closes on exec. */
	syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
	umask(022);

	struct ids ids;
	int have_ids = 0;
	if (a->s->switch_user) {
		char err[300];
		if (resolve_user(a->user, &ids, err, sizeof(err)) < 0)
			child_fail(sfd, 125, "%s", err);
		have_ids = 1;
	}
	const char *cwd = *a->cwd ? a->cwd : "/";
	if (chdir(cwd) < 0)
		child_fail(sfd, 125, "unable to change to working directory %s: %s", cwd, strerror(errno));
	/* Before the capabilities go: raising a hard limit past the agent's
	 * needs CAP_SYS_RESOURCE. */
	for (int i = 0; i < nlimits; i++) {
		struct rlimit rl = { .rlim_cur = (rlim_t)limits[i].value, .rlim_max = (rlim_t)limits[i].value };
		if (setrlimit(limits[i].resource, &rl) < 0)
			child_fail(sfd, 125, "set resource limit %s to %llu: %s", limit_name(limits[i].resource), limits[i].value,
				   strerror(errno));
	}
	if (a->s->drop_caps && drop_bounding_caps() < 0)
		child_fail(sfd, 125, "drop capabilities: %s", strerror(errno));
	if (have_ids) {
		if (setgroups((size_t)ids.ngroups, ids.groups) < 0)
			child_fail(sfd, 125, "setgroups: %s", strerror(errno));
		if (setgid(ids.gid) < 0)
			child_fail(sfd, 125, "setgid %u: %s", (unsigned)ids.gid, strerror(errno));
		if (setuid(ids.uid) < 0)
			child_fail(sfd, 125, "setuid %u: %s", (unsigned)ids.uid, strerror(errno));
	}

	int e;
	if (tool_fd >= 0) {
		syscall(SYS_execveat, tool_fd, "", a->argv, a->envp, AT_EMPTY_PATH);
		e = errno;
	} else {
		e = exec_path(a->argv, a->envp);
	}
	if (e == ENOENT || e == ENOTDIR)
		child_fail(sfd, 127, "command not found: %s", a->argv[0]);
	if (e == EACCES || e == EPERM || e == EISDIR)
		child_fail(sfd, 126, "permission denied: %s", a->argv[0]);
	if (e == ENOEXEC)
		child_fail(sfd, 126, "exec format error: %s", a->argv[0]);
	child_fail(sfd, 126, "cannot execute %s: %s", a->argv[0], strerror(e));
}

/* ---- in the agent ---- */

static void failure(struct exec_failure *f, int code, const char *fmtstr, ...) __attribute__((format(printf, 3, 4)));
static void failure(struct exec_failure *f, int code, const char *fmtstr, ...)
{
	f->code = code;
	va_list ap;
	va_start(ap, fmtstr);
	vsnprintf(f->message, sizeof(f->message), fmtstr, ap);
	va_end(ap);
}

static char *dup_bytes(struct proto_bytes b)
{
	if (memchr(b.ptr, '\0', b.len))
		return NULL;
	char *s = malloc((size_t)b.len + 1);
	if (s) {
		if (b.len)
			memcpy(s, b.ptr, b.len);
		s[b.len] = '\0';
	}
	return s;
}

static void free_list(char **l)
{
	if (!l)
		return;
	for (char **p = l; *p; p++)
		free(*p);
	free(l);
}

static char **build_list(const struct proto_strlist *l)
{
	char **out = calloc((size_t)l->count + 1, sizeof(char *));
	if (!out)
		return NULL;
	struct proto_bytes item;
	uint32_t pos = 0, i = 0;
	while (i < l->count && proto_strlist_next(l, &pos, &item)) {
		out[i] = dup_bytes(item);
		if (!out[i]) {
			free_list(out);
			return NULL;
		}
		i++;
	}
	return out;
}

int exec_set_winsize(int fd, uint16_t rows, uint16_t cols)
{
	struct winsize ws = { .ws_row = rows ? rows : 24, .ws_col = cols ? cols : 80 };
	return ioctl(fd, TIOCSWINSZ, &ws);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int exec_spawn(const struct exec_spec *s, struct exec_child *out, struct exec_failure *f)
{
	const struct proto_msg *m = s->m;
	int tty = (m->u.exec.flags & PROTO_EXEC_TTY) != 0;
	int tool = (m->u.exec.flags & PROTO_EXEC_TOOL) != 0;
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, st[2] = { -1, -1 };
	int master = -1, master_out = -1;
	unsigned pts = 0;
	int rc = -1;

	char **argv = build_list(&m->u.exec.argv);
	char **envp = build_list(&m->u.exec.env);
	char *user = dup_bytes(m->u.exec.user);
	char *cwd = dup_bytes(m->u.exec.cwd);
	if (!argv || !envp || !user || !cwd) {
		failure(f, 125, "invalid EXEC: strings must not contain NUL bytes");
		goto out;
	}
	if (tool && !valid_tool_name(argv[0])) {
		failure(f, 127, "invalid tool name: %.100s", argv[0]);
		goto out;
	}

	if (tty && s->prepare) {
		/* the master is opened by the caller once prepare made the devpts */
	} else if (tty) {
		int unlock = 0;
		master = open(s->ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
		if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &pts) < 0 ||
		    exec_set_winsize(master, m->u.exec.rows, m->u.exec.cols) < 0 ||
		    (master_out = fcntl(master, F_DUPFD_CLOEXEC, 3)) < 0) {
			failure(f, 125, "allocate a pty (%s): %s", s->ptmx, strerror(errno));
			goto out;
		}
	} else if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		failure(f, 125, "pipe: %s", strerror(errno));
		goto out;
	}
	if (!tty) {
		/* Bigger pipes: fewer wake-ups per MiB (best effort). */
		fcntl(outp[0], F_SETPIPE_SZ, 256 * 1024);
		fcntl(errp[0], F_SETPIPE_SZ, 256 * 1024);
	}
	if (pipe2(st, O_CLOEXEC) < 0) {
		failure(f, 125, "pipe: %s", strerror(errno));
		goto out;
	}

	pid_t pid = fork();
	if (pid < 0) {
		failure(f, 125, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		struct child_args a = {
			.s = s, .argv = argv, .envp = envp, .user = user, .cwd = cwd, .tty = tty, .tool = tool, .pts = pts,
			.in_fd = in[0], .out_fd = outp[1], .err_fd = errp[1], .status_fd = st[1],
		};
		run_child(&a);
	}

	out->pid = pid;
	out->status_fd = st[0];
	st[0] = -1;
	if (tty) {
		out->stdin_fd = master;
		out->stdout_fd = master_out;
		out->stderr_fd = -1;
		master = master_out = -1;
	} else {
		out->stdin_fd = in[1];
		out->stdout_fd = outp[0];
		out->stderr_fd = errp[0];
		in[1] = outp[0] = errp[0] = -1;
	}
	set_nonblock(out->stdin_fd);
	set_nonblock(out->stdout_fd);
	if (out->stderr_fd >= 0)
		set_nonblock(out->stderr_fd);
	set_nonblock(out->status_fd);
	rc = 0;
out:
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&outp[0]);
	close_fd(&outp[1]);
	close_fd(&errp[0]);
	close_fd(&errp[1]);
	close_fd(&st[0]);
	close_fd(&st[1]);
	close_fd(&master);
	close_fd(&master_out);
	free_list(argv);
	free_list(envp);
	free(user);
	free(cwd);
	return rc;
}

int exec_read_status(int fd, struct exec_failure *f)
{
	for (;;) {
		ssize_t r = read(fd, f, sizeof(*f));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -1 : 0;
		if (r == 0)
			return 0;
		if ((size_t)r < sizeof(f->code)) {
			f->code = 125;
			snprintf(f->message, sizeof(f->message), "spawn failed");
		}
		f->message[sizeof(f->message) - 1] = '\0';
		return 1;
	}
}

uint32_t exec_namespace_pid(pid_t pid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_small_file(path, buf, sizeof(buf)) < 0)
		return (uint32_t)pid;
	char *line = strstr(buf, "\nNSpid:");
	if (!line)
		return (uint32_t)pid;
	line += 7;
	char *end = strchr(line, '\n');
	if (end)
		*end = '\0';
	unsigned long last = (unsigned long)pid;
	char *p = line;
	while (*p) {
		char *next;
		unsigned long v = strtoul(p, &next, 10);
		if (next == p)
			break;
		last = v;
		p = next;
	}
	return (uint32_t)last;
}
