//! The connection to Redis behind [`SharedLimits`](super::SharedLimits): one multiplexed
//! connection shared by every call, dropped when it breaks and re-established by the next
//! call.
//!
//! Invariants: every call, connecting included, finishes within the configured timeout;
//! at most one connection attempt runs at a time and attempts are spaced by the back-off,
//! so while Redis is away a call costs one fast [`SharedLimitsError::Unavailable`], not a
//! wait. Nothing is spawned here: the attempt runs inside the call that claimed it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use super::SharedLimitsError;

pub(super) struct Connection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    current: ArcSwapOption<MultiplexedConnection>,
    /// Milliseconds since `epoch` before which no new connection attempt starts.
    next_attempt_ms: AtomicU64,
    epoch: Instant,
    timeout: Duration,
    backoff: Duration,
}

impl Connection {
    /// Parses the URL; connects on first use.
    pub(super) fn new(url: &str, timeout: Duration, backoff: Duration) -> Result<Self, SharedLimitsError> {
        let client = redis::Client::open(url).map_err(|e| SharedLimitsError::Config(e.to_string()))?;
        let config = AsyncConnectionConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
        Ok(Self {
            client,
            config,
            current: ArcSwapOption::empty(),
            next_attempt_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            timeout,
            backoff,
        })
    }

    /// Runs `op` on the shared connection (connecting first if there is none), within the
    /// timeout. A transport error or a timeout drops the connection so that the next call
    /// starts a fresh one.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, SharedLimitsError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut used: Option<Arc<MultiplexedConnection>> = None;
        let outcome = tokio::time::timeout(self.timeout, async {
            let conn = match self.current.load_full() {
                Some(conn) => conn,
                None => self.reconnect().await?,
            };
            used = Some(conn.clone());
            op(MultiplexedConnection::clone(&conn)).await.map_err(SharedLimitsError::from_redis)
        })
        .await;
        let result = outcome.unwrap_or(Err(SharedLimitsError::Timeout(self.timeout)));
        if let (Err(e), Some(conn)) = (&result, &used)
            && e.breaks_connection()
        {
            // Only the connection that failed is dropped, not a newer one another call made.
            self.current.compare_and_swap(&Some(conn.clone()), None::<Arc<MultiplexedConnection>>);
        }
        result
    }

    /// One connection attempt, unless another is running or the last failed too recently.
    async fn reconnect(&self) -> Result<Arc<MultiplexedConnection>, SharedLimitsError> {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due = self.next_attempt_ms.load(Ordering::Acquire);
        let backoff_ms = u64::try_from(self.backoff.as_millis()).unwrap_or(u64::MAX);
        // Claiming the slot before connecting spaces attempts even if this one is cancelled.
        if now_ms < due
            || self
                .next_attempt_ms
                .compare_exchange(due, now_ms.saturating_add(backoff_ms), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(SharedLimitsError::Unavailable);
        }
        if let Some(conn) = self.current.load_full() {
            return Ok(conn);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(SharedLimitsError::Connection)?;
        let conn = Arc::new(conn);
        self.current.store(Some(conn.clone()));
        // Connected: a later breakage may retry at once.
        self.next_attempt_ms.store(0, Ordering::Release);
        Ok(conn)
    }
}
