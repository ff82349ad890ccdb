//! The `anthropic` provider end to end: OpenAI chat completions in through the gateway,
//! the fake Anthropic Messages API behind it, and what comes back — content, tool calls,
//! finish reasons, usage, streams, errors — in OpenAI's format, billed exactly.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY};
use tollgate_testkit::client::{OpenStream, read_until, sse_data};
use tollgate_testkit::fake_anthropic::{
    Behavior, FakeAnthropic, IMAGE_TOKENS, Options, REPLY_TEXT, TOOL_TEXT, TOOL_USE_TOKENS,
};

/// The gateway with `claude-test` (upstream name `claude-fake-1`, $3 / $15 per million
/// tokens) served by the fake Anthropic, which accepts only [`UPSTREAM_KEY`], and
/// `claude-badkey` on a provider configured with the wrong key.
async fn app() -> (TestApp, FakeAnthropic, String) {
    let claude =
        FakeAnthropic::start_with(Options { api_key: Some(UPSTREAM_KEY.into()), ..Options::default() }).await.unwrap();
    let extra = format!(
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{url}"
api_key = "{UPSTREAM_KEY}"

[[providers]]
name = "claude-badkey"
kind = "anthropic"
base_url = "{url}"
api_key = "sk-ant-wrong-key"
anthropic_version = "2023-06-01"

[[models]]
id = "claude-test"
type = "chat"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
max_output_tokens = 1024
channels = [{{ provider = "claude", model = "claude-fake-1" }}]

[[models]]
id = "claude-badkey"
type = "chat"
channels = [{{ provider = "claude-badkey" }}]
"#,
        url = claude.base_url()
    );
    let app = TestApp::start_with(&extra).await.unwrap();
    let key = app.create_key("test").await.unwrap();
    (app, claude, key)
}

fn chat(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// The JSON chunks of an SSE body, without `[DONE]`.
fn chunks(body: &str) -> Vec<Value> {
    sse_data(body).iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn a_chat_completion_round_trips_through_the_messages_api_and_is_billed_exactly() {
    let (app, claude, key) = app().await;
    let res = app
        .client
        .post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("claude-test", "hello there"))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "hello there" + 1 for the message; one token per reply word.
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 8);

    let sent = claude.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].method.as_str(), sent[0].path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(sent[0].headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(sent[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent[0].headers["content-type"], "application/json");
    assert!(sent[0].headers.get("authorization").is_none());
    assert!(!format!("{:?}", sent[0].headers).contains(&key), "the client's key must not reach the upstream");
    assert_eq!(
        sent[0].body,
        json!({
            "model": "claude-fake-1",
            "max_tokens": 1024,
            "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hello there" }] }],
        }),
        "the model's max_output_tokens fills Anthropic's required max_tokens"
    );

    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 5));
    // 3 * $3 + 5 * $15 per million tokens = 84 micro-USD.
    assert_eq!(row.cost.0, 84);
    assert_eq!((row.billing_reason.as_str(), row.status, row.stream), ("completed", 200, false));
    assert_eq!((row.model.as_deref(), row.provider.as_deref()), (Some("claude-test"), Some("claude")));
}

#[tokio::test]
async fn a_stream_is_translated_chunk_by_chunk_with_usage_only_when_asked() {
    let (app, claude, key) = app().await;
    let url = app.url("/v1/chat/completions");
    let mut req = chat("claude-test", "hello there");
    req["stream"] = true.into();
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let text = res.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let c = chunks(&text);
    assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(c.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "usage-only chunk hidden: {text}");
    assert_eq!(c[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
    let content: String = c.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, REPLY_TEXT);
    assert_eq!(c.len(), 1 + 5 + 1, "role, one chunk per word, finish");
    assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(claude.requests()[0].body["stream"], true);
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, true));
    assert_eq!((row.billing_reason.as_str(), row.cost.0), ("completed", 84));
    assert!(row.ttft_ms.is_some());

    req["stream_options"] = json!({ "include_usage": true });
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    let events = sse_data(&res.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        (usage["usage"]["prompt_tokens"].as_u64(), usage["usage"]["completion_tokens"].as_u64()),
        (Some(3), Some(5))
    );
    assert!(claude.requests()[1].body.get("stream_options").is_none(), "OpenAI-only fields never reach Anthropic");
}

#[tokio::test]
async fn system_turns_images_tools_tool_results_and_stops_are_translated() {
    let (app, claude, key) = app().await;
    let url = app.url("/v1/chat/completions");
    let tools = json!([{ "type": "function", "function": {
        "name": "get_weather", "description": "Weather by city",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] },
    } }]);
    let mut messages = vec![
        json!({ "role": "system", "content": "You are terse." }),
        json!({ "role": "user", "content": "Hi." }),
        json!({ "role": "assistant", "content": "Hello." }),
        json!({ "role": "user", "content": [{ "type": "text", "text": "See this." }] }),
        json!({ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
            { "type": "text", "text": "What is the weather in Paris?" },
        ] }),
    ];
    let req = json!({ "model": "claude-test", "messages": messages, "tools": tools, "max_tokens": 200 });
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], TOOL_TEXT);
    let call = choice["message"]["tool_calls"][0].clone();
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "query": "What is the weather in Paris?" }));
    // System: 3 words; messages: (1 + 1) + (1 + 1) + (1 + 2 + 10 for the image + 6), the
    // two consecutive user messages having become one turn.
    assert_eq!(body["usage"]["prompt_tokens"], 3 + 2 + 2 + 1 + 2 + IMAGE_TOKENS + 6);
    assert_eq!(body["usage"]["completion_tokens"], 3 + TOOL_USE_TOKENS);

    let sent = &claude.requests()[0].body;
    assert_eq!(sent["system"], "You are terse.");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(
        sent["messages"],
        json!([
            { "role": "user", "content": [{ "type": "text", "text": "Hi." }] },
            { "role": "assistant", "content": [{ "type": "text", "text": "Hello." }] },
            { "role": "user", "content": [
                { "type": "text", "text": "See this." },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                { "type": "text", "text": "What is the weather in Paris?" },
            ] },
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{
            "name": "get_weather", "description": "Weather by city",
            "input_schema": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] },
        }])
    );

    // The tool's answer goes back; the reply stops before the word containing "fake".
    messages.push(choice["message"].clone());
    messages.push(json!({ "role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C" }));
    let req = json!({
        "model": "claude-test", "messages": messages, "tools": tools,
        "tool_choice": { "type": "function", "function": { "name": "get_weather" } },
        "parallel_tool_calls": false, "stop": "fake", "temperature": 0.2,
    });
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = &claude.requests()[1].body;
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 5);
    assert_eq!(
        turns[3],
        json!({ "role": "assistant", "content": [
            { "type": "text", "text": TOOL_TEXT },
            { "type": "tool_use", "id": call["id"], "name": "get_weather", "input": { "query": "What is the weather in Paris?" } },
        ] })
    );
    assert_eq!(
        turns[4],
        json!({ "role": "user", "content": [{ "type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 21 C" }] })
    );
    assert_eq!(sent["stop_sequences"], json!(["fake"]));
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(
        sent["tool_choice"],
        json!({ "type": "tool", "name": "get_weather", "disable_parallel_tool_use": true })
    );
    // A named tool makes the fake call it again; what a tool_choice "none" leaves is text.
    assert_eq!(res.json()["choices"][0]["finish_reason"], "tool_calls");

    let mut req = req;
    req["tool_choice"] = "none".into();
    let res = app.client.post_json(&url, Some(&key), &req).await.unwrap();
    let body = res.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the", "cut at the stop sequence");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn streamed_tool_calls_arrive_as_openai_tool_call_deltas() {
    let (app, _claude, key) = app().await;
    let req = json!({
        "model": "claude-test", "stream": true,
        "messages": [{ "role": "user", "content": "weather in Oslo?" }],
        "tools": [{ "type": "function", "function": { "name": "get_weather" } }],
    });
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &req).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let c = chunks(&res.text());
    let calls: Vec<&Value> =
        c.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(calls.iter().all(|d| d["index"] == 0));
    assert!(calls[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({ "query": "weather in Oslo?" }));
    assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.completion_tokens, row.billing_reason.as_str()), (3 + TOOL_USE_TOKENS, "completed"));
}

#[tokio::test]
async fn anthropic_errors_map_to_gateway_errors_without_leaking_keys() {
    let (app, claude, key) = app().await;
    let url = app.url("/v1/chat/completions");
    let check_no_secrets = |text: &str| {
        assert!(!text.contains(UPSTREAM_KEY) && !text.contains("sk-ant-wrong-key") && !text.contains(&key), "{text}")
    };

    // A provider holding the wrong key: Anthropic's 401 is the gateway's fault, not the client's.
    let res = app.client.post_json(&url, Some(&key), &chat("claude-badkey", "hi")).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (502, "upstream_error".to_owned()), "{}", res.text());
    check_no_secrets(&res.text());
    assert!(!res.text().contains("x-api-key"), "Anthropic's wording is replaced: {}", res.text());
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.status, row.cost.0, row.billing_reason.as_str()), (502, 0, "not_billed"));

    for (behavior, status, code) in [
        (Behavior::Status(401), 502, "upstream_error"),
        (Behavior::Status(403), 502, "upstream_error"),
        (Behavior::Status(500), 502, "upstream_error"),
        (Behavior::Status(529), 502, "upstream_error"),
        (Behavior::Status(429), 429, "rate_limit_exceeded"),
        (Behavior::CloseConnection, 502, "upstream_error"),
        (Behavior::Delay(Duration::from_secs(5)), 504, "upstream_error"),
    ] {
        claude.set_behavior(behavior.clone());
        let res = app.client.post_json(&url, Some(&key), &chat("claude-test", "hi")).await.unwrap();
        assert_eq!((res.status.as_u16(), res.error_code()), (status, code.to_owned()), "{behavior:?}: {}", res.text());
        check_no_secrets(&res.text());
        if status == 429 {
            assert_eq!(res.header("retry-after"), Some("7"), "Anthropic's retry-after is kept");
        }
        let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!((row.status, row.cost.0, row.billing_reason.as_str()), (status, 0, "not_billed"), "{behavior:?}");
    }

    // The request's own mistakes are relayed, in OpenAI's error shape.
    claude.set_behavior(Behavior::Status(400));
    let res = app.client.post_json(&url, Some(&key), &chat("claude-test", "hi")).await.unwrap();
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"]["message"], "The fake Anthropic rejected this request on purpose.");
    assert_eq!(res.json()["error"]["type"], "invalid_request_error");
    claude.set_behavior(Behavior::Normal);
    let bmp = json!({ "model": "claude-test", "messages": [{ "role": "user", "content": [
        { "type": "image_url", "image_url": { "url": "data:image/bmp;base64,Qk0=" } },
    ] }] });
    let res = app.client.post_json(&url, Some(&key), &bmp).await.unwrap();
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("media_type"), "{}", res.text());
}

#[tokio::test]
async fn a_stream_that_fails_mid_way_ends_with_an_error_event_and_is_billed_as_interrupted() {
    let (app, claude, key) = app().await;
    let mut req = chat("claude-test", "hello there");
    req["stream"] = true.into();
    for behavior in [Behavior::BreakStreamAfter(2), Behavior::ErrorEventAfter(2)] {
        claude.set_behavior(behavior.clone());
        let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &req).await.unwrap();
        assert_eq!(res.status, 200);
        let c = chunks(&res.text());
        let content: String = c.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(content, "Hello from", "{behavior:?}: what came before the failure is delivered");
        assert_eq!(c.last().unwrap()["error"]["code"], "upstream_error", "{behavior:?}");
        assert!(!res.text().contains("[DONE]"));
        let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!(row.billing_reason, "upstream_interrupted", "{behavior:?}");
        assert!(row.completion_tokens >= 2, "{behavior:?}: {row:?}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_and_is_billed_once() {
    let (app, claude, key) = app().await;
    claude.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_secs(2) });
    let mut req = chat("claude-test", "hello there");
    req["stream"] = true.into();
    let OpenStream { request_id, mut body } =
        app.client.open_stream(&app.url("/v1/chat/completions"), &key, &req).await.unwrap();
    read_until(&mut body, "Hello").await.unwrap();
    drop(body);
    let row = app.usage_row(&request_id).await.unwrap();
    assert_eq!(row.billing_reason, "client_disconnected");
    assert!(row.completion_tokens >= 1 && row.prompt_tokens > 0, "{row:?}");
}

#[tokio::test]
async fn only_chat_completions_and_translatable_parameters_reach_anthropic() {
    let (app, claude, key) = app().await;
    let k = Some(key.as_str());
    for (path, body) in [
        ("/v1/completions", json!({ "model": "claude-test", "prompt": "hi" })),
        ("/v1/responses", json!({ "model": "claude-test", "input": "hi" })),
    ] {
        let res = app.client.post_json(&app.url(path), k, &body).await.unwrap();
        assert_eq!((res.status.as_u16(), res.error_code()), (400, "invalid_request".to_owned()), "{path}");
        let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("/v1/chat/completions") && message.contains(path), "{message}");
        let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!((row.status, row.billing_reason.as_str()), (400, "not_billed"));
    }
    let mut req = chat("claude-test", "hi");
    req["n"] = 2.into();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), k, &req).await.unwrap();
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("n")));
    let mut req = chat("claude-test", "hi");
    req["temperature"] = 1.7.into();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), k, &req).await.unwrap();
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("temperature")));
    assert!(claude.requests().is_empty(), "nothing untranslatable is forwarded");
}
