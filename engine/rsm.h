/*
 * The replicated state machine base: what every GeoScale Raft group's state
 * machine (cell, directory, metadata) does with its RocksDB, whatever its
 * records are.
 *
 *   - open: a schema version key and a group identity key ('S' system keys)
 *     written at creation and checked at every open, so a node never applies
 *     one group's log to another group's DB;
 *   - entries: rsm_begin_entry() says whether an entry is new (index >
 *     applied_index) and starts an empty write set (engine/wset.h); reads
 *     during the entry see the DB plus the entry's earlier writes; reads
 *     in and out of entries go through a bounded cache of committed rows
 *     (engine/rcache.h) that every commit keeps equal to the DB;
 *     rsm_commit_entry() writes the set with 'S' applied_index = index as one
 *     unsynced WriteBatch (the Raft log is the durable record; a crash before
 *     it means a replay that the index check turns into exactly-once);
 *   - idempotency rows: the outcome of a client command at 'R'+client_id+
 *     client_seq, with a time index row per entry, 'r'+ts+0+index, listing
 *     the outcomes the entry stored, expired by batch time, a bounded
 *     number of outcomes per entry, each walk starting where the last one
 *     stopped ('S' results_expired); a command above its client's
 *     mark (engine/rmarks.h) is new without a read of its row;
 *   - the apply loop: rsm_apply_entry() decodes an entry (engine/entry.h),
 *     runs its commands through the state machine's handler, answers
 *     remembered commands from their idempotency rows, and commits or aborts
 *     the entry; a state machine supplies a struct rsm_apply_spec;
 *   - digest: BLAKE2b-256 over every replicated key and value (everything but
 *     'S' applied_index, which is node-local bookkeeping);
 *   - sync: rocksdb_flush_wal(db, 1), before libraft may truncate its log;
 *   - checkpoint hooks: rsm_probe() checks a DB directory (a received
 *     checkpoint) read-only against this rsm's schema and identity;
 *     rsm_detach()/rsm_attach() close and reopen the DB in place (after
 *     engine/checkpoint.c swapped its directory), re-checking the identity
 *     and reloading applied_index. Checkpoints of any rsm are made and
 *     installed by engine/checkpoint.h.
 *
 * Keys 'S', 'R' and 'r' belong to the base (layout in keys.h); a state
 * machine built on it uses other prefix bytes for its records.
 *
 * Threading: an rsm is used by one thread at a time (the group's loop
 * thread). Reads outside an entry read the DB directly.
 */
#ifndef GS_ENGINE_RSM_H
#define GS_ENGINE_RSM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <rocksdb/c.h>

#include "keys.h"
#include "rcache.h"
#include "rmarks.h"
#include "wset.h"

struct rsm_options {
    const char *db_path;      /* RocksDB directory; created if missing */
    bool compression;         /* false for residency scans */
    const char *kind;         /* "cell", "directory": log component, messages */
    uint64_t schema_version;  /* written at creation; 1..this opens */
    const char *identity_key; /* system key name of the group id (KEY_SYS_*) */
    uint64_t identity;        /* written at creation, checked on open */
    /* Point rows: keys of point_key_len bytes starting with point_prefix
     * (0: none) are only ever read and written by key, never iterated
     * inside an entry, and live in a column family of their own whose
     * memtable is a hash table (an insert is a bucket's, not a search of a
     * skiplist); the digest, checkpoints and close cover it. An older
     * schema's point rows are moved into it at open. */
    uint8_t point_prefix;
    size_t point_key_len;
};

/* Embedded by value in the state machine that uses it. The fields are the
 * base's own (rsm.c, and engine/checkpoint.c for the DB handle and path). */
struct rsm {
    rocksdb_t *db; /* NULL only between detach and attach */
    rocksdb_options_t *options;
    /* Column families while db is open: [0] the default, [1] the point
     * rows' (NULL without point rows), opened with point_options. */
    rocksdb_column_family_handle_t *cf[2];
    rocksdb_options_t *point_options;
    uint8_t point_prefix;
    size_t point_key_len;
    rocksdb_readoptions_t *readopts;
    /* rsm_iter_below()'s: its bound, read by RocksDB for as long as the
     * iterator lives. */
    rocksdb_readoptions_t *below_readopts;
    struct key below;
    rocksdb_writeoptions_t *writeopts; /* sync = 0 */
    /* The current entry's writes: a write set; once the entry asks for an
     * iterator over the DB and its own writes (wbwi), also a
     * WriteBatchWithIndex holding the same writes, whose merged iterator
     * RocksDB provides. Both reused from entry to entry. */
    struct wset ws;
    rocksdb_writebatch_wi_t *wb;
    rocksdb_writebatch_t *batch; /* the commit of an entry without wbwi */
    bool wbwi;                   /* this entry's writes are also in wb */
    int entry_error;             /* a write that failed (GS_ENOMEM): commit fails */
    struct rcache cache;         /* committed rows read recently (rcache.h) */
    struct rmarks marks;         /* per client, a bound of its stored outcomes (rmarks.h) */
    char *db_path;                     /* owned */
    uint64_t applied_index;            /* cache of 'S' applied_index */
    bool in_entry;                     /* between begin_entry and commit/abort */
    /* 'S' results_expired as the current entry sees it, read at most once
     * per entry (rsm_result_put needs it for every command) */
    bool expired_known;
    int64_t expired_ms;
    /* The current entry's index, and the outcomes it stored not yet in
     * its time index row: (client_id, client_seq) pairs, 16 bytes each,
     * big-endian, indexed at pending_ts (rsm_result_put). */
    uint64_t entry_index;
    uint8_t *pending;
    size_t pending_len, pending_cap;
    int64_t pending_ts;
    const char *kind;                  /* static string of the options */
    const char *identity_key;
    uint64_t identity;
    uint64_t schema_version;
    /* Digests running off the owner's thread (rsm_digest_begin): close and
     * detach wait for them, since they read the DB through a snapshot. */
    pthread_mutex_t digest_lock;
    pthread_cond_t digest_done;
    unsigned digests_running;
};

/* A digest computed on another thread over a RocksDB snapshot taken by
 * rsm_digest_begin(): the state and applied index of that moment. */
struct rsm_digest_job {
    struct rsm *r;
    const rocksdb_snapshot_t *snapshot;
    rocksdb_readoptions_t *readopts;
    uint64_t applied_index; /* at begin */
    uint8_t digest[32];     /* results of rsm_digest_run() */
    uint64_t n_keys;
    int status;
};

/* ---------------------------------------------------------------- lifecycle */

/*
 * Open (creating if needed) the DB at opts->db_path into *r (caller memory,
 * zeroed or not). A crash in the middle of a checkpoint install is first
 * finished or undone (checkpoint_recover_swap). A new, empty DB gets the
 * schema and identity keys (written synced); an existing one must have a
 * schema in 1..opts->schema_version and the same identity, and one of an
 * older schema is upgraded (its point rows moved to their family, then the
 * schema stamped, each synced). A DB with a column family this rsm does
 * not have is refused before anything is written. On failure nothing
 * is held, *r may be passed to rsm_close() (a no-op) and errmsg has one line.
 * Returns 0, GS_EINVAL (another group's DB, bad options), GS_ENOMEM or GS_EIO
 * (also: unsupported schema, or data without a schema).
 */
int rsm_open(struct rsm *r, const struct rsm_options *opts, char *errmsg, size_t errmsg_len);

/* Open the database of one shard of a sharded group (directory, metadata):
 * n_shards 0 means 1; shard_id must be below it and becomes the identity
 * (opts->identity is ignored). On success *n_shards_out is the shard count
 * and an "open" line is logged; on failure an "open_failed" line. */
int rsm_open_shard(struct rsm *r, const struct rsm_options *opts, uint32_t shard_id,
                   uint32_t n_shards, uint32_t *n_shards_out, char *errmsg, size_t errmsg_len);

/* Sync the WAL, close the DB and free what r holds (not r itself). A closed
 * or failed-open rsm is ok. */
void rsm_close(struct rsm *r);

/* Highest Raft index whose effects are in the DB. */
uint64_t rsm_applied_index(const struct rsm *r);

/* Make everything committed so far durable: rocksdb_flush_wal(db, 1).
 * Returns 0 or GS_EIO. */
int rsm_sync(struct rsm *r);

/* ---------------------------------------------------------------- entries */

/*
 * Start applying the entry at `index`: false if index <= applied_index (a
 * replay: skip the entry, write nothing), else true with an empty batch and
 * the rsm in the entry until rsm_commit_entry() or rsm_abort_entry().
 */
bool rsm_begin_entry(struct rsm *r, uint64_t index);

/* An entry with nothing for the state machine (a barrier, a configuration
 * change) at `index`: only the applied index moves, unless it is a replay.
 * 0 or GS_EIO. */
int rsm_apply_empty(struct rsm *r, uint64_t index);

/* Write the entry's batch plus applied_index = index as one unsynced
 * WriteBatch, and leave the entry. Returns 0, GS_EIO or GS_ENOMEM (a write
 * of the entry could not be recorded); on failure nothing is written and
 * applied_index is unchanged: the replica must stop. */
int rsm_commit_entry(struct rsm *r, uint64_t index);

/* Drop the entry's batch and leave the entry. */
void rsm_abort_entry(struct rsm *r);

/* ---------------------------------------------------------------- key-value */

/* Read a value: in an entry the entry's own writes first, then the row
 * cache, then the DB (whose answer is cached). Returns 0 with *val (free
 * with rocksdb_free or free) and *len, GS_ENOTFOUND, GS_ENOMEM or GS_EIO. */
int rsm_get(struct rsm *r, const struct key *k, char **val, size_t *len);
/* 0 and *exists, or GS_EIO. */
int rsm_exists(struct rsm *r, const struct key *k, bool *exists);
/* Read a u64 BE value: 0, GS_ENOTFOUND or GS_EIO (also a value not 8 bytes). */
int rsm_get_u64(struct rsm *r, const struct key *k, uint64_t *v);
/* The same, with an absent key read as 0. 0 or GS_EIO. */
int rsm_get_u64_or_0(struct rsm *r, const struct key *k, uint64_t *v);
/* Read and unpack a stored message: 0 and *out (free with
 * protobuf_c_message_free_unpacked), GS_ENOTFOUND, or GS_EIO (also a value
 * that does not unpack). */
int rsm_get_msg(struct rsm *r, const struct key *k, const ProtobufCMessageDescriptor *desc,
                ProtobufCMessage **out);

/* Writes into the entry's batch; only inside an entry (asserted). A write
 * that cannot be recorded (out of memory) makes rsm_commit_entry() fail. */
void rsm_put(struct rsm *r, const struct key *k, const void *val, size_t len);
void rsm_put_u64(struct rsm *r, const struct key *k, uint64_t v);
/* 0 or GS_ENOMEM. */
int rsm_put_msg(struct rsm *r, const struct key *k, const ProtobufCMessage *msg);
void rsm_delete(struct rsm *r, const struct key *k);

/* An iterator over the DB, merged with the batch inside an entry (once an
 * entry has written something, its later reads and writes go through a
 * WriteBatchWithIndex: an entry that iterates pays for the index). The
 * caller destroys it with rocksdb_iter_destroy() before the batch is
 * written again or the entry ends. Never NULL. */
rocksdb_iterator_t *rsm_iter(struct rsm *r);
/* The same, ending before `upper`. Where a walk ends at a key with deleted
 * rows after it, RocksDB would otherwise step over their tombstones to the
 * next live key. One such iterator at a time per rsm. */
rocksdb_iterator_t *rsm_iter_below(struct rsm *r, const struct key *upper);
/* GS_EIO if the iterator reported an error, else 0. */
int rsm_iter_status(rocksdb_iterator_t *it);

/* Pack msg into a malloc'd buffer (never NULL on success, even for an empty
 * message). 0 or GS_ENOMEM; the caller frees *body with free(). */
int rsm_pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len);

/* ---------------------------------------------------------------- idempotency */

/* How a remembered body relates to its request (rsm_apply_spec.restore). */
struct rsm_result_form {
    bool partial;          /* the body lacks what the request restores */
    uint64_t request_hash; /* rsm_request_hash() of that request */
};

/* The fingerprint of a request body kept with a partial outcome:
 * SipHash-2-4 under an all-zero key (equality, not secrecy). */
uint64_t rsm_request_hash(const uint8_t *body, size_t len);

/*
 * The remembered outcome of client command (client_id, client_seq): 0 and
 * *found; when found, *status (0 or a GS_E* code) and, for status 0, *body
 * (malloc'd, never NULL; the caller frees it) and *len, the body as stored,
 * and *form if form is not NULL. Fatal codes: GS_EIO, GS_ENOMEM.
 */
int rsm_result_get(struct rsm *r, uint64_t client_id, uint64_t client_seq, bool *found, int *status,
                   uint8_t **body, size_t *len, struct rsm_result_form *form);

/* A batch time stored as 'S' name (a u64 BE of the int64): 0 with *ts_ms,
 * INT64_MIN when absent; or GS_EIO. */
int rsm_get_sys_time(struct rsm *r, const char *name, int64_t *ts_ms);

/* Remember an outcome at batch time now_ms (the body only for status 0;
 * form NULL: the whole response), indexed at now_ms or, if the expiry has
 * already passed it (a leader's clock behind), at the expiry's cursor.
 * The outcomes an entry stores at one time share one time index row,
 * written when the entry commits or iterates. Inside an entry; client_id
 * not 0. 0, GS_EINVAL, GS_ENOMEM or GS_EIO. */
int rsm_result_put(struct rsm *r, int64_t now_ms, uint64_t client_id, uint64_t client_seq,
                   int status, const uint8_t *body, size_t len,
                   const struct rsm_result_form *form);

/* Delete at most max remembered outcomes stored before now_ms - ttl_ms, the
 * oldest first (an index row of which only some are deleted is rewritten
 * with the rest), and record where the walk stopped: the next one starts
 * there, not at the index's first key, so it steps over none of the
 * tombstones the deletes before it left. Inside an entry. 0, GS_ENOMEM or
 * GS_EIO. */
int rsm_results_expire(struct rsm *r, int64_t now_ms, int64_t ttl_ms, size_t max);

/* ---------------------------------------------------------------- apply loop */

struct cell_result; /* cell_fsm.h: the result type of every group */

/*
 * Run one command of an entry: decode `body` as the request of `method`,
 * check it and apply it through the state machine's context `ctx`, at batch
 * time now_ms. Returns the command's status (0 with *out, malloc'd and then
 * owned by the caller, and *out_len; or a non-fatal GS_E* code with *out
 * NULL) or a code the spec's is_fatal() accepts.
 *
 * `partial` is NULL unless the outcome will be remembered and the spec can
 * restore. Then a successful command may set *partial (malloc'd, owned by
 * the caller) and *partial_len to its response less what its request
 * restores, to be remembered instead of *out: the spec's restore() must
 * rebuild *out from it and the same request, byte for byte.
 */
typedef int (*rsm_command_fn)(void *ctx, uint32_t method, const uint8_t *body, size_t len,
                              int64_t now_ms, uint8_t **out, size_t *out_len, uint8_t **partial,
                              size_t *partial_len);

/* Rebuild a response from its partial form and its request (the inverse of
 * what the command stored). 0 with *out (malloc'd) and *out_len, GS_ENOMEM,
 * or GS_EINTERNAL if the two do not decode. */
typedef int (*rsm_restore_fn)(uint32_t method, const uint8_t *request, size_t request_len,
                              const uint8_t *partial, size_t partial_len, uint8_t **out,
                              size_t *out_len);

/* What differs between the state machines that share rsm_apply_entry(). */
struct rsm_apply_spec {
    const char *log_name;                /* log component: "cell", "directory", ... */
    const char *log_id;                  /* name of r->identity in log lines: "cell", "shard" */
    rsm_command_fn run;                  /* runs one command */
    bool (*is_fatal)(int rv);            /* true: the entry fails, nothing commits */
    bool (*remembered)(uint32_t method); /* false: never stored (reads) */
    rsm_restore_fn restore;              /* optional: commands may store partial outcomes */
    /* Optional, before the idempotency rows expire: per-entry housekeeping
     * of the state machine at batch time. 0 or a fatal code. */
    int (*begin)(void *ctx, int64_t now_ms);
    int64_t result_ttl_ms;    /* stored outcomes older than this expire ... */
    size_t result_expire_max; /* ... at most this many per entry */
};

/*
 * Apply the Raft entry at `index` (engine/entry.h's format, a CellBatch; a
 * wire-compatible batch such as DirectoryBatch decodes the same):
 *   - a replay (index <= applied_index) is skipped: 0, *n_results 0;
 *   - an entry that does not decode is logged and consumed (applied_index
 *     advances, nothing else is written): every replica skips it alike;
 *   - otherwise spec->begin() (if any), then at most spec->result_expire_max
 *     stored outcomes older than spec->result_ttl_ms of the batch's
 *     timestamp_ms are deleted, then each command runs in order: a command
 *     with client_id != 0 whose method is remembered returns its stored
 *     outcome if there is one, else it runs and its outcome is stored
 *     (partial when the command offers it: a retry's response is restored
 *     from the partial form and the retry's request, and a retry whose
 *     request differs from the stored one's, by request_hash, gets
 *     GS_EINVAL: the client reused a seq for another request);
 *   - the entry commits with applied_index = index.
 * The outcomes of the first max_results commands go to results[] (each body
 * owned by the caller, free with free()), the rest are freed; *n_results is
 * how many. A fatal code (spec->is_fatal(), or GS_EIO/GS_ENOMEM of the base)
 * aborts the entry: nothing is written, results[] holds nothing, and the
 * code is returned; the replica must stop.
 */
int rsm_apply_entry(struct rsm *r, uint64_t index, const void *entry, size_t len,
                    const struct rsm_apply_spec *spec, void *ctx, struct cell_result *results,
                    size_t max_results, size_t *n_results);

/* ---------------------------------------------------------------- digest */

/* BLAKE2b-256 over every key but 'S' applied_index, in key order, of
 * len32be(key) || key || len32be(value) || value; *n_keys the count. Reads
 * the DB (not a pending batch). 0 or GS_EIO. */
int rsm_digest(struct rsm *r, uint8_t digest[32], uint64_t *n_keys);

/*
 * The same digest without holding the owner's thread for the whole scan (a
 * million users take seconds, longer than an election timeout): begin, on
 * the owner's thread, takes a RocksDB snapshot and the applied index; run,
 * on any thread, scans the snapshot into job->digest/n_keys/status and
 * releases it. Until run returns, rsm_close() and rsm_detach() wait. begin
 * returns 0 or GS_ENOMEM (then run must not be called).
 */
int rsm_digest_begin(struct rsm *r, struct rsm_digest_job *job);
void rsm_digest_run(struct rsm_digest_job *job);

/* ---------------------------------------------------------------- checkpoint hooks */

/* Sync and close the DB; the rsm then has no DB (applied_index 0) until
 * rsm_attach(). Not inside an entry. */
void rsm_detach(struct rsm *r);

/* Reopen the DB at r->db_path, which must exist (not created), check its
 * schema and identity and load applied_index. On failure the rsm still has
 * no DB. Returns 0, GS_EINVAL or GS_EIO with one line in errmsg. */
int rsm_attach(struct rsm *r, char *errmsg, size_t errmsg_len);

/*
 * Open the DB in `dir` read-only (it is not created, nothing is written) and
 * check that it is one this rsm could attach: a schema in
 * 1..r->schema_version and the identity key of r with r's identity (so a
 * directory DB is never taken for a metadata one, nor one cell's for
 * another's). *applied receives its applied index (0 if none). The rsm
 * itself is not touched. Returns 0, GS_EINVAL (does not open, or not this
 * group's DB, or an unsupported schema) or GS_EIO, with one line in errmsg.
 */
int rsm_probe(const struct rsm *r, const char *dir, uint64_t *applied, char *errmsg,
              size_t errmsg_len);

#endif /* GS_ENGINE_RSM_H */
