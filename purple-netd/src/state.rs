//! What the kernel currently holds, read as data: netd's nft table (from
//! `nft -j list table inet purple`) and the host's interfaces with their
//! IPv4 addresses (from `ip -j addr show`). Parsing is pure and lenient
//! about what it does not need, strict about what it does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::ident::SandboxKey;
use crate::nft::{ElementKey, Map, SandboxKeyRef, ROUTER_GUARD};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("parse the JSON of {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("unexpected JSON shape in {what}: {detail}")]
    Shape { what: &'static str, detail: String },
}

/// One counter's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// One map element: its key and the chain it jumps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: ElementKey,
    pub target: Option<String>,
}

/// netd's table as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Chain name -> the first `purple ...` comment of its rules (where
    /// netd keeps a sandbox's metadata).
    pub chains: BTreeMap<String, Option<String>>,
    pub counters: BTreeMap<String, CounterValue>,
    pub maps: BTreeMap<Map, Vec<Element>>,
    /// The forward chain holds the router guard rule.
    pub router_guard: bool,
    /// Chain name -> how many rules it holds (to notice an altered base).
    pub rule_counts: BTreeMap<String, usize>,
    /// Every IPv4 address the rules of sandbox chains name (their /30s:
    /// the anti-spoofing match, the DNAT target): a block still named here
    /// is not handed out again.
    pub addresses: BTreeSet<Ipv4Addr>,
}

/// A host interface and its IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    pub ipv4: Vec<Ipv4Addr>,
}

fn shape(what: &'static str, detail: impl Into<String>) -> StateError {
    StateError::Shape {
        what,
        detail: detail.into(),
    }
}

const NFT: &str = "nft -j list table inet purple";

/// Parses the output of `nft -j list table inet purple`.
pub fn parse_table(json: &str) -> Result<TableState, StateError> {
    let root: Value =
        serde_json::from_str(json).map_err(|source| StateError::Json { what: NFT, source })?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| shape(NFT, "no \"nftables\" array"))?;
    let mut state = TableState::default();
    for item in items {
        if let Some(chain) = item.get("chain") {
            if let Some(name) = chain.get("name").and_then(Value::as_str) {
                state.chains.entry(name.to_owned()).or_insert(None);
            }
        } else if let Some(counter) = item.get("counter") {
            if let Some(name) = counter.get("name").and_then(Value::as_str) {
                let value = CounterValue {
                    packets: counter.get("packets").and_then(Value::as_u64).unwrap_or(0),
                    bytes: counter.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                };
                state.counters.insert(name.to_owned(), value);
            }
        } else if let Some(map) = item.get("map") {
            let Some(which) = map
                .get("name")
                .and_then(Value::as_str)
                .and_then(Map::from_name)
            else {
                continue;
            };
            let mut elements = Vec::new();
            for elem in map
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(e) = parse_element(which, elem) {
                    elements.push(e);
                }
            }
            state.maps.insert(which, elements);
        } else if let Some(rule) = item.get("rule") {
            let chain = rule.get("chain").and_then(Value::as_str);
            let comment = rule.get("comment").and_then(Value::as_str);
            if let Some(chain) = chain {
                *state.rule_counts.entry(chain.to_owned()).or_default() += 1;
                if SandboxKey::from_chain(chain).is_some() {
                    if let Some(expr) = rule.get("expr") {
                        collect_ipv4(expr, &mut state.addresses);
                    }
                }
            }
            if chain == Some("forward") && comment == Some(ROUTER_GUARD) {
                state.router_guard = true;
            }
            if let (Some(chain), Some(comment)) = (chain, comment) {
                if comment.starts_with("purple ") {
                    let slot = state.chains.entry(chain.to_owned()).or_insert(None);
                    if slot.is_none() {
                        *slot = Some(comment.to_owned());
                    }
                }
            }
        }
    }
    Ok(state)
}

/// Every string in `value` that is an IPv4 address (`"right": "10.0.0.2"`,
/// `"dnat": {"addr": ...}`, `"prefix": {"addr": ...}`): netd does not need
/// to know which expression names it to know the address is in use.
fn collect_ipv4(value: &Value, out: &mut BTreeSet<Ipv4Addr>) {
    match value {
        Value::String(s) => {
            if let Ok(a) = s.parse() {
                out.insert(a);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ipv4(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_ipv4(v, out)),
        _ => {}
    }
}

/// `[key, {"jump": {"target": chain}}]`; the key may be wrapped as
/// `{"elem": {"val": key, ...}}` when an element has options. Elements whose
/// key is not one netd would have written are skipped: netd never deletes
/// what it cannot name.
fn parse_element(map: Map, elem: &Value) -> Option<Element> {
    let pair = elem.as_array()?;
    let mut key = pair.first()?;
    if let Some(val) = key.get("elem").and_then(|e| e.get("val")) {
        key = val;
    }
    let target = pair
        .get(1)
        .and_then(|v| v.get("jump").or_else(|| v.get("goto")))
        .and_then(|j| j.get("target"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let key = match map {
        Map::Published => {
            let parts = key.get("concat")?.as_array()?;
            let proto = match parts.first()? {
                Value::String(s) if s == "tcp" => 6,
                Value::String(s) if s == "udp" => 17,
                Value::Number(n) => u8::try_from(n.as_u64()?).ok()?,
                _ => return None,
            };
            let port = u16::try_from(parts.get(1)?.as_u64()?).ok()?;
            ElementKey::Port(proto, port)
        }
        _ => ElementKey::Interface(SandboxKeyRef::new(&SandboxKey::from_interface(
            key.as_str()?,
        )?)),
    };
    Some(Element { key, target })
}

const IP: &str = "ip -j addr show";

/// Parses the output of `ip -j addr show`.
pub fn parse_links(json: &str) -> Result<Vec<HostLink>, StateError> {
    let root: Value =
        serde_json::from_str(json).map_err(|source| StateError::Json { what: IP, source })?;
    let links = root
        .as_array()
        .ok_or_else(|| shape(IP, "not an array of interfaces"))?;
    let mut out = Vec::new();
    for link in links {
        let Some(name) = link.get("ifname").and_then(Value::as_str) else {
            continue;
        };
        let ipv4 = link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.get("family").and_then(Value::as_str) == Some("inet"))
            .filter_map(|a| a.get("local").and_then(Value::as_str)?.parse().ok())
            .collect();
        out.push(HostLink {
            name: name.to_owned(),
            ipv4,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Trimmed from nftables 1.0.6's real output for a table with one sandbox.
    const TABLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "purple", "handle": 1}},
 {"counter": {"family": "inet", "name": "pv0f8e7d6c5b4a_out_ok", "table": "purple", "handle": 27, "packets": 5, "bytes": 300}},
 {"map": {"family": "inet", "name": "out_from", "table": "purple", "type": "ifname", "handle": 1, "map": "verdict", "elem": [["pv0f8e7d6c5b4a", {"jump": {"target": "pv0f8e7d6c5b4a_out"}}], ["eth0", {"jump": {"target": "x"}}]]}},
 {"map": {"family": "inet", "name": "published", "table": "purple", "type": ["inet_proto", "inet_service"], "handle": 4, "map": "verdict", "elem": [[{"concat": ["tcp", 18080]}, {"jump": {"target": "pv0f8e7d6c5b4a_dnat"}}]]}},
 {"map": {"family": "inet", "name": "in_to", "table": "purple", "type": "ifname", "handle": 2, "map": "verdict"}},
 {"chain": {"family": "inet", "table": "purple", "name": "forward", "handle": 5, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "purple", "name": "pv0f8e7d6c5b4a_out", "handle": 31}},
 {"rule": {"family": "inet", "table": "purple", "chain": "pv0f8e7d6c5b4a_out", "handle": 40, "comment": "purple id=x ns=1:2 rules=ab", "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.200.0.2"}}, {"counter": "pv0f8e7d6c5b4a_out_drop"}, {"drop": null}]}},
 {"chain": {"family": "inet", "table": "purple", "name": "pv0f8e7d6c5b4a_dnat", "handle": 32}},
 {"rule": {"family": "inet", "table": "purple", "chain": "pv0f8e7d6c5b4a_dnat", "handle": 41, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 18080}}, {"mangle": {"key": {"ct": {"key": "mark"}}, "value": 305419896}}, {"dnat": {"family": "ip", "addr": "10.200.0.6", "port": 8080}}]}},
 {"rule": {"family": "inet", "table": "purple", "chain": "nat_postrouting", "handle": 13, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}, {"masquerade": null}]}},
 {"rule": {"family": "inet", "table": "purple", "chain": "forward", "handle": 12, "comment": "purple-router-guard", "expr": [{"drop": null}]}}]}"#;

    #[test]
    fn reads_chains_counters_maps_and_the_guard() {
        let t = parse_table(TABLE).unwrap();
        assert!(t.router_guard);
        assert_eq!(t.chains.get("forward"), Some(&None));
        assert_eq!(
            t.chains.get("pv0f8e7d6c5b4a_out"),
            Some(&Some("purple id=x ns=1:2 rules=ab".to_owned()))
        );
        assert_eq!(
            t.counters.get("pv0f8e7d6c5b4a_out_ok"),
            Some(&CounterValue {
                packets: 5,
                bytes: 300
            })
        );
        let out = &t.maps[&Map::OutFrom];
        assert_eq!(out.len(), 1, "a foreign key (eth0) is skipped");
        assert_eq!(out[0].target.as_deref(), Some("pv0f8e7d6c5b4a_out"));
        assert_eq!(t.maps[&Map::Published][0].key, ElementKey::Port(6, 18080));
        assert!(t.maps[&Map::InTo].is_empty());
        assert_eq!(t.rule_counts.get("forward"), Some(&1));
        assert_eq!(t.rule_counts.get("pv0f8e7d6c5b4a_out"), Some(&1));
        // Addresses of sandbox chains only (not the base's 127.0.0.0/8).
        assert_eq!(
            t.addresses.iter().copied().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 6)]
        );
    }

    #[test]
    fn reads_links_and_their_ipv4_addresses() {
        let json = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}]},
                       {"ifindex":4,"link":"eth0","ifname":"pv0f8e7d6c5b4a","addr_info":[{"family":"inet","local":"10.200.0.1","prefixlen":30}]},
                       {"ifindex":5,"ifname":"pvabc"}]"#;
        let links = parse_links(json).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].ipv4, vec![Ipv4Addr::LOCALHOST]);
        assert_eq!(links[1].ipv4, vec![Ipv4Addr::new(10, 200, 0, 1)]);
        assert!(links[2].ipv4.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_table("").is_err());
        assert!(parse_table("{}").is_err());
        assert!(parse_links("{}").is_err());
    }
}
