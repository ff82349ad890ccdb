//! The usage writer: takes events from the data plane's channel and writes them in
//! batches (by size or after `flush_interval`), off the request path.
//!
//! Nothing is dropped. A failed batch is retried with exponential backoff; after
//! `MAX_ATTEMPTS` failures (or at shutdown) it is appended to `usage-spill.jsonl` in the
//! data directory, which is replayed into the store at the next start and whenever the
//! writer is idle. At shutdown the writer drains the channel and the overflow completely.
//!
//! Each event arrives already in the usage journal (see `tollgate_proxy::journal`); once
//! its row is committed (or spilled, which is fsynced), its segment is told, so the journal
//! is truncated. At start, and whenever idle, the journals of processes that are gone are
//! replayed into the store (idempotent by `event_id`) and deleted.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_core::usage::UsageEvent;
use tollgate_proxy::{Queued, UsageReceiver};
use tollgate_store::Store;

const MAX_ATTEMPTS: u32 = 5;
const SPILL_FILE: &str = "usage-spill.jsonl";

pub struct UsageWriter {
    pub store: Store,
    pub rx: UsageReceiver,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub data_dir: PathBuf,
}

/// Events on their way to the store, with the journal segment of each (same order).
#[derive(Default)]
struct Batch {
    events: Vec<UsageEvent>,
    segments: Vec<Option<u64>>,
}

impl Batch {
    fn push(&mut self, q: Queued) {
        self.events.push(q.event);
        self.segments.push(q.segment);
    }

    fn extend(&mut self, queued: Vec<Queued>) {
        for q in queued {
            self.push(q);
        }
    }
}

impl UsageWriter {
    fn spill_path(&self) -> PathBuf {
        self.data_dir.join(SPILL_FILE)
    }

    /// Runs until `stop` is cancelled, then drains everything and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Batch::default();
        loop {
            batch.extend(self.rx.take_overflow());
            if batch.events.is_empty() {
                tokio::select! {
                    ev = self.rx.rx.recv() => match ev {
                        Some(ev) => batch.push(ev),
                        None => break,
                    },
                    () = tokio::time::sleep(self.flush_interval * 10) => {
                        self.replay_spill().await;
                        self.replay_journals().await;
                        continue;
                    }
                    () = stop.cancelled() => break,
                }
            }
            let deadline = Instant::now() + self.flush_interval;
            while batch.events.len() < self.batch_size {
                tokio::select! {
                    ev = self.rx.rx.recv() => match ev {
                        Some(ev) => batch.push(ev),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = stop.cancelled() => break,
                }
            }
            self.write(&mut batch, &stop).await;
            if stop.is_cancelled() {
                break;
            }
        }
        // Shutdown: everything still queued goes to the store (or the spill file).
        let mut rest = batch;
        rest.extend(self.rx.take_overflow());
        while let Ok(ev) = self.rx.rx.try_recv() {
            rest.push(ev);
        }
        let total = rest.events.len();
        let size = self.batch_size.max(1);
        while !rest.events.is_empty() {
            let n = size.min(rest.events.len());
            let mut chunk =
                Batch { events: rest.events.drain(..n).collect(), segments: rest.segments.drain(..n).collect() };
            self.write(&mut chunk, &stop).await;
        }
        // Rows not written stay in the journal for the next start.
        if let Some(journal) = self.rx.journal() {
            journal.close();
        }
        tracing::info!(rows = total, "usage writer drained");
    }

    /// Writes `batch` (then clears it), retrying with backoff; spills when the store stays
    /// away. Either way the journal is told the batch's events are safe.
    async fn write(&self, batch: &mut Batch, stop: &CancellationToken) {
        if batch.events.is_empty() {
            return;
        }
        self.write_events(&mut batch.events, stop).await;
        if batch.events.is_empty() {
            if let Some(journal) = self.rx.journal() {
                let segments: Vec<u64> = batch.segments.drain(..).flatten().collect();
                journal.committed(&segments);
                self.rx.metrics().writer.set_journal_bytes(journal.bytes());
            }
            batch.segments.clear();
        }
    }

    async fn write_events(&self, batch: &mut Vec<UsageEvent>, stop: &CancellationToken) {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=MAX_ATTEMPTS {
            match self.insert(batch).await {
                Ok(_) => {
                    batch.clear();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, rows = batch.len(), "writing usage rows failed");
                }
            }
            if stop.is_cancelled() && attempt >= 2 {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        match self.spill(batch).await {
            Ok(()) => {
                tracing::warn!(rows = batch.len(), path = %self.spill_path().display(), "usage rows spilled to disk");
                self.rx.metrics().writer.record_spilled(batch.len());
                self.record_spill_size();
                batch.clear();
            }
            // Keep the batch in memory; the next write tries the store again.
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "could not spill usage rows; keeping them in memory")
            }
        }
    }

    async fn spill(&self, batch: &[UsageEvent]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for ev in batch {
            serde_json::to_writer(&mut lines, ev)?;
            lines.push(b'\n');
        }
        let path = self.spill_path();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(&lines)?;
            f.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Moves spilled rows into the store. The file is renamed first so that rows spilled
    /// meanwhile land in a new file; it is deleted only after the rows are committed.
    pub async fn replay_spill(&self) {
        let path = self.spill_path();
        let replaying = path.with_extension("replaying");
        if !replaying.exists() {
            if !path.exists() {
                return;
            }
            if let Err(e) = std::fs::rename(&path, &replaying) {
                tracing::warn!(error = %e, "cannot take the usage spill file for replay");
                return;
            }
        }
        let text = match tokio::fs::read_to_string(&replaying).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the usage spill file");
                self.record_spill_size();
                return;
            }
        };
        let mut events = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<UsageEvent>(line) {
                Ok(ev) => events.push(ev),
                // A torn last line from a crash mid-write: report it, keep the rest.
                Err(e) => {
                    tracing::error!(line = n + 1, error = %e, "unreadable line in the usage spill file")
                }
            }
        }
        let size = self.batch_size.max(1);
        for (i, chunk) in events.chunks(size).enumerate() {
            if let Err(e) = self.insert(chunk).await {
                tracing::warn!(error = %e, "replaying spilled usage failed; will retry");
                // Keep only what is not yet in the store, so no row is written twice.
                let mut rest = Vec::new();
                for ev in &events[i * size..] {
                    if serde_json::to_writer(&mut rest, ev).is_ok() {
                        rest.push(b'\n');
                    }
                }
                let tmp = replaying.with_extension("tmp");
                if let Err(e) = std::fs::write(&tmp, rest).and_then(|()| std::fs::rename(&tmp, &replaying)) {
                    tracing::error!(error = %e, "could not rewrite the usage spill file");
                }
                self.record_spill_size();
                return;
            }
            self.rx.metrics().writer.record_replayed(chunk.len());
        }
        if let Err(e) = tokio::fs::remove_file(&replaying).await {
            tracing::error!(error = %e, "replayed the usage spill file but could not delete it");
        } else {
            tracing::info!(rows = events.len(), "replayed spilled usage rows");
        }
        self.record_spill_size();
    }

    /// One insert into the store, timed and counted in the writer's metrics.
    async fn insert(&self, events: &[UsageEvent]) -> tollgate_store::Result<usize> {
        let started = std::time::Instant::now();
        let result = self.store.insert_usage(events).await;
        self.rx.metrics().writer.record_write(started.elapsed(), events.len(), result.is_ok());
        result
    }

    /// Moves the journals of processes that are gone (a crash, `kill -9`) into the store,
    /// then deletes them. A journal still locked by a live process is left alone.
    pub async fn replay_journals(&self) {
        let dir = self.data_dir.join(tollgate_proxy::journal::DIR_NAME);
        let own = self.rx.journal().map(|j| j.owner().to_owned());
        let found = tokio::task::spawn_blocking(move || tollgate_proxy::journal::recover_orphans(&dir, own.as_deref()))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        let orphans = match found {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the usage journals of stopped processes");
                return;
            }
        };
        'orphans: for orphan in orphans {
            for chunk in orphan.events.chunks(self.batch_size.max(1)) {
                if let Err(e) = self.insert(chunk).await {
                    // Its lock is released on drop: the next replay takes it again.
                    tracing::warn!(error = %e, "replaying a usage journal failed; will retry");
                    continue 'orphans;
                }
                self.rx.metrics().writer.record_replayed(chunk.len());
            }
            let (owner, rows, torn) = (orphan.owner.clone(), orphan.events.len(), orphan.torn_lines);
            match orphan.remove() {
                Ok(()) => {
                    tracing::info!(%owner, rows, torn_lines = torn, "replayed the usage journal of a stopped process")
                }
                Err(e) => tracing::error!(error = %e, %owner, "replayed a usage journal but could not delete it"),
            }
        }
    }

    /// Sets the spill-size gauge to what is on disk now (new spills plus a replay in progress).
    fn record_spill_size(&self) {
        let path = self.spill_path();
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let bytes = size(&path) + size(&path.with_extension("replaying"));
        self.rx.metrics().writer.set_spill_bytes(bytes);
    }
}
