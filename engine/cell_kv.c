/*
 * Key-value access of the cell handlers (see cell_internal.h), over the
 * rsm base (rsm.h).
 *
 * During apply the rsm is inside the entry, so every read goes through the
 * entry's WriteBatchWithIndex and a command sees the writes of the commands
 * before it in the same entry. For read-only requests the same calls read
 * the DB directly. These wrappers keep the handlers' vocabulary (a cell_ctx)
 * while the mechanics live in the base, shared with the other groups.
 */
#include "cell_internal.h"
#include "geoscale/errors.h"

#include <stdlib.h>
#include <string.h>

int cell_kv_get(struct cell_ctx *ctx, const struct key *k, char **val, size_t *len)
{
    return rsm_get(&ctx->fsm->rsm, k, val, len);
}

int cell_kv_exists(struct cell_ctx *ctx, const struct key *k, bool *exists)
{
    return rsm_exists(&ctx->fsm->rsm, k, exists);
}

int cell_kv_get_msg(struct cell_ctx *ctx, const struct key *k,
                    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    return rsm_get_msg(&ctx->fsm->rsm, k, desc, out);
}

int cell_kv_get_u64(struct cell_ctx *ctx, const struct key *k, uint64_t *out)
{
    return rsm_get_u64(&ctx->fsm->rsm, k, out);
}

int cell_kv_get_u64_or_0(struct cell_ctx *ctx, const struct key *k, uint64_t *v)
{
    return rsm_get_u64_or_0(&ctx->fsm->rsm, k, v);
}

void cell_kv_put(struct cell_ctx *ctx, const struct key *k, const void *val, size_t len)
{
    rsm_put(&ctx->fsm->rsm, k, val, len);
}

void cell_kv_put_u64(struct cell_ctx *ctx, const struct key *k, uint64_t v)
{
    rsm_put_u64(&ctx->fsm->rsm, k, v);
}

int cell_kv_put_msg(struct cell_ctx *ctx, const struct key *k, const ProtobufCMessage *msg)
{
    return rsm_put_msg(&ctx->fsm->rsm, k, msg);
}

void cell_kv_delete(struct cell_ctx *ctx, const struct key *k)
{
    rsm_delete(&ctx->fsm->rsm, k);
}

/* Byte order of keys, as RocksDB's default comparator. */
static int key_cmp_raw(const char *a, size_t alen, const struct key *b)
{
    size_t n = alen < b->len ? alen : b->len;
    int c = memcmp(a, b->b, n);
    if (c != 0) {
        return c;
    }
    return alen < b->len ? -1 : alen > b->len;
}

int cell_kv_delete_range(struct cell_ctx *ctx, const struct key *first, const struct key *last,
                         uint64_t *deleted)
{
    struct key *keys = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;

    *deleted = 0;
    /* Collect first: the entry's batch is not written while its iterator
     * is open. The ranges deleted are what a shipper delivered, a few
     * hundred keys at most. */
    rocksdb_iterator_t *it = cell_kv_iter(ctx);
    for (rocksdb_iter_seek(it, (const char *)first->b, first->len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        int c = key_cmp_raw(kraw, klen, last);
        if (c > 0 || klen > KEY_MAX) {
            break;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            struct key *grown = realloc(keys, ncap * sizeof *keys);
            if (grown == NULL) {
                rv = GS_ENOMEM;
                goto out;
            }
            keys = grown;
            cap = ncap;
        }
        memcpy(keys[n].b, kraw, klen);
        keys[n].len = klen;
        n++;
        if (c == 0) {
            break; /* not a step further: past `last` may lie tombstones only */
        }
    }
    rv = cell_kv_iter_status(it);
    if (rv != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        cell_kv_delete(ctx, &keys[i]);
    }
    *deleted = n;
out:
    rocksdb_iter_destroy(it);
    free(keys);
    return rv;
}

rocksdb_iterator_t *cell_kv_iter(struct cell_ctx *ctx)
{
    return rsm_iter(&ctx->fsm->rsm);
}

int cell_kv_iter_status(rocksdb_iterator_t *it)
{
    return rsm_iter_status(it);
}

int cell_pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    return rsm_pack(msg, body, len);
}
