/* Applier: order, the bound on queued items and bytes and the time pushes
 * waited for room, drain (within a byte bound, deferred), stop, nice and
 * its boost. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "raft/applier.h"

struct item {
    struct applier_item base; /* first */
    int value;
};

struct sink {
    int ran[1024];
    _Atomic size_t n;
    /* A closed gate holds the applier in the run of the item that has
     * `value == gate_value`. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool gate_closed;
    int gate_value;
    bool at_gate;
    int nice_seen; /* the thread's niceness in its last run */
};

static void run(void *arg, struct applier_item *base)
{
    struct sink *s = arg;
    struct item *it = (struct item *)base;
    pthread_mutex_lock(&s->lock);
    if (it->value == s->gate_value) {
        s->at_gate = true;
        pthread_cond_broadcast(&s->cond);
        while (s->gate_closed) {
            pthread_cond_wait(&s->cond, &s->lock);
        }
    }
    errno = 0;
    s->nice_seen = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    pthread_mutex_unlock(&s->lock);
    s->ran[atomic_fetch_add(&s->n, 1)] = it->value;
    free(it);
}

static struct item *item_new(int value, size_t bytes)
{
    struct item *it = calloc(1, sizeof *it);
    assert_non_null(it);
    it->value = value;
    it->base.bytes = bytes;
    return it;
}

static void sink_init(struct sink *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->gate_value = -1;
}

static void gate_open(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    s->gate_closed = false;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void gate_wait_reached(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->at_gate) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static void test_order_and_drain(void **state)
{
    (void)state;
    static struct sink s;
    sink_init(&s);
    static struct applier a;
    assert_int_equal(applier_start(&a, run, &s, 8, 1 << 20, 0), 0);
    for (int i = 0; i < 500; i++) {
        applier_push(&a, &item_new(i, 10)->base);
    }
    applier_drain(&a);
    /* Drained: everything pushed has run, in push order. */
    assert_int_equal(atomic_load(&s.n), 500);
    assert_int_equal(applier_pending(&a), 0);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(s.ran[i], i);
    }
    applier_stop(&a);
}

/* Wait until n items have run (10 s at most). */
static void wait_ran(struct sink *s, size_t n)
{
    for (int i = 0; i < 10000 && atomic_load(&s->n) < n; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&s->n), n);
}

/* An applier whose first item (value 0) waits at a closed gate. */
static void start_gated(struct sink *s, struct applier *a, size_t max_items, size_t max_bytes)
{
    sink_init(s);
    s->gate_closed = true;
    s->gate_value = 0;
    assert_int_equal(applier_start(a, run, s, max_items, max_bytes, 0), 0);
}

struct pusher {
    struct applier *a;
    struct item *it;
    _Atomic bool returned;
};

static void *pusher_main(void *arg)
{
    struct pusher *p = arg;
    applier_push(p->a, &p->it->base);
    atomic_store(&p->returned, true);
    return NULL;
}

/* Push `it` from another thread while the applier waits at the gate; after
 * 100 ms, note whether the push returned (and what `observe` reads then),
 * open the gate and let the push finish. Observe, then release, then let
 * the caller assert: a failed assertion leaves nothing blocked. */
static bool push_returned_while_gated(struct sink *s, struct applier *a, struct item *it,
                                      size_t *pending, size_t *ran)
{
    static struct pusher p;
    p = (struct pusher){.a = a, .it = it};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pusher_main, &p), 0);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    bool returned = atomic_load(&p.returned);
    *pending = applier_pending(a);
    *ran = atomic_load(&s->n);
    gate_open(s);
    pthread_join(t, NULL);
    assert_true(atomic_load(&p.returned));
    return returned;
}

/* A full queue holds the pusher until the applier makes room. */
static void test_push_blocks_when_full(void **state)
{
    (void)state;
    static struct sink s;
    static struct applier a;
    start_gated(&s, &a, 4, 1 << 20);
    for (int i = 0; i < 4; i++) {
        applier_push(&a, &item_new(i, 10)->base); /* item 0 runs and waits */
    }
    gate_wait_reached(&s);
    assert_int_equal(applier_pending(&a), 4);
    assert_int_equal(applier_push_wait_ns(&a), 0); /* no push waited yet */

    size_t pending, ran;
    assert_false(push_returned_while_gated(&s, &a, item_new(4, 10), &pending, &ran));
    assert_int_equal(pending, 4);
    assert_int_equal(ran, 0);
    /* The push that did not return while the gate was closed waited. */
    assert_true(applier_push_wait_ns(&a) > 0);
    applier_drain(&a);
    assert_int_equal(atomic_load(&s.n), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s.ran[i], i);
    }
    applier_stop(&a);
}

/* Bytes bound the queue as items do; an item larger than the bound goes
 * in alone rather than never. */
static void test_byte_bound(void **state)
{
    (void)state;
    static struct sink s;
    static struct applier a;
    start_gated(&s, &a, 100, 1000);
    applier_push(&a, &item_new(0, 600)->base);
    gate_wait_reached(&s);
    size_t pending, ran;
    /* 600 + 600 > 1000 */
    assert_false(push_returned_while_gated(&s, &a, item_new(1, 600), &pending, &ran));
    assert_int_equal(pending, 1);
    applier_drain(&a);

    applier_push(&a, &item_new(2, 5000)->base); /* alone: in at once */
    applier_drain(&a);
    assert_int_equal(atomic_load(&s.n), 3);
    applier_stop(&a);
}

/* A drain within a byte bound waits only for a queue that small, and
 * otherwise returns at once, leaving the queue as it was. */
static void test_drain_within(void **state)
{
    (void)state;
    static struct sink s;
    static struct applier a;
    start_gated(&s, &a, 100, 1 << 20);
    applier_push(&a, &item_new(0, 300)->base);
    gate_wait_reached(&s);
    applier_push(&a, &item_new(1, 300)->base);
    /* 600 bytes queued or running, the first held at the gate. */
    assert_false(applier_drain_within(&a, 599));
    assert_int_equal(applier_pending(&a), 2);
    assert_int_equal(atomic_load(&s.n), 0);
    gate_open(&s);
    assert_true(applier_drain_within(&a, 600));
    assert_int_equal(applier_pending(&a), 0);
    assert_int_equal(atomic_load(&s.n), 2);
    assert_int_equal(s.ran[1], 1);
    assert_true(applier_drain_within(&a, 0)); /* empty */
    applier_stop(&a);
}

static void *gate_opener_main(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    gate_open(arg);
    return NULL;
}

/* A deferred drain is put off while more than its bound is queued, for at
 * most max_ms since the first try of a series, then waits for the whole
 * queue; a try long after the last one starts a new series. */
static void test_drain_deferred(void **state)
{
    (void)state;
    static struct sink s;
    static struct applier a;
    struct applier_deferral d = {0, 0};
    uint64_t deferred = 12345;
    start_gated(&s, &a, 100, 1 << 20);
    applier_push(&a, &item_new(0, 300)->base);
    gate_wait_reached(&s);
    applier_push(&a, &item_new(1, 300)->base);

    assert_false(applier_drain_deferred(&a, &d, 599, 1000, 100, &deferred));
    assert_int_equal(d.first, 1000);
    assert_false(applier_drain_deferred(&a, &d, 599, 1060, 100, &deferred));
    /* 3,940 ms after the last try: the caller had stopped, a new series. */
    assert_false(applier_drain_deferred(&a, &d, 599, 5000, 100, &deferred));
    assert_int_equal(d.first, 5000);
    assert_false(applier_drain_deferred(&a, &d, 599, 5099, 100, &deferred));
    assert_int_equal(deferred, 12345); /* untouched while deferred */
    assert_int_equal(applier_pending(&a), 2);
    assert_int_equal(atomic_load(&s.n), 0);

    /* 100 ms into the series: waits for the queue, whatever its size. */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, gate_opener_main, &s), 0);
    assert_true(applier_drain_deferred(&a, &d, 599, 5100, 100, &deferred));
    assert_int_equal(deferred, 100);
    assert_int_equal(d.first, 0);
    assert_int_equal(applier_pending(&a), 0);
    assert_int_equal(atomic_load(&s.n), 2);
    assert_int_equal(pthread_join(t, NULL), 0);

    /* Within the bound: at once, not deferred. */
    applier_push(&a, &item_new(2, 300)->base);
    assert_true(applier_drain_deferred(&a, &d, 599, 6000, 100, &deferred));
    assert_int_equal(deferred, 0);
    assert_int_equal(atomic_load(&s.n), 3);
    applier_stop(&a);
}

/* Stop runs what was queued before it returns. */
static void test_stop_runs_queued(void **state)
{
    (void)state;
    static struct sink s;
    static struct applier a;
    start_gated(&s, &a, 16, 1 << 20);
    for (int i = 0; i < 10; i++) {
        applier_push(&a, &item_new(i, 1)->base);
    }
    gate_wait_reached(&s);
    gate_open(&s);
    applier_stop(&a);
    assert_int_equal(atomic_load(&s.n), 10);
    assert_int_equal(s.ran[9], 9);
    /* Stopped and never-started appliers: no-ops. */
    applier_stop(&a);
    applier_drain(&a);
    assert_int_equal(applier_pending(&a), 0);
}

/* The applier thread's niceness follows applier_set_nice, up and back down
 * where the process may lower niceness (root in CI). */
static void test_nice(void **state)
{
    (void)state;
    static struct sink s;
    sink_init(&s);
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    assert_int_equal(errno, 0);
    if (base > 19 - 7) {
        skip(); /* already too nice to raise it by 7 */
    }
    static struct applier a;
    assert_int_equal(applier_start(&a, run, &s, 4, 1 << 20, 3), 0);
    applier_push(&a, &item_new(0, 1)->base);
    wait_ran(&s, 1);
    pthread_mutex_lock(&a.lock);
    bool renice_ok = a.renice_ok;
    pthread_mutex_unlock(&a.lock);
    if (!renice_ok) {
        /* Unprivileged: not reniced beyond the probe's one step up (which
         * it could not take back), and not to +3. */
        assert_true(s.nice_seen == base || s.nice_seen == base + 1);
        applier_stop(&a);
        return;
    }
    assert_int_equal(s.nice_seen, base + 3);
    applier_set_nice(&a, 7);
    /* Not drained: a drain runs the applier at its base priority. */
    applier_push(&a, &item_new(1, 1)->base);
    wait_ran(&s, 2);
    assert_int_equal(s.nice_seen, base + 7);
    applier_set_nice(&a, 0); /* back down, as a group that becomes leader */
    applier_push(&a, &item_new(2, 1)->base);
    wait_ran(&s, 3);
    assert_int_equal(s.nice_seen, base);
    applier_stop(&a);
}

static int thread_nice(pid_t tid)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, (id_t)tid);
    assert_int_equal(errno, 0);
    return n;
}

/* Poll until the applier thread's niceness is `want` (10 s at most). */
static void wait_thread_nice(struct applier *a, int want)
{
    for (int i = 0; i < 10000 && thread_nice(a->tid) != want; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(thread_nice(a->tid), want);
}

static void *drainer(void *arg)
{
    applier_drain(arg);
    return NULL;
}

/* A reniced applier runs at its base priority once its queue is half full
 * or the pusher drains it, and goes back to its niceness when the queue is
 * empty: a busy machine cannot starve it while the loop thread waits. */
static void test_boost(void **state)
{
    (void)state;
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    assert_int_equal(errno, 0);
    if (base > 19 - 5) {
        skip();
    }
    static struct sink s;
    static struct applier a;
    start_gated(&s, &a, 8, 1 << 20);
    applier_set_nice(&a, 5);
    applier_push(&a, &item_new(0, 1)->base);
    gate_wait_reached(&s);
    pthread_mutex_lock(&a.lock);
    bool renice_ok = a.renice_ok;
    pthread_mutex_unlock(&a.lock);
    if (!renice_ok) {
        gate_open(&s);
        applier_stop(&a);
        skip(); /* unprivileged: never reniced (test_nice) */
    }
    /* Items 0-2: below half of 8, still at +5. */
    applier_push(&a, &item_new(1, 1)->base);
    applier_push(&a, &item_new(2, 1)->base);
    assert_int_equal(thread_nice(a.tid), base + 5);
    applier_push(&a, &item_new(3, 1)->base); /* 4 of 8 */
    assert_int_equal(thread_nice(a.tid), base);
    gate_open(&s);
    wait_ran(&s, 4);
    assert_int_equal(s.nice_seen, base); /* item 3 ran boosted */
    while (applier_pending(&a) != 0) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* Empty: back to +5 (decided under the lock applier_pending takes). */
    assert_int_equal(thread_nice(a.tid), base + 5);

    /* A drain boosts a queue of one. */
    pthread_mutex_lock(&s.lock);
    s.gate_closed = true;
    s.gate_value = 4;
    s.at_gate = false;
    pthread_mutex_unlock(&s.lock);
    applier_push(&a, &item_new(4, 1)->base);
    gate_wait_reached(&s);
    assert_int_equal(thread_nice(a.tid), base + 5);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drainer, &a), 0);
    wait_thread_nice(&a, base);
    gate_open(&s);
    pthread_join(t, NULL);
    assert_int_equal(s.nice_seen, base);
    assert_int_equal(thread_nice(a.tid), base + 5);
    applier_stop(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_drain),
        cmocka_unit_test(test_push_blocks_when_full),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_drain_within),
        cmocka_unit_test(test_drain_deferred),
        cmocka_unit_test(test_stop_runs_queued),
        cmocka_unit_test(test_nice),
        cmocka_unit_test(test_boost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
