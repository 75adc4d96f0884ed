/*
 * A session: one client connection of the node's server, and the life of
 * the requests that arrive on it (the "gateway" of dqlite's layering).
 *
 * Input. libuv reads into the server's one shared buffer (all sessions run
 * on one loop and read_cb consumes every byte before returning, so one
 * buffer serves them all); the session's wire_reader copies what it needs.
 * A frame body is allocated only after its header passed the size check, so
 * an oversized length costs nothing. Each complete frame is checked in this
 * order, cheapest first, and answered without touching the group when it
 * fails:
 *   bad magic / version / type, body over the limit -> error frame, close
 *   unknown method                                   -> UNIMPLEMENTED, stay
 *   too many requests in flight on this connection   -> BUSY, stay
 *   body not a valid request of its method            -> INVALID / TOO_BIG
 * and only then dispatched (server.c).
 *
 * Output. Answers are appended to the session's `pending` buffer; the
 * flush at the end of every callback turns everything answered in that turn
 * into one uv_write. While a write is in flight new answers keep piling up
 * in `pending` and leave together when it completes. A client that does not
 * read stops being read from once its unsent output passes a high-water
 * mark, so it cannot make the node buffer without bound.
 *
 * Requests. Each one carries the explicit state machine drawn in session.h;
 * request_set_state() asserts every transition and the invariants of the
 * new state (who holds it, whether it is in the deadline heap, whether it is
 * linked in its session). A request can thus never answer twice, and never
 * be freed while the group or a forward still holds it: when its connection
 * closes first it becomes an orphan, freed by the holder's completion.
 *
 * Logs name sessions by a counter, never by the peer's address: client IP
 * addresses are PII.
 */
#include "session.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/cell_fsm.h"
#include "../engine/directory_fsm.h"
#include "../engine/metadata_fsm.h"
#include "../engine/log.h"
#include "geoscale/errors.h"

/* Stop reading a client whose unsent output exceeds this. */
#define SESSION_OUT_HIGH (8u * 1024 * 1024)
/* Release output buffers grown past this once they are drained. */
#define SESSION_OUT_KEEP (256u * 1024)

/* ------------------------------------------------------------ state machine */

static const bool request_transitions[REQ_FREED + 1][REQ_FREED + 1] = {
    /* RECEIVED -> FORWARDING: a group this node does not host. */
    [REQ_RECEIVED] = {[REQ_IN_GROUP] = true, [REQ_FORWARDING] = true, [REQ_REPLIED] = true},
    [REQ_IN_GROUP] = {[REQ_FORWARDING] = true, [REQ_REPLIED] = true, [REQ_ORPHANED] = true},
    [REQ_FORWARDING] = {[REQ_REPLIED] = true, [REQ_ORPHANED] = true},
    [REQ_REPLIED] = {[REQ_FREED] = true},
    [REQ_ORPHANED] = {[REQ_FREED] = true},
};

/* The invariant of each state. */
static void request_check(const struct server_request *req)
{
    switch (req->state) {
    case REQ_RECEIVED:
        assert(req->session != NULL);
        assert(req->heap_index == HEAP_NONE);
        break;
    case REQ_IN_GROUP:
    case REQ_FORWARDING:
        assert(req->session != NULL);
        assert(req->heap_index != HEAP_NONE);
        break;
    case REQ_REPLIED:
    case REQ_ORPHANED:
    case REQ_FREED:
        assert(req->session == NULL);
        assert(req->heap_index == HEAP_NONE);
        assert(req->prev == NULL && req->next == NULL);
        break;
    }
}

static void request_set_state(struct server_request *req, enum request_state next)
{
    assert(req->state <= REQ_FREED && next <= REQ_FREED);
    assert(request_transitions[req->state][next]);
    req->state = next;
    request_check(req);
}

static struct server_request *request_new(struct session *s, const struct wire_header *h,
                                          uint8_t *body)
{
    struct server_request *req = calloc(1, sizeof *req);
    if (req == NULL) {
        return NULL;
    }
    req->srv = s->srv;
    req->session = s;
    req->state = REQ_RECEIVED;
    req->header = *h;
    req->body = body;
    req->len = h->body_len;
    req->heap_index = HEAP_NONE;
    unsigned deadline_ms =
        h->deadline_ms != 0 ? h->deadline_ms : s->srv->cfg->limits.default_deadline_ms;
    req->deadline = uv_now(s->srv->loop) + deadline_ms;
    s->srv->n_requests++;
    return req;
}

static void request_free(struct server_request *req)
{
    request_set_state(req, REQ_FREED);
    assert(req->srv->n_requests > 0);
    req->srv->n_requests--;
    free(req->body);
    free(req);
}

/* Unlink a held request from its session and the deadline heap. */
static void request_detach(struct server_request *req)
{
    struct session *s = req->session;
    assert(s != NULL);
    if (req->state == REQ_IN_GROUP || req->state == REQ_FORWARDING) {
        if (req->prev != NULL) {
            req->prev->next = req->next;
        } else {
            s->held = req->next;
        }
        if (req->next != NULL) {
            req->next->prev = req->prev;
        }
        req->prev = req->next = NULL;
        assert(s->n_held > 0);
        s->n_held--;
        server_deadline_remove(req->srv, req);
    }
    req->session = NULL;
}

/* ------------------------------------------------------------ output */

static int outbuf_reserve(struct outbuf *b, size_t extra)
{
    if (b->cap - b->len >= extra) {
        return 0;
    }
    size_t cap = b->cap != 0 ? b->cap : 4096;
    while (cap - b->len < extra) {
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL) {
        return GS_ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static void session_mark_dirty(struct session *s)
{
    if (!s->dirty) {
        s->dirty = true;
        s->dirty_next = s->srv->dirty;
        s->srv->dirty = s;
    }
}

/* Append one response frame answering request header h. */
static void session_send(struct session *s, const struct wire_header *h, int status,
                         uint32_t leader_id, const uint8_t *body, size_t len)
{
    if (s->closing) {
        return;
    }
    if (status != 0 && status != GS_EWRONGCELL) {
        len = 0; /* errors carry no body, but for WRONG_CELL's RouteHint */
    } else if (len > s->srv->cfg->limits.max_frame_bytes) {
        /* The client would refuse the frame and drop the connection. */
        log_warn("session", "event=response_too_big session_id=%" PRIu64 " method=%u bytes=%zu",
                 s->id, h->method, len);
        status = GS_ETOOBIG;
        len = 0;
    }
    struct wire_header out = {
        .version = WIRE_VERSION,
        .type = WIRE_TYPE_RESPONSE,
        .method = h->method,
        .request_id = h->request_id,
        .client_id = h->client_id,
        .client_seq = h->client_seq,
        .status = (uint16_t)(status < 0 ? -status : status),
        .leader_id = leader_id,
        .body_len = (uint32_t)len,
    };
    if (outbuf_reserve(&s->pending, WIRE_HEADER_SIZE + len) != 0) {
        log_error("session", "event=out_of_memory session_id=%" PRIu64, s->id);
        session_close(s, "out_of_memory");
        return;
    }
    wire_header_encode(&out, s->pending.data + s->pending.len);
    s->pending.len += WIRE_HEADER_SIZE;
    if (len > 0) {
        memcpy(s->pending.data + s->pending.len, body, len);
        s->pending.len += len;
    }
    s->last_active = uv_now(s->srv->loop);
    session_mark_dirty(s);
}

static void session_read_start(struct session *s);

static void session_write_cb(uv_write_t *wr, int status)
{
    struct session *s = wr->data;
    s->write_active = false;
    s->writing.len = 0;
    if (s->writing.cap > SESSION_OUT_KEEP) {
        free(s->writing.data);
        s->writing = (struct outbuf){0};
    }
    if (s->closing) {
        return; /* cancelled by uv_close; the close cb frees the session */
    }
    if (status < 0) {
        log_debug("session", "event=write_error session_id=%" PRIu64 " error=%s", s->id,
                  uv_err_name(status));
        session_close(s, "write_error");
        return;
    }
    s->last_active = uv_now(s->srv->loop); /* the client is reading */
    if (s->pending.len > 0) {
        session_mark_dirty(s);
        server_flush(s->srv);
        return;
    }
    if (s->failed) {
        session_close(s, "protocol_error");
        return;
    }
    if (s->pending.cap > SESSION_OUT_KEEP) {
        free(s->pending.data);
        s->pending = (struct outbuf){0};
    }
    session_read_start(s);
}

static void session_flush(struct session *s)
{
    if (s->closing || s->write_active || s->pending.len == 0) {
        return;
    }
    struct outbuf tmp = s->writing;
    s->writing = s->pending;
    s->pending = tmp;
    s->pending.len = 0;
    uv_buf_t buf = uv_buf_init((char *)s->writing.data, (unsigned)s->writing.len);
    s->write_req.data = s;
    int rv = uv_write(&s->write_req, (uv_stream_t *)&s->tcp, &buf, 1, session_write_cb);
    if (rv != 0) {
        log_debug("session", "event=write_error session_id=%" PRIu64 " error=%s", s->id,
                  uv_err_name(rv));
        session_close(s, "write_error");
        return;
    }
    s->write_active = true;
    /* Back-pressure: a client that sends without reading waits. */
    if (s->reading && s->writing.len + s->pending.len > SESSION_OUT_HIGH) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

void server_flush(struct server *srv)
{
    while (srv->dirty != NULL) {
        struct session *s = srv->dirty;
        srv->dirty = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
        session_flush(s);
    }
}

/* ------------------------------------------------------------ requests */

void request_reply(struct server_request *req, int status, uint32_t leader_id, const uint8_t *body,
                   size_t len)
{
    struct session *s = req->session;
    assert(s != NULL);
    /* Detach first: a send that fails closes the session, which must not
     * find this request among those it orphans. */
    request_detach(req);
    request_set_state(req, REQ_REPLIED);
    log_debug("session",
              "event=reply session_id=%" PRIu64 " request_id=%" PRIu64
              " method=%u status=%s leader_id=%u",
              s->id, req->header.request_id, req->header.method, gs_error_name(status), leader_id);
    session_send(s, &req->header, status, leader_id, body, len);
    request_free(req);
}

int request_hold(struct server_request *req, enum request_state state)
{
    struct session *s = req->session;
    assert(s != NULL);
    assert(state == REQ_IN_GROUP || state == REQ_FORWARDING);
    if (req->state == REQ_RECEIVED) {
        int rv = server_deadline_add(req->srv, req);
        if (rv != 0) {
            return rv;
        }
        req->prev = NULL;
        req->next = s->held;
        if (s->held != NULL) {
            s->held->prev = req;
        }
        s->held = req;
        s->n_held++;
    }
    request_set_state(req, state);
    return 0;
}

void request_abandon(struct server_request *req, int status)
{
    assert(req->state == REQ_IN_GROUP || req->state == REQ_FORWARDING);
    struct session *s = req->session;
    request_detach(req);
    request_set_state(req, REQ_ORPHANED);
    if (status != 0) {
        session_send(s, &req->header, status, 0, NULL, 0);
    }
}

void request_release(struct server_request *req)
{
    assert(req->state == REQ_ORPHANED);
    request_free(req);
}

/* ------------------------------------------------------------ input */

/* A frame-level violation: answer with an error frame if the request can be
 * named (the magic was right), then close once it is written. */
static void session_protocol_error(struct session *s, int code, const struct wire_header *h)
{
    struct wire_header named = {0};
    if (h != NULL) {
        named = *h;
    } else if (s->reader.header_have == WIRE_HEADER_SIZE &&
               memcmp(s->reader.header_buf, "GSP1", 4) == 0) {
        named = s->reader.header;
    }
    log_info("session", "event=protocol_error session_id=%" PRIu64 " code=%s request_id=%" PRIu64,
             s->id, gs_error_name(code), named.request_id);
    session_send(s, &named, code, 0, NULL, 0);
    s->failed = true;
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    if (!s->write_active && s->pending.len == 0) {
        session_close(s, "protocol_error");
    }
}

/* Check the body before anything acts on it. Cell methods are checked by
 * the cell's own rules (required fields, sizes); a local method's request
 * only has to decode as its message. */
static int session_validate(struct server_request *req, char *errmsg, size_t len)
{
    switch (req->method->kind == METHOD_KIND_LOCAL ? METHOD_GROUP_NODE : req->method->group) {
    case METHOD_GROUP_CELL:
        return cell_validate_request(req->header.method, req->body, req->len, &req->subject, errmsg,
                                     len);
    case METHOD_GROUP_DIRECTORY:
        return directory_validate_request(req->header.method, req->body, req->len, errmsg, len);
    case METHOD_GROUP_METADATA:
        return metadata_validate_request(req->header.method, req->body, req->len, errmsg, len);
    default:
        break;
    }
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(req->method->request, NULL, req->len, req->body);
    if (msg == NULL) {
        snprintf(errmsg, len, "%s: body is not a valid request message", req->method->name);
        return GS_EINVAL;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}

/* One complete frame; body (may be NULL) is ours. */
static void session_frame(struct session *s, const struct wire_header *h, uint8_t *body)
{
    struct server *srv = s->srv;
    s->last_active = uv_now(srv->loop);
    if (h->type != WIRE_TYPE_REQUEST) {
        free(body);
        session_protocol_error(s, GS_EPROTO, h);
        return;
    }
    struct server_request *req = request_new(s, h, body);
    if (req == NULL) {
        free(body);
        log_error("session", "event=out_of_memory session_id=%" PRIu64, s->id);
        session_send(s, h, GS_ENOMEM, 0, NULL, 0);
        return;
    }
    req->method = method_lookup(h->method);
    if (req->method == NULL) {
        request_reply(req, GS_EUNIMPL, 0, NULL, 0);
        return;
    }
    if (s->n_held >= srv->cfg->limits.max_inflight_per_connection) {
        log_debug("session", "event=busy session_id=%" PRIu64 " inflight=%u", s->id, s->n_held);
        request_reply(req, GS_EBUSY, 0, NULL, 0);
        return;
    }
    char errmsg[256];
    int rv = session_validate(req, errmsg, sizeof errmsg);
    if (rv != 0) {
        /* errmsg names the field, never its value. */
        log_debug("session",
                  "event=invalid_request session_id=%" PRIu64 " method=%s code=%s "
                  "detail=\"%s\"",
                  s->id, req->method->name, gs_error_name(rv), errmsg);
        request_reply(req, rv, 0, NULL, 0);
        return;
    }
    server_dispatch(srv, req);
}

static void session_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct session *s = handle->data;
    *buf = uv_buf_init((char *)s->srv->read_buf, sizeof s->srv->read_buf);
}

static void session_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct session *s = stream->data;
    struct server *srv = s->srv;
    if (nread < 0) {
        session_close(s, nread == UV_EOF ? "eof" : uv_err_name((int)nread));
        goto out;
    }
    const uint8_t *p = (const uint8_t *)buf->base;
    size_t left = (size_t)nread;
    while (left > 0 && !s->closing && !s->failed) {
        int ready = 0;
        long n = wire_reader_feed(&s->reader, p, left, &ready);
        if (n < 0) {
            session_protocol_error(s, (int)n, NULL);
            break;
        }
        assert((size_t)n <= left);
        p += n;
        left -= (size_t)n;
        if (ready) {
            struct wire_header h;
            uint8_t *body = NULL;
            wire_reader_take(&s->reader, &h, &body);
            session_frame(s, &h, body);
        } else if (n == 0) {
            break; /* cannot happen with a sane reader; do not spin */
        }
    }
out:
    server_flush(srv);
}

static void session_read_start(struct session *s)
{
    if (s->reading || s->closing || s->failed) {
        return;
    }
    int rv = uv_read_start((uv_stream_t *)&s->tcp, session_alloc_cb, session_read_cb);
    if (rv != 0) {
        session_close(s, uv_err_name(rv));
        return;
    }
    s->reading = true;
}

/* ------------------------------------------------------------ open, close */

static void session_closed_cb(uv_handle_t *handle)
{
    struct session *s = handle->data;
    struct server *srv = s->srv;
    assert(s->held == NULL && s->n_held == 0);
    assert(!s->dirty);
    wire_reader_close(&s->reader);
    free(s->pending.data);
    free(s->writing.data);
    free(s);
    server_handle_closed(srv);
}

void session_close(struct session *s, const char *reason)
{
    if (s->closing) {
        return;
    }
    struct server *srv = s->srv;
    s->closing = true;
    if (s->counted) {
        log_debug("session", "event=close session_id=%" PRIu64 " reason=%s orphaned=%u", s->id,
                  reason, s->n_held);
    }
    while (s->held != NULL) {
        request_abandon(s->held, 0);
    }
    if (s->dirty) {
        struct session **pp = &srv->dirty;
        while (*pp != s) {
            pp = &(*pp)->dirty_next;
        }
        *pp = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
    }
    if (s->counted) {
        if (s->prev != NULL) {
            s->prev->next = s->next;
        } else {
            srv->sessions = s->next;
        }
        if (s->next != NULL) {
            s->next->prev = s->prev;
        }
        s->prev = s->next = NULL;
        srv->n_sessions--;
        s->counted = false;
    }
    uv_close((uv_handle_t *)&s->tcp, session_closed_cb);
}

void session_accept(struct server *srv)
{
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        log_error("session", "event=out_of_memory");
        return; /* the connection stays in the backlog; the next accept tries again */
    }
    s->srv = srv;
    s->id = ++srv->next_session_id;
    int rv = uv_tcp_init(srv->loop, &s->tcp);
    if (rv != 0) {
        log_error("session", "event=accept_error error=%s", uv_err_name(rv));
        free(s);
        return;
    }
    s->tcp.data = s;
    srv->n_open++;
    wire_reader_init(&s->reader, srv->cfg->limits.max_frame_bytes);
    rv = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&s->tcp);
    if (rv != 0) {
        log_warn("session", "event=accept_error error=%s", uv_err_name(rv));
        session_close(s, "accept_error");
        return;
    }
    if (srv->stopping || srv->n_sessions >= srv->cfg->limits.max_connections) {
        log_warn("session", "event=connection_refused reason=%s sessions=%zu",
                 srv->stopping ? "stopping" : "max_connections", srv->n_sessions);
        session_close(s, "refused");
        return;
    }
    s->counted = true;
    s->next = srv->sessions;
    if (srv->sessions != NULL) {
        srv->sessions->prev = s;
    }
    srv->sessions = s;
    srv->n_sessions++;
    s->last_active = uv_now(srv->loop);
    uv_tcp_nodelay(&s->tcp, 1);
    log_debug("session", "event=open session_id=%" PRIu64 " sessions=%zu", s->id, srv->n_sessions);
    session_read_start(s);
}
