//! The `gemini` adapter's unit tests: request translation, answers, streams and errors.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt as _;
use http_body_util::StreamBody;
use serde_json::{Value, json};
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use super::response::*;
use super::*;

fn chat(body: Value) -> Value {
    let (sent, _) = prepare(Endpoint::ChatCompletions, "gemini-2.5-flash", body.to_string().as_bytes()).unwrap();
    serde_json::from_slice(&sent).unwrap()
}

fn chat_err(body: Value) -> ApiError {
    prepare(Endpoint::ChatCompletions, "gemini-2.5-flash", body.to_string().as_bytes()).unwrap_err()
}

#[test]
fn model_ids_and_versions_are_checked() {
    for good in ["gemini-2.5-flash", "gemini-embedding-001", "text-embedding-004", "gemini-1.5-pro_latest"] {
        assert!(GeminiUpstream::check_model(good).is_ok(), "{good}");
    }
    for bad in ["", "models/gemini", "a?b", "a#b", "x:generateContent", "..", "a..b", ".hidden", "a b", "é"] {
        assert!(GeminiUpstream::check_model(bad).is_err(), "{bad}");
    }
    for good in ["v1", "v1beta", "v1alpha", "v2beta3"] {
        assert!(GeminiUpstream::check_api_version(good).is_ok(), "{good}");
    }
    for bad in ["", "v", "beta", "v1/../x", "v1beta?x", "1"] {
        assert!(GeminiUpstream::check_api_version(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_key_is_a_sensitive_header_never_in_debug_output() {
    let up = GeminiUpstream::new("https://g.example", "v1beta", &Secret::new("AIza-secret-key")).unwrap();
    assert!(!format!("{up:?}").contains("AIza-secret-key"));
    assert!(up.api_key.as_ref().is_some_and(HeaderValue::is_sensitive));
    let uri = up.uri("gemini-2.5-flash", "streamGenerateContent?alt=sse").unwrap();
    assert_eq!(uri.to_string(), "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert!(up.uri("../files", "generateContent").is_err());
}

#[test]
fn chat_requests_translate_roles_parts_tools_and_settings() {
    let g = chat(json!({
        "model": "m",
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "developer", "content": [{ "type": "text", "text": "Use metric." }] },
            { "role": "user", "content": "hi" },
            { "role": "user", "content": [
                { "type": "text", "text": "what is this?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0=" } }
            ] },
            { "role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" },
                "extra_content": { "google": { "thought_signature": "sig==" } }
            }] },
            { "role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}" }
        ],
        "tools": [{ "type": "function", "function": {
            "name": "weather", "description": "Weather now", "parameters": { "type": "object" }
        } }],
        "tool_choice": { "type": "function", "function": { "name": "weather" } },
        "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": "END", "n": 2,
        "response_format": { "type": "json_object" }
    }));
    assert_eq!(g["systemInstruction"], json!({ "parts": [{ "text": "Be brief." }, { "text": "Use metric." }] }));
    assert_eq!(
        g["contents"],
        json!([
            { "role": "user", "parts": [
                { "text": "hi" }, { "text": "what is this?" },
                { "inlineData": { "mimeType": "image/png", "data": "iVBORw0=" } }
            ] },
            { "role": "model", "parts": [{
                "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "sig=="
            }] },
            { "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "temp": 21 } } }] }
        ])
    );
    assert_eq!(
        g["tools"],
        json!([{ "functionDeclarations": [{
            "name": "weather", "description": "Weather now", "parametersJsonSchema": { "type": "object" }
        }] }])
    );
    assert_eq!(
        g["toolConfig"],
        json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["weather"] } })
    );
    assert_eq!(
        g["generationConfig"],
        json!({
            "maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"],
            "candidateCount": 2, "responseMimeType": "application/json"
        })
    );
}

#[test]
fn chat_requests_gemini_cannot_express_are_400s() {
    let user = |content: Value| json!({ "model": "m", "messages": [{ "role": "user", "content": content }] });
    let remote = user(json!([{ "type": "image_url", "image_url": { "url": "https://x.example/cat.png" } }]));
    let e = chat_err(remote);
    assert!(e.message.contains("data: URLs"), "{}", e.message);
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    let orphan = json!({ "model": "m", "messages": [{ "role": "tool", "tool_call_id": "nope", "content": "1" }] });
    assert!(chat_err(orphan).message.contains("tool_call_id"));
    assert!(chat_err(json!({ "model": "m", "messages": [] })).message.contains("messages"));
    assert!(
        chat_err(json!({ "model": "m", "messages": [{ "role": "system", "content": "x" }] })).message.contains("user")
    );
    let mut many = user(json!("x"));
    many["n"] = 9.into();
    assert_eq!(chat_err(many).param.as_deref(), Some("n"));
    let mut bad = user(json!("x"));
    bad["temperature"] = "hot".into();
    assert_eq!(chat_err(bad).param.as_deref(), Some("temperature"));
    let e = prepare(Endpoint::Completions, "m", br#"{"model":"m","prompt":"x"}"#).unwrap_err();
    assert!(e.message.contains("/v1/chat/completions and /v1/embeddings only"), "{}", e.message);
}

#[test]
fn embeddings_translate_and_answer_in_openai_shape() {
    let body = json!({ "model": "e", "input": ["hello world", "abc"], "dimensions": 4, "encoding_format": "base64" });
    let (sent, call) = prepare(Endpoint::Embeddings, "gemini-embedding-001", body.to_string().as_bytes()).unwrap();
    let sent: Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(call.method, "batchEmbedContents");
    assert_eq!(
        sent["requests"][1],
        json!({
            "model": "models/gemini-embedding-001", "content": { "parts": [{ "text": "abc" }] }, "outputDimensionality": 4
        })
    );
    assert!(call.usage_is_estimate());
    let upstream = br#"{"embeddings":[{"values":[0.5,-1.0]},{"values":[0.25,2.0]}]}"#;
    let out = embeddings_response(upstream, "gemini-embedding-001", 2, true, 4).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(bytes, [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat());
    assert_eq!(v["usage"], json!({ "prompt_tokens": 4, "total_tokens": 4 }));
    let out = embeddings_response(upstream, "m", 2, false, 4).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["data"][1], json!({ "object": "embedding", "index": 1, "embedding": [0.25, 2.0] }));
    assert!(embeddings_response(upstream, "m", 3, false, 4).is_err(), "a count mismatch is an upstream failure");
}

#[test]
fn chat_responses_translate_text_tools_finish_and_usage() {
    let upstream = json!({
        "candidates": [{
            "content": { "role": "model", "parts": [
                { "text": "thinking…", "thought": true },
                { "text": "Let me check." },
                { "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "s1" }
            ] },
            "finishReason": "STOP", "index": 0
        }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22 },
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"
    });
    let out: Value = serde_json::from_slice(&chat_response(upstream.to_string().as_bytes(), "x").unwrap()).unwrap();
    assert_eq!(out["id"], "chatcmpl-abc");
    assert_eq!(out["model"], "gemini-2.5-flash");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"], json!({ "name": "weather", "arguments": "{\"city\":\"Paris\"}" }));
    assert_eq!(call["extra_content"]["google"]["thought_signature"], "s1");
    assert_eq!(
        (out["usage"]["prompt_tokens"].as_u64(), out["usage"]["completion_tokens"].as_u64()),
        (Some(10), Some(12))
    );
    for (gemini, openai) in
        [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("STOP", "stop")]
    {
        let v = json!({ "candidates": [{ "content": { "parts": [{ "text": "x" }] }, "finishReason": gemini }] });
        let out: Value = serde_json::from_slice(&chat_response(v.to_string().as_bytes(), "x").unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], openai, "{gemini}");
    }
    let blocked = json!({ "promptFeedback": { "blockReason": "SAFETY" }, "usageMetadata": { "promptTokenCount": 3 } });
    let out: Value = serde_json::from_slice(&chat_response(blocked.to_string().as_bytes(), "x").unwrap()).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn errors_become_openai_shaped_and_bad_keys_are_credential_failures() {
    let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let (status, _, _) = openai_error(StatusCode::BAD_REQUEST, bad_key);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let limited = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7.2s"}]}}"#;
    let (status, retry, _) = openai_error(StatusCode::TOO_MANY_REQUESTS, limited);
    assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, Some(8)));
    let (status, _, body) = openai_error(
        StatusCode::BAD_REQUEST,
        br#"{"error":{"code":400,"message":"Invalid value at 'contents'","status":"INVALID_ARGUMENT"}}"#,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["message"], "Invalid value at 'contents'");
    assert_eq!(v["error"]["code"], "invalid_argument");
}

fn sse_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Feeds `upstream` in pieces of `step` bytes through the translating body.
async fn translate_stream(upstream: &str, step: usize) -> Result<String, BoxError> {
    let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> =
        upstream.as_bytes().chunks(step).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
    let inner = StreamBody::new(futures_util::stream::iter(pieces));
    let call = Call { method: "streamGenerateContent?alt=sse", reply: Reply::Chat { stream: true } };
    let res = translate(&call, "gemini-2.5-flash", Response::new(inner));
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec())?)
}

#[tokio::test]
async fn streams_translate_incrementally_whatever_the_cuts() {
    let upstream = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],",
        "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1,\"totalTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],",
        "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2,\"totalTokenCount\":6},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
    );
    for step in [1, 7, 64, upstream.len()] {
        let out = translate_stream(upstream, step).await.unwrap();
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        let chunks = sse_chunks(&out);
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
        assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-r1" && c["object"] == "chat.completion.chunk"));
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello", "step {step}");
        let finish: Vec<_> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
        assert_eq!(finish, ["stop"]);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            (last["usage"]["prompt_tokens"].as_u64(), last["usage"]["completion_tokens"].as_u64()),
            (Some(4), Some(2))
        );
    }
}

#[tokio::test]
async fn streamed_function_calls_become_tool_call_deltas() {
    let upstream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Oslo\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":3}}\n\n";
    let chunks = sse_chunks(&translate_stream(upstream, 13).await.unwrap());
    let call = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"], json!({ "name": "weather", "arguments": "{\"city\":\"Oslo\"}" }));
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn an_error_event_or_an_oversized_event_fails_the_body() {
    let upstream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"index\":0}]}\n\ndata: {\"error\":{\"code\":500,\"message\":\"Internal\",\"status\":\"INTERNAL\"}}\n\n";
    assert!(translate_stream(upstream, 5).await.is_err());
    let huge = format!("data: {}", "x".repeat(MAX_EVENT_BYTES + 1));
    assert!(translate_stream(&huge, 1 << 20).await.is_err());
}
