/*
 * GeoScale error codes.
 *
 * Every GeoScale function that can fail returns an int: 0 on success or a
 * negative GS_E* code. On the wire the same code travels as its positive
 * value in the frame header's status field (see docs/PROTOCOL.md), so a code's
 * number is part of the protocol and never changes.
 */
#ifndef GEOSCALE_ERRORS_H
#define GEOSCALE_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

enum gs_error {
    GS_OK = 0,
    GS_EINVAL = -1,        /* malformed or invalid request; nothing changed */
    GS_ENOTFOUND = -2,     /* no such user (or not visible to the viewer) */
    GS_EEXIST = -3,        /* username already taken */
    GS_ECONFLICT = -4,     /* expected_version is stale; nothing changed */
    GS_ENOTLEADER = -5,    /* this node is not the cell leader */
    GS_EUNAVAILABLE = -6,  /* no leader / no quorum right now; safe to retry */
    GS_ETIMEOUT = -7,      /* deadline passed before an answer */
    GS_EUNKNOWN = -8,      /* outcome unknown: the write may or may not have
                              been applied; retry with the same client_seq */
    GS_ETOOBIG = -9,       /* frame or field larger than the limit */
    GS_EPROTO = -10,       /* protocol violation (bad frame, bad protobuf) */
    GS_EBUSY = -11,        /* too many requests in flight; back off */
    GS_ENOMEM = -12,       /* out of memory */
    GS_EIO = -13,          /* storage error */
    GS_EBLOCKED = -14,     /* forbidden by a block between the two users */
    GS_EUNIMPL = -15,      /* unknown method */
    GS_EWRONGCELL = -16,   /* the user is not owned by this cell */
    GS_ESHUTDOWN = -17,    /* node is shutting down */
    GS_ECLOSED = -18,      /* connection closed before an answer */
    GS_ECONNECT = -19,     /* could not connect to any node */
    GS_EINTERNAL = -20,    /* bug or broken invariant; see the node log */
    GS_EDENIED = -21,      /* the caller may not make this call (e.g. a
                              node-to-node call from outside the cell) */
};

#define GS_ERROR_MIN GS_EDENIED

/* Static, human-readable text for a code (positive or negative). Never NULL. */
const char *gs_strerror(int code);

/* Stable upper-case name of a code ("NOT_FOUND", "CONFLICT", ...), as used in
 * --json output and logs. Never NULL. */
const char *gs_error_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* GEOSCALE_ERRORS_H */
