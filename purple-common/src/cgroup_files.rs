//! Reading a sandbox cgroup's counter files, shared by purple-init (the
//! final counters in the exit report) and the supervisor (live usage of a
//! running sandbox, which `serve` shows). The files are world-readable in
//! root-owned directories, so the unprivileged supervisor reads them
//! directly; purple-init tells it where they are once the sandbox started.
//!
//! Every counter a kernel does not offer is `None`, never a made-up zero.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The value of `key` in a flat-keyed file (`key value` per line), such as
/// memory.events, memory.oom_control, pids.events or cpu.stat.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number.
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `dir/file`'s text, `None` when it cannot be read.
pub fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// Where a running sandbox's counters are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LiveUsageSource {
    /// cgroup v2: the one sandbox directory.
    V2 { dir: PathBuf },
    /// cgroup v1: one directory per controller (absent when the host does
    /// not mount that controller).
    V1 {
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

/// A running sandbox's usage right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveUsage {
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// User and system CPU time of every process so far.
    pub cpu_ms: Option<u64>,
    /// Processes and threads now.
    pub processes: Option<u64>,
}

impl LiveUsageSource {
    pub fn read(&self) -> LiveUsage {
        let number =
            |dir: Option<&Path>, file| dir.and_then(|d| read(d, file)).as_deref().and_then(single);
        match self {
            LiveUsageSource::V2 { dir } => LiveUsage {
                memory_bytes: number(Some(dir), "memory.current"),
                memory_peak_bytes: number(Some(dir), "memory.peak"),
                cpu_ms: read(dir, "cpu.stat")
                    .as_deref()
                    .and_then(|t| keyed(t, "usage_usec"))
                    .map(|usec| usec / 1000),
                processes: number(Some(dir), "pids.current"),
            },
            LiveUsageSource::V1 {
                memory,
                cpuacct,
                pids,
            } => LiveUsage {
                memory_bytes: number(memory.as_deref(), "memory.usage_in_bytes"),
                memory_peak_bytes: number(memory.as_deref(), "memory.max_usage_in_bytes"),
                cpu_ms: number(cpuacct.as_deref(), "cpuacct.usage").map(|ns| ns / 1_000_000),
                processes: number(pids.as_deref(), "pids.current"),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_single_files() {
        let events = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "oom"), Some(2));
        assert_eq!(keyed(events, "missing"), None);
        assert_eq!(single("1234\n"), Some(1234));
        assert_eq!(single("max\n"), None);
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn live_usage_from_a_fake_v2_tree() {
        let dir = tree(&[
            ("memory.current", "1048576\n"),
            ("memory.peak", "2097152\n"),
            ("cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n"),
            ("pids.current", "3\n"),
        ]);
        let usage = LiveUsageSource::V2 {
            dir: dir.path().to_owned(),
        }
        .read();
        assert_eq!(
            usage,
            LiveUsage {
                memory_bytes: Some(1 << 20),
                memory_peak_bytes: Some(2 << 20),
                cpu_ms: Some(1500),
                processes: Some(3),
            }
        );
    }

    #[test]
    fn live_usage_from_a_fake_v1_tree_with_a_controller_missing() {
        let memory = tree(&[
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.max_usage_in_bytes", "8192\n"),
        ]);
        let cpuacct = tree(&[("cpuacct.usage", "2500000000\n")]);
        let usage = LiveUsageSource::V1 {
            memory: Some(memory.path().to_owned()),
            cpuacct: Some(cpuacct.path().to_owned()),
            pids: None,
        }
        .read();
        assert_eq!(usage.memory_bytes, Some(4096));
        assert_eq!(usage.memory_peak_bytes, Some(8192));
        assert_eq!(usage.cpu_ms, Some(2500));
        assert_eq!(usage.processes, None);
    }
}
