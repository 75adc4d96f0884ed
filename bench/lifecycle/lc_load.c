/*
 * Bulk signup (see lc_load.h).
 *
 * One loop, `connections` clients, `window` slots. A slot holds one user at a
 * time: when its create completes it takes the next user (or retries its
 * own), so the number in flight stays at the window until the end. The
 * request body is packed per attempt into the slot's buffer (the client
 * copies it), so nothing is allocated per request here.
 */
#include "lc_load.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

#define LOAD_ATTEMPTS 5
#define LOAD_BIO_MAX 4096

struct load_ctx;

struct load_slot {
    struct load_ctx *ctx;
    gs_client *client;
    uint64_t user;    /* index of the user in flight */
    unsigned attempt; /* 0 = first */
    int busy;
};

struct load_ctx {
    const struct lc_load_options *opts;
    struct lc_load_result *res;
    uv_loop_t loop;
    uv_timer_t progress;
    gs_client **clients;
    unsigned n_clients;
    unsigned clients_closed;
    struct load_slot *slots;
    uint64_t next;     /* next user index to issue (relative to first) */
    uint64_t finished; /* created + failed */
    uint64_t busy;
    uint64_t last_created; /* for the per-second rate */
    double t0;
    double last_tick;
    int closing;
    uint8_t *body; /* one request buffer, packed per call */
    size_t body_cap;
    char *bio;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Deterministic pseudo-random letters for user u (splitmix64). */
static void fill_bio(char *out, unsigned len, uint64_t u)
{
    uint64_t x = u * 0x9E3779B97F4A7C15ull + 1;
    for (unsigned k = 0; k < len; k++) {
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[k] = (char)('a' + z % 26);
    }
    out[len] = '\0';
}

static void load_issue(struct load_ctx *ctx, struct load_slot *s);

static void client_closed_cb(void *data)
{
    struct load_ctx *ctx = data;
    if (++ctx->clients_closed == ctx->n_clients) {
        uv_close((uv_handle_t *)&ctx->progress, NULL);
    }
}

static void load_close(struct load_ctx *ctx)
{
    if (ctx->closing) {
        return;
    }
    ctx->closing = 1;
    uv_timer_stop(&ctx->progress);
    for (unsigned k = 0; k < ctx->n_clients; k++) {
        gs_client_close(ctx->clients[k], client_closed_cb, ctx);
    }
}

static void progress_line(struct load_ctx *ctx, double now, int final)
{
    const struct lc_load_options *o = ctx->opts;
    uint64_t created = ctx->res->created;
    double secs = (now - ctx->t0) / 1000.0;
    double avg = secs > 0 ? (double)created / secs : 0;
    double dt = (now - ctx->last_tick) / 1000.0;
    double recent = dt > 0 ? (double)(created - ctx->last_created) / dt : 0;
    double eta = avg > 0 ? (double)(o->n - ctx->finished) / avg : 0;

    fprintf(stderr,
            "lifecycle: load %llu/%llu users (%.1f%%), %.0f users/s now, %.0f users/s avg, "
            "%s%.0f s%s, %llu failed\n",
            (unsigned long long)created, (unsigned long long)o->n,
            o->n > 0 ? 100.0 * (double)ctx->finished / (double)o->n : 100.0, recent, avg,
            final ? "took " : "ETA ", final ? secs : eta, final ? "" : " left",
            (unsigned long long)ctx->res->failed);
    ctx->last_created = created;
    ctx->last_tick = now;
}

static void progress_cb(uv_timer_t *t)
{
    struct load_ctx *ctx = t->data;
    if (ctx->opts->progress) {
        progress_line(ctx, now_ms(), 0);
    }
}

static void slot_finish(struct load_ctx *ctx, struct load_slot *s)
{
    s->busy = 0;
    ctx->busy--;
    ctx->finished++;
    if (ctx->next < ctx->opts->n) {
        s->user = ctx->next++;
        s->attempt = 0;
        load_issue(ctx, s);
    } else if (ctx->busy == 0) {
        load_close(ctx);
    }
}

static void create_done(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data)
{
    struct load_slot *s = data;
    struct load_ctx *ctx = s->ctx;
    struct lc_load_result *res = ctx->res;

    (void)leader_id;
    if (status == 0) {
        res->created++;
        if (res->n_sample_ids < sizeof res->sample_ids / sizeof res->sample_ids[0]) {
            Geoscale__CreateUserResponse *r =
                geoscale__create_user_response__unpack(NULL, len, body);
            if (r != NULL) {
                res->sample_ids[res->n_sample_ids++] = r->user_id;
                geoscale__create_user_response__free_unpacked(r, NULL);
            }
        }
        slot_finish(ctx, s);
        return;
    }
    if (status == GS_EEXIST && s->attempt > 0) {
        res->created++; /* an earlier attempt of ours was applied */
        slot_finish(ctx, s);
        return;
    }
    res->last_error = status;
    if (status != GS_ESHUTDOWN && !ctx->closing && s->attempt + 1 < LOAD_ATTEMPTS) {
        s->attempt++;
        res->retries++;
        s->busy = 0;
        ctx->busy--;
        load_issue(ctx, s);
        return;
    }
    res->failed++;
    slot_finish(ctx, s);
}

static void load_issue(struct load_ctx *ctx, struct load_slot *s)
{
    const struct lc_load_options *o = ctx->opts;
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    uint64_t u = o->first + s->user;
    char username[32];
    char display[48];
    char email[48];
    size_t len;
    int rv;

    snprintf(username, sizeof username, "lc_%llu", (unsigned long long)u);
    snprintf(display, sizeof display, "Lifecycle User %llu", (unsigned long long)u);
    snprintf(email, sizeof email, "lc%llu@example.org", (unsigned long long)u);
    fill_bio(ctx->bio, o->bio_bytes, u);
    req.username = username;
    req.display_name = display;
    req.email = email;
    req.bio = ctx->bio;
    len = geoscale__create_user_request__get_packed_size(&req);
    assert(len <= ctx->body_cap); /* bio_bytes <= LOAD_BIO_MAX, names short */
    geoscale__create_user_request__pack(&req, ctx->body);
    if (s->attempt == 0) {
        ctx->res->request_bytes += len;
    }
    s->busy = 1;
    ctx->busy++;
    rv = gs_client_call(s->client, GEOSCALE__METHOD__METHOD_CREATE_USER, ctx->body, len, NULL,
                        create_done, s);
    if (rv != 0) {
        /* Not sent and no callback: the client refuses calls (closing, or a
         * body it will never take). Issue nothing more; this user fails. */
        ctx->next = o->n;
        s->attempt = LOAD_ATTEMPTS;
        create_done(rv, 0, NULL, 0, s);
    }
}

int lc_load_users(const struct lc_load_options *opts, struct lc_load_result *res)
{
    struct load_ctx ctx;
    struct gs_client_options co = {.timeout_ms = opts->call_timeout_ms};
    unsigned window = opts->window != 0 ? opts->window : 1;
    unsigned conns = opts->connections != 0 ? opts->connections : 1;
    int rv = 0;

    memset(res, 0, sizeof *res);
    memset(&ctx, 0, sizeof ctx);
    if (opts->bio_bytes > LOAD_BIO_MAX) {
        return GS_EINVAL;
    }
    if ((uint64_t)window > opts->n && opts->n > 0) {
        window = (unsigned)opts->n;
    }
    /* Each client's connection carries at most 1024 requests (the server's
     * default per-connection limit); keep the window within that. */
    if (window > conns * 1024u) {
        window = conns * 1024u;
    }
    co.max_inflight = 1024;
    ctx.opts = opts;
    ctx.res = res;
    ctx.body_cap = 512 + LOAD_BIO_MAX;
    ctx.body = malloc(ctx.body_cap);
    ctx.bio = malloc(LOAD_BIO_MAX + 1);
    ctx.clients = calloc(conns, sizeof *ctx.clients);
    ctx.slots = calloc(window, sizeof *ctx.slots);
    if (ctx.body == NULL || ctx.bio == NULL || ctx.clients == NULL || ctx.slots == NULL) {
        rv = GS_ENOMEM;
        goto out;
    }
    if (uv_loop_init(&ctx.loop) != 0) {
        rv = GS_EIO;
        goto out;
    }
    for (unsigned k = 0; k < conns; k++) {
        rv = gs_client_open(&ctx.loop, opts->seeds, opts->n_seeds, &co, &ctx.clients[k]);
        if (rv != 0) {
            fprintf(stderr, "lifecycle: gs_client_open: %s\n", gs_error_name(rv));
            for (unsigned j = 0; j < k; j++) {
                gs_client_close(ctx.clients[j], NULL, NULL);
            }
            uv_run(&ctx.loop, UV_RUN_DEFAULT);
            uv_loop_close(&ctx.loop);
            goto out;
        }
        ctx.n_clients++;
    }
    uv_timer_init(&ctx.loop, &ctx.progress);
    ctx.progress.data = &ctx;
    ctx.t0 = ctx.last_tick = now_ms();
    uv_timer_start(&ctx.progress, progress_cb, 1000, 1000);
    if (opts->n == 0) {
        load_close(&ctx);
    }
    for (unsigned k = 0; k < window && ctx.next < opts->n; k++) {
        struct load_slot *s = &ctx.slots[k];
        s->ctx = &ctx;
        s->client = ctx.clients[k % conns];
        s->user = ctx.next++;
        load_issue(&ctx, s);
    }
    uv_run(&ctx.loop, UV_RUN_DEFAULT);
    res->elapsed_ms = now_ms() - ctx.t0;
    res->users_per_s = res->elapsed_ms > 0 ? (double)res->created * 1000.0 / res->elapsed_ms : 0;
    if (opts->progress) {
        progress_line(&ctx, now_ms(), 1);
    }
    if (uv_loop_close(&ctx.loop) != 0) {
        fprintf(stderr, "lifecycle: load loop not idle after close\n");
    }
out:
    free(ctx.body);
    free(ctx.bio);
    free(ctx.clients);
    free(ctx.slots);
    return rv;
}
