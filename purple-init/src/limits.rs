//! The limits a sandbox runs under: the policy's, bounded by the admin
//! config's maxima (for unprivileged callers), with the admin's defaults
//! for whatever the policy leaves out. Every sandbox ends up bounded in
//! memory, tasks and CPU, asked or not.
//!
//! Pure: the caller's privilege and the host's CPU count come in as values.

use purple_common::policy::{Policy, ResourceMode};
use purple_common::values::{ByteSize, CpuQuota, Timeout};

use crate::admin::AdminConfig;
use crate::cgroup::CgroupLimits;

/// Per-process limits, set with setrlimit before the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    pub cpu_time_s: Option<u64>,
    pub open_files: u64,
    pub file_size: Option<u64>,
}

/// One of the caller's own limits, as purple-init found it at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerRlimit {
    pub soft: u64,
    pub hard: u64,
}

#[cfg(test)]
impl CallerRlimit {
    pub const UNLIMITED: CallerRlimit = CallerRlimit {
        soft: u64::MAX,
        hard: u64::MAX,
    };
}

/// The caller's limits of the resources purple-init lifts for itself (a
/// caller's low CPU, file-size or memory limit would otherwise kill or
/// starve the trusted side: no report, no terminal audit event). The
/// workload gets them back before Purple's own limits lower them further,
/// so a sandbox never has more than its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerRlimits {
    pub cpu: CallerRlimit,
    pub file_size: CallerRlimit,
    pub address_space: CallerRlimit,
    pub data: CallerRlimit,
    pub stack: CallerRlimit,
    pub open_files: CallerRlimit,
}

#[cfg(test)]
impl CallerRlimits {
    pub const UNLIMITED: CallerRlimits = CallerRlimits {
        cpu: CallerRlimit::UNLIMITED,
        file_size: CallerRlimit::UNLIMITED,
        address_space: CallerRlimit::UNLIMITED,
        data: CallerRlimit::UNLIMITED,
        stack: CallerRlimit::UNLIMITED,
        open_files: CallerRlimit::UNLIMITED,
    };
}

impl Rlimits {
    /// What the command really runs under: Purple's limit or the caller's
    /// own (soft) one, whichever is lower; a limit the caller set and
    /// Purple did not ask for counts too.
    pub fn in_force(&self, caller: &CallerRlimits) -> Rlimits {
        let finite = |limit: u64| (limit != u64::MAX).then_some(limit);
        let lower = |asked: Option<u64>, caller: CallerRlimit| match asked {
            Some(a) => Some(a.min(caller.soft)),
            None => finite(caller.soft),
        };
        Rlimits {
            cpu_time_s: lower(self.cpu_time_s, caller.cpu),
            open_files: self.open_files.min(caller.open_files.soft),
            file_size: lower(self.file_size, caller.file_size),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedLimits {
    pub cgroup: CgroupLimits,
    pub mode: ResourceMode,
    pub timeout_ms: Option<u64>,
    pub rlimits: Rlimits,
    /// The caller's own limits, restored in the workload before `rlimits`.
    pub caller_rlimits: CallerRlimits,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{key} {asked} is above the maximum {maximum} that the admin config {config} allows")]
    AboveMaximum {
        key: String,
        asked: String,
        maximum: String,
        config: String,
    },
    #[error("resources.memory_high {high} is above the memory limit {memory}")]
    HighAboveMemory { high: ByteSize, memory: ByteSize },
}

/// Who asks, for the maxima: root callers are not bounded by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Root,
    Unprivileged,
}

pub fn resolve(
    policy: &Policy,
    admin: &AdminConfig,
    caller: Caller,
    caller_rlimits: CallerRlimits,
    online_cpus: u32,
    config_path: &str,
) -> Result<ResolvedLimits, LimitError> {
    let res = &policy.resources;
    let (defaults, maxima) = (&admin.defaults, &admin.maxima);
    let bounded = caller == Caller::Unprivileged;
    let check = |key: &str, asked: Option<String>, over: bool, maximum: String| match asked {
        Some(asked) if bounded && over => Err(LimitError::AboveMaximum {
            key: key.to_owned(),
            asked,
            maximum,
            config: config_path.to_owned(),
        }),
        _ => Ok(()),
    };

    let memory = res.memory.unwrap_or(defaults.memory);
    check(
        "resources.memory",
        res.memory.map(|m| m.to_string()),
        memory > maxima.memory,
        maxima.memory.to_string(),
    )?;
    if let Some(high) = res.memory_high {
        if high > memory {
            return Err(LimitError::HighAboveMemory { high, memory });
        }
    }
    let pids = res.pids.unwrap_or(defaults.pids);
    check(
        "resources.pids",
        res.pids.map(|p| p.to_string()),
        pids > maxima.pids,
        maxima.pids.to_string(),
    )?;
    let cpus = res.cpus.unwrap_or(defaults.cpus);
    let max_cpus = maxima.cpus.unwrap_or(CpuQuota::whole(online_cpus));
    check(
        "resources.cpus",
        res.cpus.map(|c| c.to_string()),
        cpus > max_cpus,
        max_cpus.to_string(),
    )?;
    let cpu_weight = res.cpu_weight.unwrap_or(defaults.cpu_weight);
    check(
        "resources.cpu_weight",
        res.cpu_weight.map(|w| w.to_string()),
        cpu_weight > maxima.cpu_weight,
        maxima.cpu_weight.to_string(),
    )?;
    let timeout = bounded_duration(res.timeout, maxima.timeout, bounded);
    check(
        "resources.timeout",
        res.timeout.map(|t| t.to_string()),
        exceeds(res.timeout, maxima.timeout),
        maxima.timeout.map(|t| t.to_string()).unwrap_or_default(),
    )?;
    let cpu_time = bounded_duration(res.cpu_time, maxima.cpu_time, bounded);
    check(
        "resources.cpu_time",
        res.cpu_time.map(|t| t.to_string()),
        exceeds(res.cpu_time, maxima.cpu_time),
        maxima.cpu_time.map(|t| t.to_string()).unwrap_or_default(),
    )?;
    let open_files = res.open_files.unwrap_or(defaults.open_files);
    check(
        "resources.open_files",
        res.open_files.map(|n| n.to_string()),
        open_files > maxima.open_files,
        maxima.open_files.to_string(),
    )?;
    let file_size = res.file_size.or(defaults.file_size);
    check(
        "resources.file_size",
        res.file_size.map(|s| s.to_string()),
        exceeds(res.file_size, maxima.file_size),
        maxima.file_size.map(|s| s.to_string()).unwrap_or_default(),
    )?;
    for (i, tmpfs) in policy.filesystem.tmpfs.iter().enumerate() {
        check(
            &format!("filesystem.tmpfs[{i}].size"),
            Some(tmpfs.size.to_string()),
            tmpfs.size > maxima.tmpfs,
            maxima.tmpfs.to_string(),
        )?;
    }

    Ok(ResolvedLimits {
        cgroup: CgroupLimits {
            memory_max: memory.bytes(),
            memory_high: res.memory_high.map(ByteSize::bytes),
            pids_max: pids,
            millicpus: cpus.millicpus(),
            cpu_weight,
        },
        mode: res.mode,
        timeout_ms: timeout.map(Timeout::millis),
        rlimits: Rlimits {
            cpu_time_s: cpu_time.map(|t| t.millis() / 1000),
            open_files: u64::from(open_files),
            file_size: file_size.map(ByteSize::bytes),
        },
        caller_rlimits,
    })
}

/// An unprivileged caller who asks for no bound gets the maximum.
fn bounded_duration(
    asked: Option<Timeout>,
    maximum: Option<Timeout>,
    bounded: bool,
) -> Option<Timeout> {
    match (asked, maximum) {
        (Some(a), _) => Some(a),
        (None, Some(m)) if bounded => Some(m),
        (None, _) => None,
    }
}

fn exceeds<T: PartialOrd>(asked: Option<T>, maximum: Option<T>) -> bool {
    matches!((asked, maximum), (Some(a), Some(m)) if a > m)
}

/// The limits of a default policy for a root caller, for other modules'
/// tests.
#[cfg(test)]
pub fn defaults_for_tests() -> ResolvedLimits {
    match resolve(
        &Policy::default(),
        &AdminConfig::default(),
        Caller::Root,
        CallerRlimits::UNLIMITED,
        2,
        "",
    ) {
        Ok(limits) => limits,
        Err(e) => unreachable!("the default policy resolves: {e}"),
    }
}

/// CPUs the host has online, for the default maximum of `--cpus`.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use purple_common::policy::parse::parse_policy;

    fn policy(text: &str) -> Policy {
        parse_policy(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn resolve_as(text: &str, caller: Caller) -> Result<ResolvedLimits, LimitError> {
        resolve(
            &policy(text),
            &AdminConfig::default(),
            caller,
            CallerRlimits::UNLIMITED,
            2,
            "/etc/purple/purple.toml",
        )
    }

    #[test]
    fn defaults_bound_every_sandbox() {
        let r = resolve_as("", Caller::Unprivileged).unwrap();
        assert_eq!(r.cgroup.memory_max, 1 << 30);
        assert_eq!(r.cgroup.pids_max, 256);
        assert_eq!(r.cgroup.millicpus, 1000);
        assert_eq!(r.cgroup.cpu_weight, 100);
        assert_eq!(r.cgroup.memory_high, None);
        assert_eq!(r.timeout_ms, None);
        assert_eq!(r.rlimits.open_files, 4096);
        assert_eq!(r.rlimits.file_size, Some(8 << 30));
        assert_eq!(r.rlimits.cpu_time_s, None);
        assert_eq!(r.mode, ResourceMode::Required);
    }

    #[test]
    fn the_policy_wins_within_the_maxima() {
        let r = resolve_as(
            "[resources]\nmemory = \"128M\"\nmemory_high = \"100M\"\npids = 32\ncpus = 0.5\n\
             cpu_weight = 50\ntimeout = \"2s\"\ncpu_time = \"10s\"\nopen_files = 64\nfile_size = \"1M\"\n",
            Caller::Unprivileged,
        )
        .unwrap();
        assert_eq!(r.cgroup.memory_max, 128 << 20);
        assert_eq!(r.cgroup.memory_high, Some(100 << 20));
        assert_eq!(r.cgroup.pids_max, 32);
        assert_eq!(r.cgroup.millicpus, 500);
        assert_eq!(r.cgroup.cpu_weight, 50);
        assert_eq!(r.timeout_ms, Some(2000));
        assert_eq!(r.rlimits.cpu_time_s, Some(10));
        assert_eq!(r.rlimits.open_files, 64);
        assert_eq!(r.rlimits.file_size, Some(1 << 20));
    }

    #[test]
    fn above_the_maximum_is_refused_for_users_and_names_it() {
        for (text, key, max) in [
            ("[resources]\nmemory = \"32G\"\n", "resources.memory", "16G"),
            ("[resources]\npids = 5000\n", "resources.pids", "4096"),
            ("[resources]\ncpus = 3\n", "resources.cpus", "2"),
            ("[resources]\ncpu_weight = 500\n", "resources.cpu_weight", "100"),
            ("[resources]\nopen_files = 100000\n", "resources.open_files", "65536"),
            (
                "[[filesystem.tmpfs]]\npath = \"/scratch\"\nsize = \"8G\"\n[resources]\nmemory = \"8G\"\n",
                "filesystem.tmpfs[0].size",
                "4G",
            ),
        ] {
            let err = resolve_as(text, Caller::Unprivileged).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(key) && message.contains(max),
                "{text}: {message}"
            );
            assert!(resolve_as(text, Caller::Root).is_ok(), "root: {text}");
        }
    }

    #[test]
    fn admin_timeout_maximum_applies_when_none_is_asked() {
        let mut admin = AdminConfig::default();
        admin.maxima.timeout = Some("1h".parse().unwrap());
        admin.maxima.cpu_time = Some("60s".parse().unwrap());
        let p = policy("");
        let r = resolve(
            &p,
            &admin,
            Caller::Unprivileged,
            CallerRlimits::UNLIMITED,
            2,
            "x",
        )
        .unwrap();
        assert_eq!(r.timeout_ms, Some(3_600_000));
        assert_eq!(r.rlimits.cpu_time_s, Some(60));
        let r = resolve(&p, &admin, Caller::Root, CallerRlimits::UNLIMITED, 2, "x").unwrap();
        assert_eq!(r.timeout_ms, None);
        let long = policy("[resources]\ntimeout = \"2h\"\n");
        let err = resolve(
            &long,
            &admin,
            Caller::Unprivileged,
            CallerRlimits::UNLIMITED,
            2,
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("3600s"), "{err}");
    }

    #[test]
    fn the_callers_own_lower_rlimits_are_what_is_in_force() {
        let asked = Rlimits {
            cpu_time_s: Some(60),
            open_files: 4096,
            file_size: None,
        };
        let caller = CallerRlimits {
            cpu: CallerRlimit { soft: 5, hard: 10 },
            open_files: CallerRlimit {
                soft: 256,
                hard: 1024,
            },
            file_size: CallerRlimit {
                soft: 1 << 20,
                hard: u64::MAX,
            },
            ..CallerRlimits::UNLIMITED
        };
        let in_force = asked.in_force(&caller);
        assert_eq!(in_force.cpu_time_s, Some(5));
        assert_eq!(in_force.open_files, 256);
        // Not asked by the policy, but set by the caller: still reported.
        assert_eq!(in_force.file_size, Some(1 << 20));
        assert_eq!(asked.in_force(&CallerRlimits::UNLIMITED), asked);
    }

    #[test]
    fn memory_high_must_fit_the_default_memory_too() {
        let err = resolve_as("[resources]\nmemory_high = \"2G\"\n", Caller::Root).unwrap_err();
        assert!(matches!(err, LimitError::HighAboveMemory { .. }), "{err}");
    }
}
