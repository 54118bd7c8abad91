//! Naming sandbox cgroups after their owner, and removing the ones whose
//! owner is gone.
//!
//! A sandbox cgroup is named `SANDBOX_ID@PID.START`: the pid of the
//! purple-init that created it and that process's start time (clock ticks
//! after boot, from /proc/PID/stat). When no process with that pid and start
//! time exists, the owner died without cleaning up (SIGKILL, a crash),
//! and the next run removes the directory. A live owner's cgroup is never
//! touched, even while it is still empty.

use std::path::Path;

use super::layout::Layout;

pub fn sandbox_name(sandbox_id: &str, owner_pid: u32, owner_start: u64) -> String {
    format!("{sandbox_id}@{owner_pid}.{owner_start}")
}

/// The owner's pid and start time, when `name` is a sandbox cgroup's.
pub fn parse_owner(name: &str) -> Option<(u32, u64)> {
    let (_, owner) = name.rsplit_once('@')?;
    let (pid, start) = owner.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Field 22 of /proc/PID/stat, read after the command name (which may
/// hold spaces and parentheses).
pub fn start_time_from_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn start_time_of(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(start_time_from_stat)
}

/// Dead means: no process has that pid (ESRCH), or one has but started at
/// another time (the pid was reused). A process Purple cannot inspect
/// (procfs `hidepid`, EPERM) counts as alive: a stale directory kept is
/// harmless, a live sandbox's cgroup removed is not.
fn owner_alive(pid: u32, start: u64) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Err(nix::errno::Errno::ESRCH) => false,
        _ => start_time_of(&pid.to_string()).is_none_or(|s| s == start),
    }
}

/// Removes the sandbox cgroups under `parent` whose owner is gone, in every
/// hierarchy; returns how many directories went. An entry that is not a
/// sandbox cgroup is left alone, and so is one that still has processes
/// (rmdir refuses; the pid-namespace teardown makes that a transient).
pub fn sweep(layout: &Layout, parent: &str) -> usize {
    let mut removed = 0;
    for hierarchy in layout.hierarchies() {
        removed += sweep_parent(&hierarchy.mount_point.join(parent), owner_alive);
    }
    removed
}

/// Sandbox cgroups sit in one directory per caller (`uid-UID`) under the
/// admin's parent; every caller's are swept, so a user who never runs
/// again does not keep theirs. The per-caller directories stay (removing
/// one could race with a run creating its sandbox inside).
fn sweep_parent(parent: &Path, alive: impl Fn(u32, u64) -> bool + Copy) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = sweep_dir(parent, alive);
    for entry in entries.flatten() {
        let is_caller_dir = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("uid-"))
            .is_some_and(|uid| uid.parse::<u32>().is_ok());
        if is_caller_dir && entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed += sweep_dir(&entry.path(), alive);
        }
    }
    removed
}

fn sweep_dir(dir: &Path, alive: impl Fn(u32, u64) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(parse_owner) else {
            continue;
        };
        if alive(pid, start) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if std::fs::remove_dir(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = sandbox_name("0f1e2d3c-aaaa-4bbb-8ccc-123456789abc", 4321, 987654);
        assert_eq!(parse_owner(&name), Some((4321, 987654)));
        assert_eq!(parse_owner("purple"), None);
        assert_eq!(parse_owner("x@12"), None);
        assert_eq!(parse_owner("x@a.b"), None);
    }

    #[test]
    fn stat_start_time_survives_odd_names() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(start_time_from_stat(stat), Some(123456));
        let own = start_time_of("self");
        assert!(own.is_some());
    }

    #[test]
    fn sweep_removes_only_dead_owners() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a@1.10", "b@2.20", "notours", "c@3.30"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("d@4.40"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("uid-1000/e@5.50")).unwrap();
        std::fs::create_dir_all(dir.path().join("uid-1000/f@2.20")).unwrap();
        // Owner 2 is alive; 1, 3 and 5 are gone; 4 is a file, not a cgroup.
        let removed = sweep_parent(dir.path(), |pid, start| pid == 2 && start == 20);
        assert_eq!(removed, 3);
        let in_caller_dir: Vec<String> = std::fs::read_dir(dir.path().join("uid-1000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(in_caller_dir, ["f@2.20"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b@2.20", "d@4.40", "notours", "uid-1000"]);
    }

    #[test]
    fn a_live_owner_is_alive() {
        let me = std::process::id();
        let start = start_time_of("self").unwrap();
        assert!(owner_alive(me, start));
        assert!(!owner_alive(me, start + 1));
    }
}
