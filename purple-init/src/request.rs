//! Receiving and re-validating the supervisor's request.
//!
//! The supervisor runs as the caller, so everything in the request is
//! untrusted: it is decoded with a size limit and version check, every value
//! is re-validated by decoding, the policy's cross-field rules are checked
//! again, and each attached fd is inspected here (type, filesystem, and
//! access *as the caller's real uid*) before it may become a mount.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::stat::{fstat, SFlag};
use purple_common::capability::Capability;
use purple_common::policy::{Policy, WORKSPACE_PATH};
use purple_common::protocol::{self, SandboxRequest, TransportError, MAX_ARGS, MAX_REQUEST_BYTES};
use purple_common::values::AbsPath;

use crate::admin::AdminConfig;
use crate::plan::InspectedBind;
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request did not arrive whole within {REQUEST_DEADLINE_SECS} s")]
    Stalled,
    #[error("reading the request: {0}")]
    Transport(#[from] TransportError),
    #[error("the request carries {fds} file descriptors but names {mounts} mounts")]
    FdCountMismatch { fds: usize, mounts: usize },
    #[error("mount {index} refers to fd {fd_index}, which is missing or used twice")]
    BadFdIndex { index: usize, fd_index: u32 },
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the command has {0} arguments; at most {MAX_ARGS} are allowed")]
    TooManyArgs(usize),
    #[error("a command argument contains a NUL byte")]
    NulInArgument,
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    #[error("{destination}: {why}")]
    BadSource { destination: AbsPath, why: String },
    #[error("{destination}: you cannot {access} {source_hint}")]
    AccessDenied {
        destination: AbsPath,
        access: &'static str,
        source_hint: String,
    },
    #[error("{destination}: inspecting the source failed at {step}: {errno}")]
    Inspect {
        destination: AbsPath,
        step: &'static str,
        errno: nix::Error,
    },
    #[error("capability {cap} is not allowed: it is not on the safe list, and the admin config ({config}) does not list it in [capabilities] allow_extra")]
    CapabilityNotAllowed { cap: Capability, config: String },
    #[error("{stream} (fd {fd}) is {what}; Purple hands the command only terminals, pipes, regular files and unix sockets as standard streams, because anything else could reach past the sandbox")]
    BadStandardStream {
        stream: &'static str,
        fd: i32,
        what: String,
    },
    #[error("capability {cap} can never be kept, whatever the admin config says: it would let the command remount its read-only binds and uncover the masked parts of /proc")]
    CapabilityNeverAllowed { cap: Capability },
}

/// How long purple-init waits for the whole request. The supervisor sends
/// it at once; a peer that stalls mid-frame must not hold a root process.
pub const REQUEST_DEADLINE_SECS: i64 = 10;

/// Reads one request from the supervisor's socket, within the deadline.
pub fn receive(socket: &OwnedFd) -> Result<(SandboxRequest, Vec<OwnedFd>), RequestError> {
    // Two bounds: SO_RCVTIMEO ends a stalled read with a clear refusal; a
    // peer that trickles one byte per read is ended by the alarm (SIGALRM's
    // default action), which bounds the whole exchange.
    nix::unistd::alarm::set(REQUEST_DEADLINE_SECS as u32 + 1);
    let deadline = nix::sys::time::TimeVal::new(REQUEST_DEADLINE_SECS, 0);
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimeout, &deadline)
        .map_err(|source| {
            RequestError::Transport(TransportError::Sys {
                step: "set receive timeout",
                source,
            })
        })?;
    let received =
        protocol::receive_message(socket.as_fd(), MAX_REQUEST_BYTES).map_err(|e| match e {
            TransportError::Sys {
                source: nix::errno::Errno::EAGAIN,
                ..
            } => RequestError::Stalled,
            other => RequestError::Transport(other),
        });
    nix::unistd::alarm::cancel();
    received
}

/// Everything the request asks for that this build cannot enforce is refused
/// here, before any side effect (fail closed).
pub fn check_enforceable(policy: &Policy) -> Result<(), RequestError> {
    crate::sandbox::syscall_filter::validate(&policy.syscalls)
        .map_err(|e| RequestError::InvalidPolicy(e.to_string()))?;
    Ok(())
}

/// Re-checks the request's own shape and the admin's bounds.
pub fn validate(
    request: &SandboxRequest,
    fds: &[OwnedFd],
    admin: &AdminConfig,
    config_path: &str,
) -> Result<(), RequestError> {
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(RequestError::EmptyCommand);
    }
    if request.argv.len() > MAX_ARGS {
        return Err(RequestError::TooManyArgs(request.argv.len()));
    }
    if request.argv.iter().any(|a| a.contains('\0')) {
        return Err(RequestError::NulInArgument);
    }
    request.policy.validate().map_err(|problems| {
        RequestError::InvalidPolicy(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    for mount in &request.mounts {
        purple_common::policy::check_destination(&mount.destination).map_err(|why| {
            RequestError::BadSource {
                destination: mount.destination.clone(),
                why,
            }
        })?;
    }
    if fds.len() != request.mounts.len() {
        return Err(RequestError::FdCountMismatch {
            fds: fds.len(),
            mounts: request.mounts.len(),
        });
    }
    let mut used = vec![false; fds.len()];
    for (index, mount) in request.mounts.iter().enumerate() {
        let slot = usize::try_from(mount.fd_index)
            .ok()
            .and_then(|i| used.get_mut(i));
        match slot {
            Some(slot) if !*slot => *slot = true,
            _ => {
                return Err(RequestError::BadFdIndex {
                    index,
                    fd_index: mount.fd_index,
                })
            }
        }
    }
    for cap in request.policy.capabilities.kept() {
        if cap.is_never_grantable() {
            return Err(RequestError::CapabilityNeverAllowed { cap });
        }
        if !cap.is_safe_in_sandbox() && !admin.capabilities.allow_extra.contains(&cap) {
            return Err(RequestError::CapabilityNotAllowed {
                cap,
                config: config_path.to_owned(),
            });
        }
    }
    check_enforceable(&request.policy)
}

/// Filesystems whose host instance must never appear in a sandbox: they
/// expose the host's processes, kernel or devices.
const FORBIDDEN_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x1cd1, "devpts"),
    (0x6e73_6673, "nsfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x6165_676c, "pstore"),
    (0x1980_0202, "mqueue"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x0187, "autofs"),
    (0x6759_6969, "rpc_pipefs"),
    (0x6e66_7364, "nfsd"),
];

/// Inspects every attached fd: a directory or regular file, not on a
/// kernel pseudo-filesystem, and readable (writable for read-write binds)
/// by the caller's real uid (any for a root caller). The workspace must be
/// a directory.
pub fn inspect_binds(
    request: &SandboxRequest,
    fds: &[OwnedFd],
    caller_uid: u32,
) -> Result<Vec<InspectedBind>, RequestError> {
    // Read once: the host's mount table, to see what lies below each bind.
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| RequestError::Inspect {
            destination: AbsPath::from_static("/"),
            step: "read /proc/self/mountinfo",
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    let mountinfo = mountinfo.as_str();
    let workspace = AbsPath::from_static(WORKSPACE_PATH);
    let mut binds = Vec::with_capacity(request.mounts.len());
    for mount in &request.mounts {
        let fd_index = mount.fd_index as usize;
        let Some(fd) = fds.get(fd_index) else {
            return Err(RequestError::BadFdIndex {
                index: fd_index,
                fd_index: mount.fd_index,
            });
        };
        let destination = mount.destination.clone();
        let inspect = |step: &'static str| {
            let destination = destination.clone();
            move |errno| RequestError::Inspect {
                destination,
                step,
                errno,
            }
        };
        let stat = fstat(fd.as_raw_fd()).map_err(inspect("fstat"))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        let is_dir = match kind {
            SFlag::S_IFDIR => true,
            SFlag::S_IFREG => false,
            _ => {
                return Err(RequestError::BadSource {
                    destination,
                    why: format!("{} is not a directory or regular file", mount.source_hint),
                })
            }
        };
        if destination == workspace && !is_dir {
            return Err(RequestError::BadSource {
                destination,
                why: format!("the workspace {} is not a directory", mount.source_hint),
            });
        }
        let fs = nix::sys::statfs::fstatfs(fd).map_err(inspect("fstatfs"))?;
        let fs_type = magic(&fs);
        if let Some((_, name)) = FORBIDDEN_FILESYSTEMS
            .iter()
            .find(|(magic, _)| *magic == fs_type)
        {
            return Err(RequestError::BadSource {
                destination,
                why: format!(
                    "{} is on the host's {name} filesystem, which would expose the host; it cannot be bound",
                    mount.source_hint
                ),
            });
        }
        // The clone is recursive, so whatever is mounted below a bound
        // directory comes along: none of it may be a forbidden filesystem.
        if is_dir {
            if let Some((mount_point, fstype)) =
                forbidden_submount(fd, mountinfo).map_err(inspect("find the bind's mounts"))?
            {
                return Err(RequestError::BadSource {
                    destination,
                    why: format!(
                        "{} has the host's {fstype} filesystem mounted below it (at {mount_point}), which would expose the host; bind a directory without it",
                        mount.source_hint
                    ),
                });
            }
        }
        // Checked as the caller's real uid. A root caller may bind anything
        // (it could read it anyway); inside, the sandbox's own uid applies.
        let mode = if mount.writable {
            libc::R_OK | libc::W_OK
        } else {
            libc::R_OK
        };
        if caller_uid != 0 && sys::real_user_may_access(fd.as_fd(), mode).is_err() {
            return Err(RequestError::AccessDenied {
                destination,
                access: if mount.writable {
                    "read and write"
                } else {
                    "read"
                },
                source_hint: mount.source_hint.clone(),
            });
        }
        binds.push(InspectedBind {
            fd_index,
            destination,
            writable: mount.writable,
            is_dir,
            source_hint: mount.source_hint.clone(),
        });
    }
    Ok(binds)
}

/// A filesystem's magic number (its C type differs between architectures).
#[allow(clippy::unnecessary_cast)]
fn magic(fs: &nix::sys::statfs::Statfs) -> i64 {
    fs.filesystem_type().0 as i64
}

/// The caller's fds 0-2 become the command's. A directory or O_PATH fd
/// there would let the command walk the host tree (`openat(0, "..")`), an
/// inet socket would be a network outside the sandbox's namespace, a
/// /proc file another process's memory: only what a standard stream is for
/// passes.
pub fn check_standard_streams() -> Result<(), RequestError> {
    for (fd, stream) in [
        (0, "standard input"),
        (1, "standard output"),
        (2, "standard error"),
    ] {
        let refuse = |what: String| Err(RequestError::BadStandardStream { stream, fd, what });
        // SAFETY: fds 0-2 are open (hardening made sure) and stay open for
        // the whole of purple-init; borrowing them here closes nothing.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
        if flags & libc::O_PATH != 0 {
            return refuse("an O_PATH descriptor".into());
        }
        let Ok(stat) = fstat(fd) else {
            return refuse("not inspectable".into());
        };
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFCHR | SFlag::S_IFIFO => {}
            SFlag::S_IFREG => {
                let fs_type = nix::sys::statfs::fstatfs(borrowed)
                    .map(|fs| magic(&fs))
                    .unwrap_or(0);
                if let Some((_, name)) = FORBIDDEN_FILESYSTEMS
                    .iter()
                    .find(|(magic, _)| *magic == fs_type)
                {
                    return refuse(format!("a file on the host's {name} filesystem"));
                }
            }
            SFlag::S_IFSOCK => {
                let mut domain: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: domain and len are valid for writes of the sizes passed.
                let ret = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_DOMAIN,
                        (&mut domain as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                if ret != 0 || domain != libc::AF_UNIX {
                    return refuse("a network socket".into());
                }
            }
            SFlag::S_IFDIR => return refuse("a directory".into()),
            SFlag::S_IFBLK => return refuse("a block device".into()),
            _ => return refuse("a special descriptor (eventfd, pidfd, ...)".into()),
        }
    }
    Ok(())
}

/// The first mount at or below the directory `fd` whose filesystem is on
/// the forbidden list: `(mount point, filesystem type)`. Not knowing the
/// directory's path is an error, not a pass.
fn forbidden_submount(
    fd: &OwnedFd,
    mountinfo: &str,
) -> Result<Option<(String, String)>, nix::errno::Errno> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(forbidden_below(&path.to_string_lossy(), mountinfo))
}

/// `forbidden_submount` on a path and mountinfo text (unit-tested).
fn forbidden_below(dir: &str, mountinfo: &str) -> Option<(String, String)> {
    let prefix = dir.trim_end_matches('/');
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = unescape_mountinfo(left.split(' ').nth(4)?);
        let fstype = right.split(' ').next()?;
        let below = mount_point == dir
            || prefix.is_empty()
            || mount_point
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        let forbidden = FORBIDDEN_FILESYSTEMS
            .iter()
            .any(|(_, name)| *name == fstype);
        (below && forbidden).then(|| (mount_point, fstype.to_owned()))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use purple_common::policy::NetworkMode;
    use purple_common::protocol::MountRequest;

    fn request(argv: &[&str]) -> SandboxRequest {
        SandboxRequest {
            policy: Policy::default(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            mounts: Vec::new(),
            user_name: "alice".into(),
            audit_log: false,
        }
    }

    fn check(req: &SandboxRequest) -> Result<(), RequestError> {
        validate(req, &[], &AdminConfig::default(), "/etc/purple/purple.toml")
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:5 / /proc rw,nosuid - proc proc rw
24 22 0:6 / /home/me rw - ext4 /dev/vdb rw
25 24 0:7 / /home/me/my\\040proc rw - proc proc rw
26 22 0:8 / /srv rw - tmpfs tmpfs rw
";

    #[test]
    fn pseudo_filesystems_below_a_bind_are_found() {
        assert_eq!(
            forbidden_below("/", MOUNTINFO),
            Some(("/proc".into(), "proc".into()))
        );
        assert_eq!(
            forbidden_below("/home", MOUNTINFO),
            Some(("/home/me/my proc".into(), "proc".into()))
        );
        assert_eq!(forbidden_below("/srv", MOUNTINFO), None);
        assert_eq!(forbidden_below("/pro", MOUNTINFO), None);
        assert_eq!(
            forbidden_below("/proc", MOUNTINFO),
            Some(("/proc".into(), "proc".into()))
        );
    }

    #[test]
    fn a_plain_request_passes() {
        assert!(check(&request(&["true"])).is_ok());
    }

    #[test]
    fn bad_commands_are_refused() {
        assert!(matches!(
            check(&request(&[])),
            Err(RequestError::EmptyCommand)
        ));
        assert!(matches!(
            check(&request(&[""])),
            Err(RequestError::EmptyCommand)
        ));
        assert!(matches!(
            check(&request(&["a\0b"])),
            Err(RequestError::NulInArgument)
        ));
    }

    #[test]
    fn mounts_must_match_fds() {
        let mut req = request(&["true"]);
        req.mounts.push(MountRequest {
            fd_index: 0,
            destination: AbsPath::from_static("/opt"),
            writable: false,
            source_hint: "/opt".into(),
        });
        assert!(matches!(
            check(&req),
            Err(RequestError::FdCountMismatch { .. })
        ));
    }

    #[test]
    fn mount_destinations_are_rechecked() {
        for dest in ["/", "/proc", "/proc/sys", "/dev", "/dev/x"] {
            let mut req = request(&["true"]);
            req.mounts.push(MountRequest {
                fd_index: 0,
                destination: dest.parse().unwrap_or_else(|_| unreachable!()),
                writable: false,
                source_hint: "/x".into(),
            });
            assert!(
                matches!(check(&req), Err(RequestError::BadSource { .. })),
                "{dest}"
            );
        }
    }

    #[test]
    fn unenforceable_requests_fail_closed() {
        let mut req = request(&["true"]);
        req.policy.resources.memory = Some("128M".parse().unwrap_or_else(|_| unreachable!()));
        assert!(check(&req).is_ok(), "memory limits are enforced now");
        let mut req = request(&["true"]);
        req.policy.network.mode = NetworkMode::Filtered;
        assert!(check(&req).is_ok(), "purple-netd enforces it");
        let mut req = request(&["true"]);
        req.policy
            .syscalls
            .deny
            .push("ptrace".parse().unwrap_or_else(|_| unreachable!()));
        assert!(check(&req).is_ok());
        let mut req = request(&["true"]);
        req.policy
            .syscalls
            .allow
            .push("mount".parse().unwrap_or_else(|_| unreachable!()));
        assert!(matches!(check(&req), Err(RequestError::InvalidPolicy(_))));
    }

    #[test]
    fn unsafe_capabilities_need_the_admin() {
        let mut req = request(&["true"]);
        req.policy.capabilities.add.push(Capability::SysAdmin);
        assert!(matches!(
            check(&req),
            Err(RequestError::CapabilityNeverAllowed { .. })
        ));
        let mut admin = AdminConfig::default();
        admin.capabilities.allow_extra.push(Capability::SysAdmin);
        assert!(matches!(
            validate(&req, &[], &admin, "x"),
            Err(RequestError::CapabilityNeverAllowed { .. })
        ));
        req.policy.capabilities.drop.push(Capability::SysAdmin);
        assert!(check(&req).is_ok());
        let mut req = request(&["true"]);
        req.policy.capabilities.add.push(Capability::NetRaw);
        assert!(matches!(
            check(&req),
            Err(RequestError::CapabilityNotAllowed { .. })
        ));
        admin.capabilities.allow_extra.push(Capability::NetRaw);
        assert!(validate(&req, &[], &admin, "x").is_ok());
    }

    #[test]
    fn invalid_policies_from_the_wire_are_refused() {
        let mut req = request(&["true"]);
        req.policy
            .filesystem
            .read_only
            .push(purple_common::policy::Bind {
                source: AbsPath::from_static("/x"),
                destination: AbsPath::from_static("/proc/sys"),
            });
        assert!(matches!(check(&req), Err(RequestError::InvalidPolicy(_))));
    }
}
