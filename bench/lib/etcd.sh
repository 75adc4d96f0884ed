# shellcheck shell=bash
# etcd for the side-by-side benchmark: three members of Debian's etcd-server
# on loopback, with fresh data directories and etcd's default durability
# (the WAL is fsynced before a write is acknowledged; --unsafe-no-fsync is
# not given). Sourced by bench/compare.sh; bash.
#
#   etcd_start DIR   start the members (data, logs in DIR/etcdN), wait until
#                    `etcdctl endpoint health` and `endpoint status` answer
#                    for all three and one of them is the leader. Sets
#                    ETCD_ENDPOINTS (comma-separated client URLs).
#   etcd_stop        SIGTERM the members, wait (SIGKILL after 10 s).
#   etcd_status      `etcdctl endpoint status` of the three, as a table.
#
# Ports: six free loopback ports found with bench/lib/ports.sh; stopping
# with stop_pids (bench/lib/procs.sh). Both sourced first.

# shellcheck source=bench/lib/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

ETCD_PIDS=()
ETCD_ENDPOINTS=""

etcd_start() {
    local dir=$1 n cluster="" ports client peer i
    command -v etcd >/dev/null || {
        echo "etcd: etcd not found (Debian package etcd-server)" >&2
        return 1
    }
    command -v etcdctl >/dev/null || {
        echo "etcd: etcdctl not found (Debian package etcd-client)" >&2
        return 1
    }
    mkdir -p "$dir"
    ports=$(free_ports 6) || return 1
    read -r -a ports <<<"$ports"
    for n in 1 2 3; do
        peer=${ports[$((n + 2))]}
        cluster+="${cluster:+,}etcd$n=http://127.0.0.1:$peer"
    done
    ETCD_ENDPOINTS=""
    for n in 1 2 3; do
        client=${ports[$((n - 1))]}
        peer=${ports[$((n + 2))]}
        rm -rf "$dir/etcd$n"
        mkdir -p "$dir/etcd$n"
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:$client"
        etcd --name "etcd$n" --data-dir "$dir/etcd$n/data" \
            --listen-client-urls "http://127.0.0.1:$client" \
            --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "geoscale-bench-$$" \
            >"$dir/etcd$n/etcd.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    # Healthy: every member answers, and exactly one is the leader.
    for ((i = 0; i < 300; i++)); do
        for n in 0 1 2; do
            kill -0 "${ETCD_PIDS[$n]}" 2>/dev/null || {
                echo "etcd: member $((n + 1)) exited; last lines of its log:" >&2
                tail -n 15 "$dir/etcd$((n + 1))/etcd.log" >&2
                return 1
            }
        done
        if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" --command-timeout=2s \
            endpoint health >/dev/null 2>&1 &&
            [ "$(etcd_status 2>/dev/null | awk -F', ' '$5 == "true"' | wc -l)" -eq 1 ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "etcd: the cluster did not become healthy within 30 s" >&2
    return 1
}

etcd_status() {
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" --command-timeout=2s \
        endpoint status
}

etcd_stop() {
    [ "${#ETCD_PIDS[@]}" -eq 0 ] || stop_pids "${ETCD_PIDS[@]}"
    ETCD_PIDS=()
}
