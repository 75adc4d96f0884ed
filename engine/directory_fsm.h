/*
 * The directory state machine: user_id -> cell, cell -> region + members,
 * and HMAC(username) -> user_id, over one RocksDB database (contract of the
 * records and commands in include/geoscale/directory.proto). No PII: the
 * directory stores ids, 32-byte username hashes, region names, node
 * addresses and counters, nothing else.
 *
 * Signup, as the directory sees it:
 *   1. ReserveUsername(hash, region): the hash is held (RESERVED) for
 *      DIRECTORY_RESERVATION_TTL_MS of batch time, and the user is placed in
 *      the least-loaded accepting cell of the region (load = user_count +
 *      reserved_count, ties to the lowest cell_id) with a fresh user id
 *      (cell_id << 40 | per-cell sequence, the cell FSM's scheme);
 *   2. the node creates the user in that cell;
 *   3. ConfirmUsername(hash, user_id): CONFIRMED forever, the route is
 *      written, the cell's user_count grows; or ReleaseUsername if step 2
 *      failed. A reservation that is neither confirmed nor released expires:
 *      a signup that dies half-way leaves no stuck name.
 *
 * Version. A counter bumped by every change of a route or of a cell's routing
 * fields (creation, members, accepting), returned by the lookups, so route
 * caches can tell that they are stale. Load counters (user_count moves only
 * with a new route anyway, reserved_count) do not bump it.
 *
 * Sharding seam (DESIGN.md, "Growing past one group"). At a billion users
 * the directory is N groups ("shards"), N fixed in the cluster config.
 * A shard owns the users with directory_user_shard(user_id, N) == shard and
 * the username hashes with directory_username_shard(hash, N) == shard; this
 * FSM is one shard and needs no other change for that: ReserveUsername goes
 * to the shard of the name, which allocates a user id that hashes to itself
 * (it skips sequence numbers that hash elsewhere), so a signup touches one
 * shard and GetRoute(user_id) knows where to go from the id alone. Cell
 * records are small and registered in every shard (RegisterCell is
 * idempotent); each shard balances its own users over them, which balances
 * the whole since shards are uniform. A request for a user or a name of
 * another shard is refused with GS_EWRONGCELL. With N = 1 (the default)
 * every user and name is the single shard's, and sequence numbers are dense.
 *
 * Threading, durability and determinism: as the cell FSM (cell_fsm.h); both
 * are built on the same base (rsm.h).
 */
#ifndef GS_ENGINE_DIRECTORY_FSM_H
#define GS_ENGINE_DIRECTORY_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cell_fsm.h" /* struct cell_result: the result type of every group */
#include "directory.pb-c.h"

#define DIRECTORY_SCHEMA_VERSION 2 /* 2: as the cell's (cell_internal.h) */
#define DIRECTORY_RESERVATION_TTL_MS INT64_C(60000)
#define DIRECTORY_HASH_LEN 32
#define DIRECTORY_REGION_MAX 32
#define DIRECTORY_MEMBERS_MAX 7
#define DIRECTORY_ADDRESS_MAX 255

struct directory_fsm;

struct directory_fsm_options {
    const char *db_path; /* RocksDB directory; created if missing */
    uint32_t shard_id;   /* stored at creation, checked on open; < n_shards */
    uint32_t n_shards;   /* 0 or 1: one unsharded directory */
    bool compression;    /* false for residency scans */
};

/* Open (creating if needed) the directory database. On failure returns a
 * GS_E* code and writes one line of detail to errmsg. */
int directory_fsm_open(const struct directory_fsm_options *opts, struct directory_fsm **out,
                       char *errmsg, size_t errmsg_len);

/* Close the database (syncing the WAL first) and free the fsm. NULL is ok. */
void directory_fsm_close(struct directory_fsm *fsm);

/* Highest Raft index whose effects are in the database. */
uint64_t directory_fsm_applied_index(const struct directory_fsm *fsm);

/*
 * Apply the directory entry at `index` (engine/entry.h's format; a packed
 * DirectoryBatch, which has CellBatch's field numbers and wire types, so
 * entry_encode() of a CellBatch whose methods are command kinds is the same
 * bytes): exactly as cell_fsm_apply() (rsm_apply_entry()), with command
 * kinds for methods. Before the commands, at most DIRECTORY_EXPIRE_MAX
 * reservations expired by the batch's timestamp are deleted, and stored
 * idempotency results older than an hour (as in a cell). results[i].body is
 * the packed *Response of command i's kind.
 */
int directory_fsm_apply(struct directory_fsm *fsm, uint64_t index, const void *entry, size_t len,
                        struct cell_result *results, size_t max_results, size_t *n_results);

/* Record that `index` was consumed without commands. */
int directory_fsm_apply_empty(struct directory_fsm *fsm, uint64_t index);

/* Serve a read kind (GET_ROUTE, LOOKUP_USERNAME, LIST_CELLS) from the current
 * state; as cell_fsm_read(). A write kind gives GS_EUNIMPL. */
int directory_fsm_read(struct directory_fsm *fsm, uint32_t kind, const uint8_t *body, size_t len,
                       struct cell_result *out);

/* Check a request body of `kind` before it is proposed: it decodes, fields
 * are present and within limits. Returns 0 or GS_EINVAL / GS_ETOOBIG /
 * GS_EUNIMPL with one line in errmsg (field names, never values). Stateless
 * and thread-safe. */
int directory_validate_request(uint32_t kind, const uint8_t *body, size_t len, char *errmsg,
                               size_t errmsg_len);

struct rsm;

/* The fsm's replicated-state-machine base (engine/rsm.h), for what works on
 * any group's state machine: checkpoints (engine/checkpoint.h). The fsm
 * keeps ownership; valid until directory_fsm_close(). */
struct rsm *directory_fsm_rsm(struct directory_fsm *fsm);

/* Make everything applied so far durable (rocksdb_flush_wal with sync). */
int directory_fsm_sync(struct directory_fsm *fsm);

/* BLAKE2b-256 over every replicated key and value, as cell_fsm_digest(). */
int directory_fsm_digest(struct directory_fsm *fsm, uint8_t digest[32], uint64_t *n_keys);

/* The shard of a user / of a username hash among n_shards (0 or 1: 0).
 * Pure; the same on every node. */
uint32_t directory_user_shard(uint64_t user_id, uint32_t n_shards);
uint32_t directory_username_shard(const uint8_t hash[DIRECTORY_HASH_LEN], uint32_t n_shards);

#endif /* GS_ENGINE_DIRECTORY_FSM_H */
