/* The metadata state machine behind the group interface (see metadata_sm.h). */
#include "metadata_sm.h"

#include "../engine/metadata_fsm.h"

static uint64_t metadata_sm_applied_index(void *sm)
{
    return metadata_fsm_applied_index(sm);
}

static int metadata_sm_apply(void *sm, uint64_t index, const void *entry, size_t len,
                             struct cell_result *results, size_t max_results, size_t *n_results)
{
    return metadata_fsm_apply(sm, index, entry, len, results, max_results, n_results);
}

static int metadata_sm_read(void *sm, uint32_t method, const uint8_t *body, size_t len,
                            struct cell_result *out)
{
    return metadata_fsm_read(sm, method, body, len, out);
}

static int metadata_sm_digest(void *sm, uint8_t digest[32], uint64_t *n_keys)
{
    return metadata_fsm_digest(sm, digest, n_keys);
}

static int metadata_sm_sync(void *sm)
{
    return metadata_fsm_sync(sm);
}

static struct rsm *metadata_sm_rsm(void *sm)
{
    return metadata_fsm_rsm(sm);
}

const struct group_sm_ops metadata_sm_ops = {
    .kind = "metadata",
    .applied_index = metadata_sm_applied_index,
    .apply = metadata_sm_apply,
    .read = metadata_sm_read,
    .digest = metadata_sm_digest,
    .sync = metadata_sm_sync,
    .rsm = metadata_sm_rsm,
    .checkpoint_group = GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__METADATA,
};
