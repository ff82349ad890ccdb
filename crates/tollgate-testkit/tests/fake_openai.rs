#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Wire-format tests for the fake OpenAI upstream, through a real HTTP client.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_testkit::fake_openai::{Behavior, DEFAULT_EMBEDDING_DIMENSIONS, FakeOpenAi, Options, REPLY_TEXT};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    fn content_type(&self) -> &str {
        self.headers[header::CONTENT_TYPE].to_str().unwrap()
    }
}

async fn send(
    fake: &FakeOpenAi,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", fake.addr()))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    let request = builder.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    client().request(request).await
}

async fn call(fake: &FakeOpenAi, method: Method, path: &str, body: &str) -> Answer {
    let response = send(fake, method, path, Some("Bearer sk-test"), body).await.expect("response");
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.expect("whole body").to_bytes() }
}

async fn post(fake: &FakeOpenAi, path: &str, body: Value) -> Answer {
    call(fake, Method::POST, path, &body.to_string()).await
}

/// The JSON of every `data:` line, in order; `[DONE]` becomes `Value::Null`.
fn sse_data(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\n\n"), "SSE body ends with a blank line");
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
            if data == "[DONE]" { Value::Null } else { serde_json::from_str(data).expect("JSON data") }
        })
        .collect()
}

fn assert_openai_error(answer: &Answer, status: u16, kind: &str, code: Value) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text());
    assert_eq!(answer.content_type(), "application/json");
    let error = &answer.json()["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(error["type"], kind);
    assert_eq!(error["code"], code);
    assert!(error.get("param").is_some());
}

fn chat_body() -> Value {
    json!({
        "model": "my-model",
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": [{ "type": "text", "text": "hello there" }] },
        ],
    })
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_deterministic_usage() {
    let fake = FakeOpenAi::start().await;
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), "application/json");
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "my-model");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], REPLY_TEXT);
    assert_eq!(choice["finish_reason"], "stop");
    // (3 words + 1) + (2 words + 1) prompt, 5 reply words.
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 12);
    assert!(answer.headers.contains_key(header::CONTENT_LENGTH));
}

#[tokio::test]
async fn chat_max_tokens_truncates_the_reply() {
    let fake = FakeOpenAi::start().await;
    let mut request = chat_body();
    request["max_tokens"] = json!(2);
    let body = post(&fake, "/v1/chat/completions", request).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn chat_stream_without_usage_has_no_usage_field() {
    let fake = FakeOpenAi::start().await;
    let mut request = chat_body();
    request["stream"] = json!(true);
    let answer = post(&fake, "/v1/chat/completions", request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), "text/event-stream");
    let events = sse_data(answer.text());
    assert_eq!(events.last(), Some(&Value::Null), "ends with [DONE]");
    let chunks = &events[..events.len() - 1];
    // Role chunk, 5 words, finish chunk.
    assert_eq!(chunks.len(), 7);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "my-model");
        assert!(chunk.get("usage").is_none(), "no usage field: {chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_usage_chunk() {
    let fake = FakeOpenAi::start().await;
    let mut request = chat_body();
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let answer = post(&fake, "/v1/chat/completions", request).await;
    let events = sse_data(answer.text());
    assert_eq!(events.len(), 9, "role, 5 words, finish, usage, [DONE]");
    assert_eq!(events[8], Value::Null);
    for chunk in &events[..7] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
    }
    let usage_chunk = &events[7];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["object"], "chat.completion.chunk");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 7);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn stream_options_without_stream_is_rejected() {
    let fake = FakeOpenAi::start().await;
    let mut request = chat_body();
    request["stream_options"] = json!({ "include_usage": true });
    let answer = post(&fake, "/v1/chat/completions", request).await;
    assert_openai_error(&answer, 400, "invalid_request_error", Value::Null);
    assert_eq!(answer.json()["error"]["param"], "stream_options");
}

#[tokio::test]
async fn missing_model_or_messages_is_rejected() {
    let fake = FakeOpenAi::start().await;
    let answer = post(&fake, "/v1/chat/completions", json!({ "messages": [] })).await;
    assert_openai_error(&answer, 400, "invalid_request_error", Value::Null);
    let answer = post(&fake, "/v1/chat/completions", json!({ "model": "m" })).await;
    assert_openai_error(&answer, 400, "invalid_request_error", json!("missing_required_parameter"));
}

#[tokio::test]
async fn legacy_completion_and_its_stream() {
    let fake = FakeOpenAi::start().await;
    let request = json!({ "model": "gpt-3.5-turbo-instruct", "prompt": "Say hello please" });
    let answer = post(&fake, "/v1/completions", request.clone()).await;
    assert_eq!(answer.content_type(), "application/json");
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "gpt-3.5-turbo-instruct");
    assert_eq!(body["choices"][0]["text"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 8);

    let mut streamed = request;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let answer = post(&fake, "/v1/completions", streamed).await;
    assert_eq!(answer.content_type(), "text/event-stream");
    let events = sse_data(answer.text());
    assert_eq!(events.len(), 8, "5 words, finish, usage, [DONE]");
    let text: String = events[..6]
        .iter()
        .map(|e| {
            assert_eq!(e["object"], "text_completion");
            assert_eq!(e["usage"], Value::Null);
            e["choices"][0]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, REPLY_TEXT);
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[6]["choices"], json!([]));
    assert_eq!(events[6]["usage"]["total_tokens"], 8);
    assert_eq!(events[7], Value::Null);
}

#[tokio::test]
async fn embeddings_float_base64_and_dimensions() {
    let fake = FakeOpenAi::start().await;
    let answer =
        post(&fake, "/v1/embeddings", json!({ "model": "text-embedding-3-small", "input": "one two three" })).await;
    assert_eq!(answer.content_type(), "application/json");
    let body = answer.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][0]["index"], 0);
    let floats = body["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(floats.len(), DEFAULT_EMBEDDING_DIMENSIONS);
    assert_eq!(body["usage"], json!({ "prompt_tokens": 3, "total_tokens": 3 }));

    let answer = post(
        &fake,
        "/v1/embeddings",
        json!({
            "model": "m",
            "input": ["one two", "three"],
            "dimensions": 8,
            "encoding_format": "float",
        }),
    )
    .await;
    let float_body = answer.json();
    assert_eq!(float_body["data"].as_array().unwrap().len(), 2);
    assert_eq!(float_body["data"][1]["index"], 1);
    assert_eq!(float_body["usage"]["prompt_tokens"], 3);
    let second: Vec<f32> =
        float_body["data"][1]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(second.len(), 8);

    let answer = post(
        &fake,
        "/v1/embeddings",
        json!({
            "model": "m",
            "input": ["one two", "three"],
            "dimensions": 8,
            "encoding_format": "base64",
        }),
    )
    .await;
    let encoded = answer.json()["data"][1]["embedding"].as_str().unwrap().to_owned();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(decoded, second, "base64 decodes to the float vector");
}

#[tokio::test]
async fn responses_object_and_stream_events() {
    let fake = FakeOpenAi::start().await;
    let request = json!({
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": "tell me a joke",
    });
    let answer = post(&fake, "/v1/responses", request.clone()).await;
    assert_eq!(answer.content_type(), "application/json");
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-4.1");
    let message = &body["output"][0];
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["text"], REPLY_TEXT);
    // 4 input words + (2 instruction words + 1).
    assert_eq!(body["usage"]["input_tokens"], 7, "usage: {}", body["usage"]);
    assert_eq!(body["usage"]["output_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 12);

    let mut streamed = request;
    streamed["stream"] = json!(true);
    let answer = post(&fake, "/v1/responses", streamed).await;
    assert_eq!(answer.content_type(), "text/event-stream");
    let text = answer.text();
    assert!(!text.contains("[DONE]"));
    let mut names = Vec::new();
    let mut deltas = String::new();
    let mut completed = Value::Null;
    for (seq, event) in text.split("\n\n").filter(|e| !e.is_empty()).enumerate() {
        let mut lines = event.lines();
        let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name);
        assert_eq!(data["sequence_number"], seq);
        if name == "response.output_text.delta" {
            deltas.push_str(data["delta"].as_str().unwrap());
        }
        if name == "response.completed" {
            completed = data;
        }
        names.push(name.to_owned());
    }
    assert_eq!(names.first().map(String::as_str), Some("response.created"));
    assert_eq!(names.last().map(String::as_str), Some("response.completed"));
    assert_eq!(deltas, REPLY_TEXT);
    assert_eq!(completed["response"]["usage"]["input_tokens"], 7);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 5);
    assert_eq!(completed["response"]["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn image_generation_b64_and_url() {
    let fake = FakeOpenAi::start().await;
    let answer =
        post(&fake, "/v1/images/generations", json!({ "model": "gpt-image-1", "prompt": "a red cat", "n": 2 })).await;
    let body = answer.json();
    assert!(body["created"].as_u64().is_some());
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let png = base64::engine::general_purpose::STANDARD.decode(data[0]["b64_json"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(body["usage"]["input_tokens"], 3);
    assert_eq!(body["usage"]["output_tokens"], 200);

    let answer = post(&fake, "/v1/images/generations", json!({ "model": "dall-e-3", "prompt": "a red cat" })).await;
    let body = answer.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert!(body["data"][0]["url"].as_str().unwrap().starts_with("https://"));
    assert!(body.get("usage").is_none());
}

#[tokio::test]
async fn models_list() {
    let fake = FakeOpenAi::start().await;
    let answer = call(&fake, Method::GET, "/v1/models", "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["object"], "list");
    let first = &body["data"][0];
    assert_eq!(first["object"], "model");
    assert!(first["id"].is_string());
    assert!(first["owned_by"].is_string());
}

#[tokio::test]
async fn missing_or_empty_bearer_is_invalid_api_key() {
    let fake = FakeOpenAi::start().await;
    for auth in [None, Some("Bearer "), Some("Basic abc")] {
        let response = send(&fake, Method::POST, "/v1/chat/completions", auth, &chat_body().to_string()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer = Answer { status, headers, body };
        assert_openai_error(&answer, 401, "invalid_request_error", json!("invalid_api_key"));
    }
}

#[tokio::test]
async fn unknown_path_is_404_and_bad_json_is_400() {
    let fake = FakeOpenAi::start().await;
    let answer = call(&fake, Method::POST, "/v1/nope", "{}").await;
    assert_openai_error(&answer, 404, "invalid_request_error", Value::Null);
    let answer = call(&fake, Method::POST, "/v1/chat/completions", "{not json").await;
    assert_openai_error(&answer, 400, "invalid_request_error", Value::Null);
    let answer = call(&fake, Method::POST, "/v1/chat/completions", "").await;
    assert_openai_error(&answer, 400, "invalid_request_error", Value::Null);
}

#[tokio::test]
async fn status_behavior_answers_with_openai_errors() {
    let fake = FakeOpenAi::start().await;
    fake.set_behavior(Behavior::Status(429));
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_openai_error(&answer, 429, "requests", json!("rate_limit_exceeded"));
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");

    fake.set_behavior(Behavior::Status(503));
    let answer = post(&fake, "/v1/embeddings", json!({})).await;
    assert_openai_error(&answer, 503, "server_error", Value::Null);

    fake.set_behavior(Behavior::Status(400));
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_openai_error(&answer, 400, "invalid_request_error", Value::Null);

    fake.set_behavior(Behavior::Status(401));
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_openai_error(&answer, 401, "invalid_request_error", json!("invalid_api_key"));

    fake.set_behavior(Behavior::Normal);
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn delay_behavior_holds_back_the_headers() {
    let fake = FakeOpenAi::start().await;
    fake.set_behavior(Behavior::Delay(Duration::from_millis(200)));
    let started = Instant::now();
    let response = send(&fake, Method::POST, "/v1/chat/completions", Some("Bearer sk-test"), &chat_body().to_string())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_stream_paces_chunks_after_the_first_word() {
    let fake = FakeOpenAi::start().await;
    let delay = Duration::from_millis(150);
    fake.set_behavior(Behavior::SlowStream { chunk_delay: delay });

    // Non-streams are unaffected.
    let started = Instant::now();
    post(&fake, "/v1/chat/completions", chat_body()).await;
    assert!(started.elapsed() < delay);

    let mut request = chat_body();
    request["stream"] = json!(true);
    let started = Instant::now();
    let response =
        send(&fake, Method::POST, "/v1/chat/completions", Some("Bearer sk-test"), &request.to_string()).await.unwrap();
    let mut body = response.into_body();
    let mut received = String::new();
    let mut first_word_at = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.push_str(std::str::from_utf8(&data).unwrap());
        }
        if first_word_at.is_none() && received.contains(r#""content":"Hello""#) {
            first_word_at = Some(started.elapsed());
        }
    }
    assert!(first_word_at.unwrap() < delay, "first word is not delayed");
    // 4 more words, the finish chunk and [DONE] each wait.
    assert!(started.elapsed() >= delay * 6);
    assert!(received.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn break_stream_after_aborts_mid_stream() {
    let fake = FakeOpenAi::start().await;
    fake.set_behavior(Behavior::BreakStreamAfter(2));
    let mut request = chat_body();
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let response =
        send(&fake, Method::POST, "/v1/chat/completions", Some("Bearer sk-test"), &request.to_string()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = String::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    received.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ends in an error, not a clean end");
    assert!(received.contains(r#""content":"Hello""#));
    assert!(received.contains(r#""content":" from""#));
    assert!(!received.contains(r#""content":" the""#));
    assert!(!received.contains("[DONE]"));
    assert!(!received.contains("prompt_tokens"));
}

#[tokio::test]
async fn close_connection_answers_nothing() {
    let fake = FakeOpenAi::start().await;
    fake.set_behavior(Behavior::CloseConnection);
    let result =
        send(&fake, Method::POST, "/v1/chat/completions", Some("Bearer sk-test"), &chat_body().to_string()).await;
    assert!(result.is_err(), "no response: {:?}", result.map(|r| r.status()));

    fake.set_behavior(Behavior::Normal);
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn close_connection_also_cuts_kept_alive_connections() {
    let fake = FakeOpenAi::start().await;
    let client = client();
    let request = || {
        Request::post(format!("http://{}/v1/chat/completions", fake.addr()))
            .header(header::AUTHORIZATION, "Bearer sk-test")
            .body(Full::new(Bytes::from(chat_body().to_string())))
            .unwrap()
    };
    let response = client.request(request()).await.unwrap();
    response.into_body().collect().await.unwrap();
    fake.set_behavior(Behavior::CloseConnection);
    assert!(client.request(request()).await.is_err());
}

#[tokio::test]
async fn no_usage_in_stream_drops_the_usage_chunk() {
    let fake = FakeOpenAi::start().await;
    fake.set_behavior(Behavior::NoUsageInStream);
    let mut request = chat_body();
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let answer = post(&fake, "/v1/chat/completions", request).await;
    let events = sse_data(answer.text());
    assert_eq!(events.len(), 8, "role, 5 words, finish, [DONE]");
    assert_eq!(events[7], Value::Null);
    assert!(events[..7].iter().all(|e| e["usage"].is_null()));
    assert!(events[..7].iter().all(|e| e["choices"] != json!([])));

    // Non-streams still carry usage.
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_eq!(answer.json()["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let fake = FakeOpenAi::start().await;
    post(&fake, "/v1/chat/completions", chat_body()).await;
    call(&fake, Method::GET, "/v1/models", "").await;
    call(&fake, Method::POST, "/v1/embeddings", "not json").await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].headers[header::AUTHORIZATION], "Bearer sk-test");
    assert_eq!(requests[0].body, chat_body());
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].path, "/v1/models");
    assert_eq!(requests[1].body, Value::Null);
    assert_eq!(requests[2].body, Value::Null);
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let fake = FakeOpenAi::start_with(Options { record: false, ..Options::default() }).await.unwrap();
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
    assert!(fake.base_url().ends_with("/v1"));
    let answer = post(&fake, "/v1/chat/completions", chat_body()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_fake_stops_serving() {
    let fake = FakeOpenAi::start().await;
    let addr = fake.addr();
    drop(fake);
    // The abort lands when the runtime next polls the server task.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections after drop");
}
