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
