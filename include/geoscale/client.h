/*
 * libgeoscale-client: the C client library of GeoScale.
 *
 * Two layers:
 *
 * 1. An asynchronous client on the caller's libuv loop (gs_client_*). Many
 *    requests in flight over few connections, answered out of order.
 *    Every callback runs on that loop. Not thread-safe: use a client from the
 *    loop's thread only.
 *
 * 2. A blocking convenience client (gs_sync_*) that runs a private loop
 *    inside each call. One thread at a time per gs_sync.
 *
 * Request and response bodies are the protobuf messages of
 * include/geoscale/geoscale.proto (protobuf-c types from geoscale.pb-c.h).
 *
 * Routing: the client is given one or more seed addresses ("host:port") of
 * nodes of a cell. Any node accepts any request and forwards it to the
 * cell leader; every response names the leader (leader_id), and the client
 * learns node addresses (CellStatus members) so that later requests go to
 * the leader directly.
 * In a cluster of many cells a request about a user (GetUser by id,
 * UpdateUser, the edge methods by actor, lists, settings) belongs to the
 * user's home cell: the cell the user id names (GS_USER_CELL), unless a
 * RouteHint said otherwise. The client caches the members of cells it has
 * heard of (from WRONG_CELL RouteHints, and from DirectoryListCells, which it
 * asks for when a request names a cell it does not know) and sends such
 * requests straight to that cell's leader, tracking each cell's leader
 * separately. A node refuses to carry PII out of its home region: it
 * answers WRONG_CELL with a RouteHint naming the home cell's nodes, and the
 * client follows it at once (at most 3 times per call) with the same
 * idempotency key. The user is found from gs_call_options.user_id, or by
 * decoding the request body once routes are known; gs_sync_call finds it
 * itself.
 *
 * Retries: each write carries an idempotency key (client_id, client_seq);
 * client_id is random per gs_client, client_seq counts up. When a request
 * fails with a retryable status (UNAVAILABLE, NOT_LEADER, OUTCOME_UNKNOWN,
 * CLOSED, CONNECT) the client retries it, with the same key, on another node
 * with a short backoff until its timeout expires. The cell applies a key at
 * most once, so a retried write is never applied twice. The final status is
 * what the callback receives.
 *
 * Like other libuv programs, an application using this library must ignore
 * SIGPIPE (signal(SIGPIPE, SIG_IGN)); the library does not change signal
 * dispositions.
 */
#ifndef GEOSCALE_CLIENT_H
#define GEOSCALE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "geoscale/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gs_client gs_client;

struct gs_client_options {
    unsigned timeout_ms;    /* per call, including retries; 0 = 5000 */
    unsigned max_inflight;  /* per connection; 0 = 1024; beyond it calls queue */
    uint32_t max_body;      /* largest response body accepted; 0 = 4 MiB */
    int pin;                /* 1: talk only to the first seed, never follow
                               the leader and never retry elsewhere (admin
                               calls to a given node, and node-to-node
                               forwarding) */
    int no_retry;           /* 1: report the first failure, do not retry */
};

/* Options of one call; NULL means all defaults. */
struct gs_call_options {
    unsigned timeout_ms;    /* 0 = the client's timeout */
    uint64_t client_id;     /* with client_seq != 0: use this idempotency key
                               instead of a fresh one (forwarding) */
    uint64_t client_seq;
    uint16_t flags;         /* wire flags to set (WIRE_FLAG_FORWARDED) */
    uint64_t user_id;       /* the user the request is about, for routing;
                               0 = find it in the body when needed */
};

/* The cell that allocated a user id (user_id = cell_id << 40 | sequence). */
#define GS_USER_CELL(user_id) ((uint32_t)((uint64_t)(user_id) >> 40))

/* Counters of a client's routing decisions. */
struct gs_client_stats {
    uint64_t direct;    /* attempts sent to a known cell other than the seeds' */
    uint64_t redirects; /* WRONG_CELL RouteHints followed */
    uint64_t cells;     /* cells known besides the seeds' */
};

/*
 * Completion of a call: status is 0 or a negative GS_E* code; leader_id the
 * leader named by the last response (0 = unknown); body/len the packed
 * response message when status == 0 (may be empty). body is valid only during
 * the callback. Fires exactly once per successful gs_client_call, also
 * when the client is closed (status GS_ESHUTDOWN).
 */
typedef void (*gs_call_cb)(int status,
                           uint32_t leader_id,
                           const uint8_t *body,
                           size_t len,
                           void *data);

/* Create a client on loop. seeds: n >= 1 "host:port" strings, copied.
 * opts may be NULL. Connections are opened lazily. Returns 0 or GS_EINVAL
 * (bad address) / GS_ENOMEM. */
int gs_client_open(uv_loop_t *loop,
                   const char *const *seeds,
                   size_t n,
                   const struct gs_client_options *opts,
                   gs_client **out);

/*
 * Send a request. body (len bytes, a packed request message of the method)
 * is copied. Returns 0 and later calls cb exactly once, or returns a negative
 * code (GS_EINVAL for an unknown method, GS_ETOOBIG, GS_ESHUTDOWN after
 * close) and never calls cb.
 */
int gs_client_call(gs_client *c,
                   uint16_t method,
                   const uint8_t *body,
                   size_t len,
                   const struct gs_call_options *opts,
                   gs_call_cb cb,
                   void *data);

/* Copy the client's routing counters into *out. */
void gs_client_get_stats(const gs_client *c, struct gs_client_stats *out);

/* Close: fail pending calls with GS_ESHUTDOWN, close connections, and free
 * the client once its handles are closed (then closed_cb(data) runs, if
 * given). The loop must keep running until then. */
void gs_client_close(gs_client *c, void (*closed_cb)(void *data), void *data);

/* ------------------------------------------------------------------ blocking */

typedef struct gs_sync gs_sync;

/* Open a blocking client (same arguments as gs_client_open). */
int gs_sync_open(const char *const *seeds,
                 size_t n,
                 const struct gs_client_options *opts,
                 gs_sync **out);

/*
 * Call `method` with request message req and wait. On 0, *resp receives the
 * unpacked response message (free it with protobuf_c_message_free_unpacked(
 * *resp, NULL)). On error *resp is NULL. leader_id may be NULL.
 */
int gs_sync_call(gs_sync *s,
                 uint16_t method,
                 const ProtobufCMessage *req,
                 ProtobufCMessage **resp,
                 uint32_t *leader_id);

/* The asynchronous client under s (for gs_client_get_stats); owned by s. */
gs_client *gs_sync_client(gs_sync *s);

/* Close and free (NULL is ok). */
void gs_sync_close(gs_sync *s);

#ifdef __cplusplus
}
#endif

#endif /* GEOSCALE_CLIENT_H */
