#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The audit trail (docs/audit.md): the events purple-init writes to the
//! admin's sinks (an RFC 5424 syslog socket and a JSON lines file), their
//! framing and fields, one terminal event per sandbox also under load,
//! `[audit] required`, the caller's `--audit-log` copy, and that every JSON
//! line matches docs/audit.schema.json.
//!
//! Each test has its own root-owned temporary directory (mode 0700) with an
//! admin config selected through `PURPLE_CONFIG` (root callers only): its
//! `syslog_socket` is a unix datagram socket the test binds and reads on a
//! thread, its `json_path` a file in the same directory, and its cgroup
//! parent is the test's own (`purple-test-audit-<pid>-<tag>`, removed
//! again when the test ends, pass or fail). Nothing here reads or writes
//! the host's /dev/log: whether a syslog daemon runs does not matter. The
//! unprivileged caller uses the host's admin config, whatever it says.

use purple_tests::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The schema the JSON lines must match (checked by `SchemaChecker`).
const SCHEMA: &str = include_str!("../docs/audit.schema.json");
/// The structured-data ID of every syslog message.
const SD_ID: &str = "purple@32473";
/// Syslog facility numbers (RFC 5424 6.2.1).
const AUTHPRIV: u32 = 10;
const LOCAL3: u32 = 19;
/// Longest any single supervisor run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;
const TERMINAL: [&str; 3] = ["sandbox.refused", "setup.failed", "sandbox.exited"];

// ---------------------------------------------------------------------------
// The syslog receiver
// ---------------------------------------------------------------------------

/// What the test sends its own receiver to stop it. Datagrams on one socket
/// arrive in the order they were sent, so everything purple-init sent
/// before (it sends before it answers the supervisor) is in by then.
const STOP: &[u8] = b"purple audit test: stop";

/// A unix datagram socket collecting every message on a thread.
struct SyslogReceiver {
    path: PathBuf,
    thread: Option<JoinHandle<Result<Vec<Vec<u8>>, String>>>,
}

impl SyslogReceiver {
    fn bind(path: &Path) -> SyslogReceiver {
        let socket =
            UnixDatagram::bind(path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            // Larger than any datagram the kernel lets through.
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) if &buf[..n] == STOP => return Ok(got),
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        });
        SyslogReceiver {
            path: path.to_owned(),
            thread: Some(thread),
        }
    }

    fn send_stop(&self) {
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(STOP, &self.path);
        }
    }

    /// Stops the thread and returns every message, in arrival order.
    fn stop(mut self) -> Vec<String> {
        self.send_stop();
        let got = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("receiver thread")
            .unwrap_or_else(|e| panic!("syslog receiver: {e}"));
        got.into_iter()
            .map(|d| {
                String::from_utf8(d.clone()).unwrap_or_else(|_| {
                    panic!(
                        "a syslog message is not UTF-8: {}",
                        String::from_utf8_lossy(&d)
                    )
                })
            })
            .collect()
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.send_stop();
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A private admin config with its sinks
// ---------------------------------------------------------------------------

/// How the `[audit]` section of a test's admin config is written.
struct Sinks {
    /// `syslog_socket`: the test's receiver when `None`.
    socket: Option<PathBuf>,
    /// `json_path`: `<dir>/log/audit.jsonl` when `None`.
    json_path: Option<PathBuf>,
    facility: Option<&'static str>,
    required: bool,
}

impl Sinks {
    fn standard() -> Sinks {
        Sinks {
            socket: None,
            json_path: None,
            facility: None,
            required: false,
        }
    }
}

/// A test's temporary directory, admin config, syslog receiver and JSON
/// log. Dropping it removes the directory and the cgroup parent.
struct AuditEnv {
    dir: tempfile::TempDir,
    config: PathBuf,
    json: PathBuf,
    receiver: Option<SyslogReceiver>,
    cgroup_parent: String,
}

fn toml_string(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl AuditEnv {
    fn new(tag: &str) -> AuditEnv {
        AuditEnv::with_sinks(tag, |_| Sinks::standard())
    }

    /// `sinks` gets the directory and says how `[audit]` is written.
    fn with_sinks(tag: &str, sinks: impl FnOnce(&Path) -> Sinks) -> AuditEnv {
        // Root-owned, mode 0700: what purple-init accepts for an admin
        // config's directory.
        let dir = tempfile::Builder::new()
            .prefix("purple-audit-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.path().join("syslog.sock");
        let receiver = SyslogReceiver::bind(&socket);
        let sinks = sinks(dir.path());
        let json = sinks
            .json_path
            .clone()
            .unwrap_or_else(|| dir.path().join("log/audit.jsonl"));
        let cgroup_parent = format!("purple-test-audit-{}-{tag}", std::process::id());
        let mut text = format!("[cgroup]\nparent = \"{cgroup_parent}\"\n\n[audit]\n");
        text.push_str(&format!(
            "syslog_socket = {}\n",
            toml_string(sinks.socket.as_deref().unwrap_or(&socket))
        ));
        text.push_str(&format!("json_path = {}\n", toml_string(&json)));
        if let Some(f) = sinks.facility {
            text.push_str(&format!("facility = \"{f}\"\n"));
        }
        if sinks.required {
            text.push_str("required = true\n");
        }
        let config = dir.path().join("purple.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        AuditEnv {
            dir,
            config,
            json,
            receiver: Some(receiver),
            cgroup_parent,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `purple-supervisor ARGS` as root, with this test's admin config.
    fn root_command(&self, args: &[&str]) -> Command {
        let mut cmd = Caller::Root.command(args);
        cmd.env("PURPLE_CONFIG", &self.config);
        cmd
    }

    /// `run OPTS -- ARGV` as root, with this test's admin config.
    fn run_root(&self, opts: &[&str], argv: &[&str]) -> Output {
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(argv);
        finish(self.root_command(&args)).0
    }

    /// The lines of the admin's JSON log so far (none when it does not
    /// exist).
    fn json_lines(&self) -> Vec<Value> {
        read_json_lines(&self.json)
    }

    /// Stops the receiver: every syslog message received.
    fn datagrams(&mut self) -> Vec<String> {
        self.receiver
            .take()
            .expect("receiver already stopped")
            .stop()
    }
}

impl Drop for AuditEnv {
    fn drop(&mut self) {
        drop(self.receiver.take());
        for mount in cgroup_mounts() {
            let dir = mount.join(&self.cgroup_parent);
            if dir.is_dir() {
                remove_cgroup_tree(&dir);
            }
        }
    }
}

/// Every cgroup (v1 or v2) mount point, from /proc/self/mountinfo.
fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fs_type = right.split(' ').next().unwrap_or_default();
        if let (Some(point), "cgroup" | "cgroup2") = (left.split(' ').nth(4), fs_type) {
            if !found.iter().any(|p: &PathBuf| p == Path::new(point)) {
                found.push(PathBuf::from(point));
            }
        }
    }
    found
}

/// cgroup directories go with rmdir, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Runs `cmd` (stdin from /dev/null) to its end, at most DEADLINE; returns
/// its output and pid.
fn finish(mut cmd: Command) -> (Output, u32) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn purple-supervisor");
    let pid = child.id();
    let (out, out_t) = collect(child.stdout.take().unwrap());
    let (err, err_t) = collect(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "purple-supervisor did not finish within {DEADLINE:?} (killed)\n--- stderr:\n{}",
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    out_t.join().unwrap();
    err_t.join().unwrap();
    let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
    (
        Output {
            status,
            stdout: take(&out),
            stderr: take(&err),
        },
        pid,
    )
}

/// A JSON lines file: every line one object, the file ending in a newline.
fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end with a newline:\n{text}",
        path.display()
    );
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: a line is not JSON ({e}):\n{line}", path.display())
            });
            assert!(v.is_object(), "{}: not an object: {line}", path.display());
            v
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

/// The name the product gives a uid: /etc/passwd's, else `u<uid>`.
fn user_name_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid && !name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("u{uid}"))
}

// ---------------------------------------------------------------------------
// RFC 5424
// ---------------------------------------------------------------------------

/// One RFC 5424 message, taken apart.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    version: String,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    /// (SD-ID, [(PARAM-NAME, PARAM-VALUE unescaped)]).
    sd: Vec<(String, Vec<(String, String)>)>,
    msg: Option<String>,
}

/// PRINTUSASCII (%d33-126), 1 to `max` characters, or the NILVALUE `-`.
fn header_field(field: &str, what: &str, max: usize) -> Result<String, String> {
    if field.is_empty() || field.len() > max || !field.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(format!(
            "{what} {field:?} is not 1 to {max} printable US-ASCII characters"
        ));
    }
    Ok(field.to_owned())
}

/// SD-NAME: PRINTUSASCII except `=`, SP, `]`, `"`; 1 to 32 characters.
fn sd_name(chars: &[char], i: &mut usize, what: &str) -> Result<String, String> {
    let start = *i;
    while let Some(&c) = chars.get(*i) {
        if !c.is_ascii_graphic() || matches!(c, '=' | ']' | '"') {
            break;
        }
        *i += 1;
    }
    let name: String = chars[start..*i].iter().collect();
    if name.is_empty() || name.len() > 32 {
        return Err(format!("{what} {name:?} is not 1 to 32 SD-NAME characters"));
    }
    Ok(name)
}

/// Parses `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG]`,
/// with the structured data's PARAM-VALUEs unescaped (`\"`, `\\`, `\]`;
/// a backslash before anything else stays, RFC 5424 6.3.3). An unescaped
/// `]` inside a value is an error (the RFC says it MUST be escaped).
fn parse_rfc5424(text: &str) -> Result<Syslog, String> {
    let rest = text.strip_prefix('<').ok_or("no <PRI>")?;
    let (pri, rest) = rest.split_once('>').ok_or("no '>' after PRI")?;
    if pri.is_empty()
        || pri.len() > 3
        || !pri.bytes().all(|b| b.is_ascii_digit())
        || (pri.len() > 1 && pri.starts_with('0'))
    {
        return Err(format!("PRI {pri:?} is not 1 to 3 digits"));
    }
    let pri: u32 = pri.parse().map_err(|e| format!("PRI: {e}"))?;
    if pri > 191 {
        return Err(format!("PRI {pri} above 191"));
    }
    let mut fields = rest.splitn(7, ' ');
    let mut next = |what: &str| fields.next().ok_or(format!("no {what}"));
    let version = next("VERSION")?.to_owned();
    let timestamp = header_field(next("TIMESTAMP")?, "TIMESTAMP", 64)?;
    let hostname = header_field(next("HOSTNAME")?, "HOSTNAME", 255)?;
    let app = header_field(next("APP-NAME")?, "APP-NAME", 48)?;
    let procid = header_field(next("PROCID")?, "PROCID", 128)?;
    let msgid = header_field(next("MSGID")?, "MSGID", 32)?;
    let chars: Vec<char> = next("STRUCTURED-DATA")?.chars().collect();
    let mut i = 0;
    let mut sd = Vec::new();
    if chars.first() == Some(&'-') {
        i = 1;
    } else {
        while chars.get(i) == Some(&'[') {
            i += 1;
            let id = sd_name(&chars, &mut i, "SD-ID")?;
            let mut params = Vec::new();
            loop {
                match chars.get(i) {
                    Some(']') => {
                        i += 1;
                        break;
                    }
                    Some(' ') => {
                        i += 1;
                        let name = sd_name(&chars, &mut i, "PARAM-NAME")?;
                        if chars.get(i) != Some(&'=') || chars.get(i + 1) != Some(&'"') {
                            return Err(format!("no =\" after PARAM-NAME {name}"));
                        }
                        i += 2;
                        let mut value = String::new();
                        loop {
                            match chars.get(i) {
                                None => return Err(format!("{name}: unterminated PARAM-VALUE")),
                                Some('\\') => match chars.get(i + 1) {
                                    Some(&c @ ('"' | '\\' | ']')) => {
                                        value.push(c);
                                        i += 2;
                                    }
                                    _ => {
                                        value.push('\\');
                                        i += 1;
                                    }
                                },
                                Some('"') => {
                                    i += 1;
                                    break;
                                }
                                Some(']') => {
                                    return Err(format!("{name}: unescaped ] in PARAM-VALUE"))
                                }
                                Some(&c) => {
                                    value.push(c);
                                    i += 1;
                                }
                            }
                        }
                        params.push((name, value));
                    }
                    other => return Err(format!("{other:?} inside SD-ELEMENT {id}")),
                }
            }
            sd.push((id, params));
        }
        if sd.is_empty() {
            return Err("STRUCTURED-DATA is neither - nor [...]".into());
        }
    }
    let msg = match chars.get(i) {
        None => None,
        Some(' ') => Some(chars[i + 1..].iter().collect()),
        Some(c) => return Err(format!("{c:?} after STRUCTURED-DATA")),
    };
    Ok(Syslog {
        pri,
        version,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd,
        msg,
    })
}

/// `2026-11-28T05:08:04.665Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_utc_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

fn severity(event: &str) -> u32 {
    match event {
        "sandbox.refused" | "setup.failed" | "limit.hit" | "seccomp.violation" => 4,
        _ => 6,
    }
}

/// What the product puts in HOSTNAME.
fn expected_hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim_end_matches('\n');
    if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) {
        h.to_owned()
    } else {
        "-".to_owned()
    }
}

/// The structured data of one message as the JSON object it encodes:
/// string values as they are, the others parsed back from compact JSON.
fn sd_params(message: &Syslog) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, value) in &message.sd[0].1 {
        assert!(
            !object.contains_key(name),
            "PARAM-NAME {name} twice in {message:?}"
        );
        object.insert(name.clone(), Value::String(value.clone()));
    }
    object
}

/// Checks one syslog message against the JSON line of the same event:
/// framing (PRI, version, timestamp, host, app, procid, msgid, SD-ID),
/// every non-null JSON field present in the SD with the same value, no
/// other SD parameter, and the summary. Returns the message's SD params.
fn check_message(text: &str, line: &Value, facility: u32) -> Map<String, Value> {
    let ctx = format!("syslog message:\n{text}\nJSON line:\n{line}");
    let m = parse_rfc5424(text).unwrap_or_else(|e| panic!("not RFC 5424 ({e})\n{ctx}"));
    let event = str_of(line, "event");
    assert_eq!(m.pri, facility * 8 + severity(event), "PRI\n{ctx}");
    assert_eq!(m.version, "1", "VERSION\n{ctx}");
    assert!(is_rfc3339_utc_ms(&m.timestamp), "TIMESTAMP\n{ctx}");
    assert_eq!(m.timestamp, str_of(line, "time"), "TIMESTAMP\n{ctx}");
    assert_eq!(m.hostname, expected_hostname(), "HOSTNAME\n{ctx}");
    assert_eq!(m.app, "purple-init", "APP-NAME\n{ctx}");
    assert_eq!(m.procid, line["pid"].to_string(), "PROCID\n{ctx}");
    assert_eq!(m.msgid, event, "MSGID\n{ctx}");
    assert_eq!(m.sd.len(), 1, "one SD-ELEMENT\n{ctx}");
    assert_eq!(m.sd[0].0, SD_ID, "SD-ID\n{ctx}");
    let sd = sd_params(&m);
    let object = line.as_object().unwrap();
    for (key, value) in object {
        match (value, sd.get(key)) {
            (Value::Null, None) => {}
            (Value::Null, Some(v)) => panic!("null field {key} is in the SD as {v}\n{ctx}"),
            (_, None) => panic!("field {key} is missing from the SD\n{ctx}"),
            (Value::String(s), Some(v)) => assert_eq!(v.as_str(), Some(s.as_str()), "{key}\n{ctx}"),
            (other, Some(v)) => {
                let parsed: Value = serde_json::from_str(v.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("SD {key}={v} is not JSON ({e})\n{ctx}"));
                assert_eq!(&parsed, other, "{key}\n{ctx}");
            }
        }
    }
    for key in sd.keys() {
        assert!(
            object.contains_key(key),
            "SD parameter {key} is not in the JSON line\n{ctx}"
        );
    }
    let msg = m.msg.as_deref().unwrap_or_else(|| panic!("no MSG\n{ctx}"));
    assert!(!msg.contains(['\n', '\r']), "MSG has a line break\n{ctx}");
    let field = |k: &str| match &line[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let expected_start = match event {
        "sandbox.created" => format!("sandbox created for {}: ", field("user")),
        "sandbox.started" => format!("sandbox started (cgroup {})", field("cgroup")),
        "sandbox.refused" => format!("request refused ({}): ", field("reason")),
        "setup.failed" => "setup failed: ".to_owned(),
        "limit.hit" => format!("limit hit: {}", field("limit")),
        "seccomp.violation" => "the seccomp filter killed the command".to_owned(),
        "sandbox.exited" => format!(
            "sandbox ended: {} (exit {})",
            field("status"),
            field("exit_code")
        ),
        other => panic!("unknown event {other}\n{ctx}"),
    };
    assert!(msg.starts_with(&expected_start), "MSG\n{ctx}");
    sd
}

/// Pairs every syslog message with the JSON line of the same (sandbox,
/// event) and checks each pair; both sinks must hold the same events.
fn check_messages_match_lines(messages: &[String], lines: &[Value], facility: u32) {
    let mut by_key: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for line in lines {
        let key = (
            str_of(line, "sandbox_id").to_owned(),
            str_of(line, "event").to_owned(),
        );
        assert!(
            by_key.insert(key.clone(), line).is_none(),
            "{key:?} twice in the JSON log"
        );
    }
    let mut seen = BTreeSet::new();
    let mut as_json = Vec::new();
    for text in messages {
        let m = parse_rfc5424(text).unwrap_or_else(|e| panic!("not RFC 5424 ({e}):\n{text}"));
        let sd = sd_params(&m);
        let id = sd
            .get("sandbox_id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no sandbox_id in:\n{text}"))
            .to_owned();
        let key = (id, m.msgid.clone());
        let line = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("syslog message {key:?} has no JSON line:\n{text}"));
        check_message(text, line, facility);
        assert!(seen.insert(key.clone()), "{key:?} twice in syslog");
        as_json.push((*line).clone());
    }
    let missing: Vec<_> = by_key.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "JSON lines without a syslog message: {missing:?}"
    );
    // The syslog side, in arrival order, tells the same stories.
    check_lifecycles(&as_json, "syslog");
}

/// The events of each sandbox, in the order given: exactly one terminal
/// event, last; `sandbox.created` first when present, `sandbox.started`
/// after it; one writer (pid), one caller (uid). Returns them by sandbox.
fn check_lifecycles<'a>(events: &'a [Value], sink: &str) -> BTreeMap<String, Vec<&'a Value>> {
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in events {
        by_id
            .entry(str_of(e, "sandbox_id").to_owned())
            .or_default()
            .push(e);
    }
    for (id, list) in &by_id {
        let names: Vec<&str> = list.iter().map(|e| str_of(e, "event")).collect();
        let ctx = format!("{sink}: sandbox {id}: events {names:?}");
        let terminals: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| TERMINAL.contains(n))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            terminals,
            [names.len() - 1],
            "one terminal event, last\n{ctx}"
        );
        for (name, pos) in [("sandbox.created", 0), ("sandbox.started", 1)] {
            let at: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == name)
                .map(|(i, _)| i)
                .collect();
            assert!(at.len() <= 1, "{name} more than once\n{ctx}");
            if let Some(&i) = at.first() {
                assert_eq!(i, pos, "{name} out of order\n{ctx}");
            }
        }
        if names.contains(&"sandbox.started") {
            assert_eq!(
                names[0], "sandbox.created",
                "started without created\n{ctx}"
            );
        }
        for e in list {
            for key in ["pid", "uid", "source", "user"] {
                assert_eq!(e[key], list[0][key], "{key} differs\n{ctx}");
            }
        }
    }
    by_id
}

/// The header every line has: version, time, id, caller, writer.
fn check_header(line: &Value, uid: u32, source: &str) {
    assert_eq!(line["v"], 1, "{line}");
    assert!(is_rfc3339_utc_ms(str_of(line, "time")), "time: {line}");
    assert!(is_uuid(str_of(line, "sandbox_id")), "sandbox_id: {line}");
    assert_eq!(line["uid"], uid, "{line}");
    assert_eq!(str_of(line, "user"), user_name_of(uid), "{line}");
    assert!(u64_of(line, "pid") > 1, "{line}");
    assert_eq!(line["source"], source, "{line}");
}

// ---------------------------------------------------------------------------
// docs/audit.schema.json, checked by hand (the subset the schema uses)
// ---------------------------------------------------------------------------

/// A JSON Schema (2020-12) checker for the keywords docs/audit.schema.json
/// uses: `$ref` (local), `allOf`, `oneOf`, `type`, `const`, `enum`,
/// `required`, `properties`, `items`, `minimum`, `minLength`, `maxLength`;
/// `$schema`, `$id`, `$defs`, `title`, `description`, `format` are
/// annotations. Any other keyword is an error, so the schema cannot grow a
/// rule this checker would silently skip.
struct SchemaChecker {
    root: Value,
}

impl SchemaChecker {
    fn load() -> SchemaChecker {
        let root: Value = serde_json::from_str(SCHEMA)
            .unwrap_or_else(|e| panic!("docs/audit.schema.json is not JSON: {e}"));
        SchemaChecker { root }
    }

    fn resolve<'a>(&'a self, reference: &str) -> &'a Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        // JSON pointer unescaping is not needed: no ~ or / in the names.
        self.root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {reference} resolves to nothing"))
    }

    fn errors(&self, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(&self.root, value, "", &mut errors);
        errors
    }

    fn type_matches(name: &str, value: &Value) -> bool {
        match name {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("unknown type {other} in the schema"),
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = schema
            .as_object()
            .unwrap_or_else(|| panic!("schema at {at} is not an object"));
        for (keyword, arg) in schema {
            match keyword.as_str() {
                "$schema" | "$id" | "$defs" | "title" | "description" | "format" => {}
                "$ref" => self.check(self.resolve(arg.as_str().unwrap()), value, at, errors),
                "allOf" => {
                    for s in arg.as_array().unwrap() {
                        self.check(s, value, at, errors);
                    }
                }
                "oneOf" => {
                    let passing = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| {
                            let mut e = Vec::new();
                            self.check(s, value, at, &mut e);
                            e.is_empty()
                        })
                        .count();
                    if passing != 1 {
                        errors.push(format!("{at}: matches {passing} of the oneOf branches"));
                    }
                }
                "type" => {
                    let ok = match arg {
                        Value::String(t) => Self::type_matches(t, value),
                        Value::Array(ts) => ts
                            .iter()
                            .any(|t| Self::type_matches(t.as_str().unwrap(), value)),
                        other => panic!("bad type {other}"),
                    };
                    if !ok {
                        errors.push(format!("{at}: {value} is not of type {arg}"));
                    }
                }
                "const" => {
                    if value != arg {
                        errors.push(format!("{at}: {value} is not {arg}"));
                    }
                }
                "enum" => {
                    if !arg.as_array().unwrap().contains(value) {
                        errors.push(format!("{at}: {value} is not one of {arg}"));
                    }
                }
                "required" => {
                    if let Some(object) = value.as_object() {
                        for key in arg.as_array().unwrap() {
                            let key = key.as_str().unwrap();
                            if !object.contains_key(key) {
                                errors.push(format!("{at}: required key {key} is missing"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(object) = value.as_object() {
                        for (key, sub) in arg.as_object().unwrap() {
                            if let Some(v) = object.get(key) {
                                self.check(sub, v, &format!("{at}/{key}"), errors);
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (i, v) in items.iter().enumerate() {
                            self.check(arg, v, &format!("{at}/{i}"), errors);
                        }
                    }
                }
                "minimum" => {
                    if let (Some(v), Some(min)) = (value.as_f64(), arg.as_f64()) {
                        if v < min {
                            errors.push(format!("{at}: {v} is below {min}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Some(s) = value.as_str() {
                        let n = s.chars().count() as u64;
                        let bound = arg.as_u64().unwrap();
                        if (keyword == "minLength" && n < bound)
                            || (keyword == "maxLength" && n > bound)
                        {
                            errors.push(format!("{at}: length {n} breaks {keyword} {bound}"));
                        }
                    }
                }
                other => panic!("the schema uses {other}, which this checker does not know"),
            }
        }
    }

    /// The property names a schema declares (through `$ref` and `allOf`).
    fn declared(&self, schema: &Value, into: &mut BTreeSet<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            self.declared(self.resolve(r), into);
        }
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.declared(s, into);
        }
        if let Some(p) = schema.get("properties").and_then(Value::as_object) {
            into.extend(p.keys().cloned());
        }
    }

    /// Asserts that `line` is valid, and (stricter than the schema, which
    /// lets consumers accept added fields) that it has no key the schema
    /// does not document.
    fn assert_valid(&self, line: &Value) {
        let errors = self.errors(line);
        assert!(
            errors.is_empty(),
            "does not match docs/audit.schema.json:\n{}\n{line}",
            errors.join("\n")
        );
        let branch = self.root["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                let mut e = Vec::new();
                self.check(s, line, "", &mut e);
                e.is_empty()
            })
            .unwrap();
        let mut declared = BTreeSet::new();
        self.declared(branch, &mut declared);
        let undocumented: Vec<&String> = line
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !declared.contains(*k))
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys missing from docs/audit.schema.json: {undocumented:?}\n{line}"
        );
    }

    fn assert_all_valid(&self, lines: &[Value]) {
        for line in lines {
            self.assert_valid(line);
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Every event type: framing and fields in both renderings
// ---------------------------------------------------------------------------

/// One run of the framing test and what its events must say.
struct Scenario {
    name: &'static str,
    opts: Vec<String>,
    argv: Vec<String>,
    exit: i32,
    events: &'static [&'static str],
}

/// Normal exit, the memory limit, the timeout, a seccomp kill, a refusal
/// by purple-init and a setup failure, each run as root with a private
/// config (facility local3): both sinks hold the same events, the syslog
/// messages are RFC 5424 with the event's fields as structured data
/// (escapes included: the command and workspace carry `"`, `\`, `]`, a
/// newline and non-ASCII), every sandbox has exactly one terminal event
/// after its created/started, its id is the exit report's, the
/// `--audit-log` copy equals the admin's file, and every line matches
/// the schema.
#[test]
fn every_event_type_is_framed_and_matches_its_json_line() {
    if !require_root("every_event_type_is_framed_and_matches_its_json_line") {
        return;
    }
    let schema = SchemaChecker::load();
    let mut env = AuditEnv::with_sinks("framing", |_| Sinks {
        facility: Some("local3"),
        ..Sinks::standard()
    });
    // A workspace the sandbox (uid 65534) can use, with a name that needs
    // every SD escape; and one it cannot enter.
    let odd_workspace = env.path("w\"s]\\x");
    std::fs::create_dir(&odd_workspace).unwrap();
    std::fs::set_permissions(&odd_workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
    let closed_workspace = env.path("closed");
    std::fs::create_dir(&closed_workspace).unwrap();
    std::fs::set_permissions(&closed_workspace, std::fs::Permissions::from_mode(0o700)).unwrap();
    let kill_policy = env.path("kill-getpid.toml");
    std::fs::write(
        &kill_policy,
        "[syscalls]\ndeny = [\"getpid\"]\naction = \"kill\"\n",
    )
    .unwrap();
    let copy = env.path("copy/audit.jsonl");
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
    let scenarios = [
        Scenario {
            name: "normal exit",
            opts: vec!["--workspace".into(), odd_workspace.to_str().unwrap().into()],
            argv: s(&[
                "/bin/sh",
                "-c",
                "exit 3",
                "quote\"back\\slash]bracket",
                "line\nbreak",
                "ünïcödé",
            ]),
            exit: 3,
            events: &["sandbox.created", "sandbox.started", "sandbox.exited"],
        },
        Scenario {
            name: "memory limit",
            opts: s(&["--memory", "64M"]),
            argv: s(&["python3", "-c", "x = bytearray(512<<20)"]),
            exit: 137,
            events: &[
                "sandbox.created",
                "sandbox.started",
                "limit.hit",
                "sandbox.exited",
            ],
        },
        Scenario {
            name: "timeout",
            opts: s(&["--timeout", "1s"]),
            argv: s(&["sleep", "30"]),
            exit: 124,
            events: &[
                "sandbox.created",
                "sandbox.started",
                "limit.hit",
                "sandbox.exited",
            ],
        },
        Scenario {
            name: "seccomp kill",
            opts: vec!["--policy".into(), kill_policy.to_str().unwrap().into()],
            argv: s(&["/bin/sh", "-c", "echo $$"]),
            exit: 159,
            events: &[
                "sandbox.created",
                "sandbox.started",
                "seccomp.violation",
                "sandbox.exited",
            ],
        },
        Scenario {
            name: "refused by purple-init",
            // The same host port twice: only purple-init checks that.
            opts: s(&["--allow-in", "tcp:80->18080", "--allow-in", "tcp:81->18080"]),
            argv: s(&["/bin/true"]),
            exit: EXIT_PURPLE,
            events: &["sandbox.refused"],
        },
        Scenario {
            name: "setup failure",
            opts: vec![
                "--workspace".into(),
                closed_workspace.to_str().unwrap().into(),
            ],
            argv: s(&["/bin/true"]),
            exit: EXIT_PURPLE,
            // `sandbox.started` may come first: the chdir is the child's.
            events: &["sandbox.created", "setup.failed"],
        },
    ];

    let mut all_lines: Vec<Value> = Vec::new();
    for sc in &scenarios {
        let report = env.path("report.json");
        let _ = std::fs::remove_file(&report);
        let mut opts: Vec<&str> = vec![
            "--report",
            report.to_str().unwrap(),
            "--audit-log",
            copy.to_str().unwrap(),
        ];
        opts.extend(sc.opts.iter().map(String::as_str));
        let argv: Vec<&str> = sc.argv.iter().map(String::as_str).collect();
        let out = env.run_root(&opts, &argv);
        let lines = env.json_lines();
        let new: Vec<Value> = lines[all_lines.len()..].to_vec();
        all_lines = lines;
        let names: Vec<&str> = new.iter().map(|e| str_of(e, "event")).collect();
        let ctx = format!("{}: events {names:?}\n{}", sc.name, show(&out));
        assert_eq!(out.status.code(), Some(sc.exit), "exit status\n{ctx}");
        let expected: Vec<&str> = if sc.name == "setup failure" {
            names
                .iter()
                .copied()
                .filter(|n| *n != "sandbox.started")
                .collect()
        } else {
            names.clone()
        };
        assert_eq!(expected, sc.events, "events\n{ctx}");
        let ids: BTreeSet<&str> = new.iter().map(|e| str_of(e, "sandbox_id")).collect();
        assert_eq!(ids.len(), 1, "one sandbox per run\n{ctx}");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(
            report["sandbox_id"].as_str(),
            ids.first().copied(),
            "the events' id is the exit report's\n{ctx}"
        );
        let pid = new[0]["pid"].clone();
        for e in &new {
            check_header(e, 0, "purple-init");
            assert_eq!(e["pid"], pid, "one writer\n{ctx}");
            schema.assert_valid(e);
        }
        let event = |name: &str| -> &Value {
            new.iter()
                .find(|e| e["event"] == name)
                .unwrap_or_else(|| panic!("no {name}\n{ctx}"))
        };
        if names.contains(&"sandbox.created") {
            let c = event("sandbox.created");
            assert_eq!(c["command"], serde_json::json!(sc.argv), "{ctx}");
            assert_eq!(c["argc"], sc.argv.len(), "{ctx}");
            assert_eq!(c["sandbox_uid"], 65534, "{ctx}");
            assert_eq!(c["network"], "none", "{ctx}");
            let digest = str_of(c, "policy_sha256");
            assert!(
                digest.len() == 64
                    && digest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "policy_sha256\n{ctx}"
            );
        }
        if names.contains(&"sandbox.started") {
            let st = event("sandbox.started");
            assert!(u64_of(st, "sandbox_pid") > 1, "{ctx}");
            assert!(!str_of(st, "cgroup").is_empty(), "{ctx}");
        }
        match sc.name {
            "normal exit" => {
                let c = event("sandbox.created");
                assert_eq!(c["workspace"], odd_workspace.to_str().unwrap(), "{ctx}");
                assert_eq!(c["timeout_ms"], Value::Null, "{ctx}");
                let x = event("sandbox.exited");
                assert_eq!(x["status"], "exited", "{ctx}");
                assert_eq!(x["exit_code"], 3, "{ctx}");
                assert_eq!(x["signal"], Value::Null, "{ctx}");
                assert_eq!(x["message"], "", "{ctx}");
            }
            "memory limit" => {
                assert_eq!(event("sandbox.created")["memory_bytes"], 64 * MIB, "{ctx}");
                let l = event("limit.hit");
                assert_eq!(l["limit"], "memory", "{ctx}");
                assert_eq!(l["ended_run"], true, "{ctx}");
                assert!(u64_of(l, "oom_kills") >= 1, "{ctx}");
                let x = event("sandbox.exited");
                assert_eq!(x["status"], "oom", "{ctx}");
                assert_eq!(x["exit_code"], 137, "{ctx}");
            }
            "timeout" => {
                assert_eq!(event("sandbox.created")["timeout_ms"], 1000, "{ctx}");
                let l = event("limit.hit");
                assert_eq!(l["limit"], "timeout", "{ctx}");
                assert_eq!(l["ended_run"], true, "{ctx}");
                let x = event("sandbox.exited");
                assert_eq!(x["status"], "timeout", "{ctx}");
                assert_eq!(x["exit_code"], 124, "{ctx}");
                assert!(u64_of(x, "wall_time_ms") >= 1000, "{ctx}");
            }
            "seccomp kill" => {
                assert!(
                    str_of(event("sandbox.created"), "syscalls").contains("getpid"),
                    "{ctx}"
                );
                assert_eq!(event("seccomp.violation")["signal"], libc::SIGSYS, "{ctx}");
                let x = event("sandbox.exited");
                assert_eq!(x["status"], "seccomp_violation", "{ctx}");
                assert_eq!(x["exit_code"], 159, "{ctx}");
                assert_eq!(x["signal"], libc::SIGSYS, "{ctx}");
            }
            "refused by purple-init" => {
                let r = event("sandbox.refused");
                assert_eq!(r["reason"], "bad_request", "{ctx}");
                assert_eq!(r["command"], serde_json::json!(sc.argv), "{ctx}");
                assert_eq!(r["argc"], 1, "{ctx}");
                assert!(str_of(r, "message").contains("18080"), "{ctx}");
            }
            "setup failure" => {
                let f = event("setup.failed");
                assert!(!str_of(f, "step").is_empty(), "step\n{ctx}");
                assert!(
                    str_of(f, "message")
                        .starts_with(&format!("sandbox setup failed at {}:", str_of(f, "step"))),
                    "{ctx}"
                );
                assert_eq!(f["command"], serde_json::json!(sc.argv), "{ctx}");
            }
            other => unreachable!("{other}"),
        }
    }

    // The admin's file: root's, in a directory purple-init created 0700.
    let dir_meta = std::fs::metadata(env.json.parent().unwrap()).unwrap();
    assert_eq!(
        (dir_meta.uid(), dir_meta.mode() & 0o7777),
        (0, 0o700),
        "the JSON log's directory"
    );
    let meta = std::fs::metadata(&env.json).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (0, 0o600),
        "the JSON log"
    );

    check_lifecycles(&all_lines, "JSON log");
    schema.assert_all_valid(&all_lines);
    // The caller's copy has exactly the same lines.
    let copied = read_json_lines(&copy);
    assert_eq!(
        copied, all_lines,
        "--audit-log copy differs from the admin's log"
    );

    let messages = env.datagrams();
    assert_eq!(
        messages.len(),
        all_lines.len(),
        "syslog messages: {messages:#?}"
    );
    check_messages_match_lines(&messages, &all_lines, LOCAL3);
}

// ---------------------------------------------------------------------------
// 2. Many sandboxes at once
// ---------------------------------------------------------------------------

/// 100 sandboxes, 16 at a time: 100 terminal events in the JSON file and
/// in syslog, every line whole (no interleaving), 100 distinct ids, each
/// with its created/started/exited in order and the right exit code, and
/// the default facility (authpriv).
#[test]
fn hundred_concurrent_sandboxes_each_end_once_in_both_sinks() {
    if !require_root("hundred_concurrent_sandboxes_each_end_once_in_both_sinks") {
        return;
    }
    const RUNS: usize = 100;
    const PARALLEL: usize = 16;
    let schema = SchemaChecker::load();
    let mut env = AuditEnv::new("concurrent");
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= RUNS {
                    break;
                }
                let code = (i % 5).to_string();
                let tag = format!("run-{i}");
                let out = env.run_root(&[], &["/bin/sh", "-c", "exit $0", &code, &tag]);
                if out.status.code() != Some(i32::try_from(i % 5).unwrap()) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("run {i}: {}", show(&out)));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "runs failed:\n{}", failures.join("\n"));

    let lines = env.json_lines();
    let by_id = check_lifecycles(&lines, "JSON log");
    assert_eq!(by_id.len(), RUNS, "distinct sandbox ids in the JSON log");
    let terminals: Vec<&Value> = lines
        .iter()
        .filter(|e| TERMINAL.contains(&str_of(e, "event")))
        .collect();
    assert_eq!(terminals.len(), RUNS, "terminal events in the JSON log");
    let mut runs = BTreeSet::new();
    for (id, events) in &by_id {
        let names: Vec<&str> = events.iter().map(|e| str_of(e, "event")).collect();
        assert_eq!(
            names,
            ["sandbox.created", "sandbox.started", "sandbox.exited"],
            "sandbox {id}"
        );
        let tag = events[0]["command"][4].as_str().unwrap().to_owned();
        let i: usize = tag.strip_prefix("run-").unwrap().parse().unwrap();
        assert_eq!(events[2]["exit_code"], i % 5, "sandbox {id} ({tag})");
        assert_eq!(events[2]["status"], "exited", "sandbox {id} ({tag})");
        assert!(runs.insert(i), "run {i} recorded twice");
        for e in events {
            check_header(e, 0, "purple-init");
        }
    }
    assert_eq!(runs.len(), RUNS);
    schema.assert_all_valid(&lines);

    let messages = env.datagrams();
    let syslog_terminals = messages
        .iter()
        .filter(|m| {
            let m = parse_rfc5424(m).unwrap_or_else(|e| panic!("not RFC 5424 ({e}):\n{m}"));
            TERMINAL.contains(&m.msgid.as_str())
        })
        .count();
    assert_eq!(syslog_terminals, RUNS, "terminal events in syslog");
    assert_eq!(messages.len(), lines.len(), "syslog messages vs JSON lines");
    check_messages_match_lines(&messages, &lines, AUTHPRIV);
}

/// A supervisor SIGKILLed while its sandbox runs: purple-init still ends
/// the sandbox and writes its one terminal event (`sandbox.exited`,
/// `interrupted`) to both sinks.
#[test]
fn a_killed_supervisor_still_gets_one_terminal_event() {
    if !require_root("a_killed_supervisor_still_gets_one_terminal_event") {
        return;
    }
    let schema = SchemaChecker::load();
    let mut env = AuditEnv::new("killed");
    let mut child = env
        .root_command(&["run", "--timeout", "60s", "--", "sleep", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn purple-supervisor");
    let started = wait_for(Duration::from_secs(30), || {
        env.json_lines()
            .iter()
            .any(|e| e["event"] == "sandbox.started")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started,
        "no sandbox.started within 30 s: {:#?}",
        env.json_lines()
    );
    let ended = wait_for(Duration::from_secs(30), || {
        env.json_lines()
            .iter()
            .any(|e| TERMINAL.contains(&str_of(e, "event")))
    });
    let lines = env.json_lines();
    assert!(ended, "no terminal event within 30 s: {lines:#?}");
    // Wait for purple-init (the events' writer) to be gone: a second
    // terminal event, were there one, is in by then, and its cgroup too.
    let init = lines[0]["pid"].to_string();
    let gone = wait_for(Duration::from_secs(30), || {
        // Gone, reused, or a zombie its new parent has not reaped yet.
        let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('Z'));
        comm.trim() != "purple-init" || state == Some(true)
    });
    assert!(
        gone,
        "purple-init {init} still runs 30 s after its terminal event"
    );
    let lines = env.json_lines();
    check_lifecycles(&lines, "JSON log");
    schema.assert_all_valid(&lines);
    let names: Vec<&str> = lines.iter().map(|e| str_of(e, "event")).collect();
    assert_eq!(
        names,
        ["sandbox.created", "sandbox.started", "sandbox.exited"],
        "{lines:#?}"
    );
    assert_eq!(lines[2]["status"], "interrupted", "{}", lines[2]);
    check_messages_match_lines(&env.datagrams(), &lines, AUTHPRIV);
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// 3. [audit] required
// ---------------------------------------------------------------------------

/// With `required = true`, a configured sink that cannot be written
/// refuses the run (exit 125, the message names the sink) before the
/// command starts; the refusal itself reaches the sink that works. Two
/// ways: a syslog socket that does not exist, and a JSON log in a
/// directory root does not own alone. Then the same command, with sinks
/// that work, does run (and leaves its marker).
#[test]
fn required_refuses_when_a_sink_cannot_be_written() {
    if !require_root("required_refuses_when_a_sink_cannot_be_written") {
        return;
    }
    let schema = SchemaChecker::load();
    let script = ["/bin/sh", "-c", "echo ran > marker"];

    // (a) The syslog socket does not exist; the JSON log works.
    let mut env = AuditEnv::with_sinks("required-socket", |dir| Sinks {
        socket: Some(dir.join("missing.sock")),
        required: true,
        ..Sinks::standard()
    });
    let workspace = env.path("ws");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ws = workspace.to_str().unwrap();
    let out = env.run_root(&["--workspace", ws], &script);
    let ctx = show(&out);
    assert_eq!(out.status.code(), Some(EXIT_PURPLE), "{ctx}");
    let err = stderr(&out);
    assert!(
        err.contains("audit") && err.contains("missing.sock"),
        "the refusal should name the audit sink\n{ctx}"
    );
    assert!(
        !workspace.join("marker").exists(),
        "the command ran although a required sink is missing\n{ctx}"
    );
    let lines = env.json_lines();
    assert_eq!(lines.len(), 1, "{lines:?}\n{ctx}");
    assert_eq!(lines[0]["event"], "sandbox.refused", "{ctx}");
    assert_eq!(lines[0]["reason"], "audit", "{ctx}");
    assert!(
        str_of(&lines[0], "message").contains("missing.sock"),
        "{ctx}"
    );
    check_header(&lines[0], 0, "purple-init");
    schema.assert_all_valid(&lines);
    assert!(
        env.datagrams().is_empty(),
        "nothing may reach the test's socket: it is not the configured one"
    );

    // (b) The JSON log's directory belongs to someone else; syslog works.
    let mut env = AuditEnv::with_sinks("required-json", |dir| {
        let theirs = dir.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chown(&theirs, Some(TEST_UID), Some(TEST_GID)).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        Sinks {
            json_path: Some(theirs.join("audit.jsonl")),
            required: true,
            ..Sinks::standard()
        }
    });
    let workspace = env.path("ws");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ws = workspace.to_str().unwrap();
    let out = env.run_root(&["--workspace", ws], &script);
    let ctx = show(&out);
    assert_eq!(out.status.code(), Some(EXIT_PURPLE), "{ctx}");
    let err = stderr(&out);
    assert!(
        err.contains("audit") && err.contains("theirs"),
        "the refusal should name the audit sink\n{ctx}"
    );
    assert!(
        !workspace.join("marker").exists(),
        "the command ran although a required sink is unusable\n{ctx}"
    );
    assert!(
        !env.json.exists(),
        "purple-init wrote into a directory root does not own alone\n{ctx}"
    );
    let messages = env.datagrams();
    assert_eq!(messages.len(), 1, "{messages:?}\n{ctx}");
    let m = parse_rfc5424(&messages[0]).unwrap();
    assert_eq!(m.msgid, "sandbox.refused", "{messages:?}");
    let sd = sd_params(&m);
    assert_eq!(sd["reason"], "audit", "{messages:?}");
    assert!(
        sd["message"].as_str().unwrap().contains("theirs"),
        "{messages:?}"
    );

    // Control: the same command with both sinks working runs.
    let mut env = AuditEnv::with_sinks("required-ok", |_| Sinks {
        required: true,
        ..Sinks::standard()
    });
    let workspace = env.path("ws");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ws = workspace.to_str().unwrap();
    let out = env.run_root(&["--workspace", ws], &script);
    ok_stdout(&out);
    assert!(
        workspace.join("marker").exists(),
        "the control run did not leave its marker\n{}",
        show(&out)
    );
    let lines = env.json_lines();
    schema.assert_all_valid(&lines);
    let names: Vec<&str> = lines.iter().map(|e| str_of(e, "event")).collect();
    assert_eq!(
        names,
        ["sandbox.created", "sandbox.started", "sandbox.exited"]
    );
    check_messages_match_lines(&env.datagrams(), &lines, AUTHPRIV);
}

// ---------------------------------------------------------------------------
// 4. The caller's --audit-log, and what the caller cannot redirect
// ---------------------------------------------------------------------------

/// An unprivileged caller's `--audit-log` (a file in its own directory)
/// gets purple-init's created/started/exited events with its uid, and a
/// refusal by the supervisor itself (`--ro-bind /nonexistent`: purple-init
/// never runs) as a `sandbox.refused` of purple-supervisor. The caller's
/// `PURPLE_CONFIG`, naming the test's socket and JSON log, redirects
/// nothing: only root's does (checked with a root run of the same config).
#[test]
fn audit_log_copy_for_an_unprivileged_caller() {
    if !require_root("audit_log_copy_for_an_unprivileged_caller") {
        return;
    }
    let schema = SchemaChecker::load();
    let mut env = AuditEnv::new("caller");
    let home = private_dir(TEST_UID, TEST_GID);
    let log = home.path().join("audit.jsonl");
    let log_s = log.to_str().unwrap();

    // The sandbox runs and ends; the copy has its three events.
    let mut cmd =
        Caller::User.command(["run", "--audit-log", log_s, "--", "/bin/sh", "-c", "exit 0"]);
    cmd.env("PURPLE_CONFIG", &env.config);
    let (out, _) = finish(cmd);
    ok_stdout(&out);
    let lines = read_json_lines(&log);
    let names: Vec<&str> = lines.iter().map(|e| str_of(e, "event")).collect();
    assert_eq!(
        names,
        ["sandbox.created", "sandbox.started", "sandbox.exited"],
        "{lines:#?}\n{}",
        show(&out)
    );
    for e in &lines {
        check_header(e, TEST_UID, "purple-init");
    }
    assert_eq!(lines[0]["sandbox_uid"], TEST_UID);
    assert_eq!(lines[2]["exit_code"], 0);
    check_lifecycles(&lines, "--audit-log");
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (TEST_UID, TEST_GID, 0o600),
        "--audit-log is created 0600, as the caller"
    );

    // A refusal by the supervisor: appended, with the supervisor's pid.
    let mut cmd = Caller::User.command([
        "run",
        "--audit-log",
        log_s,
        "--ro-bind",
        "/nonexistent",
        "--",
        "/bin/true",
    ]);
    cmd.env("PURPLE_CONFIG", &env.config);
    let (out, supervisor_pid) = finish(cmd);
    assert_eq!(out.status.code(), Some(EXIT_PURPLE), "{}", show(&out));
    let all = read_json_lines(&log);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_eq!(all[..3], lines[..], "earlier lines are kept");
    let r = &all[3];
    check_header(r, TEST_UID, "purple-supervisor");
    assert_eq!(r["event"], "sandbox.refused", "{r}");
    assert_eq!(r["reason"], "supervisor", "{r}");
    assert_eq!(r["pid"], supervisor_pid, "{r}");
    assert_eq!(r["command"], serde_json::json!(["/bin/true"]), "{r}");
    assert_eq!(r["argc"], 1, "{r}");
    assert!(str_of(r, "message").contains("/nonexistent"), "{r}");
    assert_ne!(r["sandbox_id"], lines[0]["sandbox_id"], "{r}");
    schema.assert_all_valid(&all);

    // Nothing of the caller's reached the sinks its PURPLE_CONFIG names;
    // a root run with the same config does reach them.
    assert!(
        !env.json.exists(),
        "the unprivileged caller's PURPLE_CONFIG moved purple-init's JSON log"
    );
    let out = env.run_root(&[], &["/bin/true"]);
    ok_stdout(&out);
    let root_lines = env.json_lines();
    assert_eq!(root_lines.len(), 3, "{root_lines:#?}\n{}", show(&out));
    for e in &root_lines {
        check_header(e, 0, "purple-init");
    }
    schema.assert_all_valid(&root_lines);
    let messages = env.datagrams();
    assert_eq!(
        messages.len(),
        3,
        "only the root run may reach the test's socket: {messages:#?}"
    );
    check_messages_match_lines(&messages, &root_lines, AUTHPRIV);
}

// ---------------------------------------------------------------------------
// 5. The schema itself
// ---------------------------------------------------------------------------

/// docs/audit.schema.json is draft 2020-12, has a `oneOf` branch per event
/// that the checker used above can tell apart, accepts events of every
/// kind (copied from real runs) and fields added later (the versioning
/// rule), and rejects broken ones.
#[test]
fn schema_accepts_every_event_and_rejects_broken_ones() {
    let schema = SchemaChecker::load();
    assert_eq!(
        schema.root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema.root["oneOf"].as_array().map(Vec::len), Some(9));
    let header = r#""pid":8256,"sandbox_id":"a73af81c-7cda-479e-8dc4-f2c93050d5f9","source":"purple-init","time":"2026-11-28T05:08:19.300Z","uid":0,"user":"root","v":1"#;
    let samples = [
        r#"{"argc":3,"capabilities":[],"command":["python3","-c","x = bytearray(512<<20)"],"event":"sandbox.created","landlock":"best-effort","memory_bytes":67108864,"millicpus":1000,"network":"none","pids":256,"policy_sha256":"ac3b825550b4c595f05651c57e7063f96bebd32aef080840fce12560bbde61b4","read_only":[],"read_write":[],"sandbox_uid":65534,"syscalls":"default-deny profile","system":true,"timeout_ms":null,"workspace":null,HEADER}"#,
        r#"{"cgroup":"v1 /purple/uid-0/x","event":"sandbox.started","sandbox_pid":8257,HEADER}"#,
        r#"{"argc":1,"command":["/bin/true"],"event":"sandbox.refused","message":"no","reason":"bad_request",HEADER}"#,
        r#"{"argc":1,"command":["/bin/true"],"event":"setup.failed","message":"sandbox setup failed at chdir: EACCES","step":"chdir",HEADER}"#,
        r#"{"ended_run":true,"event":"limit.hit","limit":"memory","oom_kills":1,"pids_limit_hits":0,HEADER}"#,
        r#"{"event":"seccomp.violation","signal":31,HEADER}"#,
        r#"{"cpu_system_ms":39,"cpu_user_ms":8,"event":"sandbox.exited","exit_code":137,"memory_peak_bytes":67108864,"message":"killed: memory limit 64 MiB reached","pids_peak":2,"signal":9,"status":"oom","wall_time_ms":80,HEADER}"#,
        r#"{"address":"10.200.0.2/30","allow_in":[],"allow_out":["tcp:443"],"event":"net.attached","host_interface":"pv03a94e550886","landlock_tcp":true,HEADER}"#,
        r#"{"dropped_packets":3,"event":"net.detached","host_interface":"pv03a94e550886","in_allowed_bytes":0,"in_allowed_packets":0,"in_dropped_bytes":180,"in_dropped_packets":3,"out_allowed_bytes":0,"out_allowed_packets":0,"out_dropped_bytes":0,"out_dropped_packets":0,HEADER}"#,
    ];
    let parse = |s: &str| -> Value { serde_json::from_str(&s.replace("HEADER", header)).unwrap() };
    let valid: Vec<Value> = samples.iter().map(|s| parse(s)).collect();
    for v in &valid {
        schema.assert_valid(v);
        // A field added by a later version is fine for the schema.
        let mut added = v.clone();
        added["added_later"] = Value::from("x");
        assert!(schema.errors(&added).is_empty(), "{added}");
    }
    let broken: Vec<(&str, Value)> = {
        let mut b = Vec::new();
        let mut with = |what: &'static str, i: usize, edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut v = valid[i].clone();
            edit(v.as_object_mut().unwrap());
            b.push((what, v));
        };
        with("no sandbox_id", 6, &|o| {
            o.remove("sandbox_id");
        });
        with("v 2", 1, &|o| {
            o.insert("v".into(), 2.into());
        });
        with("uid as a string", 5, &|o| {
            o.insert("uid".into(), "0".into());
        });
        with("unknown event", 5, &|o| {
            o.insert("event".into(), "sandbox.paused".into());
        });
        with("unknown source", 2, &|o| {
            o.insert("source".into(), "someone".into());
        });
        with("created without syscalls", 0, &|o| {
            o.remove("syscalls");
        });
        with("created by the supervisor", 0, &|o| {
            o.insert("source".into(), "purple-supervisor".into());
        });
        with("command not an array", 2, &|o| {
            o.insert("command".into(), "/bin/true".into());
        });
        with("unknown reason", 2, &|o| {
            o.insert("reason".into(), "whim".into());
        });
        with("unknown limit", 4, &|o| {
            o.insert("limit".into(), "disk".into());
        });
        with("exited as refused", 6, &|o| {
            o.insert("status".into(), "refused".into());
        });
        with("negative exit time", 6, &|o| {
            o.insert("wall_time_ms".into(), (-1).into());
        });
        with("short digest", 0, &|o| {
            o.insert("policy_sha256".into(), "abc".into());
        });
        with("started fields on exited", 1, &|o| {
            o.insert("event".into(), "sandbox.exited".into());
        });
        b
    };
    for (what, v) in broken {
        assert!(
            !schema.errors(&v).is_empty(),
            "the schema accepts a broken event ({what}): {v}"
        );
    }
}
