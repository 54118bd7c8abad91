//! Fixtures for the tests of `purple-supervisor serve` (docs/api.md): a
//! service started as a child process on a socket in a temporary directory,
//! as root or as the test user, and small clients of its API.
//!
//! [`Serve`] starts `purple-supervisor serve --socket DIR/s.sock [OPTS]`,
//! waits until the socket accepts, and on drop sends SIGTERM to that child
//! (by its pid), waits (bounded), then SIGKILL. The API calls go through
//! the crate's own client (`purple_supervisor::http::client`); [`raw`]
//! speaks HTTP/1.1 by hand for requests that client would never send
//! (malformed bodies, oversized bodies, clients that never read).
//!
//! [`CgroupParent`] gives a root service an admin config of its own
//! (`PURPLE_CONFIG`) whose cgroup parent only this test uses, so that
//! "no cgroup left behind" can be checked exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use purple_supervisor::http::client;
use serde_json::{json, Value};

use crate::{collect, private_dir, Caller, TEST_GID, TEST_UID};

/// How long the service may take to accept on its socket.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// How long the service may take to exit after SIGTERM (it waits at most
/// 15 s for the sandboxes' reports).
pub const STOP_LIMIT: Duration = Duration::from_secs(40);
/// How long one sandbox may take to finish before a test gives up.
pub const WAIT_LIMIT: Duration = Duration::from_secs(180);
/// How long a command-line client may run before a test gives up.
pub const CLI_LIMIT: Duration = Duration::from_secs(120);

/// How long one read or write of a client may wait (a `wait` call asks
/// for at most 30 s).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The statuses of a sandbox that has ended.
pub const FINISHED: [&str; 4] = ["completed", "timeout", "killed", "failed"];

/// The tests of one binary run on threads; the service tests take turns,
/// so that each one's "nothing left behind" counts (purple-init processes,
/// mounts) and its pool see no other test's sandboxes.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `f` every 20 ms until it holds or `limit` passed.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `8-4-4-4-12` lower-case hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A number unique in this test process, for markers like `sleep 100.N`
/// that the test then looks for in /proc.
pub fn marker(whole_seconds: u32) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{whole_seconds}.{}{n:03}", std::process::id())
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// An HTTP reply: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the reply (status {}) is not JSON ({e}):\n{}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// For assertion messages.
    pub fn show(&self) -> String {
        format!(
            "status {}, headers {:?}\n{}",
            self.status,
            self.headers,
            self.text()
        )
    }

    /// Asserts an API error: the status, a JSON body with a non-empty
    /// `error`, and `field` when one is expected. Returns the body.
    pub fn assert_error(&self, status: u16, field: Option<&str>, what: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "{what}: expected {status}, got:\n{}",
            self.show()
        );
        let body = self.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no `error` message in the reply:\n{}",
            self.show()
        );
        if let Some(field) = field {
            assert_eq!(
                body["field"].as_str(),
                Some(field),
                "{what}: wrong or missing `field`:\n{}",
                self.show()
            );
        }
        body
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 (for what the crate's client would never send)
// ---------------------------------------------------------------------------

/// A request's bytes: the request line, `Host`, the extra header lines,
/// `Content-Length` when there is a body, `Connection: close`.
pub fn request_bytes(method: &str, path: &str, extra_headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in extra_headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Connects with generous read and write timeouts (so a test never hangs).
pub fn connect(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Sends `request` as it is and reads one reply. A write error is ignored
/// (the service may answer and close before reading an oversized body).
pub fn raw(socket: &Path, request: &[u8]) -> Reply {
    let mut stream = connect(socket);
    let _ = stream.write_all(request);
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader).unwrap_or_else(|e| panic!("reading the reply to a raw request: {e}"))
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    let n = r.read_line(&mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed mid-reply",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The status line and headers of a reply.
fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let status_line = read_line(r)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
}

/// One chunk of a chunked body; `None` after the last one.
fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let size_line = read_line(r)?;
    let size_text = size_line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad chunk size {size_line:?}"),
        )
    })?;
    if size == 0 {
        // Trailers, then the empty line.
        while !read_line(r)?.is_empty() {}
        return Ok(None);
    }
    let mut chunk = vec![0u8; size];
    r.read_exact(&mut chunk)?;
    read_line(r)?;
    Ok(Some(chunk))
}

/// One whole reply: by `Content-Length`, chunks, or to the end.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let (status, headers) = read_head(r)?;
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(chunk) = read_chunk(r)? {
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A sandbox's output as the output endpoint gave it.
#[derive(Debug, Clone, Default)]
pub struct SandboxOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The final `{"end": ...}` line.
    pub end: Value,
    /// Data lines received.
    pub lines: usize,
}

impl SandboxOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Adds one NDJSON line; panics on a line that breaks docs/api.md.
    pub fn add_line(&mut self, line: &Value) {
        if line.get("end").is_some() {
            assert!(
                self.end.is_null(),
                "a second end line: {line} (first: {})",
                self.end
            );
            self.end = line.clone();
            return;
        }
        assert!(self.end.is_null(), "a data line after the end line: {line}");
        let data = line["data"]
            .as_str()
            .unwrap_or_else(|| panic!("an output line without data: {line}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("output data is not base64 ({e}): {line}"));
        assert!(
            bytes.len() <= 64 * 1024,
            "an output line holds {} bytes, over 64 KiB",
            bytes.len()
        );
        match line["stream"].as_str() {
            Some("stdout") => self.stdout.extend_from_slice(&bytes),
            Some("stderr") => self.stderr.extend_from_slice(&bytes),
            _ => panic!("an output line with a bad stream: {line}"),
        }
        self.lines += 1;
    }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// A running `purple-supervisor serve`. Dropping it stops it: SIGTERM to
/// its pid, a bounded wait, then SIGKILL.
#[derive(Debug)]
pub struct Serve {
    caller: Caller,
    socket: PathBuf,
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    pid: i32,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// The private directory the socket lives in, owned by `caller`.
pub fn socket_dir(caller: Caller) -> tempfile::TempDir {
    match caller {
        Caller::Root => private_dir(0, 0),
        Caller::User => private_dir(TEST_UID, TEST_GID),
    }
}

/// Sends `signal` to `pid`, a process the test itself started.
pub fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own
    // child's (not yet reaped, so it cannot have been reused).
    unsafe { libc::kill(pid, signal) };
}

impl Serve {
    /// `serve --socket DIR/s.sock OPTS` as `caller`.
    pub fn start(caller: Caller, opts: &[&str]) -> Serve {
        Serve::start_with(caller, opts, &[])
    }

    /// Same, with extra environment variables (e.g. `PURPLE_CONFIG`).
    pub fn start_with(caller: Caller, opts: &[&str], env: &[(&str, OsString)]) -> Serve {
        Serve::start_in(caller, socket_dir(caller), opts, env)
    }

    /// Same, in an existing socket directory (a stale socket may be there).
    pub fn start_in(
        caller: Caller,
        dir: tempfile::TempDir,
        opts: &[&str],
        env: &[(&str, OsString)],
    ) -> Serve {
        let socket = dir.path().join("s.sock");
        let mut args: Vec<OsString> =
            vec!["serve".into(), "--socket".into(), socket.clone().into()];
        args.extend(opts.iter().map(OsString::from));
        let mut cmd = caller.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn purple-supervisor serve");
        let pid = i32::try_from(child.id()).unwrap();
        // Both streams, gathered as they come, for assertion messages.
        let (out, out_t) = collect(child.stdout.take().unwrap());
        let (err, err_t) = collect(child.stderr.take().unwrap());
        let mut serve = Serve {
            caller,
            socket,
            dir: Some(dir),
            child: Some(child),
            pid,
            out,
            err,
            readers: vec![out_t, err_t],
        };
        let start = Instant::now();
        loop {
            if UnixStream::connect(&serve.socket).is_ok() {
                break;
            }
            if let Some(status) = serve.try_wait() {
                panic!(
                    "purple-supervisor serve {opts:?} exited ({status}) before accepting\n{}",
                    serve.log_after_exit()
                );
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "purple-supervisor serve {opts:?} did not accept on {} within {START_LIMIT:?}",
                serve.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn caller(&self) -> Caller {
        self.caller
    }

    /// The exit status, once the service has exited (and been reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    /// What the service wrote to stderr (and stdout) so far.
    pub fn log(&self) -> String {
        format!(
            "--- serve's stderr:\n{}--- serve's stdout:\n{}",
            String::from_utf8_lossy(&self.err.lock().unwrap()),
            String::from_utf8_lossy(&self.out.lock().unwrap())
        )
    }

    /// The log once the service exited (waits, bounded, for the streams).
    fn log_after_exit(&mut self) -> String {
        let _ = wait_until(Duration::from_secs(5), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        self.log()
    }

    /// Waits at most `limit` for the service to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (STOP_LIMIT). Panics when the service does not
    /// exit (the drop then kills it).
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.pid, libc::SIGTERM);
        match self.wait_exit(STOP_LIMIT) {
            Some(status) => status,
            None => panic!(
                "purple-supervisor serve did not exit within {STOP_LIMIT:?} of SIGTERM\n{}",
                self.log()
            ),
        }
    }

    /// SIGKILL, reaped; gives back the socket directory (with the stale
    /// socket in it) for a next service.
    pub fn kill_hard(mut self) -> tempfile::TempDir {
        signal(self.pid, libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            child.wait().expect("wait");
        }
        self.dir.take().unwrap()
    }

    // -- the API -------------------------------------------------------------

    /// The crate's client, with a generous timeout per read or write so a
    /// test never hangs on a service that stopped answering.
    pub fn client(&self) -> client::Client {
        client::Client::new(&self.socket).with_timeout(CLIENT_TIMEOUT)
    }

    /// One request through the crate's client.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let r = self
            .client()
            .request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.log()));
        Reply {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: r.body.clone(),
        }
    }

    /// GET `path`, expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.call("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}:\n{}", r.show());
        r.json()
    }

    /// POST /v1/sandboxes: expects 201, `{"id": UUID, "status": "queued"}`
    /// and `Location`; returns the id.
    pub fn submit(&self, body: &Value) -> String {
        let r = self.call("POST", "/v1/sandboxes", Some(body));
        assert_eq!(r.status, 201, "POST /v1/sandboxes {body}:\n{}", r.show());
        let reply = r.json();
        let id = reply["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {reply}"))
            .to_owned();
        assert!(is_uuid(&id), "the id {id:?} is not a UUID");
        assert_eq!(reply["status"], "queued", "{reply}");
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/sandboxes/{id}").as_str()),
            "{}",
            r.show()
        );
        id
    }

    /// Submits `argv` with no other field.
    pub fn submit_argv(&self, argv: &[&str]) -> String {
        self.submit(&json!({ "argv": argv }))
    }

    /// GET /v1/sandboxes/{id}.
    pub fn get(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/sandboxes/{id}"))
    }

    pub fn status(&self, id: &str) -> String {
        self.get(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (WAIT_LIMIT) until the sandbox has finished; its details.
    pub fn wait(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let details = self.get_json(&format!("/v1/sandboxes/{id}/wait?timeout=30"));
            let status = details["status"].as_str().unwrap_or_default();
            if FINISHED.contains(&status) {
                return details;
            }
            assert!(
                start.elapsed() < WAIT_LIMIT,
                "sandbox {id} not finished after {WAIT_LIMIT:?}: {details}"
            );
        }
    }

    /// Polls (bounded) until the sandbox's status is `want`; panics if it
    /// finishes otherwise or takes too long.
    pub fn wait_status(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let details = self.get(id);
            let status = details["status"].as_str().unwrap_or_default();
            if status == want {
                return details;
            }
            assert!(
                !FINISHED.contains(&status),
                "sandbox {id} finished ({status}) before reaching {want}: {details}"
            );
            assert!(
                start.elapsed() < WAIT_LIMIT,
                "sandbox {id} not {want} after {WAIT_LIMIT:?}: {details}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every NDJSON line of `GET path` as it arrives; `on_line` returns
    /// false to stop reading (the connection is then closed).
    pub fn stream(&self, path: &str, mut on_line: impl FnMut(&Value) -> bool) {
        let mut stopped = false;
        let result = self.client().stream_lines(path, |line: &[u8]| {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let value: Value = serde_json::from_slice(line).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not JSON ({e}): {}", String::from_utf8_lossy(line)),
                )
            })?;
            if on_line(&value) {
                Ok(())
            } else {
                stopped = true;
                Err(std::io::Error::other("stopped by the test"))
            }
        });
        if !stopped {
            result.unwrap_or_else(|e| panic!("GET {path}: {e:#}\n{}", self.log()));
        }
    }

    /// The whole output (no follow), decoded.
    pub fn output(&self, id: &str) -> SandboxOutput {
        let mut out = SandboxOutput::default();
        self.stream(&format!("/v1/sandboxes/{id}/output"), |line| {
            out.add_line(line);
            true
        });
        assert!(!out.end.is_null(), "output of {id}: no end line");
        out
    }

    pub fn pool(&self) -> Value {
        self.get_json("/v1/pool")
    }

    pub fn metrics(&self) -> String {
        let r = self.call("GET", "/metrics", None);
        assert_eq!(r.status, 200, "GET /metrics:\n{}", r.show());
        r.text()
    }

    /// A request sent as raw bytes to this service.
    pub fn raw(&self, request: &[u8]) -> Reply {
        raw(&self.socket, request)
    }

    /// `purple-supervisor SUB --socket S ARGS...` as the service's caller.
    pub fn cli(&self, sub: &str, args: &[&str]) -> Output {
        let mut all: Vec<OsString> =
            vec![sub.into(), "--socket".into(), self.socket.clone().into()];
        all.extend(args.iter().map(OsString::from));
        run_bounded(self.caller.command(&all), CLI_LIMIT)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                signal(self.pid, libc::SIGTERM);
                let start = Instant::now();
                while matches!(child.try_wait(), Ok(None)) && start.elapsed() < STOP_LIMIT {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    eprintln!(
                        "purple-supervisor serve (pid {}) ignored SIGTERM for {STOP_LIMIT:?}: SIGKILL",
                        self.pid
                    );
                    signal(self.pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` (stdin /dev/null) with a deadline; killed (by pid) past it.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (out, out_t) = collect(child.stdout.take().unwrap());
    let (err, err_t) = collect(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?} (killed)\n--- stdout:\n{}\n--- stderr:\n{}",
                String::from_utf8_lossy(&out.lock().unwrap()),
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = wait_until(Duration::from_secs(10), || {
        out_t.is_finished() && err_t.is_finished()
    });
    let stdout = std::mem::take(&mut *out.lock().unwrap());
    let stderr = std::mem::take(&mut *err.lock().unwrap());
    Output {
        status,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------
// Host-side checks
// ---------------------------------------------------------------------------

fn proc_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .trim_start()
        .chars()
        .next()
}

/// Live (not zombie) processes whose whole argv is `argv`.
pub fn processes_with_argv(argv: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: i32 = name.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            let same =
                args.len() == argv.len() && args.iter().zip(argv).all(|(a, b)| *a == b.as_bytes());
            (same && !matches!(proc_state(&name), Some('Z' | 'X') | None)).then_some(pid)
        })
        .collect()
}

/// Live purple-init processes (by comm), not zombies.
pub fn live_inits() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: i32 = name.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "purple-init" && !matches!(proc_state(&name), Some('Z' | 'X') | None))
                .then_some(pid)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A private cgroup parent (root services only)
// ---------------------------------------------------------------------------

/// The controllers the sandbox limits use.
const LIMIT_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// Where sandbox cgroups can live: the v1 hierarchies with the limit
/// controllers when v1 has the memory controller, else the cgroup2 root.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1: Vec<(PathBuf, bool)> = Vec::new();
    let mut v2: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fs_type = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        match fs_type {
            "cgroup" => {
                let controllers: Vec<&str> = options
                    .split(',')
                    .filter(|o| LIMIT_CONTROLLERS.contains(o))
                    .collect();
                if !controllers.is_empty() && !v1.iter().any(|(p, _)| p == Path::new(point)) {
                    v1.push((PathBuf::from(point), controllers.contains(&"memory")));
                }
            }
            "cgroup2" => v2.push(PathBuf::from(point)),
            _ => {}
        }
    }
    if v1.iter().any(|(_, memory)| *memory) {
        return v1.into_iter().map(|(p, _)| p).collect();
    }
    let main = v2
        .iter()
        .find(|p| *p == Path::new("/sys/fs/cgroup"))
        .cloned();
    main.or_else(|| v2.first().cloned()).into_iter().collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// An admin config (`PURPLE_CONFIG`, honoured for root only) whose cgroup
/// parent `purple-test-<pid>-<tag>` only this test uses. Its cgroups are
/// removed on drop, pass or fail.
#[derive(Debug)]
pub struct CgroupParent {
    name: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl CgroupParent {
    pub fn new(tag: &str) -> CgroupParent {
        let name = format!("purple-test-{}-{tag}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("serve-config-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("purple.toml");
        std::fs::write(&config, format!("[cgroup]\nparent = \"{name}\"\n")).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        CgroupParent {
            name,
            config,
            _dir: dir,
        }
    }

    /// The environment a root service needs to use it.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![("PURPLE_CONFIG", self.config.clone().into_os_string())]
    }

    fn dirs(&self) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(&self.name))
            .collect()
    }

    /// Sandbox cgroups left: the directories below each per-caller
    /// directory (`uid-UID`), and anything else directly under the parent.
    pub fn children(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for parent in self.dirs() {
            for d in subdirs(&parent) {
                let is_caller = d
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("uid-"));
                if is_caller {
                    out.extend(subdirs(&d));
                } else {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Whether any sandbox ever made the parent (so an empty listing means
    /// something).
    pub fn created(&self) -> bool {
        let dirs = self.dirs();
        !dirs.is_empty() && dirs.iter().all(|d| d.is_dir())
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for child in self.children() {
            let _ = std::fs::remove_dir(child);
        }
        for parent in self.dirs() {
            for d in subdirs(&parent) {
                let _ = std::fs::remove_dir(d);
            }
            let _ = std::fs::remove_dir(parent);
        }
    }
}
