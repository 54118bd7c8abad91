//! The host side effects: running `nft` and `ip` (absolute paths, empty
//! environment, so nothing of netd's caller steers them) and writing
//! per-interface sysctls. Each function is one kernel-facing step and its
//! error names the step and the object.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::state::{self, HostLink, StateError, TableState};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{program} not found in /usr/sbin or /sbin (install {package})")]
    ToolMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("{step}: run {program}: {source}")]
    Spawn {
        step: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("{step} ({object}): {program} failed with {status}: {stderr}")]
    Failed {
        step: &'static str,
        object: String,
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{step}: write {path}: {source}")]
    Sysctl {
        step: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("duplicate the network namespace fd for {interface}: {source}")]
    Dup {
        interface: String,
        source: nix::Error,
    },
}

/// The programs netd runs, found once at start.
#[derive(Debug, Clone)]
pub struct Tools {
    nft: PathBuf,
    ip: PathBuf,
}

fn find(program: &'static str, package: &'static str) -> Result<PathBuf, HostError> {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .ok_or(HostError::ToolMissing { program, package })
}

struct Ran {
    stdout: String,
}

impl Tools {
    pub fn find() -> Result<Tools, HostError> {
        Ok(Tools {
            nft: find("nft", "nftables")?,
            ip: find("ip", "iproute2")?,
        })
    }

    fn run(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
        step: &'static str,
        object: &str,
    ) -> Result<Ran, HostError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .current_dir("/")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| HostError::Spawn {
            step,
            program: program.display().to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (the program died early) shows in its status.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(HostError::Failed {
                step,
                object: object.to_owned(),
                program: program.display().to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// Applies an nft script as one transaction (all of it or nothing).
    pub fn nft_apply(
        &self,
        step: &'static str,
        object: &str,
        script: &str,
    ) -> Result<(), HostError> {
        if script.is_empty() {
            return Ok(());
        }
        self.run(&self.nft, &["-f", "-"], Some(script), step, object)
            .map(|_| ())
    }

    /// netd's table, or None when it does not exist.
    pub fn nft_table(&self) -> Result<Option<TableState>, HostError> {
        let args = ["-j", "list", "table", crate::nft::FAMILY, crate::nft::TABLE];
        match self.run(&self.nft, &args, None, "read the nft table", "inet purple") {
            Ok(ran) => Ok(Some(state::parse_table(&ran.stdout)?)),
            Err(HostError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every host interface with its IPv4 addresses.
    pub fn links(&self) -> Result<Vec<HostLink>, HostError> {
        let ran = self.run(
            &self.ip,
            &["-j", "addr", "show"],
            None,
            "list host interfaces",
            "all",
        )?;
        Ok(state::parse_links(&ran.stdout)?)
    }

    /// Creates the veth pair: `interface` here, `peer` directly inside the
    /// network namespace `netns` (so it never exists in the host namespace,
    /// where the sandbox could not configure it anyway).
    pub fn create_veth(
        &self,
        interface: &str,
        peer: &str,
        netns: BorrowedFd<'_>,
    ) -> Result<(), HostError> {
        // `ip` opens the namespace by path; a dup has no FD_CLOEXEC, so the
        // child inherits exactly this one descriptor (netd is single
        // threaded: no other child is spawned while it is open).
        let inherited = nix::unistd::dup(netns.as_raw_fd()).map_err(|source| HostError::Dup {
            interface: interface.to_owned(),
            source,
        })?;
        // SAFETY: `inherited` was just returned by dup and is owned by no one else.
        let inherited =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(inherited) };
        let path = format!("/proc/self/fd/{}", inherited.as_raw_fd());
        let result = self.run(
            &self.ip,
            &[
                "link", "add", interface, "type", "veth", "peer", "name", peer, "netns", &path,
            ],
            None,
            "create the veth pair",
            interface,
        );
        drop(inherited);
        result.map(|_| ())
    }

    /// Names, addresses and brings up the host end, in one `ip -batch`.
    pub fn configure_host_end(
        &self,
        interface: &str,
        alias: &str,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), HostError> {
        let script = format!(
            "link set dev {interface} alias \"{alias}\"\n\
             addr add {gateway}/{prefix} dev {interface}\n\
             link set dev {interface} up\n"
        );
        self.run(
            &self.ip,
            &["-batch", "-"],
            Some(&script),
            "address and bring up the host end",
            interface,
        )
        .map(|_| ())
    }

    /// Sets `interfaces` down in one `ip -batch` (the names are netd's own,
    /// `pv` + 12 hex). Used when the rules were lost: a sandbox without its
    /// rules must lose its network, not keep it unfiltered.
    pub fn set_links_down(&self, interfaces: &[String]) -> Result<(), HostError> {
        if interfaces.is_empty() {
            return Ok(());
        }
        let script: String = interfaces
            .iter()
            .map(|i| format!("link set dev {i} down\n"))
            .collect();
        self.run(
            &self.ip,
            &["-force", "-batch", "-"],
            Some(&script),
            "set the sandboxes' host ends down",
            &interfaces.join(","),
        )
        .map(|_| ())
    }

    /// Deletes a host interface (and with it its peer). Ok(false) when it
    /// was already gone: the veth dies by itself with the sandbox's netns.
    pub fn delete_link(&self, interface: &str) -> Result<bool, HostError> {
        match self.run(
            &self.ip,
            &["link", "del", "dev", interface],
            None,
            "delete the veth",
            interface,
        ) {
            Ok(_) => Ok(true),
            Err(HostError::Failed { stderr, .. })
                if stderr.contains("Cannot find device") || stderr.contains("No such device") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Where the IPv6 sysctls live; absent on a host booted with ipv6.disable=1.
const IPV6_SYSCTLS: &str = "/proc/sys/net/ipv6/";

/// Writes one sysctl under /proc/sys. `path` is built from constants and a
/// validated interface name. An IPv6 sysctl that does not exist counts as
/// written: with ipv6.disable=1 the host has no IPv6 at all, which is what
/// netd's IPv6 settings ask for (an interface that vanished fails at the
/// IPv4 sysctls written next).
pub fn write_sysctl(step: &'static str, path: &str, value: &str) -> Result<(), HostError> {
    match std::fs::write(path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.starts_with(IPV6_SYSCTLS) => {
            Ok(())
        }
        Err(source) => Err(HostError::Sysctl {
            step,
            path: path.to_owned(),
            source,
        }),
    }
}

pub fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The per-interface settings of a host end, before it comes up: no IPv6 at
/// all (no link-local address, nothing to filter), no redirects, strict
/// reverse-path filtering, and route_localnet when the sandbox publishes
/// ports (so the host's 127.0.0.1:<port> can be DNATed out of this
/// interface; the input chain still drops everything new from it).
pub fn host_end_sysctls(interface: &str, route_localnet: bool) -> Vec<(String, &'static str)> {
    let mut v = vec![
        (
            format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"),
            "1",
        ),
        (
            format!("/proc/sys/net/ipv4/conf/{interface}/send_redirects"),
            "0",
        ),
        (
            format!("/proc/sys/net/ipv4/conf/{interface}/accept_redirects"),
            "0",
        ),
        (
            format!("/proc/sys/net/ipv4/conf/{interface}/rp_filter"),
            "1",
        ),
    ];
    if route_localnet {
        v.push((
            format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet"),
            "1",
        ));
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ipv6_sysctl_counts_as_written_an_ipv4_one_does_not() {
        // As on a host booted with ipv6.disable=1 (no such file).
        let v6 = "/proc/sys/net/ipv6/conf/pvnonexistent0/disable_ipv6";
        assert!(write_sysctl("test", v6, "1").is_ok());
        let v4 = "/proc/sys/net/ipv4/conf/pvnonexistent0/rp_filter";
        assert!(matches!(
            write_sysctl("test", v4, "1"),
            Err(HostError::Sysctl { .. })
        ));
    }
}
