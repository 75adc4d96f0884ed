/*
 * Node configuration: JSON file -> struct node_config (see config.h).
 *
 * Design. The file is small and read once at start, so clarity wins over
 * speed: jansson parses it into a tree (rejecting duplicate keys), then one
 * function per object checks its keys against a fixed list (an unknown key
 * is an error: it is almost always a typo of an optional key whose default
 * would then silently apply) and reads each field with a typed helper that
 * knows the field's full name ("peers[1].raft_address", "limits.
 * idle_timeout_ms"). The first problem found ends the parse with one line
 * naming that field; there is no partial result.
 *
 * Cross-field rules are checked after the fields themselves: peer ids and
 * addresses unique, this node among the peers with the same addresses,
 * heartbeat shorter than the election timeout.
 *
 * The field readers and the sub-objects shared with the cluster file
 * (net/cluster_config.c) are exported to it through config_common.h.
 */
#include "config.h"
#include "config_common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "../engine/log.h"
#include "../raft/defaults.h"
#include "geoscale/errors.h"

#define CONFIG_FILE_MAX (1024 * 1024)

int config_fail(struct config_parser *p, const char *field, const char *fmt, ...)
{
    if (p->len == 0) {
        return GS_EINVAL;
    }
    int n = snprintf(p->errmsg, p->len, "%s: %s: ", p->what, field);
    if (n >= 0 && (size_t)n < p->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->errmsg + n, p->len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return GS_EINVAL;
}

const char *config_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Full name of key inside the object named prefix ("" = top level). */
void config_field_name(char *out, size_t len, const char *prefix, const char *key)
{
    snprintf(out, len, "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", key);
}

int config_check_keys(struct config_parser *p, json_t *obj, const char *prefix,
                      const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        (void)value;
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL; i++) {
            if (strcmp(key, allowed[i]) == 0) {
                known = true;
                break;
            }
        }
        if (!known) {
            char name[CONFIG_FIELD_MAX];
            config_field_name(name, sizeof name, prefix, key);
            return config_fail(p, name, "unknown key");
        }
    }
    return 0;
}

int config_read_uint(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                     bool required, uint64_t min, uint64_t max, uint64_t *out, bool *present)
{
    char name[CONFIG_FIELD_MAX];
    config_field_name(name, sizeof name, prefix, key);
    json_t *v = json_object_get(obj, key);
    if (present != NULL) {
        *present = v != NULL;
    }
    if (v == NULL) {
        return required ? config_fail(p, name, "required") : 0;
    }
    if (!json_is_integer(v)) {
        return config_fail(p, name, "expected integer, got %s", config_type_name(v));
    }
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max) {
        return config_fail(p, name,
                           "must be between %" PRIu64 " and %" PRIu64 ", got %" JSON_INTEGER_FORMAT,
                           min, max, i);
    }
    *out = (uint64_t)i;
    return 0;
}

/* Same for an unsigned field, keeping *out untouched when absent. */
static int read_unsigned(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                         uint64_t min, uint64_t max, unsigned *out)
{
    uint64_t v = 0;
    bool present = false;
    int rv = config_read_uint(p, obj, prefix, key, false, min, max, &v, &present);
    if (rv == 0 && present) {
        *out = (unsigned)v;
    }
    return rv;
}

int config_read_string(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                       bool required, char *out, size_t cap)
{
    char name[CONFIG_FIELD_MAX];
    config_field_name(name, sizeof name, prefix, key);
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        return required ? config_fail(p, name, "required") : 0;
    }
    if (!json_is_string(v)) {
        return config_fail(p, name, "expected string, got %s", config_type_name(v));
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n) {
        return config_fail(p, name, "contains a NUL byte");
    }
    if (required && n == 0) {
        return config_fail(p, name, "must not be empty");
    }
    if (n >= cap) {
        return config_fail(p, name, "longer than %zu bytes", cap - 1);
    }
    memcpy(out, s, n + 1);
    return 0;
}

int config_split_address(const char *address, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address) {
        return GS_EINVAL;
    }
    const char *h = address;
    size_t hlen = (size_t)(colon - address);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']') {
            return GS_EINVAL;
        }
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen) != NULL) {
        return GS_EINVAL; /* a bare IPv6 address needs brackets */
    }
    for (size_t i = 0; i < hlen; i++) {
        if (isspace((unsigned char)h[i]) || h[i] == '[' || h[i] == ']' || h[i] == '/') {
            return GS_EINVAL;
        }
    }
    const char *ps = colon + 1;
    size_t plen = strlen(ps);
    if (plen == 0 || plen > 5) {
        return GS_EINVAL;
    }
    long pn = 0;
    for (size_t i = 0; i < plen; i++) {
        if (!isdigit((unsigned char)ps[i])) {
            return GS_EINVAL;
        }
        pn = pn * 10 + (ps[i] - '0');
    }
    if (pn < 1 || pn > 65535 || hlen + 1 > host_len) {
        return GS_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)pn;
    return 0;
}

int config_read_address(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                        char out[CONFIG_ADDRESS_MAX])
{
    int rv = config_read_string(p, obj, prefix, key, true, out, CONFIG_ADDRESS_MAX);
    if (rv != 0) {
        return rv;
    }
    char host[CONFIG_ADDRESS_MAX];
    int port;
    if (config_split_address(out, host, sizeof host, &port) != 0) {
        char name[CONFIG_FIELD_MAX];
        config_field_name(name, sizeof name, prefix, key);
        return config_fail(p, name, "expected \"host:port\", got \"%s\"", out);
    }
    /* Addresses are dialled by raft_uv and by the client library without a
     * resolver: an IP literal, or localhost. */
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (strcmp(host, "localhost") != 0 && uv_ip4_addr(host, port, &a4) != 0 &&
        uv_ip6_addr(host, port, &a6) != 0) {
        char name[CONFIG_FIELD_MAX];
        config_field_name(name, sizeof name, prefix, key);
        return config_fail(p, name,
                           "expected an IP address (host names are not resolved), got \"%s\"", out);
    }
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int config_read_hash_key(struct config_parser *p, json_t *root, uint8_t key[CONFIG_KEY_MAX],
                         size_t *key_len)
{
    static const char name[] = "username_hash_key";
    char hex[2 * CONFIG_KEY_MAX + 2];
    int rv = config_read_string(p, root, "", name, true, hex, sizeof hex);
    if (rv != 0) {
        /* Too long is the only way a valid-typed key fails here besides
         * missing/empty: say it in the key's own terms. */
        json_t *v = json_object_get(root, name);
        if (v != NULL && json_is_string(v) && json_string_length(v) >= sizeof hex) {
            return config_fail(p, name, "expected 32 to %d hex digits, got %zu characters",
                               2 * CONFIG_KEY_MAX, json_string_length(v));
        }
        return rv;
    }
    size_t n = strlen(hex);
    if (n < 32 || n > 2 * CONFIG_KEY_MAX || n % 2 != 0) {
        return config_fail(p, name,
                           "expected an even number of 32 to %d hex digits, got %zu characters",
                           2 * CONFIG_KEY_MAX, n);
    }
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_value(hex[i]);
        int lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            return config_fail(p, name, "not a hex digit at position %zu", hi < 0 ? i : i + 1);
        }
        key[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *key_len = n / 2;
    return 0;
}

static int read_peers(struct config_parser *p, json_t *root, struct node_config *cfg)
{
    static const char *const peer_keys[] = {"id", "raft_address", "client_address", NULL};
    json_t *arr = json_object_get(root, "peers");
    if (arr == NULL) {
        return config_fail(p, "peers", "required");
    }
    if (!json_is_array(arr)) {
        return config_fail(p, "peers", "expected array, got %s", config_type_name(arr));
    }
    size_t n = json_array_size(arr);
    if (n < 1 || n > CONFIG_MAX_PEERS) {
        return config_fail(p, "peers", "expected 1 to %d entries, got %zu", CONFIG_MAX_PEERS, n);
    }
    for (size_t i = 0; i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "peers[%zu]", i);
        json_t *e = json_array_get(arr, i);
        if (!json_is_object(e)) {
            return config_fail(p, prefix, "expected object, got %s", config_type_name(e));
        }
        struct config_peer *peer = &cfg->peers[i];
        int rv = config_check_keys(p, e, prefix, peer_keys);
        if (rv == 0) {
            rv = config_read_uint(p, e, prefix, "id", true, 1, UINT32_MAX, &peer->id, NULL);
        }
        if (rv == 0) {
            rv = config_read_address(p, e, prefix, "raft_address", peer->raft_address);
        }
        if (rv == 0) {
            rv = config_read_address(p, e, prefix, "client_address", peer->client_address);
        }
        if (rv != 0) {
            return rv;
        }
        for (size_t j = 0; j < i; j++) {
            char name[CONFIG_FIELD_MAX];
            if (cfg->peers[j].id == peer->id) {
                snprintf(name, sizeof name, "%s.id", prefix);
                return config_fail(p, name, "duplicate id %" PRIu64 " (also peers[%zu])", peer->id,
                                   j);
            }
            if (strcmp(cfg->peers[j].raft_address, peer->raft_address) == 0) {
                snprintf(name, sizeof name, "%s.raft_address", prefix);
                return config_fail(p, name, "duplicate address \"%s\" (also peers[%zu])",
                                   peer->raft_address, j);
            }
            if (strcmp(cfg->peers[j].client_address, peer->client_address) == 0) {
                snprintf(name, sizeof name, "%s.client_address", prefix);
                return config_fail(p, name, "duplicate address \"%s\" (also peers[%zu])",
                                   peer->client_address, j);
            }
        }
    }
    cfg->n_peers = n;
    return 0;
}

/* This node must be one of the peers, with the same addresses. */
static int check_self(struct config_parser *p, struct node_config *cfg)
{
    for (size_t i = 0; i < cfg->n_peers; i++) {
        const struct config_peer *peer = &cfg->peers[i];
        if (peer->id != cfg->node_id) {
            continue;
        }
        char name[CONFIG_FIELD_MAX];
        if (strcmp(peer->raft_address, cfg->raft_address) != 0) {
            snprintf(name, sizeof name, "peers[%zu].raft_address", i);
            return config_fail(p, name, "\"%s\" differs from this node's raft_address \"%s\"",
                               peer->raft_address, cfg->raft_address);
        }
        if (strcmp(peer->client_address, cfg->client_address) != 0) {
            snprintf(name, sizeof name, "peers[%zu].client_address", i);
            return config_fail(p, name, "\"%s\" differs from this node's client_address \"%s\"",
                               peer->client_address, cfg->client_address);
        }
        return 0;
    }
    return config_fail(p, "peers", "this node (node_id %" PRIu64 ") is not listed", cfg->node_id);
}

/* An optional sub-object: NULL if absent, else checked to be an object with
 * only the allowed keys. */
static int get_section(struct config_parser *p, json_t *root, const char *key,
                       const char *const *allowed, json_t **out)
{
    *out = json_object_get(root, key);
    if (*out == NULL) {
        return 0;
    }
    if (!json_is_object(*out)) {
        return config_fail(p, key, "expected object, got %s", config_type_name(*out));
    }
    return config_check_keys(p, *out, key, allowed);
}

int config_read_raft(struct config_parser *p, json_t *root, struct config_raft *out)
{
    static const char *const keys[] = {"election_timeout_ms", "heartbeat_timeout_ms",
                                       "snapshot_threshold", "snapshot_trailing",
                                       "log_memory_mib", NULL};
    json_t *o;
    int rv = get_section(p, root, "raft", keys, &o);
    if (rv != 0 || o == NULL) {
        return rv;
    }
    struct config_raft *r = out;
    if ((rv = read_unsigned(p, o, "raft", "election_timeout_ms", 100, 60000,
                            &r->election_timeout_ms)) != 0 ||
        (rv = read_unsigned(p, o, "raft", "heartbeat_timeout_ms", 10, 10000,
                            &r->heartbeat_timeout_ms)) != 0 ||
        (rv = read_unsigned(p, o, "raft", "snapshot_threshold", 16, 1u << 30,
                            &r->snapshot_threshold)) != 0 ||
        (rv = read_unsigned(p, o, "raft", "snapshot_trailing", 16, 1u << 30,
                            &r->snapshot_trailing)) != 0 ||
        (rv = read_unsigned(p, o, "raft", "log_memory_mib", 16, 1u << 20,
                            &r->log_memory_mib)) != 0) {
        return rv;
    }
    unsigned election =
        r->election_timeout_ms != 0 ? r->election_timeout_ms : GROUP_DEFAULT_ELECTION_TIMEOUT_MS;
    unsigned heartbeat =
        r->heartbeat_timeout_ms != 0 ? r->heartbeat_timeout_ms : GROUP_DEFAULT_HEARTBEAT_TIMEOUT_MS;
    if (heartbeat >= election) {
        return config_fail(p, "raft.heartbeat_timeout_ms",
                           "must be less than the election timeout (%u ms), got %u", election,
                           heartbeat);
    }
    return 0;
}

int config_read_limits(struct config_parser *p, json_t *root, struct config_limits *out)
{
    static const char *const keys[] = {"max_frame_bytes",     "max_inflight_per_connection",
                                       "max_connections",     "idle_timeout_ms",
                                       "default_deadline_ms", NULL};
    json_t *o;
    int rv = get_section(p, root, "limits", keys, &o);
    if (rv != 0 || o == NULL) {
        return rv;
    }
    struct config_limits *l = out;
    unsigned frame = l->max_frame_bytes;
    if ((rv = read_unsigned(p, o, "limits", "max_frame_bytes", 4096, 1u << 30, &frame)) != 0 ||
        (rv = read_unsigned(p, o, "limits", "max_inflight_per_connection", 1, 65536,
                            &l->max_inflight_per_connection)) != 0 ||
        (rv = read_unsigned(p, o, "limits", "max_connections", 1, 1000000, &l->max_connections)) !=
            0 ||
        (rv = read_unsigned(p, o, "limits", "idle_timeout_ms", 100, 86400000,
                            &l->idle_timeout_ms)) != 0 ||
        (rv = read_unsigned(p, o, "limits", "default_deadline_ms", 1, 600000,
                            &l->default_deadline_ms)) != 0) {
        return rv;
    }
    l->max_frame_bytes = frame;
    return 0;
}

int config_read_rocksdb(struct config_parser *p, json_t *root, bool *compression)
{
    static const char *const keys[] = {"compression", NULL};
    json_t *o;
    int rv = get_section(p, root, "rocksdb", keys, &o);
    if (rv != 0 || o == NULL) {
        return rv;
    }
    json_t *v = json_object_get(o, "compression");
    if (v != NULL) {
        if (!json_is_boolean(v)) {
            return config_fail(p, "rocksdb.compression", "expected boolean, got %s",
                               config_type_name(v));
        }
        *compression = json_is_true(v);
    }
    return 0;
}

int config_read_log_level(struct config_parser *p, json_t *root, int *log_level)
{
    char level[16] = "";
    json_t *v = json_object_get(root, "log_level");
    if (v == NULL) {
        return 0;
    }
    if (!json_is_string(v)) {
        return config_fail(p, "log_level", "expected string, got %s", config_type_name(v));
    }
    int parsed = -1;
    if (json_string_length(v) < sizeof level) {
        memcpy(level, json_string_value(v), json_string_length(v) + 1);
        parsed = log_parse_level(level);
    }
    if (parsed < 0) {
        return config_fail(p, "log_level",
                           "expected one of debug, info, warn, error, got \"%.32s\"",
                           json_string_value(v));
    }
    *log_level = parsed;
    return 0;
}

void config_shared_defaults(struct config_raft *raft, struct config_limits *limits,
                            bool *compression, int *log_level)
{
    memset(raft, 0, sizeof *raft);
    memset(limits, 0, sizeof *limits);
    limits->max_frame_bytes = 4u * 1024 * 1024;
    limits->max_inflight_per_connection = 1024;
    limits->max_connections = 1024;
    limits->idle_timeout_ms = 60000;
    limits->default_deadline_ms = 5000;
    *compression = true;
    *log_level = -1;
}

void config_defaults(struct node_config *out)
{
    memset(out, 0, sizeof *out);
    config_shared_defaults(&out->raft, &out->limits, &out->compression, &out->log_level);
}

static int config_from_json(struct config_parser *p, json_t *root, struct node_config *cfg)
{
    static const char *const keys[] = {"node_id",
                                       "region",
                                       "zone",
                                       "cell_id",
                                       "raft_address",
                                       "client_address",
                                       "data_dir",
                                       "peers",
                                       "username_hash_key",
                                       "raft",
                                       "limits",
                                       "rocksdb",
                                       "log_level",
                                       NULL};
    if (!json_is_object(root)) {
        return config_fail(p, "(top level)", "expected object, got %s", config_type_name(root));
    }
    uint64_t cell_id = 0;
    int rv;
    if ((rv = config_check_keys(p, root, "", keys)) != 0 ||
        (rv = config_read_uint(p, root, "", "node_id", true, 1, UINT32_MAX, &cfg->node_id, NULL)) !=
            0 ||
        (rv = config_read_string(p, root, "", "region", true, cfg->region, sizeof cfg->region)) !=
            0 ||
        (rv = config_read_string(p, root, "", "zone", false, cfg->zone, sizeof cfg->zone)) != 0 ||
        (rv = config_read_uint(p, root, "", "cell_id", true, 1, UINT32_MAX, &cell_id, NULL)) != 0 ||
        (rv = config_read_address(p, root, "", "raft_address", cfg->raft_address)) != 0 ||
        (rv = config_read_address(p, root, "", "client_address", cfg->client_address)) != 0 ||
        /* Leave room for "/raft" and "/db" below it. */
        (rv = config_read_string(p, root, "", "data_dir", true, cfg->data_dir,
                                 sizeof cfg->data_dir - 16)) != 0 ||
        (rv = read_peers(p, root, cfg)) != 0 ||
        (rv = config_read_hash_key(p, root, cfg->username_hash_key, &cfg->username_hash_key_len)) !=
            0 ||
        (rv = config_read_raft(p, root, &cfg->raft)) != 0 ||
        (rv = config_read_limits(p, root, &cfg->limits)) != 0 ||
        (rv = config_read_rocksdb(p, root, &cfg->compression)) != 0 ||
        (rv = config_read_log_level(p, root, &cfg->log_level)) != 0 ||
        (rv = check_self(p, cfg)) != 0) {
        return rv;
    }
    /* Region names travel in metadata rows and the directory: the same
     * rule as the cluster file's. */
    size_t rlen = strlen(cfg->region);
    bool region_ok = rlen >= 1 && rlen <= 32;
    for (size_t i = 0; i < rlen && region_ok; i++) {
        char c = cfg->region[i];
        region_ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    }
    if (!region_ok) {
        return config_fail(p, "region", "expected 1-32 characters of [a-z0-9-], got \"%s\"",
                           cfg->region);
    }
    cfg->cell_id = (uint32_t)cell_id;
    return 0;
}

int config_parse(const char *text, const char *name, struct node_config *out, char *errmsg,
                 size_t len)
{
    struct config_parser p = {"config", errmsg, len};
    if (len > 0) {
        errmsg[0] = '\0';
    }
    config_defaults(out);
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(errmsg, len, "config: %s: line %d column %d: %s", name, jerr.line, jerr.column,
                 jerr.text);
        return GS_EINVAL;
    }
    int rv = config_from_json(&p, root, out);
    json_decref(root);
    return rv;
}

int config_read_file(const char *what, const char *path, char **text, char *errmsg, size_t len)
{
    char *buf = NULL;
    int rv = GS_EINVAL;
    FILE *f = fopen(path, "rb");
    *text = NULL;
    if (f == NULL) {
        snprintf(errmsg, len, "%s: %s: cannot open: %s", what, path, strerror(errno));
        goto out;
    }
    buf = malloc(CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(errmsg, len, "%s: %s: out of memory", what, path);
        rv = GS_ENOMEM;
        goto out;
    }
    size_t n = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f)) {
        snprintf(errmsg, len, "%s: %s: cannot read: %s", what, path, strerror(errno));
        goto out;
    }
    if (n > CONFIG_FILE_MAX) {
        snprintf(errmsg, len, "%s: %s: larger than %d bytes", what, path, CONFIG_FILE_MAX);
        goto out;
    }
    if (memchr(buf, '\0', n) != NULL) {
        snprintf(errmsg, len, "%s: %s: contains a NUL byte", what, path);
        goto out;
    }
    buf[n] = '\0';
    *text = buf;
    buf = NULL;
    rv = 0;
out:
    free(buf);
    if (f != NULL) {
        fclose(f);
    }
    return rv;
}

int config_load(const char *path, struct node_config *out, char *errmsg, size_t len)
{
    char *text = NULL;
    int rv = config_read_file("config", path, &text, errmsg, len);
    if (rv == 0) {
        rv = config_parse(text, path, out, errmsg, len);
    }
    free(text);
    return rv;
}
