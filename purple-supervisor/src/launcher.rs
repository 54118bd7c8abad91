//! Starting purple-init and exchanging the one request and one report.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use purple_common::protocol::{
    self, SandboxRequest, TransportError, INIT_SOCKET_FD, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
};
use purple_common::report::ExitReport;

/// Where packages install purple-init.
pub const PACKAGED_INIT: &str = "/usr/libexec/purple/purple-init";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "purple-init not found next to {exe} or at {PACKAGED_INIT}; install Purple (see README)"
    )]
    InitNotFound { exe: String },
    #[error("creating the socket to purple-init: {0}")]
    Socket(nix::Error),
    #[error("starting {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("the request is too large: {0}")]
    RequestTooLarge(String),
    #[error("sending the request to purple-init: {0}")]
    Send(TransportError),
    #[error("purple-init ended without a report ({status})")]
    NoReport { status: String },
}

/// purple-init next to our own executable first (a build tree or a copy
/// made by tests), then the packaged path.
pub fn find_init() -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().unwrap_or_default();
    if let Some(dir) = exe.parent() {
        let candidate = dir.join("purple-init");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let packaged = Path::new(PACKAGED_INIT);
    if packaged.is_file() {
        return Ok(packaged.to_owned());
    }
    Err(LaunchError::InitNotFound {
        exe: exe.display().to_string(),
    })
}

/// The pid of the running purple-init, for the signal forwarder.
static INIT_PID: AtomicI32 = AtomicI32::new(0);
/// Our end of the request socket, once the whole request is on it.
static STOP_SOCKET: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward_signal(signal: libc::c_int) {
    // After the request, purple-init takes a stop request as one byte on
    // the socket (it makes root its real uid, and then we may no longer
    // signal it); before, while it still runs as us, a signal reaches it.
    let socket = STOP_SOCKET.load(Ordering::SeqCst);
    if socket >= 0 {
        let byte = [u8::try_from(signal).unwrap_or(0)];
        // SAFETY: write is async-signal-safe; the socket stays open until
        // the report has been read, and the forwarder is cleared before.
        unsafe {
            libc::write(socket, byte.as_ptr().cast(), 1);
        }
        return;
    }
    let pid = INIT_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is purple-init, our child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the supervisor go on to
/// purple-init, which ends the sandbox and still sends its report.
fn forward_stop_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(forward_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only loads an atomic and calls kill(2), both
        // async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Runs one sandbox: spawn purple-init with the socket at fd 3 and our own
/// stdin/stdout/stderr, send the request with its fds, wait for the report.
pub fn run_sandbox(
    init: &Path,
    request: &SandboxRequest,
    fds: &[std::os::fd::RawFd],
) -> Result<ExitReport, LaunchError> {
    // Encode first so an oversized request never starts purple-init.
    purple_common::codec::encode_frame(request, protocol::PROTOCOL_VERSION, MAX_REQUEST_BYTES)
        .map_err(|e| LaunchError::RequestTooLarge(e.to_string()))?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(LaunchError::Socket)?;
    let mut child = spawn_init(init, &theirs)?;
    drop(theirs);
    INIT_PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    forward_stop_signals();

    if let Err(e) = protocol::send_message(ours.as_fd(), request, MAX_REQUEST_BYTES, fds) {
        // purple-init may already have answered (e.g. refused): prefer that.
        if let Ok((report, _)) =
            protocol::receive_message::<ExitReport>(ours.as_fd(), MAX_REPLY_BYTES)
        {
            let _ = child.wait();
            return Ok(report);
        }
        let _ = child.kill();
        let _ = child.wait();
        return Err(LaunchError::Send(e));
    }
    STOP_SOCKET.store(ours.as_raw_fd(), Ordering::SeqCst);
    let reply = protocol::receive_message::<ExitReport>(ours.as_fd(), MAX_REPLY_BYTES);
    STOP_SOCKET.store(-1, Ordering::SeqCst);
    let status = child.wait();
    match reply {
        Ok((report, _)) => Ok(report),
        Err(_) => Err(LaunchError::NoReport {
            status: status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
        }),
    }
}

fn spawn_init(init: &Path, socket: &OwnedFd) -> Result<Child, LaunchError> {
    let socket_fd = socket.as_raw_fd();
    let mut command = Command::new(init);
    command.env_clear();
    // Honoured by purple-init only when the real caller is root (tests).
    for name in ["PURPLE_CONFIG", "PURPLE_NETD_SOCKET"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // SAFETY: the closure runs between fork and exec and only calls dup2
    // and fcntl, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if socket_fd == INIT_SOCKET_FD {
                let flags = libc::fcntl(socket_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(socket_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(socket_fd, INIT_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| LaunchError::Spawn {
        path: init.display().to_string(),
        source,
    })
}
