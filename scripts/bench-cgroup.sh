#!/usr/bin/env bash
# The cgroup's share of start-up: `purple-supervisor run -- /bin/true` of
# this tree against the same command built from a baseline commit without
# resource limits (default: 0c5fe73, the last commit before them), and
# bubblewrap, in one hyperfine run, as root. Prints medians and means (the
# mean shows the occasional long wait of a cgroup v1 move: see
# docs/benchmarks.md).
#
# Usage: sudo scripts/bench-cgroup.sh [RUNS] [BASELINE_COMMIT]
set -euo pipefail
runs=${1:-300}
baseline=${2:-0c5fe73}
cd "$(dirname "$0")/.."
for tool in bwrap hyperfine jq git; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/purple-bench-cgroup.XXXXXX)
cleanup() {
    git worktree remove --force "$work/baseline" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

current=$(scripts/build-release.sh)
git worktree add -q --detach "$work/baseline" "$baseline"
# This tree's build script (the baseline's may not honour CARGO_TARGET_DIR).
cp scripts/build-release.sh "$work/baseline/scripts/build-release.sh"
old=$(cd "$work/baseline" && CARGO_TARGET_DIR="$work/baseline-target" scripts/build-release.sh)

bwrap_cmd='bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp --cap-drop ALL /bin/true'
json="$work/result.json"
hyperfine -N --warmup 30 --runs "$runs" --export-json "$json" \
    "$old/purple-supervisor run -- /bin/true" \
    "$current/purple-supervisor run -- /bin/true" \
    "$bwrap_cmd" >/dev/null 2>&1

echo "kernel $(uname -r), $(nproc) cores, $runs runs each, root"
layout=$(awk '$9 == "cgroup" && $NF ~ /(^|,)memory(,|$)/ {print "v1"; exit} $9 == "cgroup2" {v2=1} END {if (v2) print "v2"}' /proc/self/mountinfo | head -1)
echo "cgroup layout: ${layout:-unknown}"
for i in 0 1 2; do
    label=$(case $i in 0) echo "baseline $baseline";; 1) echo "this tree";; 2) echo "bwrap";; esac)
    jq -r --arg l "$label" ".results[$i] | \"\(\$l): median \(.median * 1000 | . * 100 | round / 100) ms, mean \(.mean * 1000 | . * 100 | round / 100) ms\"" "$json"
done
