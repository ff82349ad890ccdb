//! The `anthropic` adapter's unit tests: request translation, answers, streams and errors.

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderValue, Response, header};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use crate::request::ParsedRequest;
use crate::sse::event_end;

use super::request::*;
use super::response::*;
use super::stream::*;
use super::*;

fn parsed(body: Value) -> ParsedRequest {
    crate::request::parse(Bytes::from(body.to_string())).unwrap()
}

fn translate(body: Value) -> Result<Value, ApiError> {
    let p = parsed(body);
    request_body(Endpoint::ChatCompletions, &p, "claude-up", 4096).map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn translates_a_full_conversation() {
    let req = json!({
        "model": "claude",
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-1",
        "stream": true,
        "stream_options": { "include_usage": true },
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "developer", "content": [{ "type": "text", "text": "Use tools." }] },
            { "role": "user", "content": "What is the weather?" },
            { "role": "user", "content": [
                { "type": "text", "text": "Here is a photo." },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg", "detail": "high" } },
            ] },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
            ] },
            { "role": "tool", "tool_call_id": "call_1", "content": "sunny" },
            { "role": "user", "content": "Thanks" },
        ],
        "tools": [{ "type": "function", "function": {
            "name": "weather", "description": "Weather by city",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } },
        } }],
        "tool_choice": "required",
        "parallel_tool_calls": false,
    });
    let out = translate(req).unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude-up",
            "max_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": { "user_id": "u-1" },
            "stream": true,
            "system": "Be brief.\n\nUse tools.",
            "messages": [
                { "role": "user", "content": [
                    { "type": "text", "text": "What is the weather?" },
                    { "type": "text", "text": "Here is a photo." },
                    { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                    { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
                ] },
                { "role": "assistant", "content": [
                    { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
                ] },
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "call_1", "content": "sunny" },
                    { "type": "text", "text": "Thanks" },
                ] },
            ],
            "tools": [{
                "name": "weather", "description": "Weather by city",
                "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
            }],
            "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        })
    );
}

#[test]
fn defaults_and_choices() {
    let out = translate(json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] })).unwrap();
    assert_eq!(out["max_tokens"], 4096, "the model's max_output_tokens fills the required max_tokens");
    assert!(out.get("stream").is_none() && out.get("system").is_none());
    let with = |choice: Value| {
        translate(json!({
            "model": "m", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 7,
            "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": choice,
            "stop": ["a", "b"],
        }))
        .unwrap()
    };
    let out = with(json!("auto"));
    assert_eq!((out["max_tokens"].clone(), out["tool_choice"].clone()), (json!(7), json!({ "type": "auto" })));
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    assert_eq!(out["tools"][0]["input_schema"], json!({ "type": "object", "properties": {} }));
    assert_eq!(with(json!("none"))["tool_choice"], json!({ "type": "none" }));
    assert_eq!(
        with(json!({ "type": "function", "function": { "name": "f" } }))["tool_choice"],
        json!({ "type": "tool", "name": "f" })
    );
}

#[test]
fn refuses_what_cannot_be_translated_naming_the_param() {
    let base = || json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
    for (field, value, param) in [
        ("n", json!(2), "n"),
        ("logprobs", json!(true), "logprobs"),
        ("response_format", json!({ "type": "json_object" }), "response_format"),
        ("presence_penalty", json!(0.5), "presence_penalty"),
        ("temperature", json!(1.5), "temperature"),
        ("stop", json!(5), "stop"),
        ("tool_choice", json!("sometimes"), "tool_choice"),
        ("functions", json!([]), "functions"),
    ] {
        let mut req = base();
        req[field] = value;
        let e = translate(req).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (tollgate_core::ErrorCode::InvalidRequest, Some(param)), "{field}");
    }
    // Defaults are fine.
    let mut req = base();
    req["n"] = json!(1);
    req["presence_penalty"] = json!(0);
    req["logprobs"] = json!(false);
    req["response_format"] = json!({ "type": "text" });
    assert!(translate(req).is_ok());

    for (messages, param) in [
        (json!([{ "role": "system", "content": "only a system prompt" }]), "messages"),
        (json!([{ "role": "function", "content": "x" }]), "messages[0].role"),
        (json!([{ "role": "user", "content": [{ "type": "input_audio" }] }]), "messages[0].content[0].type"),
        (
            json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "ftp://x" } }] }]),
            "messages[0].content[0].image_url.url",
        ),
        (json!([{ "role": "tool", "content": "x" }]), "messages[0].tool_call_id"),
        (
            json!([{ "role": "assistant", "tool_calls": [{ "id": "c", "function": { "name": "f", "arguments": "[1]" } }] }]),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ] {
        let e = translate(json!({ "model": "m", "messages": messages })).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{messages}");
    }
}

#[test]
fn only_chat_completions_are_served() {
    let p = parsed(json!({ "model": "claude", "input": "hi" }));
    let e = request_body(Endpoint::Responses, &p, "up", 10).unwrap_err();
    assert_eq!(e.code, tollgate_core::ErrorCode::InvalidRequest);
    assert!(e.message.contains("/v1/chat/completions") && e.message.contains("/v1/responses"), "{}", e.message);
}

#[test]
fn translates_a_message() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [
            { "type": "text", "text": "Let me check." },
            { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": { "input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0 },
    });
    let out: Value = serde_json::from_slice(&chat_completion(body.to_string().as_bytes(), 42).unwrap()).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!((out["id"].as_str(), out["created"].as_i64()), (Some("msg_1"), Some(42)));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        out["usage"],
        json!({ "prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22, "prompt_tokens_details": { "cached_tokens": 5 } })
    );
    for (stop, finish) in [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")] {
        let b = json!({ "id": "m", "model": "x", "content": [], "stop_reason": stop, "usage": { "input_tokens": 1, "output_tokens": 1 } });
        let out: Value = serde_json::from_slice(&chat_completion(b.to_string().as_bytes(), 0).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], finish);
        assert_eq!(out["choices"][0]["message"]["content"], "");
    }
}

const STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-up\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"there\\\"\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

type TestBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

fn body_of(pieces: Vec<Result<&'static [u8], std::io::Error>>) -> TestBody {
    let frames: Vec<_> = pieces.into_iter().map(|p| p.map(|b| Frame::data(Bytes::from_static(b)))).collect();
    StreamBody::new(stream::iter(frames))
}

/// Polls to the end: the frames' text, and the error if the body failed.
async fn run(body: TestBody) -> (String, Option<String>) {
    let mut s = ChunkStream::new(body, 7);
    let mut text = String::new();
    while let Some(frame) = s.frame().await {
        match frame {
            Ok(f) => text.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap()),
            Err(e) => return (text, Some(e.to_string())),
        }
    }
    assert!(s.is_end_stream());
    (text, None)
}

fn chunks(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn translates_a_stream_split_anywhere() {
    let whole = STREAM.as_bytes();
    // Every split point, including inside multi-byte escapes and the blank lines.
    for at in (0..whole.len()).step_by(7) {
        let (text, error) = run(body_of(vec![Ok(&whole[..at]), Ok(&whole[at..])])).await;
        assert_eq!(error, None);
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let c = chunks(&text);
        assert_eq!(c.len(), 7, "{text}");
        assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1" && c["created"] == 7));
        assert_eq!(c[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
        assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hi \"there\"");
        assert_eq!(
            c[2]["choices"][0]["delta"]["tool_calls"][0],
            json!({ "index": 0, "id": "toolu_1", "type": "function", "function": { "name": "weather", "arguments": "" } })
        );
        let args: String = c[3..5]
            .iter()
            .map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
            .collect();
        assert_eq!(args, r#"{"city": "Paris"}"#);
        assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c[6]["choices"], json!([]));
        assert_eq!(c[6]["usage"]["prompt_tokens"], 12);
        assert_eq!(c[6]["usage"]["completion_tokens"], 9);
    }
}

#[tokio::test]
async fn the_meter_reads_the_translation() {
    let (text, _) = run(body_of(vec![Ok(STREAM.as_bytes())])).await;
    let mut pending = text.as_bytes();
    let mut usage = None;
    let mut output = 0;
    while let Some(end) = event_end(pending) {
        let info = crate::sse::inspect_event(&pending[..end]);
        output += info.output_bytes;
        if info.usage.is_some() {
            assert!(info.usage_only);
            usage = info.usage;
        }
        pending = &pending[end..];
    }
    assert_eq!(usage, Some(crate::sse::TokenUsage { prompt: 12, completion: 9 }));
    assert_eq!(output, "Hi \"there\"".len() as u64);
}

#[tokio::test]
async fn failures_fail_the_body_after_what_came_before() {
    let first_event = STREAM.split_inclusive("\n\n").next().unwrap();
    // A mid-stream error event.
    let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let both: &'static str = Box::leak(format!("{first_event}{error}").into_boxed_str());
    let (text, e) = run(body_of(vec![Ok(both.as_bytes())])).await;
    assert_eq!(chunks(&text).len(), 1, "the role chunk still goes out");
    assert!(e.unwrap().contains("overloaded_error"));
    // A broken connection.
    let (_, e) = run(body_of(vec![Ok(first_event.as_bytes()), Err(std::io::Error::other("reset"))])).await;
    assert!(e.is_some());
    // A clean end before message_stop.
    let (_, e) = run(body_of(vec![Ok(first_event.as_bytes())])).await;
    assert!(e.unwrap().contains("message_stop"));
    // Garbage, and an event over the size limit.
    let (_, e) = run(body_of(vec![Ok(b"data: {not json\n\n")])).await;
    assert!(e.is_some());
    let big: &'static [u8] = Box::leak(vec![b'x'; MAX_EVENT_BYTES + 1].into_boxed_slice());
    let (_, e) = run(body_of(vec![Ok(big)])).await;
    assert!(e.unwrap().contains("exceeded"));
    // After message_stop, a reset loses nothing.
    let (text, e) = run(body_of(vec![Ok(STREAM.as_bytes()), Err(std::io::Error::other("reset"))])).await;
    assert!(e.is_none() && text.ends_with("[DONE]\n\n"));
}

#[tokio::test]
async fn errors_are_reshaped_for_the_relay_policy() {
    let mut res = Response::new(Full::new(Bytes::from_static(
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#,
    )));
    *res.status_mut() = http::StatusCode::BAD_REQUEST;
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
    let out = openai_error(res).await;
    assert_eq!(out.status(), http::StatusCode::BAD_REQUEST);
    assert_eq!(out.headers()[header::RETRY_AFTER], "3");
    let body: Value = serde_json::from_slice(&out.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["message"], "max_tokens: too large");
    assert_eq!(body["error"]["code"], "invalid_request_error");
}

#[test]
fn builds_the_upstream_request_once() {
    let key = Secret::new("sk-ant-secret");
    let up = AnthropicUpstream::new("https://api.anthropic.com/", &key, AnthropicUpstream::DEFAULT_VERSION).unwrap();
    let req = up.request("req_1", Bytes::new()).unwrap();
    assert_eq!(req.uri(), "https://api.anthropic.com/v1/messages");
    assert_eq!(req.headers()["x-api-key"], "sk-ant-secret");
    assert!(req.headers()["x-api-key"].is_sensitive());
    assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
    assert!(!format!("{up:?}").contains("sk-ant-secret"));
    let up = AnthropicUpstream::new("http://127.0.0.1:9/v1", &Secret::default(), AnthropicUpstream::DEFAULT_VERSION)
        .unwrap();
    let req = up.request("", Bytes::new()).unwrap();
    assert_eq!(req.uri(), "http://127.0.0.1:9/v1/messages");
    assert!(req.headers().get("x-api-key").is_none());
}
