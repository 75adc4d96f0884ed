#!/usr/bin/env bash
# Write the configs of a three-node GeoScale cell on loopback:
# DIR/node1.json, DIR/node2.json, DIR/node3.json.
#
# Usage: scripts/gen-cell-config.sh DIR [BASE_PORT]
#
# Node N (1..3) gets raft_address 127.0.0.1:BASE_PORT+N and client_address
# 127.0.0.1:BASE_PORT+100+N (BASE_PORT defaults to 7100, so the client ports
# are 7201-7203), data_dir DIR/nodeN, region "us-east", cell 1. The three
# share the peers list and one username_hash_key, 32 bytes from /dev/urandom
# in hex. The key is secret (it keys the hash of every username), so the
# files are written readable by their owner only.
#
# Existing node configs in DIR are overwritten; data directories are left
# alone (a node creates its own).
set -euo pipefail

prog=gen-cell-config
usage() {
    echo "usage: scripts/gen-cell-config.sh DIR [BASE_PORT]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
dir=$1
base=${2:-7100}
if ! [[ $base =~ ^[0-9]{1,5}$ ]] || ((10#$base < 1 || 10#$base > 65535 - 103)); then
    echo "$prog: BASE_PORT must be an integer from 1 to $((65535 - 103)), got '$base'" >&2
    exit 2
fi
base=$((10#$base))

mkdir -p "$dir"
dir=$(cd "$dir" && pwd) # absolute: a node may run from any directory
# The path goes into JSON strings unescaped; refuse what would need escaping.
if [[ $dir == *[\"\\]* || $dir == *[[:cntrl:]]* ]]; then
    echo "$prog: DIR must not contain '\"', '\\' or control characters: $dir" >&2
    exit 2
fi

key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
if ! [[ $key =~ ^[0-9a-f]{64}$ ]]; then
    echo "$prog: could not read 32 bytes from /dev/urandom" >&2
    exit 1
fi

raft_address() { echo "127.0.0.1:$((base + $1))"; }
client_address() { echo "127.0.0.1:$((base + 100 + $1))"; }

peers=""
for n in 1 2 3; do
    peers+="    {\"id\": $n, \"raft_address\": \"$(raft_address $n)\", "
    peers+="\"client_address\": \"$(client_address $n)\"}"
    [ $n -lt 3 ] && peers+=","
    peers+=$'\n'
done

umask 077
for n in 1 2 3; do
    out=$dir/node$n.json
    cat >"$out.tmp" <<EOF
{
  "node_id": $n,
  "region": "us-east",
  "cell_id": 1,
  "raft_address": "$(raft_address $n)",
  "client_address": "$(client_address $n)",
  "data_dir": "$dir/node$n",
  "peers": [
$peers  ],
  "username_hash_key": "$key",
  "raft": {"election_timeout_ms": 500, "heartbeat_timeout_ms": 50}
}
EOF
    mv "$out.tmp" "$out"
done
echo "$prog: wrote $dir/node1.json $dir/node2.json $dir/node3.json" \
    "(client ports $((base + 101))-$((base + 103)), raft ports $((base + 1))-$((base + 3)))"
