//! Landlock for the workload: filesystem rules derived from the mount plan,
//! TCP port rules when the network policy has any, and scoping of abstract
//! unix sockets and signals, applied in the workload after `pivot_root`
//! and `no_new_privs`, just before the seccomp filter.
//!
//! Landlock is a second wall behind the mount table. The mounts decide what
//! exists in the sandbox and what is read-only; Landlock makes the same
//! decision again inside the kernel's access checks, so that a way around a
//! mount flag (a kernel bug, a remount that should not have been possible, a
//! write through a path the mount table does not cover) still meets a
//! refusal. It can only *allow* beneath a path: every right it handles is
//! denied everywhere unless a rule on the path or one of its parents grants
//! it, and rights add up along the path.
//!
//! Two halves, as everywhere in purple-init: [`LandlockPlan::from_plan`] is
//! pure data, unit-tested without root; [`apply`] opens the paths and talks to
//! the kernel. The crate's silent best-effort default is never used: the
//! compatibility level is set from the policy, and the status the kernel
//! gave is reported (see docs/landlock.md).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope, ABI,
};
use nix::errno::Errno;
use purple_common::policy::LandlockMode;
use purple_common::values::AbsPath;
use serde::{Deserialize, Serialize};

use crate::plan::{MountStep, Plan};
use crate::sandbox::child::DEVICES;
use crate::sys;

/// The Landlock ABI whose rights this code asks for, and was tested
/// against. Pinned rather than "whatever the crate knows": a newer crate
/// would otherwise start denying rights (e.g. ABI 9's `resolve_unix`) that
/// nobody reviewed here. ABI 7 adds nothing over 6 that a ruleset handles
/// (only audit-log flags), so the rights asked for need ABI 6.
pub const TARGET_ABI: ABI = ABI::V7;

/// What one rule allows beneath its path. Rights add up along a path, so
/// a grant on a directory holds for everything below it, across mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Read files and list directories: the root tmpfs. No execute: this
    /// rule sits above /proc and /dev and would reach them; the root tmpfs
    /// itself holds only Purple's synthesized files and mountpoints.
    Read,
    /// Read, list, execute: a read-only bind (the host's system trees and
    /// the policy's `read_only`).
    ReadExecute,
    /// Every right of [`TARGET_ABI`]: a read-write bind (the workspace
    /// included), a tmpfs (/tmp), /dev/pts and /dev/shm.
    Full,
    /// Read, write and device ioctls, nothing else: one device node in /dev
    /// (null, zero, full, random, urandom, tty).
    Device,
    /// Read, list, write and truncate, never execute: /proc, whose files
    /// programs write (/proc/self/oom_score_adj, /proc/self/comm, ...).
    /// Masked and kernel-tunable paths stay read-only by their mounts.
    Proc,
}

impl Grant {
    /// The rights, before narrowing to what a non-directory can hold.
    pub fn access(self) -> BitFlags<AccessFs> {
        match self {
            Grant::Read => AccessFs::ReadFile | AccessFs::ReadDir,
            Grant::ReadExecute => AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
            Grant::Full => AccessFs::from_all(TARGET_ABI),
            Grant::Device => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
            Grant::Proc => {
                AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::WriteFile | AccessFs::Truncate
            }
        }
    }
}

/// One filesystem rule: `grant` beneath `path` (a sandbox path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: AbsPath,
    pub grant: Grant,
}

/// TCP ports the workload may bind and connect to. Landlock sees ports,
/// not addresses (loopback or not), and only TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpRules {
    pub bind: Vec<u16>,
    pub connect: Vec<u16>,
}

/// Everything Landlock will be asked to do, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Filesystem rules, root first.
    pub paths: Vec<PathRule>,
    /// Also allow reopening the command's stdin/stdout/stderr (regular
    /// files and terminals) with the access mode they were opened with, so
    /// `echo > /dev/stdout` keeps working: the caller's file or terminal
    /// lies outside every rule above, and without this a reopen through
    /// /proc/self/fd is refused. It grants nothing the descriptor does not
    /// already give. Pipes and sockets need no rule.
    pub standard_streams: bool,
    /// `None`: TCP is not handled by Landlock at all (any port may be bound
    /// or connected to, as far as Landlock goes). Network mode "none" gives
    /// the sandbox only loopback, and Landlock cannot tell loopback from
    /// other addresses, so denying ports there would only break programs
    /// that talk to themselves. The filtered-network mode fills this from
    /// `allow_out` / `allow_in`.
    pub tcp: Option<TcpRules>,
    /// Refuse connecting to abstract unix sockets made outside the
    /// workload's Landlock domain (ABI 6).
    pub scope_abstract_unix_sockets: bool,
    /// Refuse signals to processes outside the workload's domain, PID 1
    /// included (ABI 6).
    pub scope_signals: bool,
}

impl LandlockPlan {
    /// Derives the rules from the mount plan: what the sandbox has is what
    /// Landlock allows, with the same read-only/read-write split.
    pub fn from_plan(plan: &Plan) -> LandlockPlan {
        let rule = |path: AbsPath, grant: Grant| PathRule { path, grant };
        // The root is a read-only tmpfs of Purple's own files: readable, so
        // that lookups through it and its synthesized /etc files work.
        let mut paths = vec![rule(AbsPath::from_static("/"), Grant::Read)];
        for step in &plan.mounts {
            paths.push(match step {
                // A read-only bind: readable and executable (the programs
                // and libraries of the system trees live there). Nested in
                // a writable bind or tmpfs it also gets that parent's
                // rights (Landlock only adds up along a path): there its
                // read-only mount alone keeps it read-only.
                MountStep::Bind {
                    destination,
                    writable: false,
                    ..
                } => rule(destination.clone(), Grant::ReadExecute),
                // A read-write bind (/workspace): the command's own files.
                MountStep::Bind {
                    destination,
                    writable: true,
                    ..
                } => rule(destination.clone(), Grant::Full),
                // A tmpfs (/tmp): scratch space that dies with the sandbox.
                MountStep::Tmpfs { destination, .. } => rule(destination.clone(), Grant::Full),
            });
        }
        // The minimal /dev: each bound node readable and writable (and
        // ioctl-able: a terminal needs TCGETS), the directory itself only
        // readable, through the root's rule. Nothing can be created there.
        for name in DEVICES {
            if let Ok(path) = format!("/dev/{name}").parse::<AbsPath>() {
                paths.push(rule(path, Grant::Device));
            }
        }
        // The private devpts instance: opening /dev/ptmx (a link to
        // pts/ptmx) and the new pty's node needs write and ioctl.
        paths.push(rule(AbsPath::from_static("/dev/pts"), Grant::Full));
        // POSIX shared memory (shm_open) creates files here.
        paths.push(rule(AbsPath::from_static("/dev/shm"), Grant::Full));
        // The sandbox's own /proc: read, and write for /proc/self/...
        paths.push(rule(AbsPath::from_static("/proc"), Grant::Proc));
        // A filtered network's TCP ports again, as a second layer under
        // purple-netd's rules (mode "none" leaves TCP to the namespace).
        let tcp = plan
            .network
            .as_ref()
            .and_then(|n| n.landlock_tcp())
            .map(|(bind, connect)| TcpRules { bind, connect });
        LandlockPlan {
            paths,
            standard_streams: true,
            tcp,
            scope_abstract_unix_sockets: true,
            scope_signals: true,
        }
    }

    /// Filesystem rights the ruleset handles, i.e. denies unless a rule
    /// allows them: every right of [`TARGET_ABI`].
    pub fn handled_fs(&self) -> BitFlags<AccessFs> {
        AccessFs::from_all(TARGET_ABI)
    }

    /// Network rights the ruleset handles: TCP bind and connect when the
    /// plan has port rules, none otherwise.
    pub fn handled_net(&self) -> BitFlags<AccessNet> {
        match self.tcp {
            Some(_) => AccessNet::BindTcp | AccessNet::ConnectTcp,
            None => BitFlags::EMPTY,
        }
    }

    pub fn scopes(&self) -> BitFlags<Scope> {
        let mut scopes = BitFlags::EMPTY;
        if self.scope_abstract_unix_sockets {
            scopes |= Scope::AbstractUnixSocket;
        }
        if self.scope_signals {
            scopes |= Scope::Signal;
        }
        scopes
    }

    /// What this plan asks for that a kernel with `abi` cannot enforce,
    /// as `fs.<right>`, `net.<right>` and `scope.<scope>` names.
    pub fn missing_at(&self, abi: ABI) -> Vec<String> {
        let fs = self.handled_fs() & !AccessFs::from_all(abi);
        let net = self.handled_net() & !AccessNet::from_all(abi);
        let scopes = self.scopes() & !Scope::from_all(abi);
        fs.iter()
            .map(|a| format!("fs.{}", fs_name(a)))
            .chain(net.iter().map(|a| format!("net.{}", net_name(a))))
            .chain(scopes.iter().map(|s| format!("scope.{}", scope_name(s))))
            .collect()
    }

    /// The oldest ABI that enforces the whole plan.
    pub fn needed_abi(&self) -> i32 {
        const ABIS: [ABI; 7] = [
            ABI::V1,
            ABI::V2,
            ABI::V3,
            ABI::V4,
            ABI::V5,
            ABI::V6,
            ABI::V7,
        ];
        ABIS.iter()
            .find(|abi| self.missing_at(**abi).is_empty())
            .map_or(TARGET_ABI as i32, |abi| *abi as i32)
    }
}

fn fs_name(access: AccessFs) -> &'static str {
    match access {
        AccessFs::Execute => "execute",
        AccessFs::WriteFile => "write_file",
        AccessFs::ReadFile => "read_file",
        AccessFs::ReadDir => "read_dir",
        AccessFs::RemoveDir => "remove_dir",
        AccessFs::RemoveFile => "remove_file",
        AccessFs::MakeChar => "make_char",
        AccessFs::MakeDir => "make_dir",
        AccessFs::MakeReg => "make_reg",
        AccessFs::MakeSock => "make_sock",
        AccessFs::MakeFifo => "make_fifo",
        AccessFs::MakeBlock => "make_block",
        AccessFs::MakeSym => "make_sym",
        AccessFs::Refer => "refer",
        AccessFs::Truncate => "truncate",
        AccessFs::IoctlDev => "ioctl_dev",
        AccessFs::ResolveUnix => "resolve_unix",
        _ => "unknown",
    }
}

fn net_name(access: AccessNet) -> &'static str {
    match access {
        AccessNet::BindTcp => "bind_tcp",
        AccessNet::ConnectTcp => "connect_tcp",
        _ => "unknown",
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::AbstractUnixSocket => "abstract_unix_socket",
        Scope::Signal => "signal",
        _ => "unknown",
    }
}

/// Landlock on this host, as the version query reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSupport {
    /// The kernel's Landlock ABI version.
    Abi(i32),
    /// The query failed: EOPNOTSUPP (built in, not enabled at boot),
    /// ENOSYS (not built in), anything else (e.g. a seccomp filter).
    Unavailable(Errno),
}

impl HostSupport {
    pub fn reason(self) -> String {
        match self {
            HostSupport::Abi(abi) => format!("Landlock ABI {abi}"),
            HostSupport::Unavailable(Errno::EOPNOTSUPP) => {
                "Landlock is built into this kernel but not enabled (add landlock to the lsm= boot parameter)"
                    .into()
            }
            HostSupport::Unavailable(Errno::ENOSYS) => {
                "this kernel has no Landlock (built without CONFIG_SECURITY_LANDLOCK, or older than 5.13)"
                    .into()
            }
            HostSupport::Unavailable(errno) => {
                format!("the Landlock version query failed: {}", errno.desc())
            }
        }
    }
}

/// Asks the kernel for its Landlock ABI version.
pub fn host_support() -> HostSupport {
    // SAFETY: the version query passes no attribute (NULL, size 0) and
    // only returns an integer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret > 0 {
        HostSupport::Abi(i32::try_from(ret).unwrap_or(i32::MAX))
    } else {
        HostSupport::Unavailable(Errno::last())
    }
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The kernel's Landlock ABI, or `None` without Landlock (for `doctor`).
// `doctor` lives in purple-supervisor, which cannot link this binary crate:
// it keeps its own copy of the query until this moves to purple-common.
#[cfg_attr(not(test), allow(dead_code))]
pub fn host_abi() -> Option<i32> {
    match host_support() {
        HostSupport::Abi(abi) => Some(abi),
        HostSupport::Unavailable(_) => None,
    }
}

/// How much of the plan the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforcement {
    /// Everything the plan asks for.
    Full,
    /// Some of it (best-effort on an older kernel): see `missing`.
    Partial,
    /// Nothing (best-effort without Landlock): see `unavailable`.
    None,
    /// The policy turned Landlock off.
    Off,
}

/// What [`apply`] did; sent to purple-init for the exit report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockOutcome {
    pub mode: LandlockMode,
    pub enforcement: Enforcement,
    /// The ABI the kernel reported (not asked when the mode is off).
    pub abi: Option<i32>,
    /// Why Landlock is not available, when it is not.
    pub unavailable: Option<String>,
    /// Filesystem rules added (paths that exist).
    pub path_rules: usize,
    /// Plan paths that did not exist in the sandbox (best-effort only).
    pub skipped_paths: Vec<String>,
    /// Standard streams that got a reopen rule.
    pub stream_rules: usize,
    /// TCP port rules added.
    pub port_rules: usize,
    /// Scopes in force, by name.
    pub scoped: Vec<String>,
    /// Rights and scopes the plan asks for that this kernel lacks, so they
    /// were not enforced: `fs.truncate`, `scope.signal`, ...
    pub missing: Vec<String>,
}

impl LandlockOutcome {
    fn off() -> LandlockOutcome {
        LandlockOutcome {
            mode: LandlockMode::Off,
            enforcement: Enforcement::Off,
            abi: None,
            unavailable: None,
            path_rules: 0,
            skipped_paths: Vec::new(),
            stream_rules: 0,
            port_rules: 0,
            scoped: Vec::new(),
            missing: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock.mode = \"required\", but {reason}")]
    Unavailable { reason: String },
    #[error(
        "landlock.mode = \"required\", but this kernel's Landlock ABI {abi} cannot enforce {missing} \
         (the sandbox needs ABI {needed}, Linux {linux} or newer)"
    )]
    Unsupported {
        abi: i32,
        missing: String,
        needed: i32,
        linux: &'static str,
    },
    #[error("Landlock: {step} {path}: {errno}")]
    Path {
        step: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("Landlock: {step} {path}: {source}")]
    Rule {
        step: &'static str,
        path: String,
        source: RulesetError,
    },
    #[error("Landlock: {step}: {source}")]
    Ruleset {
        step: &'static str,
        source: RulesetError,
    },
    #[error("landlock.mode = \"required\", but the kernel enforced the ruleset only {status}")]
    NotFullyEnforced {
        step: &'static str,
        status: &'static str,
    },
}

impl LandlockError {
    /// The step that failed, for the workload's failure report.
    pub fn step(&self) -> &'static str {
        match self {
            LandlockError::Unavailable { .. } | LandlockError::Unsupported { .. } => {
                "check the kernel's Landlock ABI"
            }
            LandlockError::Path { step, .. }
            | LandlockError::Rule { step, .. }
            | LandlockError::Ruleset { step, .. }
            | LandlockError::NotFullyEnforced { step, .. } => step,
        }
    }

    /// An errno for channels that carry only one.
    pub fn errno(&self) -> Errno {
        match self {
            LandlockError::Unavailable { .. }
            | LandlockError::Unsupported { .. }
            | LandlockError::NotFullyEnforced { .. } => Errno::EOPNOTSUPP,
            LandlockError::Path { errno, .. } => *errno,
            LandlockError::Rule { source, .. } | LandlockError::Ruleset { source, .. } => {
                os_errno(source).unwrap_or(Errno::EINVAL)
            }
        }
    }
}

/// The errno at the bottom of a crate error, if a system call failed.
fn os_errno(error: &(dyn std::error::Error + 'static)) -> Option<Errno> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(Errno::from_raw(code));
        }
        current = e.source();
    }
    None
}

/// Restricts the calling thread (and everything it will execute) to
/// `plan`. Runs in the workload after `pivot_root` (the paths are sandbox
/// paths) and `no_new_privs`, before the seccomp filter, and while the
/// process is single-threaded: Landlock restricts the calling thread only.
///
/// `Required` fails unless the kernel enforces every right, rule and scope
/// of the plan; `BestEffort` enforces what the kernel has and says what it
/// lacks; `Off` does nothing.
pub fn apply(plan: &LandlockPlan, mode: LandlockMode) -> Result<LandlockOutcome, LandlockError> {
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let streams = [
        ("stdin", stdin.as_fd()),
        ("stdout", stdout.as_fd()),
        ("stderr", stderr.as_fd()),
    ];
    apply_with_streams(plan, mode, &streams)
}

/// [`apply`], with the standard streams given (tests pass their own).
fn apply_with_streams(
    plan: &LandlockPlan,
    mode: LandlockMode,
    streams: &[(&str, BorrowedFd<'_>)],
) -> Result<LandlockOutcome, LandlockError> {
    let level = match mode {
        LandlockMode::Off => return Ok(LandlockOutcome::off()),
        LandlockMode::Required => CompatLevel::HardRequirement,
        LandlockMode::BestEffort => CompatLevel::BestEffort,
    };
    let required = mode == LandlockMode::Required;
    if required {
        // Refuse with a clear reason before building anything; the crate's
        // HardRequirement below is the second check.
        check_required(plan, host_support())?;
    }

    let mut ruleset = Ruleset::default().set_compatibility(level);
    (&mut ruleset)
        .handle_access(plan.handled_fs())
        .map_err(ruleset_error("handle filesystem rights"))?;
    let net = plan.handled_net();
    if !net.is_empty() {
        (&mut ruleset)
            .handle_access(net)
            .map_err(ruleset_error("handle TCP rights"))?;
    }
    let scopes = plan.scopes();
    if !scopes.is_empty() {
        (&mut ruleset)
            .scope(scopes)
            .map_err(ruleset_error("scope abstract unix sockets and signals"))?;
    }
    let mut created = ruleset
        .create()
        .map_err(ruleset_error("create the ruleset"))?;

    let mut skipped_paths = Vec::new();
    let mut path_rules = 0;
    for rule in &plan.paths {
        let path = rule.path.as_str();
        let fd = match open_path(path) {
            Ok(fd) => fd,
            // A destination that is not there: nothing to allow beneath it.
            // Best-effort goes on; required refuses a plan that does not
            // match the sandbox it was made for.
            Err(Errno::ENOENT) if !required => {
                skipped_paths.push(path.to_owned());
                continue;
            }
            Err(errno) => {
                return Err(LandlockError::Path {
                    step: "open (O_PATH)",
                    path: path.to_owned(),
                    errno,
                })
            }
        };
        let access = narrow_to_kind(rule.grant.access(), fd.as_fd()).map_err(|errno| {
            LandlockError::Path {
                step: "stat",
                path: path.to_owned(),
                errno,
            }
        })?;
        add_path_rule(&mut created, fd, access, path)?;
        path_rules += 1;
    }

    let mut stream_rules = 0;
    if plan.standard_streams {
        for (name, fd) in streams {
            if add_stream_rule(&mut created, *fd, name)? {
                stream_rules += 1;
            }
        }
    }

    let mut port_rules = 0;
    if let Some(tcp) = &plan.tcp {
        let ports = tcp
            .bind
            .iter()
            .map(|p| (*p, AccessNet::BindTcp, "bind"))
            .chain(
                tcp.connect
                    .iter()
                    .map(|p| (*p, AccessNet::ConnectTcp, "connect")),
            );
        for (port, access, what) in ports {
            (&mut created)
                .add_rule(NetPort::new(port, access))
                .map_err(|source| LandlockError::Rule {
                    step: "add a TCP rule",
                    path: format!("{what} port {port}"),
                    source,
                })?;
            port_rules += 1;
        }
    }

    let status = created
        .restrict_self()
        .map_err(ruleset_error("restrict self"))?;
    let outcome = outcome(
        plan,
        mode,
        &status,
        Counts {
            path_rules,
            skipped_paths,
            stream_rules,
            port_rules,
        },
    );
    if required && outcome.enforcement != Enforcement::Full {
        return Err(LandlockError::NotFullyEnforced {
            step: "restrict self",
            status: match status.ruleset {
                RulesetStatus::PartiallyEnforced => "partially",
                _ => "not at all",
            },
        });
    }
    Ok(outcome)
}

fn check_required(plan: &LandlockPlan, support: HostSupport) -> Result<(), LandlockError> {
    match support {
        HostSupport::Abi(abi) => {
            let missing = plan.missing_at(ABI::from(abi));
            if missing.is_empty() {
                Ok(())
            } else {
                let needed = plan.needed_abi();
                Err(LandlockError::Unsupported {
                    abi,
                    missing: missing.join(", "),
                    needed,
                    linux: linux_with_abi(needed),
                })
            }
        }
        unavailable => Err(LandlockError::Unavailable {
            reason: unavailable.reason(),
        }),
    }
}

/// The first Linux release with a Landlock ABI.
fn linux_with_abi(abi: i32) -> &'static str {
    match abi {
        ..=1 => "5.13",
        2 => "5.19",
        3 => "6.2",
        4 => "6.7",
        5 => "6.10",
        6 => "6.12",
        7 => "6.15",
        8 => "7.0",
        9 => "7.1",
        _ => "7.2",
    }
}

fn ruleset_error(step: &'static str) -> impl FnOnce(RulesetError) -> LandlockError {
    move |source| LandlockError::Ruleset { step, source }
}

/// Opens a sandbox path with `O_PATH`, refusing symlinks on the way as the
/// mount code does: a rule must land on the mount the plan placed there,
/// never on a link's target.
fn open_path(path: &str) -> Result<OwnedFd, Errno> {
    sys::openat2(
        sys::cwd(),
        path,
        libc::O_PATH | libc::O_CLOEXEC,
        0,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// A rule on a non-directory may hold only file rights (the kernel refuses
/// the rest with EINVAL): a bound file keeps read/write/execute/truncate.
fn narrow_to_kind(
    access: BitFlags<AccessFs>,
    fd: BorrowedFd<'_>,
) -> Result<BitFlags<AccessFs>, Errno> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Ok(access)
    } else {
        Ok(access & AccessFs::from_file(TARGET_ABI))
    }
}

fn add_path_rule(
    created: &mut RulesetCreated,
    fd: OwnedFd,
    access: BitFlags<AccessFs>,
    path: &str,
) -> Result<(), LandlockError> {
    created
        .add_rule(PathBeneath::new(fd, access))
        .map(|_| ())
        .map_err(|source| LandlockError::Rule {
            step: "add a filesystem rule",
            path: path.to_owned(),
            source,
        })
}

/// The reopen rights one standard stream gets: exactly its open mode.
/// `None` for pipes and sockets (reopening them is never restricted) and
/// for a closed descriptor.
fn stream_access(fd: BorrowedFd<'_>) -> Result<Option<BitFlags<AccessFs>>, Errno> {
    let stat = match nix::sys::stat::fstat(fd.as_raw_fd()) {
        Ok(stat) => stat,
        Err(Errno::EBADF) => return Ok(None),
        Err(errno) => return Err(errno),
    };
    let kind = stat.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFCHR {
        return Ok(None);
    }
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let mut access = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => BitFlags::from(AccessFs::ReadFile),
        // Truncate adds nothing: ftruncate on the held descriptor can.
        libc::O_WRONLY => AccessFs::WriteFile | AccessFs::Truncate,
        libc::O_RDWR => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
        _ => BitFlags::EMPTY,
    };
    if kind == libc::S_IFCHR && !access.is_empty() {
        // A terminal: the held descriptor may already use its ioctls.
        access |= AccessFs::IoctlDev;
    }
    Ok((!access.is_empty()).then_some(access))
}

fn add_stream_rule(
    created: &mut RulesetCreated,
    fd: BorrowedFd<'_>,
    name: &str,
) -> Result<bool, LandlockError> {
    let access = stream_access(fd).map_err(|errno| LandlockError::Path {
        step: "inspect standard stream",
        path: name.to_owned(),
        errno,
    })?;
    let Some(access) = access else {
        return Ok(false);
    };
    match created.add_rule(PathBeneath::new(fd, access)) {
        Ok(_) => Ok(true),
        // A file on a kernel-internal mount (a memfd): the kernel takes no
        // rule for it, and never restricts reopening it either.
        Err(source) if os_errno(&source) == Some(Errno::EBADFD) => Ok(false),
        Err(source) => Err(LandlockError::Rule {
            step: "add a standard stream rule",
            path: name.to_owned(),
            source,
        }),
    }
}

struct Counts {
    path_rules: usize,
    skipped_paths: Vec<String>,
    stream_rules: usize,
    port_rules: usize,
}

/// Turns the crate's status into the outcome: the ABI the kernel reported,
/// the ruleset status it gave, and what the plan asked that the kernel
/// lacks.
fn outcome(
    plan: &LandlockPlan,
    mode: LandlockMode,
    status: &RestrictionStatus,
    counts: Counts,
) -> LandlockOutcome {
    let (abi, effective, unavailable) = match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => (
            Some(kernel_abi.unwrap_or(effective_abi as i32)),
            effective_abi,
            None,
        ),
        LandlockStatus::NotEnabled => (
            None,
            ABI::Unsupported,
            Some(HostSupport::Unavailable(Errno::EOPNOTSUPP).reason()),
        ),
        LandlockStatus::NotImplemented => (
            None,
            ABI::Unsupported,
            Some(HostSupport::Unavailable(Errno::ENOSYS).reason()),
        ),
    };
    let enforcement = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    };
    let (path_rules, stream_rules, port_rules) = if enforcement == Enforcement::None {
        (0, 0, 0)
    } else {
        (counts.path_rules, counts.stream_rules, counts.port_rules)
    };
    let scoped = if enforcement == Enforcement::None {
        Vec::new()
    } else {
        (plan.scopes() & Scope::from_all(effective))
            .iter()
            .map(|s| scope_name(s).to_owned())
            .collect()
    };
    LandlockOutcome {
        mode,
        enforcement,
        abi,
        unavailable,
        path_rules,
        skipped_paths: counts.skipped_paths,
        stream_rules,
        port_rules,
        scoped,
        missing: plan.missing_at(effective),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The one-line text for the exit report's `landlock` field.
pub fn describe(outcome: &LandlockOutcome) -> String {
    let abi = outcome
        .abi
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let head = match outcome.enforcement {
        Enforcement::Off => return "off (policy)".to_owned(),
        Enforcement::None => {
            return format!(
                "not enforced (best-effort): {}",
                outcome
                    .unavailable
                    .as_deref()
                    .unwrap_or("the kernel supports none of the requested rights")
            )
        }
        Enforcement::Full => format!("enforced (ABI {abi})"),
        Enforcement::Partial => format!("partially enforced (ABI {abi}, best-effort)"),
    };
    let mut parts = Vec::new();
    let mut files = format!(
        "filesystem rules for {}",
        count(outcome.path_rules, "path", "paths")
    );
    if outcome.stream_rules > 0 {
        files.push_str(&format!(
            " and {}",
            count(outcome.stream_rules, "standard stream", "standard streams")
        ));
    }
    if !outcome.skipped_paths.is_empty() {
        const SHOWN: usize = 4;
        let mut shown: Vec<&str> = outcome
            .skipped_paths
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect();
        if outcome.skipped_paths.len() > SHOWN {
            shown.push("...");
        }
        files.push_str(&format!(
            " ({} missing in the sandbox, skipped: {})",
            outcome.skipped_paths.len(),
            shown.join(", ")
        ));
    }
    parts.push(files);
    if outcome.port_rules > 0 {
        parts.push(format!(
            "TCP rules for {}",
            count(outcome.port_rules, "port", "ports")
        ));
    }
    let has = |name: &str| outcome.scoped.iter().any(|s| s == name);
    match (has("abstract_unix_socket"), has("signal")) {
        (true, true) => parts.push("abstract unix sockets and signals scoped".into()),
        (true, false) => parts.push("abstract unix sockets scoped".into()),
        (false, true) => parts.push("signals scoped".into()),
        (false, false) => {}
    }
    let mut line = format!("{head}: {}", parts.join(", "));
    if !outcome.missing.is_empty() {
        line.push_str(&format!(
            "; not enforced, the kernel lacks: {}",
            outcome.missing.join(", ")
        ));
    }
    line
}

/// Whether a [`describe`] line says Landlock enforced TCP port rules (some
/// applied, and the kernel lacked no network right): what the report may
/// claim of the filtered network's second layer.
pub fn summary_enforces_tcp(summary: &str) -> bool {
    let (enforced, lacking) = summary
        .split_once("; not enforced, the kernel lacks: ")
        .unwrap_or((summary, ""));
    let applied = enforced.starts_with("enforced") || enforced.starts_with("partially enforced");
    applied && enforced.contains(", TCP rules for ") && !lacking.contains("net.")
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    use purple_common::policy::Policy;

    use super::*;
    use crate::plan::{self, Identity, InspectedBind};

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

    fn derived(binds: &[InspectedBind]) -> LandlockPlan {
        let identity = Identity {
            uid: 1000,
            gid: 1000,
        };
        let plan = plan::build(
            &Policy::default(),
            &["true".into()],
            binds,
            identity,
            "alice",
            &crate::limits::defaults_for_tests(),
            None,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        LandlockPlan::from_plan(&plan)
    }

    fn rules(plan: &LandlockPlan) -> Vec<(&str, Grant)> {
        plan.paths
            .iter()
            .map(|r| (r.path.as_str(), r.grant))
            .collect()
    }

    #[test]
    fn rules_mirror_the_mount_plan_and_nothing_else() {
        let plan = derived(&[
            bind(0, "/usr", false, true),
            bind(1, "/etc/ld.so.cache", false, false),
            bind(2, "/workspace", true, true),
            bind(3, "/workspace/.git", false, true),
        ]);
        assert_eq!(
            rules(&plan),
            [
                ("/", Grant::Read),
                ("/usr", Grant::ReadExecute),
                ("/workspace", Grant::Full),
                ("/tmp", Grant::Full),
                ("/etc/ld.so.cache", Grant::ReadExecute),
                ("/workspace/.git", Grant::ReadExecute),
                ("/dev/null", Grant::Device),
                ("/dev/zero", Grant::Device),
                ("/dev/full", Grant::Device),
                ("/dev/random", Grant::Device),
                ("/dev/urandom", Grant::Device),
                ("/dev/tty", Grant::Device),
                ("/dev/pts", Grant::Full),
                ("/dev/shm", Grant::Full),
                ("/proc", Grant::Proc),
            ]
        );
        assert!(plan.standard_streams);
        assert!(plan.scope_abstract_unix_sockets && plan.scope_signals);
        // Network mode "none": Landlock leaves TCP alone (loopback only).
        assert_eq!(plan.tcp, None);
        assert!(plan.handled_net().is_empty());
        assert_eq!(plan.handled_fs(), AccessFs::from_all(ABI::V7));
    }

    #[test]
    fn every_mount_of_the_default_plan_gets_a_rule() {
        let plan = derived(&[]);
        assert_eq!(
            rules(&plan)[..2],
            [("/", Grant::Read), ("/tmp", Grant::Full)]
        );
        assert_eq!(plan.paths.len(), 2 + DEVICES.len() + 3);
    }

    #[test]
    fn grants_give_what_their_comment_says() {
        let write = AccessFs::from_write(TARGET_ABI);
        assert!((Grant::Read.access() & write).is_empty());
        assert!(!Grant::Read.access().contains(AccessFs::Execute));
        assert!((Grant::ReadExecute.access() & write).is_empty());
        assert!(Grant::ReadExecute.access().contains(AccessFs::Execute));
        assert_eq!(Grant::Full.access(), AccessFs::from_all(TARGET_ABI));
        assert!(!Grant::Proc.access().contains(AccessFs::Execute));
        assert!(Grant::Proc
            .access()
            .contains(AccessFs::WriteFile | AccessFs::Truncate | AccessFs::ReadDir));
        assert!(
            (Grant::Proc.access() & (write & !(AccessFs::WriteFile | AccessFs::Truncate)))
                .is_empty()
        );
        assert_eq!(
            Grant::Device.access(),
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev
        );
        // Every grant fits in what the ruleset handles (the crate refuses
        // a rule with an unhandled right).
        for grant in [
            Grant::Read,
            Grant::ReadExecute,
            Grant::Full,
            Grant::Device,
            Grant::Proc,
        ] {
            assert!(AccessFs::from_all(TARGET_ABI).contains(grant.access()));
        }
    }

    #[test]
    fn what_each_abi_lacks() {
        let mut plan = derived(&[]);
        let scopes = ["scope.abstract_unix_socket", "scope.signal"];
        assert!(plan.missing_at(ABI::V7).is_empty());
        assert!(plan.missing_at(ABI::V6).is_empty());
        assert_eq!(plan.missing_at(ABI::V5), scopes);
        assert_eq!(
            plan.missing_at(ABI::V4),
            ["fs.ioctl_dev", scopes[0], scopes[1]]
        );
        assert_eq!(
            plan.missing_at(ABI::V2),
            ["fs.truncate", "fs.ioctl_dev", scopes[0], scopes[1]]
        );
        assert_eq!(
            plan.missing_at(ABI::V1),
            [
                "fs.refer",
                "fs.truncate",
                "fs.ioctl_dev",
                scopes[0],
                scopes[1]
            ]
        );
        assert_eq!(plan.missing_at(ABI::Unsupported).len(), 16 + 2);
        assert_eq!(plan.needed_abi(), 6);
        plan.tcp = Some(TcpRules::default());
        assert_eq!(
            plan.missing_at(ABI::V3),
            [
                "fs.ioctl_dev",
                "net.bind_tcp",
                "net.connect_tcp",
                scopes[0],
                scopes[1]
            ]
        );
        plan.scope_abstract_unix_sockets = false;
        plan.scope_signals = false;
        assert_eq!(plan.needed_abi(), 5);
    }

    #[test]
    fn required_refuses_a_kernel_that_lacks_something() {
        let plan = derived(&[]);
        let err = check_required(&plan, HostSupport::Abi(5));
        let Err(
            err @ LandlockError::Unsupported {
                abi: 5, needed: 6, ..
            },
        ) = err
        else {
            unreachable!("{err:?}")
        };
        assert!(err.to_string().contains(
            "scope.abstract_unix_socket, scope.signal (the sandbox needs ABI 6, Linux 6.12"
        ));
        assert_eq!(err.errno(), Errno::EOPNOTSUPP);
        assert_eq!(err.step(), "check the kernel's Landlock ABI");
        let err = check_required(&plan, HostSupport::Unavailable(Errno::EOPNOTSUPP));
        assert!(
            matches!(&err, Err(LandlockError::Unavailable { reason }) if reason.contains("lsm=")),
            "{err:?}"
        );
        assert!(check_required(&plan, HostSupport::Abi(6)).is_ok());
        assert!(check_required(&plan, HostSupport::Abi(42)).is_ok());
    }

    fn outcome_with(enforcement: Enforcement) -> LandlockOutcome {
        LandlockOutcome {
            mode: LandlockMode::BestEffort,
            enforcement,
            abi: Some(7),
            unavailable: None,
            path_rules: 34,
            skipped_paths: Vec::new(),
            stream_rules: 0,
            port_rules: 0,
            scoped: vec!["abstract_unix_socket".into(), "signal".into()],
            missing: Vec::new(),
        }
    }

    #[test]
    fn descriptions() {
        let full = outcome_with(Enforcement::Full);
        assert_eq!(
            describe(&full),
            "enforced (ABI 7): filesystem rules for 34 paths, abstract unix sockets and signals scoped"
        );
        let partial = LandlockOutcome {
            abi: Some(5),
            stream_rules: 2,
            skipped_paths: vec!["/opt/x".into()],
            scoped: Vec::new(),
            missing: vec!["scope.abstract_unix_socket".into(), "scope.signal".into()],
            ..outcome_with(Enforcement::Partial)
        };
        assert_eq!(
            describe(&partial),
            "partially enforced (ABI 5, best-effort): filesystem rules for 34 paths and 2 \
             standard streams (1 missing in the sandbox, skipped: /opt/x); not enforced, the \
             kernel lacks: scope.abstract_unix_socket, scope.signal"
        );
        let none = LandlockOutcome {
            abi: None,
            unavailable: Some(HostSupport::Unavailable(Errno::ENOSYS).reason()),
            ..outcome_with(Enforcement::None)
        };
        assert!(
            describe(&none).starts_with("not enforced (best-effort): this kernel has no Landlock")
        );
        assert_eq!(describe(&LandlockOutcome::off()), "off (policy)");
    }

    #[test]
    fn off_does_nothing() {
        // Not even a probe: a path that does not exist is not opened.
        let plan = LandlockPlan {
            paths: vec![PathRule {
                path: p("/nonexistent/purple"),
                grant: Grant::Full,
            }],
            ..derived(&[])
        };
        let outcome = apply(&plan, LandlockMode::Off).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(outcome, LandlockOutcome::off());
    }

    #[test]
    fn standard_stream_rights_are_their_open_mode() {
        let dir = Scratch::new("streams");
        let file = dir.file("f");
        let open = |mode: libc::c_int| {
            std::fs::OpenOptions::new()
                .read(mode != libc::O_WRONLY)
                .write(mode != libc::O_RDONLY)
                .open(&file)
                .unwrap_or_else(|e| unreachable!("{e}"))
        };
        let access =
            |f: &std::fs::File| stream_access(f.as_fd()).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            access(&open(libc::O_RDONLY)),
            Some(AccessFs::ReadFile.into())
        );
        assert_eq!(
            access(&open(libc::O_WRONLY)),
            Some(AccessFs::WriteFile | AccessFs::Truncate)
        );
        assert_eq!(
            access(&open(libc::O_RDWR)),
            Some(AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate)
        );
        let (read, _write) = nix::unistd::pipe().unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(stream_access(read.as_fd()), Ok(None));
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            access(&null),
            Some(AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev)
        );
    }

    #[test]
    fn rules_on_files_hold_only_file_rights() {
        let dir = Scratch::new("narrow");
        let file = std::fs::File::open(dir.file("f")).unwrap_or_else(|e| unreachable!("{e}"));
        let narrowed = narrow_to_kind(Grant::ReadExecute.access(), file.as_fd());
        assert_eq!(narrowed, Ok(AccessFs::ReadFile | AccessFs::Execute));
        let d = std::fs::File::open(&dir.0).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            narrow_to_kind(Grant::Full.access(), d.as_fd()),
            Ok(Grant::Full.access())
        );
    }

    // ---- Against the kernel. Landlock restricts only the calling thread
    // (without ABI 8's TSYNC), so each test applies a plan in a thread of
    // its own, which then ends: the rest of the test process is untouched,
    // and nothing needs root or a fork from this multithreaded process.

    /// A directory of the test's own under the temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let base =
                std::fs::canonicalize(std::env::temp_dir()).unwrap_or_else(|e| unreachable!("{e}"));
            let dir = base.join(format!("purple-landlock-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
            Scratch(dir)
        }

        fn dir(&self, name: &str) -> PathBuf {
            let d = self.0.join(name);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| unreachable!("{e}"));
            d
        }

        fn file(&self, name: &str) -> PathBuf {
            let f = self.0.join(name);
            if let Some(parent) = f.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| unreachable!("{e}"));
            }
            std::fs::write(&f, b"data").unwrap_or_else(|e| unreachable!("{e}"));
            f
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn abs(path: &Path) -> AbsPath {
        p(&path.to_string_lossy())
    }

    fn plan_of(paths: &[(&Path, Grant)]) -> LandlockPlan {
        LandlockPlan {
            paths: paths
                .iter()
                .map(|(path, grant)| PathRule {
                    path: abs(path),
                    grant: *grant,
                })
                .collect(),
            standard_streams: false,
            tcp: None,
            scope_abstract_unix_sockets: true,
            scope_signals: true,
        }
    }

    /// The kernel tests need Landlock: skipped with a message locally,
    /// never under CI (tests/support's rule).
    fn landlock_or_skip(test: &str) -> bool {
        if host_abi().is_some() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: Landlock is not available on this kernel ({}), and CI must run this test",
            host_support().reason()
        );
        eprintln!("SKIP {test}: {}", host_support().reason());
        false
    }

    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f)
            .join()
            .unwrap_or_else(|_| unreachable!("the restricted thread panicked"))
    }

    fn write_file(path: &Path) -> Result<(), ErrorKind> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.kind())
    }

    fn read_file(path: &Path) -> Result<(), ErrorKind> {
        std::fs::read(path).map(drop).map_err(|e| e.kind())
    }

    #[test]
    fn read_only_paths_refuse_writes_and_read_write_paths_accept_them() {
        if !landlock_or_skip("read_only_paths_refuse_writes_and_read_write_paths_accept_them") {
            return;
        }
        let scratch = Scratch::new("rw");
        let (ro, rw) = (scratch.dir("ro"), scratch.dir("rw"));
        let ro_file = scratch.file("ro/f");
        let outside = scratch.file("outside/f");
        let plan = plan_of(&[(&ro, Grant::ReadExecute), (&rw, Grant::Full)]);
        let (outcome, checks) = in_thread(move || {
            let outcome = apply(&plan, LandlockMode::Required);
            let checks = [
                write_file(&ro_file),
                write_file(&ro.join("new")),
                std::fs::create_dir(ro.join("d")).map_err(|e| e.kind()),
                read_file(&ro_file),
                write_file(&rw.join("new")),
                std::fs::create_dir(rw.join("d")).map_err(|e| e.kind()),
                std::fs::rename(rw.join("new"), rw.join("d/moved")).map_err(|e| e.kind()),
                std::fs::remove_file(rw.join("d/moved")).map_err(|e| e.kind()),
                read_file(&outside),
                write_file(&outside),
            ];
            (outcome.map_err(|e| e.to_string()), checks)
        });
        let outcome = outcome.unwrap_or_else(|e| unreachable!("{e}"));
        use ErrorKind::PermissionDenied as Denied;
        assert_eq!(
            checks,
            [
                Err(Denied),
                Err(Denied),
                Err(Denied),
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                Err(Denied),
                Err(Denied),
            ]
        );
        assert_eq!(outcome.enforcement, Enforcement::Full);
        assert!(outcome.abi.is_some_and(|abi| abi >= 6));
        assert_eq!(outcome.path_rules, 2);
        assert_eq!(outcome.scoped, ["abstract_unix_socket", "signal"]);
        assert!(outcome.missing.is_empty());
        assert!(
            describe(&outcome).starts_with("enforced (ABI "),
            "{}",
            describe(&outcome)
        );
        // This thread was never restricted.
        assert_eq!(write_file(&scratch.0.join("outside/f")), Ok(()));
    }

    #[test]
    fn execute_needs_a_read_only_or_writable_tree() {
        if !landlock_or_skip("execute_needs_a_read_only_or_writable_tree") {
            return;
        }
        let Ok(program) = std::fs::canonicalize("/bin/true") else {
            unreachable!("no /bin/true")
        };
        let run = |plan: LandlockPlan| {
            let program = program.clone();
            in_thread(move || {
                apply(&plan, LandlockMode::Required).map_err(|e| e.to_string())?;
                std::process::Command::new(&program)
                    .status()
                    .map(|s| s.success())
                    .map_err(|e| format!("{:?}", e.kind()))
            })
        };
        let usr = Path::new("/usr");
        assert_eq!(run(plan_of(&[(usr, Grant::ReadExecute)])), Ok(true));
        // Read alone (the root's grant, /proc's) does not let it run.
        assert_eq!(
            run(plan_of(&[(usr, Grant::Read)])),
            Err("PermissionDenied".to_owned())
        );
    }

    #[test]
    fn missing_paths_are_skipped_in_best_effort_and_refused_when_required() {
        if !landlock_or_skip("missing_paths_are_skipped_in_best_effort_and_refused_when_required") {
            return;
        }
        let scratch = Scratch::new("missing");
        let rw = scratch.dir("rw");
        let gone = scratch.0.join("gone");
        let plan = plan_of(&[(&rw, Grant::Full), (&gone, Grant::ReadExecute)]);
        let required = plan.clone();
        let err = in_thread(move || apply(&required, LandlockMode::Required).err());
        assert!(
            matches!(
                &err,
                Some(LandlockError::Path { errno: Errno::ENOENT, path, .. }) if path.ends_with("/gone")
            ),
            "{err:?}"
        );
        let (outcome, write) = in_thread(move || {
            let outcome = apply(&plan, LandlockMode::BestEffort).map_err(|e| e.to_string());
            (outcome, write_file(&rw.join("f")))
        });
        let outcome = outcome.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(write, Ok(()));
        assert_eq!(outcome.path_rules, 1);
        assert_eq!(outcome.skipped_paths, [gone.to_string_lossy()]);
        assert!(describe(&outcome).contains("1 missing in the sandbox, skipped:"));
    }

    #[test]
    fn a_symlink_in_a_rule_path_is_refused() {
        if !landlock_or_skip("a_symlink_in_a_rule_path_is_refused") {
            return;
        }
        let scratch = Scratch::new("symlink");
        let target = scratch.dir("target");
        let link = scratch.0.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap_or_else(|e| unreachable!("{e}"));
        let plan = plan_of(&[(&link, Grant::Full)]);
        let err = in_thread(move || apply(&plan, LandlockMode::BestEffort).err());
        assert!(
            matches!(
                &err,
                Some(LandlockError::Path {
                    errno: Errno::ELOOP,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn standard_streams_reopen_with_their_own_mode_only() {
        if !landlock_or_skip("standard_streams_reopen_with_their_own_mode_only") {
            return;
        }
        let scratch = Scratch::new("reopen");
        let out_path = scratch.file("out");
        let other_path = scratch.file("other");
        let (checks, rules) = in_thread(move || {
            let open = |path: &Path, write: bool| {
                std::fs::OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .unwrap_or_else(|e| unreachable!("{e}"))
            };
            // "stdout": the caller's output file, outside every rule.
            let out = open(&out_path, true);
            // Another file held open, not a standard stream.
            let other = open(&other_path, true);
            let plan = LandlockPlan {
                standard_streams: true,
                ..plan_of(&[])
            };
            let outcome =
                apply_with_streams(&plan, LandlockMode::Required, &[("stdout", out.as_fd())])
                    .unwrap_or_else(|e| unreachable!("{e}"));
            let reopen = |fd: &std::fs::File, write: bool| {
                let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                if write {
                    write_file(Path::new(&path))
                } else {
                    read_file(Path::new(&path))
                }
            };
            (
                [
                    reopen(&out, true),
                    reopen(&out, false),
                    reopen(&other, true),
                ],
                outcome.stream_rules,
            )
        });
        use ErrorKind::PermissionDenied as Denied;
        assert_eq!(checks, [Ok(()), Err(Denied), Err(Denied)]);
        assert_eq!(rules, 1);
    }

    #[test]
    fn abstract_unix_sockets_and_signals_outside_are_scoped() {
        if !landlock_or_skip("abstract_unix_sockets_and_signals_outside_are_scoped") {
            return;
        }
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
        let name = format!("purple-landlock-test-{}", std::process::id());
        let addr =
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
        let _listener = UnixListener::bind_addr(&addr).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(UnixStream::connect_addr(&addr).is_ok());
        // A process of ours (same uid) started outside the domain.
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap_or_else(|e| unreachable!("{e}"))
        };
        let mut outside = sleep();
        let outside_pid = nix::unistd::Pid::from_raw(outside.id() as i32);
        assert_eq!(nix::sys::signal::kill(outside_pid, None), Ok(()));
        let plan = plan_of(&[(Path::new("/usr"), Grant::ReadExecute)]);
        let (connect, signal_outside, signal_inside) = in_thread(move || {
            apply(&plan, LandlockMode::Required).unwrap_or_else(|e| unreachable!("{e}"));
            // Started inside the domain: signals still reach it.
            let mut inside = sleep();
            let inside_pid = nix::unistd::Pid::from_raw(inside.id() as i32);
            let signal_inside = nix::sys::signal::kill(inside_pid, None);
            let _ = inside.kill();
            let _ = inside.wait();
            (
                UnixStream::connect_addr(&addr)
                    .map(drop)
                    .map_err(|e| e.kind()),
                nix::sys::signal::kill(outside_pid, None),
                signal_inside,
            )
        });
        let _ = outside.kill();
        let _ = outside.wait();
        assert_eq!(connect, Err(ErrorKind::PermissionDenied));
        assert_eq!(signal_outside, Err(Errno::EPERM));
        assert_eq!(signal_inside, Ok(()));
    }

    #[test]
    fn tcp_ports_not_listed_cannot_be_bound_or_connected() {
        if !landlock_or_skip("tcp_ports_not_listed_cannot_be_bound_or_connected") {
            return;
        }
        use std::net::{TcpListener, TcpStream};
        let listen = || TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| unreachable!("{e}"));
        let (allowed, other) = (listen(), listen());
        let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
        let (allowed_port, other_port) = (port(&allowed), port(&other));
        let plan = LandlockPlan {
            tcp: Some(TcpRules {
                bind: Vec::new(),
                connect: vec![allowed_port],
            }),
            ..plan_of(&[])
        };
        let (outcome, checks) = in_thread(move || {
            let outcome =
                apply(&plan, LandlockMode::Required).unwrap_or_else(|e| unreachable!("{e}"));
            let connect = |port: u16| {
                TcpStream::connect(("127.0.0.1", port))
                    .map(drop)
                    .map_err(|e| e.kind())
            };
            (
                outcome,
                [
                    connect(allowed_port),
                    connect(other_port),
                    TcpListener::bind("127.0.0.1:0")
                        .map(drop)
                        .map_err(|e| e.kind()),
                ],
            )
        });
        use ErrorKind::PermissionDenied as Denied;
        assert_eq!(checks, [Ok(()), Err(Denied), Err(Denied)]);
        assert_eq!(outcome.port_rules, 1);
        assert!(describe(&outcome).contains("TCP rules for 1 port,"));
    }

    #[test]
    fn the_summary_tells_whether_tcp_was_enforced() {
        let mut outcome = LandlockOutcome {
            enforcement: Enforcement::Full,
            path_rules: 3,
            port_rules: 2,
            ..LandlockOutcome::off()
        };
        assert!(summary_enforces_tcp(&describe(&outcome)));
        outcome.missing = vec!["net.connect_tcp".into(), "net.bind_tcp".into()];
        outcome.enforcement = Enforcement::Partial;
        assert!(!summary_enforces_tcp(&describe(&outcome)));
        outcome.missing.clear();
        outcome.port_rules = 0;
        assert!(!summary_enforces_tcp(&describe(&outcome)));
        outcome.port_rules = 2;
        outcome.enforcement = Enforcement::Off;
        assert!(!summary_enforces_tcp(&describe(&outcome)));
        assert!(!summary_enforces_tcp(
            "unknown: the command did not get as far as Landlock"
        ));
    }
}
