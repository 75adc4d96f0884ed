/*
 * Unit tests of an entry's write set (engine/wset.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/keys.h"
#include "engine/wset.h"

static void put_str(struct wset *w, const char *k, const char *v)
{
    assert_int_equal(wset_put(w, (const uint8_t *)k, strlen(k), v, strlen(v)), 0);
}

static enum wset_lookup get_str(const struct wset *w, const char *k, char *out, size_t out_len)
{
    const uint8_t *v = NULL;
    size_t n = 0;
    enum wset_lookup l = wset_get(w, (const uint8_t *)k, strlen(k), &v, &n);
    if (l == WSET_VALUE) {
        assert_true(n < out_len);
        memcpy(out, v, n);
        out[n] = '\0';
    }
    return l;
}

static void test_put_get_overwrite_delete(void **state)
{
    (void)state;
    struct wset w;
    char buf[64];
    wset_init(&w);
    assert_int_equal(get_str(&w, "a", buf, sizeof buf), WSET_ABSENT);
    put_str(&w, "a", "1");
    put_str(&w, "b", "22");
    assert_int_equal(get_str(&w, "a", buf, sizeof buf), WSET_VALUE);
    assert_string_equal(buf, "1");
    put_str(&w, "a", "333");
    assert_int_equal(get_str(&w, "a", buf, sizeof buf), WSET_VALUE);
    assert_string_equal(buf, "333");
    assert_int_equal(wset_count(&w), 2);
    assert_int_equal(wset_delete(&w, (const uint8_t *)"b", 1), 0);
    assert_int_equal(get_str(&w, "b", buf, sizeof buf), WSET_DELETED);
    assert_int_equal(wset_count(&w), 2);
    /* A tombstone can be overwritten again; an empty value is a value. */
    put_str(&w, "b", "");
    assert_int_equal(get_str(&w, "b", buf, sizeof buf), WSET_VALUE);
    assert_string_equal(buf, "");
    /* "a" and "ab" are different keys; so is the empty key. */
    assert_int_equal(get_str(&w, "ab", buf, sizeof buf), WSET_ABSENT);
    assert_int_equal(get_str(&w, "", buf, sizeof buf), WSET_ABSENT);
    put_str(&w, "", "empty");
    assert_int_equal(get_str(&w, "", buf, sizeof buf), WSET_VALUE);
    assert_string_equal(buf, "empty");
    wset_free(&w);
}

struct seen {
    char keys[8][8];
    char vals[8][8];
    bool deleted[8];
    size_t n;
};

static void collect(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct seen *s = arg;
    assert_true(s->n < 8 && klen < 8 && vlen < 8);
    memcpy(s->keys[s->n], key, klen);
    s->keys[s->n][klen] = '\0';
    s->deleted[s->n] = val == NULL;
    if (val != NULL) {
        memcpy(s->vals[s->n], val, vlen);
    }
    s->vals[s->n][vlen] = '\0';
    s->n++;
}

static void test_for_each_first_write_order_last_value(void **state)
{
    (void)state;
    struct wset w;
    struct seen s = {0};
    wset_init(&w);
    put_str(&w, "z", "1");
    put_str(&w, "a", "2");
    put_str(&w, "z", "3");
    assert_int_equal(wset_delete(&w, (const uint8_t *)"m", 1), 0);
    put_str(&w, "a", "4");
    wset_for_each(&w, collect, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.keys[0], "z");
    assert_string_equal(s.vals[0], "3");
    assert_string_equal(s.keys[1], "a");
    assert_string_equal(s.vals[1], "4");
    assert_string_equal(s.keys[2], "m");
    assert_true(s.deleted[2]);
    wset_free(&w);
}

/* Many keys (the table and the arena grow), full-width keys, then a reset:
 * nothing is left and memory beyond the bound is released. */
/* A set whose values are all empty has no arena; its values are still
 * values, not tombstones (an idempotency row of an empty response, a time
 * index row). */
static void test_only_empty_values(void **state)
{
    (void)state;
    struct wset w;
    struct seen s = {0};
    const uint8_t *v = NULL;
    size_t n = 1;
    wset_init(&w);
    put_str(&w, "k", "");
    assert_int_equal(wset_get(&w, (const uint8_t *)"k", 1, &v, &n), WSET_VALUE);
    assert_non_null(v);
    assert_int_equal(n, 0);
    wset_for_each(&w, collect, &s);
    assert_int_equal(wset_for_each_sorted(&w, collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_false(s.deleted[0]);
    assert_false(s.deleted[1]);
    wset_free(&w);
}

static void test_growth_and_reset(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct wset w;
    struct key k;
    wset_init(&w);
    for (int round = 0; round < 2; round++) {
        for (uint64_t i = 0; i < N; i++) {
            uint8_t v[8];
            key_pair(&k, KEY_PREFIX_RESULT, i, i * 7 + (uint64_t)round);
            key_put_u64(v, i + (uint64_t)round);
            assert_int_equal(wset_put(&w, k.b, k.len, v, sizeof v), 0);
        }
        assert_int_equal(wset_count(&w), N);
        for (uint64_t i = 0; i < N; i++) {
            const uint8_t *v = NULL;
            size_t n = 0;
            key_pair(&k, KEY_PREFIX_RESULT, i, i * 7 + (uint64_t)round);
            assert_int_equal(wset_get(&w, k.b, k.len, &v, &n), WSET_VALUE);
            assert_int_equal(n, 8);
            assert_int_equal(key_get_u64(v), i + (uint64_t)round);
            /* The other round's key is not there. */
            key_pair(&k, KEY_PREFIX_RESULT, i, i * 7 + (uint64_t)(1 - round));
            assert_int_equal(wset_get(&w, k.b, k.len, &v, &n), WSET_ABSENT);
        }
        assert_true(w.n_slots >= 2 * (size_t)N);
        wset_reset(&w);
        assert_int_equal(wset_count(&w), 0);
        /* A table this large is not kept between entries. */
        assert_null(w.slots);
        assert_null(w.items);
    }
    /* A full-width key. */
    memset(k.b, 0xab, KEY_MAX);
    assert_int_equal(wset_put(&w, k.b, KEY_MAX, "v", 1), 0);
    const uint8_t *v = NULL;
    size_t n = 0;
    assert_int_equal(wset_get(&w, k.b, KEY_MAX, &v, &n), WSET_VALUE);
    assert_int_equal(n, 1);
    assert_int_equal(wset_get(&w, k.b, KEY_MAX - 1, &v, &n), WSET_ABSENT);
    /* A small set keeps its memory across a reset. */
    uint32_t *slots = w.slots;
    wset_reset(&w);
    assert_ptr_equal(w.slots, slots);
    assert_int_equal(wset_get(&w, k.b, KEY_MAX, &v, &n), WSET_ABSENT);
    wset_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_overwrite_delete),
        cmocka_unit_test(test_for_each_first_write_order_last_value),
        cmocka_unit_test(test_only_empty_values),
        cmocka_unit_test(test_growth_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
