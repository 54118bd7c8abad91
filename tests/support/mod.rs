//! Shared helpers for the integration tests: find the built binaries, make
//! a setuid-root copy of purple-init for the unprivileged path, run sandboxes
//! as root or as an unprivileged test user, and skip only where allowed.
//!
//! Skipping: a test that needs root or a kernel feature may skip on a
//! developer machine (with a printed reason), but when `CI` is set it must
//! run, so `require_root` fails the test instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod net;
pub mod serve;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// An unprivileged uid/gid with no passwd entry, used for the setuid path.
pub const TEST_UID: u32 = 4242;
pub const TEST_GID: u32 = 4242;

/// Exit status Purple uses for its own failures and refusals.
pub const EXIT_PURPLE: i32 = 125;

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// True when the test may go on. Without root: skip with a message locally,
/// fail under CI.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root, and CI is set: this test must run in CI");
    }
    eprintln!("SKIP {test}: needs root (set up sudo or run as root); not skipped under CI");
    false
}

/// target/debug (or whichever profile built the tests).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned();
    for bin in ["purple-supervisor", "purple-init"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run `cargo build --workspace` before the tests (the README's test command does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// A directory holding a copy of both binaries with purple-init setuid root,
/// readable by the test user. Removed when the test process exits.
fn setuid_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Fails (with the build hint) before anything is created.
        let build = build_dir();
        let dir = std::env::temp_dir().join(format!("purple-setuid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for bin in ["purple-supervisor", "purple-init"] {
            let to = dir.join(bin);
            std::fs::copy(build.join(bin), &to).unwrap();
            chown(&to, Some(0), Some(0)).unwrap();
        }
        std::fs::set_permissions(
            dir.join("purple-init"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.join("purple-supervisor"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        SETUID_DIR_FOR_CLEANUP.get_or_init(|| dir.clone());
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(remove_setuid_dir) };
        dir
    })
}

static SETUID_DIR_FOR_CLEANUP: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_setuid_dir() {
    if let Some(dir) = SETUID_DIR_FOR_CLEANUP.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Who runs the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// root, using the build tree's purple-init directly.
    Root,
    /// TEST_UID, going through the setuid-root copy of purple-init.
    User,
}

impl Caller {
    pub const BOTH: [Caller; 2] = [Caller::Root, Caller::User];

    /// The host uid the sandbox maps to for this caller.
    pub fn sandbox_uid(self) -> u32 {
        match self {
            Caller::Root => 65534,
            Caller::User => TEST_UID,
        }
    }

    pub fn supervisor(self) -> PathBuf {
        match self {
            Caller::Root => build_dir().join("purple-supervisor"),
            Caller::User => setuid_dir().join("purple-supervisor"),
        }
    }

    /// A `purple-supervisor` command for this caller with a clean
    /// environment (plus `extra_env`).
    pub fn command<I, S>(self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(self.supervisor());
        cmd.args(args);
        cmd.env_clear();
        cmd.env("PATH", "/usr/bin:/bin");
        if self == Caller::User {
            cmd.uid(TEST_UID).gid(TEST_GID);
            cmd.current_dir("/");
        }
        cmd
    }
}

/// Runs `purple-supervisor ARGS` as `caller`, stdin from /dev/null.
pub fn purple<I, S>(caller: Caller, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    caller
        .command(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn purple-supervisor")
}

/// Runs `sh -c SCRIPT` in a default sandbox as `caller`.
pub fn sandbox_sh(caller: Caller, script: &str) -> Output {
    purple(caller, ["run", "--", "/bin/sh", "-c", script])
}

/// Runs `sh -c SCRIPT` in a default sandbox as `caller` with `stdin` fed in.
pub fn sandbox_sh_stdin(caller: Caller, script: &str, stdin: &[u8]) -> Output {
    let mut child = caller
        .command(["run", "--", "/bin/sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn purple-supervisor");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout, showing everything on failure.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// A temporary directory owned by `uid:gid` (mode 0700), removed on drop.
pub fn private_dir(uid: u32, gid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("purple-test-")
        .tempdir()
        .expect("tempdir");
    chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// The purple processes, mounts and temp dirs currently on the host, for
/// "nothing left behind" checks: (count of purple-init processes, count of
/// mounts whose path mentions purple).
pub fn leftovers() -> (usize, usize) {
    let mut inits = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim() == "purple-init" {
                inits += 1;
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("purple"))
        .count();
    (inits, mounts)
}

/// Exit status, stdout and stderr of a run, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Reads `r` to its end on a thread; the bytes gather in the shared buffer.
pub fn collect<R: std::io::Read + Send + 'static>(
    mut r: R,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    std::thread::JoinHandle<()>,
) {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = std::sync::Arc::clone(&buf);
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, t)
}
