/*
 * Multi-region end-to-end harness (see cluster_harness.h).
 *
 * Ports: every address of the file gets a port the kernel handed out for a
 * loopback socket bound to port 0; all of them are held open together (so
 * they are distinct) and closed just before the file is written. Another
 * process could take one before its node binds it; the node then fails to
 * start and says so in its log, which the harness prints.
 *
 * Readiness: as in harness.c, `event=ready` is looked for in a node's log
 * after the offset where its current process started. Leaders come from
 * NodeStatus, asked of each running node over a pinned connection.
 */
#include "cluster_harness.h"

#include "directory.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef GEOSCALED_PATH
#error "GEOSCALED_PATH must name the geoscaled binary"
#endif

/* The same 32-byte key on every node (64 hex digits). */
static const char mr_username_hash_key[] =
    "3c9a51e07b2d48f6a1c0e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a392817f6e5d4";

#define MR_PORTS_MAX (MR_MAX_NODES * 4)
#define MR_POLL_MS 500 /* one NodeStatus call while waiting */

/* ------------------------------------------------------------------ setup */

static int mr_pick_ports(uint16_t *ports, int n)
{
    static int fds[MR_PORTS_MAX];
    int opened = 0;
    int rv = 0;

    for (int i = 0; i < n; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t sl = sizeof sa;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) {
            rv = GS_EIO;
            goto out;
        }
        opened++;
        if (bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &sl) != 0) {
            rv = GS_EIO;
            goto out;
        }
        ports[i] = ntohs(sa.sin_port);
    }
out:
    for (int i = 0; i < opened; i++) {
        close(fds[i]);
    }
    if (rv != 0) {
        e2e_log("harness: cannot pick free ports: %s", strerror(errno));
    }
    return rv;
}

static void mr_json_ids(FILE *f, const struct mr_cluster *c, int want_dir, enum mr_role meta)
{
    int first = 1;
    for (int i = 0; i < c->n_nodes; i++) {
        const struct mr_node *n = &c->nodes[i];
        if ((want_dir && n->directory_voter) || (!want_dir && n->metadata == meta)) {
            fprintf(f, "%s%" PRIu64, first ? "" : ", ", n->id);
            first = 0;
        }
    }
}

static int mr_write_file(const struct mr_cluster *c)
{
    FILE *f = fopen(c->file, "w");
    if (f == NULL) {
        e2e_log("harness: cannot write %s: %s", c->file, strerror(errno));
        return GS_EIO;
    }
    fprintf(f, "{\n  \"cluster\": \"%s\",\n  \"username_hash_key\": \"%s\",\n  \"regions\": [",
            c->name, mr_username_hash_key);
    for (int r = 0; r < c->n_regions; r++) {
        fprintf(f, "%s\"%s\"", r == 0 ? "" : ", ", c->regions[r]);
    }
    fprintf(f, "],\n  \"nodes\": [\n");
    for (int i = 0; i < c->n_nodes; i++) {
        const struct mr_node *n = &c->nodes[i];
        fprintf(f,
                "    {\"id\": %" PRIu64 ", \"region\": \"%s\", \"zone\": \"%c\", "
                "\"client_address\": \"%s\", \"cell_raft_address\": \"%s\", ",
                n->id, c->regions[n->region], (char)('a' + (n->id - 1) % 3), n->client_address,
                n->cell_raft_address);
        if (n->directory_voter) {
            fprintf(f, "\"directory_raft_address\": \"%s\", ", n->directory_raft_address);
        }
        if (n->metadata != MR_ROLE_NONE) {
            fprintf(f, "\"metadata_raft_address\": \"%s\", ", n->metadata_raft_address);
        }
        fprintf(f, "\"data_dir\": \"%s\"}%s\n", n->data_dir, i + 1 < c->n_nodes ? "," : "");
    }
    fprintf(f, "  ],\n  \"cells\": [\n");
    for (int k = 0; k < c->n_cells; k++) {
        const struct mr_node *n = &c->nodes[3 * k];
        fprintf(f,
                "    {\"id\": %u, \"region\": \"%s\", \"members\": [%" PRIu64 ", %" PRIu64
                ", %" PRIu64 "]}%s\n",
                n->cell_id, c->regions[n->region], n->id, n[1].id, n[2].id,
                k + 1 < c->n_cells ? "," : "");
    }
    fprintf(f, "  ],\n  \"directory\": {\"voters\": [");
    mr_json_ids(f, c, 1, MR_ROLE_NONE);
    fprintf(f, "]},\n  \"metadata\": {\"voters\": [");
    mr_json_ids(f, c, 0, MR_ROLE_VOTER);
    fprintf(f, "], \"standbys\": [");
    mr_json_ids(f, c, 0, MR_ROLE_STANDBY);
    fprintf(f,
            "]},\n  \"raft\": {\"election_timeout_ms\": 1000, \"heartbeat_timeout_ms\": 100},\n"
            "  \"limits\": {},\n  \"rocksdb\": {\"compression\": %s},\n"
            "  \"log_level\": \"info\"\n}\n",
            c->compression ? "true" : "false");
    if (fclose(f) != 0) {
        e2e_log("harness: cannot write %s: %s", c->file, strerror(errno));
        return GS_EIO;
    }
    return 0;
}

int mr_init(struct mr_cluster *c, const char *name, const char *const *regions, int n_regions,
            int cells_per_region, int compression)
{
    static uint16_t ports[MR_PORTS_MAX];
    const char *tmp = getenv("TMPDIR");
    int n_ports = 0;
    int p = 0;
    int rv;

    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    if (n_regions < 3 || n_regions > MR_MAX_REGIONS || cells_per_region < 1 ||
        cells_per_region > MR_MAX_CELLS_PER_REGION) {
        e2e_log("harness: %d regions of %d cells: not supported", n_regions, cells_per_region);
        return GS_EINVAL;
    }
    if (snprintf(c->dir, sizeof c->dir, "%s/geoscale-e2e-%s-XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", name) >= (int)sizeof c->dir - 64) {
        e2e_log("harness: TMPDIR too long");
        c->dir[0] = '\0';
        return GS_EINVAL;
    }
    if (mkdtemp(c->dir) == NULL) {
        e2e_log("harness: mkdtemp %s: %s", c->dir, strerror(errno));
        c->dir[0] = '\0';
        return GS_EIO;
    }
    snprintf(c->file, sizeof c->file, "%s/cluster.json", c->dir);
    c->n_regions = n_regions;
    c->cells_per_region = cells_per_region;
    c->n_cells = n_regions * cells_per_region;
    c->n_nodes = c->n_cells * 3;
    c->compression = compression;
    for (int r = 0; r < n_regions; r++) {
        snprintf(c->regions[r], sizeof c->regions[r], "%s", regions[r]);
    }
    /* Roles as `geoscale cluster up` assigns them. */
    for (int i = 0; i < c->n_nodes; i++) {
        struct mr_node *n = &c->nodes[i];
        int cell = i / 3;
        n->id = (uint64_t)i + 1;
        n->region = cell / cells_per_region;
        n->cell_id = (uint32_t)cell + 1;
        int first_of_region = i == n->region * cells_per_region * 3;
        n->directory_voter = first_of_region && n->region < 3;
        n->metadata = !first_of_region ? MR_ROLE_NONE
                      : n->region < 3  ? MR_ROLE_VOTER
                                       : MR_ROLE_STANDBY;
        n_ports += 2 + (n->directory_voter ? 1 : 0) + (n->metadata != MR_ROLE_NONE ? 1 : 0);
    }
    rv = mr_pick_ports(ports, n_ports);
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < c->n_nodes; i++) {
        struct mr_node *n = &c->nodes[i];
        snprintf(n->client_address, sizeof n->client_address, "127.0.0.1:%u", ports[p++]);
        snprintf(n->cell_raft_address, sizeof n->cell_raft_address, "127.0.0.1:%u", ports[p++]);
        if (n->directory_voter) {
            snprintf(n->directory_raft_address, sizeof n->directory_raft_address, "127.0.0.1:%u",
                     ports[p++]);
        }
        if (n->metadata != MR_ROLE_NONE) {
            snprintf(n->metadata_raft_address, sizeof n->metadata_raft_address, "127.0.0.1:%u",
                     ports[p++]);
        }
        snprintf(n->data_dir, sizeof n->data_dir, "%s/node%" PRIu64, c->dir, n->id);
        snprintf(n->log_path, sizeof n->log_path, "%s/node%" PRIu64 ".log", c->dir, n->id);
        if (mkdir(n->data_dir, 0755) != 0) {
            e2e_log("harness: mkdir %s: %s", n->data_dir, strerror(errno));
            return GS_EIO;
        }
    }
    rv = mr_write_file(c);
    if (rv != 0) {
        return rv;
    }
    e2e_log("%s: cluster dir %s: %d regions, %d cells, %d nodes, rocksdb compression %s", name,
            c->dir, c->n_regions, c->n_cells, c->n_nodes, compression ? "on" : "off");
    return 0;
}

/* ------------------------------------------------------------- processes */

int mr_node_start(struct mr_cluster *c, int i)
{
    struct mr_node *n = &c->nodes[i];
    struct stat st;
    char marker[128];
    char id_arg[24];
    pid_t parent = getpid();
    pid_t pid;
    int fd;
    int len;

    if (n->pid != 0) {
        e2e_log("harness: node %" PRIu64 " already running (pid %d)", n->id, (int)n->pid);
        return GS_EINVAL;
    }
    fd = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        e2e_log("harness: open %s: %s", n->log_path, strerror(errno));
        return GS_EIO;
    }
    len = snprintf(marker, sizeof marker, "=== harness: start %d of node %" PRIu64 " ===\n",
                   n->starts + 1, n->id);
    if (write(fd, marker, (size_t)len) != len || fstat(fd, &st) != 0) {
        e2e_log("harness: write %s: %s", n->log_path, strerror(errno));
        close(fd);
        return GS_EIO;
    }
    n->log_offset = (long)st.st_size;
    snprintf(id_arg, sizeof id_arg, "%" PRIu64, n->id);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        e2e_log("harness: fork: %s", strerror(errno));
        close(fd);
        return GS_EIO;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        int devnull;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(126);
        }
        devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        dup2(fd, 1);
        dup2(fd, 2);
        execl(GEOSCALED_PATH, "geoscaled", "--cluster", c->file, "--node", id_arg, (char *)NULL);
        _exit(127);
    }
    close(fd);
    n->pid = pid;
    n->starts++;
    return 0;
}

static void mr_describe_exit(const struct mr_node *n, int wstatus)
{
    if (WIFEXITED(wstatus)) {
        e2e_log("harness: node %" PRIu64 " exited with status %d", n->id, WEXITSTATUS(wstatus));
    } else if (WIFSIGNALED(wstatus)) {
        e2e_log("harness: node %" PRIu64 " killed by signal %d", n->id, WTERMSIG(wstatus));
    }
}

int mr_node_alive(struct mr_cluster *c, int i)
{
    struct mr_node *n = &c->nodes[i];
    int wstatus;
    pid_t r;

    if (n->pid == 0) {
        return 0;
    }
    r = waitpid(n->pid, &wstatus, WNOHANG);
    if (r == 0) {
        return 1;
    }
    if (r == n->pid) {
        mr_describe_exit(n, wstatus);
    }
    n->pid = 0;
    return 0;
}

static int mr_reap(struct mr_cluster *c, int i, unsigned timeout_ms, int *wstatus)
{
    struct mr_node *n = &c->nodes[i];
    double deadline = e2e_now_ms() + timeout_ms;
    int st = 0;

    for (;;) {
        pid_t r = waitpid(n->pid, &st, WNOHANG);
        if (r == n->pid || (r < 0 && errno == ECHILD)) {
            n->pid = 0;
            if (wstatus != NULL) {
                *wstatus = st;
            }
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(5);
    }
}

int mr_node_stop(struct mr_cluster *c, int i, int sig, unsigned timeout_ms, int *wstatus)
{
    struct mr_node *n = &c->nodes[i];
    int rv;

    if (n->pid == 0) {
        return GS_EINVAL;
    }
    if (kill(n->pid, sig) != 0) {
        e2e_log("harness: kill(%d, %d): %s", (int)n->pid, sig, strerror(errno));
        return GS_EIO;
    }
    rv = mr_reap(c, i, timeout_ms, wstatus);
    if (rv == GS_ETIMEOUT) {
        e2e_log("harness: node %" PRIu64 " still running %u ms after signal %d; SIGKILL", n->id,
                timeout_ms, sig);
        kill(n->pid, SIGKILL);
        mr_reap(c, i, 10000, NULL);
    }
    return rv;
}

void mr_kill_all(struct mr_cluster *c)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].pid != 0) {
            kill(c->nodes[i].pid, SIGKILL);
        }
    }
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].pid != 0 && mr_reap(c, i, 10000, NULL) != 0) {
            e2e_log("harness: node %" PRIu64 " (pid %d) not reaped 10 s after SIGKILL",
                    c->nodes[i].id, (int)c->nodes[i].pid);
        }
    }
}

int mr_stop_nodes(struct mr_cluster *c, const int *idx, int n, int sig, unsigned timeout_ms)
{
    double deadline = e2e_now_ms() + timeout_ms;
    int rv = 0;

    if (idx == NULL) {
        n = c->n_nodes;
    }
    for (int k = 0; k < n; k++) {
        int i = idx != NULL ? idx[k] : k;
        if (c->nodes[i].pid != 0) {
            kill(c->nodes[i].pid, sig);
        }
    }
    for (int k = 0; k < n; k++) {
        int i = idx != NULL ? idx[k] : k;
        double left = deadline - e2e_now_ms();
        int wstatus = 0;
        if (c->nodes[i].pid == 0) {
            continue;
        }
        if (mr_reap(c, i, left > 0 ? (unsigned)left : 1, &wstatus) != 0) {
            e2e_log("harness: node %" PRIu64 " still running %u ms after signal %d; SIGKILL",
                    c->nodes[i].id, timeout_ms, sig);
            kill(c->nodes[i].pid, SIGKILL);
            mr_reap(c, i, 10000, NULL);
            rv = GS_ETIMEOUT;
        } else if (sig == SIGTERM && !(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)) {
            mr_describe_exit(&c->nodes[i], wstatus);
            if (rv == 0) {
                rv = GS_EIO;
            }
        }
    }
    return rv;
}

int mr_node_wait_ready(struct mr_cluster *c, int i, unsigned timeout_ms)
{
    struct mr_node *n = &c->nodes[i];
    double deadline = e2e_now_ms() + timeout_ms;

    for (;;) {
        char *log = e2e_read_from(n->log_path, n->log_offset);
        int ready = log != NULL && strstr(log, "event=ready") != NULL;
        free(log);
        if (ready) {
            return 0;
        }
        if (!mr_node_alive(c, i)) {
            e2e_log("harness: node %" PRIu64 " exited before event=ready", n->id);
            return GS_ECLOSED;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: node %" PRIu64 " not ready after %u ms", n->id, timeout_ms);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(20);
    }
}

/* ---------------------------------------------------------------- topology */

int mr_region_nodes(const struct mr_cluster *c, int r, int *idx, int cap)
{
    int n = 0;
    for (int i = 0; i < c->n_nodes && n < cap; i++) {
        if (c->nodes[i].region == r) {
            idx[n++] = i;
        }
    }
    return n;
}

int mr_region_index(const struct mr_cluster *c, const char *region)
{
    for (int r = 0; r < c->n_regions; r++) {
        if (strcmp(c->regions[r], region) == 0) {
            return r;
        }
    }
    return -1;
}

int mr_index_of(const struct mr_cluster *c, uint64_t node_id)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].id == node_id) {
            return i;
        }
    }
    return -1;
}

int mr_groups(const struct mr_cluster *c, struct mr_group *out)
{
    int n = 0;
    for (int k = 0; k < c->n_cells; k++) {
        out[n++] = (struct mr_group){MR_GROUP_CELL, (uint32_t)k + 1};
    }
    out[n++] = (struct mr_group){MR_GROUP_DIRECTORY, 0};
    out[n++] = (struct mr_group){MR_GROUP_METADATA, 0};
    return n;
}

int mr_group_members(const struct mr_cluster *c, struct mr_group g, int *idx, int cap)
{
    int n = 0;
    for (int i = 0; i < c->n_nodes && n < cap; i++) {
        const struct mr_node *nd = &c->nodes[i];
        int member = (g.kind == MR_GROUP_CELL && nd->cell_id == g.cell_id) ||
                     (g.kind == MR_GROUP_DIRECTORY && nd->directory_voter) ||
                     (g.kind == MR_GROUP_METADATA && nd->metadata != MR_ROLE_NONE);
        if (member) {
            idx[n++] = i;
        }
    }
    return n;
}

void mr_group_label(struct mr_group g, char *buf, size_t len)
{
    switch (g.kind) {
    case MR_GROUP_CELL:
        snprintf(buf, len, "cell %u", g.cell_id);
        break;
    case MR_GROUP_DIRECTORY:
        snprintf(buf, len, "directory");
        break;
    case MR_GROUP_METADATA:
        snprintf(buf, len, "metadata");
        break;
    }
}

/* ---------------------------------------------------------------- queries */

int mr_node_sync(struct mr_cluster *c, int i, unsigned timeout_ms, gs_sync **out)
{
    const char *seed = c->nodes[i].client_address;
    struct gs_client_options o = {.timeout_ms = timeout_ms, .pin = 1, .no_retry = 1};
    return gs_sync_open(&seed, 1, &o, out);
}

int mr_call(struct mr_cluster *c, int i, unsigned timeout_ms, uint16_t method,
            const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    gs_sync *s = NULL;
    ProtobufCMessage *r = NULL;
    int rv = mr_node_sync(c, i, timeout_ms, &s);
    if (rv == 0) {
        rv = gs_sync_call(s, method, req, &r, NULL);
    }
    gs_sync_close(s);
    if (resp != NULL) {
        *resp = r;
    } else if (r != NULL) {
        protobuf_c_message_free_unpacked(r, NULL);
    }
    return rv;
}

int mr_create_user(struct mr_cluster *c, int i, unsigned timeout_ms,
                   const Geoscale__CreateUserRequest *req, uint64_t *user_id)
{
    ProtobufCMessage *resp = NULL;
    int rv = mr_call(c, i, timeout_ms, GEOSCALE__METHOD__METHOD_CREATE_USER, &req->base, &resp);
    if (rv == 0) {
        Geoscale__CreateUserResponse *cu = (Geoscale__CreateUserResponse *)resp;
        if (cu == NULL || cu->user_id == 0) {
            rv = GS_EPROTO;
        } else {
            *user_id = cu->user_id;
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

int mr_node_status(struct mr_cluster *c, int i, unsigned timeout_ms,
                   Geoscale__NodeStatusResponse **out)
{
    Geoscale__NodeStatusRequest req = GEOSCALE__NODE_STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rv = mr_call(c, i, timeout_ms, GEOSCALE__METHOD__METHOD_NODE_STATUS, &req.base, &resp);
    if (rv == 0 && resp == NULL) {
        rv = GS_EINTERNAL;
    }
    *out = rv == 0 ? (Geoscale__NodeStatusResponse *)resp : NULL;
    return rv;
}

const Geoscale__GroupStatus *mr_find_group(const Geoscale__NodeStatusResponse *st,
                                           struct mr_group g)
{
    static const char *const kinds[] = {"cell", "directory", "metadata"};
    if (st == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < st->n_groups; k++) {
        const Geoscale__GroupStatus *gs = st->groups[k];
        if (strcmp(gs->kind, kinds[g.kind]) == 0 &&
            (g.kind != MR_GROUP_CELL || gs->group_id == g.cell_id)) {
            return gs;
        }
    }
    return NULL;
}

int mr_metadata_get(struct mr_cluster *c, int i, unsigned timeout_ms, uint64_t user_id,
                    Geoscale__MetadataGetResponse **out)
{
    Geoscale__MetadataGetRequest req = GEOSCALE__METADATA_GET_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.user_id = user_id;
    int rv = mr_call(c, i, timeout_ms, GEOSCALE__METHOD__METHOD_METADATA_GET, &req.base, &resp);
    if (rv == 0 && resp == NULL) {
        rv = GS_EINTERNAL;
    }
    *out = rv == 0 ? (Geoscale__MetadataGetResponse *)resp : NULL;
    return rv;
}

int mr_wait_metadata(struct mr_cluster *c, int i, uint64_t user_id, mr_meta_pred pred, void *arg,
                     unsigned timeout_ms, double *elapsed_ms, int *last_status)
{
    double t0 = e2e_now_ms();
    double deadline = t0 + timeout_ms;
    int status = GS_ETIMEOUT;

    for (;;) {
        Geoscale__MetadataGetResponse *m = NULL;
        int ok;
        status = mr_metadata_get(c, i, 1000, user_id, &m);
        ok = status == 0 && m->meta != NULL && (pred == NULL || pred(arg, m->meta));
        if (m != NULL) {
            geoscale__metadata_get_response__free_unpacked(m, NULL);
        }
        if (ok) {
            if (elapsed_ms != NULL) {
                *elapsed_ms = e2e_now_ms() - t0;
            }
            if (last_status != NULL) {
                *last_status = 0;
            }
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            if (elapsed_ms != NULL) {
                *elapsed_ms = e2e_now_ms() - t0;
            }
            if (last_status != NULL) {
                *last_status = status;
            }
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(50);
    }
}

/* NodeStatus of every running node (NULL for the others and for failures;
 * errs[i] says why). */
static void mr_status_all(struct mr_cluster *c, unsigned timeout_ms,
                          Geoscale__NodeStatusResponse **st, int *errs)
{
    for (int i = 0; i < c->n_nodes; i++) {
        st[i] = NULL;
        errs[i] = GS_ECLOSED;
        if (mr_node_alive(c, i)) {
            errs[i] = mr_node_status(c, i, timeout_ms, &st[i]);
            if (errs[i] == 0 && st[i]->node_id != c->nodes[i].id) {
                geoscale__node_status_response__free_unpacked(st[i], NULL);
                st[i] = NULL;
                errs[i] = GS_EPROTO; /* another process on that port */
            }
        }
    }
}

static void mr_status_free(struct mr_cluster *c, Geoscale__NodeStatusResponse **st)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (st[i] != NULL) {
            geoscale__node_status_response__free_unpacked(st[i], NULL);
            st[i] = NULL;
        }
    }
}

/*
 * Check group g over its running members: 1 if one member is leader and
 * every running member answered and names it (and, if `indexes`, has the
 * same commit and applied index). Appends a view of the group to buf.
 */
static int mr_group_ok(struct mr_cluster *c, struct mr_group g, Geoscale__NodeStatusResponse **st,
                       const int *errs, int indexes, char *buf, size_t cap)
{
    int idx[MR_MAX_NODES];
    int n = mr_group_members(c, g, idx, MR_MAX_NODES);
    uint64_t leader = 0;
    int running = 0;
    int ok = 1;
    const Geoscale__GroupStatus *first = NULL;
    char label[32];
    size_t off = strlen(buf);

    mr_group_label(g, label, sizeof label);
    off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0, " [%s:", label);
    for (int k = 0; k < n; k++) {
        const Geoscale__GroupStatus *gs = mr_find_group(st[idx[k]], g);
        if (c->nodes[idx[k]].pid == 0) {
            off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0, " n%" PRIu64 "=down",
                                    c->nodes[idx[k]].id);
            continue;
        }
        running++;
        if (gs == NULL) {
            ok = 0;
            off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0, " n%" PRIu64 "=%s",
                                    c->nodes[idx[k]].id,
                                    errs[idx[k]] != 0 ? gs_error_name(errs[idx[k]]) : "nogroup");
            continue;
        }
        off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0,
                                " n%" PRIu64 "=%s/L%" PRIu64 "/c%" PRIu64 "/a%" PRIu64,
                                c->nodes[idx[k]].id, gs->state, gs->leader_id, gs->commit_index,
                                gs->applied_index);
        if (strcmp(gs->state, "leader") == 0) {
            leader = c->nodes[idx[k]].id;
        }
        if (first == NULL) {
            first = gs;
        } else if (indexes && (gs->commit_index != first->commit_index ||
                               gs->applied_index != first->applied_index)) {
            ok = 0;
        }
    }
    snprintf(buf + off, off < cap ? cap - off : 0, "]");
    if (running == 0) {
        return 1; /* a dark group: nothing to wait for */
    }
    if (leader == 0) {
        return 0;
    }
    for (int k = 0; k < n && ok; k++) {
        const Geoscale__GroupStatus *gs = mr_find_group(st[idx[k]], g);
        if (gs != NULL && gs->leader_id != leader) {
            ok = 0;
        }
    }
    return ok;
}

/* Does the directory (as a running node sees it) list every cell? */
static int mr_cells_registered(struct mr_cluster *c)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].pid <= 0) {
            continue;
        }
        Geoscale__ListCellsRequest rq = GEOSCALE__LIST_CELLS_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        if (mr_call(c, i, MR_POLL_MS, GEOSCALE__METHOD__METHOD_DIRECTORY_LIST_CELLS, &rq.base,
                    &resp) != 0) {
            return 0;
        }
        size_t n = ((Geoscale__ListCellsResponse *)resp)->n_cells;
        protobuf_c_message_free_unpacked(resp, NULL);
        return n == (size_t)c->n_cells;
    }
    return 0;
}

int mr_wait_leaders(struct mr_cluster *c, unsigned timeout_ms)
{
    static Geoscale__NodeStatusResponse *st[MR_MAX_NODES];
    static int errs[MR_MAX_NODES];
    static char view[8192];
    struct mr_group groups[MR_MAX_CELLS + 2];
    int n_groups = mr_groups(c, groups);
    double deadline = e2e_now_ms() + timeout_ms;

    for (;;) {
        int ok = 1;
        view[0] = '\0';
        mr_status_all(c, MR_POLL_MS, st, errs);
        for (int g = 0; g < n_groups; g++) {
            ok &= mr_group_ok(c, groups[g], st, errs, 0, view, sizeof view);
        }
        mr_status_free(c, st);
        /* Signups need more than leaders: every cell registered in the
         * directory (its leader does so once elected). */
        if (ok && !mr_cells_registered(c)) {
            ok = 0;
            snprintf(view + strlen(view), sizeof view - strlen(view),
                     " (not every cell is registered in the directory yet)");
        }
        if (ok) {
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: not every group has an agreed leader after %u ms:%s", timeout_ms,
                    view);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(200);
    }
}

/* The cells' StateDigests over their running members agree. */
static int mr_digests_ok(struct mr_cluster *c, char *buf, size_t cap)
{
    int ok = 1;
    size_t off = strlen(buf);
    for (int k = 0; k < c->n_cells; k++) {
        struct mr_group g = {MR_GROUP_CELL, (uint32_t)k + 1};
        int idx[3];
        int n = mr_group_members(c, g, idx, 3);
        Geoscale__StateDigestResponse *first = NULL;
        for (int m = 0; m < n; m++) {
            Geoscale__StateDigestRequest req = GEOSCALE__STATE_DIGEST_REQUEST__INIT;
            ProtobufCMessage *resp = NULL;
            Geoscale__StateDigestResponse *d;
            int rv;
            if (c->nodes[idx[m]].pid == 0) {
                continue;
            }
            rv = mr_call(c, idx[m], 2000, GEOSCALE__METHOD__METHOD_STATE_DIGEST, &req.base, &resp);
            if (rv != 0 || resp == NULL) {
                off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0,
                                        " digest n%" PRIu64 "=%s", c->nodes[idx[m]].id,
                                        gs_error_name(rv != 0 ? rv : GS_EINTERNAL));
                ok = 0;
                continue;
            }
            d = (Geoscale__StateDigestResponse *)resp;
            off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0,
                                    " digest n%" PRIu64 "=a%" PRIu64 "/k%" PRIu64 "/%02x%02x%02x",
                                    c->nodes[idx[m]].id, d->applied_index, d->keys,
                                    d->digest.len > 0 ? d->digest.data[0] : 0,
                                    d->digest.len > 1 ? d->digest.data[1] : 0,
                                    d->digest.len > 2 ? d->digest.data[2] : 0);
            if (d->digest.len != 32) {
                ok = 0;
            }
            if (first == NULL) {
                first = d;
                continue;
            }
            if (d->applied_index != first->applied_index || d->digest.len != first->digest.len ||
                memcmp(d->digest.data, first->digest.data, d->digest.len) != 0) {
                ok = 0;
            }
            geoscale__state_digest_response__free_unpacked(d, NULL);
        }
        if (first != NULL) {
            geoscale__state_digest_response__free_unpacked(first, NULL);
        }
    }
    return ok;
}

int mr_wait_converged(struct mr_cluster *c, unsigned timeout_ms)
{
    static Geoscale__NodeStatusResponse *st[MR_MAX_NODES];
    static int errs[MR_MAX_NODES];
    static char view[16384];
    struct mr_group groups[MR_MAX_CELLS + 2];
    int n_groups = mr_groups(c, groups);
    double deadline = e2e_now_ms() + timeout_ms;

    for (;;) {
        int ok = 1;
        view[0] = '\0';
        mr_status_all(c, MR_POLL_MS, st, errs);
        for (int g = 0; g < n_groups; g++) {
            ok &= mr_group_ok(c, groups[g], st, errs, 1, view, sizeof view);
        }
        mr_status_free(c, st);
        if (ok) {
            ok = mr_digests_ok(c, view, sizeof view);
        }
        if (ok) {
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: groups not converged after %u ms:%s", timeout_ms, view);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(300);
    }
}

int mr_start(struct mr_cluster *c, unsigned timeout_ms)
{
    double t0 = e2e_now_ms();
    double deadline = t0 + timeout_ms;
    int rv;

    for (int i = 0; i < c->n_nodes; i++) {
        rv = mr_node_start(c, i);
        if (rv != 0) {
            return rv;
        }
    }
    for (int i = 0; i < c->n_nodes; i++) {
        double left = deadline - e2e_now_ms();
        rv = mr_node_wait_ready(c, i, left > 0 ? (unsigned)left : 1);
        if (rv != 0) {
            return rv;
        }
    }
    e2e_log("%s: %d nodes ready in %.0f ms", c->name, c->n_nodes, e2e_now_ms() - t0);
    {
        double left = deadline - e2e_now_ms();
        rv = mr_wait_leaders(c, left > 0 ? (unsigned)left : 1);
    }
    if (rv != 0) {
        return rv;
    }
    e2e_log("%s: every group (%d cells, directory, metadata) has a leader after %.0f ms", c->name,
            c->n_cells, e2e_now_ms() - t0);
    return 0;
}

/* --------------------------------------------------------------- teardown */

void mr_dump_logs(const struct mr_cluster *c, int lines)
{
    printf("# %s: logs kept in %s\n", c->name, c->dir);
    for (int i = 0; i < c->n_nodes; i++) {
        const struct mr_node *n = &c->nodes[i];
        char label[64];
        snprintf(label, sizeof label, " (node %" PRIu64 ", %s)", n->id, c->regions[n->region]);
        e2e_print_log_tail(n->log_path, label, lines);
    }
    fflush(stdout);
}

void mr_destroy(struct mr_cluster *c)
{
    if (c == NULL) {
        return;
    }
    mr_kill_all(c);
    if (c->dir[0] == '\0') {
        return;
    }
    if (c->passed) {
        e2e_remove_tree(c->dir);
    } else {
        mr_dump_logs(c, 30);
    }
    c->dir[0] = '\0';
}

/* ------------------------------------------------------------------ scans */

/* nftw has no argument for its callback: one scan at a time. */
static struct {
    const uint8_t *needle;
    size_t len;
    mr_scan_hit_cb cb;
    void *arg;
    struct mr_scan_stats *stats;
} mr_scan_ctx;

static int mr_scan_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(sb->st_mode)) {
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        mr_scan_ctx.stats->unreadable++;
        if (fd >= 0) {
            close(fd);
        }
        return 0;
    }
    mr_scan_ctx.stats->files++;
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    /* read(), not mmap(): a file a live node truncates under us must not
     * raise SIGBUS. */
    size_t cap = (size_t)st.st_size;
    size_t size = 0;
    uint8_t *data = malloc(cap);
    if (data == NULL) {
        close(fd);
        mr_scan_ctx.stats->unreadable++;
        return 0;
    }
    while (size < cap) {
        ssize_t r = read(fd, data + size, cap - size);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        size += (size_t)r;
    }
    close(fd);
    mr_scan_ctx.stats->bytes += size;
    const uint8_t *p = data;
    const uint8_t *end = data + size;
    while ((size_t)(end - p) >= mr_scan_ctx.len) {
        const uint8_t *hit = memmem(p, (size_t)(end - p), mr_scan_ctx.needle, mr_scan_ctx.len);
        if (hit == NULL) {
            break;
        }
        mr_scan_ctx.stats->hits++;
        mr_scan_ctx.cb(mr_scan_ctx.arg, path, (size_t)(hit - data), hit, (size_t)(end - hit));
        p = hit + 1;
    }
    free(data);
    return 0;
}

int mr_scan_tree(const char *root, const uint8_t *needle, size_t len, mr_scan_hit_cb cb, void *arg,
                 struct mr_scan_stats *stats)
{
    mr_scan_ctx.needle = needle;
    mr_scan_ctx.len = len;
    mr_scan_ctx.cb = cb;
    mr_scan_ctx.arg = arg;
    mr_scan_ctx.stats = stats;
    if (len == 0 || nftw(root, mr_scan_entry, 16, FTW_PHYS) != 0) {
        e2e_log("harness: cannot scan %s: %s", root, strerror(errno));
        return GS_EIO;
    }
    return 0;
}

int mr_fixture_new(void **state, const char *name, const char *const *regions, int n_regions,
                   int cells_per_region, int compression)
{
    struct mr_cluster *c = calloc(1, sizeof *c);
    *state = NULL;
    if (c == NULL) {
        return -1;
    }
    if (mr_init(c, name, regions, n_regions, cells_per_region, compression) != 0) {
        mr_destroy(c);
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

int mr_fixture_free(void **state)
{
    struct mr_cluster *c = *state;
    if (c != NULL) {
        mr_destroy(c);
        free(c);
        *state = NULL;
    }
    return 0;
}
