//! Small validated value types shared by the policy parser, the command line
//! and purple-init.
//!
//! Each type can only be built through its `FromStr`/`TryFrom<String>`
//! validation, and serde goes through the same path (`try_from`), so a value
//! decoded from an untrusted request is re-validated by the act of decoding it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was rejected. The message is written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn invalid(msg: impl Into<String>) -> ValueError {
    ValueError(msg.into())
}

/// Longest path Purple accepts anywhere (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// An absolute, normalized path: starts with `/`, no `.` or `..` components,
/// no empty components, no NUL, at most [`MAX_PATH_LEN`] bytes. Used both for
/// host paths (sources) and sandbox paths (destinations).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AbsPath(String);

impl AbsPath {
    /// For compile-time constants that are known to be valid; an invalid one
    /// is a bug caught by the unit tests, so it falls back to `/`.
    pub fn from_static(s: &'static str) -> AbsPath {
        s.parse().unwrap_or_else(|_| AbsPath("/".to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path components after the leading `/` (empty for `/` itself).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The path without its leading `/`, for `*at` calls relative to a root fd.
    pub fn relative(&self) -> &str {
        self.0.trim_start_matches('/')
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &AbsPath) -> bool {
        if other.is_root() {
            return true;
        }
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

impl FromStr for AbsPath {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid("path is empty"));
        }
        if s.len() > MAX_PATH_LEN {
            return Err(invalid(format!("path is longer than {MAX_PATH_LEN} bytes")));
        }
        if s.contains('\0') {
            return Err(invalid("path contains a NUL byte"));
        }
        if !s.starts_with('/') {
            return Err(invalid(format!(
                "path {s:?} is relative; use an absolute path"
            )));
        }
        let mut normalized = String::with_capacity(s.len());
        for component in s.split('/').filter(|c| !c.is_empty()) {
            if component == "." || component == ".." {
                return Err(invalid(format!(
                    "path {s:?} contains {component:?}; write it without . or .. components"
                )));
            }
            normalized.push('/');
            normalized.push_str(component);
        }
        if normalized.is_empty() {
            normalized.push('/');
        }
        Ok(AbsPath(normalized))
    }
}

impl TryFrom<String> for AbsPath {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AbsPath> for String {
    fn from(p: AbsPath) -> String {
        p.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A size in bytes, written as `512K`, `256M`, `1G`, `1.5G` or a plain number
/// of bytes. Suffixes are binary (K = 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        ByteSize(bytes)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// For messages: `256 MiB`, `1.5 GiB`, `4096 bytes`.
    pub fn human(self) -> String {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size {
                let value = self.0 as f64 / size as f64;
                return if self.0.is_multiple_of(size) {
                    format!("{} {unit}", self.0 / size)
                } else {
                    format!("{value:.1} {unit}")
                };
            }
        }
        format!("{} bytes", self.0)
    }
}

#[cfg(test)]
#[test]
fn human_sizes() {
    assert_eq!(ByteSize(256 << 20).human(), "256 MiB");
    assert_eq!(ByteSize(3 << 29).human(), "1.5 GiB");
    assert_eq!(ByteSize(4096).human(), "4 KiB");
    assert_eq!(ByteSize(100).human(), "100 bytes");
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(invalid(format!("size {s:?} is negative")));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            other => {
                return Err(invalid(format!(
                    "size {s:?} has unknown unit {other:?}; use K, M, G or T"
                )))
            }
        };
        let value: f64 = number.parse().map_err(|_| {
            invalid(format!(
                "size {s:?} is not a number with an optional K/M/G/T unit"
            ))
        })?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 60) as f64 {
            return Err(invalid(format!(
                "size {s:?} is out of range (1 byte to 1 EiB)"
            )));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl TryFrom<String> for ByteSize {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.to_string()
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A wall-clock duration: `500ms`, `30s`, `5m`, `2h`, or a plain number of
/// seconds. Stored in milliseconds; at most 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timeout {
    millis: u64,
}

impl Timeout {
    const MAX_MILLIS: u64 = 7 * 24 * 3600 * 1000;

    pub fn from_millis(millis: u64) -> Result<Self, ValueError> {
        if millis == 0 || millis > Self::MAX_MILLIS {
            return Err(invalid("timeout must be between 1ms and 7 days"));
        }
        Ok(Timeout { millis })
    }
    pub fn millis(self) -> u64 {
        self.millis
    }
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

impl FromStr for Timeout {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale: f64 = match unit {
            "ms" => 1.0,
            "" | "s" => 1000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            other => {
                return Err(invalid(format!(
                    "duration {s:?} has unknown unit {other:?}; use ms, s, m or h"
                )))
            }
        };
        let value: f64 = number.parse().map_err(|_| {
            invalid(format!(
                "duration {s:?} is not a number with an optional unit"
            ))
        })?;
        let millis = value * scale;
        if !millis.is_finite() || millis < 1.0 || millis > Self::MAX_MILLIS as f64 {
            return Err(invalid(format!(
                "duration {s:?} must be between 1ms and 7 days"
            )));
        }
        Timeout::from_millis(millis.round() as u64)
    }
}

impl TryFrom<String> for Timeout {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Timeout> for String {
    fn from(t: Timeout) -> String {
        t.to_string()
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}s", self.millis / 1000)
        } else {
            write!(f, "{}ms", self.millis)
        }
    }
}

/// A CPU quota in thousandths of a CPU (`0.5` -> 500), from 0.01 to 1024 CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CpuQuota {
    millicpus: u32,
}

impl CpuQuota {
    pub const ONE: CpuQuota = CpuQuota { millicpus: 1000 };

    pub fn millicpus(self) -> u32 {
        self.millicpus
    }

    /// `n` whole CPUs, clamped to the accepted range (1 to 1024).
    pub fn whole(n: u32) -> CpuQuota {
        CpuQuota {
            millicpus: n.clamp(1, 1024) * 1000,
        }
    }
}

impl FromStr for CpuQuota {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value: f64 = s
            .trim()
            .parse()
            .map_err(|_| invalid(format!("cpus {s:?} is not a number such as 0.5 or 2")))?;
        if !value.is_finite() || !(0.01..=1024.0).contains(&value) {
            return Err(invalid(format!("cpus {s:?} must be between 0.01 and 1024")));
        }
        Ok(CpuQuota {
            millicpus: (value * 1000.0).round() as u32,
        })
    }
}

impl TryFrom<String> for CpuQuota {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CpuQuota> for String {
    fn from(c: CpuQuota) -> String {
        c.to_string()
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.millicpus / 1000;
        let frac = self.millicpus % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// An environment variable name: non-empty, no `=`, no NUL, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EnvName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid("environment variable name is empty"));
        }
        if s.len() > 256 {
            return Err(invalid(
                "environment variable name is longer than 256 bytes",
            ));
        }
        if s.contains('=') || s.contains('\0') {
            return Err(invalid(format!(
                "environment variable name {s:?} contains '=' or NUL"
            )));
        }
        Ok(EnvName(s.to_owned()))
    }
}

impl TryFrom<String> for EnvName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<EnvName> for String {
    fn from(n: EnvName) -> String {
        n.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an environment value: no NUL (it could not reach execve), and a
/// sane length.
pub fn check_env_value(value: &str) -> Result<(), ValueError> {
    if value.contains('\0') {
        return Err(invalid("environment value contains a NUL byte"));
    }
    if value.len() > 128 * 1024 {
        return Err(invalid("environment value is longer than 128 KiB"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_path_normalizes_and_rejects() {
        assert_eq!(
            "/a//b/".parse::<AbsPath>().map(String::from),
            Ok("/a/b".into())
        );
        assert_eq!("/".parse::<AbsPath>().map(String::from), Ok("/".into()));
        assert!("a/b".parse::<AbsPath>().is_err());
        assert!("/a/../b".parse::<AbsPath>().is_err());
        assert!("/a/./b".parse::<AbsPath>().is_err());
        assert!("".parse::<AbsPath>().is_err());
        assert!("/a\0".parse::<AbsPath>().is_err());
    }

    #[test]
    fn abs_path_prefix_is_by_component() {
        let p = |s: &str| s.parse::<AbsPath>().map_err(|e| e.0);
        assert_eq!(
            p("/usr/lib").map(|a| a.starts_with(&p("/usr").unwrap_or_else(|_| unreachable!()))),
            Ok(true)
        );
        assert_eq!(
            p("/usrx").map(|a| a.starts_with(&p("/usr").unwrap_or_else(|_| unreachable!()))),
            Ok(false)
        );
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("256M".parse::<ByteSize>().map(|b| b.bytes()), Ok(256 << 20));
        assert_eq!("1.5G".parse::<ByteSize>().map(|b| b.bytes()), Ok(3 << 29));
        assert_eq!("4096".parse::<ByteSize>().map(|b| b.bytes()), Ok(4096));
        assert_eq!(ByteSize::from_bytes(1 << 30).to_string(), "1G");
        assert!("0".parse::<ByteSize>().is_err());
        assert!("12Q".parse::<ByteSize>().is_err());
        assert!("-1M".parse::<ByteSize>().is_err());
    }

    #[test]
    fn timeouts_and_cpus() {
        assert_eq!("30s".parse::<Timeout>().map(|t| t.millis()), Ok(30_000));
        assert_eq!("2m".parse::<Timeout>().map(|t| t.millis()), Ok(120_000));
        assert_eq!(
            "250ms".parse::<Timeout>().map(|t| t.to_string()),
            Ok("250ms".into())
        );
        assert!("0s".parse::<Timeout>().is_err());
        assert!("8d".parse::<Timeout>().is_err());
        assert_eq!("0.5".parse::<CpuQuota>().map(|c| c.millicpus()), Ok(500));
        assert_eq!(
            "2".parse::<CpuQuota>().map(|c| c.to_string()),
            Ok("2".into())
        );
        assert_eq!(
            "0.25".parse::<CpuQuota>().map(|c| c.to_string()),
            Ok("0.25".into())
        );
        assert!("0".parse::<CpuQuota>().is_err());
        assert!("NaN".parse::<CpuQuota>().is_err());
    }

    #[test]
    fn env_names() {
        assert!("PATH".parse::<EnvName>().is_ok());
        assert!("A=B".parse::<EnvName>().is_err());
        assert!("".parse::<EnvName>().is_err());
    }
}
