#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `purple-supervisor serve`, the SandboxManager API (docs/api.md), driven
//! over its unix socket: the lifecycle through the API and the command-line
//! clients, stdin, following output, refusals of bad requests, timeouts,
//! the pool and its queue, the output cap, shutdown (SIGTERM and SIGKILL),
//! an unprivileged service and its socket's protection, and a load test of
//! 200 mixed sandboxes through a pool of 16 that must never exceed its
//! budget and must leave nothing behind.
//!
//! Each test starts its own service on a socket in a temporary directory
//! (`tests/support/serve.rs`); dropping it sends SIGTERM to that process
//! alone. On the host these tests only read /proc and the cgroup trees,
//! create files in their own temporary directories, and signal processes
//! they started themselves (by pid). The tests take turns (`serial()`), so
//! the "nothing left behind" counts compare exactly with the count before.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use purple_tests::serve::*;
use purple_tests::*;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// The sandbox uid of a root caller (host `nobody`).
const NOBODY: u32 = 65534;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn f64_at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {v}"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not an unsigned integer in {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// The sandbox's processes (`sleep MARK`) are gone, at most `limit` later.
fn assert_no_sleep(mark: &str, limit: Duration, what: &str) {
    let gone = wait_until(limit, || processes_with_argv(&["sleep", mark]).is_empty());
    assert!(
        gone,
        "{what}: `sleep {mark}` still runs on the host (pids {:?})",
        processes_with_argv(&["sleep", mark])
    );
}

/// `sleep MARK` is running on the host (the sandbox really started it).
fn assert_sleep_runs(mark: &str, what: &str) {
    let seen = wait_until(Duration::from_secs(30), || {
        !processes_with_argv(&["sleep", mark]).is_empty()
    });
    assert!(seen, "{what}: `sleep {mark}` never showed up on the host");
}

/// The sum of a metric's samples (every label set), from Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    metric_samples(text, name).iter().map(|(_, v)| v).sum()
}

/// A metric's samples: (labels, value).
fn metric_samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match key.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let value: f64 = value.parse().ok()?;
            (metric == name).then(|| (labels.to_owned(), value))
        })
        .collect()
}

fn metric_with(text: &str, name: &str, label: &str) -> Option<f64> {
    metric_samples(text, name)
        .into_iter()
        .find(|(l, _)| l.split(',').any(|p| p == label))
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------
// 1. The lifecycle, through the API and the command-line clients
// ---------------------------------------------------------------------------

#[test]
fn lifecycle_through_the_api_and_the_cli() {
    if !require_root("lifecycle_through_the_api_and_the_cli") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &[]);
    let argv = json!(["sh", "-c", "echo hi; echo err >&2; exit 3"]);
    let id = serve.submit(&json!({ "argv": argv }));
    let done = serve.wait(&id);
    let ctx = format!("{done:#}\n{}", serve.log());
    assert_eq!(done["id"], id.as_str(), "{ctx}");
    assert_eq!(done["status"], "completed", "{ctx}");
    assert_eq!(done["exit_code"], 3, "{ctx}");
    assert_eq!(done["argv"], argv, "{ctx}");
    assert_eq!(done["report"]["exit_code"], 3, "{ctx}");
    assert_eq!(done["report"]["status"], "exited", "{ctx}");
    for key in ["created_at", "started_at", "finished_at"] {
        let t = done[key].as_str().unwrap_or_default();
        assert!(
            t.len() >= 20 && (t.ends_with('Z') || t.ends_with("+00:00")),
            "{key} is not an RFC 3339 UTC time: {t:?}\n{ctx}"
        );
    }
    assert_eq!(
        done["output"],
        json!({ "stdout_bytes": 3, "stderr_bytes": 4, "kept_bytes": 7, "truncated": false }),
        "{ctx}"
    );
    // No policy: the defaults (1G, 1 CPU) are reserved and enforced.
    assert_eq!(u64_at(&done, "/reserved/memory_bytes"), 1 << 30, "{ctx}");
    assert!(close(f64_at(&done, "/reserved/cpus"), 1.0), "{ctx}");
    assert_eq!(
        u64_at(&done, "/report/isolation/limits/memory_bytes"),
        1 << 30,
        "the reserved memory is not the enforced limit\n{ctx}"
    );
    assert_eq!(
        u64_at(&done, "/report/isolation/limits/millicpus"),
        1000,
        "the reserved CPU quota is not the enforced one\n{ctx}"
    );

    let out = serve.output(&id);
    assert_eq!(out.stdout, b"hi\n", "{out:?}");
    assert_eq!(out.stderr, b"err\n", "{out:?}");
    assert_eq!(
        out.end,
        json!({ "end": true, "status": "completed", "exit_code": 3, "truncated": false })
    );
    let reply = serve.call("GET", &format!("/v1/sandboxes/{id}/output"), None);
    assert_eq!(reply.status, 200, "{}", reply.show());
    assert_eq!(
        reply.header("content-type"),
        Some("application/x-ndjson"),
        "{}",
        reply.show()
    );

    let list = serve.get_json("/v1/sandboxes");
    let entry = list["sandboxes"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert_eq!(entry["status"], "completed", "{list}");
    assert_eq!(entry["exit_code"], 3, "{list}");
    assert_eq!(entry["argv"], argv, "{list}");

    // The command-line clients, over the same socket.
    let submitted = serve.cli("submit", &["--", "true"]);
    let id2 = ok_stdout(&submitted).trim().to_owned();
    assert!(
        is_uuid(&id2),
        "submit printed {id2:?}\n{}",
        show(&submitted)
    );
    let waited = serve.cli("wait", &[&id2]);
    assert_eq!(
        waited.status.code(),
        Some(0),
        "wait {id2}\n{}",
        show(&waited)
    );
    let waited = serve.cli("wait", &[&id]);
    assert_eq!(
        waited.status.code(),
        Some(3),
        "wait exits with the sandbox's exit code\n{}",
        show(&waited)
    );
    let ps = serve.cli("ps", &[]);
    let listing = ok_stdout(&ps);
    assert!(
        listing.contains(&id) && listing.contains(&id2),
        "ps lists neither or not both:\n{}",
        show(&ps)
    );
    let logs = serve.cli("logs", &[&id]);
    assert_eq!(ok_stdout(&logs), "hi\n", "{}", show(&logs));
    assert!(stderr(&logs).contains("err\n"), "{}", show(&logs));

    // kill: the status becomes killed and no process is left.
    let mark = marker(100);
    let id3 = serve.submit_argv(&["sleep", &mark]);
    serve.wait_status(&id3, "running");
    assert_sleep_runs(&mark, "before kill");
    let killed = serve.cli("kill", &[&id3]);
    assert!(killed.status.success(), "kill {id3}\n{}", show(&killed));
    let after = serve.get(&id3);
    assert_eq!(after["status"], "killed", "{after:#}\n{}", serve.log());
    assert_no_sleep(&mark, Duration::from_secs(10), "after kill");

    // Submission order.
    let order: Vec<String> = serve.get_json("/v1/sandboxes")["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order, vec![id, id2, id3], "not in submission order");
}

// ---------------------------------------------------------------------------
// 2. stdin
// ---------------------------------------------------------------------------

#[test]
fn stdin_text_and_base64_reach_the_command() {
    if !require_root("stdin_text_and_base64_reach_the_command") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &[]);
    let text = serve.submit(&json!({ "argv": ["cat"], "stdin": "hello\nwörld\n" }));
    // Every byte value, and more than a pipe holds at once.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let binary = serve.submit(&json!({ "argv": ["cat"], "stdin_base64": b64(&bytes) }));
    let none = serve.submit_argv(&["cat"]);
    for (id, want) in [
        (&text, "hello\nwörld\n".as_bytes()),
        (&binary, &bytes[..]),
        (&none, b""),
    ] {
        let done = serve.wait(id);
        assert_eq!(done["status"], "completed", "{done:#}\n{}", serve.log());
        assert_eq!(done["exit_code"], 0, "{done:#}");
        let out = serve.output(id);
        assert!(
            out.stdout == want,
            "stdin of {id}: the command read {} bytes, not the {} given (first difference at {:?})",
            out.stdout.len(),
            want.len(),
            out.stdout.iter().zip(want).position(|(a, b)| a != b)
        );
        assert!(out.stderr.is_empty(), "{}", out.stderr_text());
    }
}

// ---------------------------------------------------------------------------
// 3. Following output
// ---------------------------------------------------------------------------

#[test]
fn follow_delivers_lines_while_the_command_runs() {
    if !require_root("follow_delivers_lines_while_the_command_runs") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &[]);
    // The command writes one line, then blocks until the test, having seen
    // that line, creates `go` in the workspace: no timing involved.
    let ws = private_dir(NOBODY, NOBODY);
    let id = serve.submit(&json!({
        "argv": ["sh", "-c",
            "echo one; while [ ! -e /workspace/go ]; do sleep 0.05; done; echo two; echo three >&2"],
        "workspace": ws.path().to_str().unwrap(),
        "policy": { "resources": { "timeout": "60s" } },
    }));
    let mut out = SandboxOutput::default();
    let mut status_at_first_line = None;
    serve.stream(&format!("/v1/sandboxes/{id}/output?follow=1"), |line| {
        out.add_line(line);
        if status_at_first_line.is_none() && out.lines == 1 {
            status_at_first_line = Some(serve.status(&id));
            std::fs::write(ws.path().join("go"), b"").unwrap();
        }
        true
    });
    assert_eq!(
        status_at_first_line.as_deref(),
        Some("running"),
        "the first line of output did not arrive while the command ran (output: {out:?})"
    );
    assert_eq!(out.stdout_text(), "one\ntwo\n", "{out:?}");
    assert_eq!(out.stderr_text(), "three\n", "{out:?}");
    assert_eq!(out.end["end"], true, "{out:?}");
    assert_eq!(out.end["status"], "completed", "{out:?}");
    assert_eq!(out.end["exit_code"], 0, "{out:?}");

    // `logs -f` on a finished sandbox prints it all and returns.
    let logs = serve.cli("logs", &["-f", &id]);
    assert_eq!(ok_stdout(&logs), "one\ntwo\n", "{}", show(&logs));
}

// ---------------------------------------------------------------------------
// 4. Refusals, and clients that do not read
// ---------------------------------------------------------------------------

/// A bad request: what it is, its bytes, the status, the `field` and a
/// word the message must hold.
type Refusal<'a> = (&'a str, Vec<u8>, u16, Option<&'a str>, Option<&'a str>);

fn post(body: &[u8]) -> Vec<u8> {
    request_bytes(
        "POST",
        "/v1/sandboxes",
        &["Content-Type: application/json"],
        body,
    )
}

#[test]
fn bad_requests_are_refused_and_the_service_goes_on() {
    if !require_root("bad_requests_are_refused_and_the_service_goes_on") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(
        Caller::Root,
        &["--max-body", "64K", "--max-memory", "2G", "--max-cpus", "2"],
    );
    let big_stdin = "x".repeat(100 * 1024);
    let big_header = format!("X-Big: {}", "h".repeat(17 * 1024));
    let many_headers: Vec<String> = (0..70).map(|i| format!("X-H{i}: {i}")).collect();
    let many: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    // (what, request, status, field, a word the message must hold)
    let cases: Vec<Refusal> = vec![
        ("malformed JSON", post(br#"{"argv": ["true""#), 400, None, None),
        ("no argv", post(b"{}"), 400, None, None),
        (
            "unknown top-level field",
            post(br#"{"argv":["true"],"colour":"purple"}"#),
            400,
            None,
            Some("colour"),
        ),
        (
            "unknown policy key",
            post(br#"{"argv":["true"],"policy":{"resources":{"memroy":"1G"}}}"#),
            400,
            None,
            Some("memroy"),
        ),
        (
            "invalid policy value",
            post(br#"{"argv":["true"],"policy":{"resources":{"memory":"lots"}}}"#),
            400,
            Some("policy.resources.memory"),
            None,
        ),
        ("empty argv", post(br#"{"argv":[]}"#), 400, Some("argv"), None),
        (
            "stdin and stdin_base64",
            post(br#"{"argv":["cat"],"stdin":"a","stdin_base64":"YQ=="}"#),
            400,
            None,
            None,
        ),
        (
            "stdin_base64 not base64",
            post(br#"{"argv":["cat"],"stdin_base64":"%%%"}"#),
            400,
            Some("stdin_base64"),
            None,
        ),
        (
            "body over --max-body",
            post(json!({ "argv": ["cat"], "stdin": big_stdin }).to_string().as_bytes()),
            413,
            None,
            None,
        ),
        (
            "memory larger than the whole pool",
            post(br#"{"argv":["true"],"policy":{"resources":{"memory":"4G"}}}"#),
            400,
            Some("policy.resources.memory"),
            None,
        ),
        (
            "cpus larger than the whole pool",
            post(br#"{"argv":["true"],"policy":{"resources":{"cpus":8}}}"#),
            400,
            Some("policy.resources.cpus"),
            None,
        ),
        (
            "POST without Content-Length",
            b"POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
            411,
            None,
            None,
        ),
        (
            "chunked request body",
            b"POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n{\"argv\":[\"true\"]\r\n1\r\n}\r\n0\r\n\r\n".to_vec(),
            411,
            None,
            None,
        ),
        (
            "headers over 16 KiB",
            request_bytes("GET", "/v1/pool", &[big_header.as_str()], b""),
            431,
            None,
            None,
        ),
        (
            "more than 64 header lines",
            request_bytes("GET", "/v1/pool", &many, b""),
            431,
            None,
            None,
        ),
        (
            "unknown path",
            request_bytes("GET", "/v1/nowhere", &[], b""),
            404,
            None,
            None,
        ),
        (
            "unknown sandbox",
            request_bytes(
                "GET",
                "/v1/sandboxes/00000000-0000-4000-8000-000000000000",
                &[],
                b"",
            ),
            404,
            None,
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, status, field, word) in &cases {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let reply = serve.raw(request);
            let body = reply.assert_error(*status, *field, what);
            if let Some(word) = word {
                assert!(
                    body["error"].as_str().unwrap_or_default().contains(word),
                    "{what}: the message does not name {word:?}: {body}"
                );
            }
        }));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    // A known path with another method: 405 with Allow.
    for (method, path, allowed) in [
        ("PUT", "/v1/pool", &["GET"][..]),
        ("DELETE", "/v1/sandboxes", &["GET", "POST"][..]),
    ] {
        let reply = serve.raw(&request_bytes(method, path, &[], b""));
        if reply.status != 405 || !reply.json()["error"].is_string() {
            failures.push(format!(
                "{method} {path}: expected 405 + error, got {}",
                reply.show()
            ));
            continue;
        }
        let allow = reply.header("allow").unwrap_or_default().to_owned();
        if !allowed.iter().all(|m| allow.contains(m)) {
            failures.push(format!(
                "{method} {path}: Allow {allow:?} lacks {allowed:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} refusal(s) wrong:\n{}\n{}",
        failures.len(),
        failures.join("\n\n"),
        serve.log()
    );
    // Nothing refused was created, and the service still serves.
    let list = serve.get_json("/v1/sandboxes");
    assert_eq!(list["sandboxes"], json!([]), "{list}");
    let id = serve.submit(&json!({ "argv": ["sh", "-c", "echo still here"] }));
    let done = serve.wait(&id);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(serve.output(&id).stdout_text(), "still here\n");
}

#[test]
fn clients_that_do_not_read_hold_only_their_own_connection() {
    if !require_root("clients_that_do_not_read_hold_only_their_own_connection") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &[]);
    const CHATTY: u64 = 8_000_000;
    let chatty = serve.submit_argv(&["head", "-c", &CHATTY.to_string(), "/dev/zero"]);
    let follow = request_bytes(
        "GET",
        &format!("/v1/sandboxes/{chatty}/output?follow=1"),
        &[],
        b"",
    );
    // Four followers that never read, and four that vanish at once.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = connect(serve.socket());
        std::io::Write::write_all(&mut s, &follow).unwrap();
        stalled.push(s);
        let mut gone = connect(serve.socket());
        std::io::Write::write_all(&mut gone, &follow).unwrap();
        drop(gone);
    }
    let other = serve.submit(&json!({ "argv": ["sh", "-c", "echo ok"] }));
    let done = serve.wait(&other);
    assert_eq!(done["status"], "completed", "{done:#}\n{}", serve.log());
    assert_eq!(serve.output(&other).stdout_text(), "ok\n");
    let done = serve.wait(&chatty);
    assert_eq!(done["status"], "completed", "{done:#}\n{}", serve.log());
    assert_eq!(done["exit_code"], 0, "{done:#}");
    assert_eq!(u64_at(&done, "/output/stdout_bytes"), CHATTY, "{done:#}");
    assert_eq!(done["output"]["truncated"], false, "{done:#}");
    // A reader that does read gets everything, the stalled ones still open.
    let out = serve.output(&chatty);
    assert_eq!(out.stdout.len() as u64, CHATTY);
    assert!(out.stdout.iter().all(|b| *b == 0));
    drop(stalled);
    let released = wait_until(Duration::from_secs(10), || {
        serve.pool()["in_use"]["sandboxes"] == 0
    });
    assert!(released, "reservations still held: {}", serve.pool());
}

// ---------------------------------------------------------------------------
// 5. Timeout
// ---------------------------------------------------------------------------

#[test]
fn the_policy_timeout_ends_a_sandbox() {
    if !require_root("the_policy_timeout_ends_a_sandbox") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &[]);
    let mark = marker(30);
    let id = serve.submit(&json!({
        "argv": ["sleep", mark],
        "policy": { "resources": { "timeout": "1s" } },
    }));
    let done = serve.wait(&id);
    let ctx = format!("{done:#}\n{}", serve.log());
    assert_eq!(done["status"], "timeout", "{ctx}");
    assert_eq!(done["exit_code"], 124, "{ctx}");
    assert_eq!(done["report"]["status"], "timeout", "{ctx}");
    assert_eq!(done["report"]["limit_hit"], "timeout", "{ctx}");
    assert_no_sleep(&mark, Duration::from_secs(10), "after the timeout");
    assert_eq!(serve.output(&id).end["status"], "timeout");
}

// ---------------------------------------------------------------------------
// 6. The pool and its queue
// ---------------------------------------------------------------------------

fn sized(argv: &[&str], memory: &str, cpus: f64) -> Value {
    json!({ "argv": argv, "policy": { "resources": { "memory": memory, "cpus": cpus } } })
}

fn assert_in_use(pool: &Value, sandboxes: u64, memory: u64, cpus: f64, what: &str) {
    assert_eq!(
        u64_at(pool, "/in_use/sandboxes"),
        sandboxes,
        "{what}: {pool}"
    );
    assert_eq!(
        u64_at(pool, "/in_use/memory_bytes"),
        memory,
        "{what}: {pool}"
    );
    assert!(close(f64_at(pool, "/in_use/cpus"), cpus), "{what}: {pool}");
}

#[test]
fn the_pool_reserves_queues_in_order_and_refuses_a_full_queue() {
    if !require_root("the_pool_reserves_queues_in_order_and_refuses_a_full_queue") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(
        Caller::Root,
        &[
            "--max-sandboxes",
            "4",
            "--max-memory",
            "512M",
            "--max-cpus",
            "2",
            "--max-queue",
            "2",
            "--default-memory",
            "128M",
            "--default-cpus",
            "0.5",
        ],
    );
    let pool = serve.pool();
    assert_eq!(pool["max_sandboxes"], 4, "{pool}");
    assert_eq!(u64_at(&pool, "/max_memory_bytes"), 512 * MIB, "{pool}");
    assert!(close(f64_at(&pool, "/max_cpus"), 2.0), "{pool}");
    assert_eq!(pool["max_queue"], 2, "{pool}");
    assert_eq!(pool["queued"], 0, "{pool}");
    assert_in_use(&pool, 0, 0, 0.0, "idle");

    // A holds 384M; B (256M) does not fit and waits; C (64M) would fit but
    // never overtakes B; D finds the queue full.
    let mark = marker(100);
    let a = serve.submit(&sized(&["sleep", &mark], "384M", 0.5));
    let running = serve.wait_status(&a, "running");
    assert_eq!(u64_at(&running, "/reserved/memory_bytes"), 384 * MIB);
    for key in ["memory_bytes", "memory_peak_bytes", "cpu_ms", "processes"] {
        let v = &running["usage"][key];
        assert!(
            v.is_null() || v.is_u64(),
            "usage.{key} of a running sandbox: {running:#}"
        );
    }
    assert!(running["usage"]["network"].is_null(), "{running:#}");
    assert_in_use(&serve.pool(), 1, 384 * MIB, 0.5, "A running");
    let b = serve.submit(&sized(&["sh", "-c", "echo b"], "256M", 0.5));
    let c = serve.submit(&sized(&["sh", "-c", "echo c"], "64M", 0.5));
    let b_now = serve.get(&b);
    assert_eq!(b_now["status"], "queued", "{b_now:#}");
    assert_eq!(b_now["queue_position"], 0, "{b_now:#}");
    assert_eq!(
        u64_at(&b_now, "/reserved/memory_bytes"),
        256 * MIB,
        "{b_now:#}"
    );
    assert!(b_now["started_at"].is_null(), "{b_now:#}");
    let c_now = serve.get(&c);
    assert_eq!(
        c_now["status"], "queued",
        "C fits the pool but must not overtake B\n{c_now:#}"
    );
    assert_eq!(c_now["queue_position"], 1, "{c_now:#}");
    let pool = serve.pool();
    assert_eq!(pool["queued"], 2, "{pool}");
    assert_in_use(&pool, 1, 384 * MIB, 0.5, "B and C queued");
    let metrics = serve.metrics();
    assert_eq!(
        metric_sum(&metrics, "purple_queue_length"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "purple_pool_sandboxes"),
        1.0,
        "{metrics}"
    );
    let d = serve.call("POST", "/v1/sandboxes", Some(&json!({ "argv": ["true"] })));
    d.assert_error(429, None, "a full queue");

    // Freeing A starts B and C.
    let killed = serve.call("DELETE", &format!("/v1/sandboxes/{a}"), None);
    assert_eq!(killed.status, 200, "{}", killed.show());
    assert_eq!(killed.json()["status"], "killed", "{}", killed.show());
    assert_no_sleep(&mark, Duration::from_secs(10), "after DELETE");
    for (id, want) in [(&b, "b\n"), (&c, "c\n")] {
        let done = serve.wait(id);
        assert_eq!(done["status"], "completed", "{done:#}\n{}", serve.log());
        assert_eq!(serve.output(id).stdout_text(), want);
    }
    // DELETE of a finished sandbox changes nothing.
    let again = serve.call("DELETE", &format!("/v1/sandboxes/{b}"), None);
    assert_eq!(again.status, 200, "{}", again.show());
    assert_eq!(again.json()["status"], "completed", "{}", again.show());

    // A queued sandbox that is deleted leaves the queue as killed.
    let mark2 = marker(100);
    let big = serve.submit(&sized(&["sleep", &mark2], "512M", 0.5));
    serve.wait_status(&big, "running");
    let waiting = serve.submit_argv(&["true"]);
    assert_eq!(serve.status(&waiting), "queued");
    let gone = serve.call("DELETE", &format!("/v1/sandboxes/{waiting}"), None);
    assert_eq!(gone.status, 200, "{}", gone.show());
    let gone = gone.json();
    assert_eq!(gone["status"], "killed", "{gone:#}");
    assert!(gone["started_at"].is_null(), "{gone:#}");
    assert_eq!(serve.pool()["queued"], 0);
    serve.call("DELETE", &format!("/v1/sandboxes/{big}"), None);
    assert_no_sleep(&mark2, Duration::from_secs(10), "after DELETE");

    // No resources asked: --default-memory and --default-cpus, reserved
    // and enforced.
    let plain = serve.submit_argv(&["true"]);
    let done = serve.wait(&plain);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        u64_at(&done, "/reserved/memory_bytes"),
        128 * MIB,
        "{done:#}"
    );
    assert!(close(f64_at(&done, "/reserved/cpus"), 0.5), "{done:#}");
    assert_eq!(
        u64_at(&done, "/report/isolation/limits/memory_bytes"),
        128 * MIB,
        "{done:#}"
    );
    assert_eq!(
        u64_at(&done, "/report/isolation/limits/millicpus"),
        500,
        "{done:#}"
    );

    let released = wait_until(Duration::from_secs(10), || {
        let p = serve.pool();
        p["in_use"]["sandboxes"] == 0 && p["queued"] == 0
    });
    assert!(released, "reservations not released: {}", serve.pool());
    assert_in_use(&serve.pool(), 0, 0, 0.0, "at the end");
}

// ---------------------------------------------------------------------------
// 7. The output cap
// ---------------------------------------------------------------------------

#[test]
fn output_past_the_cap_is_dropped_and_the_sandbox_completes() {
    if !require_root("output_past_the_cap_is_dropped_and_the_sandbox_completes") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::Root, &["--max-output", "1M"]);
    let id = serve.submit_argv(&[
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2",
    ]);
    let done = serve.wait(&id);
    let ctx = format!("{done:#}\n{}", serve.log());
    assert_eq!(done["status"], "completed", "{ctx}");
    assert_eq!(done["exit_code"], 0, "{ctx}");
    assert_eq!(u64_at(&done, "/output/stdout_bytes"), 3_000_000, "{ctx}");
    assert_eq!(u64_at(&done, "/output/stderr_bytes"), 5, "{ctx}");
    assert_eq!(done["output"]["truncated"], true, "{ctx}");
    let kept = u64_at(&done, "/output/kept_bytes");
    assert!(kept > 0 && kept <= MIB, "kept_bytes {kept}\n{ctx}");
    let out = serve.output(&id);
    assert_eq!(
        (out.stdout.len() + out.stderr.len()) as u64,
        kept,
        "the output endpoint gave other than kept_bytes"
    );
    assert!(out.stdout.iter().all(|b| *b == b'x'), "stdout is not all x");
    assert_eq!(out.end["truncated"], true, "{:?}", out.end);
    assert_eq!(out.end["status"], "completed", "{:?}", out.end);
}

// ---------------------------------------------------------------------------
// 8. Shutdown
// ---------------------------------------------------------------------------

#[test]
fn sigterm_stops_the_sandboxes_and_removes_the_socket() {
    if !require_root("sigterm_stops_the_sandboxes_and_removes_the_socket") {
        return;
    }
    let _serial = serial();
    let before = leftovers();
    let cgroups = CgroupParent::new("serve-term");
    let mut serve = Serve::start_with(Caller::Root, &["--max-sandboxes", "1"], &cgroups.env());
    let mark = marker(100);
    let queued_mark = marker(100);
    let running = serve.submit_argv(&["sleep", &mark]);
    serve.wait_status(&running, "running");
    let queued = serve.submit_argv(&["sleep", &queued_mark]);
    assert_eq!(serve.status(&queued), "queued");
    assert_sleep_runs(&mark, "before SIGTERM");
    let socket = serve.socket().to_owned();
    let status = serve.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "serve after SIGTERM: {status}\n{}",
        serve.log()
    );
    assert!(!socket.exists(), "the socket is still there after SIGTERM");
    assert_no_sleep(&mark, Duration::from_secs(5), "after SIGTERM");
    assert!(processes_with_argv(&["sleep", &queued_mark]).is_empty());
    let clean = wait_until(Duration::from_secs(10), || leftovers() == before);
    assert!(
        clean,
        "left behind after SIGTERM: (purple-init processes, purple mounts) {:?}, before {before:?}",
        leftovers()
    );
    assert!(
        cgroups.created(),
        "the sandbox never used the test's cgroup parent"
    );
    let no_cgroups = wait_until(Duration::from_secs(10), || cgroups.children().is_empty());
    assert!(no_cgroups, "cgroups left: {:?}", cgroups.children());
}

#[test]
fn sigkill_leaves_no_sandbox_and_the_next_serve_replaces_the_socket() {
    if !require_root("sigkill_leaves_no_sandbox_and_the_next_serve_replaces_the_socket") {
        return;
    }
    let _serial = serial();
    let before = leftovers();
    let cgroups = CgroupParent::new("serve-kill");
    let serve = Serve::start_with(Caller::Root, &[], &cgroups.env());
    let mark = marker(100);
    let id = serve.submit_argv(&["sleep", &mark]);
    serve.wait_status(&id, "running");
    assert_sleep_runs(&mark, "before SIGKILL");
    let dir = serve.kill_hard();
    assert!(
        dir.path().join("s.sock").exists(),
        "the killed service's socket file should still be there (it is the stale socket)"
    );
    assert_no_sleep(
        &mark,
        Duration::from_secs(15),
        "purple-init should end its sandbox when serve is SIGKILLed",
    );
    let clean = wait_until(Duration::from_secs(15), || leftovers() == before);
    assert!(
        clean,
        "left behind after SIGKILL: (purple-init processes, purple mounts) {:?}, before {before:?}",
        leftovers()
    );
    let no_cgroups = wait_until(Duration::from_secs(15), || cgroups.children().is_empty());
    assert!(
        no_cgroups,
        "cgroups left after SIGKILL: {:?}",
        cgroups.children()
    );

    // A new service on the same path replaces the stale socket.
    let serve = Serve::start_in(Caller::Root, dir, &[], &cgroups.env());
    let id = serve.submit_argv(&["true"]);
    let done = serve.wait(&id);
    assert_eq!(done["status"], "completed", "{done:#}\n{}", serve.log());
    assert_eq!(
        serve.get_json("/v1/sandboxes")["sandboxes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

// ---------------------------------------------------------------------------
// 9. An unprivileged service, and its socket
// ---------------------------------------------------------------------------

/// `purple-supervisor ARGS` as `uid`, a user that is neither root nor the
/// service's.
fn cli_as(uid: u32, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(Caller::User.supervisor());
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .uid(uid)
        .gid(uid);
    run_bounded(cmd, CLI_LIMIT)
}

#[test]
fn an_unprivileged_service_runs_sandboxes_for_its_user_only() {
    if !require_root("an_unprivileged_service_runs_sandboxes_for_its_user_only") {
        return;
    }
    let _serial = serial();
    let serve = Serve::start(Caller::User, &[]);
    let id = serve.submit_argv(&["sh", "-c", "echo hi"]);
    let done = serve.wait(&id);
    let ctx = format!("{done:#}\n{}", serve.log());
    assert_eq!(done["status"], "completed", "{ctx}");
    assert_eq!(done["exit_code"], 0, "{ctx}");
    assert_eq!(
        u64_at(&done, "/report/isolation/uid_map/outside"),
        u64::from(TEST_UID),
        "{ctx}"
    );
    assert_eq!(serve.output(&id).stdout_text(), "hi\n");
    // The user's own command-line client works.
    let ps = serve.cli("ps", &[]);
    assert!(ok_stdout(&ps).contains(&id), "{}", show(&ps));

    let socket = serve.socket().to_owned();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "socket mode {:o}",
        meta.mode() & 0o7777
    );
    assert_eq!(meta.uid(), TEST_UID);
    let sock = socket.to_str().unwrap();

    // Another uid: kept out by the directory and the socket's mode...
    let other = TEST_UID + 1;
    let ps = cli_as(other, &["ps", "--socket", sock]);
    assert!(
        !ps.status.success(),
        "uid {other} listed the sandboxes:\n{}",
        show(&ps)
    );
    // ...and by the peer check, with both opened up.
    std::fs::set_permissions(serve.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ps = cli_as(other, &["ps", "--socket", sock]);
    assert!(
        !ps.status.success() && !stdout(&ps).contains(&id),
        "uid {other} used the socket once its mode let it connect (no peer check):\n{}",
        show(&ps)
    );
    let submit = cli_as(other, &["submit", "--socket", sock, "--", "true"]);
    assert!(
        !submit.status.success(),
        "uid {other} submitted:\n{}",
        show(&submit)
    );
    let list = serve.get_json("/v1/sandboxes");
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
}

// ---------------------------------------------------------------------------
// 10. Load: 200 mixed sandboxes through a pool of 16
// ---------------------------------------------------------------------------

const LOAD: usize = 200;
const CLIENTS: usize = 16;
const SLOTS: u64 = 16;
const SANDBOX_MEMORY: u64 = 256 * MIB;
const SANDBOX_CPUS: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Quick,
    Fails,
    TimesOut,
    Writes,
    Reads,
}

fn kind(i: usize) -> Kind {
    match i % 8 {
        0..=2 => Kind::Quick,
        3 | 4 => Kind::Fails,
        5 => Kind::TimesOut,
        6 => Kind::Writes,
        _ => Kind::Reads,
    }
}

/// `seq 1 N` as the command writes it (about 2.7 MB for N near 400000).
fn seq_text(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for k in 1..=n {
        s.push_str(&k.to_string());
        s.push('\n');
    }
    s.into_bytes()
}

fn stdin_of(i: usize) -> Vec<u8> {
    (0..50_000).map(|k| ((k * 7 + i) % 251) as u8).collect()
}

fn load_request(i: usize, mark: &str) -> Value {
    let resources = json!({ "memory": "256M", "cpus": SANDBOX_CPUS });
    let n = i.to_string();
    match kind(i) {
        Kind::Quick => json!({ "argv": ["true"], "policy": { "resources": resources } }),
        Kind::Fails => json!({
            "argv": ["sh", "-c", "echo fail-$0 >&2; exit 7", n],
            "policy": { "resources": resources },
        }),
        Kind::TimesOut => json!({
            "argv": ["sleep", mark],
            "policy": { "resources": { "memory": "256M", "cpus": SANDBOX_CPUS, "timeout": "1s" } },
        }),
        Kind::Writes => json!({
            "argv": ["sh", "-c", "seq 1 $0; echo done-$1 >&2", (400_000 + i).to_string(), n],
            "policy": { "resources": resources },
        }),
        Kind::Reads => json!({
            "argv": ["sh", "-c", "cat; echo end-$0", n],
            "stdin_base64": b64(&stdin_of(i)),
            "policy": { "resources": resources },
        }),
    }
}

/// Checks sandbox `i` from its details and output; a description of what
/// is wrong, if anything.
fn check_load_result(i: usize, done: &Value, out: &SandboxOutput) -> Result<(), String> {
    let (status, code, stdout, stderr): (&str, i64, Vec<u8>, Option<Vec<u8>>) = match kind(i) {
        Kind::Quick => ("completed", 0, Vec::new(), Some(Vec::new())),
        Kind::Fails => (
            "completed",
            7,
            Vec::new(),
            Some(format!("fail-{i}\n").into_bytes()),
        ),
        // Only Purple's own lines may appear on stderr.
        Kind::TimesOut => ("timeout", 124, Vec::new(), None),
        Kind::Writes => (
            "completed",
            0,
            seq_text(400_000 + i),
            Some(format!("done-{i}\n").into_bytes()),
        ),
        Kind::Reads => {
            let mut want = stdin_of(i);
            want.extend_from_slice(format!("end-{i}\n").as_bytes());
            ("completed", 0, want, Some(Vec::new()))
        }
    };
    let what = format!("sandbox #{i} ({:?}, {})", kind(i), done["id"]);
    let mut problems = Vec::new();
    if done["status"] != status {
        problems.push(format!("status {} (want {status})", done["status"]));
    }
    if done["report"]["exit_code"].as_i64() != Some(code)
        || done["exit_code"].as_i64() != Some(code)
    {
        problems.push(format!(
            "exit code {} / report {} (want {code})",
            done["exit_code"], done["report"]["exit_code"]
        ));
    }
    if done["output"]["truncated"] != false || out.end["truncated"] != false {
        problems.push(format!("truncated: {} / {}", done["output"], out.end));
    }
    if out.end["end"] != true || out.end["status"] != status {
        problems.push(format!("end line {}", out.end));
    }
    if done["output"]["stdout_bytes"].as_u64() != Some(stdout.len() as u64) {
        problems.push(format!(
            "output.stdout_bytes {} (want {})",
            done["output"]["stdout_bytes"],
            stdout.len()
        ));
    }
    if out.stdout != stdout {
        problems.push(format!(
            "stdout: {} bytes (want {}), first difference at {:?}",
            out.stdout.len(),
            stdout.len(),
            out.stdout.iter().zip(&stdout).position(|(a, b)| a != b)
        ));
    }
    match stderr {
        Some(want) if out.stderr != want => problems.push(format!(
            "stderr {:?} (want {:?})",
            out.stderr_text(),
            String::from_utf8_lossy(&want)
        )),
        None if !out.stderr_text().lines().all(|l| l.starts_with("purple:")) => {
            problems.push(format!("stderr {:?}", out.stderr_text()));
        }
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", problems.join("; ")))
    }
}

#[test]
fn load_200_mixed_sandboxes_never_exceed_the_pool() {
    if !require_root("load_200_mixed_sandboxes_never_exceed_the_pool") {
        return;
    }
    let _serial = serial();
    let before = leftovers();
    let cgroups = CgroupParent::new("serve-load");
    let max_memory = format!("{}M", SLOTS * SANDBOX_MEMORY / MIB);
    let max_cpus = format!("{}", SLOTS as f64 * SANDBOX_CPUS);
    let serve = Serve::start_with(
        Caller::Root,
        &[
            "--max-sandboxes",
            "16",
            "--max-memory",
            &max_memory,
            "--max-cpus",
            &max_cpus,
            "--max-queue",
            "256",
        ],
        &cgroups.env(),
    );
    let pool = serve.pool();
    assert_eq!(u64_at(&pool, "/max_memory_bytes"), SLOTS * SANDBOX_MEMORY);
    assert!(close(
        f64_at(&pool, "/max_cpus"),
        SLOTS as f64 * SANDBOX_CPUS
    ));
    let mark = marker(10);

    let ids: Vec<Mutex<Option<String>>> = (0..LOAD).map(|_| Mutex::new(None)).collect();
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let violations: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let done_flag = AtomicBool::new(false);
    let (mut polls, mut peak, mut peak_queue) = (0u64, 0u64, 0u64);
    std::thread::scope(|scope| {
        // The monitor: the pool never exceeds its budget.
        let monitor = scope.spawn(|| {
            let (mut polls, mut peak, mut peak_queue) = (0u64, 0u64, 0u64);
            while !done_flag.load(Ordering::SeqCst) {
                let p = serve.pool();
                polls += 1;
                let sandboxes = u64_at(&p, "/in_use/sandboxes");
                let memory = u64_at(&p, "/in_use/memory_bytes");
                let cpus = f64_at(&p, "/in_use/cpus");
                let queued = u64_at(&p, "/queued");
                peak = peak.max(sandboxes);
                peak_queue = peak_queue.max(queued);
                if sandboxes > SLOTS
                    || memory > u64_at(&p, "/max_memory_bytes")
                    || cpus > f64_at(&p, "/max_cpus") + 1e-6
                    || queued > u64_at(&p, "/max_queue")
                    || sandboxes * SANDBOX_MEMORY != memory
                {
                    violations.lock().unwrap().push(p.to_string());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (polls, peak, peak_queue)
        });
        // Submit all 200 from 16 clients at once...
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..CLIENTS {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= LOAD {
                        break;
                    }
                    let reply = serve.call("POST", "/v1/sandboxes", Some(&load_request(i, &mark)));
                    if reply.status == 201 {
                        *ids[i].lock().unwrap() = reply.json()["id"].as_str().map(str::to_owned);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("submitting #{i}: {}", reply.show()));
                    }
                });
            }
        });
        // ...then wait for each and check it, from 16 clients.
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..CLIENTS {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= LOAD {
                        break;
                    }
                    let Some(id) = ids[i].lock().unwrap().clone() else {
                        continue;
                    };
                    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let done = serve.wait(&id);
                        let out = serve.output(&id);
                        check_load_result(i, &done, &out)
                    }));
                    let problem = match checked {
                        Ok(Ok(())) => continue,
                        Ok(Err(problem)) => problem,
                        Err(e) => e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default(),
                    };
                    failures.lock().unwrap().push(problem);
                });
            }
        });
        done_flag.store(true, Ordering::SeqCst);
        (polls, peak, peak_queue) = monitor.join().unwrap();
    });
    eprintln!(
        "load: {polls} pool polls, at most {peak} sandboxes running and {peak_queue} queued at once"
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {LOAD} sandboxes wrong (first 20):\n{}\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        serve.log()
    );
    let violations = violations.into_inner().unwrap();
    assert!(
        violations.is_empty(),
        "the pool exceeded its budget {} times (first 10):\n{}",
        violations.len(),
        violations
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(polls > 0, "the monitor never polled");

    // Afterwards: nothing reserved, nothing left.
    let released = wait_until(Duration::from_secs(10), || {
        let p = serve.pool();
        p["in_use"]["sandboxes"] == 0 && p["queued"] == 0
    });
    let pool = serve.pool();
    assert!(released, "reservations still held: {pool}");
    assert_in_use(&pool, 0, 0, 0.0, "after the load");
    let list = serve.get_json("/v1/sandboxes");
    assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(LOAD));
    let metrics = serve.metrics();
    let finished = metric_sum(&metrics, "purple_sandboxes_finished_total");
    assert!(
        close(finished, LOAD as f64),
        "purple_sandboxes_finished_total sums to {finished}\n{metrics}"
    );
    let timeouts = LOAD / 8;
    assert_eq!(
        metric_with(
            &metrics,
            "purple_sandboxes_finished_total",
            "status=\"timeout\""
        ),
        Some(timeouts as f64),
        "{metrics}"
    );
    assert_eq!(
        metric_with(
            &metrics,
            "purple_sandboxes_finished_total",
            "status=\"completed\""
        ),
        Some((LOAD - timeouts) as f64),
        "{metrics}"
    );
    assert!(
        close(
            metric_sum(&metrics, "purple_sandboxes_submitted_total"),
            LOAD as f64
        ),
        "{metrics}"
    );
    assert!(processes_with_argv(&["sleep", &mark]).is_empty());
    let clean = wait_until(Duration::from_secs(15), || leftovers() == before);
    assert!(
        clean,
        "left behind after the load: (purple-init processes, purple mounts) {:?}, before {before:?}; purple-init pids {:?}",
        leftovers(),
        live_inits()
    );
    assert!(
        cgroups.created(),
        "the sandboxes never used the test's cgroup parent"
    );
    let no_cgroups = wait_until(Duration::from_secs(15), || cgroups.children().is_empty());
    assert!(
        no_cgroups,
        "{} sandbox cgroups left: {:?}",
        cgroups.children().len(),
        cgroups.children().iter().take(5).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// 11. A purple-init that dies without a report
// ---------------------------------------------------------------------------

/// The pids of `parent`'s children (every thread's).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[test]
fn a_purple_init_killed_mid_run_releases_its_reservation() {
    if !require_root("a_purple_init_killed_mid_run_releases_its_reservation") {
        return;
    }
    let _serial = serial();
    let before = leftovers();
    let cgroups = CgroupParent::new("serve-init-crash");
    let serve = Serve::start_with(Caller::Root, &["--max-sandboxes", "1"], &cgroups.env());
    let mark = marker(100);
    let id = serve.submit_argv(&["sleep", &mark]);
    serve.wait_status(&id, "running");
    // A second request waits for the only slot the first one holds.
    let queued = serve.submit_argv(&["true"]);
    assert_eq!(serve.status(&queued), "queued");
    // The service's only child is the running sandbox's purple-init (this
    // test started it, through the service): SIGKILL it by its pid.
    let inits = children_of(serve.pid());
    assert_eq!(inits.len(), 1, "expected one purple-init child: {inits:?}");
    signal(inits[0], libc::SIGKILL);
    let done = serve.wait(&id);
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("without a report")),
        "{done:#}"
    );
    // The reservation came back: the queued sandbox ran.
    let next = serve.wait(&queued);
    assert_eq!(next["status"], "completed", "{next:#}");
    let pool = serve.get_json("/v1/pool");
    assert_eq!(pool["in_use"]["sandboxes"], 0, "{pool:#}");
    // The sandbox died with its purple-init (PR_SET_PDEATHSIG).
    assert_no_sleep(
        &mark,
        Duration::from_secs(15),
        "the sandbox should die with its purple-init",
    );
    // Its cgroup is swept by the next sandbox's stale sweep (the queued
    // one ran after it), so nothing is left.
    let clean = wait_until(Duration::from_secs(15), || {
        leftovers() == before && cgroups.children().is_empty()
    });
    assert!(
        clean,
        "left behind: {:?} (before {before:?}), cgroups {:?}",
        leftovers(),
        cgroups.children()
    );
}
