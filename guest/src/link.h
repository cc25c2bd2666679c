/* The agent link: the virtio-serial port "boxlite.agent" in the VM, or a
 * unix socket in --host-mode. Owns frame input (splitting, validation) and
 * the output queue; survives the host disconnecting and reconnecting. */
#ifndef BOXLITE_LINK_H
#define BOXLITE_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Called for every valid frame from the host. */
typedef void (*link_frame_fn)(const struct proto_msg *m);

/* VM: finds the port by name under /sys/class/virtio-ports and opens it
 * (waits for it to appear). Returns 0, or -1 if it never appeared. */
int link_open_port(const char *name, unsigned wait_ms);
/* Host mode: the link is a connection to the unix socket at path. */
void link_use_socket(const char *path);
void link_set_handler(link_frame_fn fn);
/* Leaves these bits out of our HELLO (host mode, --features): lets host tests
 * play an older agent without building one. */
void link_withhold_features(uint32_t mask);
/* Bits beyond PROTO_FEAT_ALL that this boot offers (RESUME in a template VM). */
void link_add_features(uint32_t mask);

/* Poll integration: fd and events to poll (fd -1: nothing to poll now). */
int link_poll_fd(short *events);
/* Milliseconds until link_tick() wants to run again (-1: no need). */
int link_timeout_ms(uint64_t now);
void link_on_poll(short revents);
/* Reconnect checks while the host is away, and output flushing. */
void link_tick(void);
int link_is_up(void);

/* Output. Frames are queued and written when the host can take them. */
void link_send(const struct proto_msg *m);
/* Our HELLO (version, features). One also goes out first on every (re)connect. */
void link_send_hello(void);
void link_send_error(uint32_t stream, const char *f, ...) __attribute__((format(printf, 2, 3)));
size_t link_queued_bytes(void);

/* Zero-copy data frames: reserve room for a payload, fill it, commit. */
struct link_chunk;
struct link_chunk *link_chunk_new(size_t payload_cap);
uint8_t *link_chunk_payload(struct link_chunk *c);
void link_chunk_commit(struct link_chunk *c, uint8_t type, uint32_t stream, size_t payload_len);
void link_chunk_free(struct link_chunk *c);

#endif
