/*
 * The social graph of a cell: Follow, Unfollow, Block, Unblock and the
 * follower/following listings.
 *
 * Each relation is stored twice, once per direction, so that both listings
 * are prefix scans in id order:
 *   follow  actor -> target:  'F' target actor   and  'G' actor target
 *   block   actor -> target:  'B' actor target   and  'b' target actor
 * The counters at 'C'+user_id move with the follow edges in the same batch,
 * so a listing's total always equals the number of its keys.
 *
 * Invariant: no follow edge exists between two users while either blocks the
 * other (Block removes both directions; Follow refuses while a block exists).
 *
 * Cells. The actor must be this cell's user (checked before the handler:
 * GS_EWRONGCELL otherwise). A target homed in another cell is handled by
 * edges.c: the actor's side is applied here and the target's side travels as
 * an edge half through the edge outbox. Everything below is the case of two
 * users of this cell.
 *
 * Outbox. A command that moves counters (Follow, Unfollow, a Block that
 * removed follow edges) appends one outbox row for the actor, then one for
 * the target, after its own writes. Unblock and a Block that removes no
 * follow edge change no metadata and write no row.
 */
#include <stdlib.h>

#include "cell_internal.h"
#include "geoscale/errors.h"
#include "log.h"

int cell_edge_exists(struct cell_ctx *ctx, uint8_t prefix, uint64_t a, uint64_t b, bool *exists)
{
    struct key k;
    key_pair(&k, prefix, a, b);
    return cell_kv_exists(ctx, &k, exists);
}

/* Both the actor `a` (this cell's, checked before the handler) and the
 * target `b` (this cell's, see is_remote) exist here. */
static int require_users(struct cell_ctx *ctx, uint64_t a, uint64_t b)
{
    bool exists = false;
    int rv = cell_user_exists(ctx, a, &exists);
    if (rv != 0) {
        return rv;
    }
    if (!exists) {
        return GS_ENOTFOUND;
    }
    rv = cell_user_exists(ctx, b, &exists);
    if (rv != 0) {
        return rv;
    }
    return exists ? 0 : GS_ENOTFOUND;
}

/* Whether the target of an edge command is of another cell (edges.c). */
static bool is_remote(struct cell_ctx *ctx, uint64_t target)
{
    return cell_of_user(target) != ctx->fsm->cell_id;
}

static int edge_response(bool changed, uint8_t **body, size_t *len)
{
    Geoscale__EdgeResponse resp = GEOSCALE__EDGE_RESPONSE__INIT;
    resp.changed = changed;
    return cell_pack(&resp.base, body, len);
}

static uint64_t dec(uint64_t v, uint64_t user_id)
{
    if (v == 0) {
        /* A broken invariant, not a reason to wrap around. */
        log_error("cell", "event=counter_underflow user=%llu", (unsigned long long)user_id);
        return 0;
    }
    return v - 1;
}

/* Counters of two users, loaded and stored together. */
struct counts {
    uint64_t followers;
    uint64_t following;
};

static int counts_load2(struct cell_ctx *ctx, uint64_t a, struct counts *ca, uint64_t b,
                        struct counts *cb)
{
    int rv = cell_counts_load(ctx, a, &ca->followers, &ca->following);
    if (rv != 0) {
        return rv;
    }
    return cell_counts_load(ctx, b, &cb->followers, &cb->following);
}

/* Store both users' counters and append their outbox rows (a, then b).
 * 0 or a fatal code. */
static int counts_store2(struct cell_ctx *ctx, uint64_t a, const struct counts *ca, uint64_t b,
                         const struct counts *cb)
{
    int rv = cell_counts_store(ctx, a, ca->followers, ca->following);
    if (rv == 0) {
        rv = cell_counts_store(ctx, b, cb->followers, cb->following);
    }
    if (rv == 0) {
        rv = cell_outbox_append(ctx, a);
    }
    if (rv == 0) {
        rv = cell_outbox_append(ctx, b);
    }
    return rv;
}

/* Delete the follow edge follower -> followee (it exists) and adjust the
 * in-memory counters. */
static void follow_delete(struct cell_ctx *ctx, uint64_t follower, struct counts *c_follower,
                          uint64_t followee, struct counts *c_followee)
{
    struct key k;
    key_pair(&k, KEY_PREFIX_FOLLOWER, followee, follower);
    cell_kv_delete(ctx, &k);
    key_pair(&k, KEY_PREFIX_FOLLOWING, follower, followee);
    cell_kv_delete(ctx, &k);
    c_follower->following = dec(c_follower->following, follower);
    c_followee->followers = dec(c_followee->followers, followee);
}

int cell_follow(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__EdgeRequest *req = (const Geoscale__EdgeRequest *)msg;
    uint64_t actor = req->actor_id, target = req->target_id;
    struct counts ca, ct;
    struct key k;
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool b1 = false, b2 = false, following = false;
    int rv;

    if (is_remote(ctx, target)) {
        return cell_follow_remote(ctx, actor, target, body, len);
    }
    if ((rv = require_users(ctx, actor, target)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &b1)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, target, actor, &b2)) != 0) {
        return rv;
    }
    if (b1 || b2) {
        return GS_EBLOCKED;
    }
    if ((rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &following)) != 0) {
        return rv;
    }
    if (following) {
        return edge_response(false, body, len);
    }
    if ((rv = counts_load2(ctx, actor, &ca, target, &ct)) != 0 ||
        (rv = edge_response(true, &out, &out_len)) != 0) {
        return rv;
    }
    key_pair(&k, KEY_PREFIX_FOLLOWER, target, actor);
    cell_kv_put(ctx, &k, "", 0);
    key_pair(&k, KEY_PREFIX_FOLLOWING, actor, target);
    cell_kv_put(ctx, &k, "", 0);
    ca.following++;
    ct.followers++;
    if ((rv = counts_store2(ctx, actor, &ca, target, &ct)) != 0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_unfollow(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__EdgeRequest *req = (const Geoscale__EdgeRequest *)msg;
    uint64_t actor = req->actor_id, target = req->target_id;
    struct counts ca, ct;
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool following = false;
    int rv;

    if (is_remote(ctx, target)) {
        return cell_unfollow_remote(ctx, actor, target, body, len);
    }
    if ((rv = require_users(ctx, actor, target)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &following)) != 0) {
        return rv;
    }
    if (!following) {
        return edge_response(false, body, len);
    }
    if ((rv = counts_load2(ctx, actor, &ca, target, &ct)) != 0 ||
        (rv = edge_response(true, &out, &out_len)) != 0) {
        return rv;
    }
    follow_delete(ctx, actor, &ca, target, &ct);
    if ((rv = counts_store2(ctx, actor, &ca, target, &ct)) != 0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_block(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__EdgeRequest *req = (const Geoscale__EdgeRequest *)msg;
    uint64_t actor = req->actor_id, target = req->target_id;
    struct counts ca, ct;
    struct key k;
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool blocked = false, a_follows = false, t_follows = false;
    int rv;

    if (is_remote(ctx, target)) {
        return cell_block_remote(ctx, actor, target, body, len);
    }
    if ((rv = require_users(ctx, actor, target)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &blocked)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, actor, target, &a_follows)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWING, target, actor, &t_follows)) != 0) {
        return rv;
    }
    if (blocked && !a_follows && !t_follows) {
        return edge_response(false, body, len);
    }
    if ((rv = counts_load2(ctx, actor, &ca, target, &ct)) != 0 ||
        (rv = edge_response(!blocked, &out, &out_len)) != 0) {
        return rv;
    }
    key_pair(&k, KEY_PREFIX_BLOCK, actor, target);
    cell_kv_put(ctx, &k, "", 0);
    key_pair(&k, KEY_PREFIX_BLOCKED_BY, target, actor);
    cell_kv_put(ctx, &k, "", 0);
    if (a_follows) {
        follow_delete(ctx, actor, &ca, target, &ct);
    }
    if (t_follows) {
        follow_delete(ctx, target, &ct, actor, &ca);
    }
    if (a_follows || t_follows) {
        if ((rv = counts_store2(ctx, actor, &ca, target, &ct)) != 0) {
            free(out);
            return rv;
        }
    }
    *body = out;
    *len = out_len;
    return 0;
}

int cell_unblock(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__EdgeRequest *req = (const Geoscale__EdgeRequest *)msg;
    uint64_t actor = req->actor_id, target = req->target_id;
    struct key k;
    uint8_t *out = NULL;
    size_t out_len = 0;
    bool blocked = false;
    int rv;

    if (is_remote(ctx, target)) {
        return cell_unblock_remote(ctx, actor, target, body, len);
    }
    if ((rv = require_users(ctx, actor, target)) != 0 ||
        (rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, actor, target, &blocked)) != 0 ||
        (rv = edge_response(blocked, &out, &out_len)) != 0) {
        return rv;
    }
    if (blocked) {
        key_pair(&k, KEY_PREFIX_BLOCK, actor, target);
        cell_kv_delete(ctx, &k);
        key_pair(&k, KEY_PREFIX_BLOCKED_BY, target, actor);
        cell_kv_delete(ctx, &k);
    }
    *body = out;
    *len = out_len;
    return 0;
}

/* One page of the pair family `prefix` under user_id, ids > cursor. */
static int list_edges(struct cell_ctx *ctx, uint8_t prefix, const Geoscale__ListEdgesRequest *req,
                      uint8_t **body, size_t *len)
{
    Geoscale__ListEdgesResponse resp = GEOSCALE__LIST_EDGES_RESPONSE__INIT;
    rocksdb_iterator_t *it = NULL;
    uint64_t *ids = NULL;
    uint64_t followers = 0, following = 0;
    bool exists = false;
    size_t limit = req->limit == 0 ? CELL_LIST_DEFAULT : req->limit;
    int rv;

    if (limit > CELL_LIST_MAX) {
        limit = CELL_LIST_MAX;
    }
    rv = cell_user_exists(ctx, req->user_id, &exists);
    if (rv != 0) {
        goto out;
    }
    if (!exists) {
        rv = GS_ENOTFOUND;
        goto out;
    }
    rv = cell_counts_load(ctx, req->user_id, &followers, &following);
    if (rv != 0) {
        goto out;
    }
    resp.total = prefix == KEY_PREFIX_FOLLOWER ? followers : following;
    ids = malloc(limit * sizeof *ids);
    if (ids == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    if (req->cursor != UINT64_MAX) {
        struct key start;
        key_pair(&start, prefix, req->user_id, req->cursor + 1);
        it = cell_kv_iter(ctx);
        for (rocksdb_iter_seek(it, (const char *)start.b, start.len); rocksdb_iter_valid(it);
             rocksdb_iter_next(it)) {
            size_t klen = 0;
            const char *kraw = rocksdb_iter_key(it, &klen);
            uint64_t owner = 0, other = 0;
            if (!key_decode_pair(kraw, klen, prefix, &owner, &other) || owner != req->user_id) {
                break;
            }
            if (resp.n_user_ids == limit) {
                resp.next_cursor = ids[limit - 1];
                break;
            }
            ids[resp.n_user_ids++] = other;
        }
        rv = cell_kv_iter_status(it);
        if (rv != 0) {
            goto out;
        }
    }
    resp.user_ids = ids;
    rv = cell_pack(&resp.base, body, len);
out:
    if (it != NULL) {
        rocksdb_iter_destroy(it);
    }
    free(ids);
    return rv;
}

int cell_list_followers(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body,
                        size_t *len)
{
    return list_edges(ctx, KEY_PREFIX_FOLLOWER, (const Geoscale__ListEdgesRequest *)msg, body, len);
}

int cell_list_following(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body,
                        size_t *len)
{
    return list_edges(ctx, KEY_PREFIX_FOLLOWING, (const Geoscale__ListEdgesRequest *)msg, body,
                      len);
}
