/*
 * Edges between users of two cells (DESIGN.md: edges live in both endpoints'
 * cells, ids only).
 *
 * The actor's cell decides. Follow, Unfollow, Block and Unblock with a
 * target of another cell apply the actor's side here, in the entry's batch,
 * and append an edge half {kind, actor, target} to the edge outbox of the
 * target's cell in the same batch. The shipper delivers halves with
 * EdgeApply through the destination cell's log, which applies the other
 * side. What each side holds:
 *
 *   actor's cell:  'G' actor target   (actor follows target)
 *                  'F' actor target'  (target' follows actor)
 *                  'B' actor target   (actor blocks target)
 *                  'b' actor target'  (target' blocks actor: refuse follows)
 *
 * that is, the families of the local case restricted to keys whose first id
 * is a local user; the foreign user appears only as the second id, and only
 * the local user's counters move. Counters count local keys, so
 * follower/following totals of a user always equal its listings.
 *
 * Blocks win. The actor's cell refuses a Follow when it knows of a block in
 * either direction ('B' or 'b'). A block made at the target's cell while the
 * follow half is in flight is caught at the destination: FOLLOW finds
 * 'B'(target, actor) and answers with a FOLLOW_REJECTED half back to the
 * actor's cell, which removes its 'G'. A FOLLOW for a target that has no
 * profile here is rejected the same way, so no dangling half stays.
 *
 * Edge outbox, per destination cell:
 *   'y' dest           last seq assigned for dest (absent: 0)
 *   'z' dest           last seq acknowledged for dest (absent: none yet, or
 *                      a database older than this key)
 *   'Y' dest seq       packed geoscale.EdgeHalf {seq, kind, actor, target}
 * seq starts at 1 per destination and grows by one per half; it is assigned
 * in apply, so it is the same on every replica. Halves hold ids only (the
 * message has no other field). OutboxAck {edge_dest_cell, edge_up_to_seq}
 * deletes the prefix up to the seq, as the metadata outbox does, starting
 * after 'z' (outbox.c says why); the shipper's read starts there too.
 *
 * EdgeApply {origin_cell, halves}, per origin cell:
 *   'Z' origin         last seq applied from origin (absent: 0)
 * Halves at or below it are skipped (re-delivery); the rest must continue it
 * densely (last + 1, last + 2, ...), else the request is refused with
 * GS_EINVAL and nothing is applied: a gap means lost halves, and applying
 * past it would lose them for good. A half whose local endpoint is not this
 * cell's, or not a user here, is logged and skipped (its seq still counts):
 * one bad half must not wedge the pair's stream.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>

#include "cell_fsm.h"
#include "cell_internal.h"
#include "geoscale/errors.h"
#include "log.h"

/* ---------------------------------------------------------------- helpers */

static int edge_response(bool changed, uint8_t **body, size_t *len)
{
    Geoscale__EdgeResponse resp = GEOSCALE__EDGE_RESPONSE__INIT;
    resp.changed = changed;
    return cell_pack(&resp.base, body, len);
}

static void edge_put(struct cell_ctx *ctx, uint8_t prefix, uint64_t a, uint64_t b)
{
    struct key k;
    key_pair(&k, prefix, a, b);
    cell_kv_put(ctx, &k, "", 0);
}

static void edge_del(struct cell_ctx *ctx, uint8_t prefix, uint64_t a, uint64_t b)
{
    struct key k;
    key_pair(&k, prefix, a, b);
    cell_kv_delete(ctx, &k);
}

static uint64_t dec(uint64_t v, uint64_t user_id)
{
    if (v == 0) {
        log_error("cell", "event=counter_underflow user=%llu", (unsigned long long)user_id);
        return 0;
    }
    return v - 1;
}

/* Move a local user's counters by the given deltas (each -1, 0 or +1), store
 * them and append the user's metadata outbox row. 0 or a fatal code. */
static int counts_move(struct cell_ctx *ctx, uint64_t user_id, int d_followers, int d_following)
{
    uint64_t followers = 0, following = 0;
    int rv = cell_counts_load(ctx, user_id, &followers, &following);
    if (rv != 0) {
        return rv;
    }
    followers = d_followers < 0 ? dec(followers, user_id) : followers + (uint64_t)d_followers;
    following = d_following < 0 ? dec(following, user_id) : following + (uint64_t)d_following;
    rv = cell_counts_store(ctx, user_id, followers, following);
    if (rv == 0) {
        rv = cell_outbox_append(ctx, user_id);
    }
    return rv;
}

/* ---------------------------------------------------------------- edge outbox (apply side) */

int cell_edge_half_append(struct cell_ctx *ctx, uint32_t dest_cell, Geoscale__EdgeHalfKind kind,
                          uint64_t actor, uint64_t target)
{
    Geoscale__EdgeHalf half = GEOSCALE__EDGE_HALF__INIT;
    struct key k;
    uint64_t seq = 0;

    assert(dest_cell != ctx->fsm->cell_id);
    key_cell(&k, KEY_PREFIX_EDGE_SEQ, dest_cell);
    int rv = cell_kv_get_u64_or_0(ctx, &k, &seq);
    if (rv != 0) {
        return rv;
    }
    seq++;
    half.seq = seq;
    half.kind = kind;
    half.actor_id = actor;
    half.target_id = target;
    key_edge_outbox(&k, dest_cell, seq);
    rv = cell_kv_put_msg(ctx, &k, &half.base);
    if (rv != 0) {
        return rv;
    }
    key_cell(&k, KEY_PREFIX_EDGE_SEQ, dest_cell);
    cell_kv_put_u64(ctx, &k, seq);
    return 0;
}

int cell_edge_ack_check(struct cell_ctx *ctx, uint32_t dest_cell, uint64_t up_to_seq)
{
    struct key k;
    uint64_t last = 0;
    key_cell(&k, KEY_PREFIX_EDGE_SEQ, dest_cell);
    int rv = cell_kv_get_u64_or_0(ctx, &k, &last);
    if (rv != 0) {
        return rv;
    }
    return up_to_seq > last ? GS_EINVAL : 0;
}

int cell_edge_ack_delete(struct cell_ctx *ctx, uint32_t dest_cell, uint64_t up_to_seq,
                         uint64_t *deleted)
{
    struct key first, last, acked_key;
    uint64_t acked = 0;
    *deleted = 0;
    key_cell(&acked_key, KEY_PREFIX_EDGE_ACKED, dest_cell);
    int rv = cell_kv_get_u64_or_0(ctx, &acked_key, &acked);
    if (rv != 0 || up_to_seq <= acked) {
        return rv;
    }
    key_edge_outbox(&first, dest_cell, acked + 1);
    key_edge_outbox(&last, dest_cell, up_to_seq);
    rv = cell_kv_delete_range(ctx, &first, &last, deleted);
    if (rv == 0) {
        cell_kv_put_u64(ctx, &acked_key, up_to_seq);
    }
    return rv;
}

/* ---------------------------------------------------------------- actor's cell */

static int require_actor(struct cell_ctx *ctx, uint64_t actor)
{
    bool exists = false;
    int rv = cell_user_exists(ctx, actor, &exists);
    if (rv != 0) {
        return rv;
    }
    return exists ? 0 : GS_ENOTFOUND;
}

int cell_follow_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                       size_t *len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool blocks = false, blocked_by = false, following = false;
    int rv;

    if ((rv = require_actor(ctx, actor)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &blocks)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCKED_BY, actor, target, &blocked_by)) != 0) {
        return rv;
    }
    if (blocks || blocked_by) {
        return GS_EBLOCKED;
    }
    if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &following)) != 0) {
        return rv;
    }
    if (following) {
        return edge_response(false, body, len);
    }
    if ((rv = edge_response(true, &out, &out_len)) != 0) {
        return rv;
    }
    edge_put(ctx, KEY_PREFIX_FOLLOWING, actor, target);
    if ((rv = counts_move(ctx, actor, 0, +1)) != 0 ||
        (rv = cell_edge_half_append(ctx, cell_of_user(target),
                                    GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW, actor, target)) !=
            0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_unfollow_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                         size_t *len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool following = false;
    int rv;

    if ((rv = require_actor(ctx, actor)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &following)) != 0) {
        return rv;
    }
    if (!following) {
        return edge_response(false, body, len);
    }
    if ((rv = edge_response(true, &out, &out_len)) != 0) {
        return rv;
    }
    edge_del(ctx, KEY_PREFIX_FOLLOWING, actor, target);
    if ((rv = counts_move(ctx, actor, 0, -1)) != 0 ||
        (rv = cell_edge_half_append(ctx, cell_of_user(target),
                                    GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNFOLLOW, actor, target)) !=
            0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_block_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                      size_t *len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool blocked = false, a_follows = false, t_follows = false;
    int rv;

    if ((rv = require_actor(ctx, actor)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &blocked)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &a_follows)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWER, actor, target, &t_follows)) != 0) {
        return rv;
    }
    if (blocked && !a_follows && !t_follows) {
        return edge_response(false, body, len);
    }
    if ((rv = edge_response(!blocked, &out, &out_len)) != 0) {
        return rv;
    }
    edge_put(ctx, KEY_PREFIX_BLOCK, actor, target);
    if (a_follows) {
        edge_del(ctx, KEY_PREFIX_FOLLOWING, actor, target);
    }
    if (t_follows) {
        edge_del(ctx, KEY_PREFIX_FOLLOWER, actor, target);
    }
    if (a_follows || t_follows) {
        rv = counts_move(ctx, actor, t_follows ? -1 : 0, a_follows ? -1 : 0);
    }
    /* The half also removes the target's side of both follow edges. */
    if (rv == 0) {
        rv = cell_edge_half_append(ctx, cell_of_user(target),
                                   GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_BLOCK, actor, target);
    }
    if (rv != 0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_unblock_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                        size_t *len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool blocked = false;
    int rv;

    if ((rv = require_actor(ctx, actor)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &blocked)) != 0 ||
        (rv = edge_response(blocked, &out, &out_len)) != 0) {
        return rv;
    }
    if (blocked) {
        edge_del(ctx, KEY_PREFIX_BLOCK, actor, target);
        rv = cell_edge_half_append(ctx, cell_of_user(target),
                                   GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNBLOCK, actor, target);
        if (rv != 0) {
            free(out);
            return rv;
        }
    }
    *body = out;
    *len = out_len;
    return 0;
}

/* ---------------------------------------------------------------- destination cell */

/* The local endpoint of a half: the target, except for FOLLOW_REJECTED, which
 * returns to the actor's cell. */
static uint64_t half_local_user(const Geoscale__EdgeHalf *h)
{
    return h->kind == GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW_REJECTED ? h->actor_id
                                                                           : h->target_id;
}

/* Apply one half whose local endpoint is a user of this cell. 0 or fatal. */
static int half_apply(struct cell_ctx *ctx, const Geoscale__EdgeHalf *h, bool local_exists)
{
    uint64_t actor = h->actor_id, target = h->target_id;
    bool e1 = false, e2 = false;
    int rv = 0;

    switch (h->kind) {
    case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW:
        if (local_exists &&
            (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, target, actor, &e1)) != 0) {
            return rv;
        }
        if (!local_exists || e1) {
            /* Refused: the actor's cell undoes its 'G'. */
            return cell_edge_half_append(ctx, cell_of_user(actor),
                                         GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW_REJECTED, actor,
                                         target);
        }
        if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWER, target, actor, &e2)) != 0 || e2) {
            return rv;
        }
        edge_put(ctx, KEY_PREFIX_FOLLOWER, target, actor);
        return counts_move(ctx, target, +1, 0);
    case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNFOLLOW:
        if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWER, target, actor, &e1)) != 0 || !e1) {
            return rv;
        }
        edge_del(ctx, KEY_PREFIX_FOLLOWER, target, actor);
        return counts_move(ctx, target, -1, 0);
    case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_BLOCK:
        if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, target, actor, &e1)) != 0 ||
            (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWER, target, actor, &e2)) != 0) {
            return rv;
        }
        edge_put(ctx, KEY_PREFIX_BLOCKED_BY, target, actor);
        if (e1) {
            edge_del(ctx, KEY_PREFIX_FOLLOWING, target, actor);
        }
        if (e2) {
            edge_del(ctx, KEY_PREFIX_FOLLOWER, target, actor);
        }
        if (e1 || e2) {
            rv = counts_move(ctx, target, e2 ? -1 : 0, e1 ? -1 : 0);
        }
        return rv;
    case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNBLOCK:
        edge_del(ctx, KEY_PREFIX_BLOCKED_BY, target, actor);
        return 0;
    case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW_REJECTED:
        if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &e1)) != 0 || !e1) {
            return rv;
        }
        edge_del(ctx, KEY_PREFIX_FOLLOWING, actor, target);
        return counts_move(ctx, actor, 0, -1);
    default:
        /* Validation admits known kinds only. */
        log_warn("cell", "event=edge_half_skipped cell=%" PRIu32 " seq=%" PRIu64 " reason=kind",
                 ctx->fsm->cell_id, h->seq);
        return 0;
    }
}

int cell_edge_apply(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body,
                    size_t *len)
{
    const Geoscale__EdgeApplyRequest *req = (const Geoscale__EdgeApplyRequest *)msg;
    Geoscale__EdgeApplyResponse resp = GEOSCALE__EDGE_APPLY_RESPONSE__INIT;
    uint8_t *out = NULL;
    size_t out_len = 0, first = req->n_halves;
    uint64_t last = 0, expect;
    struct key k;
    int rv;

    if (req->origin_cell == ctx->fsm->cell_id) {
        return GS_EINVAL;
    }
    key_cell(&k, KEY_PREFIX_EDGE_APPLIED, req->origin_cell);
    if ((rv = cell_kv_get_u64_or_0(ctx, &k, &last)) != 0) {
        return rv;
    }
    /* Check the whole sequence before writing anything. */
    expect = last + 1;
    for (size_t i = 0; i < req->n_halves; i++) {
        uint64_t seq = req->halves[i]->seq;
        if (first == req->n_halves) {
            if (seq <= last) {
                continue;
            }
            first = i;
        }
        if (seq != expect) {
            log_warn("cell",
                     "event=edge_apply_gap cell=%" PRIu32 " origin=%" PRIu32 " last=%" PRIu64
                     " seq=%" PRIu64,
                     ctx->fsm->cell_id, req->origin_cell, last, seq);
            return GS_EINVAL;
        }
        expect++;
    }
    resp.applied_up_to = expect - 1;
    if ((rv = cell_pack(&resp.base, &out, &out_len)) != 0) {
        return rv;
    }
    for (size_t i = first; i < req->n_halves; i++) {
        const Geoscale__EdgeHalf *h = req->halves[i];
        uint64_t local = half_local_user(h);
        bool exists = false;
        if (cell_of_user(local) != ctx->fsm->cell_id) {
            log_warn("cell",
                     "event=edge_half_skipped cell=%" PRIu32 " origin=%" PRIu32 " seq=%" PRIu64
                     " user=%" PRIu64 " reason=not_this_cell",
                     ctx->fsm->cell_id, req->origin_cell, h->seq, local);
            continue;
        }
        if ((rv = cell_user_exists(ctx, local, &exists)) != 0) {
            goto err;
        }
        if (!exists && h->kind != GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW) {
            log_warn("cell",
                     "event=edge_half_skipped cell=%" PRIu32 " origin=%" PRIu32 " seq=%" PRIu64
                     " user=%" PRIu64 " reason=no_such_user",
                     ctx->fsm->cell_id, req->origin_cell, h->seq, local);
            continue;
        }
        if ((rv = half_apply(ctx, h, exists)) != 0) {
            goto err;
        }
    }
    if (first < req->n_halves) {
        key_cell(&k, KEY_PREFIX_EDGE_APPLIED, req->origin_cell);
        cell_kv_put_u64(ctx, &k, resp.applied_up_to);
    }
    log_debug("cell", "event=edge_apply cell=%" PRIu32 " origin=%" PRIu32 " applied_up_to=%" PRIu64,
              ctx->fsm->cell_id, req->origin_cell, (uint64_t)resp.applied_up_to);
    *body = out;
    *len = out_len;
    return 0;
err:
    free(out);
    return rv;
}

/* ---------------------------------------------------------------- shipper side */

void cell_fsm_edge_outbox_free(Geoscale__EdgeHalf **halves, size_t n_halves)
{
    if (halves == NULL) {
        return;
    }
    for (size_t i = 0; i < n_halves; i++) {
        geoscale__edge_half__free_unpacked(halves[i], NULL);
    }
    free(halves);
}

/* Where the first destination with halves not yet acknowledged has them:
 * the 'y' keys name the destinations, each 'z' where its halves start, and
 * *last_seq where they end. The read then steps over no tombstone of an
 * acknowledged half. *found is false when every half is acknowledged. 0 or
 * GS_EIO. */
static int edge_outbox_first_pending(struct cell_ctx *ctx, bool *found, struct key *start,
                                     uint64_t *last_seq)
{
    struct key k;
    int rv;

    *found = false;
    key_cell(&k, KEY_PREFIX_EDGE_SEQ, 0);
    rocksdb_iterator_t *it = cell_kv_iter(ctx);
    for (rocksdb_iter_seek(it, (const char *)k.b, k.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        uint32_t dest = 0;
        uint64_t last = 0, acked = 0;
        if (!key_decode_cell(kraw, klen, KEY_PREFIX_EDGE_SEQ, &dest)) {
            break;
        }
        if (vlen != 8) {
            log_error("cell", "event=edge_seq_bad_row cell=%" PRIu32 " dest=%" PRIu32,
                      ctx->fsm->cell_id, dest);
            rocksdb_iter_destroy(it);
            return GS_EIO;
        }
        last = key_get_u64((const uint8_t *)v);
        key_cell(&k, KEY_PREFIX_EDGE_ACKED, dest);
        rv = cell_kv_get_u64_or_0(ctx, &k, &acked);
        if (rv != 0) {
            rocksdb_iter_destroy(it);
            return rv;
        }
        if (last > acked) {
            key_edge_outbox(start, dest, acked + 1);
            *last_seq = last;
            *found = true;
            break;
        }
    }
    rv = cell_kv_iter_status(it);
    rocksdb_iter_destroy(it);
    return rv;
}

int cell_fsm_edge_outbox_read(struct cell_fsm *fsm, size_t max_halves, uint32_t *dest_cell,
                              Geoscale__EdgeHalf ***halves, size_t *n_halves)
{
    struct cell_ctx ctx = {.fsm = fsm, .now_ms = 0};
    Geoscale__EdgeHalf **got = NULL;
    rocksdb_iterator_t *it = NULL;
    size_t n = 0, cap = 0;
    uint32_t dest = 0;
    struct key start;
    uint64_t last = 0;
    bool found = false;
    int rv = 0;

    assert(!fsm->rsm.in_entry);
    *dest_cell = 0;
    *halves = NULL;
    *n_halves = 0;
    if (max_halves == 0) {
        return 0;
    }
    rv = edge_outbox_first_pending(&ctx, &found, &start, &last);
    if (rv != 0 || !found) {
        return rv;
    }
    it = cell_kv_iter(&ctx);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len);
         rocksdb_iter_valid(it) && n < max_halves; rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        uint32_t d = 0;
        uint64_t seq = 0;
        if (!key_decode_edge_outbox(kraw, klen, &d, &seq) || (n > 0 && d != dest)) {
            break;
        }
        dest = d;
        const char *v = rocksdb_iter_value(it, &vlen);
        Geoscale__EdgeHalf *h = geoscale__edge_half__unpack(NULL, vlen, (const uint8_t *)v);
        if (h == NULL || h->seq != seq) {
            log_error("cell", "event=edge_outbox_bad_row cell=%" PRIu32 " dest=%" PRIu32
                              " seq=%" PRIu64,
                      fsm->cell_id, d, seq);
            if (h != NULL) {
                geoscale__edge_half__free_unpacked(h, NULL);
            }
            rv = GS_EIO;
            goto err;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            Geoscale__EdgeHalf **grown = realloc(got, ncap * sizeof *got);
            if (grown == NULL) {
                geoscale__edge_half__free_unpacked(h, NULL);
                rv = GS_ENOMEM;
                goto err;
            }
            got = grown;
            cap = ncap;
        }
        got[n++] = h;
        if (seq >= last) {
            break;
        }
    }
    rv = cell_kv_iter_status(it);
    if (rv != 0) {
        goto err;
    }
    rocksdb_iter_destroy(it);
    *dest_cell = n > 0 ? dest : 0;
    *halves = got;
    *n_halves = n;
    return 0;
err:
    rocksdb_iter_destroy(it);
    cell_fsm_edge_outbox_free(got, n);
    return rv;
}
