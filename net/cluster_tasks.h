/*
 * What a node of a multi-region cluster does beyond serving its own groups
 * (docs/CLUSTER.md): it registers its cell in the directory while it leads
 * it, runs signups across the directory and the home cell, and routes cell
 * requests to the user's cell. Runs on the server's loop; every call it
 * makes to another group goes through a client of the library with the
 * request's idempotency key, so a retry anywhere is applied at most once.
 */
#ifndef GS_NET_CLUSTER_TASKS_H
#define GS_NET_CLUSTER_TASKS_H

#include <stdbool.h>

struct server;
struct server_request;
struct cluster_tasks;

/* Create the tasks of srv (which has a cluster). Returns 0 or GS_ENOMEM. */
int cluster_tasks_start(struct server *srv, struct cluster_tasks **out);

/* Called from the server's timer: cell registration. */
void cluster_tasks_tick(struct cluster_tasks *t);

/* A write to this node's cell was applied here (so this node leads it): the
 * outbox may hold new rows; ship at the next tick instead of after the idle
 * delay. */
void cluster_tasks_cell_written(struct cluster_tasks *t);

/* Offer a validated request (state RECEIVED). Returns true if the tasks
 * took it (signup, or a cell request for a user of another cell): it will
 * be answered later. false: serve it as usual. */
bool cluster_tasks_dispatch(struct cluster_tasks *t, struct server_request *req);

/* At server_stop: close the clients (calls in flight complete with
 * SHUTDOWN; their requests are orphans by then). The tasks are freed once
 * every client has closed; each closed client counts down srv->n_open. */
void cluster_tasks_stop(struct cluster_tasks *t);

#endif /* GS_NET_CLUSTER_TASKS_H */
