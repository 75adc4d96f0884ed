/* The cell state machine behind the group interface (see group_sm.h). */
#include "group_sm.h"

static uint64_t cell_sm_applied_index(void *sm)
{
    return cell_fsm_applied_index(sm);
}

static int cell_sm_apply(void *sm, uint64_t index, const void *entry, size_t len,
                         struct cell_result *results, size_t max_results, size_t *n_results)
{
    return cell_fsm_apply(sm, index, entry, len, results, max_results, n_results);
}

static int cell_sm_read(void *sm, uint32_t method, const uint8_t *body, size_t len,
                        struct cell_result *out)
{
    return cell_fsm_read(sm, method, body, len, out);
}

static int cell_sm_digest(void *sm, uint8_t digest[32], uint64_t *n_keys)
{
    return cell_fsm_digest(sm, digest, n_keys);
}

static int cell_sm_sync(void *sm)
{
    return cell_fsm_sync(sm);
}

static struct rsm *cell_sm_rsm(void *sm)
{
    return cell_fsm_rsm(sm);
}

const struct group_sm_ops cell_sm_ops = {
    .kind = "cell",
    .applied_index = cell_sm_applied_index,
    .apply = cell_sm_apply,
    .read = cell_sm_read,
    .digest = cell_sm_digest,
    .sync = cell_sm_sync,
    .rsm = cell_sm_rsm,
    .checkpoint_group = GEOSCALE__CHECKPOINT_INFO_REQUEST__GROUP__CELL,
};
