//! Opening the host paths a sandbox will see, as the calling user.
//!
//! The supervisor runs with the caller's own rights, so a path the caller
//! cannot reach fails here with the kernel's own answer. What purple-init
//! gets is the open descriptor, never the path: a symlink swapped in after
//! this point changes nothing.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use purple_common::policy::system::{
    SYSTEM_ETC_PREFIXES, SYSTEM_NETWORK_READ_ONLY, SYSTEM_READ_ONLY,
};
use purple_common::policy::{Policy, WORKSPACE_PATH};
use purple_common::protocol::{MountRequest, MAX_REQUEST_FDS};
use purple_common::values::AbsPath;

#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("{flag} {path}: {errno}")]
    Open {
        flag: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("{flag} {path}: not a directory or regular file")]
    WrongType { flag: &'static str, path: String },
    #[error("--workspace {path}: not a directory")]
    WorkspaceNotDir { path: String },
    #[error("{flag} {path}: you do not have {access} access to it")]
    NoAccess {
        flag: &'static str,
        path: String,
        access: &'static str,
    },
    #[error("too many paths to bind (at most {MAX_REQUEST_FDS})")]
    TooMany,
}

/// The mounts and the descriptors that back them, in matching order.
#[derive(Debug, Default)]
pub struct OpenedMounts {
    pub mounts: Vec<MountRequest>,
    pub fds: Vec<OwnedFd>,
}

impl OpenedMounts {
    fn push(
        &mut self,
        fd: OwnedFd,
        destination: AbsPath,
        writable: bool,
        source: &str,
    ) -> Result<(), HostPathError> {
        if self.fds.len() >= MAX_REQUEST_FDS {
            return Err(HostPathError::TooMany);
        }
        let fd_index = u32::try_from(self.fds.len()).map_err(|_| HostPathError::TooMany)?;
        self.mounts.push(MountRequest {
            fd_index,
            destination,
            writable,
            source_hint: source.to_owned(),
        });
        self.fds.push(fd);
        Ok(())
    }

    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

enum Kind {
    Dir,
    File,
}

/// Opens `path` (following symlinks, as the user) without reading it, and
/// checks its type and the user's access.
fn open_checked(
    flag: &'static str,
    path: &str,
    writable: bool,
) -> Result<(OwnedFd, Kind), HostPathError> {
    let raw = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(
        |errno| HostPathError::Open {
            flag,
            path: path.to_owned(),
            errno,
        },
    )?;
    // SAFETY: open just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stat = fstat(fd.as_raw_fd()).map_err(|errno| HostPathError::Open {
        flag,
        path: path.to_owned(),
        errno,
    })?;
    let kind = match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        _ => {
            return Err(HostPathError::WrongType {
                flag,
                path: path.to_owned(),
            })
        }
    };
    let (mode, access) = if writable {
        (libc::R_OK | libc::W_OK, "read-write")
    } else {
        (libc::R_OK, "read")
    };
    // SAFETY: fd is live; the empty path with AT_EMPTY_PATH names fd itself.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if ret != 0 {
        return Err(HostPathError::NoAccess {
            flag,
            path: path.to_owned(),
            access,
        });
    }
    Ok((fd, kind))
}

/// Opens everything the policy binds: the system set (when enabled, skipping
/// what this host lacks or the user cannot read), then the policy's own
/// read-only and read-write binds and the workspace (any failure there is
/// an error: the user asked for it by name).
pub fn open_all(policy: &Policy) -> Result<OpenedMounts, HostPathError> {
    let fs = &policy.filesystem;
    let mut opened = OpenedMounts::default();
    let user_destinations: Vec<&AbsPath> = fs
        .read_only
        .iter()
        .chain(&fs.read_write)
        .map(|b| &b.destination)
        .collect();

    if fs.system {
        let networked = policy.network.mode == purple_common::policy::NetworkMode::Filtered;
        let network_paths = SYSTEM_NETWORK_READ_ONLY
            .iter()
            .filter(|_| networked)
            .map(|p| (resolver_source(p), (*p).to_owned()));
        let system = system_paths().into_iter().map(|p| (p.clone(), p));
        for (source, path) in system.chain(network_paths) {
            let Ok(destination) = path.parse::<AbsPath>() else {
                continue;
            };
            // The policy's own bind at the same place wins.
            if user_destinations.contains(&&destination) {
                continue;
            }
            if let Ok((fd, _)) = open_checked("system path", &source, false) {
                opened.push(fd, destination, false, &source)?;
            }
        }
    }
    for (binds, writable, flag) in [
        (&fs.read_only, false, "--ro-bind"),
        (&fs.read_write, true, "--bind"),
    ] {
        for bind in binds {
            let (fd, _) = open_checked(flag, bind.source.as_str(), writable)?;
            opened.push(fd, bind.destination.clone(), writable, bind.source.as_str())?;
        }
    }
    if let Some(workspace) = &fs.workspace {
        let (fd, kind) = open_checked("--workspace", workspace.as_str(), true)?;
        if !matches!(kind, Kind::Dir) {
            return Err(HostPathError::WorkspaceNotDir {
                path: workspace.to_string(),
            });
        }
        opened.push(
            fd,
            AbsPath::from_static(WORKSPACE_PATH),
            true,
            workspace.as_str(),
        )?;
    }
    Ok(opened)
}

/// systemd-resolved's full list of upstream servers.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// Where the sandbox's `path` comes from: the host's own file, except that
/// a resolv.conf naming only loopback servers (systemd-resolved's stub
/// 127.0.0.53, a local dnsmasq) is useless in a sandbox, which cannot reach
/// the host's loopback: systemd-resolved's upstream list stands in when
/// there is one.
fn resolver_source(path: &str) -> String {
    if path != "/etc/resolv.conf" {
        return path.to_owned();
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if only_loopback_servers(&text) && std::path::Path::new(RESOLVED_UPSTREAM).is_file() {
        RESOLVED_UPSTREAM.to_owned()
    } else {
        path.to_owned()
    }
}

/// True when every `nameserver` line names a loopback address (and there
/// is at least one).
fn only_loopback_servers(resolv_conf: &str) -> bool {
    let servers: Vec<std::net::IpAddr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    !servers.is_empty() && servers.iter().all(std::net::IpAddr::is_loopback)
}

/// The fixed system list plus /etc directories matching the language
/// runtime prefixes (e.g. /etc/python3.11).
fn system_paths() -> Vec<String> {
    let mut paths: Vec<String> = SYSTEM_READ_ONLY.iter().map(|p| (*p).to_owned()).collect();
    if let Ok(entries) = std::fs::read_dir("/etc") {
        let mut extra: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| SYSTEM_ETC_PREFIXES.iter().any(|p| name.starts_with(p)))
            .map(|name| format!("/etc/{name}"))
            .collect();
        extra.sort();
        paths.extend(extra);
    }
    paths
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_only_resolver_is_replaced() {
        assert!(only_loopback_servers(
            "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
        ));
        assert!(only_loopback_servers("nameserver ::1\n"));
        assert!(!only_loopback_servers(
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\n"
        ));
        assert!(!only_loopback_servers("nameserver 10.255.255.53\n"));
        assert!(!only_loopback_servers("# nothing\n"));
        assert_eq!(resolver_source("/etc/hosts"), "/etc/hosts");
    }
}
