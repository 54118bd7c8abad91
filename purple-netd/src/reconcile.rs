//! Which of netd's objects are stale, as a pure function of what the kernel
//! holds. A sandbox is live when its host interface exists (the veth pair
//! dies with the sandbox's network namespace) and its objects are complete;
//! everything of a sandbox that is not live is deleted, and so is a `pv`
//! interface that has no rules. So a crash of purple-init or of netd itself
//! leaves nothing behind for longer than one reconcile interval, and a
//! half-made sandbox never keeps a network.

use std::collections::BTreeSet;

use purple_common::netd::NetCounters;

use crate::ident::{ChainKind, CounterKind, SandboxKey};
use crate::nft::{ElementKey, Map, NftObject, SandboxKeyRef};
use crate::plan::SandboxMeta;
use crate::state::{HostLink, TableState};

/// What to delete: nft objects (one transaction) and host interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub nft: Vec<NftObject>,
    pub links: Vec<String>,
}

impl Cleanup {
    pub fn is_empty(&self) -> bool {
        self.nft.is_empty() && self.links.is_empty()
    }
}

fn element_belongs(map: Map, key: &ElementKey, target: Option<&str>, sandbox: &SandboxKey) -> bool {
    let by_key = matches!(key, ElementKey::Interface(k) if *k == SandboxKeyRef::new(sandbox));
    let by_target = target
        .and_then(SandboxKey::from_chain)
        .is_some_and(|(k, _)| k == *sandbox);
    // Published elements are keyed by port: only the target names the owner.
    by_target || (map != Map::Published && by_key)
}

/// Every object of `sandbox` in the table.
pub fn objects_of(table: &TableState, sandbox: &SandboxKey) -> Vec<NftObject> {
    let mut out = Vec::new();
    for (map, elements) in &table.maps {
        for e in elements {
            if element_belongs(*map, &e.key, e.target.as_deref(), sandbox) {
                out.push(NftObject::Element {
                    map: *map,
                    key: e.key,
                });
            }
        }
    }
    for name in table.chains.keys() {
        if SandboxKey::from_chain(name).is_some_and(|(k, _)| k == *sandbox) {
            out.push(NftObject::Chain(name.clone()));
        }
    }
    for name in table.counters.keys() {
        if SandboxKey::from_counter(name).is_some_and(|(k, _)| k == *sandbox) {
            out.push(NftObject::Counter(name.clone()));
        }
    }
    out
}

/// The metadata kept in the comment of the first rule of the sandbox's
/// `_out` chain.
pub fn meta_of(table: &TableState, sandbox: &SandboxKey) -> Option<SandboxMeta> {
    table
        .chains
        .get(&sandbox.chain(ChainKind::Out))?
        .as_deref()
        .and_then(SandboxMeta::parse)
}

/// All chains, counters and dispatch elements of `sandbox` are there.
pub fn is_complete(table: &TableState, sandbox: &SandboxKey) -> bool {
    let chains = ChainKind::ALL
        .iter()
        .all(|c| table.chains.contains_key(&sandbox.chain(*c)));
    let counters = CounterKind::ALL
        .iter()
        .all(|c| table.counters.contains_key(&sandbox.counter(*c)));
    let dispatch = [Map::OutFrom, Map::InTo, Map::HostFrom].iter().all(|map| {
        let want = sandbox.chain(map.chain_kind());
        table.maps.get(map).is_some_and(|elements| {
            elements.iter().any(|e| {
                e.key == ElementKey::Interface(SandboxKeyRef::new(sandbox))
                    && e.target.as_deref() == Some(want.as_str())
            })
        })
    });
    chains && counters && dispatch && meta_of(table, sandbox).is_some()
}

/// The sandbox's counters, when it has any.
pub fn counters_of(table: &TableState, sandbox: &SandboxKey) -> Option<NetCounters> {
    let get = |c| table.counters.get(&sandbox.counter(c)).copied();
    let any = CounterKind::ALL.iter().any(|c| get(*c).is_some());
    if !any {
        return None;
    }
    let v = |c| get(c).unwrap_or_default();
    Some(NetCounters {
        out_allowed_packets: v(CounterKind::OutAllowed).packets,
        out_allowed_bytes: v(CounterKind::OutAllowed).bytes,
        out_dropped_packets: v(CounterKind::OutDropped).packets,
        out_dropped_bytes: v(CounterKind::OutDropped).bytes,
        in_allowed_packets: v(CounterKind::InAllowed).packets,
        in_allowed_bytes: v(CounterKind::InAllowed).bytes,
        in_dropped_packets: v(CounterKind::InDropped).packets,
        in_dropped_bytes: v(CounterKind::InDropped).bytes,
    })
}

/// The sandboxes that own any object in the table.
pub fn keys_in_table(table: &TableState) -> BTreeSet<SandboxKey> {
    let mut keys = BTreeSet::new();
    for name in table.chains.keys() {
        if let Some((k, _)) = SandboxKey::from_chain(name) {
            keys.insert(k);
        }
    }
    for name in table.counters.keys() {
        if let Some((k, _)) = SandboxKey::from_counter(name) {
            keys.insert(k);
        }
    }
    for elements in table.maps.values() {
        for e in elements {
            if let ElementKey::Interface(k) = e.key {
                keys.extend(k.key());
            }
            if let Some((k, _)) = e.target.as_deref().and_then(SandboxKey::from_chain) {
                keys.insert(k);
            }
        }
    }
    keys
}

/// Another sandbox in the table whose flow mark is `sandbox`'s: its flows
/// would pass as `sandbox`'s, so such an attach is refused.
pub fn mark_collision(table: &TableState, sandbox: &SandboxKey) -> Option<SandboxKey> {
    keys_in_table(table)
        .into_iter()
        .find(|k| k != sandbox && k.flow_mark() == sandbox.flow_mark())
}

/// The host ports (protocol number, port) whose `published` element jumps
/// to `sandbox`'s DNAT chain.
pub fn published_of(table: &TableState, sandbox: &SandboxKey) -> Vec<(u8, u16)> {
    let want = sandbox.chain(ChainKind::Dnat);
    table
        .maps
        .get(&Map::Published)
        .into_iter()
        .flatten()
        .filter(|e| e.target.as_deref() == Some(want.as_str()))
        .filter_map(|e| match e.key {
            ElementKey::Port(proto, port) => Some((proto, port)),
            ElementKey::Interface(_) => None,
        })
        .collect()
}

/// The sandboxes that are live: their host interface exists and their
/// objects are complete. Everything else of netd's is stale.
pub fn live(links: &[HostLink], table: Option<&TableState>) -> BTreeSet<SandboxKey> {
    let Some(table) = table else {
        return BTreeSet::new();
    };
    links
        .iter()
        .filter_map(|l| SandboxKey::from_interface(&l.name))
        .filter(|k| is_complete(table, k))
        .collect()
}

/// The cleanup for the current state. `table` is None when netd's table
/// does not exist (then every `pv` interface of netd's is rule-less).
pub fn reconcile(links: &[HostLink], table: Option<&TableState>) -> Cleanup {
    let empty = TableState::default();
    let table = table.unwrap_or(&empty);
    let with_link: BTreeSet<SandboxKey> = links
        .iter()
        .filter_map(|l| SandboxKey::from_interface(&l.name))
        .collect();
    let mut all = keys_in_table(table);
    all.extend(with_link.iter().cloned());
    let mut cleanup = Cleanup::default();
    for key in all {
        let has_link = with_link.contains(&key);
        if has_link && is_complete(table, &key) {
            continue;
        }
        cleanup.nft.extend(objects_of(table, &key));
        if has_link {
            cleanup.links.push(key.interface());
        }
    }
    cleanup.nft.sort();
    cleanup.nft.dedup();
    cleanup
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ident::SandboxId;
    use crate::state::{CounterValue, Element};

    fn key(n: u8) -> SandboxKey {
        SandboxId::parse(&format!("{n:02x}000000-0000-4000-8000-000000000000"))
            .unwrap()
            .key()
    }

    fn link(k: &SandboxKey) -> HostLink {
        HostLink {
            name: k.interface(),
            ipv4: vec![],
        }
    }

    /// A table holding complete objects for `keys`, one published port each.
    fn table(keys: &[&SandboxKey]) -> TableState {
        let mut t = TableState::default();
        for m in Map::ALL {
            t.maps.insert(m, vec![]);
        }
        t.chains.insert("forward".into(), None);
        for (i, k) in keys.iter().enumerate() {
            for c in ChainKind::ALL {
                let comment = (c == ChainKind::Out).then(|| {
                    SandboxMeta {
                        id: "x".into(),
                        netns: (1, 2),
                        rules: "ab".into(),
                    }
                    .render()
                });
                t.chains.insert(k.chain(c), comment);
            }
            for c in CounterKind::ALL {
                t.counters.insert(k.counter(c), CounterValue::default());
            }
            for m in [Map::OutFrom, Map::InTo, Map::HostFrom] {
                t.maps.entry(m).or_default().push(Element {
                    key: ElementKey::Interface(SandboxKeyRef::new(k)),
                    target: Some(k.chain(m.chain_kind())),
                });
            }
            t.maps.entry(Map::Published).or_default().push(Element {
                key: ElementKey::Port(6, 18000 + i as u16),
                target: Some(k.chain(ChainKind::Dnat)),
            });
        }
        t
    }

    #[test]
    fn live_sandboxes_and_foreign_interfaces_are_kept() {
        let (a, b) = (key(1), key(2));
        let t = table(&[&a, &b]);
        let links = vec![
            link(&a),
            link(&b),
            HostLink {
                name: "pvfoo".into(),
                ipv4: vec![],
            },
            HostLink {
                name: "eth0".into(),
                ipv4: vec![],
            },
        ];
        assert!(reconcile(&links, Some(&t)).is_empty());
    }

    #[test]
    fn a_sandbox_whose_veth_is_gone_loses_everything() {
        let (a, b) = (key(1), key(2));
        let t = table(&[&a, &b]);
        let cleanup = reconcile(&[link(&a)], Some(&t));
        assert!(cleanup.links.is_empty());
        assert_eq!(cleanup.nft.len(), 4 + 4 + 3 + 1, "{:?}", cleanup.nft);
        assert!(cleanup.nft.iter().all(|o| match o {
            NftObject::Chain(n) | NftObject::Counter(n) => n.starts_with(&b.interface()),
            NftObject::Element {
                key: ElementKey::Interface(k),
                ..
            } => *k == SandboxKeyRef::new(&b),
            NftObject::Element {
                key: ElementKey::Port(6, port),
                ..
            } => *port == 18001,
            NftObject::Element { .. } => false,
        }));
    }

    #[test]
    fn an_interface_without_rules_is_deleted() {
        let a = key(1);
        let cleanup = reconcile(&[link(&a)], None);
        assert_eq!(cleanup.links, vec![a.interface()]);
        assert!(cleanup.nft.is_empty());
        let cleanup = reconcile(&[link(&a)], Some(&table(&[])));
        assert_eq!(cleanup.links, vec![a.interface()]);
    }

    #[test]
    fn a_half_made_sandbox_is_deleted_with_its_interface() {
        let a = key(1);
        let mut t = table(&[&a]);
        t.chains.remove(&a.chain(ChainKind::Host));
        let cleanup = reconcile(&[link(&a)], Some(&t));
        assert_eq!(cleanup.links, vec![a.interface()]);
        assert!(cleanup
            .nft
            .contains(&NftObject::Chain(a.chain(ChainKind::Out))));
        // A missing dispatch element or a lost comment counts as half made too.
        let mut t = table(&[&a]);
        t.maps.insert(Map::InTo, vec![]);
        assert_eq!(reconcile(&[link(&a)], Some(&t)).links.len(), 1);
        let mut t = table(&[&a]);
        t.chains.insert(a.chain(ChainKind::Out), None);
        assert_eq!(reconcile(&[link(&a)], Some(&t)).links.len(), 1);
    }

    #[test]
    fn live_marks_and_published_ports_are_read_per_sandbox() {
        let (a, b) = (key(1), key(2));
        let t = table(&[&a, &b]);
        assert!(live(&[link(&a)], Some(&t)).into_iter().eq([a.clone()]));
        assert!(live(&[link(&a)], None).is_empty());
        assert_eq!(published_of(&t, &a), [(6, 18000)]);
        assert_eq!(published_of(&t, &b), [(6, 18001)]);
        assert_eq!(mark_collision(&t, &a), None, "its own mark is no collision");
        assert_eq!(mark_collision(&t, &key(3)), None);
        // Two keys with the same mark (a birthday search over 32 bits
        // finds one within a few hundred thousand keys).
        let mut seen = std::collections::HashMap::new();
        let (x, y) = (0u64..4_000_000)
            .find_map(|n| {
                let k = SandboxKey::from_interface(&format!("pv{n:012x}")).unwrap();
                seen.insert(k.flow_mark(), k.clone())
                    .map(|other| (other, k))
            })
            .unwrap();
        assert_ne!(x, y);
        assert_eq!(mark_collision(&table(&[&x]), &y), Some(x));
    }

    #[test]
    fn counters_are_read_per_sandbox() {
        let a = key(1);
        let mut t = table(&[&a]);
        t.counters.insert(
            a.counter(CounterKind::OutDropped),
            CounterValue {
                packets: 3,
                bytes: 180,
            },
        );
        let c = counters_of(&t, &a).unwrap();
        assert_eq!((c.out_dropped_packets, c.out_dropped_bytes), (3, 180));
        assert_eq!(counters_of(&t, &key(2)), None);
    }
}
