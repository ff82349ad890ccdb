//! Money, token and rate counters of the accounts a request is charged to — its key, the
//! key's team and the team's organization — as this instance holds them in memory.
//!
//! An [`Account`] outlives snapshot versions: the registry ([`Accounts`]) hands the same
//! `Arc` to every snapshot built after it, so counters survive key edits and reloads.
//!
//! Counting rule: `settled` is the store's counter merged with `max` (counters in the
//! store only grow) plus what this instance settled since; `reserved` is what requests in
//! flight on this instance hold. A reservation is admitted only while
//! `settled + reserved + amount <= limit`, so on one instance the overshoot of a limit is
//! bounded by what admitted requests cost beyond their reservation (never, when the
//! reservation is the request's maximum). With several instances and no Redis, each one
//! sees the others' spend once it is in the store (see the README's accuracy note).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use crate::shared_limits::RateState;

/// Money and token counters of a key, team or organization.
#[derive(Debug, Default)]
pub struct Account {
    spend: AtomicI64,
    tokens: AtomicI64,
    reserved_spend: AtomicI64,
    reserved_tokens: AtomicI64,
    pub(crate) requests_rate: Gcra,
    pub(crate) tokens_rate: Gcra,
}

/// What an account may use; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// Micro-USD.
    pub budget: Option<i64>,
    pub token_quota: Option<i64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl AccountLimits {
    pub fn has_budget_or_quota(&self) -> bool {
        self.budget.is_some() || self.token_quota.is_some()
    }

    pub fn has_rate(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// Settled and reserved amounts of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountTotals {
    pub spend: i64,
    pub tokens: i64,
    pub reserved_spend: i64,
    pub reserved_tokens: i64,
}

impl Account {
    /// Raises the settled counters to what the store holds (they never go down: what this
    /// instance settled but has not written yet must not be forgotten).
    pub fn merge_stored(&self, spend: i64, tokens: i64) {
        self.spend.fetch_max(spend, Ordering::AcqRel);
        self.tokens.fetch_max(tokens, Ordering::AcqRel);
    }

    pub fn totals(&self) -> AccountTotals {
        AccountTotals {
            spend: self.spend.load(Ordering::Acquire),
            tokens: self.tokens.load(Ordering::Acquire),
            reserved_spend: self.reserved_spend.load(Ordering::Acquire),
            reserved_tokens: self.reserved_tokens.load(Ordering::Acquire),
        }
    }

    /// Holds `spend` and `tokens` if both fit under their limits; nothing is held if
    /// either does not. An account already at a limit admits nothing, not even a free
    /// request.
    pub(crate) fn try_reserve(&self, budget: Option<i64>, quota: Option<i64>, spend: i64, tokens: i64) -> bool {
        if !reserve_within(&self.reserved_spend, &self.spend, budget, spend) {
            return false;
        }
        if !reserve_within(&self.reserved_tokens, &self.tokens, quota, tokens) {
            self.reserved_spend.fetch_sub(spend, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Turns a reservation into the real amounts. Settled first, released second: a
    /// concurrent check may briefly see both (too much, never too little).
    pub(crate) fn settle(&self, reserved_spend: i64, reserved_tokens: i64, spend: i64, tokens: i64) {
        self.spend.fetch_add(spend, Ordering::AcqRel);
        self.tokens.fetch_add(tokens, Ordering::AcqRel);
        self.reserved_spend.fetch_sub(reserved_spend, Ordering::AcqRel);
        self.reserved_tokens.fetch_sub(reserved_tokens, Ordering::AcqRel);
    }
}

/// Adds `amount` to `reserved` if the limit allows it: refused when the settled amount
/// alone has reached the limit, or when settled + reserved + amount would pass it.
fn reserve_within(reserved: &AtomicI64, settled: &AtomicI64, limit: Option<i64>, amount: i64) -> bool {
    let Some(limit) = limit else {
        reserved.fetch_add(amount, Ordering::AcqRel);
        return true;
    };
    let mut held = reserved.load(Ordering::Acquire);
    loop {
        let settled = settled.load(Ordering::Acquire);
        if settled >= limit || settled.saturating_add(held).saturating_add(amount) > limit {
            return false;
        }
        match reserved.compare_exchange_weak(held, held + amount, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => held = now,
        }
    }
}

/// The registry that gives every snapshot version the same account objects.
#[derive(Debug, Default)]
pub struct Accounts {
    keys: Mutex<HashMap<String, Arc<Account>>>,
    teams: Mutex<HashMap<String, Arc<Account>>>,
    orgs: Mutex<HashMap<String, Arc<Account>>>,
}

fn get_or_insert(map: &Mutex<HashMap<String, Arc<Account>>>, id: &str) -> Arc<Account> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(a) = map.get(id) {
        return a.clone();
    }
    let a = Arc::new(Account::default());
    map.insert(id.to_owned(), a.clone());
    a
}

fn existing(map: &Mutex<HashMap<String, Arc<Account>>>, id: &str) -> Option<Arc<Account>> {
    map.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
}

impl Accounts {
    pub fn key(&self, id: &str) -> Arc<Account> {
        get_or_insert(&self.keys, id)
    }

    pub fn team(&self, id: &str) -> Arc<Account> {
        get_or_insert(&self.teams, id)
    }

    pub fn org(&self, id: &str) -> Arc<Account> {
        get_or_insert(&self.orgs, id)
    }

    /// The key's account if this instance has one (counter refreshes skip unknown keys).
    pub fn existing_key(&self, id: &str) -> Option<Arc<Account>> {
        existing(&self.keys, id)
    }

    pub fn existing_team(&self, id: &str) -> Option<Arc<Account>> {
        existing(&self.teams, id)
    }

    pub fn existing_org(&self, id: &str) -> Option<Arc<Account>> {
        existing(&self.orgs, id)
    }

    /// Drops a deleted key's account.
    pub fn forget_key(&self, id: &str) {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

/// The answer of one rate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateOutcome {
    Allowed(RateState),
    Limited {
        retry_after_ms: u64,
        /// The cost alone exceeds the limit: waiting will not help.
        never: bool,
        state: RateState,
    },
}

const MINUTE_MICROS: u64 = 60_000_000;

/// A per-minute limit with a burst of the whole minute, as a generic cell rate algorithm:
/// one atomic "theoretical arrival time" (µs since this process's start).
#[derive(Debug, Default)]
pub struct Gcra {
    tat: AtomicU64,
}

/// Microseconds since the first call (a monotonic clock for the limiters).
pub(crate) fn clock_micros() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // Offset by a minute so that "now" is never below a zero TAT's full-burst window.
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX).saturating_add(MINUTE_MICROS)
}

fn interval(per_minute: u64) -> u64 {
    (MINUTE_MICROS / per_minute.max(1)).max(1)
}

impl Gcra {
    /// Admits `cost` units if they fit in the last minute's allowance.
    pub(crate) fn check(&self, per_minute: u64, cost: u64, now: u64) -> RateOutcome {
        let t = interval(per_minute);
        let mut stored = self.tat.load(Ordering::Acquire);
        loop {
            let tat = stored.max(now);
            let new_tat = tat.saturating_add(cost.saturating_mul(t));
            let ahead = new_tat - now;
            if ahead > MINUTE_MICROS {
                let remaining = (MINUTE_MICROS.saturating_sub(tat - now)) / t;
                let state = RateState { limit: per_minute, remaining, reset_after_ms: (tat - now).div_ceil(1000) };
                return RateOutcome::Limited {
                    retry_after_ms: (ahead - MINUTE_MICROS).div_ceil(1000),
                    never: cost > per_minute,
                    state,
                };
            }
            match self.tat.compare_exchange_weak(stored, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let remaining = (MINUTE_MICROS - ahead) / t;
                    return RateOutcome::Allowed(RateState {
                        limit: per_minute,
                        remaining,
                        reset_after_ms: ahead.div_ceil(1000),
                    });
                }
                Err(v) => stored = v,
            }
        }
    }

    /// Moves the arrival time by `delta` units (a correction after the real token count,
    /// or a rollback); never before `now`.
    pub(crate) fn adjust(&self, per_minute: u64, delta: i64, now: u64) {
        let t = interval(per_minute);
        let shift = delta.unsigned_abs().saturating_mul(t);
        let _ = self.tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |stored| {
            let tat = stored.max(now);
            Some(if delta >= 0 { tat.saturating_add(shift) } else { tat.saturating_sub(shift).max(now) })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_limit() {
        let a = Account::default();
        assert!(a.try_reserve(Some(100), None, 60, 0));
        assert!(!a.try_reserve(Some(100), None, 60, 0), "60 + 60 > 100");
        assert!(a.try_reserve(Some(100), None, 40, 0));
        // Settle the first below its reservation: room comes back.
        a.settle(60, 0, 10, 0);
        assert_eq!(a.totals(), AccountTotals { spend: 10, tokens: 0, reserved_spend: 40, reserved_tokens: 0 });
        assert!(a.try_reserve(Some(100), None, 50, 0));
        assert!(!a.try_reserve(Some(100), None, 1, 0));
    }

    #[test]
    fn a_spent_limit_admits_nothing_and_tokens_fail_atomically() {
        let a = Account::default();
        a.merge_stored(100, 0);
        assert!(!a.try_reserve(Some(100), None, 0, 0), "budget spent: even a free request is refused");
        let b = Account::default();
        assert!(!b.try_reserve(Some(100), Some(5), 10, 6));
        assert_eq!(b.totals().reserved_spend, 0, "the money part is given back when tokens do not fit");
        assert!(b.try_reserve(Some(100), Some(5), 10, 5));
    }

    #[test]
    fn stored_counters_only_raise() {
        let a = Account::default();
        a.settle(0, 0, 30, 3);
        a.merge_stored(20, 2);
        assert_eq!((a.totals().spend, a.totals().tokens), (30, 3));
        a.merge_stored(50, 9);
        assert_eq!((a.totals().spend, a.totals().tokens), (50, 9));
    }

    #[test]
    fn concurrent_reservations_stay_within_the_limit() {
        let a = Arc::new(Account::default());
        let admitted = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (a, admitted) = (a.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if a.try_reserve(Some(10_000), None, 7, 0) {
                            admitted.fetch_add(7, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total = admitted.load(Ordering::Relaxed);
        assert!(total <= 10_000 && total > 10_000 - 7, "admitted {total}");
    }

    #[test]
    fn gcra_admits_a_minute_of_burst_then_refills() {
        let g = Gcra::default();
        let now = 1_000_000_000;
        for i in 0..10 {
            match g.check(10, 1, now) {
                RateOutcome::Allowed(s) => assert_eq!(s.remaining, 9 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        let RateOutcome::Limited { retry_after_ms, never, .. } = g.check(10, 1, now) else {
            panic!("the 11th request must wait");
        };
        assert_eq!((retry_after_ms, never), (6_000, false));
        // Six seconds later one more fits.
        assert!(matches!(g.check(10, 1, now + 6_000_000), RateOutcome::Allowed(_)));
        assert!(matches!(g.check(10, 11, now + 60_000_000), RateOutcome::Limited { never: true, .. }));
    }

    #[test]
    fn gcra_corrections_give_back_and_take_more() {
        let g = Gcra::default();
        let now = 1_000_000_000;
        assert!(matches!(g.check(100, 100, now), RateOutcome::Allowed(_)));
        assert!(matches!(g.check(100, 1, now), RateOutcome::Limited { .. }));
        g.adjust(100, -40, now);
        assert!(matches!(g.check(100, 40, now), RateOutcome::Allowed(_)));
        g.adjust(100, -1000, now);
        assert!(matches!(g.check(100, 100, now), RateOutcome::Allowed(_)), "never credited beyond a full minute");
    }
}
