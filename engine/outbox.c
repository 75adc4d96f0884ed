/*
 * The metadata outbox of a cell (docs/CLUSTER.md, "Metadata outbox").
 *
 * A change of a user's metadata (create; update, which bumps the profile
 * version and may change status or plan; follower or following counts) is
 * written together with an outbox row in the entry's one WriteBatch, so the
 * row exists if and only if the change does: no change is lost between the
 * cell and the metadata group, and none is announced that did not happen.
 *
 *   'S' outbox_seq   the last seq assigned (absent: 0)
 *   'S' outbox_acked the last seq acknowledged (absent: none yet, or a
 *                    database older than this key)
 *   'X' seq          packed geoscale.MetadataRow {seq, UserMetadata}
 *
 * A row is the user's metadata after the change, built field by field from
 * the stored profile and counters: ids, the cell's region and id, status,
 * plan, created_at, profile version and counts. No PII field exists in the
 * message, and none is copied: the row crosses region boundaries.
 *
 * Sequence. seq is per cell, starts at 1 and grows by one per row, assigned
 * during apply from the replicated counter, so it is the same on every
 * replica and strictly increasing across entries, restarts and leader
 * changes. One row is written per changed user per command: a Follow writes
 * two (actor, target), and a user changed by several commands of one entry
 * gets several rows, each its state after that command. Rows are the same on
 * every replica, so they are in the state digest.
 *
 * Delivery. The leader's shipper reads rows (cell_fsm_outbox_read) on the
 * group's thread between entries, ships them to the metadata group, and
 * proposes METHOD_OUTBOX_ACK {up_to_seq}, which deletes every row at or
 * below up_to_seq. Only an ack deletes rows, and it deletes a prefix, so the
 * rows present are always the dense range (last acked, outbox_seq]. An ack
 * is idempotent (a second one deletes nothing and answers deleted = 0); an
 * ack beyond the last seq assigned is a shipper bug and is refused
 * (GS_EINVAL) with nothing deleted. An ack deletes as many rows as it covers
 * in one entry: the shipper acks what it shipped, a bounded batch.
 *
 * An ack starts its deletes after outbox_acked, never at the range's start:
 * a deleted row stays in RocksDB as a tombstone until compaction, and a walk
 * from seq 0 would step over every row acked since, in the memtable and in
 * each level, on every ack. Without the key (a database written before it)
 * the first ack walks from seq 1 once and records it.
 *
 * A lone cell (cell_fsm_options.lone) has no metadata group to ship to, so
 * it writes no rows (they would pile up forever, a row per change), and
 * drains the rows of a database written before: each entry first deletes
 * at most CELL_OUTBOX_DRAIN_MAX of them, as an ack would.
 *
 * The same ack may also carry {edge_dest_cell, edge_up_to_seq}: the edge
 * halves for that cell up to that seq are deleted the same way (edges.c).
 * Either part may be absent (0); both are checked before anything is
 * deleted, and `deleted` counts rows and halves together.
 */
#include <assert.h>
#include <stdlib.h>

#include "cell_fsm.h"
#include "cell_internal.h"
#include "geoscale/errors.h"
#include "log.h"

#define CELL_OUTBOX_DRAIN_MAX 256

/* ---------------------------------------------------------------- apply side */

static int last_seq_get(struct cell_ctx *ctx, uint64_t *seq)
{
    struct key k;
    key_system(&k, KEY_SYS_OUTBOX_SEQ);
    return cell_kv_get_u64_or_0(ctx, &k, seq);
}

int cell_outbox_append_profile(struct cell_ctx *ctx, uint64_t user_id, const Geoscale__Profile *p,
                               uint64_t followers, uint64_t following)
{
    Geoscale__UserMetadata md = GEOSCALE__USER_METADATA__INIT;
    Geoscale__MetadataRow row = GEOSCALE__METADATA_ROW__INIT;
    struct key k;
    uint64_t seq = 0;
    if (ctx->fsm->lone) {
        return 0;
    }
    int rv = last_seq_get(ctx, &seq);
    if (rv != 0) {
        return rv;
    }
    seq++;
    md.user_id = user_id;
    md.home_region = ctx->fsm->region;
    md.cell_id = ctx->fsm->cell_id;
    md.status = p->status;
    md.plan = p->plan;
    md.created_at_ms = p->created_at_ms;
    md.profile_version = p->version;
    md.follower_count = followers;
    md.following_count = following;
    row.seq = seq;
    row.meta = &md;
    key_id(&k, KEY_PREFIX_OUTBOX, seq);
    rv = cell_kv_put_msg(ctx, &k, &row.base);
    if (rv != 0) {
        return rv;
    }
    key_system(&k, KEY_SYS_OUTBOX_SEQ);
    cell_kv_put_u64(ctx, &k, seq);
    return 0;
}

int cell_outbox_append(struct cell_ctx *ctx, uint64_t user_id)
{
    if (ctx->fsm->lone) {
        return 0; /* before the profile's read */
    }
    ProtobufCMessage *m = NULL;
    struct key k;
    uint64_t followers = 0, following = 0;
    int rv;

    key_id(&k, KEY_PREFIX_USER, user_id);
    rv = cell_kv_get_msg(ctx, &k, &geoscale__profile__descriptor, &m);
    if (rv == GS_ENOTFOUND) {
        /* The command just wrote or checked this profile. */
        log_error("cell", "event=outbox_no_profile cell=%u user=%llu", ctx->fsm->cell_id,
                  (unsigned long long)user_id);
        return GS_EIO;
    }
    if (rv != 0) {
        return rv;
    }
    rv = cell_counts_load(ctx, user_id, &followers, &following);
    if (rv == 0) {
        rv = cell_outbox_append_profile(ctx, user_id, (const Geoscale__Profile *)m, followers,
                                        following);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rv;
}

/* Delete the rows after the last acknowledged up to up_to (at most the last
 * seq assigned), and record up_to as acknowledged. *deleted: how many. */
static int outbox_delete_through(struct cell_ctx *ctx, uint64_t acked, uint64_t up_to,
                                 uint64_t *deleted)
{
    struct key first, last_key, acked_key;
    *deleted = 0;
    if (up_to <= acked) {
        return 0;
    }
    key_id(&first, KEY_PREFIX_OUTBOX, acked + 1);
    key_id(&last_key, KEY_PREFIX_OUTBOX, up_to);
    int rv = cell_kv_delete_range(ctx, &first, &last_key, deleted);
    if (rv == 0) {
        key_system(&acked_key, KEY_SYS_OUTBOX_ACKED);
        cell_kv_put_u64(ctx, &acked_key, up_to);
    }
    return rv;
}

static int acked_get(struct cell_ctx *ctx, uint64_t *acked)
{
    struct key k;
    key_system(&k, KEY_SYS_OUTBOX_ACKED);
    return cell_kv_get_u64_or_0(ctx, &k, acked);
}

int cell_outbox_drain(struct cell_ctx *ctx)
{
    uint64_t last = 0, acked = 0, deleted = 0;
    int rv = last_seq_get(ctx, &last);
    if (rv == 0 && last > 0) {
        rv = acked_get(ctx, &acked);
    }
    if (rv != 0 || acked >= last) {
        return rv;
    }
    uint64_t up_to = last - acked > CELL_OUTBOX_DRAIN_MAX ? acked + CELL_OUTBOX_DRAIN_MAX : last;
    rv = outbox_delete_through(ctx, acked, up_to, &deleted);
    if (rv == 0) {
        /* A line per entry at debug; the end of the drain at info (an old
         * outbox may take thousands of entries). Every replica logs it. */
        log_emit(up_to == last ? LOG_INFO : LOG_DEBUG, "cell",
                 "event=outbox_drained cell=%u up_to_seq=%llu deleted=%llu last_seq=%llu",
                 ctx->fsm->cell_id, (unsigned long long)up_to, (unsigned long long)deleted,
                 (unsigned long long)last);
    }
    return rv;
}

int cell_outbox_ack(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__OutboxAckRequest *req = (const Geoscale__OutboxAckRequest *)msg;
    Geoscale__OutboxAckResponse resp = GEOSCALE__OUTBOX_ACK_RESPONSE__INIT;
    uint64_t last = 0, acked = 0, deleted = 0, edge_deleted = 0;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rv;

    rv = last_seq_get(ctx, &last);
    if (rv == 0) {
        rv = acked_get(ctx, &acked);
    }
    if (rv != 0) {
        goto out;
    }
    if (req->up_to_seq > last) {
        rv = GS_EINVAL;
        goto out;
    }
    if (req->edge_up_to_seq != 0) {
        rv = cell_edge_ack_check(ctx, req->edge_dest_cell, req->edge_up_to_seq);
        if (rv != 0) {
            goto out;
        }
    }
    rv = outbox_delete_through(ctx, acked, req->up_to_seq, &deleted);
    if (rv != 0) {
        goto out;
    }
    if (req->edge_up_to_seq != 0) {
        rv = cell_edge_ack_delete(ctx, req->edge_dest_cell, req->edge_up_to_seq, &edge_deleted);
        if (rv != 0) {
            goto out;
        }
    }
    resp.deleted = deleted + edge_deleted;
    rv = cell_pack(&resp.base, &out, &out_len);
    if (rv != 0) {
        goto out;
    }
    log_debug("cell",
              "event=outbox_ack cell=%u up_to_seq=%llu deleted=%zu edge_dest_cell=%u "
              "edge_up_to_seq=%llu edge_deleted=%llu",
              ctx->fsm->cell_id, (unsigned long long)req->up_to_seq, (size_t)deleted,
              req->edge_dest_cell,
              (unsigned long long)req->edge_up_to_seq, (unsigned long long)edge_deleted);
    *body = out;
    *len = out_len;
out:
    return rv;
}

/* ---------------------------------------------------------------- shipper side */

void cell_fsm_outbox_free(Geoscale__MetadataRow **rows, size_t n_rows)
{
    if (rows == NULL) {
        return;
    }
    for (size_t i = 0; i < n_rows; i++) {
        geoscale__metadata_row__free_unpacked(rows[i], NULL);
    }
    free(rows);
}

int cell_fsm_outbox_read(struct cell_fsm *fsm, uint64_t after_seq, size_t max_rows,
                         size_t max_bytes, Geoscale__MetadataRow ***rows, size_t *n_rows)
{
    struct cell_ctx ctx = {.fsm = fsm, .now_ms = 0};
    Geoscale__MetadataRow **got = NULL;
    rocksdb_iterator_t *it = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    uint64_t last = 0;
    struct key start;
    int rv = 0;

    assert(!fsm->rsm.in_entry);
    *rows = NULL;
    *n_rows = 0;
    if (max_rows == 0 || after_seq == UINT64_MAX) {
        return 0;
    }
    /* The walk starts after the last row acknowledged (the rows before it
     * are tombstones: the shipper asks from seq 0) and stops at the last
     * row (the next key after it may be behind any number of tombstones). */
    uint64_t acked = 0;
    rv = last_seq_get(&ctx, &last);
    if (rv == 0) {
        rv = acked_get(&ctx, &acked);
    }
    if (rv != 0) {
        return rv;
    }
    if (after_seq < acked) {
        after_seq = acked;
    }
    if (after_seq >= last) {
        return 0;
    }
    key_id(&start, KEY_PREFIX_OUTBOX, after_seq + 1);
    it = cell_kv_iter(&ctx);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len);
         rocksdb_iter_valid(it) && n < max_rows; rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        uint64_t seq = 0;
        if (!key_decode_id(kraw, klen, KEY_PREFIX_OUTBOX, &seq)) {
            break;
        }
        const char *v = rocksdb_iter_value(it, &vlen);
        if (n > 0 && (vlen > max_bytes || bytes > max_bytes - vlen)) {
            break;
        }
        Geoscale__MetadataRow *row = geoscale__metadata_row__unpack(NULL, vlen, (const uint8_t *)v);
        if (row == NULL || row->seq != seq || row->meta == NULL) {
            log_error("cell", "event=outbox_bad_row cell=%u seq=%llu", fsm->cell_id,
                      (unsigned long long)seq);
            if (row != NULL) {
                geoscale__metadata_row__free_unpacked(row, NULL);
            }
            rv = GS_EIO;
            goto err;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            Geoscale__MetadataRow **grown = realloc(got, ncap * sizeof *got);
            if (grown == NULL) {
                geoscale__metadata_row__free_unpacked(row, NULL);
                rv = GS_ENOMEM;
                goto err;
            }
            got = grown;
            cap = ncap;
        }
        got[n++] = row;
        bytes += vlen;
        if (seq >= last) {
            break;
        }
    }
    rv = cell_kv_iter_status(it);
    if (rv != 0) {
        goto err;
    }
    rocksdb_iter_destroy(it);
    *rows = got;
    *n_rows = n;
    return 0;
err:
    rocksdb_iter_destroy(it);
    cell_fsm_outbox_free(got, n);
    return rv;
}

uint64_t cell_fsm_outbox_last_seq(struct cell_fsm *fsm)
{
    struct cell_ctx ctx = {.fsm = fsm, .now_ms = 0};
    uint64_t seq = 0;
    assert(!fsm->rsm.in_entry);
    int rv = last_seq_get(&ctx, &seq);
    if (rv != 0) {
        log_error("cell", "event=outbox_seq_unreadable cell=%u code=%s", fsm->cell_id,
                  gs_error_name(rv));
        return 0;
    }
    return seq;
}
