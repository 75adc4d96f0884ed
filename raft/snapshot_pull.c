/*
 * Pull a peer's checkpoint and install it (see snapshot_pull.h).
 *
 * One attempt, against one peer:
 *   CheckpointInfo {group, cell_id, node_id, min_index} -> the peer's newest
 *     complete checkpoint of this group (file names, sizes, BLAKE2b-256),
 *     NOT_FOUND if it has none that new;
 *   CheckpointChunk for each missing piece, in order, into incoming_dir;
 *   verify every file's size and hash, then install it into the state
 *   machine's base (checkpoint_install() on ops->rsm(sm)).
 * Every request names the group (kind and cell id) and this node: the peer
 * serves a group's checkpoint to the group's own members only.
 * A checkpoint newer than the manifest is as good: entries the database
 * already holds are skipped when raft replays them. If the peer deletes the
 * checkpoint meanwhile (two newer ones were made), the attempt fails with
 * NOT_FOUND and the next one starts from the peer's newest.
 */
#include "snapshot_pull.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/checkpoint.h"
#include "../engine/log.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

#define PULL_CHUNK (1024 * 1024)

/* Convert the wire info into the engine's. */
static int info_from_wire(const Geoscale__CheckpointInfoResponse *w, struct checkpoint_info *out,
                          char *errmsg, size_t errmsg_len)
{
    memset(out, 0, sizeof *out);
    if (w->format != CHECKPOINT_FORMAT) {
        snprintf(errmsg, errmsg_len, "checkpoint format %u not supported", w->format);
        return GS_EPROTO;
    }
    out->files = calloc(w->n_files > 0 ? w->n_files : 1, sizeof *out->files);
    if (out->files == NULL) {
        return GS_ENOMEM;
    }
    out->applied_index = w->applied_index;
    out->identity = w->cell_id;
    out->hashed = true;
    out->n_files = w->n_files;
    for (size_t i = 0; i < w->n_files; i++) {
        const Geoscale__CheckpointFile *f = w->files[i];
        if (!checkpoint_name_valid(f->name) || f->blake2b.len != CHECKPOINT_HASH_LEN) {
            checkpoint_info_free(out);
            snprintf(errmsg, errmsg_len, "checkpoint file %zu: bad name or hash", i);
            return GS_EPROTO;
        }
        snprintf(out->files[i].name, sizeof out->files[i].name, "%s", f->name);
        out->files[i].size = f->size;
        memcpy(out->files[i].hash, f->blake2b.data, CHECKPOINT_HASH_LEN);
    }
    return 0;
}

static int pull_info(gs_sync *client, const struct snapshot_pull *p, struct checkpoint_info *info,
                     char *errmsg, size_t errmsg_len)
{
    Geoscale__CheckpointInfoRequest req = GEOSCALE__CHECKPOINT_INFO_REQUEST__INIT;
    req.cell_id = p->group_id;
    req.min_index = p->min_index;
    req.group = p->ops->checkpoint_group;
    req.node_id = p->self_id;
    ProtobufCMessage *resp = NULL;
    int rv = gs_sync_call(client, GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO, &req.base, &resp, NULL);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "CheckpointInfo: %s", gs_error_name(rv));
        return rv;
    }
    Geoscale__CheckpointInfoResponse *w = (Geoscale__CheckpointInfoResponse *)resp;
    if (w->cell_id != p->group_id || w->applied_index < p->min_index) {
        snprintf(errmsg, errmsg_len, "peer offered %s %u index %" PRIu64 ", need %s %u >= %" PRIu64,
                 p->ops->kind, w->cell_id, (uint64_t)w->applied_index, p->ops->kind, p->group_id,
                 p->min_index);
        rv = GS_EPROTO;
    } else {
        rv = info_from_wire(w, info, errmsg, errmsg_len);
        if (rv == 0) {
            snprintf(info->kind, sizeof info->kind, "%s", p->ops->kind);
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

static int pull_files(gs_sync *client, const struct snapshot_pull *p,
                      const struct checkpoint_info *info, struct checkpoint_receiver *r,
                      char *errmsg, size_t errmsg_len)
{
    const char *name;
    uint64_t offset;
    uint64_t bytes = 0;
    while (checkpoint_receive_next(r, &name, &offset)) {
        Geoscale__CheckpointChunkRequest req = GEOSCALE__CHECKPOINT_CHUNK_REQUEST__INIT;
        req.cell_id = p->group_id;
        req.group = p->ops->checkpoint_group;
        req.node_id = p->self_id;
        req.applied_index = info->applied_index;
        req.name = (char *)name;
        req.offset = offset;
        req.max_len = PULL_CHUNK;
        ProtobufCMessage *resp = NULL;
        int rv =
            gs_sync_call(client, GEOSCALE__METHOD__METHOD_CHECKPOINT_CHUNK, &req.base, &resp, NULL);
        if (rv != 0) {
            snprintf(errmsg, errmsg_len, "CheckpointChunk: %s", gs_error_name(rv));
            return rv;
        }
        Geoscale__CheckpointChunkResponse *w = (Geoscale__CheckpointChunkResponse *)resp;
        if (w->data.len == 0) {
            /* The peer's file is shorter than its own listing said. */
            protobuf_c_message_free_unpacked(resp, NULL);
            snprintf(errmsg, errmsg_len, "CheckpointChunk: file ended early");
            return GS_EPROTO;
        }
        rv = checkpoint_receive_write(r, name, offset, w->data.data, w->data.len, errmsg,
                                      errmsg_len);
        bytes += w->data.len;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (rv != 0) {
            return rv;
        }
    }
    log_info("snapshot",
             "event=checkpoint_received kind=%s index=%" PRIu64 " files=%zu bytes=%" PRIu64,
             p->ops->kind, info->applied_index, info->n_files, bytes);
    return 0;
}

/* One attempt against one peer. */
static int pull_from(const struct snapshot_pull *p, const struct group_peer *peer, char *errmsg,
                     size_t errmsg_len)
{
    const char *seeds[1] = {peer->client_address};
    struct gs_client_options opts = {
        .timeout_ms = p->timeout_ms,
        .max_body = 2 * PULL_CHUNK,
        .pin = 1,
        .no_retry = 1,
    };
    gs_sync *client = NULL;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    memset(&info, 0, sizeof info);
    int rv = gs_sync_open(seeds, 1, &opts, &client);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "client: %s", gs_error_name(rv));
        goto out;
    }
    rv = pull_info(client, p, &info, errmsg, errmsg_len);
    if (rv != 0) {
        goto out;
    }
    rv = checkpoint_receive_begin(p->incoming_dir, &info, &r, errmsg, errmsg_len);
    if (rv != 0) {
        goto out;
    }
    rv = pull_files(client, p, &info, r, errmsg, errmsg_len);
    if (rv != 0) {
        goto out;
    }
    rv = checkpoint_receive_verify(r, errmsg, errmsg_len);
    if (rv != 0) {
        goto out;
    }
    rv = checkpoint_install(p->ops->rsm(p->sm), checkpoint_receive_verified_dir(r), errmsg,
                            errmsg_len);
out:
    checkpoint_receive_free(r);
    checkpoint_info_free(&info);
    gs_sync_close(client);
    return rv;
}

int snapshot_pull(const struct snapshot_pull *p, char *errmsg, size_t errmsg_len)
{
    int rv = GS_EUNAVAILABLE;
    snprintf(errmsg, errmsg_len, "no peer to pull from");
    for (unsigned round = 0; round < p->rounds; round++) {
        /* The leader first: it made the snapshot that was sent. */
        for (size_t k = 0; k <= p->n_peers; k++) {
            const struct group_peer *peer = NULL;
            if (k == 0) {
                for (size_t i = 0; i < p->n_peers; i++) {
                    if (p->peers[i].id == p->leader_id && p->leader_id != p->self_id) {
                        peer = &p->peers[i];
                    }
                }
            } else if (p->peers[k - 1].id != p->self_id && p->peers[k - 1].id != p->leader_id) {
                peer = &p->peers[k - 1];
            }
            if (peer == NULL) {
                continue;
            }
            rv = pull_from(p, peer, errmsg, errmsg_len);
            if (rv == 0) {
                log_info("snapshot",
                         "event=installed kind=%s group_id=%u from=%" PRIu64
                         " applied_index=%" PRIu64,
                         p->ops->kind, p->group_id, peer->id, p->ops->applied_index(p->sm));
                return 0;
            }
            log_warn("snapshot",
                     "event=pull_failed kind=%s from=%" PRIu64 " round=%u code=%s detail=\"%s\"",
                     p->ops->kind, peer->id, round, gs_error_name(rv), errmsg);
        }
        usleep(200 * 1000 * (round + 1));
    }
    return rv;
}
