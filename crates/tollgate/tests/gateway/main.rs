#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The gateway end to end: the real server on 127.0.0.1:0 in front of the fake OpenAI
//! upstream, driven over real HTTP. Each test boots its own app and database.

mod anthropic;
mod auth_failures;
mod authz;
mod azure;
mod budget_hostile;
mod cli;
mod connections;
mod durability;
mod gemini;
mod hostile_inputs;
mod keys;
mod messages;
mod messages_native;
mod metering;
mod metrics;
mod notifications;
mod routing;
mod routing_api;
mod sessions;
mod signup;
mod startup;
mod usage;

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY};
use tollgate_testkit::client::{OpenStream, next_data, read_to_end, read_until, sse_data};
use tollgate_testkit::fake_openai::{Behavior, REPLY_TEXT};

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] })
}

trait ChatStream {
    /// Opens a streamed `gpt-4o-mini` chat completion (served by the fake upstream).
    async fn open_chat_stream(&self, key: &str) -> OpenStream;
}

impl ChatStream for TestApp {
    async fn open_chat_stream(&self, key: &str) -> OpenStream {
        let mut req = chat("gpt-4o-mini");
        req["stream"] = true.into();
        self.client.open_stream(&self.url("/v1/chat/completions"), key, &req).await.unwrap()
    }
}

/// Whether `needle` appears anywhere in the stopped app's SQLite files (the database and
/// its write-ahead log), for tests that a secret never reaches the disk in clear.
fn in_database_files(app: &TestApp, needle: &[u8]) -> bool {
    let data = app.dir.path().join("data");
    let mut dump = Vec::new();
    for file in ["tollgate.db", "tollgate.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(file)) {
            dump.extend(bytes);
        }
    }
    assert!(dump.len() > 10_000, "the database files were read");
    dump.windows(needle.len()).any(|w| w == needle)
}

/// Waits until the store holds `n` chat usage rows of `key_id` (asserting it holds no more)
/// and returns them.
async fn chat_rows(app: &TestApp, key_id: &str, n: usize) -> Vec<tollgate_store::UsageRow> {
    for _ in 0..500 {
        let rows: Vec<_> = app
            .all_usage()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.key_id.as_deref() == Some(key_id) && r.endpoint == "/v1/chat/completions")
            .collect();
        if rows.len() >= n {
            assert_eq!(rows.len(), n, "one usage row per request");
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("usage rows of {key_id} not written");
}

async fn app_and_key() -> (TestApp, String) {
    let app = TestApp::start().await.unwrap();
    let key = app.create_key("test").await.unwrap();
    (app, key)
}

#[tokio::test]
async fn keys_are_checked_before_anything_else() {
    let (app, key) = app_and_key().await;
    let url = app.url("/v1/chat/completions");
    // One character changed (always to a different one): the checksum must catch it.
    let swapped = if &key[10..11] == "x" { "y" } else { "x" };
    let typo = format!("{}{swapped}{}", &key[..10], &key[11..]);
    let unknown = app.config.key_format.generate();
    for (label, auth) in
        [("missing", None), ("typo", Some(typo.as_str())), ("unknown", Some(unknown.as_str())), ("junk", Some("hello"))]
    {
        let res = app.client.post_json(&url, auth, &chat("demo-chat")).await.unwrap();
        assert_eq!(res.status, 401, "{label}");
        assert_eq!(res.error_code(), "invalid_api_key", "{label}");
        assert_eq!(res.json()["error"]["type"], "authentication_error");
        assert!(res.header("x-request-id").is_some());
    }
    // Anthropic-style clients send x-api-key.
    let res = app.client.call(Method::GET, &app.url("/v1/models"), &[("x-api-key", &key)], "").await.unwrap();
    assert_eq!(res.status, 200);
    // A rejected request is never forwarded.
    assert!(app.fake.requests().is_empty());
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let (app, key) = app_and_key().await;
    let url = app.url("/v1/chat/completions");
    let k = Some(key.as_str());
    let res = app.client.post_json(&url, k, &chat("no-such-model")).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (404, "model_not_found".into()));
    assert_eq!(res.json()["error"]["param"], "model");

    let auth = format!("Bearer {key}");
    let res = app.client.call(Method::POST, &url, &[("authorization", &auth)], "{\"model\": ").await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (400, "invalid_request".into()));

    let big = json!({ "model": "demo-chat", "messages": [{ "role": "user", "content": "x".repeat(70_000) }] });
    let res = app.client.post_json(&url, k, &big).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (413, "request_too_large".into()));

    let res = app
        .client
        .post_json(&app.url("/v1/embeddings"), k, &json!({ "model": "demo-chat", "input": "x" }))
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (400, "invalid_request".into()));

    let res = app.client.get(&app.url("/v1/chat/completions"), k).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (405, "method_not_allowed".into()));
    let res = app.client.get(&app.url("/v1/nothing/here"), k).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (404, "not_found".into()));
}

#[tokio::test]
async fn chat_is_forwarded_renamed_with_the_provider_key_and_billed_exactly() {
    let (app, key) = app_and_key().await;
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["object"], "chat.completion");

    let sent = app.fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(sent[0].body["model"], "fake-mini", "public id replaced by the channel's upstream name");
    assert_eq!(sent[0].headers["authorization"], format!("Bearer {UPSTREAM_KEY}").as_str());
    let all_headers = format!("{:?}", sent[0].headers);
    assert!(!all_headers.contains(&key), "the client's key must not reach the upstream");

    // The fake counts words: "hello there" + 1 per message = 3 prompt, 5 completion.
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 5));
    // 3 * 0.15 + 5 * 0.60 = 3.45 micro-USD -> rounded half up once: 3.
    assert_eq!(row.cost.0, 3);
    assert_eq!(row.billing_reason, "completed");
    assert_eq!((row.status, row.stream), (200, false));
    assert_eq!(row.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.provider.as_deref(), Some("fake"));
    assert_eq!(row.key_name.as_deref(), Some("test"));
    assert_eq!(row.endpoint, "/v1/chat/completions");
    assert_eq!(row.client_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn streams_ask_upstream_for_usage_and_hide_it_unless_asked() {
    let (app, key) = app_and_key().await;
    let url = app.url("/v1/chat/completions");
    let mut req = chat("gpt-4o-mini");
    req["stream"] = true.into();
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let events = sse_data(&res.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "usage-only chunk must be hidden");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert_eq!(app.fake.requests()[0].body["stream_options"]["include_usage"], true);
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, true));
    assert_eq!(row.billing_reason, "completed");
    assert!(row.ttft_ms.is_some());

    req["stream_options"] = json!({ "include_usage": true });
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    let events = sse_data(&res.text());
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn stream_bytes_reach_the_client_before_the_upstream_finishes() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_secs(2) });
    let OpenStream { mut body, .. } = app.open_chat_stream(&key).await;
    read_until(&mut body, "Hello").await.unwrap();
    // The upstream now waits 2 s before its next chunk: nothing more may be buffered here.
    let more = tokio::time::timeout(Duration::from_millis(300), next_data(&mut body)).await;
    assert!(more.is_err(), "the gateway delivered the first chunk while the upstream was still streaming");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_billed_for_what_was_delivered() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_secs(2) });
    let OpenStream { request_id, mut body } = app.open_chat_stream(&key).await;
    read_until(&mut body, "Hello").await.unwrap();
    drop(body);
    let row = app.usage_row(&request_id).await.unwrap();
    assert_eq!(row.billing_reason, "client_disconnected");
    assert!(row.completion_tokens >= 1, "delivered text is billed, never zero: {row:?}");
    assert!(row.prompt_tokens > 0);
}

#[tokio::test]
async fn a_client_that_leaves_after_k_chunks_is_billed_at_least_k_tokens_once() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_millis(100) });
    let OpenStream { request_id, mut body } = app.open_chat_stream(&key).await;
    // The fake sends one word per chunk: "Hello", " from", " the" — three content chunks.
    read_until(&mut body, " the").await.unwrap();
    drop(body);
    let row = app.usage_row(&request_id).await.unwrap();
    assert_eq!(row.billing_reason, "client_disconnected");
    assert!(row.completion_tokens >= 3, "three delivered chunks bill at least three tokens: {row:?}");
    assert!(row.completion_tokens < 5, "what was not delivered is not billed: {row:?}");
    // The upstream request was cancelled with the client: no second row appears later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows: Vec<_> = app.all_usage().await.unwrap().into_iter().filter(|r| r.request_id == request_id).collect();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_errors_without_upstream_secrets() {
    let (app, key) = app_and_key().await;
    let url = app.url("/v1/chat/completions");
    for (behavior, status, code) in [
        (Behavior::Status(503), 502, "upstream_error"),
        (Behavior::Status(500), 502, "upstream_error"),
        (Behavior::Status(401), 502, "upstream_error"),
        (Behavior::Status(429), 429, "rate_limit_exceeded"),
        (Behavior::CloseConnection, 502, "upstream_error"),
        (Behavior::Delay(Duration::from_secs(5)), 504, "upstream_error"),
    ] {
        app.fake.set_behavior(behavior.clone());
        let res = app.client.post_json(&url, Some(&key), &chat("gpt-4o-mini")).await.unwrap();
        assert_eq!((res.status.as_u16(), res.error_code()), (status, code.to_owned()), "{behavior:?}: {}", res.text());
        assert!(!res.text().contains(UPSTREAM_KEY) && !res.text().contains(&key));
        let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!((row.status, row.cost.0, row.billing_reason.as_str()), (status, 0, "not_billed"), "{behavior:?}");
    }
    // The request's own mistakes are relayed as the provider worded them.
    app.fake.set_behavior(Behavior::Status(400));
    let res = app.client.post_json(&url, Some(&key), &chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(res.status, 400);
    assert!(res.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn an_upstream_that_breaks_mid_stream_ends_with_an_error_event_and_is_billed() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::BreakStreamAfter(2));
    let mut req = chat("gpt-4o-mini");
    req["stream"] = true.into();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &req).await.unwrap();
    let events = sse_data(&res.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "upstream_interrupted");
    assert!(row.completion_tokens >= 1);
}

#[tokio::test]
async fn streams_without_a_usage_block_are_estimated() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::NoUsageInStream);
    let mut req = chat("gpt-4o-mini");
    req["stream"] = true.into();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &req).await.unwrap();
    assert_eq!(res.status, 200);
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "estimated");
    // "Hello from the fake upstream." is 29 bytes: ceil(29 / 4) = 8 tokens.
    assert_eq!(row.completion_tokens, 8);
}

#[tokio::test]
async fn other_endpoints_pass_through_and_are_metered() {
    let (app, key) = app_and_key().await;
    let k = Some(key.as_str());
    let res = app
        .client
        .post_json(&app.url("/v1/embeddings"), k, &json!({ "model": "text-embedding-3-small", "input": ["a b", "c"] }))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["data"].as_array().map(Vec::len), Some(2));
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 0));

    let res = app
        .client
        .post_json(&app.url("/v1/responses"), k, &json!({ "model": "gpt-4o-mini", "input": "hi there" }))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["object"], "response");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (2, 5));

    let res = app
        .client
        .post_json(&app.url("/v1/images/generations"), k, &json!({ "model": "gpt-image-1", "prompt": "a cat", "n": 2 }))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.cost.0, 80_000, "two images at $0.04");

    let res = app
        .client
        .post_json(&app.url("/v1/completions"), k, &json!({ "model": "demo-chat", "prompt": "say hi" }))
        .await
        .unwrap();
    assert_eq!(res.json()["object"], "text_completion");
}

#[tokio::test]
async fn the_demo_answers_deterministically() {
    let (app, key) = app_and_key().await;
    let k = Some(key.as_str());
    let a = app.client.post_json(&app.url("/v1/chat/completions"), k, &chat("demo-chat")).await.unwrap().json();
    let b = app.client.post_json(&app.url("/v1/chat/completions"), k, &chat("demo-chat")).await.unwrap().json();
    let text = a["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.ends_with("You said: hello there"), "{text}");
    assert_eq!(text, b["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(
        a["usage"],
        json!({ "prompt_tokens": 5, "completion_tokens": 17, "total_tokens": 22 }),
        "15 fixed words + \"hello there\"; prompt: 2 words + 3 for the message"
    );

    let e = app
        .client
        .post_json(&app.url("/v1/embeddings"), k, &json!({ "model": "demo-embed", "input": "x", "dimensions": 8 }))
        .await
        .unwrap()
        .json();
    let v: Vec<f64> = e["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(v.len(), 8);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn models_are_listed_and_retrieved() {
    let (app, key) = app_and_key().await;
    let list = app.client.get(&app.url("/v1/models"), Some(&key)).await.unwrap().json();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["demo-chat", "demo-embed", "gpt-4o-mini", "gpt-image-1", "text-embedding-3-small"]);
    let one = app.client.get(&app.url("/v1/models/gpt-4o-mini"), Some(&key)).await.unwrap();
    assert_eq!(one.json()["object"], "model");
    let none = app.client.get(&app.url("/v1/models/nope"), Some(&key)).await.unwrap();
    assert_eq!(none.error_code(), "model_not_found");
    let anon = app.client.get(&app.url("/v1/models"), None).await.unwrap();
    assert_eq!(anon.status, 401);
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_every_keyed_request_leaves_one_row() {
    let (app, key) = app_and_key().await;
    let auth = format!("Bearer {key}");
    let url = app.url("/v1/models");
    let res = app
        .client
        .call(Method::GET, &url, &[("authorization", &auth), ("x-request-id", "trace-42")], "")
        .await
        .unwrap();
    assert_eq!(res.header("x-request-id"), Some("trace-42"));
    let res =
        app.client.call(Method::GET, &url, &[("authorization", &auth), ("x-request-id", "bad id!")], "").await.unwrap();
    let generated = res.header("x-request-id").unwrap().to_owned();
    assert!(generated.starts_with("req_"));
    // Requests naming no known key are counted per address rather than logged one by one
    // (see `auth_failures`); every request of a known key is one row.
    let rejected = app.client.get(&url, None).await.unwrap();
    assert!(rejected.header("x-request-id").unwrap().starts_with("req_"));
    let row = app.usage_row("trace-42").await.unwrap();
    assert_eq!(row.client_request_id.as_deref(), Some("trace-42"));
    assert!(row.request_id.starts_with("req_"), "the row's own id is the gateway's");
    assert_eq!(app.usage_row(&generated).await.unwrap().client_request_id, None);
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams_and_flushes_usage() {
    let (mut app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_millis(100) });
    let OpenStream { request_id, mut body } = app.open_chat_stream(&key).await;
    let mut text = read_until(&mut body, "chat.completion.chunk").await.unwrap();
    app.begin_stop();
    text.push_str(&read_to_end(&mut body).await.unwrap());
    assert!(text.ends_with("data: [DONE]\n\n"), "the in-flight stream completed: {text}");
    app.wait_stopped().await;
    // Stopped: the row must already be in the database, no waiting.
    let store = app.store().await.unwrap();
    let rows = store
        .list_usage(&tollgate_store::UsageQuery { request_id: Some(request_id), limit: 5, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].billing_reason, "completed");
}

#[tokio::test]
async fn health_and_readiness() {
    let mut app = TestApp::start().await.unwrap();
    assert_eq!(app.client.get(&app.url("/healthz"), None).await.unwrap().status, 200);
    assert_eq!(app.client.get(&app.url("/readyz"), None).await.unwrap().status, 200);
    app.stop().await;
}

#[tokio::test]
async fn management_api_creates_and_lists_keys_with_the_admin_token() {
    let app = TestApp::start().await.unwrap();
    let url = app.url("/api/v1/keys");
    for token in [None, Some("wrong")] {
        let res = app.client.post_json(&url, token, &json!({ "name": "x" })).await.unwrap();
        assert_eq!((res.status.as_u16(), res.error_code()), (401, "unauthorized".into()));
    }
    let admin = Some("test-admin-token");
    let res = app.client.post_json(&url, admin, &json!({ "name": "svc", "expires_in": "30d" })).await.unwrap();
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["preview"], format!("sk-tg-…{}", &secret[secret.len() - 4..]));
    assert!(created["expires_at"].is_string());
    app.key_accepted(&secret, Duration::from_secs(1)).await.unwrap();

    let list = app.client.get(&url, admin).await.unwrap();
    assert!(!list.text().contains(&secret), "a listing never carries a secret");
    assert_eq!(list.json()["data"][0]["name"], "svc");
    assert!(list.json()["data"][0].get("key").is_none());

    let res = app.client.post_json(&url, admin, &json!({ "name": "x", "colour": "red" })).await.unwrap();
    assert_eq!(res.status, 400);
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("colour"));
    let res = app.client.post_json(&url, admin, &json!({ "name": "x", "expires_in": "7d" })).await.unwrap();
    assert_eq!(res.json()["error"]["param"], "expires_in");
    let res = app.client.get(&app.url("/api/v1/keys?limit=0"), admin).await.unwrap();
    assert_eq!(res.json()["error"]["param"], "limit");
}
