/*
 * RocksDB key layout of a cell.
 *
 * Every key is one prefix byte followed by fixed-width big-endian fields, so
 * that byte order is numeric order and a prefix scan walks ids ascending.
 * Keys hold ids, timestamps and keyed hashes only: never PII (DESIGN.md,
 * "Data classification"). A username appears in a key only as
 * HMAC-SHA256(username_key, username).
 *
 *   'S' name                         system keys (KEY_SYS_*); value: u64 BE
 *   'U' user_id                      Profile (counts not stored here); the rsm's
 *                                    point rows: a column family of their own
 *   'N' hmac(32)                     username hash -> user_id (u64 BE)
 *   'C' user_id                      EdgeCounts
 *   'F' followee follower            ""   followers of followee
 *   'G' follower followee            ""   whom follower follows
 *   'B' blocker blocked              ""   blocks made by blocker
 *   'b' blocked blocker              ""   blocks suffered by blocked
 *   'T' user_id                      Settings
 *   'X' seq                          MetadataRow (metadata outbox, see outbox.c)
 *   'Y' dest_cell(4) seq             EdgeHalf (edge outbox for dest_cell, see edges.c)
 *   'y' dest_cell(4)                 u64 BE: last edge seq assigned for dest_cell
 *   'z' dest_cell(4)                 u64 BE: last edge seq acknowledged for dest_cell
 *   'Z' origin_cell(4)               u64 BE: last edge seq applied from origin_cell
 *   'R' client_id client_seq         StoredResult (idempotent retries)
 *   'r' ts_ms 0 index                pairs (client_id, client_seq), 16 B each: time
 *                                    index over 'R' for expiry, a row per entry
 *                                    (index: its Raft index) and batch time
 *   'r' ts_ms client_id client_seq   ""   the same, a row per outcome (schema 1;
 *                                    read by expiry, no longer written)
 *
 * ts_ms is an int64 stored as u64 BE with the sign bit flipped, so that
 * byte order is numeric order for negative values too.
 *
 * The functions below are pure; they fill a struct key in place (no
 * allocation).
 */
#ifndef GS_ENGINE_KEYS_H
#define GS_ENGINE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_PREFIX_SYSTEM 'S'
#define KEY_PREFIX_USER 'U'
#define KEY_PREFIX_USERNAME 'N'
#define KEY_PREFIX_COUNTS 'C'
#define KEY_PREFIX_FOLLOWER 'F'
#define KEY_PREFIX_FOLLOWING 'G'
#define KEY_PREFIX_BLOCK 'B'
#define KEY_PREFIX_BLOCKED_BY 'b'
#define KEY_PREFIX_SETTINGS 'T'
#define KEY_PREFIX_OUTBOX 'X'
#define KEY_PREFIX_EDGE_OUTBOX 'Y'
#define KEY_PREFIX_EDGE_SEQ 'y'
#define KEY_PREFIX_EDGE_ACKED 'z'
#define KEY_PREFIX_EDGE_APPLIED 'Z'
#define KEY_PREFIX_RESULT 'R'
#define KEY_PREFIX_RESULT_TIME 'r'

/* System key names (after the 'S' prefix). */
#define KEY_SYS_SCHEMA "schema"
#define KEY_SYS_CELL_ID "cell_id"
#define KEY_SYS_APPLIED_INDEX "applied_index" /* node-local bookkeeping */
#define KEY_SYS_NEXT_USER_SEQ "next_user_seq"
#define KEY_SYS_OUTBOX_SEQ "outbox_seq" /* the last outbox seq assigned (0: none) */
#define KEY_SYS_OUTBOX_ACKED "outbox_acked" /* the last outbox seq acknowledged */
#define KEY_SYS_RESULTS_EXPIRED "results_expired" /* ts_ms of the last outcome expired */

#define KEY_USERNAME_HASH_LEN 32
#define KEY_ID_LEN 9           /* prefix + u64 */
#define KEY_PAIR_LEN 17        /* prefix + u64 + u64 */
#define KEY_USERNAME_LEN 33    /* prefix + hash */
#define KEY_RESULT_TIME_LEN 25 /* prefix + ts + client_id + client_seq */
#define KEY_CELL_LEN 5         /* prefix + u32 */
#define KEY_CELL_SEQ_LEN 13    /* prefix + u32 + u64 */
#define KEY_MAX 40

/* A key held by value. len <= KEY_MAX. */
struct key {
    uint8_t b[KEY_MAX];
    size_t len;
};

/* Fixed-width big-endian helpers. */
void key_put_u64(uint8_t *dst, uint64_t v);
uint64_t key_get_u64(const uint8_t *src);

/* A 64-bit hash of raw key bytes for in-memory tables (not stored, not
 * replicated): FNV-1a with a finaliser, so that the low bits depend on
 * every byte. */
uint64_t key_hash64(const uint8_t *key, size_t len);

/* 'S' + name. name is one of KEY_SYS_*; it must fit (asserted). */
void key_system(struct key *k, const char *name);

/* prefix + id: USER, COUNTS, SETTINGS, OUTBOX (id = seq), and the scan start
 * of a pair family. */
void key_id(struct key *k, uint8_t prefix, uint64_t id);

/* prefix + a + b: FOLLOWER, FOLLOWING, BLOCK, BLOCKED_BY, RESULT. */
void key_pair(struct key *k, uint8_t prefix, uint64_t a, uint64_t b);

/* prefix + cell_id (4 BE): EDGE_SEQ, EDGE_ACKED, EDGE_APPLIED. */
void key_cell(struct key *k, uint8_t prefix, uint32_t cell_id);

/* 'Y' + dest_cell (4 BE) + seq (8 BE). */
void key_edge_outbox(struct key *k, uint32_t dest_cell, uint64_t seq);

/* 'N' + hash (KEY_USERNAME_HASH_LEN bytes). */
void key_username(struct key *k, const uint8_t hash[KEY_USERNAME_HASH_LEN]);

/* 'r' + ts + client_id + client_seq; client_id 0 and an entry's index for
 * the row of that entry. */
void key_result_time(struct key *k, int64_t ts_ms, uint64_t client_id, uint64_t client_seq);

/* Username hash: HMAC-SHA256(key, username). */
void key_username_hash(const uint8_t *hmac_key, size_t hmac_key_len, const char *username,
                       size_t username_len, uint8_t out[KEY_USERNAME_HASH_LEN]);

/* Decoders. Each returns true and fills the out-parameters when `raw` has the
 * expected prefix and length, false otherwise (outputs untouched). */
bool key_decode_id(const void *raw, size_t len, uint8_t prefix, uint64_t *id);
bool key_decode_pair(const void *raw, size_t len, uint8_t prefix, uint64_t *a, uint64_t *b);
bool key_decode_cell(const void *raw, size_t len, uint8_t prefix, uint32_t *cell_id);
bool key_decode_edge_outbox(const void *raw, size_t len, uint32_t *dest_cell, uint64_t *seq);
bool key_decode_result_time(const void *raw, size_t len, int64_t *ts_ms, uint64_t *client_id,
                            uint64_t *client_seq);

/* True if the key `raw` is the system key `name`. */
bool key_is_system(const void *raw, size_t len, const char *name);

#endif /* GS_ENGINE_KEYS_H */
