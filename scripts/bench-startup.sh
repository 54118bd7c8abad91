#!/usr/bin/env bash
# Start-up benchmark: `purple-supervisor run -- /bin/true` against bubblewrap,
# measured in the same run with hyperfine, as root and as an unprivileged
# user (Purple through a setuid-root copy of purple-init, bwrap through
# unprivileged user namespaces). Prints medians and the ratio.
#
# Usage: sudo scripts/bench-startup.sh [RUNS]     (needs: bubblewrap, hyperfine, jq)
#
# The bwrap command is the one named in the issue, plus the three --symlink
# options a merged-/usr system (Debian 12+) needs for /bin/true to exist.
set -euo pipefail
runs=${1:-500}
cd "$(dirname "$0")/.."
for tool in bwrap hyperfine jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install bubblewrap hyperfine jq)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (it installs a setuid copy in a temp dir)" >&2; exit 1; }

bin=$(scripts/build-release.sh)
work=$(mktemp -d /tmp/purple-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cp "$bin/purple-supervisor" "$bin/purple-init" "$work/"
chown root:root "$work/purple-init"
chmod 4755 "$work/purple-init"

bwrap_cmd='bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp --cap-drop ALL /bin/true'
purple_cmd="$work/purple-supervisor run -- /bin/true"
nobody_user=${BENCH_USER:-nobody}

median() { jq -r ".results[$1].median * 1000" "$2"; }

measure() { # label, runner prefix
    local label=$1; shift
    local json="$work/$label.json"
    "$@" hyperfine -N --warmup 50 --runs "$runs" --export-json "$json" "$purple_cmd" "$bwrap_cmd" >/dev/null 2>&1 \
        || { echo "$label: hyperfine failed" >&2; "$@" hyperfine -N --runs 3 "$purple_cmd" "$bwrap_cmd"; exit 1; }
    chmod 644 "$json" 2>/dev/null || true
    local p b
    p=$(median 0 "$json"); b=$(median 1 "$json")
    printf '%-12s purple %6.2f ms   bwrap %6.2f ms   purple/bwrap %.2f\n' "$label" "$p" "$b" "$(echo "$p / $b" | bc -l)"
}

echo "kernel $(uname -r), $(nproc) cores, $runs runs each, medians"
measure root env
chown "$nobody_user" "$work"
measure unprivileged runuser -u "$nobody_user" --
