/*
 * Raft entry format of a cell (layout in entry.h).
 *
 * The 8-byte header carries a format version so the layout can evolve, and
 * the body length so the zero padding that raft_uv requires (entries are a
 * multiple of 8 bytes) can be told apart from the protobuf body. Decoding is
 * strict: wrong version, non-zero reserved or padding bytes, a length that
 * does not match the buffer or a body that is not a CellBatch all give
 * GS_EPROTO, so a corrupt entry is never half-understood.
 */
#include "entry.h"

#include <assert.h>
#include <string.h>

#include "geoscale/errors.h"

static size_t entry_padded(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

size_t entry_encoded_size(const Geoscale__CellBatch *batch)
{
    size_t body = protobuf_c_message_get_packed_size(&batch->base);
    return entry_padded(ENTRY_HEADER_SIZE + body);
}

size_t entry_encode(const Geoscale__CellBatch *batch, uint8_t *buf)
{
    size_t body = protobuf_c_message_get_packed_size(&batch->base);
    size_t total = entry_padded(ENTRY_HEADER_SIZE + body);
    assert(body <= UINT32_MAX);
    buf[0] = ENTRY_FORMAT_V1;
    buf[1] = buf[2] = buf[3] = 0;
    buf[4] = (uint8_t)(body & 0xff);
    buf[5] = (uint8_t)((body >> 8) & 0xff);
    buf[6] = (uint8_t)((body >> 16) & 0xff);
    buf[7] = (uint8_t)((body >> 24) & 0xff);
    size_t packed = protobuf_c_message_pack(&batch->base, buf + ENTRY_HEADER_SIZE);
    assert(packed == body);
    (void)packed;
    memset(buf + ENTRY_HEADER_SIZE + body, 0, total - ENTRY_HEADER_SIZE - body);
    return total;
}

int entry_decode(const void *buf, size_t len, Geoscale__CellBatch **out)
{
    const uint8_t *p = buf;
    *out = NULL;
    if (p == NULL || len < ENTRY_HEADER_SIZE || len % 8 != 0) {
        return GS_EPROTO;
    }
    if (p[0] != ENTRY_FORMAT_V1 || p[1] != 0 || p[2] != 0 || p[3] != 0) {
        return GS_EPROTO;
    }
    size_t body = (size_t)p[4] | (size_t)p[5] << 8 | (size_t)p[6] << 16 | (size_t)p[7] << 24;
    if (body > len - ENTRY_HEADER_SIZE || entry_padded(ENTRY_HEADER_SIZE + body) != len) {
        return GS_EPROTO;
    }
    for (size_t i = ENTRY_HEADER_SIZE + body; i < len; i++) {
        if (p[i] != 0) {
            return GS_EPROTO;
        }
    }
    Geoscale__CellBatch *batch = geoscale__cell_batch__unpack(NULL, body, p + ENTRY_HEADER_SIZE);
    if (batch == NULL) {
        return GS_EPROTO;
    }
    *out = batch;
    return 0;
}
