#!/usr/bin/env bash
# End-to-end tests of the installed package, not of target/:
#
#   1. the .rpm's file list, owners, modes and config marks (read from the
#      archive with rpm -qp);
#   2. dpkg -i of the .deb, then what it installed (modes, conffile, unit,
#      man pages, completions);
#   3. as an unprivileged user, with /usr/bin first on PATH: a sandboxed
#      python3 run, a refused request, a filtered-network run through the
#      installed purple-netd (started the way its unit starts it), and the
#      run's audit event arriving in the syslog daemon on /dev/log;
#   4. a local edit of the conffile survives reinstalling;
#   5. dpkg -r keeps only the admin config, dpkg --purge removes it too.
#
# Usage (root): packaging/test-installed.sh [DEB [RPM]]
# Defaults: target/packaging/purple_*.deb and purple-*.rpm (make packages).
# Refuses to run when a `purple` package is installed already: it installs
# and removes the package, and would take someone's installation with it.
# Everything it creates (user, network namespace, veth, nftables table,
# netd process, files under /run/purple, temporary files) is removed on
# exit, also on failure; net.ipv4.ip_forward goes back to what it was.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
debs=(target/packaging/purple_*.deb)
rpms=(target/packaging/purple-*.rpm)
shopt -u nullglob
deb=${1:-${debs[0]:-}}
rpm=${2:-${rpms[0]:-}}
user=purple-pkgtest
user_created=no
remote_ns=purple-pkgtest-remote
host_if=pkgt-host
host_addr=198.18.77.1
remote_addr=198.18.77.2
pool=10.200.0.0/16 # the packaged admin config's network.pool
netd_pid=          # a netd this script started (killed by this pid)
netd_used=no       # a netd ran for this script: its table is to be removed
server_pid=
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
run_dir=/run/purple
run_dir_before=no
[ -d "$run_dir" ] && run_dir_before=yes
marker=$run_dir/netd-forwarding
marker_before=no
[ -e "$marker" ] && marker_before=yes
work=

step() { echo "== $*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
expect_eq() { # what, got, want
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

cleanup() {
    set +e
    [ -n "$netd_pid" ] && kill "$netd_pid" 2>/dev/null && wait "$netd_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    ip netns del "$remote_ns" 2>/dev/null # takes the veth with it
    [ "$user_created" = yes ] && userdel "$user"
    if dpkg-query -W -f='${Status}' purple 2>/dev/null | grep -q 'ok \(installed\|config-files\)'; then
        dpkg --purge purple >/dev/null # stops a netd the package started
    fi
    if [ "$netd_used" = yes ]; then
        # Forwarding back off before the router guard goes, never the
        # other way round.
        echo "$forward_before" >/proc/sys/net/ipv4/ip_forward
        nft delete table inet purple 2>/dev/null
        rm -f "$run_dir/netd.sock" # a SIGTERMed netd leaves it
        [ "$marker_before" = no ] && rm -f "$marker"
    fi
    if [ "$run_dir_before" = no ]; then
        rm -f "$run_dir/netd.lock" "$run_dir/tests-net.lock"
        rmdir "$run_dir" 2>/dev/null
    fi
    [ -n "$work" ] && rm -rf "$work"
}

[ "$(id -u)" = 0 ] || fail "run as root: it installs the package"
[ -f "$deb" ] || fail "no .deb (run make packages first, or pass its path)"
[ -f "$rpm" ] || fail "no .rpm (run make packages first, or pass its path)"
if dpkg-query -W -f='${Status}' purple 2>/dev/null | grep -q 'ok \(installed\|config-files\)'; then
    fail "a purple package is installed here already; remove it first (this test installs and purges its own)"
fi
for tool in rpm dpkg setpriv runuser nft ip python3 useradd flock; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
if id "$user" >/dev/null 2>&1; then
    fail "user $user exists already; remove it first (this test creates and deletes its own)"
fi
trap cleanup EXIT
work=$(mktemp -d /tmp/purple-pkgtest.XXXXXX)
chmod 0755 "$work"

step "rpm: $rpm"
listing=$(rpm -qlvp "$rpm")
line_of() { awk -v f="$1" '$NF == f' <<<"$listing"; }
expect_eq "purple-init in the rpm" "$(line_of /usr/libexec/purple/purple-init | awk '{print $1, $3, $4}')" "-rwsr-xr-x root root"
expect_eq "purple-supervisor in the rpm" "$(line_of /usr/bin/purple-supervisor | awk '{print $1, $3, $4}')" "-rwxr-xr-x root root"
expect_eq "purple-netd in the rpm" "$(line_of /usr/sbin/purple-netd | awk '{print $1, $3, $4}')" "-rwxr-xr-x root root"
expect_eq "purple.toml in the rpm" "$(line_of /etc/purple/purple.toml | awk '{print $1, $3, $4}')" "-rw-r--r-- root root"
expect_eq "the rpm's config files" "$(rpm -qcp "$rpm")" "/etc/purple/purple.toml"
flags=$(rpm -qp --queryformat '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" | awk '$2 == "/etc/purple/purple.toml" {print $1}')
expect_eq "purple.toml's rpm flags (config, noreplace)" "$flags" "cn"
for f in /usr/lib/systemd/system/purple-netd.service /usr/share/man/man1/purple-supervisor-run.1.gz \
    /usr/share/man/man5/purple-policy.5.gz /usr/share/man/man8/purple-netd.8.gz \
    /usr/share/bash-completion/completions/purple-supervisor; do
    [ -n "$(line_of "$f")" ] || fail "$f is not in the rpm"
done
requires=$(rpm -qp --requires "$rpm")
grep -qx nftables <<<"$requires" || fail "the rpm does not require nftables"
grep -qx iproute <<<"$requires" || fail "the rpm does not require iproute"
# The scriptlets do what Fedora's systemd macros do, and nothing else.
scripts=$(rpm -qp --scripts "$rpm")
grep -q 'systemctl --no-reload preset purple-netd.service' <<<"$scripts" || fail "the rpm's %post does not apply the presets"
grep -q 'systemctl --no-reload disable --now purple-netd.service' <<<"$scripts" || fail "the rpm's %preun does not stop the unit"
if grep -Eq 'useradd|groupadd|chmod|chown|curl|wget|sysctl' <<<"$scripts"; then
    fail "the rpm's scriptlets do something surprising: $scripts"
fi

step "dpkg -i $deb"
dpkg -i "$deb"
mode_of() { stat -c '%A %U %G' "$1"; }
expect_eq "installed purple-init" "$(mode_of /usr/libexec/purple/purple-init)" "-rwsr-xr-x root root"
expect_eq "installed purple-supervisor" "$(mode_of /usr/bin/purple-supervisor)" "-rwxr-xr-x root root"
expect_eq "installed purple-netd" "$(mode_of /usr/sbin/purple-netd)" "-rwxr-xr-x root root"
expect_eq "installed /etc/purple" "$(mode_of /etc/purple)" "drwxr-xr-x root root"
dpkg-query -W -f='${Conffiles}\n' purple | grep -q '^ /etc/purple/purple.toml ' ||
    fail "/etc/purple/purple.toml is not a conffile"
unit=$(dpkg -L purple | grep '/systemd/system/purple-netd.service$') || fail "no unit installed"
# deb-systemd-helper enables the unit even where systemd is not running.
[ -L /etc/systemd/system/multi-user.target.wants/purple-netd.service ] ||
    fail "the postinst did not enable purple-netd.service"
systemd-analyze verify "$unit" 2>&1 | grep -v "man purple-netd(8)" | grep . &&
    fail "systemd-analyze verify complains about $unit"
for page in purple-supervisor purple-supervisor-run purple-supervisor-serve purple-policy purple.toml purple-netd; do
    dpkg -L purple | grep -q "/man[158]/$page\.[158]\.gz$" || fail "no man page $page"
done
for f in /usr/share/bash-completion/completions/purple-supervisor \
    /usr/share/zsh/vendor-completions/_purple-supervisor \
    /usr/share/fish/vendor_completions.d/purple-supervisor.fish; do
    [ -s "$f" ] || fail "no completion $f"
done
bash -c 'source /usr/share/bash-completion/completions/purple-supervisor && complete -p purple-supervisor' >/dev/null ||
    fail "the bash completion does not load"

step "an unprivileged user, the installed binaries"
useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
user_created=yes
chown "$user:" "$work"
as_user() { # runs as the test user, with the installed programs only
    runuser -u "$user" -- env -i PATH=/usr/bin:/bin HOME=/nonexistent LANG=C.UTF-8 "$@"
}
expect_eq "purple-supervisor on the user's PATH" "$(as_user sh -c 'command -v purple-supervisor')" "/usr/bin/purple-supervisor"
[ ! -e /usr/bin/purple-init ] || fail "/usr/bin/purple-init exists: the supervisor would use it"

step "a sandboxed python3"
out=$(as_user purple-supervisor run --report "$work/python.json" -- \
    python3 -c 'import os; print("uid", os.getuid(), "caps", open("/proc/self/status").read().split("CapEff:")[1].split()[0])')
echo "$out"
grep -q '^uid [0-9]* caps 0000000000000000$' <<<"$out" || fail "unexpected output: $out"
sandbox_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sandbox_id"])' "$work/python.json")
expect_eq "exit status in the report" \
    "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["status"], r["exit_code"])' "$work/python.json")" "exited 0"

step "a refused request (above the admin config's maxima)"
set +e
refusal=$(as_user purple-supervisor run --memory 64G -- true 2>&1)
status=$?
set -e
echo "$refusal"
expect_eq "exit status of a refused run" "$status" "125"
grep -q '/etc/purple/purple.toml' <<<"$refusal" || fail "the refusal does not name the admin config"

step "the audit event in the syslog daemon (/dev/log, authpriv)"
[ -S /dev/log ] || fail "no syslog daemon on /dev/log (.ci/run starts rsyslogd)"
audit_seen() { # rsyslog's authpriv file, or the journal where there is no such file
    if [ -f /var/log/auth.log ]; then
        grep -h "$sandbox_id" /var/log/auth.log
    elif command -v journalctl >/dev/null; then
        journalctl -q --no-pager --since=-10min 2>/dev/null | grep -F "$sandbox_id"
    fi | grep -q 'sandbox.exited'
}
found=no
for _ in $(seq 1 50); do
    if audit_seen; then
        found=yes
        break
    fi
    sleep 0.2
done
expect_eq "sandbox.exited of $sandbox_id in syslog" "$found" "yes"

step "a filtered network through the installed purple-netd"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
expect_eq "the unit's ExecStart" "$exec_start" "/usr/sbin/purple-netd"
mkdir -p -m 0755 "$run_dir"
exec 9>"$run_dir/tests-net.lock"
flock 9 # the cargo tests' filtered-network lock: one netd per host
netd_used=yes
if [ -d /run/systemd/system ]; then
    # systemd runs here: the package's postinst started the unit; use it.
    systemctl is-active --quiet purple-netd.service ||
        fail "the package did not start purple-netd.service: $(systemctl status purple-netd.service 2>&1)"
else
    # No systemd (CI's container): start it as its unit would, with only
    # CAP_NET_ADMIN in the bounding set and no new privileges (the unit's
    # other sandboxing settings are checked by systemd-analyze above, not
    # exercised). netd allows one instance per host: one that runs already
    # is not this script's to replace.
    # (Only an existing lock file can be held; flock(1) would create one.)
    if [ -e "$run_dir/netd.lock" ] && ! flock -n "$run_dir/netd.lock" true; then
        fail "a purple-netd runs already on $run_dir/netd.sock; stop it first"
    fi
    setpriv --bounding-set=-all,+net_admin --inh-caps=-all --ambient-caps=-all --no-new-privs \
        -- $exec_start 2>"$work/netd.log" &
    netd_pid=$!
    for _ in $(seq 1 100); do
        grep -q '^purple-netd: listening on ' "$work/netd.log" && break
        kill -0 "$netd_pid" 2>/dev/null || fail "purple-netd exited: $(cat "$work/netd.log")"
        sleep 0.1
    done
    grep -q '^purple-netd: listening on ' "$work/netd.log" || fail "purple-netd is not listening: $(cat "$work/netd.log")"
    grep -q 'bounding=CAP_NET_ADMIN' "$work/netd.log" || fail "netd does not report its capabilities: $(cat "$work/netd.log")"
fi
ip netns add "$remote_ns"
ip link add "$host_if" type veth peer name eth0 netns "$remote_ns"
ip addr add "$host_addr/30" dev "$host_if"
ip link set "$host_if" up
ip -n "$remote_ns" link set lo up
ip -n "$remote_ns" addr add "$remote_addr/30" dev eth0
ip -n "$remote_ns" link set eth0 up
ip -n "$remote_ns" route add "$pool" via "$host_addr"
ip netns exec "$remote_ns" python3 -c '
import socket, threading
def serve_tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(b"hello from %d\n" % port); c.close()
def serve_udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(64); s.sendto(b"hello from %d" % port, peer)
for serve, port in ((serve_tcp, 8080), (serve_tcp, 8081), (serve_udp, 9090), (serve_udp, 9091)):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait()
' &
server_pid=$!
sleep 0.5
# TCP to a port not allowed is refused by Landlock before a packet leaves
# (it mirrors the TCP rules); UDP is not Landlock's, so the UDP pair shows
# netd's nftables rules at work: the datagram to 9091 must be dropped.
probe='
import socket
remote = "'"$remote_addr"'"
for port in (8080, 8081):
    try:
        s = socket.create_connection((remote, port), timeout=2)
        print("tcp", port, s.recv(64).decode().strip())
    except OSError as e:
        print("tcp", port, "blocked", type(e).__name__)
for port in (9090, 9091):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    try:
        s.sendto(b"hi", (remote, port))
        print("udp", port, s.recvfrom(64)[0].decode())
    except OSError as e:
        print("udp", port, "blocked", type(e).__name__)
'
out=$(as_user purple-supervisor run --allow-out "tcp:8080@$remote_addr" --allow-out "udp:9090@$remote_addr" \
    --report "$work/net.json" -- python3 -c "$probe")
echo "$out"
grep -q '^tcp 8080 hello from 8080$' <<<"$out" || fail "the allowed TCP port was not reached"
grep -q '^tcp 8081 blocked' <<<"$out" || fail "the TCP port not allowed was reached"
grep -q '^udp 9090 hello from 9090$' <<<"$out" || fail "the allowed UDP port was not reached"
grep -q '^udp 9091 blocked' <<<"$out" || fail "the UDP port not allowed was reached"
dropped=$(python3 -c 'import json,sys; n=json.load(open(sys.argv[1]))["isolation"]["network_filtered"]; print(n["counters"]["out_dropped_packets"])' "$work/net.json") ||
    fail "the report has no filtered network with counters"
[ "$dropped" -ge 1 ] || fail "netd's rules counted no dropped packet (got $dropped)"

step "a local edit of the conffile survives reinstalling"
echo "# local edit by test-installed.sh" >>/etc/purple/purple.toml
dpkg -i "$deb"
grep -q '^# local edit by test-installed.sh$' /etc/purple/purple.toml || fail "reinstalling replaced the edited conffile"

step "dpkg -r keeps only the admin config"
dpkg -r purple
for f in /usr/bin/purple-supervisor /usr/libexec/purple /usr/sbin/purple-netd "$unit" \
    /usr/share/man/man1/purple-supervisor.1.gz /usr/share/doc/purple; do
    [ ! -e "$f" ] || fail "$f is left after dpkg -r"
done
[ -f /etc/purple/purple.toml ] || fail "dpkg -r removed the admin config"
expect_eq "package state after dpkg -r" "$(dpkg-query -W -f='${Status}' purple)" "deinstall ok config-files"

step "dpkg --purge removes the admin config too"
dpkg --purge purple
[ ! -e /etc/purple ] || fail "/etc/purple is left after dpkg --purge"
ls /etc/systemd/system/*/purple-netd.service /etc/systemd/system/purple-netd.service 2>/dev/null &&
    fail "systemd enablement links are left after dpkg --purge"
dpkg-query -W purple >/dev/null 2>&1 && fail "dpkg still knows the package after --purge"

echo "PASS: packaging/test-installed.sh"
