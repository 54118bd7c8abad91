//! `purple-supervisor serve`: the SandboxManager behind a local HTTP/1.1
//! JSON API (docs/api.md). Runs as the user; every sandbox is started
//! exactly as `run` starts one, by its own purple-init.
//!
//! Setup order: options into a budget, then the socket (refusing a live
//! one before anything else exists), then the stop signals, then serving;
//! at the end the socket goes first (nothing accepts on it any more), then
//! the sandboxes are stopped.

mod api;
mod manager;
mod metrics;
mod output;
mod pool;
mod runner;
pub mod socket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use purple_common::values::ByteSize;
use purple_supervisor::http::server::{self, Limits};

use self::manager::{Manager, ServeConfig};
use self::pool::Capacity;
use purple_supervisor::cli::ServeArgs;

/// How long shutdown waits for the running sandboxes' reports.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// Stdin bytes held for the queue, all together (each request is bounded
/// by --max-body; this bounds a queue full of them).
const MAX_QUEUED_STDIN: u64 = 256 << 20;
/// How often finished sandboxes past `--keep-finished` are dropped.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// Set by SIGTERM, SIGINT or SIGHUP; the accept loop polls it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("handling {signal}"))?;
    }
    Ok(())
}

/// The host's memory, the default memory budget.
fn host_memory() -> Option<ByteSize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(ByteSize::from_bytes(kib * 1024))
}

fn capacity(args: &ServeArgs) -> anyhow::Result<Capacity> {
    let memory = match args.max_memory {
        Some(m) => m,
        None => host_memory().context("reading MemTotal from /proc/meminfo; pass --max-memory")?,
    };
    let millicpus = match args.max_cpus {
        Some(c) => u64::from(c.millicpus()),
        None => {
            let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            cpus as u64 * 1000
        }
    };
    Ok(Capacity {
        sandboxes: args.max_sandboxes,
        memory_bytes: memory.bytes(),
        millicpus,
        queue: args.max_queue,
    })
}

pub fn run(args: &ServeArgs) -> anyhow::Result<i32> {
    // Step 1: the budget and the service's limits, checked before the
    // socket exists.
    anyhow::ensure!(args.max_sandboxes > 0, "--max-sandboxes must be at least 1");
    let config = ServeConfig {
        capacity: capacity(args)?,
        max_output: args.max_output.bytes(),
        keep_finished: args.keep_finished.as_duration(),
        max_retained_output: args.max_retained_output.bytes(),
        max_queued_stdin: MAX_QUEUED_STDIN,
        default_memory: args.default_memory,
        default_cpus: args.default_cpus,
        init: crate::launcher::find_init()?,
    };
    let limits = Limits {
        max_body: usize::try_from(args.max_body.bytes()).unwrap_or(usize::MAX),
        ..Limits::default()
    };
    // Step 2: the socket; a live service on it is refused before anything
    // else is set up, a stale socket replaced.
    let path = socket::resolve(args.socket.socket.as_deref());
    let listener = socket::listen(&path, args.socket.socket.is_none())?;
    // Step 3: stop signals, only now that there is something to clean up.
    install_stop_signals()?;
    let manager = Manager::new(config);
    let expiring = Arc::clone(&manager);
    std::thread::Builder::new()
        .name("expiry".to_owned())
        .spawn(move || loop {
            std::thread::sleep(EXPIRY_INTERVAL);
            expiring.drop_expired();
        })
        .context("starting the expiry thread")?;
    eprintln!("purple: serving on {}", path.display());
    // Step 4: serve until a stop signal.
    let routes = Arc::clone(&manager);
    let handler: Arc<server::Handler> = Arc::new(move |request| api::handle(&routes, request));
    let served = server::run_accept_loop(listener, &limits, handler, &STOP);
    // Step 5: the socket goes as soon as nothing accepts on it, so that a
    // new service started meanwhile is never deleted by this one; then the
    // sandboxes are stopped (purple-init sends each report).
    let _ = std::fs::remove_file(&path);
    let all_ended = manager.shutdown(SHUTDOWN_WAIT);
    served.with_context(|| format!("serving on {}", path.display()))?;
    if !all_ended {
        eprintln!(
            "purple: some sandboxes did not report within {} s; their purple-init ends them when this process exits",
            SHUTDOWN_WAIT.as_secs()
        );
    }
    Ok(0)
}
