/*
 * The method table: for each geoscale.Method, its name, how it is served and
 * which protobuf messages it takes and returns. One table shared by the node,
 * the client library and the CLI, so they cannot disagree.
 */
#ifndef GS_ENGINE_METHODS_H
#define GS_ENGINE_METHODS_H

#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

enum method_kind {
    METHOD_KIND_WRITE = 1, /* through the Raft log of the user's cell */
    METHOD_KIND_READ,      /* linearizable read on the cell leader */
    METHOD_KIND_LOCAL,     /* answered by the node that receives it */
    METHOD_KIND_READ_ANY,  /* read from any replica's local state, without a
                              barrier: may lag the leader (metadata reads) */
};

/* Which of a node's Raft groups serves a method. */
enum method_group {
    METHOD_GROUP_CELL = 0,  /* the cell that owns the user named */
    METHOD_GROUP_DIRECTORY, /* the directory group */
    METHOD_GROUP_METADATA,  /* the metadata group */
    METHOD_GROUP_NODE,      /* the receiving node itself, no group */
};
#define METHOD_GROUPS 3 /* the groups above that are Raft groups */

struct method_info {
    uint16_t id;                               /* geoscale.Method value */
    const char *name;                          /* "CreateUser" */
    enum method_kind kind;
    enum method_group group;
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
};

/* The entry for `id`, or NULL for an unknown method. */
const struct method_info *method_lookup(uint32_t id);

/*
 * The user a cell request is about, read from its unpacked request message
 * (msg->descriptor must be m->request): the user_id of GetUser, UpdateUser,
 * ListFollowers/ListFollowing, GetSettings, SetSettings, the actor_id of the
 * edge methods. 0 when the method names no user (CreateUser, a GetUser by
 * username, node and group methods). Routing keys on it: the node to send a
 * request to the user's cell, the client library to go there directly.
 */
uint64_t method_subject(const struct method_info *m, const ProtobufCMessage *msg);

#endif /* GS_ENGINE_METHODS_H */
