//! One cgroup per sandbox, under the admin's Purple parent, on cgroup v2
//! and on v1/hybrid hosts.
//!
//! purple-init creates it and writes every limit *before* the sandbox's
//! first process exists, places that process in it before releasing it,
//! reads the counters after the sandbox ended, and removes the cgroup on
//! every path (explicitly, or when the handle is dropped). Cgroups that a
//! killed purple-init left behind carry their owner's pid and start time in
//! their name, so the next run can tell them from live ones and remove them.
//!
//! Limits are written and tasks attached through cgroups-rs's controllers;
//! directories are created here, so that a failure is an error (cgroups-rs
//! only logs a failed mkdir) and the hierarchy root can be a fake tree in
//! tests.

pub mod counters;
pub mod guard;
pub mod layout;
pub mod stale;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::memory::{MemController, SetMemory};
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, Controller, MaxValue};
use purple_common::cgroup_files::LiveUsageSource;

use self::counters::Counters;
use self::layout::{Layout, LayoutError, Membership, V2_CONTROLLERS};

/// CFS period for the CPU quota: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The limits written into the sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_max: u64,
    pub memory_high: Option<u64>,
    pub pids_max: u32,
    pub millicpus: u32,
    pub cpu_weight: u32,
}

impl CgroupLimits {
    pub fn cpu_quota_us(&self) -> u64 {
        u64::from(self.millicpus) * CPU_PERIOD_US / 1000
    }

    /// v1 `cpu.shares` for the v2-style weight (100 -> 1024, the default).
    pub fn v1_shares(&self) -> u64 {
        (u64::from(self.cpu_weight) * 1024 / 100).max(2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("finding the cgroup hierarchy: {0}")]
    Layout(#[from] LayoutError),
    #[error("cgroup parent {parent:?} in the admin config is invalid: {why}")]
    BadParent { parent: String, why: &'static str },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step} in {path}: {detail}")]
    Controller {
        step: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cgroup v2 at {path} does not offer the {controller} controller (cgroup.controllers: {available:?})")]
    MissingController {
        path: PathBuf,
        controller: &'static str,
        available: String,
    },
    #[error("reading purple-init's own start time from /proc/self/stat")]
    OwnerUnknown,
    #[error("removing {path}: {detail}")]
    Remove { path: PathBuf, detail: String },
}

impl CgroupError {
    /// True when the host has no usable cgroup hierarchy for Purple at all:
    /// nothing mounted, a controller missing, the parent not creatable or
    /// its controllers not delegable. Only then may `resources.mode =
    /// "best-effort"` run without limits. Errors in creating the sandbox's
    /// own cgroup or writing its limits never qualify: a caller could
    /// provoke some of those (a CPU quota above the parent's, the parent's
    /// `cgroup.max.descendants` filled by its own sandboxes).
    pub fn host_lacks_cgroups(&self) -> bool {
        match self {
            CgroupError::Layout(_) | CgroupError::MissingController { .. } => true,
            CgroupError::Io { step, .. } => HOST_STEPS.contains(step),
            _ => false,
        }
    }
}

const STEP_CREATE_PARENT: &str = "creating the Purple parent cgroup";
/// Not a host step: the last level of the parent is the caller's own
/// directory, and its creation can fail for reasons a caller can provoke
/// (other sandboxes filling `cgroup.max.descendants`).
const STEP_CREATE_CALLER: &str = "creating the caller's parent cgroup";
const STEP_READ_HIERARCHY: &str = "reading";
const STEP_DELEGATE: &str = "enabling controllers (a cgroup with processes of its own cannot delegate them; choose another [cgroup] parent)";
const HOST_STEPS: [&str; 3] = [STEP_CREATE_PARENT, STEP_READ_HIERARCHY, STEP_DELEGATE];

fn controller_err(
    step: &'static str,
    path: &Path,
) -> impl FnOnce(cgroups_rs::error::Error) -> CgroupError {
    let path = path.to_owned();
    move |e| {
        let detail = match std::error::Error::source(&e) {
            Some(cause) => format!("{} ({cause})", e.kind()),
            None => e.kind().to_string(),
        };
        CgroupError::Controller { step, path, detail }
    }
}

/// Totals written on the parent cgroup itself: every sandbox below it
/// together (Purple's parent per caller, so one user's sandboxes share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentLimits {
    pub memory_max: Option<u64>,
    pub pids_max: Option<u32>,
}

/// What the host could actually bound about swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapBound {
    /// 0 when swap beyond the memory limit is forbidden; `None` when the
    /// host has no swap accounting to forbid it with.
    pub swap_bytes: Option<u64>,
    pub note: Option<String>,
}

/// A sandbox's cgroup, from creation to removal.
#[derive(Debug)]
pub struct SandboxCgroup {
    layout: Layout,
    /// `parent/name`, relative to each hierarchy's mount point.
    relative: String,
    /// The sandbox directories created so far, one per hierarchy.
    dirs: Vec<PathBuf>,
    swap: SwapBound,
    /// v2: the sandbox directory, open, for clone3's CLONE_INTO_CGROUP.
    clone_target: Option<std::os::fd::OwnedFd>,
}

impl SandboxCgroup {
    /// Creates `parent/name` in every hierarchy and writes `limits`. On an
    /// error, whatever was created is removed again (the handle is dropped).
    pub fn create(
        layout: Layout,
        parent: &str,
        name: &str,
        limits: &CgroupLimits,
        parent_limits: &ParentLimits,
    ) -> Result<SandboxCgroup, CgroupError> {
        check_parent(parent)?;
        let mut cgroup = SandboxCgroup {
            relative: format!("{parent}/{name}"),
            layout,
            dirs: Vec::new(),
            swap: SwapBound {
                swap_bytes: None,
                note: None,
            },
            clone_target: None,
        };
        let hierarchies: Vec<PathBuf> = cgroup
            .layout
            .hierarchies()
            .iter()
            .map(|h| h.mount_point.clone())
            .collect();
        if let Layout::V2(h) = &cgroup.layout {
            enable_v2_controllers(&h.mount_point, parent)?;
        }
        for mount_point in &hierarchies {
            make_parents(mount_point, parent)?;
        }
        cgroup.apply_parent(parent, parent_limits)?;
        for mount_point in &hierarchies {
            let dir = mount_point.join(&cgroup.relative);
            std::fs::DirBuilder::new()
                .create(&dir)
                .map_err(|source| CgroupError::Io {
                    step: "creating the sandbox cgroup",
                    path: dir.clone(),
                    source,
                })?;
            cgroup.dirs.push(dir);
        }
        cgroup.swap = cgroup.apply(limits)?;
        if let (Layout::V2(_), Some(dir)) = (&cgroup.layout, cgroup.dirs.first()) {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(dir)
                .map_err(|source| CgroupError::Io {
                    step: "opening the sandbox cgroup",
                    path: dir.clone(),
                    source,
                })?;
            cgroup.clone_target = Some(opened.into());
        }
        Ok(cgroup)
    }

    /// v2: the directory to clone the sandbox's first process into. None on
    /// v1, where the process is moved with `attach` instead.
    pub fn clone_target(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.clone_target.as_ref().map(|fd| fd.as_fd())
    }

    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        self.layout
            .hierarchy_of(controller)
            .map(|h| h.mount_point.join(&self.relative))
    }

    fn required_dir(&self, controller: &'static str) -> Result<PathBuf, CgroupError> {
        self.dir_of(controller)
            .ok_or(CgroupError::Layout(LayoutError::MissingV1Controller {
                controller,
            }))
    }

    /// Writes the totals on the parent (a no-op for what is `None`). They
    /// may be there already, from this user's other sandboxes: rewriting
    /// the same values is harmless, and a changed admin config takes effect
    /// with the next run.
    fn apply_parent(&self, parent: &str, totals: &ParentLimits) -> Result<(), CgroupError> {
        let v2 = matches!(self.layout, Layout::V2(_));
        let dir_of = |controller: &'static str| {
            self.layout
                .hierarchy_of(controller)
                .map(|h| h.mount_point.join(parent))
                .ok_or(CgroupError::Layout(LayoutError::MissingV1Controller {
                    controller,
                }))
        };
        if let Some(max) = totals.memory_max {
            let dir = dir_of("memory")?;
            let memory = MemController::new(dir.clone(), v2);
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            if v2 {
                memory
                    .set_limit(max)
                    .map_err(controller_err("setting the user's memory total", &dir))?;
            } else {
                // v1 keeps memory+swap >= memory at every step: raise the
                // pair memsw first, lower it memory first.
                let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                let set_memory = || {
                    memory
                        .set_limit(max)
                        .map_err(controller_err("setting the user's memory total", &dir))
                };
                let set_memsw = || {
                    if has_memsw {
                        memory
                            .set_memswap_limit(max)
                            .map_err(controller_err("setting the user's memory total", &dir))
                    } else {
                        Ok(())
                    }
                };
                if set_memory().is_err() {
                    set_memsw()?;
                    set_memory()?;
                } else {
                    set_memsw()?;
                }
            }
        }
        if let Some(max) = totals.pids_max {
            let dir = dir_of("pids")?;
            PidController::new(dir.clone(), v2)
                .set_pid_max(MaxValue::Value(i64::from(max)))
                .map_err(controller_err("setting the user's pids total", &dir))?;
        }
        Ok(())
    }

    /// Writes the limits. Memory first: it is what protects the host most.
    fn apply(&self, limits: &CgroupLimits) -> Result<SwapBound, CgroupError> {
        let v2 = matches!(self.layout, Layout::V2(_));
        let memory_dir = self.required_dir("memory")?;
        let memory = MemController::new(memory_dir.clone(), v2);
        let max = i64::try_from(limits.memory_max).unwrap_or(i64::MAX);
        memory
            .set_limit(max)
            .map_err(controller_err("setting the memory limit", &memory_dir))?;
        // No swap beyond the limit: v2 bounds swap alone, v1 memory+swap.
        let (swap_file, swap_value) = if v2 {
            ("memory.swap.max", 0)
        } else {
            ("memory.memsw.limit_in_bytes", max)
        };
        let swap = if memory_dir.join(swap_file).exists() {
            memory
                .set_memswap_limit(swap_value)
                .map_err(controller_err("forbidding swap", &memory_dir))?;
            SwapBound {
                swap_bytes: Some(0),
                note: None,
            }
        } else {
            SwapBound {
                swap_bytes: None,
                note: Some(if host_has_swap() {
                    format!("swap is not bounded: this kernel has no swap accounting ({swap_file} is missing)")
                } else {
                    "the host has no swap".to_owned()
                }),
            }
        };
        if let Some(high) = limits.memory_high {
            let high = i64::try_from(high).unwrap_or(i64::MAX);
            if v2 {
                memory.set_mem(SetMemory {
                    high: Some(MaxValue::Value(high)),
                    low: None,
                    min: None,
                    max: None,
                })
            } else {
                memory.set_soft_limit(high)
            }
            .map_err(controller_err("setting memory.high", &memory_dir))?;
        }

        let pids_dir = self.required_dir("pids")?;
        PidController::new(pids_dir.clone(), v2)
            .set_pid_max(MaxValue::Value(i64::from(limits.pids_max)))
            .map_err(controller_err("setting pids.max", &pids_dir))?;

        let cpu_dir = self.required_dir("cpu")?;
        let cpu = CpuController::new(cpu_dir.clone(), v2);
        let quota = i64::try_from(limits.cpu_quota_us()).unwrap_or(i64::MAX);
        if v2 {
            // Written whole: cgroups-rs would first read cpu.max back to
            // merge a missing half, and both halves are known here.
            let file = cpu_dir.join("cpu.max");
            std::fs::write(&file, format!("{quota} {CPU_PERIOD_US}")).map_err(|source| {
                CgroupError::Io {
                    step: "setting the CPU quota",
                    path: file.clone(),
                    source,
                }
            })?;
        } else {
            // The period first: the kernel checks the quota against it.
            cpu.set_cfs_period(CPU_PERIOD_US)
                .and_then(|()| cpu.set_cfs_quota(quota))
                .map_err(controller_err("setting the CPU quota", &cpu_dir))?;
        }
        let weight = if v2 {
            u64::from(limits.cpu_weight)
        } else {
            limits.v1_shares()
        };
        cpu.set_shares(weight)
            .map_err(controller_err("setting the CPU weight", &cpu_dir))?;
        Ok(swap)
    }

    /// Moves process `pid` (purple-init's still-waiting child) into the
    /// sandbox cgroup of every hierarchy.
    pub fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        let v2 = matches!(self.layout, Layout::V2(_));
        for dir in &self.dirs {
            PidController::new(dir.clone(), v2)
                .add_task_by_tgid(&CgroupPid::from(u64::from(pid)))
                .map_err(controller_err("moving the sandbox into its cgroup", dir))?;
        }
        Ok(())
    }

    /// What a process inside must find in /proc/self/cgroup.
    pub fn membership(&self) -> Vec<Membership> {
        layout::expected_membership(&self.layout, &self.relative)
    }

    /// The cgroup path below the hierarchy root, for the report.
    pub fn path(&self) -> String {
        layout::join_cgroup_path("/", &self.relative)
    }

    pub fn version(&self) -> &'static str {
        self.layout.version()
    }

    pub fn swap(&self) -> &SwapBound {
        &self.swap
    }

    /// Where the supervisor can read this cgroup's counters while the
    /// sandbox runs.
    pub fn live_usage_source(&self) -> LiveUsageSource {
        match (&self.layout, self.dirs.first()) {
            (Layout::V2(_), Some(dir)) => LiveUsageSource::V2 { dir: dir.clone() },
            _ => LiveUsageSource::V1 {
                memory: self.dir_of("memory"),
                cpuacct: self.dir_of("cpuacct"),
                pids: self.dir_of("pids"),
            },
        }
    }

    pub fn counters(&self) -> Counters {
        match (&self.layout, self.dirs.first()) {
            (Layout::V2(_), Some(dir)) => counters::read_v2(dir),
            _ => match (
                self.dir_of("memory"),
                self.dir_of("pids"),
                self.dir_of("cpuacct"),
            ) {
                (Some(memory), Some(pids), Some(cpuacct)) => {
                    counters::read_v1(&memory, &pids, &cpuacct)
                }
                _ => Counters::default(),
            },
        }
    }

    /// Removes the sandbox directories (retrying briefly while the last
    /// tasks finish exiting). The parent stays: other sandboxes use it.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        self.clone_target = None;
        let v2 = matches!(self.layout, Layout::V2(_));
        let mut first_error = None;
        while let Some(dir) = self.dirs.pop() {
            if let Err(e) = PidController::new(dir.clone(), v2).delete() {
                first_error.get_or_insert(CgroupError::Remove {
                    path: dir,
                    detail: e.to_string(),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        // Failure paths end here; a directory that cannot go now is left to
        // the next run's sweep (its owner, this process, will be gone).
        let _ = self.remove();
    }
}

/// The parent is the admin's: a relative path of plain names.
pub fn check_parent(parent: &str) -> Result<(), CgroupError> {
    let bad = |why| {
        Err(CgroupError::BadParent {
            parent: parent.to_owned(),
            why,
        })
    };
    if parent.is_empty() || parent.len() > 200 {
        return bad("must be 1 to 200 characters");
    }
    for part in parent.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("must be a relative path of names, without empty, . or .. parts");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        {
            return bad("names may hold only letters, digits, '-', '_', '.' and '@'");
        }
    }
    Ok(())
}

fn make_parents(mount_point: &Path, parent: &str) -> Result<(), CgroupError> {
    let mut dir = mount_point.to_owned();
    let levels = parent.split('/').count();
    for (i, part) in parent.split('/').enumerate() {
        dir.push(part);
        match std::fs::DirBuilder::new().create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(source) => {
                return Err(CgroupError::Io {
                    step: parent_step(i + 1, levels),
                    path: dir,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// The step name for creating level `level` (1-based) of a parent path of
/// `levels` levels.
fn parent_step(level: usize, levels: usize) -> &'static str {
    if level == levels && levels > 1 {
        STEP_CREATE_CALLER
    } else {
        STEP_CREATE_PARENT
    }
}

/// On v2 a controller reaches a cgroup only when every ancestor lists it
/// in `cgroup.subtree_control`: enable memory, pids and cpu from the root
/// down to the Purple parent (whose children are the sandboxes).
fn enable_v2_controllers(mount_point: &Path, parent: &str) -> Result<(), CgroupError> {
    let controllers_file = mount_point.join("cgroup.controllers");
    let available =
        std::fs::read_to_string(&controllers_file).map_err(|source| CgroupError::Io {
            step: STEP_READ_HIERARCHY,
            path: controllers_file.clone(),
            source,
        })?;
    for controller in V2_CONTROLLERS {
        if !available.split_whitespace().any(|c| c == *controller) {
            return Err(CgroupError::MissingController {
                path: mount_point.to_owned(),
                controller,
                available: available.trim().to_owned(),
            });
        }
    }
    let mut dir = mount_point.to_owned();
    let mut levels = vec![dir.clone()];
    for part in parent.split('/') {
        dir.push(part);
        levels.push(dir.clone());
    }
    for (i, level) in levels.iter().enumerate() {
        if i > 0 {
            match std::fs::DirBuilder::new().create(level) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        step: parent_step(i, levels.len() - 1),
                        path: level.clone(),
                        source,
                    })
                }
            }
        }
        let file = level.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&file).map_err(|source| CgroupError::Io {
            step: STEP_READ_HIERARCHY,
            path: file.clone(),
            source,
        })?;
        let missing: Vec<String> = V2_CONTROLLERS
            .iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            std::fs::write(&file, missing.join(" ")).map_err(|source| CgroupError::Io {
                step: STEP_DELEGATE,
                path: file.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn host_has_swap() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("SwapTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .is_some_and(|kb| kb > 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cgroup::layout::Hierarchy;

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_max: 128 << 20,
        memory_high: Some(100 << 20),
        pids_max: 32,
        millicpus: 500,
        cpu_weight: 200,
    };

    const TOTALS: ParentLimits = ParentLimits {
        memory_max: Some(1 << 30),
        pids_max: Some(100),
    };
    const NONE: ParentLimits = ParentLimits {
        memory_max: None,
        pids_max: None,
    };

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A fake cgroup2 root. The kernel fills each new directory with its
    /// control files; in the fake, cgroups-rs's writers create them.
    fn fake_v2(controllers: &str) -> (tempfile::TempDir, Layout) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let layout = Layout::V2(Hierarchy {
            controllers: Vec::new(),
            mount_point: root.path().to_owned(),
            mount_root: "/".into(),
        });
        (root, layout)
    }

    /// In the fake tree the parent's subtree_control does not exist until
    /// written; the kernel's does. Pre-create it like the kernel would.
    fn prepare_parent(root: &Path, parent: &str) {
        let dir = root.join(parent);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    }

    #[test]
    fn v2_limits_land_in_the_right_files() {
        let (root, layout) = fake_v2("cpuset cpu io memory hugetlb pids rdma misc\n");
        prepare_parent(root.path(), "purple");
        std::fs::create_dir_all(root.path().join("purple")).unwrap();
        let cg = SandboxCgroup::create(layout, "purple", "sb1", &LIMITS, &TOTALS).unwrap();
        let dir = root.path().join("purple/sb1");
        assert_eq!(read(&dir.join("memory.max")), (128u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.high")), (100u64 << 20).to_string());
        assert_eq!(read(&dir.join("pids.max")), "32");
        assert_eq!(read(&dir.join("cpu.max")).trim(), "50000 100000");
        assert_eq!(read(&dir.join("cpu.weight")), "200");
        assert_eq!(
            read(&root.path().join("purple/memory.max")),
            (1u64 << 30).to_string()
        );
        assert_eq!(read(&root.path().join("purple/pids.max")), "100");
        // The fake has no memory.swap.max, so swap is reported, not claimed.
        assert_eq!(cg.swap().swap_bytes, None);
        assert!(cg.swap().note.is_some());
        // Controllers were enabled from the root down to the parent.
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(
            read(&root.path().join("purple/cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(cg.path(), "/purple/sb1");
        assert!(
            cg.clone_target().is_some(),
            "v2 clones straight into the cgroup"
        );
        assert_eq!(
            cg.membership(),
            vec![Membership {
                controller: String::new(),
                path: "/purple/sb1".into()
            }]
        );
    }

    #[test]
    fn a_name_is_used_once() {
        let (root, layout) = fake_v2("cpu memory pids\n");
        prepare_parent(root.path(), "p");
        std::fs::create_dir_all(root.path().join("p/sb")).unwrap();
        let err = SandboxCgroup::create(layout, "p", "sb", &LIMITS, &NONE).unwrap_err();
        assert!(
            err.to_string().contains("creating the sandbox cgroup"),
            "{err}"
        );
        assert!(
            root.path().join("p/sb").is_dir(),
            "someone else's cgroup stays"
        );
    }

    #[test]
    fn v2_missing_controller_is_refused() {
        let (_root, layout) = fake_v2("cpu io pids\n");
        let err = SandboxCgroup::create(layout, "purple", "sb", &LIMITS, &NONE).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::MissingController {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn attach_writes_cgroup_procs_and_remove_cleans_up() {
        let (root, layout) = fake_v2("cpu memory pids\n");
        prepare_parent(root.path(), "purple");
        let mut cg = SandboxCgroup::create(layout, "purple", "sb2", &LIMITS, &NONE).unwrap();
        cg.attach(4321).unwrap();
        let dir = root.path().join("purple/sb2");
        assert_eq!(read(&dir.join("cgroup.procs")), "4321");
        // A real cgroup directory holds only kernel files, which rmdir
        // ignores; the fake's files must go first.
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        cg.remove().unwrap();
        assert!(!dir.exists());
        assert!(root.path().join("purple").is_dir(), "the parent stays");
    }

    #[test]
    fn v1_limits_and_shares() {
        let root = tempfile::tempdir().unwrap();
        let mk = |name: &str, controllers: &[&str]| Hierarchy {
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
            mount_point: root.path().join(name),
            mount_root: "/".into(),
        };
        let layout = Layout::V1(vec![
            mk("memory", &["memory"]),
            mk("pids", &["pids"]),
            mk("cpu,cpuacct", &["cpu", "cpuacct"]),
        ]);
        for h in layout.hierarchies() {
            std::fs::create_dir_all(&h.mount_point).unwrap();
        }
        let cg = SandboxCgroup::create(layout, "purple/uid-7", "sb3", &LIMITS, &TOTALS).unwrap();
        let m = root.path().join("memory/purple/uid-7/sb3");
        assert_eq!(
            read(
                &root
                    .path()
                    .join("memory/purple/uid-7/memory.limit_in_bytes")
            ),
            (1u64 << 30).to_string(),
            "the user's total sits on the parent"
        );
        assert_eq!(read(&root.path().join("pids/purple/uid-7/pids.max")), "100");
        assert_eq!(
            read(&m.join("memory.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
        assert_eq!(
            read(&m.join("memory.soft_limit_in_bytes")),
            (100u64 << 20).to_string()
        );
        assert_eq!(
            read(&root.path().join("pids/purple/uid-7/sb3/pids.max")),
            "32"
        );
        let c = root.path().join("cpu,cpuacct/purple/uid-7/sb3");
        assert_eq!(read(&c.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&c.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&c.join("cpu.shares")), "2048");
        assert_eq!(cg.membership().len(), 4);
        assert_eq!(cg.version(), "v1");
        assert!(cg.clone_target().is_none(), "v1 moves the child instead");
    }

    #[test]
    fn only_a_host_without_cgroups_allows_best_effort() {
        let (_root, layout) = fake_v2("cpu io pids\n");
        let err = SandboxCgroup::create(layout, "purple", "sb", &LIMITS, &NONE).unwrap_err();
        assert!(err.host_lacks_cgroups(), "{err}");
        let (root, layout) = fake_v2("cpu memory pids\n");
        prepare_parent(root.path(), "p");
        std::fs::create_dir_all(root.path().join("p/sb")).unwrap();
        let err = SandboxCgroup::create(layout, "p", "sb", &LIMITS, &NONE).unwrap_err();
        assert!(
            !err.host_lacks_cgroups(),
            "a failure with the sandbox's own cgroup must not drop the limits: {err}"
        );
        let caller_dir = CgroupError::Io {
            step: parent_step(2, 2),
            path: "/sys/fs/cgroup/purple/uid-1000".into(),
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert!(
            !caller_dir.host_lacks_cgroups(),
            "the caller's own directory can fail for reasons a caller provokes"
        );
        assert_eq!(parent_step(1, 2), STEP_CREATE_PARENT);
        assert_eq!(parent_step(1, 1), STEP_CREATE_PARENT);
        let write_failure = CgroupError::Controller {
            step: "setting the CPU quota",
            path: "/x".into(),
            detail: "Invalid argument".into(),
        };
        assert!(!write_failure.host_lacks_cgroups());
    }

    #[test]
    fn parents_are_plain_relative_names() {
        assert!(check_parent("purple").is_ok());
        assert!(check_parent("system.slice/purple.service").is_ok());
        for bad in [
            "", "/purple", "purple/", "a//b", "../x", "a/./b", "a b", "a\nb",
        ] {
            assert!(check_parent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_conversions() {
        let mut l = LIMITS;
        l.millicpus = 10;
        assert_eq!(l.cpu_quota_us(), 1000);
        l.millicpus = 2000;
        assert_eq!(l.cpu_quota_us(), 200_000);
        l.cpu_weight = 1;
        assert_eq!(l.v1_shares(), 10);
        l.cpu_weight = 100;
        assert_eq!(l.v1_shares(), 1024);
    }
}
