/*
 * Cluster file: a valid four-region file loads and every node's view of it
 * (the groups it hosts, with their members) is right; every rule of
 * docs/CLUSTER.md, broken once, gives GS_EINVAL and one line naming the field.
 *
 * The valid file is built as a JSON tree; each failure case changes one
 * value in it by path ("cells[2].members[1]") so that the test shows only
 * what it breaks.
 *
 * Layout of the valid file (node N: client 127.0.0.1:7200+N, cell raft
 * 7100+N, directory raft 7300+N, metadata raft 7400+N, data_dir
 * /tmp/gs/nodeN):
 *   us-east: cell 1 = 1 2 3, cell 2 = 4 5 6
 *   us-west: cell 3 = 7 8 9
 *   eu:      cell 4 = 10 11 12
 *   asia:    cell 5 = 13 14 15
 *   directory voters 1 7 10; metadata voters 1 7 10, standby 13.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "engine/log.h"
#include "geoscale/errors.h"
#include "net/cluster_config.h"

#define KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define N_NODES 15

static const char *const regions[] = {"us-east", "us-west", "eu", "asia"};

static int node_region(int id)
{
    return id <= 6 ? 0 : (id - 7) / 3 + 1;
}

static bool is_dir_voter(int id)
{
    return id == 1 || id == 7 || id == 10;
}

static json_t *ids(int a, int b, int c)
{
    return json_pack("[iii]", a, b, c);
}

static json_t *address(int port)
{
    char buf[32];
    snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
    return json_string(buf);
}

/* The valid file as a tree; the caller owns it. */
static json_t *valid_tree(void)
{
    json_t *root = json_object();
    json_object_set_new(root, "cluster", json_string("test"));
    json_object_set_new(root, "username_hash_key", json_string(KEY));
    json_object_set_new(root, "regions", json_pack("[ssss]", "us-east", "us-west", "eu", "asia"));
    json_t *nodes = json_array();
    for (int id = 1; id <= N_NODES; id++) {
        char dir[64];
        snprintf(dir, sizeof dir, "/tmp/gs/node%d", id);
        json_t *n = json_object();
        json_object_set_new(n, "id", json_integer(id));
        json_object_set_new(n, "region", json_string(regions[node_region(id)]));
        json_object_set_new(n, "zone", json_string("a"));
        json_object_set_new(n, "client_address", address(7200 + id));
        json_object_set_new(n, "cell_raft_address", address(7100 + id));
        if (is_dir_voter(id)) {
            json_object_set_new(n, "directory_raft_address", address(7300 + id));
        }
        if (is_dir_voter(id) || id == 13) {
            json_object_set_new(n, "metadata_raft_address", address(7400 + id));
        }
        json_object_set_new(n, "data_dir", json_string(dir));
        json_array_append_new(nodes, n);
    }
    json_object_set_new(root, "nodes", nodes);
    json_t *cells = json_array();
    for (int c = 1; c <= 5; c++) {
        int first = 3 * (c - 1) + 1;
        json_array_append_new(cells, json_pack("{s:i, s:s, s:o}", "id", c, "region",
                                               regions[node_region(first)], "members",
                                               ids(first, first + 1, first + 2)));
    }
    json_object_set_new(root, "cells", cells);
    json_object_set_new(root, "directory", json_pack("{s:o}", "voters", ids(1, 7, 10)));
    json_object_set_new(root, "metadata",
                        json_pack("{s:o, s:[i]}", "voters", ids(1, 7, 10), "standbys", 13));
    json_object_set_new(
        root, "raft",
        json_pack("{s:i, s:i}", "election_timeout_ms", 1000, "heartbeat_timeout_ms", 100));
    json_object_set_new(root, "limits", json_object());
    json_object_set_new(root, "rocksdb", json_pack("{s:b}", "compression", 0));
    json_object_set_new(root, "log_level", json_string("info"));
    return root;
}

/*
 * Set the value at path ("nodes[3].region", "cells[0].members[1]", "raft")
 * to value (a new reference, stolen), or delete it if value is NULL.
 */
static void set(json_t *root, const char *path, json_t *value)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = root;
    char *save = NULL;
    char *tok = strtok_r(buf, ".", &save);
    while (tok != NULL) {
        char *next = strtok_r(NULL, ".", &save);
        char *bracket = strchr(tok, '[');
        long index = -1;
        if (bracket != NULL) {
            index = strtol(bracket + 1, NULL, 10);
            *bracket = '\0';
        }
        if (next == NULL) {
            if (index < 0) {
                if (value == NULL) {
                    json_object_del(cur, tok);
                } else {
                    json_object_set_new(cur, tok, value);
                }
            } else {
                json_t *arr = json_object_get(cur, tok);
                assert_non_null(arr);
                if (value == NULL) {
                    json_array_remove(arr, (size_t)index);
                } else if ((size_t)index == json_array_size(arr)) {
                    json_array_append_new(arr, value);
                } else {
                    json_array_set_new(arr, (size_t)index, value);
                }
            }
            return;
        }
        cur = json_object_get(cur, tok);
        assert_non_null(cur);
        if (index >= 0) {
            cur = json_array_get(cur, (size_t)index);
            assert_non_null(cur);
        }
        tok = next;
    }
}

static char *dump(json_t *root)
{
    char *text = json_dumps(root, JSON_INDENT(1));
    assert_non_null(text);
    return text;
}

/* Parse the tree; expect GS_EINVAL and a message with both fragments. */
static void expect_tree_error(json_t *root, const char *frag1, const char *frag2)
{
    char *text = dump(root);
    struct cluster_config c;
    char err[512];
    int rv = cluster_config_parse(text, "test.json", &c, err, sizeof err);
    if (rv != GS_EINVAL || strstr(err, frag1) == NULL ||
        (frag2 != NULL && strstr(err, frag2) == NULL)) {
        fprintf(stderr, "rv=%d err=[%s] want [%s] [%s]\n", rv, err, frag1,
                frag2 != NULL ? frag2 : "");
        free(text);
        fail();
    }
    assert_int_equal(strncmp(err, "cluster: ", 9), 0);
    assert_null(strchr(err, '\n'));
    assert_null(c.nodes); /* nothing left to free */
    free(text);
    json_decref(root);
}

/* One change to the valid tree, then the expected error. */
static void expect_error(const char *path, json_t *value, const char *frag1, const char *frag2)
{
    json_t *root = valid_tree();
    set(root, path, value);
    expect_tree_error(root, frag1, frag2);
}

static void load_valid(struct cluster_config *c)
{
    json_t *root = valid_tree();
    char *text = dump(root);
    char err[512];
    int rv = cluster_config_parse(text, "test.json", c, err, sizeof err);
    if (rv != 0) {
        fprintf(stderr, "%s\n", err);
    }
    assert_int_equal(rv, 0);
    free(text);
    json_decref(root);
}

/* ------------------------------------------------------------- valid */

static void test_valid(void **state)
{
    (void)state;
    struct cluster_config c;
    load_valid(&c);
    assert_string_equal(c.name, "test");
    assert_int_equal(c.username_hash_key_len, 32);
    assert_int_equal(c.username_hash_key[1], 0x11);
    assert_int_equal(c.n_regions, 4);
    assert_string_equal(c.regions[3], "asia");
    assert_int_equal(c.n_nodes, N_NODES);
    assert_int_equal(c.n_cells, 5);
    assert_int_equal(c.directory_voters[1], 7);
    assert_int_equal(c.metadata_voters[2], 10);
    assert_int_equal(c.n_metadata_standbys, 1);
    assert_int_equal(c.metadata_standbys[0], 13);
    assert_int_equal(c.raft.election_timeout_ms, 1000);
    assert_int_equal(c.limits.max_frame_bytes, 4 * 1024 * 1024);
    assert_false(c.compression);
    assert_int_equal(c.log_level, LOG_INFO);

    /* Lookups. */
    const struct cluster_node *n5 = cluster_config_find_node(&c, 5);
    assert_non_null(n5);
    assert_string_equal(c.regions[n5->region], "us-east");
    assert_string_equal(n5->client_address, "127.0.0.1:7205");
    assert_int_equal(n5->cell_id, 2);
    assert_int_equal(n5->directory, CLUSTER_ROLE_NONE);
    assert_int_equal(n5->metadata, CLUSTER_ROLE_NONE);
    assert_null(cluster_config_find_node(&c, 16));
    assert_null(cluster_config_find_node(&c, 0));
    const struct cluster_cell *cell4 = cluster_config_find_cell(&c, 4);
    assert_non_null(cell4);
    assert_string_equal(c.regions[cell4->region], "eu");
    assert_int_equal(cell4->members[0], 10);
    assert_int_equal(cell4->members[2], 12);
    assert_null(cluster_config_find_cell(&c, 6));
    assert_int_equal(cluster_config_find_region(&c, "eu"), 2);
    assert_int_equal(cluster_config_find_region(&c, "mars"), -1);
    assert_int_equal(cluster_config_find_node(&c, 13)->metadata, CLUSTER_ROLE_STANDBY);
    assert_int_equal(cluster_config_find_node(&c, 10)->directory, CLUSTER_ROLE_VOTER);

    struct cluster_member members[CLUSTER_GROUP_MAX_MEMBERS];
    size_t n = 0;
    assert_int_equal(cluster_config_group_members(&c, CLUSTER_GROUP_CELL, 3, members,
                                                  CLUSTER_GROUP_MAX_MEMBERS, &n),
                     0);
    assert_int_equal(n, 3);
    assert_int_equal(members[1].id, 8);
    assert_string_equal(members[1].raft_address, "127.0.0.1:7108");
    assert_string_equal(members[1].client_address, "127.0.0.1:7208");
    assert_int_equal(cluster_config_group_members(&c, CLUSTER_GROUP_CELL, 9, members,
                                                  CLUSTER_GROUP_MAX_MEMBERS, &n),
                     GS_ENOTFOUND);
    assert_int_equal(cluster_config_group_members(&c, CLUSTER_GROUP_METADATA, 0, members, 3, &n),
                     GS_EINVAL);
    assert_string_equal(cluster_group_kind_name(CLUSTER_GROUP_DIRECTORY), "directory");
    assert_string_equal(cluster_role_name(CLUSTER_ROLE_STANDBY), "standby");
    cluster_config_free(&c);
    cluster_config_free(&c); /* twice is harmless */
}

static void assert_member(const struct cluster_member *m, uint64_t id, int raft_port,
                          enum cluster_role role)
{
    char raft[32], client[32];
    snprintf(raft, sizeof raft, "127.0.0.1:%d", raft_port);
    snprintf(client, sizeof client, "127.0.0.1:%d", 7200 + (int)id);
    assert_int_equal(m->id, id);
    assert_string_equal(m->raft_address, raft);
    assert_string_equal(m->client_address, client);
    assert_int_equal(m->role, role);
}

static void test_view_voter_everywhere(void **state)
{
    (void)state;
    struct cluster_config c;
    struct cluster_node_view *v = malloc(sizeof *v);
    char err[256];
    assert_non_null(v);
    load_valid(&c);
    /* Node 7: member of cell 3, directory voter, metadata voter. */
    assert_int_equal(cluster_config_node(&c, 7, v, err, sizeof err), 0);
    assert_int_equal(v->node_id, 7);
    assert_string_equal(v->region, "us-west");
    assert_string_equal(v->zone, "a");
    assert_string_equal(v->client_address, "127.0.0.1:7207");
    assert_string_equal(v->data_dir, "/tmp/gs/node7");
    assert_int_equal(v->n_groups, 3);

    const struct cluster_group_view *g = &v->groups[0];
    assert_int_equal(g->kind, CLUSTER_GROUP_CELL);
    assert_int_equal(g->group_id, 3);
    assert_int_equal(g->role, CLUSTER_ROLE_VOTER);
    assert_string_equal(g->raft_address, "127.0.0.1:7107");
    assert_string_equal(g->data_dir, "/tmp/gs/node7/cell");
    assert_int_equal(g->n_members, 3);
    for (int i = 0; i < 3; i++) {
        assert_member(&g->members[i], 7 + (uint64_t)i, 7107 + i, CLUSTER_ROLE_VOTER);
    }

    g = &v->groups[1];
    assert_int_equal(g->kind, CLUSTER_GROUP_DIRECTORY);
    assert_int_equal(g->group_id, 0);
    assert_int_equal(g->role, CLUSTER_ROLE_VOTER);
    assert_string_equal(g->raft_address, "127.0.0.1:7307");
    assert_string_equal(g->data_dir, "/tmp/gs/node7/directory");
    assert_int_equal(g->n_members, 3);
    assert_member(&g->members[0], 1, 7301, CLUSTER_ROLE_VOTER);
    assert_member(&g->members[1], 7, 7307, CLUSTER_ROLE_VOTER);
    assert_member(&g->members[2], 10, 7310, CLUSTER_ROLE_VOTER);

    g = &v->groups[2];
    assert_int_equal(g->kind, CLUSTER_GROUP_METADATA);
    assert_int_equal(g->role, CLUSTER_ROLE_VOTER);
    assert_string_equal(g->raft_address, "127.0.0.1:7407");
    assert_string_equal(g->data_dir, "/tmp/gs/node7/metadata");
    assert_int_equal(g->n_members, 4);
    assert_member(&g->members[0], 1, 7401, CLUSTER_ROLE_VOTER);
    assert_member(&g->members[2], 10, 7410, CLUSTER_ROLE_VOTER);
    assert_member(&g->members[3], 13, 7413, CLUSTER_ROLE_STANDBY);
    free(v);
    cluster_config_free(&c);
}

static void test_view_standby(void **state)
{
    (void)state;
    struct cluster_config c;
    struct cluster_node_view *v = malloc(sizeof *v);
    char err[256];
    assert_non_null(v);
    load_valid(&c);
    /* Node 13: member of cell 5 and the metadata standby of asia. */
    assert_int_equal(cluster_config_node(&c, 13, v, err, sizeof err), 0);
    assert_string_equal(v->region, "asia");
    assert_int_equal(v->n_groups, 2);
    assert_int_equal(v->groups[0].kind, CLUSTER_GROUP_CELL);
    assert_int_equal(v->groups[0].group_id, 5);
    assert_int_equal(v->groups[1].kind, CLUSTER_GROUP_METADATA);
    assert_int_equal(v->groups[1].role, CLUSTER_ROLE_STANDBY);
    assert_string_equal(v->groups[1].raft_address, "127.0.0.1:7413");
    assert_int_equal(v->groups[1].n_members, 4);
    assert_member(&v->groups[1].members[3], 13, 7413, CLUSTER_ROLE_STANDBY);
    free(v);
    cluster_config_free(&c);
}

static void test_view_cell_only(void **state)
{
    (void)state;
    struct cluster_config c;
    struct cluster_node_view *v = malloc(sizeof *v);
    char err[256];
    assert_non_null(v);
    load_valid(&c);
    /* Node 5: a member of cell 2 and nothing else. */
    assert_int_equal(cluster_config_node(&c, 5, v, err, sizeof err), 0);
    assert_string_equal(v->region, "us-east");
    assert_int_equal(v->n_groups, 1);
    assert_int_equal(v->groups[0].kind, CLUSTER_GROUP_CELL);
    assert_int_equal(v->groups[0].group_id, 2);
    assert_string_equal(v->groups[0].raft_address, "127.0.0.1:7105");
    assert_member(&v->groups[0].members[0], 4, 7104, CLUSTER_ROLE_VOTER);
    /* An unknown node. */
    assert_int_equal(cluster_config_node(&c, 99, v, err, sizeof err), GS_ENOTFOUND);
    assert_non_null(strstr(err, "node 99"));
    free(v);
    cluster_config_free(&c);
}

/* A node that hosts only the directory and metadata groups (no cell), with
 * loopback data_dirs that differ only by a trailing slash on distinct hosts
 * allowed, and a data_dir with a trailing slash. */
static void test_valid_variants(void **state)
{
    (void)state;
    json_t *root = valid_tree();
    /* Node 16 in eu: the directory and metadata voter instead of node 10. */
    set(root, "nodes[15]",
        json_pack("{s:i, s:s, s:s, s:s, s:s, s:s}", "id", 16, "region", "eu", "client_address",
                  "[::1]:7216", "directory_raft_address", "localhost:7316", "metadata_raft_address",
                  "127.0.0.2:7416", "data_dir", "/tmp/gs/node16/"));
    set(root, "nodes[9].directory_raft_address", NULL);
    set(root, "nodes[9].metadata_raft_address", NULL);
    set(root, "directory.voters[2]", json_integer(16));
    set(root, "metadata.voters[2]", json_integer(16));
    /* Nodes on other machines may share a data_dir path. */
    set(root, "nodes[1].client_address", json_string("10.0.0.2:7202"));
    set(root, "nodes[1].data_dir", json_string("/tmp/gs/node1"));
    char *text = dump(root);
    struct cluster_config c;
    struct cluster_node_view *v = malloc(sizeof *v);
    char err[512];
    assert_non_null(v);
    int rv = cluster_config_parse(text, "test.json", &c, err, sizeof err);
    if (rv != 0) {
        fprintf(stderr, "%s\n", err);
    }
    assert_int_equal(rv, 0);
    assert_int_equal(cluster_config_node(&c, 16, v, err, sizeof err), 0);
    assert_int_equal(v->n_groups, 2);
    assert_int_equal(v->groups[0].kind, CLUSTER_GROUP_DIRECTORY);
    assert_string_equal(v->groups[0].data_dir, "/tmp/gs/node16/directory");
    assert_int_equal(v->groups[1].kind, CLUSTER_GROUP_METADATA);
    assert_int_equal(cluster_config_node(&c, 10, v, err, sizeof err), 0);
    assert_int_equal(v->n_groups, 1);
    free(v);
    cluster_config_free(&c);
    free(text);
    json_decref(root);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/gs-cluster-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    json_t *root = valid_tree();
    assert_int_equal(json_dumpfd(root, fd, 0), 0);
    close(fd);
    json_decref(root);
    struct cluster_config c;
    char err[512];
    assert_int_equal(cluster_config_load(path, &c, err, sizeof err), 0);
    assert_int_equal(c.n_nodes, N_NODES);
    cluster_config_free(&c);
    unlink(path);
    assert_int_equal(cluster_config_load(path, &c, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "cluster: /tmp/gs-cluster-test-"));
    assert_non_null(strstr(err, "cannot open"));
}

/* ------------------------------------------------------------- rules */

static void test_top_level(void **state)
{
    (void)state;
    expect_error("username_hash_key", NULL, "cluster: username_hash_key: required", NULL);
    expect_error("username_hash_key", json_string("abc"), "username_hash_key: expected", NULL);
    expect_error("regions", NULL, "cluster: regions: required", NULL);
    expect_error("nodes", NULL, "cluster: nodes: required", NULL);
    expect_error("nodes", json_array(), "cluster: nodes: expected 1 to 1024 nodes, got 0", NULL);
    expect_error("cells", NULL, "cluster: cells: required", NULL);
    expect_error("directory", NULL, "cluster: directory: required", NULL);
    expect_error("metadata", json_string("x"), "cluster: metadata: expected object, got string",
                 NULL);
    expect_error("cluster", json_integer(1), "cluster: cluster: expected string, got integer",
                 NULL);
}

static void test_regions(void **state)
{
    (void)state;
    expect_error("regions", json_array(), "cluster: regions: expected 1 to 32 names, got 0", NULL);
    expect_error("regions[2]", json_string("EU"), "cluster: regions[2]: \"EU\": only a-z", NULL);
    expect_error("regions[3]", json_string("us-east"),
                 "cluster: regions[3]: duplicate region \"us-east\" (also regions[0])", NULL);
    expect_error("regions[3]", json_string("a-very-long-region-name-of-33-byt"),
                 "cluster: regions[3]: expected 1 to 32 bytes, got 33", NULL);
    expect_error("regions[1]", json_integer(3), "cluster: regions[1]: expected string", NULL);
}

static void test_nodes(void **state)
{
    (void)state;
    expect_error("nodes[4].id", json_integer(4),
                 "cluster: nodes[4].id: duplicate id 4 (also nodes[3])", NULL);
    expect_error("nodes[0].id", json_integer(0), "cluster: nodes[0].id: must be between 1 and",
                 NULL);
    expect_error("nodes[0].id", json_integer(4294967296),
                 "cluster: nodes[0].id: must be between 1 and 4294967295", NULL);
    expect_error("nodes[3].region", json_string("mars"),
                 "cluster: nodes[3].region: \"mars\" is not one of regions", NULL);
    expect_error("nodes[3].region", NULL, "cluster: nodes[3].region: required", NULL);
    expect_error("nodes[0].client_address", json_string("db1.example.org:7201"),
                 "cluster: nodes[0].client_address: expected an IP address", NULL);
    expect_error("nodes[2].cell_raft_address", json_string("127.0.0.1"),
                 "cluster: nodes[2].cell_raft_address: expected \"host:port\"", NULL);
    expect_error("nodes[0].data_dir", NULL, "cluster: nodes[0].data_dir: required", NULL);
    expect_error("nodes[0]", json_string("node"), "cluster: nodes[0]: expected object", NULL);
}

static void test_node_addresses_follow_groups(void **state)
{
    (void)state;
    expect_error("nodes[1].cell_raft_address", NULL,
                 "cluster: nodes[1].cell_raft_address: required: node 2 is a cell member", NULL);
    expect_error("nodes[0].directory_raft_address", NULL,
                 "cluster: nodes[0].directory_raft_address: required: node 1 is a directory voter",
                 NULL);
    expect_error("nodes[12].metadata_raft_address", NULL,
                 "cluster: nodes[12].metadata_raft_address: required: node 13 is a metadata "
                 "standby",
                 NULL);
    expect_error("nodes[1].directory_raft_address", json_string("127.0.0.1:7302"),
                 "cluster: nodes[1].directory_raft_address: node 2 is not a directory voter", NULL);
    expect_error("nodes[1].metadata_raft_address", json_string("127.0.0.1:7402"),
                 "cluster: nodes[1].metadata_raft_address: node 2 is not a metadata voter or "
                 "standby",
                 NULL);
    /* A node in no cell with a cell address. */
    json_t *root = valid_tree();
    set(root, "nodes[15]",
        json_pack("{s:i, s:s, s:s, s:s, s:s}", "id", 16, "region", "asia", "client_address",
                  "127.0.0.1:7216", "cell_raft_address", "127.0.0.1:7116", "data_dir",
                  "/tmp/gs/node16"));
    expect_tree_error(root, "cluster: nodes[15].cell_raft_address: node 16 is not in any cell",
                      NULL);
    /* A node that hosts nothing. */
    root = valid_tree();
    set(root, "nodes[15]",
        json_pack("{s:i, s:s, s:s, s:s}", "id", 16, "region", "asia", "client_address",
                  "127.0.0.1:7216", "data_dir", "/tmp/gs/node16"));
    expect_tree_error(root, "cluster: nodes[15]: node 16 hosts no group", NULL);
}

static void test_unique_endpoints(void **state)
{
    (void)state;
    expect_error("nodes[1].cell_raft_address", json_string("127.0.0.1:7201"),
                 "cluster: nodes[1].cell_raft_address: \"127.0.0.1:7201\" is the same endpoint as "
                 "nodes[0].client_address",
                 NULL);
    expect_error("nodes[14].client_address", json_string("localhost:7113"),
                 "cluster: nodes[14].client_address: \"localhost:7113\" is the same endpoint as "
                 "nodes[12].cell_raft_address (\"127.0.0.1:7113\")",
                 NULL);
    expect_error("nodes[3].client_address", json_string("[::ffff:127.0.0.1]:7201"),
                 "cluster: nodes[3].client_address: \"[::ffff:127.0.0.1]:7201\" is the same "
                 "endpoint as nodes[0].client_address",
                 NULL);
    /* Of several repeats, the first in the file is named. */
    json_t *root = valid_tree();
    set(root, "nodes[14].client_address", json_string("127.0.0.1:7101"));
    set(root, "nodes[2].client_address", json_string("127.0.0.1:7413"));
    expect_tree_error(root,
                      "cluster: nodes[12].metadata_raft_address: \"127.0.0.1:7413\" is the same "
                      "endpoint as nodes[2].client_address",
                      NULL);
}

static void test_data_dirs(void **state)
{
    (void)state;
    expect_error("nodes[2].data_dir", json_string("/tmp/gs/node1/"),
                 "cluster: nodes[2].data_dir: \"/tmp/gs/node1/\" is also the data_dir of nodes[0] "
                 "(node 1), on the same machine",
                 NULL);
    /* ::1 and 127.0.0.1 are one machine. */
    json_t *root = valid_tree();
    set(root, "nodes[4].client_address", json_string("[::1]:7205"));
    set(root, "nodes[4].data_dir", json_string("/tmp/gs/node2"));
    expect_tree_error(root,
                      "cluster: nodes[4].data_dir: \"/tmp/gs/node2\" is also the data_dir "
                      "of nodes[1]",
                      NULL);
}

static void test_cells(void **state)
{
    (void)state;
    expect_error("cells", json_array(), "cluster: cells: expected 1 to 256 cells, got 0", NULL);
    expect_error("cells[1].id", json_integer(1),
                 "cluster: cells[1].id: duplicate id 1 (also cells[0])", NULL);
    expect_error("cells[1].id", json_integer(1 << 24),
                 "cluster: cells[1].id: must be between 1 and 16777215", NULL);
    expect_error("cells[0].region", json_string("mars"),
                 "cluster: cells[0].region: \"mars\" is not one of regions", NULL);
    expect_error("cells[0].members[2]", NULL,
                 "cluster: cells[0].members: expected exactly 3 node ids, got 2", NULL);
    expect_error("cells[0].members[3]", json_integer(4),
                 "cluster: cells[0].members: expected exactly 3 node ids, got 4", NULL);
    expect_error("cells[0].members[2]", json_integer(99),
                 "cluster: cells[0].members[2]: no node 99 in nodes", NULL);
    expect_error("cells[0].members[2]", json_string("3"),
                 "cluster: cells[0].members[2]: expected a node id, got string", NULL);
    expect_error("cells[0].members[2]", json_integer(1),
                 "cluster: cells[0].members[2]: node 1 is listed twice (also "
                 "cells[0].members[0])",
                 NULL);
    expect_error("cells[0].members[1]", json_integer(11),
                 "cluster: cells[0].members[1]: node 11 is in region eu, the cell is in us-east",
                 NULL);
    expect_error("cells[1].members[0]", json_integer(1),
                 "cluster: cells[1].members[0]: node 1 is already a member of cell 1", NULL);
}

static void test_directory_and_metadata(void **state)
{
    (void)state;
    expect_error("directory.voters[2]", NULL,
                 "cluster: directory.voters: expected exactly 3 node ids, got 2", NULL);
    expect_error("directory.voters[1]", json_integer(2),
                 "cluster: directory.voters[1]: node 2 is in region us-east, as is "
                 "directory.voters[0] (node 1)",
                 NULL);
    expect_error("directory.voters[1]", json_integer(77),
                 "cluster: directory.voters[1]: no node 77 in nodes", NULL);
    expect_error("metadata.voters", NULL, "cluster: metadata.voters: required", NULL);
    expect_error("metadata.voters[2]", json_integer(8),
                 "cluster: metadata.voters[2]: node 8 is in region us-west, as is "
                 "metadata.voters[1] (node 7)",
                 NULL);
    expect_error("metadata.standbys[0]", json_integer(10),
                 "cluster: metadata.standbys[0]: node 10 is a metadata voter", NULL);
    expect_error("metadata.standbys[1]", json_integer(13),
                 "cluster: metadata.standbys[1]: node 13 is listed twice", NULL);
    expect_error("metadata.standbys", NULL,
                 "cluster: metadata.standbys: region asia has no metadata voter and no standby",
                 NULL);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_error("node_id", json_integer(1), "cluster: node_id: unknown key", NULL);
    expect_error("nodes[0].raft_address", json_string("127.0.0.1:7001"),
                 "cluster: nodes[0].raft_address: unknown key", NULL);
    expect_error("cells[0].leader", json_integer(1), "cluster: cells[0].leader: unknown key", NULL);
    expect_error("directory.standbys", json_array(), "cluster: directory.standbys: unknown key",
                 NULL);
    expect_error("metadata.observers", json_array(), "cluster: metadata.observers: unknown key",
                 NULL);
    expect_error("raft.election_timeout", json_integer(1),
                 "cluster: raft.election_timeout: unknown key", NULL);
}

static void test_shared_sections(void **state)
{
    (void)state;
    expect_error("raft.heartbeat_timeout_ms", json_integer(1000),
                 "cluster: raft.heartbeat_timeout_ms: must be less than the election timeout",
                 NULL);
    expect_error("limits.max_connections", json_integer(0),
                 "cluster: limits.max_connections: must be between 1 and", NULL);
    expect_error("rocksdb.compression", json_string("no"),
                 "cluster: rocksdb.compression: expected boolean", NULL);
    expect_error("log_level", json_string("loud"), "cluster: log_level: expected one of", NULL);
}

static void test_bad_json(void **state)
{
    (void)state;
    struct cluster_config c;
    char err[512];
    const char *text = "{\n  \"cluster\": \"x\",\n  \"regions\": [\"eu\",]\n}\n";
    assert_int_equal(cluster_config_parse(text, "c.json", &c, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "cluster: c.json: line 3 column"));
    text = "{\"regions\": [\"eu\"], \"regions\": [\"asia\"]}";
    assert_int_equal(cluster_config_parse(text, "c.json", &c, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(cluster_config_parse("[1]", "c.json", &c, err, sizeof err), GS_EINVAL);
    assert_string_equal(err, "cluster: (top level): expected object, got array");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_view_voter_everywhere),
        cmocka_unit_test(test_view_standby),
        cmocka_unit_test(test_view_cell_only),
        cmocka_unit_test(test_valid_variants),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_top_level),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_nodes),
        cmocka_unit_test(test_node_addresses_follow_groups),
        cmocka_unit_test(test_unique_endpoints),
        cmocka_unit_test(test_data_dirs),
        cmocka_unit_test(test_cells),
        cmocka_unit_test(test_directory_and_metadata),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_shared_sections),
        cmocka_unit_test(test_bad_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
