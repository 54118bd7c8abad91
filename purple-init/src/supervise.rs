//! purple-init's side while the sandbox runs: wait for PID 1 to end, enforce
//! the wall-clock timeout, turn SIGINT/SIGTERM/SIGHUP/SIGQUIT into an orderly
//! kill, and collect the status the sandbox reported.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::hardening::STOP_SIGNALS;
use crate::sandbox::{ChildMessage, Running, MAX_CHILD_MESSAGE};
use crate::sys;

/// How the sandbox ended, as far as purple-init knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The sandbox reported this (exit, signal, setup or exec failure).
    Reported(ChildMessage),
    /// The timeout expired and init killed the sandbox.
    TimedOut,
    /// Init received this signal and killed the sandbox.
    Interrupted(i32),
    /// PID 1 ended without reporting anything.
    Vanished { wait_status: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("{step}: {errno}")]
    Sys { step: &'static str, errno: Errno },
}

/// How the sandbox ended, and what Landlock enforced on the command (when
/// it got that far).
/// `supervisor` is the request socket: after the request the supervisor
/// writes one byte there, the number of a stop signal it received, when it
/// wants the sandbox ended (it cannot signal purple-init itself).
/// `supervisor_pidfd` becomes readable when the supervisor exits; the
/// sandbox then ends as if the supervisor had sent SIGHUP.
pub fn wait(
    running: Running,
    timeout: Option<Duration>,
    supervisor: BorrowedFd<'_>,
    supervisor_pidfd: BorrowedFd<'_>,
) -> Result<(Ending, Option<String>), SuperviseError> {
    let mut stop_set = SigSet::empty();
    for s in STOP_SIGNALS {
        stop_set.add(*s);
    }
    let signals = SignalFd::with_flags(&stop_set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|errno| SuperviseError::Sys {
        step: "signalfd",
        errno,
    })?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut message_bytes: Vec<u8> = Vec::new();
    let mut status_open = true;
    let mut forced: Option<Ending> = None;
    let mut supervisor_open = true;

    loop {
        let remaining = match (deadline, &forced) {
            (Some(d), None) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        // The status pipe leaves the set at EOF: a hung-up pipe would
        // otherwise report POLLHUP on every call and spin this loop.
        // Each source is polled only while it can still say something: a
        // hung-up pipe or an exited supervisor would otherwise report ready
        // on every call and spin this loop.
        let mut fds = vec![
            PollFd::new(running.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        let status_index = watch(&mut fds, running.status.as_fd(), status_open);
        let supervisor_index = watch(&mut fds, supervisor, supervisor_open);
        let pidfd_index = watch(&mut fds, supervisor_pidfd, forced.is_none());
        match poll(&mut fds, remaining) {
            Ok(0) => {
                // Deadline passed: kill the whole sandbox (PID 1 takes every
                // other process of the pid namespace with it).
                let _ = sys::pidfd_send_signal(running.pidfd.as_fd(), libc::SIGKILL);
                forced = Some(Ending::TimedOut);
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                return Err(SuperviseError::Sys {
                    step: "poll",
                    errno,
                })
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|fd| fd.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let ready_at = |i: Option<usize>| i.is_some_and(ready);
        let (pid1_done, signal_ready) = (ready(0), ready(1));
        let status_ready = ready_at(status_index);
        let supervisor_ready = ready_at(supervisor_index);
        if ready_at(pidfd_index) && forced.is_none() {
            let _ = sys::pidfd_send_signal(running.pidfd.as_fd(), libc::SIGKILL);
            forced = Some(Ending::Interrupted(libc::SIGHUP));
        }
        if supervisor_ready {
            // Whatever came (a byte, EOF, an error), the socket is done:
            // one stop request is all it carries.
            supervisor_open = false;
            if let (Some(signal), None) = (read_stop_request(supervisor), &forced) {
                let _ = sys::pidfd_send_signal(running.pidfd.as_fd(), libc::SIGKILL);
                forced = Some(Ending::Interrupted(signal));
            }
        }
        if status_ready {
            status_open = read_status(&running, &mut message_bytes);
        }
        if signal_ready {
            if let Ok(Some(info)) = signals.read_signal() {
                if forced.is_none() {
                    let _ = sys::pidfd_send_signal(running.pidfd.as_fd(), libc::SIGKILL);
                    forced = Some(Ending::Interrupted(info.ssi_signo as i32));
                }
            }
        }
        if pid1_done {
            // PID 1 is gone, so every writer of the status pipe is too:
            // read whatever is left up to EOF.
            while status_open {
                status_open = read_status(&running, &mut message_bytes);
            }
            let wait_status = reap(&running);
            let messages = ChildMessage::decode_all(&message_bytes);
            let landlock = messages.iter().find_map(|m| match m {
                ChildMessage::Landlock { summary } => Some(summary.clone()),
                _ => None,
            });
            if let Some(ending) = forced {
                return Ok((ending, landlock));
            }
            // The first ending wins: a workload's detailed setup failure
            // comes before PID 1's short one.
            let ending = messages
                .into_iter()
                .find(|m| !matches!(m, ChildMessage::Landlock { .. }))
                .map_or(Ending::Vanished { wait_status }, Ending::Reported);
            return Ok((ending, landlock));
        }
    }
}

/// Adds `fd` to the poll set when `wanted`; its index there.
fn watch<'fd>(fds: &mut Vec<PollFd<'fd>>, fd: BorrowedFd<'fd>, wanted: bool) -> Option<usize> {
    wanted.then(|| {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
        fds.len() - 1
    })
}

/// The signal the supervisor asks purple-init to act on: the byte it sent
/// when that is one of the stop signals, SIGTERM for any other byte. EOF
/// (a half-closed or closed socket) asks for nothing: a client may close
/// its sending side and still wait for the report, and a supervisor that
/// died is seen through its pidfd.
fn read_stop_request(supervisor: BorrowedFd<'_>) -> Option<i32> {
    let mut byte = [0u8; 1];
    match nix::unistd::read(supervisor.as_raw_fd(), &mut byte) {
        Ok(1) => Some(
            STOP_SIGNALS
                .iter()
                .map(|s| *s as i32)
                .find(|s| *s == i32::from(byte[0]))
                .unwrap_or(libc::SIGTERM),
        ),
        _ => None,
    }
}

/// The most status bytes kept from one sandbox.
const STATUS_BUFFER_LIMIT: usize = 4 * MAX_CHILD_MESSAGE;

/// Reads from the status pipe; false once it reached EOF (or failed).
fn read_status(running: &Running, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 1024];
    match nix::unistd::read(running.status.as_raw_fd(), &mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            // A few frames at most (Landlock's summary, then the ending);
            // anything past the cap is dropped whole, never spliced.
            let room = STATUS_BUFFER_LIMIT.saturating_sub(buffer.len());
            buffer.extend_from_slice(&chunk[..n.min(room)]);
            true
        }
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

fn reap(running: &Running) -> String {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(running.pid), None) {
        Ok(status) => format!("{status:?}"),
        Err(errno) => format!("waitpid failed: {errno}"),
    }
}
