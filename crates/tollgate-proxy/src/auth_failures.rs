//! Requests that named no known key (missing, malformed, bad checksum, unknown digest,
//! unknown ephemeral parent, rotated-out secret) become counters per source address and
//! Unix minute instead of one usage row each: the first failure of an address in a minute
//! keeps its row (a sample), the rest are only counted, and past `limit` failures in the
//! minute the address's further failing requests are answered `429`.
//!
//! Invariants: good traffic never touches this (only a refused unknown key does); one
//! record is O(1) under the lock of one shard of [`SHARDS`], chosen by address; the map
//! holds at most `max_addresses` entries — past it, failures are counted under one
//! `other` bucket per minute, so a flood from many addresses cannot grow memory. The server
//! drains the counts ([`AuthFailures::drain`]) into the `auth_failures` table.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Locks the map is split under.
const SHARDS: usize = 32;

/// The address bucket of failures past the entry cap.
pub const OTHER: &str = "other";

/// What to do with one more failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first of its address in this minute: keeps its usage row.
    Sample,
    /// Counted only.
    Count,
    /// Counted, and answered `429` with `Retry-After` (seconds to the next minute).
    Throttle { retry_after_secs: u64 },
}

/// Failures of one address (or of [`OTHER`]) in one Unix minute, to be added to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCount {
    pub minute: i64,
    pub client_ip: String,
    pub failures: i64,
}

#[derive(Default)]
struct Count {
    in_minute: u64,
    unflushed: u64,
}

type Shard = HashMap<(i64, Option<IpAddr>), Count>;

/// The counters, shared by the data plane (records) and the server (drains).
pub struct AuthFailures {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    per_shard: usize,
    overflow: Mutex<HashMap<i64, Count>>,
    /// Failures per address and minute before `429`; 0: never.
    limit: u64,
    total: AtomicU64,
    throttled: AtomicU64,
}

impl AuthFailures {
    /// `limit_per_minute`: failures an address may have in a minute before the next are
    /// throttled (0: off); `max_addresses`: entries held at most.
    pub fn new(limit_per_minute: u64, max_addresses: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            per_shard: max_addresses.div_ceil(SHARDS).max(1),
            overflow: Mutex::default(),
            limit: limit_per_minute,
            total: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Counts one failure of `ip` at `now_ms` (Unix ms) and says what to do with it.
    pub fn record(&self, ip: Option<IpAddr>, now_ms: i64) -> Verdict {
        let minute = now_ms.div_euclid(60_000);
        self.total.fetch_add(1, Relaxed);
        let shard = &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS];
        let (n, sampled) = {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let len = map.len();
            match map.get_mut(&(minute, ip)) {
                Some(c) => (bump(c), true),
                None if len < self.per_shard => (bump(map.entry((minute, ip)).or_default()), true),
                None => {
                    drop(map);
                    let mut over = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
                    (bump(over.entry(minute).or_default()), false)
                }
            }
        };
        if self.limit > 0 && n > self.limit {
            self.throttled.fetch_add(1, Relaxed);
            let into_minute = now_ms.rem_euclid(60_000) as u64 / 1000;
            return Verdict::Throttle { retry_after_secs: (60 - into_minute).max(1) };
        }
        if n == 1 && sampled { Verdict::Sample } else { Verdict::Count }
    }

    /// Takes the counts not yet drained; forgets the entries of minutes before `now_ms`'s.
    pub fn drain(&self, now_ms: i64) -> Vec<FailureCount> {
        let current = now_ms.div_euclid(60_000);
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|(minute, ip), c| {
                if c.unflushed > 0 {
                    let client_ip = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
                    out.push(FailureCount { minute: *minute, client_ip, failures: take(c) });
                }
                *minute >= current
            });
        }
        let mut over = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        over.retain(|minute, c| {
            if c.unflushed > 0 {
                out.push(FailureCount { minute: *minute, client_ip: OTHER.to_owned(), failures: take(c) });
            }
            *minute >= current
        });
        out
    }

    /// Every failure counted since start (`tollgate_auth_failures_total`).
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Those answered `429` (`tollgate_auth_failures_throttled_total`).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Relaxed)
    }

    /// The Prometheus text of both counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP tollgate_auth_failures_total Requests that named no known API key.\n\
             # TYPE tollgate_auth_failures_total counter\ntollgate_auth_failures_total {}\n\
             # HELP tollgate_auth_failures_throttled_total Of those, answered 429 (address over the limit).\n\
             # TYPE tollgate_auth_failures_throttled_total counter\ntollgate_auth_failures_throttled_total {}\n",
            self.total(),
            self.throttled()
        );
    }
}

fn bump(c: &mut Count) -> u64 {
    c.in_minute += 1;
    c.unflushed += 1;
    c.in_minute
}

fn take(c: &mut Count) -> i64 {
    i64::try_from(std::mem::take(&mut c.unflushed)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn first_of_each_address_and_minute_is_sampled_then_counted_then_throttled() {
        let f = AuthFailures::new(3, 1000);
        let t = 60_000 * 100 + 15_000;
        assert_eq!(f.record(ip(1), t), Verdict::Sample);
        assert_eq!(f.record(ip(1), t), Verdict::Count);
        assert_eq!(f.record(ip(2), t), Verdict::Sample);
        assert_eq!(f.record(ip(1), t), Verdict::Count);
        assert_eq!(f.record(ip(1), t), Verdict::Throttle { retry_after_secs: 45 });
        // The next minute starts afresh.
        assert_eq!(f.record(ip(1), t + 60_000), Verdict::Sample);
        let mut drained = f.drain(t + 60_000);
        drained.sort_by(|a, b| (a.minute, &a.client_ip).cmp(&(b.minute, &b.client_ip)));
        let got: Vec<_> = drained.iter().map(|c| (c.minute, c.client_ip.as_str(), c.failures)).collect();
        assert_eq!(got, [(100, "10.0.0.1", 4), (100, "10.0.0.2", 1), (101, "10.0.0.1", 1)]);
        assert!(f.drain(t + 60_000).is_empty(), "drained counts are not drained twice");
        // The current minute's entry is kept, so the throttle still sees its count.
        assert_eq!(f.record(ip(1), t + 60_000), Verdict::Count);
        assert_eq!((f.total(), f.throttled()), (7, 1));
    }

    #[test]
    fn many_addresses_are_capped_and_counted_under_other() {
        let f = AuthFailures::new(0, 64);
        let t = 0;
        let mut sampled = 0;
        for a in 0..=255u8 {
            for b in 0..40u8 {
                if f.record(Some(IpAddr::from([10, 1, a, b])), t) == Verdict::Sample {
                    sampled += 1;
                }
            }
        }
        let held: usize = f.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 64, "{held} entries");
        assert_eq!(sampled, held);
        let drained = f.drain(t);
        let total: i64 = drained.iter().map(|c| c.failures).sum();
        assert_eq!(total, 256 * 40);
        assert!(drained.iter().any(|c| c.client_ip == OTHER && c.failures > 0));
        assert_eq!(f.throttled(), 0, "limit 0 never throttles");
    }
}
