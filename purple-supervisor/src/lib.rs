//! The parts of purple-supervisor that other crates use: the command-line
//! definitions (packaging generates the man pages and shell completions
//! from them) and the HTTP/1.1 transport of the SandboxManager API (the
//! integration tests speak it too). Everything else lives in the binary.

pub mod cli;
pub mod http;
