//! The TOML front end of the policy: reads a policy file into a [`Policy`],
//! reporting every problem with its line and column, and writes a policy
//! back out as TOML ([`policy_to_toml`]).
//!
//! The file is parsed into toml's spanned tree and walked by hand rather
//! than through serde, so that one pass can report every unknown key, wrong
//! type and invalid value at the place it was written, instead of stopping
//! at the first. Values are checked by the `FromStr` of their types, so the
//! messages are the same ones the command line and the wire give. After the
//! walk, [`Policy::validate`] checks the rules that span several values, and
//! each problem's dotted key is mapped back to where that key was written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::str::FromStr;

use toml::de::{DeInteger, DeString, DeTable, DeValue};
use toml::Spanned;

use super::{
    Bind, LandlockMode, NetworkMode, Policy, SyscallAction, Tmpfs, CPU_WEIGHT_RANGE,
    DEFAULT_TMP_SIZE, OPEN_FILES_RANGE,
};
use crate::values::{AbsPath, ByteSize, CpuQuota, EnvName, Timeout, ValueError};

/// The largest `resources.pids`: the kernel's `PID_MAX_LIMIT` on 64-bit.
pub const MAX_PIDS: u32 = 4_194_304;

const SECTIONS: &[&str] = &[
    "filesystem",
    "resources",
    "network",
    "env",
    "syscalls",
    "landlock",
    "capabilities",
];
const FILESYSTEM_KEYS: &[&str] = &["system", "read_only", "read_write", "tmpfs", "workspace"];
const BIND_KEYS: &[&str] = &["source", "destination"];
const TMPFS_KEYS: &[&str] = &["path", "size"];
const RESOURCES_KEYS: &[&str] = &[
    "memory",
    "memory_high",
    "pids",
    "cpus",
    "cpu_weight",
    "timeout",
    "cpu_time",
    "open_files",
    "file_size",
    "mode",
];
const NETWORK_KEYS: &[&str] = &["mode", "allow_out", "allow_in"];
const SYSCALLS_KEYS: &[&str] = &["allow", "deny", "action"];
const LANDLOCK_KEYS: &[&str] = &["mode"];
const CAPABILITIES_KEYS: &[&str] = &["add", "drop", "ambient"];

/// One problem in a policy file, at a 1-based line and column (the column
/// counts characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at byte `offset` of the indexed source.
    fn at(index: &LineIndex<'_>, offset: usize, message: String) -> Diagnostic {
        let (line, column) = index.locate(offset);
        Diagnostic {
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Renders diagnostics the way compilers do, one `FILE:LINE:COL: message`
/// per line, each line ending in a newline.
pub fn format_diagnostics(file: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let _ = writeln!(out, "{file}:{d}");
    }
    out
}

/// 1-based line and character column of byte `offset` in `source`.
#[cfg(test)]
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(source).locate(offset)
}

/// Byte offsets of line starts, so that each diagnostic costs a binary
/// search and one line's worth of characters, not a scan of the file (a
/// hostile file can carry a hundred thousand errors).
struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self
            .starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .source
            .get(line_start..offset)
            .unwrap_or("")
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

/// Parses a policy file's raw bytes: invalid UTF-8 is reported at the
/// line and column where it starts, like any other problem in the file.
pub fn parse_policy_bytes(bytes: &[u8]) -> Result<Policy, Vec<Diagnostic>> {
    match std::str::from_utf8(bytes) {
        Ok(source) => parse_policy(source),
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
            let bad = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
            let index = LineIndex::new(valid);
            Err(vec![Diagnostic::at(
                &index,
                valid.len(),
                format!("the file is not valid UTF-8 (byte 0x{bad:02x}); TOML files are UTF-8"),
            )])
        }
    }
}

/// Parses a policy file. Keys that are absent keep their value from
/// [`Policy::default`]; a key that is present replaces it (so `tmpfs = []`
/// removes the default /tmp). On failure, returns every problem found,
/// ordered by position.
pub fn parse_policy(source: &str) -> Result<Policy, Vec<Diagnostic>> {
    let root = match DeTable::parse(source) {
        Ok(root) => root,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let message = format!("invalid TOML: {}", e.message().trim_end());
            return Err(vec![Diagnostic::at(
                &LineIndex::new(source),
                offset,
                message,
            )]);
        }
    };
    let mut walker = Walker::default();
    let mut policy = Policy::default();
    walker.document(root.get_ref(), &mut policy);
    walker.cross_check(&policy);
    if walker.errors.is_empty() {
        Ok(policy)
    } else {
        Err(walker.into_diagnostics(source))
    }
}

type Span = Range<usize>;
type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<DeString<'i>>;

/// Where a policy key was written, and how to name it to the user.
#[derive(Debug)]
struct Place {
    span: Span,
    /// The key as written in the file: list indices count the file's
    /// elements, which differ from the policy's once an element is rejected.
    written: String,
}

#[derive(Debug, Default)]
struct Walker {
    errors: Vec<(Span, String)>,
    /// Paths (as written) that had an error.
    failed: BTreeSet<String>,
    /// Policy keys, in the spelling `Policy::validate` uses, to their place.
    places: BTreeMap<String, Place>,
    /// List elements whose index in the policy differs from the file's,
    /// because an element before them was rejected: (policy key, as written).
    renumbered: Vec<(String, String)>,
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `parent.key`, quoting `key` the way TOML would if it is not a bare key.
fn join(parent: &str, key: &str) -> String {
    if is_bare_key(key) {
        format!("{parent}.{key}")
    } else {
        format!("{parent}.{}", quote(key))
    }
}

/// "an integer", "a string", ...
fn with_article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// The value of a TOML integer (any radix); `None` only beyond i128.
fn integer_value(i: &DeInteger<'_>) -> Option<i128> {
    i128::from_str_radix(i.as_str(), i.radix()).ok()
}

impl Walker {
    fn error(&mut self, path: &str, span: Span, message: impl fmt::Display) {
        self.failed.insert(path.to_owned());
        self.errors.push((span, format!("{path}: {message}")));
    }

    fn wrong_type(&mut self, path: &str, value: &Value<'_>, expected: &str) {
        let found = with_article(value.get_ref().type_str());
        self.error(
            path,
            value.span(),
            format_args!("expected {expected}, found {found}"),
        );
    }

    fn unknown_key(&mut self, table: &str, key: &Key<'_>, allowed: &[&str]) {
        let name = key.get_ref();
        self.error(
            table,
            key.span(),
            format_args!(
                "unknown key {}; allowed keys are {}",
                quote(name),
                allowed.join(", ")
            ),
        );
    }

    /// Records where a policy key (spelled as `Policy::validate` spells it)
    /// was written.
    fn place(&mut self, key: String, span: Span, written: String) {
        self.places.insert(key, Place { span, written });
    }

    fn check<T>(&mut self, path: &str, span: Span, result: Result<T, ValueError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.error(path, span, e);
                None
            }
        }
    }

    fn string<'v>(&mut self, path: &str, value: &'v Value<'_>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.wrong_type(path, value, "a string");
                None
            }
        }
    }

    /// A string checked by `T`'s `FromStr`.
    fn parsed<T: FromStr<Err = ValueError>>(&mut self, path: &str, value: &Value<'_>) -> Option<T> {
        let s = self.string(path, value)?;
        self.check(path, value.span(), s.parse())
    }

    fn boolean(&mut self, path: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(path, value, "a boolean");
                None
            }
        }
    }

    fn table<'v, 'i>(&mut self, path: &str, value: &'v Value<'i>) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(path, value, "a table");
                None
            }
        }
    }

    /// An array whose elements are read by `item`. Rejected elements are
    /// left out (after their error is recorded), and the others are placed
    /// under the index they get in the policy.
    fn list<T>(
        &mut self,
        path: &str,
        value: &Value<'_>,
        mut item: impl FnMut(&mut Self, &str, &Value<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let DeValue::Array(elements) = value.get_ref() else {
            self.wrong_type(path, value, "an array");
            return None;
        };
        let mut out = Vec::with_capacity(elements.len());
        for (i, element) in elements.iter().enumerate() {
            let written = format!("{path}[{i}]");
            if let Some(x) = item(self, &written, element) {
                let key = format!("{path}[{}]", out.len());
                if out.len() != i {
                    self.renumbered.push((key.clone(), written.clone()));
                }
                self.place(key, element.span(), written);
                out.push(x);
            }
        }
        Some(out)
    }

    /// A size: a string such as `"256M"`, or an integer number of bytes.
    fn size(&mut self, path: &str, value: &Value<'_>) -> Option<ByteSize> {
        match value.get_ref() {
            DeValue::String(s) => self.check(path, value.span(), s.parse()),
            DeValue::Integer(i) => match integer_value(i) {
                Some(n) if n >= 1 => self.check(path, value.span(), n.to_string().parse()),
                _ => {
                    self.error(
                        path,
                        value.span(),
                        format_args!("size {i} is out of range (1 byte to 1 EiB)"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(path, value, "a string or an integer");
                None
            }
        }
    }

    fn pids(&mut self, path: &str, value: &Value<'_>) -> Option<u32> {
        self.bounded(path, value, 1..=MAX_PIDS)
    }

    /// An integer within `range`.
    fn bounded(
        &mut self,
        path: &str,
        value: &Value<'_>,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        let DeValue::Integer(i) = value.get_ref() else {
            self.wrong_type(path, value, "an integer");
            return None;
        };
        match integer_value(i).and_then(|n| u32::try_from(n).ok()) {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    path,
                    value.span(),
                    format_args!(
                        "{i} is out of range; use {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A number of CPUs: a float, an integer, or a string holding either.
    fn cpus(&mut self, path: &str, value: &Value<'_>) -> Option<CpuQuota> {
        let text = match value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Float(f) => f.as_str().to_owned(),
            DeValue::Integer(i) => {
                integer_value(i).map_or_else(|| i.to_string(), |n| n.to_string())
            }
            _ => {
                self.wrong_type(path, value, "a number or a string");
                return None;
            }
        };
        self.check(path, value.span(), text.parse())
    }

    /// A duration: a string such as `"30s"`, or an integer number of seconds.
    fn timeout(&mut self, path: &str, value: &Value<'_>) -> Option<Timeout> {
        match value.get_ref() {
            DeValue::String(s) => self.check(path, value.span(), s.parse()),
            DeValue::Integer(i) => match integer_value(i) {
                Some(n) if n >= 0 => self.check(path, value.span(), n.to_string().parse()),
                _ => {
                    self.error(
                        path,
                        value.span(),
                        format_args!("duration {i} must be between 1ms and 7 days"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(path, value, "a string or an integer");
                None
            }
        }
    }

    /// A bind: `"SRC"`, `"SRC:DST"`, or `{ source = .., destination = .. }`
    /// (destination defaults to source).
    fn bind(&mut self, path: &str, value: &Value<'_>) -> Option<Bind> {
        let table = match value.get_ref() {
            DeValue::String(s) => return self.check(path, value.span(), s.parse()),
            DeValue::Table(t) => t,
            _ => {
                self.wrong_type(path, value, "a string or a table");
                return None;
            }
        };
        let (mut source, mut destination) = (None, None);
        let (mut has_source, mut bad) = (false, false);
        for (key, v) in table.iter() {
            let key_path = join(path, key.get_ref());
            let slot = match key.get_ref().as_ref() {
                "source" => {
                    has_source = true;
                    &mut source
                }
                "destination" => &mut destination,
                _ => {
                    self.unknown_key(path, key, BIND_KEYS);
                    continue;
                }
            };
            match self.parsed::<AbsPath>(&key_path, v) {
                Some(p) => *slot = Some(p),
                None => bad = true,
            }
        }
        if !has_source {
            self.error(path, value.span(), "missing key \"source\"");
        }
        if bad {
            return None;
        }
        let source = source?;
        let destination = destination.unwrap_or_else(|| source.clone());
        Some(Bind {
            source,
            destination,
        })
    }

    /// A tmpfs: `{ path = "/tmp", size = "256M" }` (size defaults to 256M).
    fn tmpfs(&mut self, path: &str, value: &Value<'_>) -> Option<Tmpfs> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(path, value, "a table");
            return None;
        };
        let (mut mount, mut size) = (None, Some(DEFAULT_TMP_SIZE));
        let mut has_path = false;
        for (key, v) in table.iter() {
            let key_path = join(path, key.get_ref());
            match key.get_ref().as_ref() {
                "path" => {
                    has_path = true;
                    mount = self.parsed::<AbsPath>(&key_path, v);
                }
                "size" => size = self.size(&key_path, v),
                _ => self.unknown_key(path, key, TMPFS_KEYS),
            }
        }
        if !has_path {
            self.error(path, value.span(), "missing key \"path\"");
        }
        Some(Tmpfs {
            path: mount?,
            size: size?,
        })
    }

    fn document(&mut self, root: &DeTable<'_>, policy: &mut Policy) {
        for (key, value) in root.iter() {
            let name = key.get_ref().as_ref();
            let section: fn(&mut Walker, &DeTable<'_>, &mut Policy) = match name {
                "filesystem" => Walker::filesystem,
                "resources" => Walker::resources,
                "network" => Walker::network,
                "env" => Walker::env,
                "syscalls" => Walker::syscalls,
                "landlock" => Walker::landlock,
                "capabilities" => Walker::capabilities,
                _ => {
                    let message = format!(
                        "unknown section {}; allowed sections are {}",
                        quote(name),
                        SECTIONS.join(", ")
                    );
                    self.failed.insert(name.to_owned());
                    self.errors.push((key.span(), message));
                    continue;
                }
            };
            if let Some(table) = self.table(name, value) {
                self.place(name.to_owned(), value.span(), name.to_owned());
                section(self, table, policy);
            }
        }
    }

    fn filesystem(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let fs = &mut policy.filesystem;
        for (key, value) in table.iter() {
            let path = join("filesystem", key.get_ref());
            match key.get_ref().as_ref() {
                "system" => set(&mut fs.system, self.boolean(&path, value)),
                "read_only" => set(&mut fs.read_only, self.list(&path, value, Self::bind)),
                "read_write" => set(&mut fs.read_write, self.list(&path, value, Self::bind)),
                "tmpfs" => set(&mut fs.tmpfs, self.list(&path, value, Self::tmpfs)),
                "workspace" => set(&mut fs.workspace, self.parsed(&path, value).map(Some)),
                _ => {
                    self.unknown_key("filesystem", key, FILESYSTEM_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), key.span(), path);
        }
    }

    fn resources(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let res = &mut policy.resources;
        for (key, value) in table.iter() {
            let path = join("resources", key.get_ref());
            match key.get_ref().as_ref() {
                "memory" => set(&mut res.memory, self.size(&path, value).map(Some)),
                "memory_high" => set(&mut res.memory_high, self.size(&path, value).map(Some)),
                "pids" => set(&mut res.pids, self.pids(&path, value).map(Some)),
                "cpus" => set(&mut res.cpus, self.cpus(&path, value).map(Some)),
                "cpu_weight" => set(
                    &mut res.cpu_weight,
                    self.bounded(&path, value, CPU_WEIGHT_RANGE).map(Some),
                ),
                "timeout" => set(&mut res.timeout, self.timeout(&path, value).map(Some)),
                "cpu_time" => set(&mut res.cpu_time, self.timeout(&path, value).map(Some)),
                "open_files" => set(
                    &mut res.open_files,
                    self.bounded(&path, value, OPEN_FILES_RANGE).map(Some),
                ),
                "file_size" => set(&mut res.file_size, self.size(&path, value).map(Some)),
                "mode" => set(&mut res.mode, self.parsed(&path, value)),
                _ => {
                    self.unknown_key("resources", key, RESOURCES_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), value.span(), path);
        }
    }

    fn network(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let net = &mut policy.network;
        for (key, value) in table.iter() {
            let path = join("network", key.get_ref());
            match key.get_ref().as_ref() {
                "mode" => set(&mut net.mode, self.parsed(&path, value)),
                "allow_out" => set(&mut net.allow_out, self.list(&path, value, Self::parsed)),
                "allow_in" => set(&mut net.allow_in, self.list(&path, value, Self::parsed)),
                _ => {
                    self.unknown_key("network", key, NETWORK_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), key.span(), path);
        }
    }

    fn env(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let mut env = BTreeMap::new();
        for (key, value) in table.iter() {
            let path = join("env", key.get_ref());
            let name = self.check(&path, key.span(), key.get_ref().parse::<EnvName>());
            let text = self.string(&path, value);
            if let (Some(name), Some(text)) = (name, text) {
                // validate() complains about values, so point at the value.
                self.place(format!("env.{name}"), value.span(), path);
                env.insert(name, text.to_owned());
            }
        }
        policy.env = env;
    }

    fn syscalls(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let sys = &mut policy.syscalls;
        for (key, value) in table.iter() {
            let path = join("syscalls", key.get_ref());
            match key.get_ref().as_ref() {
                "allow" => set(&mut sys.allow, self.list(&path, value, Self::parsed)),
                "deny" => set(&mut sys.deny, self.list(&path, value, Self::parsed)),
                "action" => set(&mut sys.action, self.parsed(&path, value)),
                _ => {
                    self.unknown_key("syscalls", key, SYSCALLS_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), key.span(), path);
        }
    }

    fn landlock(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        for (key, value) in table.iter() {
            let path = join("landlock", key.get_ref());
            match key.get_ref().as_ref() {
                "mode" => set(&mut policy.landlock.mode, self.parsed(&path, value)),
                _ => {
                    self.unknown_key("landlock", key, LANDLOCK_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), key.span(), path);
        }
    }

    fn capabilities(&mut self, table: &DeTable<'_>, policy: &mut Policy) {
        let caps = &mut policy.capabilities;
        for (key, value) in table.iter() {
            let path = join("capabilities", key.get_ref());
            match key.get_ref().as_ref() {
                "add" => set(&mut caps.add, self.list(&path, value, Self::parsed)),
                "drop" => set(&mut caps.drop, self.list(&path, value, Self::parsed)),
                "ambient" => set(&mut caps.ambient, self.boolean(&path, value)),
                _ => {
                    self.unknown_key("capabilities", key, CAPABILITIES_KEYS);
                    continue;
                }
            }
            self.place(path.clone(), key.span(), path);
        }
    }

    /// Runs [`Policy::validate`] and records its problems at the place of
    /// their key.
    fn cross_check(&mut self, policy: &Policy) {
        // A mode that failed to parse was left at "none"; checking the port
        // rules against that would add an error the user did not make.
        let mut policy = policy.clone();
        if self.failed.contains("network.mode") {
            policy.network.mode = NetworkMode::Filtered;
        }
        let Err(problems) = policy.validate() else {
            return;
        };
        for problem in problems {
            let (span, written) = self.locate(&problem.key);
            let message = self.as_written(&problem.message);
            self.errors.push((span, format!("{written}: {message}")));
        }
    }

    /// The place of a policy key, else of the nearest enclosing key that was
    /// recorded, else the start of the file.
    fn locate(&self, key: &str) -> (Span, String) {
        if let Some(place) = self.places.get(key) {
            return (place.span.clone(), place.written.clone());
        }
        let mut prefix = key;
        while let Some(cut) = prefix.rfind(['.', '[']) {
            prefix = prefix.get(..cut).unwrap_or("");
            if let Some(place) = self.places.get(prefix) {
                return (place.span.clone(), key.to_owned());
            }
        }
        (0..0, key.to_owned())
    }

    /// Rewrites policy keys quoted inside a message (`already mounted by
    /// filesystem.read_only[1]`) to the indices the user wrote.
    fn as_written(&self, message: &str) -> String {
        if self.renumbered.is_empty() {
            return message.to_owned();
        }
        // One left-to-right pass, so a rewritten key is never rewritten
        // again; keys end in `]`, so `x[1]` cannot match inside `x[10]`.
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        'scan: while let Some(c) = rest.chars().next() {
            for (key, written) in &self.renumbered {
                if let Some(after) = rest.strip_prefix(key) {
                    out.push_str(written);
                    rest = after;
                    continue 'scan;
                }
            }
            out.push(c);
            rest = rest.get(c.len_utf8()..).unwrap_or("");
        }
        out
    }

    fn into_diagnostics(mut self, source: &str) -> Vec<Diagnostic> {
        self.errors.sort_by_key(|(span, _)| span.start);
        self.errors.dedup();
        let index = LineIndex::new(source);
        self.errors
            .into_iter()
            .map(|(span, message)| Diagnostic::at(&index, span.start, message))
            .collect()
    }
}

/// The effective policy as TOML: every key, in the order of the model, with
/// defaults filled in and unset limits as comments. [`parse_policy`] reads it
/// back to an equal policy.
pub fn policy_to_toml(policy: &Policy) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# The effective Purple policy: every key, with its default when the file left it out."
    );

    let fs = &policy.filesystem;
    let _ = writeln!(w, "\n[filesystem]");
    let _ = writeln!(w, "system = {}", fs.system);
    let _ = writeln!(
        w,
        "read_only = {}",
        array(fs.read_only.iter().map(bind_to_toml))
    );
    let _ = writeln!(
        w,
        "read_write = {}",
        array(fs.read_write.iter().map(bind_to_toml))
    );
    let tmpfs = fs.tmpfs.iter().map(|t| {
        format!(
            "{{ path = {}, size = {} }}",
            quote(t.path.as_str()),
            quote(&t.size.to_string())
        )
    });
    let _ = writeln!(w, "tmpfs = {}", array(tmpfs));
    optional(
        w,
        "workspace",
        fs.workspace.as_ref().map(|p| quote(p.as_str())),
        "(none)",
    );

    let res = &policy.resources;
    let _ = writeln!(w, "\n[resources]");
    optional(
        w,
        "memory",
        res.memory.map(|m| quote(&m.to_string())),
        "(admin default)",
    );
    optional(
        w,
        "pids",
        res.pids.map(|p| p.to_string()),
        "(admin default)",
    );
    // CpuQuota prints as a TOML integer or float ("2", "0.5").
    optional(
        w,
        "cpus",
        res.cpus.map(|c| c.to_string()),
        "(admin default)",
    );
    optional(
        w,
        "memory_high",
        res.memory_high.map(|m| quote(&m.to_string())),
        "(none)",
    );
    optional(
        w,
        "cpu_weight",
        res.cpu_weight.map(|c| c.to_string()),
        "(admin default)",
    );
    optional(
        w,
        "timeout",
        res.timeout.map(|t| quote(&t.to_string())),
        "(none, or the admin maximum)",
    );
    optional(
        w,
        "cpu_time",
        res.cpu_time.map(|t| quote(&t.to_string())),
        "(none, or the admin maximum)",
    );
    optional(
        w,
        "open_files",
        res.open_files.map(|n| n.to_string()),
        "(admin default)",
    );
    optional(
        w,
        "file_size",
        res.file_size.map(|m| quote(&m.to_string())),
        "(admin default)",
    );
    let _ = writeln!(w, "mode = {}", quote(&res.mode.to_string()));

    let net = &policy.network;
    let _ = writeln!(w, "\n[network]");
    let _ = writeln!(w, "mode = {}", quote(&net.mode.to_string()));
    let _ = writeln!(
        w,
        "allow_out = {}",
        array(net.allow_out.iter().map(|r| quote(&r.to_string())))
    );
    let _ = writeln!(
        w,
        "allow_in = {}",
        array(net.allow_in.iter().map(|r| quote(&r.to_string())))
    );

    let _ = writeln!(w, "\n[env]");
    for (name, value) in &policy.env {
        let _ = writeln!(w, "{} = {}", key_to_toml(name.as_str()), quote(value));
    }

    let sys = &policy.syscalls;
    let _ = writeln!(w, "\n[syscalls]");
    let _ = writeln!(
        w,
        "allow = {}",
        array(sys.allow.iter().map(|n| quote(n.as_str())))
    );
    let _ = writeln!(
        w,
        "deny = {}",
        array(sys.deny.iter().map(|n| quote(n.as_str())))
    );
    let _ = writeln!(w, "action = {}", quote(syscall_action_name(sys.action)));

    let _ = writeln!(w, "\n[landlock]");
    let _ = writeln!(
        w,
        "mode = {}",
        quote(landlock_mode_name(policy.landlock.mode))
    );

    let caps = &policy.capabilities;
    let _ = writeln!(w, "\n[capabilities]");
    let _ = writeln!(
        w,
        "add = {}",
        array(caps.add.iter().map(|c| quote(c.name())))
    );
    let _ = writeln!(
        w,
        "drop = {}",
        array(caps.drop.iter().map(|c| quote(c.name())))
    );
    let _ = writeln!(w, "ambient = {}", caps.ambient);
    out
}

fn optional(w: &mut String, key: &str, value: Option<String>, absent: &str) {
    let _ = match value {
        Some(value) => writeln!(w, "{key} = {value}"),
        None => writeln!(w, "# {key} = {absent}"),
    };
}

/// `[]`, or one element per line.
fn array(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[");
    for item in items {
        let _ = write!(out, "\n    {item},");
    }
    if out.len() > 1 {
        out.push('\n');
    }
    out.push(']');
    out
}

/// `"SRC"` or `"SRC:DST"`; the table form when a path holds a `:`, which the
/// string form would split at.
fn bind_to_toml(bind: &Bind) -> String {
    if bind.source.as_str().contains(':') || bind.destination.as_str().contains(':') {
        format!(
            "{{ source = {}, destination = {} }}",
            quote(bind.source.as_str()),
            quote(bind.destination.as_str())
        )
    } else {
        quote(&bind.to_string())
    }
}

fn syscall_action_name(action: SyscallAction) -> &'static str {
    match action {
        SyscallAction::Errno => "errno",
        SyscallAction::Kill => "kill",
        SyscallAction::Log => "log",
    }
}

fn landlock_mode_name(mode: LandlockMode) -> &'static str {
    match mode {
        LandlockMode::Required => "required",
        LandlockMode::BestEffort => "best-effort",
        LandlockMode::Off => "off",
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn key_to_toml(key: &str) -> String {
    if is_bare_key(key) {
        key.to_owned()
    } else {
        quote(key)
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;
    use crate::policy::{Cidr, InboundRule, PortRule, SyscallName};

    fn ok(source: &str) -> Policy {
        parse_policy(source)
            .unwrap_or_else(|d| unreachable!("{}", format_diagnostics("test.toml", &d)))
    }

    fn diagnostics(source: &str) -> Vec<Diagnostic> {
        match parse_policy(source) {
            Ok(p) => unreachable!("expected errors, parsed {p:?}"),
            Err(d) => d,
        }
    }

    /// Exactly these diagnostics, in order: line, column, and a part of the message.
    fn assert_errors(source: &str, expected: &[(usize, usize, &str)]) {
        let got = diagnostics(source);
        let shown = format_diagnostics("test.toml", &got);
        assert_eq!(got.len(), expected.len(), "{shown}");
        for (d, (line, column, text)) in got.iter().zip(expected) {
            assert_eq!((d.line, d.column), (*line, *column), "{text:?} in\n{shown}");
            assert!(
                d.message.contains(text),
                "{:?} does not contain {text:?}",
                d.message
            );
        }
    }

    fn parse<T: FromStr<Err = ValueError>>(s: &str) -> T {
        s.parse()
            .unwrap_or_else(|e: ValueError| unreachable!("{s}: {e}"))
    }

    #[test]
    fn empty_file_is_the_default_policy() {
        assert_eq!(ok(""), Policy::default());
        assert_eq!(ok("# nothing\n\n[filesystem]\n"), Policy::default());
    }

    #[test]
    fn full_example_parses() {
        let p = ok(r#"
[filesystem]
system = false
read_only = ["/opt/data", "/srv/x:/data", { source = "/a", destination = "/b" }, { source = "/c" }]
read_write = ["/home/me/out:/out"]
tmpfs = [{ path = "/tmp", size = "64M" }, { path = "/run" }]
workspace = "/home/me/project"

[resources]
memory = "1G"
pids = 256
cpus = 0.5
timeout = "30s"

[network]
mode = "filtered"
allow_out = ["tcp:443", "udp:53@192.0.2.0/24"]
allow_in = ["tcp:8080->18080"]

[env]
LANG = "C.UTF-8"
"my.var" = "x"

[syscalls]
allow = ["read"]
deny = ["ptrace"]
action = "kill"

[landlock]
mode = "off"

[capabilities]
add = ["CAP_NET_BIND_SERVICE", "chown"]
drop = ["CAP_CHOWN"]
ambient = true
"#);
        let fs = &p.filesystem;
        assert!(!fs.system);
        let binds: Vec<String> = fs.read_only.iter().map(|b| b.to_string()).collect();
        assert_eq!(binds, ["/opt/data", "/srv/x:/data", "/a:/b", "/c"]);
        assert_eq!(fs.read_write[0].destination.as_str(), "/out");
        assert_eq!(fs.tmpfs.len(), 2);
        assert_eq!(fs.tmpfs[0].size.bytes(), 64 << 20);
        assert_eq!(fs.tmpfs[1].size, DEFAULT_TMP_SIZE);
        assert_eq!(
            fs.workspace.as_ref().map(AbsPath::as_str),
            Some("/home/me/project")
        );
        assert_eq!(p.resources.memory.map(ByteSize::bytes), Some(1 << 30));
        assert_eq!(p.resources.pids, Some(256));
        assert_eq!(p.resources.cpus.map(CpuQuota::millicpus), Some(500));
        assert_eq!(p.resources.timeout.map(Timeout::millis), Some(30_000));
        assert_eq!(p.network.mode, NetworkMode::Filtered);
        assert_eq!(p.network.allow_out.len(), 2);
        assert_eq!(p.network.allow_in[0].host_port, Some(18080));
        assert_eq!(
            p.env.get(&parse::<EnvName>("my.var")).map(String::as_str),
            Some("x")
        );
        assert_eq!(p.syscalls.action, SyscallAction::Kill);
        assert_eq!(p.landlock.mode, LandlockMode::Off);
        assert_eq!(p.capabilities.kept(), vec![Capability::NetBindService]);
        assert!(p.capabilities.ambient);
    }

    #[test]
    fn other_spellings_of_numbers_and_tables() {
        let p = ok("[resources]\nmemory = 1048576\ntimeout = 30\ncpus = 2\n");
        assert_eq!(p.resources.memory.map(|m| m.to_string()), Some("1M".into()));
        assert_eq!(p.resources.timeout.map(Timeout::millis), Some(30_000));
        assert_eq!(p.resources.cpus.map(CpuQuota::millicpus), Some(2000));
        assert_eq!(
            ok("[resources]\ncpus = \"0.25\"\n")
                .resources
                .cpus
                .map(CpuQuota::millicpus),
            Some(250)
        );
        assert_eq!(ok("[resources]\npids = 0x10\n").resources.pids, Some(16));
        // Dotted keys and arrays of tables are the same tables to the walker.
        let p = ok("landlock.mode = \"off\"\n[[filesystem.tmpfs]]\npath = \"/tmp\"\n[[filesystem.tmpfs]]\npath = \"/run\"\nsize = 4096\n");
        assert_eq!(p.landlock.mode, LandlockMode::Off);
        let tmpfs: Vec<(&str, u64)> = p
            .filesystem
            .tmpfs
            .iter()
            .map(|t| (t.path.as_str(), t.size.bytes()))
            .collect();
        assert_eq!(tmpfs, [("/tmp", 256 << 20), ("/run", 4096)]);
        // A present key replaces the default.
        assert!(ok("[filesystem]\ntmpfs = []\n").filesystem.tmpfs.is_empty());
    }

    #[test]
    fn wrong_types_are_all_reported() {
        assert_errors(
            r#"[filesystem]
system = "yes"
workspace = 5
read_only = "/a"
read_write = [1]
[resources]
memory = 1.5
pids = "many"
cpus = true
[env]
FOO = 1
[landlock]
mode = true
[capabilities]
ambient = "no"
network = 1
"#,
            &[
                (
                    2,
                    10,
                    "filesystem.system: expected a boolean, found a string",
                ),
                (
                    3,
                    13,
                    "filesystem.workspace: expected a string, found an integer",
                ),
                (
                    4,
                    13,
                    "filesystem.read_only: expected an array, found a string",
                ),
                (
                    5,
                    15,
                    "filesystem.read_write[0]: expected a string or a table, found an integer",
                ),
                (
                    7,
                    10,
                    "resources.memory: expected a string or an integer, found a float",
                ),
                (8, 8, "resources.pids: expected an integer, found a string"),
                (
                    9,
                    8,
                    "resources.cpus: expected a number or a string, found a boolean",
                ),
                (11, 7, "env.FOO: expected a string, found an integer"),
                (13, 8, "landlock.mode: expected a string, found a boolean"),
                (
                    15,
                    11,
                    "capabilities.ambient: expected a boolean, found a string",
                ),
                (16, 1, "capabilities: unknown key \"network\""),
            ],
        );
        assert_errors(
            "network = 1\n",
            &[(1, 11, "network: expected a table, found an integer")],
        );
    }

    #[test]
    fn invalid_values_use_the_value_types_messages() {
        assert_errors(
            r#"[filesystem]
read_only = ["rel:/b", "/ok"]
read_write = [{ source = "/a", destination = "/x/../y" }]
tmpfs = [{ path = "/t", size = "12Q" }]
workspace = "home/me"
[resources]
memory = "12Q"
timeout = "8d"
cpus = 0
pids = 0
[network]
mode = "bridge"
allow_out = ["tcp:443", "tcp:0"]
allow_in = ["tcp:8080->0"]
[env]
"A=B" = "x"
[syscalls]
allow = ["Open"]
action = "trap"
[landlock]
mode = "strict"
[capabilities]
add = ["CAP_FLY"]
"#,
            &[
                (2, 14, "filesystem.read_only[0]: path \"rel\" is relative; use an absolute path"),
                (3, 46, "filesystem.read_write[0].destination: path \"/x/../y\" contains \"..\""),
                (4, 32, "filesystem.tmpfs[0].size: size \"12Q\" has unknown unit \"Q\""),
                (5, 13, "filesystem.workspace: path \"home/me\" is relative"),
                (7, 10, "resources.memory: size \"12Q\" has unknown unit"),
                (8, 11, "resources.timeout: duration \"8d\" has unknown unit \"d\""),
                (9, 8, "resources.cpus: cpus \"0\" must be between 0.01 and 1024"),
                (10, 8, "resources.pids: 0 is out of range; use 1 to 4194304"),
                (12, 8, "network.mode: unknown network mode \"bridge\""),
                (13, 25, "network.allow_out[1]: port \"0\" in rule \"tcp:0\" must be a number from 1 to 65535"),
                (14, 13, "network.allow_in[0]: port \"0\" in rule \"tcp:8080->0\""),
                (16, 1, "env.\"A=B\": environment variable name \"A=B\" contains '='"),
                (18, 10, "syscalls.allow[0]: \"Open\" is not a syscall name"),
                (19, 10, "syscalls.action: unknown syscall action \"trap\""),
                (21, 8, "landlock.mode: unknown landlock mode \"strict\""),
                (23, 8, "capabilities.add[0]: unknown capability \"CAP_FLY\""),
            ],
        );
    }

    #[test]
    fn env_keys_are_validated() {
        assert_errors(
            "[env]\nOK = \"1\"\n\"A=B\" = \"x\"\n\"\" = \"y\"\n",
            &[
                (
                    3,
                    1,
                    "environment variable name \"A=B\" contains '=' or NUL",
                ),
                (4, 1, "environment variable name is empty"),
            ],
        );
    }

    #[test]
    fn out_of_range_numbers() {
        assert_errors(
            "[resources]\npids = 5000000\nmemory = -5\ntimeout = -1\n",
            &[
                (2, 8, "resources.pids: 5000000 is out of range"),
                (3, 10, "resources.memory: size -5 is out of range"),
                (
                    4,
                    11,
                    "resources.timeout: duration -1 must be between 1ms and 7 days",
                ),
            ],
        );
        assert_errors(
            "[resources]\nmemory = 0\ntimeout = 0\ncpus = nan\n",
            &[
                (2, 10, "resources.memory: size 0 is out of range"),
                (3, 11, "duration \"0\" must be between 1ms and 7 days"),
                (4, 8, "cpus \"nan\" must be between 0.01 and 1024"),
            ],
        );
    }

    #[test]
    fn unknown_sections_and_keys_name_the_allowed_ones() {
        assert_errors(
            "[filesytem]\nsystem = true\n[network]\nmode = \"none\"\nallow = []\n[filesystem]\nread_only = [{ src = \"/a\" }]\n",
            &[
                (
                    1,
                    2,
                    "unknown section \"filesytem\"; allowed sections are filesystem, resources, network, env, syscalls, landlock, capabilities",
                ),
                (5, 1, "network: unknown key \"allow\"; allowed keys are mode, allow_out, allow_in"),
                (7, 14, "filesystem.read_only[0]: missing key \"source\""),
                (7, 16, "filesystem.read_only[0]: unknown key \"src\"; allowed keys are source, destination"),
            ],
        );
        assert_errors(
            "[filesystem]\ntmpfs = [{ size = \"1M\", mode = 1 }]\n",
            &[
                (2, 10, "missing key \"path\""),
                (2, 25, "unknown key \"mode\"; allowed keys are path, size"),
            ],
        );
        assert_errors("top = 1\n", &[(1, 1, "unknown section \"top\"")]);
    }

    #[test]
    fn syntax_errors_are_one_diagnostic_at_their_place() {
        assert_errors(
            "[filesystem]\nread_only = [\"/a\",\nsystem = true\n",
            &[(3, 8, "invalid TOML: unexpected `=`")],
        );
        assert_errors(
            "[env]\nA = \"1\"\nA = \"2\"\n",
            &[(3, 1, "invalid TOML: duplicate key")],
        );
    }

    #[test]
    fn cross_field_problems_point_at_their_key() {
        // The first element is rejected, so the policy's indices are one
        // lower than the file's; messages use the file's.
        assert_errors(
            "[filesystem]\nread_only = [\"/n:\", \"/x:/proc/sys\", \"/y:/opt\", \"/z:/opt\"]\n",
            &[
                (2, 14, "filesystem.read_only[0]: path is empty"),
                (2, 21, "filesystem.read_only[1]: /proc/sys is inside /proc"),
                (
                    2,
                    48,
                    "filesystem.read_only[3]: /opt is already mounted by filesystem.read_only[2]",
                ),
            ],
        );
        assert_errors(
            "[filesystem]\nworkspace = \"/w\"\nread_write = [\"/h:/workspace\"]\n",
            &[(
                3,
                15,
                "filesystem.read_write[0]: /workspace is already mounted by filesystem.workspace",
            )],
        );
        assert_errors(
            "[network]\nallow_out = [\"tcp:443\"]\n",
            &[(2, 1, "network.allow_out: needs network.mode = \"filtered\"")],
        );
        assert_errors(
            "[env]\nFOO = \"a\\u0000b\"\n",
            &[(2, 7, "env.FOO: environment value contains a NUL byte")],
        );
    }

    #[test]
    fn invalid_mode_does_not_also_blame_the_rules() {
        assert_errors(
            "[network]\nmode = \"filterd\"\nallow_out = [\"tcp:443\"]\n",
            &[(2, 8, "unknown network mode \"filterd\"")],
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let diags = parse_policy_bytes(b"[env]\nNAME = \"caf\xe9\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (2, 12));
        assert!(diags[0].message.contains("0xe9"));
    }

    #[test]
    fn columns_count_characters() {
        assert_errors(
            "[env]\n\"é\" = 1\n",
            &[(2, 7, "expected a string, found an integer")],
        );
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn diagnostics_render_with_file_line_column() {
        let d = diagnostics("[landlock]\nmode = 1\nx = 2\n");
        assert_eq!(
            d[0].to_string(),
            "2:8: landlock.mode: expected a string, found an integer"
        );
        assert_eq!(
            format_diagnostics("p.toml", &d),
            "p.toml:2:8: landlock.mode: expected a string, found an integer\n\
             p.toml:3:1: landlock: unknown key \"x\"; allowed keys are mode\n"
        );
    }

    fn rich_policy() -> Policy {
        let mut p = Policy::default();
        p.filesystem.system = false;
        p.filesystem.read_only = vec![
            parse("/opt/data"),
            parse("/srv/x:/data"),
            Bind {
                source: parse("/host/a:b"),
                destination: parse("/in:side"),
            },
        ];
        p.filesystem.read_write = vec![parse("/home/me/out:/out")];
        p.filesystem.tmpfs = vec![
            Tmpfs {
                path: parse("/tmp"),
                size: ByteSize::from_bytes(1536),
            },
            Tmpfs {
                path: parse("/run"),
                size: parse("1.5G"),
            },
        ];
        p.filesystem.workspace = Some(parse("/home/me/project"));
        p.resources.memory = Some(parse("1G"));
        p.resources.pids = Some(MAX_PIDS);
        p.resources.cpus = Some(parse("0.25"));
        p.resources.timeout = Some(parse("250ms"));
        p.network.mode = NetworkMode::Filtered;
        p.network.allow_out = vec![
            parse::<PortRule>("tcp:8000-8100@192.0.2.0/24"),
            parse("udp:53"),
        ];
        p.network.allow_in = vec![parse::<InboundRule>("tcp:8080->18080"), parse("udp:5353")];
        p.env.insert(parse("PATH"), "/usr/bin:/bin".into());
        p.env.insert(
            parse("my.var"),
            "quote \" backslash \\ newline \n tab \t bell \u{7} é".into(),
        );
        p.syscalls.allow = vec![parse::<SyscallName>("read"), parse("write")];
        p.syscalls.deny = vec![parse("ptrace")];
        p.syscalls.action = SyscallAction::Log;
        p.landlock.mode = LandlockMode::Required;
        p.capabilities.add = vec![Capability::NetBindService, Capability::Chown];
        p.capabilities.drop = vec![Capability::Chown];
        p.capabilities.ambient = true;
        p
    }

    #[test]
    fn effective_policy_round_trips() {
        let rich = rich_policy();
        assert_eq!(rich.validate(), Ok(()));
        assert_eq!(parse::<Cidr>("192.0.2.0/24").prefix, 24);
        for policy in [Policy::default(), rich] {
            let text = policy_to_toml(&policy);
            assert_eq!(ok(&text), policy, "{text}");
        }
    }

    #[test]
    fn effective_default_policy_shows_every_key() {
        let text = policy_to_toml(&Policy::default());
        assert!(text.starts_with("# The effective Purple policy"), "{text}");
        for line in [
            "[filesystem]\nsystem = true\nread_only = []\nread_write = []\ntmpfs = [\n    { path = \"/tmp\", size = \"256M\" },\n]\n# workspace = (none)\n",
            "[resources]\n# memory = (admin default)\n# pids = (admin default)\n# cpus = (admin default)\n# memory_high = (none)\n# cpu_weight = (admin default)\n# timeout = (none, or the admin maximum)\n# cpu_time = (none, or the admin maximum)\n# open_files = (admin default)\n# file_size = (admin default)\nmode = \"required\"\n",
            "[network]\nmode = \"none\"\nallow_out = []\nallow_in = []\n",
            "[env]\n\n[syscalls]\nallow = []\ndeny = []\naction = \"errno\"\n",
            "[landlock]\nmode = \"best-effort\"\n",
            "[capabilities]\nadd = []\ndrop = []\nambient = false\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let rich = policy_to_toml(&rich_policy());
        assert!(
            rich.contains("    { source = \"/host/a:b\", destination = \"/in:side\" },\n"),
            "{rich}"
        );
        assert!(rich.contains("    \"/srv/x:/data\",\n"), "{rich}");
        assert!(rich.contains("cpus = 0.25\n"), "{rich}");
    }

    /// Every ```toml block of docs/policy.md, and the examples of each
    /// section's key table (all of a section's examples together), parse.
    #[test]
    fn documentation_examples_parse() {
        let doc = include_str!("../../../docs/policy.md");
        let mut blocks = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            ok(text);
            blocks += 1;
        }
        assert!(blocks >= 2);
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in doc.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                if let Some(name) = heading
                    .strip_prefix("`[")
                    .and_then(|h| h.strip_suffix("]`"))
                {
                    sections.push((name.to_owned(), format!("[{name}]\n")));
                } else {
                    sections.push((String::new(), String::new()));
                }
            } else if line.starts_with("| `") {
                if let Some((name, text)) = sections.last_mut().filter(|(name, _)| !name.is_empty())
                {
                    let example = line
                        .trim_end_matches('|')
                        .rsplit('|')
                        .next()
                        .unwrap_or_default();
                    let example = example.trim().trim_start_matches('`').trim_end_matches('`');
                    assert!(example.contains(" = "), "[{name}] example {example:?}");
                    text.push_str(example);
                    text.push('\n');
                }
            }
        }
        let tables: Vec<&String> = sections
            .iter()
            .filter(|(n, _)| !n.is_empty())
            .map(|(_, t)| t)
            .collect();
        assert_eq!(tables.len(), 7, "{tables:?}");
        for text in tables {
            ok(text);
        }
    }
}
