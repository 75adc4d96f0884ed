/*
 * End-to-end harness (see harness.h).
 *
 * Ports: six loopback sockets are bound to port 0 at the same time (so the
 * kernel hands out six distinct free ports), their numbers noted, and then
 * closed. Another process could take one of them before the node binds it;
 * on a test machine that is rare, and the node then fails to start and says
 * so in its log, which the harness prints.
 *
 * Readiness: a node's log is appended to across restarts, so the harness
 * remembers the log's size when it starts a process and looks for
 * `event=ready` only after that offset.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/mono.h"

#ifndef GEOSCALED_PATH
#error "GEOSCALED_PATH must name the geoscaled binary"
#endif

/* The same 32-byte key on every node (64 hex digits). */
static const char username_hash_key[] =
    "6a0f3c1e9b7d25e48c1a0b3f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b";

void e2e_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

double e2e_now_ms(void)
{
    return gs_mono_ms();
}

void e2e_sleep_ms(unsigned ms)
{
    gs_sleep_ms(ms);
}

/* ------------------------------------------------------------------ setup */

static int pick_ports(uint16_t *ports, int n)
{
    int fds[2 * CLUSTER_NODES];
    int rv = 0;
    int opened = 0;

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

static int write_config(const struct cluster *c, int i)
{
    const struct cluster_node *n = &c->nodes[i];
    FILE *f = fopen(n->config_path, "w");
    if (f == NULL) {
        e2e_log("harness: cannot write %s: %s", n->config_path, strerror(errno));
        return GS_EIO;
    }
    fprintf(f,
            "{\"node_id\":%u,\"region\":\"us-east\",\"cell_id\":1,"
            "\"raft_address\":\"%s\",\"client_address\":\"%s\",\"data_dir\":\"%s\",\"peers\":[",
            n->node_id, n->raft_address, n->client_address, n->data_dir);
    for (int p = 0; p < CLUSTER_NODES; p++) {
        fprintf(f, "%s{\"id\":%u,\"raft_address\":\"%s\",\"client_address\":\"%s\"}",
                p == 0 ? "" : ",", c->nodes[p].node_id, c->nodes[p].raft_address,
                c->nodes[p].client_address);
    }
    fprintf(f,
            "],\"username_hash_key\":\"%s\","
            "\"raft\":{\"election_timeout_ms\":1000,\"heartbeat_timeout_ms\":100%s},"
            "\"log_level\":\"info\"}\n",
            username_hash_key, c->raft_extra);
    if (fclose(f) != 0) {
        e2e_log("harness: cannot write %s: %s", n->config_path, strerror(errno));
        return GS_EIO;
    }
    return 0;
}

int cluster_init(struct cluster *c, const char *name)
{
    uint16_t ports[2 * CLUSTER_NODES];
    const char *tmp = getenv("TMPDIR");
    int rv;

    char raft_extra[sizeof c->raft_extra];
    memcpy(raft_extra, c->raft_extra, sizeof raft_extra);
    memset(c, 0, sizeof *c);
    memcpy(c->raft_extra, raft_extra, sizeof raft_extra);
    snprintf(c->name, sizeof c->name, "%s", name);
    if (snprintf(c->dir, sizeof c->dir, "%s/geoscale-e2e-%s-XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", name) >= (int)sizeof c->dir) {
        e2e_log("harness: TMPDIR too long");
        c->dir[0] = '\0';
        return GS_EINVAL;
    }
    if (mkdtemp(c->dir) == NULL) {
        e2e_log("harness: mkdtemp %s: %s", c->dir, strerror(errno));
        c->dir[0] = '\0';
        return GS_EIO;
    }
    rv = pick_ports(ports, 2 * CLUSTER_NODES);
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        struct cluster_node *n = &c->nodes[i];
        char node_dir[600];
        n->node_id = (uint32_t)i + 1;
        snprintf(n->raft_address, sizeof n->raft_address, "127.0.0.1:%u", ports[2 * i]);
        snprintf(n->client_address, sizeof n->client_address, "127.0.0.1:%u", ports[2 * i + 1]);
        snprintf(node_dir, sizeof node_dir, "%s/node%u", c->dir, n->node_id);
        snprintf(n->config_path, sizeof n->config_path, "%s/node%u.json", c->dir, n->node_id);
        snprintf(n->data_dir, sizeof n->data_dir, "%s/data", node_dir);
        snprintf(n->log_path, sizeof n->log_path, "%s/node%u.log", c->dir, n->node_id);
        if (mkdir(node_dir, 0755) != 0 || mkdir(n->data_dir, 0755) != 0) {
            e2e_log("harness: mkdir %s: %s", n->data_dir, strerror(errno));
            return GS_EIO;
        }
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = write_config(c, i);
        if (rv != 0) {
            return rv;
        }
    }
    e2e_log("%s: cluster dir %s, client addresses %s %s %s", name, c->dir,
            c->nodes[0].client_address, c->nodes[1].client_address, c->nodes[2].client_address);
    return 0;
}

/* ------------------------------------------------------------- processes */

int cluster_node_start(struct cluster *c, int i)
{
    struct cluster_node *n = &c->nodes[i];
    struct stat st;
    char marker[128];
    pid_t parent = getpid();
    pid_t pid;
    int fd;
    int len;

    if (n->pid != 0) {
        e2e_log("harness: node %u already running (pid %d)", n->node_id, (int)n->pid);
        return GS_EINVAL;
    }
    fd = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        e2e_log("harness: open %s: %s", n->log_path, strerror(errno));
        return GS_EIO;
    }
    len = snprintf(marker, sizeof marker, "=== harness: start %d of node %u ===\n", n->starts + 1,
                   n->node_id);
    if (write(fd, marker, (size_t)len) != len || fstat(fd, &st) != 0) {
        e2e_log("harness: write %s: %s", n->log_path, strerror(errno));
        close(fd);
        return GS_EIO;
    }
    n->log_offset = (long)st.st_size;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        e2e_log("harness: fork: %s", strerror(errno));
        close(fd);
        return GS_EIO;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. A node must not
         * outlive the test process. */
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
        execl(GEOSCALED_PATH, "geoscaled", "--config", n->config_path, (char *)NULL);
        _exit(127);
    }
    close(fd);
    n->pid = pid;
    n->starts++;
    return 0;
}

static void describe_exit(const struct cluster_node *n, int wstatus)
{
    if (WIFEXITED(wstatus)) {
        e2e_log("harness: node %u exited with status %d", n->node_id, WEXITSTATUS(wstatus));
    } else if (WIFSIGNALED(wstatus)) {
        e2e_log("harness: node %u killed by signal %d", n->node_id, WTERMSIG(wstatus));
    }
}

int cluster_node_alive(struct cluster *c, int i)
{
    struct cluster_node *n = &c->nodes[i];
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
        describe_exit(n, wstatus);
    }
    n->pid = 0;
    return 0;
}

int cluster_node_signal(struct cluster *c, int i, int sig)
{
    struct cluster_node *n = &c->nodes[i];
    if (n->pid == 0) {
        return GS_EINVAL;
    }
    if (kill(n->pid, sig) != 0) {
        e2e_log("harness: kill(%d, %d): %s", (int)n->pid, sig, strerror(errno));
        return GS_EIO;
    }
    return 0;
}

int cluster_node_reap(struct cluster *c, int i, unsigned timeout_ms, int *wstatus)
{
    struct cluster_node *n = &c->nodes[i];
    double deadline = e2e_now_ms() + timeout_ms;
    int st = 0;

    if (n->pid == 0) {
        return GS_EINVAL;
    }
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

int cluster_node_stop(struct cluster *c, int i, int sig, unsigned timeout_ms, int *wstatus)
{
    int rv;
    if (c->nodes[i].pid == 0) {
        return GS_EINVAL;
    }
    rv = cluster_node_signal(c, i, sig);
    if (rv != 0) {
        return rv;
    }
    rv = cluster_node_reap(c, i, timeout_ms, wstatus);
    if (rv == GS_ETIMEOUT) {
        e2e_log("harness: node %u still running %u ms after signal %d; SIGKILL",
                c->nodes[i].node_id, timeout_ms, sig);
        cluster_node_signal(c, i, SIGKILL);
        cluster_node_reap(c, i, 10000, NULL);
        return GS_ETIMEOUT;
    }
    return rv;
}

void cluster_kill_all(struct cluster *c)
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (c->nodes[i].pid != 0) {
            kill(c->nodes[i].pid, SIGKILL);
        }
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (c->nodes[i].pid != 0 && cluster_node_reap(c, i, 10000, NULL) != 0) {
            e2e_log("harness: node %u (pid %d) not reaped 10 s after SIGKILL", c->nodes[i].node_id,
                    (int)c->nodes[i].pid);
        }
    }
}

char *e2e_read_from(const char *path, long offset)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    long size;

    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < offset ||
        fseek(f, offset, SEEK_SET) != 0) {
        goto out;
    }
    size -= offset;
    buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        goto out;
    }
    size = (long)fread(buf, 1, (size_t)size, f);
    buf[size] = '\0';
out:
    fclose(f);
    return buf;
}

int cluster_node_wait_ready(struct cluster *c, int i, unsigned timeout_ms)
{
    struct cluster_node *n = &c->nodes[i];
    double deadline = e2e_now_ms() + timeout_ms;

    for (;;) {
        char *log = e2e_read_from(n->log_path, n->log_offset);
        int ready = log != NULL && strstr(log, "event=ready") != NULL;
        free(log);
        if (ready) {
            return 0;
        }
        if (!cluster_node_alive(c, i)) {
            e2e_log("harness: node %u exited before event=ready", n->node_id);
            return GS_ECLOSED;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: node %u not ready after %u ms", n->node_id, timeout_ms);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(20);
    }
}

int cluster_node_restart(struct cluster *c, int i, unsigned timeout_ms)
{
    int rv = cluster_node_start(c, i);
    if (rv != 0) {
        return rv;
    }
    return cluster_node_wait_ready(c, i, timeout_ms);
}

int cluster_index_of(const struct cluster *c, uint64_t node_id)
{
    for (int i = 0; i < CLUSTER_NODES; i++) {
        if (c->nodes[i].node_id == node_id) {
            return i;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- queries */

int cluster_node_sync(struct cluster *c, int i, unsigned timeout_ms, gs_sync **out)
{
    const char *seed = c->nodes[i].client_address;
    struct gs_client_options o = {.timeout_ms = timeout_ms, .pin = 1, .no_retry = 1};
    return gs_sync_open(&seed, 1, &o, out);
}

static int node_call(struct cluster *c, int i, unsigned timeout_ms, uint16_t method,
                     const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    gs_sync *s = NULL;
    int rv = cluster_node_sync(c, i, timeout_ms, &s);
    if (rv != 0) {
        return rv;
    }
    rv = gs_sync_call(s, method, req, resp, NULL);
    gs_sync_close(s);
    return rv;
}

int cluster_node_status(struct cluster *c, int i, unsigned timeout_ms,
                        Geoscale__CellStatusResponse **out)
{
    Geoscale__CellStatusRequest req = GEOSCALE__CELL_STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rv = node_call(c, i, timeout_ms, GEOSCALE__METHOD__METHOD_CELL_STATUS, &req.base, &resp);
    *out = rv == 0 ? (Geoscale__CellStatusResponse *)resp : NULL;
    if (rv == 0 && resp == NULL) {
        rv = GS_EINTERNAL;
    }
    return rv;
}

int cluster_node_digest(struct cluster *c, int i, unsigned timeout_ms,
                        Geoscale__StateDigestResponse **out)
{
    Geoscale__StateDigestRequest req = GEOSCALE__STATE_DIGEST_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rv = node_call(c, i, timeout_ms, GEOSCALE__METHOD__METHOD_STATE_DIGEST, &req.base, &resp);
    *out = rv == 0 ? (Geoscale__StateDigestResponse *)resp : NULL;
    if (rv == 0 && resp == NULL) {
        rv = GS_EINTERNAL;
    }
    return rv;
}

int cluster_wait_leader(struct cluster *c, unsigned timeout_ms, int *leader)
{
    double start = e2e_now_ms();
    double deadline = start + timeout_ms;
    char last[512] = "";

    for (;;) {
        uint64_t named[CLUSTER_NODES] = {0};
        int alive[CLUSTER_NODES] = {0};
        int self_leader = -1;
        int n_alive = 0;
        int agree = 1;
        size_t off = 0;

        for (int i = 0; i < CLUSTER_NODES; i++) {
            Geoscale__CellStatusResponse *st = NULL;
            int rv;
            if (!cluster_node_alive(c, i)) {
                continue;
            }
            alive[i] = 1;
            n_alive++;
            rv = cluster_node_status(c, i, 1000, &st);
            if (rv != 0) {
                agree = 0;
                off += (size_t)snprintf(last + off, sizeof last - off, " node%u=%s",
                                        c->nodes[i].node_id, gs_error_name(rv));
                continue;
            }
            named[i] = st->leader_id;
            off +=
                (size_t)snprintf(last + off, sizeof last - off, " node%u=%s/leader%llu/term%llu",
                                 c->nodes[i].node_id, st->state, (unsigned long long)st->leader_id,
                                 (unsigned long long)st->term);
            if (strcmp(st->state, "leader") == 0) {
                self_leader = i;
            }
            geoscale__cell_status_response__free_unpacked(st, NULL);
        }
        if (n_alive > 0 && agree && self_leader >= 0) {
            for (int i = 0; i < CLUSTER_NODES; i++) {
                if (alive[i] && named[i] != c->nodes[self_leader].node_id) {
                    agree = 0;
                }
            }
            if (agree) {
                *leader = self_leader;
                return 0;
            }
        }
        if (n_alive == 0) {
            e2e_log("harness: no node running while waiting for a leader");
            return GS_EUNAVAILABLE;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: no agreed leader after %u ms:%s", timeout_ms, last);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(100);
    }
}

static void hex8(const ProtobufCBinaryData *d, char out[17])
{
    size_t n = d->len < 8 ? d->len : 8;
    out[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        snprintf(out + 2 * k, 3, "%02x", d->data[k]);
    }
}

int cluster_wait_converged(struct cluster *c, unsigned timeout_ms, uint64_t *applied_index,
                           uint8_t digest[32], uint64_t *keys)
{
    double deadline = e2e_now_ms() + timeout_ms;
    char last[768] = "";

    for (;;) {
        uint64_t status_applied[CLUSTER_NODES] = {0};
        Geoscale__StateDigestResponse *dg[CLUSTER_NODES] = {NULL};
        int n_alive = 0;
        int ok = 1;
        int first = -1;
        size_t off = 0;

        for (int i = 0; i < CLUSTER_NODES; i++) {
            Geoscale__CellStatusResponse *st = NULL;
            int rv;
            char hx[17];
            if (!cluster_node_alive(c, i)) {
                continue;
            }
            n_alive++;
            rv = cluster_node_status(c, i, 1000, &st);
            if (rv == 0) {
                status_applied[i] = st->applied_index;
                geoscale__cell_status_response__free_unpacked(st, NULL);
                rv = cluster_node_digest(c, i, 2000, &dg[i]);
            }
            if (rv != 0) {
                ok = 0;
                off += (size_t)snprintf(last + off, sizeof last - off, " node%u=%s",
                                        c->nodes[i].node_id, gs_error_name(rv));
                continue;
            }
            hex8(&dg[i]->digest, hx);
            off += (size_t)snprintf(
                last + off, sizeof last - off, " node%u=applied %llu/%llu digest %s keys %llu",
                c->nodes[i].node_id, (unsigned long long)status_applied[i],
                (unsigned long long)dg[i]->applied_index, hx, (unsigned long long)dg[i]->keys);
            if (dg[i]->digest.len != 32) {
                ok = 0;
            }
            /* The two indexes of one node need not agree: CellStatus counts
             * every Raft entry applied (barriers too), StateDigest names the
             * last entry the state machine wrote. Each must agree across
             * nodes. */
            if (first < 0) {
                first = i;
            } else if (ok && (status_applied[i] != status_applied[first] ||
                              dg[i]->applied_index != dg[first]->applied_index ||
                              memcmp(dg[i]->digest.data, dg[first]->digest.data, 32) != 0)) {
                ok = 0;
            }
        }
        if (n_alive == 0) {
            e2e_log("harness: no node running while waiting for convergence");
            return GS_EUNAVAILABLE;
        }
        if (ok && first >= 0) {
            if (applied_index != NULL) {
                *applied_index = status_applied[first];
            }
            if (digest != NULL) {
                memcpy(digest, dg[first]->digest.data, 32);
            }
            if (keys != NULL) {
                *keys = dg[first]->keys;
            }
        }
        for (int i = 0; i < CLUSTER_NODES; i++) {
            if (dg[i] != NULL) {
                geoscale__state_digest_response__free_unpacked(dg[i], NULL);
            }
        }
        if (ok && first >= 0) {
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_log("harness: nodes not converged after %u ms:%s", timeout_ms, last);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(200);
    }
}

int cluster_start(struct cluster *c, unsigned timeout_ms)
{
    double t0 = e2e_now_ms();
    double deadline = t0 + timeout_ms;
    int leader = -1;
    int rv;

    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = cluster_node_start(c, i);
        if (rv != 0) {
            return rv;
        }
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        double left = deadline - e2e_now_ms();
        rv = cluster_node_wait_ready(c, i, left > 0 ? (unsigned)left : 1);
        if (rv != 0) {
            return rv;
        }
    }
    e2e_log("%s: 3 nodes ready in %.0f ms", c->name, e2e_now_ms() - t0);
    {
        double left = deadline - e2e_now_ms();
        rv = cluster_wait_leader(c, left > 0 ? (unsigned)left : 1, &leader);
    }
    if (rv != 0) {
        return rv;
    }
    e2e_log("%s: leader is node %u after %.0f ms", c->name, c->nodes[leader].node_id,
            e2e_now_ms() - t0);
    return 0;
}

/* --------------------------------------------------------------- teardown */

void e2e_print_log_tail(const char *path, const char *label, int lines)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long size;
    long start;
    int seen = 0;

    if (f == NULL) {
        printf("# --- %s: (no log)\n", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    start = size > (1L << 20) ? size - (1L << 20) : 0;
    buf = malloc((size_t)(size - start) + 1);
    if (buf == NULL) {
        fclose(f);
        return;
    }
    fseek(f, start, SEEK_SET);
    size = (long)fread(buf, 1, (size_t)(size - start), f);
    buf[size] = '\0';
    fclose(f);
    start = size;
    while (start > 0) {
        if (buf[start - 1] == '\n' && start != size && ++seen > lines) {
            break;
        }
        start--;
    }
    printf("# --- last %d lines of %s%s:\n%s", lines, path, label, buf + start);
    if (size > 0 && buf[size - 1] != '\n') {
        putchar('\n');
    }
    free(buf);
}

void cluster_dump_logs(const struct cluster *c, int lines)
{
    printf("# %s: logs kept in %s\n", c->name, c->dir);
    for (int i = 0; i < CLUSTER_NODES; i++) {
        e2e_print_log_tail(c->nodes[i].log_path, "", lines);
    }
    fflush(stdout);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void e2e_remove_tree(const char *dir)
{
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        e2e_log("harness: could not remove %s: %s", dir, strerror(errno));
    }
}

void cluster_destroy(struct cluster *c)
{
    if (c == NULL) {
        return;
    }
    cluster_kill_all(c);
    if (c->dir[0] == '\0') {
        return;
    }
    if (c->passed) {
        e2e_remove_tree(c->dir);
    } else {
        cluster_dump_logs(c, 40);
    }
    c->dir[0] = '\0';
}

/* ------------------------------------------------------------ request runs */

int e2e_pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n > 0 ? n : 1);
    if (b == NULL) {
        return GS_ENOMEM;
    }
    *len = protobuf_c_message_pack(m, b);
    *buf = b;
    return 0;
}

void e2e_ops_free(struct e2e_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ops[i].req);
        free(ops[i].resp);
        ops[i].req = NULL;
        ops[i].resp = NULL;
    }
}

struct run_ctx {
    uv_loop_t loop;
    uv_timer_t deadline; /* ends the run: closes the client */
    uv_timer_t kick;     /* deferred close, outside client callbacks */
    gs_client *client;
    int client_closed;
    struct e2e_op *ops;
    size_t n;
    size_t next;
    size_t inflight;
    int issuing;
    int stop;
    int closing;
    const struct e2e_run_options *opts;
    struct e2e_run_result *res;
    struct run_ref *refs;
};

struct run_ref {
    struct run_ctx *ctx;
    size_t index;
};

static void run_client_closed(void *data)
{
    struct run_ctx *ctx = data;
    ctx->client_closed = 1;
    uv_close((uv_handle_t *)&ctx->deadline, NULL);
    uv_close((uv_handle_t *)&ctx->kick, NULL);
}

static void run_tick_cb(uv_timer_t *t)
{
    (void)t;
}

static void run_close(struct run_ctx *ctx)
{
    if (ctx->closing) {
        return;
    }
    ctx->closing = 1;
    uv_timer_stop(&ctx->kick);
    /* Keep a timer ticking until the client has closed, so that the loop
     * wakes up and e2e_run can enforce its hard deadline. */
    uv_timer_start(&ctx->deadline, run_tick_cb, 100, 100);
    gs_client_close(ctx->client, run_client_closed, ctx);
}

static void run_kick_cb(uv_timer_t *t)
{
    run_close(t->data);
}

static void run_deadline_cb(uv_timer_t *t)
{
    struct run_ctx *ctx = t->data;
    ctx->res->deadline_hit = 1;
    ctx->stop = 1;
    run_close(ctx);
}

static void run_maybe_finish(struct run_ctx *ctx)
{
    if (!ctx->closing && ctx->inflight == 0 && (ctx->stop || ctx->next == ctx->n)) {
        uv_timer_start(&ctx->kick, run_kick_cb, 0, 0);
    }
}

static void run_issue(struct run_ctx *ctx);

/* Record the completion of op k. */
static void run_record(struct run_ctx *ctx, size_t k, int status, uint32_t leader_id,
                       const uint8_t *body, size_t len)
{
    struct e2e_op *op = &ctx->ops[k];

    op->done = 1;
    op->status = status;
    op->leader_id = leader_id;
    if (status == 0) {
        op->resp = malloc(len > 0 ? len : 1);
        if (op->resp == NULL) {
            op->status = GS_ENOMEM;
        } else {
            if (len > 0) {
                memcpy(op->resp, body, len);
            }
            op->resp_len = len;
            ctx->res->ok++;
        }
    }
    ctx->inflight--;
    ctx->res->done++;
    if (!ctx->stop && ctx->opts->on_done != NULL &&
        ctx->opts->on_done(ctx->opts->arg, ctx->res->done, ctx->inflight)) {
        ctx->stop = 1;
        ctx->res->stopped_inflight = ctx->inflight;
    }
}

static void run_op_done(int status, uint32_t leader_id, const uint8_t *body, size_t len, void *data)
{
    struct run_ref *ref = data;
    run_record(ref->ctx, ref->index, status, leader_id, body, len);
    run_issue(ref->ctx);
}

static void run_issue(struct run_ctx *ctx)
{
    unsigned window = ctx->opts->window != 0 ? ctx->opts->window : 64;

    if (ctx->issuing) {
        return;
    }
    ctx->issuing = 1;
    while (!ctx->stop && !ctx->closing && ctx->inflight < window && ctx->next < ctx->n) {
        size_t k = ctx->next++;
        struct e2e_op *op = &ctx->ops[k];
        int rv;
        ctx->refs[k].ctx = ctx;
        ctx->refs[k].index = k;
        op->issued = 1;
        ctx->res->issued++;
        ctx->inflight++;
        rv = gs_client_call(ctx->client, op->method, op->req, op->req_len, NULL, run_op_done,
                            &ctx->refs[k]);
        if (rv != 0) {
            run_record(ctx, k, rv, 0, NULL, 0);
        }
    }
    ctx->issuing = 0;
    run_maybe_finish(ctx);
}

int e2e_run(struct e2e_op *ops, size_t n, const struct e2e_run_options *opts,
            struct e2e_run_result *res)
{
    struct run_ctx *ctx;
    double t0 = e2e_now_ms();
    double hard_deadline;
    int rv;

    memset(res, 0, sizeof *res);
    for (size_t i = 0; i < n; i++) {
        ops[i].issued = 0;
        ops[i].done = 0;
        ops[i].status = 1;
        ops[i].resp = NULL;
        ops[i].resp_len = 0;
    }
    ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        return GS_ENOMEM;
    }
    ctx->refs = calloc(n > 0 ? n : 1, sizeof *ctx->refs);
    if (ctx->refs == NULL) {
        free(ctx);
        return GS_ENOMEM;
    }
    ctx->ops = ops;
    ctx->n = n;
    ctx->opts = opts;
    ctx->res = res;
    if (uv_loop_init(&ctx->loop) != 0) {
        free(ctx->refs);
        free(ctx);
        return GS_EIO;
    }
    rv = gs_client_open(&ctx->loop, opts->seeds, opts->n_seeds, &opts->client, &ctx->client);
    if (rv != 0) {
        e2e_log("harness: gs_client_open: %s", gs_error_name(rv));
        uv_loop_close(&ctx->loop);
        free(ctx->refs);
        free(ctx);
        return rv;
    }
    uv_timer_init(&ctx->loop, &ctx->deadline);
    uv_timer_init(&ctx->loop, &ctx->kick);
    ctx->deadline.data = ctx;
    ctx->kick.data = ctx;
    uv_timer_start(&ctx->deadline, run_deadline_cb, opts->deadline_ms, 0);
    run_issue(ctx);

    /* The deadline timer bounds the run; the client's close is bounded by
     * its own connections closing. Allow it 10 s more before giving up. */
    hard_deadline = t0 + opts->deadline_ms + 10000.0;
    while (!ctx->client_closed && e2e_now_ms() < hard_deadline) {
        if (uv_run(&ctx->loop, UV_RUN_ONCE) == 0 && !ctx->client_closed) {
            break;
        }
    }
    res->elapsed_ms = e2e_now_ms() - t0;
    if (!ctx->client_closed) {
        /* The loop still references the client: leak it rather than free
         * memory that handles point into. */
        e2e_log("harness: client did not close within %.0f ms; loop leaked", hard_deadline - t0);
        return GS_ETIMEOUT;
    }
    /* Let the uv_close callbacks run. */
    for (int k = 0; k < 100 && uv_run(&ctx->loop, UV_RUN_NOWAIT) != 0; k++) {
    }
    if (uv_loop_close(&ctx->loop) != 0) {
        e2e_log("harness: loop still busy after the client closed; loop leaked");
        return 0;
    }
    free(ctx->refs);
    free(ctx);
    return 0;
}
