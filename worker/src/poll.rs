//! The queue polling strategy.
//!
//! apalis 1.0's `IntervalStrategy`, when its delay fires, arms the next delay
//! without polling it, so no waker is registered for the next interval; if
//! the fetch that follows completes at once with no task, the worker parks
//! until something else wakes it (its heartbeat), and a fresh message waits
//! that long. [`Ticker`] polls the new delay right away, so a worker wakes
//! every interval.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};

/// Wakes the queue worker every `interval`.
#[derive(Debug)]
pub struct Ticker {
    interval: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Ticker {
    pub fn new(interval: Duration) -> Ticker {
        Ticker {
            interval,
            sleep: None,
        }
    }
}

impl Clone for Ticker {
    fn clone(&self) -> Self {
        Ticker::new(self.interval)
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let interval = self.interval;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let mut next = Box::pin(tokio::time::sleep(interval));
                // Registers the waker for the next tick (the apalis strategy does not).
                let _ = next.as_mut().poll(cx);
                self.sleep = Some(next);
                Poll::Ready(Some(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
