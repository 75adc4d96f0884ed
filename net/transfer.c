/*
 * Serving checkpoints to the cell's own replicas (CheckpointInfo,
 * CheckpointChunk; the pulling side is raft/snapshot_pull.c).
 *
 * Both calls read files: listing may hash gigabytes the first time, a chunk
 * reads up to 1 MiB. Neither may run on the server's loop, so each runs on
 * libuv's thread pool (uv_queue_work) while the request is held as if it
 * were in the group (REQ_IN_GROUP: its deadline and the orphaning of a
 * closed connection work the same way); the answer is sent from the
 * after-work callback on the loop.
 *
 * Residency: a checkpoint is the cell's data, PII included. It is served
 * only on connections whose peer IP is the IP of one of this cell's members
 * (as configured), and only for this cell's id. Anyone else gets
 * PERMISSION_DENIED. (Transport authentication comes with node identities.)
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/checkpoint.h"
#include "../engine/log.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "node.h"
#include "session.h"

#define TRANSFER_MAX_CHUNK (1024 * 1024)

struct transfer_work {
    uv_work_t work; /* work.data = this */
    struct server *srv;
    struct server_request *req;
    char root[CONFIG_PATH_MAX + 16];
    /* result, filled on the pool thread */
    int status;
    uint8_t *body;
    size_t len;
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

/* Is the connection's peer one of this cell's members? */
static bool transfer_peer_is_member(struct server *srv, struct session *s)
{
    struct sockaddr_storage sa;
    int sa_len = sizeof sa;
    char ip[INET6_ADDRSTRLEN];
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sa, &sa_len) != 0) {
        return false;
    }
    if (sa.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip, sizeof ip);
    } else if (sa.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip, sizeof ip);
    } else {
        return false;
    }
    const struct node_config *cfg = srv->cfg;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        const char *addresses[2] = {cfg->peers[i].raft_address, cfg->peers[i].client_address};
        for (int k = 0; k < 2; k++) {
            char host[CONFIG_ADDRESS_MAX];
            char member_ip[INET6_ADDRSTRLEN];
            int port;
            if (config_split_address(addresses[k], host, sizeof host, &port) == 0 &&
                host_ip(host, member_ip, sizeof member_ip) == 0 && strcmp(member_ip, ip) == 0) {
                return true;
            }
        }
    }
    return false;
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
        return;
    }
    if (info.applied_index < rq->min_index) {
        checkpoint_info_free(&info);
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
    resp.cell_id = info.cell_id;
    resp.applied_index = info.applied_index;
    resp.n_files = info.n_files;
    resp.files = ptrs;
    transfer_pack(w, &resp.base);
    log_info("transfer", "event=checkpoint_offered index=%" PRIu64 " files=%zu", info.applied_index,
             info.n_files);
out:
    free(files);
    free(ptrs);
    checkpoint_info_free(&info);
}

static void transfer_chunk(struct transfer_work *w, const Geoscale__CheckpointChunkRequest *rq)
{
    size_t want = rq->max_len > 0 && rq->max_len < TRANSFER_MAX_CHUNK ? rq->max_len
                                                                       : TRANSFER_MAX_CHUNK;
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
    struct server_request *req = w->req;
    /* The body was validated as this method's request message. */
    ProtobufCMessage *msg = protobuf_c_message_unpack(req->method->request, NULL, req->len,
                                                      req->body);
    if (msg == NULL) {
        w->status = GS_EINVAL;
        return;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO) {
        const Geoscale__CheckpointInfoRequest *rq = (Geoscale__CheckpointInfoRequest *)msg;
        if (rq->cell_id != w->srv->cfg->cell_id) {
            w->status = GS_EDENIED;
        } else {
            transfer_info(w, rq);
        }
    } else {
        const Geoscale__CheckpointChunkRequest *rq = (Geoscale__CheckpointChunkRequest *)msg;
        if (rq->cell_id != w->srv->cfg->cell_id) {
            w->status = GS_EDENIED;
        } else {
            transfer_chunk(w, rq);
        }
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void transfer_after_cb(uv_work_t *work, int status)
{
    struct transfer_work *w = work->data;
    struct server *srv = w->srv;
    struct server_request *req = w->req;
    if (status != 0 && w->status == 0) {
        w->status = GS_ESHUTDOWN; /* cancelled */
    }
    if (req->state == REQ_ORPHANED) {
        request_release(req);
    } else {
        request_reply(req, w->status, 0, w->status == 0 ? w->body : NULL, w->len);
    }
    free(w->body);
    free(w);
    server_flush(srv);
    server_handle_closed(srv);
}

void server_transfer(struct server *srv, struct server_request *req)
{
    if (!transfer_peer_is_member(srv, req->session)) {
        log_warn("transfer", "event=denied method=%s", req->method->name);
        request_reply(req, GS_EDENIED, 0, NULL, 0);
        return;
    }
    struct transfer_work *w = calloc(1, sizeof *w);
    if (w == NULL || request_hold(req, REQ_IN_GROUP) != 0) {
        free(w);
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    w->work.data = w;
    w->srv = srv;
    w->req = req;
    node_checkpoint_dir(srv->cfg, w->root, sizeof w->root);
    int rv = uv_queue_work(srv->loop, &w->work, transfer_work_cb, transfer_after_cb);
    if (rv != 0) {
        request_abandon(req, GS_EUNAVAILABLE);
        request_release(req);
        free(w);
        return;
    }
    /* Counted like a handle: the server is not freed while work runs. */
    srv->n_open++;
}
