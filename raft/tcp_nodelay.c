/* TCP_NODELAY on raft connections (see tcp_nodelay.h). */
#include "tcp_nodelay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

/* A connect in flight: the caller's request and callback. */
struct nodelay_connect {
    struct raft_uv_connect inner_req;
    struct raft_uv_connect *outer_req;
    raft_uv_connect_cb outer_cb;
};

static void set_nodelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    }
}

static void copy_errmsg(struct raft_uv_transport *t, const struct tcp_nodelay *w)
{
    snprintf(t->errmsg, sizeof t->errmsg, "%s", w->inner->errmsg);
}

static int nodelay_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct tcp_nodelay *w = t->impl;
    int rv = w->inner->init(w->inner, id, address);
    if (rv != 0) {
        copy_errmsg(t, w);
    }
    return rv;
}

static void nodelay_accept_cb(struct raft_uv_transport *inner, raft_id id, const char *address,
                              struct uv_stream_s *stream)
{
    struct tcp_nodelay *w = inner->data;
    set_nodelay(stream);
    w->accept_cb(&w->outer, id, address, stream);
}

static int nodelay_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct tcp_nodelay *w = t->impl;
    w->accept_cb = cb;
    int rv = w->inner->listen(w->inner, nodelay_accept_cb);
    if (rv != 0) {
        copy_errmsg(t, w);
    }
    return rv;
}

static void nodelay_connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct nodelay_connect *c = req->data;
    struct raft_uv_connect *outer_req = c->outer_req;
    raft_uv_connect_cb cb = c->outer_cb;
    free(c);
    if (status == 0) {
        set_nodelay(stream);
    }
    cb(outer_req, stream, status);
}

static int nodelay_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                           const char *address, raft_uv_connect_cb cb)
{
    struct tcp_nodelay *w = t->impl;
    struct nodelay_connect *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return RAFT_NOMEM;
    }
    c->inner_req.data = c;
    c->outer_req = req;
    c->outer_cb = cb;
    int rv = w->inner->connect(w->inner, &c->inner_req, id, address, nodelay_connect_cb);
    if (rv != 0) {
        copy_errmsg(t, w);
        free(c);
    }
    return rv;
}

static void nodelay_close_cb(struct raft_uv_transport *inner)
{
    struct tcp_nodelay *w = inner->data;
    if (w->close_cb != NULL) {
        w->close_cb(&w->outer);
    }
}

static void nodelay_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct tcp_nodelay *w = t->impl;
    w->close_cb = cb;
    w->inner->close(w->inner, nodelay_close_cb);
}

void tcp_nodelay_wrap(struct tcp_nodelay *w, struct raft_uv_transport *inner)
{
    memset(w, 0, sizeof *w);
    w->inner = inner;
    inner->data = w;
    w->outer.version = 1;
    w->outer.impl = w;
    w->outer.init = nodelay_init;
    w->outer.listen = nodelay_listen;
    w->outer.connect = nodelay_connect;
    w->outer.close = nodelay_close;
}
