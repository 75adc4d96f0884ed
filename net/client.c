/*
 * libgeoscale-client: the asynchronous client on the caller's loop and the
 * blocking client on a private loop (see include/geoscale/client.h).
 *
 * Design:
 *
 * Objects. A gs_client owns a table of node addresses (the seeds first, then
 * addresses learned from CellStatus, at most CLIENT_MAX_LEARNED of them),
 * at most one connection per address, one repeating timer and one prepare
 * handle. A connection (struct conn) owns its TCP handle, its frame reader,
 * its outgoing byte buffers and the calls that travel on it.
 *
 * A call's life is an explicit state machine (call_set_state asserts every
 * transition):
 *
 *     QUEUED --> SENT --> DONE
 *       |  \       |       ^
 *       |   \      v       |
 *       |    `-> BACKOFF --'
 *       |          |
 *       '----------'--> (BACKOFF -> QUEUED on retry)
 *
 *   (and SENT -> QUEUED when a WRONG_CELL answer names the user's cell)
 *   QUEUED   waiting for a slot on a connection (beyond max_inflight), or
 *            being routed;
 *   SENT     its frame is queued or written, and it sits in the connection's
 *            request_id table;
 *   BACKOFF  a retryable failure happened; it waits in the backoff heap;
 *   DONE     the callback has run; the call is freed at once.
 *
 * A call leaves every container (request table, wait list, backoff heap,
 * deadline heap) before it becomes DONE, so nothing can find it again and it
 * can never complete twice. Every live call is in the deadline heap.
 *
 * Time. ONE repeating uv_timer per client (CLIENT_TICK_MS) pops expired calls
 * off the deadline heap and due retries off the backoff heap; no timer per
 * call. The timer runs (and holds the loop) only while calls are live.
 *
 * Connections are opened lazily, with TCP_NODELAY, and unreferenced: an idle
 * client does not keep the caller's loop alive, while a live call does (via
 * the timer). Requests are pipelined: each gets a per-connection request_id
 * and sits in a small open-addressing table (linear probing, capacity a power
 * of two >= 2 * max_inflight, so it is never more than half full) until its
 * response arrives or it expires; a late response for an id that is no longer
 * in the table is dropped. Calls beyond max_inflight wait in a per-connection
 * FIFO. Frames are appended to the connection's `out` buffer; a uv_prepare
 * callback (just before the loop blocks for I/O) writes each connection's
 * buffer with one uv_write, so the requests of one loop turn coalesce into one
 * write. At most one uv_write is in flight per connection; frames queued
 * meanwhile are written by its callback. (A call made from another prepare
 * callback is flushed one loop turn later, at the latest by the next tick.)
 *
 * Bounds: live calls per client <= CLIENT_QUEUE_FACTOR * max_inflight
 * (beyond: GS_EBUSY from gs_client_call); in flight per connection <=
 * max_inflight; unwritten bytes per connection <= CLIENT_MAX_UNSENT plus one
 * frame (beyond: calls wait in the FIFO); response bodies <= max_body;
 * learned addresses <= CLIENT_MAX_LEARNED.
 *
 * Routing. A call about a user (the subject of the request: its user_id,
 * or the actor of an edge) goes to the user's cell: the cell its id names
 * (user_id >> 40), or the one a RouteHint said. If that is not the seeds'
 * cell and the client knows the cell's members (from a RouteHint or from
 * DirectoryListCells, asked at most once per CLIENT_LIST_CELLS_MS when a
 * call names an unknown cell), the call goes to that cell's leader, or a
 * member of it, directly; each such cell tracks its own leader from the
 * responses. A WRONG_CELL answer carrying a RouteHint (the node refused to
 * carry PII out of the user's region, or the cell does not own the user)
 * teaches the client the user's cell and members, and the call goes there at
 * once, at most CLIENT_MAX_REDIRECTS times. Everything else goes through the
 * seeds' cell: to its leader when its address is known, else to the
 * current seed. Every response names the leader; when the leader's address is
 * unknown the client asks the responding node for CellStatus (one at a time,
 * at most once per CLIENT_DISCOVER_MS) and records the members' client
 * addresses. A retryable failure on an address makes the call avoid that
 * address next time and moves the seed cursor on; if the failing address was
 * the leader's, the client forgets the leader.
 *
 * Callbacks. User callbacks run only from loop callbacks (read, connect,
 * write, timer) or from gs_client_close, never from inside gs_client_call.
 * Every loop that may run a user callback re-reads its container after each
 * step, so a callback may call gs_client_call or gs_client_close freely.
 * Memory of the client and of connections is freed only in uv_close
 * callbacks.
 */
#include "geoscale/client.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "directory.pb-c.h"
#include "engine/methods.h"
#include "geoscale.pb-c.h"
#include "net/wire.h"

#define CLIENT_TICK_MS 10
#define CLIENT_BACKOFF_FIRST_MS 20
#define CLIENT_BACKOFF_MAX_MS 200
#define CLIENT_DISCOVER_MS 1000
#define CLIENT_MAX_LEARNED 256
#define CLIENT_QUEUE_FACTOR 16 /* live calls per client <= 16 * max_inflight */
#define CLIENT_READ_BUF 65536
#define CLIENT_MAX_UNSENT (8u * 1024 * 1024) /* bytes queued per connection */
#define CLIENT_ADDR_MAX 96
#define CLIENT_MAX_ROUTES 64      /* cells reached directly, besides the seeds' */
#define CLIENT_ROUTE_MEMBERS 8    /* addresses kept per cell */
#define CLIENT_USER_ROUTES 4096   /* user -> cell exceptions (power of two) */
#define CLIENT_LIST_CELLS_MS 5000 /* at most one DirectoryListCells per this */
#define CLIENT_MAX_REDIRECTS 3    /* WRONG_CELL hints followed per call */

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_MAX_INFLIGHT 1024
#define CLIENT_MAX_INFLIGHT 65536 /* the node's own upper limit */

/* ------------------------------------------------------------------ types */

enum call_state { CALL_QUEUED, CALL_SENT, CALL_BACKOFF, CALL_DONE };

enum { HEAP_DEADLINE = 0, HEAP_BACKOFF = 1 };
#define NOT_IN_HEAP SIZE_MAX

struct conn;

struct call {
    gs_client *c;
    enum call_state state;
    uint16_t method;
    uint16_t flags;
    const struct method_info *mi;
    uint8_t *body; /* owned copy of the request body, kept for retries */
    size_t len;
    uint64_t client_id;
    uint64_t client_seq;
    uint64_t deadline; /* loop time, ms */
    uint64_t retry_at; /* loop time, ms, in BACKOFF */
    unsigned backoff_ms;
    int last_err;       /* last retryable failure, reported at the deadline */
    uint32_t leader_id; /* named by the last response of this call */
    uint64_t user_id;   /* the user the request is about (routing), 0 = none */
    uint32_t cell_id;   /* set by a RouteHint; 0 = the user id's cell */
    unsigned redirects; /* WRONG_CELL hints followed */
    int fixed;          /* address index for internal calls, else -1 */
    int avoid;          /* address whose attempt failed last, else -1 */
    struct conn *conn;  /* SENT: its connection; QUEUED: the wait list's */
    uint64_t request_id;
    struct call *prev, *next; /* in conn->sent or conn->wait */
    size_t heap_idx[2];
    gs_call_cb cb;
    void *data;
};

struct call_list {
    struct call *head, *tail;
};

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct conn {
    gs_client *c;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    int addr_idx; /* -1 once detached from the address table */
    int connected;
    int writing;
    int closing;
    struct wire_reader reader;
    uint64_t next_request_id;
    struct call **table; /* request_id -> call, linear probing */
    size_t mask;
    unsigned inflight;
    struct call_list sent; /* SENT calls, for iteration on failure */
    struct call_list wait; /* QUEUED calls beyond max_inflight, FIFO */
    struct buf out;        /* frames not yet handed to uv_write */
    struct buf wbuf;       /* the buffer of the uv_write in flight */
    uint8_t *rbuf;
};

struct addr {
    char text[CLIENT_ADDR_MAX];
    struct sockaddr_storage sa;
    uint64_t node_id; /* 0 = unknown */
    struct conn *conn;
};

/* A cell other than the seeds' that the client sends to directly. */
struct route {
    uint32_t cell_id;
    uint32_t leader_id;               /* 0 = unknown */
    int member[CLIENT_ROUTE_MEMBERS]; /* address indexes */
    int n;                            /* >= 1 */
    unsigned cursor;
};

/* A user that does not live in the cell its id names (learned from a
 * RouteHint). */
struct user_route {
    uint64_t user_id; /* 0 = free */
    uint32_t cell_id;
};

struct heap {
    struct call **v;
    size_t n, cap;
    int which;
};

struct gs_client {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_prepare_t prepare;
    int timer_on;
    int prepare_on;

    struct addr *addrs; /* seeds [0, nseeds), then learned addresses */
    size_t naddrs, nseeds, max_addrs;
    size_t cursor; /* current seed */
    uint32_t leader_id;
    uint32_t home_cell; /* the seeds' cell (CellStatus); 0 = not known yet */
    struct route routes[CLIENT_MAX_ROUTES];
    size_t nroutes;
    struct user_route *user_routes; /* CLIENT_USER_ROUTES slots, allocated
                                       with the first exception (most clients
                                       never see one) */
    int listing;                    /* a DirectoryListCells is in flight */
    uint64_t list_next;             /* loop time of the next one allowed */
    struct gs_client_stats stats;

    unsigned timeout_ms;
    unsigned max_inflight;
    uint32_t max_body;
    int pin;
    int no_retry;

    size_t max_calls;
    size_t ncalls;
    struct heap deadlines;
    struct heap backoffs;

    uint64_t client_id;
    uint64_t next_seq;

    int discovering;
    uint64_t discover_next;

    int closing;
    unsigned handles; /* initialised uv handles not yet closed */
    void (*closed_cb)(void *data);
    void *closed_data;
};

static void conn_fail(struct conn *cn, int err);
static void call_dispatch(struct call *k);

/* ------------------------------------------------------------------ heap */

static uint64_t heap_key(const struct heap *h, size_t i)
{
    const struct call *k = h->v[i];
    return h->which == HEAP_DEADLINE ? k->deadline : k->retry_at;
}

static void heap_set(struct heap *h, size_t i, struct call *k)
{
    h->v[i] = k;
    k->heap_idx[h->which] = i;
}

static void heap_swap(struct heap *h, size_t i, size_t j)
{
    struct call *a = h->v[i];
    heap_set(h, i, h->v[j]);
    heap_set(h, j, a);
}

static void heap_sift_up(struct heap *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap_key(h, p) <= heap_key(h, i)) {
            break;
        }
        heap_swap(h, p, i);
        i = p;
    }
}

static void heap_sift_down(struct heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && heap_key(h, l) < heap_key(h, m)) {
            m = l;
        }
        if (r < h->n && heap_key(h, r) < heap_key(h, m)) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(h, i, m);
        i = m;
    }
}

/* Capacity was reserved by heaps_reserve(): push cannot fail. */
static void heap_push(struct heap *h, struct call *k)
{
    assert(h->n < h->cap);
    assert(k->heap_idx[h->which] == NOT_IN_HEAP);
    heap_set(h, h->n, k);
    h->n++;
    heap_sift_up(h, h->n - 1);
}

static void heap_remove(struct heap *h, struct call *k)
{
    size_t i = k->heap_idx[h->which];
    struct call *last;

    assert(i < h->n && h->v[i] == k);
    k->heap_idx[h->which] = NOT_IN_HEAP;
    last = h->v[--h->n];
    if (i < h->n) {
        heap_set(h, i, last);
        heap_sift_up(h, i);
        heap_sift_down(h, last->heap_idx[h->which]);
    }
}

static struct call *heap_top(const struct heap *h)
{
    return h->n > 0 ? h->v[0] : NULL;
}

/* Make room for one more live call in both heaps (a live call is always in
 * the deadline heap and at times in the backoff heap). */
static int heap_reserve(struct heap *h, size_t need)
{
    size_t cap;
    struct call **v;

    if (need <= h->cap) {
        return 0;
    }
    cap = h->cap == 0 ? 16 : h->cap * 2;
    v = realloc(h->v, cap * sizeof *v);
    if (v == NULL) {
        return GS_ENOMEM;
    }
    h->v = v;
    h->cap = cap;
    return 0;
}

static int heaps_reserve(gs_client *c)
{
    size_t need = c->deadlines.n + 1; /* backoffs.n <= deadlines.n */
    int rv = heap_reserve(&c->deadlines, need);
    return rv != 0 ? rv : heap_reserve(&c->backoffs, need);
}

/* ------------------------------------------------------------------ lists, buffers */

static void list_push(struct call_list *l, struct call *k)
{
    k->next = NULL;
    k->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = k;
    } else {
        l->head = k;
    }
    l->tail = k;
}

static void list_remove(struct call_list *l, struct call *k)
{
    if (k->prev != NULL) {
        k->prev->next = k->next;
    } else {
        l->head = k->next;
    }
    if (k->next != NULL) {
        k->next->prev = k->prev;
    } else {
        l->tail = k->prev;
    }
    k->prev = k->next = NULL;
}

static int buf_append(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        uint8_t *q;
        while (cap < b->len + n) {
            cap *= 2;
        }
        q = realloc(b->p, cap);
        if (q == NULL) {
            return GS_ENOMEM;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
    return 0;
}

/* ------------------------------------------------------------------ addresses */

/* Parse "host:port" (host: IPv4 literal, IPv6 literal optionally in
 * brackets, or "localhost"). Returns 0 or GS_EINVAL. */
static int addr_parse(const char *text, struct sockaddr_storage *sa)
{
    const char *colon;
    char host[64];
    size_t hlen;
    char *end;
    unsigned long port;

    if (text == NULL || strlen(text) >= CLIENT_ADDR_MAX) {
        return GS_EINVAL;
    }
    colon = strrchr(text, ':');
    if (colon == NULL || colon == text || colon[1] == '\0') {
        return GS_EINVAL;
    }
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535 || colon[1] < '0' || colon[1] > '9') {
        return GS_EINVAL;
    }
    hlen = (size_t)(colon - text);
    if (hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']') {
        text++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        return GS_EINVAL;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") == 0) {
        strcpy(host, "127.0.0.1");
    }
    memset(sa, 0, sizeof *sa);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0) {
        return 0;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) == 0) {
        return 0;
    }
    return GS_EINVAL;
}

static int sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return 0;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

static int addr_of_node(const gs_client *c, uint64_t node_id)
{
    if (node_id == 0) {
        return -1;
    }
    for (size_t i = 0; i < c->naddrs; i++) {
        if (c->addrs[i].node_id == node_id) {
            return (int)i;
        }
    }
    return -1;
}

/* Record that node_id serves clients at text; returns its address index.
 * Unparsable addresses (host names) are ignored; so are new addresses
 * beyond the table's bound (both -1). */
static int addr_learn(gs_client *c, const char *text, uint64_t node_id)
{
    struct sockaddr_storage sa;
    int idx = -1;

    if (node_id == 0 || addr_parse(text, &sa) != 0) {
        return -1;
    }
    for (size_t i = 0; i < c->naddrs; i++) {
        if (sa_equal(&c->addrs[i].sa, &sa)) {
            idx = (int)i;
        } else if (c->addrs[i].node_id == node_id) {
            c->addrs[i].node_id = 0; /* the node moved */
        }
    }
    if (idx < 0) {
        if (c->naddrs == c->max_addrs) {
            return -1;
        }
        idx = (int)c->naddrs++;
        memset(&c->addrs[idx], 0, sizeof c->addrs[idx]);
        strcpy(c->addrs[idx].text, text);
        c->addrs[idx].sa = sa;
    }
    c->addrs[idx].node_id = node_id;
    return idx;
}

/* ------------------------------------------------------------------ routes */

static struct route *route_find(gs_client *c, uint32_t cell_id)
{
    if (cell_id == 0) {
        return NULL;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        if (c->routes[i].cell_id == cell_id) {
            return &c->routes[i];
        }
    }
    return NULL;
}

/* Learn that cell_id's members (node ids and client addresses) are these.
 * Addresses that cannot be learned are left out; a cell with none left, or
 * one beyond CLIENT_MAX_ROUTES, keeps going through the seeds. */
static void route_learn(gs_client *c, uint32_t cell_id, const uint64_t *node_ids,
                        const char *const *addresses, size_t n, uint64_t leader_id)
{
    struct route *r = route_find(c, cell_id);
    struct route nr;

    if (cell_id == 0 || cell_id == c->home_cell) {
        return; /* the seeds' own cell: followed through them */
    }
    memset(&nr, 0, sizeof nr);
    nr.cell_id = cell_id;
    for (size_t i = 0; i < n && nr.n < CLIENT_ROUTE_MEMBERS; i++) {
        int idx = addresses[i] != NULL ? addr_learn(c, addresses[i], node_ids[i]) : -1;
        if (idx >= 0) {
            nr.member[nr.n++] = idx;
        }
    }
    if (nr.n == 0) {
        return;
    }
    if (leader_id != 0 && leader_id <= UINT32_MAX) {
        nr.leader_id = (uint32_t)leader_id;
    } else if (r != NULL) {
        nr.leader_id = r->leader_id;
    }
    if (r == NULL) {
        if (c->nroutes == CLIENT_MAX_ROUTES) {
            return;
        }
        r = &c->routes[c->nroutes++];
    }
    *r = nr;
}

static size_t user_route_slot(uint64_t user_id)
{
    /* Fibonacci hashing: user ids of one cell differ in their low bits. */
    return (size_t)((user_id * UINT64_C(0x9E3779B97F4A7C15)) >> 52) & (CLIENT_USER_ROUTES - 1);
}

/* The cell user_id lives in: a RouteHint's answer if one was cached, else
 * the cell that allocated the id. */
static uint32_t user_cell(const gs_client *c, uint64_t user_id)
{
    const struct user_route *u;

    if (user_id == 0) {
        return 0;
    }
    u = c->user_routes != NULL ? &c->user_routes[user_route_slot(user_id)] : NULL;
    if (u != NULL && u->user_id == user_id) {
        return u->cell_id;
    }
    return GS_USER_CELL(user_id);
}

/* Remember that user_id lives in cell_id. Direct-mapped: a collision
 * replaces the older entry, which then falls back to the id's cell (and to
 * WRONG_CELL if that is wrong). Only exceptions to the id's cell take a
 * slot. */
static void user_route_put(gs_client *c, uint64_t user_id, uint32_t cell_id)
{
    struct user_route *u;

    if (user_id == 0 || cell_id == 0) {
        return;
    }
    if (c->user_routes == NULL) {
        if (cell_id == GS_USER_CELL(user_id)) {
            return; /* nothing to remember or forget */
        }
        c->user_routes = calloc(CLIENT_USER_ROUTES, sizeof *c->user_routes);
        if (c->user_routes == NULL) {
            return; /* the id's cell, then WRONG_CELL, still route it */
        }
    }
    u = &c->user_routes[user_route_slot(user_id)];
    if (cell_id == GS_USER_CELL(user_id)) {
        if (u->user_id == user_id) {
            u->user_id = 0;
            u->cell_id = 0;
        }
        return;
    }
    u->user_id = user_id;
    u->cell_id = cell_id;
}

static void list_cells(gs_client *c);

/* The route of call k, or NULL to go through the seeds. */
static struct route *call_route(gs_client *c, const struct call *k)
{
    uint32_t cell = k->cell_id != 0 ? k->cell_id : user_cell(c, k->user_id);
    struct route *r;

    if (cell == 0 || cell == c->home_cell) {
        return NULL;
    }
    r = route_find(c, cell);
    if (r == NULL && c->home_cell != 0) {
        list_cells(c); /* a cell we have not heard of: ask the directory */
    }
    return r;
}

/* Where the next attempt of k goes (an index into c->addrs): the leader of
 * the user's cell when the client knows that cell, else through the seeds
 * (whose node forwards it). */
static int route_pick(gs_client *c, const struct call *k)
{
    struct route *r;
    int i;

    if (k->fixed >= 0) {
        return k->fixed;
    }
    if (c->pin) {
        return 0;
    }
    r = call_route(c, k);
    if (r != NULL) {
        i = addr_of_node(c, r->leader_id);
        if (i >= 0 && i != k->avoid) {
            c->stats.direct++;
            return i;
        }
        i = r->member[r->cursor % (unsigned)r->n];
        if (i == k->avoid && r->n > 1) {
            i = r->member[(r->cursor + 1) % (unsigned)r->n];
        }
        c->stats.direct++;
        return i;
    }
    i = addr_of_node(c, c->leader_id);
    if (i >= 0 && i != k->avoid) {
        return i;
    }
    i = (int)c->cursor;
    if (i == k->avoid && c->nseeds > 1) {
        i = (int)((c->cursor + 1) % c->nseeds);
    }
    return i;
}

/* An attempt of k on address idx failed with a retryable error. */
static void route_failed(gs_client *c, const struct call *k, int idx)
{
    struct route *r;

    if (idx < 0) {
        return;
    }
    r = k->fixed < 0 ? call_route(c, k) : NULL;
    if (r != NULL) {
        if (addr_of_node(c, r->leader_id) == idx) {
            r->leader_id = 0;
        }
        if (r->member[r->cursor % (unsigned)r->n] == idx) {
            r->cursor++;
        }
        return;
    }
    if (addr_of_node(c, c->leader_id) == idx) {
        c->leader_id = 0;
    }
    if ((size_t)idx == c->cursor) {
        c->cursor = (c->cursor + 1) % c->nseeds;
    }
}

/* ------------------------------------------------------------------ request table */

static size_t table_home(const struct conn *cn, uint64_t request_id)
{
    return (size_t)request_id & cn->mask;
}

static void table_insert(struct conn *cn, struct call *k)
{
    size_t i = table_home(cn, k->request_id);
    while (cn->table[i] != NULL) {
        i = (i + 1) & cn->mask;
    }
    cn->table[i] = k;
}

static long table_find(const struct conn *cn, uint64_t request_id)
{
    size_t i = table_home(cn, request_id);
    while (cn->table[i] != NULL) {
        if (cn->table[i]->request_id == request_id) {
            return (long)i;
        }
        i = (i + 1) & cn->mask;
    }
    return -1;
}

/* Backward-shift deletion keeps every probe chain unbroken. */
static void table_delete(struct conn *cn, size_t i)
{
    size_t j = i;
    cn->table[i] = NULL;
    for (;;) {
        size_t home;
        j = (j + 1) & cn->mask;
        if (cn->table[j] == NULL) {
            return;
        }
        home = table_home(cn, cn->table[j]->request_id);
        /* Leave table[j] if its home lies cyclically in (i, j]. */
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        cn->table[i] = cn->table[j];
        cn->table[j] = NULL;
        i = j;
    }
}

/* ------------------------------------------------------------------ calls */

static void call_set_state(struct call *k, enum call_state to)
{
    static const unsigned char allowed[4][4] = {
        /* to:         QUEUED SENT BACKOFF DONE */
        [CALL_QUEUED] = {0, 1, 1, 1},
        [CALL_SENT] = {1, 0, 1, 1}, /* -> QUEUED: a WRONG_CELL redirect */
        [CALL_BACKOFF] = {1, 0, 0, 1},
        [CALL_DONE] = {0, 0, 0, 0},
    };
    assert(allowed[k->state][to]);
    k->state = to;
}

static void timer_update(gs_client *c);

/* Take k out of its connection or of the backoff heap (not the deadline
 * heap). Does not touch other calls. */
static void call_detach(struct call *k)
{
    struct conn *cn = k->conn;
    long slot;

    switch (k->state) {
    case CALL_SENT:
        assert(cn != NULL);
        slot = table_find(cn, k->request_id);
        assert(slot >= 0 && cn->table[slot] == k);
        table_delete(cn, (size_t)slot);
        list_remove(&cn->sent, k);
        assert(cn->inflight > 0);
        cn->inflight--;
        break;
    case CALL_QUEUED:
        if (cn != NULL) {
            list_remove(&cn->wait, k);
        }
        break;
    case CALL_BACKOFF:
        if (k->heap_idx[HEAP_BACKOFF] != NOT_IN_HEAP) {
            heap_remove(&k->c->backoffs, k);
        }
        break;
    case CALL_DONE:
        assert(0);
        break;
    }
    k->conn = NULL;
}

/* Complete a detached call: run its callback once and free it. */
static void call_complete(struct call *k, int status, const uint8_t *body, size_t len)
{
    gs_client *c = k->c;
    gs_call_cb cb = k->cb;
    void *data = k->data;
    uint32_t leader_id = k->leader_id;

    assert(k->conn == NULL && k->heap_idx[HEAP_BACKOFF] == NOT_IN_HEAP);
    call_set_state(k, CALL_DONE);
    heap_remove(&c->deadlines, k);
    assert(c->ncalls > 0);
    c->ncalls--;
    free(k->body);
    free(k);
    cb(status, leader_id, status == 0 ? body : NULL, status == 0 ? len : 0, data);
    timer_update(c);
}

static int status_retryable(int err)
{
    switch (err) {
    case GS_EUNAVAILABLE:
    case GS_ENOTLEADER:
    case GS_EUNKNOWN:
    case GS_ECLOSED:
    case GS_ECONNECT:
    case GS_ESHUTDOWN:
        return 1;
    default:
        return 0;
    }
}

/* Complete k with err at the next timer tick instead of now: used where a
 * callback must not run (inside gs_client_call). */
static void call_fail_soon(struct call *k, int err)
{
    gs_client *c = k->c;

    k->last_err = err;
    call_set_state(k, CALL_BACKOFF); /* parked: in no heap but the deadlines */
    heap_remove(&c->deadlines, k);
    k->deadline = uv_now(c->loop);
    heap_push(&c->deadlines, k);
}

/*
 * The attempt of detached call k on address idx failed with err: retry after
 * a backoff, or complete. may_call_back = 0 where the user's callback must
 * not run synchronously.
 */
static void call_attempt_failed(struct call *k, int err, int idx, int may_call_back)
{
    gs_client *c = k->c;
    uint64_t now = uv_now(c->loop);

    assert(k->conn == NULL);
    k->last_err = err;
    if (!status_retryable(err) || c->pin || c->no_retry || k->fixed >= 0 || c->closing ||
        now + k->backoff_ms >= k->deadline) {
        /* No retry, or none could start before the deadline. */
        if (may_call_back) {
            call_complete(k, err, NULL, 0);
        } else {
            call_fail_soon(k, err);
        }
        return;
    }
    route_failed(c, k, idx);
    k->avoid = idx;
    k->retry_at = now + k->backoff_ms;
    k->backoff_ms *= 2;
    if (k->backoff_ms > CLIENT_BACKOFF_MAX_MS) {
        k->backoff_ms = CLIENT_BACKOFF_MAX_MS;
    }
    call_set_state(k, CALL_BACKOFF);
    heap_push(&c->backoffs, k);
}

/* ------------------------------------------------------------------ connections */

static void client_handle_closed(gs_client *c);

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *cn = h->data;
    gs_client *c = cn->c;

    assert(cn->sent.head == NULL && cn->wait.head == NULL && cn->inflight == 0);
    wire_reader_close(&cn->reader);
    free(cn->table);
    free(cn->out.p);
    free(cn->wbuf.p);
    free(cn->rbuf);
    free(cn);
    client_handle_closed(c);
}

/* Start closing cn's handle and detach it from the address table. Its calls
 * must be moved off by the caller. */
static void conn_close_handle(struct conn *cn)
{
    gs_client *c = cn->c;

    assert(!cn->closing);
    cn->closing = 1;
    if (cn->addr_idx >= 0) {
        assert(c->addrs[cn->addr_idx].conn == cn);
        c->addrs[cn->addr_idx].conn = NULL;
    }
    uv_close((uv_handle_t *)&cn->tcp, on_conn_closed);
}

static void on_prepare(uv_prepare_t *p);

/* Ask for a flush of every connection just before the loop blocks. */
static void prepare_start(gs_client *c)
{
    if (!c->prepare_on && !c->closing) {
        uv_prepare_start(&c->prepare, on_prepare);
        c->prepare_on = 1;
    }
}

static void on_write(uv_write_t *req, int status);
static void conn_pump(struct conn *cn);

/* Hand the pending frames of cn to one uv_write, if none is in flight. */
static void conn_flush(struct conn *cn)
{
    struct buf t;
    uv_buf_t b;
    int rv;

    if (!cn->connected || cn->writing || cn->closing || cn->out.len == 0) {
        return;
    }
    t = cn->wbuf;
    cn->wbuf = cn->out;
    cn->out = t;
    cn->out.len = 0;
    b = uv_buf_init((char *)cn->wbuf.p, (unsigned)cn->wbuf.len);
    rv = uv_write(&cn->write_req, (uv_stream_t *)&cn->tcp, &b, 1, on_write);
    if (rv != 0) {
        cn->wbuf.len = 0;
        conn_fail(cn, GS_ECLOSED);
        return;
    }
    cn->writing = 1;
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *cn = req->data;

    cn->writing = 0;
    cn->wbuf.len = 0;
    if (cn->closing) {
        return;
    }
    if (status < 0) {
        conn_fail(cn, GS_ECLOSED);
        return;
    }
    conn_flush(cn); /* frames queued while this write was in flight */
    conn_pump(cn);  /* calls held back by CLIENT_MAX_UNSENT */
}

/* Put k (QUEUED, detached) on cn as SENT: frame into cn->out. Returns 0, or
 * GS_EBUSY when CLIENT_MAX_UNSENT bytes already wait for the socket (a peer
 * that stops reading cannot make us buffer without bound), or GS_ENOMEM;
 * on error k is untouched. */
static int conn_send(struct conn *cn, struct call *k)
{
    gs_client *c = cn->c;
    struct wire_header h;
    uint8_t hb[WIRE_HEADER_SIZE];
    uint64_t now = uv_now(c->loop);
    size_t old_len = cn->out.len;

    assert(k->state == CALL_QUEUED && k->conn == NULL);
    assert(cn->inflight < c->max_inflight);
    if (cn->out.len + cn->wbuf.len > CLIENT_MAX_UNSENT) {
        return GS_EBUSY;
    }
    memset(&h, 0, sizeof h);
    h.version = WIRE_VERSION;
    h.type = WIRE_TYPE_REQUEST;
    h.method = k->method;
    h.request_id = cn->next_request_id++;
    h.client_id = k->client_id;
    h.client_seq = k->client_seq;
    h.deadline_ms = k->deadline > now ? (uint32_t)(k->deadline - now) : 1;
    h.flags = k->flags;
    h.body_len = (uint32_t)k->len;
    wire_header_encode(&h, hb);
    if (buf_append(&cn->out, hb, sizeof hb) != 0 || buf_append(&cn->out, k->body, k->len) != 0) {
        cn->out.len = old_len;
        return GS_ENOMEM;
    }
    k->request_id = h.request_id;
    k->conn = cn;
    table_insert(cn, k);
    list_push(&cn->sent, k);
    cn->inflight++;
    call_set_state(k, CALL_SENT);
    prepare_start(c);
    return 0;
}

/* Move waiting calls of cn into free in-flight slots. Never runs a user
 * callback. */
static void conn_pump(struct conn *cn)
{
    gs_client *c = cn->c;

    while (!cn->closing && !c->closing && cn->wait.head != NULL && cn->inflight < c->max_inflight) {
        struct call *k = cn->wait.head;
        list_remove(&cn->wait, k);
        k->conn = NULL;
        if (conn_send(cn, k) != 0) {
            k->conn = cn;
            /* Back to the front; it is retried on the next slot or expires. */
            k->next = cn->wait.head;
            k->prev = NULL;
            if (cn->wait.head != NULL) {
                cn->wait.head->prev = k;
            } else {
                cn->wait.tail = k;
            }
            cn->wait.head = k;
            return;
        }
    }
}

/*
 * The connection is broken (err: GS_ECLOSED, GS_ECONNECT, ...): close it and
 * fail each of its calls' attempts (they are retried per the rules). Safe to
 * call more than once.
 */
static void conn_fail(struct conn *cn, int err)
{
    int idx = cn->addr_idx;
    struct call *k;

    if (cn->closing) {
        return;
    }
    conn_close_handle(cn);
    /* Re-read the lists after each step: a callback may close the client,
     * which empties them. */
    while ((k = cn->sent.head) != NULL || (k = cn->wait.head) != NULL) {
        call_detach(k);
        call_attempt_failed(k, err, idx, 1);
    }
}

static void maybe_discover(gs_client *c, int idx, uint32_t leader_id);

/* Detached call k got WRONG_CELL with body: if the body is a RouteHint that
 * names a cell with reachable members, learn it and send k there now.
 * Returns 1 if k was redirected. */
static int call_redirect(struct call *k, const uint8_t *body, size_t len)
{
    gs_client *c = k->c;
    Geoscale__RouteHint *hint;
    uint64_t ids[CLIENT_ROUTE_MEMBERS];
    const char *addrs[CLIENT_ROUTE_MEMBERS];
    size_t n = 0;
    int ok = 0;

    if (c->pin || c->no_retry || k->fixed >= 0 || c->closing || len == 0 ||
        k->redirects >= CLIENT_MAX_REDIRECTS) {
        return 0;
    }
    hint = geoscale__route_hint__unpack(NULL, len, body);
    if (hint == NULL) {
        return 0;
    }
    for (size_t i = 0; i < hint->n_members && n < CLIENT_ROUTE_MEMBERS; i++) {
        ids[n] = hint->members[i]->node_id;
        addrs[n] = hint->members[i]->client_address;
        n++;
    }
    if (hint->cell_id != 0 && hint->cell_id == c->home_cell) {
        /* The seeds' own cell: the leader the client followed was not
         * this cell's. Go through the seeds again. */
        c->leader_id = 0;
        k->cell_id = 0;
        ok = 1;
    } else if (hint->cell_id != 0 && n > 0) {
        if (hint->user_id != 0 && hint->user_id == k->user_id) {
            user_route_put(c, hint->user_id, hint->cell_id);
        }
        route_learn(c, hint->cell_id, ids, addrs, n, hint->leader_id);
        if (route_find(c, hint->cell_id) != NULL) {
            k->cell_id = hint->cell_id;
            ok = 1;
        }
    }
    geoscale__route_hint__free_unpacked(hint, NULL);
    if (!ok) {
        return 0;
    }
    k->redirects++;
    k->avoid = -1;
    c->stats.redirects++;
    call_set_state(k, CALL_QUEUED);
    call_dispatch(k);
    return 1;
}

static void conn_on_frame(struct conn *cn, const struct wire_header *h, const uint8_t *body)
{
    gs_client *c = cn->c;
    struct call *k;
    long slot;

    if (h->type != WIRE_TYPE_RESPONSE) {
        conn_fail(cn, GS_ECLOSED);
        return;
    }
    slot = table_find(cn, h->request_id);
    if (slot < 0) {
        return; /* late answer to an expired call */
    }
    k = cn->table[slot];
    call_detach(k);
    k->leader_id = h->leader_id;
    /* A response names the leader of the group that served it: only a cell
     * method's tells where the cell's requests should go. */
    if (h->leader_id != 0 && k->mi->group == METHOD_GROUP_CELL &&
        k->mi->kind != METHOD_KIND_LOCAL) {
        struct route *r = k->fixed < 0 && !c->pin ? call_route(c, k) : NULL;
        if (r != NULL) {
            r->leader_id = h->leader_id;
        } else {
            c->leader_id = h->leader_id;
            maybe_discover(c, cn->addr_idx, h->leader_id);
        }
    }
    conn_pump(cn);
    if (-(int)h->status == GS_EWRONGCELL && call_redirect(k, body, h->body_len)) {
        return;
    }
    if (h->status == 0) {
        call_complete(k, 0, body, h->body_len);
    } else {
        call_attempt_failed(k, -(int)h->status, cn->addr_idx, 1);
    }
}

/* The reader failed: the call named by the bad header (if any) gets the
 * error itself; the connection is closed and its other calls retried. */
static void conn_on_reader_error(struct conn *cn, int err)
{
    long slot = -1;

    if (cn->reader.header.type == WIRE_TYPE_RESPONSE) {
        slot = table_find(cn, cn->reader.header.request_id);
    }
    if (slot >= 0) {
        struct call *k = cn->table[slot];
        call_detach(k);
        call_complete(k, err, NULL, 0);
    }
    conn_fail(cn, GS_ECLOSED);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *cn = h->data;
    (void)suggested;
    *b = uv_buf_init((char *)cn->rbuf, CLIENT_READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *cn = s->data;
    const uint8_t *p = (const uint8_t *)b->base;
    size_t off = 0;

    if (cn->closing) {
        return;
    }
    if (nread < 0) {
        conn_fail(cn, GS_ECLOSED);
        return;
    }
    while (off < (size_t)nread && !cn->closing) {
        int ready;
        long n = wire_reader_feed(&cn->reader, p + off, (size_t)nread - off, &ready);
        if (n < 0) {
            conn_on_reader_error(cn, (int)n);
            return;
        }
        off += (size_t)n;
        if (ready) {
            struct wire_header h;
            uint8_t *body;
            wire_reader_take(&cn->reader, &h, &body);
            conn_on_frame(cn, &h, body);
            free(body);
        }
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *cn = req->data;

    if (cn->closing) {
        return;
    }
    if (status < 0) {
        conn_fail(cn, GS_ECONNECT);
        return;
    }
    cn->connected = 1;
    uv_tcp_nodelay(&cn->tcp, 1);
    if (uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read) != 0) {
        conn_fail(cn, GS_ECLOSED);
        return;
    }
    conn_flush(cn);
}

/* The connection to address idx, opened now if there is none. Returns 0,
 * GS_ENOMEM or GS_ECONNECT. */
static int conn_get(gs_client *c, int idx, struct conn **out)
{
    struct addr *a = &c->addrs[idx];
    struct conn *cn;
    size_t cap = 2;
    int rv;

    if (a->conn != NULL) {
        *out = a->conn;
        return 0;
    }
    while (cap < 2 * (size_t)c->max_inflight) {
        cap *= 2;
    }
    cn = calloc(1, sizeof *cn);
    if (cn == NULL) {
        return GS_ENOMEM;
    }
    cn->table = calloc(cap, sizeof *cn->table);
    cn->rbuf = malloc(CLIENT_READ_BUF);
    if (cn->table == NULL || cn->rbuf == NULL) {
        free(cn->table);
        free(cn->rbuf);
        free(cn);
        return GS_ENOMEM;
    }
    cn->c = c;
    cn->mask = cap - 1;
    cn->addr_idx = idx;
    cn->next_request_id = 1;
    wire_reader_init(&cn->reader, c->max_body);
    uv_tcp_init(c->loop, &cn->tcp); /* cannot fail for AF_UNSPEC */
    c->handles++;
    cn->tcp.data = cn;
    cn->connect_req.data = cn;
    cn->write_req.data = cn;
    uv_unref((uv_handle_t *)&cn->tcp);
    uv_tcp_nodelay(&cn->tcp, 1);
    a->conn = cn;
    rv = uv_tcp_connect(&cn->connect_req, &cn->tcp, (const struct sockaddr *)&a->sa, on_connect);
    if (rv != 0) {
        conn_close_handle(cn);
        return GS_ECONNECT;
    }
    *out = cn;
    return 0;
}

/* ------------------------------------------------------------------ dispatch, timer */

/* Route k (QUEUED, detached) and send it or queue it on a connection. */
static void call_dispatch_(struct call *k, int may_call_back)
{
    gs_client *c = k->c;
    int idx = route_pick(c, k);
    struct conn *cn;
    int rv;

    assert(k->state == CALL_QUEUED && k->conn == NULL);
    rv = conn_get(c, idx, &cn);
    if (rv != 0) {
        call_attempt_failed(k, rv, idx, may_call_back);
        return;
    }
    if (cn->wait.head != NULL || cn->inflight >= c->max_inflight || conn_send(cn, k) != 0) {
        k->conn = cn;
        list_push(&cn->wait, k);
    }
}

static void call_dispatch(struct call *k)
{
    call_dispatch_(k, 1);
}

static void on_tick(uv_timer_t *t)
{
    gs_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    struct call *k;

    /* Both loops re-read the heap top after each callback. */
    while (!c->closing && (k = heap_top(&c->deadlines)) != NULL && k->deadline <= now) {
        struct conn *cn = k->state == CALL_SENT ? k->conn : NULL;
        int status = k->state == CALL_SENT || k->last_err == 0 ? GS_ETIMEOUT : k->last_err;
        call_detach(k);
        if (cn != NULL) {
            conn_pump(cn);
        }
        call_complete(k, status, NULL, 0);
    }
    while (!c->closing && (k = heap_top(&c->backoffs)) != NULL && k->retry_at <= now) {
        heap_remove(&c->backoffs, k);
        call_set_state(k, CALL_QUEUED);
        call_dispatch(k);
    }
    timer_update(c);
}

/* Run the timer exactly while calls are live. */
static void timer_update(gs_client *c)
{
    if (c->closing) {
        return;
    }
    if (c->ncalls > 0 && !c->timer_on) {
        uv_timer_start(&c->timer, on_tick, CLIENT_TICK_MS, CLIENT_TICK_MS);
        c->timer_on = 1;
    } else if (c->ncalls == 0 && c->timer_on) {
        uv_timer_stop(&c->timer);
        c->timer_on = 0;
    }
}

static void on_prepare(uv_prepare_t *p)
{
    gs_client *c = p->data;

    uv_prepare_stop(p);
    c->prepare_on = 0;
    for (size_t i = 0; i < c->naddrs; i++) {
        if (c->addrs[i].conn != NULL) {
            conn_flush(c->addrs[i].conn);
        }
    }
}

/* ------------------------------------------------------------------ calls: creation */

/* Create and route a call. Never runs cb synchronously. */
static int call_start(gs_client *c, uint16_t method, const uint8_t *body, size_t len,
                      unsigned timeout_ms, uint64_t client_id, uint64_t client_seq, uint16_t flags,
                      int fixed, uint64_t user_id, gs_call_cb cb, void *data)
{
    struct call *k;
    int rv;

    if (c->ncalls >= c->max_calls) {
        return GS_EBUSY;
    }
    rv = heaps_reserve(c);
    if (rv != 0) {
        return rv;
    }
    k = calloc(1, sizeof *k);
    if (k == NULL) {
        return GS_ENOMEM;
    }
    k->body = malloc(len > 0 ? len : 1);
    if (k->body == NULL) {
        free(k);
        return GS_ENOMEM;
    }
    if (len > 0) {
        memcpy(k->body, body, len);
    }
    uv_update_time(c->loop); /* the caller may have been away from the loop */
    k->c = c;
    k->state = CALL_QUEUED;
    k->method = method;
    k->mi = method_lookup(method);
    k->flags = flags;
    k->len = len;
    k->client_id = client_id;
    k->client_seq = client_seq;
    k->deadline = uv_now(c->loop) + timeout_ms;
    k->backoff_ms = CLIENT_BACKOFF_FIRST_MS;
    k->fixed = fixed;
    k->user_id = user_id;
    k->avoid = -1;
    k->heap_idx[HEAP_DEADLINE] = NOT_IN_HEAP;
    k->heap_idx[HEAP_BACKOFF] = NOT_IN_HEAP;
    k->cb = cb;
    k->data = data;
    heap_push(&c->deadlines, k);
    c->ncalls++;
    timer_update(c);
    call_dispatch_(k, 0);
    return 0;
}

static void on_discovered(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                          void *data)
{
    gs_client *c = data;
    Geoscale__CellStatusResponse *r;

    (void)leader_id;
    c->discovering = 0;
    if (status != 0) {
        return;
    }
    r = geoscale__cell_status_response__unpack(NULL, len, body);
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n_members; i++) {
        const Geoscale__Member *m = r->members[i];
        if (m->client_address != NULL && m->client_address[0] != '\0') {
            addr_learn(c, m->client_address, m->node_id);
        }
    }
    if (r->leader_id != 0 && r->leader_id <= UINT32_MAX) {
        c->leader_id = (uint32_t)r->leader_id;
    }
    if (r->cell_id != 0 && c->home_cell == 0) {
        struct route *h = route_find(c, r->cell_id);
        c->home_cell = r->cell_id;
        if (h != NULL) { /* learned before: the seeds are its route now */
            *h = c->routes[--c->nroutes];
        }
    }
    geoscale__cell_status_response__free_unpacked(r, NULL);
}

static void on_cells_listed(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                            void *data)
{
    gs_client *c = data;
    Geoscale__ListCellsResponse *r;

    (void)leader_id;
    c->listing = 0;
    if (status != 0) {
        return; /* no directory (a lone cell), or out of reach: next time */
    }
    r = geoscale__list_cells_response__unpack(NULL, len, body);
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n_cells; i++) {
        const Geoscale__CellInfo *ci = r->cells[i];
        uint64_t ids[CLIENT_ROUTE_MEMBERS];
        const char *addrs[CLIENT_ROUTE_MEMBERS];
        size_t n = 0;
        for (size_t j = 0; j < ci->n_members && n < CLIENT_ROUTE_MEMBERS; j++) {
            ids[n] = ci->members[j]->node_id;
            addrs[n] = ci->members[j]->client_address;
            n++;
        }
        route_learn(c, ci->cell_id, ids, addrs, n, 0);
    }
    geoscale__list_cells_response__free_unpacked(r, NULL);
}

/* Ask the directory (through the seeds) for every cell's members, at most
 * once per CLIENT_LIST_CELLS_MS. */
static void list_cells(gs_client *c)
{
    Geoscale__ListCellsRequest rq = GEOSCALE__LIST_CELLS_REQUEST__INIT;
    uint8_t buf[8];
    size_t len;
    uint64_t now = uv_now(c->loop);

    if (c->pin || c->closing || c->listing || now < c->list_next) {
        return;
    }
    c->list_next = now + CLIENT_LIST_CELLS_MS;
    len = geoscale__list_cells_request__pack(&rq, buf);
    if (call_start(c, GEOSCALE__METHOD__METHOD_DIRECTORY_LIST_CELLS, buf, len, c->timeout_ms, 0, 0,
                   0, -1, 0, on_cells_listed, c) == 0) {
        c->listing = 1;
    }
}

/* A response from address idx named leader_id: learn its address if it is
 * unknown, by asking that node for CellStatus. */
static void maybe_discover(gs_client *c, int idx, uint32_t leader_id)
{
    uint64_t now = uv_now(c->loop);

    if (c->pin || c->closing || c->discovering || idx < 0 || now < c->discover_next ||
        addr_of_node(c, leader_id) >= 0) {
        return;
    }
    c->discover_next = now + CLIENT_DISCOVER_MS;
    if (call_start(c, GEOSCALE__METHOD__METHOD_CELL_STATUS, NULL, 0, c->timeout_ms, 0, 0, 0, idx, 0,
                   on_discovered, c) == 0) {
        c->discovering = 1;
    }
}

/* ------------------------------------------------------------------ public: async */

int gs_client_open(uv_loop_t *loop, const char *const *seeds, size_t n,
                   const struct gs_client_options *opts, gs_client **out)
{
    gs_client *c = NULL;
    int rv;

    if (out == NULL) {
        return GS_EINVAL;
    }
    *out = NULL;
    if (loop == NULL || seeds == NULL || n == 0 || n > 1024) {
        return GS_EINVAL;
    }
    if (sodium_init() < 0) {
        return GS_EINTERNAL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return GS_ENOMEM;
    }
    c->loop = loop;
    c->max_addrs = n + CLIENT_MAX_LEARNED;
    c->addrs = calloc(c->max_addrs, sizeof *c->addrs);
    if (c->addrs == NULL) {
        rv = GS_ENOMEM;
        goto err;
    }
    for (size_t i = 0; i < n; i++) {
        rv = addr_parse(seeds[i], &c->addrs[i].sa);
        if (rv != 0) {
            goto err;
        }
        strcpy(c->addrs[i].text, seeds[i]);
    }
    c->naddrs = c->nseeds = n;
    c->timeout_ms = opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->max_inflight =
        opts != NULL && opts->max_inflight != 0 ? opts->max_inflight : DEFAULT_MAX_INFLIGHT;
    if (c->max_inflight > CLIENT_MAX_INFLIGHT) {
        c->max_inflight = CLIENT_MAX_INFLIGHT;
    }
    c->max_body = opts != NULL && opts->max_body != 0 ? opts->max_body : WIRE_DEFAULT_MAX_BODY;
    c->pin = opts != NULL && opts->pin;
    c->no_retry = opts != NULL && opts->no_retry;
    c->max_calls = (size_t)c->max_inflight * CLIENT_QUEUE_FACTOR;
    c->deadlines.which = HEAP_DEADLINE;
    c->backoffs.which = HEAP_BACKOFF;
    do {
        randombytes_buf(&c->client_id, sizeof c->client_id);
    } while (c->client_id == 0);
    c->next_seq = 1;

    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_prepare_init(loop, &c->prepare);
    c->prepare.data = c;
    c->handles = 2;
    *out = c;
    return 0;

err:
    free(c->user_routes);
    free(c->addrs);
    free(c);
    return rv;
}

int gs_client_call(gs_client *c, uint16_t method, const uint8_t *body, size_t len,
                   const struct gs_call_options *opts, gs_call_cb cb, void *data)
{
    const struct method_info *mi;
    uint64_t client_id = 0, client_seq = 0, user_id = 0;
    unsigned timeout_ms;

    if (c == NULL || cb == NULL || (len > 0 && body == NULL)) {
        return GS_EINVAL;
    }
    if (c->closing) {
        return GS_ESHUTDOWN;
    }
    mi = method_lookup(method);
    if (mi == NULL) {
        return GS_EINVAL;
    }
    if (len > WIRE_DEFAULT_MAX_BODY) {
        return GS_ETOOBIG;
    }
    if (opts != NULL && opts->client_seq != 0) {
        client_id = opts->client_id;
        client_seq = opts->client_seq;
    } else if (mi->kind == METHOD_KIND_WRITE) {
        client_id = c->client_id;
        client_seq = c->next_seq; /* consumed only on success, below */
    }
    timeout_ms = opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms : c->timeout_ms;
    if (opts != NULL && opts->user_id != 0) {
        user_id = opts->user_id;
    } else if (c->nroutes > 0 && !c->pin && mi->group == METHOD_GROUP_CELL &&
               mi->kind != METHOD_KIND_LOCAL) {
        /* Only worth a decode once some cell besides the seeds' is known. */
        static const uint8_t empty[1];
        ProtobufCMessage *msg =
            protobuf_c_message_unpack(mi->request, NULL, len, len > 0 ? body : empty);
        user_id = method_subject(mi, msg);
        if (msg != NULL) {
            protobuf_c_message_free_unpacked(msg, NULL);
        }
    }
    {
        int rv = call_start(c, method, body, len, timeout_ms, client_id, client_seq,
                            opts != NULL ? opts->flags : 0, -1, user_id, cb, data);
        if (rv != 0) {
            return rv;
        }
    }
    if (client_id == c->client_id && client_seq == c->next_seq) {
        c->next_seq++;
    }
    return 0;
}

void gs_client_get_stats(const gs_client *c, struct gs_client_stats *out)
{
    if (c == NULL || out == NULL) {
        return;
    }
    *out = c->stats;
    out->cells = c->nroutes;
}

static void client_free(gs_client *c)
{
    void (*closed_cb)(void *) = c->closed_cb;
    void *closed_data = c->closed_data;

    free(c->deadlines.v);
    free(c->backoffs.v);
    free(c->user_routes);
    free(c->addrs);
    free(c);
    if (closed_cb != NULL) {
        closed_cb(closed_data);
    }
}

static void client_handle_closed(gs_client *c)
{
    assert(c->handles > 0);
    c->handles--;
    if (c->closing && c->handles == 0) {
        client_free(c);
    }
}

static void on_client_handle_closed(uv_handle_t *h)
{
    client_handle_closed(h->data);
}

void gs_client_close(gs_client *c, void (*closed_cb)(void *data), void *data)
{
    struct call *k;

    if (c == NULL || c->closing) {
        return;
    }
    c->closing = 1;
    c->closed_cb = closed_cb;
    c->closed_data = data;
    /* Every live call is in the deadline heap; re-read its top after each
     * callback. */
    while ((k = heap_top(&c->deadlines)) != NULL) {
        call_detach(k);
        call_complete(k, GS_ESHUTDOWN, NULL, 0);
    }
    for (size_t i = 0; i < c->naddrs; i++) {
        if (c->addrs[i].conn != NULL) {
            conn_close_handle(c->addrs[i].conn);
        }
    }
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->prepare, on_client_handle_closed);
}

/* ------------------------------------------------------------------ public: blocking */

struct gs_sync {
    uv_loop_t loop;
    gs_client *c;
};

struct sync_wait {
    int done;
    int status;
    uint32_t leader_id;
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *resp;
};

static void sync_call_cb(int status, uint32_t leader_id, const uint8_t *body, size_t len,
                         void *data)
{
    static const uint8_t empty[1];
    struct sync_wait *w = data;

    w->done = 1;
    w->leader_id = leader_id;
    if (status == 0) {
        w->resp = protobuf_c_message_unpack(w->desc, NULL, len, len > 0 ? body : empty);
        if (w->resp == NULL) {
            status = GS_EPROTO;
        }
    }
    w->status = status;
}

int gs_sync_open(const char *const *seeds, size_t n, const struct gs_client_options *opts,
                 gs_sync **out)
{
    gs_sync *s;
    int rv;

    if (out == NULL) {
        return GS_EINVAL;
    }
    *out = NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        return GS_ENOMEM;
    }
    if (uv_loop_init(&s->loop) != 0) {
        free(s);
        return GS_ENOMEM;
    }
    rv = gs_client_open(&s->loop, seeds, n, opts, &s->c);
    if (rv != 0) {
        uv_loop_close(&s->loop);
        free(s);
        return rv;
    }
    *out = s;
    return 0;
}

int gs_sync_call(gs_sync *s, uint16_t method, const ProtobufCMessage *req, ProtobufCMessage **resp,
                 uint32_t *leader_id)
{
    const struct method_info *mi = method_lookup(method);
    struct gs_call_options co;
    struct sync_wait w;
    uint8_t *buf = NULL;
    size_t len;
    int rv;

    if (resp != NULL) {
        *resp = NULL;
    }
    if (s == NULL || req == NULL || resp == NULL || mi == NULL || req->descriptor != mi->request) {
        return GS_EINVAL;
    }
    len = protobuf_c_message_get_packed_size(req);
    if (len > WIRE_DEFAULT_MAX_BODY) {
        return GS_ETOOBIG;
    }
    buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return GS_ENOMEM;
    }
    protobuf_c_message_pack(req, buf);
    memset(&w, 0, sizeof w);
    w.desc = mi->response;
    memset(&co, 0, sizeof co);
    co.user_id = method_subject(mi, req);
    rv = gs_client_call(s->c, method, buf, len, &co, sync_call_cb, &w);
    free(buf); /* copied by the call */
    if (rv != 0) {
        return rv;
    }
    while (!w.done) {
        uv_run(&s->loop, UV_RUN_ONCE);
    }
    if (leader_id != NULL) {
        *leader_id = w.leader_id;
    }
    *resp = w.resp;
    return w.status;
}

gs_client *gs_sync_client(gs_sync *s)
{
    return s != NULL ? s->c : NULL;
}

static void sync_closed(void *data)
{
    *(int *)data = 1;
}

void gs_sync_close(gs_sync *s)
{
    int closed = 0;
    int rv;

    if (s == NULL) {
        return;
    }
    gs_client_close(s->c, sync_closed, &closed);
    while (!closed) {
        uv_run(&s->loop, UV_RUN_ONCE);
    }
    rv = uv_loop_close(&s->loop);
    assert(rv == 0);
    (void)rv;
    free(s);
}
