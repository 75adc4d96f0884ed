/*
 * Unit tests of the replicated-state-machine base (engine/rsm.h) over a real
 * RocksDB in a mkdtemp directory under /tmp (removed afterwards).
 */
#include <pthread.h>
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
#include "engine/checkpoint.h"
#include "engine/entry.h"
#include "engine/keys.h"
#include "engine/rsm.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"

#define GROUP 5
#define T0 INT64_C(1700000000000)

struct fx {
    char dir[64];
    char path[96];
    struct rsm r;
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static struct rsm_options opts_for(const char *path, uint64_t identity)
{
    struct rsm_options o = {.db_path = path,
                            .compression = false,
                            .kind = "cell",
                            .schema_version = 1,
                            .identity_key = KEY_SYS_CELL_ID,
                            .identity = identity};
    return o;
}

static void open_at(struct fx *f, uint64_t identity)
{
    struct rsm_options o = opts_for(f->path, identity);
    char err[256];
    int rv = rsm_open(&f->r, &o, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/gs_test_rsm_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/db", f->dir);
    open_at(f, GROUP);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    rsm_close(&f->r);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void key_of(struct key *k, uint64_t id)
{
    key_id(k, KEY_PREFIX_USER, id);
}

/* One entry that writes k(id) = v. */
static void put_entry(struct fx *f, uint64_t index, uint64_t id, uint64_t v)
{
    struct key k;
    assert_true(rsm_begin_entry(&f->r, index));
    key_of(&k, id);
    rsm_put_u64(&f->r, &k, v);
    assert_int_equal(rsm_commit_entry(&f->r, index), 0);
}

static int get(struct fx *f, uint64_t id, uint64_t *v)
{
    struct key k;
    key_of(&k, id);
    return rsm_get_u64(&f->r, &k, v);
}

struct digest {
    uint8_t d[32];
    uint64_t n;
};

/* The results expiry's cursor as stored (0: none). */
static int64_t expired_at(struct fx *f)
{
    struct key k;
    uint64_t v = 0;
    key_system(&k, KEY_SYS_RESULTS_EXPIRED);
    int rv = rsm_get_u64(&f->r, &k, &v);
    if (rv == GS_ENOTFOUND) {
        return 0;
    }
    assert_int_equal(rv, 0);
    return (int64_t)v;
}

/* Whether the DB itself holds k. */
static bool db_has(struct fx *f, const struct key *k)
{
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(f->r.db, f->r.readopts, (const char *)k->b, k->len, &len, &err);
    assert_null(err);
    rocksdb_free(v);
    return v != NULL;
}

static struct digest digest(struct fx *f)
{
    struct digest d;
    assert_int_equal(rsm_digest(&f->r, d.d, &d.n), 0);
    return d;
}

/* ---------------------------------------------------------------- open */

static void test_open_identity_and_schema(void **state)
{
    struct fx *f = *state;
    /* A new DB holds exactly the schema and identity keys. */
    assert_int_equal(rsm_applied_index(&f->r), 0);
    assert_int_equal(digest(f).n, 2);
    rsm_close(&f->r);

    struct rsm other;
    struct rsm_options o = opts_for(f->path, GROUP + 1);
    char err[256] = "";
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "belongs to cell 5"));
    rsm_close(&other); /* a failed open holds nothing */

    /* Another kind of group: its identity key is missing. */
    o = opts_for(f->path, GROUP);
    o.kind = "directory";
    o.identity_key = "directory_shard";
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "directory_shard"));

    /* Schema versions: an older DB opens and is stamped with the newer
     * number, which the older build then refuses; a newer one is refused. */
    o = opts_for(f->path, GROUP);
    o.schema_version = 2;
    assert_int_equal(rsm_open(&other, &o, NULL, 0), 0);
    struct key k;
    uint64_t schema = 0;
    key_system(&k, KEY_SYS_SCHEMA);
    assert_int_equal(rsm_get_u64(&other, &k, &schema), 0);
    assert_int_equal(schema, 2);
    rsm_close(&other);
    assert_int_equal(rsm_open(&other, &o, NULL, 0), 0); /* stamped once, opens again */
    rsm_close(&other);
    o.schema_version = 1;
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "schema 2 is not supported (this build: 1)"));
    o.schema_version = 2;
    rocksdb_options_t *ro = rocksdb_options_create();
    char *rerr = NULL;
    rocksdb_t *db = rocksdb_open(ro, f->path, &rerr);
    assert_null(rerr);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    uint8_t v[8];
    key_put_u64(v, 3);
    rocksdb_put(db, wo, (const char *)k.b, k.len, (const char *)v, 8, &rerr);
    assert_null(rerr);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(ro);
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "schema"));

    /* Bad options. */
    o.identity_key = NULL;
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EINVAL);
    o = opts_for("", GROUP);
    assert_int_equal(rsm_open(&other, &o, err, sizeof err), GS_EINVAL);

    /* Teardown closes f->r again: reopen at schema 3 is refused, so
     * recreate a valid one elsewhere. */
    snprintf(f->path, sizeof f->path, "%s/db2", f->dir);
    open_at(f, GROUP);
}

/* ---------------------------------------------------------------- entries */

static void test_applied_index_persists(void **state)
{
    struct fx *f = *state;
    put_entry(f, 1, 1, 100);
    put_entry(f, 7, 2, 200); /* indexes may jump (other entry types) */
    assert_int_equal(rsm_applied_index(&f->r), 7);
    rsm_close(&f->r);
    open_at(f, GROUP);
    assert_int_equal(rsm_applied_index(&f->r), 7);
    uint64_t v = 0;
    assert_int_equal(get(f, 2, &v), 0);
    assert_int_equal(v, 200);
    /* An empty entry still advances and persists the index. */
    assert_true(rsm_begin_entry(&f->r, 8));
    assert_int_equal(rsm_commit_entry(&f->r, 8), 0);
    rsm_close(&f->r);
    open_at(f, GROUP);
    assert_int_equal(rsm_applied_index(&f->r), 8);
}

static void test_replay_skipped(void **state)
{
    struct fx *f = *state;
    put_entry(f, 1, 1, 100);
    put_entry(f, 2, 1, 101);
    struct digest before = digest(f);
    for (uint64_t i = 0; i <= 2; i++) {
        assert_false(rsm_begin_entry(&f->r, i));
    }
    assert_int_equal(rsm_applied_index(&f->r), 2);
    rsm_close(&f->r);
    open_at(f, GROUP);
    assert_false(rsm_begin_entry(&f->r, 2));
    assert_true(rsm_begin_entry(&f->r, 3));
    rsm_abort_entry(&f->r);
    uint64_t v = 0;
    assert_int_equal(get(f, 1, &v), 0);
    assert_int_equal(v, 101);
    struct digest after = digest(f);
    assert_int_equal(after.n, before.n);
    assert_memory_equal(after.d, before.d, 32);
}

static void test_abort_writes_nothing(void **state)
{
    struct fx *f = *state;
    struct digest before = digest(f);
    struct key k;
    assert_true(rsm_begin_entry(&f->r, 1));
    key_of(&k, 1);
    rsm_put(&f->r, &k, "x", 1);
    rsm_abort_entry(&f->r);
    assert_int_equal(rsm_applied_index(&f->r), 0);
    uint64_t v = 0;
    assert_int_equal(get(f, 1, &v), GS_ENOTFOUND);
    struct digest after = digest(f);
    assert_memory_equal(after.d, before.d, 32);
    /* The same index can then be applied. */
    put_entry(f, 1, 1, 5);
    assert_int_equal(get(f, 1, &v), 0);
}

static void test_read_your_writes(void **state)
{
    struct fx *f = *state;
    put_entry(f, 1, 1, 100);
    put_entry(f, 1 + 1, 3, 300);
    struct key k;
    uint64_t v = 0;
    bool exists = true;
    assert_true(rsm_begin_entry(&f->r, 3));
    /* A write is visible to the next read of the same entry ... */
    key_of(&k, 2);
    rsm_put_u64(&f->r, &k, 200);
    assert_int_equal(get(f, 2, &v), 0);
    assert_int_equal(v, 200);
    /* ... as are overwrites and deletes of DB rows. */
    key_of(&k, 1);
    rsm_put_u64(&f->r, &k, 111);
    assert_int_equal(get(f, 1, &v), 0);
    assert_int_equal(v, 111);
    key_of(&k, 3);
    rsm_delete(&f->r, &k);
    assert_int_equal(rsm_exists(&f->r, &k, &exists), 0);
    assert_false(exists);
    /* The merged iterator sees DB + batch: ids 1 and 2, not 3. */
    rocksdb_iterator_t *it = rsm_iter(&f->r);
    key_id(&k, KEY_PREFIX_USER, 0);
    uint64_t seen[4];
    size_t n = 0;
    for (rocksdb_iter_seek(it, (const char *)k.b, k.len); rocksdb_iter_valid(it) && n < 4;
         rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *raw = rocksdb_iter_key(it, &klen);
        uint64_t id = 0;
        if (!key_decode_id(raw, klen, KEY_PREFIX_USER, &id)) {
            break;
        }
        seen[n++] = id;
    }
    assert_int_equal(rsm_iter_status(it), 0);
    rocksdb_iter_destroy(it);
    assert_int_equal(n, 2);
    assert_int_equal(seen[0], 1);
    assert_int_equal(seen[1], 2);
    /* Outside the entry nothing of it is visible before the commit. */
    assert_int_equal(rsm_commit_entry(&f->r, 3), 0);
    assert_int_equal(get(f, 1, &v), 0);
    assert_int_equal(v, 111);
    assert_int_equal(get(f, 3, &v), GS_ENOTFOUND);
}

/* Scan ids 0..n-1 of the user prefix through rsm_iter; model[i] the value
 * expected, or -1 for none. */
static void check_scan(struct fx *f, const int64_t *model, size_t n)
{
    struct key k;
    int64_t seen[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        seen[i] = -1;
    }
    rocksdb_iterator_t *it = rsm_iter(&f->r);
    key_id(&k, KEY_PREFIX_USER, 0);
    for (rocksdb_iter_seek(it, (const char *)k.b, k.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *raw = rocksdb_iter_key(it, &klen);
        const char *val = rocksdb_iter_value(it, &vlen);
        uint64_t id = 0;
        if (!key_decode_id(raw, klen, KEY_PREFIX_USER, &id)) {
            break;
        }
        assert_true(id < n);
        assert_int_equal(vlen, 8);
        seen[id] = (int64_t)key_get_u64((const uint8_t *)val);
    }
    assert_int_equal(rsm_iter_status(it), 0);
    rocksdb_iter_destroy(it);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(seen[i], model[i]);
    }
}

/* Entries of random puts, deletes, reads and scans (a scan after a write
 * moves the entry to the indexed batch), some aborted, against a model:
 * every read inside an entry sees the entry's writes, an abort leaves
 * nothing (in the DB or in the row cache), a commit leaves exactly the
 * model's state. Seeded. */
static void test_entries_match_model(void **state)
{
    struct fx *f = *state;
    enum { KEYS = 48, ENTRIES = 400 };
    int64_t committed[KEYS], cur[KEYS];
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint64_t index = 0;
    struct key k;
    for (size_t i = 0; i < KEYS; i++) {
        committed[i] = -1;
    }
#define NEXT() (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL, seed >> 33)
    for (int e = 0; e < ENTRIES; e++) {
        memcpy(cur, committed, sizeof cur);
        index++;
        assert_true(rsm_begin_entry(&f->r, index));
        int ops = 1 + (int)(NEXT() % 40);
        for (int o = 0; o < ops; o++) {
            uint64_t id = NEXT() % KEYS;
            unsigned what = (unsigned)(NEXT() % 100);
            key_of(&k, id);
            if (what < 45) {
                uint64_t v = NEXT() % 1000000;
                rsm_put_u64(&f->r, &k, v);
                cur[id] = (int64_t)v;
            } else if (what < 60) {
                rsm_delete(&f->r, &k);
                cur[id] = -1;
            } else if (what < 92) {
                uint64_t v = 0;
                int rv = rsm_get_u64(&f->r, &k, &v);
                if (cur[id] < 0) {
                    assert_int_equal(rv, GS_ENOTFOUND);
                } else {
                    assert_int_equal(rv, 0);
                    assert_int_equal(v, (uint64_t)cur[id]);
                }
            } else {
                check_scan(f, cur, KEYS);
            }
        }
        if (NEXT() % 10 == 0) {
            rsm_abort_entry(&f->r);
            index--;
        } else {
            assert_int_equal(rsm_commit_entry(&f->r, index), 0);
            memcpy(committed, cur, sizeof cur);
        }
        /* Outside the entry: the committed state, by scan (the DB) and by
         * point reads (through the row cache). */
        check_scan(f, committed, KEYS);
        for (uint64_t id = 0; id < KEYS; id++) {
            uint64_t v = 0;
            int rv = get(f, id, &v);
            if (committed[id] < 0) {
                assert_int_equal(rv, GS_ENOTFOUND);
            } else {
                assert_int_equal(rv, 0);
                assert_int_equal(v, (uint64_t)committed[id]);
            }
        }
    }
    /* The reads above were mostly answered by the cache. */
    assert_true(f->r.cache.hits > f->r.cache.misses);
#undef NEXT
    assert_int_equal(rsm_applied_index(&f->r), index);
    /* And after a reopen. */
    rsm_close(&f->r);
    open_at(f, GROUP);
    assert_int_equal(rsm_applied_index(&f->r), index);
    check_scan(f, committed, KEYS);
}

/* An entry whose writes are all empty values (a time-index row, the stored
 * result of an empty response) writes them, not tombstones. */
static void test_empty_values(void **state)
{
    struct fx *f = *state;
    struct key k;
    char *v = NULL;
    size_t len = 1;
    assert_true(rsm_begin_entry(&f->r, 1));
    key_of(&k, 9);
    rsm_put(&f->r, &k, "", 0);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    assert_int_equal(rsm_get(&f->r, &k, &v, &len), 0);
    assert_int_equal(len, 0);
    free(v);
    /* Read from the DB, not only from the row cache. */
    rsm_close(&f->r);
    open_at(f, GROUP);
    v = NULL;
    len = 1;
    assert_int_equal(rsm_get(&f->r, &k, &v, &len), 0);
    assert_int_equal(len, 0);
    free(v);
}

/* Entries larger than the batches keep between entries (a plain one
 * committed, an indexed one aborted), then small ones: the replaced
 * batches work as before. */
static void test_large_entries(void **state)
{
    struct fx *f = *state;
    enum { N = 100, V = 64 * 1024 };
    char *big = malloc(V);
    assert_non_null(big);
    struct key k;
    uint64_t v = 0;
    for (int round = 0; round < 2; round++) {
        memset(big, 'a' + round, V);
        assert_true(rsm_begin_entry(&f->r, (uint64_t)round + 1));
        for (uint64_t id = 0; id < N; id++) {
            key_of(&k, 1000 + id);
            rsm_put(&f->r, &k, big, V);
        }
        if (round == 0) {
            assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
        } else {
            rocksdb_iter_destroy(rsm_iter(&f->r)); /* to the indexed batch */
            key_of(&k, 5000);
            rsm_put(&f->r, &k, big, V);
            rsm_abort_entry(&f->r);
        }
    }
    put_entry(f, 2, 7, 77);
    put_entry(f, 3, 8, 88);
    assert_int_equal(get(f, 7, &v), 0);
    assert_int_equal(v, 77);
    assert_int_equal(get(f, 8, &v), 0);
    assert_int_equal(v, 88);
    char *val = NULL;
    size_t len = 0;
    key_of(&k, 1000 + N - 1);
    assert_int_equal(rsm_get(&f->r, &k, &val, &len), 0);
    assert_int_equal(len, V);
    assert_int_equal(val[0], 'a');
    free(val);
    key_of(&k, 5000);
    assert_int_equal(rsm_get(&f->r, &k, &val, &len), GS_ENOTFOUND);
    free(big);
}

static void test_get_msg_and_corrupt(void **state)
{
    struct fx *f = *state;
    Geoscale__EdgeCounts c = GEOSCALE__EDGE_COUNTS__INIT;
    c.followers = 3;
    struct key k;
    ProtobufCMessage *m = NULL;
    assert_true(rsm_begin_entry(&f->r, 1));
    key_of(&k, 1);
    assert_int_equal(rsm_put_msg(&f->r, &k, &c.base), 0);
    key_of(&k, 2);
    rsm_put(&f->r, &k, "\xff\xff\xff", 3);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    key_of(&k, 1);
    assert_int_equal(rsm_get_msg(&f->r, &k, &geoscale__edge_counts__descriptor, &m), 0);
    assert_int_equal(((Geoscale__EdgeCounts *)m)->followers, 3);
    protobuf_c_message_free_unpacked(m, NULL);
    key_of(&k, 2);
    assert_int_equal(rsm_get_msg(&f->r, &k, &geoscale__edge_counts__descriptor, &m), GS_EIO);
    uint64_t v = 0;
    assert_int_equal(rsm_get_u64(&f->r, &k, &v), GS_EIO); /* not 8 bytes */
    key_of(&k, 3);
    assert_int_equal(rsm_get_msg(&f->r, &k, &geoscale__edge_counts__descriptor, &m), GS_ENOTFOUND);
}

/* ---------------------------------------------------------------- digest */

static void test_digest_excludes_applied_index(void **state)
{
    struct fx *f = *state;
    struct fx g;
    memset(&g, 0, sizeof g);
    strcpy(g.dir, f->dir);
    snprintf(g.path, sizeof g.path, "%s/db_g", f->dir);
    open_at(&g, GROUP);
    put_entry(f, 1, 1, 100);
    put_entry(&g, 4, 1, 100); /* same data at another index */
    struct digest a = digest(f), b = digest(&g);
    assert_int_equal(a.n, 3); /* schema, identity, the row */
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.d, b.d, 32);
    /* Data counts. */
    put_entry(&g, 5, 1, 101);
    b = digest(&g);
    assert_memory_not_equal(a.d, b.d, 32);
    /* So does the identity. */
    rsm_close(&g.r);
    snprintf(g.path, sizeof g.path, "%s/db_h", f->dir);
    open_at(&g, GROUP + 1);
    put_entry(&g, 1, 1, 100);
    b = digest(&g);
    assert_memory_not_equal(a.d, b.d, 32);
    rsm_close(&g.r);
}

/* A digest begun before more entries are applied, and scanned on another
 * thread afterwards, is the digest of the state at its beginning; close
 * waits for a scan still running. */
static void *digest_thread(void *arg)
{
    rsm_digest_run(arg);
    return NULL;
}

static void test_digest_off_thread(void **state)
{
    struct fx *f = *state;
    struct rsm_digest_job job;
    pthread_t t;
    put_entry(f, 1, 1, 100);
    struct digest before = digest(f);
    uint64_t applied = rsm_applied_index(&f->r);
    assert_int_equal(rsm_digest_begin(&f->r, &job), 0);
    assert_int_equal(job.applied_index, applied);
    put_entry(f, 2, 2, 200); /* after the snapshot */
    struct digest after = digest(f);
    assert_memory_not_equal(before.d, after.d, 32);
    assert_int_equal(pthread_create(&t, NULL, digest_thread, &job), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(job.status, 0);
    assert_int_equal(job.n_keys, before.n);
    assert_memory_equal(job.digest, before.d, 32);
    /* A scan still running when the DB closes: the close waits for it. */
    assert_int_equal(rsm_digest_begin(&f->r, &job), 0);
    assert_int_equal(pthread_create(&t, NULL, digest_thread, &job), 0);
    rsm_close(&f->r);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(job.status, 0);
    assert_memory_equal(job.digest, after.d, 32);
    open_at(f, GROUP); /* for the teardown */
}

/* ---------------------------------------------------------------- idempotency */

static void test_results(void **state)
{
    struct fx *f = *state;
    bool found = true;
    int status = 1;
    uint8_t *body = NULL;
    size_t len = 0;
    assert_true(rsm_begin_entry(&f->r, 1));
    assert_int_equal(rsm_result_get(&f->r, 9, 1, &found, &status, &body, &len, NULL), 0);
    assert_false(found);
    assert_int_equal(rsm_result_put(&f->r, T0, 9, 1, 0, (const uint8_t *)"abc", 3, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0, 9, 2, GS_EEXIST, (const uint8_t *)"zz", 2, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0, 9, 3, 0, NULL, 0, NULL), 0);
    /* Visible inside the same entry. */
    assert_int_equal(rsm_result_get(&f->r, 9, 1, &found, &status, &body, &len, NULL), 0);
    assert_true(found);
    assert_int_equal(status, 0);
    assert_int_equal(len, 3);
    assert_memory_equal(body, "abc", 3);
    free(body);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    /* And after reopen. */
    rsm_close(&f->r);
    open_at(f, GROUP);
    body = NULL;
    assert_int_equal(rsm_result_get(&f->r, 9, 2, &found, &status, &body, &len, NULL), 0);
    assert_true(found);
    assert_int_equal(status, GS_EEXIST);
    assert_null(body); /* no body for a failure */
    assert_int_equal(rsm_result_get(&f->r, 9, 3, &found, &status, &body, &len, NULL), 0);
    assert_true(found);
    assert_int_equal(status, 0);
    assert_non_null(body); /* an empty success still has a buffer */
    assert_int_equal(len, 0);
    free(body);
    assert_int_equal(rsm_result_get(&f->r, 8, 1, &found, &status, &body, &len, NULL), 0);
    assert_false(found);
    /* A row per result ('R'), one for the entry's time index ('r'). */
    assert_int_equal(digest(f).n, 2 + 3 + 1);
}

/* Whether (client, seq) has a stored outcome, per rsm_result_get(). */
static bool result_found(struct fx *f, uint64_t client, uint64_t seq)
{
    bool found = false;
    int status = 0;
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(rsm_result_get(&f->r, client, seq, &found, &status, &body, &len, NULL), 0);
    free(body);
    return found;
}

static uint64_t mark_of(struct fx *f, uint64_t client)
{
    uint64_t m = UINT64_MAX;
    assert_true(rmarks_get(&f->r.marks, client, &m));
    return m;
}

/* A client's mark is learnt from the DB (its highest stored seq, not a
 * neighbour's), raised by committed outcomes, and answers for seqs above
 * it without reading the DB; an outcome written in the same entry is seen
 * whatever the mark; reopen, detach and attach forget the marks. */
static void test_result_marks(void **state)
{
    struct fx *f = *state;
    /* Neighbours of client 7 in key order: 6 below, 8 above. */
    assert_true(rsm_begin_entry(&f->r, 1));
    assert_int_equal(rsm_result_put(&f->r, T0, 6, 50, 0, (const uint8_t *)"a", 1, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0, 8, 60, 0, (const uint8_t *)"b", 1, NULL), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    assert_false(rmarks_get(&f->r.marks, 7, &(uint64_t){0}));
    assert_false(result_found(f, 7, 1));
    assert_int_equal(mark_of(f, 7), 0);
    assert_true(result_found(f, 6, 50));
    assert_int_equal(mark_of(f, 6), 50);

    /* Committed outcomes raise the mark; lower seqs are still read. */
    assert_true(rsm_begin_entry(&f->r, 2));
    for (uint64_t s = 1; s <= 3; s++) {
        assert_int_equal(rsm_result_put(&f->r, T0, 7, s, 0, (const uint8_t *)"x", 1, NULL), 0);
    }
    /* In the entry that wrote it, an outcome above the mark is found. */
    assert_true(result_found(f, 7, 3));
    assert_int_equal(mark_of(f, 7), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 2), 0);
    assert_int_equal(mark_of(f, 7), 3);
    assert_true(result_found(f, 7, 2));
    assert_false(result_found(f, 7, 4));

    /* Above the mark the DB is not read: a row written behind the rsm's
     * back (which the invariant rules out) is not seen until the marks
     * are forgotten and learnt again. */
    struct key k;
    char *err = NULL;
    key_pair(&k, KEY_PREFIX_RESULT, 7, 10);
    rocksdb_put(f->r.db, f->r.writeopts, (const char *)k.b, k.len, "", 0, &err);
    assert_null(err);
    assert_false(result_found(f, 7, 10));
    rmarks_clear(&f->r.marks);
    assert_int_equal(f->r.marks.n, 0);
    assert_false(result_found(f, 7, 11));
    assert_int_equal(mark_of(f, 7), 10);

    /* Reopen: no marks, learnt again from what is stored. */
    rsm_close(&f->r);
    open_at(f, GROUP);
    assert_int_equal(f->r.marks.n, 0);
    assert_true(result_found(f, 7, 3));
    assert_int_equal(mark_of(f, 7), 10);
    rsm_detach(&f->r);
    assert_int_equal(f->r.marks.n, 0);
    /* Attach forgets too: nothing known of a detached DB holds for the
     * one attached (a checkpoint installed in between). */
    rmarks_set(&f->r.marks, 8, 1000);
    char msg[256] = "";
    assert_int_equal(rsm_attach(&f->r, msg, sizeof msg), 0);
    assert_int_equal(f->r.marks.n, 0);
    assert_true(result_found(f, 8, 60));
    assert_false(result_found(f, 8, 61));
    assert_int_equal(mark_of(f, 8), 60);
}

/* The pairs of time index row 'r' ts 0 index, as stored (0: no row). */
static size_t index_row_pairs(struct fx *f, int64_t ts, uint64_t index, uint8_t *pairs,
                              size_t max)
{
    struct key tk;
    char *err = NULL;
    size_t len = 0;
    key_result_time(&tk, ts, 0, index);
    char *v = rocksdb_get(f->r.db, f->r.readopts, (const char *)tk.b, tk.len, &len, &err);
    assert_null(err);
    if (v == NULL) {
        return 0;
    }
    assert_int_equal(len % 16, 0);
    assert_true(len / 16 <= max);
    memcpy(pairs, v, len);
    rocksdb_free(v);
    return len / 16;
}

static void test_results_expire(void **state)
{
    struct fx *f = *state;
    uint8_t pairs[16 * 8];
    assert_true(rsm_begin_entry(&f->r, 1));
    for (uint64_t s = 1; s <= 10; s++) {
        /* seq 1..5 at T0, 6..10 at T0 + 1000 */
        int64_t ts = s <= 5 ? T0 : T0 + 1000;
        assert_int_equal(rsm_result_put(&f->r, ts, 4, s, 0, (const uint8_t *)"x", 1, NULL), 0);
    }
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    /* One index row per batch time of the entry, listing its outcomes. */
    assert_int_equal(index_row_pairs(f, T0, 1, pairs, 8), 5);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(key_get_u64(pairs + 16 * i), 4);
        assert_int_equal(key_get_u64(pairs + 16 * i + 8), i + 1);
    }
    assert_int_equal(index_row_pairs(f, T0 + 1000, 1, pairs, 8), 5);
    assert_int_equal(digest(f).n, 2 + 10 + 2);
    const int64_t ttl = 60000;
    /* Not yet: a row is kept for ttl_ms of batch time. */
    assert_true(rsm_begin_entry(&f->r, 2));
    assert_int_equal(rsm_results_expire(&f->r, T0 + ttl, ttl, 100), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 2), 0);
    assert_int_equal(digest(f).n, 2 + 10 + 2);
    assert_int_equal(expired_at(f), 0);
    /* Bounded: at most 3 outcomes per call, the oldest first; their row
     * is kept with the other two; the walk's cursor (one more row) is the
     * time of that row. */
    assert_true(rsm_begin_entry(&f->r, 3));
    assert_int_equal(rsm_results_expire(&f->r, T0 + ttl + 1, ttl, 3), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 3), 0);
    assert_int_equal(digest(f).n, 2 + 7 + 2 + 1);
    assert_int_equal(expired_at(f), T0);
    assert_int_equal(index_row_pairs(f, T0, 1, pairs, 8), 2);
    assert_int_equal(key_get_u64(pairs + 8), 4);
    assert_int_equal(key_get_u64(pairs + 24), 5);
    assert_false(result_found(f, 4, 3));
    assert_true(result_found(f, 4, 4));
    /* Only rows older than the cutoff: 4 and 5, not 6..10. */
    assert_true(rsm_begin_entry(&f->r, 4));
    assert_int_equal(rsm_results_expire(&f->r, T0 + ttl + 1, ttl, 100), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 4), 0);
    assert_int_equal(digest(f).n, 2 + 5 + 1 + 1);
    assert_int_equal(index_row_pairs(f, T0, 1, pairs, 8), 0);
    assert_true(rsm_begin_entry(&f->r, 5));
    assert_int_equal(rsm_results_expire(&f->r, T0 + 1000 + ttl + 1, ttl, 100), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 5), 0);
    assert_int_equal(digest(f).n, 2 + 1);
    assert_int_equal(expired_at(f), T0 + 1000);

    /* A batch time behind the cursor (a new leader's clock behind) is
     * indexed at the cursor, where the walk still finds it. */
    assert_true(rsm_begin_entry(&f->r, 6));
    assert_int_equal(rsm_result_put(&f->r, T0, 4, 11, 0, (const uint8_t *)"x", 1, NULL), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 6), 0);
    assert_int_equal(index_row_pairs(f, T0 + 1000, 6, pairs, 8), 1);
    assert_true(rsm_begin_entry(&f->r, 7));
    assert_int_equal(rsm_results_expire(&f->r, T0 + 1000 + ttl + 1, ttl, 100), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 7), 0);
    assert_int_equal(index_row_pairs(f, T0 + 1000, 6, pairs, 8), 0);
    assert_int_equal(digest(f).n, 2 + 1);
}

/* An entry's index row holds the outcomes stored at its time in the order
 * stored, also when another time came in between; iterators inside the
 * entry see it before the commit; client_id 0 is refused, nothing
 * written. */
static void test_results_index_row(void **state)
{
    struct fx *f = *state;
    uint8_t pairs[16 * 4];
    struct key tk;
    assert_true(rsm_begin_entry(&f->r, 9));
    assert_int_equal(rsm_result_put(&f->r, T0, 3, 1, 0, NULL, 0, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0 + 5, 3, 2, 0, NULL, 0, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0, 2, 7, GS_EEXIST, NULL, 0, NULL), 0);
    assert_int_equal(rsm_result_put(&f->r, T0, 0, 8, 0, NULL, 0, NULL), GS_EINVAL);
    key_result_time(&tk, T0, 0, 9);
    rocksdb_iterator_t *it = rsm_iter(&f->r);
    rocksdb_iter_seek(it, (const char *)tk.b, tk.len);
    assert_true(rocksdb_iter_valid(it));
    size_t klen = 0, vlen = 0;
    const char *kraw = rocksdb_iter_key(it, &klen);
    assert_int_equal(klen, tk.len);
    assert_memory_equal(kraw, tk.b, tk.len);
    rocksdb_iter_value(it, &vlen);
    assert_int_equal(vlen, 32); /* (3, 1), and (2, 7) written for the iterator */
    rocksdb_iter_destroy(it);
    assert_int_equal(rsm_commit_entry(&f->r, 9), 0);
    assert_int_equal(index_row_pairs(f, T0, 9, pairs, 4), 2);
    assert_int_equal(key_get_u64(pairs), 3);
    assert_int_equal(key_get_u64(pairs + 8), 1);
    assert_int_equal(key_get_u64(pairs + 16), 2);
    assert_int_equal(key_get_u64(pairs + 24), 7);
    assert_int_equal(index_row_pairs(f, T0 + 5, 9, pairs, 4), 1);
    assert_int_equal(digest(f).n, 2 + 3 + 2);
    /* An aborted entry's pending outcomes go with it. */
    assert_true(rsm_begin_entry(&f->r, 10));
    assert_int_equal(rsm_result_put(&f->r, T0, 3, 3, 0, NULL, 0, NULL), 0);
    rsm_abort_entry(&f->r);
    assert_true(rsm_begin_entry(&f->r, 10));
    assert_int_equal(rsm_commit_entry(&f->r, 10), 0);
    assert_int_equal(index_row_pairs(f, T0, 10, pairs, 4), 0);
    assert_int_equal(digest(f).n, 2 + 3 + 2);
}

/* A schema 1 DB's rows, one per outcome ('r' ts client_id client_seq with an
 * empty value), expire as they did, in time order with the rows of this
 * schema. */
static void test_results_expire_schema1_rows(void **state)
{
    struct fx *f = *state;
    const int64_t ttl = 60000;
    struct key k;
    char *err = NULL;
    for (uint64_t s = 1; s <= 3; s++) {
        key_pair(&k, KEY_PREFIX_RESULT, 6, s);
        rocksdb_put(f->r.db, f->r.writeopts, (const char *)k.b, k.len, "\x08\x00", 2, &err);
        assert_null(err);
        key_result_time(&k, T0 + (int64_t)s * 10, 6, s);
        rocksdb_put(f->r.db, f->r.writeopts, (const char *)k.b, k.len, "", 0, &err);
        assert_null(err);
    }
    /* Between the old rows in time: T0 + 15. */
    assert_true(rsm_begin_entry(&f->r, 1));
    assert_int_equal(rsm_result_put(&f->r, T0 + 15, 7, 1, 0, NULL, 0, NULL), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    assert_int_equal(digest(f).n, 2 + 6 + 2);
    /* Three outcomes: old (6, 1), new (7, 1), old (6, 2); (6, 3) stays. */
    assert_true(rsm_begin_entry(&f->r, 2));
    assert_int_equal(rsm_results_expire(&f->r, T0 + 100 + ttl, ttl, 3), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 2), 0);
    assert_int_equal(expired_at(f), T0 + 20);
    assert_false(result_found(f, 6, 1));
    assert_false(result_found(f, 7, 1));
    assert_false(result_found(f, 6, 2));
    assert_true(result_found(f, 6, 3));
    key_result_time(&k, T0 + 30, 6, 3);
    assert_true(db_has(f, &k));
    assert_int_equal(digest(f).n, 2 + 2 + 1);
    assert_true(rsm_begin_entry(&f->r, 3));
    assert_int_equal(rsm_results_expire(&f->r, T0 + 100 + ttl, ttl, 3), 0);
    assert_int_equal(rsm_commit_entry(&f->r, 3), 0);
    assert_false(db_has(f, &k));
    assert_false(result_found(f, 6, 3));
    assert_int_equal(digest(f).n, 2 + 1);
}

/* Expiry starts where the last one stopped: it steps over none of the
 * tombstones of the rows expired before it, however many. */
static void test_results_expire_skips_no_tombstone(void **state)
{
    struct fx *f = *state;
    const int64_t ttl = 60000;
    uint64_t index = 1;
    for (uint64_t s = 1; s <= 400; s += 4) {
        assert_true(rsm_begin_entry(&f->r, index));
        for (uint64_t i = 0; i < 4; i++) {
            int64_t ts = T0 + (int64_t)(s + i);
            assert_int_equal(rsm_result_put(&f->r, ts, 4, s + i, 0, (const uint8_t *)"x", 1, NULL), 0);
        }
        assert_int_equal(rsm_commit_entry(&f->r, index), 0);
        index++;
    }
    /* 400 rows, expired 8 per entry: 392 tombstones before the last walk. */
    for (int e = 0; e < 49; e++) {
        assert_true(rsm_begin_entry(&f->r, index));
        assert_int_equal(rsm_results_expire(&f->r, T0 + 1000 + ttl, ttl, 8), 0);
        assert_int_equal(rsm_commit_entry(&f->r, index), 0);
        index++;
    }
    assert_int_equal(expired_at(f), T0 + 392);
    rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
    rocksdb_set_perf_level(rocksdb_enable_count);
    rocksdb_perfcontext_reset(pc);
    assert_true(rsm_begin_entry(&f->r, index));
    assert_int_equal(rsm_results_expire(&f->r, T0 + 1000 + ttl, ttl, 8), 0);
    assert_int_equal(rsm_commit_entry(&f->r, index), 0);
    uint64_t skipped = rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
    rocksdb_set_perf_level(rocksdb_disable);
    rocksdb_perfcontext_destroy(pc);
    assert_true(skipped < 5); /* 784 ('R' and 'r') when a walk starts at the index's first key */
    assert_int_equal(expired_at(f), T0 + 400);
    assert_int_equal(digest(f).n, 2 + 1);
}

/* ---------------------------------------------------------------- checkpoint hooks */

static void test_detach_attach(void **state)
{
    struct fx *f = *state;
    put_entry(f, 3, 1, 100);
    rsm_detach(&f->r);
    assert_null(f->r.db);
    assert_int_equal(rsm_applied_index(&f->r), 0);
    char err[256] = "";
    assert_int_equal(rsm_attach(&f->r, err, sizeof err), 0);
    assert_int_equal(rsm_applied_index(&f->r), 3);
    uint64_t v = 0;
    assert_int_equal(get(f, 1, &v), 0);
    assert_int_equal(v, 100);

    /* Attaching a directory that holds another group's DB fails and leaves
     * the rsm without a DB; the real one then attaches again. */
    rsm_detach(&f->r);
    char moved[128];
    snprintf(moved, sizeof moved, "%s.mine", f->path);
    assert_int_equal(rename(f->path, moved), 0);
    struct rsm other;
    struct rsm_options o = opts_for(f->path, GROUP + 1);
    assert_int_equal(rsm_open(&other, &o, NULL, 0), 0);
    rsm_close(&other);
    assert_int_equal(rsm_attach(&f->r, err, sizeof err), GS_EINVAL);
    assert_null(f->r.db);
    assert_non_null(strstr(err, "belongs to"));
    /* Missing: not created. */
    char gone[128];
    snprintf(gone, sizeof gone, "%s.other", f->path);
    assert_int_equal(rename(f->path, gone), 0);
    assert_int_equal(rsm_attach(&f->r, err, sizeof err), GS_EIO);
    assert_null(f->r.db);
    /* RocksDB may leave an empty directory (its LOG) behind. */
    nftw(f->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(rename(moved, f->path), 0);
    assert_int_equal(rsm_attach(&f->r, err, sizeof err), 0);
    assert_int_equal(rsm_applied_index(&f->r), 3);
}

static void test_probe(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    uint64_t applied = 99;
    put_entry(f, 4, 1, 100);
    assert_int_equal(rsm_sync(&f->r), 0);

    /* A DB of another rsm of the same group: accepted, its index read, the
     * probing rsm untouched. */
    char copy[128];
    snprintf(copy, sizeof copy, "%s/copy", f->dir);
    struct rsm twin;
    struct rsm_options o = opts_for(copy, GROUP);
    assert_int_equal(rsm_open(&twin, &o, NULL, 0), 0);
    rsm_close(&twin);
    assert_int_equal(rsm_probe(&f->r, copy, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(rsm_applied_index(&f->r), 4);

    /* Another group's identity, another kind of group, no DB at all: refused. */
    char other[128];
    snprintf(other, sizeof other, "%s/other", f->dir);
    o = opts_for(other, GROUP + 1);
    assert_int_equal(rsm_open(&twin, &o, NULL, 0), 0);
    rsm_close(&twin);
    assert_int_equal(rsm_probe(&f->r, other, &applied, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "belongs to"));

    char kind[128];
    snprintf(kind, sizeof kind, "%s/kind", f->dir);
    o = opts_for(kind, GROUP);
    o.kind = "directory";
    o.identity_key = "directory_shard";
    assert_int_equal(rsm_open(&twin, &o, NULL, 0), 0);
    rsm_close(&twin);
    assert_int_equal(rsm_probe(&f->r, kind, &applied, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "cell_id"));

    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing", f->dir);
    assert_int_equal(rsm_probe(&f->r, missing, &applied, err, sizeof err), GS_EINVAL);
    assert_int_equal(rsm_applied_index(&f->r), 4);
}

/* ---------------------------------------------------------------- point rows */

/* opts_for() with point rows: 'U' keys of KEY_ID_LEN bytes. */
static struct rsm_options point_opts_for(const char *path, uint64_t schema)
{
    struct rsm_options o = opts_for(path, GROUP);
    o.schema_version = schema;
    o.point_prefix = KEY_PREFIX_USER;
    o.point_key_len = KEY_ID_LEN;
    return o;
}

/* Whether k is in column family i of r, as committed. */
static bool cf_has(struct rsm *r, int i, const struct key *k)
{
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get_cf(r->db, r->readopts, r->cf[i], (const char *)k->b, k->len, &len, &err);
    assert_null(err);
    rocksdb_free(v);
    return v != NULL;
}

/* Point rows live in their own column family, through both commit paths
 * (a plain entry, and one whose writes went to the indexed batch for an
 * iterator); reads, deletes, the digest and reopen see them there; other
 * keys, a 'U' key of another length among them, stay in the default. */
static void test_point_rows(void **state)
{
    struct fx *f = *state;
    rsm_close(&f->r);
    snprintf(f->path, sizeof f->path, "%s/point", f->dir);
    struct rsm_options o = point_opts_for(f->path, 1);
    assert_int_equal(rsm_open(&f->r, &o, NULL, 0), 0);
    assert_non_null(f->r.cf[1]);
    struct key u1, u2, t1, longer;
    key_id(&u1, KEY_PREFIX_USER, 1);
    key_id(&u2, KEY_PREFIX_USER, 2);
    key_id(&t1, KEY_PREFIX_SETTINGS, 1);
    key_pair(&longer, KEY_PREFIX_USER, 1, 2);
    assert_true(rsm_begin_entry(&f->r, 1));
    rsm_put_u64(&f->r, &u1, 10);
    rsm_put_u64(&f->r, &t1, 11);
    rsm_put_u64(&f->r, &longer, 12);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    assert_true(cf_has(&f->r, 1, &u1));
    assert_false(cf_has(&f->r, 0, &u1));
    assert_true(cf_has(&f->r, 0, &t1));
    assert_true(cf_has(&f->r, 0, &longer));
    assert_false(cf_has(&f->r, 1, &longer));
    struct digest d1 = digest(f);
    assert_int_equal(d1.n, 2 + 3);

    /* The indexed batch's path: an iterator first, then point writes. */
    assert_true(rsm_begin_entry(&f->r, 2));
    rsm_put_u64(&f->r, &t1, 21);
    rocksdb_iterator_t *it = rsm_iter(&f->r);
    rocksdb_iter_destroy(it);
    assert_true(f->r.wbwi);
    rsm_put_u64(&f->r, &u2, 20);
    rsm_delete(&f->r, &u1);
    uint64_t v = 0;
    assert_int_equal(rsm_get_u64(&f->r, &u2, &v), 0);
    assert_int_equal(v, 20);
    assert_int_equal(rsm_get_u64(&f->r, &u1, &v), GS_ENOTFOUND);
    assert_int_equal(rsm_commit_entry(&f->r, 2), 0);
    assert_true(cf_has(&f->r, 1, &u2));
    assert_false(cf_has(&f->r, 0, &u2));
    assert_false(cf_has(&f->r, 1, &u1));
    struct digest d2 = digest(f);
    assert_int_equal(d2.n, 2 + 3);
    assert_memory_not_equal(d1.d, d2.d, 32);

    /* Reopen: the same rows in the same families, the same digest. */
    rsm_close(&f->r);
    assert_int_equal(rsm_open(&f->r, &o, NULL, 0), 0);
    assert_true(cf_has(&f->r, 1, &u2));
    assert_int_equal(rsm_get_u64(&f->r, &u2, &v), 0);
    assert_int_equal(v, 20);
    struct digest d3 = digest(f);
    assert_memory_equal(d2.d, d3.d, 32);

    /* A point row changed is a digest changed. */
    assert_true(rsm_begin_entry(&f->r, 3));
    rsm_put_u64(&f->r, &u2, 30);
    assert_int_equal(rsm_commit_entry(&f->r, 3), 0);
    assert_memory_not_equal(digest(f).d, d3.d, 32);

    /* An rsm without point rows refuses the DB, changing nothing. */
    rsm_close(&f->r);
    struct rsm other;
    char err[256] = "";
    struct rsm_options plain = opts_for(f->path, GROUP);
    assert_int_equal(rsm_open(&other, &plain, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "column family \"point\""));
    assert_int_equal(rsm_open(&f->r, &o, NULL, 0), 0);
}

/* An older schema's point rows, in the default family, move to their own
 * at open (the family is created only once the DB is known to be ours;
 * a move cut short is finished), the schema is stamped after; the rows
 * and the digest are as before. */
static void test_point_rows_moved(void **state)
{
    struct fx *f = *state;
    enum { N = 5000 }; /* more than one batch of the move */
    struct key k;
    assert_true(rsm_begin_entry(&f->r, 1));
    for (uint64_t id = 1; id <= N; id++) {
        key_id(&k, KEY_PREFIX_USER, id);
        rsm_put_u64(&f->r, &k, id);
    }
    key_pair(&k, KEY_PREFIX_USER, 1, 2);
    rsm_put_u64(&f->r, &k, 7);
    assert_int_equal(rsm_commit_entry(&f->r, 1), 0);
    struct digest before = digest(f);
    assert_int_equal(before.n, 2 + N + 1);
    rsm_close(&f->r);

    /* Another group's rsm with point rows: refused, and no family made. */
    struct rsm other;
    struct rsm_options o = point_opts_for(f->path, 2);
    o.identity = GROUP + 1;
    assert_int_equal(rsm_open(&other, &o, NULL, 0), GS_EINVAL);
    open_at(f, GROUP); /* would fail on a family it does not have */
    rsm_close(&f->r);

    /* A move a crash cut short: the family made, the first 1,000 rows in
     * it, the schema not stamped yet. The open moves the rest. */
    rocksdb_options_t *ro = rocksdb_options_create();
    char *rerr = NULL;
    rocksdb_t *db = rocksdb_open(ro, f->path, &rerr);
    assert_null(rerr);
    rocksdb_column_family_handle_t *pcf = rocksdb_create_column_family(db, ro, "point", &rerr);
    assert_null(rerr);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (uint64_t id = 1; id <= 1000; id++) {
        uint8_t v8[8];
        key_id(&k, KEY_PREFIX_USER, id);
        key_put_u64(v8, id);
        rocksdb_writebatch_put_cf(b, pcf, (const char *)k.b, k.len, (const char *)v8, 8);
        rocksdb_writebatch_delete(b, (const char *)k.b, k.len);
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_write(db, wo, b, &rerr);
    assert_null(rerr);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_writebatch_destroy(b);
    rocksdb_column_family_handle_destroy(pcf);
    rocksdb_close(db);
    rocksdb_options_destroy(ro);
    key_pair(&k, KEY_PREFIX_USER, 1, 2); /* the key of another length, below */

    o = point_opts_for(f->path, 2);
    assert_int_equal(rsm_open(&f->r, &o, NULL, 0), 0);
    struct key first, last;
    uint64_t v = 0;
    key_id(&first, KEY_PREFIX_USER, 1);
    key_id(&last, KEY_PREFIX_USER, N);
    for (uint64_t id = 1; id <= N; id += 499) {
        struct key u;
        key_id(&u, KEY_PREFIX_USER, id);
        assert_true(cf_has(&f->r, 1, &u));
        assert_false(cf_has(&f->r, 0, &u));
        assert_int_equal(rsm_get_u64(&f->r, &u, &v), 0);
        assert_int_equal(v, id);
    }
    assert_true(cf_has(&f->r, 1, &first));
    assert_true(cf_has(&f->r, 1, &last));
    assert_false(cf_has(&f->r, 0, &first));
    assert_false(cf_has(&f->r, 0, &last));
    assert_true(cf_has(&f->r, 0, &k)); /* not a point key: stays */
    uint64_t schema = 0;
    assert_int_equal(rsm_get_u64(&f->r, &last, &v), 0);
    assert_int_equal(v, N);
    struct key sk;
    key_system(&sk, KEY_SYS_SCHEMA);
    assert_int_equal(rsm_get_u64(&f->r, &sk, &schema), 0);
    assert_int_equal(schema, 2);
    struct digest after = digest(f);
    assert_int_equal(after.n, before.n);

    /* Opened again: nothing left to move, the same state. */
    rsm_close(&f->r);
    assert_int_equal(rsm_open(&f->r, &o, NULL, 0), 0);
    assert_memory_equal(digest(f).d, after.d, 32);

    /* A read-only probe of another DB with point rows reads its index. */
    char err[256] = "";
    char copy[128];
    uint64_t applied = 0;
    snprintf(copy, sizeof copy, "%s/copy", f->dir);
    struct rsm_options co = point_opts_for(copy, 2);
    assert_int_equal(rsm_open(&other, &co, NULL, 0), 0);
    assert_true(rsm_begin_entry(&other, 3));
    rsm_put_u64(&other, &first, 3);
    assert_int_equal(rsm_commit_entry(&other, 3), 0);
    rsm_close(&other);
    assert_int_equal(rsm_probe(&f->r, copy, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 3);
}

/* The checkpoint module works on any rsm, here one of a kind that is
 * neither a cell nor a directory nor a metadata group. */
static void test_checkpoint_any_rsm(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    rsm_close(&f->r);
    struct rsm_options o = opts_for(f->path, 3);
    o.kind = "toy";
    o.identity_key = "toy_id";
    assert_int_equal(nftw(f->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    assert_int_equal(rsm_open(&f->r, &o, err, sizeof err), 0);
    for (uint64_t i = 1; i <= 20; i++) {
        put_entry(f, i, i, i * 7);
    }
    char root[128], dst_path[128], incoming[128];
    snprintf(root, sizeof root, "%s/ckpt", f->dir);
    snprintf(dst_path, sizeof dst_path, "%s/dst", f->dir);
    snprintf(incoming, sizeof incoming, "%s/incoming", f->dir);
    struct checkpoint_info made = {0}, info = {0};
    assert_int_equal(checkpoint_create(&f->r, root, &made, err, sizeof err), 0);
    assert_string_equal(made.kind, "toy");
    assert_int_equal(made.identity, 3);
    assert_int_equal(made.applied_index, 20);
    checkpoint_info_free(&made);
    assert_int_equal(checkpoint_latest(root, &info, err, sizeof err), 0);
    assert_string_equal(info.kind, "toy");

    struct rsm dst;
    o.db_path = dst_path;
    assert_int_equal(rsm_open(&dst, &o, err, sizeof err), 0);
    struct checkpoint_receiver *rcv = NULL;
    assert_int_equal(checkpoint_receive_begin(incoming, &info, &rcv, err, sizeof err), 0);
    const char *name = NULL;
    uint64_t offset = 0;
    uint8_t buf[4096];
    while (checkpoint_receive_next(rcv, &name, &offset)) {
        size_t n = 0;
        assert_int_equal(
            checkpoint_read_chunk(root, info.applied_index, name, offset, buf, sizeof buf, &n), 0);
        assert_int_equal(checkpoint_receive_write(rcv, name, offset, buf, n, err, sizeof err), 0);
    }
    assert_int_equal(checkpoint_receive_verify(rcv, err, sizeof err), 0);
    assert_int_equal(
        checkpoint_install(&dst, checkpoint_receive_verified_dir(rcv), err, sizeof err), 0);
    checkpoint_receive_free(rcv);
    checkpoint_info_free(&info);
    assert_int_equal(rsm_applied_index(&dst), 20);
    struct digest a = digest(f), b;
    assert_int_equal(rsm_digest(&dst, b.d, &b.n), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.d, b.d, 32);
    rsm_close(&dst);
}

/* ---------------------------------------------------------------- apply loop */

/* A toy state machine: method 1 writes k(runs) = now_ms and answers "ok",
 * method 2 is a read answering "r", method 3 fails with GS_EEXIST, method 4
 * with GS_EIO (fatal), method 5 answers "echo:" + its request and offers
 * "echo:" as its partial outcome (toy_restore appends the request). */
enum { TOY_WRITE = 1, TOY_READ = 2, TOY_CONFLICT = 3, TOY_BROKEN = 4, TOY_ECHO = 5 };

struct toy {
    struct rsm *r;
    int runs;
    int begins;
    int partials;
    int64_t begin_now_ms;
};

static int toy_run(void *ctx, uint32_t method, const uint8_t *body, size_t len, int64_t now_ms,
                   uint8_t **out, size_t *out_len, uint8_t **partial, size_t *partial_len)
{
    struct toy *t = ctx;
    struct key k;
    t->runs++;
    switch (method) {
    case TOY_ECHO:
        *out = malloc(5 + len);
        memcpy(*out, "echo:", 5);
        memcpy(*out + 5, body, len);
        *out_len = 5 + len;
        if (partial != NULL) {
            t->partials++;
            *partial = malloc(5);
            memcpy(*partial, "echo:", 5);
            *partial_len = 5;
        }
        return 0;
    case TOY_WRITE:
        key_of(&k, (uint64_t)t->runs);
        rsm_put_u64(t->r, &k, (uint64_t)now_ms);
        *out = malloc(2);
        memcpy(*out, "ok", 2);
        *out_len = 2;
        return 0;
    case TOY_READ:
        *out = malloc(1);
        **out = 'r';
        *out_len = 1;
        return 0;
    case TOY_CONFLICT:
        return GS_EEXIST;
    case TOY_BROKEN:
        return GS_EIO;
    default:
        return GS_EUNIMPL;
    }
}

static bool toy_is_fatal(int rv)
{
    return rv == GS_EIO || rv == GS_ENOMEM;
}

static bool toy_remembered(uint32_t method)
{
    return method != TOY_READ;
}

static int toy_begin(void *ctx, int64_t now_ms)
{
    struct toy *t = ctx;
    t->begins++;
    t->begin_now_ms = now_ms;
    return 0;
}

static int toy_restore(uint32_t method, const uint8_t *request, size_t request_len,
                       const uint8_t *partial, size_t partial_len, uint8_t **out, size_t *out_len)
{
    if (method != TOY_ECHO || partial_len != 5 || memcmp(partial, "echo:", 5) != 0) {
        return GS_EINTERNAL;
    }
    *out = malloc(5 + request_len + 1);
    memcpy(*out, partial, 5);
    memcpy(*out + 5, request, request_len);
    *out_len = 5 + request_len;
    return 0;
}

static const struct rsm_apply_spec toy_spec = {
    .log_name = "test",
    .log_id = "group",
    .run = toy_run,
    .is_fatal = toy_is_fatal,
    .remembered = toy_remembered,
    .restore = toy_restore,
    .begin = toy_begin,
    .result_ttl_ms = 1000,
    .result_expire_max = 16,
};

struct toy_cmd {
    uint32_t method;
    uint64_t client_id;
    uint64_t client_seq;
    const char *body; /* NULL: empty */
};

static uint8_t *toy_entry(const struct toy_cmd *c, size_t n, int64_t ts, size_t *len)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    Geoscale__CellCommand cmds[8];
    Geoscale__CellCommand *ptrs[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        geoscale__cell_command__init(&cmds[i]);
        cmds[i].method = c[i].method;
        cmds[i].client_id = c[i].client_id;
        cmds[i].client_seq = c[i].client_seq;
        if (c[i].body != NULL) {
            cmds[i].body.data = (uint8_t *)c[i].body;
            cmds[i].body.len = strlen(c[i].body);
        }
        ptrs[i] = &cmds[i];
    }
    batch.timestamp_ms = ts;
    batch.n_commands = n;
    batch.commands = ptrs;
    *len = entry_encoded_size(&batch);
    uint8_t *buf = malloc(*len);
    assert_int_equal(entry_encode(&batch, buf), *len);
    return buf;
}

static void free_results(struct cell_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(res[i].body);
    }
}

static void test_apply_entry(void **state)
{
    struct fx *f = *state;
    struct toy t = {.r = &f->r};
    struct cell_result res[3];
    size_t n = 99, len = 0;
    const struct toy_cmd cmds[] = {
        {TOY_WRITE, 7, 1, NULL}, {TOY_READ, 7, 2, NULL}, {TOY_CONFLICT, 7, 3, NULL},
        {TOY_WRITE, 0, 0, NULL}};
    uint8_t *e = toy_entry(cmds, 4, T0, &len);

    assert_int_equal(rsm_apply_entry(&f->r, 1, e, len, &toy_spec, &t, res, 3, &n), 0);
    assert_int_equal(rsm_applied_index(&f->r), 1);
    assert_int_equal(t.begins, 1);
    assert_int_equal(t.begin_now_ms, T0);
    assert_int_equal(t.runs, 4);
    /* Only max_results outcomes come back; the fourth ran all the same. */
    assert_int_equal(n, 3);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[0].len, 2);
    assert_memory_equal(res[0].body, "ok", 2);
    assert_int_equal(res[1].status, 0);
    assert_memory_equal(res[1].body, "r", 1);
    assert_int_equal(res[2].status, GS_EEXIST);
    assert_null(res[2].body);
    free_results(res, n);
    uint64_t v = 0;
    assert_int_equal(get(f, 4, &v), 0);
    assert_int_equal(v, (uint64_t)T0);
    /* Two remembered outcomes (the read and client_id 0 are not) and
     * their entry's time index row. */
    struct digest d1 = digest(f);
    assert_int_equal(d1.n, 2 + 2 + 2 + 1);

    /* A replay runs nothing. */
    assert_int_equal(rsm_apply_entry(&f->r, 1, e, len, &toy_spec, &t, res, 3, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(t.begins, 1);
    assert_int_equal(t.runs, 4);

    /* The same commands again: the remembered ones answer from the store,
     * the read and the anonymous write run again. */
    assert_int_equal(rsm_apply_entry(&f->r, 2, e, len, &toy_spec, &t, res, 3, &n), 0);
    assert_int_equal(t.begins, 2);
    assert_int_equal(t.runs, 6);
    assert_int_equal(n, 3);
    assert_int_equal(res[0].status, 0);
    assert_memory_equal(res[0].body, "ok", 2);
    assert_int_equal(res[2].status, GS_EEXIST);
    free_results(res, n);
    free(e);
}

/* A partial outcome: stored without what the request restores, answered
 * byte for byte on a retry of the same request, refused for another
 * request under the same seq; anonymous commands are not offered one. */
static void test_apply_entry_partial_outcome(void **state)
{
    struct fx *f = *state;
    struct toy t = {.r = &f->r};
    struct cell_result res[2];
    size_t n = 0, len = 0;
    const struct toy_cmd first[] = {{TOY_ECHO, 7, 1, "a long request body"}, {TOY_ECHO, 0, 0, "x"}};
    uint8_t *e = toy_entry(first, 2, T0, &len);
    assert_int_equal(rsm_apply_entry(&f->r, 1, e, len, &toy_spec, &t, res, 2, &n), 0);
    free(e);
    assert_int_equal(n, 2);
    assert_int_equal(t.partials, 1);
    assert_int_equal(res[0].len, 5 + 19);
    assert_memory_equal(res[0].body, "echo:a long request body", 24);
    free_results(res, n);

    /* Stored: the partial body, its form and the request's hash. */
    bool found = false;
    int status = -1;
    uint8_t *body = NULL;
    struct rsm_result_form form = {false, 0};
    assert_int_equal(rsm_result_get(&f->r, 7, 1, &found, &status, &body, &len, &form), 0);
    assert_true(found);
    assert_int_equal(status, 0);
    assert_int_equal(len, 5);
    assert_memory_equal(body, "echo:", 5);
    assert_true(form.partial);
    assert_int_equal(form.request_hash,
                     rsm_request_hash((const uint8_t *)"a long request body", 19));
    assert_int_not_equal(form.request_hash, rsm_request_hash((const uint8_t *)"a long request bodY", 19));
    free(body);

    /* The retry is answered from the store, restored, without running. */
    const struct toy_cmd again[] = {{TOY_ECHO, 7, 1, "a long request body"},
                                    {TOY_ECHO, 7, 1, "another request"}};
    e = toy_entry(again, 2, T0 + 1, &len);
    int runs = t.runs;
    assert_int_equal(rsm_apply_entry(&f->r, 2, e, len, &toy_spec, &t, res, 2, &n), 0);
    free(e);
    assert_int_equal(t.runs, runs);
    assert_int_equal(n, 2);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[0].len, 24);
    assert_memory_equal(res[0].body, "echo:a long request body", 24);
    /* A seq reused for another request: refused, nothing restored. */
    assert_int_equal(res[1].status, GS_EINVAL);
    assert_null(res[1].body);
    free_results(res, n);
}

static void test_apply_entry_bad_and_fatal(void **state)
{
    struct fx *f = *state;
    struct toy t = {.r = &f->r};
    struct cell_result res[2];
    size_t n = 99, len = 0;
    struct digest d0 = digest(f);

    /* Undecodable: consumed, nothing run or written. */
    uint8_t junk[16] = {9};
    assert_int_equal(rsm_apply_entry(&f->r, 1, junk, sizeof junk, &toy_spec, &t, res, 2, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(rsm_applied_index(&f->r), 1);
    assert_int_equal(t.begins, 0);
    assert_int_equal(t.runs, 0);
    assert_memory_equal(digest(f).d, d0.d, 32);

    /* Fatal: the entry is aborted, the earlier command's writes and results
     * are dropped. */
    const struct toy_cmd cmds[] = {{TOY_WRITE, 7, 1, NULL}, {TOY_BROKEN, 7, 2, NULL}};
    uint8_t *e = toy_entry(cmds, 2, T0, &len);
    n = 99;
    assert_int_equal(rsm_apply_entry(&f->r, 2, e, len, &toy_spec, &t, res, 2, &n), GS_EIO);
    assert_int_equal(n, 0);
    assert_null(res[0].body);
    assert_int_equal(rsm_applied_index(&f->r), 1);
    assert_memory_equal(digest(f).d, d0.d, 32);
    free(e);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_identity_and_schema),
        T(test_applied_index_persists),
        T(test_replay_skipped),
        T(test_abort_writes_nothing),
        T(test_read_your_writes),
        T(test_entries_match_model),
        T(test_empty_values),
        T(test_large_entries),
        T(test_get_msg_and_corrupt),
        T(test_digest_excludes_applied_index),
        T(test_digest_off_thread),
        T(test_results),
        T(test_results_expire),
        T(test_results_expire_skips_no_tombstone),
        T(test_results_index_row),
        T(test_results_expire_schema1_rows),
        T(test_point_rows),
        T(test_point_rows_moved),
        T(test_result_marks),
        T(test_apply_entry_partial_outcome),
        T(test_detach_attach),
        T(test_probe),
        T(test_checkpoint_any_rsm),
        T(test_apply_entry),
        T(test_apply_entry_bad_and_fatal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
