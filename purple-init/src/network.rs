//! The filtered network of one sandbox (`network.mode = "filtered"`): what
//! the policy may open within the admin's bounds (pure, decided before
//! anything exists), and purple-netd's attach and detach around the
//! sandbox's life. purple-netd owns the veth pair and the nftables rules;
//! the sandbox's own end is configured by the sandbox's first process,
//! which holds CAP_NET_ADMIN in the user namespace owning the network
//! namespace (the workload holds none there, so it cannot change it).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use purple_common::netd::{self, Attachment, NetCounters, NetdReply, NetdRequest};
use purple_common::policy::{Cidr, InboundRule, NetworkMode, Policy, PortRule, Protocol};

use crate::admin::NetworkConfig;
use crate::limits::Caller;

/// How long one exchange with purple-netd may take (attach runs `ip` and
/// `nft`).
const NETD_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TCP ports Landlock gets one rule each for; past it Landlock does
/// not handle TCP (the nftables rules still apply) and the report says so.
pub const MAX_LANDLOCK_PORTS: usize = 4096;

/// What purple-netd will be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub allow_out: Vec<PortRule>,
    pub allow_in: Vec<InboundRule>,
    pub pool: Cidr,
    pub netd_socket: PathBuf,
}

impl NetworkPlan {
    /// TCP ports Landlock mirrors as a second layer: the command may bind
    /// the inbound ports, and connect to the outbound ones and to its own
    /// inbound ones (over loopback). `None` when there are too many to list
    /// one by one.
    pub fn landlock_tcp(&self) -> Option<(Vec<u16>, Vec<u16>)> {
        let mut bind: Vec<u16> = self
            .allow_in
            .iter()
            .filter(|r| r.protocol == Protocol::Tcp)
            .map(|r| r.port)
            .collect();
        let mut connect: Vec<u16> = bind.clone();
        let mut count = bind.len() * 2;
        for rule in self
            .allow_out
            .iter()
            .filter(|r| r.protocol == Protocol::Tcp)
        {
            count += usize::from(rule.last_port - rule.first_port) + 1;
            if count > MAX_LANDLOCK_PORTS {
                return None;
            }
            connect.extend(rule.first_port..=rule.last_port);
        }
        bind.sort_unstable();
        bind.dedup();
        connect.sort_unstable();
        connect.dedup();
        Some((bind, connect))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network.mode = \"filtered\" is turned off for unprivileged callers by the admin config {config} ([network] filtered = false)")]
    Disabled { config: String },
    #[error("network.allow_out {rule} is outside what the admin config {config} allows ([network] allow_out = [{allowed}])")]
    OutsideAdmin {
        rule: String,
        allowed: String,
        config: String,
    },
    #[error("network.allow_in {rule} publishes host port {host_port}, below the admin config {config}'s minimum {min} ([network] min_host_port)")]
    HostPortTooLow {
        rule: String,
        host_port: u16,
        min: u16,
        config: String,
    },
    #[error("network.allow_in names host port {protocol}:{host_port} twice")]
    HostPortTwice { protocol: Protocol, host_port: u16 },
    #[error("network.allow_out {rule}: {why}")]
    UnreachableDestination { rule: String, why: &'static str },
    #[error("network.allow_in is turned off for unprivileged callers by the admin config {config} ([network] inbound = false)")]
    InboundDisabled { config: String },
    #[error("capability {cap} cannot be kept with a filtered network: it would let the command spoof or rewrite its own traffic past purple-netd's rules")]
    NetworkCapability {
        cap: purple_common::capability::Capability,
    },
    #[error("purple-netd at {socket}: {detail} (is purple-netd running? see docs/network.md)")]
    Netd { socket: PathBuf, detail: String },
    #[error("purple-netd at {socket} refused: {reason}")]
    Refused { socket: PathBuf, reason: String },
    #[error("purple-netd at {socket} gave an answer of the wrong kind")]
    Unexpected { socket: PathBuf },
}

impl NetworkError {
    /// Refused by the admin's bounds, not by the request's own shape.
    pub fn is_admin_limit(&self) -> bool {
        matches!(
            self,
            NetworkError::Disabled { .. }
                | NetworkError::OutsideAdmin { .. }
                | NetworkError::HostPortTooLow { .. }
                | NetworkError::InboundDisabled { .. }
        )
    }
}

/// The network plan of a policy: `None` for mode "none". Unprivileged
/// callers stay within the admin's bounds; `netd_override` is
/// `PURPLE_NETD_SOCKET`, honoured for root callers only.
pub fn resolve(
    policy: &Policy,
    admin: &NetworkConfig,
    caller: Caller,
    netd_override: Option<&Path>,
    config_path: &str,
) -> Result<Option<NetworkPlan>, NetworkError> {
    let net = &policy.network;
    if net.mode == NetworkMode::None {
        return Ok(None);
    }
    let bounded = caller == Caller::Unprivileged;
    if bounded && !admin.filtered {
        return Err(NetworkError::Disabled {
            config: config_path.to_owned(),
        });
    }
    if bounded && !admin.inbound && !net.allow_in.is_empty() {
        return Err(NetworkError::InboundDisabled {
            config: config_path.to_owned(),
        });
    }
    // Raw sockets could forge the sandbox's source address toward the host
    // (whose loopback answers the host end, route_localnet), and
    // CAP_NET_ADMIN in the sandbox's namespace could change its addresses
    // and routes: for everyone, root callers too.
    use purple_common::capability::Capability;
    if let Some(cap) = policy
        .capabilities
        .kept()
        .into_iter()
        .find(|c| matches!(c, Capability::NetRaw | Capability::NetAdmin))
    {
        return Err(NetworkError::NetworkCapability { cap });
    }
    if bounded {
        for rule in &net.allow_out {
            if !admin.allow_out.iter().any(|bound| within(rule, bound)) {
                return Err(NetworkError::OutsideAdmin {
                    rule: rule.to_string(),
                    allowed: admin
                        .allow_out
                        .iter()
                        .map(|r| format!("{:?}", r.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    config: config_path.to_owned(),
                });
            }
        }
    }
    // Destinations no rule can open, refused here rather than by purple-netd
    // after the sandbox exists.
    let link_local = Cidr {
        address: std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 0)),
        prefix: 16,
    };
    for rule in &net.allow_out {
        let why = match &rule.destination {
            Some(d) if d.address.is_ipv6() => {
                Some("IPv6 destinations cannot be reached: sandboxes have IPv4 only")
            }
            Some(d) if cidr_contains(&link_local, d) => Some(
                "link-local 169.254.0.0/16 (cloud metadata services) is never reachable from a sandbox",
            ),
            _ => None,
        };
        if let Some(why) = why {
            return Err(NetworkError::UnreachableDestination {
                rule: rule.to_string(),
                why,
            });
        }
    }
    let mut host_ports: Vec<(Protocol, u16)> = Vec::new();
    for rule in &net.allow_in {
        let Some(host_port) = rule.host_port else {
            continue;
        };
        if bounded && host_port < admin.min_host_port {
            return Err(NetworkError::HostPortTooLow {
                rule: rule.to_string(),
                host_port,
                min: admin.min_host_port,
                config: config_path.to_owned(),
            });
        }
        if host_ports.contains(&(rule.protocol, host_port)) {
            return Err(NetworkError::HostPortTwice {
                protocol: rule.protocol,
                host_port,
            });
        }
        host_ports.push((rule.protocol, host_port));
    }
    let netd_socket = match netd_override {
        Some(path) if caller == Caller::Root => path.to_owned(),
        _ => admin.netd_socket.clone(),
    };
    Ok(Some(NetworkPlan {
        allow_out: net.allow_out.clone(),
        allow_in: net.allow_in.clone(),
        pool: admin.pool,
        netd_socket,
    }))
}

/// `rule` opens nothing `bound` does not: same protocol, ports inside, and
/// a destination inside the bound's (any destination when it names none).
fn within(rule: &PortRule, bound: &PortRule) -> bool {
    rule.protocol == bound.protocol
        && rule.first_port >= bound.first_port
        && rule.last_port <= bound.last_port
        && match (&bound.destination, &rule.destination) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(outer), Some(inner)) => cidr_contains(outer, inner),
        }
}

fn cidr_contains(outer: &Cidr, inner: &Cidr) -> bool {
    use std::net::IpAddr;
    if inner.prefix < outer.prefix {
        return false;
    }
    match (outer.address, inner.address) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(outer.prefix))
                .unwrap_or(0);
            u32::from(o) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(outer.prefix))
                .unwrap_or(0);
            u128::from(o) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// A sandbox purple-netd attached: detached on `detach`, or when dropped
/// on an error path (purple-netd's reconcile is the backstop if purple-init
/// itself dies).
#[derive(Debug)]
pub struct Attached {
    socket: PathBuf,
    sandbox_id: String,
    pub attachment: Attachment,
    /// The sandbox's network namespace, held until detach: netd counts a
    /// sandbox live while its host interface exists, and the interface dies
    /// with the namespace. Without this hold the namespace goes when the
    /// sandbox's last process exits, and a reconcile pass between that exit
    /// and the detach would delete the rules and their counters, leaving the
    /// report without them.
    netns: Option<OwnedFd>,
}

/// Asks purple-netd for the sandbox's veth and rules; `netns` is the
/// sandbox's network namespace.
pub fn attach(
    plan: &NetworkPlan,
    sandbox_id: &str,
    netns: OwnedFd,
) -> Result<Attached, NetworkError> {
    let request = NetdRequest::Attach(netd::AttachRequest {
        version: netd::NETD_PROTOCOL_VERSION,
        sandbox_id: sandbox_id.to_owned(),
        pool: plan.pool,
        allow_out: plan.allow_out.clone(),
        allow_in: plan.allow_in.clone(),
    });
    let socket = plan.netd_socket.clone();
    match call(&socket, &request, Some(netns.as_fd()))? {
        NetdReply::Attached(attachment) => Ok(Attached {
            socket,
            sandbox_id: sandbox_id.to_owned(),
            attachment,
            netns: Some(netns),
        }),
        NetdReply::Refused { reason } => Err(NetworkError::Refused { socket, reason }),
        NetdReply::Detached(_) => Err(NetworkError::Unexpected { socket }),
    }
}

impl Attached {
    /// Removes the veth and the rules; returns the sandbox's counters.
    pub fn detach(&mut self) -> Result<Option<NetCounters>, NetworkError> {
        // Once netd has been asked (whatever it answers) the hold has done
        // its work; a failed detach leaves the rest to netd's reconcile.
        let _netns = self.netns.take();
        let request = NetdRequest::detach(self.sandbox_id.clone());
        match call(&self.socket, &request, None)? {
            NetdReply::Detached(counters) => Ok(counters),
            NetdReply::Refused { reason } => Err(NetworkError::Refused {
                socket: self.socket.clone(),
                reason,
            }),
            NetdReply::Attached(_) => Err(NetworkError::Unexpected {
                socket: self.socket.clone(),
            }),
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.netns.is_some() {
            let _ = self.detach();
        }
    }
}

/// What the report and the audit trail say of an attached network
/// (counters come at detach).
pub fn record(attached: &Attached, plan: &NetworkPlan) -> purple_common::report::NetworkRecord {
    let a = &attached.attachment;
    purple_common::report::NetworkRecord {
        address: format!("{}/{}", a.address, a.prefix_len),
        gateway: a.gateway.to_string(),
        host_interface: a.host_interface.clone(),
        allow_out: plan.allow_out.iter().map(ToString::to_string).collect(),
        allow_in: plan.allow_in.iter().map(ToString::to_string).collect(),
        landlock_tcp: plan.landlock_tcp().is_some(),
        counters: None,
        detach_error: None,
    }
}

fn call(
    socket: &Path,
    request: &NetdRequest,
    netns: Option<BorrowedFd<'_>>,
) -> Result<NetdReply, NetworkError> {
    netd::call(socket, request, netns, NETD_TIMEOUT).map_err(|e| NetworkError::Netd {
        socket: socket.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        purple_common::policy::parse::parse_policy(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn resolve_as(
        text: &str,
        admin: &NetworkConfig,
        caller: Caller,
    ) -> Result<Option<NetworkPlan>, NetworkError> {
        resolve(
            &policy(text),
            admin,
            caller,
            Some(Path::new("/tmp/netd.sock")),
            "/etc/purple/purple.toml",
        )
    }

    const FILTERED: &str = "[network]\nmode = \"filtered\"\n";

    #[test]
    fn mode_none_needs_no_netd() {
        let r = resolve_as("", &NetworkConfig::default(), Caller::Unprivileged).unwrap();
        assert_eq!(r, None);
    }

    #[test]
    fn the_admin_bounds_unprivileged_callers_only() {
        let admin = NetworkConfig {
            allow_out: vec![
                "tcp:443".parse().unwrap(),
                "udp:53@10.0.0.0/8".parse().unwrap(),
            ],
            ..NetworkConfig::default()
        };
        let ok = format!("{FILTERED}allow_out = [\"tcp:443\", \"udp:53@10.1.2.3/32\"]\n");
        let plan = resolve_as(&ok, &admin, Caller::Unprivileged)
            .unwrap()
            .unwrap();
        assert_eq!(plan.allow_out.len(), 2);
        // The admin's socket for users; the override for root only.
        assert_eq!(plan.netd_socket, admin.netd_socket);
        let root = resolve_as(&ok, &admin, Caller::Root).unwrap().unwrap();
        assert_eq!(root.netd_socket, Path::new("/tmp/netd.sock"));
        for outside in [
            "tcp:80",
            "tcp:443-444",
            "udp:53",
            "udp:53@192.168.0.0/16",
            "udp:53@0.0.0.0/0",
        ] {
            let text = format!("{FILTERED}allow_out = [\"{outside}\"]\n");
            let err = resolve_as(&text, &admin, Caller::Unprivileged).unwrap_err();
            assert!(
                matches!(err, NetworkError::OutsideAdmin { .. }),
                "{outside}: {err}"
            );
            assert!(err.to_string().contains("tcp:443"), "{err}");
            assert!(resolve_as(&text, &admin, Caller::Root).is_ok(), "{outside}");
        }
    }

    #[test]
    fn host_ports_have_a_floor_and_are_used_once() {
        let admin = NetworkConfig::default();
        let low = format!("{FILTERED}allow_in = [\"tcp:80->80\"]\n");
        let err = resolve_as(&low, &admin, Caller::Unprivileged).unwrap_err();
        assert!(err.to_string().contains("below"), "{err}");
        assert!(resolve_as(&low, &admin, Caller::Root).is_ok());
        let twice = format!("{FILTERED}allow_in = [\"tcp:80->18080\", \"tcp:81->18080\"]\n");
        assert!(matches!(
            resolve_as(&twice, &admin, Caller::Root).unwrap_err(),
            NetworkError::HostPortTwice {
                host_port: 18080,
                ..
            }
        ));
        // One port per protocol: TCP and UDP may share a number.
        let both = format!("{FILTERED}allow_in = [\"tcp:80->18080\", \"udp:80->18080\"]\n");
        assert!(resolve_as(&both, &admin, Caller::Root).is_ok());
    }

    #[test]
    fn no_raw_sockets_or_network_admin_with_a_filtered_network() {
        let admin = NetworkConfig::default();
        for cap in ["CAP_NET_RAW", "CAP_NET_ADMIN"] {
            let text = format!("{FILTERED}[capabilities]\nadd = [\"{cap}\"]\n");
            let err = resolve_as(&text, &admin, Caller::Root).unwrap_err();
            assert!(
                matches!(err, NetworkError::NetworkCapability { .. }),
                "{cap}: {err}"
            );
        }
        let fine = format!("{FILTERED}[capabilities]\nadd = [\"CAP_NET_BIND_SERVICE\"]\n");
        assert!(resolve_as(&fine, &admin, Caller::Unprivileged).is_ok());
    }

    #[test]
    fn destinations_no_rule_can_open_are_refused_early() {
        let admin = NetworkConfig::default();
        for rule in ["tcp:80@169.254.169.254/32", "udp:53@2001:db8::/32"] {
            let text = format!("{FILTERED}allow_out = [\"{rule}\"]\n");
            let err = resolve_as(&text, &admin, Caller::Root).unwrap_err();
            assert!(
                matches!(err, NetworkError::UnreachableDestination { .. }),
                "{rule}: {err}"
            );
        }
        let wide = format!("{FILTERED}allow_out = [\"tcp:443@0.0.0.0/0\"]\n");
        assert!(resolve_as(&wide, &admin, Caller::Root).is_ok());
    }

    #[test]
    fn inbound_can_be_turned_off_for_users() {
        let admin = NetworkConfig {
            inbound: false,
            ..NetworkConfig::default()
        };
        let text = format!("{FILTERED}allow_in = [\"tcp:8080\"]\n");
        let err = resolve_as(&text, &admin, Caller::Unprivileged).unwrap_err();
        assert!(matches!(err, NetworkError::InboundDisabled { .. }), "{err}");
        assert!(resolve_as(&text, &admin, Caller::Root).is_ok());
        assert!(resolve_as(FILTERED, &admin, Caller::Unprivileged).is_ok());
    }

    #[test]
    fn turned_off_by_the_admin() {
        let admin = NetworkConfig {
            filtered: false,
            ..NetworkConfig::default()
        };
        let err = resolve_as(FILTERED, &admin, Caller::Unprivileged).unwrap_err();
        assert!(matches!(err, NetworkError::Disabled { .. }), "{err}");
        assert!(resolve_as(FILTERED, &admin, Caller::Root).is_ok());
    }

    #[test]
    fn landlock_mirrors_tcp_ports_within_a_bound() {
        let text = format!(
            "{FILTERED}allow_out = [\"tcp:443\", \"udp:53\", \"tcp:8000-8002\"]\nallow_in = [\"tcp:8080\", \"udp:9000\"]\n"
        );
        let plan = resolve_as(&text, &NetworkConfig::default(), Caller::Root)
            .unwrap()
            .unwrap();
        let (bind, connect) = plan.landlock_tcp().unwrap();
        assert_eq!(bind, [8080]);
        assert_eq!(connect, [443, 8000, 8001, 8002, 8080]);
        let wide = format!("{FILTERED}allow_out = [\"tcp:1-65535\"]\n");
        let plan = resolve_as(&wide, &NetworkConfig::default(), Caller::Root)
            .unwrap()
            .unwrap();
        assert_eq!(plan.landlock_tcp(), None);
    }
}
