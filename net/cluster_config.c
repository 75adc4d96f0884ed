/*
 * The cluster file: JSON -> struct cluster_config (see cluster_config.h and
 * docs/CLUSTER.md), and what one node of it runs.
 *
 * Design. Like the node config (config.c, whose field readers this file
 * shares through config_common.h), the file is small and read once, so the
 * loader favours clear messages over speed: jansson parses it (rejecting
 * duplicate keys), each object's keys are checked against a fixed list, and
 * every field is read by a typed helper that knows its full name
 * ("cells[2].members[1]"). The first problem ends the parse with one line
 * naming that field; there is no partial result.
 *
 * Order of the checks: the fields of each node, then the groups (cells,
 * directory, metadata), which name nodes by id and so need the nodes first,
 * then the rules that tie a node to its groups (a node has exactly the raft
 * addresses of the groups it hosts), then the rules across all nodes
 * (unique endpoints, one data_dir per node on a machine). Ids are looked up
 * through indexes sorted by id, so a file of CLUSTER_MAX_NODES nodes checks
 * in well under a millisecond per rule.
 */
#include "cluster_config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "config_common.h"
#include "geoscale/errors.h"

/* ------------------------------------------------------------- lookups */

static int cmp_node_order(const void *a, const void *b, void *arg)
{
    const struct cluster_node *nodes = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    if (nodes[i].id != nodes[j].id) {
        return nodes[i].id < nodes[j].id ? -1 : 1;
    }
    return i < j ? -1 : i > j; /* stable: file order among equal ids */
}

static int cmp_cell_order(const void *a, const void *b, void *arg)
{
    const struct cluster_cell *cells = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    if (cells[i].id != cells[j].id) {
        return cells[i].id < cells[j].id ? -1 : 1;
    }
    return i < j ? -1 : i > j;
}

static long node_index(const struct cluster_config *c, uint64_t node_id)
{
    size_t lo = 0, hi = c->n_nodes;
    if (c->node_order == NULL) {
        return -1;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t id = c->nodes[c->node_order[mid]].id;
        if (id == node_id) {
            return (long)c->node_order[mid];
        }
        if (id < node_id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

const struct cluster_node *cluster_config_find_node(const struct cluster_config *c,
                                                    uint64_t node_id)
{
    long i = node_index(c, node_id);
    return i < 0 ? NULL : &c->nodes[i];
}

const struct cluster_cell *cluster_config_find_cell(const struct cluster_config *c,
                                                    uint32_t cell_id)
{
    size_t lo = 0, hi = c->n_cells;
    if (c->cell_order == NULL) {
        return NULL;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct cluster_cell *cell = &c->cells[c->cell_order[mid]];
        if (cell->id == cell_id) {
            return cell;
        }
        if (cell->id < cell_id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

int cluster_config_find_region(const struct cluster_config *c, const char *region)
{
    for (size_t i = 0; i < c->n_regions; i++) {
        if (strcmp(c->regions[i], region) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const char *cluster_group_kind_name(enum cluster_group_kind kind)
{
    switch (kind) {
    case CLUSTER_GROUP_CELL:
        return "cell";
    case CLUSTER_GROUP_DIRECTORY:
        return "directory";
    case CLUSTER_GROUP_METADATA:
        return "metadata";
    }
    return "unknown";
}

const char *cluster_role_name(enum cluster_role role)
{
    switch (role) {
    case CLUSTER_ROLE_NONE:
        return "none";
    case CLUSTER_ROLE_VOTER:
        return "voter";
    case CLUSTER_ROLE_STANDBY:
        return "standby";
    }
    return "unknown";
}

/* ------------------------------------------------------------- fields */

static int read_regions(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    json_t *arr = json_object_get(root, "regions");
    if (arr == NULL) {
        return config_fail(p, "regions", "required");
    }
    if (!json_is_array(arr)) {
        return config_fail(p, "regions", "expected array, got %s", config_type_name(arr));
    }
    size_t n = json_array_size(arr);
    if (n < 1 || n > CLUSTER_MAX_REGIONS) {
        return config_fail(p, "regions", "expected 1 to %d names, got %zu", CLUSTER_MAX_REGIONS, n);
    }
    for (size_t i = 0; i < n; i++) {
        char name[CONFIG_FIELD_MAX];
        snprintf(name, sizeof name, "regions[%zu]", i);
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v)) {
            return config_fail(p, name, "expected string, got %s", config_type_name(v));
        }
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (len == 0 || len >= CLUSTER_REGION_MAX) {
            return config_fail(p, name, "expected 1 to %d bytes, got %zu", CLUSTER_REGION_MAX - 1,
                               len);
        }
        for (size_t k = 0; k < len; k++) {
            char ch = s[k];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) {
                return config_fail(p, name, "\"%s\": only a-z, 0-9 and '-' are allowed", s);
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->regions[j], s) == 0) {
                return config_fail(p, name, "duplicate region \"%s\" (also regions[%zu])", s, j);
            }
        }
        memcpy(c->regions[i], s, len + 1);
    }
    c->n_regions = n;
    return 0;
}

/* A required string naming one of c->regions; *out its index. */
static int read_region_ref(struct config_parser *p, json_t *obj, const char *prefix,
                           const struct cluster_config *c, size_t *out)
{
    char region[CLUSTER_REGION_MAX + 1];
    char name[CONFIG_FIELD_MAX];
    config_field_name(name, sizeof name, prefix, "region");
    json_t *v = json_object_get(obj, "region");
    if (v != NULL && json_is_string(v) && json_string_length(v) >= sizeof region) {
        return config_fail(p, name, "\"%.40s...\" is not one of regions", json_string_value(v));
    }
    int rv = config_read_string(p, obj, prefix, "region", true, region, sizeof region);
    if (rv != 0) {
        return rv;
    }
    int r = cluster_config_find_region(c, region);
    if (r < 0) {
        return config_fail(p, name, "\"%s\" is not one of regions", region);
    }
    *out = (size_t)r;
    return 0;
}

/* An optional address: left "" when absent. */
static int read_optional_address(struct config_parser *p, json_t *obj, const char *prefix,
                                 const char *key, char out[CONFIG_ADDRESS_MAX])
{
    out[0] = '\0';
    if (json_object_get(obj, key) == NULL) {
        return 0;
    }
    return config_read_address(p, obj, prefix, key, out);
}

static int read_node(struct config_parser *p, json_t *e, const char *prefix,
                     const struct cluster_config *c, struct cluster_node *node)
{
    static const char *const keys[] = {"id",
                                       "region",
                                       "zone",
                                       "client_address",
                                       "cell_raft_address",
                                       "directory_raft_address",
                                       "metadata_raft_address",
                                       "data_dir",
                                       NULL};
    if (!json_is_object(e)) {
        return config_fail(p, prefix, "expected object, got %s", config_type_name(e));
    }
    int rv;
    if ((rv = config_check_keys(p, e, prefix, keys)) != 0 ||
        (rv = config_read_uint(p, e, prefix, "id", true, 1, UINT32_MAX, &node->id, NULL)) != 0 ||
        (rv = read_region_ref(p, e, prefix, c, &node->region)) != 0 ||
        (rv = config_read_string(p, e, prefix, "zone", false, node->zone, sizeof node->zone)) !=
            0 ||
        (rv = config_read_address(p, e, prefix, "client_address", node->client_address)) != 0 ||
        (rv = read_optional_address(p, e, prefix, "cell_raft_address", node->cell_raft_address)) !=
            0 ||
        (rv = read_optional_address(p, e, prefix, "directory_raft_address",
                                    node->directory_raft_address)) != 0 ||
        (rv = read_optional_address(p, e, prefix, "metadata_raft_address",
                                    node->metadata_raft_address)) != 0 ||
        (rv = config_read_string(p, e, prefix, "data_dir", true, node->data_dir,
                                 sizeof node->data_dir)) != 0) {
        return rv;
    }
    return 0;
}

static int read_nodes(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    json_t *arr = json_object_get(root, "nodes");
    if (arr == NULL) {
        return config_fail(p, "nodes", "required");
    }
    if (!json_is_array(arr)) {
        return config_fail(p, "nodes", "expected array, got %s", config_type_name(arr));
    }
    size_t n = json_array_size(arr);
    if (n < 1 || n > CLUSTER_MAX_NODES) {
        return config_fail(p, "nodes", "expected 1 to %d nodes, got %zu", CLUSTER_MAX_NODES, n);
    }
    c->nodes = calloc(n, sizeof *c->nodes);
    c->node_order = calloc(n, sizeof *c->node_order);
    if (c->nodes == NULL || c->node_order == NULL) {
        return config_fail(p, "nodes", "out of memory"), GS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "nodes[%zu]", i);
        int rv = read_node(p, json_array_get(arr, i), prefix, c, &c->nodes[i]);
        if (rv != 0) {
            return rv;
        }
        c->node_order[i] = (uint32_t)i;
    }
    c->n_nodes = n;
    qsort_r(c->node_order, n, sizeof *c->node_order, cmp_node_order, c->nodes);
    /* Equal ids are adjacent, in file order (the sort is stable on ties):
     * of all repeats name the one that comes first in the file. */
    size_t dup = SIZE_MAX, first = 0, run = 0;
    for (size_t k = 1; k < n; k++) {
        uint32_t b = c->node_order[k];
        if (c->nodes[c->node_order[k - 1]].id != c->nodes[b].id) {
            run = k;
        } else if (b < dup) {
            dup = b;
            first = c->node_order[run];
        }
    }
    if (dup != SIZE_MAX) {
        char name[CONFIG_FIELD_MAX];
        snprintf(name, sizeof name, "nodes[%zu].id", dup);
        return config_fail(p, name, "duplicate id %" PRIu64 " (also nodes[%zu])", c->nodes[dup].id,
                           (size_t)first);
    }
    return 0;
}

/*
 * A list of node ids at obj.key: between min_n and max_n distinct ids of
 * nodes of the file, into out[0..*n).
 */
static int read_id_list(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                        const struct cluster_config *c, size_t min_n, size_t max_n, uint64_t *out,
                        size_t *n)
{
    char name[CONFIG_FIELD_MAX];
    config_field_name(name, sizeof name, prefix, key);
    json_t *arr = json_object_get(obj, key);
    if (arr == NULL) {
        return config_fail(p, name, "required");
    }
    if (!json_is_array(arr)) {
        return config_fail(p, name, "expected array of node ids, got %s", config_type_name(arr));
    }
    size_t count = json_array_size(arr);
    if (count < min_n || count > max_n) {
        if (min_n == max_n) {
            return config_fail(p, name, "expected exactly %zu node ids, got %zu", min_n, count);
        }
        return config_fail(p, name, "expected %zu to %zu node ids, got %zu", min_n, max_n, count);
    }
    for (size_t i = 0; i < count; i++) {
        char item[CONFIG_FIELD_MAX + 24];
        snprintf(item, sizeof item, "%s[%zu]", name, i);
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v)) {
            return config_fail(p, item, "expected a node id, got %s", config_type_name(v));
        }
        json_int_t id = json_integer_value(v);
        if (id < 1 || (uint64_t)id > UINT32_MAX || node_index(c, (uint64_t)id) < 0) {
            return config_fail(p, item, "no node %" JSON_INTEGER_FORMAT " in nodes", id);
        }
        for (size_t j = 0; j < i; j++) {
            if (out[j] == (uint64_t)id) {
                return config_fail(p, item,
                                   "node %" JSON_INTEGER_FORMAT " is listed twice (also %s[%zu])",
                                   id, name, j);
            }
        }
        out[i] = (uint64_t)id;
    }
    *n = count;
    return 0;
}

static int read_cells(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    static const char *const keys[] = {"id", "region", "members", NULL};
    json_t *arr = json_object_get(root, "cells");
    if (arr == NULL) {
        return config_fail(p, "cells", "required");
    }
    if (!json_is_array(arr)) {
        return config_fail(p, "cells", "expected array, got %s", config_type_name(arr));
    }
    size_t n = json_array_size(arr);
    if (n < 1 || n > CLUSTER_MAX_CELLS) {
        return config_fail(p, "cells", "expected 1 to %d cells, got %zu", CLUSTER_MAX_CELLS, n);
    }
    c->cells = calloc(n, sizeof *c->cells);
    c->cell_order = calloc(n, sizeof *c->cell_order);
    if (c->cells == NULL || c->cell_order == NULL) {
        return config_fail(p, "cells", "out of memory"), GS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "cells[%zu]", i);
        json_t *e = json_array_get(arr, i);
        struct cluster_cell *cell = &c->cells[i];
        if (!json_is_object(e)) {
            return config_fail(p, prefix, "expected object, got %s", config_type_name(e));
        }
        uint64_t id = 0;
        size_t n_members = 0;
        int rv;
        if ((rv = config_check_keys(p, e, prefix, keys)) != 0 ||
            (rv = config_read_uint(p, e, prefix, "id", true, 1, CLUSTER_CELL_ID_MAX, &id, NULL)) !=
                0 ||
            (rv = read_region_ref(p, e, prefix, c, &cell->region)) != 0 ||
            (rv = read_id_list(p, e, prefix, "members", c, CLUSTER_CELL_MEMBERS,
                               CLUSTER_CELL_MEMBERS, cell->members, &n_members)) != 0) {
            return rv;
        }
        cell->id = (uint32_t)id;
        for (size_t j = 0; j < i; j++) {
            if (c->cells[j].id == cell->id) {
                char name[CONFIG_FIELD_MAX];
                snprintf(name, sizeof name, "%s.id", prefix);
                return config_fail(p, name, "duplicate id %" PRIu32 " (also cells[%zu])", cell->id,
                                   j);
            }
        }
        for (size_t m = 0; m < CLUSTER_CELL_MEMBERS; m++) {
            char name[CONFIG_FIELD_MAX];
            snprintf(name, sizeof name, "%s.members[%zu]", prefix, m);
            struct cluster_node *node = &c->nodes[node_index(c, cell->members[m])];
            if (node->region != cell->region) {
                return config_fail(p, name, "node %" PRIu64 " is in region %s, the cell is in %s",
                                   node->id, c->regions[node->region], c->regions[cell->region]);
            }
            if (node->cell_id != 0) {
                return config_fail(p, name,
                                   "node %" PRIu64 " is already a member of cell %" PRIu32
                                   " (a node is in at most one cell)",
                                   node->id, node->cell_id);
            }
            node->cell_id = cell->id;
        }
        c->cell_order[i] = (uint32_t)i;
    }
    c->n_cells = n;
    qsort_r(c->cell_order, n, sizeof *c->cell_order, cmp_cell_order, c->cells);
    return 0;
}

/* Three voters of a cross-region group, each in its own region. */
static int read_voters(struct config_parser *p, json_t *obj, const char *prefix,
                       const struct cluster_config *c, uint64_t voters[CLUSTER_GROUP_VOTERS])
{
    size_t n = 0;
    int rv = read_id_list(p, obj, prefix, "voters", c, CLUSTER_GROUP_VOTERS, CLUSTER_GROUP_VOTERS,
                          voters, &n);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 1; i < n; i++) {
        const struct cluster_node *a = cluster_config_find_node(c, voters[i]);
        for (size_t j = 0; j < i; j++) {
            const struct cluster_node *b = cluster_config_find_node(c, voters[j]);
            if (a->region == b->region) {
                char name[CONFIG_FIELD_MAX];
                snprintf(name, sizeof name, "%s.voters[%zu]", prefix, i);
                return config_fail(p, name,
                                   "node %" PRIu64
                                   " is in region %s, as is %s.voters[%zu] (node %" PRIu64
                                   "); the %d voters must be in %d different regions",
                                   a->id, c->regions[a->region], prefix, j, b->id,
                                   CLUSTER_GROUP_VOTERS, CLUSTER_GROUP_VOTERS);
            }
        }
    }
    return 0;
}

/* A required sub-object with only the allowed keys. */
static int get_object(struct config_parser *p, json_t *root, const char *key,
                      const char *const *allowed, json_t **out)
{
    *out = json_object_get(root, key);
    if (*out == NULL) {
        return config_fail(p, key, "required");
    }
    if (!json_is_object(*out)) {
        return config_fail(p, key, "expected object, got %s", config_type_name(*out));
    }
    return config_check_keys(p, *out, key, allowed);
}

static int read_directory(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    static const char *const keys[] = {"voters", NULL};
    json_t *o;
    int rv = get_object(p, root, "directory", keys, &o);
    if (rv == 0) {
        rv = read_voters(p, o, "directory", c, c->directory_voters);
    }
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < CLUSTER_GROUP_VOTERS; i++) {
        c->nodes[node_index(c, c->directory_voters[i])].directory = CLUSTER_ROLE_VOTER;
    }
    return 0;
}

static int read_metadata(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    static const char *const keys[] = {"voters", "standbys", NULL};
    json_t *o;
    int rv = get_object(p, root, "metadata", keys, &o);
    if (rv == 0) {
        rv = read_voters(p, o, "metadata", c, c->metadata_voters);
    }
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < CLUSTER_GROUP_VOTERS; i++) {
        c->nodes[node_index(c, c->metadata_voters[i])].metadata = CLUSTER_ROLE_VOTER;
    }
    if (json_object_get(o, "standbys") != NULL) {
        rv = read_id_list(p, o, "metadata", "standbys", c, 0, CLUSTER_MAX_STANDBYS,
                          c->metadata_standbys, &c->n_metadata_standbys);
        if (rv != 0) {
            return rv;
        }
    }
    for (size_t i = 0; i < c->n_metadata_standbys; i++) {
        struct cluster_node *node = &c->nodes[node_index(c, c->metadata_standbys[i])];
        if (node->metadata == CLUSTER_ROLE_VOTER) {
            char name[CONFIG_FIELD_MAX];
            snprintf(name, sizeof name, "metadata.standbys[%zu]", i);
            return config_fail(p, name,
                               "node %" PRIu64
                               " is a metadata voter (a node is a voter or a standby, not both)",
                               node->id);
        }
        node->metadata = CLUSTER_ROLE_STANDBY;
    }
    /* Every region reads metadata locally: a voter or a standby in each. */
    for (size_t r = 0; r < c->n_regions; r++) {
        bool served = false;
        for (size_t i = 0; i < c->n_nodes && !served; i++) {
            served = c->nodes[i].region == r && c->nodes[i].metadata != CLUSTER_ROLE_NONE;
        }
        if (!served) {
            return config_fail(p, "metadata.standbys",
                               "region %s has no metadata voter and no standby (every region "
                               "needs a local metadata replica)",
                               c->regions[r]);
        }
    }
    return 0;
}

/* ------------------------------------------------------------- cross-field */

/* A node has exactly the raft addresses of the groups it hosts. */
static int check_node_groups(struct config_parser *p, const struct cluster_config *c)
{
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct cluster_node *node = &c->nodes[i];
        struct {
            const char *key;
            const char *address;
            bool hosts;
            const char *why; /* the role that needs the address */
        } groups[] = {
            {"cell_raft_address", node->cell_raft_address, node->cell_id != 0, "a cell member"},
            {"directory_raft_address", node->directory_raft_address,
             node->directory != CLUSTER_ROLE_NONE, "a directory voter"},
            {"metadata_raft_address", node->metadata_raft_address,
             node->metadata != CLUSTER_ROLE_NONE,
             node->metadata == CLUSTER_ROLE_STANDBY ? "a metadata standby" : "a metadata voter"},
        };
        char name[CONFIG_FIELD_MAX];
        bool any = false;
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
            snprintf(name, sizeof name, "nodes[%zu].%s", i, groups[g].key);
            any = any || groups[g].hosts;
            if (groups[g].hosts && groups[g].address[0] == '\0') {
                return config_fail(p, name, "required: node %" PRIu64 " is %s", node->id,
                                   groups[g].why);
            }
            if (!groups[g].hosts && groups[g].address[0] != '\0') {
                return config_fail(p, name, "node %" PRIu64 " is not %s, so it has no %s", node->id,
                                   g == 0   ? "in any cell"
                                   : g == 1 ? "a directory voter"
                                            : "a metadata voter or standby",
                                   groups[g].key);
            }
        }
        if (!any) {
            snprintf(name, sizeof name, "nodes[%zu]", i);
            return config_fail(p, name,
                               "node %" PRIu64 " hosts no group (it is in no cell and no "
                               "directory or metadata member)",
                               node->id);
        }
    }
    return 0;
}

/* An endpoint as bytes: IPv4 mapped into IPv6, localhost as 127.0.0.1. */
struct endpoint {
    uint8_t addr[16];
    uint16_t port;
    uint32_t node; /* index into nodes */
    uint8_t field; /* which address of the node: enum below */
};

enum { EP_CLIENT, EP_CELL, EP_DIRECTORY, EP_METADATA, EP_COUNT };

static const char *const endpoint_keys[EP_COUNT] = {
    "client_address", "cell_raft_address", "directory_raft_address", "metadata_raft_address"};

/* The host of address as 16 bytes (IPv4-mapped for IPv4). The loader has
 * already checked the address, so this cannot fail. */
static void host_bytes(const char *address, uint8_t out[16], uint16_t *port)
{
    char host[CONFIG_ADDRESS_MAX];
    int p = 0;
    memset(out, 0, 16);
    if (config_split_address(address, host, sizeof host, &p) != 0) {
        *port = 0;
        return;
    }
    *port = (uint16_t)p;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof host, "127.0.0.1");
    }
    if (uv_ip4_addr(host, p, &a4) == 0) {
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &a4.sin_addr, 4);
    } else if (uv_ip6_addr(host, p, &a6) == 0) {
        memcpy(out, &a6.sin6_addr, 16);
    }
}

static bool is_loopback(const uint8_t a[16])
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    static const uint8_t v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(a, v6_loopback, 16) == 0 || (memcmp(a, v4_mapped, 12) == 0 && a[12] == 127);
}

static int cmp_endpoint(const void *a, const void *b)
{
    const struct endpoint *x = a, *y = b;
    int d = memcmp(x->addr, y->addr, 16);
    if (d != 0) {
        return d;
    }
    if (x->port != y->port) {
        return x->port < y->port ? -1 : 1;
    }
    if (x->node != y->node) {
        return x->node < y->node ? -1 : 1;
    }
    return x->field < y->field ? -1 : x->field > y->field;
}

static const char *endpoint_address(const struct cluster_node *node, int field)
{
    switch (field) {
    case EP_CLIENT:
        return node->client_address;
    case EP_CELL:
        return node->cell_raft_address;
    case EP_DIRECTORY:
        return node->directory_raft_address;
    default:
        return node->metadata_raft_address;
    }
}

/* No two addresses of the file are one endpoint. */
static int check_endpoints(struct config_parser *p, const struct cluster_config *c)
{
    struct endpoint *eps = calloc(c->n_nodes * EP_COUNT, sizeof *eps);
    size_t n = 0;
    if (eps == NULL) {
        return config_fail(p, "nodes", "out of memory"), GS_ENOMEM;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        for (int f = 0; f < EP_COUNT; f++) {
            const char *address = endpoint_address(&c->nodes[i], f);
            if (address[0] == '\0') {
                continue;
            }
            host_bytes(address, eps[n].addr, &eps[n].port);
            eps[n].node = (uint32_t)i;
            eps[n].field = (uint8_t)f;
            n++;
        }
    }
    qsort(eps, n, sizeof *eps, cmp_endpoint);
    /* Of all repeats, name the one that comes first in the file. */
    const struct endpoint *dup = NULL, *first = NULL;
    for (size_t k = 1; k < n; k++) {
        if (memcmp(eps[k].addr, eps[k - 1].addr, 16) != 0 || eps[k].port != eps[k - 1].port) {
            continue;
        }
        size_t start = k - 1;
        while (start > 0 && memcmp(eps[start - 1].addr, eps[k].addr, 16) == 0 &&
               eps[start - 1].port == eps[k].port) {
            start--;
        }
        if (dup == NULL || eps[k].node < dup->node ||
            (eps[k].node == dup->node && eps[k].field < dup->field)) {
            dup = &eps[k];
            first = &eps[start];
        }
    }
    int rv = 0;
    if (dup != NULL) {
        char name[CONFIG_FIELD_MAX];
        snprintf(name, sizeof name, "nodes[%" PRIu32 "].%s", dup->node, endpoint_keys[dup->field]);
        rv = config_fail(p, name, "\"%s\" is the same endpoint as nodes[%" PRIu32 "].%s (\"%s\")",
                         endpoint_address(&c->nodes[dup->node], dup->field), first->node,
                         endpoint_keys[first->field],
                         endpoint_address(&c->nodes[first->node], first->field));
    }
    free(eps);
    return rv;
}

/* data_dir without trailing slashes, for comparison. */
static size_t dir_len(const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') {
        n--;
    }
    return n;
}

/* Nodes on one machine (same client host; every loopback address is one
 * machine) need their own data_dir. Nodes on different machines may well
 * share a path. */
static int check_data_dirs(struct config_parser *p, const struct cluster_config *c)
{
    uint8_t(*hosts)[16] = calloc(c->n_nodes, sizeof *hosts);
    int rv = 0;
    if (hosts == NULL) {
        return config_fail(p, "nodes", "out of memory"), GS_ENOMEM;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        uint16_t port;
        host_bytes(c->nodes[i].client_address, hosts[i], &port);
        if (is_loopback(hosts[i])) {
            memset(hosts[i], 0, 16);
            hosts[i][15] = 1;
        }
    }
    for (size_t i = 1; i < c->n_nodes && rv == 0; i++) {
        size_t li = dir_len(c->nodes[i].data_dir);
        for (size_t j = 0; j < i; j++) {
            if (memcmp(hosts[i], hosts[j], 16) == 0 && dir_len(c->nodes[j].data_dir) == li &&
                memcmp(c->nodes[i].data_dir, c->nodes[j].data_dir, li) == 0) {
                char name[CONFIG_FIELD_MAX];
                snprintf(name, sizeof name, "nodes[%zu].data_dir", i);
                rv = config_fail(p, name,
                                 "\"%s\" is also the data_dir of nodes[%zu] (node %" PRIu64
                                 "), on the same machine",
                                 c->nodes[i].data_dir, j, c->nodes[j].id);
                break;
            }
        }
    }
    free(hosts);
    return rv;
}

/* ------------------------------------------------------------- load */

static int cluster_from_json(struct config_parser *p, json_t *root, struct cluster_config *c)
{
    static const char *const keys[] = {"cluster", "username_hash_key", "regions",   "nodes",
                                       "cells",   "directory",         "metadata",  "raft",
                                       "limits",  "rocksdb",           "log_level", NULL};
    if (!json_is_object(root)) {
        return config_fail(p, "(top level)", "expected object, got %s", config_type_name(root));
    }
    int rv;
    if ((rv = config_check_keys(p, root, "", keys)) != 0 ||
        (rv = config_read_string(p, root, "", "cluster", false, c->name, sizeof c->name)) != 0 ||
        (rv = config_read_hash_key(p, root, c->username_hash_key, &c->username_hash_key_len)) !=
            0 ||
        (rv = read_regions(p, root, c)) != 0 || (rv = read_nodes(p, root, c)) != 0 ||
        (rv = read_cells(p, root, c)) != 0 || (rv = read_directory(p, root, c)) != 0 ||
        (rv = read_metadata(p, root, c)) != 0 || (rv = check_node_groups(p, c)) != 0 ||
        (rv = check_endpoints(p, c)) != 0 || (rv = check_data_dirs(p, c)) != 0 ||
        (rv = config_read_raft(p, root, &c->raft)) != 0 ||
        (rv = config_read_limits(p, root, &c->limits)) != 0 ||
        (rv = config_read_rocksdb(p, root, &c->compression)) != 0 ||
        (rv = config_read_log_level(p, root, &c->log_level)) != 0) {
        return rv;
    }
    return 0;
}

void cluster_config_free(struct cluster_config *c)
{
    if (c == NULL) {
        return;
    }
    free(c->nodes);
    free(c->cells);
    free(c->node_order);
    free(c->cell_order);
    memset(c, 0, sizeof *c);
}

int cluster_config_parse(const char *text, const char *name, struct cluster_config *out,
                         char *errmsg, size_t len)
{
    struct config_parser p = {"cluster", errmsg, len};
    if (len > 0) {
        errmsg[0] = '\0';
    }
    memset(out, 0, sizeof *out);
    config_shared_defaults(&out->raft, &out->limits, &out->compression, &out->log_level);
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(errmsg, len, "cluster: %s: line %d column %d: %s", name, jerr.line, jerr.column,
                 jerr.text);
        return GS_EINVAL;
    }
    int rv = cluster_from_json(&p, root, out);
    json_decref(root);
    if (rv != 0) {
        cluster_config_free(out);
    }
    return rv;
}

int cluster_config_load(const char *path, struct cluster_config *out, char *errmsg, size_t len)
{
    char *text = NULL;
    memset(out, 0, sizeof *out);
    int rv = config_read_file("cluster", path, &text, errmsg, len);
    if (rv == 0) {
        rv = cluster_config_parse(text, path, out, errmsg, len);
    }
    free(text);
    return rv;
}

/* ------------------------------------------------------------- node view */

static void fill_member(const struct cluster_config *c, const struct cluster_node *node,
                        enum cluster_group_kind kind, enum cluster_role role,
                        struct cluster_member *m)
{
    memset(m, 0, sizeof *m);
    m->id = node->id;
    m->region = node->region;
    m->role = role;
    const char *raft = kind == CLUSTER_GROUP_CELL        ? node->cell_raft_address
                       : kind == CLUSTER_GROUP_DIRECTORY ? node->directory_raft_address
                                                         : node->metadata_raft_address;
    snprintf(m->raft_address, sizeof m->raft_address, "%s", raft);
    snprintf(m->client_address, sizeof m->client_address, "%s", node->client_address);
    (void)c;
}

int cluster_config_group_members(const struct cluster_config *c, enum cluster_group_kind kind,
                                 uint32_t group_id, struct cluster_member *out, size_t cap,
                                 size_t *n)
{
    const uint64_t *voters, *standbys = NULL;
    size_t n_voters, n_standbys = 0;
    *n = 0;
    switch (kind) {
    case CLUSTER_GROUP_CELL: {
        const struct cluster_cell *cell = cluster_config_find_cell(c, group_id);
        if (cell == NULL) {
            return GS_ENOTFOUND;
        }
        voters = cell->members;
        n_voters = CLUSTER_CELL_MEMBERS;
        break;
    }
    case CLUSTER_GROUP_DIRECTORY:
        voters = c->directory_voters;
        n_voters = CLUSTER_GROUP_VOTERS;
        break;
    case CLUSTER_GROUP_METADATA:
        voters = c->metadata_voters;
        n_voters = CLUSTER_GROUP_VOTERS;
        standbys = c->metadata_standbys;
        n_standbys = c->n_metadata_standbys;
        break;
    default:
        return GS_EINVAL;
    }
    if (n_voters + n_standbys > cap) {
        return GS_EINVAL;
    }
    for (size_t i = 0; i < n_voters + n_standbys; i++) {
        bool voter = i < n_voters;
        const struct cluster_node *node =
            cluster_config_find_node(c, voter ? voters[i] : standbys[i - n_voters]);
        if (node == NULL) {
            return GS_EINVAL; /* not a config that the loader accepted */
        }
        fill_member(c, node, kind, voter ? CLUSTER_ROLE_VOTER : CLUSTER_ROLE_STANDBY, &out[i]);
    }
    *n = n_voters + n_standbys;
    return 0;
}

static int add_group(const struct cluster_config *c, const struct cluster_node *node,
                     enum cluster_group_kind kind, uint32_t group_id, enum cluster_role role,
                     struct cluster_node_view *out)
{
    static const char *const subdirs[] = {"cell", "directory", "metadata"};
    struct cluster_group_view *g = &out->groups[out->n_groups];
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->group_id = group_id;
    g->role = role;
    fill_member(c, node, kind, role, &g->members[0]);
    memcpy(g->raft_address, g->members[0].raft_address, sizeof g->raft_address);
    size_t n = dir_len(node->data_dir);
    snprintf(g->data_dir, sizeof g->data_dir, "%.*s/%s", (int)n, node->data_dir, subdirs[kind]);
    int rv = cluster_config_group_members(c, kind, group_id, g->members, CLUSTER_GROUP_MAX_MEMBERS,
                                          &g->n_members);
    if (rv == 0) {
        out->n_groups++;
    }
    return rv;
}

int cluster_config_node(const struct cluster_config *c, uint64_t node_id,
                        struct cluster_node_view *out, char *errmsg, size_t len)
{
    memset(out, 0, sizeof *out);
    const struct cluster_node *node = cluster_config_find_node(c, node_id);
    if (node == NULL) {
        snprintf(errmsg, len, "cluster: node %" PRIu64 " is not in nodes", node_id);
        return GS_ENOTFOUND;
    }
    out->node_id = node->id;
    snprintf(out->region, sizeof out->region, "%s", c->regions[node->region]);
    snprintf(out->zone, sizeof out->zone, "%s", node->zone);
    snprintf(out->client_address, sizeof out->client_address, "%s", node->client_address);
    snprintf(out->data_dir, sizeof out->data_dir, "%s", node->data_dir);
    int rv = 0;
    if (node->cell_id != 0) {
        rv = add_group(c, node, CLUSTER_GROUP_CELL, node->cell_id, CLUSTER_ROLE_VOTER, out);
    }
    if (rv == 0 && node->directory != CLUSTER_ROLE_NONE) {
        rv = add_group(c, node, CLUSTER_GROUP_DIRECTORY, 0, node->directory, out);
    }
    if (rv == 0 && node->metadata != CLUSTER_ROLE_NONE) {
        rv = add_group(c, node, CLUSTER_GROUP_METADATA, 0, node->metadata, out);
    }
    if (rv != 0) {
        snprintf(errmsg, len, "cluster: node %" PRIu64 ": inconsistent config (%s)", node_id,
                 gs_strerror(rv));
    }
    return rv;
}
