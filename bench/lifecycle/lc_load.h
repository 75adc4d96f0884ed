/*
 * Bulk signup for the restart measurement: CreateUser for users
 * [first, first + n) as fast as the cell takes them, pipelined through the
 * asynchronous client on a private loop: `connections` gs_clients (each one
 * connection to the leader), `window` requests in flight in total. Progress
 * (users, users/s over the last second and overall, ETA) goes to stderr
 * once a second.
 *
 * User i is "lc_<i>" with a display name, an e-mail address and a bio of
 * bio_bytes pseudo-random lowercase letters (random, so that RocksDB's
 * compression does not make the per-user size look smaller than it is).
 * A failed create is retried up to 5 times; ALREADY_EXISTS on a retry means
 * the first attempt was applied, and counts as created.
 */
#ifndef GS_BENCH_LC_LOAD_H
#define GS_BENCH_LC_LOAD_H

#include <stddef.h>
#include <stdint.h>

struct lc_load_options {
    const char *const *seeds;
    size_t n_seeds;
    uint64_t first;
    uint64_t n;
    unsigned window;      /* in flight in total */
    unsigned connections; /* gs_clients */
    unsigned bio_bytes;   /* <= 4096 */
    unsigned call_timeout_ms;
    int progress; /* 1: progress lines on stderr */
};

struct lc_load_result {
    uint64_t created; /* acknowledged (or found existing on a retry) */
    uint64_t failed;  /* gave up after the retries */
    uint64_t retries;
    int last_error; /* GS_E* of the last failure, 0 = none */
    double elapsed_ms;
    double users_per_s;
    uint64_t request_bytes;  /* packed CreateUser bodies sent (first attempts) */
    uint64_t sample_ids[16]; /* user ids of the first users created */
    size_t n_sample_ids;
};

/* Run the load. Returns 0 when the run ended (see res for failures) or a
 * negative code if it could not start. */
int lc_load_users(const struct lc_load_options *opts, struct lc_load_result *res);

#endif /* GS_BENCH_LC_LOAD_H */
