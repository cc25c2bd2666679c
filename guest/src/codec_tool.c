/* codec-tool: the C codec as a stdin/stdout program (docs/protocol.md section 7).
 * Reads one hex-encoded frame per line and prints, per line, the canonical
 * text of the decoded frame or `error:<kind>`. Lines that are not hex give
 * `error:bad_hex` (not a protocol error kind: the input itself is unusable). */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex in place into bytes; returns the byte count or -1. */
static long unhex(char *s, size_t n)
{
	if (n % 2)
		return -1;
	unsigned char *out = (unsigned char *)s;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	return (long)(n / 2);
}

int main(void)
{
	char *line = NULL;
	size_t linecap = 0;
	ssize_t got;
	size_t cap = proto_format_cap();
	char *text = malloc(cap);
	if (!text)
		return 1;
	while ((got = getline(&line, &linecap, stdin)) >= 0) {
		size_t n = (size_t)got;
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
			n--;
		size_t start = 0;
		while (start < n && (line[start] == ' ' || line[start] == '\t'))
			start++;
		long len = unhex(line + start, n - start);
		if (len < 0) {
			puts("error:bad_hex");
		} else {
			struct proto_msg m;
			int rc = proto_decode((const uint8_t *)line + start, (size_t)len, &m);
			if (rc != PROTO_OK) {
				printf("error:%s\n", proto_status_name(rc));
			} else {
				proto_format(&m, text, cap);
				puts(text);
			}
		}
		fflush(stdout);
	}
	free(line);
	free(text);
	return 0;
}
