//! The hand-off of usage events from the data plane to the usage writer.
//!
//! `emit` never blocks and never drops: it tries the bounded channel and, when that is
//! full (the writer is behind, e.g. the database is away), parks the event in an overflow
//! list that the writer drains before anything newer. The bound keeps the fast path's
//! memory predictable; the overflow keeps the promise that no row is lost.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tollgate_core::usage::UsageEvent;

#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageEvent>,
    overflow: Arc<Mutex<Vec<UsageEvent>>>,
}

/// The writer's end.
pub struct UsageReceiver {
    pub rx: mpsc::Receiver<UsageEvent>,
    overflow: Arc<Mutex<Vec<UsageEvent>>>,
}

pub fn usage_channel(capacity: usize) -> (UsageSink, UsageReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Mutex::new(Vec::new()));
    (UsageSink { tx, overflow: overflow.clone() }, UsageReceiver { rx, overflow })
}

impl UsageSink {
    pub fn emit(&self, event: UsageEvent) {
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
        assert_eq!(rx.pending(), 5);
        let parked: Vec<_> = rx.take_overflow().into_iter().map(|e| e.request_id).collect();
        assert_eq!(parked, ["2", "3", "4"]);
        assert_eq!(rx.rx.try_recv().map(|e| e.request_id).ok().as_deref(), Some("0"));
    }
}
