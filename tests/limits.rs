#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Resource limits: memory, tasks, CPU, wall-clock and per-process rlimits,
//! the admin config's defaults and maxima, what the exit report says about
//! them, and that every sandbox's cgroup is gone afterwards, however the
//! sandbox ended (a SIGKILLed supervisor or purple-init included).
//!
//! Every property is checked for both callers where it applies. Tests that
//! must see exactly which cgroups exist give a root caller its own cgroup
//! parent through `PURPLE_CONFIG` (`purple-test-<pid>-<tag>`), so that
//! other tests running in parallel cannot disturb the count; the parent is
//! removed again when the test ends, pass or fail. An unprivileged caller
//! always uses the host's admin config; its checks look for its own
//! sandbox's cgroup by name instead.
//!
//! On the host these tests only read /proc and the cgroup trees, run
//! `/bin/true`, and SIGKILL processes they started themselves (by pid).

use purple_tests::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Longest any single supervisor run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
/// What the memory peak may exceed the limit by (page and charge batching).
const PEAK_SLACK: u64 = 8 * MIB;
/// The memory bomb every OOM test runs.
const BOMB: &str = "x = bytearray(512<<20)";

// ---------------------------------------------------------------------------
// Running supervisors (with a deadline, output collected in the background)
// ---------------------------------------------------------------------------

/// A supervisor running in the background. Dropping it before `finish`
/// (a failed assertion) kills it, so nothing outlives the test.
struct Running {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    done: bool,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn purple-supervisor");
        let (out, out_t) = collect(child.stdout.take().unwrap());
        let (err, err_t) = collect(child.stderr.take().unwrap());
        Running {
            child,
            out,
            err,
            readers: vec![out_t, err_t],
            done: false,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn partial(&self) -> String {
        format!(
            "--- stdout so far:\n{}\n--- stderr so far:\n{}",
            String::from_utf8_lossy(&self.out.lock().unwrap()),
            String::from_utf8_lossy(&self.err.lock().unwrap())
        )
    }

    /// Waits for the supervisor (at most DEADLINE) and for every holder of
    /// its stdout/stderr to let go (a surviving sandbox process would not).
    fn finish(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "purple-supervisor did not finish within {DEADLINE:?} (killed now)\n{}",
                    self.partial()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.done = true;
        let closed = wait_until(Duration::from_secs(10), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        assert!(
            closed,
            "purple-supervisor exited ({status:?}) but its stdout/stderr are still held open \
             10 s later: a sandbox process survived\n{}",
            self.partial()
        );
        for t in self.readers.drain(..) {
            t.join().unwrap();
        }
        Output {
            status,
            stdout: std::mem::take(&mut *self.out.lock().unwrap()),
            stderr: std::mem::take(&mut *self.err.lock().unwrap()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

/// Runs `f` for each caller; one caller's failure does not hide the other's.
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

// ---------------------------------------------------------------------------
// Runs with an exit report
// ---------------------------------------------------------------------------

/// A `purple-supervisor run --report FILE [OPTS] -- ARGV` ready to start.
struct Request {
    cmd: Command,
    dir: tempfile::TempDir,
}

impl Request {
    fn new(caller: Caller, parent: Option<&PrivateParent>, opts: &[&str], argv: &[&str]) -> Self {
        // The supervisor writes the report as the caller.
        let dir = match caller {
            Caller::Root => private_dir(0, 0),
            Caller::User => private_dir(TEST_UID, TEST_GID),
        };
        let report = dir.path().join("report.json");
        let mut args: Vec<&str> = vec!["run", "--report", report.to_str().unwrap()];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(argv);
        let mut cmd = caller.command(&args);
        if let Some(p) = parent {
            assert_eq!(caller, Caller::Root, "PURPLE_CONFIG is for root callers");
            cmd.env("PURPLE_CONFIG", &p.config);
        }
        Request { cmd, dir }
    }

    fn run(self) -> Ran {
        let Request { cmd, dir } = self;
        Ran::read(Running::start(cmd).finish(), &dir)
    }
}

/// A finished run and its exit report.
struct Ran {
    out: Output,
    report: Value,
    text: String,
}

impl Ran {
    fn read(out: Output, dir: &tempfile::TempDir) -> Ran {
        let text = std::fs::read_to_string(dir.path().join("report.json"))
            .unwrap_or_else(|e| panic!("no exit report ({e})\n{}", show(&out)));
        let report = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("exit report is not JSON ({e}):\n{text}"));
        Ran { out, report, text }
    }

    /// Everything about the run, for assertion messages.
    fn ctx(&self) -> String {
        format!("{}\n--- report:\n{}", show(&self.out), self.text)
    }

    fn at(&self, pointer: &str) -> &Value {
        self.report.pointer(pointer).unwrap_or(&Value::Null)
    }

    fn u64_at(&self, pointer: &str) -> Option<u64> {
        self.at(pointer).as_u64()
    }

    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    /// Lines Purple itself wrote to stderr.
    fn purple_lines(&self) -> Vec<String> {
        stderr(&self.out)
            .lines()
            .filter(|l| l.starts_with("purple:"))
            .map(str::to_owned)
            .collect()
    }

    /// The sandbox's cgroup, relative to each hierarchy's root.
    fn cgroup_path(&self) -> String {
        self.at("/isolation/limits/cgroup_path")
            .as_str()
            .unwrap_or_else(|| panic!("no isolation.limits.cgroup_path\n{}", self.ctx()))
            .to_owned()
    }

    /// The sandbox's cgroup no longer exists in any hierarchy.
    fn assert_cgroup_removed(&self, what: &str) {
        let path = self.cgroup_path();
        for h in hierarchies() {
            let dir = h.join(path.trim_start_matches('/'));
            assert!(
                !dir.exists(),
                "{what}: the sandbox's cgroup {} is still there after the run\n{}",
                dir.display(),
                self.ctx()
            );
        }
    }
}

fn limited(caller: Caller, opts: &[&str], argv: &[&str]) -> Ran {
    Request::new(caller, None, opts, argv).run()
}

/// The value of the first `KEY value` line printed by a probe script.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
}

// ---------------------------------------------------------------------------
// Cgroup hierarchies and private parents
// ---------------------------------------------------------------------------

/// The controllers the limits use.
const LIMIT_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// Where sandbox cgroups can live on this host, from /proc/self/mountinfo:
/// the v1 hierarchies carrying the limit controllers when v1 has the memory
/// controller (v1 and hybrid hosts), else the cgroup2 hierarchy.
fn hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fs_type = right.next().unwrap_or_default();
        let super_opts = right.nth(1).unwrap_or_default();
        match fs_type {
            "cgroup" => {
                let controllers: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| LIMIT_CONTROLLERS.contains(o))
                    .map(str::to_owned)
                    .collect();
                if !controllers.is_empty() && !v1.iter().any(|(p, _)| p == Path::new(point)) {
                    v1.push((PathBuf::from(point), controllers));
                }
            }
            "cgroup2" => v2.push(PathBuf::from(point)),
            _ => {}
        }
    }
    if v1.iter().any(|(_, c)| c.iter().any(|c| c == "memory")) {
        return v1.into_iter().map(|(p, _)| p).collect();
    }
    let main = v2
        .iter()
        .find(|p| *p == Path::new("/sys/fs/cgroup"))
        .cloned();
    main.or_else(|| v2.first().cloned()).into_iter().collect()
}

/// A cgroup parent of this test alone, selected for root callers through an
/// admin config of its own. Its directories are removed on drop (after any
/// sandbox cgroups left inside, so a failed test cleans up too).
struct PrivateParent {
    name: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateParent {
    fn new(tag: &str) -> Self {
        Self::with_config(tag, "")
    }

    /// `extra` is appended to the admin config after `[cgroup] parent`.
    fn with_config(tag: &str, extra: &str) -> Self {
        let name = format!("purple-test-{}-{tag}", std::process::id());
        // Root-owned, mode 0700: what purple-init accepts for an admin config.
        let dir = tempfile::Builder::new()
            .prefix("limits-config-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("purple.toml");
        std::fs::write(&config, format!("[cgroup]\nparent = \"{name}\"\n{extra}")).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        PrivateParent {
            name,
            config,
            _dir: dir,
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        hierarchies()
            .into_iter()
            .map(|h| h.join(&self.name))
            .collect()
    }

    /// Sandbox cgroups under this parent, in any hierarchy: they sit one
    /// level down, in a directory per caller (`uid-UID`); anything else
    /// directly under the parent counts too.
    fn children(&self) -> Vec<PathBuf> {
        self.dirs().iter().flat_map(|d| sandbox_dirs(d)).collect()
    }

    /// The per-caller directories (`uid-UID`) under this parent.
    fn caller_dirs(&self) -> Vec<PathBuf> {
        self.dirs().iter().flat_map(|d| caller_dirs(d)).collect()
    }

    /// Each leftover child with the processes it still holds.
    fn describe_children(&self) -> String {
        self.children()
            .iter()
            .map(|d| {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                format!(
                    "{} (processes: {:?})",
                    d.display(),
                    procs.split_whitespace().collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every process still in a sandbox cgroup under this parent.
    fn member_processes(&self) -> Vec<String> {
        self.children()
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    /// Runs have created the parent in every hierarchy (so an empty listing
    /// means something).
    fn assert_created(&self) {
        let dirs = self.dirs();
        assert!(
            !dirs.is_empty(),
            "no cgroup hierarchy found in /proc/self/mountinfo"
        );
        for d in dirs {
            assert!(
                d.is_dir(),
                "the private parent {} was never created",
                d.display()
            );
        }
    }

    fn assert_empty(&self, what: &str) {
        let left = self.children();
        assert!(
            left.is_empty(),
            "{what}: sandbox cgroups left under the private parent {}:\n{}",
            self.name,
            self.describe_children()
        );
    }
}

impl Drop for PrivateParent {
    fn drop(&mut self) {
        for child in self.children() {
            let _ = std::fs::remove_dir(child);
        }
        for dir in self.caller_dirs() {
            let _ = std::fs::remove_dir(dir);
        }
        for dir in self.dirs() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Host-side /proc (read-only, plus SIGKILL to our own processes)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct ProcStat {
    state: char,
    ppid: i32,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
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

/// The same process (pid and start time) exists and is not a zombie.
fn still_alive(pid: i32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|s| s.start == start && is_live(&s))
}

/// Live host processes with an argv element that `matches`.
fn live_where(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| is_live(&s)))
        .filter(|&p| cmdline(p).iter().any(|a| matches(a)))
        .collect()
}

/// Live host processes with `arg` as an exact argv element.
fn live_with_arg(arg: &str) -> Vec<i32> {
    live_where(|a| a == arg)
}

/// Every process below `root` (not including it), with its start time.
fn descendants(root: i32) -> Vec<(i32, u64)> {
    let mut children: HashMap<i32, Vec<(i32, u64)>> = HashMap::new();
    for pid in all_pids() {
        if let Some(st) = proc_stat(pid) {
            children.entry(st.ppid).or_default().push((pid, st.start));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c.0);
        }
    }
    out
}

/// The host-side purple-init a supervisor started: its child of that name.
fn init_of(supervisor: i32) -> Option<(i32, u64)> {
    all_pids().into_iter().find_map(|p| {
        let st = proc_stat(p)?;
        (st.ppid == supervisor && is_live(&st) && comm(p) == "purple-init").then_some((p, st.start))
    })
}

/// SIGKILL a process this test started, unless its pid was reused.
fn kill_ours(pid: i32, start: u64) {
    if still_alive(pid, start) {
        // SAFETY: kill(2) on a pid this test started, checked by start time.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A `sleep` argument unique to this test process and call, so the sleep
/// can be found on the host by its argv.
fn sleep_marker() -> String {
    format!(
        "1000.{}{:03}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst) % 1000
    )
}

/// The `uid-UID` directories under a parent cgroup directory.
fn caller_dirs(parent: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .into_iter()
        .flat_map(|entries| entries.flatten())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && e.file_name().to_string_lossy().starts_with("uid-")
        })
        .map(|e| e.path())
        .collect()
}

/// Every directory under a parent cgroup directory that is not a per-caller
/// directory, plus every directory inside the per-caller ones.
fn sandbox_dirs(parent: &std::path::Path) -> Vec<PathBuf> {
    let subdirs = |d: &std::path::Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .into_iter()
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    let callers = caller_dirs(parent);
    let mut found: Vec<PathBuf> = subdirs(parent)
        .into_iter()
        .filter(|d| !callers.contains(d))
        .collect();
    for caller in &callers {
        found.extend(subdirs(caller));
    }
    found
}

/// The cgroup directories (any hierarchy, under `parent`) owned by the
/// purple-init `init` (named `<uuid>@<pid>.<start>`).
fn cgroups_of_init(parent: &str, init: (i32, u64)) -> Vec<PathBuf> {
    let suffix = format!("@{}.{}", init.0, init.1);
    hierarchies()
        .iter()
        .flat_map(|h| sandbox_dirs(&h.join(parent)))
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Memory
// ---------------------------------------------------------------------------

/// A process that allocates past `--memory` is killed by the cgroup's OOM
/// killer (not the host's), and the report and stderr say that the memory
/// limit ended the run.
#[test]
fn memory_bomb_is_killed_and_reported_as_oom() {
    if !require_root("memory_bomb_is_killed_and_reported_as_oom") {
        return;
    }
    let wrapped = format!("python3 -c '{BOMB}'");
    for_each_caller(|c| {
        for (how, argv) in [
            ("direct", vec!["python3", "-c", BOMB]),
            ("in sh -c", vec!["/bin/sh", "-c", wrapped.as_str()]),
        ] {
            let r = limited(c, &["--memory", "128M"], &argv);
            let what = format!("{c:?} {how}");
            let ctx = r.ctx();
            assert_eq!(r.at("/status"), "oom", "{what}\n{ctx}");
            assert_eq!(r.at("/limit_hit"), "memory", "{what}\n{ctx}");
            // The command itself, or the shell reporting it, died of SIGKILL.
            assert_eq!(r.code(), Some(137), "{what}\n{ctx}");
            assert_eq!(r.u64_at("/exit_code"), Some(137), "{what}\n{ctx}");
            assert!(
                r.u64_at("/limit_events/oom_kills").unwrap_or(0) >= 1,
                "{what}: oom_kills\n{ctx}"
            );
            assert_eq!(
                r.u64_at("/isolation/limits/memory_bytes"),
                Some(128 * MIB),
                "{what}\n{ctx}"
            );
            if let Some(peak) = r.u64_at("/usage/memory_peak_bytes") {
                assert!(
                    peak <= 128 * MIB + PEAK_SLACK,
                    "{what}: memory peak {peak} above the 128 MiB limit\n{ctx}"
                );
            }
            assert_eq!(
                r.purple_lines(),
                ["purple: killed: memory limit 128 MiB reached"],
                "{what}\n{ctx}"
            );
            assert!(r.out.stdout.is_empty(), "{what}\n{ctx}");
            r.assert_cgroup_removed(&what);
        }
    });
}

// ---------------------------------------------------------------------------
// 2. Tasks
// ---------------------------------------------------------------------------

/// A fork bomb stays within `--pids` (threads and PID 1 counted), the
/// refused forks are counted, and the host can still start processes
/// while it runs.
#[test]
fn fork_bomb_is_capped_and_the_host_stays_responsive() {
    if !require_root("fork_bomb_is_capped_and_the_host_stays_responsive") {
        return;
    }
    for_each_caller(|c| {
        let Request { cmd, dir } = Request::new(
            c,
            None,
            &["--pids", "32", "--timeout", "4s"],
            &["/bin/sh", "-c", "f() { f | f & }; f; exec sleep 60"],
        );
        let mut running = Running::start(cmd);
        // While the bomb runs, the host must still fork and exec.
        let (mut spawned, mut failed) = (0, Vec::new());
        std::thread::sleep(Duration::from_millis(500));
        while running.running() {
            match Command::new("/bin/true").status() {
                Ok(s) if s.success() => spawned += 1,
                other => failed.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let r = Ran::read(running.finish(), &dir);
        let ctx = r.ctx();
        assert!(
            failed.is_empty(),
            "{c:?}: /bin/true failed on the host during the fork bomb: {failed:?}\n{ctx}"
        );
        assert!(
            spawned > 0,
            "{c:?}: the sandbox ended before the host could be probed\n{ctx}"
        );
        assert_eq!(r.code(), Some(124), "{c:?}: expected the timeout\n{ctx}");
        assert_eq!(r.u64_at("/isolation/limits/pids"), Some(32), "{c:?}\n{ctx}");
        if let Some(peak) = r.u64_at("/usage/pids_peak") {
            assert!(peak <= 32, "{c:?}: pids_peak {peak} above 32\n{ctx}");
        }
        assert!(
            r.u64_at("/limit_events/pids_limit_hits").unwrap_or(0) > 0,
            "{c:?}: the fork bomb never hit the pids limit\n{ctx}"
        );
        r.assert_cgroup_removed(&format!("{c:?} fork bomb"));
    });
}

// ---------------------------------------------------------------------------
// 3. Wall clock
// ---------------------------------------------------------------------------

/// `--timeout` ends a busy command and every process it started, also ones
/// that left its process tree, made a new session or ignore SIGTERM/SIGHUP.
#[test]
fn timeout_ends_the_run_and_every_child() {
    if !require_root("timeout_ends_the_run_and_every_child") {
        return;
    }
    for_each_caller(|c| {
        let m: Vec<String> = (0..4).map(|_| sleep_marker()).collect();
        let script = format!(
            "sleep {} & \
             sh -c 'sleep {} &'; \
             ( setsid sleep {} & ); \
             ( trap '' TERM HUP INT; exec sleep {} ) & \
             while :; do :; done",
            m[0], m[1], m[2], m[3]
        );
        let Request { cmd, dir } =
            Request::new(c, None, &["--timeout", "2s"], &["/bin/sh", "-c", &script]);
        let mut running = Running::start(cmd);
        let mut seen = BTreeSet::new();
        while running.running() && seen.len() < m.len() {
            for marker in &m {
                if !live_with_arg(marker).is_empty() {
                    seen.insert(marker.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = Ran::read(running.finish(), &dir);
        let gone = wait_until(Duration::from_secs(5), || {
            m.iter().all(|marker| live_with_arg(marker).is_empty())
        });
        let left: Vec<(String, Vec<i32>)> = m
            .iter()
            .map(|marker| (marker.clone(), live_with_arg(marker)))
            .filter(|(_, pids)| !pids.is_empty())
            .collect();
        for (_, pids) in &left {
            for &p in pids {
                if let Some(st) = proc_stat(p) {
                    kill_ours(p, st.start);
                }
            }
        }
        let ctx = r.ctx();
        assert!(
            gone,
            "{c:?}: children survived the timeout: {left:?}\n{ctx}"
        );
        assert_eq!(
            seen.len(),
            m.len(),
            "{c:?}: not every child started before the timeout (seen {seen:?} of {m:?})\n{ctx}"
        );
        assert_eq!(r.code(), Some(124), "{c:?}\n{ctx}");
        assert_eq!(r.at("/status"), "timeout", "{c:?}\n{ctx}");
        assert_eq!(r.u64_at("/exit_code"), Some(124), "{c:?}\n{ctx}");
        assert_eq!(r.at("/limit_hit"), "timeout", "{c:?}\n{ctx}");
        let wall = r.u64_at("/wall_time_ms").unwrap_or(0);
        assert!(
            (2000..60_000).contains(&wall),
            "{c:?}: wall_time_ms {wall} (at least the 2 s timeout)\n{ctx}"
        );
        assert_eq!(
            r.purple_lines(),
            ["purple: killed: timeout of 2s reached"],
            "{c:?}\n{ctx}"
        );
        r.assert_cgroup_removed(&format!("{c:?} timeout"));
    });
}

// ---------------------------------------------------------------------------
// 4. /tmp
// ---------------------------------------------------------------------------

/// /tmp is a 256 MiB tmpfs by default: a 2 GiB write stops there with
/// ENOSPC (the host's disk and memory are not the bound).
#[test]
fn tmp_stops_a_big_write_at_256m() {
    if !require_root("tmp_stops_a_big_write_at_256m") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(
            c,
            &[],
            &[
                "/bin/sh",
                "-c",
                "dd if=/dev/zero of=/tmp/big bs=1M count=2048 2>&1; echo dd $?; \
                 echo size $(stat -c %s /tmp/big)",
            ],
        );
        let ctx = r.ctx();
        let text = stdout(&r.out);
        assert_eq!(r.code(), Some(0), "{c:?}\n{ctx}");
        assert!(text.contains("No space left"), "{c:?}: no ENOSPC\n{ctx}");
        assert_ne!(field(&text, "dd"), Some("0"), "{c:?}\n{ctx}");
        assert_eq!(
            field(&text, "size"),
            Some((256 * MIB).to_string().as_str()),
            "{c:?}: /tmp/big should be exactly 256 MiB\n{ctx}"
        );
    });
}

/// With `--memory` below 256M, /tmp shrinks to the memory limit: no file on
/// it can be larger than the limit.
#[test]
fn tmp_is_clamped_to_a_smaller_memory_limit() {
    if !require_root("tmp_is_clamped_to_a_smaller_memory_limit") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(
            c,
            &["--memory", "32M"],
            &["/bin/sh", "-c", "echo shm $(stat -f -c '%b %S' /dev/shm)"],
        );
        let shm: Vec<u64> = field(&stdout(&r.out), "shm")
            .unwrap_or_default()
            .split(' ')
            .filter_map(|s| s.parse().ok())
            .collect();
        assert_eq!(
            shm.iter().product::<u64>(),
            32 * MIB,
            "{c:?}: /dev/shm is clamped to the memory limit too\n{}",
            r.ctx()
        );
        let r = limited(
            c,
            &["--memory", "64M"],
            &[
                "/bin/sh",
                "-c",
                "echo statfs $(stat -f -c '%b %S' /tmp); \
                 fallocate -l 65M /tmp/big 2>&1; echo fallocate $?; \
                 echo size $(stat -c %s /tmp/big); \
                 head -c 16M /dev/zero >/tmp/small; echo small $?",
            ],
        );
        let ctx = r.ctx();
        let text = stdout(&r.out);
        assert_eq!(r.code(), Some(0), "{c:?}\n{ctx}");
        let st: Vec<u64> = field(&text, "statfs")
            .unwrap_or_default()
            .split(' ')
            .filter_map(|s| s.parse().ok())
            .collect();
        assert_eq!(
            st.iter().product::<u64>(),
            64 * MIB,
            "{c:?}: /tmp size (blocks, block size {st:?})\n{ctx}"
        );
        assert_ne!(field(&text, "fallocate"), Some("0"), "{c:?}\n{ctx}");
        assert!(text.contains("No space left"), "{c:?}: no ENOSPC\n{ctx}");
        let size: u64 = field(&text, "size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(size <= 64 * MIB, "{c:?}: /tmp/big is {size} bytes\n{ctx}");
        assert_eq!(field(&text, "small"), Some("0"), "{c:?}\n{ctx}");
        let tmp = r
            .at("/isolation/mounts")
            .as_array()
            .and_then(|a| a.iter().find(|m| m["destination"] == "/tmp"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            tmp["size_bytes"].as_u64(),
            Some(64 * MIB),
            "{c:?}: the report's /tmp mount\n{ctx}"
        );
    });
}

/// Filling a /tmp that is as large as the memory limit exhausts the
/// sandbox's memory: that must end as the command's failure or the memory
/// limit's doing (status `exited`, or `oom` when the OOM killer took a
/// command process), never as a Purple failure with exit 125, and the file
/// still stays within the limit.
#[test]
fn filling_a_clamped_tmp_ends_as_oom_not_as_a_purple_failure() {
    if !require_root("filling_a_clamped_tmp_ends_as_oom_not_as_a_purple_failure") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(
            c,
            &["--memory", "64M"],
            &[
                "/bin/sh",
                "-c",
                "dd if=/dev/zero of=/tmp/big bs=1M count=2048 2>/dev/null; \
                 echo size $(stat -c %s /tmp/big)",
            ],
        );
        let ctx = r.ctx();
        let status = r.at("/status").as_str().unwrap_or_default().to_owned();
        assert!(
            status == "oom" || status == "exited",
            "{c:?}: status {status:?}\n{ctx}"
        );
        assert_ne!(r.code(), Some(EXIT_PURPLE), "{c:?}\n{ctx}");
        if let Some(size) = field(&stdout(&r.out), "size").and_then(|s| s.parse::<u64>().ok()) {
            assert!(size <= 64 * MIB, "{c:?}: /tmp/big is {size} bytes\n{ctx}");
        }
    });
}

// ---------------------------------------------------------------------------
// 5. CPU
// ---------------------------------------------------------------------------

/// `--cpus 0.5` is an upper bound on the CPU time a busy sandbox gets.
#[test]
fn cpu_quota_bounds_a_busy_loop() {
    if !require_root("cpu_quota_bounds_a_busy_loop") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(
            c,
            &["--cpus", "0.5"],
            &["timeout", "3", "sh", "-c", "while :; do :; done"],
        );
        let ctx = r.ctx();
        // timeout(1)'s own exit status: the loop ran its 3 s.
        assert_eq!(r.code(), Some(124), "{c:?}\n{ctx}");
        assert_eq!(
            r.u64_at("/isolation/limits/millicpus"),
            Some(500),
            "{c:?}\n{ctx}"
        );
        let user = r.u64_at("/usage/cpu_user_ms");
        let system = r.u64_at("/usage/cpu_system_ms");
        let wall = r.u64_at("/wall_time_ms").unwrap_or(0);
        let (Some(user), Some(system)) = (user, system) else {
            panic!("{c:?}: no CPU usage in the report, nothing to check the quota against\n{ctx}");
        };
        assert!(wall >= 3000, "{c:?}: wall_time_ms {wall}\n{ctx}");
        assert!(
            (user + system) * 100 <= wall * 65,
            "{c:?}: {user} ms user + {system} ms system in {wall} ms is more than 0.65 CPU\n{ctx}"
        );
    });
}

// ---------------------------------------------------------------------------
// 6. Defaults
// ---------------------------------------------------------------------------

/// Every sandbox is bounded even when nothing is asked for, and the report
/// says by what; a run that no limit ended says nothing on stderr.
#[test]
fn defaults_bound_every_run_and_are_reported() {
    if !require_root("defaults_bound_every_run_and_are_reported") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(c, &[], &["true"]);
        let ctx = r.ctx();
        assert_eq!(r.code(), Some(0), "{c:?}\n{ctx}");
        assert!(r.out.stderr.is_empty(), "{c:?}: stderr not empty\n{ctx}");
        assert_eq!(r.at("/status"), "exited", "{c:?}\n{ctx}");
        assert!(r.at("/limit_hit").is_null(), "{c:?}\n{ctx}");
        let l = r.at("/isolation/limits");
        assert_eq!(l["memory_bytes"].as_u64(), Some(1 << 30), "{c:?}\n{ctx}");
        assert_eq!(l["pids"].as_u64(), Some(256), "{c:?}\n{ctx}");
        assert_eq!(l["millicpus"].as_u64(), Some(1000), "{c:?}\n{ctx}");
        assert_eq!(l["cpu_weight"].as_u64(), Some(100), "{c:?}\n{ctx}");
        assert_eq!(l["open_files"].as_u64(), Some(4096), "{c:?}\n{ctx}");
        assert_eq!(l["file_size_bytes"].as_u64(), Some(8 << 30), "{c:?}\n{ctx}");
        assert!(l["cpu_time_s"].is_null(), "{c:?}\n{ctx}");
        assert!(l["memory_high_bytes"].is_null(), "{c:?}\n{ctx}");
        assert_eq!(l["core_bytes"].as_u64(), Some(0), "{c:?}\n{ctx}");
        assert!(
            l["swap_bytes"].as_u64() == Some(0)
                || l["swap_note"].as_str().is_some_and(|n| !n.is_empty()),
            "{c:?}: swap is neither bounded to 0 nor explained\n{ctx}"
        );
        // `cgroup v1` / `cgroup v2`, and the same in the one-line summary,
        // `v1 /purple/uid-<caller uid>/<sandbox id>@<init pid>.<start time>`.
        let version = l["cgroup"]
            .as_str()
            .and_then(|s| s.strip_prefix("cgroup "))
            .unwrap_or_default();
        assert!(
            version == "v1" || version == "v2",
            "{c:?}: isolation.limits.cgroup\n{ctx}"
        );
        let path = r.cgroup_path();
        assert_eq!(
            r.at("/isolation/cgroup").as_str(),
            Some(format!("{version} {path}").as_str()),
            "{c:?}\n{ctx}"
        );
        let id = r.at("/sandbox_id").as_str().unwrap_or("?");
        let caller_uid = match c {
            Caller::Root => 0,
            Caller::User => purple_tests::TEST_UID,
        };
        let caller_dir = format!("/purple/uid-{caller_uid}/");
        let owner = path
            .strip_prefix(caller_dir.as_str())
            .and_then(|n| n.strip_prefix(id))
            .and_then(|n| n.strip_prefix('@'))
            .and_then(|n| n.split_once('.'))
            .unwrap_or_default();
        assert!(
            !owner.0.is_empty()
                && owner.0.bytes().all(|b| b.is_ascii_digit())
                && !owner.1.is_empty()
                && owner.1.bytes().all(|b| b.is_ascii_digit()),
            "{c:?}: cgroup path {path:?} is not /purple/uid-<caller>/<id>@<pid>.<start>\n{ctx}"
        );
        for key in [
            "memory_peak_bytes",
            "cpu_user_ms",
            "cpu_system_ms",
            "pids_peak",
        ] {
            let v = r.at(&format!("/usage/{key}"));
            assert!(
                v.is_u64() || (v.is_null() && r.at("/usage").get(key).is_some()),
                "{c:?}: usage.{key}\n{ctx}"
            );
        }
        assert_eq!(r.u64_at("/limit_events/oom_kills"), Some(0), "{c:?}\n{ctx}");
        assert_eq!(
            r.u64_at("/limit_events/pids_limit_hits"),
            Some(0),
            "{c:?}\n{ctx}"
        );
        r.assert_cgroup_removed(&format!("{c:?} plain run"));
    });
}

// ---------------------------------------------------------------------------
// 7. Per-process rlimits
// ---------------------------------------------------------------------------

/// `--open-files`, `--cpu-time` and `--file-size` reach the command as
/// rlimits, and the two that kill say so.
#[test]
fn rlimits_reach_the_command() {
    if !require_root("rlimits_reach_the_command") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(c, &["--open-files", "64"], &["/bin/sh", "-c", "ulimit -n"]);
        assert_eq!(stdout(&r.out), "64\n", "{c:?}\n{}", r.ctx());
        assert_eq!(
            r.u64_at("/isolation/limits/open_files"),
            Some(64),
            "{c:?}\n{}",
            r.ctx()
        );

        // The timeout is only a safety net should RLIMIT_CPU not work.
        let r = limited(
            c,
            &["--cpu-time", "1s", "--timeout", "30s"],
            &["python3", "-c", "while True: pass"],
        );
        let ctx = r.ctx();
        assert_eq!(r.at("/status"), "signaled", "{c:?}: cpu-time\n{ctx}");
        assert_eq!(r.u64_at("/signal"), Some(24), "{c:?}: SIGXCPU\n{ctx}");
        assert_eq!(r.code(), Some(128 + 24), "{c:?}\n{ctx}");
        assert_eq!(r.at("/limit_hit"), "cpu_time", "{c:?}\n{ctx}");
        assert_eq!(
            r.u64_at("/isolation/limits/cpu_time_s"),
            Some(1),
            "{c:?}\n{ctx}"
        );
        assert_eq!(
            r.purple_lines(),
            ["purple: killed: CPU time limit 1s reached"],
            "{c:?}\n{ctx}"
        );

        // CPython ignores SIGXFSZ; put the default back so the limit kills.
        let r = limited(
            c,
            &["--file-size", "1M"],
            &[
                "python3",
                "-c",
                "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_DFL); \
                 open('/tmp/f','wb').write(b'x'*(2<<20))",
            ],
        );
        let ctx = r.ctx();
        assert_eq!(r.at("/status"), "signaled", "{c:?}: file-size\n{ctx}");
        assert_eq!(r.u64_at("/signal"), Some(25), "{c:?}: SIGXFSZ\n{ctx}");
        assert_eq!(r.code(), Some(128 + 25), "{c:?}\n{ctx}");
        assert_eq!(r.at("/limit_hit"), "file_size", "{c:?}\n{ctx}");
        assert_eq!(
            r.u64_at("/isolation/limits/file_size_bytes"),
            Some(MIB),
            "{c:?}\n{ctx}"
        );
        assert_eq!(
            r.purple_lines(),
            ["purple: killed: file size limit 1 MiB reached"],
            "{c:?}\n{ctx}"
        );

        // Python as it starts (SIGXFSZ ignored): the write fails instead.
        let r = limited(
            c,
            &["--file-size", "1M"],
            &["python3", "-c", "open('/tmp/f','wb').write(b'x'*(2<<20))"],
        );
        let ctx = r.ctx();
        assert_eq!(r.code(), Some(1), "{c:?}\n{ctx}");
        assert!(
            stderr(&r.out).contains("File too large"),
            "{c:?}: expected EFBIG\n{ctx}"
        );
    });
}

/// A caller's own low rlimits bind the sandbox (and are reported) but not
/// purple-init: a file-size limit below the size of the caller's audit log
/// would otherwise kill it with SIGXFSZ on its first event, without a
/// report.
#[test]
fn the_callers_rlimits_bind_the_sandbox_but_not_purple_init() {
    use std::os::unix::process::CommandExt;
    if !require_root("the_callers_rlimits_bind_the_sandbox_but_not_purple_init") {
        return;
    }
    for_each_caller(|c| {
        let (uid, gid) = match c {
            Caller::Root => (0, 0),
            Caller::User => (TEST_UID, TEST_GID),
        };
        let log_dir = private_dir(uid, gid);
        // Already bigger than the file-size limit below.
        let log = log_dir.path().join("audit.jsonl");
        std::fs::write(&log, vec![b'#'; 128 << 10]).unwrap();
        std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
        let mut req = Request::new(
            c,
            None,
            &["--audit-log", log.to_str().unwrap()],
            &["/bin/sh", "-c", "ulimit -f; ulimit -t; echo ok"],
        );
        // SAFETY: only async-signal-safe setrlimit calls between fork and
        // exec.
        unsafe {
            req.cmd.pre_exec(|| {
                let fsize = libc::rlimit {
                    rlim_cur: 64 << 10,
                    rlim_max: 64 << 10,
                };
                let cpu = libc::rlimit {
                    rlim_cur: 20,
                    rlim_max: 30,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &fsize) != 0
                    || libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let r = req.run();
        let ctx = r.ctx();
        assert_eq!(r.code(), Some(0), "{c:?}\n{ctx}");
        // dash's `ulimit -f` counts 512-byte blocks.
        assert_eq!(stdout(&r.out), "128\n20\nok\n", "{c:?}\n{ctx}");
        assert_eq!(
            r.u64_at("/isolation/limits/file_size_bytes"),
            Some(64 << 10),
            "{c:?}: the caller's limit is in force and reported\n{ctx}"
        );
        assert_eq!(
            r.u64_at("/isolation/limits/cpu_time_s"),
            Some(20),
            "{c:?}\n{ctx}"
        );
        // Past the caller's limit: whole events where purple-init could
        // lift the limit (CAP_SYS_RESOURCE), otherwise none; never a torn
        // line.
        let written = std::fs::read(&log).unwrap();
        let events = String::from_utf8_lossy(&written[128 << 10..]).into_owned();
        assert!(
            events.is_empty() || events.ends_with('\n'),
            "{c:?}: a torn line\n{events}"
        );
        for line in events.lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{c:?}: not a JSON line ({e}): {line}"));
        }
        if events.is_empty() {
            assert!(
                stderr(&r.out).contains("purple: audit: --audit-log:"),
                "{c:?}: the caller is told its log was not written\n{ctx}"
            );
        }
    });
}

/// The cgroup2 hierarchy's mount point (also on hybrid hosts).
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mount_point = before.split(' ').nth(4)?;
        (after.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup delegated to TEST_UID the way systemd delegates a user's
/// session: the directory and its control files are the user's. Thawed
/// and removed on drop.
struct DelegatedCgroup(PathBuf);

impl DelegatedCgroup {
    fn new(mount: &Path) -> Self {
        let dir = mount.join(format!("purple-test-delegated-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        for file in [
            "",
            "cgroup.procs",
            "cgroup.freeze",
            "cgroup.kill",
            "cgroup.threads",
        ] {
            std::os::unix::fs::chown(dir.join(file), Some(TEST_UID), Some(TEST_GID)).unwrap();
        }
        DelegatedCgroup(dir)
    }
}

impl Drop for DelegatedCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        // Its processes (the test's supervisor) are gone or going.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// The line of a process's cgroup2 membership in /proc/PID/cgroup.
fn cgroup2_path_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A user can freeze (or kill) the processes of a cgroup delegated to it,
/// with no signal permission needed. purple-init leaves such a cgroup
/// before the sandbox exists: with the caller's whole session frozen past
/// the timeout, the sandbox still ends on time.
#[test]
fn a_callers_delegated_cgroup_cannot_hold_purple_init() {
    if !require_root("a_callers_delegated_cgroup_cannot_hold_purple_init") {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(!in_ci(), "no cgroup2 hierarchy mounted, and CI is set");
        eprintln!("SKIP a_callers_delegated_cgroup_cannot_hold_purple_init: no cgroup2 mount");
        return;
    };
    let delegated = DelegatedCgroup::new(&mount);
    let dir = private_dir(TEST_UID, TEST_GID);
    let report = dir.path().join("report.json");
    // The supervisor starts inside the delegated cgroup, as the user.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec setpriv --reuid={TEST_UID} --regid={TEST_GID} \
         --clear-groups -- {} run --report {} --timeout 2s -- sleep 30",
        delegated.0.display(),
        Caller::User.supervisor().display(),
        report.display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/");
    let running = Running::start(cmd);
    let supervisor = running.pid();
    let mut init = None;
    let placed = wait_until(Duration::from_secs(5), || {
        init = init_of(supervisor);
        init.and_then(|(pid, _)| cgroup2_path_of(pid))
            .is_some_and(|p| p.ends_with("/init"))
    });
    let where_init = init.and_then(|(pid, _)| cgroup2_path_of(pid));
    // Freeze the caller's cgroup, as the caller, past the timeout.
    let frozen = Command::new("setpriv")
        .args([
            &format!("--reuid={TEST_UID}"),
            &format!("--regid={TEST_GID}"),
            "--clear-groups",
            "--",
            "/bin/sh",
            "-c",
            &format!("echo 1 > {}/cgroup.freeze", delegated.0.display()),
        ])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(delegated.0.join("cgroup.freeze"), "0").unwrap();
    let out = running.finish();
    assert!(frozen.success(), "the user could not freeze its own cgroup");
    assert!(
        placed,
        "purple-init stayed in the caller's cgroup ({where_init:?})\n{}",
        show(&out)
    );
    let r = Ran::read(out, &dir);
    let ctx = r.ctx();
    assert_eq!(r.at("/status"), "timeout", "{ctx}");
    let wall = r.u64_at("/wall_time_ms").unwrap();
    assert!(
        wall < 3500,
        "the timeout of 2 s fired after {wall} ms: the caller held purple-init\n{ctx}"
    );
    drop(delegated);
}

// ---------------------------------------------------------------------------
// 8. Admin defaults and maxima
// ---------------------------------------------------------------------------

/// The admin's maxima bound unprivileged callers (refused, naming the key
/// and the maximum) but not root.
#[test]
fn maxima_bound_unprivileged_callers_only() {
    if !require_root("maxima_bound_unprivileged_callers_only") {
        return;
    }
    // The host's admin config: none here, so the built-in maxima.
    for (flags, key, max) in [
        (["--memory", "32G"], "resources.memory", "16G"),
        (["--pids", "5000"], "resources.pids", "4096"),
    ] {
        let r = limited(Caller::User, &flags, &["/bin/sh", "-c", "echo RAN"]);
        let ctx = r.ctx();
        assert_eq!(r.code(), Some(EXIT_PURPLE), "User {flags:?}\n{ctx}");
        assert_eq!(r.at("/status"), "refused", "User {flags:?}\n{ctx}");
        assert!(r.out.stdout.is_empty(), "User {flags:?}: it ran\n{ctx}");
        let lines = r.purple_lines();
        assert!(
            lines.len() == 1 && lines[0].contains(key) && lines[0].contains(max),
            "User {flags:?}: expected one line naming {key} and {max}\n{ctx}"
        );
        let r = limited(Caller::Root, &flags, &["true"]);
        assert_eq!(r.code(), Some(0), "Root {flags:?}\n{}", r.ctx());
    }
}

/// A root caller is not bounded by a lower `[maxima]` in its admin config.
#[test]
fn root_is_not_bounded_by_the_admin_maxima() {
    if !require_root("root_is_not_bounded_by_the_admin_maxima") {
        return;
    }
    let parent = PrivateParent::with_config(
        "maxima",
        "[defaults]\nmemory = \"128M\"\n[maxima]\nmemory = \"256M\"\n",
    );
    let r = Request::new(Caller::Root, Some(&parent), &["--memory", "1G"], &["true"]).run();
    assert_eq!(r.code(), Some(0), "{}", r.ctx());
    assert_eq!(
        r.u64_at("/isolation/limits/memory_bytes"),
        Some(1 << 30),
        "{}",
        r.ctx()
    );
    // Nothing asked: the admin's default.
    let r = Request::new(Caller::Root, Some(&parent), &[], &["true"]).run();
    assert_eq!(r.code(), Some(0), "{}", r.ctx());
    assert_eq!(
        r.u64_at("/isolation/limits/memory_bytes"),
        Some(128 * MIB),
        "{}",
        r.ctx()
    );
    parent.assert_empty("maxima runs");
}

/// The contract's own example: an admin config that only lowers
/// `[maxima] memory` (below the built-in 1G default) is usable, and root
/// still runs with `--memory 1G`.
#[test]
fn a_maximum_below_the_built_in_default_is_accepted() {
    if !require_root("a_maximum_below_the_built_in_default_is_accepted") {
        return;
    }
    let parent = PrivateParent::with_config("maxonly", "[maxima]\nmemory = \"256M\"\n");
    let r = Request::new(Caller::Root, Some(&parent), &["--memory", "1G"], &["true"]).run();
    assert_eq!(r.code(), Some(0), "{}", r.ctx());
    parent.assert_empty("maximum only");
}

/// An admin config whose default is above its maximum is invalid: the run
/// is refused and nothing runs.
#[test]
fn a_default_above_its_maximum_is_refused() {
    if !require_root("a_default_above_its_maximum_is_refused") {
        return;
    }
    let parent = PrivateParent::with_config(
        "badconfig",
        "[defaults]\nmemory = \"2G\"\n[maxima]\nmemory = \"1G\"\n",
    );
    let r = Request::new(
        Caller::Root,
        Some(&parent),
        &[],
        &["/bin/sh", "-c", "echo RAN"],
    )
    .run();
    let ctx = r.ctx();
    assert_eq!(r.code(), Some(EXIT_PURPLE), "{ctx}");
    assert!(r.out.stdout.is_empty(), "it ran\n{ctx}");
    let lines = r.purple_lines();
    assert!(
        lines.len() == 1 && lines[0].contains("invalid") && lines[0].contains("defaults.memory"),
        "expected one line saying the admin config is invalid\n{ctx}"
    );
    parent.assert_empty("invalid config");
}

// ---------------------------------------------------------------------------
// 9. The cgroup namespace
// ---------------------------------------------------------------------------

/// The sandbox sees its own cgroup as the root of every hierarchy: no host
/// cgroup path (nor the sandbox id) leaks through /proc/self/cgroup.
#[test]
fn proc_self_cgroup_shows_only_the_root() {
    if !require_root("proc_self_cgroup_shows_only_the_root") {
        return;
    }
    for_each_caller(|c| {
        let r = limited(c, &[], &["cat", "/proc/self/cgroup"]);
        let text = stdout(&r.out);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "{c:?}\n{}", r.ctx());
        assert!(
            lines.iter().all(|l| l.ends_with(":/")),
            "{c:?}: a cgroup path other than / inside\n{}",
            r.ctx()
        );
        let id = r.at("/sandbox_id").as_str().unwrap_or("?");
        assert!(
            !text.contains(id),
            "{c:?}: the sandbox id shows inside\n{}",
            r.ctx()
        );
    });
}

// ---------------------------------------------------------------------------
// 10. Cleanup
// ---------------------------------------------------------------------------

/// Whatever the ending (success, timeout, OOM, command not found, a
/// refusal), no sandbox cgroup is left behind.
#[test]
fn no_cgroup_is_left_after_any_ending() {
    if !require_root("no_cgroup_is_left_after_any_ending") {
        return;
    }
    let parent = PrivateParent::new("endings");
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("high.toml");
    // memory_high above the (default) memory limit: purple-init refuses it
    // after reading the admin config.
    std::fs::write(&policy, "[resources]\nmemory_high = \"2G\"\n").unwrap();
    let policy = policy.to_str().unwrap();
    let endings: [(&str, &[&str], &[&str], i32); 5] = [
        ("normal exit", &[], &["true"], 0),
        ("timeout", &["--timeout", "1s"], &["sleep", "30"], 124),
        ("oom", &["--memory", "64M"], &["python3", "-c", BOMB], 137),
        ("command not found", &[], &["/nonexistent/command"], 127),
        ("refused", &["--policy", policy], &["true"], EXIT_PURPLE),
    ];
    for (what, opts, argv, code) in endings {
        let r = Request::new(Caller::Root, Some(&parent), opts, argv).run();
        assert_eq!(r.code(), Some(code), "{what}\n{}", r.ctx());
        if code != EXIT_PURPLE {
            assert!(
                r.cgroup_path().starts_with(&format!("/{}/", parent.name)),
                "{what}: not under the private parent\n{}",
                r.ctx()
            );
        }
        parent.assert_empty(what);
    }
    parent.assert_created();
    // The unprivileged caller (the host's parent): its own cgroup is gone.
    let user_endings: [(&str, &[&str], &[&str], i32); 3] = [
        ("user: normal exit", &[], &["true"], 0),
        ("user: timeout", &["--timeout", "1s"], &["sleep", "30"], 124),
        (
            "user: command not found",
            &[],
            &["/nonexistent/command"],
            127,
        ),
    ];
    for (what, opts, argv, code) in user_endings {
        let r = limited(Caller::User, opts, argv);
        assert_eq!(r.code(), Some(code), "{what}\n{}", r.ctx());
        r.assert_cgroup_removed(what);
    }
}

/// Starts `sleep MARKER` in a sandbox and waits until it runs; returns the
/// supervisor, the host-side purple-init (pid, start time) and the marker.
fn start_sleeper(caller: Caller, parent: Option<&PrivateParent>) -> (Running, (i32, u64), String) {
    let marker = sleep_marker();
    let mut cmd = caller.command(["run", "--", "sleep", &marker]);
    if let Some(p) = parent {
        cmd.env("PURPLE_CONFIG", &p.config);
    }
    let running = Running::start(cmd);
    let sup = running.pid();
    let up = wait_until(Duration::from_secs(20), || {
        live_with_arg(&marker)
            .iter()
            .any(|&p| p != sup && comm(p) == "sleep")
    });
    let init = init_of(sup);
    assert!(
        up && init.is_some(),
        "{caller:?}: `sleep {marker}` never ran under a purple-init\n{}",
        running.partial()
    );
    (running, init.unwrap_or_default(), marker)
}

/// The cgroup parent a caller's sandboxes use.
fn parent_name(parent: Option<&PrivateParent>) -> String {
    parent.map_or("purple".to_owned(), |p| p.name.clone())
}

/// SIGKILL of the supervisor: purple-init ends the sandbox and removes its
/// cgroup itself.
#[test]
fn killing_the_supervisor_removes_the_cgroup() {
    if !require_root("killing_the_supervisor_removes_the_cgroup") {
        return;
    }
    let private = PrivateParent::new("killsup");
    for_each_caller(|c| {
        let parent = (c == Caller::Root).then_some(&private);
        let (mut running, init, marker) = start_sleeper(c, parent);
        let name = parent_name(parent);
        assert!(
            !cgroups_of_init(&name, init).is_empty(),
            "{c:?}: no cgroup named after purple-init {init:?} under {name}"
        );
        running.child.kill().unwrap(); // SIGKILL
        running.child.wait().unwrap();
        running.done = true;
        let gone = wait_until(Duration::from_secs(10), || {
            !still_alive(init.0, init.1) && live_with_arg(&marker).is_empty()
        });
        kill_ours(init.0, init.1);
        assert!(gone, "{c:?}: the sandbox outlived its killed supervisor");
        let left = cgroups_of_init(&name, init);
        assert!(
            left.is_empty(),
            "{c:?}: purple-init {init:?} exited but left its cgroup: {left:?}"
        );
    });
    private.assert_empty("killed supervisors");
}

/// SIGKILL of purple-init itself: the sandbox dies with it, and the cgroup
/// it could not remove is removed by the next run on the same parent.
#[test]
fn a_killed_purple_inits_cgroup_is_removed_by_the_next_run() {
    if !require_root("a_killed_purple_inits_cgroup_is_removed_by_the_next_run") {
        return;
    }
    let private = PrivateParent::new("killinit");
    for_each_caller(|c| {
        let parent = (c == Caller::Root).then_some(&private);
        let (running, init, marker) = start_sleeper(c, parent);
        let name = parent_name(parent);
        kill_ours(init.0, init.1);
        let out = running.finish();
        assert_ne!(out.status.code(), Some(0), "{c:?}\n{}", show(&out));
        assert!(
            wait_until(Duration::from_secs(10), || live_with_arg(&marker)
                .is_empty()),
            "{c:?}: `sleep {marker}` outlived its killed purple-init"
        );
        if cgroups_of_init(&name, init).is_empty() {
            eprintln!("note: {c:?}: the cgroup of killed purple-init {init:?} was already gone");
        }
        let next = match parent {
            Some(p) => Request::new(c, Some(p), &[], &["true"]).run(),
            None => limited(c, &[], &["true"]),
        };
        assert_eq!(next.code(), Some(0), "{c:?}\n{}", next.ctx());
        let left = cgroups_of_init(&name, init);
        assert!(
            left.is_empty(),
            "{c:?}: the next run did not remove the dead purple-init's cgroup: {left:?}"
        );
    });
    private.assert_empty("killed purple-inits");
}

/// A small deterministic generator (xorshift64*), so the stress test's
/// kill moments are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Runs to its end.
    Normal,
    /// The supervisor gets SIGKILL after the delay.
    KillSupervisor,
    /// purple-init gets SIGKILL after the delay.
    KillInit,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    fate: Fate,
    sleep_ms: u64,
    kill_after_ms: u64,
}

/// What one stress run came to.
#[derive(Debug, Default)]
struct StressResult {
    /// Unexpected results, one line each.
    problems: Vec<String>,
    /// Processes seen below a supervisor we killed: all must end.
    tracked: Vec<(i32, u64)>,
    /// A purple-init was SIGKILLed.
    init_killed: bool,
    /// ... and its cgroup was still there when its supervisor had ended.
    init_left_cgroup: bool,
}

fn stress_run(i: usize, plan: Plan, parent: &PrivateParent, marker: &str) -> StressResult {
    let mut result = StressResult::default();
    let script = if plan.sleep_ms == 0 {
        "true".to_owned()
    } else {
        format!("sleep {}.{:03}", plan.sleep_ms / 1000, plan.sleep_ms % 1000)
    };
    let tag = format!("{marker}{i}");
    let mut cmd = Caller::Root.command(["run", "--", "/bin/sh", "-c", &script, &tag]);
    cmd.env("PURPLE_CONFIG", &parent.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn purple-supervisor");
    let sup = i32::try_from(child.id()).unwrap();
    let (err, reader) = collect(child.stderr.take().unwrap());
    let mut killed_init = None;
    match plan.fate {
        Fate::Normal => {}
        Fate::KillSupervisor => {
            std::thread::sleep(Duration::from_millis(plan.kill_after_ms));
            // Stopped, it cannot start a child we would not see.
            // SAFETY: kill(2) on the supervisor this test started.
            unsafe { libc::kill(sup, libc::SIGSTOP) };
            result.tracked = descendants(sup);
            let _ = child.kill();
        }
        Fate::KillInit => {
            std::thread::sleep(Duration::from_millis(plan.kill_after_ms));
            let found = wait_until(Duration::from_secs(10), || init_of(sup).is_some());
            result.tracked = descendants(sup);
            if let (true, Some(init)) = (found, init_of(sup)) {
                kill_ours(init.0, init.1);
                result.init_killed = true;
                killed_init = Some(init);
            }
        }
    }
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > DEADLINE {
            result.tracked.extend(descendants(sup));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(init) = killed_init {
        result.init_left_cgroup = !cgroups_of_init(&parent.name, init).is_empty();
    }
    if plan.fate == Fate::Normal {
        wait_until(Duration::from_secs(2), || reader.is_finished());
    }
    let err = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    match (plan.fate, status) {
        (_, None) => result.problems.push(format!(
            "run {i} ({plan:?}): supervisor hung for {DEADLINE:?}; {err}"
        )),
        (Fate::Normal, Some(s)) if !s.success() => result
            .problems
            .push(format!("run {i} ({plan:?}): {s:?}; stderr: {err}")),
        _ => {}
    }
    result
}

/// The stress test: 200 sandboxes, 8 at a time, with every fifth supervisor
/// and a few purple-inits SIGKILLed at a pseudo-random moment. After one
/// more run on the same parent (whose sweep takes what dead owners left),
/// no cgroup, process or mount of theirs is left.
#[test]
fn stress_killed_runs_leave_nothing_behind() {
    if !require_root("stress_killed_runs_leave_nothing_behind") {
        return;
    }
    const RUNS: usize = 200;
    const AT_ONCE: usize = 8;
    let parent = PrivateParent::new("stress");
    // Each run's `$0` is `<marker><run>`.
    let marker = format!("purple-stress-{}-", std::process::id());
    let mounts_before = leftovers().1;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let plans: Vec<Plan> = (0..RUNS)
        .map(|i| {
            let fate = if i % 5 == 4 {
                Fate::KillSupervisor
            } else if i % 40 == 17 {
                Fate::KillInit
            } else {
                Fate::Normal
            };
            Plan {
                fate,
                // Killed runs sleep long enough to be killed mid-run, or
                // earlier, during setup; a third of the others run `true`.
                sleep_ms: match fate {
                    Fate::Normal if i % 3 == 0 => 0,
                    Fate::Normal => 20 + rng.below(380),
                    _ => 3000,
                },
                kill_after_ms: rng.below(400),
            }
        })
        .collect();

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<StressResult>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(plan) = plans.get(i) else { break };
                let r = stress_run(i, *plan, &parent, &marker);
                results.lock().unwrap().push(r);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let problems: Vec<&String> = results.iter().flat_map(|r| &r.problems).collect();
    let tracked: Vec<(i32, u64)> = results.iter().flat_map(|r| r.tracked.clone()).collect();
    let inits_killed = results.iter().filter(|r| r.init_killed).count();
    let swept = results.iter().filter(|r| r.init_left_cgroup).count();

    // Everything the killed runs had ends, and so does every sandbox process.
    let ended = wait_until(Duration::from_secs(20), || {
        tracked.iter().all(|&(p, s)| !still_alive(p, s))
            && live_where(|a| a.starts_with(&marker)).is_empty()
            && parent.member_processes().is_empty()
    });
    let alive: Vec<(i32, u64, String)> = tracked
        .iter()
        .filter(|&&(p, s)| still_alive(p, s))
        .map(|&(p, s)| (p, s, comm(p)))
        .collect();
    let marked = live_where(|a| a.starts_with(&marker));
    let members = parent.member_processes();
    for &(p, s, _) in &alive {
        kill_ours(p, s);
    }
    for &p in &marked {
        if let Some(st) = proc_stat(p) {
            kill_ours(p, st.start);
        }
    }

    // The sweep of one more run removes what dead owners left.
    let stale = parent.children().len();
    eprintln!(
        "stress: {RUNS} runs, {} supervisors and {inits_killed} purple-inits killed \
         ({swept} left a cgroup for a later run's sweep); {stale} cgroup directories \
         left for the final run",
        plans
            .iter()
            .filter(|p| p.fate == Fate::KillSupervisor)
            .count()
    );
    let last = Request::new(Caller::Root, Some(&parent), &[], &["true"]).run();
    let left = parent.describe_children();
    let mounts_after = leftovers().1;

    assert!(problems.is_empty(), "unexpected endings:\n{problems:#?}");
    assert!(
        ended,
        "processes outlived the stress runs (killed now): tracked {alive:?}, \
         with the marker {marked:?}, in sandbox cgroups {members:?}"
    );
    assert_eq!(last.code(), Some(0), "final run\n{}", last.ctx());
    parent.assert_created();
    assert!(
        left.is_empty(),
        "sandbox cgroups left under {} after the final run:\n{left}",
        parent.name
    );
    assert!(
        mounts_after <= mounts_before,
        "host mounts mentioning purple went from {mounts_before} to {mounts_after}"
    );
    assert!(
        inits_killed > 0,
        "no purple-init was ever found to kill: the test did not exercise the sweep"
    );
}

/// Every unprivileged caller's sandboxes share one parent cgroup,
/// `purple/uid-UID`, which carries the admin's per-user totals (built in:
/// 16G of memory, 4096 tasks), so many sandboxes of one user cannot add up
/// past them. A root caller's parent carries none.
#[test]
fn one_users_sandboxes_share_a_bounded_parent() {
    if !require_root("one_users_sandboxes_share_a_bounded_parent") {
        return;
    }
    let out = purple(Caller::User, ["run", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let user_dir = format!("purple/uid-{}", purple_tests::TEST_UID);
    let mut checked = 0;
    for h in hierarchies() {
        let dir = h.join(&user_dir);
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        if let Some(v) = read("memory.limit_in_bytes").or_else(|| read("memory.max")) {
            assert_eq!(v.trim(), (16u64 << 30).to_string(), "{}", dir.display());
            checked += 1;
        }
        if let Some(v) = read("pids.max") {
            assert_eq!(v.trim(), "4096", "{}", dir.display());
            checked += 1;
        }
    }
    assert_eq!(
        checked, 2,
        "the user's parent {user_dir} should carry a memory and a pids total"
    );
}

/// The caller cannot hold off the timeout by stopping purple-init: once the
/// request is checked, purple-init's real uid is root, so the caller's
/// SIGSTOP is refused (EPERM), and the terminal's job-control stops
/// (SIGTSTP, SIGTTIN, SIGTTOU, sent without a permission check) are
/// ignored. SIGTERM to the supervisor still ends the run, through the
/// socket.
#[test]
fn a_caller_cannot_stop_purple_init() {
    if !require_root("a_caller_cannot_stop_purple_init") {
        return;
    }
    let (running, init, marker) = start_sleeper(Caller::User, None);
    let kill_as_user = |signal: &str| {
        use std::os::unix::process::CommandExt;
        Command::new("/bin/kill")
            .args(["-s", signal, &init.0.to_string()])
            .uid(purple_tests::TEST_UID)
            .gid(purple_tests::TEST_GID)
            .output()
            .unwrap()
    };
    let stop = kill_as_user("STOP");
    assert!(
        !stop.status.success(),
        "the caller could SIGSTOP purple-init\n{}",
        show(&stop)
    );
    // Job-control stops, as a terminal would send them (here from root,
    // which may signal anything; the test started this process).
    for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: kill(2) on a purple-init this test started.
        unsafe { libc::kill(init.0, signal) };
    }
    std::thread::sleep(Duration::from_millis(200));
    let state = std::fs::read_to_string(format!("/proc/{}/stat", init.0)).unwrap_or_default();
    let state = state
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().next());
    assert_ne!(
        state,
        Some(Some('T')),
        "purple-init was stopped by a job-control signal"
    );
    // The supervisor's SIGTERM still reaches purple-init (over the socket).
    // SAFETY: kill(2) on the supervisor this test started.
    unsafe { libc::kill(running.pid(), libc::SIGTERM) };
    let out = running.finish();
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        show(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || live_with_arg(&marker)
            .is_empty()),
        "the sandbox outlived the supervisor's SIGTERM"
    );
}
