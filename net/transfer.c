/*
 * Serving checkpoints to a group's own replicas (CheckpointInfo,
 * CheckpointChunk; the pulling side is raft/snapshot_pull.c). Every group a
 * node hosts keeps checkpoints (its cell, its directory or metadata replica,
 * voter or standby), each under its group directory's checkpoints/.
 *
 * A request names the group: `group` (CELL when absent, for requests that
 * named a cell only) and `cell_id` (the cell; 0 for the directory and the
 * metadata group), and the requesting node (`node_id`, 0 if not said).
 *
 * Permission, on the server's loop before any file is touched:
 *   1. the group must be one this node hosts (the cluster file, or the lone
 *      cell's config), else PERMISSION_DENIED;
 *   2. the requester must be a member of that group, voter or standby: the
 *      connection's peer IP must be the IP of one of the group's members (of
 *      its raft or client address) and, if the request says which node it
 *      is, of that very member. Else PERMISSION_DENIED. A cell's checkpoint
 *      is its users' PII and never leaves the cell's members; the
 *      directory's and the metadata group's go to their members only.
 * (Transport authentication comes with node identities; until then the
 * peer IP is what is enforced, and node_id narrows it on shared hosts.)
 *
 * Both calls read files: listing may hash gigabytes the first time, a chunk
 * reads up to 1 MiB. Neither may run on the server's loop, so each runs on
 * libuv's thread pool (uv_queue_work) while the request is held as if it
 * were in the group (REQ_IN_GROUP: its deadline and the orphaning of a
 * closed connection work the same way); the answer is sent from the
 * after-work callback on the loop.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/checkpoint.h"
#include "../engine/log.h"
#include "cluster_config.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "node.h"
#include "session.h"

#define TRANSFER_MAX_CHUNK (1024 * 1024)

struct transfer_work {
    uv_work_t work; /* work.data = this */
    struct server *srv;
    struct server_request *req;
    ProtobufCMessage *msg; /* the unpacked request; read on the pool thread */
    char root[CONFIG_PATH_MAX + 16];
    const char *kind;  /* of the group (static): its checkpoints say the same */
    uint32_t group_id; /* the cell id; 0 for directory and metadata */
    int slot;          /* the group's METHOD_GROUP_* on this node */
    /* result, filled on the pool thread */
    uint64_t want_index; /* no checkpoint this new: ask the group for one */
    int status;
    uint8_t *body;
    size_t len;
};

/* A member of the requested group, as far as permission goes. */
struct transfer_member {
    uint64_t id;
    const char *raft_address;
    const char *client_address;
};

/* The group a request names, resolved on this node. */
struct transfer_target {
    const char *kind; /* "cell", "directory", "metadata" */
    char root[CONFIG_PATH_MAX + 16];
    struct transfer_member members[CLUSTER_GROUP_MAX_MEMBERS];
    size_t n_members;
};

/* The IP of host (an IP literal or "localhost") as text, normalised. */
static int host_ip(const char *host, char *out, size_t len)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return inet_ntop(AF_INET, &a4, out, (socklen_t)len) != NULL ? 0 : -1;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        return inet_ntop(AF_INET6, &a6, out, (socklen_t)len) != NULL ? 0 : -1;
    }
    return -1;
}

/* The peer IP of the session, as text. 0 or -1. */
static int transfer_peer_ip(struct session *s, char *ip, size_t len)
{
    struct sockaddr_storage sa;
    int sa_len = sizeof sa;
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sa, &sa_len) != 0) {
        return -1;
    }
    const void *addr = NULL;
    if (sa.ss_family == AF_INET) {
        addr = &((struct sockaddr_in *)&sa)->sin_addr;
    } else if (sa.ss_family == AF_INET6) {
        addr = &((struct sockaddr_in6 *)&sa)->sin6_addr;
    } else {
        return -1;
    }
    return inet_ntop(sa.ss_family, addr, ip, (socklen_t)len) != NULL ? 0 : -1;
}

/* Is one of the member's addresses at ip? */
static bool transfer_member_at(const struct transfer_member *m, const char *ip)
{
    const char *addresses[2] = {m->raft_address, m->client_address};
    for (int k = 0; k < 2; k++) {
        char host[CONFIG_ADDRESS_MAX];
        char member_ip[INET6_ADDRSTRLEN];
        int port;
        if (addresses[k] != NULL && addresses[k][0] != '\0' &&
            config_split_address(addresses[k], host, sizeof host, &port) == 0 &&
            host_ip(host, member_ip, sizeof member_ip) == 0 && strcmp(member_ip, ip) == 0) {
            return true;
        }
    }
    return false;
}

/* Is the requester (peer IP ip, claiming node_id, 0 = not said) a member
 * of the target group? */
static bool transfer_requester_is_member(const struct transfer_target *t, const char *ip,
                                         uint64_t node_id)
{
    for (size_t i = 0; i < t->n_members; i++) {
        const struct transfer_member *m = &t->members[i];
        if ((node_id == 0 || m->id == node_id) && transfer_member_at(m, ip)) {
            return true;
        }
    }
    return false;
}

static enum cluster_group_kind transfer_cluster_kind(Geoscale__CheckpointInfoRequest__Group group)
{
    switch (group) {
    case GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY:
        return CLUSTER_GROUP_DIRECTORY;
    case GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__METADATA:
        return CLUSTER_GROUP_METADATA;
    default:
        return CLUSTER_GROUP_CELL;
    }
}

/*
 * Resolve the group named by (group, cell_id) among the groups this node
 * hosts: its checkpoint root and its members. The cluster view is kept in
 * *view (caller memory) since the members point into it. 0, GS_ENOTFOUND
 * (not a group of this node, or an unknown kind) or GS_ENOMEM.
 */
static int transfer_resolve(struct server *srv, Geoscale__CheckpointInfoRequest__Group group,
                            uint32_t cell_id, struct cluster_node_view *view,
                            struct transfer_target *t)
{
    const struct node_config *cfg = srv->cfg;
    memset(t, 0, sizeof *t);
    if (group != GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL &&
        group != GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY &&
        group != GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__METADATA) {
        return GS_ENOTFOUND;
    }
    if (srv->cluster == NULL) {
        /* A lone cell: the node's config is the cell's. */
        if (group != GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL || cell_id != cfg->cell_id) {
            return GS_ENOTFOUND;
        }
        t->kind = "cell";
        node_checkpoint_dir(cfg, t->root, sizeof t->root);
        for (size_t i = 0; i < cfg->n_peers && i < CLUSTER_GROUP_MAX_MEMBERS; i++) {
            t->members[i].id = cfg->peers[i].id;
            t->members[i].raft_address = cfg->peers[i].raft_address;
            t->members[i].client_address = cfg->peers[i].client_address;
            t->n_members++;
        }
        return 0;
    }
    char errmsg[128];
    if (cluster_config_node(srv->cluster, cfg->node_id, view, errmsg, sizeof errmsg) != 0) {
        return GS_ENOTFOUND;
    }
    enum cluster_group_kind kind = transfer_cluster_kind(group);
    for (size_t g = 0; g < view->n_groups; g++) {
        const struct cluster_group_view *gv = &view->groups[g];
        if (gv->kind != kind || gv->group_id != cell_id) {
            continue;
        }
        t->kind = cluster_group_kind_name(kind);
        snprintf(t->root, sizeof t->root, "%s/" NODE_CHECKPOINT_SUBDIR, gv->data_dir);
        for (size_t m = 0; m < gv->n_members && m < CLUSTER_GROUP_MAX_MEMBERS; m++) {
            t->members[m].id = gv->members[m].id;
            t->members[m].raft_address = gv->members[m].raft_address;
            t->members[m].client_address = gv->members[m].client_address;
            t->n_members++;
        }
        return 0;
    }
    return GS_ENOTFOUND;
}

static void transfer_pack(struct transfer_work *w, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    w->body = malloc(len > 0 ? len : 1);
    if (w->body == NULL) {
        w->status = GS_ENOMEM;
        return;
    }
    w->len = protobuf_c_message_pack(msg, w->body);
    w->status = 0;
}

static void transfer_info(struct transfer_work *w, const Geoscale__CheckpointInfoRequest *rq)
{
    struct checkpoint_info info;
    char errmsg[256];
    int rv = checkpoint_latest(w->root, &info, errmsg, sizeof errmsg);
    if (rv != 0) {
        w->status = rv;
        if (rv == GS_ENOTFOUND) {
            w->want_index = rq->min_index > 0 ? rq->min_index : 1;
        }
        return;
    }
    if (strcmp(info.kind, w->kind) != 0 || info.identity != w->group_id) {
        /* Not this group's checkpoint: nothing to offer. */
        log_error("transfer", "event=checkpoint_mismatch group=%s found=%s", w->kind, info.kind);
        checkpoint_info_free(&info);
        w->status = GS_ENOTFOUND;
        return;
    }
    if (info.applied_index < rq->min_index) {
        /* Snapshots make checkpoints seldom (raft/group.c): one this new
         * is made on request, for the puller's next try. */
        checkpoint_info_free(&info);
        w->want_index = rq->min_index;
        w->status = GS_ENOTFOUND;
        return;
    }
    Geoscale__CheckpointFile *files = calloc(info.n_files + 1, sizeof *files);
    Geoscale__CheckpointFile **ptrs = calloc(info.n_files + 1, sizeof *ptrs);
    if (files == NULL || ptrs == NULL) {
        w->status = GS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < info.n_files; i++) {
        geoscale__checkpoint_file__init(&files[i]);
        files[i].name = info.files[i].name;
        files[i].size = info.files[i].size;
        files[i].blake2b.data = info.files[i].hash;
        files[i].blake2b.len = CHECKPOINT_HASH_LEN;
        ptrs[i] = &files[i];
    }
    Geoscale__CheckpointInfoResponse resp = GEOSCALE__CHECKPOINT_INFO_RESPONSE__INIT;
    resp.format = CHECKPOINT_FORMAT;
    resp.cell_id = (uint32_t)info.identity;
    resp.applied_index = info.applied_index;
    resp.n_files = info.n_files;
    resp.files = ptrs;
    transfer_pack(w, &resp.base);
    log_info("transfer", "event=checkpoint_offered group=%s index=%" PRIu64 " files=%zu", info.kind,
             info.applied_index, info.n_files);
out:
    free(files);
    free(ptrs);
    checkpoint_info_free(&info);
}

static void transfer_chunk(struct transfer_work *w, const Geoscale__CheckpointChunkRequest *rq)
{
    size_t want =
        rq->max_len > 0 && rq->max_len < TRANSFER_MAX_CHUNK ? rq->max_len : TRANSFER_MAX_CHUNK;
    uint8_t *buf = malloc(want);
    if (buf == NULL) {
        w->status = GS_ENOMEM;
        return;
    }
    size_t n = 0;
    int rv = checkpoint_read_chunk(w->root, rq->applied_index, rq->name, rq->offset, buf, want, &n);
    if (rv != 0) {
        free(buf);
        w->status = rv;
        return;
    }
    Geoscale__CheckpointChunkResponse resp = GEOSCALE__CHECKPOINT_CHUNK_RESPONSE__INIT;
    resp.data.data = buf;
    resp.data.len = n;
    transfer_pack(w, &resp.base);
    free(buf);
}

static void transfer_work_cb(uv_work_t *work)
{
    struct transfer_work *w = work->data;
    if (w->req->header.method == GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO) {
        transfer_info(w, (const Geoscale__CheckpointInfoRequest *)w->msg);
    } else {
        transfer_chunk(w, (const Geoscale__CheckpointChunkRequest *)w->msg);
    }
}

static void transfer_after_cb(uv_work_t *work, int status)
{
    struct transfer_work *w = work->data;
    struct server *srv = w->srv;
    struct server_request *req = w->req;
    if (status != 0 && w->status == 0) {
        w->status = GS_ESHUTDOWN; /* cancelled */
    }
    if (w->want_index != 0 && srv->groups[w->slot] != NULL) {
        group_want_checkpoint(srv->groups[w->slot], w->want_index);
    }
    if (req->state == REQ_ORPHANED) {
        request_release(req);
    } else {
        request_reply(req, w->status, 0, w->status == 0 ? w->body : NULL, w->len);
    }
    protobuf_c_message_free_unpacked(w->msg, NULL);
    free(w->body);
    free(w);
    server_flush(srv);
    server_handle_closed(srv);
}

/* Check the request against the group it names; 0 (then w->root is set) or
 * the status to answer. */
static int transfer_admit(struct server *srv, struct server_request *req, struct transfer_work *w)
{
    Geoscale__CheckpointInfoRequest__Group group;
    uint32_t cell_id;
    uint64_t node_id;
    char ip[INET6_ADDRSTRLEN];

    if (req->header.method == GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO) {
        const Geoscale__CheckpointInfoRequest *rq = (const Geoscale__CheckpointInfoRequest *)w->msg;
        group = rq->group;
        cell_id = rq->cell_id;
        node_id = rq->node_id;
    } else {
        const Geoscale__CheckpointChunkRequest *rq =
            (const Geoscale__CheckpointChunkRequest *)w->msg;
        group = rq->group;
        cell_id = rq->cell_id;
        node_id = rq->node_id;
    }
    struct cluster_node_view *view = srv->cluster != NULL ? malloc(sizeof *view) : NULL;
    struct transfer_target *t = malloc(sizeof *t);
    int rv = 0;
    if (t == NULL || (srv->cluster != NULL && view == NULL)) {
        rv = GS_ENOMEM;
        goto out;
    }
    const char *why = NULL;
    if (transfer_resolve(srv, group, cell_id, view, t) != 0) {
        why = "not_hosted";
    } else if (transfer_peer_ip(req->session, ip, sizeof ip) != 0 ||
               !transfer_requester_is_member(t, ip, node_id)) {
        why = "not_a_member";
    }
    if (why != NULL) {
        log_warn("transfer",
                 "event=denied method=%s group=%d cell_id=%" PRIu32 " node_id=%" PRIu64
                 " reason=%s",
                 req->method->name, (int)group, cell_id, node_id, why);
        rv = GS_EDENIED;
        goto out;
    }
    snprintf(w->root, sizeof w->root, "%s", t->root);
    w->kind = t->kind;
    w->group_id = cell_id;
    w->slot = server_group_slot(group); /* a known kind: resolved above */
out:
    free(t);
    free(view);
    return rv;
}

void server_transfer(struct server *srv, struct server_request *req)
{
    struct transfer_work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    /* The body was validated as this method's request message. */
    w->msg = protobuf_c_message_unpack(req->method->request, NULL, req->len, req->body);
    if (w->msg == NULL) {
        free(w);
        request_reply(req, GS_EINVAL, 0, NULL, 0);
        return;
    }
    int rv = transfer_admit(srv, req, w);
    if (rv == 0 && request_hold(req, REQ_IN_GROUP) != 0) {
        rv = GS_ENOMEM;
    }
    if (rv != 0) {
        protobuf_c_message_free_unpacked(w->msg, NULL);
        free(w);
        request_reply(req, rv, 0, NULL, 0);
        return;
    }
    w->work.data = w;
    w->srv = srv;
    w->req = req;
    rv = uv_queue_work(srv->loop, &w->work, transfer_work_cb, transfer_after_cb);
    if (rv != 0) {
        request_abandon(req, GS_EUNAVAILABLE);
        request_release(req);
        protobuf_c_message_free_unpacked(w->msg, NULL);
        free(w);
        return;
    }
    /* Counted like a handle: the server is not freed while work runs. */
    srv->n_open++;
}
