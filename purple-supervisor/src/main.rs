//! purple-supervisor: the command people run. Unprivileged: it parses and
//! validates the policy, opens host paths as the user, and asks the setuid
//! purple-init to build and run the sandbox.

mod clients;
mod doctor;
mod host_paths;
mod launcher;
mod policy_args;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use purple_common::policy::parse::policy_to_toml;
use purple_common::policy::Policy;
use purple_common::protocol::SandboxRequest;
use purple_common::report::{ExitReport, Outcome, EXIT_PURPLE_FAILED, REPORT_SCHEMA_VERSION};

use purple_supervisor::cli::{Cli, Command, PolicyCommand, RunArgs};

fn main() -> ExitCode {
    // Before anything opens a file: a closed 0/1/2 would be reused by the
    // next open and handed to the sandbox as a standard stream.
    if let Err(e) = ensure_standard_fds_open() {
        return fail(&e);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_PURPLE_FAILED as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let code = match cli.command {
        Command::Run(args) => run(&args),
        Command::Policy(PolicyCommand::Check { file }) => match policy_args::load_file(&file) {
            Ok(_) => Ok(0),
            Err(policy_args::PolicyArgsError::Invalid(lines)) => {
                println!("{lines}");
                Ok(1)
            }
            Err(e) => Err(anyhow::Error::new(e)),
        },
        Command::Policy(PolicyCommand::Show { policy }) => show_policy(policy.as_deref()),
        Command::Doctor => Ok(doctor::run()),
        Command::Serve(args) => serve::run(&args),
        Command::Submit(args) => clients::submit(&args),
        Command::Ps(args) => clients::ps(&args),
        Command::Logs(args) => clients::logs(&args),
        Command::Wait(args) => clients::wait(&args),
        Command::Kill(args) => clients::kill(&args),
    };
    match code {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_PURPLE_FAILED as u8)),
        Err(e) => fail(&e),
    }
}

/// Purple's own failures: one line on stderr (one per policy error), exit 125.
fn fail(e: &anyhow::Error) -> ExitCode {
    // A policy with several errors gives one line per error, each complete.
    for line in error_text(e).lines() {
        eprintln!("purple: {line}");
    }
    ExitCode::from(EXIT_PURPLE_FAILED as u8)
}

/// The error and its causes in one string. Errors that embed their cause
/// in their own message would otherwise print it twice.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn ensure_standard_fds_open() -> anyhow::Result<()> {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            let null = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            )
            .context("opening /dev/null for a closed standard stream")?;
            if null != fd {
                nix::unistd::dup2(null, fd).context("dup2 /dev/null")?;
                let _ = nix::unistd::close(null);
            }
        }
    }
    Ok(())
}

fn show_policy(path: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let policy = match path {
        Some(p) => policy_args::load_file(p)?,
        None => Policy::default(),
    };
    print!("{}", policy_to_toml(&policy));
    Ok(0)
}

/// `run`, with the report written on every ending once the command line
/// is parsed, a refusal by the supervisor itself included.
fn run(args: &RunArgs) -> anyhow::Result<i32> {
    match run_sandbox(args) {
        Ok(code) => Ok(code),
        Err(e) => {
            // One id for the report and the audit event of this refusal.
            let sandbox_id = uuid::Uuid::new_v4().to_string();
            if let Some(path) = &args.report {
                let report = ExitReport {
                    schema_version: REPORT_SCHEMA_VERSION,
                    sandbox_id: sandbox_id.clone(),
                    command: args.command.clone(),
                    status: Outcome::Refused,
                    exit_code: EXIT_PURPLE_FAILED,
                    signal: None,
                    wall_time_ms: 0,
                    message: Some(error_text(&e).replace('\n', "; ")),
                    isolation: None,
                    usage: None,
                    limit_events: Default::default(),
                    limit_hit: None,
                };
                if let Err(write_error) = write_report(path, &report) {
                    return Err(e.context(write_error.to_string()));
                }
            }
            audit_refusal(args, &sandbox_id, &error_text(&e));
            Err(e)
        }
    }
}

fn run_sandbox(args: &RunArgs) -> anyhow::Result<i32> {
    // Step 1: the effective policy, validated, before anything is opened.
    let policy = policy_args::effective_policy(args)?;
    // Step 2: host paths opened as the user; init receives only the fds.
    let opened = host_paths::open_all(&policy)?;
    // The caller's copy of the audit trail, opened as the caller; it goes
    // to purple-init as the last descriptor.
    let audit_log = args.audit_log.as_deref().map(open_audit_log).transpose()?;
    let init = launcher::find_init()?;
    let request = SandboxRequest {
        policy,
        argv: args.command.clone(),
        mounts: opened.mounts.clone(),
        user_name: user_name(),
        audit_log: audit_log.is_some(),
    };
    let mut fds = opened.raw_fds();
    fds.extend(audit_log.as_ref().map(std::os::fd::AsRawFd::as_raw_fd));
    // Step 3: purple-init does the rest and answers with the report.
    let report = launcher::run_sandbox(&init, &request, &fds)?;
    drop(opened);
    explain(&report);
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    Ok(report.exit_code)
}

/// One line on stderr when Purple, not the command, decided the ending
/// (a limit that ended the run included: `purple: killed: memory limit
/// 256 MiB reached`); nothing when the command ended on its own.
fn explain(report: &ExitReport) {
    let Some(message) = &report.message else {
        return;
    };
    match report.status {
        Outcome::Exited | Outcome::Signaled if report.limit_hit.is_none() => {}
        Outcome::Exited
        | Outcome::Signaled
        | Outcome::Oom
        | Outcome::SeccompViolation
        | Outcome::Timeout
        | Outcome::Interrupted
        | Outcome::NotFound
        | Outcome::NotExecutable
        | Outcome::Refused
        | Outcome::SetupFailed => eprintln!("purple: {message}"),
    }
}

/// `--audit-log FILE`: appended to (created 0600, its directory too), as
/// the caller.
fn open_audit_log(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("--audit-log: creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("--audit-log: opening {}", path.display()))
}

/// A refusal by the supervisor itself (purple-init never ran, or never
/// answered): one `sandbox.refused` event, to the caller's `--audit-log`
/// and to the system log (best effort: the caller could suppress this copy
/// anyway; purple-init's own events are the trusted record).
fn audit_refusal(args: &RunArgs, sandbox_id: &str, message: &str) {
    use purple_common::audit::{AuditEvent, EventKind, Sink};
    let uid = nix::unistd::getuid().as_raw();
    let event = AuditEvent::new(
        EventKind::SandboxRefused,
        "purple-supervisor",
        sandbox_id,
        uid,
        &user_name(),
    )
    .with_command(&args.command)
    .with("reason", "supervisor")
    .with("message", message.replace('\n', "; "));
    if let Some(path) = &args.audit_log {
        if let Ok(file) = open_audit_log(path) {
            if let Ok(mut sink) = Sink::json_descriptor(file.into()) {
                let _ = sink.write(&event);
            }
        }
    }
    let socket = std::path::Path::new(purple_common::audit::DEFAULT_SYSLOG_SOCKET);
    if let Ok(mut sink) = Sink::syslog(socket, syslog::Facility::LOG_AUTHPRIV, "purple-supervisor")
    {
        let _ = sink.write(&event);
    }
}

fn write_report(path: &std::path::Path, report: &ExitReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("encoding the exit report")?;
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("writing the report to {}", path.display()))?;
    file.write_all(json.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .with_context(|| format!("writing the report to {}", path.display()))
}

/// The caller's login name, for the sandbox's passwd entry (cosmetic: the
/// uid comes from the kernel). Read from /etc/passwd directly rather than
/// through NSS, so the release build can be linked statically and start-up
/// never waits on a directory service; accounts found only through NSS
/// (LDAP, sssd) are named `u<uid>`.
pub(crate) fn user_name() -> String {
    purple_common::audit::user_name_of(nix::unistd::getuid().as_raw())
}
