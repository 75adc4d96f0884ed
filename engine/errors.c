/* Text for GeoScale error codes (include/geoscale/errors.h). */
#include "geoscale/errors.h"

#include <limits.h>

struct error_text {
    const char *name;
    const char *text;
};

static const struct error_text error_texts[] = {
    [0] = {"OK", "success"},
    [1] = {"INVALID", "invalid request"},
    [2] = {"NOT_FOUND", "not found"},
    [3] = {"ALREADY_EXISTS", "already exists"},
    [4] = {"CONFLICT", "version conflict"},
    [5] = {"NOT_LEADER", "not the leader"},
    [6] = {"UNAVAILABLE", "unavailable"},
    [7] = {"TIMEOUT", "deadline exceeded"},
    [8] = {"OUTCOME_UNKNOWN", "outcome unknown"},
    [9] = {"TOO_BIG", "too big"},
    [10] = {"PROTOCOL", "protocol error"},
    [11] = {"BUSY", "too many requests in flight"},
    [12] = {"NO_MEMORY", "out of memory"},
    [13] = {"IO", "storage error"},
    [14] = {"BLOCKED", "blocked"},
    [15] = {"UNIMPLEMENTED", "unknown method"},
    [16] = {"WRONG_CELL", "user not owned by this cell"},
    [17] = {"SHUTDOWN", "shutting down"},
    [18] = {"CLOSED", "connection closed"},
    [19] = {"CONNECT", "cannot connect"},
    [20] = {"INTERNAL", "internal error"},
    [21] = {"PERMISSION_DENIED", "permission denied"},
};

static const struct error_text *error_lookup(int code)
{
    if (code < -INT_MAX) {
        return 0;
    }
    if (code < 0) {
        code = -code;
    }
    if (code >= (int)(sizeof error_texts / sizeof error_texts[0])) {
        return 0;
    }
    return &error_texts[code];
}

const char *gs_strerror(int code)
{
    const struct error_text *e = error_lookup(code);
    return e != 0 ? e->text : "unknown error";
}

const char *gs_error_name(int code)
{
    const struct error_text *e = error_lookup(code);
    return e != 0 ? e->name : "UNKNOWN_ERROR";
}
