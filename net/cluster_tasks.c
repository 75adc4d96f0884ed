/*
 * Cluster tasks of a node (see cluster_tasks.h and docs/CLUSTER.md).
 *
 * Clients. One unpinned client to the directory (seeded with its members,
 * this region's first) and one per cell this node sends to (seeded with the
 * cell's members). The library follows leader hints and retries retryable
 * failures with the same idempotency key, which the groups apply at most
 * once.
 *
 * Signup (CreateUser reaching a node of the home region): HMAC of the
 * username -> DirectoryReserveUsername -> CreateUser with the assigned
 * user_id on the chosen cell -> DirectoryConfirmUsername. The calls carry
 * keys derived from the client's own key, so a client retrying the whole
 * signup gets the same user back. Only a definite refusal by the cell
 * releases the reservation; otherwise (unknown outcome, cell out of reach)
 * it is left for the retry, or to expire.
 * A saga runs to its end even if its request was abandoned (deadline,
 * connection closed): only the answer is dropped.
 *
 * Outbox. While this node leads its cell, a shipper reads the cell's
 * outbox on the cell's group thread (OutboxRead): metadata rows, and the
 * halves of edges whose other user lives in another cell. It sends the rows
 * to the metadata group (MetadataApply) and the halves to their cell
 * (EdgeApply); both apply each item once. Then it proposes OutboxAck to its
 * cell to delete what was delivered; and again, until the outbox is empty,
 * then at the next tick after a write to the cell completes here, or every
 * TASKS_SHIP_IDLE_MS (a write proposed by another path, or a failed round
 * waiting TASKS_SHIP_RETRY_MS). A new leader ships from the oldest item not
 * yet acknowledged.
 *
 * Routing. A cell request for a user whose id names another cell is sent to
 * the cell the directory names (cached in the route cache). Requests whose
 * body or answer carries PII never cross a region: for a user homed
 * elsewhere they get WRONG_CELL with a RouteHint naming the home region's
 * nodes, and the client goes there.
 */
#include "cluster_tasks.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/keys.h"
#include "../engine/log.h"
#include "directory.pb-c.h"
#include "geoscale.pb-c.h"
#include "metadata.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"
#include "route_cache.h"
#include "session.h"

#define TASKS_REGISTER_RETRY_MS 1000
#define TASKS_LEARN_EVERY_MS 2000
#define TASKS_SHIP_IDLE_MS 100
#define TASKS_SHIP_RETRY_MS 500
#define TASKS_SHIP_ROWS 256
#define TASKS_ROUTE_CACHE_ENTRIES (1u << 20)
/* The confirm step's key: the client's key with the top bit of the sequence
 * set, which client sequences (counting up from 1) never reach. */
#define TASKS_CONFIRM_SEQ_BIT (UINT64_C(1) << 63)

struct cell_client {
    uint32_t cell_id;
    gs_client *client;
};

/* One round of the shipper. The group holds `g` while it reads or acks;
 * if the tasks stop meanwhile, the round is marked orphan and frees itself
 * when the group answers. */
struct ship {
    struct group_request g; /* must stay first */
    struct cluster_tasks *t;
    bool orphan;
    unsigned calls;     /* deliveries in flight */
    uint64_t up_to_seq; /* metadata rows read; 0 = none */
    bool rows_ok;
    uint32_t edge_dest_cell; /* edge halves read for this cell; 0 = none */
    uint64_t edge_up_to_seq;
    bool edges_ok;
    uint8_t body[64];
};

struct cluster_tasks {
    struct server *srv;
    gs_client *directory;
    gs_client *metadata;
    struct ship *ship; /* the round in flight, NULL if none */
    uint64_t next_ship_ms;
    bool outbox_dirty; /* a cell write completed since the last round began */
    bool ship_failed;  /* the last round failed: wait TASKS_SHIP_RETRY_MS */
    struct cell_client *cells;
    size_t n_cells, cap_cells;
    struct route_cache *routes;
    unsigned open_clients;
    bool stopping;
    /* Cells learned from the directory (cells added after this node read
     * its topology file), kept in the route cache. */
    bool learning;
    uint64_t next_learn_ms;
    /* Registration of this node's cell, once per term it leads. */
    uint64_t registered_term;  /* 0: not registered in any term yet */
    uint64_t registering_term; /* the term of the call in flight */
    bool registering;
    uint64_t next_register_ms;
};

/* ------------------------------------------------------------ clients */

static void tasks_client_closed(void *data)
{
    struct cluster_tasks *t = data;
    struct server *srv = t->srv;
    t->open_clients--;
    if (t->open_clients == 0 && t->stopping) {
        route_cache_free(t->routes);
        free(t->cells);
        free(t);
    }
    server_handle_closed(srv);
}

static gs_client *tasks_open(struct cluster_tasks *t, const char *const *seeds, size_t n)
{
    struct server *srv = t->srv;
    struct gs_client_options opts = {
        .timeout_ms = srv->cfg->limits.default_deadline_ms,
        .max_body = srv->cfg->limits.max_frame_bytes,
    };
    gs_client *c = NULL;
    if (n == 0 || gs_client_open(srv->loop, seeds, n, &opts, &c) != 0) {
        return NULL;
    }
    t->open_clients++;
    srv->n_open++;
    return c;
}

/* Seeds for a group's members, this node's region first. */
static size_t tasks_seeds(struct cluster_tasks *t, const struct cluster_member *members, size_t n,
                          const char **seeds)
{
    int region = cluster_config_find_region(t->srv->cluster, t->srv->cfg->region);
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            bool local = region >= 0 && members[i].region == (size_t)region;
            if (local == (pass == 0)) {
                seeds[k++] = members[i].client_address;
            }
        }
    }
    return k;
}

/* The client to a global group (directory or metadata) in *slot, opened on
 * first use and seeded with the group's members, this region's first. */
static gs_client *tasks_group_client(struct cluster_tasks *t, enum cluster_group_kind kind,
                                     gs_client **slot)
{
    if (*slot == NULL && !t->stopping) {
        struct cluster_member members[CLUSTER_GROUP_MAX_MEMBERS];
        const char *seeds[CLUSTER_GROUP_MAX_MEMBERS];
        size_t n = 0;
        if (cluster_config_group_members(t->srv->cluster, kind, 0, members,
                                         CLUSTER_GROUP_MAX_MEMBERS, &n) == 0) {
            *slot = tasks_open(t, seeds, tasks_seeds(t, members, n, seeds));
        }
    }
    return *slot;
}

static gs_client *tasks_directory(struct cluster_tasks *t)
{
    return tasks_group_client(t, CLUSTER_GROUP_DIRECTORY, &t->directory);
}

static gs_client *tasks_metadata(struct cluster_tasks *t)
{
    return tasks_group_client(t, CLUSTER_GROUP_METADATA, &t->metadata);
}

/* Region, members and leader hint of a cell: from the route cache (cells
 * learned from the directory, and those of the topology file once used,
 * with the leader their responses named), else from the topology file,
 * which then fills the cache. Returns 0 or GS_ENOTFOUND (then a refresh of
 * the learned cells is due at once). */
static int tasks_cell_info(struct cluster_tasks *t, uint32_t cell_id, struct route_cell *out)
{
    const struct cluster_config *cc = t->srv->cluster;
    if (route_cache_get_cell(t->routes, cell_id, out) == 0) {
        return 0;
    }
    if (cluster_config_find_cell(cc, cell_id) != NULL) {
        struct cluster_member members[CLUSTER_GROUP_MAX_MEMBERS];
        size_t n = 0;
        if (cluster_config_group_members(cc, CLUSTER_GROUP_CELL, cell_id, members,
                                         CLUSTER_GROUP_MAX_MEMBERS, &n) != 0) {
            return GS_ENOTFOUND;
        }
        memset(out, 0, sizeof *out);
        out->cell_id = cell_id;
        snprintf(out->region, sizeof out->region, "%s",
                 cc->regions[cluster_config_find_cell(cc, cell_id)->region]);
        for (size_t i = 0; i < n && i < ROUTE_MAX_MEMBERS; i++) {
            out->members[i].node_id = members[i].id;
            snprintf(out->members[i].client_address, sizeof out->members[i].client_address, "%s",
                     members[i].client_address);
            out->n_members++;
        }
        out->directory_version = route_cache_version(t->routes);
        route_cache_put_cell(t->routes, out);
        return 0;
    }
    t->next_learn_ms = 0;
    return GS_ENOTFOUND;
}

static gs_client *tasks_cell(struct cluster_tasks *t, uint32_t cell_id)
{
    for (size_t i = 0; i < t->n_cells; i++) {
        if (t->cells[i].cell_id == cell_id) {
            return t->cells[i].client;
        }
    }
    struct route_cell info;
    if (t->stopping || tasks_cell_info(t, cell_id, &info) != 0) {
        return NULL;
    }
    /* This region's members are the same as any: a cell lives in one. */
    const char *seeds[ROUTE_MAX_MEMBERS];
    for (unsigned i = 0; i < info.n_members; i++) {
        seeds[i] = info.members[i].client_address;
    }
    if (t->n_cells == t->cap_cells) {
        size_t cap = t->cap_cells == 0 ? 8 : 2 * t->cap_cells;
        struct cell_client *cells = realloc(t->cells, cap * sizeof *cells);
        if (cells == NULL) {
            return NULL;
        }
        t->cells = cells;
        t->cap_cells = cap;
    }
    gs_client *c = tasks_open(t, seeds, info.n_members);
    if (c == NULL) {
        return NULL;
    }
    t->cells[t->n_cells].cell_id = cell_id;
    t->cells[t->n_cells].client = c;
    t->n_cells++;
    return c;
}

/* Pack msg and call method on client c. Returns the gs_client_call code. */
static int tasks_call(gs_client *c, uint16_t method, const ProtobufCMessage *msg,
                      const struct gs_call_options *opts, gs_call_cb cb, void *data)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stack[512];
    uint8_t *buf = len <= sizeof stack ? stack : malloc(len);
    if (buf == NULL) {
        return GS_ENOMEM;
    }
    protobuf_c_message_pack(msg, buf);
    int rv = gs_client_call(c, method, buf, len, opts, cb, data);
    if (buf != stack) {
        free(buf);
    }
    return rv;
}

static void ship_tick(struct cluster_tasks *t, const struct group_status *st);

/* ------------------------------------------------------------ learning cells */

static void tasks_learned_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                             void *data)
{
    (void)leader_id;
    struct cluster_tasks *t = data;
    t->learning = false;
    Geoscale__ListCellsResponse *resp =
        status == 0 ? geoscale__list_cells_response__unpack(NULL, len, body) : NULL;
    if (resp == NULL) {
        return;
    }
    /* A raised routes version (a cell's members changed) makes every route
     * cached before it stale: they are asked again on their next use. */
    if (resp->routes_version > route_cache_version(t->routes)) {
        log_info("cluster", "event=routes_invalidated routes_version=%" PRIu64,
                 resp->routes_version);
        route_cache_set_version(t->routes, resp->routes_version);
    }
    for (size_t i = 0; i < resp->n_cells; i++) {
        const Geoscale__CellInfo *ci = resp->cells[i];
        if (cluster_config_find_cell(t->srv->cluster, ci->cell_id) != NULL || ci->n_members == 0 ||
            ci->n_members > ROUTE_MAX_MEMBERS) {
            continue; /* known from the topology file, or unusable */
        }
        struct route_cell rc;
        memset(&rc, 0, sizeof rc);
        rc.cell_id = ci->cell_id;
        snprintf(rc.region, sizeof rc.region, "%s", ci->region);
        for (size_t m = 0; m < ci->n_members; m++) {
            rc.members[m].node_id = ci->members[m]->node_id;
            snprintf(rc.members[m].client_address, sizeof rc.members[m].client_address, "%s",
                     ci->members[m]->client_address);
        }
        rc.n_members = (unsigned)ci->n_members;
        rc.directory_version = resp->routes_version;
        if (route_cache_put_cell(t->routes, &rc) == 0) {
            log_debug("cluster", "event=cell_learned cell_id=%u region=%s", rc.cell_id, rc.region);
        }
    }
    geoscale__list_cells_response__free_unpacked(resp, NULL);
}

static void learn_tick(struct cluster_tasks *t)
{
    uint64_t now = uv_now(t->srv->loop);
    if (t->learning || now < t->next_learn_ms) {
        return;
    }
    gs_client *dir = tasks_directory(t);
    if (dir == NULL) {
        return;
    }
    Geoscale__ListCellsRequest rq = GEOSCALE__LIST_CELLS_REQUEST__INIT;
    t->next_learn_ms = now + TASKS_LEARN_EVERY_MS;
    if (tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_LIST_CELLS, &rq.base, NULL,
                   tasks_learned_cb, t) == 0) {
        t->learning = true;
    }
}

/* ------------------------------------------------------------ registration */

static void tasks_registered_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                                void *data)
{
    (void)leader_id;
    (void)body;
    (void)len;
    struct cluster_tasks *t = data;
    t->registering = false;
    if (status == 0) {
        t->registered_term = t->registering_term;
        log_info("cluster", "event=cell_registered cell_id=%u", t->srv->cfg->cell_id);
    } else if (status != GS_ESHUTDOWN) {
        log_warn("cluster", "event=cell_register_failed cell_id=%u code=%s", t->srv->cfg->cell_id,
                 gs_error_name(status));
    }
    t->next_register_ms = uv_now(t->srv->loop) + TASKS_REGISTER_RETRY_MS;
}

void cluster_tasks_tick(struct cluster_tasks *t)
{
    struct server *srv = t->srv;
    struct group *cell = srv->groups[METHOD_GROUP_CELL];
    if (t->stopping) {
        return;
    }
    learn_tick(t);
    if (cell == NULL) {
        return;
    }
    struct group_status st;
    group_get_status(cell, &st);
    if (st.state == NULL) {
        return;
    }
    ship_tick(t, &st);
    if (t->registering || strcmp(st.state, "leader") != 0 || st.term == t->registered_term ||
        uv_now(srv->loop) < t->next_register_ms) {
        return;
    }
    gs_client *dir = tasks_directory(t);
    if (dir == NULL) {
        return;
    }
    /* Register (idempotently) the cell and its members, once per term this
     * node leads it: the directory is where other nodes learn cells. */
    const struct node_config *cfg = srv->cfg;
    Geoscale__CellMember members[CONFIG_MAX_PEERS];
    Geoscale__CellMember *ptrs[CONFIG_MAX_PEERS];
    for (size_t i = 0; i < cfg->n_peers; i++) {
        geoscale__cell_member__init(&members[i]);
        members[i].node_id = cfg->peers[i].id;
        members[i].raft_address = (char *)cfg->peers[i].raft_address;
        members[i].client_address = (char *)cfg->peers[i].client_address;
        ptrs[i] = &members[i];
    }
    Geoscale__RegisterCellRequest req = GEOSCALE__REGISTER_CELL_REQUEST__INIT;
    req.cell_id = cfg->cell_id;
    req.region = (char *)cfg->region;
    req.n_members = cfg->n_peers;
    req.members = ptrs;
    t->registering = true;
    t->registering_term = st.term;
    int rv = tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_REGISTER_CELL, &req.base, NULL,
                        tasks_registered_cb, t);
    if (rv != 0) {
        t->registering = false;
        t->next_register_ms = uv_now(srv->loop) + TASKS_REGISTER_RETRY_MS;
    }
}

/* ------------------------------------------------------------ outbox shipper */

static void ship_end(struct cluster_tasks *t, struct ship *sh, unsigned delay_ms)
{
    free(sh->g.result.body);
    free(sh);
    t->ship = NULL;
    t->next_ship_ms = uv_now(t->srv->loop) + delay_ms;
    t->ship_failed = delay_ms == TASKS_SHIP_RETRY_MS;
}

void cluster_tasks_cell_written(struct cluster_tasks *t)
{
    t->outbox_dirty = true;
}

static void ship_submit(struct cluster_tasks *t, struct ship *sh, uint32_t method,
                        const ProtobufCMessage *msg, void (*done)(struct group_request *))
{
    struct group *cell = t->srv->groups[METHOD_GROUP_CELL];
    memset(&sh->g, 0, sizeof sh->g);
    sh->g.method = method;
    sh->g.body = sh->body;
    /* OutboxRead and OutboxAck requests: a few varints. */
    assert(protobuf_c_message_get_packed_size(msg) <= sizeof sh->body);
    sh->g.len = protobuf_c_message_pack(msg, sh->body);
    sh->g.reply_box = &t->srv->reply_box;
    sh->g.done = done;
    sh->g.data = sh;
    group_submit(cell, &sh->g);
}

static void ship_acked(struct group_request *g)
{
    struct ship *sh = g->data;
    if (sh->orphan) {
        free(g->result.body);
        free(sh);
        return;
    }
    struct cluster_tasks *t = sh->t;
    int status = g->result.status;
    if (status != 0) {
        log_warn("cluster", "event=outbox_ack_failed up_to=%" PRIu64 " code=%s", sh->up_to_seq,
                 gs_error_name(status));
    }
    /* Delivered rows are gone: look again at once for more. */
    ship_end(t, sh, status == 0 ? 0 : TASKS_SHIP_RETRY_MS);
}

/* Both deliveries of a round are done: acknowledge what arrived. */
static void ship_delivered(struct ship *sh)
{
    struct cluster_tasks *t = sh->t;
    Geoscale__OutboxAckRequest ack = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
    if (sh->rows_ok) {
        ack.up_to_seq = sh->up_to_seq;
    }
    if (sh->edges_ok) {
        ack.edge_dest_cell = sh->edge_dest_cell;
        ack.edge_up_to_seq = sh->edge_up_to_seq;
    }
    if (t->stopping || (ack.up_to_seq == 0 && ack.edge_up_to_seq == 0)) {
        ship_end(t, sh, TASKS_SHIP_RETRY_MS);
        return;
    }
    ship_submit(t, sh, GEOSCALE__METHOD__METHOD_OUTBOX_ACK, &ack.base, ship_acked);
}

static void ship_call_done(struct ship *sh, int status, const char *what, bool *ok)
{
    if (status == 0) {
        *ok = true;
    } else if (status != GS_ESHUTDOWN && !sh->orphan) {
        log_warn("cluster", "event=ship_failed what=%s code=%s", what, gs_error_name(status));
    }
    assert(sh->calls > 0);
    if (--sh->calls > 0) {
        return;
    }
    if (sh->orphan) {
        free(sh);
        return;
    }
    ship_delivered(sh);
}

static void ship_applied_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                            void *data)
{
    (void)leader_id;
    (void)body;
    (void)len;
    struct ship *sh = data;
    ship_call_done(sh, status, "metadata", &sh->rows_ok);
}

static void ship_edges_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                          void *data)
{
    (void)leader_id;
    (void)body;
    (void)len;
    struct ship *sh = data;
    ship_call_done(sh, status, "edges", &sh->edges_ok);
}

static void ship_read(struct group_request *g)
{
    struct ship *sh = g->data;
    if (sh->orphan) {
        free(g->result.body);
        free(sh);
        return;
    }
    struct cluster_tasks *t = sh->t;
    Geoscale__OutboxReadResponse *resp =
        g->result.status == 0
            ? geoscale__outbox_read_response__unpack(NULL, g->result.len, g->result.body)
            : NULL;
    free(g->result.body);
    g->result.body = NULL;
    if (resp == NULL || (resp->n_rows == 0 && resp->n_edge_halves == 0)) {
        if (resp != NULL) {
            geoscale__outbox_read_response__free_unpacked(resp, NULL);
        }
        ship_end(t, sh, g->result.status == 0 ? TASKS_SHIP_IDLE_MS : TASKS_SHIP_RETRY_MS);
        return;
    }
    /* Count both deliveries before starting either, so that a callback
     * that fires early cannot finish the round. */
    gs_client *meta = resp->n_rows > 0 ? tasks_metadata(t) : NULL;
    gs_client *cell = resp->n_edge_halves > 0 ? tasks_cell(t, resp->edge_dest_cell) : NULL;
    sh->calls = 1 + (meta != NULL) + (cell != NULL);
    if (meta != NULL) {
        Geoscale__MetadataApplyRequest rq = GEOSCALE__METADATA_APPLY_REQUEST__INIT;
        rq.origin_cell = t->srv->cfg->cell_id;
        rq.n_rows = resp->n_rows;
        rq.rows = resp->rows;
        sh->up_to_seq = resp->rows[resp->n_rows - 1]->seq;
        if (tasks_call(meta, GEOSCALE__METHOD__METHOD_METADATA_APPLY, &rq.base, NULL,
                       ship_applied_cb, sh) != 0) {
            sh->calls--;
        }
    }
    if (cell != NULL) {
        Geoscale__EdgeApplyRequest rq = GEOSCALE__EDGE_APPLY_REQUEST__INIT;
        rq.origin_cell = t->srv->cfg->cell_id;
        rq.n_halves = resp->n_edge_halves;
        rq.halves = resp->edge_halves;
        sh->edge_dest_cell = resp->edge_dest_cell;
        sh->edge_up_to_seq = resp->edge_halves[resp->n_edge_halves - 1]->seq;
        if (tasks_call(cell, GEOSCALE__METHOD__METHOD_EDGE_APPLY, &rq.base, NULL, ship_edges_cb,
                       sh) != 0) {
            sh->calls--;
        }
    }
    geoscale__outbox_read_response__free_unpacked(resp, NULL);
    /* Drop the count that guarded the starts. */
    ship_call_done(sh, 0, "start", &(bool){false});
}

static void ship_tick(struct cluster_tasks *t, const struct group_status *st)
{
    bool due = uv_now(t->srv->loop) >= t->next_ship_ms || (t->outbox_dirty && !t->ship_failed);
    if (t->ship != NULL || strcmp(st->state, "leader") != 0 || !due) {
        return;
    }
    struct ship *sh = calloc(1, sizeof *sh);
    if (sh == NULL) {
        return;
    }
    t->outbox_dirty = false; /* writes from now on are after this read */
    sh->t = t;
    t->ship = sh;
    Geoscale__OutboxReadRequest rq = GEOSCALE__OUTBOX_READ_REQUEST__INIT;
    rq.max_rows = TASKS_SHIP_ROWS;
    ship_submit(t, sh, GEOSCALE__METHOD__METHOD_OUTBOX_READ, &rq.base, ship_read);
}

/* ------------------------------------------------------------ answering */

/* Answer req (or drop the answer if it was abandoned meanwhile). */
static void tasks_finish(struct server *srv, struct server_request *req, int status,
                         uint32_t leader_id, const uint8_t *body, size_t len)
{
    if (req->state == REQ_ORPHANED) {
        request_release(req);
    } else {
        request_reply(req, status, leader_id, body, len);
    }
    server_flush(srv);
}

/* WRONG_CELL with a RouteHint naming the members of the user's cell when it
 * is known (the client then goes straight there), else the nodes of
 * `region` (which route within it). */
static void tasks_wrong_region(struct cluster_tasks *t, struct server_request *req,
                               uint64_t user_id, uint32_t cell_id, const char *region)
{
    const struct cluster_config *cc = t->srv->cluster;
    int r = cluster_config_find_region(cc, region);
    Geoscale__Member members[8];
    Geoscale__Member *ptrs[8];
    size_t n = 0;
    uint64_t hint_leader = 0;
    struct route_cell cell;
    if (cell_id != 0 && tasks_cell_info(t, cell_id, &cell) == 0) {
        for (unsigned i = 0; i < cell.n_members && n < 8; i++) {
            geoscale__member__init(&members[n]);
            members[n].node_id = cell.members[i].node_id;
            members[n].client_address = cell.members[i].client_address;
            ptrs[n] = &members[n];
            n++;
        }
        r = -1; /* the cell's members only */
        hint_leader = cell.leader_id;
    }
    for (size_t i = 0; i < cc->n_nodes && n < 8 && r >= 0; i++) {
        if (cc->nodes[i].region == (size_t)r) {
            geoscale__member__init(&members[n]);
            members[n].node_id = cc->nodes[i].id;
            members[n].client_address = (char *)cc->nodes[i].client_address;
            ptrs[n] = &members[n];
            n++;
        }
    }
    Geoscale__RouteHint hint = GEOSCALE__ROUTE_HINT__INIT;
    hint.user_id = user_id;
    hint.cell_id = cell_id;
    hint.leader_id = hint_leader;
    hint.region = (char *)region;
    hint.n_members = n;
    hint.members = ptrs;
    uint8_t buf[2048];
    size_t len = geoscale__route_hint__get_packed_size(&hint);
    if (len > sizeof buf) {
        len = 0;
    } else {
        geoscale__route_hint__pack(&hint, buf);
    }
    log_debug("cluster", "event=wrong_region method=%s region=%s", req->method->name, region);
    tasks_finish(t->srv, req, GS_EWRONGCELL, 0, len > 0 ? buf : NULL, len);
}

/* ------------------------------------------------------------ signup */

struct signup {
    struct cluster_tasks *t;
    struct server_request *req;
    uint8_t hash[KEY_USERNAME_HASH_LEN];
    uint64_t user_id;
    uint32_t cell_id;
    int status;    /* the answer to give */
    uint8_t *body; /* the cell's CreateUserResponse */
    size_t len;
    uint32_t leader_id;
};

static void signup_done(struct signup *s)
{
    tasks_finish(s->t->srv, s->req, s->status, s->leader_id, s->status == 0 ? s->body : NULL,
                 s->status == 0 ? s->len : 0);
    free(s->body);
    free(s);
}

static struct gs_call_options signup_opts(const struct signup *s, uint64_t seq_bits)
{
    const struct server_request *req = s->req;
    uint64_t now = uv_now(s->t->srv->loop);
    struct gs_call_options o = {
        .timeout_ms = req->deadline > now ? (unsigned)(req->deadline - now) : 1,
        .client_id = req->header.client_id,
        .client_seq = req->header.client_seq | seq_bits,
    };
    return o;
}

static void signup_released_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                               void *data)
{
    (void)leader_id;
    (void)body;
    (void)len;
    struct signup *s = data;
    if (status != 0) {
        log_warn("cluster", "event=release_failed user_id=%" PRIu64 " code=%s", s->user_id,
                 gs_error_name(status));
    }
    signup_done(s);
}

static void signup_release(struct signup *s)
{
    Geoscale__ReleaseUsernameRequest rq = GEOSCALE__RELEASE_USERNAME_REQUEST__INIT;
    rq.hash.data = s->hash;
    rq.hash.len = sizeof s->hash;
    rq.user_id = s->user_id;
    gs_client *dir = tasks_directory(s->t);
    if (dir == NULL || tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_RELEASE_USERNAME,
                                  &rq.base, NULL, signup_released_cb, s) != 0) {
        signup_done(s);
    }
}

static void signup_confirmed_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                                void *data)
{
    (void)leader_id;
    struct signup *s = data;
    if (status != 0) {
        /* The user exists in its cell; its route is not confirmed. The
         * client's retry (same key) finishes the signup. */
        log_warn("cluster", "event=confirm_failed user_id=%" PRIu64 " code=%s", s->user_id,
                 gs_error_name(status));
        s->status = status == GS_ETIMEOUT ? GS_EUNKNOWN : status;
    } else {
        Geoscale__ConfirmUsernameResponse *resp =
            geoscale__confirm_username_response__unpack(NULL, len, body);
        if (resp != NULL) {
            route_cache_put_user(s->t->routes, s->user_id, s->cell_id, resp->routes_version);
            geoscale__confirm_username_response__free_unpacked(resp, NULL);
        }
        log_info("cluster", "event=signup user_id=%" PRIu64 " cell_id=%u", s->user_id, s->cell_id);
    }
    signup_done(s);
}

static void signup_created_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                              void *data)
{
    struct signup *s = data;
    s->leader_id = leader_id;
    if (status != 0) {
        s->status = status;
        bool unknown = status == GS_EUNKNOWN || status == GS_ETIMEOUT || status == GS_ECLOSED ||
                       status == GS_ESHUTDOWN;
        if (unknown) {
            /* The user may exist: keep the reservation (it expires). */
            s->status = GS_EUNKNOWN;
            signup_done(s);
        } else {
            signup_release(s);
        }
        return;
    }
    s->body = malloc(len > 0 ? len : 1);
    if (s->body == NULL) {
        s->status = GS_ENOMEM;
        signup_done(s);
        return;
    }
    memcpy(s->body, body, len);
    s->len = len;
    s->status = 0;
    Geoscale__ConfirmUsernameRequest rq = GEOSCALE__CONFIRM_USERNAME_REQUEST__INIT;
    rq.hash.data = s->hash;
    rq.hash.len = sizeof s->hash;
    rq.user_id = s->user_id;
    struct gs_call_options o = signup_opts(s, TASKS_CONFIRM_SEQ_BIT);
    gs_client *dir = tasks_directory(s->t);
    if (dir == NULL || tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_CONFIRM_USERNAME,
                                  &rq.base, &o, signup_confirmed_cb, s) != 0) {
        s->status = GS_EUNKNOWN;
        signup_done(s);
    }
}

static void signup_reserved_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                               void *data)
{
    (void)leader_id;
    struct signup *s = data;
    if (status != 0) {
        /* NOT_FOUND from a reservation: no cell of the region accepts
         * signups yet (cells register when their leader is elected), a
         * passing state: UNAVAILABLE, which clients retry. */
        s->status = status == GS_ENOTFOUND ? GS_EUNAVAILABLE : status;
        signup_done(s);
        return;
    }
    Geoscale__ReserveUsernameResponse *r =
        geoscale__reserve_username_response__unpack(NULL, len, body);
    if (r == NULL) {
        s->status = GS_EPROTO;
        signup_done(s);
        return;
    }
    s->user_id = r->user_id;
    s->cell_id = r->cell_id;
    geoscale__reserve_username_response__free_unpacked(r, NULL);

    /* The request again, with the assigned id, to the chosen cell (in this
     * region, so the PII stays in it). */
    Geoscale__CreateUserRequest *cu =
        geoscale__create_user_request__unpack(NULL, s->req->len, s->req->body);
    gs_client *cell = tasks_cell(s->t, s->cell_id);
    int rv = GS_ENOMEM;
    if (cu != NULL && cell != NULL) {
        cu->user_id = s->user_id;
        struct gs_call_options o = signup_opts(s, 0);
        o.flags = WIRE_FLAG_FORWARDED;
        rv = tasks_call(cell, GEOSCALE__METHOD__METHOD_CREATE_USER, &cu->base, &o,
                        signup_created_cb, s);
    }
    if (cu != NULL) {
        geoscale__create_user_request__free_unpacked(cu, NULL);
    }
    if (rv != 0) {
        /* This node cannot reach the cell yet (e.g. a cell added after it
         * started, not learned yet). Not the cell's refusal: keep the
         * reservation, which the client's retry (same key) gets back from
         * the directory, or which expires. Releasing it here would let
         * that retry create a user whose reservation is gone. */
        s->status = GS_EUNAVAILABLE;
        signup_done(s);
    }
}

static void tasks_signup(struct cluster_tasks *t, struct server_request *req,
                         const Geoscale__CreateUserRequest *cu)
{
    const char *region = cu->region[0] != '\0' ? cu->region : t->srv->cfg->region;
    if (strcmp(region, t->srv->cfg->region) != 0) {
        /* The profile is PII of another region: it must not pass here. */
        tasks_wrong_region(t, req, 0, 0, region);
        return;
    }
    struct signup *s = calloc(1, sizeof *s);
    if (s == NULL || request_hold(req, REQ_FORWARDING) != 0) {
        free(s);
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    s->t = t;
    s->req = req;
    const struct node_config *cfg = t->srv->cfg;
    key_username_hash(cfg->username_hash_key, cfg->username_hash_key_len, cu->username,
                      strlen(cu->username), s->hash);
    Geoscale__ReserveUsernameRequest rq = GEOSCALE__RESERVE_USERNAME_REQUEST__INIT;
    rq.hash.data = s->hash;
    rq.hash.len = sizeof s->hash;
    rq.region = (char *)region;
    struct gs_call_options o = signup_opts(s, 0);
    gs_client *dir = tasks_directory(t);
    if (dir == NULL || tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_RESERVE_USERNAME,
                                  &rq.base, &o, signup_reserved_cb, s) != 0) {
        s->status = GS_EUNAVAILABLE;
        signup_done(s);
    }
}

/* ------------------------------------------------------------ routing */

struct routed {
    struct cluster_tasks *t;
    struct server_request *req;
    uint64_t user_id;
    uint32_t cell_id; /* where it was sent */
};

static bool method_carries_pii(uint32_t method)
{
    switch (method) {
    case GEOSCALE__METHOD__METHOD_CREATE_USER:
    case GEOSCALE__METHOD__METHOD_GET_USER:
    case GEOSCALE__METHOD__METHOD_UPDATE_USER:
    case GEOSCALE__METHOD__METHOD_GET_SETTINGS:
    case GEOSCALE__METHOD__METHOD_SET_SETTINGS:
        return true;
    default:
        return false;
    }
}

static void routed_answer_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                             void *data)
{
    struct routed *r = data;
    if (leader_id != 0) {
        /* The cell's leader, for route hints and the cache's readers. */
        route_cache_set_leader(r->t->routes, r->cell_id, leader_id);
    }
    tasks_finish(r->t->srv, r->req, status, leader_id, body, len);
    free(r);
}

/* The user's cell is known: send the request there, or redirect. */
static void routed_send(struct routed *r, uint32_t cell_id)
{
    struct cluster_tasks *t = r->t;
    struct route_cell cell;
    if (tasks_cell_info(t, cell_id, &cell) != 0) {
        /* A cell this node has not learned yet: the client retries. */
        tasks_finish(t->srv, r->req, GS_EUNAVAILABLE, 0, NULL, 0);
        free(r);
        return;
    }
    const char *region = cell.region;
    if (method_carries_pii(r->req->header.method) && strcmp(region, t->srv->cfg->region) != 0) {
        tasks_wrong_region(t, r->req, r->user_id, cell_id, region);
        free(r);
        return;
    }
    uint64_t now = uv_now(t->srv->loop);
    struct gs_call_options o = {
        .timeout_ms = r->req->deadline > now ? (unsigned)(r->req->deadline - now) : 1,
        .client_id = r->req->header.client_id,
        .client_seq = r->req->header.client_seq,
        .flags = WIRE_FLAG_FORWARDED,
    };
    gs_client *c = tasks_cell(t, cell_id);
    r->cell_id = cell_id;
    if (c == NULL || gs_client_call(c, r->req->header.method, r->req->body, r->req->len, &o,
                                    routed_answer_cb, r) != 0) {
        tasks_finish(t->srv, r->req, GS_EUNAVAILABLE, 0, NULL, 0);
        free(r);
    }
}

static void routed_route_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                            void *data)
{
    (void)leader_id;
    struct routed *r = data;
    Geoscale__GetRouteResponse *resp =
        status == 0 ? geoscale__get_route_response__unpack(NULL, len, body) : NULL;
    if (resp == NULL || resp->route == NULL) {
        /* No route from this region's directory replica (a signup it has
         * not seen yet, or the directory is out of reach): the cell that
         * allocated the id is where the user was placed, and it answers
         * with authority (NOT_FOUND, or WRONG_CELL were the user moved). */
        if (resp != NULL) {
            geoscale__get_route_response__free_unpacked(resp, NULL);
        }
        uint32_t cell_id = (uint32_t)(r->user_id >> 40);
        struct route_cell known;
        if (tasks_cell_info(r->t, cell_id, &known) != 0) {
            tasks_finish(r->t->srv, r->req, status == 0 ? GS_ENOTFOUND : status, 0, NULL, 0);
            free(r);
            return;
        }
        routed_send(r, cell_id);
        return;
    }
    uint32_t cell_id = resp->route->cell_id;
    /* Keyed by the routes version, not the directory version (which moves
     * with every signup): an answer from a replica that has not seen the
     * latest route change is refused by the cache. */
    route_cache_put_user(r->t->routes, r->user_id, cell_id, resp->routes_version);
    geoscale__get_route_response__free_unpacked(resp, NULL);
    routed_send(r, cell_id);
}

static void routed_lookup_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                             void *data)
{
    (void)leader_id;
    struct routed *r = data;
    Geoscale__LookupUsernameResponse *resp =
        status == 0 ? geoscale__lookup_username_response__unpack(NULL, len, body) : NULL;
    if (resp == NULL || resp->route == NULL) {
        tasks_finish(r->t->srv, r->req, status == 0 ? GS_ENOTFOUND : status, 0, NULL, 0);
        if (resp != NULL) {
            geoscale__lookup_username_response__free_unpacked(resp, NULL);
        }
        free(r);
        return;
    }
    r->user_id = resp->route->user_id;
    uint32_t cell_id = resp->route->cell_id;
    geoscale__lookup_username_response__free_unpacked(resp, NULL);
    routed_send(r, cell_id);
}

/* GetUser by username: which cell holds the name is the directory's to say
 * (asked with the name's keyed hash, never the name). */
static void tasks_route_username(struct cluster_tasks *t, struct server_request *req,
                                 const char *username)
{
    struct routed *r = calloc(1, sizeof *r);
    if (r == NULL || request_hold(req, REQ_FORWARDING) != 0) {
        free(r);
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    r->t = t;
    r->req = req;
    const struct node_config *cfg = t->srv->cfg;
    uint8_t hash[KEY_USERNAME_HASH_LEN];
    key_username_hash(cfg->username_hash_key, cfg->username_hash_key_len, username,
                      strlen(username), hash);
    Geoscale__LookupUsernameRequest rq = GEOSCALE__LOOKUP_USERNAME_REQUEST__INIT;
    rq.hash.data = hash;
    rq.hash.len = sizeof hash;
    gs_client *dir = tasks_directory(t);
    if (dir == NULL || tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_LOOKUP_USERNAME, &rq.base,
                                  NULL, routed_lookup_cb, r) != 0) {
        tasks_finish(t->srv, req, GS_EUNAVAILABLE, 0, NULL, 0);
        free(r);
    }
}

bool cluster_tasks_dispatch(struct cluster_tasks *t, struct server_request *req)
{
    struct server *srv = t->srv;
    if (t->stopping || req->method->group != METHOD_GROUP_CELL ||
        req->method->kind == METHOD_KIND_LOCAL || (req->header.flags & WIRE_FLAG_FORWARDED) != 0) {
        return false;
    }
    if (req->header.method == GEOSCALE__METHOD__METHOD_CREATE_USER) {
        Geoscale__CreateUserRequest *cu =
            geoscale__create_user_request__unpack(NULL, req->len, req->body);
        if (cu == NULL) {
            return false; /* validated already; cannot happen */
        }
        if (cu->user_id != 0) {
            /* Ids are the directory's to assign. */
            geoscale__create_user_request__free_unpacked(cu, NULL);
            request_reply(req, GS_EINVAL, 0, NULL, 0);
            return true;
        }
        tasks_signup(t, req, cu);
        geoscale__create_user_request__free_unpacked(cu, NULL);
        return true;
    }
    uint64_t user_id = req->subject; /* found by the validation */
    if (user_id == 0 && req->header.method == GEOSCALE__METHOD__METHOD_GET_USER) {
        Geoscale__GetUserRequest *gu =
            geoscale__get_user_request__unpack(NULL, req->len, req->body);
        if (gu != NULL && gu->username[0] != '\0') {
            tasks_route_username(t, req, gu->username);
            geoscale__get_user_request__free_unpacked(gu, NULL);
            return true;
        }
        if (gu != NULL) {
            geoscale__get_user_request__free_unpacked(gu, NULL);
        }
    }
    if (user_id == 0) {
        return false;
    }
    /* Ids carry the cell that allocated them: a user of this node's cell is
     * served here (the cell itself checks ownership). */
    if (srv->groups[METHOD_GROUP_CELL] != NULL && (user_id >> 40) == srv->cfg->cell_id) {
        return false;
    }
    struct routed *r = calloc(1, sizeof *r);
    if (r == NULL || request_hold(req, REQ_FORWARDING) != 0) {
        free(r);
        request_reply(req, GS_ENOMEM, 0, NULL, 0);
        return true;
    }
    r->t = t;
    r->req = req;
    r->user_id = user_id;
    uint32_t cell_id = 0;
    if (route_cache_get_user(t->routes, user_id, &cell_id) == 0) {
        routed_send(r, cell_id);
        return true;
    }
    Geoscale__GetRouteRequest rq = GEOSCALE__GET_ROUTE_REQUEST__INIT;
    rq.user_id = user_id;
    gs_client *dir = tasks_directory(t);
    if (dir == NULL || tasks_call(dir, GEOSCALE__METHOD__METHOD_DIRECTORY_GET_ROUTE, &rq.base, NULL,
                                  routed_route_cb, r) != 0) {
        tasks_finish(srv, req, GS_EUNAVAILABLE, 0, NULL, 0);
        free(r);
    }
    return true;
}

/* ------------------------------------------------------------ life */

int cluster_tasks_start(struct server *srv, struct cluster_tasks **out)
{
    struct cluster_tasks *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return GS_ENOMEM;
    }
    t->srv = srv;
    /* The route cache is read on this (the server's) thread only. */
    route_cache_thread_register();
    if (route_cache_new(TASKS_ROUTE_CACHE_ENTRIES, &t->routes) != 0) {
        free(t);
        return GS_ENOMEM;
    }
    *out = t;
    return 0;
}

void cluster_tasks_stop(struct cluster_tasks *t)
{
    if (t->stopping) {
        return;
    }
    t->stopping = true;
    if (t->ship != NULL) {
        /* The group or a call still holds it: it frees itself. */
        t->ship->orphan = true;
        t->ship = NULL;
    }
    if (t->metadata != NULL) {
        gs_client_close(t->metadata, tasks_client_closed, t);
        t->metadata = NULL;
    }
    if (t->directory != NULL) {
        gs_client_close(t->directory, tasks_client_closed, t);
        t->directory = NULL;
    }
    for (size_t i = 0; i < t->n_cells; i++) {
        gs_client_close(t->cells[i].client, tasks_client_closed, t);
    }
    t->n_cells = 0;
    if (t->open_clients == 0) {
        route_cache_free(t->routes);
        free(t->cells);
        free(t);
    }
}
