//! Thin wrappers over the syscalls that neither std nor nix expose: the new
//! mount API, clone3, pidfds, close_range, openat2 and faccessat2.
//!
//! Each wrapper only converts arguments and the return value; policy lives in
//! the callers. Returned descriptors are `OwnedFd` so they close on every path.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// `AT_FDCWD` as a borrowed descriptor for the `*at` wrappers below.
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel the kernel resolves to the current
    // directory; it is never closed, so borrowing it for 'static is sound.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

fn to_fd(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn to_unit(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn cstring(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// `open_tree(dirfd, path, flags)`: with `OPEN_TREE_CLONE` a detached copy
/// of the mount tree at the path, as a descriptor.
pub fn open_tree(dirfd: BorrowedFd<'_>, path: &str, flags: libc::c_uint) -> Result<OwnedFd, Errno> {
    let path = cstring(path)?;
    // SAFETY: path is a valid NUL-terminated string that outlives the call;
    // dirfd is a live descriptor (or AT_FDCWD).
    let ret =
        unsafe { libc::syscall(libc::SYS_open_tree, dirfd.as_raw_fd(), path.as_ptr(), flags) };
    to_fd(ret)
}

/// `mount_setattr(dirfd, path, flags, attr)`.
pub fn mount_setattr(
    dirfd: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_uint,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
) -> Result<(), Errno> {
    let path = cstring(path)?;
    let mut attr = libc::mount_attr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: 0,
    };
    // SAFETY: attr is a properly initialized mount_attr whose size we pass;
    // path is NUL-terminated and outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    to_unit(ret)
}

/// `move_mount(from_fd, "", to_fd, "", F_EMPTY_PATH | T_EMPTY_PATH)`:
/// attaches the detached mount `from` on top of the object `to` refers to.
pub fn move_mount_onto(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: both descriptors are live; the empty paths are static C strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    to_unit(ret)
}

/// A filesystem context from `fsopen`, configured with string options and
/// turned into a detached mount with `fsmount`.
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    pub fn open(fstype: &CStr) -> Result<FsContext, Errno> {
        // SAFETY: fstype is a valid C string for the duration of the call.
        let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
        Ok(FsContext { fd: to_fd(ret)? })
    }

    pub fn set_string(&self, key: &str, value: &str) -> Result<(), Errno> {
        let key = cstring(key)?;
        let value = cstring(value)?;
        // SAFETY: key and value are NUL-terminated and outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        to_unit(ret)
    }

    /// Creates the superblock and returns a detached mount with `attrs`
    /// (`MOUNT_ATTR_*`).
    pub fn mount(self, attrs: u64) -> Result<OwnedFd, Errno> {
        // SAFETY: CMD_CREATE takes no key or value.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        to_unit(ret)?;
        // SAFETY: the context is live and created; flags and attrs are plain integers.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        to_fd(ret)
    }
}

/// `openat2(dirfd, path, flags, resolve)`. With `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS` it cannot leave `dirfd` nor follow a link planted
/// in a bound directory.
pub fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let path = cstring(path)?;
    // SAFETY: open_how is plain data; zeroed is a valid initial value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    loop {
        // SAFETY: how is initialized and its size passed; path outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                path.as_ptr(),
                &mut how as *mut libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match to_fd(ret) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// `faccessat2(fd, "", mode, AT_EMPTY_PATH)`: may the *real* uid/gid (the
/// caller of a setuid program) access the object behind `fd`?
pub fn real_user_may_access(fd: BorrowedFd<'_>, mode: libc::c_int) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: fd is live; the empty path is a static C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    to_unit(ret)
}

/// `close_range(first, ~0, flags)`.
pub fn close_from(first: libc::c_uint, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: closes descriptors of this process only; callers own none of
    // the ones being closed (they are the caller's leftovers).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) };
    to_unit(ret)
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &str, put_old: &str) -> Result<(), Errno> {
    let new_root = cstring(new_root)?;
    let put_old = cstring(put_old)?;
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    to_unit(ret)
}

/// The kernel's `struct clone_args` (linux/sched.h), version 0 layout.
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child is born in `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What `clone_process` returns in each process.
#[derive(Debug)]
pub enum Cloned {
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    Child,
}

/// `clone3` with `flags | CLONE_PIDFD` and no new stack: fork semantics, so
/// the child continues from here on a copy of the parent's memory.
///
/// # Safety
/// The calling process must be single-threaded (purple-init is, by design):
/// the child must not find a lock held by a thread that no longer exists.
/// With `into_cgroup` (a cgroup v2 directory), the child starts life in
/// that cgroup: no migration afterwards, which on a busy host costs an RCU
/// grace period (cgroup_threadgroup_rwsem taken for writing).
pub unsafe fn clone_process(
    flags: u64,
    into_cgroup: Option<BorrowedFd<'_>>,
) -> Result<Cloned, Errno> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = into_cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = u64::try_from(cgroup.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    }
    // SAFETY: args is a valid clone_args whose size we pass; no stack is
    // given, so the child resumes on a copy of this stack (fork semantics).
    // The caller guarantees single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        r if r < 0 => Err(Errno::last()),
        0 => Ok(Cloned::Child),
        pid => {
            // SAFETY: CLONE_PIDFD made the kernel store a new descriptor here.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned::Parent {
                pid: libc::pid_t::try_from(pid).map_err(|_| Errno::ESRCH)?,
                pidfd,
            })
        }
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid`
/// exits.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: pidfd is live; a NULL siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    to_unit(ret)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> Result<(), Errno> {
    interface_up("lo")
}

/// `struct ifreq` with the flags member of its union (40 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct ifreq` with an address in its union (40 bytes).
#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// The kernel's `struct rtentry` (include/uapi/linux/route.h), for
/// SIOCADDRT.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn inet_socket() -> Result<OwnedFd, Errno> {
    // SAFETY: plain socket(2) call; the result is checked by to_fd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    to_fd(libc::c_long::from(sock))
}

fn interface_name(name: &str) -> Result<[u8; libc::IFNAMSIZ], Errno> {
    let mut out = [0u8; libc::IFNAMSIZ];
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Errno::EINVAL);
    }
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

fn sockaddr_in(address: std::net::Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Brings an interface of this network namespace up.
pub fn interface_up(name: &str) -> Result<(), Errno> {
    const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
    const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
    let sock = inet_socket()?;
    let mut req = IfReqFlags {
        name: interface_name(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: req is a valid ifreq-shaped buffer of the size the kernel expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req as *mut IfReqFlags) } < 0 {
        return Err(Errno::last());
    }
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above, now setting the flags we read plus UP.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut req as *mut IfReqFlags) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Gives an interface its IPv4 address and netmask.
pub fn set_ipv4_address(
    name: &str,
    address: std::net::Ipv4Addr,
    prefix_len: u8,
) -> Result<(), Errno> {
    const SIOCSIFADDR: libc::c_ulong = 0x8916;
    const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
    if prefix_len > 32 {
        return Err(Errno::EINVAL);
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let sock = inet_socket()?;
    for (request, value) in [
        (SIOCSIFADDR, address),
        (SIOCSIFNETMASK, std::net::Ipv4Addr::from(mask)),
    ] {
        let mut req = IfReqAddr {
            name: interface_name(name)?,
            addr: sockaddr_in(value),
            _pad: [0; 8],
        };
        // SAFETY: req is a valid ifreq-shaped buffer of the size the kernel
        // expects, with a sockaddr_in in its union.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req as *mut IfReqAddr) } < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Adds the default IPv4 route via `gateway`.
pub fn add_default_route(gateway: std::net::Ipv4Addr) -> Result<(), Errno> {
    const SIOCADDRT: libc::c_ulong = 0x890B;
    let sock = inet_socket()?;
    let any = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: any,
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: route is a valid struct rtentry with null pointers where the
    // kernel accepts them (no device, no padding pointer).
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCADDRT, &mut route as *mut RtEntry) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The kernel's `struct sigaction` for `rt_sigaction` (x86_64 and aarch64
/// layout: handler, flags, restorer, mask).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets the disposition of each signal in `signals` (numbers 1 to 64,
/// real-time ones included, which libc's sigaction refuses for the two it
/// reserves) to `handler` (`SIG_DFL` or `SIG_IGN`).
pub fn set_signal_dispositions(
    signals: impl IntoIterator<Item = i32>,
    handler: libc::sighandler_t,
) -> Result<(), Errno> {
    let action = KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in signals {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `action` is a valid kernel sigaction with SIG_DFL or
        // SIG_IGN (no handler code runs); the old action is not requested;
        // the size is the kernel's sigset size (8 bytes).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
        if ret < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// The signals this process ignores, from the `SigIgn` mask of
/// /proc/self/status. Only ignored dispositions survive execve (handlers
/// are reset by the kernel), so these are the ones a caller can plant.
pub fn ignored_signals() -> Result<Vec<i32>, Errno> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or(Errno::EINVAL)?;
    Ok((1..=64).filter(|s| mask & (1u64 << (s - 1)) != 0).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// CLONE_INTO_CGROUP, for real: this host's cgroup2 tree (the unified
    /// one of a hybrid host, or /sys/fs/cgroup on v2) takes a child that is
    /// born in a fresh cgroup. Needs root; skipped locally without it and
    /// required under CI.
    #[test]
    fn clone_into_a_cgroup2_directory() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "clone_into_a_cgroup2_directory needs root under CI"
            );
            eprintln!("SKIP clone_into_a_cgroup2_directory: needs root");
            return;
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mountinfo
            .lines()
            .filter_map(|l| {
                let (before, after) = l.split_once(" - ")?;
                after
                    .starts_with("cgroup2 ")
                    .then(|| before.split(' ').nth(4).map(str::to_owned))
                    .flatten()
            })
            .next()
            .expect("a cgroup2 mount (hybrid and v2 hosts have one)");
        let dir =
            std::path::Path::new(&root).join(format!("purple-clone-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _guard = Remove(dir.clone());
        let target = std::fs::File::open(&dir).unwrap();
        let (hold_read, hold_write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only calls read(2) and _exit(2), which are
        // async-signal-safe, so the test harness's other threads (whose
        // locks the child may inherit) do not matter.
        match unsafe { clone_process(0, Some(target.as_fd())) }.unwrap() {
            Cloned::Child => {
                // SAFETY: closing the child's copy of the write end, so the
                // read below ends when the parent closes its own.
                unsafe { libc::close(hold_write.as_raw_fd()) };
                let mut byte = [0u8; 1];
                // SAFETY: reading into a live stack buffer.
                unsafe { libc::read(hold_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(0) }
            }
            Cloned::Parent { pid, .. } => {
                let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
                drop(hold_write);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                let name = dir.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    cgroup
                        .lines()
                        .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{name}"))),
                    "the child was not born in {}: {cgroup}",
                    dir.display()
                );
            }
        }
    }
}
