//! The notifier: one background task that finds due alerts and delivers them.
//!
//! Every `sweep_interval` it reads the keys that have an expiry, a budget or a token quota
//! ([`Store::alertable_keys`], the key rows only) and records each due event
//! ([`triggers::due`]) with an outbox row per configured channel. The store's unique
//! `(kind, key_id, detail)` means an event is recorded once across sweeps, restarts and
//! instances. The same task then drains the outbox: it claims each due delivery (a lease
//! in the row, so one instance owns each attempt), sends it, and records `sent`, a retry
//! at `retry_base · 2^(attempt-1)` (capped at `retry_max`), or `failed` after
//! `max_attempts`. An attempt cut short by a crash is retried when its lease ends.
//!
//! No secret reaches a log line, a stored error or a body: errors name neither the
//! webhook URL nor any credential.

mod email;
mod triggers;
mod webhook;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tollgate_core::time::{UnixMillis, now_millis};
use tollgate_store::{DeliveryOutcome, DueDelivery, NewNotification, Store};

use crate::config::NotificationsConfig;

const WEBHOOK: &str = "webhook";
const EMAIL: &str = "email";
/// Deliveries read per outbox query, and sent at once.
const BATCH: i64 = 32;
const CONCURRENCY: usize = 4;
/// Events remembered as recorded, so that later sweeps skip their insert. Cleared when
/// full (the store still refuses duplicates).
const MAX_KNOWN: usize = 100_000;

/// Why an attempt did not deliver. The message is stored and logged: it never carries a
/// secret or the webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryError {
    pub message: String,
    /// Retrying cannot help (e.g. the mailbox does not exist).
    pub permanent: bool,
}

impl DeliveryError {
    pub(crate) fn retry(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: false }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: true }
    }
}

/// The notifier task's state.
pub(crate) struct Notifier {
    store: Store,
    config: NotificationsConfig,
    webhook: Option<webhook::WebhookSender>,
    smtp: Option<email::SmtpSender>,
    /// `(kind, key_id, detail)` already in the store.
    known: HashSet<(&'static str, String, String)>,
}

impl Notifier {
    /// `None` when no channel is configured: there is nothing to notify through.
    pub(crate) fn new(store: Store, config: &NotificationsConfig) -> anyhow::Result<Option<Self>> {
        let webhook = config.webhook.as_ref().map(|w| webhook::WebhookSender::new(w, config.timeout));
        let smtp = config.smtp.as_ref().map(|s| email::SmtpSender::new(s, config.timeout)).transpose()?;
        if webhook.is_none() && smtp.is_none() {
            return Ok(None);
        }
        if let Some(s) = &config.smtp
            && !s.starttls
            && s.credentials.is_some()
        {
            tracing::warn!(host = %s.host, "SMTP credentials go out without TLS (notifications.smtp_starttls = false)");
        }
        Ok(Some(Self { store, config: config.clone(), webhook, smtp, known: HashSet::new() }))
    }

    fn channels(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.webhook.is_some() {
            c.push(WEBHOOK);
        }
        if self.smtp.is_some() {
            c.push(EMAIL);
        }
        c
    }

    /// Sweeps every `sweep_interval` and drains the outbox at least every second, until
    /// `stop`. An attempt in flight when `stop` comes is finished (each is bounded by
    /// `timeout`); no new one is started.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        tracing::info!(channels = ?self.channels(), interval = ?self.config.sweep_interval, "notifier started");
        let poll = self.config.sweep_interval.min(Duration::from_secs(1));
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + self.config.sweep_interval;
                if let Err(e) = self.sweep(now_millis()).await {
                    tracing::warn!(error = %e, "notification sweep failed; retrying at the next one");
                }
            }
            self.drain(&stop).await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("notifier stopped");
    }

    /// Records every event due at `now` that is not yet recorded; returns how many this
    /// call recorded.
    async fn sweep(&mut self, now: UnixMillis) -> tollgate_store::Result<usize> {
        let keys = self.store.alertable_keys().await?;
        let channels: Vec<String> = self.channels().into_iter().map(str::to_owned).collect();
        let mut recorded = 0;
        for key in &keys {
            for due in triggers::due(key, now) {
                let marker = (due.kind, key.id.clone(), due.detail.clone());
                if self.known.contains(&marker) {
                    continue;
                }
                let id = tollgate_core::ids::new_id("ntf");
                let payload = triggers::payload(&id, key, &due, now).to_string();
                let n = NewNotification {
                    id,
                    kind: due.kind.to_owned(),
                    key_id: key.id.clone(),
                    detail: due.detail,
                    org_id: Some(key.org_id.clone()).filter(|o| !o.is_empty()),
                    owner_id: Some(key.owner_id.clone()).filter(|o| !o.is_empty()),
                    payload,
                    created_at: now,
                    channels: channels.clone(),
                };
                if self.store.record_notification(&n).await? {
                    tracing::info!(kind = n.kind, key_id = %n.key_id, id = %n.id, "notification recorded");
                    recorded += 1;
                }
                if self.known.len() >= MAX_KNOWN {
                    self.known.clear();
                }
                self.known.insert(marker);
            }
        }
        Ok(recorded)
    }

    /// Sends every due delivery of the configured channels.
    async fn drain(&self, stop: &CancellationToken) {
        for channel in self.channels() {
            loop {
                let due = match self.store.due_deliveries(channel, now_millis(), BATCH).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the notification outbox failed");
                        return;
                    }
                };
                let full = i64::try_from(due.len()).unwrap_or(i64::MAX) >= BATCH;
                futures_util::stream::iter(due)
                    .for_each_concurrent(CONCURRENCY, |d| async move {
                        if !stop.is_cancelled() {
                            self.attempt(d).await;
                        }
                    })
                    .await;
                if !full || stop.is_cancelled() {
                    break;
                }
            }
        }
    }

    /// One attempt at `d`, if this instance wins its claim.
    async fn attempt(&self, d: DueDelivery) {
        let now = now_millis();
        // Longer than any attempt can take, so a live sender never loses its lease.
        let lease = i64::try_from(self.config.timeout.as_millis()).unwrap_or(i64::MAX / 4).saturating_mul(2) + 60_000;
        match self.store.claim_delivery(&d, now.saturating_add(lease), now).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a notification delivery failed");
                return;
            }
        }
        let result = self.send(&d, now).await;
        let attempt = d.attempts + 1;
        let outcome = match result {
            Ok(()) => DeliveryOutcome::Sent,
            Err(e) if e.permanent || attempt >= i64::from(self.config.max_attempts) => {
                DeliveryOutcome::Failed { error: e.message }
            }
            Err(e) => {
                DeliveryOutcome::Retry { error: e.message, at: now_millis().saturating_add(self.backoff(attempt)) }
            }
        };
        match &outcome {
            DeliveryOutcome::Sent => {
                tracing::info!(id = %d.notification_id, channel = %d.channel, kind = %d.kind, "notification delivered");
            }
            DeliveryOutcome::Retry { error, .. } => {
                let (id, channel) = (&d.notification_id, &d.channel);
                tracing::warn!(%id, %channel, attempt, %error, "notification delivery failed; will retry");
            }
            DeliveryOutcome::Failed { error } => {
                let (id, channel) = (&d.notification_id, &d.channel);
                tracing::error!(%id, %channel, attempt, %error, "notification delivery failed for good");
            }
        }
        if let Err(e) = self.store.finish_delivery(&d.notification_id, &d.channel, &outcome, now_millis()).await {
            // The lease runs out and the attempt is made again: at least once, not lost.
            tracing::warn!(error = %e, id = %d.notification_id, "recording a notification delivery failed");
        }
    }

    async fn send(&self, d: &DueDelivery, now: UnixMillis) -> Result<(), DeliveryError> {
        match d.channel.as_str() {
            WEBHOOK => {
                let Some(w) = &self.webhook else {
                    return Err(DeliveryError::retry("webhook not configured on this instance"));
                };
                w.send(&d.notification_id, &d.kind, &d.payload, now.div_euclid(1000)).await
            }
            EMAIL => {
                let Some(s) = &self.smtp else {
                    return Err(DeliveryError::retry("email not configured on this instance"));
                };
                let to = d
                    .owner_email
                    .as_deref()
                    .filter(|a| crate::config::valid_email_address(a))
                    .ok_or_else(|| DeliveryError::failed("the key's owner has no valid email address"))?;
                let payload: serde_json::Value = serde_json::from_str(&d.payload)
                    .map_err(|_| DeliveryError::failed("the stored event is not JSON"))?;
                let (subject, body) = email::compose(&d.kind, &payload);
                let from = self.config.smtp.as_ref().map(|c| c.from_header.as_str()).unwrap_or_default();
                let message = email::render(from, to, &subject, &body, &d.notification_id, &d.kind, now);
                s.send(to, &message).await
            }
            other => Err(DeliveryError::failed(format!("unknown channel {other:?}"))),
        }
    }

    /// Milliseconds before retry `attempt + 1`: `retry_base · 2^(attempt-1)`, at most
    /// `retry_max`.
    fn backoff(&self, attempt: i64) -> i64 {
        let base = i64::try_from(self.config.retry_base.as_millis()).unwrap_or(i64::MAX);
        let max = i64::try_from(self.config.retry_max.as_millis()).unwrap_or(i64::MAX);
        let shift = u32::try_from(attempt.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        base.saturating_mul(1_i64 << shift).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_doubles_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&Store::sqlite_url(&dir.path().join("t.db"))).await.unwrap();
        let config = NotificationsConfig {
            sweep_interval: Duration::from_secs(30),
            webhook: Some(crate::config::WebhookConfig {
                url: "http://127.0.0.1:9/hook".parse().unwrap(),
                secret: tollgate_core::Secret::new("0123456789abcdef"),
            }),
            smtp: None,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        };
        let n = Notifier::new(store, &config).unwrap().unwrap();
        let waits: Vec<i64> = (1..=10).map(|a| n.backoff(a)).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000]);
        assert_eq!(n.backoff(1_000), 300_000);
        let none = NotificationsConfig { webhook: None, ..config };
        assert!(Notifier::new(n.store.clone(), &none).unwrap().is_none());
    }
}
