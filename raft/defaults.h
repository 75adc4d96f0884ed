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

/* How long a leader waits for a follower's answer to a snapshot before it
 * sends it again (libraft's default is 30 s). A follower whose answer is
 * lost (seen when a snapshot arrives while it takes its own) would stay
 * behind that long; a resend costs one manifest, and a follower that has
 * installed it already skips it. */
#define GROUP_INSTALL_SNAPSHOT_TIMEOUT_MS 5000

/* raft_uv's log segment size (its default is 8 MiB): why 15 MiB, and why
 * not more, is in group_setup (group.c). */
#define GROUP_SEGMENT_BYTES ((size_t)15 << 20)

#endif /* GS_RAFT_DEFAULTS_H */
