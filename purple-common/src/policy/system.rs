//! The host paths that `filesystem.system = true` binds read-only.
//!
//! The list is what python3, sh and coreutils need to run unchanged on
//! Debian, Ubuntu, Fedora and Arch: the program and library trees, the
//! dynamic loader's cache, certificates, name-service switch and time zone.
//! Paths that a host lacks are skipped. /etc/passwd, /etc/group,
//! /etc/hostname and /etc/hosts are not here: purple-init writes small
//! synthesized ones, so no host account names leak in.

/// Directories and files bound read-only at the same path when present.
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/crypto-policies",
    "/etc/debian_version",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/inputrc",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/pki",
    "/etc/protocols",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
];

/// Bound read-only too when the sandbox has a filtered network: the host's
/// resolver configuration (a loopback resolver such as systemd-resolved's
/// 127.0.0.53 is not reachable from a sandbox; bind another file over it
/// with `--ro-bind FILE:/etc/resolv.conf`).
pub const SYSTEM_NETWORK_READ_ONLY: &[&str] = &["/etc/resolv.conf"];

/// Directory prefixes under /etc bound when present, matched by name
/// (`/etc/python3.11`, `/etc/perl`): language runtimes read their site
/// configuration from there.
pub const SYSTEM_ETC_PREFIXES: &[&str] = &["python3", "perl"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::AbsPath;

    #[test]
    fn system_paths_are_valid_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for p in SYSTEM_READ_ONLY {
            assert!(p.parse::<AbsPath>().is_ok(), "{p}");
            assert!(seen.insert(p), "{p} twice");
        }
    }
}
