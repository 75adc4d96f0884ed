/*
 * e2e_snapshot_install: a replica that fell behind the leader's log catches
 * up by pulling a checkpoint.
 *
 * The cell runs with a tiny snapshot threshold and trailing, so the log is
 * truncated every few dozen entries. One follower is killed; hundreds of
 * sequential writes (one entry each) go to the others, so the leader's log
 * no longer holds what the follower misses. On restart, the follower gets a
 * snapshot manifest, pulls the leader's checkpoint (CheckpointInfo,
 * CheckpointChunk), verifies and installs it: its log says so, and all three
 * replicas converge to one digest. Snapshots made a checkpoint only at the
 * first (one at most every 30 s): the one pulled is made when the lagging
 * node asks for it. A CheckpointInfo for another cell id is
 * refused with PERMISSION_DENIED.
 *
 * A second test breaks one node's checkpoint directory (a file where the
 * directory was): its snapshots fail, and it retries after a growing wait,
 * not after every entry (a handful of failures over hundreds of entries),
 * while the cell keeps answering.
 */
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

#define N_WRITES 400

static int setup(void **state)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    *state = c;
    snprintf(c->raft_extra, sizeof c->raft_extra,
             ",\"snapshot_threshold\":32,\"snapshot_trailing\":16");
    if (cluster_init(c, "snapshot") != 0) {
        cluster_destroy(c);
        free(c);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct cluster *c = *state;
    cluster_destroy(c);
    free(c);
    return 0;
}

/* How many lines of node i's log contain `needle`. */
static int log_count(const struct cluster *c, int i, const char *needle)
{
    FILE *f = fopen(c->nodes[i].log_path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* Does node i's log (of its current run) contain `needle`? */
static int log_contains(const struct cluster *c, int i, const char *needle)
{
    return log_count(c, i, needle) > 0;
}

/* n sequential CreateUser calls (one entry each) through seeds. */
static void create_users(const char *const *seeds, size_t n_seeds, const char *prefix, int n)
{
    struct gs_client_options opts = {.timeout_ms = 10000};
    gs_sync *client = NULL;
    assert_int_equal(gs_sync_open(seeds, n_seeds, &opts, &client), 0);
    for (int k = 0; k < n; k++) {
        char name[32];
        snprintf(name, sizeof name, "%s%d", prefix, k);
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        req.username = name;
        req.bio = "written while a replica was down";
        ProtobufCMessage *resp = NULL;
        int rv = gs_sync_call(client, GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, &resp, NULL);
        assert_int_equal(rv, 0);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    gs_sync_close(client);
}

static void test_checkpoint_failure_backs_off(void **state)
{
    struct cluster *c = *state;
    int leader;
    assert_int_equal(cluster_start(c, 60000), 0);
    assert_int_equal(cluster_wait_leader(c, 30000, &leader), 0);
    int broken = (leader + 1) % CLUSTER_NODES;
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/checkpoints", c->nodes[broken].data_dir);
    e2e_remove_tree(dir);
    FILE *f = fopen(dir, "w");
    assert_non_null(f);
    fclose(f);
    e2e_log("node %u: %s is now a file", c->nodes[broken].node_id, dir);

    const char *seeds[CLUSTER_NODES];
    for (int i = 0; i < CLUSTER_NODES; i++) {
        seeds[i] = c->nodes[i].client_address;
    }
    double t0 = e2e_now_ms();
    create_users(seeds, CLUSTER_NODES, "ckf", N_WRITES);
    double took = e2e_now_ms() - t0;
    int failures = log_count(c, broken, "event=checkpoint_failed");
    e2e_log("%d sequential writes in %.0f ms; node %u: %d failed checkpoints", N_WRITES, took,
            c->nodes[broken].node_id, failures);
    /* Snapshots are due every 32 entries past the trailing 16, so without
     * a wait nearly every entry would try again. With waits of 1, 2, 4 ...
     * s, the number of tries is about log2 of the seconds the writes took. */
    assert_true(failures >= 1);
    int bound = 2;
    for (double w = 1000; w < took; w *= 2) {
        bound++;
    }
    assert_true(failures <= bound);
    assert_true(cluster_node_alive(c, broken));
    c->passed = 1;
}

static void test_snapshot_install(void **state)
{
    struct cluster *c = *state;
    int leader;
    assert_int_equal(cluster_start(c, 60000), 0);
    assert_int_equal(cluster_wait_leader(c, 30000, &leader), 0);
    int lagging = (leader + 1) % CLUSTER_NODES;
    int other = (leader + 2) % CLUSTER_NODES;

    e2e_log("kill node %u (a follower)", c->nodes[lagging].node_id);
    int wstatus = 0;
    assert_int_equal(cluster_node_stop(c, lagging, SIGKILL, 10000, &wstatus), 0);

    const char *seeds[2] = {c->nodes[leader].client_address, c->nodes[other].client_address};
    struct gs_client_options opts = {.timeout_ms = 10000};
    gs_sync *client = NULL;
    /* A checkpoint asked for at an index never reached: none, and it must
     * not make every later snapshot copy the WAL (counted below). */
    for (int s = 0; s < 2; s++) {
        Geoscale__CheckpointInfoRequest far = GEOSCALE__CHECKPOINT_INFO_REQUEST__INIT;
        far.cell_id = 1;
        far.min_index = UINT64_MAX;
        ProtobufCMessage *none = NULL;
        assert_int_equal(gs_sync_open(&seeds[s], 1, &opts, &client), 0);
        assert_int_equal(gs_sync_call(client, GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO, &far.base,
                                      &none, NULL),
                         GS_ENOTFOUND);
        assert_null(none);
        gs_sync_close(client);
    }
    double t0 = e2e_now_ms();
    create_users(seeds, 2, "snap", N_WRITES);
    e2e_log("%d sequential writes in %.0f ms", N_WRITES, e2e_now_ms() - t0);
    assert_int_equal(gs_sync_open(seeds, 2, &opts, &client), 0);

    /* Residency guard: another cell's id is refused, on a member's own
     * connection. */
    Geoscale__CheckpointInfoRequest info = GEOSCALE__CHECKPOINT_INFO_REQUEST__INIT;
    info.cell_id = 2;
    info.min_index = 1;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(gs_sync_call(client, GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO, &info.base,
                                  &resp, NULL),
                     GS_EDENIED);
    assert_null(resp);
    gs_sync_close(client);

    /* The leader's log now starts past what the lagging node has. */
    Geoscale__CellStatusResponse *st = NULL;
    assert_int_equal(cluster_node_status(c, leader, 5000, &st), 0);
    e2e_log("leader applied %llu; restart node %u", (unsigned long long)st->applied_index,
            c->nodes[lagging].node_id);
    geoscale__cell_status_response__free_unpacked(st, NULL);

    assert_int_equal(cluster_node_restart(c, lagging, 30000), 0);
    uint8_t digest[32];
    uint64_t applied = 0, keys = 0;
    assert_int_equal(cluster_wait_converged(c, 60000, &applied, digest, &keys), 0);
    e2e_log("converged at applied %llu, %llu keys", (unsigned long long)applied,
            (unsigned long long)keys);
    /* It caught up by checkpoint, not by log replay. */
    assert_true(log_contains(c, lagging, "event=restore_pull"));
    assert_true(log_contains(c, lagging, "event=installed"));
    /* Made when it was asked for: the snapshots since the first made none
     * (one at most every 30 s), so the first had an older one. */
    assert_true(log_contains(c, leader, "event=checkpoint_on_demand") ||
                log_contains(c, other, "event=checkpoint_on_demand"));
    assert_true(log_count(c, leader, "event=checkpoint create") +
                    log_count(c, other, "event=checkpoint create") <= 6);
    c->passed = 1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_install, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_failure_backs_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
