/* Leader checks (see leader_check.h). */
#include "leader_check.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/log.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

/* A peer of the group and the connection a check uses, opened on first
 * use (pinned to that node, no retries: a failed call is a refusal). */
struct lc_peer {
    uint64_t id;
    char client_address[GROUP_ADDRESS_MAX];
    gs_client *client;
};

struct leader_check {
    uv_loop_t *loop;
    uint64_t self_id;
    int group;
    uint32_t group_id;
    unsigned timeout_ms;
    struct lc_peer *peers;
    size_t n_peers;
    unsigned closing; /* clients still closing, once leader_check_close ran */
};

/* One question to one voter. */
struct lc_call {
    struct leader_check_round *round;
    uint64_t gen;
    uint64_t peer_id;
};

int leader_check_init(struct leader_check **out, uv_loop_t *loop, uint64_t self_id,
                      const struct group_peer *peers, size_t n_peers, int group,
                      uint32_t group_id, unsigned timeout_ms)
{
    struct leader_check *lc = calloc(1, sizeof *lc);
    if (lc == NULL) {
        return GS_ENOMEM;
    }
    lc->peers = calloc(n_peers > 0 ? n_peers : 1, sizeof *lc->peers);
    if (lc->peers == NULL) {
        free(lc);
        return GS_ENOMEM;
    }
    for (size_t i = 0; i < n_peers; i++) {
        lc->peers[i].id = peers[i].id;
        memcpy(lc->peers[i].client_address, peers[i].client_address,
               sizeof lc->peers[i].client_address);
        lc->peers[i].client_address[sizeof lc->peers[i].client_address - 1] = '\0';
    }
    lc->n_peers = n_peers;
    lc->loop = loop;
    lc->self_id = self_id;
    lc->group = group;
    lc->group_id = group_id;
    lc->timeout_ms = timeout_ms;
    *out = lc;
    return 0;
}

/* The connection to voter id; NULL when the group's configuration does not
 * name its client address (a voter added later) or it cannot be made. */
static gs_client *lc_client(struct leader_check *lc, uint64_t id)
{
    struct lc_peer *p = NULL;
    for (size_t i = 0; i < lc->n_peers && p == NULL; i++) {
        if (lc->peers[i].id == id) {
            p = &lc->peers[i];
        }
    }
    if (p == NULL || p->client_address[0] == '\0') {
        return NULL;
    }
    if (p->client == NULL) {
        const char *seeds[1] = {p->client_address};
        struct gs_client_options opts = {
            .timeout_ms = lc->timeout_ms,
            .max_body = 1024,
            .pin = 1,
            .no_retry = 1,
        };
        int rv = gs_client_open(lc->loop, seeds, 1, &opts, &p->client);
        if (rv != 0) {
            log_warn("group", "event=leader_check_client_failed node_id=%" PRIu64 " code=%s", id,
                     gs_error_name(rv));
            p->client = NULL;
        }
    }
    return p->client;
}

/* Settle the round if its outcome is known; true if it settled. */
static bool lc_settled(struct leader_check_round *round, bool *confirmed)
{
    if (round->acks >= round->needed) {
        *confirmed = true;
    } else if (round->voters - round->refusals < round->needed) {
        *confirmed = false;
    } else {
        return false;
    }
    round->inflight = false;
    round->gen++;
    return true;
}

static void lc_call_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                       void *data)
{
    (void)leader_id;
    struct lc_call *call = data;
    struct leader_check_round *round = call->round;
    bool current = round->inflight && round->gen == call->gen;
    uint64_t peer_id = call->peer_id;
    free(call);
    if (!current) {
        return; /* settled already, or abandoned */
    }
    bool ack = false;
    if (status == 0) {
        Geoscale__LeaderCheckResponse *resp =
            geoscale__leader_check_response__unpack(NULL, len, body);
        if (resp != NULL) {
            ack = resp->node_id == peer_id && resp->term <= round->term;
            if (!ack) {
                log_debug("group",
                          "event=leader_check_refused node_id=%" PRIu64 " answered_by=%" PRIu64
                          " term=%" PRIu64 " peer_term=%" PRIu64,
                          peer_id, resp->node_id, round->term, resp->term);
            }
            geoscale__leader_check_response__free_unpacked(resp, NULL);
        }
    } else {
        log_debug("group", "event=leader_check_failed node_id=%" PRIu64 " code=%s", peer_id,
                  gs_error_name(status));
    }
    if (ack) {
        round->acks++;
    } else {
        round->refusals++;
    }
    bool confirmed;
    if (lc_settled(round, &confirmed)) {
        round->cb(round, confirmed);
    }
}

int leader_check_ask(struct leader_check *lc, struct leader_check_round *round,
                     const struct raft_configuration *conf, uint64_t term, leader_check_cb cb)
{
    assert(!round->inflight);
    round->cb = cb;
    round->term = term;
    round->acks = round->refusals = round->voters = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].role == RAFT_VOTER) {
            round->voters++;
        }
    }
    round->needed = round->voters / 2 + 1;
    round->inflight = true;

    Geoscale__LeaderCheckRequest req = GEOSCALE__LEADER_CHECK_REQUEST__INIT;
    req.group = (Geoscale__CheckpointInfoRequest__Group)lc->group;
    req.cell_id = lc->group_id;
    req.term = term;
    uint8_t body[64];
    size_t len = geoscale__leader_check_request__get_packed_size(&req);
    assert(len <= sizeof body); /* three varints */
    geoscale__leader_check_request__pack(&req, body);

    uint64_t gen = round->gen;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        if (s->role != RAFT_VOTER) {
            continue;
        }
        if (s->id == lc->self_id) {
            round->acks++; /* this node leads `term` now, after the reads came */
            continue;
        }
        gs_client *c = lc_client(lc, s->id);
        struct lc_call *call = c != NULL ? malloc(sizeof *call) : NULL;
        if (call == NULL) {
            round->refusals++;
            continue;
        }
        call->round = round;
        call->gen = gen;
        call->peer_id = s->id;
        struct gs_call_options opts = {.timeout_ms = lc->timeout_ms};
        int rv = gs_client_call(c, GEOSCALE__METHOD__METHOD_LEADER_CHECK, body, len, &opts,
                                lc_call_cb, call);
        if (rv != 0) {
            free(call);
            round->refusals++;
        }
    }
    bool confirmed;
    if (lc_settled(round, &confirmed)) {
        /* Nobody else to ask, or too few could be asked (no answer comes
         * back within this call). Answers that arrive later see the
         * bumped generation. */
        return confirmed ? 1 : GS_EUNAVAILABLE;
    }
    return 0;
}

void leader_check_abandon(struct leader_check_round *round)
{
    if (round->inflight) {
        round->inflight = false;
        round->gen++;
    }
}

static void lc_client_closed(void *data)
{
    struct leader_check *lc = data;
    assert(lc->closing > 0);
    if (--lc->closing == 0) {
        free(lc->peers);
        free(lc);
    }
}

void leader_check_close(struct leader_check *lc)
{
    if (lc == NULL) {
        return;
    }
    lc->closing = 1; /* held until every client below is on its way */
    for (size_t i = 0; i < lc->n_peers; i++) {
        if (lc->peers[i].client != NULL) {
            lc->closing++;
            gs_client_close(lc->peers[i].client, lc_client_closed, lc);
            lc->peers[i].client = NULL;
        }
    }
    lc_client_closed(lc);
}
