//! Limits and budgets shared by several gateway instances through Redis.
//!
//! Owns the Redis side of two checks that every request makes: rate limits (GCRA on
//! requests and tokens per minute, one TAT string per limiter, timed by the Redis
//! server's clock) and budget reservations (one hash per account: settled `spend` and
//! `tokens`, plus `rs:{instance}` / `rt:{instance}` reserved by each live instance).
//!
//! Invariants:
//! - One admission is one atomic script call: every rate limit and every budget is checked
//!   first, and state changes only when all pass (all or nothing).
//! - Settled counters never go backwards: each admission raises them to the caller's
//!   durable baseline (`max`), so a Redis restart or expiry re-seeds from the database.
//! - Reservations of an instance whose heartbeat key has expired stop counting and are
//!   deleted by the next script that reads them; no field is left negative.
//! - Every call returns within the configured timeout; while Redis is away calls fail
//!   fast, so that the caller falls back to its per-instance limits.
//!
//! Redis keys, after the configured prefix: `acct:{kind}:{id}` (account hash),
//! `rl:{kind}:{id}:rpm` and `rl:{kind}:{id}:tpm` (limiters), `inst:{instance}`
//! (heartbeat), `once:{key}` (settlements already applied). Ids travel as KEYS/ARGV,
//! never as script source. The scripts read `inst:*` keys they are not given in KEYS,
//! so on Redis Cluster every key must share one slot: put a hash tag in the prefix
//! (`{tg}:`).

mod conn;

use std::fmt;
use std::time::Duration;

use redis::{RedisError, Script};
use tollgate_core::MicroUsd;

use conn::Connection;

/// The kind of account a limit or budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// An API key.
    Key,
    /// A team.
    Team,
    /// An organization.
    Org,
}

impl AccountKind {
    /// The name used in Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Team => "team",
            Self::Org => "org",
        }
    }
}

/// An account whose limits are shared: a kind and an opaque id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Account<'a> {
    /// Key, team or organization.
    pub kind: AccountKind,
    /// The account's id, as our id generator made it (no spaces).
    pub id: &'a str,
}

impl<'a> Account<'a> {
    /// An API key's account.
    pub fn key(id: &'a str) -> Self {
        Self { kind: AccountKind::Key, id }
    }

    /// A team's account.
    pub fn team(id: &'a str) -> Self {
        Self { kind: AccountKind::Team, id }
    }

    /// An organization's account.
    pub fn org(id: &'a str) -> Self {
        Self { kind: AccountKind::Org, id }
    }
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// Requests per minute; each request costs 1.
    Requests,
    /// Tokens per minute; a request costs its estimated tokens, corrected at settlement.
    Tokens,
}

/// One rate limit to check: `per_minute` units a minute, with a burst of the whole
/// minute's allowance, charged `cost` units if the request is admitted.
#[derive(Debug, Clone, Copy)]
pub struct RateCheck<'a> {
    /// Whose limiter.
    pub account: Account<'a>,
    /// Requests or tokens: each has its own limiter per account.
    pub kind: RateKind,
    /// The limit; 0 refuses everything (reported as `never`).
    pub per_minute: u64,
    /// Units this request uses: 1 for requests, the estimate for tokens. More than
    /// `per_minute` can never pass.
    pub cost: u64,
}

/// One budget to check and reserve against.
#[derive(Debug, Clone, Copy)]
pub struct BudgetCheck<'a> {
    /// Whose budget.
    pub account: Account<'a>,
    /// The most that settled plus reserved spend may reach; `None` for no limit.
    pub limit_spend: Option<MicroUsd>,
    /// The most that settled plus reserved tokens may reach; `None` for no limit.
    pub limit_tokens: Option<u64>,
    /// Settled spend according to the database; Redis is raised to it when behind.
    pub baseline_spend: MicroUsd,
    /// Settled tokens according to the database; Redis is raised to it when behind.
    pub baseline_tokens: u64,
    /// Spend to reserve for this request (its maximum cost). Must not be negative.
    pub spend: MicroUsd,
    /// Tokens to reserve for this request.
    pub tokens: u64,
}

/// The state of one rate limiter, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// The limit per minute.
    pub limit: u64,
    /// Units still available now (after this request when it was admitted).
    pub remaining: u64,
    /// Milliseconds until the limiter is full again.
    pub reset_after_ms: u64,
}

/// Which counter of a budget was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetDimension {
    /// Money (micro-USD).
    Spend,
    /// Tokens.
    Tokens,
}

/// The answer to [`SharedLimits::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every check passed; the limiters advanced and the reservations were made.
    Admitted {
        /// One state per rate check, in the order given.
        rates: Vec<RateState>,
    },
    /// A rate limit refused the request; nothing changed.
    RateLimited {
        /// Index in the rate checks given: the first that can never pass if any, else the
        /// one with the longest wait.
        check: usize,
        /// When a retry can pass the failing limiters (0 when `never`).
        retry_after_ms: u64,
        /// The request costs more than the limit allows in a minute: it can never pass.
        never: bool,
        /// One state per rate check, in the order given, unchanged by this request.
        rates: Vec<RateState>,
    },
    /// A budget refused the request; nothing changed. Reported before any rate limit,
    /// since waiting does not help.
    OverBudget {
        /// Index of the first failing budget in the budget checks given.
        check: usize,
        /// Which of its counters would be exceeded.
        dimension: BudgetDimension,
    },
}

/// One finished request's reservation on one account, to move to actual usage.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    /// Whose budget.
    pub account: Account<'a>,
    /// Spend this instance reserved at admission; released, never below zero.
    pub reserved_spend: MicroUsd,
    /// Tokens this instance reserved at admission; released, never below zero.
    pub reserved_tokens: u64,
    /// What the request really cost; added to the settled spend.
    pub actual_spend: MicroUsd,
    /// Tokens the request really used; added to the settled tokens.
    pub actual_tokens: u64,
}

/// A tokens-per-minute limiter to correct from the estimate charged at admission to the
/// tokens really used: the limiter moves by the difference (back, but never before now).
#[derive(Debug, Clone, Copy)]
pub struct TokenCorrection<'a> {
    /// Whose tokens-per-minute limiter.
    pub account: Account<'a>,
    /// The limit the estimate was charged against.
    pub per_minute: u64,
    /// The cost charged at admission.
    pub estimated: u64,
    /// The tokens really used.
    pub actual: u64,
}

/// An account's counters as Redis holds them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountTotals {
    /// Whether Redis holds the account at all (absent: never touched, or expired).
    pub present: bool,
    /// Settled spend.
    pub spend: MicroUsd,
    /// Settled tokens.
    pub tokens: u64,
    /// Spend reserved by live instances.
    pub reserved_spend: MicroUsd,
    /// Tokens reserved by live instances.
    pub reserved_tokens: u64,
}

/// Why a shared-limits call failed. Any of them means: use the per-instance limits.
#[derive(Debug, thiserror::Error)]
pub enum SharedLimitsError {
    /// The URL or settings are unusable.
    #[error("invalid shared-limits settings: {0}")]
    Config(String),
    /// No answer within the per-call timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis was unreachable a moment ago; no new attempt before the back-off ends.
    #[error("Redis is unreachable; retrying after a back-off")]
    Unavailable,
    /// A connection attempt failed.
    #[error("could not connect to Redis")]
    Connection(#[source] RedisError),
    /// The connection broke during the call.
    #[error("Redis connection failed")]
    Transport(#[source] RedisError),
    /// Redis answered with an error (script error, out of memory, busy…).
    #[error("Redis refused the command")]
    Command(#[source] RedisError),
    /// A script answered something this code does not understand.
    #[error("unexpected reply from a shared-limits script")]
    Reply,
    /// The caller passed something invalid (a negative amount).
    #[error("invalid shared-limits input: {0}")]
    Invalid(&'static str),
}

impl SharedLimitsError {
    fn from_redis(e: RedisError) -> Self {
        if e.is_io_error() || e.is_unrecoverable_error() { Self::Transport(e) } else { Self::Command(e) }
    }

    /// Whether the connection that saw this error must be replaced.
    fn breaks_connection(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Transport(_))
    }
}

/// Settings of [`SharedLimits`]; [`SharedLimitsConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct SharedLimitsConfig {
    /// Prepended to every Redis key, e.g. `tg:`.
    pub key_prefix: String,
    /// This instance's id, unique among the instances sharing the prefix (a fresh one per
    /// process start is safest).
    pub instance_id: String,
    /// Longest a call may take, connecting included. Default 250 ms.
    pub timeout: Duration,
    /// Wait after a failed connection attempt before the next. Default 1 s.
    pub reconnect_backoff: Duration,
    /// Lifetime of the heartbeat key; call [`SharedLimits::heartbeat`] about three times
    /// per lifetime. Default 15 s.
    pub heartbeat_ttl: Duration,
    /// Lifetime of an idle account hash. Default 1 day.
    pub account_ttl: Duration,
    /// How long a settlement's once-key is remembered. Default 1 hour.
    pub settle_once_ttl: Duration,
}

impl SharedLimitsConfig {
    /// Defaults for everything but the prefix and the instance id.
    pub fn new(key_prefix: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            key_prefix: key_prefix.into(),
            instance_id: instance_id.into(),
            timeout: Duration::from_millis(250),
            reconnect_backoff: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(15),
            account_ttl: Duration::from_secs(24 * 3600),
            settle_once_ttl: Duration::from_secs(3600),
        }
    }
}

/// The client of the shared limits: cheap to share behind an `Arc`, safe to call from
/// any number of tasks at once (they multiplex one connection).
pub struct SharedLimits {
    conn: Connection,
    admit_script: Script,
    settle_script: Script,
    totals_script: Script,
    prefix: String,
    instance_id: String,
    /// `{prefix}inst:`, where heartbeat keys live.
    instance_prefix: String,
    heartbeat_ttl_ms: u64,
    account_ttl_ms: u64,
    settle_once_ttl_ms: u64,
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits").field("prefix", &self.prefix).field("instance_id", &self.instance_id).finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn non_negative(amount: MicroUsd, what: &'static str) -> Result<i64, SharedLimitsError> {
    if amount.0 < 0 { Err(SharedLimitsError::Invalid(what)) } else { Ok(amount.0) }
}

impl SharedLimits {
    /// Checks the settings and URL without connecting; the first call connects.
    pub fn new(url: &str, config: SharedLimitsConfig) -> Result<Self, SharedLimitsError> {
        if config.instance_id.is_empty() {
            return Err(SharedLimitsError::Config("the instance id is empty".to_owned()));
        }
        if config.timeout.is_zero() {
            return Err(SharedLimitsError::Config("the timeout is zero".to_owned()));
        }
        let conn = Connection::new(url, config.timeout, config.reconnect_backoff)?;
        Ok(Self {
            conn,
            admit_script: Script::new(include_str!("admit.lua")),
            settle_script: Script::new(include_str!("settle.lua")),
            totals_script: Script::new(include_str!("totals.lua")),
            instance_prefix: format!("{}inst:", config.key_prefix),
            prefix: config.key_prefix,
            instance_id: config.instance_id,
            heartbeat_ttl_ms: millis(config.heartbeat_ttl),
            account_ttl_ms: millis(config.account_ttl),
            settle_once_ttl_ms: millis(config.settle_once_ttl),
        })
    }

    /// Connects now and announces this instance (a first heartbeat); fails within the
    /// timeout when Redis cannot be reached. Later outages are recovered from by itself.
    pub async fn connect(url: &str, config: SharedLimitsConfig) -> Result<Self, SharedLimitsError> {
        let this = Self::new(url, config)?;
        this.heartbeat().await?;
        Ok(this)
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    fn account_key(&self, account: Account<'_>) -> String {
        format!("{}acct:{}:{}", self.prefix, account.kind.as_str(), account.id)
    }

    fn rate_key(&self, account: Account<'_>, kind: RateKind) -> String {
        let suffix = match kind {
            RateKind::Requests => "rpm",
            RateKind::Tokens => "tpm",
        };
        format!("{}rl:{}:{}:{suffix}", self.prefix, account.kind.as_str(), account.id)
    }

    /// Checks every rate limit and budget in one atomic call; when all pass, charges the
    /// limiters and reserves the budgets (by this instance), else changes nothing.
    pub async fn admit(
        &self,
        rates: &[RateCheck<'_>],
        budgets: &[BudgetCheck<'_>],
    ) -> Result<Admission, SharedLimitsError> {
        if rates.is_empty() && budgets.is_empty() {
            return Ok(Admission::Admitted { rates: Vec::new() });
        }
        let mut inv = self.admit_script.prepare_invoke();
        for r in rates {
            inv.key(self.rate_key(r.account, r.kind));
        }
        for b in budgets {
            inv.key(self.account_key(b.account));
        }
        inv.arg(&self.instance_id)
            .arg(&self.instance_prefix)
            .arg(self.heartbeat_ttl_ms)
            .arg(self.account_ttl_ms)
            .arg(rates.len())
            .arg(budgets.len());
        for r in rates {
            inv.arg(r.per_minute).arg(r.cost);
        }
        for b in budgets {
            match b.limit_spend {
                Some(limit) => inv.arg(limit.0),
                None => inv.arg(""),
            };
            match b.limit_tokens {
                Some(limit) => inv.arg(limit),
                None => inv.arg(""),
            };
            inv.arg(non_negative(b.baseline_spend, "negative baseline spend")?)
                .arg(b.baseline_tokens)
                .arg(non_negative(b.spend, "negative spend to reserve")?)
                .arg(b.tokens);
        }
        let reply: Vec<i64> = self.conn.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        parse_admission(&reply, rates.len())
    }

    /// Applies finished requests: releases this instance's reservations, adds the actual
    /// spend and tokens, and corrects token limiters. With `once` (e.g. the request id),
    /// a retry of the same call after an ambiguous failure (a timeout) is not applied
    /// twice: returns `false` when it already was.
    pub async fn settle(
        &self,
        once: Option<&str>,
        settlements: &[Settlement<'_>],
        corrections: &[TokenCorrection<'_>],
    ) -> Result<bool, SharedLimitsError> {
        if settlements.is_empty() && corrections.is_empty() {
            return Ok(true);
        }
        let mut inv = self.settle_script.prepare_invoke();
        inv.key(format!("{}once:{}", self.prefix, once.unwrap_or("")));
        for s in settlements {
            inv.key(self.account_key(s.account));
        }
        for c in corrections {
            inv.key(self.rate_key(c.account, RateKind::Tokens));
        }
        inv.arg(&self.instance_id).arg(self.account_ttl_ms);
        match once {
            Some(_) => inv.arg(self.settle_once_ttl_ms),
            None => inv.arg(""),
        };
        inv.arg(settlements.len()).arg(corrections.len());
        for s in settlements {
            inv.arg(non_negative(s.reserved_spend, "negative reserved spend")?)
                .arg(s.reserved_tokens)
                .arg(non_negative(s.actual_spend, "negative actual spend")?)
                .arg(s.actual_tokens);
        }
        for c in corrections {
            inv.arg(c.per_minute).arg(c.estimated).arg(c.actual);
        }
        let applied: i64 = self.conn.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        Ok(applied == 1)
    }

    /// Marks this instance alive for the heartbeat TTL; its reservations count only while
    /// it is. Call it every third of the TTL.
    pub async fn heartbeat(&self) -> Result<(), SharedLimitsError> {
        let key = format!("{}{}", self.instance_prefix, self.instance_id);
        let ttl = self.heartbeat_ttl_ms;
        self.conn
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ttl).query_async::<()>(&mut c).await
            })
            .await
    }

    /// An account's settled and reserved totals (live instances only), for tests and the
    /// management API.
    pub async fn account_totals(&self, account: Account<'_>) -> Result<AccountTotals, SharedLimitsError> {
        let mut inv = self.totals_script.prepare_invoke();
        inv.key(self.account_key(account)).arg(&self.instance_id).arg(&self.instance_prefix);
        let reply: Vec<i64> = self.conn.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        let [present, spend, tokens, reserved_spend, reserved_tokens] = reply[..] else {
            return Err(SharedLimitsError::Reply);
        };
        Ok(AccountTotals {
            present: present == 1,
            spend: MicroUsd(spend),
            tokens: count(tokens),
            reserved_spend: MicroUsd(reserved_spend),
            reserved_tokens: count(reserved_tokens),
        })
    }

    /// Forgets an account's settled counters (keeping in-flight reservations), so that the
    /// next admission re-seeds them from its baseline: for a budget period that restarts
    /// or a correction made in the database.
    pub async fn forget_settled(&self, account: Account<'_>) -> Result<(), SharedLimitsError> {
        let key = self.account_key(account);
        self.conn
            .run(|mut c| async move {
                redis::cmd("HDEL").arg(key).arg("spend").arg("tokens").query_async::<()>(&mut c).await
            })
            .await
    }
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn parse_admission(reply: &[i64], rate_checks: usize) -> Result<Admission, SharedLimitsError> {
    let [status, check, retry_after_ms, never, dimension, ref states @ ..] = reply[..] else {
        return Err(SharedLimitsError::Reply);
    };
    let check = usize::try_from(check).map_err(|_| SharedLimitsError::Reply)?;
    if status == 2 {
        let dimension = if dimension == 1 { BudgetDimension::Tokens } else { BudgetDimension::Spend };
        return Ok(Admission::OverBudget { check, dimension });
    }
    if states.len() != rate_checks * 3 {
        return Err(SharedLimitsError::Reply);
    }
    let rates = states
        .chunks_exact(3)
        .map(|s| RateState { limit: count(s[0]), remaining: count(s[1]), reset_after_ms: count(s[2]) })
        .collect();
    match status {
        0 => Ok(Admission::Admitted { rates }),
        1 if check < rate_checks => {
            Ok(Admission::RateLimited { check, retry_after_ms: count(retry_after_ms), never: never == 1, rates })
        }
        _ => Err(SharedLimitsError::Reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_replies_parse() {
        let admitted = parse_admission(&[0, 0, 0, 0, 0, 10, 9, 6000], 1).ok();
        assert_eq!(
            admitted,
            Some(Admission::Admitted { rates: vec![RateState { limit: 10, remaining: 9, reset_after_ms: 6000 }] })
        );
        let limited = parse_admission(&[1, 1, 250, 0, 0, 10, 3, 100, 5, 0, 60000], 2).ok();
        assert!(matches!(limited, Some(Admission::RateLimited { check: 1, retry_after_ms: 250, never: false, .. })));
        let over = parse_admission(&[2, 1, 0, 0, 1], 3).ok();
        assert_eq!(over, Some(Admission::OverBudget { check: 1, dimension: BudgetDimension::Tokens }));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse_admission(&[0, 0, 0], 0).is_err());
        assert!(parse_admission(&[0, 0, 0, 0, 0, 1, 2], 1).is_err());
        assert!(parse_admission(&[1, 3, 0, 0, 0, 1, 1, 1], 1).is_err());
        assert!(parse_admission(&[7, 0, 0, 0, 0], 0).is_err());
    }

    #[test]
    fn keys_are_readable() {
        let limits = SharedLimits::new("redis://127.0.0.1:1", SharedLimitsConfig::new("tg:", "i1")).unwrap();
        assert_eq!(limits.account_key(Account::team("t_1")), "tg:acct:team:t_1");
        assert_eq!(limits.rate_key(Account::key("k_1"), RateKind::Tokens), "tg:rl:key:k_1:tpm");
        assert!(SharedLimits::new("not a url", SharedLimitsConfig::new("tg:", "i1")).is_err());
        assert!(SharedLimits::new("redis://127.0.0.1", SharedLimitsConfig::new("tg:", "")).is_err());
    }
}
