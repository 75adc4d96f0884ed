/*
 * A GeoScale node: everything one geoscaled process runs, owned by one
 * struct gs_node (there is no global state outside cmd/).
 *
 *   config  -> cell FSM (RocksDB at <data_dir>/db)
 *           -> Raft group (raft_uv at <data_dir>/raft, its own thread)
 *           -> client server on the main loop (this thread), answering
 *              through its reply mailbox
 *
 * SIGTERM or SIGINT stops it gracefully: stop accepting, close the client
 * connections, stop the group, close the FSM, exit status 0.
 */
#ifndef GS_NET_NODE_H
#define GS_NET_NODE_H

#include "cluster_config.h"
#include "config.h"

struct gs_node;

/*
 * Run a node with cfg until it is told to stop. The log level is the
 * caller's to set beforehand. Logs `info node event=ready ...` once the
 * client address listens. Returns the process exit status: 0 after a
 * graceful stop, 1 if the node could not start (the reason is logged).
 */
int node_run(const struct node_config *cfg);

/* Run node `node_id` of a cluster (docs/CLUSTER.md): every group the node
 * hosts. Returns the exit status (2 if the node is not in the cluster). */
int node_run_cluster(const struct cluster_config *cc, uint64_t node_id);

/* Layout of a node's data_dir: db/ (RocksDB), raft/ (raft_uv), checkpoints/
 * (RocksDB checkpoints kept for peers' snapshot installs) and incoming/ (a
 * checkpoint being received). All on one file system, so that checkpoints
 * are hard links and an installed checkpoint is renamed into place. */
#define NODE_CHECKPOINT_SUBDIR "checkpoints"
#define NODE_INCOMING_SUBDIR "incoming"

/* <data_dir>/checkpoints into buf. */
void node_checkpoint_dir(const struct node_config *cfg, char *buf, size_t len);

#endif /* GS_NET_NODE_H */
