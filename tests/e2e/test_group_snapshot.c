/*
 * snapshot_install_groups: replicas of the directory group and of the
 * metadata group that fell behind their leader's log catch up by pulling a
 * checkpoint, as cells do (e2e_snapshot_install).
 *
 * 1. A cluster of four regions (us-east, us-west, eu, asia; one cell each):
 *    directory and metadata voters on the first node of the first three
 *    regions, a metadata standby in asia. The cluster file sets a tiny raft
 *    snapshot threshold and trailing (docs/CLUSTER.md, "raft"), so every
 *    group's log is truncated every few dozen entries.
 * 2. One directory voter (not the directory leader, not in us-east) and the
 *    metadata standby are killed. Signups in us-east write to the directory
 *    (reserve, confirm) and, through the cell's outbox, to the metadata
 *    group, until both leaders have snapshotted well past what the killed
 *    replicas hold.
 * 3. Permissions: a group's checkpoint goes to that group's members only.
 *    CheckpointInfo / CheckpointChunk naming the directory or the metadata
 *    group are answered for a member (voter, or the metadata standby) and
 *    refused with PERMISSION_DENIED for a node that is not one, or by a node
 *    that does not host the group.
 * 4. Both restart. Each must log that it pulled and installed its group's
 *    checkpoint (event=installed kind=directory / kind=metadata), every
 *    group must converge (one leader, same commit and applied index; cells
 *    the same digest), and the standby must answer MetadataGet, from its own
 *    replica, for users created while it was down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <inttypes.h>
#include <signal.h>

#include "cluster_harness.h"

#define N_REGIONS 4
#define MAX_SIGNUPS 1000
#define MIN_ADVANCE 64 /* entries past the killed replicas: > threshold + trailing */

static const char *const regions[N_REGIONS] = {"us-east", "us-west", "eu", "asia"};

/* Add the snapshot knobs to the file's "raft" object. 0 or -1. */
static int set_snapshot_knobs(struct mr_cluster *c)
{
    static const char needle[] = "\"raft\": {";
    static const char knobs[] = "\"snapshot_threshold\": 32, \"snapshot_trailing\": 16, ";
    char *text = e2e_read_from(c->file, 0);
    if (text == NULL) {
        return -1;
    }
    char *at = strstr(text, needle);
    FILE *f = at != NULL ? fopen(c->file, "w") : NULL;
    int rv = -1;
    if (f != NULL) {
        size_t head = (size_t)(at - text) + strlen(needle);
        rv = fwrite(text, 1, head, f) == head && fputs(knobs, f) >= 0 && fputs(text + head, f) >= 0
                 ? 0
                 : -1;
        rv = fclose(f) == 0 ? rv : -1;
    }
    free(text);
    return rv;
}

static int setup(void **state)
{
    if (mr_fixture_new(state, "group_snapshot", regions, N_REGIONS, 1, 1) != 0) {
        return -1;
    }
    if (set_snapshot_knobs(*state) != 0) {
        mr_fixture_free(state);
        return -1;
    }
    return 0;
}

/* Does node i's log, since its current start, contain needle? */
static int log_contains(const struct mr_cluster *c, int i, const char *needle)
{
    char *text = e2e_read_from(c->nodes[i].log_path, c->nodes[i].log_offset);
    int found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* The GroupStatus of g on node i: leader and applied index. */
static void group_view(struct mr_cluster *c, int i, struct mr_group g, uint64_t *leader,
                       uint64_t *applied)
{
    Geoscale__NodeStatusResponse *st = NULL;
    assert_int_equal(mr_node_status(c, i, 5000, &st), 0);
    const Geoscale__GroupStatus *gs = mr_find_group(st, g);
    assert_non_null(gs);
    *leader = gs->leader_id;
    *applied = gs->applied_index;
    geoscale__node_status_response__free_unpacked(st, NULL);
}

/* CheckpointInfo of `group` (cell_id 0) on node i as node `as_node`. */
static int info_call(struct mr_cluster *c, int i, Geoscale__CheckpointInfoRequest__Group group,
                     uint32_t cell_id, uint64_t as_node, Geoscale__CheckpointInfoResponse **out)
{
    Geoscale__CheckpointInfoRequest req = GEOSCALE__CHECKPOINT_INFO_REQUEST__INIT;
    req.group = group;
    req.cell_id = cell_id;
    req.node_id = as_node;
    req.min_index = 1;
    ProtobufCMessage *resp = NULL;
    int rv = mr_call(c, i, 10000, GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO, &req.base, &resp);
    if (out != NULL) {
        *out = (Geoscale__CheckpointInfoResponse *)resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

static int chunk_call(struct mr_cluster *c, int i, Geoscale__CheckpointInfoRequest__Group group,
                      uint64_t as_node, const Geoscale__CheckpointInfoResponse *info)
{
    Geoscale__CheckpointChunkRequest req = GEOSCALE__CHECKPOINT_CHUNK_REQUEST__INIT;
    req.group = group;
    req.node_id = as_node;
    req.applied_index = info->applied_index;
    req.name = info->files[0]->name;
    req.max_len = 4096;
    ProtobufCMessage *resp = NULL;
    int rv = mr_call(c, i, 10000, GEOSCALE__METHOD__METHOD_CHECKPOINT_CHUNK, &req.base, &resp);
    if (rv == 0) {
        const Geoscale__CheckpointChunkResponse *ch = (Geoscale__CheckpointChunkResponse *)resp;
        uint64_t want = info->files[0]->size < 4096 ? info->files[0]->size : 4096;
        assert_int_equal(ch->data.len, want);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

/* Members may pull their group's checkpoint; nobody else may. */
static void check_permissions(struct mr_cluster *c, int dir_leader, int md_leader, int standby,
                              int dir_voter, int outsider)
{
    const Geoscale__CheckpointInfoRequest__Group DIR =
        GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY;
    const Geoscale__CheckpointInfoRequest__Group MD =
        GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__METADATA;
    const Geoscale__CheckpointInfoRequest__Group CELL =
        GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL;
    Geoscale__CheckpointInfoResponse *info = NULL;
    uint64_t standby_id = c->nodes[standby].id, voter_id = c->nodes[dir_voter].id;
    uint64_t outsider_id = c->nodes[outsider].id;

    /* A directory voter gets the directory's checkpoint, file by file. */
    assert_int_equal(info_call(c, dir_leader, DIR, 0, voter_id, &info), 0);
    assert_int_equal(info->cell_id, 0);
    assert_true(info->applied_index >= 1);
    assert_true(info->n_files >= 1);
    assert_int_equal(chunk_call(c, dir_leader, DIR, voter_id, info), 0);
    /* The metadata standby is no member of the directory group. */
    assert_int_equal(chunk_call(c, dir_leader, DIR, standby_id, info), GS_EDENIED);
    assert_int_equal(info_call(c, dir_leader, DIR, 0, standby_id, NULL), GS_EDENIED);
    /* Nor is a node of a cell only. */
    assert_int_equal(info_call(c, dir_leader, DIR, 0, outsider_id, NULL), GS_EDENIED);
    assert_int_equal(chunk_call(c, dir_leader, DIR, outsider_id, info), GS_EDENIED);
    geoscale__checkpoint_info_response__free_unpacked(info, NULL);

    /* The standby is a member of the metadata group. */
    assert_int_equal(info_call(c, md_leader, MD, 0, standby_id, &info), 0);
    assert_true(info->n_files >= 1);
    assert_int_equal(chunk_call(c, md_leader, MD, standby_id, info), 0);
    assert_int_equal(chunk_call(c, md_leader, MD, outsider_id, info), GS_EDENIED);
    geoscale__checkpoint_info_response__free_unpacked(info, NULL);
    assert_int_equal(info_call(c, md_leader, MD, 0, outsider_id, NULL), GS_EDENIED);

    /* A node asked for a group it does not host refuses, member or not;
     * and a cell's checkpoint stays with the cell's members. */
    assert_int_equal(info_call(c, outsider, MD, 0, standby_id, NULL), GS_EDENIED);
    assert_int_equal(info_call(c, outsider, DIR, 0, voter_id, NULL), GS_EDENIED);
    assert_int_equal(info_call(c, outsider, CELL, c->nodes[outsider].cell_id + 1, 0, NULL),
                     GS_EDENIED);
    assert_int_equal(info_call(c, dir_leader, CELL, c->nodes[dir_leader].cell_id, standby_id, NULL),
                     GS_EDENIED);
}

static int meta_home_us_east(void *arg, const Geoscale__UserMetadata *m)
{
    (void)arg;
    return strcmp(m->home_region, "us-east") == 0;
}

static void test_group_snapshot(void **state)
{
    struct mr_cluster *c = *state;
    const struct mr_group dir = {MR_GROUP_DIRECTORY, 0}, md = {MR_GROUP_METADATA, 0};
    assert_int_equal(mr_start(c, 120000), 0);

    /* Who is who. */
    uint64_t dir_leader_id = 0, md_leader_id = 0, applied = 0;
    assert_true(c->nodes[0].directory_voter && c->nodes[0].metadata == MR_ROLE_VOTER);
    group_view(c, 0, dir, &dir_leader_id, &applied);
    group_view(c, 0, md, &md_leader_id, &applied);
    int dir_leader = mr_index_of(c, dir_leader_id), md_leader = mr_index_of(c, md_leader_id);
    assert_true(dir_leader >= 0 && md_leader >= 0);
    int lagging_voter = -1, fallback = -1, standby = -1, outsider = -1, entry = -1;
    for (int i = 0; i < c->n_nodes; i++) {
        const struct mr_node *n = &c->nodes[i];
        /* A directory voter outside us-east (where the signups go) that does
         * not lead the directory, nor, if possible, the metadata group. */
        if (n->directory_voter && i != dir_leader && n->region != 0) {
            if (i != md_leader) {
                lagging_voter = i;
            } else {
                fallback = i;
            }
        }
        if (n->metadata == MR_ROLE_STANDBY) {
            standby = i;
        }
        /* Two us-east nodes of the cell only. */
        if (n->region == 0 && !n->directory_voter && n->metadata == MR_ROLE_NONE) {
            if (entry < 0) {
                entry = i;
            } else {
                outsider = i;
            }
        }
    }
    if (lagging_voter < 0) {
        lagging_voter = fallback;
    }
    assert_true(lagging_voter >= 0 && standby >= 0 && entry >= 0 && outsider >= 0);

    /* ---- the lagging replicas */
    uint64_t dir_at_kill = 0, md_at_kill = 0, unused = 0;
    group_view(c, lagging_voter, dir, &unused, &dir_at_kill);
    group_view(c, standby, md, &unused, &md_at_kill);
    e2e_log("kill node %" PRIu64 " (directory voter, at %" PRIu64 ") and node %" PRIu64
            " (metadata standby, at %" PRIu64 ")",
            c->nodes[lagging_voter].id, dir_at_kill, c->nodes[standby].id, md_at_kill);
    assert_int_equal(mr_node_stop(c, lagging_voter, SIGKILL, 10000, NULL), 0);
    assert_int_equal(mr_node_stop(c, standby, SIGKILL, 10000, NULL), 0);
    /* The killed voter may have led the metadata group: ask again. */
    assert_int_equal(mr_wait_leaders(c, 30000), 0);
    group_view(c, 0, dir, &dir_leader_id, &unused);
    group_view(c, 0, md, &md_leader_id, &unused);
    dir_leader = mr_index_of(c, dir_leader_id);
    md_leader = mr_index_of(c, md_leader_id);
    assert_true(dir_leader >= 0 && md_leader >= 0);
    assert_true(dir_leader != lagging_voter && md_leader != lagging_voter);

    /* ---- signups while they are down, until both groups moved well past
     * them (the metadata group gets one entry per shipped batch of rows) */
    static uint64_t users[MAX_SIGNUPS];
    int n_users = 0;
    uint64_t dir_now = 0, md_now = 0;
    double t0 = e2e_now_ms();
    while (n_users < MAX_SIGNUPS &&
           (dir_now < dir_at_kill + MIN_ADVANCE || md_now < md_at_kill + MIN_ADVANCE)) {
        for (int k = 0; k < 25; k++, n_users++) {
            Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
            char username[32];
            snprintf(username, sizeof username, "lagging_%03d", n_users);
            req.username = username;
            req.plan = "free";
            assert_int_equal(mr_create_user(c, entry, 15000, &req, &users[n_users]), 0);
        }
        /* Every row shipped: the last user's metadata is on the leader. */
        assert_int_equal(mr_wait_metadata(c, md_leader, users[n_users - 1], meta_home_us_east, NULL,
                                          30000, NULL, NULL),
                         0);
        group_view(c, dir_leader, dir, &unused, &dir_now);
        group_view(c, md_leader, md, &unused, &md_now);
    }
    e2e_log("%d signups in %.0f ms: directory applied %" PRIu64 ", metadata applied %" PRIu64,
            n_users, e2e_now_ms() - t0, dir_now, md_now);
    assert_true(dir_now >= dir_at_kill + MIN_ADVANCE);
    assert_true(md_now >= md_at_kill + MIN_ADVANCE);
    assert_true(log_contains(c, dir_leader, "event=snapshot kind=directory"));
    assert_true(log_contains(c, md_leader, "event=snapshot kind=metadata"));

    /* Both leaders have checkpoints now: who may have them? */
    check_permissions(c, dir_leader, md_leader, standby, lagging_voter, outsider);

    /* ---- restart: they catch up by checkpoint */
    t0 = e2e_now_ms();
    assert_int_equal(mr_node_start(c, lagging_voter), 0);
    assert_int_equal(mr_node_start(c, standby), 0);
    assert_int_equal(mr_node_wait_ready(c, lagging_voter, 30000), 0);
    assert_int_equal(mr_node_wait_ready(c, standby, 30000), 0);
    assert_int_equal(mr_wait_converged(c, 60000), 0);
    e2e_log("converged %.0f ms after the restart", e2e_now_ms() - t0);
    assert_true(log_contains(c, lagging_voter, "event=restore_pull kind=directory"));
    assert_true(log_contains(c, lagging_voter, "event=installed kind=directory"));
    assert_true(log_contains(c, standby, "event=restore_pull kind=metadata"));
    assert_true(log_contains(c, standby, "event=installed kind=metadata"));
    group_view(c, lagging_voter, dir, &unused, &applied);
    assert_true(applied >= dir_now);
    group_view(c, standby, md, &unused, &applied);
    assert_true(applied >= md_now);

    /* The standby serves the metadata of users created while it was down,
     * from its own replica. */
    const int probe[3] = {0, n_users / 2, n_users - 1};
    for (int k = 0; k < 3; k++) {
        Geoscale__MetadataGetResponse *m = NULL;
        assert_int_equal(mr_metadata_get(c, standby, 5000, users[probe[k]], &m), 0);
        assert_int_equal(m->meta->user_id, users[probe[k]]);
        assert_string_equal(m->meta->home_region, "us-east");
        assert_string_equal(m->meta->plan, "free");
        geoscale__metadata_get_response__free_unpacked(m, NULL);
    }
    c->passed = 1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_snapshot, setup, mr_fixture_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
