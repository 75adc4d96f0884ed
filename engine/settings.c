/*
 * Privacy settings of a user: GetSettings, SetSettings and the defaults.
 *
 * Settings live at 'T'+user_id. A new user gets the defaults written at
 * creation: the profile and display name, bio and avatar are PUBLIC; email,
 * phone and birth date are PRIVATE. A stored field that is UNSPECIFIED
 * (absent row, or a record written by an older version) reads as its
 * default, so the engine never has to guess what "unspecified" means when it
 * decides what a viewer sees. SetSettings changes only the fields that are
 * not UNSPECIFIED in the request.
 *
 * Settings values are PII and not metadata: SetSettings writes no outbox
 * row. The user must be this cell's (GS_EWRONGCELL, checked before the
 * handler).
 */
#include <stdlib.h>

#include "cell_internal.h"
#include "geoscale/errors.h"

void cell_settings_default(Geoscale__Settings *s)
{
    geoscale__settings__init(s);
    s->profile_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC;
    s->display_name_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC;
    s->email_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    s->phone_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    s->birth_date_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE;
    s->bio_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC;
    s->avatar_url_visibility = GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC;
}

/* Copy the fields of `src` that are not UNSPECIFIED over `dst`. */
static void settings_merge(Geoscale__Settings *dst, const Geoscale__Settings *src)
{
#define MERGE(f)                                                                                   \
    if (src->f != GEOSCALE__VISIBILITY__VISIBILITY_UNSPECIFIED) {                                  \
        dst->f = src->f;                                                                           \
    }
    MERGE(profile_visibility)
    MERGE(display_name_visibility)
    MERGE(email_visibility)
    MERGE(phone_visibility)
    MERGE(birth_date_visibility)
    MERGE(bio_visibility)
    MERGE(avatar_url_visibility)
#undef MERGE
}

int cell_settings_load(struct cell_ctx *ctx, uint64_t user_id, Geoscale__Settings *out)
{
    struct key k;
    ProtobufCMessage *m = NULL;
    cell_settings_default(out);
    key_id(&k, KEY_PREFIX_SETTINGS, user_id);
    int rv = cell_kv_get_msg(ctx, &k, &geoscale__settings__descriptor, &m);
    if (rv == GS_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    settings_merge(out, (const Geoscale__Settings *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static int require_user(struct cell_ctx *ctx, uint64_t user_id)
{
    bool exists = false;
    int rv = cell_user_exists(ctx, user_id, &exists);
    if (rv != 0) {
        return rv;
    }
    return exists ? 0 : GS_ENOTFOUND;
}

int cell_get_settings(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body,
                      size_t *len)
{
    const Geoscale__GetSettingsRequest *req = (const Geoscale__GetSettingsRequest *)msg;
    Geoscale__Settings s;
    Geoscale__GetSettingsResponse resp = GEOSCALE__GET_SETTINGS_RESPONSE__INIT;
    int rv = require_user(ctx, req->user_id);
    if (rv != 0) {
        return rv;
    }
    rv = cell_settings_load(ctx, req->user_id, &s);
    if (rv != 0) {
        return rv;
    }
    resp.settings = &s;
    return cell_pack(&resp.base, body, len);
}

int cell_set_settings(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body,
                      size_t *len)
{
    const Geoscale__SetSettingsRequest *req = (const Geoscale__SetSettingsRequest *)msg;
    Geoscale__Settings s;
    Geoscale__SetSettingsResponse resp = GEOSCALE__SET_SETTINGS_RESPONSE__INIT;
    struct key k;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rv = require_user(ctx, req->user_id);
    if (rv != 0) {
        return rv;
    }
    rv = cell_settings_load(ctx, req->user_id, &s);
    if (rv != 0) {
        return rv;
    }
    settings_merge(&s, req->settings);
    resp.settings = &s;
    /* Pack the response before writing, so a failure leaves no write. */
    rv = cell_pack(&resp.base, &out, &out_len);
    if (rv != 0) {
        return rv;
    }
    key_id(&k, KEY_PREFIX_SETTINGS, req->user_id);
    rv = cell_kv_put_msg(ctx, &k, &s.base);
    if (rv != 0) {
        free(out);
        return rv;
    }
    *body = out;
    *len = out_len;
    return 0;
}
