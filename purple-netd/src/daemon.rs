//! The daemon: its socket, its start-up (base rules, forwarding, a first
//! reconcile), and one request at a time, each validated before anything on
//! the host changes. Single threaded on purpose: attach, detach and
//! reconcile never interleave, so an address cannot be handed out twice and
//! reconcile never sees a half-made sandbox that is still being made. (The
//! one helper thread is a per-connection watchdog that only shuts the
//! connection down when its deadline passes.)

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use purple_common::netd::{
    AttachRequest, Attachment, NetCounters, NetdReply, NetdRequest, MAX_NETD_REPLY_BYTES,
    MAX_NETD_REQUEST_BYTES, SANDBOX_INTERFACE,
};
use purple_common::policy::Protocol;
use purple_common::protocol::{receive_message, send_message, TransportError};

use crate::host::{self, HostError, Tools};
use crate::ident::{SandboxId, SandboxKey};
use crate::log::Log;
use crate::netns::{check_netns, NetnsError};
use crate::nft::{self, Map};
use crate::plan::{self, Block, PlanError, SandboxMeta, BLOCK_PREFIX};
use crate::ports::{PortError, Reservation};
use crate::reconcile::{self, Cleanup};
use crate::state::{HostLink, TableState};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{step} {path}: {source}")]
    Path {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("another purple-netd holds {path}; only one may run per host")]
    Locked { path: PathBuf },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::Error,
    },
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Netns(#[from] NetnsError),
    #[error("sandbox {id} is already attached {how}; detach it first")]
    AttachedOtherwise { id: String, how: &'static str },
    #[error("sandbox {id} shares its interface name {interface} with attached sandbox {other}")]
    KeyCollision {
        id: String,
        interface: String,
        other: String,
    },
    #[error("host port {protocol}:{port} is already published by another sandbox")]
    PortTaken { protocol: Protocol, port: u16 },
    #[error("{0}")]
    Port(#[from] PortError),
    #[error("sandbox {id} shares its flow mark {mark:#010x} with attached sandbox {other}; retry with another sandbox id")]
    MarkCollision {
        id: String,
        mark: u32,
        other: String,
    },
    #[error("interface {interface} has no address in the pool")]
    NoAddress { interface: String },
}

/// Whether netd guards the host against routing for its other interfaces
/// when it turned IPv4 forwarding on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterGuard {
    /// Guard when netd turned forwarding on (now, or an earlier netd: the
    /// marker file says so).
    Auto,
    /// Never guard: the host routes for all its interfaces once forwarding
    /// is on (for hosts that also run containers or VMs, which need it).
    Off,
}

/// The run-time settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub lock_file: PathBuf,
    pub reconcile_interval: Duration,
    /// The longest a single read or write on a connection may block.
    pub io_timeout: Duration,
    /// The longest a peer may take to send its whole request.
    pub request_deadline: Duration,
    pub router_guard: RouterGuard,
    /// Exists while "netd turned net.ipv4.ip_forward on" holds (on tmpfs,
    /// so it goes at reboot together with the sysctl's value).
    pub forwarding_marker: PathBuf,
}

pub const DEFAULT_FORWARDING_MARKER: &str = "/run/purple/netd-forwarding";

/// Holds the single-instance lock for as long as it lives.
#[derive(Debug)]
pub struct InstanceLock(#[allow(dead_code)] Flock<File>);

fn path_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Path { step, path, source }
}

/// The socket's directory must be root's and writable by root only, else
/// someone else could replace the socket purple-init talks to.
fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(path_err("create", dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(path_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(DaemonError::Unsafe {
            path: dir.to_owned(),
            reason: "is not a directory".into(),
        });
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(DaemonError::Unsafe {
            path: dir.to_owned(),
            reason: format!(
                "must be owned by root and writable only by root (uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

/// Takes the host-wide lock: two netds would hand out the same addresses
/// and reconcile each other's half-made sandboxes away.
pub fn lock_instance(path: &Path) -> Result<InstanceLock, DaemonError> {
    if let Some(dir) = path.parent() {
        prepare_dir(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(path_err("open the lock file", path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(InstanceLock(lock)),
        Err((_, nix::Error::EWOULDBLOCK)) => Err(DaemonError::Locked {
            path: path.to_owned(),
        }),
        Err((_, source)) => Err(DaemonError::Sys {
            step: "flock the lock file",
            source,
        }),
    }
}

/// Binds the socket: parent 0755 root, socket 0600 root; a stale socket
/// file is replaced, anything else at the path is refused.
pub fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        prepare_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(path_err("remove the stale socket", path))?;
        }
        Ok(_) => {
            return Err(DaemonError::Unsafe {
                path: path.to_owned(),
                reason: "exists and is not a socket; not removing it".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(path_err("stat", path)(e)),
    }
    // The socket is born 0600: no window where another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(path_err("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(path_err("chmod 0600", path))?;
    Ok(listener)
}

/// The daemon's state: its tools, whether it guards forwarding, and the
/// host ports it holds for the sandboxes.
#[derive(Debug)]
pub struct Daemon {
    tools: Tools,
    router_guard: bool,
    io_timeout: Duration,
    request_deadline: Duration,
    /// The gateway handed out last (next-fit allocation).
    last_block: Option<Ipv4Addr>,
    /// Per live sandbox, the sockets holding its published host ports.
    /// Only in memory: a restarted netd re-reserves them at its reconcile
    /// passes (see [`Daemon::reserve_live`]).
    reservations: BTreeMap<SandboxKey, Reservation>,
    log: Log,
}

fn attachment(interface: String, block: Block) -> Attachment {
    Attachment {
        host_interface: interface,
        sandbox_interface: SANDBOX_INTERFACE.to_owned(),
        address: block.address,
        prefix_len: BLOCK_PREFIX,
        gateway: block.gateway,
    }
}

/// The base chains and maps exist (else every sandbox is unfiltered).
fn base_exists(table: &TableState) -> bool {
    let chains = nft::base_rule_counts(false)
        .keys()
        .all(|c| table.chains.contains_key(*c));
    let maps = Map::ALL.iter().all(|m| table.maps.contains_key(m));
    chains && maps
}

/// The base exists and each base chain holds as many rules as netd put
/// there (the guard included when it should be there). A rule replaced by
/// one of the same count is not noticed: this catches the usual damage
/// (a chain flushed, a rule deleted or added), not a deliberate edit by
/// someone who holds CAP_NET_ADMIN anyway.
fn base_is_whole(table: &TableState, router_guard: bool) -> bool {
    base_exists(table)
        && (table.router_guard || !router_guard)
        && nft::base_rule_counts(router_guard)
            .iter()
            .all(|(c, n)| table.rule_counts.get(*c).copied().unwrap_or(0) == *n)
}

/// Interfaces that usually mean the host routes for someone else: the
/// router guard drops their forwarded IPv4 traffic.
fn routes_for_others(name: &str) -> bool {
    name == "docker0"
        || ["virbr", "cni", "br-", "wg"]
            .iter()
            .any(|p| name.starts_with(p))
}

fn protocol_of(number: u8) -> Option<Protocol> {
    match number {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        _ => None,
    }
}

/// What a reconcile pass saw once it was done.
struct Pass {
    removed: usize,
    links: Vec<HostLink>,
    table: TableState,
}

impl Daemon {
    /// Installs the base rules, turns forwarding on (behind the router guard
    /// when it was off), and removes what a previous run left behind.
    pub fn start(tools: Tools, config: &Config, mut log: Log) -> Result<Daemon, DaemonError> {
        let table = tools.nft_table()?;
        let links = tools.links()?;
        if !table.as_ref().is_some_and(base_exists) {
            // No base (a reboot, or `flush ruleset` while netd was away):
            // any sandbox interface still there is unfiltered until the
            // base is in. Cut it off first; reconcile then deletes it.
            Self::cut_off(&tools, &mut log, &links)?;
        }
        let forwarding = host::read_sysctl(host::IP_FORWARD).as_deref() == Some("1");
        let marker = &config.forwarding_marker;
        let turned_on_before = marker.exists() || table.as_ref().is_some_and(|t| t.router_guard);
        if !forwarding || turned_on_before {
            // Written before the sysctl, so a crash in between still leaves
            // "netd turned it on" behind; also for an older netd that only
            // left its guard in the table.
            write_marker(marker)?;
        }
        // Forwarding on and no sign of netd: the host routed before netd
        // came, and keeps doing so. Forwarding on and the marker: an earlier
        // netd turned it on, and the guard stays (even if the table, and
        // with it the guard, was flushed meanwhile).
        let netd_forwards = !forwarding || turned_on_before;
        let router_guard = netd_forwards && config.router_guard == RouterGuard::Auto;
        tools.nft_apply(
            "install the base rules",
            "table inet purple",
            &nft::base_script(router_guard),
        )?;
        if !forwarding {
            host::write_sysctl("turn on IPv4 forwarding", host::IP_FORWARD, "1")?;
            log.info(&format!(
                "turned on net.ipv4.ip_forward for the sandboxes (remembered in {})",
                marker.display()
            ));
        } else if netd_forwards {
            log.info(&format!(
                "net.ipv4.ip_forward is on, turned on by an earlier purple-netd ({})",
                marker.display()
            ));
        } else {
            log.info("net.ipv4.ip_forward was already on: the host routes for its own interfaces as before; sandboxes are filtered");
        }
        if router_guard {
            log.info("router guard on: forwarded IPv4 traffic between interfaces that are not sandboxes is dropped (table inet purple)");
            let others: Vec<&str> = links
                .iter()
                .map(|l| l.name.as_str())
                .filter(|n| routes_for_others(n))
                .collect();
            if !others.is_empty() {
                log.warn(&format!(
                    "interfaces {} exist and the router guard is on: IPv4 traffic they forward (containers, VMs, VPN) is dropped; start purple-netd with --router-guard off if this host must route for them",
                    others.join(", ")
                ));
            }
        } else if netd_forwards {
            log.warn("router guard off (--router-guard off): with net.ipv4.ip_forward on, the host routes IPv4 for all its interfaces, not only for sandboxes");
        }
        let mut daemon = Daemon {
            tools,
            router_guard,
            io_timeout: config.io_timeout,
            request_deadline: config.request_deadline,
            last_block: None,
            reservations: BTreeMap::new(),
            log,
        };
        daemon.reconcile()?;
        Ok(daemon)
    }

    /// Sets every host end of netd's down (`pv` + 12 hex; other `pv*`
    /// interfaces are not netd's). Fail closed: their sandboxes lose their
    /// network rather than keep it without rules.
    fn cut_off(tools: &Tools, log: &mut Log, links: &[HostLink]) -> Result<(), DaemonError> {
        let ours: Vec<String> = links
            .iter()
            .filter(|l| SandboxKey::from_interface(&l.name).is_some())
            .map(|l| l.name.clone())
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        log.warn(&format!(
            "table inet purple or its base chains are missing: sandbox interfaces {} are set down and lose their network",
            ours.join(", ")
        ));
        tools.set_links_down(&ours)?;
        Ok(())
    }

    /// One reconcile pass; returns how many objects it removed.
    pub fn reconcile(&mut self) -> Result<usize, DaemonError> {
        self.reconcile_pass().map(|p| p.removed)
    }

    /// Repairs the base, deletes what is stale, releases the host ports of
    /// sandboxes that are gone and re-reserves those of live ones netd does
    /// not hold yet (after a restart). Returns what it leaves behind.
    fn reconcile_pass(&mut self) -> Result<Pass, DaemonError> {
        let mut links = self.tools.links()?;
        let mut table = self.tools.nft_table()?;
        if !table
            .as_ref()
            .is_some_and(|t| base_is_whole(t, self.router_guard))
        {
            if table.as_ref().is_some_and(base_exists) {
                self.log
                    .warn("the base chains of table inet purple were altered; reinstalling them");
            } else {
                // `flush ruleset` or `delete table`: the sandboxes were
                // unfiltered since. Down first, then the base back.
                Self::cut_off(&self.tools, &mut self.log, &links)?;
                self.log
                    .warn("the base of table inet purple was missing; reinstalling it");
            }
            self.tools.nft_apply(
                "reinstall the base rules",
                "table inet purple",
                &nft::base_script(self.router_guard),
            )?;
            table = self.tools.nft_table()?;
        }
        let Cleanup {
            nft: objects,
            links: stale_links,
        } = reconcile::reconcile(&links, table.as_ref());
        let removed = objects.len() + stale_links.len();
        if !objects.is_empty() {
            self.tools.nft_apply(
                "remove stale sandbox rules",
                "table inet purple",
                &nft::deletion_script(&objects),
            )?;
        }
        for link in &stale_links {
            self.tools.delete_link(link)?;
        }
        if removed > 0 {
            self.log.info(&format!(
                "reconcile removed {} nft objects and {} interfaces of sandboxes that are gone ({})",
                objects.len(),
                stale_links.len(),
                stale_links.join(", ")
            ));
            links.retain(|l| !stale_links.contains(&l.name));
            table = self.tools.nft_table()?;
        }
        let live = reconcile::live(&links, table.as_ref());
        // The ports of sandboxes that are gone go back to the host.
        self.reservations.retain(|k, _| live.contains(k));
        let mut table = table.unwrap_or_default();
        if self.reserve_live(&live, &table)? {
            table = self.tools.nft_table()?.unwrap_or_default();
        }
        Ok(Pass {
            removed,
            links,
            table,
        })
    }

    /// Reserves the host ports of live sandboxes netd holds none for (they
    /// were attached by an earlier netd; its sockets died with it). A port
    /// a host service took meanwhile is not DNATed any longer: its
    /// `published` element is deleted, so the host service is not shadowed.
    /// Tried once per sandbox and netd run; returns whether it changed the
    /// table.
    fn reserve_live(
        &mut self,
        live: &std::collections::BTreeSet<SandboxKey>,
        table: &TableState,
    ) -> Result<bool, DaemonError> {
        let mut lost = Vec::new();
        for key in live {
            if self.reservations.contains_key(key) {
                continue;
            }
            let mut held = Reservation::default();
            for (number, port) in reconcile::published_of(table, key) {
                let Some(protocol) = protocol_of(number) else {
                    continue;
                };
                if let Err(e) = held.add(protocol, port) {
                    self.log.warn(&format!(
                        "sandbox {}: {e}; no longer publishing it (removing its DNAT)",
                        key.interface()
                    ));
                    lost.push(nft::NftObject::Element {
                        map: Map::Published,
                        key: nft::ElementKey::Port(number, port),
                    });
                }
            }
            self.reservations.insert(key.clone(), held);
        }
        if lost.is_empty() {
            return Ok(false);
        }
        self.tools.nft_apply(
            "stop publishing host ports in use",
            "table inet purple",
            &nft::deletion_script(&lost),
        )?;
        Ok(true)
    }

    /// Answers one request.
    pub fn handle(&mut self, request: NetdRequest, fds: Vec<OwnedFd>) -> NetdReply {
        match request {
            NetdRequest::Attach(a) => {
                let id = a.sandbox_id.chars().take(64).collect::<String>();
                match self.attach(&a, &fds) {
                    Ok(att) => {
                        self.log.info(&format!(
                            "attached sandbox {id}: {} {}/{} gateway {}, out [{}], in [{}]",
                            att.host_interface,
                            att.address,
                            att.prefix_len,
                            att.gateway,
                            a.allow_out
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                            a.allow_in
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                        ));
                        NetdReply::Attached(att)
                    }
                    Err(e) => self.refuse(&format!("attach of sandbox {id:?}"), &e),
                }
            }
            NetdRequest::Detach {
                version,
                sandbox_id,
            } => {
                let id = sandbox_id.chars().take(64).collect::<String>();
                match self.detach(version, &sandbox_id) {
                    Ok(counters) => {
                        self.log
                            .info(&format!("detached sandbox {id}: {counters:?}"));
                        NetdReply::Detached(counters)
                    }
                    Err(e) => self.refuse(&format!("detach of sandbox {id:?}"), &e),
                }
            }
        }
    }

    fn refuse(&mut self, what: &str, e: &DaemonError) -> NetdReply {
        self.log.warn(&format!("refused {what}: {e}"));
        NetdReply::Refused {
            reason: e.to_string(),
        }
    }

    fn attach(
        &mut self,
        request: &AttachRequest,
        fds: &[OwnedFd],
    ) -> Result<Attachment, DaemonError> {
        // Parse and validate everything before the host changes.
        let plan = plan::validate_attach(request)?;
        let [netns] = fds else {
            return Err(NetnsError::FdCount(fds.len()).into());
        };
        let ns = check_netns(netns.as_fd())?;
        let key = plan.id.key();
        let interface = key.interface();
        let meta = SandboxMeta {
            id: plan.id.to_string(),
            netns: ns,
            rules: plan.rules.fingerprint(),
        };
        // The reconcile cleanup first: nothing of a sandbox that is gone
        // (its DNAT, its chains naming an address) may still stand when its
        // block or its ports are handed out again.
        let Pass { links, table, .. } = self.reconcile_pass()?;
        let link = links.iter().find(|l| l.name == interface);

        if let Some(existing) = reconcile::meta_of(&table, &key) {
            if existing.id != meta.id {
                return Err(DaemonError::KeyCollision {
                    id: meta.id,
                    interface,
                    other: existing.id,
                });
            }
            if let Some(link) = link.filter(|_| reconcile::is_complete(&table, &key)) {
                if existing.netns != meta.netns {
                    return Err(DaemonError::AttachedOtherwise {
                        id: meta.id,
                        how: "in another network namespace",
                    });
                }
                if existing.rules != meta.rules {
                    return Err(DaemonError::AttachedOtherwise {
                        id: meta.id,
                        how: "with other rules",
                    });
                }
                // Idempotent: the same request again gets the same answer.
                let gateway = link
                    .ipv4
                    .iter()
                    .copied()
                    .find(|a| u32::from(*a) & 3 == 1)
                    .ok_or(DaemonError::NoAddress {
                        interface: interface.clone(),
                    })?;
                return Ok(attachment(interface, Block::from_gateway(gateway)));
            }
        }
        if let Some(other) = reconcile::mark_collision(&table, &key) {
            let other = reconcile::meta_of(&table, &other)
                .map(|m| m.id)
                .unwrap_or_else(|| other.interface());
            return Err(DaemonError::MarkCollision {
                id: meta.id,
                mark: key.flow_mark(),
                other,
            });
        }
        for (protocol, port) in plan.rules.published() {
            let key_taken = nft::published_key(protocol, port);
            let taken = table.maps.get(&Map::Published).is_some_and(|elements| {
                elements.iter().any(|e| {
                    let owner = e.target.as_deref().and_then(SandboxKey::from_chain);
                    e.key == key_taken && !matches!(owner, Some((k, _)) if k == key)
                })
            });
            if taken {
                return Err(DaemonError::PortTaken { protocol, port });
            }
        }
        // Leftovers of this id from an attach that did not finish.
        let leftovers = reconcile::objects_of(&table, &key);
        self.tools.nft_apply(
            "remove leftovers of an unfinished attach",
            &interface,
            &nft::deletion_script(&leftovers),
        )?;
        if link.is_some() {
            self.tools.delete_link(&interface)?;
        }
        // The host ports, before any DNAT to them exists: a host service on
        // one refuses the attach (the DNAT would shadow it), and while the
        // sandbox lives no host service can take them.
        self.reservations.remove(&key);
        let reservation = Reservation::take(&plan.rules.published())?;
        let in_use: Vec<Ipv4Addr> = links
            .iter()
            .filter(|l| l.name != interface)
            .flat_map(|l| l.ipv4.iter().copied())
            .chain(table.addresses.iter().copied())
            .collect();
        let block = plan::allocate(&plan.pool, &in_use, self.last_block)?;

        self.tools
            .create_veth(&interface, SANDBOX_INTERFACE, netns.as_fd())?;
        let configured = self.configure(&key, &meta, block, &plan.rules);
        if let Err(e) = configured {
            // Undo: the interface takes its peer with it; the nft
            // transaction either happened whole or not at all.
            if let Err(undo) = self.tools.delete_link(&interface) {
                self.log.error(&format!("undo of a failed attach: {undo}"));
            }
            let table = self.tools.nft_table().ok().flatten().unwrap_or_default();
            let objects = reconcile::objects_of(&table, &key);
            if let Err(undo) = self.tools.nft_apply(
                "undo a failed attach",
                &interface,
                &nft::deletion_script(&objects),
            ) {
                self.log.error(&format!("undo of a failed attach: {undo}"));
            }
            return Err(e);
        }
        self.last_block = Some(block.gateway);
        self.reservations.insert(key, reservation);
        Ok(attachment(interface, block))
    }

    /// The host end: sysctls while it is down, the rules (so it is filtered
    /// from its first packet), then address and up.
    fn configure(
        &mut self,
        key: &SandboxKey,
        meta: &SandboxMeta,
        block: Block,
        rules: &plan::SandboxRules,
    ) -> Result<(), DaemonError> {
        let interface = key.interface();
        for (path, value) in host::host_end_sysctls(&interface, !rules.published().is_empty()) {
            host::write_sysctl("set a sysctl of the host end", &path, value)?;
        }
        // The base goes in the same transaction: the sandbox's chains are
        // never installed without the base chains that dispatch to them.
        let script = format!(
            "{}{}",
            nft::base_script(self.router_guard),
            nft::sandbox_script(key, meta, block.address, rules)
        );
        self.tools
            .nft_apply("install the sandbox rules", &interface, &script)?;
        self.tools.configure_host_end(
            &interface,
            &format!("purple sandbox {}", meta.id),
            block.gateway,
            BLOCK_PREFIX,
        )?;
        Ok(())
    }

    fn detach(
        &mut self,
        version: u32,
        sandbox_id: &str,
    ) -> Result<Option<NetCounters>, DaemonError> {
        plan::check_version(version)?;
        let id = SandboxId::parse(sandbox_id).map_err(PlanError::from)?;
        let key = id.key();
        let interface = key.interface();
        let table = self.tools.nft_table()?.unwrap_or_default();
        if let Some(meta) = reconcile::meta_of(&table, &key) {
            if meta.id != id.as_str() {
                // Another sandbox's objects under the same key: not ours to touch.
                return Ok(None);
            }
        }
        // The interface first: with it gone no packet is counted any more,
        // so the counters read next are final.
        self.tools.delete_link(&interface)?;
        let table = self.tools.nft_table()?.unwrap_or_default();
        let counters = reconcile::counters_of(&table, &key);
        let objects = reconcile::objects_of(&table, &key);
        self.tools.nft_apply(
            "remove the sandbox rules",
            &interface,
            &nft::deletion_script(&objects),
        )?;
        // Its DNAT is gone: the host ports go back to the host.
        self.reservations.remove(&key);
        Ok(counters)
    }

    /// Serves forever: one connection at a time, a reconcile every
    /// `interval` between them.
    pub fn serve(
        &mut self,
        listener: &UnixListener,
        interval: Duration,
    ) -> Result<(), DaemonError> {
        let mut next = Instant::now() + interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(source) => {
                    return Err(DaemonError::Sys {
                        step: "poll the socket",
                        source,
                    })
                }
            }
            let readable = fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
            if readable {
                match listener.accept() {
                    Ok((stream, _)) => self.serve_one(&stream),
                    Err(e) => self.log.warn(&format!("accept: {e}")),
                }
            }
            if Instant::now() >= next {
                if let Err(e) = self.reconcile() {
                    self.log.error(&format!("reconcile: {e}"));
                }
                next = Instant::now() + interval;
            }
        }
    }

    /// One connection: check the peer, read one request, send one reply.
    /// The whole request must arrive within the request deadline (a
    /// watchdog shuts the connection down when it passes, so a peer that
    /// trickles bytes cannot hold netd), and an attach whose peer has hung up
    /// meanwhile is not acted on.
    pub fn serve_one(&mut self, stream: &UnixStream) {
        if let Err(e) = stream
            .set_read_timeout(Some(self.io_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.io_timeout)))
        {
            self.log
                .warn(&format!("set the connection's timeouts: {e}"));
            return;
        }
        let reply = match getsockopt(stream, PeerCredentials) {
            Err(e) => {
                self.log.warn(&format!("SO_PEERCRED: {e}"));
                return;
            }
            Ok(cred) if cred.uid() != 0 => {
                self.log.warn(&format!(
                    "refused a connection from uid {} (pid {}): only root may use purple-netd",
                    cred.uid(),
                    cred.pid()
                ));
                NetdReply::Refused {
                    reason: format!(
                        "purple-netd serves root only; the peer is uid {}",
                        cred.uid()
                    ),
                }
            }
            Ok(_) => {
                let received = match Watchdog::arm(stream, self.request_deadline) {
                    Ok(watchdog) => {
                        let received =
                            receive_message::<NetdRequest>(stream.as_fd(), MAX_NETD_REQUEST_BYTES);
                        if watchdog.disarm() {
                            self.log.warn(&format!(
                                "a peer did not send its request within {}s; closed",
                                self.request_deadline.as_secs_f32()
                            ));
                            return;
                        }
                        received
                    }
                    Err(e) => {
                        self.log.warn(&format!("start the request watchdog: {e}"));
                        return;
                    }
                };
                match received {
                    Ok((NetdRequest::Attach(a), _)) if peer_gone(stream) => {
                        // Its caller gave up (timed out): an attach now would
                        // leave a sandbox network nobody waits for.
                        self.log.warn(&format!(
                            "the peer hung up before its attach of sandbox {:?} was acted on; ignored",
                            a.sandbox_id.chars().take(64).collect::<String>()
                        ));
                        return;
                    }
                    Ok((request, fds)) => self.handle(request, fds),
                    Err(TransportError::Closed) => return,
                    Err(e) => {
                        self.log.warn(&format!("refused a malformed request: {e}"));
                        NetdReply::Refused {
                            reason: format!("malformed request: {e}"),
                        }
                    }
                }
            }
        };
        if let Err(e) = send_message(stream.as_fd(), &reply, MAX_NETD_REPLY_BYTES, &[]) {
            self.log.warn(&format!("send the reply: {e}"));
        }
    }
}

/// The peer has closed its end (or its write side): nobody waits for the
/// reply. A zero-timeout poll, so it never blocks.
fn peer_gone(stream: &UnixStream) -> bool {
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP | libc::POLLHUP,
        revents: 0,
    };
    // libc directly: nix's PollFlags has no POLLRDHUP, and reads revents
    // holding it as None.
    // SAFETY: `fd` is one valid pollfd on a descriptor we own, the count
    // is 1, and a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Shuts a connection's reading side down when its deadline passes, which
/// wakes a blocked receive (it then sees end of file). The socket's read
/// timeout bounds each recv; this bounds them all together.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(stream: &UnixStream, deadline: Duration) -> std::io::Result<Watchdog> {
        // Its own descriptor of the socket: valid however long the thread
        // runs, and shutdown acts on the socket, not on the descriptor.
        let socket = stream.try_clone()?;
        let (done, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("netd-deadline".into())
            .spawn(move || match rx.recv_timeout(deadline) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = socket.shutdown(std::net::Shutdown::Read);
                    true
                }
                _ => false,
            })?;
        Ok(Watchdog { done, thread })
    }

    /// Stops the watchdog; true when the deadline had passed.
    fn disarm(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(true)
    }
}

/// Records that netd turned IPv4 forwarding on: a file in /run (tmpfs,
/// gone at reboot like the sysctl's value), in a directory only root may
/// write.
fn write_marker(path: &Path) -> Result<(), DaemonError> {
    if let Some(dir) = path.parent() {
        prepare_dir(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(path_err("open the forwarding marker", path))?;
    file.write_all(
        b"purple-netd turned net.ipv4.ip_forward on; while this file exists a restarted purple-netd keeps its router guard\n",
    )
    .map_err(path_err("write the forwarding marker", path))
}
