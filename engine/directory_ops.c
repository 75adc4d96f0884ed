/*
 * The directory's commands (contract in directory_fsm.h and directory.proto):
 * cells, username reservations, routes, and the stateless request checks.
 *
 * Placement. ReserveUsername scans the region's cells ('g' index, ascending
 * cell_id) and takes the accepting one with the lowest load, user_count +
 * reserved_count, the first (lowest id) on a tie. Counting pending
 * reservations spreads a burst of signups, which arrive far faster than they
 * are confirmed, instead of piling it onto one cell.
 *
 * User ids. Each cell has its own sequence ('q'), starting at 1, so user_id
 * = cell_id << 40 | seq as a cell allocates them. Ids of released or expired
 * reservations are never handed out again.
 *
 * Expired reservations behave as absent for every command, even before the
 * per-entry sweep (directory_fsm.c) has deleted them: a new ReserveUsername
 * takes the name over (dropping the old row in the same batch), Confirm and
 * Release answer NOT_FOUND.
 */
#include "directory_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "geoscale/errors.h"
#include "log.h"

#define TS_SIGN_FLIP (UINT64_C(1) << 63)

/* ---------------------------------------------------------------- keys */

static void put_u32(uint8_t *dst, uint32_t v)
{
    dst[0] = (uint8_t)(v >> 24);
    dst[1] = (uint8_t)(v >> 16);
    dst[2] = (uint8_t)(v >> 8);
    dst[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void dir_key_cell(struct key *k, uint32_t cell_id)
{
    k->b[0] = DIR_PREFIX_CELL;
    put_u32(k->b + 1, cell_id);
    k->len = 5;
}

void dir_key_region_prefix(struct key *k, const char *region)
{
    size_t n = strlen(region);
    assert(n >= 1 && n <= DIRECTORY_REGION_MAX && n + 6 <= KEY_MAX);
    k->b[0] = DIR_PREFIX_REGION_CELL;
    k->b[1] = (uint8_t)n;
    memcpy(k->b + 2, region, n);
    k->len = 2 + n;
}

void dir_key_region_cell(struct key *k, const char *region, uint32_t cell_id)
{
    dir_key_region_prefix(k, region);
    put_u32(k->b + k->len, cell_id);
    k->len += 4;
}

void dir_key_cell_seq(struct key *k, uint32_t cell_id)
{
    k->b[0] = DIR_PREFIX_CELL_SEQ;
    put_u32(k->b + 1, cell_id);
    k->len = 5;
}

void dir_key_route(struct key *k, uint64_t user_id)
{
    key_id(k, DIR_PREFIX_ROUTE, user_id);
}

void dir_key_name(struct key *k, const uint8_t hash[DIRECTORY_HASH_LEN])
{
    k->b[0] = DIR_PREFIX_NAME;
    memcpy(k->b + 1, hash, DIRECTORY_HASH_LEN);
    k->len = 1 + DIRECTORY_HASH_LEN;
}

void dir_key_expiry(struct key *k, int64_t expires_at_ms, uint64_t user_id)
{
    key_pair(k, DIR_PREFIX_EXPIRY, (uint64_t)expires_at_ms ^ TS_SIGN_FLIP, user_id);
}

bool dir_key_decode_expiry(const void *raw, size_t len, int64_t *expires_at_ms, uint64_t *user_id)
{
    uint64_t ts = 0;
    if (!key_decode_pair(raw, len, DIR_PREFIX_EXPIRY, &ts, user_id)) {
        return false;
    }
    *expires_at_ms = (int64_t)(ts ^ TS_SIGN_FLIP);
    return true;
}

/* ---------------------------------------------------------------- shards */

uint32_t directory_user_shard(uint64_t user_id, uint32_t n_shards)
{
    uint8_t in[8], out[8];
    if (n_shards <= 1) {
        return 0;
    }
    key_put_u64(in, user_id);
    crypto_generichash(out, sizeof out, in, sizeof in, NULL, 0);
    return (uint32_t)(key_get_u64(out) % n_shards);
}

uint32_t directory_username_shard(const uint8_t hash[DIRECTORY_HASH_LEN], uint32_t n_shards)
{
    if (n_shards <= 1) {
        return 0;
    }
    /* An HMAC output is uniform already. */
    return (uint32_t)(key_get_u64(hash) % n_shards);
}

static bool owns_name(const struct dir_ctx *ctx, const uint8_t *hash)
{
    return directory_username_shard(hash, ctx->fsm->n_shards) == ctx->fsm->shard_id;
}

static bool owns_user(const struct dir_ctx *ctx, uint64_t user_id)
{
    return directory_user_shard(user_id, ctx->fsm->n_shards) == ctx->fsm->shard_id;
}

/* ---------------------------------------------------------------- shared helpers */

static int counter_get(struct dir_ctx *ctx, const char *name, uint64_t *value)
{
    struct key k;
    key_system(&k, name);
    return rsm_get_u64_or_0(&ctx->fsm->rsm, &k, value);
}

static int counter_bump(struct dir_ctx *ctx, const char *name, uint64_t *value)
{
    struct key k;
    int rv = counter_get(ctx, name, value);
    if (rv != 0) {
        return rv;
    }
    (*value)++;
    key_system(&k, name);
    rsm_put_u64(&ctx->fsm->rsm, &k, *value);
    return 0;
}

int dir_reservations_expired_get(struct dir_ctx *ctx, int64_t *ts_ms)
{
    return rsm_get_sys_time(&ctx->fsm->rsm, DIR_SYS_RESERVATIONS_EXPIRED, ts_ms);
}

int dir_version_get(struct dir_ctx *ctx, uint64_t *version)
{
    return counter_get(ctx, DIR_SYS_VERSION, version);
}

int dir_version_bump(struct dir_ctx *ctx, uint64_t *version)
{
    return counter_bump(ctx, DIR_SYS_VERSION, version);
}

int dir_routes_version_get(struct dir_ctx *ctx, uint64_t *version)
{
    return counter_get(ctx, DIR_SYS_ROUTES_VERSION, version);
}

/* Load a cell record: 0, GS_ENOTFOUND or GS_EIO. Free with
 * geoscale__cell_info__free_unpacked. */
static int cell_load(struct dir_ctx *ctx, uint32_t cell_id, Geoscale__CellInfo **out)
{
    struct key k;
    dir_key_cell(&k, cell_id);
    return rsm_get_msg(&ctx->fsm->rsm, &k, &geoscale__cell_info__descriptor,
                       (ProtobufCMessage **)out);
}

static int cell_store(struct dir_ctx *ctx, const Geoscale__CellInfo *cell)
{
    struct key k;
    dir_key_cell(&k, cell->cell_id);
    return rsm_put_msg(&ctx->fsm->rsm, &k, &cell->base);
}

/* Load a reservation: 0, GS_ENOTFOUND or GS_EIO. */
static int reservation_load(struct dir_ctx *ctx, const uint8_t *hash,
                            Geoscale__UsernameReservation **out)
{
    struct key k;
    dir_key_name(&k, hash);
    return rsm_get_msg(&ctx->fsm->rsm, &k, &geoscale__username_reservation__descriptor,
                       (ProtobufCMessage **)out);
}

static bool reservation_live(const struct dir_ctx *ctx, const Geoscale__UsernameReservation *res)
{
    return res->state == GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED ||
           res->expires_at_ms > ctx->now_ms;
}

int dir_reservation_drop(struct dir_ctx *ctx, const Geoscale__UsernameReservation *res)
{
    struct rsm *r = &ctx->fsm->rsm;
    Geoscale__CellInfo *cell = NULL;
    struct key k;
    assert(res->state == GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_RESERVED &&
           res->hash.len == DIRECTORY_HASH_LEN);
    int rv = cell_load(ctx, res->cell_id, &cell);
    if (rv == 0) {
        if (cell->reserved_count > 0) {
            cell->reserved_count--;
        }
        rv = cell_store(ctx, cell);
        geoscale__cell_info__free_unpacked(cell, NULL);
    } else if (rv == GS_ENOTFOUND) {
        rv = 0; /* never happens: cells are not removed */
    }
    if (rv != 0) {
        return rv;
    }
    dir_key_name(&k, res->hash.data);
    rsm_delete(r, &k);
    dir_key_expiry(&k, res->expires_at_ms, res->user_id);
    rsm_delete(r, &k);
    return 0;
}

static int pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    return rsm_pack(msg, body, len);
}

/* ---------------------------------------------------------------- cells */

static bool members_equal(const Geoscale__CellInfo *cell, const Geoscale__RegisterCellRequest *req)
{
    if (cell->n_members != req->n_members) {
        return false;
    }
    for (size_t i = 0; i < req->n_members; i++) {
        const Geoscale__CellMember *a = cell->members[i], *b = req->members[i];
        if (a->node_id != b->node_id || strcmp(a->raft_address, b->raft_address) != 0 ||
            strcmp(a->client_address, b->client_address) != 0) {
            return false;
        }
    }
    return true;
}

static int register_cell(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                         size_t *len)
{
    const Geoscale__RegisterCellRequest *req = (const Geoscale__RegisterCellRequest *)m;
    Geoscale__RegisterCellResponse resp = GEOSCALE__REGISTER_CELL_RESPONSE__INIT;
    Geoscale__CellInfo *old = NULL;
    Geoscale__CellInfo cell = GEOSCALE__CELL_INFO__INIT;
    uint64_t version = 0, routes_version = 0;
    struct key k;

    int rv = cell_load(ctx, req->cell_id, &old);
    if (rv != 0 && rv != GS_ENOTFOUND) {
        return rv;
    }
    if (old != NULL && strcmp(old->region, req->region) != 0) {
        rv = GS_ECONFLICT; /* a cell never changes region: its PII is there */
        goto out;
    }
    if (old != NULL) {
        cell = *old;
    } else {
        cell.cell_id = req->cell_id;
        cell.region = req->region;
        cell.accepting = true;
    }
    resp.created = old == NULL;
    resp.changed = old == NULL || !members_equal(old, req);
    if (resp.changed) {
        cell.n_members = req->n_members;
        cell.members = req->members;
        rv = dir_version_bump(ctx, &version);
        if (rv == 0 && old != NULL) {
            /* Caches that route to the old members are wrong now. */
            rv = counter_bump(ctx, DIR_SYS_ROUTES_VERSION, &routes_version);
        } else if (rv == 0) {
            rv = dir_routes_version_get(ctx, &routes_version);
        }
        if (rv == 0) {
            rv = cell_store(ctx, &cell);
        }
        if (rv == 0 && old == NULL) {
            dir_key_region_cell(&k, req->region, req->cell_id);
            rsm_put(&ctx->fsm->rsm, &k, "", 0);
            log_info("directory", "event=cell_registered cell=%" PRIu32 " region=%s", req->cell_id,
                     req->region);
        }
    } else {
        rv = dir_version_get(ctx, &version);
        if (rv == 0) {
            rv = dir_routes_version_get(ctx, &routes_version);
        }
    }
    if (rv != 0) {
        goto out;
    }
    resp.cell = &cell;
    resp.version = version;
    resp.routes_version = routes_version;
    rv = pack(&resp.base, body, len);
out:
    if (old != NULL) {
        geoscale__cell_info__free_unpacked(old, NULL);
    }
    return rv;
}

static int set_cell_accepting(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                              size_t *len)
{
    const Geoscale__SetCellAcceptingRequest *req = (const Geoscale__SetCellAcceptingRequest *)m;
    Geoscale__SetCellAcceptingResponse resp = GEOSCALE__SET_CELL_ACCEPTING_RESPONSE__INIT;
    Geoscale__CellInfo *cell = NULL;
    uint64_t version = 0;

    int rv = cell_load(ctx, req->cell_id, &cell);
    if (rv != 0) {
        return rv;
    }
    if (cell->accepting != req->accepting) {
        cell->accepting = req->accepting;
        rv = dir_version_bump(ctx, &version);
        if (rv == 0) {
            rv = cell_store(ctx, cell);
        }
    } else {
        rv = dir_version_get(ctx, &version);
    }
    if (rv == 0) {
        resp.cell = cell;
        resp.version = version;
        rv = pack(&resp.base, body, len);
    }
    geoscale__cell_info__free_unpacked(cell, NULL);
    return rv;
}

/* ---------------------------------------------------------------- usernames */

/* The least-loaded accepting cell of a region. `leaving` is a cell whose
 * reserved_count is about to lose one (an expired reservation taken over),
 * or 0. 0 and *cell_id, GS_ENOTFOUND (no accepting cell) or GS_EIO. */
static int place(struct dir_ctx *ctx, const char *region, uint32_t leaving, uint32_t *cell_id)
{
    struct key start;
    uint32_t ids[256];
    bool found = false;
    uint64_t best = 0;
    int rv = 0;

    dir_key_region_prefix(&start, region);
    rocksdb_iterator_t *it = rsm_iter(&ctx->fsm->rsm);
    rocksdb_iter_seek(it, (const char *)start.b, start.len);
    /* The scan may be long; walk it in slices of ids, loading records
     * between slices (no batch writes happen meanwhile). */
    while (rv == 0) {
        size_t n = 0;
        for (; rocksdb_iter_valid(it) && n < sizeof ids / sizeof ids[0]; rocksdb_iter_next(it)) {
            size_t klen = 0;
            const uint8_t *raw = (const uint8_t *)rocksdb_iter_key(it, &klen);
            if (klen != start.len + 4 || memcmp(raw, start.b, start.len) != 0) {
                break;
            }
            ids[n++] = get_u32(raw + start.len);
        }
        rv = rsm_iter_status(it);
        for (size_t i = 0; i < n && rv == 0; i++) {
            Geoscale__CellInfo *cell = NULL;
            rv = cell_load(ctx, ids[i], &cell);
            if (rv != 0) {
                break;
            }
            uint64_t load = cell->user_count + cell->reserved_count;
            if (ids[i] == leaving && load > 0) {
                load--;
            }
            if (cell->accepting && (!found || load < best)) {
                found = true;
                best = load;
                *cell_id = ids[i];
            }
            geoscale__cell_info__free_unpacked(cell, NULL);
        }
        if (n < sizeof ids / sizeof ids[0]) {
            break;
        }
    }
    rocksdb_iter_destroy(it);
    if (rv == GS_ENOTFOUND) {
        rv = GS_EIO; /* an index row without its cell */
    }
    if (rv == 0 && !found) {
        rv = GS_ENOTFOUND;
    }
    return rv;
}

/* The next user id of a cell for this shard. 0 with *user_id and *next_seq
 * (the sequence to store), GS_EINTERNAL (sequence exhausted) or GS_EIO. */
static int alloc_user_id(struct dir_ctx *ctx, uint32_t cell_id, uint64_t *user_id,
                         uint64_t *next_seq)
{
    struct key k;
    uint64_t seq = 0;
    dir_key_cell_seq(&k, cell_id);
    int rv = rsm_get_u64(&ctx->fsm->rsm, &k, &seq);
    if (rv == GS_ENOTFOUND) {
        seq = 1;
    } else if (rv != 0) {
        return rv;
    }
    for (; seq < (UINT64_C(1) << DIR_USER_SEQ_BITS); seq++) {
        uint64_t id = (uint64_t)cell_id << DIR_USER_SEQ_BITS | seq;
        if (owns_user(ctx, id)) {
            *user_id = id;
            *next_seq = seq + 1;
            return 0;
        }
    }
    log_error("directory", "event=user_seq_exhausted cell=%" PRIu32, cell_id);
    return GS_EINTERNAL;
}

static int reserve_username(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                            size_t *len)
{
    const Geoscale__ReserveUsernameRequest *req = (const Geoscale__ReserveUsernameRequest *)m;
    Geoscale__ReserveUsernameResponse resp = GEOSCALE__RESERVE_USERNAME_RESPONSE__INIT;
    Geoscale__UsernameReservation *old = NULL;
    Geoscale__UsernameReservation res = GEOSCALE__USERNAME_RESERVATION__INIT;
    Geoscale__CellInfo *cell = NULL;
    struct rsm *r = &ctx->fsm->rsm;
    uint32_t cell_id = 0;
    uint64_t user_id = 0, next_seq = 0;
    struct key k;

    if (!owns_name(ctx, req->hash.data)) {
        return GS_EWRONGCELL;
    }
    int rv = reservation_load(ctx, req->hash.data, &old);
    if (rv != 0 && rv != GS_ENOTFOUND) {
        return rv;
    }
    if (old != NULL && reservation_live(ctx, old)) {
        rv = GS_EEXIST;
        goto out;
    }
    rv = place(ctx, req->region, old != NULL ? old->cell_id : 0, &cell_id);
    if (rv == 0) {
        rv = alloc_user_id(ctx, cell_id, &user_id, &next_seq);
    }
    if (rv != 0) {
        goto out;
    }
    /* Writes. */
    if (old != NULL) {
        rv = dir_reservation_drop(ctx, old); /* expired: taken over */
        if (rv != 0) {
            goto out;
        }
    }
    rv = cell_load(ctx, cell_id, &cell); /* after the drop: it may be the same cell */
    if (rv != 0) {
        rv = rv == GS_ENOTFOUND ? GS_EIO : rv;
        goto out;
    }
    cell->reserved_count++;
    rv = cell_store(ctx, cell);
    if (rv != 0) {
        goto out;
    }
    res.hash = req->hash;
    res.user_id = user_id;
    res.cell_id = cell_id;
    res.state = GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_RESERVED;
    res.expires_at_ms = ctx->now_ms > INT64_MAX - DIRECTORY_RESERVATION_TTL_MS
                            ? INT64_MAX
                            : ctx->now_ms + DIRECTORY_RESERVATION_TTL_MS;
    /* Never below where the expiry's walk starts (a leader's clock more than
     * the TTL behind the last one's), or it would never expire. */
    int64_t walked = INT64_MIN;
    rv = dir_reservations_expired_get(ctx, &walked);
    if (rv != 0) {
        goto out;
    }
    if (res.expires_at_ms < walked) {
        res.expires_at_ms = walked;
    }
    dir_key_name(&k, req->hash.data);
    rv = rsm_put_msg(r, &k, &res.base);
    if (rv != 0) {
        goto out;
    }
    dir_key_expiry(&k, res.expires_at_ms, user_id);
    rsm_put(r, &k, req->hash.data, DIRECTORY_HASH_LEN);
    dir_key_cell_seq(&k, cell_id);
    rsm_put_u64(r, &k, next_seq);
    resp.user_id = user_id;
    resp.cell_id = cell_id;
    resp.expires_at_ms = res.expires_at_ms;
    rv = pack(&resp.base, body, len);
out:
    if (old != NULL) {
        geoscale__username_reservation__free_unpacked(old, NULL);
    }
    if (cell != NULL) {
        geoscale__cell_info__free_unpacked(cell, NULL);
    }
    return rv;
}

/* Load the route of a user: 0, GS_ENOTFOUND or GS_EIO. */
static int route_load(struct dir_ctx *ctx, uint64_t user_id, Geoscale__UserRoute **out)
{
    struct key k;
    dir_key_route(&k, user_id);
    return rsm_get_msg(&ctx->fsm->rsm, &k, &geoscale__user_route__descriptor,
                       (ProtobufCMessage **)out);
}

/* Pack a route with the current version. */
static int pack_route(struct dir_ctx *ctx, const Geoscale__UserRoute *route, uint8_t **body,
                      size_t *len)
{
    /* Confirm, GetRoute and LookupUsername responses share one layout. */
    Geoscale__GetRouteResponse resp = GEOSCALE__GET_ROUTE_RESPONSE__INIT;
    uint64_t version = 0, routes_version = 0;
    int rv = dir_version_get(ctx, &version);
    if (rv == 0) {
        rv = dir_routes_version_get(ctx, &routes_version);
    }
    if (rv != 0) {
        return rv;
    }
    resp.route = (Geoscale__UserRoute *)route;
    resp.version = version;
    resp.routes_version = routes_version;
    return pack(&resp.base, body, len);
}

static int confirm_username(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                            size_t *len)
{
    const Geoscale__ConfirmUsernameRequest *req = (const Geoscale__ConfirmUsernameRequest *)m;
    Geoscale__UsernameReservation *res = NULL;
    Geoscale__CellInfo *cell = NULL;
    Geoscale__UserRoute route = GEOSCALE__USER_ROUTE__INIT;
    Geoscale__UserRoute *stored = NULL;
    struct rsm *r = &ctx->fsm->rsm;
    uint64_t version = 0;
    struct key k;

    if (!owns_name(ctx, req->hash.data)) {
        return GS_EWRONGCELL;
    }
    int rv = reservation_load(ctx, req->hash.data, &res);
    if (rv != 0) {
        return rv;
    }
    if (res->state == GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED) {
        if (res->user_id != req->user_id) {
            rv = GS_EEXIST;
            goto out;
        }
        /* Confirmed already (a retry without idempotency key): same answer. */
        rv = route_load(ctx, res->user_id, &stored);
        if (rv == 0) {
            rv = pack_route(ctx, stored, body, len);
        } else if (rv == GS_ENOTFOUND) {
            rv = GS_EIO;
        }
        goto out;
    }
    if (!reservation_live(ctx, res)) {
        rv = GS_ENOTFOUND; /* expired: the signup must start again */
        goto out;
    }
    if (res->user_id != req->user_id) {
        rv = GS_ECONFLICT; /* held by another signup */
        goto out;
    }
    rv = cell_load(ctx, res->cell_id, &cell);
    if (rv != 0) {
        rv = rv == GS_ENOTFOUND ? GS_EIO : rv;
        goto out;
    }
    /* Writes. */
    dir_key_expiry(&k, res->expires_at_ms, res->user_id);
    rsm_delete(r, &k);
    res->state = GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED;
    res->expires_at_ms = 0;
    dir_key_name(&k, req->hash.data);
    rv = rsm_put_msg(r, &k, &res->base);
    if (rv != 0) {
        goto out;
    }
    cell->user_count++;
    if (cell->reserved_count > 0) {
        cell->reserved_count--;
    }
    rv = cell_store(ctx, cell);
    if (rv != 0) {
        goto out;
    }
    route.user_id = res->user_id;
    route.cell_id = res->cell_id;
    route.region = cell->region;
    dir_key_route(&k, route.user_id);
    rv = rsm_put_msg(r, &k, &route.base);
    if (rv == 0) {
        rv = dir_version_bump(ctx, &version);
    }
    if (rv == 0) {
        rv = pack_route(ctx, &route, body, len);
    }
out:
    geoscale__username_reservation__free_unpacked(res, NULL);
    if (cell != NULL) {
        geoscale__cell_info__free_unpacked(cell, NULL);
    }
    if (stored != NULL) {
        geoscale__user_route__free_unpacked(stored, NULL);
    }
    return rv;
}

static int release_username(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                            size_t *len)
{
    const Geoscale__ReleaseUsernameRequest *req = (const Geoscale__ReleaseUsernameRequest *)m;
    Geoscale__ReleaseUsernameResponse resp = GEOSCALE__RELEASE_USERNAME_RESPONSE__INIT;
    Geoscale__UsernameReservation *res = NULL;

    if (!owns_name(ctx, req->hash.data)) {
        return GS_EWRONGCELL;
    }
    int rv = reservation_load(ctx, req->hash.data, &res);
    if (rv != 0) {
        return rv;
    }
    if (res->state == GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED ||
        res->user_id != req->user_id) {
        rv = GS_ECONFLICT; /* not this signup's to release */
    } else if (!reservation_live(ctx, res)) {
        rv = GS_ENOTFOUND;
    } else {
        rv = dir_reservation_drop(ctx, res);
    }
    if (rv == 0) {
        rv = pack(&resp.base, body, len);
    }
    geoscale__username_reservation__free_unpacked(res, NULL);
    return rv;
}

/* ---------------------------------------------------------------- lookups */

static int get_route(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len)
{
    const Geoscale__GetRouteRequest *req = (const Geoscale__GetRouteRequest *)m;
    Geoscale__UserRoute *route = NULL;
    if (!owns_user(ctx, req->user_id)) {
        return GS_EWRONGCELL;
    }
    int rv = route_load(ctx, req->user_id, &route);
    if (rv != 0) {
        return rv;
    }
    rv = pack_route(ctx, route, body, len);
    geoscale__user_route__free_unpacked(route, NULL);
    return rv;
}

static int lookup_username(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body,
                           size_t *len)
{
    const Geoscale__LookupUsernameRequest *req = (const Geoscale__LookupUsernameRequest *)m;
    Geoscale__UsernameReservation *res = NULL;
    Geoscale__UserRoute *route = NULL;
    if (!owns_name(ctx, req->hash.data)) {
        return GS_EWRONGCELL;
    }
    int rv = reservation_load(ctx, req->hash.data, &res);
    if (rv != 0) {
        return rv;
    }
    if (res->state != GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED) {
        rv = GS_ENOTFOUND; /* a signup in progress is not a user yet */
    } else {
        rv = route_load(ctx, res->user_id, &route);
        if (rv == GS_ENOTFOUND) {
            rv = GS_EIO;
        }
    }
    if (rv == 0) {
        rv = pack_route(ctx, route, body, len);
    }
    if (route != NULL) {
        geoscale__user_route__free_unpacked(route, NULL);
    }
    geoscale__username_reservation__free_unpacked(res, NULL);
    return rv;
}

static int list_cells(struct dir_ctx *ctx, const ProtobufCMessage *m, uint8_t **body, size_t *len)
{
    const Geoscale__ListCellsRequest *req = (const Geoscale__ListCellsRequest *)m;
    Geoscale__ListCellsResponse resp = GEOSCALE__LIST_CELLS_RESPONSE__INIT;
    struct rsm *r = &ctx->fsm->rsm;
    Geoscale__CellInfo **cells = NULL;
    size_t n = 0, cap = 0;
    struct key start;
    int rv = 0;

    if (req->region[0] != '\0') {
        dir_key_region_prefix(&start, req->region);
    } else {
        start.b[0] = DIR_PREFIX_CELL;
        start.len = 1;
    }
    /* Collect the ids first, then load: the iterator reads the DB only here
     * (reads), but stays valid either way. */
    uint32_t *ids = NULL;
    rocksdb_iterator_t *it = rsm_iter(r);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *raw = (const uint8_t *)rocksdb_iter_key(it, &klen);
        if (klen != start.len + 4 || memcmp(raw, start.b, start.len) != 0) {
            break;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            uint32_t *nids = realloc(ids, ncap * sizeof *nids);
            if (nids == NULL) {
                rv = GS_ENOMEM;
                break;
            }
            ids = nids;
            cap = ncap;
        }
        ids[n++] = get_u32(raw + start.len);
    }
    if (rv == 0) {
        rv = rsm_iter_status(it);
    }
    rocksdb_iter_destroy(it);
    if (rv == 0 && n > 0) {
        cells = calloc(n, sizeof *cells);
        if (cells == NULL) {
            rv = GS_ENOMEM;
        }
    }
    size_t loaded = 0;
    for (; rv == 0 && loaded < n; loaded++) {
        rv = cell_load(ctx, ids[loaded], &cells[loaded]);
        if (rv == GS_ENOTFOUND) {
            rv = GS_EIO;
        }
        if (rv != 0) {
            break;
        }
    }
    uint64_t version = 0, routes_version = 0;
    if (rv == 0) {
        rv = dir_version_get(ctx, &version);
    }
    if (rv == 0) {
        rv = dir_routes_version_get(ctx, &routes_version);
    }
    if (rv == 0) {
        resp.n_cells = n;
        resp.cells = cells;
        resp.version = version;
        resp.routes_version = routes_version;
        rv = pack(&resp.base, body, len);
    }
    for (size_t i = 0; i < loaded; i++) {
        geoscale__cell_info__free_unpacked(cells[i], NULL);
    }
    free(cells);
    free(ids);
    return rv;
}

/* ---------------------------------------------------------------- table */

#define KIND(k) GEOSCALE__DIRECTORY_COMMAND_KIND__DIRECTORY_COMMAND_##k

static const struct dir_kind_info kinds[] = {
    [KIND(REGISTER_CELL)] = {&geoscale__register_cell_request__descriptor,
                             &geoscale__register_cell_response__descriptor, register_cell, false},
    [KIND(RESERVE_USERNAME)] = {&geoscale__reserve_username_request__descriptor,
                                &geoscale__reserve_username_response__descriptor, reserve_username,
                                false},
    [KIND(CONFIRM_USERNAME)] = {&geoscale__confirm_username_request__descriptor,
                                &geoscale__confirm_username_response__descriptor, confirm_username,
                                false},
    [KIND(RELEASE_USERNAME)] = {&geoscale__release_username_request__descriptor,
                                &geoscale__release_username_response__descriptor, release_username,
                                false},
    [KIND(SET_CELL_ACCEPTING)] = {&geoscale__set_cell_accepting_request__descriptor,
                                  &geoscale__set_cell_accepting_response__descriptor,
                                  set_cell_accepting, false},
    [KIND(GET_ROUTE)] = {&geoscale__get_route_request__descriptor,
                         &geoscale__get_route_response__descriptor, get_route, true},
    [KIND(LOOKUP_USERNAME)] = {&geoscale__lookup_username_request__descriptor,
                               &geoscale__lookup_username_response__descriptor, lookup_username,
                               true},
    [KIND(LIST_CELLS)] = {&geoscale__list_cells_request__descriptor,
                          &geoscale__list_cells_response__descriptor, list_cells, true},
};

const struct dir_kind_info *dir_kind_lookup(uint32_t kind)
{
    if (kind >= sizeof kinds / sizeof kinds[0] || kinds[kind].handler == NULL) {
        return NULL;
    }
    return &kinds[kind];
}

/* ---------------------------------------------------------------- checks */

static int bad(char *errmsg, size_t len, int code, const char *field, const char *why)
{
    if (errmsg != NULL && len > 0) {
        snprintf(errmsg, len, "%s: %s", field, why);
    }
    return code;
}

/* 1..DIRECTORY_REGION_MAX bytes of [a-z0-9-]. */
static int check_region(const char *region, char *errmsg, size_t len)
{
    size_t n = strlen(region);
    if (n == 0) {
        return bad(errmsg, len, GS_EINVAL, "region", "required");
    }
    if (n > DIRECTORY_REGION_MAX) {
        return bad(errmsg, len, GS_ETOOBIG, "region", "at most 32 bytes");
    }
    for (size_t i = 0; i < n; i++) {
        char c = region[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return bad(errmsg, len, GS_EINVAL, "region", "only [a-z0-9-]");
        }
    }
    return 0;
}

static int check_hash(const ProtobufCBinaryData *hash, char *errmsg, size_t len)
{
    if (hash->len != DIRECTORY_HASH_LEN) {
        return bad(errmsg, len, GS_EINVAL, "hash", "must be 32 bytes");
    }
    return 0;
}

static int check_cell_id(uint32_t cell_id, char *errmsg, size_t len)
{
    if (cell_id == 0 || cell_id > DIR_CELL_ID_MAX) {
        return bad(errmsg, len, GS_EINVAL, "cell_id", "must be 1 to 2^24-1");
    }
    return 0;
}

static int check_user_id(uint64_t user_id, char *errmsg, size_t len)
{
    if (user_id == 0) {
        return bad(errmsg, len, GS_EINVAL, "user_id", "required");
    }
    return 0;
}

static int check_register(const Geoscale__RegisterCellRequest *req, char *errmsg, size_t len)
{
    int rv = check_cell_id(req->cell_id, errmsg, len);
    if (rv == 0) {
        rv = check_region(req->region, errmsg, len);
    }
    if (rv == 0 && req->n_members > DIRECTORY_MEMBERS_MAX) {
        rv = bad(errmsg, len, GS_ETOOBIG, "members", "at most 7");
    }
    for (size_t i = 0; rv == 0 && i < req->n_members; i++) {
        const Geoscale__CellMember *mb = req->members[i];
        if (mb->node_id == 0) {
            rv = bad(errmsg, len, GS_EINVAL, "members.node_id", "required");
        } else if (strlen(mb->raft_address) > DIRECTORY_ADDRESS_MAX ||
                   strlen(mb->client_address) > DIRECTORY_ADDRESS_MAX) {
            rv = bad(errmsg, len, GS_ETOOBIG, "members.address", "at most 255 bytes");
        }
        for (size_t j = 0; rv == 0 && j < i; j++) {
            if (req->members[j]->node_id == mb->node_id) {
                rv = bad(errmsg, len, GS_EINVAL, "members.node_id", "duplicate");
            }
        }
    }
    return rv;
}

int dir_check_request(uint32_t kind, const ProtobufCMessage *m, char *errmsg, size_t len)
{
    switch (kind) {
    case KIND(REGISTER_CELL):
        return check_register((const Geoscale__RegisterCellRequest *)m, errmsg, len);
    case KIND(SET_CELL_ACCEPTING):
        return check_cell_id(((const Geoscale__SetCellAcceptingRequest *)m)->cell_id, errmsg, len);
    case KIND(RESERVE_USERNAME): {
        const Geoscale__ReserveUsernameRequest *req = (const Geoscale__ReserveUsernameRequest *)m;
        int rv = check_hash(&req->hash, errmsg, len);
        return rv != 0 ? rv : check_region(req->region, errmsg, len);
    }
    case KIND(CONFIRM_USERNAME): {
        const Geoscale__ConfirmUsernameRequest *req = (const Geoscale__ConfirmUsernameRequest *)m;
        int rv = check_hash(&req->hash, errmsg, len);
        return rv != 0 ? rv : check_user_id(req->user_id, errmsg, len);
    }
    case KIND(RELEASE_USERNAME): {
        const Geoscale__ReleaseUsernameRequest *req = (const Geoscale__ReleaseUsernameRequest *)m;
        int rv = check_hash(&req->hash, errmsg, len);
        return rv != 0 ? rv : check_user_id(req->user_id, errmsg, len);
    }
    case KIND(GET_ROUTE):
        return check_user_id(((const Geoscale__GetRouteRequest *)m)->user_id, errmsg, len);
    case KIND(LOOKUP_USERNAME):
        return check_hash(&((const Geoscale__LookupUsernameRequest *)m)->hash, errmsg, len);
    case KIND(LIST_CELLS): {
        const char *region = ((const Geoscale__ListCellsRequest *)m)->region;
        return region[0] == '\0' ? 0 : check_region(region, errmsg, len);
    }
    default:
        return bad(errmsg, len, GS_EUNIMPL, "kind", "unknown");
    }
}
