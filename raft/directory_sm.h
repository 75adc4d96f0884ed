/* The directory state machine behind the group interface (group_sm.h). */
#ifndef GS_RAFT_DIRECTORY_SM_H
#define GS_RAFT_DIRECTORY_SM_H

#include "group_sm.h"

/* sm is a struct directory_fsm *. No checkpoints yet: the directory's log
 * trailing covers lagging replicas. */
extern const struct group_sm_ops directory_sm_ops;

#endif /* GS_RAFT_DIRECTORY_SM_H */
