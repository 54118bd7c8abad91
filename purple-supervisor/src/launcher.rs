//! Starting purple-init and exchanging the one request and one report.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use purple_common::protocol::{
    self, InitReply, SandboxRequest, SandboxStarted, TransportError, INIT_SOCKET_FD,
    MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
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
/// Stop signals sent to us go on to purple-init.
pub fn run_sandbox(
    init: &Path,
    request: &SandboxRequest,
    fds: &[std::os::fd::RawFd],
) -> Result<ExitReport, LaunchError> {
    check_request_size(request)?;
    let mut process = InitProcess::spawn(init, InheritedStdio::Ours)?;
    INIT_PID.store(i32::try_from(process.pid()).unwrap_or(0), Ordering::SeqCst);
    forward_stop_signals();
    if let Some(report) = process.send_request(request, fds)? {
        return Ok(report);
    }
    STOP_SOCKET.store(process.socket.as_raw_fd(), Ordering::SeqCst);
    let ending = process.wait_report();
    STOP_SOCKET.store(-1, Ordering::SeqCst);
    ending.map(|(_, report)| report)
}

/// Encodes the request once, so that an oversized one never starts
/// purple-init.
pub fn check_request_size(request: &SandboxRequest) -> Result<(), LaunchError> {
    purple_common::codec::encode_frame(request, protocol::PROTOCOL_VERSION, MAX_REQUEST_BYTES)
        .map(|_| ())
        .map_err(|e| LaunchError::RequestTooLarge(e.to_string()))
}

/// The standard streams purple-init (and so the command) gets.
#[derive(Debug)]
pub enum InheritedStdio {
    /// The supervisor's own (`run`).
    Ours,
    /// Pipes read and written by the caller (`serve`); stdin is /dev/null
    /// unless `stdin` is set.
    Pipes { stdin: bool },
}

/// One running purple-init and our end of its request socket.
#[derive(Debug)]
pub struct InitProcess {
    child: Child,
    socket: Arc<OwnedFd>,
}

/// Asks a purple-init to end its sandbox, from any thread, once the whole
/// request is on the socket (before that purple-init may still stop to
/// read a byte that belongs to the request).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<OwnedFd>);

impl StopHandle {
    /// Writes the stop byte (a signal number, SIGTERM for `serve`'s kill).
    /// purple-init kills PID 1, which takes every process of the sandbox,
    /// and still sends its report. A failed write means purple-init is
    /// gone already.
    pub fn stop(&self, signal: i32) {
        let byte = [u8::try_from(signal).unwrap_or(libc::SIGTERM as u8)];
        let _ = nix::sys::socket::send(
            self.0.as_raw_fd(),
            &byte,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        );
    }
}

impl InitProcess {
    pub fn spawn(init: &Path, stdio: InheritedStdio) -> Result<InitProcess, LaunchError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(LaunchError::Socket)?;
        let child = spawn_init(init, &theirs, stdio)?;
        Ok(InitProcess {
            child,
            socket: Arc::new(ours),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pipes of [`InheritedStdio::Pipes`], once.
    pub fn take_stdio(
        &mut self,
    ) -> (
        Option<std::process::ChildStdin>,
        Option<std::process::ChildStdout>,
        Option<std::process::ChildStderr>,
    ) {
        (
            self.child.stdin.take(),
            self.child.stdout.take(),
            self.child.stderr.take(),
        )
    }

    /// Sends the request with its fds. `Ok(Some(report))` when purple-init
    /// refused it before reading all of it.
    pub fn send_request(
        &mut self,
        request: &SandboxRequest,
        fds: &[std::os::fd::RawFd],
    ) -> Result<Option<ExitReport>, LaunchError> {
        let Err(e) = protocol::send_message(self.socket.as_fd(), request, MAX_REQUEST_BYTES, fds)
        else {
            return Ok(None);
        };
        // purple-init may already have answered (e.g. refused): prefer that.
        if let Ok((InitReply::Finished(report), _)) =
            protocol::receive_message::<InitReply>(self.socket.as_fd(), MAX_REPLY_BYTES)
        {
            let _ = self.child.wait();
            return Ok(Some(*report));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(LaunchError::Send(e))
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.socket))
    }

    /// The next reply; `Started` comes at most once, before `Finished`.
    pub fn next_reply(&self) -> Result<InitReply, TransportError> {
        protocol::receive_message::<InitReply>(self.socket.as_fd(), MAX_REPLY_BYTES)
            .map(|(reply, _)| reply)
    }

    /// Reads replies up to the report, then reaps purple-init.
    pub fn wait_report(self) -> Result<(Option<SandboxStarted>, ExitReport), LaunchError> {
        let mut started = None;
        let reply = loop {
            match self.next_reply() {
                Ok(InitReply::Started(s)) => started = Some(s),
                Ok(InitReply::Finished(report)) => break Ok(*report),
                Err(e) => break Err(e),
            }
        };
        self.finish(reply).map(|report| (started, report))
    }

    /// Reaps purple-init after its last reply (or a failed read).
    pub fn finish(
        mut self,
        reply: Result<ExitReport, TransportError>,
    ) -> Result<ExitReport, LaunchError> {
        let status = self.child.wait();
        reply.map_err(|_| LaunchError::NoReport {
            status: status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
        })
    }
}

fn spawn_init(init: &Path, socket: &OwnedFd, stdio: InheritedStdio) -> Result<Child, LaunchError> {
    let socket_fd = socket.as_raw_fd();
    let mut command = Command::new(init);
    command.env_clear();
    if let InheritedStdio::Pipes { stdin } = stdio {
        // A terminal's Ctrl-C reaches `serve`, which stops its sandboxes
        // in order; it must not also reach every purple-init directly.
        command.process_group(0);
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
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
