/*
 * The metadata state machine: the non-PII metadata of every user (user_id,
 * home region, cell, status, plan, created_at, profile version, counts), as
 * shipped by the cells' outboxes, over one RocksDB database (messages in
 * include/geoscale/metadata.proto). Voters in three regions and a standby
 * replica in every other region apply the same log, so every region answers
 * metadata reads locally.
 *
 * Entries are engine/entry.h's format (a CellBatch of CellCommands), as for
 * every group; this state machine serves two methods:
 *
 *   METHOD_METADATA_APPLY  write: MetadataApplyRequest {origin_cell, rows}.
 *       Per origin cell the highest seq applied is kept. Rows at or below it
 *       are skipped (delivery is at-least-once: a new cell leader re-ships
 *       what was not acknowledged); the first row above it must be exactly
 *       that seq + 1, else the whole command is refused with GS_EINVAL and
 *       nothing of it is applied (a gap means the shipper lost rows: better
 *       loud than silently missing changes). Each applied row upserts the
 *       user's metadata, or deletes it when deleted is set. The response
 *       says the origin's highest seq applied, also for a command of
 *       skipped rows only, or of no rows (a probe).
 *   METHOD_METADATA_GET    read: MetadataGetRequest {user_id}, answered from
 *       the local state with no barrier (on any replica, voter or standby),
 *       with the replica's applied_index; GS_ENOTFOUND if absent.
 *
 * Anything else in an entry is GS_EUNIMPL for that command.
 *
 * Only known fields are stored: a row is copied field by field into a fresh
 * UserMetadata before it is packed, so a field that a newer (or wrong)
 * sender added never reaches the disk of any region.
 *
 * Key layout (one prefix byte, big-endian fixed-width ids; the base owns
 * 'S', 'R' and 'r', see rsm.h):
 *
 *   'S' "schema" | "metadata_shard" | "applied_index"   (base)
 *   'O' cell_id(8)      highest seq applied from that origin cell, u64
 *   'M' user_id(8)      UserMetadata
 *
 * Sharding seam (DESIGN.md, "Growing past one group"): at scale the metadata
 * is N groups, a user's shard being metadata_user_shard(user_id, N); a
 * shard refuses rows and reads of another shard's users (GS_EWRONGCELL), and
 * a cell then numbers its outbox rows per (cell, shard). With N = 1 (the
 * default) everything is the single shard's.
 *
 * Threading, durability and determinism: as the cell FSM (cell_fsm.h); both
 * are built on the same base (rsm.h), through which engine/checkpoint.h makes
 * and installs its checkpoints (metadata_fsm_rsm()).
 */
#ifndef GS_ENGINE_METADATA_FSM_H
#define GS_ENGINE_METADATA_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cell_fsm.h" /* struct cell_result: the result type of every group */

#define METADATA_SCHEMA_VERSION 2 /* 2: as the cell's (cell_internal.h) */
#define METADATA_ROWS_MAX 1024                         /* rows per MetadataApplyRequest */
#define METADATA_REGION_MAX 32                         /* home_region: 1..32 bytes of [a-z0-9-] */
#define METADATA_PLAN_MAX 32                           /* as a cell's plan */
#define METADATA_CELL_ID_MAX ((UINT32_C(1) << 24) - 1) /* cell ids: 1..this */

struct metadata_fsm;

struct metadata_fsm_options {
    const char *db_path; /* RocksDB directory; created if missing */
    uint32_t shard_id;   /* stored at creation, checked on open; < n_shards */
    uint32_t n_shards;   /* 0 or 1: one unsharded metadata group */
    bool compression;    /* false for residency scans */
};

/* Open (creating if needed) the metadata database. On failure returns
 * GS_EINVAL (bad options, another group's DB), GS_ENOMEM or GS_EIO and writes
 * one line of detail to errmsg; *out is NULL. */
int metadata_fsm_open(const struct metadata_fsm_options *opts, struct metadata_fsm **out,
                      char *errmsg, size_t errmsg_len);

/* Close the database (syncing the WAL first) and free the fsm. NULL is ok. */
void metadata_fsm_close(struct metadata_fsm *fsm);

/* Highest Raft index whose effects are in the database. */
uint64_t metadata_fsm_applied_index(const struct metadata_fsm *fsm);

/*
 * Apply the entry at `index` (engine/entry.h format), exactly as
 * cell_fsm_apply(): skipped if index <= applied_index; else every command in
 * order into one WriteBatch with applied_index = index; results[i] is the
 * outcome of command i (body: the packed response of its method, freed by
 * the holder with free()); a command's failure is its own result; an
 * undecodable entry still advances applied_index; commands with client_id
 * != 0 are remembered and answered again on a repeat (stored results expire
 * after an hour of batch time). Returns 0, or GS_EIO / GS_ENOMEM with
 * nothing of the entry written (the replica must stop).
 */
int metadata_fsm_apply(struct metadata_fsm *fsm, uint64_t index, const void *entry, size_t len,
                       struct cell_result *results, size_t max_results, size_t *n_results);

/* Record that `index` was consumed without commands. Same skipping rule. */
int metadata_fsm_apply_empty(struct metadata_fsm *fsm, uint64_t index);

/* Serve METHOD_METADATA_GET from the current state (no barrier); as
 * cell_fsm_read(): 0 and out->body (malloc'd packed MetadataGetResponse), or
 * a negative code (GS_ENOTFOUND, GS_EINVAL, GS_EWRONGCELL, GS_EIO ...) with
 * out->body NULL; out->status equals the return value. Any other method:
 * GS_EUNIMPL. */
int metadata_fsm_read(struct metadata_fsm *fsm, uint32_t method, const uint8_t *body, size_t len,
                      struct cell_result *out);

/* Check a request body of `method` before it is proposed or served: it
 * decodes, fields are present and within limits, rows are consecutive. The
 * state-dependent rule (the first new row continues the origin's sequence)
 * is checked at apply. Returns 0 or GS_EINVAL / GS_ETOOBIG / GS_EUNIMPL with
 * one line in errmsg (field names and row positions, never values).
 * Stateless and thread-safe. */
int metadata_validate_request(uint32_t method, const uint8_t *body, size_t len, char *errmsg,
                              size_t errmsg_len);

/* The highest seq applied from origin cell `origin_cell` (0 if none) as of
 * the last committed entry. 0 or GS_EIO. */
int metadata_fsm_origin_seq(struct metadata_fsm *fsm, uint32_t origin_cell, uint64_t *seq);

struct rsm;

/* The fsm's replicated-state-machine base (engine/rsm.h), for what works on
 * any group's state machine: checkpoints (engine/checkpoint.h). The fsm
 * keeps ownership; valid until metadata_fsm_close(). */
struct rsm *metadata_fsm_rsm(struct metadata_fsm *fsm);

/* Make everything applied so far durable (rocksdb_flush_wal with sync). */
int metadata_fsm_sync(struct metadata_fsm *fsm);

/* BLAKE2b-256 over every replicated key and value, as cell_fsm_digest(). */
int metadata_fsm_digest(struct metadata_fsm *fsm, uint8_t digest[32], uint64_t *n_keys);

/* The shard of a user among n_shards (0 or 1: 0). Pure; the same on every
 * node. */
uint32_t metadata_user_shard(uint64_t user_id, uint32_t n_shards);

#endif /* GS_ENGINE_METADATA_FSM_H */
