//! Pieces both sides of the transport share: a socket writer that cannot
//! raise SIGPIPE, and the header checks.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{send, MsgFlags};

/// Writes to a unix socket with `MSG_NOSIGNAL`: a peer that hung up becomes
/// an `EPIPE` error for the caller to act on, whatever the process's SIGPIPE
/// disposition is (a library cannot rely on the Rust runtime ignoring it).
#[derive(Debug)]
pub(crate) struct SocketWriter<'a>(pub(crate) &'a UnixStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        // send(2) hands the bytes to the kernel; there is no user-space buffer.
        Ok(())
    }
}

/// Whether a comma-separated header value (`Connection`, `Transfer-Encoding`)
/// lists `token`, compared without case as HTTP requires.
pub(crate) fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// A header name is an RFC 9110 token.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value a peer cannot misread as more headers.
pub(crate) fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
