#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bad input: hostile policies, bad flags, bad commands, closed standard
//! streams, oversized requests, and purple-init attacked directly through
//! its socket. Every refusal must give the documented exit status and one
//! clear line on stderr, and leave nothing behind.
//!
//! "Nothing left behind" is checked precisely, so that tests can run in
//! parallel with each other and with other Purple runs on the host:
//! - this test process is a child subreaper, so any process Purple leaks
//!   (an orphaned purple-init, a sandbox that outlived it) is re-parented to
//!   us; every process we start ourselves is registered while it runs, so a
//!   child of ours that we did not start is a leftover;
//! - no mount in our (the host's) mount namespace mentions purple;
//! - no new entry in /tmp named `purple*`, other than the harness's own
//!   (`purple-setuid-test-*`, `purple-test-*`, and the unit tests'
//!   `purple-admin-test-*`). Our own temporary directories are named
//!   `bad-input-*` and removed on drop.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use purple_tests::*;

/// Upper bound for one supervisor run; every run here takes well under a
/// second, so reaching it means a hang.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for purple-init to answer a hostile request.
const INIT_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Processes: spawned, tracked, waited with a deadline.

/// Pids of the children this test process started and has not reaped yet.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<u32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn become_subreaper() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
        let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            ret,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    });
}

/// A child we started. Dropping it kills (only this pid) and reaps it if it
/// is still running, so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    what: String,
}

fn spawn(cmd: &mut Command, what: &str) -> Proc {
    become_subreaper();
    let mut live = live();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    live.insert(child.id());
    Proc {
        child,
        what: what.to_owned(),
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        live().remove(&self.child.id());
    }
}

fn collect(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

impl Proc {
    /// Waits at most `limit` for the process and for its output pipes to
    /// close. On expiry, kills this one pid and fails the test.
    fn output(&mut self, limit: Duration) -> Output {
        let out = self.child.stdout.take().map(collect);
        let err = self.child.stderr.take().map(collect);
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => break None,
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        };
        let hung = status.is_none();
        let status = match status {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                self.child.wait().expect("wait after kill")
            }
        };
        // Output pipes must close soon after the process is gone: if they
        // do not, something it started still holds them.
        let grace = Duration::from_secs(5);
        let mut pipes_held = false;
        let mut take = |rx: Option<mpsc::Receiver<Vec<u8>>>| match rx {
            None => Vec::new(),
            Some(rx) => rx.recv_timeout(grace).unwrap_or_else(|_| {
                pipes_held = true;
                Vec::new()
            }),
        };
        let output = Output {
            status,
            stdout: take(out),
            stderr: take(err),
        };
        assert!(
            !hung,
            "{} did not finish within {limit:?}: killed it (pid {}).\n{}",
            self.what,
            self.child.id(),
            show(&output)
        );
        if pipes_held {
            let stray = reap_orphans();
            panic!(
                "{} exited ({:?}) but its stdout/stderr stayed open for {grace:?}: a process it started outlived it; killed: {stray:#?}",
                self.what, output.status
            );
        }
        output
    }
}

/// Runs a prepared command with stdin from /dev/null, bounded.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(&mut cmd, what).output(limit)
}

/// `purple-supervisor ARGS` as `caller`, bounded by [`RUN_LIMIT`].
fn sup<S: AsRef<str>>(caller: Caller, args: &[S]) -> Output {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let what = format!("{caller:?}: purple-supervisor {}", brief(&args.join(" ")));
    run_bounded(caller.command(&args), &what, RUN_LIMIT)
}

/// Like [`sup`], with extra environment variables.
fn sup_env<S: AsRef<str>>(caller: Caller, env: &[(&str, &str)], args: &[S]) -> Output {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut cmd = caller.command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!(
        "{caller:?}: {env:?} purple-supervisor {}",
        brief(&args.join(" "))
    );
    run_bounded(cmd, &what, RUN_LIMIT)
}

fn brief(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn show(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        brief(&stdout(out)),
        brief(&stderr(out))
    )
}

// ---------------------------------------------------------------------------
// Assertions.

fn assert_code(out: &Output, code: i32, ctx: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{ctx}: expected exit status {code}\n{}",
        show(out)
    );
}

/// Asserts that stderr is exactly one line, `purple: ` and a reason that
/// contains every needle (case-insensitive), and returns that line.
fn one_purple_line(out: &Output, needles: &[&str], ctx: &str) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("purple: ")
            && lines[0].len() > "purple: ".len() + 8,
        "{ctx}: expected exactly one line `purple: <reason>` on stderr\n{}",
        show(out)
    );
    let line = lines[0].to_owned();
    for needle in needles {
        assert!(
            line.to_lowercase().contains(&needle.to_lowercase()),
            "{ctx}: the reason should mention {needle:?}\n{}",
            show(out)
        );
    }
    line
}

/// Purple failed or refused: `code`, one clear line, nothing on stdout.
fn assert_refused(out: &Output, code: i32, needles: &[&str], ctx: &str) -> String {
    assert_code(out, code, ctx);
    assert!(
        out.stdout.is_empty(),
        "{ctx}: nothing should reach stdout\n{}",
        show(out)
    );
    one_purple_line(out, needles, ctx)
}

/// A command-line usage error from the argument parser: exit 125, and the
/// first stderr line is `error: ...` naming the bad value and why.
fn assert_usage_error(out: &Output, needles: &[&str], ctx: &str) {
    assert_code(out, EXIT_PURPLE, ctx);
    assert!(
        out.stdout.is_empty(),
        "{ctx}: nothing should reach stdout\n{}",
        show(out)
    );
    let err = stderr(out);
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error: "),
        "{ctx}: expected a usage error\n{}",
        show(out)
    );
    for needle in needles {
        assert!(
            first.to_lowercase().contains(&needle.to_lowercase()),
            "{ctx}: the usage error should mention {needle:?} on its first line\n{}",
            show(out)
        );
    }
}

fn assert_ok(out: &Output, ctx: &str) -> String {
    assert_code(out, 0, ctx);
    assert!(
        out.stderr.is_empty(),
        "{ctx}: expected a silent success\n{}",
        show(out)
    );
    stdout(out)
}

// ---------------------------------------------------------------------------
// Nothing left behind.

struct Before {
    mounts: usize,
    tmp: BTreeSet<String>,
}

fn purple_tmp_entries() -> BTreeSet<String> {
    let harness = ["purple-setuid-test-", "purple-test-", "purple-admin-test-"];
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("purple") && !harness.iter().any(|h| n.starts_with(h)))
                .collect()
        })
        .unwrap_or_default()
}

fn before() -> Before {
    become_subreaper();
    Before {
        mounts: leftovers().1,
        tmp: purple_tmp_entries(),
    }
}

/// Our children that we did not start: orphans re-parented to us.
fn orphans() -> Vec<(u32, String)> {
    let me = std::process::id();
    let live = live();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("?").to_owned();
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid != me || live.contains(&pid) {
            continue;
        }
        let comm = stat
            .get(stat.find('(').map_or(0, |i| i + 1)..close)
            .unwrap_or("?");
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        found.push((
            pid,
            format!("pid {pid} ({comm}) state {state}: {}", cmdline.trim()),
        ));
    }
    found
}

/// Ends and reaps orphans re-parented to us (our own descendants that
/// outlived their parent), and describes them.
fn reap_orphans() -> Vec<String> {
    let stray = orphans();
    for (pid, _) in &stray {
        let pid = *pid as libc::pid_t;
        // SAFETY: kill and waitpid on a pid that is our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    stray.into_iter().map(|(_, d)| d).collect()
}

fn assert_nothing_left(before: &Before, ctx: &str) {
    let stray = reap_orphans();
    assert!(
        stray.is_empty(),
        "{ctx}: processes outlived their purple-supervisor and were re-parented to the test (killed now): {stray:#?}"
    );
    let mounts = leftovers().1;
    assert!(
        mounts <= before.mounts,
        "{ctx}: mounts mentioning purple went from {} to {mounts}:\n{}",
        before.mounts,
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("purple"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let new: Vec<String> = purple_tmp_entries()
        .difference(&before.tmp)
        .cloned()
        .collect();
    assert!(new.is_empty(), "{ctx}: new entries in /tmp: {new:?}");
}

// ---------------------------------------------------------------------------
// Files.

/// A temporary directory `bad-input-*` in /tmp, owned by `uid`, mode 0755
/// (so the test user can reach what is inside unless told otherwise).
fn scratch(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bad-input-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    chown(dir.path(), Some(uid), Some(uid)).expect("chown scratch");
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write_file(path: &Path, bytes: impl AsRef<[u8]>, mode: u32) -> String {
    std::fs::write(path, bytes).expect("write file");
    set_mode(path, mode);
    path.to_str().expect("utf-8 path").to_owned()
}

fn caller_uid(caller: Caller) -> u32 {
    match caller {
        Caller::Root => 0,
        Caller::User => TEST_UID,
    }
}

// ---------------------------------------------------------------------------
// 1. Malformed and hostile policy files.

/// (name, file contents, line, column, needles in the message)
type PolicyCase = (&'static str, Vec<u8>, usize, usize, &'static [&'static str]);

fn bad_policy_cases() -> Vec<PolicyCase> {
    let s = |t: &str| t.as_bytes().to_vec();
    vec![
        (
            "syntax",
            s("[filesystem\nsystem = true\n"),
            1,
            12,
            &["invalid TOML"],
        ),
        (
            "unknown-section",
            s("[bogus]\n"),
            1,
            2,
            &["unknown section \"bogus\"", "allowed sections are"],
        ),
        (
            "unknown-subsection",
            s("[filesystem.sub]\nx = 1\n"),
            1,
            13,
            &["unknown key \"sub\""],
        ),
        (
            "unknown-key",
            s("[filesystem]\nsytem = true\n"),
            2,
            1,
            &["unknown key \"sytem\"", "allowed keys are"],
        ),
        (
            "unknown-tmpfs-key",
            s("[filesystem]\ntmpfs = [{ path = \"/t\", sise = \"1M\" }]\n"),
            2,
            25,
            &["unknown key \"sise\""],
        ),
        (
            "missing-tmpfs-path",
            s("[filesystem]\ntmpfs = [{ size = \"1M\" }]\n"),
            2,
            10,
            &["missing key \"path\""],
        ),
        (
            "bool-as-string",
            s("[filesystem]\nsystem = \"yes\"\n"),
            2,
            10,
            &["expected a boolean, found a string"],
        ),
        (
            "section-as-integer",
            s("filesystem = 3\n"),
            1,
            14,
            &["expected a table, found an integer"],
        ),
        (
            "timeout-as-bool",
            s("[resources]\ntimeout = true\n"),
            2,
            11,
            &["found a boolean"],
        ),
        (
            "bind-as-integer",
            s("[filesystem]\nread_only = [1]\n"),
            2,
            14,
            &["found an integer"],
        ),
        (
            "pids-as-float",
            s("[resources]\npids = 1.5\n"),
            2,
            8,
            &["expected an integer, found a float"],
        ),
        (
            "ambient-as-string",
            s("[capabilities]\nambient = \"yes\"\n"),
            2,
            11,
            &["expected a boolean"],
        ),
        (
            "relative-workspace",
            s("[filesystem]\nworkspace = \"work\"\n"),
            2,
            13,
            &["\"work\" is relative"],
        ),
        (
            "relative-bind",
            s("[filesystem]\nread_only = [\"data\"]\n"),
            2,
            14,
            &["\"data\" is relative"],
        ),
        (
            "relative-destination",
            s("[filesystem]\nread_only = [\"/usr:usr\"]\n"),
            2,
            14,
            &["\"usr\" is relative"],
        ),
        (
            "dotdot",
            s("[filesystem]\nread_write = [\"/tmp/../etc\"]\n"),
            2,
            15,
            &["contains \"..\""],
        ),
        (
            "dot",
            s("[filesystem]\nread_only = [\"/tmp/./x\"]\n"),
            2,
            14,
            &["contains \".\""],
        ),
        (
            "onto-proc",
            s("[filesystem]\nread_only = [\"/usr:/proc\"]\n"),
            2,
            14,
            &["/proc"],
        ),
        (
            "into-proc",
            s("[filesystem]\nread_only = [\"/usr:/proc/sys\"]\n"),
            2,
            14,
            &["inside /proc"],
        ),
        (
            "onto-dev",
            s("[filesystem]\nread_write = [{ source = \"/tmp\", destination = \"/dev\" }]\n"),
            2,
            15,
            &["/dev"],
        ),
        (
            "into-dev",
            s("[filesystem]\nread_only = [\"/usr:/dev/x\"]\n"),
            2,
            14,
            &["inside /dev"],
        ),
        (
            "onto-root",
            s("[filesystem]\nread_only = [\"/usr:/\"]\n"),
            2,
            14,
            &["root"],
        ),
        (
            "tmpfs-onto-root",
            s("[filesystem]\ntmpfs = [{ path = \"/\" }]\n"),
            2,
            10,
            &["root"],
        ),
        (
            "tmpfs-onto-proc",
            s("[[filesystem.tmpfs]]\npath = \"/proc\"\n"),
            1,
            1,
            &["/proc"],
        ),
        (
            "duplicate-destination",
            s("[filesystem]\nread_only = [\"/usr:/x\", \"/etc:/x\"]\n"),
            2,
            25,
            &["/x is already mounted"],
        ),
        (
            "duplicate-across-kinds",
            s("[filesystem]\nread_only = [\"/usr:/x\"]\ntmpfs = [{ path = \"/x\" }]\n"),
            3,
            10,
            &["/x is already mounted"],
        ),
        (
            "duplicate-normalised",
            s("[filesystem]\nread_only = [\"/usr:/x\"]\nread_write = [\"/tmp:/x//\"]\n"),
            3,
            15,
            &["already mounted"],
        ),
        (
            "duplicate-toml-key",
            s("[filesystem]\nsystem = true\nsystem = false\n"),
            3,
            1,
            &["duplicate key"],
        ),
        (
            "duplicate-table",
            s("[env]\n[env]\n"),
            2,
            2,
            &["duplicate key"],
        ),
        (
            "huge-pids",
            s("[resources]\npids = 99999999999999999999\n"),
            2,
            8,
            &["out of range"],
        ),
        (
            "pids-over-max",
            s("[resources]\npids = 4194305\n"),
            2,
            8,
            &["out of range"],
        ),
        (
            "negative-pids",
            s("[resources]\npids = -5\n"),
            2,
            8,
            &["out of range"],
        ),
        (
            "huge-size",
            s("[filesystem]\ntmpfs = [{ path = \"/tmp\", size = \"99999999T\" }]\n"),
            2,
            34,
            &["out of range"],
        ),
        (
            "negative-memory",
            s("[resources]\nmemory = \"-1G\"\n"),
            2,
            10,
            &["negative"],
        ),
        (
            "huge-cpus",
            s("[resources]\ncpus = 1e308\n"),
            2,
            8,
            &["between 0.01 and 1024"],
        ),
        (
            "nan-cpus",
            s("[resources]\ncpus = nan\n"),
            2,
            8,
            &["between 0.01 and 1024"],
        ),
        (
            "long-timeout",
            s("[resources]\ntimeout = \"700000s\"\n"),
            2,
            11,
            &["7 days"],
        ),
        (
            "timeout-unit",
            s("[resources]\ntimeout = \"8d\"\n"),
            2,
            11,
            &["unknown unit"],
        ),
        (
            "long-path",
            format!("[filesystem]\nworkspace = \"/{}\"\n", "a".repeat(5000)).into_bytes(),
            2,
            13,
            &["4096"],
        ),
        (
            "too-many-binds",
            format!(
                "[filesystem]\nread_only = [{}]\n",
                (0..257)
                    .map(|i| format!("\"/usr:/b{i}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into_bytes(),
            0,
            0,
            &["at most 256"],
        ),
        (
            "nul-in-env-value",
            s("[env]\nA = \"x\\u0000y\"\n"),
            2,
            5,
            &["NUL"],
        ),
        (
            "nul-in-path",
            s("[filesystem]\nread_only = [\"/usr\\u0000/x\"]\n"),
            2,
            14,
            &["NUL"],
        ),
        (
            "raw-nul-byte",
            b"[filesystem]\nsystem = true\0\n".to_vec(),
            2,
            10,
            &["invalid TOML"],
        ),
        (
            "terminal-escape",
            b"[filesystem]\nsystem = true\x1b[2J\n".to_vec(),
            2,
            15,
            &["invalid TOML"],
        ),
        (
            "env-name-with-equals",
            s("[env]\n\"A=B\" = \"x\"\n"),
            2,
            1,
            &["contains '='"],
        ),
        (
            "env-name-empty",
            s("[env]\n\"\" = \"x\"\n"),
            2,
            1,
            &["empty"],
        ),
        (
            "env-value-too-long",
            format!("[env]\nA = \"{}\"\n", "x".repeat(128 * 1024 + 1)).into_bytes(),
            2,
            5,
            &["128 KiB"],
        ),
        (
            "env-value-not-string",
            s("[env]\nA = 1\n"),
            2,
            5,
            &["expected a string"],
        ),
        (
            "unknown-capability",
            s("[capabilities]\nadd = [\"CAP_FLY\"]\n"),
            2,
            8,
            &["unknown capability \"CAP_FLY\""],
        ),
        (
            "fullwidth-capability",
            "[capabilities]\nadd = [\"CAP_ＳYS_ADMIN\"]\n"
                .as_bytes()
                .to_vec(),
            2,
            8,
            &["unknown capability"],
        ),
        (
            "syscall-path",
            s("[syscalls]\ndeny = [\"../../etc\"]\n"),
            2,
            9,
            &["not a syscall name"],
        ),
        (
            "syscall-action",
            s("[syscalls]\naction = \"explode\"\n"),
            2,
            10,
            &["unknown syscall action"],
        ),
        (
            "landlock-mode",
            s("[landlock]\nmode = \"sometimes\"\n"),
            2,
            8,
            &["unknown landlock mode"],
        ),
        (
            "port-range",
            s("[network]\nmode = \"filtered\"\nallow_out = [\"tcp:99999\"]\n"),
            3,
            14,
            &["1 to 65535"],
        ),
        (
            "rules-without-filtered",
            s("[network]\nallow_out = [\"tcp:443\"]\n"),
            2,
            1,
            &["filtered"],
        ),
        (
            "deep-nesting",
            format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            1,
            0,
            &["recurs"],
        ),
        (
            "deep-inline-tables",
            format!(
                "[env]\na = {}1{}\n",
                "{x=".repeat(50_000),
                "}".repeat(50_000)
            )
            .into_bytes(),
            2,
            0,
            &["invalid TOML"],
        ),
    ]
}

/// Checks one `FILE:LINE:COL: message` diagnostic. `line`/`col` 0 = any.
fn assert_diagnostic(diag: &str, file: &str, line: usize, col: usize, needles: &[&str], ctx: &str) {
    let rest = diag.strip_prefix(&format!("{file}:")).unwrap_or_else(|| {
        panic!("{ctx}: diagnostic does not start with the file name {file}: {diag:?}")
    });
    let mut parts = rest.splitn(3, ':');
    let l: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let c: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let message = parts.next().unwrap_or("");
    assert!(
        l > 0 && c > 0 && message.starts_with(' ') && message.trim().len() > 5,
        "{ctx}: not FILE:LINE:COL: message: {diag:?}"
    );
    if line > 0 {
        assert_eq!(l, line, "{ctx}: wrong line in {diag:?}");
    }
    if col > 0 {
        assert_eq!(c, col, "{ctx}: wrong column in {diag:?}");
    }
    for needle in needles {
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{ctx}: the message should mention {needle:?}: {diag:?}"
        );
    }
}

#[test]
fn hostile_policy_files_are_refused_with_file_line_column() {
    if !require_root("hostile_policy_files_are_refused_with_file_line_column") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    for (i, (name, text, line, col, needles)) in bad_policy_cases().into_iter().enumerate() {
        let file = write_file(&dir.path().join(format!("{name}.toml")), &text, 0o644);
        // Every case as root; every third one also through the setuid path.
        let callers: &[Caller] = if i % 3 == 0 {
            &Caller::BOTH
        } else {
            &[Caller::Root]
        };
        for &caller in callers {
            let ctx = format!("{caller:?} run --policy {name}");
            let out = sup(caller, &["run", "--policy", &file, "--", "/bin/true"]);
            let reason = assert_refused(&out, EXIT_PURPLE, &[], &ctx);
            assert_diagnostic(
                reason.trim_start_matches("purple: "),
                &file,
                line,
                col,
                needles,
                &ctx,
            );
        }
        let ctx = format!("policy check {name}");
        let out = sup(Caller::Root, &["policy", "check", &file]);
        assert_code(&out, 1, &ctx);
        assert!(
            out.stderr.is_empty(),
            "{ctx}: errors belong on stdout\n{}",
            show(&out)
        );
        let report = stdout(&out);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{ctx}: expected exactly one error\n{}",
            show(&out)
        );
        assert_diagnostic(lines[0], &file, line, col, needles, &ctx);
    }
    drop(dir);
    assert_nothing_left(&b, "hostile policy files");
}

#[test]
fn policy_with_three_errors_lists_all_three() {
    if !require_root("policy_with_three_errors_lists_all_three") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let file = write_file(
        &dir.path().join("three.toml"),
        "[bogus]\nx = 1\n[resources]\nmemroy = \"1G\"\n[filesystem]\nread_only = [\"data\"]\n",
        0o644,
    );
    let out = sup(Caller::Root, &["policy", "check", &file]);
    assert_code(&out, 1, "policy check three.toml");
    assert!(
        out.stderr.is_empty(),
        "policy check: errors belong on stdout\n{}",
        show(&out)
    );
    let listed = stdout(&out);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "expected 3 errors, one per line\n{}",
        show(&out)
    );
    assert_diagnostic(
        lines[0],
        &file,
        1,
        2,
        &["unknown section \"bogus\""],
        "error 1",
    );
    assert_diagnostic(
        lines[1],
        &file,
        4,
        1,
        &["unknown key \"memroy\""],
        "error 2",
    );
    assert_diagnostic(lines[2], &file, 6, 14, &["\"data\" is relative"], "error 3");

    // `run` refuses with the same diagnostics, each as its own `purple: `
    // line (one line per error, as purple-supervisor's fail() documents).
    for caller in Caller::BOTH {
        let out = sup(caller, &["run", "--policy", &file, "--", "/bin/true"]);
        assert_code(&out, EXIT_PURPLE, "run --policy three.toml");
        assert!(out.stdout.is_empty());
        let expected: Vec<String> = lines.iter().map(|l| format!("purple: {l}")).collect();
        let got: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
        assert_eq!(
            got, expected,
            "{caller:?}: run should list the same three errors"
        );
    }
    drop(dir);
    assert_nothing_left(&b, "three errors");
}

#[test]
fn policy_with_invalid_utf8_is_refused_with_its_position() {
    if !require_root("policy_with_invalid_utf8_is_refused_with_its_position") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let file = write_file(
        &dir.path().join("latin1.toml"),
        b"[env]\nNAME = \"caf\xe9\"\n",
        0o644,
    );
    let out = sup(Caller::Root, &["run", "--policy", &file, "--", "/bin/true"]);
    let reason = assert_refused(&out, EXIT_PURPLE, &["UTF-8"], "run --policy latin1.toml");
    assert_diagnostic(
        reason.trim_start_matches("purple: "),
        &file,
        2,
        0,
        &["UTF-8"],
        "run --policy latin1.toml",
    );
    let out = sup(Caller::Root, &["policy", "check", &file]);
    assert_code(
        &out,
        1,
        "policy check latin1.toml (a content error, not an unreadable file)",
    );
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 1, "one error\n{}", show(&out));
    assert_diagnostic(
        listed.trim_end(),
        &file,
        2,
        0,
        &["UTF-8"],
        "policy check latin1.toml",
    );
    drop(dir);
    assert_nothing_left(&b, "invalid UTF-8 policy");
}

#[test]
fn oversized_policy_file_is_refused_quickly() {
    if !require_root("oversized_policy_file_is_refused_quickly") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    // 10 MB of distinct keys: valid environment variables, then unknown keys.
    let mut text = String::from("[env]\n");
    let mut i = 0;
    while text.len() < 10 << 20 {
        text.push_str(&format!("K{i} = \"{}\"\n", "v".repeat(40)));
        i += 1;
    }
    let file = write_file(&dir.path().join("ten-mb.toml"), &text, 0o644);
    for caller in Caller::BOTH {
        let started = Instant::now();
        let out = sup(caller, &["run", "--policy", &file, "--", "/bin/true"]);
        let reason = assert_refused(
            &out,
            EXIT_PURPLE,
            &[&file],
            &format!("{caller:?} run --policy ten-mb.toml"),
        );
        // Either a diagnostic at a position, or a refusal naming the size limit.
        let positioned = reason.starts_with(&format!("purple: {file}:"));
        assert!(
            positioned || reason.contains("larger than") || reason.contains("too large"),
            "the reason should point into the file or name the size limit: {reason}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
    let out = sup(Caller::Root, &["policy", "check", &file]);
    match out.status.code() {
        Some(1) => assert_diagnostic(
            stdout(&out).lines().next().unwrap_or(""),
            &file,
            0,
            0,
            &[],
            "check ten-mb",
        ),
        _ => {
            assert_refused(&out, EXIT_PURPLE, &[&file], "policy check ten-mb.toml");
        }
    }
    drop(dir);
    assert_nothing_left(&b, "10 MB policy");
}

/// A policy just under the 1 MiB size cap with one error per line: every
/// error must be listed, promptly (the parser must not be quadratic in the
/// number of errors).
#[test]
fn policy_with_many_errors_is_checked_promptly() {
    if !require_root("policy_with_many_errors_is_checked_promptly") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let mut text = String::from("[resources]\n");
    let mut keys = 0;
    while text.len() < 1_000_000 {
        text.push_str(&format!("k{keys} = 1\n"));
        keys += 1;
    }
    let file = write_file(&dir.path().join("many-errors.toml"), &text, 0o644);
    let what = format!("policy check ({keys} unknown keys, {} bytes)", text.len());
    let out = run_bounded(
        Caller::Root.command(["policy", "check", &file]),
        &what,
        Duration::from_secs(20),
    );
    assert_code(&out, 1, &what);
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), keys, "{what}: every error listed");
    assert_diagnostic(
        listed.lines().last().unwrap_or(""),
        &file,
        keys + 1,
        1,
        &["unknown key"],
        &what,
    );
    drop(dir);
    assert_nothing_left(&b, "many errors");
}

#[test]
fn policy_check_accepts_good_files_silently() {
    if !require_root("policy_check_accepts_good_files_silently") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let good: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("comments", b"# nothing but a comment\n\n"),
        ("bom", b"\xef\xbb\xbf[filesystem]\nsystem = true\n"),
        ("unicode-env", "[env]\n\"\u{202e}\u{1f4a9}\" = \"\u{200b}zero width\"\nLANG = \"C.UTF-8\"\n".as_bytes()),
        (
            "rich",
            b"[filesystem]\nsystem = true\nread_only = [\"/usr:/data\", { source = \"/etc\", destination = \"/e:x\" }]\n\
              tmpfs = [{ path = \"/tmp\", size = \"1G\" }, { path = \"/run\" }]\nworkspace = \"/home/me/project\"\n\
              [resources]\ntimeout = \"5m\"\nmemory = 1048576\n[network]\nmode = \"none\"\n\
              [env]\n\"my.var\" = \"x\\\"y\"\n[syscalls]\naction = \"kill\"\n[landlock]\nmode = \"off\"\n\
              [capabilities]\nadd = [\"chown\", \"NET_BIND_SERVICE\"]\ndrop = [\"CAP_CHOWN\"]\nambient = true\n",
        ),
    ];
    for (name, text) in good {
        let file = write_file(&dir.path().join(format!("{name}.toml")), text, 0o644);
        let out = sup(Caller::Root, &["policy", "check", &file]);
        assert_code(&out, 0, &format!("policy check {name}"));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "policy check {name}: a good file gives no output\n{}",
            show(&out)
        );
    }
    drop(dir);
    assert_nothing_left(&b, "good policies");
}

#[test]
fn policy_show_output_is_a_policy_that_check_accepts() {
    if !require_root("policy_show_output_is_a_policy_that_check_accepts") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let rich = write_file(
        &dir.path().join("rich.toml"),
        "[filesystem]\nread_only = [\"/usr:/data\", { source = \"/etc\", destination = \"/e:x\" }]\n\
         tmpfs = [{ path = \"/tmp\", size = \"1G\" }, { path = \"/run\" }]\n\
         [resources]\ntimeout = \"5m\"\nmemory = \"1G\"\ncpus = 0.5\npids = 64\n\
         [network]\nmode = \"filtered\"\nallow_out = [\"tcp:443\", \"udp:53@192.0.2.0/24\"]\nallow_in = [\"tcp:8080->18080\"]\n\
         [env]\n\"my.var\" = \"x\\\"y\\\\z\\n\"\n\"\u{202e}\" = \"\u{1f4a9}\"\n\
         [syscalls]\ndeny = [\"ptrace\"]\n[capabilities]\nadd = [\"chown\"]\n",
        0o644,
    );
    for (name, args) in [
        ("default", vec!["policy", "show"]),
        ("rich", vec!["policy", "show", "--policy", rich.as_str()]),
    ] {
        let out = sup(Caller::Root, &args);
        let shown = assert_ok(&out, &format!("policy show ({name})"));
        assert!(!shown.is_empty(), "policy show ({name}) printed nothing");
        let file = write_file(
            &dir.path().join(format!("shown-{name}.toml")),
            &shown,
            0o644,
        );
        let out = sup(Caller::Root, &["policy", "check", &file]);
        assert_code(
            &out,
            0,
            &format!("policy check on the output of policy show ({name})\n{shown}"),
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            show(&out)
        );
        // And it is a fixed point: showing it again gives the same text.
        let again = assert_ok(
            &sup(Caller::Root, &["policy", "show", "--policy", &file]),
            "policy show again",
        );
        assert_eq!(
            again, shown,
            "policy show is not stable across a round trip ({name})"
        );
    }
    drop(dir);
    assert_nothing_left(&b, "policy show round trip");
}

// ---------------------------------------------------------------------------
// 2. Bad command-line input.

#[test]
fn bad_flags_are_usage_errors() {
    if !require_root("bad_flags_are_usage_errors") {
        return;
    }
    let b = before();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--ro-bind", "relative/path"],
            &["relative/path", "relative"],
        ),
        (&["--bind", "/a/../b"], &["/a/../b", ".."]),
        (&["--ro-bind", "/usr:rel"], &["rel", "relative"]),
        (&["--ro-bind", ":/x"], &["empty"]),
        (&["--workspace", "work"], &["work", "relative"]),
        (&["--env", "NOEQUALS"], &["NOEQUALS", "KEY=VALUE"]),
        (&["--env", "=value"], &["empty"]),
        (&["--memory", "lots"], &["lots"]),
        (&["--cpus", "0"], &["0.01"]),
        (&["--net", "bogus"], &["bogus"]),
        (&["--timeout", "0s"], &["0s", "between"]),
        (&["--timeout", "banana"], &["banana"]),
        (&["--timeout", "8d"], &["8d"]),
        (&["--pids", "lots"], &["lots"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "/bin/true"]);
        let out = sup(Caller::Root, &args);
        assert_usage_error(&out, needles, &format!("run {}", flags.join(" ")));
    }
    // No command at all.
    assert_usage_error(&sup(Caller::Root, &["run", "--"]), &["required"], "run --");
    assert_usage_error(&sup(Caller::Root, &["run"]), &["required"], "run");
    assert_usage_error(
        &sup(Caller::User, &["run", "--"]),
        &["required"],
        "User: run --",
    );
    // Arguments that are not UTF-8 cannot be passed on faithfully: refused.
    {
        use std::os::unix::ffi::OsStrExt;
        let mut cmd = Caller::Root.command(["run", "--", "/bin/echo"]);
        cmd.arg(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        let out = run_bounded(cmd, "run -- /bin/echo <latin-1>", RUN_LIMIT);
        assert_usage_error(&out, &["UTF-8"], "non-UTF-8 argument");
    }
    // An empty command name is refused by purple-init.
    assert_refused(
        &sup(Caller::Root, &["run", "--", ""]),
        EXIT_PURPLE,
        &["empty"],
        "run -- ''",
    );
    assert_nothing_left(&b, "usage errors");
}

#[test]
fn bind_flags_that_break_the_mount_rules_are_refused() {
    if !require_root("bind_flags_that_break_the_mount_rules_are_refused") {
        return;
    }
    let b = before();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--ro-bind", "/usr:/proc/x"], &["inside /proc"]),
        (&["--ro-bind", "/usr:/"], &["root"]),
        (&["--bind", "/tmp:/dev"], &["/dev"]),
        (
            &["--ro-bind", "/usr:/x", "--ro-bind", "/etc:/x"],
            &["/x is already mounted"],
        ),
        (
            &["--ro-bind", "/usr:/workspace", "--workspace", "/tmp"],
            &["/workspace is already mounted"],
        ),
        (&["--pids", "0"], &["between 1 and"]),
    ];
    for caller in Caller::BOTH {
        for (flags, needles) in cases {
            let mut args = vec!["run"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["--", "/bin/true"]);
            let out = sup(caller, &args);
            assert_refused(
                &out,
                EXIT_PURPLE,
                needles,
                &format!("{caller:?}: run {}", flags.join(" ")),
            );
        }
    }
    assert_nothing_left(&b, "mount rules");
}

#[test]
fn workspace_must_be_a_directory_the_caller_can_use() {
    if !require_root("workspace_must_be_a_directory_the_caller_can_use") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let private = dir.path().join("root-only");
    std::fs::create_dir(&private).unwrap();
    set_mode(&private, 0o700);
    let private = private.to_str().unwrap().to_owned();
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    for caller in Caller::BOTH {
        // The caller's own file, so that access is fine and the type is not.
        let file = write_file(
            &dir.path().join(format!("file-of-{}", caller_uid(caller))),
            "x",
            0o644,
        );
        chown(&file, Some(caller_uid(caller)), None).unwrap();
        let out = sup(caller, &["run", "--workspace", &file, "--", "/bin/true"]);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &[&file, "not a directory"],
            &format!("{caller:?}: --workspace FILE"),
        );
        let out = sup(caller, &["run", "--workspace", &missing, "--", "/bin/true"]);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &[&missing, "No such file"],
            &format!("{caller:?}: --workspace MISSING"),
        );
    }
    let out = sup(
        Caller::User,
        &["run", "--workspace", &private, "--", "/bin/true"],
    );
    assert_refused(
        &out,
        EXIT_PURPLE,
        &[&private, "access"],
        "User: --workspace on a root-owned 0700 dir",
    );
    // A root caller may bind it, but its sandbox runs as nobody (65534),
    // which cannot enter it: refused, saying so.
    let out = sup(
        Caller::Root,
        &["run", "--workspace", &private, "--", "/bin/true"],
    );
    assert_refused(
        &out,
        EXIT_PURPLE,
        &["/workspace", "65534"],
        "Root: --workspace on a root-owned 0700 dir",
    );
    drop(dir);
    assert_nothing_left(&b, "workspace");
}

#[test]
fn user_cannot_bind_what_they_cannot_read() {
    if !require_root("user_cannot_bind_what_they_cannot_read") {
        return;
    }
    let b = before();
    let root_dir = scratch(0);
    let secret = write_file(&root_dir.path().join("secret"), "root only\n", 0o600);
    let secret_dir = root_dir.path().join("secret-dir");
    std::fs::create_dir(&secret_dir).unwrap();
    write_file(&secret_dir.join("inside"), "root only\n", 0o644);
    set_mode(&secret_dir, 0o700);
    let user_dir = scratch(TEST_UID);
    let links = [
        ("link-to-file", Path::new(&secret).to_owned()),
        ("link-to-dir", secret_dir.clone()),
    ];
    for (name, target) in &links {
        let link = user_dir.path().join(name);
        symlink(target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(TEST_UID), Some(TEST_GID)).unwrap();
    }
    let link_file = user_dir
        .path()
        .join("link-to-file")
        .to_str()
        .unwrap()
        .to_owned();
    let link_dir = user_dir
        .path()
        .join("link-to-dir")
        .to_str()
        .unwrap()
        .to_owned();
    let secret_dir = secret_dir.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--ro-bind".into(), format!("{secret}:/data/secret")],
            &secret,
            "read",
        ),
        (
            vec!["--ro-bind".into(), format!("{secret_dir}:/data")],
            &secret_dir,
            "read",
        ),
        (
            vec!["--ro-bind".into(), format!("{link_file}:/data/secret")],
            &link_file,
            "read",
        ),
        (
            vec!["--ro-bind".into(), format!("{link_dir}:/data")],
            &link_dir,
            "read",
        ),
        (
            vec!["--bind".into(), format!("{link_dir}:/data")],
            &link_dir,
            "read-write",
        ),
        (
            vec!["--workspace".into(), link_dir.clone()],
            &link_dir,
            "read-write",
        ),
    ];
    for (flags, path, access) in &cases {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().cloned());
        args.extend(["--".into(), "/bin/cat".into(), "/data/secret".into()]);
        let out = sup(Caller::User, &args);
        let line = assert_refused(
            &out,
            EXIT_PURPLE,
            &[path, access],
            &format!("User: run {}", flags.join(" ")),
        );
        assert!(
            !line.contains("root only"),
            "the secret leaked into the message: {line}"
        );
    }
    // Root may bind them (control), so the refusals above are about the
    // caller. (Its sandbox runs as nobody, so it cannot read them inside.)
    let out = sup(
        Caller::Root,
        &[
            "run",
            "--ro-bind",
            &format!("{link_file}:/data/secret"),
            "--",
            "/bin/sh",
            "-c",
            "test -f /data/secret && echo present",
        ],
    );
    assert_eq!(
        assert_ok(&out, "Root: --ro-bind via the symlink"),
        "present\n"
    );
    drop((root_dir, user_dir));
    assert_nothing_left(&b, "unreadable binds");
}

#[test]
fn host_pseudo_filesystems_cannot_be_bound() {
    if !require_root("host_pseudo_filesystems_cannot_be_bound") {
        return;
    }
    let b = before();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "--ro-bind",
            "/proc:/x",
            &["proc filesystem", "cannot be bound"],
        ),
        (
            "--ro-bind",
            "/proc/self:/x",
            &["proc filesystem", "cannot be bound"],
        ),
        (
            "--ro-bind",
            "/proc/self/status:/x/status",
            &["proc filesystem", "cannot be bound"],
        ),
        ("--ro-bind", "/sys:/sys", &["sysfs", "cannot be bound"]),
        ("--ro-bind", "/sys/kernel:/x", &["sysfs", "cannot be bound"]),
        ("--ro-bind", "/dev/pts:/x", &["devpts", "cannot be bound"]),
        // Read-write: refused for lack of write access or for the filesystem.
        ("--bind", "/proc:/x", &["/proc"]),
        ("--workspace", "/proc", &["/proc"]),
    ];
    for caller in Caller::BOTH {
        for (flag, value, needles) in cases {
            let out = sup(caller, &["run", flag, value, "--", "/bin/true"]);
            assert_refused(
                &out,
                EXIT_PURPLE,
                needles,
                &format!("{caller:?}: run {flag} {value}"),
            );
        }
    }
    // A cgroup filesystem, wherever this host mounts one.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fs = right.split_whitespace().next()?;
        (fs == "cgroup2" || fs == "cgroup")
            .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
    });
    match cgroup {
        Some(path) => {
            let out = sup(
                Caller::User,
                &[
                    "run",
                    "--ro-bind",
                    &format!("{path}:/cg"),
                    "--",
                    "/bin/true",
                ],
            );
            assert_refused(
                &out,
                EXIT_PURPLE,
                &["cgroup", "cannot be bound"],
                &format!("User: --ro-bind {path}:/cg"),
            );
        }
        None if in_ci() => panic!("no cgroup filesystem mounted on this CI host"),
        None => eprintln!(
            "NOTE host_pseudo_filesystems_cannot_be_bound: no cgroup mount here; that case not run"
        ),
    }
    assert_nothing_left(&b, "pseudo filesystems");
}

/// Binding a directory that has host pseudo-filesystems mounted below it
/// must not bring them into the sandbox: either the bind is refused, or the
/// sandbox sees no host proc, sysfs, cgroupfs or devpts through it.
#[test]
fn pseudo_filesystems_below_a_bind_stay_out() {
    if !require_root("pseudo_filesystems_below_a_bind_stay_out") {
        return;
    }
    let b = before();
    let probe = "for p in /h/proc/1/status /h/proc/self/status /h/sys/kernel /h/sys/fs/cgroup/cgroup.procs \
                 /h/sys/fs/cgroup/unified/cgroup.procs /h/sys/fs/cgroup/pids/cgroup.procs /h/dev/pts/ptmx \
                 /h/fs/cgroup/unified/cgroup.procs /h/fs/cgroup/cgroup.procs /h/unified/cgroup.procs \
                 /h/pids/cgroup.procs /h/cgroup.procs /h/pts/ptmx /h/kernel; do \
                 [ -e \"$p\" ] && echo \"EXPOSED $p\"; done; true";
    let mut exposed = Vec::new();
    for caller in Caller::BOTH {
        for source in ["/", "/sys/fs", "/sys/fs/cgroup", "/dev"] {
            if !Path::new(source).exists() {
                continue;
            }
            let out = sup(
                caller,
                &[
                    "run",
                    "--ro-bind",
                    &format!("{source}:/h"),
                    "--",
                    "/bin/sh",
                    "-c",
                    probe,
                ],
            );
            let ctx = format!("{caller:?}: run --ro-bind {source}:/h");
            if out.status.code() == Some(EXIT_PURPLE) {
                one_purple_line(&out, &[source], &ctx);
                continue;
            }
            assert_code(&out, 0, &ctx);
            let seen = stdout(&out);
            if !seen.is_empty() {
                exposed.push(format!("{ctx}:\n{seen}"));
            }
        }
    }
    assert!(
        exposed.is_empty(),
        "host pseudo-filesystems mounted below a bind source came into the sandbox:\n{}",
        exposed.join("\n")
    );
    assert_nothing_left(&b, "submounts");
}

#[test]
fn sockets_fifos_and_devices_cannot_be_bound() {
    if !require_root("sockets_fifos_and_devices_cannot_be_bound") {
        return;
    }
    let b = before();
    let dir = scratch(TEST_UID);
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let sock = dir.path().join("sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    for p in [&fifo, &sock] {
        std::os::unix::fs::lchown(p, Some(TEST_UID), Some(TEST_GID)).unwrap();
        set_mode(p, 0o666);
    }
    let fifo = fifo.to_str().unwrap().to_owned();
    let sock = sock.to_str().unwrap().to_owned();
    for caller in Caller::BOTH {
        for (flag, src) in [
            ("--ro-bind", fifo.as_str()),
            ("--bind", fifo.as_str()),
            ("--ro-bind", sock.as_str()),
            ("--ro-bind", "/dev/null"),
            ("--bind", "/dev/null"),
        ] {
            let out = sup(
                caller,
                &["run", flag, &format!("{src}:/mnt/x"), "--", "/bin/true"],
            );
            assert_refused(
                &out,
                EXIT_PURPLE,
                &[src, "not a directory or regular file"],
                &format!("{caller:?}: run {flag} {src}"),
            );
        }
    }
    drop(dir);
    assert_nothing_left(&b, "special files");
}

#[test]
fn env_flag_splits_at_the_first_equals_sign() {
    if !require_root("env_flag_splits_at_the_first_equals_sign") {
        return;
    }
    let b = before();
    for caller in Caller::BOTH {
        let out = sup(
            caller,
            &[
                "run",
                "--env",
                "A=B=C",
                "--env",
                "EMPTY=",
                "--",
                "/bin/sh",
                "-c",
                "printf '%s|%s|%s' \"$A\" \"$EMPTY\" \"${EMPTY+set}\"",
            ],
        );
        assert_eq!(
            assert_ok(&out, &format!("{caller:?}: --env A=B=C")),
            "B=C||set"
        );
    }
    assert_nothing_left(&b, "env");
}

/// A filtered network with no purple-netd to enforce it does not run
/// without it; a rule outside the admin's bounds is refused before that.
#[test]
fn filtered_network_without_netd_fails_closed() {
    if !require_root("filtered_network_without_netd_fails_closed") {
        return;
    }
    let b = before();
    let missing = tempfile::tempdir().unwrap();
    let socket = missing.path().join("netd.sock");
    let out = sup_env(
        Caller::Root,
        &[("PURPLE_NETD_SOCKET", socket.to_str().unwrap())],
        &[
            "run", "--net", "filtered", "--", "/bin/sh", "-c", "echo RAN",
        ],
    );
    assert_refused(
        &out,
        EXIT_PURPLE,
        &["purple-netd", "netd.sock"],
        "Root: run --net filtered without purple-netd",
    );
    // An unprivileged caller may not publish below the admin's minimum
    // host port (1024 by default): refused before purple-netd is asked.
    let out = sup(
        Caller::User,
        &[
            "run",
            "--allow-in",
            "tcp:80->80",
            "--",
            "/bin/sh",
            "-c",
            "echo RAN",
        ],
    );
    assert_refused(
        &out,
        EXIT_PURPLE,
        &["host port 80", "min_host_port"],
        "User: --allow-in tcp:80->80",
    );
    // `--net none` stays what it was.
    for caller in Caller::BOTH {
        assert_eq!(
            assert_ok(
                &sup(caller, &["run", "--net", "none", "--", "/bin/echo", "ok"]),
                "--net none"
            ),
            "ok\n"
        );
    }
    assert_nothing_left(&b, "filtered network");
}

// ---------------------------------------------------------------------------
// 3. Commands that cannot run.

#[test]
fn missing_and_unexecutable_commands() {
    if !require_root("missing_and_unexecutable_commands") {
        return;
    }
    let b = before();
    for caller in Caller::BOTH {
        let ws = scratch(caller_uid(caller));
        write_file(&ws.path().join("notes.txt"), "not a program\n", 0o644);
        write_file(&ws.path().join("script.sh"), "#!/bin/sh\necho hi\n", 0o644);
        chown(ws.path().join("notes.txt"), Some(caller_uid(caller)), None).unwrap();
        let w = ws.path().to_str().unwrap();
        let cases: &[(&[&str], i32, &[&str])] = &[
            (
                &["/nonexistent/cmd"],
                127,
                &["/nonexistent/cmd", "not found"],
            ),
            (
                &["no-such-command-anywhere"],
                127,
                &["no-such-command-anywhere", "not found"],
            ),
            (&["/etc/hostname"], 126, &["/etc/hostname"]),
            (&["/etc"], 126, &["/etc"]),
            (&["/workspace/notes.txt"], 126, &["/workspace/notes.txt"]),
            (&["/workspace/script.sh"], 126, &["/workspace/script.sh"]),
        ];
        for (cmd, code, needles) in cases {
            let mut args = vec!["run", "--workspace", w, "--"];
            args.extend_from_slice(cmd);
            let out = sup(caller, &args);
            assert_refused(
                &out,
                *code,
                needles,
                &format!("{caller:?}: run -- {}", cmd.join(" ")),
            );
        }
    }
    assert_nothing_left(&b, "commands");
}

// ---------------------------------------------------------------------------
// 4. Closed standard streams.

/// Runs `purple-supervisor ARGS` as `caller` through `/bin/sh -c 'exec
/// purple-supervisor "$@" REDIRS'`, so it starts with some of 0-2 closed.
fn sup_with_closed(caller: Caller, redirs: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("exec \"$0\" \"$@\" {redirs}"))
        .arg(caller.supervisor())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    if caller == Caller::User {
        cmd.uid(TEST_UID).gid(TEST_GID).current_dir("/");
    }
    let what = format!("{caller:?}: purple-supervisor {} {redirs}", args.join(" "));
    // stdin is /dev/null unless closed by the redirection.
    run_bounded(cmd, &what, RUN_LIMIT)
}

#[test]
fn closed_standard_streams_become_dev_null() {
    if !require_root("closed_standard_streams_become_dev_null") {
        return;
    }
    let b = before();
    for caller in Caller::BOTH {
        let ctx = |s: &str| format!("{caller:?}: {s}");
        // stdin closed: the sandbox gets /dev/null, and reading it is EOF.
        let out = sup_with_closed(caller, "<&-", &["run", "--", "/bin/true"]);
        assert_ok(&out, &ctx("run -- true <&-"));
        let out = sup_with_closed(
            caller,
            "<&-",
            &[
                "run",
                "--",
                "/bin/sh",
                "-c",
                "cat; echo \"eof:$?\"; t=$(readlink /proc/$$/fd/0); echo \"$t\"",
            ],
        );
        assert_eq!(assert_ok(&out, &ctx("cat <&-")), "eof:0\n/dev/null\n");
        // stdout closed: writes succeed into /dev/null.
        let out = sup_with_closed(caller, ">&-", &["run", "--", "/bin/true"]);
        assert_ok(&out, &ctx("run -- true >&-"));
        let out = sup_with_closed(
            caller,
            ">&-",
            &[
                "run",
                "--",
                "/bin/sh",
                "-c",
                "echo hello; echo \"wrote:$?\" >&2; t=$(readlink /proc/$$/fd/1); echo \"$t\" >&2",
            ],
        );
        assert_code(&out, 0, &ctx("echo >&-"));
        assert_eq!(stderr(&out), "wrote:0\n/dev/null\n", "{}", ctx("echo >&-"));
        // All three closed: still runs; exit statuses still come through.
        let out = sup_with_closed(caller, "<&- >&- 2>&-", &["run", "--", "/bin/true"]);
        assert_code(&out, 0, &ctx("run -- true <&- >&- 2>&-"));
        let out = sup_with_closed(
            caller,
            "<&- >&- 2>&-",
            &["run", "--", "/bin/sh", "-c", "exit 7"],
        );
        assert_code(&out, 7, &ctx("exit 7 with 0-2 closed"));
        let out = sup_with_closed(caller, "2>&-", &["run", "--", "/nonexistent"]);
        assert_code(&out, 127, &ctx("missing command with stderr closed"));
        let out = sup_with_closed(
            caller,
            "<&- >&- 2>&-",
            &["run", "--net", "filtered", "--", "/bin/true"],
        );
        assert_code(&out, EXIT_PURPLE, &ctx("refusal with 0-2 closed"));
    }
    assert_nothing_left(&b, "closed streams");
}

// ---------------------------------------------------------------------------
// 5. Huge argument lists.

#[test]
fn huge_argument_lists() {
    if !require_root("huge_argument_lists") {
        return;
    }
    let b = before();
    let arg = "a".repeat(99);
    for caller in Caller::BOTH {
        // ~1.5 MB: under the kernel's ARG_MAX, over the 1 MiB request limit.
        let mut args: Vec<&str> = vec!["run", "--", "/bin/sh", "-c", "echo $#", "sh"];
        args.extend((0..15_000).map(|_| arg.as_str()));
        let out = sup(caller, &args);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &["too large"],
            &format!("{caller:?}: 1.5 MB of arguments"),
        );
        // ~500 KB: runs, and the sandbox sees every argument.
        let mut args: Vec<&str> = vec!["run", "--", "/bin/sh", "-c", "echo $#", "sh"];
        args.extend((0..5_000).map(|_| arg.as_str()));
        let out = sup(caller, &args);
        assert_eq!(
            assert_ok(&out, &format!("{caller:?}: 500 KB of arguments")),
            "5000\n"
        );
        // Many tiny arguments: over the argument-count limit.
        let mut args: Vec<&str> = vec!["run", "--", "/bin/true"];
        args.extend((0..70_000).map(|_| "x"));
        let out = sup(caller, &args);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &["65536"],
            &format!("{caller:?}: 70000 arguments"),
        );
    }
    assert_nothing_left(&b, "huge argv");
}

// ---------------------------------------------------------------------------
// 6. purple-init attacked directly, as the test user.

/// Our own setuid-root copy of purple-init in a 0755 directory, removed on drop.
struct SetuidInit {
    dir: tempfile::TempDir,
}

impl SetuidInit {
    fn new() -> SetuidInit {
        let dir = scratch(0);
        let path = dir.path().join("purple-init");
        std::fs::copy(build_dir().join("purple-init"), &path).expect("copy purple-init");
        chown(&path, Some(0), Some(0)).unwrap();
        set_mode(&path, 0o4755);
        SetuidInit { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("purple-init")
    }

    /// Starts it as TEST_UID with `fd3` (or nothing) at fd 3.
    fn spawn(&self, fd3: Option<RawFd>, what: &str) -> Proc {
        let mut cmd = Command::new(self.path());
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .uid(TEST_UID)
            .gid(TEST_GID)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs between fork and exec and only calls
        // dup2, fcntl and close, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                match fd3 {
                    Some(3) => {
                        if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Some(fd) => {
                        if libc::dup2(fd, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    None => {
                        libc::close(3);
                    }
                }
                Ok(())
            });
        }
        spawn(&mut cmd, what)
    }
}

const MAGIC: &[u8; 4] = b"PRPL";
/// purple_common::protocol::PROTOCOL_VERSION, which this file checks from
/// the outside (a frame of any other version must be refused).
const WIRE_VERSION: u32 = 4;

/// Pieces of a request, each sent with its own SCM_RIGHTS fds.
type Chunks = Vec<(Vec<u8>, Vec<RawFd>)>;

fn header(magic: &[u8; 4], version: u32, len: u32) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// sendmsg with `fds` attached as SCM_RIGHTS (at most 253 per call: the
/// kernel's SCM_MAX_FD).
fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let data_len = u32::try_from(std::mem::size_of_val(fds)).unwrap();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, 8-aligned bytes,
        // enough for one cmsghdr carrying fds.len() descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg and everything it points to live across the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads until EOF, a reset, or `limit`.
fn read_reply(sock: &mut UnixStream, limit: Duration) -> Vec<u8> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    reply
}

const OUTCOMES: [&str; 10] = [
    "exited",
    "signaled",
    "timeout",
    "interrupted",
    "not_found",
    "not_executable",
    "refused",
    "setup_failed",
    "seccomp_violation",
    "oom",
];

#[derive(Debug)]
struct Reply {
    command: Vec<String>,
    status: String,
    exit_code: i64,
    message: Option<String>,
}

/// Decodes the start of an ExitReport frame (bincode 2, standard config:
/// varint integers, zigzag for signed, enum variants as varint indices).
/// The exit report in purple-init's reply frames: an `InitReply` each, at
/// most one `Started` (variant 0, skipped) and then `Finished` (variant 1).
fn decode_reply(bytes: &[u8]) -> Result<Reply, String> {
    let mut rest = bytes;
    loop {
        if rest.len() < 12 || &rest[..4] != MAGIC {
            return Err(format!(
                "not a PRPL frame: {:?}",
                &rest[..rest.len().min(16)]
            ));
        }
        let version = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        if version != WIRE_VERSION || len > rest.len() - 12 {
            return Err(format!(
                "bad reply header: version {version}, length {len}, {} bytes left",
                rest.len() - 12
            ));
        }
        let (frame, next) = rest.split_at(12 + len);
        match frame.get(12) {
            Some(0) => rest = next,
            Some(1) if next.is_empty() => return decode_report(&frame[13..]),
            Some(1) => return Err(format!("{} bytes after the report", next.len())),
            other => return Err(format!("unknown reply variant {other:?}")),
        }
    }
}

/// An `ExitReport`'s leading fields, decoded from bincode by hand.
fn decode_report(payload: &[u8]) -> Result<Reply, String> {
    struct R<'a>(&'a [u8], usize);
    impl R<'_> {
        fn byte(&mut self) -> Result<u8, String> {
            let b = *self.0.get(self.1).ok_or("reply truncated")?;
            self.1 += 1;
            Ok(b)
        }
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let s = self.0.get(self.1..self.1 + n).ok_or("reply truncated")?;
            self.1 += n;
            Ok(s)
        }
        fn varint(&mut self) -> Result<u64, String> {
            Ok(match self.byte()? {
                b @ 0..=250 => u64::from(b),
                251 => u64::from(u16::from_le_bytes(self.take(2)?.try_into().unwrap())),
                252 => u64::from(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
                253 => u64::from_le_bytes(self.take(8)?.try_into().unwrap()),
                b => return Err(format!("unsupported varint tag {b}")),
            })
        }
        fn signed(&mut self) -> Result<i64, String> {
            let z = self.varint()?;
            Ok((z >> 1) as i64 ^ -((z & 1) as i64))
        }
        fn string(&mut self) -> Result<String, String> {
            let n = self.varint()? as usize;
            String::from_utf8(self.take(n)?.to_vec()).map_err(|e| e.to_string())
        }
    }
    let mut r = R(payload, 0);
    let _schema = r.varint()?;
    let _id = r.string()?;
    let n = r.varint()? as usize;
    let command = (0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
    let status = OUTCOMES
        .get(r.varint()? as usize)
        .ok_or("unknown status")?
        .to_string();
    let exit_code = r.signed()?;
    if r.byte()? == 1 {
        r.signed()?;
    }
    let _wall = r.varint()?;
    let message = if r.byte()? == 1 {
        Some(r.string()?)
    } else {
        None
    };
    Ok(Reply {
        command,
        status,
        exit_code,
        message,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    /// shutdown(SHUT_WR): the request is over, the reply can still come.
    HalfClose,
    /// close: nowhere to send the reply.
    Close,
    /// Keep the connection open and send nothing more.
    Stall,
}

/// Sends `chunks` (each with its fds) to a fresh purple-init as the test
/// user, ends the connection as told, and returns (reply, init's output).
fn attack(
    init: &SetuidInit,
    name: &str,
    chunks: &[(Vec<u8>, Vec<RawFd>)],
    end: End,
    limit: Duration,
) -> (Vec<u8>, Output) {
    let started = Instant::now();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut proc = init.spawn(Some(theirs.as_raw_fd()), &format!("purple-init ({name})"));
    drop(theirs);
    for (bytes, fds) in chunks {
        let mut sent = 0;
        let mut first = true;
        while sent < bytes.len() || (first && bytes.is_empty() && !fds.is_empty()) {
            let attach: &[RawFd] = if first { fds } else { &[] };
            match send_with_fds(&ours, &bytes[sent..], attach) {
                Ok(n) => sent += n,
                // purple-init may refuse and hang up before we are done.
                Err(_) => break,
            }
            first = false;
        }
    }
    let mut ours = Some(ours);
    match end {
        End::HalfClose => {
            let _ = ours.as_ref().unwrap().shutdown(Shutdown::Write);
        }
        End::Close => ours = None,
        End::Stall => {}
    }
    let reply = match ours.as_mut() {
        Some(s) => read_reply(s, limit),
        None => Vec::new(),
    };
    // The reply (or its absence) came within `limit`; purple-init must be
    // gone right after.
    if reply.is_empty() && end == End::Stall {
        proc.what = format!(
            "{} (no reply within {limit:?} of a stalled request)",
            proc.what
        );
    }
    let out = proc.output(limit.saturating_sub(started.elapsed()) + Duration::from_secs(2));
    (reply, out)
}

fn assert_init_refused(name: &str, reply: &[u8], out: &Output, needles: &[&str]) {
    assert_code(out, EXIT_PURPLE, &format!("purple-init ({name})"));
    let report = decode_reply(reply).unwrap_or_else(|e| {
        panic!(
            "purple-init ({name}): no readable report: {e}\n{}",
            show(out)
        )
    });
    assert_eq!(report.status, "refused", "purple-init ({name}): {report:?}");
    assert_eq!(
        report.exit_code,
        i64::from(EXIT_PURPLE),
        "purple-init ({name}): {report:?}"
    );
    let message = report.message.clone().unwrap_or_default();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "purple-init ({name}): the reason must be one line: {report:?}"
    );
    for needle in needles {
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "purple-init ({name}): the reason should mention {needle:?}: {message:?}"
        );
    }
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "purple-init ({name}) answered in the report; its own output should be empty\n{}",
        show(out)
    );
}

#[test]
fn init_without_a_request_socket_refuses() {
    if !require_root("init_without_a_request_socket_refuses") {
        return;
    }
    let b = before();
    let init = SetuidInit::new();
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let (dgram, _dgram_peer) = UnixDatagram::pair().unwrap();
    let (pipe_r, pipe_w) = {
        let mut fds = [0; 2];
        // SAFETY: fds is valid for two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just created both; we own them.
        unsafe {
            (
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
            )
        }
    };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cases: [(&str, Option<RawFd>); 5] = [
        ("no fd 3", None),
        ("fd 3 a regular file", Some(file.as_raw_fd())),
        ("fd 3 a datagram socket", Some(dgram.as_raw_fd())),
        ("fd 3 a pipe", Some(pipe_r.as_raw_fd())),
        ("fd 3 a TCP socket", Some(tcp.as_raw_fd())),
    ];
    for (name, fd3) in cases {
        let out = init
            .spawn(fd3, &format!("purple-init ({name})"))
            .output(INIT_LIMIT);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &["fd 3", "unix stream socket"],
            &format!("purple-init ({name})"),
        );
    }
    // A unix stream socket that cannot carry a request: a listening socket,
    // and one whose peer is already gone. No report can be delivered; it
    // must still end at once with 125 and say why on stderr.
    let dir = scratch(0);
    let listener = UnixListener::bind(dir.path().join("listen")).unwrap();
    let out = init
        .spawn(Some(listener.as_raw_fd()), "purple-init (listening socket)")
        .output(INIT_LIMIT);
    assert_refused(
        &out,
        EXIT_PURPLE,
        &[],
        "purple-init (fd 3 a listening socket)",
    );
    let (gone, theirs) = UnixStream::pair().unwrap();
    drop(gone);
    let out = init
        .spawn(Some(theirs.as_raw_fd()), "purple-init (peer gone)")
        .output(INIT_LIMIT);
    assert_refused(
        &out,
        EXIT_PURPLE,
        &[],
        "purple-init (fd 3 with its peer closed)",
    );
    drop((pipe_w, theirs, listener, dir, init));
    assert_nothing_left(&b, "init without socket");
}

#[test]
fn init_refuses_malformed_frames() {
    if !require_root("init_refuses_malformed_frames") {
        return;
    }
    let b = before();
    let init = SetuidInit::new();
    let one = |bytes: Vec<u8>| vec![(bytes, Vec::new())];
    let with = |h: Vec<u8>, payload: &[u8]| {
        let mut v = h;
        v.extend_from_slice(payload);
        v
    };
    // A payload that claims a 2^64-element sequence straight away.
    let mut hostile_len = vec![0u8, 253];
    hostile_len.extend_from_slice(&u64::MAX.to_le_bytes());
    hostile_len.extend_from_slice(&[0; 22]);
    let cases: Vec<(&str, Chunks, &[&str])> = vec![
        (
            "garbage text",
            one(b"this is not a Purple frame at all, just text\n".to_vec()),
            &["magic"],
        ),
        ("random bytes", one(noise(4096, 0x5eed)), &["magic"]),
        ("nothing, then EOF", one(Vec::new()), &["closed"]),
        (
            "truncated header",
            one(b"PRPL\x01\x00".to_vec()),
            &["closed"],
        ),
        (
            "wrong magic",
            one(with(header(b"XXXX", 1, 10), &[0; 10])),
            &["magic"],
        ),
        (
            "lowercase magic",
            one(with(header(b"prpl", 1, 10), &[0; 10])),
            &["magic"],
        ),
        (
            "the next version",
            one(with(header(MAGIC, WIRE_VERSION + 1, 10), &[0; 10])),
            &["version 5"],
        ),
        (
            "the previous version",
            one(with(header(MAGIC, WIRE_VERSION - 1, 10), &[0; 10])),
            &["version 3"],
        ),
        (
            "version 0",
            one(with(header(MAGIC, 0, 10), &[0; 10])),
            &["version 0"],
        ),
        (
            "version u32::MAX",
            one(with(header(MAGIC, u32::MAX, 10), &[0; 10])),
            &["version 4294967295"],
        ),
        (
            "length 0xFFFFFFFF",
            one(header(MAGIC, WIRE_VERSION, u32::MAX)),
            &["4294967295", "limit"],
        ),
        (
            "length 1 MiB + 1",
            one(header(MAGIC, WIRE_VERSION, (1 << 20) + 1)),
            &["limit"],
        ),
        (
            "truncated payload",
            one(with(header(MAGIC, WIRE_VERSION, 1000), &[0; 100])),
            &["truncated", "100 of 1000"],
        ),
        (
            "empty payload",
            one(header(MAGIC, WIRE_VERSION, 0)),
            &["malformed"],
        ),
        (
            "random payload",
            one(with(header(MAGIC, WIRE_VERSION, 4096), &noise(4096, 42))),
            &["malformed"],
        ),
        (
            "0xFF payload",
            one(with(header(MAGIC, WIRE_VERSION, 64), &[0xFF; 64])),
            &["malformed"],
        ),
        (
            "hostile length inside payload",
            one(with(
                header(MAGIC, WIRE_VERSION, hostile_len.len() as u32),
                &hostile_len,
            )),
            &["malformed"],
        ),
        (
            "header byte by byte",
            header(MAGIC, 7, 0)
                .into_iter()
                .map(|b| (vec![b], Vec::new()))
                .collect(),
            &["version 7"],
        ),
    ];
    for (name, chunks, needles) in &cases {
        let (reply, out) = attack(&init, name, chunks, End::HalfClose, INIT_LIMIT);
        assert_init_refused(name, &reply, &out, needles);
        let report = decode_reply(&reply).unwrap();
        assert!(
            report.command.is_empty(),
            "purple-init ({name}): nothing was decoded, yet: {report:?}"
        );
    }
    // Truncated payload, then a full close: no one to answer. It must still
    // end promptly with 125 and one line on stderr.
    let (_, out) = attack(
        &init,
        "truncated then closed",
        &one(with(header(MAGIC, WIRE_VERSION, 1000), &[0; 100])),
        End::Close,
        INIT_LIMIT,
    );
    assert_code(
        &out,
        EXIT_PURPLE,
        "purple-init (truncated payload, then closed)",
    );
    assert!(stderr(&out).lines().count() <= 1, "{}", show(&out));
    assert!(
        stderr(&out).lines().all(|l| l.starts_with("purple: ")),
        "{}",
        show(&out)
    );
    drop(init);
    assert_nothing_left(&b, "malformed frames");
}

/// A pipe whose write end we hand out as SCM_RIGHTS: once every copy is
/// closed, the read end sees EOF.
fn pipe_witness() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is valid for two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both; we own them.
    unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    }
}

/// True when every write end of the pipe is closed within `limit`.
fn all_copies_closed(read_end: &OwnedFd, limit: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: read_end.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as libc::c_int) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}

#[test]
fn init_refuses_requests_with_many_descriptors() {
    if !require_root("init_refuses_requests_with_many_descriptors") {
        return;
    }
    let b = before();
    let init = SetuidInit::new();
    // The kernel takes at most 253 fds per sendmsg, so a header sent in
    // pieces carries them; the payload (zeros) is not a valid request.
    for (count, pieces) in [(300usize, 2usize), (330, 2), (1012, 4)] {
        let (read_end, write_end) = pipe_witness();
        let per = count / pieces;
        let fds = vec![write_end.as_raw_fd(); per];
        let head = header(MAGIC, WIRE_VERSION, 16);
        let step = 12 / pieces;
        let mut chunks: Vec<(Vec<u8>, Vec<RawFd>)> = (0..pieces)
            .map(|i| (head[i * step..(i + 1) * step].to_vec(), fds.clone()))
            .collect();
        chunks.push((vec![0; 16], Vec::new()));
        let name = format!("{count} fds attached");
        let (reply, out) = attack(&init, &name, &chunks, End::HalfClose, INIT_LIMIT);
        drop(write_end);
        assert!(
            all_copies_closed(&read_end, Duration::from_secs(5)),
            "{name}: a copy of an attached fd is still open somewhere"
        );
        // Over the limit in total (counted across every recvmsg) is refused
        // as such; under it, the zero payload is what is refused.
        let reason = if count > 320 {
            "too many file descriptors"
        } else {
            "malformed"
        };
        assert_init_refused(&name, &reply, &out, &[reason]);
    }
    drop(init);
    assert_nothing_left(&b, "many fds");
}

/// A caller that sends half a request and then neither sends more nor
/// hangs up must not keep a setuid-root purple-init alive forever. (A
/// supervisor writes its whole request at once, so a short read deadline
/// costs nothing.) Expected: refused within 15 s.
#[test]
fn init_gives_up_on_a_stalled_request() {
    if !require_root("init_gives_up_on_a_stalled_request") {
        return;
    }
    let b = before();
    let init = SetuidInit::new();
    let mut head = header(MAGIC, WIRE_VERSION, 1000);
    head.extend_from_slice(&[0; 100]);
    let (reply, out) = attack(
        &init,
        "stalled request",
        &[(head, Vec::new())],
        End::Stall,
        Duration::from_secs(15),
    );
    assert_init_refused("stalled request", &reply, &out, &[]);
    drop(init);
    assert_nothing_left(&b, "stalled request");
}

/// A stand-in purple-init that records the request frame the real
/// supervisor sends (and the paths of the fds attached), then exits.
const RECORDING_INIT: &str = r#"#!/usr/bin/python3
import array, json, os, socket, struct
s = socket.socket(fileno=3)
fds, data = [], b""
while len(data) < 12:
    msg, anc, _, _ = s.recvmsg(12 - len(data), socket.CMSG_SPACE(400 * 4))
    for _, _, cdata in anc:
        a = array.array("i")
        a.frombytes(cdata[: len(cdata) - len(cdata) % 4])
        fds.extend(a)
    if not msg:
        break
    data += msg
n = struct.unpack("<I", data[8:12])[0]
while len(data) < 12 + n:
    chunk = s.recv(12 + n - len(data))
    if not chunk:
        break
    data += chunk
paths = [os.readlink("/proc/self/fd/%d" % fd) for fd in fds]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "captured.json"), "w") as f:
    json.dump({"frame": data.hex(), "paths": paths}, f)
"#;

/// The request frame the real supervisor builds for `args`, and the paths
/// of the descriptors it attaches, in order.
fn capture_request(args: &[&str]) -> (Vec<u8>, Vec<String>) {
    let dir = scratch(0);
    std::fs::copy(
        build_dir().join("purple-supervisor"),
        dir.path().join("purple-supervisor"),
    )
    .unwrap();
    write_file(&dir.path().join("purple-init"), RECORDING_INIT, 0o755);
    let mut cmd = Command::new(dir.path().join("purple-supervisor"));
    cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    let out = run_bounded(
        cmd,
        "purple-supervisor with a recording purple-init",
        RUN_LIMIT,
    );
    let captured = dir.path().join("captured.json");
    assert!(
        captured.exists(),
        "the recording purple-init captured nothing\n{}",
        show(&out)
    );
    let json = read_report(&captured);
    let hex = json["frame"].as_str().unwrap();
    let frame = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let paths = json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    (frame, paths)
}

fn open_path(path: &str) -> OwnedFd {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: c is a valid C string; the result is checked below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    // SAFETY: open just returned this descriptor; we own it.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
}

fn reframe(payload: &[u8]) -> Vec<u8> {
    let mut frame = header(MAGIC, WIRE_VERSION, u32::try_from(payload.len()).unwrap());
    frame.extend_from_slice(payload);
    frame
}

/// The payload with the *last* occurrence of `from` replaced (the mounts
/// come after the policy and argv in a SandboxRequest).
fn replace_last(payload: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = payload
        .windows(from.len())
        .rposition(|w| w == from)
        .expect("pattern in the captured request");
    [&payload[..at], to, &payload[at + from.len()..]].concat()
}

/// A user who skips the supervisor can send purple-init any request bytes
/// and any descriptors it can open. Starting from a real request (recorded
/// from the real supervisor), every tampered variant must be refused: init
/// re-checks each fd as the caller and each mount destination itself.
#[test]
fn init_rechecks_a_tampered_request() {
    if !require_root("init_rechecks_a_tampered_request") {
        return;
    }
    let b = before();
    if !Path::new("/usr/bin/python3").exists() {
        assert!(
            !in_ci(),
            "python3 is needed to record a request and CI must have it"
        );
        eprintln!("SKIP init_rechecks_a_tampered_request: no /usr/bin/python3 to record a request");
        return;
    }
    let files = scratch(0);
    let public = files.path().join("public");
    std::fs::create_dir(&public).unwrap();
    set_mode(&public, 0o755);
    let private = files.path().join("private");
    std::fs::create_dir(&private).unwrap();
    set_mode(&private, 0o700);
    let policy = write_file(
        &files.path().join("policy.toml"),
        format!(
            "[filesystem]\nread_only = [\"{}:/probe\"]\n",
            public.display()
        ),
        0o644,
    );
    let (frame, paths) = capture_request(&["run", "--policy", &policy, "--", "/bin/true"]);
    assert_eq!(
        paths.last().map(String::as_str),
        public.to_str(),
        "the bind comes last: {paths:?}"
    );
    let payload = frame[12..].to_vec();
    let real: Vec<OwnedFd> = paths.iter().map(|p| open_path(p)).collect();
    let raw = |fds: &[OwnedFd]| fds.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>();
    let init = SetuidInit::new();

    // Control: replayed untouched by the test user, it runs.
    let (reply, out) = attack(
        &init,
        "replayed request",
        &[(frame.clone(), raw(&real))],
        End::HalfClose,
        INIT_LIMIT,
    );
    let report = decode_reply(&reply).unwrap_or_else(|e| panic!("control: {e}\n{}", show(&out)));
    assert_eq!(
        (report.status.as_str(), report.exit_code),
        ("exited", 0),
        "control: {report:?}\n{}",
        show(&out)
    );

    // The last fd swapped for one the user may hold but not read, or one on
    // a host pseudo-filesystem.
    for (name, swap, needles) in [
        (
            "fd of a root-only directory",
            private.to_str().unwrap(),
            &["cannot read"][..],
        ),
        ("fd of /proc", "/proc", &["proc"][..]),
        ("fd of /sys/kernel", "/sys/kernel", &["sysfs"][..]),
    ] {
        let mut fds = raw(&real);
        let evil = open_path(swap);
        *fds.last_mut().unwrap() = evil.as_raw_fd();
        let (reply, out) = attack(
            &init,
            name,
            &[(frame.clone(), fds)],
            End::HalfClose,
            INIT_LIMIT,
        );
        assert_init_refused(name, &reply, &out, needles);
    }

    // The bind made writable.
    let tampered = reframe(&replace_last(
        &payload,
        b"\x06/probe\x00",
        b"\x06/probe\x01",
    ));
    let (reply, out) = attack(
        &init,
        "writable flag set",
        &[(tampered, raw(&real))],
        End::HalfClose,
        INIT_LIMIT,
    );
    assert_init_refused("writable flag set", &reply, &out, &["read and write"]);

    // Descriptor count and indices that do not match the mounts.
    let mut fewer = raw(&real);
    fewer.pop();
    let (reply, out) = attack(
        &init,
        "one fd missing",
        &[(frame.clone(), fewer)],
        End::HalfClose,
        INIT_LIMIT,
    );
    assert_init_refused("one fd missing", &reply, &out, &["file descriptors"]);
    let last_index = u8::try_from(paths.len() - 1).unwrap();
    assert!(last_index < 251);
    let tampered = reframe(&replace_last(
        &payload,
        &[last_index, 6, b'/', b'p', b'r', b'o', b'b', b'e'],
        b"\x00\x06/probe",
    ));
    let (reply, out) = attack(
        &init,
        "fd index used twice",
        &[(tampered, raw(&real))],
        End::HalfClose,
        INIT_LIMIT,
    );
    assert_init_refused("fd index used twice", &reply, &out, &["fd 0"]);
    let null = open_path("/dev/null");
    let mut many = raw(&real);
    many.resize(330, null.as_raw_fd());
    let chunks = vec![
        (frame[..6].to_vec(), many[..165].to_vec()),
        (frame[6..].to_vec(), many[165..].to_vec()),
    ];
    let (reply, out) = attack(&init, "330 fds", &chunks, End::HalfClose, INIT_LIMIT);
    assert_init_refused("330 fds", &reply, &out, &["file descriptors"]);

    // Mount destinations the policy rules forbid, in the mount list only
    // (the policy inside the request still says /probe).
    let mut accepted = Vec::new();
    for dest in ["/proc", "/proc/sys", "/dev", "/dev/x", "/"] {
        let mut to = vec![u8::try_from(dest.len()).unwrap()];
        to.extend_from_slice(dest.as_bytes());
        let tampered = reframe(&replace_last(&payload, b"\x06/probe", &to));
        let name = format!("mount destination {dest}");
        let (reply, out) = attack(
            &init,
            &name,
            &[(tampered, raw(&real))],
            End::HalfClose,
            INIT_LIMIT,
        );
        let report = decode_reply(&reply).unwrap_or_else(|e| panic!("{name}: {e}\n{}", show(&out)));
        if out.status.code() != Some(EXIT_PURPLE) || report.status != "refused" {
            accepted.push(format!(
                "{dest}: exit {:?}, status {}, message {:?}",
                out.status.code(),
                report.status,
                report.message
            ));
        }
    }
    assert!(
        accepted.is_empty(),
        "purple-init did not refuse forbidden mount destinations:\n{}",
        accepted.join("\n")
    );
    drop((real, null, init, files));
    assert_nothing_left(&b, "tampered request");
}

/// An admin config at a private path that would allow CAP_NET_RAW.
fn evil_admin_config(owner: u32) -> (tempfile::TempDir, String) {
    let dir = scratch(owner);
    let path = write_file(
        &dir.path().join("purple.toml"),
        "[capabilities]\nallow_extra = [\"CAP_NET_RAW\"]\n",
        0o644,
    );
    chown(&path, Some(owner), Some(owner)).unwrap();
    (dir, path)
}

#[test]
fn purple_config_from_a_user_is_ignored() {
    if !require_root("purple_config_from_a_user_is_ignored") {
        return;
    }
    let b = before();
    let system = std::fs::read_to_string("/etc/purple/purple.toml").unwrap_or_default();
    assert!(
        !system.contains("NET_RAW"),
        "this test assumes /etc/purple/purple.toml does not allow CAP_NET_RAW"
    );
    let pol_dir = scratch(0);
    let policy = write_file(
        &pol_dir.path().join("net-raw.toml"),
        "[capabilities]\nadd = [\"CAP_NET_RAW\"]\nambient = true\n",
        0o644,
    );
    let (root_cfg_dir, root_cfg) = evil_admin_config(0);
    let (user_cfg_dir, user_cfg) = evil_admin_config(TEST_UID);
    let cmd = [
        "run",
        "--policy",
        policy.as_str(),
        "--",
        "/bin/grep",
        "CapEff",
        "/proc/self/status",
    ];
    // Control: for a root caller the override is honoured, so the config
    // really would grant the capability.
    let out = sup_env(Caller::Root, &[("PURPLE_CONFIG", &root_cfg)], &cmd);
    let line = assert_ok(&out, "Root with PURPLE_CONFIG allowing CAP_NET_RAW");
    let eff =
        u64::from_str_radix(line.trim().trim_start_matches("CapEff:").trim(), 16).unwrap_or(0);
    assert!(
        eff & (1 << 13) != 0,
        "control: CAP_NET_RAW (bit 13) should be effective: {line}"
    );
    for cfg in [&root_cfg, &user_cfg] {
        let out = sup_env(Caller::User, &[("PURPLE_CONFIG", cfg)], &cmd);
        let reason = assert_refused(
            &out,
            EXIT_PURPLE,
            &["CAP_NET_RAW", "/etc/purple/purple.toml", "allow_extra"],
            &format!("User with PURPLE_CONFIG={cfg}"),
        );
        assert!(
            !reason.contains(cfg.as_str()),
            "the user's PURPLE_CONFIG was read: {reason}"
        );
    }
    drop((pol_dir, root_cfg_dir, user_cfg_dir));
    assert_nothing_left(&b, "PURPLE_CONFIG as user");
}

#[test]
fn unsafe_admin_config_is_refused_for_root() {
    if !require_root("unsafe_admin_config_is_refused_for_root") {
        return;
    }
    let b = before();
    let base = scratch(0);
    let mk = |name: &str, dir_mode: u32, file_mode: u32, owner: u32| {
        let dir = base.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let file = write_file(
            &dir.join("purple.toml"),
            "[identity]\nroot_maps_to = 65534\n",
            file_mode,
        );
        chown(&file, Some(owner), Some(owner)).unwrap();
        set_mode(&dir, dir_mode);
        file
    };
    let world_writable = mk("ww-file", 0o755, 0o666, 0);
    let group_writable = mk("gw-file", 0o755, 0o664, 0);
    let in_open_dir = mk("ww-dir", 0o777, 0o644, 0);
    let user_owned = mk("user-owned", 0o755, 0o644, TEST_UID);
    let good = mk("good", 0o755, 0o644, 0);
    let link = base.path().join("good").join("link.toml");
    symlink(&good, &link).unwrap();
    let link = link.to_str().unwrap().to_owned();
    let cases: [(&str, &[&str]); 4] = [
        (&world_writable, &["not safe", "666"]),
        (&group_writable, &["not safe", "664"]),
        (&in_open_dir, &["not safe", "777"]),
        (&user_owned, &["not safe", "4242"]),
    ];
    for (cfg, needles) in cases {
        let out = sup_env(
            Caller::Root,
            &[("PURPLE_CONFIG", cfg)],
            &["run", "--", "/bin/true"],
        );
        let mut all = vec![cfg.split("/purple.toml").next().unwrap()];
        all.extend_from_slice(needles);
        assert_refused(
            &out,
            EXIT_PURPLE,
            &all,
            &format!("Root with PURPLE_CONFIG={cfg}"),
        );
    }
    // A symlink is not followed (it could be swapped): refused, naming it.
    let out = sup_env(
        Caller::Root,
        &[("PURPLE_CONFIG", &link)],
        &["run", "--", "/bin/true"],
    );
    assert_refused(
        &out,
        EXIT_PURPLE,
        &[&link],
        "Root with PURPLE_CONFIG a symlink",
    );
    // Control: the safe one works.
    assert_ok(
        &sup_env(
            Caller::Root,
            &[("PURPLE_CONFIG", &good)],
            &["run", "--", "/bin/true"],
        ),
        "safe PURPLE_CONFIG",
    );
    drop(base);
    assert_nothing_left(&b, "unsafe admin config");
}

// ---------------------------------------------------------------------------
// 7. Capabilities.

fn read_report(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report {} is not JSON: {e}\n{text}", path.display()))
}

fn cap_field(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

#[test]
fn capabilities_in_policies() {
    if !require_root("capabilities_in_policies") {
        return;
    }
    let b = before();
    let have_python = Path::new("/usr/bin/python3").exists();
    if !have_python {
        assert!(
            !in_ci(),
            "python3 is needed for the bind test and CI must have it"
        );
        eprintln!("NOTE capabilities_in_policies: no /usr/bin/python3; the port-80 bind is checked with CapEff only");
    }
    for caller in Caller::BOTH {
        let dir = scratch(caller_uid(caller));
        let pol = |name: &str, text: &str| {
            let p = write_file(&dir.path().join(name), text, 0o644);
            chown(&p, Some(caller_uid(caller)), None).unwrap();
            p
        };
        let nbs = pol(
            "nbs.toml",
            "[capabilities]\nadd = [\"CAP_NET_BIND_SERVICE\"]\nambient = true\n",
        );
        let sys_admin = pol(
            "sys-admin.toml",
            "[capabilities]\nadd = [\"CAP_SYS_ADMIN\"]\n",
        );
        let cancelled = pol(
            "cancelled.toml",
            "[capabilities]\nadd = [\"CAP_CHOWN\"]\ndrop = [\"CAP_CHOWN\"]\nambient = true\n",
        );
        let report = dir.path().join("report.json");
        let report_s = report.to_str().unwrap().to_owned();
        let ctx = |s: &str| format!("{caller:?}: {s}");

        // NET_BIND_SERVICE, ambient: effective in the command, port 80 binds.
        let script = if have_python {
            "cat /proc/self/status; python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 80)); print(\"bound\", s.getsockname()[1])'"
        } else {
            "cat /proc/self/status"
        };
        let out = sup(
            caller,
            &[
                "run", "--policy", &nbs, "--report", &report_s, "--", "/bin/sh", "-c", script,
            ],
        );
        let status = assert_ok(&out, &ctx("CAP_NET_BIND_SERVICE"));
        assert_eq!(cap_field(&status, "CapEff"), 1 << 10, "{}", ctx("CapEff"));
        assert_eq!(cap_field(&status, "CapAmb"), 1 << 10, "{}", ctx("CapAmb"));
        assert_eq!(cap_field(&status, "CapBnd"), 1 << 10, "{}", ctx("CapBnd"));
        if have_python {
            assert!(
                status.contains("bound 80\n"),
                "{}: {status}",
                ctx("bind port 80")
            );
        }
        let json = read_report(&report);
        let caps = &json["isolation"]["capabilities"];
        for set in [
            "effective",
            "permitted",
            "inheritable",
            "bounding",
            "ambient",
        ] {
            assert_eq!(
                caps[set],
                serde_json::json!(["CAP_NET_BIND_SERVICE"]),
                "{}: report capabilities.{set}: {caps}",
                ctx("report")
            );
        }

        // SYS_ADMIN is not on the safe list: refused, naming the admin config.
        std::fs::remove_file(&report).unwrap();
        let out = sup(
            caller,
            &[
                "run",
                "--policy",
                &sys_admin,
                "--report",
                &report_s,
                "--",
                "/bin/true",
            ],
        );
        let reason = assert_refused(
            &out,
            EXIT_PURPLE,
            &["CAP_SYS_ADMIN", "can never be kept"],
            &ctx("CAP_SYS_ADMIN"),
        );
        let json = read_report(&report);
        assert_eq!(json["status"], "refused", "{}", ctx("refused report"));
        assert_eq!(json["exit_code"], 125);
        assert_eq!(
            json["message"].as_str().map(|m| format!("purple: {m}")),
            Some(reason),
            "{}",
            ctx("report message = stderr line")
        );

        // add minus drop = nothing.
        std::fs::remove_file(&report).unwrap();
        let out = sup(
            caller,
            &[
                "run",
                "--policy",
                &cancelled,
                "--report",
                &report_s,
                "--",
                "/bin/cat",
                "/proc/self/status",
            ],
        );
        let status = assert_ok(&out, &ctx("add CHOWN, drop CHOWN"));
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(cap_field(&status, field), 0, "{}", ctx(field));
        }
        let caps = &read_report(&report)["isolation"]["capabilities"];
        for set in [
            "effective",
            "permitted",
            "inheritable",
            "bounding",
            "ambient",
        ] {
            assert_eq!(
                caps[set],
                serde_json::json!([]),
                "{}: capabilities.{set}: {caps}",
                ctx("report")
            );
        }
        drop(dir);
    }
    assert_nothing_left(&b, "capabilities");
}

/// docs/exit-report.md: `--report FILE` is written "whatever the ending —
/// including refusals", so also when the supervisor itself refuses.
#[test]
fn report_is_written_when_the_supervisor_refuses() {
    if !require_root("report_is_written_when_the_supervisor_refuses") {
        return;
    }
    let b = before();
    let dir = scratch(0);
    let report = dir.path().join("report.json");
    let report_s = report.to_str().unwrap().to_owned();
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let out = sup(
        Caller::Root,
        &[
            "run",
            "--report",
            &report_s,
            "--workspace",
            &missing,
            "--",
            "/bin/true",
        ],
    );
    let reason = assert_refused(
        &out,
        EXIT_PURPLE,
        &[&missing],
        "--workspace MISSING --report",
    );
    assert!(report.exists(), "no report written for a refusal: {reason}");
    let json = read_report(&report);
    assert_eq!(json["status"], "refused");
    assert_eq!(json["exit_code"], 125);
    drop(dir);
    assert_nothing_left(&b, "report on refusal");
}

/// The caller's fds 0-2 become the command's: a directory (walk the host
/// tree with openat(0, "..")), a /proc file (another process's memory) or a
/// network socket (a network outside the sandbox) must be refused.
#[test]
fn dangerous_standard_streams_are_refused() {
    if !require_root("dangerous_standard_streams_are_refused") {
        return;
    }
    let b = before();
    for caller in Caller::BOTH {
        let sup = caller.supervisor().display().to_string();
        let cases = [
            (
                "directory",
                format!("exec {sup} run -- true < /tmp"),
                "is a directory",
            ),
            (
                "proc file",
                format!("exec {sup} run -- true < /proc/self/status"),
                "proc filesystem",
            ),
        ];
        for (name, script, needle) in cases {
            let mut cmd = Command::new("/bin/bash");
            cmd.args(["-c", &script])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .current_dir("/");
            if caller == Caller::User {
                cmd.uid(TEST_UID).gid(TEST_GID);
            }
            let what = format!("{caller:?}: {name}");
            let out = run_bounded(cmd, &what, Duration::from_secs(20));
            assert_code(&out, EXIT_PURPLE, &what);
            one_purple_line(&out, &[needle, "standard"], &what);
        }
        let python_cases = [
            (
                "inet socket as stdin",
                "import socket\nfd = socket.socket()",
                "network socket",
            ),
            (
                "O_PATH descriptor as stdout",
                "import os\nfd = os.open('/tmp', os.O_PATH)",
                "O_PATH",
            ),
        ];
        for (name, setup, needle) in python_cases {
            let stream = if name.contains("stdout") {
                "stdout"
            } else {
                "stdin"
            };
            let script = format!(
                "{setup}\nimport subprocess, sys\nr = subprocess.run([{sup:?}, 'run', '--', 'true'], {stream}=fd, stderr=subprocess.PIPE)\nsys.stderr.write(r.stderr.decode())\nsys.exit(r.returncode)"
            );
            let mut cmd = Command::new("python3");
            cmd.args(["-c", &script])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .current_dir("/");
            if caller == Caller::User {
                cmd.uid(TEST_UID).gid(TEST_GID);
            }
            let what = format!("{caller:?}: {name}");
            let out = run_bounded(cmd, &what, Duration::from_secs(20));
            assert_code(&out, EXIT_PURPLE, &what);
            one_purple_line(&out, &[needle], &what);
        }
    }
    assert_nothing_left(&b, "standard streams");
}
