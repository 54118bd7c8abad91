#!/usr/bin/env bash
# The SandboxManager API (`purple-supervisor serve`, docs/api.md), as root:
#
#  (a) throughput: N trivial sandboxes (`/bin/true`), each submitted and
#      waited for through the API (curl over the unix socket), C at a time,
#      through a pool that fits exactly C -> sandboxes per second, and the
#      service's own mean start time (purple_sandbox_start_seconds);
#  (b) the API's added latency: hyperfine comparing
#      `purple-supervisor run -- /bin/true` with the same sandbox through the
#      service, `submit ... -- /bin/true | xargs wait` (two CLI clients, so
#      their process start-ups are part of the figure) -> medians and ratio.
#
# Both commands ask for the same limits (64M, 0.1 CPU) so that they run the
# same sandbox. The service it starts listens on a socket in a temporary
# directory and is stopped (SIGTERM to its pid, then SIGKILL) on exit.
#
# Usage: sudo scripts/bench-serve.sh [N] [C] [RUNS]   (defaults 200 16 100;
#        needs: hyperfine, jq, curl, bc)
set -euo pipefail
n=${1:-200}
c=${2:-16}
runs=${3:-100}
cd "$(dirname "$0")/.."
for tool in hyperfine jq curl bc; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install hyperfine jq curl bc)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
case "$n$c$runs" in *[!0-9]*) echo "N, C and RUNS are whole numbers" >&2; exit 1;; esac
[ "$c" -ge 1 ] && [ "$n" -ge 1 ] && [ "$runs" -ge 2 ] || { echo "N >= 1, C >= 1, RUNS >= 2" >&2; exit 1; }

bin=$(scripts/build-release.sh)
sup="$bin/purple-supervisor"
work=$(mktemp -d /tmp/purple-bench-serve.XXXXXX)
chmod 700 "$work"
sock="$work/s.sock"
serve_pid=

stop_serve() {
    [ -n "$serve_pid" ] || return 0
    if kill -0 "$serve_pid" 2>/dev/null; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$serve_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$serve_pid" 2>/dev/null; then
            echo "serve (pid $serve_pid) ignored SIGTERM for 30 s: SIGKILL" >&2
            kill -KILL "$serve_pid" 2>/dev/null || true
        fi
    fi
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
}
cleanup() {
    stop_serve
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

memory_mib=64
cpus=0.1
max_cpus=$(echo "$c * $cpus" | bc -l | sed 's/^\./0./')
"$sup" serve --socket "$sock" \
    --max-sandboxes "$c" --max-memory "$((c * memory_mib))M" --max-cpus "$max_cpus" \
    --max-queue "$((n + c + 16))" --default-memory "${memory_mib}M" --default-cpus "$cpus" \
    2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 1 300); do
    curl -sf --unix-socket "$sock" http://localhost/v1/pool >/dev/null 2>&1 && break
    kill -0 "$serve_pid" 2>/dev/null || { echo "serve exited:" >&2; cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf --unix-socket "$sock" http://localhost/v1/pool >/dev/null || { echo "serve does not answer" >&2; cat "$work/serve.log" >&2; exit 1; }

echo "kernel $(uname -r), $(nproc) cores, root; pool: $c sandboxes of ${memory_mib}M and $cpus CPU"

# (a) Throughput. Each worker submits one sandbox and waits for it.
one() {
    local id
    id=$(curl -sf --unix-socket "$SOCK" -H 'Content-Type: application/json' \
        -d '{"argv":["/bin/true"]}' http://localhost/v1/sandboxes | jq -r .id)
    curl -sf --unix-socket "$SOCK" "http://localhost/v1/sandboxes/$id/wait?timeout=600" | jq -r .status
}
export -f one
export SOCK="$sock"
start=$(date +%s.%N)
seq 1 "$n" | xargs -P "$c" -I{} bash -c one >"$work/statuses" || true
end=$(date +%s.%N)
completed=$(grep -c '^completed$' "$work/statuses" || true)
elapsed=$(echo "$end - $start" | bc -l)
printf 'throughput:   %d sandboxes, %d at a time: %.2f s, %.1f sandboxes/s\n' \
    "$n" "$c" "$elapsed" "$(echo "$n / $elapsed" | bc -l)"
if [ "$completed" != "$n" ]; then
    echo "  only $completed of $n completed:" >&2
    sort "$work/statuses" | uniq -c >&2
    exit 1
fi
metrics=$(curl -sf --unix-socket "$sock" http://localhost/metrics)
start_sum=$(echo "$metrics" | awk '$1 == "purple_sandbox_start_seconds_sum" {print $2}')
start_count=$(echo "$metrics" | awk '$1 == "purple_sandbox_start_seconds_count" {print $2}')
if [ -n "$start_sum" ] && [ -n "$start_count" ] && [ "$start_count" != 0 ]; then
    printf '              mean start (queue to command, the service'"'"'s histogram): %.2f ms\n' \
        "$(echo "$start_sum * 1000 / $start_count" | bc -l)"
fi

# (b) Added latency, one sandbox at a time.
run_cmd="$sup run --memory ${memory_mib}M --cpus $cpus -- /bin/true"
api_cmd="sh -c '$sup submit --socket $sock --memory ${memory_mib}M --cpus $cpus -- /bin/true | xargs $sup wait --socket $sock'"
json="$work/latency.json"
hyperfine -N --warmup 10 --runs "$runs" --export-json "$json" "$run_cmd" "$api_cmd" >/dev/null 2>&1 \
    || { echo "hyperfine failed:" >&2; hyperfine -N --runs 2 "$run_cmd" "$api_cmd"; exit 1; }
median() { jq -r ".results[$1].median * 1000" "$json"; }
r=$(median 0)
a=$(median 1)
printf 'latency:      run %.2f ms   submit+wait %.2f ms   (medians of %d)   api/run %.2f   added %.2f ms\n' \
    "$r" "$a" "$runs" "$(echo "$a / $r" | bc -l)" "$(echo "$a - $r" | bc -l)"

stop_serve
