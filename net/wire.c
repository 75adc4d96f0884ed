/*
 * Wire frames of the GeoScale protocol (see wire.h and docs/PROTOCOL.md).
 *
 * Design:
 *
 * - The header is encoded and decoded field by field with explicit shifts,
 *   so the byte order (big-endian) does not depend on the host and no struct
 *   is ever copied onto the wire.
 *
 * - The reader is a two-phase state machine per connection: first it fills
 *   the fixed 48-byte header buffer, then it validates the header and only
 *   then allocates exactly body_len bytes and fills them. An attacker who
 *   announces a 4 GiB body therefore costs us nothing: the length is checked
 *   against max_body before malloc. The reader stops consuming as soon as a
 *   frame is complete, so bytes of the next frame stay with the caller until
 *   the ready frame has been taken; one frame at most is buffered.
 *
 * - Errors are sticky: once a header failed to decode the stream position is
 *   lost (we cannot know where the next frame starts), so every later feed
 *   returns the same error and the connection must be closed.
 */
#include "net/wire.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "geoscale/errors.h"

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

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void wire_header_encode(const struct wire_header *h, uint8_t out[WIRE_HEADER_SIZE])
{
    put32(out + 0, WIRE_MAGIC);
    out[4] = h->version;
    out[5] = h->type;
    put16(out + 6, h->method);
    put64(out + 8, h->request_id);
    put64(out + 16, h->client_id);
    put64(out + 24, h->client_seq);
    put32(out + 32, h->deadline_ms);
    put16(out + 36, h->status);
    put16(out + 38, h->flags);
    put32(out + 40, h->leader_id);
    put32(out + 44, h->body_len);
}

int wire_header_decode(const uint8_t in[WIRE_HEADER_SIZE], uint32_t max_body, struct wire_header *h)
{
    memset(h, 0, sizeof *h);
    if (get32(in) != WIRE_MAGIC) {
        return GS_EPROTO;
    }
    /* From here on the frame is ours: fill every field before validating, so
     * that an error response can echo request_id. */
    h->version = in[4];
    h->type = in[5];
    h->method = get16(in + 6);
    h->request_id = get64(in + 8);
    h->client_id = get64(in + 16);
    h->client_seq = get64(in + 24);
    h->deadline_ms = get32(in + 32);
    h->status = get16(in + 36);
    h->flags = get16(in + 38);
    h->leader_id = get32(in + 40);
    h->body_len = get32(in + 44);
    if (h->version != WIRE_VERSION) {
        return GS_EPROTO;
    }
    if (h->type != WIRE_TYPE_REQUEST && h->type != WIRE_TYPE_RESPONSE) {
        return GS_EPROTO;
    }
    if (h->body_len > max_body) {
        return GS_ETOOBIG;
    }
    return 0;
}

void wire_reader_init(struct wire_reader *r, uint32_t max_body)
{
    memset(r, 0, sizeof *r);
    r->max_body = max_body;
}

void wire_reader_close(struct wire_reader *r)
{
    free(r->body);
    r->body = NULL;
    r->header_have = 0;
    r->body_have = 0;
}

/* A frame is ready when its header is complete and valid and its body full. */
static int reader_ready(const struct wire_reader *r)
{
    return r->error == 0 && r->header_have == WIRE_HEADER_SIZE &&
           r->body_have == r->header.body_len;
}

long wire_reader_feed(struct wire_reader *r, const uint8_t *data, size_t len, int *frame_ready)
{
    size_t used = 0;
    int rv;

    *frame_ready = 0;
    if (r->error != 0) {
        return r->error;
    }
    if (reader_ready(r)) {
        /* The previous frame was not taken yet: consume nothing. */
        *frame_ready = 1;
        return 0;
    }
    if (len == 0) {
        return 0;
    }
    if (r->header_have < WIRE_HEADER_SIZE) {
        size_t n = WIRE_HEADER_SIZE - r->header_have;
        if (n > len) {
            n = len;
        }
        memcpy(r->header_buf + r->header_have, data, n);
        r->header_have += n;
        used += n;
        if (r->header_have < WIRE_HEADER_SIZE) {
            return (long)used;
        }
        rv = wire_header_decode(r->header_buf, r->max_body, &r->header);
        if (rv != 0) {
            r->error = rv;
            return rv;
        }
        assert(r->body == NULL && r->body_have == 0);
        if (r->header.body_len > 0) {
            r->body = malloc(r->header.body_len);
            if (r->body == NULL) {
                r->error = GS_ENOMEM;
                return GS_ENOMEM;
            }
        }
    }
    if (r->body_have < r->header.body_len && used < len) {
        size_t n = r->header.body_len - r->body_have;
        if (n > len - used) {
            n = len - used;
        }
        memcpy(r->body + r->body_have, data + used, n);
        r->body_have += n;
        used += n;
    }
    if (reader_ready(r)) {
        *frame_ready = 1;
    }
    return (long)used;
}

void wire_reader_take(struct wire_reader *r, struct wire_header *h, uint8_t **body)
{
    assert(reader_ready(r));
    *h = r->header;
    *body = r->body;
    r->body = NULL;
    r->body_have = 0;
    r->header_have = 0;
}
