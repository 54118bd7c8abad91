//! `purple-netd`: the daemon's command line. Order of the steps: drop every
//! capability but CAP_NET_ADMIN, take the single-instance lock, bind the
//! socket, install the base rules and reconcile, then serve.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use purple_common::netd::DEFAULT_NETD_SOCKET;
use purple_netd::daemon::{self, Config, Daemon, RouterGuard, DEFAULT_FORWARDING_MARKER};
use purple_netd::host::Tools;
use purple_netd::log::Log;
use purple_netd::privs;

/// Purple's network daemon: a veth pair and nftables port rules per sandbox.
///
/// Serves purple-init (root peers only) on a Unix socket: one request per
/// connection, attach (with the sandbox's network namespace fd) or detach.
/// Runs as root with CAP_NET_ADMIN only; owns `table inet purple` and the
/// `pv*` interfaces, and nothing else; binds (never listens on) the host
/// ports sandboxes publish. Turns on net.ipv4.ip_forward if it is off, with
/// a rule that keeps the host from routing IPv4 for its other interfaces
/// (--router-guard). See docs/network.md.
#[derive(Debug, Parser)]
#[command(name = "purple-netd", version)]
struct Args {
    /// The socket to listen on (its directory is created 0755 root; the
    /// socket is 0600 root; a stale socket there is replaced).
    #[arg(long, default_value = DEFAULT_NETD_SOCKET)]
    socket: PathBuf,
    /// Only one purple-netd runs per host: this file is locked while it runs.
    #[arg(long, default_value = "/run/purple/netd.lock")]
    lock_file: PathBuf,
    /// Seconds between reconcile passes, which remove the rules and
    /// interfaces of sandboxes whose network namespace is gone, and set the
    /// sandboxes' interfaces down when netd's table was deleted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    reconcile_interval: u64,
    /// Seconds one read or write on a client connection may block.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    io_timeout: u64,
    /// Seconds a client has, from connecting, to send its whole request.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    request_deadline: u64,
    /// When netd turns net.ipv4.ip_forward on, drop forwarded IPv4 traffic
    /// between interfaces that are not sandboxes (auto), or not (off: for
    /// hosts that must route for containers, VMs or VPNs).
    #[arg(long, value_enum, default_value_t = RouterGuard::Auto)]
    router_guard: RouterGuard,
    /// Exists while "purple-netd turned net.ipv4.ip_forward on" holds, so a
    /// restarted netd keeps its router guard (keep it on a tmpfs).
    #[arg(long, default_value = DEFAULT_FORWARDING_MARKER)]
    forwarding_marker: PathBuf,
}

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
