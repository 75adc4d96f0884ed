/*
 * The configuration of one geoscaled node, read from a JSON file.
 *
 * The file is an object with these keys (anything else is an error, so that
 * a misspelt key is caught instead of silently ignored):
 *
 *   node_id            integer 1..4294967295 (the wire's leader_id is 32 bits)
 *   region             non-empty string
 *   zone               string (optional)
 *   cell_id            integer 1..4294967295
 *   raft_address       "host:port" of the Raft transport
 *   client_address     "host:port" the client server listens on
 *   data_dir           directory of the node's state (db/ and raft/ inside)
 *   peers              array of 1..7 {id, raft_address, client_address}: the
 *                      cell's initial voters; ids unique; this node included
 *                      with the same addresses
 *   username_hash_key  32..128 hex digits (16..64 bytes), the HMAC key of
 *                      username hashes; the same on every node of the cell
 *   raft               optional {election_timeout_ms, heartbeat_timeout_ms,
 *                      snapshot_threshold, snapshot_trailing, log_memory_mib}
 *   limits             optional {max_frame_bytes, max_inflight_per_connection,
 *                      max_connections, idle_timeout_ms, default_deadline_ms}
 *   rocksdb            optional {compression (bool, default true)}
 *   log_level          optional "debug" | "info" | "warn" | "error"
 *
 * The configuration holds no PII, so error messages may quote values.
 */
#ifndef GS_NET_CONFIG_H
#define GS_NET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_PEERS 7
#define CONFIG_ADDRESS_MAX 64 /* bytes including the NUL; = GROUP_ADDRESS_MAX */
#define CONFIG_NAME_MAX 64
#define CONFIG_PATH_MAX 1024
#define CONFIG_KEY_MAX 64 /* bytes of username_hash_key */

struct config_peer {
    uint64_t id;
    char raft_address[CONFIG_ADDRESS_MAX];
    char client_address[CONFIG_ADDRESS_MAX];
};

struct config_raft {
    unsigned election_timeout_ms;  /* 0 = the group's default */
    unsigned heartbeat_timeout_ms; /* 0 = the group's default */
    unsigned snapshot_threshold;   /* 0 = the group's default */
    unsigned snapshot_trailing;    /* 0 = the group's default */
    unsigned log_memory_mib;       /* 0 = the group's default */
};

struct config_limits {
    uint32_t max_frame_bytes;             /* default 4 MiB */
    unsigned max_inflight_per_connection; /* default 1024 */
    unsigned max_connections;             /* default 1024 */
    unsigned idle_timeout_ms;             /* default 60000 */
    unsigned default_deadline_ms;         /* default 5000 */
};

struct node_config {
    uint64_t node_id;
    char region[CONFIG_NAME_MAX];
    char zone[CONFIG_NAME_MAX]; /* "" if not given */
    uint32_t cell_id;
    char raft_address[CONFIG_ADDRESS_MAX];
    char client_address[CONFIG_ADDRESS_MAX];
    char data_dir[CONFIG_PATH_MAX];
    struct config_peer peers[CONFIG_MAX_PEERS];
    size_t n_peers;
    uint8_t username_hash_key[CONFIG_KEY_MAX];
    size_t username_hash_key_len;
    struct config_raft raft;
    struct config_limits limits;
    bool compression; /* RocksDB compression; default true */
    int log_level;    /* enum log_level, or -1 if not given */
    bool unsafe_local_reads; /* not in the file: set by geoscaled
                                --unsafe-local-reads (testing only; see
                                group_config.unsafe_local_reads) */
};

/* Set every optional field to its default and every required one to zero. */
void config_defaults(struct node_config *out);

/*
 * Read and check the config file at path into *out. Returns 0, or GS_EINVAL
 * with one line in errmsg naming the offending field, e.g.
 *   config: peers[1].raft_address: expected "host:port", got "localhost"
 * On error *out is unspecified.
 */
int config_load(const char *path, struct node_config *out, char *errmsg, size_t len);

/* Same, from a JSON text in memory (name is used in JSON syntax errors). */
int config_parse(const char *text, const char *name, struct node_config *out, char *errmsg,
                 size_t len);

/* Split "host:port" (host may be "[v6]"). Returns 0 and fills host (without
 * brackets) and port, or GS_EINVAL. */
int config_split_address(const char *address, char *host, size_t host_len, int *port);

#endif /* GS_NET_CONFIG_H */
