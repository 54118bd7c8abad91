//! The sandbox policy: what the sandbox may see and use.
//!
//! A `Policy` is the validated, immutable value the rest of Purple works
//! from. It comes from the TOML front end in [`parse`] (which reports every
//! problem with its line and column), from the built-in default, or from the
//! wire, where serde re-runs the value checks and purple-init then calls
//! [`Policy::validate`] for the rules that span several fields.

pub mod parse;
pub mod system;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::values::{check_env_value, AbsPath, ByteSize, CpuQuota, EnvName, Timeout, ValueError};

/// Upper bounds that keep a policy (and so a request) small and cheap to check.
pub const MAX_BINDS: usize = 256;
pub const MAX_TMPFS: usize = 32;
pub const MAX_ENV: usize = 1024;
pub const MAX_PORT_RULES: usize = 256;
pub const MAX_SYSCALL_NAMES: usize = 512;
/// The default size cap of the sandbox's private /tmp.
pub const DEFAULT_TMP_SIZE: ByteSize = ByteSize::from_bytes(256 << 20);
/// Where the workspace appears inside the sandbox (and the command's cwd).
pub const WORKSPACE_PATH: &str = "/workspace";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub filesystem: FilesystemPolicy,
    pub resources: ResourcePolicy,
    pub network: NetworkPolicy,
    pub env: BTreeMap<EnvName, String>,
    pub syscalls: SyscallPolicy,
    pub landlock: LandlockPolicy,
    pub capabilities: CapabilityPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemPolicy {
    /// Bind the host's system directories and the runtime part of /etc
    /// read-only (the list in [`system`]). Without it the root holds only
    /// /proc, /dev, /tmp and what the policy binds.
    pub system: bool,
    pub read_only: Vec<Bind>,
    pub read_write: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// Host directory bound read-write at /workspace, the command's cwd.
    pub workspace: Option<AbsPath>,
}

/// A host path and where it appears in the sandbox. Written `"SRC"` (same
/// path inside) or `"SRC:DST"`, or as a table `{ source = .., destination = .. }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub source: AbsPath,
    pub destination: AbsPath,
}

impl FromStr for Bind {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (source, destination) = match s.split_once(':') {
            Some((src, dst)) => (src.parse::<AbsPath>()?, dst.parse::<AbsPath>()?),
            None => {
                let p = s.parse::<AbsPath>()?;
                (p.clone(), p)
            }
        };
        Ok(Bind {
            source,
            destination,
        })
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source == self.destination {
            write!(f, "{}", self.source)
        } else {
            write!(f, "{}:{}", self.source, self.destination)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tmpfs {
    pub path: AbsPath,
    pub size: ByteSize,
}

/// Resource limits. A limit left out gets the admin config's default (see
/// docs/resources.md): every sandbox is bounded, asked or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcePolicy {
    /// Hard memory limit of the whole sandbox (cgroup), swap included.
    pub memory: Option<ByteSize>,
    /// Where the kernel starts reclaiming and throttling (cgroup v2
    /// `memory.high`, v1 soft limit); at most `memory`.
    pub memory_high: Option<ByteSize>,
    /// Tasks (processes and threads) of the whole sandbox, PID 1 included.
    pub pids: Option<u32>,
    /// CPU bandwidth of the whole sandbox, in CPUs.
    pub cpus: Option<CpuQuota>,
    /// Relative CPU share against other sandboxes (cgroup v2 `cpu.weight`).
    pub cpu_weight: Option<u32>,
    /// Wall-clock limit of the whole sandbox.
    pub timeout: Option<Timeout>,
    /// CPU time of each process (RLIMIT_CPU), whole seconds.
    pub cpu_time: Option<Timeout>,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: Option<u32>,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size: Option<ByteSize>,
    /// What happens when the host cannot enforce the cgroup limits.
    pub mode: ResourceMode,
}

/// The bounds of `resources.cpu_weight` (the kernel's for `cpu.weight`).
pub const CPU_WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;
/// The bounds of `resources.open_files`.
pub const OPEN_FILES_RANGE: std::ops::RangeInclusive<u32> = 16..=1_048_576;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceMode {
    /// No cgroup limits on this host means no sandbox.
    #[default]
    Required,
    /// Run without the cgroup limits when the host has no usable cgroup
    /// hierarchy; the rlimits and the timeout still apply, and the exit
    /// report says what was enforced.
    BestEffort,
}

impl FromStr for ResourceMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(ResourceMode::Required),
            "best-effort" => Ok(ResourceMode::BestEffort),
            other => Err(ValueError(format!(
                "unknown resources mode {other:?}; use \"required\" or \"best-effort\""
            ))),
        }
    }
}

impl fmt::Display for ResourceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceMode::Required => "required",
            ResourceMode::BestEffort => "best-effort",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    pub allow_out: Vec<PortRule>,
    pub allow_in: Vec<InboundRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// A network namespace with loopback only.
    #[default]
    None,
    /// A veth with nftables port rules owned by purple-netd.
    Filtered,
}

impl FromStr for NetworkMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(NetworkMode::None),
            "filtered" => Ok(NetworkMode::Filtered),
            other => Err(ValueError(format!(
                "unknown network mode {other:?}; use \"none\" or \"filtered\""
            ))),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::Filtered => "filtered",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn parse_prefix(s: &str) -> Result<(Protocol, &str), ValueError> {
        match s.split_once(':') {
            Some(("tcp", rest)) => Ok((Protocol::Tcp, rest)),
            Some(("udp", rest)) => Ok((Protocol::Udp, rest)),
            _ => Err(ValueError(format!(
                "port rule {s:?} must start with \"tcp:\" or \"udp:\""
            ))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

fn parse_port(s: &str, rule: &str) -> Result<u16, ValueError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ValueError(format!(
            "port {s:?} in rule {rule:?} must be a number from 1 to 65535"
        ))),
    }
}

/// An outbound allowance: `tcp:443`, `udp:53`, `tcp:8000-8100`, optionally
/// restricted to a destination network: `tcp:443@192.0.2.0/24`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRule {
    pub protocol: Protocol,
    pub first_port: u16,
    pub last_port: u16,
    pub destination: Option<Cidr>,
}

impl FromStr for PortRule {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (protocol, rest) = Protocol::parse_prefix(s)?;
        let (ports, destination) = match rest.split_once('@') {
            Some((ports, cidr)) => (ports, Some(cidr.parse::<Cidr>()?)),
            None => (rest, None),
        };
        let (first_port, last_port) = match ports.split_once('-') {
            Some((a, b)) => (parse_port(a, s)?, parse_port(b, s)?),
            None => {
                let p = parse_port(ports, s)?;
                (p, p)
            }
        };
        if first_port > last_port {
            return Err(ValueError(format!("port range in {s:?} runs backwards")));
        }
        Ok(PortRule {
            protocol,
            first_port,
            last_port,
            destination,
        })
    }
}

impl TryFrom<String> for PortRule {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRule> for String {
    fn from(r: PortRule) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.first_port)?;
        if self.last_port != self.first_port {
            write!(f, "-{}", self.last_port)?;
        }
        if let Some(cidr) = &self.destination {
            write!(f, "@{cidr}")?;
        }
        Ok(())
    }
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub address: std::net::IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let address: std::net::IpAddr = addr
            .parse()
            .map_err(|_| ValueError(format!("{addr:?} is not an IP address")))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| ValueError(format!("prefix length in {s:?} must be 0 to {max}")))?
        };
        Ok(Cidr { address, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An inbound allowance: `tcp:8080`, or published on a host port: `tcp:8080->18080`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InboundRule {
    pub protocol: Protocol,
    pub port: u16,
    pub host_port: Option<u16>,
}

impl FromStr for InboundRule {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (protocol, rest) = Protocol::parse_prefix(s)?;
        let (port, host_port) = match rest.split_once("->") {
            Some((p, h)) => (parse_port(p, s)?, Some(parse_port(h, s)?)),
            None => (parse_port(rest, s)?, None),
        };
        Ok(InboundRule {
            protocol,
            port,
            host_port,
        })
    }
}

impl TryFrom<String> for InboundRule {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<InboundRule> for String {
    fn from(r: InboundRule) -> String {
        r.to_string()
    }
}

impl fmt::Display for InboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.port)?;
        if let Some(h) = self.host_port {
            write!(f, "->{h}")?;
        }
        Ok(())
    }
}

/// Placeholder for the syscall-filter issue: the shape is parsed and checked
/// now so policies can be written against it; purple-init refuses non-empty
/// lists until the filter is enforced (fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyscallPolicy {
    pub allow: Vec<SyscallName>,
    pub deny: Vec<SyscallName>,
    pub action: SyscallAction,
}

/// A syscall name as the kernel spells it: lowercase letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SyscallName(String);

impl SyscallName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SyscallName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(SyscallName(s.to_owned()))
        } else {
            Err(ValueError(format!("{s:?} is not a syscall name")))
        }
    }
}

impl TryFrom<String> for SyscallName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SyscallName> for String {
    fn from(n: SyscallName) -> String {
        n.0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyscallAction {
    #[default]
    Errno,
    Kill,
    Log,
}

impl FromStr for SyscallAction {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "errno" => Ok(SyscallAction::Errno),
            "kill" => Ok(SyscallAction::Kill),
            "log" => Ok(SyscallAction::Log),
            other => Err(ValueError(format!(
                "unknown syscall action {other:?}; use \"errno\", \"kill\" or \"log\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LandlockPolicy {
    pub mode: LandlockMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    Required,
    #[default]
    BestEffort,
    Off,
}

impl FromStr for LandlockMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(LandlockMode::Required),
            "best-effort" => Ok(LandlockMode::BestEffort),
            "off" => Ok(LandlockMode::Off),
            other => Err(ValueError(format!(
                "unknown landlock mode {other:?}; use \"required\", \"best-effort\" or \"off\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilityPolicy {
    pub add: Vec<Capability>,
    pub drop: Vec<Capability>,
    /// Also raise the kept capabilities into the ambient set, so that they
    /// survive execve of programs without file capabilities.
    pub ambient: bool,
}

impl CapabilityPolicy {
    /// What the sandbox keeps: `add` minus `drop`, sorted, no duplicates.
    pub fn kept(&self) -> Vec<Capability> {
        let mut kept: Vec<Capability> = self
            .add
            .iter()
            .copied()
            .filter(|c| !self.drop.contains(c))
            .collect();
        kept.sort();
        kept.dedup();
        kept
    }
}

impl Default for FilesystemPolicy {
    fn default() -> Self {
        FilesystemPolicy {
            system: true,
            read_only: Vec::new(),
            read_write: Vec::new(),
            tmpfs: vec![Tmpfs {
                path: AbsPath::tmp(),
                size: DEFAULT_TMP_SIZE,
            }],
            workspace: None,
        }
    }
}

impl Default for Policy {
    /// The built-in policy: system directories read-only, no host path
    /// writable, a private 256 MiB /tmp, no network, no capabilities.
    fn default() -> Self {
        Policy {
            filesystem: FilesystemPolicy::default(),
            resources: ResourcePolicy::default(),
            network: NetworkPolicy::default(),
            env: BTreeMap::new(),
            syscalls: SyscallPolicy::default(),
            landlock: LandlockPolicy::default(),
            capabilities: CapabilityPolicy::default(),
        }
    }
}

impl AbsPath {
    fn tmp() -> AbsPath {
        AbsPath::from_static("/tmp")
    }
}

/// One rule a policy breaks, with the dotted key it concerns
/// (`filesystem.read_only[2]`) so the TOML front end can point at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Sandbox paths that Purple builds itself; nothing may be bound over them.
pub const RESERVED_DESTINATIONS: &[&str] = &["/proc", "/dev"];

/// Where a bind or tmpfs may go: not the root, not inside what Purple
/// builds itself. purple-init applies it again to every mount it receives.
pub fn check_destination(dest: &AbsPath) -> Result<(), String> {
    if dest.is_root() {
        return Err("cannot replace the sandbox's root directory".into());
    }
    for reserved in RESERVED_DESTINATIONS {
        let reserved = AbsPath::from_static(reserved);
        if dest.starts_with(&reserved) {
            return Err(format!(
                "{dest} is inside {reserved}, which Purple builds itself"
            ));
        }
    }
    Ok(())
}

impl Policy {
    /// Rules that involve more than one value. Value-level rules (path
    /// syntax, sizes, ports) already hold by construction of the types.
    pub fn validate(&self) -> Result<(), Vec<PolicyProblem>> {
        let mut problems = Vec::new();
        let mut problem =
            |key: String, message: String| problems.push(PolicyProblem { key, message });
        let fs = &self.filesystem;

        if fs.read_only.len() + fs.read_write.len() > MAX_BINDS {
            problem(
                "filesystem".into(),
                format!("at most {MAX_BINDS} binds are allowed"),
            );
        }
        if fs.tmpfs.len() > MAX_TMPFS {
            problem(
                "filesystem.tmpfs".into(),
                format!("at most {MAX_TMPFS} tmpfs mounts are allowed"),
            );
        }
        let workspace_dest = AbsPath::from_static(WORKSPACE_PATH);
        let mut seen: BTreeMap<&AbsPath, String> = BTreeMap::new();
        if fs.workspace.is_some() {
            seen.insert(&workspace_dest, "filesystem.workspace".into());
        }
        let destinations = fs
            .read_only
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("filesystem.read_only[{i}]"), &b.destination))
            .chain(
                fs.read_write
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("filesystem.read_write[{i}]"), &b.destination)),
            )
            .chain(
                fs.tmpfs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("filesystem.tmpfs[{i}]"), &t.path)),
            );
        for (key, dest) in destinations {
            if let Err(message) = check_destination(dest) {
                problem(key.clone(), message);
            }
            if let Some(first) = seen.get(dest) {
                problem(key.clone(), format!("{dest} is already mounted by {first}"));
            } else {
                seen.insert(dest, key);
            }
        }

        if self.env.len() > MAX_ENV {
            problem(
                "env".into(),
                format!("at most {MAX_ENV} variables are allowed"),
            );
        }
        for (name, value) in &self.env {
            if let Err(e) = check_env_value(value) {
                problem(format!("env.{name}"), e.0);
            }
        }

        let res = &self.resources;
        if let Some(pids) = res.pids {
            if pids == 0 || pids > parse::MAX_PIDS {
                problem(
                    "resources.pids".into(),
                    format!("must be between 1 and {}", parse::MAX_PIDS),
                );
            }
        }
        if let Some(weight) = res.cpu_weight {
            if !CPU_WEIGHT_RANGE.contains(&weight) {
                problem(
                    "resources.cpu_weight".into(),
                    format!(
                        "must be between {} and {}",
                        CPU_WEIGHT_RANGE.start(),
                        CPU_WEIGHT_RANGE.end()
                    ),
                );
            }
        }
        if let Some(files) = res.open_files {
            if !OPEN_FILES_RANGE.contains(&files) {
                problem(
                    "resources.open_files".into(),
                    format!(
                        "must be between {} and {}",
                        OPEN_FILES_RANGE.start(),
                        OPEN_FILES_RANGE.end()
                    ),
                );
            }
        }
        if let Some(cpu_time) = res.cpu_time {
            if cpu_time.millis() < 1000 || cpu_time.millis() % 1000 != 0 {
                problem(
                    "resources.cpu_time".into(),
                    "must be whole seconds, at least 1s (the kernel counts RLIMIT_CPU in seconds)"
                        .into(),
                );
            }
        }
        if let (Some(high), Some(memory)) = (res.memory_high, res.memory) {
            if high > memory {
                problem(
                    "resources.memory_high".into(),
                    format!("{high} is above resources.memory ({memory})"),
                );
            }
        }
        let net = &self.network;
        if net.allow_out.len() > MAX_PORT_RULES || net.allow_in.len() > MAX_PORT_RULES {
            problem(
                "network".into(),
                format!("at most {MAX_PORT_RULES} rules per direction"),
            );
        }
        if net.mode == NetworkMode::None {
            if !net.allow_out.is_empty() {
                problem(
                    "network.allow_out".into(),
                    "needs network.mode = \"filtered\"".into(),
                );
            }
            if !net.allow_in.is_empty() {
                problem(
                    "network.allow_in".into(),
                    "needs network.mode = \"filtered\"".into(),
                );
            }
        }

        for (list, names) in [
            ("allow", &self.syscalls.allow),
            ("deny", &self.syscalls.deny),
        ] {
            for (i, name) in names.iter().enumerate() {
                let key = format!("syscalls.{list}[{i}]");
                if !crate::syscalls::is_known(name.as_str()) {
                    problem(
                        key,
                        format!(
                            "unknown syscall {:?} on {}",
                            name.as_str(),
                            crate::syscalls::ARCH
                        ),
                    );
                } else if list == "allow" {
                    if let Some(reason) = crate::syscalls::allow_refusal(name.as_str()) {
                        problem(
                            key,
                            format!("{} cannot be allowed: {reason}", name.as_str()),
                        );
                    }
                }
            }
        }
        if self.syscalls.allow.len() + self.syscalls.deny.len() > MAX_SYSCALL_NAMES {
            problem(
                "syscalls".into(),
                format!("at most {MAX_SYSCALL_NAMES} names are allowed"),
            );
        }
        if self.capabilities.add.len() + self.capabilities.drop.len() > 2 * Capability::ALL.len() {
            problem("capabilities".into(), "too many entries".into());
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(s: &str) -> Bind {
        s.parse()
            .unwrap_or_else(|e: ValueError| unreachable!("{e}"))
    }

    #[test]
    fn default_policy_is_valid_and_closed() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(p.filesystem.read_write.is_empty());
        assert!(p.filesystem.workspace.is_none());
        assert_eq!(p.network.mode, NetworkMode::None);
        assert!(p.capabilities.kept().is_empty());
    }

    #[test]
    fn binds_parse_both_forms() {
        assert_eq!(bind("/a").destination.as_str(), "/a");
        let b = bind("/a:/b");
        assert_eq!((b.source.as_str(), b.destination.as_str()), ("/a", "/b"));
        assert!("rel:/b".parse::<Bind>().is_err());
        assert!("/a:b".parse::<Bind>().is_err());
    }

    #[test]
    fn reserved_and_duplicate_destinations_are_refused() {
        let mut p = Policy::default();
        p.filesystem.read_only = vec![bind("/x:/proc/sys"), bind("/y:/opt"), bind("/z:/opt")];
        p.filesystem.read_write = vec![bind("/w:/")];
        let problems = p.validate().err().unwrap_or_default();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "filesystem.read_only[0]",
                "filesystem.read_only[2]",
                "filesystem.read_write[0]"
            ]
        );
    }

    #[test]
    fn ports_need_filtered_mode() {
        let mut p = Policy::default();
        p.network.allow_out = vec!["tcp:443"
            .parse()
            .unwrap_or_else(|e: ValueError| unreachable!("{e}"))];
        assert!(p.validate().is_err());
        p.network.mode = NetworkMode::Filtered;
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn port_rules_round_trip() {
        for s in [
            "tcp:443",
            "udp:53",
            "tcp:8000-8100",
            "tcp:443@192.0.2.0/24",
            "udp:53@2001:db8::/32",
        ] {
            let r: PortRule = s
                .parse()
                .unwrap_or_else(|e: ValueError| unreachable!("{s}: {e}"));
            assert_eq!(r.to_string(), s);
        }
        for s in [
            "443",
            "tcp:0",
            "tcp:9-1",
            "icmp:1",
            "tcp:443@300.1.1.1/8",
            "tcp:70000",
        ] {
            assert!(s.parse::<PortRule>().is_err(), "{s}");
        }
        let r: InboundRule = "tcp:8080->18080"
            .parse()
            .unwrap_or_else(|e: ValueError| unreachable!("{e}"));
        assert_eq!(r.host_port, Some(18080));
    }

    #[test]
    fn kept_capabilities_subtract_drop() {
        let caps = CapabilityPolicy {
            add: vec![
                Capability::Chown,
                Capability::NetBindService,
                Capability::Chown,
            ],
            drop: vec![Capability::Chown],
            ambient: false,
        };
        assert_eq!(caps.kept(), vec![Capability::NetBindService]);
    }
}
