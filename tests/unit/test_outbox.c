/*
 * Unit tests of the cell's metadata outbox (engine/outbox.c, API in
 * engine/cell_fsm.h) over a real RocksDB in a mkdtemp directory under /tmp
 * (removed afterwards).
 *
 * Entries are CellBatch entries applied at increasing indexes, as the Raft
 * group applies them; the outbox is observed only through the shipper's API
 * (cell_fsm_outbox_read, cell_fsm_outbox_last_seq), METHOD_OUTBOX_ACK and
 * the state digest.
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

#define CELL 7
#define REGION "eu"
#define UID(seq) (((uint64_t)CELL << 40) | (uint64_t)(seq))
#define T0 INT64_C(1700000000000)

#define CREATE GEOSCALE__METHOD__METHOD_CREATE_USER
#define UPDATE GEOSCALE__METHOD__METHOD_UPDATE_USER
#define FOLLOW GEOSCALE__METHOD__METHOD_FOLLOW
#define UNFOLLOW GEOSCALE__METHOD__METHOD_UNFOLLOW
#define BLOCK GEOSCALE__METHOD__METHOD_BLOCK
#define UNBLOCK GEOSCALE__METHOD__METHOD_UNBLOCK
#define SET_SETTINGS GEOSCALE__METHOD__METHOD_SET_SETTINGS
#define OUTBOX_ACK GEOSCALE__METHOD__METHOD_OUTBOX_ACK
#define ACTIVE GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE
#define SUSPENDED GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED

static const uint8_t hmac_key[32] = "geoscale-test-username-key-0001";

struct fx {
    char dir[64];
    char path[96];
    struct cell_fsm *fsm;
    uint64_t index;
    int64_t now;
};

/* ---------------------------------------------------------------- fixture */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static struct cell_fsm *open_cell(const char *path, const char *region, bool lone)
{
    struct cell_fsm_options o = {.db_path = path,
                                 .cell_id = CELL,
                                 .username_key = hmac_key,
                                 .username_key_len = sizeof hmac_key,
                                 .compression = false,
                                 .region = region,
                                 .lone = lone};
    struct cell_fsm *fsm = NULL;
    char err[256];
    int rv = cell_fsm_open(&o, &fsm, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
    return fsm;
}

static struct cell_fsm *open_region(const char *path, const char *region)
{
    return open_cell(path, region, false);
}

static void fx_init(struct fx *f, const char *region)
{
    strcpy(f->dir, "/tmp/gs_test_outbox_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/db", f->dir);
    f->fsm = open_region(f->path, region);
    f->index = 0;
    f->now = T0;
}

static void fx_fini(struct fx *f)
{
    cell_fsm_close(f->fsm);
    f->fsm = NULL;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    fx_init(f, REGION);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    fx_fini(f);
    free(f);
    return 0;
}

struct cmd {
    uint32_t method;
    uint64_t client_id;
    uint64_t client_seq;
    const ProtobufCMessage *msg;
};

static uint8_t *encode(const struct cmd *c, size_t n, int64_t ts, size_t *len)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    Geoscale__CellCommand *cmds = calloc(n + 1, sizeof *cmds);
    Geoscale__CellCommand **ptrs = calloc(n + 1, sizeof *ptrs);
    uint8_t **bodies = calloc(n + 1, sizeof *bodies);
    for (size_t i = 0; i < n; i++) {
        geoscale__cell_command__init(&cmds[i]);
        cmds[i].method = c[i].method;
        cmds[i].client_id = c[i].client_id;
        cmds[i].client_seq = c[i].client_seq;
        size_t sz = protobuf_c_message_get_packed_size(c[i].msg);
        bodies[i] = malloc(sz + 1);
        protobuf_c_message_pack(c[i].msg, bodies[i]);
        cmds[i].body.data = bodies[i];
        cmds[i].body.len = sz;
        ptrs[i] = &cmds[i];
    }
    batch.timestamp_ms = ts;
    batch.proposer_id = 1;
    batch.n_commands = n;
    batch.commands = ptrs;
    *len = entry_encoded_size(&batch);
    uint8_t *buf = malloc(*len);
    assert_int_equal(entry_encode(&batch, buf), *len);
    for (size_t i = 0; i < n; i++) {
        free(bodies[i]);
    }
    free(bodies);
    free(ptrs);
    free(cmds);
    return buf;
}

/* Apply n commands as the next entry; status[i] receives command i's status
 * (status may be NULL). */
static void apply(struct fx *f, const struct cmd *c, size_t n, int *status)
{
    size_t len = 0, nres = 0;
    uint8_t *buf = encode(c, n, f->now, &len);
    struct cell_result *res = calloc(n + 1, sizeof *res);
    f->index++;
    assert_int_equal(cell_fsm_apply(f->fsm, f->index, buf, len, res, n, &nres), 0);
    assert_int_equal(nres, n);
    for (size_t i = 0; i < n; i++) {
        if (status != NULL) {
            status[i] = res[i].status;
        }
        free(res[i].body);
    }
    free(res);
    free(buf);
}

/* One command; its status, and its unpacked response in *resp if asked. */
static int write1(struct fx *f, uint32_t method, const ProtobufCMessage *msg,
                  ProtobufCMessage **resp)
{
    size_t len = 0, nres = 0;
    struct cmd c = {method, 0, 0, msg};
    uint8_t *buf = encode(&c, 1, f->now, &len);
    struct cell_result r;
    f->index++;
    assert_int_equal(cell_fsm_apply(f->fsm, f->index, buf, len, &r, 1, &nres), 0);
    assert_int_equal(nres, 1);
    if (resp != NULL) {
        *resp = NULL;
        if (r.status == 0) {
            *resp = protobuf_c_message_unpack(method_lookup(method)->response, NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    }
    free(r.body);
    free(buf);
    return r.status;
}

static uint64_t create_user(struct fx *f, const char *name)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.username = (char *)name;
    assert_int_equal(write1(f, CREATE, &req.base, &resp), 0);
    uint64_t id = ((Geoscale__CreateUserResponse *)resp)->user_id;
    protobuf_c_message_free_unpacked(resp, NULL);
    return id;
}

static int edge(struct fx *f, uint32_t method, uint64_t actor, uint64_t target)
{
    Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
    req.actor_id = actor;
    req.target_id = target;
    return write1(f, method, &req.base, NULL);
}

/* OutboxAck; *deleted the response's count (when status 0). */
static int ack(struct fx *f, uint64_t up_to_seq, uint64_t *deleted)
{
    Geoscale__OutboxAckRequest req = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.up_to_seq = up_to_seq;
    int rv = write1(f, OUTBOX_ACK, &req.base, &resp);
    if (rv == 0) {
        *deleted = ((Geoscale__OutboxAckResponse *)resp)->deleted;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

struct rows {
    Geoscale__MetadataRow **r;
    size_t n;
};

static struct rows read_rows(struct fx *f, uint64_t after, size_t max_rows, size_t max_bytes)
{
    struct rows rs = {(Geoscale__MetadataRow **)1, 99};
    assert_int_equal(cell_fsm_outbox_read(f->fsm, after, max_rows, max_bytes, &rs.r, &rs.n), 0);
    if (rs.n == 0) {
        assert_null(rs.r);
    }
    return rs;
}

static struct rows all_rows(struct fx *f)
{
    return read_rows(f, 0, SIZE_MAX, SIZE_MAX);
}

static void rows_free(struct rows *rs)
{
    cell_fsm_outbox_free(rs->r, rs->n);
    rs->r = NULL;
    rs->n = 0;
}

/* The pending rows' seqs must be exactly first..last. */
static void assert_pending(struct fx *f, uint64_t first, uint64_t last)
{
    struct rows rs = all_rows(f);
    assert_int_equal(rs.n, last >= first ? last - first + 1 : 0);
    for (size_t i = 0; i < rs.n; i++) {
        assert_int_equal(rs.r[i]->seq, first + i);
    }
    rows_free(&rs);
}

static void expect_meta(const Geoscale__MetadataRow *row, uint64_t seq, uint64_t user_id,
                        Geoscale__AccountStatus status, const char *plan, int64_t created_at,
                        uint64_t version, uint64_t followers, uint64_t following)
{
    assert_int_equal(row->seq, seq);
    assert_non_null(row->meta);
    const Geoscale__UserMetadata *m = row->meta;
    assert_int_equal(m->user_id, user_id);
    assert_string_equal(m->home_region, REGION);
    assert_int_equal(m->cell_id, CELL);
    assert_int_equal(m->status, status);
    assert_string_equal(m->plan, plan);
    assert_true(m->created_at_ms == created_at);
    assert_int_equal(m->profile_version, version);
    assert_int_equal(m->follower_count, followers);
    assert_int_equal(m->following_count, following);
    assert_false(m->deleted);
}

struct digest {
    uint8_t d[32];
    uint64_t n;
};

static struct digest digest(struct fx *f)
{
    struct digest d;
    assert_int_equal(cell_fsm_digest(f->fsm, d.d, &d.n), 0);
    return d;
}

static void assert_digest_equal(struct digest a, struct digest b)
{
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.d, b.d, 32);
}

/* ---------------------------------------------------------------- tests */

/* Each metadata change writes its row(s) with the values after the change. */
static void test_rows_with_changes(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 0);
    struct rows rs = all_rows(f);
    assert_int_equal(rs.n, 0);

    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "alice";
    cr.plan = "pro";
    f->now = T0 + 1;
    assert_int_equal(write1(f, CREATE, &cr.base, NULL), 0);
    f->now = T0 + 2;
    uint64_t a = UID(1), b = create_user(f, "bob");
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 2);
    rs = all_rows(f);
    assert_int_equal(rs.n, 2);
    expect_meta(rs.r[0], 1, a, ACTIVE, "pro", T0 + 1, 1, 0, 0);
    expect_meta(rs.r[1], 2, b, ACTIVE, "", T0 + 2, 1, 0, 0);
    rows_free(&rs);

    /* Follow: the actor's row (following), then the target's (followers). */
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    rs = read_rows(f, 2, SIZE_MAX, SIZE_MAX);
    assert_int_equal(rs.n, 2);
    expect_meta(rs.r[0], 3, a, ACTIVE, "pro", T0 + 1, 1, 0, 1);
    expect_meta(rs.r[1], 4, b, ACTIVE, "", T0 + 2, 1, 1, 0);
    rows_free(&rs);

    /* Update of status and plan: version 2, counts carried along. */
    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS,
                                       GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN};
    ur.user_id = a;
    ur.fields = fields;
    ur.n_fields = 2;
    ur.status = SUSPENDED;
    ur.plan = "biz";
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), 0);
    /* A PII-only update still bumps the profile version: a row. */
    Geoscale__ProfileField bio[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO};
    ur.fields = bio;
    ur.n_fields = 1;
    ur.bio = "new bio";
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), 0);
    rs = read_rows(f, 4, SIZE_MAX, SIZE_MAX);
    assert_int_equal(rs.n, 2);
    expect_meta(rs.r[0], 5, a, SUSPENDED, "biz", T0 + 1, 2, 0, 1);
    expect_meta(rs.r[1], 6, a, SUSPENDED, "biz", T0 + 1, 3, 0, 1);
    rows_free(&rs);

    /* Mutual follows, then a block removes both: both users' rows. */
    assert_int_equal(edge(f, FOLLOW, b, a), 0); /* rows 7 (b), 8 (a) */
    assert_int_equal(edge(f, BLOCK, b, a), 0);  /* rows 9 (b), 10 (a) */
    rs = read_rows(f, 6, SIZE_MAX, SIZE_MAX);
    assert_int_equal(rs.n, 4);
    expect_meta(rs.r[0], 7, b, ACTIVE, "", T0 + 2, 1, 1, 1);
    expect_meta(rs.r[1], 8, a, SUSPENDED, "biz", T0 + 1, 3, 1, 1);
    expect_meta(rs.r[2], 9, b, ACTIVE, "", T0 + 2, 1, 0, 0);
    expect_meta(rs.r[3], 10, a, SUSPENDED, "biz", T0 + 1, 3, 0, 0);
    rows_free(&rs);

    /* Unfollow: two rows. */
    uint64_t c = create_user(f, "carol");         /* row 11 */
    assert_int_equal(edge(f, FOLLOW, c, a), 0);   /* 12, 13 */
    assert_int_equal(edge(f, UNFOLLOW, c, a), 0); /* 14, 15 */
    rs = read_rows(f, 13, SIZE_MAX, SIZE_MAX);
    assert_int_equal(rs.n, 2);
    expect_meta(rs.r[0], 14, c, ACTIVE, "", T0 + 2, 1, 0, 0);
    expect_meta(rs.r[1], 15, a, SUSPENDED, "biz", T0 + 1, 3, 0, 0);
    rows_free(&rs);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 15);
    assert_pending(f, 1, 15);
}

/* Commands that fail, or that change no metadata, write no row. */
static void test_no_row_without_change(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob"), c = create_user(f, "carol");
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    assert_int_equal(edge(f, BLOCK, c, a), 0); /* no follow between them: no row */
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 5);
    struct digest before = digest(f);
    uint64_t other = ((uint64_t)(CELL + 1) << 40) | 1;

    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "alice";
    assert_int_equal(write1(f, CREATE, &cr.base, NULL), GS_EEXIST);
    cr.username = "dave";
    cr.user_id = UID(2);
    assert_int_equal(write1(f, CREATE, &cr.base, NULL), GS_EEXIST);
    cr.user_id = other;
    assert_int_equal(write1(f, CREATE, &cr.base, NULL), GS_EWRONGCELL);
    cr.user_id = 0;
    cr.region = "asia";
    assert_int_equal(write1(f, CREATE, &cr.base, NULL), GS_EWRONGCELL);

    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN};
    ur.user_id = a;
    ur.expected_version = 9;
    ur.fields = fields;
    ur.n_fields = 1;
    ur.plan = "x";
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), GS_ECONFLICT);
    ur.expected_version = 0;
    ur.user_id = UID(99);
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), GS_ENOTFOUND);
    ur.user_id = other;
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), GS_EWRONGCELL);

    assert_int_equal(edge(f, FOLLOW, a, b), 0);   /* already following */
    assert_int_equal(edge(f, UNFOLLOW, b, a), 0); /* not following */
    assert_int_equal(edge(f, FOLLOW, a, c), GS_EBLOCKED);
    assert_int_equal(edge(f, FOLLOW, a, UID(99)), GS_ENOTFOUND);
    assert_int_equal(edge(f, UNFOLLOW, a, other), 0); /* across cells, not following */
    assert_int_equal(edge(f, FOLLOW, other, a), GS_EWRONGCELL);
    assert_int_equal(edge(f, BLOCK, c, a), 0); /* already blocked */
    assert_digest_equal(digest(f), before);

    /* Unblock and settings change state but no metadata. */
    assert_int_equal(edge(f, UNBLOCK, c, a), 0);
    Geoscale__SetSettingsRequest sr = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    Geoscale__Settings s = GEOSCALE__SETTINGS__INIT;
    s.email_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC;
    sr.user_id = a;
    sr.settings = &s;
    assert_int_equal(write1(f, SET_SETTINGS, &sr.base, NULL), 0);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 5);
    assert_pending(f, 1, 5);
}

/* Rows cross regions: none may hold a byte of PII. The scan is shown to
 * work on a message that does hold it. */
static void test_rows_hold_no_pii(void **state)
{
    struct fx *f = *state;
    const char *canaries[2][7] = {
        {"canary_user_one", "CanaryDisplayOne", "canary.one@example.org", "+15550001111",
         "1987-06-05", "CanaryBioOne", "https://canary.example/one.png"},
        {"canary_user_two", "CanaryDisplayTwo", "canary.two@example.org", "+15550002222",
         "1991-12-30", "CanaryBioTwo", "https://canary.example/two.png"},
    };
    uint64_t ids[2];
    for (int u = 0; u < 2; u++) {
        Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        cr.username = (char *)canaries[u][0];
        cr.display_name = (char *)canaries[u][1];
        cr.email = (char *)canaries[u][2];
        cr.phone = (char *)canaries[u][3];
        cr.birth_date = (char *)canaries[u][4];
        cr.bio = (char *)canaries[u][5];
        cr.avatar_url = (char *)canaries[u][6];
        cr.plan = "pro";
        assert_int_equal(write1(f, CREATE, &cr.base, &resp), 0);
        ids[u] = ((Geoscale__CreateUserResponse *)resp)->user_id;

        /* The scan finds every canary in a message that holds the PII. */
        Geoscale__Profile *p = ((Geoscale__CreateUserResponse *)resp)->profile;
        size_t sz = protobuf_c_message_get_packed_size(&p->base);
        uint8_t *buf = malloc(sz);
        protobuf_c_message_pack(&p->base, buf);
        for (int k = 0; k < 7; k++) {
            assert_non_null(memmem(buf, sz, canaries[u][k], strlen(canaries[u][k])));
        }
        free(buf);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    /* Every kind of row: update (of PII fields too), follows, block. */
    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO,
                                       GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_EMAIL};
    ur.user_id = ids[0];
    ur.fields = fields;
    ur.n_fields = 2;
    ur.bio = (char *)canaries[0][5];
    ur.email = (char *)canaries[0][2];
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), 0);
    assert_int_equal(edge(f, FOLLOW, ids[0], ids[1]), 0);
    assert_int_equal(edge(f, FOLLOW, ids[1], ids[0]), 0);
    assert_int_equal(edge(f, BLOCK, ids[0], ids[1]), 0);

    struct rows rs = all_rows(f);
    assert_int_equal(rs.n, 2 + 1 + 2 + 2 + 2);
    size_t hits = 0;
    for (size_t i = 0; i < rs.n; i++) {
        size_t sz = protobuf_c_message_get_packed_size(&rs.r[i]->base);
        uint8_t *buf = malloc(sz);
        protobuf_c_message_pack(&rs.r[i]->base, buf);
        for (int u = 0; u < 2; u++) {
            for (int k = 0; k < 7; k++) {
                if (memmem(buf, sz, canaries[u][k], strlen(canaries[u][k])) != NULL) {
                    hits++;
                }
            }
        }
        /* Only known fields: nothing protobuf-c kept as unknown. */
        assert_int_equal(rs.r[i]->base.n_unknown_fields, 0);
        assert_int_equal(rs.r[i]->meta->base.n_unknown_fields, 0);
        free(buf);
    }
    assert_int_equal(hits, 0);
    rows_free(&rs);
}

/* seq: from 1, +1 per row, across entries, within an entry, and across a
 * reopen; never reused after an ack. */
static void test_seq_increasing(void **state)
{
    struct fx *f = *state;
    Geoscale__CreateUserRequest cr[3];
    const char *names[3] = {"a", "b", "c"};
    struct cmd c[3];
    for (int i = 0; i < 3; i++) {
        geoscale__create_user_request__init(&cr[i]);
        cr[i].username = (char *)names[i];
        c[i] = (struct cmd){CREATE, 0, 0, &cr[i].base};
    }
    /* One entry, three creates and a follow of a user created in it. */
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = UID(1);
    er.target_id = UID(3);
    struct cmd all[4] = {c[0], c[1], c[2], {FOLLOW, 0, 0, &er.base}};
    int st[4];
    apply(f, all, 4, st);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(st[i], 0);
    }
    struct rows rs = all_rows(f);
    assert_int_equal(rs.n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(rs.r[i]->seq, i + 1);
    }
    assert_int_equal(rs.r[0]->meta->user_id, UID(1));
    assert_int_equal(rs.r[2]->meta->user_id, UID(3));
    assert_int_equal(rs.r[3]->meta->user_id, UID(1));
    assert_int_equal(rs.r[3]->meta->following_count, 1);
    assert_int_equal(rs.r[4]->meta->user_id, UID(3));
    assert_int_equal(rs.r[4]->meta->follower_count, 1);
    rows_free(&rs);

    /* Reopen: rows and the counter survive, the sequence continues. */
    assert_int_equal(cell_fsm_sync(f->fsm), 0);
    cell_fsm_close(f->fsm);
    f->fsm = open_region(f->path, REGION);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 5);
    assert_pending(f, 1, 5);
    create_user(f, "d");
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 6);
    assert_pending(f, 1, 6);

    /* After everything is acknowledged, numbering goes on. */
    uint64_t deleted = 0;
    assert_int_equal(ack(f, 6, &deleted), 0);
    assert_int_equal(deleted, 6);
    assert_pending(f, 1, 0);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 6);
    cell_fsm_close(f->fsm);
    f->fsm = open_region(f->path, REGION);
    create_user(f, "e");
    rs = all_rows(f);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 7);
    rows_free(&rs);
}

static void test_read_paging(void **state)
{
    struct fx *f = *state;
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "u%d", i);
        create_user(f, name);
    }
    /* Pages by row count. */
    uint64_t after = 0;
    size_t pages = 0, seen = 0;
    for (;;) {
        struct rows rs = read_rows(f, after, 4, SIZE_MAX);
        if (rs.n == 0) {
            break;
        }
        assert_true(rs.n <= 4);
        for (size_t i = 0; i < rs.n; i++) {
            assert_int_equal(rs.r[i]->seq, after + 1 + i);
            assert_int_equal(rs.r[i]->meta->user_id, UID(after + 1 + i));
        }
        after += rs.n;
        seen += rs.n;
        pages++;
        rows_free(&rs);
    }
    assert_int_equal(seen, 10);
    assert_int_equal(pages, 3);
    struct rows rs = read_rows(f, 10, 4, SIZE_MAX);
    assert_int_equal(rs.n, 0);
    rs = read_rows(f, UINT64_MAX, 4, SIZE_MAX);
    assert_int_equal(rs.n, 0);
    rs = read_rows(f, 0, 0, SIZE_MAX);
    assert_int_equal(rs.n, 0);
    rs = read_rows(f, 3, 1, SIZE_MAX);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 4);
    rows_free(&rs);

    /* Pages by bytes: the first row always, then only what fits. */
    rs = read_rows(f, 0, SIZE_MAX, 1);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 1);
    rows_free(&rs);
    rs = all_rows(f);
    size_t two = protobuf_c_message_get_packed_size(&rs.r[0]->base) +
                 protobuf_c_message_get_packed_size(&rs.r[1]->base);
    size_t three = two + protobuf_c_message_get_packed_size(&rs.r[2]->base);
    rows_free(&rs);
    rs = read_rows(f, 0, SIZE_MAX, two);
    assert_int_equal(rs.n, 2);
    rows_free(&rs);
    rs = read_rows(f, 0, SIZE_MAX, three - 1);
    assert_int_equal(rs.n, 2);
    rows_free(&rs);
    rs = read_rows(f, 0, SIZE_MAX, three);
    assert_int_equal(rs.n, 3);
    rows_free(&rs);

    /* Reading deletes nothing. */
    assert_pending(f, 1, 10);
    cell_fsm_outbox_free(NULL, 0);
}

static void test_ack(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    assert_int_equal(edge(f, FOLLOW, b, a), 0); /* rows 1..6 */
    uint64_t deleted = 99;

    assert_int_equal(ack(f, 3, &deleted), 0);
    assert_int_equal(deleted, 3);
    assert_pending(f, 4, 6);
    struct rows rs = read_rows(f, 0, 1, SIZE_MAX); /* after_seq below the first row */
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 4);
    rows_free(&rs);

    /* Idempotent: the same ack or an older one deletes nothing more. */
    struct digest d = digest(f);
    assert_int_equal(ack(f, 3, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(ack(f, 1, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_digest_equal(digest(f), d);

    /* Beyond the last seq assigned: refused, nothing deleted. */
    assert_int_equal(ack(f, 7, &deleted), GS_EINVAL);
    assert_int_equal(ack(f, UINT64_MAX, &deleted), GS_EINVAL);
    assert_digest_equal(digest(f), d);
    assert_pending(f, 4, 6);

    /* up_to_seq 0 is malformed. */
    assert_int_equal(ack(f, 0, &deleted), GS_EINVAL);

    /* Rows written after an ack are kept by an ack that does not reach
     * them; acks and writes in one entry apply in order. */
    Geoscale__OutboxAckRequest ar = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    ar.up_to_seq = 7;
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "carol";
    struct cmd c[2] = {{CREATE, 0, 0, &cr.base}, {OUTBOX_ACK, 0, 0, &ar.base}};
    int st[2];
    apply(f, c, 2, st); /* row 7, then ack up to 7 */
    assert_int_equal(st[0], 0);
    assert_int_equal(st[1], 0);
    assert_pending(f, 1, 0);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 7);

    /* OutboxAck is a write: not served as a read. */
    size_t sz = protobuf_c_message_get_packed_size(&ar.base);
    uint8_t buf[16];
    protobuf_c_message_pack(&ar.base, buf);
    struct cell_result r;
    assert_int_equal(cell_fsm_read(f->fsm, OUTBOX_ACK, buf, sz, &r), GS_EUNIMPL);
    char err[128];
    assert_int_equal(cell_validate_request(OUTBOX_ACK, buf, sz, NULL, err, sizeof err), 0);
}

/* Tombstones RocksDB stepped over in this thread since *pc was reset. */
static uint64_t deletes_skipped(rocksdb_perfcontext_t *pc)
{
    return rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
}

/* An ack starts after the rows acknowledged before: it steps over none of
 * their tombstones, however many acks came before it. */
static void test_ack_skips_no_tombstone(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob"), deleted = 0;
    for (int i = 0; i < 100; i++) { /* rows 3..402 */
        assert_int_equal(edge(f, FOLLOW, a, b), 0);
        assert_int_equal(edge(f, UNFOLLOW, a, b), 0);
    }
    for (uint64_t seq = 1; seq <= 400; seq++) {
        assert_int_equal(ack(f, seq, &deleted), 0);
        assert_int_equal(deleted, 1);
    }
    rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
    rocksdb_set_perf_level(rocksdb_enable_count);
    rocksdb_perfcontext_reset(pc);
    assert_int_equal(ack(f, 401, &deleted), 0);
    assert_int_equal(deleted, 1);
    uint64_t skipped = deletes_skipped(pc);
    struct rows rs = read_rows(f, 401, 10, SIZE_MAX); /* the shipper's next read */
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 402);
    rows_free(&rs);
    rs = read_rows(f, 0, 10, SIZE_MAX); /* as the shipper asks: from seq 0 */
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0]->seq, 402);
    rows_free(&rs);
    skipped += deletes_skipped(pc);
    rocksdb_set_perf_level(rocksdb_disable);
    rocksdb_perfcontext_destroy(pc);
    assert_true(skipped < 5); /* 400 for each walk from seq 0 */
    assert_pending(f, 402, 402);
}

/* A lone cell writes no rows: no metadata group would ever read them. */
static void test_lone_writes_none(void **state)
{
    struct fx *f = *state;
    cell_fsm_close(f->fsm);
    f->fsm = open_cell(f->path, REGION, true);
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField field = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO;
    ur.user_id = a;
    ur.n_fields = 1;
    ur.fields = &field;
    ur.bio = "hello";
    assert_int_equal(write1(f, UPDATE, &ur.base, NULL), 0);
    assert_pending(f, 1, 0);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 0);
}

/* Reopened as a lone cell, a database with rows drains them, a bounded
 * number per entry, and keeps its seq. */
static void test_lone_drains(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    for (int i = 0; i < 75; i++) { /* rows 3..302 */
        assert_int_equal(edge(f, FOLLOW, a, b), 0);
        assert_int_equal(edge(f, UNFOLLOW, a, b), 0);
    }
    uint64_t deleted = 0;
    assert_int_equal(ack(f, 10, &deleted), 0);
    assert_pending(f, 11, 302);
    cell_fsm_close(f->fsm);
    f->fsm = open_cell(f->path, REGION, true);
    assert_pending(f, 11, 302);
    /* Each entry first deletes at most 256, oldest first. */
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    assert_pending(f, 267, 302);
    assert_int_equal(edge(f, UNFOLLOW, a, b), 0);
    assert_pending(f, 1, 0);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 302);
    /* Opened as a cell of a cluster again, it goes on from there. */
    cell_fsm_close(f->fsm);
    f->fsm = open_region(f->path, REGION);
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    assert_pending(f, 303, 304);
}

/* A replayed entry (index <= applied_index) writes no row. */
static void test_replay_leaves_outbox(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    assert_int_equal(edge(f, FOLLOW, a, b), 0);
    uint64_t deleted = 0;
    assert_int_equal(ack(f, 1, &deleted), 0);
    struct digest before = digest(f);
    uint64_t applied = cell_fsm_applied_index(f->fsm);

    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "carol";
    Geoscale__OutboxAckRequest ar = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    ar.up_to_seq = 4;
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = b;
    er.target_id = a;
    struct cmd c[3] = {
        {CREATE, 0, 0, &cr.base}, {FOLLOW, 0, 0, &er.base}, {OUTBOX_ACK, 0, 0, &ar.base}};
    for (uint64_t idx = 1; idx <= applied; idx++) {
        size_t len = 0, nres = 99;
        uint8_t *buf = encode(c, 3, f->now, &len);
        struct cell_result res[3];
        assert_int_equal(cell_fsm_apply(f->fsm, idx, buf, len, res, 3, &nres), 0);
        assert_int_equal(nres, 0);
        free(buf);
    }
    assert_digest_equal(digest(f), before);
    assert_int_equal(cell_fsm_outbox_last_seq(f->fsm), 4);
    assert_pending(f, 2, 4);
}

/* Two replicas fed the same entries hold the same outbox (it is in the
 * digest); a replica whose rows differ has another digest. */
static void test_replicas_same_digest(void **state)
{
    struct fx *f = *state;
    struct fx g, h;
    fx_init(&g, REGION);
    fx_init(&h, "us-east"); /* same commands, rows with another home_region */
    struct fx *all[3] = {f, &g, &h};
    for (int k = 0; k < 3; k++) {
        struct fx *x = all[k];
        uint64_t a = create_user(x, "alice"), b = create_user(x, "bob");
        x->now += 7;
        assert_int_equal(edge(x, FOLLOW, a, b), 0);
        assert_int_equal(edge(x, FOLLOW, b, a), 0);
        assert_int_equal(edge(x, BLOCK, a, b), 0);
        uint64_t deleted = 0;
        assert_int_equal(ack(x, 2, &deleted), 0);
        assert_int_equal(deleted, 2);
        assert_int_equal(cell_fsm_outbox_last_seq(x->fsm), 8);
    }
    struct digest df = digest(f);
    assert_digest_equal(df, digest(&g));
    struct digest dh = digest(&h);
    assert_int_equal(dh.n, df.n);
    assert_memory_not_equal(dh.d, df.d, 32);
    /* An ack on one replica only: digests differ until the other applies it. */
    uint64_t deleted = 0;
    assert_int_equal(ack(&g, 8, &deleted), 0);
    assert_int_equal(deleted, 6);
    assert_memory_not_equal(digest(&g).d, df.d, 32);
    assert_int_equal(ack(f, 8, &deleted), 0);
    assert_digest_equal(digest(f), digest(&g));
    fx_fini(&h);
    fx_fini(&g);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_rows_with_changes),    T(test_no_row_without_change), T(test_rows_hold_no_pii),
        T(test_seq_increasing),       T(test_read_paging),           T(test_ack),
        T(test_ack_skips_no_tombstone), T(test_replay_leaves_outbox), T(test_replicas_same_digest),
        T(test_lone_writes_none),     T(test_lone_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
