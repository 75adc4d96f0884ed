/*
 * The metadata state machine (contract in metadata_fsm.h): open, apply,
 * read, validate, digest, sync, over the replicated-state-machine base
 * (rsm.h), in the shape of the cell FSM (cell_fsm.c): one entry = one
 * CellBatch = one WriteBatch with applied_index, replays skipped, commands
 * with a client id remembered, a command's failure is its own result,
 * GS_EIO/GS_ENOMEM fail the entry.
 *
 * Exactly-once from at-least-once. The outbox shipper of a cell may send the
 * same rows many times (a retry after a lost answer, a new leader re-shipping
 * what was never acknowledged). 'O'+origin_cell holds the highest seq applied
 * from that cell, written in the same WriteBatch as the rows, so a row is
 * applied exactly when its seq is last + 1 at apply time, once, on every
 * replica alike. Rows must continue the sequence without a gap: a gap means
 * rows were lost between the cell's outbox and here, and applying past it
 * would hide that for good.
 *
 * Handler rule, as in a cell: check everything first, write after; an error
 * other than GS_EIO / GS_ENOMEM is the command's outcome and wrote nothing.
 * Requests are checked again at apply (metadata_check_request), because the
 * state machine must not trust the proposer.
 *
 * PII. None of the fields of these messages is PII (metadata.proto), and
 * error messages and logs name fields, row positions, ids and sequence
 * numbers, never a field's value.
 */
#include "metadata_fsm.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "keys.h"
#include "log.h"
#include "metadata.pb-c.h"
#include "rsm.h"

#define MD_PREFIX_ORIGIN 'O'
#define MD_PREFIX_USER 'M'
#define MD_SYS_SHARD "metadata_shard"

#define METADATA_RESULT_TTL_MS (3600 * 1000)
#define METADATA_RESULT_EXPIRE_MAX 256

struct metadata_fsm {
    struct rsm rsm;
    uint32_t shard_id;
    uint32_t n_shards; /* >= 1 */
};

struct md_ctx {
    struct metadata_fsm *fsm;
    int64_t now_ms; /* the batch's timestamp (0 for reads) */
};

/* Every handler: 0 with *body and *len (malloc'd packed response, the caller
 * frees it) or a negative GS_E* code with nothing written. */
typedef int (*md_handler)(struct md_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                          size_t *len);

struct md_method {
    uint32_t method;
    const ProtobufCMessageDescriptor *request;
    md_handler handler;
    bool read; /* served by metadata_fsm_read(); not remembered in entries */
};

static int handle_apply(struct md_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len);
static int handle_get(struct md_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len);

static const struct md_method md_methods[] = {
    {GEOSCALE__METHOD__METHOD_METADATA_APPLY, &geoscale__metadata_apply_request__descriptor,
     handle_apply, false},
    {GEOSCALE__METHOD__METHOD_METADATA_GET, &geoscale__metadata_get_request__descriptor, handle_get,
     true},
};

static const struct md_method *md_method_lookup(uint32_t method)
{
    for (size_t i = 0; i < sizeof md_methods / sizeof md_methods[0]; i++) {
        if (md_methods[i].method == method) {
            return &md_methods[i];
        }
    }
    return NULL;
}

static bool is_fatal(int rv)
{
    return rv == GS_EIO || rv == GS_ENOMEM;
}

/* ---------------------------------------------------------------- keys, shards */

static void md_key_origin(struct key *k, uint32_t origin_cell)
{
    key_id(k, MD_PREFIX_ORIGIN, origin_cell);
}

static void md_key_user(struct key *k, uint64_t user_id)
{
    key_id(k, MD_PREFIX_USER, user_id);
}

uint32_t metadata_user_shard(uint64_t user_id, uint32_t n_shards)
{
    uint8_t in[8], out[8];
    if (n_shards <= 1) {
        return 0;
    }
    /* User ids are cell_id << 40 | seq: hash them, or one cell's users would
     * fill one shard. */
    key_put_u64(in, user_id);
    crypto_generichash(out, sizeof out, in, sizeof in, NULL, 0);
    return (uint32_t)(key_get_u64(out) % n_shards);
}

static bool owns_user(const struct metadata_fsm *fsm, uint64_t user_id)
{
    return metadata_user_shard(user_id, fsm->n_shards) == fsm->shard_id;
}

/* ---------------------------------------------------------------- request checks */

__attribute__((format(printf, 4, 5))) static int fail(int code, char *errmsg, size_t errmsg_len,
                                                      const char *fmt, ...)
{
    if (errmsg != NULL && errmsg_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, errmsg_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool region_chars_ok(const char *s)
{
    for (; *s != '\0'; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

static bool status_known(Geoscale__AccountStatus s)
{
    switch (s) {
    case GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_UNSPECIFIED:
    case GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE:
    case GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED:
    case GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_DEACTIVATED:
        return true;
    default:
        return false;
    }
}

/* Row i's metadata. A deleted row needs its user id only (nothing else of it
 * is stored), but what it carries must still be within limits. */
static int check_meta(size_t i, const Geoscale__UserMetadata *md, char *e, size_t n)
{
    if (md == NULL) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta: required", i);
    }
    if (md->user_id == 0) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.user_id: required", i);
    }
    size_t region_len = strlen(md->home_region);
    if (region_len > METADATA_REGION_MAX) {
        return fail(GS_ETOOBIG, e, n, "rows[%zu].meta.home_region: at most %d bytes", i,
                    METADATA_REGION_MAX);
    }
    if (!region_chars_ok(md->home_region)) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.home_region: only [a-z0-9-]", i);
    }
    if (md->cell_id > METADATA_CELL_ID_MAX) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.cell_id: out of range", i);
    }
    if (!status_known(md->status)) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.status: unknown", i);
    }
    if (strlen(md->plan) > METADATA_PLAN_MAX) {
        return fail(GS_ETOOBIG, e, n, "rows[%zu].meta.plan: at most %d bytes", i,
                    METADATA_PLAN_MAX);
    }
    if (md->created_at_ms < 0) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.created_at_ms: negative", i);
    }
    if (md->deleted) {
        return 0;
    }
    if (region_len == 0) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.home_region: required", i);
    }
    if (md->cell_id == 0) {
        return fail(GS_EINVAL, e, n, "rows[%zu].meta.cell_id: required", i);
    }
    return 0;
}

static int check_apply(const Geoscale__MetadataApplyRequest *req, char *e, size_t n)
{
    if (req->origin_cell == 0 || req->origin_cell > METADATA_CELL_ID_MAX) {
        return fail(GS_EINVAL, e, n, "origin_cell: required, 1 to %" PRIu32, METADATA_CELL_ID_MAX);
    }
    if (req->n_rows > METADATA_ROWS_MAX) {
        return fail(GS_ETOOBIG, e, n, "rows: at most %d", METADATA_ROWS_MAX);
    }
    for (size_t i = 0; i < req->n_rows; i++) {
        const Geoscale__MetadataRow *row = req->rows[i];
        if (row->seq == 0) {
            return fail(GS_EINVAL, e, n, "rows[%zu].seq: required", i);
        }
        if (i > 0 && row->seq != req->rows[i - 1]->seq + 1) {
            return fail(GS_EINVAL, e, n, "rows[%zu].seq: must be rows[%zu].seq + 1", i, i - 1);
        }
        int rv = check_meta(i, row->meta, e, n);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Stateless checks of an unpacked request of `method`. 0 or GS_EINVAL /
 * GS_ETOOBIG; errmsg (may be NULL) names the field, never its value. */
static int metadata_check_request(uint32_t method, const ProtobufCMessage *m, char *e, size_t n)
{
    switch (method) {
    case GEOSCALE__METHOD__METHOD_METADATA_APPLY:
        return check_apply((const Geoscale__MetadataApplyRequest *)m, e, n);
    case GEOSCALE__METHOD__METHOD_METADATA_GET:
        if (((const Geoscale__MetadataGetRequest *)m)->user_id == 0) {
            return fail(GS_EINVAL, e, n, "user_id: required");
        }
        return 0;
    default:
        return fail(GS_EUNIMPL, e, n, "method %" PRIu32 ": not a metadata method", method);
    }
}

/* ---------------------------------------------------------------- handlers */

/* The highest seq applied from origin (0 if none). 0 or GS_EIO. */
static int origin_seq_get(struct rsm *r, uint32_t origin_cell, uint64_t *seq)
{
    struct key k;
    md_key_origin(&k, origin_cell);
    return rsm_get_u64_or_0(r, &k, seq);
}

/* Store the known fields of src only: unknown fields a sender added are
 * dropped, never written. The strings are borrowed from src. */
static void meta_copy_known(Geoscale__UserMetadata *dst, const Geoscale__UserMetadata *src)
{
    geoscale__user_metadata__init(dst);
    dst->user_id = src->user_id;
    dst->home_region = src->home_region;
    dst->cell_id = src->cell_id;
    dst->status = src->status;
    dst->plan = src->plan;
    dst->created_at_ms = src->created_at_ms;
    dst->profile_version = src->profile_version;
    dst->follower_count = src->follower_count;
    dst->following_count = src->following_count;
    dst->deleted = false;
}

static int handle_apply(struct md_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len)
{
    const Geoscale__MetadataApplyRequest *req = (const Geoscale__MetadataApplyRequest *)m;
    struct metadata_fsm *fsm = ctx->fsm;
    struct rsm *r = &fsm->rsm;
    uint64_t last = 0;
    int rv;

    rv = origin_seq_get(r, req->origin_cell, &last);
    if (rv != 0) {
        return rv;
    }
    /* Rows are consecutive (checked): the new ones are a suffix. */
    size_t first_new = req->n_rows;
    for (size_t i = 0; i < req->n_rows; i++) {
        if (req->rows[i]->seq > last) {
            first_new = i;
            break;
        }
    }
    if (first_new < req->n_rows && req->rows[first_new]->seq != last + 1) {
        log_warn("metadata",
                 "event=sequence_gap shard=%" PRIu32 " origin=%" PRIu32 " applied=%" PRIu64
                 " first_new=%" PRIu64,
                 fsm->shard_id, req->origin_cell, last, req->rows[first_new]->seq);
        return GS_EINVAL;
    }
    for (size_t i = first_new; i < req->n_rows; i++) {
        if (!owns_user(fsm, req->rows[i]->meta->user_id)) {
            return GS_EWRONGCELL;
        }
    }
    /* Checked: write. */
    for (size_t i = first_new; i < req->n_rows; i++) {
        const Geoscale__UserMetadata *src = req->rows[i]->meta;
        struct key k;
        md_key_user(&k, src->user_id);
        if (src->deleted) {
            rsm_delete(r, &k);
            continue;
        }
        Geoscale__UserMetadata stored;
        meta_copy_known(&stored, src);
        rv = rsm_put_msg(r, &k, &stored.base);
        if (rv != 0) {
            return rv;
        }
    }
    uint64_t up_to = last;
    if (first_new < req->n_rows) {
        struct key k;
        up_to = req->rows[req->n_rows - 1]->seq;
        md_key_origin(&k, req->origin_cell);
        rsm_put_u64(r, &k, up_to);
        log_debug("metadata",
                  "event=rows_applied shard=%" PRIu32 " origin=%" PRIu32 " rows=%zu"
                  " applied_up_to=%" PRIu64,
                  fsm->shard_id, req->origin_cell, req->n_rows - first_new, up_to);
    }
    Geoscale__MetadataApplyResponse resp = GEOSCALE__METADATA_APPLY_RESPONSE__INIT;
    resp.applied_up_to = up_to;
    return rsm_pack(&resp.base, body, len);
}

static int handle_get(struct md_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len)
{
    const Geoscale__MetadataGetRequest *req = (const Geoscale__MetadataGetRequest *)m;
    struct rsm *r = &ctx->fsm->rsm;
    ProtobufCMessage *stored = NULL;
    struct key k;

    if (!owns_user(ctx->fsm, req->user_id)) {
        return GS_EWRONGCELL;
    }
    md_key_user(&k, req->user_id);
    int rv = rsm_get_msg(r, &k, &geoscale__user_metadata__descriptor, &stored);
    if (rv != 0) {
        return rv;
    }
    Geoscale__MetadataGetResponse resp = GEOSCALE__METADATA_GET_RESPONSE__INIT;
    resp.meta = (Geoscale__UserMetadata *)stored;
    resp.applied_index = rsm_applied_index(r);
    rv = rsm_pack(&resp.base, body, len);
    protobuf_c_message_free_unpacked(stored, NULL);
    return rv;
}

/* ---------------------------------------------------------------- open/close */

int metadata_fsm_open(const struct metadata_fsm_options *opts, struct metadata_fsm **out,
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
    struct metadata_fsm *fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    struct rsm_options ro = {.db_path = opts->db_path,
                             .compression = opts->compression,
                             .kind = "metadata",
                             .schema_version = METADATA_SCHEMA_VERSION,
                             .identity_key = MD_SYS_SHARD};
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

void metadata_fsm_close(struct metadata_fsm *fsm)
{
    if (fsm == NULL) {
        return;
    }
    rsm_close(&fsm->rsm);
    free(fsm);
}

uint64_t metadata_fsm_applied_index(const struct metadata_fsm *fsm)
{
    return rsm_applied_index(&fsm->rsm);
}

int metadata_fsm_sync(struct metadata_fsm *fsm)
{
    return rsm_sync(&fsm->rsm);
}

int metadata_fsm_digest(struct metadata_fsm *fsm, uint8_t digest[32], uint64_t *n_keys)
{
    return rsm_digest(&fsm->rsm, digest, n_keys);
}

int metadata_fsm_origin_seq(struct metadata_fsm *fsm, uint32_t origin_cell, uint64_t *seq)
{
    return origin_seq_get(&fsm->rsm, origin_cell, seq);
}

/* ---------------------------------------------------------------- apply */

/* Decode, check and run a request. Returns the command's status; fatal codes
 * are passed up as they are. */
static int run_request(struct md_ctx *ctx, uint32_t method, const uint8_t *data, size_t data_len,
                       uint8_t **body, size_t *len)
{
    static const uint8_t empty[1];
    const struct md_method *info = md_method_lookup(method);
    if (info == NULL) {
        return GS_EUNIMPL;
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, data_len, data_len > 0 ? data : empty);
    if (req == NULL) {
        return GS_EINVAL;
    }
    int rv = metadata_check_request(method, req, NULL, 0);
    if (rv == 0) {
        rv = info->handler(ctx, req, body, len);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

/* rsm_command_fn: one command of an entry at batch time now_ms. */
static int apply_request(void *vctx, uint32_t method, const uint8_t *data, size_t data_len,
                         int64_t now_ms, uint8_t **body, size_t *len, uint8_t **partial,
                         size_t *partial_len)
{
    (void)partial; /* no partial outcomes here: the spec has no restore */
    (void)partial_len;
    struct md_ctx *ctx = vctx;
    ctx->now_ms = now_ms;
    return run_request(ctx, method, data, data_len, body, len);
}

/* Read methods inside a batch are served but not remembered. */
static bool is_remembered(uint32_t method)
{
    const struct md_method *info = md_method_lookup(method);
    return info == NULL || !info->read;
}

static const struct rsm_apply_spec apply_spec = {
    .log_name = "metadata",
    .log_id = "shard",
    .run = apply_request,
    .is_fatal = is_fatal,
    .remembered = is_remembered,
    .begin = NULL,
    .result_ttl_ms = METADATA_RESULT_TTL_MS,
    .result_expire_max = METADATA_RESULT_EXPIRE_MAX,
};

int metadata_fsm_apply(struct metadata_fsm *fsm, uint64_t index, const void *entry, size_t len,
                       struct cell_result *results, size_t max_results, size_t *n_results)
{
    struct md_ctx ctx = {.fsm = fsm, .now_ms = 0};
    return rsm_apply_entry(&fsm->rsm, index, entry, len, &apply_spec, &ctx, results, max_results,
                           n_results);
}

int metadata_fsm_apply_empty(struct metadata_fsm *fsm, uint64_t index)
{
    return rsm_apply_empty(&fsm->rsm, index);
}

/* ---------------------------------------------------------------- read */

int metadata_fsm_read(struct metadata_fsm *fsm, uint32_t method, const uint8_t *body, size_t len,
                      struct cell_result *out)
{
    struct md_ctx ctx = {.fsm = fsm, .now_ms = 0};
    const struct md_method *info = md_method_lookup(method);
    int rv;

    out->body = NULL;
    out->len = 0;
    if (info == NULL || !info->read) {
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

/* ---------------------------------------------------------------- validate */

int metadata_validate_request(uint32_t method, const uint8_t *body, size_t len, char *errmsg,
                              size_t errmsg_len)
{
    static const uint8_t empty[1];
    char scratch[1];
    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    const struct md_method *info = md_method_lookup(method);
    if (info == NULL) {
        return fail(GS_EUNIMPL, errmsg, errmsg_len, "method %" PRIu32 ": not a metadata method",
                    method);
    }
    if (body == NULL && len > 0) {
        return fail(GS_EINVAL, errmsg, errmsg_len, "body: missing");
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, len, len > 0 ? body : empty);
    if (req == NULL) {
        return fail(GS_EINVAL, errmsg, errmsg_len, "body: does not decode as %s",
                    info->request->name);
    }
    int rv = metadata_check_request(method, req, errmsg, errmsg_len);
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

struct rsm *metadata_fsm_rsm(struct metadata_fsm *fsm)
{
    return &fsm->rsm;
}
