//! The `gemini` provider end to end: OpenAI requests in, the fake Gemini API (Google's wire
//! format) upstream, OpenAI answers out — translated before the meter, so usage rows and
//! costs come from Gemini's `usageMetadata`.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::app::TestApp;
use tollgate_testkit::client::{Answer, OpenStream, read_until, sse_data};
use tollgate_testkit::fake_gemini::{
    Behavior, FakeGemini, REPLY_TEXT, RETRY_DELAY_SECS, THOUGHT_SIGNATURE, THOUGHTS_TOKENS, TOOL_TRIGGER, base64_floats,
};

/// The provider key only the fake Gemini knows; it must never leave the gateway's header.
const GEMINI_KEY: &str = "AIza-fake-gemini-key-0123456789";

struct GeminiApp {
    app: TestApp,
    gemini: FakeGemini,
    key: String,
}

/// The default app plus a `gemini` provider `gem` in front of the fake (and `gem-badkey`,
/// whose key the fake refuses), serving `gemini-flash`, `gemini-thinking`, `gemini-embed`
/// and `gemini-badkey`.
async fn gemini_app() -> GeminiApp {
    let gemini = FakeGemini::start(GEMINI_KEY).await;
    let extra = format!(
        r#"
[[providers]]
name = "gem"
kind = "gemini"
base_url = "{url}"
api_key = "{GEMINI_KEY}"

[[providers]]
name = "gem-badkey"
kind = "gemini"
base_url = "{url}"
api_version = "v1beta"
api_key = "AIza-not-the-right-key"

[[models]]
id = "gemini-flash"
type = "chat"
input_price_per_mtok = 0.30
output_price_per_mtok = 2.50
channels = [{{ provider = "gem", model = "gemini-2.5-flash" }}]

[[models]]
id = "gemini-thinking"
type = "chat"
input_price_per_mtok = 1.0
output_price_per_mtok = 10.0
channels = [{{ provider = "gem", model = "gemini-2.5-flash-thinking" }}]

[[models]]
id = "gemini-embed"
type = "embedding"
input_price_per_mtok = 0.15
channels = [{{ provider = "gem", model = "gemini-embedding-001" }}]

[[models]]
id = "gemini-badkey"
type = "chat"
channels = [{{ provider = "gem-badkey", model = "gemini-2.5-flash" }}]
"#,
        url = gemini.base_url()
    );
    let app = TestApp::start_with(&extra).await.unwrap();
    let key = app.create_key("gemini").await.unwrap();
    GeminiApp { app, gemini, key }
}

impl GeminiApp {
    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.app.client.post_json(&self.app.url(path), Some(&self.key), body).await.unwrap()
    }

    async fn chat(&self, body: &Value) -> Answer {
        self.post("/v1/chat/completions", body).await
    }
}

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] })
}

fn chunks(answer: &Answer) -> Vec<Value> {
    let events = sse_data(&answer.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", answer.text());
    events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn chat_round_trips_through_gemini_and_is_billed_from_usage_metadata() {
    let g = gemini_app().await;
    let res = g.chat(&chat("gemini-flash")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"], json!({ "role": "assistant", "content": REPLY_TEXT, "refusal": null }));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // One content: 1 + "hello there" = 3 prompt tokens; the reply is 5 words.
    assert_eq!(
        (&body["usage"]["prompt_tokens"], &body["usage"]["completion_tokens"], &body["usage"]["total_tokens"]),
        (&json!(3), &json!(5), &json!(8))
    );

    let sent = g.gemini.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent[0].query, None, "the key never travels in the URL");
    assert_eq!(sent[0].headers["x-goog-api-key"], GEMINI_KEY);
    assert!(sent[0].headers.get("authorization").is_none());
    assert!(!format!("{:?}", sent[0].headers).contains(&g.key), "the client's key must not reach Gemini");
    assert_eq!(sent[0].body, json!({ "contents": [{ "role": "user", "parts": [{ "text": "hello there" }] }] }));

    let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 5));
    // 3 × 0.30 + 5 × 2.50 = 13.4 micro-USD → 13.
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (13, "completed"));
    assert_eq!((row.model.as_deref(), row.provider.as_deref(), row.stream), (Some("gemini-flash"), Some("gem"), false));

    // Thinking is output: completion = candidates + thoughts.
    let res = g.chat(&chat("gemini-thinking")).await;
    assert_eq!(res.json()["usage"]["completion_tokens_details"]["reasoning_tokens"], THOUGHTS_TOKENS);
    let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 5 + THOUGHTS_TOKENS));
    assert_eq!(row.cost.0, 3 + 90, "3 × $1 + 9 × $10 per million");

    // n → candidateCount: one choice per candidate.
    let mut two = chat("gemini-flash");
    two["n"] = 2.into();
    let body = g.chat(&two).await.json();
    let indexes: Vec<_> = body["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1]);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(g.gemini.requests()[2].body["generationConfig"], json!({ "candidateCount": 2 }));
}

#[tokio::test]
async fn streams_become_openai_chunks_with_the_usage_chunk_only_when_asked() {
    let g = gemini_app().await;
    let mut req = chat("gemini-flash");
    req["stream"] = true.into();
    let res = g.chat(&req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let all = chunks(&res);
    assert!(all.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == all[0]["id"]));
    assert!(all.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "usage-only chunk must be hidden");
    assert_eq!(all[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = all.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    let finishes: Vec<_> = all.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finishes, ["stop"]);

    let sent = &g.gemini.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, true));
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (13, "completed"));
    assert!(row.ttft_ms.is_some());

    req["stream_options"] = json!({ "include_usage": true });
    let all = chunks(&g.chat(&req).await);
    let last = all.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!((&last["usage"]["prompt_tokens"], &last["usage"]["completion_tokens"]), (&json!(3), &json!(5)));

    // Without usageMetadata the stream is estimated from the delivered text, as for OpenAI.
    g.gemini.set_behavior(Behavior::NoUsage);
    req["stream_options"] = Value::Null;
    let res = g.chat(&req).await;
    let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "estimated");
    assert_eq!(row.completion_tokens, (REPLY_TEXT.len() as u64).div_ceil(4));
}

#[tokio::test]
async fn system_turns_images_tools_results_and_stop_are_translated() {
    let g = gemini_app().await;
    let tools = json!([{ "type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": { "type": "object", "properties": { "location": { "type": "string" } },
                        "required": ["location"], "additionalProperties": false }
    } }]);
    let question = format!("What is the {TOOL_TRIGGER} in Paris?");
    let first = json!({
        "model": "gemini-flash",
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": [
                { "type": "text", "text": question },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } }
            ] }
        ],
        "tools": tools,
    });
    let res = g.chat(&first).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let choice = &res.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = choice["message"]["tool_calls"][0].clone();
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"], json!({ "name": "get_weather", "arguments": "{\"location\":\"Paris\"}" }));
    assert_eq!(call["extra_content"]["google"]["thought_signature"], THOUGHT_SIGNATURE);

    let second = json!({
        "model": "gemini-flash",
        "messages": [
            first["messages"][0], first["messages"][1],
            { "role": "assistant", "content": null, "tool_calls": [call] },
            { "role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}" },
            { "role": "user", "content": "Thanks. And tomorrow?" }
        ],
        "tools": tools,
        "tool_choice": "auto",
        "stop": ["fake"],
        "max_tokens": 50,
        "temperature": 0.1,
        "top_p": 0.5,
    });
    let res = g.chat(&second).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the", "cut before the stop sequence");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let sent = &g.gemini.requests()[1].body;
    assert_eq!(sent["systemInstruction"], json!({ "parts": [{ "text": "You are terse." }] }));
    assert_eq!(
        sent["contents"],
        json!([
            { "role": "user", "parts": [
                { "text": question },
                { "inlineData": { "mimeType": "image/png", "data": "iVBORw0KGgo=" } }
            ] },
            { "role": "model", "parts": [{
                "functionCall": { "name": "get_weather", "args": { "location": "Paris" } },
                "thoughtSignature": THOUGHT_SIGNATURE
            }] },
            { "role": "user", "parts": [
                { "functionResponse": { "name": "get_weather", "response": { "temp_c": 21 } } },
                { "text": "Thanks. And tomorrow?" }
            ] }
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{ "functionDeclarations": [{
        "name": "get_weather", "description": "The weather in a city", "parametersJsonSchema": tools[0]["function"]["parameters"]
    }] }])
    );
    assert_eq!(sent["toolConfig"], json!({ "functionCallingConfig": { "mode": "AUTO" } }));
    assert_eq!(
        sent["generationConfig"],
        json!({ "maxOutputTokens": 50, "temperature": 0.1, "topP": 0.5, "stopSequences": ["fake"] })
    );

    // Streamed, the call arrives as one tool_calls delta and the choice ends with tool_calls.
    let mut streamed = first.clone();
    streamed["stream"] = true.into();
    streamed["tool_choice"] = json!({ "type": "function", "function": { "name": "get_weather" } });
    let all = chunks(&g.chat(&streamed).await);
    let deltas: Vec<&Value> = all.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas.len(), 1);
    assert_eq!(deltas[0][0]["index"], 0);
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert_eq!(
        all.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect::<Vec<_>>(),
        ["tool_calls"]
    );
    assert_eq!(
        g.gemini.requests()[2].body["toolConfig"],
        json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["get_weather"] } })
    );
}

#[tokio::test]
async fn embeddings_answer_floats_or_base64_and_are_billed_as_estimated() {
    let g = gemini_app().await;
    let req = json!({ "model": "gemini-embed", "input": ["a b", "c"], "dimensions": 4 });
    let res = g.post("/v1/embeddings", &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["object"], "list");
    // Value j of input i is ((7i + j) % 64) / 64 - 0.5.
    assert_eq!(
        body["data"][0],
        json!({ "object": "embedding", "index": 0, "embedding": [-0.5, -0.484375, -0.46875, -0.453125] })
    );
    assert_eq!(body["data"][1]["embedding"][0], -0.390625);
    // Gemini reports no usage: ceil(3 / 4) + ceil(1 / 4) = 2 tokens, estimated.
    assert_eq!(body["usage"], json!({ "prompt_tokens": 2, "total_tokens": 2 }));

    let sent = &g.gemini.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(
        sent.body["requests"][0],
        json!({ "model": "models/gemini-embedding-001", "content": { "parts": [{ "text": "a b" }] }, "outputDimensionality": 4 })
    );
    let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.billing_reason.as_str()), (2, 0, "estimated"));

    let mut b64 = req.clone();
    b64["encoding_format"] = "base64".into();
    let body = g.post("/v1/embeddings", &b64).await.json();
    let floats = base64_floats(body["data"][0]["embedding"].as_str().unwrap()).unwrap();
    assert_eq!(floats, [-0.5, -0.484375, -0.46875, -0.453125]);

    let tokens = json!({ "model": "gemini-embed", "input": [[1, 2, 3]] });
    let res = g.post("/v1/embeddings", &tokens).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some("input")));
}

/// Everything logged on this thread (a `#[tokio::test]` runtime runs the server here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn gemini_errors_map_like_openai_ones_and_never_leak_the_key() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let g = gemini_app().await;
    for (behavior, status, code) in [
        (Behavior::Status(503), 502, "upstream_error"),
        (Behavior::Status(500), 502, "upstream_error"),
        (Behavior::Status(403), 502, "upstream_error"),
        (Behavior::Status(429), 429, "rate_limit_exceeded"),
        (Behavior::CloseConnection, 502, "upstream_error"),
        (Behavior::Delay(Duration::from_secs(5)), 504, "upstream_error"),
    ] {
        g.gemini.set_behavior(behavior.clone());
        let res = g.chat(&chat("gemini-flash")).await;
        assert_eq!((res.status.as_u16(), res.error_code()), (status, code.to_owned()), "{behavior:?}: {}", res.text());
        assert!(!res.text().contains(GEMINI_KEY) && !res.text().contains(&g.key));
        if status == 429 {
            let secs = RETRY_DELAY_SECS.to_string();
            assert_eq!(res.header("retry-after"), Some(secs.as_str()), "Gemini's RetryInfo becomes Retry-After");
        }
        let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!((row.status, row.cost.0, row.billing_reason.as_str()), (status, 0, "not_billed"), "{behavior:?}");
        assert!(!row.error.unwrap_or_default().contains(GEMINI_KEY));
    }

    // The request's own mistakes are relayed with Gemini's message, in OpenAI's shape.
    g.gemini.set_behavior(Behavior::Status(400));
    let res = g.chat(&chat("gemini-flash")).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"]["message"], "Request contains an invalid argument.");
    assert_eq!(res.json()["error"]["code"], "invalid_argument");

    // Gemini answers a wrong key with a 400; it is the gateway's credential, not the
    // client's mistake: replaced, not relayed.
    g.gemini.set_behavior(Behavior::Normal);
    let res = g.chat(&chat("gemini-badkey")).await;
    assert_eq!((res.status.as_u16(), res.error_code()), (502, "upstream_error".to_owned()), "{}", res.text());
    assert!(!res.text().contains("API key"), "{}", res.text());

    for sent in g.gemini.requests() {
        assert!(sent.query.as_deref().is_none_or(|q| !q.contains("key")), "key in the URL: {sent:?}");
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("upstream answered with an error status"), "the server's logs were captured");
    assert!(!logged.contains(GEMINI_KEY) && !logged.contains("AIza-not-the-right-key"), "a provider key was logged");
}

#[tokio::test]
async fn a_gemini_stream_that_fails_mid_way_ends_with_an_error_event_and_is_billed() {
    let g = gemini_app().await;
    let mut req = chat("gemini-flash");
    req["stream"] = true.into();
    for behavior in [Behavior::BreakStreamAfter(2), Behavior::ErrorEventAfter(2)] {
        g.gemini.set_behavior(behavior.clone());
        let res = g.chat(&req).await;
        let events = sse_data(&res.text());
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_error", "{behavior:?}: {}", res.text());
        assert!(res.text().contains("Hello"), "what arrived before the failure was delivered");
        let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!(row.billing_reason, "upstream_interrupted", "{behavior:?}");
        assert!(row.completion_tokens >= 1);
    }
}

#[tokio::test]
async fn a_client_leaving_a_gemini_stream_is_billed_for_what_it_got() {
    let g = gemini_app().await;
    g.gemini.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_secs(2) });
    let mut req = chat("gemini-flash");
    req["stream"] = true.into();
    let OpenStream { request_id, mut body } =
        g.app.client.open_stream(&g.app.url("/v1/chat/completions"), &g.key, &req).await.unwrap();
    read_until(&mut body, "Hello").await.unwrap();
    drop(body);
    let row = g.app.usage_row(&request_id).await.unwrap();
    assert_eq!(row.billing_reason, "client_disconnected");
    assert!(row.completion_tokens >= 1 && row.prompt_tokens > 0, "{row:?}");
}

#[tokio::test]
async fn gemini_models_serve_chat_and_embeddings_only() {
    let g = gemini_app().await;
    for (path, body) in [
        ("/v1/completions", json!({ "model": "gemini-flash", "prompt": "hi" })),
        ("/v1/responses", json!({ "model": "gemini-flash", "input": "hi" })),
    ] {
        let res = g.post(path, &body).await;
        assert_eq!((res.status.as_u16(), res.error_code()), (400, "invalid_request".to_owned()), "{path}");
        let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("/v1/chat/completions and /v1/embeddings only"), "{message}");
        let row = g.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!(row.billing_reason, "not_billed");
    }
    let remote = json!({ "model": "gemini-flash", "messages": [{ "role": "user", "content": [
        { "type": "image_url", "image_url": { "url": "http://169.254.169.254/latest/meta-data" } }
    ] }] });
    let res = g.chat(&remote).await;
    assert_eq!(res.status, 400);
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("data: URLs"));
    assert!(g.gemini.requests().is_empty(), "nothing reaches Gemini");
}
