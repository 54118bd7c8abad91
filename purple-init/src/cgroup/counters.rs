//! What a sandbox's cgroup counted: peak memory, CPU time, peak task
//! count, OOM kills and refused forks, for v1 and v2.
//!
//! Read by Purple itself rather than through cgroups-rs's stat readers:
//! those panic on v2 when a file is missing (`memory_stat`) and do not
//! expose `memory.events`' oom_kill or `pids.peak`. Every counter that a
//! kernel does not offer is `None`, never a made-up zero.

use std::path::Path;

use purple_common::cgroup_files::{keyed, read, single};
use purple_common::report::{LimitEvents, Usage};

/// Counters of one sandbox cgroup, as the exit report wants them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub usage: Usage,
    pub events: LimitEvents,
}

/// v2: everything lives in the one sandbox directory.
pub fn read_v2(dir: &Path) -> Counters {
    let cpu_stat = read(dir, "cpu.stat");
    let usec = |key| cpu_stat.as_deref().and_then(|t| keyed(t, key));
    Counters {
        usage: Usage {
            memory_peak_bytes: read(dir, "memory.peak").as_deref().and_then(single),
            cpu_user_ms: usec("user_usec").map(|u| u / 1000),
            cpu_system_ms: usec("system_usec").map(|u| u / 1000),
            pids_peak: read(dir, "pids.peak").as_deref().and_then(single),
        },
        events: LimitEvents {
            oom_kills: read(dir, "memory.events")
                .as_deref()
                .and_then(|t| keyed(t, "oom_kill"))
                .unwrap_or(0),
            pids_limit_hits: read(dir, "pids.events")
                .as_deref()
                .and_then(|t| keyed(t, "max"))
                .unwrap_or(0),
        },
    }
}

/// v1: one directory per controller.
pub fn read_v1(memory: &Path, pids: &Path, cpuacct: &Path) -> Counters {
    let nanos_to_ms = |file| {
        read(cpuacct, file)
            .as_deref()
            .and_then(single)
            .map(|ns| ns / 1_000_000)
    };
    Counters {
        usage: Usage {
            memory_peak_bytes: read(memory, "memory.max_usage_in_bytes")
                .as_deref()
                .and_then(single),
            cpu_user_ms: nanos_to_ms("cpuacct.usage_user"),
            cpu_system_ms: nanos_to_ms("cpuacct.usage_sys"),
            pids_peak: read(pids, "pids.peak").as_deref().and_then(single),
        },
        events: LimitEvents {
            oom_kills: read(memory, "memory.oom_control")
                .as_deref()
                .and_then(|t| keyed(t, "oom_kill"))
                .unwrap_or(0),
            pids_limit_hits: read(pids, "pids.events")
                .as_deref()
                .and_then(|t| keyed(t, "max"))
                .unwrap_or(0),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn v2_counters_from_a_fake_tree() {
        let dir = tree(&[
            ("memory.peak", "134217728\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("pids.peak", "32\n"),
            ("pids.events", "max 907\n"),
            (
                "cpu.stat",
                "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
            ),
        ]);
        let c = read_v2(dir.path());
        assert_eq!(c.usage.memory_peak_bytes, Some(128 << 20));
        assert_eq!(c.usage.cpu_user_ms, Some(1000));
        assert_eq!(c.usage.cpu_system_ms, Some(500));
        assert_eq!(c.usage.pids_peak, Some(32));
        assert_eq!(c.events.oom_kills, 1);
        assert_eq!(c.events.pids_limit_hits, 907);
    }

    #[test]
    fn v2_missing_files_are_unknown_not_zero() {
        let dir = tree(&[("cpu.stat", "usage_usec 10\n")]);
        let c = read_v2(dir.path());
        assert_eq!(c.usage, Usage::default());
        assert_eq!(c.events, LimitEvents::default());
    }

    #[test]
    fn v1_counters_from_a_fake_tree() {
        let memory = tree(&[
            ("memory.max_usage_in_bytes", "1048576\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ]);
        let pids = tree(&[("pids.peak", "5\n"), ("pids.events", "max 0\n")]);
        let cpuacct = tree(&[
            ("cpuacct.usage_user", "2000000000\n"),
            ("cpuacct.usage_sys", "3000000\n"),
        ]);
        let c = read_v1(memory.path(), pids.path(), cpuacct.path());
        assert_eq!(c.usage.memory_peak_bytes, Some(1 << 20));
        assert_eq!(c.usage.cpu_user_ms, Some(2000));
        assert_eq!(c.usage.cpu_system_ms, Some(3));
        assert_eq!(c.usage.pids_peak, Some(5));
        assert_eq!(c.events.oom_kills, 2);
        assert_eq!(c.events.pids_limit_hits, 0);
    }
}
