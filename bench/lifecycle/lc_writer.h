/*
 * A background writer for failover measurements: a thread with its own libuv
 * loop and one asynchronous gs_client (seeded with every node of the cell)
 * that issues an UpdateUser of the bio of one of a few users every
 * interval_ms, round robin, with at most max_outstanding in flight. The
 * writer is open loop on purpose: a new write starts every interval even
 * while older ones are stuck retrying through a failover, so "the first
 * write issued after the kill that got acknowledged" is resolved to one
 * interval. Each call has a short timeout (call_timeout_ms) and is retried
 * by the client library as it always does (client.h: backoff 20 ms doubling
 * to 200 ms, same idempotency key).
 *
 * The measuring thread calls lc_writer_mark(t) just before it sends a
 * signal; the writer then records, for completions after t: the first
 * acknowledgement of any write, the first acknowledgement of a write issued
 * at or after t, the last acknowledgement before t, and the failures.
 */
#ifndef GS_BENCH_LC_WRITER_H
#define GS_BENCH_LC_WRITER_H

#include <stddef.h>
#include <stdint.h>

struct lc_writer;

struct lc_writer_options {
    const char *const *seeds;
    size_t n_seeds;
    const uint64_t *user_ids; /* copied */
    size_t n_users;
    unsigned interval_ms;
    unsigned max_outstanding;
    unsigned call_timeout_ms;
};

/* What happened since the last mark (times: monotonic ms, 0 = none). */
struct lc_writer_view {
    double mark_ms;
    double last_ack_before_ms;                /* latest acknowledgement before mark */
    double first_ack_ms;                      /* first acknowledgement after mark */
    double first_ack_issued_after_ms;         /* first ack of a write issued >= mark */
    double first_ack_issued_after_latency_ms; /* that write's issue->ack */
    uint64_t acks;                            /* acknowledgements since mark */
    uint64_t failures;                        /* calls failed since mark */
    int last_failure;                         /* its GS_E* code */
    uint64_t outstanding;
    uint64_t total_acks;
};

/* Start the thread. Returns 0 or a negative code (then *out is NULL). */
int lc_writer_start(const struct lc_writer_options *opts, struct lc_writer **out);

/* Reset the per-mark counters and set the mark to t_ms (monotonic). */
void lc_writer_mark(struct lc_writer *w, double t_ms);

/* Copy the current view. */
void lc_writer_view(struct lc_writer *w, struct lc_writer_view *out);

/* Stop (paused = 1) or resume (0) issuing writes; with paused = 1 also wait
 * (at most timeout_ms) until none is in flight. Returns 0 or GS_ETIMEOUT. */
int lc_writer_pause(struct lc_writer *w, int paused, unsigned timeout_ms);

/* Stop the thread, close the client and free the writer (NULL is ok). */
void lc_writer_stop(struct lc_writer *w);

#endif /* GS_BENCH_LC_WRITER_H */
