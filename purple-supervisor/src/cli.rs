//! The command-line contract. Users and tests rely on it: extend it, never
//! change it. Kept apart from `main` so packaging can generate man pages and
//! completions from the same definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use purple_common::policy::{Bind, NetworkMode};
use purple_common::values::{AbsPath, ByteSize, CpuQuota, Timeout};

#[derive(Debug, Parser)]
#[command(
    name = "purple-supervisor",
    version,
    about = "Run untrusted commands (such as code written by AI agents) in a Linux sandbox",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command in a fresh sandbox; exits with the command's status.
    Run(Box<RunArgs>),
    /// Check or show policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show what this host supports and which guarantees hold here.
    Doctor,
    /// Run the SandboxManager: many sandboxes at once behind a local
    /// HTTP/1.1 JSON API on a unix socket (docs/api.md).
    Serve(ServeArgs),
    /// Queue a sandbox on a running `serve` and print its id (stdin is
    /// /dev/null; the run options are those of `run`).
    Submit(Box<SubmitArgs>),
    /// List the sandboxes of a running `serve`.
    Ps(PsArgs),
    /// Print a sandbox's output (stdout to stdout, stderr to stderr).
    Logs(LogsArgs),
    /// Wait for a sandbox to finish; exits with its exit code.
    Wait(IdArgs),
    /// Kill a sandbox and every process in it.
    Kill(IdArgs),
}

#[derive(Debug, Args)]
pub struct SocketArg {
    /// The service's socket (default $XDG_RUNTIME_DIR/purple/supervisor.sock,
    /// else /tmp/purple-<uid>/supervisor.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Sandboxes running (or starting) at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_sandboxes: usize,
    /// Sum of the memory limits of running sandboxes (default: the host's memory).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<ByteSize>,
    /// Sum of the CPU quotas of running sandboxes (default: the online CPUs).
    #[arg(long, value_name = "F")]
    pub max_cpus: Option<CpuQuota>,
    /// Requests that may wait for room; beyond, 429.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_queue: usize,
    /// stdout + stderr kept per sandbox; the rest is dropped (truncated).
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    pub max_output: ByteSize,
    /// Largest request body, stdin included.
    #[arg(long, value_name = "SIZE", default_value = "8M")]
    pub max_body: ByteSize,
    /// How long a finished sandbox stays visible.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub keep_finished: Timeout,
    /// Output kept by finished sandboxes, all together; past it the oldest
    /// finished sandboxes are forgotten before --keep-finished.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub max_retained_output: ByteSize,
    /// Memory limit of a sandbox whose policy names none.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub default_memory: ByteSize,
    /// CPU quota of a sandbox whose policy names none.
    #[arg(long, value_name = "F", default_value = "1")]
    pub default_cpus: CpuQuota,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print the service's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Keep printing as the command writes, until it ends.
    #[arg(short, long)]
    pub follow: bool,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Exit 0 if FILE is a valid policy, else print every error as FILE:LINE:COL: message and exit 1.
    Check { file: PathBuf },
    /// Print the effective policy (defaults filled in) as TOML.
    Show {
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML policy file; the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Host directory bound read-write at /workspace, which becomes the cwd.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<AbsPath>,
    /// Extra read-only bind (repeatable). SRC and DST are absolute paths.
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<Bind>,
    /// Extra read-write bind (repeatable).
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<Bind>,
    /// Add KEY=VALUE to the sandbox environment (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Memory limit of the whole sandbox, e.g. 512M or 2G (default 1G).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<ByteSize>,
    /// Most processes and threads at once, PID 1 included (default 256).
    #[arg(long, value_name = "N")]
    pub pids: Option<u32>,
    /// CPU quota in CPUs, e.g. 0.5 or 2 (default 1).
    #[arg(long, value_name = "F")]
    pub cpus: Option<CpuQuota>,
    /// Wall-clock limit, e.g. 30s or 5m; the whole sandbox is killed (exit 124).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<Timeout>,
    /// CPU time of each process, whole seconds, e.g. 60s (RLIMIT_CPU).
    #[arg(long, value_name = "DURATION")]
    pub cpu_time: Option<Timeout>,
    /// Open files per process (RLIMIT_NOFILE, default 4096).
    #[arg(long, value_name = "N")]
    pub open_files: Option<u32>,
    /// Largest file a process may write, e.g. 1G (RLIMIT_FSIZE, default 8G).
    #[arg(long, value_name = "SIZE")]
    pub file_size: Option<ByteSize>,
    /// Network mode: none (loopback only, the default) or filtered (a veth
    /// whose traffic purple-netd allows port by port; see --allow-out).
    #[arg(long, value_name = "MODE")]
    pub net: Option<NetworkMode>,
    /// Allow outbound traffic, e.g. tcp:443, udp:53, tcp:8000-8100,
    /// tcp:443@192.0.2.0/24 (repeatable; implies --net filtered).
    #[arg(long, value_name = "RULE")]
    pub allow_out: Vec<purple_common::policy::PortRule>,
    /// Allow inbound traffic to a port, e.g. tcp:8080, or publish it on a
    /// host port: tcp:8080->18080 (repeatable; implies --net filtered).
    #[arg(long, value_name = "RULE")]
    pub allow_in: Vec<purple_common::policy::InboundRule>,
    /// Write the exit report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Append this sandbox's audit events as JSON lines to FILE (a copy:
    /// the admin config decides where purple-init's own events go).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    key.parse::<purple_common::values::EnvName>()
        .map_err(|e| e.to_string())?;
    purple_common::values::check_env_value(value).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}
