//! One suite, every backend: each test runs on a fresh SQLite file and on a fresh
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! PostgreSQL database (created for the test, dropped after). PostgreSQL comes from
//! `TOLLGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! set it to `off` to run SQLite only.

use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::key::{KeyDigest, KeyRecord, KeySettings, KeyStatus};
use tollgate_core::scope::ModelScope;
use tollgate_core::tenancy::{AccessToken, Organization, Role, Team, TeamSettings, User};
use tollgate_core::usage::{BillingReason, UsageEvent};
use tollgate_store::{
    AuditQuery, Bootstrap, Entity, KeyListQuery, LedgerKind, LedgerQuery, Store, StoreError, UsageQuery,
};

struct TestDb {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin_url, name)) = self.pg_drop {
            let admin = Store::connect(&admin_url).await.expect("admin connect");
            admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop");
            admin.close().await;
        }
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&Store::sqlite_url(&dir.path().join("t.db"))).await.expect("connect");
    store.migrate().await.expect("migrate");
    TestDb { store, _dir: Some(dir), pg_drop: None }
}

async fn postgres() -> Option<TestDb> {
    let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if admin_url == "off" {
        return None;
    }
    let name = tollgate_core::ids::new_id("tgtest").to_lowercase();
    let admin =
        Store::connect(&admin_url).await.expect("PostgreSQL for tests (set TOLLGATE_TEST_POSTGRES_URL=off to skip)");
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.expect("create database");
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').expect("url has a database");
    let store = Store::connect(&format!("{base}/{name}")).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(TestDb { store, _dir: None, pg_drop: Some((admin_url, name)) })
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $( #[tokio::test] async fn $name() { let db = super::sqlite().await; super::$name(&db.store).await; db.cleanup().await; } )*
        }
        mod postgres_backend {
            $( #[tokio::test] async fn $name() { if let Some(db) = super::postgres().await { super::$name(&db.store).await; db.cleanup().await; } } )*
        }
    };
}

on_every_backend!(
    keys_round_trip_and_feed_records_each_insert,
    duplicate_digest_is_a_conflict,
    list_keys_searches_filters_and_pages,
    usage_batches_are_written_and_roll_key_counters,
    usage_filters_each_narrow_and_pages_walk_every_row,
    usage_stream_yields_every_matching_row,
    usage_daily_sums_each_day,
    migrations_are_idempotent,
    updates_round_trip_settings_and_rotation_state,
    delete_removes_and_records,
    audit_is_written_with_the_change_and_filtered,
    tenancy_bootstraps_once_and_scopes_listing,
    notifications_are_recorded_once_and_each_attempt_claimed_once,
    alertable_keys_have_an_expiry_a_budget_or_a_quota,
    the_ledger_sums_to_the_balance_and_usage_is_counted_once,
    model_prices_override_and_reset,
    invites_are_listed_while_pending_and_accepted_once,
    deployment_settings_are_written_once,
    auth_failure_counts_add_up_per_minute_and_address,
);

async fn auth_failure_counts_add_up_per_minute_and_address(s: &Store) {
    s.add_auth_failures(&[(100, "10.0.0.1".into(), 3), (100, "other".into(), 1), (99, "10.0.0.1".into(), 2)])
        .await
        .expect("first flush");
    // A later flush of the same minute and address adds to it rather than replacing it.
    s.add_auth_failures(&[(100, "10.0.0.1".into(), 4)]).await.expect("second flush");
    let rows = s.list_auth_failures(99, 100, 10).await.expect("list");
    assert_eq!(
        rows,
        [(100, "10.0.0.1".to_owned(), 7), (100, "other".to_owned(), 1), (99, "10.0.0.1".to_owned(), 2)],
        "newest minute first, busiest address first"
    );
    assert_eq!(s.list_auth_failures(100, 100, 1).await.expect("limited").len(), 1);
    assert!(s.list_auth_failures(101, 200, 10).await.expect("later").is_empty());
}

async fn deployment_settings_are_written_once(s: &Store) {
    assert_eq!(s.setting("pepper_fingerprint").await.expect("read"), None);
    assert_eq!(s.setting_or_insert("pepper_fingerprint", "aa").await.expect("first"), "aa");
    assert_eq!(s.setting_or_insert("pepper_fingerprint", "bb").await.expect("second"), "aa", "the first writer wins");
    assert_eq!(s.setting("pepper_fingerprint").await.expect("read").as_deref(), Some("aa"));
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        at: 1_000,
        actor: "tester".into(),
        action: action.into(),
        target_type: "key".into(),
        target_id: "key_a".into(),
        before: None,
        after: Some(serde_json::json!({ "name": "alpha" })),
        source_ip: Some("192.0.2.1".into()),
        org_id: Some("org_1".into()),
    }
}

fn key(id: &str, name: &str, digest_byte: u8) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: name.into(),
        org_id: "org_1".into(),
        team_id: "team_1".into(),
        owner_id: format!("usr_{name}"),
        digest: KeyDigest([digest_byte; 32]),
        preview: format!("sk-tg-…{id}"),
        status: KeyStatus::Active,
        created_at: 1_000,
        updated_at: 1_000,
        expires_at: Some(9_000),
        last_used_at: None,
        request_count: 0,
        tokens_used: 0,
        spend: MicroUsd::ZERO,
        settings: KeySettings::default(),
        previous_digest: None,
        rotation_key: None,
        secret_sealed: None,
    }
}

async fn keys_round_trip_and_feed_records_each_insert(s: &Store) {
    let start = s.latest_change_seq().await.expect("seq");
    let k = key("key_a", "alpha", 1);
    s.insert_key(&k, &audit("key.create")).await.expect("insert");
    s.insert_key(&key("key_b", "beta", 2), &audit("key.create")).await.expect("insert");
    assert_eq!(s.get_key("key_a").await.expect("get"), k);
    assert!(matches!(s.get_key("nope").await, Err(StoreError::NotFound)));
    let feed = s.changes_since(start, 10).await.expect("feed");
    let ids: Vec<_> = feed.iter().map(|c| (c.entity, c.entity_id.as_str())).collect();
    assert_eq!(ids, [(Entity::Key, "key_a"), (Entity::Key, "key_b")]);
    assert!(feed[0].seq < feed[1].seq);
    assert_eq!(s.changes_since(feed[1].seq, 10).await.expect("feed"), []);
    assert_eq!(s.latest_change_seq().await.expect("seq"), feed[1].seq);
    assert_eq!(s.all_keys().await.expect("all").len(), 2);
}

async fn duplicate_digest_is_a_conflict(s: &Store) {
    s.insert_key(&key("key_a", "a", 7), &audit("key.create")).await.expect("insert");
    assert!(matches!(s.insert_key(&key("key_b", "b", 7), &audit("key.create")).await, Err(StoreError::Conflict)));
    assert!(matches!(s.insert_key(&key("key_a", "c", 8), &audit("key.create")).await, Err(StoreError::Conflict)));
}

async fn list_keys_searches_filters_and_pages(s: &Store) {
    for (i, name) in ["prod-api", "dev-api", "dev-batch", "stage_x", "100%"].iter().enumerate() {
        s.insert_key(&key(&format!("key_{i}"), name, i as u8), &audit("key.create")).await.expect("insert");
    }
    let names = |v: Vec<KeyRecord>| v.into_iter().map(|k| k.name).collect::<Vec<_>>();
    let all = s.list_keys(&KeyListQuery { limit: 10, ..Default::default() }).await.expect("list");
    assert_eq!(names(all), ["100%", "dev-api", "dev-batch", "prod-api", "stage_x"]);
    let dev =
        s.list_keys(&KeyListQuery { search: Some("DEV".into()), limit: 10, ..Default::default() }).await.expect("list");
    assert_eq!(names(dev), ["dev-api", "dev-batch"]);
    // LIKE wildcards in the search are literal.
    let pct =
        s.list_keys(&KeyListQuery { search: Some("%".into()), limit: 10, ..Default::default() }).await.expect("list");
    assert_eq!(names(pct), ["100%"]);
    let page1 = s.list_keys(&KeyListQuery { limit: 2, ..Default::default() }).await.expect("list");
    let last = page1.last().map(|k| (k.name.clone(), k.id.clone()));
    let page2 = s.list_keys(&KeyListQuery { limit: 2, after: last, ..Default::default() }).await.expect("list");
    assert_eq!(names(page1), ["100%", "dev-api"]);
    assert_eq!(names(page2), ["dev-batch", "prod-api"]);
    let revoked = s
        .list_keys(&KeyListQuery { status: Some(KeyStatus::Revoked), limit: 10, ..Default::default() })
        .await
        .expect("list");
    assert!(revoked.is_empty());
}

fn event(request_id: &str, key_id: Option<&str>, at: i64, cost: i64) -> UsageEvent {
    let mut e = UsageEvent::new(request_id.into(), at, "/v1/chat/completions".into());
    e.key_id = key_id.map(Into::into);
    e.key_name = key_id.map(|_| "alpha".into());
    e.model = Some("demo-chat".into());
    e.provider = Some("demo".into());
    e.prompt_tokens = 10;
    e.completion_tokens = 5;
    e.cost = MicroUsd(cost);
    e.latency_ms = 12;
    e.ttft_ms = Some(3);
    e.stream = true;
    e.client_ip = Some("127.0.0.1".into());
    e.billing_reason = BillingReason::Completed;
    e
}

async fn usage_batches_are_written_and_roll_key_counters(s: &Store) {
    s.insert_key(&key("key_a", "alpha", 1), &audit("key.create")).await.expect("insert");
    let mut batch: Vec<UsageEvent> =
        (0..250).map(|i| event(&format!("req_{i}"), Some("key_a"), 5_000 + i, 7)).collect();
    batch.push(event("req_anon", None, 9_999, 0));
    s.insert_usage(&batch).await.expect("usage");

    let k = s.get_key("key_a").await.expect("key");
    assert_eq!(
        (k.request_count, k.tokens_used, k.spend, k.last_used_at),
        (250, 250 * 15, MicroUsd(250 * 7), Some(5_249))
    );

    let one = s
        .list_usage(&UsageQuery { request_id: Some("req_17".into()), limit: 10, ..Default::default() })
        .await
        .expect("q");
    assert_eq!(one.len(), 1);
    let r = &one[0];
    assert_eq!(
        (r.status, r.prompt_tokens, r.completion_tokens, r.cost, r.ttft_ms, r.stream),
        (200, 10, 5, MicroUsd(7), Some(3), true)
    );
    assert_eq!(r.billing_reason, "completed");

    let page1 =
        s.list_usage(&UsageQuery { key_id: Some("key_a".into()), limit: 100, ..Default::default() }).await.expect("q");
    let page2 = s
        .list_usage(&UsageQuery {
            key_id: Some("key_a".into()),
            limit: 1000,
            before_id: page1.last().map(|r| r.id),
            ..Default::default()
        })
        .await
        .expect("q");
    assert_eq!((page1.len(), page2.len()), (100, 150));
    assert_eq!(page1[0].request_id, "req_249", "newest first");
}

/// Sixty rows spread over two organizations, two teams, three keys, two owners, two
/// models and three statuses, 100 ms apart.
fn usage_spread() -> Vec<UsageEvent> {
    (0..60)
        .map(|i: usize| {
            let key = ["key_a", "key_b", "key_c"][i % 3];
            let mut e = event(&format!("req_s{i}"), Some(key), 10_000 + 100 * i as i64, i as i64);
            e.org_id = Some(if key == "key_c" { "org_2" } else { "org_1" }.into());
            e.team_id = Some(if i % 4 < 2 { "team_1" } else { "team_2" }.into());
            e.user_id = Some(["usr_x", "usr_y"][i % 2].into());
            e.model = Some(if i.is_multiple_of(5) { "other-model" } else { "demo-chat" }.into());
            e.status = if i.is_multiple_of(7) {
                500
            } else if i.is_multiple_of(6) {
                429
            } else {
                200
            };
            e
        })
        .collect()
}

/// The request ids a query returns, checking that they come newest first.
async fn usage_ids(s: &Store, q: &UsageQuery) -> std::collections::BTreeSet<String> {
    let rows = s.list_usage(q).await.expect("list usage");
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    rows.into_iter().map(|r| r.request_id).collect()
}

async fn usage_filters_each_narrow_and_pages_walk_every_row(s: &Store) {
    use tollgate_store::{UsageScope, UsageStatus};
    let events = usage_spread();
    s.insert_usage(&events).await.expect("usage");
    let all = UsageQuery { limit: 1000, ..Default::default() };
    let expect = |keep: &dyn Fn(&UsageEvent) -> bool| -> std::collections::BTreeSet<String> {
        events.iter().filter(|e| keep(e)).map(|e| e.request_id.clone()).collect()
    };
    let text = |v: &Option<String>, want: &str| v.as_deref() == Some(want);
    let cases: Vec<(UsageQuery, std::collections::BTreeSet<String>)> = vec![
        (all.clone(), expect(&|_| true)),
        (UsageQuery { request_id: Some("req_s7".into()), ..all.clone() }, expect(&|e| e.request_id == "req_s7")),
        (UsageQuery { model: Some("other-model".into()), ..all.clone() }, expect(&|e| text(&e.model, "other-model"))),
        (UsageQuery { key_id: Some("key_b".into()), ..all.clone() }, expect(&|e| text(&e.key_id, "key_b"))),
        (UsageQuery { org_id: Some("org_2".into()), ..all.clone() }, expect(&|e| text(&e.org_id, "org_2"))),
        (UsageQuery { team_id: Some("team_2".into()), ..all.clone() }, expect(&|e| text(&e.team_id, "team_2"))),
        (UsageQuery { user_id: Some("usr_y".into()), ..all.clone() }, expect(&|e| text(&e.user_id, "usr_y"))),
        (UsageQuery { status: Some(UsageStatus::Success), ..all.clone() }, expect(&|e| e.status < 400)),
        (UsageQuery { status: Some(UsageStatus::Error), ..all.clone() }, expect(&|e| e.status >= 400)),
        (
            UsageQuery { from: Some(11_000), to: Some(12_000), ..all.clone() },
            expect(&|e| (11_000..12_000).contains(&e.created_at)),
        ),
        (
            UsageQuery { key_ids: Some(vec!["key_a".into(), "key_c".into()]), ..all.clone() },
            expect(&|e| text(&e.key_id, "key_a") || text(&e.key_id, "key_c")),
        ),
        (UsageQuery { key_ids: Some(Vec::new()), ..all.clone() }, expect(&|_| false)),
        (
            UsageQuery {
                org_id: Some("org_1".into()),
                team_id: Some("team_1".into()),
                model: Some("demo-chat".into()),
                status: Some(UsageStatus::Success),
                from: Some(10_500),
                ..all.clone()
            },
            expect(&|e| {
                text(&e.org_id, "org_1")
                    && text(&e.team_id, "team_1")
                    && text(&e.model, "demo-chat")
                    && e.status < 400
                    && e.created_at >= 10_500
            }),
        ),
    ];
    for (q, expected) in cases {
        assert!(!expected.is_empty() || q.key_ids.as_ref().is_some_and(Vec::is_empty), "a case that tests nothing");
        assert_eq!(usage_ids(s, &q).await, expected, "{q:?}");
    }

    // Keyset pages of 7 walk every row of org_1 once, newest first.
    let mut seen = Vec::new();
    let mut q = UsageQuery { org_id: Some("org_1".into()), limit: 7, ..Default::default() };
    loop {
        let page = s.list_usage(&q).await.expect("page");
        seen.extend(page.iter().map(|r| r.id));
        if page.len() < 7 {
            break;
        }
        q.before_id = page.last().map(|r| r.id);
    }
    assert_eq!(seen.len(), 40);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "no duplicates, newest first");

    // One request in a scope: the other organization's row does not exist for it.
    let org_1 = UsageScope { org_id: Some("org_1".into()), key_ids: None };
    let found = s.get_usage_by_request("req_s0", &org_1, 1).await.expect("get").pop();
    assert_eq!(found.map(|r| r.key_id), Some(Some("key_a".into())));
    assert_eq!(s.get_usage_by_request("req_s2", &org_1, 1).await.expect("get"), vec![], "key_c is in org_2");
    let own = UsageScope { key_ids: Some(vec!["key_b".into()]), ..org_1.clone() };
    assert_eq!(s.get_usage_by_request("req_s0", &own, 1).await.expect("get"), vec![]);
    assert!(!s.get_usage_by_request("req_s1", &own, 1).await.expect("get").is_empty());
}

async fn usage_stream_yields_every_matching_row(s: &Store) {
    use futures_util::StreamExt;
    use tollgate_store::UsageStatus;
    let events = usage_spread();
    s.insert_usage(&events).await.expect("usage");
    let q = UsageQuery { status: Some(UsageStatus::Error), limit: 1, ..Default::default() };
    let listed = s.list_usage(&UsageQuery { limit: 1000, ..q.clone() }).await.expect("list");
    let streamed: Vec<_> = s.stream_usage(&q).map(|r| r.expect("row")).collect().await;
    assert_eq!(streamed, listed, "every row, the limit ignored, in the listing's order");
    assert!(listed.len() > 1);
    let nothing = UsageQuery { key_ids: Some(Vec::new()), ..Default::default() };
    assert_eq!(s.stream_usage(&nothing).count().await, 0);

    // Dropped half-way, or read slowly side by side, streams hold no connection.
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut rows = Box::pin(s.stream_usage(&UsageQuery::default()));
        assert!(rows.next().await.is_some());
        open.push(rows);
    }
    s.ping().await.expect("the pool is not starved");
    drop(open);

    // Across pages (an export reads 1,000 rows per query): every row once, newest first.
    let more: Vec<UsageEvent> = (0..2_345).map(|i| event(&format!("req_p{i}"), Some("key_a"), 20_000 + i, 1)).collect();
    s.insert_usage(&more).await.expect("usage");
    let q = UsageQuery { key_id: Some("key_a".into()), ..Default::default() };
    let ids: Vec<i64> = s.stream_usage(&q).map(|r| r.expect("row").id).collect().await;
    assert_eq!(ids.len(), 2_345 + 20);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "no row twice, newest first");
    let from_cursor = UsageQuery { before_id: Some(ids[1_500]), ..q };
    assert_eq!(s.stream_usage(&from_cursor).count().await, ids.len() - 1_501, "a cursor is respected");
}

async fn usage_daily_sums_each_day(s: &Store) {
    use tollgate_store::DailyQuery;
    const DAY: i64 = 86_400_000;
    let mut events = Vec::new();
    for (i, (day, key, model, status, cost)) in [
        (100, "key_a", "m1", 200, 10),
        (100, "key_a", "m2", 500, 0),
        (100, "key_b", "m1", 200, 7),
        (101, "key_a", "m1", 200, 1),
        (103, "key_b", "m2", 429, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(&format!("req_d{i}"), Some(key), day * DAY + 5, cost);
        e.org_id = Some("org_1".into());
        e.model = Some(model.into());
        e.status = status;
        events.push(e);
    }
    let mut elsewhere = event("req_other_org", Some("key_z"), 100 * DAY, 1_000);
    elsewhere.org_id = Some("org_2".into());
    events.push(elsewhere);
    s.insert_usage(&events).await.expect("usage");

    let q = DailyQuery { org_id: Some("org_1".into()), from_day: 99, to_day: 103, ..Default::default() };
    let days = s.usage_daily(&q).await.expect("daily");
    let summary: Vec<_> = days.iter().map(|d| (d.day, d.requests, d.errors, d.cost.0)).collect();
    assert_eq!(summary, [(100, 3, 1, 17), (101, 1, 0, 1), (103, 1, 1, 0)]);
    assert_eq!((days[0].prompt_tokens, days[0].completion_tokens), (30, 15));

    let narrow = |q: DailyQuery| async move {
        s.usage_daily(&q).await.expect("daily").iter().map(|d| (d.day, d.requests)).collect::<Vec<_>>()
    };
    assert_eq!(narrow(DailyQuery { key_id: Some("key_a".into()), ..q.clone() }).await, [(100, 2), (101, 1)]);
    assert_eq!(narrow(DailyQuery { model: Some("m2".into()), ..q.clone() }).await, [(100, 1), (103, 1)]);
    assert_eq!(narrow(DailyQuery { key_ids: Some(vec!["key_b".into()]), ..q.clone() }).await, [(100, 1), (103, 1)]);
    assert_eq!(narrow(DailyQuery { key_ids: Some(Vec::new()), ..q.clone() }).await, []);
    assert_eq!(narrow(DailyQuery { from_day: 101, to_day: 102, ..q.clone() }).await, [(101, 1)]);
    assert_eq!(narrow(DailyQuery { org_id: None, ..q.clone() }).await, [(100, 4), (101, 1), (103, 1)]);
}

async fn migrations_are_idempotent(s: &Store) {
    s.migrate().await.expect("second migrate");
    s.ping().await.expect("ping");
}

async fn updates_round_trip_settings_and_rotation_state(s: &Store) {
    let mut k = key("key_a", "alpha", 1);
    s.insert_key(&k, &audit("key.create")).await.expect("insert");
    let seq = s.latest_change_seq().await.expect("seq");
    k.name = "beta".into();
    k.status = KeyStatus::Inactive;
    k.settings = KeySettings {
        model_scope: ModelScope::List,
        models: vec!["m1".into()],
        ip_allowlist: vec!["10.0.0.0/8".into()],
        budget_micros: Some(5_000_000),
        rpm: Some(60),
        metadata: serde_json::json!({ "env": "prod" }).as_object().cloned().unwrap_or_default(),
        ..Default::default()
    };
    k.previous_digest = Some((KeyDigest([1; 32]), 42_000));
    k.digest = KeyDigest([2; 32]);
    k.rotation_key = Some("abc".into());
    k.updated_at = 2_000;
    s.update_key(&k, &audit("key.update")).await.expect("update");
    assert_eq!(s.get_key("key_a").await.expect("get"), k);
    assert_eq!(s.changes_since(seq, 10).await.expect("feed").len(), 1, "an update is a change");
    let mut ghost = key("key_zz", "ghost", 9);
    ghost.name = "x".into();
    assert!(matches!(s.update_key(&ghost, &audit("key.update")).await, Err(StoreError::NotFound)));
}

async fn delete_removes_and_records(s: &Store) {
    s.insert_key(&key("key_a", "alpha", 1), &audit("key.create")).await.expect("insert");
    let seq = s.latest_change_seq().await.expect("seq");
    s.delete_key("key_a", &audit("key.delete")).await.expect("delete");
    assert!(matches!(s.get_key("key_a").await, Err(StoreError::NotFound)));
    assert_eq!(s.changes_since(seq, 10).await.expect("feed")[0].entity_id, "key_a");
    assert!(matches!(s.delete_key("key_a", &audit("key.delete")).await, Err(StoreError::NotFound)));
}

async fn audit_is_written_with_the_change_and_filtered(s: &Store) {
    s.insert_key(&key("key_a", "alpha", 1), &audit("key.create")).await.expect("insert");
    // A failed write leaves no audit entry behind: they share one transaction.
    assert!(s.insert_key(&key("key_b", "beta", 1), &audit("key.create")).await.is_err());
    let mut k = s.get_key("key_a").await.expect("get");
    k.status = KeyStatus::Revoked;
    s.update_key(&k, &audit("key.revoke")).await.expect("update");
    let all = s.list_audit(&AuditQuery { limit: 10, ..Default::default() }).await.expect("audit");
    let actions: Vec<&str> = all.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(actions, ["key.revoke", "key.create"]);
    assert_eq!(all[0].entry.after, Some(serde_json::json!({ "name": "alpha" })));
    assert_eq!(all[0].entry.source_ip.as_deref(), Some("192.0.2.1"));
    let revokes = s
        .list_audit(&AuditQuery { action: Some("key.revoke".into()), limit: 10, ..Default::default() })
        .await
        .expect("audit");
    assert_eq!(revokes.len(), 1);
    let older =
        s.list_audit(&AuditQuery { before_id: Some(all[0].id), limit: 10, ..Default::default() }).await.expect("audit");
    assert_eq!(older.len(), 1);
    let none = s.list_audit(&AuditQuery { from: Some(5_000), limit: 10, ..Default::default() }).await.expect("audit");
    assert!(none.is_empty());
}

async fn tenancy_bootstraps_once_and_scopes_listing(s: &Store) {
    s.insert_key(&key("key_old", "legacy", 3), &audit("key.create")).await.expect("insert");
    let org = Organization { id: "org_1".into(), name: "Default".into(), created_at: 1 };
    let team = Team {
        id: "team_1".into(),
        org_id: "org_1".into(),
        name: "default".into(),
        settings: TeamSettings::default(),
        created_at: 1,
    };
    let owner = User { id: "usr_owner".into(), email: "o@x.test".into(), created_at: 1 };
    let b = Bootstrap { org: &org, team: &team, owner: &owner, password_hash: "hash" };
    assert!(s.bootstrap(&b).await.expect("bootstrap"));
    assert!(!s.bootstrap(&b).await.expect("bootstrap twice"), "bootstrap runs once");
    assert_eq!(s.role_of("org_1", "usr_owner").await.expect("role"), Some(Role::Owner));
    assert_eq!(s.teams_of("usr_owner").await.expect("teams"), ["team_1"]);
    assert_eq!(s.find_user_by_email("o@x.test").await.expect("find").1, "hash");

    let member = User { id: "usr_m".into(), email: "m@x.test".into(), created_at: 2 };
    s.insert_member(&member, "h2", "org_1", Role::Member, &["team_1".to_owned()], &audit("member.create"))
        .await
        .expect("member");
    assert!(
        matches!(
            s.insert_member(
                &User { id: "usr_dup".into(), ..member.clone() },
                "h",
                "org_1",
                Role::Member,
                &[],
                &audit("x")
            )
            .await,
            Err(StoreError::Conflict)
        ),
        "emails are unique"
    );
    let members: Vec<(String, Role)> =
        s.list_members("org_1").await.expect("members").into_iter().map(|(u, r)| (u.email, r)).collect();
    assert_eq!(members, [("m@x.test".to_owned(), Role::Member), ("o@x.test".to_owned(), Role::Owner)]);
    s.set_role("org_1", "usr_m", Role::Admin, &audit("member.role")).await.expect("role");
    assert_eq!(s.role_of("org_1", "usr_m").await.expect("role"), Some(Role::Admin));

    let mut t2 = Team { id: "team_2".into(), name: "ml".into(), ..team.clone() };
    let seq = s.latest_change_seq().await.expect("seq");
    s.insert_team(&t2, &audit("team.create")).await.expect("team");
    t2.settings.allowed_models = vec!["m1".into()];
    s.update_team(&t2, &audit("team.update")).await.expect("team update");
    assert_eq!(s.get_team("team_2").await.expect("get team"), t2);
    assert!(s.changes_since(seq, 10).await.expect("feed").iter().all(|c| c.entity == Entity::Team));
    assert!(
        matches!(
            s.insert_team(&Team { id: "team_3".into(), ..t2.clone() }, &audit("x")).await,
            Err(StoreError::Conflict)
        ),
        "team names are unique per org"
    );
    s.set_team_member("team_2", "usr_m", true, &audit("team.member_add")).await.expect("join");
    s.set_team_member("team_2", "usr_m", true, &audit("team.member_add")).await.expect("join twice is fine");
    assert_eq!(s.teams_of("usr_m").await.expect("teams"), ["team_1", "team_2"]);

    let token = AccessToken {
        id: "pat_1".into(),
        user_id: "usr_m".into(),
        org_id: "org_1".into(),
        name: "ci".into(),
        digest: KeyDigest([9; 32]),
        preview: "tgp_…abcd".into(),
        created_at: 5,
        expires_at: None,
        last_used_at: None,
    };
    s.insert_access_token(&token, &audit("token.create")).await.expect("token");
    assert_eq!(s.find_access_token(&KeyDigest([9; 32])).await.expect("find token"), token);
    assert!(
        matches!(s.delete_access_token("usr_owner", "pat_1", &audit("x")).await, Err(StoreError::NotFound)),
        "only its user deletes it"
    );
    s.delete_access_token("usr_m", "pat_1", &audit("token.delete")).await.expect("delete token");

    // The legacy key got the default placement; listing filters by org and owner.
    let legacy = s.get_key("key_old").await.expect("legacy");
    assert_eq!(
        (legacy.org_id.as_str(), legacy.team_id.as_str(), legacy.owner_id.as_str()),
        ("org_1", "team_1", "usr_legacy")
    );
    let mine = KeyListQuery {
        org_id: Some("org_1".into()),
        owner_id: Some("usr_legacy".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.list_keys(&mine).await.expect("list").len(), 1);
    let other_org = KeyListQuery { org_id: Some("org_2".into()), limit: 10, ..Default::default() };
    assert!(s.list_keys(&other_org).await.expect("list").is_empty());
}

fn notification(id: &str, kind: &str, detail: &str, channels: &[&str]) -> tollgate_store::NewNotification {
    tollgate_store::NewNotification {
        id: id.into(),
        kind: kind.into(),
        key_id: "key_a".into(),
        detail: detail.into(),
        org_id: Some("org_1".into()),
        owner_id: Some("usr_owner".into()),
        payload: format!("{{\"id\":\"{id}\"}}"),
        created_at: 1_000,
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
    }
}

async fn notifications_are_recorded_once_and_each_attempt_claimed_once(s: &Store) {
    use tollgate_store::{DeliveryOutcome, DeliveryStatus};
    let owner = User { id: "usr_owner".into(), email: "o@x.test".into(), created_at: 1 };
    s.insert_member(&owner, "h", "org_1", Role::Owner, &[], &audit("member.create")).await.expect("owner");

    let first = notification("ntf_1", "budget.threshold", "50", &["webhook", "email"]);
    assert!(s.record_notification(&first).await.expect("record"));
    // The same event again, under another id (another sweep, another server): not recorded.
    assert!(
        !s.record_notification(&notification("ntf_2", "budget.threshold", "50", &["webhook"])).await.expect("again")
    );
    assert!(s.record_notification(&notification("ntf_3", "budget.threshold", "80", &[])).await.expect("other detail"));

    assert!(s.due_deliveries("webhook", 999, 10).await.expect("due").is_empty(), "not due before created_at");
    let email = s.due_deliveries("email", 1_000, 10).await.expect("due");
    let webhook = s.due_deliveries("webhook", 1_000, 10).await.expect("due");
    assert_eq!((email.len(), webhook.len()), (1, 1), "one row per channel, each read by its channel");
    let (email, webhook) = (&email[0], &webhook[0]);
    assert_eq!(email.owner_email.as_deref(), Some("o@x.test"));
    assert_eq!((webhook.kind.as_str(), webhook.key_id.as_str(), webhook.attempts), ("budget.threshold", "key_a", 0));
    assert_eq!((webhook.channel.as_str(), webhook.payload.as_str()), ("webhook", "{\"id\":\"ntf_1\"}"));

    assert!(s.claim_delivery(webhook, 61_000, 1_000).await.expect("claim"));
    assert!(!s.claim_delivery(webhook, 61_000, 1_000).await.expect("claim again"), "one owner per attempt");
    assert!(s.due_deliveries("webhook", 2_000, 10).await.expect("due").is_empty(), "a claimed row is leased");
    assert_eq!(s.due_deliveries("webhook", 61_000, 10).await.expect("due").len(), 1, "until the lease ends");

    let retry = DeliveryOutcome::Retry { error: "HTTP 500".into(), at: 3_000 };
    s.finish_delivery("ntf_1", "webhook", &retry, 2_000).await.expect("retry");
    let again = s.due_deliveries("webhook", 3_000, 10).await.expect("due").pop().expect("due again");
    assert_eq!(again.attempts, 1);
    assert!(s.claim_delivery(&again, 63_000, 3_000).await.expect("claim"));
    s.finish_delivery("ntf_1", "webhook", &DeliveryOutcome::Sent, 3_100).await.expect("sent");
    assert!(s.claim_delivery(email, 63_000, 3_000).await.expect("claim"));
    s.finish_delivery("ntf_1", "email", &DeliveryOutcome::Failed { error: "550 no such user".into() }, 3_100)
        .await
        .expect("failed");
    for channel in ["webhook", "email"] {
        assert!(s.due_deliveries(channel, i64::MAX, 10).await.expect("due").is_empty());
    }
    assert!(matches!(
        s.finish_delivery("ntf_404", "email", &DeliveryOutcome::Sent, 1).await,
        Err(StoreError::NotFound)
    ));

    let all = s.list_notifications(Some("key_a"), 10).await.expect("list");
    assert_eq!(all.iter().map(|n| n.detail.as_str()).collect::<Vec<_>>(), ["80", "50"]);
    let d = &all[1].deliveries;
    assert_eq!((d[0].channel.as_str(), d[0].status, d[0].attempts), ("email", DeliveryStatus::Failed, 1));
    assert_eq!(d[0].last_error.as_deref(), Some("550 no such user"));
    assert_eq!((d[1].channel.as_str(), d[1].status, d[1].attempts), ("webhook", DeliveryStatus::Sent, 2));
    assert_eq!(d[1].last_error, None);
    assert!(all[0].deliveries.is_empty());
    assert!(s.list_notifications(Some("key_b"), 10).await.expect("list").is_empty());
}

async fn alertable_keys_have_an_expiry_a_budget_or_a_quota(s: &Store) {
    let plain = KeyRecord { expires_at: None, ..key("key_plain", "plain", 1) };
    let expiring = key("key_exp", "exp", 2);
    let mut budget = KeyRecord { expires_at: None, ..key("key_budget", "budget", 3) };
    budget.settings.budget_micros = Some(1_000);
    budget.settings.budget_alert_thresholds = vec![50, 80, 100];
    let mut quota = KeyRecord { expires_at: None, ..key("key_quota", "quota", 4) };
    quota.settings.token_quota = Some(30);
    let mut revoked = KeyRecord { status: KeyStatus::Revoked, ..budget.clone() };
    revoked.id = "key_revoked".into();
    revoked.digest = KeyDigest([5; 32]);
    for k in [&plain, &expiring, &budget, &quota, &revoked] {
        s.insert_key(k, &audit("key.create")).await.expect("insert");
    }
    s.insert_usage(&[event("req_1", Some("key_budget"), 5_000, 600), event("req_2", Some("key_quota"), 5_000, 1)])
        .await
        .expect("usage");

    let found = s.alertable_keys().await.expect("alertable");
    assert_eq!(found.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["key_budget", "key_exp", "key_quota"]);
    let b = &found[0];
    assert_eq!(
        (b.spend, b.budget_micros, b.budget_alert_thresholds.as_slice()),
        (MicroUsd(600), Some(1_000), &[50, 80, 100][..])
    );
    assert_eq!((b.owner_id.as_str(), b.org_id.as_str(), b.name.as_str()), ("usr_budget", "org_1", "budget"));
    assert_eq!((found[1].expires_at, found[1].created_at), (Some(9_000), 1_000));
    assert_eq!((found[2].tokens_used, found[2].token_quota), (15, Some(30)));
}

async fn the_ledger_sums_to_the_balance_and_usage_is_counted_once(s: &Store) {
    let org = Organization { id: "org_1".into(), name: "Default".into(), created_at: 1 };
    let team = Team {
        id: "team_1".into(),
        org_id: "org_1".into(),
        name: "default".into(),
        settings: TeamSettings::default(),
        created_at: 1,
    };
    let owner = User { id: "usr_owner".into(), email: "o@x.test".into(), created_at: 1 };
    s.bootstrap(&Bootstrap { org: &org, team: &team, owner: &owner, password_hash: "hash" }).await.expect("bootstrap");
    s.insert_key(&key("key_a", "alpha", 1), &audit("key.create")).await.expect("insert");
    let credit = s
        .add_ledger_entry("org_1", LedgerKind::Topup, MicroUsd(10_000), Some("seed"), Some("tester"), &audit("credit"))
        .await
        .expect("credit");
    assert_eq!(credit.balance_after, MicroUsd(10_000));
    let now = tollgate_core::time::now_millis();
    let batch: Vec<UsageEvent> = (0..30)
        .map(|i| {
            let mut e = event(&format!("req_{i}"), Some("key_a"), now, 11);
            e.org_id = Some("org_1".into());
            e.team_id = Some("team_1".into());
            e
        })
        .collect();
    assert_eq!(s.insert_usage(&batch).await.expect("usage"), 30);
    // The same events again (a spill file replayed twice): nothing counts twice.
    assert_eq!(s.insert_usage(&batch).await.expect("replay"), 0);
    let money = s.org_money("org_1").await.expect("money");
    assert_eq!((money.credit, money.spend, money.balance()), (MicroUsd(10_000), MicroUsd(330), MicroUsd(9_670)));
    assert_eq!(s.ledger_sum("org_1").await.expect("sum"), money.balance());
    assert_eq!(s.org_spend_since("org_1", now - 1000).await.expect("30d"), MicroUsd(330));
    assert_eq!(s.get_key("key_a").await.expect("key").spend, MicroUsd(330));
    let team = s.team_counters().await.expect("teams");
    assert_eq!((team[0].spend, team[0].tokens), (MicroUsd(330), 450));
    let ledger =
        s.list_ledger(&LedgerQuery { org_id: "org_1".into(), limit: 10, ..Default::default() }).await.expect("ledger");
    let kinds: Vec<_> = ledger.iter().map(|e| (e.kind, e.amount)).collect();
    assert_eq!(kinds, [(LedgerKind::Usage, MicroUsd(-330)), (LedgerKind::Topup, MicroUsd(10_000))]);
    assert_eq!(ledger[0].balance_after, MicroUsd(9_670));
    let feed = s.changes_since(0, 100).await.expect("feed");
    assert!(feed.iter().any(|c| c.entity == Entity::Org && c.entity_id == "org_1"), "credits reach the data plane");
}

async fn model_prices_override_and_reset(s: &Store) {
    use tollgate_core::money::Pricing;
    let p = Pricing { input_per_mtok: MicroUsd(1), output_per_mtok: MicroUsd(2), per_image: MicroUsd(3) };
    s.set_model_price("m", Some(p), &audit("model.price")).await.expect("set");
    s.set_model_price("m", Some(Pricing { per_image: MicroUsd(4), ..p }), &audit("model.price")).await.expect("again");
    assert_eq!(s.model_prices().await.expect("read"), [("m".to_owned(), Pricing { per_image: MicroUsd(4), ..p })]);
    s.set_model_price("m", None, &audit("model.price_reset")).await.expect("reset");
    assert!(s.model_prices().await.expect("read").is_empty());
    let feed = s.changes_since(0, 100).await.expect("feed");
    assert_eq!(feed.iter().filter(|c| c.entity == Entity::Model).count(), 3);
}

async fn invites_are_listed_while_pending_and_accepted_once(s: &Store) {
    let org = Organization { id: "org_i".into(), name: "Invites".into(), created_at: 1 };
    let team = Team {
        id: "team_i".into(),
        org_id: org.id.clone(),
        name: "default".into(),
        settings: TeamSettings::default(),
        created_at: 1,
    };
    let owner = User { id: "usr_owner".into(), email: "owner@i.test".into(), created_at: 1 };
    s.create_organization(&Bootstrap { org: &org, team: &team, owner: &owner, password_hash: "h" }, false)
        .await
        .unwrap();
    let invite = |id: &str, byte: u8, expires_at: i64| tollgate_store::Invite {
        id: id.into(),
        org_id: org.id.clone(),
        email: Some("new@i.test".into()),
        role: Role::Admin,
        team_id: Some(team.id.clone()),
        digest: KeyDigest([byte; 32]),
        created_by: owner.id.clone(),
        created_at: 10,
        expires_at,
        accepted_at: None,
        accepted_by: None,
    };
    let live = invite("inv_live", 1, 1_000);
    s.insert_invite(&live, &audit("invite.create")).await.unwrap();
    s.insert_invite(&invite("inv_old", 2, 50), &audit("invite.create")).await.unwrap();
    let same_digest = s.insert_invite(&invite("inv_dup", 1, 1_000), &audit("invite.create")).await;
    assert!(matches!(same_digest, Err(StoreError::Conflict)), "{same_digest:?}");
    assert_eq!(s.find_invite(&KeyDigest([1; 32])).await.unwrap(), live);
    let pending: Vec<String> = s.list_pending_invites(&org.id, 100).await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(pending, ["inv_live"], "expired ones are not pending");

    // Accepting creates the user with the invitation's role and team, once.
    let user = User { id: "usr_new".into(), email: "new@i.test".into(), created_at: 100 };
    s.accept_invite(&live, &user, "h2", &audit("user.signup")).await.unwrap();
    assert_eq!(s.role_of(&org.id, &user.id).await.unwrap(), Some(Role::Admin));
    assert_eq!(s.teams_of(&user.id).await.unwrap(), ["team_i"]);
    let found = s.find_invite(&KeyDigest([1; 32])).await.unwrap();
    assert_eq!((found.accepted_at, found.accepted_by.as_deref()), (Some(100), Some("usr_new")));
    let second = User { id: "usr_second".into(), email: "second@i.test".into(), created_at: 101 };
    assert!(matches!(s.accept_invite(&live, &second, "h", &audit("user.signup")).await, Err(StoreError::NotFound)));
    assert!(matches!(s.get_user(&second.id).await, Err(StoreError::NotFound)), "no user from a used invitation");
    assert!(s.list_pending_invites(&org.id, 100).await.unwrap().is_empty());

    // An expired one cannot be accepted; a taken email leaves the invitation unused.
    let late = User { id: "usr_late".into(), email: "late@i.test".into(), created_at: 60 };
    assert!(matches!(
        s.accept_invite(&invite("inv_old", 2, 50), &late, "h", &audit("x")).await,
        Err(StoreError::NotFound)
    ));
    let fresh = invite("inv_fresh", 3, 1_000);
    s.insert_invite(&fresh, &audit("invite.create")).await.unwrap();
    let taken = User { id: "usr_taken".into(), email: "owner@i.test".into(), created_at: 100 };
    assert!(matches!(s.accept_invite(&fresh, &taken, "h", &audit("x")).await, Err(StoreError::Conflict)));
    assert!(s.find_invite(&KeyDigest([3; 32])).await.unwrap().accepted_at.is_none());

    // Revocation deletes an unused one of the same organization only.
    assert!(matches!(s.delete_invite("org_other", "inv_fresh", &audit("x")).await, Err(StoreError::NotFound)));
    s.delete_invite(&org.id, "inv_fresh", &audit("invite.revoke")).await.unwrap();
    assert!(matches!(s.find_invite(&KeyDigest([3; 32])).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete_invite(&org.id, "inv_live", &audit("x")).await, Err(StoreError::NotFound)), "used");
}

/// Several processes starting at once on a fresh database (a server and the CLI, or a
/// fleet of replicas): each connects on its own pool, migrates and bootstraps. All
/// succeed, the schema is applied once, and exactly one organization exists.
async fn concurrent_first_starts(url: &str) {
    const STARTS: usize = 8;
    // Joined in one task (sqlx's futures cannot be spawned here), yet concurrent: each
    // SQLite connection runs on its own worker thread, PostgreSQL on its own socket.
    let starts = (0..STARTS).map(|i| async move {
        let store = Store::connect(url).await.map_err(|e| format!("start {i} connect: {e}"))?;
        store.migrate().await.map_err(|e| format!("start {i} migrate: {e}"))?;
        let org = Organization { id: format!("org_{i}"), name: "Default".into(), created_at: 1 };
        let team = Team {
            id: format!("team_{i}"),
            org_id: org.id.clone(),
            name: "default".into(),
            settings: TeamSettings::default(),
            created_at: 1,
        };
        let owner = User { id: format!("usr_{i}"), email: "owner@example.com".into(), created_at: 1 };
        let ran = store
            .bootstrap(&Bootstrap { org: &org, team: &team, owner: &owner, password_hash: "h" })
            .await
            .map_err(|e| format!("start {i} bootstrap: {e}"))?;
        store.close().await;
        Ok::<bool, String>(ran)
    });
    let mut bootstrapped = 0;
    for result in futures_util::future::join_all(starts).await {
        if result.expect("every start succeeds") {
            bootstrapped += 1;
        }
    }
    assert_eq!(bootstrapped, 1, "exactly one start bootstraps");
    let store = Store::connect(url).await.expect("connect");
    assert_eq!(store.list_organizations().await.expect("orgs").len(), 1);
    store.migrate().await.expect("migrate again");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_on_sqlite() {
    // Several rounds: the race is between a handful of statements.
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        concurrent_first_starts(&Store::sqlite_url(&dir.path().join("t.db"))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_on_postgres() {
    let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if admin_url == "off" {
        return;
    }
    let name = tollgate_core::ids::new_id("tgtest").to_lowercase();
    let admin = Store::connect(&admin_url).await.expect("PostgreSQL for tests");
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("url has a database");
    concurrent_first_starts(&format!("{base}/{name}")).await;
    admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop");
    admin.close().await;
}

/// The first connection of a new SQLite database switches it to WAL, which needs an
/// exclusive lock: while another process holds the new database (here a write
/// transaction on a plain connection, as a migrating CLI would), connecting waits for it
/// instead of failing with "database is locked".
#[tokio::test]
async fn wal_mode_waits_for_another_process_holding_a_new_database() {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = Store::sqlite_url(&dir.path().join("t.db"));
    let mut other = sqlx::AnyConnection::connect(&url).await.expect("plain connection");
    sqlx::raw_sql("BEGIN IMMEDIATE; CREATE TABLE held (x INTEGER)").execute(&mut other).await.expect("hold");
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::raw_sql("COMMIT").execute(&mut other).await.expect("release");
    };
    let (store, ()) = tokio::join!(Store::connect(&url), release);
    let store = store.expect("connects once the other lets go");
    store.migrate().await.expect("migrate");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut sqlx::AnyConnection::connect(&url).await.expect("connect"))
        .await
        .expect("mode");
    assert_eq!(mode, "wal");
    store.close().await;
}
