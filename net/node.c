/*
 * The node process (see node.h): start the pieces in dependency order,
 * run the main loop, stop them in reverse.
 *
 * A node hosts up to three Raft groups: its cell, a directory replica and a
 * metadata replica (docs/CLUSTER.md). Each has its own directory
 * (db/, raft/, checkpoints/, incoming/), state machine and loop thread.
 *
 * Start: for each group: data directories -> state machine -> Raft group
 * (its own loop thread); then the client server on the main loop -> signal
 * watchers -> "ready".
 *
 * Stop, on SIGTERM/SIGINT, on the main loop:
 *   1. server_stop: no new connections, sessions closed; requests the group
 *      still holds become orphans. The server no longer calls the group.
 *   2. group_stop of each group (blocks this thread until the group thread
 *      has joined): every request it held is posted, failed, to the reply
 *      mailbox.
 *   3. server_close: the mailbox delivers those last answers (freeing the
 *      orphans) and the server frees itself when its handles are closed.
 *   4. the loop runs dry; then the state machines are closed (each syncs its
 *      WAL).
 * The order matters: the group must stop before the mailbox it answers
 * into closes, and the FSM must outlive the group that applies to it.
 */
#include "node.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "../engine/cell_fsm.h"
#include "../engine/directory_fsm.h"
#include "../engine/log.h"
#include "../engine/metadata_fsm.h"
#include "../raft/directory_sm.h"
#include "../raft/group.h"
#include "../raft/metadata_sm.h"
#include "geoscale/errors.h"
#include "server.h"

/* One group the node hosts, as the node starts it. */
struct node_group_spec {
    enum method_group slot;
    uint32_t group_id;
    char data_dir[CONFIG_PATH_MAX + 16]; /* db/, raft/, checkpoints/, incoming/ */
    struct group_peer peers[CONFIG_MAX_PEERS > 16 ? CONFIG_MAX_PEERS : 16];
    size_t n_peers;
};

struct node_group {
    void *sm;       /* the state machine; NULL when not hosted */
    struct group *group;
};

struct gs_node {
    const struct node_config *cfg;
    const struct cluster_config *cluster; /* NULL for a lone cell */
    const struct node_group_spec *specs;
    size_t n_specs;
    uv_loop_t loop;
    struct node_group groups[METHOD_GROUPS];
    struct server *server;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool signals_open;
    bool stopping;
    int exit_status;
};

static const struct group_sm_ops *const node_ops[METHOD_GROUPS] = {
    [METHOD_GROUP_CELL] = &cell_sm_ops,
    [METHOD_GROUP_DIRECTORY] = &directory_sm_ops,
    [METHOD_GROUP_METADATA] = &metadata_sm_ops,
};

static void node_sm_close(enum method_group slot, void *sm)
{
    switch (slot) {
    case METHOD_GROUP_CELL:
        cell_fsm_close(sm);
        break;
    case METHOD_GROUP_DIRECTORY:
        directory_fsm_close(sm);
        break;
    case METHOD_GROUP_METADATA:
        metadata_fsm_close(sm);
        break;
    default:
        break;
    }
}

static int node_sm_open(const struct node_config *cfg, const struct node_group_spec *spec,
                        bool lone, const char *db_path, void **sm, char *errmsg,
                        size_t errmsg_len)
{
    switch (spec->slot) {
    case METHOD_GROUP_CELL: {
        struct cell_fsm_options o = {
            .db_path = db_path,
            .cell_id = spec->group_id,
            .username_key = cfg->username_hash_key,
            .username_key_len = cfg->username_hash_key_len,
            .compression = cfg->compression,
            .region = cfg->region,
            .lone = lone,
        };
        return cell_fsm_open(&o, (struct cell_fsm **)sm, errmsg, errmsg_len);
    }
    case METHOD_GROUP_DIRECTORY: {
        struct directory_fsm_options o = {.db_path = db_path, .compression = cfg->compression};
        return directory_fsm_open(&o, (struct directory_fsm **)sm, errmsg, errmsg_len);
    }
    case METHOD_GROUP_METADATA: {
        struct metadata_fsm_options o = {.db_path = db_path, .compression = cfg->compression};
        return metadata_fsm_open(&o, (struct metadata_fsm **)sm, errmsg, errmsg_len);
    }
    default:
        snprintf(errmsg, errmsg_len, "no such group");
        return GS_EINVAL;
    }
}

static void node_stop_groups(struct gs_node *node)
{
    for (int k = 0; k < METHOD_GROUPS; k++) {
        if (node->groups[k].group != NULL) {
            group_stop(node->groups[k].group);
            node->groups[k].group = NULL;
        }
    }
}

static void node_close_sms(struct gs_node *node)
{
    for (int k = 0; k < METHOD_GROUPS; k++) {
        if (node->groups[k].sm != NULL) {
            node_sm_close((enum method_group)k, node->groups[k].sm);
            node->groups[k].sm = NULL;
        }
    }
}

/* mkdir -p. Returns 0 or a negative errno. */
static int node_mkdirs(const char *path)
{
    char buf[CONFIG_PATH_MAX + 16];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
            return -errno;
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        return -errno;
    }
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static void node_server_closed_cb(void *data)
{
    struct gs_node *node = data;
    node->server = NULL;
}

static void node_stop(struct gs_node *node, const char *why)
{
    if (node->stopping) {
        return;
    }
    node->stopping = true;
    log_info("node", "event=stopping node_id=%" PRIu64 " reason=%s", node->cfg->node_id, why);
    if (node->server != NULL) {
        server_stop(node->server);
    }
    node_stop_groups(node);
    if (node->server != NULL) {
        server_close(node->server, node_server_closed_cb, node);
    }
    if (node->signals_open) {
        /* Closing the watchers restores the default action: a second
         * signal during a slow stop ends the process at once. */
        uv_close((uv_handle_t *)&node->sigterm, NULL);
        uv_close((uv_handle_t *)&node->sigint, NULL);
        node->signals_open = false;
    }
}

static void node_signal_cb(uv_signal_t *sig, int signum)
{
    struct gs_node *node = sig->data;
    node_stop(node, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Open the state machine of one group and start its Raft group. */
static int node_start_group(struct gs_node *node, const struct node_group_spec *spec)
{
    const struct node_config *cfg = node->cfg;
    const struct group_sm_ops *ops = node_ops[spec->slot];
    char db_path[CONFIG_PATH_MAX + 32];
    char raft_dir[CONFIG_PATH_MAX + 32];
    char checkpoint_dir[CONFIG_PATH_MAX + 32];
    char incoming_dir[CONFIG_PATH_MAX + 32];
    char errmsg[512];
    struct node_group *ng = &node->groups[spec->slot];

    snprintf(db_path, sizeof db_path, "%s/db", spec->data_dir);
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", spec->data_dir);
    snprintf(checkpoint_dir, sizeof checkpoint_dir, "%s/" NODE_CHECKPOINT_SUBDIR, spec->data_dir);
    snprintf(incoming_dir, sizeof incoming_dir, "%s/" NODE_INCOMING_SUBDIR, spec->data_dir);
    int rv = node_mkdirs(raft_dir);
    if (rv != 0) {
        log_error("node", "event=start_failed group=%s step=dirs path=%s error=\"%s\"", ops->kind,
                  raft_dir, strerror(-rv));
        return GS_EIO;
    }
    rv = node_sm_open(cfg, spec, node->cluster == NULL, db_path, &ng->sm, errmsg, sizeof errmsg);
    if (rv != 0) {
        ng->sm = NULL;
        log_error("node", "event=start_failed group=%s step=state_machine code=%s detail=\"%s\"",
                  ops->kind, gs_error_name(rv), errmsg);
        return rv;
    }
    struct group_config gcfg = {
        .node_id = cfg->node_id,
        .region = cfg->region,
        .group_id = spec->group_id,
        .raft_dir = raft_dir,
        .checkpoint_dir = checkpoint_dir,
        .incoming_dir = incoming_dir,
        .peers = spec->peers,
        .n_peers = spec->n_peers,
        .ops = ops,
        .sm = ng->sm,
        .election_timeout_ms = cfg->raft.election_timeout_ms,
        .heartbeat_timeout_ms = cfg->raft.heartbeat_timeout_ms,
        .snapshot_threshold = cfg->raft.snapshot_threshold,
        .snapshot_trailing = cfg->raft.snapshot_trailing,
        .log_memory_mib = cfg->raft.log_memory_mib,
        .unsafe_local_reads = cfg->unsafe_local_reads,
    };
    rv = group_start(&gcfg, &ng->group, errmsg, sizeof errmsg);
    if (rv != 0) {
        ng->group = NULL;
        log_error("node", "event=start_failed group=%s step=group code=%s detail=\"%s\"", ops->kind,
                  gs_error_name(rv), errmsg);
        return rv;
    }
    return 0;
}

static int node_start(struct gs_node *node)
{
    const struct node_config *cfg = node->cfg;
    char errmsg[512];
    int rv;

    for (size_t i = 0; i < node->n_specs; i++) {
        rv = node_start_group(node, &node->specs[i]);
        if (rv != 0) {
            return rv;
        }
    }

    struct group *groups[METHOD_GROUPS];
    for (int k = 0; k < METHOD_GROUPS; k++) {
        groups[k] = node->groups[k].group;
    }
    rv = server_start(&node->loop, cfg, node->cluster, groups, &node->server, errmsg,
                      sizeof errmsg);
    if (rv != 0) {
        log_error("node", "event=start_failed step=server code=%s detail=\"%s\"", gs_error_name(rv),
                  errmsg);
        node->server = NULL;
        return rv;
    }

    uv_signal_init(&node->loop, &node->sigterm);
    uv_signal_init(&node->loop, &node->sigint);
    node->sigterm.data = node;
    node->sigint.data = node;
    node->signals_open = true;
    uv_signal_start(&node->sigterm, node_signal_cb, SIGTERM);
    uv_signal_start(&node->sigint, node_signal_cb, SIGINT);

    log_info("node",
             "event=ready node_id=%" PRIu64 " region=%s cell_id=%" PRIu32
             " client_address=%s raft_address=%s peers=%zu groups=%zu",
             cfg->node_id, cfg->region, cfg->cell_id, cfg->client_address, cfg->raft_address,
             cfg->n_peers, node->n_specs);
    return 0;
}

void node_checkpoint_dir(const struct node_config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" NODE_CHECKPOINT_SUBDIR, cfg->data_dir);
}

static int node_run_specs(const struct node_config *cfg, const struct cluster_config *cluster,
                          const struct node_group_spec *specs, size_t n_specs)
{
    struct gs_node node = {.cfg = cfg, .cluster = cluster, .specs = specs, .n_specs = n_specs};
    int rv = uv_loop_init(&node.loop);
    if (rv != 0) {
        log_error("node", "event=start_failed step=loop error=%s", uv_err_name(rv));
        return 1;
    }
    rv = node_start(&node);
    if (rv != 0) {
        /* Unwind what started, through the same path as a normal stop. */
        node.stopping = true;
        node_stop_groups(&node);
        node.exit_status = 1;
    }
    uv_run(&node.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&node.loop);
    if (rv != 0) {
        log_error("node", "event=loop_not_idle error=%s", uv_err_name(rv));
    }
    node_close_sms(&node);
    if (node.exit_status == 0) {
        log_info("node", "event=stopped node_id=%" PRIu64, cfg->node_id);
    }
    return node.exit_status;
}

int node_run(const struct node_config *cfg)
{
    /* A lone cell: the node's data_dir is the cell group's. */
    static struct node_group_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.slot = METHOD_GROUP_CELL;
    spec.group_id = cfg->cell_id;
    snprintf(spec.data_dir, sizeof spec.data_dir, "%s", cfg->data_dir);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        spec.peers[i].id = cfg->peers[i].id;
        spec.peers[i].role = GROUP_ROLE_VOTER;
        snprintf(spec.peers[i].raft_address, sizeof spec.peers[i].raft_address, "%s",
                 cfg->peers[i].raft_address);
        snprintf(spec.peers[i].client_address, sizeof spec.peers[i].client_address, "%s",
                 cfg->peers[i].client_address);
    }
    spec.n_peers = cfg->n_peers;
    return node_run_specs(cfg, NULL, &spec, 1);
}

static enum method_group node_slot_of(enum cluster_group_kind kind)
{
    switch (kind) {
    case CLUSTER_GROUP_DIRECTORY:
        return METHOD_GROUP_DIRECTORY;
    case CLUSTER_GROUP_METADATA:
        return METHOD_GROUP_METADATA;
    default:
        return METHOD_GROUP_CELL;
    }
}

static int node_config_from_cluster(const struct cluster_config *cc, uint64_t node_id,
                             struct node_config *cfg, struct node_group_spec **specs,
                             size_t *n_specs, char *errmsg, size_t errmsg_len)
{
    struct cluster_node_view *view = calloc(1, sizeof *view);
    struct node_group_spec *out = calloc(3, sizeof *out);
    int rv = GS_ENOMEM;
    if (view == NULL || out == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        goto err;
    }
    rv = cluster_config_node(cc, node_id, view, errmsg, errmsg_len);
    if (rv != 0) {
        goto err;
    }
    config_defaults(cfg);
    cfg->node_id = node_id;
    snprintf(cfg->region, sizeof cfg->region, "%s", view->region);
    snprintf(cfg->zone, sizeof cfg->zone, "%s", view->zone);
    snprintf(cfg->client_address, sizeof cfg->client_address, "%s", view->client_address);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", view->data_dir);
    memcpy(cfg->username_hash_key, cc->username_hash_key, cc->username_hash_key_len);
    cfg->username_hash_key_len = cc->username_hash_key_len;
    cfg->raft = cc->raft;
    cfg->limits = cc->limits;
    cfg->compression = cc->compression;
    cfg->log_level = cc->log_level;
    for (size_t g = 0; g < view->n_groups; g++) {
        const struct cluster_group_view *gv = &view->groups[g];
        struct node_group_spec *spec = &out[g];
        spec->slot = node_slot_of(gv->kind);
        spec->group_id = gv->group_id;
        snprintf(spec->data_dir, sizeof spec->data_dir, "%s", gv->data_dir);
        if (gv->n_members > sizeof spec->peers / sizeof spec->peers[0]) {
            snprintf(errmsg, errmsg_len, "group %s has too many members",
                     cluster_group_kind_name(gv->kind));
            rv = GS_EINVAL;
            goto err;
        }
        for (size_t m = 0; m < gv->n_members; m++) {
            spec->peers[m].id = gv->members[m].id;
            spec->peers[m].role =
                gv->members[m].role == CLUSTER_ROLE_STANDBY ? GROUP_ROLE_STANDBY : GROUP_ROLE_VOTER;
            snprintf(spec->peers[m].raft_address, sizeof spec->peers[m].raft_address, "%s",
                     gv->members[m].raft_address);
            snprintf(spec->peers[m].client_address, sizeof spec->peers[m].client_address, "%s",
                     gv->members[m].client_address);
        }
        spec->n_peers = gv->n_members;
        if (gv->kind == CLUSTER_GROUP_CELL) {
            /* The cell's fields of the node config: what the server uses.
             * (The checkpoint transfer finds every hosted group, the cell
             * included, in the cluster file: net/transfer.c.) */
            cfg->cell_id = gv->group_id;
            snprintf(cfg->raft_address, sizeof cfg->raft_address, "%s", gv->raft_address);
            snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", gv->data_dir);
            for (size_t m = 0; m < gv->n_members && m < CONFIG_MAX_PEERS; m++) {
                cfg->peers[m].id = gv->members[m].id;
                snprintf(cfg->peers[m].raft_address, sizeof cfg->peers[m].raft_address, "%s",
                         gv->members[m].raft_address);
                snprintf(cfg->peers[m].client_address, sizeof cfg->peers[m].client_address, "%s",
                         gv->members[m].client_address);
            }
            cfg->n_peers = gv->n_members;
        }
    }
    *specs = out;
    *n_specs = view->n_groups;
    free(view);
    return 0;
err:
    free(view);
    free(out);
    return rv;
}

int node_run_cluster(const struct cluster_config *cc, uint64_t node_id)
{
    static struct node_config cfg; /* large; lives as long as the process */
    struct node_group_spec *specs = NULL;
    size_t n_specs = 0;
    char errmsg[512];
    int rv = node_config_from_cluster(cc, node_id, &cfg, &specs, &n_specs, errmsg, sizeof errmsg);
    if (rv != 0) {
        log_error("node", "event=start_failed step=cluster_config detail=\"%s\"", errmsg);
        return 2;
    }
    rv = node_run_specs(&cfg, cc, specs, n_specs);
    free(specs);
    return rv;
}
