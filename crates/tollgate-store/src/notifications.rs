//! Notifications and their outbox.
//!
//! A notification is recorded at most once per `(kind, key_id, detail)`: the insert is
//! `ON CONFLICT DO NOTHING`, and only the caller whose insert created the row gets `true`
//! back and the outbox rows (one per channel) written in the same transaction. That is
//! what keeps an alert from firing twice, from one sweep to the next or from several
//! servers on one database.
//!
//! Delivery rows are claimed one at a time with a conditional update that moves
//! `next_attempt_at` into the future (a lease): whoever's update matched owns that
//! attempt. A sender that dies mid-attempt leaves a row that is due again when its lease
//! runs out, so nothing is lost; a finished attempt records `sent`, a retry time, or
//! `failed`.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::MicroUsd;
use tollgate_core::key::{KeySettings, KeyStatus};
use tollgate_core::time::UnixMillis;

use crate::{Backend, Result, Store, StoreError};

/// A key that can raise a notification: it has an expiry, a budget or a token quota.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertableKey {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub owner_id: String,
    pub status: KeyStatus,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub spend: MicroUsd,
    pub tokens_used: i64,
    pub budget_micros: Option<i64>,
    pub budget_alert_thresholds: Vec<u8>,
    pub token_quota: Option<i64>,
}

/// A notification to record, with the channels it is to be delivered on.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: String,
    /// `budget.threshold`, `budget.exhausted`, `quota.exhausted`, `key.expiring`.
    pub kind: String,
    pub key_id: String,
    /// What makes this event distinct among the key's events of this kind.
    pub detail: String,
    pub org_id: Option<String>,
    pub owner_id: Option<String>,
    /// The webhook body (JSON), built once.
    pub payload: String,
    pub created_at: UnixMillis,
    /// `webhook`, `email`: one outbox row each, first due at `created_at`.
    pub channels: Vec<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Sent,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A pending delivery whose time has come, with what is needed to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub notification_id: String,
    pub channel: String,
    pub kind: String,
    pub key_id: String,
    pub payload: String,
    pub created_at: UnixMillis,
    /// The key owner's email, if the owner still exists.
    pub owner_email: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// As read; the claim succeeds only if nobody has moved it since.
    pub next_attempt_at: UnixMillis,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Sent,
    /// Failed; try again at this time.
    Retry {
        error: String,
        at: UnixMillis,
    },
    /// Failed for good (attempts used up, or nothing to retry).
    Failed {
        error: String,
    },
}

/// A stored notification with its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: String,
    pub kind: String,
    pub key_id: String,
    pub detail: String,
    pub org_id: Option<String>,
    pub owner_id: Option<String>,
    pub payload: String,
    pub created_at: UnixMillis,
    pub deliveries: Vec<DeliveryRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub channel: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: UnixMillis,
    pub last_error: Option<String>,
}

impl Store {
    /// Keys that have an expiry, a budget or a token quota and are not revoked. Reads
    /// `api_keys` only (the counters live on the key row); never the usage log.
    pub async fn alertable_keys(&self) -> Result<Vec<AlertableKey>> {
        let has_limit = match self.backend {
            Backend::Sqlite => {
                "json_extract(settings, '$.budget_micros') IS NOT NULL \
                 OR json_extract(settings, '$.token_quota') IS NOT NULL"
            }
            Backend::Postgres => {
                "(settings::jsonb ->> 'budget_micros') IS NOT NULL \
                 OR (settings::jsonb ->> 'token_quota') IS NOT NULL"
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT id, name, org_id, owner_id, status, created_at, expires_at, spend_micros, tokens_used, settings \
             FROM api_keys WHERE status <> 'revoked' AND (expires_at IS NOT NULL OR {has_limit}) ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alertable_from_row).collect()
    }

    /// Records `n` and its outbox rows unless a notification with the same kind, key and
    /// detail exists. `true` when this call created it (and so owns its delivery).
    pub async fn record_notification(&self, n: &NewNotification) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let created: Option<String> = sqlx::query_scalar(
            "INSERT INTO notifications (id, kind, key_id, detail, org_id, owner_id, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (kind, key_id, detail) DO NOTHING RETURNING id",
        )
        .bind(&n.id)
        .bind(&n.kind)
        .bind(&n.key_id)
        .bind(&n.detail)
        .bind(&n.org_id)
        .bind(&n.owner_id)
        .bind(&n.payload)
        .bind(n.created_at)
        .fetch_optional(&mut *tx)
        .await?;
        if created.is_none() {
            return Ok(false);
        }
        for channel in &n.channels {
            sqlx::query(
                "INSERT INTO notification_deliveries (notification_id, channel, status, attempts, next_attempt_at, \
                 updated_at) VALUES ($1, $2, $3, 0, $4, $5)",
            )
            .bind(&n.id)
            .bind(channel)
            .bind(DeliveryStatus::Pending.as_str())
            .bind(n.created_at)
            .bind(n.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Pending deliveries on `channel` due at `now`, oldest first. Reading does not
    /// claim: call [`Store::claim_delivery`] before sending.
    pub async fn due_deliveries(&self, channel: &str, now: UnixMillis, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(
            "SELECT d.notification_id, d.channel, d.attempts, d.next_attempt_at, n.kind, n.key_id, n.payload, \
             n.created_at, u.email FROM notification_deliveries d \
             JOIN notifications n ON n.id = d.notification_id \
             LEFT JOIN users u ON u.id = n.owner_id \
             WHERE d.status = $1 AND d.channel = $2 AND d.next_attempt_at <= $3 \
             ORDER BY d.next_attempt_at, d.notification_id LIMIT $4",
        )
        .bind(DeliveryStatus::Pending.as_str())
        .bind(channel)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    notification_id: row.try_get("notification_id")?,
                    channel: row.try_get("channel")?,
                    kind: row.try_get("kind")?,
                    key_id: row.try_get("key_id")?,
                    payload: row.try_get("payload")?,
                    created_at: row.try_get("created_at")?,
                    owner_email: row.try_get("email")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                })
            })
            .collect()
    }

    /// Takes one attempt at `d`: counts it and leases the row until `lease_until`. `false`
    /// when another sender got there first (or the row is no longer pending).
    pub async fn claim_delivery(&self, d: &DueDelivery, lease_until: UnixMillis, now: UnixMillis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE notification_deliveries SET attempts = attempts + 1, next_attempt_at = $1, updated_at = $2 \
             WHERE notification_id = $3 AND channel = $4 AND status = $5 AND next_attempt_at = $6",
        )
        .bind(lease_until)
        .bind(now)
        .bind(&d.notification_id)
        .bind(&d.channel)
        .bind(DeliveryStatus::Pending.as_str())
        .bind(d.next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how a claimed attempt ended.
    pub async fn finish_delivery(
        &self,
        notification_id: &str,
        channel: &str,
        outcome: &DeliveryOutcome,
        now: UnixMillis,
    ) -> Result<()> {
        let (status, error, next) = match outcome {
            DeliveryOutcome::Sent => (DeliveryStatus::Sent, None, now),
            DeliveryOutcome::Retry { error, at } => (DeliveryStatus::Pending, Some(error.as_str()), *at),
            DeliveryOutcome::Failed { error } => (DeliveryStatus::Failed, Some(error.as_str()), now),
        };
        let done = sqlx::query(
            "UPDATE notification_deliveries SET status = $1, last_error = $2, next_attempt_at = $3, updated_at = $4 \
             WHERE notification_id = $5 AND channel = $6",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(next)
        .bind(now)
        .bind(notification_id)
        .bind(channel)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Notifications newest first (of one key when given), each with its deliveries.
    pub async fn list_notifications(&self, key_id: Option<&str>, limit: i64) -> Result<Vec<NotificationRow>> {
        let columns = "id, kind, key_id, detail, org_id, owner_id, payload, created_at";
        let rows = match key_id {
            Some(k) => {
                sqlx::query(&format!(
                    "SELECT {columns} FROM notifications WHERE key_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(k)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {columns} FROM notifications ORDER BY created_at DESC, id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let deliveries = sqlx::query(
                "SELECT channel, status, attempts, next_attempt_at, last_error FROM notification_deliveries \
                 WHERE notification_id = $1 ORDER BY channel",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
            out.push(NotificationRow {
                id,
                kind: row.try_get("kind")?,
                key_id: row.try_get("key_id")?,
                detail: row.try_get("detail")?,
                org_id: row.try_get("org_id")?,
                owner_id: row.try_get("owner_id")?,
                payload: row.try_get("payload")?,
                created_at: row.try_get("created_at")?,
                deliveries,
            });
        }
        Ok(out)
    }
}

fn alertable_from_row(row: &AnyRow) -> Result<AlertableKey> {
    let status: String = row.try_get("status")?;
    let settings: String = row.try_get("settings")?;
    let settings: KeySettings =
        serde_json::from_str(&settings).map_err(|e| StoreError::Corrupt(format!("key settings: {e}")))?;
    Ok(AlertableKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        org_id: row.try_get::<Option<String>, _>("org_id")?.unwrap_or_default(),
        owner_id: row.try_get::<Option<String>, _>("owner_id")?.unwrap_or_default(),
        status: KeyStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("key status {status}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        spend: MicroUsd(row.try_get("spend_micros")?),
        tokens_used: row.try_get("tokens_used")?,
        budget_micros: settings.budget_micros,
        budget_alert_thresholds: settings.budget_alert_thresholds,
        token_quota: settings.token_quota,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRow> {
    let status: String = row.try_get("status")?;
    Ok(DeliveryRow {
        channel: row.try_get("channel")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status}")))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
    })
}
