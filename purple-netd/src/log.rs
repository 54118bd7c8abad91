//! netd's log: every line to stderr, and to syslog (facility daemon) when
//! /dev/log takes it. A missing syslog is said once and not fatal: netd's
//! job is the network, the journal of its own actions is a convenience.

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("syslog: {0}")]
    Syslog(String),
}

pub struct Log {
    syslog: Option<Logger<LoggerBackend, Formatter3164>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("syslog", &self.syslog.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Log {
    /// A log to stderr only.
    pub fn stderr() -> Log {
        Log { syslog: None }
    }

    /// A log to stderr and syslog; the error says why syslog is unavailable.
    pub fn open() -> (Log, Option<LogError>) {
        let formatter = Formatter3164 {
            facility: Facility::LOG_DAEMON,
            hostname: None,
            process: "purple-netd".into(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(l) => (Log { syslog: Some(l) }, None),
            Err(e) => (Log::stderr(), Some(LogError::Syslog(e.to_string()))),
        }
    }

    pub fn line(&mut self, level: Level, message: &str) {
        let tag = match level {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
        };
        eprintln!("purple-netd: {tag}{message}");
        if let Some(s) = self.syslog.as_mut() {
            let result = match level {
                Level::Info => s.info(message),
                Level::Warning => s.warning(message),
                Level::Error => s.err(message),
            };
            if result.is_err() {
                // Do not loop on a broken syslog: stderr still has it.
                self.syslog = None;
            }
        }
    }

    pub fn info(&mut self, message: &str) {
        self.line(Level::Info, message);
    }

    pub fn warn(&mut self, message: &str) {
        self.line(Level::Warning, message);
    }

    pub fn error(&mut self, message: &str) {
        self.line(Level::Error, message);
    }
}
