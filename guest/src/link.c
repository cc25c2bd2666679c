#include "link.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

/* virtio-serial takes at most 32 KiB per write(); writing in units of that
 * size also suits a socket. */
#define STAGE_SIZE (32u * 1024u)
/* Stop reading host input while this much output waits (only a host that
 * floods PINGs without reading gets here; exec output is bounded by WINDOW). */
#define OUT_HIGH_WATER (64u * 1024u * 1024u)
#define PORT_RECHECK_MS 20u
#define SOCKET_RETRY_MS 100u

struct link_chunk {
	struct link_chunk *next;
	size_t len, cap;
	uint8_t data[];
};

static struct {
	int fd;
	int host_mode;
	const char *socket_path;
	int up;
	int connect_failed_logged;
	uint64_t next_check;
	link_frame_fn on_frame;

	uint8_t in[PROTO_MAX_FRAME];
	size_t in_len;
	size_t skip; /* bytes of a rejected frame still to discard */

	struct link_chunk *head, *tail;
	size_t head_off; /* bytes of head already written */
	size_t queued;
	uint8_t stage[STAGE_SIZE];
	uint32_t withheld_features;
	uint32_t extra_features;
} L; /* zero-initialised (bss): the buffers must not bloat the binary */

static int find_port(const char *name, char *dev, size_t cap)
{
	const char *base = "/sys/class/virtio-ports";
	DIR *d = opendir(base);
	if (!d)
		return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[512], val[256];
		if (fmt(path, sizeof(path), "%s/%s/name", base, e->d_name) < 0)
			continue;
		if (read_small_file(path, val, sizeof(val)) < 0)
			continue;
		val[strcspn(val, "\n")] = '\0';
		if (strcmp(val, name) != 0)
			continue;
		if (fmt(dev, cap, "/dev/%s", e->d_name) < 0)
			break;
		struct stat st;
		if (stat(dev, &st) < 0) {
			/* No udev: create the node from the sysfs "dev" attribute. */
			unsigned maj, min;
			if (fmt(path, sizeof(path), "%s/%s/dev", base, e->d_name) < 0 ||
			    read_small_file(path, val, sizeof(val)) < 0 || sscanf(val, "%u:%u", &maj, &min) != 2)
				break;
			if (mknod(dev, S_IFCHR | 0600, makedev(maj, min)) < 0 && errno != EEXIST) {
				log_err("mknod %s: %s", dev, strerror(errno));
				break;
			}
		}
		found = 0;
		break;
	}
	closedir(d);
	return found;
}

int link_open_port(const char *name, unsigned wait_ms)
{
	char dev[300];
	uint64_t deadline = now_ms() + wait_ms;
	L.fd = -1;
	while (find_port(name, dev, sizeof(dev)) < 0) {
		if (now_ms() >= deadline)
			return -1;
		sleep_ms(10);
	}
	L.fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (L.fd < 0) {
		log_err("open %s: %s", dev, strerror(errno));
		return -1;
	}
	log_info("agent port %s", dev);
	L.up = 0;
	L.next_check = 0;
	return 0;
}

void link_add_features(uint32_t mask)
{
	L.extra_features |= mask;
}

void link_withhold_features(uint32_t mask)
{
	L.withheld_features = mask & PROTO_FEAT_ALL;
}

void link_use_socket(const char *path)
{
	L.fd = -1;
	L.host_mode = 1;
	L.socket_path = path;
	L.up = 0;
	L.next_check = 0;
}

void link_set_handler(link_frame_fn fn) { L.on_frame = fn; }

int link_is_up(void) { return L.up; }

size_t link_queued_bytes(void) { return L.queued; }

/* ---- output queue ---- */

/* Output chunks of a stage's size are kept for reuse: musl serves them with
 * mmap and munmap (each a TLB flush, costly under TCG), and every read of
 * an execution's output takes one, even the read that only finds its end. */
#define SPARE_CHUNKS 8
static struct link_chunk *spare[SPARE_CHUNKS];
static int nspare;

struct link_chunk *link_chunk_new(size_t payload_cap)
{
	size_t cap = PROTO_HEADER_SIZE + payload_cap;
	struct link_chunk *c = NULL;
	if (cap > 1024 && cap <= STAGE_SIZE) {
		cap = STAGE_SIZE;
		if (nspare)
			c = spare[--nspare];
	}
	if (!c)
		c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	c->next = NULL;
	c->len = 0;
	c->cap = cap;
	return c;
}

uint8_t *link_chunk_payload(struct link_chunk *c) { return c->data + PROTO_HEADER_SIZE; }

void link_chunk_free(struct link_chunk *c)
{
	if (c->cap == STAGE_SIZE && nspare < SPARE_CHUNKS)
		spare[nspare++] = c;
	else
		free(c);
}

static void push_chunk(struct link_chunk *c)
{
	c->next = NULL;
	if (L.tail)
		L.tail->next = c;
	else
		L.head = c;
	L.tail = c;
	L.queued += c->len;
}

void link_chunk_commit(struct link_chunk *c, uint8_t type, uint32_t stream, size_t payload_len)
{
	proto_put_header(c->data, (uint32_t)payload_len, type, stream);
	c->len = PROTO_HEADER_SIZE + payload_len;
	push_chunk(c);
}

static struct link_chunk *encode_chunk(const struct proto_msg *m)
{
	size_t n = proto_encoded_size(m);
	if (n == 0) {
		log_err("dropping oversized %s frame", proto_type_name(m->type));
		return NULL;
	}
	struct link_chunk *c = link_chunk_new(n - PROTO_HEADER_SIZE);
	if (!c) {
		log_err("out of memory queueing %s", proto_type_name(m->type));
		return NULL;
	}
	c->len = proto_encode(m, c->data, c->cap);
	return c;
}

void link_send(const struct proto_msg *m)
{
	struct link_chunk *c = encode_chunk(m);
	if (c)
		push_chunk(c);
}

void link_send_error(uint32_t stream, const char *f, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(text, sizeof(text), f, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	struct proto_msg m = { .type = PROTO_ERROR, .stream = stream };
	m.u.error.message.ptr = (const uint8_t *)text;
	m.u.error.message.len = (uint32_t)n;
	log_debug("ERROR stream=%u: %s", stream, text);
	link_send(&m);
}

static void pop_head(void)
{
	struct link_chunk *c = L.head;
	L.head = c->next;
	if (!L.head)
		L.tail = NULL;
	L.queued -= c->len - L.head_off;
	L.head_off = 0;
	link_chunk_free(c);
}

static void consume_output(size_t n)
{
	while (n && L.head) {
		size_t left = L.head->len - L.head_off;
		if (n < left) {
			L.head_off += n;
			L.queued -= n;
			return;
		}
		n -= left;
		pop_head();
	}
}

static struct link_chunk *hello_chunk(void)
{
	static const char version[] = AGENT_VERSION;
	struct proto_msg m = { .type = PROTO_HELLO, .stream = 0 };
	m.u.hello.major = PROTO_MAJOR;
	m.u.hello.minor = PROTO_MINOR;
	m.u.hello.features = (PROTO_FEAT_ALL | L.extra_features) & ~L.withheld_features;
	m.u.hello.version.ptr = (const uint8_t *)version;
	m.u.hello.version.len = sizeof(version) - 1;
	return encode_chunk(&m);
}

void link_send_hello(void)
{
	struct link_chunk *c = hello_chunk();
	if (c)
		push_chunk(c);
}

static void send_hello_first(void)
{
	struct link_chunk *c = hello_chunk();
	if (!c)
		return;
	/* Ahead of everything queued, so it is the first frame a new host sees. */
	c->next = L.head;
	L.head = c;
	if (!L.tail)
		L.tail = c;
	L.queued += c->len;
}

/* ---- connection state ---- */

static void go_down(const char *why)
{
	if (!L.up)
		return;
	log_info("host disconnected (%s); waiting for it to come back", why);
	L.up = 0;
	L.next_check = now_ms() + (L.host_mode ? SOCKET_RETRY_MS : PORT_RECHECK_MS);
	/* A half-received frame belongs to the old connection, and so does the
	 * rest of a half-sent one: the next host starts at a frame boundary. */
	L.in_len = 0;
	L.skip = 0;
	if (L.head && L.head_off)
		pop_head();
	if (L.host_mode && L.fd >= 0) {
		close(L.fd);
		L.fd = -1;
	}
}

static void go_up(void)
{
	L.up = 1;
	log_info("host connected");
	send_hello_first();
}

static int try_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (fmt(sa.sun_path, sizeof(sa.sun_path), "%s", L.socket_path) < 0) {
		close(fd);
		errno = ENAMETOOLONG;
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	set_nonblock(fd);
	return fd;
}

void link_tick(void)
{
	if (!L.up && now_ms() >= L.next_check) {
		if (L.host_mode) {
			int fd = try_connect();
			if (fd >= 0) {
				L.fd = fd;
				L.connect_failed_logged = 0;
				go_up();
			} else {
				if (!L.connect_failed_logged)
					log_info("connect %s: %s (retrying)", L.socket_path, strerror(errno));
				L.connect_failed_logged = 1;
				L.next_check = now_ms() + SOCKET_RETRY_MS;
			}
		} else if (L.fd >= 0) {
			/* virtio-serial reports POLLHUP (and POLLIN: reads return 0
			 * at once) for as long as no host is connected. */
			struct pollfd p = { .fd = L.fd, .events = POLLIN | POLLOUT };
			if (poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR | POLLNVAL)))
				go_up();
			else
				L.next_check = now_ms() + PORT_RECHECK_MS;
		}
	}
	if (L.up && L.head) {
		/* Flush eagerly: most frames fit the kernel buffer right away. */
		link_on_poll(POLLOUT);
	}
}

int link_poll_fd(short *events)
{
	if (!L.up || L.fd < 0)
		return -1;
	*events = 0;
	if (L.queued < OUT_HIGH_WATER)
		*events |= POLLIN;
	if (L.head)
		*events |= POLLOUT;
	return L.fd;
}

int link_timeout_ms(uint64_t now)
{
	if (L.up)
		return -1;
	return L.next_check > now ? (int)(L.next_check - now) : 0;
}

/* ---- input ---- */

static void protocol_error(int status, const struct proto_header *h)
{
	const char *name = proto_type_name(h->type);
	char tname[16];
	if (!name) {
		snprintf(tname, sizeof(tname), "0x%02x", h->type);
		name = tname;
	}
	log_warn("protocol error: %s (type %s, stream %u, length %u)", proto_status_name(status), name,
		 h->stream, h->length);
	link_send_error(0, "protocol error: %s (type %s, stream %u, length %u)", proto_status_name(status), name,
			h->stream, h->length);
}

static void process_input(void)
{
	size_t off = 0;
	while (L.up) {
		if (L.skip) {
			size_t n = L.in_len - off < L.skip ? L.in_len - off : L.skip;
			off += n;
			L.skip -= n;
			if (L.skip)
				break;
		}
		struct proto_header h;
		long r = proto_frame_ready(L.in + off, L.in_len - off, &h);
		if (r == 0)
			break;
		if (r < 0) {
			protocol_error((int)r, &h);
			if (r == PROTO_ERR_TOO_LARGE) {
				/* The length cannot be trusted: framing is lost, drop it all. */
				off = L.in_len;
				break;
			}
			L.skip = PROTO_HEADER_SIZE + h.length;
			continue;
		}
		struct proto_msg m;
		int rc = proto_decode(L.in + off, (size_t)r, &m);
		if (rc != PROTO_OK)
			protocol_error(rc, &h);
		else if (L.on_frame)
			L.on_frame(&m);
		off += (size_t)r;
	}
	if (!L.up)
		return; /* go_down() already reset the buffer */
	if (off) {
		memmove(L.in, L.in + off, L.in_len - off);
		L.in_len -= off;
	}
}

static void read_input(void)
{
	for (int i = 0; i < 64 && L.up; i++) {
		size_t room = sizeof(L.in) - L.in_len;
		if (room == 0)
			return; /* cannot happen: a partial frame is shorter than the buffer */
		ssize_t n = read(L.fd, L.in + L.in_len, room);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				go_down(strerror(errno));
			return;
		}
		if (n == 0) {
			go_down("end of file");
			return;
		}
		L.in_len += (size_t)n;
		process_input();
		if (L.queued >= OUT_HIGH_WATER)
			return;
	}
}

static void flush_output(void)
{
	while (L.up && L.head) {
		const uint8_t *src;
		size_t len;
		size_t left = L.head->len - L.head_off;
		if (left >= STAGE_SIZE) {
			src = L.head->data + L.head_off;
			len = STAGE_SIZE;
		} else {
			/* Coalesce small frames: one write (one virtqueue kick) for many. */
			len = 0;
			size_t off = L.head_off;
			for (struct link_chunk *c = L.head; c && len < STAGE_SIZE; c = c->next, off = 0) {
				size_t n = c->len - off;
				if (n > STAGE_SIZE - len)
					n = STAGE_SIZE - len;
				memcpy(L.stage + len, c->data + off, n);
				len += n;
			}
			src = L.stage;
		}
		ssize_t w = write(L.fd, src, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				go_down(strerror(errno));
			return;
		}
		consume_output((size_t)w);
		if ((size_t)w < len)
			return;
	}
}

void link_on_poll(short revents)
{
	if (!L.up)
		return;
	if (revents & POLLIN)
		read_input();
	if (L.up && (revents & POLLOUT))
		flush_output();
	if (L.up && (revents & (POLLHUP | POLLERR)) && !(revents & POLLIN))
		go_down(revents & POLLERR ? "error" : "hangup");
}
