/* The directory state machine behind the group interface (group_sm.h). */
#ifndef GS_RAFT_DIRECTORY_SM_H
#define GS_RAFT_DIRECTORY_SM_H

#include "group_sm.h"

/* sm is a struct directory_fsm *. Checkpoints as every group (group_sm.h,
 * rsm): a replica behind the leader's log trailing installs a peer's. */
extern const struct group_sm_ops directory_sm_ops;

#endif /* GS_RAFT_DIRECTORY_SM_H */
