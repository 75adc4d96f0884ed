/*
 * Pieces shared by the two config loaders, net/config.c (one node of a lone
 * cell) and net/cluster_config.c (the cluster file): the error sink, typed
 * field readers that know a field's full name, and the sub-objects both files
 * have (raft, limits, rocksdb, log_level, username_hash_key). Internal: only
 * those two files include it.
 *
 * Every reader returns 0 or GS_EINVAL after writing one line to the parser's
 * errmsg: "<what>: <field>: <problem>", where what is "config" or "cluster".
 */
#ifndef GS_NET_CONFIG_COMMON_H
#define GS_NET_CONFIG_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"

#define CONFIG_FIELD_MAX 96 /* a field's full name, "nodes[12].cell_raft_address" */

/* The error sink of one parse. */
struct config_parser {
    const char *what; /* "config", "cluster": the first word of every message */
    char *errmsg;
    size_t len;
};

int config_fail(struct config_parser *p, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "object", "integer", ... for messages. */
const char *config_type_name(const json_t *v);

/* Full name of key inside the object named prefix ("" = top level). */
void config_field_name(char *out, size_t len, const char *prefix, const char *key);

/* Every key of obj must be in allowed (NULL-terminated). */
int config_check_keys(struct config_parser *p, json_t *obj, const char *prefix,
                      const char *const *allowed);

/* An integer field in [min, max]. *present (may be NULL) tells whether the
 * key was there; a missing required key is an error. */
int config_read_uint(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                     bool required, uint64_t min, uint64_t max, uint64_t *out, bool *present);

/* A string field into out (cap bytes, NUL included). A missing optional
 * string leaves out unchanged; a required one must not be empty. */
int config_read_string(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                       bool required, char *out, size_t cap);

/* A required "host:port" field whose host is an IP literal or localhost. */
int config_read_address(struct config_parser *p, json_t *obj, const char *prefix, const char *key,
                        char out[CONFIG_ADDRESS_MAX]);

/* The required top-level username_hash_key: 32..128 hex digits. */
int config_read_hash_key(struct config_parser *p, json_t *root, uint8_t key[CONFIG_KEY_MAX],
                         size_t *key_len);

/* The optional top-level sub-objects; absent ones leave *out unchanged. */
int config_read_raft(struct config_parser *p, json_t *root, struct config_raft *out);
int config_read_limits(struct config_parser *p, json_t *root, struct config_limits *out);
int config_read_rocksdb(struct config_parser *p, json_t *root, bool *compression);
int config_read_log_level(struct config_parser *p, json_t *root, int *log_level);

/* The defaults of the shared sub-objects (as config_defaults() sets them). */
void config_shared_defaults(struct config_raft *raft, struct config_limits *limits,
                            bool *compression, int *log_level);

/*
 * Read the file at path (at most 1 MiB, no NUL byte) into a NUL-terminated
 * buffer that the caller frees with free(). Returns 0, GS_EINVAL or
 * GS_ENOMEM with one line "<what>: <path>: <problem>" in errmsg.
 */
int config_read_file(const char *what, const char *path, char **text, char *errmsg, size_t len);

#endif /* GS_NET_CONFIG_COMMON_H */
