//! Usage rows: written in batches by the usage writer (which also rolls the per-key
//! counters forward in the same transaction). Reading them back is `usage_query`'s.

use std::collections::{HashMap, HashSet};

use tollgate_core::usage::UsageEvent;

use crate::billing::debit_usage;
use crate::{Backend, Result, Store, to_i64};

pub(crate) const USAGE_COLUMNS: &str = "event_id, request_id, created_at, key_id, key_name, org_id, team_id, \
     user_id, key_metadata, model, provider, endpoint, status, error_code, error, prompt_tokens, \
     completion_tokens, cost_micros, latency_ms, ttft_ms, stream, client_ip, billing_reason, attempts, channel, \
     client_request_id, excess_micros";
const USAGE_COLUMN_COUNT: usize = 27;
/// Rows per INSERT statement: far below both engines' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

impl Store {
    /// Adds `(minute, client_ip, failures)` counts of requests that named no known key to
    /// the `auth_failures` table (one row per Unix minute and address, summed).
    pub async fn add_auth_failures(&self, counts: &[(i64, String, i64)]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        for (minute, ip, failures) in counts {
            sqlx::query(
                "INSERT INTO auth_failures (minute, client_ip, failures) VALUES ($1, $2, $3) \
                 ON CONFLICT (minute, client_ip) DO UPDATE SET failures = auth_failures.failures + excluded.failures",
            )
            .bind(*minute)
            .bind(ip.as_str())
            .bind(*failures)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The `auth_failures` rows of minutes `from..=to`, newest first, busiest first within
    /// a minute.
    pub async fn list_auth_failures(&self, from: i64, to: i64, limit: i64) -> Result<Vec<(i64, String, i64)>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT minute, client_ip, failures FROM auth_failures WHERE minute >= $1 AND minute <= $2 \
             ORDER BY minute DESC, failures DESC, client_ip LIMIT $3",
        )
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Writes a batch of events and rolls them into the counters of their keys, teams and
    /// organizations, the organizations' ledgers (one usage debit per organization per
    /// batch) and the daily aggregates — atomically: a retried batch is written whole or
    /// not at all. Events already stored (same `event_id`, e.g. a spill file replayed
    /// twice) are skipped and counted nowhere. Returns how many rows were new.
    pub async fn insert_usage(&self, events: &[UsageEvent]) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let mut inserted: HashSet<String> = HashSet::with_capacity(events.len());
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let sql = self.insert_statement(chunk.len());
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for e in chunk {
                q = q
                    .bind(e.event_id.clone())
                    .bind(e.request_id.clone())
                    .bind(e.created_at)
                    .bind(e.key_id.clone())
                    .bind(e.key_name.clone())
                    .bind(e.org_id.clone())
                    .bind(e.team_id.clone())
                    .bind(e.user_id.clone())
                    .bind(e.key_metadata.as_deref().map(str::to_owned))
                    .bind(e.model.clone())
                    .bind(e.provider.clone())
                    .bind(e.endpoint.clone())
                    .bind(i64::from(e.status))
                    .bind(e.error_code.clone())
                    .bind(e.error.clone())
                    .bind(to_i64(e.prompt_tokens))
                    .bind(to_i64(e.completion_tokens))
                    .bind(e.cost.0)
                    .bind(to_i64(e.latency_ms))
                    .bind(e.ttft_ms.map(to_i64))
                    .bind(i64::from(e.stream))
                    .bind(e.client_ip.clone())
                    .bind(e.billing_reason.as_str())
                    .bind(i64::from(e.attempts))
                    .bind(e.channel.clone())
                    .bind(e.client_request_id.clone())
                    .bind(e.excess.0);
            }
            inserted.extend(q.fetch_all(&mut *tx).await?);
        }
        let new: Vec<&UsageEvent> = events.iter().filter(|e| inserted.contains(&e.event_id)).collect();
        let totals = Totals::of(&new);
        for (key_id, t) in &totals.keys {
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
            .bind(*key_id)
            .execute(&mut *tx)
            .await?;
        }
        for (team_id, t) in &totals.teams {
            sqlx::query(
                "UPDATE teams SET spend_micros = spend_micros + $1, tokens_used = tokens_used + $2 WHERE id = $3",
            )
            .bind(t.spend)
            .bind(t.tokens)
            .bind(*team_id)
            .execute(&mut *tx)
            .await?;
        }
        let now = tollgate_core::time::now_millis();
        for (org_id, t) in &totals.orgs {
            if t.spend == 0 {
                continue;
            }
            debit_usage(&mut tx, org_id, t.spend, t.requests, now).await?;
        }
        for (k, d) in &totals.daily {
            sqlx::query(
                "INSERT INTO usage_daily (org_id, day, key_id, model, requests, errors, prompt_tokens, \
                 completion_tokens, cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (org_id, day, key_id, model) DO UPDATE SET \
                 requests = usage_daily.requests + excluded.requests, \
                 errors = usage_daily.errors + excluded.errors, \
                 prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
                 completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
                 cost_micros = usage_daily.cost_micros + excluded.cost_micros",
            )
            .bind(k.org_id)
            .bind(k.day)
            .bind(k.key_id)
            .bind(k.model)
            .bind(d.requests)
            .bind(d.errors)
            .bind(d.prompt_tokens)
            .bind(d.completion_tokens)
            .bind(d.cost)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(new.len())
    }

    /// `INSERT … VALUES (…), (…) ON CONFLICT (event_id) DO NOTHING RETURNING event_id`.
    fn insert_statement(&self, rows: usize) -> String {
        let mut sql = format!("INSERT INTO usage_log ({USAGE_COLUMNS}) VALUES ");
        for i in 0..rows {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..USAGE_COLUMN_COUNT {
                if c > 0 {
                    sql.push_str(", ");
                }
                match self.backend {
                    // SQLite resolves each named parameter by a linear scan of the
                    // statement's names: with `$n` a 2,000-parameter insert is quadratic
                    // (it was 28% of the gateway's CPU under load). `?` parameters are
                    // positional and free.
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${}", i * USAGE_COLUMN_COUNT + c + 1)),
                }
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
        sql
    }
}

#[derive(Default)]
struct Sums {
    requests: i64,
    tokens: i64,
    spend: i64,
    last_used: i64,
}

#[derive(PartialEq, Eq, Hash)]
struct DayKey<'a> {
    org_id: &'a str,
    day: i64,
    key_id: &'a str,
    model: &'a str,
}

#[derive(Default)]
struct DaySums {
    requests: i64,
    errors: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: i64,
}

/// What one batch adds to each counter.
#[derive(Default)]
struct Totals<'a> {
    keys: HashMap<&'a str, Sums>,
    teams: HashMap<&'a str, Sums>,
    orgs: HashMap<&'a str, Sums>,
    daily: HashMap<DayKey<'a>, DaySums>,
}

const MILLIS_PER_DAY: i64 = 86_400_000;

impl<'a> Totals<'a> {
    fn of(events: &[&'a UsageEvent]) -> Self {
        let mut out = Self::default();
        for e in events {
            let tokens = to_i64(e.prompt_tokens.saturating_add(e.completion_tokens));
            let add = |s: &mut Sums| {
                s.requests += 1;
                s.tokens = s.tokens.saturating_add(tokens);
                s.spend = s.spend.saturating_add(e.cost.0);
                s.last_used = s.last_used.max(e.created_at);
            };
            if let Some(id) = e.key_id.as_deref() {
                add(out.keys.entry(id).or_default());
            }
            if let Some(id) = e.team_id.as_deref() {
                add(out.teams.entry(id).or_default());
            }
            let Some(org_id) = e.org_id.as_deref() else {
                continue;
            };
            add(out.orgs.entry(org_id).or_default());
            let day = DayKey {
                org_id,
                day: e.created_at.div_euclid(MILLIS_PER_DAY),
                key_id: e.key_id.as_deref().unwrap_or(""),
                model: e.model.as_deref().unwrap_or(""),
            };
            let d = out.daily.entry(day).or_default();
            d.requests += 1;
            d.errors += i64::from(e.status >= 400);
            d.prompt_tokens = d.prompt_tokens.saturating_add(to_i64(e.prompt_tokens));
            d.completion_tokens = d.completion_tokens.saturating_add(to_i64(e.completion_tokens));
            d.cost = d.cost.saturating_add(e.cost.0);
        }
        out
    }
}
