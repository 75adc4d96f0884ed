/*
 * The directory state machine behind the group interface (see
 * group_sm.h). A directory entry is a CellBatch whose commands' method ids
 * are the directory command kinds (directory.proto), so the group's entries
 * go to directory_fsm_apply() unchanged.
 */
#include "directory_sm.h"

#include "../engine/directory_fsm.h"

static uint64_t directory_sm_applied_index(void *sm)
{
    return directory_fsm_applied_index(sm);
}

static int directory_sm_apply(void *sm, uint64_t index, const void *entry, size_t len,
                              struct cell_result *results, size_t max_results, size_t *n_results)
{
    return directory_fsm_apply(sm, index, entry, len, results, max_results, n_results);
}

static int directory_sm_read(void *sm, uint32_t method, const uint8_t *body, size_t len,
                             struct cell_result *out)
{
    return directory_fsm_read(sm, method, body, len, out);
}

static int directory_sm_digest(void *sm, uint8_t digest[32], uint64_t *n_keys)
{
    return directory_fsm_digest(sm, digest, n_keys);
}

static int directory_sm_sync(void *sm)
{
    return directory_fsm_sync(sm);
}

static struct rsm *directory_sm_rsm(void *sm)
{
    return directory_fsm_rsm(sm);
}

const struct group_sm_ops directory_sm_ops = {
    .kind = "directory",
    .applied_index = directory_sm_applied_index,
    .apply = directory_sm_apply,
    .read = directory_sm_read,
    .digest = directory_sm_digest,
    .sync = directory_sm_sync,
    .rsm = directory_sm_rsm,
    .checkpoint_group = GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__DIRECTORY,
};
