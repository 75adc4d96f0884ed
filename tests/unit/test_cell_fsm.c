/*
 * Unit tests of the cell state machine (engine/cell_fsm.h) over a real
 * RocksDB in a mkdtemp directory under /tmp (removed afterwards).
 *
 * Each test drives the FSM the way the Raft group does: CellBatch entries
 * encoded with entry_encode() and applied at increasing indexes; reads go
 * through cell_fsm_read(). "Changes nothing" is checked with the state
 * digest (which excludes applied_index) before and after.
 */
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
#include "engine/cell_internal.h"
#include "engine/entry.h"
#include "engine/keys.h"
#include "engine/methods.h"
#include "engine/rsm.h"
#include "geoscale/errors.h"

#define CELL 7
#define UID(seq) (((uint64_t)CELL << 40) | (uint64_t)(seq))
#define T0 INT64_C(1700000000000)

static const uint8_t hmac_key[32] = "geoscale-test-username-key-0001";

struct fx {
    char dir[64];
    char path[96];
    struct cell_fsm *fsm;
    uint64_t index;
    int64_t now;
};

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static struct cell_fsm *open_region(const char *path, uint32_t cell_id, const char *region)
{
    struct cell_fsm_options o = {.db_path = path,
                                 .cell_id = cell_id,
                                 .username_key = hmac_key,
                                 .username_key_len = sizeof hmac_key,
                                 .compression = false,
                                 .region = region};
    struct cell_fsm *fsm = NULL;
    char err[256];
    int rv = cell_fsm_open(&o, &fsm, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
    return fsm;
}

static struct cell_fsm *open_at(const char *path, uint32_t cell_id)
{
    return open_region(path, cell_id, NULL);
}

static void fx_init(struct fx *f)
{
    strcpy(f->dir, "/tmp/gs_test_fsm_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/db", f->dir);
    f->fsm = open_at(f->path, CELL);
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
    fx_init(f);
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
    const ProtobufCMessage *msg; /* packed as the body, or NULL for raw */
    const uint8_t *raw;
    size_t raw_len;
};

/* Encode a batch; the caller frees the buffer. */
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
        if (c[i].msg != NULL) {
            size_t sz = protobuf_c_message_get_packed_size(c[i].msg);
            bodies[i] = malloc(sz + 1);
            protobuf_c_message_pack(c[i].msg, bodies[i]);
            cmds[i].body.data = bodies[i];
            cmds[i].body.len = sz;
        } else {
            cmds[i].body.data = (uint8_t *)c[i].raw;
            cmds[i].body.len = c[i].raw_len;
        }
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

/* Apply n commands as the next entry; results[] (n entries) receive the
 * outcomes, or are freed when results is NULL. */
static void apply_at(struct fx *f, uint64_t index, const struct cmd *c, size_t n,
                     struct cell_result *results)
{
    size_t len = 0, nres = 99;
    uint8_t *buf = encode(c, n, f->now, &len);
    struct cell_result *res = calloc(n + 1, sizeof *res);
    assert_int_equal(cell_fsm_apply(f->fsm, index, buf, len, res, n, &nres), 0);
    assert_int_equal(nres, n);
    assert_int_equal(cell_fsm_applied_index(f->fsm), index);
    for (size_t i = 0; i < n; i++) {
        assert_true(res[i].status == 0 ? res[i].body != NULL : res[i].body == NULL);
        if (results != NULL) {
            results[i] = res[i];
        } else {
            free(res[i].body);
        }
    }
    free(res);
    free(buf);
}

static void apply(struct fx *f, const struct cmd *c, size_t n, struct cell_result *results)
{
    apply_at(f, ++f->index, c, n, results);
}

/* One write command; returns its status, *resp the unpacked response. */
static int write1(struct fx *f, uint32_t method, uint64_t client_id, uint64_t client_seq,
                  const ProtobufCMessage *msg, ProtobufCMessage **resp)
{
    struct cmd c = {method, client_id, client_seq, msg, NULL, 0};
    struct cell_result r;
    apply(f, &c, 1, &r);
    if (resp != NULL) {
        *resp = NULL;
        if (r.status == 0) {
            *resp = protobuf_c_message_unpack(method_lookup(method)->response, NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    }
    free(r.body);
    return r.status;
}

static int read1(struct fx *f, uint32_t method, const ProtobufCMessage *msg,
                 ProtobufCMessage **resp)
{
    size_t sz = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(sz + 1);
    protobuf_c_message_pack(msg, buf);
    struct cell_result r;
    int rv = cell_fsm_read(f->fsm, method, buf, sz, &r);
    free(buf);
    assert_int_equal(rv, r.status);
    if (resp != NULL) {
        *resp = NULL;
    }
    if (rv == 0) {
        assert_non_null(r.body);
        if (resp != NULL) {
            *resp = protobuf_c_message_unpack(method_lookup(method)->response, NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    } else {
        assert_null(r.body);
    }
    free(r.body);
    return rv;
}

static uint64_t create_user(struct fx *f, const char *name)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.username = (char *)name;
    int rv = write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &req.base, &resp);
    assert_int_equal(rv, 0);
    uint64_t id = ((Geoscale__CreateUserResponse *)resp)->user_id;
    protobuf_c_message_free_unpacked(resp, NULL);
    return id;
}

static int edge(struct fx *f, uint32_t method, uint64_t actor, uint64_t target, int *changed)
{
    Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.actor_id = actor;
    req.target_id = target;
    int rv = write1(f, method, 0, 0, &req.base, &resp);
    if (changed != NULL) {
        *changed = rv == 0 ? ((Geoscale__EdgeResponse *)resp)->changed : -1;
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

#define FOLLOW GEOSCALE__METHOD__METHOD_FOLLOW
#define UNFOLLOW GEOSCALE__METHOD__METHOD_UNFOLLOW
#define BLOCK GEOSCALE__METHOD__METHOD_BLOCK
#define UNBLOCK GEOSCALE__METHOD__METHOD_UNBLOCK

static Geoscale__GetUserResponse *get_user(struct fx *f, uint64_t id, uint64_t viewer, int *status)
{
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.user_id = id;
    req.viewer_id = viewer;
    *status = read1(f, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, &resp);
    return (Geoscale__GetUserResponse *)resp;
}

static Geoscale__ListEdgesResponse *list(struct fx *f, uint32_t method, uint64_t user,
                                         uint64_t cursor, uint32_t limit, int *status)
{
    Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.user_id = user;
    req.cursor = cursor;
    req.limit = limit;
    *status = read1(f, method, &req.base, &resp);
    return (Geoscale__ListEdgesResponse *)resp;
}

static void counts(struct fx *f, uint64_t id, uint64_t *followers, uint64_t *following)
{
    int st = 0;
    Geoscale__GetUserResponse *r = get_user(f, id, id, &st);
    assert_int_equal(st, 0);
    *followers = r->profile->follower_count;
    *following = r->profile->following_count;
    geoscale__get_user_response__free_unpacked(r, NULL);
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

static bool hidden(const Geoscale__GetUserResponse *r, const char *name)
{
    for (size_t i = 0; i < r->n_hidden_fields; i++) {
        if (strcmp(r->hidden_fields[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- open */

static void test_open_new_and_reopen(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cell_fsm_applied_index(f->fsm), 0);
    uint64_t a = create_user(f, "alice");
    assert_int_equal(cell_fsm_sync(f->fsm), 0);
    struct digest before = digest(f);
    cell_fsm_close(f->fsm);

    f->fsm = open_at(f->path, CELL);
    assert_int_equal(cell_fsm_applied_index(f->fsm), 1);
    assert_digest_equal(digest(f), before);
    int st = 0;
    Geoscale__GetUserResponse *r = get_user(f, a, a, &st);
    assert_int_equal(st, 0);
    assert_string_equal(r->profile->username, "alice");
    geoscale__get_user_response__free_unpacked(r, NULL);
    /* Seq continues after reopen. */
    assert_int_equal(create_user(f, "bob"), UID(2));
    /* Replaying the first entry after reopen is skipped. */
    struct cmd c = {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, NULL, NULL, 0};
    size_t len = 0, nres = 9;
    uint8_t *buf = encode(&c, 1, f->now, &len);
    struct cell_result res[1];
    assert_int_equal(cell_fsm_apply(f->fsm, 1, buf, len, res, 1, &nres), 0);
    assert_int_equal(nres, 0);
    free(buf);
}

static void test_open_refuses(void **state)
{
    struct fx *f = *state;
    create_user(f, "alice");
    cell_fsm_close(f->fsm);
    f->fsm = NULL;

    struct cell_fsm_options o = {.db_path = f->path,
                                 .cell_id = CELL + 1,
                                 .username_key = hmac_key,
                                 .username_key_len = sizeof hmac_key};
    struct cell_fsm *fsm = (struct cell_fsm *)1;
    char err[256] = "";
    /* Another cell's database. */
    assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EINVAL);
    assert_null(fsm);
    assert_non_null(strstr(err, "cell"));

    /* Bad options. */
    o.cell_id = CELL;
    o.username_key_len = 8;
    assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "username_key"));
    o.username_key_len = sizeof hmac_key;
    o.cell_id = 1u << 24;
    assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EINVAL);
    o.cell_id = CELL;
    const char *bad_regions[] = {"EU", "us_east", "eu west", "abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < sizeof bad_regions / sizeof bad_regions[0]; i++) {
        o.region = bad_regions[i];
        err[0] = '\0';
        assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EINVAL);
        assert_null(fsm);
        assert_non_null(strstr(err, "region"));
    }
    o.region = NULL;

    /* A newer schema. */
    rocksdb_options_t *ro = rocksdb_options_create();
    char *rerr = NULL;
    const char *cf_names[2] = {"default", "point"}; /* the profiles' family */
    const rocksdb_options_t *cf_opts[2] = {ro, ro};
    rocksdb_column_family_handle_t *cfs[2];
    rocksdb_t *db = rocksdb_open_column_families(ro, f->path, 2, cf_names, cf_opts, cfs, &rerr);
    assert_null(rerr);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    struct key k;
    uint8_t v[8];
    key_system(&k, KEY_SYS_SCHEMA);
    key_put_u64(v, CELL_SCHEMA_VERSION + 1);
    rocksdb_put(db, wo, (const char *)k.b, k.len, (const char *)v, 8, &rerr);
    assert_null(rerr);
    rocksdb_column_family_handle_destroy(cfs[0]);
    rocksdb_column_family_handle_destroy(cfs[1]);
    rocksdb_close(db);
    o.cell_id = CELL;
    assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "schema"));

    /* A non-empty database without a schema key. */
    char other[128];
    snprintf(other, sizeof other, "%s/other", f->dir);
    rocksdb_options_set_create_if_missing(ro, 1);
    db = rocksdb_open(ro, other, &rerr);
    assert_null(rerr);
    rocksdb_put(db, wo, "x", 1, "y", 1, &rerr);
    rocksdb_close(db);
    o.db_path = other;
    assert_int_equal(cell_fsm_open(&o, &fsm, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "schema"));
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(ro);
    /* f->fsm stays NULL: the DB now has schema 2 (teardown accepts NULL). */
}

/* ---------------------------------------------------------------- users */

static void test_create_user(void **state)
{
    struct fx *f = *state;
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    req.username = "alice_01.x";
    req.display_name = "Alice";
    req.email = "alice@example.org";
    req.phone = "+15550100";
    req.birth_date = "2000-02-29";
    req.bio = "hello";
    req.avatar_url = "https://a/b.png";
    req.plan = "pro";
    f->now = T0 + 5;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &req.base, &m), 0);
    Geoscale__CreateUserResponse *r = (Geoscale__CreateUserResponse *)m;
    assert_int_equal(r->user_id, UID(1));
    assert_non_null(r->profile);
    assert_int_equal(r->profile->user_id, UID(1));
    assert_string_equal(r->profile->username, "alice_01.x");
    assert_string_equal(r->profile->email, "alice@example.org");
    assert_string_equal(r->profile->birth_date, "2000-02-29");
    assert_string_equal(r->profile->plan, "pro");
    assert_int_equal(r->profile->status, GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE);
    assert_int_equal(r->profile->version, 1);
    assert_true(r->profile->created_at_ms == T0 + 5);
    assert_int_equal(r->profile->follower_count, 0);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Default settings. */
    Geoscale__GetSettingsRequest gs = GEOSCALE__GET_SETTINGS_REQUEST__INIT;
    gs.user_id = UID(1);
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &gs.base, &m), 0);
    Geoscale__Settings *s = ((Geoscale__GetSettingsResponse *)m)->settings;
    assert_int_equal(s->profile_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    assert_int_equal(s->display_name_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    assert_int_equal(s->bio_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    assert_int_equal(s->avatar_url_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    assert_int_equal(s->email_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE);
    assert_int_equal(s->phone_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE);
    assert_int_equal(s->birth_date_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Failures change nothing (and do not consume a user seq). */
    struct digest before = digest(f);
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct {
        const char *username;
        char **field;
        const char *value;
        int want;
    } cases[] = {
        {"alice_01.x", NULL, NULL, GS_EEXIST},
        {"", NULL, NULL, GS_EINVAL},
        {"Alice", NULL, NULL, GS_EINVAL},
        {"al ice", NULL, NULL, GS_EINVAL},
        {long_name, NULL, NULL, GS_ETOOBIG},
        {"u1", &req.display_name, big + sizeof big - 1 - 129, GS_ETOOBIG},
        {"u1", &req.email, big + sizeof big - 1 - 255, GS_ETOOBIG},
        {"u1", &req.phone, big + sizeof big - 1 - 33, GS_ETOOBIG},
        {"u1", &req.bio, big, GS_ETOOBIG},
        {"u1", &req.avatar_url, big + sizeof big - 1 - 1025, GS_ETOOBIG},
        {"u1", &req.plan, big + sizeof big - 1 - 33, GS_ETOOBIG},
        {"u1", &req.birth_date, "1999-02-29", GS_EINVAL},
        {"u1", &req.birth_date, "2001-13-01", GS_EINVAL},
        {"u1", &req.birth_date, "20010101", GS_EINVAL},
        {"u1", &req.birth_date, "2001-04-31", GS_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Geoscale__CreateUserRequest c = req;
        c.username = (char *)cases[i].username;
        if (cases[i].field != NULL) {
            char **dst = (char **)((char *)&c + ((char *)cases[i].field - (char *)&req));
            *dst = (char *)cases[i].value;
        }
        int rv = write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &c.base, NULL);
        if (rv != cases[i].want) {
            fail_msg("case %zu: got %s want %s", i, gs_error_name(rv),
                     gs_error_name(cases[i].want));
        }
    }
    assert_digest_equal(digest(f), before);
    /* At the limits it is accepted. */
    req.username = long_name + 1; /* 64 bytes */
    req.bio = big + sizeof big - 1 - 4096;
    req.email = big + sizeof big - 1 - 254;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &req.base, NULL), 0);
    assert_int_equal(create_user(f, "carol"), UID(3));
}

static void test_get_user(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice");
    int st = 0;
    ProtobufCMessage *m = NULL;
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    req.username = "alice";
    req.viewer_id = a;
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, &m), 0);
    assert_int_equal(((Geoscale__GetUserResponse *)m)->profile->user_id, a);
    assert_int_equal(((Geoscale__GetUserResponse *)m)->n_hidden_fields, 0);
    protobuf_c_message_free_unpacked(m, NULL);

    req.username = "nobody";
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, NULL), GS_ENOTFOUND);
    req.username = "";
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, NULL), GS_EINVAL);
    assert_null(get_user(f, UID(99), 0, &st));
    assert_int_equal(st, GS_ENOTFOUND);

    /* Reads inside the log are answered, too (and see the same entry). */
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "bob";
    Geoscale__GetUserRequest gr = GEOSCALE__GET_USER_REQUEST__INIT;
    gr.username = "bob";
    struct cmd c[2] = {{GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &cr.base, NULL, 0},
                       {GEOSCALE__METHOD__METHOD_GET_USER, 0, 0, &gr.base, NULL, 0}};
    struct cell_result r[2];
    apply(f, c, 2, r);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, 0);
    Geoscale__GetUserResponse *g = geoscale__get_user_response__unpack(NULL, r[1].len, r[1].body);
    assert_int_equal(g->profile->user_id, UID(2));
    geoscale__get_user_response__free_unpacked(g, NULL);
    free(r[0].body);
    free(r[1].body);
}

static void test_update_user(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice");
    Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_EMAIL,
                                       GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS};
    ProtobufCMessage *m = NULL;
    req.user_id = a;
    req.expected_version = 1;
    req.fields = fields;
    req.n_fields = 2;
    req.email = "new@example.org";
    req.status = GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED;
    req.display_name = "not listed";
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, &m), 0);
    Geoscale__Profile *p = ((Geoscale__UpdateUserResponse *)m)->profile;
    assert_int_equal(p->version, 2);
    assert_string_equal(p->email, "new@example.org");
    assert_string_equal(p->display_name, ""); /* not in `fields`: unchanged */
    assert_int_equal(p->status, GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Stale expected_version: CONFLICT, nothing changed. */
    struct digest before = digest(f);
    req.email = "other@example.org";
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, NULL),
                     GS_ECONFLICT);
    assert_digest_equal(digest(f), before);
    int st = 0;
    Geoscale__GetUserResponse *g = get_user(f, a, a, &st);
    assert_string_equal(g->profile->email, "new@example.org");
    assert_int_equal(g->profile->version, 2);
    geoscale__get_user_response__free_unpacked(g, NULL);

    /* Other failures. */
    req.expected_version = 0;
    req.user_id = UID(50);
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, NULL),
                     GS_ENOTFOUND);
    req.user_id = a;
    char big[300];
    memset(big, 'e', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    req.email = big;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, NULL),
                     GS_ETOOBIG);
    req.email = "ok@example.org";
    req.status = GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_UNSPECIFIED;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, NULL),
                     GS_EINVAL);
    req.n_fields = 0;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, NULL),
                     GS_EINVAL);
    assert_digest_equal(digest(f), before);

    /* Unconditional update: version 3. */
    req.n_fields = 1;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &req.base, &m), 0);
    assert_int_equal(((Geoscale__UpdateUserResponse *)m)->profile->version, 3);
    assert_string_equal(((Geoscale__UpdateUserResponse *)m)->profile->email, "ok@example.org");
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------- graph */

static void test_follow_unfollow(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    uint64_t fl = 0, fg = 0;
    int changed = 0;
    assert_int_equal(edge(f, FOLLOW, a, a, NULL), GS_EINVAL);
    assert_int_equal(edge(f, FOLLOW, a, UID(77), NULL), GS_ENOTFOUND);
    assert_int_equal(edge(f, FOLLOW, UID(77), a, NULL), GS_ENOTFOUND);
    assert_int_equal(edge(f, FOLLOW, 0, a, NULL), GS_EINVAL);

    assert_int_equal(edge(f, FOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    struct digest once = digest(f);
    assert_int_equal(edge(f, FOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_digest_equal(digest(f), once); /* follow twice = one edge */
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 1);
    assert_int_equal(fg, 0);
    counts(f, a, &fl, &fg);
    assert_int_equal(fl, 0);
    assert_int_equal(fg, 1);
    int st = 0;
    Geoscale__ListEdgesResponse *l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, b, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 1);
    assert_int_equal(l->user_ids[0], a);
    assert_int_equal(l->total, 1);
    geoscale__list_edges_response__free_unpacked(l, NULL);
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWING, a, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 1);
    assert_int_equal(l->user_ids[0], b);
    geoscale__list_edges_response__free_unpacked(l, NULL);

    assert_int_equal(edge(f, UNFOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(edge(f, UNFOLLOW, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(edge(f, UNFOLLOW, a, UID(77), NULL), GS_ENOTFOUND);
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 0);
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, b, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 0);
    assert_int_equal(l->total, 0);
    geoscale__list_edges_response__free_unpacked(l, NULL);
    assert_null(list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, UID(77), 0, 0, &st));
    assert_int_equal(st, GS_ENOTFOUND);
}

static void test_block(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob"), c = create_user(f, "carol");
    uint64_t fl = 0, fg = 0;
    int changed = 0, st = 0;
    assert_int_equal(edge(f, FOLLOW, a, b, NULL), 0);
    assert_int_equal(edge(f, FOLLOW, b, a, NULL), 0);
    assert_int_equal(edge(f, FOLLOW, c, a, NULL), 0);

    assert_int_equal(edge(f, BLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    /* Both follow edges are gone, with their counters. */
    counts(f, a, &fl, &fg);
    assert_int_equal(fl, 1); /* carol still follows alice */
    assert_int_equal(fg, 0);
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 0);
    assert_int_equal(fg, 0);
    Geoscale__ListEdgesResponse *l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, a, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 1);
    assert_int_equal(l->user_ids[0], c);
    geoscale__list_edges_response__free_unpacked(l, NULL);
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWING, b, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 0);
    geoscale__list_edges_response__free_unpacked(l, NULL);

    /* New follows are refused both ways; nothing changes. */
    struct digest before = digest(f);
    assert_int_equal(edge(f, FOLLOW, a, b, NULL), GS_EBLOCKED);
    assert_int_equal(edge(f, FOLLOW, b, a, NULL), GS_EBLOCKED);
    /* Block is idempotent. */
    assert_int_equal(edge(f, BLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_digest_equal(digest(f), before);
    assert_int_equal(edge(f, BLOCK, a, a, NULL), GS_EINVAL);
    assert_int_equal(edge(f, BLOCK, a, UID(77), NULL), GS_ENOTFOUND);

    /* Unblock: follows work again. */
    assert_int_equal(edge(f, UNBLOCK, b, a, &changed), 0); /* b never blocked a */
    assert_int_equal(changed, 0);
    assert_int_equal(edge(f, FOLLOW, b, a, NULL), GS_EBLOCKED);
    assert_int_equal(edge(f, UNBLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(edge(f, UNBLOCK, a, b, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(edge(f, FOLLOW, b, a, &changed), 0);
    assert_int_equal(changed, 1);
    counts(f, a, &fl, &fg);
    assert_int_equal(fl, 2);
}

static void test_list_pagination(void **state)
{
    struct fx *f = *state;
    const size_t n = 1050;
    Geoscale__CreateUserRequest *cr = calloc(n + 1, sizeof *cr);
    Geoscale__EdgeRequest *er = calloc(n, sizeof *er);
    struct cmd *c = calloc(n + 1, sizeof *c);
    char(*names)[16] = calloc(n + 1, sizeof *names);
    for (size_t i = 0; i <= n; i++) {
        geoscale__create_user_request__init(&cr[i]);
        snprintf(names[i], sizeof names[i], "u%zu", i);
        cr[i].username = names[i];
        c[i] = (struct cmd){GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &cr[i].base, NULL, 0};
    }
    apply(f, c, n + 1, NULL); /* users UID(1) .. UID(n + 1) */
    uint64_t star = UID(1);
    /* Followers in descending id order, to show the listing sorts. */
    for (size_t i = 0; i < n; i++) {
        geoscale__edge_request__init(&er[i]);
        er[i].actor_id = UID(n + 1 - i);
        er[i].target_id = star;
        c[i] = (struct cmd){FOLLOW, 0, 0, &er[i].base, NULL, 0};
    }
    apply(f, c, n, NULL);

    int st = 0;
    /* limit 0 -> 100 */
    Geoscale__ListEdgesResponse *l =
        list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, star, 0, 0, &st);
    assert_int_equal(l->n_user_ids, 100);
    assert_int_equal(l->total, n);
    assert_int_equal(l->user_ids[0], UID(2));
    assert_int_equal(l->next_cursor, UID(101));
    geoscale__list_edges_response__free_unpacked(l, NULL);
    /* limit above 1000 -> 1000 */
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, star, 0, 5000, &st);
    assert_int_equal(l->n_user_ids, 1000);
    assert_int_equal(l->next_cursor, l->user_ids[999]);
    geoscale__list_edges_response__free_unpacked(l, NULL);

    /* Pages of 250 cover every follower once, ascending, then cursor 0. */
    uint64_t cursor = 0, last = 0;
    size_t seen = 0, pages = 0;
    do {
        l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, star, cursor, 250, &st);
        assert_int_equal(st, 0);
        assert_true(l->n_user_ids <= 250);
        for (size_t i = 0; i < l->n_user_ids; i++) {
            assert_true(l->user_ids[i] > last);
            last = l->user_ids[i];
            seen++;
        }
        cursor = l->next_cursor;
        if (cursor != 0) {
            assert_int_equal(cursor, last);
            assert_int_equal(l->n_user_ids, 250);
        }
        pages++;
        geoscale__list_edges_response__free_unpacked(l, NULL);
    } while (cursor != 0);
    assert_int_equal(seen, n);
    assert_int_equal(pages, 5);
    assert_int_equal(last, UID(n + 1));
    /* An exact fit leaves no cursor. */
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, star, UID(n + 1 - 10), 10, &st);
    assert_int_equal(l->n_user_ids, 10);
    assert_int_equal(l->next_cursor, 0);
    geoscale__list_edges_response__free_unpacked(l, NULL);
    /* Following of one follower: exactly the star. */
    l = list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWING, UID(500), 0, 0, &st);
    assert_int_equal(l->n_user_ids, 1);
    assert_int_equal(l->user_ids[0], star);
    assert_int_equal(l->total, 1);
    geoscale__list_edges_response__free_unpacked(l, NULL);
    free(names);
    free(c);
    free(er);
    free(cr);
}

/* ---------------------------------------------------------------- privacy */

static void set_settings(struct fx *f, uint64_t user, Geoscale__Settings *s,
                         Geoscale__Settings **out)
{
    Geoscale__SetSettingsRequest req = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    req.user_id = user;
    req.settings = s;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_SET_SETTINGS, 0, 0, &req.base, &m), 0);
    if (out != NULL) {
        *out = ((Geoscale__SetSettingsResponse *)m)->settings;
        ((Geoscale__SetSettingsResponse *)m)->settings = NULL;
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_settings(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice");
    Geoscale__Settings s = GEOSCALE__SETTINGS__INIT, *out = NULL;
    s.email_visibility = GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS;
    set_settings(f, a, &s, &out);
    assert_int_equal(out->email_visibility, GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS);
    /* UNSPECIFIED fields kept their values. */
    assert_int_equal(out->profile_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    assert_int_equal(out->phone_visibility, GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE);
    geoscale__settings__free_unpacked(out, NULL);

    ProtobufCMessage *m = NULL;
    Geoscale__GetSettingsRequest g = GEOSCALE__GET_SETTINGS_REQUEST__INIT;
    g.user_id = a;
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &g.base, &m), 0);
    assert_int_equal(((Geoscale__GetSettingsResponse *)m)->settings->email_visibility,
                     GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS);
    assert_int_equal(((Geoscale__GetSettingsResponse *)m)->settings->bio_visibility,
                     GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC);
    protobuf_c_message_free_unpacked(m, NULL);
    g.user_id = UID(77);
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &g.base, NULL), GS_ENOTFOUND);

    struct digest before = digest(f);
    Geoscale__SetSettingsRequest req = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    req.user_id = a;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_SET_SETTINGS, 0, 0, &req.base, NULL),
                     GS_EINVAL); /* settings missing */
    s.bio_visibility = 9;
    req.settings = &s;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_SET_SETTINGS, 0, 0, &req.base, NULL),
                     GS_EINVAL);
    s.bio_visibility = 0;
    req.user_id = UID(77);
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_SET_SETTINGS, 0, 0, &req.base, NULL),
                     GS_ENOTFOUND);
    assert_digest_equal(digest(f), before);
}

static void test_privacy(void **state)
{
    struct fx *f = *state;
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "owner";
    cr.display_name = "Owner Name";
    cr.email = "owner@example.org";
    cr.phone = "+1555";
    cr.birth_date = "1990-01-01";
    cr.bio = "bio text";
    cr.avatar_url = "https://x/y";
    cr.plan = "free";
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &cr.base, NULL), 0);
    uint64_t o = UID(1);
    uint64_t fol = create_user(f, "follower"), str = create_user(f, "stranger"),
             blk = create_user(f, "blocked");
    assert_int_equal(edge(f, FOLLOW, fol, o, NULL), 0);
    assert_int_equal(edge(f, FOLLOW, blk, o, NULL), 0);
    assert_int_equal(edge(f, BLOCK, o, blk, NULL), 0);
    int st = 0;
    Geoscale__GetUserResponse *r;

    /* Owner sees everything. */
    r = get_user(f, o, o, &st);
    assert_int_equal(r->n_hidden_fields, 0);
    assert_string_equal(r->profile->email, "owner@example.org");
    assert_string_equal(r->profile->birth_date, "1990-01-01");
    assert_int_equal(r->profile->follower_count, 1);
    geoscale__get_user_response__free_unpacked(r, NULL);

    /* Defaults: email, phone, birth_date private; the rest public. */
    for (int v = 0; v < 2; v++) {
        r = get_user(f, o, v == 0 ? str : 0, &st);
        assert_int_equal(st, 0);
        assert_string_equal(r->profile->display_name, "Owner Name");
        assert_string_equal(r->profile->bio, "bio text");
        assert_string_equal(r->profile->plan, "free");
        assert_string_equal(r->profile->email, "");
        assert_string_equal(r->profile->phone, "");
        assert_string_equal(r->profile->birth_date, "");
        assert_int_equal(r->n_hidden_fields, 3);
        assert_true(hidden(r, "email") && hidden(r, "phone") && hidden(r, "birth_date"));
        geoscale__get_user_response__free_unpacked(r, NULL);
    }

    /* Blocked viewer: NOT_FOUND. */
    assert_null(get_user(f, o, blk, &st));
    assert_int_equal(st, GS_ENOTFOUND);

    /* Email to followers: the follower sees it, the stranger does not. */
    Geoscale__Settings s = GEOSCALE__SETTINGS__INIT;
    s.email_visibility = GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS;
    s.bio_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    set_settings(f, o, &s, NULL);
    r = get_user(f, o, fol, &st);
    assert_string_equal(r->profile->email, "owner@example.org");
    assert_string_equal(r->profile->bio, "");
    assert_false(hidden(r, "email"));
    assert_true(hidden(r, "bio"));
    geoscale__get_user_response__free_unpacked(r, NULL);
    r = get_user(f, o, str, &st);
    assert_string_equal(r->profile->email, "");
    assert_true(hidden(r, "email"));
    geoscale__get_user_response__free_unpacked(r, NULL);

    /* Profile to followers: the stranger sees only id, username, status,
     * counts; the follower sees the profile. */
    Geoscale__Settings s2 = GEOSCALE__SETTINGS__INIT;
    s2.profile_visibility = GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS;
    set_settings(f, o, &s2, NULL);
    r = get_user(f, o, str, &st);
    assert_int_equal(r->profile->user_id, o);
    assert_string_equal(r->profile->username, "owner");
    assert_int_equal(r->profile->status, GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE);
    assert_int_equal(r->profile->follower_count, 1);
    assert_string_equal(r->profile->display_name, "");
    assert_string_equal(r->profile->avatar_url, "");
    assert_string_equal(r->profile->plan, "");
    assert_int_equal(r->profile->version, 0);
    assert_true(r->profile->created_at_ms == 0);
    assert_true(hidden(r, "display_name") && hidden(r, "avatar_url") && hidden(r, "email"));
    geoscale__get_user_response__free_unpacked(r, NULL);
    r = get_user(f, o, fol, &st);
    assert_string_equal(r->profile->display_name, "Owner Name");
    assert_string_equal(r->profile->email, "owner@example.org");
    assert_int_equal(r->profile->version, 1);
    geoscale__get_user_response__free_unpacked(r, NULL);

    /* Private profile: even the follower sees only the handle. */
    s2.profile_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    set_settings(f, o, &s2, NULL);
    r = get_user(f, o, fol, &st);
    assert_string_equal(r->profile->display_name, "");
    assert_string_equal(r->profile->email, "");
    assert_string_equal(r->profile->username, "owner");
    assert_int_equal(r->n_hidden_fields, 9);
    geoscale__get_user_response__free_unpacked(r, NULL);
    r = get_user(f, o, o, &st);
    assert_int_equal(r->n_hidden_fields, 0);
    assert_string_equal(r->profile->phone, "+1555");
    geoscale__get_user_response__free_unpacked(r, NULL);
}

/* ---------------------------------------------------------------- idempotency */

static void test_idempotent_retry(void **state)
{
    struct fx *f = *state;
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "alice";
    struct cmd c = {GEOSCALE__METHOD__METHOD_CREATE_USER, 42, 1, &cr.base, NULL, 0};
    struct cell_result r1, r2;
    apply(f, &c, 1, &r1);
    assert_int_equal(r1.status, 0);
    struct digest after_first = digest(f);
    /* Retry in a later entry: the same answer, applied once. */
    f->now += 1000;
    apply(f, &c, 1, &r2);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r2.len, r1.len);
    assert_memory_equal(r2.body, r1.body, r1.len);
    assert_digest_equal(digest(f), after_first);
    free(r1.body);
    free(r2.body);
    assert_int_equal(create_user(f, "bob"), UID(2)); /* seq 2: alice applied once */

    /* A different seq of the same client is a new command. */
    c.client_seq = 2;
    apply(f, &c, 1, &r1);
    assert_int_equal(r1.status, GS_EEXIST);

    /* Failures are remembered too: a blocked follow stays BLOCKED on retry. */
    uint64_t a = UID(1), b = UID(2);
    assert_int_equal(edge(f, BLOCK, b, a, NULL), 0);
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = a;
    er.target_id = b;
    assert_int_equal(write1(f, FOLLOW, 42, 3, &er.base, NULL), GS_EBLOCKED);
    assert_int_equal(edge(f, UNBLOCK, b, a, NULL), 0);
    assert_int_equal(write1(f, FOLLOW, 42, 3, &er.base, NULL), GS_EBLOCKED);
    uint64_t fl = 0, fg = 0;
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 0);

    /* Twice in the same entry: the second sees the first's stored result. */
    struct cmd two[2] = {{FOLLOW, 42, 4, &er.base, NULL, 0}, {FOLLOW, 42, 4, &er.base, NULL, 0}};
    struct cell_result rr[2];
    apply(f, two, 2, rr);
    assert_int_equal(rr[0].status, 0);
    assert_int_equal(rr[1].status, 0);
    Geoscale__EdgeResponse *e0 = geoscale__edge_response__unpack(NULL, rr[0].len, rr[0].body);
    Geoscale__EdgeResponse *e1 = geoscale__edge_response__unpack(NULL, rr[1].len, rr[1].body);
    assert_true(e0->changed);
    assert_true(e1->changed); /* the stored answer, not "already following" */
    geoscale__edge_response__free_unpacked(e0, NULL);
    geoscale__edge_response__free_unpacked(e1, NULL);
    free(rr[0].body);
    free(rr[1].body);
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 1);
}

/* An UpdateUser is remembered without the strings its request set; a retry
 * of the same request gets the first answer byte for byte, even after the
 * profile moved on, and a seq reused for another request is refused. */
static void test_update_retry_restored(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice");
    char bio[1024];
    memset(bio, 'b', sizeof bio - 1);
    bio[sizeof bio - 1] = '\0';
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO,
                                       GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_DISPLAY_NAME,
                                       GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS};
    Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    req.user_id = a;
    req.fields = fields;
    req.n_fields = 3;
    req.bio = bio;
    req.display_name = "Alice";
    req.status = GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED;
    req.plan = "not listed";
    struct cmd c = {GEOSCALE__METHOD__METHOD_UPDATE_USER, 42, 1, &req.base, NULL, 0};
    struct cell_result r1, r2;
    apply(f, &c, 1, &r1);
    assert_int_equal(r1.status, 0);
    assert_true(r1.len > sizeof bio);

    /* The stored outcome is partial, without the bio. */
    bool found = false;
    int status = -1;
    uint8_t *stored = NULL;
    size_t stored_len = 0;
    struct rsm_result_form form = {false, 0};
    assert_int_equal(rsm_result_get(cell_fsm_rsm(f->fsm), 42, 1, &found, &status, &stored, &stored_len,
                                    &form),
                     0);
    assert_true(found);
    assert_true(form.partial);
    assert_true(stored_len < 100);
    free(stored);

    /* Another writer changes every field; then the retry arrives. */
    Geoscale__ProfileField all[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO,
                                    GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_DISPLAY_NAME,
                                    GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN};
    Geoscale__UpdateUserRequest other = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    other.user_id = a;
    other.fields = all;
    other.n_fields = 3;
    other.bio = "short";
    other.display_name = "Mallory";
    other.plan = "pro";
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 43, 1, &other.base, NULL), 0);
    struct digest before_retry = digest(f);
    f->now += 1000;
    apply(f, &c, 1, &r2);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r2.len, r1.len);
    assert_memory_equal(r2.body, r1.body, r1.len);
    assert_digest_equal(digest(f), before_retry);
    Geoscale__UpdateUserResponse *resp = geoscale__update_user_response__unpack(NULL, r2.len,
                                                                                r2.body);
    assert_non_null(resp);
    assert_int_equal(resp->profile->version, 2);
    assert_string_equal(resp->profile->bio, bio);
    assert_string_equal(resp->profile->display_name, "Alice");
    assert_string_equal(resp->profile->plan, "");
    geoscale__update_user_response__free_unpacked(resp, NULL);
    free(r1.body);
    free(r2.body);

    /* The same client and seq with another request: refused, unchanged. */
    req.bio = "changed";
    apply(f, &c, 1, &r2);
    assert_int_equal(r2.status, GS_EINVAL);
    assert_digest_equal(digest(f), before_retry);
}

static void test_result_expiry(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = a;
    er.target_id = b;
    struct digest base = digest(f);
    /* 300 remembered commands (unfollows that change nothing). */
    struct cmd c[300];
    for (size_t i = 0; i < 300; i++) {
        c[i] = (struct cmd){UNFOLLOW, 9, i + 1, &er.base, NULL, 0};
    }
    apply(f, c, 300, NULL);
    struct digest d = digest(f);
    assert_int_equal(d.n, base.n + 301); /* 'R' per command, one 'r' for the entry */

    /* Within the hour: nothing expires. */
    f->now += 3600 * 1000 - 1;
    assert_int_equal(write1(f, UNFOLLOW, 0, 0, &er.base, NULL), 0);
    assert_int_equal(digest(f).n, base.n + 301);
    /* Past the hour: at most 256 per entry, the entry's index row kept with
     * the other 44; from the first, one more row says where the next walk
     * starts ('S' results_expired). */
    f->now += 2;
    assert_int_equal(write1(f, UNFOLLOW, 0, 0, &er.base, NULL), 0);
    assert_int_equal(digest(f).n, base.n + 301 - 256 + 1);
    assert_int_equal(write1(f, UNFOLLOW, 0, 0, &er.base, NULL), 0);
    assert_int_equal(digest(f).n, base.n + 1);

    /* An expired key applies again. */
    assert_int_equal(write1(f, FOLLOW, 9, 1, &er.base, NULL), 0);
    uint64_t fl = 0, fg = 0;
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 1);
}

/* ---------------------------------------------------------------- durability */

static void test_replay_skipped(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice");
    uint64_t b = create_user(f, "bob");
    assert_int_equal(edge(f, FOLLOW, a, b, NULL), 0);
    struct digest before = digest(f);
    uint64_t applied = cell_fsm_applied_index(f->fsm);

    /* Re-apply old indexes (with different content): nothing happens. */
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = a;
    er.target_id = b;
    struct cmd c = {UNFOLLOW, 0, 0, &er.base, NULL, 0};
    for (uint64_t idx = 1; idx <= applied; idx++) {
        size_t len = 0, nres = 99;
        uint8_t *buf = encode(&c, 1, f->now, &len);
        struct cell_result res[1] = {{0, NULL, 0}};
        assert_int_equal(cell_fsm_apply(f->fsm, idx, buf, len, res, 1, &nres), 0);
        assert_int_equal(nres, 0);
        assert_null(res[0].body);
        free(buf);
        assert_int_equal(cell_fsm_apply_empty(f->fsm, idx), 0);
    }
    assert_int_equal(cell_fsm_applied_index(f->fsm), applied);
    assert_digest_equal(digest(f), before);

    /* apply_empty advances the index and changes no data. */
    assert_int_equal(cell_fsm_apply_empty(f->fsm, applied + 5), 0);
    assert_int_equal(cell_fsm_applied_index(f->fsm), applied + 5);
    assert_digest_equal(digest(f), before);
    cell_fsm_close(f->fsm);
    f->fsm = open_at(f->path, CELL);
    assert_int_equal(cell_fsm_applied_index(f->fsm), applied + 5);
    f->index = applied + 5;
    uint64_t fl = 0, fg = 0;
    counts(f, b, &fl, &fg);
    assert_int_equal(fl, 1);
}

static void test_corrupt_entry(void **state)
{
    struct fx *f = *state;
    create_user(f, "alice");
    struct digest before = digest(f);
    uint8_t junk[24];
    memset(junk, 0xee, sizeof junk);
    struct cell_result res[2];
    size_t nres = 99;
    assert_int_equal(cell_fsm_apply(f->fsm, 2, junk, sizeof junk, res, 2, &nres), 0);
    assert_int_equal(nres, 0);
    assert_int_equal(cell_fsm_applied_index(f->fsm), 2);
    assert_int_equal(cell_fsm_apply(f->fsm, 3, junk, 5, res, 2, &nres), 0);
    assert_int_equal(cell_fsm_applied_index(f->fsm), 3);
    assert_digest_equal(digest(f), before);
    cell_fsm_close(f->fsm);
    f->fsm = open_at(f->path, CELL);
    assert_int_equal(cell_fsm_applied_index(f->fsm), 3);
    f->index = 3;

    /* Bad commands inside a good entry: their own results, others apply. */
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "bob";
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    struct cmd c[3] = {{99, 0, 0, NULL, NULL, 0},
                       {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, NULL, garbage, sizeof garbage},
                       {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &cr.base, NULL, 0}};
    struct cell_result r[3];
    apply(f, c, 3, r);
    assert_int_equal(r[0].status, GS_EUNIMPL);
    assert_int_equal(r[1].status, GS_EINVAL);
    assert_int_equal(r[2].status, 0);
    free(r[2].body);
}

static void test_same_entries_same_digest(void **state)
{
    struct fx *f = *state;
    struct fx g;
    fx_init(&g);
    Geoscale__CreateUserRequest cr[4];
    const char *names[4] = {"a", "b", "c", "d"};
    struct cmd c[4];
    for (int i = 0; i < 4; i++) {
        geoscale__create_user_request__init(&cr[i]);
        cr[i].username = (char *)names[i];
        c[i] = (struct cmd){
            GEOSCALE__METHOD__METHOD_CREATE_USER, 5, (uint64_t)i + 1, &cr[i].base, NULL, 0};
    }
    Geoscale__EdgeRequest er[3];
    struct cmd e[3];
    for (int i = 0; i < 3; i++) {
        geoscale__edge_request__init(&er[i]);
        er[i].actor_id = UID(i + 2);
        er[i].target_id = UID(1);
        e[i] = (struct cmd){FOLLOW, 6, (uint64_t)i + 1, &er[i].base, NULL, 0};
    }
    struct fx *both[2] = {f, &g};
    for (int k = 0; k < 2; k++) {
        apply(both[k], c, 4, NULL);
        both[k]->now += 10;
        apply(both[k], e, 3, NULL);
    }
    struct digest df = digest(f);
    assert_int_equal(df.n, digest(&g).n);
    assert_digest_equal(df, digest(&g));
    /* Node-local bookkeeping does not count. */
    assert_int_equal(cell_fsm_apply_empty(g.fsm, 10), 0);
    g.index = 10;
    assert_digest_equal(df, digest(&g));
    /* A difference in data does. */
    apply(&g, e, 1, NULL); /* a retry: stored result, no change */
    assert_digest_equal(df, digest(&g));
    assert_int_equal(edge(&g, UNFOLLOW, UID(2), UID(1), NULL), 0);
    assert_memory_not_equal(df.d, digest(&g).d, 32);
    fx_fini(&g);
}

static void test_batch_sees_earlier_commands(void **state)
{
    struct fx *f = *state;
    Geoscale__CreateUserRequest a = GEOSCALE__CREATE_USER_REQUEST__INIT,
                                b = GEOSCALE__CREATE_USER_REQUEST__INIT;
    a.username = "alice";
    b.username = "bob";
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = UID(2);
    er.target_id = UID(1);
    struct cmd c[5] = {{GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &a.base, NULL, 0},
                       {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &b.base, NULL, 0},
                       {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &a.base, NULL, 0},
                       {FOLLOW, 0, 0, &er.base, NULL, 0},
                       {FOLLOW, 0, 0, &er.base, NULL, 0}};
    struct cell_result r[5];
    apply(f, c, 5, r);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(r[2].status, GS_EEXIST);
    assert_int_equal(r[3].status, 0);
    assert_int_equal(r[4].status, 0);
    Geoscale__EdgeResponse *e3 = geoscale__edge_response__unpack(NULL, r[3].len, r[3].body);
    Geoscale__EdgeResponse *e4 = geoscale__edge_response__unpack(NULL, r[4].len, r[4].body);
    assert_true(e3->changed);
    assert_false(e4->changed);
    geoscale__edge_response__free_unpacked(e3, NULL);
    geoscale__edge_response__free_unpacked(e4, NULL);
    for (int i = 0; i < 5; i++) {
        free(r[i].body);
    }
    uint64_t fl = 0, fg = 0;
    counts(f, UID(1), &fl, &fg);
    assert_int_equal(fl, 1);

    /* max_results smaller than the batch: all applied, 1 result returned. */
    Geoscale__CreateUserRequest x = GEOSCALE__CREATE_USER_REQUEST__INIT,
                                y = GEOSCALE__CREATE_USER_REQUEST__INIT;
    x.username = "x";
    y.username = "y";
    struct cmd two[2] = {{GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &x.base, NULL, 0},
                         {GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &y.base, NULL, 0}};
    size_t len = 0, nres = 0;
    uint8_t *buf = encode(two, 2, f->now, &len);
    struct cell_result one[1];
    assert_int_equal(cell_fsm_apply(f->fsm, ++f->index, buf, len, one, 1, &nres), 0);
    assert_int_equal(nres, 1);
    assert_int_equal(one[0].status, 0);
    free(one[0].body);
    free(buf);
    int st = 0;
    Geoscale__GetUserResponse *g = get_user(f, UID(4), 0, &st);
    assert_int_equal(st, 0);
    assert_string_equal(g->profile->username, "y");
    geoscale__get_user_response__free_unpacked(g, NULL);
    assert_int_equal(cell_fsm_sync(f->fsm), 0);
}

/* ---------------------------------------------------------------- cells */

#define OTHER_CELL (CELL + 1)
#define OTHER_UID(seq) (((uint64_t)OTHER_CELL << 40) | (uint64_t)(seq))

static int create_assigned(struct fx *f, const char *name, uint64_t user_id, const char *region,
                           uint64_t *got)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.username = (char *)name;
    req.user_id = user_id;
    req.region = (char *)(region != NULL ? region : "");
    int rv = write1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &req.base, &resp);
    if (rv == 0) {
        Geoscale__CreateUserResponse *r = (Geoscale__CreateUserResponse *)resp;
        assert_int_equal(r->profile->user_id, r->user_id);
        if (got != NULL) {
            *got = r->user_id;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

static void test_assigned_user_id(void **state)
{
    struct fx *f = *state;
    uint64_t got = 0;
    /* The directory's id is used as it is. */
    assert_int_equal(create_assigned(f, "alice", UID(100), NULL, &got), 0);
    assert_int_equal(got, UID(100));
    int st = 0;
    Geoscale__GetUserResponse *g = get_user(f, UID(100), UID(100), &st);
    assert_int_equal(st, 0);
    assert_string_equal(g->profile->username, "alice");
    geoscale__get_user_response__free_unpacked(g, NULL);
    /* The cell's own sequence moves past it: a lone-cell create never
     * collides with an assigned id. */
    assert_int_equal(create_user(f, "bob"), UID(101));
    /* An assigned id below the counter is used and leaves the counter. */
    assert_int_equal(create_assigned(f, "carol", UID(5), NULL, &got), 0);
    assert_int_equal(got, UID(5));
    assert_int_equal(create_user(f, "dave"), UID(102));

    /* Refusals change nothing. */
    struct digest before = digest(f);
    /* Another cell's id. */
    assert_int_equal(create_assigned(f, "erin", OTHER_UID(1), NULL, NULL), GS_EWRONGCELL);
    assert_int_equal(create_assigned(f, "erin", OTHER_UID(100), NULL, NULL), GS_EWRONGCELL);
    /* An id that exists (under another name) or a name that exists. */
    assert_int_equal(create_assigned(f, "erin", UID(100), NULL, NULL), GS_EEXIST);
    assert_int_equal(create_assigned(f, "erin", UID(101), NULL, NULL), GS_EEXIST);
    assert_int_equal(create_assigned(f, "alice", UID(200), NULL, NULL), GS_EEXIST);
    /* Sequence part 0 is no user id. */
    assert_int_equal(create_assigned(f, "erin", UID(0), NULL, NULL), GS_EINVAL);
    assert_digest_equal(digest(f), before);
    assert_null(get_user(f, UID(200), 0, &st));
    assert_int_equal(st, GS_ENOTFOUND);
    /* erin was never created: her name is free. */
    assert_int_equal(create_assigned(f, "erin", UID(200), NULL, &got), 0);
    assert_int_equal(got, UID(200));
}

static void test_create_user_region(void **state)
{
    struct fx *f = *state;
    /* A lone cell (no region) accepts any well-formed region. */
    assert_int_equal(create_assigned(f, "a1", 0, "eu", NULL), 0);
    assert_int_equal(create_assigned(f, "a2", 0, "us-east", NULL), 0);
    struct digest before = digest(f);
    assert_int_equal(create_assigned(f, "a3", 0, "Eu", NULL), GS_EINVAL);
    assert_int_equal(create_assigned(f, "a3", 0, "abcdefghijklmnopqrstuvwxyz0123456", NULL),
                     GS_ETOOBIG);
    assert_digest_equal(digest(f), before);

    /* A cell of region "eu": signups homed elsewhere are not its to store. */
    cell_fsm_close(f->fsm);
    f->fsm = open_region(f->path, CELL, "eu");
    before = digest(f);
    assert_int_equal(create_assigned(f, "b1", 0, "us-east", NULL), GS_EWRONGCELL);
    assert_int_equal(create_assigned(f, "b1", UID(50), "asia", NULL), GS_EWRONGCELL);
    assert_digest_equal(digest(f), before);
    assert_int_equal(create_assigned(f, "b1", 0, "eu", NULL), 0);
    assert_int_equal(create_assigned(f, "b2", 0, "", NULL), 0); /* "": the node's region */

    /* The longest region name is accepted. */
    cell_fsm_close(f->fsm);
    f->fsm = open_region(f->path, CELL, "abcdefghijklmnopqrstuvwxyz012345");
    assert_int_equal(create_assigned(f, "c1", 0, "abcdefghijklmnopqrstuvwxyz012345", NULL), 0);
}

/* Every method naming a user of another cell answers WRONG_CELL, as a read
 * and inside an entry, and changes nothing. */
static void test_ownership(void **state)
{
    struct fx *f = *state;
    uint64_t a = create_user(f, "alice"), b = create_user(f, "bob");
    assert_int_equal(edge(f, FOLLOW, b, a, NULL), 0);
    uint64_t o = OTHER_UID(1);
    struct digest before = digest(f);
    int st = 0;

    /* Reads. */
    assert_null(get_user(f, o, a, &st));
    assert_int_equal(st, GS_EWRONGCELL);
    assert_null(list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, o, 0, 0, &st));
    assert_int_equal(st, GS_EWRONGCELL);
    assert_null(list(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWING, o, 0, 0, &st));
    assert_int_equal(st, GS_EWRONGCELL);
    Geoscale__GetSettingsRequest gs = GEOSCALE__GET_SETTINGS_REQUEST__INIT;
    gs.user_id = o;
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &gs.base, NULL),
                     GS_EWRONGCELL);
    /* A viewer of another cell is fine: the subject is ours. */
    Geoscale__GetUserResponse *g = get_user(f, a, o, &st);
    assert_int_equal(st, 0);
    assert_int_equal(g->profile->user_id, a);
    geoscale__get_user_response__free_unpacked(g, NULL);

    /* Writes. */
    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO};
    ur.user_id = o;
    ur.fields = fields;
    ur.n_fields = 1;
    ur.bio = "x";
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &ur.base, NULL),
                     GS_EWRONGCELL);
    Geoscale__SetSettingsRequest sr = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    Geoscale__Settings s = GEOSCALE__SETTINGS__INIT;
    s.bio_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    sr.user_id = o;
    sr.settings = &s;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_SET_SETTINGS, 0, 0, &sr.base, NULL),
                     GS_EWRONGCELL);
    const uint32_t edges[] = {FOLLOW, UNFOLLOW, BLOCK, UNBLOCK};
    for (size_t i = 0; i < 4; i++) {
        /* Another cell's actor, whatever the target. */
        assert_int_equal(edge(f, edges[i], o, a, NULL), GS_EWRONGCELL);
        assert_int_equal(edge(f, edges[i], o, UID(99), NULL), GS_EWRONGCELL);
    }
    /* Our actor, a target of another cell: served here (test_edges.c); these
     * two change nothing. */
    int changed = 1;
    assert_int_equal(edge(f, UNFOLLOW, a, o, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(edge(f, UNBLOCK, a, o, &changed), 0);
    assert_int_equal(changed, 0);
    /* Reads inside an entry are checked the same way. */
    Geoscale__GetUserRequest gr = GEOSCALE__GET_USER_REQUEST__INIT;
    gr.user_id = o;
    struct cmd c[2] = {{GEOSCALE__METHOD__METHOD_GET_USER, 0, 0, &gr.base, NULL, 0},
                       {GEOSCALE__METHOD__METHOD_GET_SETTINGS, 0, 0, &gs.base, NULL, 0}};
    struct cell_result r[2];
    apply(f, c, 2, r);
    assert_int_equal(r[0].status, GS_EWRONGCELL);
    assert_int_equal(r[1].status, GS_EWRONGCELL);
    assert_digest_equal(digest(f), before);

    /* A remembered WRONG_CELL is answered again on retry. */
    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = o;
    er.target_id = a;
    assert_int_equal(write1(f, FOLLOW, 77, 1, &er.base, NULL), GS_EWRONGCELL);
    assert_int_equal(write1(f, FOLLOW, 77, 1, &er.base, NULL), GS_EWRONGCELL);

    /* The same requests about our own users still work. */
    uint64_t fl = 0, fg = 0;
    counts(f, a, &fl, &fg);
    assert_int_equal(fl, 1);
    ur.user_id = a;
    assert_int_equal(write1(f, GEOSCALE__METHOD__METHOD_UPDATE_USER, 0, 0, &ur.base, NULL), 0);
}

/* ---------------------------------------------------------------- read, validate */

static void test_read_rejects(void **state)
{
    struct fx *f = *state;
    create_user(f, "alice");
    struct cell_result r;
    const uint8_t garbage[] = {0xff, 0xff};
    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "bob";
    /* Writes are not served by read. */
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, NULL), GS_EUNIMPL);
    assert_int_equal(cell_fsm_read(f->fsm, 99, NULL, 0, &r), GS_EUNIMPL);
    assert_int_equal(r.status, GS_EUNIMPL);
    assert_int_equal(cell_fsm_read(f->fsm, GEOSCALE__METHOD__METHOD_CELL_STATUS, NULL, 0, &r),
                     GS_EUNIMPL);
    assert_int_equal(
        cell_fsm_read(f->fsm, GEOSCALE__METHOD__METHOD_GET_USER, garbage, sizeof garbage, &r),
        GS_EINVAL);
    assert_null(r.body);
    /* An empty body is an empty request: user_id or username missing. */
    assert_int_equal(cell_fsm_read(f->fsm, GEOSCALE__METHOD__METHOD_GET_USER, NULL, 0, &r),
                     GS_EINVAL);
    Geoscale__ListEdgesRequest lr = GEOSCALE__LIST_EDGES_REQUEST__INIT;
    assert_int_equal(read1(f, GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS, &lr.base, NULL), GS_EINVAL);
}

static int validate(uint32_t method, const ProtobufCMessage *msg, char *err, size_t len)
{
    size_t sz = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(sz + 1);
    protobuf_c_message_pack(msg, buf);
    int rv = cell_validate_request(method, buf, sz, NULL, err, len);
    free(buf);
    return rv;
}

static void test_validate(void **state)
{
    (void)state;
    char err[256];
    char canary[300];
    memset(canary, 'Q', sizeof canary - 1);
    memcpy(canary, "CANARY", 6);
    canary[sizeof canary - 1] = '\0';

    Geoscale__CreateUserRequest cr = GEOSCALE__CREATE_USER_REQUEST__INIT;
    cr.username = "alice";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err), 0);
    cr.email = canary;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err),
                     GS_ETOOBIG);
    assert_non_null(strstr(err, "email"));
    assert_null(strstr(err, "CANARY"));
    cr.email = "";
    cr.username = "CANARY";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "username"));
    assert_null(strstr(err, "CANARY"));
    cr.username = "alice";
    cr.birth_date = "CANARY";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "birth_date"));
    assert_null(strstr(err, "CANARY"));

    Geoscale__UpdateUserRequest ur = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fl[] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PHONE};
    ur.user_id = 5;
    ur.fields = fl;
    ur.n_fields = 1;
    ur.phone = canary;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_UPDATE_USER, &ur.base, err, sizeof err),
                     GS_ETOOBIG);
    assert_non_null(strstr(err, "phone"));
    assert_null(strstr(err, "CANARY"));
    ur.phone = "123";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_UPDATE_USER, &ur.base, err, sizeof err), 0);
    ur.user_id = 0;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_UPDATE_USER, &ur.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "user_id"));

    Geoscale__EdgeRequest er = GEOSCALE__EDGE_REQUEST__INIT;
    er.actor_id = 1;
    er.target_id = 1;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_FOLLOW, &er.base, err, sizeof err),
                     GS_EINVAL);
    er.target_id = 2;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_BLOCK, &er.base, err, sizeof err), 0);

    Geoscale__GetUserRequest gr = GEOSCALE__GET_USER_REQUEST__INIT;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_GET_USER, &gr.base, err, sizeof err),
                     GS_EINVAL);
    gr.username = "bob";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_GET_USER, &gr.base, err, sizeof err), 0);

    Geoscale__SetSettingsRequest sr = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    Geoscale__Settings s = GEOSCALE__SETTINGS__INIT;
    sr.user_id = 3;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_SET_SETTINGS, &sr.base, err, sizeof err),
                     GS_EINVAL);
    sr.settings = &s;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_SET_SETTINGS, &sr.base, err, sizeof err), 0);
    s.phone_visibility = 7;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_SET_SETTINGS, &sr.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "phone_visibility"));

    /* CreateUser: region syntax (named, never shown), assigned id shape. */
    cr.username = "alice";
    cr.birth_date = "";
    cr.region = "CANARY";
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "region"));
    assert_null(strstr(err, "CANARY"));
    cr.region = "eu";
    cr.user_id = UID(0);
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "user_id"));
    cr.user_id = UID(1);
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_CREATE_USER, &cr.base, err, sizeof err), 0);

    /* OutboxAck is a cell write; up_to_seq is required. */
    Geoscale__OutboxAckRequest ack = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_OUTBOX_ACK, &ack.base, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "up_to_seq"));
    ack.up_to_seq = 1;
    assert_int_equal(validate(GEOSCALE__METHOD__METHOD_OUTBOX_ACK, &ack.base, err, sizeof err), 0);

    /* Unknown and node-local methods; undecodable bodies. */
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    assert_int_equal(cell_validate_request(0, NULL, 0, NULL, err, sizeof err), GS_EUNIMPL);
    assert_int_equal(cell_validate_request(99, NULL, 0, NULL, err, sizeof err), GS_EUNIMPL);
    assert_int_equal(cell_validate_request(GEOSCALE__METHOD__METHOD_STATE_DIGEST, NULL, 0, NULL,
                                           err, sizeof err),
                     GS_EUNIMPL);
    assert_int_equal(cell_validate_request(GEOSCALE__METHOD__METHOD_FOLLOW, garbage, sizeof garbage,
                                           NULL, err, sizeof err),
                     GS_EINVAL);
    assert_non_null(strstr(err, "body"));
    /* errmsg may be omitted. */
    assert_int_equal(cell_validate_request(GEOSCALE__METHOD__METHOD_FOLLOW, garbage, sizeof garbage,
                                           NULL, NULL, 0),
                     GS_EINVAL);
    /* A valid request names its subject, the user routing goes by. */
    Geoscale__EdgeRequest sub_req = GEOSCALE__EDGE_REQUEST__INIT;
    uint8_t eb[64];
    uint64_t subject = 0;
    sub_req.actor_id = ((uint64_t)1 << 40) | 5;
    sub_req.target_id = ((uint64_t)2 << 40) | 6;
    size_t en = geoscale__edge_request__pack(&sub_req, eb);
    assert_int_equal(
        cell_validate_request(GEOSCALE__METHOD__METHOD_FOLLOW, eb, en, &subject, err, sizeof err),
        0);
    assert_int_equal(subject, sub_req.actor_id);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_new_and_reopen),
        T(test_open_refuses),
        T(test_create_user),
        T(test_get_user),
        T(test_update_user),
        T(test_follow_unfollow),
        T(test_block),
        T(test_list_pagination),
        T(test_settings),
        T(test_privacy),
        T(test_idempotent_retry),
        T(test_update_retry_restored),
        T(test_result_expiry),
        T(test_replay_skipped),
        T(test_corrupt_entry),
        T(test_same_entries_same_digest),
        T(test_batch_sees_earlier_commands),
        T(test_assigned_user_id),
        T(test_create_user_region),
        T(test_ownership),
        T(test_read_rejects),
        T(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
