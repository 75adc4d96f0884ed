/*
 * The client-facing server of a node: accepts TCP connections on the node's
 * main loop, reads request frames, hands cell requests to the Raft group
 * (or answers them locally), forwards them to the cell leader when this node
 * is not it, and writes the responses. See server.c for the design.
 *
 * Threading: every function here runs on the loop's thread. The group
 * answers through the server's reply mailbox on that loop.
 */
#ifndef GS_NET_SERVER_H
#define GS_NET_SERVER_H

#include <stddef.h>

#include <uv.h>

#include "../raft/group.h"
#include "../engine/methods.h"
#include "cluster_config.h"
#include "config.h"

struct server;

/*
 * Create the server on loop and start listening on cfg->client_address.
 * groups[METHOD_GROUP_*] are the Raft groups this node hosts (NULL for one
 * it does not host); cluster is the cluster topology (NULL for a lone cell),
 * used to reach the groups hosted elsewhere. cfg and the groups must outlive the server (the groups
 * until server_stop()).
 * Returns 0, or a GS_E* code with one line in errmsg; on failure the server
 * closes what it opened by itself (the caller keeps running the loop until
 * it is idle) and *out is NULL.
 */
int server_start(uv_loop_t *loop, const struct node_config *cfg,
                 const struct cluster_config *cluster, struct group *const groups[METHOD_GROUPS],
                 struct server **out, char *errmsg, size_t errmsg_len);

/* Stop accepting, close every connection and every forwarding client.
 * Requests the group or a forward still holds become orphans, freed when
 * their holder answers. After this the server never calls the group again,
 * so the caller may group_stop(). Idempotent. */
void server_stop(struct server *srv);

/* After server_stop() and group_stop(): close the reply mailbox (the
 * answers the group posted are delivered one last time and their orphans
 * freed) and free the server once its handles are closed; closed_cb(data)
 * then runs (may be NULL). */
void server_close(struct server *srv, void (*closed_cb)(void *data), void *data);

#endif /* GS_NET_SERVER_H */
