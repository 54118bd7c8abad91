#!/usr/bin/env bash
# Builds Purple's .deb and .rpm from this tree (`make packages` runs this).
#
# 1. Release binaries, statically linked, LTO, stripped (scripts/build-release.sh).
# 2. Man pages and shell completions from the clap definitions
#    (packaging/manuals), the section-5 pages from docs/ (lowdown), all
#    gzipped; a changelog carrying the workspace version; all in
#    packaging/generated/.
# 3. cargo deb and cargo generate-rpm, from purple-supervisor's
#    [package.metadata.*] tables, without rebuilding.
#
# Needs: cargo-deb, cargo-generate-rpm (cargo install --locked), lowdown,
# gzip, objcopy (binutils). Output: target/packaging/purple_<version>-1_<arch>.deb and
# purple-<version>-1.<arch>.rpm (their paths are printed last).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo-deb cargo-generate-rpm lowdown; do
    command -v "$tool" >/dev/null || {
        echo "build-packages: $tool is missing (see packaging/README.md)" >&2
        exit 1
    }
done

host=$(rustc -vV | sed -n 's/^host: //p')
version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "purple-supervisor"))')
out=target/packaging
# Inside the source tree (git-ignored), not below target/: cargo-deb takes
# any asset path under target/ for a build product and warns about it.
man=packaging/generated
rm -rf "$out" "$man"
mkdir -p "$out" "$man/man5"

echo "== release binaries ($host)" >&2
bin_dir=$(scripts/build-release.sh)
# The toolchain's version notes; nothing reads them (lintian asks).
for bin in purple-supervisor purple-init purple-netd; do
    objcopy --remove-section=.comment "$bin_dir/$bin"
done

# The date the pages and the changelog carry: the commit's, so that two
# builds of one commit give the same files.
date_ymd=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
date_rfc2822=$(git log -1 --format=%aD 2>/dev/null || date -uR)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

echo "== man pages and completions" >&2
cargo run --quiet --locked -p purple-manuals -- "$man" --date "$date_ymd"
section5() { # name, one-line description, source page
    {
        printf '# NAME\n\n%s - %s\n\n' "$1" "$2"
        cat "$3"
        printf '\n# SEE ALSO\n\npurple-supervisor(1), purple-policy(5), purple.toml(5), purple-netd(8).\n'
        printf 'The pages named *.md above are in /usr/share/doc/purple/.\n'
    } |
        lowdown -s -Tman -M "title=$1" -M "section=5" -M "date=$date_ymd" \
            -M "source=Purple $version" -M "volume=Purple Manual" -o "$man/man5/$1.5"
}
section5 purple-policy "the policy file of a Purple sandbox" docs/policy.md
section5 purple.toml "the admin config of Purple, /etc/purple/purple.toml" docs/admin-config.md
find "$man" -name '*.[158]' -exec gzip -9n {} +

cat >"$man/changelog" <<CHANGES
purple ($version-1) unstable; urgency=medium

  * Built from commit $commit of the Purple repository. The changes are in
    its git history.

 -- Purple developers <purple-dev@example.invalid>  $date_rfc2822
CHANGES

echo "== .deb" >&2
cargo deb --locked -p purple-supervisor --no-build --no-strip --target "$host" --output "$out" >&2
echo "== .rpm" >&2
cargo generate-rpm -p purple-supervisor --target "$host" --output "$out" >&2

echo "binaries: $bin_dir" >&2
ls "$out"/*.deb "$out"/*.rpm
