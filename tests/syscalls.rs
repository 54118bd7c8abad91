//! Syscall-filter and Landlock tests (the syscall-filter issue): what the
//! sandboxed command may ask of the kernel, checked from INSIDE a real
//! sandbox, for both a root caller and an unprivileged caller going through
//! the setuid purple-init.
//!
//! Every probe is chosen so that a call that gets through fails harmlessly
//! (a bad pointer, an invalid flag, a descriptor of -1, an unknown socket
//! type) and could not affect the host even with no filter at all. The
//! exceptions stay inside the sandbox: each direct call runs in a throwaway
//! child (so personality and PTRACE_TRACEME die with it), and the one real
//! clone(CLONE_NEWUSER|CLONE_NEWNS) would make a child that exits at once.
//!
//! Why the refused-syscall test also asks the filter itself: "EPERM or
//! ENOSYS means it was stopped" cannot tell the filter from the kernel. The
//! command has no capabilities, so the kernel itself answers EPERM to
//! pivot_root, fsopen, kexec_load, init_module, reboot, acct, swapon and
//! others before it looks at any argument, and lookup_dcookie no longer
//! exists (ENOSYS) since Linux 6.10. So each refused call is also made in a
//! child that first stacks a seccomp filter of its own returning
//! SECCOMP_RET_USER_NOTIF for that one syscall number: USER_NOTIF ranks below
//! ERRNO/KILL and above LOG/ALLOW, so if Purple's filter refuses the call the
//! child sees Purple's answer, and if Purple's filter lets it through, the
//! call is NOT executed and the probe's listener answers it with a marker
//! errno (EHWPOISON). The verdict is exact and nothing is ever executed.
//!
//! Not tested here: Landlock TCP port rules (a port not listed cannot be
//! bound or connected) apply to the filtered network mode, which does not
//! exist yet (`network.mode = "filtered"` is refused); they get a test when
//! purple-netd lands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use purple_tests::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single supervisor run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(90);

/// 128 + SIGSYS: what a command killed by the filter exits with.
const EXIT_SIGSYS: i32 = 128 + libc::SIGSYS;

// ---------------------------------------------------------------------------
// Running sandboxes with a deadline
// ---------------------------------------------------------------------------

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (stdin from /dev/null) and returns its output; kills it and
/// fails the test if it takes longer than DEADLINE, or if something still
/// holds its stdout/stderr 10 s after it exited.
fn run_cmd(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (out, out_t) = collect(child.stdout.take().unwrap());
    let (err, err_t) = collect(child.stderr.take().unwrap());
    let partial = |out: &Arc<Mutex<Vec<u8>>>, err: &Arc<Mutex<Vec<u8>>>| {
        format!(
            "--- stdout so far:\n{}\n--- stderr so far:\n{}",
            String::from_utf8_lossy(&out.lock().unwrap()),
            String::from_utf8_lossy(&err.lock().unwrap())
        )
    };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "did not finish within {DEADLINE:?}; killed it\n{}",
                partial(&out, &err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let closed = wait_until(Duration::from_secs(10), || {
        out_t.is_finished() && err_t.is_finished()
    });
    assert!(
        closed,
        "exited ({status:?}) but something still holds its stdout/stderr open 10 s later\n{}",
        partial(&out, &err)
    );
    out_t.join().unwrap();
    err_t.join().unwrap();
    let stdout = std::mem::take(&mut *out.lock().unwrap());
    let stderr = std::mem::take(&mut *err.lock().unwrap());
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `purple-supervisor ARGS` as `caller`, with the deadline.
fn run(caller: Caller, args: &[&str]) -> Output {
    run_cmd(caller.command(args))
}

/// `purple-supervisor run [OPTS] -- python3 -c SCRIPT ARGS...`.
fn py_opts(caller: Caller, opts: &[&str], script: &str, args: &[&str]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(opts);
    all.extend_from_slice(&["--", "python3", "-c", script]);
    all.extend_from_slice(args);
    run(caller, &all)
}

/// `purple-supervisor run [OPTS] -- /bin/sh -c SCRIPT`.
fn sh_opts(caller: Caller, opts: &[&str], script: &str) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(opts);
    all.extend_from_slice(&["--", "/bin/sh", "-c", script]);
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

/// The value of the first `KEY value` line printed by a probe script.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
}

// ---------------------------------------------------------------------------
// Files and directories
// ---------------------------------------------------------------------------

fn gid_of(caller: Caller) -> u32 {
    match caller {
        Caller::Root => 65534,
        Caller::User => TEST_GID,
    }
}

/// A directory the sandbox's mapped uid owns (mode 0700), removed on drop.
fn sandbox_owned_dir(caller: Caller) -> tempfile::TempDir {
    private_dir(caller.sandbox_uid(), gid_of(caller))
}

/// A directory the caller (on the host) owns, for report files.
fn caller_owned_dir(caller: Caller) -> tempfile::TempDir {
    match caller {
        Caller::Root => private_dir(0, 0),
        Caller::User => private_dir(TEST_UID, TEST_GID),
    }
}

/// A world-readable temporary directory (mode 0755), removed on drop.
fn shared_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes a world-readable file.
fn write_readable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A policy file in a world-readable directory.
fn policy(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = shared_dir("purple-syscalls-policy-");
    let path = dir.path().join("policy.toml");
    write_readable(&path, text);
    (dir, path)
}

fn read_report(path: &Path, out: &Output) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", path.display(), show(out)));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad report JSON ({e}): {text}"))
}

/// Compiles `source` with `cc` into a world-readable directory. Without a C
/// compiler: None (with a SKIP message) locally, a failure under CI.
fn compile_c(test: &str, source: &str, libs: &[&str]) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = shared_dir("purple-syscalls-cc-");
    let src = dir.path().join("prog.c");
    let bin = dir.path().join("prog");
    write_readable(&src, source);
    let out = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(libs)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some((dir, bin))
        }
        Ok(o) => panic!(
            "{test}: cc failed to build the test program:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !in_ci(),
                "{test}: cc is needed for this test and CI is set: {e}"
            );
            eprintln!("SKIP {test}: no C compiler (`cc`: {e}); not skipped under CI");
            None
        }
        Err(e) => panic!("{test}: running cc: {e}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Refused syscalls
// ---------------------------------------------------------------------------

/// Run inside the sandbox as `python3 -c PROBE refuse|allow`. Prints one
/// line per probe, `probe<TAB>KIND<TAB>LABEL<TAB>DIRECT<TAB>FILTER`, then
/// `done<TAB>N`:
/// - DIRECT: the call made for real (in a forked child): `ok` (it
///   succeeded), an errno name, or `killed:SIG`;
/// - FILTER (refuse probes only): what Purple's filter does with it, seen
///   through a stacked USER_NOTIF filter (see the module comment):
///   `refused:ERRNO`, `allowed`, `killed:SIG`, `unavailable:ERRNO` (this
///   sandbox refuses seccomp(2) itself, so the probe cannot be stacked), or
///   `error:WHAT`.
const PROBE: &str = r##"
import ctypes, errno, os, platform, select, signal, socket, struct, sys, time

# name: (x86_64, aarch64)
NR = {
    "unshare": (272, 97), "setns": (308, 268), "clone": (56, 220), "clone3": (435, 435),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "move_mount": (429, 429), "open_tree": (428, 428), "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264), "acct": (163, 89),
    "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "clock_adjtime": (305, 266),
    "adjtimex": (159, 171), "quotactl": (179, 60), "quotactl_fd": (443, 443),
    "lookup_dcookie": (212, 18), "personality": (135, 92), "ioctl": (16, 29),
    "socket": (41, 198), "seccomp": (317, 277),
}
COL, AUDIT_ARCH = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}[platform.machine()]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name][COL]), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()

BAD = 1  # an unmapped address: EFAULT if a call that gets through reads it
CLONE_THREAD, CLONE_SETTLS, SIGCHLD = 0x10000, 0x80000, 17
NS = [("NEWNS", 0x20000), ("NEWCGROUP", 0x02000000), ("NEWUTS", 0x04000000),
      ("NEWIPC", 0x08000000), ("NEWUSER", 0x10000000), ("NEWPID", 0x20000000),
      ("NEWNET", 0x40000000)]
NEWUSER, NEWNS = 0x10000000, 0x20000
AF_UNIX, AF_INET, AF_INET6, AF_KEY, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK = 1, 2, 10, 15, 16, 17, 38, 40
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_NONBLOCK, SOCK_CLOEXEC = 1, 2, 3, 0x800, 0x80000
BADTYPE = 15     # < SOCK_TYPE_MASK but >= SOCK_MAX: EINVAL before any family code or module load
BADPROTO = 300   # >= IPPROTO_MAX: EINVAL in inet_create before the CAP_NET_RAW check
HIGH = 1 << 32   # the kernel truncates int arguments: a filter must compare the low 32 bits

PROBES = []
def refuse(label, name, *args, real_clone=False):
    PROBES.append(("refuse", label, name, args, real_clone))
def allow(label, name, *args):
    PROBES.append(("allow", label, name, args, False))

# unshare with CLONE_SETTLS added: not an unshare flag, so EINVAL if it gets through.
for n, f in NS + [("NEWTIME", 0x80)]:
    refuse("unshare(CLONE_%s)" % n, "unshare", f | CLONE_SETTLS)
refuse("setns(-1, CLONE_NEWUSER)", "setns", -1, NEWUSER)
refuse("setns(-1, 0)", "setns", -1, 0)
# clone with CLONE_THREAD but no CLONE_SIGHAND: EINVAL in copy_process if it gets through.
for n, f in NS:
    refuse("clone(CLONE_%s)" % n, "clone", f | CLONE_THREAD, 0, 0, 0, 0)
refuse("clone(CLONE_NEWUSER|1<<32)", "clone", HIGH | NEWUSER | CLONE_THREAD, 0, 0, 0, 0)
refuse("clone(CLONE_NEWUSER|CLONE_NEWNS|SIGCHLD)", "clone", NEWUSER | NEWNS | SIGCHLD, 0, 0, 0, 0, real_clone=True)
refuse("clone3", "clone3", BAD, 88)
refuse("mount", "mount", BAD, BAD, BAD, 0, BAD)
refuse("umount2", "umount2", BAD, 0)
refuse("pivot_root", "pivot_root", BAD, BAD)
refuse("fsopen", "fsopen", BAD, 0)
refuse("fsconfig", "fsconfig", -1, 0, BAD, 0, 0)
refuse("fsmount", "fsmount", -1, 0, 0)
refuse("move_mount", "move_mount", -1, BAD, -1, BAD, 0)
refuse("open_tree", "open_tree", -1, BAD, 0)
refuse("open_tree(OPEN_TREE_CLONE)", "open_tree", -1, BAD, 1)
refuse("open_tree_attr", "open_tree_attr", -1, BAD, 1, BAD, 32)
refuse("mount_setattr", "mount_setattr", -1, BAD, 0, BAD, 32)
refuse("ptrace(PTRACE_TRACEME)", "ptrace", 0, 0, 0, 0)
refuse("ptrace(PTRACE_ATTACH, 1)", "ptrace", 16, 1, 0, 0)
refuse("ptrace(PTRACE_ATTACH, no such pid)", "ptrace", 16, 0x3FFFFFFF, 0, 0)
refuse("process_vm_readv", "process_vm_readv", os.getpid(), BAD, 1, BAD, 1, 0)
refuse("process_vm_writev", "process_vm_writev", os.getpid(), BAD, 1, BAD, 1, 0)
refuse("pidfd_getfd", "pidfd_getfd", -1, 0, 0)
refuse("kexec_load", "kexec_load", 0, 1, BAD, 0xDEAD0000)
refuse("kexec_file_load", "kexec_file_load", -1, -1, 0, BAD, 0)
refuse("init_module", "init_module", BAD, 0, BAD)
refuse("finit_module", "finit_module", -1, BAD, 0)
refuse("delete_module", "delete_module", BAD, 0)
refuse("bpf", "bpf", 0, BAD, 72)
refuse("perf_event_open", "perf_event_open", BAD, 0, -1, -1, 0)
refuse("userfaultfd", "userfaultfd", 1 | 2)  # UFFD_USER_MODE_ONLY | an invalid bit: EINVAL
refuse("io_uring_setup", "io_uring_setup", 1, BAD)
refuse("io_uring_enter", "io_uring_enter", -1, 0, 0, 0, 0, 0)
refuse("io_uring_register", "io_uring_register", -1, 0, BAD, 0)
refuse("keyctl", "keyctl", 1, BAD)  # KEYCTL_JOIN_SESSION_KEYRING with a bad name
refuse("add_key", "add_key", BAD, BAD, BAD, 0, -3)
refuse("request_key", "request_key", BAD, BAD, BAD, 0)
refuse("open_by_handle_at", "open_by_handle_at", -1, BAD, 0)
refuse("name_to_handle_at", "name_to_handle_at", -100, BAD, BAD, BAD, 0)
refuse("acct", "acct", BAD)
refuse("swapon", "swapon", BAD, 0)
refuse("swapoff", "swapoff", BAD)
refuse("reboot", "reboot", 0, 0, 0, BAD)  # no valid magic
refuse("settimeofday", "settimeofday", BAD, BAD)
refuse("clock_settime", "clock_settime", 0, BAD)
refuse("clock_adjtime", "clock_adjtime", 0, BAD)
refuse("adjtimex", "adjtimex", BAD)
refuse("quotactl", "quotactl", 0, BAD, 0, BAD)
refuse("quotactl_fd", "quotactl_fd", -1, 0, 0, BAD)
refuse("lookup_dcookie", "lookup_dcookie", 0, BAD, 0)
refuse("personality(READ_IMPLIES_EXEC)", "personality", 0x0400000)
refuse("personality(READ_IMPLIES_EXEC|1<<32)", "personality", HIGH | 0x0400000)
# fd 0 is /dev/null: ENOTTY if it gets through.
refuse("ioctl(TIOCSTI)", "ioctl", 0, 0x5412, BAD)
refuse("ioctl(TIOCSTI|1<<32)", "ioctl", 0, HIGH | 0x5412, BAD)
refuse("ioctl(TIOCLINUX)", "ioctl", 0, 0x541C, BAD)
refuse("ioctl(TIOCLINUX|1<<32)", "ioctl", 0, HIGH | 0x541C, BAD)
refuse("socket(AF_PACKET)", "socket", AF_PACKET, BADTYPE, 0)
refuse("socket(AF_PACKET|1<<32)", "socket", HIGH | AF_PACKET, BADTYPE, 0)
refuse("socket(AF_PACKET, SOCK_RAW)", "socket", AF_PACKET, SOCK_RAW, 0)
refuse("socket(AF_VSOCK)", "socket", AF_VSOCK, BADTYPE, 0)
refuse("socket(AF_KEY)", "socket", AF_KEY, BADTYPE, 0)
refuse("socket(AF_ALG)", "socket", AF_ALG, BADTYPE, 0)
refuse("socket(AF_INET, SOCK_RAW)", "socket", AF_INET, SOCK_RAW, BADPROTO)
refuse("socket(AF_INET, SOCK_RAW|SOCK_CLOEXEC)", "socket", AF_INET, SOCK_RAW | SOCK_CLOEXEC, BADPROTO)
refuse("socket(AF_INET, SOCK_RAW|SOCK_NONBLOCK)", "socket", AF_INET, SOCK_RAW | SOCK_NONBLOCK, BADPROTO)
refuse("socket(AF_INET6, SOCK_RAW)", "socket", AF_INET6, SOCK_RAW, BADPROTO)
refuse("socket(AF_NETLINK, NETLINK_AUDIT)", "socket", AF_NETLINK, BADTYPE, 9)
refuse("socket(AF_NETLINK, NETLINK_NETFILTER)", "socket", AF_NETLINK, BADTYPE, 12)
refuse("socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)", "socket", AF_NETLINK, BADTYPE, 15)

allow("personality(0xffffffff)", "personality", 0xFFFFFFFF)
allow("personality(0)", "personality", 0)
allow("socket(AF_NETLINK, NETLINK_ROUTE)", "socket", AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0)
allow("socket(AF_UNIX)", "socket", AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)
allow("socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC)", "socket", AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)
allow("socket(AF_INET, SOCK_DGRAM)", "socket", AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)

OK, PROBE_ERROR = 200, 254
MARK = 133  # EHWPOISON: what the stacked listener answers a call Purple's filter let through

def ename(n):
    return errno.errorcode.get(n, str(n))

def wait_bounded(pid, seconds=10):
    end = time.monotonic() + seconds
    while True:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            return st
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.002)

def describe(st):
    if st is None:
        return "error:timeout"
    if os.WIFSIGNALED(st):
        return "killed:" + signal.Signals(os.WTERMSIG(st)).name
    code = os.WEXITSTATUS(st)
    if code == OK:
        return "ok"
    if code == PROBE_ERROR:
        return "error:probe"
    return ename(code)

def direct(name, args, real_clone):
    pid = os.fork()
    if pid == 0:
        code = PROBE_ERROR
        try:
            if real_clone:
                r = libc.syscall(ctypes.c_long(NR[name][COL]), *[ctypes.c_long(a) for a in args])
                if r == 0:
                    libc._exit(0)  # the clone child, had it got through
                e = ctypes.get_errno()
                if r > 0:
                    os.waitpid(r, 0)
            else:
                r, e = call(name, *args)
            code = OK if r >= 0 else e
        finally:
            os._exit(code)
    return describe(wait_bounded(pid))

SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER = 1, 8
RET_USER_NOTIF, RET_ALLOW = 0x7FC00000, 0x7FFF0000
NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101  # _IOWR('!', 0, 80), _IOWR('!', 1, 24)

class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

def install_listener(nr):
    insns = [
        (0x20, 0, 0, 4),             # ld arch
        (0x15, 0, 3, AUDIT_ARCH),    # another ABI: allow (Purple's filter decides)
        (0x20, 0, 0, 0),             # ld nr
        (0x15, 0, 1, nr),
        (0x06, 0, 0, RET_USER_NOTIF),
        (0x06, 0, 0, RET_ALLOW),
    ]
    code = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = Fprog(len(insns), ctypes.addressof(buf))
    return call("seccomp", SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.addressof(prog))

def verdict(name, args):
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        code = PROBE_ERROR
        try:
            a.close()
            fd, e = install_listener(NR[name][COL])
            if fd < 0:
                b.sendall(b"E%d" % e)
                code = 0
            else:
                socket.send_fds(b, [b"F"], [fd])
                os.close(fd)
                r, e = call(name, *args)
                code = OK if r >= 0 else e
        finally:
            os._exit(code)
    b.close()
    a.settimeout(10)
    try:
        msg, fds, _, _ = socket.recv_fds(a, 16, 1)
    except OSError:
        msg, fds = b"", []
    a.close()
    if msg.startswith(b"E"):
        wait_bounded(pid)
        return "unavailable:" + ename(int(msg[1:]))
    if not fds:
        return "error:no-listener(" + describe(wait_bounded(pid)) + ")"
    nfd = fds[0]
    notified = False
    end = time.monotonic() + 10
    try:
        while True:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p:
                break
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "error:timeout"
            ready, _, _ = select.select([nfd], [], [], 0.02)
            if ready and not notified:
                req = ctypes.create_string_buffer(80)
                if libc.ioctl(nfd, ctypes.c_ulong(NOTIF_RECV), req) == 0:
                    nid = struct.unpack_from("=Q", req.raw, 0)[0]
                    resp = ctypes.create_string_buffer(struct.pack("=QqiI", nid, 0, -MARK, 0), 24)
                    libc.ioctl(nfd, ctypes.c_ulong(NOTIF_SEND), resp)
                    notified = True
    finally:
        os.close(nfd)
    if os.WIFSIGNALED(st):
        return "killed:" + signal.Signals(os.WTERMSIG(st)).name
    code = os.WEXITSTATUS(st)
    if notified and code == MARK:
        return "allowed"
    if code in (OK, PROBE_ERROR):
        return "error:" + describe(st)
    return "refused:" + ename(code)

want = sys.argv[1]
n = 0
for kind, label, name, args, real_clone in PROBES:
    if kind != want:
        continue
    d = direct(name, args, real_clone)
    v = verdict(name, args) if kind == "refuse" else "-"
    print("probe\t%s\t%s\t%s\t%s" % (kind, label, d, v), flush=True)
    n += 1
print("done\t%d" % n, flush=True)
"##;

/// Every syscall (or family) the issue says is refused by default; the probe
/// must cover each.
const REFUSED: &[&str] = &[
    "unshare",
    "setns",
    "clone",
    "clone3",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "lookup_dcookie",
    "personality",
    "ioctl",
    "socket",
];

#[derive(Debug)]
struct Probe {
    label: String,
    direct: String,
    filter: String,
}

/// Runs the probe script in a default sandbox and parses its lines.
fn run_probes(c: Caller, kind: &str) -> (Vec<Probe>, String) {
    let out = py_opts(c, &[], PROBE, &[kind]);
    let text = ok_stdout(&out);
    let mut probes = Vec::new();
    let mut done = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["probe", k, label, direct, filter] if *k == kind => probes.push(Probe {
                label: (*label).to_owned(),
                direct: (*direct).to_owned(),
                filter: (*filter).to_owned(),
            }),
            ["done", n] => done = n.parse::<usize>().ok(),
            _ => panic!(
                "{c:?}: unexpected probe output line {line:?}\n{}",
                show(&out)
            ),
        }
    }
    assert_eq!(
        done,
        Some(probes.len()),
        "{c:?}: the probe did not finish\n{}",
        show(&out)
    );
    (probes, text)
}

fn table(probes: &[Probe]) -> String {
    probes
        .iter()
        .map(|p| {
            format!(
                "  {:<48} direct={:<14} filter={}",
                p.label, p.direct, p.filter
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each syscall the issue refuses is refused from inside: the call made for
/// real fails with EPERM (or ENOSYS), never EFAULT/EINVAL/EBADF/success
/// (which mean it reached the kernel's own code), and Purple's filter itself
/// refuses it (not merely the kernel for lack of a capability).
#[test]
fn refused_syscalls_fail_with_eperm_inside() {
    if !require_root("refused_syscalls_fail_with_eperm_inside") {
        return;
    }
    for_each_caller(|c| {
        let (probes, _) = run_probes(c, "refuse");
        let covered: BTreeSet<&str> = probes
            .iter()
            .map(|p| p.label.split('(').next().unwrap_or_default())
            .collect();
        let missing: Vec<&&str> = REFUSED.iter().filter(|s| !covered.contains(**s)).collect();
        assert!(missing.is_empty(), "{c:?}: no probe for {missing:?}");

        let mut failures = Vec::new();
        let mut unprobed = Vec::new();
        for p in &probes {
            let mut why = Vec::new();
            match p.direct.as_str() {
                "EPERM" | "ENOSYS" => {}
                "ok" => why.push("the call SUCCEEDED: it got through the filter".to_owned()),
                d if d.starts_with("killed:") => {
                    why.push(format!("the caller was {d}; the issue wants EPERM"))
                }
                d => why.push(format!(
                    "the call failed with {d}: it reached the kernel (EPERM/ENOSYS expected)"
                )),
            }
            match p.filter.as_str() {
                "refused:EPERM" | "refused:ENOSYS" => {}
                "allowed" => why.push(format!(
                    "Purple's filter lets it through (the {} above came from the kernel itself)",
                    p.direct
                )),
                f if f.starts_with("unavailable:") => unprobed.push(p.label.clone()),
                f if f.starts_with("killed:") => why.push(format!(
                    "Purple's filter kills the caller ({f}); the issue wants EPERM"
                )),
                f => why.push(format!("filter verdict {f}")),
            }
            if !why.is_empty() {
                failures.push(format!("{}: {}", p.label, why.join("; ")));
            }
        }
        if !unprobed.is_empty() {
            eprintln!(
                "NOTE {c:?}: seccomp(2) is refused inside, so the filter's own verdict could not be \
                 observed for {} probes; only the direct result was checked",
                unprobed.len()
            );
        }
        assert!(
            failures.is_empty(),
            "{c:?}: {} of {} refused-syscall probes failed:\n  {}\n\nall probes:\n{}",
            failures.len(),
            probes.len(),
            failures.join("\n  "),
            table(&probes)
        );
    });
}

/// The harmless values the filter must keep working: the personality query
/// and PER_LINUX, netlink route sockets, unix and IP sockets.
#[test]
fn allowed_syscall_arguments_still_work() {
    if !require_root("allowed_syscall_arguments_still_work") {
        return;
    }
    for_each_caller(|c| {
        let (probes, _) = run_probes(c, "allow");
        assert_eq!(probes.len(), 6, "{c:?}:\n{}", table(&probes));
        let failures: Vec<String> = probes
            .iter()
            .filter(|p| p.direct != "ok")
            .map(|p| format!("{}: {} (should succeed)", p.label, p.direct))
            .collect();
        assert!(
            failures.is_empty(),
            "{c:?}: {}\n\nall probes:\n{}",
            failures.join("\n"),
            table(&probes)
        );
    });
}

// ---------------------------------------------------------------------------
// 2. Foreign ABIs (x86_64 only)
// ---------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
const FOREIGN_ABI_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "x32") == 0) {
        /* x32 numbers are the x86_64 ones with bit 30 set: getpid (39), and
           mount (165) with bad pointers (EFAULT if it got through). */
        long r = syscall(0x40000000L | 39);
        printf("x32-getpid %ld %d\n", r, r < 0 ? errno : 0);
        r = syscall(0x40000000L | 165, 1L, 1L, 1L, 0L, 1L);
        printf("x32-mount %ld %d\n", r, r < 0 ? errno : 0);
        r = syscall(39);
        printf("native-getpid %ld\n", r);
        return 0;
    }
    long r = 20; /* i386 getpid */
    __asm__ volatile("int $0x80" : "+a"(r) : : "r8", "r9", "r10", "r11", "memory");
    printf("i386 survived %ld\n", r);
    return 0;
}
"#;

/// A syscall through the i386 entry point (`int 0x80`) kills the command
/// (SIGSYS, exit 159).
#[test]
#[cfg(target_arch = "x86_64")]
fn i386_entry_point_kills_the_command() {
    const TEST: &str = "i386_entry_point_kills_the_command";
    if !require_root(TEST) {
        return;
    }
    let Some((_dir, bin)) = compile_c(TEST, FOREIGN_ABI_C, &[]) else {
        return;
    };
    let bind = format!("{}:/abi", bin.display());
    for_each_caller(|c| {
        let out = run(c, &["run", "--ro-bind", &bind, "--", "/abi", "i386"]);
        assert!(
            !stdout(&out).contains("survived"),
            "{c:?}: the i386 syscall returned\n{}",
            show(&out)
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_SIGSYS),
            "{c:?}\n{}",
            show(&out)
        );
    });
}

/// The same kill, as the exit report shows it: `seccomp_violation`.
#[test]
#[cfg(target_arch = "x86_64")]
fn i386_kill_is_reported_as_a_seccomp_violation() {
    const TEST: &str = "i386_kill_is_reported_as_a_seccomp_violation";
    if !require_root(TEST) {
        return;
    }
    let Some((_dir, bin)) = compile_c(TEST, FOREIGN_ABI_C, &[]) else {
        return;
    };
    let bind = format!("{}:/abi", bin.display());
    for_each_caller(|c| {
        let dir = caller_owned_dir(c);
        let report = dir.path().join("report.json");
        let report_arg = report.display().to_string();
        let out = run(
            c,
            &[
                "run",
                "--report",
                &report_arg,
                "--ro-bind",
                &bind,
                "--",
                "/abi",
                "i386",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_SIGSYS),
            "{c:?}\n{}",
            show(&out)
        );
        let j = read_report(&report, &out);
        assert_eq!(j["status"], "seccomp_violation", "{c:?}: {j:#}");
        assert_eq!(j["exit_code"], EXIT_SIGSYS, "{c:?}: {j:#}");
    });
}

/// Any syscall number with the x32 bit (0x40000000) fails with EPERM, and
/// the process goes on.
#[test]
#[cfg(target_arch = "x86_64")]
fn x32_syscalls_fail_with_eperm() {
    const TEST: &str = "x32_syscalls_fail_with_eperm";
    if !require_root(TEST) {
        return;
    }
    let Some((_dir, bin)) = compile_c(TEST, FOREIGN_ABI_C, &[]) else {
        return;
    };
    let bind = format!("{}:/abi", bin.display());
    for_each_caller(|c| {
        let out = run(c, &["run", "--ro-bind", &bind, "--", "/abi", "x32"]);
        let text = ok_stdout(&out);
        let eperm = format!("-1 {}", libc::EPERM);
        assert_eq!(
            field(&text, "x32-getpid"),
            Some(eperm.as_str()),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "x32-mount"),
            Some(eperm.as_str()),
            "{c:?}\n{}",
            show(&out)
        );
        assert!(
            field(&text, "native-getpid").is_some_and(|v| v.parse::<i64>().is_ok_and(|p| p > 0)),
            "{c:?}: the native syscall after the x32 ones failed\n{}",
            show(&out)
        );
    });
}

// ---------------------------------------------------------------------------
// 3. Programs people really run
// ---------------------------------------------------------------------------

fn py_ok(c: Caller, script: &str) -> String {
    let out = py_opts(c, &[], script, &[]);
    ok_stdout(&out)
}

#[test]
fn python_threads_work() {
    if !require_root("python_threads_work") {
        return;
    }
    const SCRIPT: &str = r#"
import threading, concurrent.futures
lock = threading.Lock()
total = [0]
def add(n):
    for _ in range(n):
        with lock:
            total[0] += 1
ts = [threading.Thread(target=add, args=(1000,)) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join(timeout=30)
print("threads", total[0])
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
    print("executor", sum(ex.map(lambda x: x * x, range(10), timeout=30)))
ev = threading.Event()
threading.Timer(0.05, ev.set).start()
print("timer", ev.wait(timeout=30))
"#;
    for_each_caller(|c| {
        let text = py_ok(c, SCRIPT);
        assert_eq!(field(&text, "threads"), Some("8000"), "{c:?}\n{text}");
        assert_eq!(field(&text, "executor"), Some("285"), "{c:?}\n{text}");
        assert_eq!(field(&text, "timer"), Some("True"), "{c:?}\n{text}");
    });
}

#[test]
fn python_subprocess_works() {
    if !require_root("python_subprocess_works") {
        return;
    }
    const SCRIPT: &str = r#"
import subprocess
ls = subprocess.run(["ls", "/"], capture_output=True, text=True, check=True, timeout=30)
print("ls", "usr" in ls.stdout.split())
sh = subprocess.run("echo abc | tr a-c x-z", shell=True, capture_output=True, text=True, check=True, timeout=30)
print("pipe", sh.stdout.strip())
p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
out, _ = p.communicate(b"through cat", timeout=30)
print("popen", out.decode(), p.returncode)
print("check_output", subprocess.check_output(["sh", "-c", "exit 0; echo no"], timeout=30) == b"")
"#;
    for_each_caller(|c| {
        let text = py_ok(c, SCRIPT);
        assert_eq!(field(&text, "ls"), Some("True"), "{c:?}\n{text}");
        assert_eq!(field(&text, "pipe"), Some("xyz"), "{c:?}\n{text}");
        assert_eq!(
            field(&text, "popen"),
            Some("through cat 0"),
            "{c:?}\n{text}"
        );
        assert_eq!(field(&text, "check_output"), Some("True"), "{c:?}\n{text}");
    });
}

#[test]
fn python_asyncio_echo_over_loopback_works() {
    if !require_root("python_asyncio_echo_over_loopback_works") {
        return;
    }
    const SCRIPT: &str = r#"
import asyncio
async def handle(reader, writer):
    line = await reader.readline()
    writer.write(line.upper())
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    replies = []
    for word in (b"ping", b"pong"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(word + b"\n")
        await writer.drain()
        replies.append((await reader.readline()).decode().strip())
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()
    in_thread = await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])
    proc = await asyncio.create_subprocess_exec("echo", "child", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return replies, in_thread, out.decode().strip()
replies, in_thread, child = asyncio.run(asyncio.wait_for(main(), 30))
print("echo", ",".join(replies))
print("executor", in_thread)
print("subprocess", child)
"#;
    for_each_caller(|c| {
        let text = py_ok(c, SCRIPT);
        assert_eq!(field(&text, "echo"), Some("PING,PONG"), "{c:?}\n{text}");
        assert_eq!(field(&text, "executor"), Some("6"), "{c:?}\n{text}");
        assert_eq!(field(&text, "subprocess"), Some("child"), "{c:?}\n{text}");
    });
}

#[test]
fn python_loopback_tcp_and_udp_work() {
    if !require_root("python_loopback_tcp_and_udp_work") {
        return;
    }
    const SCRIPT: &str = r#"
import socket, threading
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(30)
def serve():
    conn, _ = srv.accept()
    conn.settimeout(30)
    conn.sendall(conn.recv(100)[::-1])
    conn.close()
t = threading.Thread(target=serve)
t.start()
cli = socket.create_connection(srv.getsockname(), timeout=30)
cli.sendall(b"abc")
print("tcp", cli.recv(100).decode())
cli.close()
t.join(timeout=30)
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u1.bind(("127.0.0.1", 0))
u1.settimeout(30)
u2.sendto(b"datagram", u1.getsockname())
data, addr = u1.recvfrom(100)
print("udp", data.decode(), addr[0])
a, b = socket.socketpair()
a.sendall(b"unix")
print("socketpair", b.recv(10).decode())
print("resolve", socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
"#;
    for_each_caller(|c| {
        let text = py_ok(c, SCRIPT);
        assert_eq!(field(&text, "tcp"), Some("cba"), "{c:?}\n{text}");
        assert_eq!(
            field(&text, "udp"),
            Some("datagram 127.0.0.1"),
            "{c:?}\n{text}"
        );
        assert_eq!(field(&text, "socketpair"), Some("unix"), "{c:?}\n{text}");
        assert_eq!(field(&text, "resolve"), Some("127.0.0.1"), "{c:?}\n{text}");
    });
}

#[test]
fn python_multiprocessing_pool_works() {
    if !require_root("python_multiprocessing_pool_works") {
        return;
    }
    // Builtins only, so this works with any start method (fork, forkserver,
    // spawn) and a `-c` script.
    const SCRIPT: &str = r#"
import multiprocessing, os
with multiprocessing.Pool(2) as pool:
    squares = pool.map_async(abs, range(-5, 0)).get(timeout=60)
    child = pool.apply_async(os.getpid).get(timeout=60)
print("pool", squares)
print("other_process", child != os.getpid())
q = multiprocessing.Queue()
p = multiprocessing.Process(target=q.put, args=("queued",))
p.start()
print("queue", q.get(timeout=60))
p.join(timeout=60)
print("exitcode", p.exitcode)
"#;
    for_each_caller(|c| {
        let text = py_ok(c, SCRIPT);
        assert_eq!(
            field(&text, "pool"),
            Some("[5, 4, 3, 2, 1]"),
            "{c:?}\n{text}"
        );
        assert_eq!(field(&text, "other_process"), Some("True"), "{c:?}\n{text}");
        assert_eq!(field(&text, "queue"), Some("queued"), "{c:?}\n{text}");
        assert_eq!(field(&text, "exitcode"), Some("0"), "{c:?}\n{text}");
    });
}

#[test]
fn shell_and_coreutils_work_in_a_workspace() {
    if !require_root("shell_and_coreutils_work_in_a_workspace") {
        return;
    }
    const SCRIPT: &str = r#"
set -e
mkdir -p d/sub
printf 'b\na\nc\n' > d/in.txt
sort d/in.txt > d/sorted.txt
echo "sort $(tr '\n' , < d/sorted.txt)"
echo "wc $(wc -l < d/in.txt)"
cp d/in.txt d/sub/copy.txt
mv d/sub/copy.txt d/sub/moved.txt
echo "cat $(cat d/sub/moved.txt | tr -d '\n')"
echo "head $(head -n 2 d/sorted.txt | tail -n 1)"
echo "tail $(tail -n 1 d/sorted.txt)"
echo "find $(find d -type f | sort | tr '\n' ,)"
echo "stat $(stat -c %s d/in.txt)"
echo "sha256 $(printf abc | sha256sum | cut -d ' ' -f 1)"
echo "xargs $(printf '1\n2\n3\n' | xargs echo)"
echo "date $(date -u +%Y | wc -c)"
tar -cf a.tar d
mkdir x
tar -xf a.tar -C x
echo "tar $(cd x && find . -type f | sort | tr '\n' ,)"
if command -v gzip >/dev/null; then
  gzip -c d/in.txt > in.gz
  echo "gzip $(gzip -dc in.gz | tr -d '\n')"
else
  echo "gzip absent"
fi
rm -r d/sub x a.tar
echo "rm $(ls d | tr '\n' ,)"
echo "pwd $(pwd)"
echo "ls $(ls -a | grep -c .)"
"#;
    for_each_caller(|c| {
        let ws = sandbox_owned_dir(c);
        let ws_arg = ws.path().display().to_string();
        let out = sh_opts(c, &["--workspace", &ws_arg], SCRIPT);
        let text = ok_stdout(&out);
        let expect = [
            ("sort", "a,b,c,"),
            ("wc", "3"),
            ("cat", "bac"),
            ("head", "b"),
            ("tail", "c"),
            ("find", "d/in.txt,d/sorted.txt,d/sub/moved.txt,"),
            ("stat", "6"),
            (
                "sha256",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            ("xargs", "1 2 3"),
            ("date", "5"),
            ("tar", "./d/in.txt,./d/sorted.txt,./d/sub/moved.txt,"),
            ("rm", "in.txt,sorted.txt,"),
            ("pwd", "/workspace"),
        ];
        for (key, want) in expect {
            assert_eq!(
                field(&text, key),
                Some(want),
                "{c:?}: {key}\n{}",
                show(&out)
            );
        }
        let gz = field(&text, "gzip");
        assert!(
            gz == Some("bac") || gz == Some("absent"),
            "{c:?}: gzip\n{}",
            show(&out)
        );
        // The work really landed in the host directory.
        assert!(ws.path().join("d/sorted.txt").is_file(), "{c:?}");
        assert!(!ws.path().join("d/sub").exists(), "{c:?}");
    });
}

const PTHREAD_MMAP_C: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 4
#define LEN (1 << 20)
static unsigned char *region;
static unsigned long total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *work(void *arg) {
    long i = (long)arg;
    size_t chunk = LEN / THREADS;
    unsigned long sum = 0;
    memset(region + i * chunk, (int)(i + 1), chunk);
    for (size_t k = 0; k < chunk; k++) sum += region[i * chunk + k];
    pthread_mutex_lock(&lock);
    total += sum;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    region = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { perror("mmap"); return 1; }
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) {
        int e = pthread_create(&t[i], NULL, work, (void *)i);
        if (e) { fprintf(stderr, "pthread_create: %s\n", strerror(e)); return 1; }
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    if (mprotect(region, LEN, PROT_READ)) { perror("mprotect"); return 1; }
    munmap(region, LEN);

    int fd = open("/tmp/purple-mmap-test", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096)) { perror("file"); return 1; }
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap file"); return 1; }
    strcpy(m, "hello");
    msync(m, 4096, MS_SYNC);
    munmap(m, 4096);
    char buf[6] = {0};
    if (pread(fd, buf, 5, 0) != 5) { perror("pread"); return 1; }
    printf("sum %lu\nfile %s\n", total, buf);
    return 0;
}
"#;

#[test]
fn c_program_with_pthreads_and_mmap_works() {
    const TEST: &str = "c_program_with_pthreads_and_mmap_works";
    if !require_root(TEST) {
        return;
    }
    let Some((_dir, bin)) = compile_c(TEST, PTHREAD_MMAP_C, &["-pthread"]) else {
        return;
    };
    let bind = format!("{}:/prog", bin.display());
    for_each_caller(|c| {
        let out = run(c, &["run", "--ro-bind", &bind, "--", "/prog"]);
        let text = ok_stdout(&out);
        // 4 chunks of 256 KiB filled with 1, 2, 3, 4.
        assert_eq!(
            field(&text, "sum"),
            Some("2621440"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(field(&text, "file"), Some("hello"), "{c:?}\n{}", show(&out));
    });
}

// ---------------------------------------------------------------------------
// 4. Policy [syscalls]
// ---------------------------------------------------------------------------

const GETPPID_PY: &str = r#"
import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {"x86_64": 110, "aarch64": 173}[platform.machine()]
r = libc.syscall(ctypes.c_long(nr))
print("getppid", r, ctypes.get_errno() if r < 0 else 0, flush=True)
print("after", "alive", flush=True)
"#;

fn getppid_with_action(c: Caller, action: &str) -> (Output, serde_json::Value) {
    let (_pdir, pfile) = policy(&format!(
        "[syscalls]\ndeny = [\"getppid\"]\naction = \"{action}\"\n"
    ));
    let rdir = caller_owned_dir(c);
    let report = rdir.path().join("report.json");
    let out = py_opts(
        c,
        &[
            "--policy",
            &pfile.display().to_string(),
            "--report",
            &report.display().to_string(),
        ],
        GETPPID_PY,
        &[],
    );
    let j = read_report(&report, &out);
    (out, j)
}

#[test]
fn policy_deny_errno_makes_the_call_fail_with_eperm() {
    if !require_root("policy_deny_errno_makes_the_call_fail_with_eperm") {
        return;
    }
    for_each_caller(|c| {
        // Without the policy, getppid works (the command's parent is PID 1).
        let out = py_opts(c, &[], GETPPID_PY, &[]);
        assert_eq!(
            field(&ok_stdout(&out), "getppid"),
            Some("1 0"),
            "{c:?}\n{}",
            show(&out)
        );
        let (out, j) = getppid_with_action(c, "errno");
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "getppid"),
            Some(format!("-1 {}", libc::EPERM).as_str()),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(
            field(&text, "after"),
            Some("alive"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(j["status"], "exited", "{c:?}: {j:#}");
    });
}

#[test]
fn policy_deny_kill_kills_and_reports_seccomp_violation() {
    if !require_root("policy_deny_kill_kills_and_reports_seccomp_violation") {
        return;
    }
    for_each_caller(|c| {
        let (out, j) = getppid_with_action(c, "kill");
        assert!(
            field(&stdout(&out), "getppid").is_none(),
            "{c:?}: getppid returned instead of killing\n{}",
            show(&out)
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_SIGSYS),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(j["status"], "seccomp_violation", "{c:?}: {j:#}");
        assert_eq!(j["exit_code"], EXIT_SIGSYS, "{c:?}: {j:#}");
    });
}

#[test]
fn policy_deny_log_lets_the_call_through() {
    if !require_root("policy_deny_log_lets_the_call_through") {
        return;
    }
    for_each_caller(|c| {
        let (out, j) = getppid_with_action(c, "log");
        let text = ok_stdout(&out);
        assert_eq!(
            field(&text, "getppid"),
            Some("1 0"),
            "{c:?}\n{}",
            show(&out)
        );
        assert_eq!(j["status"], "exited", "{c:?}: {j:#}");
    });
}

/// `allow = ["ptrace"]` lifts the default refusal: PTRACE_TRACEME (in a
/// forked child, so the tracer is the script itself) returns 0. Without the
/// policy it is refused with EPERM.
#[test]
fn policy_allow_ptrace_permits_traceme() {
    if !require_root("policy_allow_ptrace_permits_traceme") {
        return;
    }
    const SCRIPT: &str = r#"
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {"x86_64": 101, "aarch64": 117}[platform.machine()]
pid = os.fork()
if pid == 0:
    r = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    os._exit(0 if r == 0 else (ctypes.get_errno() or 255))
_, st = os.waitpid(pid, 0)
print("traceme", os.waitstatus_to_exitcode(st))
"#;
    let (_pdir, pfile) = policy("[syscalls]\nallow = [\"ptrace\"]\n");
    let parg = pfile.display().to_string();
    for_each_caller(|c| {
        let out = py_opts(c, &[], SCRIPT, &[]);
        assert_eq!(
            field(&ok_stdout(&out), "traceme"),
            Some(libc::EPERM.to_string().as_str()),
            "{c:?}: ptrace is not refused by default\n{}",
            show(&out)
        );
        let out = py_opts(c, &["--policy", &parg], SCRIPT, &[]);
        assert_eq!(
            field(&ok_stdout(&out), "traceme"),
            Some("0"),
            "{c:?}: allow = [\"ptrace\"] did not allow it\n{}",
            show(&out)
        );
    });
}

/// The `FILE:LINE:COL: message` lines of `policy check` output for `file`.
fn diagnostics(out: &Output, file: &Path) -> Vec<(usize, String)> {
    let prefix = format!("{}:", file.display());
    let all = format!("{}{}", stdout(out), stderr(out));
    all.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let mut parts = rest.splitn(3, ':');
            let line = parts.next()?.parse::<usize>().ok()?;
            parts.next()?.parse::<usize>().ok()?;
            Some((line, parts.next()?.trim().to_owned()))
        })
        .collect()
}

/// A policy may not allow the namespace or mount families: `policy check`
/// reports each such name at its line with a reason (exit 1), and `run`
/// refuses the policy (exit 125) saying why.
#[test]
fn policy_allowing_namespace_or_mount_syscalls_is_refused() {
    if !require_root("policy_allowing_namespace_or_mount_syscalls_is_refused") {
        return;
    }
    const FORBIDDEN: &[&str] = &[
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "fsopen",
        "fsconfig",
        "fsmount",
        "move_mount",
        "open_tree",
        "mount_setattr",
    ];
    // Line 1 `[syscalls]`, line 2 `allow = [`, line 3 "ptrace" (allowed),
    // then one forbidden name per line.
    let mut text = String::from("[syscalls]\nallow = [\n  \"ptrace\",\n");
    for name in FORBIDDEN {
        text.push_str(&format!("  \"{name}\",\n"));
    }
    text.push_str("]\n");
    let (_pdir, pfile) = policy(&text);
    let parg = pfile.display().to_string();
    for_each_caller(|c| {
        let out = run(c, &["policy", "check", &parg]);
        assert_eq!(out.status.code(), Some(1), "{c:?}\n{}", show(&out));
        let diags = diagnostics(&out, &pfile);
        for (i, name) in FORBIDDEN.iter().enumerate() {
            let line = i + 4;
            let found = diags.iter().find(|(l, _)| *l == line);
            assert!(
                found.is_some_and(|(_, msg)| msg.len() > name.len()),
                "{c:?}: no `{}:{line}:COL: reason` line for {name:?}\n{}",
                pfile.display(),
                show(&out)
            );
        }
        assert!(
            !diags.iter().any(|(l, _)| *l == 3),
            "{c:?}: allowing ptrace is not an error\n{}",
            show(&out)
        );

        let out = run(c, &["run", "--policy", &parg, "--", "true"]);
        assert_eq!(
            out.status.code(),
            Some(EXIT_PURPLE),
            "{c:?}\n{}",
            show(&out)
        );
        assert!(
            stderr(&out).contains("unshare"),
            "{c:?}: the refusal does not say which syscall\n{}",
            show(&out)
        );
    });
}

#[test]
fn policy_unknown_syscall_name_is_an_error_with_its_line() {
    if !require_root("policy_unknown_syscall_name_is_an_error_with_its_line") {
        return;
    }
    let (_pdir, pfile) =
        policy("[syscalls]\naction = \"errno\"\ndeny = [\"getppid\", \"no_such_syscall_xyz\"]\n");
    let parg = pfile.display().to_string();
    for_each_caller(|c| {
        let out = run(c, &["policy", "check", &parg]);
        assert_eq!(out.status.code(), Some(1), "{c:?}\n{}", show(&out));
        let diags = diagnostics(&out, &pfile);
        assert!(
            diags
                .iter()
                .any(|(l, msg)| *l == 3 && msg.contains("no_such_syscall_xyz")),
            "{c:?}: no `{}:3:COL:` line naming the unknown syscall\n{}",
            pfile.display(),
            show(&out)
        );
        let out = run(c, &["run", "--policy", &parg, "--", "true"]);
        assert_eq!(
            out.status.code(),
            Some(EXIT_PURPLE),
            "{c:?}\n{}",
            show(&out)
        );
    });
}

// ---------------------------------------------------------------------------
// 5. Landlock
// ---------------------------------------------------------------------------

const WRITES_PY: &str = r#"
import errno, os, subprocess
def attempt(label, fn):
    try:
        fn()
        print(label, "ok", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, e.errno), flush=True)
def write(path, mode="w"):
    with open(path, mode) as f:
        f.write("x")
attempt("rw-create", lambda: write("/rw/new"))
attempt("ro-sees-it", lambda: open("/ro/new").read())
attempt("ro-create", lambda: write("/ro/other"))
attempt("ro-append", lambda: write("/ro/existing", "a"))
attempt("ro-truncate", lambda: os.truncate("/ro/existing", 0))
attempt("ro-mkdir", lambda: os.mkdir("/ro/dir"))
attempt("ro-unlink", lambda: os.unlink("/ro/existing"))
attempt("ro-rename", lambda: os.rename("/ro/existing", "/ro/renamed"))
attempt("ro-chmod", lambda: os.chmod("/ro/existing", 0o666))
attempt("ro-utime", lambda: os.utime("/ro/existing"))
fd = os.open("/ro/existing", os.O_RDONLY)
attempt("ro-via-proc-fd", lambda: write("/proc/self/fd/%d" % fd, "a"))
attempt("ro-via-dev-fd", lambda: write("/dev/fd/%d" % fd, "a"))
attempt("ro-via-proc-root", lambda: write("/proc/self/root/ro/other"))
os.chdir("/ro")
attempt("ro-via-proc-cwd", lambda: write("/proc/self/cwd/other"))
os.chdir("/")
attempt("ro-via-symlink", lambda: (os.symlink("/ro/existing", "/tmp/link"), write("/tmp/link", "a")))
attempt("ro-hardlink-out", lambda: os.link("/ro/existing", "/tmp/hard"))
touch = subprocess.run(["touch", "/ro/touched"], capture_output=True, timeout=30)
print("ro-touch", "ok" if touch.returncode == 0 else "refused", flush=True)
attempt("tmp-create", lambda: write("/tmp/f"))
attempt("dev-shm-create", lambda: write("/dev/shm/f"))
attempt("dev-null-write", lambda: write("/dev/null"))
attempt("etc-create", lambda: write("/etc/newfile"))
attempt("root-create", lambda: write("/newfile"))
attempt("usr-create", lambda: write("/usr/newfile"))
"#;

/// `--ro-bind D:/ro --bind D:/rw` of one directory: written through /rw it
/// changes; through /ro, or any other way of reaching /ro (/proc/self/fd,
/// /dev/fd, /proc/self/root, /proc/self/cwd, a symlink, a hard link) it is
/// refused (EROFS from the mount, EACCES from Landlock); /tmp and /dev/shm
/// are writable, the read-only root is not.
fn read_only_bind_checks(c: Caller, extra: &[&str]) {
    let data = sandbox_owned_dir(c);
    std::fs::write(data.path().join("existing"), "original").unwrap();
    std::os::unix::fs::chown(
        data.path().join("existing"),
        Some(c.sandbox_uid()),
        Some(gid_of(c)),
    )
    .unwrap();
    let ro = format!("{}:/ro", data.path().display());
    let rw = format!("{}:/rw", data.path().display());
    let mut opts: Vec<&str> = extra.to_vec();
    opts.extend_from_slice(&["--ro-bind", &ro, "--bind", &rw]);
    let out = py_opts(c, &opts, WRITES_PY, &[]);
    let text = ok_stdout(&out);
    let refused = ["EROFS", "EACCES", "EPERM", "EXDEV"];
    for key in [
        "rw-create",
        "ro-sees-it",
        "tmp-create",
        "dev-shm-create",
        "dev-null-write",
    ] {
        assert_eq!(
            field(&text, key),
            Some("ok"),
            "{c:?}: {key}\n{}",
            show(&out)
        );
    }
    for key in [
        "ro-create",
        "ro-append",
        "ro-truncate",
        "ro-mkdir",
        "ro-unlink",
        "ro-rename",
        "ro-chmod",
        "ro-utime",
        "ro-via-proc-fd",
        "ro-via-dev-fd",
        "ro-via-proc-root",
        "ro-via-proc-cwd",
        "ro-via-symlink",
        "ro-hardlink-out",
        "etc-create",
        "root-create",
        "usr-create",
    ] {
        let got = field(&text, key);
        assert!(
            got.is_some_and(|v| refused.contains(&v)),
            "{c:?}: {key}: expected one of {refused:?}, got {got:?}\n{}",
            show(&out)
        );
    }
    assert_eq!(
        field(&text, "ro-touch"),
        Some("refused"),
        "{c:?}\n{}",
        show(&out)
    );
    // On the host: only what was written through /rw.
    let mut names: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["existing", "new"], "{c:?}\n{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(data.path().join("existing")).unwrap(),
        "original",
        "{c:?}"
    );
}

#[test]
fn read_only_bind_is_not_writable_through_another_path() {
    if !require_root("read_only_bind_is_not_writable_through_another_path") {
        return;
    }
    for_each_caller(|c| read_only_bind_checks(c, &[]));
}

#[test]
fn read_only_bind_is_not_writable_through_another_path_with_landlock_required() {
    if !require_root("read_only_bind_is_not_writable_through_another_path_with_landlock_required") {
        return;
    }
    let (_pdir, pfile) = policy("[landlock]\nmode = \"required\"\n");
    let parg = pfile.display().to_string();
    for_each_caller(|c| read_only_bind_checks(c, &["--policy", &parg]));
}

/// The Landlock ABI this kernel offers (landlock_create_ruleset with
/// LANDLOCK_CREATE_RULESET_VERSION), or None.
fn host_landlock_abi() -> Option<i64> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    (abi > 0).then_some(abi)
}

/// True when the report's `isolation.landlock` (a sentence or an object)
/// states ABI `abi`.
fn states_abi(value: &serde_json::Value, abi: i64) -> bool {
    if value.get("abi").and_then(serde_json::Value::as_i64) == Some(abi) {
        return true;
    }
    let text = value.to_string().to_lowercase();
    text.contains(&format!("abi {abi}")) || text.contains(&format!("abi v{abi}"))
}

/// With `mode = "required"` on this kernel, the exit report says Landlock
/// was enforced and with which ABI; the default best-effort run states the
/// ABI found too.
#[test]
fn landlock_is_reported_enforced_with_the_abi() {
    if !require_root("landlock_is_reported_enforced_with_the_abi") {
        return;
    }
    let abi = host_landlock_abi();
    assert!(
        abi.is_some_and(|a| a >= 1),
        "this host has no Landlock ({abi:?}); the test expects the ABI-7 kernel of CI"
    );
    let abi = abi.unwrap_or_default();
    let (_pdir, pfile) = policy("[landlock]\nmode = \"required\"\n");
    let parg = pfile.display().to_string();
    for_each_caller(|c| {
        let dir = caller_owned_dir(c);
        let report = dir.path().join("report.json");
        let rarg = report.display().to_string();

        let out = run(
            c,
            &["run", "--policy", &parg, "--report", &rarg, "--", "true"],
        );
        assert!(
            out.status.success(),
            "{c:?}: mode = required\n{}",
            show(&out)
        );
        let j = read_report(&report, &out);
        let landlock = &j["isolation"]["landlock"];
        let text = landlock.to_string().to_lowercase();
        assert!(
            (text.contains("enforced") || text.contains("applied"))
                && !text.contains("not enforced")
                && !text.contains("not applied"),
            "{c:?}: isolation.landlock does not say enforced: {landlock}"
        );
        assert!(
            states_abi(landlock, abi),
            "{c:?}: isolation.landlock does not state ABI {abi}: {landlock}"
        );

        let out = run(c, &["run", "--report", &rarg, "--", "true"]);
        assert!(out.status.success(), "{c:?}: default mode\n{}", show(&out));
        let j = read_report(&report, &out);
        let landlock = &j["isolation"]["landlock"];
        assert!(
            states_abi(landlock, abi),
            "{c:?}: best-effort: isolation.landlock does not state the ABI found ({abi}): {landlock}"
        );
    });
}

#[test]
fn doctor_prints_the_landlock_abi() {
    if !require_root("doctor_prints_the_landlock_abi") {
        return;
    }
    let abi = host_landlock_abi();
    assert!(abi.is_some(), "this host has no Landlock");
    let want = format!("ABI {}", abi.unwrap_or_default());
    for_each_caller(|c| {
        let out = run(c, &["doctor"]);
        let text = ok_stdout(&out);
        assert!(
            text.lines()
                .any(|l| l.to_lowercase().contains("landlock") && l.contains(&want)),
            "{c:?}: doctor does not print the Landlock {want}:\n{text}"
        );
    });
}

/// Every process below `root` (not including it).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(c, _) in parent.iter().filter(|(_, pp)| *pp == p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// A child process killed and reaped when dropped (a failing test leaves
/// nothing behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Inside: bind an abstract socket of its own (same domain: must work), then
/// wait for the name of one bound from outside and try to connect to it.
const SCOPE_INSIDE_PY: &str = r#"
import errno, socket, sys
def connect(name):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(10)
    try:
        c.connect("\0" + name)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
own.bind("\0purple-own-%d" % id(own))
own.listen(1)
print("own", connect("purple-own-%d" % id(own)), flush=True)
print("ready", flush=True)
name = sys.stdin.readline().strip()
print("outside", connect(name), flush=True)
"#;

/// Host side, run as root: enter the sandbox's network namespace (abstract
/// sockets are per network namespace) and listen there, outside any
/// Landlock domain.
const SCOPE_OUTSIDE_PY: &str = r#"
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
if libc.setns(fd, 0x40000000) != 0:
    print("setns failed", ctypes.get_errno(), flush=True)
    sys.exit(1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + sys.argv[2])
s.listen(1)
s.settimeout(15)
print("bound", flush=True)
try:
    s.accept()
    print("accepted", flush=True)
except OSError:
    print("nothing", flush=True)
"#;

/// Landlock ABI 6 scoping: the command cannot connect to an abstract unix
/// socket bound by a process outside its Landlock domain, even in its own
/// network namespace (its own sockets still work). Of the Landlock tests,
/// this is the one that mount flags and permissions cannot pass in its
/// place.
#[test]
fn landlock_scopes_abstract_unix_sockets_to_the_sandbox() {
    if !require_root("landlock_scopes_abstract_unix_sockets_to_the_sandbox") {
        return;
    }
    let abi = host_landlock_abi().unwrap_or_default();
    assert!(
        abi >= 6,
        "this host's Landlock ABI is {abi}; the test expects 6+ (CI: 7)"
    );
    let (_pdir, pfile) = policy("[landlock]\nmode = \"required\"\n");
    let parg = pfile.display().to_string();
    let our_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    for_each_caller(|c| {
        for opts in [vec![], vec!["--policy", parg.as_str()]] {
            let mut args = vec!["run"];
            args.extend_from_slice(&opts);
            args.extend_from_slice(&["--", "python3", "-c", SCOPE_INSIDE_PY]);
            let mut cmd = c.command(&args);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut sup = KillOnDrop(cmd.spawn().expect("spawn purple-supervisor"));
            let (out, out_t) = collect(sup.0.stdout.take().unwrap());
            let (err, err_t) = collect(sup.0.stderr.take().unwrap());
            let mut stdin = sup.0.stdin.take();
            let text = || String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
            let errs = || String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
            let ready = wait_until(Duration::from_secs(30), || {
                text().lines().any(|l| l == "ready")
            });
            assert!(
                ready,
                "{c:?} {opts:?}: sandbox not ready\n{}\n{}",
                text(),
                errs()
            );
            assert_eq!(
                field(&text(), "own"),
                Some("ok"),
                "{c:?} {opts:?}: the command's own abstract socket\n{}\n{}",
                text(),
                errs()
            );
            let supervisor = i32::try_from(sup.0.id()).unwrap();
            let inside = descendants(supervisor).into_iter().find(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/net")).is_ok_and(|n| n != our_net)
            });
            let inside = inside.unwrap_or_else(|| panic!("{c:?}: no sandbox process found"));
            let name = format!("purple-scope-{}-{inside}", std::process::id());
            let mut listener = Command::new("python3");
            listener
                .args(["-c", SCOPE_OUTSIDE_PY])
                .arg(format!("/proc/{inside}/ns/net"))
                .arg(&name)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut listener = KillOnDrop(listener.spawn().expect("spawn python3"));
            let (lout, lout_t) = collect(listener.0.stdout.take().unwrap());
            let ltext = || String::from_utf8_lossy(&lout.lock().unwrap()).into_owned();
            let bound = wait_until(Duration::from_secs(10), || {
                ltext().lines().any(|l| l == "bound")
            });
            assert!(
                bound,
                "{c:?}: the host-side listener did not bind: {}",
                ltext()
            );
            {
                use std::io::Write;
                let mut w = stdin.take().unwrap();
                writeln!(w, "{name}").unwrap();
            }
            let done = wait_until(DEADLINE, || matches!(sup.0.try_wait(), Ok(Some(_))));
            assert!(
                done,
                "{c:?}: the sandbox did not finish\n{}\n{}",
                text(),
                errs()
            );
            let _ = wait_until(Duration::from_secs(10), || {
                out_t.is_finished() && err_t.is_finished()
            });
            drop(listener);
            let _ = lout_t.join();
            let outside = field(&text(), "outside").map(str::to_owned);
            assert_eq!(
                outside.as_deref(),
                Some("EPERM"),
                "{c:?} {opts:?}: connecting to an abstract socket bound outside the Landlock \
                 domain was not refused (listener: {:?})\n{}\n{}",
                ltext().trim(),
                text(),
                errs()
            );
        }
    });
}

// Landlock TCP port rules ("a port not listed cannot be bound or
// connected") belong to `network.mode = "filtered"`, which is refused until
// purple-netd lands: no test here yet, on purpose.

// ---------------------------------------------------------------------------
// 6. Start-up with a fresh filter per run
// ---------------------------------------------------------------------------

#[test]
fn twenty_consecutive_runs_start_cleanly() {
    if !require_root("twenty_consecutive_runs_start_cleanly") {
        return;
    }
    for_each_caller(|c| {
        let start = Instant::now();
        for i in 0..20 {
            let out = run(c, &["run", "--", "true"]);
            assert_eq!(out.status.code(), Some(0), "{c:?}: run {i}\n{}", show(&out));
        }
        eprintln!(
            "{c:?}: 20 runs of `true` in {:?} ({:?} each)",
            start.elapsed(),
            start.elapsed() / 20
        );
    });
}
