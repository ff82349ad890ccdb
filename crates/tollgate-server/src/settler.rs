//! The shared limiter's side jobs, in one tracked task: applying settlements (a finished
//! request's reservation turned into its real cost in Redis) and the instance heartbeat
//! that keeps this instance's reservations alive — and, through it, the probe that keeps
//! [`SharedHealth`] (so `/readyz` and `tollgate_redis_up`) right without traffic.
//!
//! Settlements arrive on an unbounded channel (a response body's `Drop` cannot await) and
//! go to Redis in batches, each batch with its own "once" id so that a retry after a
//! timeout is not applied twice. While Redis is away a batch is retried with backoff; at
//! shutdown a batch that still fails is given up: its reservations end with this
//! instance's heartbeat, and the spend reaches Redis again from the database counters
//! (every admission raises Redis to them).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tollgate_proxy::shared_limits::SharedLimits;
use tollgate_proxy::{SharedHealth, SharedSettlement};

const BATCH: usize = 256;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn run(
    limits: Arc<SharedLimits>,
    health: Arc<SharedHealth>,
    fallback_share: u64,
    mut rx: UnboundedReceiver<SharedSettlement>,
    stop: CancellationToken,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<SharedSettlement> = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                apply(&limits, &batch, &stop).await;
                batch.clear();
            }
            _ = heartbeat.tick() => {
                match limits.heartbeat().await {
                    Ok(()) => health.mark_reachable(),
                    Err(e) => health.mark_unreachable(&e, fallback_share),
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // Shutdown: what is queued still settles (the data plane has stopped by now).
    rx.close();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        apply(&limits, &batch, &stop).await;
        batch.clear();
    }
}

async fn apply(limits: &SharedLimits, batch: &[SharedSettlement], stop: &CancellationToken) {
    let once = tollgate_core::ids::new_id("stl");
    let parts: Vec<_> = batch.iter().map(SharedSettlement::parts).collect();
    let settlements: Vec<_> = parts.iter().flat_map(|(s, _)| s.iter().copied()).collect();
    let corrections: Vec<_> = parts.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        match limits.settle(Some(&once), &settlements, &corrections).await {
            Ok(_) => return,
            Err(e) => {
                if stop.is_cancelled() && attempt >= 3 {
                    tracing::warn!(error = %e, requests = batch.len(), "giving up shared settlements at shutdown");
                    return;
                }
                tracing::debug!(error = %e, attempt, "shared settlement failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}
