//! Usage rows: written in batches by the usage writer (which also rolls the per-key
//! counters forward in the same transaction), read back with filters and keyset pages.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Acquire, Row};
use tollgate_core::MicroUsd;
use tollgate_core::usage::UsageEvent;

use crate::{Backend, Result, Store, to_i64, to_u64};

const USAGE_COLUMNS: &str = "request_id, created_at, key_id, key_name, model, provider, endpoint, \
     status, error, prompt_tokens, completion_tokens, cost_micros, latency_ms, ttft_ms, stream, \
     client_ip, billing_reason";
const USAGE_COLUMN_COUNT: usize = 17;
/// Rows per INSERT statement: far below both engines' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

/// A stored usage row: the event plus its row id (the keyset cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub id: i64,
    pub request_id: String,
    pub created_at: i64,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: String,
    pub status: u16,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: MicroUsd,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub client_ip: Option<String>,
    pub billing_reason: String,
}

/// Filters for reading usage, newest first.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub request_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    /// Rows with an id below this (the previous page's last id).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Writes a batch of events and adds them to their keys' counters, atomically: a
    /// retried batch after a failure is written whole or not at all.
    pub async fn insert_usage(&self, events: &[UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut sql = format!("INSERT INTO usage_log ({USAGE_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                for c in 0..USAGE_COLUMN_COUNT {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    match self.backend {
                        // SQLite resolves each named parameter by a linear scan of the
                        // statement's names: with `$n` a 1,700-parameter insert is
                        // quadratic (it was 28% of the gateway's CPU under load). `?`
                        // parameters are positional and free.
                        Backend::Sqlite => sql.push('?'),
                        Backend::Postgres => sql.push_str(&format!("${}", i * USAGE_COLUMN_COUNT + c + 1)),
                    }
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.request_id.clone())
                    .bind(e.created_at)
                    .bind(e.key_id.clone())
                    .bind(e.key_name.clone())
                    .bind(e.model.clone())
                    .bind(e.provider.clone())
                    .bind(e.endpoint.clone())
                    .bind(i64::from(e.status))
                    .bind(e.error.clone())
                    .bind(to_i64(e.prompt_tokens))
                    .bind(to_i64(e.completion_tokens))
                    .bind(e.cost.0)
                    .bind(to_i64(e.latency_ms))
                    .bind(e.ttft_ms.map(to_i64))
                    .bind(i64::from(e.stream))
                    .bind(e.client_ip.clone())
                    .bind(e.billing_reason.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        for (key_id, t) in totals_by_key(events) {
            sqlx::query(
                "UPDATE api_keys SET request_count = request_count + $1, tokens_used = tokens_used + $2, \
                 spend_micros = spend_micros + $3, \
                 last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $4 THEN $4 ELSE last_used_at END \
                 WHERE id = $5",
            )
            .bind(t.requests)
            .bind(t.tokens)
            .bind(t.spend)
            .bind(t.last_used)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        let mut sql = format!("SELECT id, {USAGE_COLUMNS} FROM usage_log WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        for (column, value) in [("request_id", &q.request_id), ("key_id", &q.key_id), ("model", &q.model)] {
            if let Some(v) = value {
                binds.push(v.clone());
                sql += &format!(" AND {column} = ${}", binds.len());
            }
        }
        if q.before_id.is_some() {
            sql += &format!(" AND id < ${}", binds.len() + 1);
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1 + usize::from(q.before_id.is_some()));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(b);
        }
        if let Some(id) = q.before_id {
            query = query.bind(id);
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter().map(usage_from_row).collect()
    }
}

struct KeyTotals {
    requests: i64,
    tokens: i64,
    spend: i64,
    last_used: i64,
}

fn totals_by_key(events: &[UsageEvent]) -> HashMap<&str, KeyTotals> {
    let mut out: HashMap<&str, KeyTotals> = HashMap::new();
    for e in events {
        let Some(key_id) = e.key_id.as_deref() else {
            continue;
        };
        let t = out.entry(key_id).or_insert(KeyTotals { requests: 0, tokens: 0, spend: 0, last_used: 0 });
        t.requests += 1;
        t.tokens = t.tokens.saturating_add(to_i64(e.prompt_tokens.saturating_add(e.completion_tokens)));
        t.spend = t.spend.saturating_add(e.cost.0);
        t.last_used = t.last_used.max(e.created_at);
    }
    out
}

fn usage_from_row(row: &AnyRow) -> Result<UsageRow> {
    let opt_u64 = |c: &str| -> Result<Option<u64>> { Ok(row.try_get::<Option<i64>, _>(c)?.map(to_u64)) };
    Ok(UsageRow {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
        key_id: row.try_get("key_id")?,
        key_name: row.try_get("key_name")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        endpoint: row.try_get("endpoint")?,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        error: row.try_get("error")?,
        prompt_tokens: to_u64(row.try_get("prompt_tokens")?),
        completion_tokens: to_u64(row.try_get("completion_tokens")?),
        cost: MicroUsd(row.try_get("cost_micros")?),
        latency_ms: to_u64(row.try_get("latency_ms")?),
        ttft_ms: opt_u64("ttft_ms")?,
        stream: row.try_get::<i64, _>("stream")? != 0,
        client_ip: row.try_get("client_ip")?,
        billing_reason: row.try_get("billing_reason")?,
    })
}
