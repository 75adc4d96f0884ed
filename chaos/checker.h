/*
 * Checkers of chaos histories (chaos/history.h, chaos/README.md).
 *
 * - Linearizability of each register key (read/write/cas), key by key (a
 *   history of independent registers is linearizable iff each key's is):
 *   Wing & Gong's search with Lowe's memoization of (linearized set, value).
 *   The search is bounded; a key whose search exceeds the budget is
 *   "unknown", which is not a pass.
 * - Lost acknowledged writes: every ok create has a final_exists true, every
 *   ok follow (actor, target) is in each of actor's ok final_following. A
 *   user whose check needs a final read that the history lacks is
 *   "undecided", which is not a pass either.
 */
#ifndef GS_CHAOS_CHECKER_H
#define GS_CHAOS_CHECKER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chaos/history.h"

struct chaos_check_summary {
    size_t events;         /* events in the file (init events included) */
    size_t ops;            /* operations (invokes) */
    size_t keys;           /* register keys checked for linearizability */
    size_t info_ops;       /* operations of unknown outcome (info or no completion) */
    size_t lin_violations; /* keys that are not linearizable */
    size_t lost_writes;    /* acknowledged creates/follows missing at the end */
    int unknown;           /* checks that could not decide: keys over the search
                              budget plus users lacking a needed final read */
};

struct chaos_check_options {
    /* Per key: most search states (memoized configurations) to explore, and
     * most bytes their memo may take, before the key is "unknown". */
    uint64_t max_states;
    uint64_t max_memo_bytes;
    int verbose; /* also report keys and users that passed */
};

#define CHAOS_CHECK_DEFAULT_MAX_STATES 5000000u
#define CHAOS_CHECK_DEFAULT_MAX_MEMO_BYTES (512ull << 20)

void chaos_check_options_default(struct chaos_check_options *opts);

/* Check a loaded history; print a human report to out (NULL: print nothing);
 * fill *sum (NULL: not filled). opts NULL means the defaults. Returns 0 when
 * every check passed, 1 when an anomaly was found or a check could not
 * decide, GS_ENOMEM when memory ran out (the report says where). */
int chaos_check_history(const struct chaos_history *h, const struct chaos_check_options *opts,
                        FILE *out, struct chaos_check_summary *sum);

/* Load and check path; print a human report to out; 0 = all checks passed,
 * 1 = an anomaly found (or a check could not decide), negative = error
 * reading the file (a GS_E* code, explained in the report). */
int chaos_check_file(const char *path, FILE *out, struct chaos_check_summary *sum);

/* chaos_check_file with options. */
int chaos_check_file_opts(const char *path, const struct chaos_check_options *opts, FILE *out,
                          struct chaos_check_summary *sum);

#endif /* GS_CHAOS_CHECKER_H */
