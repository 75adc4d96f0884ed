/*
 * The directory state machine (contract in directory_fsm.h): open, apply,
 * read, digest, sync, over the replicated-state-machine base (rsm.h), in the
 * same shape as the cell FSM (cell_fsm.c): one entry = one DirectoryBatch =
 * one WriteBatch with applied_index, replays skipped, commands remembered by
 * idempotency key, a command's failure is its own result, GS_EIO/GS_ENOMEM
 * fail the entry.
 *
 * Expiry. Every entry first deletes at most DIRECTORY_EXPIRE_MAX RESERVED
 * reservations whose expires_at_ms <= the batch's timestamp, walking the 'x'
 * index in order, then at most DIRECTORY_RESULT_EXPIRE_MAX stored results
 * older than DIRECTORY_RESULT_TTL_MS. Batch time, not the local clock: every
 * replica deletes the same rows.
 *
 * Most index rows are deleted before they expire (the signup commits or
 * releases its reservation), and a deleted row stays a tombstone in RocksDB
 * until compaction. A walk from the index's first key to its first live row
 * would step over all of them on every entry. So the walk starts at 'S'
 * reservations_expired (the batch time it had reached: the entry's own once
 * it found fewer rows than its bound, else the last row's) and ends at the
 * batch time, and no reservation expires below that start
 * (reserve_username in directory_ops.c).
 *
 * Schema. 'S' schema (= DIRECTORY_SCHEMA_VERSION) and 'S' directory_shard are
 * written when the DB is created; open refuses a newer schema, another
 * shard's DB, and a cell's DB (it has no directory_shard).
 */
#include "directory_fsm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "directory_internal.h"
#include "geoscale/errors.h"
#include "log.h"

#define DIRECTORY_RESULT_TTL_MS (3600 * 1000)
#define DIRECTORY_RESULT_EXPIRE_MAX 256

static bool is_fatal(int rv)
{
    return rv == GS_EIO || rv == GS_ENOMEM;
}

/* ---------------------------------------------------------------- open/close */

int directory_fsm_open(const struct directory_fsm_options *opts, struct directory_fsm **out,
                       char *errmsg, size_t errmsg_len)
{
    char scratch[1];
    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    *out = NULL;
    if (opts == NULL) {
        snprintf(errmsg, errmsg_len, "options: required");
        return GS_EINVAL;
    }
    struct directory_fsm *fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    struct rsm_options ro = {.db_path = opts->db_path,
                             .compression = opts->compression,
                             .kind = "directory",
                             .schema_version = DIRECTORY_SCHEMA_VERSION,
                             .identity_key = DIR_SYS_SHARD};
    int rv = rsm_open_shard(&fsm->rsm, &ro, opts->shard_id, opts->n_shards, &fsm->n_shards,
                            errmsg, errmsg_len);
    if (rv != 0) {
        free(fsm);
        return rv;
    }
    fsm->shard_id = opts->shard_id;
    *out = fsm;
    return 0;
}

void directory_fsm_close(struct directory_fsm *fsm)
{
    if (fsm == NULL) {
        return;
    }
    rsm_close(&fsm->rsm);
    free(fsm);
}

uint64_t directory_fsm_applied_index(const struct directory_fsm *fsm)
{
    return rsm_applied_index(&fsm->rsm);
}

int directory_fsm_sync(struct directory_fsm *fsm)
{
    return rsm_sync(&fsm->rsm);
}

int directory_fsm_digest(struct directory_fsm *fsm, uint8_t digest[32], uint64_t *n_keys)
{
    return rsm_digest(&fsm->rsm, digest, n_keys);
}

/* ---------------------------------------------------------------- expiry */

struct expired {
    int64_t expires_at_ms;
    uint64_t user_id;
    uint8_t hash[DIRECTORY_HASH_LEN];
    bool hash_ok;
};

/* Delete up to DIRECTORY_EXPIRE_MAX reservations expired at ctx->now_ms. */
static int expire_reservations(struct dir_ctx *ctx)
{
    struct rsm *r = &ctx->fsm->rsm;
    struct expired found[DIRECTORY_EXPIRE_MAX];
    size_t n = 0;
    struct key start, end;
    int64_t walked = INT64_MIN;
    int rv;

    rv = dir_reservations_expired_get(ctx, &walked);
    if (rv != 0) {
        return rv;
    }
    if (walked == INT64_MIN) {
        start.b[0] = DIR_PREFIX_EXPIRY;
        start.len = 1;
    } else {
        dir_key_expiry(&start, walked, 0);
    }
    if (ctx->now_ms == INT64_MAX) {
        end.b[0] = DIR_PREFIX_EXPIRY + 1;
        end.len = 1;
    } else {
        dir_key_expiry(&end, ctx->now_ms + 1, 0);
    }
    rocksdb_iterator_t *it = rsm_iter_below(r, &end);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len);
         rocksdb_iter_valid(it) && n < DIRECTORY_EXPIRE_MAX; rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        struct expired *e = &found[n];
        if (klen == 0 || (uint8_t)kraw[0] != DIR_PREFIX_EXPIRY) {
            break;
        }
        if (!dir_key_decode_expiry(kraw, klen, &e->expires_at_ms, &e->user_id)) {
            continue; /* never written by this engine */
        }
        if (e->expires_at_ms > ctx->now_ms) {
            break;
        }
        const char *v = rocksdb_iter_value(it, &vlen);
        e->hash_ok = vlen == DIRECTORY_HASH_LEN;
        if (e->hash_ok) {
            memcpy(e->hash, v, DIRECTORY_HASH_LEN);
        }
        n++;
    }
    rv = rsm_iter_status(it);
    rocksdb_iter_destroy(it);
    /* Writes only after the iterator is gone. */
    for (size_t i = 0; i < n && rv == 0; i++) {
        Geoscale__UsernameReservation *res = NULL;
        struct key k;
        if (found[i].hash_ok) {
            dir_key_name(&k, found[i].hash);
            rv = rsm_get_msg(r, &k, &geoscale__username_reservation__descriptor,
                             (ProtobufCMessage **)&res);
            if (rv == GS_ENOTFOUND) {
                rv = 0;
            }
        }
        if (rv != 0) {
            break;
        }
        if (res != NULL && res->state == GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_RESERVED &&
            res->user_id == found[i].user_id && res->expires_at_ms == found[i].expires_at_ms &&
            res->hash.len == DIRECTORY_HASH_LEN) {
            rv = dir_reservation_drop(ctx, res); /* deletes the index row too */
        } else {
            /* An index row without its reservation: drop the row alone. */
            dir_key_expiry(&k, found[i].expires_at_ms, found[i].user_id);
            rsm_delete(r, &k);
        }
        if (res != NULL) {
            geoscale__username_reservation__free_unpacked(res, NULL);
        }
    }
    if (rv == 0) {
        /* Fewer than the bound: every row up to the batch time is gone. */
        int64_t reached = n < DIRECTORY_EXPIRE_MAX ? ctx->now_ms : found[n - 1].expires_at_ms;
        if (reached > walked) {
            struct key k;
            key_system(&k, DIR_SYS_RESERVATIONS_EXPIRED);
            rsm_put_u64(r, &k, (uint64_t)reached);
        }
    }
    return rv;
}

/* ---------------------------------------------------------------- apply */

/* Decode, check and run a request. Returns the command's status; fatal codes
 * are passed up as they are. */
static int run_request(struct dir_ctx *ctx, uint32_t kind, const uint8_t *data, size_t data_len,
                       uint8_t **body, size_t *len)
{
    static const uint8_t empty[1];
    const struct dir_kind_info *info = dir_kind_lookup(kind);
    if (info == NULL) {
        return GS_EUNIMPL;
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, data_len, data_len > 0 ? data : empty);
    if (req == NULL) {
        return GS_EINVAL;
    }
    int rv = dir_check_request(kind, req, NULL, 0);
    if (rv == 0) {
        rv = info->handler(ctx, req, body, len);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

/* rsm_command_fn: one command of an entry at batch time now_ms. */
static int apply_request(void *vctx, uint32_t kind, const uint8_t *data, size_t data_len,
                         int64_t now_ms, uint8_t **body, size_t *len, uint8_t **partial,
                         size_t *partial_len)
{
    (void)partial; /* no partial outcomes here: the spec has no restore */
    (void)partial_len;
    struct dir_ctx *ctx = vctx;
    ctx->now_ms = now_ms;
    return run_request(ctx, kind, data, data_len, body, len);
}

/* Read kinds inside a batch are served but not remembered. */
static bool is_remembered(uint32_t kind)
{
    const struct dir_kind_info *info = dir_kind_lookup(kind);
    return info == NULL || !info->read;
}

/* Per entry, before the stored results expire: the expired reservations. */
static int begin_entry(void *vctx, int64_t now_ms)
{
    struct dir_ctx *ctx = vctx;
    ctx->now_ms = now_ms;
    return expire_reservations(ctx);
}

static const struct rsm_apply_spec apply_spec = {
    .log_name = "directory",
    .log_id = "shard",
    .run = apply_request,
    .is_fatal = is_fatal,
    .remembered = is_remembered,
    .begin = begin_entry,
    .result_ttl_ms = DIRECTORY_RESULT_TTL_MS,
    .result_expire_max = DIRECTORY_RESULT_EXPIRE_MAX,
};

int directory_fsm_apply(struct directory_fsm *fsm, uint64_t index, const void *entry, size_t len,
                        struct cell_result *results, size_t max_results, size_t *n_results)
{
    struct dir_ctx ctx = {.fsm = fsm, .now_ms = 0};
    return rsm_apply_entry(&fsm->rsm, index, entry, len, &apply_spec, &ctx, results, max_results,
                           n_results);
}

int directory_fsm_apply_empty(struct directory_fsm *fsm, uint64_t index)
{
    return rsm_apply_empty(&fsm->rsm, index);
}

/* ---------------------------------------------------------------- read */

int directory_fsm_read(struct directory_fsm *fsm, uint32_t kind, const uint8_t *body, size_t len,
                       struct cell_result *out)
{
    struct dir_ctx ctx = {.fsm = fsm, .now_ms = 0};
    const struct dir_kind_info *info = dir_kind_lookup(kind);
    int rv;

    out->body = NULL;
    out->len = 0;
    if (info == NULL || !info->read) {
        rv = GS_EUNIMPL;
    } else if (body == NULL && len > 0) {
        rv = GS_EINVAL;
    } else {
        rv = run_request(&ctx, kind, body, len, &out->body, &out->len);
    }
    if (rv != 0) {
        out->body = NULL;
        out->len = 0;
    }
    out->status = rv;
    return rv;
}

/* ---------------------------------------------------------------- validate */

int directory_validate_request(uint32_t kind, const uint8_t *body, size_t len, char *errmsg,
                               size_t errmsg_len)
{
    static const uint8_t empty[1];
    char scratch[1];
    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    const struct dir_kind_info *info = dir_kind_lookup(kind);
    if (info == NULL) {
        snprintf(errmsg, errmsg_len, "kind: unknown");
        return GS_EUNIMPL;
    }
    if (body == NULL && len > 0) {
        snprintf(errmsg, errmsg_len, "body: missing");
        return GS_EINVAL;
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, len, len > 0 ? body : empty);
    if (req == NULL) {
        snprintf(errmsg, errmsg_len, "body: not a %s", info->request->name);
        return GS_EINVAL;
    }
    int rv = dir_check_request(kind, req, errmsg, errmsg_len);
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

struct rsm *directory_fsm_rsm(struct directory_fsm *fsm)
{
    return &fsm->rsm;
}
