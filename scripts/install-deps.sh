#!/usr/bin/env bash
# Install the Debian packages GeoScale builds and tests with, if missing.
# Fast when everything is present (one dpkg-query); needs root otherwise.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libuv1-dev librocksdb-dev liburcu-dev libcmocka-dev
    libprotobuf-c-dev protobuf-c-compiler libsodium-dev libjansson-dev
    # to build libraft 0.22.1 from Debian's source package
    dpkg-dev autoconf automake libtool liblz4-dev
    # used by tests and the demo
    procps iproute2
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages and not root; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
