//! Sandbox identities and the names netd derives from them.
//!
//! Everything netd creates for one sandbox is named after a 12-hex-digit key
//! (the first 48 bits of its UUID): the host interface `pv<key>`, the chains
//! `pv<key>_out|_in|_host|_dnat` and the counters `pv<key>_out_ok|...`. The
//! name alone says which sandbox an object belongs to, so reconcile can work
//! from what the kernel lists, with no state file. The full UUID is kept in
//! the comment of the first rule of the `_out` chain (nft 1.0.6 lists rule
//! comments in JSON, chain comments not), so a key collision is detected,
//! not silently merged. A 32-bit flow mark derived from the key tags the
//! sandbox's connections in conntrack ([`SandboxKey::flow_mark`]).

use std::fmt;

use purple_common::netd::HOST_INTERFACE_PREFIX;

/// Hex digits of the UUID in every name (`pv` + 12 = 14 bytes, under IFNAMSIZ).
pub const KEY_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("sandbox id {id:?} is not a UUID: {reason}")]
    NotUuid { id: String, reason: String },
    #[error("sandbox id {id:?} must be written as a lower-case hyphenated UUID ({canonical})")]
    NotCanonical { id: String, canonical: String },
}

/// A validated sandbox UUID in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxId(String);

impl SandboxId {
    /// Accepts only the canonical spelling, so one sandbox has one key and
    /// one comment whatever the sender did.
    pub fn parse(s: &str) -> Result<SandboxId, IdentError> {
        let uuid = uuid::Uuid::try_parse(s).map_err(|e| IdentError::NotUuid {
            id: s.chars().take(64).collect(),
            reason: e.to_string(),
        })?;
        let canonical = uuid.hyphenated().to_string();
        if canonical != s {
            return Err(IdentError::NotCanonical {
                id: s.chars().take(64).collect(),
                canonical,
            });
        }
        Ok(SandboxId(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> SandboxKey {
        SandboxKey(self.0.chars().filter(|c| *c != '-').take(KEY_LEN).collect())
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The chains netd makes per sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainKind {
    /// Forwarded traffic leaving the sandbox (jumped to from `forward`).
    Out,
    /// Traffic to the sandbox, forwarded or from the host (from `postrouting`).
    In,
    /// Traffic from the sandbox to the host itself (from `input`).
    Host,
    /// DNAT of the sandbox's published ports (from the nat chains).
    Dnat,
}

impl ChainKind {
    pub const ALL: [ChainKind; 4] = [
        ChainKind::Out,
        ChainKind::In,
        ChainKind::Host,
        ChainKind::Dnat,
    ];

    fn suffix(self) -> &'static str {
        match self {
            ChainKind::Out => "out",
            ChainKind::In => "in",
            ChainKind::Host => "host",
            ChainKind::Dnat => "dnat",
        }
    }
}

/// The named counters netd makes per sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterKind {
    OutAllowed,
    OutDropped,
    InAllowed,
    InDropped,
}

impl CounterKind {
    pub const ALL: [CounterKind; 4] = [
        CounterKind::OutAllowed,
        CounterKind::OutDropped,
        CounterKind::InAllowed,
        CounterKind::InDropped,
    ];

    fn suffix(self) -> &'static str {
        match self {
            CounterKind::OutAllowed => "out_ok",
            CounterKind::OutDropped => "out_drop",
            CounterKind::InAllowed => "in_ok",
            CounterKind::InDropped => "in_drop",
        }
    }
}

/// The 12-hex-digit key of a sandbox; only built from a [`SandboxId`] or by
/// parsing a name netd itself made, so it is always `[0-9a-f]{12}` and safe
/// to put in an nft script, an interface name or a /proc/sys path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxKey(String);

fn is_key(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SandboxKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host end of the sandbox's veth pair.
    pub fn interface(&self) -> String {
        format!("{HOST_INTERFACE_PREFIX}{}", self.0)
    }

    pub fn chain(&self, kind: ChainKind) -> String {
        format!("{HOST_INTERFACE_PREFIX}{}_{}", self.0, kind.suffix())
    }

    pub fn counter(&self, kind: CounterKind) -> String {
        format!("{HOST_INTERFACE_PREFIX}{}_{}", self.0, kind.suffix())
    }

    /// The conntrack mark of this sandbox's flows: FNV-1a 32 over the key.
    /// A hash, not the first 32 bits of the id, because ids that share a
    /// prefix (one caller's, a test's) would otherwise share a mark. Never
    /// 0, the mark of every flow nobody marked. Two live sandboxes with the
    /// same mark are refused at attach, like a key collision.
    pub fn flow_mark(&self) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for b in self.0.bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        if hash == 0 {
            1
        } else {
            hash
        }
    }

    /// The key of a host interface netd made (`pv` + 12 hex), else None:
    /// other `pv*` interfaces are not netd's and are left alone.
    pub fn from_interface(name: &str) -> Option<SandboxKey> {
        let key = name.strip_prefix(HOST_INTERFACE_PREFIX)?;
        is_key(key).then(|| SandboxKey(key.to_owned()))
    }

    /// The key and chain kind of a chain name netd made.
    pub fn from_chain(name: &str) -> Option<(SandboxKey, ChainKind)> {
        let (key, suffix) = split_object(name)?;
        let kind = ChainKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        Some((key, kind))
    }

    /// The key and counter kind of a counter name netd made.
    pub fn from_counter(name: &str) -> Option<(SandboxKey, CounterKind)> {
        let (key, suffix) = split_object(name)?;
        let kind = CounterKind::ALL
            .into_iter()
            .find(|k| k.suffix() == suffix)?;
        Some((key, kind))
    }
}

fn split_object(name: &str) -> Option<(SandboxKey, &str)> {
    let rest = name.strip_prefix(HOST_INTERFACE_PREFIX)?;
    let key = rest.get(..KEY_LEN)?;
    let suffix = rest.get(KEY_LEN..)?.strip_prefix('_')?;
    is_key(key).then(|| (SandboxKey(key.to_owned()), suffix))
}

impl fmt::Display for SandboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ID: &str = "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";

    #[test]
    fn names_derive_from_the_first_twelve_hex_digits() {
        let id = SandboxId::parse(ID).unwrap();
        let key = id.key();
        assert_eq!(key.as_str(), "0f8e7d6c5b4a");
        assert_eq!(key.interface(), "pv0f8e7d6c5b4a");
        assert!(key.interface().len() < libc::IFNAMSIZ);
        assert_eq!(key.chain(ChainKind::Out), "pv0f8e7d6c5b4a_out");
        assert_eq!(
            key.counter(CounterKind::InDropped),
            "pv0f8e7d6c5b4a_in_drop"
        );
        assert_eq!(
            SandboxKey::from_interface(&key.interface()),
            Some(key.clone())
        );
        assert_eq!(
            SandboxKey::from_chain("pv0f8e7d6c5b4a_dnat"),
            Some((key.clone(), ChainKind::Dnat))
        );
        assert_eq!(
            SandboxKey::from_counter("pv0f8e7d6c5b4a_out_ok"),
            Some((key, CounterKind::OutAllowed))
        );
    }

    #[test]
    fn flow_marks_differ_for_keys_that_share_a_prefix() {
        let a = SandboxId::parse("0000abcd-0001-4000-8000-000000000000")
            .unwrap()
            .key();
        let b = SandboxId::parse("0000abcd-0002-4000-8000-000000000000")
            .unwrap()
            .key();
        assert_ne!(a.flow_mark(), b.flow_mark());
        assert_ne!(a.flow_mark(), 0);
        assert_eq!(a.flow_mark(), a.clone().flow_mark(), "stable");
    }

    #[test]
    fn only_canonical_uuids_are_ids() {
        for bad in [
            "",
            "not-a-uuid",
            "0F8E7D6C-5B4A-4392-8170-6F5E4D3C2B1A",
            "0f8e7d6c5b4a439281706f5e4d3c2b1a",
            "{0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a}",
            "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\n",
            "../../../../etc/passwd",
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn foreign_names_are_not_keys() {
        for name in [
            "pv",
            "pvfoo",
            "pv0f8e7d6c5b4",
            "pv0f8e7d6c5b4a1",
            "pv0F8E7D6C5B4A",
            "eth0",
            "veth0f8e7d6c5b4a",
        ] {
            assert_eq!(SandboxKey::from_interface(name), None, "{name}");
        }
        for name in [
            "forward",
            "pv0f8e7d6c5b4a_x",
            "pv0f8e7d6c5b4a",
            "pvzzzzzzzzzzzz_out",
        ] {
            assert_eq!(SandboxKey::from_chain(name), None, "{name}");
        }
    }
}
