/* The fake node of the unit tests (see fake_node.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_node.h"
#include "geoscale.pb-c.h"

static void fake_write_done(uv_write_t *req, int status)
{
    struct fake_write *w = (struct fake_write *)req;
    (void)status;
    w->f->replies_done++;
    free(w);
}

static struct fake_conn *fake_conn_by_id(struct fake *f, int id)
{
    for (struct fake_conn *fc = f->conns; fc != NULL; fc = fc->next) {
        if (fc->id == id && !fc->closed) {
            return fc;
        }
    }
    return NULL;
}

void fake_reply(struct fake *f, int i, uint16_t status, const void *body, size_t len)
{
    struct fake_conn *fc = fake_conn_by_id(f, f->reqs[i].conn_id);
    struct wire_header h = f->reqs[i].h;
    struct fake_write *w;
    uv_buf_t b;

    if (fc == NULL) {
        return;
    }
    w = malloc(sizeof *w + WIRE_HEADER_SIZE + len);
    assert_non_null(w);
    w->f = f;
    h.type = WIRE_TYPE_RESPONSE;
    h.status = status;
    h.leader_id = f->leader_id;
    h.body_len = (uint32_t)len;
    wire_header_encode(&h, w->data);
    if (len > 0) {
        memcpy(w->data + WIRE_HEADER_SIZE, body, len);
    }
    b = uv_buf_init((char *)w->data, (unsigned)(WIRE_HEADER_SIZE + len));
    assert_int_equal(uv_write(&w->req, (uv_stream_t *)&fc->tcp, &b, 1, fake_write_done), 0);
}

static void fake_echo(struct fake *f, int i)
{
    fake_reply(f, i, 0, f->reqs[i].body, f->reqs[i].len);
}

void fake_release(struct fake *f)
{
    while (f->nheld > 0) {
        fake_echo(f, f->held[--f->nheld]);
    }
}

static void fake_conn_closed(uv_handle_t *h)
{
    struct fake_conn *fc = h->data;
    struct fake_conn **pp = &fc->f->conns;
    while (*pp != fc) {
        pp = &(*pp)->next;
    }
    *pp = fc->next;
    wire_reader_close(&fc->r);
    free(fc);
}

static void fake_conn_close(struct fake_conn *fc)
{
    if (!fc->closed) {
        fc->closed = 1;
        uv_close((uv_handle_t *)&fc->tcp, fake_conn_closed);
    }
}

static void fake_cell_status(struct fake *f, int i)
{
    Geoscale__CellStatusResponse r = GEOSCALE__CELL_STATUS_RESPONSE__INIT;
    Geoscale__Member m[4];
    Geoscale__Member *mp[4];
    uint8_t buf[512];
    size_t len;

    for (int k = 0; k < f->nmembers; k++) {
        geoscale__member__init(&m[k]);
        m[k].node_id = f->member_ids[k];
        m[k].client_address = (char *)f->member_addrs[k];
        m[k].role = "voter";
        mp[k] = &m[k];
    }
    r.members = mp;
    r.n_members = (size_t)f->nmembers;
    r.leader_id = f->leader_id;
    len = geoscale__cell_status_response__get_packed_size(&r);
    assert_true(len <= sizeof buf);
    geoscale__cell_status_response__pack(&r, buf);
    fake_reply(f, i, 0, buf, len);
}

static void fake_proto(struct fake *f, int i, const uint8_t *body)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    const struct rec *q = &f->reqs[i];

    if (q->h.method == GEOSCALE__METHOD__METHOD_GET_USER) {
        Geoscale__GetUserRequest *req =
            geoscale__get_user_request__unpack(NULL, q->h.body_len, body);
        Geoscale__GetUserResponse resp = GEOSCALE__GET_USER_RESPONSE__INIT;
        Geoscale__Profile p = GEOSCALE__PROFILE__INIT;
        uint8_t buf[256];
        size_t len;

        assert_non_null(req);
        p.user_id = req->user_id;
        p.version = 7;
        resp.profile = &p;
        geoscale__get_user_request__free_unpacked(req, NULL);
        len = geoscale__get_user_response__get_packed_size(&resp);
        assert_true(len <= sizeof buf);
        geoscale__get_user_response__pack(&resp, buf);
        fake_reply(f, i, 0, buf, len);
    } else {
        fake_reply(f, i, 0, garbage, sizeof garbage);
    }
}

static void fake_on_frame(struct fake_conn *fc, const struct wire_header *h, const uint8_t *body)
{
    struct fake *f = fc->f;
    int i = f->nreq++;
    struct rec *q;

    assert_true(i < MAX_RECS);
    assert_int_equal(h->type, WIRE_TYPE_REQUEST);
    q = &f->reqs[i];
    q->h = *h;
    q->conn_id = fc->id;
    q->len = h->body_len < sizeof q->body ? h->body_len : sizeof q->body;
    if (q->len > 0) {
        memcpy(q->body, body, q->len);
    }
    if (h->method == GEOSCALE__METHOD__METHOD_CELL_STATUS) {
        f->cell_status++;
        fake_cell_status(f, i);
        return;
    }
    switch (f->mode) {
    case FAKE_ECHO:
        fake_echo(f, i);
        break;
    case FAKE_HOLD:
        f->held[f->nheld++] = i;
        break;
    case FAKE_STATUS:
        fake_reply(f, i, f->status, NULL, 0);
        break;
    case FAKE_SILENT:
        break;
    case FAKE_CLOSE_FIRST:
        if (!f->closed_first) {
            f->closed_first = 1;
            fake_conn_close(fc);
        } else {
            fake_echo(f, i);
        }
        break;
    case FAKE_SLOW:
        if (q->len == 4 && memcmp(q->body, "slow", 4) == 0) {
            f->held[f->nheld++] = i;
        } else {
            fake_echo(f, i);
        }
        break;
    case FAKE_BIG:
        if (q->len == 3 && memcmp(q->body, "big", 3) == 0) {
            static uint8_t big[1000];
            fake_reply(f, i, 0, big, sizeof big);
        } else {
            fake_echo(f, i);
        }
        break;
    case FAKE_PROTO:
        fake_proto(f, i, body);
        break;
    case FAKE_FN:
        f->on_request(f, i, body);
        break;
    }
}

static void fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct fake_conn *fc = h->data;
    (void)suggested;
    *b = uv_buf_init(fc->rbuf, sizeof fc->rbuf);
}

static void fake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct fake_conn *fc = s->data;
    size_t off = 0;

    if (nread < 0) {
        fake_conn_close(fc);
        return;
    }
    if (nread > 0) {
        fc->f->reads++;
    }
    while (off < (size_t)nread && !fc->closed) {
        int ready;
        long n = wire_reader_feed(&fc->r, (uint8_t *)b->base + off, (size_t)nread - off, &ready);
        assert_true(n >= 0);
        off += (size_t)n;
        if (ready) {
            struct wire_header h;
            uint8_t *body;
            wire_reader_take(&fc->r, &h, &body);
            fake_on_frame(fc, &h, body);
            free(body);
        }
    }
}

static void fake_on_connection(uv_stream_t *server, int status)
{
    struct fake *f = server->data;
    struct fake_conn *fc = calloc(1, sizeof *fc);

    assert_int_equal(status, 0);
    assert_non_null(fc);
    fc->f = f;
    fc->id = ++f->next_conn_id;
    wire_reader_init(&fc->r, WIRE_DEFAULT_MAX_BODY);
    assert_int_equal(uv_tcp_init(f->loop, &fc->tcp), 0);
    fc->tcp.data = fc;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&fc->tcp), 0);
    fc->next = f->conns;
    f->conns = fc;
    f->accepts++;
    assert_int_equal(uv_read_start((uv_stream_t *)&fc->tcp, fake_alloc, fake_read), 0);
}

void fake_start(struct fake *f, uv_loop_t *loop, enum fake_mode mode)
{
    struct sockaddr_in sa;
    struct sockaddr_storage bound;
    int n = sizeof bound;

    memset(f, 0, sizeof *f);
    f->loop = loop;
    f->mode = mode;
    assert_int_equal(uv_tcp_init(loop, &f->listener), 0);
    f->listener.data = f;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sa), 0);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, fake_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&f->listener, (struct sockaddr *)&bound, &n), 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&bound)->sin_port));
}

void fake_stop(struct fake *f)
{
    if (!uv_is_closing((uv_handle_t *)&f->listener)) {
        uv_close((uv_handle_t *)&f->listener, NULL);
    }
    for (struct fake_conn *fc = f->conns; fc != NULL; fc = fc->next) {
        fake_conn_close(fc);
    }
}

void fake_on_guard(uv_timer_t *guard)
{
    *(int *)guard->data = 1;
}

void fake_loop_init(uv_loop_t *loop, uv_timer_t *guard, int *fired)
{
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(uv_timer_init(loop, guard), 0);
    guard->data = fired;
}
