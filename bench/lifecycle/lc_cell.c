/*
 * The cell under measurement (see lc_cell.h).
 *
 * Times. A node's log lines start with a UTC timestamp to the millisecond
 * (engine/log.c). lc_node_start() notes the wall clock at the fork; an
 * event's time after the fork is the difference, exact to about a
 * millisecond, which is enough to split a restart of seconds into its
 * phases (RocksDB open, raft start and log load, ready).
 */
#include "lc_cell.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const char *const lc_disk_part_names[LC_DISK_PARTS] = {"db", "raft", "checkpoints", "incoming",
                                                       "other"};

double lc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------ setup */

static int random_key_hex(char out[65])
{
    unsigned char key[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return GS_EIO;
    }
    n = read(fd, key, sizeof key);
    close(fd);
    if (n != (ssize_t)sizeof key) {
        return GS_EIO;
    }
    for (size_t k = 0; k < sizeof key; k++) {
        snprintf(out + 2 * k, 3, "%02x", key[k]);
    }
    return 0;
}

static int write_config(const struct lc_cell *lc, int i, const char *key)
{
    const struct cluster *c = &lc->c;
    const struct cluster_node *n = &c->nodes[i];
    const struct lc_raft_settings *r = &lc->raft;
    const char *sep = "";
    FILE *f = fopen(n->config_path, "w");

    if (f == NULL) {
        fprintf(stderr, "lifecycle: cannot write %s: %s\n", n->config_path, strerror(errno));
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
    fprintf(f, "],\"username_hash_key\":\"%s\",\"raft\":{", key);
    /* Only the settings asked for: an absent key means the engine default. */
#define RAFT_KEY(field)                                                                            \
    if (r->field != 0) {                                                                           \
        fprintf(f, "%s\"" #field "\":%u", sep, r->field);                                          \
        sep = ",";                                                                                 \
    }
    RAFT_KEY(election_timeout_ms)
    RAFT_KEY(heartbeat_timeout_ms)
    RAFT_KEY(snapshot_threshold)
    RAFT_KEY(snapshot_trailing)
#undef RAFT_KEY
    fprintf(f, "},\"rocksdb\":{\"compression\":%s},\"log_level\":\"info\"}\n",
            lc->compression ? "true" : "false");
    if (fclose(f) != 0) {
        fprintf(stderr, "lifecycle: cannot write %s: %s\n", n->config_path, strerror(errno));
        return GS_EIO;
    }
    return 0;
}

int lc_cell_init(struct lc_cell *lc, const char *geoscaled, const struct lc_raft_settings *raft,
                 int compression)
{
    char key[65];
    int rv;

    memset(lc, 0, sizeof *lc);
    lc->geoscaled = geoscaled;
    lc->raft = *raft;
    lc->compression = compression;
    rv = cluster_init(&lc->c, "lifecycle");
    if (rv != 0) {
        return rv;
    }
    rv = random_key_hex(key);
    if (rv != 0) {
        fprintf(stderr, "lifecycle: cannot read /dev/urandom\n");
        return rv;
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = write_config(lc, i, key);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- processes */

int lc_node_start(struct lc_cell *lc, int i)
{
    struct cluster_node *n = &lc->c.nodes[i];
    struct stat st;
    char marker[128];
    pid_t parent = getpid();
    pid_t pid;
    int fd;
    int len;

    if (n->pid != 0) {
        fprintf(stderr, "lifecycle: node %u already running (pid %d)\n", n->node_id, (int)n->pid);
        return GS_EINVAL;
    }
    fd = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "lifecycle: open %s: %s\n", n->log_path, strerror(errno));
        return GS_EIO;
    }
    len = snprintf(marker, sizeof marker, "=== lifecycle: start %d of node %u ===\n", n->starts + 1,
                   n->node_id);
    if (write(fd, marker, (size_t)len) != len || fstat(fd, &st) != 0) {
        fprintf(stderr, "lifecycle: write %s: %s\n", n->log_path, strerror(errno));
        close(fd);
        return GS_EIO;
    }
    n->log_offset = (long)st.st_size;
    lc->scan_offset[i] = n->log_offset;
    fflush(stdout);
    fflush(stderr);
    lc->exec_wall_ms[i] = lc_wall_ms();
    lc->exec_mono_ms[i] = e2e_now_ms();
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "lifecycle: fork: %s\n", strerror(errno));
        close(fd);
        return GS_EIO;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. A node must not outlive the
         * tool. exec keeps an ignored signal ignored: give the node the
         * default SIGPIPE a shell would (geoscaled ignores it itself). */
        int devnull;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(126);
        }
        signal(SIGPIPE, SIG_DFL);
        devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        dup2(fd, 1);
        dup2(fd, 2);
        execl(lc->geoscaled, "geoscaled", "--config", n->config_path, (char *)NULL);
        _exit(127);
    }
    close(fd);
    n->pid = pid;
    n->starts++;
    return 0;
}

/* Read node i's log from *offset to its end; NUL-terminated, caller frees.
 * *offset advances to the end of the last complete line read. */
static char *read_new_lines(const char *path, long *offset)
{
    char *buf = e2e_read_from(path, *offset);
    char *last_nl;

    if (buf == NULL) {
        return NULL;
    }
    last_nl = strrchr(buf, '\n');
    if (last_nl == NULL) {
        buf[0] = '\0';
        return buf;
    }
    last_nl[1] = '\0';
    *offset += (long)(last_nl + 1 - buf);
    return buf;
}

int lc_node_wait_ready(struct lc_cell *lc, int i, unsigned timeout_ms, double *ready_ms)
{
    struct cluster_node *n = &lc->c.nodes[i];
    double deadline = e2e_now_ms() + timeout_ms;

    for (;;) {
        double now = e2e_now_ms();
        char *buf = read_new_lines(n->log_path, &lc->scan_offset[i]);
        int ready = buf != NULL && strstr(buf, "event=ready") != NULL;
        free(buf);
        if (ready) {
            if (ready_ms != NULL) {
                *ready_ms = now;
            }
            return 0;
        }
        if (!cluster_node_alive(&lc->c, i)) {
            fprintf(stderr, "lifecycle: node %u exited before event=ready (log %s)\n", n->node_id,
                    n->log_path);
            return GS_ECLOSED;
        }
        if (now >= deadline) {
            fprintf(stderr, "lifecycle: node %u not ready after %u ms (log %s)\n", n->node_id,
                    timeout_ms, n->log_path);
            return GS_ETIMEOUT;
        }
        e2e_sleep_ms(2);
    }
}

int lc_cell_start(struct lc_cell *lc, unsigned timeout_ms)
{
    double deadline = e2e_now_ms() + timeout_ms;
    int leader = -1;
    int rv;

    for (int i = 0; i < CLUSTER_NODES; i++) {
        rv = lc_node_start(lc, i);
        if (rv != 0) {
            return rv;
        }
    }
    for (int i = 0; i < CLUSTER_NODES; i++) {
        double left = deadline - e2e_now_ms();
        rv = lc_node_wait_ready(lc, i, left > 1 ? (unsigned)left : 1, NULL);
        if (rv != 0) {
            return rv;
        }
    }
    double left = deadline - e2e_now_ms();
    return cluster_wait_leader(&lc->c, left > 1 ? (unsigned)left : 1, &leader);
}

/* ------------------------------------------------------------ log events */

/* UTC epoch ms of a line starting "YYYY-MM-DDTHH:MM:SS.mmmZ", or -1. */
static double line_time_ms(const char *line)
{
    struct tm tm;
    int ms;

    memset(&tm, 0, sizeof tm);
    if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) * 1000.0 + ms;
}

double lc_node_event_ms(const struct lc_cell *lc, int i, const char *event, const char *field,
                        uint64_t *value)
{
    const struct cluster_node *n = &lc->c.nodes[i];
    char *buf = e2e_read_from(n->log_path, n->log_offset);
    double at = -1;

    if (value != NULL) {
        *value = 0;
    }
    if (buf == NULL) {
        return -1;
    }
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        if (strstr(line, event) != NULL) {
            double t = line_time_ms(line);
            if (t >= 0) {
                at = t - lc->exec_wall_ms[i];
                if (field != NULL && value != NULL) {
                    char pat[64];
                    const char *p;
                    snprintf(pat, sizeof pat, " %s=", field);
                    p = strstr(line, pat);
                    if (p != NULL) {
                        *value = strtoull(p + strlen(pat), NULL, 10);
                    }
                }
                break;
            }
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(buf);
    return at;
}

unsigned lc_node_count(const struct lc_cell *lc, int i, const char *text)
{
    const struct cluster_node *n = &lc->c.nodes[i];
    char *buf = e2e_read_from(n->log_path, n->log_offset);
    unsigned count = 0;

    if (buf == NULL) {
        return 0;
    }
    for (const char *p = buf; (p = strstr(p, text)) != NULL; p += strlen(text)) {
        count++;
    }
    free(buf);
    return count;
}

/* ---------------------------------------------------------- measurements */

int lc_node_mem(const struct lc_cell *lc, int i, struct lc_proc_mem *out)
{
    char path[64];
    char line[256];
    FILE *f;

    memset(out, 0, sizeof *out);
    if (lc->c.nodes[i].pid == 0) {
        return GS_EINVAL;
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)lc->c.nodes[i].pid);
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "lifecycle: %s: %s\n", path, strerror(errno));
        return GS_EIO;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long long kb;
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
            out->rss_bytes = kb * 1024;
        } else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
            out->hwm_bytes = kb * 1024;
        }
    }
    fclose(f);
    return 0;
}

/* Inodes already counted (files with more than one link). */
struct inode_set {
    struct {
        dev_t dev;
        ino_t ino;
    } * v;
    size_t n, cap;
};

/* 1 if (dev, ino) was new and is now in the set, 0 if seen, <0 on ENOMEM. */
static int inode_set_add(struct inode_set *s, dev_t dev, ino_t ino)
{
    for (size_t k = 0; k < s->n; k++) {
        if (s->v[k].dev == dev && s->v[k].ino == ino) {
            return 0;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap != 0 ? 2 * s->cap : 64;
        void *v = realloc(s->v, cap * sizeof *s->v);
        if (v == NULL) {
            return GS_ENOMEM;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].dev = dev;
    s->v[s->n].ino = ino;
    s->n++;
    return 1;
}

static int disk_walk(const char *path, int part, struct lc_disk *d, struct inode_set *seen)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    int rv = 0;

    if (dir == NULL) {
        return errno == ENOENT ? 0 : GS_EIO;
    }
    while ((e = readdir(dir)) != NULL) {
        char child[PATH_MAX];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
            continue;
        }
        if (lstat(child, &st) != 0) {
            continue; /* removed meanwhile (compaction, checkpoint rotation) */
        }
        int p = part;
        if (p < 0) {
            p = LC_DISK_PARTS - 1;
            for (int k = 0; k < LC_DISK_PARTS - 1; k++) {
                if (strcmp(e->d_name, lc_disk_part_names[k]) == 0) {
                    p = k;
                }
            }
        }
        if (S_ISDIR(st.st_mode)) {
            rv = disk_walk(child, p, d, seen);
            if (rv != 0) {
                break;
            }
            continue;
        }
        d->part_bytes[p] += (uint64_t)st.st_size;
        d->part_files[p]++;
        if (p == 0 && part == 0) {
            size_t nl = strlen(e->d_name);
            if (nl > 4 && strcmp(e->d_name + nl - 4, ".log") == 0) {
                d->wal_bytes += (uint64_t)st.st_size;
            }
        }
        int fresh = st.st_nlink > 1 ? inode_set_add(seen, st.st_dev, st.st_ino) : 1;
        if (fresh < 0) {
            rv = fresh;
            break;
        }
        if (fresh) {
            d->unique_bytes += (uint64_t)st.st_size;
            d->allocated_bytes += (uint64_t)st.st_blocks * 512;
        }
    }
    closedir(dir);
    return rv;
}

int lc_node_disk(const struct lc_cell *lc, int i, struct lc_disk *out)
{
    struct inode_set seen = {0};
    int rv;

    memset(out, 0, sizeof *out);
    rv = disk_walk(lc->c.nodes[i].data_dir, -1, out, &seen);
    free(seen.v);
    if (rv != 0) {
        fprintf(stderr, "lifecycle: cannot size %s: %s\n", lc->c.nodes[i].data_dir,
                gs_error_name(rv));
    }
    return rv;
}

int lc_node_raft_dir(const struct lc_cell *lc, int i, struct lc_raft_dir *out)
{
    char path[PATH_MAX];
    DIR *dir;
    struct dirent *e;

    memset(out, 0, sizeof *out);
    if (snprintf(path, sizeof path, "%s/raft", lc->c.nodes[i].data_dir) >= (int)sizeof path) {
        return GS_EINVAL;
    }
    dir = opendir(path);
    if (dir == NULL) {
        fprintf(stderr, "lifecycle: %s: %s\n", path, strerror(errno));
        return GS_EIO;
    }
    while ((e = readdir(dir)) != NULL) {
        unsigned long long a, b, t;
        int used = 0;
        /* libraft raft_uv names (src/uv.h): closed segments
         * "%016llu-%016llu", open ones "open-%llu", snapshots
         * "snapshot-TERM-INDEX-TIMESTAMP" plus a ".meta" sibling. */
        if (sscanf(e->d_name, "%llu-%llu%n", &a, &b, &used) == 2 && e->d_name[used] == '\0') {
            out->closed_segments++;
            if (out->first_index == 0 || a < out->first_index) {
                out->first_index = a;
            }
            if (b > out->last_closed_index) {
                out->last_closed_index = b;
            }
        } else if (strncmp(e->d_name, "open-", 5) == 0) {
            out->open_segments++;
        } else if (sscanf(e->d_name, "snapshot-%llu-%llu-%*u%n", &t, &a, &used) == 2 &&
                   strcmp(e->d_name + used, ".meta") == 0) {
            out->snapshots++;
            if (a > out->snapshot_index) {
                out->snapshot_index = a;
                out->snapshot_term = t;
            }
        }
    }
    closedir(dir);
    return 0;
}

/* Seconds (with microseconds) of a RocksDB LOG line
 * "YYYY/MM/DD-HH:MM:SS.uuuuuu ...", as if UTC (only differences are used,
 * so the time zone RocksDB wrote in does not matter); -1 if not one. */
static double rocksdb_line_s(const char *line)
{
    struct tm tm;
    int usec;

    memset(&tm, 0, sizeof tm);
    if (sscanf(line, "%4d/%2d/%2d-%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &usec) != 7) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + usec / 1e6;
}

int lc_node_rocksdb_open(const struct lc_cell *lc, int i, struct lc_rocksdb_open *out)
{
    char path[PATH_MAX];
    char line[1024];
    double first = -1, started = -1, finished = -1, flush_start = -1, pointer = -1;
    FILE *f;

    memset(out, 0, sizeof *out);
    out->open_ms = out->recovery_ms = out->replay_ms = out->flush_ms = -1;
    if (snprintf(path, sizeof path, "%s/db/LOG", lc->c.nodes[i].data_dir) >= (int)sizeof path) {
        return GS_EINVAL;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        return GS_ENOTFOUND;
    }
    out->flush_ms = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        double t = rocksdb_line_s(line);
        if (t < 0) {
            continue;
        }
        if (first < 0) {
            first = t;
        }
        if (strstr(line, "\"recovery_started\"") != NULL) {
            started = t;
        } else if (strstr(line, "\"recovery_finished\"") != NULL) {
            finished = t;
        } else if (strstr(line, "Recovering log #") != NULL) {
            out->wal_files_replayed++;
        } else if (strstr(line, "WriteLevel0TableForRecovery") != NULL) {
            const char *ok = strstr(line, " bytes OK");
            if (strstr(line, ": started") != NULL) {
                flush_start = t;
            } else if (ok != NULL && flush_start >= 0) {
                const char *num = ok;
                while (num > line && num[-1] >= '0' && num[-1] <= '9') {
                    num--;
                }
                out->flush_bytes += strtoull(num, NULL, 10);
                out->flush_ms += (t - flush_start) * 1000.0;
            }
        } else if (pointer < 0 && strstr(line, "DB pointer") != NULL) {
            pointer = t;
        }
    }
    fclose(f);
    if (first >= 0 && pointer >= 0) {
        out->open_ms = (pointer - first) * 1000.0;
    }
    if (started >= 0 && finished >= 0) {
        out->recovery_ms = (finished - started) * 1000.0;
        out->replay_ms = ((flush_start >= 0 ? flush_start : finished) - started) * 1000.0;
    }
    return 0;
}

void lc_cell_destroy(struct lc_cell *lc, int keep)
{
    lc->c.passed = !keep;
    if (keep && lc->c.dir[0] != '\0') {
        /* cluster_destroy dumps log tails when the directory is kept; say
         * only where it is. */
        cluster_kill_all(&lc->c);
        fprintf(stderr, "lifecycle: directory kept: %s (node logs node1.log..node3.log)\n",
                lc->c.dir);
        lc->c.dir[0] = '\0';
        return;
    }
    cluster_destroy(&lc->c);
}
