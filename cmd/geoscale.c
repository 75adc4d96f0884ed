/*
 * geoscale: the command-line client of GeoScale.
 *
 *   geoscale [--nodes ADDR[,ADDR...]] [--timeout MS] [--json] [--pin] COMMAND [ARGS]
 *
 * Every command is one row of the `commands` table below: its name, its
 * flags, its positional arguments and the function that runs it. One parser
 * serves all of them, so every command has the same rules:
 *
 * - Everything the user typed is checked before anything is sent: unknown
 *   flags, missing values, repeated flags, numbers (decimal, full string,
 *   no sign, no overflow) and enumerations. A usage error prints one line
 *   naming the culprit, a hint, and exits 2 without opening a connection.
 * - `--help` anywhere before `--` prints the command's help and exits 0.
 * - A failed operation prints `error: NAME: text` (gs_error_name,
 *   gs_strerror) on stderr and exits 1.
 * - Output is either human text (aligned `key: value` lines, tables) or,
 *   with --json, one JSON document per result on one line, with field names
 *   taken from geoscale.proto so that they never change by accident.
 *
 * Requests go through the blocking client (gs_sync_*), which follows the
 * cell leader and route hints to the user's home cell, and retries
 * retryable failures within --timeout; with --pin, only the first node of
 * --nodes is asked, once, and its answer is printed as it is. The cell
 * commands (`cell status`, `cell digest`) instead ask every node of --nodes
 * over its own pinned connection, because their answer is per node.
 *
 * This is a `cmd/` main: the few file-level statics it keeps are constant
 * tables; the run state lives in a `struct cli` passed explicitly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "engine/numparse.h"
#include "geoscale.pb-c.h"
#include "metadata.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"

/* `geoscale cluster ...` (cmd/cli_cluster.c): argv[0] is "cluster"; json
 * and timeout are the global --json and --timeout (NULL if not given).
 * Returns the exit status. */
int cli_cluster_main(int argc, char **argv, bool json, const char *timeout);

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define DEFAULT_NODES "127.0.0.1:7201"
#define DEFAULT_TIMEOUT_MS 5000
#define MAX_TIMEOUT_MS 3600000u
#define MAX_NODES 64
#define MAX_FLAGS 16
#define MAX_POS 2
#define MAX_LIST_LIMIT 1000 /* ListEdgesRequest.limit: at most 1000 */

/* ------------------------------------------------------------------ model */

/* A flag of a command: `--name VALUE` (metavar != NULL) or `--name`. */
struct flag {
    const char *name; /* without the leading "--" */
    const char *metavar;
    const char *help;
};

struct cli;
struct args;

struct command {
    const char *group; /* "user", "settings", "meta", "cell", or NULL */
    const char *name;
    const char *synopsis; /* what follows the command name in the usage line */
    const char *summary;
    int min_pos, max_pos;
    const char *pos_names[MAX_POS]; /* for "missing USER_ID" */
    const struct flag *flags;       /* terminated by {NULL} */
    int (*run)(struct cli *cli, const struct args *a);
};

/* The parsed command line of one command. */
struct args {
    const struct command *cmd;
    const char *value[MAX_FLAGS]; /* value of cmd->flags[i]; "" for a switch */
    const char *pos[MAX_POS];
    int n_pos;
};

/* Run state: the global options and the client, opened on first use. */
struct cli {
    char *nodes_buf; /* owns the strings seeds[] points into */
    const char *seeds[MAX_NODES];
    size_t n_seeds;
    unsigned timeout_ms;
    bool json;
    bool pin;
    gs_sync *client;
};

/* ------------------------------------------------------------ small helpers */

static void oom(void)
{
    fprintf(stderr, "error: %s: %s\n", gs_error_name(GS_ENOMEM), gs_strerror(GS_ENOMEM));
    exit(EXIT_FAILED);
}

/* Print the failure of an operation and return the exit code for it. */
static int fail(int rv)
{
    fflush(stdout); /* keep what was printed before the error in order */
    fprintf(stderr, "error: %s: %s\n", gs_error_name(rv), gs_strerror(rv));
    return EXIT_FAILED;
}

static void command_label(const struct command *cmd, char *buf, size_t size)
{
    if (cmd == NULL) {
        snprintf(buf, size, "geoscale");
    } else if (cmd->group != NULL) {
        snprintf(buf, size, "geoscale %s %s", cmd->group, cmd->name);
    } else {
        snprintf(buf, size, "geoscale %s", cmd->name);
    }
}

/* Report a usage error of cmd (NULL: of the global options) and return 2. */
static int usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const struct command *cmd, const char *fmt, ...)
{
    char label[64];
    va_list ap;

    command_label(cmd, label, sizeof label);
    fprintf(stderr, "%s: ", label);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", label);
    return EXIT_USAGE;
}

/* A user id: a positive integer (0 names nobody in the protocol). */
static int parse_user_id(const struct command *cmd, const char *what, const char *s, uint64_t *out)
{
    if (gs_parse_u64(s, 1, UINT64_MAX, out) != 0) {
        usage_error(cmd, "%s must be a positive integer, got '%s'", what, s);
        return -1;
    }
    return 0;
}

/* "YYYY-MM-DD" by shape; the node checks that it is a real date. */
static bool is_date_shaped(const char *s)
{
    static const char shape[] = "dddd-dd-dd";

    if (strlen(s) != sizeof shape - 1) {
        return false;
    }
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i]) {
            return false;
        }
    }
    return true;
}

static const char *const visibility_names[] = {
    [GEOSCALE__VISIBILITY__VISIBILITY_UNSPECIFIED] = "unspecified",
    [GEOSCALE__VISIBILITY__VISIBILITY_PUBLIC] = "public",
    [GEOSCALE__VISIBILITY__VISIBILITY_FOLLOWERS] = "followers",
    [GEOSCALE__VISIBILITY__VISIBILITY_PRIVATE] = "private",
};

static const char *const status_names[] = {
    [GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_UNSPECIFIED] = "unspecified",
    [GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_ACTIVE] = "active",
    [GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_SUSPENDED] = "suspended",
    [GEOSCALE__ACCOUNT_STATUS__ACCOUNT_STATUS_DEACTIVATED] = "deactivated",
};

#define N_VISIBILITIES (int)(sizeof visibility_names / sizeof visibility_names[0])
#define N_STATUSES (int)(sizeof status_names / sizeof status_names[0])

/* Name of an enum value from a node; an unknown one (a newer node) is shown
 * by number, in buf. */
static const char *enum_name(const char *const *names, int n, int v, char *buf, size_t size)
{
    if (v >= 0 && v < n) {
        return names[v];
    }
    snprintf(buf, size, "unknown(%d)", v);
    return buf;
}

/* Parse one of names[1..n-1] (0, "unspecified", is never a valid choice). */
static int parse_enum(const struct command *cmd, const char *flag, const char *s,
                      const char *const *names, int n, int *out)
{
    for (int i = 1; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char choices[128] = "";
    for (int i = 1; i < n; i++) {
        size_t used = strlen(choices);
        snprintf(choices + used, sizeof choices - used, "%s%s", i > 1 ? "|" : "", names[i]);
    }
    usage_error(cmd, "--%s must be one of %s, got '%s'", flag, choices, s);
    return -1;
}

/* ------------------------------------------------------------- arguments */

/* Indexes into global_flags (and the values parsed for them). */
enum { GLOBAL_NODES, GLOBAL_TIMEOUT, GLOBAL_JSON, GLOBAL_PIN, GLOBAL_HELP, N_GLOBAL };

static const struct flag global_flags[N_GLOBAL + 1] = {
    {"nodes", "ADDR[,ADDR...]",
     "nodes to talk to (default: $GEOSCALE_NODES, else " DEFAULT_NODES ")"},
    {"timeout", "MS", "per-command deadline in milliseconds, retries included (default 5000)"},
    {"json", NULL, "print results as JSON, one document per line"},
    {"pin", NULL,
     "ask only the first node of --nodes, once: no leader or route following, no retry"},
    {"help", NULL, "show help and exit"},
    {NULL, NULL, NULL},
};

static int flag_index(const struct flag *flags, const char *name, size_t name_len)
{
    for (int i = 0; flags[i].name != NULL; i++) {
        if (strlen(flags[i].name) == name_len && strncmp(flags[i].name, name, name_len) == 0) {
            return i;
        }
    }
    return -1;
}

/* The value of flag `name` of the parsed command, or NULL if not given. */
static const char *arg(const struct args *a, const char *name)
{
    int i = flag_index(a->cmd->flags, name, strlen(name));
    if (i < 0) {
        /* A typo in this file's command table, not a user error. */
        fprintf(stderr, "geoscale: internal error: no flag --%s\n", name);
        abort();
    }
    return a->value[i];
}

static void print_flags(FILE *f, const struct flag *flags)
{
    for (int i = 0; flags[i].name != NULL; i++) {
        char left[64];
        if (flags[i].metavar != NULL) {
            snprintf(left, sizeof left, "--%s %s", flags[i].name, flags[i].metavar);
        } else {
            snprintf(left, sizeof left, "--%s", flags[i].name);
        }
        if (strlen(left) > 30) {
            fprintf(f, "  %s\n  %-30s %s\n", left, "", flags[i].help);
        } else {
            fprintf(f, "  %-30s %s\n", left, flags[i].help);
        }
    }
}

static void print_command_help(const struct command *cmd)
{
    char label[64];

    command_label(cmd, label, sizeof label);
    printf("Usage: %s%s%s\n\n%s\n", label, cmd->synopsis[0] != '\0' ? " " : "", cmd->synopsis,
           cmd->summary);
    if (cmd->flags[0].name != NULL) {
        printf("\nOptions:\n");
        print_flags(stdout, cmd->flags);
    }
    printf("\nGlobal options (see 'geoscale --help'): --nodes, --timeout, --json, --pin.\n");
}

/*
 * Parse argv[0..argc) as the arguments of cmd into *a. Global options are
 * accepted here too (they are documented before the command; after it they
 * are a convenience) and applied to *g_values. Returns 0, 1 when help was
 * printed, or 2 after printing a usage error.
 */
static int parse_command_args(const struct command *cmd, int argc, char **argv, struct args *a,
                              const char *g_values[])
{
    bool options_done = false;

    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            break;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_command_help(cmd);
            return 1;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!options_done && strcmp(s, "--") == 0) {
            options_done = true;
            continue;
        }
        /* "-5" is a (bad) number, not an option: let its parser name it. */
        if (options_done || s[0] != '-' || s[1] == '\0' || (s[1] >= '0' && s[1] <= '9')) {
            if (a->n_pos >= cmd->max_pos) {
                return usage_error(cmd, "unexpected argument '%s'", s);
            }
            a->pos[a->n_pos++] = s;
            continue;
        }
        if (s[1] != '-') {
            return usage_error(cmd, "unknown option '%s'", s);
        }
        const char *name = s + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct flag *flags = cmd->flags;
        const char **values = a->value;
        int k = flag_index(flags, name, name_len);
        if (k < 0) {
            flags = global_flags;
            values = g_values;
            k = flag_index(flags, name, name_len);
        }
        if (k < 0) {
            return usage_error(cmd, "unknown option '--%.*s'", (int)name_len, name);
        }
        if (values[k] != NULL) {
            return usage_error(cmd, "option --%s given twice", flags[k].name);
        }
        if (flags[k].metavar == NULL) {
            if (eq != NULL) {
                return usage_error(cmd, "option --%s takes no value", flags[k].name);
            }
            values[k] = "";
        } else if (eq != NULL) {
            values[k] = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            values[k] = argv[++i];
        } else {
            return usage_error(cmd, "option --%s needs a value (%s)", flags[k].name,
                               flags[k].metavar);
        }
    }
    if (a->n_pos < cmd->min_pos) {
        return usage_error(cmd, "missing %s", cmd->pos_names[a->n_pos]);
    }
    return 0;
}

/* ------------------------------------------------------------------ client */

/* Split "a:1,b:2" into cli->seeds, checking each is HOST:PORT; source
 * ("--nodes", "GEOSCALE_NODES") names where the list came from. */
static int set_nodes(struct cli *cli, const char *source, const char *nodes)
{
    free(cli->nodes_buf);
    cli->n_seeds = 0;
    cli->nodes_buf = strdup(nodes);
    if (cli->nodes_buf == NULL) {
        oom();
    }
    char *save = NULL;
    for (char *tok = strtok_r(cli->nodes_buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        uint64_t port;
        if (colon == NULL || colon == tok || gs_parse_u64(colon + 1, 1, 65535, &port) != 0) {
            return usage_error(NULL, "%s: '%s' is not HOST:PORT", source, tok);
        }
        if (cli->n_seeds == MAX_NODES) {
            return usage_error(NULL, "%s: more than %d addresses", source, MAX_NODES);
        }
        /* The client library decides which hosts it can take (IP literals
         * today); opening a client connects nothing, so ask it. */
        gs_sync *probe = NULL;
        int rv = gs_sync_open((const char *const *)&tok, 1, NULL, &probe);
        gs_sync_close(probe);
        if (rv == GS_EINVAL) {
            return usage_error(NULL, "%s: '%s' is not an address the client can use (IP:PORT)",
                               source, tok);
        }
        if (rv != 0) {
            return fail(rv);
        }
        cli->seeds[cli->n_seeds++] = tok;
    }
    if (cli->n_seeds == 0) {
        return usage_error(NULL, "%s: no address given", source);
    }
    return 0;
}

static int cli_call(struct cli *cli, uint16_t method, const ProtobufCMessage *req,
                    ProtobufCMessage **resp)
{
    int rv;

    *resp = NULL;
    if (cli->client == NULL) {
        struct gs_client_options opts = {
            .timeout_ms = cli->timeout_ms, .pin = cli->pin, .no_retry = cli->pin};
        rv = gs_sync_open(cli->seeds, cli->n_seeds, &opts, &cli->client);
        if (rv != 0) {
            return rv;
        }
    }
    return gs_sync_call(cli->client, method, req, resp, NULL);
}

/* One call to exactly one node, never forwarded to another one. */
static int pinned_call(const struct cli *cli, const char *address, uint16_t method,
                       const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    struct gs_client_options opts = {.timeout_ms = cli->timeout_ms, .pin = 1, .no_retry = 1};
    gs_sync *s = NULL;
    int rv;

    *resp = NULL;
    rv = gs_sync_open(&address, 1, &opts, &s);
    if (rv == 0) {
        rv = gs_sync_call(s, method, req, resp, NULL);
    }
    gs_sync_close(s);
    return rv;
}

/* ------------------------------------------------------------------ output */

static json_t *jcheck(json_t *v)
{
    if (v == NULL) {
        oom();
    }
    return v;
}

static void jset(json_t *obj, const char *key, json_t *v)
{
    if (json_object_set_new(obj, key, jcheck(v)) != 0) {
        oom();
    }
}

static void jappend(json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, jcheck(v)) != 0) {
        oom();
    }
}

/* A uint64 as a JSON integer; one beyond int64 (never a real id or count)
 * as a decimal string rather than a wrong number. */
static json_t *ju64(uint64_t v)
{
    if (v <= INT64_MAX) {
        return json_integer((json_int_t)v);
    }
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return json_string(buf);
}

/* A string from a node as JSON; bytes that are not UTF-8 become '?' (JSON
 * cannot carry them and the node should not have stored them). */
static json_t *jstr(const char *s)
{
    json_t *v = json_string(s);
    if (v != NULL) {
        return v;
    }
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (copy == NULL) {
        oom();
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t len = 0; /* of the sequence p[i] starts; 0: not a lead byte */
        if (p[i] < 0x80) {
            len = 1;
        } else if ((p[i] & 0xe0) == 0xc0) {
            len = 2;
        } else if ((p[i] & 0xf0) == 0xe0) {
            len = 3;
        } else if ((p[i] & 0xf8) == 0xf0) {
            len = 4;
        }
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (p[i + k] & 0xc0) == 0x80;
        }
        if (ok && len > 1) {
            memcpy(copy + i, s + i, len);
            i += len;
        } else {
            copy[i] = ok ? s[i] : '?';
            i++;
        }
    }
    copy[n] = '\0';
    v = json_string(copy);
    free(copy);
    return v != NULL ? v : json_string("?");
}

static void emit_json(json_t *v)
{
    if (json_dumpf(v, stdout, JSON_COMPACT) != 0) {
        oom();
    }
    putchar('\n');
    json_decref(v);
}

/* Human output of a value from a node: control characters escaped so that
 * stored text cannot drive the terminal. */
static void print_text(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            printf("\\x%02x", *p);
        } else {
            putchar(*p);
        }
    }
}

/* Width of the key column of `key: value` output: the longest key of a
 * profile ("display_name:") or of settings ("display_name_visibility:"), plus
 * a space. */
#define PROFILE_KEY_WIDTH 14
#define SETTINGS_KEY_WIDTH 25

/* keycol ("key:") padded to width, then the value (none if empty). */
static void print_key(int width, const char *keycol, const char *value)
{
    if (value == NULL || value[0] == '\0') {
        printf("%s\n", keycol);
        return;
    }
    printf("%-*s ", width - 1, keycol);
    print_text(value);
    putchar('\n');
}

static void print_key_str(int width, const char *key, const char *v)
{
    char keycol[32];
    snprintf(keycol, sizeof keycol, "%s:", key);
    print_key(width, keycol, v);
}

static void print_key_u64(int width, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    print_key_str(width, key, buf);
}

static void format_time_ms(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, size, "%" PRId64, ms);
        return;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", date, (int)(ms % 1000));
}

static bool is_hidden(char *const *hidden, size_t n_hidden, const char *field)
{
    for (size_t i = 0; i < n_hidden; i++) {
        if (strcmp(hidden[i], field) == 0) {
            return true;
        }
    }
    return false;
}

/* The profile's string fields, in output order, by their proto names. */
#define PROFILE_TEXT_FIELDS(X)                                                                     \
    X(display_name)                                                                                \
    X(email) X(phone) X(birth_date) X(bio) X(avatar_url)

/* Print a profile; hidden names the fields withheld from the viewer. */
static void print_profile(const struct cli *cli, const Geoscale__Profile *p, char *const *hidden,
                          size_t n_hidden)
{
    char buf[64];
    const char *status = enum_name(status_names, N_STATUSES, p->status, buf, sizeof buf);

    if (cli->json) {
        json_t *o = jcheck(json_object());
        jset(o, "user_id", ju64(p->user_id));
        jset(o, "username", jstr(p->username));
#define X(f) jset(o, #f, is_hidden(hidden, n_hidden, #f) ? json_null() : jstr(p->f));
        PROFILE_TEXT_FIELDS(X)
#undef X
        jset(o, "status", jstr(status));
        jset(o, "plan", is_hidden(hidden, n_hidden, "plan") ? json_null() : jstr(p->plan));
        jset(o, "created_at_ms",
             is_hidden(hidden, n_hidden, "created_at_ms")
                 ? json_null()
                 : json_integer((json_int_t)p->created_at_ms));
        jset(o, "version", is_hidden(hidden, n_hidden, "version") ? json_null() : ju64(p->version));
        jset(o, "follower_count", ju64(p->follower_count));
        jset(o, "following_count", ju64(p->following_count));
        json_t *h = jcheck(json_array());
        for (size_t i = 0; i < n_hidden; i++) {
            jappend(h, jstr(hidden[i]));
        }
        jset(o, "hidden_fields", h);
        emit_json(o);
        return;
    }
    print_key_u64(PROFILE_KEY_WIDTH, "user_id", p->user_id);
    print_key_str(PROFILE_KEY_WIDTH, "username", p->username);
#define X(f)                                                                                       \
    print_key_str(PROFILE_KEY_WIDTH, #f, is_hidden(hidden, n_hidden, #f) ? "(hidden)" : p->f);
    PROFILE_TEXT_FIELDS(X)
#undef X
    print_key_str(PROFILE_KEY_WIDTH, "status", status);
    print_key_str(PROFILE_KEY_WIDTH, "plan",
                  is_hidden(hidden, n_hidden, "plan") ? "(hidden)" : p->plan);
    if (is_hidden(hidden, n_hidden, "created_at_ms")) {
        print_key_str(PROFILE_KEY_WIDTH, "created_at", "(hidden)");
    } else {
        char when[64];
        format_time_ms(p->created_at_ms, when, sizeof when);
        print_key_str(PROFILE_KEY_WIDTH, "created_at", when);
    }
    if (is_hidden(hidden, n_hidden, "version")) {
        print_key_str(PROFILE_KEY_WIDTH, "version", "(hidden)");
    } else {
        print_key_u64(PROFILE_KEY_WIDTH, "version", p->version);
    }
    print_key_u64(PROFILE_KEY_WIDTH, "followers", p->follower_count);
    print_key_u64(PROFILE_KEY_WIDTH, "following", p->following_count);
}

/* The seven visibilities of Settings, by proto name, with their flags. */
#define SETTINGS_FIELDS(X)                                                                         \
    X(profile_visibility, "profile", "who sees the profile at all")                                \
    X(display_name_visibility, "display-name-visibility", "who sees the display name")             \
    X(email_visibility, "email-visibility", "who sees the email address")                          \
    X(phone_visibility, "phone-visibility", "who sees the phone number")                           \
    X(birth_date_visibility, "birth-date-visibility", "who sees the birth date")                   \
    X(bio_visibility, "bio-visibility", "who sees the biography")                                  \
    X(avatar_url_visibility, "avatar-url-visibility", "who sees the avatar URL")

static void print_settings(const struct cli *cli, uint64_t user_id, const Geoscale__Settings *s)
{
    char buf[32];

    if (cli->json) {
        json_t *o = jcheck(json_object());
        jset(o, "user_id", ju64(user_id));
#define X(f, flag, help)                                                                           \
    jset(o, #f, jstr(enum_name(visibility_names, N_VISIBILITIES, s->f, buf, sizeof buf)));
        SETTINGS_FIELDS(X)
#undef X
        emit_json(o);
        return;
    }
    print_key_u64(SETTINGS_KEY_WIDTH, "user_id", user_id);
#define X(f, flag, help)                                                                           \
    print_key_str(SETTINGS_KEY_WIDTH, #f,                                                          \
                  enum_name(visibility_names, N_VISIBILITIES, s->f, buf, sizeof buf));
    SETTINGS_FIELDS(X)
#undef X
}

/* ----------------------------------------------------------------- users */

static const struct flag user_create_flags[] = {
    {"username", "U", "unique handle, 1-64 of [a-z0-9_.] (required)"},
    {"display-name", "S", "display name"},
    {"email", "S", "email address"},
    {"phone", "S", "phone number"},
    {"birth-date", "YYYY-MM-DD", "birth date"},
    {"bio", "S", "biography"},
    {"avatar-url", "S", "avatar URL"},
    {"plan", "S", "plan name"},
    {NULL, NULL, NULL},
};

static int run_user_create(struct cli *cli, const struct args *a)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    Geoscale__CreateUserResponse *resp = NULL;
    const char *v;
    int rv;

    v = arg(a, "username");
    if (v == NULL) {
        return usage_error(a->cmd, "missing --username");
    }
    if (v[0] == '\0') {
        return usage_error(a->cmd, "--username must not be empty");
    }
    req.username = (char *)v;
    if ((v = arg(a, "display-name")) != NULL) {
        req.display_name = (char *)v;
    }
    if ((v = arg(a, "email")) != NULL) {
        req.email = (char *)v;
    }
    if ((v = arg(a, "phone")) != NULL) {
        req.phone = (char *)v;
    }
    if ((v = arg(a, "birth-date")) != NULL) {
        if (v[0] != '\0' && !is_date_shaped(v)) {
            return usage_error(a->cmd, "--birth-date must be YYYY-MM-DD, got '%s'", v);
        }
        req.birth_date = (char *)v;
    }
    if ((v = arg(a, "bio")) != NULL) {
        req.bio = (char *)v;
    }
    if ((v = arg(a, "avatar-url")) != NULL) {
        req.avatar_url = (char *)v;
    }
    if ((v = arg(a, "plan")) != NULL) {
        req.plan = (char *)v;
    }

    rv = cli_call(cli, GEOSCALE__METHOD__METHOD_CREATE_USER, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (resp->profile != NULL) {
        print_profile(cli, resp->profile, NULL, 0);
    } else {
        Geoscale__Profile p = GEOSCALE__PROFILE__INIT;
        p.user_id = resp->user_id;
        p.username = req.username;
        print_profile(cli, &p, NULL, 0);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static const struct flag user_get_flags[] = {
    {"username", "U", "look the user up by username instead of USER_ID"},
    {"viewer", "USER_ID", "read as this user (privacy applies); default: anonymous"},
    {NULL, NULL, NULL},
};

static int run_user_get(struct cli *cli, const struct args *a)
{
    Geoscale__GetUserRequest req = GEOSCALE__GET_USER_REQUEST__INIT;
    Geoscale__GetUserResponse *resp = NULL;
    const char *username = arg(a, "username");
    const char *viewer = arg(a, "viewer");
    int rv;

    if (a->n_pos == 1 && username != NULL) {
        return usage_error(a->cmd, "give USER_ID or --username, not both");
    }
    if (a->n_pos == 0 && username == NULL) {
        return usage_error(a->cmd, "missing USER_ID (or --username U)");
    }
    if (a->n_pos == 1 && parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
    if (username != NULL) {
        if (username[0] == '\0') {
            return usage_error(a->cmd, "--username must not be empty");
        }
        req.username = (char *)username;
    }
    if (viewer != NULL && parse_user_id(a->cmd, "--viewer", viewer, &req.viewer_id) != 0) {
        return EXIT_USAGE;
    }

    rv = cli_call(cli, GEOSCALE__METHOD__METHOD_GET_USER, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (resp->profile == NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return fail(GS_EPROTO);
    }
    print_profile(cli, resp->profile, resp->hidden_fields, resp->n_hidden_fields);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static const struct flag user_update_flags[] = {
    {"expected-version", "V", "apply only if the profile is at version V (0: always)"},
    {"display-name", "S", "set the display name (\"\" clears it)"},
    {"email", "S", "set the email address"},
    {"phone", "S", "set the phone number"},
    {"birth-date", "YYYY-MM-DD", "set the birth date"},
    {"bio", "S", "set the biography"},
    {"avatar-url", "S", "set the avatar URL"},
    {"status", "active|suspended|deactivated", "set the account status"},
    {"plan", "S", "set the plan"},
    {NULL, NULL, NULL},
};

static int run_user_update(struct cli *cli, const struct args *a)
{
    Geoscale__UpdateUserRequest req = GEOSCALE__UPDATE_USER_REQUEST__INIT;
    Geoscale__UpdateUserResponse *resp = NULL;
    Geoscale__ProfileField mask[8];
    const char *v;
    int rv;

    if (parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
    if ((v = arg(a, "expected-version")) != NULL &&
        gs_parse_u64(v, 0, UINT64_MAX, &req.expected_version) != 0) {
        return usage_error(a->cmd, "--expected-version must be a non-negative integer, got '%s'",
                           v);
    }
    req.fields = mask;
#define TEXT(flag, field, id)                                                                      \
    if ((v = arg(a, flag)) != NULL) {                                                              \
        req.field = (char *)v;                                                                     \
        mask[req.n_fields++] = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_##id;                        \
    }
    TEXT("display-name", display_name, DISPLAY_NAME)
    TEXT("email", email, EMAIL)
    TEXT("phone", phone, PHONE)
    TEXT("birth-date", birth_date, BIRTH_DATE)
    TEXT("bio", bio, BIO)
    TEXT("avatar-url", avatar_url, AVATAR_URL)
    TEXT("plan", plan, PLAN)
#undef TEXT
    if (req.birth_date[0] != '\0' && !is_date_shaped(req.birth_date)) {
        return usage_error(a->cmd, "--birth-date must be YYYY-MM-DD, got '%s'", req.birth_date);
    }
    if ((v = arg(a, "status")) != NULL) {
        int status;
        if (parse_enum(a->cmd, "status", v, status_names, N_STATUSES, &status) != 0) {
            return EXIT_USAGE;
        }
        req.status = (Geoscale__AccountStatus)status;
        mask[req.n_fields++] = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_STATUS;
    }
    if (req.n_fields == 0) {
        return usage_error(a->cmd, "nothing to update: give at least one field flag");
    }

    rv = cli_call(cli, GEOSCALE__METHOD__METHOD_UPDATE_USER, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (resp->profile == NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return fail(GS_EPROTO);
    }
    print_profile(cli, resp->profile, NULL, 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

/* ----------------------------------------------------------------- edges */

static const struct flag no_flags[] = {{NULL, NULL, NULL}};

struct edge_action {
    const char *name;
    uint16_t method;
    const char *changed;   /* what happened */
    const char *unchanged; /* why nothing happened */
};

static const struct edge_action edge_actions[] = {
    {"follow", GEOSCALE__METHOD__METHOD_FOLLOW, "now follows", "already followed"},
    {"unfollow", GEOSCALE__METHOD__METHOD_UNFOLLOW, "no longer follows", "did not follow"},
    {"block", GEOSCALE__METHOD__METHOD_BLOCK, "now blocks", "already blocked"},
    {"unblock", GEOSCALE__METHOD__METHOD_UNBLOCK, "no longer blocks", "did not block"},
};

static int run_edge(struct cli *cli, const struct args *a)
{
    Geoscale__EdgeRequest req = GEOSCALE__EDGE_REQUEST__INIT;
    Geoscale__EdgeResponse *resp = NULL;
    const struct edge_action *act = NULL;
    int rv;

    for (size_t i = 0; i < sizeof edge_actions / sizeof edge_actions[0]; i++) {
        if (strcmp(edge_actions[i].name, a->cmd->name) == 0) {
            act = &edge_actions[i];
        }
    }
    if (act == NULL) {
        fprintf(stderr, "geoscale: internal error: no edge action %s\n", a->cmd->name);
        abort();
    }
    if (parse_user_id(a->cmd, "ACTOR_ID", a->pos[0], &req.actor_id) != 0 ||
        parse_user_id(a->cmd, "TARGET_ID", a->pos[1], &req.target_id) != 0) {
        return EXIT_USAGE;
    }

    rv = cli_call(cli, act->method, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (cli->json) {
        json_t *o = jcheck(json_object());
        jset(o, "action", jstr(act->name));
        jset(o, "actor_id", ju64(req.actor_id));
        jset(o, "target_id", ju64(req.target_id));
        jset(o, "changed", json_boolean(resp->changed));
        emit_json(o);
    } else if (resp->changed) {
        printf("%s: %" PRIu64 " %s %" PRIu64 "\n", act->name, req.actor_id, act->changed,
               req.target_id);
    } else {
        printf("%s: unchanged, %" PRIu64 " %s %" PRIu64 "\n", act->name, req.actor_id,
               act->unchanged, req.target_id);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static const struct flag list_flags[] = {
    {"limit", "N", "page size, 1-1000 (default: the node's, 100)"},
    {"cursor", "C", "start after this cursor (next_cursor of a previous page)"},
    {"all", NULL, "fetch every page"},
    {NULL, NULL, NULL},
};

static int run_list(struct cli *cli, const struct args *a)
{
    Geoscale__ListEdgesRequest req = GEOSCALE__LIST_EDGES_REQUEST__INIT;
    uint16_t method = strcmp(a->cmd->name, "followers") == 0
                          ? GEOSCALE__METHOD__METHOD_LIST_FOLLOWERS
                          : GEOSCALE__METHOD__METHOD_LIST_FOLLOWING;
    bool all = arg(a, "all") != NULL;
    uint64_t *ids = NULL, total = 0, next = 0;
    size_t n_ids = 0, cap = 0;
    const char *v;
    int rv, code = EXIT_OK;

    if (parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
    if ((v = arg(a, "limit")) != NULL) {
        uint64_t limit;
        if (gs_parse_u64(v, 1, MAX_LIST_LIMIT, &limit) != 0) {
            return usage_error(a->cmd, "--limit must be an integer from 1 to %d, got '%s'",
                               MAX_LIST_LIMIT, v);
        }
        req.limit = (uint32_t)limit;
    }
    if ((v = arg(a, "cursor")) != NULL && gs_parse_u64(v, 0, UINT64_MAX, &req.cursor) != 0) {
        return usage_error(a->cmd, "--cursor must be a non-negative integer, got '%s'", v);
    }

    for (;;) {
        Geoscale__ListEdgesResponse *resp = NULL;
        rv = cli_call(cli, method, &req.base, (ProtobufCMessage **)&resp);
        if (rv != 0) {
            code = fail(rv);
            goto out;
        }
        if (n_ids + resp->n_user_ids > cap) {
            size_t ncap = cap * 2 > n_ids + resp->n_user_ids ? cap * 2 : n_ids + resp->n_user_ids;
            uint64_t *grown = realloc(ids, ncap * sizeof *ids);
            if (grown == NULL) {
                oom();
            }
            ids = grown;
            cap = ncap;
        }
        if (resp->n_user_ids > 0) {
            memcpy(ids + n_ids, resp->user_ids, resp->n_user_ids * sizeof *ids);
        }
        n_ids += resp->n_user_ids;
        total = resp->total;
        next = resp->next_cursor;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (!all || next == 0) {
            break;
        }
        if (next == req.cursor) {
            /* A cursor that does not move would loop forever. */
            fprintf(stderr, "error: %s: %s (cursor did not advance)\n", gs_error_name(GS_EPROTO),
                    gs_strerror(GS_EPROTO));
            code = EXIT_FAILED;
            goto out;
        }
        req.cursor = next;
    }

    if (cli->json) {
        json_t *o = jcheck(json_object());
        json_t *arr = jcheck(json_array());
        jset(o, "user_id", ju64(req.user_id));
        jset(o, "relation", jstr(a->cmd->name));
        jset(o, "total", ju64(total));
        for (size_t i = 0; i < n_ids; i++) {
            jappend(arr, ju64(ids[i]));
        }
        jset(o, "user_ids", arr);
        jset(o, "next_cursor", ju64(next));
        emit_json(o);
    } else {
        printf("%s of %" PRIu64 ": %zu shown, %" PRIu64 " in total\n", a->cmd->name, req.user_id,
               n_ids, total);
        for (size_t i = 0; i < n_ids; i++) {
            printf("  %" PRIu64 "\n", ids[i]);
        }
        if (next != 0) {
            printf("more: --cursor %" PRIu64 "\n", next);
        }
    }
out:
    free(ids);
    return code;
}

/* -------------------------------------------------------------- settings */

static int run_settings_get(struct cli *cli, const struct args *a)
{
    Geoscale__GetSettingsRequest req = GEOSCALE__GET_SETTINGS_REQUEST__INIT;
    Geoscale__GetSettingsResponse *resp = NULL;
    int rv;

    if (parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
    rv =
        cli_call(cli, GEOSCALE__METHOD__METHOD_GET_SETTINGS, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (resp->settings == NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return fail(GS_EPROTO);
    }
    print_settings(cli, req.user_id, resp->settings);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static const struct flag settings_set_flags[] = {
#define X(f, flag, help) {flag, "VIS", help},
    SETTINGS_FIELDS(X)
#undef X
        {NULL, NULL, NULL},
};

static int run_settings_set(struct cli *cli, const struct args *a)
{
    Geoscale__SetSettingsRequest req = GEOSCALE__SET_SETTINGS_REQUEST__INIT;
    Geoscale__SetSettingsResponse *resp = NULL;
    Geoscale__Settings settings = GEOSCALE__SETTINGS__INIT;
    bool any = false;
    const char *v;
    int rv;

    if (parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
#define X(f, flag, help)                                                                           \
    if ((v = arg(a, flag)) != NULL) {                                                              \
        int vis;                                                                                   \
        if (parse_enum(a->cmd, flag, v, visibility_names, N_VISIBILITIES, &vis) != 0) {            \
            return EXIT_USAGE;                                                                     \
        }                                                                                          \
        settings.f = (Geoscale__Visibility)vis;                                                    \
        any = true;                                                                                \
    }
    SETTINGS_FIELDS(X)
#undef X
    if (!any) {
        return usage_error(a->cmd, "nothing to set: give at least one visibility flag");
    }
    req.settings = &settings;

    rv =
        cli_call(cli, GEOSCALE__METHOD__METHOD_SET_SETTINGS, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    if (resp->settings == NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return fail(GS_EPROTO);
    }
    print_settings(cli, req.user_id, resp->settings);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

/* ------------------------------------------------------------------ cell */

/* "-" for an unknown node id (0), else the number. */
static const char *id_or_dash(uint64_t id, char *buf, size_t size)
{
    if (id == 0) {
        return "-";
    }
    snprintf(buf, size, "%" PRIu64, id);
    return buf;
}

/* How a node that gave no answer is shown: "unreachable" when it could not
 * be talked to, "failed" when it answered with an error. */
static const char *node_failure_state(int rv)
{
    switch (rv) {
    case GS_ECONNECT:
    case GS_ECLOSED:
    case GS_ETIMEOUT:
    case GS_ESHUTDOWN:
        return "unreachable";
    default:
        return "failed";
    }
}

static int run_cell_status(struct cli *cli, const struct args *a)
{
    Geoscale__CellStatusRequest req = GEOSCALE__CELL_STATUS_REQUEST__INIT;
    json_t *arr = NULL;
    size_t answered = 0;
    int last_error = 0;
    (void)a;

    if (cli->json) {
        arr = jcheck(json_array());
    } else {
        printf("%-6s %-22s %-12s %-6s %-6s %-8s %-8s %s\n", "NODE", "ADDRESS", "STATE", "LEADER",
               "TERM", "COMMIT", "APPLIED", "LAST_LOG");
    }
    for (size_t i = 0; i < cli->n_seeds; i++) {
        Geoscale__CellStatusResponse *st = NULL;
        int rv = pinned_call(cli, cli->seeds[i], GEOSCALE__METHOD__METHOD_CELL_STATUS, &req.base,
                             (ProtobufCMessage **)&st);
        if (cli->json) {
            json_t *o = jcheck(json_object());
            jset(o, "address", jstr(cli->seeds[i]));
            if (rv != 0) {
                jset(o, "state", jstr(node_failure_state(rv)));
                jset(o, "error", jstr(gs_error_name(rv)));
            } else {
                jset(o, "node_id", ju64(st->node_id));
                jset(o, "region", jstr(st->region));
                jset(o, "cell_id", json_integer(st->cell_id));
                jset(o, "state", jstr(st->state));
                jset(o, "leader_id", ju64(st->leader_id));
                jset(o, "term", ju64(st->term));
                jset(o, "commit_index", ju64(st->commit_index));
                jset(o, "applied_index", ju64(st->applied_index));
                jset(o, "last_log_index", ju64(st->last_log_index));
                jset(o, "read_checks", ju64(st->read_checks));
                jset(o, "read_barriers", ju64(st->read_barriers));
                json_t *members = jcheck(json_array());
                for (size_t m = 0; m < st->n_members; m++) {
                    const Geoscale__Member *mb = st->members[m];
                    json_t *mo = jcheck(json_object());
                    jset(mo, "node_id", ju64(mb->node_id));
                    jset(mo, "raft_address", jstr(mb->raft_address));
                    jset(mo, "client_address", jstr(mb->client_address));
                    jset(mo, "role", jstr(mb->role));
                    jappend(members, mo);
                }
                jset(o, "members", members);
            }
            jappend(arr, o);
        } else if (rv != 0) {
            printf("%-6s %-22s %-12s %-6s %-6s %-8s %-8s %-8s (%s)\n", "-", cli->seeds[i],
                   node_failure_state(rv), "-", "-", "-", "-", "-", gs_error_name(rv));
        } else {
            char node[24], leader[24];
            printf("%-6s %-22s %-12s %-6s %-6" PRIu64 " %-8" PRIu64 " %-8" PRIu64 " %" PRIu64 "\n",
                   id_or_dash(st->node_id, node, sizeof node), cli->seeds[i], st->state,
                   id_or_dash(st->leader_id, leader, sizeof leader), st->term, st->commit_index,
                   st->applied_index, st->last_log_index);
        }
        if (rv == 0) {
            answered++;
            protobuf_c_message_free_unpacked(&st->base, NULL);
        } else {
            last_error = rv;
        }
    }
    if (cli->json) {
        emit_json(arr);
    }
    if (answered == 0) {
        fflush(stdout);
        fprintf(stderr, "error: %s: %s (no node answered)\n", gs_error_name(last_error),
                gs_strerror(last_error));
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int run_cell_digest(struct cli *cli, const struct args *a)
{
    Geoscale__StateDigestRequest req = GEOSCALE__STATE_DIGEST_REQUEST__INIT;
    Geoscale__StateDigestResponse *first = NULL;
    json_t *arr = NULL;
    size_t answered = 0;
    int last_error = 0;
    bool agree = true;
    (void)a;

    if (cli->json) {
        arr = jcheck(json_array());
    } else {
        printf("%-6s %-22s %-10s %-10s %s\n", "NODE", "ADDRESS", "APPLIED", "KEYS", "DIGEST");
    }
    for (size_t i = 0; i < cli->n_seeds; i++) {
        Geoscale__StateDigestResponse *d = NULL;
        int rv = pinned_call(cli, cli->seeds[i], GEOSCALE__METHOD__METHOD_STATE_DIGEST, &req.base,
                             (ProtobufCMessage **)&d);
        char *digest = NULL;
        if (rv != 0) {
            last_error = rv;
        } else {
            digest = malloc(2 * d->digest.len + 1);
            if (digest == NULL) {
                oom();
            }
            hex(d->digest.data, d->digest.len, digest);
            answered++;
            if (first == NULL) {
                first = d;
            } else if (first->digest.len != d->digest.len ||
                       (d->digest.len > 0 &&
                        memcmp(first->digest.data, d->digest.data, d->digest.len) != 0)) {
                agree = false;
            }
        }
        if (cli->json) {
            json_t *o = jcheck(json_object());
            jset(o, "address", jstr(cli->seeds[i]));
            if (rv != 0) {
                jset(o, "state", jstr(node_failure_state(rv)));
                jset(o, "error", jstr(gs_error_name(rv)));
            } else {
                jset(o, "node_id", ju64(d->node_id));
                jset(o, "applied_index", ju64(d->applied_index));
                jset(o, "keys", ju64(d->keys));
                jset(o, "digest", jstr(digest));
            }
            jappend(arr, o);
        } else if (rv != 0) {
            printf("%-6s %-22s %s (%s)\n", "-", cli->seeds[i], node_failure_state(rv),
                   gs_error_name(rv));
        } else {
            char node[24];
            printf("%-6s %-22s %-10" PRIu64 " %-10" PRIu64 " %s\n",
                   id_or_dash(d->node_id, node, sizeof node), cli->seeds[i], d->applied_index,
                   d->keys, digest);
        }
        free(digest);
        if (d != NULL && d != first) {
            protobuf_c_message_free_unpacked(&d->base, NULL);
        }
    }
    if (first != NULL) {
        protobuf_c_message_free_unpacked(&first->base, NULL);
    }
    if (cli->json) {
        emit_json(arr);
    } else if (answered > 0) {
        printf("digests: %s\n", agree ? "agree" : "DIFFER");
    }
    if (answered < cli->n_seeds) {
        fflush(stdout);
        fprintf(stderr, "error: %s: %s (%zu of %zu nodes did not answer)\n",
                gs_error_name(last_error), gs_strerror(last_error), cli->n_seeds - answered,
                cli->n_seeds);
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------- the table */

/* ----------------------------------------------------------------- metadata */

static int run_meta_get(struct cli *cli, const struct args *a)
{
    Geoscale__MetadataGetRequest req = GEOSCALE__METADATA_GET_REQUEST__INIT;
    Geoscale__MetadataGetResponse *resp = NULL;
    char buf[32];

    if (parse_user_id(a->cmd, "USER_ID", a->pos[0], &req.user_id) != 0) {
        return EXIT_USAGE;
    }
    int rv =
        cli_call(cli, GEOSCALE__METHOD__METHOD_METADATA_GET, &req.base, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(rv);
    }
    const Geoscale__UserMetadata *m = resp->meta;
    if (m == NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return fail(GS_EPROTO);
    }
    const char *status = enum_name(status_names, N_STATUSES, m->status, buf, sizeof buf);
    if (cli->json) {
        json_t *o = jcheck(json_object());
        jset(o, "user_id", ju64(m->user_id));
        jset(o, "home_region", jstr(m->home_region));
        jset(o, "cell_id", ju64(m->cell_id));
        jset(o, "status", jstr(status));
        jset(o, "plan", jstr(m->plan));
        jset(o, "created_at_ms", ju64((uint64_t)m->created_at_ms));
        jset(o, "profile_version", ju64(m->profile_version));
        jset(o, "follower_count", ju64(m->follower_count));
        jset(o, "following_count", ju64(m->following_count));
        jset(o, "replica_applied_index", ju64(resp->applied_index));
        emit_json(o);
    } else {
        const int w = 16;
        print_key_u64(w, "user_id", m->user_id);
        print_key_str(w, "home_region", m->home_region);
        print_key_u64(w, "cell_id", m->cell_id);
        print_key_str(w, "status", status);
        print_key_str(w, "plan", m->plan);
        print_key_u64(w, "created_at_ms", (uint64_t)m->created_at_ms);
        print_key_u64(w, "profile_version", m->profile_version);
        print_key_u64(w, "followers", m->follower_count);
        print_key_u64(w, "following", m->following_count);
        print_key_u64(w, "replica_applied", resp->applied_index);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return EXIT_OK;
}

static const struct command commands[] = {
    {"user",
     "create",
     "--username U [OPTIONS]",
     "Create a user and print its profile.",
     0,
     0,
     {NULL},
     user_create_flags,
     run_user_create},
    {"user",
     "get",
     "(USER_ID | --username U) [--viewer USER_ID]",
     "Read a profile as seen by the viewer (anonymous by default): fields the viewer may not\n"
     "see are shown as (hidden).",
     0,
     1,
     {"USER_ID"},
     user_get_flags,
     run_user_get},
    {"user",
     "update",
     "USER_ID [--expected-version V] FIELD-OPTIONS...",
     "Change the profile fields given (and only those) and print the new profile.",
     1,
     1,
     {"USER_ID"},
     user_update_flags,
     run_user_update},
    {NULL,
     "follow",
     "ACTOR_ID TARGET_ID",
     "ACTOR_ID follows TARGET_ID.",
     2,
     2,
     {"ACTOR_ID", "TARGET_ID"},
     no_flags,
     run_edge},
    {NULL,
     "unfollow",
     "ACTOR_ID TARGET_ID",
     "ACTOR_ID stops following TARGET_ID.",
     2,
     2,
     {"ACTOR_ID", "TARGET_ID"},
     no_flags,
     run_edge},
    {NULL,
     "block",
     "ACTOR_ID TARGET_ID",
     "ACTOR_ID blocks TARGET_ID (which also ends follows between them).",
     2,
     2,
     {"ACTOR_ID", "TARGET_ID"},
     no_flags,
     run_edge},
    {NULL,
     "unblock",
     "ACTOR_ID TARGET_ID",
     "ACTOR_ID unblocks TARGET_ID.",
     2,
     2,
     {"ACTOR_ID", "TARGET_ID"},
     no_flags,
     run_edge},
    {NULL,
     "followers",
     "USER_ID [--limit N] [--cursor C] [--all]",
     "List the users who follow USER_ID, one page (or every page with --all).",
     1,
     1,
     {"USER_ID"},
     list_flags,
     run_list},
    {NULL,
     "following",
     "USER_ID [--limit N] [--cursor C] [--all]",
     "List the users USER_ID follows, one page (or every page with --all).",
     1,
     1,
     {"USER_ID"},
     list_flags,
     run_list},
    {"settings",
     "get",
     "USER_ID",
     "Print a user's privacy settings.",
     1,
     1,
     {"USER_ID"},
     no_flags,
     run_settings_get},
    {"settings",
     "set",
     "USER_ID VISIBILITY-OPTIONS...",
     "Change the privacy settings given (others keep their value) and print them all.\n"
     "VIS is public, followers (the owner and the users who follow the owner) or\n"
     "private (the owner only).",
     1,
     1,
     {"USER_ID"},
     settings_set_flags,
     run_settings_set},
    {"meta",
     "get",
     "USER_ID",
     "Print a user's non-PII metadata (home region, cell, status, plan, counts) as\n"
     "the first node of --nodes reads it from its region's metadata replica: no\n"
     "round trip to the metadata leader, so it may lag it by the replication delay.",
     1,
     1,
     {"USER_ID"},
     no_flags,
     run_meta_get},
    {"cell",
     "status",
     "",
     "Ask every node of --nodes, each over its own connection, for its Raft state.\n"
     "Nodes that do not answer are shown as unreachable. Exit 1 if none answers.",
     0,
     0,
     {NULL},
     no_flags,
     run_cell_status},
    {"cell",
     "digest",
     "",
     "Ask every node of --nodes for its state digest (applied index, key count,\n"
     "BLAKE2b-256 of the replicated state); the last line says whether the digests\n"
     "agree. Exit 1 if a node does not answer.",
     0,
     0,
     {NULL},
     no_flags,
     run_cell_digest},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_main_help(FILE *f)
{
    fprintf(f, "Usage: geoscale [GLOBAL OPTIONS] COMMAND [ARGS]\n\n"
               "The command-line client of GeoScale.\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char left[96];
        const struct command *c = &commands[i];
        snprintf(left, sizeof left, "%s%s%s%s%s", c->group != NULL ? c->group : "",
                 c->group != NULL ? " " : "", c->name, c->synopsis[0] != '\0' ? " " : "",
                 c->synopsis);
        fprintf(f, "  %s\n", left);
    }
    fprintf(f, "  cluster up|status|down|add-cell [OPTIONS]   (see 'geoscale cluster --help')\n");
    fprintf(f, "\nGlobal options (before the command):\n");
    print_flags(f, global_flags);
    fprintf(f, "\nEvery command has --help. Exit status: 0 ok, 1 the operation failed,\n"
               "2 bad usage (nothing was sent).\n");
}

static void print_group_help(const char *group)
{
    printf("Usage: geoscale %s COMMAND [ARGS]\n\nCommands:\n", group);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (commands[i].group != NULL && strcmp(commands[i].group, group) == 0) {
            printf("  %s %s%s%s\n", group, commands[i].name,
                   commands[i].synopsis[0] != '\0' ? " " : "", commands[i].synopsis);
        }
    }
    printf("\nSee 'geoscale %s COMMAND --help'.\n", group);
}

static bool is_group(const char *s)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (commands[i].group != NULL && strcmp(commands[i].group, s) == 0) {
            return true;
        }
    }
    return false;
}

static const struct command *find_command(const char *group, const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct command *c = &commands[i];
        if ((group == NULL) != (c->group == NULL)) {
            continue;
        }
        if ((group == NULL || strcmp(c->group, group) == 0) && strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

/* --------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct cli cli = {.timeout_ms = DEFAULT_TIMEOUT_MS};
    const char *g_values[N_GLOBAL] = {NULL};
    const struct command *cmd;
    struct args a;
    int i = 1, rv;

    /* Global options, up to the first word that is not one. */
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *name = argv[i] + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int k;
        if (name_len == 0) {
            i++;
            break;
        }
        k = flag_index(global_flags, name, name_len);
        if (k < 0) {
            return usage_error(NULL, "unknown option '--%.*s'", (int)name_len, name);
        }
        if (g_values[k] != NULL) {
            return usage_error(NULL, "option --%s given twice", global_flags[k].name);
        }
        if (global_flags[k].metavar == NULL) {
            if (eq != NULL) {
                return usage_error(NULL, "option --%s takes no value", global_flags[k].name);
            }
            g_values[k] = "";
        } else if (eq != NULL) {
            g_values[k] = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            g_values[k] = argv[++i];
        } else {
            return usage_error(NULL, "option --%s needs a value (%s)", global_flags[k].name,
                               global_flags[k].metavar);
        }
    }
    if (g_values[GLOBAL_HELP] != NULL) {
        print_main_help(stdout);
        return EXIT_OK;
    }
    if (i >= argc) {
        print_main_help(stderr);
        return EXIT_USAGE;
    }
    if (argv[i][0] == '-') {
        return usage_error(NULL, "unknown option '%s'", argv[i]);
    }
    /* `geoscale cluster ...` runs local clusters: cmd/cli_cluster.c. */
    if (strcmp(argv[i], "cluster") == 0) {
        if (g_values[GLOBAL_NODES] != NULL || g_values[GLOBAL_PIN] != NULL) {
            return usage_error(NULL,
                               "--%s does not apply to 'cluster' (it reads "
                               "DIR/cluster.json)",
                               g_values[GLOBAL_NODES] != NULL ? "nodes" : "pin");
        }
        return cli_cluster_main(argc - i, argv + i, g_values[GLOBAL_JSON] != NULL,
                                g_values[GLOBAL_TIMEOUT]);
    }

    /* The command: "GROUP NAME" or "NAME". */
    if (is_group(argv[i])) {
        const char *group = argv[i++];
        if (i >= argc) {
            fprintf(stderr, "geoscale %s: missing command\n\n", group);
            print_group_help(group);
            return EXIT_USAGE;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_group_help(group);
            return EXIT_OK;
        }
        cmd = find_command(group, argv[i]);
        if (cmd == NULL) {
            return usage_error(NULL, "unknown command '%s %s'", group, argv[i]);
        }
    } else {
        cmd = find_command(NULL, argv[i]);
        if (cmd == NULL) {
            return usage_error(NULL, "unknown command '%s'", argv[i]);
        }
    }
    i++;

    rv = parse_command_args(cmd, argc - i, argv + i, &a, g_values);
    if (rv == 1) {
        return ferror(stdout) ? EXIT_FAILED : EXIT_OK;
    }
    if (rv != 0) {
        return rv;
    }

    /* Global options, now that all are known. */
    const char *nodes = g_values[GLOBAL_NODES];
    const char *source = "--nodes";
    if (nodes == NULL) {
        nodes = getenv("GEOSCALE_NODES");
        source = "GEOSCALE_NODES";
        if (nodes == NULL || nodes[0] == '\0') {
            nodes = DEFAULT_NODES;
        }
    }
    rv = set_nodes(&cli, source, nodes);
    if (rv != 0) {
        goto out;
    }
    if (g_values[GLOBAL_TIMEOUT] != NULL) {
        uint64_t ms;
        if (gs_parse_u64(g_values[GLOBAL_TIMEOUT], 1, MAX_TIMEOUT_MS, &ms) != 0) {
            rv = usage_error(NULL, "--timeout must be an integer from 1 to %u (ms), got '%s'",
                             MAX_TIMEOUT_MS, g_values[GLOBAL_TIMEOUT]);
            goto out;
        }
        cli.timeout_ms = (unsigned)ms;
    }
    cli.json = g_values[GLOBAL_JSON] != NULL;
    cli.pin = g_values[GLOBAL_PIN] != NULL;

    rv = cmd->run(&cli, &a);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: cannot write the output: %s\n", strerror(errno));
        rv = EXIT_FAILED;
    }
out:
    gs_sync_close(cli.client);
    free(cli.nodes_buf);
    return rv;
}
