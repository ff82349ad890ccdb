//! Requests that named no known key, as the data plane counted them: failures per source
//! address and minute (the `auth_failures` table), read by the operator. They belong to
//! no organization, so no organization's user reads them.

use serde::Serialize;
use tollgate_core::time::to_rfc3339;

use crate::models::require_operator;
use crate::principal::Actor;
use crate::usage::instant;
use crate::{Result, ServiceError, Services};

const MILLIS_PER_MINUTE: i64 = 60_000;
/// The range read when `from` is not given: the last day.
const DEFAULT_RANGE_MS: i64 = 86_400_000;
/// Rows one call returns at most (busiest first within a minute).
pub const MAX_AUTH_FAILURE_ROWS: i64 = 10_000;
const DEFAULT_ROWS: i64 = 1000;

/// `from` (inclusive) and `to` (exclusive) take the usage log's forms: RFC 3339, a
/// `YYYY-MM-DD` date or Unix milliseconds. Default: the last 24 hours.
#[derive(Debug, Clone, Default)]
pub struct ListAuthFailures {
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<i64>,
}

/// One address in one minute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuthFailureView {
    /// The minute's start, RFC 3339 UTC.
    pub minute: String,
    /// The source address (`other` for addresses past the data plane's bound, `unknown`
    /// for in-process calls).
    pub client_ip: String,
    pub failures: i64,
}

impl Services {
    /// Counted authentication failures, newest minute first, busiest address first.
    pub async fn list_auth_failures(&self, actor: &Actor, q: ListAuthFailures) -> Result<Vec<AuthFailureView>> {
        require_operator(actor)?;
        let given = |field: &'static str, v: Option<&str>| v.filter(|v| !v.is_empty()).map(|v| instant(field, v));
        let to = given("to", q.to.as_deref()).transpose()?.unwrap_or_else(tollgate_core::time::now_millis);
        let from = given("from", q.from.as_deref()).transpose()?.unwrap_or(to - DEFAULT_RANGE_MS);
        if from > to {
            return Err(ServiceError::invalid("from", "must not be after to"));
        }
        let limit = q.limit.unwrap_or(DEFAULT_ROWS);
        if !(1..=MAX_AUTH_FAILURE_ROWS).contains(&limit) {
            return Err(ServiceError::invalid("limit", format!("must be between 1 and {MAX_AUTH_FAILURE_ROWS}")));
        }
        // Minutes whose start lies in [from, to).
        let first = from.div_euclid(MILLIS_PER_MINUTE) + i64::from(from.rem_euclid(MILLIS_PER_MINUTE) != 0);
        let last = (to - 1).div_euclid(MILLIS_PER_MINUTE);
        let rows = self.store.list_auth_failures(first, last, limit).await?;
        Ok(rows
            .into_iter()
            .map(|(minute, client_ip, failures)| AuthFailureView {
                minute: to_rfc3339(minute * MILLIS_PER_MINUTE),
                client_ip,
                failures,
            })
            .collect())
    }
}
