//! Keys, complete: every scope enforced on the data plane (nothing billed or forwarded
//! when rejected), every lifecycle action visible to a running server within a second —
//! from the API, the CLI, and a second server on the same PostgreSQL database — and the
//! audit trail they leave.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::app::{PgDatabase, TestApp};
use tollgate_testkit::client::Answer;

const ADMIN: Option<&str> = Some("test-admin-token");

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

async fn api_key(app: &TestApp, body: Value) -> (String, String) {
    app.api_key(&body).await.unwrap()
}

async fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> Answer {
    app.client.post_json(&app.url(path), Some(key), body).await.unwrap()
}

/// Polls until `key` gets `status` on `GET /v1/models`; returns how long that took.
async fn until_status(app: &TestApp, key: &str, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        let res = app.client.get(&app.url("/v1/models"), Some(key)).await.unwrap();
        if res.status == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(3), "still {} {} after 3 s", res.status, res.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_scope_is_enforced_and_rejections_cost_nothing() {
    let app = TestApp::start().await.unwrap();
    let res = app
        .client
        .post_json(&app.url("/api/v1/keys"), ADMIN, &json!({ "name": "ip", "ip_allowlist": ["10.9.9.0/24"] }))
        .await
        .unwrap();
    let ip_key = res.json()["key"].as_str().unwrap().to_owned();
    // Not yet known to the server, or known and refused: wait for the refusal proper.
    let start = Instant::now();
    let refused = loop {
        let r = post(&app, "/v1/chat/completions", &ip_key, &chat("demo-chat")).await;
        if r.error_code() == "ip_not_allowed" || start.elapsed() > Duration::from_secs(2) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((refused.status.as_u16(), refused.error_code()), (401, "ip_not_allowed".to_owned()));
    let (_, local) = api_key(&app, json!({ "name": "local", "ip_allowlist": ["127.0.0.0/8", "::1"] })).await;
    assert_eq!(post(&app, "/v1/chat/completions", &local, &chat("demo-chat")).await.status, 200);

    let (_, embed_only) = api_key(&app, json!({ "name": "e", "allowed_endpoints": ["/v1/embeddings"] })).await;
    let r = post(&app, "/v1/chat/completions", &embed_only, &chat("demo-chat")).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (403, "endpoint_not_allowed".to_owned()));
    let r = post(&app, "/v1/embeddings", &embed_only, &json!({ "model": "demo-embed", "input": "x" })).await;
    assert_eq!(r.status, 200);

    let (_, one_model) = api_key(&app, json!({ "name": "m", "models": ["demo-chat"] })).await;
    let r = post(&app, "/v1/chat/completions", &one_model, &chat("gpt-4o-mini")).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (404, "model_not_found".to_owned()));
    let listed = app.client.get(&app.url("/v1/models"), Some(&one_model)).await.unwrap().json();
    assert_eq!(
        listed["data"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        [json!("demo-chat")]
    );
    let r = app.client.get(&app.url("/v1/models/gpt-4o-mini"), Some(&one_model)).await.unwrap();
    assert_eq!(r.error_code(), "model_not_found");

    let (_, chat_only) = api_key(&app, json!({ "name": "c", "model_scope": "chat" })).await;
    let r = post(&app, "/v1/embeddings", &chat_only, &json!({ "model": "demo-embed", "input": "x" })).await;
    assert_eq!(r.error_code(), "model_not_found");

    let (_, demo_only) = api_key(&app, json!({ "name": "p", "allowed_providers": ["demo"] })).await;
    let r = post(&app, "/v1/chat/completions", &demo_only, &chat("gpt-4o-mini")).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (403, "provider_not_allowed".to_owned()));
    let listed = app.client.get(&app.url("/v1/models"), Some(&demo_only)).await.unwrap().json();
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["demo-chat", "demo-embed"]);

    // None of the refused requests reached the upstream or cost anything.
    assert!(app.fake.requests().is_empty());
    let rows = app.all_usage().await.unwrap();
    assert!(rows.iter().filter(|r| r.status >= 400).all(|r| r.cost.0 == 0 && r.billing_reason == "not_billed"));
    assert!(rows.iter().any(|r| r.status == 403));
}

#[tokio::test]
async fn lifecycle_actions_from_the_api_take_effect_within_a_second() {
    let app = TestApp::start().await.unwrap();
    let (id, secret) = api_key(&app, json!({ "name": "svc" })).await;
    let action = |name: &str| app.url(&format!("/api/v1/keys/{id}/{name}"));

    let r = app.client.post_json(&action("disable"), ADMIN, &json!({})).await.unwrap();
    assert_eq!(r.json()["status"], "inactive");
    assert!(until_status(&app, &secret, 401).await < Duration::from_secs(1));
    let r = app.client.get(&app.url("/v1/models"), Some(&secret)).await.unwrap();
    assert_eq!(r.error_code(), "key_disabled");

    app.client.post_json(&action("enable"), ADMIN, &json!({})).await.unwrap();
    assert!(until_status(&app, &secret, 200).await < Duration::from_secs(1));

    // Rotation with a grace period: both secrets work, then only the new one.
    let r = app.client.post_json(&action("rotate"), ADMIN, &json!({ "grace_seconds": 1 })).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let new_secret = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["id"], id.as_str(), "same key id");
    app.key_accepted(&new_secret, Duration::from_secs(1)).await.unwrap();
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&secret)).await.unwrap().status, 200, "old secret in grace");
    let took = until_status(&app, &secret, 401).await;
    assert!(took <= Duration::from_millis(1500), "grace ended after {took:?}");
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&new_secret)).await.unwrap().status, 200);

    app.client.post_json(&action("revoke"), ADMIN, &json!({})).await.unwrap();
    assert!(until_status(&app, &new_secret, 401).await < Duration::from_secs(1));
    let r = app.client.post_json(&action("enable"), ADMIN, &json!({})).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["param"].clone()),
        (400, json!("status")),
        "revocation is terminal"
    );

    let r = app
        .client
        .call(
            http::Method::DELETE,
            &app.url(&format!("/api/v1/keys/{id}")),
            &[("authorization", "Bearer test-admin-token")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let r = app.client.get(&app.url(&format!("/api/v1/keys/{id}")), ADMIN).await.unwrap();
    assert_eq!(r.status, 404);

    let audit = app.client.get(&app.url(&format!("/api/v1/audit?target={id}")), ADMIN).await.unwrap().json();
    let actions: Vec<&str> = audit["data"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["key.delete", "key.revoke", "key.rotate", "key.enable", "key.disable", "key.create"]);
    let first = &audit["data"][0];
    assert_eq!((first["actor"].clone(), first["source_ip"].clone()), (json!("admin-token"), json!("127.0.0.1")));
    let dump = audit.to_string();
    assert!(!dump.contains(&secret) && !dump.contains(&new_secret), "no secret in the audit log");
}

#[tokio::test]
async fn rotate_is_idempotent_and_patch_changes_scopes_live() {
    let app = TestApp::start().await.unwrap();
    let (id, secret) = api_key(&app, json!({ "name": "svc" })).await;
    let url = app.url(&format!("/api/v1/keys/{id}/rotate"));
    let headers = [("authorization", "Bearer test-admin-token"), ("idempotency-key", "rotate-7")];
    let a = app.client.call(http::Method::POST, &url, &headers, "").await.unwrap();
    let b = app.client.call(http::Method::POST, &url, &headers, "").await.unwrap();
    assert_eq!((a.status, b.status), (http::StatusCode::OK, http::StatusCode::OK));
    assert_eq!(a.json()["key"], b.json()["key"], "a retried rotation returns the same secret");
    let rotated = a.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(rotated, secret);
    until_status(&app, &secret, 401).await;
    app.key_accepted(&rotated, Duration::from_secs(1)).await.unwrap();
    let rotations = app.client.get(&app.url("/api/v1/audit?action=key.rotate"), ADMIN).await.unwrap().json();
    assert_eq!(rotations["data"].as_array().unwrap().len(), 1);

    // Narrow the key's endpoints: the running server enforces it within a second.
    let patch = app
        .client
        .call(
            http::Method::PATCH,
            &app.url(&format!("/api/v1/keys/{id}")),
            &[("authorization", "Bearer test-admin-token"), ("content-type", "application/json")],
            json!({ "allowed_endpoints": ["/v1/embeddings"], "rpm": 60 }).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 200, "{}", patch.text());
    assert_eq!((patch.json()["rpm"].clone(), patch.json()["name"].clone()), (json!(60), json!("svc")));
    let start = Instant::now();
    while post(&app, "/v1/chat/completions", &rotated, &chat("demo-chat")).await.status != 403 {
        assert!(start.elapsed() < Duration::from_secs(1), "scope change not live within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bad = app
        .client
        .call(
            http::Method::PATCH,
            &app.url(&format!("/api/v1/keys/{id}")),
            &[("authorization", "Bearer test-admin-token")],
            json!({ "ip_allowlist": ["300.1.1.1"] }).to_string(),
        )
        .await
        .unwrap();
    assert_eq!((bad.status.as_u16(), bad.json()["error"]["param"].clone()), (400, json!("ip_allowlist")));
}

#[tokio::test]
async fn an_expired_key_is_refused_from_its_expiry_on() {
    let app = TestApp::start().await.unwrap();
    let at = tollgate_core::time::to_rfc3339(tollgate_core::time::now_millis() + 1500);
    let (_, secret) = api_key(&app, json!({ "name": "short", "expires_at": at })).await;
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&secret)).await.unwrap().status, 200, "before expiry");
    until_status(&app, &secret, 401).await;
    let r = app.client.get(&app.url("/v1/models"), Some(&secret)).await.unwrap();
    assert_eq!(r.error_code(), "key_expired");
    let listed = app.client.get(&app.url("/api/v1/keys?status=expired"), ADMIN).await.unwrap().json();
    assert_eq!(listed["data"][0]["name"], "short");
}

#[tokio::test]
async fn a_second_server_on_the_same_postgres_sees_revocation_within_a_second() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let top = format!("database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"", db.url);
    let mut one = TestApp::start_with_top(&top, "").await.unwrap();
    let mut two = TestApp::start_with_top(&top, "").await.unwrap();
    let (id, secret) = api_key(&one, json!({ "name": "shared" })).await;
    two.key_accepted(&secret, Duration::from_secs(1)).await.unwrap();

    let r = two.client.post_json(&two.url(&format!("/api/v1/keys/{id}/revoke")), ADMIN, &json!({})).await.unwrap();
    assert_eq!(r.status, 200);
    let took = until_status(&one, &secret, 401).await;
    assert!(took < Duration::from_secs(1), "instance one saw the revocation after {took:?}");
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn ephemeral_tokens_are_narrower_count_against_the_parent_and_die_with_it() {
    let app = TestApp::start().await.unwrap();
    let (id, _) = api_key(&app, json!({ "name": "parent", "models": ["demo-chat", "gpt-4o-mini"] })).await;
    let mint = |body: Value| {
        let url = app.url(&format!("/api/v1/keys/{id}/ephemeral"));
        let client = app.client.clone();
        async move { client.post_json(&url, ADMIN, &body).await.unwrap() }
    };
    let wider = mint(json!({ "models": ["demo-embed"] })).await;
    assert_eq!((wider.status.as_u16(), wider.json()["error"]["param"].clone()), (400, json!("models")));

    let minted = mint(json!({ "models": ["demo-chat"], "ttl_seconds": 60 })).await;
    assert_eq!(minted.status, 201, "{}", minted.text());
    let token = minted.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk-tg-eph_"));
    let ok = post(&app, "/v1/chat/completions", &token, &chat("demo-chat")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let row = app.usage_row(ok.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.key_id.as_deref(), Some(id.as_str()), "usage counts against the parent");
    let narrowed = post(&app, "/v1/chat/completions", &token, &chat("gpt-4o-mini")).await;
    assert_eq!(narrowed.error_code(), "model_not_found", "narrower than the parent");
    let listed = app.client.get(&app.url("/v1/models"), Some(&token)).await.unwrap().json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    // Tampering breaks the MAC.
    let (body, mac) = token.rsplit_once('.').unwrap();
    let forged = format!("{body}x.{mac}");
    assert_eq!(post(&app, "/v1/chat/completions", &forged, &chat("demo-chat")).await.error_code(), "invalid_api_key");

    // It dies with its parent's status, and comes back with it.
    app.client.post_json(&app.url(&format!("/api/v1/keys/{id}/disable")), ADMIN, &json!({})).await.unwrap();
    assert!(until_status(&app, &token, 401).await < Duration::from_secs(1));
    app.client.post_json(&app.url(&format!("/api/v1/keys/{id}/enable")), ADMIN, &json!({})).await.unwrap();
    until_status(&app, &token, 200).await;

    let short = mint(json!({ "ttl_seconds": 1 })).await.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&short)).await.unwrap().status, 200);
    until_status(&app, &short, 401).await;
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&short)).await.unwrap().error_code(), "key_expired");

    app.client.post_json(&app.url(&format!("/api/v1/keys/{id}/revoke")), ADMIN, &json!({})).await.unwrap();
    until_status(&app, &token, 401).await;
    assert_eq!(app.client.get(&app.url("/v1/models"), Some(&token)).await.unwrap().error_code(), "invalid_api_key");
    let audit = app.client.get(&app.url("/api/v1/audit?action=key.ephemeral"), ADMIN).await.unwrap().json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 2);
    assert!(!audit.to_string().contains(&token), "the token is never in the audit log");
}

#[tokio::test]
async fn no_secret_reaches_the_database_files_or_error_bodies() {
    let mut app = TestApp::start().await.unwrap();
    let (id, first) = api_key(&app, json!({ "name": "svc" })).await;
    let rotated = app
        .client
        .post_json(&app.url(&format!("/api/v1/keys/{id}/rotate")), ADMIN, &json!({ "grace_seconds": 60 }))
        .await
        .unwrap()
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    app.key_accepted(&rotated, Duration::from_secs(1)).await.unwrap();
    let token = app
        .client
        .post_json(&app.url(&format!("/api/v1/keys/{id}/ephemeral")), ADMIN, &json!({}))
        .await
        .unwrap()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bodies = String::new();
    for secret in [&first, &rotated, &token] {
        assert_eq!(post(&app, "/v1/chat/completions", secret, &chat("demo-chat")).await.status, 200);
        bodies += &post(&app, "/v1/chat/completions", secret, &chat("no-such-model")).await.text();
        bodies += &post(&app, "/v1/chat/completions", &format!("{secret}x"), &chat("demo-chat")).await.text();
    }
    app.stop().await;
    for secret in [&first, &rotated, &token] {
        // The key body alone (without the well-known prefix) must not appear either.
        let body = secret.trim_start_matches("sk-tg-").as_bytes();
        assert!(!super::in_database_files(&app, body), "a secret is in the database files");
        assert!(!bodies.contains(secret.as_str()), "a secret is in an error body");
    }
}
