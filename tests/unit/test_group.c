/*
 * The Raft group with real parts: three groups in one process, each on its
 * own loop thread, libraft over raft_uv + raft_uv_tcp on loopback, each with
 * a real cell FSM (RocksDB) in a temporary directory.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/cell_fsm.h"
#include "engine/mono.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "raft/defaults.h"
#include "raft/group.h"

#define N 3

struct node {
    char dir[256];
    char db_dir[300];
    char raft_dir[300];
    struct cell_fsm *fsm;
    struct group *group;
    bool running;
};

struct fixture {
    char root[128];
    struct group_peer peers[N];
    struct node nodes[N];
    uv_loop_t loop;
    struct mailbox replies;
    size_t completed;
    unsigned max_batch_commands; /* 0 = the group's default */
    unsigned log_memory_mib;     /* 0 = the group's default */
};

static const uint8_t hash_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        abort();
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void on_replies(struct mailbox *box, struct mailbox_item *items)
{
    struct fixture *f = box->data;
    while (items != NULL) {
        struct group_request *req = (struct group_request *)items;
        items = items->next;
        assert_int_equal(req->state, GROUP_REQ_DONE);
        f->completed++;
    }
    uv_stop(&f->loop);
}

static void node_start(struct fixture *f, int i)
{
    struct node *n = &f->nodes[i];
    char errmsg[512];
    struct cell_fsm_options o = {.db_path = n->db_dir,
                                 .cell_id = 1,
                                 .username_key = hash_key,
                                 .username_key_len = sizeof hash_key,
                                 .compression = false};
    assert_int_equal(cell_fsm_open(&o, &n->fsm, errmsg, sizeof errmsg), 0);
    struct group_config c = {.node_id = f->peers[i].id,
                             .region = "us-east",
                             .group_id = 1,
                             .raft_dir = n->raft_dir,
                             .peers = f->peers,
                             .n_peers = N,
                             .ops = &cell_sm_ops,
                             .sm = n->fsm,
                             .election_timeout_ms = 300,
                             .heartbeat_timeout_ms = 50,
                             .max_batch_commands = f->max_batch_commands,
                             .log_memory_mib = f->log_memory_mib};
    int rv = group_start(&c, &n->group, errmsg, sizeof errmsg);
    if (rv != 0) {
        fail_msg("group_start: %s", errmsg);
    }
    n->running = true;
}

static void node_stop(struct fixture *f, int i)
{
    struct node *n = &f->nodes[i];
    if (!n->running) {
        return;
    }
    group_stop(n->group);
    cell_fsm_close(n->fsm);
    n->running = false;
    /* Deliver whatever the stop completed. */
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int setup_common(void **state, unsigned max_batch_commands, unsigned log_memory_mib)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->max_batch_commands = max_batch_commands;
    f->log_memory_mib = log_memory_mib;
    snprintf(f->root, sizeof f->root, "/tmp/gs-test-group-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    for (int i = 0; i < N; i++) {
        f->peers[i].id = (uint64_t)i + 1;
        snprintf(f->peers[i].raft_address, GROUP_ADDRESS_MAX, "127.0.0.1:%d", free_port());
        snprintf(f->peers[i].client_address, GROUP_ADDRESS_MAX, "127.0.0.1:%d", free_port());
        struct node *n = &f->nodes[i];
        char dir[256];
        snprintf(dir, sizeof dir, "%s/n%d", f->root, i + 1);
        snprintf(n->dir, sizeof n->dir, "%s", dir);
        snprintf(n->db_dir, sizeof n->db_dir, "%s/db", dir);
        snprintf(n->raft_dir, sizeof n->raft_dir, "%s/raft", dir);
        assert_int_equal(mkdir(n->dir, 0755), 0);
    }
    uv_loop_init(&f->loop);
    assert_int_equal(mailbox_init(&f->loop, &f->replies, on_replies), 0);
    f->replies.data = f;
    for (int i = 0; i < N; i++) {
        node_start(f, i);
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_common(state, 0, 0);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < N; i++) {
        node_stop(f, i);
    }
    mailbox_close(&f->replies, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->root);
    if (system(cmd) != 0) {
        return -1;
    }
    free(f);
    return 0;
}

/* Index of the node that is leader (and known as leader by a quorum), or -1
 * after timeout_s. */
static int wait_leader(struct fixture *f, double timeout_s)
{
    double deadline = gs_mono_s() + timeout_s;
    while (gs_mono_s() < deadline) {
        for (int i = 0; i < N; i++) {
            if (!f->nodes[i].running) {
                continue;
            }
            struct group_status s;
            group_get_status(f->nodes[i].group, &s);
            if (strcmp(s.state, "leader") == 0) {
                return i;
            }
        }
        usleep(20 * 1000);
    }
    return -1;
}

/* Submit reqs[0..n) to node i and run the loop until all complete. */
static void run_requests(struct fixture *f, int i, struct group_request *reqs, size_t n)
{
    f->completed = 0;
    for (size_t k = 0; k < n; k++) {
        reqs[k].reply_box = &f->replies;
        group_submit(f->nodes[i].group, &reqs[k]);
    }
    double deadline = gs_mono_s() + 20;
    while (f->completed < n && gs_mono_s() < deadline) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->completed, n);
}

static struct group_request make_req(uint32_t method, uint8_t *body, size_t len, uint64_t seq)
{
    struct group_request r;
    memset(&r, 0, sizeof r);
    r.method = method;
    r.body = body;
    r.len = len;
    r.client_id = seq != 0 ? 0x5eed : 0;
    r.client_seq = seq;
    return r;
}

static uint64_t create_user(struct fixture *f, int leader, const char *username, uint64_t seq)
{
    Geoscale__CreateUserRequest c = GEOSCALE__CREATE_USER_REQUEST__INIT;
    c.username = (char *)username;
    uint8_t body[256];
    size_t len = geoscale__create_user_request__pack(&c, body);
    struct group_request r = make_req(GEOSCALE__METHOD__METHOD_CREATE_USER, body, len, seq);
    run_requests(f, leader, &r, 1);
    assert_int_equal(r.result.status, 0);
    Geoscale__CreateUserResponse *resp =
        geoscale__create_user_response__unpack(NULL, r.result.len, r.result.body);
    assert_non_null(resp);
    uint64_t id = resp->user_id;
    assert_true(id != 0);
    geoscale__create_user_response__free_unpacked(resp, NULL);
    free(r.result.body);
    return id;
}

static void digest_of(struct fixture *f, int i, uint8_t out[32], uint64_t *applied)
{
    uint8_t body[1];
    struct group_request r = make_req(GEOSCALE__METHOD__METHOD_STATE_DIGEST, body, 0, 0);
    run_requests(f, i, &r, 1);
    assert_int_equal(r.result.status, 0);
    Geoscale__StateDigestResponse *d =
        geoscale__state_digest_response__unpack(NULL, r.result.len, r.result.body);
    assert_non_null(d);
    assert_int_equal(d->digest.len, 32);
    memcpy(out, d->digest.data, 32);
    *applied = d->applied_index;
    geoscale__state_digest_response__free_unpacked(d, NULL);
    free(r.result.body);
}

/* All running replicas reach the same applied index and digest. */
static void assert_converged(struct fixture *f, double timeout_s)
{
    double deadline = gs_mono_s() + timeout_s;
    for (;;) {
        uint8_t first[32], d[32];
        uint64_t first_applied = 0, applied = 0;
        int have = -1;
        bool same = true;
        for (int i = 0; i < N && same; i++) {
            if (!f->nodes[i].running) {
                continue;
            }
            if (have < 0) {
                digest_of(f, i, first, &first_applied);
                have = i;
            } else {
                digest_of(f, i, d, &applied);
                same = applied == first_applied && memcmp(d, first, 32) == 0;
            }
        }
        if (same) {
            return;
        }
        if (gs_mono_s() > deadline) {
            fail_msg("replicas did not converge");
        }
        usleep(50 * 1000);
    }
}

static void test_writes_reads_and_followers(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    uint64_t alice = create_user(f, leader, "alice", 1);

    /* A follower refuses and names the leader. */
    int follower = (leader + 1) % N;
    Geoscale__CreateUserRequest c = GEOSCALE__CREATE_USER_REQUEST__INIT;
    c.username = "bob";
    uint8_t body[64];
    size_t len = geoscale__create_user_request__pack(&c, body);
    struct group_request r = make_req(GEOSCALE__METHOD__METHOD_CREATE_USER, body, len, 2);
    /* The follower may not have heard of the leader yet: wait until it has. */
    double deadline = gs_mono_s() + 5;
    do {
        r = make_req(GEOSCALE__METHOD__METHOD_CREATE_USER, body, len, 2);
        run_requests(f, follower, &r, 1);
    } while (r.result.status == GS_EUNAVAILABLE && gs_mono_s() < deadline);
    assert_int_equal(r.result.status, GS_ENOTLEADER);
    assert_int_equal(r.leader_id, f->peers[leader].id);
    assert_null(r.result.body);

    /* A linearizable read on the leader sees the write. */
    Geoscale__GetUserRequest g = GEOSCALE__GET_USER_REQUEST__INIT;
    g.user_id = alice;
    g.viewer_id = alice;
    len = geoscale__get_user_request__pack(&g, body);
    r = make_req(GEOSCALE__METHOD__METHOD_GET_USER, body, len, 0);
    run_requests(f, leader, &r, 1);
    assert_int_equal(r.result.status, 0);
    Geoscale__GetUserResponse *gu =
        geoscale__get_user_response__unpack(NULL, r.result.len, r.result.body);
    assert_non_null(gu);
    assert_string_equal(gu->profile->username, "alice");
    geoscale__get_user_response__free_unpacked(gu, NULL);
    free(r.result.body);

    /* Replaying the same idempotency key returns the same user, applied once. */
    uint64_t again = create_user(f, leader, "alice", 1);
    assert_int_equal(again, alice);
    assert_converged(f, 10);
}

/* Submit `users` CreateUser requests at once to the leader; all succeed. */
static void create_many(struct fixture *f, int leader, int users, int seq_base,
                        uint64_t *entries_used)
{
    uint8_t(*bodies)[64] = calloc((size_t)users, 64);
    struct group_request *reqs = calloc((size_t)users, sizeof *reqs);
    for (int k = 0; k < users; k++) {
        char name[32];
        snprintf(name, sizeof name, "user%d", seq_base + k);
        Geoscale__CreateUserRequest c = GEOSCALE__CREATE_USER_REQUEST__INIT;
        c.username = name;
        size_t len = geoscale__create_user_request__pack(&c, bodies[k]);
        reqs[k] = make_req(GEOSCALE__METHOD__METHOD_CREATE_USER, bodies[k], len,
                           (uint64_t)(seq_base + k));
    }
    struct group_status before, after;
    group_get_status(f->nodes[leader].group, &before);
    run_requests(f, leader, reqs, (size_t)users);
    for (int k = 0; k < users; k++) {
        assert_int_equal(reqs[k].result.status, 0);
        Geoscale__CreateUserResponse *resp =
            geoscale__create_user_response__unpack(NULL, reqs[k].result.len, reqs[k].result.body);
        assert_non_null(resp);
        /* Each request got the answer to its own command. */
        char name[32];
        snprintf(name, sizeof name, "user%d", seq_base + k);
        assert_string_equal(resp->profile->username, name);
        geoscale__create_user_response__free_unpacked(resp, NULL);
        free(reqs[k].result.body);
    }
    usleep(100 * 1000); /* let the status copy refresh */
    group_get_status(f->nodes[leader].group, &after);
    *entries_used = after.last_log_index - before.last_log_index;
    free(bodies);
    free(reqs);
}

/* Small batches: many entries in flight, several applied in one raft step
 * before their callbacks fire. Every request still gets its own result. */
static void test_many_entries_in_flight(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    uint64_t entries = 0;
    create_many(f, leader, 600, 1000, &entries);
    printf("# 600 writes with batches of 8 took %" PRIu64 " log entries\n", entries);
    assert_true(entries >= 600 / 8);
    assert_converged(f, 10);
}

static int setup_small_batches(void **state)
{
    return setup_common(state, 8, 0);
}

static void test_group_commit_batches(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    uint64_t entries = 0;
    create_many(f, leader, 400, 100, &entries);
    printf("# 400 writes submitted at once took %" PRIu64 " log entries\n", entries);
    /* Submitted in one burst: packed into far fewer entries than commands. */
    assert_true(entries < 400 / 4);
    assert_converged(f, 10);
}

/* Snapshots in node i's raft directory. */
static int count_snapshots(struct fixture *f, int i)
{
    DIR *d = opendir(f->nodes[i].raft_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strncmp(e->d_name, "snapshot-", 9) == 0 && strstr(e->d_name, ".meta") == NULL;
    }
    closedir(d);
    return n;
}

/* The open (preallocated) log segments in node i's raft directory, each
 * checked to be GROUP_SEGMENT_BYTES long. */
static int count_open_segments(struct fixture *f, int i)
{
    DIR *d = opendir(f->nodes[i].raft_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "open-", 5) != 0) {
            continue;
        }
        char path[600];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", f->nodes[i].raft_dir, e->d_name);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((size_t)st.st_size, GROUP_SEGMENT_BYTES);
        n++;
    }
    closedir(d);
    return n;
}

/* The groups set raft_uv's segment size: every node's open segments have
 * it, not raft_uv's default of 8 MiB. */
static void test_segment_size(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    create_user(f, leader, "segments", 1);
    assert_converged(f, 10);
    for (int i = 0; i < N; i++) {
        assert_true(count_open_segments(f, i) >= 1);
    }
}

static int setup_small_log_budget(void **state)
{
    return setup_common(state, 0, 1);
}

/* A 1 MiB log budget and entries of about 4 KiB: the group lowers
 * snapshot_threshold from 4096 to about 120 entries, so 300 such entries
 * are snapshotted on every replica (at 4096 none would be). */
static void test_log_budget_snapshots(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    uint64_t id = create_user(f, leader, "budget", 1);
    char bio[4001];
    memset(bio, 'b', sizeof bio - 1);
    bio[sizeof bio - 1] = '\0';
    Geoscale__ProfileField field = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO;
    Geoscale__UpdateUserRequest u = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    u.user_id = id;
    u.n_fields = 1;
    u.fields = &field;
    u.bio = bio;
    uint8_t *body = malloc(geoscale__update_user_request__get_packed_size(&u));
    size_t len = geoscale__update_user_request__pack(&u, body);
    for (int i = 0; i < N; i++) {
        assert_int_equal(count_snapshots(f, i), 0);
    }
    for (uint64_t k = 0; k < 300; k++) {
        struct group_request r = make_req(GEOSCALE__METHOD__METHOD_UPDATE_USER, body, len, 2 + k);
        run_requests(f, leader, &r, 1); /* one entry each */
        assert_int_equal(r.result.status, 0);
        free(r.result.body);
    }
    free(body);
    assert_converged(f, 10);
    for (int i = 0; i < N; i++) {
        assert_true(count_snapshots(f, i) >= 1);
    }
}

static void test_leader_loss_and_restart(void **state)
{
    struct fixture *f = *state;
    int leader = wait_leader(f, 10);
    assert_true(leader >= 0);
    uint64_t before = create_user(f, leader, "before", 500);
    node_stop(f, leader);
    int next = wait_leader(f, 10);
    assert_true(next >= 0);
    assert_true(next != leader);
    uint64_t after = create_user(f, next, "after", 501);
    assert_true(after != before);
    /* The stopped replica restarts from its directory, catches up, and
     * every replica agrees. */
    node_start(f, leader);
    assert_converged(f, 15);
}

int main(void)
{
    /* raft_uv writes to peers that may have gone away (as geoscaled does). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writes_reads_and_followers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_entries_in_flight, setup_small_batches,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_leader_loss_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_budget_snapshots, setup_small_log_budget,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
