//! The last steps before the command runs: working directory, resource
//! basics, capabilities cut to what the policy keeps, NO_NEW_PRIVS, execve.
//! (Landlock and seccomp come here too, seccomp last, in their own issue.)

use std::ffi::CString;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use purple_common::capability::Capability;

use super::{exit_child, landlock, ChildMessage};
use crate::plan::Plan;
use crate::sys;

/// What failed before the command could run; sent to PID 1 as one byte
/// (the index here) and the errno.
pub const STEPS: &[&str] = &[
    "execve",
    "prepare argv and environment",
    "reset signals",
    "chdir to the working directory",
    "set resource limits (setrlimit)",
    "close inherited descriptors",
    "restrict capabilities",
    "set no_new_privs",
    "execve: the program exists, but its interpreter or dynamic loader does not",
    "install the seccomp filter",
    "apply Landlock",
    "set oom_score_adj",
];
const STEP_LANDLOCK: u8 = 10;
const STEP_EXEC: u8 = 0;
/// execve said ENOENT for a program that exists: its `#!` interpreter or
/// its ELF loader is missing in the sandbox.
pub const STEP_LOADER_MISSING: u8 = 8;

/// Runs in the forked workload process; never returns. On failure the step
/// and errno go to PID 1 through `exec_error`, and the process exits 127
/// (not found) or 126.
pub fn exec(
    plan: &Plan,
    filters: &[seccompiler::BpfProgram],
    exec_error: OwnedFd,
    status: OwnedFd,
) -> ! {
    let (step, errno) = match prepare(plan, filters)
        .map_err(|e| (1, e))
        .and_then(|prepared| run(plan, &prepared, &status))
    {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let mut message = [0u8; 5];
    message[0] = step;
    message[1..].copy_from_slice(&(errno as i32).to_le_bytes());
    let _ = nix::unistd::write(&exec_error, &message);
    exit_child(if matches!(errno, Errno::ENOENT | Errno::ENOTDIR) {
        127
    } else {
        126
    })
}

struct Prepared {
    filters: Vec<seccompiler::BpfProgram>,
    landlock: landlock::LandlockPlan,
    argv: Vec<CString>,
    env: Vec<CString>,
    search_path: Vec<String>,
}

fn prepare(plan: &Plan, filters: &[seccompiler::BpfProgram]) -> Result<Prepared, Errno> {
    let to_c = |s: &String| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL);
    let argv = plan.argv.iter().map(to_c).collect::<Result<Vec<_>, _>>()?;
    let env = plan.env.iter().map(to_c).collect::<Result<Vec<_>, _>>()?;
    let path = plan
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/bin:/bin");
    let filters = filters.to_vec();
    Ok(Prepared {
        filters,
        landlock: landlock::LandlockPlan::from_plan(plan),
        argv,
        env,
        search_path: path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

enum Never {}

fn run(plan: &Plan, prepared: &Prepared, status: &OwnedFd) -> Result<Never, (u8, Errno)> {
    // The command starts with default dispositions and an empty mask.
    // purple-init already reset what the caller ignored; of its own state
    // only SIGPIPE and SIGXFSZ (ignored) and the blocked stop signals (read
    // from a signalfd) would survive execve.
    sys::set_signal_dispositions([libc::SIGPIPE, libc::SIGXFSZ], libc::SIG_DFL)
        .map_err(|e| (2, e))?;
    sys::set_signal_dispositions(crate::hardening::JOB_CONTROL_SIGNALS, libc::SIG_DFL)
        .map_err(|e| (2, e))?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| (2, e))?;
    nix::unistd::chdir(plan.cwd.as_str()).map_err(|e| (3, e))?;
    restore_caller_rlimits(&plan.limits.caller_rlimits).map_err(|e| (4, e))?;
    set_rlimits(&plan.limits.rlimits).map_err(|e| (4, e))?;
    // The command and everything it starts go first when the OOM killer
    // picks a victim, in the sandbox's cgroup and on the host: PID 1 (the
    // reaper) must outlive them, or a memory-full sandbox would end as a
    // vanished PID 1 instead of a reported OOM kill. Raising needs no
    // privilege; lowering it back gains the command nothing.
    set_oom_score_adj().map_err(|e| (11, e))?;
    // Every descriptor above 2 closes at execve (the exec-error pipe too).
    sys::close_from(3, libc::CLOSE_RANGE_CLOEXEC).map_err(|e| (5, e))?;
    restrict_capabilities(&plan.kept_capabilities, plan.ambient_capabilities)
        .map_err(|e| (6, e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| (7, e))?;
    // Landlock needs no_new_privs (it is unprivileged) and goes before
    // seccomp, so the filter need not allow the landlock_* syscalls.
    match landlock::apply(&prepared.landlock, plan.landlock) {
        Ok(outcome) => ChildMessage::Landlock {
            summary: landlock::describe(&outcome),
        }
        .send(status),
        Err(e) => {
            // The full reason goes first; PID 1's own report (step and
            // errno only) follows and is ignored by purple-init.
            ChildMessage::SetupFailed {
                step: e.step().to_owned(),
                detail: e.to_string(),
            }
            .send(status);
            return Err((STEP_LANDLOCK, e.errno()));
        }
    }
    // Last, so that nothing Purple itself does runs under the filter.
    super::syscall_filter::apply_programs(&prepared.filters).map_err(|e| (9, e))?;
    execute(prepared)
}

/// /proc/self files of a non-dumpable process (this one inherited PID 1's
/// flag) belong to root, so the write needs the flag up for a moment; the
/// execve that follows sets it for the command anyway.
fn set_oom_score_adj() -> Result<(), Errno> {
    nix::sys::prctl::set_dumpable(true)?;
    let written = std::fs::write("/proc/self/oom_score_adj", "1000")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    nix::sys::prctl::set_dumpable(false)?;
    written
}

/// The limits purple-init lifted for itself go back to the caller's values
/// (a lowering, which needs no privilege): the sandbox never gets more
/// than the caller had.
fn restore_caller_rlimits(caller: &crate::limits::CallerRlimits) -> Result<(), Errno> {
    use nix::sys::resource::{setrlimit, Resource};
    for (resource, limit) in [
        (Resource::RLIMIT_CPU, caller.cpu),
        (Resource::RLIMIT_FSIZE, caller.file_size),
        (Resource::RLIMIT_AS, caller.address_space),
        (Resource::RLIMIT_DATA, caller.data),
        (Resource::RLIMIT_STACK, caller.stack),
        (Resource::RLIMIT_NOFILE, caller.open_files),
    ] {
        setrlimit(resource, limit.soft, limit.hard)?;
    }
    Ok(())
}

/// Per-process limits, inherited by everything the command starts. Only
/// ever lowered: a caller's own lower limit stays in force (what the report
/// shows is [`Rlimits::in_force`](crate::limits::Rlimits::in_force)).
fn set_rlimits(limits: &crate::limits::Rlimits) -> Result<(), Errno> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // No core files: a crash must not write the workload's memory to disk.
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    let lower = |resource: Resource, soft: u64, hard: u64| -> Result<(), Errno> {
        let (current_soft, current_hard) = getrlimit(resource)?;
        let hard = hard.min(current_hard);
        setrlimit(resource, soft.min(current_soft).min(hard), hard)
    };
    lower(
        Resource::RLIMIT_NOFILE,
        limits.open_files,
        limits.open_files,
    )?;
    if let Some(seconds) = limits.cpu_time_s {
        // SIGXCPU at the soft limit (the command may notice), SIGKILL one
        // second later at the hard limit.
        lower(Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
    }
    if let Some(bytes) = limits.file_size {
        lower(Resource::RLIMIT_FSIZE, bytes, bytes)?;
    }
    Ok(())
}

/// Cuts every capability set to `kept`: bounding first (it needs
/// CAP_SETPCAP, which is about to go), then inheritable, effective,
/// permitted, and ambient only when asked. Securebits are locked so that
/// no uid change can bring root's capabilities back.
fn restrict_capabilities(kept: &[Capability], ambient: bool) -> Result<(), Errno> {
    let kept: caps::CapsHashSet = kept.iter().filter_map(|c| to_caps(*c)).collect();
    let mut bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED;
    if !ambient {
        bits |= SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) } < 0 {
        return Err(Errno::last());
    }
    // A capability the running kernel does not know fails to drop
    // (EINVAL); what counts is that the bounding set reads back as `kept`.
    for cap in caps::all() {
        if !kept.contains(&cap) {
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    if caps::read(None, caps::CapSet::Bounding).map_err(|_| Errno::EPERM)? != kept {
        return Err(Errno::EPERM);
    }
    caps::set(None, caps::CapSet::Inheritable, &kept).map_err(|_| Errno::EPERM)?;
    caps::set(None, caps::CapSet::Effective, &kept).map_err(|_| Errno::EPERM)?;
    caps::set(None, caps::CapSet::Permitted, &kept).map_err(|_| Errno::EPERM)?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|_| Errno::EPERM)?;
    if ambient {
        for cap in &kept {
            caps::raise(None, caps::CapSet::Ambient, *cap).map_err(|_| Errno::EPERM)?;
        }
    }
    Ok(())
}

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

fn to_caps(cap: Capability) -> Option<caps::Capability> {
    caps::all().into_iter().find(|c| c.index() == cap.number())
}

/// execve with a PATH search done here, against the sandbox's PATH (libc's
/// execvpe would read this process's own, empty, environment).
fn execute(prepared: &Prepared) -> Result<Never, (u8, Errno)> {
    let program = prepared.argv.first().ok_or((STEP_EXEC, Errno::ENOENT))?;
    let name = program.to_bytes();
    if name.contains(&b'/') {
        return Err(exec_one(program, prepared));
    }
    let mut saw_eacces = false;
    for dir in &prepared.search_path {
        let mut candidate = Vec::with_capacity(dir.len() + 1 + name.len());
        candidate.extend_from_slice(dir.as_bytes());
        candidate.push(b'/');
        candidate.extend_from_slice(name);
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        match exec_one(&candidate, prepared) {
            (
                STEP_EXEC,
                Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ELOOP | Errno::ENAMETOOLONG,
            ) => {}
            (STEP_EXEC, Errno::EACCES) => saw_eacces = true,
            other => return Err(other),
        }
    }
    Err((
        STEP_EXEC,
        if saw_eacces {
            Errno::EACCES
        } else {
            Errno::ENOENT
        },
    ))
}

fn exec_one(path: &CString, prepared: &Prepared) -> (u8, Errno) {
    let errno = match nix::unistd::execve(path, &prepared.argv, &prepared.env) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    if errno == Errno::ENOENT
        && nix::sys::stat::stat(path.as_c_str())
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    {
        return (STEP_LOADER_MISSING, errno);
    }
    (STEP_EXEC, errno)
}
