//! The inbound Anthropic Messages API end to end: `POST /v1/messages` in Anthropic's shape,
//! served by the demo model, the fake OpenAI upstream and the fake Anthropic upstream, and
//! what comes back — message, event stream, errors — billed exactly as a chat completion.

use http::Method;
use serde_json::{Value, json};
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY};
use tollgate_testkit::client::Answer;
use tollgate_testkit::fake_anthropic::{FakeAnthropic, Options, TOOL_TEXT, TOOL_USE_TOKENS};
use tollgate_testkit::fake_openai::{Behavior, REPLY_TEXT};

async fn app_and_key() -> (TestApp, String) {
    let app = TestApp::start().await.unwrap();
    let key = app.create_key("test").await.unwrap();
    (app, key)
}

pub(super) fn hello(model: &str) -> Value {
    json!({ "model": model, "max_tokens": 1024, "messages": [{ "role": "user", "content": "hello there" }] })
}

/// `POST /v1/messages` the way the Anthropic SDK sends it: `x-api-key` and `anthropic-version`.
pub(super) async fn post(app: &TestApp, key: &str, body: &Value) -> Answer {
    let headers = [
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "tools-2024-04-04"),
        ("content-type", "application/json"),
    ];
    app.client.call(Method::POST, &app.url("/v1/messages"), &headers, body.to_string()).await.unwrap()
}

/// `(event name, data)` of every event of an Anthropic stream, checking that each `event:`
/// line names the type its data carries.
pub(super) fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or_else(|| panic!("one-line event: {e:?}"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line: {e:?}")).to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

pub(super) fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// The text of every `text_delta`, joined.
pub(super) fn streamed_text(events: &[(String, Value)]) -> String {
    events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect()
}

#[tokio::test]
async fn a_message_is_served_by_a_chat_model_translated_and_billed_as_messages() {
    let (app, key) = app_and_key().await;
    let mut req = hello("gpt-4o-mini");
    req["system"] = json!("Be brief.");
    req["metadata"] = json!({ "user_id": "end-user-7" });
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("msg_") && id.len() > 10, "{id}");
    assert_eq!(
        body,
        json!({
            "id": id, "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [{ "type": "text", "text": REPLY_TEXT }],
            "stop_reason": "end_turn", "stop_sequence": null,
            // The fake counts words + 1 per message: "Be brief." 3, "hello there" 3.
            "usage": { "input_tokens": 6, "output_tokens": 5 },
        })
    );
    let request_id = res.header("x-request-id").unwrap();
    assert_eq!(res.header("request-id"), Some(request_id));

    let sent = app.fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(
        sent[0].body,
        json!({
            "model": "fake-mini", "max_tokens": 1024, "user": "end-user-7",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": "hello there" },
            ],
        })
    );
    let headers = format!("{:?}", sent[0].headers);
    assert!(!headers.contains(&key) && !headers.contains("anthropic"), "{headers}");

    let row = app.usage_row(request_id).await.unwrap();
    assert_eq!(row.endpoint, "/v1/messages");
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (6, 5, false));
    // 6 * 0.15 + 5 * 0.60 = 3.9 micro-USD, rounded once: 4.
    assert_eq!(row.cost.0, 4);
    assert_eq!((row.status, row.billing_reason.as_str()), (200, "completed"));
    assert_eq!((row.model.as_deref(), row.provider.as_deref()), (Some("gpt-4o-mini"), Some("fake")));
}

#[tokio::test]
async fn a_stream_sends_anthropic_events_in_order_with_the_usage_at_the_end() {
    let (app, key) = app_and_key().await;
    let mut req = hello("gpt-4o-mini");
    req["stream"] = true.into();
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let evs = events(&res.text());
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let message = &evs[0].1["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&message["model"], &message["role"], &message["content"], &message["stop_reason"]),
        (&json!("gpt-4o-mini"), &json!("assistant"), &json!([]), &Value::Null)
    );
    assert_eq!(
        evs[1].1,
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } })
    );
    assert_eq!(evs[2].1["delta"]["type"], "text_delta");
    assert_eq!(streamed_text(&evs), REPLY_TEXT);
    assert_eq!(evs[7].1, json!({ "type": "content_block_stop", "index": 0 }));
    assert_eq!(
        evs[8].1,
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null },
            "usage": { "input_tokens": 3, "output_tokens": 5 } })
    );
    // The gateway asked for the usage chunk; the client never sees OpenAI chunks.
    assert_eq!(app.fake.requests()[0].body["stream_options"]["include_usage"], true);
    assert!(!res.text().contains("chat.completion") && !res.text().contains("[DONE]"));

    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.endpoint, "/v1/messages");
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, true));
    assert_eq!(row.billing_reason, "completed");
    assert!(row.ttft_ms.is_some());
}

#[tokio::test]
async fn multi_turn_tool_use_and_images_reach_the_chat_model_as_openai_messages() {
    let (app, key) = app_and_key().await;
    let req = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 200,
        "system": [{ "type": "text", "text": "You check weather." }],
        "stop_sequences": ["STOP"],
        "temperature": 0.2,
        "tools": [{ "name": "get_weather", "description": "Weather by city",
            "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } } }],
        "tool_choice": { "type": "auto" },
        "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "Weather in Oslo?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
            ] },
            { "role": "assistant", "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": { "city": "Oslo" } },
            ] },
            { "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "toolu_01", "content": "Rain, 7 C" },
                { "type": "text", "text": "And tomorrow?" },
            ] },
        ],
    });
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["content"][0]["text"], REPLY_TEXT);
    let sent = &app.fake.requests()[0].body;
    assert_eq!(
        sent["messages"],
        json!([
            { "role": "system", "content": "You check weather." },
            { "role": "user", "content": [
                { "type": "text", "text": "Weather in Oslo?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
            ] },
            { "role": "assistant", "content": "Checking.", "tool_calls": [{ "id": "toolu_01", "type": "function",
                "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" } }] },
            { "role": "tool", "tool_call_id": "toolu_01", "content": "Rain, 7 C" },
            { "role": "user", "content": "And tomorrow?" },
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{ "type": "function", "function": { "name": "get_weather", "description": "Weather by city",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }])
    );
    assert_eq!(
        (&sent["tool_choice"], &sent["stop"], &sent["temperature"]),
        (&json!("auto"), &json!(["STOP"]), &json!(0.2))
    );
}

#[tokio::test]
async fn the_demo_model_answers_with_bearer_auth_and_honours_max_tokens() {
    let (app, key) = app_and_key().await;
    let url = app.url("/v1/messages");
    let res = app.client.post_json(&url, Some(&key), &hello("demo-chat")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert!(body["content"][0]["text"].as_str().unwrap().ends_with("You said: hello there"));
    assert_eq!(body["usage"], json!({ "input_tokens": 5, "output_tokens": 17 }));
    assert_eq!(body["stop_reason"], "end_turn");

    let mut short = hello("demo-chat");
    short["max_tokens"] = 4.into();
    let body = app.client.post_json(&url, Some(&key), &short).await.unwrap().json();
    assert_eq!((&body["stop_reason"], &body["usage"]["output_tokens"]), (&json!("max_tokens"), &json!(4)));

    short["stream"] = true.into();
    let res = app.client.post_json(&url, Some(&key), &short).await.unwrap();
    let evs = events(&res.text());
    assert_eq!(names(&evs).last(), Some(&"message_stop"));
    assert_eq!(streamed_text(&evs), "Hello! This is the");
    let delta = &evs[evs.len() - 2].1;
    assert_eq!((&delta["delta"]["stop_reason"], &delta["usage"]["output_tokens"]), (&json!("max_tokens"), &json!(4)));
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.endpoint.as_str(), row.completion_tokens, row.stream), ("/v1/messages", 4, true));
}

#[tokio::test]
async fn errors_take_anthropic_shape_with_the_gateway_statuses() {
    let (app, key) = app_and_key().await;
    let check = |res: &Answer, status: u16, kind: &str| {
        assert_eq!(res.status, status, "{}", res.text());
        let body = res.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert_eq!(res.header("request-id"), res.header("x-request-id"));
        assert!(res.header("request-id").is_some());
    };
    let res = post(&app, "sk-tg-not-a-real-key", &hello("demo-chat")).await;
    check(&res, 401, "authentication_error");
    let res = app.client.post_json(&app.url("/v1/messages"), None, &hello("demo-chat")).await.unwrap();
    check(&res, 401, "authentication_error");

    let mut no_max = hello("demo-chat");
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let res = post(&app, &key, &no_max).await;
    check(&res, 400, "invalid_request_error");
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("max_tokens"));
    // A refusal of a known key keeps its row (unknown keys are counted: see `auth_failures`).
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.endpoint.as_str(), row.status), ("/v1/messages", 400));
    check(&post(&app, &key, &hello("no-such-model")).await, 404, "not_found_error");
    check(&post(&app, &key, &hello("demo-embed")).await, 400, "invalid_request_error");
    let res =
        app.client.call(Method::POST, &app.url("/v1/messages"), &[("x-api-key", &key)], "{\"model\":").await.unwrap();
    check(&res, 400, "invalid_request_error");
    assert!(app.fake.requests().is_empty(), "nothing refused reaches the upstream");

    // Upstream failures keep the gateway's statuses and rate-limit headers.
    app.fake.set_behavior(Behavior::Status(429));
    let res = post(&app, &key, &hello("gpt-4o-mini")).await;
    check(&res, 429, "rate_limit_error");
    assert!(res.header("retry-after").is_some());
    app.fake.set_behavior(Behavior::Status(503));
    check(&post(&app, &key, &hello("gpt-4o-mini")).await, 502, "api_error");
    // The request's own mistakes are relayed as the provider worded them.
    app.fake.set_behavior(Behavior::Status(400));
    check(&post(&app, &key, &hello("gpt-4o-mini")).await, 400, "invalid_request_error");
}

#[tokio::test]
async fn key_endpoint_scopes_allow_and_deny_messages() {
    let app = TestApp::start().await.unwrap();
    let (_, chat_only) =
        app.api_key(&json!({ "name": "c", "allowed_endpoints": ["/v1/chat/completions"] })).await.unwrap();
    let res = post(&app, &chat_only, &hello("demo-chat")).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["error"]["type"], "permission_error");
    let (_, messages_only) = app.api_key(&json!({ "name": "m", "allowed_endpoints": ["/v1/messages"] })).await.unwrap();
    assert_eq!(post(&app, &messages_only, &hello("demo-chat")).await.status, 200);
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&messages_only), &hello("demo-chat")).await;
    assert_eq!(res.unwrap().status, 403);
}

#[tokio::test]
async fn an_interrupted_stream_ends_with_an_error_event_and_is_billed() {
    let (app, key) = app_and_key().await;
    app.fake.set_behavior(Behavior::BreakStreamAfter(2));
    let mut req = hello("gpt-4o-mini");
    req["stream"] = true.into();
    let res = post(&app, &key, &req).await;
    let evs = events(&res.text());
    assert_eq!(names(&evs).last(), Some(&"error"));
    assert!(!names(&evs).contains(&"message_stop"));
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "upstream_interrupted");
}

/// `claude-test`, served only by the fake Anthropic: Messages in, Messages upstream, natively.
pub(super) async fn claude_app() -> (TestApp, FakeAnthropic, String) {
    let claude =
        FakeAnthropic::start_with(Options { api_key: Some(UPSTREAM_KEY.into()), ..Options::default() }).await.unwrap();
    let extra = format!(
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{url}"
api_key = "{UPSTREAM_KEY}"

[[models]]
id = "claude-test"
type = "chat"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
channels = [{{ provider = "claude", model = "claude-fake-1" }}]
"#,
        url = claude.base_url()
    );
    let app = TestApp::start_with(&extra).await.unwrap();
    let key = app.create_key("test").await.unwrap();
    (app, claude, key)
}

#[tokio::test]
async fn tool_use_answers_round_trip_through_an_anthropic_channel() {
    let (app, claude, key) = claude_app().await;
    let mut req = json!({
        "model": "claude-test",
        "max_tokens": 100,
        "tools": [{ "name": "lookup", "input_schema": { "type": "object", "properties": { "query": { "type": "string" } } } }],
        "messages": [{ "role": "user", "content": "what is the weather" }],
    });
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["content"][0], json!({ "type": "text", "text": TOOL_TEXT }));
    assert_eq!(body["content"][1]["type"], "tool_use");
    assert_eq!(body["content"][1]["name"], "lookup");
    assert_eq!(body["content"][1]["input"], json!({ "query": "what is the weather" }));
    assert_eq!(body["usage"]["output_tokens"], 3 + TOOL_USE_TOKENS);
    assert_eq!(claude.requests()[0].body["model"], "claude-fake-1");

    req["stream"] = true.into();
    let res = post(&app, &key, &req).await;
    let evs = events(&res.text());
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ],
        "Anthropic's own stream (the model has only Anthropic channels: relayed natively)"
    );
    assert_eq!(streamed_text(&evs), TOOL_TEXT);
    assert_eq!(evs[7].1["content_block"]["type"], "tool_use");
    let json: String = evs.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({ "query": "what is the weather" }));
    assert_eq!(evs[12].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(evs[12].1["usage"]["output_tokens"], 3 + TOOL_USE_TOKENS);
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.endpoint.as_str(), row.completion_tokens), ("/v1/messages", 3 + TOOL_USE_TOKENS));
}
