#!/usr/bin/env bash
# The GeoScale walk-through run by `make demo`: a three-node cell on
# loopback, users, privacy, the social graph, the loss of the leader and the
# return of the lost node, each step printed with the commands it runs.
#
# Usage: scripts/demo.sh BUILD_DIR   (BUILD_DIR holds geoscaled and geoscale)
#
# Ports: raft 7101-7103, client 7201-7203 (DEMO_BASE_PORT=N moves them to
# N+1.. and N+101..). A port already in use stops the demo before anything
# starts. Everything lives in a temporary directory that is removed at the
# end; the nodes are always stopped, also when a step fails (then the tail
# of each node's log is printed first). Every wait is bounded.
set -euo pipefail

build=${1:?usage: scripts/demo.sh BUILD_DIR}
build=$(cd "$build" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
geoscaled=$build/geoscaled
geoscale=$build/geoscale
base_port=${DEMO_BASE_PORT:-7100}
if ! [[ $base_port =~ ^[1-9][0-9]{0,4}$ ]] || ((base_port > 65535 - 103)); then
    echo "demo: DEMO_BASE_PORT must be an integer from 1 to $((65535 - 103))" >&2
    exit 2
fi
if [ -d "$build/libraft/prefix/lib" ]; then
    export LD_LIBRARY_PATH="$build/libraft/prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

tmp=""
regions_dir="" # part 2: the multi-region cluster's directory
pids=("" "" "" "") # pids[N]: the running geoscaled of node N (1..3), "" if none
t0=$(date +%s%N)

die() {
    echo "demo: FAILED: $*" >&2
    exit 1
}

heading() {
    printf '\n== %s\n' "$*"
}

# --------------------------------------------------------------- processes

alive() { # alive N: node N's process runs
    [ -n "${pids[$1]}" ] && kill -0 "${pids[$1]}" 2>/dev/null
}

start_node() { # start_node N
    "$geoscaled" --config "$tmp/node$1.json" >>"$tmp/node$1.log" 2>&1 &
    pids[$1]=$!
    echo "started node $1 (pid ${pids[$1]}, log $tmp/node$1.log)"
}

# stop_node N SIGNAL: signal node N, wait up to 10 s, then SIGKILL. Sets
# stop_status to the exit status (128+signal when killed by one).
stop_node() {
    local n=$1 sig=$2 pid=${pids[$1]} i
    stop_status=0
    [ -n "$pid" ] || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "demo: node $n did not exit within 10 s of SIG$sig; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" && stop_status=0 || stop_status=$?
    pids[n]=""
}

cleanup() {
    local rc=$? n
    trap - EXIT INT TERM
    if [ -n "$regions_dir" ] && [ -f "$regions_dir/cluster.json" ]; then
        "$geoscale" cluster down --dir "$regions_dir" >/dev/null 2>&1 || true
    fi
    for n in 1 2 3; do
        if [ -n "${pids[$n]}" ]; then
            stop_node "$n" TERM
        fi
    done
    if [ "$rc" -ne 0 ] && [ -n "$tmp" ]; then
        for n in 1 2 3; do
            if [ -s "$tmp/node$n.log" ]; then
                echo "---- last lines of node $n's log" >&2
                tail -n 15 "$tmp/node$n.log" >&2
            fi
        done
    fi
    [ -n "$tmp" ] && rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- CLI

# gs ARGS: the CLI against the demo cell (GEOSCALE_NODES), output as is.
gs() {
    "$geoscale" "$@"
}

# show ARGS: print the command line, then run it and indent its output.
# The CLI's exit status is returned.
show() {
    local rc=0 out
    printf '$ geoscale'
    printf ' %q' "$@"
    printf '\n'
    out=$(gs "$@" 2>&1) || rc=$?
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
    shown=$out
    return "$rc"
}

# field KEY: the value of "KEY: value" in the last shown output.
field() {
    printf '%s\n' "$shown" | awk -v k="$1:" '$1 == k { sub(/^[^:]*: */, ""); print; exit }'
}

# status_table: `cell status` of the three nodes, quickly (a dead node is
# an unreachable row).
status_table() {
    gs --timeout 1000 cell status 2>/dev/null || true
}

# wait_leader SECONDS EXCLUDED_NODE: until every running node answers and
# all name one leader (not EXCLUDED_NODE). Sets leader.
wait_leader() {
    local deadline=$(($(date +%s) + $1)) excluded=${2:-0} table n ok
    leader=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        for n in 1 2 3; do
            if [ -n "${pids[$n]}" ] && ! alive "$n"; then
                die "node $n exited unexpectedly"
            fi
        done
        table=$(status_table)
        # Rows: NODE ADDRESS STATE LEADER ...; one says "leader", the
        # others of running nodes name it.
        leader=$(awk 'NR > 1 && $3 == "leader" { print $1 }' <<<"$table" | head -n 1)
        ok=0
        if [ -n "$leader" ] && [ "$leader" != "$excluded" ]; then
            ok=1
            for n in 1 2 3; do
                [ -n "${pids[$n]}" ] || continue
                if ! awk -v n="$n" -v l="$leader" \
                    'NR > 1 && $1 == n && $4 == l { f = 1 } END { exit !f }' <<<"$table"; then
                    ok=0
                fi
            done
        fi
        if [ "$ok" -eq 1 ]; then
            status_shown=$table
            return 0
        fi
        sleep 0.1
    done
    printf '%s\n' "$table" >&2
    die "no leader within $1 s"
}

# ----------------------------------------------------------------- checks

[ -x "$geoscaled" ] || die "$geoscaled not found or not executable (build first: make build)"
[ -x "$geoscale" ] || die "$geoscale not found or not executable (build first: make build)"
command -v ss >/dev/null || die "ss not found (Debian package iproute2)"

ports=()
for n in 1 2 3; do
    ports+=($((base_port + n)) $((base_port + 100 + n)))
done
for p in "${ports[@]}"; do
    if [ -n "$(ss -ltnH "sport = :$p")" ]; then
        die "port $p is already in use (ss -ltn shows a listener); stop what uses it," \
            "or move the demo with DEMO_BASE_PORT=N (ports N+1..3, N+101..103)"
    fi
done
export GEOSCALE_NODES="127.0.0.1:$((base_port + 101)),127.0.0.1:$((base_port + 102)),127.0.0.1:$((base_port + 103))"

# ----------------------------------------------------------------- steps

heading "1. start a 3-node cell"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/geoscale-demo.XXXXXX")
"$root/scripts/gen-cell-config.sh" "$tmp" "$base_port"
for n in 1 2 3; do
    start_node "$n"
done
echo "\$ export GEOSCALE_NODES=$GEOSCALE_NODES   # the CLI talks to these"
t_start=$(date +%s%N)
wait_leader 15
echo "leader elected in $((($(date +%s%N) - t_start) / 1000000)) ms:"
printf '$ geoscale cell status\n%s\n' "$status_shown" | sed '2,$s/^/    /'

heading "2. create users alice, bob and carol"
show user create --username alice --display-name "Alice Liddell" \
    --email alice@example.org --phone +15550100 --birth-date 1990-05-04 \
    --bio "Curiouser and curiouser" --plan pro || die "creating alice"
alice=$(field user_id)
show user create --username bob --display-name "Bob" --email bob@example.org ||
    die "creating bob"
bob=$(field user_id)
show user create --username carol --display-name "Carol" --email carol@example.org ||
    die "creating carol"
carol=$(field user_id)
[ -n "$alice" ] && [ -n "$bob" ] && [ -n "$carol" ] || die "a user id is missing"
echo "ids: alice=$alice bob=$bob carol=$carol"

heading "3. alice shows her profile to followers only and hides her email; bob follows alice"
show settings set "$alice" --profile followers --email-visibility private ||
    die "setting alice's privacy"
show follow "$bob" "$alice" || die "bob following alice"

heading "4. read alice as bob (a follower) and as carol (a stranger)"
show user get "$alice" --viewer "$bob" || die "reading alice as bob"
[ "$(field display_name)" = "Alice Liddell" ] || die "bob should see alice's display name"
[ "$(field email)" = "(hidden)" ] || die "alice's email should be hidden from bob"
echo "-> bob follows alice: he sees her profile, but not her private email"
show user get "$alice" --viewer "$carol" || die "reading alice as carol"
[ "$(field display_name)" = "(hidden)" ] || die "alice's profile should be hidden from carol"
echo "-> carol does not follow alice: only the handle and counts are visible"
show user get "$alice" --viewer "$alice" || die "reading alice as alice"
[ "$(field email)" = "alice@example.org" ] || die "alice should see her own email"
echo "-> alice sees everything of her own"

heading "5. the followers of alice; carol blocks bob"
show followers "$alice" || die "listing alice's followers"
grep -qw "$bob" <<<"$shown" || die "bob should be among alice's followers"
show block "$carol" "$bob" || die "carol blocking bob"
rc=0
show user get "$carol" --viewer "$bob" || rc=$?
[ "$rc" -eq 1 ] && grep -q NOT_FOUND <<<"$shown" ||
    die "carol's profile should be NOT_FOUND for bob (exit $rc)"
echo "-> for bob, carol no longer exists (exit status $rc)"

heading "6. SIGKILL the leader (node $leader) and wait for a new one"
old_leader=$leader
[[ $old_leader =~ ^[123]$ ]] || die "unexpected leader id '$old_leader'"
echo "\$ kill -KILL ${pids[$old_leader]}   # node $old_leader"
t_kill=$(date +%s%N)
kill -KILL "${pids[$old_leader]}"
wait "${pids[$old_leader]}" 2>/dev/null || true
pids[old_leader]=""
wait_leader 15 "$old_leader"
echo "new leader: node $leader, $((($(date +%s%N) - t_kill) / 1000000)) ms after the kill:"
printf '$ geoscale cell status\n%s\n' "$status_shown" | sed '2,$s/^/    /'

heading "7. reads and writes go on through the new leader"
show user get "$alice" --viewer "$bob" || die "reading alice after the failover"
[ "$(field display_name)" = "Alice Liddell" ] || die "alice's profile changed after the failover"
show user create --username dave --display-name "Dave" || die "creating dave after the failover"
dave=$(field user_id)
show follow "$dave" "$alice" || die "dave following alice"
show followers "$alice" || die "listing alice's followers"
grep -qw "$dave" <<<"$shown" || die "dave should be among alice's followers"

heading "8. restart node $old_leader; it catches up and the replicas agree"
start_node "$old_leader"
deadline=$(($(date +%s) + 30))
caught_up=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    alive "$old_leader" || die "node $old_leader exited after its restart"
    table=$(status_table)
    # All three answer, name one leader and have applied the same index.
    if awk 'NR > 1 && $3 != "unreachable" { n++; lead[$4] = 1; app[$7] = 1 }
            END { nl = 0; na = 0; for (k in lead) nl++; for (k in app) na++;
                  exit !(n == 3 && nl == 1 && na == 1 && !("-" in lead)) }' <<<"$table"; then
        caught_up=1
        break
    fi
    sleep 0.2
done
[ "$caught_up" -eq 1 ] || {
    printf '%s\n' "$table" >&2
    die "node $old_leader did not catch up within 30 s"
}
printf '$ geoscale cell status\n%s\n' "$table" | sed '2,$s/^/    /'
# The digests are taken one node after the other: retry briefly in case an
# entry (a leader's no-op, say) was being applied in between.
agree=0
for i in 1 2 3 4 5 6 7 8 9 10; do
    rc=0
    out=$(gs cell digest 2>&1) || rc=$?
    if [ "$rc" -eq 0 ] && [ "$(tail -n 1 <<<"$out")" = "digests: agree" ]; then
        agree=1
        break
    fi
    sleep 0.5
done
show cell digest || true
[ "$agree" -eq 1 ] || die "the replicas' state digests differ"

heading "9. stop the cell (SIGTERM) and check that every node exits cleanly"
for n in 1 2 3; do
    stop_node "$n" TERM
    [ "$stop_status" -eq 0 ] || die "node $n exited with status $stop_status on SIGTERM"
    echo "node $n stopped, exit status 0"
done

# ------------------------------------------------------- part 2: regions

heading "10. a multi-region cluster: 4 regions, a cell each, the directory and metadata groups"
regions_dir="$tmp/regions"
base=${DEMO_REGIONS_BASE_PORT:-7300}
echo "\$ geoscale cluster up --regions us-east,us-west,eu,asia --cells-per-region 1 --dir $regions_dir --base-port $base"
"$geoscale" cluster up --regions us-east,us-west,eu,asia --cells-per-region 1 \
    --dir "$regions_dir" --base-port "$base" --geoscaled "$geoscaled" 2>&1 | tail -n 2 | sed 's/^/    /' ||
    die "cluster up failed"
# Nodes of each region (the layout of cluster up: 3 per cell, 4 ports each).
us_east="127.0.0.1:$base"
eu="127.0.0.1:$((base + 24))"
asia="127.0.0.1:$((base + 36))"

heading "11. sign up users in their home regions (their PII stays there)"
# Signups wait for the cells to register in the directory (a second at most).
rc=1
for i in $(seq 1 20); do
    rc=0
    show --nodes "$us_east" user create --username dana --display-name "Dana (us-east)" \
        --email dana@example.org --plan free >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && break
    sleep 0.25
done
[ "$rc" -eq 0 ] || die "signup in us-east failed"
show --nodes "$us_east" user get --username dana || die "read back failed"
dana=$(field user_id)
show --nodes "$eu" user create --username emil --display-name "Emil (eu)" --email emil@example.org ||
    die "signup in eu failed"
emil=$(field user_id)

heading "12. follow across regions (ids only cross); PII never crosses a region"
show --nodes "$eu" follow "$emil" "$dana" || die "cross-region follow failed"
rc=0
show --pin --nodes "$eu" user get "$dana" || rc=$?
[ "$rc" -ne 0 ] || die "a PII read of a us-east user was served in eu"
echo "-> an eu node does not serve dana's profile: WRONG_CELL, with a route hint"
show --nodes "$eu" user get "$dana" || die "the client did not follow the route hint"
echo "-> without --pin the client follows the hint to dana's cell in us-east"

heading "13. dana's plan changes in us-east; asia reads it from its local metadata replica"
show --nodes "$us_east" user update "$dana" --plan pro >/dev/null || die "update failed"
seen=0
for i in $(seq 1 40); do
    if gs --nodes "$asia" meta get "$dana" 2>/dev/null | grep -q 'plan: *pro'; then
        seen=1
        break
    fi
    sleep 0.1
done
show --nodes "$asia" meta get "$dana" || true
[ "$seen" -eq 1 ] || die "the metadata change did not reach asia within 4 s"
show --nodes "$us_east" followers "$dana" || die "followers failed"

heading "14. cluster status, then stop every node"
"$geoscale" cluster status --dir "$regions_dir" 2>&1 | sed -n '1,12p' | sed 's/^/    /'
echo "    ..."
"$geoscale" cluster down --dir "$regions_dir" 2>&1 | tail -n 1 | sed 's/^/    /' ||
    die "cluster down failed"
rm -f "$regions_dir/cluster.json"

echo
echo "demo: done in $((($(date +%s%N) - t0) / 1000000000)) s"
