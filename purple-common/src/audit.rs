//! The audit trail: one event type, two renderings (a JSON line, and an
//! RFC 5424 syslog message with structured data), and the sinks that write
//! them. The schema is documented in docs/audit.md and versioned by
//! `AUDIT_SCHEMA_VERSION`: fields are only ever added.
//!
//! purple-init writes the security decisions (it is the trusted side, and
//! the admin config alone decides where its events go); purple-supervisor
//! adds what only it knows (a refusal before purple-init was started).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub const AUDIT_SCHEMA_VERSION: u32 = 1;
/// The structured-data ID: a name at the private enterprise number RFC 5612
/// reserves for documentation (Purple has none of its own).
pub const SD_ID: &str = "purple@32473";
/// The default syslog socket.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";
/// How long one syslog send may block before the event counts as lost.
pub const SYSLOG_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest a single string field gets in an event (command arguments,
/// messages); longer ones are cut with "...". Keeps a syslog datagram and
/// a JSON line well below what any receiver accepts.
pub const MAX_FIELD_CHARS: usize = 1024;
/// In syslog, each structured-data value and the summary are cut shorter:
/// the whole message must fit one datagram (escaping can double a value).
pub const MAX_SD_VALUE_CHARS: usize = 512;
pub const MAX_SUMMARY_CHARS: usize = 256;
/// At most this many command arguments are recorded (plus their count).
pub const MAX_ARGS_RECORDED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SandboxCreated,
    SandboxStarted,
    SandboxRefused,
    SetupFailed,
    LimitHit,
    SeccompViolation,
    SandboxExited,
    NetAttached,
    NetDetached,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::SandboxCreated,
        EventKind::SandboxStarted,
        EventKind::NetAttached,
        EventKind::NetDetached,
        EventKind::SandboxRefused,
        EventKind::SetupFailed,
        EventKind::LimitHit,
        EventKind::SeccompViolation,
        EventKind::SandboxExited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::SandboxCreated => "sandbox.created",
            EventKind::SandboxStarted => "sandbox.started",
            EventKind::SandboxRefused => "sandbox.refused",
            EventKind::SetupFailed => "setup.failed",
            EventKind::LimitHit => "limit.hit",
            EventKind::SeccompViolation => "seccomp.violation",
            EventKind::SandboxExited => "sandbox.exited",
            EventKind::NetAttached => "net.attached",
            EventKind::NetDetached => "net.detached",
        }
    }

    /// Every sandbox ends with exactly one of these.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::SandboxRefused | EventKind::SetupFailed | EventKind::SandboxExited
        )
    }

    fn severity(self) -> syslog::Severity {
        match self {
            EventKind::SandboxRefused
            | EventKind::SetupFailed
            | EventKind::LimitHit
            | EventKind::SeccompViolation => syslog::Severity::LOG_WARNING,
            EventKind::SandboxCreated
            | EventKind::SandboxStarted
            | EventKind::SandboxExited
            | EventKind::NetAttached
            | EventKind::NetDetached => syslog::Severity::LOG_INFO,
        }
    }
}

/// One audit event: the common header and the fields of its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub kind: EventKind,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub sandbox_id: String,
    /// The caller's real uid, and its name (from /etc/passwd, or `u<uid>`).
    pub uid: u32,
    pub user: String,
    /// The process that wrote the event.
    pub pid: u32,
    /// `purple-init` or `purple-supervisor`.
    pub source: &'static str,
    pub fields: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(
        kind: EventKind,
        source: &'static str,
        sandbox_id: &str,
        uid: u32,
        user: &str,
    ) -> Self {
        AuditEvent {
            kind,
            time: rfc3339_now(),
            sandbox_id: sandbox_id.to_owned(),
            uid,
            user: clip(user),
            pid: std::process::id(),
            source,
            fields: Map::new(),
        }
    }

    /// Adds a field; strings are clipped to `MAX_FIELD_CHARS`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), clip_value(value.into()));
        self
    }

    /// The command line, clipped: at most `MAX_ARGS_RECORDED` arguments of
    /// `MAX_FIELD_CHARS` each, and the real count.
    pub fn with_command(self, argv: &[String]) -> Self {
        let recorded: Vec<Value> = argv
            .iter()
            .take(MAX_ARGS_RECORDED)
            .map(|a| Value::String(clip(a)))
            .collect();
        self.with("command", Value::Array(recorded))
            .with("argc", argv.len())
    }

    /// The event as one JSON object: the header keys and the fields, keys
    /// sorted (a field never overrides a header key).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("v".into(), AUDIT_SCHEMA_VERSION.into());
        object.insert("time".into(), self.time.clone().into());
        object.insert("event".into(), self.kind.name().into());
        object.insert("sandbox_id".into(), self.sandbox_id.clone().into());
        object.insert("uid".into(), self.uid.into());
        object.insert("user".into(), self.user.clone().into());
        object.insert("pid".into(), self.pid.into());
        object.insert("source".into(), self.source.into());
        for (key, value) in &self.fields {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(object)
    }

    /// One line of JSON, newline included.
    pub fn to_json_line(&self) -> String {
        let mut line = self.to_json().to_string();
        line.push('\n');
        line
    }

    /// The RFC 5424 structured data: `[purple@32473 key="value" ...]`, with
    /// every header key and field (non-string values as compact JSON; null
    /// ones left out).
    pub fn structured_data(&self) -> String {
        let mut sd = format!("[{SD_ID}");
        if let Value::Object(object) = self.to_json() {
            for (key, value) in object {
                let text = match value {
                    Value::Null => continue,
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                // A datagram has a size limit the caller must not be able
                // to push an event past (with a long command line, say):
                // each value is cut here; the JSON line keeps it whole.
                let text = clip_to(&text, MAX_SD_VALUE_CHARS);
                sd.push(' ');
                sd.push_str(&sd_name(&key));
                sd.push_str("=\"");
                sd.push_str(&sd_escape(&text));
                sd.push('"');
            }
        }
        sd.push(']');
        sd
    }

    /// The free-text part of the syslog message: one line for people.
    pub fn summary(&self) -> String {
        let field = |k: &str| {
            self.fields
                .get(k)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let text = match self.kind {
            EventKind::SandboxCreated => {
                format!("sandbox created for {}: {}", self.user, field("command"))
            }
            EventKind::SandboxStarted => format!("sandbox started (cgroup {})", field("cgroup")),
            EventKind::SandboxRefused => format!(
                "request refused ({}): {}",
                field("reason"),
                field("message")
            ),
            EventKind::SetupFailed => format!("setup failed: {}", field("message")),
            EventKind::LimitHit => format!("limit hit: {}", field("limit")),
            EventKind::SeccompViolation => "the seccomp filter killed the command".to_owned(),
            EventKind::NetAttached => format!(
                "network attached: {} out {} in {}",
                field("address"),
                field("allow_out"),
                field("allow_in")
            ),
            EventKind::NetDetached => format!(
                "network detached: {} packets dropped",
                field("dropped_packets")
            ),
            EventKind::SandboxExited => format!(
                "sandbox ended: {} (exit {})",
                field("status"),
                field("exit_code")
            ),
        };
        clip_to(&printable(&text), MAX_SUMMARY_CHARS)
    }
}

/// A uid's login name, read from /etc/passwd directly (no NSS: static
/// binaries, and no directory service on the start-up path); `u<uid>` when
/// the file does not name it.
pub fn user_name_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd_name(&passwd, uid).unwrap_or_else(|| format!("u{uid}"))
}

fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid = fields.nth(1)?.parse::<u32>().ok()?;
        (entry_uid == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// RFC 5424 PARAM-NAME: printable US-ASCII without `=`, space, `]`, `"`,
/// at most 32 characters. Purple's keys already are; this keeps it so.
fn sd_name(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect()
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]` get a backslash, and
/// line breaks and other control characters (which a command line can
/// hold) become `\uXXXX` text, so no value can start a forged line in a
/// log file written by the syslog daemon.
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        push_printable(&mut out, c);
    }
    out
}

/// Characters that end or alter a line on some reader: C0 and C1
/// controls, DEL, and the Unicode line and paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

fn push_printable(out: &mut String, c: char) {
    if breaks_lines(c) {
        out.push_str(&format!("\\u{:04x}", u32::from(c)));
    } else {
        out.push(c);
    }
}

/// `text` with every line-breaking character as `\uXXXX`.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_printable(&mut out, c);
    }
    out
}

fn clip(s: &str) -> String {
    clip_to(s, MAX_FIELD_CHARS)
}

fn clip_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max).collect();
    cut.push_str("...");
    cut
}

fn clip_value(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(clip(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(clip_value).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, clip_value(v))).collect())
        }
        other => other,
    }
}

/// Now, as `2026-11-28T04:05:06.789Z`.
pub fn rfc3339_now() -> String {
    rfc3339_at(SystemTime::now())
}

/// `time`, as `2026-11-28T04:05:06.789Z`.
pub fn rfc3339_at(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (the well-known era-based conversion).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Renders events as RFC 5424 messages for the syslog crate's transport:
/// `<PRI>1 TIMESTAMP HOST APP PID MSGID [purple@32473 ...] MSG`, with the
/// event name as MSGID (the crate's own 5424 formatter takes a number).
#[derive(Debug, Clone)]
struct Rfc5424 {
    facility: syslog::Facility,
    hostname: String,
    app: &'static str,
}

impl syslog::LogFormat<&AuditEvent> for Rfc5424 {
    fn format<W: Write>(
        &self,
        w: &mut W,
        severity: syslog::Severity,
        event: &AuditEvent,
    ) -> syslog::Result<()> {
        write!(
            w,
            "<{}>1 {} {} {} {} {} {} {}",
            self.facility as u8 | severity as u8,
            event.time,
            self.hostname,
            self.app,
            event.pid,
            event.kind.name(),
            event.structured_data(),
            event.summary()
        )
        .map_err(syslog::Error::Write)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("syslog socket {path}: {detail}")]
    Syslog { path: PathBuf, detail: String },
    #[error("audit log {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log descriptor: {0}")]
    Descriptor(String),
    #[error("unknown syslog facility {0:?}")]
    Facility(String),
}

pub fn parse_facility(name: &str) -> Result<syslog::Facility, AuditError> {
    name.parse::<syslog::Facility>()
        .map_err(|_| AuditError::Facility(name.to_owned()))
}

/// Where events go.
pub enum Sink {
    Syslog {
        path: PathBuf,
        logger: syslog::Logger<syslog::LoggerBackend, Rfc5424Handle>,
    },
    /// A JSON lines file Purple opens itself, per event (so a file that
    /// logrotate renamed is never written to again).
    JsonFile { path: PathBuf },
    /// A JSON lines file the caller opened (`--audit-log`), by descriptor.
    JsonDescriptor { fd: OwnedFd },
}

/// The formatter type behind `Sink::Syslog` (opaque outside this module).
#[derive(Debug, Clone)]
pub struct Rfc5424Handle(Rfc5424);

impl syslog::LogFormat<&AuditEvent> for Rfc5424Handle {
    fn format<W: Write>(
        &self,
        w: &mut W,
        severity: syslog::Severity,
        event: &AuditEvent,
    ) -> syslog::Result<()> {
        self.0.format(w, severity, event)
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Syslog { path, .. } => write!(f, "syslog {}", path.display()),
            Sink::JsonFile { path } => write!(f, "json file {}", path.display()),
            Sink::JsonDescriptor { fd } => write!(f, "json fd {}", fd.as_raw_fd()),
        }
    }
}

impl Sink {
    /// Connects to a syslog socket (datagram, or stream when that is what
    /// listens there).
    pub fn syslog(
        path: &Path,
        facility: syslog::Facility,
        app: &'static str,
    ) -> Result<Sink, AuditError> {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_owned());
        let formatter = Rfc5424Handle(Rfc5424 {
            facility,
            hostname,
            app,
        });
        let logger = syslog::unix_custom(formatter, path).map_err(|e| AuditError::Syslog {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        // Anyone may write to /dev/log; a flooded or stalled syslog daemon
        // must cost an event (reported as a sink failure), not hang Purple.
        let bounded = match &logger.backend {
            syslog::LoggerBackend::Unix(socket) => {
                socket.set_write_timeout(Some(SYSLOG_SEND_TIMEOUT))
            }
            syslog::LoggerBackend::UnixStream(stream) => stream
                .get_ref()
                .set_write_timeout(Some(SYSLOG_SEND_TIMEOUT)),
            _ => Ok(()),
        };
        bounded.map_err(|e| AuditError::Syslog {
            path: path.to_owned(),
            detail: format!("setting a send timeout: {e}"),
        })?;
        Ok(Sink::Syslog {
            path: path.to_owned(),
            logger,
        })
    }

    /// A JSON lines file, its directory created (0700) when missing. The
    /// file is opened once now to prove it can be written.
    pub fn json_file(path: &Path) -> Result<Sink, AuditError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| AuditError::File {
                        path: dir.to_owned(),
                        source,
                    })?;
            }
        }
        open_append(path)?;
        Ok(Sink::JsonFile {
            path: path.to_owned(),
        })
    }

    /// A caller's descriptor: it must be a regular file open for appending,
    /// and not on FUSE, whose server (the caller's, possibly) could hold a
    /// write, and with it the root purple-init, forever.
    pub fn json_descriptor(fd: OwnedFd) -> Result<Sink, AuditError> {
        let stat = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| AuditError::Descriptor(e.to_string()))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(AuditError::Descriptor("not a regular file".into()));
        }
        let fs =
            nix::sys::statfs::fstatfs(&fd).map_err(|e| AuditError::Descriptor(e.to_string()))?;
        if fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC {
            return Err(AuditError::Descriptor(
                "on a FUSE file system (its server could stall purple-init)".into(),
            ));
        }
        // SAFETY: F_GETFL on a descriptor we own reads its status flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(AuditError::Descriptor(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        let writable = matches!(flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR);
        if !writable || flags & libc::O_APPEND == 0 {
            return Err(AuditError::Descriptor(
                "not opened for appending (O_WRONLY|O_APPEND)".into(),
            ));
        }
        Ok(Sink::JsonDescriptor { fd })
    }

    /// Writes one event. A JSON line goes out in one write(2), so lines of
    /// concurrent sandboxes never interleave in an O_APPEND file.
    pub fn write(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        match self {
            Sink::Syslog { path, logger } => {
                let result = match event.kind.severity() {
                    syslog::Severity::LOG_WARNING => logger.warning(event),
                    _ => logger.info(event),
                };
                result.map_err(|e| AuditError::Syslog {
                    path: path.clone(),
                    detail: e.to_string(),
                })
            }
            Sink::JsonFile { path } => {
                let file = open_append(path)?;
                write_line(&file, event).map_err(|source| AuditError::File {
                    path: path.clone(),
                    source,
                })
            }
            Sink::JsonDescriptor { fd } => {
                write_line(fd, event).map_err(|e| AuditError::Descriptor(e.to_string()))
            }
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| AuditError::File {
            path: path.to_owned(),
            source,
        })
}

fn write_line(fd: &impl AsRawFd, event: &AuditEvent) -> std::io::Result<()> {
    let line = event.to_json_line();
    refuse_past_file_size_limit(fd, line.len())?;
    let written = nix::unistd::write(
        // SAFETY: the descriptor is borrowed for this call only and stays
        // open for its duration (its owner is alive).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) },
        line.as_bytes(),
    )
    .map_err(std::io::Error::from)?;
    if written == line.len() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", line.len()),
        ))
    }
}

/// The kernel would write only the part of a line that fits under the
/// process's RLIMIT_FSIZE (a hard limit purple-init's caller set and it
/// could not lift): a torn line would break every reader of the file, so
/// such a line is not written at all.
fn refuse_past_file_size_limit(fd: &impl AsRawFd, len: usize) -> std::io::Result<()> {
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
        .map_err(std::io::Error::from)?;
    if limit == u64::MAX {
        return Ok(());
    }
    let size = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(std::io::Error::from)?
        .st_size;
    let end = u64::try_from(size)
        .unwrap_or(u64::MAX)
        .saturating_add(len as u64);
    if end > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("the line would pass the process's file-size limit of {limit} bytes"),
        ));
    }
    Ok(())
}

/// Writes every event to every sink, remembering what failed.
#[derive(Debug, Default)]
pub struct Auditor {
    sinks: Vec<Sink>,
    failures: Vec<String>,
}

impl Auditor {
    pub fn new() -> Self {
        Auditor::default()
    }

    pub fn add(&mut self, sink: Sink) {
        self.sinks.push(sink);
    }

    pub fn has_sinks(&self) -> bool {
        !self.sinks.is_empty()
    }

    pub fn emit(&mut self, event: &AuditEvent) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.write(event) {
                self.failures.push(e.to_string());
            }
        }
    }

    /// The write failures since the last call.
    pub fn take_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent::new(
            EventKind::SandboxExited,
            "purple-init",
            "abc",
            1000,
            "alice",
        )
        .with("status", "exited")
        .with("exit_code", 0)
        .with("message", "a \"quoted\" ] \\ value")
    }

    #[test]
    fn json_line_has_the_header_then_the_fields() {
        let line = event().to_json_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["event"], "sandbox.exited");
        assert_eq!(v["sandbox_id"], "abc");
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["source"], "purple-init");
        assert_eq!(v["exit_code"], 0);
        // A field cannot override the header.
        let forged = event().with("uid", 0).to_json();
        assert_eq!(forged["uid"], 1000);
    }

    #[test]
    fn structured_data_is_escaped() {
        let sd = event().structured_data();
        assert!(sd.starts_with("[purple@32473 "), "{sd}");
        assert!(sd.ends_with(']'));
        assert!(sd.contains(r#"message="a \"quoted\" \] \\ value""#), "{sd}");
        assert!(sd.contains(r#"exit_code="0""#), "{sd}");
    }

    #[test]
    fn no_value_or_summary_can_break_a_line() {
        let raw = "x\n<86>1 2026-01-01T00:00:00Z forged\r\u{2028}\u{85}\u{7f}\t";
        let argv = vec!["sh".to_owned(), "-c".to_owned(), raw.to_owned()];
        let created = AuditEvent::new(EventKind::SandboxCreated, "purple-init", "id", 1, "a")
            .with_command(&argv);
        let failed = AuditEvent::new(EventKind::SetupFailed, "purple-init", "id", 1, "a")
            .with("message", raw);
        for text in [
            created.structured_data(),
            created.summary(),
            failed.structured_data(),
            failed.summary(),
        ] {
            assert!(
                !text.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{text:?}"
            );
            assert!(text.contains(r"\u2028\u0085\u007f"), "{text}");
        }
        let sd = failed.structured_data();
        assert!(sd.contains(r"x\u000a<86>1"), "{sd}");
    }

    #[test]
    fn syslog_framing() {
        let f = Rfc5424 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: "host".into(),
            app: "purple-init",
        };
        let mut out = Vec::new();
        let e = event();
        syslog::LogFormat::format(&f, &mut out, syslog::Severity::LOG_INFO, &e).unwrap();
        let text = String::from_utf8(out).unwrap();
        // authpriv (10) * 8 + info (6) = 86
        let expected = format!(
            "<86>1 {} host purple-init {} sandbox.exited [purple@32473 ",
            e.time, e.pid
        );
        assert!(text.starts_with(&expected), "{text}");
        assert!(text.ends_with("sandbox ended: exited (exit 0)"), "{text}");
    }

    #[test]
    fn long_fields_are_clipped() {
        let long = "x".repeat(5000);
        let argv: Vec<String> = (0..100).map(|_| long.clone()).collect();
        let e = AuditEvent::new(EventKind::SandboxCreated, "purple-init", "id", 1, "u")
            .with_command(&argv);
        let v = e.to_json();
        assert_eq!(v["argc"], 100);
        let recorded = v["command"].as_array().unwrap();
        assert_eq!(recorded.len(), MAX_ARGS_RECORDED);
        assert_eq!(
            recorded[0].as_str().unwrap().chars().count(),
            MAX_FIELD_CHARS + 3
        );
    }

    #[test]
    fn passwd_lookup() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\nbroken\n";
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 5), None);
    }

    #[test]
    fn a_huge_command_still_fits_one_datagram() {
        let quotes = "\"".repeat(1024);
        let argv: Vec<String> = (0..64).map(|_| quotes.clone()).collect();
        let e = AuditEvent::new(EventKind::SandboxCreated, "purple-init", "id", 1, "u")
            .with_command(&argv);
        let f = Rfc5424 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: "host".into(),
            app: "purple-init",
        };
        let mut out = Vec::new();
        syslog::LogFormat::format(&f, &mut out, syslog::Severity::LOG_INFO, &e).unwrap();
        assert!(out.len() < 8192, "{} bytes", out.len());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_838_706, 789), "2026-11-28T04:05:06.789Z");
    }

    #[test]
    fn json_file_appends_whole_lines_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let mut sink = Sink::json_file(&path).unwrap();
        sink.write(&event()).unwrap();
        // logrotate renames the file; the next event starts a new one.
        std::fs::rename(&path, dir.path().join("sub/audit.jsonl.1")).unwrap();
        sink.write(&event()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/audit.jsonl.1"))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn descriptors_must_be_regular_files_opened_for_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let append = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        assert!(Sink::json_descriptor(append.into()).is_ok());
        let plain = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(Sink::json_descriptor(plain.into()).is_err());
        let dirfd = std::fs::File::open(dir.path()).unwrap();
        assert!(Sink::json_descriptor(dirfd.into()).is_err());
    }
}
