//! Messages between purple-init and purple-netd, the small daemon that gives
//! a sandbox a filtered network (a veth pair and nftables rules).
//!
//! One request, one reply per connection, over a Unix stream socket that only
//! root may use. Frames are the same as between supervisor and init
//! ([`crate::protocol::send_message`] / [`crate::protocol::receive_message`]:
//! magic, frame version, size limit, SCM_RIGHTS). The messages carry their
//! own [`NETD_PROTOCOL_VERSION`] as well, so purple-init and purple-netd from
//! different builds refuse each other with a clear reason even when the
//! supervisor/init frame version did not change.
//!
//! - [`NetdRequest::Attach`] carries exactly one fd: the sandbox's network
//!   namespace (the sandbox's child opens its own
//!   `/proc/thread-self/ns/net` and sends it to purple-init over their socket
//!   pair; purple-init passes that fd on, since it may not open another
//!   process's namespace files once that process has other ids and is not
//!   dumpable). netd reserves the host ports the sandbox publishes (a port
//!   a host service holds is refused), creates the veth pair (host end
//!   `pv<12 hex of the id>`, sandbox end `eth0` created directly in that
//!   namespace), gives the host end the gateway address of a free /30 of
//!   `pool`, and installs the sandbox's rules. The reply says what the
//!   sandbox side must configure: [`Attachment`].
//! - [`NetdRequest::Detach`] removes them and returns the final counters.
//!
//! Both are idempotent: attaching an attached id returns the existing
//! attachment; detaching an unknown id answers `Detached(None)`.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Cidr, InboundRule, PortRule};
use crate::protocol::{receive_message, send_message, TransportError};

/// Bumped whenever a netd message changes shape; netd refuses other versions.
pub const NETD_PROTOCOL_VERSION: u32 = 1;
/// Largest request netd reads: 2 × 256 rules fit with room to spare.
pub const MAX_NETD_REQUEST_BYTES: usize = 64 * 1024;
/// Largest reply purple-init reads.
pub const MAX_NETD_REPLY_BYTES: usize = 64 * 1024;
/// Where purple-netd listens unless told otherwise.
pub const DEFAULT_NETD_SOCKET: &str = "/run/purple/netd.sock";
/// The name of the sandbox end of the veth pair, inside the sandbox.
pub const SANDBOX_INTERFACE: &str = "eth0";
/// Prefix of the host end of every sandbox's veth pair.
pub const HOST_INTERFACE_PREFIX: &str = "pv";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetdRequest {
    /// With one attached fd: the sandbox's network namespace.
    Attach(AttachRequest),
    /// Remove the sandbox's veth and rules; the reply carries its counters.
    Detach { version: u32, sandbox_id: String },
}

impl NetdRequest {
    /// The netd protocol version the sender was built with.
    pub fn version(&self) -> u32 {
        match self {
            NetdRequest::Attach(a) => a.version,
            NetdRequest::Detach { version, .. } => *version,
        }
    }

    pub fn detach(sandbox_id: impl Into<String>) -> NetdRequest {
        NetdRequest::Detach {
            version: NETD_PROTOCOL_VERSION,
            sandbox_id: sandbox_id.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub version: u32,
    /// The sandbox's UUID (hyphenated, lower case); netd re-validates it.
    pub sandbox_id: String,
    /// The IPv4 pool from the admin config (e.g. 10.200.0.0/16); each sandbox
    /// gets one /30 of it.
    pub pool: Cidr,
    /// Outbound allowances; everything else leaving the sandbox is dropped.
    pub allow_out: Vec<PortRule>,
    /// Inbound allowances (optionally published on a host port).
    pub allow_in: Vec<InboundRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetdReply {
    Attached(Attachment),
    /// `None` when netd knew nothing of the sandbox (already detached).
    Detached(Option<NetCounters>),
    Refused {
        reason: String,
    },
}

/// What the sandbox side must configure on its end of the veth: the
/// address with `prefix_len` on `sandbox_interface`, the interface up, `lo`
/// up, a default route via `gateway`, and IPv6 disabled on the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub host_interface: String,
    pub sandbox_interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// Per-sandbox packet and byte counters, as netd's rules counted them.
/// "out" is traffic leaving the sandbox (to other hosts or the host itself),
/// "in" is traffic to it (from other hosts or the host itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    pub out_allowed_packets: u64,
    pub out_allowed_bytes: u64,
    pub out_dropped_packets: u64,
    pub out_dropped_bytes: u64,
    pub in_allowed_packets: u64,
    pub in_allowed_bytes: u64,
    pub in_dropped_packets: u64,
    pub in_dropped_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetdClientError {
    #[error("connect to purple-netd at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("set a timeout on the purple-netd socket {path}: {source}")]
    Timeout {
        path: String,
        source: std::io::Error,
    },
    #[error("send the request to purple-netd: {0}")]
    Send(TransportError),
    #[error("read the reply of purple-netd: {0}")]
    Receive(TransportError),
}

/// Sends one request (with `netns` attached for an attach) to the netd at
/// `socket` and reads its one reply, each direction bounded by `timeout`.
pub fn call(
    socket: &Path,
    request: &NetdRequest,
    netns: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<NetdReply, NetdClientError> {
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|source| NetdClientError::Connect {
        path: path.clone(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|source| NetdClientError::Timeout { path, source })?;
    exchange(stream.as_fd(), request, netns)
}

/// One request/reply exchange on an already connected socket.
pub fn exchange(
    stream: BorrowedFd<'_>,
    request: &NetdRequest,
    netns: Option<BorrowedFd<'_>>,
) -> Result<NetdReply, NetdClientError> {
    let fds: Vec<_> = netns.iter().map(|fd| fd.as_raw_fd()).collect();
    send_message(stream, request, MAX_NETD_REQUEST_BYTES, &fds).map_err(NetdClientError::Send)?;
    let (reply, _fds) = receive_message::<NetdReply>(stream, MAX_NETD_REPLY_BYTES)
        .map_err(NetdClientError::Receive)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::protocol::PROTOCOL_VERSION;

    #[test]
    fn attach_round_trips_through_the_codec() {
        let request = NetdRequest::Attach(AttachRequest {
            version: NETD_PROTOCOL_VERSION,
            sandbox_id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            pool: "10.200.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            allow_out: vec![
                "tcp:443@192.0.2.0/24"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                "udp:53".parse().unwrap_or_else(|_| unreachable!()),
            ],
            allow_in: vec!["tcp:8080->18080".parse().unwrap_or_else(|_| unreachable!())],
        });
        let frame = codec::encode_frame(&request, PROTOCOL_VERSION, MAX_NETD_REQUEST_BYTES)
            .unwrap_or_default();
        let back: Option<NetdRequest> =
            codec::decode_frame(&frame, PROTOCOL_VERSION, MAX_NETD_REQUEST_BYTES).ok();
        assert_eq!(back, Some(request));
    }

    #[test]
    fn the_most_rules_a_policy_may_hold_fit_in_a_request() {
        let rule: PortRule = "tcp:10000-20000@192.0.2.0/24"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let inbound: InboundRule = "tcp:10000->20000"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let request = NetdRequest::Attach(AttachRequest {
            version: NETD_PROTOCOL_VERSION,
            sandbox_id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            pool: "10.200.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            allow_out: vec![rule; crate::policy::MAX_PORT_RULES],
            allow_in: vec![inbound; crate::policy::MAX_PORT_RULES],
        });
        assert!(
            codec::encode_frame(&request, PROTOCOL_VERSION, MAX_NETD_REQUEST_BYTES).is_ok(),
            "a maximal request must fit in MAX_NETD_REQUEST_BYTES"
        );
    }
}
