//! `purple-supervisor doctor`: what this host supports, and which of
//! Purple's guarantees hold here, in plain words.

use std::os::unix::fs::MetadataExt;

use crate::launcher;

/// One line of the report.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn kernel_version() -> (u32, u32, String) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        release,
    )
}

/// The kernel's Landlock ABI version, or why there is none.
fn landlock_abi() -> Result<i64, nix::errno::Errno> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes no ruleset attribute (NULL, size 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret > 0 {
        Ok(ret)
    } else {
        Err(nix::errno::Errno::last())
    }
}

fn cgroup_layout() -> String {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
            "v2 (unified)".into()
        }
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => {
            if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
                "v1/hybrid (v2 at /sys/fs/cgroup/unified)".into()
            } else {
                "v1".into()
            }
        }
        Ok(_) => "unknown".into(),
        Err(e) => format!("not mounted ({e})"),
    }
}

fn checks() -> Vec<Check> {
    let (major, minor, release) = kernel_version();
    let at_least = |ma: u32, mi: u32| (major, minor) >= (ma, mi);
    let mut checks = vec![Check {
        name: "kernel",
        ok: at_least(5, 12),
        detail: format!("{release} (Purple needs 5.12+: mount_setattr, openat2, clone3, pidfd)"),
    }];
    let max_userns =
        read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    checks.push(Check {
        name: "user namespaces",
        ok: max_userns.unwrap_or(0) > 0,
        detail: format!(
            "user.max_user_namespaces = {}",
            max_userns.map_or("unknown".into(), |n| n.to_string())
        ),
    });
    match launcher::find_init() {
        Ok(path) => {
            let meta = std::fs::metadata(&path);
            let setuid_root = meta
                .as_ref()
                .map(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
                .unwrap_or(false);
            let caller_is_root = nix::unistd::getuid().is_root();
            checks.push(Check {
                name: "purple-init",
                ok: setuid_root || caller_is_root,
                detail: if setuid_root {
                    format!("{} (setuid root)", path.display())
                } else if caller_is_root {
                    format!("{} (not setuid; works because you are root)", path.display())
                } else {
                    format!("{} is not setuid root: run `sudo chown root:root {0} && sudo chmod 4755 {0}`", path.display())
                },
            });
        }
        Err(e) => checks.push(Check {
            name: "purple-init",
            ok: false,
            detail: e.to_string(),
        }),
    }
    let seccomp = read_trimmed("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    checks.push(Check {
        name: "seccomp",
        ok: seccomp,
        detail: if seccomp {
            "available".into()
        } else {
            "not available".into()
        },
    });
    let abi = landlock_abi();
    checks.push(Check {
        name: "landlock",
        ok: abi.is_ok(),
        detail: match abi {
            Ok(v) if v >= 6 => {
                format!("ABI {v}: filesystem rules and scopes; mode \"required\" works")
            }
            Ok(v) => {
                format!("ABI {v}: best-effort only (mode \"required\" needs ABI 6, Linux 6.12+)")
            }
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                "built in but not enabled (add landlock to the lsm= boot parameter)".into()
            }
            Err(_) => {
                "not in this kernel (best-effort runs without it; \"required\" is refused)".into()
            }
        },
    });
    checks.push(Check {
        name: "cgroups",
        ok: true,
        detail: cgroup_layout(),
    });
    checks
}

/// What this build enforces on every sandbox, and what it does not yet.
const GUARANTEES: &[(&str, bool)] = &[
    (
        "new user, mount, pid, net, ipc, uts and cgroup namespaces",
        true,
    ),
    (
        "sandbox uid/gid = caller's (a root caller runs as 65534 or the admin's choice)",
        true,
    ),
    (
        "fresh read-only root; host paths only as read-only binds unless asked",
        true,
    ),
    (
        "minimal /dev, fresh /proc with kernel internals masked, no /sys",
        true,
    ),
    (
        "no capabilities, no_new_privs, new session, every fd >= 3 closed",
        true,
    ),
    ("loopback-only network", true),
    ("wall-clock timeout (--timeout)", true),
    (
        "seccomp: default-deny syscall profile on the command and PID 1 (namespaces, mount, ptrace, bpf, io_uring, keyrings, TIOCSTI, foreign ABIs refused)",
        true,
    ),
    ("Landlock filesystem rules from the mount plan, abstract-socket and signal scoping (best-effort by default)", true),
    (
        "cgroup limits: --memory, --pids, --cpus (refused until enforced)",
        false,
    ),
    (
        "filtered network through purple-netd (refused until available)",
        false,
    ),
];

pub fn run() -> i32 {
    let checks = checks();
    println!("Host");
    for c in &checks {
        println!(
            "  [{}] {:<16} {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    println!("\nGuarantees of this build");
    for (what, holds) in GUARANTEES {
        println!("  [{}] {what}", if *holds { "held" } else { " no " });
    }
    let essential_ok = checks
        .iter()
        .filter(|c| matches!(c.name, "kernel" | "user namespaces" | "purple-init"))
        .all(|c| c.ok);
    if essential_ok {
        println!("\nPurple can run sandboxes on this host.");
        0
    } else {
        println!(
            "\nPurple cannot run sandboxes on this host until the FAIL lines above are fixed."
        );
        1
    }
}
