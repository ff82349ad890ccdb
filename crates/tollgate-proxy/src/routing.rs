//! Choosing the channel that serves a request, and remembering which channels fail.
//!
//! Selection (PRODUCT §4): only the channels the key may use (its provider scope and, when
//! it is pinned to one, its group); the highest priority first; weighted random among
//! equals; channels whose circuit is open are skipped. The result is an ordered plan — the
//! first choice, then the failover order — which the handler walks while an attempt fails
//! before any byte reached the client.
//!
//! Circuit breaker, per channel: `failure_threshold` consecutive failures open it for
//! `open_for`; after that one request (the probe) may try it — success closes it, failure
//! opens it again. Health outlives snapshot versions: the registry ([`Health`]) hands the
//! same [`ChannelHealth`] to every snapshot, keyed by model, provider and upstream model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::accounts::clock_micros;

/// When a channel's circuit opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30) }
    }
}

/// A channel's circuit: consecutive failures, and until when it is open.
#[derive(Debug, Default)]
pub struct ChannelHealth {
    consecutive_failures: AtomicU32,
    /// Clock micros until which the circuit is open; 0 when closed.
    open_until: AtomicU64,
    /// Set while the half-open probe is in flight: only one request probes.
    probing: AtomicBool,
    successes: AtomicU64,
    failures: AtomicU64,
}

/// What the management API and `/metrics` show of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    pub successes: u64,
    pub failures: u64,
}

impl ChannelHealth {
    pub fn report(&self) -> HealthReport {
        HealthReport {
            state: self.state(clock_micros()),
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            successes: self.successes.load(Ordering::Acquire),
            failures: self.failures.load(Ordering::Acquire),
        }
    }

    fn state(&self, now: u64) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if now < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Whether a request may go to this channel now. In half-open state only the first
    /// caller gets `true` (it becomes the probe).
    pub fn admits(&self, now: u64) -> bool {
        match self.state(now) {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen => {
                self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
            }
        }
    }

    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn record_failure(&self, policy: BreakerPolicy, now: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = self.probing.swap(false, Ordering::AcqRel);
        if n >= policy.failure_threshold || was_probe {
            let open_for = u64::try_from(policy.open_for.as_micros()).unwrap_or(u64::MAX);
            self.open_until.store(now.saturating_add(open_for).max(1), Ordering::Release);
        }
    }
}

/// The registry that gives every snapshot version the same health objects.
#[derive(Debug, Default)]
pub struct Health {
    channels: Mutex<HashMap<String, Arc<ChannelHealth>>>,
}

impl Health {
    /// The health of the channel serving `model` through `provider` as `upstream_model`.
    pub fn of(&self, model: &str, provider: &str, upstream_model: &str) -> Arc<ChannelHealth> {
        let key = format!("{model}\u{1f}{provider}\u{1f}{upstream_model}");
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default().clone()
    }
}

/// What selection needs to know of a channel.
pub trait Candidate {
    fn priority(&self) -> i32;
    fn weight(&self) -> u32;
    fn health(&self) -> &ChannelHealth;
}

/// The order in which to try `candidates` (already filtered to what the key may use):
/// priority descending; within a priority, a weighted random order; channels whose
/// circuit does not admit a request now are left out. `roll` gives uniform random numbers
/// (injected for tests).
pub fn plan<'a, C: Candidate>(candidates: &[&'a C], now: u64, roll: impl FnMut() -> u64) -> Vec<&'a C> {
    ordered(candidates.iter().copied().filter(|c| c.health().admits(now)).collect(), roll)
}

/// Priority descending, weighted random within each priority.
fn ordered<'a, C: Candidate>(mut admitted: Vec<&'a C>, mut roll: impl FnMut() -> u64) -> Vec<&'a C> {
    admitted.sort_by_key(|c| std::cmp::Reverse(c.priority()));
    let mut out = Vec::with_capacity(admitted.len());
    let mut rest = admitted.as_slice();
    while let Some(first) = rest.first() {
        let tier = rest.iter().take_while(|c| c.priority() == first.priority()).count();
        let mut pool: Vec<&'a C> = rest[..tier].to_vec();
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|c| u64::from(c.weight().max(1))).sum();
            let mut pick = roll() % total;
            let i = pool
                .iter()
                .position(|c| {
                    let w = u64::from(c.weight().max(1));
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            out.push(pool.remove(i));
        }
        rest = &rest[tier..];
    }
    out
}

/// As [`plan`], trying every candidate whatever its circuit says (when all are open).
pub fn plan_ignoring_health<'a, C: Candidate>(candidates: &[&'a C], roll: impl FnMut() -> u64) -> Vec<&'a C> {
    ordered(candidates.to_vec(), roll)
}

/// A fast, non-cryptographic random number (weights and jitter).
pub fn random_u64() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(clock_micros() | 1);
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Exponential backoff with full jitter before retry `attempt` (1-based), never past the
/// time left before the deadline.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, left: Duration, roll: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(cap);
    let micros = u64::try_from(exp.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(roll % micros).min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct C {
        name: &'static str,
        priority: i32,
        weight: u32,
        health: ChannelHealth,
    }

    impl Candidate for C {
        fn priority(&self) -> i32 {
            self.priority
        }
        fn weight(&self) -> u32 {
            self.weight
        }
        fn health(&self) -> &ChannelHealth {
            &self.health
        }
    }

    fn c(name: &'static str, priority: i32, weight: u32) -> C {
        C { name, priority, weight, health: ChannelHealth::default() }
    }

    #[test]
    fn highest_priority_first_then_the_rest_in_order() {
        let (a, b, x) = (c("a", 10, 1), c("b", 10, 1), c("x", 0, 1));
        let mut n = 0;
        let order: Vec<_> = plan(&[&x, &a, &b], 1, || {
            n += 1;
            n
        })
        .iter()
        .map(|c| c.name)
        .collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "x", "the lower priority only after every higher one");
    }

    #[test]
    fn weights_share_the_first_choice() {
        let (a, b) = (c("a", 1, 3), c("b", 1, 1));
        let mut firsts = HashMap::new();
        for _ in 0..4000 {
            let first = plan(&[&a, &b], 1, random_u64)[0].name;
            *firsts.entry(first).or_insert(0) += 1;
        }
        let share = f64::from(firsts["a"]) / 4000.0;
        assert!((0.70..0.80).contains(&share), "weight 3 of 4 chose a {share}");
    }

    #[test]
    fn a_circuit_opens_after_consecutive_failures_and_a_probe_closes_it() {
        let policy = BreakerPolicy { failure_threshold: 3, open_for: Duration::from_secs(10) };
        let h = ChannelHealth::default();
        let t0 = 1_000_000;
        for _ in 0..2 {
            h.record_failure(policy, t0);
        }
        assert!(h.admits(t0), "two failures of three: still closed");
        h.record_failure(policy, t0);
        assert_eq!(h.state(t0), CircuitState::Open);
        assert!(!h.admits(t0 + 9_000_000));
        // After the open period: exactly one probe.
        let later = t0 + 10_000_001;
        assert!(h.admits(later));
        assert!(!h.admits(later), "only one probe at a time");
        h.record_failure(policy, later);
        assert_eq!(h.state(later + 1), CircuitState::Open, "a failed probe opens it again");
        let again = later + 10_000_001;
        assert!(h.admits(again));
        h.record_success();
        assert_eq!(h.report().state, CircuitState::Closed);
        assert_eq!((h.report().successes, h.report().failures), (1, 4));
        assert!(h.admits(again) && h.admits(again));
    }

    #[test]
    fn open_channels_are_left_out_of_the_plan() {
        let policy = BreakerPolicy { failure_threshold: 1, open_for: Duration::from_secs(10) };
        let (a, b) = (c("a", 5, 1), c("b", 1, 1));
        a.health.record_failure(policy, 100);
        let order: Vec<_> = plan(&[&a, &b], 200, random_u64).iter().map(|c| c.name).collect();
        assert_eq!(order, ["b"]);
    }

    #[test]
    fn backoff_grows_and_respects_the_deadline() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        assert!(backoff(1, base, cap, Duration::from_secs(9), u64::MAX - 1) < base);
        assert!(backoff(3, base, cap, Duration::from_secs(9), u64::MAX - 1) < Duration::from_millis(400));
        assert!(backoff(30, base, cap, Duration::from_secs(9), u64::MAX - 1) <= cap);
        assert_eq!(backoff(3, base, cap, Duration::from_millis(5), u64::MAX - 1), Duration::from_millis(5));
    }
}
