//! Process hygiene for a setuid program, done before anything else.
//!
//! The caller controls purple-init's whole starting state: environment,
//! open descriptors, signal dispositions and mask, umask, rlimits, cwd. None
//! of it is trusted. This module resets what purple-init relies on and
//! keeps from the caller only the socket at fd 3 and fds 0-2 (which become
//! the workload's standard streams).

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{getsockopt, sockopt, SockType};
use purple_common::protocol::INIT_SOCKET_FD;

use crate::limits::{CallerRlimit, CallerRlimits};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("{step}: {errno}")]
    Sys { step: &'static str, errno: Errno },
    #[error("fd {INIT_SOCKET_FD} is not a unix stream socket; purple-init is started by purple-supervisor, not by hand")]
    NoSocket,
    #[error("the parent process exited while purple-init was starting")]
    ParentGone,
    #[error("dropping capabilities: {0}")]
    Capabilities(String),
    #[error("the caller's hard {resource} is {hard}; purple-init needs at least {needed} (raise it with ulimit -H, or run from a session without it)")]
    CallerLimitTooLow {
        resource: &'static str,
        hard: u64,
        needed: u64,
    },
}

fn sys_err(step: &'static str) -> impl FnOnce(Errno) -> HardeningError {
    move |errno| HardeningError::Sys { step, errno }
}

/// What survives sanitizing: the request socket, the caller's real ids, and
/// `PURPLE_CONFIG` and `PURPLE_NETD_SOCKET` as they were (honoured later
/// only for a root caller).
#[derive(Debug)]
pub struct StartState {
    pub socket: OwnedFd,
    /// pidfd of the supervisor (purple-init's parent).
    pub supervisor: OwnedFd,
    pub real_uid: u32,
    pub real_gid: u32,
    pub purple_config: Option<OsString>,
    /// `PURPLE_NETD_SOCKET` as it was (honoured only for a root caller).
    pub netd_socket: Option<OsString>,
    /// The caller's limits purple-init lifted for itself; the workload
    /// gets them back.
    pub caller_rlimits: CallerRlimits,
}

/// Job-control stop signals a terminal sends: ignored by purple-init.
pub const JOB_CONTROL_SIGNALS: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// Signals that make purple-init end the sandbox; read via signalfd.
pub const STOP_SIGNALS: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Capabilities purple-init keeps until the sandbox is started: open_tree
/// and mount_setattr on the caller's paths (SYS_ADMIN), writing id maps for
/// another id and clearing a root caller's groups (SETUID, SETGID).
const KEPT_CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
];

pub fn sanitize_process() -> Result<StartState, HardeningError> {
    // First the parent-death signal (execve of a setuid binary cleared it):
    // if the supervisor dies, purple-init ends the sandbox. SIGTERM, not
    // SIGKILL: it is one of the stop signals, blocked below and read from
    // a signalfd, so purple-init kills the sandbox and removes its cgroup
    // instead of dying with the cgroup left behind.
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(sys_err("prctl PR_SET_PDEATHSIG"))?;
    if nix::unistd::getppid() != parent || parent.as_raw() == 1 {
        return Err(HardeningError::ParentGone);
    }
    ensure_standard_fds_open()?;
    let socket = take_request_socket()?;
    sys::close_from(INIT_SOCKET_FD as u32 + 1, 0)
        .map_err(sys_err("close inherited descriptors"))?;
    // The supervisor's death must end the sandbox also after purple-init
    // made root its real uid: the kernel checks a parent-death signal
    // against the dying parent's right to signal, so from then on only this
    // pidfd (polled while the sandbox runs) tells.
    let supervisor =
        sys::pidfd_open(parent.as_raw()).map_err(sys_err("pidfd_open of the supervisor"))?;
    if nix::unistd::getppid() != parent {
        return Err(HardeningError::ParentGone);
    }

    let purple_config = std::env::var_os("PURPLE_CONFIG");
    let netd_socket = std::env::var_os("PURPLE_NETD_SOCKET").filter(|s| !s.is_empty());
    clear_environment();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::unistd::chdir("/").map_err(sys_err("chdir /"))?;
    reset_signals()?;
    let ids = nix::unistd::getresuid().map_err(sys_err("getresuid"))?;
    let gids = nix::unistd::getresgid().map_err(sys_err("getresgid"))?;
    // Files and directories purple-init creates (the admin's audit log,
    // /run/purple, cgroups) are root's, not in the caller's group: a setuid
    // binary keeps the caller's effective gid. The real gid stays the
    // caller's until step 4b.
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(gids.real, root_gid, root_gid)
        .map_err(sys_err("setresgid (effective to root)"))?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(sys_err("setrlimit RLIMIT_CORE"))?;
    // Before the capabilities go: raising a hard limit needs
    // CAP_SYS_RESOURCE.
    let caller_rlimits = lift_caller_rlimits()?;
    keep_only_needed_capabilities()?;
    Ok(StartState {
        socket,
        supervisor,
        real_uid: ids.real.as_raw(),
        real_gid: gids.real.as_raw(),
        purple_config,
        netd_socket,
        caller_rlimits,
    })
}

/// Lowest hard limits purple-init can work under: the descriptors of a
/// full request plus its own, and memory to parse, plan and report. A
/// caller below them is refused up front rather than have purple-init fail
/// half-way (with a sandbox running and no report or terminal event).
const CALLER_HARD_FLOORS: [(&str, u64); 4] = [
    ("RLIMIT_NOFILE", 1024),
    ("RLIMIT_AS", 1 << 30),
    ("RLIMIT_DATA", 1 << 30),
    ("RLIMIT_STACK", 8 << 20),
];

/// Saves the caller's limits of the resources that could end or starve
/// purple-init, and lifts them for purple-init: a caller's RLIMIT_CPU would
/// kill it with SIGXCPU mid-run, RLIMIT_FSIZE would cut the admin's audit
/// log short, small AS/DATA/STACK limits would make it abort on an
/// allocation; each time without a report or a terminal audit event. Soft
/// limits go up to the hard ones (always allowed); hard limits go to
/// unlimited where CAP_SYS_RESOURCE allows (some hosts keep it out of every
/// bounding set), and otherwise stay, after a check that they leave
/// purple-init enough. Every hard limit stays at least the caller's, so
/// the workload can be given the caller's values back.
fn lift_caller_rlimits() -> Result<CallerRlimits, HardeningError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let lift = |resource: Resource, name: &'static str, step: &'static str| {
        let (soft, hard) = getrlimit(resource).map_err(sys_err(step))?;
        if setrlimit(resource, u64::MAX, u64::MAX).is_err() {
            setrlimit(resource, hard, hard).map_err(sys_err(step))?;
            let floor = CALLER_HARD_FLOORS.iter().find(|(n, _)| *n == name);
            if let Some((_, needed)) = floor.filter(|(_, needed)| hard < *needed) {
                return Err(HardeningError::CallerLimitTooLow {
                    resource: name,
                    hard,
                    needed: *needed,
                });
            }
        }
        Ok::<_, HardeningError>(CallerRlimit { soft, hard })
    };
    Ok(CallerRlimits {
        cpu: lift(Resource::RLIMIT_CPU, "RLIMIT_CPU", "lift RLIMIT_CPU")?,
        file_size: lift(Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", "lift RLIMIT_FSIZE")?,
        address_space: lift(Resource::RLIMIT_AS, "RLIMIT_AS", "lift RLIMIT_AS")?,
        data: lift(Resource::RLIMIT_DATA, "RLIMIT_DATA", "lift RLIMIT_DATA")?,
        stack: lift(Resource::RLIMIT_STACK, "RLIMIT_STACK", "lift RLIMIT_STACK")?,
        open_files: lift(
            Resource::RLIMIT_NOFILE,
            "RLIMIT_NOFILE",
            "lift RLIMIT_NOFILE",
        )?,
    })
}

/// A setuid program must not run with 0, 1 or 2 closed: a file it opens
/// would land there and be written to by accident. Closed ones become
/// /dev/null (the workload then reads EOF / writes nowhere).
fn ensure_standard_fds_open() -> Result<(), HardeningError> {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(Errno::EBADF) {
            let null = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(sys_err("open /dev/null"))?;
            if null != fd {
                nix::unistd::dup2(null, fd).map_err(sys_err("dup2 /dev/null"))?;
                let _ = nix::unistd::close(null);
            }
        }
    }
    Ok(())
}

fn take_request_socket() -> Result<OwnedFd, HardeningError> {
    let fd: RawFd = INIT_SOCKET_FD;
    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(HardeningError::NoSocket);
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process
    // owns it; from here on this OwnedFd is its only owner.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let is_unix_stream = getsockopt(&socket, sockopt::SockType).ok() == Some(SockType::Stream)
        && socket_domain(fd) == Some(libc::AF_UNIX);
    if !is_unix_stream {
        return Err(HardeningError::NoSocket);
    }
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(sys_err("set FD_CLOEXEC"))?;
    Ok(socket)
}

fn socket_domain(fd: RawFd) -> Option<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: domain and len are valid for writes of the sizes passed.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some(domain)
}

fn clear_environment() {
    for (key, _) in std::env::vars_os() {
        // purple-init is single-threaded, so changing the environment races
        // with nothing.
        std::env::remove_var(key);
    }
}

/// Every signal the caller ignored back to default (ignored dispositions
/// survive execve, and a caller could have ignored SIGCHLD), then the stop
/// signals blocked (the rest unblocked) so the wait loop reads them from a
/// signalfd.
fn reset_signals() -> Result<(), HardeningError> {
    let ignored = sys::ignored_signals().map_err(sys_err("read ignored signals"))?;
    sys::set_signal_dispositions(ignored, libc::SIG_DFL)
        .map_err(sys_err("reset signal dispositions"))?;
    // purple-init itself ignores SIGPIPE (a caller's closed stderr must not
    // kill it before it reports); the command gets the default back.
    sys::set_signal_dispositions([libc::SIGPIPE], libc::SIG_IGN)
        .map_err(sys_err("ignore SIGPIPE"))?;
    // The caller's terminal can stop its foreground process group without
    // any permission check (Ctrl-Z, background reads and writes): a stopped
    // purple-init would not enforce the timeout. The command gets the
    // defaults back.
    sys::set_signal_dispositions(JOB_CONTROL_SIGNALS, libc::SIG_IGN)
        .map_err(sys_err("ignore job-control stops"))?;
    // A caller's hard RLIMIT_FSIZE that could not be lifted makes a write
    // past it fail (EFBIG, handled) instead of killing purple-init.
    sys::set_signal_dispositions([libc::SIGXFSZ], libc::SIG_IGN)
        .map_err(sys_err("ignore SIGXFSZ"))?;
    let mut stop = SigSet::empty();
    for s in STOP_SIGNALS {
        stop.add(*s);
    }
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&stop), None)
        .map_err(sys_err("set signal mask"))
}

/// Kept in the permitted set only, and raised just around the cgroup step:
/// the root directory of a cgroup v1 hierarchy is mode 0555, so creating
/// the Purple parent there needs it (and nothing else does).
const CGROUP_CAPABILITY: caps::Capability = caps::Capability::CAP_DAC_OVERRIDE;

fn keep_only_needed_capabilities() -> Result<(), HardeningError> {
    let keep: caps::CapsHashSet = KEPT_CAPABILITIES.iter().copied().collect();
    let mut permitted = keep.clone();
    permitted.insert(CGROUP_CAPABILITY);
    let cap_err = |e: caps::errors::CapsError| HardeningError::Capabilities(e.to_string());
    for cap in caps::all() {
        if !permitted.contains(&cap) {
            caps::drop(None, caps::CapSet::Bounding, cap).map_err(cap_err)?;
        }
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(cap_err)?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(cap_err)?;
    caps::set(None, caps::CapSet::Effective, &keep).map_err(cap_err)?;
    caps::set(None, caps::CapSet::Permitted, &permitted).map_err(cap_err)?;
    Ok(())
}

/// Runs `step` (the cgroup's creation) with CAP_DAC_OVERRIDE effective,
/// and lowers it again whatever the step returned.
pub fn with_cgroup_privilege<T>(step: impl FnOnce() -> T) -> Result<T, HardeningError> {
    let cap_err = |e: caps::errors::CapsError| HardeningError::Capabilities(e.to_string());
    caps::raise(None, caps::CapSet::Effective, CGROUP_CAPABILITY).map_err(cap_err)?;
    let result = step();
    caps::drop(None, caps::CapSet::Effective, CGROUP_CAPABILITY).map_err(cap_err)?;
    Ok(result)
}

/// Makes root the real uid too, once nothing more is checked as the caller:
/// the kernel lets a process signal another whose real uid is its own, so
/// until now the caller could SIGSTOP purple-init and hold off its timeout
/// (the admin's `maxima.timeout` included). From here on the supervisor's
/// parent-death signal is refused too (the kernel checks it like a kill by
/// the dying supervisor); the supervisor's pidfd replaces it, and stop
/// requests come over the socket.
///
/// The gids go to root as well: the credentials the kernel attaches to a
/// syslog datagram are the real ids, and purple-init's events must be told
/// from anything the caller could send itself (a non-root caller keeps its
/// supplementary groups for the sandbox; setresgid leaves those alone).
/// Idempotent: main calls it again before the last audit events, for runs
/// refused before this step.
pub fn stop_answering_caller_signals() -> Result<(), HardeningError> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(sys_err("setresgid to root"))?;
    let root = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(root, root, root).map_err(sys_err("setresuid to root"))
}

/// After the sandbox is started purple-init needs no capability at all.
pub fn drop_all_capabilities() -> Result<(), HardeningError> {
    let cap_err = |e: caps::errors::CapsError| HardeningError::Capabilities(e.to_string());
    caps::clear(None, caps::CapSet::Effective).map_err(cap_err)?;
    caps::clear(None, caps::CapSet::Permitted).map_err(cap_err)?;
    Ok(())
}
