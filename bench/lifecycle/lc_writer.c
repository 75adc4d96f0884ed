/*
 * The failover writer (see lc_writer.h).
 *
 * Threads. The writer thread owns the loop, the client and the in-flight
 * writes. The measuring thread shares with it only `struct lc_writer_view`
 * and two flags, all under one mutex, taken a few hundred times a second:
 * no contention worth a lock-free design. Stopping goes through a uv_async
 * so that the client is closed on its own loop.
 */
#include "lc_writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

struct lc_writer {
    struct lc_writer_options opts;
    uint64_t *user_ids;
    char **seeds; /* copies, for the thread */

    pthread_t thread;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_async_t stop_async;
    gs_client *client;
    uint64_t seq;
    int open_rv; /* result of gs_client_open on the thread */
    pthread_mutex_t lock;
    pthread_cond_t started;
    int started_flag;

    /* Under lock. */
    int paused;
    struct lc_writer_view view;
};

struct write_op {
    struct lc_writer *w;
    double issue_ms;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void write_done(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data)
{
    struct write_op *op = data;
    struct lc_writer *w = op->w;
    double t = now_ms();
    struct lc_writer_view *v = &w->view;

    (void)leader_id;
    (void)body;
    (void)len;
    pthread_mutex_lock(&w->lock);
    v->outstanding--;
    if (status == 0) {
        v->total_acks++;
        if (v->mark_ms == 0 || t < v->mark_ms) {
            v->last_ack_before_ms = t;
        } else {
            v->acks++;
            if (v->first_ack_ms == 0) {
                v->first_ack_ms = t;
            }
            if (op->issue_ms >= v->mark_ms && v->first_ack_issued_after_ms == 0) {
                v->first_ack_issued_after_ms = t;
                v->first_ack_issued_after_latency_ms = t - op->issue_ms;
            }
        }
    } else if (status != GS_ESHUTDOWN) {
        if (v->mark_ms != 0 && t >= v->mark_ms) {
            v->failures++;
            v->last_failure = status;
        }
    }
    pthread_mutex_unlock(&w->lock);
    free(op);
}

static void issue_one(struct lc_writer *w)
{
    Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__ProfileField fields[1] = {GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO};
    uint8_t buf[256];
    char bio[64];
    struct write_op *op = malloc(sizeof *op);
    size_t len;
    int rv;

    if (op == NULL) {
        return;
    }
    w->seq++;
    snprintf(bio, sizeof bio, "lifecycle write %llu", (unsigned long long)w->seq);
    req.user_id = w->user_ids[w->seq % w->opts.n_users];
    req.n_fields = 1;
    req.fields = fields;
    req.bio = bio;
    len = geoscale__update_user_request__pack(&req, buf);
    op->w = w;
    op->issue_ms = now_ms();
    pthread_mutex_lock(&w->lock);
    w->view.outstanding++;
    pthread_mutex_unlock(&w->lock);
    rv = gs_client_call(w->client, GEOSCALE__METHOD__METHOD_UPDATE_USER, buf, len, NULL, write_done,
                        op);
    if (rv != 0) {
        write_done(rv, 0, NULL, 0, op);
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct lc_writer *w = t->data;
    int go;

    pthread_mutex_lock(&w->lock);
    go = !w->paused && w->view.outstanding < w->opts.max_outstanding;
    pthread_mutex_unlock(&w->lock);
    if (go) {
        issue_one(w);
    }
}

static void stop_cb(uv_async_t *a)
{
    struct lc_writer *w = a->data;
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->stop_async, NULL);
    /* Pending calls complete with GS_ESHUTDOWN; the loop ends once the
     * client's handles are closed. */
    gs_client_close(w->client, NULL, NULL);
}

static void *writer_main(void *arg)
{
    struct lc_writer *w = arg;
    struct gs_client_options co = {.timeout_ms = w->opts.call_timeout_ms};
    int rv;

    rv = gs_client_open(&w->loop, (const char *const *)w->seeds, w->opts.n_seeds, &co, &w->client);
    pthread_mutex_lock(&w->lock);
    w->open_rv = rv;
    w->started_flag = 1;
    pthread_cond_signal(&w->started);
    pthread_mutex_unlock(&w->lock);
    if (rv != 0) {
        uv_close((uv_handle_t *)&w->tick, NULL);
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        return NULL;
    }
    uv_timer_start(&w->tick, tick_cb, w->opts.interval_ms, w->opts.interval_ms);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void writer_free(struct lc_writer *w)
{
    if (w->seeds != NULL) {
        for (size_t k = 0; k < w->opts.n_seeds; k++) {
            free(w->seeds[k]);
        }
    }
    free(w->seeds);
    free(w->user_ids);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->started);
    free(w);
}

int lc_writer_start(const struct lc_writer_options *opts, struct lc_writer **out)
{
    struct lc_writer *w = calloc(1, sizeof *w);
    int rv = GS_ENOMEM;

    *out = NULL;
    if (w == NULL) {
        return GS_ENOMEM;
    }
    w->opts = *opts;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->started, NULL);
    w->user_ids = calloc(opts->n_users, sizeof *w->user_ids);
    w->seeds = calloc(opts->n_seeds, sizeof *w->seeds);
    if (w->user_ids == NULL || w->seeds == NULL) {
        goto err;
    }
    memcpy(w->user_ids, opts->user_ids, opts->n_users * sizeof *w->user_ids);
    for (size_t k = 0; k < opts->n_seeds; k++) {
        w->seeds[k] = strdup(opts->seeds[k]);
        if (w->seeds[k] == NULL) {
            goto err;
        }
    }
    if (uv_loop_init(&w->loop) != 0) {
        rv = GS_EIO;
        goto err;
    }
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_async_init(&w->loop, &w->stop_async, stop_cb);
    w->stop_async.data = w;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        uv_close((uv_handle_t *)&w->tick, NULL);
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        rv = GS_EIO;
        goto err;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->started_flag) {
        pthread_cond_wait(&w->started, &w->lock);
    }
    rv = w->open_rv;
    pthread_mutex_unlock(&w->lock);
    if (rv != 0) {
        pthread_join(w->thread, NULL);
        uv_loop_close(&w->loop);
        goto err;
    }
    *out = w;
    return 0;
err:
    writer_free(w);
    return rv;
}

void lc_writer_mark(struct lc_writer *w, double t_ms)
{
    pthread_mutex_lock(&w->lock);
    uint64_t outstanding = w->view.outstanding;
    uint64_t total = w->view.total_acks;
    double last = w->view.last_ack_before_ms;
    memset(&w->view, 0, sizeof w->view);
    w->view.outstanding = outstanding;
    w->view.total_acks = total;
    w->view.last_ack_before_ms = last;
    w->view.mark_ms = t_ms;
    pthread_mutex_unlock(&w->lock);
}

void lc_writer_view(struct lc_writer *w, struct lc_writer_view *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->view;
    pthread_mutex_unlock(&w->lock);
}

int lc_writer_pause(struct lc_writer *w, int paused, unsigned timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&w->lock);
    w->paused = paused;
    pthread_mutex_unlock(&w->lock);
    if (!paused) {
        return 0;
    }
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 5000000L};
        uint64_t outstanding;
        pthread_mutex_lock(&w->lock);
        outstanding = w->view.outstanding;
        pthread_mutex_unlock(&w->lock);
        if (outstanding == 0) {
            return 0;
        }
        if (now_ms() >= deadline) {
            return GS_ETIMEOUT;
        }
        nanosleep(&ts, NULL);
    }
}

void lc_writer_stop(struct lc_writer *w)
{
    if (w == NULL) {
        return;
    }
    uv_async_send(&w->stop_async);
    pthread_join(w->thread, NULL);
    if (uv_loop_close(&w->loop) != 0) {
        fprintf(stderr, "lifecycle: writer loop not idle after close; leaked\n");
        return;
    }
    writer_free(w);
}
