# shellcheck shell=bash
# Process helpers of the benchmark scripts. Sourced; bash.

# stop_pids PID...: SIGTERM, then SIGKILL whatever still runs after 10 s.
stop_pids() {
    local pid i
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop_pids: pid $pid did not exit within 10 s of SIGTERM; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
