#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The filtered network end to end: `purple-supervisor run --allow-out ...
//! --allow-in ...` as a root caller, with purple-netd on a temporary socket
//! (`PURPLE_NETD_SOCKET`) and a test admin config (`PURPLE_CONFIG`, pool
//! 10.251.0.0/16) whose "remote host" is a network namespace of the test's
//! own (`purple_tests::net::World`, shared with tests/netd.rs, which also
//! holds the host-wide lock so the two binaries never share a netd or
//! `table inet purple`).
//!
//! Inside the sandbox the probes and listeners are the Python scripts of
//! `purple_tests::net`, run with `python3 -c` (the sandbox sees the host's
//! /usr), behind a prefix that prints `net <address> <gateway>` as the
//! sandbox sees its eth0 and replaces `GW` in the targets by the gateway.
//!
//! After every run: the report's `network_filtered`, the audit copy's
//! `net.attached`/`net.detached`, and that neither the sandbox's veth nor
//! its objects in `table inet purple` are left. Traffic goes only to
//! loopback and to namespaces the test made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use purple_tests::net::{
    die_with_parent, host_python, link_exists, probe, purple_table, pv_links, serve, target, World,
    POOL, PROBE_PY, SERVER_PY,
};
use purple_tests::{collect, require_root, Caller, EXIT_PURPLE};
use serde_json::Value;

/// Longest a single supervisor run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a probe in a sandbox waits for an answer (a dropped packet
/// costs this much): a little more than the netd tests' PROBE_TIMEOUT, as
/// a sandbox's first packets also wait for its fresh veth.
const SANDBOX_PROBE_TIMEOUT: &str = "1.0";

/// Run inside the sandbox before a probe or a server: prints `net ADDRESS
/// GATEWAY` (eth0's address, found with a connected UDP socket that sends
/// nothing, and the default route's gateway) and puts the gateway for `GW`
/// in the arguments.
const PREFIX_PY: &str = r#"
import socket, struct, sys
def _gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
    return "none"
_gw = _gateway()
_u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    _u.connect((_gw, 9)); _me = _u.getsockname()[0]
except OSError:
    _me = "none"
_u.close()
print("net %s %s" % (_me, _gw), flush=True)
sys.argv = [a.replace("GW", _gw) for a in sys.argv]
"#;

/// Checks, inside the sandbox, that every listener of SERVER_PY answers on
/// the sandbox's own loopback (Landlock lets the command connect to its
/// `allow_in` TCP ports; UDP it does not cover) before "ready" is printed,
/// so a listener that failed to bind cannot make a "blocked" check pass.
const SELF_CHECK_PY: &str = r#"
for spec in sys.argv[1:]:
    proto, _, port = spec.split(":")
    try:
        if proto == "tcp":
            s = socket.create_connection(("127.0.0.1", int(port)), timeout=2); s.recv(100)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"hi", ("127.0.0.1", int(port))); s.recvfrom(100)
        s.close()
    except Exception as e:
        print("not-ready %s %s" % (spec, type(e).__name__), flush=True); sys.exit(1)
print("ready", flush=True)
"#;

/// SERVER_PY with the self-check, ending when its stdin does (the
/// supervisor's stdin is the command's), so the test stops it by closing
/// the pipe.
fn server_py() -> String {
    let ready = "print(\"ready\", flush=True)\n";
    let wait = "threading.Event().wait()";
    assert!(SERVER_PY.contains(ready) && SERVER_PY.contains(wait));
    let server = SERVER_PY
        .replace(ready, SELF_CHECK_PY.trim_start())
        .replace(wait, "sys.stdin.read()");
    format!("{PREFIX_PY}{server}")
}

fn probe_py() -> String {
    format!("{PREFIX_PY}{PROBE_PY}")
}

// ---------------------------------------------------------------------------
// The test's admin config and supervisor runs
// ---------------------------------------------------------------------------

/// Writes the test's admin config (the pool the remote host routes back,
/// no syslog) into the World's directory: root's, 0700, the file 0644.
fn admin_config(w: &World) -> std::path::PathBuf {
    let path = w.dir.path().join("purple.toml");
    std::fs::write(
        &path,
        format!("[network]\npool = \"{POOL}\"\n\n[audit]\nsyslog = false\n"),
    )
    .unwrap();
    path
}

/// A supervisor running in the background with its stdin, stdout (line by
/// line) and stderr in the test's hands; killed on drop unless finished.
struct Sup {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    dir: tempfile::TempDir,
    done: bool,
}

impl Sup {
    /// `purple-supervisor run --report R --audit-log A OPTS -- ARGV` as root,
    /// asking the World's netd, under the test's admin config.
    fn start(w: &World, opts: &[&str], argv: &[&str]) -> Sup {
        let dir = tempfile::Builder::new()
            .prefix("purple-net-run-")
            .tempdir()
            .unwrap();
        let report = dir.path().join("report.json");
        let audit = dir.path().join("audit.jsonl");
        let mut args: Vec<&str> = vec![
            "run",
            "--report",
            report.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--timeout",
            "30s",
        ];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(argv);
        let mut cmd = Caller::Root.command(&args);
        die_with_parent(&mut cmd)
            .env("PURPLE_NETD_SOCKET", &w.socket)
            .env("PURPLE_CONFIG", admin_config(w))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn purple-supervisor");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let out_t = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err, err_t) = collect(child.stderr.take().unwrap());
        Sup {
            child,
            stdin,
            lines,
            stdout: Vec::new(),
            err,
            readers: vec![out_t, err_t],
            dir,
            done: false,
        }
    }

    fn partial(&self) -> String {
        format!(
            "--- stdout so far:\n{}\n--- stderr so far:\n{}",
            self.stdout.join("\n"),
            String::from_utf8_lossy(&self.err.lock().unwrap())
        )
    }

    /// The command's next stdout line (at most 10 s away).
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => {
                self.stdout.push(l.clone());
                l
            }
            Err(e) => panic!("no line from the sandbox ({e})\n{}", self.partial()),
        }
    }

    /// The `net ADDRESS GATEWAY` line of PREFIX_PY.
    fn net_line(&mut self) -> (String, String) {
        let l = self.line();
        let mut parts = l.split(' ');
        assert_eq!(parts.next(), Some("net"), "{l}\n{}", self.partial());
        let me = parts.next().unwrap().to_owned();
        let gw = parts.next().unwrap().to_owned();
        (me, gw)
    }

    /// Closes the command's stdin, waits for the supervisor (at most
    /// DEADLINE) and for its output to close, and reads the report and
    /// the audit copy.
    fn finish(mut self) -> Ran {
        drop(self.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "purple-supervisor did not finish within {DEADLINE:?} (killed now)\n{}",
                self.partial()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.done = true;
        let start = Instant::now();
        while !self.readers.iter().all(JoinHandle::is_finished) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the supervisor exited but its output is still held open: a sandbox process \
                 survived\n{}",
                self.partial()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for t in self.readers.drain(..) {
            t.join().unwrap();
        }
        while let Ok(l) = self.lines.try_recv() {
            self.stdout.push(l);
        }
        let stderr = String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned();
        let text = std::fs::read_to_string(self.dir.path().join("report.json")).unwrap_or_default();
        let report = serde_json::from_str(&text).unwrap_or(Value::Null);
        let audit = std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect();
        Ran {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr,
            report,
            report_text: text,
            audit,
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished run.
struct Ran {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
    report: Value,
    report_text: String,
    audit: Vec<Value>,
}

impl Ran {
    fn ctx(&self) -> String {
        format!(
            "status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- report:\n{}\n--- audit:\n{}",
            self.status,
            self.stdout.join("\n"),
            self.stderr,
            self.report_text,
            self.audit
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn assert_success(&self) {
        assert_eq!(self.status.code(), Some(0), "{}", self.ctx());
    }

    fn at(&self, pointer: &str) -> &Value {
        self.report.pointer(pointer).unwrap_or(&Value::Null)
    }

    fn net(&self, field: &str) -> &Value {
        self.at(&format!("/isolation/network_filtered/{field}"))
    }

    fn counter(&self, name: &str) -> u64 {
        self.net("counters")
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {name}\n{}", self.ctx()))
    }

    fn host_interface(&self) -> String {
        self.net("host_interface")
            .as_str()
            .unwrap_or_else(|| panic!("no host_interface\n{}", self.ctx()))
            .to_owned()
    }

    /// The probe's answers, with the gateway written back as `GW`.
    fn probed(&self) -> BTreeMap<String, String> {
        let (_, gw) = net_fields(self.stdout.first().map(String::as_str).unwrap_or(""));
        let json = self
            .stdout
            .last()
            .unwrap_or_else(|| panic!("no probe output\n{}", self.ctx()));
        let raw: BTreeMap<String, String> = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("probe output is not JSON ({e})\n{}", self.ctx()));
        raw.into_iter()
            .map(|(k, v)| (k.replace(&format!(":{gw}:"), ":GW:"), v))
            .collect()
    }

    /// The one audit event named `event`.
    fn event(&self, event: &str) -> &Value {
        let found: Vec<&Value> = self.audit.iter().filter(|e| e["event"] == event).collect();
        assert_eq!(found.len(), 1, "one {event} expected\n{}", self.ctx());
        found[0]
    }

    /// Everything the report and the audit copy say about the filtered
    /// network, and that nothing of it is left on the host.
    fn check_network(&self, allow_out: &[&str], allow_in: &[&str]) {
        assert_eq!(self.at("/isolation/network"), "filtered", "{}", self.ctx());
        let id = self.at("/sandbox_id").as_str().unwrap().to_owned();
        let host_if = self.host_interface();
        let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
        assert_eq!(host_if, format!("pv{hex}"), "{}", self.ctx());
        let address = self.net("address").as_str().unwrap_or_default();
        assert!(
            address.starts_with("10.251.") && address.ends_with("/30"),
            "address {address} from the test's pool\n{}",
            self.ctx()
        );
        let gateway = self.net("gateway").as_str().unwrap_or_default();
        assert!(gateway.starts_with("10.251."), "{}", self.ctx());
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(strings(self.net("allow_out")), allow_out, "{}", self.ctx());
        assert_eq!(strings(self.net("allow_in")), allow_in, "{}", self.ctx());
        assert_eq!(self.net("landlock_tcp"), true, "{}", self.ctx());
        assert!(self.net("detach_error").is_null(), "{}", self.ctx());
        assert!(self.net("counters").is_object(), "{}", self.ctx());

        // The audit trail: attached with the address, detached with the
        // same counters as the report, for this sandbox.
        let attached = self.event("net.attached");
        assert_eq!(attached["sandbox_id"], id.as_str(), "{}", self.ctx());
        assert_eq!(attached["address"], address, "{}", self.ctx());
        assert_eq!(
            attached["host_interface"],
            host_if.as_str(),
            "{}",
            self.ctx()
        );
        assert_eq!(strings(&attached["allow_out"]), allow_out, "{}", self.ctx());
        assert_eq!(strings(&attached["allow_in"]), allow_in, "{}", self.ctx());
        let detached = self.event("net.detached");
        assert_eq!(detached["sandbox_id"], id.as_str(), "{}", self.ctx());
        assert_eq!(
            detached["host_interface"],
            host_if.as_str(),
            "{}",
            self.ctx()
        );
        let mut dropped = 0;
        for dir in ["out", "in"] {
            for verdict in ["allowed", "dropped"] {
                for unit in ["packets", "bytes"] {
                    let name = format!("{dir}_{verdict}_{unit}");
                    assert_eq!(
                        detached[&name].as_u64(),
                        Some(self.counter(&name)),
                        "{name} in the audit trail\n{}",
                        self.ctx()
                    );
                    if verdict == "dropped" && unit == "packets" {
                        dropped += self.counter(&name);
                    }
                }
            }
        }
        assert_eq!(
            detached["dropped_packets"].as_u64(),
            Some(dropped),
            "{}",
            self.ctx()
        );
        let names: Vec<&str> = self
            .audit
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        let pos = |n: &str| names.iter().position(|e| *e == n);
        assert!(
            pos("net.attached") < pos("net.detached")
                && pos("net.detached") < pos("sandbox.exited"),
            "order of events: {names:?}"
        );

        // Nothing of it is left: no veth, no chain, counter or map element.
        assert!(!link_exists(&host_if), "{host_if} left after the run");
        let table = purple_table();
        assert!(!table.contains(&hex), "objects of {hex} left:\n{table}");
    }
}

/// (address, gateway) of a `net ADDRESS GATEWAY` line.
fn net_fields(line: &str) -> (String, String) {
    let mut p = line.split(' ').skip(1);
    (
        p.next().unwrap_or_default().to_owned(),
        p.next().unwrap_or_default().to_owned(),
    )
}

/// Runs PROBE_PY in a sandbox with `opts` and returns the finished run.
fn probe_in_sandbox(w: &World, opts: &[&str], targets: &[String]) -> Ran {
    let script = probe_py();
    let mut argv = vec!["python3", "-c", script.as_str(), SANDBOX_PROBE_TIMEOUT];
    argv.extend(targets.iter().map(String::as_str));
    let ran = Sup::start(w, opts, &argv).finish();
    ran.assert_success();
    ran
}

fn answer<'a>(r: &'a BTreeMap<String, String>, t: &str) -> &'a str {
    r.get(t).map(String::as_str).unwrap_or("missing")
}

fn assert_answer(r: &BTreeMap<String, String>, t: &str, want: &str, why: &str) {
    assert_eq!(answer(r, t), want, "{t}: {why}\nall answers: {r:?}");
}

fn assert_blocked(r: &BTreeMap<String, String>, t: &str, why: &str) {
    assert!(
        answer(r, t).starts_with("fail"),
        "{t} should be blocked: {why}\nall answers: {r:?}"
    );
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// Outbound: only the listed proto/ports reach the remote host (masqueraded
/// to this host's address), TCP ports also by Landlock and UDP only by
/// netd's rules; nothing of the host itself, neither on the sandbox's
/// gateway nor on its other addresses; then the report, the audit trail
/// and the cleanup.
#[test]
fn outbound_reaches_only_the_listed_ports() {
    if !require_root("outbound_reaches_only_the_listed_ports") {
        return;
    }
    let mut w = World::new();
    let (_, remote, host_addr) = w.remote();
    let dir = w.dir.path().to_owned();
    let _remote_listeners = serve(
        w.remote_ns().exec("python3"),
        &dir,
        &[
            target("tcp", &remote, 443),
            target("tcp", &remote, 80),
            target("udp", &remote, 5353),
            target("udp", &remote, 5300),
        ],
    );
    // The host's own services, on every address it has (so on the
    // sandbox's gateway too, once that exists) and on loopback.
    let _host_listeners = serve(host_python(), &dir, &[target("tcp", "0.0.0.0", 18443)]);
    // It answers, from the host itself and from the remote host.
    let local = [target("tcp", "127.0.0.1", 18443)];
    let r = probe(host_python(), &dir, &local);
    assert_answer(&r, &local[0], "ok 127.0.0.1", "the host's listener is up");
    let on_host = [target("tcp", &host_addr, 18443)];
    let r = probe(w.remote_ns().exec("python3"), &dir, &on_host);
    assert_answer(
        &r,
        &on_host[0],
        &format!("ok {remote}"),
        "the host's listener is up",
    );
    let pv_before = pv_links();

    let opts = [
        "--allow-out",
        "tcp:443",
        "--allow-out",
        "udp:5353",
        "--allow-out",
        "tcp:18443",
    ];
    let targets = [
        target("tcp", &remote, 443),
        target("udp", &remote, 5353),
        target("tcp", &remote, 80),
        target("udp", &remote, 5300),
        target("tcp", "GW", 18443),
        target("tcp", &host_addr, 18443),
        target("tcp", "127.0.0.1", 18443),
    ];
    let ran = probe_in_sandbox(&w, &opts, &targets);
    let r = ran.probed();
    let masqueraded = format!("ok {host_addr}");
    assert_answer(&r, &targets[0], &masqueraded, "allowed, masqueraded");
    assert_answer(&r, &targets[1], &masqueraded, "allowed UDP, masqueraded");
    assert_answer(
        &r,
        &targets[2],
        "fail PermissionError",
        "Landlock refuses connect to an unlisted TCP port (EACCES)",
    );
    assert_answer(
        &r,
        &targets[3],
        "fail TimeoutError",
        "an unlisted UDP port is dropped by netd's rules",
    );
    assert_answer(
        &r,
        &targets[4],
        "fail TimeoutError",
        "the host end (gateway) is not reachable, not even on an allowed port",
    );
    assert_answer(
        &r,
        &targets[5],
        "fail TimeoutError",
        "the host's other addresses are not reachable",
    );
    assert_blocked(
        &r,
        &targets[6],
        "127.0.0.1 is the sandbox's own loopback, not the host's",
    );
    let (me, gw) = net_fields(&ran.stdout[0]);
    assert_eq!(
        format!("{me}/30"),
        ran.net("address").as_str().unwrap_or_default(),
        "eth0 has the reported address\n{}",
        ran.ctx()
    );
    assert_eq!(ran.net("gateway"), gw.as_str(), "{}", ran.ctx());
    ran.check_network(&["tcp:443", "udp:5353", "tcp:18443"], &[]);
    for c in [
        "out_allowed_packets",
        "out_allowed_bytes",
        "in_allowed_packets",
    ] {
        assert!(ran.counter(c) > 0, "{c}\n{}", ran.ctx());
    }
    for c in ["out_dropped_packets", "out_dropped_bytes"] {
        assert!(ran.counter(c) > 0, "{c}\n{}", ran.ctx());
    }

    // Landlock lets port 80 through (it sees ports, not addresses); netd's
    // rules must still drop it, since the rule names another destination.
    let opts = [
        "--allow-out",
        "tcp:443",
        "--allow-out",
        "tcp:80@192.0.2.0/24",
    ];
    let targets = [target("tcp", &remote, 80), target("tcp", &remote, 443)];
    let ran = probe_in_sandbox(&w, &opts, &targets);
    let r = ran.probed();
    assert_answer(
        &r,
        &targets[0],
        "fail TimeoutError",
        "netd drops port 80 to a destination outside the rule's CIDR",
    );
    assert_answer(&r, &targets[1], &masqueraded, "allowed");
    ran.check_network(&["tcp:443", "tcp:80@192.0.2.0/24"], &[]);
    assert!(ran.counter("out_dropped_packets") > 0, "{}", ran.ctx());
    assert_eq!(pv_links(), pv_before, "pv interfaces left");
}

/// Inbound: a server in sandbox A is reachable from the remote host on its
/// listed port and through its published host port, not on an unlisted
/// port (TCP or UDP, even with a UDP listener there); sandbox B, running at
/// the same time, reaches neither A nor the published port.
#[test]
fn inbound_published_ports_and_no_sandbox_to_sandbox() {
    if !require_root("inbound_published_ports_and_no_sandbox_to_sandbox") {
        return;
    }
    let mut w = World::new();
    let (_, remote, host_addr) = w.remote();
    let dir = w.dir.path().to_owned();
    let pv_before = pv_links();

    let server = server_py();
    let mut a = Sup::start(
        &w,
        &["--allow-in", "tcp:8080", "--allow-in", "tcp:8081->18080"],
        &[
            "python3",
            "-c",
            &server,
            "tcp:0.0.0.0:8080",
            "tcp:0.0.0.0:8081",
            "udp:0.0.0.0:9090",
        ],
    );
    let (a_addr, _) = a.net_line();
    assert!(a_addr.starts_with("10.251."), "{}", a.partial());
    assert_eq!(a.line(), "ready", "{}", a.partial());

    let from_remote = [
        target("tcp", &a_addr, 8080),
        target("tcp", &a_addr, 8081),
        target("tcp", &host_addr, 18080),
        target("tcp", &a_addr, 9091),
        target("udp", &a_addr, 9090),
    ];
    let r = probe(w.remote_ns().exec("python3"), &dir, &from_remote);
    let direct = format!("ok {remote}");
    assert_answer(&r, &from_remote[0], &direct, "allow_in tcp:8080");
    assert_answer(&r, &from_remote[1], &direct, "allow_in tcp:8081");
    assert_answer(
        &r,
        &from_remote[2],
        &direct,
        "published tcp:8081->18080 on the host's address",
    );
    assert_answer(
        &r,
        &from_remote[3],
        "fail TimeoutError",
        "an unlisted TCP port is dropped (not refused by the sandbox's kernel)",
    );
    assert_answer(
        &r,
        &from_remote[4],
        "fail TimeoutError",
        "an unlisted UDP port is dropped, though a listener is there",
    );

    // B, at the same time, with the ports in its own allow_out (so
    // Landlock lets it try): A, the published port and the host all dropped.
    let from_b = [
        target("tcp", &a_addr, 8080),
        target("tcp", &a_addr, 8081),
        target("udp", &a_addr, 9090),
        target("tcp", &host_addr, 18080),
        target("tcp", "GW", 18080),
    ];
    let b = probe_in_sandbox(
        &w,
        &[
            "--allow-out",
            "tcp:8080-8081",
            "--allow-out",
            "udp:9090",
            "--allow-out",
            "tcp:18080",
        ],
        &from_b,
    );
    let rb = b.probed();
    for t in &from_b {
        assert_answer(&rb, t, "fail TimeoutError", "sandbox to sandbox or host");
    }
    b.check_network(&["tcp:8080-8081", "udp:9090", "tcp:18080"], &[]);
    assert!(b.counter("out_dropped_packets") > 0, "{}", b.ctx());
    assert_eq!(b.counter("out_allowed_packets"), 0, "{}", b.ctx());

    let a = a.finish();
    a.assert_success();
    a.check_network(&[], &["tcp:8080", "tcp:8081->18080"]);
    for c in [
        "in_allowed_packets",
        "in_allowed_bytes",
        "in_dropped_packets",
        "in_dropped_bytes",
        "out_allowed_packets",
    ] {
        assert!(a.counter(c) > 0, "{c}\n{}", a.ctx());
    }
    let table = purple_table();
    assert!(!table.contains("18080"), "published port left:\n{table}");
    assert_eq!(pv_links(), pv_before, "pv interfaces left");
}

/// With purple-netd gone, `--net filtered` fails closed: exit 125, a
/// `purple:` line naming purple-netd, the command never ran, nothing left.
#[test]
fn filtered_run_without_netd_fails_closed() {
    if !require_root("filtered_run_without_netd_fails_closed") {
        return;
    }
    let mut w = World::new();
    let pv_before = pv_links();
    w.kill_netd();
    let ran = Sup::start(&w, &["--net", "filtered"], &["/bin/sh", "-c", "echo RAN"]).finish();
    assert_eq!(ran.status.code(), Some(EXIT_PURPLE), "{}", ran.ctx());
    assert!(
        !ran.stdout.iter().any(|l| l.contains("RAN")),
        "the command ran\n{}",
        ran.ctx()
    );
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.starts_with("purple:") && l.contains("purple-netd")),
        "a purple: line naming purple-netd\n{}",
        ran.ctx()
    );
    assert_eq!(ran.at("/status"), "setup_failed", "{}", ran.ctx());
    assert_eq!(ran.at("/exit_code"), EXIT_PURPLE, "{}", ran.ctx());
    let message = ran.at("/message").as_str().unwrap_or_default();
    assert!(message.contains("purple-netd"), "{}", ran.ctx());
    assert!(
        !ran.audit.iter().any(|e| e["event"] == "net.attached"),
        "{}",
        ran.ctx()
    );
    ran.event("setup.failed");
    assert_eq!(pv_links(), pv_before, "pv interfaces left");
    let table = purple_table();
    for object in ["chain pv", "counter pv"] {
        assert!(!table.contains(object), "{object} left:\n{table}");
    }
}
