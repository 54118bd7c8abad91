//! Where this host's cgroup controllers live, read from /proc/self/mountinfo:
//! one cgroup2 hierarchy (v2), or one cgroup v1 hierarchy per controller
//! (v1, and "hybrid" hosts, where the v1 controllers do the limiting and a
//! controller-less cgroup2 tree sits beside them).
//!
//! Pure parsing: the tests feed it mountinfo text of hosts this one is not.

use std::path::{Path, PathBuf};

/// The controllers every sandbox cgroup needs.
pub const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];
/// On v1, CPU usage comes from cpuacct (often co-mounted with cpu).
pub const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct"];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The controllers this hierarchy carries (v1: from the super options;
    /// v2: empty, the controllers are listed in `cgroup.controllers`).
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The cgroup the mount shows at its mount point, as /proc/PID/cgroup
    /// would name it (`/` unless the mount is of a subtree).
    pub mount_root: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V2(Hierarchy),
    /// The hierarchies carrying `V1_CONTROLLERS`, each listed once (cpu and
    /// cpuacct are one entry when co-mounted).
    V1(Vec<Hierarchy>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("no cgroup hierarchy is mounted (neither cgroup2 nor the v1 memory controller)")]
    NothingMounted,
    #[error("the cgroup v1 controller {controller} is not mounted")]
    MissingV1Controller { controller: &'static str },
    #[error("reading /proc/self/mountinfo: {0}")]
    Read(String),
}

impl Layout {
    pub fn version(&self) -> &'static str {
        match self {
            Layout::V2(_) => "v2",
            Layout::V1(_) => "v1",
        }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        match self {
            Layout::V2(h) => std::slice::from_ref(h),
            Layout::V1(hs) => hs,
        }
    }

    /// The hierarchy that carries `controller` (v2: the only one).
    pub fn hierarchy_of(&self, controller: &str) -> Option<&Hierarchy> {
        match self {
            Layout::V2(h) => Some(h),
            Layout::V1(hs) => hs
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller)),
        }
    }

    /// This host's layout.
    pub fn of_this_host() -> Result<Layout, LayoutError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| LayoutError::Read(e.to_string()))?;
        Layout::from_mountinfo(&text)
    }

    /// v1 wins when its memory controller is mounted: on a hybrid host the
    /// cgroup2 tree has no memory controller to give. Otherwise the cgroup2
    /// mount at /sys/fs/cgroup, or else the first cgroup2 mount.
    pub fn from_mountinfo(text: &str) -> Result<Layout, LayoutError> {
        let mounts: Vec<Mount> = text.lines().filter_map(Mount::parse).collect();
        let v1: Vec<&Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup").collect();
        if v1.iter().any(|m| m.has_controller("memory")) {
            let mut hierarchies: Vec<Hierarchy> = Vec::new();
            for controller in V1_CONTROLLERS {
                let mount = v1
                    .iter()
                    .find(|m| m.has_controller(controller))
                    .ok_or(LayoutError::MissingV1Controller { controller })?;
                if hierarchies
                    .iter()
                    .any(|h| h.mount_point == mount.mount_point)
                {
                    continue;
                }
                hierarchies.push(Hierarchy {
                    controllers: mount
                        .super_options
                        .iter()
                        .filter(|o| is_v1_controller(o))
                        .cloned()
                        .collect(),
                    mount_point: mount.mount_point.clone(),
                    mount_root: mount.root.clone(),
                });
            }
            return Ok(Layout::V1(hierarchies));
        }
        let v2: Vec<&Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
        let chosen = v2
            .iter()
            .find(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
            .or_else(|| v2.first())
            .ok_or(LayoutError::NothingMounted)?;
        Ok(Layout::V2(Hierarchy {
            controllers: Vec::new(),
            mount_point: chosen.mount_point.clone(),
            mount_root: chosen.root.clone(),
        }))
    }
}

/// The hierarchies with a freezer or kill switch: the cgroup2 tree (its
/// `cgroup.freeze` and `cgroup.kill` work without any controller, so also
/// on hybrid hosts) and the v1 freezer, each at most once.
pub fn freezable_hierarchies(text: &str) -> Vec<Hierarchy> {
    let mounts: Vec<Mount> = text.lines().filter_map(Mount::parse).collect();
    let v2 = mounts.iter().filter(|m| m.fs_type == "cgroup2");
    let v2 = v2
        .clone()
        .find(|m| m.mount_point.starts_with("/sys/fs/cgroup"))
        .or_else(|| v2.clone().next());
    let freezer = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup" && m.has_controller("freezer"));
    v2.map(|m| (m, Vec::new()))
        .into_iter()
        .chain(freezer.map(|m| (m, vec!["freezer".to_owned()])))
        .map(|(m, controllers)| Hierarchy {
            controllers,
            mount_point: m.mount_point.clone(),
            mount_root: m.root.clone(),
        })
        .collect()
}

/// The v1 super options that name controllers (the rest are mount flags
/// and `name=` hierarchies).
fn is_v1_controller(option: &str) -> bool {
    matches!(
        option,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "pids"
            | "devices"
            | "freezer"
            | "blkio"
            | "net_cls"
            | "net_prio"
            | "perf_event"
            | "hugetlb"
            | "rdma"
            | "misc"
    )
}

/// The fields of one mountinfo line Purple needs.
#[derive(Debug)]
struct Mount {
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

impl Mount {
    /// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let mut left = before.split(' ');
        let root = unescape(left.nth(3)?);
        let mount_point = PathBuf::from(unescape(left.next()?));
        let mut right = after.split(' ');
        let fs_type = right.next()?.to_owned();
        let super_options = right
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(str::to_owned)
            .collect();
        Some(Mount {
            root,
            mount_point,
            fs_type,
            super_options,
        })
    }

    fn has_controller(&self, controller: &str) -> bool {
        self.super_options.iter().any(|o| o == controller)
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(Ok(value)) = field.get(i + 1..i + 4).map(|d| u8::from_str_radix(d, 8)) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Joins cgroup paths the way /proc/PID/cgroup prints them.
pub fn join_cgroup_path(root: &str, relative: &str) -> String {
    let mut joined = String::new();
    for part in root.split('/').chain(relative.split('/')) {
        if !part.is_empty() {
            joined.push('/');
            joined.push_str(part);
        }
    }
    if joined.is_empty() {
        joined.push('/');
    }
    joined
}

/// Where a process of the sandbox cgroup must appear in /proc/self/cgroup:
/// the controller (empty for the v2 `0::` line) and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controller: String,
    pub path: String,
}

/// The lines a member of `relative` (a path below the hierarchy's mount)
/// shows in /proc/self/cgroup.
pub fn expected_membership(layout: &Layout, relative: &str) -> Vec<Membership> {
    match layout {
        Layout::V2(h) => vec![Membership {
            controller: String::new(),
            path: join_cgroup_path(&h.mount_root, relative),
        }],
        Layout::V1(_) => V1_CONTROLLERS
            .iter()
            .filter_map(|c| {
                layout.hierarchy_of(c).map(|h| Membership {
                    controller: (*c).to_owned(),
                    path: join_cgroup_path(&h.mount_root, relative),
                })
            })
            .collect(),
    }
}

/// Checks /proc/self/cgroup text against the expected memberships; the
/// first mismatch, as a sentence.
pub fn check_membership(proc_cgroup: &str, expected: &[Membership]) -> Result<(), String> {
    for want in expected {
        let found = proc_cgroup.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if want.controller.is_empty() {
                id == "0" && controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == want.controller)
            };
            matches.then_some(path)
        });
        match found {
            Some(path) if path == want.path => {}
            Some(path) => {
                return Err(format!(
                    "{} cgroup is {path}, expected {}",
                    controller_label(&want.controller),
                    want.path
                ))
            }
            None => {
                return Err(format!(
                    "no {} line in /proc/self/cgroup",
                    controller_label(&want.controller)
                ))
            }
        }
    }
    Ok(())
}

fn controller_label(controller: &str) -> &str {
    if controller.is_empty() {
        "cgroup2"
    } else {
        controller
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 28 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
30 28 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 28 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
34 28 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
35 28 0:33 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
";

    const UNIFIED: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_uses_v1_with_comounted_cpu() {
        let layout = Layout::from_mountinfo(HYBRID).unwrap_or_else(|e| panic!("{e}"));
        let Layout::V1(hs) = &layout else {
            panic!("expected v1, got {layout:?}")
        };
        assert_eq!(hs.len(), 3, "{hs:?}");
        assert_eq!(
            layout
                .hierarchy_of("cpuacct")
                .map(|h| h.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            layout.hierarchy_of("cpu").map(|h| h.controllers.clone()),
            Some(vec!["cpu".to_owned(), "cpuacct".to_owned()])
        );
        let expected = expected_membership(&layout, "purple/x");
        assert_eq!(expected.len(), 4);
        assert!(expected.iter().all(|m| m.path == "/purple/x"));
    }

    #[test]
    fn unified_host_uses_v2() {
        let layout = Layout::from_mountinfo(UNIFIED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(layout.version(), "v2");
        assert_eq!(
            expected_membership(&layout, "purple/x"),
            vec![Membership {
                controller: String::new(),
                path: "/purple/x".into()
            }]
        );
    }

    #[test]
    fn subtree_mount_root_is_part_of_the_expected_path() {
        let text = "28 24 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let layout = Layout::from_mountinfo(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            expected_membership(&layout, "purple/x")[0].path,
            "/docker/abc/purple/x"
        );
    }

    #[test]
    fn missing_controllers_are_errors() {
        assert_eq!(
            Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            Err(LayoutError::NothingMounted)
        );
        let no_pids = "33 28 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                       34 28 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            Layout::from_mountinfo(no_pids),
            Err(LayoutError::MissingV1Controller { controller: "pids" })
        );
    }

    #[test]
    fn escaped_mount_points() {
        let text = "28 24 0:26 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n";
        let layout = Layout::from_mountinfo(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            layout.hierarchies()[0].mount_point,
            PathBuf::from("/sys/fs/cgroup x")
        );
    }

    #[test]
    fn membership_check() {
        let layout = Layout::from_mountinfo(HYBRID).unwrap_or_else(|e| panic!("{e}"));
        let expected = expected_membership(&layout, "purple/x");
        let inside = "9:name=systemd:/\n8:pids:/purple/x\n4:memory:/purple/x\n\
                      2:cpu,cpuacct:/purple/x\n0::/\n";
        assert_eq!(check_membership(inside, &expected), Ok(()));
        let outside = "8:pids:/purple/x\n4:memory:/user.slice\n2:cpu,cpuacct:/purple/x\n";
        let err = check_membership(outside, &expected).unwrap_err();
        assert!(err.contains("memory cgroup is /user.slice"), "{err}");
        assert!(check_membership("8:pids:/purple/x\n", &expected).is_err());
        let v2 = expected_membership(
            &Layout::from_mountinfo(UNIFIED).unwrap_or_else(|e| panic!("{e}")),
            "purple/x",
        );
        assert_eq!(check_membership("0::/purple/x\n", &v2), Ok(()));
        assert!(check_membership("0::/purple/x/../y\n", &v2).is_err());
        assert!(check_membership("1:name=systemd:/purple/x\n", &v2).is_err());
    }

    #[test]
    fn joins() {
        assert_eq!(join_cgroup_path("/", ""), "/");
        assert_eq!(join_cgroup_path("/", "purple/a"), "/purple/a");
        assert_eq!(join_cgroup_path("/a/", "/b/"), "/a/b");
    }
}
