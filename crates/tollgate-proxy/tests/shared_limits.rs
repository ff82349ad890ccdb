#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Shared limits against a real Redis (`TOLLGATE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; `off` skips). Each test works under its own random key
//! prefix and deletes its keys when done, even when it fails.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tollgate_core::MicroUsd;
use tollgate_proxy::shared_limits::{
    Account, AccountTotals, Admission, BudgetCheck, BudgetDimension, RateCheck, RateKind, Settlement, SharedLimits,
    SharedLimitsConfig, SharedLimitsError, TokenCorrection,
};

fn redis_url() -> Option<String> {
    let url = std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    if url == "off" {
        println!("TOLLGATE_TEST_REDIS_URL=off: shared-limits test skipped");
        return None;
    }
    Some(url)
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// A key prefix of its own; its keys are deleted on drop.
struct Fixture {
    url: String,
    prefix: String,
}

impl Fixture {
    fn new() -> Option<Self> {
        let url = redis_url()?;
        Some(Self { url, prefix: format!("tgtest:{:016x}:", random_u64()) })
    }

    fn config(&self, instance: &str) -> SharedLimitsConfig {
        let mut config = SharedLimitsConfig::new(self.prefix.clone(), instance);
        config.timeout = Duration::from_secs(2);
        config.account_ttl = Duration::from_secs(600);
        config
    }

    async fn limits(&self, instance: &str) -> Arc<SharedLimits> {
        Arc::new(SharedLimits::connect(&self.url, self.config(instance)).await.expect("Redis reachable"))
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

fn rpm(id: &str, per_minute: u64) -> RateCheck<'_> {
    RateCheck { account: Account::key(id), kind: RateKind::Requests, per_minute, cost: 1 }
}

fn tpm(id: &str, per_minute: u64, cost: u64) -> RateCheck<'_> {
    RateCheck { account: Account::key(id), kind: RateKind::Tokens, per_minute, cost }
}

fn budget(account: Account<'_>, limit: i64, spend: i64) -> BudgetCheck<'_> {
    BudgetCheck {
        account,
        limit_spend: Some(MicroUsd(limit)),
        limit_tokens: None,
        baseline_spend: MicroUsd::ZERO,
        baseline_tokens: 0,
        spend: MicroUsd(spend),
        tokens: 0,
    }
}

fn settlement(account: Account<'_>, reserved: i64, actual: i64) -> Settlement<'_> {
    Settlement {
        account,
        reserved_spend: MicroUsd(reserved),
        reserved_tokens: 0,
        actual_spend: MicroUsd(actual),
        actual_tokens: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_admits_exactly_the_limit_across_two_instances() {
    let Some(fx) = Fixture::new() else { return };
    let (a, b) = (fx.limits("a").await, fx.limits("b").await);
    const LIMIT: u64 = 10;

    let mut calls = JoinSet::new();
    for i in 0..60 {
        let limits = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.spawn(async move { limits.admit(&[rpm("k1", LIMIT)], &[]).await.unwrap() });
    }
    let mut admitted = 0;
    let mut remaining_seen = Vec::new();
    while let Some(result) = calls.join_next().await {
        if let Admission::Admitted { rates } = result.unwrap() {
            admitted += 1;
            remaining_seen.push(rates[0].remaining);
        }
    }
    assert_eq!(admitted, LIMIT);
    remaining_seen.sort_unstable();
    assert_eq!(remaining_seen, (0..LIMIT).collect::<Vec<_>>(), "each admission saw one fewer remaining");

    match a.admit(&[rpm("k1", LIMIT)], &[]).await.unwrap() {
        Admission::RateLimited { check, retry_after_ms, never, rates } => {
            assert_eq!(check, 0);
            assert!(!never);
            // The next slot opens one emission interval (6 s) after the burst.
            assert!(retry_after_ms > 0 && retry_after_ms <= 60_000 / LIMIT, "retry after {retry_after_ms} ms");
            assert_eq!(rates[0].limit, LIMIT);
            assert_eq!(rates[0].remaining, 0);
            assert!(rates[0].reset_after_ms > 50_000 && rates[0].reset_after_ms <= 60_000);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn rpm_headers_count_down_and_reset_grows() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;
    let mut last_reset = 0;
    for expected in (0..5).rev() {
        let Admission::Admitted { rates } = limits.admit(&[rpm("k1", 5)], &[]).await.unwrap() else {
            panic!("within the burst");
        };
        assert_eq!(rates[0].remaining, expected);
        assert!(rates[0].reset_after_ms > last_reset);
        last_reset = rates[0].reset_after_ms;
    }
    assert!((59_000..=60_000).contains(&last_reset), "reset after {last_reset} ms");
    // Another key has its own limiter.
    assert!(matches!(limits.admit(&[rpm("k2", 5)], &[]).await.unwrap(), Admission::Admitted { .. }));
}

#[tokio::test]
async fn tpm_never_and_corrections() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;

    match limits.admit(&[rpm("k1", 100), tpm("k1", 1000, 1500)], &[]).await.unwrap() {
        Admission::RateLimited { check: 1, retry_after_ms: 0, never: true, rates } => {
            assert_eq!(rates[1].remaining, 1000);
        }
        other => panic!("an estimate above the limit can never pass: {other:?}"),
    }
    let Admission::Admitted { rates } = limits.admit(&[tpm("k1", 1000, 1000)], &[]).await.unwrap() else {
        panic!("the whole minute's tokens at once");
    };
    assert_eq!(rates[0].remaining, 0);
    let refused = limits.admit(&[tpm("k1", 1000, 100)], &[]).await.unwrap();
    assert!(matches!(refused, Admission::RateLimited { never: false, .. }), "{refused:?}");

    // The request used 200 tokens, not 1000: 800 come back.
    let correction = TokenCorrection { account: Account::key("k1"), per_minute: 1000, estimated: 1000, actual: 200 };
    assert!(limits.settle(None, &[], &[correction]).await.unwrap());
    let Admission::Admitted { rates } = limits.admit(&[tpm("k1", 1000, 100)], &[]).await.unwrap() else {
        panic!("the correction gave tokens back");
    };
    // 1000 - 200 - 100, plus whatever refilled in the few milliseconds since.
    assert!((700..=705).contains(&rates[0].remaining), "remaining {}", rates[0].remaining);

    // The next used 900 instead of 100: the limiter moves forward past the limit.
    let correction = TokenCorrection { account: Account::key("k1"), per_minute: 1000, estimated: 100, actual: 900 };
    limits.settle(None, &[], &[correction]).await.unwrap();
    let refused = limits.admit(&[tpm("k1", 1000, 1)], &[]).await.unwrap();
    assert!(matches!(refused, Admission::RateLimited { never: false, .. }), "{refused:?}");

    // Giving back more than was ever charged leaves a full limiter, not credit.
    let correction = TokenCorrection { account: Account::key("k1"), per_minute: 1000, estimated: 50_000, actual: 0 };
    limits.settle(None, &[], &[correction]).await.unwrap();
    let Admission::Admitted { rates } = limits.admit(&[tpm("k1", 1000, 1)], &[]).await.unwrap() else {
        panic!("limiter full again");
    };
    assert_eq!(rates[0].remaining, 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_exceed_the_budget() {
    let Some(fx) = Fixture::new() else { return };
    let (a, b) = (fx.limits("a").await, fx.limits("b").await);
    let mut calls = JoinSet::new();
    for i in 0..80 {
        let limits = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.spawn(async move {
            let admission = limits.admit(&[], &[budget(Account::team("t1"), 1000, 30)]).await.unwrap();
            (i % 2 == 0, admission)
        });
    }
    let (mut by_a, mut by_b) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            (true, Admission::Admitted { .. }) => by_a += 1,
            (false, Admission::Admitted { .. }) => by_b += 1,
            (_, Admission::OverBudget { check: 0, dimension: BudgetDimension::Spend }) => {}
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(by_a + by_b, 1000 / 30);
    let totals = a.account_totals(Account::team("t1")).await.unwrap();
    assert_eq!(totals.reserved_spend, MicroUsd(30 * (by_a + by_b)));
    assert_eq!(totals.spend, MicroUsd::ZERO);

    // A settles its requests at 10 each: its reservations become spend.
    let settlements: Vec<_> = (0..by_a).map(|_| settlement(Account::team("t1"), 30, 10)).collect();
    assert!(a.settle(None, &settlements, &[]).await.unwrap());
    let totals = b.account_totals(Account::team("t1")).await.unwrap();
    assert_eq!(totals.spend, MicroUsd(10 * by_a));
    assert_eq!(totals.reserved_spend, MicroUsd(30 * by_b));
}

#[tokio::test]
async fn settle_moves_reservations_and_applies_once() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;
    let org = Account::org("o1");
    let check = BudgetCheck {
        account: org,
        limit_spend: Some(MicroUsd(10_000)),
        limit_tokens: Some(5_000),
        baseline_spend: MicroUsd::ZERO,
        baseline_tokens: 0,
        spend: MicroUsd(500),
        tokens: 1_000,
    };
    assert!(matches!(limits.admit(&[], &[check]).await.unwrap(), Admission::Admitted { .. }));
    let totals = limits.account_totals(org).await.unwrap();
    assert_eq!(
        totals,
        AccountTotals {
            present: true,
            spend: MicroUsd::ZERO,
            tokens: 0,
            reserved_spend: MicroUsd(500),
            reserved_tokens: 1_000
        }
    );

    let done = Settlement {
        account: org,
        reserved_spend: MicroUsd(500),
        reserved_tokens: 1_000,
        actual_spend: MicroUsd(120),
        actual_tokens: 300,
    };
    assert!(limits.settle(Some("req-1"), &[done], &[]).await.unwrap());
    assert!(!limits.settle(Some("req-1"), &[done], &[]).await.unwrap(), "a retry is not applied twice");
    let totals = limits.account_totals(org).await.unwrap();
    assert_eq!((totals.spend, totals.tokens), (MicroUsd(120), 300));
    assert_eq!((totals.reserved_spend, totals.reserved_tokens), (MicroUsd::ZERO, 0));
    let fields: Vec<String> =
        redis::cmd("HKEYS").arg(format!("{}acct:org:o1", fx.prefix)).query(&mut fx.raw()).unwrap();
    assert!(
        !fields.iter().any(|f| f.starts_with("rs:") || f.starts_with("rt:")),
        "fields at zero are deleted: {fields:?}"
    );

    // Releasing more than is reserved leaves nothing negative.
    limits.settle(None, &[settlement(org, 999, 0)], &[]).await.unwrap();
    let totals = limits.account_totals(org).await.unwrap();
    assert_eq!(totals.reserved_spend, MicroUsd::ZERO);
    assert_eq!(totals.spend, MicroUsd(120));

    // Negative amounts are refused before reaching Redis.
    let bad = limits.settle(None, &[settlement(org, -1, 0)], &[]).await;
    assert!(matches!(bad, Err(SharedLimitsError::Invalid(_))), "{bad:?}");
}

#[tokio::test]
async fn baselines_only_raise_the_counters() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;
    let key = Account::key("k1");
    let with_baseline = |baseline: i64, tokens: u64| BudgetCheck {
        baseline_spend: MicroUsd(baseline),
        baseline_tokens: tokens,
        ..budget(key, 1_000, 0)
    };

    limits.admit(&[], &[with_baseline(700, 50)]).await.unwrap();
    let totals = limits.account_totals(key).await.unwrap();
    assert_eq!((totals.spend, totals.tokens), (MicroUsd(700), 50), "a higher baseline raises Redis");

    limits.admit(&[], &[with_baseline(100, 10)]).await.unwrap();
    let totals = limits.account_totals(key).await.unwrap();
    assert_eq!((totals.spend, totals.tokens), (MicroUsd(700), 50), "a lower baseline changes nothing");

    let over = limits.admit(&[], &[BudgetCheck { spend: MicroUsd(301), ..with_baseline(0, 0) }]).await.unwrap();
    assert_eq!(over, Admission::OverBudget { check: 0, dimension: BudgetDimension::Spend });
    let fits = limits.admit(&[], &[BudgetCheck { spend: MicroUsd(300), ..with_baseline(0, 0) }]).await.unwrap();
    assert!(matches!(fits, Admission::Admitted { .. }));

    let tokens = BudgetCheck { limit_tokens: Some(100), tokens: 51, ..budget(Account::team("t1"), 1_000, 0) };
    let first = BudgetCheck { baseline_tokens: 50, tokens: 0, ..tokens };
    limits.admit(&[], &[first]).await.unwrap();
    let over = limits.admit(&[], &[budget(Account::org("o1"), 1_000, 0), tokens]).await.unwrap();
    assert_eq!(over, Admission::OverBudget { check: 1, dimension: BudgetDimension::Tokens });

    // Forgetting the settled counters re-seeds them from the next baseline.
    limits.forget_settled(key).await.unwrap();
    limits.admit(&[], &[with_baseline(200, 0)]).await.unwrap();
    let totals = limits.account_totals(key).await.unwrap();
    assert_eq!(totals.spend, MicroUsd(200));
    assert_eq!(totals.reserved_spend, MicroUsd(300), "reservations survive");
}

#[tokio::test]
async fn a_dead_instances_reservations_stop_counting() {
    let Some(fx) = Fixture::new() else { return };
    let (a, b) = (fx.limits("a").await, fx.limits("b").await);
    let team = Account::team("t1");

    assert!(matches!(b.admit(&[], &[budget(team, 1_000, 800)]).await.unwrap(), Admission::Admitted { .. }));
    assert!(matches!(a.admit(&[], &[budget(team, 1_000, 300)]).await.unwrap(), Admission::OverBudget { .. }));

    // b's heartbeat lapses (its process died).
    let _: () = redis::cmd("DEL").arg(format!("{}inst:b", fx.prefix)).query(&mut fx.raw()).unwrap();
    assert_eq!(a.account_totals(team).await.unwrap().reserved_spend, MicroUsd::ZERO);
    assert!(matches!(a.admit(&[], &[budget(team, 1_000, 300)]).await.unwrap(), Admission::Admitted { .. }));
    let fields: Vec<String> =
        redis::cmd("HKEYS").arg(format!("{}acct:team:t1", fx.prefix)).query(&mut fx.raw()).unwrap();
    assert_eq!(fields, vec!["rs:a".to_owned()], "the dead reservation was deleted");

    // A live heartbeat keeps a reservation counting.
    b.heartbeat().await.unwrap();
    assert!(matches!(b.admit(&[], &[budget(team, 1_000, 600)]).await.unwrap(), Admission::Admitted { .. }));
    assert_eq!(a.account_totals(team).await.unwrap().reserved_spend, MicroUsd(900));
}

#[tokio::test]
async fn a_refused_admission_changes_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;
    let rates = [rpm("k1", 5), tpm("k1", 1000, 100)];

    let over = limits.admit(&rates, &[budget(Account::key("k1"), 1_000, 5_000)]).await.unwrap();
    assert!(matches!(over, Admission::OverBudget { check: 0, .. }));
    let Admission::Admitted { rates: states } =
        limits.admit(&rates, &[budget(Account::key("k1"), 1_000, 100)]).await.unwrap()
    else {
        panic!("a good budget passes");
    };
    assert_eq!((states[0].remaining, states[1].remaining), (4, 900), "the refusal did not charge the limiters");

    // The other way round: a rate refusal reserves no budget.
    for _ in 0..4 {
        limits.admit(&[rpm("k1", 5)], &[]).await.unwrap();
    }
    let limited = limits.admit(&rates, &[budget(Account::key("k1"), 1_000, 100)]).await.unwrap();
    assert!(matches!(limited, Admission::RateLimited { check: 0, never: false, .. }), "{limited:?}");
    assert_eq!(limits.account_totals(Account::key("k1")).await.unwrap().reserved_spend, MicroUsd(100));
    let Admission::Admitted { rates: states } = limits.admit(&[tpm("k1", 1000, 100)], &[]).await.unwrap() else {
        panic!("tokens were not charged by the refused request");
    };
    assert_eq!(states[0].remaining, 800);
}

#[tokio::test]
async fn a_bill_above_the_reservation_is_settled_whole_and_the_account_then_admits_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let limits = fx.limits("a").await;
    let key = Account::key("k1");
    assert!(matches!(limits.admit(&[], &[budget(key, 1_000, 400)]).await.unwrap(), Admission::Admitted { .. }));
    // The provider billed 1,000 for a 400 reservation: all of it is settled.
    assert!(limits.settle(None, &[settlement(key, 400, 1_000)], &[]).await.unwrap());
    let totals = limits.account_totals(key).await.unwrap();
    assert_eq!((totals.spend, totals.reserved_spend), (MicroUsd(1_000), MicroUsd::ZERO));
    // At its limit the account refuses even a free request (as the per-instance check).
    let free = limits.admit(&[], &[budget(key, 1_000, 0)]).await.unwrap();
    assert!(matches!(free, Admission::OverBudget { check: 0, .. }), "{free:?}");
    let mut quota = budget(key, 5_000, 0);
    quota.limit_tokens = Some(10);
    quota.baseline_tokens = 10;
    let at_quota = limits.admit(&[], &[quota]).await.unwrap();
    assert!(matches!(at_quota, Admission::OverBudget { check: 0, dimension: BudgetDimension::Tokens }), "{at_quota:?}");
}

#[tokio::test]
async fn unreachable_redis_fails_fast() {
    if redis_url().is_none() {
        return;
    }
    let mut config = SharedLimitsConfig::new("tgtest:none:", "a");
    config.timeout = Duration::from_millis(250);

    // Nothing listens: refused at once.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let started = Instant::now();
    let refused = SharedLimits::connect(&format!("redis://{closed}"), config.clone()).await;
    assert!(matches!(refused, Err(SharedLimitsError::Connection(_) | SharedLimitsError::Timeout(_))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Something accepts and never answers: the timeout ends the wait.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let hung = SharedLimits::connect(&format!("redis://{silent}"), config.clone()).await;
    assert!(matches!(hung, Err(SharedLimitsError::Timeout(_) | SharedLimitsError::Connection(_))), "{hung:?}");
    assert!(started.elapsed() < Duration::from_millis(750), "took {:?}", started.elapsed());

    // Lazily built, a failed attempt makes the next calls fail at once until the back-off ends.
    let lazy = SharedLimits::new(&format!("redis://{silent}"), config).unwrap();
    assert!(lazy.admit(&[rpm("k1", 5)], &[]).await.is_err());
    let started = Instant::now();
    let fast = lazy.admit(&[rpm("k1", 5)], &[]).await;
    assert!(matches!(fast, Err(SharedLimitsError::Unavailable)), "{fast:?}");
    assert!(started.elapsed() < Duration::from_millis(50));
    hold.abort();
}

/// A TCP relay to Redis that can be cut and restored on the same port.
struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self { addr, upstream, task: Some(tokio::spawn(Self::serve(listener, upstream))) }
    }

    async fn serve(listener: TcpListener, upstream: SocketAddr) {
        // Dropping this set (when the relay is cut) closes every relayed connection.
        let mut conns = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(Self::serve(listener, self.upstream)));
    }
}

#[tokio::test]
async fn reconnects_when_redis_comes_back() {
    let Some(fx) = Fixture::new() else { return };
    let info = redis::Client::open(fx.url.as_str()).unwrap().get_connection_info().addr.to_string();
    let Ok(upstream) = info.parse::<SocketAddr>() else {
        println!("Redis address {info} is not a plain TCP address: reconnect test skipped");
        return;
    };
    let mut relay = Relay::start(upstream).await;
    let mut config = fx.config("a");
    config.timeout = Duration::from_millis(250);
    config.reconnect_backoff = Duration::from_millis(100);
    let limits = SharedLimits::connect(&format!("redis://{}", relay.addr), config).await.unwrap();
    assert!(matches!(limits.admit(&[rpm("k1", 10)], &[]).await.unwrap(), Admission::Admitted { .. }));

    relay.cut().await;
    for _ in 0..3 {
        let started = Instant::now();
        assert!(limits.admit(&[rpm("k1", 10)], &[]).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
    }

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match limits.admit(&[rpm("k1", 10)], &[]).await {
            Ok(Admission::Admitted { rates }) => {
                assert_eq!(rates[0].remaining, 8, "state survived the outage");
                break;
            }
            other => assert!(Instant::now() < deadline, "not reconnected: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.cut().await;
}
