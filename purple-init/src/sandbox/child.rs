//! The sandbox's first process, from clone to the moment it becomes the
//! PID 1 reaper: identity, root filesystem, hostname, loopback, session.
//!
//! It runs inside the new user namespace with full capabilities *there* and
//! none on the host. Each step is one function; the order is the contract.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use purple_common::values::AbsPath;

use super::mounts::{self, fail, MountError, MountResult};
use super::{exit_child, pid1, ChildMessage};
use crate::cgroup::layout::{check_membership, Membership};
use crate::plan::{MountStep, Mountpoint, Plan, RootEntry};
use crate::sys;

const MOUNT_ATTR_RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
const MOUNT_ATTR_NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
const MOUNT_ATTR_NODEV: u64 = libc::MOUNT_ATTR_NODEV;
const MOUNT_ATTR_NOEXEC: u64 = libc::MOUNT_ATTR_NOEXEC;

/// Device nodes bound from the host's /dev; all are harmless to share
/// (no storage, no kernel memory, no host terminals except the caller's
/// own controlling tty, which the new session cuts off).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// /proc files hidden behind /dev/null: kernel memory, key and timer
/// internals, and the magic SysRq trigger.
pub const MASKED_PROC_FILES: &[&str] = &[
    "kcore",
    "kallsyms",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "config.gz",
];
/// /proc directories hidden behind an empty read-only tmpfs: hardware and
/// firmware interfaces.
pub const MASKED_PROC_DIRS: &[&str] = &["acpi", "scsi", "asound", "firmware", "driver"];
/// /proc directories bound read-only over themselves: kernel tunables.
pub const READ_ONLY_PROC_DIRS: &[&str] = &["sys", "irq", "bus", "fs"];

/// The child's whole life: set up, then become PID 1. Never returns.
pub fn run(
    plan: &Plan,
    trees: Vec<OwnedFd>,
    filters: &super::Filters,
    membership: &[Membership],
    sync: OwnedFd,
    status: OwnedFd,
    net: Option<OwnedFd>,
) -> ! {
    if let Err(e) = set_up(plan, &trees, membership, &sync, &status, net.as_ref()) {
        ChildMessage::SetupFailed {
            step: e.step.to_owned(),
            detail: e.detail,
        }
        .send(&status);
        exit_child(1);
    }
    drop(trees);
    drop(sync);
    drop(net);
    pid1::run(plan, filters, status)
}

#[derive(Debug)]
pub struct StepError {
    pub step: &'static str,
    pub detail: String,
}

impl From<MountError> for StepError {
    fn from(e: MountError) -> Self {
        StepError {
            step: e.step,
            detail: e.to_string(),
        }
    }
}

fn step_err(step: &'static str) -> impl FnOnce(Errno) -> StepError {
    move |errno| StepError {
        step,
        detail: errno.desc().to_owned(),
    }
}

fn set_up(
    plan: &Plan,
    trees: &[OwnedFd],
    membership: &[Membership],
    sync: &OwnedFd,
    status: &OwnedFd,
    net: Option<&OwnedFd>,
) -> Result<(), StepError> {
    // Die with purple-init: set before the sync read, so that a parent that
    // dies at any moment from here on either signals us or leaves EOF.
    set_parent_death_signal()?;
    // First, so that purple-netd works while this process builds its root:
    // the network namespace for the filtered network's veth.
    if let Some(channel) = net {
        super::net_channel::send_netns(channel)
            .map_err(step_err("send the network namespace to purple-init"))?;
    }
    // The id maps exist only once init has written them.
    wait_for(sync, super::RELEASED, "wait for id maps")?;
    // Switch to the mapped ids now, keeping this namespace's capabilities,
    // so nothing below runs as host root (kuid 0) on host files.
    become_sandbox_identity(plan)?;
    // The uid change cleared the parent-death signal: arm it again, then
    // make sure purple-init did not die in between.
    set_parent_death_signal()?;
    if super::init_is_gone(status) {
        exit_child(1);
    }
    // The filtered network's interface comes later (purple-netd makes it
    // while the root is built): IPv6 off for every interface this network
    // namespace will have, while the host's /proc (whose net sysctls are
    // this namespace's) is still here. purple-netd drops IPv6 on the host
    // end anyway; this keeps the sandbox from even trying.
    if net.is_some() {
        disable_ipv6()?;
    }
    // Keyrings are not namespaced: without this the command could read and
    // plant keys in the caller's session keyring (tokens, Kerberos tickets).
    join_new_session_keyring()?;
    // Before the first mount: nothing done below may propagate to the host.
    make_mounts_private()?;
    let root = mount_new_root()?;
    // Synthesized files go first, while the root is only Purple's tmpfs:
    // no path can cross into a host bind yet.
    write_root_entries(root.as_fd(), &plan.root_entries)?;
    mount_plan(root.as_fd(), &plan.mounts, trees)?;
    build_dev(root.as_fd(), plan.dev_shm_bytes)?;
    // proc must be mounted while the host's /proc is still visible in this
    // mount namespace (the kernel's mount_too_revealing check).
    build_proc(root.as_fd())?;
    // Again, over the finished tree: every mount in it, however it got
    // there, must be private before anything else can happen in it.
    make_tree_private(root.as_fd())?;
    make_read_only(root.as_fd(), "/")?;
    pivot_into(root)?;
    set_hostname(&plan.hostname)?;
    sys::loopback_up().map_err(step_err("loopback up"))?;
    // A new session has no controlling terminal: the workload cannot use
    // TIOCSTI to type into the caller's terminal, nor get its job signals.
    nix::unistd::setsid().map_err(step_err("setsid"))?;
    // Last, before this process becomes PID 1 and forks the command: init
    // says the sandbox cgroup holds it (v1 moves it while the root was being
    // built); check that from /proc, then make that cgroup the root of a new
    // cgroup namespace.
    wait_for(sync, super::PLACED, "wait for the cgroup")?;
    // The filtered network's end in here: address, up, default route. The
    // workload will hold no capability in this namespace to change it.
    if let Some(channel) = net {
        configure_interface(channel)?;
    }
    enter_cgroup_namespace(membership)?;
    Ok(())
}

fn disable_ipv6() -> Result<(), StepError> {
    for scope in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
        match std::fs::write(&path, "1") {
            Ok(()) => {}
            // A kernel without IPv6 (ipv6.disable=1) has nothing to disable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StepError {
                    step: "disable IPv6 in the sandbox's network namespace",
                    detail: format!("{path}: {e}"),
                })
            }
        }
    }
    Ok(())
}

fn configure_interface(channel: &OwnedFd) -> Result<(), StepError> {
    let config = super::net_channel::receive_config(channel)
        .map_err(step_err("receive the network address from purple-init"))?;
    sys::set_ipv4_address(&config.interface, config.address, config.prefix_len)
        .map_err(step_err("set the sandbox interface's address"))?;
    sys::interface_up(&config.interface).map_err(step_err("bring the sandbox interface up"))?;
    sys::add_default_route(config.gateway).map_err(step_err("add the default route"))
}

/// Checks /proc/self/cgroup against the sandbox cgroup (every controller
/// that limits it), then unshares the cgroup namespace so the sandbox sees
/// its own cgroup as `/` and nothing of the host's tree. With no cgroup
/// (best-effort mode on a host without one) only the unshare happens.
fn enter_cgroup_namespace(membership: &[Membership]) -> Result<(), StepError> {
    if !membership.is_empty() {
        let text = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| StepError {
            step: "cgroup membership check",
            detail: format!("reading /proc/self/cgroup: {e}"),
        })?;
        check_membership(&text, membership).map_err(|detail| StepError {
            step: "cgroup membership check",
            detail,
        })?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(step_err("unshare the cgroup namespace"))
}

fn set_parent_death_signal() -> Result<(), StepError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(step_err("prctl PR_SET_PDEATHSIG"))
}

/// Reads one byte from purple-init; it must be `expected`. EOF means init
/// is gone: there is nothing to set up for.
fn wait_for(sync: &OwnedFd, expected: u8, step: &'static str) -> Result<(), StepError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(sync), &mut byte) {
            Ok(1) if byte[0] == expected => return Ok(()),
            Ok(1) => {
                return Err(StepError {
                    step,
                    detail: format!("unexpected byte {} from purple-init", byte[0]),
                })
            }
            Ok(_) => exit_child(1),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(step_err(step)(errno)),
        }
    }
}

fn become_sandbox_identity(plan: &Plan) -> Result<(), StepError> {
    use nix::unistd::{setresgid, setresuid, Gid, Uid};
    nix::sys::prctl::set_keepcaps(true).map_err(step_err("prctl PR_SET_KEEPCAPS"))?;
    let gid = Gid::from_raw(plan.identity.gid);
    let uid = Uid::from_raw(plan.identity.uid);
    setresgid(gid, gid, gid).map_err(step_err("setresgid"))?;
    setresuid(uid, uid, uid).map_err(step_err("setresuid"))?;
    // A uid change clears the effective set; the permitted set was kept.
    let permitted = caps::read(None, caps::CapSet::Permitted).map_err(|e| StepError {
        step: "read capabilities",
        detail: e.to_string(),
    })?;
    caps::set(None, caps::CapSet::Effective, &permitted).map_err(|e| StepError {
        step: "raise effective capabilities",
        detail: e.to_string(),
    })?;
    nix::sys::prctl::set_keepcaps(false).map_err(step_err("prctl PR_SET_KEEPCAPS"))
}

fn join_new_session_keyring() -> Result<(), StepError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NULL name joins a new anonymous session keyring;
    // no pointer is dereferenced.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if ret < 0 {
        return Err(step_err("join a new session keyring")(Errno::last()));
    }
    Ok(())
}

fn make_mounts_private() -> Result<(), StepError> {
    sys::mount_setattr(
        sys::cwd(),
        "/",
        libc::AT_RECURSIVE as libc::c_uint,
        0,
        0,
        libc::MS_PRIVATE,
    )
    .map_err(step_err("make mounts private"))
}

fn make_tree_private(root: std::os::fd::BorrowedFd<'_>) -> Result<(), StepError> {
    sys::mount_setattr(
        root,
        "",
        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        0,
        0,
        libc::MS_PRIVATE,
    )
    .map_err(step_err("make the new root private"))
}

/// Mounts the new root (a small tmpfs) on /tmp of the old tree and returns
/// a descriptor of it. Everything is then built beneath that descriptor.
fn mount_new_root() -> MountResult<OwnedFd> {
    let root = mounts::new_tmpfs(1 << 20, 0o755, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "/")?;
    let staging = sys::openat2(
        sys::cwd(),
        "/tmp",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .map_err(fail("open staging directory", "/tmp"))?;
    let root_path = AbsPath::from_static("/");
    mounts::attach(&root, &staging, &root_path)?;
    sys::openat2(
        sys::cwd(),
        "/tmp",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .map_err(fail("open new root", "/"))
}

fn write_root_entries(root: std::os::fd::BorrowedFd<'_>, entries: &[RootEntry]) -> MountResult<()> {
    for entry in entries {
        match entry {
            RootEntry::File { path, contents } => mounts::write_file(root, path, contents)?,
            RootEntry::Symlink { path, target } => mounts::symlink(root, path, target)?,
        }
    }
    Ok(())
}

fn mountpoint(
    root: std::os::fd::BorrowedFd<'_>,
    path: &AbsPath,
    kind: Mountpoint,
) -> MountResult<OwnedFd> {
    match kind {
        Mountpoint::CreateDir => mounts::ensure_dir(root, path),
        Mountpoint::CreateFile => mounts::ensure_file(root, path),
        Mountpoint::MustExist => mounts::open_beneath(root, path),
    }
}

fn mount_plan(
    root: std::os::fd::BorrowedFd<'_>,
    steps: &[MountStep],
    trees: &[OwnedFd],
) -> MountResult<()> {
    for step in steps {
        match step {
            MountStep::Bind {
                fd_index,
                destination,
                mountpoint: kind,
                ..
            } => {
                let tree = trees.get(*fd_index).ok_or_else(|| MountError {
                    step: "find bind source",
                    path: destination.to_string(),
                    errno: Errno::EBADF,
                })?;
                let target = mountpoint(root, destination, *kind)?;
                mounts::attach(tree, &target, destination)?;
            }
            MountStep::Tmpfs {
                destination,
                size_bytes,
                mode,
                mountpoint: kind,
            } => {
                let tmpfs = mounts::new_tmpfs(
                    *size_bytes,
                    *mode,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    destination.as_str(),
                )?;
                let target = mountpoint(root, destination, *kind)?;
                mounts::attach(&tmpfs, &target, destination)?;
            }
        }
    }
    Ok(())
}

fn abs(s: &str) -> MountResult<AbsPath> {
    s.parse().map_err(|_| MountError {
        step: "path",
        path: s.to_owned(),
        errno: Errno::EINVAL,
    })
}

/// A minimal /dev: a small tmpfs with the harmless host devices bound in,
/// a private devpts instance, /dev/shm, and the usual links.
fn build_dev(root: std::os::fd::BorrowedFd<'_>, shm_bytes: u64) -> MountResult<()> {
    let dev = abs("/dev")?;
    let tmpfs = mounts::new_tmpfs(
        64 << 10,
        0o755,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        "/dev",
    )?;
    let target = mounts::ensure_dir(root, &dev)?;
    mounts::attach(&tmpfs, &target, &dev)?;
    for name in DEVICES {
        let path = abs(&format!("/dev/{name}"))?;
        let node = mounts::clone_tree(sys::cwd(), &format!("/dev/{name}"), false)?;
        mounts::set_attrs(
            node.as_fd(),
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
            false,
            path.as_str(),
        )?;
        let target = mounts::ensure_file(root, &path)?;
        mounts::attach(&node, &target, &path)?;
    }
    let pts = abs("/dev/pts")?;
    let devpts = mounts::new_pseudo_fs(
        c"devpts",
        &[("ptmxmode", "0666"), ("mode", "0620")],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        "/dev/pts",
    )?;
    let target = mounts::ensure_dir(root, &pts)?;
    mounts::attach(&devpts, &target, &pts)?;
    let shm = abs("/dev/shm")?;
    let shm_fs = mounts::new_tmpfs(
        shm_bytes,
        0o1777,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        "/dev/shm",
    )?;
    let target = mounts::ensure_dir(root, &shm)?;
    mounts::attach(&shm_fs, &target, &shm)?;
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        mounts::symlink(root, &abs(link)?, to)?;
    }
    make_read_only(root, "/dev")
}

/// A fresh /proc for the new pid namespace, with kernel internals masked
/// and tunables read-only.
fn build_proc(root: std::os::fd::BorrowedFd<'_>) -> MountResult<()> {
    let proc_path = abs("/proc")?;
    let proc = mounts::new_pseudo_fs(
        c"proc",
        &[],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        "/proc",
    )?;
    let target = mounts::ensure_dir(root, &proc_path)?;
    mounts::attach(&proc, &target, &proc_path)?;
    for name in MASKED_PROC_FILES {
        let path = abs(&format!("/proc/{name}"))?;
        let Some(target) = open_if_present(root, &path)? else {
            continue;
        };
        let null = mounts::clone_tree(sys::cwd(), "/dev/null", false)?;
        mounts::set_attrs(
            null.as_fd(),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
            false,
            path.as_str(),
        )?;
        mounts::attach(&null, &target, &path)?;
    }
    for name in MASKED_PROC_DIRS {
        let path = abs(&format!("/proc/{name}"))?;
        let Some(target) = open_if_present(root, &path)? else {
            continue;
        };
        let empty = mounts::new_tmpfs(
            4096,
            0o555,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            path.as_str(),
        )?;
        mounts::attach(&empty, &target, &path)?;
    }
    for name in READ_ONLY_PROC_DIRS {
        let path = abs(&format!("/proc/{name}"))?;
        let Some(target) = open_if_present(root, &path)? else {
            continue;
        };
        let tree = mounts::clone_tree(target.as_fd(), "", true)?;
        mounts::set_attrs(
            tree.as_fd(),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            true,
            path.as_str(),
        )?;
        mounts::attach(&tree, &target, &path)?;
    }
    Ok(())
}

fn open_if_present(
    root: std::os::fd::BorrowedFd<'_>,
    path: &AbsPath,
) -> MountResult<Option<OwnedFd>> {
    match mounts::open_beneath(root, path) {
        Ok(fd) => Ok(Some(fd)),
        Err(MountError {
            errno: Errno::ENOENT,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes the mount at `path` read-only (not its submounts).
fn make_read_only(root: std::os::fd::BorrowedFd<'_>, path: &str) -> MountResult<()> {
    let fd = mounts::open_beneath(root, &abs(path)?)?;
    mounts::set_attrs(fd.as_fd(), MOUNT_ATTR_RDONLY, false, path)
}

/// Switches the root to the new tree and detaches the old one, so no path
/// leads back to the host's filesystem.
fn pivot_into(root: OwnedFd) -> Result<(), StepError> {
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&root))
        .map_err(step_err("chdir new root"))?;
    sys::pivot_root(".", ".").map_err(step_err("pivot_root"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(step_err("detach old root"))?;
    nix::unistd::chdir("/").map_err(step_err("chdir /"))
}

fn set_hostname(name: &str) -> Result<(), StepError> {
    nix::unistd::sethostname(name).map_err(step_err("sethostname"))?;
    // SAFETY: plain syscall with a valid pointer and length.
    let ret = unsafe { libc::setdomainname(c"(none)".as_ptr(), 6) };
    if ret < 0 {
        return Err(step_err("setdomainname")(Errno::last()));
    }
    Ok(())
}
