/*
 * The cell state machine (contract in cell_fsm.h): open, apply, read,
 * digest, sync, over the replicated-state-machine base (rsm.h).
 *
 * Apply. One Raft entry is one CellBatch of commands. The base skips an entry
 * whose index is not above applied_index, and otherwise gives it one
 * WriteBatchWithIndex, reused from entry to entry; handlers read through it,
 * so command i sees the writes of commands 0..i-1. The base commits the batch
 * with 'S' applied_index = index in one unsynced write: the Raft log is the
 * durable record, and a crash between the two only means libraft replays the
 * entry, which the applied_index check then applies exactly once.
 *
 * Determinism. Everything a command writes is decided by the DB state and
 * the entry itself (the batch's timestamp_ms stands in for "now"), never by
 * the local clock, the node or memory layout, so replicas stay identical;
 * cell_fsm_digest() lets tests and operators check that.
 *
 * Idempotency. A command with client_id != 0 is remembered by the base at
 * 'R'+client_id+client_seq (status and body), whether it succeeded or
 * failed, and listed in its entry's time index row; a repeat returns the
 * stored answer without applying again. Each entry deletes at most
 * CELL_RESULT_EXPIRE_MAX outcomes older than CELL_RESULT_TTL_MS of batch
 * time, so the work per entry is bounded and the same on every replica.
 * Read methods inside a batch are served but not remembered.
 *
 * Errors. A command's own failure (bad body, conflict, not found ...) is its
 * result and writes nothing of its own (handlers check first, write last).
 * A storage error (GS_EIO) or an allocation failure (GS_ENOMEM) fails the
 * whole entry: nothing of it is committed and the replica must stop, since
 * skipping the entry would make it diverge.
 *
 * Ownership. After the stateless checks, every request passes
 * cell_check_owner(): a request about another cell's user is GS_EWRONGCELL
 * before any handler runs, so it reads and writes nothing.
 *
 * Outbox. Handlers that change a user's metadata append outbox rows
 * (outbox.c) into the same batch; edge commands whose target is of another
 * cell append edge halves for that cell (edges.c); METHOD_OUTBOX_ACK deletes
 * both. METHOD_EDGE_APPLY applies another cell's halves here.
 *
 * Schema. 'S' schema (= CELL_SCHEMA_VERSION) and 'S' cell_id are written when
 * the DB is created; open refuses a newer schema or another cell's DB, and
 * stamps an older one with this build's (rsm.c). The profiles ('U') are the
 * rsm's point rows, in a column family of their own with a hash memtable
 * (nothing iterates them); an older DB's are moved there at open.
 */
#include "cell_fsm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cell_internal.h"
#include "geoscale/errors.h"
#include "metadata.pb-c.h"
#include "log.h"
#include "methods.h"

#define CELL_RESULT_TTL_MS (3600 * 1000)
#define CELL_RESULT_EXPIRE_MAX 256

static const cell_handler handlers[] = {
    [GEOSCALE__METHOD__METHOD_CREATE_USER] = cell_create_user,
    [GEOSCALE__METHOD__METHOD_GET_USER] = cell_get_user,
    [GEOSCALE__METHOD__METHOD_UPDATE_USER] = cell_update_user,
    [GEOSCALE__METHOD__METHOD_FOLLOW] = cell_follow,
    [GEOSCALE__METHOD__METHOD_UNFOLLOW] = cell_unfollow,
    [GEOSCALE__METHOD__METHOD_BLOCK] = cell_block,
    [GEOSCALE__METHOD__METHOD_UNBLOCK] = cell_unblock,
    [GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS] = cell_list_followers,
    [GEOSCALE__METHOD__METHOD_LIST_FOLLOWING] = cell_list_following,
    [GEOSCALE__METHOD__METHOD_GET_SETTINGS] = cell_get_settings,
    [GEOSCALE__METHOD__METHOD_SET_SETTINGS] = cell_set_settings,
    [GEOSCALE__METHOD__METHOD_OUTBOX_ACK] = cell_outbox_ack,
    [GEOSCALE__METHOD__METHOD_EDGE_APPLY] = cell_edge_apply,
};

static cell_handler handler_lookup(uint32_t method)
{
    if (method >= sizeof handlers / sizeof handlers[0]) {
        return NULL;
    }
    return handlers[method];
}

static bool is_fatal(int rv)
{
    return rv == GS_EIO || rv == GS_ENOMEM;
}

/* ---------------------------------------------------------------- open/close */

int cell_fsm_open(const struct cell_fsm_options *opts, struct cell_fsm **out, char *errmsg,
                  size_t errmsg_len)
{
    struct cell_fsm *fsm = NULL;
    char scratch[1];
    int rv;

    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    *out = NULL;
    if (opts == NULL || opts->db_path == NULL || opts->db_path[0] == '\0') {
        snprintf(errmsg, errmsg_len, "db_path: required");
        return GS_EINVAL;
    }
    if (opts->username_key == NULL || opts->username_key_len < 16 || opts->username_key_len > 64) {
        snprintf(errmsg, errmsg_len, "username_key: must be 16 to 64 bytes");
        return GS_EINVAL;
    }
    if (opts->cell_id >= (UINT32_C(1) << CELL_ID_BITS)) {
        snprintf(errmsg, errmsg_len, "cell_id: must be below %u", 1u << CELL_ID_BITS);
        return GS_EINVAL;
    }
    const char *region = opts->region != NULL ? opts->region : "";
    if (cell_check_region(region) != 0) {
        snprintf(errmsg, errmsg_len, "region: must be 0-%d bytes of [a-z0-9-]", CELL_REGION_MAX);
        return GS_EINVAL;
    }
    fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    fsm->cell_id = opts->cell_id;
    memcpy(fsm->username_key, opts->username_key, opts->username_key_len);
    fsm->username_key_len = opts->username_key_len;
    memcpy(fsm->region, region, strlen(region) + 1);
    fsm->lone = opts->lone;

    struct rsm_options ro = {.db_path = opts->db_path,
                             .compression = opts->compression,
                             .kind = "cell",
                             .schema_version = CELL_SCHEMA_VERSION,
                             .identity_key = KEY_SYS_CELL_ID,
                             .identity = opts->cell_id,
                             /* Profiles: read and written by user id only. */
                             .point_prefix = KEY_PREFIX_USER,
                             .point_key_len = KEY_ID_LEN};
    rv = rsm_open(&fsm->rsm, &ro, errmsg, errmsg_len);
    if (rv != 0) {
        log_error("cell", "event=open_failed cell=%" PRIu32 " code=%s", opts->cell_id,
                  gs_error_name(rv));
        sodium_memzero(fsm->username_key, sizeof fsm->username_key);
        free(fsm);
        return rv;
    }
    log_info("cell", "event=open cell=%" PRIu32 " region=%s applied_index=%" PRIu64, fsm->cell_id,
             fsm->region, rsm_applied_index(&fsm->rsm));
    *out = fsm;
    return 0;
}

void cell_fsm_close(struct cell_fsm *fsm)
{
    if (fsm == NULL) {
        return;
    }
    rsm_close(&fsm->rsm);
    sodium_memzero(fsm->username_key, sizeof fsm->username_key);
    free(fsm);
}

uint64_t cell_fsm_applied_index(const struct cell_fsm *fsm)
{
    return rsm_applied_index(&fsm->rsm);
}

int cell_fsm_sync(struct cell_fsm *fsm)
{
    return rsm_sync(&fsm->rsm);
}

/* ---------------------------------------------------------------- apply */

/* Decode, check and run a request. Returns the command's status; fatal
 * codes are passed up as they are. */
static int run_request(struct cell_ctx *ctx, uint32_t method, const uint8_t *data, size_t data_len,
                       uint8_t **body, size_t *len)
{
    static const uint8_t empty[1];
    const struct method_info *info = method_lookup(method);
    cell_handler handler = handler_lookup(method);
    if (info == NULL || handler == NULL) {
        return GS_EUNIMPL;
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, data_len, data_len > 0 ? data : empty);
    if (req == NULL) {
        return GS_EINVAL;
    }
    int rv = cell_check_request(method, req, NULL, 0);
    if (rv == 0) {
        rv = cell_check_owner(ctx->fsm->cell_id, ctx->fsm->region, method, req);
    }
    if (rv == 0) {
        rv = handler(ctx, req, body, len);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

/* rsm_command_fn: one command of an entry at batch time now_ms. */
static int apply_request(void *vctx, uint32_t method, const uint8_t *data, size_t data_len,
                         int64_t now_ms, uint8_t **body, size_t *len, uint8_t **partial,
                         size_t *partial_len)
{
    struct cell_ctx *ctx = vctx;
    ctx->now_ms = now_ms;
    ctx->partial = partial;
    ctx->partial_len = partial_len;
    int rv = run_request(ctx, method, data, data_len, body, len);
    ctx->partial = NULL;
    ctx->partial_len = NULL;
    return rv;
}

/* rsm_restore_fn: the one method that stores partial outcomes. */
static int restore_response(uint32_t method, const uint8_t *request, size_t request_len,
                            const uint8_t *partial, size_t partial_len, uint8_t **out,
                            size_t *out_len)
{
    if (method != GEOSCALE__METHOD__METHOD_UPDATE_USER) {
        return GS_EINTERNAL;
    }
    return cell_update_user_restore(request, request_len, partial, partial_len, out, out_len);
}

/* Read methods inside a batch are served but not remembered. */
static bool is_remembered(uint32_t method)
{
    const struct method_info *info = method_lookup(method);
    return info == NULL || info->kind != METHOD_KIND_READ;
}

/* Per entry, before the stored results expire: a lone cell drains the
 * outbox rows of its past (outbox.c). */
static int begin_entry(void *vctx, int64_t now_ms)
{
    struct cell_ctx *ctx = vctx;
    ctx->now_ms = now_ms;
    return ctx->fsm->lone ? cell_outbox_drain(ctx) : 0;
}

static const struct rsm_apply_spec apply_spec = {
    .log_name = "cell",
    .log_id = "cell",
    .run = apply_request,
    .is_fatal = is_fatal,
    .remembered = is_remembered,
    .restore = restore_response,
    .begin = begin_entry,
    .result_ttl_ms = CELL_RESULT_TTL_MS,
    .result_expire_max = CELL_RESULT_EXPIRE_MAX,
};

int cell_fsm_apply(struct cell_fsm *fsm, uint64_t index, const void *entry, size_t len,
                   struct cell_result *results, size_t max_results, size_t *n_results)
{
    struct cell_ctx ctx = {.fsm = fsm, .now_ms = 0};
    return rsm_apply_entry(&fsm->rsm, index, entry, len, &apply_spec, &ctx, results, max_results,
                           n_results);
}

int cell_fsm_apply_empty(struct cell_fsm *fsm, uint64_t index)
{
    return rsm_apply_empty(&fsm->rsm, index);
}

/* ---------------------------------------------------------------- read */

/* OutboxRead (the node's shipper, on the group thread): the rows after
 * after_seq, and the pending edge halves of one destination cell (the lowest
 * cell id with any), packed as an OutboxReadResponse. max_rows bounds each
 * list on its own. */
static int cell_outbox_read_packed(struct cell_fsm *fsm, const uint8_t *body, size_t len,
                                   uint8_t **out, size_t *out_len)
{
    Geoscale__OutboxReadRequest *rq = geoscale__outbox_read_request__unpack(NULL, len, body);
    if (rq == NULL) {
        return GS_EINVAL;
    }
    size_t max_rows = rq->max_rows == 0 ? 256 : rq->max_rows;
    uint64_t after = rq->after_seq;
    geoscale__outbox_read_request__free_unpacked(rq, NULL);
    Geoscale__MetadataRow **rows = NULL;
    size_t n = 0;
    int rv = cell_fsm_outbox_read(fsm, after, max_rows, 1024 * 1024, &rows, &n);
    if (rv != 0) {
        return rv;
    }
    Geoscale__EdgeHalf **halves = NULL;
    size_t n_halves = 0;
    uint32_t dest = 0;
    rv = cell_fsm_edge_outbox_read(fsm, max_rows, &dest, &halves, &n_halves);
    if (rv != 0) {
        cell_fsm_outbox_free(rows, n);
        return rv;
    }
    Geoscale__OutboxReadResponse resp = GEOSCALE__OUTBOX_READ_RESPONSE__INIT;
    resp.n_rows = n;
    resp.rows = rows;
    resp.edge_dest_cell = dest;
    resp.n_edge_halves = n_halves;
    resp.edge_halves = halves;
    rv = rsm_pack(&resp.base, out, out_len);
    cell_fsm_outbox_free(rows, n);
    cell_fsm_edge_outbox_free(halves, n_halves);
    return rv;
}

int cell_fsm_read(struct cell_fsm *fsm, uint32_t method, const uint8_t *body, size_t len,
                  struct cell_result *out)
{
    struct cell_ctx ctx = {.fsm = fsm, .now_ms = 0};
    const struct method_info *info = method_lookup(method);
    int rv;

    out->body = NULL;
    out->len = 0;
    if (method == GEOSCALE__METHOD__METHOD_OUTBOX_READ) {
        rv = cell_outbox_read_packed(fsm, body, len, &out->body, &out->len);
    } else if (info == NULL || info->kind != METHOD_KIND_READ) {
        rv = GS_EUNIMPL;
    } else if (body == NULL && len > 0) {
        rv = GS_EINVAL;
    } else {
        rv = run_request(&ctx, method, body, len, &out->body, &out->len);
    }
    if (rv != 0) {
        out->body = NULL;
        out->len = 0;
    }
    out->status = rv;
    return rv;
}

/* ---------------------------------------------------------------- digest */

int cell_fsm_digest(struct cell_fsm *fsm, uint8_t digest[32], uint64_t *n_keys)
{
    return rsm_digest(&fsm->rsm, digest, n_keys);
}

struct rsm *cell_fsm_rsm(struct cell_fsm *fsm)
{
    return &fsm->rsm;
}
