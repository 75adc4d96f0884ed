/*
 * Leader checks: Raft's ReadIndex over libraft's v0 API, which has none.
 *
 * A leader about to serve a batch of linearizable reads notes its commit
 * index, then asks every other voter of its configuration for its current
 * term (the LeaderCheck method, over the peers' client ports). A voter
 * whose term is not above the leader's has not yet joined a newer term;
 * a newer leader can commit only with a quorum in its term, and every
 * quorum includes one of the voters that answered, after it answered. So
 * once a quorum (the leader included) has answered so, nothing was
 * committed by another leader before the reads arrived, and the reads
 * may run as soon as the noted commit index is applied. This costs one
 * round trip to the nearest voter and no log entry, where a raft_barrier
 * costs a log entry made durable on a quorum.
 *
 * Two conditions stay with the caller (raft/group.c): the leader must have
 * committed an entry of its current term (before that, its commit index
 * may lag entries of earlier terms), and it must still lead that term
 * when the check succeeds. The answering side is group_term().
 *
 * All calls run on the group's loop thread.
 */
#ifndef GS_RAFT_LEADER_CHECK_H
#define GS_RAFT_LEADER_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <uv.h>

#include "group.h"

struct leader_check;
struct leader_check_round;

/* confirmed: a quorum answered with a term not above the round's.
 * Otherwise too many voters answered a higher term, failed or timed out. */
typedef void (*leader_check_cb)(struct leader_check_round *round, bool confirmed);

/* One check; the caller's memory, which must outlive the leader_check
 * (answers that arrive after the round settled still look at it). */
struct leader_check_round {
    void *data; /* the caller's */
    uint64_t term;
    /* private */
    leader_check_cb cb;
    uint64_t gen; /* bumped when the round settles: late answers see it */
    unsigned acks, refusals, voters, needed;
    bool inflight;
};

/* A checker for one group on loop: peers are the group's members as
 * configured (their client addresses; copied), group the
 * CheckpointInfoRequest.Group of the group and group_id its cell id.
 * Returns 0 or GS_ENOMEM. */
int leader_check_init(struct leader_check **out, uv_loop_t *loop, uint64_t self_id,
                      const struct group_peer *peers, size_t n_peers, int group,
                      uint32_t group_id, unsigned timeout_ms);

/* Ask the voters of conf for round->term's confirmation. Returns 0 when
 * asked: cb runs once, later, on the loop, unless the round is abandoned
 * first. Returns 1 when confirmed at once (this node is the only voter)
 * and a negative GS_E* code when it cannot be (too few voters could be
 * asked): cb is not called then. */
int leader_check_ask(struct leader_check *lc, struct leader_check_round *round,
                     const struct raft_configuration *conf, uint64_t term, leader_check_cb cb);

/* Settle a round in flight without its callback (the group stops). */
void leader_check_abandon(struct leader_check_round *round);

/* Close the peers' connections, failing calls in flight, and free lc once
 * they are closed (the loop must keep running until then). */
void leader_check_close(struct leader_check *lc);

#endif /* GS_RAFT_LEADER_CHECK_H */
