//! Host port reservations: before a sandbox's published port is DNATed,
//! netd binds that port on the host itself, so the DNAT never shadows a host
//! service (the bind fails when one holds the port) and no host service can
//! take the port while the sandbox publishes it (netd holds it).
//!
//! TCP sockets are bound, never listening: a connection to the port is
//! DNATed before it could reach them, and one that is not (IPv6) is reset as
//! if nothing were there. No SO_REUSEADDR or SO_REUSEPORT, so any other
//! socket on the port, listening or not, makes the bind fail.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};
use purple_common::policy::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("host port {protocol}:{port} is in use on this host")]
    InUse { protocol: Protocol, port: u16 },
    #[error("host port {protocol}:{port} is privileged (below net.ipv4.ip_unprivileged_port_start = {start}) and purple-netd, which holds only CAP_NET_ADMIN, cannot reserve it; publish a host port at or above {start}")]
    Privileged {
        protocol: Protocol,
        port: u16,
        start: String,
    },
    #[error("reserve host port {protocol}:{port}: {step}: {source}")]
    Sys {
        protocol: Protocol,
        port: u16,
        step: &'static str,
        source: nix::Error,
    },
}

/// The sockets that hold one sandbox's host ports; dropping it releases them.
#[derive(Debug, Default)]
pub struct Reservation {
    sockets: Vec<OwnedFd>,
}

impl Reservation {
    /// Reserves every port of `ports`, all or none.
    pub fn take(ports: &[(Protocol, u16)]) -> Result<Reservation, PortError> {
        let mut r = Reservation::default();
        for (protocol, port) in ports {
            r.add(*protocol, *port)?;
        }
        Ok(r)
    }

    /// Reserves one more port.
    pub fn add(&mut self, protocol: Protocol, port: u16) -> Result<(), PortError> {
        let mut got = reserve(protocol, port)?;
        self.sockets.append(&mut got);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

fn sock_type(p: Protocol) -> SockType {
    match p {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    }
}

/// Binds `protocol` on 0.0.0.0:`port`, and on [::]:`port` (IPv6 only) when
/// the host has IPv6: a host service on either family would be shadowed
/// for IPv4 (DNAT) or could take the port meanwhile (IPv6).
fn reserve(protocol: Protocol, port: u16) -> Result<Vec<OwnedFd>, PortError> {
    let sys = |step| {
        move |source| PortError::Sys {
            protocol,
            port,
            step,
            source,
        }
    };
    let bind_err = |source: nix::Error| match source {
        nix::Error::EADDRINUSE => PortError::InUse { protocol, port },
        nix::Error::EACCES => PortError::Privileged {
            protocol,
            port,
            start: std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "1024".into()),
        },
        source => PortError::Sys {
            protocol,
            port,
            step: "bind",
            source,
        },
    };
    let mut sockets = Vec::new();
    let v4 = socket(
        AddressFamily::Inet,
        sock_type(protocol),
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("socket (IPv4)"))?;
    shrink(&v4, protocol);
    bind(v4.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port)).map_err(bind_err)?;
    sockets.push(v4);
    match socket(
        AddressFamily::Inet6,
        sock_type(protocol),
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        // No IPv6 on this host (ipv6.disable=1): nothing to reserve there.
        Err(nix::Error::EAFNOSUPPORT) => {}
        Err(source) => return Err(sys("socket (IPv6)")(source)),
        Ok(v6) => {
            // V6ONLY: the IPv4 side is the socket above; without it this
            // bind would conflict with that one.
            setsockopt(&v6, sockopt::Ipv6V6Only, &true).map_err(sys("set IPV6_V6ONLY"))?;
            shrink(&v6, protocol);
            let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
            bind(v6.as_raw_fd(), &SockaddrIn6::from(any)).map_err(bind_err)?;
            sockets.push(v6);
        }
    }
    Ok(sockets)
}

/// A reserved UDP socket never reads: datagrams that reach it (IPv6, which
/// is not DNATed) queue in its receive buffer, so keep that at the minimum.
/// Best effort: a larger buffer costs memory, not safety.
fn shrink(fd: &OwnedFd, protocol: Protocol) {
    if protocol == Protocol::Udp {
        let _ = setsockopt(fd, sockopt::RcvBuf, &0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn a_port_in_use_is_refused_and_a_reserved_one_is_held() {
        // A host service on loopback only still makes the port "in use".
        let service = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = service.local_addr().unwrap().port();
        let err = Reservation::take(&[(Protocol::Tcp, port)]).unwrap_err();
        assert!(matches!(err, PortError::InUse { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("host port tcp:{port} is in use on this host")
        );
        drop(service);

        // Reserved: no host service can take it, on either family.
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let uport = udp.local_addr().unwrap().port();
        drop(udp);
        let held = Reservation::take(&[(Protocol::Udp, uport)]).unwrap();
        assert!(!held.is_empty());
        assert!(UdpSocket::bind(("127.0.0.1", uport)).is_err());
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            assert!(UdpSocket::bind(("::1", uport)).is_err());
        }
        drop(held);
        assert!(UdpSocket::bind(("127.0.0.1", uport)).is_ok(), "released");
    }

    #[test]
    fn all_or_none() {
        let service = UdpSocket::bind("0.0.0.0:0").unwrap();
        let busy = service.local_addr().unwrap().port();
        let free = {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.local_addr().unwrap().port()
        };
        assert!(Reservation::take(&[(Protocol::Udp, free), (Protocol::Udp, busy)]).is_err());
        // The first port was released with the failed reservation.
        assert!(UdpSocket::bind(("0.0.0.0", free)).is_ok());
    }
}
