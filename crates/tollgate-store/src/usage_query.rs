//! Reading the usage log: filtered pages newest first (keyset on the row id), one row by
//! request id, a row stream for exports, and the daily aggregates the charts read. Which
//! rows a caller may see is decided by the service layer and arrives here as `org_id` and
//! `key_ids`; `key_ids = Some(empty)` sees nothing, and no query is run.

use std::collections::VecDeque;

use futures_util::{Stream, stream};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row};
use tollgate_core::MicroUsd;

use crate::usage::USAGE_COLUMNS;
use crate::{Result, Store, to_u64};

/// Rows an export stream reads per query: what bounds its memory.
const STREAM_PAGE: i64 = 1000;

/// A stored usage row: the event plus its row id (the keyset cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub id: i64,
    pub event_id: Option<String>,
    /// The gateway's request id (unique per row since migration 12).
    pub request_id: String,
    /// The caller's own `x-request-id`, when it sent one.
    pub client_request_id: Option<String>,
    pub created_at: i64,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// The key's metadata JSON as it was when the request was made.
    pub key_metadata: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: String,
    pub status: u16,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: MicroUsd,
    /// Billed by the provider above the request's reservation.
    pub excess: MicroUsd,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub client_ip: Option<String>,
    pub billing_reason: String,
    /// Channels tried (failover); 0 when no upstream was called.
    pub attempts: u32,
    /// The channels tried, in order, as `provider/upstream_model`, comma-separated.
    pub channel: Option<String>,
}

/// Succeeded (HTTP status below 400) or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageStatus {
    Success,
    Error,
}

/// Filters for reading usage, newest first. Every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub request_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    /// The key's owner when the request was made.
    pub user_id: Option<String>,
    /// Only rows of these keys (what a member may see); `Some(empty)` matches nothing.
    pub key_ids: Option<Vec<String>>,
    pub status: Option<UsageStatus>,
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    /// Rows with an id below this (the previous page's last id).
    pub before_id: Option<i64>,
    /// Ignored by [`Store::stream_usage`], which yields every matching row.
    pub limit: i64,
}

/// The rows a caller may see at all: the visibility part of a [`UsageQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageScope {
    pub org_id: Option<String>,
    pub key_ids: Option<Vec<String>>,
}

impl UsageScope {
    /// A query for everything in this scope; set the other filters on it.
    pub fn query(&self) -> UsageQuery {
        UsageQuery { org_id: self.org_id.clone(), key_ids: self.key_ids.clone(), ..Default::default() }
    }
}

/// Filters for the daily aggregates. Days are Unix day numbers (`ms / 86_400_000`), both
/// ends inclusive.
#[derive(Debug, Clone, Default)]
pub struct DailyQuery {
    pub org_id: Option<String>,
    pub key_ids: Option<Vec<String>>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub from_day: i64,
    pub to_day: i64,
}

/// One day's totals over the keys and models a [`DailyQuery`] selects.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyRow {
    pub day: i64,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: MicroUsd,
}

/// What [`Store::usage_breakdown`] groups the daily aggregates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakdownBy {
    Key,
    Model,
}

/// Which total ranks the groups of a breakdown (the other breaks ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakdownRank {
    Spend,
    Requests,
}

/// The top `limit` keys or models over a day range (Unix day numbers, both inclusive),
/// within what `org_id` / `key_ids` let the caller see.
#[derive(Debug, Clone)]
pub struct BreakdownQuery {
    pub by: BreakdownBy,
    pub rank: BreakdownRank,
    pub org_id: Option<String>,
    pub key_ids: Option<Vec<String>>,
    pub from_day: i64,
    pub to_day: i64,
    pub limit: i64,
}

/// One key's or model's totals over a [`BreakdownQuery`]'s range.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownRow {
    /// The key id or the model id.
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: MicroUsd,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause under construction: conditions and their parameters, numbered in
/// the order they are added (the order they are bound).
struct Where {
    sql: String,
    binds: Vec<Bind>,
}

impl Where {
    fn new() -> Self {
        Self { sql: String::from(" WHERE 1 = 1"), binds: Vec::new() }
    }

    fn param(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// `AND {condition} $n`, e.g. `("created_at >=", Int(5))`.
    fn and(&mut self, condition: &str, b: Bind) {
        let p = self.param(b);
        self.sql += &format!(" AND {condition} {p}");
    }

    /// `AND column IN (…)`; `false` when `values` is empty (nothing can match).
    fn and_in(&mut self, column: &str, values: &[String]) -> bool {
        if values.is_empty() {
            return false;
        }
        let params: Vec<String> = values.iter().map(|v| self.param(Bind::Text(v.clone()))).collect();
        self.sql += &format!(" AND {column} IN ({})", params.join(", "));
        true
    }

    fn bind_to<'q>(
        self,
        mut query: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, AnyArguments<'q>> {
        for b in self.binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        query
    }
}

/// The `SELECT … ORDER BY id DESC` of a usage query (with `LIMIT` when `limited`), or
/// `None` when the query can match nothing.
fn select_usage(q: &UsageQuery, limited: bool) -> Option<(String, Where)> {
    let mut w = Where::new();
    if let Some(id) = &q.request_id {
        // The gateway's id of one row, or the caller's own id of any number of rows.
        let (a, b) = (w.param(Bind::Text(id.clone())), w.param(Bind::Text(id.clone())));
        w.sql += &format!(" AND (request_id = {a} OR client_request_id = {b})");
    }
    let texts = [
        ("key_id", &q.key_id),
        ("model", &q.model),
        ("org_id", &q.org_id),
        ("team_id", &q.team_id),
        ("user_id", &q.user_id),
    ];
    for (column, value) in texts {
        if let Some(v) = value {
            w.and(&format!("{column} ="), Bind::Text(v.clone()));
        }
    }
    if let Some(ids) = &q.key_ids
        && !w.and_in("key_id", ids)
    {
        return None;
    }
    match q.status {
        Some(UsageStatus::Success) => w.sql += " AND status < 400",
        Some(UsageStatus::Error) => w.sql += " AND status >= 400",
        None => {}
    }
    for (condition, value) in [("created_at >=", q.from), ("created_at <", q.to), ("id <", q.before_id)] {
        if let Some(v) = value {
            w.and(condition, Bind::Int(v));
        }
    }
    let mut sql = format!("SELECT id, {USAGE_COLUMNS} FROM usage_log{} ORDER BY id DESC", w.sql);
    if limited {
        sql += &format!(" LIMIT {}", w.param(Bind::Int(q.limit)));
    }
    Some((sql, w))
}

impl Store {
    /// One page of usage rows, newest first.
    pub async fn list_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        let Some((sql, w)) = select_usage(q, true) else { return Ok(Vec::new()) };
        let rows = w.bind_to(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(usage_from_row).collect()
    }

    /// The rows in `scope` that carry `request_id`, newest first, at most `limit`: as the
    /// gateway's id (one row) or as the caller's own id (a client may reuse it).
    pub async fn get_usage_by_request(
        &self,
        request_id: &str,
        scope: &UsageScope,
        limit: i64,
    ) -> Result<Vec<UsageRow>> {
        let q = UsageQuery { request_id: Some(request_id.to_owned()), limit, ..scope.query() };
        self.list_usage(&q).await
    }

    /// Every row matching `q` (its `limit` ignored), newest first, read as the reader
    /// pulls, in keyset pages of [`STREAM_PAGE`] rows: memory stays flat whatever the
    /// total, and no connection is held between pages, so a slow reader (a CSV download)
    /// never starves the pool that the usage writer shares. Rows written after the first
    /// page have larger ids and are not included. An error ends the stream after it.
    pub fn stream_usage(&self, q: &UsageQuery) -> impl Stream<Item = Result<UsageRow>> + Send + 'static {
        let query = UsageQuery { limit: STREAM_PAGE, ..q.clone() };
        let state = Some((self.clone(), query, VecDeque::new(), true));
        stream::unfold(state, |state| async move {
            let (store, mut query, mut rows, mut more) = state?;
            if rows.is_empty() && more {
                let page = match store.list_usage(&query).await {
                    Ok(page) => page,
                    Err(e) => return Some((Err(e), None)),
                };
                more = page.len() as i64 == STREAM_PAGE;
                query.before_id = page.last().map(|r| r.id);
                rows = page.into();
            }
            let row = rows.pop_front()?;
            Some((Ok(row), Some((store, query, rows, more))))
        })
    }

    /// Per-day totals, oldest first; days without traffic are absent.
    pub async fn usage_daily(&self, q: &DailyQuery) -> Result<Vec<DailyRow>> {
        let mut w = Where::new();
        w.and("day >=", Bind::Int(q.from_day));
        w.and("day <=", Bind::Int(q.to_day));
        for (column, value) in [("org_id", &q.org_id), ("key_id", &q.key_id), ("model", &q.model)] {
            if let Some(v) = value {
                w.and(&format!("{column} ="), Bind::Text(v.clone()));
            }
        }
        if let Some(ids) = &q.key_ids
            && !w.and_in("key_id", ids)
        {
            return Ok(Vec::new());
        }
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back so both engines answer i64.
        let sql = format!(
            "SELECT day, CAST(SUM(requests) AS BIGINT) AS requests, CAST(SUM(errors) AS BIGINT) AS errors, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM usage_daily{} GROUP BY day ORDER BY day",
            w.sql
        );
        let rows = w.bind_to(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(DailyRow {
                    day: r.try_get("day")?,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    cost: MicroUsd(r.try_get("cost_micros")?),
                })
            })
            .collect()
    }
}

impl Store {
    /// Totals per key or per model from the daily aggregates, the largest first: one
    /// grouped query over at most a range of days, bounded by `limit`.
    pub async fn usage_breakdown(&self, q: &BreakdownQuery) -> Result<Vec<BreakdownRow>> {
        let mut w = Where::new();
        w.and("day >=", Bind::Int(q.from_day));
        w.and("day <=", Bind::Int(q.to_day));
        if let Some(org) = &q.org_id {
            w.and("org_id =", Bind::Text(org.clone()));
        }
        if let Some(ids) = &q.key_ids
            && !w.and_in("key_id", ids)
        {
            return Ok(Vec::new());
        }
        let column = match q.by {
            BreakdownBy::Key => "key_id",
            BreakdownBy::Model => "model",
        };
        let order = match q.rank {
            BreakdownRank::Spend => "total_cost DESC, total_requests DESC",
            BreakdownRank::Requests => "total_requests DESC, total_cost DESC",
        };
        let limit = w.param(Bind::Int(q.limit));
        let sql = format!(
            "SELECT {column} AS grp, CAST(SUM(requests) AS BIGINT) AS total_requests, \
             CAST(SUM(errors) AS BIGINT) AS total_errors, CAST(SUM(prompt_tokens) AS BIGINT) AS total_prompt, \
             CAST(SUM(completion_tokens) AS BIGINT) AS total_completion, CAST(SUM(cost_micros) AS BIGINT) AS total_cost \
             FROM usage_daily{} GROUP BY {column} ORDER BY {order}, grp LIMIT {limit}",
            w.sql
        );
        let rows = w.bind_to(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(BreakdownRow {
                    group: r.try_get("grp")?,
                    requests: r.try_get("total_requests")?,
                    errors: r.try_get("total_errors")?,
                    prompt_tokens: r.try_get("total_prompt")?,
                    completion_tokens: r.try_get("total_completion")?,
                    cost: MicroUsd(r.try_get("total_cost")?),
                })
            })
            .collect()
    }
}

fn usage_from_row(row: &AnyRow) -> Result<UsageRow> {
    let opt_u64 = |c: &str| -> Result<Option<u64>> { Ok(row.try_get::<Option<i64>, _>(c)?.map(to_u64)) };
    Ok(UsageRow {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        request_id: row.try_get("request_id")?,
        client_request_id: row.try_get("client_request_id")?,
        created_at: row.try_get("created_at")?,
        key_id: row.try_get("key_id")?,
        key_name: row.try_get("key_name")?,
        org_id: row.try_get("org_id")?,
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        key_metadata: row.try_get("key_metadata")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        endpoint: row.try_get("endpoint")?,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        error_code: row.try_get("error_code")?,
        error: row.try_get("error")?,
        prompt_tokens: to_u64(row.try_get("prompt_tokens")?),
        completion_tokens: to_u64(row.try_get("completion_tokens")?),
        cost: MicroUsd(row.try_get("cost_micros")?),
        excess: MicroUsd(row.try_get("excess_micros")?),
        latency_ms: to_u64(row.try_get("latency_ms")?),
        ttft_ms: opt_u64("ttft_ms")?,
        stream: row.try_get::<i64, _>("stream")? != 0,
        client_ip: row.try_get("client_ip")?,
        billing_reason: row.try_get("billing_reason")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        channel: row.try_get("channel")?,
    })
}
