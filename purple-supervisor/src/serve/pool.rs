//! The resource budget of `serve`: how many sandboxes, how much memory and
//! how many CPUs may be reserved at once, and the FIFO queue of requests
//! waiting for room. Pure bookkeeping (no clocks, no threads), so every rule
//! is tested directly.
//!
//! CPUs are counted in thousandths (the policy's own unit), so reserving
//! and releasing never drifts the way summed floats would.

use std::collections::VecDeque;

/// What one sandbox reserves while it starts and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    pub memory_bytes: u64,
    pub millicpus: u64,
}

/// The budget: the `--max-*` options of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub sandboxes: usize,
    pub memory_bytes: u64,
    pub millicpus: u64,
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the request needs {asked} of {resource}, more than the whole pool ({max}); ask for less or start serve with a larger --max-{resource}")]
    LargerThanPool {
        resource: &'static str,
        field: &'static str,
        asked: String,
        max: String,
    },
    #[error(
        "the queue is full ({0} requests wait already); try again when sandboxes have finished"
    )]
    QueueFull(usize),
}

/// Reserved now, and the queue.
#[derive(Debug)]
pub struct Pool<Id> {
    capacity: Capacity,
    in_use: Need,
    running: usize,
    queue: VecDeque<(Id, Need)>,
}

impl<Id: PartialEq + Clone> Pool<Id> {
    pub fn new(capacity: Capacity) -> Pool<Id> {
        Pool {
            capacity,
            in_use: Need::default(),
            running: 0,
            queue: VecDeque::new(),
        }
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Sandboxes holding a reservation, and what they hold.
    pub fn in_use(&self) -> (usize, Need) {
        (self.running, self.in_use)
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn position(&self, id: &Id) -> Option<usize> {
        self.queue.iter().position(|(queued, _)| queued == id)
    }

    /// Queues a request, refusing at once one that could never fit.
    pub fn enqueue(&mut self, id: Id, need: Need) -> Result<(), PoolError> {
        if need.memory_bytes > self.capacity.memory_bytes {
            return Err(PoolError::LargerThanPool {
                resource: "memory",
                field: "policy.resources.memory",
                asked: bytes(need.memory_bytes),
                max: bytes(self.capacity.memory_bytes),
            });
        }
        if need.millicpus > self.capacity.millicpus {
            return Err(PoolError::LargerThanPool {
                resource: "cpus",
                field: "policy.resources.cpus",
                asked: cpus(need.millicpus),
                max: cpus(self.capacity.millicpus),
            });
        }
        if self.queue.len() >= self.capacity.queue {
            return Err(PoolError::QueueFull(self.queue.len()));
        }
        self.queue.push_back((id, need));
        Ok(())
    }

    /// The head of the queue, reserved, when it fits now. Only the head is
    /// ever considered: a small request never overtakes an earlier large
    /// one, which would otherwise wait forever behind a stream of small ones.
    pub fn start_next(&mut self) -> Option<(Id, Need)> {
        let (_, need) = self.queue.front()?;
        let fits = self.running < self.capacity.sandboxes
            && self.in_use.memory_bytes + need.memory_bytes <= self.capacity.memory_bytes
            && self.in_use.millicpus + need.millicpus <= self.capacity.millicpus;
        if !fits {
            return None;
        }
        let (id, need) = self.queue.pop_front()?;
        self.running += 1;
        self.in_use.memory_bytes += need.memory_bytes;
        self.in_use.millicpus += need.millicpus;
        Some((id, need))
    }

    /// Takes a request out of the queue (it was killed before it started).
    pub fn dequeue(&mut self, id: &Id) -> bool {
        let before = self.queue.len();
        self.queue.retain(|(queued, _)| queued != id);
        self.queue.len() != before
    }

    /// Gives back what `start_next` reserved.
    pub fn release(&mut self, need: Need) {
        self.running = self.running.saturating_sub(1);
        self.in_use.memory_bytes = self.in_use.memory_bytes.saturating_sub(need.memory_bytes);
        self.in_use.millicpus = self.in_use.millicpus.saturating_sub(need.millicpus);
    }
}

fn bytes(n: u64) -> String {
    purple_common::values::ByteSize::from_bytes(n).human()
}

fn cpus(millicpus: u64) -> String {
    format!("{} CPUs", millicpus as f64 / 1000.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn pool() -> Pool<u32> {
        Pool::new(Capacity {
            sandboxes: 3,
            memory_bytes: 4 * GIB,
            millicpus: 2000,
            queue: 4,
        })
    }

    fn need(gib: u64, millicpus: u64) -> Need {
        Need {
            memory_bytes: gib * GIB,
            millicpus,
        }
    }

    #[test]
    fn requests_start_in_order_while_they_fit() {
        let mut p = pool();
        p.enqueue(1, need(2, 500)).unwrap();
        p.enqueue(2, need(2, 500)).unwrap();
        p.enqueue(3, need(1, 500)).unwrap();
        assert_eq!(p.start_next().map(|(id, _)| id), Some(1));
        assert_eq!(p.start_next().map(|(id, _)| id), Some(2));
        // Memory is used up: 3 waits even though a sandbox slot is free.
        assert_eq!(p.start_next(), None);
        assert_eq!(p.position(&3), Some(0));
        p.release(need(2, 500));
        assert_eq!(p.start_next().map(|(id, _)| id), Some(3));
        assert_eq!(p.in_use(), (2, need(3, 1000)));
    }

    #[test]
    fn a_small_request_never_overtakes_the_head() {
        let mut p = pool();
        p.enqueue(1, need(3, 100)).unwrap();
        p.enqueue(2, need(3, 100)).unwrap();
        p.enqueue(3, need(0, 100)).unwrap();
        assert!(p.start_next().is_some());
        assert_eq!(p.start_next(), None, "2 does not fit, and 3 must wait");
        assert_eq!(p.position(&3), Some(1));
    }

    #[test]
    fn the_sandbox_count_and_cpus_bound_too() {
        let mut p = pool();
        for id in 0..4 {
            p.enqueue(id, need(0, 600)).unwrap();
        }
        assert!(p.start_next().is_some());
        assert!(p.start_next().is_some());
        assert!(p.start_next().is_some());
        assert_eq!(p.start_next(), None, "1800 + 600 millicpus > 2000");
        let mut q = pool();
        for id in 0..4 {
            q.enqueue(id, need(0, 1)).unwrap();
        }
        for _ in 0..3 {
            assert!(q.start_next().is_some());
        }
        assert_eq!(q.start_next(), None, "three sandboxes at most");
    }

    #[test]
    fn larger_than_the_pool_is_refused_at_once_and_a_full_queue_too() {
        let mut p = pool();
        match p.enqueue(1, need(5, 100)) {
            Err(PoolError::LargerThanPool { field, .. }) => {
                assert_eq!(field, "policy.resources.memory")
            }
            other => panic!("{other:?}"),
        }
        match p.enqueue(1, need(1, 2001)) {
            Err(PoolError::LargerThanPool { field, .. }) => {
                assert_eq!(field, "policy.resources.cpus")
            }
            other => panic!("{other:?}"),
        }
        for id in 0..4 {
            p.enqueue(id, need(1, 100)).unwrap();
        }
        assert_eq!(p.enqueue(9, need(1, 100)), Err(PoolError::QueueFull(4)));
        assert!(p.dequeue(&2));
        assert!(!p.dequeue(&2));
        assert_eq!(p.queued(), 3);
    }
}
