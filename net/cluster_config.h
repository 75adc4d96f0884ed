/*
 * The cluster file: the topology of a multi-region GeoScale cluster, one JSON
 * file that is the same on every node (docs/CLUSTER.md is its contract).
 *
 *   cluster            optional name, at most 63 bytes
 *   username_hash_key  as in the node config (32..128 hex digits)
 *   regions            1..CLUSTER_MAX_REGIONS unique names of [a-z0-9-],
 *                      1..32 bytes
 *   nodes              1..CLUSTER_MAX_NODES {id, region, zone?,
 *                      client_address, cell_raft_address?,
 *                      directory_raft_address?, metadata_raft_address?,
 *                      data_dir}
 *   cells              1..CLUSTER_MAX_CELLS {id, region, members: [3 ids]}
 *   directory          {voters: [3 ids]}
 *   metadata           {voters: [3 ids], standbys?: [ids]}
 *   raft, limits, rocksdb, log_level   as in the node config, applied to
 *                      every node and every group
 *
 * Rules checked by the loader (each failure is one line naming the field):
 * - ids: node ids 1..2^32-1 unique; cell ids 1..2^24-1 unique;
 * - every address is "host:port" with an IP literal or localhost host, and
 *   no two addresses of the file are the same endpoint (localhost counts as
 *   127.0.0.1);
 * - a node has exactly the raft addresses of the groups it hosts: cell
 *   member <=> cell_raft_address, directory voter <=> directory_raft_address,
 *   metadata voter or standby <=> metadata_raft_address; a node that hosts
 *   no group at all is an error too (it would run nothing);
 * - nodes on one machine (same client host; every loopback host is one
 *   machine) have different data_dirs;
 * - a cell has exactly 3 distinct members, all of the cell's region, and a
 *   node is in at most one cell;
 * - directory.voters and metadata.voters: 3 distinct nodes in 3 different
 *   regions each; metadata.standbys: distinct nodes, none a metadata voter,
 *   such that every region without a metadata voter has a standby;
 * - unknown keys anywhere are errors.
 *
 * Limits: CLUSTER_MAX_NODES nodes, CLUSTER_MAX_CELLS cells,
 * CLUSTER_MAX_REGIONS regions, CLUSTER_MAX_STANDBYS metadata standbys; the
 * file itself at most 1 MiB.
 *
 * The file holds no PII, so error messages may quote values.
 */
#ifndef GS_NET_CLUSTER_CONFIG_H
#define GS_NET_CLUSTER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define CLUSTER_MAX_NODES 1024
#define CLUSTER_MAX_CELLS 256
#define CLUSTER_MAX_REGIONS 32
#define CLUSTER_MAX_STANDBYS 64
#define CLUSTER_REGION_MAX 33 /* bytes of a region name, NUL included */
#define CLUSTER_CELL_ID_MAX ((1u << 24) - 1)
#define CLUSTER_CELL_MEMBERS 3
#define CLUSTER_GROUP_VOTERS 3 /* of the directory and of the metadata group */
/* Members of one group: the metadata group's voters and standbys. */
#define CLUSTER_GROUP_MAX_MEMBERS (CLUSTER_GROUP_VOTERS + CLUSTER_MAX_STANDBYS)
/* data_dir leaves room for "/metadata/checkpoints/<name>" below it. */
#define CLUSTER_DATA_DIR_MAX (CONFIG_PATH_MAX - 128)

enum cluster_group_kind {
    CLUSTER_GROUP_CELL,
    CLUSTER_GROUP_DIRECTORY,
    CLUSTER_GROUP_METADATA,
};

enum cluster_role {
    CLUSTER_ROLE_NONE,    /* not a member of the group */
    CLUSTER_ROLE_VOTER,   /* a voter (RAFT_VOTER) */
    CLUSTER_ROLE_STANDBY, /* a non-voting replica (RAFT_STANDBY) */
};

struct cluster_node {
    uint64_t id;
    size_t region;              /* index into cluster_config.regions */
    char zone[CONFIG_NAME_MAX]; /* "" if not given */
    char client_address[CONFIG_ADDRESS_MAX];
    /* Raft addresses of the groups the node hosts; "" for the others. */
    char cell_raft_address[CONFIG_ADDRESS_MAX];
    char directory_raft_address[CONFIG_ADDRESS_MAX];
    char metadata_raft_address[CONFIG_ADDRESS_MAX];
    char data_dir[CLUSTER_DATA_DIR_MAX];
    /* Derived from cells, directory and metadata: */
    uint32_t cell_id;            /* 0: in no cell */
    enum cluster_role directory; /* NONE or VOTER */
    enum cluster_role metadata;  /* NONE, VOTER or STANDBY */
};

struct cluster_cell {
    uint32_t id;
    size_t region;                          /* index into regions */
    uint64_t members[CLUSTER_CELL_MEMBERS]; /* node ids, file order */
};

struct cluster_config {
    char name[CONFIG_NAME_MAX]; /* "cluster"; "" if not given */
    uint8_t username_hash_key[CONFIG_KEY_MAX];
    size_t username_hash_key_len;
    char regions[CLUSTER_MAX_REGIONS][CLUSTER_REGION_MAX];
    size_t n_regions;
    struct cluster_node *nodes; /* n_nodes, file order; owned */
    size_t n_nodes;
    struct cluster_cell *cells; /* n_cells, file order; owned */
    size_t n_cells;
    uint64_t directory_voters[CLUSTER_GROUP_VOTERS];
    uint64_t metadata_voters[CLUSTER_GROUP_VOTERS];
    uint64_t metadata_standbys[CLUSTER_MAX_STANDBYS];
    size_t n_metadata_standbys;
    struct config_raft raft;
    struct config_limits limits;
    bool compression; /* RocksDB compression; default true */
    int log_level;    /* enum log_level, or -1 if not given */
    /* Lookup indexes (positions in nodes/cells sorted by id); owned. */
    uint32_t *node_order;
    uint32_t *cell_order;
};

/* One member of a group as every node of the group sees it. */
struct cluster_member {
    uint64_t id;
    size_t region; /* index into regions */
    enum cluster_role role;
    char raft_address[CONFIG_ADDRESS_MAX]; /* of this group */
    char client_address[CONFIG_ADDRESS_MAX];
};

/* One group a node hosts. */
struct cluster_group_view {
    enum cluster_group_kind kind;
    uint32_t group_id;                     /* the cell id; 0 for directory and metadata */
    enum cluster_role role;                /* this node's: VOTER or STANDBY */
    char raft_address[CONFIG_ADDRESS_MAX]; /* this node's, in this group */
    char data_dir[CONFIG_PATH_MAX];        /* <data_dir>/cell, /directory, /metadata */
    struct cluster_member members[CLUSTER_GROUP_MAX_MEMBERS]; /* voters first */
    size_t n_members;
};

/* What one node runs: derived by cluster_config_node(). About 30 KiB. */
struct cluster_node_view {
    uint64_t node_id;
    char region[CLUSTER_REGION_MAX];
    char zone[CONFIG_NAME_MAX];
    char client_address[CONFIG_ADDRESS_MAX];
    char data_dir[CLUSTER_DATA_DIR_MAX];
    /* In the order cell, directory, metadata; only those hosted. */
    struct cluster_group_view groups[3];
    size_t n_groups;
};

/*
 * Read and check the cluster file at path into *out. Returns 0, or GS_EINVAL
 * (GS_ENOMEM) with one line in errmsg naming the offending field, e.g.
 *   cluster: cells[2].members[1]: node 9 is in region eu, the cell is in us-east
 * On success the caller owns *out and releases it with cluster_config_free();
 * on error there is nothing to free (*out is zeroed).
 */
int cluster_config_load(const char *path, struct cluster_config *out, char *errmsg, size_t len);

/* Same, from a JSON text in memory (name is used in JSON syntax errors). */
int cluster_config_parse(const char *text, const char *name, struct cluster_config *out,
                         char *errmsg, size_t len);

/* Release what a successful load allocated; *c is zeroed. NULL is ok, and so
 * is a zeroed or already freed config. */
void cluster_config_free(struct cluster_config *c);

/*
 * Derive what node node_id runs into *out. Returns 0, or GS_ENOTFOUND with a
 * line in errmsg if the file has no such node. The node hosts at least one
 * group (the loader guarantees it).
 */
int cluster_config_node(const struct cluster_config *c, uint64_t node_id,
                        struct cluster_node_view *out, char *errmsg, size_t len);

/*
 * Members of a group: kind and group_id (the cell id; ignored for the
 * directory and metadata) -> out[0..*n), voters first, then standbys, each in
 * file order. cap >= CLUSTER_GROUP_MAX_MEMBERS always suffices. Returns 0,
 * GS_ENOTFOUND for an unknown cell, or GS_EINVAL if cap is too small.
 */
int cluster_config_group_members(const struct cluster_config *c, enum cluster_group_kind kind,
                                 uint32_t group_id, struct cluster_member *out, size_t cap,
                                 size_t *n);

/* The node with this id, or NULL. O(log n). */
const struct cluster_node *cluster_config_find_node(const struct cluster_config *c,
                                                    uint64_t node_id);

/* The cell with this id, or NULL. O(log n). */
const struct cluster_cell *cluster_config_find_cell(const struct cluster_config *c,
                                                    uint32_t cell_id);

/* The index of a region name in c->regions, or -1. */
int cluster_config_find_region(const struct cluster_config *c, const char *region);

/* "cell", "directory", "metadata" (GroupStatus.kind); "voter", "standby",
 * "none" (GroupStatus.role). */
const char *cluster_group_kind_name(enum cluster_group_kind kind);
const char *cluster_role_name(enum cluster_role role);

#endif /* GS_NET_CLUSTER_CONFIG_H */
