/*
 * Key-value access of the cell handlers (see cell_internal.h).
 *
 * During apply, every read goes through the entry's WriteBatchWithIndex
 * (rocksdb_writebatch_wi_get_from_batch_and_db, and an iterator "with base"
 * that merges the batch over a DB iterator), so a command sees the writes of
 * the commands before it in the same entry. The batch is created with
 * overwrite_key = 1, which the merged iterator requires. For read-only
 * requests the same calls read the DB directly.
 */
#include "cell_internal.h"

#include <assert.h>
#include <stdlib.h>

#include "geoscale/errors.h"
#include "log.h"

static int cell_kv_error(char *err)
{
    /* RocksDB messages name files and keys; keys hold no PII. */
    log_error("cell", "event=rocksdb_error err=\"%s\"", err);
    rocksdb_free(err);
    return GS_EIO;
}

int cell_kv_get(struct cell_ctx *ctx, const struct key *k, char **val, size_t *len)
{
    char *err = NULL;
    char *v;
    if (ctx->wb != NULL) {
        v = rocksdb_writebatch_wi_get_from_batch_and_db(ctx->wb, ctx->fsm->db, ctx->fsm->readopts,
                                                        (const char *)k->b, k->len, len, &err);
    } else {
        v = rocksdb_get(ctx->fsm->db, ctx->fsm->readopts, (const char *)k->b, k->len, len, &err);
    }
    if (err != NULL) {
        return cell_kv_error(err);
    }
    if (v == NULL) {
        return GS_ENOTFOUND;
    }
    *val = v;
    return 0;
}

int cell_kv_exists(struct cell_ctx *ctx, const struct key *k, bool *exists)
{
    char *v = NULL;
    size_t len = 0;
    int rv = cell_kv_get(ctx, k, &v, &len);
    if (rv == GS_ENOTFOUND) {
        *exists = false;
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    rocksdb_free(v);
    *exists = true;
    return 0;
}

int cell_kv_get_msg(struct cell_ctx *ctx, const struct key *k,
                    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    char *v = NULL;
    size_t len = 0;
    int rv = cell_kv_get(ctx, k, &v, &len);
    if (rv != 0) {
        return rv;
    }
    static const uint8_t empty[1];
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, len, len > 0 ? (const uint8_t *)v : empty);
    rocksdb_free(v);
    if (m == NULL) {
        log_error("cell", "event=corrupt_record prefix=%c", (char)k->b[0]);
        return GS_EIO;
    }
    *out = m;
    return 0;
}

int cell_kv_get_u64(struct cell_ctx *ctx, const struct key *k, uint64_t *out)
{
    char *v = NULL;
    size_t len = 0;
    int rv = cell_kv_get(ctx, k, &v, &len);
    if (rv != 0) {
        return rv;
    }
    if (len != 8) {
        rocksdb_free(v);
        log_error("cell", "event=corrupt_record prefix=%c", (char)k->b[0]);
        return GS_EIO;
    }
    *out = key_get_u64((const uint8_t *)v);
    rocksdb_free(v);
    return 0;
}

void cell_kv_put(struct cell_ctx *ctx, const struct key *k, const void *val, size_t len)
{
    assert(ctx->wb != NULL);
    rocksdb_writebatch_wi_put(ctx->wb, (const char *)k->b, k->len, val, len);
}

void cell_kv_put_u64(struct cell_ctx *ctx, const struct key *k, uint64_t v)
{
    uint8_t buf[8];
    key_put_u64(buf, v);
    cell_kv_put(ctx, k, buf, sizeof buf);
}

int cell_kv_put_msg(struct cell_ctx *ctx, const struct key *k, const ProtobufCMessage *msg)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = cell_pack(msg, &buf, &len);
    if (rv != 0) {
        return rv;
    }
    cell_kv_put(ctx, k, buf, len);
    free(buf);
    return 0;
}

void cell_kv_delete(struct cell_ctx *ctx, const struct key *k)
{
    assert(ctx->wb != NULL);
    rocksdb_writebatch_wi_delete(ctx->wb, (const char *)k->b, k->len);
}

rocksdb_iterator_t *cell_kv_iter(struct cell_ctx *ctx)
{
    rocksdb_iterator_t *base = rocksdb_create_iterator(ctx->fsm->db, ctx->fsm->readopts);
    if (ctx->wb == NULL) {
        return base;
    }
    /* The merged iterator takes ownership of `base`. */
    return rocksdb_writebatch_wi_create_iterator_with_base(ctx->wb, base);
}

int cell_kv_iter_status(rocksdb_iterator_t *it)
{
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        return cell_kv_error(err);
    }
    return 0;
}

int cell_pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        return GS_ENOMEM;
    }
    size_t packed = protobuf_c_message_pack(msg, buf);
    assert(packed == n);
    (void)packed;
    *body = buf;
    *len = n;
    return 0;
}
