/* chaos-check: check a chaos history file (chaos/README.md).
 *
 *   chaos-check [--verbose] [--max-states N] HISTORY.jsonl
 *
 * Exit status: 0 every check passed, 1 an anomaly was found or a check could
 * not decide, 2 usage error or the history could not be read. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/checker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chaos-check [--verbose] [--max-states N] HISTORY.jsonl\n"
            "\n"
            "Checks a chaos history (one JSON event per line): linearizability of every\n"
            "register key (read/write/cas) and that no acknowledged create or follow is\n"
            "missing from the final reads.\n"
            "\n"
            "  --verbose        also report the keys that passed\n"
            "  --max-states N   search budget per key (default %u); a key whose search\n"
            "                   exceeds it is undecided, which is not a pass\n"
            "\n"
            "exit status: 0 all checks passed, 1 anomaly found or undecided,\n"
            "             2 usage error or unreadable history\n",
            CHAOS_CHECK_DEFAULT_MAX_STATES);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct chaos_check_options opts;
    chaos_check_options_default(&opts);
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            opts.verbose = 1;
        } else if (strcmp(argv[i], "--max-states") == 0 && i + 1 < argc) {
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || n == 0 || argv[i][0] == '-') {
                fprintf(stderr, "chaos-check: bad --max-states %s\n", argv[i]);
                return 2;
            }
            opts.max_states = n;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "chaos-check: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path == NULL) {
            path = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL) {
        usage(stderr);
        return 2;
    }
    struct chaos_check_summary sum;
    int rc = chaos_check_file_opts(path, &opts, stdout, &sum);
    fflush(stdout);
    if (rc < 0) {
        return 2;
    }
    return rc == 0 ? 0 : 1;
}
