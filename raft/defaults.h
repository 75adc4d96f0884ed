/*
 * Default Raft timing of every group (a config's "raft" object overrides it).
 *
 * On a LAN or loopback a follower notices a dead leader after 500-1000 ms
 * (libraft randomises the election timeout in [E, 2E]), so a cell fails
 * over in about a second (bench/RESULTS.md, geoscale-lifecycle failover).
 * Groups whose voters are far apart (the directory and metadata groups
 * across regions) need 10-20 times the one-way latency: set
 * raft.election_timeout_ms accordingly (docs/CLUSTER.md).
 */
#ifndef GS_RAFT_DEFAULTS_H
#define GS_RAFT_DEFAULTS_H

#define GROUP_DEFAULT_ELECTION_TIMEOUT_MS 500
#define GROUP_DEFAULT_HEARTBEAT_TIMEOUT_MS 50

#endif /* GS_RAFT_DEFAULTS_H */
