//! purple-init: the setuid-root helper that turns a validated request from
//! purple-supervisor into a running sandbox, and reports how it ended.
//!
//! It is started by purple-supervisor with the request socket at fd 3 and
//! the caller's stdin/stdout/stderr at 0-2. Single-threaded on purpose: it
//! forks and clones.

mod admin;
mod audit;
mod cgroup;
mod hardening;
mod limits;
mod network;
mod plan;
mod report;
mod request;
mod sandbox;
mod supervise;
mod sys;

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Instant;

use purple_common::protocol::{self, InitReply, SandboxStarted, MAX_REPLY_BYTES};
use purple_common::report::{ExitReport, EXIT_PURPLE_FAILED};

use crate::hardening::StartState;
use crate::report::ReportContext;

fn main() -> ExitCode {
    let started = Instant::now();
    // Step 1, before anything reads the environment or opens a file: take
    // the process state back from the (untrusted) caller.
    let state = match hardening::sanitize_process() {
        Ok(state) => state,
        Err(e) => {
            eprintln!("purple: purple-init: {e}");
            return ExitCode::from(EXIT_PURPLE_FAILED as u8);
        }
    };
    let sandbox_id = uuid::Uuid::new_v4().to_string();
    let mut audit = audit::Audit::new(&sandbox_id, state.real_uid);
    let report = run(&state, &sandbox_id, started, &mut audit);
    // Every sandbox ends with exactly one terminal event, written before
    // the report goes out (the supervisor may be gone by then), with root's
    // ids, so that syslog records it as purple-init's and not the caller's
    // (a run refused early has not switched yet; the caller cannot signal
    // purple-init from here on either way).
    let _ = hardening::stop_answering_caller_signals();
    audit.ended(&report);
    if let Some(warning) = audit.warning() {
        warn_caller(&warning);
    }
    let code = report.exit_code;
    // A supervisor that never reads (stopped, or with a tiny receive
    // buffer) must not keep a root process alive after its sandbox.
    let _ = nix::sys::socket::setsockopt(
        &state.socket,
        nix::sys::socket::sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(REPORT_SEND_TIMEOUT_S, 0),
    );
    let reply = InitReply::Finished(Box::new(report));
    if let Err(e) = protocol::send_message(state.socket.as_fd(), &reply, MAX_REPLY_BYTES, &[]) {
        warn_caller(&format!(
            "purple: purple-init: could not send the exit report: {e}"
        ));
        return ExitCode::from(EXIT_PURPLE_FAILED as u8);
    }
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_PURPLE_FAILED as u8))
}

/// How long the `Started` message may wait for room on the socket.
const STARTED_SEND_TIMEOUT_US: i64 = 200_000;

/// How long the exit report may wait for the supervisor to read it.
const REPORT_SEND_TIMEOUT_S: i64 = 10;

/// One line on the caller's stderr, unless that is a pipe nobody drains:
/// it waits a second for room, then drops the line, so a full pipe cannot
/// hold the (root) purple-init after its sandbox ended.
fn warn_caller(line: &str) {
    use std::io::Write;
    let stderr = std::io::stderr();
    let mut fds = [nix::poll::PollFd::new(
        stderr.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)) == Ok(1) {
        let _ = writeln!(stderr.lock(), "{line}");
    }
}

/// The ordered steps of one sandbox. Every failure becomes a report; the
/// caller sees exactly one answer.
fn run(
    state: &StartState,
    sandbox_id: &str,
    started: Instant,
    audit: &mut audit::Audit,
) -> ExitReport {
    let empty: [String; 0] = [];
    let ctx = ReportContext {
        sandbox_id,
        argv: &empty,
        started,
    };
    if !nix::unistd::geteuid().is_root() {
        return ctx.refused(
            "purple-init is not running as root: install it setuid root (see README), and do not run Purple under no_new_privs".into(),
        );
    }
    // Step 2: the admin config bounds what this caller may ask for.
    let config_path = admin::config_path(state.real_uid, state.purple_config.as_deref());
    let admin = match admin::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            // The refusal is still recorded, through the built-in sinks.
            audit.open_defaults();
            return ctx.refused(e.to_string());
        }
    };
    // Step 2b: the audit sinks the admin config names; with `required`,
    // nothing runs unless they can be written.
    if let Err(e) = audit.open(&admin.audit) {
        audit.stage = audit::Stage::Audit;
        return ctx.refused(e.to_string());
    }
    audit.stage = audit::Stage::BadRequest;
    // Step 3: decode and re-validate the request (size limit, version,
    // values, cross-field rules, admin bounds, things not enforceable here).
    let (request, mut fds) = match request::receive(&state.socket) {
        Ok(r) => r,
        Err(e) => return ctx.refused(e.to_string()),
    };
    let ctx = ReportContext {
        argv: &request.argv,
        ..ctx
    };
    // The caller's own copy of the audit trail comes last, after the binds.
    if request.audit_log {
        let added = match fds.pop() {
            Some(fd) => audit.add_caller_log(fd),
            None => {
                Err("--audit-log: the request names an audit log but attaches no descriptor".into())
            }
        };
        if let Err(e) = added {
            return ctx.refused(e);
        }
    }
    if let Err(e) = request::validate(&request, &fds, &admin, &config_path.to_string_lossy()) {
        return ctx.refused(e.to_string());
    }
    if let Err(e) = request::check_standard_streams() {
        return ctx.refused(e.to_string());
    }
    // Step 4: inspect every fd as the caller before it can become a mount.
    audit.stage = audit::Stage::UnreadablePath;
    let binds = match request::inspect_binds(&request, &fds, state.real_uid) {
        Ok(b) => b,
        Err(e) => return ctx.refused(e.to_string()),
    };
    // Step 4b: every check made as the caller is done; from here on the
    // caller cannot signal (stop) purple-init.
    if let Err(e) = hardening::stop_answering_caller_signals() {
        return ctx.refused(e.to_string());
    }
    // Step 4c: nor freeze or kill it through a cgroup it was delegated
    // (a user's systemd session): purple-init moves to a root-owned cgroup
    // where the caller could. Before anything exists that it must clean up.
    audit.stage = audit::Stage::Host;
    let left = hardening::with_cgroup_privilege(|| {
        cgroup::guard::leave_caller_cgroups(state.real_uid, &admin.cgroup.parent)
    });
    match left {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return ctx.refused(format!(
                "purple-init cannot leave a cgroup its caller can freeze or kill: {e}"
            ))
        }
        Err(e) => return ctx.refused(e.to_string()),
    }
    // Step 5: the limits: the policy's, within the admin's maxima, the
    // admin's defaults for the rest. Still nothing created.
    let caller = if state.real_uid == 0 {
        limits::Caller::Root
    } else {
        limits::Caller::Unprivileged
    };
    audit.stage = audit::Stage::AdminLimit;
    let limits = match limits::resolve(
        &request.policy,
        &admin,
        caller,
        state.caller_rlimits,
        limits::online_cpus(),
        &config_path.to_string_lossy(),
    ) {
        Ok(l) => l,
        Err(e) => return ctx.refused(e.to_string()),
    };
    // Step 5b: the filtered network, within the admin's bounds (purple-netd
    // is asked only once the sandbox's network namespace exists).
    let network = match network::resolve(
        &request.policy,
        &admin.network,
        caller,
        state.netd_socket.as_deref().map(std::path::Path::new),
        &config_path.to_string_lossy(),
    ) {
        Ok(n) => n,
        Err(e) => {
            if !e.is_admin_limit() {
                audit.stage = audit::Stage::BadRequest;
            }
            return ctx.refused(e.to_string());
        }
    };
    // Step 6: the plan, as data. Nothing has been created yet.
    let identity = sandbox_identity(state, &admin);
    // A root caller runs as the admin's unprivileged id: name it after that
    // id, not after root.
    let user_name = if state.real_uid == 0 {
        if identity.uid == 65534 {
            "nobody".to_owned()
        } else {
            "sandbox".to_owned()
        }
    } else {
        plan::sanitize_user_name(&request.user_name)
    };
    audit.stage = audit::Stage::BadRequest;
    let plan = match plan::build(
        &request.policy,
        &request.argv,
        &binds,
        identity,
        &user_name,
        &limits,
        network,
    ) {
        Ok(p) => p,
        Err(e) => return ctx.refused(e.to_string()),
    };
    // What will run, as whom, under which policy: recorded before anything
    // is created.
    if let Err(e) = audit.created(&plan, &request.policy) {
        return ctx.refused(e.to_string());
    }
    audit.stage = audit::Stage::Host;
    // Step 7: a root caller must not carry root's supplementary groups into
    // the sandbox (a non-root caller keeps its own: they are its rights).
    if state.real_uid == 0 {
        if let Err(e) = nix::unistd::setgroups(&[]) {
            return ctx.refused(format!("clearing supplementary groups: {e}"));
        }
    }
    // Step 8: detached copies of the caller's trees, with their mount flags,
    // made here in the host's mount namespace (the child cannot reach it).
    let trees = match clone_bind_trees(&plan, &fds) {
        Ok(t) => t,
        Err(e) => return ctx.setup_failed(e.to_string()),
    };
    drop(fds);
    // Step 9: the seccomp programs, compiled once for the command and for
    // PID 1, before anything is cloned.
    let filters = match sandbox::Filters::compile(&plan) {
        Ok(f) => f,
        Err(e) => return ctx.refused(e.to_string()),
    };
    // Step 10: the cgroup, with every limit written, before the sandbox's
    // first process exists (and stale ones of dead owners swept first).
    // Dropping `cgroup` on any return below removes it.
    let created = match hardening::with_cgroup_privilege(|| {
        create_cgroup(&admin, &plan, sandbox_id, state.real_uid)
    }) {
        Ok(created) => created,
        Err(e) => return ctx.setup_failed(e.to_string()),
    };
    let (mut cgroup, cgroup_line) = match created {
        Ok(CgroupState::Applied(cg)) => {
            let line = format!("{} {}", cg.version(), cg.path());
            (Some(cg), line)
        }
        Ok(CgroupState::Skipped(why)) => (None, format!("none: {why}")),
        Err(e) => {
            let hint = if e.host_lacks_cgroups() {
                " (resources.mode = \"best-effort\" runs without them)"
            } else {
                ""
            };
            return ctx.refused(format!("the cgroup limits cannot be enforced: {e}{hint}"));
        }
    };
    // Step 11: clone into the new namespaces, place the child in the
    // cgroup, map ids; the child builds the root and starts the workload.
    let mut running = match sandbox::launch(&plan, sandbox_id, trees, &filters, cgroup.as_ref()) {
        Ok(r) => r,
        Err(e) => return ctx.setup_failed(e.to_string()),
    };
    audit.started(running.pid, &cgroup_line);
    let mut attached = running.network.take();
    let mut network_record = attached
        .as_ref()
        .zip(plan.network.as_ref())
        .map(|(a, n)| network::record(a, n));
    if let Some(record) = &network_record {
        audit.net_attached(record);
    }
    // Step 11c: tell the supervisor the sandbox exists and where its live
    // counters are (`serve` shows them). Optional: a failed or timed-out
    // send changes nothing (a supervisor that is gone is seen through its
    // pidfd while waiting).
    let started_reply = InitReply::Started(SandboxStarted {
        sandbox_id: sandbox_id.to_owned(),
        usage: cgroup
            .as_ref()
            .map(cgroup::SandboxCgroup::live_usage_source),
    });
    // The caller controls the other end (and can shrink its buffer): a
    // short send timeout keeps this optional message from holding init
    // before the wait that enforces the timeout.
    let _ = nix::sys::socket::setsockopt(
        &state.socket,
        nix::sys::socket::sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(0, STARTED_SEND_TIMEOUT_US),
    );
    let _ = protocol::send_message(state.socket.as_fd(), &started_reply, MAX_REPLY_BYTES, &[]);
    // Step 12: init needs no capability from here on (removing the cgroup
    // needs none: root owns it).
    if let Err(e) = hardening::drop_all_capabilities() {
        let _ = sys::pidfd_send_signal(running.pidfd.as_fd(), libc::SIGKILL);
        return ctx.setup_failed(e.to_string());
    }
    // Step 13: wait, enforcing the timeout; then read the cgroup's counters
    // and remove it (PID 1 is reaped, so the pid namespace is empty), and
    // report.
    let timeout = plan.timeout_ms.map(std::time::Duration::from_millis);
    let waited = supervise::wait(
        running,
        timeout,
        state.socket.as_fd(),
        state.supervisor.as_fd(),
    );
    let mut resources = report::ResourceOutcome {
        cgroup_line,
        cgroup_path: cgroup.as_ref().map(cgroup::SandboxCgroup::path),
        swap: cgroup.as_ref().map(|c| c.swap().clone()),
        counters: cgroup.as_ref().map(cgroup::SandboxCgroup::counters),
        cleanup_error: cgroup
            .as_mut()
            .and_then(|c| c.remove().err())
            .map(|e| e.to_string()),
        // The sandbox's processes are gone, but its network namespace (held
        // by `Attached`) keeps the veth, so netd's reconcile leaves the rules
        // alone until this detach reads their counters and removes them.
        network: match (attached.as_mut(), network_record.as_mut()) {
            (Some(a), Some(record)) => {
                match a.detach() {
                    Ok(counters) => record.counters = counters,
                    Err(e) => record.detach_error = Some(e.to_string()),
                }
                audit.net_detached(record);
                Some(record.clone())
            }
            _ => None,
        },
    };
    if let (Some(record), Ok((_, landlock))) = (resources.network.as_mut(), &waited) {
        // What Landlock really did, not what the plan asked of it.
        record.landlock_tcp &= landlock
            .as_deref()
            .is_some_and(sandbox::landlock::summary_enforces_tcp);
    }
    match waited {
        Ok((ending, landlock)) => ctx.ended(ending, &plan, &request.policy, landlock, &resources),
        Err(e) => ctx.setup_failed(e.to_string()),
    }
}

enum CgroupState {
    Applied(cgroup::SandboxCgroup),
    /// Best-effort mode on a host without usable cgroups: why.
    Skipped(String),
}

/// Finds the hierarchy, sweeps cgroups whose owner died, and creates this
/// sandbox's, named after its id and this process (pid and start time), so
/// a later run can tell whether its owner is still alive.
fn create_cgroup(
    admin: &admin::AdminConfig,
    plan: &plan::Plan,
    sandbox_id: &str,
    caller_uid: u32,
) -> Result<CgroupState, cgroup::CgroupError> {
    // The admin may insist on cgroups whatever the policy accepts.
    let best_effort = plan.limits.mode == purple_common::policy::ResourceMode::BestEffort
        && !admin.cgroup.required;
    let layout = match cgroup::layout::Layout::of_this_host() {
        Ok(layout) => layout,
        Err(e) if best_effort => return Ok(CgroupState::Skipped(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    // One parent per caller: the admin's totals for one user's sandboxes
    // sit on it (a root caller's are not bounded), and sandboxes of
    // different users never share a budget.
    let parent = format!("{}/uid-{}", admin.cgroup.parent, caller_uid);
    let totals = if caller_uid == 0 {
        cgroup::ParentLimits::default()
    } else {
        cgroup::ParentLimits {
            memory_max: Some(admin.maxima.user_memory.bytes()),
            pids_max: Some(admin.maxima.user_pids),
        }
    };
    cgroup::stale::sweep(&layout, &admin.cgroup.parent);
    // Without its own start time in the name, a later run could take this
    // live sandbox's cgroup for a dead one.
    let created = cgroup::stale::start_time_of("self")
        .ok_or(cgroup::CgroupError::OwnerUnknown)
        .and_then(|start| {
            let name = cgroup::stale::sandbox_name(sandbox_id, std::process::id(), start);
            cgroup::SandboxCgroup::create(layout, &parent, &name, &plan.limits.cgroup, &totals)
        });
    match created {
        Ok(cg) => Ok(CgroupState::Applied(cg)),
        Err(e) if best_effort && e.host_lacks_cgroups() => Ok(CgroupState::Skipped(e.to_string())),
        Err(e) => Err(e),
    }
}

/// The sandbox runs as the caller's own ids; a root caller runs as the
/// admin's unprivileged id instead (never host root).
fn sandbox_identity(state: &StartState, admin: &admin::AdminConfig) -> plan::Identity {
    if state.real_uid == 0 {
        plan::Identity {
            uid: admin.identity.root_maps_to,
            gid: admin.identity.root_maps_to,
        }
    } else {
        plan::Identity {
            uid: state.real_uid,
            gid: state.real_gid,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("preparing bind {destination}: {step}: {errno}")]
struct TreeError {
    destination: String,
    step: &'static str,
    errno: nix::errno::Errno,
}

/// Clones each bind source into a detached mount tree and sets its flags:
/// read-only unless writable, and always nosuid and nodev.
fn clone_bind_trees(plan: &plan::Plan, fds: &[OwnedFd]) -> Result<Vec<OwnedFd>, TreeError> {
    let mut trees: Vec<Option<OwnedFd>> = (0..fds.len()).map(|_| None).collect();
    for step in &plan.mounts {
        let plan::MountStep::Bind {
            fd_index,
            destination,
            writable,
            ..
        } = step
        else {
            continue;
        };
        let err = |step: &'static str| {
            let destination = destination.to_string();
            move |errno| TreeError {
                destination,
                step,
                errno,
            }
        };
        let fd = fds
            .get(*fd_index)
            .ok_or(nix::errno::Errno::EBADF)
            .map_err(err("find fd"))?;
        let flags = libc::OPEN_TREE_CLONE
            | libc::OPEN_TREE_CLOEXEC
            | libc::AT_EMPTY_PATH as libc::c_uint
            | libc::AT_RECURSIVE as libc::c_uint;
        let tree = sys::open_tree(fd.as_fd(), "", flags).map_err(err("open_tree"))?;
        let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if !writable {
            attrs |= libc::MOUNT_ATTR_RDONLY;
        }
        let recursive = libc::AT_EMPTY_PATH as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
        // Private propagation: a clone of a shared mount stays in its peer
        // group, so anything later mounted inside the tree (a nested bind)
        // would propagate back to the host's own mount.
        sys::mount_setattr(tree.as_fd(), "", recursive, attrs, 0, libc::MS_PRIVATE)
            .map_err(err("mount_setattr"))?;
        if let Some(slot) = trees.get_mut(*fd_index) {
            *slot = Some(tree);
        }
    }
    trees
        .into_iter()
        .map(|t| t.ok_or(nix::errno::Errno::EBADF))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|errno| TreeError {
            destination: "(unused descriptor)".into(),
            step: "match fds to mounts",
            errno,
        })
}
