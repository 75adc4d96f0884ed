/*
 * Raft entry format of the directory: engine/entry.h's framing (format
 * version, body length, zero padding to a multiple of 8) around a packed
 * DirectoryBatch instead of a CellBatch. Decoding is as strict as a cell's.
 * DirectoryBatch has CellBatch's field numbers and wire types, so a
 * CellBatch whose methods are directory command kinds decodes here too.
 */
#include <assert.h>
#include <string.h>

#include "directory_fsm.h"
#include "entry.h"
#include "geoscale/errors.h"

static size_t padded(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

size_t directory_entry_encoded_size(const Geoscale__DirectoryBatch *batch)
{
    return padded(ENTRY_HEADER_SIZE + protobuf_c_message_get_packed_size(&batch->base));
}

size_t directory_entry_encode(const Geoscale__DirectoryBatch *batch, uint8_t *buf)
{
    size_t body = protobuf_c_message_get_packed_size(&batch->base);
    size_t total = padded(ENTRY_HEADER_SIZE + body);
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

int directory_entry_decode(const void *buf, size_t len, Geoscale__DirectoryBatch **out)
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
    if (body > len - ENTRY_HEADER_SIZE || padded(ENTRY_HEADER_SIZE + body) != len) {
        return GS_EPROTO;
    }
    for (size_t i = ENTRY_HEADER_SIZE + body; i < len; i++) {
        if (p[i] != 0) {
            return GS_EPROTO;
        }
    }
    Geoscale__DirectoryBatch *batch =
        geoscale__directory_batch__unpack(NULL, body, p + ENTRY_HEADER_SIZE);
    if (batch == NULL) {
        return GS_EPROTO;
    }
    *out = batch;
    return 0;
}
