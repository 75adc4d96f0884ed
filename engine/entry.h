/*
 * Raft entry format of a cell.
 *
 *   offset size
 *   0      1    format version (ENTRY_FORMAT_V1)
 *   1      3    zero
 *   4      4    body length, little endian
 *   8      n    body: a packed geoscale.CellBatch
 *   8+n    p    zero padding so that the total is a multiple of 8
 *                (raft_uv rejects other lengths)
 */
#ifndef GS_ENGINE_ENTRY_H
#define GS_ENGINE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "geoscale.pb-c.h"

#define ENTRY_FORMAT_V1 1
#define ENTRY_HEADER_SIZE 8

/* Size of the encoded entry for a batch (header + packed batch + padding). */
size_t entry_encoded_size(const Geoscale__CellBatch *batch);

/* Encode into buf, which has entry_encoded_size(batch) bytes (the caller
 * allocates it, e.g. with raft_malloc). Returns the number of bytes written. */
size_t entry_encode(const Geoscale__CellBatch *batch, uint8_t *buf);

/* Decode an entry. Returns 0 and *out (free with
 * geoscale__cell_batch__free_unpacked(*out, NULL)), or GS_EPROTO. */
int entry_decode(const void *buf, size_t len, Geoscale__CellBatch **out);

#endif /* GS_ENGINE_ENTRY_H */
