#!/usr/bin/env bash
# Plot benchmark runs: PNG charts from a directory of JSON results, one file
# per run, as printed by `geoscale-bench --json` and `etcd-bench --json`
# (bench/README.md).
#
# Usage: bench/plot.sh DIR [OUTDIR]
#
# Reads DIR/*.json and writes to OUTDIR (default DIR):
#   latency.png              latency percentiles (p50, p90, p99, p99.9, max) of
#                            every run, one line per run, log scale
#   throughput.png           throughput against concurrency (--clients) of the
#                            closed-loop runs, one line per system and workload
#   latency_throughput.png   p99 latency against throughput of every run, one
#                            line per system, workload and mode
#   runs.tsv                 the table the charts are drawn from
#
# Needs gnuplot (Debian package gnuplot-nox) and awk; installs nothing.
set -euo pipefail

prog=plot.sh
usage() {
    echo "usage: bench/plot.sh DIR [OUTDIR]" >&2
    exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
fi
if [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
dir=$1
out=${2:-$1}
[ -d "$dir" ] || {
    echo "$prog: $dir is not a directory" >&2
    exit 2
}
command -v gnuplot >/dev/null || {
    echo "$prog: gnuplot not found (install the Debian package gnuplot-nox)" >&2
    exit 1
}
shopt -s nullglob
files=("$dir"/*.json)
[ ${#files[@]} -gt 0 ] || {
    echo "$prog: no .json files in $dir" >&2
    exit 1
}
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gs-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# One row per run. The results are single JSON objects with a fixed set of
# keys (flat, except latency_us and errors): awk picks each value by key.
awk '
function val(k,   s) {
    if (!match(doc, "\"" k "\"[ \t]*:[ \t]*(\"[^\"]*\"|[-0-9.eE+]+)")) return "";
    s = substr(doc, RSTART, RLENGTH);
    sub(/^"[^"]*"[ \t]*:[ \t]*/, "", s);
    gsub(/"/, "", s);
    return s;
}
function errors(   s, n, parts, i, total) {
    if (!match(doc, "\"errors\"[ \t]*:[ \t]*\\{[^}]*\\}")) return 0;
    s = substr(doc, RSTART, RLENGTH);
    sub(/^[^{]*\{/, "", s);
    sub(/\}$/, "", s);
    n = split(s, parts, ",");
    total = 0;
    for (i = 1; i <= n; i++) {
        sub(/^[^:]*:/, "", parts[i]);
        total += parts[i] + 0;
    }
    return total;
}
FNR == 1 && NR > 1 { emit(); }
{ doc = doc $0 " "; file = FILENAME; }
END { emit(); }
function emit() {
    if (doc == "") return;
    if (val("system") == "" || val("throughput") == "") {
        printf "plot.sh: %s: not a benchmark result, skipped\n", file > "/dev/stderr";
    } else {
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
            val("system"), val("workload"), val("mode"), val("clients"), val("connections"),
            val("rate"), val("keys"), val("value_size"), val("throughput"), val("p50"),
            val("p90"), val("p99"), val("p999"), val("max"), errors(), file;
    }
    doc = "";
}
' "${files[@]}" | sort -t "$(printf '\t')" -k1,1 -k2,2 -k3,3 -k4,4n -k6,6n >"$tmp/runs"
[ -s "$tmp/runs" ] || {
    echo "$prog: no benchmark results in $dir" >&2
    exit 1
}
{
    printf '# system\tworkload\tmode\tclients\tconnections\trate\tkeys\tvalue_size\t'
    printf 'throughput\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\terrors\tfile\n'
    cat "$tmp/runs"
} >"$out/runs.tsv"

# ------------------------------------------------------------- latency.png
# One data block per run: x = percentile position, y = latency in ms.
n=0
: >"$tmp/lat.dat"
while IFS=$'\t' read -r sys wl mode cl _ rate _ _ _ p50 p90 p99 p999 max _; do
    label="$sys $wl $mode c=$cl"
    [ "$mode" = open ] && label="$label r=$rate"
    {
        printf '"%s"\n' "$label"
        printf '1 %s\n2 %s\n3 %s\n4 %s\n5 %s\n\n\n' \
            "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$p90" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$p999" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$max" 'BEGIN { print v / 1000 }')"
    } >>"$tmp/lat.dat"
    n=$((n + 1))
done <"$tmp/runs"
gnuplot <<EOF
set terminal pngcairo size 1200,800 noenhanced
set output "$out/latency.png"
set title "Latency percentiles per run"
set ylabel "latency (ms)"
set logscale y
set grid ytics mytics
set xrange [0.7:5.3]
set xtics ("p50" 1, "p90" 2, "p99" 3, "p99.9" 4, "max" 5)
set key outside right top
plot for [i=0:$((n - 1))] "$tmp/lat.dat" index i using 1:2 with linespoints title columnheader(1)
EOF

# ---------------------------------------------------------- throughput.png
# Closed-loop runs, one block per system and workload, by clients.
awk -F '\t' '$3 == "closed" {
    key = $1 " " $2;
    if (key != last) { if (last != "") printf "\n\n"; printf "\"%s\"\n", key; last = key; }
    print $4, $9;
}' "$tmp/runs" >"$tmp/tput.dat"
nt=$(grep -c '^"' "$tmp/tput.dat" || true)
if [ "$nt" -gt 0 ]; then
    gnuplot <<EOF
set terminal pngcairo size 1000,700 noenhanced
set output "$out/throughput.png"
set title "Throughput against concurrency (closed loop)"
set xlabel "concurrent requests (--clients)"
set ylabel "throughput (ops/s)"
set logscale x 2
set offsets graph 0.05, graph 0.05, 0, 0
set yrange [0:*]
set grid
set key outside right top
plot for [i=0:$((nt - 1))] "$tmp/tput.dat" index i using 1:2 with linespoints title columnheader(1)
EOF
else
    echo "$prog: no closed-loop runs: throughput.png not drawn" >&2
fi

# -------------------------------------------------- latency_throughput.png
sort -t "$(printf '\t')" -k1,1 -k2,2 -k3,3 -k9,9g "$tmp/runs" | awk -F '\t' '{
    key = $1 " " $2 " " $3;
    if (key != last) { if (last != "") printf "\n\n"; printf "\"%s\"\n", key; last = key; }
    print $9, $12 / 1000;
}' >"$tmp/lt.dat"
nl=$(grep -c '^"' "$tmp/lt.dat" || true)
gnuplot <<EOF
set terminal pngcairo size 1000,700 noenhanced
set output "$out/latency_throughput.png"
set title "p99 latency against throughput"
set xlabel "throughput (ops/s)"
set ylabel "p99 latency (ms)"
set logscale y
set grid
set key outside right top
plot for [i=0:$((nl - 1))] "$tmp/lt.dat" index i using 1:2 with linespoints title columnheader(1)
EOF

echo "$prog: $(wc -l <"$tmp/runs") runs -> $out/latency.png $out/throughput.png" \
    "$out/latency_throughput.png $out/runs.tsv"
