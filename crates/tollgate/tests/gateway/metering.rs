//! Metering that is right with money: budgets and token quotas hold under concurrency
//! (reservations before the call, settlement after, exactly once), rate limits answer with
//! `x-ratelimit-*` and `Retry-After`, and every usage row is rolled into the key, team and
//! organization counters and the ledger.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate_testkit::app::{ADMIN_TOKEN, PgDatabase, TestApp};
use tollgate_testkit::client::Answer;
use tollgate_testkit::redis_prefix::RedisPrefix;

const ADMIN: Option<&str> = Some("test-admin-token");

/// A chat request whose output is capped: the fake never answers more than `max_tokens`,
/// so a reservation of prompt estimate + `max_tokens` covers the real cost.
fn capped_chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "max_tokens": 5,
        "messages": [{ "role": "user", "content": "count my tokens please" }]
    })
}

async fn api_key(app: &TestApp, body: Value) -> (String, String) {
    app.api_key(&body).await.unwrap()
}

async fn chat(app: &TestApp, key: &str, body: &Value) -> Answer {
    app.client.post_json(&app.url("/v1/chat/completions"), Some(key), body).await.unwrap()
}

/// Waits until the store holds `n` chat usage rows for `key_id`; returns their total cost.
async fn settled_spend(app: &TestApp, key_id: &str, n: usize) -> i64 {
    super::chat_rows(app, key_id, n).await.iter().map(|r| r.cost.0).sum()
}

/// Fires `n` requests at once, alternately streamed and not; returns (accepted, refused).
async fn burst(apps: &[&TestApp], key: &str, n: usize) -> (usize, usize) {
    let calls = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        async move {
            let res = chat(app, key, &capped_chat(i % 2 == 0)).await;
            match res.status.as_u16() {
                200 => {
                    // A stream is only billed once it ends: read it (the helper does).
                    assert!(!res.text().contains("\"error\""), "{}", res.text());
                    (1, 0)
                }
                429 => {
                    assert_eq!(res.error_code(), "insufficient_quota", "{}", res.text());
                    (0, 1)
                }
                other => panic!("unexpected {other}: {}", res.text()),
            }
        }
    });
    join_all(calls).await.into_iter().fold((0, 0), |(a, r), (x, y)| (a + x, r + y))
}

#[tokio::test]
async fn a_budget_holds_under_200_concurrent_mixed_requests() {
    let app = TestApp::start().await.unwrap();
    // Each request reserves ~25 micro-USD and costs 4 (5 prompt + 5 completion tokens):
    // unchecked, the 200 would spend 800.
    let budget_micros = 500;
    let (id, key) = api_key(&app, json!({ "name": "budgeted", "budget_usd": 0.0005 })).await;
    let (accepted, refused) = burst(&[&app], &key, 200).await;
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
    let spent = settled_spend(&app, &id, 200).await;
    assert!(spent <= budget_micros, "spent {spent} of a {budget_micros} budget");

    // The key's counter and the rows agree, and what is left cannot cover another
    // request's reservation once the budget is nearly spent.
    let k = app.client.get(&app.url(&format!("/api/v1/keys/{id}")), ADMIN).await.unwrap().json();
    assert_eq!((k["spend_usd"].as_f64().unwrap() * 1e6).round() as i64, spent);
    loop {
        let res = chat(&app, &key, &capped_chat(false)).await;
        if res.status == 429 {
            assert_eq!(res.error_code(), "insufficient_quota");
            assert!(res.json()["error"]["message"].as_str().unwrap().contains("budget"));
            break;
        }
        assert_eq!(res.status, 200);
    }
    let all: i64 =
        app.all_usage().await.unwrap().iter().filter(|r| r.key_id.as_deref() == Some(&id)).map(|r| r.cost.0).sum();
    assert!(all <= budget_micros, "spent {all} of {budget_micros}");
}

#[tokio::test]
async fn a_token_quota_is_never_overrun_and_the_key_becomes_exhausted() {
    let app = TestApp::start().await.unwrap();
    let (id, key) = api_key(&app, json!({ "name": "quota", "token_quota": 400 })).await;
    let (accepted, refused) = burst(&[&app], &key, 60).await;
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
    let rows: Vec<_> = {
        settled_spend(&app, &id, 60).await;
        app.all_usage().await.unwrap().into_iter().filter(|r| r.key_id.as_deref() == Some(&id)).collect()
    };
    let tokens: u64 = rows.iter().map(|r| r.prompt_tokens + r.completion_tokens).sum();
    assert!(tokens <= 400, "used {tokens} of 400 tokens");
    // Spend the rest with tiny requests until nothing fits, then the key is exhausted.
    let tiny = json!({ "model": "gpt-4o-mini", "max_tokens": 1, "messages": [{ "role": "user", "content": "x" }] });
    while chat(&app, &key, &tiny).await.status == 200 {}
    let res = chat(&app, &key, &tiny).await;
    assert_eq!((res.status.as_u16(), res.error_code().as_str()), (429, "insufficient_quota"));
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("token quota"));
    // A quota at exactly what was used: the key is exhausted (derived, nothing written),
    // and listed so.
    let key_url = app.url(&format!("/api/v1/keys/{id}"));
    let patch = |quota: i64| {
        let body = json!({ "token_quota": quota });
        let (client, url) = (&app.client, &key_url);
        async move { client.patch_json(url, ADMIN_TOKEN, &body).await.unwrap() }
    };
    // Once every row is written, the key's counter equals the rows' tokens.
    let used = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let k = app.client.get(&app.url(&format!("/api/v1/keys/{id}")), ADMIN).await.unwrap().json();
        let in_rows: u64 = app
            .all_usage()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.key_id.as_deref() == Some(&id))
            .map(|r| r.prompt_tokens + r.completion_tokens)
            .sum();
        if k["tokens_used"].as_u64() == Some(in_rows) {
            break in_rows as i64;
        }
    };
    assert!(used <= 400, "used {used} of 400");
    let status = patch(used).await.json()["status"].as_str().unwrap().to_owned();
    assert_eq!(status, "exhausted");
    let listed = app.client.get(&app.url("/api/v1/keys?status=exhausted"), ADMIN).await.unwrap().json();
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    // Raising the quota brings it back.
    let r = patch(100_000).await;
    assert_eq!(r.json()["status"], "active", "{}", r.text());
}

#[tokio::test]
async fn rpm_limits_report_headers_and_retry_after() {
    let app = TestApp::start().await.unwrap();
    let (_, key) = api_key(&app, json!({ "name": "rpm", "rpm": 3, "tpm": 100000 })).await;
    for expected_remaining in [2, 1, 0] {
        let res = chat(&app, &key, &capped_chat(false)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(res.header("x-ratelimit-remaining-requests"), Some(expected_remaining.to_string().as_str()));
        assert!(res.header("x-ratelimit-reset-requests").is_some());
        assert_eq!(res.header("x-ratelimit-limit-tokens"), Some("100000"));
    }
    let res = chat(&app, &key, &capped_chat(false)).await;
    assert_eq!((res.status.as_u16(), res.error_code().as_str()), (429, "rate_limit_exceeded"));
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(res.header("x-ratelimit-remaining-requests"), Some("0"));

    // A key without limits carries no rate headers.
    let (_, free) = api_key(&app, json!({ "name": "free" })).await;
    let res = chat(&app, &free, &capped_chat(false)).await;
    assert_eq!(res.status, 200);
    assert!(res.header("x-ratelimit-limit-requests").is_none());
}

#[tokio::test]
async fn a_tpm_limit_refuses_requests_that_can_never_fit() {
    let app = TestApp::start().await.unwrap();
    let (_, key) = api_key(&app, json!({ "name": "tpm", "tpm": 50 })).await;
    let mut big = capped_chat(false);
    big["max_tokens"] = 500.into();
    let res = chat(&app, &key, &big).await;
    assert_eq!((res.status.as_u16(), res.error_code().as_str()), (429, "rate_limit_exceeded"));
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("Lower max_tokens"));
    assert!(app.fake.requests().is_empty(), "a refused request is not forwarded");
}

#[tokio::test]
async fn a_team_budget_is_shared_by_its_keys() {
    let app = TestApp::start().await.unwrap();
    let team = app
        .client
        .post_json(&app.url("/api/v1/teams"), ADMIN, &json!({ "name": "research", "budget_usd": 0.0002 }))
        .await
        .unwrap();
    assert_eq!(team.status, 201, "{}", team.text());
    let team_id = team.json()["id"].as_str().unwrap().to_owned();
    let (a_id, a) = api_key(&app, json!({ "name": "a", "team_id": team_id })).await;
    let (b_id, b) = api_key(&app, json!({ "name": "b", "team_id": team_id })).await;
    let (x, _) = burst(&[&app], &a, 50).await;
    let (y, _) = burst(&[&app], &b, 50).await;
    assert!(x + y > 0);
    let spent = settled_spend(&app, &a_id, 50).await + settled_spend(&app, &b_id, 50).await;
    assert!(spent <= 200, "the team spent {spent} of 200 (unchecked: 400)");
    // Settling below the reservations freed a little room; use it up from either key.
    let res = loop {
        let res = chat(&app, &b, &capped_chat(false)).await;
        if res.status != 200 {
            break res;
        }
    };
    assert_eq!(res.status, 429);
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("team"), "{}", res.text());
}

#[tokio::test]
async fn two_instances_on_postgres_share_spend_through_the_store() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let top = format!("database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"", db.url);
    let extra = "[limits]\ncounter_refresh_ms = 100";
    let mut one = TestApp::start_with_top(&top, extra).await.unwrap();
    let mut two = TestApp::start_with_top(&top, extra).await.unwrap();
    let (id, key) = api_key(&one, json!({ "name": "shared", "budget_usd": 0.0002 })).await;
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    // Sequential use alternating between the instances: each sees the other's spend
    // through the store's counters, so the budget holds within one refresh interval.
    let mut answered = 0;
    for i in 0..200 {
        let app = if i % 2 == 0 { &one } else { &two };
        let res = chat(app, &key, &capped_chat(false)).await;
        if res.status == 429 {
            break;
        }
        assert_eq!(res.status, 200);
        answered += 1;
        // Slower than the writer flush plus the counter refresh.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let spent = settled_spend(&one, &id, answered + 1).await;
    assert!(spent <= 200, "spent {spent} of 200 across two instances");
    assert!(answered < 200, "the budget was never reached");
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn the_balance_is_the_sum_of_the_ledger_and_refuses_what_it_cannot_cover() {
    let app = TestApp::start_with("[billing]\nenforce_balance = true").await.unwrap();
    let (id, key) = api_key(&app, json!({ "name": "draws-on-balance" })).await;
    let res = chat(&app, &key, &capped_chat(false)).await;
    assert_eq!((res.status.as_u16(), res.error_code().as_str()), (429, "insufficient_quota"));
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("balance"), "{}", res.text());

    let bad = app.client.post_json(&app.url("/api/v1/billing/credits"), ADMIN, &json!({ "amount_usd": -1 })).await;
    assert_eq!(bad.unwrap().status, 400, "only adjustments may be negative");
    let credit = app
        .client
        .post_json(&app.url("/api/v1/billing/credits"), ADMIN, &json!({ "amount_usd": 0.0003, "note": "test" }))
        .await
        .unwrap();
    assert_eq!(credit.status, 201, "{}", credit.text());
    assert_eq!(credit.json()["balance_after_usd"], 0.0003);
    // The data plane learns of the credit through the change feed.
    let (mut answered, mut calls) = (0, 1);
    for _ in 0..400 {
        let res = chat(&app, &key, &capped_chat(false)).await;
        calls += 1;
        match res.status.as_u16() {
            200 => answered += 1,
            429 if answered > 0 => break,
            429 => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("{other}: {}", res.text()),
        }
    }
    assert!(answered > 0);
    let spent = settled_spend(&app, &id, calls).await;
    assert!(spent <= 300, "spent {spent} of a 300 balance");

    // Balance = credit - usage = the sum of the ledger, once the writer has caught up.
    let store = app.store().await.unwrap();
    let summary = app.client.get(&app.url("/api/v1/billing"), ADMIN).await.unwrap().json();
    let org = summary["organization_id"].as_str().unwrap();
    assert_eq!(summary["balance_micros"], 300 - spent);
    assert_eq!(store.ledger_sum(org).await.unwrap().0, 300 - spent);
    let ledger = app.client.get(&app.url("/api/v1/billing/ledger"), ADMIN).await.unwrap().json();
    let kinds: Vec<&str> = ledger["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"topup") && kinds.contains(&"usage"), "{kinds:?}");
    let audit = app.client.get(&app.url("/api/v1/audit?action=billing.credit"), ADMIN).await.unwrap().json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
    store.close().await;
}

/// Two instances on one PostgreSQL database sharing limits through Redis.
async fn two_instances_with_redis(redis: &RedisPrefix, db: &PgDatabase, extra: &str) -> (TestApp, TestApp) {
    let top = format!(
        "database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"\nredis_url = \"{}\"",
        db.url, redis.url
    );
    let extra = format!("{}{extra}", redis.limits_toml());
    let one = TestApp::start_with_top(&top, &extra).await.unwrap();
    let two = TestApp::start_with_top(&top, &extra).await.unwrap();
    (one, two)
}

#[tokio::test]
async fn with_redis_a_budget_holds_across_two_instances_under_concurrency() {
    let Some(redis) = RedisPrefix::new() else { return };
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let (mut one, mut two) = two_instances_with_redis(&redis, &db, "").await;
    let (id, key) = api_key(&one, json!({ "name": "shared", "budget_usd": 0.0005 })).await;
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    let (accepted, refused) = burst(&[&one, &two], &key, 200).await;
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
    let spent = settled_spend(&one, &id, 200).await;
    assert!(spent <= 500, "spent {spent} of 500 across two instances (unchecked: 800)");
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn with_redis_an_rpm_limit_holds_across_two_instances() {
    let Some(redis) = RedisPrefix::new() else { return };
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let (mut one, mut two) = two_instances_with_redis(&redis, &db, "").await;
    let (_, key) = api_key(&one, json!({ "name": "rpm", "rpm": 10 })).await;
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    let calls = (0..40).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        let key = key.clone();
        async move { chat(app, &key, &capped_chat(false)).await.status.as_u16() }
    });
    let statuses = join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "accepted per window across both instances: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn without_redis_each_instance_enforces_its_share_never_unlimited() {
    // Redis configured but unreachable (nothing listens on port 1).
    let top = "redis_url = \"redis://127.0.0.1:1\"";
    let app = TestApp::start_with_top(top, "[limits]\nfallback_share = 2\nredis_timeout_ms = 100").await.unwrap();
    let (_, key) = api_key(&app, json!({ "name": "rpm", "rpm": 10 })).await;
    let mut ok = 0;
    for _ in 0..12 {
        let res = chat(&app, &key, &capped_chat(false)).await;
        match res.status.as_u16() {
            200 => ok += 1,
            429 => assert_eq!(res.error_code(), "rate_limit_exceeded"),
            other => panic!("{other}: {}", res.text()),
        }
    }
    assert_eq!(ok, 5, "half of rpm 10 on this instance while Redis is away");
}

#[tokio::test]
async fn prices_set_through_the_api_bill_the_next_request_and_reset_to_the_config() {
    let app = TestApp::start().await.unwrap();
    let (_, key) = api_key(&app, json!({ "name": "priced" })).await;
    let models = app.client.get(&app.url("/api/v1/models"), ADMIN).await.unwrap().json();
    let mini = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "gpt-4o-mini").unwrap().clone();
    assert_eq!((mini["input_price_per_mtok"].as_f64(), mini["price_source"].as_str()), (Some(0.15), Some("config")));

    let model_url = app.url("/api/v1/models/gpt-4o-mini");
    let set = |body: Value| {
        let (client, url) = (&app.client, &model_url);
        async move { client.patch_json(url, ADMIN_TOKEN, &body).await.unwrap() }
    };
    assert_eq!(set(json!({ "input_price_per_mtok": -1 })).await.status, 400);
    let r = set(json!({ "input_price_per_mtok": 1.5, "output_price_per_mtok": 6 })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["price_source"], "api");

    // 5 prompt + 5 completion tokens: 7.5 + 30 = 37.5 → 38 micro-USD (was 4 at the config's).
    let cost_of_next = || async {
        let res = chat(&app, &key, &capped_chat(false)).await;
        assert_eq!(res.status, 200);
        let rid = res.header("x-request-id").unwrap().to_owned();
        app.usage_row(&rid).await.unwrap().cost.0
    };
    let mut cost = 0;
    for _ in 0..100 {
        cost = cost_of_next().await;
        if cost == 38 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cost, 38);
    let r = app.client.delete(&app.url("/api/v1/models/gpt-4o-mini/price"), ADMIN_TOKEN).await.unwrap();
    assert_eq!(r.json()["price_source"], "config");
    for _ in 0..100 {
        cost = cost_of_next().await;
        if cost == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cost, 4);
    let audit = app.client.get(&app.url("/api/v1/audit?action=model.price"), ADMIN).await.unwrap().json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn without_redis_two_instances_share_rpm_by_halves_and_a_burst_overshoot_is_bounded() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let top = format!("database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"", db.url);
    let extra = "[limits]\nfallback_share = 2\ncounter_refresh_ms = 100";
    let mut one = TestApp::start_with_top(&top, extra).await.unwrap();
    let mut two = TestApp::start_with_top(&top, extra).await.unwrap();

    // RPM 10 across two instances, each enforcing half.
    let (_, key) = api_key(&one, json!({ "name": "rpm", "rpm": 10 })).await;
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    let calls = (0..40).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        let key = key.clone();
        async move { chat(app, &key, &capped_chat(false)).await.status.as_u16() }
    });
    let ok = join_all(calls).await.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "two halves of rpm 10");

    // A simultaneous burst on a budget: each instance sees the other's spend only through
    // the store, so the overshoot is bounded by what the other admits — here at most one
    // more budget (the README's bound: (instances − 1) × budget).
    let (id, key) = api_key(&one, json!({ "name": "burst", "budget_usd": 0.0002 })).await;
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    burst(&[&one, &two], &key, 200).await;
    let spent = settled_spend(&one, &id, 200).await;
    println!("PostgreSQL without Redis, 200 simultaneous requests over two instances: spent {spent} of a 200 budget");
    assert!(spent <= 2 * 200, "spent {spent}: beyond the documented bound");
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}
