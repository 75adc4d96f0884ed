/*
 * The metadata state machine (engine/metadata_fsm.h) behind the group
 * interface (group_sm.h). The table for a metadata replica, voter or
 * standby; sm is a struct metadata_fsm *.
 *
 * Checkpoints as every group (group_sm.h, rsm): a replica, voter or
 * standby, that falls behind the leader's log trailing installs a peer's.
 */
#ifndef GS_RAFT_METADATA_SM_H
#define GS_RAFT_METADATA_SM_H

#include "group_sm.h"

extern const struct group_sm_ops metadata_sm_ops;

#endif /* GS_RAFT_METADATA_SM_H */
