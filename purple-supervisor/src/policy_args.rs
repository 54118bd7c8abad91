//! The effective policy of a `run`: the policy file (or the built-in
//! default) with the command-line flags applied on top, validated again.

use std::path::Path;

use purple_common::policy::parse::{format_diagnostics, parse_policy_bytes};
use purple_common::policy::{NetworkMode, Policy};
use purple_common::values::EnvName;

use purple_supervisor::cli::RunArgs;

#[derive(Debug, thiserror::Error)]
pub enum PolicyArgsError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {path} is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge { path: String },
    /// Already formatted as FILE:LINE:COL: message lines.
    #[error("{0}")]
    Invalid(String),
    #[error("the policy with the command-line flags applied is invalid: {0}")]
    InvalidWithFlags(String),
}

/// A policy larger than this is refused before it is parsed.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Reads and parses a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyArgsError> {
    use std::io::Read;
    let read_err = |source| PolicyArgsError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(PolicyArgsError::TooLarge {
            path: path.display().to_string(),
        });
    }
    parse_policy_bytes(&bytes).map_err(|diags| {
        PolicyArgsError::Invalid(
            format_diagnostics(&path.display().to_string(), &diags)
                .trim_end()
                .to_owned(),
        )
    })
}

pub fn effective_policy(args: &RunArgs) -> Result<Policy, PolicyArgsError> {
    let mut policy = match &args.policy {
        Some(path) => load_file(path)?,
        None => Policy::default(),
    };
    let fs = &mut policy.filesystem;
    if let Some(workspace) = &args.workspace {
        fs.workspace = Some(workspace.clone());
    }
    fs.read_only.extend(args.ro_bind.iter().cloned());
    fs.read_write.extend(args.bind.iter().cloned());
    for (key, value) in &args.env {
        let key: EnvName = key
            .parse()
            .map_err(|e: purple_common::values::ValueError| {
                PolicyArgsError::InvalidWithFlags(e.0)
            })?;
        policy.env.insert(key, value.clone());
    }
    let res = &mut policy.resources;
    res.memory = args.memory.or(res.memory);
    res.pids = args.pids.or(res.pids);
    res.cpus = args.cpus.or(res.cpus);
    res.timeout = args.timeout.or(res.timeout);
    res.cpu_time = args.cpu_time.or(res.cpu_time);
    res.open_files = args.open_files.or(res.open_files);
    res.file_size = args.file_size.or(res.file_size);
    if let Some(mode) = args.net {
        policy.network.mode = mode;
        if mode == NetworkMode::None {
            policy.network.allow_in.clear();
            policy.network.allow_out.clear();
        }
    }
    // A rule on the command line asks for the filtered network; with an
    // explicit `--net none` it is a contradiction that validation reports.
    if !args.allow_out.is_empty() || !args.allow_in.is_empty() {
        if args.net.is_none() {
            policy.network.mode = NetworkMode::Filtered;
        }
        policy
            .network
            .allow_out
            .extend(args.allow_out.iter().cloned());
        policy
            .network
            .allow_in
            .extend(args.allow_in.iter().cloned());
    }
    policy.validate().map_err(|problems| {
        PolicyArgsError::InvalidWithFlags(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(policy)
}
