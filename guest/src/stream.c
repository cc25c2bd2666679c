#include "stream.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "link.h"
#include "util.h"

/* One output chunk: at most 32 KiB per read, sized so that header + data is
 * exactly one 32 KiB virtio-serial write. */
#define OUT_CHUNK (32u * 1024u - PROTO_HEADER_SIZE)

struct stream {
	struct stream *next;
	uint32_t id;
	pid_t pid;
	uint32_t nspid;
	int tty;
	int started;   /* STARTED sent */
	int status_fd; /* spawn status pipe, until resolved */
	int in_fd;     /* child's stdin (pipe or pty master); -1 once closed */
	int out_fd[2]; /* stdout, stderr; -1 once at EOF or drained */
	int64_t credit[2];
	/* Once exited: bytes still to forward per output (the snapshot taken at
	 * the reap), or -1 when no writer is left and reading to EOF is bounded. */
	int64_t left[2];
	uint8_t *inbuf; /* stdin bytes received, not yet written */
	size_t in_len, in_cap;
	int in_eof;      /* host ended stdin */
	int in_eof_done; /* ... and we passed that on */
	int exited, wstatus, timed_out, spawn_failed;
	int is_main;
	uint32_t timeout_ms;
	uint64_t deadline;
};

static struct stream *streams;
static int nstreams;
static struct stream_env env;
/* Which stream and fd each pollfd of the last streams_poll_fill() belongs to. */
static struct {
	struct stream *s;
	int *fdp;
} tags[STREAMS_POLL_MAX];

void streams_configure(const struct stream_env *e) { env = *e; }

static struct stream *find(uint32_t id)
{
	for (struct stream *s = streams; s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- frames to the host ---- */

static void send_window(uint32_t id, uint8_t fd, uint32_t bytes)
{
	if (!bytes)
		return;
	struct proto_msg m = { .type = PROTO_WINDOW, .stream = id };
	m.u.window.fd = fd;
	m.u.window.bytes = bytes;
	link_send(&m);
}

static void send_exit(uint32_t id, int32_t code, int32_t sig, uint8_t reason, const char *message)
{
	struct proto_msg m = { .type = PROTO_EXIT, .stream = id };
	m.u.exit.code = code;
	m.u.exit.signal = sig;
	m.u.exit.reason = reason;
	m.u.exit.message.ptr = (const uint8_t *)message;
	m.u.exit.message.len = (uint32_t)strlen(message);
	link_send(&m);
}

static void send_eof(uint32_t id, uint8_t type)
{
	struct proto_msg m = { .type = type, .stream = id };
	link_send(&m);
}

/* ---- stdin ---- */

static void drop_stdin(struct stream *s)
{
	/* Bytes that can no longer reach the child still return their credit,
	 * so the host never waits for a window that will not open. */
	send_window(s->id, 0, (uint32_t)s->in_len);
	s->in_len = 0;
}

static void pump_stdin(struct stream *s)
{
	while (s->in_fd >= 0 && s->in_len > 0) {
		ssize_t w = write(s->in_fd, s->inbuf, s->in_len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* EPIPE: the child closed its stdin (or the pty is gone). */
			drop_stdin(s);
			if (!s->tty)
				close_fd(&s->in_fd);
			return;
		}
		memmove(s->inbuf, s->inbuf + w, s->in_len - (size_t)w);
		s->in_len -= (size_t)w;
		send_window(s->id, 0, (uint32_t)w);
	}
	if (s->in_eof && !s->in_eof_done && s->in_len == 0) {
		if (!s->tty) {
			close_fd(&s->in_fd);
			s->in_eof_done = 1;
		} else if (s->in_fd >= 0) {
			/* A terminal has no end of input; send its EOF character (^D). */
			ssize_t w = write(s->in_fd, "\x04", 1);
			if (w == 1 || (w < 0 && errno != EAGAIN && errno != EINTR))
				s->in_eof_done = 1;
		} else {
			s->in_eof_done = 1;
		}
	}
}

static void on_stdin(struct stream *s, const struct proto_msg *m)
{
	size_t n = m->u.data.len;
	if (n == 0) {
		s->in_eof = 1;
		pump_stdin(s);
		return;
	}
	if (s->in_eof || s->in_fd < 0 || s->exited) {
		send_window(s->id, 0, (uint32_t)n); /* nobody will read it */
		return;
	}
	if (s->in_len + n > PROTO_STDIN_WINDOW) {
		link_send_error(0, "protocol error: stream %u sent %zu stdin bytes beyond its %u byte window", s->id,
				s->in_len + n - PROTO_STDIN_WINDOW, PROTO_STDIN_WINDOW);
		return;
	}
	if (s->in_len + n > s->in_cap) {
		size_t cap = s->in_cap ? s->in_cap : 16384;
		while (cap < s->in_len + n)
			cap *= 2;
		if (cap > PROTO_STDIN_WINDOW)
			cap = PROTO_STDIN_WINDOW;
		uint8_t *b = realloc(s->inbuf, cap);
		if (!b) {
			log_err("out of memory for stdin of stream %u", s->id);
			send_window(s->id, 0, (uint32_t)n);
			return;
		}
		s->inbuf = b;
		s->in_cap = cap;
	}
	memcpy(s->inbuf + s->in_len, m->u.data.ptr, n);
	s->in_len += n;
	pump_stdin(s);
}

/* ---- stdout / stderr ---- */

/* Reads from out_fd[i] while credit lasts. One read per call while the
 * process runs (fairness). Once it has exited, what left[i] allows: what the
 * pipe held at the reap, then the output ends even if a background process
 * that inherited it keeps writing (docs/protocol.md section 3). */
static void pump_output(struct stream *s, int i)
{
	static const uint8_t types[2] = { PROTO_STDOUT, PROTO_STDERR };
	for (;;) {
		if (s->out_fd[i] < 0)
			return;
		if (s->exited && s->left[i] == 0)
			break; /* the snapshot is forwarded, with or without credit left */
		if (s->credit[i] <= 0)
			return; /* waiting for the host to return credit */
		size_t want = s->credit[i] < (int64_t)OUT_CHUNK ? (size_t)s->credit[i] : OUT_CHUNK;
		if (s->exited && s->left[i] > 0 && (int64_t)want > s->left[i])
			want = (size_t)s->left[i];
		struct link_chunk *c = link_chunk_new(want);
		if (!c)
			return;
		ssize_t r = read(s->out_fd[i], link_chunk_payload(c), want);
		if (r > 0) {
			link_chunk_commit(c, types[i], s->id, (size_t)r);
			s->credit[i] -= r;
			if (!s->exited)
				return;
			if (s->left[i] > 0)
				s->left[i] -= r;
			continue;
		}
		int e = errno;
		link_chunk_free(c);
		if (r < 0 && e == EINTR)
			continue;
		if (r < 0 && e == EAGAIN && !s->exited)
			return;
		/* EOF; EIO from a pty whose other side is closed; or, after the
		 * process exited, an empty pipe. */
		break;
	}
	close_fd(&s->out_fd[i]);
}

/* At the reap of the main process: how much of each output is still
 * forwarded. A pipe (or pty) that nobody can write any more (POLLHUP) is read
 * to its end: that is bounded, and for a pty the kernel pushes what the
 * process wrote before it reports EIO. Otherwise a background process holds
 * it, and only what it holds now (FIONREAD) is forwarded. */
static void snapshot_output(struct stream *s)
{
	for (int i = 0; i < 2; i++) {
		s->left[i] = 0;
		if (s->out_fd[i] < 0)
			continue;
		struct pollfd p = { .fd = s->out_fd[i], .events = POLLIN };
		int r;
		do
			r = poll(&p, 1, 0);
		while (r < 0 && errno == EINTR);
		if (r > 0 && (p.revents & POLLHUP)) {
			s->left[i] = -1;
			continue;
		}
		int n = 0;
		if (ioctl(s->out_fd[i], FIONREAD, &n) < 0 || n < 0)
			n = 0;
		s->left[i] = n;
	}
}

/* ---- lifecycle ---- */

static void resolve_spawn(struct stream *s)
{
	if (s->status_fd < 0)
		return;
	struct exec_failure f;
	int r = exec_read_status(s->status_fd, &f);
	if (r < 0)
		return;
	close_fd(&s->status_fd);
	if (r == 1) {
		s->spawn_failed = 1;
		log_debug("stream %u: spawn failed (%d): %s", s->id, f.code, f.message);
		send_exit(s->id, f.code, 0, PROTO_REASON_SPAWN_FAILED, f.message);
		return;
	}
	struct proto_msg m = { .type = PROTO_STARTED, .stream = s->id };
	m.u.started.pid = s->nspid;
	link_send(&m);
	s->started = 1;
}

static void free_stream(struct stream *s)
{
	struct stream **pp = &streams;
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	close_fd(&s->status_fd);
	close_fd(&s->in_fd);
	close_fd(&s->out_fd[0]);
	close_fd(&s->out_fd[1]);
	free(s->inbuf);
	free(s);
	nstreams--;
}

/* Returns 1 when the stream is complete and can be freed. */
static int progress(struct stream *s)
{
	if (!s->exited)
		return 0;
	resolve_spawn(s);
	if (s->status_fd >= 0)
		return 0;
	if (s->spawn_failed)
		return 1;
	pump_output(s, 0);
	pump_output(s, 1);
	if (s->out_fd[0] >= 0 || s->out_fd[1] >= 0)
		return 0; /* waiting for the host to return credit */
	send_eof(s->id, PROTO_STDOUT);
	send_eof(s->id, PROTO_STDERR);
	char msg[64] = "";
	int st = s->wstatus;
	if (s->timed_out) {
		snprintf(msg, sizeof(msg), "timed out after %u ms", s->timeout_ms);
		send_exit(s->id, 128 + SIGKILL, SIGKILL, PROTO_REASON_TIMED_OUT, msg);
	} else if (WIFSIGNALED(st)) {
		send_exit(s->id, 128 + WTERMSIG(st), WTERMSIG(st), PROTO_REASON_SIGNALED, msg);
	} else {
		send_exit(s->id, WEXITSTATUS(st), 0, PROTO_REASON_EXITED, msg);
	}
	return 1;
}

static void kill_group(struct stream *s, int sig)
{
	if (s->exited)
		return; /* reaped: the pid may already belong to someone else */
	if (kill(-s->pid, sig) < 0)
		kill(s->pid, sig); /* not yet its own group leader */
}

static void on_exec(const struct proto_msg *m)
{
	uint32_t id = m->stream;
	if (find(id)) {
		link_send_error(id, "stream %u is already in use", id);
		return;
	}
	int is_main = (m->u.exec.flags & PROTO_EXEC_MAIN) && env.start_main;
	if (env.unavailable && !is_main) {
		char msg[300];
		snprintf(msg, sizeof(msg), "container is not available: %s", env.unavailable);
		send_exit(id, 125, 0, PROTO_REASON_SPAWN_FAILED, msg);
		return;
	}
	if (nstreams >= STREAMS_MAX) {
		send_exit(id, 125, 0, PROTO_REASON_SPAWN_FAILED, "too many executions");
		return;
	}
	struct stream *s = calloc(1, sizeof(*s));
	if (!s) {
		send_exit(id, 125, 0, PROTO_REASON_SPAWN_FAILED, "out of memory");
		return;
	}
	struct exec_spec spec = {
		.m = m, .ns_fds = env.ns_fds, .ptmx = env.ptmx,
		.switch_user = env.switch_user, .drop_caps = env.drop_caps, .tools_fd = env.tools_fd,
		.root_fd = env.root_fd,
	};
	struct exec_child child;
	struct exec_failure f;
	if ((is_main ? env.start_main(&spec, &child, &f) : exec_spawn(&spec, &child, &f)) < 0) {
		log_warn("stream %u: %s", id, f.message);
		send_exit(id, f.code, 0, PROTO_REASON_SPAWN_FAILED, f.message);
		free(s);
		return;
	}
	s->id = id;
	s->is_main = is_main;
	s->pid = child.pid;
	/* Read now if the child did not say: it cannot have been reaped yet,
	 * /proc/<pid> exists. */
	s->nspid = child.nspid ? child.nspid : exec_namespace_pid(child.pid);
	s->tty = (m->u.exec.flags & PROTO_EXEC_TTY) != 0;
	s->status_fd = child.status_fd;
	s->in_fd = child.stdin_fd;
	s->out_fd[0] = child.stdout_fd;
	s->out_fd[1] = child.stderr_fd;
	s->credit[0] = s->credit[1] = PROTO_OUTPUT_WINDOW;
	s->timeout_ms = m->u.exec.timeout_ms;
	s->deadline = s->timeout_ms ? now_ms() + s->timeout_ms : 0;
	s->next = streams;
	streams = s;
	nstreams++;
	log_debug("stream %u: pid %d (%u in container)", id, (int)s->pid, s->nspid);
	/* The child already exec'd (or failed): STARTED (or EXIT) goes out with
	 * this loop's flush instead of after another poll. */
	if (child.status_ready)
		resolve_spawn(s);
}

static void on_window(struct stream *s, const struct proto_msg *m)
{
	uint8_t fd = m->u.window.fd;
	if (fd == 0)
		return; /* stdin credit flows guest -> host only */
	int64_t next = s->credit[fd - 1] + (int64_t)m->u.window.bytes;
	if (next > (int64_t)PROTO_MAX_CREDIT) {
		link_send_error(0, "protocol error: WINDOW on stream %u leaves more than 2^31 bytes of credit", s->id);
		return;
	}
	s->credit[fd - 1] = next;
}

void streams_on_frame(const struct proto_msg *m)
{
	if (m->type == PROTO_EXEC) {
		on_exec(m);
		return;
	}
	if (m->type == PROTO_STARTED || m->type == PROTO_STDOUT || m->type == PROTO_STDERR || m->type == PROTO_EXIT) {
		link_send_error(m->stream, "unexpected %s from the host", proto_type_name(m->type));
		return;
	}
	struct stream *s = find(m->stream);
	if (!s) {
		/* Credit for a stream that already ended is routine (the host
		 * returns it as its consumer catches up); anything else is not. */
		if (m->type != PROTO_WINDOW && m->type != PROTO_ERROR)
			link_send_error(m->stream, "unknown stream %u", m->stream);
		return;
	}
	switch (m->type) {
	case PROTO_STDIN:
		on_stdin(s, m);
		break;
	case PROTO_SIGNAL:
		if (m->u.signal.signo <= 0 || m->u.signal.signo >= NSIG) {
			link_send_error(s->id, "invalid signal %d", m->u.signal.signo);
			break;
		}
		kill_group(s, m->u.signal.signo);
		break;
	case PROTO_RESIZE:
		if (s->tty && s->in_fd >= 0)
			exec_set_winsize(s->in_fd, m->u.resize.rows, m->u.resize.cols);
		break;
	case PROTO_WINDOW:
		on_window(s, m);
		break;
	case PROTO_ERROR:
		log_warn("host reported an error on stream %u: %.*s", s->id, (int)m->u.error.message.len,
			 (const char *)m->u.error.message.ptr);
		break;
	default:
		break;
	}
}

int streams_poll_fill(struct pollfd *pfd, int max)
{
	int n = 0;
	for (struct stream *s = streams; s && n + 4 <= max; s = s->next) {
		if (s->status_fd >= 0) {
			tags[n].s = s;
			tags[n].fdp = &s->status_fd;
			pfd[n++] = (struct pollfd){ .fd = s->status_fd, .events = POLLIN };
		}
		if (s->started && !s->exited) {
			for (int i = 0; i < 2; i++) {
				if (s->out_fd[i] >= 0 && s->credit[i] > 0) {
					tags[n].s = s;
					tags[n].fdp = &s->out_fd[i];
					pfd[n++] = (struct pollfd){ .fd = s->out_fd[i], .events = POLLIN };
				}
			}
		}
		if (s->in_fd >= 0 && (s->in_len > 0 || (s->in_eof && !s->in_eof_done))) {
			tags[n].s = s;
			tags[n].fdp = &s->in_fd;
			pfd[n++] = (struct pollfd){ .fd = s->in_fd, .events = POLLOUT };
		}
	}
	return n;
}

void streams_on_poll(const struct pollfd *pfd, int n)
{
	for (int k = 0; k < n; k++) {
		if (!pfd[k].revents)
			continue;
		struct stream *s = tags[k].s;
		int *fdp = tags[k].fdp;
		if (*fdp != pfd[k].fd)
			continue; /* closed meanwhile */
		if (fdp == &s->status_fd)
			resolve_spawn(s);
		else if (fdp == &s->in_fd)
			pump_stdin(s);
		else
			pump_output(s, fdp == &s->out_fd[0] ? 0 : 1);
	}
}

int streams_on_child_exit(pid_t pid, int wstatus)
{
	for (struct stream *s = streams; s; s = s->next) {
		if (s->pid == pid && !s->exited) {
			s->exited = 1;
			s->wstatus = wstatus;
			snapshot_output(s);
			if (s->in_len)
				drop_stdin(s);
			return 1;
		}
	}
	return 0;
}

void streams_tick(void)
{
	uint64_t now = now_ms();
	struct stream *s = streams;
	while (s) {
		struct stream *next = s->next;
		if (s->deadline && !s->exited && now >= s->deadline) {
			s->timed_out = 1;
			s->deadline = 0;
			kill_group(s, SIGKILL);
		}
		if (progress(s))
			free_stream(s);
		s = next;
	}
}

int streams_timeout_ms(uint64_t now)
{
	int best = -1;
	for (struct stream *s = streams; s; s = s->next) {
		if (!s->deadline || s->exited)
			continue;
		uint64_t left = s->deadline > now ? s->deadline - now : 0;
		if (left > 0x7fffffff)
			left = 0x7fffffff;
		if (best < 0 || (int)left < best)
			best = (int)left;
	}
	return best;
}

void streams_detach_all(uint32_t main_id)
{
	struct stream *keep = NULL;
	if (main_id) {
		for (struct stream **pp = &streams; *pp; pp = &(*pp)->next) {
			if ((*pp)->is_main) {
				keep = *pp;
				*pp = keep->next; /* out of the list while the rest goes */
				nstreams--;
				break;
			}
		}
	}
	while (streams) {
		struct stream *s = streams;
		if (s->is_main) {
			/* Left open, never read again: closing them would end the
			 * main process (EOF on stdin, SIGPIPE on output). */
			s->in_fd = s->out_fd[0] = s->out_fd[1] = -1;
		} else {
			kill_group(s, SIGKILL);
		}
		free_stream(s);
	}
	if (!keep) {
		if (main_id)
			link_send_error(main_id, "no main process to adopt");
		return;
	}
	/* The new host's stream: its credit starts afresh, and stdin bytes of the
	 * old host belong to the old host's window, which nobody here returns. */
	keep->id = main_id;
	keep->credit[0] = keep->credit[1] = PROTO_OUTPUT_WINDOW;
	keep->in_len = 0;
	keep->next = NULL;
	streams = keep;
	nstreams = 1;
	if (keep->started) {
		struct proto_msg m = { .type = PROTO_STARTED, .stream = keep->id };
		m.u.started.pid = keep->nspid;
		link_send(&m);
	}
}

void streams_kill_all(void)
{
	for (struct stream *s = streams; s; s = s->next)
		kill_group(s, SIGKILL);
}
