/*
 * Wire frames of the GeoScale protocol (documented byte by byte in
 * docs/PROTOCOL.md).
 *
 * A frame is a fixed 48-byte header, all integers big-endian, then `body_len`
 * bytes of a packed protobuf message:
 *
 *   off size field
 *   0   4    magic        0x47 0x53 0x50 0x31 ("GSP1")
 *   4   1    version      WIRE_VERSION (1)
 *   5   1    type         1 = request, 2 = response
 *   6   2    method       geoscale.Method
 *   8   8    request_id   chosen by the sender of the request, echoed in
 *                         the response; unique among a connection's
 *                         requests in flight
 *   16  8    client_id    idempotency key, part 1 (0 = none)
 *   24  8    client_seq   idempotency key, part 2
 *   32  4    deadline_ms  request: time the client waits (0 = server default)
 *   36  2    status       response: GS error code as a positive number
 *   38  2    flags        WIRE_FLAG_*
 *   40  4    leader_id    response: node id of the cell leader (0 = unknown)
 *   44  4    body_len     at most the receiver's max frame body
 */
#ifndef GS_NET_WIRE_H
#define GS_NET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0x47535031u
#define WIRE_VERSION 1
#define WIRE_HEADER_SIZE 48

#define WIRE_TYPE_REQUEST 1
#define WIRE_TYPE_RESPONSE 2

#define WIRE_FLAG_FORWARDED 0x0001 /* sent by a node on a client's behalf */

#define WIRE_DEFAULT_MAX_BODY (4u * 1024 * 1024)

struct wire_header {
    uint8_t version;
    uint8_t type;
    uint16_t method;
    uint64_t request_id;
    uint64_t client_id;
    uint64_t client_seq;
    uint32_t deadline_ms;
    uint16_t status; /* positive code; 0 = ok */
    uint16_t flags;
    uint32_t leader_id;
    uint32_t body_len;
};

/* Write the 48-byte header into out. */
void wire_header_encode(const struct wire_header *h, uint8_t out[WIRE_HEADER_SIZE]);

/* Parse a 48-byte header. Returns 0, or GS_EPROTO (bad magic, version or
 * type) or GS_ETOOBIG (body_len > max_body). On error *h may be partly
 * filled (request_id is valid if the magic was) so that an error response
 * can name the request. */
int wire_header_decode(const uint8_t in[WIRE_HEADER_SIZE],
                       uint32_t max_body,
                       struct wire_header *h);

/*
 * Incremental frame reader for one connection. Feed bytes as they arrive;
 * take complete frames out. Memory: a frame body is allocated only after its
 * header passed wire_header_decode (so an oversized length is rejected before
 * any allocation), and at most one frame is buffered at a time.
 */
struct wire_reader {
    uint32_t max_body;
    uint8_t header_buf[WIRE_HEADER_SIZE];
    size_t header_have;
    struct wire_header header;
    uint8_t *body;
    size_t body_have;
    int error; /* sticky: once set, the connection must be closed */
};

void wire_reader_init(struct wire_reader *r, uint32_t max_body);
void wire_reader_close(struct wire_reader *r);

/*
 * Consume up to len bytes from data. Returns the number of bytes consumed
 * (<= len) and sets *frame_ready when a whole frame is available; then call
 * wire_reader_take() before feeding more. Returns a negative GS_E* code on a
 * protocol violation (the reader is then unusable).
 */
long wire_reader_feed(struct wire_reader *r,
                      const uint8_t *data,
                      size_t len,
                      int *frame_ready);

/* Take the ready frame: *h receives the header, *body the malloc'd body
 * (NULL if body_len == 0), which the caller frees. Resets the reader. */
void wire_reader_take(struct wire_reader *r, struct wire_header *h, uint8_t **body);

#endif /* GS_NET_WIRE_H */
