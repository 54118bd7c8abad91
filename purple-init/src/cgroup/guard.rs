//! purple-init out of the caller's reach in the cgroup tree.
//!
//! A setuid purple-init starts in its caller's cgroup. On a systemd host a
//! user's session cgroups are delegated to the user, whose `cgroup.freeze`
//! and `cgroup.kill` (v2, also on hybrid hosts) or `freezer.state` (v1)
//! the user may write: freezing purple-init would hold off the timeout,
//! killing it would lose the report and the terminal audit event, without
//! any signal permission. So once the caller's checks are done, purple-init
//! moves itself to a root-owned cgroup, `PARENT/init`, in every hierarchy
//! where the caller could freeze or kill it (there only: a migration costs
//! start-up time). Once there the caller cannot move it back either (v2
//! needs write access to the common ancestor, which is root's).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::layout::{freezable_hierarchies, join_cgroup_path, Hierarchy};
use super::CgroupError;

/// The leaf purple-init moves to, below the admin's parent.
pub const INIT_LEAF: &str = "init";

/// Files through which a cgroup's processes are frozen or killed.
const STOP_FILES: [&str; 3] = ["cgroup.freeze", "cgroup.kill", "freezer.state"];

/// purple-init's cgroup in `hierarchy`, as a directory, from the text of
/// /proc/self/cgroup. None when it is not in that hierarchy's view.
fn own_directory(proc_cgroup: &str, hierarchy: &Hierarchy) -> Option<PathBuf> {
    let path = proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = if hierarchy.controllers.is_empty() {
            id == "0" && controllers.is_empty()
        } else {
            controllers
                .split(',')
                .any(|c| hierarchy.controllers.iter().any(|h| h == c))
        };
        wanted.then_some(path)
    })?;
    let root = join_cgroup_path(&hierarchy.mount_root, "");
    let below = if root == "/" {
        path
    } else {
        // Whole components only: `/user.slice` is not below `/user`.
        let rest = path.strip_prefix(root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    Some(hierarchy.mount_point.join(below.trim_start_matches('/')))
}

/// The first directory from `dir` up to the hierarchy's root (excluded)
/// whose freeze or kill file the caller could write: its own, or open to
/// its group or to everyone (counted as the caller's, to be safe).
fn stoppable_by(dir: &Path, mount_point: &Path, caller_uid: u32) -> Option<PathBuf> {
    let mut current = dir.to_owned();
    while current.starts_with(mount_point) && current != mount_point {
        let writable = STOP_FILES.iter().any(|file| {
            std::fs::symlink_metadata(current.join(file))
                .is_ok_and(|m| m.uid() == caller_uid || m.mode() & 0o022 != 0)
        });
        if writable {
            return Some(current);
        }
        if !current.pop() {
            break;
        }
    }
    None
}

/// Moves purple-init to `PARENT/init` in every hierarchy where the caller
/// could freeze or kill its current cgroup; returns the directories it
/// left, for the record. Root callers are not guarded against (they can
/// kill purple-init anyway).
pub fn leave_caller_cgroups(caller_uid: u32, parent: &str) -> Result<Vec<PathBuf>, CgroupError> {
    if caller_uid == 0 {
        return Ok(Vec::new());
    }
    super::check_parent(parent)?;
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
            step: "reading purple-init's cgroups",
            path: path.into(),
            source,
        })
    };
    let mountinfo = read("/proc/self/mountinfo")?;
    let proc_cgroup = read("/proc/self/cgroup")?;
    let mut left = Vec::new();
    for hierarchy in freezable_hierarchies(&mountinfo) {
        // Fail closed: a cgroup this mount does not show could still be
        // the caller's, and nothing here could tell.
        let Some(dir) = own_directory(&proc_cgroup, &hierarchy) else {
            return Err(CgroupError::Controller {
                step: "finding purple-init's own cgroup",
                path: hierarchy.mount_point.clone(),
                detail: "not visible below this mount's root, so whether the caller can freeze it is unknown".into(),
            });
        };
        let Some(stoppable) = stoppable_by(&dir, &hierarchy.mount_point, caller_uid) else {
            continue;
        };
        let target = hierarchy.mount_point.join(parent).join(INIT_LEAF);
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&target)
            .map_err(|source| CgroupError::Io {
                step: "creating purple-init's own cgroup",
                path: target.clone(),
                source,
            })?;
        let procs = target.join("cgroup.procs");
        // "0": the writing process itself.
        std::fs::write(&procs, "0").map_err(|source| CgroupError::Io {
            step: "moving purple-init out of a cgroup its caller controls",
            path: procs,
            source,
        })?;
        left.push(stoppable);
    }
    Ok(left)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn v2(mount_point: &Path, mount_root: &str) -> Hierarchy {
        Hierarchy {
            controllers: Vec::new(),
            mount_point: mount_point.to_owned(),
            mount_root: mount_root.to_owned(),
        }
    }

    #[test]
    fn finds_its_directory_in_each_hierarchy() {
        let text = "12:freezer:/user.slice\n1:name=systemd:/x\n0::/user.slice/user-1000.slice/user@1000.service/app.slice\n";
        let unified = v2(Path::new("/sys/fs/cgroup"), "/");
        assert_eq!(
            own_directory(text, &unified).unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice")
        );
        let freezer = Hierarchy {
            controllers: vec!["freezer".into()],
            mount_point: "/sys/fs/cgroup/freezer".into(),
            mount_root: "/".into(),
        };
        assert_eq!(
            own_directory(text, &freezer).unwrap(),
            Path::new("/sys/fs/cgroup/freezer/user.slice")
        );
        // A mount of a subtree shows paths below its root only.
        let sub = v2(Path::new("/mnt/cg"), "/user.slice");
        assert_eq!(
            own_directory(text, &sub).unwrap(),
            Path::new("/mnt/cg/user-1000.slice/user@1000.service/app.slice")
        );
        let other = v2(Path::new("/mnt/cg"), "/system.slice");
        assert_eq!(own_directory(text, &other), None);
        let prefix_only = v2(Path::new("/mnt/cg"), "/user");
        assert_eq!(own_directory(text, &prefix_only), None);
    }

    /// A fake v2 tree where the caller owns `user@1000.service` and below,
    /// as systemd delegates it.
    #[test]
    fn a_delegated_ancestor_makes_it_stoppable() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        let delegated = root.join("user.slice/user@1000.service");
        let own = delegated.join("app.slice/term.scope");
        std::fs::create_dir_all(&own).unwrap();
        for dir in [root.join("user.slice"), delegated.clone(), own.clone()] {
            for f in ["cgroup.freeze", "cgroup.kill", "cgroup.procs"] {
                std::fs::write(dir.join(f), "").unwrap();
                let mut perms = std::fs::metadata(dir.join(f)).unwrap().permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
                std::fs::set_permissions(dir.join(f), perms).unwrap();
            }
        }
        let owner = std::fs::metadata(root).unwrap().uid();
        // Every file belongs to the test's own uid: "the caller" is that
        // uid, or someone else.
        assert_eq!(stoppable_by(&own, root, owner), Some(own.clone()));
        assert_eq!(stoppable_by(&own, root, owner.wrapping_add(1)), None);
        // Open to the group: stoppable by anyone, to be safe.
        let file = delegated.join("cgroup.freeze");
        let mut perms = std::fs::metadata(&file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o664);
        std::fs::set_permissions(&file, perms).unwrap();
        assert_eq!(
            stoppable_by(&own, root, owner.wrapping_add(1)),
            Some(delegated)
        );
        // The hierarchy's root itself never counts.
        assert_eq!(stoppable_by(root, root, owner), None);
    }
}
