//! Linux capability names, and which of them are safe to keep inside the
//! sandbox's own user namespace.
//!
//! A capability kept in the sandbox only acts on objects owned by the
//! sandbox's user namespace (its mounts, its network namespace, the single
//! mapped uid/gid). Some of them still widen the kernel surface a lot
//! (CAP_SYS_ADMIN unlocks mount, CAP_NET_ADMIN all of netlink, CAP_SYS_PTRACE
//! the other sandbox processes), so only a reviewed list is allowed without
//! the admin's consent. docs/capabilities.md gives the reason for each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::values::ValueError;

macro_rules! capabilities {
    ($($variant:ident = $number:expr => $name:literal,)*) => {
        /// One Linux capability, by its number in `linux/capability.h`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum Capability {
            $($variant,)*
        }

        impl Capability {
            pub const ALL: &'static [Capability] = &[$(Capability::$variant,)*];

            /// The kernel's number for this capability.
            pub fn number(self) -> u8 {
                match self {
                    $(Capability::$variant => $number,)*
                }
            }

            /// The canonical name, e.g. `CAP_NET_BIND_SERVICE`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Capability::$variant => $name,)*
                }
            }
        }
    };
}

capabilities! {
    Chown = 0 => "CAP_CHOWN",
    DacOverride = 1 => "CAP_DAC_OVERRIDE",
    DacReadSearch = 2 => "CAP_DAC_READ_SEARCH",
    Fowner = 3 => "CAP_FOWNER",
    Fsetid = 4 => "CAP_FSETID",
    Kill = 5 => "CAP_KILL",
    Setgid = 6 => "CAP_SETGID",
    Setuid = 7 => "CAP_SETUID",
    Setpcap = 8 => "CAP_SETPCAP",
    LinuxImmutable = 9 => "CAP_LINUX_IMMUTABLE",
    NetBindService = 10 => "CAP_NET_BIND_SERVICE",
    NetBroadcast = 11 => "CAP_NET_BROADCAST",
    NetAdmin = 12 => "CAP_NET_ADMIN",
    NetRaw = 13 => "CAP_NET_RAW",
    IpcLock = 14 => "CAP_IPC_LOCK",
    IpcOwner = 15 => "CAP_IPC_OWNER",
    SysModule = 16 => "CAP_SYS_MODULE",
    SysRawio = 17 => "CAP_SYS_RAWIO",
    SysChroot = 18 => "CAP_SYS_CHROOT",
    SysPtrace = 19 => "CAP_SYS_PTRACE",
    SysPacct = 20 => "CAP_SYS_PACCT",
    SysAdmin = 21 => "CAP_SYS_ADMIN",
    SysBoot = 22 => "CAP_SYS_BOOT",
    SysNice = 23 => "CAP_SYS_NICE",
    SysResource = 24 => "CAP_SYS_RESOURCE",
    SysTime = 25 => "CAP_SYS_TIME",
    SysTtyConfig = 26 => "CAP_SYS_TTY_CONFIG",
    Mknod = 27 => "CAP_MKNOD",
    Lease = 28 => "CAP_LEASE",
    AuditWrite = 29 => "CAP_AUDIT_WRITE",
    AuditControl = 30 => "CAP_AUDIT_CONTROL",
    Setfcap = 31 => "CAP_SETFCAP",
    MacOverride = 32 => "CAP_MAC_OVERRIDE",
    MacAdmin = 33 => "CAP_MAC_ADMIN",
    Syslog = 34 => "CAP_SYSLOG",
    WakeAlarm = 35 => "CAP_WAKE_ALARM",
    BlockSuspend = 36 => "CAP_BLOCK_SUSPEND",
    AuditRead = 37 => "CAP_AUDIT_READ",
    Perfmon = 38 => "CAP_PERFMON",
    Bpf = 39 => "CAP_BPF",
    CheckpointRestore = 40 => "CAP_CHECKPOINT_RESTORE",
}

impl Capability {
    /// Capabilities a caller may keep without the admin's consent. Each acts
    /// only on the sandbox's own user namespace and single mapped id, and
    /// none of them opens a new kernel subsystem to the workload.
    pub const SAFE_IN_SANDBOX: &'static [Capability] = &[
        Capability::Chown,
        Capability::DacOverride,
        Capability::DacReadSearch,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::Setgid,
        Capability::Setuid,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::AuditWrite,
        Capability::Setfcap,
    ];

    pub fn is_safe_in_sandbox(self) -> bool {
        Self::SAFE_IN_SANDBOX.contains(&self)
    }

    /// Capabilities no policy may keep, even with the admin's consent. The
    /// sandbox's mounts are owned by its own user namespace, so
    /// CAP_SYS_ADMIN there could remount read-only binds writable and
    /// uncover the /proc masks.
    pub const NEVER_GRANTABLE: &'static [Capability] = &[Capability::SysAdmin];

    pub fn is_never_grantable(self) -> bool {
        Self::NEVER_GRANTABLE.contains(&self)
    }
}

impl FromStr for Capability {
    type Err = ValueError;

    /// Accepts `CAP_NET_BIND_SERVICE`, `cap_net_bind_service` and `NET_BIND_SERVICE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        Capability::ALL
            .iter()
            .copied()
            .find(|c| c.name() == full)
            .ok_or_else(|| ValueError(format!("unknown capability {s:?}")))
    }
}

impl TryFrom<String> for Capability {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Capability> for String {
    fn from(c: Capability) -> String {
        c.name().to_owned()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(cap.name().parse::<Capability>(), Ok(*cap));
        }
        assert_eq!(
            "net_bind_service".parse::<Capability>(),
            Ok(Capability::NetBindService)
        );
        assert!("CAP_FLY".parse::<Capability>().is_err());
    }

    #[test]
    fn numbers_are_dense() {
        for (i, cap) in Capability::ALL.iter().enumerate() {
            assert_eq!(usize::from(cap.number()), i);
        }
    }

    #[test]
    fn dangerous_capabilities_are_not_safe() {
        for cap in [
            Capability::SysAdmin,
            Capability::NetAdmin,
            Capability::SysPtrace,
            Capability::SysModule,
        ] {
            assert!(!cap.is_safe_in_sandbox());
        }
    }
}
