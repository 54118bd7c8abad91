//! The routes of docs/api.md: each HTTP request becomes a call on the
//! [`Manager`], each answer JSON. Request bodies are parsed and validated
//! here, completely, before the manager sees them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use purple_common::policy::parse::parse_policy;
use purple_common::policy::Policy;
use purple_common::protocol::{SandboxRequest, MAX_REQUEST_BYTES};
use purple_common::values::{check_env_value, AbsPath, EnvName};
use purple_supervisor::http::server::{ChunkedWriter, Reply, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::manager::{Manager, Submission, SubmitError};
use super::metrics;
use super::pool::PoolError;

/// The longest `wait` a client can ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How long `DELETE` waits for purple-init's report.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// Output bytes per NDJSON line.
const LINE_BYTES: usize = 64 * 1024;
/// How often a follower wakes up when nothing was written.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// `POST /v1/sandboxes`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    argv: Vec<String>,
    #[serde(default)]
    policy: Option<serde_json::Value>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    stdin_base64: Option<String>,
}

/// A request the service refuses: the message and the field at fault.
#[derive(Debug)]
struct Invalid {
    message: String,
    field: Option<String>,
}

impl Invalid {
    fn at(field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn response(&self) -> Response {
        Response::error(400, &self.message, self.field.as_deref())
    }
}

pub fn handle(manager: &Arc<Manager>, request: Request) -> Reply {
    let segments: Vec<&str> = request
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = request.method.as_str();
    let full = |response: Response| Reply::Full(response);
    match segments.as_slice() {
        ["v1", "sandboxes"] => match method {
            "POST" => full(create(manager, &request.body)),
            "GET" => full(Response::json(200, &json!({ "sandboxes": manager.list() }))),
            _ => full(not_allowed("GET, POST")),
        },
        ["v1", "sandboxes", id] => match method {
            "GET" => full(found(manager.details(id))),
            "DELETE" => full(found(manager.kill(id, KILL_WAIT))),
            _ => full(not_allowed("GET, DELETE")),
        },
        ["v1", "sandboxes", id, "wait"] => match method {
            "GET" => full(wait(manager, id, &request)),
            _ => full(not_allowed("GET")),
        },
        ["v1", "sandboxes", id, "output"] => match method {
            "GET" => output(manager, id, &request),
            _ => full(not_allowed("GET")),
        },
        ["v1", "pool"] => match method {
            "GET" => full(Response::json(200, &manager.pool_view())),
            _ => full(not_allowed("GET")),
        },
        ["metrics"] => match method {
            "GET" => full(Response::text(
                200,
                "text/plain; version=0.0.4",
                metrics::render(&manager.snapshot()).into_bytes(),
            )),
            _ => full(not_allowed("GET")),
        },
        _ => full(Response::error(
            404,
            &format!("no such endpoint: {}", request.path),
            None,
        )),
    }
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, &format!("method not allowed; use {allow}"), None)
        .with_header("Allow", allow)
}

fn found(details: Option<super::manager::Details>) -> Response {
    match details {
        Some(d) => Response::json(200, &d),
        None => Response::error(
            404,
            "no such sandbox (or it finished longer ago than --keep-finished)",
            None,
        ),
    }
}

fn create(manager: &Arc<Manager>, body: &[u8]) -> Response {
    let submission = match parse_create(body) {
        Ok(s) => s,
        Err(invalid) => return invalid.response(),
    };
    match manager.submit(submission) {
        Ok(id) => Response::json(201, &json!({ "id": id, "status": "queued" }))
            .with_header("Location", &format!("/v1/sandboxes/{id}")),
        Err(SubmitError::Pool(e @ PoolError::LargerThanPool { field, .. })) => {
            Response::error(400, &e.to_string(), Some(field))
        }
        Err(SubmitError::Pool(e @ PoolError::QueueFull(_))) => {
            Response::error(429, &e.to_string(), None)
        }
        Err(e @ SubmitError::StdinBacklog { .. }) => Response::error(429, &e.to_string(), None),
        Err(e @ SubmitError::ShuttingDown) => Response::error(503, &e.to_string(), None),
    }
}

fn parse_create(body: &[u8]) -> Result<Submission, Invalid> {
    let body: CreateBody = serde_json::from_slice(body).map_err(|e| Invalid {
        message: format!("the body is not a valid sandbox request: {e}"),
        field: None,
    })?;
    if body.argv.is_empty() {
        return Err(Invalid::at(
            "argv",
            "argv is empty; give the command and its arguments",
        ));
    }
    if let Some(i) = body.argv.iter().position(|a| a.contains('\0')) {
        return Err(Invalid::at(
            &format!("argv[{i}]"),
            "an argument contains a NUL byte",
        ));
    }
    let mut policy = match &body.policy {
        Some(value) => {
            // The conversion below costs a multiple of its input: the
            // policy alone must fit the request frame purple-init reads.
            let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
            if size > MAX_REQUEST_BYTES {
                return Err(Invalid::at(
                    "policy",
                    format!("the policy is {size} bytes; at most {MAX_REQUEST_BYTES}"),
                ));
            }
            policy_from_json(value)?
        }
        None => Policy::default(),
    };
    for (key, value) in &body.env {
        let field = format!("env.{key}");
        let name: EnvName = key
            .parse()
            .map_err(|e: purple_common::values::ValueError| Invalid::at(&field, e.0))?;
        check_env_value(value).map_err(|e| Invalid::at(&field, e.0))?;
        policy.env.insert(name, value.clone());
    }
    if let Some(workspace) = &body.workspace {
        let path: AbsPath = workspace
            .parse()
            .map_err(|e: purple_common::values::ValueError| Invalid::at("workspace", e.0))?;
        policy.filesystem.workspace = Some(path);
    }
    policy.validate().map_err(|problems| Invalid {
        message: problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        field: None,
    })?;
    let stdin = match (body.stdin, body.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(Invalid::at("stdin", "give stdin or stdin_base64, not both"))
        }
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(encoded)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| Invalid::at("stdin_base64", format!("not base64: {e}")))?,
        ),
        (None, None) => None,
    };
    // What purple-init would refuse as too large is refused now, before
    // it is queued and kept.
    let request = SandboxRequest {
        policy,
        argv: body.argv,
        mounts: Vec::new(),
        user_name: String::new(),
        audit_log: false,
    };
    crate::launcher::check_request_size(&request).map_err(|e| Invalid {
        message: format!("argv, env and policy together are too large: {e}"),
        field: None,
    })?;
    Ok(Submission {
        argv: request.argv,
        policy: request.policy,
        stdin,
    })
}

/// The policy object goes through the policy file's own parser (as the
/// TOML it stands for), so the API accepts exactly the file's schema and
/// answers with the same messages.
fn policy_from_json(value: &serde_json::Value) -> Result<Policy, Invalid> {
    let serde_json::Value::Object(_) = value else {
        return Err(Invalid::at("policy", "the policy must be an object"));
    };
    let table = match json_to_toml(value, "policy")? {
        toml::Value::Table(table) => table,
        _ => return Err(Invalid::at("policy", "the policy must be an object")),
    };
    let text = toml::to_string(&table).map_err(|e| {
        Invalid::at(
            "policy",
            format!("the policy cannot be written as TOML: {e}"),
        )
    })?;
    parse_policy(&text).map_err(|diagnostics| {
        // Each message starts with the dotted key it is about.
        let field = diagnostics.first().and_then(|d| {
            let (key, _) = d.message.split_once(": ")?;
            (!key.contains(' ')).then(|| format!("policy.{key}"))
        });
        Invalid {
            message: diagnostics
                .iter()
                .map(|d| d.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
            field,
        }
    })
}

fn json_to_toml(value: &serde_json::Value, at: &str) -> Result<toml::Value, Invalid> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => {
            return Err(Invalid::at(
                at,
                "null is not a policy value; leave the key out",
            ))
        }
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => return Err(Invalid::at(at, "the number is out of range")),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| json_to_toml(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_to_toml(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, Invalid>>()?,
        ),
    })
}

fn wait(manager: &Manager, id: &str, request: &Request) -> Response {
    let limit = match request.query_param("timeout") {
        None => MAX_WAIT,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds).min(MAX_WAIT),
            Err(_) => {
                return Response::error(400, "timeout must be whole seconds", Some("timeout"))
            }
        },
    };
    found(manager.wait(id, limit))
}

fn output(manager: &Arc<Manager>, id: &str, request: &Request) -> Reply {
    let Some(log) = manager.output_of(id) else {
        return Reply::Full(found(None));
    };
    let follow = matches!(request.query_param("follow"), Some("1" | "true"));
    let manager = Arc::clone(manager);
    let id = id.to_owned();
    Reply::Stream {
        status: 200,
        content_type: "application/x-ndjson".to_owned(),
        body: Box::new(move |writer: &mut ChunkedWriter<'_>| {
            let engine = base64::engine::general_purpose::STANDARD;
            let mut next = 0;
            let complete = loop {
                let batch = log.read_from(next, follow.then_some(FOLLOW_POLL));
                next = batch.next;
                for (stream, bytes) in &batch.chunks {
                    for piece in bytes.chunks(LINE_BYTES) {
                        let line = json!({ "stream": stream.name(), "data": engine.encode(piece) });
                        writer.chunk(format!("{line}\n").as_bytes())?;
                    }
                }
                if batch.complete || !follow {
                    break batch.complete;
                }
            };
            let (status, exit_code) = manager
                .status_of(&id)
                .map_or((None, None), |(s, code)| (Some(s), code));
            let end = json!({
                "end": complete,
                "status": status,
                "exit_code": exit_code,
                "truncated": log.totals().truncated,
            });
            writer.chunk(format!("{end}\n").as_bytes())?;
            Ok(())
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_json_policy_is_the_policy_file_schema() {
        let policy = policy_from_json(&json!({
            "resources": { "memory": "512M", "pids": 64, "cpus": 0.5 },
            "network": { "mode": "filtered", "allow_out": ["tcp:443"] },
            "filesystem": { "read_only": ["/opt"] },
        }))
        .unwrap();
        assert_eq!(policy.resources.memory.unwrap().bytes(), 512 << 20);
        assert_eq!(policy.resources.pids, Some(64));
        assert_eq!(policy.resources.cpus.unwrap().millicpus(), 500);
        assert_eq!(policy.network.allow_out.len(), 1);
    }

    #[test]
    fn policy_problems_name_their_key() {
        let bad = policy_from_json(&json!({ "resources": { "memory": "lots" } })).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("policy.resources.memory"));
        assert!(bad.message.contains("lots"), "{}", bad.message);
        let unknown = policy_from_json(&json!({ "resources": { "bogus": 1 } })).unwrap_err();
        assert!(unknown.message.contains("bogus"), "{}", unknown.message);
        let null = policy_from_json(&json!({ "resources": { "memory": null } })).unwrap_err();
        assert_eq!(null.field.as_deref(), Some("policy.resources.memory"));
        assert!(policy_from_json(&json!(["not", "an", "object"])).is_err());
    }

    #[test]
    fn request_bodies_are_checked_field_by_field() {
        let field = |body: serde_json::Value| {
            parse_create(body.to_string().as_bytes())
                .map(|_| ())
                .unwrap_err()
                .field
        };
        assert_eq!(field(json!({ "argv": [] })), Some("argv".to_owned()));
        assert_eq!(
            field(json!({ "argv": ["cat"], "stdin": "a", "stdin_base64": "YQ==" })),
            Some("stdin".to_owned())
        );
        assert_eq!(
            field(json!({ "argv": ["cat"], "stdin_base64": "%%%" })),
            Some("stdin_base64".to_owned())
        );
        assert_eq!(
            field(json!({ "argv": ["true"], "workspace": "relative" })),
            Some("workspace".to_owned())
        );
        assert_eq!(
            field(json!({ "argv": ["true"], "env": { "A=B": "x" } })),
            Some("env.A=B".to_owned())
        );
        let unknown = parse_create(br#"{"argv":["true"],"colour":"purple"}"#).unwrap_err();
        assert!(unknown.message.contains("colour"), "{}", unknown.message);
        assert!(parse_create(b"{not json").is_err());
        let ok =
            parse_create(br#"{"argv":["cat"],"stdin_base64":"aGk=","env":{"A":"1"}}"#).unwrap();
        assert_eq!(ok.stdin.as_deref(), Some(&b"hi"[..]));
        assert_eq!(ok.policy.env.len(), 1);
    }
}
