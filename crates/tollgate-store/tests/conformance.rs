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
use tollgate_store::{AuditQuery, Bootstrap, Entity, KeyListQuery, Store, StoreError, UsageQuery};

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
    migrations_are_idempotent,
    updates_round_trip_settings_and_rotation_state,
    delete_removes_and_records,
    audit_is_written_with_the_change_and_filtered,
    tenancy_bootstraps_once_and_scopes_listing,
);

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
