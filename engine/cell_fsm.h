/*
 * The cell state machine: profiles, the social graph and settings of the users
 * a cell owns, over one RocksDB database.
 *
 * Threading: a cell_fsm is used by one thread at a time (the Raft group's
 * loop thread). cell_fsm_digest() may be called from that thread only.
 *
 * Durability contract (see shared design, "Durability of the state machine"):
 * - every applied Raft entry is written as ONE RocksDB WriteBatch that also
 *   stores the entry's index as `applied_index`;
 * - an entry whose index is <= applied_index is skipped (replay after restart);
 * - the RocksDB WAL is on but written unsynced: the Raft log is the durable
 *   record. cell_fsm_sync() makes everything applied so far durable (one
 *   fsync of the WAL), and must be called before libraft may truncate its log.
 *
 * Ownership: user_id = cell_id << 40 | seq. A command or read whose subject
 * user (GetUser by id, UpdateUser, Get/SetSettings, List*, the actor of an
 * edge command, the assigned id of CreateUser) belongs to another cell
 * answers GS_EWRONGCELL and changes nothing.
 *
 * Metadata outbox (docs/CLUSTER.md, "Metadata outbox"): every change of a
 * user's metadata (create; update, which bumps the profile version; follower
 * or following counts moved by Follow, Unfollow or Block) writes, in the same
 * WriteBatch, one outbox row per changed user per command: a packed
 * geoscale.MetadataRow {seq, UserMetadata after the change}, no PII. seq is
 * per cell, dense, strictly increasing from 1, assigned in apply. The
 * leader's shipper reads rows with cell_fsm_outbox_read() and, once the
 * metadata group has them, proposes METHOD_OUTBOX_ACK {up_to_seq}, which
 * deletes the rows up to that seq.
 *
 * Edges across cells (engine/edges.c): Follow, Unfollow, Block and Unblock
 * whose target is of another cell apply the actor's side and write, in the
 * same WriteBatch, an edge half {seq, kind, actor_id, target_id} (ids only)
 * to the edge outbox of the target's cell; seq is per destination, dense
 * from 1. The shipper reads one destination's halves with
 * cell_fsm_edge_outbox_read() (also part of METHOD_OUTBOX_READ), delivers
 * them with METHOD_EDGE_APPLY {origin_cell, halves} through the destination
 * cell's log, then proposes METHOD_OUTBOX_ACK {edge_dest_cell,
 * edge_up_to_seq}. EdgeApply keeps the last seq applied per origin cell:
 * halves at or below are skipped, the rest must continue it without a gap
 * (else GS_EINVAL, nothing applied).
 */
#ifndef GS_ENGINE_CELL_FSM_H
#define GS_ENGINE_CELL_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metadata.pb-c.h"

struct cell_fsm;

struct cell_fsm_options {
    const char *db_path;          /* RocksDB directory; created if missing */
    uint32_t cell_id;             /* stored at creation, checked on open */
    const uint8_t *username_key;  /* HMAC key for username hashes */
    size_t username_key_len;      /* 16..64 bytes */
    bool compression;             /* false for residency scans */
    const char *region;           /* the cell's region, 0..32 bytes of [a-z0-9-];
                                     NULL = "" (lone cell). The home_region of
                                     outbox rows; a CreateUser naming another
                                     region is refused (GS_EWRONGCELL). Every
                                     replica of a cell must be given the same. */
    bool lone;                    /* a lone cell (geoscaled --config): no
                                     metadata group reads its outbox, so it
                                     writes none, and drains the rows a
                                     database holds from before (outbox.c).
                                     Every replica must be given the same. */
};

/* Result of one command. `body` is a packed protobuf response message (the
 * *Response message of the command's method) when status == 0, else NULL.
 * The holder frees it with free(). */
struct cell_result {
    int status;      /* 0 or a negative GS_E* code */
    uint8_t *body;
    size_t len;
};

/* Open (creating if needed) the cell database. On failure returns a GS_E*
 * code and writes one line of detail to errmsg. */
int cell_fsm_open(const struct cell_fsm_options *opts,
                  struct cell_fsm **out,
                  char *errmsg,
                  size_t errmsg_len);

/* Close the database (syncing the WAL first) and free the fsm. NULL is ok. */
void cell_fsm_close(struct cell_fsm *fsm);

/* Highest Raft index whose effects are in the database. */
uint64_t cell_fsm_applied_index(const struct cell_fsm *fsm);

/*
 * Apply one Raft entry at `index` (an encoded entry, see engine/entry.h).
 *
 * If index <= applied_index the entry is skipped: nothing is written and
 * *n_results is 0. Otherwise every command is applied in order into one
 * WriteBatch (later commands see earlier ones), together with applied_index =
 * index, and committed. results[i] receives the outcome of command i (at most
 * max_results are filled; the others are applied but their results dropped).
 *
 * Deterministic: the same entry on the same state gives the same writes on
 * every replica. A command that fails (bad body, conflict, ...) changes
 * nothing of its own but does not fail the entry. An entry that cannot be
 * decoded at all still advances applied_index.
 *
 * Returns 0, or GS_EIO / GS_ENOMEM if the entry could not be committed
 * (nothing of it is written; the replica must then stop applying).
 */
int cell_fsm_apply(struct cell_fsm *fsm,
                   uint64_t index,
                   const void *entry,
                   size_t len,
                   struct cell_result *results,
                   size_t max_results,
                   size_t *n_results);

/* Record that `index` was consumed without commands (e.g. an entry of
 * another type). Same skipping rule as cell_fsm_apply. */
int cell_fsm_apply_empty(struct cell_fsm *fsm, uint64_t index);

/*
 * Serve a read-only method (GET_USER, LIST_FOLLOWERS, LIST_FOLLOWING,
 * GET_SETTINGS) from the current state. `body` is the packed request.
 * Returns 0 and fills out (body malloc'd) or a negative GS_E* code with
 * out->body NULL. out->status equals the return value.
 */
int cell_fsm_read(struct cell_fsm *fsm,
                  uint32_t method,
                  const uint8_t *body,
                  size_t len,
                  struct cell_result *out);

/* Check a request body before it is proposed: it decodes as the method's
 * request message, required fields are present, sizes within limits.
 * Returns 0 or GS_EINVAL / GS_ETOOBIG / GS_EUNIMPL, with one line in errmsg
 * (never containing field values). On 0, *subject (if not NULL) receives
 * the user the request is about (method_subject()), so that routing need
 * not decode the body again. Stateless and thread-safe. */
int cell_validate_request(uint32_t method,
                          const uint8_t *body,
                          size_t len,
                          uint64_t *subject,
                          char *errmsg,
                          size_t errmsg_len);

/* ---------------------------------------------------------------- outbox */

/*
 * The outbox rows with seq > after_seq, ascending, as of the last committed
 * entry: at most max_rows (0: none) and, after the first, no more than
 * max_bytes of packed rows in all (the first row is always returned, so one
 * large row cannot stall the shipper). Rows are dense: row i has seq
 * after_seq + 1 + i unless rows up to there were acknowledged already.
 *
 * On success returns 0 with *rows (NULL when *n_rows == 0) owned by the
 * caller, freed with cell_fsm_outbox_free(). Returns GS_ENOMEM or GS_EIO
 * (also for a stored row that does not unpack or whose seq is not its key's)
 * with *rows NULL and *n_rows 0. Call on the group's thread, outside apply.
 */
int cell_fsm_outbox_read(struct cell_fsm *fsm,
                         uint64_t after_seq,
                         size_t max_rows,
                         size_t max_bytes,
                         Geoscale__MetadataRow ***rows,
                         size_t *n_rows);

/* Free what cell_fsm_outbox_read() returned. rows NULL is ok. */
void cell_fsm_outbox_free(Geoscale__MetadataRow **rows, size_t n_rows);

/* The highest outbox seq ever assigned (0: none yet), as of the last
 * committed entry; acknowledged rows keep counting. Rows still pending are
 * those above the last METHOD_OUTBOX_ACK's up_to_seq. A storage error is
 * logged and reads as 0. Call on the group's thread, outside apply. */
uint64_t cell_fsm_outbox_last_seq(struct cell_fsm *fsm);

/*
 * The pending edge halves of one destination cell: the lowest destination
 * cell id that has any, its oldest halves first, at most max_halves. On
 * success returns 0 with *dest_cell, and *halves (NULL when *n_halves == 0,
 * then *dest_cell is 0) owned by the caller, freed with
 * cell_fsm_edge_outbox_free(). Returns GS_ENOMEM or GS_EIO with nothing
 * returned. Call on the group's thread, outside apply.
 */
int cell_fsm_edge_outbox_read(struct cell_fsm *fsm,
                              size_t max_halves,
                              uint32_t *dest_cell,
                              Geoscale__EdgeHalf ***halves,
                              size_t *n_halves);

/* Free what cell_fsm_edge_outbox_read() returned. halves NULL is ok. */
void cell_fsm_edge_outbox_free(Geoscale__EdgeHalf **halves, size_t n_halves);

struct rsm;

/* The fsm's replicated-state-machine base (engine/rsm.h), for what works on
 * any group's state machine: checkpoints (engine/checkpoint.h). The fsm
 * keeps ownership; valid until cell_fsm_close(). */
struct rsm *cell_fsm_rsm(struct cell_fsm *fsm);

/* Make everything applied so far durable (rocksdb_flush_wal with sync). */
int cell_fsm_sync(struct cell_fsm *fsm);

/* BLAKE2b-256 digest over every replicated key and value (everything except
 * node-local bookkeeping), in key order; *n_keys receives the count. Two
 * replicas at the same applied index have the same digest. */
int cell_fsm_digest(struct cell_fsm *fsm, uint8_t digest[32], uint64_t *n_keys);

#endif /* GS_ENGINE_CELL_FSM_H */
