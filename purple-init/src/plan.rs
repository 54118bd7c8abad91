//! The sandbox plan: everything the child will do, computed as data before
//! any side effect, so it can be checked by unit tests without root.
//!
//! Input is a request that has already been validated (admin limits, fd
//! checks); output is an ordered list of mounts plus the identity, files,
//! environment and capabilities of the workload. The executor in
//! `sandbox::child` walks it without making decisions of its own.

use std::collections::BTreeSet;

use purple_common::capability::Capability;
use purple_common::policy::{LandlockMode, Policy, WORKSPACE_PATH};
use purple_common::values::AbsPath;

use crate::limits::ResolvedLimits;

/// What the sandbox runs as: one host id, mapped to the same id inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// How a mountpoint comes to exist before something is mounted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mountpoint {
    /// Created (with its parents) on Purple's own tmpfs: a directory.
    CreateDir,
    /// Created on Purple's own tmpfs: an empty file (for file binds).
    CreateFile,
    /// Lies inside a bound host directory: it must already exist there,
    /// because Purple never creates anything on the host.
    MustExist,
}

/// One mount, in the order the child performs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// A host tree purple-init cloned from the caller's fd.
    Bind {
        fd_index: usize,
        destination: AbsPath,
        writable: bool,
        mountpoint: Mountpoint,
        source_hint: String,
    },
    Tmpfs {
        destination: AbsPath,
        size_bytes: u64,
        mode: u32,
        mountpoint: Mountpoint,
    },
}

/// Extra files and links Purple writes into its own root tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    File { path: AbsPath, contents: String },
    Symlink { path: AbsPath, target: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub identity: Identity,
    pub hostname: String,
    /// Binds and tmpfs mounts, parents before children.
    pub mounts: Vec<MountStep>,
    pub root_entries: Vec<RootEntry>,
    pub cwd: AbsPath,
    pub argv: Vec<String>,
    /// `KEY=VALUE` strings, sorted by key.
    pub env: Vec<String>,
    pub kept_capabilities: Vec<Capability>,
    pub ambient_capabilities: bool,
    pub timeout_ms: Option<u64>,
    /// Every limit of the sandbox: cgroup, rlimits, timeout.
    pub limits: ResolvedLimits,
    /// Size of /dev/shm: 64 MiB, or the memory limit when that is smaller
    /// (its pages count against the limit like every tmpfs's).
    pub dev_shm_bytes: u64,
    /// `[landlock] mode`, applied by the workload.
    pub landlock: LandlockMode,
    /// `[syscalls]`, compiled into the workload's seccomp filter.
    pub syscalls: purple_common::policy::SyscallPolicy,
    /// The filtered network, or `None`: loopback only.
    pub network: Option<crate::network::NetworkPlan>,
}

/// A bind the request asked for, after purple-init inspected its fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedBind {
    pub fd_index: usize,
    pub destination: AbsPath,
    pub writable: bool,
    pub is_dir: bool,
    pub source_hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("mount destination {destination} is used twice")]
    DuplicateDestination { destination: AbsPath },
    #[error("mount destination {destination} lies inside a bound file {file}")]
    InsideFile { destination: AbsPath, file: AbsPath },
}

/// The default size of /dev/shm.
pub const DEV_SHM_BYTES: u64 = 64 << 20;

/// The hostname every sandbox gets: the same on every run, so tools that
/// print it stay reproducible.
pub const SANDBOX_HOSTNAME: &str = "purple";

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the plan. `user_name` is only used for the passwd entry.
pub fn build(
    policy: &Policy,
    argv: &[String],
    binds: &[InspectedBind],
    identity: Identity,
    user_name: &str,
    limits: &ResolvedLimits,
    network: Option<crate::network::NetworkPlan>,
) -> Result<Plan, PlanError> {
    let mut mounts = Vec::with_capacity(binds.len() + policy.filesystem.tmpfs.len());
    for bind in binds {
        mounts.push((
            bind.destination.clone(),
            MountStep::Bind {
                fd_index: bind.fd_index,
                destination: bind.destination.clone(),
                writable: bind.writable,
                mountpoint: if bind.is_dir {
                    Mountpoint::CreateDir
                } else {
                    Mountpoint::CreateFile
                },
                source_hint: bind.source_hint.clone(),
            },
            bind.is_dir,
        ));
    }
    for tmpfs in &policy.filesystem.tmpfs {
        mounts.push((
            tmpfs.path.clone(),
            MountStep::Tmpfs {
                destination: tmpfs.path.clone(),
                // tmpfs pages are charged to the sandbox's memory: a tmpfs
                // larger than the memory limit could never be filled.
                size_bytes: tmpfs.size.bytes().min(limits.cgroup.memory_max),
                mode: 0o1777,
                mountpoint: Mountpoint::CreateDir,
            },
            true,
        ));
    }

    // Parents first: a mount must exist before anything is mounted below it.
    // The sort is stable, so equal depths keep the request's order.
    mounts.sort_by_key(|(dest, _, _)| dest.depth());

    let mut seen = BTreeSet::new();
    for (dest, _, _) in &mounts {
        if !seen.insert(dest.clone()) {
            return Err(PlanError::DuplicateDestination {
                destination: dest.clone(),
            });
        }
    }

    // A destination below an earlier *bind* lies on the host's filesystem:
    // it must already exist, because creating it would write to the host.
    // Below a tmpfs it can be created. Below a bound file nothing can be.
    let mut ordered: Vec<MountStep> = Vec::with_capacity(mounts.len());
    for i in 0..mounts.len() {
        let (dest, step, _) = &mounts[i];
        let covering = mounts[..i]
            .iter()
            .rev()
            .find(|(earlier, _, _)| dest.starts_with(earlier) && dest != earlier);
        let mut step = step.clone();
        if let Some((earlier, earlier_step, earlier_is_dir)) = covering {
            if matches!(earlier_step, MountStep::Bind { .. }) {
                if !earlier_is_dir {
                    return Err(PlanError::InsideFile {
                        destination: dest.clone(),
                        file: earlier.clone(),
                    });
                }
                set_mountpoint(&mut step, Mountpoint::MustExist);
            }
        }
        ordered.push(step);
    }

    let workspace = AbsPath::from_static(WORKSPACE_PATH);
    let has_workspace = binds.iter().any(|b| b.destination == workspace);
    let cwd = if has_workspace {
        workspace.clone()
    } else {
        AbsPath::from_static("/")
    };
    let home = if has_workspace {
        WORKSPACE_PATH
    } else {
        "/tmp"
    };

    Ok(Plan {
        identity,
        hostname: SANDBOX_HOSTNAME.to_owned(),
        mounts: ordered,
        root_entries: root_entries(identity, user_name, home),
        cwd,
        argv: argv.to_vec(),
        env: environment(policy, user_name, home),
        kept_capabilities: policy.capabilities.kept(),
        ambient_capabilities: policy.capabilities.ambient,
        timeout_ms: limits.timeout_ms,
        limits: *limits,
        dev_shm_bytes: DEV_SHM_BYTES.min(limits.cgroup.memory_max),
        landlock: policy.landlock.mode,
        syscalls: policy.syscalls.clone(),
        network,
    })
}

fn set_mountpoint(step: &mut MountStep, new: Mountpoint) {
    match step {
        MountStep::Bind { mountpoint, .. } | MountStep::Tmpfs { mountpoint, .. } => {
            *mountpoint = new
        }
    }
}

/// The environment: sane defaults, then the policy's variables on top.
/// Nothing of purple-init's own (or the caller's) environment is used.
fn environment(policy: &Policy, user_name: &str, home: &str) -> Vec<String> {
    let mut env: std::collections::BTreeMap<String, String> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", home),
        ("TERM", "xterm-256color"),
        ("LANG", "C.UTF-8"),
        ("USER", user_name),
        ("LOGNAME", user_name),
        ("HOSTNAME", SANDBOX_HOSTNAME),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (key, value) in &policy.env {
        env.insert(key.as_str().to_owned(), value.clone());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// /etc/passwd, /etc/group, /etc/hostname and /etc/hosts for the sandbox:
/// the one mapped account (plus root and nobody so tools that look them up
/// find them), no host accounts.
fn root_entries(identity: Identity, user_name: &str, home: &str) -> Vec<RootEntry> {
    let file = |path: &'static str, contents: String| RootEntry::File {
        path: AbsPath::from_static(path),
        contents,
    };
    let Identity { uid, gid } = identity;
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 65534 {
        passwd.push_str(&format!(
            "{user_name}:x:{uid}:{gid}:{user_name}:{home}:/bin/sh\n"
        ));
    }
    if gid != 65534 {
        group.push_str(&format!("{user_name}:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    vec![
        file("/etc/passwd", passwd),
        file("/etc/group", group),
        file("/etc/hostname", format!("{SANDBOX_HOSTNAME}\n")),
        file(
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        RootEntry::Symlink {
            path: AbsPath::from_static("/etc/mtab"),
            target: "../proc/self/mounts".into(),
        },
    ]
}

/// A login name safe to write into passwd: `[A-Za-z0-9._-]`, at most 32
/// bytes, not starting with `-`; anything else becomes `user`.
pub fn sanitize_user_name(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        name.to_owned()
    } else {
        "user".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AbsPath {
        s.parse().unwrap_or_else(|_| unreachable!("{s}"))
    }

    fn bind(i: usize, dest: &str, writable: bool, is_dir: bool) -> InspectedBind {
        InspectedBind {
            fd_index: i,
            destination: p(dest),
            writable,
            is_dir,
            source_hint: dest.into(),
        }
    }

    const ID: Identity = Identity {
        uid: 1000,
        gid: 1000,
    };

    fn plan(binds: &[InspectedBind]) -> Result<Plan, PlanError> {
        build(
            &Policy::default(),
            &["true".into()],
            binds,
            ID,
            "alice",
            &crate::limits::defaults_for_tests(),
            None,
        )
    }

    fn destinations(plan: &Plan) -> Vec<(String, Mountpoint)> {
        plan.mounts
            .iter()
            .map(|m| match m {
                MountStep::Bind {
                    destination,
                    mountpoint,
                    ..
                }
                | MountStep::Tmpfs {
                    destination,
                    mountpoint,
                    ..
                } => (destination.to_string(), *mountpoint),
            })
            .collect()
    }

    #[test]
    fn parents_come_first_and_host_dirs_are_never_written() {
        let binds = [
            bind(0, "/usr/lib/extra", false, true),
            bind(1, "/usr", false, true),
            bind(2, "/etc/ssl", false, true),
            bind(3, "/etc/ld.so.cache", false, false),
        ];
        let plan = plan(&binds).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            destinations(&plan),
            [
                ("/usr".to_owned(), Mountpoint::CreateDir),
                ("/tmp".to_owned(), Mountpoint::CreateDir),
                ("/etc/ssl".to_owned(), Mountpoint::CreateDir),
                ("/etc/ld.so.cache".to_owned(), Mountpoint::CreateFile),
                ("/usr/lib/extra".to_owned(), Mountpoint::MustExist),
            ]
        );
    }

    #[test]
    fn workspace_becomes_cwd_and_home() {
        let plan =
            plan(&[bind(0, "/workspace", true, true)]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(plan.cwd.as_str(), "/workspace");
        assert!(plan.env.contains(&"HOME=/workspace".to_owned()));
        let plan = plan_default();
        assert_eq!(plan.cwd.as_str(), "/");
        assert!(plan.env.contains(&"HOME=/tmp".to_owned()));
    }

    fn plan_default() -> Plan {
        plan(&[]).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn environment_has_defaults_and_policy_overrides() {
        let mut policy = Policy::default();
        policy.env.insert(
            "PATH".parse().unwrap_or_else(|_| unreachable!()),
            "/opt/bin".into(),
        );
        policy.env.insert(
            "FOO".parse().unwrap_or_else(|_| unreachable!()),
            "bar".into(),
        );
        let plan = build(
            &policy,
            &["true".into()],
            &[],
            ID,
            "alice",
            &crate::limits::defaults_for_tests(),
            None,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(plan.env.contains(&"PATH=/opt/bin".to_owned()));
        assert!(plan.env.contains(&"FOO=bar".to_owned()));
        assert!(plan.env.contains(&"LANG=C.UTF-8".to_owned()));
        assert!(plan.env.iter().all(|e| !e.starts_with("PURPLE_")));
    }

    #[test]
    fn duplicates_and_mounts_inside_files_are_refused() {
        assert!(matches!(
            plan(&[bind(0, "/opt", false, true), bind(1, "/opt", true, true)]),
            Err(PlanError::DuplicateDestination { .. })
        ));
        assert!(matches!(
            plan(&[
                bind(0, "/opt/f", false, false),
                bind(1, "/opt/f/x", true, true)
            ]),
            Err(PlanError::InsideFile { .. })
        ));
        assert!(matches!(
            plan(&[bind(0, "/tmp", false, true)]),
            Err(PlanError::DuplicateDestination { .. })
        ));
    }

    #[test]
    fn synthesized_passwd_names_only_the_mapped_user() {
        let plan = plan_default();
        let passwd = plan.root_entries.iter().find_map(|e| match e {
            RootEntry::File { path, contents } if path.as_str() == "/etc/passwd" => {
                Some(contents.clone())
            }
            _ => None,
        });
        let passwd = passwd.unwrap_or_default();
        assert!(passwd.contains("alice:x:1000:1000:"));
        assert_eq!(passwd.lines().count(), 3);
    }

    #[test]
    fn user_names_are_sanitized() {
        assert_eq!(sanitize_user_name("alice"), "alice");
        assert_eq!(sanitize_user_name("a:b\nroot"), "user");
        assert_eq!(sanitize_user_name("-x"), "user");
        assert_eq!(sanitize_user_name(""), "user");
    }
}
