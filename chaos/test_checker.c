/* Chaos histories and checkers: writer/loader round trip and refusals,
 * linearizable and non-linearizable register histories (ops of unknown
 * outcome included), lost creates and follows, the search budget, and a
 * realistic generated history checked quickly. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chaos/checker.h"
#include "chaos/history.h"
#include "geoscale/errors.h"

/* ------------------------------------------------------------ the fixture */

/* A history under construction in a temporary file. Ops are appended as an
 * invoke followed at once by its completion, with explicit times: the file's
 * order then differs from the times' for concurrent ops, which the checker
 * must handle (it orders by time). */
struct hist {
    char path[64];
    struct chaos_history_writer *w;
    char *report; /* of the last check */
    struct chaos_check_summary sum;
};

static int setup(void **state)
{
    struct hist *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    snprintf(h->path, sizeof h->path, "/tmp/chaos-test-XXXXXX");
    int fd = mkstemp(h->path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(chaos_history_writer_open(h->path, &h->w, NULL, 0), 0);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct hist *h = *state;
    chaos_history_writer_close(h->w);
    unlink(h->path);
    free(h->report);
    free(h);
    return 0;
}

static void event(struct hist *h, int64_t process, enum chaos_event_type type, enum chaos_fn f,
                  const char *key, struct chaos_value v, int64_t time)
{
    struct chaos_event ev = {.type = type, .f = f, .process = process, .value = v, .time_ns = time};
    snprintf(ev.key, sizeof ev.key, "%s", key);
    assert_int_equal(chaos_history_append(h->w, &ev), 0);
}

static void init(struct hist *h, const char *key, int64_t v)
{
    event(h, 0, CHAOS_INIT, CHAOS_F_NONE, key, chaos_value_int(v), 0);
}

/* done: CHAOS_OK, CHAOS_FAIL or CHAOS_INFO; t1 < 0: no completion. */
static void op(struct hist *h, int64_t process, enum chaos_fn f, const char *key,
               struct chaos_value inv, struct chaos_value result, int64_t t0, int64_t t1,
               enum chaos_event_type done)
{
    event(h, process, CHAOS_INVOKE, f, key, inv, t0);
    if (t1 >= 0) {
        event(h, process, done, f, key, result, t1);
    }
}

static void write_op(struct hist *h, int64_t p, const char *key, int64_t v, int64_t t0, int64_t t1,
                     enum chaos_event_type done)
{
    op(h, p, CHAOS_F_WRITE, key, chaos_value_int(v), chaos_value_int(v), t0, t1, done);
}

static void read_op(struct hist *h, int64_t p, const char *key, int64_t v, int64_t t0, int64_t t1)
{
    op(h, p, CHAOS_F_READ, key, chaos_value_null(), chaos_value_int(v), t0, t1, CHAOS_OK);
}

static void read_null(struct hist *h, int64_t p, const char *key, int64_t t0, int64_t t1)
{
    op(h, p, CHAOS_F_READ, key, chaos_value_null(), chaos_value_null(), t0, t1, CHAOS_OK);
}

static void cas_op(struct hist *h, int64_t p, const char *key, int64_t from, int64_t to, int64_t t0,
                   int64_t t1, enum chaos_event_type done)
{
    op(h, p, CHAOS_F_CAS, key, chaos_value_pair(from, to), chaos_value_pair(from, to), t0, t1,
       done);
}

/* Close the writer, check the file with max_states (0: default) and keep
 * the report; returns chaos_check_file_opts' result. */
static int check_budget(struct hist *h, uint64_t max_states)
{
    assert_int_equal(chaos_history_writer_close(h->w), 0);
    h->w = NULL;
    struct chaos_check_options opts;
    chaos_check_options_default(&opts);
    if (max_states != 0) {
        opts.max_states = max_states;
    }
    free(h->report);
    h->report = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&h->report, &len);
    assert_non_null(out);
    int rc = chaos_check_file_opts(h->path, &opts, out, &h->sum);
    fclose(out);
    return rc;
}

static int check(struct hist *h)
{
    return check_budget(h, 0);
}

static void expect_pass(struct hist *h)
{
    int rc = check(h);
    if (rc != 0) {
        fprintf(stderr, "%s", h->report);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(h->sum.lin_violations, 0);
    assert_int_equal(h->sum.lost_writes, 0);
    assert_int_equal(h->sum.unknown, 0);
    assert_non_null(strstr(h->report, "result: PASS"));
}

static void expect_violation(struct hist *h, const char *key)
{
    int rc = check(h);
    char want[128];
    snprintf(want, sizeof want, "key %s: NOT LINEARIZABLE", key);
    if (rc != 1 || strstr(h->report, want) == NULL) {
        fprintf(stderr, "%s", h->report);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(h->sum.lin_violations, 1);
    assert_int_equal(h->sum.unknown, 0);
    assert_non_null(strstr(h->report, want));
    assert_non_null(strstr(h->report, "result: FAIL"));
}

/* Re-open a fresh history in the same fixture. */
static void restart(struct hist *h)
{
    if (h->w != NULL) {
        chaos_history_writer_close(h->w);
    }
    assert_int_equal(chaos_history_writer_open(h->path, &h->w, NULL, 0), 0);
}

/* ------------------------------------------------------ linearizable cases */

/* Two concurrent writes, then a read: either value is fine, the initial one
 * is not; a read concurrent with both may see any of the three. */
static void test_concurrent_writes_any_order(void **state)
{
    struct hist *h = *state;
    const int64_t seen[] = {1, 2};
    for (size_t i = 0; i < 2; i++) {
        restart(h);
        init(h, "r:1", 0);
        write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
        write_op(h, 2, "r:1", 2, 11, 21, CHAOS_OK);
        read_op(h, 3, "r:1", seen[i], 30, 31);
        read_op(h, 3, "r:1", seen[i], 32, 33);
        expect_pass(h);
        assert_int_equal(h->sum.keys, 1);
        assert_int_equal(h->sum.ops, 4);
    }
    for (int64_t v = 0; v <= 2; v++) {
        restart(h);
        init(h, "r:1", 0);
        write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
        write_op(h, 2, "r:1", 2, 11, 21, CHAOS_OK);
        read_op(h, 3, "r:1", v, 12, 19);
        expect_pass(h);
    }
    /* Reads that see 1 then 2, in one order, from two processes. */
    restart(h);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
    write_op(h, 2, "r:1", 2, 10, 40, CHAOS_OK);
    read_null(h, 3, "r:1", 0, 5);
    read_op(h, 3, "r:1", 1, 21, 22);
    read_op(h, 4, "r:1", 1, 21, 25);
    read_op(h, 4, "r:1", 2, 26, 30);
    read_op(h, 3, "r:1", 2, 31, 32);
    expect_pass(h);
}

static void test_cas(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    cas_op(h, 1, "r:1", 0, 1, 10, 20, CHAOS_OK);
    cas_op(h, 2, "r:1", 0, 2, 21, 30, CHAOS_FAIL); /* refused: holds 1 */
    read_op(h, 3, "r:1", 1, 31, 32);
    cas_op(h, 1, "r:1", 1, 3, 40, 50, CHAOS_OK);
    cas_op(h, 2, "r:1", 1, 4, 41, 51, CHAOS_FAIL); /* lost the race */
    read_op(h, 3, "r:1", 3, 52, 53);
    expect_pass(h);
    assert_int_equal(h->sum.ops, 6);
}

/* A write that timed out and later shows up; one that never does. */
static void test_info_writes(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 5, 10, 20, CHAOS_INFO);
    read_op(h, 2, "r:1", 0, 30, 31);
    read_op(h, 2, "r:1", 5, 100, 101); /* took effect late */
    write_op(h, 2, "r:1", 6, 110, 120, CHAOS_OK);
    write_op(h, 3, "r:1", 7, 130, -1, CHAOS_INFO); /* no completion at all */
    read_op(h, 2, "r:1", 6, 140, 141);
    init(h, "r:2", 0);
    write_op(h, 4, "r:2", 8, 10, 20, CHAOS_INFO); /* never seen */
    read_op(h, 5, "r:2", 0, 30, 31);
    read_op(h, 5, "r:2", 0, 40, 41);
    expect_pass(h);
    assert_int_equal(h->sum.keys, 2);
    assert_int_equal(h->sum.info_ops, 3);
}

static void test_info_cas(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    cas_op(h, 1, "r:1", 0, 7, 10, 20, CHAOS_INFO);
    read_op(h, 2, "r:1", 0, 21, 22);
    read_op(h, 2, "r:1", 7, 30, 31); /* applied after all */
    init(h, "r:2", 0);
    cas_op(h, 3, "r:2", 0, 9, 10, 20, CHAOS_INFO); /* never applied */
    write_op(h, 4, "r:2", 4, 30, 40, CHAOS_OK);
    read_op(h, 4, "r:2", 4, 50, 51);
    /* Two unknown cas ops chained: 0 -> 11 -> 12, seen only at the end. */
    init(h, "r:3", 0);
    cas_op(h, 5, "r:3", 0, 11, 10, 20, CHAOS_INFO);
    cas_op(h, 6, "r:3", 11, 12, 30, 40, CHAOS_INFO);
    read_op(h, 7, "r:3", 12, 50, 51);
    expect_pass(h);
    assert_int_equal(h->sum.info_ops, 4);
}

/* ------------------------------------------------- non-linearizable cases */

static void test_stale_read(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
    write_op(h, 1, "r:1", 2, 30, 40, CHAOS_OK);
    read_op(h, 2, "r:1", 1, 50, 60);
    init(h, "r:2", 0); /* an innocent key beside it */
    write_op(h, 3, "r:2", 3, 10, 20, CHAOS_OK);
    read_op(h, 3, "r:2", 3, 50, 60);
    expect_violation(h, "r:1");
    assert_int_equal(h->sum.keys, 2);
    /* The report names the read that cannot be placed and the state. */
    assert_non_null(strstr(h->report, "p2 read -> 1 (lines 6-7)"));
    assert_non_null(strstr(h->report, "leaves the register at 2"));
    assert_null(strstr(h->report, "key r:2"));
}

static void test_read_never_written(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
    read_op(h, 2, "r:1", 99, 15, 25);
    expect_violation(h, "r:1");
    assert_non_null(strstr(h->report, "which no op wrote"));
    /* A failed write does not count as writing its value. */
    restart(h);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_FAIL);
    read_op(h, 2, "r:1", 1, 30, 40);
    expect_violation(h, "r:1");
    /* Null read of a register initialised to 0. */
    restart(h);
    init(h, "r:1", 0);
    read_null(h, 2, "r:1", 30, 40);
    expect_violation(h, "r:1");
    /* A read of a value finished before its only write was invoked. */
    restart(h);
    read_op(h, 2, "r:1", 5, 10, 20);
    write_op(h, 1, "r:1", 5, 30, 40, CHAOS_OK);
    expect_violation(h, "r:1");
    assert_non_null(strstr(h->report, "before the only op writing it was invoked"));
}

/* The final read misses an acknowledged write. */
static void test_lost_acknowledged_write(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
    write_op(h, 2, "r:1", 2, 15, 25, CHAOS_OK); /* acknowledged after 1's */
    read_op(h, 3, "r:1", 2, 30, 31);
    write_op(h, 1, "r:1", 3, 40, 50, CHAOS_OK);
    read_op(h, 3, "r:1", 2, 1000, 1001); /* final read: 3 is lost */
    expect_violation(h, "r:1");
    assert_non_null(strstr(h->report, "p3 read -> 2 (lines 10-11)"));
    assert_non_null(strstr(h->report, "leaves the register at 3"));
}

static void test_cas_on_wrong_value(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 20, CHAOS_OK);
    cas_op(h, 2, "r:1", 0, 2, 30, 40, CHAOS_OK); /* register held 1 */
    expect_violation(h, "r:1");
    assert_non_null(strstr(h->report, "p2 cas 0 -> 2"));
    /* An ok cas of unknown from-state is fine when concurrent. */
    restart(h);
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 40, CHAOS_OK);
    cas_op(h, 2, "r:1", 0, 2, 30, 50, CHAOS_OK);
    read_op(h, 3, "r:1", 1, 60, 70);
    expect_pass(h);
}

/* Two readers see two concurrent writes in opposite orders. */
static void test_reads_disagree_on_order(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 10, 50, CHAOS_OK);
    write_op(h, 2, "r:1", 2, 10, 50, CHAOS_OK);
    read_op(h, 3, "r:1", 1, 60, 61);
    read_op(h, 3, "r:1", 2, 62, 63);
    read_op(h, 4, "r:1", 2, 60, 61);
    read_op(h, 4, "r:1", 1, 62, 63);
    expect_violation(h, "r:1");
}

/* An unknown write that shows up must stay: it cannot be seen and then
 * unseen without another write. */
static void test_info_write_seen_then_gone(void **state)
{
    struct hist *h = *state;
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 5, 10, 20, CHAOS_INFO);
    read_op(h, 2, "r:1", 5, 30, 31);
    read_op(h, 2, "r:1", 0, 40, 41);
    expect_violation(h, "r:1");
    /* An unknown cas that is the only way to reach a value read. */
    restart(h);
    init(h, "r:1", 0);
    write_op(h, 1, "r:1", 1, 5, 8, CHAOS_OK);
    cas_op(h, 2, "r:1", 0, 7, 10, 20, CHAOS_INFO); /* holds 1: cannot apply */
    read_op(h, 3, "r:1", 7, 30, 31);
    expect_violation(h, "r:1");
}

/* ----------------------------------------------------- acknowledged writes */

static void create_op(struct hist *h, int64_t p, int64_t id, int64_t t, enum chaos_event_type done)
{
    char key[32];
    snprintf(key, sizeof key, "u:%lld", (long long)id);
    event(h, p, CHAOS_INVOKE, CHAOS_F_CREATE, "u:?", chaos_value_null(), t);
    event(h, p, done, CHAOS_F_CREATE, done == CHAOS_OK ? key : "u:?", chaos_value_null(), t + 1);
}

static void follow_op(struct hist *h, int64_t p, int64_t actor, int64_t target, int64_t t,
                      enum chaos_event_type done)
{
    char key[32];
    snprintf(key, sizeof key, "u:%lld", (long long)actor);
    op(h, p, CHAOS_F_FOLLOW, key, chaos_value_int(target), chaos_value_int(target), t, t + 1, done);
}

static void final_exists(struct hist *h, int64_t p, int64_t id, bool exists, int64_t t)
{
    char key[32];
    snprintf(key, sizeof key, "u:%lld", (long long)id);
    op(h, p, CHAOS_F_FINAL_EXISTS, key, chaos_value_null(), chaos_value_bool(exists), t, t + 1,
       CHAOS_OK);
}

static void final_following(struct hist *h, int64_t p, int64_t actor, const int64_t *ids, size_t n,
                            int64_t t)
{
    char key[32];
    snprintf(key, sizeof key, "u:%lld", (long long)actor);
    op(h, p, CHAOS_F_FINAL_FOLLOWING, key, chaos_value_null(), chaos_value_list(ids, n), t, t + 1,
       CHAOS_OK);
}

static void test_acknowledged_writes(void **state)
{
    struct hist *h = *state;
    const int64_t of1[] = {3, 2};
    const int64_t of2[] = {1};
    /* All there: creates of 1, 2, 3; follows 1->2, 1->3, 2->1; an unknown
     * follow 2->3 that did not happen and a failed create. */
    create_op(h, 1, 1, 10, CHAOS_OK);
    create_op(h, 1, 2, 20, CHAOS_OK);
    create_op(h, 2, 3, 20, CHAOS_OK);
    create_op(h, 2, 0, 30, CHAOS_FAIL);
    follow_op(h, 1, 1, 2, 40, CHAOS_OK);
    follow_op(h, 2, 1, 3, 40, CHAOS_OK);
    follow_op(h, 3, 2, 1, 40, CHAOS_OK);
    follow_op(h, 4, 2, 3, 40, CHAOS_INFO);
    for (int64_t id = 1; id <= 3; id++) {
        final_exists(h, 9, id, true, 100 + 2 * id);
    }
    final_following(h, 9, 1, of1, 2, 200);
    final_following(h, 9, 2, of2, 1, 210);
    expect_pass(h);
    assert_non_null(strstr(h->report, "3 users created, 3 follows; 0 lost"));

    /* A lost create and a lost follow. */
    restart(h);
    create_op(h, 1, 1, 10, CHAOS_OK);
    create_op(h, 1, 2, 20, CHAOS_OK);
    follow_op(h, 1, 1, 2, 40, CHAOS_OK);
    final_exists(h, 9, 1, true, 100);
    final_exists(h, 9, 2, false, 102);
    final_following(h, 9, 1, of2, 1, 200);
    assert_int_equal(check(h), 1);
    assert_int_equal(h->sum.lost_writes, 2);
    assert_int_equal(h->sum.unknown, 0);
    assert_non_null(strstr(h->report, "LOST WRITE: user 2 created ok"));
    assert_non_null(strstr(h->report, "LOST WRITE: follow 1 -> 2"));

    /* Missing final reads: undecided, not a pass. */
    restart(h);
    create_op(h, 1, 1, 10, CHAOS_OK);
    create_op(h, 1, 2, 20, CHAOS_OK);
    follow_op(h, 1, 1, 2, 40, CHAOS_OK);
    final_exists(h, 9, 1, true, 100);
    assert_int_equal(check(h), 1);
    assert_int_equal(h->sum.lost_writes, 0);
    assert_int_equal(h->sum.unknown, 2); /* user 2's exists, user 1's following */
    assert_non_null(strstr(h->report, "UNDECIDED: user 2"));
    assert_non_null(strstr(h->report, "UNDECIDED: user 1 followed ok"));
}

/* ---------------------------------------------------- format and loader */

struct writer_thread {
    struct chaos_history_writer *w;
    int64_t process;
    int n_ops;
};

static void *writer_thread_main(void *arg)
{
    struct writer_thread *t = arg;
    char key[32];
    snprintf(key, sizeof key, "r:%lld", (long long)t->process);
    for (int i = 0; i < t->n_ops; i++) {
        int64_t v = t->process * 100000 + i;
        assert_int_equal(chaos_history_record(t->w, t->process, CHAOS_INVOKE, CHAOS_F_WRITE, key,
                                              chaos_value_int(v)),
                         0);
        assert_int_equal(chaos_history_record(t->w, t->process, CHAOS_OK, CHAOS_F_WRITE, key,
                                              chaos_value_int(v)),
                         0);
    }
    return NULL;
}

static void test_round_trip(void **state)
{
    struct hist *h = *state;
    const int64_t ids[] = {7, -3, 1099511627777LL};
    init(h, "r:0", -5);
    event(h, 1, CHAOS_INVOKE, CHAOS_F_CAS, "r:0", chaos_value_pair(-5, 6), 100);
    event(h, 1, CHAOS_OK, CHAOS_F_CAS, "r:0", chaos_value_pair(-5, 6), 110);
    event(h, 2, CHAOS_INVOKE, CHAOS_F_FINAL_FOLLOWING, "u:42", chaos_value_null(), 120);
    event(h, 2, CHAOS_OK, CHAOS_F_FINAL_FOLLOWING, "u:42", chaos_value_list(ids, 3), 130);
    event(h, 2, CHAOS_INVOKE, CHAOS_F_FINAL_EXISTS, "u:42", chaos_value_null(), 140);
    event(h, 2, CHAOS_OK, CHAOS_F_FINAL_EXISTS, "u:42", chaos_value_bool(false), 150);
    event(h, 3, CHAOS_INVOKE, CHAOS_F_READ, "r:0", chaos_value_null(), 160); /* left open */
    /* Four threads record concurrently with the writer's own clock. */
    struct writer_thread threads[4];
    pthread_t tids[4];
    for (int i = 0; i < 4; i++) {
        threads[i] = (struct writer_thread){.w = h->w, .process = 10 + i, .n_ops = 250};
        assert_int_equal(pthread_create(&tids[i], NULL, writer_thread_main, &threads[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tids[i], NULL);
    }
    assert_int_equal(chaos_history_writer_close(h->w), 0);
    h->w = NULL;

    struct chaos_history *hh = NULL;
    char err[256] = "";
    assert_int_equal(chaos_history_load(h->path, &hh, err, sizeof err), 0);
    assert_int_equal(hh->n_events, 8 + 4 * 250 * 2);
    const struct chaos_event *e = hh->events;
    assert_int_equal(e[0].type, CHAOS_INIT);
    assert_string_equal(e[0].key, "r:0");
    assert_int_equal(e[0].value.kind, CHAOS_VALUE_INT);
    assert_int_equal(e[0].value.i, -5);
    assert_int_equal(e[1].f, CHAOS_F_CAS);
    assert_int_equal(e[1].value.kind, CHAOS_VALUE_PAIR);
    assert_int_equal(e[1].value.pair[0], -5);
    assert_int_equal(e[1].value.pair[1], 6);
    assert_int_equal(e[1].time_ns, 100);
    assert_int_equal(e[1].process, 1);
    assert_int_equal(hh->pair[1], 2);
    assert_int_equal(hh->pair[2], 1);
    assert_int_equal(e[4].value.kind, CHAOS_VALUE_LIST);
    assert_int_equal(e[4].value.n_list, 3);
    assert_memory_equal(e[4].value.list, ids, sizeof ids);
    assert_int_equal(e[6].value.kind, CHAOS_VALUE_BOOL);
    assert_int_equal(e[6].value.i, 0);
    assert_int_equal(hh->pair[7], CHAOS_NO_EVENT);
    assert_int_equal(e[7].line, 8);
    /* The writer stamped under its lock: file order is time order, and each
     * invoke is paired with the next event of its process. */
    for (size_t i = 9; i < hh->n_events; i++) {
        assert_true(e[i].time_ns >= e[i - 1].time_ns);
    }
    for (size_t i = 8; i < hh->n_events; i++) {
        if (e[i].type == CHAOS_INVOKE) {
            size_t c = hh->pair[i];
            assert_true(c != CHAOS_NO_EVENT && c > i);
            assert_int_equal(e[c].process, e[i].process);
            assert_int_equal(e[c].value.i, e[i].value.i);
            for (size_t k = i + 1; k < c; k++) {
                assert_true(e[k].process != e[i].process);
            }
        }
    }
    chaos_history_free(hh);
    /* The checker agrees: every register passes, the open read is info. */
    struct chaos_check_summary sum;
    assert_int_equal(chaos_check_file(h->path, NULL, &sum), 0);
    assert_int_equal(sum.events, 8 + 2000);
    assert_int_equal(sum.ops, 4 + 1000);
    assert_int_equal(sum.keys, 5);
    assert_int_equal(sum.info_ops, 1);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void expect_load_error(const char *path, int code, const char *why)
{
    struct chaos_history *hh = NULL;
    char err[256] = "";
    int rc = chaos_history_load(path, &hh, err, sizeof err);
    if (rc != code || strstr(err, why) == NULL) {
        fprintf(stderr, "load: %d %s\n", rc, err);
    }
    assert_int_equal(rc, code);
    assert_null(hh);
    assert_non_null(strstr(err, why));
    /* chaos_check_file passes the code on. */
    struct chaos_check_summary sum;
    assert_int_equal(chaos_check_file(path, NULL, &sum), code);
}

static void test_loader_refusals(void **state)
{
    struct hist *h = *state;
    struct chaos_history *hh = NULL;
    const char *inv = "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"r:1\","
                      "\"value\":1,\"time\":10}\n";
    char buf[4096];
    write_text(h->path, "{\"process\":1,\"type\":\"invoke\"\n");
    expect_load_error(h->path, GS_EINVAL, ":1: not JSON");
    snprintf(buf, sizeof buf, "%s%s", inv, inv);
    write_text(h->path, buf);
    expect_load_error(h->path, GS_EINVAL, ":2: process 1 invokes while its op of line 1");
    write_text(h->path, "{\"process\":1,\"type\":\"ok\",\"f\":\"write\",\"key\":\"r:1\","
                        "\"value\":1,\"time\":10}\n");
    expect_load_error(h->path, GS_EINVAL, "without an invoke");
    snprintf(buf, sizeof buf,
             "%s{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"r:1\",\"value\":1,"
             "\"time\":11}\n",
             inv);
    write_text(h->path, buf);
    expect_load_error(h->path, GS_EINVAL, "completes a write with a read");
    snprintf(buf, sizeof buf,
             "%s{\"process\":1,\"type\":\"ok\",\"f\":\"write\",\"key\":\"r:1\",\"value\":1,"
             "\"time\":9}\n",
             inv);
    write_text(h->path, buf);
    expect_load_error(h->path, GS_EINVAL, "earlier than its invoke");
    write_text(h->path, "{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"key\":\"r:1\","
                        "\"value\":[1,2,3],\"time\":10}\n");
    expect_load_error(h->path, GS_EINVAL, "[from, to]");
    write_text(h->path, "{\"process\":1,\"type\":\"invoke\",\"f\":\"frob\",\"key\":\"r:1\","
                        "\"value\":1,\"time\":10}\n");
    expect_load_error(h->path, GS_EINVAL, "\"f\"");
    write_text(h->path, "{\"type\":\"init\",\"key\":\"r:1\",\"value\":0}\n"
                        "{\"type\":\"init\",\"key\":\"r:1\",\"value\":3}\n");
    expect_load_error(h->path, GS_EINVAL, ":2: a second init for key r:1");
    /* A key too long, a line too long, a file too large. */
    snprintf(buf, sizeof buf,
             "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"%0100d\","
             "\"value\":null,\"time\":10}\n",
             0);
    write_text(h->path, buf);
    expect_load_error(h->path, GS_ETOOBIG, "\"key\" longer than");
    FILE *f = fopen(h->path, "w");
    assert_non_null(f);
    for (unsigned i = 0; i < CHAOS_LINE_MAX + 16; i++) {
        fputc(' ', f);
    }
    fputs("{}\n", f);
    fclose(f);
    expect_load_error(h->path, GS_ETOOBIG, "line longer than");
    f = fopen(h->path, "w");
    assert_non_null(f);
    fputs("{\"process\":1,\"type\":\"invoke\",\"f\":\"final_following\",\"key\":\"u:1\","
          "\"value\":null,\"time\":1}\n{\"process\":1,\"type\":\"ok\",\"f\":\"final_following\","
          "\"key\":\"u:1\",\"time\":2,\"value\":[0",
          f);
    for (unsigned i = 1; i <= CHAOS_LIST_MAX; i++) {
        fprintf(f, ",%u", i);
    }
    fputs("]}\n", f);
    fclose(f);
    expect_load_error(h->path, GS_ETOOBIG, ":2: list of 100001 ids exceeds");
    assert_int_equal(truncate(h->path, (off_t)CHAOS_HISTORY_MAX_BYTES + 1), 0);
    expect_load_error(h->path, GS_ETOOBIG, "exceed the limit");
    expect_load_error("/nonexistent/chaos/history.jsonl", GS_EIO, "cannot open");
    /* The writer refuses what it cannot write. */
    struct chaos_history_writer *w = NULL;
    char err[256] = "";
    assert_int_equal(
        chaos_history_writer_open("/nonexistent/chaos/history.jsonl", &w, err, sizeof err), GS_EIO);
    assert_null(w);
    assert_non_null(strstr(err, "cannot create"));
    restart(h);
    struct chaos_event bad = {.type = CHAOS_INVOKE, .f = CHAOS_F_NONE, .time_ns = 1};
    assert_int_equal(chaos_history_append(h->w, &bad), GS_EINVAL); /* no f */
    bad.f = CHAOS_F_READ;
    memset(bad.key, 'k', sizeof bad.key); /* not terminated */
    assert_int_equal(chaos_history_append(h->w, &bad), GS_EINVAL);
    char long_key[CHAOS_KEY_MAX + 8];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    assert_int_equal(
        chaos_history_record(h->w, 1, CHAOS_INVOKE, CHAOS_F_READ, long_key, chaos_value_null()),
        GS_EINVAL);
    assert_int_equal(chaos_history_writer_close(h->w), 0);
    h->w = NULL;
    assert_int_equal(chaos_history_load(h->path, &hh, NULL, 0), 0);
    assert_int_equal(hh->n_events, 0); /* nothing refused was written */
    chaos_history_free(hh);
    hh = NULL;
    assert_int_equal(chaos_history_writer_open(h->path, &h->w, NULL, 0), 0);
    /* Blank lines and a last line without its newline are fine. */
    chaos_history_writer_close(h->w);
    h->w = NULL;
    snprintf(buf, sizeof buf,
             "\n%s\n{\"process\":1,\"type\":\"ok\",\"f\":\"write\",\"key\":\"r:1\",\"value\":1,"
             "\"time\":11}",
             inv);
    write_text(h->path, buf);
    assert_int_equal(chaos_history_load(h->path, &hh, NULL, 0), 0);
    assert_int_equal(hh->n_events, 2);
    assert_int_equal(hh->events[0].line, 2);
    assert_int_equal(hh->events[1].line, 4);
    assert_int_equal(hh->pair[0], 1);
    chaos_history_free(hh);
}

/* ------------------------------------------- against a brute-force oracle */

/* xorshift64* */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

struct small_op {
    enum chaos_fn f;
    enum chaos_event_type done; /* CHAOS_INVOKE: no completion */
    int64_t call, ret;
    int64_t a, b; /* write a; cas a -> b; read: a (b != 0: null) */
};

/* Is there an order of the ops that take part (failed ops and unknown reads
 * do not; unknown writes and cas may or may not) that respects real time
 * and register semantics? Plain exhaustive search. */
static bool oracle(const struct small_op *ops, int n, bool init_null, int64_t init_v, unsigned used)
{
    bool any_mandatory_left = false;
    for (int i = 0; i < n; i++) {
        bool optional = ops[i].done != CHAOS_OK;
        if (!(used & (1u << i)) && !optional) {
            any_mandatory_left = true;
        }
    }
    if (!any_mandatory_left) {
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (used & (1u << i)) {
            continue;
        }
        /* Every unused mandatory op that returned before i was invoked must
         * come first. */
        bool blocked = false;
        for (int k = 0; k < n && !blocked; k++) {
            blocked = k != i && !(used & (1u << k)) && ops[k].done == CHAOS_OK &&
                      ops[k].ret < ops[i].call;
        }
        if (blocked) {
            continue;
        }
        bool null = init_null;
        int64_t v = init_v;
        if (ops[i].f == CHAOS_F_READ) {
            bool rnull = ops[i].b != 0;
            if (rnull != init_null || (!rnull && ops[i].a != init_v)) {
                continue;
            }
        } else if (ops[i].f == CHAOS_F_WRITE) {
            null = false;
            v = ops[i].a;
        } else {
            if (init_null || init_v != ops[i].a) {
                continue;
            }
            null = false;
            v = ops[i].b;
        }
        if (oracle(ops, n, null, v, used | (1u << i))) {
            return true;
        }
    }
    return false;
}

/* An in-memory history of at most 17 events (chaos_check_history). */
struct mem_hist {
    struct chaos_event events[17];
    size_t pair[17];
    size_t open[8]; /* per process (one op each): its invoke */
    struct chaos_history h;
};

static void mem_event(struct mem_hist *m, int64_t p, enum chaos_event_type type, enum chaos_fn f,
                      struct chaos_value v, int64_t time)
{
    size_t i = m->h.n_events++;
    assert_true(i < 17);
    m->events[i] = (struct chaos_event){
        .type = type, .f = f, .process = p, .value = v, .time_ns = time, .line = i + 1};
    snprintf(m->events[i].key, sizeof m->events[i].key, "r:1");
    m->pair[i] = CHAOS_NO_EVENT;
    if (type == CHAOS_INVOKE) {
        m->open[p] = i;
    } else if (type != CHAOS_INIT) {
        m->pair[i] = m->open[p];
        m->pair[m->open[p]] = i;
    }
}

static void test_agrees_with_oracle(void **state)
{
    (void)state;
    char *report = NULL;
    size_t report_len = 0;
    uint64_t seed = 0x1234567;
    int n_violations = 0, n_checked = 0;
    for (int round = 0; round < 5000; round++) {
        struct mem_hist mh = {.h = {.events = mh.events, .pair = mh.pair}};
        bool init_null = rnd(&seed) % 3 == 0;
        if (!init_null) {
            mem_event(&mh, 0, CHAOS_INIT, CHAOS_F_NONE, chaos_value_int(0), 0);
        }
        /* 3 processes, up to 7 ops, random interleaving, distinct times. */
        struct small_op ops[8];
        int n = 0, per_proc[3] = {0}, open_op[3] = {-1, -1, -1};
        int64_t next_value = 1, now = 0;
        int target = 3 + (int)(rnd(&seed) % 5);
        int steps = 0;
        while (steps++ < 200) {
            int p = (int)(rnd(&seed) % 3);
            now++;
            if (open_op[p] < 0) {
                if (n == target) {
                    continue;
                }
                struct small_op *o = &ops[n];
                unsigned dice = (unsigned)(rnd(&seed) % 10);
                o->f = dice < 4 ? CHAOS_F_READ : dice < 7 ? CHAOS_F_WRITE : CHAOS_F_CAS;
                o->call = now;
                /* reads and cas: the initial value or one written so far */
                o->a = o->f == CHAOS_F_WRITE ? next_value++
                                             : (int64_t)(rnd(&seed) % (uint64_t)next_value);
                o->b = o->f == CHAOS_F_CAS ? next_value++ : 0;
                if (o->f == CHAOS_F_READ) {
                    o->b = rnd(&seed) % 6 == 0; /* null */
                }
                open_op[p] = n++;
                continue;
            }
            struct small_op *o = &ops[open_op[p]];
            unsigned dice = (unsigned)(rnd(&seed) % 10);
            o->done = dice < 7 ? CHAOS_OK : dice < 9 ? CHAOS_INFO : CHAOS_FAIL;
            o->ret = now;
            open_op[p] = -1;
            per_proc[p]++;
            if (n == target && open_op[0] < 0 && open_op[1] < 0 && open_op[2] < 0) {
                break;
            }
        }
        /* Ops still open have no completion (outcome unknown). */
        for (int p = 0; p < 3; p++) {
            if (open_op[p] >= 0) {
                ops[open_op[p]].done = CHAOS_INVOKE;
                ops[open_op[p]].ret = INT64_MAX;
            }
        }
        /* Write them as events in time order, each process its own. */
        for (int64_t t = 0; t <= now; t++) {
            for (int i = 0; i < n; i++) {
                int64_t p = i; /* a process per op keeps pairing trivial */
                struct chaos_value inv = ops[i].f == CHAOS_F_READ ? chaos_value_null()
                                         : ops[i].f == CHAOS_F_WRITE
                                             ? chaos_value_int(ops[i].a)
                                             : chaos_value_pair(ops[i].a, ops[i].b);
                if (ops[i].call == t) {
                    mem_event(&mh, p, CHAOS_INVOKE, ops[i].f, inv, t);
                }
                if (ops[i].done != CHAOS_INVOKE && ops[i].ret == t) {
                    struct chaos_value res = inv;
                    if (ops[i].f == CHAOS_F_READ) {
                        res = ops[i].b ? chaos_value_null() : chaos_value_int(ops[i].a);
                    }
                    mem_event(&mh, p, ops[i].done, ops[i].f, res, t);
                }
            }
        }
        /* The oracle sees what the checker sees: fail dropped, reads of
         * unknown outcome dropped, the rest of unknown outcome optional. */
        struct small_op kept[8];
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (ops[i].done == CHAOS_FAIL ||
                (ops[i].f == CHAOS_F_READ && ops[i].done != CHAOS_OK)) {
                continue;
            }
            kept[m++] = ops[i];
        }
        bool want = oracle(kept, m, init_null, 0, 0);
        struct chaos_check_summary sum;
        free(report);
        report = NULL;
        FILE *out = open_memstream(&report, &report_len);
        assert_non_null(out);
        int rc = chaos_check_history(&mh.h, NULL, out, &sum);
        fclose(out);
        if (rc != (want ? 0 : 1) || sum.unknown != 0) {
            fprintf(stderr, "round %d: oracle says %s\n%s", round,
                    want ? "linearizable" : "not linearizable", report);
        }
        assert_int_equal(rc, want ? 0 : 1);
        assert_int_equal(sum.lin_violations, want ? 0 : 1);
        n_violations += !want;
        n_checked++;
    }
    free(report);
    fprintf(stderr, "oracle: %d histories, %d not linearizable\n", n_checked, n_violations);
    /* Both verdicts were exercised. */
    assert_true(n_violations > n_checked / 10 && n_violations < n_checked * 9 / 10);
}

/* The example histories of chaos/testdata. */
static void test_testdata(void **state)
{
    (void)state;
    struct chaos_check_summary sum;
    assert_int_equal(chaos_check_file(CHAOS_TESTDATA "/pass.jsonl", NULL, &sum), 0);
    assert_int_equal(sum.events, 25);
    assert_int_equal(sum.ops, 12);
    assert_int_equal(sum.info_ops, 2);
    assert_int_equal(sum.keys, 1);
    assert_int_equal(chaos_check_file(CHAOS_TESTDATA "/stale_read.jsonl", NULL, &sum), 1);
    assert_int_equal(sum.lin_violations, 1);
    assert_int_equal(sum.lost_writes, 1);
    assert_int_equal(sum.unknown, 0);
    assert_int_equal(chaos_check_file(CHAOS_TESTDATA "/malformed.jsonl", NULL, &sum), GS_EINVAL);
}

/* ------------------------------------------------------- budget and scale */

/* n concurrent writes, then reads that see two of them in an order their
 * completion makes impossible... only after trying every subset and order
 * of the writes does the search know. A small budget gives up: unknown. */
static void pathological(struct hist *h, int n)
{
    char key[] = "r:1";
    for (int i = 0; i < n; i++) {
        write_op(h, i, key, i + 1, 10 + i, 1000, CHAOS_OK);
    }
    read_op(h, n, key, 1, 2000, 2001);
    read_op(h, n, key, 2, 2002, 2003);
    read_op(h, n, key, 1, 2004, 2005);
}

static void test_budget_unknown(void **state)
{
    struct hist *h = *state;
    pathological(h, 12);
    assert_int_equal(check_budget(h, 500), 1);
    assert_int_equal(h->sum.unknown, 1);
    assert_int_equal(h->sum.lin_violations, 0);
    assert_non_null(strstr(h->report, "key r:1: UNKNOWN: search budget exhausted"));
    assert_non_null(strstr(h->report, "result: FAIL"));
    /* With the default budget the same history is decided: a violation. */
    restart(h);
    pathological(h, 12);
    expect_violation(h, "r:1");
}

/* A realistic history of a correct register store: n_proc processes run
 * n_ops ops each on n_keys keys; every op takes effect atomically at a
 * random moment between its invoke and its completion; about 3% of writes
 * and cas time out (info; applied or not, at random). Keys of even number
 * start at 0, the others at null. If stale_at >= 0, the first ok read from
 * the stale_at-th on, of an even key invoked after an acknowledged write of
 * that key, returns the initial 0 instead: a stale read (no op writes 0). */
struct sim_proc {
    int64_t process;
    int phase; /* 0 idle, 1 invoked, 2 applied */
    enum chaos_fn f;
    int key;
    int64_t a, b, result;
    bool result_null, info, applied_ok, acked_at_invoke;
    int done;
};

static void simulate(struct hist *h, uint64_t seed, int n_proc, int n_ops, int n_keys,
                     int64_t stale_at)
{
    struct sim_proc procs[16];
    int64_t reg[32];
    bool reg_null[32];
    int64_t next_value = 1;
    int64_t last_written[32];
    bool acked[32] = {false};
    bool injected = false;
    assert_true(n_proc <= 16 && n_keys <= 32);
    for (int k = 0; k < n_keys; k++) {
        char key[16];
        snprintf(key, sizeof key, "r:%d", k);
        if (k % 2 == 0) {
            init(h, key, 0);
            reg[k] = 0;
            reg_null[k] = false;
        } else {
            reg_null[k] = true;
            reg[k] = 0;
        }
        last_written[k] = reg[k];
    }
    memset(procs, 0, sizeof procs);
    for (int i = 0; i < n_proc; i++) {
        procs[i].process = i;
    }
    int64_t now = 1000;
    int64_t reads = 0;
    int active = n_proc;
    while (active > 0) {
        struct sim_proc *p = &procs[rnd(&seed) % (uint64_t)n_proc];
        if (p->done >= n_ops && p->phase == 0) {
            continue;
        }
        char key[16];
        snprintf(key, sizeof key, "r:%d", p->key);
        now += 1 + (int64_t)(rnd(&seed) % 50);
        if (p->phase == 0) {
            p->key = (int)(rnd(&seed) % (uint64_t)n_keys);
            snprintf(key, sizeof key, "r:%d", p->key);
            unsigned dice = (unsigned)(rnd(&seed) % 100);
            p->f = dice < 50 ? CHAOS_F_READ : dice < 80 ? CHAOS_F_WRITE : CHAOS_F_CAS;
            p->info = p->f != CHAOS_F_READ && rnd(&seed) % 100 < 3;
            p->acked_at_invoke = acked[p->key];
            if (p->f == CHAOS_F_WRITE) {
                p->a = next_value++;
                event(h, p->process, CHAOS_INVOKE, p->f, key, chaos_value_int(p->a), now);
            } else if (p->f == CHAOS_F_CAS) {
                /* from: usually the current value, sometimes an older one */
                p->a = rnd(&seed) % 4 == 0 || reg_null[p->key] ? last_written[p->key] : reg[p->key];
                p->b = next_value++;
                event(h, p->process, CHAOS_INVOKE, p->f, key, chaos_value_pair(p->a, p->b), now);
            } else {
                event(h, p->process, CHAOS_INVOKE, p->f, key, chaos_value_null(), now);
            }
            p->phase = 1;
        } else if (p->phase == 1) {
            /* The moment the op takes effect. */
            int k = p->key;
            if (p->info && rnd(&seed) % 2 == 0) {
                p->applied_ok = false; /* the timed-out op never applied */
            } else if (p->f == CHAOS_F_READ) {
                p->result = reg[k];
                p->result_null = reg_null[k];
            } else if (p->f == CHAOS_F_WRITE) {
                last_written[k] = reg_null[k] ? p->a : reg[k];
                reg[k] = p->a;
                reg_null[k] = false;
                p->applied_ok = true;
            } else {
                p->applied_ok = !reg_null[k] && reg[k] == p->a;
                if (p->applied_ok) {
                    last_written[k] = reg[k];
                    reg[k] = p->b;
                }
            }
            p->phase = 2;
        } else {
            enum chaos_event_type done = CHAOS_OK;
            struct chaos_value v = chaos_value_null();
            if (p->f == CHAOS_F_READ) {
                v = p->result_null ? chaos_value_null() : chaos_value_int(p->result);
                if (stale_at >= 0 && reads++ >= stale_at && !injected && p->key % 2 == 0 &&
                    p->acked_at_invoke) {
                    v = chaos_value_int(0);
                    injected = true;
                }
            } else if (p->f == CHAOS_F_WRITE) {
                v = chaos_value_int(p->a);
                done = p->info ? CHAOS_INFO : CHAOS_OK;
            } else {
                v = chaos_value_pair(p->a, p->b);
                done = p->info ? CHAOS_INFO : p->applied_ok ? CHAOS_OK : CHAOS_FAIL;
            }
            event(h, p->process, done, p->f, key, v, now);
            if (done == CHAOS_OK && p->f != CHAOS_F_READ) {
                acked[p->key] = true;
            }
            if (done == CHAOS_INFO) {
                p->process += n_proc; /* an info op stays open: a new process goes on */
            }
            p->phase = 0;
            if (++p->done == n_ops) {
                active--;
            }
        }
    }
}

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_realistic_history_is_fast(void **state)
{
    struct hist *h = *state;
    simulate(h, 42, 5, 2000, 10, -1);
    struct timespec t0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    expect_pass(h);
    double s = elapsed_s(&t0);
    fprintf(stderr, "realistic history: %zu events, %zu ops, %zu info, checked in %.3f s of CPU\n",
            h->sum.events, h->sum.ops, h->sum.info_ops, s);
    assert_int_equal(h->sum.ops, 10000);
    assert_int_equal(h->sum.keys, 10);
    assert_true(h->sum.info_ops > 20);
    /* CPU time, so that a busy machine does not matter; generous: it takes
     * about 0.1 s optimised and well under a second under ASan. */
    assert_true(s < 5.0);
}

/* The same kind of history with one read made stale is caught. */
static void test_realistic_history_with_stale_read(void **state)
{
    struct hist *h = *state;
    simulate(h, 7, 5, 1000, 4, 1500);
    int rc = check(h);
    assert_non_null(strstr(h->report, "read -> 0"));
    if (rc != 1) {
        fprintf(stderr, "%s", h->report);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(h->sum.lin_violations, 1);
    assert_non_null(strstr(h->report, "NOT LINEARIZABLE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concurrent_writes_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_never_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_acknowledged_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cas_on_wrong_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_disagree_on_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_write_seen_then_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acknowledged_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_refusals, setup, teardown),
        cmocka_unit_test(test_agrees_with_oracle),
        cmocka_unit_test(test_testdata),
        cmocka_unit_test_setup_teardown(test_budget_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_realistic_history_is_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_realistic_history_with_stale_read, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
