//! The command-line clients of a running `serve`: `submit`, `ps`, `logs`,
//! `wait` and `kill`, over the same socket and API as any other client.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use purple_common::policy::parse::policy_to_toml;
use purple_supervisor::http::client;
use serde_json::{json, Value};

use crate::policy_args;
use crate::serve::socket;
use purple_supervisor::cli::{IdArgs, LogsArgs, PsArgs, SocketArg, SubmitArgs};

fn socket_of(arg: &SocketArg) -> PathBuf {
    socket::resolve(arg.socket.as_deref())
}

/// The reply's JSON when the status is one of `ok`; otherwise the
/// service's own message as the error.
fn call(
    socket: &SocketArg,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let response = client::request(&socket_of(socket), method, path, body)?;
    let value = response.json().unwrap_or(Value::Null);
    if !(200..300).contains(&response.status) {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        match value.get("field").and_then(Value::as_str) {
            Some(field) => bail!(
                "the service refused ({}): {field}: {message}",
                response.status
            ),
            None => bail!("the service refused ({}): {message}", response.status),
        }
    }
    Ok(value)
}

fn check_id(id: &str) -> anyhow::Result<&str> {
    uuid::Uuid::parse_str(id).with_context(|| format!("{id:?} is not a sandbox id"))?;
    Ok(id)
}

pub fn submit(args: &SubmitArgs) -> anyhow::Result<i32> {
    let run = &args.run;
    if run.report.is_some() || run.audit_log.is_some() {
        bail!("submit takes no --report or --audit-log: the service keeps the report (`purple-supervisor wait ID`)");
    }
    let policy = policy_args::effective_policy(run)?;
    // The API takes the policy file's schema as JSON; the TOML form of the
    // effective policy is exactly that schema.
    let table: toml::Table =
        toml::from_str(&policy_to_toml(&policy)).context("converting the policy")?;
    let policy = serde_json::to_value(table).context("converting the policy")?;
    let reply = call(
        &args.socket,
        "POST",
        "/v1/sandboxes",
        Some(&json!({ "argv": run.command, "policy": policy })),
    )?;
    let id = reply
        .get("id")
        .and_then(Value::as_str)
        .context("the service's reply has no id")?;
    println!("{id}");
    Ok(0)
}

pub fn ps(args: &PsArgs) -> anyhow::Result<i32> {
    let reply = call(&args.socket, "GET", "/v1/sandboxes", None)?;
    if args.json {
        println!("{reply}");
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36}  {:<12}  {:>4}  {:<24}  COMMAND",
        "ID", "STATUS", "EXIT", "CREATED"
    )?;
    for sandbox in reply
        .get("sandboxes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |key| sandbox.get(key).and_then(Value::as_str).unwrap_or("-");
        let exit = sandbox
            .get("exit_code")
            .and_then(Value::as_i64)
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let command = sandbox
            .get("argv")
            .and_then(Value::as_array)
            .map(|argv| {
                argv.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:<36}  {:<12}  {exit:>4}  {:<24}  {command}",
            text("id"),
            text("status"),
            text("created_at")
        )?;
    }
    Ok(0)
}

pub fn logs(args: &LogsArgs) -> anyhow::Result<i32> {
    let id = check_id(&args.id)?;
    let follow = if args.follow { "?follow=1" } else { "" };
    let path = format!("/v1/sandboxes/{id}/output{follow}");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut truncated = false;
    client::stream_lines(&socket_of(&args.socket), &path, |line| {
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if let (Some(stream), Some(data)) = (
            value.get("stream").and_then(Value::as_str),
            value.get("data").and_then(Value::as_str),
        ) {
            let bytes = engine
                .decode(data)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if stream == "stderr" {
                std::io::stderr().write_all(&bytes)?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            }
        } else if value.get("end").is_some() {
            truncated = value.get("truncated").and_then(Value::as_bool) == Some(true);
        }
        Ok(())
    })?;
    if truncated {
        eprintln!("purple: the output was longer than the service keeps (--max-output); the rest was dropped");
    }
    Ok(0)
}

/// Exits with the sandbox's exit code, or 125 when it has none (killed
/// before it started, or never started).
pub fn wait(args: &IdArgs) -> anyhow::Result<i32> {
    let id = check_id(&args.id)?;
    loop {
        let reply = call(
            &args.socket,
            "GET",
            &format!("/v1/sandboxes/{id}/wait?timeout=600"),
            None,
        )?;
        let status = reply.get("status").and_then(Value::as_str).unwrap_or("");
        if matches!(status, "completed" | "failed" | "killed" | "timeout") {
            let code = reply
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok());
            if status != "completed" {
                eprintln!("purple: {id}: {status}");
            }
            return Ok(code.unwrap_or(purple_common::report::EXIT_PURPLE_FAILED));
        }
    }
}

pub fn kill(args: &IdArgs) -> anyhow::Result<i32> {
    let id = check_id(&args.id)?;
    let reply = call(&args.socket, "DELETE", &format!("/v1/sandboxes/{id}"), None)?;
    let status = reply
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    println!("{id} {status}");
    Ok(0)
}
