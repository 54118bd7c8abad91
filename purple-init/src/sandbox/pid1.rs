//! PID 1 of the sandbox: starts the workload, then only reaps.
//!
//! After the fork it gives up everything: capabilities, its descriptors
//! (except the status pipe to purple-init), and dumpability, so the workload
//! (same uid) can neither ptrace it nor open its /proc/1/fd. It ends as soon
//! as the workload does; the kernel then kills every other process of the
//! pid namespace, so nothing the command started outlives it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::{exit_child, workload, ChildMessage};
use crate::plan::Plan;
use crate::sys;

pub fn run(plan: &Plan, status: OwnedFd) -> ! {
    let (exec_read, exec_write) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(errno) => fail(&status, "create exec pipe", errno),
    };
    // SAFETY: this process is single-threaded (a clone of purple-init's
    // single thread), so the child cannot inherit a held lock.
    let workload_pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(exec_read);
            drop(status);
            workload::exec(plan, exec_write)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(errno) => fail(&status, "fork workload", errno),
    };
    drop(exec_write);

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

    if let Err((step, errno)) = shed_privileges(&status) {
        fail(&status, step, errno);
    }
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

/// Drops every capability and descriptor PID 1 no longer needs.
fn shed_privileges(status: &OwnedFd) -> Result<(), (&'static str, Errno)> {
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
    // Keep only the status pipe above 2.
    close_all_except(status.as_raw_fd()).map_err(|e| ("close descriptors", e))?;

    for cap in caps::all() {
        let _ = caps::drop(None, caps::CapSet::Bounding, cap);
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|_| ("clear ambient capabilities", Errno::EPERM))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|_| ("clear inheritable capabilities", Errno::EPERM))?;
    caps::clear(None, caps::CapSet::Effective)
        .map_err(|_| ("clear effective capabilities", Errno::EPERM))?;
    caps::clear(None, caps::CapSet::Permitted)
        .map_err(|_| ("clear permitted capabilities", Errno::EPERM))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| ("set no_new_privs", e))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| ("clear dumpable", e))?;
    // The uid change in the child cleared the parent-death signal; set it
    // again, then make sure purple-init did not die in between (its end of
    // the status pipe would be closed).
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| ("prctl PR_SET_PDEATHSIG", e))?;
    if init_is_gone(status) {
        exit_child(1);
    }
    Ok(())
}

/// Closes every descriptor from 3 up, except `keep`.
fn close_all_except(keep: i32) -> Result<(), Errno> {
    let keep = u32::try_from(keep).map_err(|_| Errno::EBADF)?;
    if keep > 3 {
        // SAFETY: closes a range of this process's descriptors that nothing
        // here owns any more (status is the only one kept).
        let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32) };
        if ret < 0 {
            return Err(Errno::last());
        }
    }
    sys::close_from(keep + 1, 0)
}

fn init_is_gone(status: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        status.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_some_and(|r| {
            r.intersects(nix::poll::PollFlags::POLLERR | nix::poll::PollFlags::POLLHUP)
        }),
        Err(_) => true,
    }
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
