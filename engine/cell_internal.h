/*
 * Internals of the cell state machine, shared by its files:
 *
 *   rsm.c        (the base of every group's state machine) the DB, entries
 *                and applied_index, idempotency rows, digest, sync
 *   cell_fsm.c   open/close, apply (commands, idempotency, expiry), read
 *   cell_kv.c    the handlers' reads and writes, over the rsm
 *   profile.c    CreateUser, GetUser, UpdateUser
 *   graph.c      Follow, Unfollow, Block, Unblock, ListFollowers/Following
 *   settings.c   GetSettings, SetSettings, defaults
 *   outbox.c     metadata outbox rows, OutboxAck, the shipper's reads
 *   edges.c      edges across cells: the actor's side, the edge outbox,
 *                EdgeApply, the shipper's reads of halves
 *   privacy.c    what a viewer may see of a profile
 *   validate.c   stateless request checks (also run again on apply)
 *
 * A handler runs against a struct cell_ctx. While an entry is applied the
 * rsm is inside the entry: reads see the DB plus the writes of the earlier
 * commands of the entry, writes go into the entry's batch. For a read-only
 * request the rsm is outside any entry and writes are forbidden (asserted).
 *
 * Handler rule: check everything first, write after. A handler that returns
 * an error has written nothing. GS_EIO and GS_ENOMEM from a handler are fatal
 * for the whole entry (nothing of it is committed); any other error is the
 * command's own outcome. The one write a handler makes after its own is its
 * outbox rows (cell_outbox_append), which fail only fatally.
 */
#ifndef GS_ENGINE_CELL_INTERNAL_H
#define GS_ENGINE_CELL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rocksdb/c.h>

#include "geoscale.pb-c.h"
#include "keys.h"
#include "metadata.pb-c.h"
#include "rsm.h"

/* 2: one time index row per entry for its stored outcomes (rsm.c);
 * 3: the profiles in a column family of their own (the rsm's point rows) */
#define CELL_SCHEMA_VERSION 3
#define CELL_ID_BITS 24 /* user_id = cell_id << 40 | seq */
#define CELL_USER_SEQ_BITS 40

/* Field limits (bytes). */
#define CELL_USERNAME_MAX 64
#define CELL_DISPLAY_NAME_MAX 128
#define CELL_EMAIL_MAX 254
#define CELL_PHONE_MAX 32
#define CELL_BIO_MAX 4096
#define CELL_AVATAR_URL_MAX 1024
#define CELL_PLAN_MAX 32
#define CELL_REGION_MAX 32 /* as the metadata group's home_region */

#define CELL_EDGE_APPLY_MAX 1024 /* halves per EdgeApply */

#define CELL_LIST_DEFAULT 100
#define CELL_LIST_MAX 1000

struct cell_fsm {
    struct rsm rsm; /* the base (rsm.h) */
    uint32_t cell_id;
    uint8_t username_key[64];
    size_t username_key_len;
    char region[CELL_REGION_MAX + 1]; /* "" for a lone cell */
    bool lone;                        /* cell_fsm_options.lone */
};

/* The cell a user id belongs to. */
static inline uint32_t cell_of_user(uint64_t user_id)
{
    return (uint32_t)(user_id >> CELL_USER_SEQ_BITS);
}

struct cell_ctx {
    struct cell_fsm *fsm;
    int64_t now_ms; /* the batch's timestamp (0 for reads) */
    /* Non-NULL when the outcome will be remembered: a handler may leave its
     * response less what its request restores here (rsm_command_fn). */
    uint8_t **partial;
    size_t *partial_len;
};

/* ---------------------------------------------------------------- cell_kv.c */

/* Read a value (rsm_get). Returns 0 with *val (free with rocksdb_free) and
 * *len, or GS_ENOTFOUND, or a fatal GS_ENOMEM / GS_EIO. */
int cell_kv_get(struct cell_ctx *ctx, const struct key *k, char **val, size_t *len);
/* Returns 0 and *exists, or GS_EIO. */
int cell_kv_exists(struct cell_ctx *ctx, const struct key *k, bool *exists);
/* Read and unpack a stored message. Returns 0 and *out (the caller frees it
 * with protobuf_c_message_free_unpacked), GS_ENOTFOUND, or GS_EIO (also for
 * a stored value that does not unpack). */
int cell_kv_get_msg(struct cell_ctx *ctx, const struct key *k,
                    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);
/* Read a u64 BE value. Returns 0, GS_ENOTFOUND or GS_EIO. */
int cell_kv_get_u64(struct cell_ctx *ctx, const struct key *k, uint64_t *v);
/* The same, with an absent key read as 0. Returns 0 or GS_EIO. */
int cell_kv_get_u64_or_0(struct cell_ctx *ctx, const struct key *k, uint64_t *v);

/* Writes into the entry's batch (only while an entry is applied). */
void cell_kv_put(struct cell_ctx *ctx, const struct key *k, const void *val, size_t len);
void cell_kv_put_u64(struct cell_ctx *ctx, const struct key *k, uint64_t v);
/* Returns 0 or GS_ENOMEM. */
int cell_kv_put_msg(struct cell_ctx *ctx, const struct key *k, const ProtobufCMessage *msg);
void cell_kv_delete(struct cell_ctx *ctx, const struct key *k);
/* Delete every key from first to last inclusive (byte order) in the entry's
 * batch; *deleted receives the count. 0, GS_ENOMEM or GS_EIO. */
int cell_kv_delete_range(struct cell_ctx *ctx, const struct key *first, const struct key *last,
                         uint64_t *deleted);

/* An iterator over DB + batch (or the DB alone for reads). The caller owns
 * it and destroys it with rocksdb_iter_destroy(); it must not outlive ctx,
 * and the batch must not be written while it is open. */
rocksdb_iterator_t *cell_kv_iter(struct cell_ctx *ctx);
/* Returns GS_EIO if the iterator reported an error, else 0. */
int cell_kv_iter_status(rocksdb_iterator_t *it);

/* Pack msg into a malloc'd buffer (never NULL on success, even for an empty
 * message). Returns 0 or GS_ENOMEM. The caller frees *body with free(). */
int cell_pack(const ProtobufCMessage *msg, uint8_t **body, size_t *len);

/* ---------------------------------------------------------------- validate.c */

/* Stateless checks of an unpacked request of `method`. Returns 0 or
 * GS_EINVAL / GS_ETOOBIG / GS_EUNIMPL; errmsg (may be NULL) names the field,
 * never its value. */
int cell_check_request(uint32_t method, const ProtobufCMessage *req, char *errmsg, size_t len);
/* Username syntax: 1-64 bytes of [a-z0-9_.]. Returns 0, GS_EINVAL or GS_ETOOBIG. */
int cell_check_username(const char *username);
/* Region syntax: 0-32 bytes of [a-z0-9-]. Returns 0, GS_EINVAL or GS_ETOOBIG. */
int cell_check_region(const char *region);
/* Whether a checked request of `method` is this cell's to serve: the subject
 * user (see cell_fsm.h, "Ownership") must be of cell `cell_id`, and a
 * CreateUser naming a home region must name the cell's own `region` (when the
 * cell knows it). Returns 0 or GS_EWRONGCELL. Pure. */
int cell_check_owner(uint32_t cell_id, const char *region, uint32_t method,
                     const ProtobufCMessage *req);

/* ---------------------------------------------------------------- handlers */

/* Every handler: 0 with *body and *len (malloc'd packed response, the caller
 * frees it) or a negative GS_E* code with nothing written. */
typedef int (*cell_handler)(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                            size_t *len);

int cell_create_user(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                     size_t *len);
int cell_get_user(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_update_user(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                     size_t *len);
/* An UpdateUser response from its partial form (cell_update_user's, in
 * ctx->partial) and the request: rsm_restore_fn's contract. */
int cell_update_user_restore(const uint8_t *request, size_t request_len, const uint8_t *partial,
                             size_t partial_len, uint8_t **out, size_t *out_len);
int cell_follow(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_unfollow(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_block(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_unblock(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_list_followers(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                        size_t *len);
int cell_list_following(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                        size_t *len);
int cell_get_settings(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                      size_t *len);
int cell_set_settings(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body,
                      size_t *len);
int cell_outbox_ack(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);
int cell_edge_apply(struct cell_ctx *ctx, const ProtobufCMessage *req, uint8_t **body, size_t *len);

/* ---------------------------------------------------------------- shared helpers */

/* profile.c: whether a user exists. Returns 0 and *exists, or GS_EIO. */
int cell_user_exists(struct cell_ctx *ctx, uint64_t user_id, bool *exists);
/* profile.c: edge counters of a user (zeros if none stored). 0 or GS_EIO. */
int cell_counts_load(struct cell_ctx *ctx, uint64_t user_id, uint64_t *followers,
                     uint64_t *following);
/* profile.c: write edge counters. 0 or GS_ENOMEM. */
int cell_counts_store(struct cell_ctx *ctx, uint64_t user_id, uint64_t followers,
                      uint64_t following);

/* graph.c: whether the edge key prefix+a+b exists. 0 and *exists, or GS_EIO. */
int cell_edge_exists(struct cell_ctx *ctx, uint8_t prefix, uint64_t a, uint64_t b, bool *exists);

/* outbox.c: append the outbox row of user_id's metadata as it stands in the
 * entry (after the command's own writes), with the next outbox seq. Call
 * last, once per changed user. Returns 0, or a fatal code: GS_ENOMEM, or
 * GS_EIO (also when the user has no profile: a broken invariant). */
int cell_outbox_append(struct cell_ctx *ctx, uint64_t user_id);
/* outbox.c: a lone cell's, per entry: delete at most CELL_OUTBOX_DRAIN_MAX
 * of the rows written before it was lone. 0 or GS_EIO / GS_ENOMEM. */
int cell_outbox_drain(struct cell_ctx *ctx);
/* The same, from the user's profile and counters as the command just wrote
 * them (no read of either): p's status, plan, created_at and version. */
int cell_outbox_append_profile(struct cell_ctx *ctx, uint64_t user_id, const Geoscale__Profile *p,
                               uint64_t followers, uint64_t following);

/* edges.c: the actor's side of an edge command whose target is of another
 * cell (graph.c dispatches here). Same contract as the handlers. */
int cell_follow_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                       size_t *len);
int cell_unfollow_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                         size_t *len);
int cell_block_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                      size_t *len);
int cell_unblock_remote(struct cell_ctx *ctx, uint64_t actor, uint64_t target, uint8_t **body,
                        size_t *len);
/* edges.c: append a half for dest_cell (not this cell) with the next seq of
 * that destination. 0 or a fatal code (GS_ENOMEM, GS_EIO). */
int cell_edge_half_append(struct cell_ctx *ctx, uint32_t dest_cell, Geoscale__EdgeHalfKind kind,
                          uint64_t actor, uint64_t target);
/* edges.c: whether an ack of dest_cell's halves up to up_to_seq is valid:
 * 0, GS_EINVAL (beyond the last seq assigned for dest_cell) or GS_EIO. */
int cell_edge_ack_check(struct cell_ctx *ctx, uint32_t dest_cell, uint64_t up_to_seq);
/* edges.c: delete dest_cell's halves up to up_to_seq; *deleted receives how
 * many. 0 or a fatal code. */
int cell_edge_ack_delete(struct cell_ctx *ctx, uint32_t dest_cell, uint64_t up_to_seq,
                         uint64_t *deleted);

/* settings.c: the defaults of a new user. */
void cell_settings_default(Geoscale__Settings *s);
/* settings.c: a user's settings with UNSPECIFIED fields resolved to the
 * defaults. Returns 0 (the user's row may be absent: defaults) or GS_EIO. */
int cell_settings_load(struct cell_ctx *ctx, uint64_t user_id, Geoscale__Settings *out);

/* privacy.c */
enum privacy_field {
    PRIVACY_DISPLAY_NAME = 0,
    PRIVACY_EMAIL,
    PRIVACY_PHONE,
    PRIVACY_BIRTH_DATE,
    PRIVACY_BIO,
    PRIVACY_AVATAR_URL,
    PRIVACY_PLAN,
    PRIVACY_CREATED_AT,
    PRIVACY_VERSION,
    PRIVACY_N_FIELDS,
};

/* Name of a field as listed in GetUserResponse.hidden_fields. */
const char *privacy_field_name(enum privacy_field f);

/* Decide which fields the viewer sees. settings must be resolved (no
 * UNSPECIFIED). visible[f] is set for every field. Pure function. */
void privacy_decide(const Geoscale__Settings *settings, bool viewer_is_owner,
                    bool viewer_follows_owner, bool visible[PRIVACY_N_FIELDS]);

#endif /* GS_ENGINE_CELL_INTERNAL_H */
