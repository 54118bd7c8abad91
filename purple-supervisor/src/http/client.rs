//! The client side, for the CLI subcommands (`ps`, `logs -f`, `wait`,
//! `kill`, `submit`) and the integration tests: one request per connection
//! (`Connection: close`), replies framed by `Content-Length`, chunks, or the
//! end of the connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server::reason_phrase;
use super::wire::{has_token, SocketWriter};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;
/// A reply head larger than this is not from our service.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size line or trailer line longer than this is malformed.
const MAX_LINE: usize = 4096;
/// The largest single chunk accepted, so a corrupt size cannot make the
/// client reserve gigabytes.
const MAX_CHUNK: u64 = 64 * 1024 * 1024;
/// A streamed line longer than this (without its newline) is malformed.
const MAX_STREAM_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source} (is `purple-supervisor serve` running?)", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no reply from {} within {timeout:?}", socket.display())]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("malformed reply from {}: {what}", socket.display())]
    Malformed { socket: PathBuf, what: &'static str },
    #[error("malformed reply header from {}: {source}", socket.display())]
    BadHead {
        socket: PathBuf,
        #[source]
        source: httparse::Error,
    },
    #[error("{}", server_error_text(*status, message, field.as_deref()))]
    Server {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("the reply ({status}) is not JSON: {source}")]
    Json {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the request body as JSON failed: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("invalid request {method} {target:?}: the target must start with '/' and neither may hold spaces or control characters")]
    InvalidRequest { method: String, target: String },
    #[error("handling the streamed output failed: {0}")]
    Sink(#[source] io::Error),
}

fn server_error_text(status: u16, message: &str, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("{field}: {message} ({status} {})", reason_phrase(status)),
        None => format!("{message} ({status} {})", reason_phrase(status)),
    }
}

/// A reply read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// The first value of the header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Json {
            status: self.status,
            source,
        })
    }

    /// The reply itself when its status is 2xx, else
    /// [`ClientError::Server`] with the service's `error` and `field`.
    pub fn error_for_status(self) -> Result<Self, ClientError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.server_error())
        }
    }

    /// The reply as a [`ClientError::Server`]: the JSON `error` text when
    /// the body has one, else the body itself (shortened), else the
    /// reason phrase.
    pub fn server_error(&self) -> ClientError {
        let json: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let text_of = |key: &str| {
            json.as_ref()
                .and_then(|json| json.get(key))
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        };
        let message = text_of("error").unwrap_or_else(|| {
            let body = String::from_utf8_lossy(&self.body);
            let body = body.trim();
            if body.is_empty() {
                reason_phrase(self.status).to_owned()
            } else {
                body.chars().take(500).collect()
            }
        });
        ClientError::Server {
            status: self.status,
            message,
            field: text_of("field"),
        }
    }
}

/// A client of one service socket. [`request`], [`stream`] and
/// [`stream_lines`] are shorthands for `Client::new(socket)` without a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the service listening on `socket`; no timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: None,
        }
    }

    /// Fails a read or write that waits longer than `timeout` (each one,
    /// not the whole exchange: a `wait` or followed output may run long
    /// as long as it keeps moving).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path_and_query` with `body` as JSON, and reads the
    /// whole reply, whatever its status (see
    /// [`ClientResponse::error_for_status`]).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ClientResponse, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Encode)?;
        self.request_bytes(method, path_and_query, body.as_deref())
    }

    /// Like [`request`](Client::request) with the body given as bytes
    /// (sent as `application/json`, valid or not).
    pub fn request_bytes(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<ClientResponse, ClientError> {
        let stream = self.send(method, path_and_query, body)?;
        let mut reader = ReplyReader::new(&stream, &self.socket, self.timeout);
        let head = reader.read_head()?;
        let mut collected = Vec::new();
        reader.read_body(&head, method == "HEAD", &mut |bytes| {
            collected.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(ClientResponse {
            status: head.status,
            headers: head.headers,
            body: collected,
        })
    }

    /// `GET path_and_query`, a streamed reply: `on_chunk` gets each HTTP
    /// chunk as it arrives (a reply that is not chunked arrives in pieces
    /// of whatever size the reads return). Returns the status, 200; any
    /// other status is read whole and returned as [`ClientError::Server`].
    /// An error from `on_chunk` stops the stream ([`ClientError::Sink`]).
    pub fn stream(
        &self,
        path_and_query: &str,
        mut on_chunk: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u16, ClientError> {
        let stream = self.send("GET", path_and_query, None)?;
        let mut reader = ReplyReader::new(&stream, &self.socket, self.timeout);
        let head = reader.read_head()?;
        if head.status != 200 {
            let mut collected = Vec::new();
            reader.read_body(&head, false, &mut |bytes| {
                collected.extend_from_slice(bytes);
                Ok(())
            })?;
            return Err(ClientResponse {
                status: head.status,
                headers: head.headers,
                body: collected,
            }
            .server_error());
        }
        reader.read_body(&head, false, &mut |bytes| {
            on_chunk(bytes).map_err(ClientError::Sink)
        })?;
        Ok(head.status)
    }

    /// Like [`stream`](Client::stream), but `on_line` gets each complete
    /// line (without its `\n`), however the lines were split into chunks.
    /// A last line without a newline is passed on at the end.
    pub fn stream_lines(
        &self,
        path_and_query: &str,
        mut on_line: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u16, ClientError> {
        let mut lines = LineSplitter::default();
        let status = self.stream(path_and_query, |chunk| lines.push(chunk, &mut on_line))?;
        lines.finish(&mut on_line).map_err(ClientError::Sink)?;
        Ok(status)
    }

    /// Connects and sends the request; the reply is the caller's to read.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<UnixStream, ClientError> {
        let printable =
            |text: &str| !text.is_empty() && text.bytes().all(|b| b > 0x20 && b != 0x7f);
        if !printable(method) || !printable(path_and_query) || !path_and_query.starts_with('/') {
            return Err(ClientError::InvalidRequest {
                method: method.to_owned(),
                target: path_and_query.to_owned(),
            });
        }
        let stream = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let io_error = |source| ClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        stream.set_read_timeout(self.timeout).map_err(io_error)?;
        stream.set_write_timeout(self.timeout).map_err(io_error)?;
        let mut message = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        );
        match body {
            Some(body) => {
                message.push_str("Content-Type: application/json\r\n");
                message.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            // The service wants a length on every request that may carry a body.
            None if matches!(method, "POST" | "PUT" | "PATCH") => {
                message.push_str("Content-Length: 0\r\n");
            }
            None => {}
        }
        message.push_str("\r\n");
        let mut bytes = message.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        match SocketWriter(&stream).write_all(&bytes) {
            Ok(()) => {}
            // The service may refuse a request before reading all of it
            // (413) and close; its reply is still there to read.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) => {}
            Err(err) => return Err(self.io_error(err)),
        }
        Ok(stream)
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// `Client::new(socket).request(method, path_and_query, body)`.
pub fn request(
    socket: &Path,
    method: &str,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> Result<ClientResponse, ClientError> {
    Client::new(socket).request(method, path_and_query, body)
}

/// `Client::new(socket).stream(path_and_query, on_chunk)`.
pub fn stream(
    socket: &Path,
    path_and_query: &str,
    on_chunk: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u16, ClientError> {
    Client::new(socket).stream(path_and_query, on_chunk)
}

/// `Client::new(socket).stream_lines(path_and_query, on_line)`.
pub fn stream_lines(
    socket: &Path,
    path_and_query: &str,
    on_line: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u16, ClientError> {
    Client::new(socket).stream_lines(path_and_query, on_line)
}

/// Reassembles lines from arbitrary pieces.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(
        &mut self,
        mut bytes: &[u8],
        on_line: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(newline);
            if self.partial.is_empty() {
                on_line(line)?;
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                on_line(&whole)?;
            }
            bytes = rest.get(1..).unwrap_or_default();
        }
        if self.partial.len() + bytes.len() > MAX_STREAM_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a streamed line is longer than 64 MiB",
            ));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(&mut self, on_line: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let last = std::mem::take(&mut self.partial);
        on_line(&last)
    }
}

/// The status line and headers of a reply.
#[derive(Debug)]
pub(crate) struct ReplyHead {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Reads replies from a byte stream; bytes past one reply stay for the next.
pub(crate) struct ReplyReader<'p, R> {
    inner: R,
    socket: &'p Path,
    timeout: Option<Duration>,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
}

impl<'p, R: Read> ReplyReader<'p, R> {
    /// `socket` and `timeout` only describe errors.
    pub(crate) fn new(inner: R, socket: &'p Path, timeout: Option<Duration>) -> Self {
        Self {
            inner,
            socket,
            timeout,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn consume(&mut self, count: usize) {
        self.pos = (self.pos + count).min(self.buf.len());
    }

    fn malformed(&self, what: &'static str) -> ClientError {
        ClientError::Malformed {
            socket: self.socket.to_owned(),
            what,
        }
    }

    /// Reads more bytes; `Ok(0)` is the end of the stream.
    fn fill(&mut self) -> Result<usize, ClientError> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let result = loop {
            match self.inner.read(&mut self.buf[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let read = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + read);
        result.map_err(|source| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                socket: self.socket.to_owned(),
                timeout: self.timeout.unwrap_or_default(),
            },
            _ => ClientError::Io {
                socket: self.socket.to_owned(),
                source,
            },
        })
    }

    /// Reads until at least `count` unread bytes are buffered.
    fn fill_to(&mut self, count: usize, eof: &'static str) -> Result<(), ClientError> {
        while self.unread().len() < count {
            if self.fill()? == 0 {
                return Err(self.malformed(eof));
            }
        }
        Ok(())
    }

    /// The status line and headers of the next final reply (interim 1xx
    /// replies are skipped).
    pub(crate) fn read_head(&mut self) -> Result<ReplyHead, ClientError> {
        loop {
            let parsed = {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut slots);
                match response.parse(self.unread()) {
                    Ok(httparse::Status::Complete(len)) => Some((
                        len,
                        response.code.unwrap_or(0),
                        response
                            .headers
                            .iter()
                            .map(|header| {
                                (
                                    header.name.to_owned(),
                                    String::from_utf8_lossy(header.value).into_owned(),
                                )
                            })
                            .collect::<Vec<_>>(),
                    )),
                    Ok(httparse::Status::Partial) => None,
                    Err(source) => {
                        return Err(ClientError::BadHead {
                            socket: self.socket.to_owned(),
                            source,
                        })
                    }
                }
            };
            match parsed {
                Some((len, status, headers)) => {
                    self.consume(len);
                    if (100..200).contains(&status) {
                        continue;
                    }
                    return Ok(ReplyHead { status, headers });
                }
                None => {
                    if self.unread().len() > MAX_HEAD_BYTES {
                        return Err(self.malformed("the reply header is larger than 64 KiB"));
                    }
                    if self.fill()? == 0 {
                        return Err(
                            self.malformed("the connection closed before a complete reply header")
                        );
                    }
                }
            }
        }
    }

    fn framing(&self, head: &ReplyHead, head_only: bool) -> Result<Framing, ClientError> {
        if head_only || head.status == 204 || head.status == 304 {
            return Ok(Framing::Empty);
        }
        let header = |name: &'static str| {
            head.headers
                .iter()
                .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        if header("transfer-encoding").any(|value| has_token(value, "chunked")) {
            return Ok(Framing::Chunked);
        }
        let mut lengths = header("content-length");
        match (lengths.next(), lengths.next()) {
            (None, _) => Ok(Framing::UntilClose),
            (Some(text), None) => text
                .trim()
                .parse::<u64>()
                .map(Framing::Length)
                .map_err(|_| self.malformed("invalid Content-Length")),
            (Some(_), Some(_)) => Err(self.malformed("more than one Content-Length")),
        }
    }

    /// Reads the body of the reply `head` announced, handing it to `sink`
    /// piece by piece (one chunk at a time when chunked).
    pub(crate) fn read_body(
        &mut self,
        head: &ReplyHead,
        head_only: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        match self.framing(head, head_only)? {
            Framing::Empty => Ok(()),
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.unread().is_empty() && self.fill()? == 0 {
                        return Err(
                            self.malformed("the connection closed before the end of the body")
                        );
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.unread().len());
                    let piece = self.unread().get(..take).unwrap_or_default();
                    sink(piece)?;
                    self.consume(take);
                    left -= take as u64;
                }
                Ok(())
            }
            Framing::UntilClose => loop {
                if self.unread().is_empty() && self.fill()? == 0 {
                    return Ok(());
                }
                let piece_len = self.unread().len();
                sink(self.unread())?;
                self.consume(piece_len);
            },
            Framing::Chunked => {
                while let Some(size) = self.chunk_size()? {
                    self.fill_to(size + 2, "the connection closed inside a chunk")?;
                    let unread = self.unread();
                    let (data, end) = unread.split_at(size);
                    if end.get(..2) != Some(b"\r\n") {
                        return Err(self.malformed("a chunk does not end with CRLF"));
                    }
                    sink(data)?;
                    self.consume(size + 2);
                }
                // Trailers, up to the empty line that ends the reply.
                while !self.line()?.is_empty() {}
                Ok(())
            }
        }
    }

    /// The next chunk's size; `None` for the last (zero) chunk.
    fn chunk_size(&mut self) -> Result<Option<usize>, ClientError> {
        let line = self.line()?;
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let digits = std::str::from_utf8(digits)
            .map(|text| text.trim_matches([' ', '\t']))
            .unwrap_or_default();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.malformed("invalid chunk size"));
        }
        let size = u64::from_str_radix(digits, 16).unwrap_or(u64::MAX);
        if size > MAX_CHUNK {
            return Err(self.malformed("a chunk is larger than 64 MiB"));
        }
        match usize::try_from(size) {
            Ok(0) => Ok(None),
            Ok(size) => Ok(Some(size)),
            Err(_) => Err(self.malformed("a chunk is larger than 64 MiB")),
        }
    }

    /// The next line, without its line ending.
    fn line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(newline) = self.unread().iter().position(|&b| b == b'\n') {
                let line = self.unread().get(..newline).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.consume(newline + 1);
                return Ok(line);
            }
            if self.unread().len() > MAX_LINE {
                return Err(self.malformed("a chunk-size or trailer line is too long"));
            }
            if self.fill()? == 0 {
                return Err(self.malformed("the connection closed inside the chunked body"));
            }
        }
    }
}

#[cfg(test)]
impl<R: Read> ReplyReader<'_, R> {
    /// Whether the stream ended cleanly with no bytes left over.
    pub(crate) fn at_end(&mut self) -> Result<bool, ClientError> {
        Ok(self.unread().is_empty() && self.fill()? == 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::thread;

    use serde_json::json;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Hands out one byte per read, the worst split a socket can produce.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&byte, rest)), Some(slot)) => {
                    *slot = byte;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    /// Every body piece `sink` got, read from `bytes` one byte at a time.
    fn pieces(bytes: &[u8], head_only: bool) -> Result<(u16, Vec<Vec<u8>>), ClientError> {
        let mut reader = ReplyReader::new(Trickle(bytes), Path::new("test.sock"), None);
        let head = reader.read_head()?;
        let mut pieces = Vec::new();
        reader.read_body(&head, head_only, &mut |piece| {
            pieces.push(piece.to_vec());
            Ok(())
        })?;
        Ok((head.status, pieces))
    }

    #[test]
    fn chunked_replies_are_decoded_chunk_by_chunk() {
        let reply = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\nA \r\n, world!\n\r\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let (status, got) = pieces(reply, false).unwrap();
        assert_eq!(status, 200);
        assert_eq!(got, [b"hello".to_vec(), b", world!\n\r".to_vec()]);
    }

    #[test]
    fn other_framings() {
        let (status, got) = pieces(
            b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabcEXTRA",
            false,
        )
        .unwrap();
        assert_eq!(status, 201);
        assert_eq!(got.concat(), b"abc");
        let (_, got) = pieces(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", false).unwrap();
        assert_eq!(got.concat(), b"until the end");
        let (_, got) = pieces(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert!(got.is_empty());
        let (_, got) = pieces(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: [&[u8]; 8] = [
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ];
        for reply in cases {
            let result = pieces(reply, false);
            assert!(
                matches!(result, Err(ClientError::Malformed { .. })),
                "{}: {result:?}",
                String::from_utf8_lossy(reply)
            );
        }
        assert!(matches!(
            pieces(b"NOT HTTP\r\n\r\n", false),
            Err(ClientError::BadHead { .. })
        ));
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        let mut lines = Vec::new();
        let mut on_line = |line: &[u8]| {
            lines.push(String::from_utf8(line.to_vec()).unwrap());
            Ok(())
        };
        let mut splitter = LineSplitter::default();
        for piece in ["a", "b\ncd", "", "\n\ne", "f\ng\nh"] {
            splitter.push(piece.as_bytes(), &mut on_line).unwrap();
        }
        splitter.finish(&mut on_line).unwrap();
        assert_eq!(lines, ["ab", "cd", "", "ef", "g", "h"]);
    }

    #[test]
    fn a_missing_service_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let err = request(&socket, "GET", "/v1/pool", None).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(
            text.contains("is `purple-supervisor serve` running?"),
            "{text}"
        );
    }

    #[test]
    fn invalid_requests_are_not_sent() {
        let client = Client::new("/nonexistent/s.sock");
        for (method, target) in [
            ("GET", "v1/pool"),
            ("GET", "/a b"),
            ("GE T", "/"),
            ("GET", "/\r\nX: y"),
        ] {
            let err = client.request(method, target, None).unwrap_err();
            assert!(matches!(err, ClientError::InvalidRequest { .. }), "{err:?}");
        }
    }

    #[test]
    fn server_errors_carry_the_service_message() {
        let reply = |status, body: &[u8]| ClientResponse {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        let err = reply(
            400,
            br#"{"error":"bad size","field":"policy.resources.memory"}"#,
        )
        .error_for_status()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy.resources.memory: bad size (400 Bad Request)"
        );
        assert_eq!(
            reply(502, b"upstream says no\n").server_error().to_string(),
            "upstream says no (502 Server Error)"
        );
        assert_eq!(
            reply(503, b"").server_error().to_string(),
            "Service Unavailable (503 Service Unavailable)"
        );
        assert!(reply(200, b"{}").error_for_status().is_ok());
        assert!(matches!(
            reply(200, b"{").json(),
            Err(ClientError::Json { status: 200, .. })
        ));
    }

    /// A one-connection server that reads the request head, then writes
    /// `pieces` with a pause between them; returns the request it got.
    fn canned(
        pieces: Vec<&'static [u8]>,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut request = Vec::new();
            let mut byte = [0; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if (&stream).read(&mut byte).unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            for piece in pieces {
                let _ = SocketWriter(&stream).write_all(piece);
                thread::sleep(Duration::from_millis(20));
            }
            String::from_utf8(request).unwrap()
        });
        (dir, socket, server)
    }

    #[test]
    fn stream_lines_follow_chunks_as_they_arrive() {
        let (_dir, socket, server) = canned(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"2\r\nab\r\n",
            b"4\r\nc\nde\r\n",
            b"2\r\nf\n\r\n1\r\ng\r\n",
            b"0\r\n\r\n",
        ]);
        let mut lines = Vec::new();
        let status = stream_lines(&socket, "/v1/sandboxes/x/output?follow=1", |line| {
            lines.push(String::from_utf8(line.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(lines, ["abc", "def", "g"]);
        let request = server.join().unwrap();
        assert_eq!(
            request,
            "GET /v1/sandboxes/x/output?follow=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn requests_with_a_body_say_its_type_and_length() {
        let (_dir, socket, server) = canned(vec![
            b"HTTP/1.1 201 Created\r\nLocation: /v1/sandboxes/1\r\nContent-Length: 2\r\n\r\n{}",
        ]);
        let reply = request(
            &socket,
            "POST",
            "/v1/sandboxes",
            Some(&json!({"argv": ["true"]})),
        )
        .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.header("location"), Some("/v1/sandboxes/1"));
        assert_eq!(reply.json().unwrap(), json!({}));
        let request = server.join().unwrap();
        assert_eq!(
            request,
            "POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: 17\r\n\r\n"
        );
    }

    #[test]
    fn a_silent_service_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        // Connecting succeeds through the backlog; nobody ever answers.
        let err = Client::new(&socket)
            .with_timeout(Duration::from_millis(100))
            .request("GET", "/v1/pool", None)
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    }
}
