//! Reading the usage log (PRODUCT §6, §9): pages newest first, one row by request id, CSV
//! exports and daily totals for charts. Who sees what follows the keys: the operator sees
//! every row, owners and admins their organization's, members the rows of the keys they
//! can see (`Actor::sees_key`). A row the caller may not see answers `NotFound`.
//!
//! A CSV export is built row by row from the store's stream, in chunks of about
//! [`CSV_CHUNK_BYTES`]: its memory does not grow with the number of rows.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tollgate_core::MicroUsd;
use tollgate_core::time::{parse_rfc3339, to_rfc3339};
use tollgate_store::{
    BreakdownBy, BreakdownQuery, BreakdownRank, DailyQuery, KeyListQuery, KeySort, UsageQuery, UsageRow, UsageScope,
    UsageStatus,
};

use crate::principal::Actor;
use crate::{MAX_PAGE, Page, Result, ServiceError, Services};

const MILLIS_PER_DAY: i64 = 86_400_000;
/// The longest range the daily totals cover in one call.
pub const MAX_DAILY_DAYS: i64 = 366;
/// The daily totals' range when the caller gives none: the last 30 days, today included.
const DEFAULT_DAILY_DAYS: i64 = 30;
/// A CSV export is sent in chunks of about this size.
pub const CSV_CHUNK_BYTES: usize = 64 * 1024;

/// The filters of the usage log, as callers give them. Times are RFC 3339, a date
/// (`YYYY-MM-DD`, midnight UTC) or Unix milliseconds; `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct UsageFilters {
    pub request_id: Option<String>,
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    /// The key's owner when the request was made.
    pub user_id: Option<String>,
    /// `success` (HTTP status below 400), `error`, or `all` (the default).
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A page of the usage log: the filters, and `cursor` (the previous page's `next_cursor`).
#[derive(Debug, Clone, Default)]
pub struct ListUsage {
    pub filters: UsageFilters,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of usage rows, newest first.
pub type UsagePage = Page<UsageView>;

/// A usage row as the API and CLI show it: money as a decimal USD number (`cost_usd`) and
/// exactly in micro-USD (`cost_micros`), times in RFC 3339.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageView {
    /// The row's id (the cursor of the pages).
    pub id: String,
    /// The gateway's request id (unique per row).
    pub request_id: String,
    /// The caller's own `x-request-id`, when it sent one.
    pub client_request_id: Option<String>,
    pub created_at: String,
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// `null` when the request was rejected before a key was identified.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: String,
    pub status: u16,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: MicroUsd,
    pub cost_micros: i64,
    /// Billed by the provider above the request's reservation (micro-USD; charged all the same).
    pub excess_micros: i64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub client_ip: Option<String>,
    pub billing_reason: String,
    /// The key's metadata when the request was made, as JSON.
    pub key_metadata: Option<serde_json::Value>,
    /// Channels tried (failover); 0 when no upstream was called.
    pub attempts: u32,
    /// The channels tried, in order, as `provider/upstream_model`, comma-separated; the
    /// last is the one that answered (or failed last).
    pub channel: Option<String>,
}

impl UsageView {
    pub fn new(r: UsageRow) -> Self {
        Self {
            id: r.id.to_string(),
            created_at: to_rfc3339(r.created_at),
            total_tokens: r.prompt_tokens.saturating_add(r.completion_tokens),
            cost_usd: r.cost,
            cost_micros: r.cost.0,
            excess_micros: r.excess.0,
            key_metadata: r.key_metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            request_id: r.request_id,
            client_request_id: r.client_request_id,
            org_id: r.org_id,
            team_id: r.team_id,
            user_id: r.user_id,
            key_id: r.key_id,
            key_name: r.key_name,
            model: r.model,
            provider: r.provider,
            endpoint: r.endpoint,
            status: r.status,
            error_code: r.error_code,
            error: r.error,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            stream: r.stream,
            client_ip: r.client_ip,
            billing_reason: r.billing_reason,
            attempts: r.attempts,
            channel: r.channel,
        }
    }
}

/// The daily totals' filters. `from` and `to` are days (`YYYY-MM-DD`; an RFC 3339 time or
/// Unix milliseconds names its day), both inclusive; default: the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct DailyUsage {
    pub from: Option<String>,
    pub to: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
}

/// One day's totals; every day of the range is present, quiet days with zeros.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DailyView {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: MicroUsd,
    pub cost_micros: i64,
}

/// The top keys or models over a range of days, for the overview's charts. `from` and
/// `to` are days as in [`DailyUsage`] (default: the last 30 days).
#[derive(Debug, Clone, Default)]
pub struct UsageBreakdown {
    /// `key` or `model`.
    pub by: String,
    /// `spend` (the default) or `requests`: which total ranks the groups.
    pub rank: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Default 10, at most [`MAX_BREAKDOWN`].
    pub limit: Option<i64>,
}

/// The most groups one breakdown returns.
pub const MAX_BREAKDOWN: i64 = 50;

/// One key's or model's totals in a [`UsageBreakdown`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakdownView {
    /// The key id, or the model id.
    pub id: String,
    /// The key's current name (`(deleted key)` once it is gone), or the model id.
    pub label: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: MicroUsd,
    pub cost_micros: i64,
}

/// A CSV export under way: the header row, then every filtered row, newest first, in
/// chunks of about [`CSV_CHUNK_BYTES`]. A `Stream` for HTTP bodies, and
/// [`UsageCsv::next_chunk`] for callers without one. After an error, nothing follows.
pub struct UsageCsv {
    chunks: Pin<Box<dyn Stream<Item = Result<String>> + Send>>,
}

impl UsageCsv {
    /// The next chunk; `None` once the export is complete.
    pub async fn next_chunk(&mut self) -> Option<Result<String>> {
        self.chunks.next().await
    }
}

impl Stream for UsageCsv {
    type Item = Result<String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().chunks.as_mut().poll_next(cx)
    }
}

impl Services {
    /// One page of the usage log, newest first.
    pub async fn list_usage(&self, actor: &Actor, q: ListUsage) -> Result<UsagePage> {
        let limit = crate::page_limit(q.limit)?;
        let before_id = q
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>().map_err(|_| ServiceError::invalid("cursor", "is not a cursor this server issued"))
            })
            .transpose()?;
        let query = UsageQuery { before_id, limit, ..self.usage_query(actor, q.filters).await? };
        let rows = self.store.list_usage(&query).await?;
        let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
        Ok(UsagePage { data: rows.into_iter().map(UsageView::new).collect(), next_cursor })
    }

    /// The row of a request, by the gateway's request id or by the caller's own
    /// `x-request-id` when exactly one row carries it; several rows with the caller's id
    /// are an error that says how to list them.
    pub async fn get_usage(&self, actor: &Actor, request_id: &str) -> Result<UsageView> {
        let scope = self.usage_scope(actor).await?;
        let mut rows = self.store.get_usage_by_request(request_id, &scope, 2).await?;
        let row = match rows.iter().position(|r| r.request_id == request_id) {
            Some(own) => rows.swap_remove(own),
            None if rows.len() > 1 => {
                return Err(ServiceError::Invalid {
                    field: "request_id",
                    message: format!(
                        "several requests were sent with the client request id '{request_id}'; \
                         list them with the request_id filter (GET /api/v1/usage?request_id=…)"
                    ),
                });
            }
            None => rows.pop().ok_or(ServiceError::NotFound)?,
        };
        Ok(UsageView::new(row))
    }

    /// Every filtered row as CSV, streamed from the database as the caller reads. Bad
    /// filters fail here, before anything is produced.
    pub async fn usage_csv(&self, actor: &Actor, filters: UsageFilters) -> Result<UsageCsv> {
        let query = self.usage_query(actor, filters).await?;
        Ok(UsageCsv { chunks: Box::pin(csv_chunks(self.store.stream_usage(&query))) })
    }

    /// Per-day totals over the range, oldest first, for charts.
    pub async fn usage_daily(&self, actor: &Actor, q: DailyUsage) -> Result<Vec<DailyView>> {
        let day = |field: &'static str, v: Option<&str>| {
            v.filter(|v| !v.is_empty()).map(|v| instant(field, v).map(|ms| ms.div_euclid(MILLIS_PER_DAY))).transpose()
        };
        let today = tollgate_core::time::now_millis().div_euclid(MILLIS_PER_DAY);
        let to_day = day("to", q.to.as_deref())?.unwrap_or(today);
        let from_day = day("from", q.from.as_deref())?.unwrap_or(to_day - (DEFAULT_DAILY_DAYS - 1));
        if from_day > to_day {
            return Err(ServiceError::invalid("from", "must not be after to"));
        }
        if to_day - from_day >= MAX_DAILY_DAYS {
            return Err(ServiceError::invalid("from", format!("the range may cover at most {MAX_DAILY_DAYS} days")));
        }
        let scope = self.usage_scope(actor).await?;
        let query = DailyQuery {
            org_id: scope.org_id,
            key_ids: scope.key_ids,
            key_id: q.key_id,
            model: q.model,
            from_day,
            to_day,
        };
        let mut rows = self.store.usage_daily(&query).await?.into_iter().peekable();
        let mut out = Vec::new();
        for d in from_day..=to_day {
            let row = rows.next_if(|r| r.day == d);
            let (requests, errors, prompt, completion, cost) = row.map_or((0, 0, 0, 0, MicroUsd::ZERO), |r| {
                (r.requests, r.errors, r.prompt_tokens, r.completion_tokens, r.cost)
            });
            out.push(DailyView {
                day: to_rfc3339(d * MILLIS_PER_DAY).split('T').next().unwrap_or_default().to_owned(),
                requests,
                errors,
                prompt_tokens: prompt,
                completion_tokens: completion,
                cost_usd: cost,
                cost_micros: cost.0,
            });
        }
        Ok(out)
    }

    /// Totals per key or per model over a range of days, the largest first, read from the
    /// daily aggregates within what the actor may see.
    pub async fn usage_breakdown(&self, actor: &Actor, q: UsageBreakdown) -> Result<Vec<BreakdownView>> {
        let by = match q.by.as_str() {
            "key" => BreakdownBy::Key,
            "model" => BreakdownBy::Model,
            _ => return Err(ServiceError::invalid("by", "must be key or model")),
        };
        let rank = match q.rank.as_deref() {
            None | Some("" | "spend") => BreakdownRank::Spend,
            Some("requests") => BreakdownRank::Requests,
            Some(_) => return Err(ServiceError::invalid("rank", "must be spend or requests")),
        };
        let limit = q.limit.unwrap_or(10);
        if !(1..=MAX_BREAKDOWN).contains(&limit) {
            return Err(ServiceError::invalid("limit", format!("must be from 1 to {MAX_BREAKDOWN}")));
        }
        let day = |field: &'static str, v: Option<&str>| {
            v.filter(|v| !v.is_empty()).map(|v| instant(field, v).map(|ms| ms.div_euclid(MILLIS_PER_DAY))).transpose()
        };
        let today = tollgate_core::time::now_millis().div_euclid(MILLIS_PER_DAY);
        let to_day = day("to", q.to.as_deref())?.unwrap_or(today);
        let from_day = day("from", q.from.as_deref())?.unwrap_or(to_day - (DEFAULT_DAILY_DAYS - 1));
        if from_day > to_day {
            return Err(ServiceError::invalid("from", "must not be after to"));
        }
        if to_day - from_day >= MAX_DAILY_DAYS {
            return Err(ServiceError::invalid("from", format!("the range may cover at most {MAX_DAILY_DAYS} days")));
        }
        let scope = self.usage_scope(actor).await?;
        let query = BreakdownQuery { by, rank, org_id: scope.org_id, key_ids: scope.key_ids, from_day, to_day, limit };
        let mut out = Vec::new();
        for row in self.store.usage_breakdown(&query).await? {
            let label = match by {
                // Requests without a model (`/v1/models`, early rejections) group under "".
                BreakdownBy::Model if row.group.is_empty() => "(no model)".to_owned(),
                BreakdownBy::Model => row.group.clone(),
                BreakdownBy::Key => match self.store.get_key(&row.group).await {
                    Ok(key) => key.name,
                    Err(tollgate_store::StoreError::NotFound) => "(deleted key)".to_owned(),
                    Err(e) => return Err(e.into()),
                },
            };
            out.push(BreakdownView {
                id: row.group,
                label,
                requests: row.requests,
                errors: row.errors,
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                cost_usd: row.cost,
                cost_micros: row.cost.0,
            });
        }
        Ok(out)
    }

    /// The rows the actor may see at all.
    async fn usage_scope(&self, actor: &Actor) -> Result<UsageScope> {
        let Some(u) = actor.user_principal() else { return Ok(UsageScope::default()) };
        let org_id = Some(u.org_id.clone());
        if u.role.manages_org() {
            return Ok(UsageScope { org_id, key_ids: None });
        }
        // A member: the rows of the keys they can see, i.e. their own keys.
        let mut key_ids = Vec::new();
        let mut query = KeyListQuery {
            org_id: org_id.clone(),
            owner_id: Some(u.user_id.clone()),
            limit: MAX_PAGE,
            ..Default::default()
        };
        loop {
            let page = self.store.list_keys(&query).await?;
            key_ids.extend(page.iter().filter(|k| actor.sees_key(k)).map(|k| k.id.clone()));
            if (page.len() as i64) < MAX_PAGE {
                break;
            }
            query.after = page.last().map(|k| (KeySort::Name.value_of(k), k.id.clone()));
        }
        Ok(UsageScope { org_id, key_ids: Some(key_ids) })
    }

    /// The store query of `filters` within what the actor may see. Filters are checked
    /// first, so that bad input answers the same whoever asks.
    async fn usage_query(&self, actor: &Actor, f: UsageFilters) -> Result<UsageQuery> {
        let status = match f.status.as_deref() {
            None | Some("" | "all") => None,
            Some("success") => Some(UsageStatus::Success),
            Some("error") => Some(UsageStatus::Error),
            Some(_) => return Err(ServiceError::invalid("status", "must be one of all, success, error")),
        };
        let from = f.from.as_deref().filter(|v| !v.is_empty()).map(|v| instant("from", v)).transpose()?;
        let to = f.to.as_deref().filter(|v| !v.is_empty()).map(|v| instant("to", v)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(ServiceError::invalid("from", "must not be after to"));
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(UsageQuery {
            request_id: nonempty(f.request_id),
            model: nonempty(f.model),
            key_id: nonempty(f.key_id),
            team_id: nonempty(f.team_id),
            user_id: nonempty(f.user_id),
            status,
            from,
            to,
            ..self.usage_scope(actor).await?.query()
        })
    }
}

/// A time as Unix ms: RFC 3339, a date (`YYYY-MM-DD`, midnight UTC) or Unix milliseconds.
pub(crate) fn instant(field: &'static str, v: &str) -> Result<i64> {
    let bad = || ServiceError::invalid(field, "must be an RFC 3339 datetime, a YYYY-MM-DD date or Unix milliseconds");
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map_err(|_| bad());
    }
    if v.len() == 10 {
        return parse_rfc3339(&format!("{v}T00:00:00Z")).ok_or_else(bad);
    }
    parse_rfc3339(v).ok_or_else(bad)
}

/// The columns of a usage CSV export, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "request_id",
    "org_id",
    "team_id",
    "user_id",
    "key_id",
    "key_name",
    "model",
    "provider",
    "endpoint",
    "status",
    "error_code",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "cost_micros",
    "latency_ms",
    "ttft_ms",
    "stream",
    "client_ip",
    "billing_reason",
    "key_metadata",
    "attempts",
    "channel",
    "client_request_id",
    "excess_micros",
];

/// The header row, then the rows, batched into chunks; a store error is logged, yielded,
/// and ends the export (the HTTP body is then cut short, so a partial file is evident).
fn csv_chunks(
    rows: impl Stream<Item = tollgate_store::Result<UsageRow>> + Send + 'static,
) -> impl Stream<Item = Result<String>> + Send + 'static {
    let header = format!("{}\r\n", CSV_COLUMNS.join(","));
    stream::unfold((Box::pin(rows), Some(header)), |(mut rows, header)| async move {
        let mut chunk = header?;
        loop {
            match rows.next().await {
                Some(Ok(row)) => {
                    push_csv_row(&mut chunk, &row);
                    if chunk.len() >= CSV_CHUNK_BYTES {
                        return Some((Ok(chunk), (rows, Some(String::with_capacity(CSV_CHUNK_BYTES + 1024)))));
                    }
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "usage export failed mid-stream");
                    return Some((Err(e.into()), (rows, None)));
                }
                None if chunk.is_empty() => return None,
                None => return Some((Ok(chunk), (rows, None))),
            }
        }
    })
}

/// Appends one CSV record (RFC 4180, CRLF-terminated) in [`CSV_COLUMNS`] order.
fn push_csv_row(out: &mut String, r: &UsageRow) {
    use std::fmt::Write;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let text = |out: &mut String, v: Option<&str>| {
        push_csv_text(out, v.unwrap_or(""));
        out.push(',');
    };
    let _ = write!(out, "{},{},", r.id, to_rfc3339(r.created_at));
    text(out, Some(&r.request_id));
    for v in [&r.org_id, &r.team_id, &r.user_id, &r.key_id, &r.key_name, &r.model, &r.provider] {
        text(out, v.as_deref());
    }
    text(out, Some(&r.endpoint));
    let _ = write!(out, "{},", r.status);
    text(out, r.error_code.as_deref());
    text(out, r.error.as_deref());
    let cost = r.cost.0;
    let _ = write!(
        out,
        "{},{},{},{}{}.{:06},{},{},{},{},",
        r.prompt_tokens,
        r.completion_tokens,
        r.prompt_tokens.saturating_add(r.completion_tokens),
        if cost < 0 { "-" } else { "" },
        cost.unsigned_abs() / 1_000_000,
        cost.unsigned_abs() % 1_000_000,
        cost,
        r.latency_ms,
        opt(r.ttft_ms),
        r.stream,
    );
    text(out, r.client_ip.as_deref());
    text(out, Some(&r.billing_reason));
    text(out, r.key_metadata.as_deref());
    let _ = write!(out, "{},", r.attempts);
    text(out, r.channel.as_deref());
    push_csv_text(out, r.client_request_id.as_deref().unwrap_or(""));
    let _ = write!(out, ",{}\r\n", r.excess.0);
}

/// One text cell: quoted when it holds a comma, quote or line break (quotes doubled), and
/// prefixed with `'` when a spreadsheet would read it as a formula (it starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return): request ids, model names and error texts
/// come from clients.
fn push_csv_text(out: &mut String, v: &str) {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = v.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    if quoted {
        for c in v.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: &str) -> String {
        let mut s = String::new();
        push_csv_text(&mut s, v);
        s
    }

    #[test]
    fn csv_text_is_quoted_and_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("cr\r\nlf"), "\"cr\r\nlf\"");
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        assert_eq!(cell("a=b"), "a=b", "only a leading sign is a formula");
    }

    #[test]
    fn times_take_three_forms() {
        assert_eq!(instant("from", "1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(instant("from", "2024-01-02").unwrap(), parse_rfc3339("2024-01-02T00:00:00Z").unwrap());
        assert_eq!(
            instant("to", "2024-01-02T03:04:05.678Z").unwrap(),
            parse_rfc3339("2024-01-02T03:04:05.678Z").unwrap()
        );
        for bad in ["", "yesterday", "2024-13-01", "-5", "1.5"] {
            assert!(matches!(instant("to", bad), Err(ServiceError::Invalid { field: "to", .. })), "{bad}");
        }
    }

    #[test]
    fn a_row_is_one_record_in_column_order() {
        let row = UsageRow {
            id: 7,
            event_id: None,
            request_id: "req,1".into(),
            client_request_id: Some("mine".into()),
            created_at: 0,
            key_id: Some("key_a".into()),
            key_name: Some("=cmd".into()),
            org_id: None,
            team_id: None,
            user_id: None,
            key_metadata: Some(r#"{"env":"prod"}"#.into()),
            model: Some("m".into()),
            provider: None,
            endpoint: "/v1/chat/completions".into(),
            status: 429,
            error_code: Some("rate_limit_exceeded".into()),
            error: Some("slow \"down\"\nplease".into()),
            prompt_tokens: 3,
            completion_tokens: 5,
            cost: MicroUsd(1_234_567),
            excess: MicroUsd(5),
            latency_ms: 12,
            ttft_ms: None,
            stream: true,
            client_ip: Some("::1".into()),
            billing_reason: "not_billed".into(),
            attempts: 2,
            channel: Some("a/x,b/y".into()),
        };
        let mut out = String::new();
        push_csv_row(&mut out, &row);
        assert_eq!(
            out,
            "7,1970-01-01T00:00:00.000Z,\"req,1\",,,,key_a,'=cmd,m,,/v1/chat/completions,429,rate_limit_exceeded,\
             \"slow \"\"down\"\"\nplease\",3,5,8,1.234567,1234567,12,,true,::1,not_billed,\"{\"\"env\"\":\"\"prod\"\"}\",2,\"a/x,b/y\",mine,5\r\n"
        );
    }
}
