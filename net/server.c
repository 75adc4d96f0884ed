/*
 * The node's client-facing server (see server.h): listener, dispatch,
 * forwarding to the leader, deadlines. Connections and the life of each
 * request are in session.c; the structures both share are in session.h.
 *
 * Dispatch. A request that passed the session's checks goes by the kind of
 * its method (engine/methods.h):
 *   WRITE, READ  -> group_submit(); the group answers through the server's
 *                   reply mailbox on this loop (server_group_done).
 *   CellStatus   -> answered here from group_get_status() and the config.
 *   StateDigest  -> group_submit(); the group thread computes it.
 *
 * Forwarding. A follower's group answers NOT_LEADER at once, naming the
 * leader it knows. The server then sends the same method and body to that
 * leader through a gs_client (one per peer, pinned, no retries, opened on
 * first use), with the client's idempotency key and WIRE_FLAG_FORWARDED,
 * and relays the leader's answer. A request that already carries the flag
 * is never forwarded again: it is answered NOT_LEADER, so a stale view of
 * the leader costs the client one retry, never a loop. No leader known ->
 * UNAVAILABLE (the client backs off and retries).
 *
 * Deadlines. Every held request (IN_GROUP, FORWARDING) sits in one binary
 * min-heap by deadline, and one repeating timer per server pops the expired
 * ones: TIMEOUT for reads, OUTCOME_UNKNOWN for writes (the group may still
 * commit it; the client's retry with the same key is applied at most once).
 * The request is then an orphan and its late answer is dropped. The same
 * timer closes idle connections (nothing in flight, and for idle_timeout_ms
 * no frame received, no response queued and no write completed).
 *
 * Shutdown (driven by node.c): server_stop() closes the listener, every
 * session (orphaning their requests), the forwarding clients (which fail
 * their calls, freeing those orphans) and the timer; the node then stops
 * the group, which posts every request it held to the reply mailbox; and
 * server_close() closes the mailbox, whose last delivery frees the rest.
 * The server is freed when the last of its handles has closed, and asserts
 * that no request is left.
 */
#include "server.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/log.h"
#include "geoscale.pb-c.h"
#include "geoscale/errors.h"
#include "cluster_tasks.h"
#include "session.h"

#define SERVER_TICK_MS 10
#define SERVER_BACKLOG 1024

/* ------------------------------------------------------------ deadline heap */

static bool heap_before(const struct server_request *a, const struct server_request *b)
{
    return a->deadline < b->deadline;
}

static void heap_set(struct server *srv, size_t i, struct server_request *req)
{
    srv->heap[i] = req;
    req->heap_index = i;
}

static void heap_up(struct server *srv, size_t i)
{
    struct server_request *req = srv->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(req, srv->heap[parent])) {
            break;
        }
        heap_set(srv, i, srv->heap[parent]);
        i = parent;
    }
    heap_set(srv, i, req);
}

static void heap_down(struct server *srv, size_t i)
{
    struct server_request *req = srv->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= srv->heap_len) {
            break;
        }
        if (child + 1 < srv->heap_len && heap_before(srv->heap[child + 1], srv->heap[child])) {
            child++;
        }
        if (!heap_before(srv->heap[child], req)) {
            break;
        }
        heap_set(srv, i, srv->heap[child]);
        i = child;
    }
    heap_set(srv, i, req);
}

int server_deadline_add(struct server *srv, struct server_request *req)
{
    assert(req->heap_index == HEAP_NONE);
    if (srv->heap_len == srv->heap_cap) {
        size_t cap = srv->heap_cap != 0 ? 2 * srv->heap_cap : 256;
        struct server_request **heap = realloc(srv->heap, cap * sizeof *heap);
        if (heap == NULL) {
            return GS_ENOMEM;
        }
        srv->heap = heap;
        srv->heap_cap = cap;
    }
    size_t i = srv->heap_len++;
    heap_set(srv, i, req);
    heap_up(srv, i);
    return 0;
}

void server_deadline_remove(struct server *srv, struct server_request *req)
{
    size_t i = req->heap_index;
    assert(i < srv->heap_len && srv->heap[i] == req);
    req->heap_index = HEAP_NONE;
    struct server_request *last = srv->heap[--srv->heap_len];
    if (last == req) {
        return;
    }
    heap_set(srv, i, last);
    if (i > 0 && heap_before(last, srv->heap[(i - 1) / 2])) {
        heap_up(srv, i);
    } else {
        heap_down(srv, i);
    }
}

/* ------------------------------------------------------------ close */

static void server_maybe_free(struct server *srv)
{
    if (srv->n_open > 0) {
        return;
    }
    assert(srv->stopping && srv->mailbox_closed);
    assert(srv->n_requests == 0);
    assert(srv->heap_len == 0);
    void (*cb)(void *) = srv->closed_cb;
    void *data = srv->closed_data;
    free(srv->heap);
    free(srv->fwd);
    free(srv);
    if (cb != NULL) {
        cb(data);
    }
}

void server_handle_closed(struct server *srv)
{
    assert(srv->n_open > 0);
    srv->n_open--;
    server_maybe_free(srv);
}

static void server_uv_closed_cb(uv_handle_t *handle)
{
    server_handle_closed(handle->data);
}

static void server_client_closed_cb(void *data)
{
    server_handle_closed(data);
}

static void server_mailbox_closed_cb(struct mailbox *box)
{
    server_handle_closed(box->data);
}

/* ------------------------------------------------------------ answers */

/* Map the failure of a forwarded call to what the client should see. */
static int forward_status(const struct server_request *req, int status)
{
    bool write = req->method->kind == METHOD_KIND_WRITE;
    switch (status) {
    case GS_ETIMEOUT:
        return write ? GS_EUNKNOWN : GS_ETIMEOUT;
    case GS_ECLOSED:
        /* The connection to the leader dropped after the request may have
         * been sent. */
        return write ? GS_EUNKNOWN : GS_EUNAVAILABLE;
    case GS_ECONNECT:
        return GS_EUNAVAILABLE;
    default:
        return status;
    }
}

static void server_forward_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                              void *data)
{
    struct server_request *req = data;
    struct server *srv = req->srv;
    if (req->state == REQ_ORPHANED) {
        request_release(req);
        return;
    }
    assert(req->state == REQ_FORWARDING);
    int answer = forward_status(req, status);
    if (answer != status) {
        log_debug("server", "event=forward_failed method=%s leader_id=%u status=%s",
                  req->method->name, req->leader_id, gs_error_name(status));
    }
    request_reply(req, answer, leader_id != 0 ? leader_id : req->leader_id, body, len);
    server_flush(srv);
}

/* The client address of node_id: from the cluster file, or for a lone
 * cell from its peers. NULL if unknown. */
static const char *server_node_address(struct server *srv, uint64_t node_id)
{
    if (srv->cluster != NULL) {
        const struct cluster_node *n = cluster_config_find_node(srv->cluster, node_id);
        return n != NULL ? n->client_address : NULL;
    }
    for (size_t i = 0; i < srv->cfg->n_peers; i++) {
        if (srv->cfg->peers[i].id == node_id) {
            return srv->cfg->peers[i].client_address;
        }
    }
    return NULL;
}

/* The forwarding client to node_id, opened on first use; NULL if the node
 * is unknown or the client cannot be made. */
static struct gs_client *server_forwarder(struct server *srv, uint64_t node_id)
{
    for (size_t i = 0; i < srv->n_fwd; i++) {
        if (srv->fwd[i].node_id == node_id) {
            return srv->fwd[i].client;
        }
    }
    const char *address = server_node_address(srv, node_id);
    if (address == NULL) {
        return NULL;
    }
    if (srv->n_fwd == srv->cap_fwd) {
        size_t cap = srv->cap_fwd == 0 ? 8 : 2 * srv->cap_fwd;
        struct forwarder *fwd = realloc(srv->fwd, cap * sizeof *fwd);
        if (fwd == NULL) {
            return NULL;
        }
        srv->fwd = fwd;
        srv->cap_fwd = cap;
    }
    const char *seeds[1] = {address};
    struct gs_client_options opts = {
        .timeout_ms = srv->cfg->limits.default_deadline_ms,
        .max_body = srv->cfg->limits.max_frame_bytes,
        .pin = 1,
        .no_retry = 1,
    };
    gs_client *client = NULL;
    int rv = gs_client_open(srv->loop, seeds, 1, &opts, &client);
    if (rv != 0) {
        log_error("server", "event=forwarder_open_failed node_id=%" PRIu64 " code=%s", node_id,
                  gs_error_name(rv));
        return NULL;
    }
    srv->fwd[srv->n_fwd].node_id = node_id;
    srv->fwd[srv->n_fwd].client = client;
    srv->n_fwd++;
    srv->n_open++;
    log_info("server", "event=forwarder_open node_id=%" PRIu64 " address=%s", node_id, address);
    return client;
}

/* Send req (held IN_GROUP or RECEIVED) to node_id with the FORWARDED flag
 * and its idempotency key, and relay the answer. */
static void server_forward_to(struct server *srv, struct server_request *req, uint64_t node_id,
                              uint32_t leader_hint)
{
    uint64_t now = uv_now(srv->loop);
    if (req->deadline <= now) {
        request_reply(req, req->method->kind == METHOD_KIND_WRITE ? GS_EUNKNOWN : GS_ETIMEOUT,
                      leader_hint, NULL, 0);
        return;
    }
    gs_client *c = server_forwarder(srv, node_id);
    if (c == NULL) {
        request_reply(req, GS_EUNAVAILABLE, leader_hint, NULL, 0);
        return;
    }
    struct gs_call_options opts = {
        .timeout_ms = (unsigned)(req->deadline - now),
        .client_id = req->header.client_id,
        .client_seq = req->header.client_seq,
        .flags = WIRE_FLAG_FORWARDED,
    };
    req->leader_id = leader_hint;
    int rv = request_hold(req, REQ_FORWARDING);
    if (rv != 0) {
        request_reply(req, GS_ENOMEM, leader_hint, NULL, 0);
        return;
    }
    rv = gs_client_call(c, req->header.method, req->body, req->len, &opts, server_forward_cb, req);
    if (rv != 0) {
        log_warn("server", "event=forward_failed method=%s node_id=%" PRIu64 " code=%s",
                 req->method->name, node_id, gs_error_name(rv));
        request_reply(req, GS_EUNAVAILABLE, leader_hint, NULL, 0);
        return;
    }
    log_debug("server", "event=forward method=%s node_id=%" PRIu64, req->method->name, node_id);
}

/* The group said NOT_LEADER: forward to the leader it named, if we can. */
static void server_not_leader(struct server *srv, struct server_request *req, uint32_t leader_id)
{
    if (leader_id == 0 || leader_id == srv->cfg->node_id) {
        /* No leader known (an election is on, or no quorum). */
        request_reply(req, GS_EUNAVAILABLE, 0, NULL, 0);
        return;
    }
    if ((req->header.flags & WIRE_FLAG_FORWARDED) != 0 ||
        server_node_address(srv, leader_id) == NULL) {
        /* Never forward twice; a leader we have no address for: let the
         * client find it. */
        request_reply(req, GS_ENOTLEADER, leader_id, NULL, 0);
        return;
    }
    server_forward_to(srv, req, leader_id, leader_id);
}

/* The group answered (on this loop, through the reply mailbox). */
static void server_group_done(struct group_request *g)
{
    struct server_request *req = g->data;
    struct server *srv = req->srv;
    assert(g->state == GROUP_REQ_DONE);
    struct cell_result result = g->result;
    g->result.body = NULL;
    if (req->state == REQ_ORPHANED) {
        request_release(req);
        goto out;
    }
    assert(req->state == REQ_IN_GROUP);
    uint32_t leader_id = (uint32_t)g->leader_id;
    if (result.status == GS_ENOTLEADER && req->method->kind != METHOD_KIND_LOCAL) {
        server_not_leader(srv, req, leader_id);
        goto out;
    }
    request_reply(req, result.status, leader_id, result.body, result.len);
    if (result.status == 0 && srv->tasks != NULL && req->method->group == METHOD_GROUP_CELL &&
        req->method->kind == METHOD_KIND_WRITE) {
        cluster_tasks_cell_written(srv->tasks);
    }
out:
    free(result.body);
}

static void server_deliver(struct mailbox *box, struct mailbox_item *items)
{
    struct server *srv = box->data;
    while (items != NULL) {
        struct group_request *g = (struct group_request *)items;
        items = items->next;
        g->done(g);
    }
    server_flush(srv);
}

/* ------------------------------------------------------------ dispatch */

static void server_cell_status(struct server *srv, struct server_request *req)
{
    const struct node_config *cfg = srv->cfg;
    struct group_status st;
    memset(&st, 0, sizeof st);
    if (srv->groups[METHOD_GROUP_CELL] != NULL) {
        group_get_status(srv->groups[METHOD_GROUP_CELL], &st);
    }
    Geoscale__Member members[CONFIG_MAX_PEERS];
    Geoscale__Member *member_ptrs[CONFIG_MAX_PEERS];
    for (size_t i = 0; i < cfg->n_peers; i++) {
        geoscale__member__init(&members[i]);
        members[i].node_id = cfg->peers[i].id;
        members[i].raft_address = (char *)cfg->peers[i].raft_address;
        members[i].client_address = (char *)cfg->peers[i].client_address;
        members[i].role = "voter";
        member_ptrs[i] = &members[i];
    }
    Geoscale__CellStatusResponse resp = GEOSCALE__CELL_STATUS_RESPONSE__INIT;
    resp.node_id = cfg->node_id;
    resp.region = (char *)cfg->region;
    resp.cell_id = cfg->cell_id;
    resp.state = (char *)(st.state != NULL ? st.state : "unavailable");
    resp.leader_id = st.leader_id;
    resp.term = st.term;
    resp.commit_index = st.commit_index;
    resp.applied_index = st.applied_index;
    resp.last_log_index = st.last_log_index;
    resp.read_checks = st.read_checks;
    resp.read_barriers = st.read_barriers;
    resp.n_members = cfg->n_peers;
    resp.members = member_ptrs;
    uint8_t buf[4096];
    size_t len = geoscale__cell_status_response__get_packed_size(&resp);
    /* 7 members of at most ~160 bytes each plus a few numbers. */
    assert(len <= sizeof buf);
    geoscale__cell_status_response__pack(&resp, buf);
    request_reply(req, 0, (uint32_t)st.leader_id, buf, len);
}

int server_group_slot(int group)
{
    switch (group) {
    case GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL:
        return METHOD_GROUP_CELL;
    case GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY:
        return METHOD_GROUP_DIRECTORY;
    case GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__METADATA:
        return METHOD_GROUP_METADATA;
    default:
        return -1;
    }
}

/* LeaderCheck (raft/leader_check.h): this node's term in the group named,
 * read here on the server's loop, without waiting for the group's thread.
 * A term is no secret (CellStatus tells it to anyone): any caller may ask. */
static void server_leader_check(struct server *srv, struct server_request *req)
{
    /* The body was validated as this method's request message. */
    Geoscale__LeaderCheckRequest *rq =
        geoscale__leader_check_request__unpack(NULL, req->len, req->body);
    if (rq == NULL) {
        request_reply(req, GS_EINVAL, 0, NULL, 0);
        return;
    }
    int slot = server_group_slot(rq->group);
    struct group *g = slot >= 0 ? srv->groups[slot] : NULL;
    uint32_t cell_id = rq->cell_id;
    geoscale__leader_check_request__free_unpacked(rq, NULL);
    struct group_status st;
    if (g != NULL) {
        group_get_status(g, &st);
    }
    if (g == NULL || st.group_id != cell_id) {
        request_reply(req, GS_ENOTFOUND, 0, NULL, 0);
        return;
    }
    Geoscale__LeaderCheckResponse resp = GEOSCALE__LEADER_CHECK_RESPONSE__INIT;
    resp.node_id = srv->cfg->node_id;
    resp.term = group_term(g);
    if (resp.term == 0) {
        request_reply(req, GS_EUNAVAILABLE, 0, NULL, 0); /* not loaded yet */
        return;
    }
    uint8_t buf[32];
    size_t len = geoscale__leader_check_response__get_packed_size(&resp);
    assert(len <= sizeof buf); /* two varints */
    geoscale__leader_check_response__pack(&resp, buf);
    request_reply(req, 0, 0, buf, len);
}

static void server_node_status(struct server *srv, struct server_request *req)
{
    Geoscale__GroupStatus groups[METHOD_GROUPS];
    Geoscale__GroupStatus *ptrs[METHOD_GROUPS];
    size_t n = 0;
    for (int k = 0; k < METHOD_GROUPS; k++) {
        if (srv->groups[k] == NULL) {
            continue;
        }
        struct group_status st;
        group_get_status(srv->groups[k], &st);
        geoscale__group_status__init(&groups[n]);
        groups[n].kind = (char *)st.kind;
        groups[n].group_id = st.group_id;
        groups[n].role = (char *)st.role;
        groups[n].state = (char *)(st.state != NULL ? st.state : "unavailable");
        groups[n].leader_id = st.leader_id;
        groups[n].term = st.term;
        groups[n].commit_index = st.commit_index;
        groups[n].applied_index = st.applied_index;
        groups[n].last_log_index = st.last_log_index;
        ptrs[n] = &groups[n];
        n++;
    }
    Geoscale__NodeStatusResponse resp = GEOSCALE__NODE_STATUS_RESPONSE__INIT;
    resp.node_id = srv->cfg->node_id;
    resp.region = (char *)srv->cfg->region;
    resp.n_groups = n;
    resp.groups = ptrs;
    uint8_t buf[1024];
    size_t len = geoscale__node_status_response__get_packed_size(&resp);
    assert(len <= sizeof buf); /* three groups of a few short fields */
    geoscale__node_status_response__pack(&resp, buf);
    request_reply(req, 0, 0, buf, len);
}

/* A member of a directory or metadata group to send a request to: one in
 * this node's region if there is one (metadata reads stay local), else the
 * first. 0 if none. */
static uint64_t server_pick_member(struct server *srv, enum cluster_group_kind kind)
{
    struct cluster_member members[CLUSTER_GROUP_MAX_MEMBERS];
    size_t n = 0;
    if (cluster_config_group_members(srv->cluster, kind, 0, members,
                                     CLUSTER_GROUP_MAX_MEMBERS, &n) != 0 ||
        n == 0) {
        return 0;
    }
    int region = cluster_config_find_region(srv->cluster, srv->cfg->region);
    for (size_t i = 0; i < n; i++) {
        if (region >= 0 && members[i].region == (size_t)region) {
            return members[i].id;
        }
    }
    return members[0].id;
}

/* A request for a group this node does not host. */
static void server_route_elsewhere(struct server *srv, struct server_request *req)
{
    if (srv->cluster == NULL || (req->header.flags & WIRE_FLAG_FORWARDED) != 0) {
        /* A lone cell hosts everything it serves; a forwarded request that
         * lands on a node without the group came by a wrong route. */
        request_reply(req, GS_EUNAVAILABLE, 0, NULL, 0);
        return;
    }
    uint64_t to = 0;
    switch (req->method->group) {
    case METHOD_GROUP_DIRECTORY:
        to = server_pick_member(srv, CLUSTER_GROUP_DIRECTORY);
        break;
    case METHOD_GROUP_METADATA:
        to = server_pick_member(srv, CLUSTER_GROUP_METADATA);
        break;
    default:
        /* Cell methods on a node without a cell: routed by user (to come). */
        break;
    }
    if (to == 0) {
        request_reply(req, GS_EUNAVAILABLE, 0, NULL, 0);
        return;
    }
    server_forward_to(srv, req, to, 0);
}

static void server_submit(struct server *srv, struct server_request *req)
{
    assert(!srv->stopping);
    struct group *target = srv->groups[req->method->group];
    if (target == NULL) {
        server_route_elsewhere(srv, req);
        return;
    }
    struct group_request *g = &req->group;
    memset(g, 0, sizeof *g);
    g->method = req->header.method;
    g->client_id = req->header.client_id;
    g->client_seq = req->header.client_seq;
    g->body = req->body;
    g->len = req->len;
    g->reply_box = &srv->reply_box;
    g->done = server_group_done;
    g->data = req;
    if (request_hold(req, REQ_IN_GROUP) != 0) {
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    group_submit(target, g);
}

void server_dispatch(struct server *srv, struct server_request *req)
{
    assert(req->state == REQ_RECEIVED);
    if (req->header.method == GEOSCALE__METHOD__METHOD_CELL_STATUS) {
        server_cell_status(srv, req);
        return;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_NODE_STATUS) {
        server_node_status(srv, req);
        return;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_LEADER_CHECK) {
        server_leader_check(srv, req);
        return;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_CHECKPOINT_INFO ||
        req->header.method == GEOSCALE__METHOD__METHOD_CHECKPOINT_CHUNK) {
        server_transfer(srv, req);
        return;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_OUTBOX_READ ||
        req->header.method == GEOSCALE__METHOD__METHOD_OUTBOX_ACK) {
        /* The node's own shipper reads and acknowledges its cell's outbox
         * through the group; nobody may over the network. */
        request_reply(req, GS_EDENIED, 0, NULL, 0);
        return;
    }
    /* Every other node-local method is answered above. */
    assert(req->method->group < METHOD_GROUPS);
    if (srv->tasks != NULL && cluster_tasks_dispatch(srv->tasks, req)) {
        return;
    }
    /* WRITE, READ, and the StateDigest (computed on the group thread). */
    server_submit(srv, req);
}

/* ------------------------------------------------------------ timer */

static void server_tick_cb(uv_timer_t *timer)
{
    struct server *srv = timer->data;
    uint64_t now = uv_now(srv->loop);
    if (srv->tasks != NULL) {
        cluster_tasks_tick(srv->tasks);
    }
    while (srv->heap_len > 0 && srv->heap[0]->deadline <= now) {
        struct server_request *req = srv->heap[0];
        bool write = req->method->kind == METHOD_KIND_WRITE;
        log_debug("server", "event=deadline_expired method=%s state=%s", req->method->name,
                  req->state == REQ_IN_GROUP ? "in_group" : "forwarding");
        request_abandon(req, write ? GS_EUNKNOWN : GS_ETIMEOUT);
    }
    if (now >= srv->next_idle_check) {
        unsigned idle = srv->cfg->limits.idle_timeout_ms;
        struct session *s = srv->sessions;
        while (s != NULL) {
            struct session *next = s->next;
            /* A write in flight for that long means a client that does not
             * read: idle too. */
            if (s->n_held == 0 && now - s->last_active >= idle) {
                log_info("session", "event=idle_close session_id=%" PRIu64 " idle_ms=%" PRIu64,
                         s->id, now - s->last_active);
                session_close(s, "idle");
            }
            s = next;
        }
        unsigned step = idle / 4 < 1000 ? idle / 4 : 1000;
        srv->next_idle_check = now + (step > 0 ? step : 1);
    }
    server_flush(srv);
}

/* ------------------------------------------------------------ start, stop */

static void server_connection_cb(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;
    if (status < 0) {
        log_warn("server", "event=accept_error error=%s", uv_err_name(status));
        return;
    }
    session_accept(srv);
}

/* Resolve "host:port" (numeric or a name) for bind. */
static int server_resolve(uv_loop_t *loop, const char *address, struct sockaddr_storage *out,
                          char *errmsg, size_t errmsg_len)
{
    char host[CONFIG_ADDRESS_MAX];
    int port;
    if (config_split_address(address, host, sizeof host, &port) != 0) {
        snprintf(errmsg, errmsg_len, "client_address \"%s\" is not host:port", address);
        return GS_EINVAL;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) {
        return 0;
    }
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    uv_getaddrinfo_t gai;
    int rv = uv_getaddrinfo(loop, &gai, NULL, host, service, &hints); /* synchronous */
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot resolve client_address \"%s\": %s", address,
                 uv_strerror(rv));
        return GS_EINVAL;
    }
    memcpy(out, gai.addrinfo->ai_addr, gai.addrinfo->ai_addrlen);
    uv_freeaddrinfo(gai.addrinfo);
    return 0;
}

int server_start(uv_loop_t *loop, const struct node_config *cfg,
                 const struct cluster_config *cluster, struct group *const groups[METHOD_GROUPS],
                 struct server **out, char *errmsg, size_t errmsg_len)
{
    *out = NULL;
    struct sockaddr_storage addr;
    int rv = server_resolve(loop, cfg->client_address, &addr, errmsg, errmsg_len);
    if (rv != 0) {
        return rv;
    }
    struct server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return GS_ENOMEM;
    }
    srv->loop = loop;
    srv->cfg = cfg;
    memcpy(srv->groups, groups, sizeof srv->groups);
    srv->cluster = cluster;
    if (cluster != NULL && cluster_tasks_start(srv, &srv->tasks) != 0) {
        snprintf(errmsg, errmsg_len, "out of memory");
        free(srv);
        return GS_ENOMEM;
    }
    rv = mailbox_init(loop, &srv->reply_box, server_deliver);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot create reply mailbox: %s", uv_strerror(rv));
        free(srv);
        return GS_ENOMEM;
    }
    srv->reply_box.data = srv;
    srv->n_open++;
    /* From here on, failures unwind through server_stop/server_close. */
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    srv->n_open++;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->n_open++;
    rv = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&srv->listener, SERVER_BACKLOG, server_connection_cb);
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "cannot listen on %s: %s", cfg->client_address,
                 uv_strerror(rv));
        server_stop(srv);
        server_close(srv, NULL, NULL);
        return GS_EIO;
    }
    uv_timer_start(&srv->timer, server_tick_cb, SERVER_TICK_MS, SERVER_TICK_MS);
    *out = srv;
    return 0;
}

void server_stop(struct server *srv)
{
    if (srv->stopping) {
        return;
    }
    srv->stopping = true;
    log_info("server", "event=stopping sessions=%zu", srv->n_sessions);
    uv_close((uv_handle_t *)&srv->listener, server_uv_closed_cb);
    while (srv->sessions != NULL) {
        session_close(srv->sessions, "shutdown");
    }
    assert(srv->heap_len == 0);
    if (srv->tasks != NULL) {
        cluster_tasks_stop(srv->tasks); /* frees itself once its clients close */
        srv->tasks = NULL;
    }
    for (size_t i = 0; i < srv->n_fwd; i++) {
        if (srv->fwd[i].client != NULL) {
            /* Fails its calls with SHUTDOWN: their orphans are freed. */
            gs_client_close(srv->fwd[i].client, server_client_closed_cb, srv);
            srv->fwd[i].client = NULL;
        }
    }
    uv_close((uv_handle_t *)&srv->timer, server_uv_closed_cb);
    memset(srv->groups, 0, sizeof srv->groups);
}

void server_close(struct server *srv, void (*closed_cb)(void *data), void *data)
{
    assert(srv->stopping && !srv->mailbox_closed);
    srv->closed_cb = closed_cb;
    srv->closed_data = data;
    srv->mailbox_closed = true;
    mailbox_close(&srv->reply_box, server_mailbox_closed_cb);
}
