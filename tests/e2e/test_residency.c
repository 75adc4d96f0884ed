/*
 * residency: PII stays in its home region, down to the last byte on disk.
 *
 * 1. A cluster of four regions (us-east, us-west, eu, asia; one cell each,
 *    twelve nodes), RocksDB compression off so that stored strings are
 *    stored as they are.
 * 2. In every region, USERS_PER_REGION users are created through a node of
 *    that region. Each PII field (username, display name, email, phone, bio,
 *    avatar URL; the birth date is a date and cannot hold one) holds a
 *    canary "gsc_<run token>_<user>_<field>", unique per user and field.
 *    Each user reads its own profile back through its home region.
 * 3. A PII read of each user through a node of every OTHER region is
 *    refused with WRONG_CELL: the profile never transits there.
 * 4. Every user follows every user of every other region (ids only cross).
 * 5. Metadata converges: MetadataGet of every user, asked of a node of every
 *    region, answers the user's home region and cell and the final counts.
 * 6. Every byte of every file under every node's data directory (Raft
 *    segments and snapshots, RocksDB WAL, tables and manifests, checkpoints)
 *    is scanned for the run token, twice: while the nodes run (RocksDB's
 *    memtable need not be flushed; its WAL and the Raft log hold the data,
 *    written to the files) and after every node stopped with SIGTERM (so
 *    whatever a clean close writes is scanned too). Zero hits on the nodes
 *    of any region other than the canary's home region. The scan is shown to
 *    work: each time, every canary is found on a disk of its home region.
 * 7. Node logs hold no canary either (no PII in log lines, in any region).
 *
 * Steps 6 and 7 run even when a follow of step 4 failed or step 5 timed
 * out, so that a run with a missing feature still reports what the disks
 * hold; the test fails at the end then.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>

#include "cluster_harness.h"

#define N_REGIONS 4
#define USERS_PER_REGION 3
#define N_USERS (N_REGIONS * USERS_PER_REGION)
#define N_FIELDS 6
#define TOKEN_LEN 12
#define FOLLOWS_PER_USER (N_USERS - USERS_PER_REGION)
#define CONVERGE_MS 60000

static const char *const regions[N_REGIONS] = {"us-east", "us-west", "eu", "asia"};
static const char *const field_names[N_FIELDS] = {"username", "display_name", "email",
                                                  "phone",    "bio",          "avatar_url"};

struct user {
    int region;
    uint64_t user_id;
    char canary[N_FIELDS][128];
};

/* What the scans found: hits[user][field][node]. */
struct scan_result {
    struct mr_cluster *c;
    struct user *users;
    int node;   /* the node whose data dir is scanned; -1 for a log */
    int region; /* that node's region */
    size_t hits[N_USERS][N_FIELDS][MR_MAX_NODES];
    size_t foreign;         /* hits outside the canary's home region */
    size_t in_logs;         /* hits in node logs */
    size_t malformed;       /* the token followed by something unexpected */
    size_t home_by_kind[6]; /* home hits by file kind, see file_kind() */
};

static const char *const kind_names[6] = {"raft",          "rocksdb-wal", "rocksdb-sst",
                                          "rocksdb-other", "checkpoint",  "other"};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* 0 raft (segments, snapshots, metadata files), 1 RocksDB WAL, 2 RocksDB
 * table, 3 other RocksDB files (manifest, options), 4 checkpoints and
 * incoming transfers, 5 anything else. */
static int file_kind(const char *path)
{
    if (strstr(path, "/checkpoints/") != NULL || strstr(path, "/incoming/") != NULL) {
        return 4;
    }
    if (strstr(path, "/raft/") != NULL) {
        return 0;
    }
    if (strstr(path, "/db/") != NULL) {
        return ends_with(path, ".log") ? 1 : ends_with(path, ".sst") ? 2 : 3;
    }
    return 5;
}

static void on_hit(void *arg, const char *path, size_t offset, const uint8_t *at, size_t left)
{
    struct scan_result *s = arg;
    /* at: "gsc_" TOKEN "_" UU "_" F */
    size_t head = 4 + TOKEN_LEN + 1;
    int u;
    int f;

    if (left < head + 4 || at[head] < '0' || at[head] > '9' || at[head + 1] < '0' ||
        at[head + 1] > '9' || at[head + 2] != '_' || at[head + 3] < 'a' ||
        at[head + 3] >= 'a' + N_FIELDS) {
        s->malformed++;
        e2e_log("  token at %s+%zu not followed by a canary suffix", path, offset);
        if (s->node < 0) {
            s->in_logs++;
        } else {
            s->foreign++; /* cannot tell whose: count it against residency */
        }
        return;
    }
    u = (at[head] - '0') * 10 + (at[head + 1] - '0');
    f = at[head + 3] - 'a';
    if (u >= N_USERS) {
        s->malformed++;
        s->foreign++;
        return;
    }
    if (s->node < 0) {
        s->in_logs++;
        e2e_log("  LOG LEAK: %s of user %" PRIu64 " (home %s) in %s at offset %zu", field_names[f],
                s->users[u].user_id, regions[s->users[u].region], path, offset);
        return;
    }
    s->hits[u][f][s->node]++;
    if (s->region != s->users[u].region) {
        if (s->foreign < 20) {
            e2e_log("  RESIDENCY LEAK: %s of user %" PRIu64 " (home %s) on node %" PRIu64
                    " (%s) in %s at offset %zu",
                    field_names[f], s->users[u].user_id, regions[s->users[u].region],
                    s->c->nodes[s->node].id, regions[s->region], path, offset);
        }
        s->foreign++;
    } else {
        s->home_by_kind[file_kind(path)]++;
    }
}

static void random_token(char out[TOKEN_LEN + 1])
{
    uint8_t b[TOKEN_LEN / 2];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, b, sizeof b), (ssize_t)sizeof b);
    close(fd);
    for (size_t i = 0; i < sizeof b; i++) {
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    }
}

struct meta_want {
    const char *region;
    uint32_t cell_id;
    uint64_t following;
    uint64_t followers;
};

static int meta_matches(void *arg, const Geoscale__UserMetadata *m)
{
    const struct meta_want *w = arg;
    return m->home_region != NULL && strcmp(m->home_region, w->region) == 0 &&
           m->cell_id == w->cell_id && m->following_count == w->following &&
           m->follower_count == w->followers;
}

/*
 * Scan every file under every node's data dir for the run's token into
 * *scan (reset first), print what was scanned and found, and assert that
 * every canary was found in its home region (the scan works).
 */
static void scan_data_dirs(struct mr_cluster *c, struct user *users, const char *needle,
                           int region_nodes[N_REGIONS][3], const char *label,
                           struct scan_result *scan)
{
    struct mr_scan_stats total = {0};
    double ts = e2e_now_ms();
    size_t found = 0;

    memset(scan, 0, sizeof *scan);
    scan->c = c;
    scan->users = users;
    for (int i = 0; i < c->n_nodes; i++) {
        struct mr_scan_stats st = {0};
        scan->node = i;
        scan->region = c->nodes[i].region;
        assert_int_equal(mr_scan_tree(c->nodes[i].data_dir, (const uint8_t *)needle, strlen(needle),
                                      on_hit, scan, &st),
                         0);
        e2e_log("%s scan: node %2" PRIu64 " (%-7s): %3zu files, %6.1f KiB, %3zu canary hits%s",
                label, c->nodes[i].id, regions[c->nodes[i].region], st.files,
                (double)st.bytes / 1024.0, st.hits,
                st.unreadable > 0 ? " (some files vanished while read)" : "");
        /* A data dir with nothing in it would make the scan vacuous. */
        assert_true(st.files > 0);
        total.files += st.files;
        total.bytes += st.bytes;
        total.hits += st.hits;
        total.unreadable += st.unreadable;
    }
    e2e_log("%s scan: %zu files, %.1f MiB in %.0f ms: %zu hits, %zu outside the home region", label,
            total.files, (double)total.bytes / 1048576.0, e2e_now_ms() - ts, total.hits,
            scan->foreign);
    e2e_log("%s scan: home-region hits by file kind: %s %zu, %s %zu, %s %zu, %s %zu, %s %zu, "
            "%s %zu",
            label, kind_names[0], scan->home_by_kind[0], kind_names[1], scan->home_by_kind[1],
            kind_names[2], scan->home_by_kind[2], kind_names[3], scan->home_by_kind[3],
            kind_names[4], scan->home_by_kind[4], kind_names[5], scan->home_by_kind[5]);
    /* Stopped nodes change nothing: every file must have been read. */
    if (strcmp(label, "stopped") == 0) {
        assert_int_equal(total.unreadable, 0);
    }

    /* The scan works: every canary is on a disk of its home region. */
    for (int u = 0; u < N_USERS; u++) {
        for (int f = 0; f < N_FIELDS; f++) {
            int nodes_with = 0;
            for (int k = 0; k < 3; k++) {
                nodes_with += scan->hits[u][f][region_nodes[users[u].region][k]] > 0;
            }
            if (nodes_with == 0) {
                e2e_log("%s scan: canary %s of user %" PRIu64 " NOT found in its home region %s",
                        label, field_names[f], users[u].user_id, regions[users[u].region]);
            } else {
                found++;
            }
        }
    }
    e2e_log("%s scan: %zu of %d canaries found on disk in their home region", label, found,
            N_USERS * N_FIELDS);
    assert_int_equal(found, N_USERS * N_FIELDS);
}

static int setup(void **state)
{
    return mr_fixture_new(state, "residency", regions, N_REGIONS, 1, 0);
}

static void test_residency(void **state)
{
    static struct user users[N_USERS];
    static struct scan_result scan;
    struct mr_cluster *c = *state;
    char token[TOKEN_LEN + 1];
    char needle[64];
    int region_nodes[N_REGIONS][3];
    double t0;
    int converged = 1;
    size_t follows_failed = 0; /* checked at the end, after the scan */
    size_t live_foreign;
    size_t live_malformed;
    size_t meta_ok = 0;
    size_t meta_missing = 0;

    random_token(token);
    snprintf(needle, sizeof needle, "gsc_%s_", token);
    e2e_log("canary token %s (canaries are %s<user>_<field>)", token, needle);
    t0 = e2e_now_ms();
    assert_int_equal(mr_start(c, 120000), 0);
    for (int r = 0; r < N_REGIONS; r++) {
        assert_int_equal(mr_region_nodes(c, r, region_nodes[r], 3), 3);
    }

    /* ---- 2. users with canaries in every PII field, through their region */
    for (int u = 0; u < N_USERS; u++) {
        struct user *us = &users[u];
        Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
        int node;
        int rv;
        us->region = u / USERS_PER_REGION;
        node = region_nodes[us->region][u % 3];
        for (int f = 0; f < N_FIELDS; f++) {
            snprintf(us->canary[f], sizeof us->canary[f], "%s%02d_%c", needle, u, 'a' + f);
        }
        /* Shaped like the real thing; the canary is intact inside. */
        char email[160];
        char avatar[200];
        snprintf(email, sizeof email, "%s@example.com", us->canary[2]);
        snprintf(avatar, sizeof avatar, "https://img.example.com/%s.png", us->canary[5]);
        req.username = us->canary[0];
        req.display_name = us->canary[1];
        req.email = email;
        req.phone = us->canary[3];
        req.bio = us->canary[4];
        req.avatar_url = avatar;
        req.birth_date = "1990-01-02";
        req.plan = "free";
        /* region left empty: the region of the node reached */
        rv = mr_create_user(c, node, 15000, &req, &us->user_id);
        if (rv != 0) {
            e2e_log("CreateUser %d through node %" PRIu64 " (%s) failed: %s", u, c->nodes[node].id,
                    regions[us->region], gs_error_name(rv));
        }
        assert_int_equal(rv, 0);
        /* Placed in the cell of its region (ids carry the cell). */
        assert_int_equal(us->user_id >> 40, c->nodes[node].cell_id);
    }
    e2e_log("created %d users (%d per region, %d canary fields each) in %.0f ms since start",
            N_USERS, USERS_PER_REGION, N_FIELDS, e2e_now_ms() - t0);

    for (int u = 0; u < N_USERS; u++) {
        Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        Geoscale__GetUserResponse *gu;
        req.user_id = users[u].user_id;
        req.viewer_id = users[u].user_id;
        assert_int_equal(mr_call(c, region_nodes[users[u].region][(u + 1) % 3], 10000,
                                 GEOSCALE__METHOD__METHOD_GET_USER, &req.base, &resp),
                         0);
        gu = (Geoscale__GetUserResponse *)resp;
        assert_non_null(gu);
        assert_non_null(gu->profile);
        assert_string_equal(gu->profile->username, users[u].canary[0]);
        assert_string_equal(gu->profile->display_name, users[u].canary[1]);
        assert_string_equal(gu->profile->bio, users[u].canary[4]);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    e2e_log("every user reads its profile back through its home region");

    /* ---- 3. PII is not served through another region */
    {
        size_t refused = 0;
        for (int u = 0; u < N_USERS; u++) {
            for (int r = 0; r < N_REGIONS; r++) {
                Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                int rv;
                if (r == users[u].region) {
                    continue;
                }
                req.user_id = users[u].user_id;
                req.viewer_id = users[u].user_id;
                rv = mr_call(c, region_nodes[r][u % 3], 10000, GEOSCALE__METHOD__METHOD_GET_USER,
                             &req.base, &resp);
                if (resp != NULL) {
                    protobuf_c_message_free_unpacked(resp, NULL);
                }
                if (rv != GS_EWRONGCELL) {
                    e2e_log("GetUser of user %" PRIu64 " (home %s) through %s: %s, want "
                            "WRONG_CELL",
                            users[u].user_id, regions[users[u].region], regions[r],
                            rv == 0 ? "served" : gs_error_name(rv));
                }
                assert_int_equal(rv, GS_EWRONGCELL);
                refused++;
            }
        }
        e2e_log("%zu PII reads through a foreign region: all WRONG_CELL", refused);
    }

    /* ---- 4. every user follows every user of every other region */
    for (int r = 0; r < N_REGIONS; r++) {
        static struct e2e_op ops[USERS_PER_REGION * FOLLOWS_PER_USER];
        struct e2e_run_options ro;
        struct e2e_run_result rr;
        const char *seed = c->nodes[region_nodes[r][1]].client_address;
        size_t n = 0;
        for (int u = r * USERS_PER_REGION; u < (r + 1) * USERS_PER_REGION; u++) {
            for (int v = 0; v < N_USERS; v++) {
                Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
                if (users[v].region == r) {
                    continue;
                }
                req.actor_id = users[u].user_id;
                req.target_id = users[v].user_id;
                ops[n].method = GEOSCALE__METHOD__METHOD_FOLLOW;
                assert_int_equal(e2e_pack(&req.base, &ops[n].req, &ops[n].req_len), 0);
                n++;
            }
        }
        memset(&ro, 0, sizeof ro);
        ro.seeds = &seed;
        ro.n_seeds = 1;
        ro.client.pin = 1;
        ro.client.timeout_ms = 10000;
        ro.window = 16;
        ro.deadline_ms = 30000;
        assert_int_equal(e2e_run(ops, n, &ro, &rr), 0);
        for (size_t k = 0, shown = 0; k < n; k++) {
            if (ops[k].status != 0 && shown++ < 3) {
                e2e_log("Follow %zu of %s users failed: %s", k, regions[r],
                        gs_error_name(ops[k].status));
            }
        }
        e2e_log("%s: %zu cross-region follows, %zu acknowledged in %.0f ms", regions[r], n, rr.ok,
                rr.elapsed_ms);
        follows_failed += n - rr.ok;
        e2e_ops_free(ops, n);
    }

    /* ---- 5. metadata of every user readable in every region */
    {
        double deadline = e2e_now_ms() + CONVERGE_MS;
        double t_meta = e2e_now_ms();
        for (int u = 0; u < N_USERS; u++) {
            struct meta_want want = {
                .region = regions[users[u].region],
                .cell_id = (uint32_t)(users[u].user_id >> 40),
                .following = FOLLOWS_PER_USER,
                .followers = FOLLOWS_PER_USER,
            };
            for (int r = 0; r < N_REGIONS; r++) {
                int node = region_nodes[r][u % 3];
                double left = deadline - e2e_now_ms();
                double took = 0;
                int last = 0;
                int rv = mr_wait_metadata(c, node, users[u].user_id, meta_matches, &want,
                                          left > 0 ? (unsigned)left : 1, &took, &last);
                if (rv == 0) {
                    meta_ok++;
                    continue;
                }
                converged = 0;
                if (++meta_missing <= 8) {
                    Geoscale__MetadataGetResponse *m = NULL;
                    int rv2 = mr_metadata_get(c, node, 2000, users[u].user_id, &m);
                    if (rv2 == 0 && m->meta != NULL) {
                        e2e_log("metadata of user %" PRIu64 " on node %" PRIu64 " (%s): "
                                "region %s cell %u following %" PRIu64 " followers %" PRIu64
                                ", want %s %u %d %d",
                                users[u].user_id, c->nodes[node].id, regions[r],
                                m->meta->home_region, m->meta->cell_id, m->meta->following_count,
                                m->meta->follower_count, want.region, want.cell_id,
                                FOLLOWS_PER_USER, FOLLOWS_PER_USER);
                    } else {
                        e2e_log("metadata of user %" PRIu64 " on node %" PRIu64 " (%s): %s",
                                users[u].user_id, c->nodes[node].id, regions[r],
                                gs_error_name(rv2 != 0 ? rv2 : GS_ENOTFOUND));
                    }
                    if (m != NULL) {
                        geoscale__metadata_get_response__free_unpacked(m, NULL);
                    }
                }
            }
        }
        e2e_log("metadata: %zu of %d (user, region) pairs converged (home region, cell, "
                "%d following, %d followers) in %.0f ms",
                meta_ok, N_USERS * N_REGIONS, FOLLOWS_PER_USER, FOLLOWS_PER_USER,
                e2e_now_ms() - t_meta);
    }

    /* ---- 6. scan every data dir while the nodes run, then after a
     * graceful stop */
    scan_data_dirs(c, users, needle, region_nodes, "live", &scan);
    live_foreign = scan.foreign;
    live_malformed = scan.malformed;
    {
        double ts = e2e_now_ms();
        int rv = mr_stop_nodes(c, NULL, 0, SIGTERM, 20000);
        e2e_log("stopped %d nodes with SIGTERM in %.0f ms (%s)", c->n_nodes, e2e_now_ms() - ts,
                rv == 0 ? "all exited 0" : gs_error_name(rv));
    }
    scan_data_dirs(c, users, needle, region_nodes, "stopped", &scan);

    /* ---- 7. no canary in any node log */
    {
        struct mr_scan_stats st = {0};
        scan.node = -1;
        for (int i = 0; i < c->n_nodes; i++) {
            assert_int_equal(mr_scan_tree(c->nodes[i].log_path, (const uint8_t *)needle,
                                          strlen(needle), on_hit, &scan, &st),
                             0);
        }
        e2e_log("node logs: %zu files, %.1f KiB, %zu canary hits", st.files,
                (double)st.bytes / 1024.0, scan.in_logs);
    }

    assert_int_equal(live_malformed, 0);
    assert_int_equal(live_foreign, 0);
    assert_int_equal(scan.malformed, 0);
    assert_int_equal(scan.foreign, 0);
    assert_int_equal(scan.in_logs, 0);
    if (follows_failed != 0) {
        e2e_log("FAIL: %zu cross-region follows failed (see above)", follows_failed);
    }
    assert_int_equal(follows_failed, 0);
    if (!converged) {
        e2e_log("FAIL: metadata did not converge within %d ms (see above)", CONVERGE_MS);
    }
    assert_true(converged);
    e2e_log("residency: zero canaries outside their home region, test took %.0f ms",
            e2e_now_ms() - t0);
    c->passed = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_residency, setup, mr_fixture_free),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
