//! The exit report: how a sandbox ended and what isolation it actually had.
//!
//! Written by purple-init (the trusted side), sent to the supervisor, which
//! prints it as JSON for `--report FILE`. The schema is documented in
//! docs/exit-report.md; fields are only ever added, and `schema_version`
//! changes when a field changes meaning.

use serde::{Deserialize, Serialize};

pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// Exit status of `purple-supervisor run` when Purple itself failed or refused.
pub const EXIT_PURPLE_FAILED: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_TIMEOUT: i32 = 124;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command exited on its own; `exit_code` is its status.
    Exited,
    /// The command died of a signal; `exit_code` is 128 + signal.
    Signaled,
    /// The wall-clock timeout ended the sandbox (exit code 124).
    Timeout,
    /// Purple was asked to stop (SIGINT, SIGTERM, SIGHUP) and ended the sandbox.
    Interrupted,
    /// The command was not found in the sandbox (exit code 127).
    NotFound,
    /// The command was found but could not be executed (exit code 126).
    NotExecutable,
    /// The request was refused before anything was set up (exit code 125).
    Refused,
    /// Setting the sandbox up failed (exit code 125).
    SetupFailed,
    // New variants go last: the wire codec numbers variants by position.
    /// The seccomp filter killed the command (SIGSYS): a syscall the policy
    /// denies with action "kill", or one of a foreign ABI. Exit code 159.
    SeccompViolation,
    /// The memory limit killed a process (the cgroup's OOM killer) and the
    /// command did not succeed. `exit_code` is the command's own (137 when
    /// it was the one killed).
    Oom,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Signaled => "signaled",
            Outcome::SeccompViolation => "seccomp_violation",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
            Outcome::NotFound => "not_found",
            Outcome::NotExecutable => "not_executable",
            Outcome::Refused => "refused",
            Outcome::SetupFailed => "setup_failed",
            Outcome::Oom => "oom",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub schema_version: u32,
    /// UUID v4 chosen by purple-init.
    pub sandbox_id: String,
    pub command: Vec<String>,
    pub status: Outcome,
    /// What `purple-supervisor run` exits with.
    pub exit_code: i32,
    /// The signal that ended the command (`signaled`) or Purple (`interrupted`).
    pub signal: Option<i32>,
    /// Wall time from the request being accepted to the sandbox being gone.
    pub wall_time_ms: u64,
    /// For refused / setup_failed / not_found / not_executable: what and why,
    /// in one line.
    pub message: Option<String>,
    /// What was actually enforced; absent when nothing was set up.
    pub isolation: Option<Isolation>,
    /// What the sandbox used, read from its cgroup; absent when no cgroup
    /// was applied or nothing ran.
    pub usage: Option<Usage>,
    /// Limits the sandbox ran into (counted even when the run went on).
    pub limit_events: LimitEvents,
    /// The limit that ended the run, when one did: `memory`, `timeout`,
    /// `cpu_time` or `file_size`.
    pub limit_hit: Option<String>,
}

/// Resource usage of the whole sandbox. A field is absent when this host's
/// cgroup does not report it (e.g. `pids_peak` before Linux 6.1 on v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub memory_peak_bytes: Option<u64>,
    pub cpu_user_ms: Option<u64>,
    pub cpu_system_ms: Option<u64>,
    pub pids_peak: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitEvents {
    /// Processes the memory limit's OOM killer ended.
    pub oom_kills: u64,
    /// fork/clone calls refused because the pids limit was reached.
    pub pids_limit_hits: u64,
}

/// The limits the sandbox actually ran under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLimits {
    /// Where the cgroup limits came from: `cgroup v1`, `cgroup v2`, or
    /// `none: <why>` (best-effort mode on a host without usable cgroups).
    pub cgroup: String,
    /// The sandbox's cgroup, relative to the hierarchy root.
    pub cgroup_path: Option<String>,
    pub memory_bytes: Option<u64>,
    pub memory_high_bytes: Option<u64>,
    /// Swap the sandbox may use beyond `memory_bytes`: 0, or absent when the
    /// host cannot bound it (no swap accounting; then `swap_note` says so).
    pub swap_bytes: Option<u64>,
    pub swap_note: Option<String>,
    pub pids: Option<u32>,
    /// CPUs of bandwidth, in thousandths (500 = half a CPU).
    pub millicpus: Option<u32>,
    pub cpu_weight: Option<u32>,
    /// Per-process limits (setrlimit), set on every sandbox.
    pub cpu_time_s: Option<u64>,
    pub open_files: u64,
    pub file_size_bytes: Option<u64>,
    pub core_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub inside: u32,
    pub outside: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub destination: String,
    /// `bind`, `tmpfs`, `proc`, `devpts`, `mask`.
    pub kind: String,
    pub read_only: bool,
    /// Host path the supervisor opened, for binds (informational: the mount
    /// was made from the file descriptor, not from this path).
    pub source: Option<String>,
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySets {
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub bounding: Vec<String>,
    pub ambient: Vec<String>,
}

/// A filtered network: what purple-netd set up, and what its rules counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The sandbox's address with its prefix, e.g. `10.200.0.2/30`.
    pub address: String,
    pub gateway: String,
    /// The host end of the veth pair.
    pub host_interface: String,
    pub allow_out: Vec<String>,
    pub allow_in: Vec<String>,
    /// Whether Landlock mirrors the TCP ports as a second layer (not when
    /// the rules name more ports than it takes one by one).
    pub landlock_tcp: bool,
    /// Packets and bytes allowed and dropped, each way; null when purple-netd
    /// could not say (see `detach_error`).
    pub counters: Option<crate::netd::NetCounters>,
    pub detach_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// Namespaces the sandbox got: user, mnt, pid, net, ipc, uts, cgroup.
    pub namespaces: Vec<String>,
    pub uid_map: IdMapping,
    pub gid_map: IdMapping,
    pub hostname: String,
    /// `loopback-only` for network mode none, `filtered` for purple-netd's.
    pub network: String,
    /// The filtered network's details; null for `loopback-only`.
    #[serde(default)]
    pub network_filtered: Option<NetworkRecord>,
    pub root_read_only: bool,
    pub mounts: Vec<MountRecord>,
    pub masked_paths: Vec<String>,
    pub no_new_privs: bool,
    /// The capability sets the command was started with.
    pub capabilities: CapabilitySets,
    pub new_session: bool,
    /// Wall-clock timeout in milliseconds, when one was set.
    pub timeout_ms: Option<u64>,
    /// Mechanisms of later issues, stated as what holds now
    /// (e.g. `not applied: policy mode best-effort, not built yet`).
    pub seccomp: String,
    pub landlock: String,
    /// One line: the cgroup version and path, or why there is none.
    pub cgroup: String,
    pub limits: Option<AppliedLimits>,
}
