/* Route cache: put/get, replace, version invalidation, leader hints, the
 * max_entries bound and CLOCK order, and readers racing writers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/mono.h"
#include "geoscale/errors.h"
#include "net/route_cache.h"

/* A cell whose every field derives from (cell_id, gen): a reader can tell a
 * torn copy (fields of two generations) from a whole one. Member i is node
 * cell_id*10+i at "10.<cell>.<i>.1:<gen>"; the region is "r<gen>"; the
 * leader is member gen % n; the version is the caller's. */
static void make_cell(struct route_cell *c, uint32_t cell_id, unsigned gen, uint64_t version)
{
    memset(c, 0, sizeof(*c));
    c->cell_id = cell_id;
    c->n_members = 1 + gen % ROUTE_MAX_MEMBERS;
    for (unsigned i = 0; i < c->n_members; i++) {
        c->members[i].node_id = (uint64_t)cell_id * 10 + i;
        snprintf(c->members[i].client_address, ROUTE_ADDRESS_MAX, "10.%u.%u.1:%u", cell_id, i, gen);
    }
    snprintf(c->region, sizeof(c->region), "r%u", gen);
    c->leader_id = c->members[gen % c->n_members].node_id;
    c->directory_version = version;
}

/* True if c is make_cell(c->cell_id, gen, version) for some gen, except
 * that the leader may be any member of that generation (leader hints). */
static bool cell_is_whole(const struct route_cell *c)
{
    unsigned gen;
    if (sscanf(c->region, "r%u", &gen) != 1) {
        return false;
    }
    struct route_cell want;
    make_cell(&want, c->cell_id, gen, c->directory_version);
    bool leader_ok = false;
    for (unsigned i = 0; i < want.n_members; i++) {
        leader_ok |= c->leader_id == want.members[i].node_id;
    }
    want.leader_id = c->leader_id;
    return leader_ok && memcmp(&want, c, sizeof(want)) == 0;
}

static struct route_cache *new_cache(size_t max_entries)
{
    struct route_cache *cache = NULL;
    assert_int_equal(route_cache_new(max_entries, &cache), 0);
    assert_non_null(cache);
    return cache;
}

static int setup(void **state)
{
    (void)state;
    route_cache_thread_register();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    route_cache_thread_unregister();
    return 0;
}

static void test_new_rejects_bad_bound(void **state)
{
    (void)state;
    struct route_cache *cache = (struct route_cache *)&cache; /* must stay untouched */
    struct route_cache *before = cache;
    assert_int_equal(route_cache_new(0, &cache), GS_EINVAL);
    assert_int_equal(route_cache_new((size_t)ROUTE_CACHE_MAX_ENTRIES + 1, &cache), GS_EINVAL);
    assert_ptr_equal(cache, before);
    route_cache_free(NULL);
}

static void test_user_put_get(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    uint32_t cell_id = 777;
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), GS_ENOTFOUND);
    assert_int_equal(cell_id, 777); /* untouched on a miss */
    assert_int_equal(route_cache_put_user(cache, 42, 3, 1), 0);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);
    assert_int_equal(cell_id, 3);
    assert_int_equal(route_cache_get_user(cache, 43, &cell_id), GS_ENOTFOUND);
    assert_int_equal(route_cache_put_user(cache, 0, 3, 1), GS_EINVAL);
    assert_int_equal(route_cache_put_user(cache, 44, 0, 1), GS_EINVAL);

    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.max_entries, 16);
    assert_int_equal(st.evictions, 0);

    /* A user and a cell with the same number are different keys. */
    struct route_cell cell;
    assert_int_equal(route_cache_get_cell(cache, 42, &cell), GS_ENOTFOUND);
    route_cache_free(cache);
}

static void test_cell_put_get(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    struct route_cell in, out;
    make_cell(&in, 5, 2, 9); /* 3 members, leader 52 */
    assert_int_equal(route_cache_put_cell(cache, &in), 0);
    memset(&out, 0xab, sizeof(out));
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_memory_equal(&in, &out, sizeof(in));
    assert_true(cell_is_whole(&out));
    assert_int_equal(out.leader_id, 52);
    assert_string_equal(out.members[1].client_address, "10.5.1.1:2");

    /* The cache keeps its own copy. */
    strcpy(in.region, "changed");
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_string_equal(out.region, "r2");
    route_cache_free(cache);
}

static void test_cell_rejects_malformed(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    struct route_cell c;

    make_cell(&c, 0, 2, 1);
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.n_members = 0;
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.n_members = ROUTE_MAX_MEMBERS + 1;
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.members[1].node_id = 0;
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.members[2].node_id = c.members[0].node_id;
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.members[0].client_address[0] = '\0';
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    memset(c.members[0].client_address, 'a', ROUTE_ADDRESS_MAX); /* no NUL */
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    memset(c.region, 'a', ROUTE_REGION_MAX);
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.region[0] = '\0';
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);
    make_cell(&c, 5, 2, 1);
    c.leader_id = 99; /* not a member */
    assert_int_equal(route_cache_put_cell(cache, &c), GS_EINVAL);

    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.entries, 0);
    route_cache_free(cache);
}

static void test_replace(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    uint32_t cell_id;
    assert_int_equal(route_cache_put_user(cache, 42, 3, 5), 0);
    assert_int_equal(route_cache_put_user(cache, 42, 4, 5), 0); /* same version */
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);
    assert_int_equal(cell_id, 4);
    assert_int_equal(route_cache_put_user(cache, 42, 6, 7), 0); /* newer */
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);
    assert_int_equal(cell_id, 6);
    /* An older answer arriving late must not overwrite a newer one. */
    assert_int_equal(route_cache_put_user(cache, 42, 3, 6), GS_ECONFLICT);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);
    assert_int_equal(cell_id, 6);

    struct route_cell c, out;
    make_cell(&c, 5, 1, 5);
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    make_cell(&c, 5, 3, 6);
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_memory_equal(&c, &out, sizeof(c));
    make_cell(&c, 5, 4, 2);
    assert_int_equal(route_cache_put_cell(cache, &c), GS_ECONFLICT);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_string_equal(out.region, "r3");

    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.entries, 2); /* replacements do not add entries */
    assert_int_equal(st.evictions, 0);
    route_cache_free(cache);
}

static void test_version_invalidation(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    uint32_t cell_id;
    struct route_cell c, out;
    assert_int_equal(route_cache_version(cache), 0);
    assert_int_equal(route_cache_put_user(cache, 42, 3, 1), 0);
    make_cell(&c, 3, 2, 1);
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_put_user(cache, 43, 3, 2), 0);

    assert_int_equal(route_cache_set_version(cache, 2), 0);
    assert_int_equal(route_cache_version(cache), 2);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_cell(cache, 3, &out), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_user(cache, 43, &cell_id), 0); /* read at 2 */
    assert_int_equal(cell_id, 3);
    /* A leader hint about a stale cell finds nothing. */
    assert_int_equal(route_cache_set_leader(cache, 3, 30), GS_ENOTFOUND);

    /* An answer read before the bump is refused; a current one is taken. */
    assert_int_equal(route_cache_put_user(cache, 42, 3, 1), GS_ECONFLICT);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), GS_ENOTFOUND);
    assert_int_equal(route_cache_put_cell(cache, &c), GS_ECONFLICT);
    assert_int_equal(route_cache_put_user(cache, 42, 4, 2), 0);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);
    assert_int_equal(cell_id, 4);
    c.directory_version = 3;
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_get_cell(cache, 3, &out), 0);

    /* Versions never go back. */
    assert_int_equal(route_cache_set_version(cache, 1), 0);
    assert_int_equal(route_cache_version(cache), 2);
    assert_int_equal(route_cache_get_user(cache, 42, &cell_id), 0);

    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.version, 2);
    route_cache_free(cache);
}

static void test_leader_hints(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(16);
    struct route_cell c, out;
    make_cell(&c, 5, 2, 1); /* members 50 51 52, leader 52 */
    assert_int_equal(route_cache_set_leader(cache, 5, 50), GS_ENOTFOUND); /* unknown cell */
    assert_int_equal(route_cache_put_cell(cache, &c), 0);

    assert_int_equal(route_cache_set_leader(cache, 5, 51), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_int_equal(out.leader_id, 51);
    assert_string_equal(out.region, "r2"); /* the rest is unchanged */
    assert_int_equal(out.n_members, 3);
    assert_int_equal(route_cache_set_leader(cache, 5, 51), 0); /* repeat: no-op */
    assert_int_equal(route_cache_set_leader(cache, 5, 0), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_int_equal(out.leader_id, 0);
    assert_int_equal(route_cache_set_leader(cache, 5, 50), 0);

    /* A directory answer (leader unknown) keeps a known leader that is still
     * a member... */
    c.leader_id = 0;
    c.directory_version = 2;
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_int_equal(out.leader_id, 50);
    /* ...but not one that left the cell... */
    c.members[0].node_id = 59;
    c.directory_version = 3;
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_int_equal(out.leader_id, 0);
    /* ...and an answer naming a leader wins. */
    c.leader_id = 51;
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), 0);
    assert_int_equal(out.leader_id, 51);

    /* A hint naming a non-member proves the entry out of date: dropped. */
    assert_int_equal(route_cache_set_leader(cache, 5, 50), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), GS_ENOTFOUND);
    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.entries, 0);
    route_cache_free(cache);
}

static void test_drop(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(4);
    struct route_cell c, out;
    uint32_t cell_id;
    make_cell(&c, 5, 2, 1);
    assert_int_equal(route_cache_put_cell(cache, &c), 0);
    for (uint64_t u = 1; u <= 3; u++) {
        assert_int_equal(route_cache_put_user(cache, u, 5, 1), 0);
    }
    assert_int_equal(route_cache_drop_user(cache, 2), 0);
    assert_int_equal(route_cache_drop_user(cache, 2), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_user(cache, 2, &cell_id), GS_ENOTFOUND);
    assert_int_equal(route_cache_drop_cell(cache, 5), 0);
    assert_int_equal(route_cache_drop_cell(cache, 5), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_cell(cache, 5, &out), GS_ENOTFOUND);
    assert_int_equal(route_cache_get_user(cache, 1, &cell_id), 0);
    assert_int_equal(route_cache_get_user(cache, 3, &cell_id), 0);
    /* Dropped entries free their room: two more fit without eviction. */
    assert_int_equal(route_cache_put_user(cache, 4, 5, 1), 0);
    assert_int_equal(route_cache_put_user(cache, 5, 5, 1), 0);
    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 0);
    for (uint64_t u = 1; u <= 5; u++) {
        assert_int_equal(route_cache_get_user(cache, u, &cell_id), u == 2 ? GS_ENOTFOUND : 0);
    }
    route_cache_free(cache);
}

static void test_bound(void **state)
{
    (void)state;
    enum { MAX = 16, PUTS = 1000 };
    struct route_cache *cache = new_cache(MAX);
    struct route_cache_stats st;
    for (unsigned i = 1; i <= PUTS; i++) {
        if (i % 3 == 0) {
            struct route_cell c;
            make_cell(&c, i, i, 1);
            assert_int_equal(route_cache_put_cell(cache, &c), 0);
        } else {
            assert_int_equal(route_cache_put_user(cache, i, 1, 1), 0);
        }
        route_cache_stats(cache, &st);
        assert_true(st.entries <= MAX);
        assert_int_equal(st.entries, i < MAX ? i : MAX);
        /* Every few puts, read something so referenced bits are in play. */
        uint32_t cell_id;
        (void)route_cache_get_user(cache, i - i % 5 + 1, &cell_id);
    }
    assert_int_equal(st.evictions, PUTS - MAX);
    /* Exactly MAX keys answer. */
    unsigned present = 0;
    for (unsigned i = 1; i <= PUTS; i++) {
        uint32_t cell_id;
        struct route_cell c;
        int rv = i % 3 == 0 ? route_cache_get_cell(cache, i, &c)
                            : route_cache_get_user(cache, i, &cell_id);
        present += rv == 0;
    }
    assert_int_equal(present, MAX);
    /* The newest put is always there. */
    uint32_t cell_id;
    assert_int_equal(route_cache_get_user(cache, PUTS, &cell_id), 0);
    route_cache_free(cache);
}

/* CLOCK: entries read since the hand last passed survive; the others go. */
static void test_second_chance(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(8);
    uint32_t cell_id;
    for (uint64_t u = 1; u <= 8; u++) {
        assert_int_equal(route_cache_put_user(cache, u, 1, 1), 0);
    }
    for (uint64_t u = 1; u <= 4; u++) {
        assert_int_equal(route_cache_get_user(cache, u, &cell_id), 0);
    }
    for (uint64_t u = 9; u <= 12; u++) {
        assert_int_equal(route_cache_put_user(cache, u, 1, 1), 0);
    }
    for (uint64_t u = 1; u <= 12; u++) {
        int want = (u >= 5 && u <= 8) ? GS_ENOTFOUND : 0;
        assert_int_equal(route_cache_get_user(cache, u, &cell_id), want);
    }
    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.evictions, 4);
    route_cache_free(cache);
}

/* Stale entries are evicted before current ones, referenced or not. */
static void test_stale_evicted_first(void **state)
{
    (void)state;
    struct route_cache *cache = new_cache(4);
    uint32_t cell_id;
    for (uint64_t u = 1; u <= 4; u++) {
        assert_int_equal(route_cache_put_user(cache, u, 1, 1), 0);
        assert_int_equal(route_cache_get_user(cache, u, &cell_id), 0); /* referenced */
    }
    assert_int_equal(route_cache_set_version(cache, 2), 0);
    /* User 1 refreshed: current, in slot 0, referenced bit carried over. */
    assert_int_equal(route_cache_put_user(cache, 1, 1, 2), 0);
    /* Three newcomers take the three stale slots; plain CLOCK would clear
     * every bit in one turn and then evict user 1 from slot 0. */
    for (uint64_t u = 5; u <= 7; u++) {
        assert_int_equal(route_cache_put_user(cache, u, 1, 2), 0);
    }
    assert_int_equal(route_cache_get_user(cache, 1, &cell_id), 0);
    for (uint64_t u = 5; u <= 7; u++) {
        assert_int_equal(route_cache_get_user(cache, u, &cell_id), 0);
    }
    struct route_cache_stats st;
    route_cache_stats(cache, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 3);
    route_cache_free(cache);
}

/* ------------------------------------------------------------ concurrency */

enum { RACE_CELLS = 48, RACE_USERS = 96, RACE_MAX = 64, RACE_READERS = 4 };

struct race {
    struct route_cache *cache;
    atomic_bool stop;
    atomic_uint_fast64_t torn;      /* cells with fields of two generations */
    atomic_uint_fast64_t stale;     /* answers older than the version seen */
    atomic_uint_fast64_t bad_users; /* user routes not derived from the user */
    atomic_uint_fast64_t cell_hits;
    atomic_uint_fast64_t user_hits;
    atomic_uint_fast64_t lookups;
};

/* User u always lives in a cell whose id is u % 1000 + 1 modulo 1000. */
static uint32_t race_user_cell(uint64_t u, unsigned gen)
{
    return (uint32_t)(u % 1000 + 1 + 1000 * (gen % 100));
}

static void *race_reader(void *arg)
{
    struct race *r = arg;
    route_cache_thread_register();
    uint64_t n = 0;
    unsigned seed = 12345;
    while (!atomic_load(&r->stop)) {
        seed = seed * 1103515245u + 12345u;
        uint32_t cell_id = 1 + (seed >> 8) % RACE_CELLS;
        uint64_t user_id = 1 + (seed >> 4) % RACE_USERS;
        uint64_t seen = route_cache_version(r->cache);
        struct route_cell c;
        if (route_cache_get_cell(r->cache, cell_id, &c) == 0) {
            atomic_fetch_add(&r->cell_hits, 1);
            if (c.cell_id != cell_id || !cell_is_whole(&c)) {
                atomic_fetch_add(&r->torn, 1);
            }
            if (c.directory_version < seen) {
                atomic_fetch_add(&r->stale, 1);
            }
        }
        uint32_t user_cell;
        if (route_cache_get_user(r->cache, user_id, &user_cell) == 0) {
            atomic_fetch_add(&r->user_hits, 1);
            if (user_cell == 0 || (user_cell - 1) % 1000 != user_id % 1000) {
                atomic_fetch_add(&r->bad_users, 1);
            }
        }
        n++;
    }
    atomic_fetch_add(&r->lookups, n);
    route_cache_thread_unregister();
    return NULL;
}

static void test_readers_race_writer(void **state)
{
    (void)state;
    struct race r = {.cache = new_cache(RACE_MAX)};
    pthread_t readers[RACE_READERS];
    for (int i = 0; i < RACE_READERS; i++) {
        assert_int_equal(pthread_create(&readers[i], NULL, race_reader, &r), 0);
    }
    /* The writer is this (registered) thread: replaces cells and users
     * (more keys than room, so eviction runs too), moves leaders, and bumps
     * the version every 500 writes. */
    uint64_t version = 1;
    unsigned gen = 0;
    uint64_t writes = 0, bumps = 0;
    double end = gs_mono_s() + 1.0;
    while (gs_mono_s() < end) {
        for (int k = 0; k < 100; k++, gen++) {
            uint32_t cell_id = 1 + gen % RACE_CELLS;
            struct route_cell c;
            make_cell(&c, cell_id, gen, version);
            assert_int_equal(route_cache_put_cell(r.cache, &c), 0);
            uint64_t user_id = 1 + (gen * 7u) % RACE_USERS;
            assert_int_equal(
                route_cache_put_user(r.cache, user_id, race_user_cell(user_id, gen), version), 0);
            /* A leader hint naming another member re-publishes the entry. */
            int rv = route_cache_set_leader(r.cache, cell_id,
                                            c.members[(gen + 1) % c.n_members].node_id);
            assert_true(rv == 0 || rv == GS_ENOTFOUND); /* evicted meanwhile */
            writes += 3;
            if (writes % 500 < 3) {
                version++;
                bumps++;
                assert_int_equal(route_cache_set_version(r.cache, version), 0);
            }
        }
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < RACE_READERS; i++) {
        assert_int_equal(pthread_join(readers[i], NULL), 0);
    }
    struct route_cache_stats st;
    route_cache_stats(r.cache, &st);
    print_message("      writes=%llu bumps=%llu lookups=%llu cell_hits=%llu user_hits=%llu "
                  "evictions=%llu\n",
                  (unsigned long long)writes, (unsigned long long)bumps,
                  (unsigned long long)atomic_load(&r.lookups),
                  (unsigned long long)atomic_load(&r.cell_hits),
                  (unsigned long long)atomic_load(&r.user_hits), (unsigned long long)st.evictions);
    assert_int_equal(atomic_load(&r.torn), 0);
    assert_int_equal(atomic_load(&r.stale), 0);
    assert_int_equal(atomic_load(&r.bad_users), 0);
    /* The race was real: readers hit entries, the version moved, entries
     * were evicted, and the bound held. */
    assert_true(atomic_load(&r.cell_hits) > 1000);
    assert_true(atomic_load(&r.user_hits) > 1000);
    assert_true(bumps > 10);
    assert_true(st.evictions > 0);
    assert_true(st.entries <= RACE_MAX);
    assert_int_equal(st.hits + st.misses, 2 * atomic_load(&r.lookups));
    route_cache_free(r.cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_bound),
        cmocka_unit_test(test_user_put_get),
        cmocka_unit_test(test_cell_put_get),
        cmocka_unit_test(test_cell_rejects_malformed),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_version_invalidation),
        cmocka_unit_test(test_leader_hints),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_second_chance),
        cmocka_unit_test(test_stale_evicted_first),
        cmocka_unit_test(test_readers_race_writer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
