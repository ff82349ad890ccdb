//! `/v1/messages` on a model served only by Anthropic channels goes natively: the fake
//! Anthropic receives the client's body as written (`top_k`, cache markers and all, only the
//! model renamed) and the client gets Anthropic's answer as sent — `stop_sequence`, cache
//! tokens and `ping` events included, the public model id in place of the upstream's name
//! — billed from Anthropic's own usage. A model with other
//! channels too is translated, so that any of its channels can serve the request.

use serde_json::{Value, json};
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY};
use tollgate_testkit::fake_anthropic::{Behavior, FakeAnthropic, Options, REPLY_TEXT};
use tollgate_testkit::fake_openai;

use super::messages::{claude_app, events, hello, names, post, streamed_text};

/// A request only Anthropic can take as it is: `top_k`, a cached system block, a stop
/// sequence that cuts the fake's reply ("Hello from the fake Claude.") after three words.
fn native_request() -> Value {
    let mut req = hello("claude-test");
    req["top_k"] = 5.into();
    req["stop_sequences"] = json!(["fake"]);
    req["system"] = json!([{ "type": "text", "text": "Be brief and kind.", "cache_control": { "type": "ephemeral" } }]);
    req
}

/// Input 3 ("hello there" + 1), 4 cache reads (the system block), output 3, at the
/// model's $3 / $15 per million tokens: 7 × 3 + 3 × 15 micro-USD.
const PROMPT: u64 = 7;
const OUTPUT: u64 = 3;
const COST: i64 = 66;

#[tokio::test]
async fn an_anthropic_only_model_gets_the_clients_body_and_answers_as_anthropic_did() {
    let (app, claude, key) = claude_app().await;
    let res = post(&app, &key, &native_request()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("msg_fake"), "Anthropic's own message id: {id}");
    assert_eq!(
        body,
        json!({
            "id": id, "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{ "type": "text", "text": "Hello from the" }],
            "stop_reason": "stop_sequence", "stop_sequence": "fake",
            "usage": { "input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                       "output_tokens": OUTPUT, "service_tier": "standard" },
        })
    );
    let sent = &claude.requests()[0];
    let mut expected = native_request();
    expected["model"] = "claude-fake-1".into();
    assert_eq!(sent.body, expected, "the client's body, only the model renamed");
    assert_eq!(sent.headers["anthropic-beta"], "tools-2024-04-04", "the client's beta header goes along");
    assert_eq!(sent.headers["x-api-key"], UPSTREAM_KEY);
    assert!(res.header("request-id").is_some() && res.header("x-request-id") == res.header("request-id"));

    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.endpoint.as_str(), row.billing_reason.as_str()), ("/v1/messages", "completed"));
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.cost.0), (PROMPT, OUTPUT, COST), "cache reads billed");
}

#[tokio::test]
async fn a_native_stream_is_relayed_event_for_event_and_billed_from_its_usage() {
    let (app, _claude, key) = claude_app().await;
    let mut req = native_request();
    req["stream"] = true.into();
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.header("content-type").unwrap().starts_with("text/event-stream"));
    let evs = events(&res.text());
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "ping", // the translated path has no pings: this is Anthropic's own stream
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(evs[0].1["message"]["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(evs[0].1["message"]["model"], "claude-test", "the public id, not the upstream's name");
    assert_eq!(evs[7].1["delta"], json!({ "stop_reason": "stop_sequence", "stop_sequence": "fake" }));
    assert_eq!(streamed_text(&evs), "Hello from the");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.stream, row.billing_reason.as_str()), (true, "completed"));
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.cost.0), (PROMPT, OUTPUT, COST));
}

#[tokio::test]
async fn native_streams_that_fail_keep_anthropics_shape_and_bill_what_was_delivered() {
    let (app, claude, key) = claude_app().await;
    let mut req = native_request();
    req["stop_sequences"] = json!([]);
    req["stream"] = true.into();
    // Anthropic's own error event mid-stream: relayed as it came.
    claude.set_behavior(Behavior::ErrorEventAfter(2));
    let res = post(&app, &key, &req).await;
    let evs = events(&res.text());
    assert_eq!(names(&evs).last(), Some(&"error"));
    assert_eq!(evs.last().unwrap().1["error"]["type"], "overloaded_error", "Anthropic's own error event");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "upstream_interrupted");
    assert_eq!(row.prompt_tokens, PROMPT, "the prompt message_start reported, not an estimate");
    assert!((2..REPLY_TEXT.len() as u64).contains(&row.completion_tokens), "{}", row.completion_tokens);

    // A connection that breaks: the client gets an Anthropic error event from the gateway.
    claude.set_behavior(Behavior::BreakStreamAfter(2));
    let res = post(&app, &key, &req).await;
    let evs = events(&res.text());
    assert!(!names(&evs).contains(&"message_stop"));
    assert_eq!(
        (names(&evs).last(), evs.last().unwrap().1["error"]["type"].as_str()),
        (Some(&"error"), Some("api_error"))
    );
    assert_eq!(streamed_text(&evs), "Hello from");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.billing_reason.as_str(), row.prompt_tokens), ("upstream_interrupted", PROMPT));
}

#[tokio::test]
async fn native_upstream_errors_follow_the_gateways_policy_in_anthropics_shape() {
    let (app, claude, key) = claude_app().await;
    claude.set_behavior(Behavior::Status(400));
    let res = post(&app, &key, &native_request()).await;
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")));
    assert!(body["error"]["message"].as_str().unwrap().contains("on purpose"), "Anthropic's words: {body}");
    claude.set_behavior(Behavior::Status(429));
    let res = post(&app, &key, &native_request()).await;
    assert_eq!((res.status.as_u16(), res.header("retry-after")), (429, Some("7")));
    assert_eq!(res.json()["error"]["type"], "rate_limit_error");
    claude.set_behavior(Behavior::Status(401));
    let res = post(&app, &key, &native_request()).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["type"].as_str()), (502, Some("api_error")));
    assert!(!res.text().contains(UPSTREAM_KEY));
}

/// `mixed`: an Anthropic channel first, the OpenAI fake after it.
async fn mixed_app() -> (TestApp, FakeAnthropic, String) {
    let claude =
        FakeAnthropic::start_with(Options { api_key: Some(UPSTREAM_KEY.into()), ..Options::default() }).await.unwrap();
    let extra = format!(
        "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"{UPSTREAM_KEY}\"\n\
         [[models]]\nid = \"mixed\"\ntype = \"chat\"\ninput_price_per_mtok = 3.0\noutput_price_per_mtok = 15.0\n\
         channels = [{{ provider = \"claude\", model = \"claude-fake-1\", priority = 10 }}, {{ provider = \"fake\" }}]\n",
        url = claude.base_url()
    );
    let app = TestApp::start_with_env("", &extra, &[("TOLLGATE_UPSTREAM__RETRY_BASE_MS", "1")]).await.unwrap();
    let key = app.create_key("test").await.unwrap();
    (app, claude, key)
}

#[tokio::test]
async fn a_model_with_other_channels_too_takes_only_what_a_chat_model_can_and_fails_over() {
    let (app, claude, key) = mixed_app().await;
    let res = post(&app, &key, &native_request()).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("top_k"), "{}", res.text());
    assert!(claude.requests().is_empty());

    // A request both can take: the Anthropic channel still gets the client's body…
    let mut req = hello("mixed");
    req["stop_sequences"] = json!(["fake"]);
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        (res.json()["stop_reason"].as_str(), res.json()["stop_sequence"].as_str()),
        (Some("stop_sequence"), Some("fake"))
    );
    let mut expected = req.clone();
    expected["model"] = "claude-fake-1".into();
    assert_eq!(claude.requests()[0].body, expected);

    // …and when it is overloaded, the chat model answers, translated to a message.
    claude.set_behavior(Behavior::Status(529));
    let res = post(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(
        (body["model"].as_str(), body["content"][0]["text"].as_str()),
        (Some("mixed"), Some(fake_openai::REPLY_TEXT))
    );
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.attempts, row.channel.as_deref()), (2, Some("claude/claude-fake-1,fake/mixed")));
    assert_eq!(row.provider.as_deref(), Some("fake"));
}

/// `POST /v1/messages/count_tokens` as the Anthropic SDK sends it.
async fn count(app: &TestApp, key: &str, body: &Value) -> tollgate_testkit::client::Answer {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];
    let url = app.url("/v1/messages/count_tokens?beta=true");
    app.client.call(http::Method::POST, &url, &headers, body.to_string()).await.unwrap()
}

#[tokio::test]
async fn counting_tokens_asks_anthropic_for_its_models_and_estimates_for_the_others() {
    let (app, claude, key) = claude_app().await;
    let mut req = native_request();
    req.as_object_mut().unwrap().remove("max_tokens");
    let res = count(&app, &key, &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({ "input_tokens": PROMPT }), "Anthropic's exact count, cache reads included");
    assert!(res.header("tollgate-token-count").is_none());
    let sent = claude.requests().pop().unwrap();
    assert_eq!((sent.path.as_str(), sent.body["model"].as_str()), ("/v1/messages/count_tokens", Some("claude-fake-1")));
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.endpoint, "/v1/messages/count_tokens");
    assert_eq!((row.status, row.cost.0, row.provider.as_deref()), (200, 0, Some("claude")), "counting is free");

    // Anthropic's own refusal is relayed in its shape (counting takes no max_tokens).
    let res = count(&app, &key, &native_request()).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("max_tokens"), "{}", res.text());

    // A chat model: an estimate from the request's text, said to be one.
    let body = json!({ "model": "gpt-4o-mini", "system": "Be brief.",
                       "messages": [{ "role": "user", "content": "hello there" }] });
    let res = count(&app, &key, &body).await;
    assert_eq!((res.status.as_u16(), res.header("tollgate-token-count")), (200, Some("estimate")));
    let text_bytes = r#""Be brief.""#.len() + body["messages"].to_string().len();
    assert_eq!(res.json(), json!({ "input_tokens": text_bytes.div_ceil(4) }));

    let res = count(&app, &key, &json!({ "model": "no-such-model", "messages": [] })).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["type"].as_str()), (404, Some("not_found_error")));
    let (_, chat_only) =
        app.api_key(&json!({ "name": "c", "allowed_endpoints": ["/v1/chat/completions"] })).await.unwrap();
    let res = count(&app, &chat_only, &body).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["type"].as_str()), (403, Some("permission_error")));
}
