/*
 * A raft_uv transport that sets TCP_NODELAY on every connection.
 *
 * raft_uv_tcp (libraft 0.22.1) leaves Nagle's algorithm on. A leader that
 * pipelines AppendEntries messages to a follower then holds each further
 * send until the follower's delayed ACK of the previous one (about 40 ms on
 * Linux): with entries of a kilobyte and a few proposals in flight, a 3-node
 * group measured 142 entries/s with Nagle and 3,048/s without
 * (bench/probe, --nodelay). This transport delegates everything to an
 * initialised raft_uv_tcp transport and sets TCP_NODELAY on each stream that
 * one accepts or connects, before raft_uv sees it.
 *
 * Use: raft_uv_tcp_init(inner, loop); tcp_nodelay_wrap(&w, inner);
 * raft_uv_init(io, loop, dir, &w.outer). Closing raft_uv closes both; free
 * the inner one with raft_uv_tcp_close() as usual. The wrapper itself is the
 * caller's memory and must outlive the loop's close callbacks.
 */
#ifndef GS_RAFT_TCP_NODELAY_H
#define GS_RAFT_TCP_NODELAY_H

#include <raft.h>
#include <raft/uv.h>

struct tcp_nodelay {
    struct raft_uv_transport outer;  /* give this one to raft_uv_init */
    struct raft_uv_transport *inner; /* raft_uv_tcp; inner->data = this */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
};

/* Set up w over the initialised transport inner (whose data field it
 * takes). Cannot fail. */
void tcp_nodelay_wrap(struct tcp_nodelay *w, struct raft_uv_transport *inner);

#endif /* GS_RAFT_TCP_NODELAY_H */
