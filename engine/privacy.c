/*
 * What a viewer may see of a profile.
 *
 * The owner sees everything. Otherwise the profile visibility gates the
 * whole profile: PRIVATE, or FOLLOWERS when the viewer does not follow the
 * owner, leaves only user_id, username, status and the counts (everything
 * else is withheld, metadata included, so that a closed profile shows
 * nothing but its handle). When the profile is visible, each PII field is
 * shown iff its own visibility admits the viewer; plan, created_at and
 * version are then shown.
 *
 * A block is decided by the caller before this (the owner's block hides the
 * whole profile as NOT_FOUND). This file is pure: no storage, no state.
 */
#include "cell_internal.h"

static const char *const field_names[PRIVACY_N_FIELDS] = {
    [PRIVACY_DISPLAY_NAME] = "display_name",
    [PRIVACY_EMAIL] = "email",
    [PRIVACY_PHONE] = "phone",
    [PRIVACY_BIRTH_DATE] = "birth_date",
    [PRIVACY_BIO] = "bio",
    [PRIVACY_AVATAR_URL] = "avatar_url",
    [PRIVACY_PLAN] = "plan",
    [PRIVACY_CREATED_AT] = "created_at_ms",
    [PRIVACY_VERSION] = "version",
};

const char *privacy_field_name(enum privacy_field f)
{
    return f < PRIVACY_N_FIELDS ? field_names[f] : "";
}

static bool admits(Geoscale__Visibility v, bool is_owner, bool follows)
{
    switch (v) {
    case GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC:
        return true;
    case GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS:
        return is_owner || follows;
    default: /* PRIVATE, and anything unknown: fail closed */
        return is_owner;
    }
}

void privacy_decide(const Geoscale__Settings *s, bool is_owner, bool follows,
                    bool visible[PRIVACY_N_FIELDS])
{
    bool profile = admits(s->profile_visibility, is_owner, follows);
    visible[PRIVACY_DISPLAY_NAME] =
        profile && admits(s->display_name_visibility, is_owner, follows);
    visible[PRIVACY_EMAIL] = profile && admits(s->email_visibility, is_owner, follows);
    visible[PRIVACY_PHONE] = profile && admits(s->phone_visibility, is_owner, follows);
    visible[PRIVACY_BIRTH_DATE] = profile && admits(s->birth_date_visibility, is_owner, follows);
    visible[PRIVACY_BIO] = profile && admits(s->bio_visibility, is_owner, follows);
    visible[PRIVACY_AVATAR_URL] = profile && admits(s->avatar_url_visibility, is_owner, follows);
    visible[PRIVACY_PLAN] = profile;
    visible[PRIVACY_CREATED_AT] = profile;
    visible[PRIVACY_VERSION] = profile;
}
