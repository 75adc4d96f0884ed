/*
 * Unit tests of edges across cells (engine/edges.c): two cell state machines,
 * A (cell 7) and B (cell 8), each over a real RocksDB in a mkdtemp directory
 * under /tmp. The test plays the shipper by hand: OutboxRead on the origin,
 * EdgeApply on the destination, OutboxAck on the origin, each as the
 * shipper's node would (reads via cell_fsm_read, writes as CellBatch entries
 * at increasing indexes).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>

#include "engine/cell_fsm.h"
#include "engine/entry.h"
#include "engine/methods.h"
#include "geoscale/errors.h"

#define CELL_A 7
#define CELL_B 8
#define UID_OF(cell, seq) (((uint64_t)(cell) << 40) | (uint64_t)(seq))
#define T0 INT64_C(1700000000000)

#define CREATE GEOSCALE__METHOD__METHOD_CREATE_USER
#define FOLLOW GEOSCALE__METHOD__METHOD_FOLLOW
#define UNFOLLOW GEOSCALE__METHOD__METHOD_UNFOLLOW
#define BLOCK GEOSCALE__METHOD__METHOD_BLOCK
#define UNBLOCK GEOSCALE__METHOD__METHOD_UNBLOCK
#define LIST_FOLLOWERS GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS
#define LIST_FOLLOWING GEOSCALE__METHOD__METHOD_LIST_FOLLOWING
#define OUTBOX_ACK GEOSCALE__METHOD__METHOD_OUTBOX_ACK
#define OUTBOX_READ GEOSCALE__METHOD__METHOD_OUTBOX_READ
#define EDGE_APPLY GEOSCALE__METHOD__METHOD_EDGE_APPLY

#define H_FOLLOW GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW
#define H_UNFOLLOW GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNFOLLOW
#define H_BLOCK GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_BLOCK
#define H_UNBLOCK GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNBLOCK
#define H_REJECTED GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW_REJECTED

static const uint8_t hmac_key[32] = "geoscale-test-username-key-0001";

struct cell {
    uint32_t id;
    char dir[64];
    char path[96];
    struct cell_fsm *fsm;
    uint64_t index;
};

struct fx {
    struct cell a, b;
};

/* ---------------------------------------------------------------- fixture */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void cell_open(struct cell *c)
{
    struct cell_fsm_options o = {.db_path = c->path,
                                 .cell_id = c->id,
                                 .username_key = hmac_key,
                                 .username_key_len = sizeof hmac_key,
                                 .compression = false,
                                 .region = "eu"};
    char err[256];
    int rv = cell_fsm_open(&o, &c->fsm, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
}

static void cell_init(struct cell *c, uint32_t id)
{
    c->id = id;
    strcpy(c->dir, "/tmp/gs_test_edges_XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->path, sizeof c->path, "%s/db", c->dir);
    cell_open(c);
    c->index = 0;
}

static void cell_fini(struct cell *c)
{
    cell_fsm_close(c->fsm);
    c->fsm = NULL;
    nftw(c->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    cell_init(&f->a, CELL_A);
    cell_init(&f->b, CELL_B);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cell_fini(&f->a);
    cell_fini(&f->b);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

/* One command as one entry at c's next index. The packed entry is returned
 * in *entry (may be NULL) for replay tests. */
static int write_entry(struct cell *c, uint32_t method, const ProtobufCMessage *msg,
                       ProtobufCMessage **resp, uint8_t **entry, size_t *entry_len)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    Geoscale__CellCommand cmd = GEOSCALE__CELL_COMMAND__INIT;
    Geoscale__CellCommand *ptr = &cmd;
    size_t blen = 0, len = 0, nres = 0;
    uint8_t *body = pack(msg, &blen);
    cmd.method = method;
    cmd.body.data = body;
    cmd.body.len = blen;
    batch.timestamp_ms = T0 + (int64_t)c->index;
    batch.proposer_id = 1;
    batch.n_commands = 1;
    batch.commands = &ptr;
    len = entry_encoded_size(&batch);
    uint8_t *buf = malloc(len);
    assert_int_equal(entry_encode(&batch, buf), len);
    struct cell_result r;
    c->index++;
    assert_int_equal(cell_fsm_apply(c->fsm, c->index, buf, len, &r, 1, &nres), 0);
    assert_int_equal(nres, 1);
    if (resp != NULL) {
        *resp = NULL;
        if (r.status == 0) {
            *resp = protobuf_c_message_unpack(method_lookup(method)->response, NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    }
    free(r.body);
    free(body);
    if (entry != NULL) {
        *entry = buf;
        *entry_len = len;
    } else {
        free(buf);
    }
    return r.status;
}

static int write1(struct cell *c, uint32_t method, const ProtobufCMessage *msg,
                  ProtobufCMessage **resp)
{
    return write_entry(c, method, msg, resp, NULL, NULL);
}

static uint64_t create_user(struct cell *c, const char *name)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.username = (char *)name;
    assert_int_equal(write1(c, CREATE, &req.base, &resp), 0);
    uint64_t id = ((Geoscale__CreateUserResponse *)resp)->user_id;
    protobuf_c_message_free_unpacked(resp, NULL);
    return id;
}

/* An edge command; *changed (if given) the response's flag. */
static int edge(struct cell *c, uint32_t method, uint64_t actor, uint64_t target, int *changed)
{
    Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.actor_id = actor;
    req.target_id = target;
    int rv = write1(c, method, &req.base, &resp);
    if (rv == 0) {
        if (changed != NULL) {
            *changed = ((Geoscale__EdgeResponse *)resp)->changed;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

/* A listing of user_id in c: total, and the first id (0 if none). */
static uint64_t list(struct cell *c, uint32_t method, uint64_t user_id, uint64_t *first)
{
    Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
    struct cell_result r;
    size_t len = 0;
    req.user_id = user_id;
    uint8_t *buf = pack(&req.base, &len);
    assert_int_equal(cell_fsm_read(c->fsm, method, buf, len, &r), 0);
    Geoscale__ListEdgesResponse *resp = geoscale__list_edges_response__unpack(NULL, r.len, r.body);
    assert_non_null(resp);
    /* Totals are the counters; they must equal the keys listed. */
    assert_int_equal(resp->total, resp->n_user_ids);
    uint64_t total = resp->total;
    if (first != NULL) {
        *first = resp->n_user_ids > 0 ? resp->user_ids[0] : 0;
    }
    geoscale__list_edges_response__free_unpacked(resp, NULL);
    free(r.body);
    free(buf);
    return total;
}

static uint64_t following(struct cell *c, uint64_t user_id, uint64_t *first)
{
    return list(c, LIST_FOLLOWING, user_id, first);
}

static uint64_t followers(struct cell *c, uint64_t user_id, uint64_t *first)
{
    return list(c, LIST_FOLLOWERS, user_id, first);
}

/* OutboxRead as the shipper issues it; *raw and *raw_len (if given) receive
 * the packed response. */
static Geoscale__OutboxReadResponse *outbox_read(struct cell *c, uint32_t max_rows, uint8_t **raw,
                                                 size_t *raw_len)
{
    Geoscale__OutboxReadRequest req = GEOSCALE__OUTBOX_READ_REQUEST__INIT;
    struct cell_result r;
    size_t len = 0;
    req.max_rows = max_rows;
    uint8_t *buf = pack(&req.base, &len);
    assert_int_equal(cell_fsm_read(c->fsm, OUTBOX_READ, buf, len, &r), 0);
    free(buf);
    Geoscale__OutboxReadResponse *resp =
        geoscale__outbox_read_response__unpack(NULL, r.len, r.body);
    assert_non_null(resp);
    if (raw != NULL) {
        *raw = r.body;
        *raw_len = r.len;
    } else {
        free(r.body);
    }
    return resp;
}

/* EdgeApply on c from origin; *applied_up_to from the response. */
static int edge_apply(struct cell *c, uint32_t origin, Geoscale__EdgeHalf **halves, size_t n,
                      uint64_t *applied_up_to)
{
    Geoscale__EdgeApplyRequest req = GEOSCALE__EDGE_APPLY_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.origin_cell = origin;
    req.halves = halves;
    req.n_halves = n;
    int rv = write1(c, EDGE_APPLY, &req.base, &resp);
    if (rv == 0) {
        if (applied_up_to != NULL) {
            *applied_up_to = ((Geoscale__EdgeApplyResponse *)resp)->applied_up_to;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

static int edge_ack(struct cell *c, uint32_t dest, uint64_t up_to, uint64_t *deleted)
{
    Geoscale__OutboxAckRequest req = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.edge_dest_cell = dest;
    req.edge_up_to_seq = up_to;
    int rv = write1(c, OUTBOX_ACK, &req.base, &resp);
    if (rv == 0) {
        if (deleted != NULL) {
            *deleted = ((Geoscale__OutboxAckResponse *)resp)->deleted;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

/* The shipper's round from `from` to `to`: OutboxRead, EdgeApply, OutboxAck.
 * Returns the number of halves shipped. */
static size_t ship(struct cell *from, struct cell *to)
{
    Geoscale__OutboxReadResponse *rd = outbox_read(from, 0, NULL, NULL);
    size_t n = rd->n_edge_halves;
    if (n > 0) {
        assert_int_equal(rd->edge_dest_cell, to->id);
        uint64_t up = 0, deleted = 0;
        assert_int_equal(edge_apply(to, from->id, rd->edge_halves, n, &up), 0);
        assert_int_equal(up, rd->edge_halves[n - 1]->seq);
        assert_int_equal(edge_ack(from, to->id, up, &deleted), 0);
        assert_int_equal(deleted, n);
    }
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
    return n;
}

static size_t pending_halves(struct cell *c)
{
    Geoscale__OutboxReadResponse *rd = outbox_read(c, 0, NULL, NULL);
    size_t n = rd->n_edge_halves;
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
    return n;
}

struct digest {
    uint8_t d[32];
    uint64_t n;
};

static struct digest digest(struct cell *c)
{
    struct digest d;
    assert_int_equal(cell_fsm_digest(c->fsm, d.d, &d.n), 0);
    return d;
}

static void assert_digest_equal(struct digest x, struct digest y)
{
    assert_int_equal(x.n, y.n);
    assert_memory_equal(x.d, y.d, 32);
}

/* The last metadata row of user_id pending in c: its counts. */
static void last_meta(struct cell *c, uint64_t user_id, uint64_t *fl, uint64_t *fg)
{
    Geoscale__OutboxReadResponse *rd = outbox_read(c, 1000, NULL, NULL);
    bool found = false;
    for (size_t i = 0; i < rd->n_rows; i++) {
        if (rd->rows[i]->meta->user_id == user_id) {
            *fl = rd->rows[i]->meta->follower_count;
            *fg = rd->rows[i]->meta->following_count;
            found = true;
        }
    }
    assert_true(found);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
}

/* ---------------------------------------------------------------- tests */

/* A follows across cells: the actor's side at once, the target's after the
 * half is shipped; counts and metadata rows on both sides; once. */
static void test_follow_across(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t first = 0, fl = 0, fg = 0;
    int changed = 0;

    assert_int_equal(edge(&f->a, FOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(following(&f->a, a, &first), 1);
    assert_int_equal(first, b);
    last_meta(&f->a, a, &fl, &fg);
    assert_int_equal(fg, 1);
    /* B knows nothing yet. */
    assert_int_equal(followers(&f->b, b, NULL), 0);

    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, CELL_B);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->seq, 1);
    assert_int_equal(rd->edge_halves[0]->kind, H_FOLLOW);
    assert_int_equal(rd->edge_halves[0]->actor_id, a);
    assert_int_equal(rd->edge_halves[0]->target_id, b);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(followers(&f->b, b, &first), 1);
    assert_int_equal(first, a);
    assert_int_equal(following(&f->b, b, NULL), 0);
    last_meta(&f->b, b, &fl, &fg);
    assert_int_equal(fl, 1);
    assert_int_equal(pending_halves(&f->a), 0);
    /* Nothing comes back. */
    assert_int_equal(pending_halves(&f->b), 0);

    /* Already following: no change, no half. */
    assert_int_equal(edge(&f->a, FOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(pending_halves(&f->a), 0);
    assert_int_equal(following(&f->a, a, NULL), 1);

    /* The actor must exist; the target is not checked at the actor's cell. */
    assert_int_equal(edge(&f->a, FOLLOW, UID_OF(CELL_A, 99), b, NULL), GS_ENOTFOUND);
}

static void test_unfollow_across(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t fl = 9, fg = 9;
    int changed = 0;

    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(pending_halves(&f->a), 0);

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(following(&f->a, a, NULL), 0);
    assert_int_equal(followers(&f->b, b, NULL), 1);

    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->seq, 2);
    assert_int_equal(rd->edge_halves[0]->kind, H_UNFOLLOW);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(followers(&f->b, b, NULL), 0);
    last_meta(&f->b, b, &fl, &fg);
    assert_int_equal(fl, 0);
    last_meta(&f->a, a, &fl, &fg);
    assert_int_equal(fg, 0);
}

/* Block across cells removes both follow edges on both sides, and no later
 * follow is accepted in either direction until Unblock. */
static void test_block_across(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t fl = 9, fg = 9;
    int changed = 0;

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->b, FOLLOW, b, a, NULL), 0);
    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(ship(&f->b, &f->a), 1);
    assert_int_equal(following(&f->a, a, NULL), 1);
    assert_int_equal(followers(&f->a, a, NULL), 1);
    assert_int_equal(following(&f->b, b, NULL), 1);
    assert_int_equal(followers(&f->b, b, NULL), 1);

    assert_int_equal(edge(&f->a, BLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(following(&f->a, a, NULL), 0);
    assert_int_equal(followers(&f->a, a, NULL), 0);
    last_meta(&f->a, a, &fl, &fg);
    assert_int_equal(fl, 0);
    assert_int_equal(fg, 0);
    /* B still has its side until the half arrives. */
    assert_int_equal(following(&f->b, b, NULL), 1);

    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(following(&f->b, b, NULL), 0);
    assert_int_equal(followers(&f->b, b, NULL), 0);
    last_meta(&f->b, b, &fl, &fg);
    assert_int_equal(fl, 0);
    assert_int_equal(fg, 0);

    /* Idempotent: no change, no half. */
    assert_int_equal(edge(&f->a, BLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(pending_halves(&f->a), 0);

    /* Neither may follow the other now; B knows from the half. */
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), GS_EBLOCKED);
    assert_int_equal(edge(&f->b, FOLLOW, b, a, NULL), GS_EBLOCKED);
    assert_int_equal(pending_halves(&f->a), 0);
    assert_int_equal(pending_halves(&f->b), 0);

    /* Unblock travels too; then following is allowed again. */
    assert_int_equal(edge(&f->a, UNBLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(edge(&f->a, UNBLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(edge(&f->b, FOLLOW, b, a, NULL), 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
}

/* B blocks A's user while A's follow is in flight: B refuses the follow
 * with a FOLLOW_REJECTED half, and A ends up without the edge. */
static void test_follow_rejected_by_block(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t fl = 9, fg = 9;

    assert_int_equal(edge(&f->b, BLOCK, b, a, NULL), 0);  /* half to A, not shipped */
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0); /* A does not know yet */
    assert_int_equal(following(&f->a, a, NULL), 1);
    assert_int_equal(ship(&f->a, &f->b), 1);
    assert_int_equal(followers(&f->b, b, NULL), 0);

    Geoscale__OutboxReadResponse *rd = outbox_read(&f->b, 0, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, CELL_A);
    assert_int_equal(rd->n_edge_halves, 2);
    assert_int_equal(rd->edge_halves[0]->kind, H_BLOCK);
    assert_int_equal(rd->edge_halves[1]->kind, H_REJECTED);
    assert_int_equal(rd->edge_halves[1]->seq, 2);
    assert_int_equal(rd->edge_halves[1]->actor_id, a);
    assert_int_equal(rd->edge_halves[1]->target_id, b);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    assert_int_equal(ship(&f->b, &f->a), 2);
    assert_int_equal(following(&f->a, a, NULL), 0);
    last_meta(&f->a, a, &fl, &fg);
    assert_int_equal(fg, 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), GS_EBLOCKED);
}

/* A FOLLOW_REJECTED on its own (here: the target has no profile in B)
 * removes the actor's half of the edge. */
static void test_follow_rejected_no_user(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice");
    create_user(&f->b, "bob");
    uint64_t ghost = UID_OF(CELL_B, 999), fl = 9, fg = 9;

    assert_int_equal(edge(&f->a, FOLLOW, a, ghost, NULL), 0);
    assert_int_equal(following(&f->a, a, NULL), 1);
    assert_int_equal(ship(&f->a, &f->b), 1);

    Geoscale__OutboxReadResponse *rd = outbox_read(&f->b, 0, NULL, NULL);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->kind, H_REJECTED);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    assert_int_equal(ship(&f->b, &f->a), 1);
    assert_int_equal(following(&f->a, a, NULL), 0);
    last_meta(&f->a, a, &fl, &fg);
    assert_int_equal(fg, 0);
}

/* Halves delivered again are skipped: the state does not move. A batch that
 * overlaps what was applied applies only its new tail. */
static void test_redelivery_applies_once(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t up = 0;

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    Geoscale__OutboxReadResponse *r1 = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(edge_apply(&f->b, CELL_A, r1->edge_halves, 1, &up), 0);
    assert_int_equal(up, 1);
    struct digest d1 = digest(&f->b);
    assert_int_equal(edge_apply(&f->b, CELL_A, r1->edge_halves, 1, &up), 0);
    assert_int_equal(up, 1);
    assert_digest_equal(digest(&f->b), d1);
    assert_int_equal(followers(&f->b, b, NULL), 1);

    /* Unfollow + follow again: halves 1..3 pending (1 not acked). */
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    Geoscale__OutboxReadResponse *r2 = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(r2->n_edge_halves, 3);
    assert_int_equal(edge_apply(&f->b, CELL_A, r2->edge_halves, 2, &up), 0); /* 1 skipped, 2 */
    assert_int_equal(up, 2);
    assert_int_equal(followers(&f->b, b, NULL), 0);
    assert_int_equal(edge_apply(&f->b, CELL_A, r2->edge_halves, 3, &up), 0); /* only 3 */
    assert_int_equal(up, 3);
    assert_int_equal(followers(&f->b, b, NULL), 1);
    struct digest d3 = digest(&f->b);
    assert_int_equal(edge_apply(&f->b, CELL_A, r2->edge_halves, 3, &up), 0);
    assert_int_equal(up, 3);
    assert_digest_equal(digest(&f->b), d3);
    uint64_t fl = 0, fg = 0;
    last_meta(&f->b, b, &fl, &fg);
    assert_int_equal(fl, 1);
    geoscale__outbox_read_response__free_unpacked(r1, NULL);
    geoscale__outbox_read_response__free_unpacked(r2, NULL);
}

/* A gap is refused whole: nothing of the batch is applied. */
static void test_gap_refused(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t c = create_user(&f->b, "carol"), up = 0;

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, c, NULL), 0);
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0);
    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->n_edge_halves, 3);
    struct digest d0 = digest(&f->b);

    /* Starting at 2 on a fresh origin. */
    assert_int_equal(edge_apply(&f->b, CELL_A, rd->edge_halves + 1, 2, NULL), GS_EINVAL);
    assert_digest_equal(digest(&f->b), d0);
    /* 1 then 3: the good first half is not applied either. */
    Geoscale__EdgeHalf *skip[2] = {rd->edge_halves[0], rd->edge_halves[2]};
    assert_int_equal(edge_apply(&f->b, CELL_A, skip, 2, NULL), GS_EINVAL);
    assert_digest_equal(digest(&f->b), d0);
    assert_int_equal(followers(&f->b, b, NULL), 0);

    /* In order, it applies. */
    assert_int_equal(edge_apply(&f->b, CELL_A, rd->edge_halves, 3, &up), 0);
    assert_int_equal(up, 3);
    assert_int_equal(followers(&f->b, b, NULL), 0);
    assert_int_equal(followers(&f->b, c, NULL), 1);
    /* A later gap after what was applied. */
    Geoscale__EdgeHalf h = GEOSCALE__EDGE_HALF__INIT;
    Geoscale__EdgeHalf *hp = &h;
    h.seq = 5;
    h.kind = H_FOLLOW;
    h.actor_id = a;
    h.target_id = b;
    struct digest d3 = digest(&f->b);
    assert_int_equal(edge_apply(&f->b, CELL_A, &hp, 1, NULL), GS_EINVAL);
    assert_digest_equal(digest(&f->b), d3);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
}

/* Acks delete a prefix of one destination's halves; idempotent; beyond the
 * last seq refused; OutboxRead serves one destination at a time. */
static void test_acks_delete(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint64_t c9 = UID_OF(9, 1), deleted = 0;

    assert_int_equal(edge(&f->a, FOLLOW, a, c9, NULL), 0);  /* dest 9 */
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);   /* dest 8 */
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0); /* dest 8 */

    /* The lowest destination with pending halves first; max_rows bounds it. */
    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 1, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, CELL_B);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->seq, 1);
    assert_int_equal(rd->n_rows, 1);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    /* Beyond the last seq of that destination: refused, nothing deleted. */
    struct digest d = digest(&f->a);
    assert_int_equal(edge_ack(&f->a, CELL_B, 3, NULL), GS_EINVAL);
    assert_int_equal(edge_ack(&f->a, 10, 1, NULL), GS_EINVAL);
    assert_digest_equal(digest(&f->a), d);

    assert_int_equal(edge_ack(&f->a, CELL_B, 1, &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(edge_ack(&f->a, CELL_B, 1, &deleted), 0);
    assert_int_equal(deleted, 0);
    rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, CELL_B);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->seq, 2);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
    assert_int_equal(edge_ack(&f->a, CELL_B, 2, &deleted), 0);
    assert_int_equal(deleted, 1);

    /* Then the next destination. */
    rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, 9);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->target_id, c9);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);

    /* One ack may carry both parts; metadata rows 1..4 are pending. */
    Geoscale__OutboxAckRequest req = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.up_to_seq = 2;
    req.edge_dest_cell = 9;
    req.edge_up_to_seq = 1;
    assert_int_equal(write1(&f->a, OUTBOX_ACK, &req.base, &resp), 0);
    assert_int_equal(((Geoscale__OutboxAckResponse *)resp)->deleted, 3);
    protobuf_c_message_free_unpacked(resp, NULL);
    assert_int_equal(pending_halves(&f->a), 0);
    /* Neither part: malformed. */
    Geoscale__OutboxAckRequest none = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    assert_int_equal(write1(&f->a, OUTBOX_ACK, &none.base, NULL), GS_EINVAL);

    /* Seqs keep counting after acks. */
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->edge_halves[0]->seq, 3);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
}

/* Reads and acks start after the halves acknowledged before: they step
 * over none of their tombstones. */
static void test_acks_skip_no_tombstone(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob"), deleted = 0;
    for (int i = 0; i < 100; i++) { /* halves 1..200 for CELL_B */
        assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
        assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0);
    }
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0); /* 201 */
    uint64_t c9 = UID_OF(9, 1);
    for (int i = 0; i < 50; i++) { /* halves 1..100 for cell 9, after CELL_B's */
        assert_int_equal(edge(&f->a, FOLLOW, a, c9, NULL), 0);
        assert_int_equal(edge(&f->a, UNFOLLOW, a, c9, NULL), 0);
    }
    for (uint64_t seq = 1; seq <= 200; seq++) {
        assert_int_equal(edge_ack(&f->a, CELL_B, seq, &deleted), 0);
        assert_int_equal(deleted, 1);
    }
    assert_int_equal(edge_ack(&f->a, 9, 99, &deleted), 0);
    assert_int_equal(deleted, 99);
    rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
    rocksdb_set_perf_level(rocksdb_enable_count);
    rocksdb_perfcontext_reset(pc);
    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, NULL, NULL);
    assert_int_equal(rd->edge_dest_cell, CELL_B);
    assert_int_equal(rd->n_edge_halves, 1);
    assert_int_equal(rd->edge_halves[0]->seq, 201);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
    assert_int_equal(edge_ack(&f->a, CELL_B, 201, &deleted), 0);
    assert_int_equal(deleted, 1);
    uint64_t skipped = rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
    rocksdb_set_perf_level(rocksdb_disable);
    rocksdb_perfcontext_destroy(pc);
    /* 400 when both walk from seq 0; 99 more when a walk goes past
     * CELL_B's last half to cell 9's first */
    assert_true(skipped < 5);
    assert_int_equal(pending_halves(&f->a), 1);
}

/* A Raft entry replayed (restart) is skipped whole, EdgeApply included. */
static void test_replay_skipped(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(&f->a, "alice"), b = create_user(&f->b, "bob");
    uint8_t *entry = NULL;
    size_t entry_len = 0, nres = 9;

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, NULL, NULL);
    Geoscale__EdgeApplyRequest req = GEOSCALE__EDGE_APPLY_REQUEST__INIT;
    req.origin_cell = CELL_A;
    req.halves = rd->edge_halves;
    req.n_halves = rd->n_edge_halves;
    assert_int_equal(write_entry(&f->b, EDGE_APPLY, &req.base, NULL, &entry, &entry_len), 0);
    uint64_t index = f->b.index;
    struct digest d = digest(&f->b);

    cell_fsm_close(f->b.fsm);
    cell_open(&f->b);
    struct cell_result r;
    assert_int_equal(cell_fsm_apply(f->b.fsm, index, entry, entry_len, &r, 1, &nres), 0);
    assert_int_equal(nres, 0);
    assert_digest_equal(digest(&f->b), d);
    assert_int_equal(followers(&f->b, b, NULL), 1);
    free(entry);
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
}

/* Halves hold ids only: the packed OutboxRead answer of every kind of half
 * holds none of the users' PII. The scan is shown to find PII where it is. */
static void test_halves_hold_no_pii(void **state)
{
    struct fx *f = *state;
    const char *canaries[] = {"canary_edge_user", "CanaryEdgeName", "canary.edge@example.org",
                              "+15550009999",     "CanaryEdgeBio",  "https://canary.example/e.png"};
    const size_t n_canaries = sizeof canaries / sizeof canaries[0];
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    cr.username = (char *)canaries[0];
    cr.display_name = (char *)canaries[1];
    cr.email = (char *)canaries[2];
    cr.phone = (char *)canaries[3];
    cr.bio = (char *)canaries[4];
    cr.avatar_url = (char *)canaries[5];
    assert_int_equal(write1(&f->a, CREATE, &cr.base, &resp), 0);
    uint64_t a = ((Geoscale__CreateUserResponse *)resp)->user_id;
    size_t plen = 0;
    uint8_t *pbuf = pack(&((Geoscale__CreateUserResponse *)resp)->profile->base, &plen);
    for (size_t k = 0; k < n_canaries; k++) {
        assert_non_null(memmem(pbuf, plen, canaries[k], strlen(canaries[k])));
    }
    free(pbuf);
    protobuf_c_message_free_unpacked(resp, NULL);
    cr.username = "canary_edge_two";
    cr.display_name = "CanaryEdgeTwo";
    cr.email = "";
    cr.phone = "";
    cr.bio = "";
    cr.avatar_url = "";
    assert_int_equal(write1(&f->b, CREATE, &cr.base, &resp), 0);
    uint64_t b = ((Geoscale__CreateUserResponse *)resp)->user_id;
    protobuf_c_message_free_unpacked(resp, NULL);

    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, BLOCK, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, UNBLOCK, a, b, NULL), 0);
    assert_int_equal(edge(&f->b, BLOCK, b, a, NULL), 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(ship(&f->a, &f->b), 5); /* the FOLLOW is rejected */

    struct cell *cells[2] = {&f->a, &f->b};
    size_t kinds = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t *raw = NULL;
        size_t raw_len = 0;
        Geoscale__OutboxReadResponse *rd = outbox_read(cells[i], 0, &raw, &raw_len);
        for (size_t h = 0; h < rd->n_edge_halves; h++) {
            kinds |= 1u << rd->edge_halves[h]->kind;
            assert_int_equal(rd->edge_halves[h]->base.n_unknown_fields, 0);
        }
        for (size_t k = 0; k < n_canaries; k++) {
            assert_null(memmem(raw, raw_len, canaries[k], strlen(canaries[k])));
        }
        assert_null(memmem(raw, raw_len, "CanaryEdgeTwo", strlen("CanaryEdgeTwo")));
        geoscale__outbox_read_response__free_unpacked(rd, NULL);
        free(raw);
    }
    /* B holds BLOCK and FOLLOW_REJECTED for A; A's were acked by ship(), so
     * make A's kinds again (A still has its 'G': the rejection is unshipped). */
    assert_int_equal(kinds, (1u << H_BLOCK) | (1u << H_REJECTED));
    assert_int_equal(edge(&f->a, UNFOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, FOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, BLOCK, a, b, NULL), 0);
    assert_int_equal(edge(&f->a, UNBLOCK, a, b, NULL), 0);
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    Geoscale__OutboxReadResponse *rd = outbox_read(&f->a, 0, &raw, &raw_len);
    assert_int_equal(rd->n_edge_halves, 4);
    kinds = 0;
    for (size_t h = 0; h < rd->n_edge_halves; h++) {
        kinds |= 1u << rd->edge_halves[h]->kind;
    }
    assert_int_equal(kinds,
                     (1u << H_FOLLOW) | (1u << H_UNFOLLOW) | (1u << H_BLOCK) | (1u << H_UNBLOCK));
    for (size_t k = 0; k < n_canaries; k++) {
        assert_null(memmem(raw, raw_len, canaries[k], strlen(canaries[k])));
    }
    geoscale__outbox_read_response__free_unpacked(rd, NULL);
    free(raw);
}

/* EdgeApply is not about a local subject user (no WRONG_CELL); halves whose
 * local endpoint is not this cell's are skipped but counted; malformed
 * requests are refused before apply. */
static void test_edge_apply_checks(void **state)
{
    struct fx *f = *state;
    uint64_t a = UID_OF(CELL_A, 1);
    uint64_t b = create_user(&f->b, "bob");
    Geoscale__EdgeHalf h = GEOSCALE__EDGE_HALF__INIT;
    Geoscale__EdgeHalf *hp = &h;
    Geoscale__EdgeApplyRequest req = GEOSCALE__EDGE_APPLY_REQUEST__INIT;
    char err[256];
    size_t len = 0;
    uint8_t *buf;
    uint64_t up = 0;

    /* A half for a user of cell 9 that reached B: skipped, seq counted. */
    h.seq = 1;
    h.kind = H_FOLLOW;
    h.actor_id = a;
    h.target_id = UID_OF(9, 1);
    assert_int_equal(edge_apply(&f->b, CELL_A, &hp, 1, &up), 0);
    assert_int_equal(up, 1);
    assert_int_equal(pending_halves(&f->b), 0);
    /* An UNFOLLOW of a user B does not have: skipped, seq counted. */
    h.seq = 2;
    h.kind = H_UNFOLLOW;
    h.target_id = UID_OF(CELL_B, 500);
    assert_int_equal(edge_apply(&f->b, CELL_A, &hp, 1, &up), 0);
    assert_int_equal(up, 2);
    h.seq = 3;
    h.kind = H_FOLLOW;
    h.target_id = b;
    assert_int_equal(edge_apply(&f->b, CELL_A, &hp, 1, &up), 0);
    assert_int_equal(up, 3);
    assert_int_equal(followers(&f->b, b, NULL), 1);
    /* From itself: refused. */
    h.seq = 4;
    assert_int_equal(edge_apply(&f->b, CELL_B, &hp, 1, NULL), GS_EINVAL);

    /* Validation. */
    req.origin_cell = CELL_A;
    req.halves = &hp;
    req.n_halves = 1;
    const struct {
        Geoscale__EdgeHalfKind kind;
        uint64_t seq, actor, target;
        const char *field;
    } bad[] = {
        {H_FOLLOW, 0, a, b, "seq"},
        {0, 1, a, b, "kind"},
        {99, 1, a, b, "kind"},
        {H_FOLLOW, 1, 0, b, "actor_id"},
        {H_FOLLOW, 1, a, 0, "target_id"},
        {H_FOLLOW, 1, a, UID_OF(CELL_A, 2), "one cell"},
        {H_FOLLOW, 1, UID_OF(9, 1), b, "origin_cell"},
        {H_REJECTED, 1, a, b, "origin_cell"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h.kind = bad[i].kind;
        h.seq = bad[i].seq;
        h.actor_id = bad[i].actor;
        h.target_id = bad[i].target;
        buf = pack(&req.base, &len);
        assert_int_equal(cell_validate_request(EDGE_APPLY, buf, len, NULL, err, sizeof err),
                         GS_EINVAL);
        assert_non_null(strstr(err, bad[i].field));
        free(buf);
    }
    h.kind = H_FOLLOW;
    h.seq = 1;
    h.actor_id = a;
    h.target_id = b;
    buf = pack(&req.base, &len);
    assert_int_equal(cell_validate_request(EDGE_APPLY, buf, len, NULL, err, sizeof err), 0);
    /* A write: not served as a read. */
    struct cell_result r;
    assert_int_equal(cell_fsm_read(f->b.fsm, EDGE_APPLY, buf, len, &r), GS_EUNIMPL);
    free(buf);
    req.n_halves = 0;
    buf = pack(&req.base, &len);
    assert_int_equal(cell_validate_request(EDGE_APPLY, buf, len, NULL, err, sizeof err), GS_EINVAL);
    free(buf);
    Geoscale__EdgeHalf **many = calloc(1025, sizeof *many);
    Geoscale__EdgeHalf *hs = calloc(1025, sizeof *hs);
    for (size_t i = 0; i < 1025; i++) {
        geoscale__edge_half__init(&hs[i]);
        hs[i].seq = i + 1;
        hs[i].kind = H_FOLLOW;
        hs[i].actor_id = a;
        hs[i].target_id = b;
        many[i] = &hs[i];
    }
    req.halves = many;
    req.n_halves = 1025;
    buf = pack(&req.base, &len);
    assert_int_equal(cell_validate_request(EDGE_APPLY, buf, len, NULL, err, sizeof err),
                     GS_ETOOBIG);
    free(buf);
    req.n_halves = 2;
    hs[1].seq = 1;
    buf = pack(&req.base, &len);
    assert_int_equal(cell_validate_request(EDGE_APPLY, buf, len, NULL, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "increase"));
    free(buf);
    free(many);
    free(hs);

    /* OutboxAck: edge part alone is fine; neither part is not. */
    Geoscale__OutboxAckRequest ack = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    buf = pack(&ack.base, &len);
    assert_int_equal(cell_validate_request(OUTBOX_ACK, buf, len, NULL, err, sizeof err), GS_EINVAL);
    free(buf);
    ack.edge_dest_cell = CELL_A;
    ack.edge_up_to_seq = 1;
    buf = pack(&ack.base, &len);
    assert_int_equal(cell_validate_request(OUTBOX_ACK, buf, len, NULL, err, sizeof err), 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_follow_across, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unfollow_across, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_across, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_rejected_by_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_rejected_no_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_applies_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_skip_no_tombstone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_halves_hold_no_pii, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_apply_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
