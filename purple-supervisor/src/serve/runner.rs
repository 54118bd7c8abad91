//! One sandbox of `serve`, on its own thread: open the host paths as the
//! user, start purple-init with pipes for the standard streams, send the
//! request exactly as `run` does, follow purple-init's replies, and hand
//! the ending to the manager. Pipe readers run on their own threads so a
//! full pipe never waits on the manager or on an API client.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use purple_common::protocol::{InitReply, SandboxRequest};
use purple_common::report::ExitReport;

use super::manager::{Job, Manager};
use super::output::{OutputLog, Stream};
use crate::host_paths;
use crate::launcher::{self, InheritedStdio, InitProcess};

/// Largest read from a pipe at once (and so the largest chunk kept).
const READ_CHUNK: usize = 64 * 1024;
/// How long the output may trail the report. Every writer is inside the
/// sandbox, which is gone when the report comes, so only a reader that is
/// still draining the kernel's pipe buffer can be behind; the bound keeps a
/// surprise from holding the reservation.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub fn run(manager: &Arc<Manager>, id: &str, argv: Vec<String>, job: Job, output: &Arc<OutputLog>) {
    let dequeued = Instant::now();
    let ending = start_and_follow(manager, id, argv, job, output, dequeued);
    if !output.wait_streams_closed(OUTPUT_DRAIN_LIMIT) {
        output.append(
            Stream::Stderr,
            b"purple: serve: the output pipes stayed open after the sandbox ended; output may be incomplete\n",
        );
    }
    manager.finish(id, ending);
}

fn start_and_follow(
    manager: &Manager,
    id: &str,
    argv: Vec<String>,
    job: Job,
    output: &Arc<OutputLog>,
    dequeued: Instant,
) -> Result<ExitReport, String> {
    if manager.kill_requested(id) {
        return Err("killed before it started".to_owned());
    }
    // As in `run`: the host paths are opened as the user, and purple-init
    // receives only the descriptors.
    let opened = host_paths::open_all(&job.policy).map_err(|e| e.to_string())?;
    let request = SandboxRequest {
        policy: job.policy,
        argv,
        mounts: opened.mounts.clone(),
        user_name: crate::user_name(),
        audit_log: false,
    };
    launcher::check_request_size(&request).map_err(|e| e.to_string())?;
    let mut process = InitProcess::spawn(
        &manager.config().init,
        InheritedStdio::Pipes {
            stdin: job.stdin.is_some(),
        },
    )
    .map_err(|e| e.to_string())?;
    let (stdin, stdout, stderr) = process.take_stdio();
    if let Some(pipe) = stdout {
        drain(pipe, Stream::Stdout, output);
    }
    if let Some(pipe) = stderr {
        drain(pipe, Stream::Stderr, output);
    }
    if let (Some(pipe), Some(bytes)) = (stdin, job.stdin) {
        feed(pipe, bytes);
    }
    if let Some(report) = process
        .send_request(&request, &opened.raw_fds())
        .map_err(|e| e.to_string())?
    {
        return Ok(report);
    }
    drop(opened);
    manager.attach_stop(id, process.stop_handle());
    let reply = loop {
        match process.next_reply() {
            Ok(InitReply::Started(started)) => {
                manager.mark_running(id, started.usage, dequeued.elapsed());
            }
            Ok(InitReply::Finished(report)) => break Ok(*report),
            Err(e) => break Err(e),
        }
    };
    process.finish(reply).map_err(|e| e.to_string())
}

/// Reads one pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(mut pipe: R, stream: Stream, output: &Arc<OutputLog>) {
    output.open_stream();
    let log = Arc::clone(output);
    let spawned = std::thread::Builder::new()
        .name(format!("sandbox-{}", stream.name()))
        .spawn(move || {
            let mut buffer = vec![0u8; READ_CHUNK];
            loop {
                match pipe.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => log.append(stream, buffer.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            log.close_stream();
        });
    if spawned.is_err() {
        // The pipe was moved into the closure that never ran, and is closed
        // with it: the command sees EPIPE rather than blocking forever.
        output.close_stream();
    }
}

/// Writes the request's stdin bytes and then closes the pipe (end of file
/// for the command). A command that exits without reading gets EPIPE here,
/// which is not an error of the sandbox.
fn feed(mut pipe: std::process::ChildStdin, bytes: Vec<u8>) {
    let _ = std::thread::Builder::new()
        .name("sandbox-stdin".to_owned())
        .spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
}
