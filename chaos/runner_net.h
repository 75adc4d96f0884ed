/*
 * The chaos runner's network: where the three nodes of a run live and how
 * they are cut apart.
 *
 * Two modes:
 *
 * - RNET_NETNS: node i (0..2) runs in its own network namespace
 *   gs-chaos-<pid>-<i+1>, joined by a veth pair to a bridge gscb<pid> in the
 *   root namespace. Addresses are in a private /24, 10.231.S.0/24 (S from the
 *   runner's pid): node i is 10.231.S.(i+1), the bridge (where the runner's
 *   clients are) 10.231.S.254. Every node uses the same ports inside its own
 *   namespace. A cut is a blackhole route inside a namespace
 *   (`ip -n NS route add blackhole ADDR/32`), so traffic from that node to
 *   ADDR is dropped at the source; cutting both directions isolates a pair.
 *
 * - RNET_LOOPBACK: every node on 127.0.0.1 with its own free ports; there are
 *   no cuts (the runner pauses nodes with SIGSTOP instead).
 *
 * Only iproute2 (`ip`) is used. Namespaces and the bridge are removed by
 * rnet_teardown(); rnet_cleanup_stale() removes those of earlier runs whose
 * runner process is gone (a crashed run). Functions return 0 or a negative
 * GS_E* code and print one line on failure.
 */
#ifndef GS_CHAOS_RUNNER_NET_H
#define GS_CHAOS_RUNNER_NET_H

#include <stdbool.h>

#define RNET_NODES 3
#define RNET_NS_PREFIX "gs-chaos-"

enum rnet_mode {
    RNET_LOOPBACK = 0,
    RNET_NETNS = 1,
};

struct rnet {
    enum rnet_mode mode;
    int pid;    /* the runner's pid, in every name */
    int subnet; /* S of 10.231.S.0/24 */
    char ns[RNET_NODES][32];
    char ns_path[RNET_NODES][64]; /* /run/netns/<ns> */
    char bridge[16];
    char host_ip[16];
    char node_ip[RNET_NODES][16];
    char raft_address[RNET_NODES][64];
    char client_address[RNET_NODES][64];
    bool ns_created[RNET_NODES];
    bool bridge_created;
    bool cut[RNET_NODES][RNET_NODES]; /* cut[i][j]: node i drops traffic to node j */
    bool cut_clients[RNET_NODES];     /* node i drops traffic to the clients */
};

/* 1 if this process may create network namespaces (tries a throwaway one),
 * else 0. */
int rnet_probe(void);

/* Remove namespaces and bridges left by earlier runs whose pid is gone. */
void rnet_cleanup_stale(void);

/* Set up the network of a run in mode. Fills the addresses. On failure
 * whatever was created is torn down again. */
int rnet_setup(struct rnet *n, enum rnet_mode mode);

/* Remove every cut, namespace and bridge of n (idempotent). */
void rnet_teardown(struct rnet *n);

/* Node i stops (or resumes, cut = false) sending to node j. RNET_NETNS only. */
int rnet_set_cut(struct rnet *n, int i, int j, bool cut);

/* Node i stops (or resumes) answering the runner's clients. RNET_NETNS only. */
int rnet_set_cut_clients(struct rnet *n, int i, bool cut);

/* Remove every cut (netns); 0 or the first error. */
int rnet_heal(struct rnet *n);

/* In a freshly forked child, before exec: join node i's namespace (netns
 * mode; nothing in loopback mode). Async-signal-safe. 0 or -1. */
int rnet_enter(const struct rnet *n, int i);

#endif /* GS_CHAOS_RUNNER_NET_H */
