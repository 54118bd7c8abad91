//! Messages between purple-supervisor and purple-init, and the socket
//! transport that carries them with file descriptors (SCM_RIGHTS).
//!
//! One exchange per sandbox: the supervisor sends a [`SandboxRequest`] with
//! the host paths it opened as the user attached as fds; purple-init
//! answers with [`InitReply`] frames: at most one `Started` once the
//! command's sandbox exists, then exactly one `Finished` carrying the exit
//! report when the sandbox is gone (or was refused).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cgroup_files::LiveUsageSource;
use crate::codec::{self, CodecError, HEADER_LEN};
use crate::policy::Policy;
use crate::report::ExitReport;
use crate::values::AbsPath;

/// Bumped whenever a message changes shape; both sides must match exactly.
pub const PROTOCOL_VERSION: u32 = 4;
/// Largest request purple-init reads. Bounds argv + env + policy: a request
/// over it is refused before anything is decoded.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest reply the supervisor reads.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most file descriptors one request may carry.
pub const MAX_REQUEST_FDS: usize = 320;
/// The fd number at which the supervisor hands purple-init its socket.
pub const INIT_SOCKET_FD: RawFd = 3;
/// Longest argv purple-init accepts, in arguments.
pub const MAX_ARGS: usize = 65_536;

/// Where a host path opened by the supervisor goes in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Index into the fds attached to the request.
    pub fd_index: u32,
    pub destination: AbsPath,
    pub writable: bool,
    /// The path the supervisor opened (for the report only; init trusts the fd).
    pub source_hint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRequest {
    pub policy: Policy,
    pub argv: Vec<String>,
    /// Bind mounts, each backed by one attached fd, in the order the fds come.
    pub mounts: Vec<MountRequest>,
    /// The caller's login name for the synthesized /etc/passwd (cosmetic:
    /// the uid comes from the kernel, never from this field).
    pub user_name: String,
    /// The last attached fd is the caller's own audit log (`--audit-log`):
    /// a regular file opened for appending, where purple-init writes a copy
    /// of its events.
    pub audit_log: bool,
}

/// What purple-init sends back, in this order: at most one `Started`,
/// then one `Finished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InitReply {
    /// The sandbox exists and its PID 1 is building the root; the command
    /// starts next. Not sent when the run is refused before that.
    Started(SandboxStarted),
    /// The sandbox is gone (or never existed): the exit report.
    Finished(Box<ExitReport>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxStarted {
    /// The id in the report and the audit trail.
    pub sandbox_id: String,
    /// Where the sandbox's cgroup counters can be read while it runs;
    /// `None` when it runs without a cgroup (best effort on a host without
    /// one).
    pub usage: Option<LiveUsageSource>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::Error,
    },
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("the peer closed the connection before a whole message arrived")]
    Closed,
    #[error("too many file descriptors attached (at most {MAX_REQUEST_FDS})")]
    TooManyFds,
    #[error("control data was truncated (more than {MAX_REQUEST_FDS} descriptors sent?)")]
    ControlTruncated,
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> TransportError {
    move |source| TransportError::Sys { step, source }
}

/// Sends one frame with `fds` attached to its first byte.
pub fn send_message<T: Serialize>(
    socket: BorrowedFd<'_>,
    value: &T,
    limit: usize,
    fds: &[RawFd],
) -> Result<(), TransportError> {
    if fds.len() > MAX_REQUEST_FDS {
        return Err(TransportError::TooManyFds);
    }
    let frame = codec::encode_frame(value, PROTOCOL_VERSION, limit)?;
    let mut sent = 0;
    while sent < frame.len() {
        let iov = [IoSlice::new(&frame[sent..])];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(TransportError::Sys {
                    step: "sendmsg",
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Receives one frame and the fds attached to it. The header is checked
/// (magic, version, size) before the payload is read; extra fds beyond
/// [`MAX_REQUEST_FDS`] or truncated control data are refused (and every
/// received fd is closed, because they are owned).
pub fn receive_message<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
    limit: usize,
) -> Result<(T, Vec<OwnedFd>), TransportError> {
    let mut header = [0u8; HEADER_LEN];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_REQUEST_FDS]);
    let mut got = 0;
    while got < HEADER_LEN {
        let mut iov = [IoSliceMut::new(&mut header[got..])];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(TransportError::Sys {
                    step: "recvmsg",
                    source: e,
                })
            }
        };
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        for cmsg in msg.cmsgs().map_err(sys("recvmsg control data"))? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel just installed this descriptor in our
                    // table for us (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // Counted over every recvmsg: several sends must not add up to more.
        if fds.len() > MAX_REQUEST_FDS {
            return Err(TransportError::TooManyFds);
        }
        if truncated {
            return Err(TransportError::ControlTruncated);
        }
        if msg.bytes == 0 {
            return Err(TransportError::Closed);
        }
        got += msg.bytes;
    }
    let frame = codec::decode_header(&header, PROTOCOL_VERSION, limit)?;
    let mut payload = vec![0u8; frame.payload_len];
    let mut filled = 0;
    while filled < payload.len() {
        match nix::unistd::read(socket.as_raw_fd(), &mut payload[filled..]) {
            Ok(0) => {
                return Err(TransportError::Codec(CodecError::Truncated {
                    got: filled,
                    expected: payload.len(),
                }))
            }
            Ok(n) => filled += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(TransportError::Sys {
                    step: "read",
                    source: e,
                })
            }
        }
    }
    let value = codec::decode_payload(&payload, limit)?;
    Ok((value, fds))
}
