#include "exec.h"

#include <errno.h>
#include <fcntl.h>
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
#include <sys/types.h>
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

/* See trim_agent_caps: 1 once the agent trimmed its own bounding set. */
static int agent_caps_trimmed;

void exec_set_capabilities(unsigned long long mask)
{
	if (agent_caps_trimmed == 1) {
		/* A new policy after executions ran (not done today: the policy comes
		 * from the boot words before any). Trimming again only narrows the
		 * set; what is already gone stays gone. */
		agent_caps_trimmed = 0;
		log_warn("capability policy changed after the agent trimmed its bounding set");
	}
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

/* Lines of /etc/passwd or /etc/group: read from the file (fp) or from the
 * agent's cached copy (mem, a scratch copy that is split in place). */
struct db {
	FILE *fp;
	char *line; /* getline's buffer */
	size_t cap;
	char *pos, *end;
};

static int db_open_file(struct db *d, const char *path)
{
	memset(d, 0, sizeof(*d));
	d->fp = fopen(path, "re");
	return d->fp != NULL;
}

/* A missing file (data NULL) reads as an empty one, as fopen's failure did. */
static int db_open_mem(struct db *d, const char *data, size_t len)
{
	memset(d, 0, sizeof(*d));
	if (!data)
		return 0;
	d->pos = malloc(len + 1);
	if (!d->pos)
		return 0;
	memcpy(d->pos, data, len);
	d->pos[len] = '\0';
	d->line = d->pos; /* freed by db_close */
	d->end = d->pos + len;
	return 1;
}

/* The next line (without its newline; NULL at the end). Like getline, a NUL
 * byte ends what the field splitting sees of a line. */
static char *db_next(struct db *d)
{
	if (d->fp)
		return getline(&d->line, &d->cap, d->fp) >= 0 ? d->line : NULL;
	if (d->pos >= d->end)
		return NULL;
	char *l = d->pos;
	char *nl = memchr(l, '\n', (size_t)(d->end - l));
	if (nl) {
		*nl = '\0';
		d->pos = nl + 1;
	} else {
		d->pos = d->end;
	}
	return l;
}

static void db_close(struct db *d)
{
	free(d->line);
	if (d->fp)
		fclose(d->fp);
}

/* First passwd entry whose name is `arg`, or whose uid is `arg` when numeric. */
static int find_passwd(struct db *d, const char *arg, char *name, size_t namecap, uid_t *uid, gid_t *gid)
{
	unsigned long num = 0, v1, v2;
	int numeric = parse_id(arg, &num);
	char *line;
	int found = 0;
	while (!found && (line = db_next(d)) != NULL) {
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
	return found;
}

/* With want_group: the gid of the group named (or numbered) `want_group`.
 * Otherwise: collects the groups that list `member` into ids->groups. */
static int scan_groups(struct db *d, const char *want_group, const char *member, struct ids *ids, gid_t *gid_out)
{
	unsigned long num = 0, v;
	int numeric = want_group && parse_id(want_group, &num);
	char *line;
	int found = 0;
	while ((line = db_next(d)) != NULL) {
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
	return found;
}

/* Where resolve_user reads the databases: the files (NULL), or the cache. */
struct db_source {
	const char *passwd, *group; /* NULL: that file is missing */
	size_t passwd_len, group_len;
};

static int db_open(struct db *d, const struct db_source *src, int group)
{
	if (!src)
		return db_open_file(d, group ? "/etc/group" : "/etc/passwd");
	return group ? db_open_mem(d, src->group, src->group_len) : db_open_mem(d, src->passwd, src->passwd_len);
}

/* "", "uid", "uid:gid", "name", "name:group" (docs/protocol.md, EXEC fields).
 * Like runc: an explicit group replaces the supplementary groups; otherwise a
 * named user gets the groups that list it. */
static int resolve_user(const struct db_source *src, const char *spec, struct ids *ids, char *err, size_t errlen)
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
	struct db d;
	memset(ids, 0, sizeof(*ids));
	int matched = 0;
	if (db_open(&d, src, 0)) {
		matched = find_passwd(&d, user, name, sizeof(name), &ids->uid, &ids->gid);
		db_close(&d);
	}
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
		int found = 0;
		if (db_open(&d, src, 1)) {
			found = scan_groups(&d, group, NULL, ids, &gid);
			db_close(&d);
		}
		if (found)
			ids->gid = gid;
		else if (parse_id(group, &num))
			ids->gid = (gid_t)num;
		else {
			snprintf(err, errlen, "unable to find group %.200s: no matching entries in group file", group);
			return -1;
		}
	} else if (matched) {
		if (db_open(&d, src, 1)) {
			scan_groups(&d, NULL, name, ids, NULL);
			db_close(&d);
		}
	}
	return 0;
}

/* ---- the agent's copy of the container's passwd and group ---- */

/* Every execution used to read and parse both files in its child; the agent
 * now keeps them (and the users resolved from them) and only checks, per
 * execution, that neither file changed: same inode, size, mtime and ctime,
 * opened through the executions' root exactly as the child would see it
 * (RESOLVE_IN_ROOT: absolute symlinks stay inside the container). */

#ifndef RESOLVE_IN_ROOT
#define RESOLVE_IN_ROOT 0x10
#endif

struct open_how_compat {
	uint64_t flags, mode, resolve;
};

#define DB_MAX_BYTES (16u << 20)

struct db_file {
	int loaded;  /* the fields below describe the file as last seen */
	int missing; /* it did not open: reads as empty */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim, ctim;
	char *data;
	size_t len;
};

static struct db_file db_passwd, db_group;
static int db_root = -1; /* the root_fd the cache belongs to */
static unsigned db_generation;

/* Resolved users, valid while db_generation is unchanged. */
#define USER_CACHE_SLOTS 8
static struct user_slot {
	unsigned generation; /* 0: empty (generations start at 1) */
	char spec[128];
	int rc;
	char err[300];
	struct ids ids;
} user_cache[USER_CACHE_SLOTS];
static unsigned user_cache_next;

static int same_time(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

/* 0: unchanged, 1: (re)loaded, -1: cannot tell from here (the child reads it). */
static int db_refresh(struct db_file *f, int root_fd, const char *rel)
{
	/* Non-blocking: a FIFO in its place must not stall the agent. */
	struct open_how_compat how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, .resolve = RESOLVE_IN_ROOT };
	int fd = (int)syscall(SYS_openat2, root_fd, rel, &how, sizeof(how));
	if (fd < 0) {
		if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != EACCES)
			return -1; /* ENOSYS (kernel < 5.6), EAGAIN/EXDEV (a rename race), ... */
		if (f->loaded && f->missing)
			return 0;
		free(f->data);
		memset(f, 0, sizeof(*f));
		f->loaded = f->missing = 1;
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (unsigned long long)st.st_size > DB_MAX_BYTES) {
		close(fd);
		return -1;
	}
	if (f->loaded && !f->missing && f->dev == st.st_dev && f->ino == st.st_ino && f->size == st.st_size &&
	    same_time(f->mtim, st.st_mtim) && same_time(f->ctim, st.st_ctim)) {
		close(fd);
		return 0;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *data = malloc(cap);
	for (;;) {
		if (!data)
			break;
		if (len == cap) {
			/* It grew while we read: read on, bounded. */
			char *bigger = cap < DB_MAX_BYTES ? realloc(data, cap * 2) : NULL;
			if (!bigger) {
				free(data);
				data = NULL;
				break;
			}
			data = bigger;
			cap *= 2;
		}
		ssize_t r = read(fd, data + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(data);
			data = NULL;
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (!data)
		return -1;
	free(f->data);
	f->loaded = 1;
	f->missing = 0;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtim = st.st_mtim;
	f->ctim = st.st_ctim;
	f->data = data;
	f->len = len;
	return 1;
}

/* Resolves spec for an execution whose root is root_fd. Returns 0 (ids
 * filled) or 1 (err filled: the child reports it where it would have found
 * it), -1 when the agent cannot read the files (the child does, as before). */
static int resolve_user_cached(int root_fd, const char *spec, struct ids *ids, char *err, size_t errlen)
{
	if (root_fd < 0)
		return -1;
	if (root_fd != db_root) {
		free(db_passwd.data);
		free(db_group.data);
		memset(&db_passwd, 0, sizeof(db_passwd));
		memset(&db_group, 0, sizeof(db_group));
		db_root = root_fd;
		db_generation++;
	}
	int a = db_refresh(&db_passwd, root_fd, "etc/passwd");
	int b = a < 0 ? -1 : db_refresh(&db_group, root_fd, "etc/group");
	if (a < 0 || b < 0) {
		db_passwd.loaded = db_group.loaded = 0; /* reload once readable again */
		db_generation++;
		return -1;
	}
	if (a || b || db_generation == 0)
		db_generation++;
	int cacheable = strlen(spec) < sizeof(user_cache[0].spec);
	for (int i = 0; cacheable && i < USER_CACHE_SLOTS; i++) {
		struct user_slot *u = &user_cache[i];
		if (u->generation == db_generation && strcmp(u->spec, spec) == 0) {
			if (u->rc < 0) {
				snprintf(err, errlen, "%s", u->err);
				return 1;
			}
			*ids = u->ids;
			return 0;
		}
	}
	struct db_source src = {
		.passwd = db_passwd.missing ? NULL : db_passwd.data,
		.passwd_len = db_passwd.len,
		.group = db_group.missing ? NULL : db_group.data,
		.group_len = db_group.len,
	};
	char e[300] = "";
	int rc = resolve_user(&src, spec, ids, e, sizeof(e));
	if (cacheable) {
		struct user_slot *u = &user_cache[user_cache_next++ % USER_CACHE_SLOTS];
		u->generation = db_generation;
		snprintf(u->spec, sizeof(u->spec), "%s", spec);
		u->rc = rc;
		snprintf(u->err, sizeof(u->err), "%s", e);
		u->ids = *ids;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s", e);
		return 1;
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

/* The bounding set only limits what an execve can grant, so the agent (which
 * never execs itself) can trim its own once: every child inherits the trimmed
 * set and spends no prctl per execution. agent_caps_trimmed: 1 done, -1
 * failed (each child trims its own, as before), 0 not tried yet. */
static void trim_agent_caps(void)
{
	if (agent_caps_trimmed)
		return;
	agent_caps_trimmed = drop_bounding_caps() == 0 ? 1 : -1;
	if (agent_caps_trimmed < 0)
		log_warn("trim the agent's capability bounding set: %s (each execution trims its own)", strerror(errno));
}

/* Dispositions a child must reset: only ignored signals survive execve (and
 * handlers, which the agent has none of, would run pre-exec). Read once: the
 * agent sets its dispositions before it serves. */
static int reset_sigs[NSIG];
static int n_reset_sigs = -1;

static void note_dispositions(void)
{
	if (n_reset_sigs >= 0)
		return;
	n_reset_sigs = 0;
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
			continue;
		if (sa.sa_handler != SIG_DFL)
			reset_sigs[n_reset_sigs++] = sig;
	}
}

/* The agent boots with oom_score_adj -1000 for the container init it forks
 * (which inherits it). The agent itself, PID 1, is never the OOM killer's
 * pick whatever its value, so once the container is up (executions join its
 * namespaces; its init, or the main process, is forked already) the agent
 * drops to 0 itself: executions inherit the workload value instead of each
 * opening and writing /proc/self/oom_score_adj. 1: done; -1: children write. */
static int agent_oom_reset;

static void reset_agent_oom(void)
{
	if (agent_oom_reset)
		return;
	agent_oom_reset = getpid() == 1 && write_small_file("/proc/self/oom_score_adj", "0", 0644) == 0 ? 1 : -1;
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
			/* A failed execve is dear on this kernel (6.1 builds the new mm and
			 * copies argv and envp before it opens the file): a path lookup
			 * first skips the directories that do not have it. A file that
			 * exists but fails to exec still gets execve's own answer. */
			if (syscall(SYS_faccessat2, AT_FDCWD, buf, F_OK, AT_EACCESS) < 0 && (errno == ENOENT || errno == ENOTDIR))
				goto next;
			execve(buf, argv, envp);
			if (errno == EACCES)
				seen_eacces = 1;
			else if (errno != ENOENT && errno != ENOTDIR)
				return errno;
		}
	next:
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
	int user_state; /* 0: resolve in the child, 1: ids below, 2: user_err below */
	const struct ids *ids;
	const char *user_err;
	int trim_caps;          /* the agent's bounding set is not trimmed: the child does it */
	volatile uint32_t nspid; /* written by a CLONE_VM child: its pid in its namespace */
};

/* A shared-memory child (clone CLONE_VM|CLONE_VFORK) only makes system calls
 * from here on: no malloc, no stdio, no libc wrappers that take locks or
 * broadcast to threads (musl's setuid/setrlimit), so the suspended agent's
 * memory stays as it was. */
static void run_child(struct child_args *a) __attribute__((noreturn));
static void run_child(struct child_args *a)
{
	int sfd = a->status_fd;
	a->nspid = (uint32_t)syscall(SYS_getpid);

	/* The agent blocks some signals for its signalfd and ignores SIGPIPE;
	 * none of that may leak into the workload. */
	if (n_reset_sigs >= 0) {
		for (int i = 0; i < n_reset_sigs; i++)
			signal(reset_sigs[i], SIG_DFL);
	} else {
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
	}
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
		/* The agent may be exempt from the OOM killer (-1000, see
		 * reset_agent_oom); workloads are not. Written before setns: /proc
		 * is still the agent's here. */
		int ofd = agent_oom_reset == 1 ? -1 : open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
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

	struct ids own;
	const struct ids *ids = NULL;
	if (a->s->switch_user) {
		if (a->user_state == 1) {
			ids = a->ids;
		} else if (a->user_state == 2) {
			child_fail(sfd, 125, "%s", a->user_err);
		} else {
			char err[300];
			if (resolve_user(NULL, a->user, &own, err, sizeof(err)) < 0)
				child_fail(sfd, 125, "%s", err);
			ids = &own;
		}
	}
	const char *cwd = *a->cwd ? a->cwd : "/";
	if (chdir(cwd) < 0)
		child_fail(sfd, 125, "unable to change to working directory %s: %s", cwd, strerror(errno));
	/* Before the capabilities go: raising a hard limit past the agent's
	 * needs CAP_SYS_RESOURCE. */
	for (int i = 0; i < nlimits; i++) {
		struct rlimit rl = { .rlim_cur = (rlim_t)limits[i].value, .rlim_max = (rlim_t)limits[i].value };
		if (syscall(SYS_prlimit64, 0, limits[i].resource, &rl, NULL) < 0)
			child_fail(sfd, 125, "set resource limit %s to %llu: %s", limit_name(limits[i].resource), limits[i].value,
				   strerror(errno));
	}
	if (a->trim_caps && drop_bounding_caps() < 0)
		child_fail(sfd, 125, "drop capabilities: %s", strerror(errno));
	if (ids) {
		if (syscall(SYS_setgroups, (size_t)ids->ngroups, ids->groups) < 0)
			child_fail(sfd, 125, "setgroups: %s", strerror(errno));
		if (syscall(SYS_setgid, ids->gid) < 0)
			child_fail(sfd, 125, "setgid %u: %s", (unsigned)ids->gid, strerror(errno));
		if (syscall(SYS_setuid, ids->uid) < 0)
			child_fail(sfd, 125, "setuid %u: %s", (unsigned)ids->uid, strerror(errno));
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

/* clone(CLONE_VM|CLONE_VFORK) instead of fork: no page tables to copy and no
 * copy-on-write faults in either process (costly under TCG), and the agent
 * resumes only once the child has exec'd or failed, so its status is known
 * at once. Not under AddressSanitizer, whose shadow stack a second stack in
 * the same memory would confuse; not when a prepare step runs (it blocks on
 * the agent). The stack is static: one such child exists at a time. */
#if defined(__SANITIZE_ADDRESS__)
#define SHARED_SPAWN 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SHARED_SPAWN 0
#endif
#endif
#ifndef SHARED_SPAWN
#define SHARED_SPAWN 1
#endif

#if SHARED_SPAWN
static unsigned char child_stack[64 * 1024] __attribute__((aligned(64)));

static int shared_child(void *arg)
{
	run_child(arg);
}
#endif

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

	struct ids ids;
	char user_err[300];
	struct child_args a = {
		.s = s, .argv = argv, .envp = envp, .user = user, .cwd = cwd, .tty = tty, .tool = tool, .pts = pts,
		.in_fd = in[0], .out_fd = outp[1], .err_fd = errp[1], .status_fd = st[1],
	};
	if (s->switch_user) {
		int r = resolve_user_cached(s->root_fd, user, &ids, user_err, sizeof(user_err));
		a.user_state = r < 0 ? 0 : r == 0 ? 1 : 2;
		a.ids = &ids;
		a.user_err = user_err;
	}
	if (s->drop_caps)
		trim_agent_caps();
	if (s->ns_fds)
		reset_agent_oom();
	a.trim_caps = s->drop_caps && agent_caps_trimmed < 0;
	note_dispositions();

	/* The child resolving users itself uses stdio and malloc: not in shared memory. */
	int shared = SHARED_SPAWN && !s->prepare && (!s->switch_user || a.user_state != 0);
	pid_t pid;
	pid = -1;
#if SHARED_SPAWN
	if (shared)
		pid = clone(shared_child, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
#endif
	if (pid < 0) {
		shared = 0; /* not shared, or refused (a seccomp filter, say): a plain fork */
		pid = fork();
	}
	if (pid < 0) {
		failure(f, 125, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		run_child(&a);

	out->nspid = shared ? a.nspid : 0;
	out->status_ready = shared;
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
	/* Fresh pipes (or a master opened O_NONBLOCK): no other status flags to keep. */
	fcntl(out->stdin_fd, F_SETFL, O_NONBLOCK);
	fcntl(out->stdout_fd, F_SETFL, O_NONBLOCK);
	if (out->stderr_fd >= 0)
		fcntl(out->stderr_fd, F_SETFL, O_NONBLOCK);
	fcntl(out->status_fd, F_SETFL, O_NONBLOCK);
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
