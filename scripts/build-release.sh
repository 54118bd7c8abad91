#!/usr/bin/env bash
# Release build of Purple's binaries, statically linked (glibc, crt-static).
#
# Why static: purple-init is setuid root, and a static binary has no dynamic
# loader step to harden or to pay for; exec of a static binary is ~0.4 ms
# faster here, and start-up is Purple's hot path. crt-static needs an
# explicit --target (proc-macro crates cannot be built with it), so the
# binaries land in target/<host triple>/release/.
#
# Usage: scripts/build-release.sh   -> prints the directory holding the binaries
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$host" -p purple-supervisor -p purple-init -p purple-netd >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$host/release"
