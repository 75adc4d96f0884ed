/*
 * RocksDB key layout of a cell (see keys.h for the table).
 *
 * Big-endian fixed-width fields make RocksDB's bytewise comparator order keys
 * the way the engine scans them: by prefix, then by the first id, then by the
 * second. The username family stores only a keyed hash, so a copy of the
 * key space (an SST file, a range log) reveals no names.
 */
#include "keys.h"

#include <assert.h>
#include <string.h>

#include <sodium.h>

#define TS_SIGN_FLIP (UINT64_C(1) << 63)

void key_put_u64(uint8_t *dst, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        dst[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

uint64_t key_get_u64(const uint8_t *src)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | src[i];
    }
    return v;
}

void key_system(struct key *k, const char *name)
{
    size_t n = strlen(name);
    assert(n + 1 <= KEY_MAX);
    k->b[0] = KEY_PREFIX_SYSTEM;
    memcpy(k->b + 1, name, n);
    k->len = n + 1;
}

void key_id(struct key *k, uint8_t prefix, uint64_t id)
{
    k->b[0] = prefix;
    key_put_u64(k->b + 1, id);
    k->len = KEY_ID_LEN;
}

void key_pair(struct key *k, uint8_t prefix, uint64_t a, uint64_t b)
{
    k->b[0] = prefix;
    key_put_u64(k->b + 1, a);
    key_put_u64(k->b + 9, b);
    k->len = KEY_PAIR_LEN;
}

static void put_u32(uint8_t *dst, uint32_t v)
{
    dst[0] = (uint8_t)(v >> 24);
    dst[1] = (uint8_t)(v >> 16);
    dst[2] = (uint8_t)(v >> 8);
    dst[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *src)
{
    return (uint32_t)src[0] << 24 | (uint32_t)src[1] << 16 | (uint32_t)src[2] << 8 | src[3];
}

void key_cell(struct key *k, uint8_t prefix, uint32_t cell_id)
{
    k->b[0] = prefix;
    put_u32(k->b + 1, cell_id);
    k->len = KEY_CELL_LEN;
}

void key_edge_outbox(struct key *k, uint32_t dest_cell, uint64_t seq)
{
    k->b[0] = KEY_PREFIX_EDGE_OUTBOX;
    put_u32(k->b + 1, dest_cell);
    key_put_u64(k->b + 5, seq);
    k->len = KEY_CELL_SEQ_LEN;
}

void key_username(struct key *k, const uint8_t hash[KEY_USERNAME_HASH_LEN])
{
    k->b[0] = KEY_PREFIX_USERNAME;
    memcpy(k->b + 1, hash, KEY_USERNAME_HASH_LEN);
    k->len = KEY_USERNAME_LEN;
}

void key_result_time(struct key *k, int64_t ts_ms, uint64_t client_id, uint64_t client_seq)
{
    k->b[0] = KEY_PREFIX_RESULT_TIME;
    key_put_u64(k->b + 1, (uint64_t)ts_ms ^ TS_SIGN_FLIP);
    key_put_u64(k->b + 9, client_id);
    key_put_u64(k->b + 17, client_seq);
    k->len = KEY_RESULT_TIME_LEN;
}

void key_username_hash(const uint8_t *hmac_key, size_t hmac_key_len, const char *username,
                       size_t username_len, uint8_t out[KEY_USERNAME_HASH_LEN])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, hmac_key, hmac_key_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)username, username_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

bool key_decode_id(const void *raw, size_t len, uint8_t prefix, uint64_t *id)
{
    const uint8_t *p = raw;
    if (len != KEY_ID_LEN || p[0] != prefix) {
        return false;
    }
    *id = key_get_u64(p + 1);
    return true;
}

bool key_decode_pair(const void *raw, size_t len, uint8_t prefix, uint64_t *a, uint64_t *b)
{
    const uint8_t *p = raw;
    if (len != KEY_PAIR_LEN || p[0] != prefix) {
        return false;
    }
    *a = key_get_u64(p + 1);
    *b = key_get_u64(p + 9);
    return true;
}

bool key_decode_cell(const void *raw, size_t len, uint8_t prefix, uint32_t *cell_id)
{
    const uint8_t *p = raw;
    if (len != KEY_CELL_LEN || p[0] != prefix) {
        return false;
    }
    *cell_id = get_u32(p + 1);
    return true;
}

bool key_decode_edge_outbox(const void *raw, size_t len, uint32_t *dest_cell, uint64_t *seq)
{
    const uint8_t *p = raw;
    if (len != KEY_CELL_SEQ_LEN || p[0] != KEY_PREFIX_EDGE_OUTBOX) {
        return false;
    }
    *dest_cell = get_u32(p + 1);
    *seq = key_get_u64(p + 5);
    return true;
}

bool key_decode_result_time(const void *raw, size_t len, int64_t *ts_ms, uint64_t *client_id,
                            uint64_t *client_seq)
{
    const uint8_t *p = raw;
    if (len != KEY_RESULT_TIME_LEN || p[0] != KEY_PREFIX_RESULT_TIME) {
        return false;
    }
    *ts_ms = (int64_t)(key_get_u64(p + 1) ^ TS_SIGN_FLIP);
    *client_id = key_get_u64(p + 9);
    *client_seq = key_get_u64(p + 17);
    return true;
}

bool key_is_system(const void *raw, size_t len, const char *name)
{
    const uint8_t *p = raw;
    size_t n = strlen(name);
    return len == n + 1 && p[0] == KEY_PREFIX_SYSTEM && memcmp(p + 1, name, n) == 0;
}

uint64_t key_hash64(const uint8_t *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}
