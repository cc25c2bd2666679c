/* Codec for docs/protocol.md. Pure: no system calls, no allocation.
 * Mirrors src/protocol/codec.ts check for check, in the same order, so both
 * report the same error kind for the same bytes. */
#include "proto.h"

#include <string.h>

static const char *const status_names[] = {
	"ok", "truncated", "too_large", "bad_header", "unknown_type", "bad_stream", "bad_payload",
};

const char *proto_status_name(int status)
{
	if (status > 0 || status < PROTO_ERR_BAD_PAYLOAD)
		return "unknown";
	return status_names[-status];
}

const char *proto_type_name(uint8_t type)
{
	switch (type) {
	case PROTO_HELLO: return "HELLO";
	case PROTO_PING: return "PING";
	case PROTO_PONG: return "PONG";
	case PROTO_SHUTDOWN: return "SHUTDOWN";
	case PROTO_ERROR: return "ERROR";
	case PROTO_TRUST: return "TRUST";
	case PROTO_RESUME: return "RESUME";
	case PROTO_EXEC: return "EXEC";
	case PROTO_STARTED: return "STARTED";
	case PROTO_STDIN: return "STDIN";
	case PROTO_STDOUT: return "STDOUT";
	case PROTO_STDERR: return "STDERR";
	case PROTO_EXIT: return "EXIT";
	case PROTO_SIGNAL: return "SIGNAL";
	case PROTO_RESIZE: return "RESIZE";
	case PROTO_WINDOW: return "WINDOW";
	default: return NULL;
	}
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static int is_link_type(uint8_t type)
{
	return (type >= PROTO_HELLO && type <= PROTO_SHUTDOWN) || type == PROTO_TRUST || type == PROTO_RESUME;
}

int proto_check_header(const uint8_t *hdr, struct proto_header *out)
{
	out->length = get32(hdr);
	out->type = hdr[4];
	out->stream = get32(hdr + 8);
	if (out->length > PROTO_MAX_PAYLOAD)
		return PROTO_ERR_TOO_LARGE;
	if (hdr[5] != 0 || get16(hdr + 6) != 0)
		return PROTO_ERR_BAD_HEADER;
	if (!proto_type_name(out->type))
		return PROTO_ERR_UNKNOWN_TYPE;
	if (out->type != PROTO_ERROR && is_link_type(out->type) != (out->stream == 0))
		return PROTO_ERR_BAD_STREAM;
	return PROTO_OK;
}

long proto_frame_ready(const uint8_t *buf, size_t have, struct proto_header *hdr)
{
	if (have < PROTO_HEADER_SIZE)
		return 0;
	int rc = proto_check_header(buf, hdr);
	if (rc != PROTO_OK)
		return rc;
	size_t total = PROTO_HEADER_SIZE + (size_t)hdr->length;
	return have >= total ? (long)total : 0;
}

/* Bounds-checked payload reader with a sticky error flag. */
struct reader {
	const uint8_t *p;
	size_t len, off;
	int bad;
};

static int need(struct reader *r, size_t n)
{
	if (r->bad || r->len - r->off < n) {
		r->bad = 1;
		return 0;
	}
	return 1;
}

static uint8_t rd8(struct reader *r)
{
	if (!need(r, 1))
		return 0;
	return r->p[r->off++];
}

static uint16_t rd16(struct reader *r)
{
	if (!need(r, 2))
		return 0;
	uint16_t v = get16(r->p + r->off);
	r->off += 2;
	return v;
}

static uint32_t rd32(struct reader *r)
{
	if (!need(r, 4))
		return 0;
	uint32_t v = get32(r->p + r->off);
	r->off += 4;
	return v;
}

static struct proto_bytes rdstr(struct reader *r)
{
	struct proto_bytes b = { NULL, 0 };
	uint32_t len = rd32(r);
	if (!need(r, len))
		return b;
	b.ptr = r->p + r->off;
	b.len = len;
	r->off += len;
	return b;
}

static struct proto_strlist rdlist(struct reader *r)
{
	struct proto_strlist l = { 0, NULL, 0 };
	uint32_t count = rd32(r);
	if (r->bad)
		return l;
	if (count > PROTO_MAX_LIST) {
		r->bad = 1;
		return l;
	}
	size_t start = r->off;
	for (uint32_t i = 0; i < count && !r->bad; i++)
		rdstr(r);
	if (r->bad)
		return l;
	l.count = count;
	l.raw = r->p + start;
	l.raw_len = (uint32_t)(r->off - start);
	return l;
}

static struct proto_bytes rdrest(struct reader *r)
{
	struct proto_bytes b = { r->p + r->off, (uint32_t)(r->len - r->off) };
	r->off = r->len;
	return b;
}

int proto_decode(const uint8_t *frame, size_t n, struct proto_msg *m)
{
	struct proto_header h;
	if (n < PROTO_HEADER_SIZE)
		return PROTO_ERR_TRUNCATED;
	int rc = proto_check_header(frame, &h);
	if (rc != PROTO_OK)
		return rc;
	if (n < PROTO_HEADER_SIZE + (size_t)h.length)
		return PROTO_ERR_TRUNCATED;
	if (n > PROTO_HEADER_SIZE + (size_t)h.length)
		return PROTO_ERR_BAD_PAYLOAD;

	struct reader r = { frame + PROTO_HEADER_SIZE, h.length, 0, 0 };
	memset(m, 0, sizeof(*m));
	m->type = h.type;
	m->stream = h.stream;
	switch (h.type) {
	case PROTO_HELLO:
		m->u.hello.major = rd16(&r);
		m->u.hello.minor = rd16(&r);
		m->u.hello.features = rd32(&r);
		m->u.hello.version = rdstr(&r);
		break;
	case PROTO_PING:
	case PROTO_PONG:
	case PROTO_STDIN:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_TRUST:
	case PROTO_RESUME:
		m->u.data = rdrest(&r);
		break;
	case PROTO_SHUTDOWN:
		break;
	case PROTO_ERROR:
		m->u.error.message = rdstr(&r);
		break;
	case PROTO_EXEC:
		m->u.exec.flags = rd32(&r);
		m->u.exec.rows = rd16(&r);
		m->u.exec.cols = rd16(&r);
		m->u.exec.timeout_ms = rd32(&r);
		m->u.exec.user = rdstr(&r);
		m->u.exec.cwd = rdstr(&r);
		m->u.exec.argv = rdlist(&r);
		m->u.exec.env = rdlist(&r);
		if (!r.bad && ((m->u.exec.flags & ~(PROTO_EXEC_TTY | PROTO_EXEC_TOOL | PROTO_EXEC_MAIN)) != 0 || m->u.exec.argv.count == 0))
			r.bad = 1;
		break;
	case PROTO_STARTED:
		m->u.started.pid = rd32(&r);
		break;
	case PROTO_EXIT:
		m->u.exit.code = (int32_t)rd32(&r);
		m->u.exit.signal = (int32_t)rd32(&r);
		m->u.exit.reason = rd8(&r);
		m->u.exit.message = rdstr(&r);
		if (m->u.exit.reason > PROTO_REASON_SPAWN_FAILED)
			r.bad = 1;
		break;
	case PROTO_SIGNAL:
		m->u.signal.signo = (int32_t)rd32(&r);
		break;
	case PROTO_RESIZE:
		m->u.resize.rows = rd16(&r);
		m->u.resize.cols = rd16(&r);
		break;
	case PROTO_WINDOW:
		m->u.window.fd = rd8(&r);
		m->u.window.bytes = rd32(&r);
		if (m->u.window.fd > 2)
			r.bad = 1;
		break;
	}
	if (r.bad || r.off != r.len)
		return PROTO_ERR_BAD_PAYLOAD;
	return PROTO_OK;
}

int proto_strlist_next(const struct proto_strlist *l, uint32_t *pos, struct proto_bytes *out)
{
	/* The list was validated by proto_decode; the checks below only keep a
	 * misuse from reading out of bounds. */
	if (*pos + 4u > l->raw_len || *pos + 4u < *pos)
		return 0;
	uint32_t len = get32(l->raw + *pos);
	if (len > l->raw_len - *pos - 4u)
		return 0;
	out->ptr = l->raw + *pos + 4u;
	out->len = len;
	*pos += 4u + len;
	return 1;
}

static size_t payload_size(const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_HELLO: return 8u + 4u + m->u.hello.version.len;
	case PROTO_PING:
	case PROTO_PONG:
	case PROTO_STDIN:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_TRUST:
	case PROTO_RESUME: return m->u.data.len;
	case PROTO_SHUTDOWN: return 0;
	case PROTO_ERROR: return 4u + (size_t)m->u.error.message.len;
	case PROTO_EXEC:
		return 12u + 8u + (size_t)m->u.exec.user.len + m->u.exec.cwd.len + 8u + m->u.exec.argv.raw_len +
		       m->u.exec.env.raw_len;
	case PROTO_STARTED: return 4u;
	case PROTO_EXIT: return 9u + 4u + (size_t)m->u.exit.message.len;
	case PROTO_SIGNAL: return 4u;
	case PROTO_RESIZE: return 4u;
	case PROTO_WINDOW: return 5u;
	default: return (size_t)-1;
	}
}

size_t proto_encoded_size(const struct proto_msg *m)
{
	size_t p = payload_size(m);
	if (p > PROTO_MAX_PAYLOAD)
		return 0;
	return PROTO_HEADER_SIZE + p;
}

void proto_put_header(uint8_t *out, uint32_t length, uint8_t type, uint32_t stream)
{
	put32(out, length);
	out[4] = type;
	out[5] = 0;
	put16(out + 6, 0);
	put32(out + 8, stream);
}

struct writer {
	uint8_t *p;
	size_t off;
};

static void w8(struct writer *w, uint8_t v) { w->p[w->off++] = v; }
static void w16(struct writer *w, uint16_t v)
{
	put16(w->p + w->off, v);
	w->off += 2;
}
static void w32(struct writer *w, uint32_t v)
{
	put32(w->p + w->off, v);
	w->off += 4;
}
static void wraw(struct writer *w, const uint8_t *src, size_t n)
{
	if (n)
		memcpy(w->p + w->off, src, n);
	w->off += n;
}
static void wstr(struct writer *w, struct proto_bytes b)
{
	w32(w, b.len);
	wraw(w, b.ptr, b.len);
}
static void wlist(struct writer *w, const struct proto_strlist *l)
{
	w32(w, l->count);
	wraw(w, l->raw, l->raw_len);
}

size_t proto_encode(const struct proto_msg *m, uint8_t *out, size_t cap)
{
	size_t total = proto_encoded_size(m);
	if (total == 0 || total > cap)
		return 0;
	proto_put_header(out, (uint32_t)(total - PROTO_HEADER_SIZE), m->type, m->stream);
	struct writer w = { out, PROTO_HEADER_SIZE };
	switch (m->type) {
	case PROTO_HELLO:
		w16(&w, m->u.hello.major);
		w16(&w, m->u.hello.minor);
		w32(&w, m->u.hello.features);
		wstr(&w, m->u.hello.version);
		break;
	case PROTO_PING:
	case PROTO_PONG:
	case PROTO_STDIN:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_TRUST:
	case PROTO_RESUME:
		wraw(&w, m->u.data.ptr, m->u.data.len);
		break;
	case PROTO_SHUTDOWN:
		break;
	case PROTO_ERROR:
		wstr(&w, m->u.error.message);
		break;
	case PROTO_EXEC:
		w32(&w, m->u.exec.flags);
		w16(&w, m->u.exec.rows);
		w16(&w, m->u.exec.cols);
		w32(&w, m->u.exec.timeout_ms);
		wstr(&w, m->u.exec.user);
		wstr(&w, m->u.exec.cwd);
		wlist(&w, &m->u.exec.argv);
		wlist(&w, &m->u.exec.env);
		break;
	case PROTO_STARTED:
		w32(&w, m->u.started.pid);
		break;
	case PROTO_EXIT:
		w32(&w, (uint32_t)m->u.exit.code);
		w32(&w, (uint32_t)m->u.exit.signal);
		w8(&w, m->u.exit.reason);
		wstr(&w, m->u.exit.message);
		break;
	case PROTO_SIGNAL:
		w32(&w, (uint32_t)m->u.signal.signo);
		break;
	case PROTO_RESIZE:
		w16(&w, m->u.resize.rows);
		w16(&w, m->u.resize.cols);
		break;
	case PROTO_WINDOW:
		w8(&w, m->u.window.fd);
		w32(&w, m->u.window.bytes);
		break;
	}
	return w.off;
}

/* Text output that keeps counting past the end of the buffer (snprintf style). */
struct text {
	char *p;
	size_t cap, len;
};

static void tput(struct text *t, char c)
{
	if (t->len + 1 < t->cap)
		t->p[t->len] = c;
	t->len++;
}

static void tputs(struct text *t, const char *s)
{
	while (*s)
		tput(t, *s++);
}

static void tuint(struct text *t, uint32_t v)
{
	char tmp[11];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10u);
		v /= 10u;
	} while (v);
	while (n)
		tput(t, tmp[--n]);
}

static void tint(struct text *t, int32_t v)
{
	if (v < 0) {
		tput(t, '-');
		tuint(t, (uint32_t)0 - (uint32_t)v);
	} else {
		tuint(t, (uint32_t)v);
	}
}

static const char hexdigits[] = "0123456789abcdef";

static void thex32(struct text *t, uint32_t v)
{
	tputs(t, "0x");
	for (int shift = 28; shift >= 0; shift -= 4)
		tput(t, hexdigits[(v >> shift) & 0xfu]);
}

static void tdata(struct text *t, struct proto_bytes b)
{
	for (uint32_t i = 0; i < b.len; i++) {
		tput(t, hexdigits[b.ptr[i] >> 4]);
		tput(t, hexdigits[b.ptr[i] & 0xfu]);
	}
}

static void tquote(struct text *t, struct proto_bytes b)
{
	tput(t, '"');
	for (uint32_t i = 0; i < b.len; i++) {
		uint8_t c = b.ptr[i];
		if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') {
			tput(t, (char)c);
		} else {
			tputs(t, "\\x");
			tput(t, hexdigits[c >> 4]);
			tput(t, hexdigits[c & 0xfu]);
		}
	}
	tput(t, '"');
}

static void tlist(struct text *t, const struct proto_strlist *l)
{
	struct proto_bytes item;
	uint32_t pos = 0;
	int first = 1;
	tput(t, '[');
	while (proto_strlist_next(l, &pos, &item)) {
		if (!first)
			tput(t, ',');
		first = 0;
		tquote(t, item);
	}
	tput(t, ']');
}

size_t proto_format(const struct proto_msg *m, char *out, size_t cap)
{
	struct text t = { out, cap, 0 };
	const char *name = proto_type_name(m->type);
	tputs(&t, name ? name : "UNKNOWN");
	tputs(&t, " stream=");
	tuint(&t, m->stream);
	switch (m->type) {
	case PROTO_HELLO:
		tputs(&t, " major=");
		tuint(&t, m->u.hello.major);
		tputs(&t, " minor=");
		tuint(&t, m->u.hello.minor);
		tputs(&t, " features=");
		thex32(&t, m->u.hello.features);
		tputs(&t, " version=");
		tquote(&t, m->u.hello.version);
		break;
	case PROTO_PING:
	case PROTO_PONG:
	case PROTO_STDIN:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_TRUST:
	case PROTO_RESUME:
		tputs(&t, " data=");
		tdata(&t, m->u.data);
		break;
	case PROTO_ERROR:
		tputs(&t, " message=");
		tquote(&t, m->u.error.message);
		break;
	case PROTO_EXEC:
		tputs(&t, " flags=");
		thex32(&t, m->u.exec.flags);
		tputs(&t, " rows=");
		tuint(&t, m->u.exec.rows);
		tputs(&t, " cols=");
		tuint(&t, m->u.exec.cols);
		tputs(&t, " timeout_ms=");
		tuint(&t, m->u.exec.timeout_ms);
		tputs(&t, " user=");
		tquote(&t, m->u.exec.user);
		tputs(&t, " cwd=");
		tquote(&t, m->u.exec.cwd);
		tputs(&t, " argv=");
		tlist(&t, &m->u.exec.argv);
		tputs(&t, " env=");
		tlist(&t, &m->u.exec.env);
		break;
	case PROTO_STARTED:
		tputs(&t, " pid=");
		tuint(&t, m->u.started.pid);
		break;
	case PROTO_EXIT:
		tputs(&t, " code=");
		tint(&t, m->u.exit.code);
		tputs(&t, " signal=");
		tint(&t, m->u.exit.signal);
		tputs(&t, " reason=");
		tuint(&t, m->u.exit.reason);
		tputs(&t, " message=");
		tquote(&t, m->u.exit.message);
		break;
	case PROTO_SIGNAL:
		tputs(&t, " signo=");
		tint(&t, m->u.signal.signo);
		break;
	case PROTO_RESIZE:
		tputs(&t, " rows=");
		tuint(&t, m->u.resize.rows);
		tputs(&t, " cols=");
		tuint(&t, m->u.resize.cols);
		break;
	case PROTO_WINDOW:
		tputs(&t, " fd=");
		tuint(&t, m->u.window.fd);
		tputs(&t, " bytes=");
		tuint(&t, m->u.window.bytes);
		break;
	default:
		break;
	}
	if (cap)
		out[t.len < cap ? t.len : cap - 1] = '\0';
	return t.len;
}
