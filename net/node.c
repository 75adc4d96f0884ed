/*
 * The node process (see node.h): start the pieces in dependency order,
 * run the main loop, stop them in reverse.
 *
 * Start: data directories -> cell FSM -> Raft group (its own loop thread)
 * -> client server on the main loop -> signal watchers -> "ready".
 *
 * Stop, on SIGTERM/SIGINT, on the main loop:
 *   1. server_stop: no new connections, sessions closed; requests the group
 *      still holds become orphans. The server no longer calls the group.
 *   2. group_stop (blocks this thread until the group thread has joined):
 *      every request it held is posted, failed, to the reply mailbox.
 *   3. server_close: the mailbox delivers those last answers (freeing the
 *      orphans) and the server frees itself when its handles are closed.
 *   4. the loop runs dry; then the FSM is closed (it syncs its WAL).
 * The order matters: the group must stop before the mailbox it answers
 * into closes, and the FSM must outlive the group that applies to it.
 */
#include "node.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "../engine/cell_fsm.h"
#include "../engine/log.h"
#include "../raft/group.h"
#include "geoscale/errors.h"
#include "server.h"

struct gs_node {
    const struct node_config *cfg;
    uv_loop_t loop;
    struct cell_fsm *fsm;
    struct group *group;
    struct server *server;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool signals_open;
    bool stopping;
    int exit_status;
};

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
    group_stop(node->group);
    node->group = NULL;
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

static int node_start(struct gs_node *node)
{
    const struct node_config *cfg = node->cfg;
    char path[CONFIG_PATH_MAX + 16];
    char errmsg[512];

    int rv = node_mkdirs(cfg->data_dir);
    if (rv != 0) {
        log_error("node", "event=start_failed step=data_dir path=%s error=\"%s\"", cfg->data_dir,
                  strerror(-rv));
        return GS_EIO;
    }

    snprintf(path, sizeof path, "%s/db", cfg->data_dir);
    struct cell_fsm_options fsm_opts = {
        .db_path = path,
        .cell_id = cfg->cell_id,
        .username_key = cfg->username_hash_key,
        .username_key_len = cfg->username_hash_key_len,
        .compression = cfg->compression,
    };
    rv = cell_fsm_open(&fsm_opts, &node->fsm, errmsg, sizeof errmsg);
    if (rv != 0) {
        log_error("node", "event=start_failed step=cell_fsm code=%s detail=\"%s\"",
                  gs_error_name(rv), errmsg);
        return rv;
    }

    snprintf(path, sizeof path, "%s/raft", cfg->data_dir);
    rv = node_mkdirs(path);
    if (rv != 0) {
        log_error("node", "event=start_failed step=raft_dir path=%s error=\"%s\"", path,
                  strerror(-rv));
        return GS_EIO;
    }
    struct group_peer peers[CONFIG_MAX_PEERS];
    memset(peers, 0, sizeof peers);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        peers[i].id = cfg->peers[i].id;
        snprintf(peers[i].raft_address, sizeof peers[i].raft_address, "%s",
                 cfg->peers[i].raft_address);
        snprintf(peers[i].client_address, sizeof peers[i].client_address, "%s",
                 cfg->peers[i].client_address);
    }
    char checkpoint_dir[CONFIG_PATH_MAX + 16];
    char incoming_dir[CONFIG_PATH_MAX + 16];
    node_checkpoint_dir(cfg, checkpoint_dir, sizeof checkpoint_dir);
    snprintf(incoming_dir, sizeof incoming_dir, "%s/" NODE_INCOMING_SUBDIR, cfg->data_dir);
    struct group_config gcfg = {
        .node_id = cfg->node_id,
        .region = cfg->region,
        .group_id = cfg->cell_id,
        .raft_dir = path,
        .checkpoint_dir = checkpoint_dir,
        .incoming_dir = incoming_dir,
        .peers = peers,
        .n_peers = cfg->n_peers,
        .ops = &cell_sm_ops,
        .sm = node->fsm,
        .election_timeout_ms = cfg->raft.election_timeout_ms,
        .heartbeat_timeout_ms = cfg->raft.heartbeat_timeout_ms,
        .snapshot_threshold = cfg->raft.snapshot_threshold,
        .snapshot_trailing = cfg->raft.snapshot_trailing,
    };
    rv = group_start(&gcfg, &node->group, errmsg, sizeof errmsg);
    if (rv != 0) {
        log_error("node", "event=start_failed step=group code=%s detail=\"%s\"", gs_error_name(rv),
                  errmsg);
        node->group = NULL;
        return rv;
    }

    struct group *groups[METHOD_GROUPS] = {[METHOD_GROUP_CELL] = node->group};
    rv = server_start(&node->loop, cfg, groups, &node->server, errmsg, sizeof errmsg);
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
             " client_address=%s raft_address=%s peers=%zu",
             cfg->node_id, cfg->region, cfg->cell_id, cfg->client_address, cfg->raft_address,
             cfg->n_peers);
    return 0;
}

void node_checkpoint_dir(const struct node_config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" NODE_CHECKPOINT_SUBDIR, cfg->data_dir);
}

int node_run(const struct node_config *cfg)
{
    struct gs_node node = {.cfg = cfg};
    int rv = uv_loop_init(&node.loop);
    if (rv != 0) {
        log_error("node", "event=start_failed step=loop error=%s", uv_err_name(rv));
        return 1;
    }
    rv = node_start(&node);
    if (rv != 0) {
        /* Unwind what started, through the same path as a normal stop. */
        node.stopping = true;
        if (node.group != NULL) {
            group_stop(node.group);
            node.group = NULL;
        }
        node.exit_status = 1;
    }
    uv_run(&node.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&node.loop);
    if (rv != 0) {
        log_error("node", "event=loop_not_idle error=%s", uv_err_name(rv));
    }
    cell_fsm_close(node.fsm);
    if (node.exit_status == 0) {
        log_info("node", "event=stopped node_id=%" PRIu64, cfg->node_id);
    }
    return node.exit_status;
}
