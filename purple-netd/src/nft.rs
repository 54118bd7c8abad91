//! The nftables scripts netd applies, computed as text from validated values.
//!
//! netd owns one table, `inet purple`, and never names any other. Its base
//! chains dispatch by interface name through verdict maps to per-sandbox
//! chains, so attaching or detaching a sandbox only adds or removes map
//! elements, chains and counters: no rule handles to track, and every
//! change is one atomic `nft -f` transaction.
//!
//! ```text
//! forward      iifname pv* ipv6 drop; iifname vmap @out_from; iifname pv* drop;
//!              [router guard: ipv4 oifname != pv* drop]
//! input        iifname pv* ipv6 drop; iifname vmap @host_from; iifname pv* drop
//! postrouting  oifname pv* ipv6 drop; oifname vmap @in_to; oifname pv* drop
//! nat_prerouting / nat_output   local daddr: l4proto . dport vmap @published
//! nat_postrouting  from pv* to non-pv*: masquerade; 127/8 to pv*: masquerade
//! ```
//!
//! Traffic to a sandbox is filtered in `postrouting`, not in `forward` and
//! `output`: it is the one hook every packet to a sandbox passes exactly once
//! (forwarded or from the host) and, unlike `output`, it sees the interface
//! chosen after the DNAT of a published port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use purple_common::policy::Protocol;

use crate::ident::{ChainKind, CounterKind, SandboxKey};
use crate::plan::{SandboxMeta, SandboxRules};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "purple";
/// Comment on the rule that keeps the host from becoming a router.
pub const ROUTER_GUARD: &str = "purple-router-guard";

/// The verdict maps of the base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Map {
    /// ifname -> jump `_out` (forward, from the sandbox).
    OutFrom,
    /// ifname -> jump `_in` (postrouting, to the sandbox).
    InTo,
    /// ifname -> jump `_host` (input, from the sandbox to the host).
    HostFrom,
    /// l4proto . host port -> jump `_dnat`.
    Published,
}

impl Map {
    pub const ALL: [Map; 4] = [Map::OutFrom, Map::InTo, Map::HostFrom, Map::Published];

    pub fn name(self) -> &'static str {
        match self {
            Map::OutFrom => "out_from",
            Map::InTo => "in_to",
            Map::HostFrom => "host_from",
            Map::Published => "published",
        }
    }

    pub fn from_name(name: &str) -> Option<Map> {
        Map::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The sandbox chain an interface map jumps to.
    pub fn chain_kind(self) -> ChainKind {
        match self {
            Map::OutFrom => ChainKind::Out,
            Map::InTo => ChainKind::In,
            Map::HostFrom => ChainKind::Host,
            Map::Published => ChainKind::Dnat,
        }
    }
}

/// The key of a map element netd may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementKey {
    /// The sandbox whose host interface keys the element.
    Interface(SandboxKeyRef),
    /// IP protocol number and host port.
    Port(u8, u16),
}

/// A copyable handle on a [`SandboxKey`]'s 12 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxKeyRef([u8; 12]);

impl SandboxKeyRef {
    pub fn new(key: &SandboxKey) -> SandboxKeyRef {
        let mut b = [0u8; 12];
        b.copy_from_slice(&key.as_str().as_bytes()[..12]);
        SandboxKeyRef(b)
    }

    pub fn key(&self) -> Option<SandboxKey> {
        let name = format!("pv{}", std::str::from_utf8(&self.0).ok()?);
        SandboxKey::from_interface(&name)
    }
}

/// One object of netd's table to delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NftObject {
    Element { map: Map, key: ElementKey },
    Chain(String),
    Counter(String),
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

const BASE_CHAINS: [(&str, &str); 6] = [
    (
        "forward",
        "type filter hook forward priority filter; policy accept;",
    ),
    (
        "input",
        "type filter hook input priority filter; policy accept;",
    ),
    (
        "postrouting",
        "type filter hook postrouting priority filter; policy accept;",
    ),
    (
        "nat_prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
    ),
    (
        "nat_output",
        "type nat hook output priority -100; policy accept;",
    ),
    (
        "nat_postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
    ),
];

/// The names of the base chains (never deleted by reconcile).
pub fn is_base_chain(name: &str) -> bool {
    BASE_CHAINS.iter().any(|(n, _)| *n == name)
}

/// The rules of the base chains, in order, as (chain, rule text). With
/// `router_guard`, forwarded IPv4 traffic where neither side is a sandbox is
/// dropped: netd turned IPv4 forwarding on, and the host must not start
/// routing for its other interfaces. Limited to IPv4 because netd never
/// touches IPv6 forwarding: whatever the host forwards over IPv6 it did
/// before netd came.
pub fn base_rules(router_guard: bool) -> Vec<(&'static str, String)> {
    let mut rules: Vec<(&'static str, String)> = [
        // IPv6 is never routed to or from a sandbox, whatever else matches.
        ("forward", "iifname \"pv*\" meta nfproto ipv6 drop"),
        ("forward", "oifname \"pv*\" meta nfproto ipv6 drop"),
        ("forward", "iifname vmap @out_from"),
        // A pv* interface without its chains (being set up, or stale): drop.
        ("forward", "iifname \"pv*\" drop"),
        ("input", "iifname \"pv*\" meta nfproto ipv6 drop"),
        ("input", "iifname vmap @host_from"),
        ("input", "iifname \"pv*\" drop"),
        ("postrouting", "oifname \"pv*\" meta nfproto ipv6 drop"),
        ("postrouting", "oifname vmap @in_to"),
        ("postrouting", "oifname \"pv*\" drop"),
        // Sandboxes do not reach published ports (that would be sandbox to
        // sandbox, or to itself through the host).
        ("nat_prerouting", "iifname \"pv*\" return"),
        (
            "nat_prerouting",
            "meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @published",
        ),
        (
            "nat_output",
            "meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @published",
        ),
        (
            "nat_postrouting",
            "iifname \"pv*\" oifname != \"pv*\" masquerade",
        ),
        // The host's own connections to 127.0.0.1:<published port> leave on
        // the sandbox's veth (route_localnet) with the gateway as source.
        (
            "nat_postrouting",
            "oifname \"pv*\" ip saddr 127.0.0.0/8 masquerade",
        ),
    ]
    .into_iter()
    .map(|(c, r)| (c, r.to_owned()))
    .collect();
    if router_guard {
        rules.push((
            "forward",
            format!("meta nfproto ipv4 oifname != \"pv*\" drop comment \"{ROUTER_GUARD}\""),
        ));
    }
    rules
}

/// How many rules each base chain holds when it is as netd made it.
pub fn base_rule_counts(router_guard: bool) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> =
        BASE_CHAINS.iter().map(|(name, _)| (*name, 0)).collect();
    for (chain, _) in base_rules(router_guard) {
        *counts.entry(chain).or_default() += 1;
    }
    counts
}

/// The table, its maps and its base chains with their rules. Idempotent: the
/// base chains are flushed and refilled in the same transaction, so it can
/// run with sandboxes attached (their maps and chains are kept) and it
/// repairs a base someone altered. See [`base_rules`] for the router guard.
pub fn base_script(router_guard: bool) -> String {
    let t = format!("{FAMILY} {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    for map in [Map::OutFrom, Map::InTo, Map::HostFrom] {
        let _ = writeln!(s, "add map {t} {} {{ type ifname : verdict; }}", map.name());
    }
    let _ = writeln!(
        s,
        "add map {t} {} {{ type inet_proto . inet_service : verdict; }}",
        Map::Published.name()
    );
    for (name, spec) in BASE_CHAINS {
        let _ = writeln!(s, "add chain {t} {name} {{ {spec} }}");
        let _ = writeln!(s, "flush chain {t} {name}");
    }
    for (chain, rule) in base_rules(router_guard) {
        let _ = writeln!(s, "add rule {t} {chain} {rule}");
    }
    s
}

/// Link-local IPv4, where clouds answer instance metadata (169.254.169.254,
/// often with credentials): never reachable from a sandbox, whatever its
/// rules say.
pub const LINK_LOCAL: &str = "169.254.0.0/16";

fn port_range(first: u16, last: u16) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// The chains, counters and map elements of one sandbox at `address`.
/// `create element` (not `add`) for published ports, so a host port taken
/// meanwhile fails the whole transaction instead of being overwritten.
///
/// Every new connection a sandbox chain accepts (or DNATs) gets the
/// sandbox's flow mark (`ct mark set`), and only flows with that mark pass
/// as established/related; the allowances match new connections only. So a
/// conntrack entry of an earlier sandbox at the same /30 (they outlive it)
/// is never accepted for this one, nor re-marked as its own.
pub fn sandbox_script(
    key: &SandboxKey,
    meta: &SandboxMeta,
    address: Ipv4Addr,
    rules: &SandboxRules,
) -> String {
    let t = format!("{FAMILY} {TABLE}");
    let iface = key.interface();
    let out = key.chain(ChainKind::Out);
    let inc = key.chain(ChainKind::In);
    let host = key.chain(ChainKind::Host);
    let dnat = key.chain(ChainKind::Dnat);
    let out_ok = key.counter(CounterKind::OutAllowed);
    let out_drop = key.counter(CounterKind::OutDropped);
    let in_ok = key.counter(CounterKind::InAllowed);
    let in_drop = key.counter(CounterKind::InDropped);
    let mark = format!("{:#010x}", key.flow_mark());
    let mut s = String::new();
    for c in CounterKind::ALL {
        let _ = writeln!(s, "add counter {t} {}", key.counter(c));
    }
    for chain in [&out, &inc, &host, &dnat] {
        let _ = writeln!(s, "add chain {t} {chain}");
    }
    for chain in [&out, &inc, &host, &dnat] {
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    let mut rule = |chain: &str, text: String| {
        let _ = writeln!(s, "add rule {t} {chain} {text}");
    };
    let established = |counter: &str| {
        format!("ct state established,related ct mark {mark} counter name \"{counter}\" accept")
    };
    let new_flow = |counter: &str| {
        format!("ct state new counter name \"{counter}\" ct mark set {mark} accept")
    };
    // Leaving the sandbox: only from its own address (no spoofing, so the
    // masquerade and the other sandboxes' rules can trust the source), never
    // to another sandbox nor to link-local (cloud metadata), replies of its
    // own flows, then the allowances, then drop.
    // The first rule carries the sandbox's metadata in its comment (nft
    // 1.0.6 lists rule comments in JSON, chain comments not). The comment
    // holds only [a-z0-9=:. -] (id, numbers, hex): no quoting issue.
    rule(
        &out,
        format!(
            "ip saddr != {address} counter name \"{out_drop}\" drop comment \"{}\"",
            meta.render()
        ),
    );
    rule(
        &out,
        format!("oifname \"pv*\" counter name \"{out_drop}\" drop"),
    );
    rule(
        &out,
        format!("ip daddr {LINK_LOCAL} counter name \"{out_drop}\" drop"),
    );
    rule(
        &out,
        format!("ct state invalid counter name \"{out_drop}\" drop"),
    );
    rule(&out, established(&out_ok));
    for r in &rules.allow_out {
        let dest = r
            .destination
            .map(|(net, prefix)| format!("ip daddr {net}/{prefix} "))
            .unwrap_or_default();
        rule(
            &out,
            format!(
                "{dest}{} dport {} {}",
                protocol_name(r.protocol),
                port_range(r.first_port, r.last_port),
                new_flow(&out_ok)
            ),
        );
    }
    rule(&out, format!("counter name \"{out_drop}\" drop"));
    // To the sandbox (from other hosts or from the host): replies of its own
    // flows, then new connections to the listed ports, then drop.
    rule(&inc, established(&in_ok));
    rule(
        &inc,
        format!("ct state invalid counter name \"{in_drop}\" drop"),
    );
    for r in &rules.allow_in {
        rule(
            &inc,
            format!(
                "{} dport {} {}",
                protocol_name(r.protocol),
                r.port,
                new_flow(&in_ok)
            ),
        );
    }
    rule(&inc, format!("counter name \"{in_drop}\" drop"));
    // From the sandbox to the host itself: only from its own address, only
    // replies to connections the host opened to an allowed port (marked as
    // this sandbox's by `_in`); nothing of the host is reachable.
    rule(
        &host,
        format!("ip saddr != {address} counter name \"{out_drop}\" drop"),
    );
    rule(&host, established(&out_ok));
    rule(&host, format!("counter name \"{out_drop}\" drop"));
    for r in &rules.allow_in {
        if let Some(h) = r.host_port {
            rule(
                &dnat,
                format!(
                    "{} dport {h} ct mark set {mark} dnat ip to {address}:{}",
                    protocol_name(r.protocol),
                    r.port
                ),
            );
        }
    }
    for (map, chain) in [
        (Map::OutFrom, &out),
        (Map::InTo, &inc),
        (Map::HostFrom, &host),
    ] {
        let _ = writeln!(
            s,
            "add element {t} {} {{ \"{iface}\" : jump {chain} }}",
            map.name()
        );
    }
    for (p, h) in rules.published() {
        let _ = writeln!(
            s,
            "create element {t} {} {{ {} . {h} : jump {dnat} }}",
            Map::Published.name(),
            protocol_name(p)
        );
    }
    s
}

/// Deletes `objects` in one transaction: map elements first (they hold
/// references to the chains), then chains (flushed, so their rules release
/// the counters), then counters. The order of `objects` does not matter.
pub fn deletion_script(objects: &[NftObject]) -> String {
    let t = format!("{FAMILY} {TABLE}");
    let mut sorted: Vec<&NftObject> = objects.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut s = String::new();
    for o in &sorted {
        if let NftObject::Element { map, key } = o {
            let key = match key {
                ElementKey::Interface(k) => match k.key() {
                    Some(k) => format!("\"{}\"", k.interface()),
                    None => continue,
                },
                ElementKey::Port(6, port) => format!("tcp . {port}"),
                ElementKey::Port(17, port) => format!("udp . {port}"),
                ElementKey::Port(proto, port) => format!("{proto} . {port}"),
            };
            let _ = writeln!(s, "delete element {t} {} {{ {key} }}", map.name());
        }
    }
    for o in &sorted {
        if let NftObject::Chain(name) = o {
            let _ = writeln!(s, "flush chain {t} {name}");
            let _ = writeln!(s, "delete chain {t} {name}");
        }
    }
    for o in &sorted {
        if let NftObject::Counter(name) = o {
            let _ = writeln!(s, "delete counter {t} {name}");
        }
    }
    s
}

/// The protocol number used in the `published` map's keys.
pub fn published_key(p: Protocol, port: u16) -> ElementKey {
    ElementKey::Port(protocol_number(p), port)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ident::SandboxId;
    use crate::plan::validate_attach;
    use purple_common::netd::{AttachRequest, NETD_PROTOCOL_VERSION};

    fn plan(out: &[&str], inbound: &[&str]) -> crate::plan::AttachPlan {
        validate_attach(&AttachRequest {
            version: NETD_PROTOCOL_VERSION,
            sandbox_id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            pool: "10.200.0.0/16".parse().unwrap(),
            allow_out: out.iter().map(|s| s.parse().unwrap()).collect(),
            allow_in: inbound.iter().map(|s| s.parse().unwrap()).collect(),
        })
        .unwrap()
    }

    fn meta() -> SandboxMeta {
        SandboxMeta {
            id: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
            netns: (4, 4026532001),
            rules: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn base_names_only_its_own_table_and_guards_on_request() {
        let with = base_script(true);
        let without = base_script(false);
        for line in with.lines() {
            assert!(line.contains(" inet purple"), "{line}");
            assert!(!line.contains("ruleset"), "{line}");
        }
        assert!(with.contains(
            "add rule inet purple forward meta nfproto ipv4 oifname != \"pv*\" drop comment \"purple-router-guard\"\n"
        ));
        assert!(!without.contains(ROUTER_GUARD));
        // Every base chain is flushed after it is declared, so reapplying
        // the base never duplicates rules.
        for (name, _) in BASE_CHAINS {
            let add = with
                .find(&format!("add chain inet purple {name} "))
                .unwrap();
            let flush = with
                .find(&format!("flush chain inet purple {name}\n"))
                .unwrap();
            let first_rule = with.find(&format!("add rule inet purple {name} ")).unwrap();
            assert!(add < flush && flush < first_rule, "{name}");
        }
        assert!(
            with.contains("add rule inet purple forward iifname \"pv*\" meta nfproto ipv6 drop")
        );
        assert!(with.contains("add rule inet purple postrouting oifname vmap @in_to"));
        // The expected rule counts are those of the script itself.
        for (guard, script) in [(true, &with), (false, &without)] {
            for (chain, n) in base_rule_counts(guard) {
                let prefix = format!("add rule inet purple {chain} ");
                assert_eq!(
                    script.lines().filter(|l| l.starts_with(&prefix)).count(),
                    n,
                    "{chain}"
                );
            }
        }
        assert_eq!(base_rule_counts(true)["forward"], 5);
        assert_eq!(base_rule_counts(false)["forward"], 4);
    }

    #[test]
    fn sandbox_script_allows_exactly_the_listed_traffic() {
        let p = plan(
            &["tcp:443", "udp:53", "tcp:8000-8100@192.0.2.0/24"],
            &["tcp:8080->18080", "udp:9000"],
        );
        let key = p.id.key();
        let s = sandbox_script(&key, &meta(), Ipv4Addr::new(10, 200, 0, 2), &p.rules);
        let out: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule inet purple pv0f8e7d6c5b4a_out "))
            .collect();
        let mark = format!("{:#010x}", key.flow_mark());
        assert_eq!(mark.len(), 10, "0x and eight hex digits: {mark}");
        let ok = |c: &str| format!("counter name \"pv0f8e7d6c5b4a_{c}\"");
        let new = |c: &str| format!("ct state new {} ct mark set {mark} accept", ok(c));
        let est = |c: &str| {
            format!(
                "ct state established,related ct mark {mark} {} accept",
                ok(c)
            )
        };
        assert_eq!(
            out,
            [
                format!("ip saddr != 10.200.0.2 {} drop comment \"purple id=0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a ns=4:4026532001 rules=0123456789abcdef\"", ok("out_drop")),
                format!("oifname \"pv*\" {} drop", ok("out_drop")),
                format!("ip daddr 169.254.0.0/16 {} drop", ok("out_drop")),
                format!("ct state invalid {} drop", ok("out_drop")),
                est("out_ok"),
                format!("tcp dport 443 {}", new("out_ok")),
                format!("udp dport 53 {}", new("out_ok")),
                format!("ip daddr 192.0.2.0/24 tcp dport 8000-8100 {}", new("out_ok")),
                format!("{} drop", ok("out_drop")),
            ]
        );
        let inbound: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule inet purple pv0f8e7d6c5b4a_in "))
            .collect();
        assert_eq!(
            inbound,
            [
                est("in_ok"),
                format!("ct state invalid {} drop", ok("in_drop")),
                format!("tcp dport 8080 {}", new("in_ok")),
                format!("udp dport 9000 {}", new("in_ok")),
                format!("{} drop", ok("in_drop")),
            ]
        );
        let host: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule inet purple pv0f8e7d6c5b4a_host "))
            .collect();
        assert_eq!(
            host,
            [
                format!("ip saddr != 10.200.0.2 {} drop", ok("out_drop")),
                est("out_ok"),
                format!("{} drop", ok("out_drop")),
            ],
            "only replies of the sandbox's own flows, from its own address, reach the host"
        );
        let dnat: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule inet purple pv0f8e7d6c5b4a_dnat "))
            .collect();
        assert_eq!(
            dnat,
            [format!(
                "tcp dport 18080 ct mark set {mark} dnat ip to 10.200.0.2:8080"
            )]
        );
        // Every accept of a sandbox chain either sets the mark on a new flow
        // or requires it on an established one.
        for line in s.lines().filter(|l| l.ends_with(" accept")) {
            assert!(
                line.contains(&format!("ct state new {}", "counter"))
                    && line.contains(&format!("ct mark set {mark}"))
                    || line.contains(&format!("ct state established,related ct mark {mark} ")),
                "{line}"
            );
        }
        assert!(s.contains(
            "create element inet purple published { tcp . 18080 : jump pv0f8e7d6c5b4a_dnat }\n"
        ));
        assert!(s.contains(
            "add element inet purple out_from { \"pv0f8e7d6c5b4a\" : jump pv0f8e7d6c5b4a_out }\n"
        ));
    }

    #[test]
    fn another_sandbox_has_another_mark() {
        let p = plan(&["tcp:443"], &[]);
        let other = SandboxId::parse("0f8e7d6c-5b4b-4392-8170-6f5e4d3c2b1a")
            .unwrap()
            .key();
        let a = sandbox_script(&p.id.key(), &meta(), Ipv4Addr::new(10, 200, 0, 2), &p.rules);
        let b = sandbox_script(&other, &meta(), Ipv4Addr::new(10, 200, 0, 2), &p.rules);
        let mark_a = format!("ct mark {:#010x} ", p.id.key().flow_mark());
        assert!(a.contains(&mark_a));
        assert!(!b.contains(&mark_a), "{b}");
    }

    #[test]
    fn no_rules_means_everything_is_dropped() {
        let p = plan(&[], &[]);
        let s = sandbox_script(&p.id.key(), &meta(), Ipv4Addr::new(10, 200, 0, 2), &p.rules);
        assert!(!s.contains("dport"));
        assert!(!s.contains("published"));
        assert!(s.contains("add rule inet purple pv0f8e7d6c5b4a_out counter name \"pv0f8e7d6c5b4a_out_drop\" drop\n"));
    }

    #[test]
    fn deletions_come_in_reference_order() {
        let key = SandboxId::parse("0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
            .unwrap()
            .key();
        let objects = vec![
            NftObject::Counter(key.counter(CounterKind::OutAllowed)),
            NftObject::Chain(key.chain(ChainKind::Out)),
            NftObject::Element {
                map: Map::Published,
                key: ElementKey::Port(6, 18080),
            },
            NftObject::Element {
                map: Map::OutFrom,
                key: ElementKey::Interface(SandboxKeyRef::new(&key)),
            },
        ];
        assert_eq!(
            deletion_script(&objects),
            "delete element inet purple out_from { \"pv0f8e7d6c5b4a\" }\n\
             delete element inet purple published { tcp . 18080 }\n\
             flush chain inet purple pv0f8e7d6c5b4a_out\n\
             delete chain inet purple pv0f8e7d6c5b4a_out\n\
             delete counter inet purple pv0f8e7d6c5b4a_out_ok\n"
        );
        assert_eq!(deletion_script(&[]), "");
    }
}
