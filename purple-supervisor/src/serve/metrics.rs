//! `GET /metrics`: the Prometheus text format (version 0.0.4) of a
//! [`Snapshot`], and the start-latency histogram behind it.

use std::fmt::Write as _;
use std::time::Duration;

use super::manager::Snapshot;

/// Upper bounds of the start-latency buckets, in seconds: Purple starts a
/// sandbox in milliseconds, a loaded host in tens or hundreds of them.
const START_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound of `START_BUCKETS`.
    counts: [u64; START_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, count) in START_BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    metric(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    metric(
        &mut out,
        "purple_sandboxes",
        "gauge",
        "Sandboxes the service knows now, by status.",
    );
    for (status, n) in &snapshot.by_status {
        let _ = writeln!(out, "purple_sandboxes{{status=\"{}\"}} {n}", status.name());
    }
    metric(
        &mut out,
        "purple_sandboxes_submitted_total",
        "counter",
        "Sandboxes accepted by POST /v1/sandboxes.",
    );
    let _ = writeln!(
        out,
        "purple_sandboxes_submitted_total {}",
        snapshot.submitted
    );
    metric(
        &mut out,
        "purple_sandboxes_finished_total",
        "counter",
        "Sandboxes that finished, by final status.",
    );
    for (status, n) in &snapshot.finished {
        let _ = writeln!(
            out,
            "purple_sandboxes_finished_total{{status=\"{}\"}} {n}",
            status.name()
        );
    }
    let h = &snapshot.start_seconds;
    metric(
        &mut out,
        "purple_sandbox_start_seconds",
        "histogram",
        "From leaving the queue to the command starting.",
    );
    for (bound, count) in START_BUCKETS.iter().zip(h.counts.iter()) {
        let _ = writeln!(
            out,
            "purple_sandbox_start_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "purple_sandbox_start_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "purple_sandbox_start_seconds_sum {}", h.sum_seconds);
    let _ = writeln!(out, "purple_sandbox_start_seconds_count {}", h.count);
    let pool = &snapshot.pool;
    let gauges: [(&str, &str, String); 8] = [
        (
            "purple_pool_sandboxes",
            "Sandboxes holding a reservation.",
            pool.in_use.sandboxes.to_string(),
        ),
        (
            "purple_pool_sandboxes_max",
            "--max-sandboxes.",
            pool.max_sandboxes.to_string(),
        ),
        (
            "purple_pool_memory_bytes",
            "Memory reserved by running sandboxes.",
            pool.in_use.memory_bytes.to_string(),
        ),
        (
            "purple_pool_memory_bytes_max",
            "--max-memory.",
            pool.max_memory_bytes.to_string(),
        ),
        (
            "purple_pool_cpus",
            "CPU quota reserved by running sandboxes.",
            pool.in_use.cpus.to_string(),
        ),
        (
            "purple_pool_cpus_max",
            "--max-cpus.",
            pool.max_cpus.to_string(),
        ),
        (
            "purple_queue_length",
            "Requests waiting for room in the pool.",
            pool.queued.to_string(),
        ),
        (
            "purple_queue_max",
            "--max-queue.",
            pool.max_queue.to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        gauge(&mut out, name, help, value);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::serve::manager::{InUse, PoolView, Status};

    #[test]
    fn the_text_format_has_every_series_once_and_cumulative_buckets() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(4));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let snapshot = Snapshot {
            by_status: Status::ALL.iter().map(|s| (*s, 1)).collect(),
            submitted: 7,
            finished: vec![(Status::Completed, 3), (Status::Killed, 1)],
            start_seconds: h,
            pool: PoolView {
                max_sandboxes: 16,
                max_memory_bytes: 1 << 30,
                max_cpus: 2.0,
                in_use: InUse {
                    sandboxes: 1,
                    memory_bytes: 1 << 20,
                    cpus: 0.5,
                },
                queued: 0,
                max_queue: 1024,
            },
        };
        let text = render(&snapshot);
        assert!(text.contains("purple_sandboxes{status=\"running\"} 1\n"));
        assert!(text.contains("purple_sandboxes_finished_total{status=\"completed\"} 3\n"));
        assert!(text.contains("purple_sandbox_start_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("purple_sandbox_start_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("purple_sandbox_start_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("purple_sandbox_start_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("purple_pool_cpus 0.5\n"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
