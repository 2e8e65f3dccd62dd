//! A poll strategy that really polls at its interval.
//!
//! apalis-core 1.0's `IntervalStrategy` arms a new timer when the old one fires but does not poll
//! it, so no waker is registered: an idle worker then only looks at its queue again on its next
//! heartbeat (seconds later). This strategy polls the fresh timer at once, so an idle worker picks
//! a new job up within one interval.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};

pub struct RearmingInterval {
    interval: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl RearmingInterval {
    pub fn new(interval: Duration) -> Self {
        Self { interval, sleep: Box::pin(tokio::time::sleep(interval)) }
    }
}

impl PollStrategy for RearmingInterval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleep.as_mut().reset(tokio::time::Instant::now() + self.interval);
                // Register the waker on the new deadline right away.
                let _ = self.sleep.as_mut().poll(cx);
                Poll::Ready(Some(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
