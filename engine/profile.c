/*
 * Profiles: CreateUser, GetUser, UpdateUser.
 *
 * A profile is stored at 'U'+user_id without its counters (those live at
 * 'C'+user_id so an edge change does not rewrite the profile); responses
 * carry the counters filled in. The username is unique in the cell through
 * 'N'+HMAC(username) -> user_id: the key holds a keyed hash, never the name.
 *
 * user_id = cell_id << 40 | seq. In a cluster the directory allocates it
 * (CreateUserRequest.user_id, docs/CLUSTER.md "Signup"): it must be this
 * cell's (checked before the handler, cell_check_owner) and not exist yet
 * (GS_EEXIST). A lone cell (user_id 0) takes seq from the replicated counter
 * 'S' next_user_seq (first user: 1). An assigned id also moves that counter
 * past its seq, so the two ways never hand out the same id. Either way ids
 * carry their cell and are the same on every replica.
 *
 * Create and update are metadata changes (a new user; status, plan, profile
 * version): each appends one outbox row (outbox.c) after its own writes.
 *
 * Every handler checks first and writes last; a handler that fails has
 * written nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "cell_internal.h"
#include "geoscale/errors.h"
#include "log.h"

int cell_user_exists(struct cell_ctx *ctx, uint64_t user_id, bool *exists)
{
    struct key k;
    key_id(&k, KEY_PREFIX_USER, user_id);
    return cell_kv_exists(ctx, &k, exists);
}

int cell_counts_load(struct cell_ctx *ctx, uint64_t user_id, uint64_t *followers,
                     uint64_t *following)
{
    struct key k;
    ProtobufCMessage *m = NULL;
    key_id(&k, KEY_PREFIX_COUNTS, user_id);
    int rv = cell_kv_get_msg(ctx, &k, &geoscale__edge_counts__descriptor, &m);
    if (rv == GS_ENOTFOUND) {
        *followers = *following = 0;
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    *followers = ((Geoscale__EdgeCounts *)m)->followers;
    *following = ((Geoscale__EdgeCounts *)m)->following;
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int cell_counts_store(struct cell_ctx *ctx, uint64_t user_id, uint64_t followers,
                      uint64_t following)
{
    struct key k;
    Geoscale__EdgeCounts c = GEOSCALE__EDGE_COUNTS__INIT;
    c.followers = followers;
    c.following = following;
    key_id(&k, KEY_PREFIX_COUNTS, user_id);
    return cell_kv_put_msg(ctx, &k, &c.base);
}

/* Load the stored profile. 0 and *out (free with
 * geoscale__profile__free_unpacked), GS_ENOTFOUND or GS_EIO. */
static int profile_load(struct cell_ctx *ctx, uint64_t user_id, Geoscale__Profile **out)
{
    struct key k;
    ProtobufCMessage *m = NULL;
    key_id(&k, KEY_PREFIX_USER, user_id);
    int rv = cell_kv_get_msg(ctx, &k, &geoscale__profile__descriptor, &m);
    if (rv != 0) {
        return rv;
    }
    *out = (Geoscale__Profile *)m;
    return 0;
}

static void username_key(struct cell_ctx *ctx, const char *username, struct key *k)
{
    uint8_t hash[KEY_USERNAME_HASH_LEN];
    key_username_hash(ctx->fsm->username_key, ctx->fsm->username_key_len, username,
                      strlen(username), hash);
    key_username(k, hash);
}

int cell_create_user(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__CreateUserRequest *req = (const Geoscale__CreateUserRequest *)msg;
    Geoscale__Profile p = GEOSCALE__PROFILE__INIT;
    Geoscale__CreateUserResponse resp = GEOSCALE__CREATE_USER_RESPONSE__INIT;
    Geoscale__Settings settings;
    struct key name_key, seq_key, k;
    uint8_t *out = NULL;
    size_t out_len = 0;
    uint64_t seq = 1, next_seq = 0, user_id = 0;
    bool taken = false;
    int rv;

    username_key(ctx, req->username, &name_key);
    rv = cell_kv_exists(ctx, &name_key, &taken);
    if (rv != 0) {
        goto err;
    }
    if (taken) {
        rv = GS_EEXIST;
        goto err;
    }
    key_system(&seq_key, KEY_SYS_NEXT_USER_SEQ);
    rv = cell_kv_get_u64(ctx, &seq_key, &seq);
    if (rv == GS_ENOTFOUND) {
        seq = 1;
    } else if (rv != 0) {
        goto err;
    }
    if (req->user_id != 0) {
        /* Assigned by the directory; its cell was checked by cell_check_owner. */
        uint64_t assigned = req->user_id & ((UINT64_C(1) << CELL_USER_SEQ_BITS) - 1);
        rv = cell_user_exists(ctx, req->user_id, &taken);
        if (rv != 0) {
            goto err;
        }
        if (taken) {
            rv = GS_EEXIST;
            goto err;
        }
        user_id = req->user_id;
        next_seq = assigned >= seq ? assigned + 1 : seq;
    } else {
        if (seq >= (UINT64_C(1) << CELL_USER_SEQ_BITS)) {
            log_error("cell", "event=user_seq_exhausted cell=%u", ctx->fsm->cell_id);
            rv = GS_EINTERNAL;
            goto err;
        }
        user_id = ((uint64_t)ctx->fsm->cell_id << CELL_USER_SEQ_BITS) | seq;
        next_seq = seq + 1;
    }

    p.user_id = user_id;
    p.username = req->username;
    p.display_name = req->display_name;
    p.email = req->email;
    p.phone = req->phone;
    p.birth_date = req->birth_date;
    p.bio = req->bio;
    p.avatar_url = req->avatar_url;
    p.plan = req->plan;
    p.status = GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE;
    p.created_at_ms = ctx->now_ms;
    p.version = 1;
    resp.user_id = user_id;
    resp.profile = &p;
    rv = cell_pack(&resp.base, &out, &out_len);
    if (rv != 0) {
        goto err;
    }

    /* Everything checked: write. */
    key_id(&k, KEY_PREFIX_USER, user_id);
    rv = cell_kv_put_msg(ctx, &k, &p.base);
    if (rv != 0) {
        goto err;
    }
    cell_settings_default(&settings);
    key_id(&k, KEY_PREFIX_SETTINGS, user_id);
    rv = cell_kv_put_msg(ctx, &k, &settings.base);
    if (rv != 0) {
        goto err;
    }
    rv = cell_counts_store(ctx, user_id, 0, 0);
    if (rv != 0) {
        goto err;
    }
    cell_kv_put_u64(ctx, &name_key, user_id);
    cell_kv_put_u64(ctx, &seq_key, next_seq);
    rv = cell_outbox_append_profile(ctx, user_id, &p, 0, 0);
    if (rv != 0) {
        goto err;
    }
    log_debug("cell", "event=user_created user=%llu", (unsigned long long)user_id);
    *body = out;
    *len = out_len;
    return 0;
err:
    /* Only fatal codes (GS_ENOMEM, GS_EIO) can fail after a write; they abort
     * the whole entry. */
    free(out);
    return rv;
}

/* Resolve the user of a GetUser request. 0, GS_ENOTFOUND or GS_EIO. */
static int resolve_user(struct cell_ctx *ctx, const Geoscale__GetUserRequest *req,
                        uint64_t *user_id)
{
    struct key k;
    if (req->user_id != 0) {
        *user_id = req->user_id;
        return 0;
    }
    username_key(ctx, req->username, &k);
    return cell_kv_get_u64(ctx, &k, user_id);
}

int cell_get_user(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__GetUserRequest *req = (const Geoscale__GetUserRequest *)msg;
    Geoscale__GetUserResponse resp = GEOSCALE__GET_USER_RESPONSE__INIT;
    Geoscale__Profile *stored = NULL;
    Geoscale__Profile view;
    Geoscale__Settings settings;
    char *hidden[PRIVACY_N_FIELDS];
    bool visible[PRIVACY_N_FIELDS];
    uint64_t user_id = 0, followers = 0, following = 0;
    bool follows = false;
    int rv;

    rv = resolve_user(ctx, req, &user_id);
    if (rv != 0) {
        goto out;
    }
    rv = profile_load(ctx, user_id, &stored);
    if (rv != 0) {
        goto out;
    }
    rv = cell_counts_load(ctx, user_id, &followers, &following);
    if (rv != 0) {
        goto out;
    }
    bool is_owner = req->viewer_id == user_id;
    if (!is_owner && req->viewer_id != 0) {
        bool blocked = false;
        rv = cell_edge_exists(ctx, KEY_PREFIX_BLOCK, user_id, req->viewer_id, &blocked);
        if (rv != 0) {
            goto out;
        }
        if (blocked) {
            rv = GS_ENOTFOUND;
            goto out;
        }
        rv = cell_edge_exists(ctx, KEY_PREFIX_FOLLOWER, user_id, req->viewer_id, &follows);
        if (rv != 0) {
            goto out;
        }
    }
    rv = cell_settings_load(ctx, user_id, &settings);
    if (rv != 0) {
        goto out;
    }
    privacy_decide(&settings, is_owner, follows, visible);

    view = *stored;
    view.follower_count = followers;
    view.following_count = following;
    char *empty = (char *)protobuf_c_empty_string;
    char **fields[PRIVACY_N_FIELDS] = {
        [PRIVACY_DISPLAY_NAME] = &view.display_name,
        [PRIVACY_EMAIL] = &view.email,
        [PRIVACY_PHONE] = &view.phone,
        [PRIVACY_BIRTH_DATE] = &view.birth_date,
        [PRIVACY_BIO] = &view.bio,
        [PRIVACY_AVATAR_URL] = &view.avatar_url,
        [PRIVACY_PLAN] = &view.plan,
    };
    for (int f = 0; f < PRIVACY_N_FIELDS; f++) {
        if (visible[f]) {
            continue;
        }
        hidden[resp.n_hidden_fields++] = (char *)privacy_field_name((enum privacy_field)f);
        if (fields[f] != NULL) {
            *fields[f] = empty;
        } else if (f == PRIVACY_CREATED_AT) {
            view.created_at_ms = 0;
        } else if (f == PRIVACY_VERSION) {
            view.version = 0;
        }
    }
    resp.profile = &view;
    resp.hidden_fields = hidden;
    rv = cell_pack(&resp.base, body, len);
out:
    if (stored != NULL) {
        geoscale__profile__free_unpacked(stored, NULL);
    }
    return rv;
}

/* Set the fields `req` lists in *p, borrowing req's strings; with
 * clear_strings, its string fields become empty instead (the partial
 * outcome of an UpdateUser: the retry's request fills them back). */
static void profile_set_fields(Geoscale__Profile *p, const Geoscale__UpdateUserRequest *req,
                               bool clear_strings)
{
    char *empty = (char *)protobuf_c_empty_string;
    for (size_t i = 0; i < req->n_fields; i++) {
        switch (req->fields[i]) {
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_DISPLAY_NAME:
            p->display_name = clear_strings ? empty : req->display_name;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_EMAIL:
            p->email = clear_strings ? empty : req->email;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PHONE:
            p->phone = clear_strings ? empty : req->phone;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIRTH_DATE:
            p->birth_date = clear_strings ? empty : req->birth_date;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO:
            p->bio = clear_strings ? empty : req->bio;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_AVATAR_URL:
            p->avatar_url = clear_strings ? empty : req->avatar_url;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS:
            p->status = req->status;
            break;
        case GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_PLAN:
            p->plan = clear_strings ? empty : req->plan;
            break;
        default: /* rejected by cell_check_request */
            break;
        }
    }
}

int cell_update_user(struct cell_ctx *ctx, const ProtobufCMessage *msg, uint8_t **body, size_t *len)
{
    const Geoscale__UpdateUserRequest *req = (const Geoscale__UpdateUserRequest *)msg;
    Geoscale__UpdateUserResponse resp = GEOSCALE__UPDATE_USER_RESPONSE__INIT;
    Geoscale__Profile *stored = NULL;
    Geoscale__Profile p;
    struct key k;
    uint8_t *out = NULL, *partial = NULL;
    size_t out_len = 0, partial_len = 0;
    uint64_t followers = 0, following = 0;
    int rv;

    rv = profile_load(ctx, req->user_id, &stored);
    if (rv != 0) {
        goto out;
    }
    if (req->expected_version != 0 && req->expected_version != stored->version) {
        rv = GS_ECONFLICT;
        goto out;
    }
    rv = cell_counts_load(ctx, req->user_id, &followers, &following);
    if (rv != 0) {
        goto out;
    }
    /* p borrows strings from `stored` and `req`; it is never freed itself. */
    p = *stored;
    profile_set_fields(&p, req, false);
    p.version = stored->version + 1;
    p.follower_count = followers;
    p.following_count = following;
    resp.profile = &p;
    rv = cell_pack(&resp.base, &out, &out_len);
    if (rv != 0) {
        goto out;
    }
    if (ctx->partial != NULL) {
        /* Remembered without what the request restores on a retry. */
        Geoscale__Profile q = p;
        profile_set_fields(&q, req, true);
        resp.profile = &q;
        rv = cell_pack(&resp.base, &partial, &partial_len);
        if (rv != 0) {
            goto out;
        }
    }
    p.follower_count = 0;
    p.following_count = 0;
    key_id(&k, KEY_PREFIX_USER, req->user_id);
    rv = cell_kv_put_msg(ctx, &k, &p.base);
    if (rv != 0) {
        goto out;
    }
    rv = cell_outbox_append_profile(ctx, req->user_id, &p, followers, following);
    if (rv != 0) {
        goto out;
    }
    log_debug("cell", "event=user_updated user=%llu version=%llu", (unsigned long long)req->user_id,
              (unsigned long long)p.version);
    *body = out;
    out = NULL;
    if (ctx->partial != NULL) {
        *ctx->partial = partial;
        *ctx->partial_len = partial_len;
        partial = NULL;
    }
out:
    if (rv == 0) {
        *len = out_len;
    }
    free(out);
    free(partial);
    if (stored != NULL) {
        geoscale__profile__free_unpacked(stored, NULL);
    }
    return rv;
}

int cell_update_user_restore(const uint8_t *request, size_t request_len, const uint8_t *partial,
                             size_t partial_len, uint8_t **out, size_t *out_len)
{
    Geoscale__UpdateUserRequest *req = geoscale__update_user_request__unpack(NULL, request_len,
                                                                             request);
    Geoscale__UpdateUserResponse *resp = geoscale__update_user_response__unpack(NULL, partial_len,
                                                                                partial);
    int rv = GS_EINTERNAL;
    if (req != NULL && resp != NULL && resp->profile != NULL) {
        /* The profile borrows req's strings; packed before either is freed.
         * Its own strings are kept aside and put back for the free. */
        Geoscale__Profile saved = *resp->profile;
        profile_set_fields(resp->profile, req, false);
        rv = cell_pack(&resp->base, out, out_len);
        *resp->profile = saved;
    }
    if (req != NULL) {
        geoscale__update_user_request__free_unpacked(req, NULL);
    }
    if (resp != NULL) {
        geoscale__update_user_response__free_unpacked(resp, NULL);
    }
    return rv;
}
