//! One sandbox's stdout and stderr as `serve` keeps them: the chunks in
//! the order they were read, up to a cap, with readers that follow along.
//!
//! The pipes are always drained to the end, also past the cap (what is
//! over it is counted and dropped), so that a chatty command never blocks
//! on a full pipe and the memory a sandbox costs the service is bounded.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Which standard stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Counts for the API's `output` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputTotals {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub kept_bytes: u64,
    pub truncated: bool,
}

#[derive(Debug, Default)]
struct Kept {
    chunks: Vec<(Stream, Vec<u8>)>,
    totals: OutputTotals,
    /// Pipes still open (two once the readers start).
    open_streams: u8,
    /// The sandbox has ended: no chunk will follow once the streams close.
    ended: bool,
    /// Chunks below this index were handed to a reader and never grow.
    sealed: usize,
}

/// The largest chunk small writes are merged into.
const MERGE_LIMIT: usize = 64 * 1024;

/// Shared between the pipe readers, the runner and any number of readers.
#[derive(Debug)]
pub struct OutputLog {
    cap: u64,
    kept: Mutex<Kept>,
    changed: Condvar,
}

/// What a reader gets: the chunks from its position on, and whether the
/// output is complete.
#[derive(Debug)]
pub struct Batch {
    pub chunks: Vec<(Stream, Vec<u8>)>,
    pub next: usize,
    pub complete: bool,
}

impl OutputLog {
    pub fn new(cap: u64) -> OutputLog {
        OutputLog {
            cap,
            kept: Mutex::new(Kept::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A reader that panicked cannot leave the log half-written: every
        // update is a single push or counter change.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pipe reader starts.
    pub fn open_stream(&self) {
        self.lock().open_streams += 1;
    }

    /// A pipe reached end of file.
    pub fn close_stream(&self) {
        let mut kept = self.lock();
        kept.open_streams = kept.open_streams.saturating_sub(1);
        self.changed.notify_all();
    }

    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut kept = self.lock();
        let length = bytes.len() as u64;
        match stream {
            Stream::Stdout => kept.totals.stdout_bytes += length,
            Stream::Stderr => kept.totals.stderr_bytes += length,
        }
        let room = self.cap.saturating_sub(kept.totals.kept_bytes);
        let take = usize::try_from(room.min(length)).unwrap_or(0);
        if take < bytes.len() {
            kept.totals.truncated = true;
        }
        if take > 0 {
            kept.totals.kept_bytes += take as u64;
            // Many tiny writes must not cost a chunk each: the last chunk
            // grows while it is of the same stream and small. A follower
            // that already read it is not affected: it goes by index, and
            // the index moves on only with a new chunk.
            let piece = &bytes[..take];
            let last_open = kept.chunks.len() > kept.sealed;
            match kept.chunks.last_mut() {
                Some((last, data))
                    if last_open && *last == stream && data.len() + piece.len() <= MERGE_LIMIT =>
                {
                    data.extend_from_slice(piece)
                }
                _ => kept.chunks.push((stream, piece.to_vec())),
            }
        }
        self.changed.notify_all();
    }

    /// The sandbox has ended (or never started): once the pipes are closed
    /// nothing more comes.
    pub fn end(&self) {
        self.lock().ended = true;
        self.changed.notify_all();
    }

    /// Waits up to `limit` for the pipes to reach end of file; false when
    /// something still holds them.
    pub fn wait_streams_closed(&self, limit: Duration) -> bool {
        let kept = self.lock();
        let (kept, _) = self
            .changed
            .wait_timeout_while(kept, limit, |k| k.open_streams > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.open_streams == 0
    }

    pub fn totals(&self) -> OutputTotals {
        self.lock().totals
    }

    /// The chunks from index `from` on. With `wait`, blocks up to `limit`
    /// until there is at least one new chunk or the output is complete.
    pub fn read_from(&self, from: usize, wait: Option<Duration>) -> Batch {
        let complete = |k: &Kept| k.ended && k.open_streams == 0;
        let mut kept = self.lock();
        if let Some(limit) = wait {
            kept = self
                .changed
                .wait_timeout_while(kept, limit, |k| k.chunks.len() <= from && !complete(k))
                .map(|(k, _)| k)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let chunks = kept
            .chunks
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        // What a reader has seen must not grow under it: its next read
        // starts at the following index.
        kept.sealed = kept.sealed.max(kept.chunks.len());
        Batch {
            next: from + chunks.len(),
            chunks,
            complete: complete(&kept),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_counted_and_dropped() {
        let log = OutputLog::new(10);
        log.append(Stream::Stdout, b"12345678");
        log.append(Stream::Stderr, b"abcdef");
        log.append(Stream::Stdout, b"zz");
        let totals = log.totals();
        assert_eq!(totals.stdout_bytes, 10);
        assert_eq!(totals.stderr_bytes, 6);
        assert_eq!(totals.kept_bytes, 10);
        assert!(totals.truncated);
        let batch = log.read_from(0, None);
        assert_eq!(
            batch.chunks,
            vec![
                (Stream::Stdout, b"12345678".to_vec()),
                (Stream::Stderr, b"ab".to_vec())
            ]
        );
    }

    #[test]
    fn small_writes_merge_but_never_into_a_chunk_already_read() {
        let log = OutputLog::new(1 << 20);
        for _ in 0..1000 {
            log.append(Stream::Stdout, b"x");
        }
        let first = log.read_from(0, None);
        assert_eq!(first.chunks.len(), 1);
        log.append(Stream::Stdout, b"y");
        log.append(Stream::Stderr, b"z");
        let second = log.read_from(first.next, None);
        assert_eq!(
            second.chunks,
            vec![
                (Stream::Stdout, b"y".to_vec()),
                (Stream::Stderr, b"z".to_vec())
            ]
        );
        let all: Vec<u8> = log
            .read_from(0, None)
            .chunks
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect();
        assert_eq!(all.len(), 1002);
    }

    #[test]
    fn a_follower_sees_chunks_as_they_come_and_then_the_end() {
        let log = std::sync::Arc::new(OutputLog::new(1 << 20));
        log.open_stream();
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                log.append(Stream::Stdout, b"one");
                log.append(Stream::Stdout, b"two");
                log.close_stream();
                log.end();
            })
        };
        let mut seen = Vec::new();
        let mut next = 0;
        loop {
            let batch = log.read_from(next, Some(Duration::from_secs(10)));
            next = batch.next;
            seen.extend(batch.chunks.into_iter().map(|(_, b)| b));
            if batch.complete && log.read_from(next, None).chunks.is_empty() {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(seen.concat(), b"onetwo");
        assert!(log.wait_streams_closed(Duration::ZERO));
    }
}
