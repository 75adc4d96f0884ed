#!/usr/bin/env bash
# Build etcd-bench (bench/etcd/*.go) into OUTDIR/etcd-bench, offline, from
# Debian's Go packages: golang-go and golang-etcd-server-dev (etcd 3.4's
# clientv3 and, as its package dependencies, grpc, protobuf, zap, ... under
# /usr/share/gocode). GOPATH mode (GO111MODULE=off) with that GOPATH and a
# private build cache in OUTDIR/gocache; no network.
#
# Usage: bench/etcd/build.sh OUTDIR [--test]
#   --test  also run the driver's unit tests (go test) first.
# Fast when nothing changed: the binary is rebuilt only when a source file
# is newer than it.
set -euo pipefail

usage() {
    echo "usage: bench/etcd/build.sh OUTDIR [--test]" >&2
    exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
fi
out=$1
run_tests=0
if [ $# -eq 2 ]; then
    [ "$2" = "--test" ] || usage
    run_tests=1
fi

src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

command -v go >/dev/null || {
    echo "etcd build: go not found (Debian package golang-go)" >&2
    exit 1
}
gopath=/usr/share/gocode
[ -d "$gopath/src/go.etcd.io/etcd/clientv3" ] || {
    echo "etcd build: $gopath/src/go.etcd.io/etcd/clientv3 missing" \
        "(Debian package golang-etcd-server-dev)" >&2
    exit 1
}

export GO111MODULE=off GOPATH=$gopath GOCACHE=$out/gocache GOFLAGS='' GOPROXY=off CGO_ENABLED=0

if [ "$run_tests" -eq 1 ]; then
    (cd "$src" && go test -count=1 .)
fi

bin=$out/etcd-bench
if [ -x "$bin" ] && [ -z "$(find "$src" -name '*.go' -newer "$bin")" ]; then
    exit 0
fi
(cd "$src" && go build -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "etcd build: $bin"
