/*
 * add_cell: a cell added to a region while the cluster serves traffic takes
 * that region's new users from then on.
 *
 * Driven the way an operator does it, with the CLI: `geoscale cluster up`
 * (4 regions, a cell each), signups in us-east through node 1, then
 * `geoscale cluster add-cell --region us-east` while a client keeps signing
 * users up through node 1 (started before the new cell existed, so it must
 * learn the cell from the directory). Every signup must succeed; once the
 * new cell is there, new us-east users are placed in it (the least-loaded
 * cell), and they are readable by id and by username through node 1.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "harness.h"

#define NEW_CELL 5 /* cells 1-4 from `cluster up`, one per region */

struct fixture {
    char dir[256];
    int base;
    int up;
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    e2e_log("$ %s", cmd);
    int rv = system(cmd);
    return rv == -1 ? -1 : WEXITSTATUS(rv);
}

/* Copy a command's output from the test directory to the test's log. */
static void show_log(const struct fixture *f, const char *name)
{
    char path[sizeof f->dir + 32], line[512];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    FILE *in = fopen(path, "r");
    if (in == NULL) {
        e2e_log("%s: cannot open", path);
        return;
    }
    while (fgets(line, sizeof line, in) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        e2e_log("%s: %s", name, line);
    }
    fclose(in);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/geoscale-e2e-addcell-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->up) {
        run("%s cluster down --dir %s/c > /dev/null 2>&1", GEOSCALE_PATH, f->dir);
    }
    run("rm -rf %s", f->dir);
    free(f);
    return 0;
}

/* Sign up `username` through node 1; returns the user id or 0. */
static uint64_t signup(gs_sync *s, const char *username)
{
    Geoscale__CreateUserRequest rq = GEOSCALE__CREATE_USER_REQUEST__INIT;
    rq.username = (char *)username;
    ProtobufCMessage *resp = NULL;
    int rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_CREATE_USER, &rq.base, &resp, NULL);
    if (rv != 0) {
        e2e_log("signup %s: %s", username, gs_error_name(rv));
        return 0;
    }
    uint64_t id = ((Geoscale__CreateUserResponse *)resp)->user_id;
    protobuf_c_message_free_unpacked(resp, NULL);
    return id;
}

struct writer {
    gs_sync *s;
    volatile int stop;
    int n, failed, in_new_cell;
};

/* Signups through node 1 while the cell is being added. */
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    while (!w->stop && w->n < 400) {
        char name[32];
        snprintf(name, sizeof name, "during%d", w->n);
        uint64_t id = signup(w->s, name);
        w->n++;
        if (id == 0) {
            w->failed++;
        } else if ((id >> 40) == NEW_CELL) {
            w->in_new_cell++;
        }
        usleep(20 * 1000);
    }
    return NULL;
}

static void test_add_cell(void **state)
{
    struct fixture *f = *state;
    /* A free block of ports: `cluster up` checks every one and refuses
     * otherwise, so try a few bases. All below the kernel's ephemeral range
     * (32768 and up by default): the running nodes' outgoing connections
     * take ports from there, and add-cell's block for the new nodes, checked
     * only when it runs, must not meet one of them. */
    int rv = -1;
    for (int attempt = 0; attempt < 5 && rv != 0; attempt++) {
        f->base = 20000 + (int)((getpid() * 7 + attempt * 997) % 3000) * 4;
        rv = run("%s cluster up --regions us-east,us-west,eu,asia --cells-per-region 1 "
                 "--dir %s/c --base-port %d > %s/up.log 2>&1",
                 GEOSCALE_PATH, f->dir, f->base, f->dir);
    }
    if (rv != 0) {
        show_log(f, "up.log");
    }
    assert_int_equal(rv, 0);
    f->up = 1;

    char node1[32];
    snprintf(node1, sizeof node1, "127.0.0.1:%d", f->base);
    const char *seeds[1] = {node1};
    struct gs_client_options o = {.timeout_ms = 10000};
    gs_sync *s = NULL, *ws = NULL;
    assert_int_equal(gs_sync_open(seeds, 1, &o, &s), 0);
    assert_int_equal(gs_sync_open(seeds, 1, &o, &ws), 0);

    /* Before: us-east has one cell. Signups may wait for its registration. */
    uint64_t first = 0;
    for (int i = 0; i < 50 && first == 0; i++) {
        first = signup(s, "before0");
        if (first == 0) {
            usleep(100 * 1000);
        }
    }
    assert_int_equal(first >> 40, 1);

    struct writer w = {.s = ws};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    usleep(200 * 1000);
    rv = run("%s cluster add-cell --dir %s/c --region us-east > %s/add.log 2>&1", GEOSCALE_PATH,
             f->dir, f->dir);
    if (rv != 0) {
        show_log(f, "add.log");
    }
    assert_int_equal(rv, 0);
    /* Keep serving until new signups have landed in the new cell. */
    double deadline = e2e_now_ms() + 15000;
    while (w.in_new_cell < 5 && e2e_now_ms() < deadline) {
        usleep(100 * 1000);
    }
    w.stop = 1;
    pthread_join(th, NULL);
    e2e_log("%d signups through node 1 while the cell was added: %d failed, %d placed in cell %d",
            w.n, w.failed, w.in_new_cell, NEW_CELL);
    assert_int_equal(w.failed, 0);
    assert_true(w.in_new_cell >= 5);

    /* A user of the new cell reads back through node 1, by id and by name. */
    uint64_t id = 0;
    for (int i = 0; i < 20 && (id >> 40) != NEW_CELL; i++) {
        char name[32];
        snprintf(name, sizeof name, "after%d", i);
        id = signup(s, name);
        if ((id >> 40) == NEW_CELL) {
            Geoscale__GetUserRequest g = GEOSCALE__GET_USER_REQUEST__INIT;
            g.username = name;
            ProtobufCMessage *resp = NULL;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_USER, &g.base, &resp, NULL), 0);
            assert_int_equal(((Geoscale__GetUserResponse *)resp)->profile->user_id, id);
            protobuf_c_message_free_unpacked(resp, NULL);
            Geoscale__GetUserRequest gi = GEOSCALE__GET_USER_REQUEST__INIT;
            gi.user_id = id;
            assert_int_equal(
                gs_sync_call(s, GEOSCALE__METHOD__METHOD_GET_USER, &gi.base, &resp, NULL), 0);
            assert_string_equal(((Geoscale__GetUserResponse *)resp)->profile->username, name);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    assert_int_equal(id >> 40, NEW_CELL);
    gs_sync_close(s);
    gs_sync_close(ws);

    assert_int_equal(run("%s cluster down --dir %s/c > /dev/null 2>&1", GEOSCALE_PATH, f->dir), 0);
    f->up = 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_cell, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
