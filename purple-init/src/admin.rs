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
    let config: AdminConfig = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    if config.identity.root_maps_to == 0 {
        return Err(
            "identity.root_maps_to must not be 0: a root caller never maps to host root".into(),
        );
    }
    Ok(config)
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
