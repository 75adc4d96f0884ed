/*
 * sim_cell: seeded deterministic simulations of a cell (sim.h), as a cmocka
 * test.
 *
 *   GEOSCALE_SIM_SEEDS=N       run seeds FIRST..FIRST+N-1 (default 300)
 *   GEOSCALE_SIM_FIRST_SEED=F  (default 1)
 *   GEOSCALE_SIM_SEED=S        run seed S only, printing its fault schedule
 *   GEOSCALE_SIM_DIR=DIR       where runs keep their databases
 *                              (default $TMPDIR, else /tmp)
 *   GEOSCALE_SIM_IO_FAULTS=1   also inject raft I/O failures (see sim.h:
 *                              libraft 0.22.1 aborts on some of them)
 *   GEOSCALE_SIM_SNAPSHOT_THRESHOLD=N, GEOSCALE_SIM_SNAPSHOT_TRAILING=N
 *                              raft snapshot settings (default 48 and 16)
 * A replay must use the same settings as the failing run.
 *
 * A failing seed prints its violations and the command that replays it.
 * If the process aborts (an assertion of libraft's fixture or ours), a
 * SIGABRT handler prints the replay command of the seed being run.
 *
 * Two more tests break one server on purpose (sim.h, enum sim_corruption)
 * and assert that the checks report it: the checker can fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/log.h"
#include "engine/mono.h"
#include "sim.h"

/* The replay line of the seed being run, for the SIGABRT handler. A global
 * because a signal handler can reach nothing else; written only between
 * runs. */
static char replay_line[512];
static const char *program = "sim_cell";

static void on_abort(int sig)
{
    (void)sig;
    if (replay_line[0] != '\0') {
        ssize_t w = write(STDERR_FILENO, replay_line, strlen(replay_line));
        (void)w;
    }
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
}

static uint64_t env_u64(const char *name, uint64_t dflt, bool *set)
{
    const char *v = getenv(name);
    if (set != NULL) {
        *set = v != NULL && v[0] != '\0';
    }
    if (v == NULL || v[0] == '\0') {
        return dflt;
    }
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end != '\0') {
        fprintf(stderr, "sim: %s=%s is not a number\n", name, v);
        exit(2);
    }
    return x;
}

static void set_replay(uint64_t seed)
{
    snprintf(replay_line, sizeof replay_line,
             "\nsim: seed %" PRIu64 " aborted; replay with: GEOSCALE_SIM_SEED=%" PRIu64 " %s\n",
             seed, seed, program);
}

/* ---------------------------------------------------------------- seeds */

static void test_seeds(void **state)
{
    (void)state;
    bool one = false;
    uint64_t single = env_u64("GEOSCALE_SIM_SEED", 0, &one);
    uint64_t first = one ? single : env_u64("GEOSCALE_SIM_FIRST_SEED", 1, NULL);
    uint64_t count = one ? 1 : env_u64("GEOSCALE_SIM_SEEDS", 300, NULL);
    bool io_faults = env_u64("GEOSCALE_SIM_IO_FAULTS", 0, NULL) != 0;
    unsigned threshold = (unsigned)env_u64("GEOSCALE_SIM_SNAPSHOT_THRESHOLD", 0, NULL);
    unsigned trailing = (unsigned)env_u64("GEOSCALE_SIM_SNAPSHOT_TRAILING", 0, NULL);
    uint64_t failed_seeds[16];
    unsigned n_failed = 0;
    struct sim_report total = {0};
    uint64_t sim_ms = 0;
    double t0 = gs_mono_s();

    for (uint64_t seed = first; seed < first + count; seed++) {
        struct sim_config cfg = {.seed = seed, .faults = true, .io_faults = io_faults,
                                 .snapshot_threshold = threshold, .snapshot_trailing = trailing,
                                 .verbose = one};
        struct sim_report rep;
        set_replay(seed);
        int rv = sim_run(&cfg, &rep);
        replay_line[0] = '\0';
        if (one || rv != 0) {
            sim_report_print(&cfg, &rep);
        }
        if (rv != 0) {
            fprintf(stderr, "sim: seed %" PRIu64 " FAILED; replay with: GEOSCALE_SIM_SEED=%" PRIu64
                            " %s\n",
                    seed, seed, program);
            if (n_failed < sizeof failed_seeds / sizeof failed_seeds[0]) {
                failed_seeds[n_failed] = seed;
            }
            n_failed++;
        }
        total.proposed += rep.proposed;
        total.acked += rep.acked;
        total.commands_acked += rep.commands_acked;
        total.applied_entries += rep.applied_entries;
        total.snapshots += rep.snapshots;
        total.installs += rep.installs;
        total.restores_skipped += rep.restores_skipped;
        total.faults += rep.faults;
        total.kills += rep.kills;
        total.late_apply_failures += rep.late_apply_failures;
        total.elections += rep.elections;
        total.unavailable += rep.unavailable;
        sim_ms += rep.sim_ms;
    }
    double elapsed = gs_mono_s() - t0;
    fprintf(stderr,
            "sim: %" PRIu64 " seeds from %" PRIu64 " in %.1f s (%.1f s simulated): %" PRIu64
            " entries proposed, %" PRIu64 " acked (%" PRIu64 " commands), %" PRIu64
            " applies, %" PRIu64 " elections, %" PRIu64 " faults (%" PRIu64 " kills), %" PRIu64
            " snapshots, %" PRIu64 " checkpoint installs, %" PRIu64 " restores skipped, %" PRIu64
            " raft_apply failures after submission, %u servers lost to disk faults; %u failed\n",
            count, first, elapsed, (double)sim_ms / 1000.0, total.proposed, total.acked,
            total.commands_acked, total.applied_entries, total.elections, total.faults,
            total.kills, total.snapshots, total.installs, total.restores_skipped,
            total.late_apply_failures, total.unavailable, n_failed);
    for (unsigned k = 0; k < n_failed && k < sizeof failed_seeds / sizeof failed_seeds[0]; k++) {
        fprintf(stderr, "sim: replay: GEOSCALE_SIM_SEED=%" PRIu64 " %s\n", failed_seeds[k],
                program);
    }
    assert_int_equal(n_failed, 0);
}

/* ---------------------------------------------------------------- the checker fails */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Run a healthy cluster (no faults, so no snapshot install can repair the
 * broken server) with one corruption; return the report. */
static void run_corrupted(enum sim_corruption corrupt, struct sim_report *rep)
{
    char base[64];
    strcpy(base, "/tmp/gs_sim_checker_XXXXXX");
    assert_non_null(mkdtemp(base));
    struct sim_config cfg = {.seed = 42,
                             .n_servers = 3,
                             .duration_ms = 3000,
                             .faults = false,
                             .corrupt = corrupt,
                             .base_dir = base};
    set_replay(cfg.seed);
    int rv = sim_run(&cfg, rep);
    replay_line[0] = '\0';
    sim_report_print(&cfg, rep);
    nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(rv, 1);
    assert_true(rep->n_violations > 0);
    assert_int_equal(rep->failed & SIM_CHECK_HARNESS, 0);
}

/* Server 0 skips applying one entry but records it: only the state can
 * tell, and the convergence check must. */
static void test_checker_detects_skipped_apply(void **state)
{
    (void)state;
    struct sim_report rep;
    run_corrupted(SIM_CORRUPT_SKIP_APPLY, &rep);
    assert_true(rep.failed & SIM_CHECK_CONVERGENCE);
    assert_int_equal(rep.failed & SIM_CHECK_LOG, 0);
    assert_non_null(strstr(rep.violations[0], "server 1:"));
}

/* Server 0 records a different entry at one index: the log check must
 * report state machine safety. */
static void test_checker_detects_divergent_entry(void **state)
{
    (void)state;
    struct sim_report rep;
    run_corrupted(SIM_CORRUPT_LOG_HASH, &rep);
    assert_true(rep.failed & SIM_CHECK_LOG);
    assert_non_null(strstr(rep.violations[0], "state machine safety"));
}

/* The same seed gives the same run (the replay promise). */
static void test_seed_replays(void **state)
{
    (void)state;
    struct sim_config cfg = {.seed = 7, .duration_ms = 4000, .faults = true};
    struct sim_report a, b;
    set_replay(cfg.seed);
    assert_int_equal(sim_run(&cfg, &a), 0);
    assert_int_equal(sim_run(&cfg, &b), 0);
    replay_line[0] = '\0';
    assert_int_equal(a.sim_ms, b.sim_ms);
    assert_int_equal(a.proposed, b.proposed);
    assert_int_equal(a.acked, b.acked);
    assert_int_equal(a.applied_entries, b.applied_entries);
    assert_int_equal(a.final_index, b.final_index);
    assert_int_equal(a.installs, b.installs);
}

int main(int argc, char **argv)
{
    (void)argc;
    program = argv[0];
    setvbuf(stderr, NULL, _IOLBF, 0);
    signal(SIGABRT, on_abort);
    /* Each run opens a database per server: keep their info lines out. */
    const char *level = getenv("GEOSCALE_LOG");
    log_set_level(level != NULL && log_parse_level(level) >= 0
                      ? (enum log_level)log_parse_level(level)
                      : LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_detects_skipped_apply),
        cmocka_unit_test(test_checker_detects_divergent_entry),
        cmocka_unit_test(test_seed_replays),
        cmocka_unit_test(test_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
