//! Fixtures for the filtered-network tests (`tests/netd.rs` drives
//! purple-netd directly, `tests/network.rs` drives whole sandboxes through
//! purple-supervisor): a daemon on a temporary socket, a "remote host"
//! network namespace of the test's own (198.19.0.0/16, a benchmarking
//! range, reachable from this machine only), namespaces made with
//! `ip netns add`, and small Python listeners and probes.
//!
//! A `World` holds two locks for its whole life: a mutex (tests of one
//! binary run on threads) and an flock on [`HOST_LOCK`] (the test binaries
//! run as separate processes, and at most one purple-netd may run per host:
//! its lock file, `table inet purple` and net.ipv4.ip_forward are
//! host-wide). Its Drop kills the daemon by pid, deletes the remote
//! namespace and its veth, deletes `table inet purple` and restores
//! net.ipv4.ip_forward (and netd's forwarding marker), all before the
//! locks are let go, so a failing test leaves nothing behind and never
//! pulls the table from under another. The daemon, the listeners and the
//! supervisors the tests start get SIGKILL when the test's thread ends
//! (`die_with_parent`), so even a test process that aborts or is killed
//! leaves no process behind (the next `World` deletes the table it left;
//! net.ipv4.ip_forward and the marker then stay as that netd left them).

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use purple_common::netd::{
    call, AttachRequest, Attachment, NetCounters, NetdReply, NetdRequest, NETD_PROTOCOL_VERSION,
};

pub const IP: &str = "/usr/sbin/ip";
pub const NFT: &str = "/usr/sbin/nft";
/// The address pool every test's sandboxes come from (the remote host routes
/// it back through this host).
pub const POOL: &str = "10.251.0.0/16";
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a probe waits for an answer; a dropped packet costs this much.
pub const PROBE_TIMEOUT: &str = "0.6";
/// The cross-process lock every `World` holds (see the module's comment).
/// In purple-netd's own directory, root's only.
pub const HOST_LOCK: &str = "/run/purple/tests-net.lock";
/// Where purple-netd remembers that it turned net.ipv4.ip_forward on; a
/// `World` removes it again when it was not there before, together with
/// restoring the sysctl.
pub const FORWARDING_MARKER: &str = "/run/purple/netd-forwarding";

static SERIAL: Mutex<()> = Mutex::new(());

/// Exclusive use of the host's filtered-network state: this binary's mutex,
/// then an flock on [`HOST_LOCK`] shared with every other test binary.
/// Released on drop (the flock with its file).
#[derive(Debug)]
pub struct HostNetLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

impl HostNetLock {
    pub fn take() -> HostNetLock {
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let path = Path::new(HOST_LOCK);
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                // As purple-netd creates it: root's, 0755.
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .unwrap_or_else(|e| panic!("open {HOST_LOCK}: {e}"));
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::Interrupted,
                "flock {HOST_LOCK}: {e}"
            );
        }
        HostNetLock {
            _file: file,
            _guard: guard,
        }
    }
}

/// Makes `cmd`'s process get SIGKILL when the thread that spawns it ends,
/// so that a test process that dies without unwinding (SIGKILL, an abort)
/// leaves no daemon, listener or supervisor behind.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe,
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// The build tree's purple-netd (next to the test binary's directory).
pub fn netd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let bin = dir.join("purple-netd");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

pub fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

pub fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The host's `pv*` interfaces (sandbox veths' host ends), sorted.
pub fn pv_links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("pv"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn purple_table() -> String {
    String::from_utf8_lossy(&run(NFT, &["list", "table", "inet", "purple"]).stdout).into_owned()
}

/// Listeners: `SERVER_PY proto:host:port ...` answers every TCP connection
/// and UDP datagram with "ok <peer address>"; prints "ready" once all are
/// bound.
pub const SERVER_PY: &str = r#"
import socket, sys, threading
def tcp(host, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(64)
    while True:
        c, a = s.accept()
        try: c.sendall(("ok %s\n" % a[0]).encode())
        except OSError: pass
        c.close()
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, port))
    while True:
        d, a = s.recvfrom(100); s.sendto(("ok %s\n" % a[0]).encode(), a)
for spec in sys.argv[1:]:
    proto, host, port = spec.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(host, int(port)), daemon=True).start()
import time; time.sleep(0.2)
print("ready", flush=True)
threading.Event().wait()
"#;

/// Probes: `PROBE_PY TIMEOUT proto:host:port ...` tries every target at once
/// and prints one JSON object, target -> "ok <source address as the server
/// saw it>" or "fail <exception class>".
pub const PROBE_PY: &str = r#"
import json, socket, sys, threading
timeout = float(sys.argv[1]); results = {}
def probe(spec):
    proto, host, port = spec.split(":")
    try:
        if proto == "tcp":
            s = socket.create_connection((host, int(port)), timeout=timeout)
            data = s.recv(100)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
            s.sendto(b"hi", (host, int(port))); data = s.recvfrom(100)[0]
        results[spec] = data.decode().strip() or "fail empty"
    except Exception as e:
        results[spec] = "fail " + type(e).__name__
ts = [threading.Thread(target=probe, args=(s,)) for s in sys.argv[2:]]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(results))
"#;

/// A network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = run(IP, &["netns", "del", &name]);
        must(IP, &["netns", "add", &name]);
        Netns { name }
    }

    pub fn open(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).unwrap()
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        must(IP, &full)
    }

    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new(IP);
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(IP, &["netns", "del", &self.name]);
    }
}

/// A process killed by its pid on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the listeners of SERVER_PY through `cmd` and waits until they are up.
pub fn serve(mut cmd: Command, dir: &Path, specs: &[String]) -> Proc {
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER_PY).unwrap();
    cmd.arg("-u").arg(&script).args(specs);
    die_with_parent(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "listeners {specs:?} did not start");
    Proc(child)
}

/// Runs PROBE_PY through `cmd` on every target at once; target -> answer
/// ("ok <source address as the server saw it>" or "fail <why>").
pub fn probe(mut cmd: Command, dir: &Path, targets: &[String]) -> BTreeMap<String, String> {
    let script = dir.join("probe.py");
    std::fs::write(&script, PROBE_PY).unwrap();
    let out = cmd
        .arg(&script)
        .arg(PROBE_TIMEOUT)
        .args(targets)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn host_python() -> Command {
    Command::new("python3")
}

/// "proto:host:port", a probe or listener target.
pub fn target(proto: &str, host: &str, port: u16) -> String {
    format!("{proto}:{host}:{port}")
}

/// The daemon, its socket and the cleanup of everything the test touched.
#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    netd: Option<Child>,
    /// net.ipv4.ip_forward before the daemon started.
    pub forward_before: String,
    marker_before: bool,
    serial: u32,
    remote: Option<(Netns, String)>,
    _lock: HostNetLock,
}

impl World {
    /// Takes the host lock, then starts purple-netd on a temporary socket.
    pub fn new() -> World {
        let lock = HostNetLock::take();
        let dir = tempfile::Builder::new()
            .prefix("netd-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("netd.sock");
        let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim()
            .to_owned();
        let mut w = World {
            dir,
            socket,
            netd: None,
            forward_before,
            marker_before: Path::new(FORWARDING_MARKER).exists(),
            serial: 0,
            remote: None,
            _lock: lock,
        };
        w.start_netd();
        w
    }

    /// Starts purple-netd (killing the one this World runs, if any) and
    /// waits for its socket.
    pub fn start_netd(&mut self) {
        self.start_netd_under(&[]);
    }

    /// Starts purple-netd as the last argument of `wrapper` (such as a
    /// `setpriv` that narrows what it starts with), or directly.
    pub fn start_netd_under(&mut self, wrapper: &[&str]) {
        self.kill_netd();
        let log = File::create(self.dir.path().join("netd.log")).unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(netd_binary());
                cmd
            }
            None => Command::new(netd_binary()),
        };
        let child = die_with_parent(&mut cmd)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--reconcile-interval", "1"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.netd = Some(child);
        let socket = self.socket.clone();
        wait_until("purple-netd's socket", TIMEOUT, || {
            UnixStream::connect(&socket).is_ok()
        });
    }

    /// SIGKILLs the daemon (by pid) and reaps it.
    pub fn kill_netd(&mut self) {
        if let Some(mut child) = self.netd.take() {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Panics when the daemon has exited.
    pub fn assert_netd_alive(&mut self) {
        let child = self.netd.as_mut().expect("purple-netd was started");
        assert!(child.try_wait().unwrap().is_none(), "purple-netd died");
    }

    pub fn netd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("netd.log")).unwrap_or_default()
    }

    pub fn request(&self, request: &NetdRequest, netns: Option<&File>) -> NetdReply {
        call(
            &self.socket,
            request,
            netns.map(|f| f.as_fd()),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{e}\nnetd log:\n{}", self.netd_log()))
    }

    /// A fresh (namespace name, sandbox id).
    pub fn sandbox_name(&mut self) -> (String, String) {
        self.serial += 1;
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            std::process::id(),
            self.serial,
            Instant::now().elapsed().as_nanos() as u64 ^ 0x5eed
        );
        (
            format!("purple-t-sb{}-{}", std::process::id(), self.serial),
            id,
        )
    }

    /// A sandbox namespace, attached and configured from the reply.
    pub fn sandbox(&mut self, out: &[&str], inbound: &[&str]) -> Sandbox {
        let (name, id) = self.sandbox_name();
        let ns = Netns::new(name);
        let reply = self.request(&attach(&id, out, inbound), Some(&ns.open()));
        let NetdReply::Attached(att) = reply else {
            panic!("attach refused: {reply:?}\nnetd log:\n{}", self.netd_log());
        };
        configure_inside(&ns, &att);
        Sandbox { ns, id, att }
    }

    pub fn detach(&self, id: &str) -> Option<NetCounters> {
        match self.request(&NetdRequest::detach(id), None) {
            NetdReply::Detached(c) => c,
            other => panic!("detach refused: {other:?}"),
        }
    }

    /// The remote host: a namespace behind a veth, with a route back to the
    /// pool through this host. Returns (namespace, its address, our address).
    pub fn remote(&mut self) -> (String, String, String) {
        let pid = std::process::id();
        let octet = pid % 250 + 1;
        let host_addr = format!("198.19.{octet}.1");
        let remote_addr = format!("198.19.{octet}.2");
        if self.remote.is_none() {
            let ns = Netns::new(format!("purple-t-remote-{pid}"));
            let host_if = format!("prt{pid}");
            let _ = run(IP, &["link", "del", &host_if]);
            let netns_arg = ns.name.clone();
            must(
                IP,
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
                    &netns_arg,
                ],
            );
            must(
                IP,
                &["addr", "add", &format!("{host_addr}/24"), "dev", &host_if],
            );
            must(IP, &["link", "set", &host_if, "up"]);
            ns.ip(&["link", "set", "lo", "up"]);
            ns.ip(&["addr", "add", &format!("{remote_addr}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            ns.ip(&["route", "add", POOL, "via", &host_addr]);
            self.remote = Some((ns, host_if));
        }
        let (ns, _) = self.remote.as_ref().unwrap();
        (ns.name.clone(), remote_addr, host_addr)
    }

    /// The remote host's namespace (after `remote()`).
    pub fn remote_ns(&self) -> &Netns {
        &self.remote.as_ref().expect("World::remote() first").0
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Not eprintln!: a second panic here (stderr closed) would
            // abort before the cleanup below.
            let _ = writeln!(
                std::io::stderr(),
                "--- purple-netd log:\n{}",
                self.netd_log()
            );
        }
        self.kill_netd();
        if let Some((ns, host_if)) = self.remote.take() {
            drop(ns);
            let _ = run(IP, &["link", "del", &host_if]);
        }
        // The daemon is gone; what it left is the test's to remove (the
        // sandboxes' namespaces are dropped by their owners before this).
        let _ = run(NFT, &["delete", "table", "inet", "purple"]);
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forward_before);
        if !self.marker_before {
            let _ = std::fs::remove_file(FORWARDING_MARKER);
        }
        // The host lock goes with the fields, after all of this.
    }
}

/// A namespace attached by `World::sandbox`.
#[derive(Debug)]
pub struct Sandbox {
    pub ns: Netns,
    pub id: String,
    pub att: Attachment,
}

impl Sandbox {
    pub fn addr(&self) -> String {
        self.att.address.to_string()
    }
}

pub fn attach(id: &str, out: &[&str], inbound: &[&str]) -> NetdRequest {
    NetdRequest::Attach(AttachRequest {
        version: NETD_PROTOCOL_VERSION,
        sandbox_id: id.to_owned(),
        pool: POOL.parse().unwrap(),
        allow_out: out.iter().map(|s| s.parse().unwrap()).collect(),
        allow_in: inbound.iter().map(|s| s.parse().unwrap()).collect(),
    })
}

/// What purple-init's child does inside the sandbox with the reply.
pub fn configure_inside(ns: &Netns, att: &Attachment) {
    let cidr = format!("{}/{}", att.address, att.prefix_len);
    let gw = att.gateway.to_string();
    let dev = att.sandbox_interface.as_str();
    let disable = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    let out = ns
        .exec("sh")
        .args(["-c", &format!("echo 1 > {disable}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["addr", "add", &cidr, "dev", dev]);
    ns.ip(&["link", "set", dev, "up"]);
    ns.ip(&["route", "add", "default", "via", &gw]);
}

pub fn is_ok(results: &BTreeMap<String, String>, target: &str) -> bool {
    results.get(target).is_some_and(|r| r.starts_with("ok"))
}

pub fn expect(results: &BTreeMap<String, String>, allowed: &[String], blocked: &[String]) {
    for t in allowed {
        assert!(is_ok(results, t), "{t} should be reachable: {results:?}");
    }
    for t in blocked {
        assert!(!is_ok(results, t), "{t} should be blocked: {results:?}");
    }
}

/// A namespace behind a veth `host_if` from this host: `host_cidr` here,
/// `ns_cidr` inside, and a route to `via_route` through this host.
pub fn peer_ns(
    name: String,
    host_if: &str,
    host_cidr: &str,
    ns_cidr: &str,
    via_route: &str,
) -> Netns {
    let ns = Netns::new(name);
    let _ = run(IP, &["link", "del", host_if]);
    let target = ns.name.clone();
    must(
        IP,
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &target,
        ],
    );
    must(IP, &["addr", "add", host_cidr, "dev", host_if]);
    must(IP, &["link", "set", host_if, "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["addr", "add", ns_cidr, "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    let gateway = host_cidr.split('/').next().unwrap();
    ns.ip(&["route", "add", via_route, "via", gateway]);
    ns
}
