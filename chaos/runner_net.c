/*
 * The chaos runner's network (see runner_net.h): namespaces, veth pairs, a
 * bridge and blackhole routes, all through iproute2's `ip`, run as a child
 * process with an argument vector (no shell).
 */
#include "runner_net.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "geoscale/errors.h"

#define RNET_RAFT_PORT 7101
#define RNET_CLIENT_PORT 7201
#define RNET_MAX_ARGS 16

/* Run `ip` with the space-separated words of the formatted command. Its
 * output is discarded unless verbose; returns its exit status (0 = ok) or
 * -1 if it could not run. */
static int rnet_ip(bool quiet, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rnet_ip(bool quiet, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char *argv[RNET_MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "ip";
    char *save = NULL;
    for (char *w = strtok_r(line, " ", &save); w != NULL && argc < RNET_MAX_ARGS + 1;
         w = strtok_r(NULL, " ", &save)) {
        argv[argc++] = w;
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            if (quiet) {
                dup2(devnull, STDERR_FILENO);
            }
        }
        execvp("ip", argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int rnet_probe(void)
{
    char name[64];
    snprintf(name, sizeof name, RNET_NS_PREFIX "probe-%d", (int)getpid());
    if (rnet_ip(true, "netns add %s", name) != 0) {
        return 0;
    }
    rnet_ip(true, "netns del %s", name);
    return 1;
}

void rnet_cleanup_stale(void)
{
    DIR *d = opendir("/run/netns");
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    char names[64][64];
    int n = 0;
    while ((e = readdir(d)) != NULL && n < 64) {
        if (strncmp(e->d_name, RNET_NS_PREFIX, strlen(RNET_NS_PREFIX)) == 0) {
            snprintf(names[n++], sizeof names[0], "%.63s", e->d_name);
        }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        const char *rest = names[i] + strlen(RNET_NS_PREFIX);
        char *end = NULL;
        long pid = strtol(rest, &end, 10);
        bool probe = strncmp(rest, "probe-", 6) == 0;
        if (probe) {
            pid = strtol(rest + 6, &end, 10);
        }
        if (pid <= 0 || pid == getpid() || (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
            continue; /* ours, or its runner still lives */
        }
        fprintf(stderr, "chaos: removing namespace %s left by a run that is gone (pid %ld)\n",
                names[i], pid);
        rnet_ip(true, "netns del %s", names[i]);
        rnet_ip(true, "link del gscb%ld", pid);
    }
}

/* Free loopback ports: bind several sockets to port 0 at once, note their
 * numbers, close them. */
static int rnet_free_ports(int *ports, int n)
{
    int fds[2 * RNET_NODES];
    int rv = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = -1;
    }
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &len) != 0) {
            rv = GS_EIO;
            break;
        }
        ports[i] = ntohs(a.sin_port);
    }
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    return rv;
}

static int rnet_setup_netns(struct rnet *n)
{
    n->subnet = 1 + n->pid % 250;
    snprintf(n->bridge, sizeof n->bridge, "gscb%d", n->pid % 10000000);
    snprintf(n->host_ip, sizeof n->host_ip, "10.231.%d.254", n->subnet);
    if (rnet_ip(false, "link add %s type bridge", n->bridge) != 0) {
        fprintf(stderr, "chaos: ip link add %s type bridge failed\n", n->bridge);
        return GS_EIO;
    }
    n->bridge_created = true;
    if (rnet_ip(false, "addr add %s/24 dev %s", n->host_ip, n->bridge) != 0 ||
        rnet_ip(false, "link set %s up", n->bridge) != 0) {
        fprintf(stderr, "chaos: could not address bridge %s as %s/24\n", n->bridge, n->host_ip);
        return GS_EIO;
    }
    for (int i = 0; i < RNET_NODES; i++) {
        char host_if[16], node_if[16];
        snprintf(host_if, sizeof host_if, "gscv%dn%d", n->pid % 10000000, i + 1);
        snprintf(node_if, sizeof node_if, "gscp%dn%d", n->pid % 10000000, i + 1);
        snprintf(n->node_ip[i], sizeof n->node_ip[i], "10.231.%d.%d", n->subnet, i + 1);
        if (rnet_ip(false, "netns add %s", n->ns[i]) != 0) {
            fprintf(stderr, "chaos: ip netns add %s failed\n", n->ns[i]);
            return GS_EIO;
        }
        n->ns_created[i] = true;
        if (rnet_ip(false, "link add %s type veth peer name %s", host_if, node_if) != 0 ||
            rnet_ip(false, "link set %s netns %s", node_if, n->ns[i]) != 0 ||
            rnet_ip(false, "-n %s link set %s name eth0", n->ns[i], node_if) != 0 ||
            rnet_ip(false, "-n %s addr add %s/24 dev eth0", n->ns[i], n->node_ip[i]) != 0 ||
            rnet_ip(false, "-n %s link set eth0 up", n->ns[i]) != 0 ||
            rnet_ip(false, "-n %s link set lo up", n->ns[i]) != 0 ||
            rnet_ip(false, "link set %s master %s", host_if, n->bridge) != 0 ||
            rnet_ip(false, "link set %s up", host_if) != 0) {
            fprintf(stderr, "chaos: could not wire namespace %s to bridge %s\n", n->ns[i],
                    n->bridge);
            return GS_EIO;
        }
        snprintf(n->raft_address[i], sizeof n->raft_address[i], "%s:%d", n->node_ip[i],
                 RNET_RAFT_PORT);
        snprintf(n->client_address[i], sizeof n->client_address[i], "%s:%d", n->node_ip[i],
                 RNET_CLIENT_PORT);
    }
    return 0;
}

int rnet_setup(struct rnet *n, enum rnet_mode mode)
{
    memset(n, 0, sizeof *n);
    n->mode = mode;
    n->pid = (int)getpid();
    for (int i = 0; i < RNET_NODES; i++) {
        snprintf(n->ns[i], sizeof n->ns[i], RNET_NS_PREFIX "%d-%d", n->pid, i + 1);
        snprintf(n->ns_path[i], sizeof n->ns_path[i], "/run/netns/%s", n->ns[i]);
    }
    if (mode == RNET_NETNS) {
        int rv = rnet_setup_netns(n);
        if (rv != 0) {
            rnet_teardown(n);
        }
        return rv;
    }
    int ports[2 * RNET_NODES];
    if (rnet_free_ports(ports, 2 * RNET_NODES) != 0) {
        fprintf(stderr, "chaos: could not find free loopback ports\n");
        return GS_EIO;
    }
    snprintf(n->host_ip, sizeof n->host_ip, "127.0.0.1");
    for (int i = 0; i < RNET_NODES; i++) {
        snprintf(n->node_ip[i], sizeof n->node_ip[i], "127.0.0.1");
        snprintf(n->raft_address[i], sizeof n->raft_address[i], "127.0.0.1:%d", ports[i]);
        snprintf(n->client_address[i], sizeof n->client_address[i], "127.0.0.1:%d",
                 ports[RNET_NODES + i]);
    }
    return 0;
}

void rnet_teardown(struct rnet *n)
{
    for (int i = 0; i < RNET_NODES; i++) {
        if (n->ns_created[i]) {
            /* Deleting the namespace deletes its end of the veth pair and
             * with it the pair (and its routes). */
            rnet_ip(true, "netns del %s", n->ns[i]);
            n->ns_created[i] = false;
        }
        for (int j = 0; j < RNET_NODES; j++) {
            n->cut[i][j] = false;
        }
        n->cut_clients[i] = false;
    }
    if (n->bridge_created) {
        rnet_ip(true, "link del %s", n->bridge);
        n->bridge_created = false;
    }
}

static int rnet_route(struct rnet *n, int i, const char *addr, bool cut)
{
    if (n->mode != RNET_NETNS || !n->ns_created[i]) {
        return GS_EINVAL;
    }
    int rv = rnet_ip(false, "-n %s route %s blackhole %s/32", n->ns[i], cut ? "add" : "del", addr);
    return rv == 0 ? 0 : GS_EIO;
}

int rnet_set_cut(struct rnet *n, int i, int j, bool cut)
{
    if (i == j || n->cut[i][j] == cut) {
        return 0;
    }
    int rv = rnet_route(n, i, n->node_ip[j], cut);
    if (rv == 0) {
        n->cut[i][j] = cut;
    }
    return rv;
}

int rnet_set_cut_clients(struct rnet *n, int i, bool cut)
{
    if (n->cut_clients[i] == cut) {
        return 0;
    }
    int rv = rnet_route(n, i, n->host_ip, cut);
    if (rv == 0) {
        n->cut_clients[i] = cut;
    }
    return rv;
}

int rnet_heal(struct rnet *n)
{
    int first = 0;
    for (int i = 0; i < RNET_NODES; i++) {
        for (int j = 0; j < RNET_NODES; j++) {
            if (n->cut[i][j]) {
                int rv = rnet_set_cut(n, i, j, false);
                first = first != 0 ? first : rv;
            }
        }
        if (n->cut_clients[i]) {
            int rv = rnet_set_cut_clients(n, i, false);
            first = first != 0 ? first : rv;
        }
    }
    return first;
}

int rnet_enter(const struct rnet *n, int i)
{
    if (n->mode != RNET_NETNS) {
        return 0;
    }
    int fd = open(n->ns_path[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rv = setns(fd, CLONE_NEWNET);
    close(fd);
    return rv;
}
