/* Wire format of docs/protocol.md: pure codec, no I/O, no allocation.
 *
 * Decoded messages point into the caller's frame buffer (strings and data
 * are byte views, not NUL-terminated copies), so decoding a frame costs no
 * memory and a malformed length can never make us allocate. */
#ifndef BOXLITE_PROTO_H
#define BOXLITE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_HEADER_SIZE 12u
#define PROTO_MAX_PAYLOAD (256u * 1024u)
#define PROTO_MAX_FRAME (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD)
#define PROTO_MAX_LIST 4096u
#define PROTO_MAJOR 1u
#define PROTO_MINOR 0u

/* Flow control (section 5). */
#define PROTO_STDIN_WINDOW (256u * 1024u)
#define PROTO_OUTPUT_WINDOW (1024u * 1024u)
#define PROTO_MAX_CREDIT 0x80000000u

/* HELLO feature bits. */
#define PROTO_FEAT_EXEC 0x1u
#define PROTO_FEAT_TTY 0x2u
#define PROTO_FEAT_WINDOW 0x4u
#define PROTO_FEAT_TIMEOUT 0x8u
#define PROTO_FEAT_TOOL 0x10u /* EXEC flag TOOL: the agent toolbox */
#define PROTO_FEAT_MAIN 0x20u /* EXEC flag MAIN: the image's main process as the container's PID 1 */
#define PROTO_FEAT_TRUST 0x40u /* TRUST: a CA certificate added to the container's trust store */
#define PROTO_FEAT_RESUME 0x80u /* RESUME: booted with boxlite.template, restorable (fast start); only such a boot advertises it */
#define PROTO_FEAT_FORK 0x100u /* RESUME with boxlite.fork: a running VM's memory was copied into a new VM (box.fork()) */
#define PROTO_FEAT_FORK_MAIN 0x200u /* RESUME word boxlite.fork.main=<id>: the main process re-keyed to that stream, STARTED again */
#define PROTO_FEAT_ALL \
	(PROTO_FEAT_EXEC | PROTO_FEAT_TTY | PROTO_FEAT_WINDOW | PROTO_FEAT_TIMEOUT | PROTO_FEAT_TOOL | PROTO_FEAT_MAIN | \
	 PROTO_FEAT_TRUST)

/* EXEC flags. */
#define PROTO_EXEC_TTY 0x1u
#define PROTO_EXEC_TOOL 0x2u /* argv[0] names a program of the agent's toolbox */
#define PROTO_EXEC_MAIN 0x4u /* the container's init: it is created with this process as its PID 1 */

enum proto_type {
	PROTO_HELLO = 0x01,
	PROTO_PING = 0x02,
	PROTO_PONG = 0x03,
	PROTO_SHUTDOWN = 0x04,
	PROTO_ERROR = 0x05,
	PROTO_TRUST = 0x06, /* stream 0, host to agent: PEM certificates (the box's secrets CA) */
	PROTO_RESUME = 0x07, /* stream 0, host to agent: a restored template's boot words (docs/fast-start.md) */
	PROTO_EXEC = 0x10,
	PROTO_STARTED = 0x11,
	PROTO_STDIN = 0x12,
	PROTO_STDOUT = 0x13,
	PROTO_STDERR = 0x14,
	PROTO_EXIT = 0x15,
	PROTO_SIGNAL = 0x16,
	PROTO_RESIZE = 0x17,
	PROTO_WINDOW = 0x18,
};

enum proto_reason {
	PROTO_REASON_EXITED = 0,
	PROTO_REASON_SIGNALED = 1,
	PROTO_REASON_TIMED_OUT = 2,
	PROTO_REASON_SPAWN_FAILED = 3,
};

/* Decode results; the names are the `error:<kind>` strings of section 7. */
enum proto_status {
	PROTO_OK = 0,
	PROTO_ERR_TRUNCATED = -1,
	PROTO_ERR_TOO_LARGE = -2,
	PROTO_ERR_BAD_HEADER = -3,
	PROTO_ERR_UNKNOWN_TYPE = -4,
	PROTO_ERR_BAD_STREAM = -5,
	PROTO_ERR_BAD_PAYLOAD = -6,
};

struct proto_bytes {
	const uint8_t *ptr;
	uint32_t len;
};

/* A validated `strlist`: `raw` holds `count` encoded `str`s back to back. */
struct proto_strlist {
	uint32_t count;
	const uint8_t *raw;
	uint32_t raw_len;
};

struct proto_header {
	uint32_t length;
	uint8_t type;
	uint32_t stream;
};

struct proto_msg {
	uint8_t type;
	uint32_t stream;
	union {
		struct {
			uint16_t major, minor;
			uint32_t features;
			struct proto_bytes version;
		} hello;
		struct proto_bytes data; /* PING PONG STDIN STDOUT STDERR TRUST RESUME */
		struct {
			struct proto_bytes message;
		} error;
		struct {
			uint32_t flags;
			uint16_t rows, cols;
			uint32_t timeout_ms;
			struct proto_bytes user, cwd;
			struct proto_strlist argv, env;
		} exec;
		struct {
			uint32_t pid;
		} started;
		struct {
			int32_t code, signal;
			uint8_t reason;
			struct proto_bytes message;
		} exit;
		struct {
			int32_t signo;
		} signal;
		struct {
			uint16_t rows, cols;
		} resize;
		struct {
			uint8_t fd;
			uint32_t bytes;
		} window;
	} u;
};

/* "truncated", "too_large", ... for a negative status; "ok" for PROTO_OK. */
const char *proto_status_name(int status);
/* "HELLO", "EXEC", ...; NULL for a type this codec does not know. */
const char *proto_type_name(uint8_t type);

/* Checks a 12-byte header (size, flags, type, stream rule). */
int proto_check_header(const uint8_t *hdr, struct proto_header *out);

/* For a byte stream: how long is the frame at the start of buf?
 * Returns the full frame length when it is all in buf, 0 when more bytes are
 * needed, or a negative status when the header is invalid (then *hdr holds
 * what was parsed, for skipping). */
long proto_frame_ready(const uint8_t *buf, size_t have, struct proto_header *hdr);

/* Decodes exactly one complete frame of n bytes. On success m points into frame. */
int proto_decode(const uint8_t *frame, size_t n, struct proto_msg *m);

/* Iterates a decoded strlist: *pos starts at 0; returns 1 with *out set, 0 at the end. */
int proto_strlist_next(const struct proto_strlist *l, uint32_t *pos, struct proto_bytes *out);

/* Frame length m encodes to (header included), or 0 if the payload exceeds MAX_PAYLOAD. */
size_t proto_encoded_size(const struct proto_msg *m);
/* Encodes m into out; returns the frame length, or 0 if it does not fit in cap. */
size_t proto_encode(const struct proto_msg *m, uint8_t *out, size_t cap);
/* Writes a frame header for a payload the caller places right after it. */
void proto_put_header(uint8_t *out, uint32_t length, uint8_t type, uint32_t stream);

/* Canonical text of section 7, snprintf-style: writes at most cap bytes
 * (NUL included) and returns the length the full text needs. A buffer of
 * proto_format_cap() bytes always suffices. */
size_t proto_format(const struct proto_msg *m, char *out, size_t cap);
#define proto_format_cap() ((size_t)PROTO_MAX_PAYLOAD * 4u + 256u)

#endif
