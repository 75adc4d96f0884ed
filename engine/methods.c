/* The method table (see methods.h). */
#include "methods.h"

#include <stddef.h>

#include "directory.pb-c.h"
#include "geoscale.pb-c.h"
#include "metadata.pb-c.h"

#define MG(ID, NAME, KIND, GROUP, REQ, RESP)                                                       \
    [GEOSCALE__METHOD__METHOD_##ID] = {GEOSCALE__METHOD__METHOD_##ID,                              \
                                       NAME,                                                       \
                                       METHOD_KIND_##KIND,                                         \
                                       METHOD_GROUP_##GROUP,                                       \
                                       &geoscale__##REQ##__descriptor,                             \
                                       &geoscale__##RESP##__descriptor}
#define M(ID, NAME, KIND, REQ, RESP) MG(ID, NAME, KIND, CELL, REQ, RESP)

static const struct method_info methods[] = {
    M(CREATE_USER, "CreateUser", WRITE, create_user_request, create_user_response),
    M(GET_USER, "GetUser", READ, get_user_request, get_user_response),
    M(UPDATE_USER, "UpdateUser", WRITE, update_user_request, update_user_response),
    M(FOLLOW, "Follow", WRITE, edge_request, edge_response),
    M(UNFOLLOW, "Unfollow", WRITE, edge_request, edge_response),
    M(BLOCK, "Block", WRITE, edge_request, edge_response),
    M(UNBLOCK, "Unblock", WRITE, edge_request, edge_response),
    M(LIST_FOLLOWERS, "ListFollowers", READ, list_edges_request, list_edges_response),
    M(LIST_FOLLOWING, "ListFollowing", READ, list_edges_request, list_edges_response),
    M(GET_SETTINGS, "GetSettings", READ, get_settings_request, get_settings_response),
    M(SET_SETTINGS, "SetSettings", WRITE, set_settings_request, set_settings_response),
    MG(CELL_STATUS, "CellStatus", LOCAL, NODE, cell_status_request, cell_status_response),
    M(STATE_DIGEST, "StateDigest", LOCAL, state_digest_request, state_digest_response),
    MG(CHECKPOINT_INFO, "CheckpointInfo", LOCAL, NODE, checkpoint_info_request,
       checkpoint_info_response),
    MG(CHECKPOINT_CHUNK, "CheckpointChunk", LOCAL, NODE, checkpoint_chunk_request,
       checkpoint_chunk_response),
    MG(NODE_STATUS, "NodeStatus", LOCAL, NODE, node_status_request, node_status_response),
    MG(LEADER_CHECK, "LeaderCheck", LOCAL, NODE, leader_check_request, leader_check_response),
    M(OUTBOX_ACK, "OutboxAck", WRITE, outbox_ack_request, outbox_ack_response),
    M(OUTBOX_READ, "OutboxRead", READ_ANY, outbox_read_request, outbox_read_response),
    M(EDGE_APPLY, "EdgeApply", WRITE, edge_apply_request, edge_apply_response),
#define D(ID, NAME, KIND, MSG)                                                                     \
    MG(DIRECTORY_##ID, NAME, KIND, DIRECTORY, MSG##_request, MSG##_response)
    D(REGISTER_CELL, "DirectoryRegisterCell", WRITE, register_cell),
    D(RESERVE_USERNAME, "DirectoryReserveUsername", WRITE, reserve_username),
    D(CONFIRM_USERNAME, "DirectoryConfirmUsername", WRITE, confirm_username),
    D(RELEASE_USERNAME, "DirectoryReleaseUsername", WRITE, release_username),
    D(SET_CELL_ACCEPTING, "DirectorySetCellAccepting", WRITE, set_cell_accepting),
    /* Route lookups are answered by any directory replica: a stale route
     * cannot misdirect a request, since a cell refuses users it does not
     * own (WRONG_CELL), and a missing one falls back to the cell the id
     * names. A username lookup has no such fallback (a replica that has not
     * yet applied a signup would say "no such user"): it asks the leader. */
    D(GET_ROUTE, "DirectoryGetRoute", READ_ANY, get_route),
    D(LOOKUP_USERNAME, "DirectoryLookupUsername", READ, lookup_username),
    D(LIST_CELLS, "DirectoryListCells", READ_ANY, list_cells),
#undef D
    MG(METADATA_APPLY, "MetadataApply", WRITE, METADATA, metadata_apply_request,
       metadata_apply_response),
    MG(METADATA_GET, "MetadataGet", READ_ANY, METADATA, metadata_get_request,
       metadata_get_response),
};

const struct method_info *method_lookup(uint32_t id)
{
    if (id >= sizeof methods / sizeof methods[0] || methods[id].name == NULL) {
        return NULL;
    }
    return &methods[id];
}

uint64_t method_subject(const struct method_info *m, const ProtobufCMessage *msg)
{
    if (m == NULL || msg == NULL || msg->descriptor != m->request) {
        return 0;
    }
    switch (m->id) {
    case GEOSCALE__METHOD__METHOD_GET_USER:
        return ((const Geoscale__GetUserRequest *)msg)->user_id;
    case GEOSCALE__METHOD__METHOD_UPDATE_USER:
        return ((const Geoscale__UpdateUserRequest *)msg)->user_id;
    case GEOSCALE__METHOD__METHOD_FOLLOW:
    case GEOSCALE__METHOD__METHOD_UNFOLLOW:
    case GEOSCALE__METHOD__METHOD_BLOCK:
    case GEOSCALE__METHOD__METHOD_UNBLOCK:
        return ((const Geoscale__EdgeRequest *)msg)->actor_id;
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS:
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWING:
        return ((const Geoscale__ListEdgesRequest *)msg)->user_id;
    case GEOSCALE__METHOD__METHOD_GET_SETTINGS:
        return ((const Geoscale__GetSettingsRequest *)msg)->user_id;
    case GEOSCALE__METHOD__METHOD_SET_SETTINGS:
        return ((const Geoscale__SetSettingsRequest *)msg)->user_id;
    default:
        return 0;
    }
}
