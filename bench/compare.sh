#!/usr/bin/env bash
# GeoScale vs etcd, side by side, on this machine, with the floors under
# both: the disk's sync rate (fio), RocksDB alone (db_bench), libraft alone
# (raft-probe).
#
# Usage: bench/compare.sh            (as root on Debian 12, from anywhere)
#
# In one go: installs the Debian packages it needs if missing, builds
# GeoScale (`make build`) and the Go driver (bench/etcd/build.sh), records
# the machine, runs the floors, then a lone 3-node GeoScale cell (as
# scripts/demo.sh part 1 starts it) and a 3-member etcd cluster
# (bench/lib/etcd.sh), one after the other, through the same matrix:
# value sizes x workloads (kv-put, kv-get) x clients, each run --duration s
# after --warmup s. Every run writes one JSON object (the schema of
# geoscale-bench --json) into OUT; then the markdown tables (with the ratio
# GeoScale/etcd) are written to OUT/compare.md and into RESULTS between the
# markers `<!-- compare:begin -->` and `<!-- compare:end -->` (appended at
# the end if missing; the rest of the file is left as it is), and
# bench/plot.sh OUT is called when it exists.
#
# Environment (defaults in brackets):
#   DURATION [10]  WARMUP [2]  seconds per run
#   VALUE_SIZES ["128 1024"]  CLIENTS ["16 64 256"]  WORKLOADS ["kv-put kv-get"]
#   KEYS [10000]  CONNECTIONS [8] (client connections, at most the clients)
#   SYSTEMS ["geoscale etcd"] (empty: floors only)  FLOORS [1] (0: skip fio,
#         db_bench, raft-probe)
#   FLOOR_SECONDS [DURATION]  seconds per floor measurement
#   BUILD [REPO/build]  the GeoScale build directory (geoscaled, geoscale,
#         bench/geoscale-bench, bench/probe/raft-probe); the Go driver goes
#         to BUILD/etcd-bench/
#   NO_BUILD [0]  1: do not run `make build` (the binaries must exist)
#   OUT [BUILD/bench-results/<UTC timestamp>]  results directory
#   RESULTS [REPO/bench/RESULTS.md]  the file whose compare section is written
#   DATA_DIR [${TMPDIR:-/tmp}]  where the data directories of every system and
#         floor are created (a fresh subdirectory, removed at the end)

# The whole script is one compound command, so bash parses it entirely
# before running it: an edit of this file during a run cannot change it.
{
set -euo pipefail
trap '' PIPE

root=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
VALUE_SIZES=${VALUE_SIZES:-"128 1024"}
CLIENTS=${CLIENTS:-"16 64 256"}
WORKLOADS=${WORKLOADS:-"kv-put kv-get"}
KEYS=${KEYS:-10000}
CONNECTIONS=${CONNECTIONS:-8}
SYSTEMS=${SYSTEMS-"geoscale etcd"}
FLOORS=${FLOORS:-1}
FLOOR_SECONDS=${FLOOR_SECONDS:-$DURATION}
BUILD=${BUILD:-$root/build}
NO_BUILD=${NO_BUILD:-0}
RESULTS=${RESULTS:-$root/bench/RESULTS.md}
DATA_DIR=${DATA_DIR:-${TMPDIR:-/tmp}}

log() { printf 'compare: %s\n' "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

for v in DURATION WARMUP; do
    [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$v must be a number of seconds, got '${!v}'"
done
[[ $DURATION =~ [1-9] ]] || die "DURATION must be positive"
# db_bench takes whole seconds (0 would mean "run --num operations").
[[ $FLOOR_SECONDS =~ ^[1-9][0-9]*$ ]] || die "FLOOR_SECONDS must be whole seconds >= 1, got '$FLOOR_SECONDS'"
for v in KEYS CONNECTIONS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for s in $SYSTEMS; do
    [[ $s == geoscale || $s == etcd ]] || die "SYSTEMS: unknown system '$s'"
done

# ------------------------------------------------------------- packages

packages=(golang-go golang-etcd-server-dev etcd-server etcd-client fio rocksdb-tools
    gnuplot-nox jq iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (install as root): ${missing[*]}"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        >&2 || die "apt-get install ${missing[*]}"
fi

# ---------------------------------------------------------------- build

[[ $BUILD == /* ]] || BUILD=$PWD/$BUILD
if [ "$NO_BUILD" != 1 ]; then
    log "building GeoScale (make build BUILD=$BUILD)"
    make -C "$root" build BUILD="$BUILD" >&2 || die "make build"
fi
BUILD=$(cd "$BUILD" && pwd)
raft_prefix=$BUILD/libraft/prefix
[ -d "$raft_prefix/lib" ] || raft_prefix=$root/build/libraft/prefix
export LD_LIBRARY_PATH="$raft_prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
geoscaled=$BUILD/geoscaled
geoscale=$BUILD/geoscale
gs_bench=$BUILD/bench/geoscale-bench
probe=$BUILD/bench/probe/raft-probe
"$root/bench/etcd/build.sh" "$BUILD/etcd-bench" >&2 || die "building bench/etcd"
etcd_bench=$BUILD/etcd-bench/etcd-bench
need=("$etcd_bench")
[[ " $SYSTEMS " == *" geoscale "* ]] && need+=("$geoscaled" "$geoscale" "$gs_bench")
[ "$FLOORS" = 1 ] && need+=("$probe")
for b in "${need[@]}"; do
    [ -x "$b" ] || die "$b not built"
done

OUT=${OUT:-$BUILD/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
mkdir -p "$DATA_DIR"
work=$(mktemp -d "$DATA_DIR/geoscale-compare.XXXXXX")
commands=$OUT/commands.txt
: >"$commands"
log "results in $OUT, data directories in $work"

# shellcheck source=bench/lib/ports.sh
. "$root/bench/lib/ports.sh"
# shellcheck source=bench/lib/procs.sh
. "$root/bench/lib/procs.sh"
# shellcheck source=bench/lib/etcd.sh
. "$root/bench/lib/etcd.sh"


gs_pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    etcd_stop
    [ "${#gs_pids[@]}" -eq 0 ] || stop_pids "${gs_pids[@]}"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# note LABEL CMD...: log the command line to OUT/commands.txt (with the
# data, results and build directories as $DATA, $OUT and $BUILD, and paths
# of the repository relative to its root).
note() {
    local label=$1
    shift
    {
        printf '# %s\n' "$label"
        printf '%q ' "$@" | sed "s|$work|\$DATA|g; s|$OUT|\$OUT|g; s|$BUILD|\$BUILD|g; s|$root/||g; s| $||"
        printf '\n'
    } >>"$commands"
}

# record LABEL CMD...: note the command, then run it.
record() {
    note "$@"
    shift
    "$@"
}

# ------------------------------------------------------------- machine

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores: $(nproc) ($(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'))"
    echo "memory: $(free -h | awk '/^Mem:/ { print $2 " total, " $7 " available" }')"
    src=$(findmnt -n -o SOURCE -T "$work")
    fstype=$(findmnt -n -o FSTYPE -T "$work")
    opts=$(findmnt -n -o OPTIONS -T "$work")
    dev=$(lsblk -n -o PKNAME "$src" 2>/dev/null | head -n 1)
    [ -n "$dev" ] || dev=$(basename "$src")
    model=$(lsblk -d -n -o MODEL "/dev/$dev" 2>/dev/null | sed 's/ *$//')
    rota=$(lsblk -d -n -o ROTA "/dev/$dev" 2>/dev/null | tr -d ' ')
    echo "disk: $src on /dev/$dev (model: ${model:-unknown}; rotational: ${rota:-?}), $fstype ($opts)"
    echo "kernel: $(uname -r)"
    echo "etcd: $(etcd --version 2>/dev/null | head -n 1)"
    echo "go: $(go version)"
    echo "rocksdb (db_bench): $(dpkg-query -W -f='${Version}' rocksdb-tools)"
    echo "fio: $(fio --version)"
    echo "libraft: $(PKG_CONFIG_PATH=$raft_prefix/lib/pkgconfig pkg-config --modversion raft 2>/dev/null || echo '?')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --------------------------------------------------------------- floors

if [ "$FLOORS" = 1 ]; then
    log "floor: fio, 4 KiB writes + fdatasync ($FLOOR_SECONDS s)"
    mkdir -p "$work/fio"
    record "disk: 4 KiB sequential writes, fdatasync after each (buffered I/O)" \
        fio --name=fdatasync --directory="$work/fio" --rw=write --bs=4k --size=64m \
        --ioengine=sync --fdatasync=1 --runtime="$FLOOR_SECONDS" --time_based \
        --output-format=json --output="$OUT/floor-fio-fdatasync.fio-json" >/dev/null ||
        log "fio fdatasync failed"
    rm -rf "$work/fio"
    mkdir -p "$work/fio"
    record "disk: 4 KiB sequential writes, O_DIRECT + O_DSYNC (raft_uv's way, where supported)" \
        fio --name=odsync --directory="$work/fio" --rw=write --bs=4k --size=64m \
        --ioengine=psync --direct=1 --sync=dsync --runtime="$FLOOR_SECONDS" --time_based \
        --output-format=json --output="$OUT/floor-fio-odsync.fio-json" >/dev/null ||
        log "fio O_DSYNC failed"
    rm -rf "$work/fio"

    for vs in $VALUE_SIZES; do
        log "floor: db_bench, value $vs B, synced group commit (64 threads) and 64-put batches"
        record "rocksdb: fillrandom, sync=1, 64 threads (group commit), value $vs" \
            db_bench --benchmarks=fillrandom --db="$work/rocksdb-sync-$vs" --sync=1 \
            --threads=64 --duration="$FLOOR_SECONDS" --num=100000000 \
            --value_size="$vs" --key_size=16 --compression_type=none \
            >"$OUT/floor-dbbench-sync-v$vs.txt" 2>&1 || log "db_bench sync failed"
        rm -rf "$work/rocksdb-sync-$vs"
        record "rocksdb: fillrandom, sync=0, batches of 64 puts, 1 thread, value $vs" \
            db_bench --benchmarks=fillrandom --db="$work/rocksdb-batch-$vs" --sync=0 \
            --batch_size=64 --threads=1 --duration="$FLOOR_SECONDS" --num=100000000 \
            --value_size="$vs" --key_size=16 --compression_type=none \
            >"$OUT/floor-dbbench-batch-v$vs.txt" 2>&1 || log "db_bench batch failed"
        rm -rf "$work/rocksdb-batch-$vs"
        # As GeoScale's raft connections are (Nagle on), then with TCP_NODELAY.
        for nd in "" -nodelay; do
            for c in $CLIENTS; do
                name=floor-probe$nd-v$vs-c$c
                log "floor: raft-probe$nd, $vs B entries, $c in flight"
                if ! record "libraft: 3 voters, one $vs-byte entry per proposal, $c in flight${nd:+, TCP_NODELAY}" \
                    "$probe" --entry-size "$vs" --inflight "$c" --duration "$DURATION" \
                    --warmup "$WARMUP" --dir "$work/$name" ${nd:+--nodelay} --json \
                    >"$OUT/$name.json" 2>"$OUT/$name.log"; then
                    log "raft-probe failed (see $OUT/$name.log)"
                    rm -f "$OUT/$name.json"
                fi
                rm -rf "${work:?}/$name"
            done
        done
    done
fi

# ------------------------------------------------------------- the runs

# run_matrix SYSTEM CMD...: every value size x workload x clients, the
# options appended to CMD.
run_matrix() {
    local sys=$1 vs wl c conn name
    shift
    for vs in $VALUE_SIZES; do
        for wl in $WORKLOADS; do
            for c in $CLIENTS; do
                conn=$((CONNECTIONS < c ? CONNECTIONS : c))
                name=$sys-$wl-v$vs-c$c
                log "$name"
                if ! record "$sys: $wl, value $vs, $c clients over $conn connections" \
                    "$@" --workload "$wl" --keys "$KEYS" --value-size "$vs" \
                    --clients "$c" --connections "$conn" --duration "$DURATION" \
                    --warmup "$WARMUP" --json >"$OUT/$name.json" 2>"$OUT/$name.log"; then
                    log "$name failed (see $OUT/$name.log)"
                    rm -f "$OUT/$name.json"
                fi
            done
        done
    done
}

gs_leader_wait() { # until the three nodes name one leader (30 s)
    local i table
    for ((i = 0; i < 300; i++)); do
        table=$("$geoscale" --nodes "$1" --timeout 1000 cell status 2>/dev/null || true)
        if awk 'NR > 1 && $3 == "leader" { l = $1 } NR > 1 { n++; lead[$4]++ }
                END { exit !(l != "" && n == 3 && lead[l] == 3) }' <<<"$table"; then
            printf '%s\n' "$table" >"$OUT/geoscale-cell-status.txt"
            return 0
        fi
        sleep 0.1
    done
    printf '%s\n' "$table" >&2
    return 1
}

if [[ " $SYSTEMS " == *" geoscale "* ]]; then
    log "GeoScale: a lone 3-node cell"
    base=""
    for ((try = 0; try < 50; try++)); do
        b=$((20000 + RANDOM % 9000))
        busy=$(ss -ltnH | awk '{ n = split($4, a, ":"); print a[n] }')
        ok=1
        for p in $((b + 1)) $((b + 2)) $((b + 3)) $((b + 101)) $((b + 102)) $((b + 103)); do
            grep -qx "$p" <<<"$busy" && ok=0
        done
        if [ "$ok" = 1 ]; then
            base=$b
            break
        fi
    done
    [ -n "$base" ] || die "no free ports for the GeoScale cell"
    record "geoscale: the cell's configs" "$root/scripts/gen-cell-config.sh" "$work/geoscale" "$base" >&2
    for n in 1 2 3; do
        note "geoscale: node $n" "$geoscaled" --config "$work/geoscale/node$n.json"
        "$geoscaled" --config "$work/geoscale/node$n.json" >"$OUT/geoscale-node$n.log" 2>&1 &
        gs_pids+=($!)
    done
    seeds="127.0.0.1:$((base + 101)),127.0.0.1:$((base + 102)),127.0.0.1:$((base + 103))"
    gs_leader_wait "$seeds" || die "the GeoScale cell has no leader after 30 s"
    # Keys are users PREFIX_i, created by the first run and reused (value
    # rewritten) by the next ones.
    run_matrix geoscale "$gs_bench" --seeds "$seeds" --reuse --prefix compare
    stop_pids "${gs_pids[@]}"
    gs_pids=()
    du -sh "$work/geoscale" | awk '{ print "geoscale data after the runs: " $1 }' >>"$OUT/machine.txt"
    rm -rf "$work/geoscale"
fi

if [[ " $SYSTEMS " == *" etcd "* ]]; then
    log "etcd: 3 members"
    etcd_start "$work/etcd" || die "etcd did not start"
    for n in 1 2 3; do
        mapfile -d '' -t argv </proc/"${ETCD_PIDS[$((n - 1))]}"/cmdline
        note "etcd: member $n (bench/lib/etcd.sh; default durability)" "${argv[@]}"
    done
    etcd_status >"$OUT/etcd-endpoint-status.txt" 2>&1 || true
    run_matrix etcd "$etcd_bench" --endpoints "$ETCD_ENDPOINTS"
    for n in 1 2 3; do
        cp "$work/etcd/etcd$n/etcd.log" "$OUT/etcd-member$n.log" 2>/dev/null || true
    done
    etcd_stop
    du -sh "$work/etcd" | awk '{ print "etcd data after the runs: " $1 }' >>"$OUT/machine.txt"
    rm -rf "$work/etcd"
fi

# --------------------------------------------------------------- report

log "writing $OUT/compare.md"
"$root/bench/lib/report.sh" "$OUT" >"$OUT/compare.md" || die "report"

if [ -f "$root/bench/plot.sh" ]; then
    log "bench/plot.sh $OUT"
    bash "$root/bench/plot.sh" "$OUT" >&2 || log "bench/plot.sh failed (the tables are written anyway)"
fi

# The section between the markers is replaced; the rest of RESULTS stays.
begin='<!-- compare:begin -->'
end='<!-- compare:end -->'
touch "$RESULTS"
tmp_results=$(mktemp "$RESULTS.XXXXXX")
if grep -qxF "$begin" "$RESULTS" && grep -qxF "$end" "$RESULTS"; then
    awk -v b="$begin" -v e="$end" -v f="$OUT/compare.md" '
        $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' "$RESULTS" >"$tmp_results"
else
    { cat "$RESULTS"; printf '\n%s\n' "$begin"; cat "$OUT/compare.md"; printf '%s\n' "$end"; } >"$tmp_results"
fi
cat "$tmp_results" >"$RESULTS"
rm -f "$tmp_results"
log "done: $OUT/compare.md, section written to $RESULTS"
exit 0
}
