/*
 * Result marks (contract in rmarks.h): open addressing with linear probing
 * over a table twice the client limit. Marks are never removed one by one,
 * only all at once, so the table needs no deletion.
 */
#include "rmarks.h"

#include <stdlib.h>
#include <string.h>

#include "keys.h"

#define RMARKS_SLOTS (2 * RMARKS_MAX)

void rmarks_init(struct rmarks *m)
{
    memset(m, 0, sizeof *m);
}

void rmarks_free(struct rmarks *m)
{
    free(m->slots);
    rmarks_init(m);
}

void rmarks_clear(struct rmarks *m)
{
    if (m->slots != NULL && m->n > 0) {
        memset(m->slots, 0, RMARKS_SLOTS * sizeof *m->slots);
    }
    m->n = 0;
    m->clears++;
}

/* The slot of client_id, or the empty slot ending its probe run. */
static struct rmark_slot *rmarks_probe(const struct rmarks *m, uint64_t client_id)
{
    uint8_t b[8];
    key_put_u64(b, client_id);
    const size_t mask = RMARKS_SLOTS - 1;
    for (size_t s = (size_t)key_hash64(b, sizeof b) & mask;; s = (s + 1) & mask) {
        struct rmark_slot *sl = &m->slots[s];
        if (sl->client_id == 0 || sl->client_id == client_id) {
            return sl;
        }
    }
}

bool rmarks_get(const struct rmarks *m, uint64_t client_id, uint64_t *max_seq)
{
    if (m->n == 0 || client_id == 0) {
        return false;
    }
    const struct rmark_slot *sl = rmarks_probe(m, client_id);
    if (sl->client_id == 0) {
        return false;
    }
    *max_seq = sl->max_seq;
    return true;
}

void rmarks_set(struct rmarks *m, uint64_t client_id, uint64_t max_seq)
{
    if (client_id == 0) {
        return;
    }
    if (m->slots == NULL) {
        m->slots = calloc(RMARKS_SLOTS, sizeof *m->slots);
        if (m->slots == NULL) {
            return;
        }
    }
    struct rmark_slot *sl = rmarks_probe(m, client_id);
    if (sl->client_id == 0) {
        if (m->n >= RMARKS_MAX) {
            rmarks_clear(m);
            sl = rmarks_probe(m, client_id);
        }
        sl->client_id = client_id;
        m->n++;
    }
    sl->max_seq = max_seq;
}

void rmarks_raise(struct rmarks *m, uint64_t client_id, uint64_t client_seq)
{
    if (m->n == 0 || client_id == 0) {
        return;
    }
    struct rmark_slot *sl = rmarks_probe(m, client_id);
    if (sl->client_id != 0 && sl->max_seq < client_seq) {
        sl->max_seq = client_seq;
    }
}
