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

/// The cgroup layout purple-init will use, found the same way, from
/// /proc/self/mountinfo: v1/hybrid when a v1 hierarchy carries the memory
/// controller, else the cgroup2 mount (/sys/fs/cgroup first). Ok when every
/// controller the limits need is there.
fn cgroup_layout() -> (bool, String) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroup_layout_of(&mountinfo, |path| read_trimmed(path).unwrap_or_default())
}

/// `read` gives a file's contents (a cgroup2 root's cgroup.controllers).
fn cgroup_layout_of(mountinfo: &str, read: impl Fn(&str) -> String) -> (bool, String) {
    // (fs type, mount point, super options) of each cgroup mount.
    let mounts: Vec<(&str, &str, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut right = after.split(' ');
            let fs_type = right.next().filter(|t| t.starts_with("cgroup"))?;
            let options = right.nth(1).unwrap_or("").split(',').collect();
            Some((fs_type, before.split(' ').nth(4)?, options))
        })
        .collect();
    let on_v1 = |c: &&str| {
        mounts
            .iter()
            .any(|(fs, _, opts)| *fs == "cgroup" && opts.contains(c))
    };
    let v2_mount = mounts
        .iter()
        .filter(|(fs, _, _)| *fs == "cgroup2")
        .min_by_key(|(_, mount_point, _)| *mount_point != "/sys/fs/cgroup");
    let (layout, needed, missing): (String, &[&str], Vec<&str>) = if on_v1(&"memory") {
        let needed = &["memory", "pids", "cpu", "cpuacct"];
        let missing = needed.iter().copied().filter(|c| !on_v1(c)).collect();
        ("v1/hybrid".into(), needed, missing)
    } else if let Some((_, mount_point, _)) = v2_mount {
        let needed = &["memory", "pids", "cpu"];
        let offered = read(&format!("{mount_point}/cgroup.controllers"));
        let missing = needed
            .iter()
            .copied()
            .filter(|c| !offered.split_whitespace().any(|o| o == *c))
            .collect();
        (format!("v2 at {mount_point}"), needed, missing)
    } else {
        return (false, format!("none mounted; {BEST_EFFORT_ONLY}"));
    };
    if missing.is_empty() {
        (true, format!("{layout}: {} controllers", needed.join(", ")))
    } else {
        let missing = missing.join(", ");
        (
            false,
            format!("{layout} lacks {missing}; {BEST_EFFORT_ONLY}"),
        )
    }
}

const BEST_EFFORT_ONLY: &str =
    "sandboxes run only with resources.mode = \"best-effort\" (unless the admin config sets [cgroup] required), without cgroup limits";

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
    let (cgroups_ok, cgroups) = cgroup_layout();
    checks.push(Check {
        name: "cgroups",
        ok: cgroups_ok,
        detail: cgroups,
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
    (
        "cgroup limits on every sandbox, asked or not (v1 or v2): memory, tasks, CPU; 1G, 256, 1 CPU unless the policy or admin config says otherwise",
        true,
    ),
    (
        "rlimits on every command: no core dumps, open files (4096), file size (8G), CPU time (--cpu-time)",
        true,
    ),
    ("wall-clock timeout (--timeout, or the admin's maximum)", true),
    (
        "seccomp: default-deny syscall profile on the command and PID 1 (namespaces, mount, ptrace, bpf, io_uring, keyrings, TIOCSTI, foreign ABIs refused)",
        true,
    ),
    ("Landlock filesystem rules from the mount plan, abstract-socket and signal scoping (best-effort by default)", true),
    (
        "filtered network through purple-netd (needs purple-netd running; see docs/network.md)",
        true,
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
    let cgroups_ok = checks.iter().any(|c| c.name == "cgroups" && c.ok);
    if essential_ok && !cgroups_ok {
        println!("\nPurple can run sandboxes on this host, but only with resources.mode = \"best-effort\" until the cgroups line is fixed.");
        0
    } else if essential_ok {
        println!("\nPurple can run sandboxes on this host.");
        0
    } else {
        println!(
            "\nPurple cannot run sandboxes on this host until the FAIL lines above are fixed."
        );
        1
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup_layout_of;

    const HYBRID: &str = "\
29 28 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 28 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
34 28 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
35 28 0:33 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
";
    const UNIFIED: &str =
        "28 24 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn layouts() {
        let none = |_: &str| String::new();
        let all = |_: &str| "cpuset cpu io memory pids".to_owned();
        let (ok, text) = cgroup_layout_of(HYBRID, none);
        assert!(ok && text.starts_with("v1/hybrid"), "{text}");
        let (ok, text) = cgroup_layout_of(UNIFIED, all);
        assert!(ok && text.starts_with("v2 at /sys/fs/cgroup"), "{text}");
        let (ok, text) = cgroup_layout_of(UNIFIED, |_: &str| "cpu pids".to_owned());
        assert!(!ok && text.contains("lacks memory"), "{text}");
        let no_pids = HYBRID.replace("rw,pids", "rw");
        let (ok, text) = cgroup_layout_of(&no_pids, all);
        assert!(!ok && text.contains("lacks pids"), "{text}");
        let (ok, text) = cgroup_layout_of("1 0 0:1 / / rw - ext4 /dev/vda rw\n", all);
        assert!(!ok && text.contains("best-effort"), "{text}");
    }
}
