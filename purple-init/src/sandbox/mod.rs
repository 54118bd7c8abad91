//! Creating the sandbox: the parent side (clone into new namespaces, write
//! the id maps, release the child) and the messages the child sends back.
//!
//! The child side is split by role: `child` builds the root and the
//! namespaces' state, `pid1` is the reaper that stays PID 1, and `workload`
//! is the last stretch before execve of the command.

pub mod child;
pub mod landlock;
mod mounts;
mod net_channel;
mod pid1;
pub mod syscall_filter;
mod workload;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};

use crate::cgroup::SandboxCgroup;
use crate::plan::Plan;
use crate::sys::{self, Cloned};

/// Namespaces every sandbox gets. User first: the other namespaces are owned
/// by it, so the workload (which holds no capability there) cannot change
/// its own mounts or network.
pub const NAMESPACES: &[(u64, &str)] = &[
    (libc::CLONE_NEWUSER as u64, "user"),
    (libc::CLONE_NEWNS as u64, "mnt"),
    (libc::CLONE_NEWPID as u64, "pid"),
    (libc::CLONE_NEWNET as u64, "net"),
    (libc::CLONE_NEWIPC as u64, "ipc"),
    (libc::CLONE_NEWUTS as u64, "uts"),
    (libc::CLONE_NEWCGROUP as u64, "cgroup"),
];

/// Bytes purple-init writes on the sync pipe: the id maps are written (the
/// child may start building its root), then the child is in its cgroup (it
/// may go on to become PID 1 and start the command).
pub const RELEASED: u8 = 1;
pub const PLACED: u8 = 2;

/// What the sandbox tells purple-init, over a pipe only init reads.
/// Each message is one small frame written with a single write(2) (below
/// PIPE_BUF), so it arrives whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildMessage {
    SetupFailed {
        step: String,
        detail: String,
    },
    /// execve failed; `program_exists` when the file is there but its
    /// interpreter or loader is not.
    ExecFailed {
        errno: i32,
        program: String,
        program_exists: bool,
    },
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// Sent by the workload before execve: what Landlock enforced (one
    /// line for the exit report). Not an ending.
    Landlock {
        summary: String,
    },
}

/// Frames on the status pipe stay below PIPE_BUF so writes are atomic.
pub const MAX_CHILD_MESSAGE: usize = 3072;
const CHILD_PROTOCOL: u32 = 1;

impl ChildMessage {
    pub fn encode(&self) -> Vec<u8> {
        let shortened = match self {
            ChildMessage::SetupFailed { step, detail } => ChildMessage::SetupFailed {
                step: truncate(step, 256),
                detail: truncate(detail, 1024),
            },
            ChildMessage::ExecFailed {
                errno,
                program,
                program_exists,
            } => ChildMessage::ExecFailed {
                errno: *errno,
                program: truncate(program, 1024),
                program_exists: *program_exists,
            },
            ChildMessage::Landlock { summary } => ChildMessage::Landlock {
                summary: truncate(summary, 1024),
            },
            other => other.clone(),
        };
        purple_common::codec::encode_frame(&shortened, CHILD_PROTOCOL, MAX_CHILD_MESSAGE)
            .unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ChildMessage> {
        purple_common::codec::decode_frame(bytes, CHILD_PROTOCOL, MAX_CHILD_MESSAGE).ok()
    }

    /// Every whole frame in `bytes`, in order; stops at the first bad one.
    pub fn decode_all(mut bytes: &[u8]) -> Vec<ChildMessage> {
        use purple_common::codec::{decode_header, HEADER_LEN};
        let mut messages = Vec::new();
        while let Some(header) = bytes
            .get(..HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
        {
            let Ok(h) = decode_header(header, CHILD_PROTOCOL, MAX_CHILD_MESSAGE) else {
                break;
            };
            let Some(frame) = bytes.get(..HEADER_LEN + h.payload_len) else {
                break;
            };
            let Some(message) = ChildMessage::decode(frame) else {
                break;
            };
            messages.push(message);
            bytes = &bytes[frame.len()..];
        }
        messages
    }

    /// Sends the message with one write(2). A failure to send cannot be
    /// reported anywhere else; init then reports a sandbox that ended
    /// without a status.
    pub fn send(&self, pipe: &OwnedFd) {
        let _ = nix::unistd::write(pipe, &self.encode());
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("creating the {what} pipe: {errno}")]
    Pipe { what: &'static str, errno: Errno },
    #[error("clone3 into new namespaces: {errno}")]
    Clone { errno: Errno },
    #[error("writing {path}: {source}")]
    IdMap {
        path: String,
        source: std::io::Error,
    },
    #[error("releasing the child: {errno}")]
    Release { errno: Errno },
    #[error("placing the sandbox in its cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("the sandbox's network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("{step}: {errno}")]
    NetChannel { step: &'static str, errno: Errno },
}

/// A started sandbox, from purple-init's side.
#[derive(Debug)]
pub struct Running {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// Read end of the status pipe (ChildMessage frames).
    pub status: OwnedFd,
    /// purple-netd's attachment of a filtered network (detached when the
    /// sandbox ended, or when this is dropped).
    pub network: Option<crate::network::Attached>,
}

/// Clones the sandbox's first process into new namespaces, maps its ids,
/// and lets it run. `trees` are the detached mounts made from the caller's
/// fds, indexed like the plan's `fd_index`.
/// The seccomp programs of one sandbox, compiled once in purple-init before
/// the clone (the children get them with their copy of its memory).
#[derive(Debug)]
pub struct Filters {
    pub workload: Vec<seccompiler::BpfProgram>,
    pub reaper: Vec<seccompiler::BpfProgram>,
}

impl Filters {
    pub fn compile(plan: &Plan) -> Result<Filters, syscall_filter::FilterError> {
        Ok(Filters {
            workload: syscall_filter::compile_policy(&plan.syscalls)?,
            reaper: syscall_filter::compile_reaper()?,
        })
    }
}

/// `cgroup`, when there is one, holds the child before the child may become
/// PID 1 and start the command: on v2 it is born there (CLONE_INTO_CGROUP),
/// on v1 it is moved there while it builds its root, and it checks its own
/// membership before going on. Nothing of the command runs unlimited.
pub fn launch(
    plan: &Plan,
    sandbox_id: &str,
    trees: Vec<OwnedFd>,
    filters: &Filters,
    cgroup: Option<&SandboxCgroup>,
) -> Result<Running, LaunchError> {
    let membership = cgroup.map(SandboxCgroup::membership).unwrap_or_default();
    let (sync_read, sync_write) = pipe2(OFlag::O_CLOEXEC).map_err(|errno| LaunchError::Pipe {
        what: "sync",
        errno,
    })?;
    let (status_read, status_write) =
        pipe2(OFlag::O_CLOEXEC).map_err(|errno| LaunchError::Pipe {
            what: "status",
            errno,
        })?;
    // A filtered network: the child hands over its network namespace and
    // gets its address back on this channel.
    let net_channel = match plan.network {
        Some(_) => Some(net_channel::pair().map_err(|errno| LaunchError::Pipe {
            what: "network",
            errno,
        })?),
        None => None,
    };
    // The cgroup namespace is not cloned: the child unshares it once it
    // sits in its own cgroup, so that cgroup becomes the namespace's root
    // (cloned here, the root would be purple-init's cgroup, and the host's
    // cgroup paths would show through /proc/self/cgroup).
    let flags = NAMESPACES
        .iter()
        .filter(|(flag, _)| *flag != libc::CLONE_NEWCGROUP as u64)
        .fold(0, |acc, (flag, _)| acc | flag);

    let into_cgroup = cgroup.and_then(SandboxCgroup::clone_target);
    // SAFETY: purple-init is single-threaded (no runtime, no helper threads),
    // so the child cannot inherit a lock held by another thread.
    match unsafe { sys::clone_process(flags, into_cgroup) }
        .map_err(|errno| LaunchError::Clone { errno })?
    {
        Cloned::Child => {
            drop(sync_write);
            drop(status_read);
            let net = net_channel.map(|(_, child_end)| child_end);
            child::run(
                plan,
                trees,
                filters,
                &membership,
                sync_read,
                status_write,
                net,
            )
        }
        Cloned::Parent { pid, pidfd } => {
            drop(sync_read);
            drop(status_write);
            drop(trees);
            let net = net_channel.map(|(init_end, _)| init_end);
            // Killed and reaped: a child left unreaped would outlive
            // purple-init as a zombie of whoever inherits it.
            let kill = |e: LaunchError| {
                let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                let _ = nix::sys::wait::waitid(
                    nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
                    nix::sys::wait::WaitPidFlag::WEXITED,
                );
                e
            };
            write_id_maps(pid, plan).map_err(kill)?;
            nix::unistd::write(&sync_write, &[RELEASED])
                .map_err(|errno| kill(LaunchError::Release { errno }))?;
            // v1 has no CLONE_INTO_CGROUP: move the child now, while it
            // builds its root (the move waits for an RCU grace period, and
            // this way the two overlap). The child waits for PLACED before
            // anything of the command can run.
            if let Some(cgroup) = cgroup.filter(|c| c.clone_target().is_none()) {
                u32::try_from(pid)
                    .map_err(|_| LaunchError::Clone {
                        errno: Errno::ESRCH,
                    })
                    .and_then(|pid| cgroup.attach(pid).map_err(LaunchError::from))
                    .map_err(kill)?;
            }
            // The filtered network, while the child builds its root: the
            // child's network namespace goes to purple-netd, which makes the
            // veth and the rules; the address goes back to the child, which
            // configures its end after PLACED.
            let mut network = None;
            if let (Some(channel), Some(wanted)) = (net.as_ref(), plan.network.as_ref()) {
                let netns = net_channel::receive_netns(channel).map_err(|errno| {
                    kill(LaunchError::NetChannel {
                        step: "receiving the sandbox's network namespace",
                        errno,
                    })
                })?;
                let attached = crate::network::attach(wanted, sandbox_id, netns)
                    .map_err(|e| kill(LaunchError::from(e)))?;
                net_channel::send_attachment(channel, &attached.attachment).map_err(|errno| {
                    kill(LaunchError::NetChannel {
                        step: "sending the sandbox its address",
                        errno,
                    })
                })?;
                network = Some(attached);
            }
            nix::unistd::write(&sync_write, &[PLACED])
                .map_err(|errno| kill(LaunchError::Release { errno }))?;
            Ok(Running {
                pid,
                pidfd,
                status: status_read,
                network,
            })
        }
    }
}

/// Maps the sandbox's one id to the same host id, and forbids setgroups so
/// the workload can never shed a supplementary group that denies it access.
fn write_id_maps(pid: libc::pid_t, plan: &Plan) -> Result<(), LaunchError> {
    let write = |file: &str, contents: &str| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(|source| LaunchError::IdMap { path, source })
    };
    let id = plan.identity;
    write("uid_map", &format!("{0} {0} 1\n", id.uid))?;
    write("setgroups", "deny")?;
    write("gid_map", &format!("{0} {0} 1\n", id.gid))?;
    Ok(())
}

/// Exits the current (child) process without running destructors or atexit
/// handlers that belong to the parent's copy of this process.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it ends the process at once.
    unsafe { libc::_exit(code) }
}

/// True when purple-init has gone: its end of the status pipe is closed, so
/// ours reports an error. Used after the parent-death signal is (re)armed,
/// to close the window in which the parent could have died unnoticed.
pub(crate) fn init_is_gone(status: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(status.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        Err(_) => true,
    }
}
