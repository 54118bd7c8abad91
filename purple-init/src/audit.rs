//! purple-init's side of the audit trail: the sinks the admin config names
//! (plus the caller's `--audit-log` copy), and the events of one sandbox,
//! from `sandbox.created` to its one terminal event.
//!
//! The caller is identified by the kernel (real uid at start) and named
//! from /etc/passwd here, never from the request.

use std::path::Path;

use purple_common::audit::{parse_facility, AuditEvent, Auditor, EventKind, Sink};
use purple_common::policy::Policy;
use purple_common::report::{ExitReport, Outcome};
use sha2::{Digest, Sha256};

use crate::admin::AuditConfig;
use crate::plan::Plan;

const SOURCE: &str = "purple-init";
/// Marks that this boot has already had its "no audit sink" warning.
const WARNED_MARKER: &str = "/run/purple/audit-unavailable";

/// Why a request was refused, for `sandbox.refused`'s `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    AdminConfig,
    BadRequest,
    UnreadablePath,
    AdminLimit,
    Host,
    Audit,
}

impl Stage {
    fn reason(self) -> &'static str {
        match self {
            Stage::AdminConfig => "admin_config",
            Stage::BadRequest => "bad_request",
            Stage::UnreadablePath => "unreadable_path",
            Stage::AdminLimit => "admin_limit",
            Stage::Host => "host",
            Stage::Audit => "audit",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "no audit sink can be written ({failures}); [audit] required = true refuses to run without one"
)]
pub struct AuditRequired {
    failures: String,
}

/// The audit trail of one purple-init run.
#[derive(Debug)]
pub struct Audit {
    auditor: Auditor,
    /// The caller's `--audit-log` copy, written only once the sandbox has
    /// ended: a descriptor the caller chose could block a write (a file on
    /// a FUSE mount it serves), and purple-init must never stall while the
    /// sandbox runs (its timeout would stall with it).
    caller_log: Option<Sink>,
    caller_events: Vec<AuditEvent>,
    sandbox_id: String,
    uid: u32,
    user: String,
    pub stage: Stage,
    /// `[audit] required`: an event that cannot be written stops the run
    /// (while that is still possible, i.e. before the sandbox starts).
    required: bool,
    /// Sink failures not yet reported on stderr.
    failures: Vec<String>,
}

impl Audit {
    pub fn new(sandbox_id: &str, uid: u32) -> Audit {
        Audit {
            auditor: Auditor::new(),
            caller_log: None,
            caller_events: Vec::new(),
            sandbox_id: sandbox_id.to_owned(),
            uid,
            user: purple_common::audit::user_name_of(uid),
            stage: Stage::AdminConfig,
            required: false,
            failures: Vec::new(),
        }
    }

    /// Opens the sinks of `config`. With `required`, every configured
    /// sink must work.
    pub fn open(&mut self, config: &AuditConfig) -> Result<(), AuditRequired> {
        self.required = config.required;
        if config.syslog {
            let opened = parse_facility(&config.facility)
                .and_then(|facility| Sink::syslog(&config.syslog_socket, facility, SOURCE));
            match opened {
                Ok(sink) => self.auditor.add(sink),
                Err(e) => self.failures.push(e.to_string()),
            }
        }
        if let Some(path) = &config.json_path {
            match check_log_directory(path)
                .and_then(|()| Sink::json_file(path).map_err(|e| e.to_string()))
            {
                Ok(sink) => self.auditor.add(sink),
                Err(e) => self.failures.push(e.to_string()),
            }
        }
        if config.required && !self.failures.is_empty() {
            return Err(AuditRequired {
                failures: self.failures.join("; "),
            });
        }
        Ok(())
    }

    /// The built-in sinks, for when the admin config itself is unusable
    /// (its refusal must still be recorded somewhere).
    pub fn open_defaults(&mut self) {
        let _ = self.open(&AuditConfig::default());
    }

    /// Adds the caller's copy (`--audit-log`); a bad descriptor is a bad
    /// request.
    pub fn add_caller_log(&mut self, fd: std::os::fd::OwnedFd) -> Result<(), String> {
        let sink = Sink::json_descriptor(fd).map_err(|e| format!("--audit-log: {e}"))?;
        self.caller_log = Some(sink);
        Ok(())
    }

    fn event(&self, kind: EventKind) -> AuditEvent {
        AuditEvent::new(kind, SOURCE, &self.sandbox_id, self.uid, &self.user)
    }

    fn emit(&mut self, event: AuditEvent) {
        self.auditor.emit(&event);
        self.failures.extend(self.auditor.take_failures());
        if self.caller_log.is_some() {
            self.caller_events.push(event);
        }
    }

    /// Writes the caller's copy, after the ending (see `caller_log`).
    fn flush_caller_log(&mut self) {
        if let Some(sink) = &mut self.caller_log {
            for event in self.caller_events.drain(..) {
                if let Err(e) = sink.write(&event) {
                    self.failures.push(format!("--audit-log: {e}"));
                    break;
                }
            }
        }
    }

    /// `sandbox.created`: what will run, as whom, under which policy. With
    /// `required`, a sink that failed to take it stops the run here.
    pub fn created(&mut self, plan: &Plan, policy: &Policy) -> Result<(), AuditRequired> {
        let toml = purple_common::policy::parse::policy_to_toml(policy);
        let digest = Sha256::digest(toml.as_bytes());
        let digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let limits = &plan.limits;
        let fs = &policy.filesystem;
        let event = self
            .event(EventKind::SandboxCreated)
            .with_command(&plan.argv)
            .with("policy_sha256", digest)
            .with("sandbox_uid", plan.identity.uid)
            .with("network", network_name(policy))
            .with("system", fs.system)
            .with("read_only", binds(&fs.read_only))
            .with("read_write", binds(&fs.read_write))
            .with("workspace", fs.workspace.as_ref().map(|w| w.to_string()))
            .with("memory_bytes", limits.cgroup.memory_max)
            .with("pids", limits.cgroup.pids_max)
            .with("millicpus", limits.cgroup.millicpus)
            .with("timeout_ms", limits.timeout_ms)
            .with(
                "capabilities",
                plan.kept_capabilities
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .with("landlock", landlock_name(policy))
            .with(
                "syscalls",
                crate::sandbox::syscall_filter::describe(&policy.syscalls),
            );
        self.emit(event);
        if self.required && !self.failures.is_empty() {
            self.stage = Stage::Audit;
            return Err(AuditRequired {
                failures: self.failures.join("; "),
            });
        }
        Ok(())
    }

    /// `sandbox.started`: the sandbox's PID 1 exists, in its cgroup.
    pub fn started(&mut self, host_pid: i32, cgroup: &str) {
        let event = self
            .event(EventKind::SandboxStarted)
            .with("sandbox_pid", host_pid)
            .with("cgroup", cgroup);
        self.emit(event);
    }

    /// purple-netd attached the filtered network: where, and its rules.
    pub fn net_attached(&mut self, record: &purple_common::report::NetworkRecord) {
        let event = self
            .event(EventKind::NetAttached)
            .with("address", record.address.as_str())
            .with("host_interface", record.host_interface.as_str())
            .with("allow_out", record.allow_out.clone())
            .with("allow_in", record.allow_in.clone())
            .with("landlock_tcp", record.landlock_tcp);
        self.emit(event);
    }

    /// purple-netd removed it: what its rules counted.
    pub fn net_detached(&mut self, record: &purple_common::report::NetworkRecord) {
        let mut event = self
            .event(EventKind::NetDetached)
            .with("host_interface", record.host_interface.as_str());
        if let Some(c) = &record.counters {
            event = event
                .with(
                    "dropped_packets",
                    c.out_dropped_packets + c.in_dropped_packets,
                )
                .with("out_allowed_packets", c.out_allowed_packets)
                .with("out_allowed_bytes", c.out_allowed_bytes)
                .with("out_dropped_packets", c.out_dropped_packets)
                .with("out_dropped_bytes", c.out_dropped_bytes)
                .with("in_allowed_packets", c.in_allowed_packets)
                .with("in_allowed_bytes", c.in_allowed_bytes)
                .with("in_dropped_packets", c.in_dropped_packets)
                .with("in_dropped_bytes", c.in_dropped_bytes);
        }
        if let Some(e) = &record.detach_error {
            event = event.with("error", e.as_str());
        }
        self.emit(event);
    }

    /// The events of the ending: `seccomp.violation` and `limit.hit` when
    /// they apply, then exactly one terminal event.
    pub fn ended(&mut self, report: &ExitReport) {
        let message = report.message.clone().unwrap_or_default();
        match report.status {
            Outcome::Refused => {
                let event = self
                    .event(EventKind::SandboxRefused)
                    .with_command(&report.command)
                    .with("reason", self.stage.reason())
                    .with("message", message);
                self.emit(event);
                self.flush_caller_log();
                return;
            }
            Outcome::SetupFailed => {
                let event = self
                    .event(EventKind::SetupFailed)
                    .with_command(&report.command)
                    .with("step", setup_step(&message))
                    .with("message", message);
                self.emit(event);
                self.flush_caller_log();
                return;
            }
            _ => {}
        }
        if report.status == Outcome::SeccompViolation {
            let event = self
                .event(EventKind::SeccompViolation)
                .with("signal", report.signal);
            self.emit(event);
        }
        let events = report.limit_events;
        if report.limit_hit.is_some() || events.oom_kills > 0 || events.pids_limit_hits > 0 {
            let limit = report.limit_hit.clone().unwrap_or_else(|| {
                if events.oom_kills > 0 {
                    "memory".into()
                } else {
                    "pids".into()
                }
            });
            let event = self
                .event(EventKind::LimitHit)
                .with("limit", limit)
                .with("ended_run", report.limit_hit.is_some())
                .with("oom_kills", events.oom_kills)
                .with("pids_limit_hits", events.pids_limit_hits);
            self.emit(event);
        }
        let usage = report.usage.clone().unwrap_or_default();
        let event = self
            .event(EventKind::SandboxExited)
            .with("status", report.status.as_str())
            .with("exit_code", report.exit_code)
            .with("signal", report.signal)
            .with("wall_time_ms", report.wall_time_ms)
            .with("memory_peak_bytes", usage.memory_peak_bytes)
            .with("cpu_user_ms", usage.cpu_user_ms)
            .with("cpu_system_ms", usage.cpu_system_ms)
            .with("pids_peak", usage.pids_peak)
            .with("message", message);
        self.emit(event);
        self.flush_caller_log();
    }

    /// Sink failures on stderr: the admin's sinks once per boot (a host
    /// without syslog would otherwise print it on every run), the caller's
    /// own `--audit-log` every time (the caller asked for it); `None` when
    /// there is nothing to say.
    pub fn warning(&mut self) -> Option<String> {
        let (caller, admin): (Vec<String>, Vec<String>) = std::mem::take(&mut self.failures)
            .into_iter()
            .partition(|f| f.starts_with("--audit-log:"));
        let mut lines = Vec::new();
        if !admin.is_empty() && first_warning_this_boot() {
            lines.push(format!("purple: audit: {}; going on without it (the admin config's [audit] required = true refuses instead)", admin.join("; ")));
        }
        if !caller.is_empty() {
            lines.push(format!("purple: audit: {}", caller.join("; ")));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// The admin's JSON log is written as root: its directory must be root's
/// alone, or a user could swap a path component under it (only the last
/// component is opened without following symlinks). A missing directory is
/// fine: it is created, root-owned, mode 0700.
fn check_log_directory(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("audit log directory {}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Err(format!(
            "audit log directory {} is not a directory",
            dir.display()
        )),
        Ok(meta) if meta.uid() != 0 || meta.mode() & 0o022 != 0 => Err(format!(
            "audit log directory {} must be owned by root and writable by root only",
            dir.display()
        )),
        Ok(_) => Ok(()),
    }
}

fn first_warning_this_boot() -> bool {
    let marker = Path::new(WARNED_MARKER);
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .is_ok()
}

/// `sandbox setup failed at STEP: ...` -> STEP; empty when the message has
/// another shape.
fn setup_step(message: &str) -> String {
    message
        .strip_prefix("sandbox setup failed at ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(step, _)| step.to_owned())
        .unwrap_or_default()
}

/// The policy's own binds as `SRC:DST` (the system set is the `system`
/// flag; its list is in docs/policy.md).
fn binds(list: &[purple_common::policy::Bind]) -> Vec<String> {
    list.iter()
        .map(|b| format!("{}:{}", b.source, b.destination))
        .collect()
}

fn network_name(policy: &Policy) -> &'static str {
    match policy.network.mode {
        purple_common::policy::NetworkMode::None => "none",
        purple_common::policy::NetworkMode::Filtered => "filtered",
    }
}

fn landlock_name(policy: &Policy) -> &'static str {
    match policy.landlock.mode {
        purple_common::policy::LandlockMode::Required => "required",
        purple_common::policy::LandlockMode::BestEffort => "best-effort",
        purple_common::policy::LandlockMode::Off => "off",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn setup_steps_are_read_from_the_message() {
        assert_eq!(
            setup_step("sandbox setup failed at chdir /workspace: Permission denied"),
            "chdir /workspace"
        );
        assert_eq!(setup_step("clone3 into new namespaces: EPERM"), "");
    }
}
