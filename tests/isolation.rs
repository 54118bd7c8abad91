//! Isolation and escape tests: each property is checked from INSIDE a real
//! sandbox (and, where the property is about the host, from the host side
//! too), for both a root caller and an unprivileged caller going through the
//! setuid purple-init.
//!
//! Probes that try to escape run only inside the sandbox. On the host these
//! tests only read /proc, listen on loopback / abstract / pathname sockets
//! they created, and signal processes they started themselves (by pid).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use purple_tests::*;
use std::collections::{BTreeSet, HashMap};
use std::ffi::CStr;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single supervisor run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(30);
/// The unprivileged id a root caller's sandbox maps to.
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Running sandboxes (with a deadline, concurrent stdin/stdout/stderr)
// ---------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A `sleep` argument unique to this call (`1000.<pid><nnn>`), so the process
/// can be found on the host by an exact argv element.
fn sleep_marker() -> String {
    format!(
        "1000.{}{:03}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst) % 1000
    )
}

fn gid_of(caller: Caller) -> u32 {
    match caller {
        Caller::Root => NOBODY,
        Caller::User => TEST_GID,
    }
}

/// A workspace directory writable by the sandbox's mapped uid.
fn workspace_for(caller: Caller) -> tempfile::TempDir {
    private_dir(caller.sandbox_uid(), gid_of(caller))
}

enum Input {
    Null,
    Bytes(Vec<u8>),
    /// Keep a pipe open until `Held::finish`.
    Hold,
}

/// A running supervisor whose output is collected in the background.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    writer: Option<JoinHandle<()>>,
    out: Arc<Mutex<Vec<u8>>>,
    out_t: Option<JoinHandle<()>>,
    err: Arc<Mutex<Vec<u8>>>,
    err_t: Option<JoinHandle<()>>,
    done: bool,
}

impl Held {
    fn start(mut cmd: Command, input: Input) -> Held {
        cmd.stdin(match input {
            Input::Null => Stdio::null(),
            _ => Stdio::piped(),
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn purple-supervisor");
        let (out, out_t) = collect(child.stdout.take().unwrap());
        let (err, err_t) = collect(child.stderr.take().unwrap());
        let mut stdin = child.stdin.take();
        let writer = match input {
            Input::Bytes(data) => {
                let mut w = stdin.take().unwrap();
                Some(std::thread::spawn(move || {
                    let _ = w.write_all(&data);
                }))
            }
            _ => None,
        };
        Held {
            child,
            stdin,
            writer,
            out,
            out_t: Some(out_t),
            err,
            err_t: Some(err_t),
            done: false,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn partial(&self) -> String {
        format!(
            "--- stdout so far:\n{}\n--- stderr so far:\n{}",
            String::from_utf8_lossy(&self.out.lock().unwrap()),
            String::from_utf8_lossy(&self.err.lock().unwrap())
        )
    }

    /// Waits until stdout contains the line `line`.
    fn wait_for_line(&self, line: &str, timeout: Duration) {
        let ok = wait_until(timeout, || {
            String::from_utf8_lossy(&self.out.lock().unwrap())
                .lines()
                .any(|l| l == line)
        });
        assert!(
            ok,
            "sandbox never printed {line:?} within {timeout:?}\n{}",
            self.partial()
        );
    }

    /// Closes stdin, waits for the supervisor (with the deadline) and for
    /// every holder of its stdout/stderr pipes to go away.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.done = true;
                panic!(
                    "purple-supervisor did not finish within {DEADLINE:?}; killed it\n{}",
                    self.partial()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.done = true;
        let readers = [self.out_t.take().unwrap(), self.err_t.take().unwrap()];
        let closed = wait_until(Duration::from_secs(10), || {
            readers.iter().all(JoinHandle::is_finished)
        });
        assert!(
            closed,
            "purple-supervisor exited ({status:?}) but something still holds its stdout/stderr open \
             10 s later: a sandbox process survived\n{}",
            self.partial()
        );
        for t in readers {
            t.join().unwrap();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        Output {
            status,
            stdout: std::mem::take(&mut *self.out.lock().unwrap()),
            stderr: std::mem::take(&mut *self.err.lock().unwrap()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // A test failed while this sandbox was running: let it end (stdin
        // closes), and kill the supervisor we started if it does not.
        drop(self.stdin.take());
        let ended = wait_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_cmd(cmd: Command, input: Input) -> Output {
    Held::start(cmd, input).finish()
}

/// `purple-supervisor ARGS` as `caller`, stdin from /dev/null.
fn run(caller: Caller, args: &[&str]) -> Output {
    run_cmd(caller.command(args), Input::Null)
}

/// `purple-supervisor run [OPTS] -- /bin/sh -c SCRIPT`.
fn sh_opts(caller: Caller, opts: &[&str], script: &str) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    run(caller, &args)
}

fn sh(caller: Caller, script: &str) -> Output {
    sh_opts(caller, &[], script)
}

/// `purple-supervisor run -- python3 -c SCRIPT ARGS...`.
fn py(caller: Caller, script: &str, args: &[&str]) -> Output {
    let mut all = vec!["run", "--", "python3", "-c", script];
    all.extend_from_slice(args);
    run(caller, &all)
}

/// Runs `f` for each caller. A failure for one caller does not hide the
/// other caller's result: every failure is reported at the end.
fn for_each_caller(mut f: impl FnMut(Caller)) {
    let mut failures = Vec::new();
    for c in Caller::BOTH {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("[caller {c:?}] {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "failed for {} of 2 callers:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the first `KEY value` line printed by a probe script.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
}

// ---------------------------------------------------------------------------
// Host-side /proc inspection (read-only, plus SIGKILL to our own processes)
// ---------------------------------------------------------------------------

/// A host process this test started, killed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct ProcStat {
    state: char,
    ppid: i32,
    session: i32,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every process below `root` (not including it).
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(st) = proc_stat(pid) {
            children.entry(st.ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn is_live(st: &ProcStat) -> bool {
    st.state != 'Z' && st.state != 'X'
}

/// Live (non-zombie) host processes with `arg` as an exact argv element.
fn live_with_arg(arg: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| is_live(&s)))
        .filter(|&p| cmdline(p).iter().any(|a| a == arg))
        .collect()
}

/// The same process (pid and start time) is still alive and not a zombie.
fn still_alive(pid: i32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|s| s.start == start && is_live(&s))
}

/// SIGKILL processes this test started (found by our unique marker or as our
/// own descendants), so a failing test leaves nothing behind.
fn kill_ours(pids: &[i32]) {
    for &p in pids {
        // SAFETY: kill(2) with a pid of a process this test started.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Descendants of the supervisor that are inside the sandbox (another pid
/// namespace than ours).
fn sandbox_pids(supervisor: i32) -> Vec<i32> {
    let host = ns_link("self", "pid");
    descendants(supervisor)
        .into_iter()
        .filter(|p| {
            let ns = ns_link(&p.to_string(), "pid");
            !ns.is_empty() && ns != host
        })
        .collect()
}

fn fd_targets(pid: i32) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// mountinfo
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Mount {
    dev: String,
    root: String,
    point: String,
    opts: Vec<String>,
    fstype: String,
    super_opts: Vec<String>,
}

impl Mount {
    fn ro(&self) -> bool {
        self.opts.iter().any(|o| o == "ro")
    }
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let a: Vec<&str> = a.split(' ').collect();
            let b: Vec<&str> = b.split(' ').collect();
            Some(Mount {
                dev: a.get(2)?.to_string(),
                root: a.get(3)?.to_string(),
                point: a.get(4)?.to_string(),
                opts: a.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: b.first()?.to_string(),
                super_opts: b
                    .get(2)
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The topmost mount at `point` (the last one listed).
fn mount_at<'a>(mounts: &'a [Mount], point: &str) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.point == point)
}

// ---------------------------------------------------------------------------
// Namespaces, ids
// ---------------------------------------------------------------------------

#[test]
fn namespaces_all_differ_from_host() {
    if !require_root("namespaces_all_differ_from_host") {
        return;
    }
    let kinds = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];
    for_each_caller(|c| {
        let out = sh(
            c,
            "for n in user mnt pid net ipc uts cgroup; do echo \"$n $(readlink /proc/self/ns/$n)\"; done",
        );
        let text = ok_stdout(&out);
        for ns in kinds {
            let inside = field(&text, ns).unwrap_or_default();
            let host = ns_link("self", ns);
            assert!(
                inside.starts_with(&format!("{ns}:[")),
                "{c:?}: no {ns} namespace link inside\n{}",
                show(&out)
            );
            assert_ne!(
                inside,
                host,
                "{c:?}: the sandbox shares the host's {ns} namespace\n{}",
                show(&out)
            );
        }
    });
}

#[test]
fn uid_gid_maps_are_single_identity_lines() {
    if !require_root("uid_gid_maps_are_single_identity_lines") {
        return;
    }
    for_each_caller(|c| {
        let out = sh(
            c,
            "echo UID; cat /proc/self/uid_map; echo GID; cat /proc/self/gid_map; \
             echo SETGROUPS; cat /proc/self/setgroups; echo IDS; id -u; id -g",
        );
        let text = ok_stdout(&out);
        let section = |name: &str| -> Vec<String> {
            text.split(&format!("{name}\n"))
                .nth(1)
                .unwrap_or_default()
                .lines()
                .take_while(|l| !matches!(*l, "UID" | "GID" | "SETGROUPS" | "IDS"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        };
        let (u, g) = (c.sandbox_uid(), gid_of(c));
        assert_eq!(
            section("UID"),
            vec![format!("{u} {u} 1")],
            "{c:?}: uid_map\n{}",
            show(&out)
        );
        assert_eq!(
            section("GID"),
            vec![format!("{g} {g} 1")],
            "{c:?}: gid_map\n{}",
            show(&out)
        );
        assert_eq!(
            section("SETGROUPS"),
            vec!["deny".to_owned()],
            "{c:?}: setgroups\n{}",
            show(&out)
        );
        assert_eq!(
            section("IDS"),
            vec![u.to_string(), g.to_string()],
            "{c:?}: ids\n{}",
            show(&out)
        );
    });
}

// ---------------------------------------------------------------------------
// Filesystem
// ---------------------------------------------------------------------------

#[test]
fn root_is_a_read_only_tmpfs() {
    if !require_root("root_is_a_read_only_tmpfs") {
        return;
    }
    for_each_caller(|c| {
        let out = sh(
            c,
            "touch /x 2>/dev/null; echo touch $?; \
             mkdir /newdir 2>/dev/null; echo mkdir $?; \
             mount -o remount,rw / 2>/dev/null; echo remount $?; \
             mount -o remount,rw,bind / 2>/dev/null; echo remount_bind $?; \
             touch /x 2>/dev/null; echo touch_after $?; \
             echo MOUNTINFO; cat /proc/self/mountinfo",
        );
        let text = ok_stdout(&out);
        for probe in ["touch", "mkdir", "remount", "remount_bind", "touch_after"] {
            assert_ne!(
                field(&text, probe),
                Some("0"),
                "{c:?}: `{probe}` on / succeeded\n{}",
                show(&out)
            );
        }
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        let roots: Vec<&Mount> = mounts.iter().filter(|m| m.point == "/").collect();
        assert_eq!(
            roots.len(),
            1,
            "{c:?}: expected exactly one mount at /\n{}",
            show(&out)
        );
        assert_eq!(
            roots[0].fstype,
            "tmpfs",
            "{c:?}: / is not a tmpfs\n{}",
            show(&out)
        );
        assert!(
            roots[0].ro(),
            "{c:?}: / is not mounted read-only\n{}",
            show(&out)
        );
    });
}

#[test]
fn system_dirs_are_read_only_and_locked() {
    if !require_root("system_dirs_are_read_only_and_locked") {
        return;
    }
    let dirs = ["/usr", "/bin", "/lib", "/etc/ssl"];
    // Probe each dir directly, then again from a nested user+mount namespace
    // where the workload would hold CAP_SYS_ADMIN: the read-only flag must be
    // locked (MNT_LOCK_READONLY) so the remount still fails.
    let probe = "for d in / /usr /bin /lib /etc/ssl /dev /proc/sys; do \
           mount -o remount,rw,bind $d 2>/dev/null; a=$?; \
           mount -o remount,rw $d 2>/dev/null; b=$?; \
           touch $d/purple-probe 2>/dev/null; t=$?; \
           echo \"$P $d $a $b $t\"; done";
    let script = format!(
        "P=direct; {probe}; \
         unshare -Urm sh -c 'echo NESTED_ENTERED; P=nested; {}'; echo unshare_rc $?; \
         echo MOUNTINFO; cat /proc/self/mountinfo",
        probe.replace('\'', "'\\''")
    );
    for_each_caller(|c| {
        let out = sh(c, &script);
        let text = ok_stdout(&out);
        for line in text
            .lines()
            .filter(|l| l.starts_with("direct ") || l.starts_with("nested "))
        {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 5, "{c:?}: bad probe line {line:?}\n{}", show(&out));
            assert!(
                f[2] != "0" && f[3] != "0" && f[4] != "0",
                "{c:?}: {} {}: a read-only mount could be remounted rw or written \
                 (remount,bind rc={}, remount rc={}, touch rc={})\n{}",
                f[0],
                f[1],
                f[2],
                f[3],
                f[4],
                show(&out)
            );
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("direct ")).count(),
            7,
            "{}",
            show(&out)
        );
        if text.lines().any(|l| l == "NESTED_ENTERED") {
            assert_eq!(
                text.lines().filter(|l| l.starts_with("nested ")).count(),
                7,
                "{c:?}: nested probes did not all run\n{}",
                show(&out)
            );
        } else {
            eprintln!("{c:?}: note: unshare -Urm is refused inside the sandbox; nested remount probe not needed");
        }
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        for d in dirs {
            if !Path::new(d).exists() {
                continue;
            }
            let m = mount_at(&mounts, d)
                .unwrap_or_else(|| panic!("{c:?}: no mount at {d} inside\n{}", show(&out)));
            assert!(m.ro(), "{c:?}: {d} is not read-only: {m:?}\n{}", show(&out));
        }
        // /bin on a merged-/usr host is a bind of /usr/bin.
        if std::fs::read_link("/bin")
            .is_ok_and(|t| t == Path::new("usr/bin") || t == Path::new("/usr/bin"))
        {
            let m = mount_at(&mounts, "/bin").unwrap();
            assert_eq!(
                m.root, "/usr/bin",
                "{c:?}: /bin is not a bind of /usr/bin: {m:?}"
            );
        }
    });
}

#[test]
fn old_root_is_detached() {
    if !require_root("old_root_is_detached") {
        return;
    }
    let host_mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let host_root = mount_at(&host_mounts, "/")
        .expect("host root mount")
        .clone();
    let exe = std::env::current_exe().unwrap();
    let mut host_paths: Vec<PathBuf> = [
        "/work", "/root", "/home", "/boot", "/var", "/srv", "/opt", "/mnt",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect();
    host_paths.push(exe.clone());
    host_paths.push(exe.parent().unwrap().to_owned());
    let mut script = String::new();
    for p in &host_paths {
        script.push_str(&format!(
            "test -e '{0}' && echo VISIBLE '{0}'; ",
            p.display()
        ));
    }
    script.push_str("echo MOUNTINFO; cat /proc/self/mountinfo");
    for_each_caller(|c| {
        let out = sh(c, &script);
        let text = ok_stdout(&out);
        assert!(
            !text.contains("VISIBLE"),
            "{c:?}: host paths visible inside\n{}",
            show(&out)
        );
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        assert!(!mounts.is_empty(), "{}", show(&out));
        for m in &mounts {
            assert!(
                !(m.dev == host_root.dev && m.root == host_root.root),
                "{c:?}: the host root filesystem ({} {}) is mounted inside at {}\n{}",
                host_root.dev,
                host_root.root,
                m.point,
                show(&out)
            );
        }
    });
}

#[test]
fn dev_is_minimal_and_read_only() {
    if !require_root("dev_is_minimal_and_read_only") {
        return;
    }
    let expected: BTreeSet<&str> = [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin",
        "stdout", "stderr",
    ]
    .into_iter()
    .collect();
    for_each_caller(|c| {
        let out = sh(
            c,
            "echo DEV; ls -A /dev; echo PTS; ls -A /dev/pts; echo END; \
             echo ptmx_link $(readlink /dev/ptmx); \
             test -c /dev/pts/ptmx && echo pts_ptmx_char; \
             touch /dev/x 2>/dev/null; echo touch $?; \
             mknod /dev/sda b 8 0 2>/dev/null; echo mknod $?; \
             mknod /tmp/sda b 8 0 2>/dev/null; echo mknod_tmp $?; \
             mount -o remount,rw /dev 2>/dev/null; echo remount $?; \
             echo hi > /dev/null; echo devnull $?; \
             echo zero $(head -c 4 /dev/zero | od -An -tx1 | tr -d ' '); \
             echo MOUNTINFO; cat /proc/self/mountinfo",
        );
        let text = ok_stdout(&out);
        let between = |a: &str, b: &str| -> BTreeSet<String> {
            text.split(&format!("{a}\n"))
                .nth(1)
                .unwrap_or_default()
                .split(&format!("{b}\n"))
                .next()
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        let dev = between("DEV", "PTS");
        let want: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(dev, want, "{c:?}: /dev contents\n{}", show(&out));
        let pts = between("PTS", "END");
        assert!(
            pts.contains("ptmx"),
            "{c:?}: /dev/pts has no ptmx\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "ptmx_link"),
            Some("pts/ptmx"),
            "{c:?}\n{}",
            show(&out)
        );
        assert!(
            text.lines().any(|l| l == "pts_ptmx_char"),
            "{c:?}\n{}",
            show(&out)
        );
        for probe in ["touch", "mknod", "mknod_tmp", "remount"] {
            assert_ne!(
                field(&text, probe),
                Some("0"),
                "{c:?}: `{probe}` in /dev succeeded\n{}",
                show(&out)
            );
        }
        assert_eq!(field(&text, "devnull"), Some("0"), "{c:?}\n{}", show(&out));
        assert_eq!(
            field(&text, "zero"),
            Some("00000000"),
            "{c:?}\n{}",
            show(&out)
        );
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        let m = mount_at(&mounts, "/dev")
            .unwrap_or_else(|| panic!("{c:?}: no /dev mount\n{}", show(&out)));
        assert!(
            m.ro(),
            "{c:?}: /dev is not read-only: {m:?}\n{}",
            show(&out)
        );
    });
}

#[test]
fn no_sys() {
    if !require_root("no_sys") {
        return;
    }
    for_each_caller(|c| {
        let out = sh(
            c,
            "if test -e /sys; then echo PRESENT; ls /sys; else echo ABSENT; fi",
        );
        assert_eq!(
            ok_stdout(&out).trim(),
            "ABSENT",
            "{c:?}: /sys exists inside\n{}",
            show(&out)
        );
    });
}

#[test]
fn tmp_is_private_and_capped() {
    if !require_root("tmp_is_private_and_capped") {
        return;
    }
    for_each_caller(|c| {
        let host_name = unique("purple-host-visible");
        let host_file = std::env::temp_dir().join(&host_name);
        std::fs::write(&host_file, b"host").unwrap();
        let inside_name = unique("purple-inside-written");
        let script = format!(
            "test -e /tmp/{host_name} && echo HOST_FILE_VISIBLE; \
             echo x > /tmp/{inside_name}; echo write_small $?; \
             echo statfs $(stat -f -c '%b %S' /tmp); \
             head -c 300M /dev/zero 2>&1 >/tmp/big; echo fill $?; rm -f /tmp/big; \
             echo MOUNTINFO; cat /proc/self/mountinfo"
        );
        let out = sh(c, &script);
        let _ = std::fs::remove_file(&host_file);
        let host_sees = std::env::temp_dir().join(&inside_name).exists();
        let text = ok_stdout(&out);
        assert!(
            !text.contains("HOST_FILE_VISIBLE"),
            "{c:?}: host /tmp visible inside\n{}",
            show(&out)
        );
        assert!(
            !host_sees,
            "{c:?}: a file written to /tmp inside appeared in the host's /tmp"
        );
        assert_eq!(
            field(&text, "write_small"),
            Some("0"),
            "{c:?}: /tmp not writable\n{}",
            show(&out)
        );
        assert_ne!(
            field(&text, "fill"),
            Some("0"),
            "{c:?}: wrote 300M into /tmp\n{}",
            show(&out)
        );
        assert!(
            text.contains("No space left on device"),
            "{c:?}: filling /tmp did not fail with ENOSPC\n{}",
            show(&out)
        );
        let st: Vec<u64> = field(&text, "statfs")
            .unwrap_or_default()
            .split(' ')
            .filter_map(|s| s.parse().ok())
            .collect();
        assert_eq!(st.len(), 2, "{c:?}: statfs\n{}", show(&out));
        assert_eq!(
            st[0] * st[1],
            256 * 1024 * 1024,
            "{c:?}: /tmp size\n{}",
            show(&out)
        );
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        let m = mount_at(&mounts, "/tmp")
            .unwrap_or_else(|| panic!("{c:?}: no /tmp mount\n{}", show(&out)));
        assert_eq!(m.fstype, "tmpfs", "{c:?}: {m:?}");
        assert!(!m.ro(), "{c:?}: /tmp read-only: {m:?}");
        assert!(
            m.super_opts.iter().any(|o| o == "size=262144k"),
            "{c:?}: /tmp size option: {m:?}"
        );
    });
}

#[test]
fn workspace_is_bound_read_write_and_is_the_cwd() {
    if !require_root("workspace_is_bound_read_write_and_is_the_cwd") {
        return;
    }
    for_each_caller(|c| {
        let ws = workspace_for(c);
        let given = ws.path().join("given.txt");
        std::fs::write(&given, b"from-host\n").unwrap();
        chown(&given, Some(c.sandbox_uid()), Some(gid_of(c))).unwrap();
        let ws_arg = ws.path().to_str().unwrap().to_owned();
        let out = sh_opts(
            c,
            &["--workspace", &ws_arg],
            "echo pwd $(pwd); echo home $HOME; echo given $(cat given.txt); \
             printf 'from-sandbox\\n' > made.txt; echo write $?; mkdir sub; echo mkdir $?; \
             echo MOUNTINFO; cat /proc/self/mountinfo",
        );
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "pwd"),
            Some("/workspace"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "home"),
            Some("/workspace"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "given"),
            Some("from-host"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(field(&text, "write"), Some("0"), "{c:?}\n{}", show(&out));
        assert_eq!(field(&text, "mkdir"), Some("0"), "{c:?}\n{}", show(&out));
        let made = ws.path().join("made.txt");
        assert_eq!(
            std::fs::read(&made).unwrap_or_default(),
            b"from-sandbox\n",
            "{c:?}: file not on host"
        );
        let md = std::fs::metadata(&made).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (c.sandbox_uid(), gid_of(c)),
            "{c:?}: owner of file made inside"
        );
        let sub = std::fs::metadata(ws.path().join("sub")).unwrap();
        assert_eq!(
            sub.uid(),
            c.sandbox_uid(),
            "{c:?}: owner of dir made inside"
        );
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        let m = mount_at(&mounts, "/workspace")
            .unwrap_or_else(|| panic!("{c:?}: no /workspace\n{}", show(&out)));
        assert!(!m.ro(), "{c:?}: /workspace read-only: {m:?}");
    });
}

/// A root-owned directory (0755) holding a 0600 secret and a 0644 public file.
struct Secrets {
    dir: tempfile::TempDir,
    token: String,
}

impl Secrets {
    fn new() -> Secrets {
        let dir = tempfile::Builder::new()
            .prefix("purple-secret-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let token = unique("TOPSECRET");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, &token).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.path().join("public");
        std::fs::write(&public, b"public-ok\n").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        Secrets { dir, token }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

#[test]
fn host_files_the_caller_cannot_read_stay_unreadable() {
    if !require_root("host_files_the_caller_cannot_read_stay_unreadable") {
        return;
    }
    let s = Secrets::new();
    let dir_arg = format!("{}:/data", s.dir.path().display());
    for_each_caller(|c| {
        // A readable directory bound read-only: the 0600 root file inside
        // stays unreadable (the sandbox uid is never host root).
        let out = sh_opts(
            c,
            &["--ro-bind", &dir_arg],
            "echo public $(cat /data/public); cat /data/secret; echo secret_rc $?",
        );
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "public"),
            Some("public-ok"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_ne!(
            field(&text, "secret_rc"),
            Some("0"),
            "{c:?}: read a 0600 root file\n{}",
            show(&out)
        );
        assert!(
            !show(&out).contains(&s.token),
            "{c:?}: secret leaked\n{}",
            show(&out)
        );

        // Binding the unreadable file itself.
        let file_arg = format!("{}:/secret", s.path("secret"));
        let out = run(c, &["run", "--ro-bind", &file_arg, "--", "cat", "/secret"]);
        assert!(
            !show(&out).contains(&s.token),
            "{c:?}: secret leaked\n{}",
            show(&out)
        );
        if c == Caller::User {
            assert_eq!(
                out.status.code(),
                Some(EXIT_PURPLE),
                "{c:?}: expected refusal\n{}",
                show(&out)
            );
            let err = stderr(&out);
            assert!(
                err.starts_with("purple: ") && err.lines().count() == 1,
                "{c:?}: expected one `purple: ...` line\n{}",
                show(&out)
            );
        } else {
            assert!(
                !out.status.success(),
                "{c:?}: cat of 0600 root file succeeded\n{}",
                show(&out)
            );
        }

        // A file the caller can read but not write, bound read-write.
        if c == Caller::User {
            let rw_arg = format!("{}:/public", s.path("public"));
            let out = run(
                c,
                &[
                    "run",
                    "--bind",
                    &rw_arg,
                    "--",
                    "/bin/sh",
                    "-c",
                    "echo pwned >> /public",
                ],
            );
            assert!(
                !out.status.success(),
                "{c:?}: wrote a root-owned 0644 file\n{}",
                show(&out)
            );
            assert_eq!(
                std::fs::read(s.path("public")).unwrap(),
                b"public-ok\n",
                "{c:?}: host file modified"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// /proc, processes, privileges
// ---------------------------------------------------------------------------

#[test]
fn proc_is_fresh_and_shows_only_the_sandbox() {
    if !require_root("proc_is_fresh_and_shows_only_the_sandbox") {
        return;
    }
    let marker = sleep_marker();
    let host_sleep = KillOnDrop(
        Command::new("sleep")
            .arg(&marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn host sleep"),
    );
    let host_pid = host_sleep.0.id().to_string();
    let script = r#"
import os, sys, errno
marker, host_pid = sys.argv[1], int(sys.argv[2])
procs = {}
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            procs[int(p)] = (open('/proc/%s/comm' % p).read().strip(), open('/proc/%s/cmdline' % p, 'rb').read().split(b'\0'))
        except OSError:
            pass
for pid in sorted(procs):
    print('PROC', pid, procs[pid][0])
if any(marker.encode() in argv for pid, (_, argv) in procs.items() if pid != os.getpid()):
    print('HOST_PROCESS_VISIBLE')
try:
    os.kill(host_pid, 0)
    print('kill0 reached')
except OSError as e:
    print('kill0', errno.errorcode.get(e.errno, e.errno))
print('me', os.getpid(), 'parent', os.getppid())
"#;
    for_each_caller(|c| {
        let out = py(c, script, &[&marker, &host_pid]);
        let text = stdout(&out);
        let procs: Vec<(u32, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.strip_prefix("PROC ")?.splitn(2, ' ');
                Some((f.next()?.parse().ok()?, f.next()?.to_owned()))
            })
            .collect();
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        assert_eq!(
            procs.len(),
            2,
            "{c:?}: expected exactly pid 1 and the command in /proc\n{}",
            show(&out)
        );
        assert_eq!(
            procs[0],
            (1, "purple-init".to_owned()),
            "{c:?}: pid 1\n{}",
            show(&out)
        );
        assert_eq!(procs[1].1, "python3", "{c:?}\n{}", show(&out));
        assert!(
            !text.contains("HOST_PROCESS_VISIBLE"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "kill0"),
            Some("ESRCH"),
            "{c:?}: host pid reachable\n{}",
            show(&out)
        );
        assert!(
            text.contains("parent 1"),
            "{c:?}: command's parent is not pid 1\n{}",
            show(&out)
        );
    });
    drop(host_sleep);
}

#[test]
fn proc_sensitive_paths_are_masked_and_proc_sys_is_read_only() {
    if !require_root("proc_sensitive_paths_are_masked_and_proc_sys_is_read_only") {
        return;
    }
    let script =
        "for f in /proc/kcore /proc/sysrq-trigger /proc/kallsyms /proc/keys /proc/timer_list; do \
           if test -e $f; then n=$(cat $f 2>/dev/null | wc -c); echo \"masked $f $n\"; \
           else echo \"masked $f absent\"; fi; done; \
         echo h > /proc/sysrq-trigger 2>/dev/null; echo sysrq_write $?; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; echo sys_write $?; \
         echo evil > /proc/sys/kernel/hostname 2>/dev/null; echo sys_hostname $?; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; echo sys_drop $?; \
         mount -o remount,rw /proc/sys 2>/dev/null; echo sys_remount $?; \
         echo MOUNTINFO; cat /proc/self/mountinfo";
    for_each_caller(|c| {
        let out = sh(c, script);
        let text = ok_stdout(&out);
        let masked: Vec<&str> = text.lines().filter(|l| l.starts_with("masked ")).collect();
        assert_eq!(masked.len(), 5, "{c:?}\n{}", show(&out));
        for l in masked {
            assert!(
                l.ends_with(" 0") || l.ends_with(" absent"),
                "{c:?}: sensitive /proc file readable: {l}\n{}",
                show(&out)
            );
        }
        for probe in [
            "sysrq_write",
            "sys_write",
            "sys_hostname",
            "sys_drop",
            "sys_remount",
        ] {
            assert_ne!(
                field(&text, probe),
                Some("0"),
                "{c:?}: `{probe}` succeeded\n{}",
                show(&out)
            );
        }
        let mounts = parse_mountinfo(text.split("MOUNTINFO\n").nth(1).unwrap_or_default());
        let m = mount_at(&mounts, "/proc/sys")
            .unwrap_or_else(|| panic!("{c:?}: /proc/sys not a ro mount\n{}", show(&out)));
        assert!(m.ro(), "{c:?}: /proc/sys not read-only: {m:?}");
        let p = mount_at(&mounts, "/proc").unwrap();
        assert_eq!(p.fstype, "proc", "{c:?}: {p:?}");
    });
}

#[test]
fn capabilities_are_empty_and_no_new_privs_is_set() {
    if !require_root("capabilities_are_empty_and_no_new_privs_is_set") {
        return;
    }
    let script = "echo SELF; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; \
         echo PID1; grep -E '^(Cap|NoNewPrivs)' /proc/1/status; echo END; \
         ls /proc/1/fd 2>&1; echo ls_fd $?; \
         n=$(cat /proc/1/environ 2>/dev/null | wc -c); echo environ_bytes $n; \
         readlink /proc/1/exe >/dev/null 2>&1; echo exe $?; \
         ls /proc/1/root/ >/dev/null 2>&1; echo root $?";
    for_each_caller(|c| {
        let out = sh(c, script);
        let text = ok_stdout(&out);
        for (who, block) in [
            (
                "command",
                text.split("SELF\n")
                    .nth(1)
                    .and_then(|t| t.split("PID1\n").next()),
            ),
            (
                "pid 1",
                text.split("PID1\n")
                    .nth(1)
                    .and_then(|t| t.split("END\n").next()),
            ),
        ] {
            let block = block.unwrap_or_default();
            let mut seen = 0;
            for l in block.lines() {
                let (k, v) = l.split_once(':').unwrap();
                let v = v.trim();
                if k.starts_with("Cap") {
                    seen += 1;
                    assert_eq!(v, "0000000000000000", "{c:?}: {who} {k}\n{}", show(&out));
                } else if k == "NoNewPrivs" {
                    seen += 1;
                    assert_eq!(v, "1", "{c:?}: {who} NoNewPrivs\n{}", show(&out));
                }
            }
            assert_eq!(
                seen,
                6,
                "{c:?}: {who}: expected 5 Cap lines and NoNewPrivs\n{}",
                show(&out)
            );
        }
        assert_ne!(
            field(&text, "ls_fd"),
            Some("0"),
            "{c:?}: /proc/1/fd readable\n{}",
            show(&out)
        );
        assert!(
            text.contains("Permission denied"),
            "{c:?}: /proc/1/fd\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "environ_bytes"),
            Some("0"),
            "{c:?}: /proc/1/environ readable\n{}",
            show(&out)
        );
        assert_ne!(
            field(&text, "exe"),
            Some("0"),
            "{c:?}: /proc/1/exe readable\n{}",
            show(&out)
        );
        assert_ne!(
            field(&text, "root"),
            Some("0"),
            "{c:?}: /proc/1/root readable\n{}",
            show(&out)
        );
    });
}

#[test]
fn hostname_is_purple_and_cannot_be_changed() {
    if !require_root("hostname_is_purple_and_cannot_be_changed") {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for_each_caller(|c| {
        let out = sh(
            c,
            "echo hostname $(hostname); echo uname $(uname -n); \
             hostname evil 2>/dev/null; echo set_cmd $?; \
             python3 -c 'import socket; socket.sethostname(\"evil\")' 2>/dev/null; echo set_py $?; \
             echo after $(uname -n)",
        );
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "hostname"),
            Some("purple"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "uname"),
            Some("purple"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_ne!(field(&text, "set_cmd"), Some("0"), "{c:?}\n{}", show(&out));
        assert_ne!(field(&text, "set_py"), Some("0"), "{c:?}\n{}", show(&out));
        assert_eq!(
            field(&text, "after"),
            Some("purple"),
            "{c:?}\n{}",
            show(&out)
        );
    });
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_before
    );
}

/// Opens a file and arranges for the supervisor to inherit it (no CLOEXEC)
/// as fd 7 and fd 200.
fn inherit_extra_fds(cmd: &mut Command, file: &std::fs::File) {
    let raw = file.as_raw_fd();
    // SAFETY: the closure only calls dup2 and fcntl, which are
    // async-signal-safe, on an fd that stays open in the parent until spawn
    // returns.
    unsafe {
        cmd.pre_exec(move || {
            for target in [7, 200] {
                if libc::dup2(raw, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[test]
fn inherited_fds_are_closed() {
    if !require_root("inherited_fds_are_closed") {
        return;
    }
    // A root-only file: if the setuid helper leaked this fd, the sandbox
    // would read something its caller never could.
    let secret = Secrets::new();
    let secret_path = secret.path("secret");
    let script = r#"
import os, resource
limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
open_fds = []
for fd in range(3, limit):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
print('OPEN', ' '.join(map(str, open_fds)) or 'none')
print('LISTING', ' '.join(sorted(os.listdir('/proc/self/fd'), key=int)))
print('READY', flush=True)
"#;
    for_each_caller(|c| {
        let file = std::fs::File::open(&secret_path).unwrap();
        let mut cmd = c.command([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "python3 -c \"$0\"; read x; exit 0",
            script,
        ]);
        inherit_extra_fds(&mut cmd, &file);
        let held = Held::start(cmd, Input::Hold);
        drop(file);
        held.wait_for_line("READY", Duration::from_secs(15));
        // Host side: no process under the supervisor (setuid helper, pid 1,
        // command) holds the file, and pid 1 holds no host file at all.
        let sup = held.pid();
        let mut leaks = Vec::new();
        for p in descendants(sup) {
            for (fd, target) in fd_targets(p) {
                if target == secret_path {
                    leaks.push(format!("pid {p} ({}) fd {fd} -> {target}", comm(p)));
                }
            }
        }
        let inside = sandbox_pids(sup);
        let pid1 = inside
            .iter()
            .copied()
            .find(|&p| proc_stat(p).is_some_and(|s| !inside.contains(&s.ppid)));
        let pid1_fds = pid1.map(fd_targets).unwrap_or_default();
        let partial = held.partial();
        let out = held.finish();
        let text = stdout(&out);
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        assert!(
            leaks.is_empty(),
            "{c:?}: inherited fd leaked: {leaks:?}\n{partial}"
        );
        assert_eq!(
            field(&text, "OPEN"),
            Some("none"),
            "{c:?}: fds >= 3 open in the command\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "LISTING"),
            Some("0 1 2 3"),
            "{c:?}: /proc/self/fd\n{}",
            show(&out)
        );
        assert!(
            pid1.is_some(),
            "{c:?}: could not find the sandbox's pid 1 on the host\n{partial}"
        );
        for (fd, target) in &pid1_fds {
            assert!(
                target == "/dev/null"
                    || target.starts_with("pipe:")
                    || target.starts_with("socket:")
                    || target.starts_with("anon_inode:"),
                "{c:?}: pid 1 holds a host file: fd {fd} -> {target} (all: {pid1_fds:?})"
            );
        }
    });
}

#[test]
fn sandbox_runs_in_its_own_session() {
    if !require_root("sandbox_runs_in_its_own_session") {
        return;
    }
    // SAFETY: getsid(0) has no preconditions.
    let my_session = unsafe { libc::getsid(0) };
    let script = "python3 -c 'import os; print(\"sid\", os.getsid(0))'; \
                  cat /dev/tty </dev/null >/dev/null 2>&1; echo devtty $?; echo READY; read x; exit 0";
    for_each_caller(|c| {
        let held = Held::start(
            c.command(["run", "--", "/bin/sh", "-c", script]),
            Input::Hold,
        );
        held.wait_for_line("READY", Duration::from_secs(15));
        let sup = held.pid();
        let sup_session = proc_stat(sup).map(|s| s.session);
        let inside = sandbox_pids(sup);
        let sessions: Vec<(i32, i32)> = inside
            .iter()
            .filter_map(|&p| proc_stat(p).map(|s| (p, s.session)))
            .collect();
        let partial = held.partial();
        let out = held.finish();
        let text = ok_stdout(&out);
        assert!(
            !sessions.is_empty(),
            "{c:?}: no sandbox processes found\n{partial}"
        );
        for (p, s) in &sessions {
            assert_ne!(
                *s, my_session,
                "{c:?}: pid {p} is in the caller's session\n{partial}"
            );
            assert_ne!(
                Some(*s),
                sup_session,
                "{c:?}: pid {p} is in the supervisor's session\n{partial}"
            );
            assert!(
                inside.contains(s),
                "{c:?}: pid {p}'s session leader {s} is not a sandbox process ({inside:?})\n{partial}"
            );
        }
        let sid = field(&text, "sid").unwrap_or_default();
        assert!(
            sid != "0" && !sid.is_empty(),
            "{c:?}: session leader outside the sandbox\n{}",
            show(&out)
        );
        assert_ne!(
            field(&text, "devtty"),
            Some("0"),
            "{c:?}: /dev/tty opened\n{}",
            show(&out)
        );
    });
}

/// A new pty pair (master, slave), both close-on-exec.
fn open_pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: posix_openpt has no memory-safety preconditions.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: m is a freshly opened fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: m is a valid pty master; name is a writable buffer of the given length.
    let ok = unsafe {
        libc::grantpt(m) == 0
            && libc::unlockpt(m) == 0
            && libc::ptsname_r(m, name.as_mut_ptr(), name.len()) == 0
    };
    assert!(
        ok,
        "grantpt/unlockpt/ptsname_r: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: ptsname_r wrote a NUL-terminated string into name.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: path is a valid C string.
    let s = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    assert!(s >= 0, "open {path:?}: {}", std::io::Error::last_os_error());
    // SAFETY: s is a freshly opened fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    (master, slave)
}

#[test]
fn tiocsti_cannot_reach_the_callers_terminal() {
    if !require_root("tiocsti_cannot_reach_the_callers_terminal") {
        return;
    }
    let script = r#"
import fcntl, termios, os
print('isatty', os.isatty(0))
try:
    fcntl.ioctl(0, termios.TIOCSTI, b'x')
    print('tiocsti SUCCEEDED')
except OSError as e:
    print('tiocsti failed', e.errno)
try:
    os.open('/dev/tty', os.O_RDWR)
    print('devtty OPENED')
except OSError as e:
    print('devtty failed', e.errno)
print('sid', os.getsid(0))
"#;
    if std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").is_ok_and(|v| v.trim() == "0") {
        eprintln!(
            "note: dev.tty.legacy_tiocsti = 0 on this host, so TIOCSTI fails for everyone; \
             the session and /dev/tty checks below still apply"
        );
    }
    for_each_caller(|c| {
        // The supervisor gets the pty as its controlling terminal and stdin,
        // like a user typing in a terminal.
        let (master, slave) = open_pty();
        let mut cmd = c.command(["run", "--", "python3", "-c", script]);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn supervisor on a pty");
        let out = {
            let pid = child.id();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
            rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                kill_ours(&[i32::try_from(pid).unwrap()]);
                panic!("{c:?}: supervisor on a pty did not finish in {DEADLINE:?}")
            })
        }
        .expect("wait");
        // Nothing was injected: the terminal's input queue (read on the slave)
        // and its output (read on the master, where an echo would appear) are empty.
        let mut injected = Vec::new();
        for fd in [&slave, &master] {
            // SAFETY: fd is a valid open fd; setting O_NONBLOCK on it.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            let mut buf = [0u8; 256];
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                injected.extend_from_slice(&buf[..usize::try_from(n).unwrap()]);
            }
        }
        let text = stdout(&out);
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        assert_eq!(
            field(&text, "isatty"),
            Some("True"),
            "{c:?}: stdin is not the terminal\n{}",
            show(&out)
        );
        assert!(
            field(&text, "tiocsti").is_some_and(|v| v.starts_with("failed")),
            "{c:?}: TIOCSTI into the caller's terminal worked\n{}",
            show(&out)
        );
        assert!(
            field(&text, "devtty").is_some_and(|v| v.starts_with("failed")),
            "{c:?}: sandbox has a controlling terminal\n{}",
            show(&out)
        );
        assert!(
            !matches!(field(&text, "sid"), Some("0") | None),
            "{c:?}\n{}",
            show(&out)
        );
        assert!(
            injected.is_empty(),
            "{c:?}: bytes reached the terminal: {injected:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Lifetime: children, parent death, timeout
// ---------------------------------------------------------------------------

#[test]
fn background_children_die_with_the_command() {
    if !require_root("background_children_die_with_the_command") {
        return;
    }
    for_each_caller(|c| {
        let marker = sleep_marker();
        let out = sh(
            c,
            &format!("sleep {marker} >/dev/null 2>&1 </dev/null & echo started"),
        );
        assert_eq!(ok_stdout(&out).trim(), "started", "{c:?}\n{}", show(&out));
        let gone = wait_until(Duration::from_secs(3), || live_with_arg(&marker).is_empty());
        let left = live_with_arg(&marker);
        kill_ours(&left);
        assert!(
            gone,
            "{c:?}: background `sleep {marker}` survived the command's exit (pids {left:?})\n{}",
            show(&out)
        );
    });
}

#[test]
fn killing_the_supervisor_kills_the_sandbox() {
    if !require_root("killing_the_supervisor_kills_the_sandbox") {
        return;
    }
    for_each_caller(|c| {
        let marker = sleep_marker();
        let mut child = c
            .command(["run", "--", "sleep", &marker])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisor");
        let sup = i32::try_from(child.id()).unwrap();
        // The sleep itself, not the supervisor's forked child on its way
        // to exec purple-init (it still carries the supervisor's argv).
        let up = wait_until(Duration::from_secs(10), || {
            live_with_arg(&marker)
                .iter()
                .any(|&p| p != sup && comm(p) == "sleep")
        });
        let tree: Vec<(i32, u64, String)> = descendants(sup)
            .into_iter()
            .filter_map(|p| proc_stat(p).map(|s| (p, s.start, comm(p))))
            .collect();
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            kill_ours(&tree.iter().map(|t| t.0).collect::<Vec<_>>());
            panic!("{c:?}: sandbox never started `sleep {marker}`");
        }
        let has_init = tree.iter().any(|t| t.2 == "purple-init");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !has_init {
            kill_ours(&tree.iter().map(|t| t.0).collect::<Vec<_>>());
        }
        assert!(
            has_init,
            "{c:?}: no purple-init below the supervisor: {tree:?}"
        );
        let gone = wait_until(Duration::from_secs(5), || {
            tree.iter().all(|(p, s, _)| !still_alive(*p, *s))
        });
        let left: Vec<&(i32, u64, String)> = tree
            .iter()
            .filter(|(p, s, _)| still_alive(*p, *s))
            .collect();
        kill_ours(&left.iter().map(|t| t.0).collect::<Vec<_>>());
        assert!(
            gone,
            "{c:?}: 5 s after SIGKILL of the supervisor these survived: {left:?}"
        );
        assert!(
            live_with_arg(&marker).is_empty(),
            "{c:?}: `sleep {marker}` survived"
        );
    });
}

#[test]
fn timeout_kills_the_sandbox() {
    if !require_root("timeout_kills_the_sandbox") {
        return;
    }
    for_each_caller(|c| {
        let marker = sleep_marker();
        let start = Instant::now();
        let out = run(c, &["run", "--timeout", "1s", "--", "sleep", &marker]);
        let took = start.elapsed();
        let left = live_with_arg(&marker);
        kill_ours(&left);
        assert_eq!(out.status.code(), Some(124), "{c:?}\n{}", show(&out));
        assert!(
            took < Duration::from_secs(5),
            "{c:?}: timeout took {took:?}\n{}",
            show(&out)
        );
        assert!(
            left.is_empty(),
            "{c:?}: `sleep {marker}` survived the timeout: {left:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

#[test]
fn caller_environment_does_not_leak() {
    if !require_root("caller_environment_does_not_leak") {
        return;
    }
    for_each_caller(|c| {
        let mut cmd = c.command([
            "run",
            "--env",
            "FOO=bar",
            "--",
            "/bin/sh",
            "-c",
            "echo ENV; env; echo SELF; tr '\\0' '\\n' < /proc/self/environ; \
             echo PID1; tr '\\0' '\\n' < /proc/1/environ; echo END",
        ]);
        cmd.env("SECRET_TOKEN", "hunter2");
        let out = run_cmd(cmd, Input::Null);
        let text = stdout(&out);
        assert!(
            !show(&out).contains("hunter2") && !show(&out).contains("SECRET_TOKEN"),
            "{c:?}: caller environment leaked\n{}",
            show(&out)
        );
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        let env: HashMap<&str, &str> = text
            .split("ENV\n")
            .nth(1)
            .unwrap_or_default()
            .split("SELF\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .collect();
        assert_eq!(
            env.get("FOO"),
            Some(&"bar"),
            "{c:?}: --env did not arrive\n{}",
            show(&out)
        );
        assert!(
            env.get("PATH")
                .is_some_and(|p| p.split(':').any(|d| d == "/usr/bin")),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(env.get("HOME"), Some(&"/tmp"), "{c:?}\n{}", show(&out));
        assert!(
            env.get("TERM").is_some_and(|t| !t.is_empty()),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(env.get("LANG"), Some(&"C.UTF-8"), "{c:?}\n{}", show(&out));
    });
}

// ---------------------------------------------------------------------------
// Network and sockets
// ---------------------------------------------------------------------------

const CONNECT_PY: &str = r#"
import socket, sys, errno
kind, target = sys.argv[1], sys.argv[2]
if kind == 'tcp':
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); addr = ('127.0.0.1', int(target))
elif kind == 'abstract':
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); addr = b'\0' + target.encode()
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); addr = target
s.settimeout(5)
try:
    s.connect(addr)
    print('result CONNECTED')
except OSError as e:
    print('result', errno.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__)
print('interfaces', ' '.join(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:])))
"#;

#[test]
fn host_loopback_tcp_is_unreachable() {
    if !require_root("host_loopback_tcp_is_unreachable") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // Sanity: the host service is reachable from the host.
    drop(
        std::net::TcpStream::connect(("127.0.0.1", listener.local_addr().unwrap().port())).unwrap(),
    );
    let _ = wait_until(Duration::from_secs(2), || listener.accept().is_ok());
    for_each_caller(|c| {
        let out = py(c, CONNECT_PY, &["tcp", &port]);
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "result"),
            Some("ECONNREFUSED"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "interfaces"),
            Some("lo"),
            "{c:?}: interfaces inside\n{}",
            show(&out)
        );
    });
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a connection reached the host listener"
    );
}

#[test]
fn host_abstract_unix_socket_is_unreachable() {
    if !require_root("host_abstract_unix_socket_is_unreachable") {
        return;
    }
    let name = unique("purple-test");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    drop(UnixStream::connect_addr(&addr).expect("host can reach its own abstract socket"));
    let _ = wait_until(Duration::from_secs(2), || listener.accept().is_ok());
    for_each_caller(|c| {
        let out = py(c, CONNECT_PY, &["abstract", &name]);
        let text = ok_stdout(&out);
        let result = field(&text, "result").unwrap_or_default();
        assert!(
            !result.is_empty() && result != "CONNECTED",
            "{c:?}: connected to host abstract socket\n{}",
            show(&out)
        );
    });
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a connection reached the host abstract listener"
    );
}

#[test]
fn host_pathname_unix_socket_is_unreachable() {
    if !require_root("host_pathname_unix_socket_is_unreachable") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("purple-sock-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    drop(UnixStream::connect(&path).expect("host can reach its own socket"));
    let _ = wait_until(Duration::from_secs(2), || listener.accept().is_ok());
    let p = path.to_str().unwrap();
    for_each_caller(|c| {
        let out = py(c, CONNECT_PY, &["path", p]);
        let text = ok_stdout(&out);
        let result = field(&text, "result").unwrap_or_default();
        assert!(
            !result.is_empty() && result != "CONNECTED",
            "{c:?}: connected to host socket {p}\n{}",
            show(&out)
        );
    });
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a connection reached the host pathname listener"
    );
}

#[test]
fn loopback_inside_the_sandbox_works() {
    if !require_root("loopback_inside_the_sandbox_works") {
        return;
    }
    let script = r#"
import socket, threading
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
port = s.getsockname()[1]
def serve():
    c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(('127.0.0.1', port), timeout=5)
c.sendall(b'ping'); print(c.recv(100).decode()); t.join()
"#;
    for_each_caller(|c| {
        let out = py(c, script, &[]);
        assert_eq!(ok_stdout(&out).trim(), "PING", "{c:?}\n{}", show(&out));
    });
}

// ---------------------------------------------------------------------------
// stdio, exit codes, report, tools
// ---------------------------------------------------------------------------

#[test]
fn stdio_passes_through_exactly() {
    if !require_root("stdio_passes_through_exactly") {
        return;
    }
    let small: Vec<u8> = (0..=255u8).cycle().take(256 * 4 + 7).collect();
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 13)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for_each_caller(|c| {
        let out = run_cmd(
            c.command([
                "run",
                "--",
                "/bin/sh",
                "-c",
                "cat; printf 'to-stderr\\n' >&2",
            ]),
            Input::Bytes(small.clone()),
        );
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        assert!(
            out.stdout == small,
            "{c:?}: binary stdout differs ({} bytes back)\n{}",
            out.stdout.len(),
            show(&out)
        );
        assert_eq!(stderr(&out), "to-stderr\n", "{c:?}: stderr\n{}", show(&out));

        let out = run_cmd(
            c.command(["run", "--", "/bin/sh", "-c", "cat >&2"]),
            Input::Bytes(small.clone()),
        );
        assert!(out.status.success(), "{c:?}\n{}", show(&out));
        assert!(
            out.stderr == small && out.stdout.is_empty(),
            "{c:?}: binary stderr\n{}",
            show(&out)
        );

        let out = run_cmd(c.command(["run", "--", "cat"]), Input::Bytes(big.clone()));
        assert!(
            out.status.success(),
            "{c:?}: status {:?}\n{}",
            out.status,
            stderr(&out)
        );
        assert_eq!(
            out.stdout.len(),
            big.len(),
            "{c:?}: 5 MB stream length; stderr: {}",
            stderr(&out)
        );
        assert!(out.stdout == big, "{c:?}: 5 MB stream content differs");
    });
}

#[test]
fn exit_codes_are_passed_through() {
    if !require_root("exit_codes_are_passed_through") {
        return;
    }
    let missing = unique("no-such-command");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["/bin/sh", "-c", "exit 3"], 3),
        (vec!["/bin/sh", "-c", "exit 0"], 0),
        (vec!["/bin/sh", "-c", "kill -TERM $$"], 143),
        (vec!["/bin/sh", "-c", "kill -KILL $$"], 137),
        (vec![missing.as_str()], 127),
        (vec!["/no/such/path"], 127),
        (vec!["/etc/os-release"], 126),
    ];
    for_each_caller(|c| {
        let mut bad = Vec::new();
        for (cmd, want) in &cases {
            let mut args = vec!["run", "--"];
            args.extend_from_slice(cmd);
            let out = run(c, &args);
            if out.status.code() != Some(*want) {
                bad.push(format!("{cmd:?}: expected exit {want}\n{}", show(&out)));
            }
        }
        assert!(
            bad.is_empty(),
            "{c:?}: wrong exit status:\n{}",
            bad.join("\n")
        );
    });
}

/// The signal state the command starts with, for each caller, with and
/// without the caller blocking/ignoring signals first: one line for every run
/// whose `key` line (`SigBlk:` or `SigIgn:`) is not all zeroes.
fn inherited_signal_state(key: &str) -> Vec<String> {
    // The command is exec'd directly (no shell, which would reset its own
    // mask), so /proc/self/status shows exactly what it inherited.
    let mut bad = Vec::new();
    for c in Caller::BOTH {
        for caller_tampers in [false, true] {
            let mut cmd = c.command([
                "run",
                "--",
                "grep",
                "-E",
                "^Sig(Blk|Ign)",
                "/proc/self/status",
            ]);
            if caller_tampers {
                // The caller blocks some signals and ignores others (a
                // standard one and a real-time one) before starting Purple.
                // SAFETY: sigemptyset/sigaddset/sigprocmask/signal are
                // async-signal-safe and only touch a local set and this
                // (child) process's signal state.
                unsafe {
                    cmd.pre_exec(|| {
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGINT] {
                            libc::sigaddset(&mut set, sig);
                        }
                        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        for sig in [libc::SIGUSR2, libc::SIGRTMIN() + 3] {
                            if libc::signal(sig, libc::SIG_IGN) == libc::SIG_ERR {
                                return Err(std::io::Error::last_os_error());
                            }
                        }
                        Ok(())
                    });
                }
            }
            let out = run_cmd(cmd, Input::Null);
            let text = ok_stdout(&out);
            let got = text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim);
            if got != Some("0000000000000000") {
                bad.push(format!(
                    "{c:?} (caller blocked/ignored signals first: {caller_tampers}): {key} {got:?}"
                ));
            }
        }
    }
    bad
}

#[test]
fn command_starts_with_an_empty_signal_mask() {
    if !require_root("command_starts_with_an_empty_signal_mask") {
        return;
    }
    let bad = inherited_signal_state("SigBlk:");
    assert!(
        bad.is_empty(),
        "the command starts with blocked signals (so e.g. SIGTERM does nothing):\n{}",
        bad.join("\n")
    );
}

#[test]
fn command_starts_with_default_signal_dispositions() {
    if !require_root("command_starts_with_default_signal_dispositions") {
        return;
    }
    let bad = inherited_signal_state("SigIgn:");
    assert!(
        bad.is_empty(),
        "the command starts with ignored signals:\n{}",
        bad.join("\n")
    );
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, ch)| match i {
            8 | 13 | 18 | 23 => *ch == b'-',
            _ => ch.is_ascii_hexdigit(),
        })
        && b[14] == b'4'
        && matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

#[test]
fn report_describes_the_run() {
    if !require_root("report_describes_the_run") {
        return;
    }
    for_each_caller(|c| {
        let dir = workspace_for(c);
        let report = dir.path().join("report.json");
        let report_arg = report.to_str().unwrap().to_owned();
        let out = run(
            c,
            &[
                "run",
                "--report",
                &report_arg,
                "--",
                "/bin/sh",
                "-c",
                "exit 3",
            ],
        );
        assert_eq!(out.status.code(), Some(3), "{c:?}\n{}", show(&out));
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("{c:?}: no report: {e}\n{}", show(&out)));
        let j: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{c:?}: bad JSON {e}: {text}"));
        let id = j["sandbox_id"].as_str().unwrap_or_default();
        assert!(
            is_uuid_v4(id),
            "{c:?}: sandbox_id {id:?} is not a UUID v4\n{text}"
        );
        assert_eq!(
            j["command"],
            serde_json::json!(["/bin/sh", "-c", "exit 3"]),
            "{c:?}\n{text}"
        );
        assert_eq!(j["status"], "exited", "{c:?}\n{text}");
        assert_eq!(j["exit_code"], 3, "{c:?}\n{text}");
        assert!(j["wall_time_ms"].is_u64(), "{c:?}: wall_time_ms\n{text}");
        let ns: BTreeSet<&str> = j["isolation"]["namespaces"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let want: BTreeSet<&str> = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"]
            .into_iter()
            .collect();
        assert_eq!(ns, want, "{c:?}: isolation.namespaces\n{text}");
        assert_eq!(
            j["isolation"]["namespaces"].as_array().map(Vec::len),
            Some(7),
            "{c:?}\n{text}"
        );
        let map = &j["isolation"]["uid_map"];
        let u = u64::from(c.sandbox_uid());
        assert_eq!(
            (map["inside"].as_u64(), map["outside"].as_u64()),
            (Some(u), Some(u)),
            "{c:?}: uid_map\n{text}"
        );
        // A second run gets a different id.
        let out2 = run(c, &["run", "--report", &report_arg, "--", "true"]);
        assert!(out2.status.success(), "{}", show(&out2));
        let j2: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_ne!(
            j2["sandbox_id"].as_str(),
            Some(id),
            "{c:?}: sandbox_id reused"
        );
    });
}

#[test]
fn python_shell_and_coreutils_work() {
    if !require_root("python_shell_and_coreutils_work") {
        return;
    }
    for_each_caller(|c| {
        let out = py(
            c,
            "import ssl, json, sqlite3, subprocess, threading; \
             subprocess.run(['true'], check=True); \
             sqlite3.connect(':memory:').execute('select 1'); print(1)",
            &[],
        );
        assert_eq!(ok_stdout(&out), "1\n", "{c:?}\n{}", show(&out));
        let out = sh(
            c,
            "echo ls $(ls /usr/bin/ls); \
             echo sort $(printf 'b\\na\\nc\\n' | sort | tr '\\n' ,); \
             echo wc $(printf 'x\\ny\\n' | wc -l); \
             t=$(mktemp) && echo data > \"$t\" && echo mktemp $(cat \"$t\"); \
             echo date $(date +%Y | wc -c)",
        );
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "ls"),
            Some("/usr/bin/ls"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "sort"),
            Some("a,b,c,"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(field(&text, "wc"), Some("2"), "{c:?}\n{}", show(&out));
        assert_eq!(
            field(&text, "mktemp"),
            Some("data"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(field(&text, "date"), Some("5"), "{c:?}\n{}", show(&out));
    });
}

#[test]
fn doctor_reports_the_host_and_the_guarantees() {
    if !require_root("doctor_reports_the_host_and_the_guarantees") {
        return;
    }
    for_each_caller(|c| {
        let out = purple(c, ["doctor"]);
        let text = ok_stdout(&out);
        for expected in [
            "user namespaces",
            "purple-init",
            "Guarantees of this build",
            "can run sandboxes",
        ] {
            assert!(
                text.contains(expected),
                "{c:?}: doctor output lacks {expected:?}:\n{text}"
            );
        }
        if c == Caller::User {
            assert!(
                text.contains("(setuid root)"),
                "{c:?}: setuid copy not recognised:\n{text}"
            );
        }
    });
}

/// A clone of a shared host mount must not stay in the host's peer group:
/// a bind nested inside it would otherwise propagate back onto the host and
/// stay there after the sandbox (a caller could cover /etc/shadow). The
/// host side is simulated inside a private mount namespace of the test's
/// own (`unshare -m`), where `/` is made shared as systemd does.
#[test]
fn nested_binds_do_not_propagate_to_the_host() {
    if !require_root("nested_binds_do_not_propagate_to_the_host") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("purple-propagation-")
        .tempdir()
        .unwrap();
    let base = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::create_dir_all(dir.path().join("inner")).unwrap();
    std::fs::write(dir.path().join("inner/marker"), "x").unwrap();
    let supervisor = Caller::Root.supervisor().display().to_string();
    let script = format!(
        "set -e; mount --make-rshared /; mount -t tmpfs tmpfs {base}/shared; mkdir {base}/shared/sub; \
         mount --make-shared {base}/shared; \
         {supervisor} run --ro-bind {base}/shared:/h --ro-bind {base}/inner:/h/sub -- ls /h/sub; \
         echo MOUNTS; grep -c ' {base}/shared/sub ' /proc/self/mountinfo || true"
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", show(&out));
    let (inside, mounts) = text.split_once("MOUNTS").unwrap_or((&text, ""));
    assert_eq!(
        inside.trim(),
        "marker",
        "the nested bind did not work inside:\n{}",
        show(&out)
    );
    assert_eq!(
        mounts.trim(),
        "0",
        "the nested bind propagated to the (simulated) host:\n{}",
        show(&out)
    );
}

/// Keyrings are not namespaced: the caller's session keyring (where tokens
/// and Kerberos tickets live) must not be reachable from the sandbox.
#[test]
fn callers_session_keyring_is_unreachable() {
    if !require_root("callers_session_keyring_is_unreachable") {
        return;
    }
    const SCRIPT: &str = r#"
import ctypes, os, sys, platform
libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY, KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[platform.machine()]
libc.syscall.restype = ctypes.c_long
if sys.argv[1] == "host":
    assert libc.syscall(KEYCTL, 1, None) >= 0  # a fresh session keyring for this run only
    key = libc.syscall(ADD_KEY, b"user", b"purple-test-secret", b"TOPSECRET", 9, ctypes.c_long(-3))
    assert key >= 0, ctypes.get_errno()
    os.execv(sys.argv[2], sys.argv[2:])
else:
    found = libc.syscall(KEYCTL, 10, ctypes.c_long(-3), b"user", b"purple-test-secret", 0)
    print("found" if found >= 0 else "absent")
"#;
    let dir = tempfile::Builder::new()
        .prefix("purple-keyring-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("keys.py");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    for_each_caller(|c| {
        let bind = format!("{}:/keys.py", script.display());
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg("host").arg(c.supervisor());
        cmd.args([
            "run",
            "--ro-bind",
            &bind,
            "--",
            "python3",
            "/keys.py",
            "inside",
        ]);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/");
        if c == Caller::User {
            cmd.uid(TEST_UID).gid(TEST_GID);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("python3");
        assert_eq!(
            ok_stdout(&out).trim(),
            "absent",
            "{c:?}: the caller's key was visible:\n{}",
            show(&out)
        );
    });
}

/// A tty on stdin that is nobody's controlling terminal (a harness that
/// opens a pty without a new session) can be made the command's own with
/// setsid + TIOCSCTTY; TIOCSTI on it must still fail, as must the same
/// request with high bits set and any x32-ABI syscall.
#[test]
fn terminal_injection_is_refused_even_on_a_sessionless_tty() {
    if !require_root("terminal_injection_is_refused_even_on_a_sessionless_tty") {
        return;
    }
    const INSIDE: &str = r#"
import ctypes, fcntl, os, termios
libc = ctypes.CDLL(None, use_errno=True)
os.setsid()
try:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    print("ctty ok")
except OSError as e:
    print("ctty", e.errno)
for request in (termios.TIOCSTI, termios.TIOCSTI | (1 << 32)):
    r = libc.ioctl(0, ctypes.c_ulong(request), b"X")
    print("sti", r, ctypes.get_errno())
r = libc.syscall(ctypes.c_long(0x40000000 | 39))
print("x32", r, ctypes.get_errno())
"#;
    for_each_caller(|c| {
        let host = format!(
            r#"
import os, pty, subprocess, sys, select
master, slave = pty.openpty()
p = subprocess.run([{sup:?}, "run", "--", "python3", "-c", {inside:?}], stdin=slave, capture_output=True, start_new_session=False)
os.close(slave)
got = b""
while select.select([master], [], [], 0.2)[0]:
    try:
        chunk = os.read(master, 1024)
    except OSError:
        break
    if not chunk:
        break
    got += chunk
print(p.stdout.decode(), end="")
print("injected" if b"X" in got else "clean")
"#,
            sup = c.supervisor().display().to_string(),
            inside = INSIDE,
        );
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &host])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/");
        if c == Caller::User {
            cmd.uid(TEST_UID).gid(TEST_GID);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("python3");
        let text = ok_stdout(&out);
        assert!(
            text.trim_end().ends_with("clean"),
            "{c:?}: keystrokes reached the tty:\n{}",
            show(&out)
        );
        for line in text
            .lines()
            .filter(|l| l.starts_with("sti ") || l.starts_with("x32 "))
        {
            assert!(
                line.ends_with(" -1 1"),
                "{c:?}: expected EPERM, got {line:?}\n{}",
                show(&out)
            );
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("sti ")).count(),
            2,
            "{}",
            show(&out)
        );
    });
}

/// A syscall through the i386 entry point (`int 0x80`) is outside what any
/// x86_64 filter can reason about: the command is killed (SIGSYS).
#[test]
#[cfg(target_arch = "x86_64")]
fn i386_syscalls_kill_the_command() {
    if !require_root("i386_syscalls_kill_the_command") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("purple-i386-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = dir.path().join("i386.c");
    let binary = dir.path().join("i386");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint main(void) { long r; __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L)); printf(\"%ld\\n\", r); return 0; }\n",
    )
    .unwrap();
    let cc = Command::new("cc")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output();
    match cc {
        Ok(out) if out.status.success() => {}
        other => {
            assert!(!in_ci(), "cc is needed for this test under CI: {other:?}");
            eprintln!("SKIP i386_syscalls_kill_the_command: no working C compiler ({other:?})");
            return;
        }
    }
    let bind = format!("{}:/i386", binary.display());
    for_each_caller(|c| {
        let out = purple(c, ["run", "--ro-bind", &bind, "--", "/i386"]);
        assert_eq!(
            out.status.code(),
            Some(128 + libc::SIGSYS),
            "{c:?}: {}",
            show(&out)
        );
    });
}
