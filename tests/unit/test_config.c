/*
 * Node config: a valid file loads with its defaults; every kind of bad field
 * gives GS_EINVAL and one line that names the field.
 *
 * Most cases start from a valid config and change one thing in it, by
 * rewriting a key's value as JSON text, so each test shows only what it
 * breaks.
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

#include "engine/log.h"
#include "geoscale/errors.h"
#include "net/config.h"

#define KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

/* A valid config, one key per line so that replacements stay readable. */
static const char *const valid_lines[] = {
    "\"node_id\": 2",
    "\"region\": \"eu\"",
    "\"zone\": \"eu-1b\"",
    "\"cell_id\": 7",
    "\"raft_address\": \"127.0.0.1:7002\"",
    "\"client_address\": \"127.0.0.1:8002\"",
    "\"data_dir\": \"/tmp/gs-node-2\"",
    "\"peers\": ["
    "{\"id\": 1, \"raft_address\": \"127.0.0.1:7001\", \"client_address\": \"127.0.0.1:8001\"},"
    "{\"id\": 2, \"raft_address\": \"127.0.0.1:7002\", \"client_address\": \"127.0.0.1:8002\"},"
    "{\"id\": 3, \"raft_address\": \"127.0.0.1:7003\", \"client_address\": \"127.0.0.1:8003\"}]",
    "\"username_hash_key\": \"" KEY "\"",
    "\"raft\": {\"election_timeout_ms\": 2000, \"heartbeat_timeout_ms\": 200, "
    "\"log_memory_mib\": 64}",
    "\"limits\": {\"max_inflight_per_connection\": 64, \"idle_timeout_ms\": 30000}",
    "\"rocksdb\": {\"compression\": false}",
    "\"log_level\": \"debug\"",
};
#define N_LINES (sizeof valid_lines / sizeof valid_lines[0])

/* Build the valid config with the line starting with `"key":` replaced by
 * replacement (NULL: dropped). key NULL: unchanged. extra (may be NULL) is
 * appended as one more member. Returns a static buffer. */
static const char *config_with(const char *key, const char *replacement, const char *extra)
{
    static char text[8192];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "{\n");
    bool first = true;
    for (size_t i = 0; i < N_LINES; i++) {
        const char *line = valid_lines[i];
        if (key != NULL) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "\"%s\":", key);
            if (strncmp(line, prefix, strlen(prefix)) == 0) {
                if (replacement == NULL) {
                    continue;
                }
                line = replacement;
            }
        }
        n += (size_t)snprintf(text + n, sizeof text - n, "%s  %s", first ? "" : ",\n", line);
        first = false;
    }
    if (extra != NULL) {
        n += (size_t)snprintf(text + n, sizeof text - n, ",\n  %s", extra);
    }
    snprintf(text + n, sizeof text - n, "\n}\n");
    return text;
}

/* Parse text; expect failure whose message contains every given fragment. */
static void expect_error(const char *text, const char *frag1, const char *frag2)
{
    struct node_config cfg;
    char err[512];
    int rv = config_parse(text, "test.json", &cfg, err, sizeof err);
    if (rv != GS_EINVAL || strstr(err, frag1) == NULL ||
        (frag2 != NULL && strstr(err, frag2) == NULL)) {
        fprintf(stderr, "rv=%d err=[%s] want [%s] [%s]\ntext:\n%s", rv, err, frag1,
                frag2 != NULL ? frag2 : "", text);
        fail();
    }
    assert_non_null(strstr(err, "config: "));
    assert_null(strchr(err, '\n'));
}

static void test_valid(void **state)
{
    (void)state;
    struct node_config cfg;
    char err[512];
    int rv = config_parse(config_with(NULL, NULL, NULL), "test.json", &cfg, err, sizeof err);
    if (rv != 0) {
        fprintf(stderr, "%s\n", err);
    }
    assert_int_equal(rv, 0);
    assert_int_equal(cfg.node_id, 2);
    assert_string_equal(cfg.region, "eu");
    assert_string_equal(cfg.zone, "eu-1b");
    assert_int_equal(cfg.cell_id, 7);
    assert_string_equal(cfg.raft_address, "127.0.0.1:7002");
    assert_string_equal(cfg.client_address, "127.0.0.1:8002");
    assert_string_equal(cfg.data_dir, "/tmp/gs-node-2");
    assert_int_equal(cfg.n_peers, 3);
    assert_int_equal(cfg.peers[2].id, 3);
    assert_string_equal(cfg.peers[2].client_address, "127.0.0.1:8003");
    assert_int_equal(cfg.username_hash_key_len, 32);
    assert_int_equal(cfg.username_hash_key[0], 0x00);
    assert_int_equal(cfg.username_hash_key[1], 0x11);
    assert_int_equal(cfg.username_hash_key[15], 0xff);
    assert_int_equal(cfg.raft.election_timeout_ms, 2000);
    assert_int_equal(cfg.raft.heartbeat_timeout_ms, 200);
    assert_int_equal(cfg.raft.snapshot_threshold, 0);
    assert_int_equal(cfg.raft.log_memory_mib, 64);
    assert_int_equal(cfg.limits.max_inflight_per_connection, 64);
    assert_int_equal(cfg.limits.idle_timeout_ms, 30000);
    /* Defaults of the limits not given. */
    assert_int_equal(cfg.limits.max_frame_bytes, 4 * 1024 * 1024);
    assert_int_equal(cfg.limits.max_connections, 1024);
    assert_int_equal(cfg.limits.default_deadline_ms, 5000);
    assert_false(cfg.compression);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
}

static void test_minimal_defaults(void **state)
{
    (void)state;
    const char *text = "{\"node_id\": 1, \"region\": \"us-east\", \"cell_id\": 1,"
                       "\"raft_address\": \"localhost:7001\","
                       "\"client_address\": \"[::1]:8001\", \"data_dir\": \"d\","
                       "\"peers\": [{\"id\": 1, \"raft_address\": \"localhost:7001\","
                       "\"client_address\": \"[::1]:8001\"}],"
                       "\"username_hash_key\": \"000102030405060708090A0B0C0D0E0F\"}";
    struct node_config cfg;
    char err[512];
    assert_int_equal(config_parse(text, "t", &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.zone, "");
    assert_true(cfg.compression);
    assert_int_equal(cfg.log_level, -1);
    assert_int_equal(cfg.username_hash_key_len, 16);
    assert_int_equal(cfg.username_hash_key[15], 0x0f);
    assert_int_equal(cfg.limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg.limits.max_inflight_per_connection, 1024);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/gs-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = config_with(NULL, NULL, NULL);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct node_config cfg;
    char err[512];
    assert_int_equal(config_load(path, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.node_id, 2);
    unlink(path);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), GS_EINVAL);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "cannot open"));
}

static void test_missing(void **state)
{
    (void)state;
    static const char *const required[] = {"node_id",      "region",           "cell_id",
                                           "raft_address", "client_address",   "data_dir",
                                           "peers",        "username_hash_key"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "config: %s: required", required[i]);
        expect_error(config_with(required[i], NULL, NULL), want, NULL);
    }
    expect_error(config_with("peers", "\"peers\": [{\"id\": 2, \"raft_address\": \"127.0.0.1:1\"}]", NULL),
                 "peers[0].client_address: required", NULL);
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_error(config_with("node_id", "\"node_id\": \"2\"", NULL), "node_id: expected integer",
                 "got string");
    expect_error(config_with("node_id", "\"node_id\": 2.5", NULL), "node_id: expected integer",
                 NULL);
    expect_error(config_with("region", "\"region\": 5", NULL), "region: expected string",
                 "got integer");
    expect_error(config_with("peers", "\"peers\": {}", NULL), "peers: expected array", NULL);
    expect_error(config_with("peers", "\"peers\": [1]", NULL), "peers[0]: expected object", NULL);
    expect_error(config_with("raft", "\"raft\": []", NULL), "raft: expected object", NULL);
    expect_error(config_with("rocksdb", "\"rocksdb\": {\"compression\": 0}", NULL),
                 "rocksdb.compression: expected boolean", NULL);
    expect_error(config_with("log_level", "\"log_level\": true", NULL),
                 "log_level: expected string", "got boolean");
    expect_error(config_with("limits", "\"limits\": {\"max_connections\": null}", NULL),
                 "limits.max_connections: expected integer", "got null");
    expect_error("[1, 2]", "(top level): expected object", NULL);
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error(config_with("node_id", "\"node_id\": 0", NULL), "node_id: must be between 1",
                 "got 0");
    expect_error(config_with("node_id", "\"node_id\": 4294967296", NULL), "node_id:", NULL);
    expect_error(config_with("cell_id", "\"cell_id\": -3", NULL), "cell_id:", "got -3");
    expect_error(config_with("region", "\"region\": \"\"", NULL), "region: must not be empty",
                 NULL);
    expect_error(config_with("region", "\"region\": \"US_East\"", NULL),
                 "region: expected 1-32 characters of [a-z0-9-]", "US_East");
    expect_error(config_with("raft_address", "\"raft_address\": \"localhost\"", NULL),
                 "raft_address: expected \"host:port\", got \"localhost\"", NULL);
    expect_error(config_with("client_address", "\"client_address\": \"h:70000\"", NULL),
                 "client_address: expected \"host:port\"", NULL);
    expect_error(config_with("client_address", "\"client_address\": \"db1.example:7201\"", NULL),
                 "client_address: expected an IP address (host names are not resolved)",
                 "db1.example:7201");
    expect_error(config_with("peers",
                             "\"peers\": [{\"id\": 2, \"raft_address\": \"127.0.0.1:7002\","
                             "\"client_address\": \"127.0.0.1:8002\"},"
                             "{\"id\": 3, \"raft_address\": \"localhost\","
                             "\"client_address\": \"127.0.0.1:8003\"}]",
                             NULL),
                 "config: peers[1].raft_address: expected \"host:port\", got \"localhost\"", NULL);
    expect_error(config_with("peers", "\"peers\": []", NULL), "peers: expected 1 to 7 entries",
                 NULL);
    expect_error(config_with("username_hash_key", "\"username_hash_key\": \"abcd\"", NULL),
                 "username_hash_key: expected", NULL);
    expect_error(config_with("username_hash_key",
                             "\"username_hash_key\": \"zz112233445566778899aabbccddeeff\"", NULL),
                 "username_hash_key: not a hex digit", NULL);
    expect_error(config_with("username_hash_key", "\"username_hash_key\": \"" KEY KEY "00\"", NULL),
                 "username_hash_key: expected", NULL);
    expect_error(config_with("raft", "\"raft\": {\"election_timeout_ms\": 5}", NULL),
                 "raft.election_timeout_ms: must be between", NULL);
    expect_error(config_with("raft", "\"raft\": {\"log_memory_mib\": 8}", NULL),
                 "raft.log_memory_mib: must be between 16", NULL);
    expect_error(config_with("raft",
                             "\"raft\": {\"election_timeout_ms\": 500,"
                             "\"heartbeat_timeout_ms\": 500}",
                             NULL),
                 "raft.heartbeat_timeout_ms: must be less than", NULL);
    expect_error(config_with("limits", "\"limits\": {\"max_frame_bytes\": 10}", NULL),
                 "limits.max_frame_bytes: must be between", NULL);
    expect_error(config_with("limits", "\"limits\": {\"max_inflight_per_connection\": 0}", NULL),
                 "limits.max_inflight_per_connection:", NULL);
    expect_error(config_with("log_level", "\"log_level\": \"verbose\"", NULL),
                 "log_level: expected one of", "\"verbose\"");
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_error(config_with(NULL, NULL, "\"nodeid\": 3"), "config: nodeid: unknown key", NULL);
    expect_error(config_with("raft", "\"raft\": {\"election_timeout\": 1000}", NULL),
                 "raft.election_timeout: unknown key", NULL);
    expect_error(config_with("limits", "\"limits\": {\"max_conns\": 1}", NULL),
                 "limits.max_conns: unknown key", NULL);
    expect_error(config_with("peers",
                             "\"peers\": [{\"id\": 2, \"raft_address\": \"127.0.0.1:7002\","
                             "\"client_address\": \"127.0.0.1:8002\", \"role\": \"voter\"}]",
                             NULL),
                 "peers[0].role: unknown key", NULL);
}

static void test_self_not_in_peers(void **state)
{
    (void)state;
    expect_error(config_with("node_id", "\"node_id\": 4", NULL), "peers: this node (node_id 4)",
                 "not listed");
    /* Listed with other addresses than its own. */
    expect_error(config_with("raft_address", "\"raft_address\": \"127.0.0.1:7999\"", NULL),
                 "peers[1].raft_address", "differs");
    expect_error(config_with("client_address", "\"client_address\": \"127.0.0.1:8999\"", NULL),
                 "peers[1].client_address", "differs");
}

static void test_duplicate_ids(void **state)
{
    (void)state;
    expect_error(config_with("peers",
                             "\"peers\": [{\"id\": 2, \"raft_address\": \"127.0.0.1:7002\","
                             "\"client_address\": \"127.0.0.1:8002\"},"
                             "{\"id\": 2, \"raft_address\": \"127.0.0.1:7003\","
                             "\"client_address\": \"127.0.0.1:8003\"}]",
                             NULL),
                 "peers[1].id: duplicate id 2", NULL);
    expect_error(config_with("peers",
                             "\"peers\": [{\"id\": 2, \"raft_address\": \"127.0.0.1:7002\","
                             "\"client_address\": \"127.0.0.1:8002\"},"
                             "{\"id\": 3, \"raft_address\": \"127.0.0.1:7002\","
                             "\"client_address\": \"127.0.0.1:8003\"}]",
                             NULL),
                 "peers[1].raft_address: duplicate address", NULL);
    /* A key twice in one object is caught by the JSON parser. */
    expect_error(config_with(NULL, NULL, "\"node_id\": 2"), "test.json", "duplicate");
}

static void test_bad_json(void **state)
{
    (void)state;
    /* Line 3 has a trailing comma before the closing brace on line 4. */
    expect_error("{\n  \"node_id\": 1,\n  \"region\": \"eu\",\n}\n", "config: test.json: line 4",
                 NULL);
    expect_error("", "config: test.json: line", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),         cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_load_file),     cmocka_unit_test(test_missing),
        cmocka_unit_test(test_wrong_type),    cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_unknown_key),   cmocka_unit_test(test_self_not_in_peers),
        cmocka_unit_test(test_duplicate_ids), cmocka_unit_test(test_bad_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
