/*
 * geoscaled: the GeoScale node process. A thin main: parse the command
 * line, load the config, set the log level, run the node (net/node.c).
 *
 * Exit status: 0 after a graceful stop (SIGTERM/SIGINT), 1 if the node
 * could not start or failed, 2 for bad usage or a bad config.
 */
#include <inttypes.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "engine/numparse.h"
#include "net/config.h"
#include "net/node.h"

#define GEOSCALED_VERSION "0.1.0" /* = project(geoscale VERSION) in CMakeLists.txt */

static void usage(FILE *out)
{
    fprintf(out, "Usage: geoscaled --config FILE [--log-level LEVEL] [--unsafe-local-reads]\n"
                 "       geoscaled --cluster FILE --node ID [--log-level LEVEL]\n"
                 "       geoscaled --help | --version\n"
                 "\n"
                 "Run one GeoScale node. With --config: a member of one lone cell (a Raft\n"
                 "group over a RocksDB state machine). With --cluster: node ID of a\n"
                 "multi-region cluster described by FILE (docs/CLUSTER.md), hosting its\n"
                 "cell and, where the file says so, a directory or metadata replica.\n"
                 "Either way it serves clients on its client address.\n"
                 "\n"
                 "Options:\n"
                 "  -c, --config FILE       node configuration (JSON)\n"
                 "  -C, --cluster FILE      cluster topology (JSON), with --node\n"
                 "  -n, --node ID           this node's id in the cluster file\n"
                 "  -l, --log-level LEVEL   debug, info, warn or error\n"
                 "      --unsafe-local-reads\n"
                 "                          TESTING ONLY, never in production: serve\n"
                 "                          linearizable reads (GetUser, ListFollowers, ...)\n"
                 "                          from this node's local state, on followers too\n"
                 "                          and without a barrier. This BREAKS\n"
                 "                          LINEARIZABILITY (stale reads); it exists to\n"
                 "                          show that the chaos checker catches them\n"
                 "                          (geoscale-chaos --unsafe-local-reads). With\n"
                 "                          --config only.\n"
                 "  -h, --help              print this help and exit\n"
                 "  -V, --version           print the version and exit\n"
                 "\n"
                 "The log level is taken from --log-level, else the GEOSCALE_LOG\n"
                 "environment variable, else the config's log_level, else info.\n"
                 "Logs go to stderr, one line per event.\n"
                 "\n"
                 "Config keys: node_id, region, zone (optional), cell_id, raft_address,\n"
                 "client_address, data_dir, peers [{id, raft_address, client_address}],\n"
                 "username_hash_key (32-128 hex digits), and the optional objects raft\n"
                 "{election_timeout_ms, heartbeat_timeout_ms, snapshot_threshold,\n"
                 "snapshot_trailing, log_memory_mib}, limits {max_frame_bytes, "
                 "max_inflight_per_connection,\n"
                 "max_connections, idle_timeout_ms, default_deadline_ms}, rocksdb\n"
                 "{compression}, and log_level. Unknown keys are an error.\n"
                 "\n"
                 "SIGTERM or SIGINT stops the node gracefully; a second one during the\n"
                 "stop ends it at once.\n"
                 "\n"
                 "Exit status: 0 after a graceful stop, 1 if the node failed to start or\n"
                 "run, 2 for bad usage or a bad config.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"cluster", required_argument, NULL, 'C'},
        {"node", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"unsafe-local-reads", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    const char *cluster_path = NULL;
    const char *node_arg = NULL;
    const char *level_arg = NULL;
    bool unsafe_local_reads = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:C:n:l:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            cluster_path = optarg;
            break;
        case 'n':
            node_arg = optarg;
            break;
        case 'l':
            level_arg = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("geoscaled %s\n", GEOSCALED_VERSION);
            return 0;
        case 'U':
            unsafe_local_reads = true;
            break;
        case ':':
            fprintf(stderr, "geoscaled: option %s needs an argument\n", argv[optind - 1]);
            fprintf(stderr, "Try 'geoscaled --help'.\n");
            return 2;
        default:
            fprintf(stderr, "geoscaled: unknown option %s\n", argv[optind - 1]);
            fprintf(stderr, "Try 'geoscaled --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "geoscaled: unexpected argument '%s'\n", argv[optind]);
        fprintf(stderr, "Try 'geoscaled --help'.\n");
        return 2;
    }
    if ((config_path == NULL) == (cluster_path == NULL)) {
        fprintf(stderr, "geoscaled: give either --config FILE or --cluster FILE --node ID\n");
        fprintf(stderr, "Try 'geoscaled --help'.\n");
        return 2;
    }
    if (unsafe_local_reads && cluster_path != NULL) {
        fprintf(stderr, "geoscaled: --unsafe-local-reads goes with --config only\n");
        fprintf(stderr, "Try 'geoscaled --help'.\n");
        return 2;
    }
    if ((cluster_path != NULL) != (node_arg != NULL)) {
        fprintf(stderr, "geoscaled: --cluster and --node go together\n");
        fprintf(stderr, "Try 'geoscaled --help'.\n");
        return 2;
    }
    uint64_t node_id = 0;
    if (node_arg != NULL && gs_parse_u64(node_arg, 1, UINT64_MAX, &node_id) != 0) {
        fprintf(stderr, "geoscaled: --node: expected a node id (a positive integer), got '%s'\n",
                node_arg);
        return 2;
    }
    int level = -1;
    if (level_arg != NULL) {
        level = log_parse_level(level_arg);
        if (level < 0) {
            fprintf(stderr,
                    "geoscaled: --log-level: expected debug, info, warn or error, "
                    "got '%s'\n",
                    level_arg);
            return 2;
        }
    }
    const char *env = getenv("GEOSCALE_LOG");
    if (level < 0 && env != NULL && env[0] != '\0') {
        level = log_parse_level(env);
        if (level < 0) {
            fprintf(stderr,
                    "geoscaled: GEOSCALE_LOG: expected debug, info, warn or error, "
                    "got '%s'\n",
                    env);
            return 2;
        }
    }

    char errmsg[512];
    /* Writes to a peer that hung up must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (cluster_path != NULL) {
        static struct cluster_config cluster; /* lives as long as the process */
        if (cluster_config_load(cluster_path, &cluster, errmsg, sizeof errmsg) != 0) {
            fprintf(stderr, "%s\n", errmsg);
            return 2;
        }
        if (cluster_config_find_node(&cluster, node_id) == NULL) {
            fprintf(stderr, "geoscaled: --node: node %" PRIu64 " is not in %s\n", node_id,
                    cluster_path);
            cluster_config_free(&cluster);
            return 2;
        }
        if (level < 0) {
            level = cluster.log_level >= 0 ? cluster.log_level : LOG_INFO;
        }
        log_set_level((enum log_level)level);
        int status = node_run_cluster(&cluster, node_id);
        cluster_config_free(&cluster);
        return status;
    }

    static struct node_config cfg; /* large; lives as long as the process */
    if (config_load(config_path, &cfg, errmsg, sizeof errmsg) != 0) {
        fprintf(stderr, "%s\n", errmsg);
        return 2;
    }
    if (level < 0) {
        level = cfg.log_level >= 0 ? cfg.log_level : LOG_INFO;
    }
    log_set_level((enum log_level)level);
    cfg.unsafe_local_reads = unsafe_local_reads;
    if (unsafe_local_reads) {
        /* Loud on purpose, whatever the log level: this node gives up
         * linearizability. */
        fprintf(stderr,
                "WARNING geoscaled node_id=%" PRIu64
                " event=unsafe_local_reads: linearizable reads are served from local "
                "state without a barrier; reads may be STALE. Testing only (chaos "
                "checker), never in production.\n",
                cfg.node_id);
        log_warn("node", "event=unsafe_local_reads enabled=1 node_id=%" PRIu64, cfg.node_id);
    }
    return node_run(&cfg);
}
