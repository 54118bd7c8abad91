//! Checks that a descriptor purple-init sent is a network namespace other
//! than netd's own: creating the sandbox's `eth0` in the host namespace (or
//! in something that is not a namespace at all) must be refused before any
//! interface exists.

use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the request carries {0} file descriptors; an attach carries exactly one (the sandbox's network namespace)")]
    FdCount(usize),
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::Error,
    },
    #[error("the descriptor is not a namespace (NS_GET_NSTYPE: {0})")]
    NotNamespace(nix::Error),
    #[error("the descriptor is a namespace of type {0:#x}, not a network namespace")]
    WrongType(i32),
    #[error("the descriptor is purple-netd's own network namespace (the host's); a sandbox needs its own")]
    HostNamespace,
}

/// `_IO(0xb7, 0x3)` from linux/nsfs.h: the CLONE_NEW* type of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The identity of a network namespace: (st_dev, st_ino) of its nsfs file.
pub type NetnsId = (u64, u64);

fn identity(stat: &nix::sys::stat::FileStat) -> NetnsId {
    (stat.st_dev, stat.st_ino)
}

/// The namespace's identity, after checking it is a network namespace and
/// not netd's own.
pub fn check_netns(fd: BorrowedFd<'_>) -> Result<NetnsId, NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's
    // namespace type; an fd that is not an nsfs file fails with ENOTTY.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(NetnsError::NotNamespace(nix::Error::last()));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::WrongType(kind));
    }
    let theirs = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|source| NetnsError::Sys {
        step: "fstat the namespace fd",
        source,
    })?;
    let ours = nix::sys::stat::stat("/proc/self/ns/net").map_err(|source| NetnsError::Sys {
        step: "stat /proc/self/ns/net",
        source,
    })?;
    if identity(&theirs) == identity(&ours) {
        return Err(NetnsError::HostNamespace);
    }
    Ok(identity(&theirs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn own_namespace_and_other_files_are_refused() {
        let own = std::fs::File::open("/proc/self/ns/net").unwrap();
        assert!(matches!(
            check_netns(own.as_fd()),
            Err(NetnsError::HostNamespace)
        ));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(matches!(
            check_netns(file.as_fd()),
            Err(NetnsError::NotNamespace(_))
        ));
        if let Ok(uts) = std::fs::File::open("/proc/self/ns/uts") {
            assert!(matches!(
                check_netns(uts.as_fd()),
                Err(NetnsError::WrongType(_))
            ));
        }
    }
}
