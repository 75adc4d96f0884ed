/*
 * The cell state machine (contract in cell_fsm.h): open, apply, read,
 * digest, sync.
 *
 * Apply. One Raft entry is one CellBatch of commands. All of them are
 * applied into one WriteBatchWithIndex, reused from entry to entry; handlers
 * read through it, so command i sees the writes of commands 0..i-1. The
 * batch also carries 'S' applied_index = index and is committed with one
 * rocksdb_write_writebatch_wi, unsynced: the Raft log is the durable record,
 * and a crash between the two only means libraft replays the entry, which
 * the applied_index check then applies exactly once. The applied index is
 * cached in the struct; it is read from the DB only at open.
 *
 * Determinism. Everything a command writes is decided by the DB state and
 * the entry itself (the batch's timestamp_ms stands in for "now"), never by
 * the local clock, the node or memory layout, so replicas stay identical;
 * cell_fsm_digest() lets tests and operators check that.
 *
 * Idempotency. A command with client_id != 0 is remembered at
 * 'R'+client_id+client_seq as a StoredResult (status as a positive code,
 * body), whether it succeeded or failed; a repeat returns the stored answer
 * without applying again. Rows are indexed by batch time at 'r'+ts+... and
 * each entry deletes at most CELL_RESULT_EXPIRE_MAX rows older than
 * CELL_RESULT_TTL_MS of batch time, so the work per entry is bounded and the
 * same on every replica. Read methods inside a batch are served but not
 * remembered.
 *
 * Errors. A command's own failure (bad body, conflict, not found ...) is its
 * result and writes nothing of its own (handlers check first, write last).
 * A storage error (GS_EIO) or an allocation failure (GS_ENOMEM) fails the
 * whole entry: nothing of it is committed and the replica must stop, since
 * skipping the entry would make it diverge.
 *
 * Schema. 'S' schema (= CELL_SCHEMA_VERSION) and 'S' cell_id are written when
 * the DB is created; open refuses a newer schema or another cell's DB.
 */
#include "cell_fsm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cell_internal.h"
#include "checkpoint.h"
#include "entry.h"
#include "geoscale/errors.h"
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

static void fsm_free(struct cell_fsm *fsm)
{
    if (fsm->db != NULL) {
        rocksdb_close(fsm->db);
    }
    if (fsm->wb != NULL) {
        rocksdb_writebatch_wi_destroy(fsm->wb);
    }
    if (fsm->writeopts != NULL) {
        rocksdb_writeoptions_destroy(fsm->writeopts);
    }
    if (fsm->readopts != NULL) {
        rocksdb_readoptions_destroy(fsm->readopts);
    }
    if (fsm->options != NULL) {
        rocksdb_options_destroy(fsm->options);
    }
    sodium_memzero(fsm->username_key, sizeof fsm->username_key);
    free(fsm->db_path);
    free(fsm);
}

/* Initialise a new DB or check an existing one; loads applied_index. */
static int fsm_check_schema(struct cell_fsm *fsm, char *errmsg, size_t errmsg_len)
{
    struct cell_ctx ctx = {.fsm = fsm, .wb = NULL, .now_ms = 0};
    struct key k;
    uint64_t schema = 0, cell_id = 0;
    int rv;

    key_system(&k, KEY_SYS_SCHEMA);
    rv = cell_kv_get_u64(&ctx, &k, &schema);
    if (rv == GS_ENOTFOUND) {
        /* New DB, or one that is not ours. */
        rocksdb_iterator_t *it = rocksdb_create_iterator(fsm->db, fsm->readopts);
        rocksdb_iter_seek_to_first(it);
        bool empty = !rocksdb_iter_valid(it);
        rocksdb_iter_destroy(it);
        if (!empty) {
            snprintf(errmsg, errmsg_len, "database has data but no schema version");
            return GS_EIO;
        }
        rocksdb_writebatch_wi_clear(fsm->wb);
        ctx.wb = fsm->wb;
        cell_kv_put_u64(&ctx, &k, CELL_SCHEMA_VERSION);
        key_system(&k, KEY_SYS_CELL_ID);
        cell_kv_put_u64(&ctx, &k, fsm->cell_id);
        char *err = NULL;
        rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
        rocksdb_writeoptions_set_sync(wo, 1);
        rocksdb_write_writebatch_wi(fsm->db, wo, fsm->wb, &err);
        rocksdb_writeoptions_destroy(wo);
        rocksdb_writebatch_wi_clear(fsm->wb);
        if (err != NULL) {
            snprintf(errmsg, errmsg_len, "cannot initialise database: %s", err);
            rocksdb_free(err);
            return GS_EIO;
        }
        fsm->applied_index = 0;
        log_info("cell", "event=db_created cell=%" PRIu32, fsm->cell_id);
        return 0;
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read schema version");
        return rv;
    }
    if (schema > CELL_SCHEMA_VERSION || schema == 0) {
        snprintf(errmsg, errmsg_len,
                 "database schema %" PRIu64 " is not supported (this build: %d)", schema,
                 CELL_SCHEMA_VERSION);
        return GS_EIO;
    }
    key_system(&k, KEY_SYS_CELL_ID);
    rv = cell_kv_get_u64(&ctx, &k, &cell_id);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read cell id of database");
        return GS_EIO;
    }
    if (cell_id != fsm->cell_id) {
        snprintf(errmsg, errmsg_len, "database belongs to cell %" PRIu64 ", not cell %" PRIu32,
                 cell_id, fsm->cell_id);
        return GS_EINVAL;
    }
    key_system(&k, KEY_SYS_APPLIED_INDEX);
    rv = cell_kv_get_u64(&ctx, &k, &fsm->applied_index);
    if (rv == GS_ENOTFOUND) {
        fsm->applied_index = 0;
    } else if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read applied index");
        return GS_EIO;
    }
    return 0;
}

int cell_fsm_open(const struct cell_fsm_options *opts, struct cell_fsm **out, char *errmsg,
                  size_t errmsg_len)
{
    struct cell_fsm *fsm = NULL;
    char *err = NULL;
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
    if (sodium_init() < 0) {
        snprintf(errmsg, errmsg_len, "libsodium initialisation failed");
        return GS_EINTERNAL;
    }
    fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    fsm->cell_id = opts->cell_id;
    fsm->db_path = strdup(opts->db_path);
    if (fsm->db_path == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        rv = GS_ENOMEM;
        goto err;
    }
    memcpy(fsm->username_key, opts->username_key, opts->username_key_len);
    fsm->username_key_len = opts->username_key_len;

    fsm->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(fsm->options, 1);
    if (!opts->compression) {
        rocksdb_options_set_compression(fsm->options, rocksdb_no_compression);
        rocksdb_options_set_bottommost_compression(fsm->options, rocksdb_no_compression);
    }
    fsm->readopts = rocksdb_readoptions_create();
    fsm->writeopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(fsm->writeopts, 0);
    rocksdb_writeoptions_disable_WAL(fsm->writeopts, 0);
    /* overwrite_key = 1: required by the merged iterator. */
    fsm->wb = rocksdb_writebatch_wi_create(0, 1);

    /* A crash inside cell_fsm_install() may have left the old DB aside. */
    rv = checkpoint_recover_swap(opts->db_path, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    fsm->db = rocksdb_open(fsm->options, opts->db_path, &err);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "cannot open database: %s", err);
        rocksdb_free(err);
        fsm->db = NULL;
        rv = GS_EIO;
        goto err;
    }
    rv = fsm_check_schema(fsm, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    log_info("cell", "event=open cell=%" PRIu32 " applied_index=%" PRIu64, fsm->cell_id,
             fsm->applied_index);
    *out = fsm;
    return 0;
err:
    log_error("cell", "event=open_failed cell=%" PRIu32 " code=%s", opts->cell_id,
              gs_error_name(rv));
    fsm_free(fsm);
    return rv;
}

void cell_fsm_close(struct cell_fsm *fsm)
{
    if (fsm == NULL) {
        return;
    }
    if (fsm->db != NULL && cell_fsm_sync(fsm) != 0) {
        log_error("cell", "event=close_sync_failed cell=%" PRIu32, fsm->cell_id);
    }
    fsm_free(fsm);
}

uint64_t cell_fsm_applied_index(const struct cell_fsm *fsm)
{
    return fsm->applied_index;
}

int cell_fsm_sync(struct cell_fsm *fsm)
{
    char *err = NULL;
    rocksdb_flush_wal(fsm->db, 1, &err);
    if (err != NULL) {
        log_error("cell", "event=sync_failed cell=%" PRIu32 " err=\"%s\"", fsm->cell_id, err);
        rocksdb_free(err);
        return GS_EIO;
    }
    return 0;
}

/* ---------------------------------------------------------------- apply */

/* Delete up to CELL_RESULT_EXPIRE_MAX stored results older than the TTL. */
static int expire_results(struct cell_ctx *ctx)
{
    struct key found[CELL_RESULT_EXPIRE_MAX];
    size_t n = 0;
    struct key start;
    int rv;

    if (ctx->now_ms < INT64_MIN + CELL_RESULT_TTL_MS) {
        return 0;
    }
    int64_t cutoff = ctx->now_ms - CELL_RESULT_TTL_MS;
    start.b[0] = KEY_PREFIX_RESULT_TIME;
    start.len = 1;
    rocksdb_iterator_t *it = cell_kv_iter(ctx);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len);
         rocksdb_iter_valid(it) && n < CELL_RESULT_EXPIRE_MAX; rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        int64_t ts = 0;
        uint64_t client_id = 0, client_seq = 0;
        if (klen == 0 || (uint8_t)kraw[0] != KEY_PREFIX_RESULT_TIME) {
            break;
        }
        if (!key_decode_result_time(kraw, klen, &ts, &client_id, &client_seq)) {
            continue; /* not ours; never written by this engine */
        }
        if (ts >= cutoff) {
            break;
        }
        key_result_time(&found[n], ts, client_id, client_seq);
        n++;
    }
    rv = cell_kv_iter_status(it);
    rocksdb_iter_destroy(it);
    if (rv != 0) {
        return rv;
    }
    /* Writes only after the iterator is gone (it must not see the batch
     * change under it). */
    for (size_t i = 0; i < n; i++) {
        int64_t ts = 0;
        uint64_t client_id = 0, client_seq = 0;
        struct key rk;
        key_decode_result_time(found[i].b, found[i].len, &ts, &client_id, &client_seq);
        key_pair(&rk, KEY_PREFIX_RESULT, client_id, client_seq);
        cell_kv_delete(ctx, &rk);
        cell_kv_delete(ctx, &found[i]);
    }
    return 0;
}

/* Look up a remembered result. 0 with *found, or a fatal code. */
static int stored_result_get(struct cell_ctx *ctx, const struct key *rk, bool *found, int *status,
                             uint8_t **body, size_t *len)
{
    ProtobufCMessage *m = NULL;
    int rv = cell_kv_get_msg(ctx, rk, &geoscale__stored_result__descriptor, &m);
    if (rv == GS_ENOTFOUND) {
        *found = false;
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    const Geoscale__StoredResult *sr = (const Geoscale__StoredResult *)m;
    *found = true;
    *status = sr->status <= (uint32_t)-GS_ERROR_MIN ? -(int)sr->status : GS_EINTERNAL;
    if (*status == 0) {
        *body = malloc(sr->body.len > 0 ? sr->body.len : 1);
        if (*body == NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
            return GS_ENOMEM;
        }
        if (sr->body.len > 0) {
            memcpy(*body, sr->body.data, sr->body.len);
        }
        *len = sr->body.len;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* Remember the outcome of a command. 0 or GS_ENOMEM. */
static int stored_result_put(struct cell_ctx *ctx, const Geoscale__CellCommand *cmd,
                             const struct key *rk, int status, const uint8_t *body, size_t len)
{
    Geoscale__StoredResult sr = GEOSCALE__STORED_RESULT__INIT;
    struct key tk;
    sr.status = (uint32_t)(-status);
    sr.body.data = (uint8_t *)body;
    sr.body.len = status == 0 ? len : 0;
    int rv = cell_kv_put_msg(ctx, rk, &sr.base);
    if (rv != 0) {
        return rv;
    }
    key_result_time(&tk, ctx->now_ms, cmd->client_id, cmd->client_seq);
    cell_kv_put(ctx, &tk, "", 0);
    return 0;
}

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
        rv = handler(ctx, req, body, len);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}

/* Apply one command. Returns 0 with its outcome in *status, *body and *len (body
 * malloc'd iff status == 0), or a fatal code. */
static int apply_command(struct cell_ctx *ctx, const Geoscale__CellCommand *cmd, int *status,
                         uint8_t **body, size_t *len)
{
    const struct method_info *info = method_lookup(cmd->method);
    bool remember = cmd->client_id != 0 && (info == NULL || info->kind != METHOD_KIND_READ);
    struct key rk;
    int rv;

    *body = NULL;
    *len = 0;
    if (remember) {
        bool found = false;
        key_pair(&rk, KEY_PREFIX_RESULT, cmd->client_id, cmd->client_seq);
        rv = stored_result_get(ctx, &rk, &found, status, body, len);
        if (rv != 0 || found) {
            return rv;
        }
    }
    rv = run_request(ctx, cmd->method, cmd->body.data, cmd->body.len, body, len);
    if (is_fatal(rv)) {
        return rv;
    }
    *status = rv;
    if (remember) {
        rv = stored_result_put(ctx, cmd, &rk, *status, *body, *len);
        if (rv != 0) {
            free(*body);
            *body = NULL;
            return rv;
        }
    }
    return 0;
}

/* Commit the batch with applied_index = index. */
static int commit(struct cell_fsm *fsm, uint64_t index)
{
    struct cell_ctx ctx = {.fsm = fsm, .wb = fsm->wb, .now_ms = 0};
    struct key k;
    char *err = NULL;
    key_system(&k, KEY_SYS_APPLIED_INDEX);
    cell_kv_put_u64(&ctx, &k, index);
    rocksdb_write_writebatch_wi(fsm->db, fsm->writeopts, fsm->wb, &err);
    rocksdb_writebatch_wi_clear(fsm->wb);
    if (err != NULL) {
        log_error("cell", "event=commit_failed cell=%" PRIu32 " index=%" PRIu64 " err=\"%s\"",
                  fsm->cell_id, index, err);
        rocksdb_free(err);
        return GS_EIO;
    }
    fsm->applied_index = index;
    return 0;
}

int cell_fsm_apply(struct cell_fsm *fsm, uint64_t index, const void *entry, size_t len,
                   struct cell_result *results, size_t max_results, size_t *n_results)
{
    Geoscale__CellBatch *batch = NULL;
    size_t n = 0;
    int rv;

    *n_results = 0;
    if (index <= fsm->applied_index) {
        return 0;
    }
    rocksdb_writebatch_wi_clear(fsm->wb);
    if (entry_decode(entry, len, &batch) != 0) {
        /* Every replica sees the same bytes and skips them alike. */
        log_warn("cell", "event=undecodable_entry cell=%" PRIu32 " index=%" PRIu64 " len=%zu",
                 fsm->cell_id, index, len);
        return commit(fsm, index);
    }
    struct cell_ctx ctx = {.fsm = fsm, .wb = fsm->wb, .now_ms = batch->timestamp_ms};
    rv = expire_results(&ctx);
    if (rv != 0) {
        goto err;
    }
    for (size_t i = 0; i < batch->n_commands; i++) {
        int status = 0;
        uint8_t *body = NULL;
        size_t body_len = 0;
        rv = apply_command(&ctx, batch->commands[i], &status, &body, &body_len);
        if (rv != 0) {
            goto err;
        }
        if (n < max_results) {
            results[n].status = status;
            results[n].body = body;
            results[n].len = body_len;
            n++;
        } else {
            free(body);
        }
    }
    rv = commit(fsm, index);
    if (rv != 0) {
        goto err;
    }
    geoscale__cell_batch__free_unpacked(batch, NULL);
    *n_results = n;
    return 0;
err:
    log_error("cell", "event=apply_failed cell=%" PRIu32 " index=%" PRIu64 " code=%s", fsm->cell_id,
              index, gs_error_name(rv));
    for (size_t i = 0; i < n; i++) {
        free(results[i].body);
        results[i].body = NULL;
        results[i].len = 0;
    }
    rocksdb_writebatch_wi_clear(fsm->wb);
    geoscale__cell_batch__free_unpacked(batch, NULL);
    return rv;
}

int cell_fsm_apply_empty(struct cell_fsm *fsm, uint64_t index)
{
    if (index <= fsm->applied_index) {
        return 0;
    }
    rocksdb_writebatch_wi_clear(fsm->wb);
    return commit(fsm, index);
}

/* ---------------------------------------------------------------- read */

int cell_fsm_read(struct cell_fsm *fsm, uint32_t method, const uint8_t *body, size_t len,
                  struct cell_result *out)
{
    struct cell_ctx ctx = {.fsm = fsm, .wb = NULL, .now_ms = 0};
    const struct method_info *info = method_lookup(method);
    int rv;

    out->body = NULL;
    out->len = 0;
    if (info == NULL || info->kind != METHOD_KIND_READ) {
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

static void digest_put(crypto_generichash_state *st, const char *p, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crypto_generichash_update(st, len, sizeof len);
    crypto_generichash_update(st, (const unsigned char *)p, n);
}

/*
 * BLAKE2b-256 over, for every key in order except 'S' applied_index (which
 * is node-local bookkeeping: a replica that consumed extra non-command
 * entries has the same data), len32be(key) || key || len32be(value) || value.
 */
int cell_fsm_digest(struct cell_fsm *fsm, uint8_t digest[32], uint64_t *n_keys)
{
    crypto_generichash_state st;
    uint64_t n = 0;
    int rv;

    crypto_generichash_init(&st, NULL, 0, 32);
    rocksdb_iterator_t *it = rocksdb_create_iterator(fsm->db, fsm->readopts);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (key_is_system(k, klen, KEY_SYS_APPLIED_INDEX)) {
            continue;
        }
        const char *v = rocksdb_iter_value(it, &vlen);
        digest_put(&st, k, klen);
        digest_put(&st, v, vlen);
        n++;
    }
    rv = cell_kv_iter_status(it);
    rocksdb_iter_destroy(it);
    if (rv != 0) {
        return rv;
    }
    crypto_generichash_final(&st, digest, 32);
    *n_keys = n;
    return 0;
}
