/*
 * Internals shared by server.c (listener, dispatch, forwarding, deadlines)
 * and session.c (one client connection and the life of its requests).
 * Not a public interface: only those two files include it.
 */
#ifndef GS_NET_SESSION_H
#define GS_NET_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../engine/methods.h"
#include "../raft/group.h"
#include "../raft/mailbox.h"
#include "cluster_config.h"
#include "config.h"
#include "geoscale/client.h"
#include "wire.h"

#define SERVER_READ_BUF (64 * 1024)
#define HEAP_NONE SIZE_MAX

/*
 * Life of a request on this node (asserted on every move, see
 * request_set_state in session.c):
 *
 *   RECEIVED --submit--> IN_GROUP --NOT_LEADER--> FORWARDING
 *      |                   |    \                   |    \
 *      |                   |     `----------.       |     |
 *      v                   v                 v      v     v
 *   REPLIED <-----------answer----------- ORPHANED  REPLIED
 *      |                                     |
 *      `--> FREED <---- holder completed ----'
 *
 * RECEIVED:   decoded on its session, nobody else holds it.
 * IN_GROUP:   the group holds it (its group_request is in the group).
 * FORWARDING: a gs_client call to the leader holds it.
 * REPLIED:    the answer is in the session's output; freed at once.
 * ORPHANED:   no answer will be sent by this request any more (its
 *             connection closed, or its deadline passed and the timeout
 *             answer went out) but the group or the forward still holds it:
 *             freed when that holder completes, its late answer dropped.
 * FREED:      set just before free(), so that a use after free under a
 *             sanitizer shows the state.
 */
enum request_state {
    REQ_RECEIVED = 0,
    REQ_IN_GROUP,
    REQ_FORWARDING,
    REQ_REPLIED,
    REQ_ORPHANED,
    REQ_FREED,
};

struct session;
struct server;

struct server_request {
    struct group_request group; /* group.data = this; must stay first */
    struct server *srv;
    struct session *session;            /* NULL once orphaned or replied */
    struct server_request *prev, *next; /* in session->held while held */
    enum request_state state;
    struct wire_header header; /* as received */
    const struct method_info *method;
    uint8_t *body; /* owned; malloc'd by the wire reader */
    size_t len;
    uint64_t subject;   /* user of a cell request (method_subject), 0 = none */
    uint64_t deadline;  /* uv_now() ms at which it times out */
    size_t heap_index;  /* in srv->heap, HEAP_NONE when not */
    uint32_t leader_id; /* leader named by the group (forwarding) */
};

/* A growable byte buffer of the output path. */
struct outbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

struct session {
    struct server *srv;
    uv_tcp_t tcp; /* tcp.data = this; freed in its close cb */
    uint64_t id;  /* for logs: never the peer's address (PII) */
    struct wire_reader reader;
    struct session *prev, *next; /* in srv->sessions */
    struct server_request *held; /* requests IN_GROUP / FORWARDING */
    unsigned n_held;
    uint64_t last_active; /* uv_now(): last frame in, answer out, write done */
    bool closing;         /* uv_close called */
    bool reading;         /* uv_read_start active */
    bool failed;          /* protocol error: close after the flush */
    bool counted;         /* counts against max_connections */
    /* Output: responses are appended to `pending`; one uv_write at a time
     * sends `writing`. Everything answered in one loop turn goes out in one
     * write (the flush runs at the end of each callback). */
    struct outbuf pending;
    struct outbuf writing;
    uv_write_t write_req;
    bool write_active;
    bool dirty; /* in srv->dirty */
    struct session *dirty_next;
};

struct forwarder {
    uint64_t node_id;
    gs_client *client; /* opened lazily on the first forward to that node */
};

struct server {
    uv_loop_t *loop;
    const struct node_config *cfg;
    struct group *groups[METHOD_GROUPS]; /* hosted groups; all NULL after server_stop */
    uv_tcp_t listener;
    uv_timer_t timer;         /* the one repeating timer: deadlines, idle */
    struct mailbox reply_box; /* answers of the group */
    struct session *sessions;
    size_t n_sessions; /* counted against max_connections */
    uint64_t next_session_id;
    struct session *dirty; /* sessions with output to flush */
    const struct cluster_config *cluster; /* NULL for a lone cell */
    struct cluster_tasks *tasks;          /* with a cluster: signup, routing */
    struct forwarder *fwd;                /* one per node forwarded to */
    size_t n_fwd, cap_fwd;
    struct server_request **heap; /* requests held, min-heap by deadline */
    size_t heap_len, heap_cap;
    size_t n_requests; /* allocated, any state */
    uint64_t next_idle_check;
    unsigned n_open; /* handles, sessions and clients not closed */
    bool stopping;
    bool mailbox_closed;
    void (*closed_cb)(void *data);
    void *closed_data;
    uint8_t read_buf[SERVER_READ_BUF]; /* shared: read_cb consumes it all */
};

/* ---- session.c */

/* Accept a connection from srv->listener (or refuse it over the limit). */
void session_accept(struct server *srv);

/* Close the connection; requests still held become orphans. Idempotent. */
void session_close(struct session *s, const char *reason);

/* Send every session's pending output. Call at the end of each callback that
 * may have answered requests. */
void server_flush(struct server *srv);

/* Answer a request nobody else holds (RECEIVED, or IN_GROUP / FORWARDING
 * whose holder just completed) and free it. status 0 or GS_E*; body may be
 * NULL. */
void request_reply(struct server_request *req, int status, uint32_t leader_id, const uint8_t *body,
                   size_t len);

/* The request is handed to a holder: RECEIVED -> IN_GROUP or FORWARDING, or
 * IN_GROUP -> FORWARDING. Returns 0 or GS_ENOMEM (nothing changed). */
int request_hold(struct server_request *req, enum request_state state);

/* While a holder still has it: send `status` (0 = send nothing) and orphan
 * the request. */
void request_abandon(struct server_request *req, int status);

/* The holder of an orphan completed: free it. */
void request_release(struct server_request *req);

/* ---- server.c */

/* Dispatch a decoded, validated request (state RECEIVED). */
void server_dispatch(struct server *srv, struct server_request *req);

int server_deadline_add(struct server *srv, struct server_request *req);
void server_deadline_remove(struct server *srv, struct server_request *req);

/* The slot in srv->groups of the group a CheckpointInfo, CheckpointChunk
 * or LeaderCheck request names (a CheckpointInfoRequest.Group):
 * METHOD_GROUP_*, or -1 for an unknown kind. */
int server_group_slot(int group);

/* ---- transfer.c */

/* Serve CheckpointInfo / CheckpointChunk (state RECEIVED) of any group the
 * node hosts, to that group's members only, off the loop. */
void server_transfer(struct server *srv, struct server_request *req);

/* A session handle finished closing. */
void server_handle_closed(struct server *srv);

#endif /* GS_NET_SESSION_H */
