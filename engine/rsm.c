/*
 * The replicated state machine base (contract in rsm.h).
 *
 * Inside an entry the writes go to a write set (wset.h): a read looks there
 * first, so a command sees the writes of the commands before it, then in
 * the DB; outside an entry reads go to the DB. The commit turns the set into
 * one WriteBatch in key order, a key written several times once with its
 * last value.
 *
 * Iterating inside an entry needs the DB merged with the entry's writes.
 * Before the entry wrote anything a plain DB iterator is that (the expiry
 * of idempotency rows, first in every entry, is such a case). Otherwise the
 * entry moves to the WriteBatchWithIndex created at open (overwrite_key = 1,
 * which its merged iterator, "with base", requires): the set is copied into
 * it, and the entry's remaining writes go to both, so the set still answers
 * reads and the commit writes the indexed batch. Few commands iterate
 * (acks, listings); the hot ones do not.
 *
 * Point reads that miss the write set go to the row cache (rcache.h), then
 * to the DB, whose answer is cached. A committed entry updates the cached
 * rows it wrote; open, detach and attach empty the cache.
 *
 * Point rows (rsm_options.point_prefix, a cell's profiles) live in a column
 * family of their own whose memtable is a hash table: a random key's insert
 * finds its bucket instead of searching a skiplist. Every read and write
 * picks its family by the key (cf_for); iterators are over the default
 * family only, which is why point rows must never be iterated in an entry.
 *
 * The commit is one unsynced write with the WAL on:
 * the WAL makes a process crash lose nothing RocksDB acknowledged, and
 * rsm_sync() (rocksdb_flush_wal(db, 1)) makes a machine crash lose nothing
 * before libraft truncates its log.
 *
 * Idempotency rows are StoredResult messages (geoscale.proto): the status as
 * a positive code and, for a success, the packed response, or the partial
 * form a command offered (its response less what its request restores, an
 * UpdateUser's new bio for one) with the request's hash. The 'r' time index
 * has one row per entry and batch time, 'r' ts 0 index, whose value lists
 * the (client_id, client_seq) of the outcomes the entry stored: one more
 * row per entry, not per command (schema 2; schema 1 had a row per outcome,
 * 'r' ts client_id client_seq with an empty value, which expiry still
 * reads). Expiry walks the index in order, so the outcomes deleted per
 * entry are the oldest, bounded in number (a row of which only some go is
 * rewritten with the rest), and the same on every replica (batch time, not
 * the local clock). A deleted row stays a tombstone in RocksDB until
 * compaction drops it, so a walk from the index's first key would step
 * over every row expired since, on every entry: an hour into sustained
 * writes (the cell's TTL) that grew an update's apply from 13 us to 700 us.
 * So the walk starts at 'S' results_expired, the time of the last row it
 * deleted, and a row is never indexed below it (rsm_result_put). It ends
 * at the cutoff: with every row expired it would otherwise walk on into
 * the keys after the index.
 */
#include "rsm.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cell_fsm.h"
#include "checkpoint.h"
#include "entry.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "log.h"

static int rocks_error(const struct rsm *r, char *err)
{
    /* RocksDB messages name files and keys; keys hold no PII. */
    log_error(r->kind, "event=rocksdb_error err=\"%s\"", err);
    rocksdb_free(err);
    return GS_EIO;
}

/* ---------------------------------------------------------------- column families */

#define RSM_POINT_CF "point"

/* The column family of key: the point rows' for a point key. */
static rocksdb_column_family_handle_t *cf_for(const struct rsm *r, const uint8_t *key, size_t klen)
{
    if (r->cf[1] != NULL && klen == r->point_key_len && key[0] == r->point_prefix) {
        return r->cf[1];
    }
    return r->cf[0];
}

static void rsm_close_db(struct rsm *r)
{
    for (size_t i = 0; i < 2; i++) {
        if (r->cf[i] != NULL) {
            rocksdb_column_family_handle_destroy(r->cf[i]);
            r->cf[i] = NULL;
        }
    }
    rocksdb_close(r->db);
    r->db = NULL;
}

/* Open r->db_path with r->options, and its point rows' column family if
 * there are point rows and the DB has it (a new DB is created with it; an
 * older one gets it in rsm_check_db() once it is known to be ours).
 * A DB with a column family this rsm does not have is another kind's (a
 * cell's profiles). 0 or GS_EIO. */
static int rsm_open_db(struct rsm *r, char *errmsg, size_t errmsg_len)
{
    char *err = NULL;
    size_t n_listed = 0;
    bool exists = false, has_point = false;
    char **listed = rocksdb_list_column_families(r->options, r->db_path, &n_listed, &err);
    if (err != NULL) {
        /* No database yet. The list is allocated all the same. */
        rocksdb_free(err);
        err = NULL;
        rocksdb_list_column_families_destroy(listed, n_listed);
    } else {
        int rv = 0;
        exists = true;
        for (size_t i = 0; i < n_listed && rv == 0; i++) {
            if (r->point_options != NULL && strcmp(listed[i], RSM_POINT_CF) == 0) {
                has_point = true;
            } else if (strcmp(listed[i], "default") != 0) {
                snprintf(errmsg, errmsg_len,
                         "database has a column family \"%s\" (not a %s database?)", listed[i],
                         r->kind);
                rv = GS_EIO;
            }
        }
        rocksdb_list_column_families_destroy(listed, n_listed);
        if (rv != 0) {
            return rv;
        }
    }
    const char *names[2] = {"default", RSM_POINT_CF};
    const rocksdb_options_t *cf_opts[2] = {r->options, r->point_options};
    int n = r->point_options != NULL && (has_point || !exists) ? 2 : 1;
    rocksdb_options_set_create_missing_column_families(r->options, !exists);
    r->db = rocksdb_open_column_families(r->options, r->db_path, n, names, cf_opts, r->cf, &err);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "cannot open database: %s", err);
        rocksdb_free(err);
        r->db = NULL;
        r->cf[0] = r->cf[1] = NULL;
        return GS_EIO;
    }
    return 0;
}

/* Move the point rows an older schema kept in the default column family
 * into their own, in batches of RSM_MOVE_BATCH rows, each batch putting
 * and deleting its rows at once: a crash between batches leaves every row
 * in one family or the other, and the next open moves the rest (the
 * schema is stamped only after). 0 or GS_EIO. */
#define RSM_MOVE_BATCH 4096

static int rsm_point_move(struct rsm *r, char *errmsg, size_t errmsg_len)
{
    char *err = NULL;
    uint8_t lo = r->point_prefix, hi = (uint8_t)(r->point_prefix + 1);
    uint64_t moved = 0;
    size_t n = 0;
    int rv = 0;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    if (hi != 0) {
        rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)&hi, 1);
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, ro, r->cf[0]);
    for (rocksdb_iter_seek(it, (const char *)&lo, 1); rocksdb_iter_valid(it);) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if ((uint8_t)k[0] != lo) {
            break;
        }
        if (klen == r->point_key_len) {
            const char *v = rocksdb_iter_value(it, &vlen);
            rocksdb_writebatch_put_cf(b, r->cf[1], k, klen, v, vlen);
            rocksdb_writebatch_delete_cf(b, r->cf[0], k, klen);
            n++;
        }
        rocksdb_iter_next(it);
        if (n == RSM_MOVE_BATCH) {
            /* The iterator reads an implicit snapshot: the batch's
             * deletes do not move it. */
            rocksdb_write(r->db, wo, b, &err);
            if (err != NULL) {
                break;
            }
            rocksdb_writebatch_clear(b);
            moved += n;
            n = 0;
            if (moved % (64 * RSM_MOVE_BATCH) == 0) {
                log_info(r->kind, "event=point_rows_moving %s=%" PRIu64 " rows=%" PRIu64,
                         r->kind, r->identity, moved);
            }
        }
    }
    if (err == NULL && n > 0) {
        rocksdb_write(r->db, wo, b, &err);
        moved += err == NULL ? n : 0;
    }
    if (err == NULL) {
        rv = rsm_iter_status(it);
    }
    rocksdb_iter_destroy(it);
    rocksdb_writebatch_destroy(b);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "cannot move point rows: %s", err);
        rocksdb_free(err);
        return GS_EIO;
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read point rows to move");
        return rv;
    }
    if (moved > 0) {
        log_info(r->kind, "event=point_rows_moved %s=%" PRIu64 " rows=%" PRIu64, r->kind,
                 r->identity, moved);
    }
    return 0;
}

/* ---------------------------------------------------------------- lifecycle */

/* Wait until no digest reads the DB (rsm_digest_run). */
static void rsm_wait_digests(struct rsm *r)
{
    pthread_mutex_lock(&r->digest_lock);
    while (r->digests_running > 0) {
        pthread_cond_wait(&r->digest_done, &r->digest_lock);
    }
    pthread_mutex_unlock(&r->digest_lock);
}

static void rsm_free(struct rsm *r)
{
    rsm_wait_digests(r);
    if (r->db != NULL) {
        rsm_close_db(r);
    }
    if (r->wb != NULL) {
        rocksdb_writebatch_wi_destroy(r->wb);
        r->wb = NULL;
    }
    if (r->batch != NULL) {
        rocksdb_writebatch_destroy(r->batch);
        r->batch = NULL;
    }
    wset_free(&r->ws);
    free(r->pending);
    r->pending = NULL;
    r->pending_len = r->pending_cap = 0;
    rcache_free(&r->cache);
    rmarks_free(&r->marks);
    if (r->writeopts != NULL) {
        rocksdb_writeoptions_destroy(r->writeopts);
        r->writeopts = NULL;
    }
    if (r->readopts != NULL) {
        rocksdb_readoptions_destroy(r->readopts);
        r->readopts = NULL;
    }
    if (r->below_readopts != NULL) {
        rocksdb_readoptions_destroy(r->below_readopts);
        r->below_readopts = NULL;
    }
    if (r->options != NULL) {
        rocksdb_options_destroy(r->options);
        r->options = NULL;
    }
    if (r->point_options != NULL) {
        rocksdb_options_destroy(r->point_options);
        r->point_options = NULL;
    }
    free(r->db_path);
    r->db_path = NULL;
    r->applied_index = 0;
    r->in_entry = false;
    pthread_cond_destroy(&r->digest_done);
    pthread_mutex_destroy(&r->digest_lock);
}

/* Write the schema and identity of a new, empty DB (synced). */
static int rsm_init_db(struct rsm *r, char *errmsg, size_t errmsg_len)
{
    struct key k;
    uint8_t v[8];
    char *err = NULL;
    rocksdb_writebatch_wi_clear(r->wb);
    key_system(&k, KEY_SYS_SCHEMA);
    key_put_u64(v, r->schema_version);
    rocksdb_writebatch_wi_put(r->wb, (const char *)k.b, k.len, (const char *)v, sizeof v);
    key_system(&k, r->identity_key);
    key_put_u64(v, r->identity);
    rocksdb_writebatch_wi_put(r->wb, (const char *)k.b, k.len, (const char *)v, sizeof v);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_write_writebatch_wi(r->db, wo, r->wb, &err);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_writebatch_wi_clear(r->wb);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "cannot initialise database: %s", err);
        rocksdb_free(err);
        return GS_EIO;
    }
    r->applied_index = 0;
    log_info(r->kind, "event=db_created %s=%" PRIu64, r->kind, r->identity);
    return 0;
}

/* Stamp an older DB with this build's schema. Every schema a build opens
 * it also reads as it is (schema 1's per-outcome time index rows, for
 * one), so the new number is the whole upgrade: it keeps older builds,
 * which would misread the rows written from now on, from opening the DB.
 * Written synced, before anything of the new schema. */
static int rsm_schema_upgrade(struct rsm *r, uint64_t from, char *errmsg, size_t errmsg_len)
{
    struct key k;
    uint8_t v[8];
    char *err = NULL;
    key_system(&k, KEY_SYS_SCHEMA);
    key_put_u64(v, r->schema_version);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_put(r->db, wo, (const char *)k.b, k.len, (const char *)v, sizeof v, &err);
    rocksdb_writeoptions_destroy(wo);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "cannot upgrade database schema: %s", err);
        rocksdb_free(err);
        return GS_EIO;
    }
    rcache_update(&r->cache, k.b, k.len, v, sizeof v);
    log_info(r->kind, "event=schema_upgraded %s=%" PRIu64 " from=%" PRIu64 " to=%" PRIu64, r->kind,
             r->identity, from, r->schema_version);
    return 0;
}

/* Initialise a new DB (if create) or check an existing one, upgrading an
 * older schema; loads applied_index. */
static int rsm_check_db(struct rsm *r, bool create, char *errmsg, size_t errmsg_len)
{
    struct key k;
    uint64_t schema = 0, identity = 0;
    int rv;

    key_system(&k, KEY_SYS_SCHEMA);
    rv = rsm_get_u64(r, &k, &schema);
    if (rv == GS_ENOTFOUND && create) {
        /* New DB, or one that is not ours. */
        rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->readopts);
        rocksdb_iter_seek_to_first(it);
        bool empty = !rocksdb_iter_valid(it);
        rocksdb_iter_destroy(it);
        if (!empty) {
            snprintf(errmsg, errmsg_len, "database has data but no schema version");
            return GS_EIO;
        }
        return rsm_init_db(r, errmsg, errmsg_len);
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read schema version");
        return rv == GS_ENOTFOUND ? GS_EIO : rv;
    }
    if (schema > r->schema_version || schema == 0) {
        snprintf(errmsg, errmsg_len,
                 "database schema %" PRIu64 " is not supported (this build: %" PRIu64 ")", schema,
                 r->schema_version);
        return GS_EIO;
    }
    key_system(&k, r->identity_key);
    rv = rsm_get_u64(r, &k, &identity);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read %s of database (not a %s database?)",
                 r->identity_key, r->kind);
        return GS_EIO;
    }
    if (identity != r->identity) {
        snprintf(errmsg, errmsg_len, "database belongs to %s %" PRIu64 ", not %s %" PRIu64, r->kind,
                 identity, r->kind, r->identity);
        return GS_EINVAL;
    }
    if (r->point_options != NULL && r->cf[1] == NULL) {
        /* An older schema's DB, ours: its point rows get their family. */
        char *err = NULL;
        r->cf[1] = rocksdb_create_column_family(r->db, r->point_options, RSM_POINT_CF, &err);
        if (err != NULL) {
            snprintf(errmsg, errmsg_len, "cannot create the point rows' column family: %s", err);
            rocksdb_free(err);
            r->cf[1] = NULL;
            return GS_EIO;
        }
    }
    if (schema < r->schema_version && r->cf[1] != NULL) {
        rv = rsm_point_move(r, errmsg, errmsg_len);
        if (rv != 0) {
            return rv;
        }
    }
    if (schema < r->schema_version) {
        rv = rsm_schema_upgrade(r, schema, errmsg, errmsg_len);
        if (rv != 0) {
            return rv;
        }
    }
    key_system(&k, KEY_SYS_APPLIED_INDEX);
    rv = rsm_get_u64(r, &k, &r->applied_index);
    if (rv == GS_ENOTFOUND) {
        r->applied_index = 0;
    } else if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read applied index");
        return GS_EIO;
    }
    return 0;
}

/*
 * Read-path tuning. Every command reads keys that mostly do not exist (its
 * idempotency row; counters and rows of new users), and a miss without a
 * filter searches the memtable and every level's index and data blocks.
 * Full-key Bloom filters (10 bits per key, about 1% false positives) in
 * the tables and in the memtable answer most misses without that, and a
 * block cache of RSM_BLOCK_CACHE_BYTES keeps the hot data blocks (the
 * default is 8 MiB). The table options are copied into the factory and the
 * cache is shared by reference, so neither outlives this call here.
 */
#define RSM_BLOCK_CACHE_BYTES ((size_t)64 << 20)
#define RSM_WAL_SYNC_BYTES ((uint64_t)1 << 20)
#define RSM_L0_COMPACT 8

static void rsm_tune(rocksdb_options_t *o)
{
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(RSM_BLOCK_CACHE_BYTES);
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_block_cache(t, cache);
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    /* The memtable's filter: whole keys, 1% of the memtable's size (64 MiB
     * by default): 5.4 Mbit, 8 bits per row with 128-byte profiles (670k
     * rows per memtable), 25 with 1 KiB ones (210k). Every insert sets a
     * bit in it; at 5% (27 Mbit, 3.4 MB) nearly every set missed the CPU's
     * caches, and a replica's apply took 10% more CPU (bench/RESULTS.md,
     * ninth round). The row cache remembers absent keys too, so the filter
     * serves only the cache's misses. */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.01);
    rocksdb_options_set_memtable_whole_key_filtering(o, 1);
    rocksdb_cache_destroy(cache);
    /* The WAL is written unsynced and synced at each snapshot, on the
     * group's loop thread. Starting its writeback every RSM_WAL_SYNC_BYTES
     * (sync_file_range, which does not wait) leaves that sync only the
     * tail to wait for. */
    rocksdb_options_set_wal_bytes_per_sync(o, RSM_WAL_SYNC_BYTES);
    /* Level 0 is compacted into level 1 once it holds RSM_L0_COMPACT
     * tables (RocksDB's default is 4). Every flush spans the idempotency
     * rows and the profiles, so each such compaction rewrites the whole of
     * level 1, which grows with an hour of idempotency rows; and flushes
     * are small (overwritten profiles are written once). Twice the tables
     * per compaction halves how often level 1 is rewritten. The write
     * slowdown and stop keep RocksDB's ratios to it (5x, 9x). Reads pay a
     * filter probe per level-0 table, and the row cache answers most of
     * them first (bench/RESULTS.md, ninth round). */
    rocksdb_options_set_level0_file_num_compaction_trigger(o, RSM_L0_COMPACT);
    rocksdb_options_set_level0_slowdown_writes_trigger(o, 5 * RSM_L0_COMPACT);
    rocksdb_options_set_level0_stop_writes_trigger(o, 9 * RSM_L0_COMPACT);
}

/* The point rows' column family: r->options' tuning, a memtable that is
 * a hash table of RSM_POINT_BUCKETS buckets on the whole key (a bucket's
 * rows in a sorted list), no memtable filter (a bucket answers a miss as
 * cheaply). Such a memtable takes one writer at a time, which the rsm is. */
#define RSM_POINT_BUCKETS 262144
#define RSM_WAL_MAX_BYTES ((uint64_t)64 << 20)

static void rsm_tune_point(struct rsm *r)
{
    rocksdb_options_set_allow_concurrent_memtable_write(r->options, 0);
    /* The WAL is kept until every family has flushed what it holds, and
     * the default family's memtable fills slowly beside the profiles': a
     * 1M-user cell killed after its load replayed 115 MiB of WAL (2 s)
     * before its open. Past RSM_WAL_MAX_BYTES RocksDB flushes the family
     * holding the oldest WAL, so a crash replays at most about that, as
     * with one memtable. */
    rocksdb_options_set_max_total_wal_size(r->options, RSM_WAL_MAX_BYTES);
    r->point_options = rocksdb_options_create_copy(r->options);
    rocksdb_options_set_prefix_extractor(
        r->point_options, rocksdb_slicetransform_create_fixed_prefix(r->point_key_len));
    rocksdb_options_set_hash_link_list_rep(r->point_options, RSM_POINT_BUCKETS);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(r->point_options, 0);
}

int rsm_open(struct rsm *r, const struct rsm_options *opts, char *errmsg, size_t errmsg_len)
{
    char scratch[1];
    int rv;

    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->digest_lock, NULL);
    pthread_cond_init(&r->digest_done, NULL);
    if (opts == NULL || opts->db_path == NULL || opts->db_path[0] == '\0') {
        snprintf(errmsg, errmsg_len, "db_path: required");
        return GS_EINVAL;
    }
    if (opts->kind == NULL || opts->identity_key == NULL || opts->schema_version == 0 ||
        strlen(opts->identity_key) + 1 > KEY_MAX) {
        snprintf(errmsg, errmsg_len, "rsm options: kind, identity_key and schema required");
        return GS_EINVAL;
    }
    if (sodium_init() < 0) {
        snprintf(errmsg, errmsg_len, "libsodium initialisation failed");
        return GS_EINTERNAL;
    }
    r->kind = opts->kind;
    r->identity_key = opts->identity_key;
    r->identity = opts->identity;
    r->schema_version = opts->schema_version;
    r->db_path = strdup(opts->db_path);
    if (r->db_path == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    r->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->options, 1);
    rsm_tune(r->options);
    if (!opts->compression) {
        rocksdb_options_set_compression(r->options, rocksdb_no_compression);
        rocksdb_options_set_bottommost_compression(r->options, rocksdb_no_compression);
    }
    if (opts->point_prefix != 0) {
        if (opts->point_key_len < 1 || opts->point_key_len > KEY_MAX) {
            snprintf(errmsg, errmsg_len, "rsm options: point_key_len must be 1..%d", KEY_MAX);
            rv = GS_EINVAL;
            goto err;
        }
        r->point_prefix = opts->point_prefix;
        r->point_key_len = opts->point_key_len;
        rsm_tune_point(r);
    }
    r->readopts = rocksdb_readoptions_create();
    r->below_readopts = rocksdb_readoptions_create();
    r->writeopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->writeopts, 0);
    rocksdb_writeoptions_disable_WAL(r->writeopts, 0);
    /* overwrite_key = 1: required by the merged iterator. */
    r->wb = rocksdb_writebatch_wi_create(0, 1);
    r->batch = rocksdb_writebatch_create();
    wset_init(&r->ws);
    rcache_init(&r->cache);
    rmarks_init(&r->marks);

    /* A crash inside an install may have left the old DB aside. */
    rv = checkpoint_recover_swap(opts->db_path, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    rv = rsm_open_db(r, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    rv = rsm_check_db(r, true, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    return 0;
err:
    rsm_free(r);
    return rv;
}

int rsm_open_shard(struct rsm *r, const struct rsm_options *opts, uint32_t shard_id,
                   uint32_t n_shards, uint32_t *n_shards_out, char *errmsg, size_t errmsg_len)
{
    n_shards = n_shards == 0 ? 1 : n_shards;
    if (shard_id >= n_shards) {
        snprintf(errmsg, errmsg_len, "shard_id: must be below n_shards");
        return GS_EINVAL;
    }
    struct rsm_options o = *opts;
    o.identity = shard_id;
    int rv = rsm_open(r, &o, errmsg, errmsg_len);
    if (rv != 0) {
        log_error(opts->kind, "event=open_failed shard=%" PRIu32 " code=%s", shard_id,
                  gs_error_name(rv));
        return rv;
    }
    log_info(opts->kind, "event=open shard=%" PRIu32 " shards=%" PRIu32 " applied_index=%" PRIu64,
             shard_id, n_shards, rsm_applied_index(r));
    *n_shards_out = n_shards;
    return 0;
}

/* A clean close writes the memtables to tables (the WAL is synced first,
 * so nothing depends on the flush): the next open then replays no WAL,
 * which keeps a restart's start-up short however much was written. */
static void rsm_flush_memtables(struct rsm *r)
{
    char *err = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    for (size_t i = 0; i < 2 && err == NULL; i++) {
        if (r->cf[i] != NULL) {
            rocksdb_flush_cf(r->db, fo, r->cf[i], &err);
        }
    }
    rocksdb_flushoptions_destroy(fo);
    if (err != NULL) {
        log_warn(r->kind, "event=close_flush_failed %s=%" PRIu64 " err=\"%s\"", r->kind,
                 r->identity, err);
        rocksdb_free(err);
    }
}

void rsm_close(struct rsm *r)
{
    if (r->db != NULL && rsm_sync(r) != 0) {
        log_error(r->kind, "event=close_sync_failed %s=%" PRIu64, r->kind, r->identity);
    } else if (r->db != NULL && !r->in_entry) {
        rsm_flush_memtables(r);
    }
    rsm_free(r);
}

uint64_t rsm_applied_index(const struct rsm *r)
{
    return r->applied_index;
}

int rsm_sync(struct rsm *r)
{
    char *err = NULL;
    rocksdb_flush_wal(r->db, 1, &err);
    if (err != NULL) {
        log_error(r->kind, "event=sync_failed %s=%" PRIu64 " err=\"%s\"", r->kind, r->identity,
                  err);
        rocksdb_free(err);
        return GS_EIO;
    }
    return 0;
}

/* ---------------------------------------------------------------- entries */

bool rsm_begin_entry(struct rsm *r, uint64_t index)
{
    assert(!r->in_entry);
    if (index <= r->applied_index) {
        return false;
    }
    wset_reset(&r->ws);
    r->wbwi = false;
    r->entry_error = 0;
    r->expired_known = false;
    r->entry_index = index;
    r->pending_len = 0;
    r->in_entry = true;
    return true;
}

/* Between entries the batches keep at most this much memory: one an
 * unusually large entry grew beyond it is replaced by a new one. */
#define RSM_KEEP_BATCH_BYTES ((size_t)4 << 20)

static void wb_release(struct rsm *r)
{
    size_t n = 0;
    rocksdb_writebatch_wi_data(r->wb, &n);
    if (n > RSM_KEEP_BATCH_BYTES) {
        rocksdb_writebatch_wi_destroy(r->wb);
        r->wb = rocksdb_writebatch_wi_create(0, 1); /* overwrite_key: see above */
    } else {
        rocksdb_writebatch_wi_clear(r->wb);
    }
}

static void batch_release(struct rsm *r)
{
    size_t n = 0;
    rocksdb_writebatch_data(r->batch, &n);
    if (n > RSM_KEEP_BATCH_BYTES) {
        rocksdb_writebatch_destroy(r->batch);
        r->batch = rocksdb_writebatch_create();
    } else {
        rocksdb_writebatch_clear(r->batch);
    }
}

/* The DB changed other than by a committed entry, or a commit failed
 * halfway: forget what is cached of its committed state (rows, absences,
 * result marks). */
static void forget_committed_state(struct rsm *r)
{
    rcache_clear(&r->cache);
    rmarks_clear(&r->marks);
}

/* A committed write: the row cache follows it, and a stored outcome raises
 * its client's mark. */
static void cache_update(void *arg, const uint8_t *key, size_t klen, const uint8_t *val,
                         size_t vlen)
{
    struct rsm *r = arg;
    uint64_t client_id = 0, client_seq = 0;
    rcache_update(&r->cache, key, klen, val, vlen);
    if (val != NULL && key_decode_pair(key, klen, KEY_PREFIX_RESULT, &client_id, &client_seq)) {
        rmarks_raise(&r->marks, client_id, client_seq);
    }
}

static void batch_add(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct rsm *r = arg;
    rocksdb_column_family_handle_t *cf = cf_for(r, key, klen);
    if (val == NULL) {
        rocksdb_writebatch_delete_cf(r->batch, cf, (const char *)key, klen);
    } else {
        rocksdb_writebatch_put_cf(r->batch, cf, (const char *)key, klen, (const char *)val, vlen);
    }
}

static int results_index_flush(struct rsm *r);

int rsm_commit_entry(struct rsm *r, uint64_t index)
{
    struct key k;
    uint8_t v[8];
    char *err = NULL;
    assert(r->in_entry && index > r->applied_index);
    int flushed = results_index_flush(r);
    if (flushed != 0 && r->entry_error == 0) {
        r->entry_error = flushed;
    }
    if (r->entry_error != 0) {
        int rv = r->entry_error;
        log_error(r->kind, "event=commit_failed %s=%" PRIu64 " index=%" PRIu64 " code=%s", r->kind,
                  r->identity, index, gs_error_name(rv));
        rsm_abort_entry(r);
        return rv;
    }
    key_system(&k, KEY_SYS_APPLIED_INDEX);
    key_put_u64(v, index);
    if (r->wbwi) {
        rocksdb_writebatch_wi_put(r->wb, (const char *)k.b, k.len, (const char *)v, sizeof v);
        rocksdb_write_writebatch_wi(r->db, r->writeopts, r->wb, &err);
        wb_release(r);
    } else {
        rocksdb_writebatch_clear(r->batch);
        if (wset_for_each_sorted(&r->ws, batch_add, r) != 0) {
            /* Out of memory for the sort: the batch in first-write order is
             * the same state, only slower to insert. */
            rocksdb_writebatch_clear(r->batch);
            wset_for_each(&r->ws, batch_add, r);
        }
        rocksdb_writebatch_put(r->batch, (const char *)k.b, k.len, (const char *)v, sizeof v);
        rocksdb_write(r->db, r->writeopts, r->batch, &err);
        batch_release(r);
    }
    if (err == NULL) {
        wset_for_each(&r->ws, cache_update, r);
        rcache_update(&r->cache, k.b, k.len, v, sizeof v);
    } else {
        forget_committed_state(r);
    }
    wset_reset(&r->ws);
    r->wbwi = false;
    r->in_entry = false;
    if (err != NULL) {
        log_error(r->kind, "event=commit_failed %s=%" PRIu64 " index=%" PRIu64 " err=\"%s\"",
                  r->kind, r->identity, index, err);
        rocksdb_free(err);
        return GS_EIO;
    }
    r->applied_index = index;
    return 0;
}

void rsm_abort_entry(struct rsm *r)
{
    wb_release(r);
    r->pending_len = 0;
    wset_reset(&r->ws);
    r->wbwi = false;
    r->in_entry = false;
}

/* ---------------------------------------------------------------- key-value */

int rsm_apply_empty(struct rsm *r, uint64_t index)
{
    if (!rsm_begin_entry(r, index)) {
        return 0;
    }
    return rsm_commit_entry(r, index);
}

/* A value read by rsm_read(): borrowed from the write set or the row cache
 * (valid until the next write, commit or cache change; owned NULL), or
 * RocksDB's own copy (owned, freed by value_release). */
struct value {
    const uint8_t *p;
    size_t len;
    char *owned;
};

static void value_release(struct value *v)
{
    rocksdb_free(v->owned);
    v->owned = NULL;
}

/* Read k: in an entry its own writes first, then (if cached) the row cache,
 * then the DB, whose answer is cached. 0, GS_ENOTFOUND or GS_EIO. Reads on
 * the hot path (profiles, counters) unpack a borrowed value in place, with
 * no copy. */
static int rsm_read(struct rsm *r, const struct key *k, bool cached, struct value *v)
{
    char *err = NULL;
    v->owned = NULL;
    if (r->in_entry) {
        switch (wset_get(&r->ws, k->b, k->len, &v->p, &v->len)) {
        case WSET_DELETED:
            return GS_ENOTFOUND;
        case WSET_VALUE:
            return 0;
        case WSET_ABSENT:
            break;
        }
    }
    if (cached) {
        switch (rcache_get(&r->cache, k->b, k->len, &v->p, &v->len)) {
        case RCACHE_ROW:
            return 0;
        case RCACHE_ABSENT:
            return GS_ENOTFOUND;
        case RCACHE_MISS:
            break;
        }
    }
    v->owned = rocksdb_get_cf(r->db, r->readopts, cf_for(r, k->b, k->len), (const char *)k->b,
                              k->len, &v->len, &err);
    if (err != NULL) {
        return rocks_error(r, err);
    }
    if (v->owned == NULL) {
        if (cached) {
            rcache_put_absent(&r->cache, k->b, k->len);
        }
        return GS_ENOTFOUND;
    }
    v->p = (const uint8_t *)v->owned;
    if (cached) {
        rcache_put(&r->cache, k->b, k->len, v->p, v->len);
    }
    return 0;
}

int rsm_get(struct rsm *r, const struct key *k, char **val, size_t *len)
{
    struct value v;
    int rv = rsm_read(r, k, true, &v);
    if (rv != 0) {
        return rv;
    }
    if (v.owned == NULL) {
        /* A copy the caller frees like RocksDB's (rocksdb_free is free). */
        v.owned = malloc(v.len > 0 ? v.len : 1);
        if (v.owned == NULL) {
            return GS_ENOMEM;
        }
        if (v.len > 0) {
            memcpy(v.owned, v.p, v.len);
        }
    }
    *val = v.owned;
    *len = v.len;
    return 0;
}

int rsm_exists(struct rsm *r, const struct key *k, bool *exists)
{
    struct value v;
    int rv = rsm_read(r, k, true, &v);
    if (rv == GS_ENOTFOUND) {
        *exists = false;
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    value_release(&v);
    *exists = true;
    return 0;
}

int rsm_get_u64(struct rsm *r, const struct key *k, uint64_t *out)
{
    struct value v;
    int rv = rsm_read(r, k, true, &v);
    if (rv != 0) {
        return rv;
    }
    if (v.len != 8) {
        value_release(&v);
        log_error(r->kind, "event=corrupt_record prefix=%c", (char)k->b[0]);
        return GS_EIO;
    }
    *out = key_get_u64(v.p);
    value_release(&v);
    return 0;
}

int rsm_get_u64_or_0(struct rsm *r, const struct key *k, uint64_t *v)
{
    int rv = rsm_get_u64(r, k, v);
    if (rv == GS_ENOTFOUND) {
        *v = 0;
        return 0;
    }
    return rv;
}

/* rsm_get_msg, through the row cache or (cached false: rows read once, such
 * as idempotency rows) not. */
static int get_msg(struct rsm *r, const struct key *k, bool cached,
                   const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    static const uint8_t empty[1];
    struct value v;
    int rv = rsm_read(r, k, cached, &v);
    if (rv != 0) {
        return rv;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, v.len, v.len > 0 ? v.p : empty);
    value_release(&v);
    if (m == NULL) {
        log_error(r->kind, "event=corrupt_record prefix=%c", (char)k->b[0]);
        return GS_EIO;
    }
    *out = m;
    return 0;
}

int rsm_get_msg(struct rsm *r, const struct key *k, const ProtobufCMessageDescriptor *desc,
                ProtobufCMessage **out)
{
    return get_msg(r, k, true, desc, out);
}

void rsm_put(struct rsm *r, const struct key *k, const void *val, size_t len)
{
    assert(r->in_entry);
    if (wset_put(&r->ws, k->b, k->len, val, len) != 0) {
        r->entry_error = GS_ENOMEM;
    }
    if (r->wbwi) {
        rocksdb_writebatch_wi_put_cf(r->wb, cf_for(r, k->b, k->len), (const char *)k->b, k->len,
                                     val, len);
    }
}

void rsm_put_u64(struct rsm *r, const struct key *k, uint64_t v)
{
    uint8_t buf[8];
    key_put_u64(buf, v);
    rsm_put(r, k, buf, sizeof buf);
}

int rsm_put_msg(struct rsm *r, const struct key *k, const ProtobufCMessage *msg)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = rsm_pack(msg, &buf, &len);
    if (rv != 0) {
        return rv;
    }
    rsm_put(r, k, buf, len);
    free(buf);
    return 0;
}

void rsm_delete(struct rsm *r, const struct key *k)
{
    assert(r->in_entry);
    if (wset_delete(&r->ws, k->b, k->len) != 0) {
        r->entry_error = GS_ENOMEM;
    }
    if (r->wbwi) {
        rocksdb_writebatch_wi_delete_cf(r->wb, cf_for(r, k->b, k->len), (const char *)k->b,
                                        k->len);
    }
}

static void wbwi_add(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct rsm *r = arg;
    rocksdb_column_family_handle_t *cf = cf_for(r, key, klen);
    if (val == NULL) {
        rocksdb_writebatch_wi_delete_cf(r->wb, cf, (const char *)key, klen);
    } else {
        rocksdb_writebatch_wi_put_cf(r->wb, cf, (const char *)key, klen, (const char *)val, vlen);
    }
}

static rocksdb_iterator_t *merged_iter(struct rsm *r, rocksdb_iterator_t *base)
{
    /* The entry's pending index row is one of its writes the iterator
     * must see; a failure fails the entry's commit. */
    int flushed = r->in_entry ? results_index_flush(r) : 0;
    if (flushed != 0 && r->entry_error == 0) {
        r->entry_error = flushed;
    }
    if (!r->in_entry || wset_count(&r->ws) == 0) {
        /* Nothing written in this entry yet: the DB is the merged view. */
        return base;
    }
    if (!r->wbwi) {
        rocksdb_writebatch_wi_clear(r->wb);
        wset_for_each(&r->ws, wbwi_add, r);
        r->wbwi = true;
    }
    /* The merged iterator takes ownership of `base`. */
    return rocksdb_writebatch_wi_create_iterator_with_base(r->wb, base);
}

rocksdb_iterator_t *rsm_iter(struct rsm *r)
{
    return merged_iter(r, rocksdb_create_iterator(r->db, r->readopts));
}

rocksdb_iterator_t *rsm_iter_below(struct rsm *r, const struct key *upper)
{
    /* The entry's own writes need no bound: the callers stop at `upper`
     * themselves, and the batch holds no tombstones to step over. */
    r->below = *upper;
    rocksdb_readoptions_set_iterate_upper_bound(r->below_readopts, (const char *)r->below.b,
                                                r->below.len);
    return merged_iter(r, rocksdb_create_iterator(r->db, r->below_readopts));
}

int rsm_iter_status(rocksdb_iterator_t *it)
{
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        log_error("rsm", "event=rocksdb_error err=\"%s\"", err);
        rocksdb_free(err);
        return GS_EIO;
    }
    return 0;
}

int rsm_pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        return GS_ENOMEM;
    }
    size_t packed = protobuf_c_message_pack(msg, buf);
    assert(packed == n);
    (void)packed;
    *body = buf;
    *len = n;
    return 0;
}

/* ---------------------------------------------------------------- idempotency */

uint64_t rsm_request_hash(const uint8_t *body, size_t len)
{
    static const unsigned char zero_key[crypto_shorthash_KEYBYTES];
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, body, len, zero_key);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof h; i++) {
        v = v << 8 | h[i];
    }
    return v;
}

/* Learn client_id's mark from the committed DB: the highest client_seq of
 * its stored outcomes, or 0. */
static int result_mark_learn(struct rsm *r, uint64_t client_id, uint64_t *max_seq)
{
    struct key last;
    uint64_t id = 0, seq = 0;
    size_t klen = 0;
    key_pair(&last, KEY_PREFIX_RESULT, client_id, UINT64_MAX);
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->readopts);
    rocksdb_iter_seek_for_prev(it, (const char *)last.b, last.len);
    *max_seq = 0;
    if (rocksdb_iter_valid(it)) {
        const char *k = rocksdb_iter_key(it, &klen);
        if (key_decode_pair(k, klen, KEY_PREFIX_RESULT, &id, &seq) && id == client_id) {
            *max_seq = seq;
        }
    }
    int rv = rsm_iter_status(it);
    rocksdb_iter_destroy(it);
    if (rv == 0) {
        rmarks_set(&r->marks, client_id, *max_seq);
    }
    return rv;
}

/* 0 with *absent true if (client_id, client_seq) certainly has no stored
 * outcome: none written by this entry, and the seq above its client's mark
 * (learnt first if the client has none). Else 0 with *absent false, or the
 * iterator's error. */
static int result_surely_absent(struct rsm *r, uint64_t client_id, uint64_t client_seq,
                                const struct key *rk, bool *absent)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    uint64_t max_seq = 0;
    *absent = false;
    if (client_id == 0 ||
        (r->in_entry && wset_get(&r->ws, rk->b, rk->len, &p, &n) != WSET_ABSENT)) {
        return 0;
    }
    if (!rmarks_get(&r->marks, client_id, &max_seq)) {
        int rv = result_mark_learn(r, client_id, &max_seq);
        if (rv != 0) {
            return rv;
        }
    }
    *absent = client_seq > max_seq;
    return 0;
}

int rsm_result_get(struct rsm *r, uint64_t client_id, uint64_t client_seq, bool *found, int *status,
                   uint8_t **body, size_t *len, struct rsm_result_form *form)
{
    ProtobufCMessage *m = NULL;
    struct key rk;
    bool absent = false;
    key_pair(&rk, KEY_PREFIX_RESULT, client_id, client_seq);
    int rv = result_surely_absent(r, client_id, client_seq, &rk, &absent);
    if (rv != 0) {
        return rv;
    }
    if (absent) {
        *found = false;
        return 0;
    }
    /* Not cached: a row found here is a retry's, read once. */
    rv = get_msg(r, &rk, false, &geoscale__stored_result__descriptor, &m);
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
    if (form != NULL) {
        form->partial = sr->partial;
        form->request_hash = sr->request_hash;
    }
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

int rsm_get_sys_time(struct rsm *r, const char *name, int64_t *ts_ms)
{
    struct key k;
    uint64_t v = 0;
    key_system(&k, name);
    int rv = rsm_get_u64(r, &k, &v);
    if (rv == 0) {
        *ts_ms = (int64_t)v;
    } else if (rv == GS_ENOTFOUND) {
        *ts_ms = INT64_MIN;
        rv = 0;
    }
    return rv;
}

/* The batch time of the last outcome expired (INT64_MIN: none, or a DB
 * older than the key), read once per entry: only rsm_results_expire()
 * writes it, and it keeps the entry's copy current. 0 or GS_EIO. */
static int results_expired_get(struct rsm *r, int64_t *ts_ms)
{
    if (!r->expired_known) {
        int rv = rsm_get_sys_time(r, KEY_SYS_RESULTS_EXPIRED, &r->expired_ms);
        if (rv != 0) {
            return rv;
        }
        r->expired_known = true;
    }
    *ts_ms = r->expired_ms;
    return 0;
}

/* The size of a (client_id, client_seq) pair in a time index row. */
#define RESULT_PAIR_LEN 16

/* Write the entry's pending outcomes into their time index row, 'r'
 * pending_ts 0 entry_index, merged with the row the entry wrote at that
 * time before (outcomes stored at another time in between). Rows of
 * earlier entries have other indexes, so only the write set can hold it.
 * 0 or GS_ENOMEM. */
static int results_index_flush(struct rsm *r)
{
    struct key tk;
    const uint8_t *old = NULL;
    size_t old_len = 0;
    if (r->pending_len == 0) {
        return 0;
    }
    key_result_time(&tk, r->pending_ts, 0, r->entry_index);
    if (wset_get(&r->ws, tk.b, tk.len, &old, &old_len) == WSET_VALUE && old_len > 0) {
        /* Copied first: the write set's value goes with the put. */
        uint8_t *merged = malloc(old_len + r->pending_len);
        if (merged == NULL) {
            return GS_ENOMEM;
        }
        memcpy(merged, old, old_len);
        memcpy(merged + old_len, r->pending, r->pending_len);
        rsm_put(r, &tk, merged, old_len + r->pending_len);
        free(merged);
    } else {
        rsm_put(r, &tk, r->pending, r->pending_len);
    }
    r->pending_len = 0;
    return 0;
}

int rsm_result_put(struct rsm *r, int64_t now_ms, uint64_t client_id, uint64_t client_seq,
                   int status, const uint8_t *body, size_t len,
                   const struct rsm_result_form *form)
{
    Geoscale__StoredResult sr = GEOSCALE__STORED_RESULT__INIT;
    struct key rk;
    if (client_id == 0) {
        return GS_EINVAL; /* 0: the index row of an entry */
    }
    sr.status = (uint32_t)(-status);
    sr.body.data = (uint8_t *)body;
    sr.body.len = status == 0 ? len : 0;
    if (status == 0 && form != NULL && form->partial) {
        sr.partial = true;
        sr.request_hash = form->request_hash;
    }
    key_pair(&rk, KEY_PREFIX_RESULT, client_id, client_seq);
    int rv = rsm_put_msg(r, &rk, &sr.base);
    if (rv != 0) {
        return rv;
    }
    int64_t expired = INT64_MIN;
    rv = results_expired_get(r, &expired);
    if (rv != 0) {
        return rv;
    }
    int64_t at = now_ms > expired ? now_ms : expired;
    if (r->pending_len > 0 && at != r->pending_ts) {
        rv = results_index_flush(r);
        if (rv != 0) {
            return rv;
        }
    }
    if (r->pending_len + RESULT_PAIR_LEN > r->pending_cap) {
        size_t cap = r->pending_cap > 0 ? 2 * r->pending_cap : 64 * RESULT_PAIR_LEN;
        uint8_t *p = realloc(r->pending, cap);
        if (p == NULL) {
            return GS_ENOMEM;
        }
        r->pending = p;
        r->pending_cap = cap;
    }
    key_put_u64(r->pending + r->pending_len, client_id);
    key_put_u64(r->pending + r->pending_len + 8, client_seq);
    r->pending_len += RESULT_PAIR_LEN;
    r->pending_ts = at;
    return 0;
}

/* What a walk of the time index found to expire: the keys to delete (the
 * outcomes and the index rows wholly expired) and at most one row, the
 * last, of which only some outcomes expire, to be rewritten with the
 * rest. */
struct expiry {
    struct key *gone;
    size_t n_gone, n_results, max;
    struct key rest_key;
    uint8_t *rest;
    size_t rest_len;
    int64_t last_ts;
};

/* Take the outcomes of one index row, as many as max allows. `pairs` of
 * a schema 1 row is its key's own pair. The keys are allocated with the
 * first row (most walks find none): each row taken gives one outcome at
 * least, so at most max outcomes and max rows. 0, or GS_ENOMEM. */
static int expiry_take(struct expiry *x, const char *row, size_t row_len, int64_t ts,
                       const uint8_t *pairs, size_t pairs_len)
{
    if (x->gone == NULL) {
        if (x->max > SIZE_MAX / (2 * sizeof *x->gone) ||
            (x->gone = malloc(2 * x->max * sizeof *x->gone)) == NULL) {
            return GS_ENOMEM;
        }
    }
    size_t m = pairs_len / RESULT_PAIR_LEN;
    size_t take = m < x->max - x->n_results ? m : x->max - x->n_results;
    for (size_t i = 0; i < take; i++) {
        const uint8_t *p = pairs + i * RESULT_PAIR_LEN;
        key_pair(&x->gone[x->n_gone++], KEY_PREFIX_RESULT, key_get_u64(p), key_get_u64(p + 8));
    }
    x->n_results += take;
    x->last_ts = ts;
    if (take == m) {
        memcpy(x->gone[x->n_gone].b, row, row_len);
        x->gone[x->n_gone].len = row_len;
        x->n_gone++;
        return 0;
    }
    x->rest_len = pairs_len - take * RESULT_PAIR_LEN;
    x->rest = malloc(x->rest_len);
    if (x->rest == NULL) {
        return GS_ENOMEM;
    }
    memcpy(x->rest, pairs + take * RESULT_PAIR_LEN, x->rest_len);
    memcpy(x->rest_key.b, row, row_len);
    x->rest_key.len = row_len;
    return 0;
}

int rsm_results_expire(struct rsm *r, int64_t now_ms, int64_t ttl_ms, size_t max)
{
    struct key start, end;
    struct expiry x = {.max = max};
    int rv;

    assert(ttl_ms >= 0);
    if (max == 0 || now_ms < INT64_MIN + ttl_ms) {
        return 0;
    }
    int64_t cutoff = now_ms - ttl_ms, expired = INT64_MIN;
    rv = results_expired_get(r, &expired);
    if (rv != 0) {
        return rv;
    }
    if (expired == INT64_MIN) {
        start.b[0] = KEY_PREFIX_RESULT_TIME;
        start.len = 1;
    } else {
        key_result_time(&start, expired, 0, 0);
    }
    key_result_time(&end, cutoff, 0, 0);
    rocksdb_iterator_t *it = rsm_iter_below(r, &end);
    for (rocksdb_iter_seek(it, (const char *)start.b, start.len);
         rv == 0 && rocksdb_iter_valid(it) && x.n_results < max; rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *kraw = rocksdb_iter_key(it, &klen);
        int64_t ts = 0;
        uint64_t client_id = 0, client_seq = 0;
        uint8_t own[RESULT_PAIR_LEN];
        if (klen == 0 || (uint8_t)kraw[0] != KEY_PREFIX_RESULT_TIME) {
            break;
        }
        if (!key_decode_result_time(kraw, klen, &ts, &client_id, &client_seq)) {
            continue; /* not ours; never written by this engine */
        }
        if (ts >= cutoff) {
            break;
        }
        const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
        if (client_id != 0 && vlen == 0) {
            /* Schema 1: one outcome's own row. */
            key_put_u64(own, client_id);
            key_put_u64(own + 8, client_seq);
            rv = expiry_take(&x, kraw, klen, ts, own, sizeof own);
        } else if (client_id == 0 && vlen > 0 && vlen % RESULT_PAIR_LEN == 0) {
            rv = expiry_take(&x, kraw, klen, ts, v, vlen);
        }
        /* Anything else was never written by this engine: stepped over. */
    }
    if (rv == 0) {
        rv = rsm_iter_status(it);
    }
    rocksdb_iter_destroy(it);
    if (rv != 0) {
        free(x.rest);
        free(x.gone);
        return rv;
    }
    /* Writes only after the iterator is gone (it must not see the batch
     * change under it). */
    for (size_t i = 0; i < x.n_gone; i++) {
        rsm_delete(r, &x.gone[i]);
    }
    if (x.rest != NULL) {
        rsm_put(r, &x.rest_key, x.rest, x.rest_len);
    }
    if (x.n_results > 0) {
        struct key k;
        key_system(&k, KEY_SYS_RESULTS_EXPIRED);
        rsm_put_u64(r, &k, (uint64_t)x.last_ts);
        r->expired_ms = x.last_ts;
    }
    free(x.rest);
    free(x.gone);
    return 0;
}

/* ---------------------------------------------------------------- apply loop */

/* The remembered outcome of `cmd`, if any: 0 with *found; a partial one
 * restored from the retry's request, or GS_EINVAL if that request is not
 * the one stored. */
static int remembered_outcome(struct rsm *r, const struct rsm_apply_spec *spec,
                              const Geoscale__CellCommand *cmd, bool *found, int *status,
                              uint8_t **body, size_t *len)
{
    struct rsm_result_form form = {false, 0};
    int rv = rsm_result_get(r, cmd->client_id, cmd->client_seq, found, status, body, len, &form);
    if (rv != 0 || !*found || *status != 0 || !form.partial) {
        return rv;
    }
    uint8_t *partial = *body;
    size_t partial_len = *len;
    *body = NULL;
    *len = 0;
    if (rsm_request_hash(cmd->body.data, cmd->body.len) != form.request_hash) {
        *status = GS_EINVAL;
    } else if (spec->restore == NULL) {
        *status = GS_EINTERNAL;
    } else {
        rv = spec->restore(cmd->method, cmd->body.data, cmd->body.len, partial, partial_len, body,
                           len);
        if (rv == GS_EINTERNAL) {
            *status = rv; /* this command's outcome, not the entry's */
            rv = 0;
        }
    }
    free(partial);
    return rv;
}

/* Apply one command. Returns 0 with its outcome in *status, *body and *len
 * (body malloc'd iff status == 0), or a fatal code. */
static int apply_command(struct rsm *r, const struct rsm_apply_spec *spec, void *ctx,
                         int64_t now_ms, const Geoscale__CellCommand *cmd, int *status,
                         uint8_t **body, size_t *len)
{
    bool remember = cmd->client_id != 0 && spec->remembered(cmd->method);
    uint8_t *partial = NULL;
    size_t partial_len = 0;
    int rv;

    *body = NULL;
    *len = 0;
    if (remember) {
        bool found = false;
        rv = remembered_outcome(r, spec, cmd, &found, status, body, len);
        if (rv != 0 || found) {
            return rv;
        }
    }
    bool offer = remember && spec->restore != NULL;
    rv = spec->run(ctx, cmd->method, cmd->body.data, cmd->body.len, now_ms, body, len,
                   offer ? &partial : NULL, offer ? &partial_len : NULL);
    if (spec->is_fatal(rv)) {
        free(partial);
        return rv;
    }
    *status = rv;
    if (remember) {
        if (partial != NULL && rv == 0) {
            struct rsm_result_form form = {true, rsm_request_hash(cmd->body.data, cmd->body.len)};
            rv = rsm_result_put(r, now_ms, cmd->client_id, cmd->client_seq, 0, partial,
                                partial_len, &form);
        } else {
            rv = rsm_result_put(r, now_ms, cmd->client_id, cmd->client_seq, *status, *body, *len,
                                NULL);
        }
        if (rv != 0) {
            free(partial);
            free(*body);
            *body = NULL;
            return rv;
        }
    }
    free(partial);
    return 0;
}

int rsm_apply_entry(struct rsm *r, uint64_t index, const void *entry, size_t len,
                    const struct rsm_apply_spec *spec, void *ctx, struct cell_result *results,
                    size_t max_results, size_t *n_results)
{
    Geoscale__CellBatch *batch = NULL;
    size_t n = 0;
    int rv;

    *n_results = 0;
    if (!rsm_begin_entry(r, index)) {
        return 0;
    }
    if (entry_decode(entry, len, &batch) != 0) {
        /* Every replica sees the same bytes and skips them alike. */
        log_warn(spec->log_name, "event=undecodable_entry %s=%" PRIu64 " index=%" PRIu64 " len=%zu",
                 spec->log_id, r->identity, index, len);
        return rsm_commit_entry(r, index);
    }
    int64_t now_ms = batch->timestamp_ms;
    rv = spec->begin != NULL ? spec->begin(ctx, now_ms) : 0;
    if (rv == 0) {
        rv = rsm_results_expire(r, now_ms, spec->result_ttl_ms, spec->result_expire_max);
    }
    if (rv != 0) {
        goto err;
    }
    for (size_t i = 0; i < batch->n_commands; i++) {
        int status = 0;
        uint8_t *body = NULL;
        size_t body_len = 0;
        rv = apply_command(r, spec, ctx, now_ms, batch->commands[i], &status, &body, &body_len);
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
    rv = rsm_commit_entry(r, index);
    if (rv != 0) {
        goto err;
    }
    geoscale__cell_batch__free_unpacked(batch, NULL);
    *n_results = n;
    return 0;
err:
    log_error(spec->log_name, "event=apply_failed %s=%" PRIu64 " index=%" PRIu64 " code=%s",
              spec->log_id, r->identity, index, gs_error_name(rv));
    for (size_t i = 0; i < n; i++) {
        free(results[i].body);
        results[i].body = NULL;
        results[i].len = 0;
    }
    rsm_abort_entry(r);
    geoscale__cell_batch__free_unpacked(batch, NULL);
    return rv;
}

/* ---------------------------------------------------------------- digest */

static void digest_put(crypto_generichash_state *st, const char *p, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crypto_generichash_update(st, len, sizeof len);
    crypto_generichash_update(st, (const unsigned char *)p, n);
}

/* The rows of the default column family in key order, then the point
 * rows' in key order. 'S' applied_index is excluded: it is node-local
 * bookkeeping (a replica that consumed extra non-command entries has the
 * same data). ro must have total_order_seek (a hash memtable's iterator
 * is otherwise one of a prefix). */
static int digest_scan(struct rsm *r, const rocksdb_readoptions_t *ro, uint8_t digest[32],
                       uint64_t *n_keys)
{
    crypto_generichash_state st;
    uint64_t n = 0;
    int rv = 0;

    crypto_generichash_init(&st, NULL, 0, 32);
    for (size_t i = 0; i < 2 && rv == 0 && r->cf[i] != NULL; i++) {
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, ro, r->cf[i]);
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
        rv = rsm_iter_status(it);
        rocksdb_iter_destroy(it);
    }
    if (rv != 0) {
        return rv;
    }
    crypto_generichash_final(&st, digest, 32);
    *n_keys = n;
    return 0;
}

int rsm_digest(struct rsm *r, uint8_t digest[32], uint64_t *n_keys)
{
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_total_order_seek(ro, 1);
    int rv = digest_scan(r, ro, digest, n_keys);
    rocksdb_readoptions_destroy(ro);
    return rv;
}

int rsm_digest_begin(struct rsm *r, struct rsm_digest_job *job)
{
    memset(job, 0, sizeof *job);
    job->readopts = rocksdb_readoptions_create();
    if (job->readopts == NULL) {
        return GS_ENOMEM;
    }
    job->r = r;
    job->snapshot = rocksdb_create_snapshot(r->db);
    rocksdb_readoptions_set_snapshot(job->readopts, job->snapshot);
    rocksdb_readoptions_set_total_order_seek(job->readopts, 1);
    /* Nothing applies between the snapshot and this read: same thread. */
    job->applied_index = r->applied_index;
    pthread_mutex_lock(&r->digest_lock);
    r->digests_running++;
    pthread_mutex_unlock(&r->digest_lock);
    return 0;
}

void rsm_digest_run(struct rsm_digest_job *job)
{
    struct rsm *r = job->r;
    job->status = digest_scan(r, job->readopts, job->digest, &job->n_keys);
    rocksdb_readoptions_destroy(job->readopts);
    rocksdb_release_snapshot(r->db, job->snapshot);
    job->readopts = NULL;
    job->snapshot = NULL;
    pthread_mutex_lock(&r->digest_lock);
    r->digests_running--;
    pthread_cond_broadcast(&r->digest_done);
    pthread_mutex_unlock(&r->digest_lock);
}

/* ---------------------------------------------------------------- checkpoint hooks */

void rsm_detach(struct rsm *r)
{
    assert(!r->in_entry);
    if (r->db == NULL) {
        return;
    }
    rsm_wait_digests(r);
    if (rsm_sync(r) != 0) {
        log_error(r->kind, "event=close_sync_failed %s=%" PRIu64, r->kind, r->identity);
    }
    rsm_close_db(r);
    r->applied_index = 0;
    forget_committed_state(r);
}

int rsm_attach(struct rsm *r, char *errmsg, size_t errmsg_len)
{
    char scratch[1];
    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    assert(r->db == NULL);
    forget_committed_state(r);
    rocksdb_options_set_create_if_missing(r->options, 0);
    int rv = rsm_open_db(r, errmsg, errmsg_len);
    rocksdb_options_set_create_if_missing(r->options, 1);
    if (rv != 0) {
        return rv;
    }
    rv = rsm_check_db(r, false, errmsg, errmsg_len);
    if (rv != 0) {
        rsm_close_db(r);
        r->applied_index = 0;
    }
    return rv;
}

/* Read a u64 'S' key of a DB opened outside an rsm: 0, GS_ENOTFOUND or
 * GS_EIO. */
static int probe_u64(rocksdb_t *db, const rocksdb_readoptions_t *ro, const char *name,
                     uint64_t *out)
{
    struct key k;
    char *err = NULL;
    size_t len = 0;
    key_system(&k, name);
    char *v = rocksdb_get(db, ro, (const char *)k.b, k.len, &len, &err);
    if (err != NULL) {
        rocksdb_free(err);
        return GS_EIO;
    }
    if (v == NULL) {
        return GS_ENOTFOUND;
    }
    int rv = len == 8 ? 0 : GS_EIO;
    if (rv == 0) {
        *out = key_get_u64((const uint8_t *)v);
    }
    rocksdb_free(v);
    return rv;
}

int rsm_probe(const struct rsm *r, const char *dir, uint64_t *applied, char *errmsg,
              size_t errmsg_len)
{
    char *err = NULL;
    char scratch[1];
    uint64_t schema = 0, identity = 0, index = 0;
    int rv;

    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    if (r->options == NULL || dir == NULL) {
        snprintf(errmsg, errmsg_len, "probe: no options or no directory");
        return GS_EINVAL;
    }
    rocksdb_t *db = rocksdb_open_for_read_only(r->options, dir, 0, &err);
    if (err != NULL) {
        snprintf(errmsg, errmsg_len, "database does not open: %s", err);
        rocksdb_free(err);
        return GS_EINVAL;
    }
    rv = probe_u64(db, r->readopts, KEY_SYS_SCHEMA, &schema);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "%s",
                 rv == GS_EIO ? "cannot read schema version"
                              : "not a database of ours (no schema)");
        rv = rv == GS_EIO ? GS_EIO : GS_EINVAL;
        goto out;
    }
    if (schema == 0 || schema > r->schema_version) {
        snprintf(errmsg, errmsg_len,
                 "database schema %" PRIu64 " is not supported (this build: %" PRIu64 ")", schema,
                 r->schema_version);
        rv = GS_EINVAL;
        goto out;
    }
    rv = probe_u64(db, r->readopts, r->identity_key, &identity);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "not a %s database (no %s)", r->kind, r->identity_key);
        rv = rv == GS_EIO ? GS_EIO : GS_EINVAL;
        goto out;
    }
    if (identity != r->identity) {
        snprintf(errmsg, errmsg_len, "database belongs to %s %" PRIu64 ", not %s %" PRIu64, r->kind,
                 identity, r->kind, r->identity);
        rv = GS_EINVAL;
        goto out;
    }
    rv = probe_u64(db, r->readopts, KEY_SYS_APPLIED_INDEX, &index);
    if (rv == GS_ENOTFOUND) {
        index = 0;
        rv = 0;
    } else if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot read applied index");
        goto out;
    }
    *applied = index;
out:
    rocksdb_close(db);
    return rv;
}
