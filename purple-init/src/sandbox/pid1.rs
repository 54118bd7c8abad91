//! PID 1 of the sandbox: starts the workload, then only reaps.
//!
//! After the fork it gives up everything: capabilities, its descriptors
//! (except the status pipe to purple-init), and dumpability, so the workload
//! (same uid) can neither ptrace it nor open its /proc/1/fd. It ends as soon
//! as the workload does; the kernel then kills every other process of the
//! pid namespace, so nothing the command started outlives it.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::{exit_child, workload, ChildMessage};
use crate::plan::Plan;
use crate::sys;

pub fn run(plan: &Plan, filters: &super::Filters, status: OwnedFd) -> ! {
    let (exec_read, exec_write) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(errno) => fail(&status, "create exec pipe", errno),
    };
    // SAFETY: this process is single-threaded (a clone of purple-init's
    // single thread), so the child cannot inherit a held lock.
    let workload_pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(exec_read);
            // The workload reports what Landlock enforced on it; the pipe
            // is close-on-exec, so the command never holds it.
            workload::exec(plan, &filters.workload, exec_write, status)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(errno) => fail(&status, "fork workload", errno),
    };
    drop(exec_write);
    // At once, before the command can run a single instruction: PID 1 keeps
    // nothing the command could use (capabilities, host fds), but the
    // status pipe and the exec pipe.
    if let Err((step, errno)) = shed_privileges(&[status.as_raw_fd(), exec_read.as_raw_fd()]) {
        fail(&status, step, errno);
    }
    // Under the reaper filter a fault handler could not even reset itself
    // (sigaction gets ENOSYS) and would fault forever: let a fault kill
    // PID 1 instead, which ends the sandbox and is reported.
    if let Err(errno) = crate::sys::set_signal_dispositions(
        [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGABRT],
        libc::SIG_DFL,
    ) {
        fail(&status, "reset fault signals", errno);
    }
    if let Err(errno) = super::syscall_filter::apply_programs(&filters.reaper) {
        fail(&status, "install the seccomp filter on PID 1", errno);
    }

    // The exec pipe closes (EOF) when execve succeeds; otherwise the
    // workload sends the failed step and the errno first.
    if let Some((step, errno)) = read_exec_error(&exec_read) {
        let message = match step {
            0 | workload::STEP_LOADER_MISSING => ChildMessage::ExecFailed {
                errno,
                program: plan.argv.first().cloned().unwrap_or_default(),
                program_exists: step == workload::STEP_LOADER_MISSING,
            },
            _ => ChildMessage::SetupFailed {
                step: workload::STEPS
                    .get(usize::from(step))
                    .copied()
                    .unwrap_or("prepare the command")
                    .to_owned(),
                detail: Errno::from_raw(errno).desc().to_owned(),
            },
        };
        message.send(&status);
        exit_child(0);
    }
    drop(exec_read);
    reap_until(workload_pid, &status)
}

fn fail(status: &OwnedFd, step: &str, errno: Errno) -> ! {
    ChildMessage::SetupFailed {
        step: step.to_owned(),
        detail: errno.desc().to_owned(),
    }
    .send(status);
    exit_child(1)
}

fn read_exec_error(pipe: &OwnedFd) -> Option<(u8, i32)> {
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(pipe.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    (got == buf.len()).then(|| (buf[0], i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]])))
}

/// Drops every capability and every descriptor but `keep`.
fn shed_privileges(keep: &[i32]) -> Result<(), (&'static str, Errno)> {
    // Standard streams point at /dev/null: PID 1 must hold no host fd.
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ("open /dev/null", e))?;
    for target in 0..3 {
        nix::unistd::dup2(null, target).map_err(|e| ("redirect standard fds", e))?;
    }
    let _ = nix::unistd::close(null);
    close_all_except(keep).map_err(|e| ("close descriptors", e))?;

    // Capabilities the running kernel does not know fail to drop (EINVAL);
    // what counts is that the bounding set reads back empty.
    for cap in caps::all() {
        let _ = caps::drop(None, caps::CapSet::Bounding, cap);
    }
    let cap_err = |step: &'static str| move |_| (step, Errno::EPERM);
    let bounding =
        caps::read(None, caps::CapSet::Bounding).map_err(cap_err("read the bounding set"))?;
    if !bounding.is_empty() {
        return Err(("empty the bounding set", Errno::EPERM));
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(cap_err("clear ambient capabilities"))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(cap_err("clear inheritable capabilities"))?;
    caps::clear(None, caps::CapSet::Effective).map_err(cap_err("clear effective capabilities"))?;
    caps::clear(None, caps::CapSet::Permitted).map_err(cap_err("clear permitted capabilities"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| ("set no_new_privs", e))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| ("clear dumpable", e))?;
    Ok(())
}

/// Closes every descriptor from 3 up, except those in `keep`.
fn close_all_except(keep: &[i32]) -> Result<(), Errno> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd >= 3)
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep {
        if fd > first {
            // SAFETY: closes descriptors of this process between the kept
            // ones; the OwnedFds that held some of them (purple-init's
            // request socket) live in frames this process never returns to.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) };
            if ret < 0 {
                return Err(Errno::last());
            }
        }
        first = fd + 1;
    }
    sys::close_from(first, 0)
}

/// Reaps every child (orphans are reparented to PID 1) until the workload
/// itself ends, then reports how it ended and exits, which ends the sandbox.
fn reap_until(workload: Pid, status: &OwnedFd) -> ! {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == workload => {
                ChildMessage::Exited { code }.send(status);
                exit_child(0);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == workload => {
                ChildMessage::Signaled {
                    signal: signal as i32,
                }
                .send(status);
                exit_child(0);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => fail(status, "wait for the workload", errno),
        }
    }
}
