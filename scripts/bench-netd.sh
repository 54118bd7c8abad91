#!/usr/bin/env bash
# Times purple-netd's attach and detach (the wall-clock time purple-init
# waits for each), as root: builds, then runs the ignored benchmark test in
# tests/netd.rs, which starts its own netd on a temporary socket, attaches
# and detaches fresh network namespaces RUNS times and prints the medians.
# Usage: sudo scripts/bench-netd.sh [RUNS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench-netd: needs root (it creates network namespaces and nft rules)" >&2
    exit 1
fi
export PURPLE_NETD_BENCH_RUNS="${1:-20}"
cargo build --release -p purple-netd -q
cargo build -p purple-netd -q
# The release build of the tests finds target/release/purple-netd.
cargo test --release -q -p purple-tests --test netd -- --ignored --nocapture bench_attach_detach 2>&1 |
    grep -E '^netd (attach|detach)'
