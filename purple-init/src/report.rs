//! Turning how the sandbox ended into the exit report, and stating the
//! isolation that was actually applied.

use purple_common::policy::{LandlockMode, Policy};
use purple_common::report::{
    CapabilitySets, ExitReport, IdMapping, Isolation, MountRecord, Outcome, EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND, EXIT_PURPLE_FAILED, EXIT_TIMEOUT, REPORT_SCHEMA_VERSION,
};

use crate::plan::{MountStep, Plan};
use crate::sandbox::child::{MASKED_PROC_DIRS, MASKED_PROC_FILES, READ_ONLY_PROC_DIRS};
use crate::sandbox::{ChildMessage, NAMESPACES};
use crate::supervise::Ending;

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
                return self.setup_failed(format!(
                    "the sandbox ended without reporting a status ({wait_status})"
                ))
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
        report.isolation = Some(isolation(plan, policy, landlock));
        report
    }
}

/// What the sandbox had, derived from the plan it was built from.
fn isolation(plan: &Plan, policy: &Policy, landlock: Option<String>) -> Isolation {
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
    mounts.push(fixed("/dev/shm", "tmpfs", false));
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
        network: "loopback-only".into(),
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
        cgroup: "none: resource limits are not part of this version".into(),
    }
}
