//! Mount helpers for the child: every path is resolved beneath the new
//! root's descriptor with no symlinks followed, so a link planted in a
//! bound directory can never redirect a mount or a mkdir.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::stat::Mode;
use purple_common::values::AbsPath;

use crate::sys;

/// Resolution rules for every lookup under the new root.
const BENEATH: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// A failed mount step: which step, on which path, and the error.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {errno}")]
pub struct MountError {
    pub step: &'static str,
    pub path: String,
    pub errno: Errno,
}

pub type MountResult<T> = Result<T, MountError>;

pub fn fail(step: &'static str, path: impl Into<String>) -> impl FnOnce(Errno) -> MountError {
    let path = path.into();
    move |errno| MountError { step, path, errno }
}

/// Opens `path` (relative to `root`) as an O_PATH descriptor.
pub fn open_beneath(root: BorrowedFd<'_>, path: &AbsPath) -> MountResult<OwnedFd> {
    let rel = if path.is_root() { "." } else { path.relative() };
    sys::openat2(root, rel, libc::O_PATH | libc::O_CLOEXEC, 0, BENEATH)
        .map_err(fail("open", path.as_str()))
}

/// Creates the directory `path` and its missing parents under `root`,
/// returning an O_PATH descriptor of it.
///
/// Mounts come parents first, so the parent usually exists: try that in
/// three calls before walking component by component.
pub fn ensure_dir(root: BorrowedFd<'_>, path: &AbsPath) -> MountResult<OwnedFd> {
    if path.is_root() {
        return open_dir(root, path);
    }
    if let Some((parent, name)) = split_parent(path) {
        if let Ok(parent_fd) = open_dir(root, &parent) {
            return make_child_dir(&parent_fd, name, path);
        }
    }
    let mut dir = open_dir(root, &AbsPath::from_static("/"))?;
    for component in path.components() {
        dir = make_child_dir(&dir, component, path)?;
    }
    Ok(dir)
}

fn open_dir(root: BorrowedFd<'_>, path: &AbsPath) -> MountResult<OwnedFd> {
    let rel = if path.is_root() { "." } else { path.relative() };
    sys::openat2(
        root,
        rel,
        libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        0,
        BENEATH,
    )
    .map_err(fail("open", path.as_str()))
}

/// mkdir `name` in `dir` (an existing one is fine) and open it.
fn make_child_dir(dir: &OwnedFd, name: &str, path: &AbsPath) -> MountResult<OwnedFd> {
    match nix::sys::stat::mkdirat(
        Some(std::os::fd::AsRawFd::as_raw_fd(dir)),
        name,
        Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => {
            return Err(MountError {
                step: "mkdir",
                path: path.to_string(),
                errno,
            })
        }
    }
    sys::openat2(
        dir.as_fd(),
        name,
        libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        0,
        BENEATH,
    )
    .map_err(fail("open", path.as_str()))
}

/// Splits `path` into its parent and last component (`/` has none).
pub fn split_parent(path: &AbsPath) -> Option<(AbsPath, &str)> {
    let (parent, name) = path.as_str().rsplit_once('/')?;
    let parent = if parent.is_empty() { "/" } else { parent };
    Some((parent.parse().ok()?, name))
}

/// Creates an empty file at `path` (parents included) and returns an O_PATH
/// descriptor of it, as a mountpoint for a file bind.
pub fn ensure_file(root: BorrowedFd<'_>, path: &AbsPath) -> MountResult<OwnedFd> {
    let (parent, name) = split_parent(path).ok_or_else(|| MountError {
        step: "create file",
        path: path.to_string(),
        errno: Errno::EINVAL,
    })?;
    let dir = ensure_dir(root, &parent)?;
    let file = sys::openat2(
        dir.as_fd(),
        name,
        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        0o644,
        BENEATH,
    )
    .map_err(fail("create file", path.as_str()))?;
    drop(file);
    open_beneath(root, path)
}

/// Writes a new file with `contents` under `root` (Purple's own tmpfs).
pub fn write_file(root: BorrowedFd<'_>, path: &AbsPath, contents: &str) -> MountResult<()> {
    let (parent, name) = split_parent(path).ok_or_else(|| MountError {
        step: "write file",
        path: path.to_string(),
        errno: Errno::EINVAL,
    })?;
    let dir = ensure_dir(root, &parent)?;
    let file = sys::openat2(
        dir.as_fd(),
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
        0o644,
        BENEATH,
    )
    .map_err(fail("create file", path.as_str()))?;
    let mut written = 0;
    let bytes = contents.as_bytes();
    while written < bytes.len() {
        written += nix::unistd::write(&file, &bytes[written..])
            .map_err(fail("write file", path.as_str()))?;
    }
    Ok(())
}

/// Creates a symlink at `path` pointing to `target`.
pub fn symlink(root: BorrowedFd<'_>, path: &AbsPath, target: &str) -> MountResult<()> {
    let (parent, name) = split_parent(path).ok_or_else(|| MountError {
        step: "symlink",
        path: path.to_string(),
        errno: Errno::EINVAL,
    })?;
    let dir = ensure_dir(root, &parent)?;
    nix::unistd::symlinkat(target, Some(std::os::fd::AsRawFd::as_raw_fd(&dir)), name)
        .map_err(fail("symlink", path.as_str()))
}

/// Attaches a detached mount on top of the object `target` refers to.
pub fn attach(mount: &OwnedFd, target: &OwnedFd, path: &AbsPath) -> MountResult<()> {
    sys::move_mount_onto(mount.as_fd(), target.as_fd()).map_err(fail("move_mount", path.as_str()))
}

/// A fresh detached tmpfs with a size cap and root mode.
pub fn new_tmpfs(size_bytes: u64, mode: u32, attrs: u64, path: &str) -> MountResult<OwnedFd> {
    let ctx = sys::FsContext::open(c"tmpfs").map_err(fail("fsopen tmpfs", path))?;
    ctx.set_string("size", &size_bytes.to_string())
        .map_err(fail("tmpfs size", path))?;
    ctx.set_string("mode", &format!("{mode:o}"))
        .map_err(fail("tmpfs mode", path))?;
    ctx.mount(attrs).map_err(fail("fsmount tmpfs", path))
}

/// A fresh detached instance of a pseudo-filesystem (proc, devpts).
pub fn new_pseudo_fs(
    fstype: &CStr,
    options: &[(&str, &str)],
    attrs: u64,
    path: &str,
) -> MountResult<OwnedFd> {
    let ctx = sys::FsContext::open(fstype).map_err(fail("fsopen", path))?;
    for (key, value) in options {
        ctx.set_string(key, value).map_err(fail("fsconfig", path))?;
    }
    ctx.mount(attrs).map_err(fail("fsmount", path))
}

/// A detached copy of the mount at `path` as seen from `dirfd` (the host's
/// tree, still reachable while the old root is attached).
pub fn clone_tree(dirfd: BorrowedFd<'_>, path: &str, recursive: bool) -> MountResult<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    sys::open_tree(dirfd, path, flags).map_err(fail("open_tree", path))
}

/// Sets mount attributes (`MOUNT_ATTR_*`) on a mount, optionally on all of
/// its submounts too.
pub fn set_attrs(
    mount: BorrowedFd<'_>,
    attrs: u64,
    recursive: bool,
    path: &str,
) -> MountResult<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    sys::mount_setattr(mount, "", flags, attrs, 0, 0).map_err(fail("mount_setattr", path))
}
