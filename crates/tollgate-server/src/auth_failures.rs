//! Moves the data plane's counts of requests that named no known key
//! ([`tollgate_proxy::auth_failures`]) into the `auth_failures` table: every
//! [`FLUSH_EVERY`] and once more at shutdown, after the connections have drained. Counts
//! the database refused are kept (bounded) and added on the next attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate_proxy::auth_failures::AuthFailures;
use tollgate_store::Store;

/// How often counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Counts held back while the database is away, at most (further ones are dropped, logged).
const MAX_HELD: usize = 100_000;

/// Runs until `stop`, then writes what is left.
pub async fn run(store: Store, failures: Arc<AuthFailures>, stop: CancellationToken) {
    let mut held: HashMap<(i64, String), i64> = HashMap::new();
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(FLUSH_EVERY) => false,
            () = stop.cancelled() => true,
        };
        flush(&store, &failures, &mut held).await;
        if stopping {
            if !held.is_empty() {
                tracing::warn!(rows = held.len(), "auth failure counts not written at shutdown");
            }
            return;
        }
    }
}

async fn flush(store: &Store, failures: &AuthFailures, held: &mut HashMap<(i64, String), i64>) {
    for c in failures.drain(tollgate_core::time::now_millis()) {
        if held.len() >= MAX_HELD && !held.contains_key(&(c.minute, c.client_ip.clone())) {
            tracing::warn!(minute = c.minute, "auth failure counts dropped: the database is away too long");
            continue;
        }
        *held.entry((c.minute, c.client_ip)).or_default() += c.failures;
    }
    if held.is_empty() {
        return;
    }
    let rows: Vec<(i64, String, i64)> = held.iter().map(|((m, ip), n)| (*m, ip.clone(), *n)).collect();
    match store.add_auth_failures(&rows).await {
        Ok(()) => held.clear(),
        Err(e) => tracing::warn!(error = %e, rows = rows.len(), "writing auth failure counts failed; retrying later"),
    }
}
