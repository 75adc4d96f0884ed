/*
 * Unit tests of the directory state machine (engine/directory_fsm.h) over a
 * real RocksDB in a mkdtemp directory under /tmp (removed afterwards).
 *
 * Entries are CellBatch entries whose methods are command kinds, encoded with
 * entry_encode() as the Raft group does (DirectoryBatch is wire-compatible:
 * test_entry_codec), and applied at increasing indexes, as the Raft group would; lookups go
 * through directory_fsm_read(). "Changes nothing" is checked with the digest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>
#include <sodium.h>

#include "checkpoint_pull.h"
#include "engine/cell_fsm.h"
#include "engine/checkpoint.h"
#include "engine/directory_fsm.h"
#include "engine/entry.h"
#include "engine/keys.h"
#include "engine/metadata_fsm.h"
#include "geoscale/errors.h"

#define T0 INT64_C(1700000000000)
#define TTL DIRECTORY_RESERVATION_TTL_MS
#define UID(cell, seq) (((uint64_t)(cell) << 40) | (uint64_t)(seq))
#define K(name) GEOSCALE__DIRECTORY_COMMAND_KIND__DIRECTORY_COMMAND_##name
#define CONFIRMED GEOSCALE__RESERVATION_STATE__RESERVATION_STATE_CONFIRMED

struct fx {
    char dir[64];
    char path[96];
    struct directory_fsm *fsm;
    uint64_t index;
    int64_t now;
    int64_t expires; /* the last reservation's expires_at_ms */
};

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static struct directory_fsm *open_at(const char *path, uint32_t shard, uint32_t n_shards)
{
    struct directory_fsm_options o = {
        .db_path = path, .shard_id = shard, .n_shards = n_shards, .compression = false};
    struct directory_fsm *fsm = NULL;
    char err[256];
    int rv = directory_fsm_open(&o, &fsm, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
    return fsm;
}

static void fx_init(struct fx *f, const char *sub)
{
    strcpy(f->dir, "/tmp/gs_test_dir_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, sub);
    f->fsm = open_at(f->path, 0, 1);
    f->index = 0;
    f->now = T0;
}

static void fx_fini(struct fx *f)
{
    directory_fsm_close(f->fsm);
    f->fsm = NULL;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    fx_init(f, "db");
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

static const ProtobufCMessageDescriptor *response_of(uint32_t kind)
{
    switch (kind) {
    case K(REGISTER_CELL):
        return &geoscale__register_cell_response__descriptor;
    case K(RESERVE_USERNAME):
        return &geoscale__reserve_username_response__descriptor;
    case K(CONFIRM_USERNAME):
        return &geoscale__confirm_username_response__descriptor;
    case K(RELEASE_USERNAME):
        return &geoscale__release_username_response__descriptor;
    case K(SET_CELL_ACCEPTING):
        return &geoscale__set_cell_accepting_response__descriptor;
    case K(GET_ROUTE):
        return &geoscale__get_route_response__descriptor;
    case K(LOOKUP_USERNAME):
        return &geoscale__lookup_username_response__descriptor;
    case K(LIST_CELLS):
        return &geoscale__list_cells_response__descriptor;
    default:
        return NULL;
    }
}

struct cmd {
    uint32_t kind;
    uint64_t client_id;
    uint64_t client_seq;
    const ProtobufCMessage *msg; /* packed as the body, or NULL for raw */
    const uint8_t *raw;
    size_t raw_len;
};

static uint8_t *encode(const struct cmd *c, size_t n, int64_t ts, size_t *len)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    Geoscale__CellCommand *cmds = calloc(n + 1, sizeof *cmds);
    Geoscale__CellCommand **ptrs = calloc(n + 1, sizeof *ptrs);
    uint8_t **bodies = calloc(n + 1, sizeof *bodies);
    for (size_t i = 0; i < n; i++) {
        geoscale__cell_command__init(&cmds[i]);
        cmds[i].method = c[i].kind;
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

/* Apply n commands as the next entry; results (n of them) receive the
 * outcomes, or are freed when results is NULL. */
static void apply(struct fx *f, const struct cmd *c, size_t n, struct cell_result *results)
{
    size_t len = 0, nres = 99;
    uint8_t *buf = encode(c, n, f->now, &len);
    struct cell_result *res = calloc(n + 1, sizeof *res);
    f->index++;
    assert_int_equal(directory_fsm_apply(f->fsm, f->index, buf, len, res, n, &nres), 0);
    assert_int_equal(nres, n);
    assert_int_equal(directory_fsm_applied_index(f->fsm), f->index);
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

/* One write command (idempotency key client_id/seq); returns its status and
 * *resp the unpacked response (or NULL). */
static int write1k(struct fx *f, uint32_t kind, uint64_t client_id, uint64_t client_seq,
                   const ProtobufCMessage *msg, ProtobufCMessage **resp)
{
    struct cmd c = {kind, client_id, client_seq, msg, NULL, 0};
    struct cell_result r;
    apply(f, &c, 1, &r);
    if (resp != NULL) {
        *resp = NULL;
        if (r.status == 0) {
            *resp = protobuf_c_message_unpack(response_of(kind), NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    }
    free(r.body);
    return r.status;
}

static int write1(struct fx *f, uint32_t kind, const ProtobufCMessage *msg, ProtobufCMessage **resp)
{
    return write1k(f, kind, 0, 0, msg, resp);
}

static int read1(struct fx *f, uint32_t kind, const ProtobufCMessage *msg, ProtobufCMessage **resp)
{
    size_t sz = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(sz + 1);
    protobuf_c_message_pack(msg, buf);
    struct cell_result r;
    int rv = directory_fsm_read(f->fsm, kind, buf, sz, &r);
    free(buf);
    assert_int_equal(rv, r.status);
    if (resp != NULL) {
        *resp = NULL;
    }
    if (rv == 0) {
        assert_non_null(r.body);
        if (resp != NULL) {
            *resp = protobuf_c_message_unpack(response_of(kind), NULL, r.len, r.body);
            assert_non_null(*resp);
        }
    } else {
        assert_null(r.body);
    }
    free(r.body);
    return rv;
}

/* A stand-in for HMAC(username): distinct seeds, distinct hashes. */
static void hash_of(uint8_t h[32], unsigned seed)
{
    uint8_t in[4] = {(uint8_t)(seed >> 24), (uint8_t)(seed >> 16), (uint8_t)(seed >> 8),
                     (uint8_t)seed};
    crypto_generichash(h, 32, in, sizeof in, NULL, 0);
}

static int register_cell(struct fx *f, uint32_t cell_id, const char *region, size_t n_members,
                         Geoscale__RegisterCellResponse **resp)
{
    Geoscale__RegisterCellRequest req = GEOSCALE__REGISTER_CELL_REQUEST__INIT;
    Geoscale__CellMember m[8];
    Geoscale__CellMember *mp[8];
    char raft[8][32], client[8][32];
    req.cell_id = cell_id;
    req.region = (char *)region;
    for (size_t i = 0; i < n_members && i < 8; i++) {
        geoscale__cell_member__init(&m[i]);
        m[i].node_id = cell_id * 10 + i + 1;
        snprintf(raft[i], sizeof raft[i], "127.0.0.1:%zu", 9000 + cell_id * 10 + i);
        snprintf(client[i], sizeof client[i], "127.0.0.1:%zu", 7000 + cell_id * 10 + i);
        m[i].raft_address = raft[i];
        m[i].client_address = client[i];
        mp[i] = &m[i];
    }
    req.n_members = n_members;
    req.members = mp;
    ProtobufCMessage *r = NULL;
    int rv = write1(f, K(REGISTER_CELL), &req.base, &r);
    if (resp != NULL) {
        *resp = (Geoscale__RegisterCellResponse *)r;
    } else if (r != NULL) {
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

static void add_cell(struct fx *f, uint32_t cell_id, const char *region)
{
    assert_int_equal(register_cell(f, cell_id, region, 3, NULL), 0);
}

static int reserve(struct fx *f, unsigned seed, const char *region, uint64_t *user_id,
                   uint32_t *cell_id)
{
    uint8_t h[32];
    Geoscale__ReserveUsernameRequest req = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    hash_of(h, seed);
    req.hash.data = h;
    req.hash.len = 32;
    req.region = (char *)region;
    ProtobufCMessage *r = NULL;
    int rv = write1(f, K(RESERVE_USERNAME), &req.base, &r);
    if (rv == 0) {
        Geoscale__ReserveUsernameResponse *rr = (Geoscale__ReserveUsernameResponse *)r;
        f->expires = rr->expires_at_ms;
        assert_int_equal(rr->user_id >> 40, rr->cell_id);
        if (user_id != NULL) {
            *user_id = rr->user_id;
        }
        if (cell_id != NULL) {
            *cell_id = rr->cell_id;
        }
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

/* Confirm or release (kind) the name of seed for user_id. */
static int finish(struct fx *f, uint32_t kind, unsigned seed, uint64_t user_id,
                  Geoscale__UserRoute *route_out)
{
    uint8_t h[32];
    hash_of(h, seed);
    ProtobufCMessage *r = NULL;
    int rv;
    if (kind == K(CONFIRM_USERNAME)) {
        Geoscale__ConfirmUsernameRequest req = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
        req.hash.data = h;
        req.hash.len = 32;
        req.user_id = user_id;
        rv = write1(f, kind, &req.base, &r);
        if (rv == 0 && route_out != NULL) {
            Geoscale__ConfirmUsernameResponse *cr = (Geoscale__ConfirmUsernameResponse *)r;
            route_out->user_id = cr->route->user_id;
            route_out->cell_id = cr->route->cell_id;
        }
    } else {
        Geoscale__ReleaseUsernameRequest req = GEOSCALE__RELEASE_USERNAME_REQUEST__INIT;
        req.hash.data = h;
        req.hash.len = 32;
        req.user_id = user_id;
        rv = write1(f, kind, &req.base, &r);
    }
    if (r != NULL) {
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

static int confirm(struct fx *f, unsigned seed, uint64_t user_id)
{
    return finish(f, K(CONFIRM_USERNAME), seed, user_id, NULL);
}

static int release(struct fx *f, unsigned seed, uint64_t user_id)
{
    return finish(f, K(RELEASE_USERNAME), seed, user_id, NULL);
}

static Geoscale__ListCellsResponse *list_cells(struct fx *f, const char *region)
{
    Geoscale__ListCellsRequest req = GEOSCALE__LIST_CELLS_REQUEST__INIT;
    req.region = (char *)region;
    ProtobufCMessage *r = NULL;
    assert_int_equal(read1(f, K(LIST_CELLS), &req.base, &r), 0);
    return (Geoscale__ListCellsResponse *)r;
}

static uint64_t version(struct fx *f)
{
    Geoscale__ListCellsResponse *r = list_cells(f, "");
    uint64_t v = r->version;
    geoscale__list_cells_response__free_unpacked(r, NULL);
    return v;
}

/* user_count and reserved_count of a cell. */
static void cell_load(struct fx *f, uint32_t cell_id, uint64_t *users, uint64_t *reserved)
{
    Geoscale__ListCellsResponse *r = list_cells(f, "");
    bool found = false;
    for (size_t i = 0; i < r->n_cells; i++) {
        if (r->cells[i]->cell_id == cell_id) {
            found = true;
            *users = r->cells[i]->user_count;
            *reserved = r->cells[i]->reserved_count;
        }
    }
    assert_true(found);
    geoscale__list_cells_response__free_unpacked(r, NULL);
}

static int get_route(struct fx *f, uint64_t user_id, Geoscale__GetRouteResponse **out)
{
    Geoscale__GetRouteRequest req = GEOSCALE__GET_ROUTE_REQUEST__INIT;
    req.user_id = user_id;
    ProtobufCMessage *r = NULL;
    int rv = read1(f, K(GET_ROUTE), &req.base, &r);
    if (out != NULL) {
        *out = (Geoscale__GetRouteResponse *)r;
    } else if (r != NULL) {
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

static int lookup(struct fx *f, unsigned seed, uint64_t *user_id)
{
    uint8_t h[32];
    Geoscale__LookupUsernameRequest req = GEOSCALE__LOOKUP_USERNAME_REQUEST__INIT;
    hash_of(h, seed);
    req.hash.data = h;
    req.hash.len = 32;
    ProtobufCMessage *r = NULL;
    int rv = read1(f, K(LOOKUP_USERNAME), &req.base, &r);
    if (rv == 0) {
        *user_id = ((Geoscale__LookupUsernameResponse *)r)->route->user_id;
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

struct digest {
    uint8_t d[32];
    uint64_t n;
};

static struct digest digest(struct fx *f)
{
    struct digest d;
    assert_int_equal(directory_fsm_digest(f->fsm, d.d, &d.n), 0);
    return d;
}

static void assert_digest_equal(struct digest a, struct digest b)
{
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.d, b.d, 32);
}

/* An entry with no commands, at the current time (runs the expiry). */
static void tick(struct fx *f)
{
    apply(f, NULL, 0, NULL);
}

/* ---------------------------------------------------------------- checkpoints */


/* A directory replica's checkpoint: made, pulled, verified and installed
 * into a fresh replica, which then has the same state; a corrupted file is
 * refused and changes nothing; a metadata replica refuses it. */
static void test_checkpoint_install(void **state)
{
    struct fx *f = *state;
    char err[256] = "", root[160], incoming[160], dst_path[160], md_path[160];
    struct checkpoint_info info = {0};
    struct checkpoint_receiver *rcv = NULL;
    uint64_t ids[40];

    add_cell(f, 1, "eu");
    for (unsigned i = 0; i < 40; i++) {
        assert_int_equal(reserve(f, 500 + i, "eu", &ids[i], NULL), 0);
        assert_int_equal(confirm(f, 500 + i, ids[i]), 0);
    }
    snprintf(root, sizeof root, "%s/checkpoints", f->dir);
    snprintf(incoming, sizeof incoming, "%s/incoming", f->dir);
    snprintf(dst_path, sizeof dst_path, "%s/dst", f->dir);
    snprintf(md_path, sizeof md_path, "%s/md", f->dir);
    assert_int_equal(checkpoint_create(directory_fsm_rsm(f->fsm), root, NULL, err, sizeof err), 0);
    assert_int_equal(checkpoint_latest(root, &info, err, sizeof err), 0);
    assert_string_equal(info.kind, "directory");
    assert_int_equal(info.identity, 0);
    assert_int_equal(info.applied_index, f->index);

    struct directory_fsm *dst = open_at(dst_path, 0, 1);
    struct digest before;
    assert_int_equal(directory_fsm_digest(dst, before.d, &before.n), 0);

    /* Corrupted on its way: verification fails, nothing to install. */
    assert_int_equal(receive_checkpoint(root, &info, incoming, true, &rcv), GS_EIO);
    assert_null(checkpoint_receive_verified_dir(rcv));
    checkpoint_receive_free(rcv);
    struct digest after;
    assert_int_equal(directory_fsm_digest(dst, after.d, &after.n), 0);
    assert_digest_equal(before, after);
    assert_int_equal(directory_fsm_applied_index(dst), 0);

    /* Another kind of group refuses it, whole and verified. */
    struct metadata_fsm_options mo = {.db_path = md_path, .compression = false};
    struct metadata_fsm *md = NULL;
    assert_int_equal(metadata_fsm_open(&mo, &md, err, sizeof err), 0);
    assert_int_equal(receive_checkpoint(root, &info, incoming, false, &rcv), 0);
    assert_int_equal(checkpoint_install(metadata_fsm_rsm(md), checkpoint_receive_verified_dir(rcv),
                                        err, sizeof err),
                     GS_EINVAL);
    assert_int_equal(metadata_fsm_applied_index(md), 0);
    metadata_fsm_close(md);

    /* Installed into the fresh replica: same state, same index, readable. */
    assert_int_equal(checkpoint_install(directory_fsm_rsm(dst),
                                        checkpoint_receive_verified_dir(rcv), err, sizeof err),
                     0);
    checkpoint_receive_free(rcv);
    assert_int_equal(directory_fsm_applied_index(dst), f->index);
    assert_int_equal(directory_fsm_digest(dst, after.d, &after.n), 0);
    assert_digest_equal(digest(f), after);
    struct directory_fsm *mine = f->fsm;
    f->fsm = dst;
    uint64_t found = 0;
    assert_int_equal(lookup(f, 500 + 39, &found), 0);
    assert_int_equal(found, ids[39]);
    f->fsm = mine;
    directory_fsm_close(dst);
    /* It reopens as the same directory shard. */
    dst = open_at(dst_path, 0, 1);
    assert_int_equal(directory_fsm_applied_index(dst), f->index);
    directory_fsm_close(dst);
    checkpoint_info_free(&info);
}

/* ---------------------------------------------------------------- open */

static void test_open_reopen_refuses(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    struct digest before = digest(f);
    directory_fsm_close(f->fsm);
    f->fsm = open_at(f->path, 0, 1);
    assert_int_equal(directory_fsm_applied_index(f->fsm), 1);
    assert_digest_equal(digest(f), before);
    directory_fsm_close(f->fsm);
    f->fsm = NULL;

    struct directory_fsm *d = (struct directory_fsm *)1;
    char err[256] = "";
    /* Another shard's database. */
    struct directory_fsm_options o = {.db_path = f->path, .shard_id = 1, .n_shards = 2};
    assert_int_equal(directory_fsm_open(&o, &d, err, sizeof err), GS_EINVAL);
    assert_null(d);
    assert_non_null(strstr(err, "directory"));
    /* Bad options. */
    o.shard_id = 2;
    assert_int_equal(directory_fsm_open(&o, &d, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "shard_id"));
    o.db_path = NULL;
    o.shard_id = 0;
    assert_int_equal(directory_fsm_open(&o, &d, err, sizeof err), GS_EINVAL);

    /* A cell's database is not a directory, and the other way round. */
    static const uint8_t key[32] = "geoscale-test-username-key-0001";
    char cell_path[128];
    snprintf(cell_path, sizeof cell_path, "%s/cell", f->dir);
    struct cell_fsm_options co = {
        .db_path = cell_path, .cell_id = 0, .username_key = key, .username_key_len = 32};
    struct cell_fsm *cell = NULL;
    assert_int_equal(cell_fsm_open(&co, &cell, err, sizeof err), 0);
    cell_fsm_close(cell);
    o.db_path = cell_path;
    assert_int_equal(directory_fsm_open(&o, &d, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "not a directory database"));
    co.db_path = f->path;
    assert_int_equal(cell_fsm_open(&co, &cell, err, sizeof err), GS_EIO);
    assert_null(cell);

    f->fsm = open_at(f->path, 0, 1);
}

/* ---------------------------------------------------------------- cells */

static void test_register_cell(void **state)
{
    struct fx *f = *state;
    Geoscale__RegisterCellResponse *r = NULL;
    assert_int_equal(version(f), 0);
    assert_int_equal(register_cell(f, 5, "us-east", 3, &r), 0);
    assert_true(r->created);
    assert_true(r->changed);
    assert_int_equal(r->version, 1);
    assert_int_equal(r->cell->cell_id, 5);
    assert_string_equal(r->cell->region, "us-east");
    assert_true(r->cell->accepting);
    assert_int_equal(r->cell->n_members, 3);
    assert_int_equal(r->cell->members[2]->node_id, 53);
    geoscale__register_cell_response__free_unpacked(r, NULL);

    /* Again, the same: changes nothing, not even the version. */
    struct digest d = digest(f);
    assert_int_equal(register_cell(f, 5, "us-east", 3, &r), 0);
    assert_false(r->created);
    assert_false(r->changed);
    assert_int_equal(r->version, 1);
    geoscale__register_cell_response__free_unpacked(r, NULL);
    assert_digest_equal(digest(f), d);

    /* New members: changed, counters kept, version bumped. */
    uint64_t uid = 0;
    assert_int_equal(reserve(f, 1, "us-east", &uid, NULL), 0);
    assert_int_equal(confirm(f, 1, uid), 0);
    assert_int_equal(version(f), 2);
    assert_int_equal(register_cell(f, 5, "us-east", 2, &r), 0);
    assert_false(r->created);
    assert_true(r->changed);
    assert_int_equal(r->version, 3);
    assert_int_equal(r->cell->n_members, 2);
    assert_int_equal(r->cell->user_count, 1);
    assert_true(r->cell->accepting);
    geoscale__register_cell_response__free_unpacked(r, NULL);

    /* A cell never moves region. */
    d = digest(f);
    assert_int_equal(register_cell(f, 5, "eu", 2, NULL), GS_ECONFLICT);
    /* Bad requests. */
    assert_int_equal(register_cell(f, 0, "eu", 3, NULL), GS_EINVAL);
    assert_int_equal(register_cell(f, 1u << 24, "eu", 3, NULL), GS_EINVAL);
    assert_int_equal(register_cell(f, 6, "", 3, NULL), GS_EINVAL);
    assert_int_equal(register_cell(f, 6, "EU", 3, NULL), GS_EINVAL);
    assert_int_equal(register_cell(f, 6, "eu/west", 3, NULL), GS_EINVAL);
    assert_int_equal(register_cell(f, 6, "abcdefghijklmnopqrstuvwxyz0123456", 3, NULL), GS_ETOOBIG);
    assert_int_equal(register_cell(f, 6, "eu", 8, NULL), GS_ETOOBIG);
    assert_digest_equal(digest(f), d);
    assert_int_equal(version(f), 3);

    /* Listing: by region and all, ordered by id. */
    add_cell(f, 2, "eu");
    add_cell(f, 9, "eu-west");
    add_cell(f, 1, "eu");
    Geoscale__ListCellsResponse *l = list_cells(f, "eu");
    assert_int_equal(l->n_cells, 2);
    assert_int_equal(l->cells[0]->cell_id, 1);
    assert_int_equal(l->cells[1]->cell_id, 2);
    assert_int_equal(l->version, 6);
    geoscale__list_cells_response__free_unpacked(l, NULL);
    l = list_cells(f, "");
    assert_int_equal(l->n_cells, 4);
    assert_int_equal(l->cells[0]->cell_id, 1);
    assert_int_equal(l->cells[3]->cell_id, 9);
    geoscale__list_cells_response__free_unpacked(l, NULL);
    l = list_cells(f, "asia");
    assert_int_equal(l->n_cells, 0);
    geoscale__list_cells_response__free_unpacked(l, NULL);
}

static void test_set_accepting(void **state)
{
    struct fx *f = *state;
    Geoscale__SetCellAcceptingRequest req = GEOSCALE__SET_CELL_ACCEPTING_REQUEST__INIT;
    req.cell_id = 4;
    assert_int_equal(write1(f, K(SET_CELL_ACCEPTING), &req.base, NULL), GS_ENOTFOUND);
    add_cell(f, 4, "asia");
    add_cell(f, 5, "asia");
    assert_int_equal(version(f), 2);
    /* Cell 4 stops accepting: new users go to 5 although 4 is as empty. */
    req.accepting = false;
    ProtobufCMessage *r = NULL;
    assert_int_equal(write1(f, K(SET_CELL_ACCEPTING), &req.base, &r), 0);
    assert_false(((Geoscale__SetCellAcceptingResponse *)r)->cell->accepting);
    assert_int_equal(((Geoscale__SetCellAcceptingResponse *)r)->version, 3);
    protobuf_c_message_free_unpacked(r, NULL);
    uint32_t cell = 0;
    assert_int_equal(reserve(f, 1, "asia", NULL, &cell), 0);
    assert_int_equal(cell, 5);
    assert_int_equal(reserve(f, 2, "asia", NULL, &cell), 0);
    assert_int_equal(cell, 5);
    /* No accepting cell at all: NOT_FOUND, nothing written. */
    req.cell_id = 5;
    assert_int_equal(write1(f, K(SET_CELL_ACCEPTING), &req.base, NULL), 0);
    struct digest d = digest(f);
    assert_int_equal(reserve(f, 3, "asia", NULL, NULL), GS_ENOTFOUND);
    assert_digest_equal(digest(f), d);
    /* The same value again changes nothing. */
    assert_int_equal(write1(f, K(SET_CELL_ACCEPTING), &req.base, NULL), 0);
    assert_digest_equal(digest(f), d);
    req.cell_id = 4;
    req.accepting = true;
    assert_int_equal(write1(f, K(SET_CELL_ACCEPTING), &req.base, NULL), 0);
    assert_int_equal(reserve(f, 3, "asia", NULL, &cell), 0);
    assert_int_equal(cell, 4);
    assert_int_equal(version(f), 5);
}

/* ---------------------------------------------------------------- placement */

static void test_placement(void **state)
{
    struct fx *f = *state;
    add_cell(f, 3, "eu");
    add_cell(f, 1, "eu");
    add_cell(f, 2, "eu");
    add_cell(f, 7, "eu-west"); /* "eu" must not prefix-match it */
    add_cell(f, 8, "us-east");
    uint64_t uid[8];
    uint32_t cell[8];
    /* Ties go to the lowest id; pending reservations count as load. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(reserve(f, (unsigned)i + 1, "eu", &uid[i], &cell[i]), 0);
    }
    assert_int_equal(cell[0], 1);
    assert_int_equal(cell[1], 2);
    assert_int_equal(cell[2], 3);
    assert_int_equal(cell[3], 1);
    /* Ids: per-cell sequences from 1, as a cell allocates them. */
    assert_int_equal(uid[0], UID(1, 1));
    assert_int_equal(uid[1], UID(2, 1));
    assert_int_equal(uid[2], UID(3, 1));
    assert_int_equal(uid[3], UID(1, 2));
    /* Confirmed users count the same as pending ones. */
    assert_int_equal(confirm(f, 1, uid[0]), 0);
    assert_int_equal(confirm(f, 2, uid[1]), 0);
    uint64_t users = 0, reserved = 0;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(users, 1);
    assert_int_equal(reserved, 1);
    /* Loads 2, 1, 1: cell 2 (tie with 3, lower id). */
    assert_int_equal(reserve(f, 5, "eu", &uid[4], &cell[4]), 0);
    assert_int_equal(cell[4], 2);
    /* Loads 2, 2, 1: cell 3. */
    assert_int_equal(reserve(f, 6, "eu", &uid[5], &cell[5]), 0);
    assert_int_equal(cell[5], 3);
    /* A release frees its place: loads 2, 2, 1 -> cell 3 again. */
    assert_int_equal(release(f, 6, uid[5]), 0);
    assert_int_equal(reserve(f, 7, "eu", &uid[6], &cell[6]), 0);
    assert_int_equal(cell[6], 3);
    assert_int_equal(uid[6], UID(3, 3)); /* released ids are not reused */
    /* Other regions: their own cells only. */
    assert_int_equal(reserve(f, 8, "us-east", NULL, &cell[7]), 0);
    assert_int_equal(cell[7], 8);
    assert_int_equal(reserve(f, 9, "eu-west", NULL, &cell[7]), 0);
    assert_int_equal(cell[7], 7);
    assert_int_equal(reserve(f, 10, "asia", NULL, NULL), GS_ENOTFOUND);
    cell_load(f, 7, &users, &reserved);
    assert_int_equal(reserved, 1);
}

/* Many cells: more than the placement scan's slice. */
static void test_placement_many_cells(void **state)
{
    struct fx *f = *state;
    for (uint32_t c = 1; c <= 300; c++) {
        add_cell(f, c, "us-west");
    }
    uint32_t cell = 0;
    for (uint32_t c = 1; c <= 300; c++) {
        assert_int_equal(reserve(f, c, "us-west", NULL, &cell), 0);
        assert_int_equal(cell, c);
    }
    assert_int_equal(reserve(f, 301, "us-west", NULL, &cell), 0);
    assert_int_equal(cell, 1);
    Geoscale__ListCellsResponse *l = list_cells(f, "us-west");
    assert_int_equal(l->n_cells, 300);
    geoscale__list_cells_response__free_unpacked(l, NULL);
}

/* ---------------------------------------------------------------- usernames */

static void test_uniqueness(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    add_cell(f, 2, "us-east");
    uint64_t a = 0, b = 0, found = 0;
    assert_int_equal(reserve(f, 1, "eu", &a, NULL), 0);
    /* Held: in any region, by anyone. */
    struct digest d = digest(f);
    assert_int_equal(reserve(f, 1, "eu", NULL, NULL), GS_EEXIST);
    assert_int_equal(reserve(f, 1, "us-east", NULL, NULL), GS_EEXIST);
    assert_digest_equal(digest(f), d);
    /* Not visible until confirmed. */
    assert_int_equal(lookup(f, 1, &found), GS_ENOTFOUND);
    assert_int_equal(get_route(f, a, NULL), GS_ENOTFOUND);
    /* Confirm by another signup's user id: CONFLICT. */
    assert_int_equal(confirm(f, 1, a + 1), GS_ECONFLICT);
    assert_int_equal(confirm(f, 99, a), GS_ENOTFOUND);
    Geoscale__UserRoute route = GEOSCALE__USER_ROUTE__INIT;
    assert_int_equal(finish(f, K(CONFIRM_USERNAME), 1, a, &route), 0);
    assert_int_equal(route.user_id, a);
    assert_int_equal(route.cell_id, 1);
    assert_int_equal(lookup(f, 1, &found), 0);
    assert_int_equal(found, a);
    /* Confirmed: taken forever, also after any time. */
    f->now += 365LL * 24 * 3600 * 1000;
    assert_int_equal(reserve(f, 1, "us-east", NULL, NULL), GS_EEXIST);
    /* A second confirm of the same user is answered again; of another user
     * it is EEXIST. */
    d = digest(f);
    uint64_t v = version(f);
    assert_int_equal(confirm(f, 1, a), 0);
    assert_int_equal(version(f), v);
    assert_digest_equal(digest(f), d);
    assert_int_equal(confirm(f, 1, a + 1), GS_EEXIST);
    /* Other names are independent. */
    assert_int_equal(reserve(f, 2, "us-east", &b, NULL), 0);
    assert_int_equal(confirm(f, 2, b), 0);
    assert_int_equal(lookup(f, 2, &found), 0);
    assert_int_equal(found, b);
    assert_int_equal(b, UID(2, 1));
}

static void test_get_route(void **state)
{
    struct fx *f = *state;
    add_cell(f, 3, "asia");
    uint64_t a = 0;
    assert_int_equal(reserve(f, 1, "asia", &a, NULL), 0);
    assert_int_equal(confirm(f, 1, a), 0);
    Geoscale__GetRouteResponse *r = NULL;
    assert_int_equal(get_route(f, a, &r), 0);
    assert_int_equal(r->route->user_id, a);
    assert_int_equal(r->route->cell_id, 3);
    assert_string_equal(r->route->region, "asia");
    assert_int_equal(r->version, version(f));
    geoscale__get_route_response__free_unpacked(r, NULL);
    assert_int_equal(get_route(f, a + 1, NULL), GS_ENOTFOUND);
    assert_int_equal(get_route(f, 0, NULL), GS_EINVAL);
}

static void test_release(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    uint64_t a = 0, b = 0, c = 0;
    assert_int_equal(reserve(f, 1, "eu", &a, NULL), 0);
    /* Only the holder releases. */
    assert_int_equal(release(f, 1, a + 1), GS_ECONFLICT);
    assert_int_equal(release(f, 2, a), GS_ENOTFOUND);
    uint64_t v = version(f);
    assert_int_equal(release(f, 1, a), 0);
    assert_int_equal(version(f), v); /* no route changed */
    uint64_t users = 9, reserved = 9;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(users, 0);
    assert_int_equal(reserved, 0);
    /* Released twice: gone. */
    assert_int_equal(release(f, 1, a), GS_ENOTFOUND);
    assert_int_equal(confirm(f, 1, a), GS_ENOTFOUND);
    /* Reusable at once, with a new id. */
    assert_int_equal(reserve(f, 1, "eu", &b, NULL), 0);
    assert_int_not_equal(b, a);
    assert_int_equal(confirm(f, 1, b), 0);
    /* A confirmed name is not released. */
    assert_int_equal(release(f, 1, b), GS_ECONFLICT);
    assert_int_equal(lookup(f, 1, &c), 0);
    assert_int_equal(c, b);
}

static void test_expiry_and_reuse(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    struct digest base = digest(f);
    uint64_t a = 0, b = 0;
    assert_int_equal(reserve(f, 1, "eu", &a, NULL), 0);
    assert_int_equal(f->expires, f->now + TTL);
    /* Held until TTL of batch time has passed. */
    f->now += TTL - 1;
    assert_int_equal(reserve(f, 1, "eu", NULL, NULL), GS_EEXIST);
    /* At expiry the next entry deletes it and gives the place back. */
    f->now += 1;
    tick(f);
    uint64_t users = 9, reserved = 9;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, 0);
    /* Only the cell's sequence remembers it. */
    assert_int_equal(digest(f).n, base.n + 1);
    assert_int_equal(confirm(f, 1, a), GS_ENOTFOUND);
    assert_int_equal(reserve(f, 1, "eu", &b, NULL), 0);
    assert_int_equal(b, UID(1, 2));
    assert_int_equal(confirm(f, 1, b), 0);
    /* Confirmed names never expire. */
    f->now += 10 * TTL;
    tick(f);
    uint64_t found = 0;
    assert_int_equal(lookup(f, 1, &found), 0);
    assert_int_equal(found, b);
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(users, 1);
    assert_int_equal(reserved, 0);
}

/* The expiry walks from where the last one reached, to the batch time: it
 * steps over none of the tombstones of reservations confirmed before it,
 * below or above. */
static void test_expiry_skips_no_tombstone(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    uint64_t uid = 0;
    for (unsigned i = 1; i <= 200; i++) {
        assert_int_equal(reserve(f, i, "eu", &uid, NULL), 0);
        assert_int_equal(f->expires, f->now + TTL);
        assert_int_equal(confirm(f, i, uid), 0);
        f->now += 10;
    }
    /* Half of the confirmed rows' index rows are behind the batch time. */
    f->now = T0 + TTL + 1000;
    tick(f);
    rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
    rocksdb_set_perf_level(rocksdb_enable_count);
    rocksdb_perfcontext_reset(pc);
    f->now += 1;
    tick(f);
    uint64_t skipped = rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
    rocksdb_set_perf_level(rocksdb_disable);
    rocksdb_perfcontext_destroy(pc);
    assert_true(skipped < 5); /* 200 when a walk starts at the index's first key */

    /* A batch time behind the walk (a new leader's clock more than the TTL
     * behind): the reservation expires where the walk will find it. */
    int64_t reached = f->now;
    f->now = T0;
    assert_int_equal(reserve(f, 500, "eu", &uid, NULL), 0);
    assert_int_equal(f->expires, reached);
    uint64_t users = 0, reserved = 0;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, 1);
    f->now = reached;
    tick(f);
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, 0);
    assert_int_equal(users, 200);
}

/* More expired reservations than one entry deletes: the rest behave as
 * absent until later entries delete them. */
static void test_expiry_bounded(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    const unsigned n = 70; /* > DIRECTORY_EXPIRE_MAX (64) */
    uint64_t uid[70];
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(reserve(f, i + 1, "eu", &uid[i], NULL), 0);
        f->now += 1; /* reservation i expires at T0 + i + TTL */
    }
    uint64_t users = 0, reserved = 0;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, n);
    f->now = T0 + TTL + n;
    tick(f); /* deletes the 64 oldest */
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, n - 64);
    /* The next entry's sweep deletes the other 6 before its commands run:
     * to them the names are gone. */
    struct cmd c[3];
    uint8_t h[3][32];
    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    Geoscale__ReleaseUsernameRequest rr = GEOSCALE__RELEASE_USERNAME_REQUEST__INIT;
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    hash_of(h[0], 65);
    hash_of(h[1], 66);
    hash_of(h[2], 67);
    cr.hash = (ProtobufCBinaryData){32, h[0]};
    cr.user_id = uid[64];
    rr.hash = (ProtobufCBinaryData){32, h[1]};
    rr.user_id = uid[65];
    sr.hash = (ProtobufCBinaryData){32, h[2]};
    sr.region = "eu";
    c[0] = (struct cmd){K(CONFIRM_USERNAME), 0, 0, &cr.base, NULL, 0};
    c[1] = (struct cmd){K(RELEASE_USERNAME), 0, 0, &rr.base, NULL, 0};
    c[2] = (struct cmd){K(RESERVE_USERNAME), 0, 0, &sr.base, NULL, 0};
    struct cell_result res[3];
    apply(f, c, 3, res);
    assert_int_equal(res[0].status, GS_ENOTFOUND);
    assert_int_equal(res[1].status, GS_ENOTFOUND);
    assert_int_equal(res[2].status, 0);
    free(res[2].body);
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, 1);
}

/* An expired reservation not yet swept (the sweep ran out of budget on
 * older rows) is taken over by a new reservation in the same entry. */
static void test_expired_takeover(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    add_cell(f, 2, "eu");
    /* 64 old reservations, all expiring at T0 + TTL, then the target name,
     * expiring one ms later. */
    for (unsigned i = 0; i < 64; i++) {
        assert_int_equal(reserve(f, 1000 + i, "eu", NULL, NULL), 0);
    }
    f->now += 1;
    uint64_t old = 0;
    uint32_t old_cell = 0;
    assert_int_equal(reserve(f, 7, "eu", &old, &old_cell), 0);
    assert_int_equal(old_cell, 1); /* 32 + 32 placed: tie -> 1 */
    /* One entry at T0 + TTL + 1: its sweep deletes the 64 older rows only;
     * the target is expired but still stored when the commands run. */
    f->now = T0 + TTL + 1;
    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    Geoscale__ReleaseUsernameRequest rr = GEOSCALE__RELEASE_USERNAME_REQUEST__INIT;
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    uint8_t h[32];
    hash_of(h, 7);
    cr.hash = rr.hash = sr.hash = (ProtobufCBinaryData){32, h};
    cr.user_id = rr.user_id = old;
    sr.region = "eu";
    struct cmd c[3] = {{K(CONFIRM_USERNAME), 0, 0, &cr.base, NULL, 0},
                       {K(RELEASE_USERNAME), 0, 0, &rr.base, NULL, 0},
                       {K(RESERVE_USERNAME), 0, 0, &sr.base, NULL, 0}};
    struct cell_result res[3];
    apply(f, c, 3, res);
    assert_int_equal(res[0].status, GS_ENOTFOUND);
    assert_int_equal(res[1].status, GS_ENOTFOUND);
    assert_int_equal(res[2].status, 0);
    Geoscale__ReserveUsernameResponse *rsp =
        geoscale__reserve_username_response__unpack(NULL, res[2].len, res[2].body);
    /* The old row was dropped, its cell's load given back: both cells at 0,
     * so cell 1 again, with a fresh id. */
    assert_int_equal(rsp->cell_id, 1);
    assert_int_not_equal(rsp->user_id, old);
    uint64_t fresh = rsp->user_id;
    geoscale__reserve_username_response__free_unpacked(rsp, NULL);
    free(res[2].body);
    uint64_t users = 9, reserved = 9;
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(reserved, 1);
    cell_load(f, 2, &users, &reserved);
    assert_int_equal(reserved, 0);
    /* The new reservation is the live one; the old id cannot confirm. */
    assert_int_equal(confirm(f, 7, old), GS_ECONFLICT);
    assert_int_equal(confirm(f, 7, fresh), 0);
    /* No index row of the old reservation is left for a later sweep. */
    f->now += 10 * TTL;
    tick(f);
    cell_load(f, 1, &users, &reserved);
    assert_int_equal(users, 1);
    assert_int_equal(reserved, 0);
}

/* ---------------------------------------------------------------- version */

static void test_version_bumps(void **state)
{
    struct fx *f = *state;
    assert_int_equal(version(f), 0);
    add_cell(f, 1, "eu");
    assert_int_equal(version(f), 1);
    uint64_t a = 0, b = 0;
    assert_int_equal(reserve(f, 1, "eu", &a, NULL), 0);
    assert_int_equal(version(f), 1); /* no route yet */
    assert_int_equal(reserve(f, 2, "eu", &b, NULL), 0);
    assert_int_equal(release(f, 2, b), 0);
    assert_int_equal(version(f), 1);
    ProtobufCMessage *r = NULL;
    uint8_t h[32];
    hash_of(h, 1);
    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    cr.hash = (ProtobufCBinaryData){32, h};
    cr.user_id = a;
    assert_int_equal(write1(f, K(CONFIRM_USERNAME), &cr.base, &r), 0);
    assert_int_equal(((Geoscale__ConfirmUsernameResponse *)r)->version, 2);
    protobuf_c_message_free_unpacked(r, NULL);
    assert_int_equal(version(f), 2);
    assert_int_equal(register_cell(f, 1, "eu", 1, NULL), 0); /* members changed */
    assert_int_equal(version(f), 3);
    /* Failures do not bump. */
    assert_int_equal(confirm(f, 9, a), GS_ENOTFOUND);
    assert_int_equal(register_cell(f, 1, "asia", 1, NULL), GS_ECONFLICT);
    assert_int_equal(version(f), 3);
    /* It survives a restart. */
    directory_fsm_close(f->fsm);
    f->fsm = open_at(f->path, 0, 1);
    assert_int_equal(version(f), 3);
}

/* The routes version moves only when a cached route becomes wrong: a cell's
 * members change. New cells, signups and releases leave it; every answer
 * that carries routes (GetRoute, LookupUsername, ListCells, Confirm,
 * RegisterCell) reports it. */
static uint64_t routes_version(struct fx *f)
{
    Geoscale__ListCellsResponse *lc = list_cells(f, "");
    uint64_t v = lc->routes_version;
    geoscale__list_cells_response__free_unpacked(lc, NULL);
    return v;
}

static void test_routes_version(void **state)
{
    struct fx *f = *state;
    Geoscale__RegisterCellResponse *rr = NULL;
    Geoscale__GetRouteResponse *gr = NULL;
    ProtobufCMessage *r = NULL;
    uint64_t a = 0, b = 0;
    uint8_t h[32];

    assert_int_equal(routes_version(f), 0);
    add_cell(f, 1, "eu");
    add_cell(f, 2, "eu");
    assert_int_equal(routes_version(f), 0); /* new cells break no route */
    assert_int_equal(reserve(f, 1, "eu", &a, NULL), 0);
    assert_int_equal(confirm(f, 1, a), 0);
    assert_int_equal(reserve(f, 2, "eu", &b, NULL), 0);
    assert_int_equal(release(f, 2, b), 0);
    assert_true(version(f) >= 3);
    assert_int_equal(routes_version(f), 0); /* nor do signups */
    /* Same members again: nothing changes. */
    assert_int_equal(register_cell(f, 1, "eu", 3, &rr), 0);
    assert_false(rr->changed);
    assert_int_equal(rr->routes_version, 0);
    geoscale__register_cell_response__free_unpacked(rr, NULL);
    /* Other members: routes to the old ones are wrong now. */
    assert_int_equal(register_cell(f, 1, "eu", 1, &rr), 0);
    assert_true(rr->changed);
    assert_int_equal(rr->routes_version, 1);
    geoscale__register_cell_response__free_unpacked(rr, NULL);
    assert_int_equal(routes_version(f), 1);
    /* A refused change does not move it. */
    assert_int_equal(register_cell(f, 1, "asia", 3, NULL), GS_ECONFLICT);
    assert_int_equal(routes_version(f), 1);
    /* Route answers carry it. */
    assert_int_equal(get_route(f, a, &gr), 0);
    assert_int_equal(gr->routes_version, 1);
    geoscale__get_route_response__free_unpacked(gr, NULL);
    hash_of(h, 1);
    Geoscale__LookupUsernameRequest lr = GEOSCALE__LOOKUP_USERNAME_REQUEST__INIT;
    lr.hash = (ProtobufCBinaryData){32, h};
    assert_int_equal(read1(f, K(LOOKUP_USERNAME), &lr.base, &r), 0);
    assert_int_equal(((Geoscale__LookupUsernameResponse *)r)->routes_version, 1);
    protobuf_c_message_free_unpacked(r, NULL);
    /* It survives a restart. */
    directory_fsm_close(f->fsm);
    f->fsm = open_at(f->path, 0, 1);
    assert_int_equal(routes_version(f), 1);
}

/* ---------------------------------------------------------------- durability */

static void test_replay_and_idempotency(void **state)
{
    struct fx *f = *state;
    add_cell(f, 1, "eu");
    uint8_t h[32];
    hash_of(h, 1);
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    sr.hash = (ProtobufCBinaryData){32, h};
    sr.region = "eu";
    ProtobufCMessage *r1 = NULL, *r2 = NULL;
    assert_int_equal(write1k(f, K(RESERVE_USERNAME), 42, 1, &sr.base, &r1), 0);
    /* A retry with the same idempotency key: the same answer, applied once
     * (otherwise it would be EEXIST). Compared with the state after an
     * empty entry at its time (whose expiry records the time reached). */
    f->now += 1000;
    tick(f);
    struct digest d = digest(f);
    assert_int_equal(write1k(f, K(RESERVE_USERNAME), 42, 1, &sr.base, &r2), 0);
    assert_int_equal(((Geoscale__ReserveUsernameResponse *)r2)->user_id,
                     ((Geoscale__ReserveUsernameResponse *)r1)->user_id);
    assert_digest_equal(digest(f), d);
    protobuf_c_message_free_unpacked(r1, NULL);
    protobuf_c_message_free_unpacked(r2, NULL);
    /* Without the key the same request is a new one. */
    assert_int_equal(write1(f, K(RESERVE_USERNAME), &sr.base, NULL), GS_EEXIST);

    /* Replays of old indexes are skipped, whatever they hold. */
    uint64_t applied = directory_fsm_applied_index(f->fsm);
    d = digest(f);
    Geoscale__ReleaseUsernameRequest rr = GEOSCALE__RELEASE_USERNAME_REQUEST__INIT;
    rr.hash = sr.hash;
    rr.user_id = UID(1, 1);
    struct cmd c = {K(RELEASE_USERNAME), 0, 0, &rr.base, NULL, 0};
    for (uint64_t idx = 1; idx <= applied; idx++) {
        size_t len = 0, nres = 99;
        uint8_t *buf = encode(&c, 1, f->now, &len);
        struct cell_result res[1] = {{0, NULL, 0}};
        assert_int_equal(directory_fsm_apply(f->fsm, idx, buf, len, res, 1, &nres), 0);
        assert_int_equal(nres, 0);
        free(buf);
        assert_int_equal(directory_fsm_apply_empty(f->fsm, idx), 0);
    }
    assert_int_equal(directory_fsm_applied_index(f->fsm), applied);
    assert_digest_equal(digest(f), d);
    assert_int_equal(directory_fsm_apply_empty(f->fsm, applied + 3), 0);
    assert_int_equal(directory_fsm_applied_index(f->fsm), applied + 3);
    assert_digest_equal(digest(f), d);
    f->index = applied + 3;
    assert_int_equal(directory_fsm_sync(f->fsm), 0);
    directory_fsm_close(f->fsm);
    f->fsm = open_at(f->path, 0, 1);
    assert_int_equal(directory_fsm_applied_index(f->fsm), applied + 3);
    assert_digest_equal(digest(f), d);

    /* Undecodable entries advance the index and change nothing. */
    uint8_t junk[24];
    memset(junk, 0xee, sizeof junk);
    struct cell_result res[2];
    size_t nres = 99;
    assert_int_equal(directory_fsm_apply(f->fsm, ++f->index, junk, sizeof junk, res, 2, &nres), 0);
    assert_int_equal(nres, 0);
    assert_int_equal(directory_fsm_applied_index(f->fsm), f->index);
    assert_digest_equal(digest(f), d);

    /* Bad commands in a good entry: their own results; reads are served;
     * later commands see earlier ones. */
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    Geoscale__GetRouteRequest gr = GEOSCALE__GET_ROUTE_REQUEST__INIT;
    gr.user_id = UID(1, 1);
    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    cr.hash = sr.hash;
    cr.user_id = UID(1, 1);
    struct cmd cc[5] = {{99, 0, 0, NULL, NULL, 0},
                        {K(RESERVE_USERNAME), 0, 0, NULL, garbage, sizeof garbage},
                        {K(GET_ROUTE), 7, 1, &gr.base, NULL, 0},
                        {K(CONFIRM_USERNAME), 0, 0, &cr.base, NULL, 0},
                        {K(GET_ROUTE), 7, 1, &gr.base, NULL, 0}};
    struct cell_result rr5[5];
    apply(f, cc, 5, rr5);
    assert_int_equal(rr5[0].status, GS_EUNIMPL);
    assert_int_equal(rr5[1].status, GS_EINVAL);
    assert_int_equal(rr5[2].status, GS_ENOTFOUND);
    assert_int_equal(rr5[3].status, 0);
    assert_int_equal(rr5[4].status, 0); /* reads are not remembered */
    free(rr5[3].body);
    free(rr5[4].body);
}

static void test_same_entries_same_digest(void **state)
{
    struct fx *f = *state;
    struct fx g;
    fx_init(&g, "replica");
    struct fx *both[2] = {f, &g};
    for (int k = 0; k < 2; k++) {
        struct fx *x = both[k];
        add_cell(x, 2, "eu");
        add_cell(x, 1, "eu");
        uint64_t uid[6];
        for (unsigned i = 0; i < 6; i++) {
            assert_int_equal(reserve(x, i + 1, "eu", &uid[i], NULL), 0);
        }
        assert_int_equal(confirm(x, 1, uid[0]), 0);
        assert_int_equal(release(x, 2, uid[1]), 0);
        x->now += TTL + 5;
        assert_int_equal(confirm(x, 3, uid[2]), GS_ENOTFOUND);
        tick(x);
    }
    struct digest df = digest(f);
    assert_digest_equal(df, digest(&g));
    /* Node-local bookkeeping does not count. */
    assert_int_equal(directory_fsm_apply_empty(g.fsm, g.index + 10), 0);
    g.index += 10;
    assert_digest_equal(df, digest(&g));
    /* A difference in data does. */
    assert_int_equal(reserve(&g, 50, "eu", NULL, NULL), 0);
    assert_memory_not_equal(df.d, digest(&g).d, 32);
    fx_fini(&g);
}

/* ---------------------------------------------------------------- no PII */

static bool region_key_ok(const uint8_t *k, size_t len)
{
    if (len < 2 || len != (size_t)2 + k[1] + 4 || k[1] == 0 || k[1] > 32) {
        return false;
    }
    for (size_t i = 0; i < k[1]; i++) {
        uint8_t c = k[2 + i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Count occurrences of needle in every file under dir. */
static size_t scan_dir(const char *dir, const void *needle, size_t nlen)
{
    size_t hits = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        assert_int_equal(stat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            hits += scan_dir(p, needle, nlen);
            continue;
        }
        FILE *fp = fopen(p, "rb");
        assert_non_null(fp);
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        size_t n = fread(buf, 1, (size_t)st.st_size, fp);
        fclose(fp);
        for (size_t i = 0; i + nlen <= n; i++) {
            if (memcmp(buf + i, needle, nlen) == 0) {
                hits++;
            }
        }
        free(buf);
    }
    closedir(d);
    return hits;
}

static void test_no_pii(void **state)
{
    struct fx *f = *state;
    static const uint8_t cluster_key[32] = "geoscale-test-username-key-0001";
    const char *canary = "canary_name_q8z3";
    uint8_t h[32];
    key_username_hash(cluster_key, sizeof cluster_key, canary, strlen(canary), h);
    add_cell(f, 1, "eu");
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    sr.hash = (ProtobufCBinaryData){32, h};
    sr.region = "eu";
    ProtobufCMessage *r = NULL;
    assert_int_equal(write1k(f, K(RESERVE_USERNAME), 5, 1, &sr.base, &r), 0);
    uint64_t uid = ((Geoscale__ReserveUsernameResponse *)r)->user_id;
    protobuf_c_message_free_unpacked(r, NULL);
    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    cr.hash = sr.hash;
    cr.user_id = uid;
    assert_int_equal(write1k(f, K(CONFIRM_USERNAME), 5, 2, &cr.base, NULL), 0);
    assert_int_equal(reserve(f, 2, "eu", NULL, NULL), 0);
    assert_int_equal(directory_fsm_sync(f->fsm), 0);
    directory_fsm_close(f->fsm);
    f->fsm = NULL;

    /* Every key has one of the documented shapes: ids, hashes, region names. */
    rocksdb_options_t *o = rocksdb_options_create();
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_for_read_only(o, f->path, 0, &err);
    assert_null(err);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    size_t n = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t len = 0;
        const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &len);
        bool ok = false;
        switch (k[0]) {
        case 'S':
            ok = key_is_system(k, len, KEY_SYS_SCHEMA) ||
                 key_is_system(k, len, "directory_shard") ||
                 key_is_system(k, len, KEY_SYS_APPLIED_INDEX) || key_is_system(k, len, "version") ||
                 key_is_system(k, len, "reservations_expired") ||
                 key_is_system(k, len, KEY_SYS_RESULTS_EXPIRED);
            break;
        case 'c':
        case 'q':
            ok = len == 5;
            break;
        case 'g':
            ok = region_key_ok(k, len);
            break;
        case 'u':
        case 'x':
        case 'R':
            ok = len == 9 || len == 17;
            break;
        case 'h':
            ok = len == 33;
            break;
        case 'r':
            ok = len == 25;
            break;
        default:
            break;
        }
        if (!ok) {
            fail_msg("unexpected key of prefix %c, %zu bytes", k[0], len);
        }
        n++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    assert_true(n > 8);

    /* And no byte of any file holds the name; the scan does find the hash
     * (so it looks where the data is). */
    assert_int_equal(scan_dir(f->path, canary, strlen(canary)), 0);
    assert_true(scan_dir(f->path, h, 32) > 0);
    f->fsm = open_at(f->path, 0, 1);
}

/* ---------------------------------------------------------------- shards */

static void test_sharding(void **state)
{
    struct fx *f = *state;
    const uint32_t n = 4, s = 2;
    struct fx g = *f;
    snprintf(g.path, sizeof g.path, "%s/shard", f->dir);
    g.fsm = open_at(g.path, s, n);
    g.index = 0;
    add_cell(&g, 1, "eu");
    /* Names of another shard are refused, of this shard placed. */
    unsigned mine = 0, other = 0;
    for (unsigned seed = 1; seed < 64 && (mine == 0 || other == 0); seed++) {
        uint8_t h[32];
        hash_of(h, seed);
        if (directory_username_shard(h, n) == s) {
            mine = mine == 0 ? seed : mine;
        } else {
            other = other == 0 ? seed : other;
        }
    }
    assert_true(mine != 0 && other != 0);
    assert_int_equal(reserve(&g, other, "eu", NULL, NULL), GS_EWRONGCELL);
    uint64_t prev = 0;
    for (unsigned i = 0; i < 20; i++) {
        uint64_t uid = 0;
        uint8_t h[32];
        unsigned seed = mine + i * 1000;
        hash_of(h, seed);
        if (directory_username_shard(h, n) != s) {
            continue;
        }
        assert_int_equal(reserve(&g, seed, "eu", &uid, NULL), 0);
        /* Every id it hands out belongs to this shard, ascending. */
        assert_int_equal(directory_user_shard(uid, n), s);
        assert_true(uid > prev);
        prev = uid;
        assert_int_equal(confirm(&g, seed, uid), 0);
        assert_int_equal(get_route(&g, uid, NULL), 0);
    }
    assert_true(prev != 0);
    /* A user of another shard. */
    uint64_t foreign = UID(1, 1);
    while (directory_user_shard(foreign, n) == s) {
        foreign++;
    }
    assert_int_equal(get_route(&g, foreign, NULL), GS_EWRONGCELL);
    /* Unsharded: everything is shard 0. */
    assert_int_equal(directory_user_shard(foreign, 1), 0);
    assert_int_equal(directory_user_shard(foreign, 0), 0);
    directory_fsm_close(g.fsm);
}

/* ---------------------------------------------------------------- read, validate */

static void test_read_rejects(void **state)
{
    struct fx *f = *state;
    struct cell_result r;
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    uint8_t buf[64];
    size_t len = geoscale__reserve_username_request__pack(&sr, buf);
    assert_int_equal(directory_fsm_read(f->fsm, K(RESERVE_USERNAME), buf, len, &r), GS_EUNIMPL);
    assert_null(r.body);
    assert_int_equal(directory_fsm_read(f->fsm, 99, buf, len, &r), GS_EUNIMPL);
    assert_int_equal(directory_fsm_read(f->fsm, K(GET_ROUTE), NULL, 3, &r), GS_EINVAL);
    const uint8_t garbage[] = {0xff, 0xff};
    assert_int_equal(directory_fsm_read(f->fsm, K(GET_ROUTE), garbage, 2, &r), GS_EINVAL);
    Geoscale__LookupUsernameRequest lr = GEOSCALE__LOOKUP_USERNAME_REQUEST__INIT;
    lr.hash = (ProtobufCBinaryData){3, (uint8_t *)"abc"};
    len = geoscale__lookup_username_request__pack(&lr, buf);
    assert_int_equal(directory_fsm_read(f->fsm, K(LOOKUP_USERNAME), buf, len, &r), GS_EINVAL);
    assert_int_equal(r.status, GS_EINVAL);
}

static int validate(uint32_t kind, const ProtobufCMessage *m, char *err, size_t errlen)
{
    uint8_t buf[4096];
    assert_true(protobuf_c_message_get_packed_size(m) <= sizeof buf);
    size_t len = protobuf_c_message_pack(m, buf);
    return directory_validate_request(kind, buf, len, err, errlen);
}

static void test_validate(void **state)
{
    (void)state;
    char err[128];
    uint8_t h[32];
    hash_of(h, 1);
    Geoscale__ReserveUsernameRequest sr = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    sr.hash = (ProtobufCBinaryData){32, h};
    sr.region = "us-west";
    assert_int_equal(validate(K(RESERVE_USERNAME), &sr.base, err, sizeof err), 0);
    sr.region = "us_west";
    assert_int_equal(validate(K(RESERVE_USERNAME), &sr.base, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "region"));
    assert_null(strstr(err, "us_west")); /* never the value */
    sr.region = "eu";
    sr.hash.len = 31;
    assert_int_equal(validate(K(RESERVE_USERNAME), &sr.base, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "hash"));

    Geoscale__ConfirmUsernameRequest cr = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    cr.hash = (ProtobufCBinaryData){32, h};
    assert_int_equal(validate(K(CONFIRM_USERNAME), &cr.base, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "user_id"));
    cr.user_id = 5;
    assert_int_equal(validate(K(CONFIRM_USERNAME), &cr.base, err, sizeof err), 0);
    assert_int_equal(validate(K(RELEASE_USERNAME), &cr.base, err, sizeof err), 0);

    Geoscale__RegisterCellRequest rc = GEOSCALE__REGISTER_CELL_REQUEST__INIT;
    Geoscale__CellMember m1 = GEOSCALE__CELL_MEMBER__INIT, m2 = GEOSCALE__CELL_MEMBER__INIT;
    Geoscale__CellMember *mp[2] = {&m1, &m2};
    rc.cell_id = 3;
    rc.region = "eu";
    rc.n_members = 2;
    rc.members = mp;
    m1.node_id = 1;
    m2.node_id = 1;
    m1.raft_address = m2.raft_address = m1.client_address = m2.client_address = "";
    assert_int_equal(validate(K(REGISTER_CELL), &rc.base, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "duplicate"));
    m2.node_id = 0;
    assert_int_equal(validate(K(REGISTER_CELL), &rc.base, err, sizeof err), GS_EINVAL);
    m2.node_id = 2;
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    m2.raft_address = big;
    assert_int_equal(validate(K(REGISTER_CELL), &rc.base, err, sizeof err), GS_ETOOBIG);
    m2.raft_address = "127.0.0.1:9001";
    assert_int_equal(validate(K(REGISTER_CELL), &rc.base, err, sizeof err), 0);

    Geoscale__ListCellsRequest lc = GEOSCALE__LIST_CELLS_REQUEST__INIT;
    assert_int_equal(validate(K(LIST_CELLS), &lc.base, err, sizeof err), 0);
    Geoscale__SetCellAcceptingRequest sa = GEOSCALE__SET_CELL_ACCEPTING_REQUEST__INIT;
    assert_int_equal(validate(K(SET_CELL_ACCEPTING), &sa.base, err, sizeof err), GS_EINVAL);
    Geoscale__GetRouteRequest gr = GEOSCALE__GET_ROUTE_REQUEST__INIT;
    assert_int_equal(validate(K(GET_ROUTE), &gr.base, err, sizeof err), GS_EINVAL);

    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    assert_int_equal(directory_validate_request(K(GET_ROUTE), garbage, 3, err, sizeof err),
                     GS_EINVAL);
    assert_int_equal(directory_validate_request(99, garbage, 3, err, sizeof err), GS_EUNIMPL);
    assert_int_equal(directory_validate_request(K(UNSPECIFIED), NULL, 0, NULL, 0), GS_EUNIMPL);
    /* errmsg may be omitted. */
    assert_int_equal(directory_validate_request(K(LIST_CELLS), NULL, 0, NULL, 0), 0);
}

/* ---------------------------------------------------------------- entries */

static void test_entry_codec(void **state)
{
    (void)state;
    Geoscale__CellBatch *out = NULL;
    size_t len = 0;
    Geoscale__GetRouteRequest gr = GEOSCALE__GET_ROUTE_REQUEST__INIT;
    gr.user_id = 9;
    struct cmd c = {K(GET_ROUTE), 3, 4, &gr.base, NULL, 0};
    uint8_t *buf = encode(&c, 1, T0, &len);
    assert_int_equal(len % 8, 0);
    assert_int_equal(entry_decode(buf, len, &out), 0);
    assert_int_equal(out->timestamp_ms, T0);
    assert_int_equal(out->n_commands, 1);
    assert_int_equal(out->commands[0]->method, K(GET_ROUTE));
    assert_int_equal(out->commands[0]->client_seq, 4);
    geoscale__cell_batch__free_unpacked(out, NULL);

    /* A DirectoryBatch of the same commands packs to the same body bytes. */
    uint8_t gr_body[64];
    size_t gr_len = protobuf_c_message_pack(&gr.base, gr_body);
    Geoscale__DirectoryCommand dc = GEOSCALE__DIRECTORY_COMMAND__INIT;
    Geoscale__DirectoryCommand *dcp = &dc;
    dc.kind = (Geoscale__DirectoryCommandKind)K(GET_ROUTE);
    dc.client_id = 3;
    dc.client_seq = 4;
    dc.body.data = gr_body;
    dc.body.len = gr_len;
    Geoscale__DirectoryBatch db = GEOSCALE__DIRECTORY_BATCH__INIT;
    db.timestamp_ms = T0;
    db.proposer_id = 1;
    db.n_commands = 1;
    db.commands = &dcp;
    size_t db_len = protobuf_c_message_get_packed_size(&db.base);
    uint8_t *packed = malloc(db_len);
    assert_int_equal(protobuf_c_message_pack(&db.base, packed), db_len);
    assert_int_equal((ENTRY_HEADER_SIZE + db_len + 7) & ~(size_t)7, len);
    assert_memory_equal(buf + ENTRY_HEADER_SIZE, packed, db_len);
    free(packed);

    /* Strict: bad version, bad padding, short. */
    buf[0] = 2;
    assert_int_equal(entry_decode(buf, len, &out), GS_EPROTO);
    buf[0] = 1;
    if (len > 8 + (size_t)(buf[4])) {
        buf[len - 1] = 1;
        assert_int_equal(entry_decode(buf, len, &out), GS_EPROTO);
        buf[len - 1] = 0;
    }
    assert_int_equal(entry_decode(buf, 7, &out), GS_EPROTO);
    assert_int_equal(entry_decode(NULL, 8, &out), GS_EPROTO);
    free(buf);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_reopen_refuses),
        T(test_register_cell),
        T(test_set_accepting),
        T(test_placement),
        T(test_placement_many_cells),
        T(test_uniqueness),
        T(test_get_route),
        T(test_release),
        T(test_expiry_and_reuse),
        T(test_expiry_bounded),
        T(test_expiry_skips_no_tombstone),
        T(test_expired_takeover),
        T(test_version_bumps),
        T(test_routes_version),
        T(test_replay_and_idempotency),
        T(test_same_entries_same_digest),
        T(test_checkpoint_install),
        T(test_no_pii),
        T(test_sharding),
        T(test_read_rejects),
        T(test_validate),
        T(test_entry_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
