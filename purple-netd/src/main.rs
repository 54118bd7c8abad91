//! `purple-netd`: the daemon's command line. Order of the steps: drop every
//! capability but CAP_NET_ADMIN, take the single-instance lock, bind the
//! socket, install the base rules and reconcile, then serve.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use purple_netd::cli::Args;
use purple_netd::daemon::{self, Config, Daemon};
use purple_netd::host::Tools;
use purple_netd::log::Log;
use purple_netd::privs;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config {
        socket: args.socket,
        lock_file: args.lock_file,
        reconcile_interval: Duration::from_secs(args.reconcile_interval),
        io_timeout: Duration::from_secs(args.io_timeout),
        request_deadline: Duration::from_secs(args.request_deadline),
        router_guard: args.router_guard,
        forwarding_marker: args.forwarding_marker,
    };
    let (mut log, syslog_problem) = Log::open();
    if let Some(p) = syslog_problem {
        log.warn(&format!("logging to stderr only ({p})"));
    }
    let kept = privs::drop_to_net_admin().context("drop capabilities")?;
    log.info(&format!("capabilities: {kept}"));
    let tools = Tools::find().context("find nft and ip")?;
    let _lock = daemon::lock_instance(&config.lock_file).context("single-instance lock")?;
    let listener = daemon::bind_socket(&config.socket).context("listen")?;
    let mut daemon = Daemon::start(tools, &config, log).context("start")?;
    eprintln!(
        "purple-netd: listening on {} (reconcile every {}s)",
        config.socket.display(),
        config.reconcile_interval.as_secs()
    );
    daemon
        .serve(&listener, config.reconcile_interval)
        .context("serve")?;
    Ok(())
}
