/* libFuzzer target for the guest decoder (build: make -C guest fuzz).
 * Properties checked on every input:
 *  - decoding never reads out of bounds (ASan) or hits UB (UBSan);
 *  - a frame that decodes re-encodes to exactly the same bytes;
 *  - its canonical text fits the documented bound;
 *  - the stream splitter agrees with the one-shot decoder. */
#include "../src/proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *text;
static uint8_t *reenc;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!text) {
		text = malloc(proto_format_cap());
		reenc = malloc(PROTO_MAX_FRAME);
		if (!text || !reenc)
			abort();
	}

	struct proto_msg m;
	int rc = proto_decode(data, size, &m);
	if (rc == PROTO_OK) {
		size_t need = proto_format(&m, text, proto_format_cap());
		if (need >= proto_format_cap() || strlen(text) != need)
			__builtin_trap();
		size_t n = proto_encode(&m, reenc, PROTO_MAX_FRAME);
		if (n != size || memcmp(reenc, data, size) != 0)
			__builtin_trap();
		struct proto_bytes item;
		uint32_t pos = 0, count = 0;
		if (m.type == PROTO_EXEC) {
			while (proto_strlist_next(&m.u.exec.argv, &pos, &item))
				count++;
			if (count != m.u.exec.argv.count || pos != m.u.exec.argv.raw_len)
				__builtin_trap();
		}
	} else if (rc > PROTO_OK || rc < PROTO_ERR_BAD_PAYLOAD) {
		__builtin_trap();
	}

	/* Treat the input as a byte stream of frames, as the agent link does. */
	size_t off = 0;
	while (off < size) {
		struct proto_header h;
		long r = proto_frame_ready(data + off, size - off, &h);
		if (r <= 0)
			break;
		struct proto_msg sub;
		int src = proto_decode(data + off, (size_t)r, &sub);
		if (src == PROTO_ERR_TRUNCATED || src == PROTO_ERR_TOO_LARGE)
			__builtin_trap(); /* the splitter said the frame was complete */
		off += (size_t)r;
	}
	return 0;
}
