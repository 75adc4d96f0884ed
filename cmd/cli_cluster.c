/*
 * geoscale cluster up|down|status|add-cell: run a multi-region GeoScale
 * cluster on this machine (docs/CLUSTER.md, "Local clusters").
 *
 * A local cluster lives in one directory DIR:
 *
 *   DIR/cluster.json   the cluster file every node starts from (mode 0600:
 *                      it holds the username hash key)
 *   DIR/nodeN/         node N's data_dir
 *   DIR/nodeN.log      node N's stdout and stderr
 *   DIR/nodeN.pid      node N's process id, written when it is started
 *   DIR/cluster.lock   flock()ed while up or add-cell changes DIR
 *
 * Nodes run as `geoscaled --cluster DIR/cluster.json --node N`, detached
 * (their own session), so they outlive the command that started them. A pid
 * file is trusted only if /proc/PID/cmdline is a geoscaled naming this
 * DIR's cluster.json: a recycled pid is never signalled.
 *
 * Ports: node N uses the block of four ports BASE+4(N-1) .. BASE+4(N-1)+3
 * for its client address, cell, directory and metadata raft addresses (the
 * last two only when it hosts those groups). Every port of the block is
 * checked free (a listening socket on 127.0.0.1 fails our bind) before any
 * node starts.
 *
 * Readiness comes from NodeStatus (METHOD_NODE_STATUS), asked of each node
 * over its own pinned connection: a group has a leader when one of its
 * members reports itself as the group's leader.
 *
 * Like the rest of the CLI: every flag is checked before anything happens,
 * bad usage exits 2 with no side effect, a failed operation exits 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "engine/mono.h"
#include "engine/numparse.h"
#include "geoscale.pb-c.h"
#include "geoscale/client.h"
#include "geoscale/errors.h"
#include "net/cluster_config.h"
#include "raft/defaults.h"

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define DEFAULT_DIR "./geoscale-cluster"
#define DEFAULT_BASE_PORT 7100
#define PORTS_PER_NODE 4
#define DEFAULT_WAIT_S 60
#define DEFAULT_DOWN_WAIT_S 10
#define DEFAULT_STATUS_TIMEOUT_MS 2000
#define POLL_TIMEOUT_MS 500 /* one NodeStatus call while waiting for leaders */
#define MAX_FLAGS 8

int cli_cluster_main(int argc, char **argv, bool json, const char *timeout);

/* ------------------------------------------------------------------ flags */

struct cflag {
    const char *name;    /* without "--" */
    const char *metavar; /* NULL: a switch */
    const char *help;
};

struct subcommand {
    const char *name;
    const char *synopsis;
    const char *help; /* the description printed by --help */
    const struct cflag *flags;
    int (*run)(const struct subcommand *sc, const char *const *values, bool json,
               unsigned timeout_ms);
};

static int usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *sub, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "geoscale cluster%s%s: ", sub != NULL ? " " : "", sub != NULL ? sub : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'geoscale cluster%s%s --help'.\n", sub != NULL ? " " : "",
            sub != NULL ? sub : "");
    return EXIT_USAGE;
}

/* An operation failed: one line on stderr, exit status 1. */
static int failed(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failed(const char *sub, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "geoscale cluster %s: ", sub);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILED;
}

static void oom(void)
{
    fprintf(stderr, "error: %s: %s\n", gs_error_name(GS_ENOMEM), gs_strerror(GS_ENOMEM));
    exit(EXIT_FAILED);
}

static int flag_index(const struct cflag *flags, const char *name, size_t len)
{
    for (int i = 0; flags[i].name != NULL; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) {
            return i;
        }
    }
    return -1;
}

static const char *value_of(const struct subcommand *sc, const char *const *values,
                            const char *name)
{
    int i = flag_index(sc->flags, name, strlen(name));
    if (i < 0) {
        fprintf(stderr, "geoscale: internal error: no flag --%s\n", name);
        abort();
    }
    return values[i];
}

static void print_help(const struct subcommand *sc)
{
    printf("Usage: geoscale cluster %s %s\n\n%s\n\nOptions:\n", sc->name, sc->synopsis, sc->help);
    for (int i = 0; sc->flags[i].name != NULL; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", sc->flags[i].name,
                 sc->flags[i].metavar != NULL ? " " : "",
                 sc->flags[i].metavar != NULL ? sc->flags[i].metavar : "");
        printf("  %-26s %s\n", left, sc->flags[i].help);
    }
    printf("\nExit status: 0 ok, 1 the operation failed, 2 bad usage (nothing was done).\n");
}

/* Parse argv as flags of sc into values[]. Returns 0, 1 after help, or 2. */
static int parse_flags(const struct subcommand *sc, int argc, char **argv, const char **values)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(sc);
            return 1;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strncmp(s, "--", 2) != 0 || s[2] == '\0') {
            return usage_error(sc->name, "unexpected argument '%s'", s);
        }
        const char *name = s + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int k = flag_index(sc->flags, name, len);
        if (k < 0) {
            return usage_error(sc->name, "unknown option '--%.*s'", (int)len, name);
        }
        if (values[k] != NULL) {
            return usage_error(sc->name, "option --%s given twice", sc->flags[k].name);
        }
        if (sc->flags[k].metavar == NULL) {
            if (eq != NULL) {
                return usage_error(sc->name, "option --%s takes no value", sc->flags[k].name);
            }
            values[k] = "";
        } else if (eq != NULL) {
            values[k] = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            values[k] = argv[++i];
        } else {
            return usage_error(sc->name, "option --%s needs a value (%s)", sc->flags[k].name,
                               sc->flags[k].metavar);
        }
    }
    return 0;
}

static int number_flag(const struct subcommand *sc, const char *const *values, const char *name,
                       uint64_t min, uint64_t max, uint64_t dflt, uint64_t *out)
{
    const char *v = value_of(sc, values, name);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (gs_parse_u64(v, min, max, out) != 0) {
        return usage_error(sc->name,
                           "--%s must be an integer from %" PRIu64 " to %" PRIu64 ", got '%s'",
                           name, min, max, v);
    }
    return 0;
}

/* ------------------------------------------------------------------ paths */

struct cluster_dir {
    char dir[PATH_MAX];       /* absolute */
    char file[PATH_MAX + 16]; /* dir/cluster.json */
};

/* Resolve DIR (which must exist unless create) into *d. Returns 0 or -1 with
 * a message in err. */
static int dir_resolve(const char *dir, bool create, struct cluster_dir *d, char *err, size_t len)
{
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, len, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (realpath(dir, d->dir) == NULL) {
        snprintf(err, len, "%s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(d->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, len, "%s is not a directory", d->dir);
        return -1;
    }
    /* Paths go into the JSON file and into argv; keep them printable and
     * short enough for data_dir plus its subdirectories. */
    for (const char *p = d->dir; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, len, "the directory path contains a control character");
            return -1;
        }
    }
    if (strlen(d->dir) + 32 > CLUSTER_DATA_DIR_MAX) {
        snprintf(err, len, "the directory path is longer than %d bytes", CLUSTER_DATA_DIR_MAX - 32);
        return -1;
    }
    snprintf(d->file, sizeof d->file, "%s/cluster.json", d->dir);
    return 0;
}

static void node_path(const struct cluster_dir *d, uint64_t id, const char *suffix, char *out,
                      size_t len)
{
    snprintf(out, len, "%s/node%" PRIu64 "%s", d->dir, id, suffix);
}

/* Take DIR/cluster.lock for the life of the process. Returns the fd or -1. */
static int dir_lock(const struct cluster_dir *d, char *err, size_t len)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/cluster.lock", d->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, len, "another 'geoscale cluster' command is changing %s", d->dir);
        close(fd);
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------- processes */

/* The pid in DIR/nodeN.pid, or 0. */
static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1 || pid > INT_MAX) {
        pid = 0;
    }
    fclose(f);
    return (pid_t)pid;
}

/* Is pid alive and not a zombie? */
static bool pid_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the name may contain blanks */
    return paren != NULL && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* Is pid a geoscaled started with --cluster file (this cluster's)? */
static bool pid_is_our_node(pid_t pid, const char *file)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n == 0) {
        return false;
    }
    const char *argv0 = buf;
    const char *slash = strrchr(argv0, '/');
    if (strcmp(slash != NULL ? slash + 1 : argv0, "geoscaled") != 0) {
        return false;
    }
    /* Arguments are NUL-separated: look for "--cluster" then file. */
    for (size_t i = strlen(buf) + 1; i < n;) {
        const char *a = buf + i;
        size_t alen = strlen(a);
        if (strcmp(a, "--cluster") == 0 && i + alen + 1 < n && strcmp(a + alen + 1, file) == 0) {
            return true;
        }
        i += alen + 1;
    }
    return false;
}

/* The running node of pid file path, or 0. */
static pid_t running_node(const struct cluster_dir *d, const char *pid_path)
{
    pid_t pid = read_pid(pid_path);
    if (pid > 0 && pid_alive(pid) && pid_is_our_node(pid, d->file)) {
        return pid;
    }
    return 0;
}

/* Node ids of DIR's pid files (ascending), at most cap. */
static size_t pid_files(const struct cluster_dir *d, uint64_t *ids, size_t cap)
{
    DIR *dir = opendir(d->dir);
    size_t n = 0;
    if (dir == NULL) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && n < cap) {
        uint64_t id;
        char num[32];
        size_t len = strlen(e->d_name);
        if (len < 9 || strncmp(e->d_name, "node", 4) != 0 ||
            strcmp(e->d_name + len - 4, ".pid") != 0 || len - 8 >= sizeof num) {
            continue;
        }
        memcpy(num, e->d_name + 4, len - 8);
        num[len - 8] = '\0';
        if (gs_parse_u64(num, 1, UINT32_MAX, &id) == 0) {
            ids[n++] = id;
        }
    }
    closedir(dir);
    for (size_t i = 1; i < n; i++) { /* insertion sort: few files */
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint64_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    }
    return n;
}

/* The first running node of DIR: its id, or 0 (and its pid). */
static uint64_t any_running(const struct cluster_dir *d, pid_t *pid)
{
    uint64_t ids[CLUSTER_MAX_NODES];
    size_t n = pid_files(d, ids, CLUSTER_MAX_NODES);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];
        node_path(d, ids[i], ".pid", path, sizeof path);
        if ((*pid = running_node(d, path)) != 0) {
            return ids[i];
        }
    }
    return 0;
}

/* The geoscaled to run: --geoscaled, else next to this program, else PATH.
 * Returns 0 with an absolute path, or -1 with a message. */
static int find_geoscaled(const char *given, char *out, size_t len, char *err, size_t elen)
{
    char self[PATH_MAX];
    if (given != NULL) {
        if (realpath(given, out) == NULL || access(out, X_OK) != 0) {
            snprintf(err, elen, "--geoscaled %s: not an executable file", given);
            return -1;
        }
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            snprintf(slash + 1, sizeof self - (size_t)(slash + 1 - self), "geoscaled");
            if (access(self, X_OK) == 0 && strlen(self) < len) {
                snprintf(out, len, "%s", self);
                return 0;
            }
        }
    }
    const char *path = getenv("PATH");
    if (path != NULL) {
        char *copy = strdup(path), *save = NULL;
        if (copy == NULL) {
            oom();
        }
        for (char *dir = strtok_r(copy, ":", &save); dir != NULL;
             dir = strtok_r(NULL, ":", &save)) {
            char cand[PATH_MAX];
            snprintf(cand, sizeof cand, "%s/geoscaled", dir);
            if (dir[0] == '/' && access(cand, X_OK) == 0 && realpath(cand, out) != NULL) {
                free(copy);
                return 0;
            }
        }
        free(copy);
    }
    snprintf(err, elen,
             "geoscaled not found (not next to this geoscale, not in PATH); give --geoscaled PATH");
    return -1;
}

/* Is TCP port free on 127.0.0.1? SO_REUSEADDR as the node's listeners use,
 * so that only a live listener or bound socket counts as taken. */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/*
 * Start node id: `geoscaled --cluster FILE --node ID` in its own session,
 * output appended to DIR/nodeID.log, pid written to DIR/nodeID.pid. Returns
 * the pid, or -1 with a message in err (exec failures are reported here,
 * through a close-on-exec pipe).
 */
static pid_t start_node(const struct cluster_dir *d, const char *geoscaled, uint64_t id, char *err,
                        size_t len)
{
    char log_path[PATH_MAX + 32], pid_path[PATH_MAX + 32], id_arg[24];
    node_path(d, id, ".log", log_path, sizeof log_path);
    node_path(d, id, ".pid", pid_path, sizeof pid_path);
    snprintf(id_arg, sizeof id_arg, "%" PRIu64, id);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, len, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, len, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        int e = 0;
        setsid();
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) {
            e = errno;
        } else {
            char *const argv[] = {"geoscaled", "--cluster", (char *)d->file,
                                  "--node",    id_arg,      NULL};
            execv(geoscaled, argv);
            e = errno;
        }
        ssize_t w = write(pipefd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(pipefd[1]);
    int child_errno = 0;
    ssize_t r;
    while ((r = read(pipefd[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
    }
    close(pipefd[0]);
    if (r > 0) {
        waitpid(pid, NULL, 0);
        snprintf(err, len, "cannot run %s: %s", geoscaled, strerror(child_errno));
        return -1;
    }
    FILE *f = fopen(pid_path, "w");
    if (f == NULL || fprintf(f, "%ld\n", (long)pid) < 0 || fclose(f) != 0) {
        snprintf(err, len, "cannot write %s; node %" PRIu64 " runs as pid %ld", pid_path, id,
                 (long)pid);
        return -1;
    }
    return pid;
}

/* Print the last lines of a node's log on stderr. */
static void print_log_tail(const struct cluster_dir *d, uint64_t id)
{
    char path[PATH_MAX + 32];
    node_path(d, id, ".log", path, sizeof path);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    static char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *start = buf;
    int lines = 0;
    for (size_t i = n; i > 0; i--) {
        if (buf[i - 1] == '\n' && i != n && ++lines == 10) {
            start = buf + i;
            break;
        }
    }
    fprintf(stderr, "---- last lines of %s\n%s%s", path, start,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
}

/* ------------------------------------------------------------ NodeStatus */

static int node_status(const char *address, unsigned timeout_ms, Geoscale__NodeStatusResponse **out)
{
    Geoscale__NodeStatusRequest req = GEOSCALE__NODE_STATUS_REQUEST__INIT;
    struct gs_client_options opts = {.timeout_ms = timeout_ms, .pin = 1, .no_retry = 1};
    gs_sync *s = NULL;
    *out = NULL;
    int rv = gs_sync_open(&address, 1, &opts, &s);
    if (rv == 0) {
        rv = gs_sync_call(s, GEOSCALE__METHOD__METHOD_NODE_STATUS, &req.base,
                          (ProtobufCMessage **)out, NULL);
    }
    gs_sync_close(s);
    return rv;
}

static const Geoscale__GroupStatus *find_group(const Geoscale__NodeStatusResponse *st,
                                               enum cluster_group_kind kind, uint32_t group_id)
{
    if (st == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < st->n_groups; i++) {
        const Geoscale__GroupStatus *g = st->groups[i];
        if (strcmp(g->kind, cluster_group_kind_name(kind)) == 0 &&
            (kind != CLUSTER_GROUP_CELL || g->group_id == group_id)) {
            return g;
        }
    }
    return NULL;
}

/* The statuses of every node of c (file order), NULL for those that did not
 * answer (errors[i] says why). */
struct snapshot {
    Geoscale__NodeStatusResponse **status;
    int *errors;
    size_t n;
};

static void snapshot_take(const struct cluster_config *c, unsigned timeout_ms, struct snapshot *s)
{
    s->n = c->n_nodes;
    s->status = calloc(c->n_nodes, sizeof *s->status);
    s->errors = calloc(c->n_nodes, sizeof *s->errors);
    if (s->status == NULL || s->errors == NULL) {
        oom();
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        s->errors[i] = node_status(c->nodes[i].client_address, timeout_ms, &s->status[i]);
        if (s->errors[i] == 0 && s->status[i]->node_id != c->nodes[i].id) {
            /* Another process answers on that address. */
            protobuf_c_message_free_unpacked(&s->status[i]->base, NULL);
            s->status[i] = NULL;
            s->errors[i] = GS_EPROTO;
        }
    }
}

static void snapshot_free(struct snapshot *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->status[i] != NULL) {
            protobuf_c_message_free_unpacked(&s->status[i]->base, NULL);
        }
    }
    free(s->status);
    free(s->errors);
    memset(s, 0, sizeof *s);
}

static const Geoscale__NodeStatusResponse *snapshot_of(const struct cluster_config *c,
                                                       const struct snapshot *s, uint64_t id)
{
    const struct cluster_node *node = cluster_config_find_node(c, id);
    return node == NULL ? NULL : s->status[node - c->nodes];
}

/* A group of the file, for iteration: kind, id. */
struct group_ref {
    enum cluster_group_kind kind;
    uint32_t id;
};

/* Every group of c: cells in file order, then directory and metadata. */
static size_t all_groups(const struct cluster_config *c, struct group_ref *out)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_cells; i++) {
        out[n++] = (struct group_ref){CLUSTER_GROUP_CELL, c->cells[i].id};
    }
    out[n++] = (struct group_ref){CLUSTER_GROUP_DIRECTORY, 0};
    out[n++] = (struct group_ref){CLUSTER_GROUP_METADATA, 0};
    return n;
}

/* The member of group g that reports itself as its leader, or 0. */
static uint64_t group_leader(const struct cluster_config *c, const struct snapshot *s,
                             struct group_ref g, uint64_t *leader_applied)
{
    struct cluster_member m[CLUSTER_GROUP_MAX_MEMBERS];
    size_t n = 0;
    if (cluster_config_group_members(c, g.kind, g.id, m, CLUSTER_GROUP_MAX_MEMBERS, &n) != 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const Geoscale__GroupStatus *gs = find_group(snapshot_of(c, s, m[i].id), g.kind, g.id);
        if (gs != NULL && strcmp(gs->state, "leader") == 0) {
            *leader_applied = gs->applied_index;
            return m[i].id;
        }
    }
    return 0;
}

static void group_label(struct group_ref g, char *buf, size_t len)
{
    if (g.kind == CLUSTER_GROUP_CELL) {
        snprintf(buf, len, "cell %" PRIu32, g.id);
    } else {
        snprintf(buf, len, "%s", cluster_group_kind_name(g.kind));
    }
}

/*
 * Wait until every group in groups[0..n) has a leader, at most wait_s
 * seconds, with a progress line on stderr every 2 s. pids[i] (0: unknown)
 * are the processes of c->nodes[i] that this command started: one that
 * exits ends the wait. Returns 0 or EXIT_FAILED.
 */
static int wait_leaders(const char *sub, const struct cluster_dir *d,
                        const struct cluster_config *c, const struct group_ref *groups, size_t n,
                        const pid_t *pids, unsigned wait_s)
{
    double t0 = gs_mono_s(), last_report = t0;
    size_t led = 0;
    for (;;) {
        for (size_t i = 0; i < c->n_nodes; i++) {
            int status;
            if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
                print_log_tail(d, c->nodes[i].id);
                if (WIFEXITED(status)) {
                    return failed(sub,
                                  "node %" PRIu64 " exited with status %d (log: %s/node%" PRIu64
                                  ".log); 'geoscale cluster down --dir %s' stops the nodes "
                                  "that still run",
                                  c->nodes[i].id, WEXITSTATUS(status), d->dir, c->nodes[i].id,
                                  d->dir);
                }
                return failed(sub,
                              "node %" PRIu64 " was killed by signal %d; 'geoscale cluster "
                              "down --dir %s' stops the nodes that still run",
                              c->nodes[i].id, WTERMSIG(status), d->dir);
            }
        }
        struct snapshot s;
        snapshot_take(c, POLL_TIMEOUT_MS, &s);
        char missing[256] = "";
        led = 0;
        for (size_t g = 0; g < n; g++) {
            uint64_t applied = 0;
            if (group_leader(c, &s, groups[g], &applied) != 0) {
                led++;
            } else {
                size_t used = strlen(missing);
                char label[32];
                group_label(groups[g], label, sizeof label);
                if (used + strlen(label) + 8 < sizeof missing) {
                    snprintf(missing + used, sizeof missing - used, "%s%s", used > 0 ? ", " : "",
                             label);
                } else if (used + 5 < sizeof missing && missing[used - 1] != '.') {
                    snprintf(missing + used, sizeof missing - used, ", ...");
                }
            }
        }
        snapshot_free(&s);
        double t = gs_mono_s();
        if (led == n) {
            fprintf(stderr, "geoscale cluster %s: %s %zu group%s %s a leader (%.1f s)\n", sub,
                    n > 1 ? "all" : "the", n, n > 1 ? "s" : "", n > 1 ? "have" : "has", t - t0);
            return 0;
        }
        if (t - t0 >= wait_s) {
            return failed(sub,
                          "%zu of %zu groups have no leader after %u s (%s); the nodes are "
                          "left running: see 'geoscale cluster status --dir %s' and the "
                          "logs in %s",
                          n - led, n, wait_s, missing, d->dir, d->dir);
        }
        if (t - last_report >= 2.0) {
            fprintf(stderr,
                    "geoscale cluster %s: %zu of %zu groups have a leader (%.0f s); "
                    "waiting for %s\n",
                    sub, led, n, t - t0, missing);
            last_report = t;
        }
        gs_sleep_ms(200);
    }
}

/* ------------------------------------------------------------ cluster file */

static json_t *jcheck(json_t *v)
{
    if (v == NULL) {
        oom();
    }
    return v;
}

static void jset(json_t *o, const char *key, json_t *v)
{
    if (json_object_set_new(o, key, jcheck(v)) != 0) {
        oom();
    }
}

static void jappend(json_t *a, json_t *v)
{
    if (json_array_append_new(a, jcheck(v)) != 0) {
        oom();
    }
}

static json_t *jaddress(int port)
{
    char buf[32];
    snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
    return json_string(buf);
}

/* A node object of a local cluster, its addresses from its port block:
 * client, cell raft, and the directory and metadata raft addresses if it
 * hosts those groups. */
static json_t *local_node(const struct cluster_dir *d, uint64_t id, const char *region,
                          const char *zone, int block, bool directory, bool metadata)
{
    char dir[PATH_MAX + 32];
    node_path(d, id, "", dir, sizeof dir);
    json_t *n = jcheck(json_object());
    jset(n, "id", json_integer((json_int_t)id));
    jset(n, "region", json_string(region));
    jset(n, "zone", json_string(zone));
    jset(n, "client_address", jaddress(block));
    jset(n, "cell_raft_address", jaddress(block + 1));
    if (directory) {
        jset(n, "directory_raft_address", jaddress(block + 2));
    }
    if (metadata) {
        jset(n, "metadata_raft_address", jaddress(block + 3));
    }
    jset(n, "data_dir", json_string(dir));
    return n;
}

/* Write root to d->file through a temporary file, checked by the loader
 * first: a file we write is always one the nodes accept. */
static int write_cluster_file(const char *sub, const struct cluster_dir *d, json_t *root)
{
    char tmp[PATH_MAX + 32], err[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", d->file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return failed(sub, "cannot write %s: %s", tmp, strerror(errno));
    }
    int rv = json_dumpfd(root, fd, JSON_INDENT(2));
    if (rv == 0 && (write(fd, "\n", 1) != 1 || fsync(fd) != 0)) {
        rv = -1;
    }
    if (close(fd) != 0 || rv != 0) {
        unlink(tmp);
        return failed(sub, "cannot write %s: %s", tmp, strerror(errno));
    }
    struct cluster_config check;
    if (cluster_config_load(tmp, &check, err, sizeof err) != 0) {
        unlink(tmp);
        return failed(sub, "internal error: the generated file is invalid: %s", err);
    }
    cluster_config_free(&check);
    if (rename(tmp, d->file) != 0) {
        unlink(tmp);
        return failed(sub, "cannot rename %s: %s", tmp, strerror(errno));
    }
    return 0;
}

static int random_key_hex(char out[65])
{
    uint8_t key[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, key, sizeof key);
    close(fd);
    if (n != (ssize_t)sizeof key) {
        return -1;
    }
    for (size_t i = 0; i < sizeof key; i++) {
        snprintf(out + 2 * i, 3, "%02x", key[i]);
    }
    return 0;
}

/* Start the nodes c->nodes[from..c->n_nodes), then wait for groups. */
static int start_and_wait(const char *sub, const struct cluster_dir *d,
                          const struct cluster_config *c, size_t from, const char *geoscaled,
                          const struct group_ref *groups, size_t n_groups, unsigned wait_s)
{
    pid_t *pids = calloc(c->n_nodes, sizeof *pids);
    if (pids == NULL) {
        oom();
    }
    int rv = 0;
    for (size_t i = from; i < c->n_nodes; i++) {
        char err[PATH_MAX + 128];
        pids[i] = start_node(d, geoscaled, c->nodes[i].id, err, sizeof err);
        if (pids[i] < 0) {
            pids[i] = 0;
            rv = failed(sub, "node %" PRIu64 ": %s%s", c->nodes[i].id, err,
                        i > from ? "; the nodes started so far are left running, stop them "
                                   "with 'geoscale cluster down'"
                                 : "");
            goto out;
        }
        printf("started node %" PRIu64 " (%s, pid %ld, client %s, log %s/node%" PRIu64 ".log)\n",
               c->nodes[i].id, c->regions[c->nodes[i].region], (long)pids[i],
               c->nodes[i].client_address, d->dir, c->nodes[i].id);
    }
    fflush(stdout);
    rv = wait_leaders(sub, d, c, groups, n_groups, pids, wait_s);
out:
    free(pids);
    return rv;
}

/* --------------------------------------------------------------- cluster up */

static bool valid_region_name(const char *s, size_t len)
{
    if (len == 0 || len >= CLUSTER_REGION_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) {
            return false;
        }
    }
    return true;
}

static int run_up(const struct subcommand *sc, const char *const *values, bool json,
                  unsigned timeout_ms)
{
    (void)json;
    (void)timeout_ms;
    const char *regions_arg = value_of(sc, values, "regions");
    const char *dir_arg = value_of(sc, values, "dir");
    char regions[CLUSTER_MAX_REGIONS][CLUSTER_REGION_MAX];
    size_t n_regions = 0;
    uint64_t cells_per_region, base, wait_s;

    /* ---- usage, before anything is touched */
    if (regions_arg == NULL) {
        return usage_error(sc->name, "--regions is required");
    }
    for (const char *p = regions_arg;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (!valid_region_name(p, len)) {
            return usage_error(sc->name,
                               "--regions: '%.*s' is not a region name (1 to %d of a-z, 0-9, -)",
                               (int)len, p, CLUSTER_REGION_MAX - 1);
        }
        if (n_regions == CLUSTER_MAX_REGIONS) {
            return usage_error(sc->name, "--regions: more than %d regions", CLUSTER_MAX_REGIONS);
        }
        memcpy(regions[n_regions], p, len);
        regions[n_regions][len] = '\0';
        for (size_t j = 0; j < n_regions; j++) {
            if (strcmp(regions[j], regions[n_regions]) == 0) {
                return usage_error(sc->name, "--regions: '%s' is given twice", regions[j]);
            }
        }
        n_regions++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    if (n_regions < 3) {
        return usage_error(sc->name,
                           "--regions: at least 3 regions are needed (the directory and "
                           "metadata voters are in 3 different regions), got %zu",
                           n_regions);
    }
    if (value_of(sc, values, "cells-per-region") == NULL) {
        return usage_error(sc->name, "--cells-per-region is required");
    }
    size_t max_cells = CLUSTER_MAX_CELLS / n_regions;
    if (CLUSTER_MAX_NODES / (3 * n_regions) < max_cells) {
        max_cells = CLUSTER_MAX_NODES / (3 * n_regions);
    }
    int rv;
    if ((rv = number_flag(sc, values, "cells-per-region", 1, max_cells, 0, &cells_per_region)) !=
            0 ||
        (rv = number_flag(sc, values, "base-port", 1024, 65535, DEFAULT_BASE_PORT, &base)) != 0 ||
        (rv = number_flag(sc, values, "wait", 1, 3600, DEFAULT_WAIT_S, &wait_s)) != 0) {
        return rv;
    }
    size_t n_nodes = 3 * cells_per_region * n_regions;
    if (base + PORTS_PER_NODE * n_nodes - 1 > 65535) {
        return usage_error(sc->name,
                           "--base-port %" PRIu64 " leaves too few ports for %zu nodes "
                           "(%d each): at most %zu",
                           base, n_nodes, PORTS_PER_NODE,
                           (size_t)(65536 - PORTS_PER_NODE * n_nodes));
    }
    char geoscaled[PATH_MAX], err[PATH_MAX + 128];
    if (find_geoscaled(value_of(sc, values, "geoscaled"), geoscaled, sizeof geoscaled, err,
                       sizeof err) != 0) {
        return usage_error(sc->name, "%s", err);
    }

    /* ---- the directory: new, or one without a cluster */
    struct cluster_dir d;
    if (dir_arg == NULL) {
        dir_arg = DEFAULT_DIR;
    }
    if (dir_resolve(dir_arg, true, &d, err, sizeof err) != 0) {
        return failed(sc->name, "%s", err);
    }
    int lock = dir_lock(&d, err, sizeof err);
    if (lock < 0) {
        return failed(sc->name, "%s", err);
    }
    pid_t pid;
    uint64_t running = any_running(&d, &pid);
    if (running != 0) {
        rv = failed(sc->name,
                    "%s already has a running cluster (node %" PRIu64 ", pid %ld); stop it "
                    "with 'geoscale cluster down --dir %s'",
                    d.dir, running, (long)pid, d.dir);
        goto out_lock;
    }
    if (access(d.file, F_OK) == 0) {
        rv = failed(sc->name,
                    "%s exists (a stopped cluster whose nodes keep their data in %s); remove "
                    "the directory to start afresh, or choose another --dir",
                    d.file, d.dir);
        goto out_lock;
    }
    for (size_t i = 0; i < n_nodes * PORTS_PER_NODE; i++) {
        int port = (int)(base + i);
        if (!port_free(port)) {
            rv = failed(sc->name,
                        "port %d on 127.0.0.1 is in use (node %zu would use ports %" PRIu64
                        "-%" PRIu64 "); free it or choose another --base-port",
                        port, i / PORTS_PER_NODE + 1, base, base + n_nodes * PORTS_PER_NODE - 1);
            goto out_lock;
        }
    }
    char key[65];
    if (random_key_hex(key) != 0) {
        rv = failed(sc->name, "cannot read 32 bytes from /dev/urandom");
        goto out_lock;
    }

    /* ---- the file */
    json_t *root = jcheck(json_object());
    jset(root, "cluster", json_string("local"));
    jset(root, "username_hash_key", json_string(key));
    json_t *jregions = jcheck(json_array());
    for (size_t r = 0; r < n_regions; r++) {
        jappend(jregions, json_string(regions[r]));
    }
    jset(root, "regions", jregions);
    json_t *nodes = jcheck(json_array()), *cells = jcheck(json_array());
    json_t *dir_voters = jcheck(json_array()), *meta_voters = jcheck(json_array());
    json_t *standbys = jcheck(json_array());
    uint64_t id = 0;
    uint32_t cell_id = 0;
    for (size_t r = 0; r < n_regions; r++) {
        for (size_t k = 0; k < cells_per_region; k++) {
            json_t *members = jcheck(json_array());
            for (int m = 0; m < 3; m++) {
                id++;
                int block = (int)(base + PORTS_PER_NODE * (id - 1));
                const char zone[2] = {(char)('a' + m), '\0'};
                /* The first node of each region: a voter of both global
                 * groups in the first three regions, else a metadata
                 * standby. */
                bool first = k == 0 && m == 0;
                json_t *n = local_node(&d, id, regions[r], zone, block, first && r < 3, first);
                if (first && r < 3) {
                    jappend(dir_voters, json_integer((json_int_t)id));
                    jappend(meta_voters, json_integer((json_int_t)id));
                } else if (first) {
                    jappend(standbys, json_integer((json_int_t)id));
                }
                jappend(nodes, n);
                jappend(members, json_integer((json_int_t)id));
            }
            json_t *cell = jcheck(json_object());
            jset(cell, "id", json_integer(++cell_id));
            jset(cell, "region", json_string(regions[r]));
            jset(cell, "members", members);
            jappend(cells, cell);
        }
    }
    jset(root, "nodes", nodes);
    jset(root, "cells", cells);
    json_t *directory = jcheck(json_object());
    jset(directory, "voters", dir_voters);
    jset(root, "directory", directory);
    json_t *metadata = jcheck(json_object());
    jset(metadata, "voters", meta_voters);
    jset(metadata, "standbys", standbys);
    jset(root, "metadata", metadata);
    json_t *raft = jcheck(json_object());
    jset(raft, "election_timeout_ms", json_integer(GROUP_DEFAULT_ELECTION_TIMEOUT_MS));
    jset(raft, "heartbeat_timeout_ms", json_integer(GROUP_DEFAULT_HEARTBEAT_TIMEOUT_MS));
    jset(root, "raft", raft);
    rv = write_cluster_file(sc->name, &d, root);
    json_decref(root);
    if (rv != 0) {
        goto out_lock;
    }

    struct cluster_config c;
    if (cluster_config_load(d.file, &c, err, sizeof err) != 0) {
        rv = failed(sc->name, "%s", err);
        goto out_lock;
    }
    printf("wrote %s: %zu regions, %zu cells, %zu nodes, ports %" PRIu64 "-%" PRIu64 "\n", d.file,
           c.n_regions, c.n_cells, c.n_nodes, base, base + n_nodes * PORTS_PER_NODE - 1);
    struct group_ref *groups = calloc(c.n_cells + 2, sizeof *groups);
    if (groups == NULL) {
        oom();
    }
    size_t n_groups = all_groups(&c, groups);
    rv = start_and_wait(sc->name, &d, &c, 0, geoscaled, groups, n_groups, (unsigned)wait_s);
    if (rv == 0) {
        printf("cluster up: %zu nodes in %s; see 'geoscale cluster status --dir %s'\n", c.n_nodes,
               d.dir, d.dir);
    }
    free(groups);
    cluster_config_free(&c);
out_lock:
    close(lock);
    return rv;
}

/* ------------------------------------------------------------ add-cell */

static int address_port(const char *address)
{
    const char *colon = strrchr(address, ':');
    return colon != NULL ? atoi(colon + 1) : 0;
}

static int run_add_cell(const struct subcommand *sc, const char *const *values, bool json,
                        unsigned timeout_ms)
{
    (void)json;
    (void)timeout_ms;
    const char *region = value_of(sc, values, "region");
    const char *dir_arg = value_of(sc, values, "dir");
    uint64_t wait_s;
    char geoscaled[PATH_MAX], err[PATH_MAX + 128];
    int rv;

    if (region == NULL) {
        return usage_error(sc->name, "--region is required");
    }
    if (!valid_region_name(region, strlen(region))) {
        return usage_error(sc->name, "--region: '%s' is not a region name", region);
    }
    if ((rv = number_flag(sc, values, "wait", 1, 3600, DEFAULT_WAIT_S, &wait_s)) != 0) {
        return rv;
    }
    if (find_geoscaled(value_of(sc, values, "geoscaled"), geoscaled, sizeof geoscaled, err,
                       sizeof err) != 0) {
        return usage_error(sc->name, "%s", err);
    }
    struct cluster_dir d;
    if (dir_resolve(dir_arg != NULL ? dir_arg : DEFAULT_DIR, false, &d, err, sizeof err) != 0) {
        return failed(sc->name, "%s", err);
    }
    int lock = dir_lock(&d, err, sizeof err);
    if (lock < 0) {
        return failed(sc->name, "%s", err);
    }
    struct cluster_config c;
    json_t *root = NULL;
    if (cluster_config_load(d.file, &c, err, sizeof err) != 0) {
        rv = failed(sc->name, "%s", err);
        goto out_lock;
    }
    int r = cluster_config_find_region(&c, region);
    if (r < 0) {
        rv = failed(sc->name, "region '%s' is not one of the cluster's regions", region);
        goto out;
    }
    pid_t pid;
    if (any_running(&d, &pid) == 0) {
        rv = failed(sc->name,
                    "no node of %s is running: the new cell registers with the running "
                    "directory; start the cluster first",
                    d.dir);
        goto out;
    }
    if (c.n_cells == CLUSTER_MAX_CELLS || c.n_nodes + 3 > CLUSTER_MAX_NODES) {
        rv = failed(sc->name, "the cluster has the most cells (%d) or nodes (%d) it may have",
                    CLUSTER_MAX_CELLS, CLUSTER_MAX_NODES);
        goto out;
    }
    /* New ids after the largest; ports: the block of each new id if the
     * file follows `cluster up`'s layout, else after the largest port. */
    uint64_t max_id = 0;
    uint32_t max_cell = 0;
    int max_port = 0;
    for (size_t i = 0; i < c.n_nodes; i++) {
        const struct cluster_node *n = &c.nodes[i];
        const char *addrs[] = {n->client_address, n->cell_raft_address, n->directory_raft_address,
                               n->metadata_raft_address};
        max_id = n->id > max_id ? n->id : max_id;
        for (size_t k = 0; k < 4; k++) {
            int port = addrs[k][0] != '\0' ? address_port(addrs[k]) : 0;
            max_port = port > max_port ? port : max_port;
        }
    }
    for (size_t i = 0; i < c.n_cells; i++) {
        max_cell = c.cells[i].id > max_cell ? c.cells[i].id : max_cell;
    }
    long base =
        (long)address_port(c.nodes[0].client_address) - PORTS_PER_NODE * (long)(c.nodes[0].id - 1);
    bool blocks = true;
    for (size_t i = 0; i < c.n_nodes && blocks; i++) {
        blocks = address_port(c.nodes[i].client_address) ==
                 base + PORTS_PER_NODE * (long)(c.nodes[i].id - 1);
    }
    long first_block = blocks ? base + PORTS_PER_NODE * (long)max_id : max_port + 1;
    if (max_cell >= CLUSTER_CELL_ID_MAX || max_id + 3 > UINT32_MAX ||
        first_block + 3 * PORTS_PER_NODE - 1 > 65535) {
        rv = failed(sc->name, "no node ids, cell ids or ports are left after the largest ones");
        goto out;
    }
    for (long port = first_block; port < first_block + 3 * PORTS_PER_NODE; port++) {
        if (!port_free((int)port)) {
            rv = failed(sc->name, "port %ld on 127.0.0.1, which the new nodes would use, is in use",
                        port);
            goto out;
        }
    }
    for (uint64_t k = 1; k <= 3; k++) {
        char data[PATH_MAX + 32];
        node_path(&d, max_id + k, "", data, sizeof data);
        if (access(data, F_OK) == 0) {
            rv = failed(sc->name, "%s exists; the new node %" PRIu64 " needs a fresh data_dir",
                        data, max_id + k);
            goto out;
        }
    }

    json_error_t jerr;
    root = json_load_file(d.file, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rv = failed(sc->name, "%s: %s", d.file, jerr.text);
        goto out;
    }
    json_t *nodes = json_object_get(root, "nodes"), *cells = json_object_get(root, "cells");
    json_t *members = jcheck(json_array());
    for (uint64_t k = 1; k <= 3; k++) {
        const char zone[2] = {(char)('a' + k - 1), '\0'};
        jappend(nodes,
                local_node(&d, max_id + k, region, zone,
                           (int)(first_block + PORTS_PER_NODE * (long)(k - 1)), false, false));
        jappend(members, json_integer((json_int_t)(max_id + k)));
    }
    json_t *cell = jcheck(json_object());
    jset(cell, "id", json_integer((json_int_t)max_cell + 1));
    jset(cell, "region", json_string(region));
    jset(cell, "members", members);
    jappend(cells, cell);
    if ((rv = write_cluster_file(sc->name, &d, root)) != 0) {
        goto out;
    }
    size_t old_nodes = c.n_nodes;
    cluster_config_free(&c);
    if (cluster_config_load(d.file, &c, err, sizeof err) != 0) {
        rv = failed(sc->name, "%s", err);
        goto out;
    }
    printf("added cell %" PRIu32 " in %s with nodes %" PRIu64 ", %" PRIu64 ", %" PRIu64 " to %s\n",
           max_cell + 1, region, max_id + 1, max_id + 2, max_id + 3, d.file);
    struct group_ref g = {CLUSTER_GROUP_CELL, max_cell + 1};
    rv = start_and_wait(sc->name, &d, &c, old_nodes, geoscaled, &g, 1, (unsigned)wait_s);
out:
    json_decref(root);
    cluster_config_free(&c);
out_lock:
    close(lock);
    return rv;
}

/* ---------------------------------------------------------------- status */

static const char *failure_state(int rv)
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

/* How a node that gave no answer is shown: "stopped" if its process does
 * not run, else unreachable/failed. */
static const char *absent_state(const struct cluster_dir *d, uint64_t id, int rv)
{
    char path[PATH_MAX + 32];
    const char *state = failure_state(rv);
    node_path(d, id, ".pid", path, sizeof path);
    if (strcmp(state, "unreachable") == 0 && running_node(d, path) == 0) {
        return "stopped";
    }
    return state;
}

static json_t *ju64(uint64_t v)
{
    return json_integer(v <= INT64_MAX ? (json_int_t)v : -1);
}

static void status_group(const struct cluster_dir *d, const struct cluster_config *c,
                         const struct snapshot *s, struct group_ref g, size_t region,
                         json_t *jgroups, bool json)
{
    struct cluster_member m[CLUSTER_GROUP_MAX_MEMBERS];
    size_t n = 0, shown = 0;
    uint64_t leader_applied = 0;
    if (cluster_config_group_members(c, g.kind, g.id, m, CLUSTER_GROUP_MAX_MEMBERS, &n) != 0) {
        return;
    }
    uint64_t leader = group_leader(c, s, g, &leader_applied);
    json_t *jg = NULL, *jmembers = NULL;
    if (json) {
        jg = jcheck(json_object());
        jset(jg, "kind", json_string(cluster_group_kind_name(g.kind)));
        jset(jg, "group_id", json_integer(g.id));
        jset(jg, "leader_id", ju64(leader));
        jmembers = jcheck(json_array());
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].region != region) {
            continue; /* shown under its own region */
        }
        const struct cluster_node *node = cluster_config_find_node(c, m[i].id);
        size_t idx = (size_t)(node - c->nodes);
        const Geoscale__NodeStatusResponse *st = s->status[idx];
        const Geoscale__GroupStatus *gs = find_group(st, g.kind, g.id);
        const char *state = st == NULL   ? absent_state(d, m[i].id, s->errors[idx])
                            : gs == NULL ? "not-hosted"
                                         : gs->state;
        char lag[24] = "-";
        if (gs != NULL && leader != 0) {
            snprintf(lag, sizeof lag, "%" PRId64,
                     leader_applied >= gs->applied_index
                         ? (int64_t)(leader_applied - gs->applied_index)
                         : -(int64_t)(gs->applied_index - leader_applied));
        }
        if (json) {
            json_t *o = jcheck(json_object());
            jset(o, "node_id", ju64(m[i].id));
            jset(o, "address", json_string(m[i].client_address));
            jset(o, "role", json_string(cluster_role_name(m[i].role)));
            jset(o, "state", json_string(state));
            if (st == NULL) {
                jset(o, "error", json_string(gs_error_name(s->errors[idx])));
            }
            if (gs != NULL) {
                jset(o, "leader_id", ju64(gs->leader_id));
                jset(o, "term", ju64(gs->term));
                jset(o, "commit_index", ju64(gs->commit_index));
                jset(o, "applied_index", ju64(gs->applied_index));
                jset(o, "last_log_index", ju64(gs->last_log_index));
                if (leader != 0) {
                    jset(o, "lag", json_integer(atoll(lag)));
                }
            }
            jappend(jmembers, o);
            continue;
        }
        if (shown++ == 0) {
            char label[32];
            group_label(g, label, sizeof label);
            printf("  %s", label);
            if (leader != 0) {
                printf(" (leader %" PRIu64 ")\n", leader);
            } else {
                printf(" (no leader)\n");
            }
            printf("    %-6s %-22s %-8s %-12s %-7s %-6s %-10s %s\n", "NODE", "ADDRESS", "ROLE",
                   "STATE", "LEADER", "TERM", "APPLIED", "LAG");
        }
        if (gs == NULL) {
            printf("    %-6" PRIu64 " %-22s %-8s %-12s %-7s %-6s %-10s %s%s%s%s\n", m[i].id,
                   m[i].client_address, cluster_role_name(m[i].role), state, "-", "-", "-", "-",
                   st == NULL ? " (" : "", st == NULL ? gs_error_name(s->errors[idx]) : "",
                   st == NULL ? ")" : "");
        } else {
            char lead[24] = "-";
            if (gs->leader_id != 0) {
                snprintf(lead, sizeof lead, "%" PRIu64, gs->leader_id);
            }
            printf("    %-6" PRIu64 " %-22s %-8s %-12s %-7s %-6" PRIu64 " %-10" PRIu64 " %s\n",
                   m[i].id, m[i].client_address, cluster_role_name(m[i].role), gs->state, lead,
                   gs->term, gs->applied_index, lag);
        }
    }
    if (json) {
        jset(jg, "members", jmembers);
        if (json_array_size(jmembers) > 0) {
            jappend(jgroups, jg);
        } else {
            json_decref(jg);
        }
    }
}

static int run_status(const struct subcommand *sc, const char *const *values, bool json,
                      unsigned timeout_ms)
{
    const char *dir_arg = value_of(sc, values, "dir");
    uint64_t t;
    int rv;
    char err[PATH_MAX + 128];
    json = json || value_of(sc, values, "json") != NULL;
    if ((rv = number_flag(sc, values, "timeout", 1, 600000,
                          timeout_ms != 0 ? timeout_ms : DEFAULT_STATUS_TIMEOUT_MS, &t)) != 0) {
        return rv;
    }
    struct cluster_dir d;
    if (dir_resolve(dir_arg != NULL ? dir_arg : DEFAULT_DIR, false, &d, err, sizeof err) != 0) {
        return failed(sc->name, "%s", err);
    }
    struct cluster_config c;
    if (cluster_config_load(d.file, &c, err, sizeof err) != 0) {
        return failed(sc->name, "%s", err);
    }
    struct snapshot s;
    snapshot_take(&c, (unsigned)t, &s);
    size_t answered = 0;
    for (size_t i = 0; i < s.n; i++) {
        answered += s.status[i] != NULL;
    }
    struct group_ref *groups = calloc(c.n_cells + 2, sizeof *groups);
    if (groups == NULL) {
        oom();
    }
    size_t n_groups = all_groups(&c, groups);
    json_t *root = NULL, *jregions = NULL;
    if (json) {
        root = jcheck(json_object());
        jset(root, "cluster", json_string(c.name));
        jset(root, "dir", json_string(d.dir));
        jregions = jcheck(json_array());
    } else {
        printf("cluster %s in %s: %zu of %zu nodes answered\n", c.name[0] ? c.name : "-", d.dir,
               answered, c.n_nodes);
    }
    for (size_t r = 0; r < c.n_regions; r++) {
        json_t *jgroups = NULL;
        if (json) {
            jgroups = jcheck(json_array());
        } else {
            printf("\nregion %s\n", c.regions[r]);
        }
        for (size_t g = 0; g < n_groups; g++) {
            status_group(&d, &c, &s, groups[g], r, jgroups, json);
        }
        if (json) {
            json_t *o = jcheck(json_object());
            jset(o, "region", json_string(c.regions[r]));
            jset(o, "groups", jgroups);
            jappend(jregions, o);
        }
    }
    if (json) {
        jset(root, "regions", jregions);
        char *text = json_dumps(root, JSON_COMPACT);
        if (text == NULL) {
            oom();
        }
        printf("%s\n", text);
        free(text);
        json_decref(root);
    }
    free(groups);
    snapshot_free(&s);
    cluster_config_free(&c);
    if (answered == 0) {
        return failed(sc->name, "no node answered");
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------------ down */

static int run_down(const struct subcommand *sc, const char *const *values, bool json,
                    unsigned timeout_ms)
{
    (void)json;
    (void)timeout_ms;
    const char *dir_arg = value_of(sc, values, "dir");
    uint64_t wait_s;
    int rv;
    char err[PATH_MAX + 128];
    if ((rv = number_flag(sc, values, "wait", 1, 3600, DEFAULT_DOWN_WAIT_S, &wait_s)) != 0) {
        return rv;
    }
    struct cluster_dir d;
    if (dir_resolve(dir_arg != NULL ? dir_arg : DEFAULT_DIR, false, &d, err, sizeof err) != 0) {
        return failed(sc->name, "%s", err);
    }
    if (access(d.file, F_OK) != 0) {
        return failed(sc->name, "%s: no cluster here (%s not found)", d.dir, d.file);
    }
    /* The pid files, not the cluster file: they cover every node started,
     * also those of a file that no longer loads. */
    static uint64_t ids[CLUSTER_MAX_NODES];
    static pid_t pids[CLUSTER_MAX_NODES];
    size_t n = pid_files(&d, ids, CLUSTER_MAX_NODES), signalled = 0, killed = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];
        node_path(&d, ids[i], ".pid", path, sizeof path);
        pid_t pid = read_pid(path);
        pids[i] = 0;
        if (pid <= 0 || !pid_alive(pid)) {
            printf("node %" PRIu64 ": not running\n", ids[i]);
            unlink(path);
        } else if (!pid_is_our_node(pid, d.file)) {
            printf("node %" PRIu64 ": not running (pid %ld is another process; stale pid file "
                   "removed)\n",
                   ids[i], (long)pid);
            unlink(path);
        } else if (kill(pid, SIGTERM) != 0) {
            printf("node %" PRIu64 ": cannot signal pid %ld: %s\n", ids[i], (long)pid,
                   strerror(errno));
            rv = EXIT_FAILED;
        } else {
            pids[i] = pid;
            signalled++;
        }
    }
    fflush(stdout);
    double t0 = gs_mono_s();
    size_t left = signalled;
    while (left > 0) {
        left = 0;
        for (size_t i = 0; i < n; i++) {
            if (pids[i] == 0) {
                continue;
            }
            if (!pid_alive(pids[i])) {
                printf("node %" PRIu64 ": stopped (pid %ld exited %.1f s after SIGTERM)\n", ids[i],
                       (long)pids[i], gs_mono_s() - t0);
                char path[PATH_MAX + 32];
                node_path(&d, ids[i], ".pid", path, sizeof path);
                unlink(path);
                pids[i] = 0;
            } else {
                left++;
            }
        }
        if (left == 0 || gs_mono_s() - t0 >= (double)wait_s) {
            break;
        }
        fflush(stdout);
        gs_sleep_ms(100);
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] == 0) {
            continue;
        }
        /* Still the same process: checked again right before SIGKILL. */
        if (pid_is_our_node(pids[i], d.file) && kill(pids[i], SIGKILL) == 0) {
            killed++;
            for (int k = 0; k < 50 && pid_alive(pids[i]); k++) {
                gs_sleep_ms(20);
            }
        }
        bool gone = !pid_alive(pids[i]);
        printf("node %" PRIu64 ": %s (pid %ld did not exit within %" PRIu64
               " s of SIGTERM; sent SIGKILL)\n",
               ids[i], gone ? "killed" : "STILL RUNNING", (long)pids[i], wait_s);
        if (gone) {
            char path[PATH_MAX + 32];
            node_path(&d, ids[i], ".pid", path, sizeof path);
            unlink(path);
        } else {
            rv = EXIT_FAILED;
        }
    }
    if (signalled == 0) {
        printf("cluster down: no node of %s was running\n", d.dir);
    } else {
        printf("cluster down: %zu node%s stopped, %zu of them killed after the timeout\n",
               signalled, signalled == 1 ? "" : "s", killed);
    }
    return rv;
}

/* ------------------------------------------------------------------ table */

static const struct cflag up_flags[] = {
    {"regions", "R1,R2,...", "regions, in order (at least 3; required)"},
    {"cells-per-region", "N", "cells of 3 nodes in each region (required)"},
    {"dir", "DIR", "the cluster's directory (default " DEFAULT_DIR ")"},
    {"base-port", "P", "first port; node N uses P+4(N-1)..P+4(N-1)+3 (default 7100)"},
    {"geoscaled", "PATH", "the node program (default: next to geoscale, else PATH)"},
    {"wait", "SECONDS", "how long to wait for every group's leader (default 60)"},
    {"help", NULL, "show this help and exit"},
    {NULL, NULL, NULL},
};

static const struct cflag status_flags[] = {
    {"dir", "DIR", "the cluster's directory (default " DEFAULT_DIR ")"},
    {"timeout", "MS", "per-node deadline (default: global --timeout, else 2000)"},
    {"json", NULL, "print one JSON document"},
    {"help", NULL, "show this help and exit"},
    {NULL, NULL, NULL},
};

static const struct cflag down_flags[] = {
    {"dir", "DIR", "the cluster's directory (default " DEFAULT_DIR ")"},
    {"wait", "SECONDS", "how long to wait after SIGTERM before SIGKILL (default 10)"},
    {"help", NULL, "show this help and exit"},
    {NULL, NULL, NULL},
};

static const struct cflag add_cell_flags[] = {
    {"region", "R", "the region of the new cell (required)"},
    {"dir", "DIR", "the cluster's directory (default " DEFAULT_DIR ")"},
    {"geoscaled", "PATH", "the node program (default: next to geoscale, else PATH)"},
    {"wait", "SECONDS", "how long to wait for the new cell's leader (default 60)"},
    {"help", NULL, "show this help and exit"},
    {NULL, NULL, NULL},
};

static const struct subcommand subcommands[] = {
    {"up", "--regions R1,R2,R3[,...] --cells-per-region N [OPTIONS]",
     "Write DIR/cluster.json for a cluster on 127.0.0.1 and start every node.\n"
     "Each cell has 3 nodes; the first node of each of the first three regions is a\n"
     "directory and metadata voter, the first node of every other region a metadata\n"
     "standby. The username hash key is 32 random bytes. Every port is checked free\n"
     "first. Nodes run detached as 'geoscaled --cluster DIR/cluster.json --node N',\n"
     "logging to DIR/nodeN.log (pid in DIR/nodeN.pid); then this waits until every\n"
     "group has a leader (NodeStatus of each node), with progress on stderr.\n"
     "Refuses a DIR with a running cluster, or with a cluster.json already.",
     up_flags, run_up},
    {"status", "[--dir DIR] [--json] [--timeout MS]",
     "Ask every node of DIR/cluster.json for its NodeStatus and print, per region,\n"
     "each cell's members and the directory and metadata replicas of the region:\n"
     "role, state, leader, term, applied index and lag (the group leader's applied\n"
     "index minus the member's). A node that does not answer is shown as stopped\n"
     "(its process does not run), unreachable or failed. Exit 1 if none answers.",
     status_flags, run_status},
    {"down", "[--dir DIR] [--wait SECONDS]",
     "Stop every node of DIR: SIGTERM to the pid in each DIR/nodeN.pid (only if that\n"
     "process is a geoscaled started with this DIR's cluster.json), wait, then SIGKILL\n"
     "those still running; one line per node says how it ended. Data is kept.",
     down_flags, run_down},
    {"add-cell", "--region R [--dir DIR] [OPTIONS]",
     "Append three nodes (new ids, new ports) and a cell of region R to\n"
     "DIR/cluster.json, start the nodes and wait until the cell has a leader. The\n"
     "new nodes register the cell with the directory themselves when they start;\n"
     "from then on new users of R may be placed in it. Needs a running cluster.",
     add_cell_flags, run_add_cell},
};

#define N_SUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

static void print_cluster_help(FILE *f)
{
    fprintf(f, "Usage: geoscale cluster COMMAND [OPTIONS]\n\n"
               "Run a multi-region cluster on this machine (docs/CLUSTER.md).\n\nCommands:\n");
    for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
        fprintf(f, "  cluster %s %s\n", subcommands[i].name, subcommands[i].synopsis);
    }
    fprintf(f, "\nSee 'geoscale cluster COMMAND --help'.\n");
}

/*
 * `geoscale cluster ...`: argv[0] is "cluster". json and timeout are the
 * global --json and --timeout (NULL if not given).
 */
int cli_cluster_main(int argc, char **argv, bool json, const char *timeout)
{
    uint64_t timeout_ms = 0;
    if (timeout != NULL && gs_parse_u64(timeout, 1, 3600000, &timeout_ms) != 0) {
        return usage_error(NULL, "--timeout must be an integer from 1 to 3600000 (ms), got '%s'",
                           timeout);
    }
    if (argc < 2) {
        fprintf(stderr, "geoscale cluster: missing command\n\n");
        print_cluster_help(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_cluster_help(stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
        const struct subcommand *sc = &subcommands[i];
        if (strcmp(argv[1], sc->name) != 0) {
            continue;
        }
        const char *values[MAX_FLAGS] = {NULL};
        int rv = parse_flags(sc, argc - 2, argv + 2, values);
        if (rv == 1) {
            return EXIT_OK;
        }
        if (rv != 0) {
            return rv;
        }
        /* The nodes outlive us and have their own logs: a write to a closed
         * pipe of ours must not kill the command half-way. */
        signal(SIGPIPE, SIG_IGN);
        rv = sc->run(sc, values, json, (unsigned)timeout_ms);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "error: cannot write the output: %s\n", strerror(errno));
            rv = EXIT_FAILED;
        }
        return rv;
    }
    return usage_error(NULL, "unknown command '%s'", argv[1]);
}
