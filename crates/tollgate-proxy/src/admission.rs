//! Admission: before a request goes upstream, its rate limits are checked and its maximum
//! cost is held against every budget it is charged to (key, team, organization); when it
//! ends, the [`Hold`] is settled to the real cost — exactly once, because settling
//! consumes it and dropping an unsettled hold releases it (not billed).
//!
//! Order (cheapest refusal first, all or nothing): requests per minute, tokens per
//! minute (key, then team), then budgets and token quotas (key, team, organization). A
//! refusal undoes whatever this request had already taken.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use tollgate_core::{ApiError, ErrorCode, MicroUsd};

use crate::accounts::{Account, AccountLimits, RateOutcome, RateState, clock_micros};
use crate::shared_limits::{
    self as shared, AccountKind, Admission, BudgetCheck, RateCheck, RateKind, SharedLimits, SharedLimitsError,
};
use crate::snapshot::{KeyEntry, Snapshot};

/// The most a request can cost, and what its tokens-per-minute limiters are charged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charge {
    /// Prompt estimate + `max_tokens` (or the model's cap), priced.
    pub max_spend: MicroUsd,
    /// Prompt estimate + `max_tokens` (or the model's cap).
    pub max_tokens: u64,
    /// Prompt estimate + `max_tokens` when the client set it: corrected afterwards.
    pub rate_tokens: u64,
}

/// How this instance applies limits.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Requests are refused when the organization's balance cannot cover them.
    pub enforce_balance: bool,
    /// Divisor of rate limits whenever they are not shared through Redis (none
    /// configured, or unreachable): the number of instances; 1 on a single instance.
    pub fallback_share: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self { enforce_balance: false, fallback_share: 1 }
    }
}

/// The `x-ratelimit-*` state of the request's tightest limiters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RateHeaders {
    pub requests: Option<RateState>,
    pub tokens: Option<RateState>,
}

impl RateHeaders {
    fn note(slot: &mut Option<RateState>, s: RateState) {
        if slot.is_none_or(|cur| s.remaining < cur.remaining) {
            *slot = Some(s);
        }
    }

    /// OpenAI's header names; reset times as `1s`, `6m0s`, `250ms`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, state) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(s) = state else { continue };
            let pairs = [
                (format!("x-ratelimit-limit-{name}"), s.limit.to_string()),
                (format!("x-ratelimit-remaining-{name}"), s.remaining.to_string()),
                (format!("x-ratelimit-reset-{name}"), duration_text(s.reset_after_ms)),
            ];
            for (k, v) in pairs {
                if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k), HeaderValue::try_from(v)) {
                    headers.insert(k, v);
                }
            }
        }
    }
}

fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, rest) = (ms / 60_000, ms % 60_000);
    let secs = if rest % 1000 == 0 { format!("{}s", rest / 1000) } else { format!("{:.3}s", rest as f64 / 1000.0) };
    if m == 0 { secs } else { format!("{m}m{secs}") }
}

struct Held {
    account: Arc<Account>,
    spend: i64,
    tokens: i64,
}

struct TokenRate {
    account: Arc<Account>,
    per_minute: u64,
    estimated: u64,
}

/// What an admitted request holds until it is settled.
pub(crate) struct Hold {
    held: Vec<Held>,
    token_rates: Vec<TokenRate>,
    /// Admitted by the shared limiter: its settlement goes to the settler task.
    shared: Option<(SettlementSender, SharedSettlement)>,
    /// The request's worst-case cost as reserved: a bill above it is excess.
    reserved: MicroUsd,
    settled: bool,
}

/// Limits shared with other instances through Redis, and the queue of settlements that a
/// tracked task of the server applies there (a `Drop` cannot await).
#[derive(Clone)]
pub struct Shared {
    pub limits: Arc<SharedLimits>,
    pub settlements: SettlementSender,
    /// Whether Redis answers, as the last call to it (an admission or the server's
    /// periodic probe) found; `/readyz` and `/metrics` report it.
    pub health: Arc<SharedHealth>,
}

/// The shared limiter's reachability and what its outages cost: requests whose limits
/// this instance decided alone. An outage is logged once, when it begins and ends.
#[derive(Debug, Default)]
pub struct SharedHealth {
    unreachable: std::sync::atomic::AtomicBool,
    fallback_admissions: std::sync::atomic::AtomicU64,
}

impl SharedHealth {
    /// False from the first failed call to Redis until the next one that succeeds.
    pub fn reachable(&self) -> bool {
        !self.unreachable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a call that Redis answered.
    pub fn mark_reachable(&self) {
        if self.unreachable.swap(false, std::sync::atomic::Ordering::AcqRel) {
            tracing::info!("shared limits reachable again");
        }
    }

    /// Records a call that Redis did not answer; `share` is the fallback divisor.
    pub fn mark_unreachable(&self, error: &SharedLimitsError, share: u64) {
        if !self.unreachable.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::warn!(%error, share, "shared limits unreachable; each instance enforces its share");
        }
    }

    /// Requests checked against this instance's own share of the limits because Redis
    /// did not answer (admitted or refused), since start.
    pub fn fallback_admissions(&self) -> u64 {
        self.fallback_admissions.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub type SettlementSender = tokio::sync::mpsc::UnboundedSender<SharedSettlement>;

/// One finished request's settlement with the shared limiter, owned (it crosses tasks).
#[derive(Debug, Clone, Default)]
pub struct SharedSettlement {
    /// `(account, reserved spend, reserved tokens)`; actuals are the request's.
    pub reservations: Vec<(AccountKind, String, i64, u64)>,
    /// `(account, tokens per minute, estimated tokens)`.
    pub token_rates: Vec<(AccountKind, String, u64, u64)>,
    pub actual_spend: i64,
    pub actual_tokens: u64,
}

impl SharedSettlement {
    /// The borrowed forms `SharedLimits::settle` takes.
    pub fn parts(&self) -> (Vec<shared::Settlement<'_>>, Vec<shared::TokenCorrection<'_>>) {
        let settlements = self
            .reservations
            .iter()
            .map(|(kind, id, spend, tokens)| shared::Settlement {
                account: shared::Account { kind: *kind, id },
                reserved_spend: MicroUsd(*spend),
                reserved_tokens: *tokens,
                actual_spend: MicroUsd(self.actual_spend),
                actual_tokens: self.actual_tokens,
            })
            .collect();
        let corrections = self
            .token_rates
            .iter()
            .map(|(kind, id, per_minute, estimated)| shared::TokenCorrection {
                account: shared::Account { kind: *kind, id },
                per_minute: *per_minute,
                estimated: *estimated,
                actual: self.actual_tokens,
            })
            .collect();
        (settlements, corrections)
    }
}

impl Hold {
    /// The spend this request reserved (its worst case).
    pub fn reserved(&self) -> MicroUsd {
        self.reserved
    }

    /// Charges the real cost and tokens and releases the reservation.
    pub fn settle(mut self, spend: MicroUsd, tokens: u64) {
        self.apply(spend.0, tokens);
    }

    fn apply(&mut self, spend: i64, tokens: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let used = i64::try_from(tokens).unwrap_or(i64::MAX);
        for h in &self.held {
            h.account.settle(h.spend, h.tokens, spend, used);
        }
        let now = clock_micros();
        for r in &self.token_rates {
            let delta = used.saturating_sub(i64::try_from(r.estimated).unwrap_or(i64::MAX));
            r.account.tokens_rate.adjust(r.per_minute, delta, now);
        }
        if let Some((tx, mut settlement)) = self.shared.take() {
            settlement.actual_spend = spend;
            settlement.actual_tokens = tokens;
            // The settler lives as long as the server; if it is gone the process is
            // stopping, and the reservation ends with this instance's heartbeat.
            let _ = tx.send(settlement);
        }
    }
}

impl Drop for Hold {
    /// An unsettled hold is released: the request is not billed.
    fn drop(&mut self) {
        self.apply(0, 0);
    }
}

/// One account a request is charged to, with its limits.
struct Charged<'a> {
    kind: AccountKind,
    id: &'a str,
    account: &'a Arc<Account>,
    limits: AccountLimits,
    /// For messages: "This API key", "The team", "The organization".
    who: &'static str,
}

/// Admits the request or says why not. `Ok(None)`: nothing limits this key. With a
/// shared limiter the check is one Redis script call; without one, or if Redis does not
/// answer, this instance's own counters decide, with rate limits divided by
/// `policy.fallback_share`. `charge` is worked out only when something limits the key
/// (the worst-case estimate reads the whole body).
pub(crate) async fn admit(
    snapshot: &Snapshot,
    key: &KeyEntry,
    charge: impl FnOnce() -> Charge,
    policy: Policy,
    shared: Option<&Shared>,
    headers: &mut RateHeaders,
) -> Result<Option<Hold>, ApiError> {
    let team = snapshot.teams.get(&key.team_id);
    let org = match snapshot.orgs.get(&key.org_id) {
        Some(o) if policy.enforce_balance => Some(o),
        // An organization created after this snapshot's last credit reload has never
        // been credited: its balance is zero.
        None if policy.enforce_balance => return Err(over_balance_unknown()),
        _ => None,
    };
    let mut charged: Vec<Charged<'_>> = Vec::with_capacity(3);
    charged.push(Charged {
        kind: AccountKind::Key,
        id: &key.id,
        account: &key.account,
        limits: key.limits,
        who: "This API key",
    });
    if let Some(t) = team {
        charged.push(Charged {
            kind: AccountKind::Team,
            id: &key.team_id,
            account: &t.account,
            limits: t.limits,
            who: "The team of this API key",
        });
    }
    if let Some(o) = org {
        let limits = AccountLimits { budget: Some(o.credit), ..AccountLimits::default() };
        charged.push(Charged {
            kind: AccountKind::Org,
            id: &key.org_id,
            account: &o.account,
            limits,
            who: "The organization",
        });
    }
    if charged.iter().all(|c| !c.limits.has_rate() && !c.limits.has_budget_or_quota()) {
        return Ok(None);
    }
    let charge = &charge();
    if let Some(shared) = shared {
        match admit_shared(shared, &charged, charge, headers).await {
            Ok(answer) => {
                shared.health.mark_reachable();
                return answer;
            }
            Err(e) => {
                shared.health.mark_unreachable(&e, policy.fallback_share);
                shared.health.fallback_admissions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return admit_local(&charged, charge, policy.fallback_share, headers);
            }
        }
    }
    admit_local(&charged, charge, policy.fallback_share, headers)
}

fn admit_local(
    charged: &[Charged<'_>],
    charge: &Charge,
    share: u64,
    headers: &mut RateHeaders,
) -> Result<Option<Hold>, ApiError> {
    let mut hold =
        Hold { held: Vec::new(), token_rates: Vec::new(), shared: None, reserved: charge.max_spend, settled: false };
    let requests_taken = check_rates(charged, charge, share, headers, &mut hold)?;
    for c in charged.iter().filter(|c| c.limits.has_budget_or_quota()) {
        let tokens = i64::try_from(charge.max_tokens).unwrap_or(i64::MAX);
        if !c.account.try_reserve(c.limits.budget, c.limits.token_quota, charge.max_spend.0, tokens) {
            // A refused request does not count against the rate limits: the requests are
            // given back here, the tokens and reservations when `hold` drops.
            undo_requests(&requests_taken, clock_micros());
            return Err(over_budget(c, charge));
        }
        hold.held.push(Held { account: c.account.clone(), spend: charge.max_spend.0, tokens });
    }
    Ok(Some(hold))
}

/// The shared check: one script call for every rate limit and budget. The outer error is
/// Redis failing (fall back); the inner one the request's refusal.
async fn admit_shared(
    shared: &Shared,
    charged: &[Charged<'_>],
    charge: &Charge,
    headers: &mut RateHeaders,
) -> Result<Result<Option<Hold>, ApiError>, SharedLimitsError> {
    let mut rates = Vec::new();
    for c in charged {
        let account = shared::Account { kind: c.kind, id: c.id };
        if let Some(rpm) = c.limits.rpm {
            rates.push(RateCheck { account, kind: RateKind::Requests, per_minute: rpm, cost: 1 });
        }
        if let Some(tpm) = c.limits.tpm {
            rates.push(RateCheck { account, kind: RateKind::Tokens, per_minute: tpm, cost: charge.rate_tokens });
        }
    }
    let budgeted: Vec<&Charged<'_>> = charged.iter().filter(|c| c.limits.has_budget_or_quota()).collect();
    let budgets: Vec<BudgetCheck<'_>> = budgeted
        .iter()
        .map(|c| {
            let local = c.account.totals();
            BudgetCheck {
                account: shared::Account { kind: c.kind, id: c.id },
                limit_spend: c.limits.budget.map(MicroUsd),
                limit_tokens: c.limits.token_quota.map(|q| u64::try_from(q).unwrap_or(0)),
                baseline_spend: MicroUsd(local.spend.max(0)),
                baseline_tokens: u64::try_from(local.tokens).unwrap_or(0),
                spend: charge.max_spend,
                tokens: charge.max_tokens,
            }
        })
        .collect();
    let answer = shared.limits.admit(&rates, &budgets).await?;
    let note = |headers: &mut RateHeaders, states: &[RateState]| {
        for (check, state) in rates.iter().zip(states) {
            match check.kind {
                RateKind::Requests => RateHeaders::note(&mut headers.requests, *state),
                RateKind::Tokens => RateHeaders::note(&mut headers.tokens, *state),
            }
        }
    };
    Ok(match answer {
        Admission::Admitted { rates: states } => {
            note(headers, &states);
            let settlement = SharedSettlement {
                reservations: budgeted
                    .iter()
                    .map(|c| (c.kind, c.id.to_owned(), charge.max_spend.0, charge.max_tokens))
                    .collect(),
                token_rates: rates
                    .iter()
                    .filter(|r| r.kind == RateKind::Tokens)
                    .map(|r| (r.account.kind, r.account.id.to_owned(), r.per_minute, r.cost))
                    .collect(),
                ..SharedSettlement::default()
            };
            // This instance's own counters learn the real cost too (no local
            // reservation), so that a fallback starts from a recent view.
            let held = budgeted.iter().map(|c| Held { account: c.account.clone(), spend: 0, tokens: 0 }).collect();
            Ok(Some(Hold {
                held,
                token_rates: Vec::new(),
                shared: Some((shared.settlements.clone(), settlement)),
                reserved: charge.max_spend,
                settled: false,
            }))
        }
        Admission::RateLimited { check, retry_after_ms, never, rates: states } => {
            note(headers, &states);
            let r = &rates[check];
            let who = charged.iter().find(|c| c.kind == r.account.kind).map_or("This API key", |c| c.who);
            let unit = if r.kind == RateKind::Requests { "requests" } else { "tokens" };
            Err(rate_limited(who, unit, r.per_minute, retry_after_ms, never))
        }
        Admission::OverBudget { check, .. } => Err(over_budget(budgeted[check], charge)),
    })
}

fn undo_requests(taken: &[(&Arc<Account>, u64)], now: u64) {
    for (account, per_minute) in taken {
        account.requests_rate.adjust(*per_minute, -1, now);
    }
}

/// Checks every rate limit; returns the request limiters it advanced.
fn check_rates<'a>(
    charged: &[Charged<'a>],
    charge: &Charge,
    share: u64,
    headers: &mut RateHeaders,
    hold: &mut Hold,
) -> Result<Vec<(&'a Arc<Account>, u64)>, ApiError> {
    let now = clock_micros();
    let share = share.max(1);
    let mut taken: Vec<(&Arc<Account>, u64)> = Vec::new();
    for c in charged {
        if let Some(rpm) = c.limits.rpm {
            let per_minute = (rpm / share).max(1);
            match c.account.requests_rate.check(per_minute, 1, now) {
                RateOutcome::Allowed(s) => {
                    RateHeaders::note(&mut headers.requests, s);
                    taken.push((c.account, per_minute));
                }
                RateOutcome::Limited { retry_after_ms, state, .. } => {
                    RateHeaders::note(&mut headers.requests, state);
                    undo_requests(&taken, now);
                    return Err(rate_limited(c.who, "requests", per_minute, retry_after_ms, false));
                }
            }
        }
    }
    for c in charged {
        if let Some(tpm) = c.limits.tpm {
            let per_minute = (tpm / share).max(1);
            match c.account.tokens_rate.check(per_minute, charge.rate_tokens, now) {
                RateOutcome::Allowed(s) => {
                    RateHeaders::note(&mut headers.tokens, s);
                    hold.token_rates.push(TokenRate {
                        account: c.account.clone(),
                        per_minute,
                        estimated: charge.rate_tokens,
                    });
                }
                RateOutcome::Limited { retry_after_ms, never, state } => {
                    RateHeaders::note(&mut headers.tokens, state);
                    undo_requests(&taken, now);
                    return Err(rate_limited(c.who, "tokens", per_minute, retry_after_ms, never));
                }
            }
        }
    }
    Ok(taken)
}

fn rate_limited(who: &str, unit: &str, per_minute: u64, retry_after_ms: u64, never: bool) -> ApiError {
    let message = if never {
        format!("{who} allows {per_minute} {unit} per minute; this request alone needs more. Lower max_tokens.")
    } else {
        format!("{who} is limited to {per_minute} {unit} per minute. Retry after {}.", duration_text(retry_after_ms))
    };
    ApiError::new(ErrorCode::RateLimitExceeded { retry_after_secs: retry_after_ms.div_ceil(1000) }, message)
}

fn over_balance_unknown() -> ApiError {
    ApiError::new(
        ErrorCode::InsufficientQuota,
        "The organization's balance ($0.000000) cannot cover this request. Add credit to continue.",
    )
}

fn over_budget(c: &Charged<'_>, charge: &Charge) -> ApiError {
    let totals = c.account.totals();
    let message = match (c.limits.budget, c.limits.token_quota) {
        (_, Some(q)) if totals.tokens >= q || totals.tokens + totals.reserved_tokens + charge.max_tokens as i64 > q => {
            format!("{} has used its token quota ({q} tokens), or this request could exceed it.", c.who)
        }
        (Some(b), _) if c.who == "The organization" => format!(
            "The organization's balance ({}) cannot cover this request (up to {}). Add credit to continue.",
            MicroUsd(b - totals.spend),
            charge.max_spend
        ),
        (Some(b), _) => format!(
            "{} has reached its budget of {}, or this request (up to {}) could exceed it.",
            c.who,
            MicroUsd(b),
            charge.max_spend
        ),
        _ => format!("{} cannot cover this request.", c.who),
    };
    ApiError::new(ErrorCode::InsufficientQuota, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(duration_text(250), "250ms");
        assert_eq!(duration_text(1000), "1s");
        assert_eq!(duration_text(1500), "1.500s");
        assert_eq!(duration_text(360_000), "6m0s");
    }
}
