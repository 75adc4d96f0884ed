/*
 * Internals of the directory state machine, shared by its files:
 *
 *   directory_fsm.c     open/close, apply (commands, idempotency, expiry of
 *                       results and reservations), read, digest, sync
 *   directory_ops.c     the command handlers and the request checks
 *
 * Key layout (one prefix byte, fixed-width big-endian fields; the base owns
 * 'S', 'R' and 'r', see keys.h and rsm.h):
 *
 *   'S' "schema" | "directory_shard" | "applied_index"   (base)
 *   'S' "version"                  directory version, u64
 *   'S' "routes_version"           raised when cached routes become wrong, u64
 *   'c' cell_id(4)                 CellInfo
 *   'g' len(1) region cell_id(4)   ""   cells of a region, by id
 *   'q' cell_id(4)                 next user sequence of the cell, u64
 *   'u' user_id(8)                 UserRoute
 *   'h' hash(32)                   UsernameReservation
 *   'x' expires_at(8) user_id(8)   hash(32): expiry index of RESERVED rows
 *
 * expires_at is an int64 with the sign bit flipped (as 'r' in keys.h). The
 * region is length-prefixed so that "eu" does not prefix-match "eu-west".
 * Keys hold ids, hashes and region names only (no PII).
 *
 * Handler rule, as in a cell: check everything first, write after; an error
 * other than GS_EIO / GS_ENOMEM is the command's outcome and wrote nothing.
 */
#ifndef GS_ENGINE_DIRECTORY_INTERNAL_H
#define GS_ENGINE_DIRECTORY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "directory_fsm.h"
#include "keys.h"
#include "rsm.h"

#define DIR_PREFIX_CELL 'c'
#define DIR_PREFIX_REGION_CELL 'g'
#define DIR_PREFIX_CELL_SEQ 'q'
#define DIR_PREFIX_ROUTE 'u'
#define DIR_PREFIX_NAME 'h'
#define DIR_PREFIX_EXPIRY 'x'

#define DIR_SYS_SHARD "directory_shard"
#define DIR_SYS_VERSION "version"
#define DIR_SYS_ROUTES_VERSION "routes_version"
/* The batch time up to which the 'x' index has been walked and expired
 * (directory_fsm.c, "Expiry"); absent: from the index's first key. */
#define DIR_SYS_RESERVATIONS_EXPIRED "reservations_expired"

/* user_id = cell_id << 40 | seq, as in a cell (CELL_ID_BITS, cell_internal.h) */
#define DIR_CELL_ID_BITS 24
#define DIR_USER_SEQ_BITS 40
#define DIR_CELL_ID_MAX ((UINT32_C(1) << DIR_CELL_ID_BITS) - 1)

/* Reservations deleted per entry at most (bounded, deterministic work). */
#define DIRECTORY_EXPIRE_MAX 64

struct directory_fsm {
    struct rsm rsm;
    uint32_t shard_id;
    uint32_t n_shards; /* >= 1 */
};

struct dir_ctx {
    struct directory_fsm *fsm;
    int64_t now_ms; /* the batch's timestamp (0 for reads) */
};

/* ---------------------------------------------------------------- keys */

void dir_key_cell(struct key *k, uint32_t cell_id);
/* region must be 1..DIRECTORY_REGION_MAX bytes (asserted). */
void dir_key_region_cell(struct key *k, const char *region, uint32_t cell_id);
/* The scan start of a region's cells (the key without the cell id). */
void dir_key_region_prefix(struct key *k, const char *region);
void dir_key_cell_seq(struct key *k, uint32_t cell_id);
void dir_key_route(struct key *k, uint64_t user_id);
void dir_key_name(struct key *k, const uint8_t hash[DIRECTORY_HASH_LEN]);
void dir_key_expiry(struct key *k, int64_t expires_at_ms, uint64_t user_id);
/* The reservations' expiry cursor (DIR_SYS_RESERVATIONS_EXPIRED); INT64_MIN
 * when absent. 0 or GS_EIO. */
int dir_reservations_expired_get(struct dir_ctx *ctx, int64_t *ts_ms);
bool dir_key_decode_expiry(const void *raw, size_t len, int64_t *expires_at_ms, uint64_t *user_id);

/* ---------------------------------------------------------------- shared helpers */

/* The directory version (0 if never bumped). 0 or GS_EIO. */
int dir_version_get(struct dir_ctx *ctx, uint64_t *version);
/* version + 1, written; *version receives the new value. 0 or GS_EIO. */
int dir_version_bump(struct dir_ctx *ctx, uint64_t *version);
/* The routes version: raised only by changes that make a cached route
 * wrong (a cell's members changed), never by new users or new cells. 0 if
 * never raised. 0 or GS_EIO. */
int dir_routes_version_get(struct dir_ctx *ctx, uint64_t *version);

/* Delete a RESERVED reservation (its row, its expiry index row) and give
 * back its place in the cell's reserved_count. 0, GS_EIO or GS_ENOMEM. */
int dir_reservation_drop(struct dir_ctx *ctx, const Geoscale__UsernameReservation *res);

/* ---------------------------------------------------------------- directory_ops.c */

/* Every handler: 0 with *body and *len (malloc'd packed response, the caller
 * frees it) or a negative GS_E* code with nothing written. */
typedef int (*dir_handler)(struct dir_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                           size_t *len);

struct dir_kind_info {
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    dir_handler handler;
    bool read; /* served by directory_fsm_read(); not remembered in entries */
};

/* The table entry of a command kind, or NULL for an unknown kind. */
const struct dir_kind_info *dir_kind_lookup(uint32_t kind);

/* Stateless checks of an unpacked request of `kind`. 0 or GS_EINVAL /
 * GS_ETOOBIG; errmsg (may be NULL) names the field, never its value. */
int dir_check_request(uint32_t kind, const ProtobufCMessage *req, char *errmsg, size_t len);

#endif /* GS_ENGINE_DIRECTORY_INTERNAL_H */
