//! The SandboxManager: every sandbox `serve` knows, from submission to the
//! end of its retention, the pool that bounds them, and the counters the
//! metrics show. One mutex guards the state; nothing slow (starting
//! purple-init, reading pipes, reading cgroup files) happens under it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use purple_common::cgroup_files::{LiveUsage, LiveUsageSource};
use purple_common::policy::Policy;
use purple_common::report::{ExitReport, Outcome};
use purple_common::values::{ByteSize, CpuQuota};
use serde::Serialize;

use super::metrics::Histogram;
use super::output::{OutputLog, OutputTotals};
use super::pool::{Capacity, Need, Pool, PoolError};
use super::runner;
use crate::launcher::StopHandle;

/// What `serve`'s options fix for its whole life.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub capacity: Capacity,
    pub max_output: u64,
    pub keep_finished: Duration,
    /// Output kept by finished sandboxes, all together: past it the oldest
    /// finished sandboxes are forgotten early, so that retention cannot add
    /// up to unbounded memory.
    pub max_retained_output: u64,
    /// Stdin bytes held for queued sandboxes, all together.
    pub max_queued_stdin: u64,
    /// Filled into policies that name no memory limit or CPU quota, so
    /// that what the pool reserves is what the cgroup enforces.
    pub default_memory: ByteSize,
    pub default_cpus: CpuQuota,
    pub init: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Initializing,
    Running,
    Completed,
    Failed,
    Killed,
    Timeout,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Initializing,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Killed,
        Status::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Initializing => "initializing",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Killed => "killed",
            Status::Timeout => "timeout",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Killed | Status::Timeout
        )
    }

    /// The API's status for a report. A stop the service asked for is
    /// `killed`; one nobody here asked for (purple-init was signalled some
    /// other way) is a failure.
    fn of_report(outcome: Outcome, kill_requested: bool) -> Status {
        match outcome {
            Outcome::Exited | Outcome::Signaled => Status::Completed,
            Outcome::Timeout => Status::Timeout,
            Outcome::Interrupted if kill_requested => Status::Killed,
            Outcome::Interrupted
            | Outcome::NotFound
            | Outcome::NotExecutable
            | Outcome::Refused
            | Outcome::SetupFailed
            | Outcome::SeccompViolation
            | Outcome::Oom => Status::Failed,
        }
    }
}

/// A validated request to run one sandbox.
#[derive(Debug)]
pub struct Submission {
    pub argv: Vec<String>,
    pub policy: Policy,
    pub stdin: Option<Vec<u8>>,
}

/// What the runner needs and nobody else: taken when the sandbox leaves
/// the queue.
#[derive(Debug)]
pub struct Job {
    pub policy: Policy,
    pub stdin: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("queued requests already hold {held} of stdin and arguments (at most {max}); try again when sandboxes have started")]
    StdinBacklog { held: String, max: String },
}

#[derive(Debug)]
struct Entry {
    argv: Vec<String>,
    status: Status,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    finished_instant: Option<Instant>,
    need: Need,
    job: Option<Job>,
    stop: Option<StopHandle>,
    kill_requested: bool,
    usage: Option<LiveUsageSource>,
    output: Arc<OutputLog>,
    report: Option<ExitReport>,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Stats {
    submitted: u64,
    finished: BTreeMap<Status, u64>,
    start_seconds: Histogram,
}

#[derive(Debug)]
struct State {
    entries: HashMap<String, Entry>,
    /// Ids in submission order (the list endpoint's order).
    order: Vec<String>,
    pool: Pool<String>,
    shutting_down: bool,
    /// Stdin bytes of the sandboxes in the queue.
    queued_stdin: u64,
    stats: Stats,
}

#[derive(Debug)]
pub struct Manager {
    config: ServeConfig,
    state: Mutex<State>,
    /// Notified whenever a sandbox starts, finishes or leaves the queue.
    changed: Condvar,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub status: Status,
    pub argv: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reserved {
    pub memory_bytes: u64,
    pub cpus: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    #[serde(flatten)]
    pub now: LiveUsage,
    /// Read by purple-netd only when the sandbox ends (docs/api.md).
    pub network: Option<()>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputView {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub kept_bytes: u64,
    pub truncated: bool,
}

impl From<OutputTotals> for OutputView {
    fn from(t: OutputTotals) -> OutputView {
        OutputView {
            stdout_bytes: t.stdout_bytes,
            stderr_bytes: t.stderr_bytes,
            kept_bytes: t.kept_bytes,
            truncated: t.truncated,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Details {
    #[serde(flatten)]
    pub summary: Summary,
    pub reserved: Reserved,
    pub queue_position: Option<usize>,
    pub usage: Option<UsageView>,
    pub output: OutputView,
    pub report: Option<ExitReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InUse {
    pub sandboxes: usize,
    pub memory_bytes: u64,
    pub cpus: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub max_sandboxes: usize,
    pub max_memory_bytes: u64,
    pub max_cpus: f64,
    pub in_use: InUse,
    pub queued: usize,
    pub max_queue: usize,
}

/// Everything `/metrics` shows, taken at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub by_status: Vec<(Status, u64)>,
    pub submitted: u64,
    pub finished: Vec<(Status, u64)>,
    pub start_seconds: Histogram,
    pub pool: PoolView,
}

/// What an argv costs to keep, roughly.
fn argv_bytes(argv: &[String]) -> u64 {
    argv.iter().map(|a| a.len() as u64 + 24).sum()
}

/// Most bytes of argv one list entry shows; `GET /v1/sandboxes/{id}`
/// has all of it.
const LIST_ARGV_BYTES: usize = 1024;

/// The first arguments up to [`LIST_ARGV_BYTES`], then `"..."`.
fn shortened(argv: &[String]) -> Vec<String> {
    let mut total = 0;
    let mut out = Vec::new();
    for arg in argv {
        total += arg.len();
        if total > LIST_ARGV_BYTES {
            out.push("...".to_owned());
            break;
        }
        out.push(arg.clone());
    }
    out
}

fn millicpus_to_cpus(m: u64) -> f64 {
    m as f64 / 1000.0
}

impl Manager {
    pub fn new(config: ServeConfig) -> Arc<Manager> {
        let pool = Pool::new(config.capacity);
        Arc::new(Manager {
            config,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: Vec::new(),
                pool,
                shutting_down: false,
                queued_stdin: 0,
                stats: Stats::default(),
            }),
            changed: Condvar::new(),
        })
    }

    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the state consistent at each step, so
        // a panicked holder (a bug) must not take the whole service down.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a sandbox; it starts as soon as the pool has room for it.
    pub fn submit(self: &Arc<Self>, mut submission: Submission) -> Result<String, SubmitError> {
        let resources = &mut submission.policy.resources;
        let memory = *resources.memory.get_or_insert(self.config.default_memory);
        let cpus = *resources.cpus.get_or_insert(self.config.default_cpus);
        let need = Need {
            memory_bytes: memory.bytes(),
            millicpus: u64::from(cpus.millicpus()),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let mut state = self.lock();
        if state.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        let stdin_bytes =
            submission.stdin.as_ref().map_or(0, |s| s.len() as u64) + argv_bytes(&submission.argv);
        if state.queued_stdin + stdin_bytes > self.config.max_queued_stdin {
            return Err(SubmitError::StdinBacklog {
                held: ByteSize::from_bytes(state.queued_stdin).human(),
                max: ByteSize::from_bytes(self.config.max_queued_stdin).human(),
            });
        }
        state.pool.enqueue(id.clone(), need)?;
        state.queued_stdin += stdin_bytes;
        state.entries.insert(
            id.clone(),
            Entry {
                argv: submission.argv,
                status: Status::Queued,
                created_at: SystemTime::now(),
                started_at: None,
                finished_at: None,
                finished_instant: None,
                need,
                job: Some(Job {
                    policy: submission.policy,
                    stdin: submission.stdin,
                }),
                stop: None,
                kill_requested: false,
                usage: None,
                output: Arc::new(OutputLog::new(self.config.max_output)),
                report: None,
                error: None,
            },
        );
        state.order.push(id.clone());
        state.stats.submitted += 1;
        self.dispatch(&mut state);
        Ok(id)
    }

    /// Starts every queued sandbox that fits now, in queue order.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        // Shutdown kills the queue; nothing may start from it meanwhile.
        if state.shutting_down {
            return;
        }
        while let Some((id, need)) = state.pool.start_next() {
            let Some(entry) = state.entries.get_mut(&id) else {
                state.pool.release(need);
                continue;
            };
            let Some(job) = entry.job.take() else {
                state.pool.release(need);
                continue;
            };
            let stdin_bytes =
                job.stdin.as_ref().map_or(0, |s| s.len() as u64) + argv_bytes(&entry.argv);
            state.queued_stdin = state.queued_stdin.saturating_sub(stdin_bytes);
            entry.status = Status::Initializing;
            let manager = Arc::clone(self);
            let argv = entry.argv.clone();
            let output = Arc::clone(&entry.output);
            let runner_id = id.clone();
            let spawned = std::thread::Builder::new()
                .name("sandbox".to_owned())
                .spawn(move || runner::run(&manager, &runner_id, argv, job, &output));
            if let Err(e) = spawned {
                self.finish_locked(state, &id, Err(format!("starting a thread: {e}")));
            }
        }
    }

    /// The runner has sent the request: from now on a kill goes to
    /// purple-init as a stop byte.
    pub fn attach_stop(&self, id: &str, stop: StopHandle) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(id) {
            if entry.kill_requested {
                stop.stop(libc::SIGTERM);
            }
            entry.stop = Some(stop);
        }
    }

    /// True when a kill came before the runner could start purple-init.
    pub fn kill_requested(&self, id: &str) -> bool {
        self.lock()
            .entries
            .get(id)
            .is_some_and(|entry| entry.kill_requested)
    }

    /// purple-init says the sandbox exists: the command starts now.
    pub fn mark_running(&self, id: &str, usage: Option<LiveUsageSource>, since_dequeued: Duration) {
        let mut state = self.lock();
        state.stats.start_seconds.observe(since_dequeued);
        if let Some(entry) = state.entries.get_mut(id) {
            if entry.status == Status::Initializing {
                entry.status = Status::Running;
                entry.started_at = Some(SystemTime::now());
                entry.usage = usage;
            }
        }
        self.changed.notify_all();
    }

    /// The sandbox ended (`Ok`: purple-init's report) or could not be
    /// started or followed (`Err`: why). Releases its reservation and
    /// starts whatever now fits.
    pub fn finish(self: &Arc<Self>, id: &str, ending: Result<ExitReport, String>) {
        let mut state = self.lock();
        self.finish_locked(&mut state, id, ending);
        Self::forget_old(&mut state, &self.config);
        self.dispatch(&mut state);
    }

    fn finish_locked(&self, state: &mut State, id: &str, ending: Result<ExitReport, String>) {
        let Some(entry) = state.entries.get_mut(id) else {
            return;
        };
        if entry.status.is_finished() {
            return;
        }
        let need = entry.need;
        entry.status = match &ending {
            Ok(report) => Status::of_report(report.status, entry.kill_requested),
            Err(_) if entry.kill_requested => Status::Killed,
            Err(_) => Status::Failed,
        };
        match ending {
            Ok(report) => entry.report = Some(report),
            Err(error) => entry.error = Some(error),
        }
        entry.finished_at = Some(SystemTime::now());
        entry.finished_instant = Some(Instant::now());
        entry.stop = None;
        entry.usage = None;
        entry.output.end();
        let status = entry.status;
        state.pool.release(need);
        *state.stats.finished.entry(status).or_default() += 1;
        self.changed.notify_all();
    }

    fn summary(id: &str, entry: &Entry) -> Summary {
        use purple_common::audit::rfc3339_at;
        Summary {
            id: id.to_owned(),
            status: entry.status,
            argv: entry.argv.clone(),
            created_at: rfc3339_at(entry.created_at),
            started_at: entry.started_at.map(rfc3339_at),
            finished_at: entry.finished_at.map(rfc3339_at),
            exit_code: entry.report.as_ref().map(|r| r.exit_code),
        }
    }

    pub fn list(&self) -> Vec<Summary> {
        let state = self.lock();
        state
            .order
            .iter()
            .filter_map(|id| {
                state.entries.get(id).map(|e| Summary {
                    argv: shortened(&e.argv),
                    ..Manager::summary(id, e)
                })
            })
            .collect()
    }

    /// The status and the final output line of the output endpoint.
    pub fn status_of(&self, id: &str) -> Option<(Status, Option<i32>)> {
        let state = self.lock();
        let entry = state.entries.get(id)?;
        Some((entry.status, entry.report.as_ref().map(|r| r.exit_code)))
    }

    pub fn output_of(&self, id: &str) -> Option<Arc<OutputLog>> {
        self.lock().entries.get(id).map(|e| Arc::clone(&e.output))
    }

    pub fn details(&self, id: &str) -> Option<Details> {
        let (details, source) = {
            let state = self.lock();
            let entry = state.entries.get(id)?;
            let details = Details {
                summary: Manager::summary(id, entry),
                reserved: Reserved {
                    memory_bytes: entry.need.memory_bytes,
                    cpus: millicpus_to_cpus(entry.need.millicpus),
                },
                queue_position: state.pool.position(&id.to_owned()),
                usage: None,
                output: entry.output.totals().into(),
                report: entry.report.clone(),
                error: entry.error.clone(),
            };
            (details, entry.usage.clone())
        };
        // The cgroup files are read outside the lock (they are small, but a
        // file system read is still no reason to hold up every other call).
        let usage = source.map(|s| UsageView {
            now: s.read(),
            network: None,
        });
        Some(Details { usage, ..details })
    }

    /// Waits until the sandbox finished or `limit` passed.
    pub fn wait(&self, id: &str, limit: Duration) -> Option<Details> {
        {
            let state = self.lock();
            state.entries.get(id)?;
            let _ = self
                .changed
                .wait_timeout_while(state, limit, |s| {
                    s.entries.get(id).is_some_and(|e| !e.status.is_finished())
                })
                .unwrap_or_else(|e| e.into_inner());
        }
        self.details(id)
    }

    /// Ends a sandbox: a queued one leaves the queue, a starting or running
    /// one is stopped by its purple-init (which kills PID 1, and so every
    /// process of the sandbox) and waited for up to `limit`.
    pub fn kill(self: &Arc<Self>, id: &str, limit: Duration) -> Option<Details> {
        {
            let mut state = self.lock();
            match state.entries.get(id)?.status {
                Status::Queued => {
                    state.pool.dequeue(&id.to_owned());
                    Self::finish_queued(&mut state, id);
                    self.changed.notify_all();
                    self.dispatch(&mut state);
                }
                Status::Initializing | Status::Running => {
                    if let Some(entry) = state.entries.get_mut(id) {
                        entry.kill_requested = true;
                        if let Some(stop) = &entry.stop {
                            stop.stop(libc::SIGTERM);
                        }
                    }
                }
                Status::Completed | Status::Failed | Status::Killed | Status::Timeout => {}
            }
        }
        self.wait(id, limit)
    }

    /// A queued sandbox killed before it started: no reservation to give
    /// back, no report.
    fn finish_queued(state: &mut State, id: &str) {
        if let Some(entry) = state.entries.get_mut(id) {
            entry.kill_requested = true;
            let stdin_bytes = entry
                .job
                .take()
                .and_then(|job| job.stdin)
                .map_or(0, |s| s.len() as u64)
                + argv_bytes(&entry.argv);
            state.queued_stdin = state.queued_stdin.saturating_sub(stdin_bytes);
            entry.status = Status::Killed;
            entry.error = Some("killed while queued; it never started".to_owned());
            entry.finished_at = Some(SystemTime::now());
            entry.finished_instant = Some(Instant::now());
            entry.output.end();
        }
        *state.stats.finished.entry(Status::Killed).or_default() += 1;
    }

    pub fn pool_view(&self) -> PoolView {
        Self::pool_view_of(&self.lock())
    }

    fn pool_view_of(state: &State) -> PoolView {
        let capacity = state.pool.capacity();
        let (sandboxes, need) = state.pool.in_use();
        PoolView {
            max_sandboxes: capacity.sandboxes,
            max_memory_bytes: capacity.memory_bytes,
            max_cpus: millicpus_to_cpus(capacity.millicpus),
            in_use: InUse {
                sandboxes,
                memory_bytes: need.memory_bytes,
                cpus: millicpus_to_cpus(need.millicpus),
            },
            queued: state.pool.queued(),
            max_queue: capacity.queue,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let mut by_status: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        for entry in state.entries.values() {
            *by_status.entry(entry.status).or_default() += 1;
        }
        let finished = Status::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| (*s, state.stats.finished.get(s).copied().unwrap_or(0)))
            .collect();
        Snapshot {
            by_status: by_status.into_iter().collect(),
            submitted: state.stats.submitted,
            finished,
            start_seconds: state.stats.start_seconds.clone(),
            pool: Self::pool_view_of(&state),
        }
    }

    /// Forgets finished sandboxes older than `--keep-finished`, and the
    /// oldest finished ones beyond the retained-output budget.
    pub fn drop_expired(&self) {
        Self::forget_old(&mut self.lock(), &self.config);
    }

    fn forget_old(state: &mut State, config: &ServeConfig) {
        let keep = config.keep_finished;
        state
            .entries
            .retain(|_, e| e.finished_instant.is_none_or(|at| at.elapsed() < keep));
        let mut finished: Vec<(Instant, String, u64)> = state
            .entries
            .iter()
            .filter_map(|(id, e)| {
                let at = e.finished_instant?;
                Some((
                    at,
                    id.clone(),
                    e.output.totals().kept_bytes + argv_bytes(&e.argv),
                ))
            })
            .collect();
        let mut retained: u64 = finished.iter().map(|(_, _, kept)| kept).sum();
        if retained > config.max_retained_output {
            finished.sort();
            for (_, id, kept) in finished {
                if retained <= config.max_retained_output {
                    break;
                }
                state.entries.remove(&id);
                retained -= kept;
            }
        }
        let State { entries, order, .. } = state;
        order.retain(|id| entries.contains_key(id));
    }

    /// Refuses new work, kills the queue, stops every running sandbox and
    /// waits up to `limit` for their reports. True when all ended.
    pub fn shutdown(self: &Arc<Self>, limit: Duration) -> bool {
        let ids: Vec<String> = {
            let mut state = self.lock();
            state.shutting_down = true;
            state.order.clone()
        };
        for id in &ids {
            // Nothing waits here: the loop below waits for all at once.
            let _ = self.kill(id, Duration::ZERO);
        }
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |s| {
                s.entries.values().any(|e| !e.status.is_finished())
            })
            .unwrap_or_else(|e| e.into_inner());
        !state.entries.values().any(|e| !e.status.is_finished())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn report_outcomes_map_to_api_statuses() {
        assert_eq!(Status::of_report(Outcome::Exited, false), Status::Completed);
        assert_eq!(
            Status::of_report(Outcome::Signaled, true),
            Status::Completed
        );
        assert_eq!(Status::of_report(Outcome::Timeout, false), Status::Timeout);
        assert_eq!(
            Status::of_report(Outcome::Interrupted, true),
            Status::Killed
        );
        assert_eq!(
            Status::of_report(Outcome::Interrupted, false),
            Status::Failed
        );
        assert_eq!(Status::of_report(Outcome::Oom, false), Status::Failed);
        assert_eq!(Status::of_report(Outcome::Refused, false), Status::Failed);
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.name()));
        }
    }

    fn manager(sandboxes: usize, keep_finished: Duration) -> Arc<Manager> {
        Manager::new(ServeConfig {
            capacity: Capacity {
                sandboxes,
                memory_bytes: 4 << 30,
                millicpus: 4000,
                queue: 8,
            },
            max_output: 1 << 20,
            keep_finished,
            max_retained_output: 1 << 30,
            max_queued_stdin: 1 << 20,
            default_memory: ByteSize::from_bytes(1 << 30),
            default_cpus: CpuQuota::ONE,
            init: PathBuf::from("/nonexistent/purple-init"),
        })
    }

    fn submission() -> Submission {
        Submission {
            argv: vec!["true".to_owned()],
            policy: Policy::default(),
            stdin: None,
        }
    }

    #[test]
    fn a_sandbox_whose_init_cannot_start_fails_and_gives_its_reservation_back() {
        let m = manager(1, Duration::from_secs(60));
        let id = m.submit(submission()).unwrap();
        let details = m.wait(&id, Duration::from_secs(20)).unwrap();
        assert_eq!(details.summary.status, Status::Failed);
        assert!(details.error.unwrap().contains("/nonexistent/purple-init"));
        assert_eq!(m.pool_view().in_use.sandboxes, 0);
        assert_eq!(details.reserved.memory_bytes, 1 << 30);
    }

    #[test]
    fn a_queued_sandbox_can_be_killed_and_expired_entries_are_dropped() {
        let m = manager(0, Duration::from_millis(200));
        let id = m.submit(submission()).unwrap();
        assert_eq!(m.details(&id).unwrap().queue_position, Some(0));
        let details = m.kill(&id, Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(details.summary.status, Status::Killed);
        assert_eq!(m.pool_view().queued, 0);
        assert_eq!(m.snapshot().finished.iter().map(|(_, n)| n).sum::<u64>(), 1);
        m.drop_expired();
        assert!(m.details(&id).is_none());
        assert!(m.list().is_empty());
    }

    #[test]
    fn shutting_down_refuses_new_work() {
        let m = manager(0, Duration::from_secs(60));
        let _queued = m.submit(submission()).unwrap();
        assert!(m.shutdown(Duration::from_secs(1)));
        assert!(matches!(
            m.submit(submission()),
            Err(SubmitError::ShuttingDown)
        ));
    }
}
