//! The command-line contract of purple-netd. Kept apart from `main` so
//! packaging can generate the man page and shell completions from it.

use std::path::PathBuf;

use clap::Parser;
use purple_common::netd::DEFAULT_NETD_SOCKET;

use crate::daemon::{RouterGuard, DEFAULT_FORWARDING_MARKER};

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
pub struct Args {
    /// The socket to listen on (its directory is created 0755 root; the
    /// socket is 0600 root; a stale socket there is replaced).
    #[arg(long, default_value = DEFAULT_NETD_SOCKET)]
    pub socket: PathBuf,
    /// Only one purple-netd runs per host: this file is locked while it runs.
    #[arg(long, default_value = "/run/purple/netd.lock")]
    pub lock_file: PathBuf,
    /// Seconds between reconcile passes, which remove the rules and
    /// interfaces of sandboxes whose network namespace is gone, and set the
    /// sandboxes' interfaces down when netd's table was deleted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reconcile_interval: u64,
    /// Seconds one read or write on a client connection may block.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub io_timeout: u64,
    /// Seconds a client has, from connecting, to send its whole request.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub request_deadline: u64,
    /// When netd turns net.ipv4.ip_forward on, drop forwarded IPv4 traffic
    /// between interfaces that are not sandboxes (auto), or not (off: for
    /// hosts that must route for containers, VMs or VPNs).
    #[arg(long, value_enum, default_value_t = RouterGuard::Auto)]
    pub router_guard: RouterGuard,
    /// Exists while "purple-netd turned net.ipv4.ip_forward on" holds, so a
    /// restarted netd keeps its router guard (keep it on a tmpfs).
    #[arg(long, default_value = DEFAULT_FORWARDING_MARKER)]
    pub forwarding_marker: PathBuf,
}
