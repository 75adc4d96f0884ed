#!/usr/bin/env bash
# Build libraft 0.22.1 (Debian 13's `raft` source package) into a prefix under
# the build directory. Debian 12 ships libraft 0.15.0, which lacks Raft safety
# fixes (canonical/raft #220, #386, #332), so we build the newer one.
#
# The source is fetched with a private apt configuration: a deb-src line for
# trixie and its own lists/cache directories. The system's apt sources are
# neither read for packages nor changed; only the mirror URI is reused.
#
# Usage: scripts/build-libraft.sh BUILD_DIR
# Result: BUILD_DIR/libraft/prefix/{include,lib,lib/pkgconfig/raft.pc}
# Cached: a second run with the library present does nothing, unless this
# script or scripts/libraft/ changed since (then it builds again).
#
# Two changes are applied to the source before building:
#   - fix_pending_snapshot below: without it a follower that receives a
#     snapshot while it is taking one of its own crashes (ctest -R
#     snapshot_install_groups hits it);
#   - use_crc_slice8 below: libraft's CRC of the entries it writes,
#     computed eight bytes at a time (scripts/libraft/crc32_slice8.c), the
#     same sums; scripts/libraft/crc32_check.c checks them at every build.
set -euo pipefail

build_dir=${1:?usage: build-libraft.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
top=$build_dir/libraft
prefix=$top/prefix
version=0.22.1
debversion=0.22.1-1
# The changes applied below, by content: editing this script or
# scripts/libraft/ redoes a cached build, from freshly extracted source.
localfix=$(cat "$0" "$root"/scripts/libraft/* | sha256sum | cut -c1-16)

if [ -f "$prefix/lib/pkgconfig/raft.pc" ] && [ -f "$prefix/.built-$debversion+$localfix" ]; then
    exit 0
fi

echo "libraft: building $version from Debian's source package into $prefix"
aptdir=$top/apt
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/parts" "$aptdir/prefs"

# Reuse the mirror the machine's Debian sources already point at.
uri=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
        /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list)
fi
if [ -z "$uri" ]; then
    echo "libraft: cannot find a Debian mirror in /etc/apt/sources.list{,.d}" >&2
    exit 1
fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$keyring] $uri trixie main" > "$aptdir/sources.list"
aptopts=(
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o "Dir::Etc::SourceParts=$aptdir/parts"
    -o "Dir::Etc::PreferencesParts=$aptdir/prefs"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root"
)

src=$top/src
if [ ! -f "$src/raft_$debversion.dsc" ]; then
    echo "libraft: fetching source package raft=$debversion"
    apt-get "${aptopts[@]}" -qq update
    rm -rf "$src"
    mkdir -p "$src"
    (cd "$src" && apt-get "${aptopts[@]}" -qq source --download-only "raft=$debversion")
fi
# Always from the pristine package, so that the changes below apply to
# libraft's own code and never on top of an earlier version of themselves.
rm -rf "$src/raft-$version"
(cd "$src" && dpkg-source --no-check -x raft_"$debversion".dsc "raft-$version" >/dev/null)

# libraft 0.22.1 (and upstream at the time of writing), src/legacy.c,
# takeSnapshotCb: when a snapshot sent by the leader arrived while this node
# was writing a snapshot of its own, the received one waits in
# legacy.snapshot_pending. The callback clears that field and then reads it,
# so it always passes NULL to legacyPersistSnapshotStart, which dereferences
# it: SIGSEGV. The fix reads the pending request first, then clears it.
fix_pending_snapshot() {
    local f=src/legacy.c
    perl -0pi -e 's/\n([ \t]*)r->legacy\.snapshot_pending = NULL;\n[ \t]*persist = r->legacy\.snapshot_pending;\n/\n$1persist = r->legacy.snapshot_pending; \/* GeoScale fix: read before clearing *\/\n$1r->legacy.snapshot_pending = NULL;\n/' "$f"
    if ! grep -q 'GeoScale fix: read before clearing' "$f"; then
        echo "libraft: the pending-snapshot fix does not apply to $f" >&2
        exit 1
    fi
    echo "libraft: applied the pending-snapshot fix to $f"
}

# raft_uv sums every entry it writes with byteCrc32(), a byte-at-a-time
# table CRC on the loop thread (6.5% of the machine's CPU under load with
# 1 KiB values). The original is kept as byteCrc32Bytewise() and our
# slicing-by-8 byteCrc32() appended to the same file.
use_crc_slice8() {
    local f=src/byte.c
    perl -0pi -e 's/\bbyteCrcTable\b/byteCrcBytewiseTable/g;
                  s/\nunsigned byteCrc32\(const void \*buf, const size_t size, const unsigned init\)\n/\nstatic unsigned byteCrc32Bytewise(const void *buf, const size_t size, const unsigned init)\n/' "$f"
    if ! grep -q '^static unsigned byteCrc32Bytewise(' "$f" || ! grep -q 'byteCrcBytewiseTable\[' "$f"; then
        echo "libraft: the slicing-by-8 CRC does not apply to $f" >&2
        exit 1
    fi
    { echo; cat "$root/scripts/libraft/crc32_slice8.c"; } >>"$f"
    echo "libraft: byteCrc32 in $f computed eight bytes at a time"
}

cd "$src/raft-$version"
fix_pending_snapshot
use_crc_slice8
echo "libraft: configuring and compiling (about half a minute)"
[ -x configure ] || autoreconf -i >/dev/null 2>&1
./configure --quiet --prefix="$prefix" --enable-uv --disable-backtrace \
    --enable-fixture --disable-static >/dev/null
make -s -j"$(nproc)" >/dev/null 2>&1 || make -j"$(nproc)"
cc -O2 -Wall -Werror -I src "$root/scripts/libraft/crc32_check.c" src/byte.c -o "$top/crc32_check"
"$top/crc32_check"
make -s install >/dev/null
rm -f "$prefix"/.built-*
touch "$prefix/.built-$debversion+$localfix"
echo "libraft: installed $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion raft) in $prefix"
