//! Validation of an attach request into a plan, and the address allocation.
//!
//! Everything here is pure: the request from purple-init is re-checked
//! (version, id, pool, every rule), turned into values that can only render
//! as valid nft syntax, and a free /30 is chosen (next-fit) from the
//! addresses the host and netd's table still use. The daemon acts only on a
//! plan that passed.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use purple_common::netd::{AttachRequest, NETD_PROTOCOL_VERSION};
use purple_common::policy::{Cidr, Protocol, MAX_PORT_RULES};

use crate::ident::{IdentError, SandboxId};

/// Each sandbox gets one /30: network, gateway (host end), sandbox, broadcast.
pub const BLOCK_PREFIX: u8 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("netd protocol version {got} does not match purple-netd's version {expected}; install matching purple-init and purple-netd")]
    Version { got: u32, expected: u32 },
    #[error("{0}")]
    Ident(#[from] IdentError),
    #[error("address pool {pool}: {reason}")]
    Pool { pool: String, reason: &'static str },
    #[error("rule {rule}: {reason}")]
    Rule { rule: String, reason: String },
    #[error("at most {MAX_PORT_RULES} rules per direction, got {got} in {direction}")]
    TooManyRules { direction: &'static str, got: usize },
    #[error("address pool {pool} has no free /30 left")]
    PoolExhausted { pool: String },
}

/// An IPv4 pool, with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    network: u32,
    prefix: u8,
}

impl Pool {
    pub fn validate(cidr: &Cidr) -> Result<Pool, PlanError> {
        let refuse = |reason| PlanError::Pool {
            pool: cidr.to_string(),
            reason,
        };
        let IpAddr::V4(address) = cidr.address else {
            return Err(refuse("must be IPv4 (sandboxes get no IPv6)"));
        };
        if cidr.prefix > BLOCK_PREFIX {
            return Err(refuse("must be /30 or larger"));
        }
        if cidr.prefix < 8 {
            return Err(refuse("must be /8 or smaller"));
        }
        let network = u32::from(address) & mask(cidr.prefix);
        if network != u32::from(address) {
            return Err(refuse("has host bits set"));
        }
        let first = Ipv4Addr::from(network);
        if first.is_loopback()
            || first.is_multicast()
            || first.is_unspecified()
            || first.is_broadcast()
            || first.is_link_local()
            || first.octets()[0] >= 240
        {
            return Err(refuse(
                "must be unicast (not loopback, link-local, multicast or reserved)",
            ));
        }
        Ok(Pool {
            network,
            prefix: cidr.prefix,
        })
    }

    fn blocks(&self) -> u32 {
        1u32 << (BLOCK_PREFIX - self.prefix)
    }

    fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix) == self.network
    }

    /// The gateway (host end) address of a block, when it belongs to this pool.
    pub fn contains_gateway(&self, a: Ipv4Addr) -> bool {
        self.contains(a) && u32::from(a) & 3 == 1
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The addresses of one sandbox's /30.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
}

impl Block {
    /// The block whose gateway is `gateway` (as read back from a host interface).
    pub fn from_gateway(gateway: Ipv4Addr) -> Block {
        Block {
            gateway,
            address: Ipv4Addr::from(u32::from(gateway).wrapping_add(1)),
        }
    }
}

/// The next /30 of `pool` after the block of `after` (the gateway handed
/// out last; the first block when None or outside the pool), wrapping
/// round, that holds none of `in_use`: every IPv4 address configured on the
/// host (so a restart of netd never hands out the block of a live sandbox,
/// nor one the host uses for anything else) and every address netd's table
/// still names. Next-fit rather than first-free, so a block just freed is
/// the last to be handed out again: the conntrack entries of its previous
/// sandbox have the longest time to expire (they are not accepted for the
/// next one anyway: flow marks).
pub fn allocate(
    pool: &Pool,
    in_use: &[Ipv4Addr],
    after: Option<Ipv4Addr>,
) -> Result<Block, PlanError> {
    let used: BTreeSet<u32> = in_use
        .iter()
        .filter(|a| pool.contains(**a))
        .map(|a| u32::from(*a) & !3)
        .collect();
    let blocks = pool.blocks();
    let start = after
        .filter(|a| pool.contains(*a))
        .map(|a| ((u32::from(a) - pool.network) / 4 + 1) % blocks)
        .unwrap_or(0);
    (0..blocks)
        .map(|i| pool.network + 4 * ((start + i) % blocks))
        .find(|base| !used.contains(base))
        .map(|base| Block {
            gateway: Ipv4Addr::from(base + 1),
            address: Ipv4Addr::from(base + 2),
        })
        .ok_or_else(|| PlanError::PoolExhausted {
            pool: format!("{}/{}", Ipv4Addr::from(pool.network), pool.prefix),
        })
}

/// An outbound allowance, checked: IPv4 destination with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutRule {
    pub protocol: Protocol,
    pub first_port: u16,
    pub last_port: u16,
    pub destination: Option<(Ipv4Addr, u8)>,
}

/// An inbound allowance, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InRule {
    pub protocol: Protocol,
    pub port: u16,
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxRules {
    pub allow_out: Vec<OutRule>,
    pub allow_in: Vec<InRule>,
}

impl SandboxRules {
    /// The host ports this sandbox publishes.
    pub fn published(&self) -> Vec<(Protocol, u16)> {
        self.allow_in
            .iter()
            .filter_map(|r| r.host_port.map(|h| (r.protocol, h)))
            .collect()
    }

    /// A stable digest of the rules (FNV-1a 64 over their canonical text),
    /// kept with the sandbox so a second attach with other rules is noticed.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for r in &self.allow_out {
            text.push_str(&format!(
                "out {} {}-{}",
                r.protocol, r.first_port, r.last_port
            ));
            if let Some((net, prefix)) = r.destination {
                text.push_str(&format!("@{net}/{prefix}"));
            }
            text.push('\n');
        }
        for r in &self.allow_in {
            text.push_str(&format!("in {} {} {:?}\n", r.protocol, r.port, r.host_port));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// A checked attach request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachPlan {
    pub id: SandboxId,
    pub pool: Pool,
    pub rules: SandboxRules,
}

pub fn check_version(got: u32) -> Result<(), PlanError> {
    if got == NETD_PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(PlanError::Version {
            got,
            expected: NETD_PROTOCOL_VERSION,
        })
    }
}

pub fn validate_attach(request: &AttachRequest) -> Result<AttachPlan, PlanError> {
    check_version(request.version)?;
    let id = SandboxId::parse(&request.sandbox_id)?;
    let pool = Pool::validate(&request.pool)?;
    for (direction, got) in [
        ("allow_out", request.allow_out.len()),
        ("allow_in", request.allow_in.len()),
    ] {
        if got > MAX_PORT_RULES {
            return Err(PlanError::TooManyRules { direction, got });
        }
    }
    let mut rules = SandboxRules::default();
    for rule in &request.allow_out {
        let refuse = |reason: &str| PlanError::Rule {
            rule: rule.to_string(),
            reason: reason.to_owned(),
        };
        // The policy parser already refuses these; netd does not trust it.
        if rule.first_port == 0 || rule.first_port > rule.last_port {
            return Err(refuse("the port range must run upwards from 1"));
        }
        let destination = match rule.destination {
            None => None,
            Some(Cidr {
                address: IpAddr::V4(a),
                prefix,
            }) if prefix <= 32 => {
                let net = Ipv4Addr::from(u32::from(a) & mask(prefix));
                // Wholly inside 169.254.0.0/16: the out chain drops it
                // before any allowance (cloud metadata), so say so now
                // rather than install a rule that can never match.
                if prefix >= 16 && net.is_link_local() {
                    return Err(refuse(
                        "link-local destinations (169.254.0.0/16, cloud metadata) are never reachable from a sandbox",
                    ));
                }
                Some((net, prefix))
            }
            // Fail closed and say so: a sandbox has no IPv6 route, so an
            // IPv6 allowance could never be honoured.
            Some(_) => {
                return Err(refuse(
                    "IPv6 destinations are not supported: sandboxes get IPv4 only",
                ))
            }
        };
        rules.allow_out.push(OutRule {
            protocol: rule.protocol,
            first_port: rule.first_port,
            last_port: rule.last_port,
            destination,
        });
    }
    let mut published = BTreeSet::new();
    for rule in &request.allow_in {
        if rule.port == 0 || rule.host_port == Some(0) {
            return Err(PlanError::Rule {
                rule: rule.to_string(),
                reason: "ports must be 1 to 65535".into(),
            });
        }
        if let Some(h) = rule.host_port {
            if !published.insert((rule.protocol, h)) {
                return Err(PlanError::Rule {
                    rule: rule.to_string(),
                    reason: format!("host port {}:{h} is published twice", rule.protocol),
                });
            }
        }
        rules.allow_in.push(InRule {
            protocol: rule.protocol,
            port: rule.port,
            host_port: rule.host_port,
        });
    }
    Ok(AttachPlan { id, pool, rules })
}

/// What netd remembers about an attached sandbox, in the comment of the
/// first rule of its `_out` chain (nft 1.0.6 lists rule comments in JSON,
/// chain comments not): the full id (a 12-digit key collision is refused, not
/// merged), the network namespace (dev:inode of the nsfs file) and the rule
/// fingerprint (a repeated attach must match the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxMeta {
    pub id: String,
    pub netns: (u64, u64),
    pub rules: String,
}

impl SandboxMeta {
    pub fn render(&self) -> String {
        format!(
            "purple id={} ns={}:{} rules={}",
            self.id, self.netns.0, self.netns.1, self.rules
        )
    }

    pub fn parse(s: &str) -> Option<SandboxMeta> {
        let mut fields = s.strip_prefix("purple ")?.split(' ');
        let id = fields.next()?.strip_prefix("id=")?.to_owned();
        let (dev, ino) = fields.next()?.strip_prefix("ns=")?.split_once(':')?;
        let rules = fields.next()?.strip_prefix("rules=")?.to_owned();
        if fields.next().is_some() {
            return None;
        }
        Some(SandboxMeta {
            id,
            netns: (dev.parse().ok()?, ino.parse().ok()?),
            rules,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn request(out: &[&str], inbound: &[&str]) -> AttachRequest {
        AttachRequest {
            version: NETD_PROTOCOL_VERSION,
            sandbox_id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            pool: "10.200.0.0/16".parse().unwrap(),
            allow_out: out.iter().map(|s| s.parse().unwrap()).collect(),
            allow_in: inbound.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_good_request_becomes_a_plan() {
        let plan = validate_attach(&request(
            &["tcp:443", "udp:53", "tcp:8000-8100@192.0.2.77/24"],
            &["tcp:8080->18080", "udp:9000"],
        ))
        .unwrap();
        assert_eq!(plan.rules.allow_out.len(), 3);
        assert_eq!(
            plan.rules.allow_out[2].destination,
            Some((Ipv4Addr::new(192, 0, 2, 0), 24)),
            "host bits are cleared so nft accepts the prefix"
        );
        assert_eq!(plan.rules.published(), vec![(Protocol::Tcp, 18080)]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut r = request(&[], &[]);
        r.version += 1;
        assert!(matches!(
            validate_attach(&r),
            Err(PlanError::Version { .. })
        ));
        let mut r = request(&[], &[]);
        r.sandbox_id = "x; flush ruleset".into();
        assert!(matches!(validate_attach(&r), Err(PlanError::Ident(_))));
        for pool in [
            "2001:db8::/64",
            "10.200.0.0/31",
            "10.200.0.1/16",
            "127.0.0.0/8",
            "224.0.0.0/8",
            "169.254.0.0/16",
            "0.0.0.0/0",
        ] {
            let mut r = request(&[], &[]);
            r.pool = pool.parse().unwrap();
            assert!(
                matches!(validate_attach(&r), Err(PlanError::Pool { .. })),
                "{pool}"
            );
        }
        assert!(matches!(
            validate_attach(&request(&["tcp:443@2001:db8::/32"], &[])),
            Err(PlanError::Rule { .. })
        ));
        for metadata in ["tcp:80@169.254.169.254/32", "tcp:80@169.254.0.0/16"] {
            assert!(
                matches!(
                    validate_attach(&request(&[metadata], &[])),
                    Err(PlanError::Rule { .. })
                ),
                "{metadata}"
            );
        }
        // Wider than link-local: allowed, the out chain drops 169.254/16.
        assert!(validate_attach(&request(&["tcp:80@169.0.0.0/8"], &[])).is_ok());
        assert!(matches!(
            validate_attach(&request(&[], &["tcp:80->18080", "tcp:81->18080"])),
            Err(PlanError::Rule { .. })
        ));
        let many = vec!["tcp:1"; MAX_PORT_RULES + 1];
        assert!(matches!(
            validate_attach(&request(&many, &[])),
            Err(PlanError::TooManyRules { .. })
        ));
    }

    #[test]
    fn allocation_skips_every_block_the_host_uses() {
        let pool = Pool::validate(&"10.200.0.0/29".parse().unwrap()).unwrap();
        let first = allocate(&pool, &[], None).unwrap();
        assert_eq!(first.gateway, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(first.address, Ipv4Addr::new(10, 200, 0, 2));
        // A live sandbox's gateway, and a foreign address elsewhere.
        let second = allocate(
            &pool,
            &[Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(192, 168, 1, 1)],
            None,
        )
        .unwrap();
        assert_eq!(second.gateway, Ipv4Addr::new(10, 200, 0, 5));
        assert_eq!(Block::from_gateway(second.gateway), second);
        // Any address inside a block takes the whole block.
        assert!(matches!(
            allocate(
                &pool,
                &[Ipv4Addr::new(10, 200, 0, 3), Ipv4Addr::new(10, 200, 0, 6)],
                None
            ),
            Err(PlanError::PoolExhausted { .. })
        ));
    }

    #[test]
    fn allocation_is_next_fit_and_wraps() {
        let pool = Pool::validate(&"10.200.0.0/28".parse().unwrap()).unwrap();
        let gw = |i: u8| Ipv4Addr::new(10, 200, 0, 4 * i + 1);
        // After block 1, block 2 is next even though block 0 is free.
        assert_eq!(allocate(&pool, &[], Some(gw(1))).unwrap().gateway, gw(2));
        // After the last block: wrap round to the first free one.
        assert_eq!(allocate(&pool, &[], Some(gw(3))).unwrap().gateway, gw(0));
        assert_eq!(
            allocate(&pool, &[gw(0), gw(3)], Some(gw(2)))
                .unwrap()
                .gateway,
            gw(1)
        );
        // A block freed just now is the last choice, not the first.
        assert_eq!(
            allocate(&pool, &[gw(1), gw(2)], Some(gw(0)))
                .unwrap()
                .gateway,
            gw(3)
        );
        // A last block outside the pool (the admin changed it): from the start.
        assert_eq!(
            allocate(&pool, &[], Some(Ipv4Addr::new(10, 9, 0, 1)))
                .unwrap()
                .gateway,
            gw(0)
        );
    }

    #[test]
    fn meta_round_trips_and_fingerprints_differ() {
        let meta = SandboxMeta {
            id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            netns: (4, 4026532000),
            rules: "00ff00ff00ff00ff".into(),
        };
        assert_eq!(SandboxMeta::parse(&meta.render()), Some(meta));
        assert_eq!(SandboxMeta::parse("purple id=x"), None);
        let a = validate_attach(&request(&["tcp:443"], &[])).unwrap();
        let b = validate_attach(&request(&["tcp:444"], &[])).unwrap();
        assert_ne!(a.rules.fingerprint(), b.rules.fingerprint());
        assert_eq!(a.rules.fingerprint().len(), 16);
    }
}
