//! The hand-off of usage events from the data plane to the usage writer.
//!
//! `emit` never blocks and never drops: it tries the bounded channel and, when that is
//! full (the writer is behind, e.g. the database is away), parks the event in an overflow
//! list that the writer drains before anything newer. The bound keeps the fast path's
//! memory predictable; the overflow keeps the promise that no row is lost.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tollgate_core::usage::UsageEvent;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageEvent>,
    overflow: Arc<Mutex<Vec<UsageEvent>>>,
    metrics: Arc<Metrics>,
}

/// The writer's end.
pub struct UsageReceiver {
    pub rx: mpsc::Receiver<UsageEvent>,
    overflow: Arc<Mutex<Vec<UsageEvent>>>,
    metrics: Arc<Metrics>,
}

pub fn usage_channel(capacity: usize) -> (UsageSink, UsageReceiver) {
    usage_channel_with_metrics(capacity, Arc::default())
}

/// As [`usage_channel`], counting every event in `metrics`.
pub fn usage_channel_with_metrics(capacity: usize, metrics: Arc<Metrics>) -> (UsageSink, UsageReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Mutex::new(Vec::new()));
    let sink = UsageSink { tx, overflow: overflow.clone(), metrics: metrics.clone() };
    (sink, UsageReceiver { rx, overflow, metrics })
}

impl UsageSink {
    pub fn emit(&self, event: UsageEvent) {
        self.metrics.record(&event);
        crate::metrics::log_request(&event);
        if let Err(e) = self.tx.try_send(event) {
            let event = match e {
                mpsc::error::TrySendError::Full(ev) => ev,
                mpsc::error::TrySendError::Closed(ev) => {
                    tracing::error!(request_id = %ev.request_id, "usage writer has stopped; event parked in memory");
                    ev
                }
            };
            // A poisoned lock still holds valid events: keep using it.
            let mut parked = self.overflow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            parked.push(event);
        }
    }

    /// How many events are waiting for the writer (channel plus overflow).
    pub fn pending(&self) -> usize {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        queued + self.overflow.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The Prometheus text of every metric, with the current queue depth.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self.pending())
    }
}

impl UsageReceiver {
    /// Events that did not fit in the channel, oldest first.
    pub fn take_overflow(&self) -> Vec<UsageEvent> {
        std::mem::take(&mut *self.overflow.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// How many events are waiting (channel plus overflow), for metrics and tests.
    pub fn pending(&self) -> usize {
        self.rx.len() + self.overflow.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The metrics the writer reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> UsageEvent {
        UsageEvent::new(id.into(), 0, "/v1/models".into())
    }

    #[test]
    fn a_full_channel_parks_events_instead_of_dropping_them() {
        let (sink, mut rx) = usage_channel(2);
        for i in 0..5 {
            sink.emit(ev(&i.to_string()));
        }
        assert_eq!((rx.pending(), sink.pending()), (5, 5));
        let parked: Vec<_> = rx.take_overflow().into_iter().map(|e| e.request_id).collect();
        assert_eq!(parked, ["2", "3", "4"]);
        assert_eq!(rx.rx.try_recv().map(|e| e.request_id).ok().as_deref(), Some("0"));
    }
}
