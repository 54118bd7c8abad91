//! The admin config, /etc/purple/purple.toml: what unprivileged callers may
//! ask for on this host.
//!
//! Only root decides it. The file (and its directory) must be owned by root
//! and writable by nobody else, or purple-init refuses to run: a config that
//! an ordinary user could edit would let that user raise their own limits.
//! `PURPLE_CONFIG` may point elsewhere only when the real uid is 0.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use purple_common::capability::Capability;
use purple_common::policy::{parse::MAX_PIDS, CPU_WEIGHT_RANGE, OPEN_FILES_RANGE};
use purple_common::policy::{Cidr, PortRule};
use purple_common::values::{ByteSize, CpuQuota, Timeout};
use serde::Deserialize;

pub const DEFAULT_ADMIN_CONFIG: &str = "/etc/purple/purple.toml";
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminConfigError {
    #[error("cannot open admin config {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read admin config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin config {path} is not safe: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("admin config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub identity: IdentityConfig,
    pub capabilities: CapabilityConfig,
    /// Limits a sandbox gets when its policy leaves them out.
    pub defaults: LimitDefaults,
    /// The most an unprivileged caller may ask for (root callers are not
    /// bounded by these; they could edit this file anyway).
    pub maxima: LimitMaxima,
    pub cgroup: CgroupConfig,
    pub audit: AuditConfig,
    pub network: NetworkConfig,
}

/// The filtered network (`network.mode = "filtered"`): where purple-netd
/// listens, which addresses sandboxes get, and what unprivileged callers
/// may open.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Whether unprivileged callers may ask for a filtered network at all.
    pub filtered: bool,
    /// purple-netd's socket (a root caller may override it with
    /// `PURPLE_NETD_SOCKET`).
    pub netd_socket: PathBuf,
    /// IPv4 addresses for sandboxes; each gets a /30 of it.
    pub pool: Cidr,
    /// Outbound traffic unprivileged callers may allow: each of their
    /// `allow_out` rules must lie within one of these (protocol, ports and,
    /// when given here, destination).
    pub allow_out: Vec<PortRule>,
    /// Whether unprivileged callers may let traffic in (`allow_in`) at all.
    pub inbound: bool,
    /// Lowest host port an unprivileged caller may publish a sandbox port on.
    pub min_host_port: u16,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            filtered: true,
            netd_socket: PathBuf::from(purple_common::netd::DEFAULT_NETD_SOCKET),
            pool: Cidr {
                address: std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 200, 0, 0)),
                prefix: 16,
            },
            allow_out: ["tcp:1-65535", "udp:1-65535"]
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
            inbound: true,
            min_host_port: 1024,
        }
    }
}

/// Where purple-init's audit events go. Only this file decides: neither the
/// caller's environment nor its flags can move or silence them (the
/// caller's `--audit-log` is an extra copy).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Send events to syslog (RFC 5424 with structured data).
    pub syslog: bool,
    /// The syslog socket (a unix datagram or stream socket).
    pub syslog_socket: PathBuf,
    /// The syslog facility, e.g. "authpriv" (default), "auth", "local0".
    pub facility: String,
    /// Also append the events as JSON lines to this file (absolute path;
    /// its directory is created, mode 0700, when missing).
    pub json_path: Option<PathBuf>,
    /// Refuse to run a sandbox when a configured sink cannot be written.
    pub required: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            syslog: true,
            syslog_socket: PathBuf::from(purple_common::audit::DEFAULT_SYSLOG_SOCKET),
            facility: "authpriv".into(),
            json_path: None,
            required: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitDefaults {
    #[serde(deserialize_with = "loose::value")]
    pub memory: ByteSize,
    pub pids: u32,
    #[serde(deserialize_with = "loose::value")]
    pub cpus: CpuQuota,
    pub cpu_weight: u32,
    pub open_files: u32,
    #[serde(deserialize_with = "loose::optional")]
    pub file_size: Option<ByteSize>,
}

impl Default for LimitDefaults {
    fn default() -> Self {
        LimitDefaults {
            memory: ByteSize::from_bytes(1 << 30),
            pids: 256,
            cpus: CpuQuota::ONE,
            cpu_weight: 100,
            open_files: 4096,
            file_size: Some(ByteSize::from_bytes(8 << 30)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitMaxima {
    #[serde(deserialize_with = "loose::value")]
    pub memory: ByteSize,
    pub pids: u32,
    /// Absent: the number of online CPUs.
    #[serde(deserialize_with = "loose::optional")]
    pub cpus: Option<CpuQuota>,
    pub cpu_weight: u32,
    /// Absent: no bound (and no timeout unless the caller asks for one).
    #[serde(deserialize_with = "loose::optional")]
    pub timeout: Option<Timeout>,
    #[serde(deserialize_with = "loose::optional")]
    pub cpu_time: Option<Timeout>,
    /// Each tmpfs the policy mounts (/tmp included).
    #[serde(deserialize_with = "loose::value")]
    pub tmpfs: ByteSize,
    pub open_files: u32,
    #[serde(deserialize_with = "loose::optional")]
    pub file_size: Option<ByteSize>,
    /// All running sandboxes of one unprivileged caller together: written
    /// on that caller's parent cgroup (`PARENT/uid-UID`).
    #[serde(deserialize_with = "loose::value")]
    pub user_memory: ByteSize,
    pub user_pids: u32,
}

impl Default for LimitMaxima {
    fn default() -> Self {
        LimitMaxima {
            memory: ByteSize::from_bytes(16 << 30),
            pids: 4096,
            cpus: None,
            cpu_weight: 100,
            timeout: None,
            cpu_time: None,
            tmpfs: ByteSize::from_bytes(4 << 30),
            open_files: 65_536,
            file_size: None,
            user_memory: ByteSize::from_bytes(16 << 30),
            user_pids: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Where sandbox cgroups go, relative to each hierarchy's root.
    pub parent: String,
    /// Refuse to run without cgroup limits even when the policy says
    /// `resources.mode = "best-effort"`.
    pub required: bool,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            parent: "purple".into(),
            required: false,
        }
    }
}

/// Values that read as TOML numbers or strings (`memory = "1G"` or
/// `memory = 1073741824`, `cpus = 0.5` or `cpus = "0.5"`), through the
/// same `FromStr` checks as the policy's.
mod loose {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Integer(i64),
        Float(f64),
        Text(String),
    }

    impl Loose {
        fn text(self) -> String {
            match self {
                Loose::Integer(i) => i.to_string(),
                Loose::Float(f) => f.to_string(),
                Loose::Text(s) => s,
            }
        }
    }

    pub fn value<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr<Err = purple_common::values::ValueError>,
    {
        Loose::deserialize(d)?
            .text()
            .parse()
            .map_err(|e: purple_common::values::ValueError| serde::de::Error::custom(e.0))
    }

    pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr<Err = purple_common::values::ValueError>,
    {
        value(d).map(Some)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The host uid and gid a root caller's sandbox runs as (never 0).
    pub root_maps_to: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilityConfig {
    /// Capabilities callers may keep beyond the built-in safe list.
    pub allow_extra: Vec<Capability>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            root_maps_to: 65534,
        }
    }
}

/// Which file to read: the packaged path, or `PURPLE_CONFIG` when the real
/// caller is root (tests point it at their own file).
pub fn config_path(real_uid: u32, purple_config_env: Option<&std::ffi::OsStr>) -> PathBuf {
    match purple_config_env {
        Some(p) if real_uid == 0 && !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_ADMIN_CONFIG),
    }
}

/// Checks that only root can change `meta`'s object.
fn check_root_owned(path: &Path, meta: &std::fs::Metadata) -> Result<(), AdminConfigError> {
    if meta.uid() != 0 {
        return Err(AdminConfigError::Unsafe {
            path: path.to_owned(),
            why: format!("owned by uid {}, not root", meta.uid()),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(AdminConfigError::Unsafe {
            path: path.to_owned(),
            why: format!(
                "mode {:o} lets group or others write it",
                meta.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

/// Loads the admin config. A missing file means the built-in defaults; an
/// unsafe or invalid one is an error (fail closed).
pub fn load(path: &Path) -> Result<AdminConfig, AdminConfigError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nofollow()
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AdminConfig::default()),
        Err(source) => {
            return Err(AdminConfigError::Open {
                path: path.to_owned(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| AdminConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(AdminConfigError::Unsafe {
            path: path.to_owned(),
            why: "not a regular file".into(),
        });
    }
    check_root_owned(path, &meta)?;
    if let Some(dir) = path.parent() {
        let dir_meta = std::fs::metadata(dir).map_err(|source| AdminConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
        check_root_owned(dir, &dir_meta)?;
    }
    let mut text = String::new();
    (&file)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| AdminConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(AdminConfigError::Invalid {
            path: path.to_owned(),
            message: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    parse(&text).map_err(|message| AdminConfigError::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// Parses and checks the config text.
pub fn parse(text: &str) -> Result<AdminConfig, String> {
    let mut config: AdminConfig =
        toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    if config.identity.root_maps_to == 0 {
        return Err(
            "identity.root_maps_to must not be 0: a root caller never maps to host root".into(),
        );
    }
    lower_builtin_defaults(&mut config, text)?;
    check_limits(&config)?;
    crate::cgroup::check_parent(&config.cgroup.parent).map_err(|e| e.to_string())?;
    purple_common::audit::parse_facility(&config.audit.facility)
        .map_err(|e| format!("audit.facility: {e}"))?;
    for (key, path) in [
        ("audit.syslog_socket", Some(&config.audit.syslog_socket)),
        ("audit.json_path", config.audit.json_path.as_ref()),
    ] {
        if let Some(path) = path {
            if !path.is_absolute() {
                return Err(format!("{key} must be an absolute path"));
            }
        }
    }
    check_network(&config.network)?;
    if config.audit.required && !config.audit.syslog && config.audit.json_path.is_none() {
        return Err(
            "audit.required is set but no sink is configured (audit.syslog or audit.json_path)"
                .into(),
        );
    }
    Ok(config)
}

fn check_network(network: &NetworkConfig) -> Result<(), String> {
    if !network.netd_socket.is_absolute() {
        return Err("network.netd_socket must be an absolute path".into());
    }
    // A /30 per sandbox: the pool must hold at least one, and be IPv4.
    match network.pool.address {
        std::net::IpAddr::V4(_) if network.pool.prefix <= 30 => {}
        _ => {
            return Err(format!(
                "network.pool {} must be an IPv4 network of prefix /30 or shorter",
                network.pool
            ))
        }
    }
    if network.min_host_port == 0 {
        return Err("network.min_host_port must be 1 or more".into());
    }
    Ok(())
}

/// A built-in default above a maximum the admin lowered comes down to it
/// (`[maxima] memory = "256M"` alone is a complete config); a default the
/// admin wrote stays as written, and `check_limits` judges it.
fn lower_builtin_defaults(config: &mut AdminConfig, text: &str) -> Result<(), String> {
    let raw: toml::Table = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    let written = |key: &str| {
        raw.get("defaults")
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(key))
    };
    let (d, m) = (&mut config.defaults, &config.maxima);
    if !written("memory") {
        d.memory = d.memory.min(m.memory);
    }
    if !written("pids") {
        d.pids = d.pids.min(m.pids);
    }
    if let (false, Some(max)) = (written("cpus"), m.cpus) {
        d.cpus = d.cpus.min(max);
    }
    if !written("cpu_weight") {
        d.cpu_weight = d.cpu_weight.min(m.cpu_weight);
    }
    if !written("open_files") {
        d.open_files = d.open_files.min(m.open_files);
    }
    if let (false, Some(max)) = (written("file_size"), m.file_size) {
        d.file_size = Some(d.file_size.map_or(max, |s| s.min(max)));
    }
    Ok(())
}

/// Ranges, and every default within its maximum.
fn check_limits(config: &AdminConfig) -> Result<(), String> {
    let (d, m) = (&config.defaults, &config.maxima);
    let in_range = |key: &str, value: u32, range: std::ops::RangeInclusive<u32>| {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{key} = {value} is out of range ({} to {})",
                range.start(),
                range.end()
            ))
        }
    };
    in_range("defaults.pids", d.pids, 1..=MAX_PIDS)?;
    in_range("maxima.pids", m.pids, 1..=MAX_PIDS)?;
    in_range("maxima.user_pids", m.user_pids, 1..=MAX_PIDS)?;
    in_range("defaults.cpu_weight", d.cpu_weight, CPU_WEIGHT_RANGE)?;
    in_range("maxima.cpu_weight", m.cpu_weight, CPU_WEIGHT_RANGE)?;
    in_range("defaults.open_files", d.open_files, OPEN_FILES_RANGE)?;
    in_range("maxima.open_files", m.open_files, OPEN_FILES_RANGE)?;
    let above = |key: &str, default: String, max: String| {
        Err(format!(
            "defaults.{key} ({default}) is above maxima.{key} ({max})"
        ))
    };
    if d.memory > m.memory {
        return above("memory", d.memory.to_string(), m.memory.to_string());
    }
    if d.pids > m.pids {
        return above("pids", d.pids.to_string(), m.pids.to_string());
    }
    if let Some(max) = m.cpus {
        if d.cpus > max {
            return above("cpus", d.cpus.to_string(), max.to_string());
        }
    }
    if d.cpu_weight > m.cpu_weight {
        return above(
            "cpu_weight",
            d.cpu_weight.to_string(),
            m.cpu_weight.to_string(),
        );
    }
    if d.open_files > m.open_files {
        return above(
            "open_files",
            d.open_files.to_string(),
            m.open_files.to_string(),
        );
    }
    if let Some(max) = m.file_size {
        match d.file_size {
            Some(default) if default <= max => {}
            other => {
                return above(
                    "file_size",
                    other.map_or("no limit".into(), |s| s.to_string()),
                    max.to_string(),
                )
            }
        }
    }
    if let Some(cpu_time) = m.cpu_time {
        if cpu_time.millis() < 1000 || cpu_time.millis() % 1000 != 0 {
            return Err("maxima.cpu_time must be whole seconds, at least 1s".into());
        }
    }
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parse() {
        assert_eq!(parse(""), Ok(AdminConfig::default()));
        let c = parse(
            "[identity]\nroot_maps_to = 4000\n[capabilities]\nallow_extra = [\"CAP_NET_RAW\"]\n",
        );
        assert_eq!(c.as_ref().map(|c| c.identity.root_maps_to), Ok(4000));
        assert!(parse("[identity]\nroot_maps_to = 0\n").is_err());
        assert!(parse("[nope]\n").is_err());
        assert!(parse("[capabilities]\nallow_extra = [\"CAP_FLY\"]\n").is_err());
    }

    /// The packages install this file as /etc/purple/purple.toml and say
    /// it holds the built-in values: it must parse, and to exactly those.
    #[test]
    fn the_packaged_config_is_the_built_in_defaults() {
        let packaged = include_str!("../../packaging/purple.toml");
        assert_eq!(parse(packaged), Ok(AdminConfig::default()));
    }

    #[test]
    fn limits_read_as_numbers_or_strings() {
        let c = parse(
            "[defaults]\nmemory = \"512M\"\ncpus = 0.5\npids = 64\n\
             [maxima]\nmemory = 2147483648\ncpus = \"2\"\ntimeout = \"1h\"\ncpu_time = 60\n\
             [cgroup]\nparent = \"system.slice/purple.service\"\n",
        );
        let Ok(c) = c else { unreachable!("{c:?}") };
        assert_eq!(c.defaults.memory.bytes(), 512 << 20);
        assert_eq!(c.defaults.cpus.millicpus(), 500);
        assert_eq!(c.maxima.memory.bytes(), 2 << 30);
        assert_eq!(c.maxima.cpus.map(CpuQuota::millicpus), Some(2000));
        assert_eq!(c.maxima.timeout.map(Timeout::millis), Some(3_600_000));
        assert_eq!(c.maxima.cpu_time.map(Timeout::millis), Some(60_000));
        assert_eq!(c.cgroup.parent, "system.slice/purple.service");
    }

    #[test]
    fn audit_section() {
        let c = parse("[audit]\nsyslog_socket = \"/run/test.sock\"\nfacility = \"local3\"\njson_path = \"/var/log/purple/audit.jsonl\"\nrequired = true\n");
        let Ok(c) = c else { unreachable!("{c:?}") };
        assert!(c.audit.required);
        assert_eq!(c.audit.facility, "local3");
        for bad in [
            "[audit]\nfacility = \"nope\"\n",
            "[audit]\njson_path = \"relative.jsonl\"\n",
            "[audit]\nsyslog = false\nrequired = true\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lowered_maximum_lowers_the_built_in_default() {
        let c =
            parse("[maxima]\nmemory = \"256M\"\npids = 100\nfile_size = \"1G\"\ncpu_weight = 50\n");
        let Ok(c) = c else { unreachable!("{c:?}") };
        assert_eq!(c.defaults.memory.bytes(), 256 << 20);
        assert_eq!(c.defaults.pids, 100);
        assert_eq!(c.defaults.file_size.map(ByteSize::bytes), Some(1 << 30));
        assert_eq!(c.defaults.cpu_weight, 50);
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        for (text, needle) in [
            (
                "[defaults]\nmemory = \"4G\"\n[maxima]\nmemory = \"1G\"\n",
                "defaults.memory",
            ),
            ("[defaults]\npids = 0\n", "defaults.pids"),
            ("[maxima]\ncpu_weight = 20000\n", "maxima.cpu_weight"),
            (
                "[defaults]\ncpus = 4\n[maxima]\ncpus = 2\n",
                "defaults.cpus",
            ),
            (
                "[defaults]\nfile_size = \"2G\"\n[maxima]\nfile_size = \"1G\"\n",
                "defaults.file_size",
            ),
            ("[defaults]\nmemory = \"lots\"\n", "lots"),
            ("[cgroup]\nparent = \"../escape\"\n", "parent"),
            ("[maxima]\ncpu_time = \"1500ms\"\n", "cpu_time"),
        ] {
            match parse(text) {
                Err(e) => assert!(e.contains(needle), "{text}: {e}"),
                Ok(c) => unreachable!("{text} was accepted: {c:?}"),
            }
        }
    }

    #[test]
    fn env_override_only_for_root() {
        let p = std::ffi::OsStr::new("/tmp/x.toml");
        assert_eq!(config_path(0, Some(p)), PathBuf::from("/tmp/x.toml"));
        assert_eq!(
            config_path(1000, Some(p)),
            PathBuf::from(DEFAULT_ADMIN_CONFIG)
        );
        assert_eq!(config_path(0, None), PathBuf::from(DEFAULT_ADMIN_CONFIG));
    }

    #[test]
    fn group_writable_config_is_refused() {
        let dir = std::env::temp_dir().join(format!("purple-admin-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("purple.toml");
        let _ = std::fs::write(&path, "");
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        let result = load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            result,
            Err(AdminConfigError::Unsafe { .. }) | Err(AdminConfigError::Open { .. })
        ));
    }
}
