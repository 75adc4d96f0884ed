/*
 * The metadata state machine (engine/metadata_fsm.h) behind the group
 * interface (group_sm.h). The table for a metadata replica, voter or
 * standby; sm is a struct metadata_fsm *.
 *
 * No checkpoints: engine/checkpoint.h makes and installs checkpoints of a
 * cell's DB only (its manifest carries a cell id and install reopens a
 * struct cell_fsm), so checkpoint_create and install are NULL and a metadata
 * replica catches up from the Raft log. Keep the group's log trailing long
 * enough for that until checkpoints work over any rsm.
 */
#ifndef GS_RAFT_METADATA_SM_H
#define GS_RAFT_METADATA_SM_H

#include "group_sm.h"

extern const struct group_sm_ops metadata_sm_ops;

#endif /* GS_RAFT_METADATA_SM_H */
