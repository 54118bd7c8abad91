//! Turning how the sandbox ended into the exit report, and stating the
//! isolation that was actually applied.

use purple_common::policy::{LandlockMode, Policy};
use purple_common::report::{
    AppliedLimits, CapabilitySets, ExitReport, IdMapping, Isolation, MountRecord, Outcome,
    EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_PURPLE_FAILED, EXIT_TIMEOUT, REPORT_SCHEMA_VERSION,
};

use crate::cgroup::counters::Counters;
use crate::cgroup::SwapBound;
use crate::plan::{MountStep, Plan};
use crate::sandbox::child::{MASKED_PROC_DIRS, MASKED_PROC_FILES, READ_ONLY_PROC_DIRS};
use crate::sandbox::{ChildMessage, NAMESPACES};
use crate::supervise::Ending;
use purple_common::values::ByteSize;

pub struct ReportContext<'a> {
    pub sandbox_id: &'a str,
    pub argv: &'a [String],
    pub started: std::time::Instant,
}

impl ReportContext<'_> {
    fn base(&self, status: Outcome, exit_code: i32) -> ExitReport {
        ExitReport {
            schema_version: REPORT_SCHEMA_VERSION,
            sandbox_id: self.sandbox_id.to_owned(),
            command: self.argv.to_vec(),
            status,
            exit_code,
            signal: None,
            wall_time_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            message: None,
            isolation: None,
            usage: None,
            limit_events: Default::default(),
            limit_hit: None,
        }
    }

    /// A request refused before anything was created.
    pub fn refused(&self, message: String) -> ExitReport {
        ExitReport {
            message: Some(message),
            ..self.base(Outcome::Refused, EXIT_PURPLE_FAILED)
        }
    }

    /// Setup failed after something was created (it has been cleaned up).
    pub fn setup_failed(&self, message: String) -> ExitReport {
        ExitReport {
            message: Some(message),
            ..self.base(Outcome::SetupFailed, EXIT_PURPLE_FAILED)
        }
    }

    pub fn ended(
        &self,
        ending: Ending,
        plan: &Plan,
        policy: &Policy,
        landlock: Option<String>,
        resources: &ResourceOutcome,
    ) -> ExitReport {
        let mut report = match ending {
            Ending::Reported(ChildMessage::Exited { code }) => self.base(Outcome::Exited, code),
            Ending::Reported(ChildMessage::Signaled { signal }) if signal == libc::SIGSYS => ExitReport {
                signal: Some(signal),
                message: Some("killed by the seccomp filter (SIGSYS): a system call the policy does not allow".into()),
                ..self.base(Outcome::SeccompViolation, 128 + signal)
            },
            Ending::Reported(ChildMessage::Signaled { signal }) => ExitReport {
                signal: Some(signal),
                ..self.base(Outcome::Signaled, 128 + signal)
            },
            Ending::Reported(ChildMessage::ExecFailed {
                errno,
                program,
                program_exists,
            }) => {
                let errno = nix::errno::Errno::from_raw(errno);
                let not_found = matches!(
                    errno,
                    nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR
                );
                let (status, code, message) = if not_found && program_exists {
                    (
                        Outcome::NotFound,
                        EXIT_NOT_FOUND,
                        format!("{program}: its interpreter (#!) or dynamic loader is not in the sandbox"),
                    )
                } else if not_found {
                    (
                        Outcome::NotFound,
                        EXIT_NOT_FOUND,
                        format!("{program}: command not found in the sandbox"),
                    )
                } else {
                    (
                        Outcome::NotExecutable,
                        EXIT_NOT_EXECUTABLE,
                        format!("{program}: cannot execute: {}", errno.desc()),
                    )
                };
                ExitReport {
                    message: Some(message),
                    ..self.base(status, code)
                }
            }
            Ending::Reported(ChildMessage::Landlock { .. }) => {
                return self.setup_failed("the sandbox reported no ending".into())
            }
            Ending::Reported(ChildMessage::SetupFailed { step, detail }) => {
                let hint = if step.starts_with("chdir") {
                    format!(
                        " (the sandbox runs as uid {}; {} must be accessible to it)",
                        plan.identity.uid, plan.cwd
                    )
                } else {
                    String::new()
                };
                return self
                    .setup_failed(format!("sandbox setup failed at {step}: {detail}{hint}"));
            }
            Ending::Vanished { wait_status } => {
                // PID 1 itself was killed. When the memory limit's OOM
                // killer did it, that is the sandbox's ending, not Purple's.
                let oom_kills = resources
                    .counters
                    .as_ref()
                    .map_or(0, |c| c.events.oom_kills);
                if oom_kills == 0 {
                    return self.setup_failed(format!(
                        "the sandbox ended without reporting a status ({wait_status})"
                    ));
                }
                ExitReport {
                    signal: Some(libc::SIGKILL),
                    ..self.base(Outcome::Signaled, 128 + libc::SIGKILL)
                }
            }
            Ending::TimedOut => ExitReport {
                message: plan.timeout_ms.map(|ms| {
                    format!(
                        "killed: timeout of {} reached",
                        purple_common::values::Timeout::from_millis(ms)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    )
                }),
                ..self.base(Outcome::Timeout, EXIT_TIMEOUT)
            },
            Ending::Interrupted(signal) => ExitReport {
                signal: Some(signal),
                message: Some(format!(
                    "purple-init received signal {signal} and ended the sandbox"
                )),
                ..self.base(Outcome::Interrupted, 128 + signal)
            },
        };
        apply_resources(&mut report, plan, resources);
        report.isolation = Some(isolation(plan, policy, landlock, resources));
        report
    }
}

/// What the cgroup side of a sandbox came to.
#[derive(Debug, Clone, Default)]
pub struct ResourceOutcome {
    /// `v1 /purple/ID@PID.START`, or `none: why` in best-effort mode.
    pub cgroup_line: String,
    pub cgroup_path: Option<String>,
    pub swap: Option<SwapBound>,
    pub counters: Option<Counters>,
    /// Set when the cgroup could not be removed (the next run will).
    pub cleanup_error: Option<String>,
    /// The filtered network, after purple-netd detached it.
    pub network: Option<purple_common::report::NetworkRecord>,
}

/// Usage, limit events, and which limit ended the run. OOM wins over the
/// command's own failure: a command that failed after the OOM killer took
/// one of its processes most likely failed because of it; a command that
/// still succeeded keeps its status, with the kill counted.
fn apply_resources(report: &mut ExitReport, plan: &Plan, resources: &ResourceOutcome) {
    if let Some(counters) = &resources.counters {
        report.usage = Some(counters.usage.clone());
        report.limit_events = counters.events;
    }
    let limits = &plan.limits;
    let rlimits = limits.rlimits.in_force(&limits.caller_rlimits);
    let failed = match report.status {
        Outcome::Exited => report.exit_code != 0,
        Outcome::Signaled => true,
        _ => false,
    };
    if report.limit_events.oom_kills > 0 && failed {
        report.status = Outcome::Oom;
        report.limit_hit = Some("memory".into());
        report.message = Some(format!(
            "killed: memory limit {} reached",
            ByteSize::from_bytes(limits.cgroup.memory_max).human()
        ));
        return;
    }
    match (report.status, report.signal) {
        (Outcome::Timeout, _) => report.limit_hit = Some("timeout".into()),
        (Outcome::Signaled, Some(libc::SIGXCPU)) => {
            report.limit_hit = Some("cpu_time".into());
            report.message = Some(format!(
                "killed: CPU time limit {}s reached",
                rlimits.cpu_time_s.unwrap_or_default()
            ));
        }
        (Outcome::Signaled, Some(libc::SIGXFSZ)) => {
            report.limit_hit = Some("file_size".into());
            report.message = Some(format!(
                "killed: file size limit {} reached",
                rlimits
                    .file_size
                    .map(|b| ByteSize::from_bytes(b).human())
                    .unwrap_or_default()
            ));
        }
        _ => {}
    }
}

fn applied_limits(plan: &Plan, resources: &ResourceOutcome) -> AppliedLimits {
    let limits = &plan.limits;
    let rlimits = limits.rlimits.in_force(&limits.caller_rlimits);
    let in_cgroup = resources.cgroup_path.is_some();
    fn when<T>(in_cgroup: bool, v: T) -> Option<T> {
        in_cgroup.then_some(v)
    }
    AppliedLimits {
        cgroup: match (
            &resources.cgroup_path,
            resources.cgroup_line.split_once(' '),
        ) {
            (Some(_), Some((version, _))) => format!("cgroup {version}"),
            _ => resources.cgroup_line.clone(),
        },
        cgroup_path: resources.cgroup_path.clone(),
        memory_bytes: when(in_cgroup, limits.cgroup.memory_max),
        memory_high_bytes: limits.cgroup.memory_high.filter(|_| in_cgroup),
        swap_bytes: resources.swap.as_ref().and_then(|s| s.swap_bytes),
        swap_note: resources.swap.as_ref().and_then(|s| s.note.clone()),
        pids: when(in_cgroup, limits.cgroup.pids_max),
        millicpus: when(in_cgroup, limits.cgroup.millicpus),
        cpu_weight: when(in_cgroup, limits.cgroup.cpu_weight),
        // The command gets the caller's own limits back and Purple's only
        // lower them: report what is in force, not just what was asked.
        cpu_time_s: rlimits.cpu_time_s,
        open_files: rlimits.open_files,
        file_size_bytes: rlimits.file_size,
        core_bytes: 0,
    }
}

/// What the sandbox had, derived from the plan it was built from.
fn isolation(
    plan: &Plan,
    policy: &Policy,
    landlock: Option<String>,
    resources: &ResourceOutcome,
) -> Isolation {
    let mut mounts: Vec<MountRecord> = plan
        .mounts
        .iter()
        .map(|m| match m {
            MountStep::Bind {
                destination,
                writable,
                source_hint,
                ..
            } => MountRecord {
                destination: destination.to_string(),
                kind: "bind".into(),
                read_only: !writable,
                source: Some(source_hint.clone()),
                size_bytes: None,
            },
            MountStep::Tmpfs {
                destination,
                size_bytes,
                ..
            } => MountRecord {
                destination: destination.to_string(),
                kind: "tmpfs".into(),
                read_only: false,
                source: None,
                size_bytes: Some(*size_bytes),
            },
        })
        .collect();
    let fixed = |destination: &str, kind: &str, read_only: bool| MountRecord {
        destination: destination.into(),
        kind: kind.into(),
        read_only,
        source: None,
        size_bytes: None,
    };
    mounts.push(fixed("/dev", "tmpfs", true));
    mounts.push(fixed("/dev/pts", "devpts", false));
    mounts.push(MountRecord {
        size_bytes: Some(plan.dev_shm_bytes),
        ..fixed("/dev/shm", "tmpfs", false)
    });
    mounts.push(fixed("/proc", "proc", false));
    for dir in READ_ONLY_PROC_DIRS {
        mounts.push(fixed(&format!("/proc/{dir}"), "bind", true));
    }
    // Only what exists on this kernel was masked (the sandbox's /proc shows
    // the same entries as purple-init's).
    let masked_paths = MASKED_PROC_FILES
        .iter()
        .chain(MASKED_PROC_DIRS)
        .map(|p| format!("/proc/{p}"))
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    let kept: Vec<String> = plan
        .kept_capabilities
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let capabilities = CapabilitySets {
        effective: if plan.ambient_capabilities {
            kept.clone()
        } else {
            Vec::new()
        },
        permitted: if plan.ambient_capabilities {
            kept.clone()
        } else {
            Vec::new()
        },
        inheritable: kept.clone(),
        bounding: kept.clone(),
        ambient: if plan.ambient_capabilities {
            kept
        } else {
            Vec::new()
        },
    };
    Isolation {
        namespaces: NAMESPACES
            .iter()
            .map(|(_, name)| (*name).to_owned())
            .collect(),
        uid_map: IdMapping {
            inside: plan.identity.uid,
            outside: plan.identity.uid,
        },
        gid_map: IdMapping {
            inside: plan.identity.gid,
            outside: plan.identity.gid,
        },
        hostname: plan.hostname.clone(),
        network: match resources.network {
            Some(_) => "filtered".into(),
            None => "loopback-only".into(),
        },
        network_filtered: resources.network.clone(),
        root_read_only: true,
        mounts,
        masked_paths,
        no_new_privs: true,
        capabilities,
        new_session: true,
        timeout_ms: plan.timeout_ms,
        seccomp: crate::sandbox::syscall_filter::describe(&policy.syscalls),
        landlock: landlock.unwrap_or_else(|| match policy.landlock.mode {
            LandlockMode::Off => "off (policy)".into(),
            _ => "unknown: the command did not get as far as Landlock".into(),
        }),
        cgroup: match &resources.cleanup_error {
            Some(e) => format!(
                "{} (not removed: {e}; the next run removes it)",
                resources.cgroup_line
            ),
            None => resources.cgroup_line.clone(),
        },
        limits: Some(applied_limits(plan, resources)),
    }
}
