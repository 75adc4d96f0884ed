/*
 * Stateless request checks of the cell methods.
 *
 * The same checks run twice: on the node before a request is proposed
 * (cell_validate_request, so a bad request costs no Raft round) and again
 * inside apply (cell_check_request), because the state machine must not
 * trust the proposer: a replica applies exactly what the log says.
 *
 * Error messages name the offending field and the rule, never the value:
 * values are PII and error messages end up in logs and client output.
 *
 * cell_check_owner() is the one check that depends on the cell (its id and
 * region), not on the request alone; it runs inside the cell only.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cell_fsm.h"
#include "cell_internal.h"
#include "geoscale/errors.h"
#include "methods.h"

__attribute__((format(printf, 4, 5))) static int fail(int code, char *errmsg, size_t errmsg_len,
                                                      const char *fmt, ...)
{
    if (errmsg != NULL && errmsg_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, errmsg_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

int cell_check_username(const char *username)
{
    size_t n = strlen(username);
    if (n == 0) {
        return GS_EINVAL;
    }
    if (n > CELL_USERNAME_MAX) {
        return GS_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        char c = username[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) {
            return GS_EINVAL;
        }
    }
    return 0;
}

int cell_check_region(const char *region)
{
    size_t n = strlen(region);
    if (n > CELL_REGION_MAX) {
        return GS_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        char c = region[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return GS_EINVAL;
        }
    }
    return 0;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Empty, or a real calendar date as YYYY-MM-DD. */
static bool birth_date_ok(const char *s)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (s[0] == '\0') {
        return true;
    }
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') {
        return false;
    }
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) {
            return false;
        }
    }
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y == 0 || m < 1 || m > 12 || d < 1) {
        return false;
    }
    int max = days[m - 1] + (m == 2 && is_leap(y) ? 1 : 0);
    return d <= max;
}

static int check_len(const char *field, const char *value, size_t max, char *errmsg, size_t len)
{
    if (strlen(value) > max) {
        return fail(GS_ETOOBIG, errmsg, len, "%s: longer than %zu bytes", field, max);
    }
    return 0;
}

static int check_username(const char *field, const char *value, char *errmsg, size_t len)
{
    int rv = cell_check_username(value);
    if (rv == GS_ETOOBIG) {
        return fail(rv, errmsg, len, "%s: longer than %d bytes", field, CELL_USERNAME_MAX);
    }
    if (rv != 0) {
        return fail(rv, errmsg, len, "%s: must be 1-%d bytes of [a-z0-9_.]", field,
                    CELL_USERNAME_MAX);
    }
    return 0;
}

static int check_birth_date(const char *value, char *errmsg, size_t len)
{
    if (!birth_date_ok(value)) {
        return fail(GS_EINVAL, errmsg, len, "birth_date: must be empty or a date YYYY-MM-DD");
    }
    return 0;
}

static bool visibility_ok(Geoscale__Visibility v)
{
    return v >= GEOSCALE__VISIBILITY__VISIBILITY_UNSPECIFIED &&
           v <= GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
}

static int check_create_user(const Geoscale__CreateUserRequest *r, char *e, size_t n)
{
    int rv;
    if ((rv = check_username("username", r->username, e, n)) != 0 ||
        (rv = check_len("display_name", r->display_name, CELL_DISPLAY_NAME_MAX, e, n)) != 0 ||
        (rv = check_len("email", r->email, CELL_EMAIL_MAX, e, n)) != 0 ||
        (rv = check_len("phone", r->phone, CELL_PHONE_MAX, e, n)) != 0 ||
        (rv = check_len("bio", r->bio, CELL_BIO_MAX, e, n)) != 0 ||
        (rv = check_len("avatar_url", r->avatar_url, CELL_AVATAR_URL_MAX, e, n)) != 0 ||
        (rv = check_len("plan", r->plan, CELL_PLAN_MAX, e, n)) != 0 ||
        (rv = check_birth_date(r->birth_date, e, n)) != 0) {
        return rv;
    }
    rv = cell_check_region(r->region);
    if (rv == GS_ETOOBIG) {
        return fail(rv, e, n, "region: longer than %d bytes", CELL_REGION_MAX);
    }
    if (rv != 0) {
        return fail(rv, e, n, "region: only [a-z0-9-]");
    }
    /* An assigned id is cell_id << 40 | seq with seq >= 1, as the cell's own. */
    if (r->user_id != 0 && (r->user_id & ((UINT64_C(1) << CELL_USER_SEQ_BITS) - 1)) == 0) {
        return fail(GS_EINVAL, e, n, "user_id: sequence part must not be 0");
    }
    return 0;
}

static int check_get_user(const Geoscale__GetUserRequest *r, char *e, size_t n)
{
    if (r->user_id == 0 && r->username[0] == '\0') {
        return fail(GS_EINVAL, e, n, "user_id or username: one is required");
    }
    if (r->user_id == 0) {
        return check_username("username", r->username, e, n);
    }
    return 0;
}

static int check_update_user(const Geoscale__UpdateUserRequest *r, char *e, size_t n)
{
    int rv = 0;
    if (r->user_id == 0) {
        return fail(GS_EINVAL, e, n, "user_id: required");
    }
    if (r->n_fields == 0) {
        return fail(GS_EINVAL, e, n, "fields: at least one field to update is required");
    }
    for (size_t i = 0; i < r->n_fields && rv == 0; i++) {
        switch (r->fields[i]) {
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_DISPLAY_NAME:
            rv = check_len("display_name", r->display_name, CELL_DISPLAY_NAME_MAX, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_EMAIL:
            rv = check_len("email", r->email, CELL_EMAIL_MAX, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PHONE:
            rv = check_len("phone", r->phone, CELL_PHONE_MAX, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIRTH_DATE:
            rv = check_birth_date(r->birth_date, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO:
            rv = check_len("bio", r->bio, CELL_BIO_MAX, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_AVATAR_URL:
            rv = check_len("avatar_url", r->avatar_url, CELL_AVATAR_URL_MAX, e, n);
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS:
            if (r->status < GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE ||
                r->status > GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_DEACTIVATED) {
                rv = fail(GS_EINVAL, e, n, "status: not a valid account status");
            }
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN:
            rv = check_len("plan", r->plan, CELL_PLAN_MAX, e, n);
            break;
        default:
            rv = fail(GS_EINVAL, e, n, "fields: unknown profile field %d", (int)r->fields[i]);
            break;
        }
    }
    return rv;
}

static int check_edge(const Geoscale__EdgeRequest *r, char *e, size_t n)
{
    if (r->actor_id == 0) {
        return fail(GS_EINVAL, e, n, "actor_id: required");
    }
    if (r->target_id == 0) {
        return fail(GS_EINVAL, e, n, "target_id: required");
    }
    if (r->actor_id == r->target_id) {
        return fail(GS_EINVAL, e, n, "target_id: must differ from actor_id");
    }
    return 0;
}

static int check_list_edges(const Geoscale__ListEdgesRequest *r, char *e, size_t n)
{
    if (r->user_id == 0) {
        return fail(GS_EINVAL, e, n, "user_id: required");
    }
    return 0;
}

static int check_get_settings(const Geoscale__GetSettingsRequest *r, char *e, size_t n)
{
    if (r->user_id == 0) {
        return fail(GS_EINVAL, e, n, "user_id: required");
    }
    return 0;
}

static int check_set_settings(const Geoscale__SetSettingsRequest *r, char *e, size_t n)
{
    if (r->user_id == 0) {
        return fail(GS_EINVAL, e, n, "user_id: required");
    }
    if (r->settings == NULL) {
        return fail(GS_EINVAL, e, n, "settings: required");
    }
    const Geoscale__Settings *s = r->settings;
    const struct {
        const char *name;
        Geoscale__Visibility v;
    } fields[] = {
        {"profile_visibility", s->profile_visibility},
        {"display_name_visibility", s->display_name_visibility},
        {"email_visibility", s->email_visibility},
        {"phone_visibility", s->phone_visibility},
        {"birth_date_visibility", s->birth_date_visibility},
        {"bio_visibility", s->bio_visibility},
        {"avatar_url_visibility", s->avatar_url_visibility},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!visibility_ok(fields[i].v)) {
            return fail(GS_EINVAL, e, n, "settings.%s: not a valid visibility", fields[i].name);
        }
    }
    return 0;
}

static int check_outbox_ack(const Geoscale__OutboxAckRequest *r, char *e, size_t n)
{
    if (r->up_to_seq == 0 && r->edge_up_to_seq == 0) {
        return fail(GS_EINVAL, e, n, "up_to_seq or edge_up_to_seq: one is required");
    }
    if (r->edge_dest_cell >= (UINT32_C(1) << CELL_ID_BITS)) {
        return fail(GS_EINVAL, e, n, "edge_dest_cell: must be below %u", 1u << CELL_ID_BITS);
    }
    return 0;
}

static int check_edge_apply(const Geoscale__EdgeApplyRequest *r, char *e, size_t n)
{
    if (r->origin_cell >= (UINT32_C(1) << CELL_ID_BITS)) {
        return fail(GS_EINVAL, e, n, "origin_cell: must be below %u", 1u << CELL_ID_BITS);
    }
    if (r->n_halves == 0) {
        return fail(GS_EINVAL, e, n, "halves: at least one is required");
    }
    if (r->n_halves > CELL_EDGE_APPLY_MAX) {
        return fail(GS_ETOOBIG, e, n, "halves: more than %d", CELL_EDGE_APPLY_MAX);
    }
    for (size_t i = 0; i < r->n_halves; i++) {
        const Geoscale__EdgeHalf *h = r->halves[i];
        if (h->seq == 0) {
            return fail(GS_EINVAL, e, n, "halves[%zu].seq: required", i);
        }
        if (i > 0 && h->seq <= r->halves[i - 1]->seq) {
            return fail(GS_EINVAL, e, n, "halves[%zu].seq: must increase", i);
        }
        if (h->actor_id == 0 || h->target_id == 0) {
            return fail(GS_EINVAL, e, n, "halves[%zu]: actor_id and target_id are required", i);
        }
        if (cell_of_user(h->actor_id) == cell_of_user(h->target_id)) {
            return fail(GS_EINVAL, e, n, "halves[%zu]: actor and target of one cell", i);
        }
        /* The origin's own user is the actor, except in FOLLOW_REJECTED,
         * which the target's cell sends back to the actor's. */
        uint64_t from = h->actor_id;
        switch (h->kind) {
        case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW:
        case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNFOLLOW:
        case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_BLOCK:
        case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_UNBLOCK:
            break;
        case GEOSCALE__EDGE_HALF_KIND__EDGE_HALF_FOLLOW_REJECTED:
            from = h->target_id;
            break;
        default:
            return fail(GS_EINVAL, e, n, "halves[%zu].kind: unknown", i);
        }
        if (cell_of_user(from) != r->origin_cell) {
            return fail(GS_EINVAL, e, n, "halves[%zu]: not from origin_cell", i);
        }
    }
    return 0;
}

int cell_check_request(uint32_t method, const ProtobufCMessage *req, char *e, size_t n)
{
    switch (method) {
    case GEOSCALE__METHOD__METHOD_CREATE_USER:
        return check_create_user((const Geoscale__CreateUserRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_GET_USER:
        return check_get_user((const Geoscale__GetUserRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_UPDATE_USER:
        return check_update_user((const Geoscale__UpdateUserRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_FOLLOW:
    case GEOSCALE__METHOD__METHOD_UNFOLLOW:
    case GEOSCALE__METHOD__METHOD_BLOCK:
    case GEOSCALE__METHOD__METHOD_UNBLOCK:
        return check_edge((const Geoscale__EdgeRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS:
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWING:
        return check_list_edges((const Geoscale__ListEdgesRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_GET_SETTINGS:
        return check_get_settings((const Geoscale__GetSettingsRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_SET_SETTINGS:
        return check_set_settings((const Geoscale__SetSettingsRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_OUTBOX_ACK:
        return check_outbox_ack((const Geoscale__OutboxAckRequest *)req, e, n);
    case GEOSCALE__METHOD__METHOD_EDGE_APPLY:
        return check_edge_apply((const Geoscale__EdgeApplyRequest *)req, e, n);
    default:
        return fail(GS_EUNIMPL, e, n, "method %u: not a cell method", method);
    }
}

/* The user a request is about, or 0 when it names none this cell must own
 * (GetUser by username, OutboxAck, EdgeApply: a batch of halves from another
 * cell, each skipped on apply if its local endpoint is not this cell's). */
static uint64_t subject_user(uint32_t method, const ProtobufCMessage *req)
{
    switch (method) {
    case GEOSCALE__METHOD__METHOD_CREATE_USER:
        return ((const Geoscale__CreateUserRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_GET_USER:
        return ((const Geoscale__GetUserRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_UPDATE_USER:
        return ((const Geoscale__UpdateUserRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_FOLLOW:
    case GEOSCALE__METHOD__METHOD_UNFOLLOW:
    case GEOSCALE__METHOD__METHOD_BLOCK:
    case GEOSCALE__METHOD__METHOD_UNBLOCK:
        /* The actor's cell holds the edge and applies it. A target of another
         * cell is not a routing error: see graph.c. */
        return ((const Geoscale__EdgeRequest *)req)->actor_id;
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS:
    case GEOSCALE__METHOD__METHOD_LIST_FOLLOWING:
        return ((const Geoscale__ListEdgesRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_GET_SETTINGS:
        return ((const Geoscale__GetSettingsRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_SET_SETTINGS:
        return ((const Geoscale__SetSettingsRequest *)req)->user_id;
    case GEOSCALE__METHOD__METHOD_EDGE_APPLY:
    default:
        return 0;
    }
}

int cell_check_owner(uint32_t cell_id, const char *region, uint32_t method,
                     const ProtobufCMessage *req)
{
    uint64_t user_id = subject_user(method, req);
    if (user_id != 0 && cell_of_user(user_id) != cell_id) {
        return GS_EWRONGCELL;
    }
    if (method == GEOSCALE__METHOD__METHOD_CREATE_USER) {
        /* PII is stored only in the user's home region: a signup routed to a
         * cell of another region must not land here. */
        const char *home = ((const Geoscale__CreateUserRequest *)req)->region;
        if (home[0] != '\0' && region[0] != '\0' && strcmp(home, region) != 0) {
            return GS_EWRONGCELL;
        }
    }
    return 0;
}

int cell_validate_request(uint32_t method, const uint8_t *body, size_t len, uint64_t *subject,
                          char *errmsg, size_t errmsg_len)
{
    static const uint8_t empty[1];
    const struct method_info *info = method_lookup(method);
    if (errmsg != NULL && errmsg_len > 0) {
        errmsg[0] = '\0';
    }
    if (info == NULL || info->kind == METHOD_KIND_LOCAL) {
        return fail(GS_EUNIMPL, errmsg, errmsg_len, "method %u: not a cell method", method);
    }
    if (body == NULL && len > 0) {
        return fail(GS_EINVAL, errmsg, errmsg_len, "body: missing");
    }
    ProtobufCMessage *req =
        protobuf_c_message_unpack(info->request, NULL, len, len > 0 ? body : empty);
    if (req == NULL) {
        return fail(GS_EINVAL, errmsg, errmsg_len, "body: does not decode as %s",
                    info->request->name);
    }
    int rv = cell_check_request(method, req, errmsg, errmsg_len);
    if (rv == 0 && subject != NULL) {
        *subject = method_subject(info, req);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    return rv;
}
