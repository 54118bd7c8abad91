//! The server side: requests read within [`Limits`], replies written whole
//! or streamed in chunks, and the accept loop that decides who may talk.
//!
//! Blocking I/O and one thread per connection: the service holds at most a
//! few hundred connections, and a thread that blocks on a slow client holds
//! only that client. Every limit is checked before memory is committed to
//! it, and a request the server refuses is answered (JSON, the right status)
//! before the connection closes, so a client always learns why.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::geteuid;
use serde::Serialize;

use super::wire::{has_token, is_header_value, is_token, SocketWriter};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// After refusing a request, how long and how much of the unread rest is
/// read and dropped before closing: closing a unix socket with unread data
/// makes the peer's next write fail, and a client still sending its body
/// would then miss the reply that explains why.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// How long the accept loop waits before retrying when the process is out
/// of descriptors or memory: the connections that end free them.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the request header block is larger than {max} bytes")]
    HeaderTooLarge { max: usize },
    #[error("the request has more than {max} header lines")]
    TooManyHeaders { max: usize },
    #[error("malformed request: {0}")]
    Malformed(#[source] httparse::Error),
    #[error("malformed request: the request line is incomplete")]
    IncompleteRequestLine,
    #[error("invalid request target {target:?}: {reason}")]
    BadTarget {
        target: String,
        reason: &'static str,
    },
    #[error("chunked request bodies are not accepted; send Content-Length")]
    ChunkedBody,
    #[error("a {method} request needs a Content-Length header")]
    LengthRequired { method: String },
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
    #[error("more than one Content-Length header")]
    DuplicateContentLength,
    #[error("the request body ({length} bytes) is larger than the limit of {max} bytes")]
    BodyTooLarge { length: String, max: usize },
    #[error("the connection ended in the middle of a request")]
    Truncated,
    #[error("reading the request failed: {0}")]
    Read(#[source] io::Error),
    #[error("setting a socket option failed: {0}")]
    SocketOption(#[source] io::Error),
    #[error("waiting for connections (poll) failed: {0}")]
    Poll(#[source] Errno),
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] io::Error),
    #[error("reading the peer's credentials (SO_PEERCRED) failed: {0}")]
    PeerCredentials(#[source] Errno),
}

impl ServerError {
    /// The status to answer with when the client caused the error; `None`
    /// when there is nobody to answer or nothing useful to say.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::HeaderTooLarge { .. } | Self::TooManyHeaders { .. } => Some(431),
            Self::Malformed(_)
            | Self::IncompleteRequestLine
            | Self::BadTarget { .. }
            | Self::BadContentLength(_)
            | Self::DuplicateContentLength
            | Self::Truncated => Some(400),
            Self::ChunkedBody | Self::LengthRequired { .. } => Some(411),
            Self::BodyTooLarge { .. } => Some(413),
            Self::Read(_)
            | Self::SocketOption(_)
            | Self::Poll(_)
            | Self::Accept(_)
            | Self::PeerCredentials(_) => None,
        }
    }
}

/// The bounds one connection works within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes (beyond: 431).
    pub max_header_bytes: usize,
    /// Header lines per request (beyond: 431).
    pub max_headers: usize,
    /// Request body, in bytes (beyond: 413, and the body is not read).
    pub max_body: usize,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long each read or write may take once a request has begun.
    pub io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// The protocol version a request was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// HTTP/1.0: closes after each reply unless it sends `Connection: keep-alive`,
    /// and cannot read chunked replies.
    Http10,
    /// HTTP/1.1.
    #[default]
    Http11,
}

/// A request, read whole (body included) before the handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// As sent, e.g. `GET` (methods are case-sensitive).
    pub method: String,
    /// The path without the query, percent-decoded, e.g. `/v1/sandboxes`.
    pub path: String,
    /// The query's `name=value` pairs in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header names and values as sent, in order.
    pub headers: Vec<(String, String)>,
    /// Exactly `Content-Length` bytes (empty without one).
    pub body: Vec<u8>,
    /// The protocol version of the request line.
    pub version: Version,
}

impl Request {
    /// An HTTP/1.1 request with no query, headers or body, for handler tests.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            ..Self::default()
        }
    }

    /// The first value of the query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of the header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the connection closes after this request's reply:
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    pub fn wants_close(&self) -> bool {
        let connection = |token: &str| {
            self.headers
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case("connection"))
                .any(|(_, value)| has_token(value, token))
        };
        if connection("close") {
            return true;
        }
        self.version == Version::Http10 && !connection("keep-alive")
    }
}

/// A reply sent whole, with `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers. `Content-Length`, `Transfer-Encoding` and `Connection`
    /// are the writer's to set and are dropped from here, as is any header
    /// whose name or value could not be sent as is.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Response {
    /// `status` with no body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `value` as JSON (one line, newline-terminated so `curl` output ends
    /// cleanly). A value that cannot be encoded becomes a 500 error reply.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Self::text(status, "application/json", body)
            }
            Err(err) => Self::error(500, &format!("encoding the reply failed: {err}"), None),
        }
    }

    /// The API's error shape: `{"error": message, "field": field}`, with
    /// `field` left out when no single field is at fault.
    pub fn error(status: u16, message: &str, field: Option<&str>) -> Self {
        let body = ErrorBody {
            error: message,
            field,
        };
        match serde_json::to_vec(&body) {
            Ok(mut body) => {
                body.push(b'\n');
                Self::text(status, "application/json", body)
            }
            // Two strings always encode; this branch only keeps the type total.
            Err(_) => Self::text(500, "text/plain", "internal error\n"),
        }
    }

    /// `body` with the given `Content-Type`.
    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// Adds a header, e.g. `Location` or `Allow`.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The first value of the header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What writes a streamed reply's body, given the open [`ChunkedWriter`].
/// An `Err` (the client went away, or the producer failed) ends the stream
/// and closes the connection: a half-sent chunked body cannot be repaired.
pub type StreamBody = Box<dyn FnOnce(&mut ChunkedWriter<'_>) -> io::Result<()> + Send>;

/// What a handler answers.
pub enum Reply {
    /// A reply sent whole.
    Full(Response),
    /// A reply whose body is produced while it is sent
    /// (`Transfer-Encoding: chunked`).
    Stream {
        status: u16,
        content_type: String,
        body: StreamBody,
    },
}

impl Reply {
    /// A streamed reply; `body` runs on the connection's thread.
    pub fn stream(
        status: u16,
        content_type: impl Into<String>,
        body: impl FnOnce(&mut ChunkedWriter<'_>) -> io::Result<()> + Send + 'static,
    ) -> Self {
        Self::Stream {
            status,
            content_type: content_type.into(),
            body: Box::new(body),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self::Full(response)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(response) => f.debug_tuple("Full").field(response).finish(),
            Self::Stream {
                status,
                content_type,
                ..
            } => f
                .debug_struct("Stream")
                .field("status", status)
                .field("content_type", content_type)
                .finish_non_exhaustive(),
        }
    }
}

/// Writes a reply body as it is produced: one HTTP chunk per [`chunk`]
/// call, each handed to the kernel at once so a following client sees it
/// without delay.
///
/// [`chunk`]: ChunkedWriter::chunk
pub struct ChunkedWriter<'a> {
    out: &'a mut dyn Write,
    /// False for an HTTP/1.0 client: the body is sent raw and the end of the
    /// connection marks its end.
    framed: bool,
    finished: bool,
    broken: bool,
}

impl std::fmt::Debug for ChunkedWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedWriter")
            .field("framed", &self.framed)
            .field("finished", &self.finished)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<'a> ChunkedWriter<'a> {
    /// Writes the status line and headers of a chunked reply to `out`.
    /// The server calls this itself; it is public so a handler's stream body
    /// can be tested against a `Vec<u8>`.
    pub fn start(out: &'a mut dyn Write, status: u16, content_type: &str) -> io::Result<Self> {
        Self::begin(out, status, content_type, Version::Http11, false)
    }

    fn begin(
        out: &'a mut dyn Write,
        status: u16,
        content_type: &str,
        version: Version,
        close: bool,
    ) -> io::Result<Self> {
        let framed = version == Version::Http11;
        let content_type = if is_header_value(content_type) {
            content_type
        } else {
            "application/octet-stream"
        };
        let mut head = status_line(status);
        push_header(&mut head, "Content-Type", content_type);
        if framed {
            push_header(&mut head, "Transfer-Encoding", "chunked");
        }
        if close || !framed {
            push_header(&mut head, "Connection", "close");
        }
        head.extend_from_slice(b"\r\n");
        let mut writer = Self {
            out,
            framed,
            finished: false,
            broken: false,
        };
        writer.send(&head)?;
        Ok(writer)
    }

    /// Sends `data` as one chunk. Empty slices are skipped (an empty chunk
    /// would end the body). An error means the client is gone or stopped
    /// reading for longer than the I/O timeout: stop producing.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if self.finished {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the chunked reply is already finished",
            ));
        }
        if data.is_empty() {
            return Ok(());
        }
        if !self.framed {
            return self.send(data);
        }
        let mut frame = Vec::with_capacity(data.len() + 20);
        frame.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        frame.extend_from_slice(data);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame)
    }

    /// Ends the body (the terminating zero-length chunk). Calling it again
    /// does nothing.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        if self.framed {
            self.send(b"0\r\n\r\n")?;
        }
        self.finished = true;
        self.out.flush()
    }

    /// Whether [`finish`](ChunkedWriter::finish) has completed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write of this reply failed",
            ));
        }
        let result = self.out.write_all(bytes).and_then(|()| self.out.flush());
        if result.is_err() {
            // Part of a frame may have gone out; nothing after it can be valid.
            self.broken = true;
        }
        result
    }
}

/// The reason phrase sent with `status`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => class_phrase(status),
    }
}

/// A phrase for a status without its own: the name of its class.
fn class_phrase(status: u16) -> &'static str {
    match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        _ => "Server Error",
    }
}

fn status_line(status: u16) -> Vec<u8> {
    // A status outside 100..=599 would make an unreadable status line.
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).into_bytes()
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &str) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// The whole reply as bytes, so it leaves in one write.
fn encode_response(response: &Response, close: bool, version: Version, head_only: bool) -> Vec<u8> {
    let mut out = status_line(response.status);
    for (name, value) in &response.headers {
        let reserved = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|reserved| name.eq_ignore_ascii_case(reserved));
        if !reserved && is_token(name) && is_header_value(value) {
            push_header(&mut out, name, value);
        }
    }
    push_header(&mut out, "Content-Length", &response.body.len().to_string());
    if close {
        push_header(&mut out, "Connection", "close");
    } else if version == Version::Http10 {
        push_header(&mut out, "Connection", "keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` refuse zero, which would mean "forever".
fn socket_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

/// One client connection: the socket and the bytes read but not yet used
/// (the start of a pipelined next request stays here).
struct Connection<'a> {
    stream: &'a UnixStream,
    limits: &'a Limits,
    buf: Vec<u8>,
    read_timeout: Option<Duration>,
}

/// The request line and headers, before the body is read.
struct Head {
    method: String,
    target: String,
    version: Version,
    headers: Vec<(String, String)>,
    /// Bytes of `buf` the head took.
    len: usize,
}

impl<'a> Connection<'a> {
    fn new(stream: &'a UnixStream, limits: &'a Limits) -> Self {
        Self {
            stream,
            limits,
            buf: Vec::new(),
            read_timeout: None,
        }
    }

    /// Reads more bytes into `buf`; `Ok(0)` is the end of the stream.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        let timeout = socket_timeout(timeout);
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.buf[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let read = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + read);
        result
    }

    /// The next request; `Ok(None)` when the client is done: it closed the
    /// connection or stayed idle past the idle timeout between requests.
    fn read_request(&mut self) -> Result<Option<Request>, ServerError> {
        let head = loop {
            // Blank lines between requests are allowed (RFC 9112 §2.2) and
            // must not make an idle connection look busy.
            let blank = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.drain(..blank);
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&self.buf, self.limits)? {
                    break head;
                }
            }
            let idle = self.buf.is_empty();
            let timeout = if idle {
                self.limits.idle_timeout
            } else {
                self.limits.io_timeout
            };
            match self.fill(timeout) {
                Ok(0) if idle => return Ok(None),
                Ok(0) => return Err(ServerError::Truncated),
                Ok(_) => {}
                Err(err)
                    if idle
                        && (is_timeout(&err) || err.kind() == io::ErrorKind::ConnectionReset) =>
                {
                    return Ok(None)
                }
                Err(err) => return Err(ServerError::Read(err)),
            }
        };
        self.buf.drain(..head.len);
        let (path, query) = parse_target(&head.target)?;
        let length = body_length(&head, self.limits)?;
        let expects_continue = head.version == Version::Http11
            && head.headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
            });
        if expects_continue && self.buf.len() < length {
            // The client holds its body back until told it is welcome.
            SocketWriter(self.stream)
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(ServerError::Read)?;
        }
        while self.buf.len() < length {
            match self.fill(self.limits.io_timeout) {
                Ok(0) => return Err(ServerError::Truncated),
                Ok(_) => {}
                Err(err) => return Err(ServerError::Read(err)),
            }
        }
        let body: Vec<u8> = self.buf.drain(..length).collect();
        Ok(Some(Request {
            method: head.method,
            path,
            query,
            headers: head.headers,
            body,
            version: head.version,
        }))
    }

    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        SocketWriter(self.stream).write_all(bytes)
    }

    /// Runs the handler and sends its reply; whether the connection stays open.
    fn respond(&mut self, request: Request, handler: &(dyn Fn(Request) -> Reply + Sync)) -> bool {
        let close = request.wants_close();
        let head_only = request.method == "HEAD";
        let version = request.version;
        // A handler bug must cost one reply, not the connection thread
        // without an answer. (Only in builds that unwind: the release
        // profile aborts on panic, so there a panic ends the service, and
        // purple-init then ends each sandbox.)
        let reply = catch_unwind(AssertUnwindSafe(|| handler(request))).unwrap_or_else(|_| {
            Reply::Full(Response::error(
                500,
                "internal error while handling the request",
                None,
            ))
        });
        match reply {
            Reply::Full(response) => {
                let bytes = encode_response(&response, close, version, head_only);
                self.write_all(&bytes).is_ok() && !close
            }
            Reply::Stream {
                status,
                content_type,
                body,
            } => {
                let close = close || version == Version::Http10;
                let mut out = SocketWriter(self.stream);
                let Ok(mut writer) =
                    ChunkedWriter::begin(&mut out, status, &content_type, version, close)
                else {
                    return false;
                };
                if head_only {
                    return !close;
                }
                match catch_unwind(AssertUnwindSafe(|| body(&mut writer))) {
                    Ok(Ok(())) => writer.finish().is_ok() && !close,
                    Ok(Err(_)) | Err(_) => false,
                }
            }
        }
    }

    /// Answers a request the server will not handle, then closes.
    fn refuse(&mut self, err: &ServerError) {
        let Some(status) = err.status() else {
            return;
        };
        let response = Response::error(status, &err.to_string(), None);
        if self
            .write_all(&encode_response(&response, true, Version::Http11, false))
            .is_err()
        {
            return;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + LINGER_TIME;
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.buf.clear();
            match self.fill(left) {
                Ok(0) | Err(_) => break,
                Ok(read) => dropped += read,
            }
        }
    }
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, ServerError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Err(ServerError::HeaderTooLarge {
                    max: limits.max_header_bytes,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ServerError::TooManyHeaders {
                max: limits.max_headers,
            })
        }
        Err(err) => return Err(ServerError::Malformed(err)),
    };
    if len > limits.max_header_bytes {
        return Err(ServerError::HeaderTooLarge {
            max: limits.max_header_bytes,
        });
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(ServerError::IncompleteRequestLine);
    };
    let headers = request
        .headers
        .iter()
        .map(|header| {
            (
                header.name.to_owned(),
                String::from_utf8_lossy(header.value).into_owned(),
            )
        })
        .collect();
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        },
        headers,
        len,
    }))
}

/// The body's length from the headers, refusing what the API does not
/// accept (docs/api.md, "HTTP rules").
fn body_length(head: &Head, limits: &Limits) -> Result<usize, ServerError> {
    if head
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Err(ServerError::ChunkedBody);
    }
    let mut lengths = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim());
    let Some(text) = lengths.next() else {
        if matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(ServerError::LengthRequired {
                method: head.method.clone(),
            });
        }
        return Ok(0);
    };
    // Two lengths, equal or not, are how request smuggling starts.
    if lengths.next().is_some() {
        return Err(ServerError::DuplicateContentLength);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServerError::BadContentLength(text.to_owned()));
    }
    let too_large = || ServerError::BodyTooLarge {
        length: text.to_owned(),
        max: limits.max_body,
    };
    // All digits, so a parse failure can only be an overflow.
    let length: u64 = text.parse().map_err(|_| too_large())?;
    match usize::try_from(length) {
        Ok(length) if length <= limits.max_body => Ok(length),
        _ => Err(too_large()),
    }
}

/// Splits an origin-form target (or the absolute form HTTP/1.1 servers must
/// also accept) into the decoded path and query.
fn parse_target(target: &str) -> Result<(String, Vec<(String, String)>), ServerError> {
    let bad = |reason| ServerError::BadTarget {
        target: target.to_owned(),
        reason,
    };
    let origin = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    };
    if !origin.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    let origin = origin.split_once('#').map_or(origin, |(before, _)| before);
    let (raw_path, raw_query) = origin.split_once('?').unwrap_or((origin, ""));
    let path = percent_decode(raw_path, false)
        .ok_or_else(|| bad("the path has an invalid %-escape or is not UTF-8"))?;
    let mut query = Vec::new();
    for pair in raw_query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text| {
            percent_decode(text, true)
                .ok_or_else(|| bad("the query has an invalid %-escape or is not UTF-8"))
        };
        query.push((decode(name)?, decode(value)?));
    }
    Ok((path, query))
}

fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let hex = |digit: u8| {
        char::from(digit)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut bytes = text.bytes();
    let mut out = Vec::with_capacity(text.len());
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let high = hex(bytes.next()?)?;
                let low = hex(bytes.next()?)?;
                out.push(high << 4 | low);
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// Serves one connection until the client is done, idle too long, or sends
/// something the server refuses (answered, then closed). Never panics on
/// what the client sends; I/O errors just end the connection.
pub fn serve_connection(
    stream: UnixStream,
    limits: &Limits,
    handler: &(dyn Fn(Request) -> Reply + Sync),
) {
    if stream
        .set_write_timeout(Some(socket_timeout(limits.io_timeout)))
        .is_err()
    {
        return;
    }
    let mut connection = Connection::new(&stream, limits);
    loop {
        match connection.read_request() {
            Ok(Some(request)) => {
                if !connection.respond(request, handler) {
                    return;
                }
            }
            Ok(None) => return,
            Err(err) => {
                connection.refuse(&err);
                return;
            }
        }
    }
}

/// How the accept loop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptConfig {
    /// The limits of every connection.
    pub limits: Limits,
    /// Connections served at once; beyond, a 503 reply and close.
    pub max_connections: usize,
    /// How often the loop looks at its stop flag while no one connects.
    pub poll_interval: Duration,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_connections: 512,
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// The effective uid of the process at the other end of `stream`, as it
/// was when it connected (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> Result<u32, ServerError> {
    getsockopt(stream, PeerCredentials)
        .map(|credentials| credentials.uid())
        .map_err(ServerError::PeerCredentials)
}

/// Whether a peer may use the service: the same user as the service, or
/// root (docs/api.md, "The socket").
pub fn uid_allowed(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

/// Gives a connection back to the count when its thread ends, however it ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers and closes a connection the accept loop will not serve, without
/// ever blocking the loop on it.
fn turn_away(stream: &UnixStream, status: u16, message: &str) {
    if stream.set_nonblocking(true).is_ok() {
        let response = Response::error(status, message, None);
        let _ = SocketWriter(stream).write_all(&encode_response(
            &response,
            true,
            Version::Http11,
            false,
        ));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// What answers requests: shared by every connection thread.
pub type Handler = dyn Fn(Request) -> Reply + Send + Sync;

/// [`run_accept_loop_with`] with `limits` and the default connection bound
/// and poll interval. The listener is closed when the loop returns, so
/// clients arriving during shutdown are refused at once.
pub fn run_accept_loop(
    listener: UnixListener,
    limits: &Limits,
    handler: Arc<Handler>,
    stop: &AtomicBool,
) -> Result<(), ServerError> {
    let config = AcceptConfig {
        limits: limits.clone(),
        ..AcceptConfig::default()
    };
    run_accept_loop_with(&listener, &config, handler, stop)
}

/// Accepts connections on `listener` until `stop` is set, serving each
/// allowed peer on its own (detached) thread. Returns within about
/// `config.poll_interval` of `stop` becoming true; connections already being
/// served carry on. Errors only when the listener itself fails.
///
/// The listener is switched to non-blocking mode, so that a connection that
/// vanishes between poll and accept cannot stall the loop.
pub fn run_accept_loop_with(
    listener: &UnixListener,
    config: &AcceptConfig,
    handler: Arc<Handler>,
    stop: &AtomicBool,
) -> Result<(), ServerError> {
    listener
        .set_nonblocking(true)
        .map_err(ServerError::SocketOption)?;
    let own_uid = geteuid().as_raw();
    let active = Arc::new(AtomicUsize::new(0));
    let limits = Arc::new(config.limits.clone());
    let poll_ms = u16::try_from(config.poll_interval.as_millis())
        .unwrap_or(u16::MAX)
        .max(1);
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(poll_ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(errno) => return Err(ServerError::Poll(errno)),
        }
        while !stop.load(Ordering::SeqCst) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    thread::sleep(ACCEPT_BACKOFF);
                    break;
                }
                Err(err) => return Err(ServerError::Accept(err)),
            };
            admit(stream, own_uid, config, &active, &limits, &handler);
        }
    }
    Ok(())
}

fn admit(
    stream: UnixStream,
    own_uid: u32,
    config: &AcceptConfig,
    active: &Arc<AtomicUsize>,
    limits: &Arc<Limits>,
    handler: &Arc<Handler>,
) {
    let Ok(uid) = peer_uid(&stream) else {
        return;
    };
    if !uid_allowed(uid, own_uid) {
        turn_away(
            &stream,
            403,
            &format!("uid {uid} may not use this socket; only uid {own_uid} and root may"),
        );
        return;
    }
    // Only this thread adds to the count, so checking then adding is exact.
    if active.load(Ordering::SeqCst) >= config.max_connections {
        turn_away(
            &stream,
            503,
            &format!(
                "too many connections (at most {}); try again later",
                config.max_connections
            ),
        );
        return;
    }
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    active.fetch_add(1, Ordering::SeqCst);
    let slot = ConnectionSlot(Arc::clone(active));
    let limits = Arc::clone(limits);
    let handler = Arc::clone(handler);
    // If the thread cannot start, the closure is dropped with the stream
    // and the slot: the client sees the connection close.
    let _ = thread::Builder::new()
        .name("purple-http".to_owned())
        .spawn(move || {
            let _slot = slot;
            serve_connection(stream, &limits, &*handler);
        });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::net::Shutdown;
    use std::path::Path;
    use std::sync::mpsc;

    use serde_json::{json, Value};

    use super::*;
    use crate::http::client::{Client, ClientError, ClientResponse, ReplyReader};

    const WAIT: Duration = Duration::from_secs(10);

    fn quick_limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(2),
            ..Limits::default()
        }
    }

    fn echo(request: Request) -> Reply {
        Reply::Full(Response::json(
            200,
            &json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": String::from_utf8_lossy(&request.body),
                "close": request.wants_close(),
            }),
        ))
    }

    /// Sends `input` on one end of a socket pair served by `serve_connection`,
    /// closes the sending side, and returns all the server wrote.
    fn exchange(
        input: &[u8],
        limits: Limits,
        handler: impl Fn(Request) -> Reply + Send + Sync + 'static,
    ) -> Vec<u8> {
        let (client, server) = UnixStream::pair().unwrap();
        let served = thread::spawn(move || serve_connection(server, &limits, &handler));
        let sender = client.try_clone().unwrap();
        let input = input.to_vec();
        let writer = thread::spawn(move || {
            // The server may refuse and close before reading everything.
            let _ = SocketWriter(&sender).write_all(&input);
            let _ = sender.shutdown(Shutdown::Write);
        });
        client.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match (&client).read(&mut buf) {
                Ok(0) => break,
                Ok(read) => out.extend_from_slice(&buf[..read]),
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => break,
                Err(err) => panic!("reading the replies: {err}"),
            }
        }
        writer.join().unwrap();
        served.join().unwrap();
        out
    }

    fn replies(bytes: &[u8]) -> Vec<ClientResponse> {
        let mut reader = ReplyReader::new(bytes, Path::new("test"), None);
        let mut out = Vec::new();
        while !reader.at_end().unwrap() {
            let head = reader.read_head().unwrap();
            let mut body = Vec::new();
            reader
                .read_body(&head, false, &mut |piece| {
                    body.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            out.push(ClientResponse {
                status: head.status,
                headers: head.headers,
                body,
            });
        }
        out
    }

    fn one_reply(input: &[u8], limits: Limits) -> ClientResponse {
        let mut all = replies(&exchange(input, limits, echo));
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn simple_get() {
        let reply = one_reply(
            b"GET /v1/pool HTTP/1.1\r\nHost: localhost\r\n\r\n",
            quick_limits(),
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = reply.json().unwrap();
        assert_eq!(body["method"], "GET");
        assert_eq!(body["path"], "/v1/pool");
        assert_eq!(body["close"], false);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            \r\n\
            DELETE /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
            GET /never HTTP/1.1\r\n\r\n";
        let all = replies(&exchange(input, quick_limits(), echo));
        let summary: Vec<(String, String)> = all
            .iter()
            .map(|reply| {
                let body = reply.json().unwrap();
                (
                    body["path"].as_str().unwrap().to_owned(),
                    body["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [("/a", ""), ("/b", "hello"), ("/c", "")].map(|(p, b)| (p.to_owned(), b.to_owned()))
        );
        assert_eq!(all[2].header("connection"), Some("close"));
        assert_eq!(all[0].header("connection"), None);
    }

    #[test]
    fn keep_alive_until_the_client_says_close() {
        let (client, server) = UnixStream::pair().unwrap();
        let served = thread::spawn(move || serve_connection(server, &quick_limits(), &echo));
        client.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = ReplyReader::new(&client, Path::new("test"), None);
        let read_one = |reader: &mut ReplyReader<'_, &UnixStream>| {
            let head = reader.read_head().unwrap();
            let mut body = Vec::new();
            reader
                .read_body(&head, false, &mut |piece| {
                    body.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            (head, body)
        };
        SocketWriter(&client)
            .write_all(b"GET /one HTTP/1.1\r\n\r\n")
            .unwrap();
        let (head, _) = read_one(&mut reader);
        assert_eq!(head.status, 200);
        SocketWriter(&client)
            .write_all(b"GET /two HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap();
        let (head, body) = read_one(&mut reader);
        assert_eq!(head.status, 200);
        assert!(String::from_utf8(body).unwrap().contains("/two"));
        assert!(
            reader.at_end().unwrap(),
            "the server must close after Connection: close"
        );
        served.join().unwrap();
    }

    #[test]
    fn http_1_0_closes_unless_kept_alive() {
        let twice = b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let all = replies(&exchange(twice, quick_limits(), echo));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].header("connection"), Some("close"));

        let kept = b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let all = replies(&exchange(kept, quick_limits(), echo));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].header("connection"), Some("keep-alive"));
        assert_eq!(all[1].header("connection"), Some("close"));
    }

    #[test]
    fn query_and_path_are_percent_decoded() {
        let reply = one_reply(
            b"GET /v1/sandboxes/a%20b/output?follow=1&x=a+b%26c&flag&&e=%C3%A9 HTTP/1.1\r\n\r\n",
            quick_limits(),
        );
        let body = reply.json().unwrap();
        assert_eq!(body["path"], "/v1/sandboxes/a b/output");
        assert_eq!(
            body["query"],
            json!([["follow", "1"], ["x", "a b&c"], ["flag", ""], ["e", "é"]])
        );

        let (path, query) = parse_target("http://localhost/v1/pool?x=%2B").unwrap();
        assert_eq!(path, "/v1/pool");
        assert_eq!(query, [("x".to_owned(), "+".to_owned())]);
        let request = Request {
            query,
            ..Request::new("GET", path)
        };
        assert_eq!(request.query_param("x"), Some("+"));
        assert_eq!(request.query_param("y"), None);
    }

    #[test]
    fn bad_targets_are_400() {
        for target in ["/a%zz", "/a%4", "/a%ff", "/a?x=%", "*", "v1/pool"] {
            let input = format!("GET {target} HTTP/1.1\r\n\r\n");
            let reply = one_reply(input.as_bytes(), quick_limits());
            assert_eq!(reply.status, 400, "{target}");
            assert!(reply.json().unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("request target"));
        }
    }

    #[test]
    fn refusals_answer_with_json_and_close() {
        let small = Limits {
            max_body: 1024,
            ..quick_limits()
        };
        let many_headers: String = (0..65).map(|i| format!("X-H{i}: v\r\n")).collect();
        let big_header = format!("X-Big: {}\r\n", "a".repeat(16 * 1024));
        let cases: Vec<(String, u16, &str)> = vec![
            (
                "POST /v1/sandboxes HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
                411,
                "chunked request bodies are not accepted; send Content-Length",
            ),
            ("POST /v1/sandboxes HTTP/1.1\r\n\r\n".into(), 411, "needs a Content-Length"),
            ("PUT /x HTTP/1.1\r\n\r\n".into(), 411, "needs a Content-Length"),
            (
                "POST /v1/sandboxes HTTP/1.1\r\nContent-Length: 1025\r\n\r\n".into(),
                413,
                "larger than the limit of 1024 bytes",
            ),
            (
                "POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(),
                413,
                "larger than the limit",
            ),
            (format!("GET / HTTP/1.1\r\n{big_header}\r\n"), 431, "larger than 16384 bytes"),
            (format!("GET / HTTP/1.1\r\n{many_headers}\r\n"), 431, "more than 64 header lines"),
            ("\u{1}\u{2} nonsense\r\n\r\n".into(), 400, "malformed request"),
            ("GET / HTTP/2.0\r\n\r\n".into(), 400, "malformed request"),
            (
                "POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab".into(),
                400,
                "more than one Content-Length",
            ),
            (
                "POST /x HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nabc".into(),
                400,
                "more than one Content-Length",
            ),
            ("POST /x HTTP/1.1\r\nContent-Length: 1a\r\n\r\n".into(), 400, "invalid Content-Length"),
            ("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n".into(), 400, "invalid Content-Length"),
            ("POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc".into(), 400, "in the middle of a request"),
            ("GET /x HTTP/1.1\r\nHost: x".into(), 400, "in the middle of a request"),
        ];
        for (request, status, message) in cases {
            // A valid request after the refused one must not be answered
            // (a truncated request would take it as its rest).
            let input = if message.contains("in the middle") {
                request.clone()
            } else {
                format!("{request}GET /after HTTP/1.1\r\n\r\n")
            };
            let handled = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&handled);
            let all = replies(&exchange(input.as_bytes(), small.clone(), move |request| {
                counter.fetch_add(1, Ordering::SeqCst);
                echo(request)
            }));
            let shown = request.escape_debug().to_string();
            let shown: String = shown.chars().take(120).collect();
            assert_eq!(all.len(), 1, "{shown}: {all:?}");
            let reply = &all[0];
            assert_eq!(reply.status, status, "{shown}");
            assert_eq!(reply.header("connection"), Some("close"), "{shown}");
            let body = reply.json().unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(message), "{shown}: {error}");
            assert!(body.get("field").is_none());
            assert_eq!(handled.load(Ordering::SeqCst), 0, "{shown}");
        }
    }

    #[test]
    fn an_oversized_body_is_refused_while_the_client_still_sends_it() {
        let limits = Limits {
            max_body: 1024,
            ..quick_limits()
        };
        let mut input = b"POST /x HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n".to_vec();
        input.resize(input.len() + 4 * 1024 * 1024, b'x');
        let all = replies(&exchange(&input, limits, echo));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, 413);
    }

    #[test]
    fn expect_continue_gets_an_interim_reply() {
        let (client, server) = UnixStream::pair().unwrap();
        let served = thread::spawn(move || serve_connection(server, &quick_limits(), &echo));
        client.set_read_timeout(Some(WAIT)).unwrap();
        SocketWriter(&client)
            .write_all(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            .unwrap();
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut got = vec![0; interim.len()];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(got, interim);
        SocketWriter(&client).write_all(b"hello").unwrap();
        let mut rest = Vec::new();
        (&client).read_to_end(&mut rest).unwrap();
        let all = replies(&rest);
        assert_eq!(all[0].json().unwrap()["body"], "hello");
        served.join().unwrap();
    }

    #[test]
    fn head_replies_have_no_body() {
        let out = exchange(
            b"HEAD /x HTTP/1.1\r\nConnection: close\r\n\r\n",
            quick_limits(),
            echo,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("Content-Length: 0\r\n"), "{text}");
    }

    #[test]
    fn an_idle_connection_is_closed() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(100),
            ..quick_limits()
        };
        let (client, server) = UnixStream::pair().unwrap();
        let served = thread::spawn(move || serve_connection(server, &limits, &echo));
        client.set_read_timeout(Some(WAIT)).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        (&client).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(started.elapsed() < WAIT);
        served.join().unwrap();
    }

    #[test]
    fn a_handler_panic_is_a_500() {
        let all = replies(&exchange(
            b"GET /boom HTTP/1.1\r\n\r\nGET /fine HTTP/1.1\r\n\r\n",
            quick_limits(),
            |request: Request| {
                if request.path == "/boom" {
                    panic!("handler bug (this panic is expected by the test)");
                }
                echo(request)
            },
        ));
        assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 200]);
    }

    #[test]
    fn response_helpers() {
        let error = Response::error(400, "bad size", Some("policy.resources.memory"));
        assert_eq!(error.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&error.body).unwrap();
        assert_eq!(
            body,
            json!({"error": "bad size", "field": "policy.resources.memory"})
        );
        let body: Value = serde_json::from_slice(&Response::error(404, "no", None).body).unwrap();
        assert_eq!(body, json!({"error": "no"}));

        let response = Response::text(200, "text/plain", "hi")
            .with_header("Content-Length", "99")
            .with_header("X-Evil", "a\r\nInjected: yes")
            .with_header("Bad Name", "v")
            .with_header("Location", "/v1/sandboxes/1");
        let text =
            String::from_utf8(encode_response(&response, false, Version::Http11, false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nLocation: /v1/sandboxes/1\r\nContent-Length: 2\r\n\r\nhi"
        );
        let odd = encode_response(&Response::new(42), true, Version::Http11, false);
        assert!(odd.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    }

    #[test]
    fn reason_phrases() {
        for status in [
            200, 201, 400, 403, 404, 405, 409, 411, 413, 429, 431, 500, 503,
        ] {
            assert_ne!(reason_phrase(status), class_phrase(status), "{status}");
        }
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(499), "Client Error");
    }

    #[test]
    fn chunked_writer_frames_each_chunk() {
        let mut out = Vec::new();
        let mut writer = ChunkedWriter::start(&mut out, 200, "application/x-ndjson").unwrap();
        writer.chunk(b"{\"a\":1}\n").unwrap();
        writer.chunk(b"").unwrap();
        writer.chunk(&[b'x'; 26]).unwrap();
        writer.finish().unwrap();
        writer.finish().unwrap();
        assert!(writer.is_finished());
        assert!(writer.chunk(b"late").is_err());
        let expected = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\n{{\"a\":1}}\n\r\n1a\r\n{}\r\n0\r\n\r\n",
            "x".repeat(26)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn http_1_0_streams_are_unframed() {
        let out = exchange(b"GET /s HTTP/1.0\r\n\r\n", quick_limits(), |_| {
            Reply::stream(200, "text/plain", |writer: &mut ChunkedWriter<'_>| {
                writer.chunk(b"one ")?;
                writer.chunk(b"two")
            })
        });
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("\r\nConnection: close\r\n\r\none two"),
            "{text}"
        );
        assert!(!text.contains("chunked"));
    }

    /// A stream whose client vanishes: `chunk` must fail, not block.
    fn stream_until_error(
        chunks_sent: mpsc::Sender<io::Result<usize>>,
    ) -> impl Fn(Request) -> Reply + Send + Sync {
        move |_| {
            let report = chunks_sent.clone();
            Reply::stream(
                200,
                "application/x-ndjson",
                move |writer: &mut ChunkedWriter<'_>| {
                    let line = vec![b'x'; 64 * 1024];
                    for sent in 0..100_000 {
                        if let Err(err) = writer.chunk(&line) {
                            let _ = report.send(Err(err));
                            return Ok(());
                        }
                        if sent == 2 {
                            let _ = report.send(Ok(sent));
                        }
                    }
                    let _ = report.send(Ok(usize::MAX));
                    Ok(())
                },
            )
        }
    }

    #[test]
    fn a_vanished_client_makes_chunk_fail() {
        let (results, outcome) = mpsc::channel();
        let (client, server) = UnixStream::pair().unwrap();
        let handler = stream_until_error(results);
        let served = thread::spawn(move || serve_connection(server, &quick_limits(), &handler));
        SocketWriter(&client)
            .write_all(b"GET /out HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut first = [0; 1024];
        (&client).read_exact(&mut first).unwrap();
        drop(client);
        let mut last = outcome.recv_timeout(WAIT).unwrap();
        while let Ok(sent) = last {
            assert_ne!(
                sent,
                usize::MAX,
                "every chunk was accepted with nobody reading"
            );
            last = outcome.recv_timeout(WAIT).unwrap();
        }
        served.join().unwrap();
    }

    #[test]
    fn a_client_that_stops_reading_times_the_stream_out() {
        let limits = Limits {
            io_timeout: Duration::from_millis(300),
            ..quick_limits()
        };
        let (results, outcome) = mpsc::channel();
        let (client, server) = UnixStream::pair().unwrap();
        let handler = stream_until_error(results);
        let served = thread::spawn(move || serve_connection(server, &limits, &handler));
        SocketWriter(&client)
            .write_all(b"GET /out HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut last = outcome.recv_timeout(WAIT).unwrap();
        while let Ok(sent) = last {
            assert_ne!(sent, usize::MAX);
            last = outcome.recv_timeout(WAIT).unwrap();
        }
        let err = last.unwrap_err();
        assert!(is_timeout(&err), "{err}");
        served.join().unwrap();
        drop(client);
    }

    #[test]
    fn peer_uid_is_checked_against_our_own() {
        let (one, _other) = UnixStream::pair().unwrap();
        let own = geteuid().as_raw();
        assert_eq!(peer_uid(&one).unwrap(), own);
        assert!(uid_allowed(own, own));
        assert!(uid_allowed(0, 1000));
        assert!(uid_allowed(1000, 1000));
        assert!(!uid_allowed(1001, 1000));
        assert!(!uid_allowed(1000, 0));
    }

    /// A served listener in a temporary directory, stopped on drop.
    struct Service {
        dir: tempfile::TempDir,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<Result<(), ServerError>>>,
    }

    impl Service {
        fn start(config: AcceptConfig, handler: Arc<Handler>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let listener = UnixListener::bind(dir.path().join("s.sock")).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread =
                thread::spawn(move || run_accept_loop_with(&listener, &config, handler, &flag));
            Self {
                dir,
                stop,
                thread: Some(thread),
            }
        }

        fn socket(&self) -> std::path::PathBuf {
            self.dir.path().join("s.sock")
        }

        fn client(&self) -> Client {
            Client::new(self.socket()).with_timeout(WAIT)
        }

        fn stop(mut self) -> Duration {
            self.stop.store(true, Ordering::SeqCst);
            let started = Instant::now();
            self.thread.take().unwrap().join().unwrap().unwrap();
            started.elapsed()
        }
    }

    impl Drop for Service {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn routes(request: Request) -> Reply {
        match request.path.as_str() {
            "/stream" => Reply::stream(
                200,
                "application/x-ndjson",
                |writer: &mut ChunkedWriter<'_>| {
                    for piece in [
                        &b"{\"n\":"[..],
                        b"1}\n{\"n\"",
                        b"",
                        b":2}\n",
                        b"{\"end\":true}",
                    ] {
                        writer.chunk(piece)?;
                        thread::sleep(Duration::from_millis(5));
                    }
                    Ok(())
                },
            ),
            "/gone" => Reply::Full(Response::error(404, "no such sandbox", Some("id"))),
            _ => echo(request),
        }
    }

    #[test]
    fn stream_round_trip_through_server_and_client() {
        let service = Service::start(
            AcceptConfig {
                limits: Limits {
                    max_body: 1024,
                    ..quick_limits()
                },
                ..AcceptConfig::default()
            },
            Arc::new(routes),
        );
        let client = service.client();

        let mut chunks = Vec::new();
        let status = client
            .stream("/stream", |chunk| {
                chunks.push(String::from_utf8(chunk.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(chunks, ["{\"n\":", "1}\n{\"n\"", ":2}\n", "{\"end\":true}"]);

        let mut lines = Vec::new();
        crate::http::client::stream_lines(&service.socket(), "/stream", |line| {
            lines.push(serde_json::from_slice::<Value>(line).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            lines,
            [json!({"n": 1}), json!({"n": 2}), json!({"end": true})]
        );

        match client.stream("/gone", |_| Ok(())) {
            Err(ClientError::Server {
                status: 404,
                message,
                field,
            }) => {
                assert_eq!(message, "no such sandbox");
                assert_eq!(field.as_deref(), Some("id"));
            }
            other => panic!("{other:?}"),
        }

        let stopped = client.stream("/stream", |_| Err(io::Error::other("enough")));
        assert!(matches!(stopped, Err(ClientError::Sink(_))), "{stopped:?}");

        let reply = client
            .request("POST", "/echo?x=1", Some(&json!({"argv": ["true"]})))
            .unwrap();
        assert_eq!(reply.status, 200);
        let body = reply.json().unwrap();
        assert_eq!(body["body"], "{\"argv\":[\"true\"]}");
        assert_eq!(body["close"], true);

        let empty_post = client.request("POST", "/echo", None).unwrap();
        assert_eq!(empty_post.status, 200);

        // The client keeps writing a body the server refused at its header.
        let big = vec![b' '; 4 * 1024 * 1024];
        let refused = client.request_bytes("POST", "/echo", Some(&big)).unwrap();
        assert_eq!(refused.status, 413);
        assert!(matches!(
            refused.error_for_status(),
            Err(ClientError::Server { status: 413, .. })
        ));

        assert!(service.stop() < Duration::from_secs(2));
    }

    #[test]
    fn connections_beyond_the_bound_get_503() {
        let service = Service::start(
            AcceptConfig {
                limits: quick_limits(),
                max_connections: 1,
                poll_interval: Duration::from_millis(50),
            },
            Arc::new(echo),
        );
        let first = UnixStream::connect(service.socket()).unwrap();
        first.set_read_timeout(Some(WAIT)).unwrap();
        SocketWriter(&first)
            .write_all(b"GET /a HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut reader = ReplyReader::new(&first, Path::new("first"), None);
        let head = reader.read_head().unwrap();
        assert_eq!(head.status, 200);

        let second = service.client().request("GET", "/b", None).unwrap();
        assert_eq!(second.status, 503);
        assert!(second.json().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"));

        drop(reader);
        drop(first);
        // The slot is given back when the first connection's thread ends.
        let deadline = Instant::now() + WAIT;
        loop {
            let status = service.client().request("GET", "/c", None).unwrap().status;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the slot was never given back");
            thread::sleep(Duration::from_millis(20));
        }
        let _ = service.stop();
    }

    /// xorshift64*: reproducible noise without another dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % bound as u64).unwrap()
        }
    }

    #[test]
    fn random_input_never_panics() {
        let limits = Limits {
            max_header_bytes: 512,
            max_headers: 8,
            max_body: 256,
            idle_timeout: Duration::from_millis(200),
            io_timeout: Duration::from_millis(200),
        };
        let valid =
            b"POST /v1/sandboxes?follow=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody\
                      GET /v1/pool HTTP/1.1\r\n\r\n";
        let alphabet = b"GET POST HTTP/1.1\r\n:%?&=+ Content-Length: 0123456789 chunked Transfer-Encoding\x00\xff";
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let input: Vec<u8> = match round % 3 {
                0 => (0..noise.below(2048)).map(|_| noise.next() as u8).collect(),
                1 => (0..noise.below(1024))
                    .map(|_| alphabet[noise.below(alphabet.len())])
                    .collect(),
                _ => {
                    let mut mutated = valid.to_vec();
                    for _ in 0..=noise.below(6) {
                        let at = noise.below(mutated.len());
                        match noise.below(3) {
                            0 => mutated[at] = noise.next() as u8,
                            1 => {
                                mutated.remove(at);
                            }
                            _ => mutated.insert(at, alphabet[noise.below(alphabet.len())]),
                        }
                    }
                    mutated
                }
            };
            let out = exchange(&input, limits.clone(), echo);
            if !out.is_empty() {
                assert!(out.starts_with(b"HTTP/1.1 "), "round {round}");
                // Every reply is well framed, whatever came in.
                let _ = replies(&out);
            }
        }
    }
}
