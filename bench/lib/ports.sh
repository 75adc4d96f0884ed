# shellcheck shell=bash
# free_ports N: print N distinct TCP ports with no listener on this machine
# (per `ss -ltn`), from a random point of 20000-29999. A port found free can
# still be taken by someone else before it is bound; the callers then fail
# to start and say so. Sourced; bash.
free_ports() {
    local want=$1 p tries=0 found=() listening
    listening=$(ss -ltnH | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
    p=$((20000 + RANDOM % 9000))
    while [ "${#found[@]}" -lt "$want" ]; do
        if ! grep -qx "$p" <<<"$listening"; then
            found+=("$p")
        fi
        p=$((p + 1))
        tries=$((tries + 1))
        if [ "$tries" -gt 2000 ]; then
            echo "free_ports: no $want free ports found" >&2
            return 1
        fi
    done
    echo "${found[*]}"
}
