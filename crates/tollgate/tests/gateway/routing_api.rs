//! Routing managed at runtime through `/api/v1/providers`, `/models` and `/channels`: what
//! the operator adds serves within the change feed's poll, beside the config file's
//! providers and models; credentials go in sealed and never come out (not in answers, not
//! in the audit log, not in the database files); every definition passes the config
//! file's rules; only the operator writes, owners and admins read, members see nothing.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tollgate_testkit::app::{ADMIN_TOKEN, OWNER_PASSWORD, TestApp, UPSTREAM_KEY};
use tollgate_testkit::client::Answer;
use tollgate_testkit::fake_openai::FakeOpenAi;

use super::authz::{Caller, login, user};

const MANAGED_KEY: &str = "sk-managed-upstream-secret-9876";
const ROTATED_KEY: &str = "sk-managed-rotated-secret-5432";

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] })
}

fn operator(app: &TestApp) -> Caller<'_> {
    Caller { app, token: ADMIN_TOKEN.into() }
}

impl Caller<'_> {
    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
}

/// Sends `body` with `key` until the answer has `status` (the change feed polls every
/// 50 ms in tests); panics with the last answer after five seconds.
async fn until_status(app: &TestApp, key: &str, body: &Value, status: u16) -> Answer {
    let started = Instant::now();
    loop {
        let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(key), body).await.unwrap();
        if res.status == status {
            return res;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still {} after 5 s: {}", res.status, res.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chats_at(fake: &FakeOpenAi) -> Vec<tollgate_testkit::fake_openai::RecordedRequest> {
    fake.requests().into_iter().filter(|r| r.path.ends_with("/chat/completions")).collect()
}

#[tokio::test]
async fn a_provider_and_model_added_through_the_api_serve_at_once_billed_at_their_prices() {
    let mut app = TestApp::start().await.unwrap();
    let managed = FakeOpenAi::start().await;
    let op = operator(&app);
    let res = op
        .post(
            "/providers",
            json!({ "name": "managed", "kind": "openai", "base_url": managed.base_url(), "api_key": MANAGED_KEY,
                    "headers": { "X-Tenant": "eu-secret-tenant" } }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let view = res.json();
    assert_eq!((view["source"].as_str(), view["api_key_set"].as_bool()), (Some("api"), Some(true)));
    assert_eq!(view["header_names"], json!(["X-Tenant"]));
    let providers = op.get("/providers").await;
    let names: Vec<_> = providers.json()["data"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert!(names.contains(&json!("fake")) && names.contains(&json!("managed")), "{names:?}");

    let res = op
        .post(
            "/models",
            json!({ "id": "runtime-chat", "type": "chat", "input_price_per_mtok": 1.5, "output_price_per_mtok": 4,
                    "channels": [{ "provider": "managed", "upstream_model": "up-chat" }] }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["channels"][0]["upstream_model"], "up-chat");

    let key = app.create_key("runtime").await.unwrap();
    let res = until_status(&app, &key, &chat("runtime-chat"), 200).await;
    let sent = chats_at(&managed);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["model"], "up-chat");
    assert_eq!(sent[0].headers["authorization"], format!("Bearer {MANAGED_KEY}").as_str());
    assert_eq!(sent[0].headers["x-tenant"], "eu-secret-tenant");
    assert!(chats_at(&app.fake).is_empty(), "the config's provider was not asked");

    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    // 1.5 and 4 USD per million tokens, summed exactly and rounded once, half up.
    let expected = (row.prompt_tokens * 1_500_000 + row.completion_tokens * 4_000_000 + 500_000) / 1_000_000;
    assert!(row.prompt_tokens > 0 && row.completion_tokens > 0);
    assert_eq!((row.provider.as_deref(), row.cost.0), (Some("managed"), expected as i64), "priced as declared");

    let metrics = app.client.get(&app.url("/metrics"), None).await.unwrap().text();
    let series = r#"tollgate_requests_total{endpoint="/v1/chat/completions",model="runtime-chat",status="200"} 1"#;
    assert!(metrics.contains(series), "a model added at runtime has its own series: {metrics}");
    let models = app.client.get(&app.url("/v1/models"), Some(&key)).await.unwrap().json();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "runtime-chat"));
    let listed = op.get("/models").await.json();
    let runtime = listed["data"].as_array().unwrap().iter().find(|m| m["id"] == "runtime-chat").unwrap().clone();
    assert_eq!((runtime["source"].as_str(), runtime["input_price_per_mtok"].as_f64()), (Some("api"), Some(1.5)));

    // A managed model cannot lose its last channel, and a provider in use cannot go.
    let channels = op.get("/channels").await.json();
    let channel = channels["data"].as_array().unwrap().iter().find(|c| c["model"] == "runtime-chat").unwrap().clone();
    assert_eq!(channel["source"], "api");
    let channel_id = channel["id"].as_str().unwrap();
    let res = op.delete(&format!("/channels/{channel_id}")).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("id")), "{}", res.text());
    let res = op.delete("/providers/managed").await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("name")), "{}", res.text());

    // Deleting the model takes it off the data plane; then the provider may go.
    assert_eq!(op.delete("/models/runtime-chat").await.status, 204);
    let res = until_status(&app, &key, &chat("runtime-chat"), 404).await;
    assert_eq!(res.error_code(), "model_not_found");
    let res = op.delete("/providers/managed").await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(op.delete("/providers/managed").await.status, 404);

    let audit = op.get("/audit").await.json();
    let actions: Vec<_> = audit["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["provider.create", "model.create", "model.delete", "provider.delete"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    let everything_shown = format!("{}{}{}", providers.text(), audit, op.get("/providers").await.text());
    for secret in [MANAGED_KEY, "eu-secret-tenant"] {
        assert!(!everything_shown.contains(secret), "a credential was shown");
    }

    app.stop().await;
    for secret in [MANAGED_KEY, "eu-secret-tenant"] {
        assert!(!super::in_database_files(&app, secret.as_bytes()), "a credential is in the database files");
    }
}

#[tokio::test]
async fn channels_added_to_a_config_model_take_priority_change_and_go() {
    let app = TestApp::start().await.unwrap();
    let managed = FakeOpenAi::start().await;
    let op = operator(&app);
    let res = op
        .post(
            "/providers",
            json!({ "name": "managed", "kind": "openai", "base_url": managed.base_url(), "api_key": UPSTREAM_KEY,
                    "headers": { "X-Org": "local-lab" } }),
        )
        .await;
    assert_eq!((res.status.as_u16(), res.json()["api_key_set"].as_bool()), (201, Some(true)));
    // Extra headers are sealed with the key, yet a provider with headers only has no key.
    let lab =
        json!({ "name": "lab", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "headers": { "X-Org": "lab" } });
    let res = op.post("/providers", lab).await;
    assert_eq!((res.status.as_u16(), res.json()["api_key_set"].as_bool()), (201, Some(false)), "{}", res.text());
    let shown = op.get("/providers").await.json();
    let lab = shown["data"].as_array().unwrap().iter().find(|p| p["name"] == "lab").unwrap().clone();
    assert_eq!((lab["api_key_set"].as_bool(), lab["header_names"].clone()), (Some(false), json!(["X-Org"])));
    assert_eq!(op.delete("/providers/lab").await.status, 204);
    let res = op
        .post(
            "/channels",
            json!({ "model": "gpt-4o-mini", "provider": "managed", "upstream_model": "mini-2", "priority": 10 }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chn_"), "{id}");

    let key = app.create_key("routed").await.unwrap();
    let started = Instant::now();
    while chats_at(&managed).is_empty() {
        let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await;
        let res = res.unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(started.elapsed() < Duration::from_secs(5), "the managed channel never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(chats_at(&managed)[0].body["model"], "mini-2");
    assert_eq!(chats_at(&managed)[0].headers["x-org"], "local-lab");

    // Below the config's channel (priority 0): the config's provider serves again.
    let res = op.patch(&format!("/channels/{id}"), json!({ "priority": -5, "groups": ["default", "eu"] })).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!((res.json()["priority"].as_i64(), res.json()["groups"].clone()), (Some(-5), json!(["default", "eu"])));
    let listed = op.get("/channels").await.json();
    let shown = listed["data"].as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap().clone();
    assert_eq!((shown["source"].as_str(), shown["state"].as_str()), (Some("api"), Some("closed")));
    wait_for(|| async {
        let before = chats_at(&app.fake).len();
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await.unwrap();
        chats_at(&app.fake).len() > before
    })
    .await;
    let served = chats_at(&managed).len();
    for _ in 0..3 {
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await.unwrap();
    }
    assert_eq!(chats_at(&managed).len(), served, "the lower priority is not asked while the higher answers");

    // Config channels are read-only here; deleting the managed one is final.
    assert_eq!(op.delete(&format!("/channels/{id}")).await.status, 204);
    assert_eq!(op.delete(&format!("/channels/{id}")).await.status, 404);
    let audit = op.get("/audit?action=channel.update").await.json();
    assert_eq!(audit["data"][0]["target_id"], id.as_str(), "{audit}");
    assert_eq!(op.delete("/providers/managed").await.status, 204, "no channel uses it any more");
}

/// Polls `check` until it holds (five seconds at most).
async fn wait_for<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(5), "not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_changed_credential_or_base_url_is_used_from_the_next_request() {
    let app = TestApp::start().await.unwrap();
    let (first, second) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let op = operator(&app);
    let provider = json!({ "name": "moving", "kind": "openai", "base_url": first.base_url(), "api_key": MANAGED_KEY });
    assert_eq!(op.post("/providers", provider).await.status, 201);
    let model = json!({ "id": "moving-chat", "type": "chat", "channels": [{ "provider": "moving" }] });
    assert_eq!(op.post("/models", model).await.status, 201);
    let key = app.create_key("moving").await.unwrap();
    until_status(&app, &key, &chat("moving-chat"), 200).await;
    assert_eq!(chats_at(&first)[0].headers["authorization"], format!("Bearer {MANAGED_KEY}").as_str());

    let res = op.patch("/providers/moving", json!({ "base_url": second.base_url(), "api_key": ROTATED_KEY })).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!res.text().contains(ROTATED_KEY));
    wait_for(|| async {
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("moving-chat")).await.unwrap();
        !chats_at(&second).is_empty()
    })
    .await;
    assert_eq!(chats_at(&second)[0].headers["authorization"], format!("Bearer {ROTATED_KEY}").as_str());
    assert_eq!(chats_at(&second)[0].body["model"], "moving-chat", "upstream name defaults to the model's id");

    // `null` clears the key: the provider is keyless from then on.
    let res = op.patch("/providers/moving", json!({ "api_key": null })).await;
    assert_eq!((res.status.as_u16(), res.json()["api_key_set"].as_bool()), (200, Some(false)), "{}", res.text());
    wait_for(|| async {
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("moving-chat")).await.unwrap();
        chats_at(&second).last().is_some_and(|r| r.headers.get("authorization").is_none())
    })
    .await;
    let audit = op.get("/audit?action=provider.update").await.json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 2);
    assert!(!audit.to_string().contains(ROTATED_KEY) && !audit.to_string().contains(MANAGED_KEY));
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field() {
    let app = TestApp::start().await.unwrap();
    let op = operator(&app);
    let cases = [
        (json!({ "name": "x", "kind": "openai", "base_url": "file:///etc/passwd" }), "base_url"),
        (json!({ "name": "x", "kind": "openai", "base_url": "http://user:pw@example.com/v1" }), "base_url"),
        (json!({ "name": "x", "kind": "openai" }), "base_url"),
        (json!({ "name": "x", "kind": "carrier-pigeon", "base_url": "http://127.0.0.1:1" }), "kind"),
        (json!({ "name": "x", "kind": "demo" }), "kind"),
        (json!({ "name": "bad name", "kind": "openai", "base_url": "http://127.0.0.1:1" }), "name"),
        (json!({ "name": "fake", "kind": "openai", "base_url": "http://127.0.0.1:1" }), "name"),
        (json!({ "name": "x", "kind": "azure", "base_url": "https://r.openai.azure.com" }), "api_version"),
        (json!({ "name": "x", "kind": "gemini" }), "api_key"),
        (
            json!({ "name": "x", "kind": "openai", "base_url": "http://127.0.0.1:1", "headers": { "Host": "evil" } }),
            "headers",
        ),
    ];
    for (body, field) in cases {
        let res = op.post("/providers", body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        assert_eq!(res.json()["error"]["param"], field, "{body}: {}", res.text());
    }
    let res = op.post("/providers", json!({ "name": "x", "kind": "openai", "base_url": "http://a", "url": 1 })).await;
    assert_eq!(res.status, 400, "unknown fields are refused: {}", res.text());

    let azure = json!({ "name": "az", "kind": "azure", "base_url": "https://r.openai.azure.com",
                        "api_version": "2024-10-21", "api_key": "k" });
    assert_eq!(op.post("/providers", azure).await.status, 201);
    let channel_cases = [
        (json!({ "model": "gpt-4o-mini", "provider": "az", "upstream_model": "../../admin" }), "upstream_model"),
        (json!({ "model": "gpt-4o-mini", "provider": "nowhere" }), "provider"),
        (json!({ "model": "no-such-model", "provider": "az", "upstream_model": "d" }), "model"),
        (json!({ "provider": "az", "upstream_model": "d" }), "model"),
        (json!({ "model": "gpt-4o-mini", "provider": "fake", "upstream_model": "fake-mini" }), "provider"),
        (json!({ "model": "gpt-4o-mini", "provider": "az", "upstream_model": "d", "weight": 0 }), "weight"),
    ];
    for (body, field) in channel_cases {
        let res = op.post("/channels", body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        assert_eq!(res.json()["error"]["param"], field, "{body}: {}", res.text());
    }
    let model_cases = [
        (
            json!({ "id": "gpt-4o-mini", "type": "chat", "channels": [{ "provider": "az", "upstream_model": "d" }] }),
            "id",
        ),
        (json!({ "id": "m", "type": "audio", "channels": [{ "provider": "az", "upstream_model": "d" }] }), "type"),
        (json!({ "id": "m", "type": "chat", "channels": [] }), "channels"),
        (
            json!({ "id": "m", "type": "chat", "input_price_per_mtok": -1,
                    "channels": [{ "provider": "az", "upstream_model": "d" }] }),
            "input_price_per_mtok",
        ),
    ];
    for (body, field) in model_cases {
        let res = op.post("/models", body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        assert_eq!(res.json()["error"]["param"], field, "{body}: {}", res.text());
    }
    // The config file's definitions are read-only through the API.
    let res = op.patch("/providers/fake", json!({ "api_key": "stolen" })).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("name")));
    let res = op.delete("/models/gpt-4o-mini").await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("id")));
    assert_eq!(op.delete("/models/never-was").await.status, 404);
    assert_eq!(op.patch("/channels/chn_nope", json!({ "priority": 1 })).await.status, 404);
}

#[tokio::test]
async fn only_the_operator_writes_owners_and_admins_read_and_members_see_nothing() {
    let app = TestApp::start().await.unwrap();
    let op = operator(&app);
    user(&op, "adm@test.local", "admin", &[]).await;
    user(&op, "mem@test.local", "member", &[]).await;
    let owner = login(&app, "owner@test.local", OWNER_PASSWORD).await;
    let admin = login(&app, "adm@test.local", "a-long-password-123").await;
    let member = login(&app, "mem@test.local", "a-long-password-123").await;
    let provider = json!({ "name": "p", "kind": "openai", "base_url": "http://127.0.0.1:9/v1" });
    for reader in [&owner, &admin] {
        assert_eq!(reader.get("/providers").await.status, 200);
        assert_eq!(reader.get("/channels").await.status, 200);
        assert_eq!(reader.post("/providers", provider.clone()).await.status, 403);
        let channel = json!({ "model": "gpt-4o-mini", "provider": "fake", "upstream_model": "other" });
        assert_eq!(reader.post("/channels", channel).await.status, 403);
        let model = json!({ "id": "m", "type": "chat", "channels": [{ "provider": "fake" }] });
        assert_eq!(reader.post("/models", model).await.status, 403);
    }
    assert_eq!(member.get("/providers").await.status, 403);
    assert_eq!(member.get("/channels").await.status, 403);
    assert_eq!(member.post("/providers", provider.clone()).await.status, 403);
    assert_eq!(op.post("/providers", provider).await.status, 201);
    for caller in [&owner, &admin, &member] {
        assert_eq!(caller.patch("/providers/p", json!({ "base_url": "http://169.254.169.254" })).await.status, 403);
        assert_eq!(caller.delete("/providers/p").await.status, 403);
    }
    let shown = op.get("/providers").await.json();
    let p = shown["data"].as_array().unwrap().iter().find(|p| p["name"] == "p").unwrap().clone();
    assert_eq!(p["base_url"], "http://127.0.0.1:9/v1", "unchanged");
    let anonymous = app.client.get(&app.url("/api/v1/providers"), None).await.unwrap();
    assert_eq!(anonymous.status, 401);
}

/// Two instances on one PostgreSQL database with one pepper: a provider and model added on
/// one serve on the other (its credential opened there), and a changed key reaches both.
#[tokio::test]
async fn two_instances_on_postgres_serve_what_either_one_was_told() {
    let Some(db) = tollgate_testkit::app::PgDatabase::create().await.unwrap() else { return };
    let top = format!("database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"", db.url);
    let mut one = TestApp::start_with_top(&top, "").await.unwrap();
    let mut two = TestApp::start_with_top(&top, "").await.unwrap();
    let managed = FakeOpenAi::start().await;
    let op = operator(&one);
    let provider =
        json!({ "name": "shared", "kind": "openai", "base_url": managed.base_url(), "api_key": MANAGED_KEY });
    assert_eq!(op.post("/providers", provider).await.status, 201);
    let model = json!({ "id": "shared-chat", "type": "chat", "channels": [{ "provider": "shared" }] });
    assert_eq!(op.post("/models", model).await.status, 201);
    let key = one.create_key("shared").await.unwrap();
    two.key_accepted(&key, Duration::from_secs(2)).await.unwrap();
    until_status(&two, &key, &chat("shared-chat"), 200).await;
    assert_eq!(chats_at(&managed)[0].headers["authorization"], format!("Bearer {MANAGED_KEY}").as_str());

    assert_eq!(op.patch("/providers/shared", json!({ "api_key": ROTATED_KEY })).await.status, 200);
    let rotated = format!("Bearer {ROTATED_KEY}");
    wait_for(|| async {
        two.client.post_json(&two.url("/v1/chat/completions"), Some(&key), &chat("shared-chat")).await.unwrap();
        chats_at(&managed).last().is_some_and(|r| r.headers["authorization"] == rotated.as_str())
    })
    .await;
    // Instance two lists what instance one stored.
    let listed = operator(&two).get("/providers").await.json();
    assert!(listed["data"].as_array().unwrap().iter().any(|p| p["name"] == "shared" && p["api_key_set"] == true));
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}
