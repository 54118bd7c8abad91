#!/usr/bin/env bash
# Per-syscall cost of Purple's seccomp filter: a tight getppid loop (10 M
# calls) on the host, inside bwrap (same namespaces, no filter) and inside
# Purple (the filter installed), median of several runs each, and the
# start-up of `purple-supervisor run -- /bin/true` for reference.
#
# Usage: sudo scripts/bench-seccomp.sh [RUNS]     (needs: cc, bubblewrap, hyperfine, jq)
set -euo pipefail
runs=${1:-15}
cd "$(dirname "$0")/.."
for tool in cc bwrap hyperfine jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
bin=$(scripts/build-release.sh)
work=$(mktemp -d /tmp/purple-bench-seccomp.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cat > "$work/loop.c" <<'C'
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long sum = 0;
    for (long i = 0; i < 10000000; i++) sum += syscall(SYS_getppid);
    printf("%ld\n", sum > 0);
    return 0;
}
C
cc -O2 -o "$work/loop" "$work/loop.c"
bwrap_prefix="bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin --ro-bind $work/loop /loop --proc /proc --dev /dev"
hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/loop.json" \
    "$work/loop" "$bwrap_prefix /loop" "$bin/purple-supervisor run --ro-bind $work/loop:/loop -- /loop" >/dev/null
jq -r '.results[] | "\(.median * 1000 | floor) ms  \(.command)"' "$work/loop.json"
host=$(jq '.results[0].median' "$work/loop.json")
purple=$(jq '.results[2].median' "$work/loop.json")
echo "per getppid: host $(echo "$host * 100" | bc -l | cut -c1-6) ns, purple $(echo "$purple * 100" | bc -l | cut -c1-6) ns (10 M calls; includes start-up)"
